//! A small synchronous facade over `rtnetlink` for the plugins: links, addresses, routes in any table,
//! policy rules and static neighbours, in the network namespace of the thread that opened it.
//!
//! Each [`Netlink`] owns a current-thread tokio runtime and one netlink connection; open one per namespace
//! (see [`crate::netns::run_in`]) and use it from that thread only.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{
    Handle, IpVersion, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan, RouteMessageBuilder,
};

use crate::protocol::CniError;

pub use netlink_packet_route::route::{RouteProtocol as Protocol, RouteScope as Scope};

/// `RT_TABLE_MAIN`.
pub const MAIN_TABLE: u32 = 254;
/// `RT_TABLE_LOCAL`.
pub const LOCAL_TABLE: u32 = 255;

const EEXIST: i32 = libc::EEXIST;

/// A failed netlink request, with the operation that failed and the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct NetlinkError {
    pub operation: String,
    pub errno: Option<i32>,
    pub message: String,
}

impl NetlinkError {
    fn new(operation: impl Into<String>, error: rtnetlink::Error) -> Self {
        let errno = match &error {
            rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
            _ => None,
        };
        let message = match errno {
            Some(errno) => std::io::Error::from_raw_os_error(errno).to_string(),
            None => error.to_string(),
        };
        Self {
            operation: operation.into(),
            errno,
            message,
        }
    }

    fn io(operation: impl Into<String>, error: std::io::Error) -> Self {
        Self {
            operation: operation.into(),
            errno: error.raw_os_error(),
            message: error.to_string(),
        }
    }

    pub fn is_exists(&self) -> bool {
        self.errno == Some(EEXIST)
    }

    /// ENOENT, ESRCH (route/rule not found), ENODEV (no such device).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno,
            Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENODEV)
        )
    }

    /// EOPNOTSUPP: the kernel lacks the link type (e.g. no 8021q or bonding module).
    pub fn is_unsupported(&self) -> bool {
        self.errno == Some(libc::EOPNOTSUPP)
    }
}

impl From<NetlinkError> for CniError {
    fn from(error: NetlinkError) -> Self {
        CniError::network(error.to_string())
    }
}

pub type NetlinkResult<T> = Result<T, NetlinkError>;

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
    message: RouteMessage,
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
    message: RuleMessage,
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

/// One netlink connection in the namespace of the thread that opened it.
pub struct Netlink {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    /// Open a connection in the current thread's network namespace.
    pub fn open() -> NetlinkResult<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| NetlinkError::io("failed to start netlink runtime", error))?;
        let (connection, handle, _) = {
            let _guard = runtime.enter();
            rtnetlink::new_connection()
                .map_err(|error| NetlinkError::io("failed to open netlink socket", error))?
        };
        runtime.spawn(connection);
        Ok(Self { runtime, handle })
    }

    fn block<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    // ----- links -----

    pub fn links(&self) -> NetlinkResult<Vec<Link>> {
        let messages: Vec<LinkMessage> = self
            .block(self.handle.link().get().execute().try_collect())
            .map_err(|error| NetlinkError::new("failed to list links", error))?;
        Ok(messages.into_iter().map(parse_link).collect())
    }

    pub fn link_by_name(&self, name: &str) -> NetlinkResult<Option<Link>> {
        Ok(self.links()?.into_iter().find(|link| link.name == name))
    }

    pub fn link_by_index(&self, index: u32) -> NetlinkResult<Option<Link>> {
        Ok(self.links()?.into_iter().find(|link| link.index == index))
    }

    /// Like [`Self::link_by_name`], failing with ENODEV when absent.
    pub fn require_link(&self, name: &str) -> NetlinkResult<Link> {
        self.link_by_name(name)?.ok_or_else(|| NetlinkError {
            operation: format!("failed to find link {name}"),
            errno: Some(libc::ENODEV),
            message: "Link not found".to_string(),
        })
    }

    fn set_link(&self, operation: String, message: LinkMessage) -> NetlinkResult<()> {
        self.block(self.handle.link().set(message).execute())
            .map_err(|error| NetlinkError::new(operation, error))
    }

    pub fn set_up(&self, link: &Link) -> NetlinkResult<()> {
        self.set_link(
            format!("failed to set {} up", link.name),
            LinkUnspec::new_with_index(link.index).up().build(),
        )
    }

    pub fn set_down(&self, link: &Link) -> NetlinkResult<()> {
        self.set_link(
            format!("failed to set {} down", link.name),
            LinkUnspec::new_with_index(link.index).down().build(),
        )
    }

    pub fn set_mac(&self, link: &Link, mac: &[u8]) -> NetlinkResult<()> {
        self.set_link(
            format!("failed to set hardware address of {}", link.name),
            LinkUnspec::new_with_index(link.index)
                .address(mac.to_vec())
                .build(),
        )
    }

    pub fn set_tx_queue_len(&self, link: &Link, length: u32) -> NetlinkResult<()> {
        self.set_link(
            format!("failed to set txqueuelen of {} to {length}", link.name),
            LinkUnspec::new_with_index(link.index)
                .txqueuelen(length)
                .build(),
        )
    }

    pub fn set_controller(&self, link: &Link, controller: &Link) -> NetlinkResult<()> {
        self.set_link(
            format!("failed to enslave {} to {}", link.name, controller.name),
            LinkUnspec::new_with_index(link.index)
                .controller(controller.index)
                .build(),
        )
    }

    /// Create any link from a prepared message (bond, macvlan, ...).
    pub fn add_link(&self, name: &str, message: LinkMessage) -> NetlinkResult<()> {
        self.block(self.handle.link().add(message).execute())
            .map_err(|error| NetlinkError::new(format!("failed to create link {name}"), error))
    }

    pub fn add_vlan(&self, name: &str, parent: &Link, vlan_id: u16) -> NetlinkResult<()> {
        self.add_link(name, LinkVlan::new(name, parent.index, vlan_id).build())
    }

    /// Create a veth pair whose peer is created directly inside the namespace open as `peer_namespace`.
    pub fn add_veth_with_peer_in(
        &self,
        name: &str,
        mac: &[u8],
        peer_name: &str,
        peer_mac: &[u8],
        mtu: u32,
        peer_namespace: &std::fs::File,
    ) -> NetlinkResult<()> {
        use std::os::fd::AsRawFd;
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_string())
            .mtu(mtu)
            .address(peer_mac.to_vec())
            .setns_by_fd(peer_namespace.as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_string())
            .mtu(mtu)
            .address(mac.to_vec())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.add_link(name, message)
    }

    pub fn del_link(&self, link: &Link) -> NetlinkResult<()> {
        self.block(self.handle.link().del(link.index).execute())
            .map_err(|error| {
                NetlinkError::new(format!("failed to delete link {}", link.name), error)
            })
    }

    // ----- addresses -----

    /// Addresses of one link, or of all links.
    pub fn addresses(&self, index: Option<u32>) -> NetlinkResult<Vec<Address>> {
        let mut request = self.handle.address().get();
        if let Some(index) = index {
            request = request.set_link_index_filter(index);
        }
        let messages: Vec<AddressMessage> = self
            .block(request.execute().try_collect())
            .map_err(|error| NetlinkError::new("failed to list addresses", error))?;
        Ok(messages
            .into_iter()
            .filter(|message| index.is_none_or(|index| message.header.index == index))
            .filter_map(|message| {
                let prefix = message.header.prefix_len;
                let mut local = None;
                let mut address = None;
                for attribute in message.attributes {
                    match attribute {
                        AddressAttribute::Local(ip) => local = Some(ip),
                        AddressAttribute::Address(ip) => address = Some(ip),
                        _ => {}
                    }
                }
                let ip = local.or(address)?;
                let network = IpNetwork::new(ip, prefix).ok()?;
                Some(Address {
                    index: message.header.index,
                    network,
                })
            })
            .collect())
    }

    /// Global unicast addresses of a link (no link-local, no multicast), as upstream's `getAdders`.
    pub fn unicast_addresses(&self, index: u32) -> NetlinkResult<Vec<Address>> {
        Ok(self
            .addresses(Some(index))?
            .into_iter()
            .filter(|address| is_global_unicast(address.network.ip()))
            .collect())
    }

    pub fn add_address(&self, link: &Link, network: IpNetwork) -> NetlinkResult<()> {
        self.block(
            self.handle
                .address()
                .add(link.index, network.ip(), network.prefix())
                .execute(),
        )
        .map_err(|error| {
            NetlinkError::new(
                format!("failed to add address {network} to {}", link.name),
                error,
            )
        })
    }

    // ----- routes -----

    /// Every route of every table for the family (`None` = both families).
    pub fn routes(&self, ipv4: Option<bool>) -> NetlinkResult<Vec<RouteEntry>> {
        let mut entries = Vec::new();
        for family_v4 in [true, false] {
            if ipv4.is_some_and(|wanted| wanted != family_v4) {
                continue;
            }
            let query = if family_v4 {
                RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
            } else {
                RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
            };
            let messages: Vec<RouteMessage> = self
                .block(self.handle.route().get(query).execute().try_collect())
                .map_err(|error| NetlinkError::new("failed to list routes", error))?;
            entries.extend(messages.into_iter().map(parse_route));
        }
        Ok(entries)
    }

    /// Routes of one table.
    pub fn routes_in_table(
        &self,
        table: u32,
        ipv4: Option<bool>,
    ) -> NetlinkResult<Vec<RouteEntry>> {
        Ok(self
            .routes(ipv4)?
            .into_iter()
            .filter(|route| route.table == table)
            .collect())
    }

    /// `ip route get <ip>`; `None` when there is no route.
    pub fn route_get(&self, ip: IpAddr) -> NetlinkResult<Option<RouteEntry>> {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let query = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(ip, prefix)
            .map_err(|error| NetlinkError {
                operation: format!("failed to look up route to {ip}"),
                errno: None,
                message: error.to_string(),
            })?
            .build();
        let result: Result<Vec<RouteMessage>, _> =
            self.block(self.handle.route().get(query).execute().try_collect());
        match result {
            Ok(messages) => Ok(messages.into_iter().next().map(parse_route)),
            Err(error) => {
                let error = NetlinkError::new(format!("failed to look up route to {ip}"), error);
                if matches!(
                    error.errno,
                    Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)
                ) {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Add a route; an identical existing route is not an error.
    pub fn add_route(&self, spec: &RouteSpec) -> NetlinkResult<()> {
        let message = build_route(spec).map_err(|message| NetlinkError {
            operation: format!("failed to add route {}", describe_route(spec)),
            errno: None,
            message,
        })?;
        match self.block(self.handle.route().add(message).execute()) {
            Ok(()) => Ok(()),
            Err(error) => {
                let error = NetlinkError::new(
                    format!("failed to add route {}", describe_route(spec)),
                    error,
                );
                if error.is_exists() {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Delete a dumped route; an already-gone route is not an error.
    pub fn del_route(&self, entry: &RouteEntry) -> NetlinkResult<()> {
        match self.block(self.handle.route().del(entry.message.clone()).execute()) {
            Ok(()) => Ok(()),
            Err(error) => {
                let error = NetlinkError::new("failed to delete route", error);
                if error.is_not_found() {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Delete the route described by `spec` (matching destination, table, device and gateway); an
    /// already-gone route is not an error.
    pub fn del_route_spec(&self, spec: &RouteSpec) -> NetlinkResult<()> {
        let operation = format!("failed to delete route {}", describe_route(spec));
        let message = build_route(spec).map_err(|message| NetlinkError {
            operation: operation.clone(),
            errno: None,
            message,
        })?;
        match self.block(self.handle.route().del(message).execute()) {
            Ok(()) => Ok(()),
            Err(error) => {
                let error = NetlinkError::new(operation, error);
                if error.is_not_found() {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    // ----- rules -----

    pub fn rules(&self, ipv4: bool) -> NetlinkResult<Vec<RuleEntry>> {
        let version = if ipv4 { IpVersion::V4 } else { IpVersion::V6 };
        let messages: Vec<RuleMessage> = self
            .block(self.handle.rule().get(version).execute().try_collect())
            .map_err(|error| NetlinkError::new("failed to list rules", error))?;
        Ok(messages
            .into_iter()
            .map(|message| parse_rule(message, ipv4))
            .collect())
    }

    /// Add a rule unless an equal one (selectors, table, and priority when given) exists.
    pub fn ensure_rule(&self, spec: &RuleSpec) -> NetlinkResult<()> {
        let exists = self.rules(spec.ipv4)?.iter().any(|rule| {
            rule.table == spec.table
                && rule.src == spec.src
                && rule.dst == spec.dst
                && rule.fw_mark.is_none()
                && spec
                    .priority
                    .is_none_or(|priority| rule.priority == Some(priority))
        });
        if exists {
            return Ok(());
        }
        let operation = format!("failed to add rule {}", describe_rule(spec));
        let mut request = self
            .handle
            .rule()
            .add()
            .table_id(spec.table)
            .action(RuleAction::ToTable);
        if let Some(priority) = spec.priority {
            request = request.priority(priority);
        }
        let result = if spec.ipv4 {
            let mut request = request.v4();
            if let Some(IpNetwork::V4(src)) = spec.src {
                request = request.source_prefix(src.ip(), src.prefix());
            }
            if let Some(IpNetwork::V4(dst)) = spec.dst {
                request = request.destination_prefix(dst.ip(), dst.prefix());
            }
            self.block(request.execute())
        } else {
            let mut request = request.v6();
            if let Some(IpNetwork::V6(src)) = spec.src {
                request = request.source_prefix(src.ip(), src.prefix());
            }
            if let Some(IpNetwork::V6(dst)) = spec.dst {
                request = request.destination_prefix(dst.ip(), dst.prefix());
            }
            self.block(request.execute())
        };
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                let error = NetlinkError::new(operation, error);
                if error.is_exists() {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Delete a dumped rule; an already-gone rule is not an error.
    pub fn del_rule(&self, rule: &RuleEntry) -> NetlinkResult<()> {
        match self.block(self.handle.rule().del(rule.message.clone()).execute()) {
            Ok(()) => Ok(()),
            Err(error) => {
                let error = NetlinkError::new("failed to delete rule", error);
                if error.is_not_found() {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    // ----- neighbours -----

    /// `ip neigh replace <ip> lladdr <mac> dev <link> nud permanent`.
    pub fn set_permanent_neighbour(
        &self,
        link: &Link,
        ip: IpAddr,
        mac: &[u8],
    ) -> NetlinkResult<()> {
        self.block(
            self.handle
                .neighbours()
                .add(link.index, ip)
                .link_layer_address(mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute(),
        )
        .map_err(|error| {
            NetlinkError::new(
                format!("failed to add neighbour {ip} on {}", link.name),
                error,
            )
        })
    }
}

/// Not loopback, link-local, multicast or unspecified.
pub fn is_global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || v6.is_unicast_link_local())
        }
    }
}

fn parse_link(message: LinkMessage) -> Link {
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

fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn parse_route(message: RouteMessage) -> RouteEntry {
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

fn build_route(spec: &RouteSpec) -> Result<RouteMessage, String> {
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

fn describe_route(spec: &RouteSpec) -> String {
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

fn parse_rule(message: RuleMessage, ipv4: bool) -> RuleEntry {
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

fn describe_rule(spec: &RuleSpec) -> String {
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
