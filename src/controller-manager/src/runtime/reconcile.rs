//! The frame every reconciler shares ([`Frame`]): a reconcile is timed in the controller metrics
//! and a success forgets the object's failures; a failure is counted under its stable category,
//! logged and requeued after the object's own backoff; the controller's run stream is drained
//! with its outcomes at debug level, and its readiness follows its cache. Events are published as
//! this process ([`Events`]).

use std::fmt::Display;
use std::future::Future;

use futures::{Stream, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{Lookup, Store};
use kube::{Client, Resource};

use super::admin::{Readiness, mark_ready_when_synced};
use super::backoff::ErrorBackoff;
use super::metrics::ControllerMetrics;

/// A controller's name, the metrics every controller shares and its per-object backoff.
pub struct Frame {
    controller: &'static str,
    metrics: ControllerMetrics,
    backoff: ErrorBackoff,
}

impl Frame {
    pub fn new(
        controller: &'static str,
        metrics: ControllerMetrics,
        backoff: ErrorBackoff,
    ) -> Self {
        Frame {
            controller,
            metrics,
            backoff,
        }
    }

    /// Runs the controller's `stream` to its end; `condition` holds once `store` has listed
    /// everything. Every outcome (errors are already reported by [`Frame::requeue`]) is logged
    /// at debug level.
    pub async fn run<K, T, E: Display>(
        &self,
        store: Store<K>,
        readiness: Readiness,
        condition: &'static str,
        stream: impl Stream<Item = Result<T, E>>,
    ) where
        K: Lookup + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        tokio::spawn(mark_ready_when_synced(store, readiness, condition));
        let controller = self.controller;
        stream
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(controller, %error, "reconcile outcome");
                }
            })
            .await;
    }

    /// Runs one reconcile of the object `key`.
    pub async fn timed<T, E>(
        &self,
        key: &str,
        reconcile: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let timer = self.metrics.start(self.controller);
        let result = reconcile.await;
        timer.finish();
        if result.is_ok() {
            self.backoff.reset(key);
        }
        result
    }

    /// A failure counted under its stable `category`.
    pub fn failure(&self, category: &'static str) {
        self.metrics.failure(self.controller, category);
    }

    /// `error_policy`: the failure of `key` counted under `category` and requeued after its
    /// backoff; `quiet` logs it at info (failures that are part of normal operation, e.g. a
    /// scale-down waiting for pods to free addresses) instead of warn.
    pub fn requeue(
        &self,
        key: &str,
        category: &'static str,
        error: &dyn Display,
        quiet: bool,
    ) -> Action {
        self.failure(category);
        let delay = self.backoff.next_delay(key);
        if quiet {
            tracing::info!(controller = self.controller, object = %key, %error, retry_in = ?delay, "reconcile failed");
        } else {
            tracing::warn!(controller = self.controller, object = %key, %error, retry_in = ?delay, "reconcile failed");
        }
        Action::requeue(delay)
    }
}

/// A controller's Events, reported as `spiderpool-controller-manager`, instance `$HOSTNAME` (the
/// pod name in a cluster). A failure to publish is logged, never fatal.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    /// What the controller was doing (`Reconcile`, `ReconcileAutoPool`).
    action: &'static str,
}

impl Events {
    pub fn new(client: &Client, action: &'static str) -> Events {
        let reporter = Reporter {
            controller: "spiderpool-controller-manager".into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Events {
            recorder: Recorder::new(client.clone(), reporter),
            action,
        }
    }

    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: self.action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            let name = object.meta().name.clone().unwrap_or_default();
            tracing::warn!(%error, object = %name, "publishing an event failed");
        }
    }
}
