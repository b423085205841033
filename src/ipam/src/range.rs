//! IP ranges (`A` or `A-B`) and sets of addresses stored as sorted, disjoint intervals.
//!
//! This is the arithmetic behind `spec.ips`, `spec.excludeIPs`, reserved IPs, the subnet's
//! `controlledIPPools` and the pool ledger. Upstream (`pkg/ip/iprange.go`) expands every range into a
//! slice of addresses; here nothing is materialised, so a `/8` IPv4 or `/64` IPv6 pool costs the same
//! as a `/30`. Parsing follows `IsIPv4IPRange` / `IsIPv6IPRange` with the upstream error texts, and
//! [`IpSet::to_range_strings`] reproduces `MergeIPRanges` output exactly (singletons bare, runs as
//! `first-last`, IPv6 in RFC 5952 form).
//!
//! A reversed range (`B-A`) is rejected by [`IpRange::parse`] with a specific message (our deliberate
//! difference from upstream, which admits a single reversed range); [`IpRange::parse_unordered`]
//! swaps it instead, which is what upstream's `NewCIDR` does when counting `totalIPCount`.

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

use crate::ip::{IpVersion, format_ip, from_u128, parse_ip, to_u128};

/// Errors of range parsing and conversion.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RangeError {
    /// A numeric IP version other than 4 or 6 (`ErrInvalidIPVersion`).
    #[error("invalid IP version '{0}'")]
    InvalidVersion(i64),
    /// Not `A` or `A-B` with valid addresses of the family (`ErrInvalidIPRangeFormat`).
    #[error("invalid IP range format in IPv{version} '{text}'")]
    InvalidFormat { version: IpVersion, text: String },
    /// `A-B` with `A > B`.
    #[error(
        "invalid IP range format in IPv{version} '{text}': the first address {first} is greater than the last address {last}, write it as '{last}-{first}'"
    )]
    Reversed {
        version: IpVersion,
        text: String,
        first: String,
        last: String,
    },
    /// An address of the wrong family handed to a conversion (`ErrInvalidIP`).
    #[error("invalid IPv{version} IP '{address}'")]
    WrongFamily { version: IpVersion, address: String },
}

impl RangeError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RangeError::InvalidVersion(_) => "invalid_ip_version",
            RangeError::InvalidFormat { .. } => "invalid_ip_range",
            RangeError::Reversed { .. } => "reversed_ip_range",
            RangeError::WrongFamily { .. } => "invalid_ip",
        }
    }
}

/// Converts the numeric `spec.ipVersion` (`IsIPVersion`).
pub fn ip_version(number: i64) -> Result<IpVersion, RangeError> {
    IpVersion::from_number(number).ok_or(RangeError::InvalidVersion(number))
}

/// An inclusive range of addresses of one family. `start <= end` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    version: IpVersion,
    start: u128,
    end: u128,
}

impl IpRange {
    /// Parses `A` or `A-B` strictly: no spaces, both addresses of `version`, `A <= B`.
    pub fn parse(version: IpVersion, text: &str) -> Result<IpRange, RangeError> {
        let (start, end) = Self::parse_bounds(version, text)?;
        if start > end {
            return Err(RangeError::Reversed {
                version,
                text: text.to_string(),
                first: format_ip(version, start),
                last: format_ip(version, end),
            });
        }
        Ok(IpRange {
            version,
            start,
            end,
        })
    }

    /// Parses like [`IpRange::parse`] but accepts a reversed range by swapping its ends (the
    /// behaviour of upstream's `NewCIDR`, used for `totalIPCount`).
    pub fn parse_unordered(version: IpVersion, text: &str) -> Result<IpRange, RangeError> {
        let (start, end) = Self::parse_bounds(version, text)?;
        Ok(IpRange {
            version,
            start: start.min(end),
            end: start.max(end),
        })
    }

    fn parse_bounds(version: IpVersion, text: &str) -> Result<(u128, u128), RangeError> {
        let invalid = || RangeError::InvalidFormat {
            version,
            text: text.to_string(),
        };
        let mut parts = text.split('-');
        let first = parts.next().ok_or_else(invalid)?;
        let second = parts.next();
        if parts.next().is_some() {
            return Err(invalid());
        }
        let start = parse_ip(version, first).ok_or_else(invalid)?;
        let end = match second {
            Some(second) => parse_ip(version, second).ok_or_else(invalid)?,
            None => start,
        };
        Ok((to_u128(&start), to_u128(&end)))
    }

    /// A range from integer bounds; `None` when `start > end` or a bound exceeds the family.
    pub fn new(version: IpVersion, start: u128, end: u128) -> Option<IpRange> {
        (start <= end && end <= version.max_value()).then_some(IpRange {
            version,
            start,
            end,
        })
    }

    /// A range holding one address.
    pub fn single(address: IpAddr) -> IpRange {
        let value = to_u128(&address);
        IpRange {
            version: IpVersion::of(&address),
            start: value,
            end: value,
        }
    }

    pub fn version(&self) -> IpVersion {
        self.version
    }

    /// First address as an integer.
    pub fn start(&self) -> u128 {
        self.start
    }

    /// Last address as an integer.
    pub fn end(&self) -> u128 {
        self.end
    }

    pub fn first_ip(&self) -> IpAddr {
        from_u128(self.version, self.start)
    }

    pub fn last_ip(&self) -> IpAddr {
        from_u128(self.version, self.end)
    }

    /// Number of addresses, saturating at `u128::MAX` for the whole IPv6 space.
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `IPRangeContainsIP`.
    pub fn contains(&self, address: &IpAddr) -> bool {
        IpVersion::of(address) == self.version && {
            let value = to_u128(address);
            self.start <= value && value <= self.end
        }
    }

    /// `IsIPRangeOverlap`: the ranges share at least one address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.version == other.version && self.start <= other.end && other.start <= self.end
    }

    /// The addresses in ascending order (lazy; take only what you need).
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let version = self.version;
        let mut next = Some(self.start);
        let end = self.end;
        std::iter::from_fn(move || {
            let current = next?;
            next = if current < end {
                Some(current + 1)
            } else {
                None
            };
            Some(from_u128(version, current))
        })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(formatter, "{}", format_ip(self.version, self.start))
        } else {
            write!(
                formatter,
                "{}-{}",
                format_ip(self.version, self.start),
                format_ip(self.version, self.end)
            )
        }
    }
}

/// The family of a valid range (how the ReservedIP webhook derives `spec.ipVersion` from `ips[0]`).
pub fn range_ip_version(text: &str) -> Option<IpVersion> {
    [IpVersion::V4, IpVersion::V6]
        .into_iter()
        .find(|version| IpRange::parse(*version, text).is_ok())
}

/// `ParseIPRanges` without expansion: every item parsed strictly, input order kept.
pub fn parse_ip_ranges<S: AsRef<str>>(
    version: IpVersion,
    ranges: &[S],
) -> Result<Vec<IpRange>, RangeError> {
    ranges
        .iter()
        .map(|text| IpRange::parse(version, text.as_ref()))
        .collect()
}

/// `MergeIPRanges`: the distinct addresses of all ranges, sorted and re-compressed.
pub fn merge_ip_ranges<S: AsRef<str>>(
    version: IpVersion,
    ranges: &[S],
) -> Result<Vec<String>, RangeError> {
    Ok(IpSet::from_ranges(version, ranges)?.to_range_strings())
}

/// `ConvertIPsToIPRanges`: distinct, sorted, merged ranges of a list of addresses.
pub fn ips_to_ranges(version: IpVersion, addresses: &[IpAddr]) -> Result<Vec<String>, RangeError> {
    let mut intervals = Vec::with_capacity(addresses.len());
    for address in addresses {
        let normalised = match (version, address) {
            (IpVersion::V4, IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4),
            (IpVersion::V6, IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => None,
            (IpVersion::V6, IpAddr::V4(_)) => None,
            _ => Some(*address),
        };
        let Some(normalised) = normalised else {
            return Err(RangeError::WrongFamily {
                version,
                address: address.to_string(),
            });
        };
        let value = to_u128(&normalised);
        intervals.push((value, value));
    }
    Ok(IpSet::from_intervals(version, intervals).to_range_strings())
}

/// `FindAvailableIPs`: up to `count` addresses that are not `used`, walking `ranges` in list order and
/// each range ascending. Ranges of either family may be mixed; unparsable, mixed-family or reversed
/// items are skipped, like upstream.
pub fn find_available_ips<S: AsRef<str>>(
    ranges: &[S],
    used: &[IpAddr],
    count: usize,
) -> Vec<IpAddr> {
    let used_v4 = IpSet::from_ips(IpVersion::V4, used);
    let used_v6 = IpSet::from_ips(IpVersion::V6, used);
    let mut found = Vec::new();
    for text in ranges {
        if found.len() >= count {
            break;
        }
        let text = text.as_ref();
        let version = if text
            .split('-')
            .next()
            .is_some_and(|first| first.contains(':'))
        {
            IpVersion::V6
        } else {
            IpVersion::V4
        };
        let Ok(range) = IpRange::parse(version, text) else {
            continue;
        };
        let used = match version {
            IpVersion::V4 => &used_v4,
            IpVersion::V6 => &used_v6,
        };
        let mut cursor = range;
        while found.len() < count {
            let Some(address) = used.first_absent_in(&cursor) else {
                break;
            };
            found.push(address);
            let next = to_u128(&address);
            match next
                .checked_add(1)
                .and_then(|start| IpRange::new(version, start, range.end))
            {
                Some(rest) => cursor = rest,
                None => break,
            }
        }
    }
    found
}

/// A set of addresses of one family: sorted, disjoint, non-adjacent inclusive intervals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpSet {
    version: IpVersion,
    intervals: Vec<(u128, u128)>,
}

impl IpSet {
    /// The empty set.
    pub fn new(version: IpVersion) -> IpSet {
        IpSet {
            version,
            intervals: Vec::new(),
        }
    }

    /// The union of strictly parsed ranges.
    pub fn from_ranges<S: AsRef<str>>(
        version: IpVersion,
        ranges: &[S],
    ) -> Result<IpSet, RangeError> {
        let mut intervals = Vec::with_capacity(ranges.len());
        for text in ranges {
            let range = IpRange::parse(version, text.as_ref())?;
            intervals.push((range.start, range.end));
        }
        Ok(IpSet::from_intervals(version, intervals))
    }

    /// The union of already parsed ranges (ranges of another family are ignored).
    pub fn from_ip_ranges<'a, I: IntoIterator<Item = &'a IpRange>>(
        version: IpVersion,
        ranges: I,
    ) -> IpSet {
        let intervals = ranges
            .into_iter()
            .filter(|range| range.version == version)
            .map(|range| (range.start, range.end))
            .collect();
        IpSet::from_intervals(version, intervals)
    }

    /// The set of the given addresses (addresses of another family are ignored).
    pub fn from_ips<'a, I: IntoIterator<Item = &'a IpAddr>>(
        version: IpVersion,
        addresses: I,
    ) -> IpSet {
        let intervals = addresses
            .into_iter()
            .filter(|address| IpVersion::of(address) == version)
            .map(|address| {
                let value = to_u128(address);
                (value, value)
            })
            .collect();
        IpSet::from_intervals(version, intervals)
    }

    /// Normalises arbitrary inclusive intervals (any order, overlapping, reversed bounds skipped).
    pub(crate) fn from_intervals(version: IpVersion, mut intervals: Vec<(u128, u128)>) -> IpSet {
        let max = version.max_value();
        intervals.retain(|(start, end)| start <= end && *end <= max);
        intervals.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(intervals.len());
        for (start, end) in intervals {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => {
                    if end > last.1 {
                        last.1 = end;
                    }
                }
                _ => merged.push((start, end)),
            }
        }
        IpSet {
            version,
            intervals: merged,
        }
    }

    pub fn version(&self) -> IpVersion {
        self.version
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Adds a range (of the set's family; other families are ignored).
    pub fn insert(&mut self, range: IpRange) {
        if range.version != self.version {
            return;
        }
        let start = range.start;
        let end = range.end;
        // First interval that is not entirely before (and not adjacent to) the new one.
        let first = self
            .intervals
            .partition_point(|interval| interval.1.saturating_add(1) < start);
        let mut last = first;
        let mut merged = (start, end);
        while last < self.intervals.len() && self.intervals[last].0 <= end.saturating_add(1) {
            merged.0 = merged.0.min(self.intervals[last].0);
            merged.1 = merged.1.max(self.intervals[last].1);
            last += 1;
        }
        self.intervals.splice(first..last, std::iter::once(merged));
    }

    /// Adds one address.
    pub fn insert_ip(&mut self, address: &IpAddr) {
        self.insert(IpRange::single(*address));
    }

    /// Whether the address belongs to the set.
    pub fn contains(&self, address: &IpAddr) -> bool {
        IpVersion::of(address) == self.version && self.contains_value(to_u128(address))
    }

    pub(crate) fn contains_value(&self, value: u128) -> bool {
        let index = self
            .intervals
            .partition_point(|interval| interval.1 < value);
        index < self.intervals.len() && self.intervals[index].0 <= value
    }

    /// Whether every address of the range belongs to the set.
    pub fn contains_range(&self, range: &IpRange) -> bool {
        if range.version != self.version {
            return false;
        }
        let index = self
            .intervals
            .partition_point(|interval| interval.1 < range.start);
        index < self.intervals.len()
            && self.intervals[index].0 <= range.start
            && range.end <= self.intervals[index].1
    }

    /// Number of addresses, saturating at `u128::MAX`.
    pub fn count(&self) -> u128 {
        self.intervals.iter().fold(0u128, |total, (start, end)| {
            total.saturating_add((end - start).saturating_add(1))
        })
    }

    /// Number of addresses clamped to `i64::MAX` (`TotalIPInt`, `totalIPCount`).
    pub fn count_i64(&self) -> i64 {
        i64::try_from(self.count()).unwrap_or(i64::MAX)
    }

    /// The union of two sets of the same family (a set of another family is ignored).
    pub fn union(&self, other: &IpSet) -> IpSet {
        if other.version != self.version {
            return self.clone();
        }
        let mut intervals = Vec::with_capacity(self.intervals.len() + other.intervals.len());
        intervals.extend_from_slice(&self.intervals);
        intervals.extend_from_slice(&other.intervals);
        IpSet::from_intervals(self.version, intervals)
    }

    /// The addresses of `self` that are not in `other`.
    pub fn subtract(&self, other: &IpSet) -> IpSet {
        if other.version != self.version || other.is_empty() {
            return self.clone();
        }
        let mut result = Vec::new();
        let mut cursor = 0usize;
        for &(start, end) in &self.intervals {
            let mut current = start;
            let mut exhausted = false;
            while cursor < other.intervals.len() && other.intervals[cursor].1 < current {
                cursor += 1;
            }
            let mut probe = cursor;
            while probe < other.intervals.len() && other.intervals[probe].0 <= end {
                let (cut_start, cut_end) = other.intervals[probe];
                if cut_start > current {
                    result.push((current, cut_start - 1));
                }
                if cut_end >= end {
                    exhausted = true;
                    break;
                }
                current = current.max(cut_end + 1);
                probe += 1;
            }
            if !exhausted {
                result.push((current, end));
            }
        }
        IpSet {
            version: self.version,
            intervals: result,
        }
    }

    /// The addresses in both sets.
    pub fn intersect(&self, other: &IpSet) -> IpSet {
        if other.version != self.version {
            return IpSet::new(self.version);
        }
        let mut result = Vec::new();
        let (mut left, mut right) = (0usize, 0usize);
        while left < self.intervals.len() && right < other.intervals.len() {
            let (a_start, a_end) = self.intervals[left];
            let (b_start, b_end) = other.intervals[right];
            let start = a_start.max(b_start);
            let end = a_end.min(b_end);
            if start <= end {
                result.push((start, end));
            }
            if a_end < b_end {
                left += 1;
            } else {
                right += 1;
            }
        }
        IpSet {
            version: self.version,
            intervals: result,
        }
    }

    /// Whether every address of `self` is also in `other`.
    pub fn is_subset_of(&self, other: &IpSet) -> bool {
        self.subtract(other).is_empty()
    }

    /// The lowest address of `range` that is NOT in this set, in O(log n).
    pub fn first_absent_in(&self, range: &IpRange) -> Option<IpAddr> {
        if range.version != self.version {
            return Some(range.first_ip());
        }
        let index = self
            .intervals
            .partition_point(|interval| interval.1 < range.start);
        let candidate = match self.intervals.get(index) {
            Some(&(start, end)) if start <= range.start => end.checked_add(1)?,
            _ => range.start,
        };
        // Intervals are non-adjacent, so `end + 1` is never in the set.
        (candidate <= range.end).then(|| from_u128(self.version, candidate))
    }

    /// The lowest address of this set that is not in `excluding`.
    pub fn first_free(&self, excluding: &IpSet) -> Option<IpAddr> {
        self.ranges()
            .find_map(|range| excluding.first_absent_in(&range))
    }

    /// The `count` lowest addresses of the set (fewer if the set is smaller).
    pub fn lowest(&self, count: u128) -> IpSet {
        let mut remaining = count;
        let mut intervals = Vec::new();
        for &(start, end) in &self.intervals {
            if remaining == 0 {
                break;
            }
            let size = (end - start).saturating_add(1);
            if size <= remaining {
                intervals.push((start, end));
                remaining -= size;
            } else {
                intervals.push((start, start + (remaining - 1)));
                remaining = 0;
            }
        }
        IpSet {
            version: self.version,
            intervals,
        }
    }

    /// The maximal ranges of the set in ascending order.
    pub fn ranges(&self) -> impl Iterator<Item = IpRange> + '_ {
        self.intervals.iter().map(move |&(start, end)| IpRange {
            version: self.version,
            start,
            end,
        })
    }

    /// All addresses in ascending order (lazy; take only what you need).
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let version = self.version;
        self.intervals.iter().flat_map(move |&(start, end)| {
            let mut next = Some(start);
            std::iter::from_fn(move || {
                let current = next?;
                next = if current < end {
                    Some(current + 1)
                } else {
                    None
                };
                Some(from_u128(version, current))
            })
        })
    }

    /// `MergeIPRanges` / `ConvertIPsToIPRanges` output: singletons bare, runs as `first-last`.
    pub fn to_range_strings(&self) -> Vec<String> {
        self.ranges().map(|range| range.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(text: &str) -> IpAddr {
        text.parse::<Ipv4Addr>().map(IpAddr::V4).unwrap()
    }

    fn v6(text: &str) -> IpAddr {
        text.parse::<Ipv6Addr>().map(IpAddr::V6).unwrap()
    }

    // G1
    #[test]
    fn merge_ipv4_ranges_sorts_dedups_and_compresses() {
        let merged = merge_ip_ranges(
            IpVersion::V4,
            &[
                "172.18.40.10",
                "172.18.40.1-172.18.40.2",
                "172.18.40.2-172.18.40.3",
            ],
        );
        assert_eq!(
            merged.unwrap(),
            vec!["172.18.40.1-172.18.40.3", "172.18.40.10"]
        );
    }

    // G2
    #[test]
    fn merge_ipv6_ranges_prints_rfc_5952() {
        let merged = merge_ip_ranges(
            IpVersion::V6,
            &[
                "abcd:1234::a",
                "abcd:1234::1-abcd:1234::2",
                "abcd:1234::2-abcd:1234::3",
            ],
        );
        assert_eq!(
            merged.unwrap(),
            vec!["abcd:1234::1-abcd:1234::3", "abcd:1234::a"]
        );
    }

    // G3
    #[test]
    fn invalid_version_and_invalid_range_are_errors() {
        let version = ip_version(976);
        assert_eq!(version.unwrap_err().to_string(), "invalid IP version '976'");
        let error = merge_ip_ranges(IpVersion::V4, &["invalid IP range"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid IP range format in IPv4 'invalid IP range'"
        );
        assert_eq!(error.metric_label(), "invalid_ip_range");
    }

    // G4
    #[test]
    fn parse_ip_ranges_keeps_input_order() {
        let ranges =
            parse_ip_ranges(IpVersion::V4, &["172.18.40.10", "172.18.40.1-172.18.40.2"]).unwrap();
        let addresses: Vec<IpAddr> = ranges.iter().flat_map(|range| range.addresses()).collect();
        assert_eq!(
            addresses,
            vec![v4("172.18.40.10"), v4("172.18.40.1"), v4("172.18.40.2")]
        );
    }

    // G5
    #[test]
    fn ips_to_ranges_merges_and_rejects_wrong_family() {
        let ranges = ips_to_ranges(
            IpVersion::V4,
            &[v4("172.18.40.10"), v4("172.18.40.1"), v4("172.18.40.2")],
        );
        assert_eq!(
            ranges.unwrap(),
            vec!["172.18.40.1-172.18.40.2", "172.18.40.10"]
        );
        let error = ips_to_ranges(IpVersion::V6, &[v4("172.18.40.10")]).unwrap_err();
        assert_eq!(error.to_string(), "invalid IPv6 IP '172.18.40.10'");
        assert_eq!(error.metric_label(), "invalid_ip");
    }

    // G6
    #[test]
    fn range_syntax_validation_matches_upstream() {
        for invalid in [
            "172.18.40.2-172.18.40.1",
            "172.18.40.1-172.18.40.2-172.18.40.3",
            "172.18.40.1-invalid IP range",
            "172.18.40.1 - 172.18.40.2",
            "",
            "172.18.40.1-",
        ] {
            assert!(IpRange::parse(IpVersion::V4, invalid).is_err(), "{invalid}");
        }
        for valid in ["172.18.40.10", "172.18.40.1-172.18.40.2"] {
            assert!(IpRange::parse(IpVersion::V4, valid).is_ok(), "{valid}");
        }
        for invalid in [
            "abcd:1234::2-abcd:1234::1",
            "abcd:1234::1-abcd:1234::2-abcd:1234::3",
            "abcd:1234::1-invalid IP range",
        ] {
            assert!(IpRange::parse(IpVersion::V6, invalid).is_err(), "{invalid}");
        }
        for valid in ["abcd:1234::a", "abcd:1234::1-abcd:1234::2"] {
            assert!(IpRange::parse(IpVersion::V6, valid).is_ok(), "{valid}");
        }
    }

    #[test]
    fn reversed_range_is_rejected_with_a_clear_message() {
        let error = IpRange::parse(IpVersion::V4, "172.18.40.20-172.18.40.10").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid IP range format in IPv4 '172.18.40.20-172.18.40.10': the first address 172.18.40.20 is greater than the last address 172.18.40.10, write it as '172.18.40.10-172.18.40.20'"
        );
        assert_eq!(error.metric_label(), "reversed_ip_range");
        let swapped = IpRange::parse_unordered(IpVersion::V4, "172.18.40.20-172.18.40.10").unwrap();
        assert_eq!(swapped.to_string(), "172.18.40.10-172.18.40.20");
    }

    #[test]
    fn three_part_range_is_invalid() {
        let error = IpRange::parse(IpVersion::V4, "10.0.0.1-10.0.0.2-10.0.0.3").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid IP range format in IPv4 '10.0.0.1-10.0.0.2-10.0.0.3'"
        );
    }

    #[test]
    fn mixed_family_range_is_invalid() {
        assert!(IpRange::parse(IpVersion::V4, "172.18.40.1-2001:db8:a0b:12f0::1").is_err());
        assert!(IpRange::parse(IpVersion::V6, "172.18.40.1-2001:db8:a0b:12f0::1").is_err());
        assert!(IpRange::parse(IpVersion::V6, "172.18.40.1").is_err());
    }

    // G43 (version derivation)
    #[test]
    fn range_family_is_derived_from_the_text() {
        assert_eq!(
            range_ip_version("172.18.40.1-172.18.40.2"),
            Some(IpVersion::V4)
        );
        assert_eq!(
            range_ip_version("abcd:1234::1-abcd:1234::2"),
            Some(IpVersion::V6)
        );
        assert_eq!(range_ip_version("invalid IP range"), None);
    }

    // G8
    #[test]
    fn range_contains_ip() {
        let range = IpRange::parse(IpVersion::V4, "172.18.40.1-172.18.40.2").unwrap();
        assert!(!range.contains(&v4("172.18.40.10")));
        let single = IpRange::parse(IpVersion::V4, "172.18.40.1").unwrap();
        assert!(single.contains(&v4("172.18.40.1")));
    }

    // G9
    #[test]
    fn touching_ranges_overlap_and_disjoint_ranges_do_not() {
        let a = IpRange::parse(IpVersion::V4, "172.18.40.1-172.18.40.2").unwrap();
        let b = IpRange::parse(IpVersion::V4, "172.18.40.2-172.18.40.3").unwrap();
        let c = IpRange::parse(IpVersion::V4, "172.18.40.3-172.18.40.4").unwrap();
        assert!(a.overlaps(&b));
        assert!(!a.overlaps(&c));
    }

    // G10
    #[test]
    fn total_ips_are_ips_minus_excluded() {
        let ips = IpSet::from_ranges(IpVersion::V4, &["172.18.40.10", "172.18.40.1-172.18.40.2"])
            .unwrap();
        let excluded =
            IpSet::from_ranges(IpVersion::V4, &["172.18.40.10", "172.18.40.2-172.18.40.3"])
                .unwrap();
        let total: Vec<IpAddr> = ips.subtract(&excluded).addresses().collect();
        assert_eq!(total, vec![v4("172.18.40.1")]);

        let ips = IpSet::from_ranges(
            IpVersion::V6,
            &["abcd:1234::a", "abcd:1234::1-abcd:1234::2"],
        )
        .unwrap();
        let excluded = IpSet::from_ranges(
            IpVersion::V6,
            &["abcd:1234::a", "abcd:1234::2-abcd:1234::3"],
        )
        .unwrap();
        let total: Vec<IpAddr> = ips.subtract(&excluded).addresses().collect();
        assert_eq!(total, vec![v6("abcd:1234::1")]);
    }

    // G16 (the multi-range part; allocation itself is in the ledger tests)
    #[test]
    fn first_free_walks_ranges_ascending_skipping_used() {
        let pool = IpSet::from_ranges(IpVersion::V4, &["192.168.1.1-192.168.1.5"]).unwrap();
        let mut used = IpSet::from_ips(IpVersion::V4, &[v4("192.168.1.2"), v4("192.168.1.4")]);
        let mut picked = Vec::new();
        while let Some(address) = pool.first_free(&used) {
            picked.push(address);
            used.insert_ip(&address);
            if picked.len() == 3 {
                break;
            }
        }
        assert_eq!(
            picked,
            vec![v4("192.168.1.1"), v4("192.168.1.3"), v4("192.168.1.5")]
        );
    }

    // G16
    #[test]
    fn find_available_ips_walks_ranges_of_both_families() {
        assert_eq!(
            find_available_ips(
                &["192.168.1.1-192.168.1.5"],
                &[v4("192.168.1.2"), v4("192.168.1.4")],
                3
            ),
            vec![v4("192.168.1.1"), v4("192.168.1.3"), v4("192.168.1.5")]
        );
        assert_eq!(
            find_available_ips(
                &["192.168.1.1-192.168.1.3", "2001:db8::1-2001:db8::3"],
                &[v4("192.168.1.2"), v6("2001:db8::2")],
                4
            ),
            vec![
                v4("192.168.1.1"),
                v4("192.168.1.3"),
                v6("2001:db8::1"),
                v6("2001:db8::3")
            ]
        );
        assert!(find_available_ips(&["192.168.1.5-192.168.1.1", "bogus"], &[], 3).is_empty());
        assert_eq!(
            find_available_ips(&["255.255.255.254-255.255.255.255"], &[], 5).len(),
            2
        );
    }

    #[test]
    fn v6_slash_64_count_clamps_at_i64_max() {
        let set = IpSet::from_ranges(
            IpVersion::V6,
            &["fd12:3456:789a:baba::-fd12:3456:789a:baba:ffff:ffff:ffff:ffff"],
        )
        .unwrap();
        assert_eq!(set.count(), 1u128 << 64);
        assert_eq!(set.count_i64(), i64::MAX);
    }

    #[test]
    fn whole_ipv6_space_counts_without_overflow() {
        let set = IpSet::from_ranges(
            IpVersion::V6,
            &["::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
        )
        .unwrap();
        assert_eq!(set.count(), u128::MAX);
        assert_eq!(set.count_i64(), i64::MAX);
        assert_eq!(set.first_free(&set), None);
    }

    #[test]
    fn first_free_on_a_slash_8_with_allocations_does_not_materialise() {
        let pool = IpSet::from_ranges(IpVersion::V4, &["10.0.0.1-10.255.255.254"]).unwrap();
        let mut used = IpSet::from_ranges(IpVersion::V4, &["10.0.0.1-10.200.0.0"]).unwrap();
        used.insert_ip(&v4("10.200.0.2"));
        assert_eq!(pool.first_free(&used), Some(v4("10.200.0.1")));
        used.insert_ip(&v4("10.200.0.1"));
        assert_eq!(pool.first_free(&used), Some(v4("10.200.0.3")));
        used.insert(IpRange::parse(IpVersion::V4, "10.200.0.3-10.255.255.254").unwrap());
        assert_eq!(pool.first_free(&used), None);
    }

    #[test]
    fn set_operations_handle_edges() {
        let a = IpSet::from_ranges(
            IpVersion::V4,
            &["10.0.0.0-10.0.0.10", "10.0.0.20-10.0.0.30"],
        )
        .unwrap();
        let b = IpSet::from_ranges(IpVersion::V4, &["10.0.0.5-10.0.0.25"]).unwrap();
        assert_eq!(
            a.subtract(&b).to_range_strings(),
            vec!["10.0.0.0-10.0.0.4", "10.0.0.26-10.0.0.30"]
        );
        assert_eq!(
            a.intersect(&b).to_range_strings(),
            vec!["10.0.0.5-10.0.0.10", "10.0.0.20-10.0.0.25"]
        );
        assert_eq!(a.union(&b).to_range_strings(), vec!["10.0.0.0-10.0.0.30"]);
        assert!(!a.is_subset_of(&b));
        assert!(a.intersect(&b).is_subset_of(&a));
        assert_eq!(
            a.lowest(13).to_range_strings(),
            vec!["10.0.0.0-10.0.0.10", "10.0.0.20-10.0.0.21"]
        );
        let top = IpSet::from_ranges(IpVersion::V4, &["255.255.255.250-255.255.255.255"]).unwrap();
        let cut = IpSet::from_ranges(IpVersion::V4, &["255.255.255.255"]).unwrap();
        assert_eq!(
            top.subtract(&cut).to_range_strings(),
            vec!["255.255.255.250-255.255.255.254"]
        );
        assert_eq!(top.first_free(&top), None);
    }

    #[test]
    fn insert_merges_adjacent_and_overlapping_intervals() {
        let mut set = IpSet::new(IpVersion::V4);
        for text in [
            "10.0.0.5",
            "10.0.0.1-10.0.0.3",
            "10.0.0.7",
            "10.0.0.4",
            "10.0.0.6",
        ] {
            set.insert(IpRange::parse(IpVersion::V4, text).unwrap());
        }
        assert_eq!(set.to_range_strings(), vec!["10.0.0.1-10.0.0.7"]);
        assert!(set.contains(&v4("10.0.0.4")));
        assert!(!set.contains(&v4("10.0.0.8")));
        assert!(!set.contains(&v6("::1")));
    }

    #[test]
    fn v6_merge_formats_runs_and_singletons() {
        let merged = merge_ip_ranges(
            IpVersion::V6,
            &["fd00::ffff", "fd00::1:0-fd00::1:2", "fd00::10", "FD00::F"],
        )
        .unwrap();
        assert_eq!(merged, vec!["fd00::f-fd00::10", "fd00::ffff-fd00::1:2"]);
    }
}
