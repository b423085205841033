//! SpiderCoordinator admission (§1.6) and the `CoordinatorSpec` rules shared with the
//! SpiderMultusConfig webhook (`ValidateCoordinatorSpec`). Pure.

use std::net::IpAddr;

use kube::ResourceExt;
use spiderpool_api::{CoordinatorMode, CoordinatorSpec, SpiderCoordinator};
use spiderpool_ipam::cidr::parse_ip_or_cidr;

use super::field::{BadValue, Denial, FieldError, go_quote};

pub const KIND: &str = "SpiderCoordinator";
const POD_CIDR_TYPES: [&str; 5] = ["auto", "cluster", "calico", "cilium", "none"];
const RP_FILTERS: [&str; 3] = ["0", "1", "2"];

/// `mutateCoordinator`: defaults, bare hijack addresses as /32 or /128, normalised policy-route
/// destinations. Errors are for logging only.
///
/// Upstream also adds the `spiderpool.spidernet.io` finalizer here and its coordinator controller
/// removes it. We add none: nothing needs cleaning up when a SpiderCoordinator goes, and a
/// finalizer would make its deletion (and the CRD's uninstall) hang whenever the controller is not
/// running. The controller (`crate::coordinator::controller`) removes one left by upstream.
pub fn mutate(coordinator: &mut SpiderCoordinator) -> Result<(), String> {
    let spec = &mut coordinator.spec;
    spec.mode.get_or_insert(CoordinatorMode::Auto);
    spec.tune_pod_routes.get_or_insert(true);
    spec.host_rule_table.get_or_insert(500);
    spec.pod_rp_filter.get_or_insert(0);
    spec.tx_queue_len.get_or_insert(0);
    spec.veth_link_address.get_or_insert_with(String::new);
    spec.veth_mtu.get_or_insert(1500);
    if coordinator.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    if spec.pod_cidr_type.is_none() {
        return Err("PodCIDRType is not allowed to be empty".to_string());
    }
    for cidr in spec.hijack_cidr.iter_mut().flatten() {
        if !cidr.contains('/') {
            let address: IpAddr = cidr
                .parse()
                .map_err(|_| format!("invalid IP address: {cidr}"))?;
            let bits = if address.is_ipv4() { 32 } else { 128 };
            *cidr = format!("{cidr}/{bits}");
        }
    }
    for route in spec.policy_routes.iter_mut().flatten() {
        let prefix = parse_ip_or_cidr(&route.dst)
            .map_err(|error| format!("invalid route dst {}: {error}", route.dst))?;
        route.dst = prefix.to_string();
    }
    Ok(())
}

fn mac_prefix_error(prefix: &str) -> Option<FieldError> {
    let invalid = |detail: &str| {
        Some(FieldError::invalid(
            "spec.podMACPrefix",
            BadValue::str(prefix),
            detail,
        ))
    };
    let parts: Vec<&str> = prefix.split(':').collect();
    let [first, second] = parts.as_slice() else {
        return invalid("not a valid MAC prefix");
    };
    if first.len() != 2 || second.len() != 2 {
        return invalid("not a valid MAC prefix");
    }
    let (Ok(first_byte), Ok(_)) = (
        i64::from_str_radix(first, 16),
        i64::from_str_radix(second, 16),
    ) else {
        return invalid("not a valid MAC prefix");
    };
    if first_byte.unsigned_abs() & 1 == 1 {
        return invalid("not a unicast MAC: the lowest bit of the first byte must be 0");
    }
    None
}

/// `ValidateCoordinatorSpec`: the first broken rule. `require_optional` is true for a
/// SpiderCoordinator (podCIDRType and podRPFilter required), false inside an SMC.
pub fn validate_spec(spec: &CoordinatorSpec, require_optional: bool) -> Result<(), FieldError> {
    if require_optional && spec.pod_cidr_type.is_none() {
        return Err(FieldError::not_supported(
            "spec.podCIDRType",
            BadValue::str(""),
            &POD_CIDR_TYPES,
        ));
    }
    for (index, cidr) in spec.hijack_cidr.iter().flatten().enumerate() {
        parse_ip_or_cidr(cidr).map_err(|error| {
            FieldError::invalid(
                format!("spec.extraCIDR[{index}]"),
                BadValue::str(cidr),
                error.to_string(),
            )
        })?;
    }
    for (index, route) in spec.policy_routes.iter().flatten().enumerate() {
        let prefix = parse_ip_or_cidr(&route.dst).map_err(|error| {
            FieldError::invalid(
                format!("spec.policyRoutes[{index}].dst"),
                BadValue::str(&route.dst),
                error.to_string(),
            )
        })?;
        let gateway: IpAddr = route.gw.parse().map_err(|_| {
            FieldError::invalid(
                format!("spec.policyRoutes[{index}].gw"),
                BadValue::str(&route.gw),
                "gw is an invalid IP address",
            )
        })?;
        if prefix.address.is_ipv4() != gateway.is_ipv4() {
            return Err(FieldError::invalid(
                format!("spec.policyRoutes[{index}]"),
                BadValue::Raw(format!(
                    "v2beta1.Route{{Dst:{}, Gw:{}}}",
                    go_quote(&route.dst),
                    go_quote(&route.gw)
                )),
                "dst and gw must use the same IP family",
            ));
        }
    }
    if let Some(prefix) = spec
        .pod_mac_prefix
        .as_deref()
        .filter(|prefix| !prefix.is_empty())
        && let Some(error) = mac_prefix_error(prefix)
    {
        return Err(error);
    }
    if let Some(length) = spec.tx_queue_len
        && length < 0
    {
        return Err(FieldError::invalid(
            "spec.txQueueLen",
            BadValue::Int(length),
            "txQueueLen can't be less than 0",
        ));
    }
    match spec.pod_rp_filter {
        None if require_optional => {
            return Err(FieldError::not_supported(
                "spec.podRPFilter",
                BadValue::Null,
                &RP_FILTERS,
            ));
        }
        Some(filter) if filter > 2 => {
            return Err(FieldError::not_supported(
                "spec.podRPFilter",
                BadValue::Int(filter),
                &RP_FILTERS,
            ));
        }
        _ => {}
    }
    if let Some(address) = spec
        .veth_link_address
        .as_deref()
        .filter(|address| !address.is_empty())
        && address.parse::<IpAddr>().is_err()
    {
        return Err(FieldError::invalid(
            "spec.vethLinkAddress",
            BadValue::str(address),
            "vethLinkAddress is an invalid IP address",
        ));
    }
    if let Some(mtu) = spec.veth_mtu
        && mtu <= 0
    {
        return Err(FieldError::invalid(
            "spec.vethMTU",
            BadValue::Int(mtu),
            "vethMTU must be greater than 0",
        ));
    }
    Ok(())
}

/// Validation on CREATE and UPDATE.
pub fn validate(coordinator: &SpiderCoordinator) -> Result<(), Denial> {
    validate_spec(&coordinator.spec, true)
        .map_err(|error| Denial::invalid_one(KIND, &coordinator.name_any(), error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> CoordinatorSpec {
        serde_json::from_value(value).unwrap()
    }

    fn error(value: serde_json::Value) -> String {
        validate_spec(&spec(value), false).unwrap_err().to_string()
    }

    #[test]
    fn coordinator_rules_match_golden_g67() {
        assert!(validate_spec(&spec(json!({"podMACPrefix": "9e:10"})), false).is_ok());
        assert_eq!(
            error(json!({"podMACPrefix": "01:10"})),
            "spec.podMACPrefix: Invalid value: \"01:10\": not a unicast MAC: the lowest bit of the first byte must be 0"
        );
        assert_eq!(
            error(json!({"podMACPrefix": "0a"})),
            "spec.podMACPrefix: Invalid value: \"0a\": not a valid MAC prefix"
        );
        assert_eq!(
            error(json!({"podRPFilter": 4})),
            "spec.podRPFilter: Unsupported value: 4: supported values: \"0\", \"1\", \"2\""
        );
        assert!(validate_spec(&spec(json!({"podRPFilter": -1})), false).is_ok());
        assert_eq!(
            error(json!({"txQueueLen": -1})),
            "spec.txQueueLen: Invalid value: -1: txQueueLen can't be less than 0"
        );
        assert_eq!(
            error(json!({"vethMTU": 0})),
            "spec.vethMTU: Invalid value: 0: vethMTU must be greater than 0"
        );
        assert_eq!(
            error(json!({"policyRoutes": [{"dst": "10.10.0.0/16", "gw": "fd00::1"}]})),
            "spec.policyRoutes[0]: Invalid value: v2beta1.Route{Dst:\"10.10.0.0/16\", Gw:\"fd00::1\"}: dst and gw must use the same IP family"
        );
        assert_eq!(
            error(json!({"vethLinkAddress": "nope"})),
            "spec.vethLinkAddress: Invalid value: \"nope\": vethLinkAddress is an invalid IP address"
        );
        assert!(
            error(json!({"hijackCIDR": ["bad"]}))
                .starts_with("spec.extraCIDR[0]: Invalid value: \"bad\"")
        );
    }

    #[test]
    fn a_spider_coordinator_needs_pod_cidr_type_and_rp_filter() {
        assert_eq!(
            validate_spec(&spec(json!({})), true)
                .unwrap_err()
                .to_string(),
            "spec.podCIDRType: Unsupported value: \"\": supported values: \"auto\", \"cluster\", \"calico\", \"cilium\", \"none\""
        );
        assert_eq!(
            validate_spec(&spec(json!({"podCIDRType": "cluster"})), true)
                .unwrap_err()
                .to_string(),
            "spec.podRPFilter: Unsupported value: null: supported values: \"0\", \"1\", \"2\""
        );
    }

    #[test]
    fn defaulting_fills_values_and_normalises_addresses() {
        let mut coordinator: SpiderCoordinator = serde_json::from_value(json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": KIND, "metadata": {"name": "default"},
            "spec": {"podCIDRType": "cluster", "hijackCIDR": ["10.0.0.1", "fd00::/64"],
                     "policyRoutes": [{"dst": "10.0.0.5", "gw": "10.0.0.1"}]}
        }))
        .unwrap();
        mutate(&mut coordinator).unwrap();
        let spec = &coordinator.spec;
        assert_eq!(spec.mode, Some(CoordinatorMode::Auto));
        assert_eq!(
            (spec.host_rule_table, spec.veth_mtu, spec.pod_rp_filter),
            (Some(500), Some(1500), Some(0))
        );
        assert_eq!(
            spec.hijack_cidr,
            Some(vec!["10.0.0.1/32".to_string(), "fd00::/64".into()])
        );
        assert_eq!(
            spec.policy_routes
                .as_ref()
                .map(|routes| routes[0].dst.as_str()),
            Some("10.0.0.5/32")
        );
        // No finalizer: nothing needs one (see `mutate`).
        assert_eq!(coordinator.metadata.finalizers, None);
        assert!(validate(&coordinator).is_ok());
    }
}
