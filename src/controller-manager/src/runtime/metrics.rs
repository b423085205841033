//! Metrics every controller shares: reconcile counts, failures by stable error category and
//! reconcile duration, labelled by controller. Registered once in `main` on the process registry.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
