//! `spiderpool-store`: the allocation and release paths of §5 against the API server, shared by
//! the CNI plugin and the controller-manager.
//!
//! The CNI plugin calls [`Store::allocate`] on ADD and [`Store::release`] on DEL; the
//! controller-manager uses the same writers (garbage collection, auto pools, subnet status).
//! Everything here is I/O around the pure core of `spiderpool-ipam`:
//! read the pod, its namespace, node and top controller, the candidate pools and the reserved IPs,
//! call [`spiderpool_ipam::selection`] and [`spiderpool_ipam::ledger`], and write back
//!
//! - each pool's `status.allocatedIPs` with compare-and-swap ([`cas`]): bounded, jittered
//!   exponential retries on `409 Conflict`, conflicts and retries counted and returned
//!   ([`CasStats`]); optionally serialised per pool on one node with a lock file ([`lock`]);
//! - the SpiderEndpoint of the pod (§5.7): created with a finalizer and an owner reference to the
//!   pod (none for StatefulSet pods, whose addresses outlive the pod), updated with a
//!   `resourceVersion` precondition;
//! - auto pools and their subnet records ([`autopool`]): the one reconcile the controller-manager
//!   and the plugin share, and the one writer of `SpiderSubnet.status`.
//!
//! [`invariants`] gathers the snapshot the invariant checker of `spiderpool-ipam` reads (the
//! e2e suites and `kubectl spiderpool check` use it); [`workload`] is the six built-in workload
//! kinds behind one trait.
//!
//! [`objects`] reads API objects as the core's views and sets. An ADD is planned by a pure
//! planner and carried out by an executor with a rollback log (`allocate/`); its failure paths
//! are tested against a fake API server that fails, answers late and loses answers.
//!
//! Nothing is cached between calls (every CNI call is a new process), and nothing is serialised
//! through a lease.
//!
//! The API access the plugin needs (its RBAC, `config/rbac/cni.yaml`): `get` pods, namespaces,
//! nodes, replicasets, jobs, statefulsets; `get`, `list`, `create`, `patch` spiderippools and
//! `patch` spiderippools/status; `list` spiderreservedips; `get`, `create`, `update`, `patch`,
//! `delete` spiderendpoints; for third-party controllers' auto pools ([`autopool`]) `get`
//! spidersubnets and `patch` spidersubnets/status.

#![forbid(unsafe_code)]

mod allocate;
pub mod autopool;
pub mod cas;
pub mod combine;
mod context;
mod endpoint;
#[cfg(test)]
mod fake_api;
pub mod inspect;
pub mod invariants;
pub mod lock;
pub mod objects;
mod release;
pub mod workload;

use std::path::Path;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use spiderpool_api::{SpiderEndpoint, SpiderIPPool, SpiderReservedIP};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::OnceCell;

use spiderpool_ipam::annotations::AnnotationError;
use spiderpool_ipam::ledger::{AllocateError, LedgerError};
use spiderpool_ipam::result::ResultError;
use spiderpool_ipam::selection::SelectionError;

pub use allocate::{AddOutcome, AddRequest, AddSource, ROLLBACK_BUDGET};
pub use cas::{Backoff, CasStats, PoolWriter, Step};
pub use combine::{LedgerOp, LedgerOutcome};
pub use lock::LockDir;
pub use objects::{pool_view, reserved_set};
pub use release::{DelOutcome, DelRequest};

/// Errors of the store. [`StoreError::metric_label`] gives a stable category; the CNI plugin maps
/// categories to error codes.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("failed to load kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    /// The API server could not be reached or did not answer in time (worth retrying).
    #[error("API server unavailable: failed to {what}: {detail}")]
    Unavailable { what: String, detail: String },
    /// The API server answered with an error that a retry will not fix.
    #[error("failed to {what}: {detail}")]
    Api {
        what: String,
        code: u16,
        detail: String,
    },
    #[error("gave up waiting for {what}: the call's deadline passed")]
    Deadline { what: String },
    /// Every compare-and-swap write of the pool lost a conflict. The message is upstream's for an
    /// allocation; a release says it was releasing (see [`StoreError::in_release`]).
    #[error(
        "exhaust all retries ({attempts} times), failed to {} IPPool {pool}: the pool kept changing under concurrent writers",
        if *releasing { "release IP to" } else { "allocate IP from" }
    )]
    ConflictsExhausted {
        pool: String,
        attempts: u32,
        releasing: bool,
    },
    #[error("IPPool {pool} was deleted during the allocation")]
    PoolGone { pool: String },
    #[error(
        "pod {namespace}/{name} not found: it may have been deleted before its sandbox was set up"
    )]
    PodNotFound { namespace: String, name: String },
    #[error("dead Pod {namespace}/{name}, we cannot allocate IP addresees to it")]
    DeadPod { namespace: String, name: String },
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error(transparent)]
    Allocate(#[from] AllocateError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Result(#[from] ResultError),
    #[error("failed to take the node-local lock {path}: {detail}")]
    Lock { path: String, detail: String },
    #[error("{0}")]
    AutoPool(String),
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// The same error, told as part of a release: a pool that kept changing was being released
    /// to, not allocated from.
    pub fn in_release(self) -> StoreError {
        match self {
            StoreError::ConflictsExhausted { pool, attempts, .. } => {
                StoreError::ConflictsExhausted {
                    pool,
                    attempts,
                    releasing: true,
                }
            }
            other => other,
        }
    }

    /// A stable category for metrics, logs and error codes.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Kubeconfig { .. } => "kubeconfig",
            StoreError::Unavailable { .. } => "api_unavailable",
            StoreError::Api { .. } => "api_error",
            StoreError::Deadline { .. } => "deadline",
            StoreError::ConflictsExhausted { .. } => "conflicts_exhausted",
            StoreError::PoolGone { .. } => "pool_gone",
            StoreError::PodNotFound { .. } => "pod_not_found",
            StoreError::DeadPod { .. } => "dead_pod",
            StoreError::Selection(error) => error.metric_label(),
            StoreError::Annotation(error) => error.metric_label(),
            StoreError::Allocate(error) => error.metric_label(),
            StoreError::Ledger(error) => error.metric_label(),
            StoreError::Result(error) => error.metric_label(),
            StoreError::Lock { .. } => "lock",
            StoreError::AutoPool(_) => "auto_pool",
            StoreError::Invalid(_) => "invalid_object",
        }
    }

    /// Whether a later retry of the whole call may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. }
                | StoreError::Deadline { .. }
                | StoreError::ConflictsExhausted { .. }
                | StoreError::PoolGone { .. }
        )
    }
}

/// Classifies a client error: no answer, throttling and server-side failures are transient.
pub(crate) fn api_error(
    what: impl Into<String>,
    error: impl std::borrow::Borrow<kube::Error>,
) -> StoreError {
    let what = what.into();
    match error.borrow() {
        kube::Error::Api(status) => {
            let transient = status.code == 429
                || status.code >= 500
                || matches!(
                    status.reason.as_str(),
                    "Timeout" | "ServerTimeout" | "TooManyRequests"
                );
            let detail = if status.message.is_empty() {
                format!("{} ({})", status.reason, status.code)
            } else {
                status.message.clone()
            };
            if transient {
                StoreError::Unavailable { what, detail }
            } else {
                StoreError::Api {
                    what,
                    code: status.code,
                    detail,
                }
            }
        }
        kube::Error::SerdeError(error) => StoreError::Invalid(format!(
            "failed to {what}: unexpected object from the API server: {error}"
        )),
        other => StoreError::Unavailable {
            what,
            detail: other.to_string(),
        },
    }
}

/// A LIST served from the API server's cache (`resourceVersion=0`): a consistent LIST waits for
/// the cache to catch up with etcd, tens of milliseconds per call, which reservations and pool
/// specs read for selection are not worth. A cache that is not ready answers `429` ("storage is
/// (re)initializing", right after an API server (re)start or a CRD's creation) or a `5xx`: then a
/// consistent LIST is tried, and the pair is retried a few times with a short backoff (at most
/// [`LIST_RETRY_BUDGET`] in all) before the error goes back to the runtime as "try again later"
/// (the last error is returned; callers classify it with [`api_error`]).
pub(crate) async fn list_cached<K>(
    api: &Api<K>,
    params: &kube::api::ListParams,
    what: &str,
) -> Result<Vec<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let not_ready = |error: &kube::Error| matches!(error, kube::Error::Api(status) if status.code == 429 || status.code >= 500);
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let error = match api.list(&params.clone().match_any()).await {
            Ok(list) => return Ok(list.items),
            Err(error) if not_ready(&error) => match api.list(params).await {
                Ok(list) => return Ok(list.items),
                Err(error) => error,
            },
            Err(error) => error,
        };
        if !not_ready(&error) || started.elapsed() + pause > LIST_RETRY_BUDGET {
            return Err(error);
        }
        log::info!("{what}: the API server is not ready ({error}); retrying in {pause:?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// How long [`list_cached`] keeps retrying a LIST the API server is not ready to serve.
pub(crate) const LIST_RETRY_BUDGET: Duration = Duration::from_secs(3);

/// Options of a [`Store`].
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Node-local lock files and operation queues per pool ([`combine`]); `None` disables
    /// node-local serialisation and combining.
    pub lock_dir: Option<LockDir>,
    pub backoff: Backoff,
}

/// The allocation store of one CNI call (or one controller).
#[derive(Clone)]
pub struct Store {
    client: Client,
    options: StoreOptions,
    reserved_cache: Arc<OnceCell<Vec<SpiderReservedIP>>>,
}

impl Store {
    pub fn new(client: Client, options: StoreOptions) -> Store {
        Store {
            client,
            options,
            reserved_cache: Arc::default(),
        }
    }

    /// A client from a kubeconfig file. The rustls crypto provider must be installed by the
    /// caller first.
    ///
    /// Built by hand rather than with `Client::try_from(config)` for one reason: kube's
    /// connector leaves Nagle's algorithm on, and the first request after the TLS handshake then
    /// waits for the delayed ACK of the handshake's last flight (about 40 ms, every CNI call,
    /// since every call is a new process with a new connection). The layers are kube's: base URI
    /// and authentication.
    pub async fn client_from_kubeconfig(
        path: &Path,
        request_timeout: Duration,
    ) -> Result<Client, StoreError> {
        use hyper_util::client::legacy::connect::HttpConnector;
        use hyper_util::rt::TokioExecutor;
        use kube::client::ConfigExt;
        use tower::ServiceBuilder;

        let kubeconfig_error = |detail: String| StoreError::Kubeconfig {
            path: path.display().to_string(),
            detail,
        };
        let kubeconfig =
            Kubeconfig::read_from(path).map_err(|error| kubeconfig_error(error.to_string()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|error| kubeconfig_error(error.to_string()))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(request_timeout.min(Duration::from_secs(10))));
        let https = config
            .rustls_https_connector_with_connector(http)
            .map_err(|error| kubeconfig_error(error.to_string()))?;
        let hyper_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
        let auth = config
            .auth_layer()
            .map_err(|error| kubeconfig_error(error.to_string()))?;
        let service = ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(auth)
            .map_err(tower::BoxError::from)
            .service(hyper_client);
        Ok(Client::new(service, config.default_namespace))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn pools(&self) -> Api<SpiderIPPool> {
        Api::all(self.client.clone())
    }

    pub(crate) fn endpoints(&self, namespace: &str) -> Api<SpiderEndpoint> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The compare-and-swap writer of pool statuses.
    pub fn pool_writer(&self) -> PoolWriter {
        PoolWriter {
            pools: self.pools(),
            reserved_ips: Api::all(self.client.clone()),
            reserved_cache: self.reserved_cache.clone(),
            lock_dir: self.options.lock_dir.clone(),
            backoff: self.options.backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ListParams;
    use kube::client::Body;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const NOT_READY: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"storage is (re)initializing","reason":"TooManyRequests","code":429}"#;
    const EMPTY: &str = r#"{"kind":"SpiderReservedIPList","apiVersion":"spiderpool.spidernet.io/v2beta1","metadata":{"resourceVersion":"7"},"items":[]}"#;

    /// A client whose API server answers "not ready" to the first `not_ready` requests.
    fn client(not_ready: usize) -> (Client, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let service = tower::service_fn(move |_request: http::Request<Body>| {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let (status, body) = if call < not_ready {
                    (429, NOT_READY)
                } else {
                    (200, EMPTY)
                };
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.as_bytes().to_vec()))
            }
        });
        (Client::new(service, "default"), calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_the_api_server_is_not_ready_for_is_retried() {
        let (client, calls) = client(3);
        let api: Api<SpiderReservedIP> = Api::all(client);
        let listed = list_cached(&api, &ListParams::default(), "list SpiderReservedIPs").await;
        assert!(matches!(listed.as_deref(), Ok([])), "{listed:?}");
        // cached LIST, consistent LIST (both 429), cached LIST (429), consistent LIST (200)
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_that_never_gets_ready_is_a_transient_error_within_the_budget() {
        let (client, calls) = client(usize::MAX);
        let api: Api<SpiderReservedIP> = Api::all(client);
        let started = tokio::time::Instant::now();
        let what = "list SpiderReservedIPs";
        let listed = list_cached(&api, &ListParams::default(), what)
            .await
            .map_err(|error| api_error(what, error));
        let Err(error) = listed else {
            panic!("listed {listed:?}");
        };
        assert!(error.is_transient(), "{error}");
        assert!(
            error.to_string().contains("storage is (re)initializing"),
            "{error}"
        );
        assert!(
            started.elapsed() <= LIST_RETRY_BUDGET,
            "{:?}",
            started.elapsed()
        );
        assert!(calls.load(Ordering::SeqCst) >= 6, "{calls:?}");
    }
}
