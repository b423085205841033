//! Reflectors that run from start to shutdown, on every replica: a watch feeding a read-only
//! cache, with a readiness condition that holds once the cache has listed everything. The
//! process-wide IPAM caches and the webhook's caches are made here.

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::admin::{Readiness, mark_ready_when_synced};

/// Starts a reflector of `api` on the current runtime and returns its cache; `condition` is unmet
/// until the first full list. Watch errors are logged and retried with kube's default backoff.
pub fn spawn<K>(
    api: Api<K>,
    config: watcher::Config,
    readiness: &Readiness,
    condition: &'static str,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    readiness.set(condition, false);
    tokio::spawn(mark_ready_when_synced(
        reader.clone(),
        readiness.clone(),
        condition,
    ));
    let stream = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, cache = condition, "watch error (retrying)");
                }
            })
            .await;
    });
    reader
}
