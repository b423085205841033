//! A fake API server for the fault-injection tests of the store's executors (test builds only).
//!
//! It keeps objects by path and answers GET (object or list), POST, PUT, JSON merge PATCH (of the
//! object or its `/status`, honouring a `metadata.resourceVersion` precondition) and DELETE (with
//! a UID precondition) the way kube-apiserver does, with a fresh resourceVersion per write. Faults
//! are scripted per method and path: fail with a status, answer late, or lose the answer (the
//! write is applied, the client sees a broken connection). The integration tests against a real
//! API server are the e2e suites; this exists to make failures happen on cue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// What a fault does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status code, applying nothing.
    Fail(u16),
    /// Apply the request, then break the connection instead of answering.
    Lose,
    /// Answer after this long (the request is applied when answered).
    Delay(Duration),
}

/// A fault for the `skip + 1`-th request whose method and path match (several faults may hit
/// one request: a delay, then a failure).
#[derive(Debug, Clone)]
struct Fault {
    method: &'static str,
    path: String,
    skip: usize,
    kind: FaultKind,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    version: u64,
    faults: Vec<Fault>,
    requests: Vec<(String, String)>,
}

/// The fake server; clones share its state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

/// Plural resources answered as lists when no object has the path.
const COLLECTIONS: [&str; 4] = [
    "pods",
    "spiderippools",
    "spiderreservedips",
    "spiderendpoints",
];

pub const POOLS: &str = "/apis/spiderpool.spidernet.io/v2beta1/spiderippools";
pub const RESERVED: &str = "/apis/spiderpool.spidernet.io/v2beta1/spiderreservedips";

pub fn endpoints(namespace: &str) -> String {
    format!("/apis/spiderpool.spidernet.io/v2beta1/namespaces/{namespace}/spiderendpoints")
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// RFC 7386.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

impl FakeApi {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `object` at `collection/<its name>`.
    pub fn insert(&self, collection: &str, mut object: Value) {
        let mut state = self.lock();
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let path = format!("{collection}/{name}");
        state.objects.insert(path, object);
    }

    /// The object at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Scripts `kind` for the request after `skip` matching ones (`path` is a suffix of the
    /// request's path).
    pub fn fault(
        &self,
        method: &'static str,
        path: impl Into<String>,
        skip: usize,
        kind: FaultKind,
    ) {
        self.lock().faults.push(Fault {
            method,
            path: path.into(),
            skip,
            kind,
        });
    }

    /// `METHOD path` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|(method, path)| format!("{method} {path}"))
            .collect()
    }

    pub fn client(&self) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let api = api.clone();
            async move { api.serve(request).await }
        });
        Client::new(service, "default")
    }

    async fn serve(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let body = request.into_body().collect_bytes().await?;
        let faults = self.take_faults(&method, &path);
        for fault in &faults {
            match *fault {
                FaultKind::Delay(delay) => tokio::time::sleep(delay).await,
                FaultKind::Fail(code) => {
                    let reason = if code == 409 {
                        "Conflict"
                    } else {
                        "InternalError"
                    };
                    return respond(code, &status(code, reason, "injected failure"));
                }
                FaultKind::Lose => {}
            }
        }
        let (code, answer) = self.handle(&method, &path, &body);
        if faults.contains(&FaultKind::Lose) {
            return Err("connection reset by peer (injected: the answer was lost)".into());
        }
        respond(code, &answer)
    }

    /// The faults that hit this request, delays first.
    fn take_faults(&self, method: &str, path: &str) -> Vec<FaultKind> {
        let mut state = self.lock();
        state.requests.push((method.to_string(), path.to_string()));
        let mut hit = Vec::new();
        state.faults.retain_mut(|fault| {
            if fault.method != method || !path.ends_with(&fault.path) {
                return true;
            }
            if fault.skip > 0 {
                fault.skip -= 1;
                return true;
            }
            hit.push(fault.kind);
            false
        });
        hit.sort_by_key(|kind| !matches!(kind, FaultKind::Delay(_)));
        hit
    }

    fn handle(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let mut state = self.lock();
        let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let object_path = path.strip_suffix("/status").unwrap_or(path).to_string();
        let not_found = || (404, status(404, "NotFound", &format!("{path} not found")));
        match method {
            "GET" => match state.objects.get(path) {
                Some(object) => (200, object.clone()),
                None if COLLECTIONS.iter().any(|plural| path.ends_with(plural)) => {
                    let prefix = format!("{path}/");
                    let items: Vec<Value> = state
                        .objects
                        .iter()
                        .filter(|(key, _)| {
                            key.strip_prefix(&prefix)
                                .is_some_and(|name| !name.contains('/'))
                        })
                        .map(|(_, object)| object.clone())
                        .collect();
                    let version = state.version.to_string();
                    (
                        200,
                        json!({"apiVersion": "v1", "kind": "List",
                                  "metadata": {"resourceVersion": version}, "items": items}),
                    )
                }
                None => not_found(),
            },
            "POST" => {
                let name = sent["metadata"]["name"].as_str().unwrap_or_default();
                let key = format!("{path}/{name}");
                if state.objects.contains_key(&key) {
                    return (
                        409,
                        status(409, "AlreadyExists", &format!("{name} already exists")),
                    );
                }
                state.version += 1;
                let mut object = sent.clone();
                object["metadata"]["resourceVersion"] = json!(state.version.to_string());
                object["metadata"]["uid"] = json!(format!("uid-{}", state.version));
                state.objects.insert(key, object.clone());
                (201, object)
            }
            "PUT" | "PATCH" => {
                let version = state.version + 1;
                let Some(object) = state.objects.get_mut(&object_path) else {
                    return not_found();
                };
                let expected = &sent["metadata"]["resourceVersion"];
                if !expected.is_null() && *expected != object["metadata"]["resourceVersion"] {
                    return (409, status(409, "Conflict", "the object has been modified"));
                }
                if method == "PUT" {
                    *object = sent.clone();
                } else {
                    merge(object, &sent);
                }
                object["metadata"]["resourceVersion"] = json!(version.to_string());
                let answer = object.clone();
                state.version = version;
                (200, answer)
            }
            "DELETE" => {
                let Some(object) = state.objects.get(path) else {
                    return not_found();
                };
                let uid = &sent["preconditions"]["uid"];
                if !uid.is_null() && *uid != object["metadata"]["uid"] {
                    return (409, status(409, "Conflict", "Precondition failed: UID"));
                }
                let object = object.clone();
                state.objects.remove(path);
                (200, object)
            }
            _ => (405, status(405, "MethodNotAllowed", method)),
        }
    }
}

fn respond(
    code: u16,
    answer: &Value,
) -> Result<http::Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(answer)?))?)
}
