//! The user's flows on a real node: kubelet, containerd and Multus call our plugins, installed
//! the way a user installs them.
//!
//! 1. install: the CRDs, the images of `make images` imported into the node's containerd, and
//!    `kubectl apply -k` of an overlay of `config/default` that changes only what this cluster
//!    differs in (see [`overlay`]); controller-manager and installer Ready; webhooks answer
//!    through their Service.
//! 2. concurrently: seed 002 (two NICs from SpiderSubnet auto pools, the coordinator's policy
//!    routing, ping over net1, scale 2 -> 5 -> 1, deletion and reclaim), a 10-replica two-NIC
//!    Deployment (time to all Ready), seed 000 (two NICs from named pools), a StatefulSet pod
//!    keeping its address, an invalid annotation reported on the pod, the settings following the
//!    ConfigMap, and the plugins' token renewed long before it expires.
//! 3. then, one at a time: the installer restarted and the controller-manager killed while pods
//!    keep getting addresses.
//! 4. uninstall: nothing hangs, nothing of ours is left but what upstream also leaves.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::{SpiderEndpoint, SpiderIPPool};
use spiderpool_e2e_realnode::*;

/// Everything waits at most this long for one condition.
const TIMEOUT: Duration = Duration::from_secs(180);
/// The plugins' token lifetime the overlay asks for: the API server's minimum, so the renewal
/// (at half of it) happens within the run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(600);
const BUSYBOX: &str = "localhost/busybox:v1";
/// The node paths the plugins read (their defaults; the installer writes them).
const PLUGIN_CONFIG_DIR: &str = "/etc/cni/net.d/spiderpool.d";
/// Host directories the install and the plugins create on a node (see `uninstall`).
const HOST_PATHS: [&str; 3] = ["/etc/cni", "/var/log/spidernet", "/run/spiderpool"];

struct Suite {
    node: Node,
    client: Client,
    overlay: std::path::PathBuf,
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if runtime.block_on(run_suite()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_suite() -> bool {
    let mut tally = Tally::default();
    let suite = match setup().await {
        Ok(suite) => suite,
        Err(error) => {
            println!("test setup ... FAILED");
            eprintln!("{error:?}");
            return false;
        }
    };
    // Host paths our components write on a node (kubelet creates the hostPath directories, the
    // plugins their log and lock directories). The test node is this machine: what did not
    // exist before the suite is removed after it.
    let host_paths_before: Vec<(&str, bool)> = HOST_PATHS
        .iter()
        .map(|path| (*path, std::path::Path::new(path).exists()))
        .collect();
    if !tally.run_one("install", install(&suite)).await {
        diagnostics(&suite.node);
        tally.summary();
        return false;
    }
    tally
        .run_all(vec![
            (
                "seed_002_two_nics_from_subnet_auto_pools",
                Box::pin(seed_002(&suite)),
            ),
            (
                "ten_replica_two_nic_deployment",
                Box::pin(ten_replicas(&suite)),
            ),
            (
                "seed_000_two_nics_from_named_pools",
                Box::pin(seed_000(&suite)),
            ),
            (
                "statefulset_pod_keeps_its_address",
                Box::pin(statefulset(&suite)),
            ),
            (
                "invalid_annotation_is_reported_and_allocates_nothing",
                Box::pin(invalid_annotation(&suite)),
            ),
            (
                "settings_follow_the_configmap",
                Box::pin(settings_follow(&suite)),
            ),
            (
                "plugin_token_is_renewed_before_it_expires",
                Box::pin(token_renewal(&suite)),
            ),
        ])
        .await;
    tally
        .run_one(
            "installer_restart_keeps_adds_working",
            installer_restart(&suite),
        )
        .await;
    tally
        .run_one(
            "controller_manager_killed_and_replaced",
            controller_killed(&suite),
        )
        .await;
    if !tally.failed.is_empty() {
        diagnostics(&suite.node);
    }
    tally
        .run_one(
            "uninstall_leaves_nothing_hanging",
            uninstall(&suite, &host_paths_before),
        )
        .await;
    tally.summary()
}

async fn setup() -> anyhow::Result<Suite> {
    let node = Node::from_env()?;
    let client = client().await?;
    let overlay = overlay(&node)?;
    Ok(Suite {
        node,
        client,
        overlay,
    })
}

/// The test overlay of `config/default` (`e2e/scripts/node-overlay.sh` says what it changes
/// and why), written into the run's directory.
fn overlay(node: &Node) -> anyhow::Result<std::path::PathBuf> {
    let dir = node.dir.join("realnode-overlay");
    let written = run(
        std::process::Command::new(repo().join("e2e/scripts/node-overlay.sh"))
            .arg(&dir)
            .env("APISERVER_PORT", &node.apiserver_port)
            .env("CNI_BIN_DIR", &node.cni_bin_dir),
    )?;
    Ok(written.trim().into())
}

/// Image archives written by `make images` (the Makefile passes their paths).
fn image_archives() -> anyhow::Result<Vec<String>> {
    let list = std::env::var("SPIDERPOOL_IMAGES").context(
        "SPIDERPOOL_IMAGES is not set: it lists the archives `make images` printed (the Makefile's test target sets it)",
    )?;
    let archives: Vec<String> = list.split_whitespace().map(str::to_string).collect();
    ensure!(
        archives.len() == 2,
        "expected two image archives, got {archives:?}"
    );
    Ok(archives)
}

async fn install(suite: &Suite) -> anyhow::Result<()> {
    let crds = repo().join("crds");
    kubectl(&["apply", "--server-side", "-f", &crds.display().to_string()])?;
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "--all",
    ])?;
    for archive in image_archives()? {
        // No --base-name: the archive names its image (what config/default expects).
        let imported = suite.node.ctr(&["images", "import", &archive])?;
        println!("imported {archive}: {}", imported.trim());
    }
    let started = Instant::now();
    kubectl(&["apply", "-k", &suite.overlay.display().to_string()])?;
    kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "daemonset/spiderpool-installer",
        "--timeout=180s",
    ])?;
    kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "deployment/spiderpool-controller",
        "--timeout=180s",
    ])?;
    println!(
        "REALNODE install: controller-manager and installer Ready {:.1} s after kubectl apply -k",
        started.elapsed().as_secs_f64()
    );
    for plugin in ["spiderpool", "ifacer", "coordinator"] {
        let path = suite.node.cni_bin_dir.join(plugin);
        ensure!(
            path.is_file(),
            "the installer did not put {} on the node",
            path.display()
        );
    }
    // The webhooks answer through the Service (aggregator routing to the hostNetwork pod).
    wait_for(
        "the webhooks to judge a SpiderIPPool through their Service",
        TIMEOUT,
        || async {
            let denial = kubectl_stdin(
                &["apply", "--dry-run=server", "-f", "-"],
                &serde_json::to_string(&json!({
                    "apiVersion": "spiderpool.spidernet.io/v2beta1",
                    "kind": "SpiderIPPool",
                    "metadata": {"name": "realnode-webhook-probe"},
                    "spec": {"subnet": "10.250.0.1/24"},
                }))?,
            );
            match denial {
                // The mutating webhook's own denial text (the CRD schema has no such rule).
                Err(error)
                    if error
                        .to_string()
                        .contains("unformatted subnet 10.250.0.1/24") =>
                {
                    Ok(Some(()))
                }
                Err(error) => Err(error),
                Ok(output) => bail!("an unformatted subnet was accepted: {output}"),
            }
        },
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared objects: the two underlay networks of seed 002 and their subnets.

const SUBNET_ETH0: &str = "subnet-test-ens192";
const SUBNET_NET1: &str = "subnet-test-ens224";
const NAD_ETH0: &str = "macvlan-conf-ens192";
const NAD_NET1: &str = "macvlan-conf-ens224";
const POOL_BARE: &str = "rn-pool-bare";
/// The test control plane's Service CIDR (`--service-cluster-ip-range`).
const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The SpiderMultusConfigs (macvlan on the two veth underlay NICs, underlay coordinator) and
/// the subnets, created once for every scenario that needs them.
async fn networks(suite: &Suite) -> anyhow::Result<()> {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_try_init(|| async {
        for (name, master) in [(NAD_ETH0, &suite.node.underlay_nics[0]), (NAD_NET1, &suite.node.underlay_nics[1])] {
            apply(&serde_json::to_string(&json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1",
                "kind": "SpiderMultusConfig",
                "metadata": {"name": name, "namespace": "kube-system"},
                "spec": {
                    "cniType": "macvlan",
                    "macvlan": {"master": [master]},
                    "coordinator": {"mode": "underlay", "hijackCIDR": [SERVICE_CIDR]},
                },
            }))?)?;
        }
        for (name, prefix) in [(SUBNET_ETH0, "10.6"), (SUBNET_NET1, "10.7")] {
            apply(&serde_json::to_string(&json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1",
                "kind": "SpiderSubnet",
                "metadata": {"name": name},
                "spec": {
                    "ipVersion": 4,
                    "subnet": format!("{prefix}.0.0/16"),
                    "ips": [format!("{prefix}.168.100-{prefix}.168.250"), format!("{prefix}.200.10-{prefix}.200.40")],
                    "gateway": format!("{prefix}.0.1"),
                },
            }))?)?;
        }
        // Bare pods cannot use subnets (auto pools belong to workloads): they take this pool.
        apply(&pool(POOL_BARE, "10.6", "200.30-10.6.200.40").to_string())?;
        for nad in [NAD_ETH0, NAD_NET1] {
            wait_for(&format!("NAD kube-system/{nad}"), TIMEOUT, || async {
                Ok(kubectl(&["get", "net-attach-def", "-n", "kube-system", nad, "-o", "name"]).ok().map(|_| ()))
            })
            .await?;
        }
        anyhow::Ok(())
    })
    .await
    .copied()
}

/// Pod annotations putting eth0 on the ens192 network and net1 on the ens224 network.
fn two_nic_annotations(ipam_key: &str, ipam_value: Value) -> Value {
    json!({
        "v1.multus-cni.io/default-network": format!("kube-system/{NAD_ETH0}"),
        "k8s.v1.cni.cncf.io/networks": format!("kube-system/{NAD_NET1}"),
        ipam_key: ipam_value.to_string(),
    })
}

/// Waits until a pod is Ready.
fn wait_ready(namespace: &str, pod: &str) -> anyhow::Result<()> {
    kubectl(&[
        "-n",
        namespace,
        "wait",
        "--for=condition=Ready",
        &format!("pod/{pod}"),
        "--timeout=180s",
    ])?;
    Ok(())
}

/// Deletes a scenario's namespace and waits until it is gone (its pods' CNI DEL included).
fn delete_namespace(namespace: &str) -> anyhow::Result<()> {
    kubectl(&[
        "delete",
        "namespace",
        namespace,
        "--wait=true",
        "--timeout=180s",
    ])?;
    Ok(())
}

/// A namespace for one scenario, labelled so that the uninstall can find what is left.
fn namespace(name: &str) -> anyhow::Result<String> {
    let name = unique_name(name);
    apply(
        &json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"spiderpool-e2e-realnode": "true"}},
        })
        .to_string(),
    )?;
    Ok(name)
}

fn deployment(namespace: &str, name: &str, replicas: u32, annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "c", "image": BUSYBOX, "imagePullPolicy": "Never",
                        "command": ["sleep", "86400"],
                    }],
                },
            },
        },
    })
}

fn bare_pod(namespace: &str, name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "c", "image": BUSYBOX, "imagePullPolicy": "Never",
                "command": ["sleep", "86400"],
            }],
        },
    })
}

/// Running pods of `app` in `namespace`, by name.
async fn running_pods(client: &Client, namespace: &str, app: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items
        .into_iter()
        .filter(|pod| {
            pod.metadata.deletion_timestamp.is_none()
                && pod
                    .status
                    .as_ref()
                    .and_then(|status| status.phase.as_deref())
                    == Some("Running")
        })
        .collect())
}

/// Waits until `app` has exactly `count` pods, all Running, and no terminating one.
async fn wait_replicas(
    client: &Client,
    namespace: &str,
    app: &str,
    count: usize,
) -> anyhow::Result<Vec<Pod>> {
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("{count} Running pods of {namespace}/{app} and no other"),
        TIMEOUT,
        || async {
            let all = pods_api
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await?
                .items;
            let running = running_pods(client, namespace, app).await?;
            Ok((all.len() == count && running.len() == count).then_some(running))
        },
    )
    .await
}

/// The IPv4 address (no prefix) of `interface` in a pod, from `ip -4 -o addr`.
fn pod_address(namespace: &str, pod: &str, interface: &str) -> anyhow::Result<String> {
    let output = exec(
        namespace,
        pod,
        &["ip", "-4", "-o", "addr", "show", "dev", interface],
    )?;
    output
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string)
        .with_context(|| format!("no IPv4 address on {interface} of {namespace}/{pod}: {output}"))
}

/// The auto pools of a workload (by the owner labels the controller sets).
async fn auto_pools(
    client: &Client,
    namespace: &str,
    app: &str,
) -> anyhow::Result<Vec<SpiderIPPool>> {
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    Ok(pools
        .list(&ListParams::default().labels(&format!(
            "ipam.spidernet.io/owner-application-namespace={namespace},ipam.spidernet.io/owner-application-name={app}"
        )))
        .await?
        .items)
}

fn pool_size(pool: &SpiderIPPool) -> anyhow::Result<usize> {
    let ranges: Vec<String> = pool.spec.ips.clone().unwrap_or_default();
    let mut total = 0;
    for range in ranges {
        total += match range.split_once('-') {
            Some((first, last)) => {
                let first: std::net::Ipv4Addr = first.parse()?;
                let last: std::net::Ipv4Addr = last.parse()?;
                (u32::from(last) - u32::from(first) + 1) as usize
            }
            None => 1,
        };
    }
    Ok(total)
}

fn allocated(pool: &SpiderIPPool) -> i64 {
    pool.status
        .as_ref()
        .and_then(|status| status.allocated_ip_count)
        .unwrap_or(0)
}

/// Waits until the workload's two auto pools hold `size` addresses each with `used` allocated.
async fn wait_pools(
    client: &Client,
    namespace: &str,
    app: &str,
    size: usize,
    used: i64,
) -> anyhow::Result<()> {
    wait_for(
        &format!("auto pools of {namespace}/{app} sized {size} with {used} allocated"),
        TIMEOUT,
        || async {
            let pools = auto_pools(client, namespace, app).await?;
            let settled = pools.len() == 2
                && pools.iter().all(|pool| {
                    pool_size(pool).is_ok_and(|n| n == size) && allocated(pool) == used
                });
            Ok(settled.then_some(()))
        },
    )
    .await
}

/// Normalised lines of a command's output (runs of blanks squeezed), for comparing routing
/// tables with the seed's text.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect()
}

async fn seed_002(suite: &Suite) -> anyhow::Result<()> {
    networks(suite).await?;
    let ns = namespace("seed002")?;
    let annotations = two_nic_annotations(
        "ipam.spidernet.io/subnets",
        json!([
            {"interface": "eth0", "ipv4": [SUBNET_ETH0]},
            {"interface": "net1", "ipv4": [SUBNET_NET1]},
        ]),
    );
    apply(&deployment(&ns, "test-app", 2, annotations).to_string())?;
    let pods = wait_replicas(&suite.client, &ns, "test-app", 2).await?;
    // replicas + 1 addresses per pool (the default flexible number), 2 of them in use.
    wait_pools(&suite.client, &ns, "test-app", 3, 2).await?;

    let first = pods[0].name_any();
    let second = pods[1].name_any();
    let eth0 = pod_address(&ns, &first, "eth0")?;
    let net1 = pod_address(&ns, &first, "net1")?;
    ensure!(
        eth0.starts_with("10.6.168."),
        "eth0 {eth0} is not from {SUBNET_ETH0}"
    );
    ensure!(
        net1.starts_with("10.7.168."),
        "net1 {net1} is not from {SUBNET_NET1}"
    );
    let addr = exec(&ns, &first, &["ip", "addr"])?;
    let rules = exec(&ns, &first, &["ip", "rule"])?;
    let main = exec(&ns, &first, &["ip", "route", "show", "table", "main"])?;
    let table = exec(&ns, &first, &["ip", "route", "show", "table", "101"])?;
    println!(
        "REALNODE seed002 {ns}/{first} ip addr:\n{addr}\nip rule:\n{rules}\nip route show table main:\n{main}\nip route show table 101:\n{table}"
    );
    // Seed 002's expectations, with this node's address in place of 10.6.168.123, this
    // cluster's Service CIDR in place of 10.96.0.0/12, and table 101 for net1: the seed's page
    // shows 100 from an older upstream; upstream's coordinator numbers the first NIC after eth0
    // 101 (contract 6.3), as we do.
    let host = &suite.node.ip;
    let expected_rules = [
        "0: from all lookup local".to_string(),
        format!("32764: from {net1} lookup 101"),
        format!("32765: from all to {net1}/16 lookup 101"),
        "32766: from all lookup main".to_string(),
        "32767: from all lookup default".to_string(),
    ];
    ensure!(
        lines(&rules) == expected_rules,
        "ip rule:\n{rules}\nexpected:\n{}",
        expected_rules.join("\n")
    );
    let expected_table = [
        "default via 10.7.0.1 dev net1".to_string(),
        format!("{host} dev veth0 scope link"),
        format!("10.7.0.0/16 dev net1 scope link src {net1}"),
        format!("{SERVICE_CIDR} via {host} dev veth0"),
    ];
    let table_lines: Vec<String> = lines(&table)
        .into_iter()
        .map(|line| line.replace(" proto kernel", ""))
        .collect();
    ensure!(
        expected_table.iter().all(|line| table_lines.contains(line))
            && table_lines.len() == expected_table.len(),
        "ip route show table 101:\n{table}\nexpected (any order):\n{}",
        expected_table.join("\n")
    );
    ensure!(
        lines(&main)
            .first()
            .is_some_and(|line| line == "default via 10.6.0.1 dev eth0"),
        "main table:\n{main}"
    );
    // The pods reach each other over net1 (macvlan bridge mode on the same underlay NIC).
    let peer = pod_address(&ns, &second, "net1")?;
    exec(
        &ns,
        &first,
        &["ping", "-c", "2", "-W", "2", "-I", "net1", &peer],
    )
    .with_context(|| format!("ping from {first} to {peer} over net1"))?;
    // The node reaches the pod through the coordinator's veth (underlay mode).
    run(std::process::Command::new("busybox").args(["ping", "-c", "1", "-W", "2", &eth0]))
        .with_context(|| format!("ping from the node to {eth0}"))?;

    for (replicas, size) in [(5u32, 6usize), (1, 2)] {
        kubectl(&[
            "-n",
            &ns,
            "scale",
            "deployment/test-app",
            &format!("--replicas={replicas}"),
        ])?;
        wait_replicas(&suite.client, &ns, "test-app", replicas as usize).await?;
        wait_pools(&suite.client, &ns, "test-app", size, i64::from(replicas)).await?;
    }
    kubectl(&[
        "-n",
        &ns,
        "delete",
        "deployment/test-app",
        "--wait=true",
        "--timeout=120s",
    ])?;
    wait_for(
        "the auto pools reclaimed after the Deployment is deleted",
        TIMEOUT,
        || async {
            Ok(auto_pools(&suite.client, &ns, "test-app")
                .await?
                .is_empty()
                .then_some(()))
        },
    )
    .await?;
    delete_namespace(&ns)?;
    Ok(())
}

async fn ten_replicas(suite: &Suite) -> anyhow::Result<()> {
    networks(suite).await?;
    let ns = namespace("ten")?;
    let annotations = two_nic_annotations(
        "ipam.spidernet.io/subnets",
        json!([
            {"interface": "eth0", "ipv4": [SUBNET_ETH0]},
            {"interface": "net1", "ipv4": [SUBNET_NET1]},
        ]),
    );
    let started = Instant::now();
    apply(&deployment(&ns, "ten", 10, annotations).to_string())?;
    kubectl(&[
        "-n",
        &ns,
        "rollout",
        "status",
        "deployment/ten",
        "--timeout=300s",
    ])?;
    println!(
        "REALNODE ten-replica two-NIC Deployment all Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let pods = wait_replicas(&suite.client, &ns, "ten", 10).await?;
    let mut seen = std::collections::BTreeSet::new();
    for pod in &pods {
        for interface in ["eth0", "net1"] {
            let address = pod_address(&ns, &pod.name_any(), interface)?;
            ensure!(seen.insert(address.clone()), "{address} given twice");
        }
    }
    ensure!(
        seen.len() == 20,
        "expected 20 distinct addresses, got {seen:?}"
    );
    delete_namespace(&ns)?;
    wait_for("the ten-replica auto pools reclaimed", TIMEOUT, || async {
        Ok(auto_pools(&suite.client, &ns, "ten")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}

/// A named pool inside one of the shared subnets.
fn pool(name: &str, prefix: &str, range: &str) -> Value {
    json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderIPPool",
        "metadata": {"name": name},
        "spec": {
            "subnet": format!("{prefix}.0.0/16"),
            "ips": [format!("{prefix}.{range}")],
            "gateway": format!("{prefix}.0.1"),
        },
    })
}

async fn seed_000(suite: &Suite) -> anyhow::Result<()> {
    networks(suite).await?;
    let ns = namespace("seed000")?;
    apply(&pool("rn-pool-eth0", "10.6", "200.10-10.6.200.14").to_string())?;
    apply(&pool("rn-pool-net1", "10.7", "200.10-10.7.200.14").to_string())?;
    let annotations = two_nic_annotations(
        "ipam.spidernet.io/ippools",
        json!([
            {"interface": "eth0", "ipv4": ["rn-pool-eth0"]},
            {"interface": "net1", "ipv4": ["rn-pool-net1"]},
        ]),
    );
    apply(&bare_pod(&ns, "seed000", annotations).to_string())?;
    wait_ready(&ns, "seed000")?;
    let eth0 = pod_address(&ns, "seed000", "eth0")?;
    let net1 = pod_address(&ns, "seed000", "net1")?;
    ensure!(
        eth0.starts_with("10.6.200.1"),
        "eth0 {eth0} not from rn-pool-eth0"
    );
    ensure!(
        net1.starts_with("10.7.200.1"),
        "net1 {net1} not from rn-pool-net1"
    );
    let endpoints: Api<SpiderEndpoint> = Api::namespaced(suite.client.clone(), &ns);
    let endpoint = read("the pod's SpiderEndpoint", || endpoints.get("seed000")).await?;
    let text = serde_json::to_string(&endpoint.status)?;
    for needle in ["rn-pool-eth0", "rn-pool-net1", eth0.as_str(), net1.as_str()] {
        ensure!(
            text.contains(needle),
            "SpiderEndpoint status lacks {needle}: {text}"
        );
    }
    println!("REALNODE seed000 SpiderEndpoint status: {text}");
    delete_namespace(&ns)?;
    wait_for("both pools empty again", TIMEOUT, || async {
        let pools: Api<SpiderIPPool> = Api::all(suite.client.clone());
        let a = pools.get("rn-pool-eth0").await?;
        let b = pools.get("rn-pool-net1").await?;
        Ok((allocated(&a) == 0 && allocated(&b) == 0).then_some(()))
    })
    .await?;
    kubectl(&[
        "delete",
        "spiderippool",
        "rn-pool-eth0",
        "rn-pool-net1",
        "--wait=true",
        "--timeout=60s",
    ])?;
    Ok(())
}

async fn statefulset(suite: &Suite) -> anyhow::Result<()> {
    networks(suite).await?;
    let ns = namespace("sts")?;
    apply(&pool("rn-pool-sts", "10.6", "200.20-10.6.200.24").to_string())?;
    apply(&json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}, "annotations": {
                    "v1.multus-cni.io/default-network": format!("kube-system/{NAD_ETH0}"),
                    "ipam.spidernet.io/ippool": json!({"ipv4": ["rn-pool-sts"]}).to_string(),
                }},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": BUSYBOX, "imagePullPolicy": "Never", "command": ["sleep", "86400"]}],
                },
            },
        },
    }).to_string())?;
    wait_ready(&ns, "db-0")?;
    let before = pod_address(&ns, "db-0", "eth0")?;
    let old_uid = kubectl(&[
        "-n",
        &ns,
        "get",
        "pod",
        "db-0",
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    kubectl(&["-n", &ns, "delete", "pod", "db-0", "--wait=true"])?;
    wait_for("db-0 re-created and Ready", TIMEOUT, || async {
        let uid = kubectl(&[
            "-n",
            &ns,
            "get",
            "pod",
            "db-0",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .unwrap_or_default();
        if uid.is_empty() || uid == old_uid {
            return Ok(None);
        }
        Ok(kubectl(&[
            "-n",
            &ns,
            "wait",
            "--for=condition=Ready",
            "pod/db-0",
            "--timeout=2s",
        ])
        .ok()
        .map(|_| ()))
    })
    .await?;
    let after = pod_address(&ns, "db-0", "eth0")?;
    ensure!(
        before == after,
        "the re-created StatefulSet pod got {after}, it had {before}"
    );
    delete_namespace(&ns)?;
    wait_for("rn-pool-sts empty", TIMEOUT, || async {
        let pools: Api<SpiderIPPool> = Api::all(suite.client.clone());
        Ok((allocated(&pools.get("rn-pool-sts").await?) == 0).then_some(()))
    })
    .await?;
    kubectl(&[
        "delete",
        "spiderippool",
        "rn-pool-sts",
        "--wait=true",
        "--timeout=60s",
    ])?;
    Ok(())
}

async fn invalid_annotation(suite: &Suite) -> anyhow::Result<()> {
    networks(suite).await?;
    let ns = namespace("invalid")?;
    // A wildcard is judged at allocation time (the webhook cannot know what it will match), so
    // this annotation passes admission and only the plugin finds it matches nothing.
    let annotations = json!({
        "v1.multus-cni.io/default-network": format!("kube-system/{NAD_ETH0}"),
        "ipam.spidernet.io/ippool": json!({"ipv4": ["no-such-pool-*"]}).to_string(),
    });
    apply(&bare_pod(&ns, "bad", annotations).to_string())?;
    let message = wait_for(
        "a FailedCreatePodSandBox event on the pod",
        TIMEOUT,
        || async {
            let events = kubectl(&[
                "-n",
                &ns,
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=bad,reason=FailedCreatePodSandBox",
                "-o",
                "jsonpath={.items[*].message}",
            ])?;
            Ok((!events.trim().is_empty()).then_some(events))
        },
    )
    .await?;
    println!("REALNODE invalid annotation event: {message}");
    ensure!(
        message.contains("no IPv4 IPPool matches [no-such-pool-*]"),
        "the event does not name the pattern: {message}"
    );
    // Nothing was allocated for it: no endpoint, and no pool record names the pod.
    let endpoints: Api<SpiderEndpoint> = Api::namespaced(suite.client.clone(), &ns);
    ensure!(
        read("the failed pod's SpiderEndpoint", || endpoints
            .get_opt("bad"))
        .await?
        .is_none(),
        "a SpiderEndpoint exists for the failed pod"
    );
    let pools: Api<SpiderIPPool> = Api::all(suite.client.clone());
    let all = ListParams::default();
    let listed = read("the SpiderIPPools", || pools.list(&all)).await?;
    for pool in listed.items {
        let ledger = pool
            .status
            .as_ref()
            .and_then(|status| status.allocated_ips.clone())
            .unwrap_or_default();
        ensure!(
            !ledger.contains(&format!("\"{ns}/bad\"")) && !ledger.contains(&ns),
            "pool {} records the failed pod: {ledger}",
            pool.name_any()
        );
    }
    delete_namespace(&ns)?;
    Ok(())
}

/// One read through the API client, retried a few times: a connection the API server drops on
/// this loaded 2-core machine is not what a scenario tests.
async fn read<T, F, Fut>(what: &str, mut request: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match request().await {
            Ok(value) => return Ok(value),
            Err(kube::Error::Api(status)) => bail!("{what}: {status:?}"),
            Err(error) if attempt >= 5 => {
                return Err(anyhow::Error::new(error).context(what.to_string()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
        }
    }
}

fn node_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(PLUGIN_CONFIG_DIR).join(name)
}

async fn settings_follow(suite: &Suite) -> anyhow::Result<()> {
    let _ = suite;
    let original = kubectl(&[
        "-n",
        "kube-system",
        "get",
        "configmap",
        "spiderpool-conf",
        "-o",
        "jsonpath={.data.conf\\.yml}",
    ])?;
    let changed = format!("{original}cniTimeoutSeconds: 45\n");
    let patch = |conf: &str| -> anyhow::Result<()> {
        kubectl(&[
            "-n",
            "kube-system",
            "patch",
            "configmap",
            "spiderpool-conf",
            "--type=merge",
            "-p",
            &json!({"data": {"conf.yml": conf}}).to_string(),
        ])?;
        Ok(())
    };
    patch(&changed)?;
    wait_for(
        "the node's settings file to follow the ConfigMap",
        TIMEOUT,
        || async {
            let text = std::fs::read_to_string(node_file("spiderpool.yaml")).unwrap_or_default();
            Ok(text.contains("cniTimeoutSeconds: 45").then_some(()))
        },
    )
    .await?;
    // A conf.yml the plugins would refuse is not written; the installer says it is not ready.
    patch("enableIPv4: [broken\n")?;
    wait_for(
        "the installer to report not ready on a broken conf.yml",
        TIMEOUT,
        || async {
            let ready = kubectl(&[
                "-n",
                "kube-system",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=spiderpool-installer",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
            ])?;
            Ok((ready.trim() == "False").then_some(()))
        },
    )
    .await?;
    let text = std::fs::read_to_string(node_file("spiderpool.yaml"))?;
    ensure!(
        text.contains("cniTimeoutSeconds: 45") && !text.contains("broken"),
        "the broken settings reached the node:\n{text}"
    );
    patch(&original)?;
    wait_for(
        "the installer Ready again with the original settings",
        TIMEOUT,
        || async {
            let text = std::fs::read_to_string(node_file("spiderpool.yaml")).unwrap_or_default();
            let ready = kubectl(&[
                "-n",
                "kube-system",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=spiderpool-installer",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
            ])?;
            Ok((!text.contains("cniTimeoutSeconds") && ready.trim() == "True").then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// The claims of the token in the node's plugin kubeconfig.
fn node_token() -> anyhow::Result<(String, Value)> {
    let text = std::fs::read_to_string(node_file("spiderpool.kubeconfig"))?;
    let config: Value = serde_yaml::from_str(&text)?;
    let token = config["users"][0]["user"]["token"]
        .as_str()
        .context("no token in the node's kubeconfig")?
        .to_string();
    let payload = token.split('.').nth(1).context("the token is not a JWT")?;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    Ok((token, claims))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|duration| duration.as_secs() as i64)
        .unwrap_or_default()
}

async fn token_renewal(suite: &Suite) -> anyhow::Result<()> {
    let (first, claims) = node_token()?;
    let issued = claims["iat"].as_i64().context("no iat")?;
    let expires = claims["exp"].as_i64().context("no exp")?;
    let lifetime = expires - issued;
    ensure!(
        lifetime == TOKEN_LIFETIME.as_secs() as i64,
        "the token lives {lifetime} s, the overlay asked for {TOKEN_LIFETIME:?}"
    );
    ensure!(
        claims["sub"] == "system:serviceaccount:kube-system:spiderpool-cni",
        "the token is not the plugins' identity: {claims}"
    );
    ensure!(
        claims["kubernetes.io"]["node"]["name"] == suite.node.name.as_str(),
        "the token is not bound to the node: {claims}"
    );
    // Waits past the renewal point (half the lifetime) with a minute to spare.
    let deadline = Duration::from_secs(u64::try_from(lifetime / 2 + 60).unwrap_or(360));
    let renewed_at = wait_for("the plugins' token to be renewed", deadline, || async {
        let (token, _) = node_token()?;
        Ok((token != first).then(unix_now))
    })
    .await?;
    let left = expires - renewed_at;
    println!("REALNODE token renewed {left} s before the old one expired (lifetime {lifetime} s)");
    ensure!(
        left >= lifetime * 2 / 5,
        "renewed only {left} s before expiry (lifetime {lifetime} s)"
    );
    let (_, renewed) = node_token()?;
    ensure!(
        renewed["exp"].as_i64() > Some(expires),
        "the new token does not outlive the old: {renewed}"
    );
    // And an ADD with the renewed kubeconfig works.
    networks(suite).await?;
    let ns = namespace("token")?;
    pod_gets_an_address(&ns, "after-renewal").await?;
    delete_namespace(&ns)?;
    Ok(())
}

/// A bare pod on the ens192 network with an address from the bare pods' pool, Ready.
async fn pod_gets_an_address(ns: &str, name: &str) -> anyhow::Result<String> {
    apply(
        &bare_pod(
            ns,
            name,
            json!({
                "v1.multus-cni.io/default-network": format!("kube-system/{NAD_ETH0}"),
                "ipam.spidernet.io/ippool": json!({"ipv4": [POOL_BARE]}).to_string(),
            }),
        )
        .to_string(),
    )?;
    wait_ready(ns, name)?;
    pod_address(ns, name, "eth0")
}

fn inodes() -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for plugin in ["spiderpool", "ifacer", "coordinator"] {
        let path =
            std::path::PathBuf::from(std::env::var("CNI_BIN_DIR").unwrap_or_default()).join(plugin);
        out.insert(
            plugin.to_string(),
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path)?),
        );
    }
    Ok(out)
}

async fn installer_restart(suite: &Suite) -> anyhow::Result<()> {
    networks(suite).await?;
    let ns = namespace("restart")?;
    let before = inodes()?;
    let old = kubectl(&[
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=spiderpool-installer",
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ])?;
    kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "restart",
        "daemonset/spiderpool-installer",
    ])?;
    // While the installer pod is replaced, the node keeps a valid kubeconfig: its token is bound
    // to the node, not to the installer pod.
    wait_for("the old installer pod gone", TIMEOUT, || async {
        let uids = kubectl(&[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=spiderpool-installer",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ])?;
        Ok((!uids.contains(old.trim())).then_some(()))
    })
    .await?;
    pod_gets_an_address(&ns, "during-restart").await?;
    kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "daemonset/spiderpool-installer",
        "--timeout=180s",
    ])?;
    ensure!(
        inodes()? == before,
        "unchanged plugins were rewritten by the new installer"
    );
    delete_namespace(&ns)?;
    Ok(())
}

async fn controller_killed(suite: &Suite) -> anyhow::Result<()> {
    networks(suite).await?;
    let ns = namespace("failover")?;
    let selector = "app.kubernetes.io/name=spiderpool-controller-manager";
    let old = kubectl(&[
        "-n",
        "kube-system",
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ])?;
    let old = old.trim().to_string();
    kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "pod",
        &old,
        "--grace-period=0",
        "--force",
    ])?;
    // Pods get addresses meanwhile: the plugin needs only the API server.
    pod_gets_an_address(&ns, "while-replaced").await?;
    let new = wait_for("a new controller-manager pod Ready", TIMEOUT, || async {
        let names = kubectl(&["-n", "kube-system", "get", "pods", "-l", selector, "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"])?;
        Ok(names.lines().find_map(|line| {
            let (name, ready) = line.split_once(' ')?;
            (name != old && ready == "True").then(|| name.to_string())
        }))
    })
    .await?;
    wait_for(
        "the new controller-manager to hold the leader Lease",
        TIMEOUT,
        || async {
            let holder = kubectl(&[
                "-n",
                "kube-system",
                "get",
                "lease",
                "spiderpool-controller-manager",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ])?;
            // The identity is `<pod name>_<pid>`.
            Ok(holder.trim().starts_with(&format!("{new}_")).then_some(()))
        },
    )
    .await?;
    // And it works: a Deployment with a subnet annotation gets its auto pools.
    apply(
        &deployment(
            &ns,
            "after-failover",
            1,
            two_nic_annotations(
                "ipam.spidernet.io/subnets",
                json!([
                    {"interface": "eth0", "ipv4": [SUBNET_ETH0]},
                    {"interface": "net1", "ipv4": [SUBNET_NET1]},
                ]),
            ),
        )
        .to_string(),
    )?;
    wait_replicas(&suite.client, &ns, "after-failover", 1).await?;
    delete_namespace(&ns)?;
    Ok(())
}

async fn uninstall(suite: &Suite, host_paths_before: &[(&str, bool)]) -> anyhow::Result<()> {
    // What a user removes first: their workloads and our objects.
    let _ = kubectl(&[
        "delete",
        "namespace",
        "-l",
        "spiderpool-e2e-realnode",
        "--wait=true",
        "--timeout=120s",
    ]);
    kubectl(&[
        "delete",
        "spidermultusconfig",
        "-n",
        "kube-system",
        NAD_ETH0,
        NAD_NET1,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=60s",
    ])?;
    kubectl(&[
        "delete",
        "spiderippool",
        "--all",
        "--wait=true",
        "--timeout=120s",
    ])?;
    kubectl(&[
        "delete",
        "spidersubnet",
        "--all",
        "--wait=true",
        "--timeout=120s",
    ])?;
    let started = Instant::now();
    // Our components first, waiting for their pods to end: stopped with their permissions
    // still in place, none of their requests is refused on the way out (the RBAC audit counts
    // refusals). A plain `kubectl delete -k` works as well; it only logs a refused request or two.
    kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "deployment/spiderpool-controller",
        "daemonset/spiderpool-installer",
        "--wait=true",
        "--timeout=120s",
    ])?;
    wait_for(
        "our pods gone before the rest is deleted",
        TIMEOUT,
        || async {
            let pods = kubectl(&["-n", "kube-system", "get", "pods", "-o", "name"])?;
            Ok((!pods.contains("spiderpool")).then_some(()))
        },
    )
    .await?;
    kubectl(&[
        "delete",
        "-k",
        &suite.overlay.display().to_string(),
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    ])?;
    kubectl(&[
        "delete",
        "-f",
        &repo().join("crds").display().to_string(),
        "--wait=true",
        "--timeout=120s",
    ])?;
    println!(
        "REALNODE uninstall took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    wait_for("our pods gone", TIMEOUT, || async {
        let pods = kubectl(&["-n", "kube-system", "get", "pods", "-o", "name"])?;
        Ok((!pods.contains("spiderpool")).then_some(()))
    })
    .await?;
    let crds = kubectl(&["get", "crd", "-o", "name"])?;
    ensure!(
        !crds.contains("spiderpool.spidernet.io"),
        "CRDs left: {crds}"
    );
    ensure!(
        !std::path::Path::new(PLUGIN_CONFIG_DIR).exists(),
        "{PLUGIN_CONFIG_DIR} is left on the node: {:?}",
        std::fs::read_dir(PLUGIN_CONFIG_DIR).map(|entries| entries
            .flatten()
            .map(|entry| entry.file_name())
            .collect::<Vec<_>>())
    );
    // What stays, as with upstream: the plugin binaries (pods still running could not be torn
    // down without them) and the plugins' log directory; and the plugins' lock files, on tmpfs.
    let left: Vec<String> = ["spiderpool", "ifacer", "coordinator"]
        .iter()
        .filter(|plugin| suite.node.cni_bin_dir.join(plugin).exists())
        .map(|plugin| suite.node.cni_bin_dir.join(plugin).display().to_string())
        .chain(
            ["/var/log/spidernet", "/run/spiderpool/locks"]
                .into_iter()
                .filter(|path| std::path::Path::new(path).exists())
                .map(str::to_string),
        )
        .collect();
    println!(
        "REALNODE left on the node after uninstall (as upstream, plus the tmpfs lock files): {left:?}"
    );
    for (path, existed) in host_paths_before {
        if !existed {
            let _ = std::fs::remove_dir_all(path);
        }
    }
    Ok(())
}
