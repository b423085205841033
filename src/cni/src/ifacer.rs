//! `ifacer`: creates, on the host, the VLAN sub-interface and/or bond that the next plugin in the chain
//! (macvlan, ipvlan, vlan) uses as its `master`.
//!
//! The NAD generator emits `{"vlanID":100,"type":"ifacer","interfaces":["ens192"],"bond":{...}}` before the
//! main plugin. ADD makes the host match that (creating `<master>.<vlanID>`, or bond `name` over every
//! interface and then `<bond>.<vlanID>`), bringing a down master or existing device up. Devices are shared
//! by every pod on the node, so DEL never removes them.
//!
//! [`plan`] decides what to change from a snapshot of the host's links (pure, unit-tested);
//! [`Ifacer::add`] takes the snapshot, plans and applies.

use std::net::Ipv4Addr;

use netlink_packet_route::link::{
    BondAdSelect, BondAllPortActive, BondArpAllTargets, BondArpValidate, BondFailOverMac,
    BondLacpRate, BondMode, BondPrimaryReselect, BondXmitHashPolicy, InfoBond,
};
use rtnetlink::LinkBond;
use serde::Deserialize;

use crate::netlink::{Link, Netlink};
use crate::protocol::{CniError, CniResult, Context, Plugin, validate_interface_name};

/// Bond name used when the configuration leaves it empty (upstream `DefaultBondName`).
pub const DEFAULT_BOND_NAME: &str = "sp_bond0";

/// The plugin's own configuration keys (upstream `Ifacer` struct).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IfacerConfig {
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(rename = "vlanID", default)]
    pub vlan_id: i64,
    #[serde(default)]
    pub bond: Option<BondConfig>,
}

/// `bond` of the configuration (v2beta1 `BondConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BondConfig {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mode: i64,
    #[serde(default)]
    pub options: String,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub interfaces: Vec<String>,
    /// 0 means "no VLAN".
    pub vlan_id: u16,
    pub bond: Option<DesiredBond>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredBond {
    pub name: String,
    pub mode: u8,
    pub options: BondOptions,
}

impl IfacerConfig {
    /// Validate as upstream's `ParseConfig` (interfaces non-empty, VLAN id in range, default bond name),
    /// and also the bond mode and options, so a bad value fails before anything is changed.
    pub fn validate(&self) -> Result<Desired, CniError> {
        if self.interfaces.is_empty() {
            return Err(CniError::invalid_config(
                "invalid config: interfaces have at least one interface",
            ));
        }
        for name in &self.interfaces {
            validate_interface_name(name).map_err(|msg| {
                CniError::invalid_config(format!("invalid config: interface {name:?}: {msg}"))
            })?;
        }
        let vlan_id = u16::try_from(self.vlan_id)
            .ok()
            .filter(|id| *id <= 4094)
            .ok_or_else(|| {
                CniError::invalid_config(format!(
                    "invalid vlan tag {}: vlan tag must be in range [0,4094]",
                    self.vlan_id
                ))
            })?;
        let bond = match &self.bond {
            None => None,
            Some(bond) => {
                let name = if bond.name.is_empty() {
                    DEFAULT_BOND_NAME.to_string()
                } else {
                    bond.name.clone()
                };
                validate_interface_name(&name).map_err(|msg| {
                    CniError::invalid_config(format!("invalid config: bond name {name:?}: {msg}"))
                })?;
                let mode = u8::try_from(bond.mode)
                    .ok()
                    .filter(|mode| *mode <= 6)
                    .ok_or_else(|| {
                        CniError::invalid_config(format!(
                            "unknown bond mode: {}, available mode: [0,6]",
                            bond.mode
                        ))
                    })?;
                Some(DesiredBond {
                    name,
                    mode,
                    options: parse_bond_options(&bond.options)?,
                })
            }
        };
        Ok(Desired {
            interfaces: self.interfaces.clone(),
            vlan_id,
            bond,
        })
    }
}

/// Bond options from `"k=v;k=v"`. Unknown keys and items without exactly one `=` are ignored (as
/// upstream); integer options of value 0 are treated as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BondOptions {
    pub active_slave: Option<String>,
    pub primary: Option<String>,
    pub ad_actor_system: Option<[u8; 6]>,
    pub arp_ip_target: Vec<Ipv4Addr>,
    /// `(key, value)` of the integer options, in the order given.
    pub integers: Vec<(String, u32)>,
}

const INTEGER_BOND_OPTIONS: &[&str] = &[
    "ad_actor_sys_prio",
    "ad_select",
    "ad_user_port_key",
    "all_slaves_active",
    "arp_interval",
    "arp_validate",
    "arp_all_targets",
    "downdelay",
    "fail_over_mac",
    "lacp_rate",
    "miimon",
    "min_links",
    "packets_per_slave",
    "primary_reselect",
    "tlb_dynamic_lb",
    "up_delay",
    "use_carrier",
    "xmit_hash_policy",
    "lp_interval",
    "resend_igmp",
    "peer_notif_delay",
];

pub fn parse_bond_options(options: &str) -> Result<BondOptions, CniError> {
    let mut parsed = BondOptions::default();
    for item in options.trim().split(';') {
        let parts: Vec<&str> = item.split('=').collect();
        let [key, value] = parts.as_slice() else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let invalid = |why: &str| {
            CniError::invalid_config(format!("invalid bond option {key}={value}: {why}"))
        };
        match key {
            "active_slave" => {
                parsed.active_slave = Some(value.to_string()).filter(|v| !v.is_empty())
            }
            "primary" => parsed.primary = Some(value.to_string()).filter(|v| !v.is_empty()),
            "ad_actor_system" => {
                parsed.ad_actor_system =
                    Some(parse_mac(value).ok_or_else(|| invalid("not a MAC address"))?)
            }
            "arp_ip_target" => {
                let targets: Vec<String> = if value.starts_with('[') {
                    serde_json::from_str(value)
                        .map_err(|_| invalid("not a JSON array of IPv4 addresses"))?
                } else {
                    value
                        .split(',')
                        .filter(|v| !v.is_empty())
                        .map(str::to_string)
                        .collect()
                };
                for target in targets {
                    parsed.arp_ip_target.push(
                        target
                            .trim()
                            .parse()
                            .map_err(|_| invalid("not an IPv4 address"))?,
                    );
                }
            }
            key if INTEGER_BOND_OPTIONS.contains(&key) => {
                let number: i64 = value.parse().map_err(|_| invalid("not an integer"))?;
                if number > 0 {
                    let number = u32::try_from(number).map_err(|_| invalid("out of range"))?;
                    parsed.integers.push((key.to_string(), number));
                }
            }
            _ => {}
        }
    }
    Ok(parsed)
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

/// What the planner needs to know about a host link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub name: String,
    pub kind: Option<String>,
    pub up: bool,
    pub vlan_id: Option<u16>,
    /// Name of the lower device (VLAN parent).
    pub parent: Option<String>,
}

impl HostLink {
    pub fn from_links(links: &[Link]) -> Vec<Self> {
        links
            .iter()
            .map(|link| Self {
                name: link.name.clone(),
                kind: link.kind.clone(),
                up: link.is_up(),
                vlan_id: link.vlan_id,
                parent: link
                    .parent_index
                    .filter(|_| link.link_netnsid.is_none())
                    .and_then(|index| links.iter().find(|other| other.index == index))
                    .map(|parent| parent.name.clone()),
            })
            .collect()
    }
}

/// One change to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    SetUp {
        name: String,
    },
    /// Create the bond, enslave every port (down, enslave, up) and set the bond up.
    CreateBond {
        bond: DesiredBond,
        ports: Vec<String>,
    },
    /// Create `<parent>.<vlan_id>` and set it up.
    CreateVlan {
        name: String,
        parent: String,
        vlan_id: u16,
    },
}

/// `<master>.<vlanID>`.
pub fn vlan_interface_name(master: &str, vlan_id: u16) -> String {
    format!("{master}.{vlan_id}")
}

/// Decide which changes make the host match `desired`. Fails when an interface to use does not exist, when
/// a device with the wanted name exists but is something else, or when another VLAN interface already uses
/// the VLAN id (upstream allows one interface per VLAN id on a node).
pub fn plan(desired: &Desired, links: &[HostLink]) -> Result<Vec<Step>, CniError> {
    let find = |name: &str| links.iter().find(|link| link.name == name);
    let mut steps = Vec::new();
    let master = match (&desired.bond, desired.interfaces.as_slice()) {
        (_, [single]) => {
            let link = find(single).ok_or_else(|| {
                CniError::plugin(format!(
                    "master interface {single} does not exist on the host"
                ))
            })?;
            if desired.vlan_id != 0 && !link.up {
                steps.push(Step::SetUp {
                    name: single.clone(),
                });
            }
            single.clone()
        }
        (None, interfaces) => {
            // Several interfaces without a bond: nothing to create (upstream); the masters must still exist.
            if let Some(missing) = interfaces.iter().find(|name| find(name).is_none()) {
                return Err(CniError::plugin(format!(
                    "master interface {missing} does not exist on the host"
                )));
            }
            return Ok(steps);
        }
        (Some(bond), interfaces) => {
            match find(&bond.name) {
                Some(existing) if existing.kind.as_deref() != Some("bond") => {
                    return Err(CniError::plugin(format!(
                        "failed to create bond: a non-bond type interface named {} already exists on the host",
                        bond.name
                    )));
                }
                Some(existing) => {
                    if !existing.up {
                        steps.push(Step::SetUp {
                            name: bond.name.clone(),
                        });
                    }
                }
                None => {
                    if let Some(missing) = interfaces.iter().find(|name| find(name).is_none()) {
                        return Err(CniError::plugin(format!(
                            "bond port interface {missing} does not exist on the host"
                        )));
                    }
                    steps.push(Step::CreateBond {
                        bond: bond.clone(),
                        ports: interfaces.to_vec(),
                    });
                }
            }
            bond.name.clone()
        }
    };
    if desired.vlan_id == 0 {
        return Ok(steps);
    }
    let vlan_name = vlan_interface_name(&master, desired.vlan_id);
    if let Some(other) = links.iter().find(|link| {
        link.kind.as_deref() == Some("vlan")
            && link.vlan_id == Some(desired.vlan_id)
            && link.name != vlan_name
    }) {
        return Err(CniError::plugin(format!(
            "cannot have multiple different vlan interfaces with the same vlanId {} on node at the same time: {} already uses it",
            desired.vlan_id, other.name
        )));
    }
    match find(&vlan_name) {
        Some(existing) => {
            let matches = existing.kind.as_deref() == Some("vlan")
                && existing.vlan_id == Some(desired.vlan_id)
                && existing.parent.as_deref() == Some(master.as_str());
            if !matches {
                return Err(CniError::plugin(format!(
                    "interface {vlan_name} already exists but is not a VLAN interface with id {} on {master}",
                    desired.vlan_id
                )));
            }
            if !existing.up {
                steps.push(Step::SetUp { name: vlan_name });
            }
        }
        None => steps.push(Step::CreateVlan {
            name: vlan_name,
            parent: master,
            vlan_id: desired.vlan_id,
        }),
    }
    Ok(steps)
}

/// Carry out `steps` on the host through `netlink`.
pub fn apply(netlink: &Netlink, steps: &[Step]) -> Result<(), CniError> {
    for step in steps {
        log::info!("ifacer: {step:?}");
        match step {
            Step::SetUp { name } => netlink.set_up(&netlink.require_link(name)?)?,
            Step::CreateVlan {
                name,
                parent,
                vlan_id,
            } => {
                let parent = netlink.require_link(parent)?;
                netlink.add_vlan(name, &parent, *vlan_id).map_err(|error| {
                    if error.is_unsupported() {
                        CniError::network(format!(
                            "failed to create vlan interface {name}: the kernel does not support VLAN devices (8021q module missing)"
                        ))
                    } else {
                        CniError::from(error)
                    }
                })?;
                netlink.set_up(&netlink.require_link(name)?)?;
            }
            Step::CreateBond { bond, ports } => create_bond(netlink, bond, ports)?,
        }
    }
    Ok(())
}

fn create_bond(netlink: &Netlink, bond: &DesiredBond, ports: &[String]) -> Result<(), CniError> {
    let options = &bond.options;
    let mut builder = LinkBond::new(&bond.name).mode(BondMode::from(bond.mode));
    if let Some(name) = &options.primary {
        builder = builder.append_info_data(InfoBond::Primary(netlink.require_link(name)?.index));
    }
    if let Some(name) = &options.active_slave {
        builder = builder.append_info_data(InfoBond::ActivePort(netlink.require_link(name)?.index));
    }
    if let Some(mac) = options.ad_actor_system {
        builder = builder.append_info_data(InfoBond::AdActorSystem(mac));
    }
    if !options.arp_ip_target.is_empty() {
        builder = builder.append_info_data(InfoBond::ArpIpTarget(options.arp_ip_target.clone()));
    }
    for (key, value) in &options.integers {
        let small = u8::try_from(*value).unwrap_or(u8::MAX);
        let short = u16::try_from(*value).unwrap_or(u16::MAX);
        let info = match key.as_str() {
            "ad_actor_sys_prio" => InfoBond::AdActorSysPrio(short),
            "ad_select" => InfoBond::AdSelect(BondAdSelect::from(small)),
            "ad_user_port_key" => InfoBond::AdUserPortKey(short),
            "all_slaves_active" => InfoBond::AllPortsActive(BondAllPortActive::from(small)),
            "arp_interval" => InfoBond::ArpInterval(*value),
            "arp_validate" => InfoBond::ArpValidate(BondArpValidate::from(*value)),
            "arp_all_targets" => InfoBond::ArpAllTargets(BondArpAllTargets::from(*value)),
            "downdelay" => InfoBond::DownDelay(*value),
            "fail_over_mac" => InfoBond::FailOverMac(BondFailOverMac::from(small)),
            "lacp_rate" => InfoBond::AdLacpRate(BondLacpRate::from(small)),
            "miimon" => InfoBond::MiiMon(*value),
            "min_links" => InfoBond::MinLinks(*value),
            "packets_per_slave" => InfoBond::PacketsPerPort(*value),
            "primary_reselect" => InfoBond::PrimaryReselect(BondPrimaryReselect::from(small)),
            "tlb_dynamic_lb" => InfoBond::TlbDynamicLb(*value != 0),
            "up_delay" => InfoBond::UpDelay(*value),
            "use_carrier" => InfoBond::UseCarrier(*value != 0),
            "xmit_hash_policy" => InfoBond::XmitHashPolicy(BondXmitHashPolicy::from(small)),
            "lp_interval" => InfoBond::LpInterval(*value),
            "resend_igmp" => InfoBond::ResendIgmp(*value),
            "peer_notif_delay" => InfoBond::PeerNotifDelay(*value),
            _ => continue,
        };
        builder = builder.append_info_data(info);
    }
    netlink.add_link(&bond.name, builder.build()).map_err(|error| {
        if error.is_unsupported() {
            CniError::network(format!(
                "failed to create bond {}: the kernel does not support bond devices (bonding module missing)",
                bond.name
            ))
        } else {
            CniError::from(error)
        }
    })?;
    let bond_link = netlink.require_link(&bond.name)?;
    for port in ports {
        let link = netlink.require_link(port)?;
        netlink.set_down(&link)?;
        netlink.set_controller(&link, &bond_link)?;
        netlink.set_up(&link)?;
    }
    netlink.set_up(&bond_link)?;
    Ok(())
}

/// The `ifacer` plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ifacer;

impl Plugin for Ifacer {
    fn name(&self) -> &'static str {
        "ifacer"
    }

    fn add(&self, context: &Context) -> Result<CniResult, CniError> {
        let desired = context.config::<IfacerConfig>()?.validate()?;
        let netlink = Netlink::open()?;
        let links = HostLink::from_links(&netlink.links()?);
        let steps = plan(&desired, &links)?;
        apply(&netlink, &steps)?;
        Ok(context.pass_through())
    }

    fn del(&self, _context: &Context) -> Result<(), CniError> {
        // VLAN and bond devices are shared by every pod using this master: never removed.
        Ok(())
    }

    fn check(&self, context: &Context) -> Result<(), CniError> {
        context.config::<IfacerConfig>()?.validate().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn link(name: &str, up: bool) -> HostLink {
        HostLink {
            name: name.into(),
            kind: None,
            up,
            vlan_id: None,
            parent: None,
        }
    }

    fn vlan(name: &str, parent: &str, id: u16) -> HostLink {
        HostLink {
            name: name.into(),
            kind: Some("vlan".into()),
            up: true,
            vlan_id: Some(id),
            parent: Some(parent.into()),
        }
    }

    fn desired(json: &str) -> Desired {
        serde_json::from_str::<IfacerConfig>(json)
            .unwrap()
            .validate()
            .unwrap()
    }

    #[test]
    fn config_validation_matches_upstream_messages() {
        let error = serde_json::from_str::<IfacerConfig>(r#"{"type":"ifacer"}"#)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(
            error.msg,
            "invalid config: interfaces have at least one interface"
        );
        assert_eq!(error.code, ErrorCode::INVALID_NETWORK_CONFIG);
        let error =
            serde_json::from_str::<IfacerConfig>(r#"{"interfaces":["eth0"],"vlanID":4095}"#)
                .unwrap()
                .validate()
                .unwrap_err();
        assert_eq!(
            error.msg,
            "invalid vlan tag 4095: vlan tag must be in range [0,4094]"
        );
        let error = serde_json::from_str::<IfacerConfig>(
            r#"{"interfaces":["a","b"],"bond":{"name":"b0","mode":7}}"#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(error.msg, "unknown bond mode: 7, available mode: [0,6]");
        let bond = desired(r#"{"interfaces":["a","b"],"bond":{"mode":1}}"#)
            .bond
            .unwrap();
        assert_eq!(bond.name, DEFAULT_BOND_NAME);
    }

    #[test]
    fn nad_generator_entries_are_accepted() {
        // Entries exactly as section 3.7 of the contract shows them.
        let single = desired(r#"{"vlanID":100,"type":"ifacer","interfaces":["ens192"]}"#);
        assert_eq!(single.vlan_id, 100);
        let bonded = desired(
            r#"{"vlanID":10,"type":"ifacer","interfaces":["eth0","eth1"],"bond":{"name":"ens1","mode":0,"options":""}}"#,
        );
        assert_eq!(bonded.bond.map(|bond| bond.name), Some("ens1".to_string()));
        let vlan_mode = desired(
            r#"{"type":"ifacer","interfaces":["ens192","ens224"],"bond":{"name":"bond0","mode":1,"options":""}}"#,
        );
        assert_eq!(vlan_mode.vlan_id, 0);
    }

    #[test]
    fn single_interface_without_vlan_changes_nothing() {
        let plan = plan(&desired(r#"{"interfaces":["up0"]}"#), &[link("up0", false)]).unwrap();
        assert!(plan.is_empty());
    }

    #[test]
    fn vlan_on_down_master_sets_master_up_then_creates_vlan() {
        let plan = plan(
            &desired(r#"{"interfaces":["ens192"],"vlanID":100}"#),
            &[link("ens192", false)],
        )
        .unwrap();
        assert_eq!(
            plan,
            vec![
                Step::SetUp {
                    name: "ens192".into()
                },
                Step::CreateVlan {
                    name: "ens192.100".into(),
                    parent: "ens192".into(),
                    vlan_id: 100
                }
            ]
        );
    }

    #[test]
    fn existing_vlan_interface_is_left_alone_or_set_up() {
        let wanted = desired(r#"{"interfaces":["ens192"],"vlanID":100}"#);
        let links = [link("ens192", true), vlan("ens192.100", "ens192", 100)];
        assert_eq!(plan(&wanted, &links).unwrap(), vec![]);
        let mut down = vlan("ens192.100", "ens192", 100);
        down.up = false;
        assert_eq!(
            plan(&wanted, &[link("ens192", true), down]).unwrap(),
            vec![Step::SetUp {
                name: "ens192.100".into()
            }]
        );
    }

    #[test]
    fn missing_master_fails_clearly() {
        let error = plan(
            &desired(r#"{"interfaces":["ens192"],"vlanID":100}"#),
            &[link("eth0", true)],
        )
        .unwrap_err();
        assert_eq!(
            error.msg,
            "master interface ens192 does not exist on the host"
        );
        let error = plan(&desired(r#"{"interfaces":["a","b"]}"#), &[link("a", true)]).unwrap_err();
        assert_eq!(error.msg, "master interface b does not exist on the host");
        let error = plan(
            &desired(r#"{"interfaces":["a","b"],"bond":{"name":"bond0"}}"#),
            &[link("a", true)],
        )
        .unwrap_err();
        assert_eq!(
            error.msg,
            "bond port interface b does not exist on the host"
        );
    }

    #[test]
    fn vlan_id_used_by_another_interface_is_a_conflict() {
        let wanted = desired(r#"{"interfaces":["ens192"],"vlanID":100}"#);
        let links = [link("ens192", true), vlan("vlan100", "ens192", 100)];
        let error = plan(&wanted, &links).unwrap_err();
        assert!(
            error.msg.starts_with(
                "cannot have multiple different vlan interfaces with the same vlanId 100"
            ),
            "{}",
            error.msg
        );
        assert!(error.msg.ends_with("vlan100 already uses it"));
        // Upstream checks the whole node, not only the master.
        let links = [
            link("ens192", true),
            link("ens224", true),
            vlan("ens224.100", "ens224", 100),
        ];
        assert!(plan(&wanted, &links).is_err());
    }

    #[test]
    fn existing_name_with_wrong_kind_or_id_is_refused() {
        let wanted = desired(r#"{"interfaces":["ens192"],"vlanID":100}"#);
        let error = plan(&wanted, &[link("ens192", true), link("ens192.100", true)]).unwrap_err();
        assert_eq!(
            error.msg,
            "interface ens192.100 already exists but is not a VLAN interface with id 100 on ens192"
        );
        let error = plan(
            &wanted,
            &[link("ens192", true), vlan("ens192.100", "other", 100)],
        )
        .unwrap_err();
        assert!(error.msg.contains("not a VLAN interface"));
    }

    #[test]
    fn bond_is_created_over_all_ports_then_vlan_on_bond() {
        let wanted = desired(
            r#"{"interfaces":["eth0","eth1"],"vlanID":10,"bond":{"name":"ens1","mode":0,"options":""}}"#,
        );
        let steps = plan(&wanted, &[link("eth0", true), link("eth1", true)]).unwrap();
        assert_eq!(steps.len(), 2);
        assert!(
            matches!(&steps[0], Step::CreateBond { bond, ports } if bond.name == "ens1" && ports.len() == 2)
        );
        assert_eq!(
            steps[1],
            Step::CreateVlan {
                name: "ens1.10".into(),
                parent: "ens1".into(),
                vlan_id: 10
            }
        );
    }

    #[test]
    fn existing_bond_is_reused_and_must_be_a_bond() {
        let wanted = desired(r#"{"interfaces":["eth0","eth1"],"bond":{"name":"bond0","mode":1}}"#);
        let mut bond = link("bond0", false);
        bond.kind = Some("bond".into());
        assert_eq!(
            plan(&wanted, &[link("eth0", true), link("eth1", true), bond]).unwrap(),
            vec![Step::SetUp {
                name: "bond0".into()
            }]
        );
        let error = plan(
            &wanted,
            &[link("eth0", true), link("eth1", true), link("bond0", true)],
        )
        .unwrap_err();
        assert!(
            error
                .msg
                .contains("a non-bond type interface named bond0 already exists")
        );
    }

    #[test]
    fn bond_options_parse_like_upstream() {
        let options =
            parse_bond_options("primary=ens160;arp_interval=1;miimon=0;arp_ip_target=[\"10.0.0.1\",\"10.0.0.2\"];junk;x=1=2;unknown=3")
                .unwrap();
        assert_eq!(options.primary.as_deref(), Some("ens160"));
        assert_eq!(options.integers, vec![("arp_interval".to_string(), 1)]);
        assert_eq!(
            options.arp_ip_target,
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert!(parse_bond_options("miimon=abc").is_err());
        assert!(parse_bond_options("ad_actor_system=zz").is_err());
        assert_eq!(parse_bond_options("").unwrap(), BondOptions::default());
    }
}
