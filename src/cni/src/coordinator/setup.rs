//! The ADD's netlink work ([`Setup`]): what the pod has ([`PodView`]), the veth to the host and
//! its per-pod host routes, MAC and sysctl options, the NIC's policy table ([`tune_pod_routes`])
//! and `policyRoutes`, following the decisions of [`super::plan`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use ipnetwork::IpNetwork;

use super::config::{Mode, Settings};
use super::plan::{
    DEFAULT_POD_RULE_TABLE, HOST_RULE_PRIORITY, ModeDecision, UNDERLAY_VETH, decide_tune,
    host_veth_name, is_excluded_host_interface, mac_with_prefix, resolve_mode,
};
use super::{announce, detect, format_mac, random_mac, write_sysctl};
use crate::netlink::{
    Address, Link, MAIN_TABLE, Netlink, RouteEntry, RouteSpec, RuleSpec, Scope,
    default_destination, is_global_unicast,
};
use crate::netns;
use crate::protocol::{CniError, CniResult};

/// What ADD learns inside the pod before changing anything.
struct PodView {
    current: Link,
    current_addresses: Vec<Address>,
    all_pod_ips: Vec<IpAddr>,
    veth0_exists: bool,
    up_links: u32,
    first_nic: Option<Link>,
}

pub(super) struct Setup<'a> {
    pub settings: &'a Settings,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub container_id: &'a str,
}

impl Setup<'_> {
    fn in_pod<T: Send>(
        &self,
        work: impl FnOnce(&Netlink) -> Result<T, CniError> + Send,
    ) -> Result<T, CniError> {
        netns::run_in(self.netns, move || work(&Netlink::open()?))
    }

    pub fn run(&self, previous: &CniResult) -> Result<(), CniError> {
        let settings = self.settings;
        let host = Netlink::open()?;
        let view = self.inspect_pod()?;
        let ipv4 = view
            .current_addresses
            .iter()
            .any(|address| address.network.is_ipv4());
        let ipv6 = view
            .current_addresses
            .iter()
            .any(|address| address.network.is_ipv6());
        if !ipv4 && !ipv6 {
            return Err(CniError::plugin(format!(
                "no usable IP addresses on {}",
                self.ifname
            )));
        }
        let family_ok = |ip: &IpAddr| (ip.is_ipv4() && ipv4) || (ip.is_ipv6() && ipv6);
        let decision = resolve_mode(
            settings.mode,
            self.ifname,
            &settings.pod_default_cni_nic,
            view.veth0_exists,
            view.up_links,
        )?;
        log::info!("{} resolved to {:?}", self.ifname, decision);

        // Checks run before anything is created, so a refused address leaves nothing behind.
        if settings.detect_ip_conflict || settings.detect_gateway {
            self.detect(&view, previous)?;
        }

        let host_ips: Vec<IpAddr> = host_ips_for_pod(&host, &view.all_pod_ips)?
            .into_iter()
            .filter(|ip| family_ok(ip))
            .collect();
        log::debug!("host addresses routed via the veth: {host_ips:?}");

        let (pod_veth_name, host_veth) = match decision.mode {
            Mode::Underlay => {
                let host_name = host_veth_name(self.container_id);
                if decision.first_invoke {
                    self.create_veth(&host, &host_name, ipv4)?;
                }
                let host_veth = host.link_by_name(&host_name)?.ok_or_else(|| {
                    CniError::plugin(format!(
                        "host side {host_name} of the pod's {UNDERLAY_VETH} does not exist"
                    ))
                })?;
                (UNDERLAY_VETH.to_string(), host_veth)
            }
            _ => {
                let first = view.first_nic.as_ref().ok_or_else(|| {
                    CniError::plugin(format!(
                        "pod interface {} does not exist",
                        settings.pod_default_cni_nic
                    ))
                })?;
                let peer = first
                    .parent_index
                    .filter(|_| first.link_netnsid.is_some())
                    .ok_or_else(|| {
                        CniError::plugin(format!(
                            "pod interface {} is not a veth with its peer on the host",
                            settings.pod_default_cni_nic
                        ))
                    })?;
                let host_veth = host.link_by_index(peer)?.ok_or_else(|| {
                    CniError::plugin(format!(
                        "host peer #{peer} of pod interface {} not found",
                        first.name
                    ))
                })?;
                (settings.pod_default_cni_nic.clone(), host_veth)
            }
        };

        self.tune_pod_interface(&view)?;

        // Static neighbours: the host reaches the pod's addresses at the pod veth's MAC, and the pod (first
        // NIC) reaches the host addresses at the host veth's MAC, without ARP across the veth.
        let current_ips: Vec<IpAddr> = view
            .current_addresses
            .iter()
            .map(|address| address.network.ip())
            .collect();
        let pod_veth_name_for_pod = pod_veth_name.clone();
        let pod_veth_mac =
            self.in_pod(move |netlink| Ok(netlink.require_link(&pod_veth_name_for_pod)?.mac))?;
        for ip in &current_ips {
            host.set_permanent_neighbour(&host_veth, *ip, &pod_veth_mac)?;
        }

        // Host side: `from all lookup <hostRuleTable>` and the pod's addresses via the veth in that table.
        for family_v4 in [true, false] {
            if (family_v4 && ipv4) || (!family_v4 && ipv6) {
                host.ensure_rule(&RuleSpec {
                    ipv4: family_v4,
                    src: None,
                    dst: None,
                    table: settings.host_rule_table,
                    priority: Some(HOST_RULE_PRIORITY),
                })?;
            }
        }
        let host_table_routes = host.routes_in_table(settings.host_rule_table, None)?;
        for ip in &current_ips {
            let destination = host_route_destination(*ip);
            for stale in host_table_routes
                .iter()
                .filter(|route| route.dst == Some(destination))
            {
                host.del_route(stale)?;
            }
            host.add_route(&RouteSpec {
                oif: Some(host_veth.index),
                table: settings.host_rule_table,
                scope: Scope::Link,
                ..RouteSpec::new(destination)
            })?;
        }

        let hijack_gateway_v4 = host_ips.iter().copied().find(IpAddr::is_ipv4);
        let hijack_gateway_v6 = host_ips.iter().copied().find(IpAddr::is_ipv6);
        let host_veth_mac = host_veth.mac.clone();
        let settings_in_pod = settings.clone();
        let ifname = self.ifname.to_string();
        self.in_pod(move |netlink| {
            let pod_veth = netlink.require_link(&pod_veth_name)?;
            if decision.first_invoke {
                for ip in &host_ips {
                    netlink.set_permanent_neighbour(&pod_veth, *ip, &host_veth_mac)?;
                }
            }
            // The node's addresses via the veth, in the NIC's table (and main for the first NIC).
            for ip in &host_ips {
                let mut route = RouteSpec {
                    oif: Some(pod_veth.index),
                    scope: Scope::Link,
                    table: decision.rule_table,
                    ..RouteSpec::new(host_route_destination(*ip))
                };
                netlink.add_route(&route)?;
                if decision.first_invoke {
                    route.table = MAIN_TABLE;
                    netlink.add_route(&route)?;
                }
            }
            // Cluster and service CIDRs via the node.
            for cidr in &settings_in_pod.hijack_cidrs {
                let gateway = if cidr.is_ipv4() {
                    hijack_gateway_v4
                } else {
                    hijack_gateway_v6
                };
                let Some(gateway) = gateway else {
                    log::warn!("ignoring hijack route {cidr}: no host address of that family");
                    continue;
                };
                let table = if decision.first_invoke {
                    MAIN_TABLE
                } else {
                    decision.rule_table
                };
                netlink.add_route(&RouteSpec {
                    gateway: Some(gateway),
                    oif: Some(pod_veth.index),
                    table,
                    ..RouteSpec::new(*cidr)
                })?;
            }
            if settings_in_pod.tune_pod_routes
                && (!decision.first_invoke || decision.mode == Mode::Overlay)
            {
                tune_pod_routes(netlink, &settings_in_pod, &decision, &ifname, ipv4, ipv6)?;
            }
            install_policy_routes(netlink, &settings_in_pod, &decision, &ifname, ipv4, ipv6)
        })
    }

    fn inspect_pod(&self) -> Result<PodView, CniError> {
        let ifname = self.ifname.to_string();
        let first_nic_name = self.settings.pod_default_cni_nic.clone();
        self.in_pod(move |netlink| {
            let mut current = netlink.link_by_name(&ifname)?.ok_or_else(|| {
                CniError::plugin(format!("interface {ifname} does not exist in the pod"))
            })?;
            if !current.is_up() {
                netlink.set_up(&current)?;
                current = netlink.require_link(&ifname)?;
            }
            let links = netlink.links()?;
            let current_addresses = netlink.unicast_addresses(current.index)?;
            let mut all_pod_ips = Vec::new();
            for link in links.iter().filter(|link| !link.is_loopback()) {
                all_pod_ips.extend(
                    netlink
                        .unicast_addresses(link.index)?
                        .iter()
                        .map(|address| address.network.ip()),
                );
            }
            Ok(PodView {
                veth0_exists: links.iter().any(|link| link.name == UNDERLAY_VETH),
                up_links: u32::try_from(
                    links
                        .iter()
                        .filter(|link| link.is_up_ethernet_like())
                        .count(),
                )
                .unwrap_or(u32::MAX),
                first_nic: links
                    .iter()
                    .find(|link| link.name == first_nic_name)
                    .cloned(),
                current,
                current_addresses,
                all_pod_ips,
            })
        })
    }

    /// Underlay, first NIC: the veth pair, created from the host with its peer born inside the pod.
    fn create_veth(&self, host: &Netlink, host_name: &str, ipv4: bool) -> Result<(), CniError> {
        if let Some(stale) = host.link_by_name(host_name)? {
            log::warn!("removing stale host veth {host_name} before re-creating it");
            host.del_link(&stale)?;
        }
        let namespace = netns::open(self.netns)?;
        host.add_veth_with_peer_in(
            host_name,
            &random_mac()?,
            UNDERLAY_VETH,
            &random_mac()?,
            self.settings.veth_mtu,
            &namespace,
        )?;
        host.set_up(&host.require_link(host_name)?)?;
        let link_address = self
            .settings
            .veth_link_address
            .filter(|address| address.is_ipv4() && ipv4);
        self.in_pod(move |netlink| {
            let veth = netlink.require_link(UNDERLAY_VETH)?;
            netlink.set_up(&veth)?;
            if let Some(address) = link_address {
                let network = IpNetwork::new(address, 32).map_err(|error| {
                    CniError::invalid_config(format!("invalid vethLinkAddress: {error}"))
                })?;
                netlink.add_address(&veth, network)?;
            }
            Ok(())
        })
    }

    /// ARP/NDP checks of the current NIC's addresses and of the gateways the main plugin returned for them.
    fn detect(&self, view: &PodView, previous: &CniResult) -> Result<(), CniError> {
        let settings = self.settings.clone();
        let current = view.current.clone();
        let addresses = view.current_addresses.clone();
        let own_ips: BTreeSet<IpAddr> = addresses
            .iter()
            .map(|address| address.network.ip())
            .collect();
        let gateways: Vec<IpAddr> = previous
            .ips
            .iter()
            .filter(|ip| own_ips.contains(&ip.address.ip()))
            .filter_map(|ip| ip.gateway)
            .collect();
        self.in_pod(move |_netlink| {
            let mac = <[u8; 6]>::try_from(current.mac.as_slice()).map_err(|_| {
                CniError::plugin(format!("{} has no Ethernet address", current.name))
            })?;
            detect(&current, mac, &addresses, &gateways, &settings)
        })
    }

    /// MAC rewrite, txqueuelen and sysctls of the current NIC.
    fn tune_pod_interface(&self, view: &PodView) -> Result<(), CniError> {
        let settings = self.settings.clone();
        let current = view.current.clone();
        let addresses = view.current_addresses.clone();
        self.in_pod(move |netlink| {
            // The MAC is rewritten after the conflict check, so switches never learn a MAC for a refused IP.
            if let (Some(prefix), Some(first)) = (settings.pod_mac_prefix, addresses.first()) {
                let new_mac = mac_with_prefix(prefix, first.network.ip());
                netlink.set_mac(&current, &new_mac)?;
                log::info!(
                    "set {} hardware address to {}",
                    current.name,
                    format_mac(&new_mac)
                );
                announce(&current, new_mac, &addresses);
            }
            if settings.tx_queue_len > 0 {
                netlink.set_tx_queue_len(&current, settings.tx_queue_len)?;
            }
            if addresses.iter().any(|address| address.network.is_ipv6()) {
                write_sysctl("net/ipv6/conf/all/disable_ipv6", "0")?;
            }
            if let Some(value) = settings.pod_rp_filter {
                write_sysctl("net/ipv4/conf/all/rp_filter", &value.to_string())?;
            }
            Ok(())
        })
    }
}

/// `/32` or `/128` of `ip`.
pub(super) fn host_route_destination(ip: IpAddr) -> IpNetwork {
    IpNetwork::from(ip)
}

/// Node addresses the pod must reach via the veth: the source the node uses towards each pod address, then
/// every other node address outside the excluded interfaces (upstream `GetAllHostIPRouteForPod`).
fn host_ips_for_pod(host: &Netlink, pod_ips: &[IpAddr]) -> Result<Vec<IpAddr>, CniError> {
    let mut result: Vec<IpAddr> = Vec::new();
    for ip in pod_ips {
        match host.route_get(*ip) {
            Ok(Some(route)) => {
                if let Some(source) = route.pref_src
                    && !result.contains(&source)
                {
                    result.push(source);
                }
            }
            Ok(None) => log::warn!("the node has no route to pod address {ip}"),
            Err(error) => log::warn!("{error}"),
        }
    }
    let links = host.links()?;
    for address in host.addresses(None)? {
        let Some(link) = links.iter().find(|link| link.index == address.index) else {
            continue;
        };
        let ip = address.network.ip();
        if is_excluded_host_interface(&link.name) || !is_global_unicast(ip) || result.contains(&ip)
        {
            continue;
        }
        result.push(ip);
    }
    Ok(result)
}

/// Move routes out of the main table so that only the default-route NIC keeps a main-table default route,
/// and add the policy rules that send the other NIC's traffic to its table.
fn tune_pod_routes(
    netlink: &Netlink,
    settings: &Settings,
    decision: &ModeDecision,
    current_nic: &str,
    ipv4: bool,
    ipv6: bool,
) -> Result<(), CniError> {
    let family_ok = |family_v4: bool| (family_v4 && ipv4) || (!family_v4 && ipv6);
    let links = netlink.links()?;
    let main_routes: Vec<RouteEntry> = netlink
        .routes_in_table(MAIN_TABLE, None)?
        .into_iter()
        .filter(|route| family_ok(route.family_v4))
        .collect();
    let has_default_via = |link: &Link| {
        main_routes.iter().any(|route| {
            route.is_default()
                && (route.oif == Some(link.index)
                    || route
                        .multipath
                        .iter()
                        .any(|(index, _)| *index == link.index))
        })
    };
    let detected = links
        .iter()
        .filter(|link| !link.is_loopback() && link.name != current_nic)
        .find(|link| has_default_via(link));
    let configured = settings.pod_default_route_nic.as_deref();
    let configured_exists =
        configured.is_some_and(|name| links.iter().any(|link| link.name == name));
    let Some(tune) = decide_tune(
        current_nic,
        configured,
        detected.map(|link| link.name.as_str()),
        configured_exists,
    )?
    else {
        log::warn!(
            "no other pod NIC has a default route; routes of {current_nic} stay in the main table"
        );
        return Ok(());
    };
    log::info!("tuning routes: {tune:?}, table {}", decision.rule_table);

    let rule_link = netlink.require_link(&tune.rule_nic)?;
    for address in netlink.unicast_addresses(rule_link.index)? {
        if !family_ok(address.network.is_ipv4()) {
            continue;
        }
        // `to <ip>/<prefix>` first, then `from <ip>`: with kernel-chosen priorities this yields the order
        // `from` (32764) before `to` (32765) that users know from the Spiderpool docs.
        netlink.ensure_rule(&RuleSpec {
            ipv4: address.network.is_ipv4(),
            src: None,
            dst: Some(address.network),
            table: decision.rule_table,
            priority: None,
        })?;
        netlink.ensure_rule(&RuleSpec {
            ipv4: address.network.is_ipv4(),
            src: Some(IpNetwork::from(address.network.ip())),
            dst: None,
            table: decision.rule_table,
            priority: None,
        })?;
    }

    if decision.mode == Mode::Overlay && decision.first_invoke && tune.rule_nic == current_nic {
        // Replies to traffic that came in through the overlay eth0 go back through it (upstream #3683).
        let overlay = netlink.require_link(&tune.default_route_nic)?;
        for address in netlink.unicast_addresses(overlay.index)? {
            if family_ok(address.network.is_ipv4()) {
                netlink.ensure_rule(&RuleSpec {
                    ipv4: address.network.is_ipv4(),
                    src: Some(IpNetwork::from(address.network.ip())),
                    dst: None,
                    table: DEFAULT_POD_RULE_TABLE,
                    priority: None,
                })?;
            }
        }
        if let Some(first) = links
            .iter()
            .find(|link| link.name == settings.pod_default_cni_nic)
        {
            for route in main_routes
                .iter()
                .filter(|route| route.is_default() && route.oif == Some(first.index))
            {
                netlink.add_route(&RouteSpec::copy_of(route, DEFAULT_POD_RULE_TABLE))?;
            }
        }
    }

    let move_link = netlink.require_link(&tune.move_nic)?;
    for route in &main_routes {
        if route.dst.is_some_and(|dst| dst.to_string() == "fe80::/64") {
            continue;
        }
        if route.oif == Some(move_link.index) {
            netlink.add_route(&RouteSpec::copy_of(route, decision.rule_table))?;
            if route.is_default() {
                netlink.del_route(route)?;
            }
        } else if route.is_default()
            && let Some((index, gateway)) = route
                .multipath
                .iter()
                .find(|(index, _)| *index == move_link.index)
        {
            // IPv6 default routes of several NICs are merged into one multipath route: split ours out.
            let hop = RouteSpec {
                dst: default_destination(route.family_v4),
                gateway: *gateway,
                oif: Some(*index),
                protocol: route.protocol,
                ..RouteSpec::new(default_destination(route.family_v4))
            };
            netlink.add_route(&RouteSpec {
                table: decision.rule_table,
                ..hop.clone()
            })?;
            netlink.del_route_spec(&hop)?;
        }
    }
    Ok(())
}

/// `policyRoutes` via the current NIC, in its table (main for the first underlay NIC).
fn install_policy_routes(
    netlink: &Netlink,
    settings: &Settings,
    decision: &ModeDecision,
    current_nic: &str,
    ipv4: bool,
    ipv6: bool,
) -> Result<(), CniError> {
    if settings.policy_routes.is_empty() {
        return Ok(());
    }
    let table = if decision.mode == Mode::Underlay && decision.first_invoke {
        MAIN_TABLE
    } else {
        decision.rule_table
    };
    let link = netlink.require_link(current_nic)?;
    for (dst, gateway) in &settings.policy_routes {
        if (dst.is_ipv4() && !ipv4) || (dst.is_ipv6() && !ipv6) {
            log::debug!("skipping policy route {dst}: {current_nic} has no address of that family");
            continue;
        }
        netlink.add_route(&RouteSpec {
            gateway: Some(*gateway),
            oif: Some(link.index),
            table,
            ..RouteSpec::new(*dst)
        })?;
    }
    Ok(())
}
