//! CNI DEL (§5.8): release every address of the pod (all NICs) unless the pod is still alive (a
//! restarting sandbox keeps its addresses) or is a StatefulSet member whose addresses must survive
//! its re-creation.
//!
//! The UID to release comes from the pod when it still exists and `K8S_POD_UID` (if given)
//! matches it, otherwise from `K8S_POD_UID`: the DEL of an earlier pod with the same name (whose
//! endpoint a newer pod has already replaced) then still finds and frees that pod's records, by
//! scanning the pools for records of `namespace/name` with that UID. A DEL repeated after success
//! finds nothing and succeeds.

use std::collections::BTreeMap;
use std::time::Instant;

use kube::api::ListParams;

use super::cas::CasStats;
use super::combine::release_op;
use super::objects::{detail_from_api, pod_liveness};
use super::{Store, StoreError, api_error};
use spiderpool_ipam::ledger::{IpAndUid, PoolIpAllocations};
use spiderpool_ipam::pod::is_pod_alive;
use spiderpool_ipam::result::{IpAllocationDetail, addresses_by_pool, has_allocation_for};
use spiderpool_ipam::settings::ClusterSettings;

/// One CNI DEL.
#[derive(Debug, Clone, Copy)]
pub struct DelRequest<'a> {
    pub namespace: &'a str,
    pub pod_name: &'a str,
    /// `K8S_POD_UID` from `CNI_ARGS`, if the runtime passed it.
    pub pod_uid: Option<&'a str>,
    /// `CNI_IFNAME`.
    pub nic: &'a str,
    pub settings: &'a ClusterSettings,
    pub deadline: Instant,
}

/// What a DEL did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelOutcome {
    /// The pod is alive: its addresses stay for the next sandbox.
    KeptAlivePod,
    /// A StatefulSet member keeps its addresses for its re-creation.
    KeptStatefulSet,
    /// No UID is known (pod gone, no `K8S_POD_UID`): left to garbage collection.
    UnknownUid,
    /// These `pool -> addresses` were released (possibly none: nothing was held).
    Released {
        released: BTreeMap<String, Vec<String>>,
        stats: CasStats,
    },
}

impl Store {
    /// CNI DEL for the pod (every NIC is released, whichever `CNI_IFNAME` is deleted first).
    pub async fn release(&self, request: &DelRequest<'_>) -> Result<DelOutcome, StoreError> {
        self.release_of(request)
            .await
            .map_err(StoreError::in_release)
    }

    async fn release_of(&self, request: &DelRequest<'_>) -> Result<DelOutcome, StoreError> {
        let (namespace, name) = (request.namespace, request.pod_name);
        let requested_uid = request.pod_uid.filter(|uid| !uid.is_empty());
        let pod = self.get_pod(namespace, name).await?;
        let same_instance = pod
            .as_ref()
            .filter(|pod| requested_uid.is_none_or(|uid| pod.metadata.uid.as_deref() == Some(uid)));
        if let Some(pod) = same_instance
            && is_pod_alive(Some(&pod_liveness(pod)))
        {
            return Ok(DelOutcome::KeptAlivePod);
        }
        let pod_gone = same_instance.is_none();
        let known_uid = same_instance
            .and_then(|pod| pod.metadata.uid.clone())
            .or_else(|| requested_uid.map(str::to_string));

        let mut stats = CasStats::default();
        let mut released: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let endpoint = self.get_endpoint(namespace, name).await?;
        // Without `K8S_POD_UID` and without the pod, the endpoint's pod is the one being deleted:
        // no pod of that name exists any more.
        let uid = match known_uid {
            Some(uid) => uid,
            None => match (&pod, &endpoint) {
                (None, Some(endpoint)) => endpoint
                    .status
                    .as_ref()
                    .map(|status| status.current.uid.clone())
                    .unwrap_or_default(),
                _ => return Ok(DelOutcome::UnknownUid),
            },
        };
        if let Some(endpoint) = endpoint {
            let status = endpoint.status.clone().unwrap_or_default();
            let details: Vec<IpAllocationDetail> =
                status.current.ips.iter().map(detail_from_api).collect();
            if request.settings.enable_stateful_set && status.owner_controller_type == "StatefulSet"
            {
                if self.is_valid_statefulset_pod(namespace, name).await? {
                    return Ok(DelOutcome::KeptStatefulSet);
                }
                // Scaled down or deleted: everything goes, whatever UID last held it.
                stats.add(
                    self.release_details(&details, &status.current.uid, request.deadline)
                        .await?,
                );
                collect(&mut released, &details, &status.current.uid);
                self.retire_endpoint(&endpoint, true).await?;
                return Ok(DelOutcome::Released { released, stats });
            }
            if status.current.uid == uid && has_allocation_for(&details, request.nic) {
                stats.add(
                    self.release_details(&details, &uid, request.deadline)
                        .await?,
                );
                collect(&mut released, &details, &uid);
                // With the pod gone nothing else would delete the endpoint if garbage collection
                // already ran; with the pod present the owner reference takes it with the pod.
                self.retire_endpoint(&endpoint, pod_gone).await?;
                return Ok(DelOutcome::Released { released, stats });
            }
        }
        // No endpoint of this UID: free any record still held by it.
        let (scanned, scan_stats) = self
            .release_records_of(namespace, name, &uid, request.deadline)
            .await?;
        stats.add(scan_stats);
        for (pool, addresses) in scanned {
            released.entry(pool).or_default().extend(addresses);
        }
        Ok(DelOutcome::Released { released, stats })
    }

    /// Releases the endpoint entries' addresses held by `uid`, pool by pool.
    pub(crate) async fn release_details(
        &self,
        details: &[IpAllocationDetail],
        uid: &str,
        deadline: Instant,
    ) -> Result<CasStats, StoreError> {
        let writer = self.pool_writer();
        let mut stats = CasStats::default();
        for (pool, addresses) in addresses_by_pool(details, uid) {
            if pool.is_empty() {
                continue;
            }
            match self
                .release_in_pool(&writer, &pool, &addresses, deadline)
                .await
            {
                Ok(pool_stats) => stats.add(pool_stats),
                // A deleted pool holds nothing any more.
                Err(StoreError::PoolGone { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(stats)
    }

    async fn release_in_pool(
        &self,
        writer: &super::PoolWriter,
        pool: &str,
        addresses: &[IpAndUid],
        deadline: Instant,
    ) -> Result<CasStats, StoreError> {
        let (_, stats) = writer
            .apply(pool, release_op(addresses), i64::MAX, None, deadline)
            .await?;
        Ok(stats)
    }

    /// Scans every pool for records of `namespace/name` held by `uid` and releases them.
    async fn release_records_of(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        deadline: Instant,
    ) -> Result<(BTreeMap<String, Vec<String>>, CasStats), StoreError> {
        let holder = format!("{namespace}/{name}");
        let pools = self
            .pools()
            .list(&ListParams::default())
            .await
            .map_err(|error| api_error("list SpiderIPPools", error))?
            .items;
        let writer = self.pool_writer();
        let mut stats = CasStats::default();
        let mut released = BTreeMap::new();
        for pool in pools {
            let pool_name = pool.metadata.name.clone().unwrap_or_default();
            let records = match PoolIpAllocations::parse(
                &pool_name,
                pool.status
                    .as_ref()
                    .and_then(|status| status.allocated_ips.as_deref()),
            ) {
                Ok(records) => records,
                Err(error) => {
                    log::warn!("skipping IPPool {pool_name}: {error}");
                    continue;
                }
            };
            let held: Vec<IpAndUid> = records
                .iter()
                .filter(|(_, record)| record.pod == holder && record.pod_uid == uid)
                .map(|(ip, _)| IpAndUid::new(ip.clone(), uid))
                .collect();
            if held.is_empty() {
                continue;
            }
            match self
                .release_in_pool(&writer, &pool_name, &held, deadline)
                .await
            {
                Ok(pool_stats) => stats.add(pool_stats),
                Err(StoreError::PoolGone { .. }) => continue,
                Err(error) => return Err(error),
            }
            released.insert(
                pool_name,
                held.into_iter().map(|address| address.ip).collect(),
            );
        }
        Ok((released, stats))
    }
}

fn collect(
    released: &mut BTreeMap<String, Vec<String>>,
    details: &[IpAllocationDetail],
    uid: &str,
) {
    for (pool, addresses) in addresses_by_pool(details, uid) {
        released
            .entry(pool)
            .or_default()
            .extend(addresses.into_iter().map(|address| address.ip));
    }
}
