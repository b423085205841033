//! The driver shared by the IPAM benchmarks: one workload, any IPAM plugin behind
//! [`BenchPlugin`] (`bench_ipam.rs` runs ours alone and in depth; `bench_peers.rs` runs ours and
//! the peers side by side, see docs/benchmarks.md).
//!
//! The workload: `deployments` x `replicas` pods (an `app` label per deployment), dual stack, one
//! IPv4 and one IPv6 range of exactly 1000 addresses each ([`V4`], [`V6`]), spread over
//! simulated nodes (pod `i` on node `i % nodes`); every node calls the **real plugin binary**
//! through the real CNI protocol (environment, network configuration on stdin, result on
//! stdout), `in_flight` calls at a time per node, IPAM only (no network namespace is touched).
//! Then every pod is deleted and DEL runs for all of them the same way.
//!
//! Measured per phase: wall time, latency of the successful calls (process start to exit), failed
//! calls, CPU seconds of the control plane process (embedded etcd + kube-apiserver: testenv's
//! main process, `TESTENV_PID` from `with-testenv.sh`, read from `/proc`) and of the plugin
//! processes (this process' reaped children). Checked: every successful ADD returned one address
//! of each family inside its range, and no address was handed to two pods; what the plugin still
//! records after the ADDs and after every DEL ([`BenchPlugin::recorded`]).

#![allow(dead_code)]

pub mod spiderpool;
pub mod whereabouts;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream;
use kube::Client;
use serde_json::Value;
use spiderpool_e2e::procstat::cpu as proc_cpu;
use spiderpool_e2e::{TestNamespace, unique_name};
use tokio::sync::Semaphore;

use crate::ipam_support::{PodRef, Scratch, cni_run, create_pod, delete_pod_now};

/// A call still running after this long is killed and counted as failed (Whereabouts gives
/// itself 2 minutes for an ADD).
const CALL_LIMIT: Duration = Duration::from_secs(150);

/// One address range of the workload: exactly 1000 addresses, inside `subnet`.
pub struct Range {
    pub subnet: &'static str,
    pub first: &'static str,
    pub last: &'static str,
    pub gateway: &'static str,
}

pub const V4: Range = Range {
    subnet: "10.250.0.0/22",
    first: "10.250.0.1",
    last: "10.250.3.232",
    gateway: "10.250.3.254",
};

pub const V6: Range = Range {
    subnet: "fd00:250::/64",
    first: "fd00:250::1",
    last: "fd00:250::3e8",
    gateway: "fd00:250::ffff",
};

impl Range {
    fn contains(&self, address: IpAddr) -> bool {
        match (self.first.parse::<IpAddr>(), self.last.parse::<IpAddr>()) {
            (Ok(first), Ok(last)) => first <= address && address <= last,
            _ => false,
        }
    }
}

/// `BENCH_IPAM_<NAME>` overrides a default (for exploring; the documented tables use the
/// defaults).
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(format!("BENCH_IPAM_{name}"))
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The size and shape of a run.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub deployments: usize,
    pub replicas: usize,
    pub nodes: usize,
    pub in_flight: usize,
}

impl Workload {
    /// 100 x 10 pods on 10 nodes, 4 calls in flight per node, unless `BENCH_IPAM_DEPLOYMENTS`,
    /// `BENCH_IPAM_NODES` or `BENCH_IPAM_IN_FLIGHT` say otherwise.
    pub fn from_env() -> Workload {
        Workload {
            deployments: knob("DEPLOYMENTS", 100),
            replicas: 10,
            nodes: knob("NODES", 10),
            in_flight: knob("IN_FLIGHT", 4),
        }
    }

    pub fn pods(&self) -> usize {
        self.deployments * self.replicas
    }
}

/// Which failed calls the driver calls again, as a runtime would.
#[derive(Clone, Copy, Debug)]
pub enum Retry {
    /// Only errors with this CNI code ("try again later"), up to `attempts` calls per pod.
    Code { code: u64, attempts: usize },
    /// Every error (kubelet tears a failed sandbox down and tries again), up to `attempts`
    /// calls per pod.
    Any { attempts: usize },
}

impl Retry {
    fn again(self, code: u64, attempt: usize) -> bool {
        match self {
            Retry::Code {
                code: retried,
                attempts,
            } => code == retried && attempt < attempts,
            Retry::Any { attempts } => attempt < attempts,
        }
    }
}

/// One simulated pod: the identity the calls carry and the node it is bound to.
#[derive(Clone, Debug)]
pub struct SimPod {
    pub pod: PodRef,
    pub node: usize,
}

/// How to set up an IPAM plugin for the workload, and how to count what it still records.
#[allow(async_fn_in_trait)]
pub trait BenchPlugin {
    /// The row label (name and version).
    fn label(&self) -> String;
    /// The plugin binary.
    fn binary(&self) -> PathBuf;
    /// Cluster-wide set-up before any node exists: CRDs, RBAC, pools or ranges.
    async fn install(&mut self, client: &Client, scratch: &Scratch) -> anyhow::Result<()>;
    /// Creates one simulated node (its Node object and whatever the plugin keeps per node: a
    /// kubeconfig, a settings file, a log) and returns the node's name.
    async fn add_node(&mut self, client: &Client, scratch: &Scratch) -> anyhow::Result<String>;
    /// The CNI network configuration node `index` passes on stdin.
    fn config(&self, index: usize) -> Value;
    /// Addresses the plugin still records, by kind, for the pods of `namespace`.
    async fn recorded(
        &self,
        client: &Client,
        namespace: &str,
    ) -> anyhow::Result<Vec<(&'static str, usize)>>;
    /// Checks and figures after the ADDs (before any pod is deleted), as result lines.
    async fn after_add(&self, client: &Client, pods: &[SimPod]) -> anyhow::Result<Vec<String>>;
    /// Figures after the DELs, as result lines.
    fn after_del(&self) -> Vec<String>;
    /// Removes what [`BenchPlugin::install`] and [`BenchPlugin::add_node`] created.
    async fn uninstall(&self, client: &Client) -> anyhow::Result<()>;
}

/// Time this process did not run at all: a thread wakes every 50 ms and adds up the part of
/// each gap beyond 500 ms. A stopped process (SIGSTOP, as a machine's owner may do to quiet it
/// for a measurement of their own) or a starved one shows up here; its wall times and latencies
/// then include that time and say nothing about the plugin.
fn stalled() -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STALLED_MICROS: AtomicU64 = AtomicU64::new(0);
    static WATCH: std::sync::Once = std::sync::Once::new();
    const TICK: Duration = Duration::from_millis(50);
    const SLACK: Duration = Duration::from_millis(500);
    WATCH.call_once(|| {
        std::thread::spawn(|| {
            loop {
                let before = Instant::now();
                std::thread::sleep(TICK);
                let gap = before.elapsed();
                if gap > TICK + SLACK {
                    let lost = (gap - TICK).as_micros() as u64;
                    STALLED_MICROS.fetch_add(lost, Ordering::Relaxed);
                }
            }
        });
    });
    Duration::from_micros(STALLED_MICROS.load(Ordering::Relaxed))
}

/// CPU seconds so far of the control plane process (`TESTENV_PID`: embedded etcd and
/// kube-apiserver share it) and of this process' reaped children (the plugin processes).
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    control_plane: Option<Duration>,
    children: Duration,
}

impl CpuSample {
    fn take() -> anyhow::Result<CpuSample> {
        let control_plane = match std::env::var("TESTENV_PID") {
            Ok(pid) => Some(proc_cpu(&pid, false)?),
            Err(_) => None,
        };
        Ok(CpuSample {
            control_plane,
            children: proc_cpu("self", true)?,
        })
    }
}

/// What one phase (every pod's ADD, or every pod's DEL) measured.
#[derive(Debug, Default)]
pub struct Phase {
    pub wall: Duration,
    /// Latencies of the successful calls, sorted.
    pub latencies: Vec<Duration>,
    /// Calls that returned an error (each retried one counts), and the errors of the first few.
    pub failed_calls: usize,
    pub failed_errors: Vec<String>,
    /// Pods whose call never succeeded, with the last error of the first few.
    pub unserved: usize,
    pub unserved_errors: Vec<String>,
    /// CPU seconds of etcd + kube-apiserver during the phase; `None` without `TESTENV_PID`.
    pub control_plane_cpu: Option<Duration>,
    /// CPU seconds of the plugin processes during the phase.
    pub plugin_cpu: Duration,
    /// Time the benchmark process did not run during the phase (see [`stalled`]).
    pub stalled: Duration,
    /// The successful results by pod index (ADD only).
    pub results: BTreeMap<usize, Value>,
}

impl Phase {
    pub fn served(&self) -> usize {
        self.latencies.len()
    }

    pub fn rate(&self) -> f64 {
        self.served() as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    pub fn percentile(&self, fraction: f64) -> Duration {
        percentile(&self.latencies, fraction)
    }
}

pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    pub label: String,
    pub workload: Workload,
    pub add: Phase,
    pub del: Phase,
    /// Successful ADD results without exactly one address of each family inside its range.
    pub bad_results: usize,
    /// Addresses returned to more than one pod.
    pub duplicates: usize,
    pub recorded_after_add: Vec<(&'static str, usize)>,
    pub recorded_after_del: Vec<(&'static str, usize)>,
    /// The plugin's own result lines of each phase ([`BenchPlugin::after_add`],
    /// [`BenchPlugin::after_del`]).
    pub add_details: Vec<String>,
    pub del_details: Vec<String>,
}

impl Report {
    pub fn leaked(&self) -> usize {
        self.recorded_after_del.iter().map(|(_, count)| count).sum()
    }
}

/// Counts the results without one in-range address per family, and the addresses returned to
/// more than one pod.
fn check_results(results: &BTreeMap<usize, Value>) -> (usize, usize) {
    let mut holders: BTreeMap<IpAddr, usize> = BTreeMap::new();
    let mut bad = 0;
    for result in results.values() {
        let addresses: Vec<IpAddr> = result["ips"]
            .as_array()
            .map(|ips| {
                ips.iter()
                    .filter_map(|ip| ip["address"].as_str())
                    .filter_map(|address| address.split('/').next()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let v4 = addresses.iter().filter(|ip| V4.contains(**ip)).count();
        let v6 = addresses.iter().filter(|ip| V6.contains(**ip)).count();
        if addresses.len() != 2 || v4 != 1 || v6 != 1 {
            bad += 1;
        }
        for address in addresses {
            *holders.entry(address).or_default() += 1;
        }
    }
    let duplicates = holders.values().filter(|count| **count > 1).count();
    (bad, duplicates)
}

/// Runs `command` for every pod: one worker per node, `in_flight` calls at a time each, failed
/// calls retried per `retry`.
async fn run_phase<P: BenchPlugin>(
    plugin: &P,
    command: &'static str,
    pods: &[SimPod],
    workload: Workload,
    retry: Retry,
) -> anyhow::Result<Phase> {
    let before = CpuSample::take()?;
    let stalled_before = stalled();
    let started = Instant::now();
    let semaphores: Vec<Arc<Semaphore>> = (0..workload.nodes)
        .map(|_| Arc::new(Semaphore::new(workload.in_flight)))
        .collect();
    let binary = plugin.binary();
    let mut tasks = Vec::with_capacity(pods.len());
    for sim in pods {
        let semaphore = semaphores[sim.node].clone();
        let pod = sim.pod.clone();
        let config = plugin.config(sim.node);
        let binary = binary.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire_owned().await?;
            let mut failed = 0usize;
            let mut errors = Vec::new();
            loop {
                let output = cni_run(
                    &binary,
                    command,
                    &pod,
                    "eth0",
                    &config,
                    &[],
                    Some(CALL_LIMIT),
                )
                .await?;
                let (code, msg) = match output {
                    Some(output) if output.success => {
                        // A result that is not JSON counts as a result without addresses.
                        let result =
                            (command == "ADD").then(|| output.json().unwrap_or(Value::Null));
                        return anyhow::Ok((failed, errors, Ok((output.elapsed, result))));
                    }
                    Some(output) => output
                        .error()
                        .unwrap_or_else(|error| (0, format!("{error:#}"))),
                    None => (0, format!("no answer within {CALL_LIMIT:?}: killed")),
                };
                failed += 1;
                let msg: String = msg.chars().take(300).collect();
                let error = format!("{command} {}/{}: {code} {msg}", pod.namespace, pod.name);
                if !retry.again(code, failed) {
                    return Ok((failed, errors, Err(error)));
                }
                errors.push(error);
            }
        }));
    }
    let mut phase = Phase::default();
    for (index, task) in tasks.into_iter().enumerate() {
        let (failed, errors, outcome) = task.await??;
        phase.failed_calls += failed;
        for error in errors {
            if phase.failed_errors.len() < 5 {
                phase.failed_errors.push(error);
            }
        }
        match outcome {
            Ok((elapsed, result)) => {
                phase.latencies.push(elapsed);
                if let Some(result) = result {
                    phase.results.insert(index, result);
                }
            }
            Err(error) => {
                phase.unserved += 1;
                if phase.unserved_errors.len() < 5 {
                    phase.unserved_errors.push(error);
                }
            }
        }
    }
    phase.wall = started.elapsed();
    phase.latencies.sort();
    let after = CpuSample::take()?;
    phase.control_plane_cpu = after
        .control_plane
        .zip(before.control_plane)
        .map(|(after, before)| after.saturating_sub(before));
    phase.plugin_cpu = after.children.saturating_sub(before.children);
    phase.stalled = stalled().saturating_sub(stalled_before);
    Ok(phase)
}

/// One full run: set up, create the pods, ADD all, check, delete the pods, DEL all, count what
/// is still recorded, tear down.
pub async fn run<P: BenchPlugin>(
    client: &Client,
    plugin: &mut P,
    workload: Workload,
    retry: Retry,
) -> anyhow::Result<Report> {
    let label = plugin.label();
    stalled();
    let namespace = TestNamespace::create(client, "bench-ipam").await?;
    let scratch = Scratch::new("bench-ipam")?;
    plugin.install(client, &scratch).await?;
    let mut nodes = Vec::with_capacity(workload.nodes);
    for _ in 0..workload.nodes {
        nodes.push(plugin.add_node(client, &scratch).await?);
    }

    // Pods: deployment d, replica r, on node (d * replicas + r) % nodes.
    let specs: Vec<(String, String, usize)> = (0..workload.deployments)
        .flat_map(|deployment| {
            (0..workload.replicas).map(move |replica| {
                (
                    format!("deploy-{deployment}-{}", unique_name("r")),
                    format!("deploy-{deployment}"),
                    (deployment * workload.replicas + replica) % workload.nodes,
                )
            })
        })
        .collect();
    let create_started = Instant::now();
    let created: Vec<anyhow::Result<SimPod>> = stream::iter(specs)
        .map(|(name, app, node)| {
            let node_name = nodes[node].clone();
            let namespace = namespace.name.clone();
            async move {
                let pod = create_pod(client, &namespace, &name, &node_name, &[], &[("app", &app)])
                    .await?;
                Ok(SimPod {
                    pod: PodRef::of(&pod),
                    node,
                })
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let pods: Vec<SimPod> = created.into_iter().collect::<anyhow::Result<_>>()?;
    eprintln!(
        "{label}: created {} pods in {:?}",
        pods.len(),
        create_started.elapsed()
    );

    let add = run_phase(plugin, "ADD", &pods, workload, retry).await?;
    let (bad_results, duplicates) = check_results(&add.results);
    let recorded_after_add = plugin.recorded(client, &namespace.name).await?;
    let add_details = plugin.after_add(client, &pods).await?;

    // DEL after the pods are gone, as kubelet does.
    stream::iter(pods.iter())
        .map(|sim| delete_pod_now(client, &sim.pod.namespace, &sim.pod.name))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let del = run_phase(plugin, "DEL", &pods, workload, retry).await?;
    let recorded_after_del = plugin.recorded(client, &namespace.name).await?;
    let del_details = plugin.after_del();

    plugin.uninstall(client).await?;
    namespace.delete().await?;
    Ok(Report {
        label,
        workload,
        add,
        del,
        bad_results,
        duplicates,
        recorded_after_add,
        recorded_after_del,
        add_details,
        del_details,
    })
}

/// `kind n, kind n` for a list of counts.
pub fn counts(counts: &[(&'static str, usize)]) -> String {
    counts
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}
