//! Benchmark of the `spiderpool` IPAM plugin against the local control plane (run by `make
//! bench`, ignored by `make test`; see docs/benchmarks.md):
//!
//! - 1000 pods as 100 "deployments" x 10 replicas, dual stack, from one IPv4 and one IPv6 pool of
//!   exactly 1000 addresses each (the pools named by the network configuration, as a
//!   SpiderMultusConfig would), spread over 10 simulated nodes (own node name, settings file and
//!   lock directory each); every node issues ADDs through the real binary, 4 in flight;
//! - wall time, pods/s, ADD p50/p99, compare-and-swap conflicts and retries; then no duplicate,
//!   no leak (pool records == endpoints == pods); then every pod deleted and DEL run for all,
//!   pools must be empty;
//! - once with node-local lock files and once without;
//! - the physical ceiling: sequential status updates of one SpiderIPPool from one client.
//!
//! A call failing with code 11 ("try again later") is retried, as a runtime would; such retries
//! are reported.

mod ipam_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use spiderpool_api::{SpiderEndpoint, SpiderIPPool, SpiderReservedIP};
use spiderpool_e2e::{TestNamespace, client, unique_name};
use tokio::sync::Semaphore;

use ipam_support::*;

/// `BENCH_IPAM_DEPLOYMENTS` overrides it for quick runs.
const DEPLOYMENTS: usize = 100;
const REPLICAS: usize = 10;
const NODES: usize = 10;
const IN_FLIGHT_PER_NODE: usize = 4;

/// `BENCH_IPAM_<NAME>` overrides a default (for exploring; the documented table uses the
/// defaults).
fn knob(name: &str, default: usize) -> usize {
    std::env::var(format!("BENCH_IPAM_{name}"))
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
const RAW_UPDATES: usize = 500;

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Sums `key=<n>` over the plugin log lines of `command` (`ADD` / `DEL`).
fn sum_from_logs(nodes: &[SimNode], command: &str, key: &str) -> u64 {
    nodes
        .iter()
        .flat_map(|node| {
            std::fs::read_to_string(&node.log)
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains(&format!(": {command} ")))
                .filter_map(|line| {
                    line.split(&format!("{key}="))
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|value| value.parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

struct Phase {
    wall: Duration,
    latencies: Vec<Duration>,
    runtime_retries: usize,
}

/// Runs `command` for every pod: one worker per node, `IN_FLIGHT_PER_NODE` calls at a time each.
async fn run_phase(
    command: &'static str,
    pods: &[(PodRef, usize)],
    nodes: &[SimNode],
    config: &[Value],
) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let semaphores: Vec<Arc<Semaphore>> = (0..nodes.len())
        .map(|_| Arc::new(Semaphore::new(knob("IN_FLIGHT", IN_FLIGHT_PER_NODE))))
        .collect();
    let mut tasks = Vec::with_capacity(pods.len());
    for (pod, node) in pods {
        let semaphore = semaphores[*node].clone();
        let pod = pod.clone();
        let config = config[*node].clone();
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire_owned().await?;
            let mut retries = 0usize;
            loop {
                let output = cni(command, &pod, "eth0", &config).await?;
                if output.success {
                    return anyhow::Ok((output.elapsed, retries, output));
                }
                let (code, msg) = output.error()?;
                // A runtime retries a failed sandbox set-up until it works.
                if code == 11 && retries < 50 {
                    retries += 1;
                    continue;
                }
                anyhow::bail!(
                    "{command} {}/{} failed: {code} {msg}",
                    pod.namespace,
                    pod.name
                );
            }
        }));
    }
    let mut latencies = Vec::with_capacity(pods.len());
    let mut runtime_retries = 0;
    for task in tasks {
        let (elapsed, retries, _) = task.await??;
        latencies.push(elapsed);
        runtime_retries += retries;
    }
    let wall = started.elapsed();
    latencies.sort();
    Ok(Phase {
        wall,
        latencies,
        runtime_retries,
    })
}

async fn records_of(client: &Client, pool: &str) -> anyhow::Result<usize> {
    Ok(pool_records(client, pool).await?.len())
}

/// One full round: create, ADD all, verify, delete, DEL all, verify.
async fn round(client: &Client, label: &str, lock_files: bool) -> anyhow::Result<()> {
    let namespace = TestNamespace::create(client, "bench-ipam").await?;
    let scratch = Scratch::new("bench-ipam")?;
    let extra = if lock_files { "" } else { "lockDir: \"\"" };
    let node_count = knob("NODES", NODES);
    let mut nodes = Vec::with_capacity(node_count);
    for _ in 0..node_count {
        // `BENCH_IPAM_SETTINGS` adds settings-file lines (e.g. `casBackoffInitialMillis: 10`).
        let settings = std::env::var("BENCH_IPAM_SETTINGS").unwrap_or_default();
        let node = SimNode::create(client, &scratch, &[], &settings).await?;
        // The settings file names the node's lock directory; without locks it is emptied.
        if !lock_files {
            std::fs::write(
                &node.settings,
                format!("cniTimeoutSeconds: 60\n{extra}\n{settings}\n"),
            )?;
        }
        nodes.push(node);
    }
    // Exactly 1000 addresses per family.
    let v4 = create_pool(
        client,
        "bench-v4",
        json!({"ipVersion": 4, "subnet": "10.250.0.0/22", "ips": ["10.250.0.1-10.250.3.232"], "gateway": "10.250.3.254"}),
    )
    .await?;
    let v6 = create_pool(
        client,
        "bench-v6",
        json!({"ipVersion": 6, "subnet": "fd00:250::/64", "ips": ["fd00:250::1-fd00:250::3e8"], "gateway": "fd00:250::ffff"}),
    )
    .await?;
    let configs: Vec<Value> = nodes
        .iter()
        .map(|node| {
            let mut config = netconf(
                "1.0.0",
                node,
                json!({
                    "default_ipv4_ippool": [v4],
                    "default_ipv6_ippool": [v6],
                    "log_level": std::env::var("BENCH_IPAM_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
                }),
            );
            config["name"] = json!("bench");
            config
        })
        .collect();

    // Pods: deployment d, replica r, on node (d * REPLICAS + r) % NODES.
    let deployments = knob("DEPLOYMENTS", DEPLOYMENTS);
    let specs: Vec<(String, String, usize)> = (0..deployments)
        .flat_map(|deployment| {
            (0..REPLICAS).map(move |replica| {
                (
                    format!("deploy-{deployment}-{}", unique_name("r")),
                    format!("deploy-{deployment}"),
                    (deployment * REPLICAS + replica) % node_count,
                )
            })
        })
        .collect();
    let create_started = Instant::now();
    let created: Vec<anyhow::Result<(PodRef, usize)>> = stream::iter(specs)
        .map(|(name, app, node)| {
            let node_name = nodes[node].name.clone();
            let namespace = namespace.name.clone();
            async move {
                let pod = create_pod(client, &namespace, &name, &node_name, &[], &[("app", &app)])
                    .await?;
                Ok((PodRef::of(&pod), node))
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let pods: Vec<(PodRef, usize)> = created.into_iter().collect::<anyhow::Result<_>>()?;
    eprintln!(
        "{label}: created {} pods in {:?}",
        pods.len(),
        create_started.elapsed()
    );

    let add = run_phase("ADD", &pods, &nodes, &configs).await?;
    let total = pods.len();
    let conflicts = sum_from_logs(&nodes, "ADD", "cas_conflicts");
    let retries = sum_from_logs(&nodes, "ADD", "cas_retries");
    let writes = sum_from_logs(&nodes, "ADD", "cas_writes");
    let lock_wait = sum_from_logs(&nodes, "ADD", "lock_wait_ms");

    // No duplicate, no leak: records == endpoints == pods, every record held by a live pod.
    let v4_records = pool_records(client, &v4).await?;
    let v6_records = pool_records(client, &v6).await?;
    let uids: BTreeSet<&String> = pods.iter().map(|(pod, _)| &pod.uid).collect();
    anyhow::ensure!(
        v4_records.len() == total && v6_records.len() == total,
        "records {} / {} for {total} pods",
        v4_records.len(),
        v6_records.len()
    );
    for records in [&v4_records, &v6_records] {
        let holders: BTreeSet<&String> = records.values().map(|record| &record.1).collect();
        anyhow::ensure!(holders == uids, "pool records are not exactly the pods");
    }
    let endpoints = Api::<SpiderEndpoint>::namespaced(client.clone(), &namespace.name)
        .list(&ListParams::default())
        .await?
        .items;
    anyhow::ensure!(
        endpoints.len() == total,
        "{} endpoints for {total} pods",
        endpoints.len()
    );
    let endpoint_v4: BTreeSet<String> = endpoints
        .iter()
        .filter_map(|endpoint| endpoint.status.as_ref()?.current.ips.first()?.ipv4.clone())
        .map(|address| bare(&address))
        .collect();
    anyhow::ensure!(
        endpoint_v4.len() == total,
        "duplicate IPv4 addresses among endpoints"
    );
    anyhow::ensure!(
        endpoint_v4.iter().all(|ip| v4_records.contains_key(ip)),
        "endpoint address without record"
    );

    // DEL after the pods are gone.
    stream::iter(pods.iter())
        .map(|(pod, _)| delete_pod_now(client, &pod.namespace, &pod.name))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let del = run_phase("DEL", &pods, &nodes, &configs).await?;
    let del_conflicts = sum_from_logs(&nodes, "DEL", "cas_conflicts");
    anyhow::ensure!(
        records_of(client, &v4).await? == 0 && records_of(client, &v6).await? == 0,
        "pools not empty after DEL"
    );
    let left = Api::<SpiderEndpoint>::namespaced(client.clone(), &namespace.name)
        .list(&ListParams::default())
        .await?
        .items
        .len();
    anyhow::ensure!(left == 0, "{left} endpoints left after DEL");

    let pods_per_second = total as f64 / add.wall.as_secs_f64();
    println!(
        "BENCH ipam {label}: ADD {total} dual-stack pods on {} nodes x {} in flight: wall {:.1}s, {pods_per_second:.1} pods/s, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; CAS writes {writes}, conflicts {conflicts}, retries {retries}, lock wait {lock_wait} ms total; runtime retries {}",
        nodes.len(),
        knob("IN_FLIGHT", IN_FLIGHT_PER_NODE),
        add.wall.as_secs_f64(),
        millis(percentile(&add.latencies, 0.5)),
        millis(percentile(&add.latencies, 0.99)),
        millis(percentile(&add.latencies, 1.0)),
        add.runtime_retries,
    );
    println!(
        "BENCH ipam {label}: DEL {total} pods: wall {:.1}s, {:.1} pods/s, p50 {:.0} ms, p99 {:.0} ms; CAS conflicts {del_conflicts}; runtime retries {}; pools empty, no endpoint left",
        del.wall.as_secs_f64(),
        total as f64 / del.wall.as_secs_f64(),
        millis(percentile(&del.latencies, 0.5)),
        millis(percentile(&del.latencies, 0.99)),
        del.runtime_retries,
    );
    RESULTS
        .lock()
        .await
        .push((label.to_string(), pods_per_second));

    delete_pools(client, &[v4, v6]).await;
    for node in &nodes {
        node.delete(client).await?;
    }
    namespace.delete().await
}

static RESULTS: tokio::sync::Mutex<Vec<(String, f64)>> = tokio::sync::Mutex::const_new(Vec::new());

/// Sequential compare-and-swap status writes of one pool from one client: the update rate one
/// object allows on this control plane. `records` sets the ledger size written (1 = the
/// cheapest write; 1000 = the size the benchmark's pools end with).
async fn raw_update_rate(client: &Client, records: usize) -> anyhow::Result<f64> {
    let name = create_pool(
        client,
        "bench-raw",
        json!({"ipVersion": 4, "subnet": "10.251.0.0/22", "ips": ["10.251.0.1-10.251.3.232"]}),
    )
    .await?;
    let api = Api::<SpiderIPPool>::all(client.clone());
    let mut resource_version = api
        .get(&name)
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let started = Instant::now();
    for index in 0..RAW_UPDATES {
        let ledger: serde_json::Map<String, Value> = (0..records)
            .map(|record| {
                (
                    format!("10.251.{}.{}", record / 250, record % 250 + 1),
                    json!({"pod": format!("bench/raw-{record}"), "podUid": format!("uid-{index}-{record}")}),
                )
            })
            .collect();
        let patch = json!({
            "metadata": {"resourceVersion": resource_version},
            "status": {"allocatedIPs": Value::Object(ledger).to_string(), "allocatedIPCount": records},
        });
        let updated = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        resource_version = updated.metadata.resource_version.unwrap_or_default();
    }
    let rate = RAW_UPDATES as f64 / started.elapsed().as_secs_f64();
    delete_pools(client, &[name]).await;
    Ok(rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with make bench"]
async fn ipam_plugin_thousand_pods_on_ten_nodes() -> anyhow::Result<()> {
    let client = client().await?;
    // Warm the API server's caches of the kinds the plugin lists (a first LIST waits for them).
    Api::<SpiderReservedIP>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Api::<SpiderIPPool>::all(client.clone())
        .list(&ListParams::default())
        .await?;

    let raw = raw_update_rate(&client, 1).await?;
    println!(
        "BENCH ipam raw: {RAW_UPDATES} sequential CAS status updates of one SpiderIPPool (1-record ledger): {raw:.1} updates/s"
    );
    let raw_full = raw_update_rate(&client, 1000).await?;
    println!(
        "BENCH ipam raw: {RAW_UPDATES} sequential CAS status updates of one SpiderIPPool (1000-record ledger): {raw_full:.1} updates/s"
    );
    // `BENCH_IPAM_ROUNDS=lock` (or `nolock`) runs one round only.
    let rounds = std::env::var("BENCH_IPAM_ROUNDS").unwrap_or_default();
    if rounds != "nolock" {
        round(&client, "lock files", true).await?;
    }
    if rounds != "lock" {
        round(&client, "no lock files", false).await?;
    }
    for (label, pods_per_second) in RESULTS.lock().await.iter() {
        println!(
            "BENCH ipam {label}: {pods_per_second:.1} pods/s = {:.2} of the raw single-object update rate ({:.2} of the 1000-record rate)",
            pods_per_second / raw,
            pods_per_second / raw_full
        );
    }
    Ok(())
}
