//! The ledger strings (`status.allocatedIPs` of a pool, `status.controlledIPPools` of a subnet)
//! and the pure allocate / release / UID-rewrite steps over them.
//!
//! Input: a selector byte, then the status string. Checked: what decodes encodes back to the
//! same records; an allocation never hands out an address that is recorded, excluded or outside
//! the pool, and is idempotent for its owner; a release removes exactly the matching record.

use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::ledger::{
    self, ControlledIpPools, IpAndUid, PoolIpAllocation, PoolIpAllocations,
};
use spiderpool_ipam::pool::PoolView;
use spiderpool_ipam::range::{IpRange, IpSet};

use crate::{select, text};

pub fn run(data: &[u8]) {
    let Some((selector, rest)) = select(data) else {
        return;
    };
    let text = text(rest);
    match selector % 2 {
        0 => allocated_ips(&text),
        _ => controlled_ip_pools(&text),
    }
}

fn pools() -> [PoolView; 2] {
    let mut v4 = PoolView::new("pool-v4", IpVersion::V4, "10.0.0.0/24");
    v4.ips = vec!["10.0.0.1-10.0.0.10".into(), "10.0.0.200".into()];
    v4.exclude_ips = vec!["10.0.0.2".into(), "10.0.0.9-10.0.0.8".into()];
    let mut v6 = PoolView::new("pool-v6", IpVersion::V6, "fd00::/120");
    v6.ips = vec!["fd00::1-fd00::a".into()];
    v6.exclude_ips = vec!["fd00::3".into()];
    [v4, v6]
}

fn allocated_ips(text: &str) {
    let Ok(records) = PoolIpAllocations::parse("pool", Some(text)) else {
        return;
    };
    if let Some(encoded) = records.encode() {
        let again = PoolIpAllocations::parse("pool", Some(&encoded));
        assert_eq!(
            again.as_ref(),
            Ok(&records),
            "{encoded:?} does not decode to what it encodes"
        );
    }
    let status = records.status();
    assert_eq!(
        usize::try_from(status.allocated_ip_count).ok(),
        Some(records.len())
    );
    let owner = PoolIpAllocation::new("default/fuzz", "uid-fuzz");
    for pool in pools() {
        let Some(version) = pool.ip_version else {
            continue;
        };
        let _ = records.to_set(version);
        let reserved = IpSet::from_ranges(version, &["10.0.0.3", "fd00::4"][..])
            .unwrap_or_else(|_| IpSet::new(version));
        match ledger::allocate(&pool, &reserved, &records, &owner, 1_000) {
            Ok(allocation) => check_allocation(&pool, &reserved, &records, &owner, &allocation),
            Err(error) => {
                let _ = error.metric_label();
            }
        }
    }
    let releases: Vec<IpAndUid> = records
        .iter()
        .take(3)
        .map(|(ip, record)| IpAndUid::new(ip.clone(), record.pod_uid.clone()))
        .collect();
    if let Some((next, _)) = ledger::release(&records, &releases) {
        for release in &releases {
            assert!(
                next.get(&release.ip).is_none(),
                "{} was not released",
                release.ip
            );
        }
        assert_eq!(next.len() + releases.len(), records.len());
    }
    let rewrites: Vec<IpAndUid> = records
        .iter()
        .take(3)
        .map(|(ip, _)| IpAndUid::new(ip.clone(), "uid-new"))
        .collect();
    let _ = ledger::update_allocated_uids("pool", &records, "default/fuzz", &rewrites);
}

fn check_allocation(
    pool: &PoolView,
    reserved: &IpSet,
    records: &PoolIpAllocations,
    owner: &PoolIpAllocation,
    allocation: &ledger::Allocation,
) {
    let address = allocation.ip.to_string();
    match allocation.status {
        None => {
            let held = records.get(&address);
            assert_eq!(held.map(|record| &record.pod_uid), Some(&owner.pod_uid));
        }
        Some(ref status) => {
            assert!(
                records.get(&address).is_none(),
                "{address} handed out twice"
            );
            assert!(!reserved.contains(&allocation.ip), "{address} is reserved");
            let version = IpVersion::of(&allocation.ip);
            let in_pool = pool
                .ips
                .iter()
                .filter_map(|item| IpRange::parse(version, item).ok())
                .any(|range| range.contains(&allocation.ip));
            let excluded = pool
                .exclude_ips
                .iter()
                .filter_map(|item| IpRange::parse_unordered(version, item).ok())
                .any(|range| range.contains(&allocation.ip));
            assert!(
                in_pool && !excluded,
                "{address} is not free in {}",
                pool.name
            );
            assert_eq!(
                status.allocated_ip_count,
                i64::try_from(records.len() + 1).unwrap_or(i64::MAX)
            );
            if records.find_by_uid(&owner.pod_uid).is_some() {
                // A record of the owner in the other family: not this pool's business.
                return;
            }
            let again = ledger::allocate(pool, reserved, &allocation.records, owner, 1_000);
            assert_eq!(
                again.map(|again| (again.ip, again.status.is_none())),
                Ok((allocation.ip, true)),
                "a second allocation for the same owner is not idempotent"
            );
        }
    }
}

fn controlled_ip_pools(text: &str) {
    let Ok(pools) = ControlledIpPools::parse("subnet", Some(text)) else {
        return;
    };
    if let Some(encoded) = pools.encode() {
        let again = ControlledIpPools::parse("subnet", Some(&encoded));
        assert_eq!(
            again.as_ref(),
            Ok(&pools),
            "{encoded:?} does not decode to what it encodes"
        );
    }
    for version in [IpVersion::V4, IpVersion::V6] {
        let union = pools.union(version);
        let count = pools.allocated_ip_count(version);
        if let (Ok(union), Ok(count)) = (union, count) {
            assert!(
                union.count_i64() <= count,
                "the union is larger than the sum of its parts"
            );
        }
    }
}
