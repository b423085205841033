//! The executor of a CNI ADD: carries out the plan of [`super::plan`] against the API server.
//!
//! Pool ledgers are written with compare-and-swap through the pool writer (combined with the
//! node's other calls when a lock directory is set); the SpiderEndpoint is written with a
//! `resourceVersion` precondition. Every address an allocation takes goes into a
//! [`RollbackLog`]; when any NIC fails (pool exhausted, conflicts exhausted, API error) or the
//! endpoint cannot be written, exactly the records this call created are released again, so a
//! failed ADD leaves nothing behind and a retried ADD starts from a clean ledger. An endpoint
//! write that reported an error but landed (a lost response) is recognised by reading the
//! endpoint back: then the allocation stands.
//!
//! The call's deadline is enforced here, around the writes, and not only by the plugin's outer
//! guard: when it passes with a write in flight, that write is dropped and the rollback still
//! runs (within [`ROLLBACK_BUDGET`] after the deadline; the plugin's guard allows for it). A pool
//! write whose outcome is unknown (dropped in flight, or its answer lost) is resolved by the
//! rollback from the pool itself (see [`RollbackLog`]).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use spiderpool_api::constants::ANNO_IPPOOL_IP_NUMBER;
use spiderpool_api::{SpiderEndpoint, SpiderIPPool};
use spiderpool_ipam::ledger::{AllocateError, LedgerError, PoolIpAllocation, PoolIpAllocations};
use spiderpool_ipam::pod::AppRef;
use spiderpool_ipam::pool::PoolView;
use spiderpool_ipam::result::{
    AllocationResult, IpAllocationDetail, addresses_by_pool, attach_custom_routes,
    claim_unnamed_nic, endpoint_details, rename_unnamed_nics, response_from_details,
    response_from_results,
};
use spiderpool_ipam::selection::{CandidateSource, PoolCandidate, SelectionError};

use super::candidates::{Inputs, Selected};
use super::plan::{
    NicPlan, RollbackLog, StoredEndpoint, Taken, endpoint_records, nic_plan, uncertain_releases,
};
use super::{AddOutcome, AddRequest, AddSource};
use crate::cas::{CasStats, Step};
use crate::combine::{LedgerOp, allocated_address, release_op};
use crate::endpoint::new_endpoint;
use crate::objects::{detail_to_api, pool_allocations, pool_ips, pool_view, reserved_set};
use crate::{Store, StoreError, api_error};

/// How long a failed ADD may keep trying to give back what it took, after its deadline at worst.
pub const ROLLBACK_BUDGET: Duration = Duration::from_secs(8);

/// How often a full auto pool is read again while waiting for it to grow.
const AUTO_POOL_GROWTH_POLL: Duration = Duration::from_millis(500);

/// Until when a full auto pool of a built-in controller is waited for: upstream's
/// `waitSubnetPoolMaxRetries` x `waitSubnetPoolTimeInSecond`, leaving a quarter of the call's
/// time for the other NICs and a rollback.
fn auto_pool_growth_deadline(request: &AddRequest<'_>) -> Instant {
    let now = Instant::now();
    let settings = request.settings;
    let seconds = settings
        .wait_subnet_pool_max_retries
        .max(0)
        .saturating_mul(settings.wait_subnet_pool_time_in_second.max(0));
    let configured = now + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    let budget = request
        .deadline
        .saturating_duration_since(now)
        .mul_f64(0.75);
    configured.min(now + budget)
}

/// Whether an auto pool's size follows its workload's replicas (`ippool-ip-number: "+N"`).
fn follows_replicas(pool: &SpiderIPPool) -> bool {
    pool.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ANNO_IPPOOL_IP_NUMBER))
        .is_some_and(|value| value.trim_start().starts_with('+'))
}

/// The bare addresses a stored endpoint holds for its UID (kept by a rollback of that UID).
fn held_addresses(stored: &StoredEndpoint) -> Vec<String> {
    addresses_by_pool(&stored.details, &stored.uid)
        .into_values()
        .flatten()
        .map(|address| address.ip)
        .collect()
}

/// The pod an ADD is for.
pub(super) struct AddPod<'a> {
    pub pod: &'a Pod,
    pub uid: String,
    pub top_controller: AppRef,
    pub statefulset: bool,
}

/// Why `ip` may not be recorded in `pool` again, if so: outside its `spec.ips` minus
/// `excludeIPs` (or a spec that does not parse), or reserved.
fn not_allocatable(
    pool: &SpiderIPPool,
    reservations: &[spiderpool_api::SpiderReservedIP],
    ip: &str,
) -> Option<String> {
    let Some(effective) = pool_ips(pool) else {
        return Some("the pool's spec does not parse".to_string());
    };
    let Some(address) = spiderpool_ipam::ip::parse_ip(effective.version(), ip) else {
        return Some("not an address of the pool's family".to_string());
    };
    if !effective.contains(&address) {
        return Some("no longer in spec.ips minus spec.excludeIPs".to_string());
    }
    if reserved_set(reservations, effective.version()).contains(&address) {
        return Some("reserved by a SpiderReservedIP".to_string());
    }
    None
}

/// The answer from stored endpoint entries.
fn answer(
    details: &[IpAllocationDetail],
    uid: &str,
    source: AddSource,
    request: &AddRequest<'_>,
    stats: CasStats,
) -> AddOutcome {
    let (ips, routes) = response_from_details(
        details,
        request.settings.enable_ip_conflict_detection,
        request.settings.enable_gateway_detection,
    );
    AddOutcome {
        pod_uid: uid.to_string(),
        ips,
        routes,
        source,
        stats,
    }
}

impl Store {
    /// [`super::plan::AddPlan::Reuse`]: the answer from the endpoint once the ledger records its
    /// addresses; `None` when another pod holds one of them (the endpoint is stale and has been
    /// retired).
    pub(super) async fn reuse(
        &self,
        add: &AddPod<'_>,
        endpoint: &SpiderEndpoint,
        stored: StoredEndpoint,
        request: &AddRequest<'_>,
        stats: &mut CasStats,
    ) -> Result<Option<AddOutcome>, StoreError> {
        let (namespace, name) = (request.namespace, request.pod_name);
        match self
            .ensure_records(add.pod, &stored.details, request.deadline)
            .await
        {
            Ok(ensure_stats) => stats.add(ensure_stats),
            Err(StoreError::Ledger(error)) => {
                log::warn!(
                    "SpiderEndpoint {namespace}/{name} is stale ({error}): allocating afresh"
                );
                self.retire_endpoint(endpoint, true).await?;
                return Ok(None);
            }
            Err(error) => return Err(error),
        }
        let mut details = stored.details;
        if claim_unnamed_nic(&mut details, request.nic) {
            let stored: Vec<_> = details.iter().map(detail_to_api).collect();
            self.update_endpoint(namespace, name, |endpoint| {
                let status = endpoint.status.get_or_insert_with(Default::default);
                let changed = status.current.ips != stored;
                status.current.ips = stored.clone();
                changed
            })
            .await?;
        }
        let outcome = answer(&details, &add.uid, AddSource::Existing, request, *stats);
        Ok(Some(outcome))
    }

    /// [`super::plan::AddPlan::TakeOver`]: the records and the endpoint move to the new UID and
    /// node; the answer when the endpoint serves this NIC.
    pub(super) async fn take_over(
        &self,
        add: &AddPod<'_>,
        stored: StoredEndpoint,
        node: &str,
        request: &AddRequest<'_>,
        stats: &mut CasStats,
    ) -> Result<Option<AddOutcome>, StoreError> {
        stats.add(
            self.ensure_records(add.pod, &stored.details, request.deadline)
                .await?,
        );
        let mut details = stored.details;
        let serves_nic = spiderpool_ipam::result::has_allocation_for(&details, request.nic);
        claim_unnamed_nic(&mut details, request.nic);
        let entries: Vec<_> = details.iter().map(detail_to_api).collect();
        let uid = add.uid.clone();
        self.update_endpoint(request.namespace, request.pod_name, |endpoint| {
            let status = endpoint.status.get_or_insert_with(Default::default);
            let changed = status.current.uid != uid
                || status.current.node != node
                || status.current.ips != entries;
            status.current.uid = uid.clone();
            status.current.node = node.to_string();
            status.current.ips = entries.clone();
            changed
        })
        .await?;
        Ok(serves_nic.then(|| answer(&details, &add.uid, AddSource::StatefulSet, request, *stats)))
    }

    /// [`super::plan::AddPlan::Replace`]: the endpoint goes, with its addresses when `release`.
    pub(super) async fn replace(
        &self,
        add: &AddPod<'_>,
        endpoint: &SpiderEndpoint,
        stored: &StoredEndpoint,
        release: bool,
        request: &AddRequest<'_>,
        stats: &mut CasStats,
    ) -> Result<(), StoreError> {
        let (namespace, name) = (request.namespace, request.pod_name);
        if release {
            log::info!(
                "StatefulSet pod {namespace}/{name}: pool candidates changed, releasing {:?}",
                addresses_by_pool(&stored.details, &stored.uid)
            );
            stats.add(
                self.release_details(&stored.details, &stored.uid, request.deadline)
                    .await?,
            );
        } else {
            log::info!(
                "SpiderEndpoint {namespace}/{name} belongs to pod UID {}, replacing it for UID {}",
                stored.uid,
                add.uid
            );
        }
        self.retire_endpoint(endpoint, true).await
    }

    /// [`super::plan::AddPlan::Allocate`]: every NIC of the candidates the endpoint (of this pod,
    /// if any) does not hold, then the endpoint; on failure, the rollback.
    pub(super) async fn allocate_nics(
        &self,
        add: &AddPod<'_>,
        selected: Selected,
        endpoint: Option<&SpiderEndpoint>,
        request: &AddRequest<'_>,
        mut stats: CasStats,
    ) -> Result<AddOutcome, StoreError> {
        let Selected { inputs, candidates } = selected;
        let stored = endpoint.map(StoredEndpoint::of);
        let held = stored
            .as_ref()
            .map(StoredEndpoint::nics)
            .unwrap_or_default();
        let plan = nic_plan(candidates, &held, &inputs.context)?;
        log::debug!("allocating NICs {:?}", plan.nics);
        let mut log = RollbackLog::default();
        let work = async {
            let results = self
                .take_addresses(&inputs, &plan, &add.uid, request, &mut log, &mut stats)
                .await?;
            self.record_endpoint(add, &plan, &results, request)
                .await
                .map(|()| results)
        };
        let written = tokio::time::timeout_at(request.deadline.into(), work)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Deadline {
                    what: "the pool and endpoint writes of the ADD".to_string(),
                })
            });
        let results = match written {
            Ok(results) => results,
            Err(error) => {
                let kept = stored.as_ref().map(held_addresses).unwrap_or_default();
                stats.add(self.roll_back(&log, &add.uid, &kept).await);
                return Err(error);
            }
        };
        let (mut ips, mut routes) = response_from_results(&results);
        for ip in &mut ips {
            ip.enable_ip_conflict_detection = request.settings.enable_ip_conflict_detection;
            ip.enable_gateway_detection = request.settings.enable_gateway_detection;
        }
        // A later NIC appended to an existing endpoint: the earlier NICs' data stays valid.
        if let Some(stored) = stored {
            let earlier = answer(
                &stored.details,
                &add.uid,
                AddSource::Existing,
                request,
                stats,
            );
            ips.extend(earlier.ips);
            routes.extend(earlier.routes);
        }
        Ok(AddOutcome {
            pod_uid: add.uid.clone(),
            ips,
            routes,
            source: AddSource::Allocated(plan.source),
            stats,
        })
    }

    /// Takes an address for every family of every NIC of `plan`, logging each in `log`; the
    /// results with the custom routes attached and unnamed NICs renamed.
    async fn take_addresses(
        &self,
        inputs: &Inputs,
        plan: &NicPlan,
        uid: &str,
        request: &AddRequest<'_>,
        log: &mut RollbackLog,
        stats: &mut CasStats,
    ) -> Result<Vec<AllocationResult>, StoreError> {
        let owner = PoolIpAllocation::new(inputs.context.namespaced_name(), uid.to_string());
        // The auto pool of a built-in controller may not have grown yet for a pod of a scale-up:
        // like upstream's `findAppAutoPool`, wait for the controller-manager instead of failing
        // (a third-party controller's pool was just sized by this call: no one will grow it).
        let grow_until = (plan.source == CandidateSource::SubnetAutoPool
            && !inputs.context.top_controller.is_third_party())
        .then(|| auto_pool_growth_deadline(request));
        let mut results = Vec::new();
        for nic in &plan.nics {
            for candidate in &nic.candidates {
                let (view, taken, candidate_stats) = self
                    .allocate_candidate(
                        inputs,
                        (&owner, &nic.nic),
                        candidate,
                        grow_until,
                        request,
                        log,
                    )
                    .await?;
                stats.add(candidate_stats);
                let ip = taken.ip;
                log.record(taken);
                results.push(AllocationResult::new(
                    &view,
                    ip,
                    &nic.nic,
                    nic.clean_gateway,
                )?);
            }
        }
        attach_custom_routes(&mut results, &plan.custom_routes);
        if plan.unnamed {
            rename_unnamed_nics(&mut results);
        }
        Ok(results)
    }

    /// Writes the endpoint of the results. The write may have reached the server although the
    /// call failed (a timeout, an etcd error): then the allocation stands.
    async fn record_endpoint(
        &self,
        add: &AddPod<'_>,
        plan: &NicPlan,
        results: &[AllocationResult],
        request: &AddRequest<'_>,
    ) -> Result<(), StoreError> {
        let (namespace, name) = (request.namespace, request.pod_name);
        let entries = endpoint_details(results, plan.unnamed)
            .iter()
            .map(detail_to_api)
            .collect();
        let desired = new_endpoint(add.pod, &add.top_controller, !add.statefulset, entries);
        let Err(error) = self.write_endpoint(desired).await else {
            return Ok(());
        };
        let stored = self.get_endpoint(namespace, name).await.ok().flatten();
        if endpoint_records(stored.as_ref(), &add.uid, results, plan.unnamed) {
            log::warn!("SpiderEndpoint {namespace}/{name} was written despite: {error}");
            return Ok(());
        }
        Err(error)
    }

    /// Tries the pools of one candidate in order; the first that yields an address wins. With
    /// `grow_until`, an exhausted pool is read again until then (an auto pool being scaled up).
    /// Each pool write is logged in `log` before it is sent.
    async fn allocate_candidate(
        &self,
        inputs: &Inputs,
        (owner, nic): (&PoolIpAllocation, &str),
        candidate: &PoolCandidate,
        grow_until: Option<Instant>,
        request: &AddRequest<'_>,
        log: &mut RollbackLog,
    ) -> Result<(PoolView, Taken, CasStats), StoreError> {
        let max = request.settings.ip_pool_max_allocated_ips;
        let writer = self.pool_writer();
        let mut stats = CasStats::default();
        let mut errors: Vec<String> = Vec::new();
        'pools: for pool in &candidate.pools {
            let mut known = inputs.pool(pool).cloned();
            // Only a pool sized by replicas (`+N`) grows with a scale-up; a fixed `N` never will.
            let grow_until = grow_until.filter(|_| known.as_ref().is_some_and(follows_replicas));
            let outcome = loop {
                let op = LedgerOp::Allocate {
                    owner: owner.clone(),
                };
                log.intend(pool);
                let (outcome, pool_stats) = writer
                    .apply(pool, op, max, known.take(), request.deadline)
                    .await?;
                log.settle(pool);
                stats.add(pool_stats);
                let Some(error) = outcome.allocate_error(pool) else {
                    break outcome;
                };
                if matches!(error, StoreError::Allocate(AllocateError::Exhausted { .. }))
                    && grow_until
                        .is_some_and(|until| Instant::now() + AUTO_POOL_GROWTH_POLL < until)
                {
                    log::info!(
                        "auto-created IPPool {pool} has no free IP yet: waiting for the controller-manager to scale it up"
                    );
                    tokio::time::sleep(AUTO_POOL_GROWTH_POLL).await;
                    continue;
                }
                match error {
                    StoreError::Allocate(
                        error @ (AllocateError::Exhausted { .. }
                        | AllocateError::ThresholdExceeded { .. }),
                    ) => {
                        errors.push(error.to_string());
                        continue 'pools;
                    }
                    other => return Err(other),
                }
            };
            let view =
                match inputs.pool(pool) {
                    Some(current) => pool_view(current),
                    None => {
                        pool_view(&self.pools().get(pool).await.map_err(|error| {
                            api_error(format!("get SpiderIPPool {pool}"), error)
                        })?)
                    }
                };
            let (ip, created) = allocated_address(&outcome, view.ip_version).ok_or_else(|| {
                StoreError::Invalid(format!("unexpected outcome {outcome:?} from IPPool {pool}"))
            })?;
            log::debug!("allocated {ip} to NIC {nic} from IPPool {pool}");
            let taken = Taken {
                pool: pool.clone(),
                ip,
                created,
            };
            return Ok((view, taken, stats));
        }
        Err(SelectionError::CandidateExhausted {
            version: candidate.ip_version,
            nic: nic.to_string(),
            pools: candidate.pools.clone(),
            errors,
        }
        .into())
    }

    /// Gives back the records of `log` (best effort: failures are logged and left to the garbage
    /// collector), within its own time budget: the call's deadline may have passed. In a pool
    /// with a write of unknown outcome every record of `uid` goes but the addresses in `kept`
    /// (what the pod's endpoint holds).
    pub(super) async fn roll_back(
        &self,
        log: &RollbackLog,
        uid: &str,
        kept: &[String],
    ) -> CasStats {
        let deadline = Instant::now() + ROLLBACK_BUDGET;
        let work = self.roll_back_until(log, uid, kept, deadline);
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(stats) => stats,
            Err(_) => {
                log::error!(
                    "the rollback ran out of time (left to garbage collection): {:?}",
                    log.undo(uid)
                );
                CasStats::default()
            }
        }
    }

    async fn roll_back_until(
        &self,
        log: &RollbackLog,
        uid: &str,
        kept: &[String],
        deadline: Instant,
    ) -> CasStats {
        let mut stats = CasStats::default();
        let writer = self.pool_writer();
        for pool in log.uncertain() {
            let releases = match self.pools().get(pool).await {
                Ok(current) => pool_allocations(&current)
                    .map(|records| uncertain_releases(&records, uid, kept))
                    .unwrap_or_default(),
                Err(error) => {
                    log::error!(
                        "failed to read IPPool {pool} after a write of unknown outcome (left to garbage collection): {error}"
                    );
                    continue;
                }
            };
            if releases.is_empty() {
                continue;
            }
            match writer
                .apply(pool, release_op(&releases), i64::MAX, None, deadline)
                .await
            {
                Ok((_, release_stats)) => {
                    stats.add(release_stats);
                    log::info!(
                        "rolled back {releases:?} of IPPool {pool} after a write of unknown outcome"
                    );
                }
                Err(error) => log::error!(
                    "failed to roll back {releases:?} of IPPool {pool} (left to garbage collection): {error}"
                ),
            }
        }
        for (pool, ip, release) in log.undo(uid) {
            match writer.apply(pool, release, i64::MAX, None, deadline).await {
                Ok((_, release_stats)) => {
                    stats.add(release_stats);
                    log::info!("rolled back {ip} of IPPool {pool}");
                }
                Err(error) => log::error!(
                    "failed to roll back {ip} of IPPool {pool} (left to garbage collection): {error}"
                ),
            }
        }
        stats
    }

    /// `UpdateAllocatedIPs`, made a repair as well: every stored address of the pod must be
    /// recorded for the pod's current UID. A record of the same pod name under an older UID (a
    /// re-created StatefulSet pod) moves to the new UID; a missing record is written again only if
    /// the address is free, still in the pool's `spec.ips` minus `excludeIPs` and not reserved
    /// (else [`LedgerError::NotAllocatable`]); an address held by another pod is a
    /// [`LedgerError::ForeignRecord`]. Both make the caller drop the endpoint and allocate afresh.
    async fn ensure_records(
        &self,
        pod: &Pod,
        details: &[IpAllocationDetail],
        deadline: Instant,
    ) -> Result<CasStats, StoreError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let holder = format!("{namespace}/{name}");
        let writer = self.pool_writer();
        let reservations = writer.reserved().await?;
        let mut stats = CasStats::default();
        for (pool, addresses) in addresses_by_pool(details, &uid) {
            let ((), pool_stats) = writer
                .update(&pool, None, deadline, |current| {
                    let mut records = PoolIpAllocations::parse(
                        &pool,
                        current
                            .status
                            .as_ref()
                            .and_then(|status| status.allocated_ips.as_deref()),
                    )?;
                    let mut changed = false;
                    for address in &addresses {
                        match records.0.get_mut(&address.ip) {
                            Some(record) if record.pod == holder => {
                                if record.pod_uid != uid {
                                    record.pod_uid = uid.clone();
                                    changed = true;
                                }
                            }
                            Some(record) => {
                                return Err(LedgerError::ForeignRecord {
                                    pool: pool.clone(),
                                    ip: address.ip.clone(),
                                    recorded_pod: record.pod.clone(),
                                    recorded_uid: record.pod_uid.clone(),
                                    pod: holder.clone(),
                                }
                                .into());
                            }
                            None => {
                                let refusal = not_allocatable(current, &reservations, &address.ip);
                                if let Some(reason) = refusal {
                                    return Err(LedgerError::NotAllocatable {
                                        pool: pool.clone(),
                                        ip: address.ip.clone(),
                                        pod: holder.clone(),
                                        reason,
                                    }
                                    .into());
                                }
                                records.insert(
                                    address.ip.clone(),
                                    PoolIpAllocation::new(holder.clone(), uid.clone()),
                                );
                                changed = true;
                            }
                        }
                    }
                    Ok(if changed {
                        Step::Write(records.status(), ())
                    } else {
                        Step::Done(())
                    })
                })
                .await?;
            stats.add(pool_stats);
        }
        Ok(stats)
    }
}
