//! The plugin binaries speak the CNI protocol: VERSION, error JSON with spec codes on stdout, nothing else on
//! stdout, pass-through results. None of these need root or a network namespace.

mod common;

use common::{Invocation, plugin_binary, run_plugin};
use serde_json::json;

fn invocation(command: &str) -> Invocation {
    Invocation {
        command: command.into(),
        container_id: "0123456789abcdef".into(),
        netns: Some("/var/run/netns/spcni-does-not-exist".into()),
        ifname: "net1".into(),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0".into(),
    }
}

#[test]
fn version_lists_supported_versions_for_every_binary() {
    for plugin in ["ifacer", "coordinator"] {
        let output = run_plugin(
            None,
            &plugin_binary(plugin),
            &invocation("VERSION"),
            r#"{"cniVersion":"1.0.0"}"#,
        );
        assert!(output.success, "{plugin}: {output:?}");
        assert_eq!(
            output.json(),
            json!({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
        );
    }
}

#[test]
fn missing_environment_is_error_code_4_on_stdout() {
    let mut bad = invocation("ADD");
    bad.netns = None;
    let output = run_plugin(
        None,
        &plugin_binary("coordinator"),
        &bad,
        r#"{"cniVersion":"0.3.1","type":"coordinator"}"#,
    );
    assert!(!output.success);
    assert_eq!(output.error_code(), Some(4));
    assert_eq!(
        output.error_msg(),
        "required env variables [CNI_NETNS] missing"
    );
}

#[test]
fn undecodable_config_is_error_code_6_and_unknown_version_code_1() {
    let output = run_plugin(
        None,
        &plugin_binary("ifacer"),
        &invocation("ADD"),
        "{not json",
    );
    assert_eq!(output.error_code(), Some(6), "{output:?}");
    let output = run_plugin(
        None,
        &plugin_binary("ifacer"),
        &invocation("ADD"),
        r#"{"cniVersion":"0.2.0","type":"ifacer"}"#,
    );
    assert_eq!(output.error_code(), Some(1), "{output:?}");
    assert!(
        output
            .error_msg()
            .contains("unsupported specified CNI version")
    );
}

#[test]
fn invalid_ifacer_config_is_error_code_7() {
    let config = r#"{"cniVersion":"0.3.1","name":"n","type":"ifacer","interfaces":["ens192"],"vlanID":5000}"#;
    let output = run_plugin(None, &plugin_binary("ifacer"), &invocation("ADD"), config);
    assert!(!output.success);
    assert_eq!(output.error_code(), Some(7));
    assert_eq!(
        output.error_msg(),
        "invalid vlan tag 5000: vlan tag must be in range [0,4094]"
    );
    assert_eq!(output.json()["cniVersion"], "0.3.1");
}

#[test]
fn ifacer_del_and_check_succeed_silently() {
    let config =
        r#"{"cniVersion":"1.0.0","name":"n","type":"ifacer","interfaces":["ens192"],"vlanID":100}"#;
    for command in ["DEL", "CHECK"] {
        let output = run_plugin(None, &plugin_binary("ifacer"), &invocation(command), config);
        assert!(output.success, "{command}: {output:?}");
        assert_eq!(output.stdout, "", "{command} prints nothing");
    }
}

#[test]
fn coordinator_disabled_mode_passes_prev_result_through_converted() {
    // `disabled` is the CRD spelling; upstream's plugin only knew `disable` (deliberate difference #1).
    for mode in ["disabled", "disable"] {
        let config = json!({
            "cniVersion": "1.0.0", "name": "macvlan-ens192", "type": "coordinator", "mode": mode,
            "prevResult": {"cniVersion": "0.3.1", "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/x"}],
                "ips": [{"version": "4", "interface": 0, "address": "10.7.168.173/16", "gateway": "10.7.0.1"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.7.0.1"}], "dns": {}}
        });
        let output = run_plugin(
            None,
            &plugin_binary("coordinator"),
            &invocation("ADD"),
            &config.to_string(),
        );
        assert!(output.success, "{mode}: {output:?}");
        assert_eq!(
            output.stdout.trim(),
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"net1","sandbox":"/var/run/netns/x"}],"ips":[{"interface":0,"address":"10.7.168.173/16","gateway":"10.7.0.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.7.0.1"}],"dns":{}}"#
        );
        let output = run_plugin(
            None,
            &plugin_binary("coordinator"),
            &invocation("DEL"),
            &config.to_string(),
        );
        assert!(output.success && output.stdout.is_empty(), "{output:?}");
    }
}

#[test]
fn coordinator_without_prev_result_is_a_config_error() {
    let config = r#"{"cniVersion":"0.3.1","name":"n","type":"coordinator","mode":"underlay"}"#;
    let output = run_plugin(
        None,
        &plugin_binary("coordinator"),
        &invocation("ADD"),
        config,
    );
    assert_eq!(output.error_code(), Some(7), "{output:?}");
}

#[test]
fn coordinator_unknown_mode_is_rejected() {
    let config = r#"{"cniVersion":"0.3.1","name":"n","type":"coordinator","mode":"sideways","prevResult":{"cniVersion":"0.3.1"}}"#;
    let output = run_plugin(
        None,
        &plugin_binary("coordinator"),
        &invocation("ADD"),
        config,
    );
    assert_eq!(output.error_code(), Some(7));
    assert!(output.error_msg().starts_with("unknown tuneMode: sideways"));
}

#[test]
fn coordinator_rejects_unknown_cni_args_without_ignore_unknown() {
    let mut bad = invocation("ADD");
    bad.args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;FOO=bar".into();
    let config = r#"{"cniVersion":"0.3.1","name":"n","type":"coordinator","mode":"disabled"}"#;
    let output = run_plugin(None, &plugin_binary("coordinator"), &bad, config);
    assert_eq!(output.error_code(), Some(4), "{output:?}");
    assert_eq!(
        output.error_msg(),
        r#"failed to load CNI ENV args: ARGS: unknown args ["FOO=bar"]"#
    );
}
