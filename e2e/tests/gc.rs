//! IP garbage collection through the real API server and kube-controller-manager: addresses of
//! pods deleted without a CNI DEL and of a deleted namespace are released with their
//! SpiderEndpoints, a running pod keeps its address when a pod of the same name elsewhere goes,
//! StatefulSet members keep theirs across re-creation (and lose them when scaled away), and a
//! fresh allocation is never collected. The test plays kubelet and CNI plugin.

mod autopool_support;

use std::time::Duration;

use autopool_support::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use spiderpool_api::SpiderEndpoint;
use spiderpool_e2e::{
    ControllerManager, TestNamespace, client, controller_manager, http_get, reconciles, wait_for,
    wait_reconciles,
};

/// Short GC timings so the suite is quick: trace every second, one second of extra grace, a
/// three-second fresh window and a full scan every five seconds.
const GC_FLAGS: &[&str] = &[
    "--gc-trace-interval",
    "1s",
    "--gc-additional-grace-delay",
    "1s",
    "--gc-fresh-window",
    "3s",
    "--gc-interval",
    "5s",
];
/// Past the fresh window: records this old are judged, not kept as fresh. Waiting it out ages a
/// record (a precondition); no assertion rests on it alone.
const FRESH: Duration = Duration::from_secs(4);

async fn setup(
    prefix: &str,
) -> anyhow::Result<(Client, TestNamespace, &'static ControllerManager)> {
    let client = client().await?;
    let manager = controller_manager(GC_FLAGS).await?;
    let namespace = TestNamespace::create(&client, prefix).await?;
    Ok((client, namespace, manager))
}

async fn pool(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let octet = unique_octet();
    create_pool(
        client,
        prefix,
        json!({"subnet": format!("10.{octet}.0.0/24"), "ips": [format!("10.{octet}.0.10-10.{octet}.0.60")]}),
    )
    .await
}

async fn endpoint(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<SpiderEndpoint>> {
    Ok(Api::<SpiderEndpoint>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?)
}

async fn wait_released(client: &Client, pool: &str, address: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("{address} released from {pool}"),
        TIMEOUT,
        || async { Ok((!pool_records(client, pool).await?.contains_key(address)).then_some(())) },
    )
    .await
}

async fn gc_counter(manager: &ControllerManager, name: &str, reason: &str) -> anyhow::Result<f64> {
    let (_, text) = http_get(manager.admin_addr, "/metrics").await?;
    Ok(metric(&text, name, &[("reason", reason)]).unwrap_or(0.0))
}

async fn gc_releases(manager: &ControllerManager, reason: &str) -> anyhow::Result<f64> {
    gc_counter(manager, "spiderpool_ip_gc_counts_total", reason).await
}

/// Records the collector judged and kept for `reason`.
async fn gc_keeps(manager: &ControllerManager, reason: &str) -> anyhow::Result<f64> {
    gc_counter(manager, "spiderpool_ip_gc_kept_counts_total", reason).await
}

/// Waits for two more full scans: the second starts a scan interval after the first ends, so
/// at least one whole scan ran after this call, on what the cluster holds now.
async fn wait_two_full_scans(manager: &ControllerManager) -> anyhow::Result<()> {
    let since = reconciles(manager, "gc").await?;
    wait_reconciles(manager, "gc", since, 2.0).await
}

#[tokio::test]
async fn a_pod_deleted_without_cni_del_loses_its_address_and_endpoint() -> anyhow::Result<()> {
    let (client, namespace, manager) = setup("gc-force").await?;
    let ns = namespace.name.as_str();
    let pool = pool(&client, "gc-force").await?;
    let node = create_node(&client, true).await?;
    let pod = create_pod(&client, ns, "web", &node, json!({})).await?;
    let address = allocate(&client, &pool, &pod, false).await?;
    mark_running(&client, ns, "web", &address).await?;
    tokio::time::sleep(FRESH).await;
    let released_before = gc_releases(manager, "pod_not_found").await?;

    force_delete_pod(&client, ns, "web").await?;
    wait_released(&client, &pool, &address).await?;
    wait_for("the endpoint to go", TIMEOUT, || async {
        Ok(endpoint(&client, ns, "web").await?.is_none().then_some(()))
    })
    .await?;
    assert!(gc_releases(manager, "pod_not_found").await? > released_before);
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    delete_pool(&client, &pool).await?;
    Ok(())
}

#[tokio::test]
async fn a_deleted_namespace_loses_its_addresses() -> anyhow::Result<()> {
    let (client, namespace, _) = setup("gc-namespace").await?;
    let ns = namespace.name.clone();
    let pool = pool(&client, "gc-namespace").await?;
    let node = create_node(&client, true).await?;
    let mut addresses = Vec::new();
    for index in 0..3 {
        let name = format!("web-{index}");
        let pod = create_pod(&client, &ns, &name, &node, json!({})).await?;
        let address = allocate(&client, &pool, &pod, false).await?;
        mark_running(&client, &ns, &name, &address).await?;
        addresses.push(address);
    }
    tokio::time::sleep(FRESH).await;
    namespace.delete().await?;
    for address in &addresses {
        wait_released(&client, &pool, address).await?;
    }
    // The pods stay terminating (no kubelet to confirm); play kubelet so the namespace can go.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for index in 0..3 {
        force_delete_pod(&client, &ns, &format!("web-{index}")).await?;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for("the namespace to go", TIMEOUT, || async {
        Ok(namespaces.get_opt(&ns).await?.is_none().then_some(()))
    })
    .await?;
    let left = pods.list(&Default::default()).await?.items;
    assert!(
        left.is_empty(),
        "pods left in the deleted namespace: {left:?}"
    );
    delete_pool(&client, &pool).await?;
    Ok(())
}

#[tokio::test]
async fn a_running_pod_keeps_its_address_when_a_same_named_pod_elsewhere_goes() -> anyhow::Result<()>
{
    let (client, first, manager) = setup("gc-same-a").await?;
    let second = TestNamespace::create(&client, "gc-same-b").await?;
    let pool = pool(&client, "gc-same").await?;
    let node = create_node(&client, true).await?;
    let kept_pod = create_pod(&client, &first.name, "web", &node, json!({})).await?;
    let kept = allocate(&client, &pool, &kept_pod, false).await?;
    mark_running(&client, &first.name, "web", &kept).await?;
    let gone_pod = create_pod(&client, &second.name, "web", &node, json!({})).await?;
    let gone = allocate(&client, &pool, &gone_pod, false).await?;
    mark_running(&client, &second.name, "web", &gone).await?;
    tokio::time::sleep(FRESH).await;

    force_delete_pod(&client, &second.name, "web").await?;
    wait_released(&client, &pool, &gone).await?;
    // Two more full scans: the running pod's address stays.
    wait_two_full_scans(manager).await?;
    let records = pool_records(&client, &pool).await?;
    assert_eq!(
        records.get(&kept).map(String::as_str),
        Some(format!("{}/web", first.name).as_str())
    );
    assert!(endpoint(&client, &first.name, "web").await?.is_some());
    let first_name = first.name.clone();
    first.delete().await?;
    second.delete().await?;
    force_delete_pod(&client, &first_name, "web").await?;
    delete_pool(&client, &pool).await?;
    Ok(())
}

#[tokio::test]
async fn statefulset_members_keep_their_addresses_until_scaled_away() -> anyhow::Result<()> {
    let (client, namespace, manager) = setup("gc-sts").await?;
    let ns = namespace.name.as_str();
    let pool = pool(&client, "gc-sts").await?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let statefulset: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "c", "image": "registry.invalid/pause:1"}]}}},
    }))?;
    statefulsets
        .create(&PostParams::default(), &statefulset)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let first = wait_for("db-0", TIMEOUT, || async {
        Ok(pods.get_opt("db-0").await?)
    })
    .await?;
    let address = allocate(&client, &pool, &first, true).await?;
    mark_running(&client, ns, "db-0", &address).await?;
    tokio::time::sleep(FRESH).await;

    // The pod goes (no CNI DEL) and the StatefulSet makes a new db-0 (Pending, no address yet).
    force_delete_pod(&client, ns, "db-0").await?;
    let first_uid = first.uid().unwrap_or_default();
    wait_for("a new db-0", TIMEOUT, || async {
        Ok(pods
            .get_opt("db-0")
            .await?
            .filter(|pod| pod.uid().unwrap_or_default() != first_uid))
    })
    .await?;
    // Two full scans later (the second starts a scan interval after the first, past the one
    // second of grace): the member keeps record and endpoint.
    wait_two_full_scans(manager).await?;
    let records = pool_records(&client, &pool).await?;
    assert_eq!(
        records.get(&address).map(String::as_str),
        Some(format!("{ns}/db-0").as_str())
    );
    assert!(endpoint(&client, ns, "db-0").await?.is_some());

    // Scaled away: the ordinal is no longer valid, everything goes.
    statefulsets
        .patch(
            "db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"spec": {"replicas": 0}})),
        )
        .await?;
    wait_released(&client, &pool, &address).await?;
    wait_for("the endpoint to go", TIMEOUT, || async {
        Ok(endpoint(&client, ns, "db-0").await?.is_none().then_some(()))
    })
    .await?;
    statefulsets.delete("db", &DeleteParams::default()).await?;
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    delete_pool(&client, &pool).await?;
    Ok(())
}

#[tokio::test]
async fn a_fresh_allocation_is_never_collected() -> anyhow::Result<()> {
    let (client, namespace, manager) = setup("gc-fresh").await?;
    let ns = namespace.name.as_str();
    let pool = pool(&client, "gc-fresh").await?;
    let node = create_node(&client, true).await?;
    // A record and endpoint for a pod the collector cannot find (an ADD racing a deletion, or a
    // cache that has not seen the pod yet): kept for the fresh window, collected after it.
    let pod = create_pod(&client, ns, "racer", &node, json!({})).await?;
    let kept_before = gc_keeps(manager, "fresh").await?;
    let address = allocate(&client, &pool, &pod, false).await?;
    force_delete_pod(&client, ns, "racer").await?;
    // The collector traces the deleted pod, judges its record and keeps it as fresh.
    wait_for("the collector to keep a fresh record", TIMEOUT, || async {
        Ok((gc_keeps(manager, "fresh").await? > kept_before).then_some(()))
    })
    .await?;
    assert!(
        pool_records(&client, &pool).await?.contains_key(&address),
        "a fresh allocation stays during the fresh window"
    );
    wait_released(&client, &pool, &address).await?;

    // A pending pod (its ADD still running) keeps its address however old.
    let pending = create_pod(&client, ns, "pending", &node, json!({})).await?;
    let held = allocate(&client, &pool, &pending, false).await?;
    tokio::time::sleep(FRESH).await;
    wait_two_full_scans(manager).await?;
    assert!(pool_records(&client, &pool).await?.contains_key(&held));
    force_delete_pod(&client, ns, "pending").await?;
    wait_released(&client, &pool, &held).await?;
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    delete_pool(&client, &pool).await?;
    Ok(())
}
