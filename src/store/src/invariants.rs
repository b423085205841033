//! Gathering the snapshot the invariant checker ([`spiderpool_ipam::invariants`]) reads: LISTs of
//! SpiderIPPools, SpiderSubnets, SpiderEndpoints, Pods, StatefulSets and the six built-in workload
//! kinds, turned into the checker's plain views. Read-only.
//!
//! **Stable API** (used by `kubectl spiderpool check` and every e2e suite):
//! `gather(&client, &Scope) -> Result<Snapshot, GatherError>`, then
//! `spiderpool_ipam::invariants::check(&snapshot)`. With `Scope::namespace` the namespaced
//! objects are listed in that namespace only (pools and subnets are cluster-scoped and always
//! listed whole) and the checker keeps to what touches it.
//!
//! The LISTs are not one atomic read: they run pods and workloads first, then endpoints, then
//! pools, then subnets, the order in which the ADD path creates them, so that an operation in
//! flight shows up as a missing later object rather than a phantom earlier one. A caller that
//! checks a cluster still in motion retries until the answer is stable (the e2e wrapper does);
//! a settled cluster reads consistently.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use spiderpool_api::constants::{
    LABEL_INTERFACE, LABEL_IP_VERSION, LABEL_IPPOOL_RECLAIM, LABEL_OWNER_APPLICATION_KIND,
    LABEL_OWNER_APPLICATION_NAME, LABEL_OWNER_APPLICATION_NAMESPACE, LABEL_OWNER_APPLICATION_UID,
    LABEL_OWNER_SPIDER_SUBNET,
};
use spiderpool_api::{SpiderEndpoint, SpiderIPPool, SpiderSubnet};
use spiderpool_ipam::ClusterSettings;
use spiderpool_ipam::autopool::WorkloadView;
use spiderpool_ipam::invariants::{
    AutoPoolOwner, EndpointAddress, EndpointState, PodState, PoolState, Snapshot, StatefulSetState,
    SubnetState,
};
use spiderpool_ipam::ip::IpVersion;
use thiserror::Error;

use crate::workload::{Workload, view};

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only this namespace (see [`spiderpool_ipam::invariants`]); `None` = the whole cluster.
    pub namespace: Option<String>,
    /// The cluster settings the controllers run with (StatefulSet support, the SpiderSubnet
    /// gates, the flexible IP number of auto pools).
    pub settings: ClusterSettings,
}

/// Errors of [`gather`].
#[derive(Debug, Error)]
pub enum GatherError {
    #[error("failed to list {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl GatherError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            GatherError::List { .. } => "list_failed",
        }
    }
}

fn api<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match &scope.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

async fn list<K>(api: Api<K>, what: &'static str) -> Result<Vec<K>, GatherError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|list| list.items)
        .map_err(|source| GatherError::List { what, source })
}

async fn workloads<K: Workload>(
    client: &Client,
    scope: &Scope,
    what: &'static str,
) -> Result<Vec<WorkloadView>, GatherError> {
    Ok(list(api::<K>(client, scope), what)
        .await?
        .iter()
        .filter(|workload| !workload.served_by_parent())
        .map(view)
        .collect())
}

/// Reads everything the checker needs.
pub async fn gather(client: &Client, scope: &Scope) -> Result<Snapshot, GatherError> {
    let pods = list(api::<Pod>(client, scope), "pods").await?;
    let statefulsets = list(api::<StatefulSet>(client, scope), "statefulsets").await?;
    let mut workload_views = workloads::<Deployment>(client, scope, "deployments").await?;
    workload_views.extend(workloads::<ReplicaSet>(client, scope, "replicasets").await?);
    workload_views.extend(statefulsets.iter().map(view));
    workload_views.extend(workloads::<DaemonSet>(client, scope, "daemonsets").await?);
    workload_views.extend(workloads::<Job>(client, scope, "jobs").await?);
    workload_views.extend(workloads::<CronJob>(client, scope, "cronjobs").await?);
    let endpoints = list(api::<SpiderEndpoint>(client, scope), "spiderendpoints").await?;
    let pools = list(Api::<SpiderIPPool>::all(client.clone()), "spiderippools").await?;
    let subnets = list(Api::<SpiderSubnet>::all(client.clone()), "spidersubnets").await?;
    Ok(Snapshot {
        namespace: scope.namespace.clone(),
        settings: scope.settings.clone(),
        pools: pools.iter().map(pool_state).collect(),
        subnets: subnets.iter().map(subnet_state).collect(),
        endpoints: endpoints.iter().map(endpoint_state).collect(),
        pods: pods
            .iter()
            .map(|pod| PodState {
                namespace: pod.namespace().unwrap_or_default(),
                name: pod.name_any(),
                uid: pod.uid().unwrap_or_default(),
            })
            .collect(),
        statefulsets: statefulsets
            .iter()
            .map(|set| StatefulSetState {
                namespace: set.namespace().unwrap_or_default(),
                name: set.name_any(),
                replicas: set.replicas(),
                ordinals_start: set
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.ordinals.as_ref())
                    .and_then(|ordinals| ordinals.start)
                    .map(i64::from),
            })
            .collect(),
        workloads: workload_views,
    })
}

fn label(object: &impl Resource, key: &str) -> String {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|labels| labels.get(key))
        .cloned()
        .unwrap_or_default()
}

/// The view of a pool.
pub fn pool_state(pool: &SpiderIPPool) -> PoolState {
    let status = pool.status.as_ref();
    let owner_subnet = Some(label(pool, LABEL_OWNER_SPIDER_SUBNET)).filter(|name| !name.is_empty());
    let application = label(pool, LABEL_OWNER_APPLICATION_NAME);
    PoolState {
        name: pool.name_any(),
        ip_version: pool.spec.ip_version.and_then(IpVersion::from_number),
        subnet: pool.spec.subnet.clone(),
        ips: pool.spec.ips.clone().unwrap_or_default(),
        exclude_ips: pool.spec.exclude_ips.clone().unwrap_or_default(),
        allocated_ips: status.and_then(|status| status.allocated_ips.clone()),
        allocated_ip_count: status.and_then(|status| status.allocated_ip_count),
        owner_subnet,
        auto: (!application.is_empty()).then(|| AutoPoolOwner {
            kind: label(pool, LABEL_OWNER_APPLICATION_KIND),
            namespace: label(pool, LABEL_OWNER_APPLICATION_NAMESPACE),
            name: application,
            uid: label(pool, LABEL_OWNER_APPLICATION_UID),
            interface: label(pool, LABEL_INTERFACE),
            ip_version: label(pool, LABEL_IP_VERSION),
            reclaim: label(pool, LABEL_IPPOOL_RECLAIM) == "true",
        }),
    }
}

/// The view of a subnet.
pub fn subnet_state(subnet: &SpiderSubnet) -> SubnetState {
    let status = subnet.status.as_ref();
    SubnetState {
        name: subnet.name_any(),
        subnet: subnet.spec.subnet.clone(),
        ips: subnet.spec.ips.clone().unwrap_or_default(),
        exclude_ips: subnet.spec.exclude_ips.clone().unwrap_or_default(),
        controlled_ip_pools: status.and_then(|status| status.controlled_ip_pools.clone()),
        allocated_ip_count: status.and_then(|status| status.allocated_ip_count),
        total_ip_count: status.and_then(|status| status.total_ip_count),
    }
}

/// The view of an endpoint: one address per family of each entry.
pub fn endpoint_state(endpoint: &SpiderEndpoint) -> EndpointState {
    let current = endpoint.status.as_ref().map(|status| &status.current);
    let mut addresses = Vec::new();
    for detail in current
        .map(|current| current.ips.as_slice())
        .unwrap_or_default()
    {
        for (ip, pool) in [
            (&detail.ipv4, &detail.ipv4_pool),
            (&detail.ipv6, &detail.ipv6_pool),
        ] {
            if let Some(ip) = ip.as_ref().filter(|ip| !ip.is_empty()) {
                addresses.push(EndpointAddress {
                    interface: detail.nic.clone(),
                    pool: pool.clone().unwrap_or_default(),
                    ip: ip.clone(),
                });
            }
        }
    }
    EndpointState {
        namespace: endpoint.namespace().unwrap_or_default(),
        name: endpoint.name_any(),
        uid: current
            .map(|current| current.uid.clone())
            .unwrap_or_default(),
        addresses,
        terminating: endpoint.metadata.deletion_timestamp.is_some(),
    }
}
