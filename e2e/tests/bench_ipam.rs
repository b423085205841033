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
//! are reported. The workload and its measurements are the shared driver's
//! (`bench_support`, also behind `bench_peers.rs`); this file adds the strict checks, the two
//! rounds and the ceiling.

mod bench_support;
mod ipam_support;

use std::time::{Duration, Instant};

use bench_support::spiderpool::Spiderpool;
use bench_support::{Retry, Workload, counts, millis};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use spiderpool_api::SpiderIPPool;
use spiderpool_e2e::client;

use ipam_support::*;

const RAW_UPDATES: usize = 500;

/// One full round (see [`bench_support::run`]), strict: every ADD must succeed (code 11 "try
/// again later" is called again, up to 50 times, as a runtime would), no duplicate, no leak.
async fn round(client: &Client, label: &str, lock_files: bool) -> anyhow::Result<()> {
    let workload = Workload::from_env();
    let mut plugin = Spiderpool::new(lock_files, true);
    let retry = Retry::Code {
        code: 11,
        attempts: 51,
    };
    let report = bench_support::run(client, &mut plugin, workload, retry).await?;
    let total = workload.pods();
    for (command, phase) in [("ADD", &report.add), ("DEL", &report.del)] {
        anyhow::ensure!(
            phase.unserved == 0,
            "{label}: {} of {total} {command}s failed: {:?}",
            phase.unserved,
            phase.unserved_errors
        );
    }
    anyhow::ensure!(
        report.bad_results == 0 && report.duplicates == 0,
        "{label}: {} ADD results without one address per family, {} addresses handed out twice",
        report.bad_results,
        report.duplicates
    );
    anyhow::ensure!(
        report.leaked() == 0,
        "{label}: left after DEL: {}",
        counts(&report.recorded_after_del)
    );
    let (add, del) = (&report.add, &report.del);
    let (add_details, del_details) = (report.add_details.join("; "), report.del_details.join("; "));
    // CPU per call: the plugin processes', and the control plane's (etcd + kube-apiserver).
    let cpu = |phase: &bench_support::Phase| {
        let per_call = |cpu: Duration| cpu.as_secs_f64() * 1e3 / total as f64;
        let control_plane = phase
            .control_plane_cpu
            .map(|cpu| format!("{:.1} ms", per_call(cpu)))
            .unwrap_or_else(|| "not measured (no TESTENV_PID)".into());
        format!(
            "CPU per call: plugin {:.1} ms, control plane {control_plane}",
            per_call(phase.plugin_cpu)
        )
    };
    let (add_cpu, del_cpu) = (cpu(add), cpu(del));
    println!(
        "BENCH ipam {label}: ADD {total} dual-stack pods on {} nodes x {} in flight: wall {:.1}s, {:.1} pods/s, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; runtime retries {}; {add_cpu}; {add_details}",
        workload.nodes,
        workload.in_flight,
        add.wall.as_secs_f64(),
        add.rate(),
        millis(add.percentile(0.5)),
        millis(add.percentile(0.99)),
        millis(add.percentile(1.0)),
        add.failed_calls,
    );
    println!(
        "BENCH ipam {label}: DEL {total} pods: wall {:.1}s, {:.1} pods/s, p50 {:.0} ms, p99 {:.0} ms; runtime retries {}; {del_cpu}; {del_details}; pools empty, no endpoint left",
        del.wall.as_secs_f64(),
        del.rate(),
        millis(del.percentile(0.5)),
        millis(del.percentile(0.99)),
        del.failed_calls,
    );
    for (command, phase) in [("ADD", add), ("DEL", del)] {
        if phase.stalled > std::time::Duration::from_secs(1) {
            println!(
                "BENCH ipam {label}: {command} figures not valid: the benchmark process was stopped or starved for {:.1} s",
                phase.stalled.as_secs_f64()
            );
        }
    }
    RESULTS.lock().await.push((label.to_string(), add.rate()));
    Ok(())
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
