//! `ifacer` run as a real binary inside a test-made host namespace whose "uplinks" are veth pairs.
//! VLAN and bond creation need the 8021q and bonding kernel modules; without them those tests print a
//! SKIP line (the decisions themselves are unit-tested through `ifacer::plan`).

mod common;

use common::{Invocation, Netns, kernel_supports, plugin_binary, require_netns, run_plugin};
use serde_json::{Value, json};

/// A host namespace with uplinks `up0` and `up1` (veth pairs whose peers stay in the same namespace).
fn host_with_uplinks() -> Netns {
    let host = Netns::new("ifacer-host");
    host.ip(&[
        "link", "add", "up0", "type", "veth", "peer", "name", "up0-peer",
    ]);
    host.ip(&[
        "link", "add", "up1", "type", "veth", "peer", "name", "up1-peer",
    ]);
    for link in ["up0-peer", "up1-peer", "up1"] {
        host.ip(&["link", "set", link, "up"]);
    }
    host
}

fn invocation(command: &str) -> Invocation {
    Invocation {
        command: command.into(),
        container_id: "ifacer-test".into(),
        netns: Some("/var/run/netns/unused-by-ifacer".into()),
        ifname: "net1".into(),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0".into(),
    }
}

fn ifacer(host: &Netns, config: Value) -> common::PluginOutput {
    run_plugin(
        Some(host),
        &plugin_binary("ifacer"),
        &invocation("ADD"),
        &config.to_string(),
    )
}

fn skip_without(kind: &str, module: &str, test: &str) -> bool {
    if kernel_supports(kind) {
        return false;
    }
    eprintln!(
        "SKIP: {test}: kernel lacks {module} (`ip link add ... type {kind}` fails: Unknown device type)"
    );
    true
}

#[test]
fn ifacer_without_vlan_on_one_master_changes_nothing_and_passes_prev_result() {
    require_netns("ifacer_without_vlan_on_one_master_changes_nothing_and_passes_prev_result");
    let host = host_with_uplinks();
    let before = host.ip(&["-o", "link", "show"]);
    let prev =
        json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.6.168.173/16"}],"dns":{}});
    let output = ifacer(
        &host,
        json!({"cniVersion":"0.3.1","name":"macvlan","type":"ifacer","interfaces":["up0"],"prevResult":prev}),
    );
    assert!(output.success, "{output:?}");
    assert_eq!(output.json(), prev, "prevResult passes through");
    let output = ifacer(
        &host,
        json!({"cniVersion":"1.0.0","name":"macvlan","type":"ifacer","interfaces":["up0"]}),
    );
    assert_eq!(
        output.stdout.trim(),
        r#"{"cniVersion":"1.0.0","dns":{}}"#,
        "empty result of the requested version"
    );
    assert_eq!(host.ip(&["-o", "link", "show"]), before, "no link changed");
}

#[test]
fn ifacer_fails_clearly_when_the_master_is_missing() {
    require_netns("ifacer_fails_clearly_when_the_master_is_missing");
    let host = host_with_uplinks();
    let output = ifacer(
        &host,
        json!({"cniVersion":"0.3.1","name":"m","vlanID":100,"type":"ifacer","interfaces":["ens192"]}),
    );
    assert!(!output.success);
    assert_eq!(output.error_code(), Some(100));
    assert_eq!(
        output.error_msg(),
        "master interface ens192 does not exist on the host"
    );
    let output = ifacer(
        &host,
        json!({"cniVersion":"0.3.1","name":"m","vlanID":10,"type":"ifacer","interfaces":["up0","eth9"],
               "bond":{"name":"bond0","mode":1,"options":""}}),
    );
    assert_eq!(
        output.error_msg(),
        "bond port interface eth9 does not exist on the host"
    );
    assert!(!host.has_link("ens192.100") && !host.has_link("bond0"));
}

#[test]
fn ifacer_reports_missing_vlan_support_clearly() {
    let test = "ifacer_reports_missing_vlan_support_clearly";
    require_netns(test);
    if kernel_supports("vlan") {
        eprintln!(
            "SKIP: {test}: this kernel supports VLANs (covered by ifacer_creates_vlan_idempotently)"
        );
        return;
    }
    let host = host_with_uplinks();
    let output = ifacer(
        &host,
        json!({"cniVersion":"0.3.1","name":"m","vlanID":100,"type":"ifacer","interfaces":["up0"]}),
    );
    assert!(!output.success);
    assert_eq!(output.error_code(), Some(101));
    assert_eq!(
        output.error_msg(),
        "failed to create vlan interface up0.100: the kernel does not support VLAN devices (8021q module missing)"
    );
    // The down master was brought up before the VLAN was attempted.
    assert!(host.ip(&["link", "show", "up0"]).contains(",UP"));
}

#[test]
fn ifacer_creates_vlan_idempotently_and_brings_a_down_master_up() {
    let test = "ifacer_creates_vlan_idempotently_and_brings_a_down_master_up";
    require_netns(test);
    if skip_without("vlan", "8021q", test) {
        return;
    }
    let host = host_with_uplinks();
    let config =
        json!({"cniVersion":"0.3.1","name":"m","vlanID":100,"type":"ifacer","interfaces":["up0"]});
    for _ in 0..2 {
        let output = ifacer(&host, config.clone());
        assert!(output.success, "{output:?}");
    }
    let details = host.ip(&["-d", "link", "show", "up0.100"]);
    assert!(details.contains("vlan protocol 802.1Q id 100"), "{details}");
    assert!(details.contains(",UP"), "{details}");
    assert!(host.ip(&["link", "show", "up0"]).contains(",UP"));
    host.ip(&["link", "set", "up0.100", "down"]);
    assert!(ifacer(&host, config).success);
    assert!(
        host.ip(&["link", "show", "up0.100"]).contains(",UP"),
        "existing VLAN set up again"
    );
}

#[test]
fn ifacer_refuses_a_vlan_id_already_used_by_another_interface() {
    let test = "ifacer_refuses_a_vlan_id_already_used_by_another_interface";
    require_netns(test);
    if skip_without("vlan", "8021q", test) {
        return;
    }
    let host = host_with_uplinks();
    host.ip(&[
        "link", "add", "link", "up0", "name", "other100", "type", "vlan", "id", "100",
    ]);
    let output = ifacer(
        &host,
        json!({"cniVersion":"0.3.1","name":"m","vlanID":100,"type":"ifacer","interfaces":["up0"]}),
    );
    assert!(!output.success);
    assert!(
        output
            .error_msg()
            .starts_with("cannot have multiple different vlan interfaces with the same vlanId 100")
    );
    assert!(!host.has_link("up0.100"));
}

#[test]
fn ifacer_creates_bond_and_vlan_on_it() {
    let test = "ifacer_creates_bond_and_vlan_on_it";
    require_netns(test);
    if skip_without("bond", "bonding", test) || skip_without("vlan", "8021q", test) {
        return;
    }
    let host = host_with_uplinks();
    let config = json!({"cniVersion":"0.3.1","name":"m","vlanID":10,"type":"ifacer","interfaces":["up0","up1"],
                        "bond":{"name":"bond0","mode":1,"options":"miimon=100;primary=up1"}});
    for _ in 0..2 {
        let output = ifacer(&host, config.clone());
        assert!(output.success, "{output:?}");
    }
    let bond = host.ip(&["-d", "link", "show", "bond0"]);
    assert!(
        bond.contains("mode active-backup") && bond.contains("miimon 100"),
        "{bond}"
    );
    assert!(host.ip(&["link", "show", "up0"]).contains("master bond0"));
    assert!(
        host.ip(&["-d", "link", "show", "bond0.10"])
            .contains("id 10")
    );
}
