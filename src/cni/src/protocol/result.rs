//! The CNI result (`interfaces`, `ips`, `routes`, `dns`), decoded from any supported version and encoded
//! for the version the runtime asked for: 0.3.x/0.4.0 add `"version":"4"|"6"` to every IP, 1.0.0 does not,
//! 1.1.0 may carry per-route `mtu`/`advmss`/`priority`/`table`/`scope` and per-interface `mtu`,
//! `socketPath` and `pciID`.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::error::CniError;
use super::version::CniVersion;

/// A network interface created or configured by a plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The network namespace path for interfaces inside the container; `None` for host interfaces.
    pub sandbox: Option<String>,
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

/// One address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
    /// Address with prefix length; host bits are kept (`10.6.168.173/16`).
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
}

/// A route the runtime or the next plugin should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u32>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Self {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A CNI result in the version-independent (1.x) model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    /// Decode a result (e.g. `prevResult`) of any supported version.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, CniError> {
        let wire: ResultIn = serde_json::from_value(value.clone())
            .map_err(|error| CniError::decoding(format!("failed to decode CNI result: {error}")))?;
        if let Some(version) = &wire.cni_version {
            // 0.1.0/0.2.0 results have a different shape (`ip4`/`ip6`); refuse them instead of guessing.
            CniVersion::parse(version).map_err(|error| {
                CniError::decoding(format!("failed to decode CNI result: {}", error.msg))
            })?;
        }
        let interfaces = wire
            .interfaces
            .into_iter()
            .map(|interface| Interface {
                name: interface.name,
                mac: interface.mac.filter(|mac| !mac.is_empty()),
                mtu: interface.mtu.filter(|mtu| *mtu != 0),
                sandbox: interface.sandbox.filter(|sandbox| !sandbox.is_empty()),
                socket_path: interface.socket_path.filter(|path| !path.is_empty()),
                pci_id: interface.pci_id.filter(|id| !id.is_empty()),
            })
            .collect::<Vec<_>>();
        let mut ips = Vec::with_capacity(wire.ips.len());
        for ip in wire.ips {
            let address = parse_network(&ip.address, "ips[].address")?;
            let gateway = parse_optional_ip(ip.gateway.as_deref(), "ips[].gateway")?;
            let interface = match ip.interface {
                Some(index) if index >= 0 => {
                    let index = usize::try_from(index).unwrap_or(usize::MAX);
                    if index >= interfaces.len() {
                        return Err(CniError::decoding(format!(
                            "failed to decode CNI result: ips[].interface {index} is out of range ({} interfaces)",
                            interfaces.len()
                        )));
                    }
                    Some(index)
                }
                _ => None,
            };
            ips.push(IpConfig {
                interface,
                address,
                gateway,
            });
        }
        let mut routes = Vec::with_capacity(wire.routes.len());
        for route in wire.routes {
            routes.push(Route {
                dst: parse_network(&route.dst, "routes[].dst")?,
                gw: parse_optional_ip(route.gw.as_deref(), "routes[].gw")?,
                mtu: route.mtu.filter(|value| *value != 0),
                advmss: route.advmss.filter(|value| *value != 0),
                priority: route.priority.filter(|value| *value != 0),
                table: route.table,
                scope: route.scope,
            });
        }
        Ok(Self {
            interfaces,
            ips,
            routes,
            dns: wire.dns.unwrap_or_default(),
        })
    }

    /// Encode the result for `version`.
    pub fn to_json(&self, version: CniVersion) -> serde_json::Value {
        let is_1_1 = version >= CniVersion::V1_1_0;
        let wire = ResultOut {
            cni_version: version.as_str(),
            interfaces: self
                .interfaces
                .iter()
                .map(|interface| InterfaceOut {
                    name: &interface.name,
                    mac: interface.mac.as_deref(),
                    mtu: interface.mtu.filter(|_| is_1_1),
                    sandbox: interface.sandbox.as_deref(),
                    socket_path: interface.socket_path.as_deref().filter(|_| is_1_1),
                    pci_id: interface.pci_id.as_deref().filter(|_| is_1_1),
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| IpOut {
                    version: version.is_legacy().then_some(if ip.address.is_ipv4() {
                        "4"
                    } else {
                        "6"
                    }),
                    interface: ip.interface,
                    address: ip.address.to_string(),
                    gateway: ip.gateway.map(|gateway| gateway.to_string()),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|route| RouteOut {
                    dst: route.dst.to_string(),
                    gw: route.gw.map(|gw| gw.to_string()),
                    mtu: route.mtu.filter(|_| is_1_1),
                    advmss: route.advmss.filter(|_| is_1_1),
                    priority: route.priority.filter(|_| is_1_1),
                    table: route.table.filter(|_| is_1_1),
                    scope: route.scope.filter(|_| is_1_1),
                })
                .collect(),
            dns: &self.dns,
        };
        serde_json::to_value(wire).unwrap_or(serde_json::Value::Null)
    }

    /// Index of the interface named `name` inside `sandbox` (or any sandbox when `None`).
    pub fn interface_index(&self, name: &str, sandbox: Option<&str>) -> Option<usize> {
        self.interfaces.iter().position(|interface| {
            interface.name == name
                && match sandbox {
                    Some(sandbox) => interface.sandbox.as_deref() == Some(sandbox),
                    None => true,
                }
        })
    }
}

fn parse_network(text: &str, field: &str) -> Result<IpNetwork, CniError> {
    text.trim().parse::<IpNetwork>().map_err(|error| {
        CniError::decoding(format!(
            "failed to decode CNI result: {field} {text:?}: {error}"
        ))
    })
}

fn parse_optional_ip(text: Option<&str>, field: &str) -> Result<Option<IpAddr>, CniError> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse::<IpAddr>().map(Some).map_err(|error| {
            CniError::decoding(format!(
                "failed to decode CNI result: {field} {text:?}: {error}"
            ))
        }),
    }
}

#[derive(Deserialize)]
struct ResultIn {
    #[serde(rename = "cniVersion", default)]
    cni_version: Option<String>,
    #[serde(default)]
    interfaces: Vec<InterfaceIn>,
    #[serde(default)]
    ips: Vec<IpIn>,
    #[serde(default)]
    routes: Vec<RouteIn>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Deserialize)]
struct InterfaceIn {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(rename = "socketPath", default)]
    socket_path: Option<String>,
    #[serde(rename = "pciID", default)]
    pci_id: Option<String>,
}

#[derive(Deserialize)]
struct IpIn {
    #[serde(default)]
    interface: Option<i64>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RouteIn {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u32>,
}

#[derive(Serialize)]
struct ResultOut<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<InterfaceOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<IpOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RouteOut>,
    dns: &'a Dns,
}

#[derive(Serialize)]
struct InterfaceOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
    #[serde(rename = "socketPath", skip_serializing_if = "Option::is_none")]
    socket_path: Option<&'a str>,
    #[serde(rename = "pciID", skip_serializing_if = "Option::is_none")]
    pci_id: Option<&'a str>,
}

#[derive(Serialize)]
struct IpOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
}

#[derive(Serialize)]
struct RouteOut {
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advmss: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_example() -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "eth0", "mac": "ae:fa:5e:d9:79:11", "sandbox": "/var/run/netns/pod"}],
            "ips": [
                {"version": "4", "interface": 0, "address": "172.18.40.40/24", "gateway": "172.18.40.1"},
                {"version": "6", "address": "fc00:f853:ccd:e793:f::fc/64", "gateway": "fc00:f853:ccd:e793:f::2"}
            ],
            "routes": [{"dst": "10.0.0.0/8", "gw": "172.18.40.1"}, {"dst": "0.0.0.0/0", "gw": "172.18.40.1"}],
            "dns": {}
        })
    }

    #[test]
    fn legacy_result_decodes_and_reencodes_identically() {
        let result = CniResult::from_json(&legacy_example()).unwrap();
        assert_eq!(result.ips[0].interface, Some(0));
        assert_eq!(result.ips[0].address.to_string(), "172.18.40.40/24");
        assert_eq!(result.to_json(CniVersion::V0_3_1), legacy_example());
    }

    #[test]
    fn conversion_to_1_0_0_drops_ip_version_fields() {
        let result = CniResult::from_json(&legacy_example()).unwrap();
        let encoded = result.to_json(CniVersion::V1_0_0).to_string();
        assert!(
            encoded.starts_with(r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0""#),
            "{encoded}"
        );
        assert!(!encoded.contains(r#""version""#), "{encoded}");
        assert!(
            encoded
                .contains(r#"{"interface":0,"address":"172.18.40.40/24","gateway":"172.18.40.1"}"#)
        );
        assert!(encoded.ends_with(r#""dns":{}}"#));
    }

    #[test]
    fn conversion_from_1_0_0_to_0_4_0_adds_ip_versions() {
        let input = serde_json::json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.6.168.173/16", "gateway": "10.6.0.1"}, {"address": "fd00::5/64"}]
        });
        let result = CniResult::from_json(&input).unwrap();
        assert_eq!(
            result.to_json(CniVersion::V0_4_0).to_string(),
            r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.6.168.173/16","gateway":"10.6.0.1"},{"version":"6","address":"fd00::5/64"}],"dns":{}}"#
        );
    }

    #[test]
    fn empty_result_still_carries_dns_object() {
        assert_eq!(
            CniResult::default().to_json(CniVersion::V0_3_1).to_string(),
            r#"{"cniVersion":"0.3.1","dns":{}}"#
        );
    }

    #[test]
    fn route_extras_are_only_emitted_for_1_1_0() {
        let mut route = Route::new("10.96.0.0/12".parse().unwrap(), None);
        route.table = Some(101);
        let result = CniResult {
            routes: vec![route],
            ..CniResult::default()
        };
        assert!(
            !result
                .to_json(CniVersion::V1_0_0)
                .to_string()
                .contains("table")
        );
        assert!(
            result
                .to_json(CniVersion::V1_1_0)
                .to_string()
                .contains(r#""table":101"#)
        );
    }

    #[test]
    fn malformed_results_are_decoding_errors() {
        for bad in [
            serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "not-an-ip"}]}),
            serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": 3}]}),
            serde_json::json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.1/8"}}),
            serde_json::json!([1, 2]),
        ] {
            let error = CniResult::from_json(&bad).unwrap_err();
            assert_eq!(
                error.code,
                crate::protocol::ErrorCode::DECODING_FAILURE,
                "{bad}"
            );
        }
    }
}
