//! The controller-manager at scale (run by `make bench`, ignored by `make test`): 10,000
//! SpiderIPPools holding 100,000 records between them (10 per pool, written to
//! `status.allocatedIPs` as the plugin writes them). Reported: the process' resident memory
//! (VmRSS) once ready, with the pools, and with the records; and its CPU per pool event (each
//! creation goes through the webhooks and the IPPool controller; each record write reaches the
//! caches and the controllers). The IP garbage collector is off: the records name pods that do
//! not exist, and it would release them.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use spiderpool_api::SpiderIPPool;
use spiderpool_e2e::{
    ControllerManager, client, controller_manager, procstat, reconciles, wait_for,
};

const POOLS: usize = 10_000;
const RECORDS_PER_POOL: usize = 10;
const IN_FLIGHT: usize = 16;
const LABEL: &str = "bench.spiderpool.spidernet.io/scale";
const SETTLE: Duration = Duration::from_secs(600);

/// Pool `i` owns 100.(64 + i / 256).(i % 256).0/24.
fn prefix(i: usize) -> String {
    format!("100.{}.{}", 64 + i / 256, i % 256)
}

fn pool(i: usize) -> anyhow::Result<SpiderIPPool> {
    let prefix = prefix(i);
    Ok(serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
        "metadata": {"name": format!("scale-{i}"), "labels": {LABEL: "true"}},
        "spec": {"ipVersion": 4, "subnet": format!("{prefix}.0/24"), "ips": [format!("{prefix}.1-{prefix}.254")]},
    }))?)
}

fn records(i: usize) -> String {
    let prefix = prefix(i);
    let records: serde_json::Map<String, serde_json::Value> = (1..=RECORDS_PER_POOL)
        .map(|n| {
            (
                format!("{prefix}.{n}"),
                json!({"pod": format!("bench-scale/pod-{i}-{n}"), "podUid": format!("00000000-0000-4000-8000-{i:06}{n:06}")}),
            )
        })
        .collect();
    serde_json::Value::Object(records).to_string()
}

/// Runs `work(i)` for every pool, `IN_FLIGHT` at a time.
async fn for_each_pool<F, Fut>(work: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    stream::iter((0..POOLS).map(work))
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Merge-patches the status of every pool with `patch(i)`, `IN_FLIGHT` at a time.
async fn patch_every_status(
    pools: &Api<SpiderIPPool>,
    patch: impl Fn(usize) -> serde_json::Value,
) -> anyhow::Result<()> {
    for_each_pool(|i| {
        let pools = pools.clone();
        let patch = patch(i);
        async move {
            pools
                .patch_status(
                    &format!("scale-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            Ok(())
        }
    })
    .await
}

/// Waits until the IPPool controller has gone 3 s without a reconcile: what it had to do about
/// the last change is done.
async fn settled(manager: &ControllerManager) -> anyhow::Result<()> {
    let mut last = reconciles(manager, "ippool").await?;
    let deadline = Instant::now() + SETTLE;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = reconciles(manager, "ippool").await?;
        if now == last {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the IPPool controller never settled"
        );
        last = now;
    }
}

struct Sample {
    rss: u64,
    cpu: Duration,
}

fn sample(manager: &ControllerManager) -> anyhow::Result<Sample> {
    let pid = manager.pid.to_string();
    Ok(Sample {
        rss: procstat::rss_bytes(&pid)?,
        cpu: procstat::cpu(&pid, false)?,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test]
#[ignore = "benchmark: run by `make bench`"]
async fn bench_controller_manager_with_ten_thousand_pools() -> anyhow::Result<()> {
    let client: Client = client().await?;
    let manager = controller_manager(&["--gc-enabled", "false"]).await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let selector = ListParams::default().labels(&format!("{LABEL}=true"));
    settled(manager).await?;
    let ready = sample(manager)?;

    let began = Instant::now();
    for_each_pool(|i| {
        let pools = pools.clone();
        async move {
            pools.create(&PostParams::default(), &pool(i)?).await?;
            Ok(())
        }
    })
    .await?;
    let create_wall = began.elapsed();
    wait_for(
        "every pool counted by the IPPool controller",
        SETTLE,
        || async {
            let listed = pools.list(&selector).await?;
            let counted = listed
                .items
                .iter()
                .filter(|pool| {
                    pool.status
                        .as_ref()
                        .is_some_and(|status| status.total_ip_count == Some(254))
                })
                .count();
            Ok((counted == POOLS).then_some(()))
        },
    )
    .await?;
    settled(manager).await?;
    let with_pools = sample(manager)?;

    let began = Instant::now();
    patch_every_status(
        &pools,
        |i| json!({"status": {"allocatedIPs": records(i), "allocatedIPCount": RECORDS_PER_POOL}}),
    )
    .await?;
    let records_wall = began.elapsed();
    settled(manager).await?;
    let with_records = sample(manager)?;

    println!(
        "BENCH controller-manager scale: RSS ready {:.1} MiB, with {POOLS} pools {:.1} MiB, with {} records {:.1} MiB",
        mib(ready.rss),
        mib(with_pools.rss),
        POOLS * RECORDS_PER_POOL,
        mib(with_records.rss),
    );
    println!(
        "BENCH controller-manager scale: CPU per pool creation {:.2} ms ({POOLS} in {:.1} s), per record write {:.2} ms ({POOLS} in {:.1} s)",
        (with_pools.cpu - ready.cpu).as_secs_f64() * 1e3 / POOLS as f64,
        create_wall.as_secs_f64(),
        (with_records.cpu - with_pools.cpu).as_secs_f64() * 1e3 / POOLS as f64,
        records_wall.as_secs_f64(),
    );

    // Leave the control plane as found: records first (a pool keeps its finalizer while it
    // holds any), then the pools.
    patch_every_status(
        &pools,
        |_| json!({"status": {"allocatedIPs": null, "allocatedIPCount": 0}}),
    )
    .await?;
    pools
        .delete_collection(&DeleteParams::default(), &selector)
        .await?;
    wait_for("every bench pool deleted", SETTLE, || async {
        let left = pools.list(&selector).await?.items;
        Ok(left.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}
