//! SpiderMultusConfig admission (§1.5, §3.6): defaulting (the same [`defaults::multus_config`]
//! the NAD renderer uses, plus the injection labels) and validation, pure. The handler GETs the target
//! NetworkAttachmentDefinition from the API server (uncached, as upstream).

use std::collections::BTreeMap;

use kube::ResourceExt;
use serde::Serialize;
use spiderpool_api::constants::{
    ANNO_MULTUS_CNI_VERSION, ANNO_MULTUS_CR_NAME, NETWORK_RESOURCE_INJECT, RDMA_RESOURCE_INJECT,
    SUPPORTED_CNI_VERSIONS,
};
use spiderpool_api::{CniType, SpiderMultusConfig, SpiderpoolPools, VlanMode};
use spiderpool_ipam::labels::dns1123_subdomain_errors;

use super::coordinator;
use super::field::{BadValue, Denial, FieldError};
use spiderpool_api::defaults;

pub const KIND: &str = "SpiderMultusConfig";
const CNI_TYPE: &str = "spec.cniType";
const ANNOTATIONS: &str = "metadata.annotations";

/// The NetworkAttachmentDefinition an SMC would generate, as the handler found it.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetNad {
    Absent,
    /// Names of the SpiderMultusConfigs listed in its ownerReferences.
    Present {
        smc_owners: Vec<String>,
    },
    Error(String),
}

/// The name of the NAD an SMC generates: the custom name annotation, or the SMC's own.
pub fn target_nad_name(smc: &SpiderMultusConfig) -> String {
    smc.annotations()
        .get(ANNO_MULTUS_CR_NAME)
        .cloned()
        .unwrap_or_else(|| smc.name_any())
}

/// `mutateSpiderMultusConfig`: the defaults, and the injection annotations copied to labels.
pub fn mutate(smc: &mut SpiderMultusConfig) {
    defaults::multus_config(&mut smc.spec);
    for key in [RDMA_RESOURCE_INJECT, NETWORK_RESOURCE_INJECT] {
        if let Some(value) = smc.annotations().get(key).cloned() {
            smc.labels_mut().insert(key.to_string(), value);
        }
    }
}

/// Validation on CREATE (`old` = None) and UPDATE.
pub fn validate(
    old: Option<&SpiderMultusConfig>,
    smc: &SpiderMultusConfig,
    target: &TargetNad,
) -> Result<(), Denial> {
    let result = (|| {
        if let Some(old) = old {
            validate_custom_name_unchanged(old, smc)?;
        }
        validate_annotations(smc, target)?;
        validate_cni_config(smc)
    })();
    result.map_err(|error| Denial::invalid_one(KIND, &smc.name_any(), error))
}

fn validate_custom_name_unchanged(
    old: &SpiderMultusConfig,
    new: &SpiderMultusConfig,
) -> Result<(), FieldError> {
    let old_name = old.annotations().get(ANNO_MULTUS_CR_NAME);
    let new_name = new.annotations().get(ANNO_MULTUS_CR_NAME);
    match (old_name, new_name) {
        (Some(old_name), Some(new_name)) if old_name != new_name => Err(FieldError::invalid(
            ANNOTATIONS,
            BadValue::str(old_name),
            format!(
                "it's unsupported to change customized Multus net-attach-def resource name from '{old_name}' to '{new_name}'"
            ),
        )),
        (None, Some(new_name)) => Err(FieldError::invalid(
            ANNOTATIONS,
            BadValue::str(new_name),
            format!(
                "it's unsupported to changed Multus net-attach-def '{}' to customized name '{new_name}'",
                old.name_any()
            ),
        )),
        _ => Ok(()),
    }
}

fn validate_annotations(smc: &SpiderMultusConfig, target: &TargetNad) -> Result<(), FieldError> {
    let annotations = smc.annotations();
    let bad_value = || BadValue::string_map(annotations);
    if let Some(custom) = annotations.get(ANNO_MULTUS_CR_NAME) {
        let errors = dns1123_subdomain_errors(custom);
        if !errors.is_empty() {
            return Err(FieldError::invalid(
                ANNOTATIONS,
                bad_value(),
                format!(
                    "invalid custom net-attach-def resource name, err: [{}]",
                    errors.join(" ")
                ),
            ));
        }
    }
    let namespace = smc.namespace().unwrap_or_default();
    let nad = target_nad_name(smc);
    match target {
        TargetNad::Absent => {}
        TargetNad::Error(error) => {
            return Err(FieldError::internal(
                ANNOTATIONS,
                format!(
                    "failed to retrieve net-attach-def {namespace}/{nad}, unable to determine conflicts with existing resources. error: {error}"
                ),
            ));
        }
        TargetNad::Present { smc_owners } => {
            if let Some(owner) = smc_owners.iter().find(|owner| **owner != smc.name_any()) {
                return Err(FieldError::invalid(
                    ANNOTATIONS,
                    bad_value(),
                    format!(
                        "the net-attach-def {namespace}/{nad} already exists and is managed by SpiderMultusConfig {namespace}/{owner}."
                    ),
                ));
            }
        }
    }
    if let Some(version) = annotations.get(ANNO_MULTUS_CNI_VERSION)
        && !SUPPORTED_CNI_VERSIONS.contains(&version.as_str())
    {
        return Err(FieldError::invalid(
            ANNOTATIONS,
            bad_value(),
            format!("unsupported CNI version {version}"),
        ));
    }
    Ok(())
}

fn vlan_id_error(vlan_id: Option<i32>) -> Option<String> {
    vlan_id
        .filter(|id| !(0..=4094).contains(id))
        .map(|id| format!("invalid vlanId {id}, please make sure vlanId in range [0,4094]"))
}

fn pools_count(pools: &Option<SpiderpoolPools>) -> Option<usize> {
    pools.as_ref().map(|pools| {
        pools.ipv4.as_ref().map_or(0, Vec::len) + pools.ipv6.as_ref().map_or(0, Vec::len)
    })
}

/// `ValidateRdmaResouce` / `ValidateNetworkResouce`.
fn inject_error(
    smc: &SpiderMultusConfig,
    resource_name: &str,
    pools: &Option<SpiderpoolPools>,
) -> Option<String> {
    let annotations = smc.annotations();
    let namespace = smc.namespace().unwrap_or_default();
    let name = smc.name_any();
    let no_pools =
        || format!("no any ippools configured for spidermultusconfig {namespace}/{name}");
    if annotations.contains_key(RDMA_RESOURCE_INJECT) {
        if resource_name.is_empty() {
            return Some(format!(
                "rdmaResourceName can not empty for spidermultusconfig {namespace}/{name}"
            ));
        }
        if pools_count(pools).unwrap_or(0) == 0 {
            return Some(no_pools());
        }
    }
    if annotations.contains_key(NETWORK_RESOURCE_INJECT)
        && !resource_name.is_empty()
        && pools_count(pools).unwrap_or(0) == 0
    {
        return Some(no_pools());
    }
    None
}

/// `checkExistedConfig`: a section other than `keep` is set.
fn has_other_section(smc: &SpiderMultusConfig, keep: CniType) -> bool {
    let spec = &smc.spec;
    (keep != CniType::Macvlan && spec.macvlan.is_some())
        || (keep != CniType::Ipvlan && spec.ipvlan.is_some())
        || (keep != CniType::Vlan && spec.vlan.is_some())
        || (keep != CniType::Ovs && spec.ovs.is_some())
        || (keep != CniType::Sriov && spec.sriov.is_some())
        || (keep != CniType::IbSriov && spec.ibsriov.is_some())
        || (keep != CniType::Ipoib && spec.ipoib.is_some())
        || (keep != CniType::Custom && spec.custom_cni.is_some())
}

fn only_supports(cni_type: CniType, field: &str) -> FieldError {
    FieldError::forbidden(
        CNI_TYPE,
        format!("the cniType {cni_type} only supports {field}, please remove other CNI configs"),
    )
}

fn json_value<T: Serialize>(value: &T) -> BadValue {
    BadValue::json(value)
}

fn no_injection(cni_type: CniType) -> FieldError {
    FieldError::forbidden(
        CNI_TYPE,
        format!(
            "the cniType {cni_type} does not support RDMA resource or network resource injected"
        ),
    )
}

/// The section `field` of the CNI type, which must be there.
fn section<'a, T>(field: &str, config: Option<&'a T>) -> Result<&'a T, FieldError> {
    config.ok_or_else(|| FieldError::required(field, format!("no {field} specified")))
}

fn check_vlan_id(field: &str, vlan_id: Option<i32>) -> Result<(), FieldError> {
    match vlan_id_error(vlan_id) {
        Some(error) => Err(FieldError::invalid(
            field,
            BadValue::Int(vlan_id.unwrap_or_default().into()),
            error,
        )),
        None => Ok(()),
    }
}

fn check_mtu(field: &str, mtu: Option<i32>) -> Result<(), FieldError> {
    match mtu.filter(|mtu| *mtu < 0) {
        Some(mtu) => Err(FieldError::invalid(
            field,
            BadValue::Int(mtu.into()),
            "MTU must be greater than or equal to 0",
        )),
        None => Ok(()),
    }
}

fn check_no_match_master_subnet<T: Serialize>(
    field: &str,
    config: &T,
    pools: &Option<SpiderpoolPools>,
    cni_type: CniType,
) -> Result<(), FieldError> {
    if pools.as_ref().and_then(|pools| pools.match_master_subnet) == Some(true) {
        return Err(FieldError::invalid(
            field,
            json_value(config),
            format!("MatchMasterSubnet feature is not supported for {cni_type}"),
        ));
    }
    Ok(())
}

/// The device a section names (`resourceName`, `master`), which must not be empty.
fn required_device(field: &str, key: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::required(
            field,
            format!("no {field}[{key}] specified"),
        ));
    }
    Ok(())
}

/// The end of every section's checks: no other section is set (`only` names the one allowed in
/// the denial), and the injected resource `resource` fits the section's pools.
fn alone_and_injectable<T: Serialize>(
    smc: &SpiderMultusConfig,
    cni_type: CniType,
    field: &str,
    only: &str,
    config: &T,
    resource: &str,
    pools: &Option<SpiderpoolPools>,
) -> Result<(), FieldError> {
    if has_other_section(smc, cni_type) {
        return Err(only_supports(cni_type, only));
    }
    if let Some(error) = inject_error(smc, resource, pools) {
        return Err(FieldError::invalid(field, json_value(config), error));
    }
    Ok(())
}

/// `validateVlanCNIConfig`.
fn master_error(
    master: &[String],
    bond: Option<&spiderpool_api::BondConfig>,
) -> Option<&'static str> {
    match master.len() {
        0 => Some("master can't be empty"),
        1 => None,
        _ => match bond {
            None => Some("the bond property is nil with multiple Interfaces"),
            Some(bond) if bond.name.is_empty() => Some("bond name can't be empty"),
            Some(_) => None,
        },
    }
}

/// `validateCNIConfig`.
pub fn validate_cni_config(smc: &SpiderMultusConfig) -> Result<(), FieldError> {
    let spec = &smc.spec;
    let Some(cni_type) = spec.cni_type else {
        return Err(FieldError::invalid(
            CNI_TYPE,
            BadValue::Null,
            "CniType must not be nil",
        ));
    };
    let injects = smc.annotations().contains_key(RDMA_RESOURCE_INJECT)
        || smc.annotations().contains_key(NETWORK_RESOURCE_INJECT);
    match cni_type {
        CniType::Macvlan | CniType::Ipvlan => {
            let (field, config) = if cni_type == CniType::Macvlan {
                ("spec.macvlanConfig", spec.macvlan.as_ref())
            } else {
                ("spec.ipvlanConfig", spec.ipvlan.as_ref())
            };
            let config = section(field, config)?;
            check_vlan_id(field, config.vlan_id)?;
            check_mtu(field, config.mtu)?;
            check_no_match_master_subnet(field, config, &config.ippools, cni_type)?;
            if let Some(error) = master_error(&config.master, config.bond.as_ref()) {
                return Err(FieldError::invalid(field, json_value(config), error));
            }
            let rdma = config.rdma_resource_name.as_deref().unwrap_or_default();
            alone_and_injectable(smc, cni_type, field, field, config, rdma, &config.ippools)?;
        }
        CniType::Vlan => {
            let field = "spec.vlan";
            let config = section(field, spec.vlan.as_ref())?;
            let mode_error = match (config.vlan_mode, config.vlan_id) {
                (None, _) => Some("vlanMode must not be nil"),
                (Some(VlanMode::Manual), None) => {
                    Some("vlanId must not be nil when vlanMode is manual")
                }
                (Some(VlanMode::Auto), Some(_)) => {
                    Some("vlanId must not be specified when vlanMode is auto")
                }
                _ => None,
            };
            if let Some(error) = mode_error {
                return Err(FieldError::invalid(field, json_value(config), error));
            }
            check_vlan_id(field, config.vlan_id)?;
            check_mtu(field, config.mtu)?;
            check_no_match_master_subnet(field, config, &config.ippools, cni_type)?;
            if let Some(error) = master_error(&config.master, config.bond.as_ref()) {
                return Err(FieldError::invalid(field, json_value(config), error));
            }
            let rdma = config.rdma_resource_name.as_deref().unwrap_or_default();
            alone_and_injectable(smc, cni_type, field, field, config, rdma, &config.ippools)?;
        }
        CniType::Sriov => {
            let field = "spec.sriovConfig";
            let config = section(field, spec.sriov.as_ref())?;
            check_vlan_id(field, config.vlan_id)?;
            // Upstream dereferences the macvlan section here and would panic (deliberate
            // difference #10): we answer with the intended denial.
            check_mtu(field, config.mtu)?;
            if let (Some(min), Some(max)) = (config.min_tx_rate_mbps, config.max_tx_rate_mbps)
                && min > max
            {
                return Err(FieldError::invalid(
                    field,
                    BadValue::Int(min),
                    "minTxRateMbps must be less than maxTxRateMbps",
                ));
            }
            let resource = config.resource_name.as_deref().unwrap_or_default();
            required_device(field, "resourceName", resource)?;
            alone_and_injectable(
                smc,
                cni_type,
                field,
                field,
                config,
                resource,
                &config.ippools,
            )?;
        }
        CniType::IbSriov => {
            let field = "spec.ibsriovConfig";
            let config = section(field, spec.ibsriov.as_ref())?;
            let resource = config.resource_name.as_deref().unwrap_or_default();
            required_device(field, "resourceName", resource)?;
            // Upstream names the sriov section here.
            let only = "spec.sriovConfig";
            alone_and_injectable(
                smc,
                cni_type,
                field,
                only,
                config,
                resource,
                &config.ippools,
            )?;
        }
        CniType::Ipoib => {
            let field = "spec.ipoibConfig";
            let config = section(field, spec.ipoib.as_ref())?;
            let master = config.master.as_deref().unwrap_or_default();
            required_device(field, "master", master)?;
            let only = "spec.sriovConfig";
            alone_and_injectable(smc, cni_type, field, only, config, master, &config.ippools)?;
        }
        CniType::Ovs => {
            let field = "spec.ovsConfig";
            if injects {
                return Err(no_injection(cni_type));
            }
            let config = section(field, spec.ovs.as_ref())?;
            // The CRD calls it required; an empty name would fail every pod at ADD.
            if config.bridge.trim().is_empty() {
                return Err(FieldError::required(
                    "spec.ovsConfig.bridge",
                    "the name of the OVS bridge to add pod ports to is required",
                ));
            }
            check_vlan_id(field, config.vlan)?;
            for trunk in config.trunk.iter().flatten() {
                let trunk_error =
                    |detail: &str| FieldError::invalid(field, json_value(trunk), detail);
                if trunk.min_id.is_some_and(|id| id > 4094) {
                    return Err(trunk_error("incorrect trunk minID parameter"));
                }
                if let Some(max) = trunk.max_id {
                    if max > 4094 {
                        return Err(trunk_error("incorrect trunk maxID parameter"));
                    }
                    // Upstream dereferences a missing minID here and would panic (deliberate
                    // difference #10): a missing minID counts as 0.
                    if max < trunk.min_id.unwrap_or(0) {
                        return Err(trunk_error(
                            "minID is greater than maxID in trunk parameter",
                        ));
                    }
                }
                if trunk.id.is_some_and(|id| id > 4096) {
                    return Err(trunk_error("incorrect trunk id parameter"));
                }
            }
            if has_other_section(smc, cni_type) {
                return Err(only_supports(cni_type, "spec.sriovConfig"));
            }
        }
        CniType::Custom => {
            if injects {
                return Err(no_injection(cni_type));
            }
            if has_other_section(smc, cni_type) {
                return Err(only_supports(cni_type, "spec.customCniTypeConfig"));
            }
            if let Some(custom) = spec
                .custom_cni
                .as_deref()
                .filter(|custom| !custom.is_empty())
                && serde_json::from_str::<serde::de::IgnoredAny>(custom).is_err()
            {
                return Err(FieldError::forbidden(
                    "spec.customCniTypeConfig",
                    "customCniConfig isn't a valid JSON encoding",
                ));
            }
        }
    }
    if let Some(coordinator_spec) = spec.coordinator.as_ref() {
        coordinator::validate_spec(coordinator_spec, false)?;
    }
    for item in spec.chain_cni_json_data.iter().flatten() {
        if let Err(error) = conf_from_bytes(item) {
            return Err(FieldError::forbidden(
                "spec.chainCNIJsonData",
                format!("invalid {item}: {error}"),
            ));
        }
    }
    Ok(())
}

/// libcni `ConfFromBytes`: a JSON object with a non-empty `type`.
fn conf_from_bytes(text: &str) -> Result<(), String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|error| format!("error parsing configuration: {error}"))?;
    let object = match value {
        serde_json::Value::Object(object) => object,
        serde_json::Value::Null => BTreeMap::new().into_iter().collect(),
        other => {
            let kind = match other {
                serde_json::Value::Array(_) => "array",
                serde_json::Value::String(_) => "string",
                serde_json::Value::Number(_) => "number",
                _ => "bool",
            };
            return Err(format!(
                "error parsing configuration: json: cannot unmarshal {kind} into Go value of type types.NetConf"
            ));
        }
    };
    match object.get("type").and_then(serde_json::Value::as_str) {
        Some(kind) if !kind.is_empty() => Ok(()),
        _ => Err("error parsing configuration: missing 'type'".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smc(spec: serde_json::Value) -> SpiderMultusConfig {
        smc_with(spec, json!({}))
    }

    fn smc_with(spec: serde_json::Value, annotations: serde_json::Value) -> SpiderMultusConfig {
        serde_json::from_value(json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": KIND,
            "metadata": {"name": "net", "namespace": "ns", "annotations": annotations},
            "spec": spec
        }))
        .unwrap()
    }

    fn denied(old: Option<&SpiderMultusConfig>, smc: &SpiderMultusConfig) -> String {
        validate(old, smc, &TargetNad::Absent)
            .unwrap_err()
            .message()
    }

    #[test]
    fn vlan_mode_rules() {
        // G45, G46, G47
        let mut defaulted = smc(json!({"cniType": "vlan", "vlan": {"master": ["eth0"]}}));
        mutate(&mut defaulted);
        assert!(validate(None, &defaulted, &TargetNad::Absent).is_ok());
        let manual =
            smc(json!({"cniType": "vlan", "vlan": {"master": ["eth0"], "vlanMode": "manual"}}));
        assert!(denied(None, &manual).contains("vlanId must not be nil when vlanMode is manual"));
        let auto = smc(
            json!({"cniType": "vlan", "vlan": {"master": ["eth0"], "vlanMode": "auto", "vlanID": 100}}),
        );
        assert!(denied(None, &auto).contains("vlanId must not be specified when vlanMode is auto"));
    }

    #[test]
    fn injection_needs_pools_only_with_a_resource_name() {
        // G49
        let annotations = json!({NETWORK_RESOURCE_INJECT: "true"});
        for cni in ["macvlan", "ipvlan"] {
            let mut candidate = smc_with(
                json!({"cniType": cni, cni: {"master": ["eth0"], "ippools": {"ipv4": ["pool-a"]}}}),
                annotations.clone(),
            );
            mutate(&mut candidate);
            assert!(
                validate(None, &candidate, &TargetNad::Absent).is_ok(),
                "{cni}"
            );
        }
        let mut sriov = smc_with(
            json!({"cniType": "sriov", "sriov": {"resourceName": "vendor.io/resource", "ippools": {"ipv4": ["pool-a"]}}}),
            annotations,
        );
        mutate(&mut sriov);
        assert!(validate(None, &sriov, &TargetNad::Absent).is_ok());
        let rdma = smc_with(
            json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
            json!({RDMA_RESOURCE_INJECT: "x"}),
        );
        assert!(
            denied(None, &rdma)
                .contains("rdmaResourceName can not empty for spidermultusconfig ns/net")
        );
    }

    #[test]
    fn sections_must_match_the_cni_type() {
        // G50, G51
        let range =
            smc(json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"], "vlanID": 4095}}));
        assert_eq!(
            denied(None, &range),
            "SpiderMultusConfig.spiderpool.spidernet.io \"net\" is invalid: spec.macvlanConfig: Invalid value: 4095: invalid vlanId 4095, please make sure vlanId in range [0,4094]"
        );
        let missing = smc(json!({"cniType": "ipvlan", "macvlan": {"master": ["eth0"]}}));
        assert!(
            denied(None, &missing)
                .ends_with("spec.ipvlanConfig: Required value: no spec.ipvlanConfig specified")
        );
        let both = smc(
            json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}, "ipvlan": {"master": ["eth1"]}}),
        );
        assert!(denied(None, &both).ends_with(
            "spec.cniType: Forbidden: the cniType macvlan only supports spec.macvlanConfig, please remove other CNI configs"
        ));
        let bondless = smc(json!({"cniType": "macvlan", "macvlan": {"master": ["eth0", "eth1"]}}));
        assert!(
            denied(None, &bondless).ends_with("the bond property is nil with multiple Interfaces")
        );
        let nil_type = smc(json!({}));
        assert!(
            denied(None, &nil_type)
                .ends_with("spec.cniType: Invalid value: null: CniType must not be nil")
        );
    }

    #[test]
    fn custom_config_must_be_json() {
        // G52, G57
        let bad = smc(json!({"cniType": "custom", "customCNI": "{ \"invalid\" }"}));
        assert!(denied(None, &bad).ends_with(
            "spec.customCniTypeConfig: Forbidden: customCniConfig isn't a valid JSON encoding"
        ));
        let good = smc(
            json!({"cniType": "custom", "customCNI": "{\"cniVersion\":\"0.3.1\",\"type\":\"macvlan\"}"}),
        );
        assert!(validate(None, &good, &TargetNad::Absent).is_ok());
        let mut empty = smc(json!({}));
        mutate(&mut empty);
        assert!(validate(None, &empty, &TargetNad::Absent).is_ok());
    }

    #[test]
    fn annotations_are_checked() {
        // G53, G54, G55
        let spec = json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}});
        let version = smc_with(spec.clone(), json!({ANNO_MULTUS_CNI_VERSION: "x.y.z"}));
        assert!(denied(None, &version).ends_with("unsupported CNI version x.y.z"));
        assert!(
            validate(
                None,
                &smc_with(spec.clone(), json!({ANNO_MULTUS_CNI_VERSION: "0.4.0"})),
                &TargetNad::Absent
            )
            .is_ok()
        );
        let long = smc_with(spec.clone(), json!({ANNO_MULTUS_CR_NAME: "a".repeat(254)}));
        assert!(denied(None, &long).contains(
            "invalid custom net-attach-def resource name, err: [must be no more than 253 characters"
        ));
        let stars = smc_with(
            spec.clone(),
            json!({ANNO_MULTUS_CR_NAME: "custom-error-name************"}),
        );
        assert!(denied(None, &stars).contains("a lowercase RFC 1123 subdomain must consist of"));
        let taken = smc_with(spec.clone(), json!({ANNO_MULTUS_CR_NAME: "x"}));
        let owned = TargetNad::Present {
            smc_owners: vec!["a".into()],
        };
        assert!(validate(None, &taken, &owned).unwrap_err().message().ends_with(
            "the net-attach-def ns/x already exists and is managed by SpiderMultusConfig ns/a."
        ));
        // G56: a NAD without an SMC owner is taken over; our own NAD is fine.
        assert!(validate(None, &taken, &TargetNad::Present { smc_owners: vec![] }).is_ok());
        assert!(
            validate(
                None,
                &taken,
                &TargetNad::Present {
                    smc_owners: vec!["net".into()]
                }
            )
            .is_ok()
        );
        let renamed = smc_with(spec.clone(), json!({ANNO_MULTUS_CR_NAME: "y"}));
        assert!(validate(Some(&taken), &renamed, &TargetNad::Absent).unwrap_err().message().ends_with(
            "metadata.annotations: Invalid value: \"x\": it's unsupported to change customized Multus net-attach-def resource name from 'x' to 'y'"
        ));
        let plain = smc(spec);
        assert!(
            validate(Some(&plain), &taken, &TargetNad::Absent)
                .unwrap_err()
                .message()
                .ends_with(
                    "it's unsupported to changed Multus net-attach-def 'net' to customized name 'x'"
                )
        );
    }

    #[test]
    fn sriov_rates_and_crash_prone_cases_are_denied() {
        // G62, G63, deliberate difference #10
        let rates = smc(
            json!({"cniType": "sriov", "sriov": {"resourceName": "r", "minTxRateMbps": 100, "maxTxRateMbps": 10}}),
        );
        assert!(denied(None, &rates).ends_with(
            "spec.sriovConfig: Invalid value: 100: minTxRateMbps must be less than maxTxRateMbps"
        ));
        let mtu = smc(json!({"cniType": "sriov", "sriov": {"resourceName": "r", "mtu": -1}}));
        assert!(denied(None, &mtu).ends_with("MTU must be greater than or equal to 0"));
        let no_resource = smc(json!({"cniType": "sriov", "sriov": {}}));
        assert!(denied(None, &no_resource).ends_with(
            "spec.sriovConfig: Required value: no spec.sriovConfig[resourceName] specified"
        ));
        let trunk =
            smc(json!({"cniType": "ovs", "ovs": {"bridge": "br0", "trunk": [{"maxID": 10}]}}));
        assert!(validate(None, &trunk, &TargetNad::Absent).is_ok());
        let reversed = smc(
            json!({"cniType": "ovs", "ovs": {"bridge": "br0", "trunk": [{"minID": 20, "maxID": 10}]}}),
        );
        assert!(
            denied(None, &reversed).ends_with("minID is greater than maxID in trunk parameter")
        );
        // Found by the bad-input corpus: an empty bridge was admitted.
        let no_bridge = smc(json!({"cniType": "ovs", "ovs": {"bridge": ""}}));
        assert!(
            denied(None, &no_bridge).ends_with("spec.ovsConfig.bridge: Required value: the name of the OVS bridge to add pod ports to is required")
        );
    }

    #[test]
    fn chained_plugins_need_a_type_and_coordinator_rules_apply() {
        // G66, G67
        for (item, expected) in [
            ("{ \"invalid\" }", "error parsing configuration"),
            (
                "{\"sysctl\":{}}",
                "error parsing configuration: missing 'type'",
            ),
            (
                "[{\"type\":\"tuning\"}]",
                "cannot unmarshal array into Go value of type types.NetConf",
            ),
        ] {
            let candidate = smc(
                json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}, "chainCNIJsonData": [item]}),
            );
            let text = denied(None, &candidate);
            assert!(
                text.contains("spec.chainCNIJsonData: Forbidden: invalid ")
                    && text.contains(expected),
                "{text}"
            );
        }
        let coordinator = smc(
            json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}, "coordinator": {"podMACPrefix": "01:10"}}),
        );
        assert!(
            denied(None, &coordinator)
                .ends_with("not a unicast MAC: the lowest bit of the first byte must be 0")
        );
    }

    #[test]
    fn defaulting_copies_injection_annotations_to_labels() {
        let mut candidate = smc_with(
            json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
            json!({RDMA_RESOURCE_INJECT: "gpu"}),
        );
        mutate(&mut candidate);
        assert_eq!(
            candidate
                .labels()
                .get(RDMA_RESOURCE_INJECT)
                .map(String::as_str),
            Some("gpu")
        );
        assert_eq!(
            candidate
                .spec
                .macvlan
                .as_ref()
                .and_then(|config| config.vlan_id),
            Some(0)
        );
    }
}
