//! One auto pool of one workload (§4.4), through the shared reconcile of
//! [`spiderpool_store::autopool`] (compare-and-swap):
//!
//! 1. fast path: the cached pool and subnet record already match — nothing to do, no API call;
//! 2. otherwise, under the subnet's lock: the reconcile reads the subnet and the workload's pool
//!    from the API server, plans, writes the subnet's `status.controlledIPPools`, then updates
//!    the pool conditioned on the resourceVersion whose spec and ledger the plan saw. New pools
//!    are created right after the lock is released (their addresses are already recorded).
//!    Requests of many workloads on one subnet are served together ([`SubnetBatches`]): one
//!    subnet write per round for all of them, pool writes in parallel.
//!
//! What the reconcile does not read afresh (other pools of the CIDR, reserved addresses, the
//! candidates for the workload's pool) comes from the caches ([`CacheReads`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use spiderpool_api::{SpiderIPPool, SpiderReservedIP};
use spiderpool_ipam::autopool::{AutoPoolLabels, PoolChange, PoolRequest};
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::pod::AppRef;
use spiderpool_ipam::range::IpSet;
use spiderpool_store::autopool::{
    AutoPoolReads, AutoPoolWriter, Creation, PoolTarget, ReconcileError, Reconciled, Retry, choose,
    lookup_labels, matches_labels, settled_ips,
};
use spiderpool_store::reserved_set;
use tokio::sync::oneshot;

use super::{Context, Error, FIELD_MANAGER};
use spiderpool_store::objects::{self, canonical_cidr};

/// Attempts of the slow path when the subnet or the pool changed under it.
const ATTEMPTS: u32 = 8;

/// What happened to one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOutcome {
    pub pool: String,
    pub change: PoolChange,
    pub size: u128,
}

impl From<Reconciled> for PoolOutcome {
    fn from(reconciled: Reconciled) -> PoolOutcome {
        PoolOutcome {
            pool: objects::pool_name(&reconciled.pool),
            change: reconciled.change,
            size: reconciled.size,
        }
    }
}

/// The target of a workload's pool request.
fn target(app: &AppRef, request: &PoolRequest) -> PoolTarget {
    PoolTarget {
        app: app.clone(),
        subnet: request.subnet.clone(),
        nic: request.nic.clone(),
        version: request.version,
        reclaim: request.reclaim,
        desired: request.desired,
        annotation: request.ip_number.annotation_value(),
        new_name: request.pool_name.clone(),
    }
}

/// The pool (if any) and record in the caches already match the request.
fn fast_path(context: &Context, target: &PoolTarget) -> Option<PoolOutcome> {
    let subnet = context.cache.subnet(&target.subnet)?;
    if subnet.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let labels = target.labels();
    let candidates = cached_candidates(context, &labels);
    let pool = choose(candidates.iter().map(AsRef::as_ref), &target.app.uid)?;
    let ips = settled_ips(
        pool,
        &subnet,
        &target.app,
        &labels,
        &target.annotation,
        target.desired,
    )?;
    Some(PoolOutcome {
        pool: objects::pool_name(pool),
        change: PoolChange::Unchanged,
        size: ips.count(),
    })
}

/// Cached pools carrying the workload's lookup labels.
fn cached_candidates(context: &Context, labels: &AutoPoolLabels) -> Vec<Arc<SpiderIPPool>> {
    let wanted = lookup_labels(labels);
    context
        .cache
        .pools
        .state()
        .into_iter()
        .filter(|pool| matches_labels(pool, &wanted))
        .collect()
}

/// A request waiting for its subnet's lock.
pub struct Job {
    target: PoolTarget,
    reply: oneshot::Sender<Result<PoolOutcome, Error>>,
}

impl std::borrow::Borrow<PoolTarget> for Job {
    fn borrow(&self) -> &PoolTarget {
        &self.target
    }
}

/// Requests queued per subnet. Whoever gets the subnet's lock serves every queued request of
/// that subnet in one batch: one subnet status write for all of them, then their pool writes in
/// parallel. A burst of workloads on one subnet thus costs a few round trips, not a few per
/// workload.
#[derive(Default)]
pub struct SubnetBatches {
    pending: Mutex<HashMap<String, Vec<Job>>>,
}

impl SubnetBatches {
    fn push(&self, subnet: &str, job: Job) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(subnet.to_string())
            .or_default()
            .push(job);
    }

    fn take(&self, subnet: &str) -> Vec<Job> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(subnet)
            .unwrap_or_default()
    }
}

/// Makes the workload's pool for `request` exist with the right addresses.
pub async fn ensure_pool(
    context: &Context,
    app: &AppRef,
    request: &PoolRequest,
) -> Result<PoolOutcome, Error> {
    let target = target(app, request);
    if let Some(outcome) = fast_path(context, &target) {
        return Ok(outcome);
    }
    let (reply, mut outcome) = oneshot::channel();
    context.batches.push(&request.subnet, Job { target, reply });
    let guard = context.locks.lock(&request.subnet).await;
    // Served by the batch of whoever held the lock before?
    if let Ok(result) = outcome.try_recv() {
        return result;
    }
    let jobs = context.batches.take(&request.subnet);
    let reads = CacheReads { context };
    let writer = AutoPoolWriter::new(context.client.clone(), &reads, FIELD_MANAGER);
    let started = std::time::Instant::now();
    let size = jobs.len();
    let retry = Retry {
        attempts: ATTEMPTS,
        pause_millis: 5..=20,
        deadline: None,
        create_now: false,
    };
    let served = writer.reconcile(&request.subnet, jobs, &retry).await;
    tracing::debug!(subnet = %request.subnet, requests = size, elapsed = ?started.elapsed(), "served a batch of auto-pool requests");
    for (job, result) in served.finished {
        let _ = job
            .reply
            .send(result.map(PoolOutcome::from).map_err(Error::from));
    }
    // New pools are created after the lock is released: their addresses are already recorded,
    // so the next batch may plan meanwhile.
    drop(guard);
    create_all(&writer, served.creations).await;
    outcome.await.unwrap_or(Err(Error::BatchDropped))
}

/// Creates the new pools of a batch, in parallel.
async fn create_all(writer: &AutoPoolWriter<'_, CacheReads<'_>>, creations: Vec<(Job, Creation)>) {
    let (jobs, creations): (Vec<Job>, Vec<Creation>) = creations.into_iter().unzip();
    let created = futures::future::join_all(
        creations
            .into_iter()
            .map(|creation| writer.create(creation)),
    )
    .await;
    for (job, result) in jobs.into_iter().zip(created) {
        let _ = job
            .reply
            .send(result.map(PoolOutcome::from).map_err(Error::from));
    }
}

/// The reconcile's reads from the caches; the workload's pool is chosen among cached pools with
/// its lookup labels, then read afresh. A pool the cache does not show yet is at worst created
/// twice: the second create fails with AlreadyExists and the workload is retried.
struct CacheReads<'a> {
    context: &'a Context,
}

impl AutoPoolReads for CacheReads<'_> {
    async fn current_pool(
        &self,
        target: &PoolTarget,
        labels: &AutoPoolLabels,
    ) -> Result<Option<SpiderIPPool>, ReconcileError> {
        let wanted = lookup_labels(labels);
        let cached = cached_candidates(self.context, labels);
        let Some(name) =
            choose(cached.iter().map(AsRef::as_ref), &target.app.uid).map(objects::pool_name)
        else {
            return Ok(None);
        };
        let pools: kube::Api<SpiderIPPool> = kube::Api::all(self.context.client.clone());
        let fresh = pools
            .get_opt(&name)
            .await
            .map_err(|source| ReconcileError::kube(format!("get SpiderIPPool {name}"), source))?;
        Ok(fresh.filter(|pool| {
            matches_labels(pool, &wanted)
                && choose(std::iter::once(pool), &target.app.uid).is_some()
        }))
    }

    async fn pools_in_cidr(
        &self,
        version: IpVersion,
        cidr: &str,
    ) -> Result<Vec<Arc<SpiderIPPool>>, ReconcileError> {
        Ok(self
            .context
            .cache
            .pools
            .state()
            .into_iter()
            .filter(|pool| {
                objects::pool_family(pool) == Some(version)
                    && canonical_cidr(&pool.spec.subnet).as_deref() == Some(cidr)
            })
            .collect())
    }

    async fn reserved(&self, version: IpVersion) -> Result<IpSet, ReconcileError> {
        let reserved: Vec<SpiderReservedIP> = self
            .context
            .cache
            .reserved
            .state()
            .iter()
            .map(|reservation| reservation.as_ref().clone())
            .collect();
        Ok(reserved_set(&reserved, version))
    }

    async fn subnet_changed(&self, pool: &SpiderIPPool, note: String) {
        self.context
            .warn_pool(pool, "ApplicationSubnetChanged", note)
            .await;
    }
}
