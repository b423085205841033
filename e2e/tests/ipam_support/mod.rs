//! Shared helpers of the `spiderpool` IPAM plugin suites: the test plays kubelet, so it creates
//! Node, Namespace and Pod objects (pods bound with `spec.nodeName`, never run) and invokes the
//! real plugin binary with the CNI environment and a network configuration on stdin.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::{SpiderEndpoint, SpiderIPPool, SpiderReservedIP};
use spiderpool_e2e::{binary, unique_name, wait_for};
use tokio::io::AsyncWriteExt;

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A scratch directory for settings files, logs and lock files, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(prefix: &str) -> anyhow::Result<Scratch> {
        let dir = spiderpool_e2e::run_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Kept after a failure, or on request (SPIDERPOOL_E2E_KEEP=1), for the plugin logs.
        if !std::thread::panicking() && std::env::var_os("SPIDERPOOL_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The kubeconfig every plugin call of this test process uses: the plugin's own identity, so
/// every suite also proves that `config/rbac/cni.yaml` grants what the plugin needs (a missing
/// verb fails the call with the API server's "forbidden").
pub async fn plugin_kubeconfig(client: &Client) -> anyhow::Result<PathBuf> {
    static KUBECONFIG: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    KUBECONFIG
        .get_or_try_init(|| spiderpool_e2e::component_kubeconfig(client, "spiderpool-cni"))
        .await
        .cloned()
}

/// One simulated node: its name, its settings file and its plugin log.
#[derive(Clone, Debug)]
pub struct SimNode {
    pub name: String,
    /// The plugin's kubeconfig ([`plugin_kubeconfig`]).
    pub kubeconfig: PathBuf,
    pub settings: PathBuf,
    pub log: PathBuf,
    pub lock_dir: PathBuf,
}

impl SimNode {
    /// Writes the node's settings file (`extra` YAML lines appended) and creates the Node object.
    pub async fn create(
        client: &Client,
        scratch: &Scratch,
        labels: &[(&str, &str)],
        extra_settings: &str,
    ) -> anyhow::Result<SimNode> {
        let name = unique_name("node");
        let lock_dir = scratch.dir.join(format!("{name}-locks"));
        let settings = scratch.dir.join(format!("{name}.yaml"));
        let log = scratch.dir.join(format!("{name}.log"));
        std::fs::write(
            &settings,
            format!(
                "lockDir: {}\ncniTimeoutSeconds: 60\n{extra_settings}\n",
                lock_dir.display()
            ),
        )?;
        create_node(client, &name, labels).await?;
        Ok(SimNode {
            name,
            kubeconfig: plugin_kubeconfig(client).await?,
            settings,
            log,
            lock_dir,
        })
    }

    pub async fn delete(&self, client: &Client) -> anyhow::Result<()> {
        delete_node(client, &self.name).await;
        Ok(())
    }
}

/// Creates a Node object (never a real node: the test plays its kubelet).
pub async fn create_node(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
) -> anyhow::Result<()> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
    }))?;
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    Ok(())
}

/// Deletes a Node object; a node already gone is fine.
pub async fn delete_node(client: &Client, name: &str) {
    let _ = Api::<Node>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// The network configuration for the plugin (`ipam_extra` is merged into the `ipam` section).
pub fn netconf(cni_version: &str, node: &SimNode, ipam_extra: Value) -> Value {
    let mut ipam = json!({
        "type": "spiderpool",
        "log_level": "debug",
        "log_file_path": node.log,
        "kubeconfig": node.kubeconfig,
        "settings": node.settings,
    });
    if let (Some(ipam), Value::Object(extra)) = (ipam.as_object_mut(), ipam_extra) {
        ipam.extend(extra);
    }
    json!({
        "cniVersion": cni_version,
        "name": "spiderpool-e2e",
        "type": "macvlan",
        "ipam": ipam,
    })
}

/// What one plugin invocation returned.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "stdout is not JSON: {:?} (stderr {})",
                self.stdout, self.stderr
            )
        })
    }

    /// The result of a successful ADD.
    pub fn result(&self) -> anyhow::Result<Value> {
        if !self.success {
            bail!("plugin failed: {} (stderr {})", self.stdout, self.stderr);
        }
        self.json()
    }

    /// The error of a failed call: `(code, msg)`.
    pub fn error(&self) -> anyhow::Result<(u64, String)> {
        if self.success {
            bail!("plugin unexpectedly succeeded: {}", self.stdout);
        }
        let value = self.json()?;
        let code = value["code"]
            .as_u64()
            .with_context(|| format!("no code in {value}"))?;
        Ok((code, value["msg"].as_str().unwrap_or_default().to_string()))
    }

    /// The addresses of the result's `ips`.
    pub fn addresses(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.result()?["ips"]
            .as_array()
            .context("result without ips")?
            .iter()
            .filter_map(|ip| ip["address"].as_str().map(str::to_string))
            .collect())
    }
}

/// The pod identity a call is about.
#[derive(Clone, Debug)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    pub fn of(pod: &Pod) -> PodRef {
        PodRef {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
        }
    }

    fn container_id(&self) -> String {
        format!("c{}", self.uid.replace('-', ""))
    }
}

/// Runs the plugin binary like a runtime does.
pub async fn cni(
    command: &str,
    pod: &PodRef,
    ifname: &str,
    config: &Value,
) -> anyhow::Result<Output> {
    cni_with(&binary("spiderpool"), command, pod, ifname, config, &[]).await
}

/// [`cni`] with another binary and extra environment.
pub async fn cni_with(
    plugin: &Path,
    command: &str,
    pod: &PodRef,
    ifname: &str,
    config: &Value,
    env: &[(&str, &str)],
) -> anyhow::Result<Output> {
    cni_run(plugin, command, pod, ifname, config, env, None)
        .await?
        .context("the plugin was killed")
}

/// Runs the plugin like a runtime does; with `kill_after`, SIGKILLs it if it is still running
/// then (a node losing the process mid-call) and returns `None`.
pub async fn cni_run(
    plugin: &Path,
    command: &str,
    pod: &PodRef,
    ifname: &str,
    config: &Value,
    env: &[(&str, &str)],
    kill_after: Option<Duration>,
) -> anyhow::Result<Option<Output>> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace,
        pod.name,
        pod.container_id(),
        pod.uid
    );
    let mut child = tokio::process::Command::new(plugin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod.container_id())
        .env(
            "CNI_NETNS",
            format!("/var/run/netns/{}", pod.container_id()),
        )
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", args)
        .env("CNI_PATH", "/opt/cni/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", plugin.display()))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    stdin.write_all(config.to_string().as_bytes()).await?;
    drop(stdin);
    let (mut stdout, mut stderr) = (
        child.stdout.take().context("no stdout")?,
        child.stderr.take().context("no stderr")?,
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let limit = kill_after.unwrap_or(Duration::from_secs(130));
    let waited = async {
        let (read_out, read_err, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        read_out?;
        read_err?;
        status
    };
    let status = match tokio::time::timeout(limit, waited).await {
        Ok(status) => status?,
        Err(_) if kill_after.is_some() => {
            child.start_kill()?;
            child.wait().await?;
            return Ok(None);
        }
        Err(_) => bail!("plugin did not finish"),
    };
    Ok(Some(Output {
        success: status.success(),
        stdout: String::from_utf8_lossy(&out).trim().to_string(),
        stderr: String::from_utf8_lossy(&err).to_string(),
        elapsed: started.elapsed(),
    }))
}

/// Creates a pod bound to `node`, retrying while the namespace's default ServiceAccount does not
/// exist yet.
pub async fn create_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    node: &str,
    annotations: &[(&str, &str)],
    labels: &[(&str, &str)],
) -> anyhow::Result<Pod> {
    let to_map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    };
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": to_map(annotations),
            "labels": to_map(labels),
        },
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }))?;
    create_retrying(client, namespace, &pod).await
}

/// Creates `pod` in `namespace`, retrying the ServiceAccount admission race of new namespaces.
pub async fn create_retrying(client: &Client, namespace: &str, pod: &Pod) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match pods.create(&PostParams::default(), pod).await {
            Ok(pod) => return Ok(pod),
            Err(kube::Error::Api(status))
                if status.message.contains("serviceaccount") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Deletes a pod at once (no kubelet would ever confirm a graceful deletion) and waits until that
/// pod instance is gone (a controller may already have made a new one with the same name).
pub async fn delete_pod_now(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Some(uid) = pods.get_opt(name).await?.and_then(|pod| pod.uid()) else {
        return Ok(());
    };
    match pods
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    wait_for("pod deletion", TIMEOUT, || async {
        let current = pods.get_opt(name).await?;
        Ok(current
            .is_none_or(|pod| pod.uid().as_deref() != Some(uid.as_str()))
            .then_some(()))
    })
    .await
}

/// Starts a graceful deletion: without a kubelet the pod stays terminating.
pub async fn terminate_pod(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.delete(name, &DeleteParams::default().grace_period(30))
        .await?;
    Ok(())
}

/// Creates a SpiderIPPool from a spec (the name is made unique from `prefix`).
pub async fn create_pool(client: &Client, prefix: &str, spec: Value) -> anyhow::Result<String> {
    let name = unique_name(prefix);
    let pool: SpiderIPPool = serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderIPPool",
        "metadata": {"name": name},
        "spec": spec,
    }))?;
    Api::<SpiderIPPool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
        .with_context(|| format!("creating pool {name}"))?;
    Ok(name)
}

pub async fn delete_pools(client: &Client, names: &[String]) {
    let api = Api::<SpiderIPPool>::all(client.clone());
    for name in names {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
}

/// `status.allocatedIPs` of a pool: address -> (pod, uid).
pub async fn pool_records(
    client: &Client,
    pool: &str,
) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let pool = Api::<SpiderIPPool>::all(client.clone()).get(pool).await?;
    let status = pool.status.unwrap_or_default();
    let records = status.allocations()?;
    let count = status.allocated_ip_count.unwrap_or(0);
    if count != records.len() as i64 {
        bail!(
            "allocatedIPCount {count} disagrees with {} records",
            records.len()
        );
    }
    Ok(records
        .into_iter()
        .map(|(ip, record)| (ip, (record.namespaced_name, record.pod_uid)))
        .collect())
}

pub async fn endpoint(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<SpiderEndpoint>> {
    Ok(Api::<SpiderEndpoint>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?)
}

pub async fn create_reserved(
    client: &Client,
    version: i64,
    ips: &[&str],
) -> anyhow::Result<String> {
    let name = unique_name("reserved");
    let reserved: SpiderReservedIP = serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderReservedIP",
        "metadata": {"name": name},
        "spec": {"ipVersion": version, "ips": ips},
    }))?;
    Api::<SpiderReservedIP>::all(client.clone())
        .create(&PostParams::default(), &reserved)
        .await?;
    Ok(name)
}

pub async fn delete_reserved(client: &Client, name: &str) {
    let _ = Api::<SpiderReservedIP>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Adds annotations / labels to a namespace.
pub async fn patch_namespace(client: &Client, name: &str, metadata: Value) -> anyhow::Result<()> {
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": metadata})),
        )
        .await?;
    Ok(())
}

/// Drops the finalizers of every SpiderEndpoint left in a namespace, so that deleting the
/// namespace does not hang on endpoints of pods that were never released.
pub async fn release_endpoints(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let api = Api::<SpiderEndpoint>::namespaced(client.clone(), namespace);
    for endpoint in api.list(&kube::api::ListParams::default()).await?.items {
        let _ = api
            .patch(
                &endpoint.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
    Ok(())
}

/// Strips the address' prefix length.
pub fn bare(address: &str) -> String {
    address.split('/').next().unwrap_or_default().to_string()
}
