//! Read-only views for tools that explain what the plugin does (`kubectl-spiderpool`): the pod as
//! selection sees it, read with the same GETs and the same top-controller walk as an ADD, and
//! every pool, subnet, reservation and endpoint. Nothing here writes.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use spiderpool_api::{SpiderEndpoint, SpiderIPPool, SpiderReservedIP, SpiderSubnet};
use spiderpool_ipam::pod::PodContext;

use crate::context::pod_context;
use crate::{Store, StoreError, api_error};

/// A pod with what an ADD would know about it.
#[derive(Debug, Clone)]
pub struct PodInspection {
    pub pod: Pod,
    /// Namespace, node and top controller as selection sees them.
    pub context: PodContext,
    /// Its SpiderEndpoint, if any.
    pub endpoint: Option<SpiderEndpoint>,
}

impl Store {
    /// The pod `namespace/name` as an ADD reads it; `None` when there is no such pod.
    pub async fn inspect_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PodInspection>, StoreError> {
        let Some(pod) = self.get_pod(namespace, name).await? else {
            return Ok(None);
        };
        let namespace_object = self.get_namespace(namespace).await?;
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_default();
        let node = self.get_node(&node_name).await?;
        let top_controller = self.top_controller(&pod).await?;
        let context = pod_context(
            &pod,
            namespace_object.as_ref(),
            node.as_ref(),
            top_controller,
        );
        let endpoint = self.get_endpoint(namespace, name).await?;
        Ok(Some(PodInspection {
            pod,
            context,
            endpoint,
        }))
    }

    /// Every SpiderIPPool.
    pub async fn list_pools(&self) -> Result<Vec<SpiderIPPool>, StoreError> {
        list(&self.pools(), "list SpiderIPPools").await
    }

    /// Every SpiderSubnet.
    pub async fn list_subnets(&self) -> Result<Vec<SpiderSubnet>, StoreError> {
        list(&Api::all(self.client.clone()), "list SpiderSubnets").await
    }

    /// Every SpiderReservedIP.
    pub async fn list_reserved(&self) -> Result<Vec<SpiderReservedIP>, StoreError> {
        list(&Api::all(self.client.clone()), "list SpiderReservedIPs").await
    }

    /// Every SpiderEndpoint of every namespace.
    pub async fn list_endpoints(&self) -> Result<Vec<SpiderEndpoint>, StoreError> {
        list(&Api::all(self.client.clone()), "list SpiderEndpoints").await
    }

    /// Every pod of every namespace.
    pub async fn list_pods(&self) -> Result<Vec<Pod>, StoreError> {
        list(&Api::all(self.client.clone()), "list pods").await
    }
}

async fn list<K>(api: &Api<K>, what: &str) -> Result<Vec<K>, StoreError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|list| list.items)
        .map_err(|error| api_error(what, error))
}
