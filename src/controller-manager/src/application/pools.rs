//! One auto pool of one workload (§4.4), as I/O around [`plan_pre_allocation`]:
//!
//! 1. fast path: the cached pool and subnet record already match — nothing to do, no API call;
//! 2. otherwise, under the subnet's lock: read the subnet and the workload's pool from the API
//!    server, plan, write the subnet's `status.controlledIPPools` with compare-and-swap, then
//!    update the pool, conditioned on the resourceVersion whose spec and ledger the plan saw: an
//!    address a pod took in between is never dropped (the update conflicts, and the next round
//!    repairs the record) and an older plan never lands last. New pools are created right after
//!    the lock is released (their addresses are already recorded). Requests of many workloads on
//!    one subnet are served together ([`SubnetBatches`]): one subnet write per round for all of
//!    them, pool writes in parallel.
//!
//! Pools are created with a plain create (a name collision must fail, never take over another
//! object) and updated with a JSON merge patch of exactly the fields this controller owns:
//! `spec.ips`, the UID / reclaim labels and the IP-number annotation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use spiderpool_api::{SpiderIPPool, SpiderReservedIP, SpiderSubnet};
use spiderpool_ipam::autopool::{
    AutoPoolLabels, PoolChange, PoolRequest, PoolSnapshot, PreAllocation, PreAllocationInput,
    application_key, plan_pre_allocation, subnet_counts,
};
use spiderpool_ipam::pod::AppRef;
use spiderpool_ipam::range::IpSet;
use spiderpool_ipam::store::autopool::{
    choose, lookup_labels, matches_labels, new_pool, pool_up_to_date, pool_update_patch,
    settled_ips, write_subnet_status,
};
use spiderpool_ipam::store::reserved_set;
use tokio::sync::oneshot;

use super::{Context, Error, FIELD_MANAGER};
use crate::ippool::objects::{self, canonical_cidr, is_conflict};

/// Attempts of the slow path when the subnet or the pool changed under it.
const ATTEMPTS: u32 = 8;

/// What happened to one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOutcome {
    pub pool: String,
    pub change: PoolChange,
    pub size: u128,
}

/// The pool (if any) and record in the caches already match the request.
fn fast_path(context: &Context, app: &AppRef, request: &PoolRequest) -> Option<PoolOutcome> {
    let subnet = context.cache.subnet(&request.subnet)?;
    if subnet.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let labels = AutoPoolLabels::new(
        &request.subnet,
        app,
        &request.nic,
        request.version,
        request.reclaim,
    );
    let wanted = lookup_labels(&labels);
    let candidates = context
        .cache
        .pools
        .state()
        .into_iter()
        .filter(|pool| matches_labels(pool, &wanted))
        .collect::<Vec<_>>();
    let pool = choose(candidates.iter().map(AsRef::as_ref), &app.uid)?;
    let annotation = request.ip_number.annotation_value();
    let ips = settled_ips(pool, &subnet, app, &labels, &annotation, request.desired)?;
    Some(PoolOutcome {
        pool: objects::pool_name(pool),
        change: PoolChange::Unchanged,
        size: ips.count(),
    })
}

/// A request waiting for its subnet's lock.
pub struct Job {
    app: AppRef,
    request: PoolRequest,
    reply: oneshot::Sender<Result<PoolOutcome, Error>>,
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
    if let Some(outcome) = fast_path(context, app, request) {
        return Ok(outcome);
    }
    let (reply, mut outcome) = oneshot::channel();
    context.batches.push(
        &request.subnet,
        Job {
            app: app.clone(),
            request: request.clone(),
            reply,
        },
    );
    let guard = context.locks.lock(&request.subnet).await;
    // Served by the batch of whoever held the lock before?
    if let Ok(result) = outcome.try_recv() {
        return result;
    }
    let jobs = context.batches.take(&request.subnet);
    let deferred = serve(context, &request.subnet, jobs).await;
    // New pools are created after the lock is released: their addresses are already recorded,
    // so the next batch may plan meanwhile.
    drop(guard);
    write_deferred(context, deferred).await;
    outcome.await.unwrap_or_else(|_| {
        Err(Error::Retry {
            what: "the batch serving this request was dropped".to_string(),
        })
    })
}

/// Serves a batch of one subnet, re-planning the requests whose writes met a concurrent change.
async fn serve(context: &Context, subnet: &str, jobs: Vec<Job>) -> Vec<Deferred> {
    let started = std::time::Instant::now();
    let size = jobs.len();
    let deferred = serve_batch(context, subnet, jobs).await;
    tracing::debug!(%subnet, requests = size, elapsed = ?started.elapsed(), "served a batch of auto-pool requests");
    deferred
}

async fn serve_batch(context: &Context, subnet: &str, jobs: Vec<Job>) -> Vec<Deferred> {
    let mut remaining = jobs;
    let mut deferred = Vec::new();
    for attempt in 1..=ATTEMPTS {
        if remaining.is_empty() {
            return deferred;
        }
        let (retry, later) = serve_once(context, subnet, remaining).await;
        remaining = retry;
        deferred.extend(later);
        if !remaining.is_empty() {
            tracing::debug!(%subnet, requests = remaining.len(), attempt, "re-planning auto pools after a conflict");
            let jitter = rand::random_range(5..=20u64) * u64::from(attempt);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
    }
    for job in remaining {
        let _ = job.reply.send(Err(Error::ConflictsExhausted {
            what: format!(
                "SpiderSubnet {subnet} or IPPool {} kept changing",
                job.request.pool_name
            ),
        }));
    }
    deferred
}

/// A planned pool write left for after the lock is released.
struct Deferred {
    entry: Planned,
    subnet: Arc<SpiderSubnet>,
    subnet_cidr: String,
}

async fn write_deferred(context: &Context, deferred: Vec<Deferred>) {
    let pools: Api<SpiderIPPool> = Api::all(context.client.clone());
    let writes = futures::future::join_all(
        deferred
            .iter()
            .map(|write| write_pool(&pools, &write.subnet, &write.subnet_cidr, &write.entry)),
    )
    .await;
    for (write, written) in deferred.into_iter().zip(writes) {
        let entry = write.entry;
        let result = written.map(|()| PoolOutcome {
            pool: entry.pool_name,
            change: entry.plan.change,
            size: entry.plan.ips.count(),
        });
        let _ = entry.job.reply.send(result);
    }
}

/// A request with its pool read afresh.
struct Planned {
    job: Job,
    pool_name: String,
    existing: Option<SpiderIPPool>,
    labels: AutoPoolLabels,
    plan: PreAllocation,
}

/// The workload's pool: chosen among cached pools with the lookup labels, then read afresh. A
/// pool the cache does not show yet is at worst created twice: the second create fails with
/// AlreadyExists and the workload is retried.
async fn current_pool(
    context: &Context,
    pools: &Api<SpiderIPPool>,
    job: &Job,
    labels: &AutoPoolLabels,
) -> Result<Option<SpiderIPPool>, Error> {
    let wanted = lookup_labels(labels);
    let cached: Vec<_> = context
        .cache
        .pools
        .state()
        .into_iter()
        .filter(|pool| matches_labels(pool, &wanted))
        .collect();
    let names: Vec<String> = choose(cached.iter().map(AsRef::as_ref), &job.app.uid)
        .map(objects::pool_name)
        .into_iter()
        .collect();
    for name in names {
        let fresh = pools
            .get_opt(&name)
            .await
            .map_err(|source| Error::kube(format!("get SpiderIPPool {name}"), source))?;
        if let Some(pool) = fresh
            && matches_labels(&pool, &wanted)
            && choose(std::iter::once(&pool), &job.app.uid).is_some()
        {
            return Ok(Some(pool));
        }
    }
    Ok(None)
}

fn reply_all(jobs: Vec<Job>, error: impl Fn() -> Error) {
    for job in jobs {
        let _ = job.reply.send(Err(error()));
    }
}

/// One pass over a batch; returns the requests to plan again.
async fn serve_once(
    context: &Context,
    subnet_name: &str,
    jobs: Vec<Job>,
) -> (Vec<Job>, Vec<Deferred>) {
    let subnets: Api<SpiderSubnet> = Api::all(context.client.clone());
    let pools: Api<SpiderIPPool> = Api::all(context.client.clone());
    let subnet = match subnets.get_opt(subnet_name).await {
        Ok(Some(subnet)) => subnet,
        Ok(None) => {
            reply_all(jobs, || Error::SubnetNotFound {
                subnet: subnet_name.to_string(),
            });
            return (Vec::new(), Vec::new());
        }
        Err(error) => {
            let detail = error.to_string();
            reply_all(jobs, || Error::SubnetRead {
                subnet: subnet_name.to_string(),
                detail: detail.clone(),
            });
            return (Vec::new(), Vec::new());
        }
    };
    if subnet.metadata.deletion_timestamp.is_some() {
        reply_all(jobs, || Error::SubnetTerminating {
            subnet: subnet_name.to_string(),
        });
        return (Vec::new(), Vec::new());
    }
    let (Some(version), Some(subnet_ips), Some(subnet_cidr)) = (
        objects::subnet_family(&subnet),
        objects::subnet_ips(&subnet),
        canonical_cidr(&subnet.spec.subnet),
    ) else {
        reply_all(jobs, || Error::InvalidSubnet {
            subnet: subnet_name.to_string(),
        });
        return (Vec::new(), Vec::new());
    };
    let initial = match objects::controlled_pools(&subnet) {
        Ok(controlled) => controlled,
        Err(error) => {
            reply_all(jobs, || Error::Ledger(error.clone()));
            return (Vec::new(), Vec::new());
        }
    };
    let reserved: Vec<SpiderReservedIP> = context
        .cache
        .reserved
        .state()
        .iter()
        .map(|reservation| reservation.as_ref().clone())
        .collect();
    let reserved = reserved_set(&reserved, version);
    let cached_pools: Vec<_> = context
        .cache
        .pools
        .state()
        .into_iter()
        .filter(|pool| {
            objects::pool_family(pool) == Some(version)
                && canonical_cidr(&pool.spec.subnet).as_deref() == Some(subnet_cidr.as_str())
        })
        .collect();

    // Read every request's pool afresh, in parallel.
    let mut accepted = Vec::new();
    for job in jobs {
        if job.request.version != version {
            let _ = job.reply.send(Err(Error::SubnetFamily {
                subnet: subnet_name.to_string(),
                expected: job.request.version.number(),
            }));
            continue;
        }
        let labels = AutoPoolLabels::new(
            subnet_name,
            &job.app,
            &job.request.nic,
            job.request.version,
            job.request.reclaim,
        );
        accepted.push((job, labels));
    }
    let reads = futures::future::join_all(
        accepted
            .iter()
            .map(|(job, labels)| current_pool(context, &pools, job, labels)),
    )
    .await;

    let mut controlled = initial.clone();
    let mut planned: Vec<Planned> = Vec::new();
    for ((job, labels), read) in accepted.into_iter().zip(reads) {
        let existing = match read {
            Ok(existing) => existing,
            Err(error) => {
                let _ = job.reply.send(Err(error));
                continue;
            }
        };
        let pool_name = existing
            .as_ref()
            .map(objects::pool_name)
            .unwrap_or_else(|| job.request.pool_name.clone());
        if let Some(pool) = &existing
            && canonical_cidr(&pool.spec.subnet).as_deref() != Some(subnet_cidr.as_str())
        {
            let app = &job.app;
            context
                .warn_pool(
                    pool,
                    "ApplicationSubnetChanged",
                    format!(
                        "the subnet of {} {}/{} changed to SpiderSubnet {subnet_name} ({}); changing the subnet of an existing application is not supported",
                        app.kind, app.namespace, app.name, subnet.spec.subnet
                    ),
                )
                .await;
            let _ = job.reply.send(Err(Error::SubnetChanged {
                pool: pool_name,
                subnet: subnet_name.to_string(),
            }));
            continue;
        }
        let mut held_elsewhere = IpSet::new(version);
        for other in &cached_pools {
            if objects::pool_name(other) == pool_name {
                continue;
            }
            if let Some(ips) = objects::pool_ips(other) {
                held_elsewhere = held_elsewhere.union(&ips);
            }
            held_elsewhere = held_elsewhere.union(&objects::pool_allocated_set(other, version));
        }
        let snapshot = existing.as_ref().map(|pool| PoolSnapshot {
            ips: objects::pool_ips(pool).unwrap_or_else(|| IpSet::new(version)),
            allocated: objects::pool_allocated_set(pool, version),
        });
        let plan = plan_pre_allocation(&PreAllocationInput {
            subnet: subnet_name,
            pool: &pool_name,
            application: Some(application_key(&job.app)),
            desired: job.request.desired,
            subnet_ips: &subnet_ips,
            controlled: &controlled,
            reserved: &reserved,
            held_elsewhere: &held_elsewhere,
            existing: snapshot.as_ref(),
        });
        match plan {
            Ok(plan) => {
                controlled = plan.controlled.clone();
                planned.push(Planned {
                    job,
                    pool_name,
                    existing,
                    labels,
                    plan,
                });
            }
            Err(error) => {
                let _ = job.reply.send(Err(error.into()));
            }
        }
    }
    if planned.is_empty() {
        return (Vec::new(), Vec::new());
    }

    // One subnet write for the whole batch, before any pool is written.
    if controlled != initial {
        let counts = subnet_counts(&subnet_ips, &controlled);
        let written = match counts {
            Ok((total, allocated)) => {
                write_subnet_status(&subnets, &subnet, &controlled, total, allocated).await
            }
            Err(error) => {
                for entry in planned {
                    let _ = entry.job.reply.send(Err(error.clone().into()));
                }
                return (Vec::new(), Vec::new());
            }
        };
        match written {
            Ok(_) => {}
            Err(error) if is_conflict(&error) => {
                return (
                    planned.into_iter().map(|entry| entry.job).collect(),
                    Vec::new(),
                );
            }
            Err(error) => {
                let detail = error.to_string();
                for entry in planned {
                    let _ = entry.job.reply.send(Err(Error::SubnetWrite {
                        subnet: subnet_name.to_string(),
                        detail: detail.clone(),
                    }));
                }
                return (Vec::new(), Vec::new());
            }
        }
    }

    // Then the pools: updates now, under the lock and conditioned on the version the plan read;
    // creations once the lock is released.
    let (now, later): (Vec<Planned>, Vec<Planned>) = planned
        .into_iter()
        .partition(|entry| entry.existing.is_some());
    let subnet = Arc::new(subnet);
    let deferred: Vec<Deferred> = later
        .into_iter()
        .map(|entry| Deferred {
            entry,
            subnet: subnet.clone(),
            subnet_cidr: subnet_cidr.clone(),
        })
        .collect();
    let planned = now;
    let writes = futures::future::join_all(
        planned
            .iter()
            .map(|entry| write_pool(&pools, &subnet, &subnet_cidr, entry)),
    )
    .await;
    let mut retry = Vec::new();
    for (entry, written) in planned.into_iter().zip(writes) {
        match written {
            Ok(()) => {
                let _ = entry.job.reply.send(Ok(PoolOutcome {
                    pool: entry.pool_name,
                    change: entry.plan.change,
                    size: entry.plan.ips.count(),
                }));
            }
            Err(Error::Retry { .. }) => retry.push(entry.job),
            Err(error) => {
                let _ = entry.job.reply.send(Err(error));
            }
        }
    }
    (retry, deferred)
}

/// Creates the pool, or brings an existing one to the plan.
async fn write_pool(
    pools: &Api<SpiderIPPool>,
    subnet: &SpiderSubnet,
    subnet_cidr: &str,
    entry: &Planned,
) -> Result<(), Error> {
    let annotation = entry.job.request.ip_number.annotation_value();
    let pool_name = &entry.pool_name;
    match &entry.existing {
        None => {
            let pool = new_pool(
                pool_name,
                subnet,
                &entry.job.app,
                &entry.labels,
                &annotation,
                &entry.plan,
                subnet_cidr,
            );
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PostParams::default()
            };
            pools.create(&params, &pool).await.map_err(|source| {
                Error::kube(format!("create SpiderIPPool {pool_name}"), source)
            })?;
        }
        Some(pool) if !pool_up_to_date(pool, &entry.labels, &annotation, &entry.plan.ips) => {
            let patch = pool_update_patch(pool, &entry.labels, &annotation, &entry.plan.ips);
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            match pools.patch(pool_name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => {}
                Err(error) if is_conflict(&error) => {
                    return Err(Error::Retry {
                        what: format!("SpiderIPPool {pool_name} changed"),
                    });
                }
                Err(source) => {
                    return Err(Error::kube(
                        format!("update SpiderIPPool {pool_name}"),
                        source,
                    ));
                }
            }
        }
        Some(_) => {}
    }
    Ok(())
}
