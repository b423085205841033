//! Candidate pools for a CNI ADD: where they come from (§5.3), which survive (§5.4), and in which
//! order they are tried.
//!
//! Sources, first match wins: the SpiderSubnet auto pool (returned as an [`AutoPoolRequest`] for the
//! caller to resolve, because finding or creating the pool needs the API server), then the pod
//! annotations `ipam.spidernet.io/ippools` and `ipam.spidernet.io/ippool`, the namespace default pools,
//! the CNI network-config default pools, and finally every pool with `spec.default: true`. Pool names
//! may be globs, expanded against pools of the same family in the order the caller lists them.
//!
//! Filtering drops disabled, terminating, wrong-family, node-, namespace-, pod- and Multus-mismatched
//! pools (and, with `match_master_subnet`, pools whose subnet is not on the SR-IOV PF), collecting one
//! reason per dropped pool in upstream's words. Survivors are ordered by priority (pod affinity, node
//! name, node affinity, namespace name, namespace affinity, multus name) with ties kept in the user's
//! order (deliberate difference #3). The first-NIC Multus lookup is only required for pools that set
//! `multusName` (deliberate difference #4).

mod filter;

pub use filter::{PoolVerdict, filter_candidates, judge_pools, priority_order};

use std::net::IpAddr;

use thiserror::Error;

use crate::annotations::{
    self, ANNO_NS_DEFAULT_IPV4_POOL, ANNO_NS_DEFAULT_IPV6_POOL, ANNO_POD_IPPOOL, ANNO_POD_IPPOOLS,
    AnnotationError, PoolIpNumber, has_subnet_annotation,
};
use crate::config::IpamConfig;
use crate::glob::{glob_match, has_wildcard};
use crate::ip::IpVersion;
use crate::pod::{AppRef, PodContext};
use crate::pool::PoolView;
use crate::settings::ClusterSettings;

/// Errors of candidate selection, with upstream's texts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectionError {
    #[error(
        "it's invalid to use 'ipam.spidernet.io/subnets' or 'ipam.spidernet.io/subnet' annotation when Auto-Pool feature is disabled"
    )]
    SubnetAnnotationWithoutAutoPool,
    #[error("failed to get IPPool candidates from Subnet: {0}")]
    SubnetAnnotation(AnnotationError),
    #[error(
        "failed to get IPPool candidates from Subnet: SpiderSubnet feature doesn't support no-controller pod"
    )]
    OrphanPodInSubnetMode,
    #[error(
        "failed to get IPPool candidates from Subnet: {kind}/{namespace}/{name} only supports fixed auto-created IPPool IP Number"
    )]
    ThirdPartyNeedsFixedIpNumber {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error(
        "failed to match wildcard: IPv{version} PoolName pattern '{pattern}', character '{pool}', error: syntax error in pattern"
    )]
    BadWildcard {
        version: IpVersion,
        pattern: String,
        pool: String,
    },
    /// Every name listed for an enabled family is a pattern and none matches a pool. Upstream
    /// goes on with no pool for the family and fails later with "no Interface eth0 IP allocation
    /// found", which does not say why; we say which patterns matched nothing.
    #[error("no IPv{version} IPPool matches {}: create a pool whose name matches, or correct the pattern", go_list(.patterns))]
    NoWildcardMatch {
        version: IpVersion,
        patterns: Vec<String>,
    },
    #[error("no IPPool available, no pool selection rules of any type are specified")]
    NoClusterDefaultPool,
    /// An empty string in a list of pool names. Without this check the name reaches the API
    /// server, whose refusal of an empty name reads like an outage.
    #[error("an empty IPv{version} IPPool name in {source_name}: name an existing SpiderIPPool")]
    EmptyPoolName {
        version: IpVersion,
        source_name: &'static str,
    },
    #[error("wrong input, duplicate IPPool {pool} specified for NIC {nic}")]
    DuplicatePool { pool: String, nic: String },
    #[error(
        "failed to get original IPPool {pool}: spiderippools.spiderpool.spidernet.io \"{pool}\" not found"
    )]
    PoolNotFound { pool: String },
    #[error("no IPPool available, all IPv{version} IPPools {} of {nic} filtered out: {}", go_list(.pools), aggregate(.reasons))]
    AllFiltered {
        version: IpVersion,
        pools: Vec<String>,
        nic: String,
        reasons: Vec<String>,
    },
    #[error("failed to allocate any IPv{version} IP address to NIC {nic} from IPPools {}: {}", go_list(.pools), aggregate(.errors))]
    CandidateExhausted {
        version: IpVersion,
        nic: String,
        pools: Vec<String>,
        errors: Vec<String>,
    },
}

impl SelectionError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SelectionError::SubnetAnnotationWithoutAutoPool => "subnet_annotation_disabled",
            SelectionError::SubnetAnnotation(_) => "invalid_subnet_annotation",
            SelectionError::OrphanPodInSubnetMode => "orphan_pod_subnet",
            SelectionError::ThirdPartyNeedsFixedIpNumber { .. } => "auto_pool_ip_number",
            SelectionError::Annotation(error) => error.metric_label(),
            SelectionError::BadWildcard { .. } => "bad_wildcard",
            SelectionError::NoWildcardMatch { .. } => "no_wildcard_match",
            SelectionError::NoClusterDefaultPool => "no_default_pool",
            SelectionError::EmptyPoolName { .. } => "empty_pool_name",
            SelectionError::DuplicatePool { .. } => "duplicate_pool",
            SelectionError::PoolNotFound { .. } => "pool_not_found",
            SelectionError::AllFiltered { .. } => "all_pools_filtered",
            SelectionError::CandidateExhausted { .. } => "candidate_exhausted",
        }
    }
}

/// Go's `%v` of a `[]string`: `[a b c]`.
pub fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// `utilerrors.NewAggregate(errs).Error()`: one message as is; several distinct ones joined with
/// `, ` in brackets (duplicates dropped).
pub fn aggregate(messages: &[String]) -> String {
    let mut distinct: Vec<&str> = Vec::new();
    for message in messages {
        if !distinct.contains(&message.as_str()) {
            distinct.push(message);
        }
    }
    match distinct.as_slice() {
        [] => String::new(),
        [single] => single.to_string(),
        _ => format!("[{}]", distinct.join(", ")),
    }
}

/// Which rule produced the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateSource {
    SubnetAutoPool,
    PodIpPools,
    PodIpPool,
    NamespaceDefault,
    NetworkConfigDefault,
    ClusterDefault,
}

/// The ordered pool names to try for one family of one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCandidate {
    pub ip_version: IpVersion,
    pub pools: Vec<String>,
}

/// Everything to allocate for one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicCandidates {
    pub nic: String,
    pub clean_gateway: bool,
    pub candidates: Vec<PoolCandidate>,
}

/// The NICs to allocate in this ADD (several only with `ipam.spidernet.io/ippools`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    pub source: CandidateSource,
    pub nics: Vec<NicCandidates>,
}

impl Candidates {
    /// All pool names, NIC by NIC (upstream's "tickets").
    pub fn pool_names(&self) -> Vec<&str> {
        self.nics
            .iter()
            .flat_map(|nic| nic.candidates.iter())
            .flat_map(|candidate| candidate.pools.iter().map(String::as_str))
            .collect()
    }
}

/// The SR-IOV PF found behind the VF (probed by the caller inside the pod netns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterInterface {
    pub pf_name: String,
    pub addresses: Vec<IpAddr>,
}

/// Inputs of selection. `pools` is every known pool, in the order wildcards expand in.
#[derive(Debug, Clone, Copy)]
pub struct SelectionContext<'a> {
    pub pod: &'a PodContext,
    /// `CNI_IFNAME`.
    pub nic: &'a str,
    pub ipam: &'a IpamConfig,
    pub settings: &'a ClusterSettings,
    pub pools: &'a [PoolView],
    /// Only read when `ipam.match_master_subnet` is on: `None` = no netns was given; `Err` = probing
    /// failed with that reason.
    pub master_interface: Option<&'a Result<MasterInterface, String>>,
}

impl<'a> SelectionContext<'a> {
    /// The first pool with this name.
    pub fn pool(&self, name: &str) -> Option<&'a PoolView> {
        self.pools.iter().find(|pool| pool.name == name)
    }
}

/// SpiderSubnet mode: the caller must find (built-in controllers) or reconcile (third-party
/// controllers) the auto-created pools, then call [`AutoPoolRequest::candidates`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPoolRequest {
    pub nic: String,
    pub clean_gateway: bool,
    /// Subnet for the IPv4 pool (only when IPv4 is enabled).
    pub ipv4_subnet: Option<String>,
    /// Subnet for the IPv6 pool (only when IPv6 is enabled).
    pub ipv6_subnet: Option<String>,
    /// The explicit `ipam.spidernet.io/ippool-ip-number`, if any.
    pub ip_number: Option<PoolIpNumber>,
    pub reclaim: bool,
    pub controller: AppRef,
}

impl AutoPoolRequest {
    /// `getAutoPoolIPNumber`: the size the pool must have. `replicas` is the controller's replica
    /// count (ignored for third-party controllers, whose count is taken as 0).
    pub fn desired_ip_number(&self, replicas: i64) -> Result<i64, SelectionError> {
        let controller = &self.controller;
        let built_in_version =
            ["v1", "apps/v1", "batch/v1"].contains(&controller.api_version().as_str());
        let third_party = match (built_in_version, controller.kind.as_str()) {
            (true, "Pod") => return Ok(1),
            (
                true,
                "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob",
            ) => false,
            _ => true,
        };
        let replicas = if third_party { 0 } else { replicas };
        match self.ip_number {
            Some(PoolIpNumber::Fixed(number)) => Ok(number),
            Some(PoolIpNumber::Flexible(number)) => Ok(replicas.saturating_add(number)),
            None if third_party => Err(SelectionError::ThirdPartyNeedsFixedIpNumber {
                kind: controller.kind.clone(),
                namespace: controller.namespace.clone(),
                name: controller.name.clone(),
            }),
            None => Ok(replicas),
        }
    }

    /// The candidates once the auto pools are known (each the only candidate of its family).
    pub fn candidates(&self, ipv4_pool: Option<&str>, ipv6_pool: Option<&str>) -> Candidates {
        let mut candidates = Vec::new();
        for (version, pool) in [(IpVersion::V4, ipv4_pool), (IpVersion::V6, ipv6_pool)] {
            if let Some(pool) = pool {
                candidates.push(PoolCandidate {
                    ip_version: version,
                    pools: vec![pool.to_string()],
                });
            }
        }
        Candidates {
            source: CandidateSource::SubnetAutoPool,
            nics: vec![NicCandidates {
                nic: self.nic.clone(),
                clean_gateway: self.clean_gateway,
                candidates,
            }],
        }
    }
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandidatePlan {
    /// Resolve the auto-created pools, then filter [`AutoPoolRequest::candidates`].
    AutoPool(Box<AutoPoolRequest>),
    /// Pools named by one of the other sources (not yet filtered).
    Pools(Candidates),
}

/// `ParseWildcardPoolNameList`: when any name is a glob, each glob is replaced by the pools of the
/// family it matches (in list order); plain names stay. A glob matching nothing yields nothing.
pub fn expand_pool_names(
    names: &[String],
    version: IpVersion,
    pools: &[PoolView],
) -> Result<Vec<String>, SelectionError> {
    if !names.iter().any(|name| has_wildcard(name)) {
        return Ok(names.to_vec());
    }
    let mut expanded = Vec::new();
    for name in names {
        if !has_wildcard(name) {
            expanded.push(name.clone());
            continue;
        }
        for pool in pools.iter().filter(|pool| pool.ip_version == Some(version)) {
            match glob_match(name, &pool.name) {
                Ok(true) => expanded.push(pool.name.clone()),
                Ok(false) => {}
                Err(_) => {
                    return Err(SelectionError::BadWildcard {
                        version,
                        pattern: name.clone(),
                        pool: pool.name.clone(),
                    });
                }
            }
        }
    }
    Ok(expanded)
}

/// [`expand_pool_names`] for one source's list of a family, refusing a non-empty list of an enabled
/// family that expands to nothing (see [`SelectionError::NoWildcardMatch`]).
fn expand_family(
    ctx: &SelectionContext<'_>,
    names: &[String],
    version: IpVersion,
    source_name: &'static str,
) -> Result<Vec<String>, SelectionError> {
    if names.iter().any(|name| name.trim().is_empty()) {
        return Err(SelectionError::EmptyPoolName {
            version,
            source_name,
        });
    }
    let expanded = expand_pool_names(names, version, ctx.pools)?;
    if expanded.is_empty() && !names.is_empty() && ctx.settings.family_enabled(version) {
        return Err(SelectionError::NoWildcardMatch {
            version,
            patterns: names.to_vec(),
        });
    }
    Ok(expanded)
}

fn family_candidates(ipv4: Vec<String>, ipv6: Vec<String>) -> Vec<PoolCandidate> {
    let mut candidates = Vec::new();
    if !ipv4.is_empty() {
        candidates.push(PoolCandidate {
            ip_version: IpVersion::V4,
            pools: ipv4,
        });
    }
    if !ipv6.is_empty() {
        candidates.push(PoolCandidate {
            ip_version: IpVersion::V6,
            pools: ipv6,
        });
    }
    candidates
}

fn single_nic(
    ctx: &SelectionContext<'_>,
    source: CandidateSource,
    ipv4: Vec<String>,
    ipv6: Vec<String>,
) -> Candidates {
    Candidates {
        source,
        nics: vec![NicCandidates {
            nic: ctx.nic.to_string(),
            clean_gateway: ctx.ipam.clean_gateway,
            candidates: family_candidates(ipv4, ipv6),
        }],
    }
}

/// `getPoolCandidates`: the first source that applies.
pub fn plan_candidates(ctx: &SelectionContext<'_>) -> Result<CandidatePlan, SelectionError> {
    let annotations = &ctx.pod.annotations;
    let settings = ctx.settings;
    if settings.enable_spider_subnet {
        if settings.enable_auto_pool_for_application {
            if let Some(request) = subnet_request(ctx)? {
                return Ok(CandidatePlan::AutoPool(Box::new(request)));
            }
        } else if has_subnet_annotation(annotations) {
            return Err(SelectionError::SubnetAnnotationWithoutAutoPool);
        }
    }

    if let Some(value) = annotations.get(ANNO_POD_IPPOOLS) {
        let mut items = annotations::parse_pod_ippools(value)?;
        for item in &mut items {
            item.ipv4 = expand_family(ctx, &item.ipv4, IpVersion::V4, ANNO_POD_IPPOOLS)?;
            item.ipv6 = expand_family(ctx, &item.ipv6, IpVersion::V6, ANNO_POD_IPPOOLS)?;
        }
        annotations::validate_multiple_nics(&mut items, ctx.nic)?;
        let nics = items
            .into_iter()
            .map(|item| NicCandidates {
                nic: item.interface,
                clean_gateway: item.clean_gateway,
                candidates: family_candidates(item.ipv4, item.ipv6),
            })
            .collect();
        return Ok(CandidatePlan::Pools(Candidates {
            source: CandidateSource::PodIpPools,
            nics,
        }));
    }

    if let Some(value) = annotations.get(ANNO_POD_IPPOOL) {
        let parsed = annotations::parse_pod_ippool(value)?;
        let ipv4 = expand_family(ctx, &parsed.ipv4, IpVersion::V4, ANNO_POD_IPPOOL)?;
        let ipv6 = expand_family(ctx, &parsed.ipv6, IpVersion::V6, ANNO_POD_IPPOOL)?;
        return Ok(CandidatePlan::Pools(single_nic(
            ctx,
            CandidateSource::PodIpPool,
            ipv4,
            ipv6,
        )));
    }

    let (namespace_v4, namespace_v6) =
        annotations::parse_namespace_default_pools(&ctx.pod.namespace_annotations)?;
    if !namespace_v4.is_empty() || !namespace_v6.is_empty() {
        let ipv4 = expand_family(ctx, &namespace_v4, IpVersion::V4, ANNO_NS_DEFAULT_IPV4_POOL)?;
        let ipv6 = expand_family(ctx, &namespace_v6, IpVersion::V6, ANNO_NS_DEFAULT_IPV6_POOL)?;
        return Ok(CandidatePlan::Pools(single_nic(
            ctx,
            CandidateSource::NamespaceDefault,
            ipv4,
            ipv6,
        )));
    }

    let config_v4 = &ctx.ipam.default_ipv4_ippool;
    let config_v6 = &ctx.ipam.default_ipv6_ippool;
    if !config_v4.is_empty() || !config_v6.is_empty() {
        let ipv4 = expand_family(ctx, config_v4, IpVersion::V4, "default_ipv4_ippool")?;
        let ipv6 = expand_family(ctx, config_v6, IpVersion::V6, "default_ipv6_ippool")?;
        return Ok(CandidatePlan::Pools(single_nic(
            ctx,
            CandidateSource::NetworkConfigDefault,
            ipv4,
            ipv6,
        )));
    }

    let defaults: Vec<&PoolView> = ctx.pools.iter().filter(|pool| pool.default).collect();
    if defaults.is_empty() {
        return Err(SelectionError::NoClusterDefaultPool);
    }
    let names_of = |version: IpVersion| -> Vec<String> {
        defaults
            .iter()
            .filter(|pool| pool.ip_version == Some(version))
            .map(|pool| pool.name.clone())
            .collect()
    };
    Ok(CandidatePlan::Pools(single_nic(
        ctx,
        CandidateSource::ClusterDefault,
        names_of(IpVersion::V4),
        names_of(IpVersion::V6),
    )))
}

/// `getPoolFromSubnetAnno` up to the I/O: `None` in default IPAM mode.
fn subnet_request(ctx: &SelectionContext<'_>) -> Result<Option<AutoPoolRequest>, SelectionError> {
    let annotations = &ctx.pod.annotations;
    let config = annotations::parse_subnet_annotations(
        annotations,
        ctx.settings.cluster_subnet_default_flexible_ip_number,
    )
    .map_err(SelectionError::SubnetAnnotation)?;
    let Some(config) = config else {
        return Ok(None);
    };
    if ctx.pod.top_controller.is_orphan_pod() {
        return Err(SelectionError::OrphanPodInSubnetMode);
    }
    let item = config.item_for(ctx.nic).cloned().unwrap_or_default();
    let ip_number = match annotations.get(annotations::ANNO_POOL_IP_NUMBER) {
        Some(value) => Some(
            annotations::parse_pool_ip_number(value).map_err(SelectionError::SubnetAnnotation)?,
        ),
        None => None,
    };
    Ok(Some(AutoPoolRequest {
        nic: ctx.nic.to_string(),
        clean_gateway: ctx.ipam.clean_gateway,
        ipv4_subnet: item
            .ipv4_subnet()
            .filter(|_| ctx.settings.enable_ipv4)
            .map(str::to_string),
        ipv6_subnet: item
            .ipv6_subnet()
            .filter(|_| ctx.settings.enable_ipv6)
            .map(str::to_string),
        ip_number,
        reclaim: config.reclaim,
        controller: ctx.pod.top_controller.clone(),
    }))
}

/// [`plan_candidates`] followed by [`filter_candidates`] for the non-subnet sources.
pub fn select_candidates(ctx: &SelectionContext<'_>) -> Result<CandidatePlan, SelectionError> {
    match plan_candidates(ctx)? {
        CandidatePlan::AutoPool(request) => Ok(CandidatePlan::AutoPool(request)),
        CandidatePlan::Pools(candidates) => {
            Ok(CandidatePlan::Pools(filter_candidates(ctx, candidates)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::labels::{LabelSelector, LabelSelectorRequirement};
    use crate::multus::{ANNO_MULTUS_DEFAULT_NETWORK, ANNO_MULTUS_NETWORKS};
    use crate::pool::{
        AUTO_POOL_AFFINITY_API_GROUP, AUTO_POOL_AFFINITY_API_VERSION, AUTO_POOL_AFFINITY_KIND,
        AUTO_POOL_AFFINITY_NAME, AUTO_POOL_AFFINITY_NAMESPACE,
    };

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn v4(name: &str) -> PoolView {
        PoolView {
            ips: vec!["10.0.0.10-10.0.0.20".into()],
            ..PoolView::new(name, IpVersion::V4, "10.0.0.0/24")
        }
    }

    fn v6(name: &str) -> PoolView {
        PoolView {
            ips: vec!["fd00::10-fd00::20".into()],
            ..PoolView::new(name, IpVersion::V6, "fd00::/64")
        }
    }

    fn pod(annotations: &[(&str, &str)]) -> PodContext {
        PodContext {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-1".into(),
            node_name: "node-1".into(),
            labels: map(&[("app", "web")]),
            annotations: map(annotations),
            top_controller: AppRef::from_api_version(
                "apps/v1",
                "Deployment",
                "default",
                "web",
                "d-uid",
            ),
            ..PodContext::default()
        }
    }

    struct Fixture {
        pod: PodContext,
        ipam: IpamConfig,
        settings: ClusterSettings,
        pools: Vec<PoolView>,
        nic: String,
        master: Option<Result<MasterInterface, String>>,
    }

    impl Fixture {
        fn new(pod: PodContext, pools: Vec<PoolView>) -> Fixture {
            Fixture {
                pod,
                ipam: IpamConfig::spiderpool(vec![], vec![]),
                settings: ClusterSettings::default(),
                pools,
                nic: "eth0".into(),
                master: None,
            }
        }

        fn ctx(&self) -> SelectionContext<'_> {
            SelectionContext {
                pod: &self.pod,
                nic: &self.nic,
                ipam: &self.ipam,
                settings: &self.settings,
                pools: &self.pools,
                master_interface: self.master.as_ref(),
            }
        }

        fn select(&self) -> Result<Candidates, SelectionError> {
            match select_candidates(&self.ctx())? {
                CandidatePlan::Pools(candidates) => Ok(candidates),
                CandidatePlan::AutoPool(request) => panic!("unexpected auto pool {request:?}"),
            }
        }
    }

    fn pools_of(candidates: &Candidates, nic: usize, family: usize) -> Vec<String> {
        candidates.nics[nic].candidates[family].pools.clone()
    }

    // G85
    #[test]
    fn ippools_annotation_wins_over_every_other_source() {
        let mut fixture = Fixture::new(
            pod(&[
                (ANNO_POD_IPPOOLS, r#"[{"interface":"eth0","ipv4":["a"]}]"#),
                (ANNO_POD_IPPOOL, r#"{"ipv4":["b"]}"#),
            ]),
            vec![v4("a"), v4("b"), v4("c"), v4("d")],
        );
        fixture.pod.namespace_annotations =
            map(&[(annotations::ANNO_NS_DEFAULT_IPV4_POOL, r#"["c"]"#)]);
        fixture.ipam.default_ipv4_ippool = vec!["d".into()];
        let candidates = fixture.select().unwrap();
        assert_eq!(candidates.source, CandidateSource::PodIpPools);
        assert_eq!(pools_of(&candidates, 0, 0), vec!["a"]);
    }

    #[test]
    fn sources_fall_through_in_precedence_order() {
        let mut fixture = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["b"]}"#)]),
            vec![
                v4("b"),
                v4("c"),
                v4("d"),
                PoolView {
                    default: true,
                    ..v4("e")
                },
            ],
        );
        fixture.pod.namespace_annotations =
            map(&[(annotations::ANNO_NS_DEFAULT_IPV4_POOL, r#"["c"]"#)]);
        fixture.ipam.default_ipv4_ippool = vec!["d".into()];
        assert_eq!(fixture.select().unwrap().source, CandidateSource::PodIpPool);
        fixture.pod.annotations.clear();
        let namespace = fixture.select().unwrap();
        assert_eq!(namespace.source, CandidateSource::NamespaceDefault);
        assert_eq!(pools_of(&namespace, 0, 0), vec!["c"]);
        fixture.pod.namespace_annotations.clear();
        let config = fixture.select().unwrap();
        assert_eq!(config.source, CandidateSource::NetworkConfigDefault);
        assert_eq!(pools_of(&config, 0, 0), vec!["d"]);
        fixture.ipam.default_ipv4_ippool.clear();
        let cluster = fixture.select().unwrap();
        assert_eq!(cluster.source, CandidateSource::ClusterDefault);
        assert_eq!(pools_of(&cluster, 0, 0), vec!["e"]);
        fixture.pools.retain(|pool| !pool.default);
        assert_eq!(
            fixture.select().unwrap_err().to_string(),
            "no IPPool available, no pool selection rules of any type are specified"
        );
    }

    // Found by the bad-input corpus: `default_ipv4_ippool: [""]` used to reach the API server,
    // whose "a non-empty name is required" was reported as the API server being unavailable.
    #[test]
    fn an_empty_pool_name_is_refused_naming_where_it_came_from() {
        let mut fixture = Fixture::new(pod(&[]), vec![v4("a")]);
        fixture.ipam.default_ipv4_ippool = vec![String::new()];
        assert_eq!(
            fixture.select().unwrap_err().to_string(),
            "an empty IPv4 IPPool name in default_ipv4_ippool: name an existing SpiderIPPool"
        );
        fixture.pod.annotations = map(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["a"],"ipv6":[" "]}"#)]);
        assert_eq!(
            fixture.select().unwrap_err().metric_label(),
            "empty_pool_name"
        );
        assert!(
            fixture
                .select()
                .unwrap_err()
                .to_string()
                .contains(ANNO_POD_IPPOOL)
        );
    }

    #[test]
    fn a_pattern_matching_no_pool_of_an_enabled_family_is_named() {
        let fixture = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["no-such-pool-*"]}"#)]),
            vec![v4("pool-a")],
        );
        let error = fixture.select().unwrap_err();
        assert_eq!(
            error.to_string(),
            "no IPv4 IPPool matches [no-such-pool-*]: create a pool whose name matches, or correct the pattern"
        );
        // A family that is disabled may list patterns that match nothing.
        let mut v4_only = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["pool-*"],"ipv6":["v6-*"]}"#)]),
            vec![v4("pool-a")],
        );
        v4_only.settings.enable_ipv6 = false;
        let candidates = v4_only.select().unwrap();
        assert_eq!(pools_of(&candidates, 0, 0), vec!["pool-a"]);
    }

    #[test]
    fn wildcards_expand_per_family_in_list_order() {
        let pools = vec![
            v4("pool-c"),
            v6("pool-a6"),
            v4("pool-a"),
            v4("pool-b"),
            v4("other"),
        ];
        let expand = |patterns: &[&str], version| {
            let names: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
            expand_pool_names(&names, version, &pools)
        };
        assert_eq!(
            expand(&["pool-*"], IpVersion::V4).unwrap(),
            vec!["pool-c", "pool-a", "pool-b"]
        );
        assert_eq!(
            expand(&["pool-?"], IpVersion::V4).unwrap(),
            vec!["pool-c", "pool-a", "pool-b"]
        );
        assert_eq!(
            expand(&["pool-[a-b]", "other"], IpVersion::V4).unwrap(),
            vec!["pool-a", "pool-b", "other"]
        );
        assert_eq!(expand(&["pool-*"], IpVersion::V6).unwrap(), vec!["pool-a6"]);
        assert!(expand(&["nomatch-*"], IpVersion::V4).unwrap().is_empty());
        assert_eq!(expand(&["plain"], IpVersion::V4).unwrap(), vec!["plain"]);
        assert_eq!(
            expand(&["pool-[*"], IpVersion::V4).unwrap_err().to_string(),
            "failed to match wildcard: IPv4 PoolName pattern 'pool-[*', character 'pool-c', error: syntax error in pattern"
        );
    }

    #[test]
    fn every_filter_reports_its_reason_in_upstream_words() {
        let selector =
            |key: &str, value: &str| Some(LabelSelector::from_match_labels(map(&[(key, value)])));
        let pools = vec![
            PoolView {
                terminating: true,
                ..v4("terminating")
            },
            PoolView {
                disable: true,
                ..v4("disabled")
            },
            PoolView {
                ip_version: None,
                ..v4("no-version")
            },
            v6("wrong-family"),
            PoolView {
                node_name: vec!["node-2".into()],
                ..v4("node-name")
            },
            PoolView {
                node_affinity: selector("zone", "b"),
                ..v4("node-affinity")
            },
            PoolView {
                namespace_name: vec!["kube-system".into()],
                ..v4("namespace-name")
            },
            PoolView {
                namespace_affinity: selector("team", "x"),
                ..v4("namespace-affinity")
            },
            PoolView {
                pod_affinity: selector("app", "db"),
                ..v4("pod-affinity")
            },
            PoolView {
                pod_affinity: selector("app", "db"),
                auto_created: true,
                ..v4("auto")
            },
            PoolView {
                multus_name: vec!["macvlan".into()],
                ..v4("multus")
            },
            PoolView {
                pod_affinity: Some(LabelSelector {
                    match_labels: BTreeMap::new(),
                    match_expressions: vec![LabelSelectorRequirement {
                        key: "app".into(),
                        operator: "Bad".into(),
                        values: vec![],
                    }],
                }),
                ..v4("bad-selector")
            },
        ];
        let names: Vec<String> = pools.iter().map(|pool| pool.name.clone()).collect();
        let annotation = format!(r#"{{"ipv4":{}}}"#, serde_json::to_string(&names).unwrap());
        let mut fixture = Fixture::new(pod(&[(ANNO_POD_IPPOOL, &annotation)]), pools);
        fixture.pod.node_labels = map(&[("zone", "a")]);
        fixture.settings.spiderpool_namespace = "spiderpool".into();
        fixture.pod.annotations.insert(
            ANNO_MULTUS_DEFAULT_NETWORK.into(),
            "kube-system/calico".into(),
        );
        let error = fixture.select().unwrap_err();
        let SelectionError::AllFiltered { reasons, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(
            reasons,
            &vec![
                "terminating IPPool terminating".to_string(),
                "disabled IPPool disabled".into(),
                "nil ippool ipVersion".into(),
                "expect an IPv4 IPPool, but the version of the IPPool wrong-family is IPv6".into(),
                "unmatched Node name of IPPool node-name".into(),
                "unmatched Node affinity of IPPool node-affinity".into(),
                "unmatched Namespace name of IPPool namespace-name".into(),
                "unmatched Namespace affinity of IPPool namespace-affinity".into(),
                "unmatched Pod affinity of IPPool pod-affinity".into(),
                "unmatched Pod annifity of auto-created IPool auto".into(),
                "the spec.multusName [macvlan] in the IPPool multus used by the Pod interface eth0 is not matched with the multusCR kube-system/calico specified by the Pod".into(),
                "\"Bad\" is not a valid label selector operator".into(),
            ]
        );
        assert!(error.to_string().starts_with(
            "no IPPool available, all IPv4 IPPools [terminating disabled no-version wrong-family node-name node-affinity namespace-name namespace-affinity pod-affinity auto multus bad-selector] of eth0 filtered out: [terminating IPPool terminating, disabled IPPool disabled, "
        ));
        assert_eq!(error.metric_label(), "all_pools_filtered");
    }

    #[test]
    fn a_single_filter_reason_is_not_bracketed() {
        let fixture = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["off"]}"#)]),
            vec![PoolView {
                disable: true,
                ..v4("off")
            }],
        );
        assert_eq!(
            fixture.select().unwrap_err().to_string(),
            "no IPPool available, all IPv4 IPPools [off] of eth0 filtered out: disabled IPPool off"
        );
    }

    #[test]
    fn matching_affinities_and_multus_names_are_accepted() {
        let selector =
            |key: &str, value: &str| Some(LabelSelector::from_match_labels(map(&[(key, value)])));
        let pools = vec![
            PoolView {
                node_affinity: selector("zone", "a"),
                namespace_affinity: selector("team", "x"),
                ..v4("affine")
            },
            PoolView {
                multus_name: vec!["macvlan".into()],
                ..v4("bare-multus")
            },
            PoolView {
                multus_name: vec!["kube-system/calico".into()],
                ..v4("full-multus")
            },
            PoolView {
                pod_affinity: Some(LabelSelector::from_match_labels(map(&[
                    (AUTO_POOL_AFFINITY_API_GROUP, "apps"),
                    (AUTO_POOL_AFFINITY_API_VERSION, "v1"),
                    (AUTO_POOL_AFFINITY_KIND, "Deployment"),
                    (AUTO_POOL_AFFINITY_NAMESPACE, "default"),
                    (AUTO_POOL_AFFINITY_NAME, "web"),
                ]))),
                auto_created: true,
                ..v4("auto")
            },
        ];
        let mut fixture = Fixture::new(
            pod(&[
                (
                    ANNO_POD_IPPOOL,
                    r#"{"ipv4":["affine","bare-multus","full-multus","auto"]}"#,
                ),
                (ANNO_MULTUS_DEFAULT_NETWORK, "macvlan"),
            ]),
            pools,
        );
        fixture.pod.node_labels = map(&[("zone", "a")]);
        fixture.pod.namespace_labels = map(&[("team", "x")]);
        fixture.settings.spiderpool_namespace = "kube-system".into();
        // bare-multus resolves to kube-system/macvlan; full-multus wants kube-system/calico.
        let candidates = fixture.select().unwrap();
        assert_eq!(
            pools_of(&candidates, 0, 0),
            vec!["auto", "affine", "bare-multus"]
        );
    }

    // Deliberate difference #4
    #[test]
    fn unknown_default_network_only_matters_for_pools_with_multus_name() {
        let fixture = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["plain","restricted"]}"#)]),
            vec![
                v4("plain"),
                PoolView {
                    multus_name: vec!["macvlan".into()],
                    ..v4("restricted")
                },
            ],
        );
        let candidates = fixture.select().unwrap();
        assert_eq!(pools_of(&candidates, 0, 0), vec!["plain"]);
        let only_restricted = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["restricted"]}"#)]),
            vec![PoolView {
                multus_name: vec!["macvlan".into()],
                ..v4("restricted")
            }],
        );
        assert_eq!(
            only_restricted.select().unwrap_err().to_string(),
            "no IPPool available, all IPv4 IPPools [restricted] of eth0 filtered out: cluster-network multus isn't set, the IPPool restricted specified multusName [macvlan] unmatched"
        );
        let mut with_cluster_network = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["restricted"]}"#)]),
            vec![PoolView {
                multus_name: vec!["macvlan".into()],
                ..v4("restricted")
            }],
        );
        with_cluster_network.settings.cluster_network = Some("macvlan".into());
        assert!(with_cluster_network.select().is_ok());
    }

    #[test]
    fn additional_nics_resolve_their_nad_from_the_networks_annotation() {
        let mut fixture = Fixture::new(
            pod(&[
                (ANNO_POD_IPPOOL, r#"{"ipv4":["net1-pool"]}"#),
                (ANNO_MULTUS_NETWORKS, "default/macvlan-a,sriov-b@net5"),
            ]),
            vec![PoolView {
                multus_name: vec!["default/macvlan-a".into()],
                ..v4("net1-pool")
            }],
        );
        fixture.nic = "net1".into();
        assert!(fixture.select().is_ok());
        fixture.nic = "net5".into();
        assert!(
            fixture
                .select()
                .unwrap_err()
                .to_string()
                .ends_with("is not matched with the multusCR default/sriov-b specified by the Pod")
        );
        fixture.nic = "net9".into();
        assert!(fixture
            .select()
            .unwrap_err()
            .to_string()
            .ends_with("unknown: no matched multus object for NIC 'net9'. The multus network-attachments: default/macvlan-a,sriov-b@net5"));
    }

    #[test]
    fn equal_priority_pools_are_tried_in_the_users_order() {
        let fixture = Fixture::new(
            pod(&[(
                ANNO_POD_IPPOOL,
                r#"{"ipv4":["zeta","alpha","node-bound","beta"]}"#,
            )]),
            vec![
                v4("alpha"),
                v4("beta"),
                PoolView {
                    node_name: vec!["node-1".into()],
                    ..v4("node-bound")
                },
                v4("zeta"),
            ],
        );
        let candidates = fixture.select().unwrap();
        assert_eq!(
            pools_of(&candidates, 0, 0),
            vec!["node-bound", "zeta", "alpha", "beta"]
        );
    }

    #[test]
    fn duplicate_and_missing_pools_are_rejected_before_filtering() {
        let duplicate = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["a","a*"]}"#)]),
            vec![v4("a")],
        );
        assert_eq!(
            duplicate.select().unwrap_err().to_string(),
            "wrong input, duplicate IPPool a specified for NIC eth0"
        );
        let missing = Fixture::new(pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["ghost"]}"#)]), vec![]);
        assert_eq!(
            missing.select().unwrap_err().to_string(),
            "failed to get original IPPool ghost: spiderippools.spiderpool.spidernet.io \"ghost\" not found"
        );
    }

    #[test]
    fn disabled_family_candidates_are_dropped() {
        let mut fixture = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["a"],"ipv6":["b"]}"#)]),
            vec![v4("a"), v6("b")],
        );
        fixture.settings.enable_ipv6 = false;
        let candidates = fixture.select().unwrap();
        assert_eq!(candidates.nics[0].candidates.len(), 1);
        assert_eq!(candidates.nics[0].candidates[0].ip_version, IpVersion::V4);
    }

    #[test]
    fn unnamed_multi_nic_items_become_numbered_nics_with_their_clean_gateway() {
        let mut fixture = Fixture::new(
            pod(&[
                (
                    ANNO_POD_IPPOOLS,
                    r#"[{"ipv4":["a"],"cleangateway":false},{"ipv4":["b"],"cleangateway":true}]"#,
                ),
                (ANNO_MULTUS_NETWORKS, "default/second"),
            ]),
            vec![v4("a"), v4("b")],
        );
        fixture.ipam.clean_gateway = true;
        let candidates = fixture.select().unwrap();
        let nics: Vec<(&str, bool)> = candidates
            .nics
            .iter()
            .map(|nic| (nic.nic.as_str(), nic.clean_gateway))
            .collect();
        assert_eq!(nics, vec![("0", false), ("1", true)]);
        assert_eq!(candidates.pool_names(), vec!["a", "b"]);
    }

    #[test]
    fn named_multi_nic_annotation_must_include_the_current_nic() {
        let fixture = Fixture::new(
            pod(&[(ANNO_POD_IPPOOLS, r#"[{"interface":"net1","ipv4":["a"]}]"#)]),
            vec![v4("a")],
        );
        assert!(fixture
            .select()
            .unwrap_err()
            .to_string()
            .starts_with("wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippools': interface eth0 must be specified"));
    }

    #[test]
    fn clean_gateway_comes_from_the_network_config_for_single_nic_sources() {
        let mut fixture = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["a"]}"#)]),
            vec![v4("a")],
        );
        fixture.ipam.clean_gateway = true;
        assert!(fixture.select().unwrap().nics[0].clean_gateway);
    }

    #[test]
    fn master_subnet_filter_needs_the_pf_address_inside_the_pool_subnet() {
        let mut fixture = Fixture::new(
            pod(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["rail1","rail2"]}"#)]),
            vec![
                v4("rail1"),
                PoolView {
                    subnet: "10.1.0.0/24".into(),
                    ips: vec!["10.1.0.10".into()],
                    ..v4("rail2")
                },
            ],
        );
        fixture.ipam.match_master_subnet = true;
        assert!(
            fixture
                .select()
                .unwrap_err()
                .to_string()
                .ends_with("filterPoolCandidatesByPfSubnet: podNetNamespace is empty")
        );
        fixture.master = Some(Ok(MasterInterface {
            pf_name: "ens1f0".into(),
            addresses: vec!["10.1.0.2".parse().unwrap()],
        }));
        assert_eq!(pools_of(&fixture.select().unwrap(), 0, 0), vec!["rail2"]);
        fixture.master = Some(Ok(MasterInterface {
            pf_name: "ens1f0".into(),
            addresses: vec!["192.168.0.2".parse().unwrap()],
        }));
        assert!(fixture.select().unwrap_err().to_string().contains(
            "filterPoolCandidatesByPfSubnet: the ippool's subnet \"10.0.0.0/24\" not found on pod's PF \"ens1f0\""
        ));
    }

    #[test]
    fn subnet_annotation_yields_an_auto_pool_request() {
        let fixture = Fixture::new(
            pod(&[(
                annotations::ANNO_SUBNET,
                r#"{"ipv4":["subnet-v4"],"ipv6":["subnet-v6"]}"#,
            )]),
            vec![],
        );
        let CandidatePlan::AutoPool(request) = select_candidates(&fixture.ctx()).unwrap() else {
            panic!("expected an auto pool request");
        };
        assert_eq!(request.ipv4_subnet.as_deref(), Some("subnet-v4"));
        assert_eq!(request.ipv6_subnet.as_deref(), Some("subnet-v6"));
        assert_eq!(request.desired_ip_number(3), Ok(3));
        let candidates = request.candidates(Some("auto4-web-eth0-d"), None);
        assert_eq!(candidates.source, CandidateSource::SubnetAutoPool);
        assert_eq!(candidates.pool_names(), vec!["auto4-web-eth0-d"]);

        let mut disabled = Fixture::new(
            pod(&[(annotations::ANNO_SUBNET, r#"{"ipv4":["subnet-v4"]}"#)]),
            vec![],
        );
        disabled.settings.enable_auto_pool_for_application = false;
        assert_eq!(
            select_candidates(&disabled.ctx()).unwrap_err(),
            SelectionError::SubnetAnnotationWithoutAutoPool
        );

        let mut orphan = Fixture::new(
            pod(&[(annotations::ANNO_SUBNET, r#"{"ipv4":["subnet-v4"]}"#)]),
            vec![],
        );
        orphan.pod.top_controller =
            AppRef::from_api_version("v1", "Pod", "default", "web", "uid-1");
        assert_eq!(
            select_candidates(&orphan.ctx()).unwrap_err().to_string(),
            "failed to get IPPool candidates from Subnet: SpiderSubnet feature doesn't support no-controller pod"
        );
    }

    #[test]
    fn auto_pool_size_follows_the_ip_number_annotation() {
        let request = |ip_number, controller: AppRef| AutoPoolRequest {
            nic: "eth0".into(),
            clean_gateway: false,
            ipv4_subnet: Some("s".into()),
            ipv6_subnet: None,
            ip_number,
            reclaim: true,
            controller,
        };
        let deployment = AppRef::from_api_version("apps/v1", "Deployment", "d", "web", "u");
        let clone_set =
            AppRef::from_api_version("apps.kruise.io/v1alpha1", "CloneSet", "d", "c", "u");
        assert_eq!(
            request(Some(PoolIpNumber::Flexible(2)), deployment.clone()).desired_ip_number(3),
            Ok(5)
        );
        assert_eq!(
            request(Some(PoolIpNumber::Fixed(7)), deployment.clone()).desired_ip_number(3),
            Ok(7)
        );
        assert_eq!(request(None, deployment).desired_ip_number(3), Ok(3));
        assert_eq!(
            request(Some(PoolIpNumber::Flexible(2)), clone_set.clone()).desired_ip_number(3),
            Ok(2)
        );
        assert_eq!(
            request(None, clone_set)
                .desired_ip_number(3)
                .unwrap_err()
                .to_string(),
            "failed to get IPPool candidates from Subnet: CloneSet/d/c only supports fixed auto-created IPPool IP Number"
        );
    }

    #[test]
    fn candidate_exhaustion_aggregates_pool_errors() {
        let error = SelectionError::CandidateExhausted {
            version: IpVersion::V4,
            nic: "eth0".into(),
            pools: vec!["a".into(), "b".into()],
            errors: vec![
                "all IP addresses used out".into(),
                "all IP addresses used out".into(),
            ],
        };
        assert_eq!(
            error.to_string(),
            "failed to allocate any IPv4 IP address to NIC eth0 from IPPools [a b]: all IP addresses used out"
        );
        assert_eq!(aggregate(&["x".into(), "y".into(), "x".into()]), "[x, y]");
    }
}
