//! SpiderSubnet admission (§1.2): defaulting and validation as pure functions. The handler lists
//! subnets and IPPools from the API server (uncached, as upstream's `APIReader`).

use kube::ResourceExt;
use spiderpool_api::constants::LABEL_SUBNET_CIDR;
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_ipam::cidr::{Cidr, check_canonical};
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::pool_ips;
use spiderpool_ipam::range::{IpSet, ips_to_ranges};
use spiderpool_ipam::routes::{Route, validate_pool_routes};
use spiderpool_ipam::settings::ClusterSettings;

use super::common::{
    CidrNeighbours, EXCLUDE_IPS_FIELD, Family, IPS_FIELD, SUBNET_FIELD, add_finalizer,
    default_version_and_cidr_label, merge_if_several, update_is_judged, validate_contains_ip_range,
    validate_delete_of_allocated, validate_gateway, validate_ip_version,
};
use super::field::{BadValue, Denial, FieldError};

pub const KIND: &str = "SpiderSubnet";
pub const RESOURCE: &str = "spidersubnets";
const TERMINATING: &str = "cannot update a terminaing Subnet";
const MISSING_VERSION: &str = "is not generated correctly, 'spec.subnet' may be invalid";
const CONTROLLED_IPPOOLS_FIELD: &str = "status.controlledIPPools";

/// `mutateSubnet`; errors are for logging only (what was done is kept).
pub fn mutate(subnet: &mut SpiderSubnet) -> Result<(), String> {
    if subnet.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    add_finalizer(&mut subnet.metadata);
    let (version, cidr) =
        default_version_and_cidr_label(&mut subnet.spec.ip_version, &subnet.spec.subnet)?;
    subnet
        .labels_mut()
        .insert(LABEL_SUBNET_CIDR.to_string(), cidr);
    merge_if_several(version, &mut subnet.spec.ips)
        .map_err(|error| format!("failed to merge 'spec.ips': {error}"))?;
    merge_if_several(version, &mut subnet.spec.exclude_ips)
        .map_err(|error| format!("failed to merge 'spec.excludeIPs': {error}"))?;
    Ok(())
}

fn ips(subnet: &SpiderSubnet) -> &[String] {
    subnet.spec.ips.as_deref().unwrap_or_default()
}

fn exclude_ips(subnet: &SpiderSubnet) -> &[String] {
    subnet.spec.exclude_ips.as_deref().unwrap_or_default()
}

fn invalid(subnet: &SpiderSubnet, error: FieldError) -> Denial {
    Denial::invalid_one(KIND, &subnet.name_any(), error)
}

fn total_ips(subnet: &str, ips: &[String], exclude: &[String]) -> Result<IpSet, String> {
    pool_ips::total_ips(subnet, ips, exclude).map_err(|error| error.to_string())
}

/// Validation on CREATE.
pub fn validate_create(
    subnet: &SpiderSubnet,
    subnets: &[SpiderSubnet],
    pools: &[SpiderIPPool],
    settings: &ClusterSettings,
) -> Result<(), Denial> {
    let version = validate_ip_version(subnet.spec.ip_version, settings, MISSING_VERSION)
        .map_err(|error| invalid(subnet, error))?;
    validate_cidr(subnet, version, subnets, pools)?;
    validate_spec(subnet, version).map_err(|error| invalid(subnet, error))
}

/// Validation on UPDATE.
pub fn validate_update(
    old: &SpiderSubnet,
    new: &SpiderSubnet,
    settings: &ClusterSettings,
) -> Result<(), Denial> {
    // Upstream's spelling.
    if !update_is_judged(KIND, &new.metadata, family(old), family(new), TERMINATING)? {
        return Ok(());
    }
    let one = |error: FieldError| invalid(new, error);
    let version =
        validate_ip_version(new.spec.ip_version, settings, MISSING_VERSION).map_err(one)?;
    validate_spec(new, version).map_err(one)?;
    validate_ip_in_use(new, version).map_err(one)
}

/// Validation on DELETE (only with `enableValidatingResourcesDeletedWebhook`).
pub fn validate_delete(subnet: &SpiderSubnet, settings: &ClusterSettings) -> Result<(), Denial> {
    let allocated = subnet
        .status
        .as_ref()
        .and_then(|status| status.allocated_ip_count);
    validate_delete_of_allocated(settings, RESOURCE, subnet.name_any(), "Subnet", allocated)
}

fn family(subnet: &SpiderSubnet) -> Family<'_> {
    Family {
        ip_version: subnet.spec.ip_version,
        subnet: &subnet.spec.subnet,
    }
}

/// `validateSubnetCIDR` + `validateOrphanIPPool`.
fn validate_cidr(
    subnet: &SpiderSubnet,
    version: IpVersion,
    subnets: &[SpiderSubnet],
    pools: &[SpiderIPPool],
) -> Result<(), Denial> {
    let text = &subnet.spec.subnet;
    let subnet_invalid = |detail: String| {
        invalid(
            subnet,
            FieldError::invalid(SUBNET_FIELD, BadValue::str(text), detail),
        )
    };
    let cidr = Cidr::parse(version, text).map_err(|error| subnet_invalid(error.to_string()))?;
    check_canonical(text).map_err(|error| subnet_invalid(error.to_string()))?;
    let family = Some(i64::from(version.number()));
    let neighbours = CidrNeighbours {
        kind: KIND,
        word: "Subnet",
        name: &subnet.name_any(),
        subnet: text,
        cidr: &cidr,
        identical_ok: false,
    };
    neighbours.check(
        version,
        subnets
            .iter()
            .filter(|other| other.spec.ip_version == family)
            .map(|other| (other.name_any(), other.spec.subnet.as_str())),
    )?;
    for pool in pools.iter().filter(|pool| pool.spec.ip_version == family) {
        if pool.spec.subnet != *text {
            let pool_cidr = Cidr::parse(version, &pool.spec.subnet).map_err(|error| {
                invalid(
                    subnet,
                    FieldError::internal(
                        SUBNET_FIELD,
                        format!(
                            "failed to compare whether 'spec.subnet' overlaps with SpiderIPPool '{}', error: {error}",
                            pool.name_any()
                        ),
                    ),
                )
            })?;
            if cidr.overlaps(&pool_cidr) {
                return Err(subnet_invalid(format!(
                    "overlap with SpiderIPPool '{}' resource 'spec.subnet' {}",
                    pool.name_any(),
                    pool.spec.subnet
                )));
            }
        } else {
            let assemble_error = |what: &str, name: String, error: String| {
                invalid(
                    subnet,
                    FieldError::internal(
                        IPS_FIELD,
                        format!(
                            "failed to assemble the total IP addresses of the {what} '{name}', error: {error}"
                        ),
                    ),
                )
            };
            let pool_ips = total_ips(
                &pool.spec.subnet,
                pool.spec.ips.as_deref().unwrap_or_default(),
                pool.spec.exclude_ips.as_deref().unwrap_or_default(),
            )
            .map_err(|error| assemble_error("IPPool", pool.name_any(), error))?;
            let subnet_ips = total_ips(text, ips(subnet), exclude_ips(subnet))
                .map_err(|error| assemble_error("Subnet", subnet.name_any(), error))?;
            if !pool_ips.is_subset_of(&subnet_ips) {
                return Err(invalid(
                    subnet,
                    FieldError::invalid(
                        IPS_FIELD,
                        BadValue::string_slice(ips(subnet)),
                        format!(
                            "SpiderIPPool '{}' owns some IP addresses that SpiderSubnet '{}' can't control",
                            pool.name_any(),
                            subnet.name_any()
                        ),
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `validateSubnetSpec`: every range inside the subnet, gateway, routes.
fn validate_spec(subnet: &SpiderSubnet, version: IpVersion) -> Result<(), FieldError> {
    let text = &subnet.spec.subnet;
    for (index, range) in ips(subnet).iter().enumerate() {
        validate_contains_ip_range(&format!("{IPS_FIELD}[{index}]"), version, text, range)?;
    }
    for (index, range) in exclude_ips(subnet).iter().enumerate() {
        validate_contains_ip_range(
            &format!("{EXCLUDE_IPS_FIELD}[{index}]"),
            version,
            text,
            range,
        )?;
    }
    validate_gateway(
        version,
        text,
        subnet.spec.gateway.as_deref(),
        ips(subnet),
        exclude_ips(subnet),
    )?;
    let routes: Vec<Route> = subnet
        .spec
        .routes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|route| Route::new(&route.dst, &route.gw))
        .collect();
    validate_pool_routes(version, text, &routes).map_err(|error| {
        FieldError::invalid(
            format!("spec.routes[{}].{}", error.index, error.field),
            BadValue::str(&error.value),
            error.detail,
        )
    })
}

/// `validateSubnetIPInUse`: the addresses recorded for owned pools must stay in the subnet.
fn validate_ip_in_use(subnet: &SpiderSubnet, version: IpVersion) -> Result<(), FieldError> {
    let total =
        total_ips(&subnet.spec.subnet, ips(subnet), exclude_ips(subnet)).map_err(|error| {
            FieldError::internal(
                IPS_FIELD,
                format!(
                    "failed to assemble the total IP addresses of the Subnet {}: {error}",
                    subnet.name_any()
                ),
            )
        })?;
    let Some(status) = subnet.status.as_ref() else {
        return Ok(());
    };
    let controlled = status.controlled_pools().map_err(|error| {
        FieldError::internal(
            CONTROLLED_IPPOOLS_FIELD,
            format!(
                "failed to unmarshal the controlled IPPools of Subnet {}: {error}",
                subnet.name_any()
            ),
        )
    })?;
    for (pool, record) in &controlled {
        let held = IpSet::from_ranges(version, &record.ips).map_err(|error| {
            FieldError::internal(
                CONTROLLED_IPPOOLS_FIELD,
                format!("failed to parse the pre-allocation of the IPPool {pool}: {error}"),
            )
        })?;
        let outside = held.subtract(&total);
        if !outside.is_empty() {
            let addresses: Vec<_> = outside.addresses().take(65_536).collect();
            let ranges =
                ips_to_ranges(version, &addresses).unwrap_or_else(|_| outside.to_range_strings());
            return Err(FieldError::forbidden(
                IPS_FIELD,
                format!(
                    "remove some IP ranges [{}] that is being used by IPPool {pool}, total IP addresses of an Subnet are jointly determined by 'spec.ips' and 'spec.excludeIPs'",
                    ranges.join(" ")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use spiderpool_api::constants::API_VERSION;

    fn subnet(name: &str, cidr: &str, ips: &[&str]) -> SpiderSubnet {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name},
            "spec": {"ipVersion": 4, "subnet": cidr, "ips": ips}
        }))
        .unwrap()
    }

    fn pool(name: &str, cidr: &str, ips: &[&str]) -> SpiderIPPool {
        serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": "SpiderIPPool", "metadata": {"name": name},
            "spec": {"ipVersion": 4, "subnet": cidr, "ips": ips}
        }))
        .unwrap()
    }

    fn settings() -> ClusterSettings {
        ClusterSettings::default()
    }

    #[test]
    fn defaulting_sets_version_label_finalizer_and_merges() {
        let mut candidate: SpiderSubnet = serde_json::from_value(json!({
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "s"},
            "spec": {"subnet": "fd00::/120", "ips": ["fd00::2", "fd00::1"]}
        }))
        .unwrap();
        mutate(&mut candidate).unwrap();
        assert_eq!(candidate.spec.ip_version, Some(6));
        assert_eq!(
            candidate.spec.ips,
            Some(vec!["fd00::1-fd00::2".to_string()])
        );
        assert_eq!(
            candidate
                .labels()
                .get(LABEL_SUBNET_CIDR)
                .map(String::as_str),
            Some("fd00---120")
        );
        assert!(crate::webhook::common::has_finalizer(&candidate.metadata));
    }

    #[test]
    fn subnets_may_not_overlap_pools_or_each_other() {
        // G41
        let existing_pool = pool("pool", "172.18.40.0/25", &["172.18.40.40"]);
        let big = subnet("big", "172.18.40.0/24", &[]);
        assert_eq!(
            validate_create(&big, &[], std::slice::from_ref(&existing_pool), &settings())
                .unwrap_err()
                .message(),
            "SpiderSubnet.spiderpool.spidernet.io \"big\" is invalid: spec.subnet: Invalid value: \"172.18.40.0/24\": overlap with SpiderIPPool 'pool' resource 'spec.subnet' 172.18.40.0/25"
        );
        let owner = pool("owner", "172.18.40.0/25", &["172.18.40.40-172.18.40.45"]);
        let narrow = subnet("narrow", "172.18.40.0/25", &["172.18.40.41-172.18.40.45"]);
        assert_eq!(
            validate_create(&narrow, &[], &[owner], &settings())
                .unwrap_err()
                .message(),
            "SpiderSubnet.spiderpool.spidernet.io \"narrow\" is invalid: spec.ips: Invalid value: []string{\"172.18.40.41-172.18.40.45\"}: SpiderIPPool 'owner' owns some IP addresses that SpiderSubnet 'narrow' can't control"
        );
        let twin = subnet("twin", "172.18.40.0/25", &[]);
        assert!(
            validate_create(&twin, std::slice::from_ref(&narrow), &[], &settings())
                .unwrap_err()
                .message()
                .ends_with("overlap with Subnet narrow which 'spec.subnet' is 172.18.40.0/25")
        );
        assert_eq!(
            validate_create(&narrow, std::slice::from_ref(&narrow), &[], &settings())
                .unwrap_err()
                .code(),
            409
        );
    }

    #[test]
    fn ranges_outside_the_subnet_are_rejected() {
        let candidate = subnet("s", "10.0.0.0/24", &["10.0.1.1"]);
        assert!(validate_create(&candidate, &[], &[], &settings()).unwrap_err().message().ends_with(
            "spec.ips[0]: Invalid value: \"10.0.1.1\": not pertains to the 'spec.subnet' 10.0.0.0/24 of IPPool"
        ));
    }

    #[test]
    fn removing_addresses_held_by_a_pool_is_forbidden() {
        // G42
        let mut old = subnet("s", "172.18.40.0/24", &["172.18.40.1-172.18.40.10"]);
        old.status = Some(
            serde_json::from_value(
                json!({"controlledIPPools": "{\"pool\":{\"ips\":[\"172.18.40.10\"]}}"}),
            )
            .unwrap(),
        );
        let mut new = old.clone();
        new.spec.ips = Some(vec!["172.18.40.1-172.18.40.9".into()]);
        assert_eq!(
            validate_update(&old, &new, &settings())
                .unwrap_err()
                .message(),
            "SpiderSubnet.spiderpool.spidernet.io \"s\" is invalid: spec.ips: Forbidden: remove some IP ranges [172.18.40.10] that is being used by IPPool pool, total IP addresses of an Subnet are jointly determined by 'spec.ips' and 'spec.excludeIPs'"
        );
        new.status = Some(
            serde_json::from_value(
                json!({"controlledIPPools": "{\"pool\":{\"ips\":[\"172.18.40.1\"]}}"}),
            )
            .unwrap(),
        );
        assert!(validate_update(&old, &new, &settings()).is_ok());
    }

    #[test]
    fn delete_with_allocations_is_forbidden_when_enabled() {
        let mut candidate = subnet("s", "10.9.0.0/24", &[]);
        candidate.status = Some(serde_json::from_value(json!({"allocatedIPCount": 2})).unwrap());
        let enabled = ClusterSettings {
            enable_validating_resources_deleted_webhook: true,
            ..settings()
        };
        assert_eq!(
            validate_delete(&candidate, &enabled).unwrap_err().message(),
            "spidersubnets.spiderpool.spidernet.io \"s\" is forbidden: cannot delete an Subnet with allocated IPs(2)"
        );
        assert!(validate_delete(&candidate, &settings()).is_ok());
    }
}
