//! `coordinator`: runs after the main CNI plugin of every pod NIC and makes several NICs work together.
//!
//! * **underlay** (first NIC, or a later one once `veth0` exists): the first NIC gets a veth pair to the host
//!   (`veth0` in the pod, `veth<containerID[:11]>` on the host) so the pod reaches its node and, through
//!   hijack routes (`overlayPodCIDR` + `serviceCIDR` + `hijackCIDR`), cluster services;
//! * **overlay** (a NIC added next to a CNI-managed `eth0` veth): the existing `eth0` plays the veth's part;
//! * **disable** / **disabled**: the previous result is passed through untouched.
//!
//! Every NIC other than the default-route NIC gets its own policy table (`from <ip> lookup <table>`, its
//! routes moved out of the main table), so replies leave by the NIC the request came in on. The host gets
//! `from all lookup <hostRuleTable>` and per-pod-IP routes via the veth in that table. Options: MAC rewrite
//! (`podMACPrefix`), `rp_filter`, `txQueueLen`, veth MTU and address, policy routes, and IP-conflict and
//! gateway checks ([`crate::neighbour`]: ARP for IPv4, NDP for IPv6), with the new MAC announced the same
//! way after a rewrite.
//!
//! Settings come from the NAD entry with a [`FallbackSource`] for absent keys ([`config`]); pure decisions
//! live in [`plan`]; `setup` does the ADD's netlink work on the host (the plugin's own namespace) and
//! inside the pod (through [`crate::netns::run_in`]); this module is the plugin (ADD, DEL, CHECK), the
//! neighbour checks and the host-side teardown.

pub mod config;
pub mod kube_fallback;
pub mod plan;
mod setup;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;

use self::config::{
    CoordinatorConfig, Fallback, FallbackSource, FileFallback, Mode, Settings, StaticFallback,
};
use self::plan::host_veth_name;
use self::setup::{Setup, host_route_destination};
use crate::neighbour::{self, Neighbours, Timing};
use crate::netlink::{Address, Link, Netlink};
use crate::netns;
use crate::protocol::{CniError, CniResult, Context, ErrorCode, K8S_ARG_KEYS, Plugin, logging};

/// Tries and per-try timeout of the ARP and NDP checks (upstream: 3 tries, 100 ms, for both).
const DETECTION: Timing = Timing {
    tries: 3,
    per_try: Duration::from_millis(100),
};
/// Bound on reading the SpiderCoordinator and the pod from the API server.
const KUBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The `coordinator` plugin. The fallback source supplies values for keys the NAD entry leaves out; a
/// `spiderCoordinatorFile` named in the configuration takes its place.
#[derive(Clone)]
pub struct Coordinator {
    fallback: Arc<dyn FallbackSource>,
}

impl Default for Coordinator {
    fn default() -> Self {
        Self::with_fallback(Arc::new(StaticFallback::default()))
    }
}

impl Coordinator {
    pub fn with_fallback(fallback: Arc<dyn FallbackSource>) -> Self {
        Self { fallback }
    }

    fn fallback(
        &self,
        context: &Context,
        config: &CoordinatorConfig,
    ) -> Result<Fallback, CniError> {
        let pod = context.k8s();
        if let Some(path) = &config.spider_coordinator_file {
            return FileFallback::new(path).load(&pod);
        }
        let kubeconfig = config.kubeconfig.clone().or_else(|| {
            let default =
                std::path::PathBuf::from(spiderpool_ipam::config::DEFAULT_KUBECONFIG_PATH);
            default.exists().then_some(default)
        });
        match kubeconfig {
            Some(kubeconfig) => kube_fallback::KubeFallback {
                kubeconfig,
                coordinator_name: config
                    .spider_coordinator_name
                    .clone()
                    .unwrap_or_else(|| kube_fallback::DEFAULT_COORDINATOR_NAME.to_owned()),
                timeout: KUBE_TIMEOUT,
            }
            .load(&pod),
            None => self.fallback.load(&pod),
        }
    }

    /// Merge and validate, then apply the logging options.
    fn settings(
        &self,
        config: &CoordinatorConfig,
        fallback: &Fallback,
    ) -> Result<Settings, CniError> {
        let settings = Settings::merge(config, fallback)?;
        if let Some(file) = &settings.log_file {
            logging::log_to_file(file)?;
        }
        if let Some(level) = &settings.log_level {
            logging::set_level(logging::parse_level(level)?);
        }
        Ok(settings)
    }
}

impl Plugin for Coordinator {
    fn name(&self) -> &'static str {
        "coordinator"
    }

    fn add(&self, context: &Context) -> Result<CniResult, CniError> {
        check_cni_args(context)?;
        let config: CoordinatorConfig = context.config()?;
        let settings = self.settings(&config, &self.fallback(context, &config)?)?;
        if settings.mode == Mode::Disable {
            return Ok(context.pass_through());
        }
        let Some(previous) = context.prev_result.clone() else {
            return Err(CniError::invalid_config(
                "coordinator must run after the main plugin in a chain: prevResult is missing",
            ));
        };
        let netns = context.netns()?;
        log::info!(
            "ADD container={} netns={} ifname={} mode={:?}",
            context.env.container_id,
            netns.display(),
            context.env.ifname,
            settings.mode
        );
        Setup {
            settings: &settings,
            netns,
            ifname: &context.env.ifname,
            container_id: &context.env.container_id,
        }
        .run(&previous)?;
        Ok(previous)
    }

    fn del(&self, context: &Context) -> Result<(), CniError> {
        check_cni_args(context)?;
        let config: CoordinatorConfig = context.config()?;
        // An unreadable fallback must not block cleanup: DEL then uses the built-in defaults.
        let fallback = self.fallback(context, &config).unwrap_or_else(|error| {
            log::warn!("DEL: using default coordinator settings: {error}");
            Fallback::default()
        });
        let settings = self.settings(&config, &fallback)?;
        if settings.mode == Mode::Disable {
            return Ok(());
        }
        teardown(&settings, context)
    }

    fn check(&self, context: &Context) -> Result<(), CniError> {
        let config: CoordinatorConfig = context.config()?;
        let settings = self.settings(&config, &self.fallback(context, &config)?)?;
        if settings.mode == Mode::Disable {
            return Ok(());
        }
        if context.prev_result.is_none() {
            return Err(CniError::invalid_config(
                "coordinator CHECK needs prevResult",
            ));
        }
        let ifname = context.env.ifname.clone();
        netns::run_in(context.netns()?, move || {
            let netlink = Netlink::open()?;
            if netlink.link_by_name(&ifname)?.is_none() {
                return Err(CniError::plugin(format!(
                    "interface {ifname} does not exist in the pod"
                )));
            }
            Ok(())
        })
    }
}

/// Unknown `CNI_ARGS` keys fail unless `IgnoreUnknown` is set, as upstream's `types.LoadArgs`.
fn check_cni_args(context: &Context) -> Result<(), CniError> {
    context
        .env
        .args
        .check_known(K8S_ARG_KEYS)
        .map_err(|error| error.context("failed to load CNI ENV args"))
}

/// Conflict and gateway checks on the current NIC: ARP for IPv4, NDP for IPv6. Conflicts are checked
/// first, so a gateway never learns the link address of a refused address (upstream issue 4475).
fn detect(
    current: &Link,
    mac: [u8; 6],
    addresses: &[Address],
    gateways: &[IpAddr],
    settings: &Settings,
) -> Result<(), CniError> {
    let neighbours = Neighbours::new(current.index, mac, DETECTION);
    let failed = |address: IpAddr| {
        move |error: std::io::Error| {
            CniError::network(format!(
                "{} on {} failed: {error}",
                neighbour::protocol(address),
                current.name
            ))
        }
    };
    if settings.detect_ip_conflict {
        for address in addresses.iter().map(|address| address.network.ip()) {
            if let Some(owner) = neighbours.find_owner(address).map_err(failed(address))? {
                return Err(CniError::new(
                    ErrorCode::IP_CONFLICT,
                    format!(
                        "ip conflict: {address} is already used by {}",
                        format_mac(&owner)
                    ),
                )
                .with_details(format!(
                    "detected by an {} probe on {}",
                    neighbour::protocol(address),
                    current.name
                )));
            }
        }
    }
    if settings.detect_gateway {
        for gateway in gateways.iter().copied() {
            let Some(source) = addresses
                .iter()
                .map(|address| address.network.ip())
                .find(|ip| ip.is_ipv4() == gateway.is_ipv4())
            else {
                log::warn!(
                    "{} has no address of the family of gateway {gateway}; not checked",
                    current.name
                );
                continue;
            };
            if neighbours
                .resolve(source, gateway)
                .map_err(failed(gateway))?
                .is_none()
            {
                return Err(CniError::new(
                    ErrorCode::GATEWAY_UNREACHABLE,
                    format!("gateway {gateway} is unreachable from {}", current.name),
                )
                .with_details(format!(
                    "no {} reply after {} tries",
                    neighbour::protocol(gateway),
                    DETECTION.tries
                )));
            }
        }
    }
    Ok(())
}

/// Announce the NIC's addresses after a MAC change: gratuitous ARP for IPv4, an unsolicited neighbour
/// advertisement for IPv6 (errors are only logged, as upstream).
fn announce(current: &Link, mac: [u8; 6], addresses: &[Address]) {
    let neighbours = Neighbours::new(current.index, mac, DETECTION);
    for address in addresses.iter().map(|address| address.network.ip()) {
        if let Err(error) = neighbours.announce(address) {
            log::warn!(
                "failed to announce {address} by {}: {error}",
                neighbour::protocol(address)
            );
        }
    }
}

fn write_sysctl(key: &str, value: &str) -> Result<(), CniError> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::write(&path, value).map_err(|error| {
        CniError::network(format!(
            "failed to set {} to {value}: {error}",
            key.replace('/', ".")
        ))
    })
}

/// A random locally administered unicast MAC (set explicitly so udev/systemd do not rewrite it later).
fn random_mac() -> Result<[u8; 6], CniError> {
    use std::io::Read;
    let mut mac = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut mac))
        .map_err(|error| CniError::internal(format!("failed to read /dev/urandom: {error}")))?;
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// DEL: remove the host side (veth, per-pod routes and rules in `hostRuleTable`). Idempotent.
fn teardown(settings: &Settings, context: &Context) -> Result<(), CniError> {
    let host = Netlink::open()?;
    let mut pod_ips: BTreeSet<IpAddr> = BTreeSet::new();
    if let Some(previous) = &context.prev_result {
        pod_ips.extend(previous.ips.iter().map(|ip| ip.address.ip()));
    }
    if let Some(path) = context
        .env
        .netns
        .as_deref()
        .filter(|path| netns::exists(path))
    {
        let ifname = context.env.ifname.clone();
        let found = netns::run_in(path, move || {
            let netlink = Netlink::open()?;
            match netlink.link_by_name(&ifname)? {
                Some(link) => Ok(netlink
                    .unicast_addresses(link.index)?
                    .iter()
                    .map(|a| a.network.ip())
                    .collect()),
                None => Ok(Vec::new()),
            }
        });
        match found {
            Ok(ips) => pod_ips.extend(ips),
            Err(error) => {
                log::warn!("DEL: cannot read pod addresses, using prevResult only: {error}")
            }
        }
    }

    let host_name = host_veth_name(&context.env.container_id);
    if let Some(link) = host.link_by_name(&host_name)?
        && link.kind.as_deref() == Some("veth")
    {
        host.del_link(&link)?;
        log::info!("DEL: removed host veth {host_name}");
    }

    let destinations: BTreeSet<IpNetwork> = pod_ips
        .iter()
        .copied()
        .map(host_route_destination)
        .collect();
    for route in host.routes_in_table(settings.host_rule_table, None)? {
        if route.dst.is_some_and(|dst| destinations.contains(&dst)) {
            host.del_route(&route)?;
        }
    }
    for family_v4 in [true, false] {
        for rule in host.rules(family_v4)? {
            if rule.table == settings.host_rule_table
                && rule.dst.is_some_and(|dst| destinations.contains(&dst))
            {
                host.del_rule(&rule)?;
            }
        }
    }
    Ok(())
}
