//! The frame every reconciler shares: a reconcile is timed in the controller metrics and a
//! success forgets the object's failures ([`Frame::timed`]); a failure is counted under its
//! stable category, logged and requeued after the object's own backoff ([`Frame::requeue`]); the
//! outcomes a controller's run stream yields are drained at debug level ([`drain`]); Events are
//! published as this process ([`Events`]).

use std::fmt::Display;
use std::future::Future;

use futures::{Stream, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use super::backoff::ErrorBackoff;
use super::metrics::ControllerMetrics;

/// The controller's name and its shared metrics and per-object backoff.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    pub controller: &'static str,
    pub metrics: &'a ControllerMetrics,
    pub backoff: &'a ErrorBackoff,
}

impl Frame<'_> {
    /// Runs one reconcile of the object `key`.
    pub async fn timed<T, E>(
        self,
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

    /// `error_policy`: the failure of `key` counted under `category` and requeued after its
    /// backoff; `quiet` logs it at info (failures that are part of normal operation, e.g. a
    /// scale-down waiting for pods to free addresses) instead of warn.
    pub fn requeue(
        self,
        key: &str,
        category: &'static str,
        error: &dyn Display,
        quiet: bool,
    ) -> Action {
        self.metrics.failure(self.controller, category);
        let delay = self.backoff.next_delay(key);
        if quiet {
            tracing::info!(controller = self.controller, object = %key, %error, retry_in = ?delay, "reconcile failed");
        } else {
            tracing::warn!(controller = self.controller, object = %key, %error, retry_in = ?delay, "reconcile failed");
        }
        Action::requeue(delay)
    }
}

/// Runs a controller's stream to its end; every outcome (errors are already reported by
/// [`Frame::requeue`]) is logged at debug level.
pub async fn drain<T, E: Display>(
    controller: &'static str,
    stream: impl Stream<Item = Result<T, E>>,
) {
    stream
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(controller, %error, "reconcile outcome");
            }
        })
        .await;
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
