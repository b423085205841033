//! `explain pod`: for each NIC, the candidate sources in precedence order, every pool considered
//! with why it was taken or skipped, and what an ADD would do now; for a pod with addresses, its
//! records, pools and endpoint and whether they agree.
//!
//! Pure over what [`Inputs`] holds: the decisions are the CNI plugin's own functions
//! (`spiderpool_ipam::selection::plan_candidates`, `judge_pools`, `priority_order` and
//! `spiderpool_ipam::ledger::allocate`), so the answers are the plugin's.

use std::collections::BTreeSet;

use serde::Serialize;
use spiderpool_api::{SpiderEndpoint, SpiderIPPool, SpiderReservedIP};
use spiderpool_ipam::annotations::{
    ANNO_NS_DEFAULT_IPV4_POOL, ANNO_NS_DEFAULT_IPV6_POOL, ANNO_POD_IPPOOL, ANNO_POD_IPPOOLS,
    has_subnet_annotation, parse_pod_ippools,
};
use spiderpool_ipam::autopool::AutoPoolLabels;
use spiderpool_ipam::config::IpamConfig;
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::ledger::{AllocateError, PoolIpAllocation, allocate};
use spiderpool_ipam::pod::PodContext;
use spiderpool_ipam::pool::PoolView;
use spiderpool_ipam::range::IpSet;
use spiderpool_ipam::selection::{
    CandidatePlan, Candidates, SelectionContext, SelectionError, judge_pools, plan_candidates,
    priority_order,
};
use spiderpool_ipam::settings::ClusterSettings;
use spiderpool_store::autopool::instance_labels;
use spiderpool_store::objects::{pool_allocations, reserved_set};
use spiderpool_store::pool_view;

/// What explaining a pod reads.
pub struct Inputs<'a> {
    pub context: &'a PodContext,
    pub endpoint: Option<&'a SpiderEndpoint>,
    pub pools: &'a [SpiderIPPool],
    pub reserved: &'a [SpiderReservedIP],
    pub settings: &'a ClusterSettings,
    /// NICs asked for on the command line (eth0 and the NICs the pod's annotations and endpoint
    /// name are always explained).
    pub extra_nics: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct PodExplanation {
    pub pod: String,
    pub uid: String,
    pub node: String,
    /// `Kind namespace/name` of the top controller.
    pub controller: String,
    pub nics: Vec<NicExplanation>,
    /// Present when the pod has a SpiderEndpoint.
    pub addresses: Option<AddressCheck>,
}

#[derive(Debug, Serialize)]
pub struct NicExplanation {
    pub nic: String,
    /// Every source in precedence order; the first that applies decides.
    pub sources: Vec<SourceLine>,
    pub families: Vec<FamilyExplanation>,
    /// What an ADD of this NIC would do now.
    pub add: String,
}

#[derive(Debug, Serialize)]
pub struct SourceLine {
    pub source: &'static str,
    pub applies: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct FamilyExplanation {
    pub ip_version: u8,
    pub pools: Vec<PoolLine>,
    /// The candidates left, in the order they are tried.
    pub order: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PoolLine {
    pub pool: String,
    /// `taken`, `candidate` (tried after the one taken), or `skipped`.
    pub verdict: &'static str,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct AddressCheck {
    pub endpoint_uid: String,
    pub agree: bool,
    pub records: Vec<RecordLine>,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RecordLine {
    pub nic: String,
    pub address: String,
    pub pool: String,
    /// The pool's record of the address: `namespace/name (uid)`, or `none`.
    pub record: String,
}

const SOURCES: [&str; 6] = [
    "SpiderSubnet auto pool (ipam.spidernet.io/subnets, ipam.spidernet.io/subnet)",
    "pod annotation ipam.spidernet.io/ippools",
    "pod annotation ipam.spidernet.io/ippool",
    "namespace default pools (ipam.spidernet.io/default-ipv4-ippool, -ipv6-)",
    "CNI network configuration default pools",
    "cluster default pools (spec.default: true)",
];

pub fn explain(inputs: &Inputs<'_>) -> PodExplanation {
    let context = inputs.context;
    let views: Vec<PoolView> = inputs.pools.iter().map(pool_view).collect();
    let nics = nics_to_explain(inputs);
    let controller = &context.top_controller;
    PodExplanation {
        pod: context.namespaced_name(),
        uid: context.uid.clone(),
        node: context.node_name.clone(),
        controller: format!(
            "{} {}/{}",
            controller.kind, controller.namespace, controller.name
        ),
        nics: nics
            .iter()
            .map(|nic| explain_nic(inputs, &views, nic))
            .collect(),
        addresses: inputs
            .endpoint
            .map(|endpoint| check_addresses(inputs, endpoint)),
    }
}

fn nics_to_explain(inputs: &Inputs<'_>) -> Vec<String> {
    let mut nics = vec!["eth0".to_string()];
    let mut add = |nic: &str| {
        if !nic.is_empty() && !nics.iter().any(|known| known == nic) {
            nics.push(nic.to_string());
        }
    };
    if let Some(items) = inputs
        .context
        .annotations
        .get(ANNO_POD_IPPOOLS)
        .and_then(|value| parse_pod_ippools(value).ok())
    {
        for item in items {
            add(&item.interface);
        }
    }
    for entry in endpoint_entries(inputs.endpoint) {
        add(&entry.nic);
    }
    for nic in inputs.extra_nics {
        add(nic);
    }
    nics
}

fn endpoint_entries(
    endpoint: Option<&SpiderEndpoint>,
) -> impl Iterator<Item = &spiderpool_api::IPAllocationDetail> {
    endpoint
        .and_then(|endpoint| endpoint.status.as_ref())
        .map(|status| status.current.ips.iter())
        .into_iter()
        .flatten()
}

fn sources(inputs: &Inputs<'_>, views: &[PoolView]) -> [(bool, String); 6] {
    let annotations = &inputs.context.annotations;
    let namespace_annotations = &inputs.context.namespace_annotations;
    let settings = inputs.settings;
    let subnet = settings.enable_spider_subnet && has_subnet_annotation(annotations);
    let namespace_default = [ANNO_NS_DEFAULT_IPV4_POOL, ANNO_NS_DEFAULT_IPV6_POOL]
        .iter()
        .filter_map(|key| {
            namespace_annotations
                .get(*key)
                .map(|value| format!("{key}={value}"))
        })
        .collect::<Vec<_>>();
    let defaults: Vec<&str> = views
        .iter()
        .filter(|pool| pool.default)
        .map(|pool| pool.name.as_str())
        .collect();
    let annotation = |key: &str| annotations.get(key).cloned();
    [
        (
            subnet,
            if subnet {
                "the pod's subnet annotation".to_string()
            } else if has_subnet_annotation(annotations) {
                "annotated, but enableSpiderSubnet is off".to_string()
            } else {
                "no subnet annotation".to_string()
            },
        ),
        (
            annotation(ANNO_POD_IPPOOLS).is_some(),
            annotation(ANNO_POD_IPPOOLS).unwrap_or_else(|| "not set".into()),
        ),
        (
            annotation(ANNO_POD_IPPOOL).is_some(),
            annotation(ANNO_POD_IPPOOL).unwrap_or_else(|| "not set".into()),
        ),
        (
            !namespace_default.is_empty(),
            if namespace_default.is_empty() {
                "not set".to_string()
            } else {
                namespace_default.join(", ")
            },
        ),
        (
            false,
            "set in the node's CNI configuration, not visible from the API server".to_string(),
        ),
        (
            !defaults.is_empty(),
            if defaults.is_empty() {
                "no pool has spec.default: true".to_string()
            } else {
                defaults.join(", ")
            },
        ),
    ]
}

fn explain_nic(inputs: &Inputs<'_>, views: &[PoolView], nic: &str) -> NicExplanation {
    let ipam = IpamConfig::default();
    let context = SelectionContext {
        pod: inputs.context,
        nic,
        ipam: &ipam,
        settings: inputs.settings,
        pools: views,
        master_interface: None,
    };
    let mut deciding = true;
    let sources = SOURCES
        .iter()
        .zip(sources(inputs, views))
        .map(|(source, (applies, detail))| {
            let line = SourceLine {
                source,
                applies: applies && deciding,
                detail,
            };
            deciding &= !applies;
            line
        })
        .collect();
    let mut explanation = NicExplanation {
        nic: nic.to_string(),
        sources,
        families: Vec::new(),
        add: String::new(),
    };
    if let Some(reuse) = reused_addresses(inputs, nic) {
        explanation.add = reuse;
    }
    let candidates = match plan_candidates(&context) {
        Err(error) => {
            explanation.add = format!("fail: {error}");
            return explanation;
        }
        Ok(CandidatePlan::Pools(candidates)) => candidates,
        Ok(CandidatePlan::AutoPool(request)) => {
            let find = |subnet: Option<&String>, version| {
                subnet.and_then(|subnet| {
                    auto_pool(inputs.pools, subnet, &request, version)
                        .or_else(|| Some(format!("<auto pool of {subnet} not created yet>")))
                })
            };
            let v4 = find(request.ipv4_subnet.as_ref(), IpVersion::V4);
            let v6 = find(request.ipv6_subnet.as_ref(), IpVersion::V6);
            request.candidates(v4.as_deref(), v6.as_deref())
        }
    };
    let outcome = explain_families(inputs, &context, &candidates, nic, &mut explanation);
    if explanation.add.is_empty() {
        explanation.add = outcome;
    }
    explanation
}

/// The pool of the workload's instance for one family, found by its labels as the plugin does.
fn auto_pool(
    pools: &[SpiderIPPool],
    subnet: &str,
    request: &spiderpool_ipam::selection::AutoPoolRequest,
    version: IpVersion,
) -> Option<String> {
    let wanted = instance_labels(&AutoPoolLabels::new(
        subnet,
        &request.controller,
        &request.nic,
        version,
        request.reclaim,
    ));
    pools
        .iter()
        .find(|pool| {
            let labels = pool.metadata.labels.clone().unwrap_or_default();
            wanted
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        })
        .and_then(|pool| pool.metadata.name.clone())
}

/// An endpoint of this pod UID that holds the NIC: an ADD hands the same addresses back.
fn reused_addresses(inputs: &Inputs<'_>, nic: &str) -> Option<String> {
    let endpoint = inputs.endpoint?;
    let status = endpoint.status.as_ref()?;
    if status.current.uid != inputs.context.uid {
        return None;
    }
    let entry = status.current.ips.iter().find(|entry| entry.nic == nic)?;
    let addresses: Vec<String> = [&entry.ipv4, &entry.ipv6]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    Some(format!(
        "reuse {} (the pod's SpiderEndpoint already holds them)",
        addresses.join(", ")
    ))
}

fn explain_families(
    inputs: &Inputs<'_>,
    context: &SelectionContext<'_>,
    candidates: &Candidates,
    nic: &str,
    explanation: &mut NicExplanation,
) -> String {
    let Some(nic_candidates) = candidates.nics.iter().find(|item| item.nic == nic) else {
        return "nothing: no source names pools for this NIC".to_string();
    };
    let owner = PoolIpAllocation::new(inputs.context.namespaced_name(), &inputs.context.uid);
    let mut outcomes = Vec::new();
    for candidate in &nic_candidates.candidates {
        let version = candidate.ip_version;
        let mut family = FamilyExplanation {
            ip_version: version.number(),
            pools: Vec::new(),
            order: Vec::new(),
        };
        if !inputs.settings.family_enabled(version) {
            for pool in &candidate.pools {
                family.pools.push(PoolLine {
                    pool: pool.clone(),
                    verdict: "skipped",
                    reason: format!("family: IPv{version} is disabled (enableIPv{version})"),
                });
            }
            explanation.families.push(family);
            continue;
        }
        let mut seen = BTreeSet::new();
        for pool in &candidate.pools {
            if context.pool(pool).is_none() {
                family.pools.push(PoolLine {
                    pool: pool.clone(),
                    verdict: "skipped",
                    reason: "not found".to_string(),
                });
            } else if !seen.insert(pool.clone()) {
                family.pools.push(PoolLine {
                    pool: pool.clone(),
                    verdict: "skipped",
                    reason: "listed twice (an ADD fails: duplicate pool)".to_string(),
                });
            }
        }
        let verdicts = judge_pools(context, nic, version, &candidate.pools);
        family.order = priority_order(context, &verdicts);
        for verdict in verdicts
            .iter()
            .filter(|verdict| verdict.rejection.is_some())
        {
            family.pools.push(PoolLine {
                pool: verdict.pool.clone(),
                verdict: "skipped",
                reason: skip_reason(verdict.rejection.as_deref().unwrap_or_default()),
            });
        }
        let reserved = reserved_set(inputs.reserved, version);
        let mut taken = None;
        let mut errors = Vec::new();
        for name in &family.order {
            let Some(view) = context.pool(name) else {
                continue;
            };
            let pool = inputs
                .pools
                .iter()
                .find(|pool| pool.metadata.name.as_deref() == Some(name.as_str()));
            let (verdict, reason) = if taken.is_some() {
                (
                    "candidate",
                    "tried only if the pools before it fail".to_string(),
                )
            } else {
                match try_allocate(view, pool, &reserved, &owner, inputs.settings) {
                    Ok(address) => {
                        taken = Some(format!("allocate {address} from {name}"));
                        ("taken", address)
                    }
                    Err((error, reason)) => {
                        errors.push(error);
                        ("skipped", reason)
                    }
                }
            };
            family.pools.push(PoolLine {
                pool: name.clone(),
                verdict,
                reason,
            });
        }
        outcomes.push(match taken {
            Some(taken) => format!("IPv{version}: {taken}"),
            // The plugin's own errors for these cases.
            None if family.order.is_empty() => format!(
                "fail: {}",
                SelectionError::AllFiltered {
                    version,
                    pools: candidate.pools.clone(),
                    nic: nic.to_string(),
                    reasons: verdicts
                        .iter()
                        .filter_map(|verdict| verdict.rejection.clone())
                        .collect(),
                }
            ),
            None => format!(
                "fail: {}",
                SelectionError::CandidateExhausted {
                    version,
                    nic: nic.to_string(),
                    pools: family.order.clone(),
                    errors,
                }
            ),
        });
        explanation.families.push(family);
    }
    if outcomes.is_empty() {
        return "nothing: no enabled family has pools".to_string();
    }
    outcomes.join("; ")
}

/// The rejection in the words of the categories users look for.
fn skip_reason(rejection: &str) -> String {
    let category = if rejection.contains("disabled") {
        "disabled"
    } else if rejection.contains("terminating") {
        "terminating"
    } else if rejection.contains("expect an IPv") || rejection.contains("ipVersion") {
        "family"
    } else if rejection.contains("multus") || rejection.contains("multusName") {
        "multus name"
    } else if ["annifity", "affinity", "Node name", "Namespace name"]
        .iter()
        .any(|word| rejection.contains(word))
    {
        "affinity"
    } else {
        "filtered"
    };
    format!("{category}: {rejection}")
}

/// The address an ADD would take from the pool now, or the plugin's error and why.
fn try_allocate(
    view: &PoolView,
    pool: Option<&SpiderIPPool>,
    reserved: &IpSet,
    owner: &PoolIpAllocation,
    settings: &ClusterSettings,
) -> Result<String, (String, String)> {
    let records = match pool.map(pool_allocations).transpose() {
        Ok(records) => records.unwrap_or_default(),
        Err(error) => return Err((error.to_string(), format!("invalid: {error}"))),
    };
    let max = settings.ip_pool_max_allocated_ips;
    match allocate(view, reserved, &records, owner, max) {
        Ok(allocation) if allocation.status.is_none() => {
            Ok(format!("{} (the pod already holds it)", allocation.ip))
        }
        Ok(allocation) => Ok(format!("{} (the first free address)", allocation.ip)),
        Err(error @ AllocateError::Exhausted { .. }) => {
            let empty = IpSet::new(reserved.version());
            let reason = if allocate(view, &empty, &records, owner, max).is_ok() {
                "reserved: every free address is reserved by a SpiderReservedIP".to_string()
            } else {
                format!(
                    "exhausted: {} allocated, every other address excluded or taken",
                    records.len()
                )
            };
            Err((error.to_string(), reason))
        }
        Err(error) => Err((error.to_string(), format!("exhausted: {error}"))),
    }
}

fn check_addresses(inputs: &Inputs<'_>, endpoint: &SpiderEndpoint) -> AddressCheck {
    let status = endpoint.status.clone().unwrap_or_default();
    let mut problems = Vec::new();
    if status.current.uid != inputs.context.uid {
        problems.push(format!(
            "the endpoint belongs to pod UID {}, the pod is {}",
            status.current.uid, inputs.context.uid
        ));
    }
    let holder = inputs.context.namespaced_name();
    let mut records = Vec::new();
    for entry in &status.current.ips {
        for (address, pool_name) in [
            (&entry.ipv4, &entry.ipv4_pool),
            (&entry.ipv6, &entry.ipv6_pool),
        ] {
            let Some(address) = address else {
                continue;
            };
            let bare = address.split('/').next().unwrap_or_default().to_string();
            let pool_name = pool_name.clone().unwrap_or_default();
            let pool = inputs
                .pools
                .iter()
                .find(|pool| pool.metadata.name.as_deref() == Some(pool_name.as_str()));
            let record = match pool.map(pool_allocations) {
                None => {
                    problems.push(format!("{bare}: pool {pool_name:?} does not exist"));
                    "none".to_string()
                }
                Some(Err(error)) => {
                    problems.push(format!(
                        "{bare}: pool {pool_name} has an invalid ledger: {error}"
                    ));
                    "invalid".to_string()
                }
                Some(Ok(ledger)) => match ledger.get(&bare) {
                    None => {
                        problems.push(format!("{bare}: pool {pool_name} has no record of it"));
                        "none".to_string()
                    }
                    Some(record) => {
                        if record.pod != holder || record.pod_uid != status.current.uid {
                            problems.push(format!(
                                "{bare}: pool {pool_name} records {} ({}), the endpoint says {holder} ({})",
                                record.pod, record.pod_uid, status.current.uid
                            ));
                        }
                        format!("{} ({})", record.pod, record.pod_uid)
                    }
                },
            };
            records.push(RecordLine {
                nic: entry.nic.clone(),
                address: bare,
                pool: pool_name,
                record,
            });
        }
    }
    // Records of this pod the endpoint does not list.
    for pool in inputs.pools {
        let Ok(ledger) = pool_allocations(pool) else {
            continue;
        };
        for (address, record) in ledger.iter() {
            if record.pod_uid == inputs.context.uid
                && !records.iter().any(|line| line.address == *address)
            {
                problems.push(format!(
                    "{address}: pool {} records it for this pod, the endpoint does not list it",
                    pool.metadata.name.clone().unwrap_or_default()
                ));
            }
        }
    }
    AddressCheck {
        endpoint_uid: status.current.uid,
        agree: problems.is_empty(),
        records,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use spiderpool_ipam::pod::AppRef;

    use super::*;

    fn pool(value: serde_json::Value) -> SpiderIPPool {
        serde_json::from_value(value).expect("pool")
    }

    fn context(annotation: &str) -> PodContext {
        PodContext {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "uid-web".into(),
            node_name: "node-1".into(),
            annotations: BTreeMap::from([(ANNO_POD_IPPOOL.to_string(), annotation.to_string())]),
            top_controller: AppRef::from_api_version("v1", "Pod", "ns", "web", "uid-web"),
            ..PodContext::default()
        }
    }

    fn lines(explanation: &PodExplanation) -> Vec<(String, &'static str, String)> {
        explanation.nics[0].families[0]
            .pools
            .iter()
            .map(|line| (line.pool.clone(), line.verdict, line.reason.clone()))
            .collect()
    }

    #[test]
    fn the_first_pool_with_a_free_address_is_taken_after_the_skipped_ones() {
        let pools = [
            pool(
                json!({"metadata": {"name": "off"}, "spec": {"ipVersion": 4, "subnet": "10.0.0.0/24", "ips": ["10.0.0.1"], "disable": true}}),
            ),
            pool(
                json!({"metadata": {"name": "full"}, "spec": {"ipVersion": 4, "subnet": "10.0.0.0/24", "ips": ["10.0.0.2"]},
                "status": {"allocatedIPs": "{\"10.0.0.2\":{\"pod\":\"ns/other\",\"podUid\":\"u2\"}}", "allocatedIPCount": 1}}),
            ),
            pool(
                json!({"metadata": {"name": "good"}, "spec": {"ipVersion": 4, "subnet": "10.0.0.0/24", "ips": ["10.0.0.3-10.0.0.4"]}}),
            ),
            pool(
                json!({"metadata": {"name": "spare"}, "spec": {"ipVersion": 4, "subnet": "10.0.0.0/24", "ips": ["10.0.0.5"]}}),
            ),
        ];
        let context = context(r#"{"ipv4":["off","full","good","spare"]}"#);
        let settings = ClusterSettings::default();
        let explanation = explain(&Inputs {
            context: &context,
            endpoint: None,
            pools: &pools,
            reserved: &[],
            settings: &settings,
            extra_nics: &[],
        });
        let found = lines(&explanation);
        assert_eq!(found[0].0, "off");
        assert!(found[0].2.starts_with("disabled:"), "{found:?}");
        assert_eq!((found[1].0.as_str(), found[1].1), ("full", "skipped"));
        assert!(found[1].2.starts_with("exhausted:"), "{found:?}");
        assert_eq!((found[2].0.as_str(), found[2].1), ("good", "taken"));
        assert_eq!((found[3].0.as_str(), found[3].1), ("spare", "candidate"));
        assert_eq!(
            explanation.nics[0].add,
            "IPv4: allocate 10.0.0.3 (the first free address) from good"
        );
        assert!(explanation.addresses.is_none());
    }

    #[test]
    fn an_endpoint_address_without_its_pool_record_disagrees() {
        let pools = [pool(
            json!({"metadata": {"name": "good"}, "spec": {"ipVersion": 4, "subnet": "10.0.0.0/24", "ips": ["10.0.0.3-10.0.0.4"]}}),
        )];
        let endpoint: SpiderEndpoint = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "status": {"current": {"uid": "uid-web", "node": "node-1", "ips": [{"interface": "eth0", "ipv4": "10.0.0.3/24", "ipv4Pool": "good"}]},
                "ownerControllerType": "Pod", "ownerControllerName": "web"}
        }))
        .expect("endpoint");
        let context = context(r#"{"ipv4":["good"]}"#);
        let settings = ClusterSettings::default();
        let explanation = explain(&Inputs {
            context: &context,
            endpoint: Some(&endpoint),
            pools: &pools,
            reserved: &[],
            settings: &settings,
            extra_nics: &[],
        });
        let addresses = explanation.addresses.expect("addresses");
        assert!(!addresses.agree);
        assert_eq!(
            addresses.problems,
            vec!["10.0.0.3: pool good has no record of it"]
        );
        assert!(explanation.nics[0].add.starts_with("reuse 10.0.0.3/24"));
    }
}
