//! Huge pools in the pure allocator (run by `make bench`, ignored by `make test`): a /8 IPv4 and
//! a /64 IPv6 pool holding 10,000 records spread over the whole range (the worst case for the
//! interval sets: every record its own interval). For each, the CPU of what one allocation
//! costs a plugin that has just read the pool: decode `status.allocatedIPs`, pick and record the
//! address ([`allocate_in_place`], the pure allocator), encode the new ledger. Also checked: `status.totalIPCount` of each (a /64 saturates at i64::MAX,
//! as upstream's `TotalIPInt`).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spiderpool_ipam::ip::{IpVersion, from_u128};
use spiderpool_ipam::ledger::{PoolIpAllocation, PoolIpAllocations, allocate_in_place};
use spiderpool_ipam::pool::PoolView;
use spiderpool_ipam::pool_ips::PoolIps;
use spiderpool_ipam::range::IpSet;

const RECORDS: usize = 10_000;
const ROUNDS: usize = 200;

struct Case {
    name: &'static str,
    version: IpVersion,
    subnet: &'static str,
    /// First and last address of `spec.ips`.
    first: u128,
    last: u128,
}

fn records(case: &Case, rng: &mut StdRng) -> PoolIpAllocations {
    let mut records = PoolIpAllocations::default();
    while records.len() < RECORDS {
        let address = from_u128(case.version, rng.random_range(case.first..=case.last));
        let n = records.len();
        records.insert(
            address.to_string(),
            PoolIpAllocation::new(format!("bench-ns/pod-{n}"), uid(rng)),
        );
    }
    records
}

/// A random version-4 UUID, as the API server gives pods.
fn uid(rng: &mut StdRng) -> String {
    let bits: u128 = rng.random();
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Median and mean of `samples`.
fn summary(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    (samples[samples.len() / 2], mean)
}

#[test]
#[ignore = "benchmark: run by `make bench`"]
fn bench_allocation_in_huge_pools() -> anyhow::Result<()> {
    let cases = [
        Case {
            name: "ipv4 /8",
            version: IpVersion::V4,
            subnet: "10.0.0.0/8",
            first: u128::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1))),
            last: u128::from(u32::from(std::net::Ipv4Addr::new(10, 255, 255, 254))),
        },
        Case {
            name: "ipv6 /64",
            version: IpVersion::V6,
            subnet: "fd00:10::/64",
            first: u128::from("fd00:10::1".parse::<std::net::Ipv6Addr>()?),
            last: u128::from("fd00:10::ffff:ffff:ffff:fffe".parse::<std::net::Ipv6Addr>()?),
        },
    ];
    let mut rng = StdRng::seed_from_u64(16);
    for case in &cases {
        let range = format!(
            "{}-{}",
            from_u128(case.version, case.first),
            from_u128(case.version, case.last)
        );
        let total = PoolIps::new(case.subnet, &[range.as_str()], &[] as &[&str])?.total_ip_count();
        let mut pool = PoolView::new("huge", case.version, case.subnet);
        pool.ips = vec![range];
        let ledger = records(case, &mut rng);
        let encoded = ledger.encode().unwrap_or_default();
        let reserved = IpSet::new(case.version);
        let (mut decode, mut pick, mut encode, mut whole) = (vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let owner = PoolIpAllocation::new(format!("bench-ns/new-{round}"), uid(&mut rng));
            let start = Instant::now();
            let mut records = PoolIpAllocations::parse("huge", Some(&encoded))?;
            let decoded = Instant::now();
            let (ip, created) =
                allocate_in_place(&pool, &reserved, &mut records, &owner, i64::MAX)?;
            let picked = Instant::now();
            let text = records.encode();
            let encoded_at = Instant::now();
            anyhow::ensure!(
                created && text.is_some_and(|text| text.len() > encoded.len()),
                "{}: the new ledger must hold one record more",
                case.name
            );
            anyhow::ensure!(
                ledger.get(&ip.to_string()).is_none(),
                "{}: {ip} is already recorded",
                case.name
            );
            decode.push(decoded - start);
            pick.push(picked - decoded);
            encode.push(encoded_at - picked);
            whole.push(encoded_at - start);
        }
        let show = |(median, mean): (Duration, Duration)| {
            format!(
                "{:.3} / {:.3} ms",
                median.as_secs_f64() * 1e3,
                mean.as_secs_f64() * 1e3
            )
        };
        println!(
            "BENCH huge-pool {}: {RECORDS} records ({} KB ledger), totalIPCount {total}; per allocation (median / mean of {ROUNDS}): decode {}, allocate {}, encode {}, all {}",
            case.name,
            encoded.len() / 1024,
            show(summary(decode)),
            show(summary(pick)),
            show(summary(encode)),
            show(summary(whole)),
        );
        let expected_total = match case.version {
            IpVersion::V4 => 16_777_214,
            IpVersion::V6 => i64::MAX,
        };
        anyhow::ensure!(
            total == expected_total,
            "{}: totalIPCount {total}, expected {expected_total}",
            case.name
        );
    }
    Ok(())
}
