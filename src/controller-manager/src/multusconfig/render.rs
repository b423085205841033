//! SpiderMultusConfig → NetworkAttachmentDefinition, as a pure function.
//!
//! The output must be byte-for-byte what Spiderpool generates, because other tools diff NADs.
//! That fixes three things: the plugin order `[ifacer?] [main] [rdma?] [chain...] [coordinator?]
//! [tuning?]`; the field order of each plugin (the serde structs below declare fields in the
//! order upstream's Go structs do); and Go's `encoding/json` quirks — chained plugins are
//! re-encoded with sorted keys and float64 numbers, and `<`, `>`, `&`, U+2028 and U+2029 inside
//! strings are escaped.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use spiderpool_api::constants;
use spiderpool_api::{
    BondConfig, CniType, CoordinatorSpec, MultusCNIConfigSpec, Route, SpiderMultusConfig,
    SpiderpoolPools, Trunk, VlanMode,
};
use spiderpool_ipam::config::IpamConfig;

use spiderpool_api::defaults;

/// Left out of the copied annotations: it describes the SMC, not the NAD (deliberate
/// difference #6 — upstream copies it, which makes `kubectl apply` of the NAD misbehave).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the controller writes: the NAD's identity, annotations and config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedNad {
    pub name: String,
    pub namespace: String,
    pub annotations: BTreeMap<String, String>,
    /// `None` when the generated config is empty (a `custom` SMC without `customCNI`).
    pub config: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("spec.{section} must be set when cniType is {cni_type}")]
    MissingSection {
        section: &'static str,
        cni_type: CniType,
    },
    #[error("spec.{section}.master must name at least one interface")]
    NoMaster { section: &'static str },
    #[error("spec.{section}.bond must be set when more than one master is given")]
    MissingBond { section: &'static str },
    #[error("spec.sriov.resourceName must be set")]
    MissingResourceName,
    #[error("spec.chainCNIJsonData[{index}] is not valid JSON: {reason}")]
    InvalidChainData { index: usize, reason: String },
    #[error("spec.customCNI is not valid JSON: {reason}")]
    InvalidCustomCni { reason: String },
    #[error("encoding the CNI configuration failed: {0}")]
    Encode(String),
}

impl RenderError {
    /// Stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RenderError::MissingSection { .. }
            | RenderError::NoMaster { .. }
            | RenderError::MissingBond { .. }
            | RenderError::MissingResourceName => "invalid_spec",
            RenderError::InvalidChainData { .. } | RenderError::InvalidCustomCni { .. } => {
                "invalid_json"
            }
            RenderError::Encode(_) => "encode",
        }
    }
}

/// Name of the NAD an SMC generates: the `multus.spidernet.io/cr-name` annotation or the SMC name.
pub fn nad_name(smc: &SpiderMultusConfig) -> String {
    smc.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(constants::ANNO_MULTUS_CR_NAME))
        .cloned()
        .unwrap_or_else(|| smc.metadata.name.clone().unwrap_or_default())
}

/// Renders the NAD of an SMC. Defaults are applied first (see [`defaults::multus_config`]).
pub fn render(smc: &SpiderMultusConfig) -> Result<RenderedNad, RenderError> {
    let mut spec = smc.spec.clone();
    defaults::multus_config(&mut spec);
    let name = nad_name(smc);
    let source_annotations = smc.metadata.annotations.clone().unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = source_annotations
        .iter()
        .filter(|(key, _)| key.as_str() != LAST_APPLIED)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let cni_version = source_annotations
        .get(constants::ANNO_MULTUS_CNI_VERSION)
        .cloned()
        .unwrap_or_else(|| constants::DEFAULT_CNI_VERSION.to_owned());
    let config_name = source_annotations
        .get(constants::ANNO_CNI_CONFIG_NAME)
        .filter(|value| !value.is_empty())
        .cloned()
        .unwrap_or_else(|| name.clone());

    let cni_type = spec.cni_type.unwrap_or(CniType::Custom);
    let config = if cni_type == CniType::Custom {
        let custom = spec.custom_cni.clone().unwrap_or_default();
        if custom.is_empty() {
            None
        } else {
            serde_json::from_str::<Value>(&custom).map_err(|error| {
                RenderError::InvalidCustomCni {
                    reason: error.to_string(),
                }
            })?;
            Some(custom)
        }
    } else {
        let plugins = plugin_chain(&spec, cni_type, &mut annotations)?;
        let envelope = Envelope {
            cni_version,
            name: config_name,
            plugins,
        };
        Some(go_json(&envelope)?)
    };

    Ok(RenderedNad {
        name,
        namespace: smc.metadata.namespace.clone().unwrap_or_default(),
        annotations,
        config,
    })
}

/// The conflist envelope; upstream marshals a Go map, hence alphabetical keys.
#[derive(Serialize)]
struct Envelope {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    name: String,
    plugins: Vec<Value>,
}

fn plugin_chain(
    spec: &MultusCNIConfigSpec,
    cni_type: CniType,
    annotations: &mut BTreeMap<String, String>,
) -> Result<Vec<Value>, RenderError> {
    let ipam_enabled = !spec.disable_ipam.unwrap_or(false);
    let mut plugins: Vec<Value> = Vec::new();
    let mut ifacer: Option<Value> = None;
    let mut trailing: Option<Value> = None;

    match cni_type {
        CniType::Macvlan | CniType::Ipvlan => {
            let (section, config) = if cni_type == CniType::Macvlan {
                ("macvlan", spec.macvlan.as_ref())
            } else {
                ("ipvlan", spec.ipvlan.as_ref())
            };
            let config = config.ok_or(RenderError::MissingSection { section, cni_type })?;
            let base = master_or_bond(section, &config.master, config.bond.as_ref())?;
            let vlan_id = config.vlan_id.unwrap_or(0);
            let master = if vlan_id != 0 {
                format!("{base}.{vlan_id}")
            } else {
                base
            };
            let ipam = ipam_enabled.then(|| ipam(config.ippools.as_ref(), false));
            let main = if cni_type == CniType::Macvlan {
                to_value(&MacvlanPlugin {
                    plugin_type: "macvlan",
                    master,
                    mode: "bridge",
                    mtu: config.mtu,
                    ipam,
                })?
            } else {
                to_value(&IpvlanPlugin {
                    plugin_type: "ipvlan",
                    master,
                    mtu: config.mtu,
                    ipam,
                })?
            };
            plugins.push(main);
            if vlan_id != 0 || config.master.len() >= 2 {
                ifacer = Some(to_value(&IfacerPlugin {
                    vlan_id,
                    plugin_type: "ifacer",
                    interfaces: &config.master,
                    bond: config.bond.as_ref(),
                })?);
            }
        }
        CniType::Vlan => {
            let config = spec.vlan.as_ref().ok_or(RenderError::MissingSection {
                section: "vlan",
                cni_type,
            })?;
            let master = master_or_bond("vlan", &config.master, config.bond.as_ref())?;
            let manual = config.vlan_mode == Some(VlanMode::Manual);
            plugins.push(to_value(&VlanPlugin {
                plugin_type: "vlan",
                master,
                vlan_mode: config.vlan_mode,
                vlan_id: if manual { config.vlan_id } else { None },
                mtu: config.mtu,
                ipam: ipam_enabled.then(|| ipam(config.ippools.as_ref(), false)),
            })?);
            // The vlan plugin creates the VLAN device itself; ifacer only builds the bond.
            if config.master.len() >= 2 {
                ifacer = Some(to_value(&IfacerPlugin {
                    vlan_id: 0,
                    plugin_type: "ifacer",
                    interfaces: &config.master,
                    bond: config.bond.as_ref(),
                })?);
            }
        }
        CniType::Sriov => {
            let config = spec.sriov.as_ref().ok_or(RenderError::MissingSection {
                section: "sriov",
                cni_type,
            })?;
            let resource_name = config
                .resource_name
                .clone()
                .filter(|name| !name.is_empty())
                .ok_or(RenderError::MissingResourceName)?;
            annotations.insert(constants::MULTUS_RESOURCE_NAME.to_owned(), resource_name);
            plugins.push(to_value(&SriovPlugin {
                vlan: config.vlan_id,
                min_tx_rate: config.min_tx_rate_mbps,
                max_tx_rate: config.max_tx_rate_mbps,
                plugin_type: "sriov",
                ipam: ipam_enabled.then(|| ipam(config.ippools.as_ref(), true)),
            })?);
            if config.rdma_isolation == Some(true) {
                plugins.push(to_value(&TypeOnly {
                    plugin_type: "rdma",
                })?);
            }
            if let Some(mtu) = config.mtu.filter(|mtu| *mtu > 0) {
                trailing = Some(to_value(&TuningPlugin {
                    plugin_type: "tuning",
                    mtu,
                })?);
            }
        }
        CniType::IbSriov => {
            let config = spec.ibsriov.as_ref().ok_or(RenderError::MissingSection {
                section: "ibsriov",
                cni_type,
            })?;
            if let Some(resource_name) = config.resource_name.clone() {
                annotations.insert(constants::MULTUS_RESOURCE_NAME.to_owned(), resource_name);
            }
            plugins.push(to_value(&IbSriovPlugin {
                plugin_type: "ib-sriov",
                pkey: config.pkey.clone(),
                link_state: config.link_state,
                rdma_isolation: config.rdma_isolation,
                ib_kubernetes_enabled: config.enable_ib_kubernetes,
                ipam: ipam_enabled.then(|| ipam(config.ippools.as_ref(), false)),
            })?);
        }
        CniType::Ipoib => {
            let config = spec.ipoib.as_ref().ok_or(RenderError::MissingSection {
                section: "ipoib",
                cni_type,
            })?;
            plugins.push(to_value(&IpoibPlugin {
                plugin_type: "ipoib",
                master: config.master.clone().unwrap_or_default(),
                ipam: ipam_enabled.then(|| ipam(config.ippools.as_ref(), false)),
            })?);
        }
        CniType::Ovs => {
            let config = spec.ovs.as_ref().ok_or(RenderError::MissingSection {
                section: "ovs",
                cni_type,
            })?;
            let device_id = config.device_id.clone().unwrap_or_default();
            if !device_id.is_empty() {
                annotations.insert(
                    constants::MULTUS_RESOURCE_NAME.to_owned(),
                    format!("{}/{}", constants::OVS_RESOURCE_NAME_PREFIX, config.bridge),
                );
            }
            plugins.push(to_value(&OvsPlugin {
                vlan: config.vlan,
                plugin_type: "ovs",
                bridge: &config.bridge,
                device_id,
                ipam: ipam_enabled.then(|| ipam(config.ippools.as_ref(), false)),
                trunk: config.trunk.as_deref().unwrap_or_default(),
            })?);
        }
        CniType::Custom => {}
    }

    for (index, raw) in spec
        .chain_cni_json_data
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let value: Value =
            serde_json::from_str(raw).map_err(|error| RenderError::InvalidChainData {
                index,
                reason: error.to_string(),
            })?;
        plugins.push(go_generic(value));
    }
    if spec.enable_coordinator.unwrap_or(true) {
        plugins.push(to_value(&coordinator_plugin(spec.coordinator.as_ref()))?);
    }
    if let Some(trailing) = trailing {
        plugins.push(trailing);
    }
    if let Some(ifacer) = ifacer {
        plugins.insert(0, ifacer);
    }
    Ok(plugins)
}

fn master_or_bond(
    section: &'static str,
    master: &[String],
    bond: Option<&BondConfig>,
) -> Result<String, RenderError> {
    match master {
        [] => Err(RenderError::NoMaster { section }),
        [single] => Ok(single.clone()),
        _ => bond
            .map(|bond| bond.name.clone())
            .ok_or(RenderError::MissingBond { section }),
    }
}

fn ipam(pools: Option<&SpiderpoolPools>, sriov: bool) -> IpamConfig {
    let list = |list: Option<&Vec<String>>| list.cloned().unwrap_or_default();
    IpamConfig {
        // Only SR-IOV honours matchMasterSubnet; upstream ignores it for the other types.
        match_master_subnet: sriov
            && pools
                .and_then(|pools| pools.match_master_subnet)
                .unwrap_or(false),
        ..IpamConfig::spiderpool(
            list(pools.and_then(|pools| pools.ipv4.as_ref())),
            list(pools.and_then(|pools| pools.ipv6.as_ref())),
        )
    }
}

fn coordinator_plugin(spec: Option<&CoordinatorSpec>) -> CoordinatorPlugin {
    let Some(spec) = spec else {
        return CoordinatorPlugin {
            plugin_type: "coordinator",
            ..CoordinatorPlugin::default()
        };
    };
    let non_empty = |list: Option<&Vec<String>>| list.filter(|list| !list.is_empty()).cloned();
    // Upstream copies podRPFilter only when podCIDRType is set, silently dropping a user's
    // explicit 1 or 2. We also copy it when it is not 0 (deliberate difference #2); the default
    // output stays identical to upstream's.
    let pod_rp_filter =
        if spec.pod_cidr_type.is_some() || spec.pod_rp_filter.is_some_and(|value| value != 0) {
            spec.pod_rp_filter
        } else {
            None
        };
    CoordinatorPlugin {
        tx_queue_len: spec.tx_queue_len,
        veth_link_address: spec.veth_link_address.clone().unwrap_or_default(),
        veth_mtu: spec.veth_mtu,
        tune_pod_routes: spec.tune_pod_routes,
        pod_mac_prefix: spec.pod_mac_prefix.clone().unwrap_or_default(),
        mode: spec
            .mode
            .map(|mode| serde_json::to_value(mode).ok())
            .and_then(|value| value.and_then(|value| value.as_str().map(str::to_owned)))
            .unwrap_or_default(),
        plugin_type: "coordinator",
        pod_default_route_nic: spec.pod_default_route_nic.clone().unwrap_or_default(),
        pod_rp_filter,
        hijack_cidr: non_empty(spec.hijack_cidr.as_ref()),
        policy_routes: spec
            .policy_routes
            .clone()
            .filter(|routes| !routes.is_empty()),
    }
}

fn to_value<T: Serialize>(plugin: &T) -> Result<Value, RenderError> {
    serde_json::to_value(plugin).map_err(|error| RenderError::Encode(error.to_string()))
}

/// Re-encodes arbitrary JSON the way Go's `interface{}` round trip does: object keys sorted,
/// every number a float64 (so integers stay integers, `1.0` becomes `1`, and integers beyond
/// 2^53 lose precision exactly as they do upstream).
fn go_generic(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> = map
                .into_iter()
                .map(|(key, value)| (key, go_generic(value)))
                .collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(go_generic).collect()),
        Value::Number(number) => {
            let float = number.as_f64().unwrap_or(0.0);
            go_integral(float).map_or_else(
                || serde_json::Number::from_f64(float).map_or(Value::Null, Value::Number),
                Value::from,
            )
        }
        other => other,
    }
}

/// Go prints an integral float64 below 1e21 in plain decimal using its shortest round-trip
/// digits padded with zeros (`12345678901234567890` → `12345678901234567000`). Returns that
/// value when it fits an i64/u64; other numbers keep serde's float formatting, which differs
/// from Go only for exponents Go writes as `1e-07` / `1e+21`.
fn go_integral(float: f64) -> Option<serde_json::Number> {
    if float.fract() != 0.0 || float.abs() >= 1e21 || !float.is_finite() {
        return None;
    }
    // `{:e}` gives the shortest round-trip digits, e.g. `-1.2345678901234567e19`.
    let scientific = format!("{:e}", float.abs());
    let (mantissa, exponent) = scientific.split_once('e')?;
    let exponent: usize = exponent.parse().ok()?;
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let zeros = (exponent + 1).checked_sub(digits.len())?;
    let plain = format!("{digits}{}", "0".repeat(zeros));
    let magnitude: u64 = plain.parse().ok()?;
    if float < 0.0 {
        i64::try_from(magnitude)
            .ok()
            .map(|value| serde_json::Number::from(-value))
    } else {
        Some(serde_json::Number::from(magnitude))
    }
}

/// Compact JSON with Go's HTML-safe escaping. The escaped characters can only occur inside
/// strings, so replacing them in the encoded text is exact.
fn go_json<T: Serialize>(value: &T) -> Result<String, RenderError> {
    let encoded =
        serde_json::to_string(value).map_err(|error| RenderError::Encode(error.to_string()))?;
    if !encoded.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return Ok(encoded);
    }
    let mut escaped = String::with_capacity(encoded.len() + 16);
    for character in encoded.chars() {
        match character {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            other => escaped.push(other),
        }
    }
    Ok(escaped)
}

// Plugin structs: field order is JSON order and mirrors upstream's Go structs.

#[derive(Serialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    plugin_type: &'static str,
}

#[derive(Serialize)]
struct MacvlanPlugin {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    master: String,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamConfig>,
}

#[derive(Serialize)]
struct IpvlanPlugin {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    master: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamConfig>,
}

#[derive(Serialize)]
struct VlanPlugin {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    master: String,
    #[serde(rename = "vlanMode", skip_serializing_if = "Option::is_none")]
    vlan_mode: Option<VlanMode>,
    #[serde(rename = "vlanId", skip_serializing_if = "Option::is_none")]
    vlan_id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamConfig>,
}

#[derive(Serialize)]
struct SriovPlugin {
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_tx_rate: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tx_rate: Option<i64>,
    #[serde(rename = "type")]
    plugin_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamConfig>,
}

#[derive(Serialize)]
struct IbSriovPlugin {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pkey: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_state: Option<spiderpool_api::LinkState>,
    #[serde(rename = "rdmaIsolation", skip_serializing_if = "Option::is_none")]
    rdma_isolation: Option<bool>,
    #[serde(
        rename = "ibKubernetesEnabled",
        skip_serializing_if = "Option::is_none"
    )]
    ib_kubernetes_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamConfig>,
}

#[derive(Serialize)]
struct IpoibPlugin {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    master: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamConfig>,
}

#[derive(Serialize)]
struct OvsPlugin<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<i32>,
    #[serde(rename = "type")]
    plugin_type: &'static str,
    bridge: &'a str,
    #[serde(rename = "deviceID", skip_serializing_if = "String::is_empty")]
    device_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<IpamConfig>,
    #[serde(skip_serializing_if = "<[Trunk]>::is_empty")]
    trunk: &'a [Trunk],
}

#[derive(Serialize)]
struct IfacerPlugin<'a> {
    #[serde(rename = "vlanID", skip_serializing_if = "is_zero")]
    vlan_id: i32,
    #[serde(rename = "type")]
    plugin_type: &'static str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    interfaces: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    bond: Option<&'a BondConfig>,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

#[derive(Serialize)]
struct TuningPlugin {
    #[serde(rename = "type")]
    plugin_type: &'static str,
    mtu: i32,
}

#[derive(Serialize, Default)]
struct CoordinatorPlugin {
    #[serde(rename = "txQueueLen", skip_serializing_if = "Option::is_none")]
    tx_queue_len: Option<i64>,
    #[serde(rename = "vethLinkAddress", skip_serializing_if = "String::is_empty")]
    veth_link_address: String,
    #[serde(rename = "vethMTU", skip_serializing_if = "Option::is_none")]
    veth_mtu: Option<i64>,
    #[serde(rename = "tunePodRoutes", skip_serializing_if = "Option::is_none")]
    tune_pod_routes: Option<bool>,
    #[serde(rename = "podMACPrefix", skip_serializing_if = "String::is_empty")]
    pod_mac_prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    mode: String,
    #[serde(rename = "type")]
    plugin_type: &'static str,
    #[serde(
        rename = "podDefaultRouteNic",
        skip_serializing_if = "String::is_empty"
    )]
    pod_default_route_nic: String,
    #[serde(rename = "podRPFilter", skip_serializing_if = "Option::is_none")]
    pod_rp_filter: Option<i64>,
    #[serde(rename = "hijackCIDR", skip_serializing_if = "Option::is_none")]
    hijack_cidr: Option<Vec<String>>,
    #[serde(rename = "policyRoutes", skip_serializing_if = "Option::is_none")]
    policy_routes: Option<Vec<Route>>,
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
