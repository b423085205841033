//! `/metrics` of the controller-manager against the objects: after every step (pools created,
//! adopted, addresses allocated and released, a workload scaled and deleted) the per-pool and
//! per-subnet usage gauges equal the pools' and subnets' status, and the counters of the
//! application controller and the garbage collector are exposed.

mod autopool_support;

use autopool_support::*;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_e2e::{
    ControllerManager, TestNamespace, client, controller_manager, http_get, wait_for,
};

async fn scrape(manager: &ControllerManager) -> anyhow::Result<String> {
    let (status, text) = http_get(manager.admin_addr, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    Ok(text)
}

/// Waits until every pool of `subnet` and the subnet itself report in `/metrics` exactly what
/// their status says, and the pool count is right. Returns the scrape.
async fn metrics_match_status(
    client: &Client,
    manager: &ControllerManager,
    subnet: &str,
    expected_pools: usize,
) -> anyhow::Result<String> {
    wait_for("metrics equal to the status", TIMEOUT, || async {
        let text = scrape(manager).await?;
        let pools = Api::<SpiderIPPool>::all(client.clone())
            .list(
                &ListParams::default()
                    .labels(&format!("ipam.spidernet.io/owner-spider-subnet={subnet}")),
            )
            .await?
            .items;
        if pools.len() != expected_pools {
            return Ok(None);
        }
        for pool in &pools {
            let status = pool.status.clone().unwrap_or_default();
            let (Some(total), Some(allocated)) = (status.total_ip_count, status.allocated_ip_count)
            else {
                return Ok(None);
            };
            let labels = [
                ("pool", pool.name_any()),
                ("ip_version", "4".to_string()),
                ("subnet", subnet.to_string()),
            ];
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(key, value)| (*key, value.as_str()))
                .collect();
            let reported = (
                metric(&text, "spiderpool_ippool_total_ip_counts", &labels),
                metric(&text, "spiderpool_ippool_allocated_ip_counts", &labels),
                metric(&text, "spiderpool_ippool_available_ip_counts", &labels),
            );
            if reported
                != (
                    Some(total as f64),
                    Some(allocated as f64),
                    Some((total - allocated) as f64),
                )
            {
                return Ok(None);
            }
        }
        let object = Api::<SpiderSubnet>::all(client.clone()).get(subnet).await?;
        let status = object.status.unwrap_or_default();
        let labels = [("subnet", subnet), ("ip_version", "4")];
        let reported = (
            metric(&text, "spiderpool_subnet_total_ip_counts", &labels),
            metric(&text, "spiderpool_subnet_allocated_ip_counts", &labels),
            metric(&text, "spiderpool_subnet_available_ip_counts", &labels),
            metric(&text, "spiderpool_subnet_ippool_counts", &labels),
        );
        let (Some(total), Some(allocated)) = (status.total_ip_count, status.allocated_ip_count)
        else {
            return Ok(None);
        };
        let expected = (
            Some(total as f64),
            Some(allocated as f64),
            Some((total - allocated) as f64),
            Some(expected_pools as f64),
        );
        Ok((reported == expected).then_some(text))
    })
    .await
}

#[tokio::test]
async fn metrics_equal_the_pools_and_subnets_status_after_every_step() -> anyhow::Result<()> {
    let client = client().await?;
    let manager = controller_manager(&[]).await?;
    let namespace = TestNamespace::create(&client, "metrics").await?;
    let ns = namespace.name.as_str();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "metrics",
        json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.100")]}),
    )
    .await?;

    // A manual pool with the subnet's CIDR is adopted; a Deployment gets an auto pool.
    let manual = create_pool(
        &client,
        "metrics-manual",
        json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.90-10.{octet}.0.99")]}),
    )
    .await?;
    create_deployment(
        &client,
        ns,
        &deployment(
            "web",
            2,
            &[(ANNO_SUBNET, subnet_annotation(Some(&subnet), None))],
        ),
    )
    .await?;
    let pools = wait_app_pools(&client, "Deployment", ns, "web", 1, |_| true).await?;
    let auto = pools[0].name_any();
    wait_for("both pools recorded in the subnet", TIMEOUT, || async {
        Ok((subnet_state(&client, &subnet).await?.1 == 13).then_some(()))
    })
    .await?;
    let text = metrics_match_status(&client, manager, &subnet, 2).await?;
    let adopted = Api::<SpiderIPPool>::all(client.clone())
        .get(&manual)
        .await?;
    assert_eq!(
        adopted
            .owner_references()
            .first()
            .map(|owner| (owner.kind.as_str(), owner.controller)),
        Some(("SpiderSubnet", Some(true)))
    );
    let (records, allocated, _) = subnet_state(&client, &subnet).await?;
    assert_eq!(
        records[&manual],
        vec![format!("10.{octet}.0.90-10.{octet}.0.99")]
    );
    assert_eq!(allocated, 13);
    let subnet_labels = [("subnet", subnet.as_str()), ("ip_version", "4")];
    assert_eq!(
        metric(
            &text,
            "spiderpool_subnet_allocated_ip_counts",
            &subnet_labels
        ),
        Some(13.0)
    );
    assert!(metric(&text, "spiderpool_total_ippool_counts", &[]).unwrap_or(0.0) >= 2.0);
    assert!(metric(&text, "spiderpool_total_subnet_counts", &[]).unwrap_or(0.0) >= 1.0);
    assert!(metric(&text, "spiderpool_auto_pool_creations_total", &[]).unwrap_or(0.0) >= 1.0);
    for name in [
        "spiderpool_ip_gc_counts_total",
        "spiderpool_auto_pool_scalings_total",
        "spiderpool_controller_reconcile_total",
        "spiderpool_controller_reconcile_duration_seconds_bucket",
    ] {
        assert!(!metric_lines(&text, name).is_empty(), "{name} is exposed");
    }

    // Addresses allocated in both pools.
    for (pool, holder) in [(&auto, "a"), (&auto, "b"), (&manual, "c")] {
        allocate_record(
            &client,
            pool,
            &format!("{ns}/{holder}"),
            &format!("uid-{holder}"),
        )
        .await?;
    }
    let text = metrics_match_status(&client, manager, &subnet, 2).await?;
    let auto_labels = [
        ("pool", auto.as_str()),
        ("ip_version", "4"),
        ("subnet", subnet.as_str()),
    ];
    assert_eq!(
        metric(&text, "spiderpool_ippool_allocated_ip_counts", &auto_labels),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "spiderpool_ippool_available_ip_counts", &auto_labels),
        Some(1.0)
    );

    // Scaled up: the auto pool and the subnet grow.
    scale_deployment(&client, ns, "web", 6).await?;
    wait_app_pools(&client, "Deployment", ns, "web", 1, |pools| {
        pool_size(&pools[0]) == 7
    })
    .await?;
    let text = metrics_match_status(&client, manager, &subnet, 2).await?;
    assert_eq!(
        metric(&text, "spiderpool_ippool_total_ip_counts", &auto_labels),
        Some(7.0)
    );
    assert_eq!(
        metric(
            &text,
            "spiderpool_subnet_allocated_ip_counts",
            &subnet_labels
        ),
        Some(17.0)
    );
    assert!(
        metric(
            &text,
            "spiderpool_auto_pool_scalings_total",
            &[("direction", "up")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    println!("SAMPLE /metrics after scaling web to 6:");
    for line in metric_lines(&text, &subnet) {
        println!("  {line}");
    }

    // Released and deleted: the auto pool's series disappear, the subnet shrinks.
    release_records(&client, &auto, "uid-a").await?;
    release_records(&client, &auto, "uid-b").await?;
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .delete("web", &DeleteParams::default())
        .await?;
    wait_for("the auto pool to go", TIMEOUT, || async {
        Ok(app_pools(&client, "Deployment", ns, "web")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    wait_for("the subnet to forget the auto pool", TIMEOUT, || async {
        Ok((subnet_state(&client, &subnet).await?.1 == 10).then_some(()))
    })
    .await?;
    let text = metrics_match_status(&client, manager, &subnet, 1).await?;
    assert_eq!(
        metric(&text, "spiderpool_ippool_total_ip_counts", &auto_labels),
        None
    );
    assert_eq!(
        metric(
            &text,
            "spiderpool_subnet_allocated_ip_counts",
            &subnet_labels
        ),
        Some(10.0)
    );

    release_records(&client, &manual, "uid-c").await?;
    namespace.delete().await?;
    delete_pool(&client, &manual).await?;
    delete_subnet(&client, &subnet).await?;
    let text = scrape(manager).await?;
    assert!(
        metric_lines(&text, &subnet).is_empty(),
        "a deleted subnet has no series"
    );
    Ok(())
}
