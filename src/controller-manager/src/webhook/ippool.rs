//! SpiderIPPool admission (§1.1.4, §1.1.5): defaulting and validation as pure functions.
//!
//! The handler gathers what they need: the subnets for owner lookup (from the cache, as
//! upstream's cached client does), every IPPool (listed from the API server, uncached like
//! upstream's `APIReader`, so two pools created in a burst still see each other) and the owner
//! subnet (a direct GET).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use spiderpool_api::constants::{
    API_VERSION, AUTO_POOL_APP_API_GROUP, AUTO_POOL_APP_API_VERSION, AUTO_POOL_APP_KIND,
    AUTO_POOL_APP_NAME, AUTO_POOL_APP_NAMESPACE, LABEL_IPPOOL_CIDR, LABEL_OWNER_APPLICATION_NAME,
    LABEL_OWNER_SPIDER_SUBNET, LABEL_SUBNET_CIDR,
};
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_ipam::cidr::{Cidr, check_canonical, cidr_label_value};
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::pool_ips::{self, PoolIps, ReversedRanges};
use spiderpool_ipam::range::{IpSet, ips_to_ranges};
use spiderpool_ipam::routes::{Route, validate_pool_routes};
use spiderpool_ipam::settings::ClusterSettings;

use super::common::{
    CidrNeighbours, EXCLUDE_IPS_FIELD, Family, IPS_FIELD, SUBNET_FIELD, add_finalizer,
    controller_of, default_version_and_cidr_label, go_label_selector, merge_if_several,
    update_is_judged, validate_contains_ip_range, validate_delete_of_allocated, validate_gateway,
    validate_ip_version, validate_label_selector,
};
use super::field::{BadValue, Denial, FieldError};

pub const KIND: &str = "SpiderIPPool";
pub const RESOURCE: &str = "spiderippools";
const POD_AFFINITY_FIELD: &str = "spec.podAffinity";
const TERMINATING: &str = "cannot update a terminating IPPool";
const MISSING_VERSION: &str = "is not generated correctly, 'spec.subnet' may be invalid";

/// The owner subnet of a pool as the handler found it.
#[derive(Debug, Clone)]
pub enum OwnerSubnet {
    /// The pool has no controller owner (or nothing needed it).
    NotNeeded,
    Found(Box<SpiderSubnet>),
    /// The GET failed (not found or API error): upstream's internal error text.
    Missing {
        name: String,
        error: String,
    },
}

/// `mutateIPPool`. Errors are returned for logging only: like upstream, what was mutated up to
/// the failing step is kept and the object is admitted to validation.
pub fn mutate(
    pool: &mut SpiderIPPool,
    settings: &ClusterSettings,
    subnets: &[SpiderSubnet],
) -> Result<(), String> {
    if pool.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    add_finalizer(&mut pool.metadata);
    let (version, cidr) =
        default_version_and_cidr_label(&mut pool.spec.ip_version, &pool.spec.subnet)?;
    pool.labels_mut()
        .insert(LABEL_IPPOOL_CIDR.to_string(), cidr.clone());
    if settings.enable_spider_subnet
        && let Some(subnet) = set_controller_subnet(pool, &cidr, subnets)?
    {
        inherit_subnet_properties(&subnet, pool);
    }
    merge_if_several(version, &mut pool.spec.ips)
        .map_err(|error| format!("failed to merge 'spec.ips': {error}"))?;
    merge_if_several(version, &mut pool.spec.exclude_ips)
        .map_err(|error| format!("failed to merge 'spec.excludeIPs': {error}"))?;
    Ok(())
}

/// `setControllerSubnet`: the first subnet labelled with the pool's CIDR becomes its controller.
fn set_controller_subnet(
    pool: &mut SpiderIPPool,
    cidr: &str,
    subnets: &[SpiderSubnet],
) -> Result<Option<SpiderSubnet>, String> {
    let owner = controller_of(&pool.metadata).map(|owner| owner.name.clone());
    if let (Some(label), Some(owner)) = (pool.labels().get(LABEL_OWNER_SPIDER_SUBNET), &owner)
        && label == owner
    {
        return Ok(None);
    }
    let Some(subnet) = subnets
        .iter()
        .find(|subnet| subnet.labels().get(LABEL_SUBNET_CIDR).map(String::as_str) == Some(cidr))
    else {
        return Ok(None);
    };
    let subnet_uid = subnet.metadata.uid.clone().unwrap_or_default();
    let references = pool.metadata.owner_references.get_or_insert_with(Vec::new);
    if let Some(existing) = references
        .iter()
        .find(|reference| reference.controller == Some(true))
        && existing.uid != subnet_uid
    {
        return Err(format!(
            "failed to set the reference of the controller Subnet: failed to set owner reference: Object /{} is already owned by another {} controller {}",
            pool.metadata.name.as_deref().unwrap_or_default(),
            existing.kind,
            existing.name
        ));
    }
    let reference = OwnerReference {
        api_version: API_VERSION.to_string(),
        kind: "SpiderSubnet".to_string(),
        name: subnet.name_any(),
        uid: subnet_uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    match references.iter_mut().find(|existing| {
        existing.kind == reference.kind
            && existing.name == reference.name
            && existing.api_version.split('/').next() == reference.api_version.split('/').next()
    }) {
        Some(existing) => *existing = reference,
        None => references.push(reference),
    }
    pool.labels_mut()
        .insert(LABEL_OWNER_SPIDER_SUBNET.to_string(), subnet.name_any());
    Ok(Some(subnet.clone()))
}

/// `InheritSubnetProperties`: the gateway when the pool has none, the routes when the pool's
/// routes are absent (an explicit empty list is kept).
pub fn inherit_subnet_properties(subnet: &SpiderSubnet, pool: &mut SpiderIPPool) {
    if subnet.spec.gateway.is_some() && pool.spec.gateway.is_none() {
        pool.spec.gateway = subnet.spec.gateway.clone();
    }
    if subnet
        .spec
        .routes
        .as_ref()
        .is_some_and(|routes| !routes.is_empty())
        && pool.spec.routes.is_none()
    {
        pool.spec.routes = subnet.spec.routes.clone();
    }
}

fn invalid(pool: &SpiderIPPool, errors: Vec<FieldError>) -> Denial {
    Denial::invalid(KIND, &pool.name_any(), errors)
}

fn ips(pool: &SpiderIPPool) -> &[String] {
    pool.spec.ips.as_deref().unwrap_or_default()
}

fn exclude_ips(pool: &SpiderIPPool) -> &[String] {
    pool.spec.exclude_ips.as_deref().unwrap_or_default()
}

fn routes(pool: &SpiderIPPool) -> Vec<Route> {
    pool.spec
        .routes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|route| Route::new(&route.dst, &route.gw))
        .collect()
}

fn is_auto_created(pool: &SpiderIPPool) -> bool {
    pool.labels().contains_key(LABEL_OWNER_APPLICATION_NAME)
}

/// Validation on CREATE (`validateCreateIPPoolWhileEnableSpiderSubnet`). `pools` are all
/// existing IPPools.
pub fn validate_create(
    pool: &SpiderIPPool,
    pools: &[SpiderIPPool],
    owner: &OwnerSubnet,
    settings: &ClusterSettings,
) -> Result<(), Denial> {
    let version = validate_ip_version(pool.spec.ip_version, settings, MISSING_VERSION)
        .map_err(|error| invalid(pool, vec![error]))?;
    validate_cidr(pool, version, pools)?;
    let mut errors = Vec::new();
    if let Err(error) = validate_spec(pool, version, pools) {
        errors.push(error);
    }
    errors.extend(validate_affinities(pool));
    if !errors.is_empty() {
        return Err(invalid(pool, errors));
    }
    if settings.enable_spider_subnet {
        validate_within_owner_subnet(pool, version, owner)
            .map_err(|error| invalid(pool, vec![error]))?;
    }
    Ok(())
}

/// Validation on UPDATE.
pub fn validate_update(
    old: &SpiderIPPool,
    new: &SpiderIPPool,
    pools: &[SpiderIPPool],
    owner: &OwnerSubnet,
    settings: &ClusterSettings,
) -> Result<(), Denial> {
    if !update_is_judged(KIND, &new.metadata, family(old), family(new), TERMINATING)? {
        return Ok(());
    }
    let one = |error: FieldError| invalid(new, vec![error]);
    let version =
        validate_ip_version(new.spec.ip_version, settings, MISSING_VERSION).map_err(one)?;
    validate_spec(new, version, pools).map_err(one)?;
    let affinity = validate_affinities(new);
    if !affinity.is_empty() {
        return Err(invalid(new, affinity));
    }
    validate_ip_in_use(new, version).map_err(one)?;
    if settings.enable_spider_subnet {
        validate_within_owner_subnet(new, version, owner).map_err(one)?;
    }
    Ok(())
}

/// Validation on DELETE (only with `enableValidatingResourcesDeletedWebhook`).
pub fn validate_delete(pool: &SpiderIPPool, settings: &ClusterSettings) -> Result<(), Denial> {
    let allocated = pool
        .status
        .as_ref()
        .and_then(|status| status.allocated_ip_count);
    validate_delete_of_allocated(settings, RESOURCE, pool.name_any(), "IPPool", allocated)
}

fn family(pool: &SpiderIPPool) -> Family<'_> {
    Family {
        ip_version: pool.spec.ip_version,
        subnet: &pool.spec.subnet,
    }
}

/// `validateIPPoolCIDR`: a canonical CIDR of the family, a unique name, no nesting with another
/// pool of the family (an identical subnet string is fine).
fn validate_cidr(
    pool: &SpiderIPPool,
    version: IpVersion,
    pools: &[SpiderIPPool],
) -> Result<(), Denial> {
    let subnet = &pool.spec.subnet;
    let subnet_invalid = |detail: String| {
        invalid(
            pool,
            vec![FieldError::invalid(
                SUBNET_FIELD,
                BadValue::str(subnet),
                detail,
            )],
        )
    };
    let cidr = Cidr::parse(version, subnet).map_err(|error| subnet_invalid(error.to_string()))?;
    check_canonical(subnet).map_err(|error| subnet_invalid(error.to_string()))?;
    let family = Some(i64::from(version.number()));
    let neighbours = CidrNeighbours {
        kind: KIND,
        word: "IPPool",
        name: &pool.name_any(),
        subnet,
        cidr: &cidr,
        identical_ok: true,
    };
    neighbours.check(
        version,
        pools
            .iter()
            .filter(|other| other.spec.ip_version == family)
            .map(|other| (other.name_any(), other.spec.subnet.as_str())),
    )
}

/// `validateIPPoolSpec`: available IPs (3a), gateway (3b), routes (3c).
fn validate_spec(
    pool: &SpiderIPPool,
    version: IpVersion,
    pools: &[SpiderIPPool],
) -> Result<(), FieldError> {
    validate_available_ips(pool, version, pools)?;
    validate_gateway(
        version,
        &pool.spec.subnet,
        pool.spec.gateway.as_deref(),
        ips(pool),
        exclude_ips(pool),
    )?;
    validate_pool_routes(version, &pool.spec.subnet, &routes(pool)).map_err(|error| {
        FieldError::invalid(
            format!("spec.routes[{}].{}", error.index, error.field),
            BadValue::str(&error.value),
            error.detail,
        )
    })
}

/// `validateIPPoolAvailableIPs`.
fn validate_available_ips(
    pool: &SpiderIPPool,
    version: IpVersion,
    pools: &[SpiderIPPool],
) -> Result<(), FieldError> {
    // Each item first, so a bad one is named where it is (`spec.ips[2]`), not under the subnet.
    let subnet = &pool.spec.subnet;
    for (index, range) in ips(pool).iter().enumerate() {
        validate_contains_ip_range(&format!("{IPS_FIELD}[{index}]"), version, subnet, range)?;
    }
    for (index, range) in exclude_ips(pool).iter().enumerate() {
        let field = format!("{EXCLUDE_IPS_FIELD}[{index}]");
        validate_contains_ip_range(&field, version, subnet, range)?;
    }
    let own = PoolIps::new_with(subnet, ips(pool), exclude_ips(pool), ReversedRanges::Reject)
        .map_err(|error| {
            FieldError::invalid(
                IPS_FIELD,
                BadValue::string_slice(ips(pool)),
                error.to_string(),
            )
        })?;
    let cidr = cidr_label_value(version, &pool.spec.subnet).map_err(|error| {
        FieldError::internal(
            IPS_FIELD,
            format!(
                "failed to parse CIDR {} as a valid label value: {error}",
                pool.spec.subnet
            ),
        )
    })?;
    for other in pools {
        if other.name_any() == pool.name_any()
            || other.labels().get(LABEL_IPPOOL_CIDR) != Some(&cidr)
        {
            continue;
        }
        let existing =
            PoolIps::new(&other.spec.subnet, ips(other), exclude_ips(other)).map_err(|error| {
                FieldError::invalid(
                    SUBNET_FIELD,
                    BadValue::str(&other.spec.subnet),
                    error.to_string(),
                )
            })?;
        let overlaps = own.overlapping_raw_ranges(existing.ranges());
        if !overlaps.is_empty() {
            return Err(FieldError::forbidden(
                IPS_FIELD,
                format!(
                    "overlap with IPPool {} in IP ranges [{}], total IP addresses of an IPPool are jointly determined by 'spec.ips' and 'spec.excludeIPs'",
                    other.name_any(),
                    overlaps.join(" ")
                ),
            ));
        }
    }
    Ok(())
}

/// The pool's three selectors. Upstream checks `podAffinity` only; a malformed namespace or
/// node selector would make the pool silently match nothing, so they get the same label-selector
/// rules.
fn validate_affinities(pool: &SpiderIPPool) -> Vec<FieldError> {
    let mut errors = validate_pod_affinity(pool);
    for (selector, field) in [
        (&pool.spec.namespace_affinity, "spec.namespaceAffinity"),
        (&pool.spec.node_affinity, "spec.nodeAffinity"),
    ] {
        if let Some(selector) = selector {
            errors.extend(validate_label_selector(selector, field));
        }
    }
    errors
}

/// `validateIPPoolPodAffinity`.
fn validate_pod_affinity(pool: &SpiderIPPool) -> Vec<FieldError> {
    let Some(affinity) = pool.spec.pod_affinity.as_ref() else {
        return Vec::new();
    };
    let bad_value = || BadValue::Raw(go_label_selector(affinity));
    let mut errors = Vec::new();
    if is_auto_created(pool) {
        const ALLOWED: [&str; 5] = [
            AUTO_POOL_APP_API_GROUP,
            AUTO_POOL_APP_API_VERSION,
            AUTO_POOL_APP_KIND,
            AUTO_POOL_APP_NAMESPACE,
            AUTO_POOL_APP_NAME,
        ];
        for key in affinity
            .match_labels
            .as_ref()
            .into_iter()
            .flat_map(BTreeMap::keys)
        {
            if !ALLOWED.contains(&key.as_str()) {
                errors.push(FieldError::invalid(
                    POD_AFFINITY_FIELD,
                    bad_value(),
                    "it's invalid to add additional podAffinity matchLabels for auto-created SpiderIPPool",
                ));
            }
        }
        if affinity
            .match_expressions
            .as_ref()
            .is_some_and(|expressions| !expressions.is_empty())
        {
            errors.push(FieldError::invalid(
                POD_AFFINITY_FIELD,
                bad_value(),
                "it's invalid to add additional podAffinity matchExpressions for auto-created SpiderIPPool",
            ));
        }
        return errors;
    }
    errors.extend(validate_label_selector(affinity, POD_AFFINITY_FIELD));
    let size = affinity.match_labels.as_ref().map_or(0, BTreeMap::len)
        + affinity.match_expressions.as_ref().map_or(0, Vec::len);
    if size == 0 {
        errors.push(FieldError::invalid(
            POD_AFFINITY_FIELD,
            bad_value(),
            "empty podAffinity is invalid for SpiderIPPool",
        ));
    }
    errors
}

/// The effective addresses (`AssembleTotalIPs`), of the pool's family.
fn total_ips(
    version: IpVersion,
    subnet: &str,
    ips: &[String],
    exclude: &[String],
) -> Result<IpSet, String> {
    let total = pool_ips::total_ips(subnet, ips, exclude).map_err(|error| error.to_string())?;
    if total.version() != version {
        return Err(format!("subnet {subnet} is not an IPv{version} CIDR"));
    }
    Ok(total)
}

/// `validateIPPoolIPInUse`: no allocated address may leave the pool.
fn validate_ip_in_use(pool: &SpiderIPPool, version: IpVersion) -> Result<(), FieldError> {
    let allocations = pool
        .status
        .as_ref()
        .map(|status| status.allocations())
        .transpose()
        .map_err(|error| {
            FieldError::internal(
                IPS_FIELD,
                format!(
                    "failed to unmarshal the allocated IP records of IPPool {}: {error}",
                    pool.name_any()
                ),
            )
        })?
        .unwrap_or_default();
    let total =
        total_ips(version, &pool.spec.subnet, ips(pool), exclude_ips(pool)).map_err(|error| {
            FieldError::internal(
                IPS_FIELD,
                format!(
                    "failed to assemble the total IP addresses of the IPPool {}: {error}",
                    pool.name_any()
                ),
            )
        })?;
    for (address, allocation) in &allocations {
        let held = address
            .parse()
            .ok()
            .is_some_and(|address| total.contains(&address));
        if !held {
            return Err(FieldError::forbidden(
                IPS_FIELD,
                format!(
                    "remove an IP address {address} that is being used by Pod {}, total IP addresses of an IPPool are jointly determined by 'spec.ips' and 'spec.excludeIPs'",
                    allocation.namespaced_name
                ),
            ));
        }
    }
    Ok(())
}

/// `validateSubnetTotalIPsContainsIPPoolTotalIPs` (+ the auto-pool rule).
fn validate_within_owner_subnet(
    pool: &SpiderIPPool,
    version: IpVersion,
    owner: &OwnerSubnet,
) -> Result<(), FieldError> {
    if controller_of(&pool.metadata).is_none() {
        return Ok(());
    }
    let pool_ips =
        total_ips(version, &pool.spec.subnet, ips(pool), exclude_ips(pool)).map_err(|error| {
            FieldError::internal(
                IPS_FIELD,
                format!(
                    "failed to assemble the total IP addresses of the IPPool {}: {error}",
                    pool.name_any()
                ),
            )
        })?;
    if pool_ips.is_empty() {
        return Ok(());
    }
    let subnet = match owner {
        OwnerSubnet::NotNeeded => return Ok(()),
        OwnerSubnet::Missing { name, error } => {
            return Err(FieldError::internal(
                SUBNET_FIELD,
                format!("failed to get controller Subnet {name}: {error}"),
            ));
        }
        OwnerSubnet::Found(subnet) => subnet,
    };
    let subnet_version = subnet
        .spec
        .ip_version
        .and_then(IpVersion::from_number)
        .unwrap_or(version);
    let subnet_ips = total_ips(
        subnet_version,
        &subnet.spec.subnet,
        subnet.spec.ips.as_deref().unwrap_or_default(),
        subnet.spec.exclude_ips.as_deref().unwrap_or_default(),
    )
    .map_err(|error| {
        FieldError::internal(
            IPS_FIELD,
            format!(
                "failed to assemble the total IP addresses of the Subnet {}: {error}",
                subnet.name_any()
            ),
        )
    })?;
    let outside = pool_ips.subtract(&subnet_ips);
    if !outside.is_empty() {
        let addresses: Vec<_> = outside.addresses().take(65_536).collect();
        let ranges =
            ips_to_ranges(version, &addresses).unwrap_or_else(|_| outside.to_range_strings());
        return Err(FieldError::forbidden(
            IPS_FIELD,
            format!(
                "add some IP ranges [{}] that are not contained in controller Subnet {}, total IP addresses of an IPPool are jointly determined by 'spec.ips' and 'spec.excludeIPs'",
                ranges.join(" "),
                subnet.name_any()
            ),
        ));
    }
    if is_auto_created(pool) {
        let controlled = subnet
            .status
            .as_ref()
            .map(|status| status.controlled_pools())
            .transpose()
            .map_err(|error| {
                FieldError::internal(
                    SUBNET_FIELD,
                    format!(
                        "failed unsharmal SpiderSubnet {} Status.ControlledIPPools: {error}",
                        subnet.name_any()
                    ),
                )
            })?
            .unwrap_or_default();
        let recorded = match controlled.get(&pool.name_any()) {
            Some(record) => IpSet::from_ranges(subnet_version, &record.ips).map_err(|error| {
                FieldError::internal(
                    SUBNET_FIELD,
                    format!(
                        "failed to parse SpiderSubnet {} controlledIPPool {} IPs: {error} ",
                        subnet.name_any(),
                        pool.name_any()
                    ),
                )
            })?,
            None => IpSet::new(version),
        };
        if recorded != pool_ips {
            return Err(FieldError::forbidden(
                IPS_FIELD,
                "it's illegal to update AutoPool.Spec.IPs that are different from corresponding SpiderSubnet.Status.ControlledIPPools",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(value: serde_json::Value) -> SpiderIPPool {
        serde_json::from_value(value).unwrap()
    }

    fn v4_pool(name: &str, subnet: &str, ips: &[&str]) -> SpiderIPPool {
        pool(json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "labels": {LABEL_IPPOOL_CIDR: spiderpool_api::constants::cidr_label_value(subnet)}},
            "spec": {"ipVersion": 4, "subnet": subnet, "ips": ips}
        }))
    }

    fn subnet(value: serde_json::Value) -> SpiderSubnet {
        serde_json::from_value(value).unwrap()
    }

    fn settings() -> ClusterSettings {
        ClusterSettings::default()
    }

    fn message(result: Result<(), Denial>) -> String {
        result.unwrap_err().message()
    }

    #[test]
    fn defaulting_merges_ranges_derives_version_and_labels() {
        // G29
        let mut candidate = pool(json!({
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "p"},
            "spec": {"subnet": "172.18.40.0/24", "ips": ["172.18.40.10", "172.18.40.1-172.18.40.2", "172.18.40.2-172.18.40.3"]}
        }));
        mutate(&mut candidate, &settings(), &[]).unwrap();
        assert_eq!(candidate.spec.ip_version, Some(4));
        assert_eq!(
            candidate.spec.ips,
            Some(vec![
                "172.18.40.1-172.18.40.3".to_string(),
                "172.18.40.10".into()
            ])
        );
        assert_eq!(
            candidate.metadata.finalizers,
            Some(vec!["spiderpool.spidernet.io".into()])
        );
        assert_eq!(
            candidate
                .labels()
                .get(LABEL_IPPOOL_CIDR)
                .map(String::as_str),
            Some("172-18-40-0-24")
        );
        // A single item is stored verbatim.
        let mut single = v4_pool("s", "10.0.0.0/24", &["10.0.0.9"]);
        mutate(&mut single, &settings(), &[]).unwrap();
        assert_eq!(single.spec.ips, Some(vec!["10.0.0.9".to_string()]));
    }

    #[test]
    fn defaulting_adopts_the_subnet_of_the_same_cidr_and_inherits_gateway_and_routes() {
        // G30
        let owner = subnet(json!({
            "apiVersion": API_VERSION, "kind": "SpiderSubnet",
            "metadata": {"name": "subnet-n", "uid": "u-1", "labels": {LABEL_SUBNET_CIDR: "172-18-50-0-24"}},
            "spec": {"subnet": "172.18.50.0/24", "gateway": "172.18.50.0", "routes": [{"dst": "0.0.0.0/0", "gw": "172.18.50.0"}]}
        }));
        let mut candidate = pool(json!({
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "p"},
            "spec": {"subnet": "172.18.50.0/24"}
        }));
        mutate(&mut candidate, &settings(), std::slice::from_ref(&owner)).unwrap();
        let reference = controller_of(&candidate.metadata).unwrap();
        assert_eq!(
            (reference.name.as_str(), reference.uid.as_str()),
            ("subnet-n", "u-1")
        );
        assert_eq!(reference.block_owner_deletion, Some(true));
        assert_eq!(
            candidate
                .labels()
                .get(LABEL_OWNER_SPIDER_SUBNET)
                .map(String::as_str),
            Some("subnet-n")
        );
        assert_eq!(candidate.spec.gateway.as_deref(), Some("172.18.50.0"));
        assert_eq!(candidate.spec.routes.as_ref().map(Vec::len), Some(1));
        // Explicit empty routes are kept; the feature switch turns adoption off.
        let mut explicit = pool(json!({
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "p"},
            "spec": {"subnet": "172.18.50.0/24", "routes": []}
        }));
        mutate(&mut explicit, &settings(), std::slice::from_ref(&owner)).unwrap();
        assert_eq!(explicit.spec.routes, Some(vec![]));
        let mut off = pool(json!({
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "p"},
            "spec": {"subnet": "172.18.50.0/24"}
        }));
        let disabled = ClusterSettings {
            enable_spider_subnet: false,
            ..settings()
        };
        mutate(&mut off, &disabled, &[owner]).unwrap();
        assert!(off.metadata.owner_references.is_none());
    }

    #[test]
    fn gateway_inside_ips_is_rejected_unless_excluded() {
        // G31
        let mut candidate = v4_pool(
            "p",
            "172.18.40.0/24",
            &["172.18.40.1-172.18.40.2", "172.18.40.10"],
        );
        candidate.spec.gateway = Some("172.18.40.1".into());
        let text = message(validate_create(
            &candidate,
            &[],
            &OwnerSubnet::NotNeeded,
            &settings(),
        ));
        assert_eq!(
            text,
            "SpiderIPPool.spiderpool.spidernet.io \"p\" is invalid: spec.ips[0]: Invalid value: \"172.18.40.1-172.18.40.2\": conflicts with 'spec.gateway' 172.18.40.1, add the gateway IP address to 'spec.excludeIPs' or remove it from 'spec.ips'"
        );
        candidate.spec.exclude_ips = Some(vec!["172.18.40.1".into()]);
        assert!(validate_create(&candidate, &[], &OwnerSubnet::NotNeeded, &settings()).is_ok());
    }

    #[test]
    fn routes_are_checked() {
        // G32
        let mut candidate = v4_pool("p", "172.18.40.0/24", &[]);
        candidate.spec.routes = Some(vec![spiderpool_api::Route {
            dst: "0.0.0.0/0".into(),
            gw: "172.18.40.1".into(),
        }]);
        assert!(message(validate_create(&candidate, &[], &OwnerSubnet::NotNeeded, &settings()))
            .ends_with("spec.routes[0].dst: Invalid value: \"0.0.0.0/0\": please specify 'spec.gateway' to configure the default route"));
        candidate.spec.routes = Some(vec![spiderpool_api::Route {
            dst: "192.168.40.0/24".into(),
            gw: "172.18.41.1".into(),
        }]);
        assert!(message(validate_create(&candidate, &[], &OwnerSubnet::NotNeeded, &settings()))
            .ends_with("spec.routes[0].gw: Invalid value: \"172.18.41.1\": not pertains to the 'spec.subnet' 172.18.40.0/24 of IPPool"));
    }

    #[test]
    fn nested_subnets_overlap_but_identical_ones_do_not() {
        // G33
        let existing = v4_pool("small", "172.18.40.0/25", &["172.18.40.40"]);
        let candidate = v4_pool("big", "172.18.40.0/24", &[]);
        assert_eq!(
            message(validate_create(
                &candidate,
                std::slice::from_ref(&existing),
                &OwnerSubnet::NotNeeded,
                &settings()
            )),
            "SpiderIPPool.spiderpool.spidernet.io \"big\" is invalid: spec.subnet: Invalid value: \"172.18.40.0/24\": overlap with IPPool small which 'spec.subnet' is 172.18.40.0/25"
        );
        let same = v4_pool("same", "172.18.40.0/25", &["172.18.40.41"]);
        assert!(validate_create(&same, &[existing], &OwnerSubnet::NotNeeded, &settings()).is_ok());
    }

    #[test]
    fn same_subnet_pools_may_not_share_addresses() {
        // G34
        let existing = v4_pool("old", "172.18.40.0/24", &["172.18.40.10"]);
        let candidate = v4_pool(
            "new",
            "172.18.40.0/24",
            &["172.18.40.1-172.18.40.2", "172.18.40.10"],
        );
        assert_eq!(
            message(validate_create(
                &candidate,
                &[existing],
                &OwnerSubnet::NotNeeded,
                &settings()
            )),
            "SpiderIPPool.spiderpool.spidernet.io \"new\" is invalid: spec.ips: Forbidden: overlap with IPPool old in IP ranges [172.18.40.10], total IP addresses of an IPPool are jointly determined by 'spec.ips' and 'spec.excludeIPs'"
        );
    }

    #[test]
    fn an_existing_name_is_already_exists() {
        // G35
        let existing = v4_pool("dup", "10.1.0.0/24", &[]);
        let denial = validate_create(
            &existing.clone(),
            &[existing],
            &OwnerSubnet::NotNeeded,
            &settings(),
        )
        .unwrap_err();
        assert_eq!(denial.code(), 409);
        assert_eq!(
            denial.message(),
            "SpiderIPPool.spiderpool.spidernet.io \"dup\" already exists"
        );
    }

    // Found by the bad-input corpus: malformed namespace and node selectors were admitted.
    #[test]
    fn namespace_and_node_affinities_are_label_selectors() {
        let mut candidate = v4_pool("p", "10.2.0.0/24", &[]);
        candidate.spec.namespace_affinity =
            Some(serde_json::from_value(json!({"matchLabels": {"-x": "y"}})).unwrap());
        candidate.spec.node_affinity = Some(
            serde_json::from_value(
                json!({"matchExpressions": [{"key": "zone", "operator": "Gt", "values": ["a"]}]}),
            )
            .unwrap(),
        );
        let text = message(validate_create(
            &candidate,
            &[],
            &OwnerSubnet::NotNeeded,
            &settings(),
        ));
        assert!(
            text.contains("spec.namespaceAffinity.matchLabels: Invalid value: \"-x\""),
            "{text}"
        );
        assert!(
            text.contains("spec.nodeAffinity.matchExpressions[0].operator"),
            "{text}"
        );
        candidate.spec.namespace_affinity =
            Some(serde_json::from_value(json!({"matchLabels": {"team": "a"}})).unwrap());
        candidate.spec.node_affinity = None;
        assert!(validate_create(&candidate, &[], &OwnerSubnet::NotNeeded, &settings()).is_ok());
    }

    #[test]
    fn pod_affinity_rules() {
        // G36
        let mut candidate = v4_pool("p", "10.2.0.0/24", &[]);
        candidate.spec.pod_affinity = Some(
            serde_json::from_value(json!({"matchLabels": {"key": ".starts.with.dot"}})).unwrap(),
        );
        assert!(
            message(validate_create(
                &candidate,
                &[],
                &OwnerSubnet::NotNeeded,
                &settings()
            ))
            .contains("spec.podAffinity.matchLabels: Invalid value: \".starts.with.dot\"")
        );
        candidate.spec.pod_affinity = Some(
            serde_json::from_value(json!({"matchLabels": {}, "matchExpressions": []})).unwrap(),
        );
        assert_eq!(
            message(validate_create(
                &candidate,
                &[],
                &OwnerSubnet::NotNeeded,
                &settings()
            )),
            "SpiderIPPool.spiderpool.spidernet.io \"p\" is invalid: spec.podAffinity: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, MatchExpressions:[]v1.LabelSelectorRequirement{}}: empty podAffinity is invalid for SpiderIPPool"
        );
        candidate.spec.pod_affinity =
            Some(serde_json::from_value(json!({"matchLabels": {"key": "value"}})).unwrap());
        assert!(validate_create(&candidate, &[], &OwnerSubnet::NotNeeded, &settings()).is_ok());
        candidate
            .labels_mut()
            .insert(LABEL_OWNER_APPLICATION_NAME.into(), "app".into());
        assert!(message(validate_create(&candidate, &[], &OwnerSubnet::NotNeeded, &settings()))
            .contains("it's invalid to add additional podAffinity matchLabels for auto-created SpiderIPPool"));
        candidate.spec.pod_affinity = Some(
            serde_json::from_value(json!({
                "matchLabels": {AUTO_POOL_APP_NAME: "app", AUTO_POOL_APP_KIND: "Deployment"},
                "matchExpressions": [{"key": "a", "operator": "Exists"}]
            }))
            .unwrap(),
        );
        assert!(message(validate_create(&candidate, &[], &OwnerSubnet::NotNeeded, &settings()))
            .contains("it's invalid to add additional podAffinity matchExpressions for auto-created SpiderIPPool"));
        candidate.spec.pod_affinity = Some(serde_json::from_value(json!({
            "matchLabels": {AUTO_POOL_APP_NAME: "app", AUTO_POOL_APP_KIND: "Deployment", AUTO_POOL_APP_API_GROUP: "apps",
                            AUTO_POOL_APP_API_VERSION: "v1", AUTO_POOL_APP_NAMESPACE: "default"}
        })).unwrap());
        assert!(validate_create(&candidate, &[], &OwnerSubnet::NotNeeded, &settings()).is_ok());
    }

    #[test]
    fn removing_an_allocated_address_is_forbidden() {
        // G37
        let mut old = v4_pool(
            "p",
            "172.18.40.0/24",
            &["172.18.40.1-172.18.40.2", "172.18.40.10"],
        );
        old.status = Some(serde_json::from_value(json!({
            "allocatedIPs": "{\"172.18.40.10\":{\"pod\":\"default/pod\",\"podUid\":\"u\"}}", "allocatedIPCount": 1
        })).unwrap());
        let mut new = old.clone();
        new.spec.ips = Some(vec!["172.18.40.1-172.18.40.2".into()]);
        assert_eq!(
            message(validate_update(
                &old,
                &new,
                &[],
                &OwnerSubnet::NotNeeded,
                &settings()
            )),
            "SpiderIPPool.spiderpool.spidernet.io \"p\" is invalid: spec.ips: Forbidden: remove an IP address 172.18.40.10 that is being used by Pod default/pod, total IP addresses of an IPPool are jointly determined by 'spec.ips' and 'spec.excludeIPs'"
        );
        assert!(validate_update(&old, &old, &[], &OwnerSubnet::NotNeeded, &settings()).is_ok());
        let mut moved = old.clone();
        moved.spec.subnet = "172.18.41.0/24".into();
        assert!(
            message(validate_update(
                &old,
                &moved,
                &[],
                &OwnerSubnet::NotNeeded,
                &settings()
            ))
            .ends_with("spec.subnet: Forbidden: is not changeable")
        );
    }

    fn auto_pool_and_subnet() -> (SpiderIPPool, SpiderSubnet) {
        let owner = subnet(json!({
            "apiVersion": API_VERSION, "kind": "SpiderSubnet", "metadata": {"name": "sub", "uid": "u"},
            "spec": {"ipVersion": 4, "subnet": "172.18.40.0/24", "ips": ["172.18.40.1-172.18.40.10"]},
            "status": {"controlledIPPools": "{\"auto\":{\"ips\":[\"172.18.40.1\"],\"application\":\"apps_v1_Deployment_default_d\"}}"}
        }));
        let candidate = pool(json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": "auto", "labels": {LABEL_OWNER_APPLICATION_NAME: "d"},
                         "ownerReferences": [{"apiVersion": API_VERSION, "kind": "SpiderSubnet", "name": "sub", "uid": "u", "controller": true}]},
            "spec": {"ipVersion": 4, "subnet": "172.18.40.0/24", "ips": ["172.18.40.1"]}
        }));
        (candidate, owner)
    }

    #[test]
    fn auto_pool_addresses_must_match_the_subnet_record() {
        // G38
        let (old, owner) = auto_pool_and_subnet();
        let found = OwnerSubnet::Found(Box::new(owner));
        let mut grown = old.clone();
        grown.spec.ips = Some(vec!["172.18.40.1-172.18.40.2".into()]);
        assert!(message(validate_update(&old, &grown, &[], &found, &settings()))
            .ends_with("spec.ips: Forbidden: it's illegal to update AutoPool.Spec.IPs that are different from corresponding SpiderSubnet.Status.ControlledIPPools"));
        let mut annotated = old.clone();
        annotated.annotations_mut().insert("a".into(), "b".into());
        assert!(validate_update(&old, &annotated, &[], &found, &settings()).is_ok());
    }

    #[test]
    fn pool_addresses_must_lie_in_the_owner_subnet() {
        // G83, G84
        let (mut candidate, owner) = auto_pool_and_subnet();
        candidate.labels_mut().remove(LABEL_OWNER_APPLICATION_NAME);
        candidate.spec.ips = Some(vec![
            "172.18.40.1-172.18.40.2".into(),
            "172.18.40.40".into(),
        ]);
        let found = OwnerSubnet::Found(Box::new(owner));
        assert!(message(validate_create(&candidate, &[], &found, &settings())).ends_with(
            "spec.ips: Forbidden: add some IP ranges [172.18.40.40] that are not contained in controller Subnet sub, total IP addresses of an IPPool are jointly determined by 'spec.ips' and 'spec.excludeIPs'"
        ));
        let missing = OwnerSubnet::Missing {
            name: "gone".into(),
            error: "not found".into(),
        };
        let denial = validate_create(&candidate, &[], &missing, &settings()).unwrap_err();
        assert_eq!(denial.code(), 422);
        assert!(denial.message().ends_with(
            "spec.subnet: Internal error: failed to get controller Subnet gone: not found"
        ));
        candidate.spec.ips = Some(vec![
            "172.18.40.2-172.18.40.3".into(),
            "172.18.40.10".into(),
        ]);
        candidate.spec.exclude_ips = Some(vec!["172.18.40.10".into()]);
        candidate.spec.gateway = Some("172.18.40.1".into());
        assert!(validate_create(&candidate, &[], &found, &settings()).is_ok());
    }

    #[test]
    fn delete_and_terminating_updates() {
        // G39, G40
        let mut candidate = v4_pool("p", "10.3.0.0/24", &[]);
        candidate.status = Some(serde_json::from_value(json!({"allocatedIPCount": 5})).unwrap());
        let enabled = ClusterSettings {
            enable_validating_resources_deleted_webhook: true,
            ..settings()
        };
        let denial = validate_delete(&candidate, &enabled).unwrap_err();
        assert_eq!(denial.code(), 403);
        assert_eq!(
            denial.message(),
            "spiderippools.spiderpool.spidernet.io \"p\" is forbidden: cannot delete an IPPool with allocated IPs(5)"
        );
        assert!(validate_delete(&candidate, &settings()).is_ok());
        candidate.status = Some(serde_json::from_value(json!({"allocatedIPCount": 0})).unwrap());
        assert!(validate_delete(&candidate, &enabled).is_ok());

        let mut terminating = v4_pool("t", "10.4.0.0/24", &[]);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        terminating.metadata.finalizers = Some(vec!["spiderpool.spidernet.io".into()]);
        let denial = validate_update(
            &terminating,
            &terminating,
            &[],
            &OwnerSubnet::NotNeeded,
            &settings(),
        )
        .unwrap_err();
        assert_eq!(
            (denial.code(), denial.message().as_str()),
            (403, "forbidden: cannot update a terminating IPPool")
        );
        let mut released = terminating.clone();
        released.metadata.finalizers = None;
        assert!(
            validate_update(
                &terminating,
                &released,
                &[],
                &OwnerSubnet::NotNeeded,
                &settings()
            )
            .is_ok()
        );
    }

    #[test]
    fn cidr_must_be_canonical_and_ranges_not_reversed() {
        // G44 and deliberate difference #7
        let candidate = v4_pool("p", "172.18.40.1/24", &[]);
        assert!(message(validate_create(&candidate, &[], &OwnerSubnet::NotNeeded, &settings()))
            .ends_with("spec.subnet: Invalid value: \"172.18.40.1/24\": unformatted subnet 172.18.40.1/24, please change it to 172.18.40.0/24"));
        let reversed = v4_pool("r", "10.5.0.0/24", &["10.5.0.9-10.5.0.1"]);
        assert!(
            message(validate_create(
                &reversed,
                &[],
                &OwnerSubnet::NotNeeded,
                &settings()
            ))
            .contains("spec.ips[0]: Invalid value: \"10.5.0.9-10.5.0.1\": invalid IP range format in IPv4 '10.5.0.9-10.5.0.1': the first address 10.5.0.9 is greater than the last address 10.5.0.1")
        );
        let missing_version = pool(json!({
            "apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "n"}, "spec": {"subnet": "bogus"}
        }));
        assert!(message(validate_create(&missing_version, &[], &OwnerSubnet::NotNeeded, &settings()))
            .ends_with("spec.ipVersion: Invalid value: null: is not generated correctly, 'spec.subnet' may be invalid"));
    }
}
