//! Shared helpers of the auto-pool, GC and metrics suites: subnets, workloads, the auto pools of
//! a workload, and a test stand-in for the CNI plugin that allocates and releases addresses in a
//! pool with compare-and-swap on its status (exactly the write the plugin makes) and writes the
//! pod's SpiderEndpoint.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::{SpiderEndpoint, SpiderIPPool, SpiderSubnet};
#[allow(unused_imports)]
pub use spiderpool_e2e::metric;
use spiderpool_e2e::{unique_name, wait_for};

pub const TIMEOUT: Duration = Duration::from_secs(60);
pub const LABEL_APP_NAME: &str = "ipam.spidernet.io/owner-application-name";
pub const LABEL_APP_NAMESPACE: &str = "ipam.spidernet.io/owner-application-namespace";
pub const LABEL_APP_KIND: &str = "ipam.spidernet.io/owner-application-kind";
pub const LABEL_APP_UID: &str = "ipam.spidernet.io/owner-application-uid";
pub const ANNO_SUBNETS: &str = "ipam.spidernet.io/subnets";
pub const ANNO_SUBNET: &str = "ipam.spidernet.io/subnet";
pub const ANNO_IP_NUMBER: &str = "ipam.spidernet.io/ippool-ip-number";
pub const ANNO_RECLAIM: &str = "ipam.spidernet.io/ippool-reclaim";

/// A second octet no other test of this process uses, for a private `10.<octet>.0.0/16` (and
/// `fd00:<octet>::/64`), so parallel tests never share addresses.
pub fn unique_octet() -> u8 {
    use rand::Rng;
    use std::sync::Mutex;
    static USED: Mutex<BTreeSet<u8>> = Mutex::new(BTreeSet::new());
    let mut used = USED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut rng = rand::rng();
    loop {
        let octet = rng.random_range(20..=250u8);
        if used.insert(octet) {
            return octet;
        }
    }
}

/// Creates a SpiderSubnet and returns its name.
pub async fn create_subnet(client: &Client, prefix: &str, spec: Value) -> anyhow::Result<String> {
    let name = unique_name(prefix);
    let subnet: SpiderSubnet = serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderSubnet",
        "metadata": {"name": name},
        "spec": spec,
    }))?;
    Api::<SpiderSubnet>::all(client.clone())
        .create(&PostParams::default(), &subnet)
        .await
        .with_context(|| format!("creating SpiderSubnet {name}"))?;
    Ok(name)
}

pub async fn get_subnet(client: &Client, name: &str) -> anyhow::Result<SpiderSubnet> {
    Ok(Api::<SpiderSubnet>::all(client.clone()).get(name).await?)
}

/// `(controlledIPPools as pool -> ips, allocatedIPCount, totalIPCount)` of a subnet.
pub async fn subnet_state(
    client: &Client,
    name: &str,
) -> anyhow::Result<(BTreeMap<String, Vec<String>>, i64, i64)> {
    let subnet = get_subnet(client, name).await?;
    let status = subnet.status.unwrap_or_default();
    let pools = status
        .controlled_pools()?
        .into_iter()
        .map(|(pool, entry)| (pool, entry.ips))
        .collect();
    Ok((
        pools,
        status.allocated_ip_count.unwrap_or(-1),
        status.total_ip_count.unwrap_or(-1),
    ))
}

/// A Deployment with the given pod-template annotations (its pods never run: no kubelet).
pub fn deployment(name: &str, replicas: i32, annotations: &[(&str, String)]) -> Deployment {
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "c", "image": "registry.invalid/pause:1"}]},
            },
        },
    }))
    .unwrap_or_default()
}

pub async fn create_deployment(
    client: &Client,
    namespace: &str,
    deployment: &Deployment,
) -> anyhow::Result<Deployment> {
    Ok(Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), deployment)
        .await?)
}

pub async fn scale_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    replicas: i32,
) -> anyhow::Result<()> {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": replicas}})),
        )
        .await?;
    Ok(())
}

/// A single-NIC `subnet` annotation value.
pub fn subnet_annotation(v4: Option<&str>, v6: Option<&str>) -> String {
    let mut value = serde_json::Map::new();
    if let Some(v4) = v4 {
        value.insert("ipv4".into(), json!([v4]));
    }
    if let Some(v6) = v6 {
        value.insert("ipv6".into(), json!([v6]));
    }
    Value::Object(value).to_string()
}

/// The auto pools of a workload (by kind, namespace and name labels).
pub async fn app_pools(
    client: &Client,
    kind: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<SpiderIPPool>> {
    let selector = format!(
        "{LABEL_APP_KIND}={kind},{LABEL_APP_NAMESPACE}={namespace},{LABEL_APP_NAME}={name}"
    );
    Ok(Api::<SpiderIPPool>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// Number of addresses of `spec.ips` (no excludeIPs on auto pools).
pub fn pool_size(pool: &SpiderIPPool) -> u64 {
    pool.spec
        .ips
        .iter()
        .flatten()
        .map(|range| range_size(range))
        .sum()
}

pub fn range_size(range: &str) -> u64 {
    let parse = |text: &str| text.parse::<IpAddr>().ok().map(ip_value);
    match range.split_once('-') {
        Some((start, end)) => match (parse(start), parse(end)) {
            (Some(start), Some(end)) if end >= start => (end - start + 1) as u64,
            _ => 0,
        },
        None => u64::from(parse(range).is_some()),
    }
}

pub fn ip_value(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn from_value(v6: bool, value: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(std::net::Ipv6Addr::from(value))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::from(value as u32))
    }
}

/// Every address of a list of ranges.
pub fn expand(ranges: &[String]) -> BTreeSet<u128> {
    let mut out = BTreeSet::new();
    for range in ranges {
        let (start, end) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(start), Ok(end)) = (start.parse::<IpAddr>(), end.parse::<IpAddr>()) {
            for value in ip_value(start)..=ip_value(end) {
                out.insert(value);
            }
        }
    }
    out
}

/// Waits until the workload has `count` pools and `accept` holds for them.
pub async fn wait_app_pools(
    client: &Client,
    kind: &str,
    namespace: &str,
    name: &str,
    count: usize,
    accept: impl Fn(&[SpiderIPPool]) -> bool,
) -> anyhow::Result<Vec<SpiderIPPool>> {
    wait_for(
        &format!("{count} auto pools of {kind} {namespace}/{name}"),
        TIMEOUT,
        || async {
            let pools = app_pools(client, kind, namespace, name).await?;
            let live: Vec<SpiderIPPool> = pools
                .into_iter()
                .filter(|pool| pool.metadata.deletion_timestamp.is_none())
                .collect();
            Ok((live.len() == count && accept(&live)).then_some(live))
        },
    )
    .await
}

/// Checks the subnet invariants: records never overlap, every auto pool's addresses equal its
/// record, and `allocatedIPCount` is the sum of the records.
pub async fn check_subnet_consistent(client: &Client, subnet: &str) -> anyhow::Result<()> {
    let (records, allocated, _) = subnet_state(client, subnet).await?;
    let mut seen: BTreeSet<u128> = BTreeSet::new();
    let mut sum = 0i64;
    for (pool, ips) in &records {
        let addresses = expand(ips);
        sum += addresses.len() as i64;
        if let Some(clash) = addresses.iter().find(|address| seen.contains(address)) {
            bail!("address {clash} of pool {pool} is recorded twice in subnet {subnet}");
        }
        seen.extend(addresses);
    }
    if sum != allocated {
        bail!("subnet {subnet}: allocatedIPCount {allocated} but the records hold {sum}");
    }
    let pools = Api::<SpiderIPPool>::all(client.clone())
        .list(
            &ListParams::default()
                .labels(&format!("ipam.spidernet.io/owner-spider-subnet={subnet}")),
        )
        .await?
        .items;
    for pool in pools {
        let name = pool.name_any();
        let ips = expand(&pool.spec.ips.clone().unwrap_or_default());
        match records.get(&name) {
            Some(recorded) if expand(recorded) == ips => {}
            Some(recorded) => {
                bail!("pool {name} holds {ips:?} but subnet {subnet} records {recorded:?}")
            }
            None if pool.metadata.deletion_timestamp.is_some() => {}
            None => bail!("pool {name} has no record in subnet {subnet}"),
        }
    }
    Ok(())
}

/// A Node object for pods to be bound to (no kubelet behind it).
pub async fn create_node(client: &Client, ready: bool) -> anyhow::Result<String> {
    let name = unique_name("node");
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
    }))?;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&PostParams::default(), &node).await?;
    if ready {
        let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "reason": "KubeletReady", "message": "test plays kubelet"}]}});
        nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(name)
}

/// A pod bound to `node` (never run).
pub async fn create_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    node: &str,
    extra_metadata: Value,
) -> anyhow::Result<Pod> {
    let mut metadata = json!({"name": name});
    if let (Some(metadata), Value::Object(extra)) = (metadata.as_object_mut(), extra_metadata) {
        metadata.extend(extra);
    }
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "registry.invalid/pause:1"}],
        },
    }))?;
    Ok(Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await?)
}

/// Plays kubelet: the pod runs with `address`.
pub async fn mark_running(
    client: &Client,
    namespace: &str,
    name: &str,
    address: &str,
) -> anyhow::Result<()> {
    let status =
        json!({"status": {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}]}});
    Api::<Pod>::namespaced(client.clone(), namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Deletes a pod at once (no grace, no CNI DEL).
pub async fn force_delete_pod(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .delete(name, &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The test's CNI stand-in: takes the lowest free address of `pool` for `pod` with a
/// compare-and-swap of the pool status, then writes the pod's SpiderEndpoint (with a finalizer,
/// and an owner reference to the pod unless `statefulset`). Returns the address.
pub async fn allocate(
    client: &Client,
    pool_name: &str,
    pod: &Pod,
    statefulset: bool,
) -> anyhow::Result<String> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let address = allocate_record(client, pool_name, &format!("{namespace}/{name}"), &uid).await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let pool = pools.get(pool_name).await?;
    let v6 = address.contains(':');
    let prefix = pool.spec.subnet.split('/').nth(1).unwrap_or("32");
    let mut entry = json!({"interface": "eth0", "vlan": 0});
    let family = if v6 { "ipv6" } else { "ipv4" };
    entry[family] = json!(format!("{address}/{prefix}"));
    entry[format!("{family}Pool")] = json!(pool_name);
    let mut metadata =
        json!({"name": name, "namespace": namespace, "finalizers": ["spiderpool.spidernet.io"]});
    if !statefulset {
        metadata["ownerReferences"] =
            json!([{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}]);
    }
    let endpoint: SpiderEndpoint = serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderEndpoint",
        "metadata": metadata,
        "status": {
            "current": {"uid": uid, "node": pod.spec.as_ref().and_then(|spec| spec.node_name.clone()).unwrap_or_default(), "ips": [entry]},
            "ownerControllerType": if statefulset { "StatefulSet" } else { "Pod" },
            "ownerControllerName": name,
        },
    }))?;
    let endpoints: Api<SpiderEndpoint> = Api::namespaced(client.clone(), &namespace);
    match endpoints.create(&PostParams::default(), &endpoint).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let mut existing = endpoints.get(&name).await?;
            existing.status = endpoint.status.clone();
            endpoints
                .replace(&name, &PostParams::default(), &existing)
                .await?;
        }
        Err(error) => return Err(error.into()),
    }
    Ok(address)
}

/// Only the pool record (no endpoint): the lowest free address for `holder` with `uid`.
pub async fn allocate_record(
    client: &Client,
    pool_name: &str,
    holder: &str,
    uid: &str,
) -> anyhow::Result<String> {
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    for _ in 0..50 {
        let pool = pools.get(pool_name).await?;
        let status = pool.status.clone().unwrap_or_default();
        let mut records = status.allocations()?;
        let used: BTreeSet<u128> = records
            .keys()
            .filter_map(|ip| ip.parse::<IpAddr>().ok().map(ip_value))
            .collect();
        let v6 = pool.spec.subnet.contains(':');
        let free = expand(&pool.spec.ips.clone().unwrap_or_default())
            .into_iter()
            .find(|value| !used.contains(value));
        let Some(free) = free else {
            bail!("pool {pool_name} is exhausted");
        };
        let address = from_value(v6, free).to_string();
        records.insert(
            address.clone(),
            spiderpool_api::PoolIPAllocation {
                namespaced_name: holder.to_string(),
                pod_uid: uid.to_string(),
            },
        );
        let patch = json!({
            "metadata": {"resourceVersion": pool.resource_version()},
            "status": {
                "allocatedIPs": serde_json::to_string(&records)?,
                "allocatedIPCount": records.len(),
            },
        });
        match pools
            .patch_status(pool_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(address),
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    bail!("gave up allocating in {pool_name} after 50 conflicts")
}

/// The test's CNI DEL stand-in: removes the records of `uid` from the pool.
pub async fn release_records(client: &Client, pool_name: &str, uid: &str) -> anyhow::Result<()> {
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    for _ in 0..50 {
        let pool = pools.get(pool_name).await?;
        let mut records = pool.status.clone().unwrap_or_default().allocations()?;
        records.retain(|_, record| record.pod_uid != uid);
        let encoded = if records.is_empty() {
            Value::Null
        } else {
            json!(serde_json::to_string(&records)?)
        };
        let patch = json!({
            "metadata": {"resourceVersion": pool.resource_version()},
            "status": {"allocatedIPs": encoded, "allocatedIPCount": records.len()},
        });
        match pools
            .patch_status(pool_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    bail!("gave up releasing in {pool_name} after 50 conflicts")
}

/// The addresses recorded in a pool, with their holders (`ns/name`).
pub async fn pool_records(client: &Client, pool: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let pool = Api::<SpiderIPPool>::all(client.clone()).get(pool).await?;
    Ok(pool
        .status
        .unwrap_or_default()
        .allocations()?
        .into_iter()
        .map(|(ip, record)| (ip, record.namespaced_name))
        .collect())
}

/// Events in `namespace` about the object named `name` with `reason`.
pub async fn events(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
) -> anyhow::Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|event| {
            event.involved_object.name.as_deref() == Some(name)
                && event.reason.as_deref() == Some(reason)
        })
        .collect())
}

/// Deletes a SpiderSubnet and waits until it is gone.
pub async fn delete_subnet(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<SpiderSubnet> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    wait_for(&format!("SpiderSubnet {name} deleted"), TIMEOUT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// Percentile of sorted durations.
pub fn percentile(sorted: &[Duration], percent: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Creates a manual SpiderIPPool and returns its name.
pub async fn create_pool(client: &Client, prefix: &str, spec: Value) -> anyhow::Result<String> {
    let name = unique_name(prefix);
    let pool: SpiderIPPool = serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderIPPool",
        "metadata": {"name": name},
        "spec": spec,
    }))?;
    Api::<SpiderIPPool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
        .with_context(|| format!("creating SpiderIPPool {name}"))?;
    Ok(name)
}

/// Deletes a SpiderIPPool and waits until it is gone.
pub async fn delete_pool(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<SpiderIPPool> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    wait_for(&format!("SpiderIPPool {name} deleted"), TIMEOUT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// The lines of an OpenMetrics text that mention `needle`.
pub fn metric_lines<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| !line.starts_with('#') && line.contains(needle))
        .collect()
}
