//! AdmissionReviews through the webhook server's entry point ([`review`]), for every hook: the
//! decoding of the review and of the object, the per-kind defaulting and validation, the
//! annotation rules for pods, workloads and namespaces, and the encoding of the answer.
//!
//! Input: a selector byte (the hook, i.e. the URL path the API server posts to), then the
//! request body. The API client behind the handlers is a stand-in that lists one existing
//! IPPool and one existing Subnet (so overlap rules run) and answers 404 to every GET. Checked:
//! every body gets HTTP 200 with an AdmissionReview answer carrying the request's uid (or a 400
//! denial for an unreadable review), and every denial says why.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::body::{Bytes, to_bytes};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::reflector;
use serde_json::{Value, json};
use spiderpool_controller_manager::shared::settings::SettingsSource;
use spiderpool_controller_manager::webhook::handlers::WebhookState;
use spiderpool_controller_manager::webhook::hooks::Hook;
use spiderpool_controller_manager::webhook::metrics::WebhookMetrics;
use spiderpool_controller_manager::webhook::server::review;
use tokio::runtime::Runtime;

use crate::select;

/// The object every IPPool LIST returns.
pub fn existing_pool() -> Value {
    json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
        "metadata": {"name": "existing-v4", "resourceVersion": "1"},
        "spec": {"ipVersion": 4, "subnet": "10.10.0.0/24", "ips": ["10.10.0.1-10.10.0.10"]},
    })
}

/// The object every Subnet LIST returns.
pub fn existing_subnet() -> Value {
    json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderSubnet",
        "metadata": {"name": "existing-subnet", "resourceVersion": "1"},
        "spec": {"ipVersion": 4, "subnet": "10.20.0.0/16", "ips": ["10.20.0.1-10.20.0.100"]},
    })
}

fn respond(status: StatusCode, body: Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string().into_bytes()));
    *response.status_mut() = status;
    response
}

/// The stand-in API server: LIST of pools or subnets, 404 for anything else.
fn answer(method: &Method, path: &str) -> Response<Body> {
    let list = |item: Value| json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": [item]});
    if method == Method::GET && path.ends_with("/spiderippools") {
        return respond(StatusCode::OK, list(existing_pool()));
    }
    if method == Method::GET && path.ends_with("/spidersubnets") {
        return respond(StatusCode::OK, list(existing_subnet()));
    }
    respond(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{path} not found"), "reason": "NotFound", "code": 404}),
    )
}

struct Server {
    runtime: Runtime,
    state: Arc<WebhookState>,
}

fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let service = tower::service_fn(|request: Request<Body>| {
                let response = answer(request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            // The client's request buffer is a task: spawn it on this runtime.
            let client = {
                let _entered = runtime.enter();
                kube::Client::new(service, "default")
            };
            let mut registry = prometheus_client::registry::Registry::default();
            let state = Arc::new(WebhookState {
                client,
                settings: SettingsSource::of(
                    reflector::store().0,
                    "kube-system",
                    "spiderpool-conf",
                ),
                pools: reflector::store().0,
                subnets: reflector::store().0,
                metrics: WebhookMetrics::register(&mut registry),
            });
            Some(Server { runtime, state })
        })
        .as_ref()
}

pub fn run(data: &[u8]) {
    let Some((selector, body)) = select(data) else {
        return;
    };
    let hook = Hook::ALL[usize::from(selector) % Hook::ALL.len()];
    let Some(server) = server() else {
        panic!("cannot start the runtime of the webhook target");
    };
    let (status, bytes) = server.runtime.block_on(async {
        let response = review(server.state.clone(), hook, Bytes::copy_from_slice(body)).await;
        let status = response.status();
        (status, to_bytes(response.into_body(), usize::MAX).await)
    });
    assert_eq!(status, StatusCode::OK, "{hook:?} answered {status}");
    let Ok(bytes) = bytes else {
        panic!("{hook:?} answered a body that cannot be read");
    };
    let answer: Value = match serde_json::from_slice(&bytes) {
        Ok(answer) => answer,
        Err(error) => panic!("{hook:?} answered something that is not JSON ({error})"),
    };
    let response = &answer["response"];
    assert!(
        response["allowed"].is_boolean(),
        "{hook:?} answered without a decision: {answer}"
    );
    if response["allowed"] == json!(false) {
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{hook:?} denied without saying why: {answer}"
        );
    }
    let request_uid = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|review| review["request"]["uid"].as_str().map(str::to_string));
    if let Some(uid) = request_uid
        && response["uid"].is_string()
    {
        assert_eq!(response["uid"].as_str(), Some(uid.as_str()));
    }
}
