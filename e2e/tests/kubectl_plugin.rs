//! `kubectl-spiderpool` against the real API server, the real binary also run as a plugin of the
//! control plane's kubectl: it follows a subnet-annotated Deployment's pod to its auto pool;
//! explains a pod the real `spiderpool` plugin gave no address, with the reason of every pool
//! (exhausted, reserved, disabled, affinity, family, multus name); shows a pod that got its
//! address with its record, pool and endpoint agreeing; lists the free addresses of a pool and a
//! subnet after allocations; checks a namespace clean, then finds an injected violation (exit 1);
//! and fails clearly for missing objects.

mod autopool_support;
#[path = "ipam_support/mod.rs"]
mod ipam_support;

use std::process::Command;

use anyhow::{Context, ensure};
use ipam_support::{PodRef, Scratch, SimNode, cni, create_pod, create_pool, create_reserved};
use serde_json::{Value, json};
use spiderpool_e2e::{TestNamespace, binary, client, controller_manager, kubeconfig_path};

/// One run of the plugin binary.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn plugin(args: &[&str]) -> anyhow::Result<Run> {
    let output = Command::new(binary("kubectl-spiderpool"))
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .output()
        .context("running kubectl-spiderpool (built by `make build`)")?;
    Ok(Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn plugin_json(args: &[&str]) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let run = plugin(&all)?;
    ensure!(
        run.code == Some(0),
        "kubectl-spiderpool {args:?} exited {:?}: {}",
        run.code,
        run.stderr
    );
    serde_json::from_str(&run.stdout).with_context(|| format!("not JSON: {}", run.stdout))
}

/// `(verdict, reason)` of `pool` in the IPv`version` family of `nic` of an explanation.
fn verdict(explanation: &Value, nic: &str, version: u64, pool: &str) -> Option<(String, String)> {
    let nic = explanation["nics"]
        .as_array()?
        .iter()
        .find(|item| item["nic"] == nic)?;
    let family = nic["families"]
        .as_array()?
        .iter()
        .find(|family| family["ip_version"] == version)?;
    let line = family["pools"]
        .as_array()?
        .iter()
        .find(|line| line["pool"] == pool)?;
    Some((
        line["verdict"].as_str()?.to_string(),
        line["reason"].as_str()?.to_string(),
    ))
}

#[tokio::test]
async fn explain_names_every_pools_reason_for_a_pod_without_address_and_agrees_for_one_with()
-> anyhow::Result<()> {
    let client = client().await?;
    // The settings ConfigMap the plugin reads (chart defaults), as installed.
    controller_manager(&[]).await?;
    let namespace = TestNamespace::create(&client, "kubectl-plugin").await?;
    let ns = namespace.name.clone();
    let scratch = Scratch::new("kubectl-plugin")?;
    let node = SimNode::create(&client, &scratch, &[], "").await?;
    let config = ipam_support::netconf("1.0.0", &node, json!({}));
    let octet = autopool_support::unique_octet();
    let v4 = |ips: &str, extra: Value| {
        let mut spec =
            json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/16"), "ips": [ips]});
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
            spec.extend(extra);
        }
        spec
    };
    let exhausted = create_pool(
        &client,
        "kp-full",
        v4(&format!("10.{octet}.1.1"), json!({})),
    )
    .await?;
    let reserved_pool = create_pool(
        &client,
        "kp-reserved",
        v4(&format!("10.{octet}.2.1"), json!({})),
    )
    .await?;
    let reservation = create_reserved(&client, 4, &[&format!("10.{octet}.2.1")]).await?;
    let disabled = create_pool(
        &client,
        "kp-disabled",
        v4(
            &format!("10.{octet}.3.1-10.{octet}.3.9"),
            json!({"disable": true}),
        ),
    )
    .await?;
    let affinity = create_pool(
        &client,
        "kp-affinity",
        v4(
            &format!("10.{octet}.4.1-10.{octet}.4.9"),
            json!({"podAffinity": {"matchLabels": {"app": "other"}}}),
        ),
    )
    .await?;
    let multus = create_pool(
        &client,
        "kp-multus",
        v4(
            &format!("10.{octet}.5.1-10.{octet}.5.9"),
            json!({"multusName": ["kube-system/other-network"]}),
        ),
    )
    .await?;
    let v6 = create_pool(
        &client,
        "kp-v6",
        json!({"ipVersion": 6, "subnet": format!("fd00:{octet}::/64"), "ips": [format!("fd00:{octet}::1-fd00:{octet}::9")]}),
    )
    .await?;
    let good = create_pool(
        &client,
        "kp-good",
        v4(
            &format!("10.{octet}.6.1-10.{octet}.6.9"),
            json!({"excludeIPs": [format!("10.{octet}.6.9")]}),
        ),
    )
    .await?;

    // The only address of the exhausted pool goes to a first pod through the real plugin.
    let only = format!(r#"{{"ipv4":["{exhausted}"]}}"#);
    let holder = create_pod(
        &client,
        &ns,
        "holder",
        &node.name,
        &[("ipam.spidernet.io/ippool", &only)],
        &[],
    )
    .await?;
    cni("ADD", &PodRef::of(&holder), "eth0", &config)
        .await?
        .addresses()?;

    // A pod whose pools all fail: the plugin gives it no address.
    let all_pools = format!(
        r#"{{"ipv4":["{exhausted}","{reserved_pool}","{disabled}","{affinity}","{multus}","{v6}"]}}"#
    );
    let stuck = create_pod(
        &client,
        &ns,
        "stuck",
        &node.name,
        &[("ipam.spidernet.io/ippool", &all_pools)],
        &[("app", "web")],
    )
    .await?;
    let (code, message) = cni("ADD", &PodRef::of(&stuck), "eth0", &config)
        .await?
        .error()?;
    println!("the plugin's ADD of the stuck pod: code {code}: {message}");

    let explanation = plugin_json(&["explain", "pod", &format!("{ns}/stuck")])?;
    for (pool, verdict_expected, category) in [
        (&exhausted, "skipped", "exhausted"),
        (&reserved_pool, "skipped", "reserved"),
        (&disabled, "skipped", "disabled"),
        (&affinity, "skipped", "affinity"),
        (&multus, "skipped", "multus name"),
        (&v6, "skipped", "family"),
    ] {
        let (verdict_found, reason) = verdict(&explanation, "eth0", 4, pool)
            .with_context(|| format!("{pool} not explained: {explanation:#}"))?;
        assert_eq!(verdict_found, verdict_expected, "{pool}: {reason}");
        assert!(reason.starts_with(category), "{pool}: {reason}");
    }
    let nic = &explanation["nics"][0];
    assert_eq!(nic["nic"], "eth0");
    assert!(
        nic["add"].as_str().unwrap_or_default().contains("fail"),
        "{nic}"
    );
    let sources = nic["sources"].as_array().context("sources")?;
    assert_eq!(sources.len(), 6);
    let deciding: Vec<&Value> = sources
        .iter()
        .filter(|source| source["applies"] == true)
        .collect();
    assert_eq!(deciding.len(), 1);
    assert!(
        deciding[0]["source"]
            .as_str()
            .unwrap_or_default()
            .contains("ipam.spidernet.io/ippool")
    );
    assert!(
        explanation["addresses"].is_null(),
        "no endpoint for a pod without address"
    );

    // The same as a table, as a plugin of kubectl (the control plane's kubectl finds
    // `kubectl-spiderpool` on PATH).
    let bin_dir = binary("kubectl-spiderpool");
    let bin_dir = bin_dir.parent().context("no bin dir")?;
    let run = Command::new(std::env::var_os("TESTENV").unwrap_or_else(|| "testenv".into()))
        .args([
            "kubectl",
            "spiderpool",
            "explain",
            "pod",
            "stuck",
            "-n",
            &ns,
        ])
        .env("KUBECONFIG", kubeconfig_path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()?;
    ensure!(
        run.status.success(),
        "kubectl spiderpool explain: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let table = String::from_utf8_lossy(&run.stdout).into_owned();
    println!("SAMPLE kubectl spiderpool explain pod {ns}/stuck:\n{table}");
    for needle in [
        &exhausted,
        &reserved_pool,
        &disabled,
        &affinity,
        &multus,
        &v6,
    ] {
        assert!(
            table.contains(needle.as_str()),
            "{needle} missing in\n{table}"
        );
    }
    assert!(table.contains("ADD now: fail"), "{table}");

    // A pod that got its address: record, pool and endpoint agree; an ADD would reuse it.
    let good_annotation = format!(r#"{{"ipv4":["{good}"]}}"#);
    let fine = create_pod(
        &client,
        &ns,
        "fine",
        &node.name,
        &[("ipam.spidernet.io/ippool", &good_annotation)],
        &[],
    )
    .await?;
    let addresses = cni("ADD", &PodRef::of(&fine), "eth0", &config)
        .await?
        .addresses()?;
    let address = ipam_support::bare(&addresses[0]);
    let explanation = plugin_json(&["explain", "pod", "fine", "-n", &ns])?;
    assert_eq!(explanation["addresses"]["agree"], true, "{explanation:#}");
    assert_eq!(
        explanation["addresses"]["records"][0]["address"],
        address.as_str()
    );
    assert_eq!(
        explanation["addresses"]["records"][0]["pool"],
        good.as_str()
    );
    assert!(
        explanation["nics"][0]["add"]
            .as_str()
            .unwrap_or_default()
            .starts_with("reuse"),
        "{explanation:#}"
    );
    let table = plugin(&["explain", "pod", &format!("{ns}/fine")])?;
    println!(
        "SAMPLE kubectl spiderpool explain pod {ns}/fine:\n{}",
        table.stdout
    );
    assert!(table.stdout.contains("records, pools and endpoint agree"));

    // free after the allocations: one used with its holder, the excluded and the rest free.
    let free = plugin_json(&["free", &good])?;
    assert_eq!(free["total"], 8);
    assert_eq!(free["free_count"], 7);
    assert_eq!(free["excluded"], json!([format!("10.{octet}.6.9")]));
    assert_eq!(free["used"][0]["ips"], address.as_str());
    let fine_uid = PodRef::of(&fine).uid;
    assert_eq!(free["used"][0]["holder"], format!("{ns}/fine ({fine_uid})"));
    let free = plugin_json(&["free", &format!("ippool/{reserved_pool}")])?;
    assert_eq!(free["reserved"], json!([format!("10.{octet}.2.1")]));
    assert_eq!(free["free_count"], 0);
    let yaml = plugin(&["free", &good, "-o", "yaml"])?;
    let parsed: Value = serde_yaml::from_str(&yaml.stdout)?;
    assert_eq!(parsed["name"], good.as_str());
    let table = plugin(&["free", &good])?;
    println!("SAMPLE kubectl spiderpool free {good}:\n{}", table.stdout);
    assert!(table.stdout.contains(&format!("{ns}/fine")));

    // Missing objects: a clear error and a non-zero exit.
    let missing = plugin(&["explain", "pod", &format!("{ns}/nobody")])?;
    assert_eq!(missing.code, Some(2));
    assert!(
        missing
            .stderr
            .contains(&format!("pod {ns}/nobody not found")),
        "{}",
        missing.stderr
    );
    let missing = plugin(&["free", "no-such-pool"])?;
    assert_eq!(missing.code, Some(2));
    assert!(
        missing
            .stderr
            .contains("no SpiderIPPool or SpiderSubnet named no-such-pool"),
        "{}",
        missing.stderr
    );
    let missing = plugin(&["--context", "no-such-context", "free", &good])?;
    assert_ne!(missing.code, Some(0));
    assert!(
        missing.stderr.contains("no-such-context"),
        "{}",
        missing.stderr
    );

    for pod in [&holder, &stuck, &fine] {
        ipam_support::delete_pod_now(&client, &ns, &PodRef::of(pod).name).await?;
        cni("DEL", &PodRef::of(pod), "eth0", &config).await?;
    }
    ipam_support::release_endpoints(&client, &ns).await?;
    namespace.delete().await?;
    node.delete(&client).await?;
    ipam_support::delete_reserved(&client, &reservation).await;
    ipam_support::delete_pools(
        &client,
        &[
            exhausted,
            reserved_pool,
            disabled,
            affinity,
            multus,
            v6,
            good,
        ],
    )
    .await;
    Ok(())
}

#[tokio::test]
async fn free_lists_a_subnets_pools_as_its_used_addresses() -> anyhow::Result<()> {
    let client = client().await?;
    controller_manager(&[]).await?;
    let octet = autopool_support::unique_octet();
    let subnet = autopool_support::create_subnet(
        &client,
        "kp-subnet",
        json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.20")], "excludeIPs": [format!("10.{octet}.0.20")]}),
    )
    .await?;
    let pool = create_pool(
        &client,
        "kp-in-subnet",
        json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.5-10.{octet}.0.8")]}),
    )
    .await?;
    let report = spiderpool_e2e::wait_for(
        "the subnet to record its pool",
        autopool_support::TIMEOUT,
        || async {
            let report = plugin_json(&["free", &format!("subnet/{subnet}")])?;
            Ok((report["used"]
                .as_array()
                .is_some_and(|used| !used.is_empty()))
            .then_some(report))
        },
    )
    .await?;
    assert_eq!(report["kind"], "SpiderSubnet");
    assert_eq!(report["total"], 19);
    assert_eq!(
        report["used"],
        json!([{"ips": format!("10.{octet}.0.5-10.{octet}.0.8"), "holder": format!("pool {pool}")}])
    );
    assert_eq!(
        report["free"],
        json!([
            format!("10.{octet}.0.1-10.{octet}.0.4"),
            format!("10.{octet}.0.9-10.{octet}.0.19")
        ])
    );
    assert_eq!(report["excluded"], json!([format!("10.{octet}.0.20")]));
    let _ = autopool_support::delete_pool(&client, &pool).await;
    autopool_support::delete_subnet(&client, &subnet).await?;
    Ok(())
}

#[tokio::test]
async fn check_is_clean_for_a_consistent_namespace_and_exits_non_zero_on_a_violation()
-> anyhow::Result<()> {
    use kube::api::{Api, Patch, PatchParams};
    use spiderpool_api::SpiderEndpoint;

    let client = client().await?;
    controller_manager(&[]).await?;
    let namespace = TestNamespace::create(&client, "kubectl-check").await?;
    let ns = namespace.name.clone();
    let scratch = Scratch::new("kubectl-check")?;
    let node = SimNode::create(&client, &scratch, &[], "").await?;
    let config = ipam_support::netconf("1.0.0", &node, json!({}));
    let octet = autopool_support::unique_octet();
    let pool = create_pool(
        &client,
        "kc-pool",
        json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.9")]}),
    )
    .await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);
    let pod = create_pod(
        &client,
        &ns,
        "app",
        &node.name,
        &[("ipam.spidernet.io/ippool", &annotation)],
        &[],
    )
    .await?;
    let address = ipam_support::bare(
        &cni("ADD", &PodRef::of(&pod), "eth0", &config)
            .await?
            .addresses()?[0],
    );

    let clean = plugin(&["check", "-n", &ns])?;
    assert_eq!(clean.code, Some(0), "{}{}", clean.stdout, clean.stderr);
    assert!(
        clean.stdout.contains("consistent: no violation"),
        "{}",
        clean.stdout
    );
    let report = plugin_json(&["check", "-n", &ns])?;
    assert_eq!(report["violations"], json!([]));
    assert!(report["endpoints"].as_u64().unwrap_or(0) >= 1, "{report}");

    // The endpoint now claims another address than the pool records for the pod.
    let other = format!("10.{octet}.0.7");
    assert_ne!(address, other);
    let endpoints: Api<SpiderEndpoint> = Api::namespaced(client.clone(), &ns);
    let mut endpoint = endpoints.get("app").await?;
    let original = endpoint.status.clone();
    if let Some(status) = endpoint.status.as_mut() {
        status.current.ips[0].ipv4 = Some(format!("{other}/16"));
    }
    endpoints
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": endpoint.status})),
        )
        .await?;
    let broken = plugin(&["check", "-n", &ns])?;
    println!(
        "SAMPLE kubectl spiderpool check -n {ns} after the endpoint was corrupted:\n{}",
        broken.stdout
    );
    assert_eq!(broken.code, Some(1), "{}{}", broken.stdout, broken.stderr);
    assert!(broken.stdout.contains(&other), "{}", broken.stdout);
    assert!(broken.stdout.contains("endpoint"), "{}", broken.stdout);
    let report = plugin_json_any(&["check", "-n", &ns])?;
    let kinds: Vec<&str> = report["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|violation| violation["kind"].as_str())
        .collect();
    assert!(
        kinds.iter().any(|kind| kind.starts_with("endpoint")),
        "{report:#}"
    );

    // Put right again: clean.
    endpoints
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": original})),
        )
        .await?;
    let clean = plugin(&["check", "-n", &ns])?;
    assert_eq!(clean.code, Some(0), "{}{}", clean.stdout, clean.stderr);

    ipam_support::delete_pod_now(&client, &ns, "app").await?;
    cni("DEL", &PodRef::of(&pod), "eth0", &config).await?;
    ipam_support::release_endpoints(&client, &ns).await?;
    namespace.delete().await?;
    node.delete(&client).await?;
    ipam_support::delete_pools(&client, &[pool]).await;
    Ok(())
}

/// `-o json` of a run that may exit 1 (check with violations).
fn plugin_json_any(args: &[&str]) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let run = plugin(&all)?;
    ensure!(
        matches!(run.code, Some(0 | 1)),
        "kubectl-spiderpool {args:?} exited {:?}: {}",
        run.code,
        run.stderr
    );
    serde_json::from_str(&run.stdout).with_context(|| format!("not JSON: {}", run.stdout))
}

#[tokio::test]
async fn explain_follows_a_subnet_annotated_deployment_to_its_auto_pool() -> anyhow::Result<()> {
    use autopool_support::{
        ANNO_SUBNET, create_deployment, deployment, subnet_annotation, wait_app_pools,
    };
    use k8s_openapi::api::core::v1::Pod;
    use kube::ResourceExt;
    use kube::api::{Api, ListParams};

    let client = client().await?;
    controller_manager(&[]).await?;
    let namespace = TestNamespace::create(&client, "kubectl-auto").await?;
    let ns = namespace.name.clone();
    let octet = autopool_support::unique_octet();
    let subnet = autopool_support::create_subnet(
        &client,
        "kp-auto",
        json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.50")]}),
    )
    .await?;
    create_deployment(
        &client,
        &ns,
        &deployment(
            "web",
            1,
            &[(ANNO_SUBNET, subnet_annotation(Some(&subnet), None))],
        ),
    )
    .await?;
    let pools = wait_app_pools(&client, "Deployment", &ns, "web", 1, |_| true).await?;
    let auto = pools[0].name_any();
    let pod = spiderpool_e2e::wait_for("a pod of web", autopool_support::TIMEOUT, || async {
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await?
            .items;
        Ok(pods.first().map(ResourceExt::name_any))
    })
    .await?;

    let explanation = plugin_json(&["explain", "pod", &pod, "-n", &ns])?;
    let nic = &explanation["nics"][0];
    assert_eq!(nic["sources"][0]["applies"], true, "{explanation:#}");
    assert_eq!(
        explanation["controller"],
        format!("Deployment {ns}/web"),
        "{explanation:#}"
    );
    let (found, reason) = verdict(&explanation, "eth0", 4, &auto)
        .with_context(|| format!("{auto} not explained: {explanation:#}"))?;
    assert_eq!(found, "taken", "{reason}");
    assert!(reason.starts_with(&format!("10.{octet}.0.")), "{reason}");
    let add = nic["add"].as_str().unwrap_or_default();
    assert!(add.contains(&format!("from {auto}")), "{add}");

    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
        .delete("web", &Default::default())
        .await?;
    namespace.delete().await?;
    autopool_support::delete_subnet(&client, &subnet).await?;
    Ok(())
}
