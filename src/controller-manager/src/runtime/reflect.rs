//! Reflectors that run from start to shutdown, on every replica: a watch feeding a read-only
//! cache, with a readiness condition that holds once the cache has listed everything. The
//! process-wide IPAM caches (read by the webhooks and the IPAM controllers alike) and the
//! settings caches are made here.
//!
//! A cache can also tell what it just took in ([`Changes`]): a controller that reads the cache
//! when triggered must be triggered by the cache itself, not by a watch of its own. Two watches
//! of one kind deliver the same event at different moments, and a reconcile triggered by the
//! faster one reads a cache that does not have the change yet, then waits for its resync.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use super::admin::{Readiness, mark_ready_when_synced};

/// How many changes a subscriber may fall behind before it is told it lost some.
const CHANGES_CAPACITY: usize = 1024;

/// The objects a cache has taken in, each sent once the cache holds the change (an applied
/// object is readable from the cache, a deleted one is gone from it). After a relist, every
/// listed object is sent once the new list has replaced the old one; an object that vanished
/// across the relist is not sent (its deletion is not seen), which is why controllers keep a
/// resync. Nothing is kept for a cache nobody subscribes to.
#[derive(Clone)]
pub struct Changes<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    sender: broadcast::Sender<Arc<K>>,
    store: Store<K>,
}

impl<K> Changes<K>
where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    /// Changes of a cache that no reflector feeds (tests that fill a cache by hand).
    #[cfg(test)]
    pub(crate) fn idle(store: Store<K>) -> Changes<K> {
        Changes {
            sender: broadcast::channel(1).0,
            store,
        }
    }

    /// The changes from now on, until the reflector stops. A subscriber that falls more than
    /// [`CHANGES_CAPACITY`] behind gets every object of the cache instead of what it missed.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let store = self.store.clone();
        futures::stream::unfold(self.sender.subscribe(), |mut receiver| async move {
            let change = match receiver.recv().await {
                Ok(object) => Some(object),
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((change, receiver))
        })
        .flat_map(move |change| {
            futures::stream::iter(match change {
                Some(object) => vec![object],
                None => store.state(),
            })
        })
    }

    /// Every object the cache holds now, then [`Self::subscribe`]'s changes: what a controller
    /// starting on a synced cache must look at (a change racing the snapshot comes twice, never
    /// not at all).
    pub fn replay(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let changes = self.subscribe();
        futures::stream::iter(self.store.state()).chain(changes)
    }
}

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
    spawn_with_changes(api, config, readiness, condition).0
}

/// [`spawn`], also returning the cache's [`Changes`].
pub fn spawn_with_changes<K>(
    api: Api<K>,
    config: watcher::Config,
    readiness: &Readiness,
    condition: &'static str,
) -> (Store<K>, Changes<K>)
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
    let (sender, _) = broadcast::channel(CHANGES_CAPACITY);
    let changes = Changes {
        sender: sender.clone(),
        store: reader.clone(),
    };
    // `reflect` applies each event to the cache before passing it on. No reader needs
    // managedFields; dropping them saves about a kilobyte per cached object.
    let mut stream = watcher(api, config)
        .default_backoff()
        .modify(|object| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .boxed();
    tokio::spawn(async move {
        let mut relisted = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                    // An error only means nobody listens.
                    let _ = sender.send(Arc::new(object));
                }
                Ok(watcher::Event::Init) => relisted.clear(),
                // Listed objects join the cache together, at InitDone.
                Ok(watcher::Event::InitApply(object)) => {
                    if sender.receiver_count() > 0 {
                        relisted.push(Arc::new(object));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    for object in relisted.drain(..) {
                        let _ = sender.send(object);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, cache = condition, "watch error (retrying)");
                }
            }
        }
    });
    (reader, changes)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;

    use super::*;

    fn config_map(name: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.name = Some(name.to_string());
        object
    }

    /// Changes over a cache holding `a` and `b`, with room for two unread changes.
    fn changes() -> (broadcast::Sender<Arc<ConfigMap>>, Changes<ConfigMap>) {
        let (reader, mut writer) = reflector::store::<ConfigMap>();
        for name in ["a", "b"] {
            writer.apply_watcher_event(&watcher::Event::Apply(config_map(name)));
        }
        let (sender, _) = broadcast::channel(2);
        let changes = Changes {
            sender: sender.clone(),
            store: reader,
        };
        (sender, changes)
    }

    async fn names(stream: impl Stream<Item = Arc<ConfigMap>>, count: usize) -> Vec<String> {
        let mut names: Vec<String> = stream
            .take(count)
            .map(|object| object.name_any())
            .collect()
            .await;
        // The cache's own order is unspecified; changes are compared in order after it.
        names[..count.min(2)].sort();
        names
    }

    #[tokio::test]
    async fn a_subscriber_gets_each_change_and_the_whole_cache_when_it_fell_behind() {
        let (sender, changes) = changes();
        let mut subscription = Box::pin(changes.subscribe());
        sender.send(Arc::new(config_map("x"))).expect("subscribed");
        assert_eq!(
            subscription.next().await.map(|object| object.name_any()),
            Some("x".to_string())
        );
        // Three unread changes in room for two: the oldest is lost, so the subscriber gets the
        // whole cache, then the two changes still held.
        for name in ["lost", "y", "z"] {
            sender.send(Arc::new(config_map(name))).expect("subscribed");
        }
        assert_eq!(names(subscription, 4).await, ["a", "b", "y", "z"]);
    }

    #[tokio::test]
    async fn a_replay_starts_with_the_cache_and_misses_no_change_made_after_it_began() {
        let (sender, changes) = changes();
        let replay = changes.replay();
        sender.send(Arc::new(config_map("x"))).expect("subscribed");
        assert_eq!(names(replay, 3).await, ["a", "b", "x"]);
    }
}
