//! Admission webhooks through the real API server.
//!
//! The controller-manager runs as installed (ServiceAccount and roles of `config/rbac`, `auto`
//! certificates in `kube-system/spiderpool-controller-server-certs`) and the webhook
//! configurations are those of `config/webhook/manifests.yaml`, applied by the harness with
//! `clientConfig.url = https://127.0.0.1:<port>/...` instead of the Service and restricted to this
//! suite: namespaced kinds only in namespaces labelled `spiderpool-e2e-webhook=true`,
//! cluster-scoped kinds only for objects with that label. Other suites' objects are never judged.
//! The controller-manager only injects their `caBundle`, as in a cluster.
//!
//! Every golden case asserts the HTTP status and the denial text the client sees. Addresses are
//! taken from 198.18.0.0/15 (one /24 per test) so tests can run in parallel.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use spiderpool_api::{
    NetworkAttachmentDefinition, SpiderCoordinator, SpiderIPPool, SpiderMultusConfig,
    SpiderReservedIP, SpiderSubnet,
};
use spiderpool_e2e::{
    WEBHOOK_CONFIGURATION, client, controller_manager_with_settings,
    install_webhook_configurations, unique_name, wait_for,
};

const LABEL: &str = "spiderpool-e2e-webhook";
/// `conf.yml` of `kube-system/spiderpool-conf` for this suite.
const SETTINGS: &str = "enableIPv4: true\nenableIPv6: true\nenableSpiderSubnet: true\nenableValidatingResourcesDeletedWebhook: true\n";
const TIMEOUT: Duration = Duration::from_secs(30);
const GROUP: &str = "spiderpool.spidernet.io";

/// The port of the webhook server.
fn port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port")
    })
}

fn manager_args() -> Vec<String> {
    vec![
        format!("--webhook-addr=127.0.0.1:{}", port()),
        "--webhook-cert-mode=auto".into(),
        "--webhook-extra-sans=127.0.0.1".into(),
        // The suite writes subnet records for workloads that do not exist (G38); a running
        // subnet or application controller would rightly drop them mid-test.
        "--enable-ipam-controllers=false".into(),
    ]
}

/// Client, the installed configurations, the running controller-manager, and webhooks that are
/// in effect.
async fn setup() -> anyhow::Result<Client> {
    let client = client().await?;
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| install_webhook_configurations(&client, port(), LABEL))
        .await?;
    let args = manager_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let manager = controller_manager_with_settings(Some(SETTINGS), &args).await?;
    wait_for_webhooks(&client)
        .await
        .map_err(|error| error.context(format!("log: {}", manager.log_path.display())))?;
    Ok(client)
}

/// Polls with dry-run creates until both configurations act on a labelled pool.
async fn wait_for_webhooks(client: &Client) -> anyhow::Result<()> {
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for("webhooks in effect", TIMEOUT, || async {
        let bad = pool("webhook-probe", json!({"subnet": "198.19.255.1/24"}))?;
        let denied = match pools.create(&dry_run, &bad).await {
            Err(kube::Error::Api(status)) => status.message.contains("unformatted subnet"),
            _ => false,
        };
        let good = pool("webhook-probe", json!({"subnet": "198.19.254.0/24"}))?;
        let mutated = match pools.create(&dry_run, &good).await {
            Ok(created) => created.finalizers().iter().any(|f| f == GROUP),
            Err(_) => false,
        };
        Ok((denied && mutated).then_some(()))
    })
    .await
}

fn labelled(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": kind,
        "metadata": {"name": name, "labels": {LABEL: "true"}},
        "spec": spec,
    })
}

fn pool(name: &str, spec: Value) -> anyhow::Result<SpiderIPPool> {
    Ok(serde_json::from_value(labelled(
        "SpiderIPPool",
        name,
        spec,
    ))?)
}

fn subnet(name: &str, spec: Value) -> anyhow::Result<SpiderSubnet> {
    Ok(serde_json::from_value(labelled(
        "SpiderSubnet",
        name,
        spec,
    ))?)
}

/// A namespace whose objects this suite's webhooks judge (with `extra` labels instead, one
/// they do not).
async fn namespace(
    client: &Client,
    prefix: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<String> {
    let name = unique_name(prefix);
    let mut labels = BTreeMap::from([("spiderpool-e2e".to_string(), "true".to_string())]);
    if extra.is_empty() {
        labels.insert(LABEL.to_string(), "true".to_string());
    }
    for (key, value) in extra {
        labels.insert((*key).to_string(), (*value).to_string());
    }
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    // Pods need the namespace's default ServiceAccount, made by kube-controller-manager.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for("default ServiceAccount", TIMEOUT, || async {
        Ok(accounts.get_opt("default").await?)
    })
    .await?;
    Ok(name)
}

async fn create<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), object).await
}

/// Asserts an API error with `code` whose message contains every part of `parts`; returns
/// the message.
#[track_caller]
fn denied<T: std::fmt::Debug>(result: Result<T, kube::Error>, code: u16, parts: &[&str]) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, code, "unexpected status: {status:?}");
            for part in parts {
                assert!(
                    status.message.contains(part),
                    "{:?} does not contain {part:?}",
                    status.message
                );
            }
            status.message
        }
        other => panic!("expected a {code} denial, got {other:?}"),
    }
}

fn webhook_prefix(webhook: &str) -> String {
    format!("admission webhook \"{webhook}\" denied the request: ")
}

const POOL_WEBHOOK: &str = "spiderippool.spiderpool.spidernet.io";
const SUBNET_WEBHOOK: &str = "spidersubnet.spiderpool.spidernet.io";
const SMC_WEBHOOK: &str = "spidermultusconfig.spiderpool.spidernet.io";

#[tokio::test]
async fn ippool_defaults_merge_ranges_and_derive_version_label_and_finalizer() -> anyhow::Result<()>
{
    // G29
    let client = setup().await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let name = unique_name("g29");
    let created = create(
        &pools,
        &pool(&name, json!({"subnet": "198.18.29.0/24", "ips": ["198.18.29.10", "198.18.29.1-198.18.29.2", "198.18.29.2-198.18.29.3"]}))?,
    )
    .await?;
    assert_eq!(created.spec.ip_version, Some(4));
    assert_eq!(
        created.spec.ips,
        Some(vec![
            "198.18.29.1-198.18.29.3".to_string(),
            "198.18.29.10".into()
        ])
    );
    assert!(
        created
            .finalizers()
            .iter()
            .any(|finalizer| finalizer == GROUP)
    );
    assert_eq!(
        created
            .labels()
            .get("ipam.spidernet.io/ippool-cidr")
            .map(String::as_str),
        Some("198-18-29-0-24")
    );
    // IPv6 derives 6.
    let v6 = create(
        &pools,
        &pool(
            &unique_name("g29-v6"),
            json!({"subnet": "fd18:29::/120", "ips": ["fd18:29::2", "fd18:29::1"]}),
        )?,
    )
    .await?;
    assert_eq!(v6.spec.ip_version, Some(6));
    assert_eq!(v6.spec.ips, Some(vec!["fd18:29::1-fd18:29::2".to_string()]));
    assert_eq!(
        v6.labels()
            .get("ipam.spidernet.io/ippool-cidr")
            .map(String::as_str),
        Some("fd18-29---120")
    );
    Ok(())
}

#[tokio::test]
async fn ippool_is_adopted_by_the_subnet_of_its_cidr_and_inherits_gateway_and_routes()
-> anyhow::Result<()> {
    // G30
    let client = setup().await?;
    let subnets: Api<SpiderSubnet> = Api::all(client.clone());
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let subnet_name = unique_name("g30-subnet");
    let created_subnet = create(
        &subnets,
        &subnet(&subnet_name, json!({"subnet": "198.18.30.0/24", "ips": ["198.18.30.1-198.18.30.100"], "gateway": "198.18.30.254", "routes": [{"dst": "10.30.0.0/16", "gw": "198.18.30.254"}]}))?,
    )
    .await?;
    assert_eq!(
        created_subnet
            .labels()
            .get("ipam.spidernet.io/subnet-cidr")
            .map(String::as_str),
        Some("198-18-30-0-24")
    );
    // The subnet must be in the webhook's cache before the pool's defaulting looks it up.
    let name = unique_name("g30-pool");
    let adopted = wait_for("pool adopted by its subnet", TIMEOUT, || async {
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let candidate = pool(
            &name,
            json!({"subnet": "198.18.30.0/24", "ips": ["198.18.30.10"]}),
        )?;
        let result = pools.create(&dry_run, &candidate).await?;
        Ok(result
            .labels()
            .contains_key("ipam.spidernet.io/owner-spider-subnet")
            .then_some(()))
    })
    .await;
    adopted?;
    let created = create(
        &pools,
        &pool(
            &name,
            json!({"subnet": "198.18.30.0/24", "ips": ["198.18.30.10"]}),
        )?,
    )
    .await?;
    assert_eq!(
        created
            .labels()
            .get("ipam.spidernet.io/owner-spider-subnet"),
        Some(&subnet_name)
    );
    let owner = created
        .owner_references()
        .iter()
        .find(|owner| owner.controller == Some(true))
        .cloned()
        .expect("controller owner");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("SpiderSubnet", subnet_name.as_str())
    );
    assert_eq!(owner.uid, created_subnet.uid().unwrap_or_default());
    assert_eq!(owner.block_owner_deletion, Some(true));
    assert_eq!(created.spec.gateway.as_deref(), Some("198.18.30.254"));
    assert_eq!(
        created
            .spec
            .routes
            .as_ref()
            .map(|routes| routes[0].dst.as_str()),
        Some("10.30.0.0/16")
    );
    Ok(())
}

#[tokio::test]
async fn ippool_gateway_and_route_rules() -> anyhow::Result<()> {
    // G31, G32
    let client = setup().await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let name = unique_name("g31");
    let spec = json!({"subnet": "198.18.31.0/24", "ips": ["198.18.31.1-198.18.31.2", "198.18.31.10"], "gateway": "198.18.31.1"});
    let message = denied(create(&pools, &pool(&name, spec.clone())?).await, 422, &[]);
    assert_eq!(
        message,
        format!(
            "{}SpiderIPPool.spiderpool.spidernet.io \"{name}\" is invalid: spec.ips[0]: Invalid value: \"198.18.31.1-198.18.31.2\": conflicts with 'spec.gateway' 198.18.31.1, add the gateway IP address to 'spec.excludeIPs' or remove it from 'spec.ips'",
            webhook_prefix(POOL_WEBHOOK)
        )
    );
    let mut allowed = spec;
    allowed["excludeIPs"] = json!(["198.18.31.1"]);
    create(&pools, &pool(&name, allowed)?).await?;

    let route_cases = [
        (
            json!([{"dst": "0.0.0.0/0", "gw": "198.18.32.1"}]),
            "spec.routes[0].dst: Invalid value: \"0.0.0.0/0\": please specify 'spec.gateway' to configure the default route",
        ),
        (
            json!([{"dst": "192.168.40.0/24", "gw": "198.18.32.1"}, {"dst": "192.168.40.0/24", "gw": "198.18.32.2"}]),
            "spec.routes[1].dst: Invalid value: \"192.168.40.0/24\": duplicate route with the same dst",
        ),
        (
            json!([{"dst": "192.168.40.0/24", "gw": "198.18.33.1"}]),
            "spec.routes[0].gw: Invalid value: \"198.18.33.1\": not pertains to the 'spec.subnet' 198.18.32.0/24 of IPPool",
        ),
        (
            json!([{"dst": "invalid", "gw": "198.18.32.1"}]),
            "spec.routes[0].dst: Invalid value: \"invalid\": invalid CIDR format in IPv4 'invalid'",
        ),
        (
            json!([{"dst": "192.168.40.0/24", "gw": "invalid"}]),
            "spec.routes[0].gw: Invalid value: \"invalid\": invalid IP format in IPv4 'invalid'",
        ),
    ];
    for (routes, detail) in route_cases {
        let name = unique_name("g32");
        let message = denied(
            create(
                &pools,
                &pool(&name, json!({"subnet": "198.18.32.0/24", "routes": routes}))?,
            )
            .await,
            422,
            &[],
        );
        assert_eq!(
            message,
            format!(
                "{}SpiderIPPool.spiderpool.spidernet.io \"{name}\" is invalid: {detail}",
                webhook_prefix(POOL_WEBHOOK)
            )
        );
    }
    Ok(())
}

#[tokio::test]
async fn ippool_subnets_and_addresses_may_not_overlap_and_names_are_unique() -> anyhow::Result<()> {
    // G33, G34, G35, G44
    let client = setup().await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let small = unique_name("g33-small");
    create(
        &pools,
        &pool(
            &small,
            json!({"subnet": "198.18.33.0/25", "ips": ["198.18.33.40"]}),
        )?,
    )
    .await?;
    let big = unique_name("g33-big");
    let message = denied(
        create(&pools, &pool(&big, json!({"subnet": "198.18.33.0/24"}))?).await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderIPPool.spiderpool.spidernet.io \"{big}\" is invalid: spec.subnet: Invalid value: \"198.18.33.0/24\": overlap with IPPool {small} which 'spec.subnet' is 198.18.33.0/25",
            webhook_prefix(POOL_WEBHOOK)
        )
    );
    // The identical subnet string is fine, as long as the addresses differ.
    create(
        &pools,
        &pool(
            &unique_name("g33-twin"),
            json!({"subnet": "198.18.33.0/25", "ips": ["198.18.33.41"]}),
        )?,
    )
    .await?;

    let owner = unique_name("g34-old");
    create(
        &pools,
        &pool(
            &owner,
            json!({"subnet": "198.18.34.0/24", "ips": ["198.18.34.10"]}),
        )?,
    )
    .await?;
    let newcomer = unique_name("g34-new");
    let message = denied(
        create(&pools, &pool(&newcomer, json!({"subnet": "198.18.34.0/24", "ips": ["198.18.34.1-198.18.34.2", "198.18.34.10"]}))?).await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderIPPool.spiderpool.spidernet.io \"{newcomer}\" is invalid: spec.ips: Forbidden: overlap with IPPool {owner} in IP ranges [198.18.34.10], total IP addresses of an IPPool are jointly determined by 'spec.ips' and 'spec.excludeIPs'",
            webhook_prefix(POOL_WEBHOOK)
        )
    );

    // G35: 409 AlreadyExists, not Invalid.
    let status = denied(
        create(
            &pools,
            &pool(
                &owner,
                json!({"subnet": "198.18.34.0/24", "ips": ["198.18.34.99"]}),
            )?,
        )
        .await,
        409,
        &[],
    );
    assert_eq!(
        status,
        format!(
            "{}SpiderIPPool.spiderpool.spidernet.io \"{owner}\" already exists",
            webhook_prefix(POOL_WEBHOOK)
        )
    );

    // G44
    let name = unique_name("g44");
    let message = denied(
        create(&pools, &pool(&name, json!({"subnet": "198.18.44.1/24"}))?).await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderIPPool.spiderpool.spidernet.io \"{name}\" is invalid: spec.subnet: Invalid value: \"198.18.44.1/24\": unformatted subnet 198.18.44.1/24, please change it to 198.18.44.0/24",
            webhook_prefix(POOL_WEBHOOK)
        )
    );
    // Deliberate difference #7: a reversed range gets a clear denial.
    denied(
        create(
            &pools,
            &pool(
                &unique_name("reversed"),
                json!({"subnet": "198.18.44.0/24", "ips": ["198.18.44.9-198.18.44.1"]}),
            )?,
        )
        .await,
        422,
        &[
            "range 198.18.44.9-198.18.44.1 is reversed",
            "write it as '198.18.44.1-198.18.44.9'",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn ippool_pod_affinity_rules() -> anyhow::Result<()> {
    // G36
    let client = setup().await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let dotted = unique_name("g36-dot");
    denied(
        create(&pools, &pool(&dotted, json!({"subnet": "198.18.36.0/24", "podAffinity": {"matchLabels": {"key": ".starts.with.dot"}}}))?).await,
        422,
        &[&format!("SpiderIPPool.spiderpool.spidernet.io \"{dotted}\" is invalid: spec.podAffinity.matchLabels: Invalid value: \".starts.with.dot\": a valid label must be an empty string or consist of alphanumeric characters")],
    );
    let empty = unique_name("g36-empty");
    let message = denied(
        create(&pools, &pool(&empty, json!({"subnet": "198.18.36.0/24", "podAffinity": {"matchLabels": {}, "matchExpressions": []}}))?).await,
        422,
        &[],
    );
    assert!(
        message.ends_with("empty podAffinity is invalid for SpiderIPPool"),
        "{message}"
    );
    create(&pools, &pool(&unique_name("g36-ok"), json!({"subnet": "198.18.36.0/24", "ips": ["198.18.36.1"], "podAffinity": {"matchLabels": {"key": "value"}}}))?).await?;
    let mut auto = labelled(
        "SpiderIPPool",
        &unique_name("g36-auto"),
        json!({"subnet": "198.18.36.0/24", "ips": ["198.18.36.2"], "podAffinity": {"matchLabels": {"ipam.spidernet.io/app-name": "a", "extra": "x"}}}),
    );
    auto["metadata"]["labels"]["ipam.spidernet.io/owner-application-name"] = json!("a");
    denied(
        create(&pools, &serde_json::from_value(auto)?).await,
        422,
        &["it's invalid to add additional podAffinity matchLabels for auto-created SpiderIPPool"],
    );
    Ok(())
}

#[tokio::test]
async fn ippool_updates_keep_allocated_addresses_and_terminating_pools_frozen() -> anyhow::Result<()>
{
    // G37, G39, G40
    let client = setup().await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let name = unique_name("g37");
    create(
        &pools,
        &pool(
            &name,
            json!({"subnet": "198.18.37.0/24", "ips": ["198.18.37.1-198.18.37.2", "198.18.37.10"]}),
        )?,
    )
    .await?;
    // The ledger is written through the status subresource, which the webhooks do not see.
    let ledger = json!({"status": {"allocatedIPs": "{\"198.18.37.10\":{\"pod\":\"default/pod\",\"podUid\":\"uid-1\"}}", "allocatedIPCount": 1}});
    pools
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&ledger))
        .await?;
    let shrink = json!({"spec": {"ips": ["198.18.37.1-198.18.37.2"]}});
    let message = denied(
        pools
            .patch(&name, &PatchParams::default(), &Patch::Merge(&shrink))
            .await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderIPPool.spiderpool.spidernet.io \"{name}\" is invalid: spec.ips: Forbidden: remove an IP address 198.18.37.10 that is being used by Pod default/pod, total IP addresses of an IPPool are jointly determined by 'spec.ips' and 'spec.excludeIPs'",
            webhook_prefix(POOL_WEBHOOK)
        )
    );
    let moved = json!({"spec": {"subnet": "198.18.38.0/24"}});
    denied(
        pools
            .patch(&name, &PatchParams::default(), &Patch::Merge(&moved))
            .await,
        422,
        &["spec.subnet: Forbidden: is not changeable"],
    );

    // G39: enableValidatingResourcesDeletedWebhook is on in this suite's settings.
    let message = denied(
        pools.delete(&name, &DeleteParams::default()).await,
        403,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}spiderippools.spiderpool.spidernet.io \"{name}\" is forbidden: cannot delete an IPPool with allocated IPs(1)",
            webhook_prefix(POOL_WEBHOOK)
        )
    );

    // G40: a second finalizer keeps the pool terminating whatever the controllers do.
    let held = unique_name("g40");
    let mut object = pool(
        &held,
        json!({"subnet": "198.18.40.0/24", "ips": ["198.18.40.1"]}),
    )?;
    object.metadata.finalizers = Some(vec!["e2e.spiderpool.spidernet.io/hold".into()]);
    create(&pools, &object).await?;
    pools.delete(&held, &DeleteParams::default()).await?;
    let relabel = json!({"metadata": {"labels": {"touched": "yes"}}});
    let attempt = wait_for("the terminating pool denies updates", TIMEOUT, || async {
        let current = pools.get(&held).await?;
        if !current.finalizers().iter().any(|f| f == GROUP) {
            anyhow::bail!(
                "the spiderpool finalizer was removed by a controller: {:?}",
                current.finalizers()
            );
        }
        match pools
            .patch(&held, &PatchParams::default(), &Patch::Merge(&relabel))
            .await
        {
            Err(kube::Error::Api(status)) => Ok(Some(*status)),
            Ok(_) => Ok(None),
            Err(error) => Err(error.into()),
        }
    })
    .await;
    match attempt {
        Ok(status) => {
            assert_eq!(status.code, 403);
            assert_eq!(
                status.message,
                format!(
                    "{}forbidden: cannot update a terminating IPPool",
                    webhook_prefix(POOL_WEBHOOK)
                )
            );
            // Dropping the spiderpool finalizer is allowed.
            let keep_hold =
                json!({"metadata": {"finalizers": ["e2e.spiderpool.spidernet.io/hold"]}});
            pools
                .patch(&held, &PatchParams::default(), &Patch::Merge(&keep_hold))
                .await?;
        }
        // A pool controller may release the finalizer first; the rule is covered by unit tests.
        Err(error) if error.to_string().contains("removed by a controller") => {}
        Err(error) => return Err(error),
    }
    let release = json!({"metadata": {"finalizers": null}});
    pools
        .patch(&held, &PatchParams::default(), &Patch::Merge(&release))
        .await?;
    Ok(())
}

#[tokio::test]
async fn ippool_addresses_must_stay_inside_the_owner_subnet_and_auto_pools_match_its_record()
-> anyhow::Result<()> {
    // G38, G84
    let client = setup().await?;
    let subnets: Api<SpiderSubnet> = Api::all(client.clone());
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let subnet_name = unique_name("g38-subnet");
    let created_subnet = create(
        &subnets,
        &subnet(
            &subnet_name,
            json!({"subnet": "198.18.38.0/24", "ips": ["198.18.38.1-198.18.38.2", "198.18.38.10"]}),
        )?,
    )
    .await?;
    let owner = json!([{"apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderSubnet", "name": subnet_name, "uid": created_subnet.uid(), "controller": true, "blockOwnerDeletion": true}]);

    let outside = unique_name("g84");
    let mut object = labelled(
        "SpiderIPPool",
        &outside,
        json!({"subnet": "198.18.38.0/24", "ips": ["198.18.38.1-198.18.38.2", "198.18.38.40"]}),
    );
    object["metadata"]["ownerReferences"] = owner.clone();
    object["metadata"]["labels"]["ipam.spidernet.io/owner-spider-subnet"] = json!(subnet_name);
    let message = denied(
        create(&pools, &serde_json::from_value(object)?).await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderIPPool.spiderpool.spidernet.io \"{outside}\" is invalid: spec.ips: Forbidden: add some IP ranges [198.18.38.40] that are not contained in controller Subnet {subnet_name}, total IP addresses of an IPPool are jointly determined by 'spec.ips' and 'spec.excludeIPs'",
            webhook_prefix(POOL_WEBHOOK)
        )
    );

    // An auto pool must hold exactly what the subnet recorded for it.
    let auto = unique_name("g38-auto");
    let record = json!({"status": {"controlledIPPools": format!("{{\"{auto}\":{{\"ips\":[\"198.18.38.1\"],\"application\":\"apps_v1_Deployment_default_d\"}}}}")}});
    subnets
        .patch_status(
            &subnet_name,
            &PatchParams::default(),
            &Patch::Merge(&record),
        )
        .await?;
    let mut object = labelled(
        "SpiderIPPool",
        &auto,
        json!({"subnet": "198.18.38.0/24", "ips": ["198.18.38.1"]}),
    );
    object["metadata"]["ownerReferences"] = owner;
    object["metadata"]["labels"]["ipam.spidernet.io/owner-spider-subnet"] = json!(subnet_name);
    object["metadata"]["labels"]["ipam.spidernet.io/owner-application-name"] = json!("d");
    let created = create(&pools, &serde_json::from_value(object)?).await;
    match created {
        Ok(_) => {
            let grow = json!({"spec": {"ips": ["198.18.38.1-198.18.38.2"]}});
            denied(
                pools
                    .patch(&auto, &PatchParams::default(), &Patch::Merge(&grow))
                    .await,
                422,
                &[
                    "spec.ips: Forbidden: it's illegal to update AutoPool.Spec.IPs that are different from corresponding SpiderSubnet.Status.ControlledIPPools",
                ],
            );
            let annotate = json!({"metadata": {"annotations": {"note": "only metadata"}}});
            pools
                .patch(&auto, &PatchParams::default(), &Patch::Merge(&annotate))
                .await?;
        }
        // A subnet controller may have rewritten the record meanwhile; the rule is unit-tested.
        Err(kube::Error::Api(status))
            if status.message.contains("it's illegal to update AutoPool") => {}
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

#[tokio::test]
async fn subnet_rules() -> anyhow::Result<()> {
    // G41, G42
    let client = setup().await?;
    let subnets: Api<SpiderSubnet> = Api::all(client.clone());
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let inner = unique_name("g41-pool");
    create(
        &pools,
        &pool(
            &inner,
            json!({"subnet": "198.18.41.0/25", "ips": ["198.18.41.40-198.18.41.45"]}),
        )?,
    )
    .await?;
    let wide = unique_name("g41-wide");
    let message = denied(
        create(
            &subnets,
            &subnet(&wide, json!({"subnet": "198.18.41.0/24"}))?,
        )
        .await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderSubnet.spiderpool.spidernet.io \"{wide}\" is invalid: spec.subnet: Invalid value: \"198.18.41.0/24\": overlap with SpiderIPPool '{inner}' resource 'spec.subnet' 198.18.41.0/25",
            webhook_prefix(SUBNET_WEBHOOK)
        )
    );
    let narrow = unique_name("g41-narrow");
    let message = denied(
        create(
            &subnets,
            &subnet(
                &narrow,
                json!({"subnet": "198.18.41.0/25", "ips": ["198.18.41.41-198.18.41.45"]}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderSubnet.spiderpool.spidernet.io \"{narrow}\" is invalid: spec.ips: Invalid value: []string{{\"198.18.41.41-198.18.41.45\"}}: SpiderIPPool '{inner}' owns some IP addresses that SpiderSubnet '{narrow}' can't control",
            webhook_prefix(SUBNET_WEBHOOK)
        )
    );

    let name = unique_name("g42");
    let created = create(
        &subnets,
        &subnet(
            &name,
            json!({"subnet": "198.18.42.0/24", "ips": ["198.18.42.1-198.18.42.10"]}),
        )?,
    )
    .await?;
    assert_eq!(created.spec.ip_version, Some(4));
    assert!(created.finalizers().iter().any(|f| f == GROUP));
    let record =
        json!({"status": {"controlledIPPools": "{\"some-pool\":{\"ips\":[\"198.18.42.10\"]}}"}});
    subnets
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&record))
        .await?;
    let shrink = json!({"spec": {"ips": ["198.18.42.1-198.18.42.9"]}});
    match subnets
        .patch(&name, &PatchParams::default(), &Patch::Merge(&shrink))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert_eq!(
                status.message,
                format!(
                    "{}SpiderSubnet.spiderpool.spidernet.io \"{name}\" is invalid: spec.ips: Forbidden: remove some IP ranges [198.18.42.10] that is being used by IPPool some-pool, total IP addresses of an Subnet are jointly determined by 'spec.ips' and 'spec.excludeIPs'",
                    webhook_prefix(SUBNET_WEBHOOK)
                )
            );
        }
        // A subnet controller may have dropped the record of a pool that does not exist.
        Ok(updated) => assert!(
            updated
                .status
                .as_ref()
                .and_then(|status| status.controlled_ip_pools.as_deref())
                .is_none_or(|pools| !pools.contains("198.18.42.10")),
            "the shrink was admitted although the record holds the address"
        ),
        Err(error) => return Err(error.into()),
    }
    let record =
        json!({"status": {"controlledIPPools": "{\"some-pool\":{\"ips\":[\"198.18.42.1\"]}}"}});
    subnets
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&record))
        .await?;
    subnets
        .patch(&name, &PatchParams::default(), &Patch::Merge(&shrink))
        .await?;
    Ok(())
}

#[tokio::test]
async fn reserved_ips_are_defaulted_and_validated() -> anyhow::Result<()> {
    // G43
    let client = setup().await?;
    let reserved: Api<SpiderReservedIP> = Api::all(client.clone());
    let object = |name: &str, ips: Value| -> anyhow::Result<SpiderReservedIP> {
        Ok(serde_json::from_value(labelled(
            "SpiderReservedIP",
            name,
            json!({"ips": ips}),
        ))?)
    };
    let v4 = create(
        &reserved,
        &object(&unique_name("g43-v4"), json!(["198.18.43.1-198.18.43.2"]))?,
    )
    .await?;
    assert_eq!(v4.spec.ip_version, Some(4));
    let v6 = create(
        &reserved,
        &object(&unique_name("g43-v6"), json!(["abcd:1234::1-abcd:1234::2"]))?,
    )
    .await?;
    assert_eq!(v6.spec.ip_version, Some(6));
    let merged = create(
        &reserved,
        &object(
            &unique_name("g43-merge"),
            json!([
                "198.18.43.10",
                "198.18.43.1-198.18.43.2",
                "198.18.43.2-198.18.43.3"
            ]),
        )?,
    )
    .await?;
    assert_eq!(
        merged.spec.ips,
        Some(vec![
            "198.18.43.1-198.18.43.3".to_string(),
            "198.18.43.10".into()
        ])
    );
    let bad = unique_name("g43-bad");
    let message = denied(
        create(&reserved, &object(&bad, json!(["invalid IP range"]))?).await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderReservedIP.spiderpool.spidernet.io \"{bad}\" is invalid: spec.ipVersion: Invalid value: null: is not generated correctly, 'spec.ips' is empty or 'spec.ips[0]' may be invalid",
            webhook_prefix("spiderreservedip.spiderpool.spidernet.io")
        )
    );
    Ok(())
}

fn smc(
    namespace: &str,
    name: &str,
    annotations: Value,
    spec: Value,
) -> anyhow::Result<SpiderMultusConfig> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderMultusConfig",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
    }))?)
}

#[tokio::test]
async fn multus_config_defaults_and_rules() -> anyhow::Result<()> {
    // G45, G50-G54, G57, G63, G67
    let client = setup().await?;
    let ns = namespace(&client, "wh-smc", &[]).await?;
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &ns);
    let none = json!({});

    let vlan = create(
        &smcs,
        &smc(
            &ns,
            "vlan",
            none.clone(),
            json!({"cniType": "vlan", "vlan": {"master": ["eth0"]}}),
        )?,
    )
    .await?;
    let config = vlan.spec.vlan.as_ref().expect("vlan section");
    assert_eq!(
        (config.vlan_mode, config.vlan_id),
        (Some(spiderpool_api::VlanMode::Manual), Some(0))
    );
    assert_eq!(
        vlan.spec.coordinator.as_ref().and_then(|c| c.mode),
        Some(spiderpool_api::CoordinatorMode::Auto)
    );

    // G47
    let message = denied(
        create(&smcs, &smc(&ns, "vlan-auto", none.clone(), json!({"cniType": "vlan", "vlan": {"master": ["eth0"], "vlanMode": "auto", "vlanID": 100}}))?).await,
        422,
        &[],
    );
    assert!(
        message.ends_with("vlanId must not be specified when vlanMode is auto"),
        "{message}"
    );
    // G49: injectable networks with pools pass; the annotation is copied to a label.
    let inject = json!({"cni.spidernet.io/network-resource-inject": "true"});
    for (name, spec) in [
        (
            "inject-macvlan",
            json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"], "ippools": {"ipv4": ["pool-a"]}}}),
        ),
        (
            "inject-ipvlan",
            json!({"cniType": "ipvlan", "ipvlan": {"master": ["eth0"], "ippools": {"ipv4": ["pool-a"]}}}),
        ),
        (
            "inject-sriov",
            json!({"cniType": "sriov", "sriov": {"resourceName": "vendor.io/resource", "ippools": {"ipv4": ["pool-a"]}}}),
        ),
    ] {
        let created = create(&smcs, &smc(&ns, name, inject.clone(), spec)?).await?;
        assert_eq!(
            created
                .labels()
                .get("cni.spidernet.io/network-resource-inject")
                .map(String::as_str),
            Some("true")
        );
    }
    denied(
        create(
            &smcs,
            &smc(
                &ns,
                "inject-rdma",
                json!({"cni.spidernet.io/rdma-resource-inject": "x"}),
                json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
            )?,
        )
        .await,
        422,
        &[&format!(
            "rdmaResourceName can not empty for spidermultusconfig {ns}/inject-rdma"
        )],
    );
    // G50: out of range (the CRD schema or the webhook refuses it).
    for id in [-1, 4095] {
        denied(
            create(
                &smcs,
                &smc(
                    &ns,
                    &format!("range{}", id + 1),
                    none.clone(),
                    json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"], "vlanID": id}}),
                )?,
            )
            .await,
            422,
            &["vlanID"],
        );
    }
    // G51
    let message = denied(
        create(
            &smcs,
            &smc(
                &ns,
                "wrong-section",
                none.clone(),
                json!({"cniType": "ipvlan", "macvlan": {"master": ["eth0"]}}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderMultusConfig.spiderpool.spidernet.io \"wrong-section\" is invalid: spec.ipvlanConfig: Required value: no spec.ipvlanConfig specified",
            webhook_prefix(SMC_WEBHOOK)
        )
    );
    // G52
    let message = denied(
        create(
            &smcs,
            &smc(
                &ns,
                "custom-bad",
                none.clone(),
                json!({"cniType": "custom", "customCNI": "{ \"invalid\" }"}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(
        message.ends_with(
            "spec.customCniTypeConfig: Forbidden: customCniConfig isn't a valid JSON encoding"
        ),
        "{message}"
    );
    let custom = r#"{"cniVersion":"0.3.1","name":"custom-good","type":"macvlan","master":"eth0"}"#;
    create(
        &smcs,
        &smc(
            &ns,
            "custom-good",
            none.clone(),
            json!({"cniType": "custom", "customCNI": custom}),
        )?,
    )
    .await?;
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    let nad = wait_for("custom NAD", TIMEOUT, || async {
        Ok(nads.get_opt("custom-good").await?)
    })
    .await?;
    assert_eq!(nad.spec.config.as_deref(), Some(custom));
    // G53
    let message = denied(
        create(
            &smcs,
            &smc(
                &ns,
                "version-bad",
                json!({"multus.spidernet.io/cni-version": "x.y.z"}),
                json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(
        message.ends_with("unsupported CNI version x.y.z"),
        "{message}"
    );
    create(
        &smcs,
        &smc(
            &ns,
            "version-ok",
            json!({"multus.spidernet.io/cni-version": "0.4.0"}),
            json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
        )?,
    )
    .await?;
    let nad = wait_for("versioned NAD", TIMEOUT, || async {
        Ok(nads.get_opt("version-ok").await?)
    })
    .await?;
    assert_eq!(
        nad.annotations()
            .get("multus.spidernet.io/cni-version")
            .map(String::as_str),
        Some("0.4.0")
    );
    // G54
    for (name, custom, expected) in [
        (
            "long-name",
            "a".repeat(254),
            "must be no more than 253 characters",
        ),
        (
            "stars",
            "custom-error-name************".to_string(),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
        ),
    ] {
        denied(
            create(
                &smcs,
                &smc(
                    &ns,
                    name,
                    json!({"multus.spidernet.io/cr-name": custom}),
                    json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
                )?,
            )
            .await,
            422,
            &[
                "metadata.annotations: Invalid value: map[string]string{",
                "invalid custom net-attach-def resource name, err: [",
                expected,
            ],
        );
    }
    // G57
    create(&smcs, &smc(&ns, "empty", none.clone(), json!({}))?).await?;
    let nad = wait_for("empty NAD", TIMEOUT, || async {
        Ok(nads.get_opt("empty").await?)
    })
    .await?;
    assert!(nad.spec.config.as_deref().unwrap_or_default().is_empty());
    // G63
    let message = denied(
        create(&smcs, &smc(&ns, "rates", none.clone(), json!({"cniType": "sriov", "sriov": {"resourceName": "r", "minTxRateMbps": 100, "maxTxRateMbps": 10}}))?).await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderMultusConfig.spiderpool.spidernet.io \"rates\" is invalid: spec.sriovConfig: Invalid value: 100: minTxRateMbps must be less than maxTxRateMbps",
            webhook_prefix(SMC_WEBHOOK)
        )
    );
    // G67
    let macvlan = |coordinator: Value| json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}, "coordinator": coordinator});
    create(
        &smcs,
        &smc(
            &ns,
            "mac-ok",
            none.clone(),
            macvlan(json!({"podMACPrefix": "9e:10"})),
        )?,
    )
    .await?;
    create(
        &smcs,
        &smc(
            &ns,
            "rp-ok",
            none.clone(),
            macvlan(json!({"podRPFilter": -1})),
        )?,
    )
    .await?;
    let cases = [
        (
            "mac-bad",
            json!({"podMACPrefix": "01:10"}),
            "spec.podMACPrefix: Invalid value: \"01:10\": not a unicast MAC: the lowest bit of the first byte must be 0",
        ),
        (
            "rp-bad",
            json!({"podRPFilter": 4}),
            "spec.podRPFilter: Unsupported value: 4: supported values: \"0\", \"1\", \"2\"",
        ),
        (
            "txq-bad",
            json!({"txQueueLen": -1}),
            "spec.txQueueLen: Invalid value: -1: txQueueLen can't be less than 0",
        ),
        (
            "family-bad",
            json!({"policyRoutes": [{"dst": "10.10.0.0/16", "gw": "fd00::1"}]}),
            "spec.policyRoutes[0]: Invalid value: v2beta1.Route{Dst:\"10.10.0.0/16\", Gw:\"fd00::1\"}: dst and gw must use the same IP family",
        ),
    ];
    for (name, coordinator, detail) in cases {
        let message = denied(
            create(&smcs, &smc(&ns, name, none.clone(), macvlan(coordinator))?).await,
            422,
            &[],
        );
        assert_eq!(
            message,
            format!(
                "{}SpiderMultusConfig.spiderpool.spidernet.io \"{name}\" is invalid: {detail}",
                webhook_prefix(SMC_WEBHOOK)
            )
        );
    }
    // vethMTU 0: the CRD minimum refuses it before the webhook would.
    denied(
        create(
            &smcs,
            &smc(&ns, "mtu-bad", none, macvlan(json!({"vethMTU": 0})))?,
        )
        .await,
        422,
        &["vethMTU"],
    );
    Ok(())
}

#[tokio::test]
async fn multus_config_net_attach_def_ownership() -> anyhow::Result<()> {
    // G55, G56
    let client = setup().await?;
    let ns = namespace(&client, "wh-nad", &[]).await?;
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &ns);
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    let macvlan = json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}});
    create(
        &smcs,
        &smc(
            &ns,
            "a",
            json!({"multus.spidernet.io/cr-name": "x"}),
            macvlan.clone(),
        )?,
    )
    .await?;
    wait_for("NAD x owned by SMC a", TIMEOUT, || async {
        Ok(nads
            .get_opt("x")
            .await?
            .filter(|nad| nad.owner_references().iter().any(|owner| owner.name == "a")))
    })
    .await?;
    let message = denied(
        create(
            &smcs,
            &smc(
                &ns,
                "b",
                json!({"multus.spidernet.io/cr-name": "x"}),
                macvlan.clone(),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(
        message.ends_with(&format!(
            "the net-attach-def {ns}/x already exists and is managed by SpiderMultusConfig {ns}/a."
        )),
        "{message}"
    );
    denied(
        create(&smcs, &smc(&ns, "x", json!({}), macvlan.clone())?).await,
        422,
        &["is managed by SpiderMultusConfig"],
    );
    // G56: an unowned NAD is taken over.
    let unowned: NetworkAttachmentDefinition = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "already-multus-x", "namespace": ns}, "spec": {"config": "{}"}
    }))?;
    create(&nads, &unowned).await?;
    create(&smcs, &smc(&ns, "already-multus-x", json!({}), macvlan)?).await?;
    wait_for("NAD adopted", TIMEOUT, || async {
        Ok(nads.get_opt("already-multus-x").await?.filter(|nad| {
            nad.owner_references()
                .iter()
                .any(|owner| owner.kind == "SpiderMultusConfig" && owner.controller == Some(true))
                && nad.spec.config.as_deref() != Some("{}")
        }))
    })
    .await?;
    // Renaming the NAD afterwards is refused.
    let rename = json!({"metadata": {"annotations": {"multus.spidernet.io/cr-name": "y"}}});
    denied(
        smcs.patch("a", &PatchParams::default(), &Patch::Merge(&rename))
            .await,
        422,
        &[
            "metadata.annotations: Invalid value: \"x\": it's unsupported to change customized Multus net-attach-def resource name from 'x' to 'y'",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn spider_coordinator_is_defaulted_and_validated() -> anyhow::Result<()> {
    let client = setup().await?;
    let coordinators: Api<SpiderCoordinator> = Api::all(client.clone());
    let name = unique_name("scc");
    let created = create(
        &coordinators,
        &serde_json::from_value(labelled(
            "SpiderCoordinator",
            &name,
            json!({"podCIDRType": "none", "hijackCIDR": ["10.96.0.10"]}),
        ))?,
    )
    .await?;
    assert_eq!(created.spec.veth_mtu, Some(1500));
    assert_eq!(
        created.spec.hijack_cidr,
        Some(vec!["10.96.0.10/32".to_string()])
    );
    // No finalizer until a coordinator controller exists to remove it (see the webhook's
    // `mutate`): deleting the object must not hang.
    assert!(
        created.finalizers().is_empty(),
        "{:?}",
        created.finalizers()
    );
    coordinators.delete(&name, &DeleteParams::default()).await?;
    wait_for("the SpiderCoordinator to be gone", TIMEOUT, || async {
        Ok(coordinators.get_opt(&name).await?.is_none().then_some(()))
    })
    .await?;
    let bad = unique_name("scc-bad");
    let message = denied(
        create(
            &coordinators,
            &serde_json::from_value(labelled(
                "SpiderCoordinator",
                &bad,
                json!({"podCIDRType": "none", "podRPFilter": 4}),
            ))?,
        )
        .await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderCoordinator.spiderpool.spidernet.io \"{bad}\" is invalid: spec.podRPFilter: Unsupported value: 4: supported values: \"0\", \"1\", \"2\"",
            webhook_prefix("spidercoordinator.spiderpool.spidernet.io")
        )
    );
    Ok(())
}

fn pod_object(namespace: &str, name: &str, annotations: Value) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]},
    }))?)
}

#[tokio::test]
async fn ipam_annotations_of_pods_workloads_and_namespaces_are_checked() -> anyhow::Result<()> {
    let client = setup().await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let pool_v4 = unique_name("anno-v4");
    create(
        &pools,
        &pool(
            &pool_v4,
            json!({"subnet": "198.18.50.0/24", "ips": ["198.18.50.10"]}),
        )?,
    )
    .await?;
    let ns = namespace(&client, "wh-anno", &[]).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Pods without ipam annotations are never sent; valid ones pass.
    create(&pods, &pod_object(&ns, "plain", json!({"other": "x"}))?).await?;
    create(
        &pods,
        &pod_object(
            &ns,
            "good",
            json!({"ipam.spidernet.io/ippool": format!("{{\"ipv4\":[\"{pool_v4}\"]}}")}),
        )?,
    )
    .await?;

    let message = denied(
        create(
            &pods,
            &pod_object(
                &ns,
                "typo",
                json!({"ipam.spidernet.io/ippool": "{\"ipv4\": \"not-a-list\"}"}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(message.starts_with(&format!(
        "{}Pod \"typo\" is invalid: metadata.annotations[ipam.spidernet.io/ippool]: Invalid value: ",
        webhook_prefix("pods.ipam-annotations.spiderpool.spidernet.io")
    )), "{message}");
    assert!(
        message
            .contains("wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippool'")
            && message.contains("expected JSON like"),
        "{message}"
    );

    let message = denied(
        create(
            &pods,
            &pod_object(
                &ns,
                "missing",
                json!({"ipam.spidernet.io/ippool": "{\"ipv4\":[\"no-such-pool\"]}"}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(message.ends_with("SpiderIPPool \"no-such-pool\" does not exist; create it first or fix the name (kubectl get spiderippools)"), "{message}");
    let message = denied(
        create(
            &pods,
            &pod_object(
                &ns,
                "family",
                json!({"ipam.spidernet.io/ippool": format!("{{\"ipv6\":[\"{pool_v4}\"]}}")}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(
        message.contains("is an IPv4 SpiderIPPool but is listed under \"ipv6\""),
        "{message}"
    );
    denied(
        create(&pods, &pod_object(&ns, "routes", json!({"ipam.spidernet.io/routes": "[{\"dst\":\"10.0.0.0/16\",\"gw\":\"fd00::1\"}]"}))?).await,
        422,
        &["metadata.annotations[ipam.spidernet.io/routes]", "invalid route format 'dst: 10.0.0.0/16, gw: fd00::1'"],
    );
    denied(
        create(
            &pods,
            &pod_object(
                &ns,
                "number",
                json!({"ipam.spidernet.io/ippool-ip-number": "++2"}),
            )?,
        )
        .await,
        422,
        &["metadata.annotations[ipam.spidernet.io/ippool-ip-number]"],
    );

    // Workloads: the pod template is judged; an unrelated update is not judged again.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = |name: &str, annotations: Value| -> anyhow::Result<Deployment> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": annotations},
                    "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]},
                },
            },
        }))?)
    };
    let message = denied(
        create(
            &deployments,
            &deployment(
                "bad-subnet",
                json!({"ipam.spidernet.io/subnet": "{\"ipv4\":[\"no-such-subnet\"]}"}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(message.starts_with(&format!(
        "{}Deployment.apps \"bad-subnet\" is invalid: spec.template.metadata.annotations[ipam.spidernet.io/subnet]",
        webhook_prefix("workloads.ipam-annotations.spiderpool.spidernet.io")
    )), "{message}");
    assert!(message.ends_with("interface eth0: SpiderSubnet \"no-such-subnet\" does not exist; create it first or fix the name (kubectl get spidersubnets)"), "{message}");
    create(
        &deployments,
        &deployment(
            "ok",
            json!({"ipam.spidernet.io/ippool": format!("{{\"ipv4\":[\"{pool_v4}\"]}}")}),
        )?,
    )
    .await?;

    // Namespaces: default pools.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let bad_namespace: Namespace = serde_json::from_value(json!({"metadata": {
        "name": unique_name("wh-ns-bad"),
        "labels": {LABEL: "true", "spiderpool-e2e": "true"},
        "annotations": {"ipam.spidernet.io/default-ipv4-ippool": "[\"no-such-pool\"]"}
    }}))?;
    denied(
        create(&namespaces, &bad_namespace).await,
        422,
        &[
            "metadata.annotations[ipam.spidernet.io/default-ipv4-ippool]",
            "SpiderIPPool \"no-such-pool\" does not exist",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn a_webhook_outage_leaves_pods_working_while_pools_fail_closed() -> anyhow::Result<()> {
    let client = setup().await?;
    // Configurations pointing at a port nobody listens on, for objects labelled for this test only.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let name = unique_name("spiderpool-e2e-outage");
    let outage = "spiderpool-e2e-webhook-outage";
    let ca = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(WEBHOOK_CONFIGURATION)
        .await?
        .webhooks
        .and_then(|webhooks| webhooks.into_iter().next())
        .and_then(|webhook| webhook.client_config.ca_bundle)
        .expect("caBundle of the suite's configuration");
    let ca = serde_json::to_value(&ca)?;
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [
            {"name": "pods.outage.spiderpool.spidernet.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "failurePolicy": "Ignore", "timeoutSeconds": 2,
             "clientConfig": {"url": format!("https://127.0.0.1:{dead_port}/validate-ipam-annotations-v1-pod"), "caBundle": ca},
             "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
             "namespaceSelector": {"matchLabels": {outage: "true"}}},
            {"name": "spiderippool.outage.spiderpool.spidernet.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "failurePolicy": "Fail", "timeoutSeconds": 2,
             "clientConfig": {"url": format!("https://127.0.0.1:{dead_port}/validate-spiderpool-spidernet-io-v2beta1-spiderippool"), "caBundle": ca},
             "rules": [{"apiGroups": [GROUP], "apiVersions": ["v2beta1"], "resources": ["spiderippools"], "operations": ["CREATE"]}],
             "objectSelector": {"matchLabels": {outage: "true"}}}
        ]
    }))?;
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    configurations
        .create(&PostParams::default(), &validating)
        .await?;
    let ns = namespace(&client, "wh-outage", &[(outage, "true")]).await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let mut object = labelled(
        "SpiderIPPool",
        &unique_name("outage"),
        json!({"subnet": "198.18.60.0/24"}),
    );
    object["metadata"]["labels"][outage] = json!("true");
    let object: SpiderIPPool = serde_json::from_value(object)?;
    let failure = wait_for("the outage configuration in effect", TIMEOUT, || async {
        match pools
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &object,
            )
            .await
        {
            Err(kube::Error::Api(status)) if status.message.contains("failed calling webhook") => {
                Ok(Some(*status))
            }
            _ => Ok(None),
        }
    })
    .await?;
    assert_eq!(failure.code, 500);
    assert!(
        failure
            .message
            .contains("spiderippool.outage.spiderpool.spidernet.io"),
        "{}",
        failure.message
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    create(
        &pods,
        &pod_object(
            &ns,
            "still-works",
            json!({"ipam.spidernet.io/ippool": "{\"ipv4\":[\"whatever\"]}"}),
        )?,
    )
    .await?;
    configurations
        .delete(&name, &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn installed_configurations_fail_closed_for_pools_and_open_for_pods() -> anyhow::Result<()> {
    let client = setup().await?;
    let name = WEBHOOK_CONFIGURATION;
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(name)
        .await?;
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(name)
        .await?;
    let policy = |name: &str| {
        validating
            .webhooks
            .iter()
            .flatten()
            .find(|webhook| webhook.name == name)
            .and_then(|webhook| webhook.failure_policy.clone())
    };
    assert_eq!(policy(POOL_WEBHOOK).as_deref(), Some("Fail"));
    assert_eq!(
        policy("pods.ipam-annotations.spiderpool.spidernet.io").as_deref(),
        Some("Ignore")
    );
    assert_eq!(mutating.webhooks.map(|webhooks| webhooks.len()), Some(5));
    Ok(())
}

/// 1000 dry-run IPPool creates through the API server: each goes through the mutating and the
/// validating webhook (two reviews) plus the API server's own work. Prints the percentiles.
#[tokio::test]
async fn admission_latency_through_the_api_server_over_1000_dry_run_creates() -> anyhow::Result<()>
{
    let client = setup().await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let object = pool(
        &unique_name("latency"),
        json!({"subnet": "198.18.99.0/24", "ips": ["198.18.99.10", "198.18.99.1-198.18.99.9"]}),
    )?;
    let mut durations = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = std::time::Instant::now();
        let created = pools.create(&dry_run, &object).await?;
        durations.push(started.elapsed());
        assert_eq!(
            created.spec.ips,
            Some(vec!["198.18.99.1-198.18.99.10".to_string()])
        );
    }
    durations.sort();
    let at =
        |fraction: f64| durations[((durations.len() as f64 * fraction).ceil() as usize).max(1) - 1];
    eprintln!(
        "1000 dry-run IPPool creates through the API server (mutate + validate): p50 {:?} p99 {:?} max {:?}",
        at(0.50),
        at(0.99),
        durations[durations.len() - 1]
    );
    assert!(at(0.99) < Duration::from_secs(2));
    Ok(())
}
