//! The Multus pod annotations: `v1.multus-cni.io/default-network` (the first NIC's
//! NetworkAttachmentDefinition) and `k8s.v1.cni.cncf.io/networks` (additional NICs).
//!
//! Both accept the Multus syntax: a comma-separated list of `[namespace/]name[@interface]`, or a JSON
//! array of network-selection elements (`{"name", "namespace", "interface", "ips", "mac", ...}`).
//! This is upstream's `ParsePodNetworkAnnotation` / `ParsePodNetworkObjectName`
//! (`pkg/multuscniconfig/utils.go`) with its error texts; the selection code uses it to match pools'
//! `spec.multusName`, and the pod-injection webhook can use it to validate annotations.

use std::net::IpAddr;

use thiserror::Error;

use crate::cidr::Cidr;
use crate::gojson::{self, GoObject};
use crate::labels::is_dns1123_label;

/// Pod annotation naming the first NIC's NAD.
pub const ANNO_MULTUS_DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";
/// Pod annotation listing additional NICs.
pub const ANNO_MULTUS_NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// Linux `IFNAMSIZ - 1`.
const MAX_INTERFACE_NAME_LENGTH: usize = 15;

/// Errors of the Multus annotation syntax.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MultusError {
    #[error("parsePodNetworkAnnotation: {value}, {default_namespace}")]
    Empty {
        value: String,
        default_namespace: String,
    },
    #[error(
        "parsePodNetworkAnnotation: failed to parse pod Network Attachment Selection Annotation JSON format: {0}"
    )]
    Json(String),
    #[error(
        "parsePodNetworkAnnotation: parsePodNetworkObjectName: Invalid network object (failed at '/')"
    )]
    InvalidSlash,
    #[error(
        "parsePodNetworkAnnotation: parsePodNetworkObjectName: Invalid network object (failed at '@')"
    )]
    InvalidAt,
    #[error(
        "parsePodNetworkAnnotation: parsePodNetworkObjectName: Failed to parse: one or more items did not match comma-delimited format (must consist of lower case alphanumeric characters). Must start and end with an alphanumeric character), mismatch @ '{0}'"
    )]
    InvalidName(String),
    #[error(
        "parsePodNetworkAnnotation: parsePodNetworkObjectName: Failed to parse interface name: must be less than 15 chars and not contain '/' or spaces. interface name '{0}'"
    )]
    InvalidInterface(String),
    #[error("parsePodNetworkAnnotation: failed to mac: address {0}: invalid MAC address")]
    InvalidMac(String),
    #[error(
        "parsePodNetworkAnnotation: failed to validate infiniband GUID: address {0}: invalid MAC address"
    )]
    InvalidInfinibandGuid(String),
    #[error("failed to parse CIDR {0:?}: invalid CIDR address: {0}")]
    InvalidIpCidr(String),
    #[error("failed to parse IP address {0:?}")]
    InvalidIp(String),
}

impl MultusError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        "invalid_multus_annotation"
    }
}

/// One selected network (`NetworkSelectionElement`), with the fields the IPAM reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSelection {
    pub name: String,
    /// Filled with the default namespace when absent.
    pub namespace: String,
    /// Requested interface name; empty when not given (NICs are then `net1`, `net2`, ...).
    pub interface: String,
    /// Requested addresses (syntax-checked only; the IPAM never honours them).
    pub ips: Vec<String>,
    pub mac: String,
    pub infiniband_guid: String,
    pub default_route: Vec<IpAddr>,
}

impl NetworkSelection {
    /// `namespace/name`.
    pub fn namespaced_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `ParsePodNetworkAnnotation(value, defaultNamespace)`.
pub fn parse_network_annotation(
    value: &str,
    default_namespace: &str,
) -> Result<Vec<NetworkSelection>, MultusError> {
    if value.is_empty() {
        return Err(MultusError::Empty {
            value: value.to_string(),
            default_namespace: default_namespace.to_string(),
        });
    }
    let mut networks = if value.trim().contains(['[', '{', '"']) {
        parse_json_elements(value)?
    } else {
        let mut networks = Vec::new();
        for item in value.split(',') {
            let (namespace, name, interface) = parse_network_object_name(item.trim())?;
            networks.push(NetworkSelection {
                name,
                namespace,
                interface,
                ..NetworkSelection::default()
            });
        }
        networks
    };
    for network in &mut networks {
        if network.namespace.is_empty() {
            network.namespace = default_namespace.to_string();
        }
        if !network.mac.is_empty() && !is_hardware_address(&network.mac) {
            return Err(MultusError::InvalidMac(network.mac.clone()));
        }
        if !network.infiniband_guid.is_empty() && !is_hardware_address(&network.infiniband_guid) {
            return Err(MultusError::InvalidInfinibandGuid(
                network.infiniband_guid.clone(),
            ));
        }
        for ip in &network.ips {
            if ip.contains('/') {
                if Cidr::parse_any(ip).is_err() {
                    return Err(MultusError::InvalidIpCidr(ip.clone()));
                }
            } else if crate::ip::parse_any_ip(ip).is_none() {
                return Err(MultusError::InvalidIp(ip.clone()));
            }
        }
    }
    Ok(networks)
}

fn parse_json_elements(value: &str) -> Result<Vec<NetworkSelection>, MultusError> {
    let document = gojson::parse(value).map_err(MultusError::Json)?;
    let go_type = "[]*v1.NetworkSelectionElement";
    let items = gojson::array(&document, go_type).map_err(MultusError::Json)?;
    let mut networks = Vec::with_capacity(items.len());
    for item in items {
        let Some(object) = GoObject::new(
            item,
            "NetworkSelectionElement",
            "v1.NetworkSelectionElement",
        )
        .map_err(MultusError::Json)?
        else {
            // Upstream dereferences the nil element and panics; a clear error instead.
            return Err(MultusError::Json(
                "a network selection element is null".to_string(),
            ));
        };
        let mut default_route = Vec::new();
        for text in object.strings("default-route").map_err(MultusError::Json)? {
            let address = crate::ip::parse_any_ip(&text)
                .ok_or_else(|| MultusError::Json(format!("invalid IP address: {text}")))?;
            default_route.push(address);
        }
        object
            .shape("portMappings", "array", "[]*v1.PortMapEntry")
            .map_err(MultusError::Json)?;
        object
            .shape("bandwidth", "object", "v1.BandwidthEntry")
            .map_err(MultusError::Json)?;
        object
            .shape("cni-args", "object", "map[string]interface {}")
            .map_err(MultusError::Json)?;
        networks.push(NetworkSelection {
            name: object.string("name").map_err(MultusError::Json)?,
            namespace: object.string("namespace").map_err(MultusError::Json)?,
            interface: object.string("interface").map_err(MultusError::Json)?,
            ips: object.strings("ips").map_err(MultusError::Json)?,
            mac: object.string("mac").map_err(MultusError::Json)?,
            infiniband_guid: object
                .string("infiniband-guid")
                .map_err(MultusError::Json)?,
            default_route,
        });
    }
    Ok(networks)
}

/// `ParsePodNetworkObjectName`: `[namespace/]name[@interface]` -> (namespace, name, interface).
pub fn parse_network_object_name(text: &str) -> Result<(String, String, String), MultusError> {
    let slash_items: Vec<&str> = text.split('/').collect();
    let (namespace, network) = match slash_items.as_slice() {
        [network] => (String::new(), *network),
        [namespace, network] => (namespace.trim().to_string(), *network),
        _ => return Err(MultusError::InvalidSlash),
    };
    let at_items: Vec<&str> = network.split('@').collect();
    let name = at_items.first().map_or("", |name| name.trim()).to_string();
    let interface = match at_items.as_slice() {
        [_] => String::new(),
        [_, interface] => interface.trim().to_string(),
        _ => return Err(MultusError::InvalidAt),
    };
    for item in [&namespace, &name] {
        if !item.is_empty() && !is_dns1123_label(item) {
            return Err(MultusError::InvalidName(item.clone()));
        }
    }
    if !interface.is_empty()
        && (interface.len() > MAX_INTERFACE_NAME_LENGTH
            || interface.contains([' ', '\t', '\n', '\u{b}', '\u{c}', '\r', '/']))
    {
        return Err(MultusError::InvalidInterface(interface));
    }
    Ok((namespace, name, interface))
}

/// Go's `net.ParseMAC` acceptance: 6, 8 or 20 octets as `xx:xx..`, `xx-xx..` or `xxxx.xxxx..`.
pub fn is_hardware_address(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() < 14 {
        return false;
    }
    let hex_pair = |pair: &[u8]| pair.len() == 2 && pair.iter().all(u8::is_ascii_hexdigit);
    let valid_count = |count: usize| matches!(count, 6 | 8 | 20);
    if bytes[2] == b':' || bytes[2] == b'-' {
        let separator = bytes[2];
        if !(bytes.len() + 1).is_multiple_of(3) || !valid_count((bytes.len() + 1) / 3) {
            return false;
        }
        bytes.chunks(3).all(|group| {
            hex_pair(&group[..2.min(group.len())]) && (group.len() < 3 || group[2] == separator)
        })
    } else if bytes[4] == b'.' {
        if !(bytes.len() + 1).is_multiple_of(5) || !valid_count(2 * (bytes.len() + 1) / 5) {
            return false;
        }
        bytes.chunks(5).all(|group| {
            group.len() >= 4
                && hex_pair(&group[..2])
                && hex_pair(&group[2..4])
                && (group.len() < 5 || group[4] == b'.')
        })
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // G68
    #[test]
    fn network_annotation_accepts_json_and_comma_forms() {
        let json = parse_network_annotation(
            r#"[{"name":"net-a","namespace":"ns1","interface":"eth1"}]"#,
            "default",
        )
        .unwrap();
        assert_eq!(json.len(), 1);
        assert_eq!(
            (
                json[0].namespace.as_str(),
                json[0].name.as_str(),
                json[0].interface.as_str()
            ),
            ("ns1", "net-a", "eth1")
        );
        let pretty = parse_network_annotation(
            "[\n  {\n    \"name\": \"net-a\"\n  },\n  {\n    \"name\": \"net-b\",\n    \"interface\": \"net2\"\n  }\n]",
            "default",
        )
        .unwrap();
        assert_eq!(pretty.len(), 2);
        let comma = parse_network_annotation(
            "kube-system/sriov-net-a,kube-system/sriov-net-b,kube-system/bond-net",
            "default",
        )
        .unwrap();
        assert_eq!(comma.len(), 3);
        assert_eq!(comma[2].namespaced_name(), "kube-system/bond-net");
        let defaulted =
            parse_network_annotation(r#"[{"name":"macvlan","interface":"net1"}]"#, "my-ns")
                .unwrap();
        assert_eq!(defaulted[0].namespace, "my-ns");
        assert_eq!(
            parse_network_annotation("", "default")
                .unwrap_err()
                .to_string(),
            "parsePodNetworkAnnotation: , default"
        );
        assert!(
            parse_network_annotation(r#"[{"name":}]"#, "default")
                .unwrap_err()
                .to_string()
                .starts_with("parsePodNetworkAnnotation: failed to parse pod Network Attachment Selection Annotation JSON format: ")
        );
    }

    // G69
    #[test]
    fn network_object_names_follow_multus_rules() {
        let ok = |text: &str| parse_network_object_name(text).unwrap();
        assert_eq!(
            ok("kube-system/macvlan-conf@net1"),
            ("kube-system".into(), "macvlan-conf".into(), "net1".into())
        );
        assert_eq!(
            ok("macvlan-conf@net1"),
            ("".into(), "macvlan-conf".into(), "net1".into())
        );
        assert_eq!(
            ok("kube-system/macvlan-conf"),
            ("kube-system".into(), "macvlan-conf".into(), "".into())
        );
        assert_eq!(ok("my-net@my_iface").2, "my_iface");
        assert_eq!(
            parse_network_object_name("a/b/c"),
            Err(MultusError::InvalidSlash)
        );
        assert_eq!(
            parse_network_object_name("net@if1@if2"),
            Err(MultusError::InvalidAt)
        );
        assert_eq!(
            parse_network_object_name("my-net@bad iface"),
            Err(MultusError::InvalidInterface("bad iface".into()))
        );
        let long = format!("my-net@{}", "a".repeat(16));
        assert!(matches!(
            parse_network_object_name(&long),
            Err(MultusError::InvalidInterface(_))
        ));
        assert_eq!(
            parse_network_object_name("Upper/net")
                .unwrap_err()
                .to_string(),
            "parsePodNetworkAnnotation: parsePodNetworkObjectName: Failed to parse: one or more items did not match comma-delimited format (must consist of lower case alphanumeric characters). Must start and end with an alphanumeric character), mismatch @ 'Upper'"
        );
    }

    #[test]
    fn json_elements_validate_mac_guid_ips_and_types() {
        assert!(
            parse_network_annotation(r#"[{"name":"a","mac":"c2:11:22:33:44:55"}]"#, "d").is_ok()
        );
        assert_eq!(
            parse_network_annotation(r#"[{"name":"a","mac":"zz"}]"#, "d").unwrap_err(),
            MultusError::InvalidMac("zz".into())
        );
        assert!(
            parse_network_annotation(r#"[{"name":"a","ips":["10.0.0.1/24","fd00::1"]}]"#, "d")
                .is_ok()
        );
        assert_eq!(
            parse_network_annotation(r#"[{"name":"a","ips":["10.0.0.300"]}]"#, "d")
                .unwrap_err()
                .to_string(),
            "failed to parse IP address \"10.0.0.300\""
        );
        assert!(parse_network_annotation(r#"[{"name":"a","interface":5}]"#, "d").is_err());
        assert!(parse_network_annotation(r#"[null]"#, "d").is_err());
        assert!(parse_network_annotation(r#"{"name":"a"}"#, "d").is_err());
        assert!(parse_network_annotation(r#"[{"name":"a","portMappings":"x"}]"#, "d").is_err());
    }

    #[test]
    fn hardware_addresses_match_go_parse_mac() {
        for valid in [
            "00:00:5e:00:53:01",
            "02:00:5e:10:00:00:00:01",
            "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
            "00-00-5e-00-53-01",
            "0000.5e00.5301",
            "0200.5e10.0000.0001",
        ] {
            assert!(is_hardware_address(valid), "{valid}");
        }
        for invalid in [
            "00:00:5e:00:53",
            "00:00:5e:00:53:0g",
            "00:00-5e:00:53:01",
            "0000.5e00.530",
            "short",
        ] {
            assert!(!is_hardware_address(invalid), "{invalid}");
        }
    }
}
