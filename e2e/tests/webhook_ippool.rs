//! SpiderIPPool admission through the real API server: defaulting, adoption by the subnet of
//! its CIDR, the gateway, route, overlap, pod-affinity, in-use and owner-subnet rules, and the
//! admission latency of a pool create.
//!
//! Every golden case asserts the HTTP status and the denial text the client sees. Addresses are
//! taken from 198.18.0.0/15 (one /24 per test) so tests can run in parallel; the harness is
//! `webhook_support`.

mod webhook_support;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_e2e::{unique_name, wait_for};
use webhook_support::*;

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
            "spec.ips[0]: Invalid value: \"198.18.44.9-198.18.44.1\"",
            "the first address 198.18.44.9 is greater than the last address 198.18.44.1",
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

/// `count` dry-run IPPool creates through the API server, each mutated (the `ips` merged) and
/// validated: two reviews plus the API server's own work. Returns the sorted durations.
async fn dry_run_creates(count: usize) -> anyhow::Result<Vec<Duration>> {
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
    let mut durations = Vec::with_capacity(count);
    for _ in 0..count {
        let started = std::time::Instant::now();
        let created = pools.create(&dry_run, &object).await?;
        durations.push(started.elapsed());
        assert_eq!(
            created.spec.ips,
            Some(vec!["198.18.99.1-198.18.99.10".to_string()])
        );
    }
    durations.sort();
    Ok(durations)
}

#[tokio::test]
async fn repeated_dry_run_creates_are_each_mutated_and_validated() -> anyhow::Result<()> {
    dry_run_creates(20).await?;
    Ok(())
}

/// The latency of 1000 dry-run creates (`make bench`; timings are reported, not asserted).
#[tokio::test]
#[ignore = "benchmark: run by make bench"]
async fn bench_admission_latency_through_the_api_server_over_1000_dry_run_creates()
-> anyhow::Result<()> {
    let durations = dry_run_creates(1000).await?;
    let at =
        |fraction: f64| durations[((durations.len() as f64 * fraction).ceil() as usize).max(1) - 1];
    println!(
        "BENCH webhook ippool: 1000 dry-run IPPool creates through the API server (mutate + validate): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        durations[durations.len() - 1].as_secs_f64() * 1000.0
    );
    Ok(())
}
