//! The `spiderpool` IPAM plugin behind a real main plugin in real network namespaces: Debian's
//! `macvlan` (run inside a test-made "host" namespace whose veth is the master) delegates IPAM to
//! our binary through `CNI_PATH`; the allocated addresses must appear on the pod interface, and DEL
//! must remove the interface and free the addresses. The machine's own interfaces are never
//! touched.
//!
//! The delegated plugin runs inside the host namespace, where the API server's loopback address
//! does not exist: the test forwards `127.0.0.1:<port>` of that namespace to the API server (a
//! listening socket created inside the namespace, connections made from the test's namespace), so
//! the plugin uses the test kubeconfig unchanged.

mod ipam_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use spiderpool_e2e::{TestNamespace, binary, client, kubeconfig_path, unique_name};
use tokio::net::{TcpListener, TcpStream};

use ipam_support::*;

const MACVLAN: &str = "/usr/lib/cni/macvlan";

/// A network namespace made by the test, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> anyhow::Result<Netns> {
        let name = unique_name(&format!("spnetns-{role}"));
        ip(&["netns", "add", &name])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(Netns { name })
    }

    fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn prerequisites() -> anyhow::Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "this suite creates network namespaces and must run as root"
    );
    ensure!(
        Path::new(MACVLAN).exists(),
        "{MACVLAN} is missing: apt-get install containernetworking-plugins (make deps)"
    );
    Ok(())
}

/// The API server's `host:port` from the test kubeconfig.
fn apiserver_address() -> anyhow::Result<String> {
    let kubeconfig = std::fs::read_to_string(kubeconfig_path())?;
    let server = kubeconfig
        .lines()
        .find_map(|line| line.trim().strip_prefix("server:"))
        .context("no server in the kubeconfig")?
        .trim()
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    Ok(server)
}

/// Forwards `address` inside `netns` to the same address in the test's own namespace.
async fn forward_into(netns: &Netns, address: &str) -> anyhow::Result<()> {
    let path = netns.path();
    let bind = address.to_string();
    // `setns` affects only the calling thread; the socket keeps the namespace it was made in.
    let listener = std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
        let file = std::fs::File::open(&path)?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|error| anyhow::anyhow!("setns: {error}"))?;
        let listener = std::net::TcpListener::bind(&bind)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))??;
    let listener = TcpListener::from_std(listener)?;
    let target = address.to_string();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(())
}

/// Runs Debian's macvlan plugin inside `host` like a runtime, delegating IPAM to our binary.
fn macvlan(
    command: &str,
    host: &Netns,
    pod_netns: &Netns,
    pod: &PodRef,
    config: &Value,
) -> anyhow::Result<Output> {
    use std::io::Write;
    let our_dir = binary("spiderpool")
        .parent()
        .context("binary dir")?
        .to_path_buf();
    let started = std::time::Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.name, MACVLAN])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", format!("c{}", pod.uid.replace('-', "")))
        .env("CNI_NETNS", pod_netns.path())
        .env("CNI_IFNAME", "eth0")
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID={}",
                pod.namespace, pod.name, pod.uid
            ),
        )
        .env("CNI_PATH", format!("{}:/usr/lib/cni", our_dir.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(config.to_string().as_bytes())?;
    let output = child.wait_with_output()?;
    Ok(Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
        elapsed: started.elapsed(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macvlan_delegates_ipam_and_the_pod_interface_gets_the_addresses() -> anyhow::Result<()> {
    prerequisites()?;
    let client = client().await?;
    let namespace = TestNamespace::create(&client, "ipam-netns").await?;
    let scratch = Scratch::new("ipam-netns")?;
    let node = SimNode::create(&client, &scratch, &[], "").await?;
    let host = Netns::new("host")?;
    let pod_netns = Netns::new("pod")?;
    ip(&[
        "-n", &host.name, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ])?;
    ip(&["-n", &host.name, "link", "set", "uplink0", "up"])?;
    ip(&["-n", &host.name, "link", "set", "uplink1", "up"])?;
    forward_into(&host, &apiserver_address()?).await?;

    let third: u8 = rand::random_range(20..250);
    let v4 = create_pool(
        &client,
        "netns-v4",
        json!({
            "ipVersion": 4,
            "subnet": format!("10.{third}.0.0/24"),
            "ips": [format!("10.{third}.0.40-10.{third}.0.50")],
            "gateway": format!("10.{third}.0.1"),
            "routes": [{"dst": "172.31.0.0/16", "gw": format!("10.{third}.0.1")}],
        }),
    )
    .await?;
    let v6 = create_pool(
        &client,
        "netns-v6",
        json!({
            "ipVersion": 6,
            "subnet": format!("fd00:{third:x}::/64"),
            "ips": [format!("fd00:{third:x}::40-fd00:{third:x}::50")],
            "gateway": format!("fd00:{third:x}::1"),
        }),
    )
    .await?;
    let annotation = format!(r#"{{"ipv4":["{v4}"],"ipv6":["{v6}"]}}"#);
    let pod = create_pod(
        &client,
        &namespace.name,
        "macvlan-pod",
        &node.name,
        &[("ipam.spidernet.io/ippool", &annotation)],
        &[],
    )
    .await?;
    let pod = PodRef::of(&pod);

    let mut config = netconf("1.0.0", &node, json!({}));
    config["name"] = json!("macvlan-e2e");
    config["master"] = json!("uplink0");
    config["mode"] = json!("bridge");
    let output = tokio::task::block_in_place(|| macvlan("ADD", &host, &pod_netns, &pod, &config))?;
    let result = output.result().with_context(|| {
        format!(
            "plugin log: {}",
            std::fs::read_to_string(&node.log).unwrap_or_default()
        )
    })?;
    let addresses: Vec<String> = result["ips"]
        .as_array()
        .context("ips")?
        .iter()
        .filter_map(|ip| ip["address"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        addresses,
        vec![
            format!("10.{third}.0.40/24"),
            format!("fd00:{third:x}::40/64")
        ]
    );
    // macvlan reports the interface it made in the pod's namespace.
    assert_eq!(result["interfaces"][0]["name"], "eth0");

    let shown = ip(&["-n", &pod_netns.name, "addr", "show", "dev", "eth0"])?;
    for address in &addresses {
        assert!(
            shown.contains(&format!(" {address} ")),
            "{address} missing on eth0:\n{shown}"
        );
    }
    let routes = ip(&["-n", &pod_netns.name, "route", "show"])?;
    assert!(
        routes.contains(&format!("172.31.0.0/16 via 10.{third}.0.1")),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("default via 10.{third}.0.1")),
        "{routes}"
    );
    assert_eq!(pool_records(&client, &v4).await?.len(), 1);
    assert_eq!(pool_records(&client, &v6).await?.len(), 1);

    // The pod goes; DEL through macvlan removes eth0 and frees both addresses.
    delete_pod_now(&client, &pod.namespace, &pod.name).await?;
    let output = tokio::task::block_in_place(|| macvlan("DEL", &host, &pod_netns, &pod, &config))?;
    ensure!(output.success, "DEL failed: {output:?}");
    let links = ip(&["-n", &pod_netns.name, "link", "show"])?;
    assert!(!links.contains("eth0"), "{links}");
    assert!(pool_records(&client, &v4).await?.is_empty());
    assert!(pool_records(&client, &v6).await?.is_empty());

    delete_pools(&client, &[v4, v6]).await;
    node.delete(&client).await?;
    namespace.delete().await
}
