//! `coordinator` in a full chain: our `ifacer` → Debian's `macvlan` (master = a veth in the test's host
//! namespace, addresses from Debian's `static` IPAM) → our `coordinator`, for a two-NIC pod laid out like the
//! Spiderpool multi-NIC documentation (seed 002): eth0 10.6.168.173/16 and net1 10.7.168.173/16, node
//! address 10.6.168.123, service CIDR 10.96.0.0/12.
//!
//! Topology (all namespaces made by the test and deleted on drop):
//!   gateway ns: gw0 10.6.0.1/16, gw1 10.7.0.1/16
//!   host ns:    up0 10.6.168.123/16 (peer gw0, default route via 10.6.0.1), up1 (peer gw1)
//!   pod ns:     eth0 = macvlan on up0, net1 = macvlan on up1, veth0 (peer on the host)
//!
//! The IPv6 tests (NDP checks and announcements) add fd00:6::1/64 on gw0 and fd00:6::123/64 on up0.

mod common;

use common::{
    Chain, Invocation, Netns, normalise, require_debian_plugins, require_netns, run_plugin,
    side_by_side, tcp_reachable,
};
use serde_json::{Value, json};

/// Seed 002, `ip rule show` in the pod (table 100 in the document; see `SEED_TABLE`).
const SEED_RULES: &str = "0:  from all lookup local
32764:  from 10.7.168.173 lookup 100
32765:  from all to 10.7.168.173/16 lookup 100
32766:  from all lookup main
32767:  from all lookup default";

/// Seed 002, `ip route show table 100` in the pod.
const SEED_TABLE: &str = "default via 10.7.0.1 dev net1
10.6.168.123 dev veth0 scope link
10.7.0.0/16 dev net1 proto kernel scope link src 10.7.168.173
10.96.0.0/12 via 10.6.168.123 dev veth0";

/// The seed was written when net1's table was 100; current upstream keeps 100 for eth0 and numbers the
/// first other NIC 101 (`cmd/coordinator/cmd/utils.go`: `len(links) + 98` with eth0, veth0, net1 up).
const NET1_TABLE: &str = "101";

struct Topology {
    host: Netns,
    gateway: Netns,
    pod: Netns,
}

fn topology() -> Topology {
    let host = Netns::new("host");
    let gateway = Netns::new("gw");
    let pod = Netns::new("pod");
    host.ip(&[
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "gw0",
        "netns",
        &gateway.name,
    ]);
    host.ip(&[
        "link",
        "add",
        "up1",
        "type",
        "veth",
        "peer",
        "name",
        "gw1",
        "netns",
        &gateway.name,
    ]);
    for link in ["up0", "up1"] {
        host.ip(&["link", "set", link, "up"]);
    }
    host.ip(&["addr", "add", "10.6.168.123/16", "dev", "up0"]);
    host.ip(&["route", "add", "default", "via", "10.6.0.1"]);
    gateway.ip(&["addr", "add", "10.6.0.1/16", "dev", "gw0"]);
    gateway.ip(&["addr", "add", "10.7.0.1/16", "dev", "gw1"]);
    for link in ["gw0", "gw1"] {
        gateway.ip(&["link", "set", link, "up"]);
    }
    Topology { host, gateway, pod }
}

fn macvlan(master: &str, address: &str, gateway: &str) -> Value {
    macvlan_addresses(master, &[(address, gateway)])
}

/// Debian's `macvlan` with `static` IPAM: each `(address, gateway)` pair and a default route of its family.
fn macvlan_addresses(master: &str, addresses: &[(&str, &str)]) -> Value {
    let ipam_addresses: Vec<Value> = addresses
        .iter()
        .map(|(address, gateway)| json!({"address": address, "gateway": gateway}))
        .collect();
    let routes: Vec<Value> = addresses
        .iter()
        .map(|(address, gateway)| {
            let default = if address.contains(':') {
                "::/0"
            } else {
                "0.0.0.0/0"
            };
            json!({"dst": default, "gw": gateway})
        })
        .collect();
    json!({"type": "macvlan", "master": master, "mode": "bridge", "mtu": 0,
           "ipam": {"type": "static", "addresses": ipam_addresses, "routes": routes}})
}

/// The coordinator entry every SpiderMultusConfig-generated NAD carries (contract 3.4), plus `extra`.
fn coordinator(extra: Value) -> Value {
    let mut entry =
        json!({"txQueueLen": 0, "tunePodRoutes": true, "mode": "auto", "type": "coordinator"});
    if let (Some(entry), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
        entry.extend(extra.clone());
    }
    entry
}

fn invocation(pod: &Netns, container_id: &str, ifname: &str) -> Invocation {
    Invocation {
        command: "ADD".into(),
        container_id: container_id.into(),
        netns: Some(pod.path()),
        ifname: ifname.into(),
        args: format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID=uid-1"
        ),
    }
}

fn add(chain: &Chain, topology: &Topology, invocation: &Invocation) -> Value {
    chain
        .add(&topology.host, invocation)
        .unwrap_or_else(|(plugin, output)| {
            panic!(
                "{plugin} ADD failed: {}\nstderr: {}",
                output.stdout, output.stderr
            )
        })
}

fn write_fallback(directory: &std::path::Path, body: Value) -> String {
    std::fs::create_dir_all(directory).expect("create fallback dir");
    let path = directory.join("spidercoordinator.json");
    std::fs::write(&path, body.to_string()).expect("write fallback");
    path.display().to_string()
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("spcni-{name}-{}", std::process::id())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn two_nic_pod_gets_the_policy_routing_of_seed_002_and_del_cleans_the_host() {
    let test = "two_nic_pod_gets_the_policy_routing_of_seed_002_and_del_cleans_the_host";
    require_netns(test);
    require_debian_plugins(test);
    let topology = topology();
    let files = TempDir::new("two-nic");
    // serviceCIDR is not in the NAD entry: it comes from the SpiderCoordinator fallback (its status).
    let fallback = write_fallback(
        &files.0,
        json!({"spec": {"mode": "auto"}, "status": {"serviceCIDR": ["10.96.0.0/12"]}}),
    );
    let container_id = "4f1c2d3e5a6b7c8d9e0f";
    let first = Chain::new(
        "macvlan-up0",
        "0.3.1",
        vec![
            json!({"type": "ifacer", "interfaces": ["up0"]}),
            macvlan("up0", "10.6.168.173/16", "10.6.0.1"),
            coordinator(json!({"spiderCoordinatorFile": fallback})),
        ],
    );
    let second = Chain::new(
        "macvlan-up1",
        "1.0.0",
        vec![
            macvlan("up1", "10.7.168.173/16", "10.7.0.1"),
            coordinator(json!({"spiderCoordinatorFile": fallback})),
        ],
    );
    let eth0 = invocation(&topology.pod, container_id, "eth0");
    let net1 = invocation(&topology.pod, container_id, "net1");

    let eth0_result = add(&first, &topology, &eth0);
    assert_eq!(
        eth0_result["ips"][0]["address"], "10.6.168.173/16",
        "coordinator returns prevResult"
    );
    assert_eq!(eth0_result["cniVersion"], "0.3.1");
    let net1_result = add(&second, &topology, &net1);
    assert_eq!(net1_result["ips"][0]["address"], "10.7.168.173/16");

    // --- inside the pod: compare with the seed ---
    let expected_rules: Vec<String> = normalise(SEED_RULES)
        .into_iter()
        .map(|line| line.replace("lookup 100", &format!("lookup {NET1_TABLE}")))
        .collect();
    let actual_rules = normalise(&topology.pod.ip(&["rule", "show"]));
    side_by_side(
        "ip rule show (seed table 100 -> upstream table 101)",
        &expected_rules,
        &actual_rules,
    );
    let expected_table = normalise(SEED_TABLE);
    let actual_table = normalise(&topology.pod.ip(&["route", "show", "table", NET1_TABLE]));
    side_by_side(
        &format!("ip route show table {NET1_TABLE} (seed: table 100)"),
        &expected_table,
        &actual_table,
    );
    let main = normalise(&topology.pod.ip(&["route", "show", "table", "main"]));
    eprintln!(
        "=== ip route show main (seed shows only its first line) ===\n{}",
        main.join("\n")
    );
    assert_eq!(actual_rules, expected_rules);
    assert_eq!(actual_table, expected_table);
    assert_eq!(
        main.iter()
            .filter(|line| line.starts_with("default"))
            .collect::<Vec<_>>(),
        vec!["default via 10.6.0.1 dev eth0"]
    );
    assert!(
        main.contains(&"10.6.168.123 dev veth0 scope link".to_string()),
        "{main:?}"
    );
    assert!(
        main.contains(&"10.96.0.0/12 via 10.6.168.123 dev veth0".to_string()),
        "{main:?}"
    );
    // An address in the service CIDR (from the coordinator's status) leaves through veth0 to the
    // host, not through the underlay eth0.
    let service_route = topology.pod.ip(&["route", "get", "10.96.0.10"]);
    assert!(
        service_route.contains("via 10.6.168.123 dev veth0"),
        "service address routed via veth0: {service_route}"
    );

    // --- on the host: veth, rule and per-pod routes in hostRuleTable 500 ---
    let host_veth = "veth4f1c2d3e5a6";
    assert!(topology.host.has_link(host_veth));
    let host_rules = normalise(&topology.host.ip(&["rule", "show"]));
    assert!(
        host_rules.contains(&"1000: from all lookup 500".to_string()),
        "{host_rules:?}"
    );
    let host_table = normalise(&topology.host.ip(&["route", "show", "table", "500"]));
    eprintln!(
        "=== host: ip route show table 500 ===\n{}",
        host_table.join("\n")
    );
    assert_eq!(
        host_table,
        vec![
            format!("10.6.168.173 dev {host_veth} scope link"),
            format!("10.7.168.173 dev {host_veth} scope link"),
        ]
    );
    // The node reaches both pod addresses through the veth (a TCP RST proves the round trip).
    assert!(
        tcp_reachable(&topology.host, "10.6.168.173", 9),
        "host -> eth0 address"
    );
    assert!(
        tcp_reachable(&topology.host, "10.7.168.173", 9),
        "host -> net1 address (reply via table 101)"
    );
    // And the pod reaches the outside through eth0's gateway.
    assert!(
        tcp_reachable(&topology.pod, "10.6.0.1", 9),
        "pod -> gateway"
    );

    // --- DEL (Multus order: last NIC first), twice, then once more after the pod netns is gone ---
    for _ in 0..2 {
        second
            .del(&topology.host, &net1, Some(&net1_result))
            .unwrap_or_else(|(p, o)| panic!("{p} DEL: {o:?}"));
        first
            .del(&topology.host, &eth0, Some(&eth0_result))
            .unwrap_or_else(|(p, o)| panic!("{p} DEL: {o:?}"));
    }
    assert!(!topology.host.has_link(host_veth), "host veth removed");
    assert_eq!(
        topology.host.ip(&["route", "show", "table", "500"]).trim(),
        "",
        "host routes removed"
    );
    let Topology { host, gateway, pod } = topology;
    drop(pod);
    let mut late = eth0.clone();
    late.netns = Some("/var/run/netns/spcni-never-created".into());
    // The pod netns is gone and the fallback file is unreadable: DEL still succeeds.
    let coordinator_only = Chain::new(
        "macvlan-up0",
        "0.4.0",
        vec![coordinator(
            json!({"spiderCoordinatorFile": "/nonexistent/spidercoordinator.json"}),
        )],
    );
    coordinator_only
        .del(&host, &late, Some(&eth0_result))
        .unwrap_or_else(|(p, o)| panic!("{p} DEL: {o:?}"));
    drop(gateway);
}

/// A namespace on up0's L2 (a macvlan `r0` of up0 in bridge mode) whose kernel holds an address
/// (`ip addr add <address_arguments> dev r0`) and answers for it.
fn responder_holding(topology: &Topology, address_arguments: &[&str]) -> Netns {
    let responder = Netns::new("responder");
    topology.host.ip(&[
        "link", "add", "r0", "link", "up0", "type", "macvlan", "mode", "bridge",
    ]);
    topology
        .host
        .ip(&["link", "set", "r0", "netns", &responder.name]);
    let mut add = vec!["addr", "add"];
    add.extend_from_slice(address_arguments);
    add.extend_from_slice(&["dev", "r0"]);
    responder.ip(&add);
    responder.ip(&["link", "set", "r0", "up"]);
    responder
}

/// macvlan on up0 with `address`, then the coordinator with `detectIPConflict`.
fn conflict_checking_chain(address: &str, gateway: &str) -> Chain {
    Chain::new(
        "macvlan-up0",
        "1.0.0",
        vec![
            macvlan("up0", address, gateway),
            coordinator(json!({"detectIPConflict": true})),
        ],
    )
}

#[test]
fn ip_conflict_detection_rejects_an_address_answered_by_another_host() {
    let test = "ip_conflict_detection_rejects_an_address_answered_by_another_host";
    require_netns(test);
    require_debian_plugins(test);
    let topology = topology();
    // A responder on the same L2 already holds 10.6.168.50.
    let responder = responder_holding(&topology, &["10.6.168.50/16"]);
    let chain = |address: &str| conflict_checking_chain(address, "10.6.0.1");
    let (plugin, output) = chain("10.6.168.50/16")
        .add(
            &topology.host,
            &invocation(&topology.pod, "conflict1", "eth0"),
        )
        .expect_err("conflicting address must be refused");
    assert_eq!(plugin, "coordinator");
    assert_eq!(output.error_code(), Some(102), "{output:?}");
    let responder_mac = responder.ip(&["-br", "link", "show", "r0"]);
    eprintln!(
        "conflict error: {}  (responder: {})",
        output.stdout.trim(),
        responder_mac.trim()
    );
    assert!(
        output
            .error_msg()
            .starts_with("ip conflict: 10.6.168.50 is already used by "),
        "{}",
        output.error_msg()
    );
    assert!(
        responder_mac.contains(output.error_msg().rsplit(' ').next().unwrap_or("?")),
        "MAC of the responder"
    );

    // A free address passes the same check.
    let other_pod = Netns::new("pod2");
    chain("10.6.168.51/16")
        .add(&topology.host, &invocation(&other_pod, "conflict2", "eth0"))
        .unwrap_or_else(|(p, o)| panic!("{p}: {o:?}"));
}

#[test]
fn gateway_detection_passes_with_a_live_gateway_and_fails_without_one() {
    let test = "gateway_detection_passes_with_a_live_gateway_and_fails_without_one";
    require_netns(test);
    require_debian_plugins(test);
    let topology = topology();
    let chain = |gateway: &str| {
        Chain::new(
            "macvlan-up0",
            "0.4.0",
            vec![
                macvlan("up0", "10.6.168.60/16", gateway),
                coordinator(json!({"detectGateway": true})),
            ],
        )
    };
    chain("10.6.0.1")
        .add(
            &topology.host,
            &invocation(&topology.pod, "gateway1", "eth0"),
        )
        .unwrap_or_else(|(p, o)| panic!("live gateway: {p}: {o:?}"));

    let other_pod = Netns::new("pod2");
    let (plugin, output) = chain("10.6.0.254")
        .add(&topology.host, &invocation(&other_pod, "gateway2", "eth0"))
        .expect_err("dead gateway must fail");
    assert_eq!(plugin, "coordinator");
    assert_eq!(output.error_code(), Some(103), "{output:?}");
    assert_eq!(
        output.error_msg(),
        "gateway 10.6.0.254 is unreachable from eth0"
    );
}

#[test]
fn underlay_options_are_applied_to_pod_and_veth() {
    let test = "underlay_options_are_applied_to_pod_and_veth";
    require_netns(test);
    require_debian_plugins(test);
    let topology = topology();
    let chain = Chain::new(
        "macvlan-up0",
        "1.0.0",
        vec![
            macvlan("up0", "10.6.168.173/16", "10.6.0.1"),
            coordinator(json!({
                "txQueueLen": 2000, "vethLinkAddress": "169.254.200.1", "vethMTU": 1400, "podMACPrefix": "0a:1b",
                "mode": "underlay", "podRPFilter": 2, "hijackCIDR": ["172.30.0.0/16"], "hostRuleTable": 600,
                "policyRoutes": [{"dst": "192.168.50.0/24", "gw": "10.6.0.1"}]
            })),
        ],
    );
    let container_id = "options0123456";
    let host_veth = spiderpool_cni::coordinator::plan::host_veth_name(container_id);
    assert_eq!(host_veth, "vethoptions0123");
    let eth0 = invocation(&topology.pod, container_id, "eth0");
    let result = add(&chain, &topology, &eth0);

    let link = topology.pod.ip(&["link", "show", "eth0"]);
    assert!(
        link.contains("link/ether 0a:1b:0a:06:a8:ad"),
        "MAC = prefix + IP suffix: {link}"
    );
    assert!(link.contains("qlen 2000"), "{link}");
    let veth = topology.pod.ip(&["addr", "show", "veth0"]);
    assert!(
        veth.contains("mtu 1400") && veth.contains("inet 169.254.200.1/32"),
        "{veth}"
    );
    assert!(
        topology
            .host
            .ip(&["link", "show", &host_veth])
            .contains("mtu 1400")
    );
    let rp_filter = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &topology.pod.name,
            "cat",
            "/proc/sys/net/ipv4/conf/all/rp_filter",
        ])
        .output()
        .expect("read rp_filter");
    assert_eq!(String::from_utf8_lossy(&rp_filter.stdout).trim(), "2");
    let main = normalise(&topology.pod.ip(&["route", "show"]));
    eprintln!("=== pod main table ===\n{}", main.join("\n"));
    assert!(
        main.contains(&"172.30.0.0/16 via 10.6.168.123 dev veth0".to_string()),
        "{main:?}"
    );
    assert!(
        main.contains(&"192.168.50.0/24 via 10.6.0.1 dev eth0".to_string()),
        "{main:?}"
    );
    assert!(
        normalise(&topology.host.ip(&["rule", "show"]))
            .contains(&"1000: from all lookup 600".to_string())
    );
    assert!(tcp_reachable(&topology.host, "10.6.168.173", 9));

    chain
        .del(&topology.host, &eth0, Some(&result))
        .unwrap_or_else(|(p, o)| panic!("{p}: {o:?}"));
    assert!(!topology.host.has_link(&host_veth));
    assert_eq!(
        topology.host.ip(&["route", "show", "table", "600"]).trim(),
        ""
    );
}

#[test]
fn default_route_nic_annotation_from_the_fallback_moves_the_default_route_to_net1() {
    let test = "default_route_nic_annotation_from_the_fallback_moves_the_default_route_to_net1";
    require_netns(test);
    require_debian_plugins(test);
    let topology = topology();
    let files = TempDir::new("default-route-nic");
    let fallback = write_fallback(
        &files.0,
        json!({
            "spec": {"podDefaultRouteNIC": "eth0"},
            "pods": {"default/web-0": {"annotations": {"ipam.spidernet.io/default-route-nic": "net1"}}}
        }),
    );
    let entry = coordinator(json!({"spiderCoordinatorFile": fallback}));
    let first = Chain::new(
        "a",
        "1.0.0",
        vec![macvlan("up0", "10.6.168.173/16", "10.6.0.1"), entry.clone()],
    );
    let second = Chain::new(
        "b",
        "1.0.0",
        vec![macvlan("up1", "10.7.168.173/16", "10.7.0.1"), entry],
    );
    add(&first, &topology, &invocation(&topology.pod, "drn", "eth0"));
    add(
        &second,
        &topology,
        &invocation(&topology.pod, "drn", "net1"),
    );

    let main = normalise(&topology.pod.ip(&["route", "show"]));
    let table = normalise(&topology.pod.ip(&["route", "show", "table", NET1_TABLE]));
    let rules = normalise(&topology.pod.ip(&["rule", "show"]));
    eprintln!(
        "=== main ===\n{}\n=== table {NET1_TABLE} ===\n{}\n=== rules ===\n{}",
        main.join("\n"),
        table.join("\n"),
        rules.join("\n")
    );
    assert_eq!(
        main.iter()
            .filter(|line| line.starts_with("default"))
            .collect::<Vec<_>>(),
        vec!["default via 10.7.0.1 dev net1"]
    );
    assert!(
        table.contains(&"default via 10.6.0.1 dev eth0".to_string()),
        "{table:?}"
    );
    assert!(
        rules.contains(&format!("32764: from 10.6.168.173 lookup {NET1_TABLE}")),
        "{rules:?}"
    );
}

#[test]
fn overlay_mode_uses_the_existing_eth0_veth() {
    let test = "overlay_mode_uses_the_existing_eth0_veth";
    require_netns(test);
    require_debian_plugins(test);
    let topology = topology();
    // eth0 as an overlay CNI (e.g. Calico) would leave it: a veth to the host with a /32 and a default route.
    topology.host.ip(&[
        "link",
        "add",
        "cali12345",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &topology.pod.name,
    ]);
    topology.host.ip(&["link", "set", "cali12345", "up"]);
    topology
        .pod
        .ip(&["addr", "add", "10.233.64.10/32", "dev", "eth0"]);
    topology.pod.ip(&["link", "set", "eth0", "up"]);
    topology.pod.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    topology.pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);

    let chain = Chain::new(
        "macvlan-up1",
        "1.0.0",
        vec![
            macvlan("up1", "10.7.168.173/16", "10.7.0.1"),
            coordinator(json!({"serviceCIDR": ["10.96.0.0/12"]})),
        ],
    );
    let net1 = invocation(&topology.pod, "overlay1", "net1");
    let result = add(&chain, &topology, &net1);
    let rules = normalise(&topology.pod.ip(&["rule", "show"]));
    let table = normalise(&topology.pod.ip(&["route", "show", "table", NET1_TABLE]));
    let table100 = normalise(&topology.pod.ip(&["route", "show", "table", "100"]));
    eprintln!(
        "=== overlay rules ===\n{}\n=== table {NET1_TABLE} ===\n{}\n=== table 100 ===\n{}",
        rules.join("\n"),
        table.join("\n"),
        table100.join("\n")
    );
    assert!(
        !topology.pod.has_link("veth0"),
        "overlay mode creates no veth"
    );
    assert!(
        rules.contains(&format!("32764: from 10.7.168.173 lookup {NET1_TABLE}")),
        "{rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|rule| rule.ends_with("from 10.233.64.10 lookup 100")),
        "{rules:?}"
    );
    assert!(
        table.contains(&"default via 10.7.0.1 dev net1".to_string()),
        "{table:?}"
    );
    let main = normalise(&topology.pod.ip(&["route", "show"]));
    assert!(
        main.contains(&"10.96.0.0/12 via 10.6.168.123 dev eth0".to_string()),
        "first overlay NIC: {main:?}"
    );
    assert!(
        table100.contains(&"default via 169.254.1.1 dev eth0".to_string()),
        "{table100:?}"
    );
    let host_table = normalise(&topology.host.ip(&["route", "show", "table", "500"]));
    assert_eq!(
        host_table,
        vec!["10.7.168.173 dev cali12345 scope link".to_string()]
    );

    chain
        .del(&topology.host, &net1, Some(&result))
        .unwrap_or_else(|(p, o)| panic!("{p}: {o:?}"));
    assert!(
        topology.host.has_link("cali12345"),
        "the overlay CNI's veth is not ours to delete"
    );
    assert_eq!(
        topology.host.ip(&["route", "show", "table", "500"]).trim(),
        ""
    );
}

#[test]
fn coordinator_check_finds_the_interface() {
    let test = "coordinator_check_finds_the_interface";
    require_netns(test);
    require_debian_plugins(test);
    let topology = topology();
    let chain = Chain::new(
        "c",
        "1.0.0",
        vec![
            macvlan("up0", "10.6.168.173/16", "10.6.0.1"),
            coordinator(json!({})),
        ],
    );
    let eth0 = invocation(&topology.pod, "check1", "eth0");
    let result = add(&chain, &topology, &eth0);
    let config =
        json!({"cniVersion": "1.0.0", "name": "c", "type": "coordinator", "prevResult": result});
    let check = Invocation {
        command: "CHECK".into(),
        ..eth0.clone()
    };
    let output = run_plugin(
        Some(&topology.host),
        &common::plugin_binary("coordinator"),
        &check,
        &config.to_string(),
    );
    assert!(output.success && output.stdout.is_empty(), "{output:?}");
    let missing = Invocation {
        ifname: "net7".into(),
        ..check
    };
    let output = run_plugin(
        Some(&topology.host),
        &common::plugin_binary("coordinator"),
        &missing,
        &config.to_string(),
    );
    assert!(!output.success);
    assert_eq!(
        output.error_msg(),
        "interface net7 does not exist in the pod"
    );
}

// ----- IPv6: NDP duplicate-address and gateway checks, unsolicited neighbour advertisement -----

/// [`topology`] with IPv6 on up0's link: the gateway holds fd00:6::1/64 on gw0, the node fd00:6::123/64 on
/// up0, both `nodad` so they answer solicitations at once instead of after a tentative period.
fn ipv6_topology() -> Topology {
    let topology = topology();
    topology
        .gateway
        .ip(&["addr", "add", "fd00:6::1/64", "dev", "gw0", "nodad"]);
    topology
        .host
        .ip(&["addr", "add", "fd00:6::123/64", "dev", "up0", "nodad"]);
    topology
}

fn pod_sysctl(pod: &Netns, key: &str) -> String {
    let path = std::path::Path::new("/proc/sys").join(key);
    spiderpool_cni::netns::run_in(&pod.path(), move || {
        Ok(std::fs::read_to_string(&path).expect("read sysctl"))
    })
    .expect("enter pod")
    .trim()
    .to_string()
}

fn set_pod_sysctl(pod: &Netns, key: &str, value: &'static str) {
    let path = std::path::Path::new("/proc/sys").join(key);
    spiderpool_cni::netns::run_in(&pod.path(), move || {
        std::fs::write(&path, value).expect("write sysctl");
        Ok(())
    })
    .expect("enter pod");
}

/// Turn off the kernel's own duplicate-address detection for interfaces created in `pod` (`accept_dad`
/// is copied from `default` when the main plugin creates eth0). Otherwise the kernel would flag a
/// duplicate itself and Debian's `macvlan`, which waits for addresses to leave the tentative state, would
/// fail before the coordinator runs: these tests are about the coordinator's probes.
fn without_kernel_dad(pod: &Netns) {
    for scope in ["all", "default"] {
        set_pod_sysctl(pod, &format!("net/ipv6/conf/{scope}/accept_dad"), "0");
    }
}

fn mac_of(netns: &Netns, link: &str) -> String {
    netns
        .ip(&["-br", "link", "show", "dev", link])
        .split_whitespace()
        .nth(2)
        .expect("link/ether column")
        .to_string()
}

/// The link address `netns` caches for `address` on `link`, waiting up to 5 s for it to be `expected`
/// (the kernel processes a received advertisement asynchronously).
fn neighbour_becomes(netns: &Netns, link: &str, address: &str, expected: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let entry = netns.ip(&["neigh", "show", address, "dev", link]);
        if entry.contains(expected) || std::time::Instant::now() > deadline {
            return entry.trim().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn ipv6_conflict_detection_rejects_an_address_advertised_by_another_host() {
    let test = "ipv6_conflict_detection_rejects_an_address_advertised_by_another_host";
    require_netns(test);
    require_debian_plugins(test);
    let topology = ipv6_topology();
    // A responder on the same L2 already holds fd00:6::50: its kernel answers our duplicate-address
    // solicitation with a neighbour advertisement.
    let responder = responder_holding(&topology, &["fd00:6::50/64", "nodad"]);
    without_kernel_dad(&topology.pod);
    let chain = |address: &str| conflict_checking_chain(address, "fd00:6::1");
    let (plugin, output) = chain("fd00:6::50/64")
        .add(
            &topology.host,
            &invocation(&topology.pod, "conflict6a", "eth0"),
        )
        .expect_err("an address another host advertises must be refused");
    eprintln!("conflict error: {}", output.stdout.trim());
    assert_eq!(plugin, "coordinator");
    assert_eq!(output.error_code(), Some(102), "{output:?}");
    assert_eq!(
        output.error_msg(),
        format!(
            "ip conflict: fd00:6::50 is already used by {}",
            mac_of(&responder, "r0")
        )
    );
    assert_eq!(
        output.json()["details"],
        json!("detected by an NDP probe on eth0")
    );
    let pod_address = topology.pod.ip(&["-6", "addr", "show", "dev", "eth0"]);
    assert!(
        pod_address.contains("fd00:6::50/64") && !pod_address.contains("dadfailed"),
        "the pod's kernel did not detect it (accept_dad 0): {pod_address}"
    );

    // A free address passes: the gateway answers solicitations for its own address only.
    let other_pod = Netns::new("pod2");
    without_kernel_dad(&other_pod);
    chain("fd00:6::51/64")
        .add(
            &topology.host,
            &invocation(&other_pod, "conflict6b", "eth0"),
        )
        .unwrap_or_else(|(p, o)| panic!("{p}: {o:?}"));
}

#[test]
fn ipv6_gateway_detection_passes_with_a_live_gateway_and_fails_without_one() {
    let test = "ipv6_gateway_detection_passes_with_a_live_gateway_and_fails_without_one";
    require_netns(test);
    require_debian_plugins(test);
    let topology = ipv6_topology();
    let chain = |gateway: &str, detect: bool| {
        Chain::new(
            "macvlan-up0",
            "1.0.0",
            vec![
                macvlan("up0", "fd00:6::60/64", gateway),
                coordinator(json!({"detectGateway": detect})),
            ],
        )
    };
    without_kernel_dad(&topology.pod);
    chain("fd00:6::1", true)
        .add(
            &topology.host,
            &invocation(&topology.pod, "gateway6a", "eth0"),
        )
        .unwrap_or_else(|(p, o)| panic!("live gateway: {p}: {o:?}"));
    // The gateway's kernel accepted our solicitation (hop limit, checksum, source link-layer option): it
    // learnt the pod's MAC from it.
    let pod_mac = mac_of(&topology.pod, "eth0");
    let learnt = neighbour_becomes(&topology.gateway, "gw0", "fd00:6::60", &pod_mac);
    assert!(learnt.contains(&pod_mac), "gateway's cache: {learnt:?}");

    let silent = Netns::new("pod2");
    without_kernel_dad(&silent);
    let (plugin, output) = chain("fd00:6::fe", true)
        .add(&topology.host, &invocation(&silent, "gateway6b", "eth0"))
        .expect_err("a gateway nobody answers for must fail");
    assert_eq!(plugin, "coordinator");
    assert_eq!(output.error_code(), Some(103), "{output:?}");
    assert_eq!(
        output.error_msg(),
        "gateway fd00:6::fe is unreachable from eth0"
    );
    assert_eq!(
        output.json()["details"],
        json!("no NDP reply after 3 tries")
    );

    // detectGateway off: the same silent gateway is not checked.
    let unchecked = Netns::new("pod3");
    without_kernel_dad(&unchecked);
    chain("fd00:6::fe", false)
        .add(&topology.host, &invocation(&unchecked, "gateway6c", "eth0"))
        .unwrap_or_else(|(p, o)| panic!("detection off: {p}: {o:?}"));
}

#[test]
fn mac_rewrite_is_announced_by_gratuitous_arp_and_unsolicited_neighbour_advertisement() {
    let test = "mac_rewrite_is_announced_by_gratuitous_arp_and_unsolicited_neighbour_advertisement";
    require_netns(test);
    require_debian_plugins(test);
    let topology = ipv6_topology();
    without_kernel_dad(&topology.pod);
    // The gateway still caches the pod's addresses at an old MAC, as after a pod came back with the same
    // addresses. Only an announcement with the override flag replaces a cached link address.
    const OLD_MAC: &str = "02:00:00:00:00:99";
    for address in ["fd00:6::70", "10.6.168.70"] {
        topology.gateway.ip(&[
            "neigh", "add", address, "lladdr", OLD_MAC, "dev", "gw0", "nud", "stale",
        ]);
    }
    let main_plugin = Chain::new(
        "macvlan-up0",
        "1.0.0",
        vec![macvlan_addresses(
            "up0",
            &[
                ("10.6.168.70/16", "10.6.0.1"),
                ("fd00:6::70/64", "fd00:6::1"),
            ],
        )],
    );
    let then_coordinator = Chain::new(
        "macvlan-up0",
        "1.0.0",
        vec![coordinator(json!({"podMACPrefix": "0a:1b"}))],
    );
    let eth0 = invocation(&topology.pod, "announce6", "eth0");
    let result = add(&main_plugin, &topology, &eth0);
    // Debian's macvlan turns on arp_notify for eth0, so the pod's kernel would announce the MAC change
    // itself (by gratuitous ARP; ndisc_notify would do it by NDP). With both off, the new MAC can only reach
    // the gateway by the coordinator's own messages.
    let notify_keys = [
        "net/ipv4/conf/eth0/arp_notify",
        "net/ipv6/conf/eth0/ndisc_notify",
    ];
    for key in notify_keys {
        set_pod_sysctl(&topology.pod, key, "0");
    }
    then_coordinator
        .add_after(&topology.host, &eth0, Some(result))
        .unwrap_or_else(|(p, o)| panic!("{p} ADD failed: {o:?}"));
    for key in notify_keys.into_iter().chain([
        "net/ipv4/conf/all/arp_notify",
        "net/ipv6/conf/all/ndisc_notify",
    ]) {
        assert_eq!(pod_sysctl(&topology.pod, key), "0", "{key}");
    }
    let new_mac = mac_of(&topology.pod, "eth0");
    assert!(new_mac.starts_with("0a:1b:"), "rewritten MAC: {new_mac}");
    for address in ["fd00:6::70", "10.6.168.70"] {
        let entry = neighbour_becomes(&topology.gateway, "gw0", address, &new_mac);
        eprintln!("gateway's cache after ADD: {entry}");
        assert!(
            entry.contains(&new_mac) && !entry.contains(OLD_MAC),
            "{address}: {entry}"
        );
    }
}
