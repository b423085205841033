//! Webhook metrics: admission requests by kind, operation and result, and their latency.
//! Registered on the process registry in `main`, like the controller metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Kind judged (`SpiderIPPool`, `Pod`, ...), from the route, never from the request.
    pub kind: &'static str,
    /// `mutate` or `validate`.
    pub webhook: &'static str,
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `unknown`.
    pub operation: &'static str,
    /// `allowed`, `patched`, or the denial category (`invalid`, `forbidden`, ...).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub kind: &'static str,
    pub webhook: &'static str,
}

#[derive(Clone)]
pub struct WebhookMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<LatencyLabels, Histogram>,
    certificate_reloads: Counter,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            certificate_reloads: Counter::default(),
        };
        registry.register(
            "webhook_requests",
            "Admission reviews answered, by kind, webhook, operation and result",
            metrics.requests.clone(),
        );
        registry.register(
            "webhook_request_duration_seconds",
            "Time to answer an admission review, by kind and webhook",
            metrics.duration.clone(),
        );
        registry.register(
            "webhook_certificate_reloads",
            "Serving certificates loaded after start-up (rotation)",
            metrics.certificate_reloads.clone(),
        );
        metrics
    }

    pub fn observe(&self, labels: RequestLabels, seconds: f64) {
        self.duration
            .get_or_create(&LatencyLabels {
                kind: labels.kind,
                webhook: labels.webhook,
            })
            .observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    pub fn certificate_reloaded(&self) {
        self.certificate_reloads.inc();
    }
}
