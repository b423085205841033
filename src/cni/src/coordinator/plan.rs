//! Pure decisions of the coordinator: effective mode and policy table of the current NIC, host veth name,
//! host interfaces whose addresses the pod must reach via the veth, MAC rewrite, and which NIC's routes move
//! out of the main table.

use std::net::IpAddr;

use super::config::Mode;
use crate::protocol::CniError;

/// Pod-side name of the underlay veth pair.
pub const UNDERLAY_VETH: &str = "veth0";
/// Table kept for the first NIC (and the reply-via-veth mark rule upstream); the first other NIC gets 101.
pub const DEFAULT_POD_RULE_TABLE: u32 = 100;
/// Priority of the host's `from all lookup <hostRuleTable>` rule.
pub const HOST_RULE_PRIORITY: u32 = 1000;

/// The mode after resolving `auto`, whether this is the NIC that sets up the veth (first invoke), and the
/// policy-routing table of the current NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeDecision {
    pub mode: Mode,
    pub first_invoke: bool,
    pub rule_table: u32,
}

/// Upstream `coordinatorModeAndFirstInvoke`. `up_links` counts the pod's links that are up, broadcast and
/// multicast (so not `lo`), including the current NIC and `veth0`.
pub fn resolve_mode(
    mode: Mode,
    current_nic: &str,
    pod_first_nic: &str,
    veth0_exists: bool,
    up_links: u32,
) -> Result<ModeDecision, CniError> {
    let mode = match mode {
        Mode::Auto if current_nic == pod_first_nic || veth0_exists => Mode::Underlay,
        Mode::Auto => Mode::Overlay,
        other => other,
    };
    match mode {
        Mode::Underlay => {
            let first_invoke = current_nic == pod_first_nic;
            if !first_invoke && !veth0_exists {
                return Err(CniError::plugin(format!(
                    "when creating interface {current_nic} in underlay mode, it detects that the auxiliary interface \
                     {pod_first_nic} was not created by previous interface. please enable coordinator plugin in previous interface"
                )));
            }
            // veth0, eth0, net1, net2: net2 gets 4 + 98 = 102; the first NIC 101.
            let rule_table = if first_invoke {
                DEFAULT_POD_RULE_TABLE + 1
            } else {
                up_links + 98
            };
            Ok(ModeDecision {
                mode,
                first_invoke,
                rule_table,
            })
        }
        Mode::Overlay => {
            if current_nic == pod_first_nic {
                return Err(CniError::plugin(format!(
                    "when creating interface {current_nic} in overlay mode, it detects that the current interface is \
                     first interface named {pod_first_nic}, this plugin should not work for it. please modify in the CNI configuration"
                )));
            }
            if veth0_exists {
                return Err(CniError::plugin(format!(
                    "when creating interface {current_nic} in overlay mode, it detects that the auxiliary interface \
                     {UNDERLAY_VETH} of underlay mode exists. It seems that the previous interface work in underlay mode."
                )));
            }
            // eth0, net1: first invoke, table 101; eth0, net1, net2: net2 gets 3 + 99 = 102.
            let first_invoke = up_links == 2;
            let rule_table = if first_invoke {
                DEFAULT_POD_RULE_TABLE + 1
            } else {
                up_links + 99
            };
            Ok(ModeDecision {
                mode,
                first_invoke,
                rule_table,
            })
        }
        Mode::Disable | Mode::Auto => Ok(ModeDecision {
            mode: Mode::Disable,
            first_invoke: false,
            rule_table: 0,
        }),
    }
}

/// Host side of the underlay veth: `veth` + the first 11 characters of the container id.
pub fn host_veth_name(container_id: &str) -> String {
    let short: String = container_id.chars().take(11).collect();
    format!("veth{short}")
}

/// Host interfaces whose addresses are not routed to the pod (upstream `DefaultNodeInterfacesToExclude`).
pub fn is_excluded_host_interface(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "docker",
        "cbr",
        "dummy",
        "virbr",
        "lxcbr",
        "veth",
        "cali",
        "flannel",
        "kube-ipvs",
        "cni",
        "vx-submariner",
        "cili",
    ];
    name == "lo" || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// The pod NIC's new MAC: the two prefix bytes, then the last four bytes of its first address.
pub fn mac_with_prefix(prefix: [u8; 2], address: IpAddr) -> [u8; 6] {
    let suffix: [u8; 4] = match address {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let octets = v6.octets();
            [octets[12], octets[13], octets[14], octets[15]]
        }
    };
    [
        prefix[0], prefix[1], suffix[0], suffix[1], suffix[2], suffix[3],
    ]
}

/// Which NIC keeps the main-table default route, whose addresses get the policy rules, and whose routes
/// move into the current NIC's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuneDecision {
    /// NIC whose addresses get `from <ip> lookup <table>` (and `to <ip>/<prefix> lookup <table>`).
    pub rule_nic: String,
    /// NIC whose main-table routes move into the table (default routes deleted from main, others copied).
    pub move_nic: String,
    /// The NIC that keeps (or takes) the main-table default route.
    pub default_route_nic: String,
}

/// Upstream `tunePodRoutes`. `detected_default` is the first NIC other than the current one with a
/// main-table default route; `configured` is `podDefaultRouteNic` (NAD, annotation or SpiderCoordinator).
/// `None` means nothing to tune (no other NIC has a default route).
pub fn decide_tune(
    current_nic: &str,
    configured: Option<&str>,
    detected_default: Option<&str>,
    configured_exists: bool,
) -> Result<Option<TuneDecision>, CniError> {
    let Some(detected) = detected_default else {
        return Ok(None);
    };
    match configured {
        None => Ok(Some(TuneDecision {
            rule_nic: current_nic.to_string(),
            move_nic: current_nic.to_string(),
            default_route_nic: detected.to_string(),
        })),
        Some(configured) if configured == detected => Ok(Some(TuneDecision {
            rule_nic: current_nic.to_string(),
            move_nic: current_nic.to_string(),
            default_route_nic: detected.to_string(),
        })),
        Some(configured) => {
            if !configured_exists {
                return Err(CniError::plugin(format!(
                    "podDefaultRouteNIC: {configured} don't exist in pod"
                )));
            }
            // The configured NIC keeps the main table: the previous default NIC's routes move out, and its
            // addresses get the rules; if the current NIC is the configured one it takes the default route.
            Ok(Some(TuneDecision {
                rule_nic: if configured == current_nic {
                    detected.to_string()
                } else {
                    current_nic.to_string()
                },
                move_nic: detected.to_string(),
                default_route_nic: configured.to_string(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_nic_in_auto_mode_is_underlay_with_table_101() {
        let decision = resolve_mode(Mode::Auto, "eth0", "eth0", false, 1).unwrap();
        assert_eq!(
            decision,
            ModeDecision {
                mode: Mode::Underlay,
                first_invoke: true,
                rule_table: 101
            }
        );
    }

    #[test]
    fn second_underlay_nic_counts_links_like_upstream() {
        // eth0, veth0 and net1 are up: net1 gets 3 + 98 = 101.
        let decision = resolve_mode(Mode::Auto, "net1", "eth0", true, 3).unwrap();
        assert_eq!(
            decision,
            ModeDecision {
                mode: Mode::Underlay,
                first_invoke: false,
                rule_table: 101
            }
        );
        let decision = resolve_mode(Mode::Underlay, "net2", "eth0", true, 4).unwrap();
        assert_eq!(decision.rule_table, 102);
    }

    #[test]
    fn overlay_second_nic_without_veth0() {
        let decision = resolve_mode(Mode::Auto, "net1", "eth0", false, 2).unwrap();
        assert_eq!(
            decision,
            ModeDecision {
                mode: Mode::Overlay,
                first_invoke: true,
                rule_table: 101
            }
        );
        assert_eq!(
            resolve_mode(Mode::Overlay, "net2", "eth0", false, 3)
                .unwrap()
                .rule_table,
            102
        );
    }

    #[test]
    fn impossible_mode_combinations_fail() {
        assert!(resolve_mode(Mode::Underlay, "net1", "eth0", false, 2).is_err());
        assert!(resolve_mode(Mode::Overlay, "eth0", "eth0", false, 1).is_err());
        assert!(resolve_mode(Mode::Overlay, "net1", "eth0", true, 3).is_err());
    }

    #[test]
    fn host_veth_name_uses_eleven_characters_of_the_container_id() {
        assert_eq!(host_veth_name("0123456789abcdef"), "veth0123456789a");
        assert_eq!(host_veth_name("abc"), "vethabc");
    }

    #[test]
    fn excluded_host_interfaces() {
        for name in [
            "lo",
            "veth1234",
            "cali0",
            "docker0",
            "cilium_host",
            "kube-ipvs0",
            "cni0",
        ] {
            assert!(is_excluded_host_interface(name), "{name}");
        }
        for name in ["eth0", "ens192", "bond0.100", "up0", "local0"] {
            assert!(!is_excluded_host_interface(name), "{name}");
        }
    }

    #[test]
    fn mac_prefix_keeps_the_ip_derived_suffix() {
        assert_eq!(
            mac_with_prefix([0x0a, 0x1b], "10.6.168.173".parse().unwrap()),
            [0x0a, 0x1b, 10, 6, 168, 173]
        );
        assert_eq!(
            mac_with_prefix([0x0a, 0x1b], "fd00::1:a8ad".parse().unwrap()),
            [0x0a, 0x1b, 0, 1, 0xa8, 0xad]
        );
    }

    #[test]
    fn tune_moves_the_current_nic_by_default() {
        let decision = decide_tune("net1", None, Some("eth0"), false)
            .unwrap()
            .unwrap();
        assert_eq!(
            decision,
            TuneDecision {
                rule_nic: "net1".into(),
                move_nic: "net1".into(),
                default_route_nic: "eth0".into()
            }
        );
        assert_eq!(
            decide_tune("net1", Some("eth0"), Some("eth0"), true).unwrap(),
            Some(decision)
        );
        assert_eq!(decide_tune("net1", None, None, false).unwrap(), None);
    }

    #[test]
    fn tune_with_configured_current_nic_moves_the_old_default() {
        let decision = decide_tune("net1", Some("net1"), Some("eth0"), true)
            .unwrap()
            .unwrap();
        assert_eq!(
            decision,
            TuneDecision {
                rule_nic: "eth0".into(),
                move_nic: "eth0".into(),
                default_route_nic: "net1".into()
            }
        );
        let error = decide_tune("net1", Some("net9"), Some("eth0"), false).unwrap_err();
        assert_eq!(error.msg, "podDefaultRouteNIC: net9 don't exist in pod");
    }
}
