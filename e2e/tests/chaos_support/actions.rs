//! What the chaos run does to the cluster: the workload driver (bare pods, Deployments and
//! StatefulSets with `ippool`, `ippools`, `subnet` and `subnets` annotations, created, scaled,
//! deleted, force-deleted and re-created under the same names, whole namespaces deleted) and the
//! simulated kubelets (ADD and DEL through the real `spiderpool` binary from several nodes, the
//! plugin SIGKILLed at a random point of some calls, some DELs never sent).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use tokio::sync::Semaphore;

use super::Stats;
use crate::ipam_support::{PodRef, Scratch, SimNode, cni_run, netconf};

/// The label on everything the run creates (namespaces and pod templates).
pub const RUN_LABEL: &str = "spiderpool-chaos";

/// The run's fixed objects and live namespaces.
pub struct World {
    pub client: Client,
    pub stats: Arc<Stats>,
    pub nodes: Vec<SimNode>,
    pub pools: Vec<String>,
    pub subnets: Vec<String>,
    pub namespaces: Mutex<Vec<String>>,
    /// Live pods at most (the driver deletes and scales down above it).
    pub max_pods: usize,
    next_namespace: Mutex<u32>,
    _scratch: Scratch,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl World {
    /// Nodes, two fixed IPv4 pools, one subnet and `namespaces` tenant namespaces.
    pub async fn create(
        client: Client,
        stats: Arc<Stats>,
        node_count: usize,
        namespaces: usize,
        max_pods: usize,
    ) -> anyhow::Result<World> {
        let scratch = Scratch::new("chaos")?;
        let mut nodes = Vec::new();
        for _ in 0..node_count {
            let settings = "waitSubnetPoolMaxRetries: 3\nwaitSubnetPoolTimeInSecond: 1";
            nodes.push(SimNode::create(&client, &scratch, &[], settings).await?);
        }
        let mut pools = Vec::new();
        for (name, third) in [("chaos-pool-a", 200), ("chaos-pool-b", 201)] {
            let pool: SpiderIPPool = serde_json::from_value(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
                "metadata": {"name": name},
                "spec": {"ipVersion": 4, "subnet": format!("10.{third}.0.0/24"),
                         "ips": [format!("10.{third}.0.10-10.{third}.0.250")]},
            }))?;
            Api::<SpiderIPPool>::all(client.clone())
                .create(&PostParams::default(), &pool)
                .await?;
            pools.push(name.to_string());
        }
        let subnet: SpiderSubnet = serde_json::from_value(json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderSubnet",
            "metadata": {"name": "chaos-subnet"},
            "spec": {"ipVersion": 4, "subnet": "10.210.0.0/16", "ips": ["10.210.0.10-10.210.3.250"]},
        }))?;
        Api::<SpiderSubnet>::all(client.clone())
            .create(&PostParams::default(), &subnet)
            .await?;
        let world = World {
            client,
            stats,
            nodes,
            pools,
            subnets: vec!["chaos-subnet".to_string()],
            namespaces: Mutex::new(Vec::new()),
            max_pods,
            next_namespace: Mutex::new(0),
            _scratch: scratch,
        };
        for _ in 0..namespaces {
            world.add_namespace().await?;
        }
        Ok(world)
    }

    async fn add_namespace(&self) -> anyhow::Result<()> {
        let name = {
            let mut next = lock(&self.next_namespace);
            *next += 1;
            format!("chaos-{}", *next)
        };
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {RUN_LABEL: "true"}},
        }))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        lock(&self.namespaces).push(name);
        Ok(())
    }

    /// Every pod of the run's namespaces.
    pub async fn pods(&self) -> anyhow::Result<Vec<Pod>> {
        let all = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().labels(RUN_LABEL))
            .await?
            .items;
        Ok(all
            .into_iter()
            .filter(|pod| {
                pod.namespace()
                    .is_some_and(|namespace| namespace.starts_with("chaos-"))
            })
            .collect())
    }

    /// Deletes every namespace of the run (the teardown), also those whose deletion during the
    /// run failed while the API server was restarting.
    pub async fn delete_namespaces(&self) -> anyhow::Result<()> {
        lock(&self.namespaces).clear();
        let api = Api::<Namespace>::all(self.client.clone());
        for namespace in api
            .list(&ListParams::default().labels(RUN_LABEL))
            .await?
            .items
        {
            if namespace.metadata.deletion_timestamp.is_none() {
                api.delete(&namespace.name_any(), &DeleteParams::background())
                    .await?;
            }
        }
        Ok(())
    }
}

/// The annotations of a pod (template) using one of the pool sources: `ippool` or `ippools`,
/// and for workloads also `subnet` or `subnets` (a pod without controller cannot use a subnet).
fn pool_annotations(rng: &mut StdRng, world: &World, workload: bool) -> BTreeMap<String, String> {
    let (a, b) = (&world.pools[0], &world.pools[1]);
    let subnet = &world.subnets[0];
    let choices = if workload { 4 } else { 2 };
    let (key, value) = match rng.random_range(0..choices) {
        0 => (
            "ipam.spidernet.io/ippool",
            format!(r#"{{"ipv4":["{a}","{b}"]}}"#),
        ),
        1 => (
            "ipam.spidernet.io/ippools",
            format!(r#"[{{"interface":"eth0","ipv4":["{b}","{a}"]}}]"#),
        ),
        2 => (
            "ipam.spidernet.io/subnet",
            format!(r#"{{"ipv4":["{subnet}"]}}"#),
        ),
        _ => (
            "ipam.spidernet.io/subnets",
            format!(r#"[{{"interface":"eth0","ipv4":["{subnet}"]}}]"#),
        ),
    };
    BTreeMap::from([(key.to_string(), value)])
}

fn pod_spec(node: &str) -> Value {
    json!({
        "nodeName": node,
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
    })
}

/// One step of the workload driver, chosen by `rng`.
pub async fn drive_once(world: &World, rng: &mut StdRng) {
    let namespaces = lock(&world.namespaces).clone();
    if namespaces.is_empty() {
        return;
    }
    let namespace = namespaces[rng.random_range(0..namespaces.len())].clone();
    let node = world.nodes[rng.random_range(0..world.nodes.len())]
        .name
        .clone();
    let crowded = world.pods().await.map(|pods| pods.len()).unwrap_or(0) >= world.max_pods;
    let roll = rng.random_range(0..100);
    let (kind, result) = match roll {
        _ if roll < 20 && !crowded => (
            "create-pod",
            create_pod(world, rng, &namespace, &node).await,
        ),
        _ if roll < 30 => (
            "delete-pod",
            delete_some_pod(world, rng, &namespace, false).await,
        ),
        _ if roll < 38 => (
            "force-delete-pod",
            delete_some_pod(world, rng, &namespace, true).await,
        ),
        _ if roll < 48 && !crowded => (
            "create-deployment",
            create_workload::<Deployment>(world, rng, &namespace, &node).await,
        ),
        _ if roll < 62 => (
            "scale-deployment",
            scale::<Deployment>(world, rng, &namespace, crowded).await,
        ),
        _ if roll < 68 => (
            "delete-deployment",
            delete_workload::<Deployment>(world, rng, &namespace).await,
        ),
        _ if roll < 76 && !crowded => (
            "create-statefulset",
            create_workload::<StatefulSet>(world, rng, &namespace, &node).await,
        ),
        _ if roll < 88 => (
            "scale-statefulset",
            scale::<StatefulSet>(world, rng, &namespace, crowded).await,
        ),
        _ if roll < 94 => (
            "delete-statefulset",
            delete_workload::<StatefulSet>(world, rng, &namespace).await,
        ),
        _ if roll < 95 => (
            "delete-namespace",
            delete_namespace(world, &namespace).await,
        ),
        _ => return,
    };
    match result {
        Ok(true) => world.stats.add(&format!("op:{kind}")),
        Ok(false) => {}
        Err(_) => world.stats.add(&format!("fail:{kind}")),
    }
}

async fn create_pod(
    world: &World,
    rng: &mut StdRng,
    namespace: &str,
    node: &str,
) -> anyhow::Result<bool> {
    let name = format!("pod-{}", rng.random_range(0..8));
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {RUN_LABEL: "true"},
                     "annotations": pool_annotations(rng, world, false)},
        "spec": pod_spec(node),
    }))?;
    match Api::<Pod>::namespaced(world.client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

async fn delete_some_pod(
    world: &World,
    rng: &mut StdRng,
    namespace: &str,
    force: bool,
) -> anyhow::Result<bool> {
    let pods = Api::<Pod>::namespaced(world.client.clone(), namespace);
    let list = pods.list(&ListParams::default()).await?.items;
    if list.is_empty() {
        return Ok(false);
    }
    let pod = &list[rng.random_range(0..list.len())];
    let params = if force {
        DeleteParams::default().grace_period(0)
    } else {
        DeleteParams::default()
    };
    pods.delete(&pod.name_any(), &params).await?;
    Ok(true)
}

fn workload_json(
    kind: &str,
    name: &str,
    replicas: i32,
    annotations: BTreeMap<String, String>,
    node: &str,
) -> Value {
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name, RUN_LABEL: "true"}, "annotations": annotations},
            "spec": pod_spec(node),
        },
    });
    if kind == "StatefulSet" {
        spec["serviceName"] = json!(name);
        spec["podManagementPolicy"] = json!("Parallel");
    }
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

trait Kind:
    kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
{
    const KIND: &'static str;
    const PREFIX: &'static str;
}

impl Kind for Deployment {
    const KIND: &'static str = "Deployment";
    const PREFIX: &'static str = "web";
}

impl Kind for StatefulSet {
    const KIND: &'static str = "StatefulSet";
    const PREFIX: &'static str = "db";
}

async fn create_workload<K: Kind>(
    world: &World,
    rng: &mut StdRng,
    namespace: &str,
    node: &str,
) -> anyhow::Result<bool> {
    let name = format!("{}-{}", K::PREFIX, rng.random_range(0..3));
    let object: K = serde_json::from_value(workload_json(
        K::KIND,
        &name,
        rng.random_range(1..4),
        pool_annotations(rng, world, true),
        node,
    ))?;
    match Api::<K>::namespaced(world.client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

async fn pick<K: Kind>(
    world: &World,
    rng: &mut StdRng,
    namespace: &str,
) -> anyhow::Result<Option<String>> {
    let list = Api::<K>::namespaced(world.client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    Ok((!list.is_empty()).then(|| list[rng.random_range(0..list.len())].name_any()))
}

async fn scale<K: Kind>(
    world: &World,
    rng: &mut StdRng,
    namespace: &str,
    crowded: bool,
) -> anyhow::Result<bool> {
    let Some(name) = pick::<K>(world, rng, namespace).await? else {
        return Ok(false);
    };
    let replicas = if crowded { 0 } else { rng.random_range(0..5) };
    Api::<K>::namespaced(world.client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await?;
    Ok(true)
}

async fn delete_workload<K: Kind>(
    world: &World,
    rng: &mut StdRng,
    namespace: &str,
) -> anyhow::Result<bool> {
    let Some(name) = pick::<K>(world, rng, namespace).await? else {
        return Ok(false);
    };
    Api::<K>::namespaced(world.client.clone(), namespace)
        .delete(&name, &DeleteParams::background())
        .await?;
    Ok(true)
}

async fn delete_namespace(world: &World, namespace: &str) -> anyhow::Result<bool> {
    lock(&world.namespaces).retain(|name| name != namespace);
    Api::<Namespace>::all(world.client.clone())
        .delete(namespace, &DeleteParams::background())
        .await?;
    world.add_namespace().await?;
    Ok(true)
}

/// The simulated kubelets: what they have done per pod UID.
#[derive(Default)]
pub struct Kubelet {
    added: Mutex<BTreeSet<String>>,
    busy: Mutex<BTreeSet<String>>,
    last_try: Mutex<BTreeMap<String, Instant>>,
    deleting: Mutex<BTreeSet<String>>,
}

/// Chances of the kubelet's faults.
pub struct Faults {
    /// A plugin call SIGKILLed at a random point (within its first 300 ms).
    pub kill_plugin: f64,
    /// A terminating pod force-deleted without a DEL.
    pub skip_del: f64,
}

impl Kubelet {
    /// One pass over the run's pods: ADD for bound pods not yet set up (retried at most every
    /// two seconds), DEL (or not) then a forced deletion for terminating ones. Calls run in the
    /// background, at most `slots` at a time.
    pub async fn pass(
        self: &Arc<Self>,
        world: &Arc<World>,
        rng: &mut StdRng,
        slots: &Arc<Semaphore>,
        faults: &Faults,
    ) {
        let Ok(pods) = world.pods().await else {
            world.stats.add("fail:kubelet-list");
            return;
        };
        for pod in pods {
            let Some(node_name) = pod.spec.as_ref().and_then(|spec| spec.node_name.clone()) else {
                continue;
            };
            let Some(node) = world
                .nodes
                .iter()
                .find(|node| node.name == node_name)
                .cloned()
            else {
                continue;
            };
            let reference = PodRef::of(&pod);
            let uid = reference.uid.clone();
            if lock(&self.busy).contains(&uid) {
                continue;
            }
            let kill = rng
                .random_bool(faults.kill_plugin)
                .then(|| Duration::from_millis(rng.random_range(0..300)));
            if pod.metadata.deletion_timestamp.is_some() {
                if !lock(&self.deleting).insert(uid.clone()) {
                    continue;
                }
                let send_del = !rng.random_bool(faults.skip_del);
                let world = Arc::clone(world);
                let kubelet = Arc::clone(self);
                self.spawn(slots, uid, async move {
                    if send_del {
                        call(&world, "del", &node, &reference, kill).await;
                    } else {
                        world.stats.add("op:del-never-sent");
                    }
                    let pods = Api::<Pod>::namespaced(world.client.clone(), &reference.namespace);
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(kube::api::Preconditions {
                            uid: Some(reference.uid.clone()),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    match pods.delete(&reference.name, &params).await {
                        Ok(_) => world.stats.add("op:kubelet-remove"),
                        Err(kube::Error::Api(status))
                            if status.code == 404 || status.code == 409 => {}
                        Err(_) => {
                            // Tried again on a later pass (the API server may be restarting).
                            world.stats.add("fail:kubelet-remove");
                            lock(&kubelet.deleting).remove(&reference.uid);
                        }
                    }
                    false
                });
                continue;
            }
            if lock(&self.added).contains(&uid) {
                continue;
            }
            let due = lock(&self.last_try)
                .get(&uid)
                .is_none_or(|last| last.elapsed() > Duration::from_secs(2));
            if !due {
                continue;
            }
            lock(&self.last_try).insert(uid.clone(), Instant::now());
            let world = Arc::clone(world);
            self.spawn(slots, uid, async move {
                call(&world, "add", &node, &reference, kill).await
            });
        }
    }

    /// Runs `work` for pod `uid` in the background; `true` from it marks the pod set up.
    fn spawn(
        self: &Arc<Self>,
        slots: &Arc<Semaphore>,
        uid: String,
        work: impl std::future::Future<Output = bool> + Send + 'static,
    ) {
        lock(&self.busy).insert(uid.clone());
        let (kubelet, slots) = (Arc::clone(self), Arc::clone(slots));
        tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            if work.await {
                lock(&kubelet.added).insert(uid.clone());
            }
            lock(&kubelet.busy).remove(&uid);
        });
    }

    /// Plugin calls still running.
    pub fn busy(&self) -> usize {
        lock(&self.busy).len()
    }
}

/// One plugin call, counted; `true` when it succeeded.
async fn call(
    world: &World,
    command: &str,
    node: &SimNode,
    pod: &PodRef,
    kill: Option<Duration>,
) -> bool {
    let config = netconf("1.0.0", node, json!({}));
    let binary = spiderpool_e2e::binary("spiderpool");
    let cni = command.to_uppercase();
    match cni_run(&binary, &cni, pod, "eth0", &config, &[], kill).await {
        Ok(Some(output)) if output.success => {
            world.stats.add(&format!("op:{command}"));
            true
        }
        Ok(Some(output)) => {
            let kind = format!("fail:{command}");
            // The first failures of each kind are shown: they say what the run ran into.
            if world.stats.get(&kind) < 3 {
                eprintln!(
                    "CHAOS {kind} {}/{}: {} {}",
                    pod.namespace,
                    pod.name,
                    output.stdout,
                    output.stderr.trim()
                );
            }
            world.stats.add(&kind);
            false
        }
        Ok(None) => {
            world.stats.add(&format!("kill:plugin-{command}"));
            false
        }
        Err(_) => {
            world.stats.add(&format!("fail:{command}-spawn"));
            false
        }
    }
}

/// A fresh random generator for one actor of the run.
pub fn actor_rng(seed: u64, actor: u64) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(actor))
}
