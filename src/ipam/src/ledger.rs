//! The IP ledger: the exact encodings of `SpiderIPPool.status.allocatedIPs` and
//! `SpiderSubnet.status.controlledIPPools`, and the pure allocate / release steps that turn a pool
//! snapshot into its next status.
//!
//! The caller reads the pool (with its `resourceVersion`), calls [`allocate`] or [`release`], writes
//! the returned [`PoolStatusUpdate`] with a compare-and-swap, and retries from a fresh read on
//! conflict. Nothing here does I/O, so the same code serves the CNI plugin and the controller-manager.
//!
//! Encodings follow Go's `encoding/json`: map keys sorted as strings (so `"172.18.40.10"` precedes
//! `"172.18.40.9"`), compact output, and `None` (field absent) instead of an empty map.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::ip::{IpVersion, parse_ip, to_u128};
use crate::pool::PoolView;
use crate::range::{IpRange, IpSet, RangeError};

/// Default of `SPIDERPOOL_IPPOOL_MAX_ALLOCATED_IPS` / `ipPoolMaxAllocatedIPs`.
pub const DEFAULT_MAX_ALLOCATED_IPS: i64 = 5000;

/// Errors of the ledger encodings and steps.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LedgerError {
    #[error("failed to parse status.allocatedIPs of IPPool {pool}: {detail}")]
    InvalidAllocatedIps { pool: String, detail: String },
    #[error("failed to parse status.controlledIPPools of Subnet {subnet}: {detail}")]
    InvalidControlledIpPools { subnet: String, detail: String },
    #[error(
        "failed to update allocated IP because of data broken: IPPool {pool} IP {ip} allocation detail {{{recorded_pod} {recorded_uid}}} mistach namespacedName {pod}"
    )]
    ForeignRecord {
        pool: String,
        ip: String,
        recorded_pod: String,
        recorded_uid: String,
        pod: String,
    },
    /// A pod's stored address that may not be recorded again: no longer in the pool's
    /// `spec.ips` minus `excludeIPs`, or reserved.
    #[error("IP {ip} of IPPool {pool} cannot be recorded again for pod {pod}: {reason}")]
    NotAllocatable {
        pool: String,
        ip: String,
        pod: String,
        reason: String,
    },
}

impl LedgerError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LedgerError::InvalidAllocatedIps { .. }
            | LedgerError::InvalidControlledIpPools { .. } => "invalid_ledger",
            LedgerError::ForeignRecord { .. } => "foreign_ip_record",
            LedgerError::NotAllocatable { .. } => "stale_ip_record",
        }
    }
}

/// Errors of [`allocate`], with upstream's texts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllocateError {
    #[error("IPPool {pool} has no valid spec.ipVersion")]
    MissingIpVersion { pool: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("invalid IP record of IPPool {pool}: {source}")]
    InvalidRecord { pool: String, source: RangeError },
    #[error("invalid 'spec.excludeIPs' of IPPool {pool}: {source}")]
    InvalidExcludeIps { pool: String, source: RangeError },
    /// `constant.ErrIPUsedOut`.
    #[error("all IP addresses used out")]
    Exhausted { pool: String },
    #[error(
        "all IP addresses used out, threshold of IP records(<={max}) for IPPool {pool} exceeded"
    )]
    ThresholdExceeded { pool: String, max: i64 },
}

impl AllocateError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AllocateError::MissingIpVersion { .. }
            | AllocateError::InvalidRecord { .. }
            | AllocateError::InvalidExcludeIps { .. } => "invalid_pool",
            AllocateError::Ledger(error) => error.metric_label(),
            AllocateError::Exhausted { .. } => "ip_used_out",
            AllocateError::ThresholdExceeded { .. } => "ip_records_threshold",
        }
    }

    /// The pool the error is about, if any.
    pub fn pool(&self) -> Option<&str> {
        match self {
            AllocateError::MissingIpVersion { pool }
            | AllocateError::InvalidRecord { pool, .. }
            | AllocateError::InvalidExcludeIps { pool, .. }
            | AllocateError::Exhausted { pool }
            | AllocateError::ThresholdExceeded { pool, .. } => Some(pool),
            AllocateError::Ledger(_) => None,
        }
    }
}

/// One `status.allocatedIPs` record (`PoolIPAllocation`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolIpAllocation {
    /// `namespace/name` of the pod (or `namespace/<VMI name>` for KubeVirt static IPs).
    #[serde(rename = "pod", default)]
    pub pod: String,
    #[serde(rename = "podUid", default)]
    pub pod_uid: String,
}

impl PoolIpAllocation {
    pub fn new(pod: impl Into<String>, pod_uid: impl Into<String>) -> PoolIpAllocation {
        PoolIpAllocation {
            pod: pod.into(),
            pod_uid: pod_uid.into(),
        }
    }
}

/// The decoded `status.allocatedIPs`: bare IP -> record, keys in Go's sorted-string order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoolIpAllocations(pub BTreeMap<String, PoolIpAllocation>);

impl PoolIpAllocations {
    /// Decodes `status.allocatedIPs` (absent = empty). `pool` only names the pool in errors.
    pub fn parse(
        pool: &str,
        allocated_ips: Option<&str>,
    ) -> Result<PoolIpAllocations, LedgerError> {
        let Some(text) = allocated_ips else {
            return Ok(PoolIpAllocations::default());
        };
        let records: Option<BTreeMap<String, Option<PoolIpAllocation>>> =
            serde_json::from_str(text).map_err(|error| LedgerError::InvalidAllocatedIps {
                pool: pool.to_string(),
                detail: error.to_string(),
            })?;
        // Go decodes `null` (whole value or one record) to zero values.
        Ok(PoolIpAllocations(
            records
                .unwrap_or_default()
                .into_iter()
                .map(|(ip, record)| (ip, record.unwrap_or_default()))
                .collect(),
        ))
    }

    /// Encodes for `status.allocatedIPs`; `None` when there is no record.
    pub fn encode(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        serde_json::to_string(&self.0).ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, ip: &str) -> Option<&PoolIpAllocation> {
        self.0.get(ip)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &PoolIpAllocation)> {
        self.0.iter()
    }

    pub fn insert(&mut self, ip: String, record: PoolIpAllocation) {
        self.0.insert(ip, record);
    }

    /// The first record (in key order) held by this pod UID.
    pub fn find_by_uid(&self, pod_uid: &str) -> Option<(&str, &PoolIpAllocation)> {
        self.0
            .iter()
            .find(|(_, record)| record.pod_uid == pod_uid)
            .map(|(ip, record)| (ip.as_str(), record))
    }

    /// The recorded addresses as a set; an unparsable key is an error (like upstream).
    pub fn to_set(&self, version: IpVersion) -> Result<IpSet, RangeError> {
        let mut intervals = Vec::with_capacity(self.0.len());
        for ip in self.0.keys() {
            let address = parse_ip(version, ip).ok_or_else(|| RangeError::InvalidFormat {
                version,
                text: ip.clone(),
            })?;
            let value = to_u128(&address);
            intervals.push((value, value));
        }
        Ok(IpSet::from_intervals(version, intervals))
    }

    /// The status fields for this ledger.
    pub fn status(&self) -> PoolStatusUpdate {
        PoolStatusUpdate {
            allocated_ips: self.encode(),
            allocated_ip_count: i64::try_from(self.0.len()).unwrap_or(i64::MAX),
        }
    }
}

/// What to write to the pool status (`status.allocatedIPs`, `status.allocatedIPCount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatusUpdate {
    pub allocated_ips: Option<String>,
    pub allocated_ip_count: i64,
}

/// The outcome of [`allocate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    /// `None` when the pod already held an address in this pool (nothing to write).
    pub status: Option<PoolStatusUpdate>,
    /// The ledger after the allocation.
    pub records: PoolIpAllocations,
}

/// `genRandomIP`: picks the lowest free address of the pool for `owner`.
///
/// * A record with the owner's UID is returned as is (idempotent across NICs and retries).
/// * Unavailable = `excludeIPs` ∪ `reserved` ∪ recorded addresses. The first free address is found by
///   walking `spec.ips` in list order and each range ascending; unparsable or reversed items are
///   skipped (upstream's `FindAvailableIPs`), and a reversed exclude item is applied swapped.
/// * `allocatedIPCount` becomes the number of records after adding this one; more than
///   `max_allocated_ips` is an error.
pub fn allocate(
    pool: &PoolView,
    reserved: &IpSet,
    records: &PoolIpAllocations,
    owner: &PoolIpAllocation,
    max_allocated_ips: i64,
) -> Result<Allocation, AllocateError> {
    let mut next = records.clone();
    let (ip, created) = allocate_in_place(pool, reserved, &mut next, owner, max_allocated_ips)?;
    let status = created.then(|| PoolStatusUpdate {
        allocated_ips: next.encode(),
        allocated_ip_count: i64::try_from(next.len()).unwrap_or(i64::MAX),
    });
    Ok(Allocation {
        ip,
        status,
        records: next,
    })
}

/// [`allocate`] into `records` itself: the address, and whether a record was added (`false`
/// when the owner already held one). Nothing is copied or encoded, so a writer applying many
/// operations to one ledger pays for that once per write, not once per operation (10,000
/// records: 3.2 ms per operation with the copy and the encoding, see docs/benchmarks.md).
pub fn allocate_in_place(
    pool: &PoolView,
    reserved: &IpSet,
    records: &mut PoolIpAllocations,
    owner: &PoolIpAllocation,
    max_allocated_ips: i64,
) -> Result<(IpAddr, bool), AllocateError> {
    let version = pool
        .ip_version
        .ok_or_else(|| AllocateError::MissingIpVersion {
            pool: pool.name.clone(),
        })?;
    if let Some((ip, _)) = records.find_by_uid(&owner.pod_uid)
        && let Some(address) = parse_ip(version, ip)
    {
        return Ok((address, false));
    }
    let used = records
        .to_set(version)
        .map_err(|source| AllocateError::InvalidRecord {
            pool: pool.name.clone(),
            source,
        })?;
    let mut excluded = Vec::with_capacity(pool.exclude_ips.len());
    for item in &pool.exclude_ips {
        let range = IpRange::parse_unordered(version, item).map_err(|source| {
            AllocateError::InvalidExcludeIps {
                pool: pool.name.clone(),
                source,
            }
        })?;
        excluded.push(range);
    }
    let unavailable = IpSet::from_ip_ranges(version, &excluded)
        .union(reserved)
        .union(&used);
    let address = pool
        .ips
        .iter()
        .filter_map(|item| IpRange::parse(version, item).ok())
        .find_map(|range| unavailable.first_absent_in(&range))
        .ok_or_else(|| AllocateError::Exhausted {
            pool: pool.name.clone(),
        })?;
    let count = i64::try_from(records.len())
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    if count > max_allocated_ips {
        return Err(AllocateError::ThresholdExceeded {
            pool: pool.name.clone(),
            max: max_allocated_ips,
        });
    }
    records.insert(address.to_string(), owner.clone());
    Ok((address, true))
}

/// An address and the UID that must hold it for a release or a UID rewrite (`types.IPAndUID`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpAndUid {
    pub ip: String,
    pub uid: String,
}

impl IpAndUid {
    pub fn new(ip: impl Into<String>, uid: impl Into<String>) -> IpAndUid {
        IpAndUid {
            ip: ip.into(),
            uid: uid.into(),
        }
    }
}

/// `ReleaseIP`: removes every record whose address and UID both match. Returns `None` when nothing
/// matched (nothing to write), otherwise the new ledger and its status.
pub fn release(
    records: &PoolIpAllocations,
    releases: &[IpAndUid],
) -> Option<(PoolIpAllocations, PoolStatusUpdate)> {
    let mut next = records.clone();
    let mut released = false;
    for item in releases {
        if next
            .0
            .get(&item.ip)
            .is_some_and(|record| record.pod_uid == item.uid)
        {
            next.0.remove(&item.ip);
            released = true;
        }
    }
    released.then(|| {
        let status = next.status();
        (next, status)
    })
}

/// `UpdateAllocatedIPs` (StatefulSet / KubeVirt re-creation): rewrites the UID of the given records.
/// A record held by another pod name is an error; `None` when nothing changed.
pub fn update_allocated_uids(
    pool: &str,
    records: &PoolIpAllocations,
    pod: &str,
    updates: &[IpAndUid],
) -> Result<Option<(PoolIpAllocations, PoolStatusUpdate)>, LedgerError> {
    let mut next = records.clone();
    let mut changed = false;
    for item in updates {
        let Some(record) = next.0.get_mut(&item.ip) else {
            continue;
        };
        if record.pod != pod {
            return Err(LedgerError::ForeignRecord {
                pool: pool.to_string(),
                ip: item.ip.clone(),
                recorded_pod: record.pod.clone(),
                recorded_uid: record.pod_uid.clone(),
                pod: pod.to_string(),
            });
        }
        if record.pod_uid != item.uid {
            record.pod_uid = item.uid.clone();
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    // Upstream rewrites only allocatedIPs here; the count is unchanged.
    let status = PoolStatusUpdate {
        allocated_ips: next.encode(),
        allocated_ip_count: i64::try_from(next.len()).unwrap_or(i64::MAX),
    };
    Ok(Some((next, status)))
}

/// One `status.controlledIPPools` entry (`PoolIPPreAllocation`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolIpPreAllocation {
    /// Merged ranges. Go writes a nil slice (`null`) when empty; both decode to empty.
    #[serde(
        serialize_with = "serialize_ranges",
        deserialize_with = "deserialize_ranges",
        default
    )]
    pub ips: Vec<String>,
    /// Application key of an auto-created pool (`apps_v1_Deployment_default_nginx`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub application: Option<String>,
}

fn serialize_ranges<S: Serializer>(ranges: &[String], serializer: S) -> Result<S::Ok, S::Error> {
    if ranges.is_empty() {
        serializer.serialize_none()
    } else {
        ranges.serialize(serializer)
    }
}

fn deserialize_ranges<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

/// The decoded `status.controlledIPPools`: pool name -> pre-allocation, keys sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ControlledIpPools(pub BTreeMap<String, PoolIpPreAllocation>);

impl ControlledIpPools {
    /// Decodes `status.controlledIPPools` (absent = empty). `subnet` only names it in errors.
    pub fn parse(subnet: &str, controlled: Option<&str>) -> Result<ControlledIpPools, LedgerError> {
        let Some(text) = controlled else {
            return Ok(ControlledIpPools::default());
        };
        let pools: Option<BTreeMap<String, Option<PoolIpPreAllocation>>> =
            serde_json::from_str(text).map_err(|error| LedgerError::InvalidControlledIpPools {
                subnet: subnet.to_string(),
                detail: error.to_string(),
            })?;
        Ok(ControlledIpPools(
            pools
                .unwrap_or_default()
                .into_iter()
                .map(|(name, entry)| (name, entry.unwrap_or_default()))
                .collect(),
        ))
    }

    /// Encodes for `status.controlledIPPools`; `None` when empty.
    pub fn encode(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        serde_json::to_string(&self.0).ok()
    }

    /// The union of every entry's ranges (strictly parsed).
    pub fn union(&self, version: IpVersion) -> Result<IpSet, RangeError> {
        let mut all: Vec<&str> = Vec::new();
        for entry in self.0.values() {
            all.extend(entry.ips.iter().map(String::as_str));
        }
        IpSet::from_ranges(version, &all)
    }

    /// `status.allocatedIPCount` of the subnet: the sum of the entries' sizes.
    pub fn allocated_ip_count(&self, version: IpVersion) -> Result<i64, RangeError> {
        let mut total: i64 = 0;
        for entry in self.0.values() {
            let size = IpSet::from_ranges(version, &entry.ips)?.count_i64();
            total = total.saturating_add(size);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(ips: &[&str], exclude: &[&str]) -> PoolView {
        PoolView {
            ips: ips.iter().map(|item| item.to_string()).collect(),
            exclude_ips: exclude.iter().map(|item| item.to_string()).collect(),
            gateway: Some("172.18.40.1".into()),
            ..PoolView::new("pool-v4", IpVersion::V4, "172.18.40.0/24")
        }
    }

    fn owner(name: &str, uid: &str) -> PoolIpAllocation {
        PoolIpAllocation::new(format!("default/{name}"), uid)
    }

    fn empty_reserved() -> IpSet {
        IpSet::new(IpVersion::V4)
    }

    #[test]
    fn records_encode_with_go_string_key_order() {
        let mut records = PoolIpAllocations::default();
        records.insert(
            "172.18.40.9".into(),
            PoolIpAllocation::new("default/web-0", "2c4a-beef"),
        );
        records.insert(
            "172.18.40.10".into(),
            PoolIpAllocation::new("default/nginx-7d9c-x2l4q", "0b1e-f00d"),
        );
        assert_eq!(
            records.encode().unwrap(),
            r#"{"172.18.40.10":{"pod":"default/nginx-7d9c-x2l4q","podUid":"0b1e-f00d"},"172.18.40.9":{"pod":"default/web-0","podUid":"2c4a-beef"}}"#
        );
        assert_eq!(PoolIpAllocations::default().encode(), None);
        let parsed = PoolIpAllocations::parse("p", records.encode().as_deref()).unwrap();
        assert_eq!(parsed, records);
        assert_eq!(PoolIpAllocations::parse("p", None).unwrap().len(), 0);
        let broken = PoolIpAllocations::parse("p", Some("{")).unwrap_err();
        assert_eq!(broken.metric_label(), "invalid_ledger");
        assert!(
            broken
                .to_string()
                .starts_with("failed to parse status.allocatedIPs of IPPool p: ")
        );
    }

    // G75
    #[test]
    fn allocation_from_single_ip_pool_records_the_pod() {
        let allocation = allocate(
            &pool(&["172.18.40.40"], &[]),
            &empty_reserved(),
            &PoolIpAllocations::default(),
            &owner("pod", "uid-1"),
            DEFAULT_MAX_ALLOCATED_IPS,
        )
        .unwrap();
        assert_eq!(allocation.ip, "172.18.40.40".parse::<IpAddr>().unwrap());
        assert_eq!(
            allocation.status,
            Some(PoolStatusUpdate {
                allocated_ips: Some(
                    r#"{"172.18.40.40":{"pod":"default/pod","podUid":"uid-1"}}"#.into()
                ),
                allocated_ip_count: 1,
            })
        );
    }

    // G76
    #[test]
    fn allocation_is_idempotent_by_pod_uid() {
        let mut records = PoolIpAllocations::default();
        records.insert("172.18.40.40".into(), owner("pod", "uid-1"));
        let allocation = allocate(
            &pool(&["172.18.40.40"], &[]),
            &empty_reserved(),
            &records,
            &owner("pod", "uid-1"),
            DEFAULT_MAX_ALLOCATED_IPS,
        )
        .unwrap();
        assert_eq!(allocation.ip, "172.18.40.40".parse::<IpAddr>().unwrap());
        assert_eq!(allocation.status, None);
        assert_eq!(allocation.records, records);
    }

    // G16 through the allocation step
    #[test]
    fn allocation_picks_lowest_free_skipping_used_excluded_and_reserved() {
        let pool = pool(&["172.18.40.1-172.18.40.5"], &["172.18.40.1"]);
        let reserved = IpSet::from_ranges(IpVersion::V4, &["172.18.40.3"]).unwrap();
        let mut records = PoolIpAllocations::default();
        records.insert("172.18.40.2".into(), owner("a", "uid-a"));
        let first = allocate(&pool, &reserved, &records, &owner("b", "uid-b"), 5000).unwrap();
        assert_eq!(first.ip, "172.18.40.4".parse::<IpAddr>().unwrap());
        assert_eq!(first.status.as_ref().map(|s| s.allocated_ip_count), Some(2));
        let second =
            allocate(&pool, &reserved, &first.records, &owner("c", "uid-c"), 5000).unwrap();
        assert_eq!(second.ip, "172.18.40.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn allocation_walks_ranges_in_list_order() {
        let pool = pool(&["172.18.40.20-172.18.40.21", "172.18.40.10"], &[]);
        let allocation = allocate(
            &pool,
            &empty_reserved(),
            &PoolIpAllocations::default(),
            &owner("a", "uid-a"),
            5000,
        )
        .unwrap();
        assert_eq!(allocation.ip, "172.18.40.20".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn pool_without_free_ips_returns_exhausted() {
        let mut records = PoolIpAllocations::default();
        records.insert("172.18.40.40".into(), owner("other", "uid-other"));
        let error = allocate(
            &pool(&["172.18.40.40"], &[]),
            &empty_reserved(),
            &records,
            &owner("pod", "uid-1"),
            5000,
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "all IP addresses used out");
        assert_eq!(error.metric_label(), "ip_used_out");
    }

    #[test]
    fn exceeding_the_record_cap_returns_the_threshold_text() {
        let mut records = PoolIpAllocations::default();
        records.insert("172.18.40.40".into(), owner("other", "uid-other"));
        records.insert("172.18.40.41".into(), owner("other2", "uid-other2"));
        let error = allocate(
            &pool(&["172.18.40.40-172.18.40.50"], &[]),
            &empty_reserved(),
            &records,
            &owner("pod", "uid-1"),
            2,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "all IP addresses used out, threshold of IP records(<=2) for IPPool pool-v4 exceeded"
        );
        assert_eq!(error.metric_label(), "ip_records_threshold");
    }

    #[test]
    fn reversed_spec_range_is_skipped_without_panicking() {
        let error = allocate(
            &pool(&["172.18.40.20-172.18.40.10"], &[]),
            &empty_reserved(),
            &PoolIpAllocations::default(),
            &owner("pod", "uid-1"),
            5000,
        )
        .unwrap_err();
        assert!(matches!(error, AllocateError::Exhausted { .. }));
        let allocation = allocate(
            &pool(
                &["172.18.40.20-172.18.40.10", "172.18.40.30"],
                &["172.18.40.32-172.18.40.29"],
            ),
            &empty_reserved(),
            &PoolIpAllocations::default(),
            &owner("pod", "uid-1"),
            5000,
        );
        assert!(matches!(allocation, Err(AllocateError::Exhausted { .. })));
    }

    #[test]
    fn allocation_on_a_slash_8_with_many_records_is_immediate() {
        let mut records = PoolIpAllocations::default();
        for index in 0..4000u32 {
            let address = std::net::Ipv4Addr::from(0x0A00_0001 + index);
            records.insert(
                address.to_string(),
                owner(&format!("p{index}"), &format!("u{index}")),
            );
        }
        let pool = PoolView {
            ips: vec!["10.0.0.1-10.255.255.254".into()],
            ..PoolView::new("big", IpVersion::V4, "10.0.0.0/8")
        };
        let allocation = allocate(
            &pool,
            &IpSet::new(IpVersion::V4),
            &records,
            &owner("new", "uid-new"),
            5000,
        )
        .unwrap();
        assert_eq!(allocation.ip, "10.0.15.161".parse::<IpAddr>().unwrap());
        assert_eq!(allocation.status.map(|s| s.allocated_ip_count), Some(4001));
    }

    #[test]
    fn allocation_on_a_slash_64_ipv6_pool() {
        let pool = PoolView {
            ips: vec!["fd00::1-fd00::ffff:ffff:ffff:ffff".into()],
            exclude_ips: vec!["fd00::1-fd00::10".into()],
            ..PoolView::new("v6", IpVersion::V6, "fd00::/64")
        };
        let allocation = allocate(
            &pool,
            &IpSet::new(IpVersion::V6),
            &PoolIpAllocations::default(),
            &owner("pod", "uid"),
            5000,
        )
        .unwrap();
        assert_eq!(allocation.ip, "fd00::11".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn release_removes_only_matching_ip_and_uid() {
        let mut records = PoolIpAllocations::default();
        records.insert("172.18.40.40".into(), owner("a", "uid-a"));
        records.insert("172.18.40.41".into(), owner("b", "uid-b"));
        assert_eq!(
            release(&records, &[IpAndUid::new("172.18.40.40", "other")]),
            None
        );
        let (next, status) = release(&records, &[IpAndUid::new("172.18.40.40", "uid-a")]).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(status.allocated_ip_count, 1);
        let (_, status) = release(&next, &[IpAndUid::new("172.18.40.41", "uid-b")]).unwrap();
        assert_eq!(
            status,
            PoolStatusUpdate {
                allocated_ips: None,
                allocated_ip_count: 0
            }
        );
    }

    #[test]
    fn uid_rewrite_refuses_records_of_another_pod() {
        let mut records = PoolIpAllocations::default();
        records.insert("172.18.40.40".into(), owner("web-0", "old"));
        let (next, _) = update_allocated_uids(
            "pool",
            &records,
            "default/web-0",
            &[IpAndUid::new("172.18.40.40", "new")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            next.get("172.18.40.40").map(|r| r.pod_uid.as_str()),
            Some("new")
        );
        let error = update_allocated_uids(
            "pool",
            &records,
            "default/web-1",
            &[IpAndUid::new("172.18.40.40", "new")],
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "failed to update allocated IP because of data broken: IPPool pool IP 172.18.40.40 allocation detail {default/web-0 old} mistach namespacedName default/web-1"
        );
    }

    #[test]
    fn controlled_ip_pools_encode_like_upstream() {
        let mut pools = ControlledIpPools::default();
        pools.0.insert(
            "manual-pool".into(),
            PoolIpPreAllocation {
                ips: vec!["10.6.0.10-10.6.0.20".into()],
                application: None,
            },
        );
        pools.0.insert(
            "auto4-nginx-eth0-9a2b3".into(),
            PoolIpPreAllocation {
                ips: vec!["10.6.168.101-10.6.168.103".into()],
                application: Some("apps_v1_Deployment_default_nginx".into()),
            },
        );
        let encoded = pools.encode().unwrap();
        assert_eq!(
            encoded,
            r#"{"auto4-nginx-eth0-9a2b3":{"ips":["10.6.168.101-10.6.168.103"],"application":"apps_v1_Deployment_default_nginx"},"manual-pool":{"ips":["10.6.0.10-10.6.0.20"]}}"#
        );
        assert_eq!(
            ControlledIpPools::parse("s", Some(&encoded)).unwrap(),
            pools
        );
        assert_eq!(pools.allocated_ip_count(IpVersion::V4).unwrap(), 14);
        assert_eq!(ControlledIpPools::default().encode(), None);
        let scaled_to_zero = ControlledIpPools(BTreeMap::from([(
            "p".to_string(),
            PoolIpPreAllocation {
                ips: vec![],
                application: Some("a".into()),
            },
        )]));
        assert_eq!(
            scaled_to_zero.encode().unwrap(),
            r#"{"p":{"ips":null,"application":"a"}}"#
        );
        let parsed = ControlledIpPools::parse("s", Some(r#"{"p":{"ips":null}}"#)).unwrap();
        assert!(parsed.0["p"].ips.is_empty());
    }
}
