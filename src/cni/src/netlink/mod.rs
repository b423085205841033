//! A small synchronous facade over `rtnetlink` for the plugins: links, addresses, routes in any table,
//! policy rules and static neighbours, in the network namespace of the thread that opened it.
//!
//! Each [`Netlink`] owns a current-thread tokio runtime and one netlink connection; open one per namespace
//! (see [`crate::netns::run_in`]) and use it from that thread only.

use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkMessage};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::rule::{RuleAction, RuleMessage};
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

mod values;

pub use values::{Address, Link, RouteEntry, RouteSpec, RuleEntry, RuleSpec, default_destination};
use values::{build_route, describe_route, describe_rule, parse_link, parse_route, parse_rule};

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
