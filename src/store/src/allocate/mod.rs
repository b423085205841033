//! CNI ADD (§5.2), as a pure planner and an executor: read the pod and its SpiderEndpoint, let
//! [`plan::plan_add`] decide (reuse what the endpoint holds, let a re-created StatefulSet pod take
//! over its predecessor's addresses, replace an earlier pod's endpoint, or allocate), and carry
//! the plan out ([`execute`]): select candidate pools ([`candidates`]), allocate every NIC with
//! compare-and-swap on the pool ledgers, record the result in the pod's SpiderEndpoint, and on
//! failure give back exactly what the call took (its rollback log).
//!
//! All NICs are allocated before the endpoint is written; a failed ADD leaves nothing behind, and
//! a retried ADD starts from a clean ledger.

mod candidates;
mod execute;
mod plan;
#[cfg(test)]
mod tests;

use std::time::Instant;

use spiderpool_ipam::config::IpamConfig;
use spiderpool_ipam::pod::is_pod_alive;
use spiderpool_ipam::result::IpConfig;
use spiderpool_ipam::routes::NicRoute;
use spiderpool_ipam::selection::CandidateSource;
use spiderpool_ipam::settings::ClusterSettings;

use self::execute::AddPod;
pub use self::execute::ROLLBACK_BUDGET;
use self::plan::{AddFacts, AddPlan, StoredEndpoint, needs_candidates, plan_add};
use crate::cas::CasStats;
use crate::objects::pod_liveness;
use crate::{Store, StoreError};

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
        let top_controller = self.top_controller(&pod).await?;
        let add = AddPod {
            pod: &pod,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            statefulset: request.settings.enable_stateful_set && top_controller.is_statefulset(),
            top_controller,
        };
        let mut endpoint = self.get_endpoint(namespace, name).await?;
        let stored = endpoint.as_ref().map(StoredEndpoint::of);
        let mut selected = None;
        if needs_candidates(add.statefulset, stored.as_ref()) {
            selected = Some(
                self.select(&pod, add.top_controller.clone(), request)
                    .await?,
            );
        }
        let plan = plan_add(&AddFacts {
            pod_uid: &add.uid,
            nic: request.nic,
            endpoint: stored.as_ref(),
            statefulset: add.statefulset,
            candidates: selected.as_ref().map(|selected| &selected.candidates),
        });
        log::debug!("{plan:?} after {:?}", started.elapsed());

        let mut stats = CasStats::default();
        match (plan, endpoint.as_ref(), stored) {
            (AddPlan::Reuse, Some(existing), Some(stored)) => {
                if let Some(outcome) = self
                    .reuse(&add, existing, stored, request, &mut stats)
                    .await?
                {
                    return Ok(outcome);
                }
                endpoint = None;
            }
            (AddPlan::TakeOver { .. }, Some(existing), Some(stored)) => {
                let node = pod
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.node_name.clone())
                    .unwrap_or_default();
                match self
                    .take_over(&add, stored.clone(), &node, request, &mut stats)
                    .await
                {
                    Ok(Some(outcome)) => return Ok(outcome),
                    // This NIC was never allocated: allocate it and append it.
                    Ok(None) => endpoint = self.get_endpoint(namespace, name).await?,
                    // An address the predecessor held cannot be kept (another pod holds it, or
                    // it left the pool or was reserved): what this pod name still holds goes,
                    // under either UID, and the pod is allocated afresh.
                    Err(StoreError::Ledger(error)) => {
                        log::warn!(
                            "StatefulSet pod {namespace}/{name} cannot keep its addresses ({error}): allocating afresh"
                        );
                        for uid in [stored.uid.as_str(), add.uid.as_str()] {
                            stats.add(
                                self.release_details(&stored.details, uid, request.deadline)
                                    .await?,
                            );
                        }
                        self.retire_endpoint(existing, true).await?;
                        endpoint = None;
                    }
                    Err(error) => return Err(error),
                }
            }
            (AddPlan::Replace { release }, Some(existing), Some(stored)) => {
                self.replace(&add, existing, &stored, release, request, &mut stats)
                    .await?;
                endpoint = None;
            }
            _ => {}
        }
        let selected = match selected {
            Some(selected) => selected,
            None => {
                self.select(&pod, add.top_controller.clone(), request)
                    .await?
            }
        };
        log::debug!(
            "candidates {:?} selected after {:?}",
            selected.candidates.pool_names(),
            started.elapsed()
        );
        self.allocate_nics(&add, selected, endpoint.as_ref(), request, stats)
            .await
    }
}
