//! Pool and subnet usage metrics, computed at scrape time from the caches, plus the counters of
//! the garbage collector and the auto-pool controller.
//!
//! Names follow the documented upstream `spiderpool_*` names in Prometheus form (spec README item
//! 9): snake_case, counters end in `_total`, levels are gauges. Usage gauges are never accumulated:
//! every scrape reads the pools and subnets in the cache, so a value is right after every change
//! and a deleted pool simply disappears.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `spiderpool_total_ippool_counts` | gauge | – |
//! | `spiderpool_total_subnet_counts` | gauge | – |
//! | `spiderpool_ippool_{total,allocated,available}_ip_counts` | gauge | `pool`, `ip_version`, `subnet` (`""` when not owned) |
//! | `spiderpool_subnet_{total,allocated,available}_ip_counts` | gauge | `subnet`, `ip_version` |
//! | `spiderpool_subnet_ippool_counts` | gauge | `subnet`, `ip_version` |
//! | `spiderpool_ip_gc_counts_total` | counter | `reason` |
//! | `spiderpool_ip_gc_failure_counts_total` | counter | `category` |
//! | `spiderpool_auto_pool_creations_total` | counter | – |
//! | `spiderpool_auto_pool_scalings_total` | counter | `direction` (`up`, `down`) |
//! | `spiderpool_auto_pool_reclaims_total` | counter | – |
//! | `spiderpool_auto_pool_failures_total` | counter | `category` |
//!
//! The failure counters start at zero for the categories any controller can hit
//! (`api_error`, `conflict`), so the alerts and dashboard panels over them have data from the
//! first scrape; the GC reasons and scaling directions start at zero too.
//!
//! A subnet's allocated count is what its `status.allocatedIPCount` means upstream: addresses
//! pre-allocated to its pools. A pool's allocated count is the number of its ledger records.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::runtime::metrics::TRANSIENT_CATEGORIES;
use crate::shared::cache::IpamCache;
use spiderpool_store::objects;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    ip_version: &'static str,
    subnet: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubnetLabels {
    subnet: String,
    ip_version: &'static str,
}

/// Counters of the garbage collector and the auto-pool controller.
#[derive(Clone, Default)]
pub struct IpamCounters {
    gc_releases: Family<ReasonLabels, Counter>,
    gc_keeps: Family<ReasonLabels, Counter>,
    gc_failures: Family<CategoryLabels, Counter>,
    auto_pool_creations: Counter,
    auto_pool_scalings: Family<DirectionLabels, Counter>,
    auto_pool_reclaims: Counter,
    auto_pool_failures: Family<CategoryLabels, Counter>,
}

impl IpamCounters {
    /// Registers the counters and the scrape-time usage collector over `cache`.
    pub fn register(registry: &mut Registry, cache: IpamCache) -> IpamCounters {
        let counters = IpamCounters::default();
        registry.register(
            "ip_gc_counts",
            "Addresses released by the IP garbage collector, by reason",
            counters.gc_releases.clone(),
        );
        registry.register(
            "ip_gc_kept_counts",
            "Records the IP garbage collector judged on fresh reads and kept, by reason",
            counters.gc_keeps.clone(),
        );
        registry.register(
            "ip_gc_failure_counts",
            "Failed garbage-collector releases, by error category",
            counters.gc_failures.clone(),
        );
        registry.register(
            "auto_pool_creations",
            "Auto-created IPPools created for workloads",
            counters.auto_pool_creations.clone(),
        );
        registry.register(
            "auto_pool_scalings",
            "Auto-created IPPools resized, by direction",
            counters.auto_pool_scalings.clone(),
        );
        registry.register(
            "auto_pool_reclaims",
            "Auto-created IPPools deleted with their workload",
            counters.auto_pool_reclaims.clone(),
        );
        registry.register(
            "auto_pool_failures",
            "Failed auto-pool reconciliations, by error category",
            counters.auto_pool_failures.clone(),
        );
        // Initialised so they appear before the first event, as upstream does.
        for reason in [
            "pod_not_found",
            "pod_uid_changed",
            "pod_terminating",
            "pod_finished",
            "pod_not_running",
            "static_member_invalid",
            "endpoint_released",
        ] {
            let _ = counters.gc_releases.get_or_create(&ReasonLabels { reason });
        }
        for category in TRANSIENT_CATEGORIES {
            let _ = counters
                .gc_failures
                .get_or_create(&CategoryLabels { category });
            let _ = counters
                .auto_pool_failures
                .get_or_create(&CategoryLabels { category });
        }
        for direction in ["up", "down"] {
            let _ = counters
                .auto_pool_scalings
                .get_or_create(&DirectionLabels { direction });
        }
        registry.register_collector(Box::new(UsageCollector { cache }));
        counters
    }

    pub fn gc_released(&self, reason: &'static str) {
        self.gc_releases
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn gc_kept(&self, reason: &'static str) {
        self.gc_keeps.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn gc_failed(&self, category: &'static str) {
        self.gc_failures
            .get_or_create(&CategoryLabels { category })
            .inc();
    }

    pub fn auto_pool_created(&self) {
        self.auto_pool_creations.inc();
    }

    pub fn auto_pool_scaled(&self, up: bool) {
        let direction = if up { "up" } else { "down" };
        self.auto_pool_scalings
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    pub fn auto_pool_reclaimed(&self, pools: u64) {
        self.auto_pool_reclaims.inc_by(pools);
    }

    pub fn auto_pool_failed(&self, category: &'static str) {
        self.auto_pool_failures
            .get_or_create(&CategoryLabels { category })
            .inc();
    }
}

/// Pool usage as the metrics report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    pub total: i64,
    pub allocated: i64,
}

impl PoolUsage {
    pub fn available(&self) -> i64 {
        self.total.saturating_sub(self.allocated).max(0)
    }
}

/// The usage of one pool: effective addresses and ledger records.
pub fn pool_usage(pool: &spiderpool_api::SpiderIPPool) -> PoolUsage {
    let total = objects::pool_ips(pool)
        .map(|set| set.count_i64())
        .unwrap_or(0);
    let allocated = objects::pool_allocations(pool)
        .map(|records| i64::try_from(records.len()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    PoolUsage { total, allocated }
}

/// The usage of one subnet: effective addresses and addresses pre-allocated to its pools.
pub fn subnet_usage(subnet: &spiderpool_api::SpiderSubnet) -> PoolUsage {
    let Some(ips) = objects::subnet_ips(subnet) else {
        return PoolUsage {
            total: 0,
            allocated: 0,
        };
    };
    let allocated = objects::controlled_pools(subnet)
        .ok()
        .and_then(|controlled| controlled.allocated_ip_count(ips.version()).ok())
        .unwrap_or(0);
    PoolUsage {
        total: ips.count_i64(),
        allocated,
    }
}

struct UsageCollector {
    cache: IpamCache,
}

impl std::fmt::Debug for UsageCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("UsageCollector")
    }
}

fn version_label(version: Option<spiderpool_ipam::ip::IpVersion>) -> &'static str {
    match version {
        Some(spiderpool_ipam::ip::IpVersion::V4) => "4",
        Some(spiderpool_ipam::ip::IpVersion::V6) => "6",
        None => "",
    }
}

fn encode_gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, i64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for UsageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut pools = self.cache.pools.state();
        pools.sort_by_key(|pool| objects::pool_name(pool));
        let mut subnets = self.cache.subnets.state();
        subnets.sort_by_key(|subnet| objects::subnet_name(subnet));

        let mut pool_rows = Vec::with_capacity(pools.len());
        let mut pools_per_subnet: BTreeMap<String, i64> = BTreeMap::new();
        for pool in &pools {
            let subnet = objects::owner_subnet(pool).unwrap_or_default().to_string();
            if !subnet.is_empty() {
                *pools_per_subnet.entry(subnet.clone()).or_default() += 1;
            }
            let labels = PoolLabels {
                pool: objects::pool_name(pool),
                ip_version: version_label(objects::pool_family(pool)),
                subnet,
            };
            pool_rows.push((labels, pool_usage(pool)));
        }
        let mut subnet_rows = Vec::with_capacity(subnets.len());
        for subnet in &subnets {
            let name = objects::subnet_name(subnet);
            let labels = SubnetLabels {
                ip_version: version_label(objects::subnet_family(subnet)),
                subnet: name.clone(),
            };
            let pools = pools_per_subnet.get(&name).copied().unwrap_or(0);
            subnet_rows.push((labels, subnet_usage(subnet), pools));
        }

        let count = |items: usize| i64::try_from(items).unwrap_or(i64::MAX);
        encode_gauge(
            &mut encoder,
            "total_ippool_counts",
            "Number of SpiderIPPools.",
            count(pools.len()),
        )?;
        encode_gauge(
            &mut encoder,
            "total_subnet_counts",
            "Number of SpiderSubnets.",
            count(subnets.len()),
        )?;
        let select = |pick: fn(&PoolUsage) -> i64| -> Vec<(PoolLabels, i64)> {
            pool_rows
                .iter()
                .map(|(labels, usage)| (labels.clone(), pick(usage)))
                .collect()
        };
        encode_gauges(
            &mut encoder,
            "ippool_total_ip_counts",
            "Addresses of the SpiderIPPool (spec.ips minus spec.excludeIPs).",
            &select(|usage| usage.total),
        )?;
        encode_gauges(
            &mut encoder,
            "ippool_allocated_ip_counts",
            "Addresses of the SpiderIPPool allocated to pods.",
            &select(|usage| usage.allocated),
        )?;
        encode_gauges(
            &mut encoder,
            "ippool_available_ip_counts",
            "Addresses of the SpiderIPPool still free.",
            &select(PoolUsage::available),
        )?;
        let select_subnet = |pick: fn(&PoolUsage, i64) -> i64| -> Vec<(SubnetLabels, i64)> {
            subnet_rows
                .iter()
                .map(|(labels, usage, pools)| (labels.clone(), pick(usage, *pools)))
                .collect()
        };
        encode_gauges(
            &mut encoder,
            "subnet_total_ip_counts",
            "Addresses of the SpiderSubnet (spec.ips minus spec.excludeIPs).",
            &select_subnet(|usage, _| usage.total),
        )?;
        encode_gauges(
            &mut encoder,
            "subnet_allocated_ip_counts",
            "Addresses of the SpiderSubnet pre-allocated to its IPPools.",
            &select_subnet(|usage, _| usage.allocated),
        )?;
        encode_gauges(
            &mut encoder,
            "subnet_available_ip_counts",
            "Addresses of the SpiderSubnet not held by any IPPool.",
            &select_subnet(|usage, _| usage.available()),
        )?;
        encode_gauges(
            &mut encoder,
            "subnet_ippool_counts",
            "SpiderIPPools controlled by the SpiderSubnet.",
            &select_subnet(|_, pools| pools),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use spiderpool_api::{SpiderIPPool, SpiderReservedIP, SpiderSubnet};

    use crate::runtime::reflect::Changes;

    fn cache(pools: Vec<serde_json::Value>, subnets: Vec<serde_json::Value>) -> IpamCache {
        let mut pool_writer: Writer<SpiderIPPool> = Writer::default();
        for pool in pools {
            let pool: SpiderIPPool = serde_json::from_value(pool).expect("valid pool");
            pool_writer.apply_watcher_event(&watcher::Event::Apply(pool));
        }
        let mut subnet_writer: Writer<SpiderSubnet> = Writer::default();
        for subnet in subnets {
            let subnet: SpiderSubnet = serde_json::from_value(subnet).expect("valid subnet");
            subnet_writer.apply_watcher_event(&watcher::Event::Apply(subnet));
        }
        let reserved_writer: Writer<SpiderReservedIP> = Writer::default();
        IpamCache {
            pools: pool_writer.as_reader(),
            pool_changes: Changes::idle(pool_writer.as_reader()),
            subnets: subnet_writer.as_reader(),
            subnet_changes: Changes::idle(subnet_writer.as_reader()),
            reserved: reserved_writer.as_reader(),
        }
    }

    fn scrape(cache: IpamCache) -> String {
        let mut registry = Registry::with_prefix("spiderpool");
        let counters = IpamCounters::register(&mut registry, cache);
        let controllers = crate::runtime::metrics::ControllerMetrics::register(&mut registry);
        // Labelled families appear with their first sample.
        counters.gc_failed("api_error");
        counters.auto_pool_failed("subnet_exhausted");
        controllers.failure("application", "conflict");
        controllers.start("application").finish();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        text
    }

    #[test]
    fn usage_gauges_are_computed_from_the_cached_objects() {
        let text = scrape(cache(
            vec![
                serde_json::json!({
                    "metadata": {"name": "auto4-web-eth0-1a2b3", "labels": {"ipam.spidernet.io/owner-spider-subnet": "s4"}},
                    "spec": {"ipVersion": 4, "subnet": "10.0.0.0/24", "ips": ["10.0.0.10-10.0.0.14"], "excludeIPs": ["10.0.0.14"]},
                    "status": {"allocatedIPs": "{\"10.0.0.10\":{\"pod\":\"default/web-1\",\"podUid\":\"u1\"}}", "allocatedIPCount": 1}
                }),
                serde_json::json!({
                    "metadata": {"name": "manual-v6"},
                    "spec": {"subnet": "fd00::/64", "ips": ["fd00::1-fd00::3"]}
                }),
            ],
            vec![serde_json::json!({
                "metadata": {"name": "s4"},
                "spec": {"subnet": "10.0.0.0/24", "ips": ["10.0.0.1-10.0.0.100"]},
                "status": {"controlledIPPools": "{\"auto4-web-eth0-1a2b3\":{\"ips\":[\"10.0.0.10-10.0.0.13\"],\"application\":\"apps_v1_Deployment_default_web\"}}"}
            })],
        ));
        for line in [
            "spiderpool_total_ippool_counts 2",
            "spiderpool_total_subnet_counts 1",
            r#"spiderpool_ippool_total_ip_counts{pool="auto4-web-eth0-1a2b3",ip_version="4",subnet="s4"} 4"#,
            r#"spiderpool_ippool_allocated_ip_counts{pool="auto4-web-eth0-1a2b3",ip_version="4",subnet="s4"} 1"#,
            r#"spiderpool_ippool_available_ip_counts{pool="auto4-web-eth0-1a2b3",ip_version="4",subnet="s4"} 3"#,
            r#"spiderpool_ippool_total_ip_counts{pool="manual-v6",ip_version="6",subnet=""} 3"#,
            r#"spiderpool_subnet_total_ip_counts{subnet="s4",ip_version="4"} 100"#,
            r#"spiderpool_subnet_allocated_ip_counts{subnet="s4",ip_version="4"} 4"#,
            r#"spiderpool_subnet_available_ip_counts{subnet="s4",ip_version="4"} 96"#,
            r#"spiderpool_subnet_ippool_counts{subnet="s4",ip_version="4"} 1"#,
            "# TYPE spiderpool_ippool_total_ip_counts gauge",
            "# TYPE spiderpool_ip_gc_counts counter",
            r#"spiderpool_ip_gc_counts_total{reason="pod_not_found"} 0"#,
            r#"spiderpool_auto_pool_scalings_total{direction="up"} 0"#,
            "spiderpool_auto_pool_creations_total 0",
            r#"spiderpool_ip_gc_failure_counts_total{category="api_error"} 1"#,
            r#"spiderpool_ip_gc_failure_counts_total{category="conflict"} 0"#,
            r#"spiderpool_auto_pool_failures_total{category="api_error"} 0"#,
            r#"spiderpool_auto_pool_failures_total{category="conflict"} 0"#,
        ] {
            assert!(
                text.lines().any(|candidate| candidate == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn every_metric_of_the_grafana_dashboard_is_exposed() {
        let text = scrape(cache(Vec::new(), Vec::new()));
        let exposed: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .collect();
        let dashboard = include_str!("../../../../config/grafana/spiderpool-ipam.json");
        let mut used = std::collections::BTreeSet::new();
        for (index, _) in dashboard.match_indices("spiderpool_") {
            let name: String = dashboard[index..]
                .chars()
                .take_while(|character| {
                    character.is_ascii_lowercase()
                        || *character == '_'
                        || character.is_ascii_digit()
                })
                .collect();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_total")
                .to_string();
            // The dashboard's uid and tags are not metrics.
            if base.len() > "spiderpool_".len() && !base.starts_with("spiderpool_rs") {
                used.insert(base);
            }
        }
        assert!(used.len() > 10);
        for name in &used {
            assert!(
                exposed.contains(name.as_str()),
                "the dashboard uses {name}, which is not exposed"
            );
        }
    }
}
