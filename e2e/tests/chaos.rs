//! The chaos suite: a seeded random sequence of workload operations (bare pods, Deployments and
//! StatefulSets with `ippool`, `ippools`, `subnet` and `subnets` annotations: created, scaled,
//! deleted, force-deleted, re-created under the same names; whole namespaces deleted) and of
//! plugin calls from three simulated nodes through the real `spiderpool` binary (some SIGKILLed
//! at a random point, some DELs never sent), while two controller-manager replicas (shipped RBAC,
//! leader election on) are SIGKILLed and restarted every few seconds and kube-apiserver (with
//! etcd and kube-controller-manager) is restarted on the same data.
//!
//! The run has its own control plane (it restarts it); `TESTENV` names the binary. After the run
//! the chaos stops and the cluster must settle, waited for by positive signals within bounded
//! deadlines: no invariant violation (no duplicate address, every record with its pod and
//! endpoint, counts and subnet records exact, auto pools matching their workloads); then every
//! namespace is deleted and every address must come back (pool records, endpoints, auto pools
//! and subnet records all gone), which only the garbage collector can do for the pods whose DEL
//! never came.
//!
//! The seed is printed (`CHAOS SEED`); `CHAOS_SEED=<n>` replays the same choices (the timing of
//! processes is not replayed). `CHAOS_OPS=<n>` changes the number of operations. The short run
//! is part of `make test`; `make chaos` runs the long one (`--ignored`).

mod chaos_support;
mod ipam_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use rand::Rng;
use spiderpool_api::{SpiderEndpoint, SpiderIPPool, SpiderSubnet};
use spiderpool_e2e::invariants::wait_consistent;
use tokio::sync::{Mutex, Semaphore};

use chaos_support::actions::{Faults, Kubelet, World, actor_rng, drive_once};
use chaos_support::{ControlPlane, Managers, Stats};

/// The size and pace of a run.
struct Plan {
    operations: u64,
    /// Stop driving after this long even if fewer operations were done.
    max_driving: Duration,
    /// A controller-manager replica is SIGKILLed every this many milliseconds (uniform).
    kill_every_millis: (u64, u64),
    apiserver_restart_every: Duration,
    max_pods: usize,
}

impl Plan {
    fn with_env(mut self) -> Plan {
        if let Some(operations) = std::env::var("CHAOS_OPS")
            .ok()
            .and_then(|text| text.parse().ok())
        {
            self.operations = operations;
        }
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_leaves_no_duplicate_and_no_leak() -> anyhow::Result<()> {
    run(Plan {
        operations: 400,
        max_driving: Duration::from_secs(75),
        kill_every_millis: (3000, 6000),
        apiserver_restart_every: Duration::from_secs(20),
        max_pods: 40,
    }
    .with_env())
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the long chaos run (make chaos)"]
async fn a_long_chaos_run_leaves_no_duplicate_and_no_leak() -> anyhow::Result<()> {
    run(Plan {
        operations: 10_000,
        max_driving: Duration::from_secs(40 * 60),
        kill_every_millis: (3000, 6000),
        apiserver_restart_every: Duration::from_secs(90),
        max_pods: 80,
    }
    .with_env())
    .await
}

async fn run(plan: Plan) -> anyhow::Result<()> {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("CHAOS SEED {seed} (replay: CHAOS_SEED={seed})");
    let started = Instant::now();
    let plane = ControlPlane::start().await?;
    let dir = plane.dir.clone();
    spiderpool_e2e::use_own_control_plane(plane.kubeconfig.clone(), dir.clone())?;
    let client = spiderpool_e2e::client().await?;
    let manager_kubeconfig = spiderpool_e2e::manager_kubeconfig(&client).await?;
    let managers = Managers::start(&manager_kubeconfig, &dir, 2)?;
    let stats = Arc::new(Stats::default());
    let world =
        Arc::new(World::create(client.clone(), Arc::clone(&stats), 3, 3, plan.max_pods).await?);

    let outcome = chaos(&plan, seed, plane, managers, &world, &client).await;
    let elapsed = started.elapsed();
    eprintln!(
        "CHAOS SEED {seed}: {} operations in {:.0}s",
        stats.operations(),
        elapsed.as_secs_f64()
    );
    for (kind, count) in stats.snapshot() {
        eprintln!("CHAOS {kind} {count}");
    }
    // A run that never allocated, released or disturbed anything proves nothing.
    let outcome = outcome.and_then(|()| {
        for kind in [
            "op:add",
            "op:del",
            "kill:controller-manager",
            "restart:apiserver",
        ] {
            anyhow::ensure!(stats.get(kind) > 0, "the run did no {kind}");
        }
        Ok(())
    });
    match &outcome {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(error) => eprintln!(
            "CHAOS FAILED (seed {seed}; control plane and logs kept in {}): {error:#}",
            dir.display()
        ),
    }
    outcome
}

async fn chaos(
    plan: &Plan,
    seed: u64,
    plane: ControlPlane,
    managers: Managers,
    world: &Arc<World>,
    client: &Client,
) -> anyhow::Result<()> {
    let stats = Arc::clone(&world.stats);
    let plane = Arc::new(Mutex::new(plane));
    let managers = Arc::new(Mutex::new(managers));

    // The simulated kubelets run until the end, the teardown included.
    let kubelets_stop = Arc::new(AtomicBool::new(false));
    let kubelets = {
        let (world, stop) = (Arc::clone(world), Arc::clone(&kubelets_stop));
        let slots = Arc::new(Semaphore::new(6));
        tokio::spawn(async move {
            let kubelet = Arc::new(Kubelet::default());
            let mut rng = actor_rng(seed, 1);
            let faults = Faults {
                kill_plugin: 0.1,
                skip_del: 0.25,
            };
            while !stop.load(Ordering::Relaxed) {
                kubelet.pass(&world, &mut rng, &slots, &faults).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    // The monkey: controller-manager replicas SIGKILLed and restarted; the API server restarted.
    let monkey_stop = Arc::new(AtomicBool::new(false));
    let monkey = {
        let (stop, stats) = (Arc::clone(&monkey_stop), Arc::clone(&stats));
        let (plane, managers) = (Arc::clone(&plane), Arc::clone(&managers));
        let (low, high) = plan.kill_every_millis;
        let restart_every = plan.apiserver_restart_every;
        tokio::spawn(async move {
            let mut rng = actor_rng(seed, 2);
            let mut last_restart = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(low..high))).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if last_restart.elapsed() >= restart_every {
                    last_restart = Instant::now();
                    match plane.lock().await.restart().await {
                        Ok(()) => stats.add("restart:apiserver"),
                        Err(error) => {
                            eprintln!("CHAOS apiserver restart failed: {error:#}");
                            stats.add("fail:apiserver-restart");
                        }
                    }
                    continue;
                }
                let index = {
                    let mut replicas = managers.lock().await;
                    let index = rng.random_range(0..replicas.count());
                    if replicas.kill(index).await.is_ok() {
                        stats.add("kill:controller-manager");
                    }
                    index
                };
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
                if managers.lock().await.restart(index).is_ok() {
                    stats.add("restart:controller-manager");
                }
            }
        })
    };

    let mut rng = actor_rng(seed, 0);
    let driving = Instant::now();
    let mut reported = Instant::now();
    // Drive until the operations are done and the monkey has struck at least once of each kind
    // (its API-server restarts are timed: a fast run must not end before the first one).
    let disturbed =
        || stats.get("restart:apiserver") > 0 && stats.get("kill:controller-manager") > 0;
    while (stats.operations() < plan.operations || !disturbed())
        && driving.elapsed() < plan.max_driving
    {
        if reported.elapsed() >= Duration::from_secs(60) {
            reported = Instant::now();
            eprintln!(
                "CHAOS progress: {} operations after {:.0}s",
                stats.operations(),
                driving.elapsed().as_secs_f64()
            );
        }
        drive_once(world, &mut rng).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
    }
    eprintln!(
        "CHAOS driving done: {} operations in {:.0}s; settling",
        stats.operations(),
        driving.elapsed().as_secs_f64()
    );
    monkey_stop.store(true, Ordering::Relaxed);
    monkey.await?;
    managers.lock().await.ensure_all()?;

    let settle = Instant::now();
    let consistent = wait_consistent(client, None, Duration::from_secs(180)).await;
    eprintln!("CHAOS settled in {:.0}s", settle.elapsed().as_secs_f64());
    consistent?;

    // Everything goes: every address must come back, through DEL or through the collector.
    let teardown = Instant::now();
    world.delete_namespaces().await?;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let left = leftovers(client)
            .await
            .unwrap_or_else(|error| vec![error.to_string()]);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "after deleting every namespace, left after 240s:\n  {}",
                left.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wait_consistent(client, None, Duration::from_secs(60)).await?;
    eprintln!(
        "CHAOS everything collected in {:.0}s",
        teardown.elapsed().as_secs_f64()
    );

    kubelets_stop.store(true, Ordering::Relaxed);
    kubelets.await?;
    drop(managers);
    plane.lock().await.stop().await
}

/// What is still held after the teardown: pods and namespaces of the run, records of the fixed
/// pools, auto pools, endpoints, subnet records.
async fn leftovers(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut left = Vec::new();
    for namespace in Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        if namespace.name_any().starts_with("chaos-") {
            left.push(format!("namespace {}", namespace.name_any()));
        }
    }
    for pod in Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        if pod
            .namespace()
            .is_some_and(|namespace| namespace.starts_with("chaos-"))
        {
            left.push(format!(
                "pod {}/{}",
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            ));
        }
    }
    for endpoint in Api::<SpiderEndpoint>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        left.push(format!(
            "SpiderEndpoint {}/{}",
            endpoint.namespace().unwrap_or_default(),
            endpoint.name_any()
        ));
    }
    for pool in Api::<SpiderIPPool>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        let count = pool
            .status
            .as_ref()
            .and_then(|status| status.allocated_ip_count)
            .unwrap_or(0);
        if count > 0 {
            left.push(format!("SpiderIPPool {}: {count} records", pool.name_any()));
        } else if pool.name_any().starts_with("auto") {
            left.push(format!("auto-created SpiderIPPool {}", pool.name_any()));
        }
    }
    for subnet in Api::<SpiderSubnet>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        let count = subnet
            .status
            .as_ref()
            .and_then(|status| status.allocated_ip_count)
            .unwrap_or(0);
        if count > 0 {
            left.push(format!(
                "SpiderSubnet {}: {count} addresses in controlledIPPools",
                subnet.name_any()
            ));
        }
    }
    Ok(left)
}
