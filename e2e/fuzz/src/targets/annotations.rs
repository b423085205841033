//! `ipam.spidernet.io/*` annotations, Multus network selections, and the webhook's rules for
//! the annotations of pods, workloads and namespaces.
//!
//! Input: a selector byte, then either one annotation value (selectors 0-6) or an annotation map
//! written as `key=value` lines (selector 7), which runs every map parser and the webhook rules.

use std::collections::BTreeMap;

use spiderpool_controller_manager::webhook::annotations as webhook_rules;
use spiderpool_ipam::annotations::{
    self, ANNO_NS_DEFAULT_IPV4_POOL, ANNO_NS_DEFAULT_IPV6_POOL, ANNO_POOL_IP_NUMBER,
    ANNO_POOL_RECLAIM, ANNO_SUBNET, ANNO_SUBNETS,
};
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::multus;

use crate::{select, text};

pub fn run(data: &[u8]) {
    let Some((selector, rest)) = select(data) else {
        return;
    };
    let value = text(rest);
    match selector % 8 {
        0 => {
            let _ = annotations::parse_pod_ippool(&value);
        }
        1 => {
            if let Ok(mut items) = annotations::parse_pod_ippools(&value) {
                let _ = annotations::validate_multiple_nics(&mut items.clone(), "eth0");
                let _ = annotations::validate_multiple_nics(&mut items, "net1");
            }
        }
        2 => {
            let _ = annotations::parse_pod_routes(&value);
        }
        3 => {
            if let Ok(number) = annotations::parse_pool_ip_number(&value) {
                let _ = number.annotation_value();
                for replicas in [0, 3, i64::MAX, i64::MIN] {
                    let _ = number.desired(replicas);
                }
            }
            let _ = annotations::parse_go_bool(&value);
        }
        4 => {
            let _ = multus::parse_network_annotation(&value, "default");
            let _ = multus::parse_network_object_name(&value);
            let _ = multus::is_hardware_address(&value);
        }
        5 => {
            // The subnet annotations, each alone and together with the number and reclaim keys.
            for key in [ANNO_SUBNET, ANNO_SUBNETS] {
                let mut map = BTreeMap::from([(key.to_string(), value.to_string())]);
                let _ = annotations::parse_subnet_annotations(&map, 1);
                map.insert(ANNO_POOL_IP_NUMBER.into(), "+2".into());
                map.insert(ANNO_POOL_RECLAIM.into(), "true".into());
                let _ = annotations::parse_subnet_annotations(&map, 0);
                map_rules(&map);
            }
        }
        6 => {
            for key in [ANNO_NS_DEFAULT_IPV4_POOL, ANNO_NS_DEFAULT_IPV6_POOL] {
                let map = BTreeMap::from([(key.to_string(), value.to_string())]);
                let _ = annotations::parse_namespace_default_pools(&map);
                map_rules(&map);
            }
        }
        _ => map_rules(&lines_to_map(&value)),
    }
}

/// `key=value` lines (split at the first `=`); a line without `=` is a key with an empty value.
pub fn lines_to_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|line| match line.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect()
}

/// Every parser that reads a whole annotation map, then the webhook's rules with the names they
/// reference resolved the way the handler resolves them (a name containing `v6` is an IPv6
/// object, one containing `missing` does not exist).
fn map_rules(map: &BTreeMap<String, String>) {
    let _ = annotations::default_route_nic(map);
    let _ = annotations::is_multiple_nic_without_names(map);
    let _ = annotations::has_subnet_annotation(map);
    let _ = annotations::parse_pool_reclaim(map);
    let _ = annotations::parse_namespace_default_pools(map);
    let _ = annotations::parse_subnet_annotations(map, 1);
    let ipam = webhook_rules::ipam_annotations(map);
    for target in [webhook_rules::Target::Pod, webhook_rules::Target::Namespace] {
        let (pools, subnets) = webhook_rules::referenced_names(&ipam, target);
        let resolve = |name: &String| {
            let version = if name.contains("missing") {
                None
            } else if name.contains("v6") {
                Some(IpVersion::V6)
            } else {
                Some(IpVersion::V4)
            };
            (name.clone(), version)
        };
        let known = webhook_rules::Known {
            pools: pools.iter().map(resolve).collect(),
            subnets: subnets.iter().map(resolve).collect(),
        };
        for refused in [false, true] {
            let errors =
                webhook_rules::validate(&ipam, target, &known, "metadata.annotations", refused);
            for error in &errors {
                let _ = error.body();
            }
        }
    }
}
