//! The admission HTTPS server: one route per [`Hook`], AdmissionReview decoding and encoding,
//! per-request tracing and metrics.
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
use tracing::Instrument;

use super::field::Denial;
use super::handlers::{self, WebhookState};
use super::hooks::{Hook, Outcome};
use super::metrics::RequestLabels;

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
            // Found by fuzzing: a review the types refuse may still carry its uid, which the
            // caller matches the answer by; echo it.
            if let Some(uid) = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|raw| raw["request"]["uid"].as_str().map(str::to_string))
            {
                response.uid = uid;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use kube::runtime::reflector;
    use serde_json::{Value, json};

    use super::super::metrics::WebhookMetrics;
    use crate::shared::settings::SettingsSource;

    /// A state whose API client points nowhere: the hooks used here never call it.
    fn state() -> Arc<WebhookState> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let client = kube::Client::try_from(config).expect("a client");
        let mut registry = prometheus_client::registry::Registry::default();
        Arc::new(WebhookState {
            client,
            settings: SettingsSource::of(reflector::store().0, "ns", "conf"),
            pools: reflector::store().0,
            subnets: reflector::store().0,
            metrics: WebhookMetrics::register(&mut registry),
        })
    }

    async fn answer(hook: Hook, body: Value) -> Value {
        let response = review(state(), hook, Bytes::from(body.to_string())).await;
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        serde_json::from_slice(&bytes).expect("an AdmissionReview")
    }

    // Found by fuzzing (e2e/fuzz/regressions/webhook): an unreadable review answered uid "".
    #[tokio::test]
    async fn an_unreadable_review_is_denied_with_its_uid() {
        let mut body = request(
            "CREATE",
            json!({"kind": "SpiderIPPool", "metadata": {"name": "x"}}),
        );
        body["request"]
            .as_object_mut()
            .expect("an object")
            .remove("resource");
        let answer = answer(Hook::ValidateIPPool, body).await;
        assert_eq!(answer["response"]["allowed"], json!(false), "{answer}");
        assert_eq!(answer["response"]["uid"], json!("u-1"), "{answer}");
    }

    fn request(operation: &str, object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "spiderpool.spidernet.io", "version": "v2beta1", "kind": object["kind"].clone()},
                "resource": {"group": "spiderpool.spidernet.io", "version": "v2beta1", "resource": "x"},
                "name": object["metadata"]["name"].clone(),
                "operation": operation,
                "userInfo": {},
                "object": object,
            }
        })
    }

    #[tokio::test]
    async fn malformed_reviews_get_a_400_denial() {
        let response = review(
            state(),
            Hook::ValidateIPPool,
            Bytes::from_static(b"{not json"),
        )
        .await;
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body");
        let answer: Value = serde_json::from_slice(&bytes).expect("an AdmissionReview");
        assert_eq!(answer["response"]["allowed"], json!(false));
        assert_eq!(answer["response"]["status"]["code"], json!(400));
    }

    #[tokio::test]
    async fn defaulting_answers_with_a_json_patch() {
        let object = json!({"apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderReservedIP",
                            "metadata": {"name": "r"}, "spec": {"ips": ["10.0.0.2", "10.0.0.1"]}});
        let answer = answer(Hook::MutateReservedIP, request("CREATE", object)).await;
        let response = &answer["response"];
        assert_eq!(
            (response["uid"].clone(), response["allowed"].clone()),
            (json!("u-1"), json!(true))
        );
        assert_eq!(response["patchType"], json!("JSONPatch"));
        // kube encodes the patch bytes as a JSON array of numbers, which Go decodes into []byte.
        let patch: Vec<u8> =
            serde_json::from_value(response["patch"].clone()).expect("patch bytes");
        let patch: Value = serde_json::from_slice(&patch).expect("JSON");
        let text = patch.to_string();
        assert!(
            text.contains("/spec/ipVersion") && text.contains("10.0.0.1-10.0.0.2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn denials_carry_the_status_code_and_message() {
        let object = json!({"apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderCoordinator",
                            "metadata": {"name": "c"}, "spec": {"podCIDRType": "none", "podRPFilter": 4}});
        let answer = answer(Hook::ValidateCoordinator, request("CREATE", object)).await;
        let status = &answer["response"]["status"];
        assert_eq!(answer["response"]["allowed"], json!(false));
        assert_eq!(
            (status["code"].clone(), status["reason"].clone()),
            (json!(422), json!("Invalid"))
        );
        assert_eq!(
            status["message"],
            json!(
                "SpiderCoordinator.spiderpool.spidernet.io \"c\" is invalid: spec.podRPFilter: Unsupported value: 4: supported values: \"0\", \"1\", \"2\""
            )
        );
        assert_eq!(
            status["details"]["causes"][0]["field"],
            json!("spec.podRPFilter")
        );
    }
}
