//! `free POOL|SUBNET`: a pool's or subnet's addresses split into free, reserved, excluded and
//! used, as compact ranges, with the holder of each used address (a pod for a pool, a pool for a
//! subnet). Pure over the objects; the sets are the ones allocation uses
//! (`spiderpool_store::objects`: effective addresses, ledger, reservations).

use std::net::IpAddr;

use serde::Serialize;
use spiderpool_api::{SpiderIPPool, SpiderReservedIP, SpiderSubnet};
use spiderpool_ipam::ip::{IpVersion, parse_ip};
use spiderpool_ipam::range::IpSet;
use spiderpool_store::objects::{
    controlled_pools, pool_allocations, pool_family, pool_ips, reserved_set, subnet_family,
    subnet_ips,
};

#[derive(Debug, Serialize)]
pub struct FreeReport {
    /// `SpiderIPPool` or `SpiderSubnet`.
    pub kind: &'static str,
    pub name: String,
    pub ip_version: u8,
    pub subnet: String,
    pub total: u128,
    pub free_count: u128,
    pub free: Vec<String>,
    pub reserved: Vec<String>,
    pub excluded: Vec<String>,
    pub used: Vec<UsedRange>,
}

#[derive(Debug, Serialize)]
pub struct UsedRange {
    pub ips: String,
    /// `namespace/name (uid)` of a pod, or the pool (and its application) holding the range.
    pub holder: String,
}

/// Why a report could not be made.
#[derive(Debug)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// The addresses of `spec.ips` that `spec.excludeIPs` takes out.
fn excluded(version: IpVersion, listed: &[String], effective: &IpSet) -> Vec<String> {
    let listed = IpSet::from_ranges(version, listed).unwrap_or_else(|_| IpSet::new(version));
    listed.subtract(effective).to_range_strings()
}

/// What a pool or subnet is, and what of it is used by whom.
struct Parts<'a> {
    kind: &'static str,
    name: String,
    version: IpVersion,
    subnet: &'a str,
    listed: &'a [String],
    effective: IpSet,
    used_set: IpSet,
    used: Vec<UsedRange>,
}

/// The report: reserved = reservations inside the effective addresses not already used; free =
/// the rest.
fn report(parts: Parts<'_>, reservations: &[SpiderReservedIP]) -> FreeReport {
    let reserved = reserved_set(reservations, parts.version)
        .intersect(&parts.effective)
        .subtract(&parts.used_set);
    let free = parts
        .effective
        .subtract(&parts.used_set)
        .subtract(&reserved);
    FreeReport {
        kind: parts.kind,
        name: parts.name,
        ip_version: parts.version.number(),
        subnet: parts.subnet.to_string(),
        total: parts.effective.count(),
        free_count: free.count(),
        free: free.to_range_strings(),
        reserved: reserved.to_range_strings(),
        excluded: excluded(parts.version, parts.listed, &parts.effective),
        used: parts.used,
    }
}

pub fn pool_report(
    pool: &SpiderIPPool,
    reservations: &[SpiderReservedIP],
) -> Result<FreeReport, Invalid> {
    let name = pool.metadata.name.clone().unwrap_or_default();
    let version = pool_family(pool)
        .ok_or_else(|| Invalid(format!("SpiderIPPool {name} has no valid ipVersion")))?;
    let effective = pool_ips(pool)
        .ok_or_else(|| Invalid(format!("SpiderIPPool {name} has an invalid spec.ips")))?;
    let ledger = pool_allocations(pool).map_err(|error| Invalid(error.to_string()))?;
    let mut used_addresses: Vec<(IpAddr, String)> = ledger
        .iter()
        .filter_map(|(ip, record)| {
            parse_ip(version, ip)
                .map(|address| (address, format!("{} ({})", record.pod, record.pod_uid)))
        })
        .collect();
    used_addresses.sort();
    let addresses: Vec<IpAddr> = used_addresses.iter().map(|(address, _)| *address).collect();
    let used_set = IpSet::from_ips(version, &addresses);
    let used = used_addresses
        .into_iter()
        .map(|(address, holder)| UsedRange {
            ips: address.to_string(),
            holder,
        })
        .collect();
    let parts = Parts {
        kind: "SpiderIPPool",
        name,
        version,
        subnet: &pool.spec.subnet,
        listed: pool.spec.ips.as_deref().unwrap_or_default(),
        effective,
        used_set,
        used,
    };
    Ok(report(parts, reservations))
}

pub fn subnet_report(
    subnet: &SpiderSubnet,
    reservations: &[SpiderReservedIP],
) -> Result<FreeReport, Invalid> {
    let name = subnet.metadata.name.clone().unwrap_or_default();
    let version = subnet_family(subnet)
        .ok_or_else(|| Invalid(format!("SpiderSubnet {name} has no valid ipVersion")))?;
    let effective = subnet_ips(subnet)
        .ok_or_else(|| Invalid(format!("SpiderSubnet {name} has an invalid spec.ips")))?;
    let controlled = controlled_pools(subnet).map_err(|error| Invalid(error.to_string()))?;
    let mut used = Vec::new();
    let mut used_set = IpSet::new(version);
    for (pool, allocation) in &controlled.0 {
        let set = IpSet::from_ranges(version, &allocation.ips).map_err(|error| {
            Invalid(format!(
                "SpiderSubnet {name} records invalid addresses for pool {pool}: {error}"
            ))
        })?;
        used_set = used_set.union(&set);
        let holder = match &allocation.application {
            Some(application) => format!("pool {pool} ({application})"),
            None => format!("pool {pool}"),
        };
        for range in set.to_range_strings() {
            used.push(UsedRange {
                ips: range,
                holder: holder.clone(),
            });
        }
    }
    let parts = Parts {
        kind: "SpiderSubnet",
        name,
        version,
        subnet: &subnet.spec.subnet,
        listed: subnet.spec.ips.as_deref().unwrap_or_default(),
        effective,
        used_set,
        used,
    };
    Ok(report(parts, reservations))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pools_addresses_split_into_free_reserved_excluded_and_used() {
        let pool: SpiderIPPool = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"ipVersion": 4, "subnet": "10.0.0.0/24", "ips": ["10.0.0.10-10.0.0.20"], "excludeIPs": ["10.0.0.20"]},
            "status": {"allocatedIPs": "{\"10.0.0.11\":{\"pod\":\"ns/a\",\"podUid\":\"u1\"}}", "allocatedIPCount": 1}
        }))
        .expect("pool");
        let reserved: SpiderReservedIP = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "r"},
            "spec": {"ipVersion": 4, "ips": ["10.0.0.14-10.0.0.15", "10.0.0.11"]}
        }))
        .expect("reservation");
        let report = pool_report(&pool, &[reserved]).expect("report");
        assert_eq!(report.total, 10);
        assert_eq!(report.excluded, vec!["10.0.0.20"]);
        assert_eq!(report.reserved, vec!["10.0.0.14-10.0.0.15"]);
        assert_eq!(
            report.free,
            vec!["10.0.0.10", "10.0.0.12-10.0.0.13", "10.0.0.16-10.0.0.19"]
        );
        assert_eq!(report.free_count, 7);
        assert_eq!(report.used.len(), 1);
        assert_eq!(report.used[0].holder, "ns/a (u1)");
    }

    #[test]
    fn a_subnets_used_addresses_are_its_pools_ranges() {
        let subnet: SpiderSubnet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "spec": {"ipVersion": 4, "subnet": "10.0.0.0/24", "ips": ["10.0.0.1-10.0.0.20"]},
            "status": {"controlledIPPools": "{\"auto4-web-eth0-1\":{\"ips\":[\"10.0.0.5-10.0.0.7\"],\"application\":\"apps_v1_Deployment_ns_web\"}}"}
        }))
        .expect("subnet");
        let report = subnet_report(&subnet, &[]).expect("report");
        assert_eq!(report.total, 20);
        assert_eq!(report.free, vec!["10.0.0.1-10.0.0.4", "10.0.0.8-10.0.0.20"]);
        assert_eq!(report.used.len(), 1);
        assert_eq!(report.used[0].ips, "10.0.0.5-10.0.0.7");
        assert_eq!(
            report.used[0].holder,
            "pool auto4-web-eth0-1 (apps_v1_Deployment_ns_web)"
        );
    }
}
