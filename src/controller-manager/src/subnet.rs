//! The Subnet controller (§4.6), leader only; compare-and-swap (merge patches carrying the
//! resourceVersion read) for every write.
//!
//! Triggered by every subnet event and by events of the pools it controls or could adopt. Under
//! the subnet's lock (shared with the auto-pool controller) it:
//! 1. ensures the `ipam.spidernet.io/subnet-cidr` label and the finalizer;
//! 2. adopts pools with the same CIDR that no controller owns (controller ownerReference,
//!    `owner-spider-subnet` label, gateway and routes inherited when unset);
//! 3. rebuilds `status.controlledIPPools` ([`rebuild_controlled`]) and writes it with the counts
//!    by compare-and-swap;
//! 4. when the subnet is deleted: turns the deletion into a foreground one (so the API server
//!    deletes the controlled pools first) and releases the finalizer once no pool is recorded; a
//!    subnet that controls no pool is released at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use spiderpool_api::constants::{
    API_VERSION, FINALIZER, LABEL_OWNER_SPIDER_SUBNET, LABEL_SUBNET_CIDR, cidr_label_value,
};
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_ipam::autopool::{parse_application_key, pool_name_matches_uid, subnet_counts};
use spiderpool_ipam::ledger::{ControlledIpPools, LedgerError, PoolIpPreAllocation};
use spiderpool_ipam::range::IpSet;
use spiderpool_store::autopool::write_subnet_status;
use spiderpool_store::objects::{self, canonical_cidr, is_conflict, is_not_found};

use crate::runtime::admin::Readiness;
use crate::runtime::backoff::ErrorBackoff;
use crate::runtime::metrics::ControllerMetrics;
use crate::runtime::reconcile::Frame;
use crate::shared::IpamShared;
use crate::shared::cache::IpamCache;
use crate::shared::locks::SubnetLocks;
use crate::shared::workloads::current_uid;

pub const CONTROLLER_NAME: &str = "subnet";
pub const READINESS: &str = "subnet controller cache";
const FOREGROUND_DELETION: &str = "foregroundDeletion";
/// How often a subnet is looked at again without any event: catches what no event reports (a
/// pool that vanished across a relist of the pool cache, a workload deleted while its pool's
/// entry was kept). Pool changes themselves trigger at once, from the pool cache `plan` reads.
const RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("SpiderSubnet {subnet} has an invalid spec.subnet, spec.ips or spec.excludeIPs")]
    InvalidSubnet { subnet: String },
    #[error("failed to {what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error("SpiderSubnet {subnet} changed while it was reconciled")]
    Conflict { subnet: String },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Ledger(error) => error.metric_label(),
            Error::InvalidSubnet { .. } => "invalid_subnet",
            Error::Kube { .. } => "api_error",
            Error::Conflict { .. } => "conflict",
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
    pub locks: SubnetLocks,
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
            locks: shared.locks.clone(),
        }
    }
}

/// The subnets a pool event concerns: its owner, and any subnet with the same CIDR (adoption).
fn subnets_of(pool: &SpiderIPPool, subnets: &Store<SpiderSubnet>) -> Vec<ObjectRef<SpiderSubnet>> {
    let mut names = BTreeSet::new();
    if let Some(owner) = objects::owner_subnet(pool) {
        names.insert(owner.to_string());
    }
    let cidr = canonical_cidr(&pool.spec.subnet);
    if cidr.is_some() {
        for subnet in subnets.state() {
            if canonical_cidr(&subnet.spec.subnet) == cidr {
                names.insert(objects::subnet_name(&subnet));
            }
        }
    }
    names
        .into_iter()
        .map(|name| ObjectRef::new(&name))
        .collect()
}

pub async fn run(context: Arc<Context>, readiness: Readiness) {
    // `plan` derives status from the pool cache: on a partial list, the missing pools would
    // read as gone and their entries would be dropped from the subnet's status.
    context.cache.synced().await;
    let cache = &context.cache;
    let store = cache.subnets.clone();
    let ready = store.clone();
    // Subnets and pool events both come from the process-wide caches `plan` reads: a watch of
    // our own would race them, and a reconcile that reads the pool cache before it has a new
    // pool records nothing until the resync.
    let pool_triggers = cache
        .pool_changes
        .subscribe()
        .flat_map(move |pool| futures::stream::iter(subnets_of(&pool, &store)));
    let controller = Controller::for_shared_stream(cache.subnet_changes.replay(), ready.clone())
        .reconcile_on(pool_triggers);
    let outcomes = controller.run(reconcile, error_policy, context.clone());
    context
        .frame
        .run(ready, readiness, READINESS, outcomes)
        .await;
}

async fn reconcile(subnet: Arc<SpiderSubnet>, context: Arc<Context>) -> Result<Action, Error> {
    context
        .frame
        .timed(&subnet.name_any(), reconcile_inner(&subnet, &context))
        .await
}

fn error_policy(subnet: Arc<SpiderSubnet>, error: &Error, context: Arc<Context>) -> Action {
    context
        .frame
        .requeue(&subnet.name_any(), error.metric_label(), error, false)
}

/// What the controller found out about one `controlledIPPools` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordFacts {
    pub pool_exists: bool,
    /// `None` when not looked up (the pool exists, so the entry stays anyway).
    pub application_exists: Option<bool>,
}

/// The new `controlledIPPools` (§4.6 step 3):
/// - entries of auto pools stay unless their application key or ranges are unparsable, or both
///   the pool and the application are gone (when the subnet is being deleted, a missing pool is
///   enough: no new pool can be created from it any more);
/// - entries of manually created pools are recomputed: the intersection of each controlled pool's
///   addresses with the subnet's, for non-empty intersections.
pub fn rebuild_controlled(
    current: &ControlledIpPools,
    subnet_ips: &IpSet,
    facts: &BTreeMap<String, RecordFacts>,
    manual_pools: &BTreeMap<String, IpSet>,
    terminating: bool,
) -> ControlledIpPools {
    let version = subnet_ips.version();
    let mut next = ControlledIpPools::default();
    for (pool, entry) in &current.0 {
        let Some(application) = &entry.application else {
            continue;
        };
        if parse_application_key(application).is_none()
            || IpSet::from_ranges(version, &entry.ips).is_err()
        {
            continue;
        }
        let fact = facts.get(pool).copied().unwrap_or(RecordFacts {
            pool_exists: true,
            application_exists: None,
        });
        let gone = !fact.pool_exists && (terminating || fact.application_exists == Some(false));
        if !gone {
            next.0.insert(pool.clone(), entry.clone());
        }
    }
    for (pool, ips) in manual_pools {
        let owned = ips.intersect(subnet_ips);
        if !owned.is_empty() {
            next.0.insert(
                pool.clone(),
                PoolIpPreAllocation {
                    ips: owned.to_range_strings(),
                    application: None,
                },
            );
        }
    }
    next
}

fn controller_reference(subnet: &SpiderSubnet) -> OwnerReference {
    OwnerReference {
        api_version: API_VERSION.to_string(),
        kind: SpiderSubnet::kind(&()).to_string(),
        name: subnet.name_any(),
        uid: subnet.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Adopts one pool (upstream's `ctrl.SetControllerReference` plus label and inherited fields).
async fn adopt(
    api: &Api<SpiderIPPool>,
    subnet: &SpiderSubnet,
    pool: &SpiderIPPool,
) -> Result<(), Error> {
    let name = pool.name_any();
    let mut owners: Vec<OwnerReference> = pool
        .owner_references()
        .iter()
        .filter(|owner| owner.controller != Some(true))
        .cloned()
        .collect();
    owners.push(controller_reference(subnet));
    let mut spec = serde_json::Map::new();
    if pool.spec.gateway.is_none()
        && let Some(gateway) = &subnet.spec.gateway
    {
        spec.insert("gateway".into(), json!(gateway));
    }
    if pool.spec.routes.is_none()
        && let Some(routes) = &subnet.spec.routes
    {
        spec.insert("routes".into(), json!(routes));
    }
    let patch = json!({
        "metadata": {
            "resourceVersion": pool.resource_version(),
            "labels": {LABEL_OWNER_SPIDER_SUBNET: subnet.name_any()},
            "ownerReferences": owners,
        },
        "spec": spec,
    });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(pool = %name, subnet = %subnet.name_any(), "adopted IPPool");
            Ok(())
        }
        // It changed or went away: its event brings the subnet back here.
        Err(error) if is_conflict(&error) || is_not_found(&error) => Ok(()),
        Err(source) => Err(kube_error(format!("adopt SpiderIPPool {name}"))(source)),
    }
}

/// What a subnet needs, computed from one version of it.
struct Work {
    subnet: SpiderSubnet,
    terminating: bool,
    /// The label or the finalizer is missing.
    metadata: bool,
    adopt: Vec<Arc<SpiderIPPool>>,
    next: ControlledIpPools,
    total: i64,
    allocated: i64,
    status_changed: bool,
}

impl Work {
    fn is_noop(&self) -> bool {
        !self.terminating && !self.metadata && self.adopt.is_empty() && !self.status_changed
    }
}

/// Whether the pool certainly exists: a live cached copy, or else a read from the API server
/// (the cache may lag behind a pool created or deleted a moment ago).
async fn pool_exists(
    context: &Context,
    pools: &Api<SpiderIPPool>,
    name: &str,
) -> Result<bool, Error> {
    if context
        .cache
        .pool(name)
        .is_some_and(|pool| pool.metadata.deletion_timestamp.is_none())
    {
        return Ok(true);
    }
    Ok(pools
        .get_opt(name)
        .await
        .map_err(kube_error(format!("get SpiderIPPool {name}")))?
        .is_some())
}

async fn plan(context: &Context, subnet: &SpiderSubnet) -> Result<Work, Error> {
    let name = subnet.name_any();
    let pools: Api<SpiderIPPool> = Api::all(context.client.clone());
    let terminating = subnet.metadata.deletion_timestamp.is_some();
    let cidr = canonical_cidr(&subnet.spec.subnet).ok_or_else(|| Error::InvalidSubnet {
        subnet: name.clone(),
    })?;
    let metadata = !terminating
        && (subnet.labels().get(LABEL_SUBNET_CIDR) != Some(&cidr_label_value(&cidr))
            || !subnet
                .finalizers()
                .iter()
                .any(|finalizer| finalizer == FINALIZER));

    let subnet_uid = subnet.uid().unwrap_or_default();
    let all_pools = context.cache.pools.state();
    let mut adopt = Vec::new();
    if !terminating {
        for pool in &all_pools {
            if pool.metadata.deletion_timestamp.is_some()
                || canonical_cidr(&pool.spec.subnet).as_deref() != Some(cidr.as_str())
                || objects::pool_family(pool) != objects::subnet_family(subnet)
            {
                continue;
            }
            let controller = pool
                .owner_references()
                .iter()
                .find(|owner| owner.controller == Some(true));
            let labelled = objects::owner_subnet(pool) == Some(name.as_str());
            match controller {
                Some(owner) if owner.uid == subnet_uid && labelled => {}
                Some(owner) if owner.uid != subnet_uid => {
                    tracing::debug!(pool = %pool.name_any(), owner = %owner.name, "not adopting a pool controlled by another object");
                }
                _ => adopt.push(pool.clone()),
            }
        }
    }

    let subnet_ips = objects::subnet_ips(subnet).ok_or_else(|| Error::InvalidSubnet {
        subnet: name.clone(),
    })?;
    let current = objects::controlled_pools(subnet)?;
    let mut facts = BTreeMap::new();
    for (pool, entry) in &current.0 {
        let Some(application) = entry.application.as_deref().and_then(parse_application_key) else {
            continue;
        };
        let exists = pool_exists(context, &pools, pool).await?;
        // A workload of the same name with another UID is a successor: the entry of a pool that
        // never got created for it (or was reclaimed) is stale.
        let application_exists = if exists || terminating {
            None
        } else {
            Some(
                current_uid(&context.client, &application)
                    .await
                    .map_err(kube_error(format!(
                        "get {} {}/{}",
                        application.kind, application.namespace, application.name
                    )))?
                    .is_some_and(|uid| pool_name_matches_uid(pool, &uid)),
            )
        };
        facts.insert(
            pool.clone(),
            RecordFacts {
                pool_exists: exists,
                application_exists,
            },
        );
    }
    let mut manual = BTreeMap::new();
    for pool in &all_pools {
        if objects::owner_subnet(pool) == Some(name.as_str())
            && !objects::is_auto_pool(pool)
            && let Some(ips) = objects::pool_ips(pool)
        {
            manual.insert(objects::pool_name(pool), ips);
        }
    }
    let next = rebuild_controlled(&current, &subnet_ips, &facts, &manual, terminating);
    let (total, allocated) =
        subnet_counts(&subnet_ips, &next).map_err(|_| Error::InvalidSubnet {
            subnet: name.clone(),
        })?;
    let status = subnet.status.as_ref();
    let status_changed = next != current
        || status.and_then(|status| status.total_ip_count) != Some(total)
        || status.and_then(|status| status.allocated_ip_count) != Some(allocated);
    Ok(Work {
        subnet: subnet.clone(),
        terminating,
        metadata,
        adopt,
        next,
        total,
        allocated,
        status_changed,
    })
}

async fn reconcile_inner(cached: &SpiderSubnet, context: &Context) -> Result<Action, Error> {
    // A first look at the cached version, without the lock: most events (a pool's status
    // changed, a pool the auto-pool controller just created and recorded) need nothing.
    if plan(context, cached).await?.is_noop() {
        return Ok(Action::requeue(RESYNC));
    }
    let name = cached.name_any();
    let subnets: Api<SpiderSubnet> = Api::all(context.client.clone());
    let pools: Api<SpiderIPPool> = Api::all(context.client.clone());
    let _guard = context.locks.lock(&name).await;
    // Under the lock the auto-pool controller may just have written: read afresh.
    let Some(subnet) = subnets
        .get_opt(&name)
        .await
        .map_err(kube_error(format!("get SpiderSubnet {name}")))?
    else {
        return Ok(Action::await_change());
    };
    let work = plan(context, &subnet).await?;

    // 1. Label and finalizer.
    if work.metadata {
        let cidr = canonical_cidr(&subnet.spec.subnet).unwrap_or_default();
        let mut finalizers = subnet.finalizers().to_vec();
        if !finalizers.iter().any(|finalizer| finalizer == FINALIZER) {
            finalizers.push(FINALIZER.to_string());
        }
        let patch = json!({
            "metadata": {
                "resourceVersion": subnet.resource_version(),
                "labels": {LABEL_SUBNET_CIDR: cidr_label_value(&cidr)},
                "finalizers": finalizers,
            },
        });
        match subnets
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(error) if is_conflict(&error) => return Err(Error::Conflict { subnet: name }),
            Err(source) => return Err(kube_error(format!("label SpiderSubnet {name}"))(source)),
        }
        // The new version comes back through the watch.
        return Ok(Action::await_change());
    }

    // 2. Adoption of same-CIDR pools nobody controls.
    for pool in &work.adopt {
        adopt(&pools, &subnet, pool).await?;
    }

    // 3. controlledIPPools and counts. An auto pool whose entry is about to be dropped may have
    // been created since its absence was seen: look once more right before writing.
    let mut work = work;
    if !work.terminating {
        let current = objects::controlled_pools(&subnet)?;
        for (pool, entry) in &current.0 {
            if entry.application.is_some()
                && !work.next.0.contains_key(pool)
                && pools
                    .get_opt(pool)
                    .await
                    .map_err(kube_error(format!("get SpiderIPPool {pool}")))?
                    .is_some()
            {
                work.next.0.insert(pool.clone(), entry.clone());
            }
        }
        if let Some(subnet_ips) = objects::subnet_ips(&subnet)
            && let Ok((total, allocated)) = subnet_counts(&subnet_ips, &work.next)
        {
            work.total = total;
            work.allocated = allocated;
        }
        let status = subnet.status.as_ref();
        work.status_changed = work.next != current
            || status.and_then(|status| status.total_ip_count) != Some(work.total)
            || status.and_then(|status| status.allocated_ip_count) != Some(work.allocated);
    }
    let mut latest = work.subnet.clone();
    if work.status_changed {
        match write_subnet_status(&subnets, &subnet, &work.next, work.total, work.allocated).await {
            Ok(written) => latest = written,
            Err(error) if is_conflict(&error) => return Err(Error::Conflict { subnet: name }),
            Err(source) => {
                return Err(kube_error(format!("update status of SpiderSubnet {name}"))(
                    source,
                ));
            }
        }
    }

    // 4. Deletion.
    if work.terminating {
        // A subnet that controls no pool has nothing to cascade: it goes at once instead of
        // waiting for the garbage collector of kube-controller-manager to clear a foreground
        // deletion (which stalls for up to its resync period whenever a CRD is added).
        let subnet_uid = latest.uid();
        let controls_pools = !work.next.0.is_empty()
            || context.cache.pools.state().iter().any(|pool| {
                objects::owner_subnet(pool) == Some(name.as_str())
                    || pool
                        .owner_references()
                        .iter()
                        .any(|owner| Some(&owner.uid) == subnet_uid.as_ref())
            });
        if controls_pools
            && !latest
                .finalizers()
                .iter()
                .any(|finalizer| finalizer == FOREGROUND_DELETION)
        {
            match subnets.delete(&name, &DeleteParams::foreground()).await {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => return Ok(Action::await_change()),
                Err(source) => {
                    return Err(kube_error(format!(
                        "delete SpiderSubnet {name} in the foreground"
                    ))(source));
                }
            }
            return Ok(Action::await_change());
        }
        if work.next.0.is_empty()
            && latest
                .finalizers()
                .iter()
                .any(|finalizer| finalizer == FINALIZER)
        {
            let remaining: Vec<&String> = latest
                .finalizers()
                .iter()
                .filter(|finalizer| *finalizer != FINALIZER)
                .collect();
            let patch = json!({
                "metadata": {"resourceVersion": latest.resource_version(), "finalizers": remaining},
            });
            match subnets
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(subnet = %name, "released the finalizer of a deleted subnet")
                }
                Err(error) if is_conflict(&error) => return Err(Error::Conflict { subnet: name }),
                Err(error) if is_not_found(&error) => {}
                Err(source) => {
                    return Err(kube_error(format!(
                        "remove the finalizer of SpiderSubnet {name}"
                    ))(source));
                }
            }
        }
        // Pools may still be draining; their events bring the subnet back, this is a safety net.
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spiderpool_ipam::ip::IpVersion;

    fn set(ranges: &[&str]) -> IpSet {
        IpSet::from_ranges(IpVersion::V4, ranges).unwrap()
    }

    fn controlled(json: &str) -> ControlledIpPools {
        ControlledIpPools::parse("s", Some(json)).unwrap()
    }

    #[test]
    fn entries_of_gone_pools_of_gone_applications_are_dropped() {
        let current = controlled(
            r#"{"auto4-a-eth0-1":{"ips":["10.0.0.1"],"application":"apps_v1_Deployment_default_a"},
                "auto4-b-eth0-2":{"ips":["10.0.0.2"],"application":"apps_v1_Deployment_default_b"},
                "auto4-c-eth0-3":{"ips":["10.0.0.3"],"application":"apps_v1_Deployment_default_c"},
                "auto4-d-eth0-4":{"ips":["10.0.0.4"],"application":"broken"}}"#,
        );
        let facts = BTreeMap::from([
            (
                "auto4-a-eth0-1".to_string(),
                RecordFacts {
                    pool_exists: false,
                    application_exists: Some(false),
                },
            ),
            (
                "auto4-b-eth0-2".to_string(),
                RecordFacts {
                    pool_exists: false,
                    application_exists: Some(true),
                },
            ),
            (
                "auto4-c-eth0-3".to_string(),
                RecordFacts {
                    pool_exists: true,
                    application_exists: None,
                },
            ),
        ]);
        let subnet = set(&["10.0.0.1-10.0.0.100"]);
        let next = rebuild_controlled(&current, &subnet, &facts, &BTreeMap::new(), false);
        let names: Vec<&String> = next.0.keys().collect();
        assert_eq!(
            names,
            vec!["auto4-b-eth0-2", "auto4-c-eth0-3"],
            "a pool about to be created keeps its entry"
        );
        let terminating = rebuild_controlled(&current, &subnet, &facts, &BTreeMap::new(), true);
        let names: Vec<&String> = terminating.0.keys().collect();
        assert_eq!(names, vec!["auto4-c-eth0-3"]);
    }

    #[test]
    fn manual_pools_are_recorded_by_their_intersection_with_the_subnet() {
        let current = controlled(r#"{"old-manual":{"ips":["10.0.0.9"]}}"#);
        let manual = BTreeMap::from([
            ("manual".to_string(), set(&["10.0.0.5-10.0.0.20"])),
            ("outside".to_string(), set(&["10.0.1.1"])),
        ]);
        let subnet = set(&["10.0.0.1-10.0.0.10"]);
        let next = rebuild_controlled(&current, &subnet, &BTreeMap::new(), &manual, false);
        assert_eq!(
            next.encode().unwrap(),
            r#"{"manual":{"ips":["10.0.0.5-10.0.0.10"]}}"#
        );
    }
}
