//! The effective addresses of a pool or subnet: `spec.ips` minus `spec.excludeIPs` inside
//! `spec.subnet`, checked the way upstream's `NewCIDR` (`pkg/ip/subnet.go`) checks them.
//!
//! The IPPool / Subnet webhooks use this for the "available IPs" rule (§1.1.5 step 3a) and the
//! controllers for `status.totalIPCount`. Every check and message is upstream's: each item must be an
//! address or `A-B` of addresses inside the subnet, included ranges must not overlap (ranges that touch
//! at one address count as overlapping), a reversed included range is silently swapped, and the
//! exclusion is applied range by range in list order. The result keeps, for every remaining piece, the
//! raw `spec.ips` item it came from, because the cross-pool overlap message lists those raw items.

use thiserror::Error;

use crate::cidr::{Cidr, CidrError};
use crate::ip::{IpVersion, from_u128, parse_any_ip, to_u128};
use crate::range::IpSet;

/// The error texts of `NewCIDR`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolIpsError {
    #[error(transparent)]
    Subnet(#[from] CidrError),
    #[error("invalid range: {0}")]
    InvalidRange(String),
    #[error("invalid IP address: {0}")]
    InvalidAddress(String),
    #[error("not match base subnet: {0}")]
    OutsideSubnet(String),
    #[error("range {range} is already covered by {other}")]
    AlreadyCovered { range: String, other: String },
    #[error("range {range} covers {other}")]
    Covers { range: String, other: String },
    #[error("range {range} overlaps with {other}")]
    Overlaps { range: String, other: String },
    /// Only with [`ReversedRanges::Reject`] (deliberate difference #7).
    #[error(
        "range {range} is reversed: the first address {first} is greater than the last address {last}, write it as '{last}-{first}'"
    )]
    Reversed {
        range: String,
        first: String,
        last: String,
    },
}

impl PoolIpsError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PoolIpsError::Subnet(error) => error.metric_label(),
            PoolIpsError::InvalidRange(_) | PoolIpsError::InvalidAddress(_) => "invalid_ip_range",
            PoolIpsError::OutsideSubnet(_) => "ip_outside_subnet",
            PoolIpsError::AlreadyCovered { .. }
            | PoolIpsError::Covers { .. }
            | PoolIpsError::Overlaps { .. } => "overlapping_ip_ranges",
            PoolIpsError::Reversed { .. } => "reversed_ip_range",
        }
    }
}

/// One piece of the effective addresses and the raw `spec.ips` item it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRange {
    pub raw: String,
    pub start: u128,
    pub end: u128,
}

impl RawRange {
    fn len(&self) -> u128 {
        if self.start > self.end {
            // Only reachable through a reversed exclude range, which upstream handles the same way.
            return 0;
        }
        (self.end - self.start).saturating_add(1)
    }
}

/// What to do with an `A-B` item where `A > B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversedRanges {
    /// Upstream: an included range is swapped, an excluded one applied as written. Use this to
    /// compute `totalIPCount` of stored objects.
    Swap,
    /// Deliberate difference #7: refuse it with [`PoolIpsError::Reversed`] (the webhooks).
    Reject,
}

/// `NewCIDR(subnet, ips, excludeIPs)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolIps {
    subnet: Cidr,
    ranges: Vec<RawRange>,
}

impl PoolIps {
    /// Validates and computes the effective addresses with upstream's handling of reversed ranges.
    pub fn new<S: AsRef<str>, E: AsRef<str>>(
        subnet: &str,
        ips: &[S],
        exclude_ips: &[E],
    ) -> Result<PoolIps, PoolIpsError> {
        PoolIps::new_with(subnet, ips, exclude_ips, ReversedRanges::Swap)
    }

    /// Validates and computes the effective addresses.
    pub fn new_with<S: AsRef<str>, E: AsRef<str>>(
        subnet: &str,
        ips: &[S],
        exclude_ips: &[E],
        reversed: ReversedRanges,
    ) -> Result<PoolIps, PoolIpsError> {
        let subnet = Cidr::parse_any(subnet)?;
        let check = |item: &str, start: u128, end: u128| -> Result<(), PoolIpsError> {
            if reversed == ReversedRanges::Reject && start > end {
                return Err(PoolIpsError::Reversed {
                    range: item.to_string(),
                    first: from_u128(subnet.version(), start).to_string(),
                    last: from_u128(subnet.version(), end).to_string(),
                });
            }
            Ok(())
        };
        let mut ranges: Vec<RawRange> = Vec::new();
        for item in ips {
            let item = item.as_ref();
            let (start, end) = parse_item(&subnet, item)?;
            check(item, start, end)?;
            let (start, end) = if start > end {
                (end, start)
            } else {
                (start, end)
            };
            check_overlap(&ranges, item, start, end)?;
            ranges.push(RawRange {
                raw: item.to_string(),
                start,
                end,
            });
        }
        let mut excluded = Vec::new();
        for item in exclude_ips {
            let (start, end) = parse_item(&subnet, item.as_ref())?;
            check(item.as_ref(), start, end)?;
            excluded.push((start, end));
        }
        for (exclude_start, exclude_end) in excluded {
            ranges = remove_range(ranges, exclude_start, exclude_end);
        }
        Ok(PoolIps { subnet, ranges })
    }

    pub fn subnet(&self) -> &Cidr {
        &self.subnet
    }

    pub fn version(&self) -> IpVersion {
        self.subnet.version()
    }

    /// The remaining pieces in upstream order (list order, split pieces in ascending order).
    pub fn ranges(&self) -> &[RawRange] {
        &self.ranges
    }

    /// `TotalIP`.
    pub fn total(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |total, range| total.saturating_add(range.len()))
    }

    /// `TotalIPInt`: the count clamped to `i64::MAX` (`status.totalIPCount`).
    pub fn total_ip_count(&self) -> i64 {
        i64::try_from(self.total()).unwrap_or(i64::MAX)
    }

    /// The effective addresses as a set.
    pub fn to_set(&self) -> IpSet {
        let intervals = self
            .ranges
            .iter()
            .map(|range| (range.start, range.end))
            .collect();
        IpSet::from_intervals(self.version(), intervals)
    }

    /// `IsOverlapIPRanges`: for every own piece and every other piece that share an address, the
    /// other piece's raw item (duplicates kept, like upstream).
    pub fn overlapping_raw_ranges(&self, other: &[RawRange]) -> Vec<String> {
        let mut overlaps = Vec::new();
        for own in &self.ranges {
            for theirs in other {
                let touches = |value: u128, low: u128, high: u128| low <= value && value <= high;
                if touches(own.start, theirs.start, theirs.end)
                    || touches(own.end, theirs.start, theirs.end)
                    || touches(theirs.start, own.start, own.end)
                    || touches(theirs.end, own.start, own.end)
                {
                    overlaps.push(theirs.raw.clone());
                }
            }
        }
        overlaps
    }
}

/// `AssembleTotalIPs`: the effective addresses of `ips` minus `exclude` inside `subnet`, with
/// every check of [`PoolIps::new`] (the webhooks judge specs with this).
pub fn total_ips<S: AsRef<str>, E: AsRef<str>>(
    subnet: &str,
    ips: &[S],
    exclude: &[E],
) -> Result<IpSet, PoolIpsError> {
    PoolIps::new(subnet, ips, exclude).map(|pool_ips| pool_ips.to_set())
}

/// The addresses a stored pool or subnet counts (controllers, metrics, auto pools):
/// [`total_ips`], or, for an object the checks refuse (written without the webhook), its items
/// united instead of refused and cut to the subnet. `None` when the subnet or an item does not
/// parse.
pub fn counted_ips<S: AsRef<str>, E: AsRef<str>>(
    subnet: &str,
    ips: &[S],
    exclude: &[E],
) -> Option<IpSet> {
    if let Ok(total) = total_ips(subnet, ips, exclude) {
        return Some(total);
    }
    let cidr = Cidr::parse_any(subnet).ok()?;
    let version = cidr.version();
    let included = IpSet::from_ranges(version, ips).ok()?;
    let excluded = IpSet::from_ranges(version, exclude).ok()?;
    let inside = IpSet::from_ip_ranges(version, &[cidr.as_range()]);
    Some(included.subtract(&excluded).intersect(&inside))
}

fn parse_item(subnet: &Cidr, item: &str) -> Result<(u128, u128), PoolIpsError> {
    let parts: Vec<&str> = item.split('-').collect();
    match parts.as_slice() {
        [single] => {
            if single.contains('/') {
                return Err(PoolIpsError::InvalidRange(item.to_string()));
            }
            let value = parse_address(subnet, single)?;
            Ok((value, value))
        }
        [first, last] => Ok((parse_address(subnet, first)?, parse_address(subnet, last)?)),
        _ => Err(PoolIpsError::InvalidRange(item.to_string())),
    }
}

fn parse_address(subnet: &Cidr, text: &str) -> Result<u128, PoolIpsError> {
    let address =
        parse_any_ip(text).ok_or_else(|| PoolIpsError::InvalidAddress(text.to_string()))?;
    if !subnet.contains_ip(&address) {
        return Err(PoolIpsError::OutsideSubnet(text.to_string()));
    }
    Ok(to_u128(&address))
}

fn check_overlap(
    existing: &[RawRange],
    item: &str,
    start: u128,
    end: u128,
) -> Result<(), PoolIpsError> {
    for other in existing {
        let pair = || (item.to_string(), other.raw.clone());
        if start >= other.start && end <= other.end {
            let (range, other) = pair();
            return Err(PoolIpsError::AlreadyCovered { range, other });
        }
        if start <= other.start && end >= other.end {
            let (range, other) = pair();
            return Err(PoolIpsError::Covers { range, other });
        }
        if (start >= other.start && start <= other.end) || (end >= other.start && end <= other.end)
        {
            let (range, other) = pair();
            return Err(PoolIpsError::Overlaps { range, other });
        }
    }
    Ok(())
}

/// `removeExcludeIPRange` for one exclude range, with upstream's arithmetic (a reversed exclude range
/// is applied as written, exactly like upstream).
fn remove_range(base: Vec<RawRange>, exclude_start: u128, exclude_end: u128) -> Vec<RawRange> {
    let mut result = Vec::with_capacity(base.len() + 1);
    for range in base {
        if range.start > exclude_end || range.end < exclude_start {
            result.push(range);
            continue;
        }
        if range.start < exclude_start {
            result.push(RawRange {
                raw: range.raw.clone(),
                start: range.start,
                end: exclude_start - 1,
            });
        }
        if range.end > exclude_end {
            result.push(RawRange {
                raw: range.raw.clone(),
                start: exclude_end + 1,
                end: range.end,
            });
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_ips_unite_overlapping_items_instead_of_refusing_them() {
        let items = ["10.0.0.1-10.0.0.5", "10.0.0.3-10.0.0.8"];
        assert!(total_ips("10.0.0.0/24", &items, &["10.0.0.2"]).is_err());
        let set = counted_ips("10.0.0.0/24", &items, &["10.0.0.2"]).unwrap();
        assert_eq!(
            set.to_range_strings(),
            vec!["10.0.0.1", "10.0.0.3-10.0.0.8"]
        );
        assert!(counted_ips("10.0.0.0/24", &["garbage"], &[] as &[&str]).is_none());
    }

    fn strings(ranges: &[RawRange], version: IpVersion) -> Vec<String> {
        ranges
            .iter()
            .map(|range| {
                format!(
                    "{}-{}",
                    from_u128(version, range.start),
                    from_u128(version, range.end)
                )
            })
            .collect()
    }

    // G12
    #[test]
    fn new_cidr_subtracts_excludes_range_by_range() {
        let pool = PoolIps::new(
            "10.6.0.0/24",
            &[
                "10.6.0.1-10.6.0.10",
                "10.6.0.11-10.6.0.20",
                "10.6.0.21-10.6.0.30",
            ],
            &["10.6.0.1-10.6.0.2", "10.6.0.8-10.6.0.22"],
        )
        .unwrap();
        assert_eq!(pool.total_ip_count(), 13);
        assert_eq!(
            strings(pool.ranges(), IpVersion::V4),
            vec!["10.6.0.3-10.6.0.7", "10.6.0.23-10.6.0.30"]
        );
    }

    // G13
    #[test]
    fn new_cidr_rejects_overlaps_outside_addresses_and_bad_syntax() {
        let cases: [(&str, Vec<&str>, &str); 6] = [
            (
                "10.6.0.0/24",
                vec!["10.6.0.1-10.6.0.10", "10.6.0.10-10.6.0.20"],
                "range 10.6.0.10-10.6.0.20 overlaps with 10.6.0.1-10.6.0.10",
            ),
            (
                "10.6.0.0/24",
                vec!["10.6.0.1-10.6.0.10", "10.6.0.3"],
                "range 10.6.0.3 is already covered by 10.6.0.1-10.6.0.10",
            ),
            (
                "10.6.0.0/24",
                vec!["10.5.0.1"],
                "not match base subnet: 10.5.0.1",
            ),
            (
                "10.6.0.0/33",
                vec!["10.6.0.1"],
                "invalid CIDR address: 10.6.0.0/33",
            ),
            ("10.6.0.0/24", vec!["10.6.0.1-"], "invalid IP address: "),
            (
                "10.6.0.0/24",
                vec!["10.6.0.1-10.6.0.300"],
                "invalid IP address: 10.6.0.300",
            ),
        ];
        for (subnet, ips, message) in cases {
            let error = PoolIps::new(subnet, &ips, &[] as &[&str]).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
        let covers = PoolIps::new(
            "10.6.0.0/24",
            &["10.6.0.3", "10.6.0.1-10.6.0.10"],
            &[] as &[&str],
        );
        assert_eq!(
            covers.unwrap_err().to_string(),
            "range 10.6.0.1-10.6.0.10 covers 10.6.0.3"
        );
        let slash = PoolIps::new("10.6.0.0/24", &["10.6.0.0/25"], &[] as &[&str]);
        assert_eq!(slash.unwrap_err().to_string(), "invalid range: 10.6.0.0/25");
        let wrong_family = PoolIps::new("10.6.0.0/24", &["fd00::1"], &[] as &[&str]);
        assert_eq!(
            wrong_family.unwrap_err().metric_label(),
            "ip_outside_subnet"
        );
    }

    // G14
    #[test]
    fn new_cidr_on_a_slash_64_clamps_and_reports_overlap() {
        let pool = PoolIps::new(
            "fd12:3456:789a:baba::/64",
            &["fd12:3456:789a:baba::1-fd12:3456:789a:baba:ffff:ffff:ffff:ffff"],
            &["fd12:3456:789a:baba::1-fd12:3456:789a:baba::10"],
        )
        .unwrap();
        assert_eq!(pool.total_ip_count(), 9223372036854775807);
        assert_eq!(
            strings(pool.ranges(), IpVersion::V6),
            vec!["fd12:3456:789a:baba::11-fd12:3456:789a:baba:ffff:ffff:ffff:ffff"]
        );
        let other = PoolIps::new(
            "fd12:3456:789a:baba::/64",
            &["fd12:3456:789a:baba::11-fd12:3456:789a:baba::12"],
            &[] as &[&str],
        )
        .unwrap();
        assert_eq!(
            pool.overlapping_raw_ranges(other.ranges()),
            vec!["fd12:3456:789a:baba::11-fd12:3456:789a:baba::12"]
        );
    }

    // G15
    #[test]
    fn new_cidr_uses_hex_arithmetic_for_ipv6() {
        let pool = PoolIps::new("fd00::/64", &["fd00::1-fd00::10"], &["fd00::1-fd00::2"]).unwrap();
        assert_eq!(pool.total_ip_count(), 14);
        assert_eq!(
            strings(pool.ranges(), IpVersion::V6),
            vec!["fd00::3-fd00::10"]
        );
    }

    #[test]
    fn reversed_include_range_is_swapped_for_the_total() {
        let pool = PoolIps::new("10.6.0.0/24", &["10.6.0.10-10.6.0.1"], &[] as &[&str]).unwrap();
        assert_eq!(pool.total_ip_count(), 10);
        assert_eq!(pool.to_set().to_range_strings(), vec!["10.6.0.1-10.6.0.10"]);
    }

    #[test]
    fn reversed_ranges_can_be_rejected_for_the_webhook() {
        let error = PoolIps::new_with(
            "10.6.0.0/24",
            &["10.6.0.10-10.6.0.1"],
            &[] as &[&str],
            ReversedRanges::Reject,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "range 10.6.0.10-10.6.0.1 is reversed: the first address 10.6.0.10 is greater than the last address 10.6.0.1, write it as '10.6.0.1-10.6.0.10'"
        );
        assert_eq!(error.metric_label(), "reversed_ip_range");
        let exclude = PoolIps::new_with(
            "10.6.0.0/24",
            &["10.6.0.1-10.6.0.10"],
            &["10.6.0.6-10.6.0.4"],
            ReversedRanges::Reject,
        );
        assert!(matches!(exclude, Err(PoolIpsError::Reversed { .. })));
    }

    // G83 (the pure part: subnet containment, gateway outside ips, routes)
    #[test]
    fn pool_fully_inside_its_controller_subnet_is_accepted() {
        let subnet = PoolIps::new(
            "172.18.40.0/24",
            &["172.18.40.2-172.18.40.3", "172.18.40.10"],
            &[] as &[&str],
        )
        .unwrap();
        let pool = PoolIps::new(
            "172.18.40.0/24",
            &["172.18.40.2-172.18.40.3", "172.18.40.10"],
            &["172.18.40.10"],
        )
        .unwrap();
        assert!(pool.to_set().subtract(&subnet.to_set()).is_empty());
        let gateway: std::net::IpAddr = "172.18.40.1".parse().unwrap();
        assert!(!pool.to_set().contains(&gateway));
        let routes = [crate::routes::Route::new("192.168.40.0/24", "172.18.40.40")];
        assert!(
            crate::routes::validate_pool_routes(IpVersion::V4, "172.18.40.0/24", &routes).is_ok()
        );
    }

    // G84 (the pure part; the missing-subnet case is an API lookup of the webhook)
    #[test]
    fn pool_addresses_outside_the_controller_subnet_are_listed_as_ranges() {
        let subnet = PoolIps::new(
            "172.18.40.0/24",
            &["172.18.40.1-172.18.40.2", "172.18.40.10"],
            &[] as &[&str],
        )
        .unwrap();
        let pool = PoolIps::new(
            "172.18.40.0/24",
            &["172.18.40.1-172.18.40.2", "172.18.40.40"],
            &[] as &[&str],
        )
        .unwrap();
        assert_eq!(
            pool.to_set().subtract(&subnet.to_set()).to_range_strings(),
            vec!["172.18.40.40"]
        );
    }

    #[test]
    fn reversed_exclude_range_never_panics() {
        let pool = PoolIps::new(
            "10.6.0.0/24",
            &["10.6.0.1-10.6.0.10"],
            &["10.6.0.6-10.6.0.4"],
        );
        assert!(pool.is_ok());
        let edge = PoolIps::new(
            "0.0.0.0/0",
            &["0.0.0.0-255.255.255.255"],
            &["255.255.255.255-0.0.0.0"],
        );
        assert!(edge.is_ok());
    }
}
