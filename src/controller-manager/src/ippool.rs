//! The IPPool controller (§1.1.7), leader only.
//!
//! For every pool:
//! - terminating: the finalizer goes once the ledger is empty — removed with the resourceVersion
//!   of the read that saw it empty, so an allocation racing the removal makes it fail instead of
//!   leaking an address;
//! - otherwise the finalizer is ensured, and `status.totalIPCount` / `status.allocatedIPCount`
//!   are kept true: recomputed from the spec and the ledger and written with compare-and-swap,
//!   touching only those two fields (the ledger itself belongs to the IPAM path);
//! - auto pools marked `ippool-reclaim: "true"` without allocations whose workload is gone, or
//!   was replaced by one with another UID, are deleted (`cleanAutoIPPoolLegacy`, covering missed
//!   deletion events). They are looked at again every `legacy_check` so a missed event is caught
//!   even when nothing else happens to the pool.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::{Client, ResourceExt};
use serde_json::json;
use spiderpool_api::SpiderIPPool;
use spiderpool_api::constants::{
    FINALIZER, LABEL_OWNER_APPLICATION_GV, LABEL_OWNER_APPLICATION_KIND,
    LABEL_OWNER_APPLICATION_NAME, LABEL_OWNER_APPLICATION_NAMESPACE, LABEL_OWNER_APPLICATION_UID,
};
use spiderpool_ipam::autopool::parse_application_gv;
use spiderpool_ipam::ledger::LedgerError;
use spiderpool_ipam::pod::AppRef;
use spiderpool_store::objects::{self, is_conflict, is_not_found};

use crate::runtime::admin::Readiness;
use crate::runtime::backoff::ErrorBackoff;
use crate::runtime::metrics::ControllerMetrics;
use crate::runtime::reconcile::Frame;
use crate::shared::IpamShared;
use crate::shared::cache::IpamCache;
use crate::shared::metrics::{IpamCounters, pool_usage};
use crate::shared::workloads::current_uid;

pub const CONTROLLER_NAME: &str = "ippool";
pub const READINESS: &str = "ippool controller cache";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("failed to {what}: {source}")]
    Kube { what: String, source: kube::Error },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Ledger(error) => error.metric_label(),
            Error::Kube { source, .. } if is_conflict(source) => "conflict",
            Error::Kube { .. } => "api_error",
        }
    }
}

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

pub struct Context {
    pub client: Client,
    pub frame: Frame,
    pub cache: IpamCache,
    pub counters: IpamCounters,
    pub legacy_check: Duration,
}

impl Context {
    pub fn new(shared: &IpamShared, metrics: ControllerMetrics) -> Context {
        Context {
            client: shared.client.clone(),
            frame: Frame::new(
                CONTROLLER_NAME,
                metrics,
                ErrorBackoff::new(Duration::from_millis(100), Duration::from_secs(60)),
            ),
            cache: shared.cache.clone(),
            counters: shared.counters.clone(),
            legacy_check: Duration::from_secs(120),
        }
    }
}

pub async fn run(context: Arc<Context>, readiness: Readiness) {
    // The process-wide pool cache is this controller's store and trigger: no second copy of
    // every pool in memory, no second watch on the API server.
    context.cache.synced().await;
    let store = context.cache.pools.clone();
    let controller =
        Controller::for_shared_stream(context.cache.pool_changes.replay(), store.clone());
    let outcomes = controller.run(reconcile, error_policy, context.clone());
    context
        .frame
        .run(store, readiness, READINESS, outcomes)
        .await;
}

async fn reconcile(pool: Arc<SpiderIPPool>, context: Arc<Context>) -> Result<Action, Error> {
    context
        .frame
        .timed(&pool.name_any(), reconcile_inner(&pool, &context))
        .await
}

fn error_policy(pool: Arc<SpiderIPPool>, error: &Error, context: Arc<Context>) -> Action {
    context
        .frame
        .requeue(&pool.name_any(), error.metric_label(), error, false)
}

fn has_finalizer(pool: &SpiderIPPool) -> bool {
    pool.finalizers()
        .iter()
        .any(|finalizer| finalizer == FINALIZER)
}

/// The workload an auto pool was created for, from its `owner-application-*` labels.
fn owner_application(pool: &SpiderIPPool) -> Option<AppRef> {
    let (group, version) = parse_application_gv(objects::label(pool, LABEL_OWNER_APPLICATION_GV)?)?;
    Some(AppRef {
        group,
        version,
        kind: objects::label(pool, LABEL_OWNER_APPLICATION_KIND)?.to_string(),
        namespace: objects::label(pool, LABEL_OWNER_APPLICATION_NAMESPACE)?.to_string(),
        name: objects::label(pool, LABEL_OWNER_APPLICATION_NAME)?.to_string(),
        uid: objects::label(pool, LABEL_OWNER_APPLICATION_UID)
            .unwrap_or_default()
            .to_string(),
    })
}

async fn reconcile_inner(pool: &SpiderIPPool, context: &Context) -> Result<Action, Error> {
    let api: Api<SpiderIPPool> = Api::all(context.client.clone());
    let name = pool.name_any();
    let records = objects::pool_allocations(pool)?;

    if pool.metadata.deletion_timestamp.is_some() {
        if records.is_empty() && has_finalizer(pool) {
            let remaining: Vec<&String> = pool
                .finalizers()
                .iter()
                .filter(|finalizer| *finalizer != FINALIZER)
                .collect();
            let patch = json!({
                "metadata": {"resourceVersion": pool.resource_version(), "finalizers": remaining},
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(pool = %name, "released the finalizer of a deleted pool"),
                // A newer version exists: its own event brings it back here.
                Err(error) if is_conflict(&error) || is_not_found(&error) => {}
                Err(source) => {
                    return Err(kube_error(format!(
                        "remove the finalizer of SpiderIPPool {name}"
                    ))(source));
                }
            }
        }
        return Ok(Action::await_change());
    }

    if !has_finalizer(pool) {
        let mut finalizers: Vec<String> = pool.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        let patch = json!({
            "metadata": {"resourceVersion": pool.resource_version(), "finalizers": finalizers},
        });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(error) if is_conflict(&error) || is_not_found(&error) => {}
            Err(source) => {
                return Err(kube_error(format!(
                    "add the finalizer to SpiderIPPool {name}"
                ))(source));
            }
        }
        // The write produces a new version; the counts are checked on its event.
        return Ok(Action::await_change());
    }

    let usage = pool_usage(pool);
    let status = pool.status.as_ref();
    let total_now = status.and_then(|status| status.total_ip_count);
    let allocated_now = status.and_then(|status| status.allocated_ip_count);
    if total_now != Some(usage.total) || allocated_now != Some(usage.allocated) {
        let patch = json!({
            "metadata": {"resourceVersion": pool.resource_version()},
            "status": {"totalIPCount": usage.total, "allocatedIPCount": usage.allocated},
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(error) if is_conflict(&error) || is_not_found(&error) => {
                return Ok(Action::await_change());
            }
            Err(source) => {
                return Err(kube_error(format!("update status of SpiderIPPool {name}"))(
                    source,
                ));
            }
        }
    }

    if objects::is_auto_pool(pool) && objects::is_reclaimable(pool) {
        if records.is_empty()
            && let Some(app) = owner_application(pool)
        {
            let current = current_uid(&context.client, &app)
                .await
                .map_err(kube_error(format!(
                    "get {} {}/{}",
                    app.kind, app.namespace, app.name
                )))?;
            if current.as_deref() != Some(app.uid.as_str()) {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: pool.resource_version(),
                        uid: pool.uid(),
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&name, &params).await {
                    Ok(_) => {
                        context.counters.auto_pool_reclaimed(1);
                        tracing::info!(pool = %name, application = %format!("{}/{}/{}", app.kind, app.namespace, app.name), "deleted the auto pool of a workload that no longer exists");
                    }
                    Err(error) if is_conflict(&error) || is_not_found(&error) => {}
                    Err(source) => {
                        return Err(kube_error(format!("delete SpiderIPPool {name}"))(source));
                    }
                }
                return Ok(Action::await_change());
            }
        }
        return Ok(Action::requeue(context.legacy_check));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_owner_application_comes_from_the_labels() {
        let mut pool = SpiderIPPool::new("auto4-web-eth0-1a2b3", Default::default());
        pool.metadata.labels = Some(BTreeMap::from([
            (
                LABEL_OWNER_APPLICATION_GV.to_string(),
                "apps_v1".to_string(),
            ),
            (
                LABEL_OWNER_APPLICATION_KIND.to_string(),
                "Deployment".to_string(),
            ),
            (
                LABEL_OWNER_APPLICATION_NAMESPACE.to_string(),
                "default".to_string(),
            ),
            (LABEL_OWNER_APPLICATION_NAME.to_string(), "web".to_string()),
            (
                LABEL_OWNER_APPLICATION_UID.to_string(),
                "u-1a2b3".to_string(),
            ),
        ]));
        let app = owner_application(&pool).unwrap();
        assert_eq!(app.api_version(), "apps/v1");
        assert_eq!(app.kind, "Deployment");
        assert_eq!(app.uid, "u-1a2b3");
        pool.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(LABEL_OWNER_APPLICATION_GV.to_string(), "a_b_c".to_string());
        assert!(owner_application(&pool).is_none());
    }
}
