//! Reading SpiderIPPools and SpiderSubnets as the pure core's sets, shared by the IPPool, Subnet
//! and application controllers, the garbage collector and the usage metrics.

use spiderpool_api::constants::{
    LABEL_IPPOOL_RECLAIM, LABEL_OWNER_APPLICATION_NAME, LABEL_OWNER_SPIDER_SUBNET,
};
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_ipam::cidr::Cidr;
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::ledger::{ControlledIpPools, LedgerError, PoolIpAllocations};
use spiderpool_ipam::pool_ips::PoolIps;
use spiderpool_ipam::range::IpSet;

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

/// The effective addresses of `ips` minus `excludeIPs` inside `subnet` (`NewCIDR`). Ranges the
/// webhook would have merged (overlapping items) are united instead of refused, so a pool written
/// without the webhook still counts.
pub fn effective_ips(subnet: &str, ips: &[String], exclude: &[String]) -> Option<IpSet> {
    match PoolIps::new(subnet, ips, exclude) {
        Ok(pool_ips) => Some(pool_ips.to_set()),
        Err(_) => {
            let cidr = Cidr::parse_any(subnet).ok()?;
            let version = cidr.version();
            let included = IpSet::from_ranges(version, ips).ok()?;
            let excluded = IpSet::from_ranges(version, exclude).ok()?;
            let inside = IpSet::from_ip_ranges(version, &[cidr.as_range()]);
            Some(included.subtract(&excluded).intersect(&inside))
        }
    }
}

pub fn pool_name(pool: &SpiderIPPool) -> String {
    pool.metadata.name.clone().unwrap_or_default()
}

pub fn pool_family(pool: &SpiderIPPool) -> Option<IpVersion> {
    family(pool.spec.ip_version, &pool.spec.subnet)
}

/// A pool's effective addresses; `None` when its spec does not parse.
pub fn pool_ips(pool: &SpiderIPPool) -> Option<IpSet> {
    effective_ips(
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

/// A subnet's effective addresses; `None` when its spec does not parse.
pub fn subnet_ips(subnet: &SpiderSubnet) -> Option<IpSet> {
    effective_ips(
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

    #[test]
    fn overlapping_items_are_united_instead_of_refused() {
        let set = effective_ips(
            "10.0.0.0/24",
            &["10.0.0.1-10.0.0.5".into(), "10.0.0.3-10.0.0.8".into()],
            &["10.0.0.2".into()],
        )
        .unwrap();
        assert_eq!(
            set.to_range_strings(),
            vec!["10.0.0.1", "10.0.0.3-10.0.0.8"]
        );
    }

    #[test]
    fn family_is_derived_from_the_cidr_when_unset() {
        assert_eq!(family(None, "fd00::/64"), Some(IpVersion::V6));
        assert_eq!(family(Some(4), "fd00::/64"), Some(IpVersion::V4));
        assert_eq!(family(None, "garbage"), None);
        assert_eq!(canonical_cidr("10.0.0.1/8").as_deref(), Some("10.0.0.0/8"));
    }
}
