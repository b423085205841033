//! Side-by-side benchmark of IPAM plugins (run by `make bench-peers`, ignored elsewhere; see
//! docs/benchmarks.md): the workload of `bench_ipam.rs` through the same driver
//! (`bench_support`), for one plugin per run, chosen by `BENCH_PEERS_PLUGIN`:
//!
//! - `ours`: the `spiderpool` plugin of `SPIDERPOOL_BIN_DIR`, default settings (lock files);
//! - `whereabouts`: Whereabouts as built by `e2e/peers/build.sh` (`WHEREABOUTS_DIR`), plugin only.
//!
//! `make bench-peers` runs each on a fresh control plane, one after the other. Every failed call
//! is called again (up to [`ATTEMPTS`] calls per pod), as kubelet retries a sandbox, and counted;
//! duplicates and leaks are counted, not fatal. The run appends its row of the table to
//! `BENCH_PEERS_ROWS` (a markdown file; the header when it starts it) and prints it with its
//! details as `BENCH peers` lines.

mod bench_support;
mod ipam_support;

use std::io::Write;
use std::time::Duration;

use bench_support::spiderpool::Spiderpool;
use bench_support::whereabouts::Whereabouts;
use bench_support::{BenchPlugin, Report, Retry, Workload, counts, millis};
use spiderpool_e2e::client;

/// Calls per pod and phase at most.
const ATTEMPTS: usize = 10;

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn seconds(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "n/a (no TESTENV_PID)".to_string(),
        |duration| format!("{:.1} s", duration.as_secs_f64()),
    )
}

/// The table's header: the columns of [`row`].
fn header(pods: usize) -> String {
    format!(
        "| plugin | pods/s | wall for {pods} pods | ADD p50 / p99 / max | failed calls | control-plane CPU | leaked after DEL |\n|---|---|---|---|---|---|---|\n"
    )
}

/// One row: ADD rate and latencies, failed calls (and pods never served), the control plane's
/// CPU during the ADDs, what was still recorded after every DEL returned.
fn row(report: &Report) -> String {
    let add = &report.add;
    let mut failed = add.failed_calls.to_string();
    if report.del.failed_calls > 0 {
        failed = format!("{failed} (+{} DEL)", report.del.failed_calls);
    }
    if add.unserved > 0 {
        failed = format!("{failed}; {} pods never served", add.unserved);
    }
    let mut wall = format!("{:.1} s", add.wall.as_secs_f64());
    if add.stalled > Duration::from_secs(1) {
        wall = format!(
            "{wall} (not valid: stopped or starved {:.1} s)",
            add.stalled.as_secs_f64()
        );
    }
    format!(
        "| {} | {:.1} | {wall} | {:.0} ms / {:.1} s / {:.1} s | {failed} | {} | {} |\n",
        report.label,
        add.rate(),
        millis(add.percentile(0.5)),
        add.percentile(0.99).as_secs_f64(),
        add.percentile(1.0).as_secs_f64(),
        seconds(add.control_plane_cpu),
        report.leaked(),
    )
}

fn print_details(report: &Report, load_before: &str, load_after: &str) {
    let (label, add, del) = (&report.label, &report.add, &report.del);
    let workload = report.workload;
    println!(
        "BENCH peers {label}: workload {} pods = {} x {}, dual stack, 1000 addresses per family, {} nodes x {} in flight; load average {load_before} before, {load_after} after",
        workload.pods(),
        workload.deployments,
        workload.replicas,
        workload.nodes,
        workload.in_flight,
    );
    let sample = add
        .results
        .values()
        .next()
        .map(|result| result["ips"].to_string())
        .unwrap_or_else(|| "none".into());
    println!(
        "BENCH peers {label}: ADD served {} of {}, failed calls {}, results without one in-range address per family {}, addresses handed out twice {}, plugin CPU {:.1} s, control-plane CPU {}; first result's ips {sample}",
        add.served(),
        workload.pods(),
        add.failed_calls,
        report.bad_results,
        report.duplicates,
        add.plugin_cpu.as_secs_f64(),
        seconds(add.control_plane_cpu),
    );
    println!(
        "BENCH peers {label}: DEL wall {:.1} s, {:.1} pods/s, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, failed calls {}, plugin CPU {:.1} s, control-plane CPU {}",
        del.wall.as_secs_f64(),
        del.rate(),
        millis(del.percentile(0.5)),
        millis(del.percentile(0.99)),
        millis(del.percentile(1.0)),
        del.failed_calls,
        del.plugin_cpu.as_secs_f64(),
        seconds(del.control_plane_cpu),
    );
    println!(
        "BENCH peers {label}: the benchmark process was stopped or starved (gaps over 0.5 s) for {:.1} s during ADD, {:.1} s during DEL",
        add.stalled.as_secs_f64(),
        del.stalled.as_secs_f64(),
    );
    println!(
        "BENCH peers {label}: recorded after ADD: {}; left after every DEL returned: {}",
        counts(&report.recorded_after_add),
        counts(&report.recorded_after_del),
    );
    for error in add.failed_errors.iter().chain(&del.failed_errors) {
        println!("BENCH peers {label}: failed, called again: {error}");
    }
    for error in add.unserved_errors.iter().chain(&del.unserved_errors) {
        println!("BENCH peers {label}: never served: {error}");
    }
    for detail in report.add_details.iter().chain(&report.del_details) {
        println!("BENCH peers {label}: {detail}");
    }
}

async fn measure<P: BenchPlugin>(plugin: &mut P) -> anyhow::Result<()> {
    let client = client().await?;
    let workload = Workload::from_env();
    let load_before = load_average();
    let report =
        bench_support::run(&client, plugin, workload, Retry::Any { attempts: ATTEMPTS }).await?;
    let load_after = load_average();
    print_details(&report, &load_before, &load_after);
    let row = row(&report);
    print!("BENCH peers {row}");
    if let Some(path) = std::env::var_os("BENCH_PEERS_ROWS") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        if file.metadata()?.len() == 0 {
            file.write_all(header(workload.pods()).as_bytes())?;
        }
        file.write_all(row.as_bytes())?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with make bench-peers"]
async fn peers_one_plugin_through_the_shared_driver() -> anyhow::Result<()> {
    match std::env::var("BENCH_PEERS_PLUGIN").as_deref() {
        Ok("ours") => {
            let mut plugin = Spiderpool::new(true, false);
            plugin.revision = std::env::var("BENCH_PEERS_REVISION").unwrap_or_default();
            measure(&mut plugin).await
        }
        Ok("whereabouts") => measure(&mut Whereabouts::from_env()?).await,
        other => anyhow::bail!(
            "BENCH_PEERS_PLUGIN must be `ours` or `whereabouts` (got {other:?}): run `make bench-peers`"
        ),
    }
}
