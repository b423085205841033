//! Links, addresses, routes and rules as plain values, and their rtnetlink messages: what
//! [`super::Netlink`] reads is parsed into these, what it writes is built from them.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{
    InfoData, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use rtnetlink::RouteMessageBuilder;

use super::MAIN_TABLE;

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`vlan`, `bond`, `veth`, `macvlan`, ...); `None` for physical devices and `lo`.
    pub kind: Option<String>,
    pub flags: u32,
    pub mac: Vec<u8>,
    pub mtu: Option<u32>,
    pub tx_queue_len: Option<u32>,
    /// `IFLA_LINK`: the lower device (VLAN parent, macvlan master, veth peer index).
    pub parent_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the lower device lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// `IFLA_MASTER`: the bond or bridge this link is enslaved to.
    pub controller: Option<u32>,
    pub vlan_id: Option<u16>,
}

impl Link {
    pub fn is_up(&self) -> bool {
        self.flags & LinkFlags::Up.bits() != 0
    }

    pub fn is_loopback(&self) -> bool {
        self.flags & LinkFlags::Loopback.bits() != 0
    }

    /// Up, broadcast and multicast: what upstream counts as a pod NIC (excludes `lo` and tunnels).
    pub fn is_up_ethernet_like(&self) -> bool {
        let wanted =
            LinkFlags::Up.bits() | LinkFlags::Broadcast.bits() | LinkFlags::Multicast.bits();
        self.flags & wanted == wanted
    }
}

/// An interface address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    /// Address with its prefix length, host bits kept.
    pub network: IpNetwork,
}

/// A route as dumped from the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteEntry {
    pub table: u32,
    /// `None` for a default route.
    pub dst: Option<IpNetwork>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub pref_src: Option<IpAddr>,
    pub scope: RouteScope,
    pub protocol: RouteProtocol,
    pub kind: RouteType,
    pub priority: Option<u32>,
    /// `(interface index, gateway)` of multipath next hops.
    pub multipath: Vec<(u32, Option<IpAddr>)>,
    pub family_v4: bool,
    pub(super) message: RouteMessage,
}

impl RouteEntry {
    pub fn is_default(&self) -> bool {
        self.dst.is_none_or(|dst| dst.prefix() == 0)
    }
}

/// A route to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination; a zero-length prefix is a default route.
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    pub scope: RouteScope,
    pub protocol: RouteProtocol,
    pub pref_src: Option<IpAddr>,
    pub priority: Option<u32>,
}

impl RouteSpec {
    /// A static universe-scope route in the main table.
    pub fn new(dst: IpNetwork) -> Self {
        Self {
            dst,
            gateway: None,
            oif: None,
            table: MAIN_TABLE,
            scope: RouteScope::Universe,
            protocol: RouteProtocol::Boot,
            pref_src: None,
            priority: None,
        }
    }

    /// The same route as `entry` (gateway, device, scope, protocol, source, metric) in table `table`.
    pub fn copy_of(entry: &RouteEntry, table: u32) -> Self {
        let dst = entry
            .dst
            .unwrap_or_else(|| default_destination(entry.family_v4));
        Self {
            dst,
            gateway: entry.gateway,
            oif: entry.oif,
            table,
            scope: entry.scope,
            protocol: entry.protocol,
            pref_src: entry.pref_src,
            priority: entry.priority,
        }
    }
}

/// `0.0.0.0/0` or `::/0`.
pub fn default_destination(ipv4: bool) -> IpNetwork {
    let unspecified: IpAddr = if ipv4 {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    // A zero prefix is valid for both families; the fallback is never taken.
    IpNetwork::new(unspecified, 0).unwrap_or_else(|_| IpNetwork::from(unspecified))
}

/// A policy-routing rule as dumped from the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleEntry {
    pub family_v4: bool,
    pub priority: Option<u32>,
    pub table: u32,
    pub src: Option<IpNetwork>,
    pub dst: Option<IpNetwork>,
    pub fw_mark: Option<u32>,
    pub(super) message: RuleMessage,
}

/// A `lookup <table>` rule to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSpec {
    pub ipv4: bool,
    pub src: Option<IpNetwork>,
    pub dst: Option<IpNetwork>,
    pub table: u32,
    /// `None` lets the kernel pick one below the lowest existing non-zero priority (as `ip rule add`).
    pub priority: Option<u32>,
}

pub(super) fn parse_link(message: LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        flags: message.header.flags.bits(),
        ..Link::default()
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Address(mac) => link.mac = mac,
            LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
            LinkAttribute::TxQueueLen(length) => link.tx_queue_len = Some(length),
            LinkAttribute::Link(parent) => link.parent_index = Some(parent),
            LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(id),
            LinkAttribute::Controller(controller) => link.controller = Some(controller),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::Data(InfoData::Vlan(vlan)) => {
                            for item in vlan {
                                if let InfoVlan::Id(id) = item {
                                    link.vlan_id = Some(id);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

pub(super) fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub(super) fn parse_route(message: RouteMessage) -> RouteEntry {
    let header = &message.header;
    let family_v4 = header.address_family != AddressFamily::Inet6;
    let mut entry = RouteEntry {
        table: u32::from(header.table),
        dst: None,
        gateway: None,
        oif: None,
        pref_src: None,
        scope: header.scope,
        protocol: header.protocol,
        kind: header.kind,
        priority: None,
        multipath: Vec::new(),
        family_v4,
        message: message.clone(),
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(table) => entry.table = *table,
            RouteAttribute::Destination(address) => {
                entry.dst = route_address(address)
                    .and_then(|ip| IpNetwork::new(ip, header.destination_prefix_length).ok());
            }
            RouteAttribute::Gateway(address) => entry.gateway = route_address(address),
            RouteAttribute::Oif(index) => entry.oif = Some(*index),
            RouteAttribute::PrefSource(address) => entry.pref_src = route_address(address),
            RouteAttribute::Priority(priority) => entry.priority = Some(*priority),
            RouteAttribute::MultiPath(hops) => {
                for hop in hops {
                    let gateway = hop.attributes.iter().find_map(|attribute| match attribute {
                        RouteAttribute::Gateway(address) => route_address(address),
                        _ => None,
                    });
                    entry.multipath.push((hop.interface_index, gateway));
                }
            }
            _ => {}
        }
    }
    if entry.dst.is_some_and(|dst| dst.prefix() == 0) {
        entry.dst = None;
    }
    entry
}

pub(super) fn build_route(spec: &RouteSpec) -> Result<RouteMessage, String> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(spec.dst.network(), spec.dst.prefix())
        .map_err(|error| error.to_string())?;
    if let Some(gateway) = spec.gateway {
        builder = builder
            .gateway(gateway)
            .map_err(|error| error.to_string())?;
    }
    if let Some(source) = spec.pref_src {
        builder = builder
            .pref_source(source)
            .map_err(|error| error.to_string())?;
    }
    if let Some(oif) = spec.oif {
        builder = builder.output_interface(oif);
    }
    if let Some(priority) = spec.priority {
        builder = builder.priority(priority);
    }
    let mut message = builder
        .table_id(spec.table)
        .scope(spec.scope)
        .protocol(spec.protocol)
        .build();
    if spec.table > 255 {
        message.header.table = RouteHeader::RT_TABLE_UNSPEC;
    }
    if spec.dst.prefix() == 0 {
        // A default route carries no RTA_DST, like `ip route add default`.
        message
            .attributes
            .retain(|attribute| !matches!(attribute, RouteAttribute::Destination(_)));
    }
    Ok(message)
}

pub(super) fn describe_route(spec: &RouteSpec) -> String {
    let mut text = if spec.dst.prefix() == 0 {
        "default".to_string()
    } else {
        spec.dst.to_string()
    };
    if let Some(gateway) = spec.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    if let Some(oif) = spec.oif {
        text.push_str(&format!(" dev #{oif}"));
    }
    text.push_str(&format!(" table {}", spec.table));
    text
}

pub(super) fn parse_rule(message: RuleMessage, ipv4: bool) -> RuleEntry {
    let mut entry = RuleEntry {
        family_v4: ipv4,
        priority: None,
        table: u32::from(message.header.table),
        src: None,
        dst: None,
        fw_mark: None,
        message: message.clone(),
    };
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(priority) => entry.priority = Some(*priority),
            RuleAttribute::Table(table) => entry.table = *table,
            RuleAttribute::Source(ip) => {
                entry.src = IpNetwork::new(*ip, message.header.src_len).ok()
            }
            RuleAttribute::Destination(ip) => {
                entry.dst = IpNetwork::new(*ip, message.header.dst_len).ok()
            }
            RuleAttribute::FwMark(mark) => entry.fw_mark = Some(*mark),
            _ => {}
        }
    }
    entry
}

pub(super) fn describe_rule(spec: &RuleSpec) -> String {
    let from = spec
        .src
        .map_or_else(|| "all".to_string(), |src| src.to_string());
    let mut text = format!("from {from}");
    if let Some(dst) = spec.dst {
        text.push_str(&format!(" to {dst}"));
    }
    text.push_str(&format!(" lookup {}", spec.table));
    text
}
