//! Conversions from API objects to the plain views the pure core works on, and back for the
//! SpiderEndpoint entries.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use spiderpool_api::{IPAllocationDetail, SpiderIPPool, SpiderReservedIP};

use crate::ip::IpVersion;
use crate::labels::LabelSelector;
use crate::pod::PodLiveness;
use crate::pool::{LABEL_OWNER_APPLICATION_NAME, PoolView};
use crate::range::{IpRange, IpSet};
use crate::result::IpAllocationDetail;
use crate::routes::Route;

/// A `LabelSelector` of k8s-openapi as the core's selector. Both share the JSON shape; a selector
/// that does not convert (cannot happen for API objects) becomes one that matches nothing
/// evaluable, which the filter reports.
fn selector(selector: Option<&K8sLabelSelector>) -> Option<LabelSelector> {
    let selector = selector?;
    let value = serde_json::to_value(selector).ok()?;
    Some(
        serde_json::from_value(value).unwrap_or_else(|_| LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![crate::labels::LabelSelectorRequirement {
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
}
