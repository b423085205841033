//! Golden NAD outputs: contract §3.7 items 1–20 and golden cases G57–G66. Each SMC is written
//! as a user would `kubectl apply` it; the expected config is the exact upstream string.

use super::*;

fn smc(yaml: &str) -> SpiderMultusConfig {
    match serde_yaml::from_str(yaml) {
        Ok(smc) => smc,
        Err(error) => panic!("bad test SMC: {error}\n{yaml}"),
    }
}

fn config_of(yaml: &str) -> String {
    match render(&smc(yaml)) {
        Ok(nad) => nad.config.unwrap_or_default(),
        Err(error) => panic!("render failed: {error}"),
    }
}

const COORDINATOR: &str =
    r#"{"txQueueLen":0,"tunePodRoutes":true,"mode":"auto","type":"coordinator"}"#;

#[test]
fn macvlan_with_one_master_renders_main_plugin_and_coordinator() {
    // §3.7 item 1, G58
    let config = config_of(
        "metadata: {name: macvlan-ens192, namespace: kube-system}
spec: {cniType: macvlan, macvlan: {master: [ens192]}}",
    );
    assert_eq!(
        config,
        format!(
            r#"{{"cniVersion":"0.3.1","name":"macvlan-ens192","plugins":[{{"type":"macvlan","master":"ens192","mode":"bridge","mtu":0,"ipam":{{"type":"spiderpool"}}}},{COORDINATOR}]}}"#
        )
    );
}

#[test]
fn default_pools_become_ipam_default_pools() {
    // §3.7 item 2
    let config = config_of(
        "metadata: {name: m}
spec: {cniType: macvlan, macvlan: {master: [ens192], ippools: {ipv4: [v4-pool], ipv6: [v6-pool]}}}",
    );
    assert!(
        config.contains(r#""ipam":{"type":"spiderpool","default_ipv4_ippool":["v4-pool"],"default_ipv6_ippool":["v6-pool"]}"#),
        "{config}"
    );
}

#[test]
fn macvlan_with_vlan_id_prepends_ifacer_and_suffixes_master() {
    // §3.7 item 3, G59
    let config = config_of(
        "metadata: {name: macvlan-vlan100}
spec: {cniType: macvlan, macvlan: {master: [ens192], vlanID: 100}}",
    );
    assert_eq!(
        config,
        format!(
            r#"{{"cniVersion":"0.3.1","name":"macvlan-vlan100","plugins":[{{"vlanID":100,"type":"ifacer","interfaces":["ens192"]}},{{"type":"macvlan","master":"ens192.100","mode":"bridge","mtu":0,"ipam":{{"type":"spiderpool"}}}},{COORDINATOR}]}}"#
        )
    );
}

#[test]
fn macvlan_bond_with_vlan_and_no_coordinator_has_exactly_two_plugins() {
    // §3.7 item 4, G60
    let config = config_of(
        "metadata: {name: macvlan-bond}
spec: {cniType: macvlan, enableCoordinator: false, macvlan: {master: [eth0, eth1], vlanID: 10, bond: {name: ens1, mode: 0}}}",
    );
    assert_eq!(
        config,
        r#"{"cniVersion":"0.3.1","name":"macvlan-bond","plugins":[{"vlanID":10,"type":"ifacer","interfaces":["eth0","eth1"],"bond":{"name":"ens1","mode":0,"options":""}},{"type":"macvlan","master":"ens1.10","mode":"bridge","mtu":0,"ipam":{"type":"spiderpool"}}]}"#
    );
}

#[test]
fn ipvlan_has_no_mode_field() {
    // §3.7 item 5
    let config = config_of(
        "metadata: {name: ipvlan-ens192}
spec: {cniType: ipvlan, ipvlan: {master: [ens192]}}",
    );
    assert_eq!(
        config,
        format!(
            r#"{{"cniVersion":"0.3.1","name":"ipvlan-ens192","plugins":[{{"type":"ipvlan","master":"ens192","mtu":0,"ipam":{{"type":"spiderpool"}}}},{COORDINATOR}]}}"#
        )
    );
}

#[test]
fn vlan_manual_mode_emits_camel_case_vlan_id() {
    // §3.7 item 6
    let config = config_of(
        "metadata: {name: vlan-ens192}
spec: {cniType: vlan, vlan: {master: [ens192], vlanID: 100}}",
    );
    assert_eq!(
        config,
        format!(
            r#"{{"cniVersion":"0.3.1","name":"vlan-ens192","plugins":[{{"type":"vlan","master":"ens192","vlanMode":"manual","vlanId":100,"mtu":0,"ipam":{{"type":"spiderpool"}}}},{COORDINATOR}]}}"#
        )
    );
}

#[test]
fn vlan_over_bond_gets_ifacer_without_vlan_id() {
    // §3.7 item 7
    let config = config_of(
        "metadata: {name: vlan-bond100}
spec: {cniType: vlan, enableCoordinator: false, vlan: {master: [ens192, ens224], vlanID: 100, mtu: 1480, bond: {name: bond0, mode: 1, options: \"\"}}}",
    );
    assert_eq!(
        config,
        r#"{"cniVersion":"0.3.1","name":"vlan-bond100","plugins":[{"type":"ifacer","interfaces":["ens192","ens224"],"bond":{"name":"bond0","mode":1,"options":""}},{"type":"vlan","master":"bond0","vlanMode":"manual","vlanId":100,"mtu":1480,"ipam":{"type":"spiderpool"}}]}"#
    );
}

#[test]
fn vlan_auto_mode_omits_vlan_id() {
    // §3.7 item 8, G48
    let config = config_of(
        "metadata: {name: vlan-auto}
spec: {cniType: vlan, enableCoordinator: false, vlan: {master: [eth0], vlanMode: auto}}",
    );
    assert_eq!(
        config,
        r#"{"cniVersion":"0.3.1","name":"vlan-auto","plugins":[{"type":"vlan","master":"eth0","vlanMode":"auto","mtu":0,"ipam":{"type":"spiderpool"}}]}"#
    );
}

#[test]
fn sriov_sets_resource_name_annotation_and_zero_rates() {
    // §3.7 item 9, G61
    let nad = render(&smc(
        "metadata: {name: sriov-demo}
spec: {cniType: sriov, sriov: {resourceName: spidernet.io/sriov_netdeivce, vlanID: 100}}",
    ))
    .expect("renders");
    assert_eq!(
        nad.config.as_deref(),
        Some(format!(r#"{{"cniVersion":"0.3.1","name":"sriov-demo","plugins":[{{"vlan":100,"min_tx_rate":0,"max_tx_rate":0,"type":"sriov","ipam":{{"type":"spiderpool"}}}},{COORDINATOR}]}}"#).as_str())
    );
    assert_eq!(
        nad.annotations
            .get(constants::MULTUS_RESOURCE_NAME)
            .map(String::as_str),
        Some("spidernet.io/sriov_netdeivce")
    );
}

#[test]
fn sriov_with_rdma_and_mtu_puts_rdma_after_main_and_tuning_last() {
    // §3.7 item 10, G62
    let config = config_of(
        "metadata: {name: sriov-rdma-mtu}
spec: {cniType: sriov, sriov: {resourceName: spidernet.io/test, rdmaIsolation: true, mtu: 8000, minTxRateMbps: 100, maxTxRateMbps: 1000, vlanID: 100}}",
    );
    assert_eq!(
        config,
        format!(
            r#"{{"cniVersion":"0.3.1","name":"sriov-rdma-mtu","plugins":[{{"vlan":100,"min_tx_rate":100,"max_tx_rate":1000,"type":"sriov","ipam":{{"type":"spiderpool"}}}},{{"type":"rdma"}},{COORDINATOR},{{"type":"tuning","mtu":8000}}]}}"#
        )
    );
}

#[test]
fn sriov_match_master_subnet_is_written_to_ipam() {
    // §3.7 item 11
    let config = config_of(
        "metadata: {name: sriov-rail}
spec: {cniType: sriov, enableCoordinator: false, sriov: {resourceName: r, ippools: {ipv4: [\"rdmarail1-*\"], matchMasterSubnet: true}}}",
    );
    assert_eq!(
        config,
        r#"{"cniVersion":"0.3.1","name":"sriov-rail","plugins":[{"vlan":0,"min_tx_rate":0,"max_tx_rate":0,"type":"sriov","ipam":{"type":"spiderpool","default_ipv4_ippool":["rdmarail1-*"],"match_master_subnet":true}}]}"#
    );
}

#[test]
fn match_master_subnet_is_ignored_outside_sriov() {
    let config = config_of(
        "metadata: {name: ipoib}
spec: {cniType: ipoib, enableCoordinator: false, ipoib: {master: ibs5f0, ippools: {matchMasterSubnet: true}}}",
    );
    assert!(!config.contains("match_master_subnet"), "{config}");
}

#[test]
fn ib_sriov_renders_its_defaults() {
    // §3.7 item 12
    let nad = render(&smc(
        "metadata: {name: ib}
spec: {cniType: ib-sriov, enableCoordinator: false, ibsriov: {resourceName: spidernet.io/mellanoxibsriov}}",
    ))
    .expect("renders");
    assert_eq!(
        nad.config.as_deref(),
        Some(
            r#"{"cniVersion":"0.3.1","name":"ib","plugins":[{"type":"ib-sriov","pkey":"","link_state":"enable","rdmaIsolation":true,"ibKubernetesEnabled":false,"ipam":{"type":"spiderpool"}}]}"#
        )
    );
    assert_eq!(
        nad.annotations
            .get(constants::MULTUS_RESOURCE_NAME)
            .map(String::as_str),
        Some("spidernet.io/mellanoxibsriov")
    );
}

#[test]
fn ipoib_renders_master() {
    // §3.7 item 13
    let config = config_of(
        "metadata: {name: ipoib}
spec: {cniType: ipoib, enableCoordinator: false, ipoib: {master: ibs5f0}}",
    );
    assert_eq!(
        config,
        r#"{"cniVersion":"0.3.1","name":"ipoib","plugins":[{"type":"ipoib","master":"ibs5f0","ipam":{"type":"spiderpool"}}]}"#
    );
}

#[test]
fn ovs_with_trunk_and_device_id() {
    // §3.7 item 14
    let nad = render(&smc(
        "metadata: {name: ovs}
spec: {cniType: ovs, enableCoordinator: false, ovs: {bridge: br1, vlan: 30, trunk: [{minID: 10, maxID: 20}, {id: 100}], deviceID: \"0000:01:00.1\"}}",
    ))
    .expect("renders");
    assert_eq!(
        nad.config.as_deref(),
        Some(
            r#"{"cniVersion":"0.3.1","name":"ovs","plugins":[{"vlan":30,"type":"ovs","bridge":"br1","deviceID":"0000:01:00.1","ipam":{"type":"spiderpool"},"trunk":[{"minID":10,"maxID":20},{"id":100}]}]}"#
        )
    );
    assert_eq!(
        nad.annotations
            .get(constants::MULTUS_RESOURCE_NAME)
            .map(String::as_str),
        Some("ovs-cni.network.kubevirt.io/br1")
    );
}

#[test]
fn ovs_without_device_id_has_no_resource_annotation() {
    let nad = render(&smc("metadata: {name: ovs}
spec: {cniType: ovs, enableCoordinator: false, ovs: {bridge: br1}}"))
    .expect("renders");
    assert_eq!(
        nad.config.as_deref(),
        Some(
            r#"{"cniVersion":"0.3.1","name":"ovs","plugins":[{"vlan":0,"type":"ovs","bridge":"br1","ipam":{"type":"spiderpool"}}]}"#
        )
    );
    assert!(
        !nad.annotations
            .contains_key(constants::MULTUS_RESOURCE_NAME)
    );
}

#[test]
fn coordinator_policy_routes_follow_the_defaults() {
    // §3.7 item 15
    let config = config_of(
        "metadata: {name: m}
spec: {cniType: macvlan, macvlan: {master: [eth0]}, coordinator: {policyRoutes: [{dst: 10.10.0.0/16, gw: 172.18.0.1}]}}",
    );
    assert!(
        config.ends_with(r#"{"txQueueLen":0,"tunePodRoutes":true,"mode":"auto","type":"coordinator","policyRoutes":[{"dst":"10.10.0.0/16","gw":"172.18.0.1"}]}]}"#),
        "{config}"
    );
}

#[test]
fn coordinator_pod_rp_filter_is_written_when_pod_cidr_type_is_set() {
    // §3.7 item 16
    let config = config_of(
        "metadata: {name: m}
spec: {cniType: macvlan, macvlan: {master: [eth0]}, coordinator: {mode: disabled, podCIDRType: cluster}}",
    );
    assert!(
        config.ends_with(r#"{"txQueueLen":0,"tunePodRoutes":true,"mode":"disabled","type":"coordinator","podRPFilter":0}]}"#),
        "{config}"
    );
}

#[test]
fn explicit_non_zero_pod_rp_filter_is_kept_without_pod_cidr_type() {
    // Deliberate difference #2: upstream would drop the user's 2.
    let config = config_of(
        "metadata: {name: m}
spec: {cniType: macvlan, macvlan: {master: [eth0]}, coordinator: {podRPFilter: 2}}",
    );
    assert!(config.contains(r#""podRPFilter":2"#), "{config}");
}

#[test]
fn coordinator_optional_fields_render_in_struct_order() {
    let config = config_of(
        "metadata: {name: m}
spec: {cniType: macvlan, macvlan: {master: [eth0]}, coordinator: {mode: underlay, podMACPrefix: \"0a:1b\", vethLinkAddress: 169.254.100.1, vethMTU: 1400, podDefaultRouteNIC: net1, hijackCIDR: [10.233.0.0/18], txQueueLen: 1000, tunePodRoutes: false}}",
    );
    assert!(
        config.ends_with(r#"{"txQueueLen":1000,"vethLinkAddress":"169.254.100.1","vethMTU":1400,"tunePodRoutes":false,"podMACPrefix":"0a:1b","mode":"underlay","type":"coordinator","podDefaultRouteNic":"net1","hijackCIDR":["10.233.0.0/18"]}]}"#),
        "{config}"
    );
}

#[test]
fn chain_plugins_are_reencoded_with_sorted_keys_before_the_coordinator() {
    // §3.7 item 17, G65
    let config = config_of(
        r#"metadata: {name: m}
spec: {cniType: macvlan, macvlan: {master: [eth0]}, chainCNIJsonData: ['{"type":"tuning","sysctl":{"net.core.somaxconn":"4096"}}']}"#,
    );
    assert_eq!(
        config,
        format!(
            r#"{{"cniVersion":"0.3.1","name":"m","plugins":[{{"type":"macvlan","master":"eth0","mode":"bridge","mtu":0,"ipam":{{"type":"spiderpool"}}}},{{"sysctl":{{"net.core.somaxconn":"4096"}},"type":"tuning"}},{COORDINATOR}]}}"#
        )
    );
}

#[test]
fn chain_numbers_are_encoded_like_go_float64() {
    let config = config_of(
        r#"metadata: {name: m}
spec: {cniType: macvlan, enableCoordinator: false, macvlan: {master: [eth0]}, chainCNIJsonData: ['{"type":"bandwidth","ingressRate":1.0e3,"burst":0.5,"big":12345678901234567890}']}"#,
    );
    assert!(
        config.contains(
            r#"{"big":12345678901234567000,"burst":0.5,"ingressRate":1000,"type":"bandwidth"}"#
        ),
        "{config}"
    );
}

#[test]
fn html_characters_are_escaped_like_go() {
    let config = config_of(
        r#"metadata: {name: m}
spec: {cniType: macvlan, enableCoordinator: false, macvlan: {master: [eth0]}, chainCNIJsonData: ['{"type":"x","note":"a<b>&c"}']}"#,
    );
    assert!(
        config.contains(r#""note":"a\u003cb\u003e\u0026c""#),
        "{config}"
    );
}

#[test]
fn disable_ipam_drops_the_ipam_section() {
    // §3.7 item 18, G64
    let config = config_of(
        "metadata: {name: m}
spec: {cniType: macvlan, enableCoordinator: false, disableIPAM: true, macvlan: {master: [eth0]}}",
    );
    assert_eq!(
        config,
        r#"{"cniVersion":"0.3.1","name":"m","plugins":[{"type":"macvlan","master":"eth0","mode":"bridge","mtu":0}]}"#
    );
    assert!(!config.contains(r#""type":"spiderpool""#));
}

#[test]
fn cni_version_and_config_name_annotations_shape_the_envelope() {
    // §3.7 item 19, G53
    let nad = render(&smc(
        "metadata:
  name: m
  annotations: {multus.spidernet.io/cni-version: 0.4.0, cni.spidernet.io/cniconfig-name: spidernet-chainer}
spec: {cniType: macvlan, macvlan: {master: [eth0]}}",
    ))
    .expect("renders");
    assert_eq!(nad.name, "m");
    let config = nad.config.unwrap_or_default();
    assert!(
        config.starts_with(r#"{"cniVersion":"0.4.0","name":"spidernet-chainer","plugins":["#),
        "{config}"
    );
    assert_eq!(
        nad.annotations
            .get("multus.spidernet.io/cni-version")
            .map(String::as_str),
        Some("0.4.0")
    );
}

#[test]
fn cr_name_annotation_renames_the_nad() {
    let nad = render(&smc(
        "metadata: {name: m, namespace: ns, annotations: {multus.spidernet.io/cr-name: custom-nad}}
spec: {cniType: macvlan, macvlan: {master: [eth0]}}",
    ))
    .expect("renders");
    assert_eq!(
        (nad.name.as_str(), nad.namespace.as_str()),
        ("custom-nad", "ns")
    );
    assert!(
        nad.config
            .unwrap_or_default()
            .contains(r#""name":"custom-nad""#)
    );
}

#[test]
fn empty_spec_renders_no_config() {
    // §3.7 item 20, G57
    let nad = render(&smc("metadata: {name: empty}\nspec: {}")).expect("renders");
    assert_eq!(nad.config, None);
}

#[test]
fn custom_cni_is_copied_verbatim_and_ignores_chain_and_coordinator() {
    // G52
    let custom = r#"{"cniVersion":"0.3.1","name":"x", "plugins":[{"type":"bridge"}]}"#;
    let nad = render(&smc(&format!(
        "metadata: {{name: c}}\nspec: {{cniType: custom, customCNI: '{custom}', chainCNIJsonData: ['{{\"type\":\"tuning\"}}']}}"
    )))
    .expect("renders");
    assert_eq!(nad.config.as_deref(), Some(custom));
}

#[test]
fn invalid_custom_cni_is_an_error_not_a_panic() {
    let result = render(&smc(
        "metadata: {name: c}\nspec: {cniType: custom, customCNI: '{ \"invalid\" }'}",
    ));
    assert!(
        matches!(result, Err(RenderError::InvalidCustomCni { .. })),
        "{result:?}"
    );
}

#[test]
fn invalid_chain_data_is_an_error_not_a_panic() {
    let result = render(&smc(
        "metadata: {name: c}\nspec: {cniType: macvlan, macvlan: {master: [eth0]}, chainCNIJsonData: ['{ \"invalid\" }']}",
    ));
    assert!(
        matches!(result, Err(RenderError::InvalidChainData { index: 0, .. })),
        "{result:?}"
    );
}

#[test]
fn missing_section_and_bond_are_errors() {
    let result = render(&smc(
        "metadata: {name: c}\nspec: {cniType: ipvlan, macvlan: {master: [eth0]}}",
    ));
    assert_eq!(
        result,
        Err(RenderError::MissingSection {
            section: "ipvlan",
            cni_type: CniType::Ipvlan
        })
    );
    let result = render(&smc(
        "metadata: {name: c}\nspec: {cniType: macvlan, macvlan: {master: [eth0, eth1]}}",
    ));
    assert_eq!(result, Err(RenderError::MissingBond { section: "macvlan" }));
}

#[test]
fn annotations_are_copied_except_last_applied_configuration() {
    let nad = render(&smc("metadata:
  name: m
  annotations: {team: net, kubectl.kubernetes.io/last-applied-configuration: '{}'}
spec: {cniType: macvlan, macvlan: {master: [eth0]}}"))
    .expect("renders");
    assert_eq!(nad.annotations.get("team").map(String::as_str), Some("net"));
    assert!(!nad.annotations.contains_key(LAST_APPLIED));
}
