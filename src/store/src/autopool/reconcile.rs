//! The one reconcile of auto-created IPPools (§4.4), shared by the controller-manager's auto-pool
//! controller and the CNI plugin (pods of third-party controllers, §4.5): compare-and-swap.
//!
//! One round over a batch of requests of one subnet: read the subnet afresh, find each
//! workload's pool ([`AutoPoolReads::current_pool`]), plan with [`plan_pre_allocation`]
//! (addresses other pools of the CIDR hold and reserved addresses are never handed out anew),
//! write the subnet's `status.controlledIPPools` once for the whole batch conditioned on the
//! resourceVersion read, then update each existing pool conditioned on the resourceVersion whose
//! spec and ledger its plan saw (an address a pod took in between is never dropped; an older plan
//! never lands last) and create the new ones. A conflict at either write plans the request again
//! ([`Retry`]).
//!
//! The subnet record comes first because the IPPool webhook admits an auto pool only with the
//! addresses its subnet records for it. New pools are created with a plain create (a name
//! collision must fail, never take over another object); the controller-manager creates them
//! after releasing its subnet lock ([`Creation`]), the plugin at once.

use std::borrow::Borrow;
use std::future::Future;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_ipam::autopool::{
    AutoPoolError, AutoPoolLabels, PoolChange, PoolSnapshot, PreAllocation, PreAllocationInput,
    application_key, plan_pre_allocation, subnet_counts,
};
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::ledger::{ControlledIpPools, LedgerError};
use spiderpool_ipam::pod::AppRef;
use spiderpool_ipam::range::IpSet;
use thiserror::Error;

use super::{new_pool, pool_up_to_date, pool_update_patch, settled_ips, write_subnet_status};
use crate::objects::{
    canonical_cidr, controlled_pools, is_already_exists, is_conflict, pool_allocated_set,
    pool_family, pool_ips, pool_name, subnet_family, subnet_ips,
};

/// One auto pool a workload needs: what the controller plans for a workload, or what a
/// third-party controller's pod asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolTarget {
    pub app: AppRef,
    pub subnet: String,
    pub nic: String,
    pub version: IpVersion,
    pub reclaim: bool,
    /// The pool size.
    pub desired: i64,
    /// The `ipam.spidernet.io/ippool-ip-number` value written on the pool (`N` or `+N`).
    pub annotation: String,
    /// The name of the pool when it has to be created.
    pub new_name: String,
}

impl PoolTarget {
    pub fn labels(&self) -> AutoPoolLabels {
        AutoPoolLabels::new(
            &self.subnet,
            &self.app,
            &self.nic,
            self.version,
            self.reclaim,
        )
    }
}

/// Errors of a reconcile. [`ReconcileError::metric_label`] gives a stable category.
#[derive(Debug, Clone, Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Plan(#[from] AutoPoolError),
    #[error("SpiderSubnet {subnet} does not exist")]
    SubnetNotFound { subnet: String },
    #[error(
        "SpiderSubnet '{subnet}' is terminating, we can't reconcile auto-created IPPools from it"
    )]
    SubnetTerminating { subnet: String },
    #[error("SpiderSubnet {subnet} is not an IPv{} subnet", expected.number())]
    SubnetFamily {
        subnet: String,
        actual: IpVersion,
        expected: IpVersion,
    },
    #[error("SpiderSubnet {subnet} has an invalid spec.subnet, spec.ips or spec.excludeIPs")]
    InvalidSubnet { subnet: String, cidr: String },
    #[error(
        "the auto-created IPPool {pool} belongs to another subnet than SpiderSubnet {subnet}; changing the subnet of an existing application is not supported"
    )]
    SubnetChanged {
        pool: String,
        subnet: String,
        subnet_cidr: String,
        pool_cidr: String,
    },
    #[error(transparent)]
    Ledger(LedgerError),
    #[error("failed to get SpiderSubnet {subnet}: {source}")]
    SubnetRead {
        subnet: String,
        source: Arc<kube::Error>,
    },
    #[error("failed to update status of SpiderSubnet {subnet}: {source}")]
    SubnetWrite {
        subnet: String,
        source: Arc<kube::Error>,
    },
    #[error("failed to {what}: {source}")]
    Kube {
        what: String,
        source: Arc<kube::Error>,
    },
    #[error(
        "gave up after repeated conflicts: SpiderSubnet {subnet} or IPPool {pool} kept changing"
    )]
    ConflictsExhausted {
        subnet: String,
        pool: String,
        attempts: u32,
    },
    #[error("gave up reconciling IPPool {pool} of SpiderSubnet {subnet}: the deadline passed")]
    Deadline { subnet: String, pool: String },
}

impl ReconcileError {
    pub fn kube(what: impl Into<String>, source: kube::Error) -> ReconcileError {
        ReconcileError::Kube {
            what: what.into(),
            source: Arc::new(source),
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::Plan(error) => error.metric_label(),
            ReconcileError::SubnetNotFound { .. } => "subnet_not_found",
            ReconcileError::SubnetTerminating { .. } => "subnet_terminating",
            ReconcileError::SubnetFamily { .. } => "subnet_family",
            ReconcileError::InvalidSubnet { .. } => "invalid_subnet",
            ReconcileError::SubnetChanged { .. } => "subnet_changed",
            ReconcileError::Ledger(error) => error.metric_label(),
            ReconcileError::SubnetRead { .. } | ReconcileError::SubnetWrite { .. } => "api_error",
            ReconcileError::Kube { source, .. } if is_conflict(source) => "conflict",
            ReconcileError::Kube { source, .. } if is_already_exists(source) => "already_exists",
            ReconcileError::Kube { .. } => "api_error",
            ReconcileError::ConflictsExhausted { .. } | ReconcileError::Deadline { .. } => {
                "conflicts_exhausted"
            }
        }
    }

    /// `ErrWrongInput`: nothing but a change of the workload or subnet can fix it.
    pub fn is_wrong_input(&self) -> bool {
        match self {
            ReconcileError::Plan(error) => error.is_wrong_input(),
            ReconcileError::SubnetTerminating { .. }
            | ReconcileError::SubnetFamily { .. }
            | ReconcileError::SubnetChanged { .. } => true,
            _ => false,
        }
    }
}

/// What a reconcile reads besides the subnet: from the controller-manager's caches, or from the
/// API server in the plugin.
pub trait AutoPoolReads: Sync {
    /// The workload's pool among those carrying its labels, as the API server has it now (its
    /// resourceVersion conditions the update); `None` when it has none yet.
    fn current_pool(
        &self,
        target: &PoolTarget,
        labels: &AutoPoolLabels,
    ) -> impl Future<Output = Result<Option<SpiderIPPool>, ReconcileError>> + Send;

    /// Every pool of `version` whose subnet is `cidr` (canonical): the addresses they hold or
    /// have allocated are never handed out anew.
    fn pools_in_cidr(
        &self,
        version: IpVersion,
        cidr: &str,
    ) -> impl Future<Output = Result<Vec<Arc<SpiderIPPool>>, ReconcileError>> + Send;

    /// The reserved addresses of `version`.
    fn reserved(
        &self,
        version: IpVersion,
    ) -> impl Future<Output = Result<IpSet, ReconcileError>> + Send;

    /// Told when a workload's pool belongs to another subnet than it asks for (the
    /// controller-manager publishes a Warning Event on the pool).
    fn subnet_changed(&self, pool: &SpiderIPPool, note: String) -> impl Future<Output = ()> + Send;
}

/// How often and how long a batch is planned again after a conflict.
#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: u32,
    /// The pause before attempt `n` is `n` times a random number of milliseconds from here.
    pub pause_millis: RangeInclusive<u64>,
    pub deadline: Option<Instant>,
    /// Create new pools within the round (a collision plans again) instead of returning them as
    /// [`Creation`]s.
    pub create_now: bool,
}

/// A pool brought to its plan.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub pool: SpiderIPPool,
    pub change: PoolChange,
    pub size: u128,
}

/// A new pool whose addresses the subnet already records, left for the caller to create.
#[derive(Debug, Clone)]
pub struct Creation {
    pool: SpiderIPPool,
    change: PoolChange,
    size: u128,
}

/// What became of a batch: each request's result, and the pools left to create.
pub struct RoundOutcome<J> {
    pub finished: Vec<(J, Result<Reconciled, ReconcileError>)>,
    pub creations: Vec<(J, Creation)>,
}

/// One round's result for one request.
enum Step {
    Finished(Result<Reconciled, ReconcileError>),
    Retry,
    Create(Creation),
}

/// A request with its plan.
struct Planned<J> {
    job: J,
    name: String,
    existing: Option<SpiderIPPool>,
    labels: AutoPoolLabels,
    plan: PreAllocation,
}

/// Writes auto pools and their subnet records (compare-and-swap).
pub struct AutoPoolWriter<'a, R> {
    pools: Api<SpiderIPPool>,
    subnets: Api<SpiderSubnet>,
    reads: &'a R,
    field_manager: &'static str,
}

impl<'a, R: AutoPoolReads> AutoPoolWriter<'a, R> {
    pub fn new(client: Client, reads: &'a R, field_manager: &'static str) -> Self {
        AutoPoolWriter {
            pools: Api::all(client.clone()),
            subnets: Api::all(client),
            reads,
            field_manager,
        }
    }

    /// Brings every requested pool of `subnet` to its plan, planning again after conflicts as
    /// `retry` allows.
    pub async fn reconcile<J: Borrow<PoolTarget>>(
        &self,
        subnet: &str,
        jobs: Vec<J>,
        retry: &Retry,
    ) -> RoundOutcome<J> {
        let mut outcome = RoundOutcome {
            finished: Vec::new(),
            creations: Vec::new(),
        };
        let mut remaining = jobs;
        for attempt in 1..=retry.attempts.max(1) {
            if remaining.is_empty() {
                return outcome;
            }
            let steps = self.round(subnet, remaining, retry.create_now).await;
            remaining = Vec::new();
            for (job, step) in steps {
                match step {
                    Step::Finished(result) => outcome.finished.push((job, result)),
                    Step::Create(creation) => outcome.creations.push((job, creation)),
                    Step::Retry => remaining.push(job),
                }
            }
            if remaining.is_empty() || attempt == retry.attempts.max(1) {
                break;
            }
            let pause = Duration::from_millis(
                rand::random_range(retry.pause_millis.clone()) * u64::from(attempt),
            );
            if retry
                .deadline
                .is_some_and(|deadline| Instant::now() + pause >= deadline)
            {
                for job in remaining.drain(..) {
                    let pool = job.borrow().new_name.clone();
                    let error = ReconcileError::Deadline {
                        subnet: subnet.to_string(),
                        pool,
                    };
                    outcome.finished.push((job, Err(error)));
                }
                return outcome;
            }
            log::debug!(
                "SpiderSubnet {subnet}: planning {} auto pools again after a conflict (attempt {attempt})",
                remaining.len()
            );
            tokio::time::sleep(pause).await;
        }
        for job in remaining {
            let error = ReconcileError::ConflictsExhausted {
                subnet: subnet.to_string(),
                pool: job.borrow().new_name.clone(),
                attempts: retry.attempts.max(1),
            };
            outcome.finished.push((job, Err(error)));
        }
        outcome
    }

    /// Creates a pool left by [`AutoPoolWriter::reconcile`].
    pub async fn create(&self, creation: Creation) -> Result<Reconciled, ReconcileError> {
        let name = pool_name(&creation.pool);
        let params = PostParams {
            field_manager: Some(self.field_manager.to_string()),
            ..PostParams::default()
        };
        let created = self
            .pools
            .create(&params, &creation.pool)
            .await
            .map_err(|source| {
                ReconcileError::kube(format!("create SpiderIPPool {name}"), source)
            })?;
        Ok(Reconciled {
            pool: created,
            change: creation.change,
            size: creation.size,
        })
    }

    /// One pass over a batch.
    async fn round<J: Borrow<PoolTarget>>(
        &self,
        subnet_name: &str,
        jobs: Vec<J>,
        create_now: bool,
    ) -> Vec<(J, Step)> {
        let all = |jobs: Vec<J>, error: ReconcileError| {
            jobs.into_iter()
                .map(|job| (job, Step::Finished(Err(error.clone()))))
                .collect::<Vec<_>>()
        };
        let subnet = match self.subnets.get_opt(subnet_name).await {
            Ok(Some(subnet)) => subnet,
            Ok(None) => {
                let subnet = subnet_name.to_string();
                return all(jobs, ReconcileError::SubnetNotFound { subnet });
            }
            Err(source) => {
                let subnet = subnet_name.to_string();
                let source = Arc::new(source);
                return all(jobs, ReconcileError::SubnetRead { subnet, source });
            }
        };
        if subnet.metadata.deletion_timestamp.is_some() {
            let subnet = subnet_name.to_string();
            return all(jobs, ReconcileError::SubnetTerminating { subnet });
        }
        let (Some(version), Some(subnet_ips), Some(subnet_cidr)) = (
            subnet_family(&subnet),
            subnet_ips(&subnet),
            canonical_cidr(&subnet.spec.subnet),
        ) else {
            let error = ReconcileError::InvalidSubnet {
                subnet: subnet_name.to_string(),
                cidr: subnet.spec.subnet.clone(),
            };
            return all(jobs, error);
        };
        let initial = match controlled_pools(&subnet) {
            Ok(controlled) => controlled,
            Err(error) => return all(jobs, ReconcileError::Ledger(error)),
        };

        let mut steps = Vec::new();
        let mut accepted = Vec::new();
        for job in jobs {
            let target = job.borrow();
            if target.version != version {
                let error = ReconcileError::SubnetFamily {
                    subnet: subnet_name.to_string(),
                    actual: version,
                    expected: target.version,
                };
                steps.push((job, Step::Finished(Err(error))));
                continue;
            }
            let labels = target.labels();
            accepted.push((job, labels));
        }
        let reads = futures_util::future::join_all(
            accepted
                .iter()
                .map(|(job, labels)| self.reads.current_pool(job.borrow(), labels)),
        )
        .await;

        // What other pools of the CIDR hold and the reserved addresses: read once, when a
        // request needs planning.
        let mut others: Option<(Vec<Arc<SpiderIPPool>>, IpSet)> = None;
        let mut controlled = initial.clone();
        let mut planned: Vec<Planned<J>> = Vec::new();
        for ((job, labels), read) in accepted.into_iter().zip(reads) {
            let target = job.borrow();
            let existing = match read {
                Ok(existing) => existing,
                Err(error) => {
                    steps.push((job, Step::Finished(Err(error))));
                    continue;
                }
            };
            let name = existing
                .as_ref()
                .map(pool_name)
                .unwrap_or_else(|| target.new_name.clone());
            if let Some(pool) = &existing
                && canonical_cidr(&pool.spec.subnet).as_deref() != Some(subnet_cidr.as_str())
            {
                let app = &target.app;
                let note = format!(
                    "the subnet of {} {}/{} changed to SpiderSubnet {subnet_name} ({}); changing the subnet of an existing application is not supported",
                    app.kind, app.namespace, app.name, subnet.spec.subnet
                );
                self.reads.subnet_changed(pool, note).await;
                let error = ReconcileError::SubnetChanged {
                    pool: name,
                    subnet: subnet_name.to_string(),
                    subnet_cidr: subnet.spec.subnet.clone(),
                    pool_cidr: pool.spec.subnet.clone(),
                };
                steps.push((job, Step::Finished(Err(error))));
                continue;
            }
            // The common case, every pod after the first: nothing to change, nothing more to read.
            if let Some(pool) = &existing
                && let Some(ips) = settled_ips(
                    pool,
                    &subnet,
                    &target.app,
                    &labels,
                    &target.annotation,
                    target.desired,
                )
            {
                let reconciled = Reconciled {
                    pool: pool.clone(),
                    change: PoolChange::Unchanged,
                    size: ips.count(),
                };
                steps.push((job, Step::Finished(Ok(reconciled))));
                continue;
            }
            let read = match others.take() {
                Some(read) => read,
                None => {
                    let read = futures_util::future::try_join(
                        self.reads.pools_in_cidr(version, &subnet_cidr),
                        self.reads.reserved(version),
                    )
                    .await;
                    match read {
                        Ok(read) => read,
                        Err(error) => {
                            steps.push((job, Step::Finished(Err(error))));
                            continue;
                        }
                    }
                }
            };
            let (in_cidr, reserved) = &*others.insert(read);
            let held_elsewhere = held_elsewhere(in_cidr, &name, version);
            let snapshot = existing.as_ref().map(|pool| PoolSnapshot {
                ips: pool_ips(pool).unwrap_or_else(|| IpSet::new(version)),
                allocated: pool_allocated_set(pool, version),
            });
            let plan = plan_pre_allocation(&PreAllocationInput {
                subnet: subnet_name,
                pool: &name,
                application: Some(application_key(&target.app)),
                desired: target.desired,
                subnet_ips: &subnet_ips,
                controlled: &controlled,
                reserved,
                held_elsewhere: &held_elsewhere,
                existing: snapshot.as_ref(),
            });
            match plan {
                Ok(plan) => {
                    controlled = plan.controlled.clone();
                    planned.push(Planned {
                        job,
                        name,
                        existing,
                        labels,
                        plan,
                    });
                }
                Err(error) => steps.push((job, Step::Finished(Err(error.into())))),
            }
        }
        if planned.is_empty() {
            return steps;
        }

        // One subnet write for the whole batch, before any pool is written.
        if controlled != initial
            && let Err(step) = self.write_subnet(&subnet, &subnet_ips, &controlled).await
        {
            steps.extend(planned.into_iter().map(|entry| {
                let step = match &step {
                    None => Step::Retry,
                    Some(error) => Step::Finished(Err(error.clone())),
                };
                (entry.job, step)
            }));
            return steps;
        }

        // Then the pools, in parallel.
        let writes = futures_util::future::join_all(
            planned
                .iter()
                .map(|entry| self.write_pool(&subnet, &subnet_cidr, entry, create_now)),
        )
        .await;
        steps.extend(
            planned
                .into_iter()
                .zip(writes)
                .map(|(entry, step)| (entry.job, step)),
        );
        steps
    }

    /// The subnet's records and counts; `Err(None)` on a conflict (plan again).
    async fn write_subnet(
        &self,
        subnet: &SpiderSubnet,
        subnet_ips: &IpSet,
        controlled: &ControlledIpPools,
    ) -> Result<(), Option<ReconcileError>> {
        let (total, allocated) = subnet_counts(subnet_ips, controlled)
            .map_err(|error| Some(ReconcileError::Plan(error)))?;
        match write_subnet_status(&self.subnets, subnet, controlled, total, allocated).await {
            Ok(_) => Ok(()),
            Err(error) if is_conflict(&error) => Err(None),
            Err(source) => Err(Some(ReconcileError::SubnetWrite {
                subnet: subnet.name_any(),
                source: Arc::new(source),
            })),
        }
    }

    /// Brings an existing pool to its plan (conditioned on the version the plan read), or
    /// creates or leaves the new one.
    async fn write_pool<J: Borrow<PoolTarget>>(
        &self,
        subnet: &SpiderSubnet,
        subnet_cidr: &str,
        entry: &Planned<J>,
        create_now: bool,
    ) -> Step {
        let target = entry.job.borrow();
        let (change, size) = (entry.plan.change, entry.plan.ips.count());
        let Some(pool) = &entry.existing else {
            let pool = new_pool(
                &entry.name,
                subnet,
                &target.app,
                &entry.labels,
                &target.annotation,
                &entry.plan,
                subnet_cidr,
            );
            let creation = Creation { pool, change, size };
            if !create_now {
                return Step::Create(creation);
            }
            return match self.create(creation).await {
                Err(ReconcileError::Kube { source, .. }) if is_already_exists(&source) => {
                    Step::Retry
                }
                result => Step::Finished(result),
            };
        };
        if pool_up_to_date(pool, &entry.labels, &target.annotation, &entry.plan.ips) {
            let pool = pool.clone();
            return Step::Finished(Ok(Reconciled { pool, change, size }));
        }
        let patch = pool_update_patch(pool, &entry.labels, &target.annotation, &entry.plan.ips);
        let params = PatchParams {
            field_manager: Some(self.field_manager.to_string()),
            ..PatchParams::default()
        };
        match self
            .pools
            .patch(&entry.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(pool) => Step::Finished(Ok(Reconciled { pool, change, size })),
            Err(error) if is_conflict(&error) => Step::Retry,
            Err(source) => Step::Finished(Err(ReconcileError::kube(
                format!("update SpiderIPPool {}", entry.name),
                source,
            ))),
        }
    }
}

/// What the other pools of the CIDR hold or have allocated.
fn held_elsewhere(in_cidr: &[Arc<SpiderIPPool>], pool: &str, version: IpVersion) -> IpSet {
    let mut held = IpSet::new(version);
    for other in in_cidr {
        if pool_name(other) == pool || pool_family(other) != Some(version) {
            continue;
        }
        if let Some(ips) = pool_ips(other) {
            held = held.union(&ips);
        }
        held = held.union(&pool_allocated_set(other, version));
    }
    held
}
