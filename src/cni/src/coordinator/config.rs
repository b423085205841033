//! Coordinator configuration: the NAD entry's keys, the cluster-wide fallback (a SpiderCoordinator and the
//! pod's `ipam.spidernet.io/default-route-nic` annotation) and their merge into [`Settings`].
//!
//! A key present in the NAD entry wins; an absent key takes the fallback value; the fallback's own
//! defaults are the SpiderCoordinator webhook defaults (mode `auto`, `tunePodRoutes: true`,
//! `hostRuleTable: 500`, `vethMTU: 1500`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::protocol::{CniError, K8sArgs};

/// Pod annotation naming the NIC that keeps the main-table default route.
pub const DEFAULT_ROUTE_NIC_ANNOTATION: &str = "ipam.spidernet.io/default-route-nic";

/// The coordinator's keys in the network configuration (NAD entry of section 3.4 plus upstream's plugin-only
/// keys and our `spiderCoordinatorFile`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CoordinatorConfig {
    #[serde(rename = "txQueueLen", default)]
    pub tx_queue_len: Option<i64>,
    #[serde(rename = "detectIPConflict", default)]
    pub detect_ip_conflict: Option<bool>,
    #[serde(rename = "detectGateway", default)]
    pub detect_gateway: Option<bool>,
    #[serde(rename = "vethLinkAddress", default)]
    pub veth_link_address: Option<String>,
    #[serde(rename = "vethMTU", default)]
    pub veth_mtu: Option<i64>,
    #[serde(rename = "tunePodRoutes", default)]
    pub tune_pod_routes: Option<bool>,
    #[serde(rename = "podMACPrefix", default)]
    pub pod_mac_prefix: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(rename = "podDefaultRouteNic", default)]
    pub pod_default_route_nic: Option<String>,
    #[serde(rename = "podRPFilter", default)]
    pub pod_rp_filter: Option<i64>,
    #[serde(rename = "overlayPodCIDR", default)]
    pub overlay_pod_cidr: Option<Vec<String>>,
    #[serde(rename = "serviceCIDR", default)]
    pub service_cidr: Option<Vec<String>>,
    #[serde(rename = "hijackCIDR", default)]
    pub hijack_cidr: Option<Vec<String>>,
    #[serde(rename = "policyRoutes", default)]
    pub policy_routes: Option<Vec<PolicyRoute>>,
    #[serde(rename = "hostRuleTable", default)]
    pub host_rule_table: Option<i64>,
    /// Parsed and unused, as upstream.
    #[serde(rename = "hostRPFilter", default)]
    pub host_rp_filter: Option<i64>,
    /// The pod's first NIC (default `eth0`).
    #[serde(rename = "podDefaultCniNic", default)]
    pub pod_default_cni_nic: Option<String>,
    #[serde(rename = "logOptions", default)]
    pub log_options: Option<LogOptions>,
    /// A JSON file holding a SpiderCoordinator-like object used as the fallback (see [`FileFallback`]).
    #[serde(rename = "spiderCoordinatorFile", default)]
    pub spider_coordinator_file: Option<PathBuf>,
    /// Kubeconfig for reading the SpiderCoordinator and the pod (ours; default: the IPAM plugin's
    /// `/etc/cni/net.d/spiderpool.d/spiderpool.kubeconfig`, used when that file exists).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Name of the SpiderCoordinator holding the cluster defaults (ours; default `default`).
    #[serde(rename = "spiderCoordinatorName", default)]
    pub spider_coordinator_name: Option<String>,
}

/// `{dst, gw}` of `policyRoutes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PolicyRoute {
    #[serde(default)]
    pub dst: String,
    #[serde(default)]
    pub gw: String,
}

/// `logOptions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct LogOptions {
    #[serde(rename = "logLevel", default)]
    pub log_level: String,
    #[serde(rename = "logFile", default)]
    pub log_file: String,
}

/// Cluster-wide coordinator settings (the fields of a SpiderCoordinator's spec and status that the plugin
/// uses), with the pod's default-route-NIC annotation already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub mode: String,
    pub overlay_pod_cidr: Vec<String>,
    pub service_cidr: Vec<String>,
    pub hijack_cidr: Vec<String>,
    pub policy_routes: Vec<PolicyRoute>,
    pub pod_mac_prefix: String,
    pub pod_default_route_nic: String,
    pub tune_pod_routes: bool,
    pub host_rule_table: i64,
    pub pod_rp_filter: i64,
    pub tx_queue_len: i64,
    pub veth_link_address: String,
    pub veth_mtu: i64,
}

impl Default for Fallback {
    fn default() -> Self {
        Self {
            mode: "auto".into(),
            overlay_pod_cidr: Vec::new(),
            service_cidr: Vec::new(),
            hijack_cidr: Vec::new(),
            policy_routes: Vec::new(),
            pod_mac_prefix: String::new(),
            pod_default_route_nic: String::new(),
            tune_pod_routes: true,
            host_rule_table: 500,
            pod_rp_filter: 0,
            tx_queue_len: 0,
            veth_link_address: String::new(),
            veth_mtu: 1500,
        }
    }
}

/// Where the fallback comes from. The binary reads a file named in the configuration; the IPAM plugin's
/// author can plug in an API-server reader of the SpiderCoordinator object and the pod.
pub trait FallbackSource: Send + Sync {
    fn load(&self, pod: &K8sArgs) -> Result<Fallback, CniError>;
}

/// A fixed fallback (the built-in defaults unless given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticFallback(pub Fallback);

impl FallbackSource for StaticFallback {
    fn load(&self, _pod: &K8sArgs) -> Result<Fallback, CniError> {
        Ok(self.0.clone())
    }
}

/// A JSON file shaped like a SpiderCoordinator object, plus pod annotations keyed by `namespace/name`:
///
/// ```json
/// {"spec": {"mode": "underlay", "podDefaultRouteNIC": "net1", "hostRuleTable": 500, ...},
///  "status": {"overlayPodCIDR": ["10.244.0.0/16"], "serviceCIDR": ["10.96.0.0/12"]},
///  "pods": {"default/web-0": {"annotations": {"ipam.spidernet.io/default-route-nic": "net1"}}}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFallback {
    pub path: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
struct CoordinatorObject {
    #[serde(default)]
    spec: spiderpool_api::CoordinatorSpec,
    #[serde(default)]
    status: FileStatus,
    #[serde(default)]
    pods: BTreeMap<String, PodObject>,
}

/// The status part of the file; unlike the API object it may leave out `phase`.
#[derive(Debug, Default, Deserialize)]
struct FileStatus {
    #[serde(rename = "overlayPodCIDR", default)]
    overlay_pod_cidr: Vec<String>,
    #[serde(rename = "serviceCIDR", default)]
    service_cidr: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PodObject {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Upstream's agent serves the coordinator settings only once the SpiderCoordinator's status
/// phase is `Synced`: before that its pod and service CIDRs are unknown, and the pod would get
/// no route to Services. The error is "try again later": the kubelet retries the pod.
pub fn require_synced(
    name: &str,
    status: Option<&spiderpool_api::CoordinatorStatus>,
) -> Result<(), CniError> {
    let phase = status.map(|status| status.phase.as_str()).unwrap_or("");
    if phase == "Synced" {
        return Ok(());
    }
    let why = status
        .and_then(|status| status.reason.as_deref())
        .filter(|reason| !reason.is_empty())
        .unwrap_or("the spiderpool controller has not detected the cluster's CIDRs yet");
    let phase = if phase.is_empty() { "unset" } else { phase };
    Err(CniError::new(
        crate::protocol::ErrorCode::TRY_AGAIN_LATER,
        format!("SpiderCoordinator {name} is not Synced (phase {phase}): {why}"),
    ))
}

/// The fallback a SpiderCoordinator gives, with the pod's `ipam.spidernet.io/default-route-nic`
/// annotation (which beats the object's `podDefaultRouteNIC`, as upstream's agent does) applied.
/// Fields the object leaves out take the SpiderCoordinator webhook defaults.
pub fn fallback_from_coordinator(
    spec: &spiderpool_api::CoordinatorSpec,
    overlay_pod_cidr: Vec<String>,
    service_cidr: Vec<String>,
    default_route_nic_annotation: Option<&str>,
) -> Fallback {
    let defaults = Fallback::default();
    let mode = spec
        .mode
        .and_then(|mode| serde_json::to_value(mode).ok())
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or(defaults.mode);
    Fallback {
        mode,
        overlay_pod_cidr,
        service_cidr,
        hijack_cidr: spec.hijack_cidr.clone().unwrap_or_default(),
        policy_routes: spec
            .policy_routes
            .iter()
            .flatten()
            .map(|route| PolicyRoute {
                dst: route.dst.clone(),
                gw: route.gw.clone(),
            })
            .collect(),
        pod_mac_prefix: spec.pod_mac_prefix.clone().unwrap_or_default(),
        pod_default_route_nic: default_route_nic_annotation
            .map(str::to_owned)
            .or_else(|| spec.pod_default_route_nic.clone())
            .unwrap_or_default(),
        tune_pod_routes: spec.tune_pod_routes.unwrap_or(defaults.tune_pod_routes),
        host_rule_table: spec.host_rule_table.unwrap_or(defaults.host_rule_table),
        pod_rp_filter: spec.pod_rp_filter.unwrap_or(defaults.pod_rp_filter),
        tx_queue_len: spec.tx_queue_len.unwrap_or(defaults.tx_queue_len),
        veth_link_address: spec.veth_link_address.clone().unwrap_or_default(),
        veth_mtu: spec.veth_mtu.unwrap_or(defaults.veth_mtu),
    }
}

impl FileFallback {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    fn read(path: &Path) -> Result<CoordinatorObject, CniError> {
        let text = std::fs::read(path).map_err(|error| {
            CniError::invalid_config(format!(
                "failed to read spiderCoordinatorFile {}: {error}",
                path.display()
            ))
        })?;
        serde_json::from_slice(&text).map_err(|error| {
            CniError::invalid_config(format!(
                "failed to parse spiderCoordinatorFile {}: {error}",
                path.display()
            ))
        })
    }
}

impl FallbackSource for FileFallback {
    fn load(&self, pod: &K8sArgs) -> Result<Fallback, CniError> {
        let object = Self::read(&self.path)?;
        let annotation = match (&pod.pod_namespace, &pod.pod_name) {
            (Some(namespace), Some(name)) => object
                .pods
                .get(&format!("{namespace}/{name}"))
                .and_then(|pod| pod.annotations.get(DEFAULT_ROUTE_NIC_ANNOTATION))
                .cloned(),
            _ => None,
        };
        Ok(fallback_from_coordinator(
            &object.spec,
            object.status.overlay_pod_cidr,
            object.status.service_cidr,
            annotation.as_deref(),
        ))
    }
}

/// How the coordinator treats the current NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Underlay,
    Overlay,
    /// `disable`, or the CRD spelling `disabled` (deliberate difference #1).
    Disable,
}

impl Mode {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        match text {
            "auto" => Ok(Self::Auto),
            "underlay" => Ok(Self::Underlay),
            "overlay" => Ok(Self::Overlay),
            "disable" | "disabled" => Ok(Self::Disable),
            other => Err(CniError::invalid_config(format!(
                "unknown tuneMode: {other}, supported modes: auto, underlay, overlay, disable (or disabled)"
            ))),
        }
    }
}

/// The effective configuration after merging the NAD entry over the fallback and validating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    pub veth_link_address: Option<IpAddr>,
    pub veth_mtu: u32,
    pub pod_mac_prefix: Option<[u8; 2]>,
    pub pod_default_cni_nic: String,
    /// `overlayPodCIDR`, then `serviceCIDR`, then `hijackCIDR` (upstream order).
    pub hijack_cidrs: Vec<IpNetwork>,
    pub policy_routes: Vec<(IpNetwork, IpAddr)>,
    pub tune_pod_routes: bool,
    pub pod_default_route_nic: Option<String>,
    pub host_rule_table: u32,
    /// `None` leaves `rp_filter` unchanged (any negative value).
    pub pod_rp_filter: Option<u8>,
    pub tx_queue_len: u32,
    pub detect_ip_conflict: bool,
    pub detect_gateway: bool,
    pub log_level: Option<String>,
    pub log_file: Option<PathBuf>,
}

impl Settings {
    /// Merge `config` over `fallback` (upstream `ParseConfig`) and validate every value.
    pub fn merge(config: &CoordinatorConfig, fallback: &Fallback) -> Result<Self, CniError> {
        let mode_text = config
            .mode
            .clone()
            .filter(|mode| !mode.is_empty())
            .unwrap_or_else(|| fallback.mode.clone());
        let mode = Mode::parse(&mode_text)?;

        let veth_link_address = match non_empty(config.veth_link_address.as_deref())
            .or_else(|| non_empty(Some(fallback.veth_link_address.as_str())))
        {
            None => None,
            Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                CniError::invalid_config(format!(
                    "invalid vethLinkAddress {text:?}: not an IP address"
                ))
            })?),
        };

        let veth_mtu = match config.veth_mtu {
            Some(mtu) if mtu <= 0 => {
                return Err(CniError::invalid_config("vethMTU must be greater than 0"));
            }
            Some(mtu) => mtu,
            None if fallback.veth_mtu > 0 => fallback.veth_mtu,
            None => 1500,
        };
        let veth_mtu = u32::try_from(veth_mtu)
            .map_err(|_| CniError::invalid_config(format!("vethMTU {veth_mtu} is too large")))?;

        let prefix_text = non_empty(config.pod_mac_prefix.as_deref())
            .or_else(|| non_empty(Some(fallback.pod_mac_prefix.as_str())));
        let pod_mac_prefix = prefix_text.map(parse_mac_prefix).transpose()?;

        let pick = |own: &Option<Vec<String>>, global: &Vec<String>| -> Vec<String> {
            match own {
                Some(list) if !list.is_empty() => list.clone(),
                _ => global.clone(),
            }
        };
        let mut hijack_cidrs = Vec::new();
        for (field, list) in [
            (
                "overlayPodCIDR",
                pick(&config.overlay_pod_cidr, &fallback.overlay_pod_cidr),
            ),
            (
                "serviceCIDR",
                pick(&config.service_cidr, &fallback.service_cidr),
            ),
            (
                "hijackCIDR",
                pick(&config.hijack_cidr, &fallback.hijack_cidr),
            ),
        ] {
            for text in list {
                hijack_cidrs.push(parse_cidr(field, &text)?);
            }
        }

        let routes = match &config.policy_routes {
            Some(routes) if !routes.is_empty() => routes.clone(),
            _ => fallback.policy_routes.clone(),
        };
        let policy_routes = routes
            .iter()
            .map(parse_policy_route)
            .collect::<Result<Vec<_>, _>>()?;

        let rp_filter = config.pod_rp_filter.unwrap_or(fallback.pod_rp_filter);
        let pod_rp_filter = match rp_filter {
            value if value < 0 => None,
            value @ 0..=2 => u8::try_from(value).ok(),
            value => {
                return Err(CniError::invalid_config(format!(
                    "invalid rp_filter value {value}, available options: [-1,0,1,2]"
                )));
            }
        };

        let host_rule_table = match config.host_rule_table {
            Some(table) => table,
            None if fallback.host_rule_table > 0 => fallback.host_rule_table,
            None => 500,
        };
        let host_rule_table = u32::try_from(host_rule_table)
            .ok()
            .filter(|table| *table > 0 && !matches!(*table, 253..=255))
            .ok_or_else(|| {
                CniError::invalid_config(format!("invalid hostRuleTable {host_rule_table}"))
            })?;

        let tx_queue_len = config.tx_queue_len.unwrap_or(fallback.tx_queue_len).max(0);
        let tx_queue_len = u32::try_from(tx_queue_len).map_err(|_| {
            CniError::invalid_config(format!("txQueueLen {tx_queue_len} is too large"))
        })?;

        let pod_default_route_nic = non_empty(config.pod_default_route_nic.as_deref())
            .or_else(|| non_empty(Some(fallback.pod_default_route_nic.as_str())))
            .map(str::to_string);

        let log_options = config.log_options.clone().unwrap_or_default();
        if !log_options.log_level.is_empty() {
            crate::protocol::logging::parse_level(&log_options.log_level)?;
        }

        Ok(Self {
            mode,
            veth_link_address,
            veth_mtu,
            pod_mac_prefix,
            pod_default_cni_nic: non_empty(config.pod_default_cni_nic.as_deref())
                .unwrap_or("eth0")
                .to_string(),
            hijack_cidrs,
            policy_routes,
            tune_pod_routes: config.tune_pod_routes.unwrap_or(fallback.tune_pod_routes),
            pod_default_route_nic,
            host_rule_table,
            pod_rp_filter,
            tx_queue_len,
            detect_ip_conflict: config.detect_ip_conflict.unwrap_or(false),
            detect_gateway: config.detect_gateway.unwrap_or(false),
            log_level: Some(log_options.log_level).filter(|level| !level.is_empty()),
            log_file: Some(log_options.log_file)
                .filter(|file| !file.is_empty())
                .map(PathBuf::from),
        })
    }
}

fn non_empty(text: Option<&str>) -> Option<&str> {
    text.map(str::trim).filter(|text| !text.is_empty())
}

fn parse_cidr(field: &str, text: &str) -> Result<IpNetwork, CniError> {
    let text = text.trim();
    let invalid =
        || CniError::invalid_config(format!("invalid {field} entry {text:?}: not a CIDR"));
    if !text.contains('/') {
        return Err(invalid());
    }
    let network: IpNetwork = text.parse().map_err(|_| invalid())?;
    IpNetwork::new(network.network(), network.prefix()).map_err(|_| invalid())
}

/// `dst` may be an IP (becomes /32 or /128) or a CIDR (host bits dropped); `gw` an IP of the same family.
fn parse_policy_route(route: &PolicyRoute) -> Result<(IpNetwork, IpAddr), CniError> {
    let dst_text = route.dst.trim();
    let dst: IpNetwork = dst_text
        .parse()
        .map_err(|_| CniError::invalid_config(format!("invalid route dst {dst_text:?}")))?;
    let dst = IpNetwork::new(dst.network(), dst.prefix())
        .map_err(|_| CniError::invalid_config(format!("invalid route dst {dst_text:?}")))?;
    let gw_text = route.gw.trim();
    let gw: IpAddr = gw_text
        .parse()
        .map_err(|_| CniError::invalid_config(format!("invalid route gw {gw_text:?}")))?;
    if dst.is_ipv4() != gw.is_ipv4() {
        return Err(CniError::invalid_config(format!(
            "route dst {dst_text:?} and gw {gw_text:?} must use the same IP family"
        )));
    }
    Ok((dst, gw))
}

/// `xx:yy` (or `xx-yy`): two hex bytes, the first one unicast (lowest bit 0).
pub fn parse_mac_prefix(text: &str) -> Result<[u8; 2], CniError> {
    let invalid = || {
        CniError::invalid_config(format!(
            "invalid podMACPrefix {text:?}: must be two hex bytes like '0a:1b' whose first byte is unicast (even)"
        ))
    };
    let (first, second) = text.split_once([':', '-']).ok_or_else(invalid)?;
    if first.len() != 2 || second.len() != 2 {
        return Err(invalid());
    }
    let first = u8::from_str_radix(first, 16).map_err(|_| invalid())?;
    let second = u8::from_str_radix(second, 16).map_err(|_| invalid())?;
    if first & 1 != 0 {
        return Err(invalid());
    }
    Ok([first, second])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn config(json: &str) -> CoordinatorConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn typical_nad_entry_uses_fallback_for_absent_keys() {
        // The entry every SMC-generated NAD carries (contract 3.4).
        let nad =
            config(r#"{"txQueueLen":0,"tunePodRoutes":true,"mode":"auto","type":"coordinator"}"#);
        let fallback = Fallback {
            mode: "underlay".into(),
            service_cidr: vec!["10.96.0.0/12".into()],
            overlay_pod_cidr: vec!["10.244.0.0/16".into()],
            pod_default_route_nic: "net1".into(),
            host_rule_table: 600,
            ..Fallback::default()
        };
        let settings = Settings::merge(&nad, &fallback).unwrap();
        assert_eq!(settings.mode, Mode::Auto, "the NAD's mode wins");
        assert_eq!(
            settings.hijack_cidrs,
            vec![
                "10.244.0.0/16".parse::<IpNetwork>().unwrap(),
                "10.96.0.0/12".parse().unwrap()
            ]
        );
        assert_eq!(settings.pod_default_route_nic.as_deref(), Some("net1"));
        assert_eq!(settings.host_rule_table, 600);
        assert_eq!(settings.veth_mtu, 1500);
        assert!(settings.tune_pod_routes);
        assert_eq!(settings.pod_rp_filter, Some(0));
        assert_eq!(settings.pod_default_cni_nic, "eth0");
        assert!(!settings.detect_gateway && !settings.detect_ip_conflict);
    }

    #[test]
    fn every_nad_key_of_section_3_4_is_accepted() {
        let nad = config(
            r#"{"txQueueLen":1000,"detectIPConflict":true,"detectGateway":true,"vethLinkAddress":"169.254.100.1",
                "vethMTU":1400,"tunePodRoutes":false,"podMACPrefix":"0a:1b","mode":"underlay","type":"coordinator",
                "podDefaultRouteNic":"net1","podRPFilter":2,"overlayPodCIDR":["10.244.0.0/16"],
                "serviceCIDR":["10.96.0.0/12"],"hijackCIDR":["169.254.0.0/16"],
                "policyRoutes":[{"dst":"10.10.0.5","gw":"172.18.0.1"}],"hostRuleTable":700}"#,
        );
        let settings = Settings::merge(&nad, &Fallback::default()).unwrap();
        assert_eq!(settings.tx_queue_len, 1000);
        assert!(settings.detect_ip_conflict && settings.detect_gateway);
        assert_eq!(
            settings.veth_link_address,
            Some("169.254.100.1".parse().unwrap())
        );
        assert_eq!(settings.veth_mtu, 1400);
        assert_eq!(settings.pod_mac_prefix, Some([0x0a, 0x1b]));
        assert_eq!(settings.mode, Mode::Underlay);
        assert_eq!(settings.pod_rp_filter, Some(2));
        assert_eq!(settings.hijack_cidrs.len(), 3);
        assert_eq!(
            settings.policy_routes,
            vec![(
                "10.10.0.5/32".parse().unwrap(),
                "172.18.0.1".parse().unwrap()
            )]
        );
        assert_eq!(settings.host_rule_table, 700);
        assert!(!settings.tune_pod_routes);
    }

    #[test]
    fn disabled_is_the_same_as_disable() {
        assert_eq!(Mode::parse("disabled").unwrap(), Mode::Disable);
        assert_eq!(Mode::parse("disable").unwrap(), Mode::Disable);
        let error = Mode::parse("bogus").unwrap_err();
        assert_eq!(error.code, ErrorCode::INVALID_NETWORK_CONFIG);
        assert!(error.msg.starts_with("unknown tuneMode: bogus"));
    }

    #[test]
    fn invalid_values_are_config_errors() {
        for (json, message) in [
            (r#"{"vethMTU":0}"#, "vethMTU must be greater than 0"),
            (
                r#"{"podRPFilter":3}"#,
                "invalid rp_filter value 3, available options: [-1,0,1,2]",
            ),
            (
                r#"{"serviceCIDR":["10.96.0.1"]}"#,
                r#"invalid serviceCIDR entry "10.96.0.1": not a CIDR"#,
            ),
            (
                r#"{"policyRoutes":[{"dst":"10.0.0.0/8","gw":"fd00::1"}]}"#,
                "must use the same IP family",
            ),
            (r#"{"podMACPrefix":"0b:00"}"#, "invalid podMACPrefix"),
            (r#"{"vethLinkAddress":"nope"}"#, "invalid vethLinkAddress"),
            (
                r#"{"logOptions":{"logLevel":"loud"}}"#,
                "unsupported log level loud",
            ),
        ] {
            let error = Settings::merge(&config(json), &Fallback::default()).unwrap_err();
            assert!(error.msg.contains(message), "{json}: {}", error.msg);
            assert_eq!(error.code, ErrorCode::INVALID_NETWORK_CONFIG);
        }
    }

    #[test]
    fn negative_rp_filter_leaves_sysctl_alone() {
        let settings =
            Settings::merge(&config(r#"{"podRPFilter":-1}"#), &Fallback::default()).unwrap();
        assert_eq!(settings.pod_rp_filter, None);
    }

    #[test]
    fn mac_prefix_accepts_colon_or_dash_and_requires_unicast() {
        assert_eq!(parse_mac_prefix("0a:1b").unwrap(), [0x0a, 0x1b]);
        assert_eq!(parse_mac_prefix("FE-00").unwrap(), [0xfe, 0x00]);
        assert!(parse_mac_prefix("01:00").is_err());
        assert!(parse_mac_prefix("0a1b").is_err());
        assert!(parse_mac_prefix("0a:1bc").is_err());
    }

    #[test]
    fn file_fallback_reads_spider_coordinator_and_pod_annotation() {
        let directory =
            std::env::temp_dir().join(format!("coordinator-fallback-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("scc.json");
        std::fs::write(
            &path,
            r#"{"spec":{"mode":"underlay","podDefaultRouteNIC":"eth0","hostRuleTable":510,"tunePodRoutes":false},
                "status":{"phase":"Synced","serviceCIDR":["10.96.0.0/12"]},
                "pods":{"default/web-0":{"annotations":{"ipam.spidernet.io/default-route-nic":"net1"}}}}"#,
        )
        .unwrap();
        let source = FileFallback::new(&path);
        let pod = K8sArgs {
            pod_namespace: Some("default".into()),
            pod_name: Some("web-0".into()),
            ..K8sArgs::default()
        };
        let fallback = source.load(&pod).unwrap();
        assert_eq!(fallback.mode, "underlay");
        assert_eq!(
            fallback.pod_default_route_nic, "net1",
            "annotation beats the SpiderCoordinator"
        );
        assert_eq!(fallback.host_rule_table, 510);
        assert!(!fallback.tune_pod_routes);
        assert_eq!(fallback.service_cidr, vec!["10.96.0.0/12".to_string()]);
        let other = source.load(&K8sArgs::default()).unwrap();
        assert_eq!(other.pod_default_route_nic, "eth0");
        assert_eq!(other.veth_mtu, 1500);
        std::fs::remove_dir_all(&directory).unwrap();
        let error = FileFallback::new("/nonexistent/scc.json")
            .load(&pod)
            .unwrap_err();
        assert!(
            error
                .msg
                .starts_with("failed to read spiderCoordinatorFile")
        );
    }

    #[test]
    fn only_a_synced_coordinator_is_used() {
        let status = |phase: &str, reason: Option<&str>| spiderpool_api::CoordinatorStatus {
            phase: phase.into(),
            reason: reason.map(str::to_owned),
            ..Default::default()
        };
        assert!(require_synced("default", Some(&status("Synced", None))).is_ok());
        let error = require_synced(
            "default",
            Some(&status("NotReady", Some("no service CIDR found"))),
        )
        .expect_err("NotReady is refused");
        assert_eq!(error.code, crate::protocol::ErrorCode::TRY_AGAIN_LATER);
        assert!(
            error.msg.contains(
                "SpiderCoordinator default is not Synced (phase NotReady): no service CIDR found"
            ),
            "{}",
            error.msg
        );
        let error = require_synced("default", None).expect_err("no status is refused");
        assert!(error.msg.contains("phase unset"), "{}", error.msg);
    }
}
