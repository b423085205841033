//! The plain-HTTP admin server: `/livez`, `/readyz` and `/metrics`.
//!
//! Readiness is a set of named conditions (e.g. "multusconfig cache synced"); `/readyz` is 200 only
//! when every registered condition holds, and otherwise names the ones that do not, so an operator
//! reading a failed probe knows what the replica is waiting for.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Named readiness conditions shared by every component of the process.
#[derive(Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<&'static str, bool>>>,
}

impl Readiness {
    /// Sets a condition as met or unmet (registering it on first use).
    pub fn set(&self, name: &'static str, ready: bool) {
        self.lock().insert(name, ready);
    }

    /// The names of unmet conditions; empty means ready.
    pub fn unmet(&self) -> Vec<&'static str> {
        self.lock()
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| *name)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, bool>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.conditions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sets `condition` once `store` has seen its first full list.
pub async fn mark_ready_when_synced<K>(
    store: kube::runtime::reflector::Store<K>,
    readiness: Readiness,
    condition: &'static str,
) where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    if synced(&store).await {
        readiness.set(condition, true);
        tracing::info!(condition, "cache synced");
    }
}

/// Waits until `store` has seen its first full list: true then, false if its writer is gone
/// first (the reflector stopped; readiness is reset by the supervisor).
///
/// kube-runtime's `Store::wait_until_ready` wakes only the most recently registered waiter
/// (its one-shot channel keeps a single waker), and a controller's own runner may wait on the
/// same store; re-polling on a short timer makes this waiter independent of that.
pub async fn synced<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
            Ok(Ok(())) => return true,
            Ok(Err(_)) => return false,
            Err(_elapsed) => {}
        }
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    registry: Arc<Registry>,
}

pub fn router(readiness: Readiness, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            readiness,
            registry,
        })
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let unmet = state.readiness.unmet();
    if unmet.is_empty() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", unmet.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {error}"),
        )
            .into_response(),
    }
}

/// Serves the admin router until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lists_only_unmet_conditions() {
        let readiness = Readiness::default();
        assert!(readiness.unmet().is_empty());
        readiness.set("cache", false);
        readiness.set("leader", false);
        readiness.set("leader", true);
        assert_eq!(readiness.unmet(), vec!["cache"]);
        readiness.set("cache", true);
        assert!(readiness.unmet().is_empty());
    }
}
