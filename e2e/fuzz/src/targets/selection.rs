//! Candidate selection for one pod: its annotations (and its namespace's), the network config's
//! default pools, the cluster settings and the pools that exist, through
//! [`spiderpool_ipam::selection::select_candidates`] as the IPAM plugin calls it; then, for every
//! candidate pool, one allocation from an empty ledger.
//!
//! Input: a JSON document `{"pod": {...}, "nic": "...", "ipam": {...}, "settings": {...},
//! "pools": [PoolView, ...]}`; anything left out takes its default (settings: the Helm chart's).

use std::collections::BTreeMap;

use serde::Deserialize;
use spiderpool_ipam::ledger::{self, PoolIpAllocation, PoolIpAllocations};
use spiderpool_ipam::pod::{AppRef, PodContext};
use spiderpool_ipam::range::IpSet;
use spiderpool_ipam::selection::{CandidatePlan, SelectionContext, select_candidates};
use spiderpool_ipam::{ClusterSettings, IpamConfig, PoolView};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Input {
    pod: Pod,
    nic: String,
    ipam: IpamConfig,
    settings: Option<ClusterSettings>,
    pools: Vec<PoolView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Pod {
    namespace: String,
    name: String,
    uid: String,
    node_name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    namespace_labels: BTreeMap<String, String>,
    namespace_annotations: BTreeMap<String, String>,
    node_labels: BTreeMap<String, String>,
    top_controller: AppRef,
}

pub fn run(data: &[u8]) {
    let Ok(input) = serde_json::from_slice::<Input>(data) else {
        return;
    };
    let pod = PodContext {
        namespace: input.pod.namespace,
        name: input.pod.name,
        uid: input.pod.uid,
        node_name: input.pod.node_name,
        labels: input.pod.labels,
        annotations: input.pod.annotations,
        namespace_labels: input.pod.namespace_labels,
        namespace_annotations: input.pod.namespace_annotations,
        node_labels: input.pod.node_labels,
        top_controller: input.pod.top_controller,
    };
    let settings = input.settings.unwrap_or_default();
    let nic = if input.nic.is_empty() {
        "eth0".to_string()
    } else {
        input.nic
    };
    let master: Result<_, String> = Err("no netns in the fuzz target".into());
    let context = SelectionContext {
        pod: &pod,
        nic: &nic,
        ipam: &input.ipam,
        settings: &settings,
        pools: &input.pools,
        master_interface: Some(&master),
    };
    match select_candidates(&context) {
        Ok(CandidatePlan::Pools(candidates)) => {
            let owner = PoolIpAllocation::new(pod.namespaced_name(), "uid-fuzz");
            for name in candidates.pool_names() {
                let Some(pool) = context.pool(name) else {
                    continue;
                };
                let Some(version) = pool.ip_version else {
                    continue;
                };
                let _ = ledger::allocate(
                    pool,
                    &IpSet::new(version),
                    &PoolIpAllocations::default(),
                    &owner,
                    settings.ip_pool_max_allocated_ips,
                );
            }
        }
        Ok(CandidatePlan::AutoPool(request)) => {
            for replicas in [0, 1, i64::MAX] {
                let _ = request.desired_ip_number(replicas);
            }
            let _ = request.candidates(
                request.ipv4_subnet.as_deref(),
                request.ipv6_subnet.as_deref(),
            );
        }
        Err(error) => {
            let _ = (error.to_string(), error.metric_label());
        }
    }
}
