//! The auto-pool controller (§4, upstream's application controller): per-workload auto-created
//! IPPools from SpiderSubnets, through the compare-and-swap reconcile of
//! [`spiderpool_store::autopool`]. Its metrics label and field manager keep upstream's name
//! (`application`).
//!
//! One controller per built-in kind (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job,
//! CronJob), leader only. Each watches its kind once: applied objects drive reconciles (filtered
//! to changes of what matters: UID, replicas, host network, pod template annotations), deletions
//! reclaim the workload's pools that say `ippool-reclaim: "true"`. A reconcile plans the pools
//! with [`spiderpool_ipam::autopool::plan_workload`] and makes each one right with
//! [`pools::ensure_pool`].
//!
//! Error handling (§4.4): wrong input (bad annotations, terminating subnet, a subnet of the wrong
//! family, a changed subnet) is reported with a Warning Event on the workload and not retried
//! until the workload changes; conflicts, a pool name still in use, scale-downs waiting for pods
//! to free addresses and everything else are retried with per-workload exponential backoff. An
//! exhausted subnet also gets a Warning Event. Successful workloads are looked at again every
//! `resync` (from the caches, without API calls when nothing changed), which also heals an auto
//! pool deleted by hand.

pub mod pools;
pub mod workload;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use spiderpool_api::SpiderIPPool;
use spiderpool_api::constants::{LABEL_IPPOOL_RECLAIM, LABEL_OWNER_APPLICATION_UID};
use spiderpool_ipam::annotations::has_subnet_annotation;
use spiderpool_ipam::autopool::{AutoPoolError, PoolChange, plan_workload};
use spiderpool_store::autopool::ReconcileError;

use crate::runtime::admin::Readiness;
use crate::runtime::backoff::ErrorBackoff;
use crate::runtime::metrics::ControllerMetrics;
use crate::runtime::reconcile::{Events, Frame};
use crate::shared::IpamShared;
use crate::shared::cache::IpamCache;
use crate::shared::locks::SubnetLocks;
use crate::shared::metrics::IpamCounters;
use crate::shared::settings::SettingsFn;
use workload::Workload;

pub const CONTROLLER_NAME: &str = "application";
/// Field manager of the auto pools this controller writes.
pub const FIELD_MANAGER: &str = "spiderpool-application-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("the batch serving this request was dropped")]
    BatchDropped,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Reconcile(error) => error.metric_label(),
            Error::BatchDropped => "conflicts_exhausted",
        }
    }

    /// `ErrWrongInput`: nothing but a change of the workload or subnet can fix it.
    pub fn is_wrong_input(&self) -> bool {
        match self {
            Error::Reconcile(error) => error.is_wrong_input(),
            Error::BatchDropped => false,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub events: Events,
    pub frame: Frame,
    pub counters: IpamCounters,
    pub cache: IpamCache,
    pub locks: SubnetLocks,
    pub batches: pools::SubnetBatches,
    pub settings: SettingsFn,
    /// How often a healthy workload is looked at again.
    pub resync: Duration,
}

impl Context {
    pub fn new(shared: &IpamShared, metrics: ControllerMetrics, resync: Duration) -> Context {
        Context {
            events: Events::new(&shared.client, "ReconcileAutoPool"),
            client: shared.client.clone(),
            frame: Frame::new(
                CONTROLLER_NAME,
                metrics,
                ErrorBackoff::new(Duration::from_millis(200), Duration::from_secs(60)),
            ),
            counters: shared.counters.clone(),
            cache: shared.cache.clone(),
            locks: shared.locks.clone(),
            batches: pools::SubnetBatches::default(),
            settings: shared.settings.clone(),
            resync,
        }
    }

    /// A Warning Event on an auto pool.
    pub async fn warn_pool(&self, pool: &SpiderIPPool, reason: &str, note: String) {
        self.events
            .publish(pool, EventType::Warning, reason, note)
            .await;
    }
}

fn readiness_condition(kind: &str) -> &'static str {
    match kind {
        "Deployment" => "deployment cache",
        "ReplicaSet" => "replicaset cache",
        "StatefulSet" => "statefulset cache",
        "DaemonSet" => "daemonset cache",
        "Job" => "job cache",
        _ => "cronjob cache",
    }
}

/// The readiness conditions of the six controllers.
pub const READINESS: [&str; 6] = [
    "deployment cache",
    "replicaset cache",
    "statefulset cache",
    "daemonset cache",
    "job cache",
    "cronjob cache",
];

/// Runs the six controllers until the future is dropped.
pub async fn run(context: Arc<Context>, readiness: Readiness) {
    tokio::join!(
        run_kind::<Deployment>(context.clone(), readiness.clone()),
        run_kind::<ReplicaSet>(context.clone(), readiness.clone()),
        run_kind::<StatefulSet>(context.clone(), readiness.clone()),
        run_kind::<DaemonSet>(context.clone(), readiness.clone()),
        run_kind::<Job>(context.clone(), readiness.clone()),
        run_kind::<CronJob>(context, readiness),
    );
}

/// What a reconcile depends on: a change of anything else is not worth one.
fn fingerprint<K: Workload>(workload: &K) -> Option<u64> {
    let view = workload::view(workload);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    view.app.uid.hash(&mut hasher);
    view.replicas.hash(&mut hasher);
    view.host_network.hash(&mut hasher);
    view.annotations.hash(&mut hasher);
    workload.served_by_parent().hash(&mut hasher);
    Some(hasher.finish())
}

async fn run_kind<K: Workload>(context: Arc<Context>, readiness: Readiness) {
    let condition = readiness_condition(K::KIND);
    let api: Api<K> = Api::all(context.client.clone());
    let (reader, writer) = reflector::store();
    let reclaim_context = context.clone();
    let triggers = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .filter_map(move |event| {
            let context = reclaim_context.clone();
            async move {
                match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                        Some(Ok(object))
                    }
                    Ok(watcher::Event::Delete(object)) => {
                        tokio::spawn(reclaim_deleted::<K>(context, object));
                        None
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                    Err(error) => Some(Err(error)),
                }
            }
        })
        .predicate_filter(fingerprint::<K>, Default::default());
    let controller = Controller::for_stream(triggers, reader.clone());
    let outcomes = controller.run(reconcile::<K>, error_policy::<K>, context.clone());
    context
        .frame
        .run(reader, readiness, condition, outcomes)
        .await;
}

fn key<K: Workload>(workload: &K) -> String {
    format!(
        "{}/{}/{}",
        K::KIND,
        workload.namespace().unwrap_or_default(),
        workload.name_any()
    )
}

async fn reconcile<K: Workload>(workload: Arc<K>, context: Arc<Context>) -> Result<Action, Error> {
    context
        .frame
        .timed(
            &key(workload.as_ref()),
            reconcile_inner(workload.as_ref(), &context),
        )
        .await
}

/// Failures are logged at info: waiting for a scale-down or a conflict is normal operation.
fn error_policy<K: Workload>(workload: Arc<K>, error: &Error, context: Arc<Context>) -> Action {
    context
        .frame
        .requeue(&key(workload.as_ref()), error.metric_label(), error, true)
}

async fn reconcile_inner<K: Workload>(workload: &K, context: &Context) -> Result<Action, Error> {
    if workload.meta().deletion_timestamp.is_some() || workload.served_by_parent() {
        return Ok(Action::await_change());
    }
    let view = workload::view(workload);
    let settings = (context.settings)();
    let requests = match plan_workload(&view, &settings) {
        Ok(requests) => requests,
        Err(error) => {
            context.counters.auto_pool_failed(error.metric_label());
            context.frame.failure(error.metric_label());
            context
                .events
                .publish(
                    workload,
                    EventType::Warning,
                    "InvalidSubnetAnnotation",
                    format!("cannot create auto IPPools: {error}"),
                )
                .await;
            return Ok(Action::await_change());
        }
    };
    if requests.is_empty() {
        return Ok(Action::await_change());
    }
    let mut first_error: Option<Error> = None;
    for request in &requests {
        match pools::ensure_pool(context, &view.app, request).await {
            Ok(outcome) => match outcome.change {
                PoolChange::Created => {
                    context.counters.auto_pool_created();
                    context
                        .events
                        .publish(
                            workload,
                            EventType::Normal,
                            "AutoPoolCreated",
                            format!(
                                "created IPPool {} with {} IPs from SpiderSubnet {}",
                                outcome.pool, outcome.size, request.subnet
                            ),
                        )
                        .await;
                }
                PoolChange::ScaledUp { from, to } | PoolChange::ScaledDown { from, to } => {
                    context.counters.auto_pool_scaled(to > from);
                    context
                        .events
                        .publish(
                            workload,
                            EventType::Normal,
                            "AutoPoolScaled",
                            format!("scaled IPPool {} from {from} to {to} IPs", outcome.pool),
                        )
                        .await;
                }
                PoolChange::Repaired | PoolChange::Unchanged => {}
            },
            Err(error) => {
                context.counters.auto_pool_failed(error.metric_label());
                let reason = match &error {
                    Error::Reconcile(ReconcileError::Plan(
                        AutoPoolError::InsufficientSubnetIps { .. },
                    )) => Some("InsufficientSubnetIPs"),
                    Error::Reconcile(ReconcileError::SubnetNotFound { .. }) => {
                        Some("SubnetNotFound")
                    }
                    error if error.is_wrong_input() => Some("InvalidAutoPool"),
                    _ => None,
                };
                if let Some(reason) = reason {
                    context
                        .events
            .publish(
                            workload,
                            EventType::Warning,
                            reason,
                            format!(
                                "cannot reconcile auto IPPool {} for interface {} from SpiderSubnet {}: {error}",
                                request.pool_name, request.nic, request.subnet
                            ),
                        )
                        .await;
                }
                if first_error.is_none() {
                    first_error = Some(error);
                }
            }
        }
    }
    match first_error {
        None => Ok(Action::requeue(context.resync)),
        Some(error) if error.is_wrong_input() => {
            context.frame.failure(error.metric_label());
            tracing::warn!(workload = %key(workload), %error, "not retrying until the workload changes");
            Ok(Action::await_change())
        }
        Some(error) => Err(error),
    }
}

/// Deletes the pools of a deleted workload that ask to be reclaimed (§4.7). A failure here is
/// covered by the IPPool controller, which deletes reclaimable pools whose workload is gone.
async fn reclaim_deleted<K: Workload>(context: Arc<Context>, workload: K) {
    if workload.served_by_parent() {
        return;
    }
    let view = workload::view(&workload);
    if !has_subnet_annotation(&view.annotations) || view.app.uid.is_empty() {
        return;
    }
    let pools: Api<SpiderIPPool> = Api::all(context.client.clone());
    let selector = format!(
        "{LABEL_OWNER_APPLICATION_UID}={},{LABEL_IPPOOL_RECLAIM}=true",
        view.app.uid
    );
    let mut delay = Duration::from_millis(200);
    for _ in 0..5 {
        match pools
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&selector),
            )
            .await
        {
            Ok(deleted) => {
                let count = deleted.left().map(|list| list.items.len()).unwrap_or(0);
                if count > 0 {
                    context.counters.auto_pool_reclaimed(count as u64);
                    tracing::info!(workload = %key(&workload), pools = count, "reclaimed the auto pools of a deleted workload");
                }
                return;
            }
            Err(error) => {
                tracing::warn!(workload = %key(&workload), %error, "reclaiming auto pools failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
