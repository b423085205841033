//! The admission HTTPS server: one route per kind and webhook, AdmissionReview decoding and
//! encoding, per-request tracing and metrics.
//!
//! Every answer is HTTP 200 with an AdmissionReview (what the API server expects); a body that
//! is not a readable AdmissionReview gets a denial with code 400, never a panic. Handlers return
//! an [`Outcome`]; mutations are JSON patches computed with `json_patch::diff` between the typed
//! object as received and as defaulted, so fields this program does not model are never touched.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::field::Denial;
use super::handlers::{self, WebhookState};
use super::metrics::RequestLabels;

/// What a handler decided.
#[derive(Debug)]
pub enum Outcome {
    Allow,
    Patch(json_patch::Patch),
    Deny(Denial),
}

/// The webhooks this server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    MutateIPPool,
    ValidateIPPool,
    MutateSubnet,
    ValidateSubnet,
    MutateReservedIP,
    ValidateReservedIP,
    MutateMultusConfig,
    ValidateMultusConfig,
    MutateCoordinator,
    ValidateCoordinator,
    ValidatePodAnnotations,
    ValidateWorkloadAnnotations,
    ValidateNamespaceAnnotations,
}

impl Hook {
    pub const ALL: [Hook; 13] = [
        Hook::MutateIPPool,
        Hook::ValidateIPPool,
        Hook::MutateSubnet,
        Hook::ValidateSubnet,
        Hook::MutateReservedIP,
        Hook::ValidateReservedIP,
        Hook::MutateMultusConfig,
        Hook::ValidateMultusConfig,
        Hook::MutateCoordinator,
        Hook::ValidateCoordinator,
        Hook::ValidatePodAnnotations,
        Hook::ValidateWorkloadAnnotations,
        Hook::ValidateNamespaceAnnotations,
    ];

    /// The URL path: upstream's controller-runtime paths for Spiderpool kinds, ours for the
    /// annotation checks.
    pub fn path(self) -> &'static str {
        match self {
            Hook::MutateIPPool => "/mutate-spiderpool-spidernet-io-v2beta1-spiderippool",
            Hook::ValidateIPPool => "/validate-spiderpool-spidernet-io-v2beta1-spiderippool",
            Hook::MutateSubnet => "/mutate-spiderpool-spidernet-io-v2beta1-spidersubnet",
            Hook::ValidateSubnet => "/validate-spiderpool-spidernet-io-v2beta1-spidersubnet",
            Hook::MutateReservedIP => "/mutate-spiderpool-spidernet-io-v2beta1-spiderreservedip",
            Hook::ValidateReservedIP => {
                "/validate-spiderpool-spidernet-io-v2beta1-spiderreservedip"
            }
            Hook::MutateMultusConfig => {
                "/mutate-spiderpool-spidernet-io-v2beta1-spidermultusconfig"
            }
            Hook::ValidateMultusConfig => {
                "/validate-spiderpool-spidernet-io-v2beta1-spidermultusconfig"
            }
            Hook::MutateCoordinator => "/mutate-spiderpool-spidernet-io-v2beta1-spidercoordinator",
            Hook::ValidateCoordinator => {
                "/validate-spiderpool-spidernet-io-v2beta1-spidercoordinator"
            }
            Hook::ValidatePodAnnotations => "/validate-ipam-annotations-v1-pod",
            Hook::ValidateWorkloadAnnotations => "/validate-ipam-annotations-workload",
            Hook::ValidateNamespaceAnnotations => "/validate-ipam-annotations-v1-namespace",
        }
    }

    /// The kind label of metrics and logs.
    pub fn kind(self) -> &'static str {
        match self {
            Hook::MutateIPPool | Hook::ValidateIPPool => "SpiderIPPool",
            Hook::MutateSubnet | Hook::ValidateSubnet => "SpiderSubnet",
            Hook::MutateReservedIP | Hook::ValidateReservedIP => "SpiderReservedIP",
            Hook::MutateMultusConfig | Hook::ValidateMultusConfig => "SpiderMultusConfig",
            Hook::MutateCoordinator | Hook::ValidateCoordinator => "SpiderCoordinator",
            Hook::ValidatePodAnnotations => "Pod",
            Hook::ValidateWorkloadAnnotations => "Workload",
            Hook::ValidateNamespaceAnnotations => "Namespace",
        }
    }

    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            Hook::MutateIPPool
                | Hook::MutateSubnet
                | Hook::MutateReservedIP
                | Hook::MutateMultusConfig
                | Hook::MutateCoordinator
        )
    }
}

/// The path answering 200 while the server runs (upstream's `/webhook-health-check`).
pub const HEALTH_PATH: &str = "/webhook-health-check";

pub fn router(state: Arc<WebhookState>) -> Router {
    let mut router = Router::new().route(HEALTH_PATH, get(|| async { "ok" }));
    for hook in Hook::ALL {
        let state = state.clone();
        router = router.route(
            hook.path(),
            post(move |body: Bytes| review(state.clone(), hook, body)),
        );
    }
    router.fallback(|| async { (StatusCode::NOT_FOUND, "no webhook at this path\n") })
}

fn operation_label(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Answers one AdmissionReview.
pub async fn review(state: Arc<WebhookState>, hook: Hook, body: Bytes) -> Response {
    let started = Instant::now();
    let webhook = if hook.is_mutating() {
        "mutate"
    } else {
        "validate"
    };
    let parsed: Result<AdmissionRequest<DynamicObject>, String> =
        serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body)
            .map_err(|error| format!("malformed AdmissionReview: {error}"))
            .and_then(|review| {
                review
                    .try_into()
                    .map_err(|_| "malformed AdmissionReview: no request".to_string())
            });
    let request = match parsed {
        Ok(request) => request,
        Err(message) => {
            tracing::warn!(kind = hook.kind(), webhook, %message, "refusing an unreadable review");
            let denial = Denial::BadRequest(message);
            state.metrics.observe(
                RequestLabels {
                    kind: hook.kind(),
                    webhook,
                    operation: "unknown",
                    result: denial.metric_label(),
                },
                started.elapsed().as_secs_f64(),
            );
            let mut response = AdmissionResponse::invalid(denial.message());
            response.result = denial.status();
            return json_response(&response.into_review());
        }
    };
    let operation = operation_label(&request.operation);
    let span = tracing::debug_span!(
        "admission",
        kind = hook.kind(),
        webhook,
        operation,
        name = %request.name,
        namespace = request.namespace.as_deref().unwrap_or(""),
        uid = %request.uid,
        dry_run = request.dry_run,
    );
    let outcome = handlers::handle(&state, hook, &request)
        .instrument(span.clone())
        .await;
    let mut response = AdmissionResponse::from(&request);
    let result = match outcome {
        Outcome::Allow => "allowed",
        Outcome::Patch(patch) if patch.0.is_empty() => "allowed",
        Outcome::Patch(patch) => match response.clone().with_patch(patch) {
            Ok(patched) => {
                response = patched;
                "patched"
            }
            Err(error) => {
                // Serialising a patch of JSON values cannot fail; admit unmutated if it does.
                tracing::error!(parent: &span, %error, "cannot serialise the patch");
                "allowed"
            }
        },
        Outcome::Deny(denial) => {
            response.allowed = false;
            response.result = denial.status();
            tracing::info!(parent: &span, code = denial.code(), message = %denial.message(), "denied");
            denial.metric_label()
        }
    };
    let elapsed = started.elapsed();
    tracing::debug!(parent: &span, result, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
    state.metrics.observe(
        RequestLabels {
            kind: hook.kind(),
            webhook,
            operation,
            result,
        },
        elapsed.as_secs_f64(),
    );
    json_response(&response.into_review())
}

fn json_response<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the AdmissionReview failed: {error}"),
        )
            .into_response(),
    }
}

/// Decodes the request's object (or old object) into a typed kind.
pub fn typed<K: DeserializeOwned>(object: Option<&DynamicObject>, what: &str) -> Result<K, Denial> {
    let object =
        object.ok_or_else(|| Denial::BadRequest(format!("the review carries no {what}")))?;
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .map_err(|error| Denial::BadRequest(format!("cannot decode the {what}: {error}")))
}

/// The JSON patch turning `before` into `after`.
pub fn patch_between<K: Serialize>(before: &K, after: &K) -> Result<json_patch::Patch, Denial> {
    let before = serde_json::to_value(before)
        .map_err(|error| Denial::Internal(format!("encoding the object: {error}")))?;
    let after = serde_json::to_value(after)
        .map_err(|error| Denial::Internal(format!("encoding the object: {error}")))?;
    Ok(json_patch::diff(&before, &after))
}
