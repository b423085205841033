//! CNI ADD (§5.2): return the stored allocation when the pod already holds this NIC, let a
//! re-created StatefulSet pod take over its predecessor's addresses, otherwise select candidate
//! pools and allocate every NIC of the plan with compare-and-swap, then record the result in the
//! pod's SpiderEndpoint.
//!
//! All NICs are allocated before the endpoint is written; when any NIC fails (pool exhausted,
//! conflicts exhausted, API error) the records this call created are released again, so a failed
//! ADD leaves nothing behind, and a retried ADD starts from a clean ledger.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use spiderpool_api::SpiderIPPool;
use spiderpool_api::constants::ANNO_IPPOOL_IP_NUMBER;

use super::autopool::{AutoPoolTarget, instance_labels, label_selector};
use super::cas::{CasStats, Step};
use super::combine::{LedgerOp, allocated_address, release_op};
use super::context::{pod_context, pool_query};
use super::endpoint::new_endpoint;
use super::objects::{
    detail_from_api, detail_to_api, pod_liveness, pool_family, pool_name, pool_view,
};
use super::{Store, StoreError};
use crate::annotations::{ANNO_POD_ROUTES, is_multiple_nic_without_names, parse_pod_routes};
use crate::autopool::AutoPoolLabels;
use crate::config::IpamConfig;
use crate::ip::IpVersion;
use crate::ledger::{AllocateError, IpAndUid, LedgerError, PoolIpAllocation, PoolIpAllocations};
use crate::pod::{AppRef, PodContext, is_pod_alive};
use crate::pool::PoolView;
use crate::result::{
    AllocationResult, IpAllocationDetail, IpConfig, addresses_by_pool, attach_custom_routes,
    claim_unnamed_nic, endpoint_details, has_allocation_for, rename_unnamed_nics,
    response_from_details, response_from_results,
};
use crate::routes::NicRoute;
use crate::selection::{
    AutoPoolRequest, CandidatePlan, CandidateSource, Candidates, PoolCandidate, SelectionContext,
    SelectionError, filter_candidates, select_candidates,
};
use crate::settings::ClusterSettings;

/// How long a failed ADD may keep trying to give back what it took.
const ROLLBACK_BUDGET: Duration = Duration::from_secs(10);

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

/// One CNI ADD.
#[derive(Debug, Clone, Copy)]
pub struct AddRequest<'a> {
    pub namespace: &'a str,
    pub pod_name: &'a str,
    /// `CNI_IFNAME`.
    pub nic: &'a str,
    pub ipam: &'a IpamConfig,
    pub settings: &'a ClusterSettings,
    pub deadline: Instant,
}

/// Where the returned addresses came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddSource {
    /// The pod's endpoint already held this NIC (repeated ADD, or a later NIC of an `ippools`
    /// annotation).
    Existing,
    /// A re-created StatefulSet pod kept its predecessor's addresses.
    StatefulSet,
    /// Allocated now, with candidates from this source.
    Allocated(CandidateSource),
}

/// The outcome of an ADD: the IP configs and routes of every NIC known for the pod (the CNI
/// result keeps those of `CNI_IFNAME`).
#[derive(Debug, Clone)]
pub struct AddOutcome {
    pub pod_uid: String,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<NicRoute>,
    pub source: AddSource,
    pub stats: CasStats,
}

/// Everything selection reads.
struct Inputs {
    context: PodContext,
    pools: Vec<SpiderIPPool>,
    views: Vec<PoolView>,
}

impl Inputs {
    fn pool(&self, name: &str) -> Option<&SpiderIPPool> {
        self.pools
            .iter()
            .find(|pool| pool.metadata.name.as_deref() == Some(name))
    }
}

/// An address this call holds in a pool.
struct Taken {
    pool: String,
    ip: IpAddr,
    /// The record was written by this call (not found already held by the pod UID).
    created: bool,
}

fn selection_context<'a>(inputs: &'a Inputs, request: &'a AddRequest<'a>) -> SelectionContext<'a> {
    SelectionContext {
        pod: &inputs.context,
        nic: request.nic,
        ipam: request.ipam,
        settings: request.settings,
        pools: &inputs.views,
        // `match_master_subnet` needs the SR-IOV PF of the pod netns, which this plugin does not
        // probe: such pools are filtered out with upstream's "podNetNamespace is empty" reason.
        master_interface: None,
    }
}

impl Store {
    /// CNI ADD for `request.nic` of the pod.
    pub async fn allocate(&self, request: &AddRequest<'_>) -> Result<AddOutcome, StoreError> {
        let started = Instant::now();
        let (namespace, name) = (request.namespace, request.pod_name);
        let pod = self
            .get_pod(namespace, name)
            .await?
            .ok_or_else(|| StoreError::PodNotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
            })?;
        if !is_pod_alive(Some(&pod_liveness(&pod))) {
            return Err(StoreError::DeadPod {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        log::debug!("pod read after {:?}", started.elapsed());
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let top_controller = self.top_controller(&pod).await?;
        let statefulset = request.settings.enable_stateful_set && top_controller.is_statefulset();
        let mut stats = CasStats::default();
        let mut inputs: Option<Inputs> = None;
        let mut endpoint = self.get_endpoint(namespace, name).await?;

        if let Some(existing) = endpoint.clone() {
            let status = existing.status.clone().unwrap_or_default();
            let mut details: Vec<IpAllocationDetail> =
                status.current.ips.iter().map(detail_from_api).collect();
            let same_uid = status.current.uid == uid;
            if statefulset && !details.is_empty() {
                let mut gathered = self.gather(&pod, top_controller.clone(), request).await?;
                let candidates = self.candidates(&mut gathered, request).await?;
                if statefulset_pools_changed(&details, &candidates, request.nic) {
                    // §5.2 step 4, simplified: the whole old allocation goes and the pod is
                    // allocated afresh from its current candidates.
                    log::info!(
                        "StatefulSet pod {namespace}/{name}: pool candidates changed, releasing {:?}",
                        addresses_by_pool(&details, &status.current.uid)
                    );
                    stats.add(
                        self.release_details(&details, &status.current.uid, request.deadline)
                            .await?,
                    );
                    self.retire_endpoint(&existing, true).await?;
                    endpoint = None;
                    inputs = Some(gathered);
                } else {
                    // §5.2 step 5: take over the stored addresses under the new UID (and make
                    // sure the ledger still records them).
                    stats.add(
                        self.ensure_records(&pod, &details, request.deadline)
                            .await?,
                    );
                    let node = gathered.context.node_name.clone();
                    let serves_nic = has_allocation_for(&details, request.nic);
                    claim_unnamed_nic(&mut details, request.nic);
                    let stored: Vec<_> = details.iter().map(detail_to_api).collect();
                    let new_uid = uid.clone();
                    self.update_endpoint(namespace, name, |endpoint| {
                        let status = endpoint.status.get_or_insert_with(Default::default);
                        let changed = status.current.uid != new_uid
                            || status.current.node != node
                            || status.current.ips != stored;
                        status.current.uid = new_uid.clone();
                        status.current.node = node.clone();
                        status.current.ips = stored.clone();
                        changed
                    })
                    .await?;
                    if serves_nic {
                        let (ips, routes) = response_from_details(
                            &details,
                            request.settings.enable_ip_conflict_detection,
                            request.settings.enable_gateway_detection,
                        );
                        return Ok(AddOutcome {
                            pod_uid: uid,
                            ips,
                            routes,
                            source: AddSource::StatefulSet,
                            stats,
                        });
                    }
                    // This NIC was never allocated: allocate it and append it below.
                    endpoint = self.get_endpoint(namespace, name).await?;
                    inputs = Some(gathered);
                }
            } else if same_uid {
                // §5.2 step 6: a repeated ADD, or a later NIC of the `ippools` annotation. The
                // ledger must still record what the endpoint says: an earlier ADD whose endpoint
                // write reached the server but reported an error rolled its records back.
                let verified = if has_allocation_for(&details, request.nic) {
                    match self.ensure_records(&pod, &details, request.deadline).await {
                        Ok(ensure_stats) => {
                            stats.add(ensure_stats);
                            true
                        }
                        Err(StoreError::Ledger(error)) => {
                            log::warn!(
                                "SpiderEndpoint {namespace}/{name} is stale ({error}): allocating afresh"
                            );
                            self.retire_endpoint(&existing, true).await?;
                            endpoint = None;
                            false
                        }
                        Err(error) => return Err(error),
                    }
                } else {
                    false
                };
                if verified {
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
                    let (ips, routes) = response_from_details(
                        &details,
                        request.settings.enable_ip_conflict_detection,
                        request.settings.enable_gateway_detection,
                    );
                    return Ok(AddOutcome {
                        pod_uid: uid,
                        ips,
                        routes,
                        source: AddSource::Existing,
                        stats,
                    });
                }
            } else {
                // The endpoint of an earlier pod with the same name: it goes, and this pod gets a
                // fresh allocation. The earlier pod's records are released by its own DEL (which
                // finds them by its UID) or by garbage collection.
                log::info!(
                    "SpiderEndpoint {namespace}/{name} belongs to pod UID {}, replacing it for UID {uid}",
                    status.current.uid
                );
                self.retire_endpoint(&existing, true).await?;
                endpoint = None;
            }
        }

        log::debug!(
            "pod, controller and endpoint read after {:?}",
            started.elapsed()
        );
        let mut inputs = match inputs {
            Some(inputs) => inputs,
            None => self.gather(&pod, top_controller.clone(), request).await?,
        };
        let mut candidates = self.candidates(&mut inputs, request).await?;
        let source = candidates.source;
        // NICs the endpoint (same UID) already holds are not allocated again.
        if let Some(existing) = &endpoint {
            let held: Vec<String> = existing
                .status
                .iter()
                .flat_map(|status| status.current.ips.iter().map(|entry| entry.nic.clone()))
                .collect();
            candidates.nics.retain(|nic| !held.contains(&nic.nic));
        }
        let custom_routes = match inputs.context.annotations.get(ANNO_POD_ROUTES) {
            Some(value) => parse_pod_routes(value)?,
            None => Vec::new(),
        };
        let unnamed = source == CandidateSource::PodIpPools
            && is_multiple_nic_without_names(&inputs.context.annotations);

        log::debug!(
            "candidates {:?} selected after {:?}",
            candidates.pool_names(),
            started.elapsed()
        );
        log::debug!("reserved IPs read after {:?}", started.elapsed());
        let owner = PoolIpAllocation::new(inputs.context.namespaced_name(), uid.clone());
        let mut taken: Vec<Taken> = Vec::new();
        let mut results: Vec<AllocationResult> = Vec::new();
        let mut failure: Option<StoreError> = None;
        // The auto pool of a built-in controller may not have grown yet for a pod of a scale-up:
        // like upstream's `findAppAutoPool`, wait for the controller-manager instead of failing
        // (a third-party controller's pool was just sized by this call: no one will grow it).
        let grow_until = (source == CandidateSource::SubnetAutoPool
            && !inputs.context.top_controller.is_third_party())
        .then(|| auto_pool_growth_deadline(request));
        'nics: for nic in &candidates.nics {
            for candidate in &nic.candidates {
                match self
                    .allocate_candidate(&inputs, &owner, &nic.nic, candidate, grow_until, request)
                    .await
                {
                    Ok((view, held, candidate_stats)) => {
                        stats.add(candidate_stats);
                        match AllocationResult::new(&view, held.ip, &nic.nic, nic.clean_gateway) {
                            Ok(result) => results.push(result),
                            Err(error) => failure = Some(error.into()),
                        }
                        taken.push(held);
                        if failure.is_some() {
                            break 'nics;
                        }
                    }
                    Err(error) => {
                        failure = Some(error);
                        break 'nics;
                    }
                }
            }
        }
        if failure.is_none() {
            attach_custom_routes(&mut results, &custom_routes);
            if unnamed {
                rename_unnamed_nics(&mut results);
            }
            let entries = endpoint_details(&results, unnamed)
                .iter()
                .map(detail_to_api)
                .collect();
            let desired = new_endpoint(&pod, &top_controller, !statefulset, entries);
            if let Err(error) = self.write_endpoint(desired).await {
                // The write may have reached the server although the call failed (a timeout,
                // an etcd error): then the allocation stands and must not be rolled back.
                let written = match self.get_endpoint(namespace, name).await {
                    Ok(Some(stored)) => stored.status.is_some_and(|status| {
                        status.current.uid == uid
                            && results.iter().all(|result| {
                                status.current.ips.iter().any(|entry| {
                                    entry.nic == result.ip.nic || (unnamed && entry.nic.is_empty())
                                })
                            })
                    }),
                    _ => false,
                };
                if written {
                    log::warn!("SpiderEndpoint {namespace}/{name} was written despite: {error}");
                } else {
                    failure = Some(error);
                }
            }
        }
        if let Some(error) = failure {
            stats.add(self.roll_back(&taken, &uid).await);
            return Err(error);
        }
        let (mut ips, mut routes) = response_from_results(&results);
        for ip in &mut ips {
            ip.enable_ip_conflict_detection = request.settings.enable_ip_conflict_detection;
            ip.enable_gateway_detection = request.settings.enable_gateway_detection;
        }
        // A later NIC appended to an existing endpoint: the earlier NICs' data stays valid.
        if let Some(existing) = &endpoint {
            let details: Vec<IpAllocationDetail> = existing
                .status
                .iter()
                .flat_map(|status| status.current.ips.iter().map(detail_from_api))
                .collect();
            let (old_ips, old_routes) = response_from_details(
                &details,
                request.settings.enable_ip_conflict_detection,
                request.settings.enable_gateway_detection,
            );
            ips.extend(old_ips);
            routes.extend(old_routes);
        }
        Ok(AddOutcome {
            pod_uid: uid,
            ips,
            routes,
            source: AddSource::Allocated(source),
            stats,
        })
    }

    /// Reads the namespace, the pools the deciding source names (or all of them) and, when a
    /// pool has a node affinity, the node.
    async fn gather(
        &self,
        pod: &Pod,
        top_controller: AppRef,
        request: &AddRequest<'_>,
    ) -> Result<Inputs, StoreError> {
        let namespace = self.get_namespace(request.namespace).await?;
        let pod_annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let namespace_annotations = namespace
            .as_ref()
            .and_then(|namespace| namespace.metadata.annotations.clone())
            .unwrap_or_default();
        let query = pool_query(
            &pod_annotations,
            &namespace_annotations,
            request.ipam,
            request.settings,
        );
        let pools = self.fetch_pools(&query).await?;
        let views: Vec<PoolView> = pools.iter().map(pool_view).collect();
        let node = if views.iter().any(|view| view.node_affinity.is_some()) {
            let node_name = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.node_name.clone())
                .unwrap_or_default();
            self.get_node(&node_name).await?
        } else {
            None
        };
        Ok(Inputs {
            context: pod_context(pod, namespace.as_ref(), node.as_ref(), top_controller),
            pools,
            views,
        })
    }

    /// The filtered, ordered candidates (§5.3, §5.4), resolving auto pools in SpiderSubnet mode.
    /// The auto pools join `inputs`, so allocation uses them without reading them again.
    async fn candidates(
        &self,
        inputs: &mut Inputs,
        request: &AddRequest<'_>,
    ) -> Result<Candidates, StoreError> {
        let auto = match select_candidates(&selection_context(inputs, request))? {
            CandidatePlan::Pools(candidates) => return Ok(candidates),
            CandidatePlan::AutoPool(auto) => auto,
        };
        let (pools, candidates) = self.resolve_auto_pools(&auto, request).await?;
        for pool in pools {
            let view = pool_view(&pool);
            inputs
                .pools
                .retain(|known| known.metadata.name != pool.metadata.name);
            inputs.views.retain(|known| known.name != view.name);
            inputs.pools.push(pool);
            inputs.views.push(view);
        }
        Ok(filter_candidates(
            &selection_context(inputs, request),
            candidates,
        )?)
    }

    /// The auto pool of each family: reconciled by this call for a third-party controller
    /// (`applyThirdControllerAutoPool`), otherwise found among the pools the controller-manager
    /// creates (`findAppAutoPool`).
    async fn resolve_auto_pools(
        &self,
        auto: &AutoPoolRequest,
        request: &AddRequest<'_>,
    ) -> Result<(Vec<SpiderIPPool>, Candidates), StoreError> {
        let families = [
            (IpVersion::V4, auto.ipv4_subnet.as_deref()),
            (IpVersion::V6, auto.ipv6_subnet.as_deref()),
        ];
        let pools = if auto.controller.is_third_party() {
            self.reconcile_third_party_pools(auto, families, request)
                .await?
        } else {
            let mut pools = Vec::new();
            for (version, subnet) in families {
                if let Some(subnet) = subnet {
                    pools.push(
                        self.find_app_auto_pool(auto, subnet, version, request)
                            .await?,
                    );
                }
            }
            pools
        };
        let name_of = |version: IpVersion| {
            pools
                .iter()
                .find(|pool| pool_family(pool) == Some(version))
                .map(pool_name)
        };
        let candidates = auto.candidates(
            name_of(IpVersion::V4).as_deref(),
            name_of(IpVersion::V6).as_deref(),
        );
        Ok((pools, candidates))
    }

    /// Both families at once, as upstream does; the count is absolute (`ippool-ip-number` is
    /// required for third-party controllers).
    async fn reconcile_third_party_pools(
        &self,
        auto: &AutoPoolRequest,
        families: [(IpVersion, Option<&str>); 2],
        request: &AddRequest<'_>,
    ) -> Result<Vec<SpiderIPPool>, StoreError> {
        let desired = auto.desired_ip_number(0)?;
        let attempts =
            u32::try_from(request.settings.wait_subnet_pool_max_retries.max(1)).unwrap_or(u32::MAX);
        let reconcile = |(version, subnet)| async move {
            let Some(subnet) = subnet else {
                return Ok(None);
            };
            let target = AutoPoolTarget {
                subnet,
                app: &auto.controller,
                nic: &auto.nic,
                version,
                desired,
                reclaim: auto.reclaim,
            };
            self.reconcile_auto_pool(&target, attempts, request.deadline)
                .await
                .map(Some)
        };
        let (v4, v6) = tokio::join!(reconcile(families[0]), reconcile(families[1]));
        Ok([v4?, v6?].into_iter().flatten().collect())
    }

    /// `findAppAutoPool` for built-in controllers: waits (bounded by the settings and the
    /// deadline) until the controller-manager has created the auto pool of the family.
    async fn find_app_auto_pool(
        &self,
        auto: &AutoPoolRequest,
        subnet: &str,
        version: IpVersion,
        request: &AddRequest<'_>,
    ) -> Result<SpiderIPPool, StoreError> {
        let controller = &auto.controller;
        let labels = instance_labels(&AutoPoolLabels::new(
            subnet,
            controller,
            &auto.nic,
            version,
            auto.reclaim,
        ));
        let wait = Duration::from_secs(
            u64::try_from(request.settings.wait_subnet_pool_time_in_second.max(0)).unwrap_or(2),
        );
        let mut attempts = request.settings.wait_subnet_pool_max_retries.max(1);
        loop {
            let mut pools = self.pools_with_labels(&labels).await?;
            if pools.len() > 1 {
                return Err(StoreError::AutoPool(format!(
                    "found {} auto-created IPv{} IPPools for {}/{}/{} interface {}, expected one",
                    pools.len(),
                    version.number(),
                    controller.kind,
                    controller.namespace,
                    controller.name,
                    auto.nic
                )));
            }
            if let Some(pool) = pools.pop() {
                return Ok(pool);
            }
            attempts -= 1;
            if attempts <= 0 || Instant::now() + wait >= request.deadline {
                return Err(StoreError::AutoPool(format!(
                    "no matching auto-created IPPool candidate with matchLables '{}'",
                    label_selector(&labels)
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Tries the pools of one candidate in order; the first that yields an address wins. With
    /// `grow_until`, an exhausted pool is read again until then (an auto pool being scaled up).
    async fn allocate_candidate(
        &self,
        inputs: &Inputs,
        owner: &PoolIpAllocation,
        nic: &str,
        candidate: &PoolCandidate,
        grow_until: Option<Instant>,
        request: &AddRequest<'_>,
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
                let (outcome, pool_stats) = writer
                    .apply(pool, op, max, known.take(), request.deadline)
                    .await?;
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
            let view = match inputs.pool(pool) {
                Some(current) => pool_view(current),
                None => pool_view(&self.pools().get(pool).await.map_err(|error| {
                    super::api_error(format!("get SpiderIPPool {pool}"), error)
                })?),
            };
            let (ip, created) = allocated_address(&outcome, view.ip_version).ok_or_else(|| {
                StoreError::Invalid(format!("unexpected outcome {outcome:?} from IPPool {pool}"))
            })?;
            log::debug!("allocated {ip} to NIC {nic} from IPPool {pool}");
            return Ok((
                view,
                Taken {
                    pool: pool.clone(),
                    ip,
                    created,
                },
                stats,
            ));
        }
        Err(SelectionError::CandidateExhausted {
            version: candidate.ip_version,
            nic: nic.to_string(),
            pools: candidate.pools.clone(),
            errors,
        }
        .into())
    }

    /// Releases the records this call created (best effort: failures are logged and left to the
    /// garbage collector).
    async fn roll_back(&self, taken: &[Taken], uid: &str) -> CasStats {
        let mut stats = CasStats::default();
        let deadline = Instant::now() + ROLLBACK_BUDGET;
        let writer = self.pool_writer();
        for held in taken.iter().filter(|held| held.created) {
            let release_of = [IpAndUid::new(held.ip.to_string(), uid)];
            let result = writer
                .apply(
                    &held.pool,
                    release_op(&release_of),
                    i64::MAX,
                    None,
                    deadline,
                )
                .await;
            match result {
                Ok((_, release_stats)) => {
                    stats.add(release_stats);
                    log::info!("rolled back {} of IPPool {}", held.ip, held.pool);
                }
                Err(error) => log::error!(
                    "failed to roll back {} of IPPool {} (left to garbage collection): {error}",
                    held.ip,
                    held.pool
                ),
            }
        }
        stats
    }

    /// `UpdateAllocatedIPs`, made a repair as well: every stored address of the pod must be
    /// recorded for the pod's current UID. A record of the same pod name under an older UID (a
    /// re-created StatefulSet pod) moves to the new UID; a missing record is written again if the
    /// address is free; an address held by another pod is a [`LedgerError::ForeignRecord`].
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

/// §5.2 step 4: whether a StatefulSet pod's stored pools are no longer among its candidates (for
/// the NICs the candidates cover). A NIC without stored entry is not a change (it is allocated).
fn statefulset_pools_changed(
    details: &[IpAllocationDetail],
    candidates: &Candidates,
    current_nic: &str,
) -> bool {
    let unnamed = candidates
        .nics
        .iter()
        .all(|nic| nic.nic.parse::<u32>().is_ok())
        && candidates.source == CandidateSource::PodIpPools;
    for (index, nic) in candidates.nics.iter().enumerate() {
        let stored = if unnamed {
            details.get(index)
        } else {
            let name =
                if candidates.nics.len() == 1 && candidates.source != CandidateSource::PodIpPools {
                    current_nic
                } else {
                    nic.nic.as_str()
                };
            details.iter().find(|detail| detail.interface == name)
        };
        let Some(stored) = stored else { continue };
        for candidate in &nic.candidates {
            let pool = match candidate.ip_version {
                IpVersion::V4 => &stored.ipv4_pool,
                IpVersion::V6 => &stored.ipv6_pool,
            };
            match pool {
                Some(pool) if candidate.pools.contains(pool) => {}
                _ => return true,
            }
        }
        let families: Vec<IpVersion> = nic
            .candidates
            .iter()
            .map(|candidate| candidate.ip_version)
            .collect();
        if (stored.ipv4_pool.is_some() && !families.contains(&IpVersion::V4))
            || (stored.ipv6_pool.is_some() && !families.contains(&IpVersion::V6))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::NicCandidates;

    fn detail(nic: &str, v4_pool: Option<&str>, v6_pool: Option<&str>) -> IpAllocationDetail {
        IpAllocationDetail {
            interface: nic.into(),
            ipv4: v4_pool.map(|_| "10.0.0.10/24".to_string()),
            ipv4_pool: v4_pool.map(str::to_string),
            ipv6: v6_pool.map(|_| "fd00::10/64".to_string()),
            ipv6_pool: v6_pool.map(str::to_string),
            ..IpAllocationDetail::default()
        }
    }

    fn candidates(source: CandidateSource, nics: &[(&str, &[&str], &[&str])]) -> Candidates {
        Candidates {
            source,
            nics: nics
                .iter()
                .map(|(nic, v4, v6)| {
                    let mut list = Vec::new();
                    if !v4.is_empty() {
                        list.push(PoolCandidate {
                            ip_version: IpVersion::V4,
                            pools: v4.iter().map(|p| p.to_string()).collect(),
                        });
                    }
                    if !v6.is_empty() {
                        list.push(PoolCandidate {
                            ip_version: IpVersion::V6,
                            pools: v6.iter().map(|p| p.to_string()).collect(),
                        });
                    }
                    NicCandidates {
                        nic: nic.to_string(),
                        clean_gateway: false,
                        candidates: list,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn statefulset_keeps_addresses_while_their_pools_remain_candidates() {
        let stored = vec![detail("eth0", Some("v4-a"), Some("v6-a"))];
        let same = candidates(
            CandidateSource::PodIpPool,
            &[("eth0", &["v4-b", "v4-a"], &["v6-a"])],
        );
        assert!(!statefulset_pools_changed(&stored, &same, "eth0"));
        let moved = candidates(
            CandidateSource::PodIpPool,
            &[("eth0", &["v4-b"], &["v6-a"])],
        );
        assert!(statefulset_pools_changed(&stored, &moved, "eth0"));
        let v4_only = candidates(CandidateSource::PodIpPool, &[("eth0", &["v4-a"], &[])]);
        assert!(statefulset_pools_changed(&stored, &v4_only, "eth0"));
    }

    #[test]
    fn statefulset_multi_nic_compares_each_named_nic() {
        let stored = vec![
            detail("eth0", Some("a"), None),
            detail("net1", Some("b"), None),
        ];
        let same = candidates(
            CandidateSource::PodIpPools,
            &[("eth0", &["a"], &[]), ("net1", &["b"], &[])],
        );
        assert!(!statefulset_pools_changed(&stored, &same, "eth0"));
        let changed = candidates(
            CandidateSource::PodIpPools,
            &[("eth0", &["a"], &[]), ("net1", &["c"], &[])],
        );
        assert!(statefulset_pools_changed(&stored, &changed, "net1"));
    }
}
