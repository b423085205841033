//! Rules shared by the IPPool, Subnet and ReservedIP webhooks: the `spec.ipVersion` checks, the
//! gateway and "inside the subnet" checks, range merging, and Kubernetes label-selector
//! validation. All pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use spiderpool_api::constants::FINALIZER;
use spiderpool_ipam::cidr::{Cidr, cidr_label_value};
use spiderpool_ipam::ip::{IpVersion, parse_ip};
use spiderpool_ipam::labels::{label_value_errors, qualified_name_errors};
use spiderpool_ipam::range::{IpRange, merge_ip_ranges};
use spiderpool_ipam::settings::ClusterSettings;

use super::field::{BadValue, Denial, FieldError, go_quote, go_string_map, go_string_slice};

pub const IP_VERSION_FIELD: &str = "spec.ipVersion";
pub const SUBNET_FIELD: &str = "spec.subnet";
pub const IPS_FIELD: &str = "spec.ips";
pub const EXCLUDE_IPS_FIELD: &str = "spec.excludeIPs";
pub const GATEWAY_FIELD: &str = "spec.gateway";

/// `validate*IPVersion`: present, 4 or 6, and enabled. `missing_detail` names what the version
/// should have been derived from.
pub fn validate_ip_version(
    version: Option<i64>,
    settings: &ClusterSettings,
    missing_detail: &str,
) -> Result<IpVersion, FieldError> {
    let Some(number) = version else {
        return Err(FieldError::invalid(
            IP_VERSION_FIELD,
            BadValue::Null,
            missing_detail,
        ));
    };
    let Some(version) = IpVersion::from_number(number) else {
        return Err(FieldError::not_supported(
            IP_VERSION_FIELD,
            BadValue::Int(number),
            &["4", "6"],
        ));
    };
    if !settings.family_enabled(version) {
        return Err(FieldError::forbidden(
            IP_VERSION_FIELD,
            format!("IPv{version} is disabled"),
        ));
    }
    Ok(version)
}

/// `ValidateContainsIP`: `ip` is an address of the family inside `subnet`.
pub fn validate_contains_ip(
    field: &str,
    version: IpVersion,
    subnet: &str,
    ip: &str,
) -> Result<(), FieldError> {
    let invalid = |detail: String| FieldError::invalid(field, BadValue::str(ip), detail);
    let cidr = Cidr::parse(version, subnet).map_err(|error| invalid(error.to_string()))?;
    let address = parse_ip(version, ip)
        .ok_or_else(|| invalid(format!("invalid IP format in IPv{version} '{ip}'")))?;
    if !cidr.contains_ip(&address) {
        return Err(invalid(format!(
            "not pertains to the 'spec.subnet' {subnet} of IPPool"
        )));
    }
    Ok(())
}

/// `ValidateContainsIPRange`: `range` is a valid range (never reversed: deliberate difference
/// #7) with both ends inside `subnet`.
pub fn validate_contains_ip_range(
    field: &str,
    version: IpVersion,
    subnet: &str,
    range: &str,
) -> Result<(), FieldError> {
    let invalid = |detail: String| FieldError::invalid(field, BadValue::str(range), detail);
    let cidr = Cidr::parse(version, subnet).map_err(|error| invalid(error.to_string()))?;
    let parsed = IpRange::parse(version, range).map_err(|error| invalid(error.to_string()))?;
    if !cidr.contains_range(&parsed) {
        return Err(invalid(format!(
            "not pertains to the 'spec.subnet' {subnet} of IPPool"
        )));
    }
    Ok(())
}

/// `IPRangeContainsIP` with errors read as "no".
fn range_contains_ip(version: IpVersion, range: &str, ip: &IpAddr) -> bool {
    IpRange::parse_unordered(version, range).is_ok_and(|range| range.contains(ip))
}

/// `validateIPPoolGateway` / `validateSubnetGateway`: inside the subnet, and listed in
/// `excludeIPs` when an `ips` range holds it.
pub fn validate_gateway(
    version: IpVersion,
    subnet: &str,
    gateway: Option<&str>,
    ips: &[String],
    exclude_ips: &[String],
) -> Result<(), FieldError> {
    let Some(gateway) = gateway else {
        return Ok(());
    };
    validate_contains_ip(GATEWAY_FIELD, version, subnet, gateway)?;
    let Some(address) = parse_ip(version, gateway) else {
        return Ok(());
    };
    if exclude_ips
        .iter()
        .any(|range| range_contains_ip(version, range, &address))
    {
        return Ok(());
    }
    for (index, range) in ips.iter().enumerate() {
        if range_contains_ip(version, range, &address) {
            return Err(FieldError::invalid(
                format!("{IPS_FIELD}[{index}]"),
                BadValue::str(range),
                format!(
                    "conflicts with 'spec.gateway' {gateway}, add the gateway IP address to 'spec.excludeIPs' or remove it from 'spec.ips'"
                ),
            ));
        }
    }
    Ok(())
}

/// The IP family of a subnet string (`IsIPv4CIDR` / `IsIPv6CIDR`).
pub fn cidr_version(subnet: &str) -> Option<IpVersion> {
    Cidr::parse_any(subnet).ok().map(|cidr| cidr.version())
}

/// The defaulting both pools and subnets get (`mutateIPPool`, `mutateSubnet`): `spec.ipVersion`
/// derived from `spec.subnet` when unset, and the `*-cidr` label value of the subnet. Errors stop
/// the defaulting (what was done is kept).
pub fn default_version_and_cidr_label(
    ip_version: &mut Option<i64>,
    subnet: &str,
) -> Result<(IpVersion, String), String> {
    let version = match ip_version.and_then(IpVersion::from_number) {
        Some(version) => version,
        None if ip_version.is_some() => {
            return Err("unsupported 'spec.ipVersion', nothing to mutate".to_string());
        }
        None => {
            let version = cidr_version(subnet).ok_or_else(|| {
                format!(
                    "failed to generate 'spec.ipVersion' from 'spec.subnet' {subnet}, nothing to mutate"
                )
            })?;
            *ip_version = Some(i64::from(version.number()));
            version
        }
    };
    let label = cidr_label_value(version, subnet).map_err(|error| {
        format!("failed to parse 'spec.subnet' {subnet} as a valid label value: {error}")
    })?;
    Ok((version, label))
}

/// The CIDR rule pools and subnets share (`validateIPPoolCIDR`, `validateSubnetCIDR`): walking
/// the existing objects of the family in order, one with the same name is a duplicate, and one
/// whose subnet overlaps `cidr` is refused naming it as `word` (`IPPool`, `Subnet`); with
/// `identical_ok` an identical subnet string is fine (many pools share one subnet).
pub struct CidrNeighbours<'a> {
    pub kind: &'static str,
    pub word: &'static str,
    pub name: &'a str,
    pub subnet: &'a str,
    pub cidr: &'a Cidr,
    pub identical_ok: bool,
}

impl CidrNeighbours<'_> {
    pub fn check<'b>(
        &self,
        version: IpVersion,
        others: impl IntoIterator<Item = (String, &'b str)>,
    ) -> Result<(), Denial> {
        let invalid = |error: FieldError| Denial::invalid_one(self.kind, self.name, error);
        for (name, subnet) in others {
            if name == self.name {
                return Err(Denial::AlreadyExists {
                    resource: self.kind,
                    name,
                });
            }
            if self.identical_ok && subnet == self.subnet {
                continue;
            }
            let other = Cidr::parse(version, subnet).map_err(|error| {
                invalid(FieldError::internal(
                    SUBNET_FIELD,
                    format!("failed to compare whether 'spec.subnet' overlaps: {error}"),
                ))
            })?;
            if self.cidr.overlaps(&other) {
                return Err(invalid(FieldError::invalid(
                    SUBNET_FIELD,
                    BadValue::str(self.subnet),
                    format!(
                        "overlap with {} {name} which 'spec.subnet' is {subnet}",
                        self.word
                    ),
                )));
            }
        }
        Ok(())
    }
}

/// The part of a pool's or subnet's spec that never changes: its family and its CIDR.
#[derive(Debug, Clone, Copy)]
pub struct Family<'a> {
    pub ip_version: Option<i64>,
    pub subnet: &'a str,
}

/// The start of `validateIPPoolUpdate` / `validateSubnetUpdate` for an object of `kind`:
/// `Ok(false)` when the object is terminating without our finalizer (nothing more is judged); a
/// terminating one with it may not change (denied with `terminating`); `spec.ipVersion` and
/// `spec.subnet` are not changeable.
pub fn update_is_judged(
    kind: &'static str,
    new_metadata: &ObjectMeta,
    old: Family<'_>,
    new: Family<'_>,
    terminating: &'static str,
) -> Result<bool, Denial> {
    if new_metadata.deletion_timestamp.is_some() {
        if !has_finalizer(new_metadata) {
            return Ok(false);
        }
        return Err(Denial::forbidden_plain(terminating));
    }
    let name = new_metadata.name.as_deref().unwrap_or_default();
    let unchangeable = |field: &str| {
        Denial::invalid_one(
            kind,
            name,
            FieldError::forbidden(field, "is not changeable"),
        )
    };
    if let (Some(new_version), Some(old_version)) = (new.ip_version, old.ip_version)
        && new_version != old_version
    {
        return Err(unchangeable(IP_VERSION_FIELD));
    }
    if new.subnet != old.subnet {
        return Err(unchangeable(SUBNET_FIELD));
    }
    Ok(true)
}

/// `validate*Delete` (only with `enableValidatingResourcesDeletedWebhook`): a pool or subnet with
/// allocated addresses (`status.allocatedIPCount`) stays; `word` names the kind in the message.
pub fn validate_delete_of_allocated(
    settings: &ClusterSettings,
    resource: &'static str,
    name: String,
    word: &str,
    allocated: Option<i64>,
) -> Result<(), Denial> {
    match allocated {
        Some(count) if count > 0 && settings.enable_validating_resources_deleted_webhook => {
            Err(Denial::Forbidden {
                resource: Some(resource),
                name,
                message: format!("cannot delete an {word} with allocated IPs({count})"),
            })
        }
        _ => Ok(()),
    }
}

/// Merges a list of ranges when it has more than one item (the mutating webhooks' rule).
pub fn merge_if_several(
    version: IpVersion,
    ranges: &mut Option<Vec<String>>,
) -> Result<(), String> {
    if let Some(list) = ranges.as_mut()
        && list.len() > 1
    {
        *list = merge_ip_ranges(version, list).map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// Adds the Spiderpool finalizer when missing.
pub fn add_finalizer(metadata: &mut ObjectMeta) {
    let finalizers = metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|finalizer| finalizer == FINALIZER) {
        finalizers.push(FINALIZER.to_string());
    }
}

pub fn has_finalizer(metadata: &ObjectMeta) -> bool {
    metadata
        .finalizers
        .as_ref()
        .is_some_and(|finalizers| finalizers.iter().any(|finalizer| finalizer == FINALIZER))
}

/// `metav1.GetControllerOf`.
pub fn controller_of(metadata: &ObjectMeta) -> Option<&OwnerReference> {
    metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|reference| reference.controller == Some(true))
}

/// `%#v` of a `metav1.LabelSelector` value, as upstream passes it as a bad value.
pub fn go_label_selector(selector: &LabelSelector) -> String {
    let labels = match &selector.match_labels {
        None => "map[string]string(nil)".to_string(),
        Some(labels) => go_string_map(labels),
    };
    let expressions = match &selector.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(expressions) => {
            let items: Vec<String> = expressions
                .iter()
                .map(|requirement| {
                    let values = match &requirement.values {
                        None => "[]string(nil)".to_string(),
                        Some(values) => go_string_slice(values),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        go_quote(&requirement.key),
                        go_quote(&requirement.operator)
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{expressions}}}")
}

/// Kubernetes `ValidateLabelSelector` with `AllowInvalidLabelValueInSelector: false` (match
/// labels in key order, Go's map order being random).
pub fn validate_label_selector(selector: &LabelSelector, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let labels_path = format!("{path}.matchLabels");
    let empty = BTreeMap::new();
    for (key, value) in selector.match_labels.as_ref().unwrap_or(&empty) {
        for message in qualified_name_errors(key) {
            errors.push(FieldError::invalid(
                &labels_path,
                BadValue::str(key),
                message,
            ));
        }
        for message in label_value_errors(value) {
            errors.push(FieldError::invalid(
                &labels_path,
                BadValue::str(value),
                message,
            ));
        }
    }
    for (index, requirement) in selector
        .match_expressions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let requirement_path = format!("{path}.matchExpressions[{index}]");
        let values = requirement.values.as_deref().unwrap_or_default();
        match requirement.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errors.push(FieldError::required(
                        format!("{requirement_path}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errors.push(FieldError::forbidden(
                        format!("{requirement_path}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errors.push(FieldError::invalid(
                format!("{requirement_path}.operator"),
                BadValue::str(other),
                "not a valid selector operator",
            )),
        }
        for message in qualified_name_errors(&requirement.key) {
            errors.push(FieldError::invalid(
                format!("{requirement_path}.key"),
                BadValue::str(&requirement.key),
                message,
            ));
        }
        for (value_index, value) in values.iter().enumerate() {
            for message in label_value_errors(value) {
                errors.push(FieldError::invalid(
                    format!("{requirement_path}.values[{value_index}]"),
                    BadValue::str(value),
                    message,
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_version_rules_follow_upstream_order() {
        let settings = ClusterSettings::default();
        assert_eq!(
            validate_ip_version(None, &settings, "is not generated correctly")
                .unwrap_err()
                .to_string(),
            "spec.ipVersion: Invalid value: null: is not generated correctly"
        );
        assert_eq!(
            validate_ip_version(Some(5), &settings, "x")
                .unwrap_err()
                .to_string(),
            "spec.ipVersion: Unsupported value: 5: supported values: \"4\", \"6\""
        );
        let v4_only = ClusterSettings {
            enable_ipv6: false,
            ..ClusterSettings::default()
        };
        assert_eq!(
            validate_ip_version(Some(6), &v4_only, "x")
                .unwrap_err()
                .to_string(),
            "spec.ipVersion: Forbidden: IPv6 is disabled"
        );
        assert_eq!(
            validate_ip_version(Some(4), &v4_only, "x"),
            Ok(IpVersion::V4)
        );
    }

    #[test]
    fn gateway_inside_ips_must_be_excluded() {
        // G31
        let ips = vec!["172.18.40.1-172.18.40.2".to_string(), "172.18.40.10".into()];
        let error = validate_gateway(
            IpVersion::V4,
            "172.18.40.0/24",
            Some("172.18.40.1"),
            &ips,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "spec.ips[0]: Invalid value: \"172.18.40.1-172.18.40.2\": conflicts with 'spec.gateway' 172.18.40.1, add the gateway IP address to 'spec.excludeIPs' or remove it from 'spec.ips'"
        );
        assert!(
            validate_gateway(
                IpVersion::V4,
                "172.18.40.0/24",
                Some("172.18.40.1"),
                &ips,
                &["172.18.40.1".to_string()]
            )
            .is_ok()
        );
        assert_eq!(
            validate_gateway(
                IpVersion::V4,
                "172.18.40.0/24",
                Some("172.18.41.1"),
                &[],
                &[]
            )
            .unwrap_err()
            .to_string(),
            "spec.gateway: Invalid value: \"172.18.41.1\": not pertains to the 'spec.subnet' 172.18.40.0/24 of IPPool"
        );
    }

    #[test]
    fn ranges_must_lie_inside_the_subnet_and_not_be_reversed() {
        assert!(
            validate_contains_ip_range(
                "spec.ips[0]",
                IpVersion::V4,
                "10.0.0.0/24",
                "10.0.0.1-10.0.0.9"
            )
            .is_ok()
        );
        assert_eq!(
            validate_contains_ip_range("spec.ips[0]", IpVersion::V4, "10.0.0.0/24", "10.0.1.1")
                .unwrap_err()
                .to_string(),
            "spec.ips[0]: Invalid value: \"10.0.1.1\": not pertains to the 'spec.subnet' 10.0.0.0/24 of IPPool"
        );
        let reversed = validate_contains_ip_range(
            "spec.ips[0]",
            IpVersion::V4,
            "10.0.0.0/24",
            "10.0.0.9-10.0.0.1",
        )
        .unwrap_err()
        .to_string();
        assert!(
            reversed.contains("write it as '10.0.0.1-10.0.0.9'"),
            "{reversed}"
        );
    }

    #[test]
    fn label_selectors_are_validated_like_kubernetes() {
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"key": ".starts.with.dot"},
            "matchExpressions": [{"key": "a", "operator": "Bogus"}, {"key": "b", "operator": "In"}]
        }))
        .unwrap();
        let errors: Vec<String> = validate_label_selector(&selector, "spec.podAffinity")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with(
            "spec.podAffinity.matchLabels: Invalid value: \".starts.with.dot\": a valid label must be"
        ));
        assert_eq!(
            errors[1],
            "spec.podAffinity.matchExpressions[0].operator: Invalid value: \"Bogus\": not a valid selector operator"
        );
        assert_eq!(
            errors[2],
            "spec.podAffinity.matchExpressions[1].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert_eq!(
            go_label_selector(&LabelSelector {
                match_labels: Some(BTreeMap::new()),
                match_expressions: Some(vec![]),
            }),
            "v1.LabelSelector{MatchLabels:map[string]string{}, MatchExpressions:[]v1.LabelSelectorRequirement{}}"
        );
    }
}
