//! The auto pools the CNI plugin reconciles itself: those of third-party controllers' pods (§4.5
//! `applyThirdControllerAutoPool`: nobody else creates them). One request at a time through the
//! shared [`AutoPoolWriter`] (compare-and-swap on the subnet record, then the pool), reading
//! everything from the API server; errors are told as the plugin tells them (naming the pod's
//! workload and interface).

use std::sync::Arc;
use std::time::Instant;

use kube::api::ListParams;
use spiderpool_api::SpiderIPPool;
use spiderpool_ipam::autopool::{AutoPoolLabels, auto_pool_name};
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::pod::AppRef;
use spiderpool_ipam::range::IpSet;

use super::reconcile::{AutoPoolReads, AutoPoolWriter, PoolTarget, ReconcileError, Retry};
use super::{choose, label_selector, lookup_labels};
use crate::objects::{canonical_cidr, pool_family, reserved_set};
use crate::{Store, StoreError, api_error, list_cached};

/// Field manager of the objects the plugin writes.
const FIELD_MANAGER: &str = "spiderpool-ipam";

/// One auto pool of a third-party controller's pods.
#[derive(Debug, Clone)]
pub struct ThirdPartyPool<'a> {
    pub subnet: &'a str,
    pub app: &'a AppRef,
    pub nic: &'a str,
    pub version: IpVersion,
    /// The pool size (`ipam.spidernet.io/ippool-ip-number`, absolute for third-party kinds).
    pub desired: i64,
    pub reclaim: bool,
}

impl ThirdPartyPool<'_> {
    fn target(&self) -> PoolTarget {
        PoolTarget {
            app: self.app.clone(),
            subnet: self.subnet.to_string(),
            nic: self.nic.to_string(),
            version: self.version,
            reclaim: self.reclaim,
            desired: self.desired,
            // For a third-party controller the count is absolute: the annotation says "N".
            annotation: self.desired.to_string(),
            new_name: auto_pool_name(&self.app.name, self.version, self.nic, &self.app.uid),
        }
    }

    fn describe(&self) -> String {
        format!(
            "the IPv{} auto-created IPPool of {}/{}/{} interface {} from SpiderSubnet {}",
            self.version.number(),
            self.app.kind,
            self.app.namespace,
            self.app.name,
            self.nic,
            self.subnet
        )
    }

    /// A reconcile error as the plugin reports it.
    fn store_error(&self, error: ReconcileError) -> StoreError {
        let app = self.app;
        let auto_pool = |message: String| StoreError::AutoPool(message);
        match error {
            ReconcileError::SubnetNotFound { subnet } => auto_pool(format!(
                "SpiderSubnet {subnet} of {} does not exist",
                self.describe()
            )),
            ReconcileError::SubnetTerminating { subnet } => auto_pool(format!(
                "SpiderSubnet '{subnet}' is terminating, we can't reconcile the auto-created IPPool of {}/{}/{}",
                app.kind, app.namespace, app.name
            )),
            ReconcileError::InvalidSubnet { subnet, cidr } => StoreError::Invalid(format!(
                "SpiderSubnet {subnet} has an invalid spec (subnet {cidr:?})"
            )),
            ReconcileError::SubnetFamily {
                subnet,
                actual,
                expected,
            } => auto_pool(format!(
                "SpiderSubnet {subnet} is an IPv{} subnet, but it is named for IPv{} in the pod's subnet annotation",
                actual.number(),
                expected.number()
            )),
            ReconcileError::SubnetChanged {
                pool,
                subnet,
                subnet_cidr,
                pool_cidr,
            } => auto_pool(format!(
                "the subnet of {}/{}/{} changed to SpiderSubnet {subnet} ({subnet_cidr}), but its IPPool {pool} is of subnet {pool_cidr}: changing the subnet of an existing application is not supported",
                app.kind, app.namespace, app.name
            )),
            ReconcileError::Plan(error) => auto_pool(format!("{}: {error}", self.describe())),
            ReconcileError::Ledger(error) => StoreError::Ledger(error),
            ReconcileError::SubnetRead { subnet, source } => {
                api_error(format!("get SpiderSubnet {subnet}"), &*source)
            }
            ReconcileError::SubnetWrite { subnet, source } => api_error(
                format!("update the status of SpiderSubnet {subnet}"),
                &*source,
            ),
            ReconcileError::Kube { what, source } => api_error(what, &*source),
            ReconcileError::ConflictsExhausted { attempts, .. } => auto_pool(format!(
                "exhaust all retries ({attempts} times) to reconcile {}: the SpiderSubnet or the IPPool kept changing",
                self.describe()
            )),
            ReconcileError::Deadline { .. } => StoreError::Deadline {
                what: self.describe(),
            },
        }
    }
}

/// Everything from the API server (the plugin has no caches).
struct ApiReads<'a> {
    store: &'a Store,
}

impl AutoPoolReads for ApiReads<'_> {
    async fn current_pool(
        &self,
        target: &PoolTarget,
        labels: &AutoPoolLabels,
    ) -> Result<Option<SpiderIPPool>, ReconcileError> {
        let selector = label_selector(&lookup_labels(labels));
        let pools = self
            .store
            .pools()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| {
                ReconcileError::kube(format!("list SpiderIPPools with labels {selector}"), source)
            })?
            .items;
        Ok(choose(pools.iter(), &target.app.uid).cloned())
    }

    async fn pools_in_cidr(
        &self,
        version: IpVersion,
        cidr: &str,
    ) -> Result<Vec<Arc<SpiderIPPool>>, ReconcileError> {
        let what = "list SpiderIPPools";
        let pools = list_cached(&self.store.pools(), &ListParams::default(), what)
            .await
            .map_err(|source| ReconcileError::kube(what, source))?;
        Ok(pools
            .into_iter()
            .filter(|pool| {
                pool_family(pool) == Some(version)
                    && canonical_cidr(&pool.spec.subnet).as_deref() == Some(cidr)
            })
            .map(Arc::new)
            .collect())
    }

    async fn reserved(&self, version: IpVersion) -> Result<IpSet, ReconcileError> {
        let reservations = self
            .store
            .pool_writer()
            .reserved_list()
            .await
            .map_err(|source| ReconcileError::kube("list SpiderReservedIPs", source))?;
        Ok(reserved_set(&reservations, version))
    }

    async fn subnet_changed(&self, pool: &SpiderIPPool, note: String) {
        log::warn!(
            "IPPool {}: {note}",
            pool.metadata.name.as_deref().unwrap_or_default()
        );
    }
}

impl Store {
    /// `applyThirdControllerAutoPool`: makes the pool of `target` exist with `desired`
    /// addresses and returns it. Conflicts with other writers (another node's plugin, the
    /// controller-manager) are re-planned up to `attempts` times, within `deadline`.
    pub async fn reconcile_auto_pool(
        &self,
        target: &ThirdPartyPool<'_>,
        attempts: u32,
        deadline: Instant,
    ) -> Result<SpiderIPPool, StoreError> {
        let reads = ApiReads { store: self };
        let writer = AutoPoolWriter::new(self.client.clone(), &reads, FIELD_MANAGER);
        let retry = Retry {
            attempts,
            pause_millis: 10..=50,
            deadline: Some(deadline),
            create_now: true,
        };
        let outcome = writer
            .reconcile(target.subnet, vec![target.target()], &retry)
            .await;
        match outcome.finished.into_iter().next() {
            Some((_, Ok(reconciled))) => Ok(reconciled.pool),
            Some((_, Err(error))) => Err(target.store_error(error)),
            None => Err(StoreError::Invalid(format!(
                "no outcome reconciling {}",
                target.describe()
            ))),
        }
    }
}
