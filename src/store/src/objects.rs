//! Conversions from API objects to the plain views and sets the pure core works on, and back for
//! the SpiderEndpoint entries. Pure functions over the API types (no I/O), shared by the CNI
//! plugin and the controller-manager.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use spiderpool_api::constants::{LABEL_IPPOOL_RECLAIM, LABEL_OWNER_SPIDER_SUBNET};
use spiderpool_api::{IPAllocationDetail, SpiderIPPool, SpiderReservedIP, SpiderSubnet};

use spiderpool_ipam::cidr::Cidr;
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::labels::LabelSelector;
use spiderpool_ipam::ledger::{ControlledIpPools, LedgerError, PoolIpAllocations};
use spiderpool_ipam::pod::PodLiveness;
use spiderpool_ipam::pool::{LABEL_OWNER_APPLICATION_NAME, PoolView};
use spiderpool_ipam::pool_ips::counted_ips;
use spiderpool_ipam::range::{IpRange, IpSet};
use spiderpool_ipam::result::IpAllocationDetail;
use spiderpool_ipam::routes::Route;

/// A `LabelSelector` of k8s-openapi as the core's selector. Both share the JSON shape; a selector
/// that does not convert (cannot happen for API objects) becomes one that matches nothing
/// evaluable, which the filter reports.
fn selector(selector: Option<&K8sLabelSelector>) -> Option<LabelSelector> {
    let selector = selector?;
    let value = serde_json::to_value(selector).ok()?;
    Some(
        serde_json::from_value(value).unwrap_or_else(|_| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![spiderpool_ipam::labels::LabelSelectorRequirement {
                key: "invalid-selector".to_string(),
                operator: "Invalid".to_string(),
                values: Vec::new(),
            }],
        }),
    )
}

/// The view of a `SpiderIPPool` selection and allocation read.
pub fn pool_view(pool: &SpiderIPPool) -> PoolView {
    let spec = &pool.spec;
    PoolView {
        name: pool.metadata.name.clone().unwrap_or_default(),
        ip_version: spec.ip_version.and_then(IpVersion::from_number),
        subnet: spec.subnet.clone(),
        ips: spec.ips.clone().unwrap_or_default(),
        exclude_ips: spec.exclude_ips.clone().unwrap_or_default(),
        gateway: spec.gateway.clone().filter(|gateway| !gateway.is_empty()),
        routes: spec
            .routes
            .iter()
            .flatten()
            .map(|route| Route::new(route.dst.clone(), route.gw.clone()))
            .collect(),
        default: spec.default.unwrap_or(false),
        disable: spec.disable.unwrap_or(false),
        terminating: pool.metadata.deletion_timestamp.is_some(),
        node_name: spec.node_name.clone().unwrap_or_default(),
        node_affinity: selector(spec.node_affinity.as_ref()),
        namespace_name: spec.namespace_name.clone().unwrap_or_default(),
        namespace_affinity: selector(spec.namespace_affinity.as_ref()),
        pod_affinity: selector(spec.pod_affinity.as_ref()),
        multus_name: spec.multus_name.clone().unwrap_or_default(),
        auto_created: pool
            .metadata
            .labels
            .as_ref()
            .is_some_and(|labels| labels.contains_key(LABEL_OWNER_APPLICATION_NAME)),
    }
}

/// `AssembleReservedIPs`: every address of non-terminating reservations of `version`. Entries that
/// do not parse are skipped (the webhook rejects them; a broken one must not block allocation).
pub fn reserved_set(reservations: &[SpiderReservedIP], version: IpVersion) -> IpSet {
    let mut ranges = Vec::new();
    for reservation in reservations {
        if reservation.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if reservation
            .spec
            .ip_version
            .is_some_and(|number| IpVersion::from_number(number) != Some(version))
        {
            continue;
        }
        for item in reservation.spec.ips.iter().flatten() {
            if let Ok(range) = IpRange::parse_unordered(version, item) {
                ranges.push(range);
            }
        }
    }
    IpSet::from_ip_ranges(version, &ranges)
}

/// The fields `IsPodAlive` reads.
pub fn pod_liveness(pod: &Pod) -> PodLiveness {
    let status = pod.status.as_ref();
    PodLiveness {
        terminating: pod.metadata.deletion_timestamp.is_some(),
        phase: status
            .and_then(|status| status.phase.clone())
            .unwrap_or_default(),
        restart_policy: pod
            .spec
            .as_ref()
            .and_then(|spec| spec.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_string()),
        reason: status
            .and_then(|status| status.reason.clone())
            .unwrap_or_default(),
    }
}

/// A stored endpoint entry as the core's detail.
pub fn detail_from_api(detail: &IPAllocationDetail) -> IpAllocationDetail {
    IpAllocationDetail {
        interface: detail.nic.clone(),
        ipv4: detail.ipv4.clone(),
        ipv4_pool: detail.ipv4_pool.clone(),
        ipv4_gateway: detail.ipv4_gateway.clone(),
        ipv6: detail.ipv6.clone(),
        ipv6_pool: detail.ipv6_pool.clone(),
        ipv6_gateway: detail.ipv6_gateway.clone(),
        vlan: detail.vlan.unwrap_or(0),
        clean_gateway: detail.clean_gateway,
        routes: detail
            .routes
            .iter()
            .flatten()
            .map(|route| Route::new(route.dst.clone(), route.gw.clone()))
            .collect(),
        mac: detail.mac.clone(),
    }
}

/// The core's detail as a stored endpoint entry.
pub fn detail_to_api(detail: &IpAllocationDetail) -> IPAllocationDetail {
    IPAllocationDetail {
        nic: detail.interface.clone(),
        ipv4: detail.ipv4.clone(),
        ipv6: detail.ipv6.clone(),
        ipv4_pool: detail.ipv4_pool.clone(),
        ipv6_pool: detail.ipv6_pool.clone(),
        vlan: Some(detail.vlan),
        ipv4_gateway: detail.ipv4_gateway.clone(),
        ipv6_gateway: detail.ipv6_gateway.clone(),
        clean_gateway: detail.clean_gateway,
        routes: (!detail.routes.is_empty()).then(|| {
            detail
                .routes
                .iter()
                .map(|route| spiderpool_api::Route {
                    dst: route.dst.clone(),
                    gw: route.gw.clone(),
                })
                .collect()
        }),
        mac: detail.mac.clone(),
    }
}

// Reading SpiderIPPools and SpiderSubnets as the core's sets, shared with the controller-manager's
// IPPool, Subnet and auto-pool controllers, the garbage collector and the usage metrics.

/// `Go net.IPNet.String()` of a CIDR, so `10.0.0.0/8` and `10.0.0.1/8` compare equal.
pub fn canonical_cidr(text: &str) -> Option<String> {
    Cidr::parse_any(text).ok().map(|cidr| cidr.canonical())
}

/// The family of a pool or subnet: `spec.ipVersion`, or derived from `spec.subnet` when the
/// webhook did not set it.
pub fn family(ip_version: Option<i64>, subnet: &str) -> Option<IpVersion> {
    match ip_version {
        Some(number) => IpVersion::from_number(number),
        None => Cidr::parse_any(subnet).ok().map(|cidr| cidr.version()),
    }
}

pub fn pool_name(pool: &SpiderIPPool) -> String {
    pool.metadata.name.clone().unwrap_or_default()
}

pub fn pool_family(pool: &SpiderIPPool) -> Option<IpVersion> {
    family(pool.spec.ip_version, &pool.spec.subnet)
}

/// A pool's effective addresses ([`counted_ips`]); `None` when its spec does not parse.
pub fn pool_ips(pool: &SpiderIPPool) -> Option<IpSet> {
    counted_ips(
        &pool.spec.subnet,
        pool.spec.ips.as_deref().unwrap_or_default(),
        pool.spec.exclude_ips.as_deref().unwrap_or_default(),
    )
}

/// A pool's ledger.
pub fn pool_allocations(pool: &SpiderIPPool) -> Result<PoolIpAllocations, LedgerError> {
    PoolIpAllocations::parse(
        &pool_name(pool),
        pool.status
            .as_ref()
            .and_then(|status| status.allocated_ips.as_deref()),
    )
}

/// The allocated addresses of a pool as a set (unparsable records are skipped).
pub fn pool_allocated_set(pool: &SpiderIPPool, version: IpVersion) -> IpSet {
    let Ok(records) = pool_allocations(pool) else {
        return IpSet::new(version);
    };
    let addresses: Vec<std::net::IpAddr> = records
        .iter()
        .filter_map(|(ip, _)| spiderpool_ipam::ip::parse_ip(version, ip))
        .collect();
    IpSet::from_ips(version, &addresses)
}

pub fn label<'a>(pool: &'a SpiderIPPool, key: &str) -> Option<&'a str> {
    pool.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(key))
        .map(String::as_str)
}

/// Auto-created pools carry `ipam.spidernet.io/owner-application-name`.
pub fn is_auto_pool(pool: &SpiderIPPool) -> bool {
    label(pool, LABEL_OWNER_APPLICATION_NAME).is_some()
}

pub fn is_reclaimable(pool: &SpiderIPPool) -> bool {
    label(pool, LABEL_IPPOOL_RECLAIM) == Some("true")
}

/// The subnet the pool is controlled by, per its label.
pub fn owner_subnet(pool: &SpiderIPPool) -> Option<&str> {
    label(pool, LABEL_OWNER_SPIDER_SUBNET)
}

pub fn subnet_name(subnet: &SpiderSubnet) -> String {
    subnet.metadata.name.clone().unwrap_or_default()
}

pub fn subnet_family(subnet: &SpiderSubnet) -> Option<IpVersion> {
    family(subnet.spec.ip_version, &subnet.spec.subnet)
}

/// A subnet's effective addresses ([`counted_ips`]); `None` when its spec does not parse.
pub fn subnet_ips(subnet: &SpiderSubnet) -> Option<IpSet> {
    counted_ips(
        &subnet.spec.subnet,
        subnet.spec.ips.as_deref().unwrap_or_default(),
        subnet.spec.exclude_ips.as_deref().unwrap_or_default(),
    )
}

/// A subnet's `status.controlledIPPools`.
pub fn controlled_pools(subnet: &SpiderSubnet) -> Result<ControlledIpPools, LedgerError> {
    ControlledIpPools::parse(
        &subnet_name(subnet),
        subnet
            .status
            .as_ref()
            .and_then(|status| status.controlled_ip_pools.as_deref()),
    )
}

/// Whether the API error is a `409 Conflict`.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict())
}

/// Whether the API error is a `404 Not Found`.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}

/// Whether the API error is a `409 AlreadyExists`.
pub fn is_already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_already_exists())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spiderpool_api::{IPPoolSpec, ReservedIPSpec};

    #[test]
    fn pool_view_copies_spec_and_marks_auto_pools() {
        let mut pool = SpiderIPPool::new(
            "p",
            IPPoolSpec {
                ip_version: Some(4),
                subnet: "10.0.0.0/24".into(),
                ips: Some(vec!["10.0.0.10-10.0.0.20".into()]),
                gateway: Some("10.0.0.1".into()),
                node_affinity: Some(K8sLabelSelector {
                    match_labels: Some(BTreeMap::from([("zone".into(), "a".into())])),
                    match_expressions: None,
                }),
                ..IPPoolSpec::default()
            },
        );
        pool.metadata.labels = Some(BTreeMap::from([(
            LABEL_OWNER_APPLICATION_NAME.to_string(),
            "web".to_string(),
        )]));
        let view = pool_view(&pool);
        assert_eq!(view.ip_version, Some(IpVersion::V4));
        assert_eq!(view.gateway.as_deref(), Some("10.0.0.1"));
        assert!(view.auto_created);
        let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        assert_eq!(view.node_affinity.unwrap().matches(&labels), Ok(true));
    }

    #[test]
    fn reserved_set_skips_other_families_and_terminating_reservations() {
        let reservation = |ips: &[&str], version: i64| {
            SpiderReservedIP::new(
                "r",
                ReservedIPSpec {
                    ip_version: Some(version),
                    ips: Some(ips.iter().map(|ip| ip.to_string()).collect()),
                },
            )
        };
        let mut gone = reservation(&["10.0.0.12"], 4);
        gone.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        let set = reserved_set(
            &[
                reservation(&["10.0.0.10-10.0.0.11", "garbage"], 4),
                reservation(&["fd00::1"], 6),
                gone,
            ],
            IpVersion::V4,
        );
        assert!(set.contains(&"10.0.0.11".parse().unwrap()));
        assert!(!set.contains(&"10.0.0.12".parse().unwrap()));
    }

    #[test]
    fn endpoint_details_round_trip() {
        let detail = IpAllocationDetail {
            interface: "eth0".into(),
            ipv4: Some("10.0.0.10/24".into()),
            ipv4_pool: Some("p".into()),
            ipv4_gateway: Some("10.0.0.1".into()),
            clean_gateway: Some(false),
            routes: vec![Route::new("10.1.0.0/16", "10.0.0.1")],
            ..IpAllocationDetail::default()
        };
        assert_eq!(detail_from_api(&detail_to_api(&detail)), detail);
    }

    #[test]
    fn family_is_derived_from_the_cidr_when_unset() {
        assert_eq!(family(None, "fd00::/64"), Some(IpVersion::V6));
        assert_eq!(family(Some(4), "fd00::/64"), Some(IpVersion::V4));
        assert_eq!(family(None, "garbage"), None);
        assert_eq!(canonical_cidr("10.0.0.1/8").as_deref(), Some("10.0.0.0/8"));
    }
}
