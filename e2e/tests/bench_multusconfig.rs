//! Benchmarks of the SpiderMultusConfig controller against the local control plane (run by
//! `make bench`, ignored by `make test`):
//! - create→NAD latency: 200 SMCs created one after another; for each, the time from the
//!   create call returning to its NAD being observed by a watch; p50/p99 reported;
//! - convergence: 1000 SMCs created as fast as the client can, time until all 1000 NADs exist.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use spiderpool_api::{NetworkAttachmentDefinition, SpiderMultusConfig};
use spiderpool_e2e::{TestNamespace, client, controller_manager};
use tokio::sync::Mutex;

fn smc(name: &str) -> anyhow::Result<SpiderMultusConfig> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderMultusConfig",
        "metadata": {"name": name},
        "spec": {"cniType": "macvlan", "macvlan": {"master": ["ens192"], "vlanID": 100}},
    }))?)
}

/// Records when each NAD of `namespace` is first seen.
fn watch_nads(client: &Client, namespace: &str) -> Arc<Mutex<HashMap<String, Instant>>> {
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), namespace);
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut events = watcher::watcher(nads, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(nad) | watcher::Event::InitApply(nad)) = event {
                sink.lock()
                    .await
                    .entry(nad.name_any())
                    .or_insert_with(Instant::now);
            }
        }
    });
    seen
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with make bench"]
async fn smc_create_to_nad_latency_and_convergence() -> anyhow::Result<()> {
    let client = client().await?;
    controller_manager(&[]).await?;

    // Latency: one SMC at a time.
    let namespace = TestNamespace::create(&client, "bench-smc-latency").await?;
    let seen = watch_nads(&client, &namespace.name);
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &namespace.name);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for index in 0..200 {
        let name = format!("smc-{index}");
        smcs.create(&PostParams::default(), &smc(&name)?).await?;
        let created = Instant::now();
        let deadline = created + Duration::from_secs(30);
        loop {
            if let Some(at) = seen.lock().await.get(&name) {
                latencies.push(at.saturating_duration_since(created));
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "NAD {name} did not appear within 30s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    latencies.sort();
    println!(
        "BENCH smc_create_to_nad n=200 p50={:?} p99={:?} max={:?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );

    // Convergence: 1000 SMCs at once (16 concurrent creates).
    let burst = TestNamespace::create(&client, "bench-smc-burst").await?;
    let seen = watch_nads(&client, &burst.name);
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &burst.name);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..1000)
        .map(|index| {
            let smcs = smcs.clone();
            async move {
                smcs.create(&PostParams::default(), &smc(&format!("smc-{index}"))?)
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for result in results {
        result?;
    }
    let created = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen.lock().await.len() < 1000 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of 1000 NADs after 300s",
            seen.lock().await.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "BENCH smc_burst n=1000 creates_done={created:?} all_nads={:?}",
        started.elapsed()
    );
    namespace.delete().await?;
    burst.delete().await
}
