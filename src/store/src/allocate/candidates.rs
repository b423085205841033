//! What an ADD reads for selection (§5.3, §5.4): the pod's namespace, the pools the deciding
//! source names (or all of them), the node when a pool has a node affinity, and in SpiderSubnet
//! mode the auto pools: reconciled by this call for a third-party controller's pod (through the
//! shared auto-pool reconcile, compare-and-swap), otherwise waited for until the
//! controller-manager has created them.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use spiderpool_api::SpiderIPPool;
use spiderpool_ipam::autopool::AutoPoolLabels;
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::pod::{AppRef, PodContext};
use spiderpool_ipam::pool::PoolView;
use spiderpool_ipam::selection::{
    AutoPoolRequest, CandidatePlan, Candidates, SelectionContext, filter_candidates,
    select_candidates,
};

use super::AddRequest;
use crate::autopool::{ThirdPartyPool, instance_labels, label_selector};
use crate::context::{pod_context, pool_query};
use crate::objects::{pool_family, pool_name, pool_view};
use crate::{Store, StoreError};

/// Everything selection reads.
pub(super) struct Inputs {
    pub context: PodContext,
    pub pools: Vec<SpiderIPPool>,
    pub views: Vec<PoolView>,
}

impl Inputs {
    pub fn pool(&self, name: &str) -> Option<&SpiderIPPool> {
        self.pools
            .iter()
            .find(|pool| pool.metadata.name.as_deref() == Some(name))
    }
}

/// The inputs of selection and the candidates selected from them.
pub(super) struct Selected {
    pub inputs: Inputs,
    pub candidates: Candidates,
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
    /// Reads what selection needs and selects the candidates.
    pub(super) async fn select(
        &self,
        pod: &Pod,
        top_controller: AppRef,
        request: &AddRequest<'_>,
    ) -> Result<Selected, StoreError> {
        let mut inputs = self.gather(pod, top_controller, request).await?;
        let candidates = self.candidates(&mut inputs, request).await?;
        Ok(Selected { inputs, candidates })
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
            let target = ThirdPartyPool {
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
}
