//! IP ranges, CIDRs, IP sets, pool address lists and route rules.
//!
//! Input: a selector byte, then text; list operations take one item per line, and the set
//! operations split the lines into two lists at the first empty line. Besides "no panic", a few
//! algebraic properties of the set code are checked (merging is idempotent, a set minus another
//! shares nothing with it, a union contains both sides), so a wrong answer fails like a crash.

use std::net::IpAddr;

use spiderpool_ipam::cidr::{self, Cidr};
use spiderpool_ipam::ip::{IpVersion, parse_any_ip};
use spiderpool_ipam::pool_ips::{PoolIps, ReversedRanges};
use spiderpool_ipam::range::{self, IpRange, IpSet};
use spiderpool_ipam::routes::{Route, validate_pool_routes};

use crate::{select, text};

const VERSIONS: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];

pub fn run(data: &[u8]) {
    let Some((selector, rest)) = select(data) else {
        return;
    };
    let text = text(rest);
    let lines: Vec<&str> = text.lines().collect();
    match selector % 8 {
        0 => single_range(&text),
        1 => single_cidr(&text),
        2 => merge(&lines),
        3 => set_algebra(&lines),
        4 => addresses(&lines),
        5 => pool_ips(&lines),
        6 => routes(&lines),
        _ => {
            let _ = range::range_ip_version(&text);
            let _ = cidr::parse_ip_or_cidr(&text);
            for version in VERSIONS {
                let _ = spiderpool_ipam::ip::parse_ip(version, &text);
            }
        }
    }
}

fn single_range(text: &str) {
    for version in VERSIONS {
        if let Ok(range) = IpRange::parse(version, text) {
            assert!(
                range.start() <= range.end(),
                "parsed a reversed range {text:?}"
            );
            assert!(range.contains(&range.first_ip()) && range.contains(&range.last_ip()));
            let _ = (range.len(), range.is_empty(), range.overlaps(&range));
        }
        if let Ok(range) = IpRange::parse_unordered(version, text) {
            assert!(range.start() <= range.end());
        }
    }
}

fn single_cidr(text: &str) {
    if let Ok(parsed) = Cidr::parse_any(text) {
        let range = parsed.as_range();
        assert!(parsed.contains_range(&range) && parsed.contains_cidr(&parsed));
        assert!(parsed.contains_ip(&parsed.network()));
        let canonical = parsed.canonical();
        let again = Cidr::parse_any(&canonical);
        assert!(
            again.as_ref().is_ok_and(|again| again.as_range() == range),
            "the canonical form {canonical:?} of {text:?} does not parse back to the same range: {again:?}"
        );
        let _ = parsed.address_with_prefix(&parsed.address());
        let _ = (
            parsed.prefix_len(),
            parsed.last_value(),
            parsed.network_value(),
        );
    }
    let _ = cidr::check_canonical(text);
    for version in VERSIONS {
        let _ = Cidr::parse(version, text);
        let _ = cidr::cidr_label_value(version, text);
    }
}

fn merge(lines: &[&str]) {
    for version in VERSIONS {
        let _ = range::parse_ip_ranges(version, lines);
        if let Ok(merged) = range::merge_ip_ranges(version, lines) {
            let again = range::merge_ip_ranges(version, &merged);
            assert_eq!(
                again.as_ref(),
                Ok(&merged),
                "merging {lines:?} is not idempotent"
            );
        }
    }
}

fn two_lists<'a>(lines: &'a [&'a str]) -> (&'a [&'a str], &'a [&'a str]) {
    match lines.iter().position(|line| line.is_empty()) {
        Some(split) => (&lines[..split], &lines[split + 1..]),
        None => (lines, &[]),
    }
}

fn set_algebra(lines: &[&str]) {
    let (left, right) = two_lists(lines);
    for version in VERSIONS {
        let (Ok(a), Ok(b)) = (
            IpSet::from_ranges(version, left),
            IpSet::from_ranges(version, right),
        ) else {
            continue;
        };
        let union = a.union(&b);
        let difference = a.subtract(&b);
        let intersection = a.intersect(&b);
        assert!(a.is_subset_of(&union) && b.is_subset_of(&union));
        assert!(difference.is_subset_of(&a) && intersection.is_subset_of(&a));
        assert!(
            difference.intersect(&b).is_empty(),
            "{left:?} minus {right:?} keeps an address of {right:?}"
        );
        assert_eq!(
            difference.count().checked_add(intersection.count()),
            Some(a.count()),
            "|a - b| + |a & b| != |a| for {left:?} and {right:?}"
        );
        let _ = (union.count_i64(), a.first_free(&b), a.to_range_strings());
        for range in b.ranges().take(4) {
            let _ = (a.contains_range(&range), a.first_absent_in(&range));
        }
        let lowest = a.lowest(3);
        assert!(lowest.is_subset_of(&a) && lowest.count() <= 3);
    }
}

fn addresses(lines: &[&str]) {
    let (ranges, used) = two_lists(lines);
    let used: Vec<IpAddr> = used.iter().filter_map(|text| parse_any_ip(text)).collect();
    let found = range::find_available_ips(ranges, &used, 8);
    assert!(found.len() <= 8);
    assert!(
        found.iter().all(|address| !used.contains(address)),
        "{found:?} reuses one of {used:?}"
    );
    for version in VERSIONS {
        let _ = range::ips_to_ranges(version, &used);
        let set = IpSet::from_ips(version, &used);
        let _ = (set.count(), set.to_range_strings());
    }
}

fn pool_ips(lines: &[&str]) {
    let Some((subnet, rest)) = lines.split_first() else {
        return;
    };
    let (ips, excludes) = two_lists(rest);
    for reversed in [ReversedRanges::Swap, ReversedRanges::Reject] {
        if let Ok(pool) = PoolIps::new_with(subnet, ips, excludes, reversed) {
            let set = pool.to_set();
            assert!(
                set.count() <= pool.total(),
                "the set of {ips:?} is larger than its pieces"
            );
            let _ = (
                pool.total_ip_count(),
                pool.overlapping_raw_ranges(pool.ranges()),
            );
            let _ = (pool.subnet(), pool.version());
        }
    }
}

fn routes(lines: &[&str]) {
    let Some((subnet, rest)) = lines.split_first() else {
        return;
    };
    let routes: Vec<Route> = rest
        .iter()
        .map(|line| match line.split_once(' ') {
            Some((dst, gw)) => Route::new(dst, gw),
            None => Route::new(*line, ""),
        })
        .collect();
    for version in VERSIONS {
        let _ = validate_pool_routes(version, subnet, &routes);
    }
    for route in &routes {
        let _ = spiderpool_ipam::routes::is_route_of_any_family(route);
        let _ = spiderpool_ipam::routes::default_route("eth0", &route.gw);
    }
}
