//! Metrics every controller shares: reconcile counts, failures by stable error category and
//! reconcile duration, labelled by controller, and whether this replica holds the leader Lease.
//! Registered once in `compose` on the process registry.
//!
//! Every controller's series exist from its construction ([`ControllerMetrics::declare`]), at
//! zero, with the failure categories any controller can hit ([`TRANSIENT_CATEGORIES`]): a rate,
//! an `increase()` or a dashboard panel over them returns data before the first failure.

use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// The failure categories every controller can produce (an API server error, a lost
/// compare-and-swap race), exposed at zero from the start.
pub const TRANSIENT_CATEGORIES: [&str; 2] = ["api_error", "conflict"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

#[derive(Clone)]
pub struct ControllerMetrics {
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
}

impl ControllerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
        };
        registry.register(
            "controller_reconcile",
            "Reconciliations run, by controller",
            metrics.reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_failures",
            "Reconciliations that failed, by controller and error category",
            metrics.failures.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Duration of reconciliations, by controller",
            metrics.duration.clone(),
        );
        metrics
    }

    /// Creates `controller`'s reconcile, duration and transient-failure series at zero.
    pub fn declare(&self, controller: &'static str) {
        let labels = ControllerLabels { controller };
        let _ = self.reconciles.get_or_create(&labels);
        let _ = self.duration.get_or_create(&labels);
        for category in TRANSIENT_CATEGORIES {
            let _ = self.failures.get_or_create(&FailureLabels {
                controller,
                category,
            });
        }
    }

    /// Starts timing one reconciliation; call [`ReconcileTimer::finish`] with its outcome.
    pub fn start(&self, controller: &'static str) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            controller,
            started: Instant::now(),
        }
    }

    pub fn failure(&self, controller: &'static str, category: &'static str) {
        self.failures
            .get_or_create(&FailureLabels {
                controller,
                category,
            })
            .inc();
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a ControllerMetrics,
    controller: &'static str,
    started: Instant,
}

impl ReconcileTimer<'_> {
    pub fn finish(self) {
        let labels = ControllerLabels {
            controller: self.controller,
        };
        self.metrics.reconciles.get_or_create(&labels).inc();
        self.metrics
            .duration
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// `spiderpool_controller_leader`: 1 while this replica holds the leader Lease (or runs without
/// leader election), else 0; read from the election's channel at scrape time.
pub fn register_leader(registry: &mut Registry, leading: watch::Receiver<bool>) {
    registry.register_collector(Box::new(LeaderCollector { leading }));
}

#[derive(Debug)]
struct LeaderCollector {
    leading: watch::Receiver<bool>,
}

impl Collector for LeaderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let value = i64::from(*self.leading.borrow());
        let metric = encoder.encode_descriptor(
            "controller_leader",
            "1 while this replica holds the leader Lease and runs the controllers, else 0.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(value).encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
        text
    }

    #[test]
    fn the_leader_gauge_follows_the_election() {
        let (sender, receiver) = watch::channel(false);
        let mut registry = Registry::with_prefix("spiderpool");
        register_leader(&mut registry, receiver);
        assert!(
            scrape(&registry)
                .lines()
                .any(|line| line == "spiderpool_controller_leader 0")
        );
        sender.send_replace(true);
        assert!(
            scrape(&registry)
                .lines()
                .any(|line| line == "spiderpool_controller_leader 1")
        );
        sender.send_replace(false);
        assert!(
            scrape(&registry)
                .lines()
                .any(|line| line == "spiderpool_controller_leader 0")
        );
    }

    #[test]
    fn a_declared_controller_has_zero_series_before_its_first_reconcile() {
        let mut registry = Registry::with_prefix("spiderpool");
        let metrics = ControllerMetrics::register(&mut registry);
        metrics.declare("ippool");
        let text = scrape(&registry);
        for line in [
            r#"spiderpool_controller_reconcile_total{controller="ippool"} 0"#,
            r#"spiderpool_controller_reconcile_failures_total{controller="ippool",category="api_error"} 0"#,
            r#"spiderpool_controller_reconcile_failures_total{controller="ippool",category="conflict"} 0"#,
            r#"spiderpool_controller_reconcile_duration_seconds_count{controller="ippool"} 0"#,
        ] {
            assert!(
                text.lines().any(|candidate| candidate == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
