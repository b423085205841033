//! Reading what selection needs: the pod, its namespace and node, its top controller, the
//! candidate pools and the reserved addresses.
//!
//! Pools are fetched by name (one GET each) when the deciding source names them; a LIST is only
//! used for wildcards, cluster default pools and auto-pool lookups. The node is only read when a
//! fetched pool has a `nodeAffinity`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{GetParams, ListParams};
use spiderpool_api::SpiderIPPool;

use super::{Store, StoreError, api_error};
use spiderpool_ipam::annotations::{
    self, ANNO_POD_IPPOOL, ANNO_POD_IPPOOLS, has_subnet_annotation, parse_namespace_default_pools,
};
use spiderpool_ipam::config::IpamConfig;
use spiderpool_ipam::glob::has_wildcard;
use spiderpool_ipam::pod::{
    AppRef, PodContext, is_valid_statefulset_ordinal, statefulset_name_and_ordinal,
};
use spiderpool_ipam::settings::ClusterSettings;

/// How long a node's copy of a pool's spec serves selection (upstream's agent selects from an
/// informer cache; a spec change reaches this node's selections within this time).
const POOL_SPEC_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(3);

/// Which pools the deciding source needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PoolQuery {
    /// Every pool (wildcards, cluster defaults).
    All,
    /// These names (possibly none, e.g. when the annotation does not parse: selection then reports
    /// the parse error).
    Named(Vec<String>),
}

/// The pool names the first applicable source of §5.3 would use, without deciding anything else.
pub(crate) fn pool_query(
    annotations: &BTreeMap<String, String>,
    namespace_annotations: &BTreeMap<String, String>,
    ipam: &IpamConfig,
    settings: &ClusterSettings,
) -> PoolQuery {
    let named = |names: Vec<String>| {
        if names.iter().any(|name| has_wildcard(name)) {
            PoolQuery::All
        } else {
            PoolQuery::Named(names)
        }
    };
    if settings.enable_spider_subnet && has_subnet_annotation(annotations) {
        // Auto pools are looked up by label separately.
        return PoolQuery::Named(Vec::new());
    }
    if let Some(value) = annotations.get(ANNO_POD_IPPOOLS) {
        let Ok(items) = annotations::parse_pod_ippools(value) else {
            return PoolQuery::Named(Vec::new());
        };
        return named(
            items
                .into_iter()
                .flat_map(|item| item.ipv4.into_iter().chain(item.ipv6))
                .collect(),
        );
    }
    if let Some(value) = annotations.get(ANNO_POD_IPPOOL) {
        let Ok(pools) = annotations::parse_pod_ippool(value) else {
            return PoolQuery::Named(Vec::new());
        };
        return named(pools.ipv4.into_iter().chain(pools.ipv6).collect());
    }
    match parse_namespace_default_pools(namespace_annotations) {
        Err(_) => return PoolQuery::Named(Vec::new()),
        Ok((ipv4, ipv6)) if !ipv4.is_empty() || !ipv6.is_empty() => {
            return named(ipv4.into_iter().chain(ipv6).collect());
        }
        Ok(_) => {}
    }
    if !ipam.default_ipv4_ippool.is_empty() || !ipam.default_ipv6_ippool.is_empty() {
        return named(
            ipam.default_ipv4_ippool
                .iter()
                .chain(&ipam.default_ipv6_ippool)
                .cloned()
                .collect(),
        );
    }
    PoolQuery::All
}

const BUILT_IN_API_VERSIONS: [&str; 3] = ["v1", "apps/v1", "batch/v1"];

fn app_ref(owner: &OwnerReference, namespace: &str) -> AppRef {
    AppRef::from_api_version(
        &owner.api_version,
        owner.kind.clone(),
        namespace,
        owner.name.clone(),
        owner.uid.clone(),
    )
}

fn controller_of(references: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    references?
        .iter()
        .find(|reference| reference.controller == Some(true))
}

impl Store {
    pub(crate) async fn get_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Pod>, StoreError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        pods.get_opt(name)
            .await
            .map_err(|error| api_error(format!("get pod {namespace}/{name}"), error))
    }

    pub(crate) async fn get_namespace(&self, name: &str) -> Result<Option<Namespace>, StoreError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .get_opt(name)
            .await
            .map_err(|error| api_error(format!("get namespace {name}"), error))
    }

    pub(crate) async fn get_node(&self, name: &str) -> Result<Option<Node>, StoreError> {
        if name.is_empty() {
            return Ok(None);
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .get_opt(name)
            .await
            .map_err(|error| api_error(format!("get node {name}"), error))
    }

    /// `GetPodTopController`: no controller => the pod itself; third-party owners as they are;
    /// ReplicaSet => its Deployment, Job => its CronJob (when they have one).
    pub(crate) async fn top_controller(&self, pod: &Pod) -> Result<AppRef, StoreError> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let Some(owner) = controller_of(pod.metadata.owner_references.as_ref()) else {
            return Ok(AppRef::from_api_version(
                "v1",
                "Pod",
                namespace,
                pod.metadata.name.clone().unwrap_or_default(),
                pod.metadata.uid.clone().unwrap_or_default(),
            ));
        };
        if !BUILT_IN_API_VERSIONS.contains(&owner.api_version.as_str()) {
            return Ok(app_ref(owner, &namespace));
        }
        match (owner.api_version.as_str(), owner.kind.as_str()) {
            ("apps/v1", "ReplicaSet") => {
                let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &namespace);
                let replica_set = api.get_opt(&owner.name).await.map_err(|error| {
                    api_error(format!("get ReplicaSet {namespace}/{}", owner.name), error)
                })?;
                let parent = replica_set
                    .as_ref()
                    .and_then(|rs| controller_of(rs.metadata.owner_references.as_ref()))
                    .filter(|parent| {
                        parent.api_version == "apps/v1" && parent.kind == "Deployment"
                    });
                Ok(app_ref(parent.unwrap_or(owner), &namespace))
            }
            ("batch/v1", "Job") => {
                let api: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
                let job = api.get_opt(&owner.name).await.map_err(|error| {
                    api_error(format!("get Job {namespace}/{}", owner.name), error)
                })?;
                let parent = job
                    .as_ref()
                    .and_then(|job| controller_of(job.metadata.owner_references.as_ref()))
                    .filter(|parent| parent.api_version == "batch/v1" && parent.kind == "CronJob");
                Ok(app_ref(parent.unwrap_or(owner), &namespace))
            }
            _ => Ok(app_ref(owner, &namespace)),
        }
    }

    /// `IsValidStatefulSetPod`: the StatefulSet named by the pod name's prefix exists and the
    /// ordinal is inside its replica range.
    pub(crate) async fn is_valid_statefulset_pod(
        &self,
        namespace: &str,
        pod_name: &str,
    ) -> Result<bool, StoreError> {
        let Some((parent, ordinal)) = statefulset_name_and_ordinal(pod_name) else {
            return Ok(false);
        };
        let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        let Some(statefulset) = api
            .get_opt(parent)
            .await
            .map_err(|error| api_error(format!("get StatefulSet {namespace}/{parent}"), error))?
        else {
            return Ok(false);
        };
        if statefulset.metadata.deletion_timestamp.is_some() {
            return Ok(false);
        }
        let spec = statefulset.spec.as_ref();
        let replicas = i64::from(spec.and_then(|spec| spec.replicas).unwrap_or(1));
        let start = spec
            .and_then(|spec| spec.ordinals.as_ref())
            .and_then(|ordinals| ordinals.start)
            .map(i64::from);
        Ok(is_valid_statefulset_ordinal(ordinal, replicas, start))
    }

    /// The pools of `query` (missing names are simply absent: selection reports them).
    pub(crate) async fn fetch_pools(
        &self,
        query: &PoolQuery,
    ) -> Result<Vec<SpiderIPPool>, StoreError> {
        let api = self.pools();
        match query {
            // Selection only: the cache is fresh enough.
            PoolQuery::All => {
                let what = "list SpiderIPPools";
                super::list_cached(&api, &ListParams::default(), what)
                    .await
                    .map_err(|error| api_error(what, error))
            }
            PoolQuery::Named(names) => {
                let mut pools: Vec<SpiderIPPool> = Vec::with_capacity(names.len());
                for name in names {
                    // A name no object can have is absent without asking: the API client
                    // refuses to build the request, which would read like an outage.
                    if !could_name_an_object(name)
                        || pools
                            .iter()
                            .any(|pool| pool.metadata.name.as_deref() == Some(name.as_str()))
                    {
                        continue;
                    }
                    // Selection reads the spec only; the ledger is re-read (or checked by
                    // resourceVersion) when it is written. The node's copy of the spec, kept by
                    // the last writer on this node, saves a read of the whole ledger.
                    if let Some(pool) = self
                        .options
                        .lock_dir
                        .as_ref()
                        .and_then(|dir| dir.cached_pool(name, POOL_SPEC_CACHE_TTL))
                    {
                        pools.push(pool);
                        continue;
                    }
                    match api.get_with(name, &GetParams::any()).await {
                        Ok(pool) => pools.push(pool),
                        // The cache may not have a pool created a moment ago yet, or may
                        // not be ready at all on a fresh API server.
                        Err(kube::Error::Api(status))
                            if status.is_not_found()
                                || status.code == 429
                                || status.code >= 500 =>
                        {
                            if let Some(pool) = api.get_opt(name).await.map_err(|error| {
                                api_error(format!("get SpiderIPPool {name}"), error)
                            })? {
                                pools.push(pool);
                            }
                        }
                        Err(error) => {
                            return Err(api_error(format!("get SpiderIPPool {name}"), error));
                        }
                    }
                }
                Ok(pools)
            }
        }
    }

    /// Pools carrying all `labels` (auto-pool lookup).
    pub(crate) async fn pools_with_labels(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<SpiderIPPool>, StoreError> {
        let selector = super::autopool::label_selector(labels);
        let what = format!("list SpiderIPPools with labels {selector}");
        super::list_cached(
            &self.pools(),
            &ListParams::default().labels(&selector),
            &what,
        )
        .await
        .map_err(|error| api_error(what, error))
    }
}

/// The pod context from the objects read.
pub(crate) fn pod_context(
    pod: &Pod,
    namespace: Option<&Namespace>,
    node: Option<&Node>,
    top_controller: AppRef,
) -> PodContext {
    PodContext {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        namespace_labels: namespace
            .and_then(|namespace| namespace.metadata.labels.clone())
            .unwrap_or_default(),
        namespace_annotations: namespace
            .and_then(|namespace| namespace.metadata.annotations.clone())
            .unwrap_or_default(),
        node_labels: node
            .and_then(|node| node.metadata.labels.clone())
            .unwrap_or_default(),
        top_controller,
    }
}

/// Whether `name` can be the name of a cluster-scoped custom object (a DNS subdomain: at most
/// 253 characters of lowercase letters, digits, `-` and `.`, alphanumeric at both ends).
fn could_name_an_object(name: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| alphanumeric(c) || c == '-' || c == '.')
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn pool_query_follows_the_source_precedence() {
        let settings = ClusterSettings::default();
        let ipam = IpamConfig {
            default_ipv4_ippool: vec!["conf-v4".into()],
            ..IpamConfig::default()
        };
        let namespace = map(&[(annotations::ANNO_NS_DEFAULT_IPV4_POOL, r#"["ns-v4"]"#)]);
        let both = map(&[
            (
                ANNO_POD_IPPOOLS,
                r#"[{"interface":"eth0","ipv4":["a"]},{"interface":"net1","ipv4":["b"]}]"#,
            ),
            (ANNO_POD_IPPOOL, r#"{"ipv4":["c"]}"#),
        ]);
        assert_eq!(
            pool_query(&both, &namespace, &ipam, &settings),
            PoolQuery::Named(vec!["a".into(), "b".into()])
        );
        let single = map(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["c"],"ipv6":["d"]}"#)]);
        assert_eq!(
            pool_query(&single, &namespace, &ipam, &settings),
            PoolQuery::Named(vec!["c".into(), "d".into()])
        );
        assert_eq!(
            pool_query(&BTreeMap::new(), &namespace, &ipam, &settings),
            PoolQuery::Named(vec!["ns-v4".into()])
        );
        assert_eq!(
            pool_query(&BTreeMap::new(), &BTreeMap::new(), &ipam, &settings),
            PoolQuery::Named(vec!["conf-v4".into()])
        );
        assert_eq!(
            pool_query(
                &BTreeMap::new(),
                &BTreeMap::new(),
                &IpamConfig::default(),
                &settings
            ),
            PoolQuery::All
        );
        let wildcard = map(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["pool-*"]}"#)]);
        assert_eq!(
            pool_query(&wildcard, &namespace, &ipam, &settings),
            PoolQuery::All
        );
        let broken = map(&[(ANNO_POD_IPPOOL, "{")]);
        assert_eq!(
            pool_query(&broken, &namespace, &ipam, &settings),
            PoolQuery::Named(Vec::new())
        );
    }

    // Found by the bad-input corpus: `default_ipv4_ippool: [""]` was reported as an API outage.
    #[test]
    fn names_no_object_can_have_are_not_fetched() {
        for name in ["pool-a", "a", "v4.pool-1"] {
            assert!(could_name_an_object(name), "{name}");
        }
        for name in [
            "",
            " ",
            "a/b",
            "Pool",
            "-a",
            "a-",
            "pool a",
            &"a".repeat(254),
        ] {
            assert!(!could_name_an_object(name), "{name:?}");
        }
    }
}
