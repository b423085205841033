//! The IPAM invariants: what must hold between pools, subnets, endpoints, pods and workloads
//! once the controllers have settled, checked over a plain snapshot.
//!
//! Upstream's e2e helper `CheckIppoolSanity` is the model (every pool record has its pod, the
//! pod's SpiderEndpoint agrees, no address twice, the count matches); this covers more. The
//! checks, each with its [`Violation::kind`] label:
//!
//! | kind | what disagrees |
//! |---|---|
//! | `ledger_unreadable` | a pool's `status.allocatedIPs` does not decode |
//! | `record_pod_missing` | a record's pod does not exist (and is not a StatefulSet member kept by design) |
//! | `record_uid_mismatch` | a record's pod exists with another UID (and is not a kept StatefulSet member) |
//! | `record_outside_pool` | a recorded address is not in the pool's `spec.ips` minus `excludeIPs` |
//! | `endpoint_missing` | a record's pod has no SpiderEndpoint |
//! | `endpoint_disagrees` | the SpiderEndpoint holds another UID, or no entry for the record's address and pool |
//! | `endpoint_not_recorded` | a SpiderEndpoint entry whose pool holds no record of that address for the endpoint's UID |
//! | `duplicate_address` | one address recorded in two pools |
//! | `pool_count_mismatch` | `status.allocatedIPCount` differs from the number of records |
//! | `subnet_unreadable` | a subnet's `status.controlledIPPools` or its `spec` does not decode |
//! | `subnet_record_missing` | a pool of a subnet has no `controlledIPPools` entry |
//! | `subnet_record_mismatch` | the entry's addresses differ from the pool's |
//! | `subnet_record_without_pool` | an entry names a pool that does not exist |
//! | `subnet_count_mismatch` | `allocatedIPCount` / `totalIPCount` differ from the entries / the subnet's addresses |
//! | `auto_pool_missing` | a workload using an existing SpiderSubnet has no pool for a NIC and family |
//! | `auto_pool_size` | an auto pool's address count differs from the IP-number rule (§4.2) |
//! | `auto_pool_label` | an auto pool's reclaim label differs from the workload's annotation |
//! | `auto_pool_orphan` | a reclaimable auto pool whose workload (that UID) is gone |
//!
//! A StatefulSet member is kept by design (§5.9) when StatefulSets are enabled, its name is
//! `<statefulset>-<ordinal>`, the StatefulSet exists and the ordinal is inside its replicas: its
//! records may name a UID of a pod that is gone or being re-created, and its endpoint must then
//! hold that UID.
//!
//! **Scope.** With [`Snapshot::namespace`] set only what touches that namespace is checked: records
//! of its pods, its endpoints and workloads, pools holding one of its records or made for one of
//! its workloads, the subnets of those pools, duplicates with a holder in it. Suites running in
//! parallel each check their own namespace.
//!
//! **Stable API** (used by `kubectl spiderpool check` and the e2e suites): [`Snapshot`] and its
//! views, [`check`], [`Violation`] with [`Violation::kind`], its `Display` and its `Serialize`
//! form (`{"kind": "<label>", ...fields}`). New checks add variants; labels never change.

mod violation;

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::autopool::{WorkloadView, parse_application_key, plan_workload};
use crate::ip::{IpVersion, parse_any_ip};
use crate::ledger::{ControlledIpPools, PoolIpAllocations};
use crate::pod::{is_valid_statefulset_ordinal, statefulset_name_and_ordinal};
use crate::pool_ips::PoolIps;
use crate::range::IpSet;
use crate::settings::ClusterSettings;

pub use violation::{Violation, count_by_kind};

/// Everything the checks read, as plain views.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Check only what touches this namespace (see the module docs); `None` = the whole cluster.
    pub namespace: Option<String>,
    /// The cluster settings (StatefulSet support, the SpiderSubnet gates, the flexible IP number).
    pub settings: ClusterSettings,
    pub pools: Vec<PoolState>,
    pub subnets: Vec<SubnetState>,
    pub endpoints: Vec<EndpointState>,
    pub pods: Vec<PodState>,
    pub statefulsets: Vec<StatefulSetState>,
    /// Built-in workloads that own their pools (a Deployment's ReplicaSets and a CronJob's Jobs
    /// left out), with their replicas per §4.1.
    pub workloads: Vec<WorkloadView>,
}

/// A SpiderIPPool.
#[derive(Debug, Clone, Default)]
pub struct PoolState {
    pub name: String,
    pub ip_version: Option<IpVersion>,
    pub subnet: String,
    pub ips: Vec<String>,
    pub exclude_ips: Vec<String>,
    /// `status.allocatedIPs` as stored.
    pub allocated_ips: Option<String>,
    /// `status.allocatedIPCount` (absent = 0).
    pub allocated_ip_count: Option<i64>,
    /// The `ipam.spidernet.io/owner-spider-subnet` label.
    pub owner_subnet: Option<String>,
    /// The owner labels of an auto-created pool.
    pub auto: Option<AutoPoolOwner>,
}

/// The `ipam.spidernet.io/owner-application-*`, `interface`, `ip-version` and `ippool-reclaim`
/// labels of an auto pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoPoolOwner {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub interface: String,
    /// `IPv4` / `IPv6`.
    pub ip_version: String,
    pub reclaim: bool,
}

/// A SpiderSubnet.
#[derive(Debug, Clone, Default)]
pub struct SubnetState {
    pub name: String,
    pub subnet: String,
    pub ips: Vec<String>,
    pub exclude_ips: Vec<String>,
    /// `status.controlledIPPools` as stored.
    pub controlled_ip_pools: Option<String>,
    pub allocated_ip_count: Option<i64>,
    pub total_ip_count: Option<i64>,
}

/// A SpiderEndpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointState {
    pub namespace: String,
    pub name: String,
    /// `status.current.uid`.
    pub uid: String,
    /// One entry per address of `status.current.ips`.
    pub addresses: Vec<EndpointAddress>,
    /// Being deleted (its entries are not checked).
    pub terminating: bool,
}

/// One address of an endpoint entry.
#[derive(Debug, Clone, Default)]
pub struct EndpointAddress {
    pub interface: String,
    pub pool: String,
    /// With or without the prefix length.
    pub ip: String,
}

/// A Pod.
#[derive(Debug, Clone, Default)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A StatefulSet, for membership.
#[derive(Debug, Clone, Default)]
pub struct StatefulSetState {
    pub namespace: String,
    pub name: String,
    pub replicas: i64,
    pub ordinals_start: Option<i64>,
}

/// Every broken invariant of the snapshot, in a stable order (pools, endpoints, duplicates,
/// subnets, workloads).
pub fn check(snapshot: &Snapshot) -> Vec<Violation> {
    let index = Index::new(snapshot);
    let mut violations = Vec::new();
    let mut holders: BTreeMap<IpAddr, Vec<Holder>> = BTreeMap::new();
    for pool in &snapshot.pools {
        check_pool(&index, pool, &mut holders, &mut violations);
    }
    for endpoint in &snapshot.endpoints {
        check_endpoint(&index, endpoint, &mut violations);
    }
    for (address, holders) in holders {
        if holders.len() > 1
            && holders
                .iter()
                .any(|holder| index.in_scope(&holder.namespace))
        {
            violations.push(Violation::DuplicateAddress {
                ip: address.to_string(),
                holders: holders.into_iter().map(|holder| holder.text).collect(),
            });
        }
    }
    for subnet in &snapshot.subnets {
        check_subnet(&index, subnet, &mut violations);
    }
    for workload in &snapshot.workloads {
        if index.in_scope(&workload.app.namespace) {
            check_workload(&index, workload, &mut violations);
        }
    }
    for pool in &snapshot.pools {
        check_auto_pool_owner(&index, pool, &mut violations);
    }
    violations
}

struct Holder {
    namespace: String,
    text: String,
}

/// Lookups over the snapshot.
struct Index<'a> {
    snapshot: &'a Snapshot,
    pods: BTreeMap<(&'a str, &'a str), &'a PodState>,
    endpoints: BTreeMap<(&'a str, &'a str), &'a EndpointState>,
    statefulsets: BTreeMap<(&'a str, &'a str), &'a StatefulSetState>,
    pools: BTreeMap<&'a str, (&'a PoolState, Option<PoolIpAllocations>)>,
}

impl<'a> Index<'a> {
    fn new(snapshot: &'a Snapshot) -> Index<'a> {
        Index {
            snapshot,
            pods: snapshot
                .pods
                .iter()
                .map(|pod| ((pod.namespace.as_str(), pod.name.as_str()), pod))
                .collect(),
            endpoints: snapshot
                .endpoints
                .iter()
                .map(|endpoint| {
                    (
                        (endpoint.namespace.as_str(), endpoint.name.as_str()),
                        endpoint,
                    )
                })
                .collect(),
            statefulsets: snapshot
                .statefulsets
                .iter()
                .map(|set| ((set.namespace.as_str(), set.name.as_str()), set))
                .collect(),
            pools: snapshot
                .pools
                .iter()
                .map(|pool| {
                    let records =
                        PoolIpAllocations::parse(&pool.name, pool.allocated_ips.as_deref()).ok();
                    (pool.name.as_str(), (pool, records))
                })
                .collect(),
        }
    }

    fn in_scope(&self, namespace: &str) -> bool {
        self.snapshot
            .namespace
            .as_deref()
            .is_none_or(|scope| scope == namespace)
    }

    /// Whether a pool-level check of this pool concerns the scope.
    fn pool_in_scope(&self, pool: &PoolState) -> bool {
        if self.snapshot.namespace.is_none() {
            return true;
        }
        if pool
            .auto
            .as_ref()
            .is_some_and(|owner| self.in_scope(&owner.namespace))
        {
            return true;
        }
        self.pools
            .get(pool.name.as_str())
            .and_then(|(_, records)| records.as_ref())
            .is_some_and(|records| {
                records
                    .iter()
                    .any(|(_, record)| self.in_scope(namespace_of(&record.pod)))
            })
    }

    /// A kept StatefulSet member (§5.9).
    fn kept_statefulset_member(&self, namespace: &str, name: &str) -> bool {
        if !self.snapshot.settings.enable_stateful_set {
            return false;
        }
        let Some((parent, ordinal)) = statefulset_name_and_ordinal(name) else {
            return false;
        };
        self.statefulsets
            .get(&(namespace, parent))
            .is_some_and(|set| {
                is_valid_statefulset_ordinal(ordinal, set.replicas, set.ordinals_start)
            })
    }
}

fn namespace_of(pod: &str) -> &str {
    pod.split_once('/').map_or("", |(namespace, _)| namespace)
}

fn bare_ip(text: &str) -> Option<IpAddr> {
    parse_any_ip(text.split_once('/').map_or(text, |(address, _)| address))
}

/// The effective addresses (`spec.ips` minus `excludeIPs`), `None` when the spec does not parse.
fn effective_set(subnet: &str, ips: &[String], exclude_ips: &[String]) -> Option<IpSet> {
    PoolIps::new(subnet, ips, exclude_ips)
        .ok()
        .map(|pool| pool.to_set())
}

fn check_pool(
    index: &Index<'_>,
    pool: &PoolState,
    holders: &mut BTreeMap<IpAddr, Vec<Holder>>,
    violations: &mut Vec<Violation>,
) {
    let records = match PoolIpAllocations::parse(&pool.name, pool.allocated_ips.as_deref()) {
        Ok(records) => records,
        Err(error) => {
            if index.pool_in_scope(pool) {
                violations.push(Violation::LedgerUnreadable {
                    pool: pool.name.clone(),
                    detail: error.to_string(),
                });
            }
            return;
        }
    };
    let records_count = i64::try_from(records.len()).unwrap_or(i64::MAX);
    let allocated_ip_count = pool.allocated_ip_count.unwrap_or(0);
    if allocated_ip_count != records_count && index.pool_in_scope(pool) {
        violations.push(Violation::PoolCountMismatch {
            pool: pool.name.clone(),
            allocated_ip_count,
            records: records_count,
        });
    }
    let effective = effective_set(&pool.subnet, &pool.ips, &pool.exclude_ips);
    for (ip, record) in records.iter() {
        let namespace = namespace_of(&record.pod);
        if let Some(address) = parse_any_ip(ip) {
            holders.entry(address).or_default().push(Holder {
                namespace: namespace.to_string(),
                text: format!("{}: {} ({})", pool.name, record.pod, record.pod_uid),
            });
            if effective
                .as_ref()
                .is_some_and(|set| !set.contains(&address))
                && index.in_scope(namespace)
            {
                violations.push(Violation::RecordOutsidePool {
                    pool: pool.name.clone(),
                    ip: ip.clone(),
                    pod: record.pod.clone(),
                });
            }
        }
        if index.in_scope(namespace) {
            check_record(
                index,
                &pool.name,
                ip,
                &record.pod,
                &record.pod_uid,
                violations,
            );
        }
    }
}

/// The record's pod and its endpoint.
fn check_record(
    index: &Index<'_>,
    pool: &str,
    ip: &str,
    pod: &str,
    uid: &str,
    violations: &mut Vec<Violation>,
) {
    let (namespace, name) = pod.split_once('/').unwrap_or(("", pod));
    let kept = index.kept_statefulset_member(namespace, name);
    match index.pods.get(&(namespace, name)) {
        None if !kept => violations.push(Violation::RecordPodMissing {
            pool: pool.to_string(),
            ip: ip.to_string(),
            pod: pod.to_string(),
            uid: uid.to_string(),
        }),
        Some(live) if live.uid != uid && !kept => violations.push(Violation::RecordUidMismatch {
            pool: pool.to_string(),
            ip: ip.to_string(),
            pod: pod.to_string(),
            recorded_uid: uid.to_string(),
            pod_uid: live.uid.clone(),
        }),
        _ => {}
    }
    let Some(endpoint) = index.endpoints.get(&(namespace, name)) else {
        violations.push(Violation::EndpointMissing {
            pool: pool.to_string(),
            ip: ip.to_string(),
            pod: pod.to_string(),
            uid: uid.to_string(),
        });
        return;
    };
    let disagreement = if endpoint.uid != uid {
        Some(format!("holds uid {} instead of {uid}", endpoint.uid))
    } else {
        let address = parse_any_ip(ip);
        let listed = endpoint
            .addresses
            .iter()
            .any(|entry| entry.pool == pool && address.is_some() && bare_ip(&entry.ip) == address);
        (!listed).then(|| format!("has no entry for {ip} of this pool"))
    };
    if let Some(detail) = disagreement {
        violations.push(Violation::EndpointDisagrees {
            pool: pool.to_string(),
            ip: ip.to_string(),
            pod: pod.to_string(),
            detail,
        });
    }
}

fn check_endpoint(index: &Index<'_>, endpoint: &EndpointState, violations: &mut Vec<Violation>) {
    if endpoint.terminating || !index.in_scope(&endpoint.namespace) {
        return;
    }
    for entry in &endpoint.addresses {
        let Some(address) = bare_ip(&entry.ip) else {
            continue;
        };
        let detail = match index.pools.get(entry.pool.as_str()) {
            None => Some("the pool does not exist".to_string()),
            Some((_, None)) => None,
            Some((_, Some(records))) => {
                let record = records
                    .iter()
                    .find(|(ip, _)| parse_any_ip(ip) == Some(address))
                    .map(|(_, record)| record);
                match record {
                    None => Some("the pool holds no record of it".to_string()),
                    Some(record) if record.pod_uid != endpoint.uid => Some(format!(
                        "the pool records it for {} (uid {})",
                        record.pod, record.pod_uid
                    )),
                    Some(_) => None,
                }
            }
        };
        if let Some(detail) = detail {
            violations.push(Violation::EndpointNotRecorded {
                endpoint: format!("{}/{}", endpoint.namespace, endpoint.name),
                interface: entry.interface.clone(),
                pool: entry.pool.clone(),
                ip: address.to_string(),
                uid: endpoint.uid.clone(),
                detail,
            });
        }
    }
}

fn check_subnet(index: &Index<'_>, subnet: &SubnetState, violations: &mut Vec<Violation>) {
    let unreadable = |detail: String| Violation::SubnetUnreadable {
        subnet: subnet.name.clone(),
        detail,
    };
    let controlled =
        match ControlledIpPools::parse(&subnet.name, subnet.controlled_ip_pools.as_deref()) {
            Ok(controlled) => controlled,
            Err(error) => {
                violations.push(unreadable(error.to_string()));
                return;
            }
        };
    let members: Vec<&PoolState> = index
        .snapshot
        .pools
        .iter()
        .filter(|pool| pool.owner_subnet.as_deref() == Some(subnet.name.as_str()))
        .collect();
    let in_scope = index.snapshot.namespace.is_none()
        || members.iter().any(|pool| index.pool_in_scope(pool))
        || controlled.0.values().any(|entry| {
            entry
                .application
                .as_deref()
                .and_then(parse_application_key)
                .is_some_and(|app| index.in_scope(&app.namespace))
        });
    if !in_scope {
        return;
    }
    let Some(subnet_ips) = effective_set(&subnet.subnet, &subnet.ips, &subnet.exclude_ips) else {
        violations.push(unreadable(
            "spec.subnet, spec.ips or spec.excludeIPs does not parse".to_string(),
        ));
        return;
    };
    let version = subnet_ips.version();
    let mut expected_allocated = 0i64;
    for (pool, entry) in &controlled.0 {
        let record = IpSet::from_ranges(version, &entry.ips);
        let Ok(record) = record else {
            violations.push(unreadable(format!(
                "status.controlledIPPools[{pool}] holds ranges that do not parse: {:?}",
                entry.ips
            )));
            return;
        };
        expected_allocated = expected_allocated.saturating_add(record.count_i64());
        if !index.pools.contains_key(pool.as_str()) {
            violations.push(Violation::SubnetRecordWithoutPool {
                subnet: subnet.name.clone(),
                pool: pool.clone(),
                subnet_record: record.to_range_strings(),
            });
        }
    }
    for (field, status, expected) in [
        (
            "allocatedIPCount",
            subnet.allocated_ip_count,
            expected_allocated,
        ),
        (
            "totalIPCount",
            subnet.total_ip_count,
            subnet_ips.count_i64(),
        ),
    ] {
        let status = status.unwrap_or(0);
        if status != expected {
            violations.push(Violation::SubnetCountMismatch {
                subnet: subnet.name.clone(),
                field: field.to_string(),
                status,
                expected,
            });
        }
    }
    for pool in members {
        let Some(pool_ips) = effective_set(&pool.subnet, &pool.ips, &pool.exclude_ips) else {
            continue;
        };
        // A manual pool is recorded as its share of the subnet; an auto pool must lie inside it.
        let expected = if pool.auto.is_some() {
            pool_ips
        } else {
            pool_ips.intersect(&subnet_ips)
        };
        match controlled.0.get(&pool.name) {
            None if !expected.is_empty() => violations.push(Violation::SubnetRecordMissing {
                subnet: subnet.name.clone(),
                pool: pool.name.clone(),
                pool_ips: expected.to_range_strings(),
            }),
            None => {}
            Some(entry) => {
                let record = IpSet::from_ranges(version, &entry.ips).unwrap_or(IpSet::new(version));
                if record != expected {
                    violations.push(Violation::SubnetRecordMismatch {
                        subnet: subnet.name.clone(),
                        pool: pool.name.clone(),
                        subnet_record: record.to_range_strings(),
                        pool_ips: expected.to_range_strings(),
                    });
                }
            }
        }
    }
}

fn workload_text(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind} {namespace}/{name}")
}

fn check_workload(index: &Index<'_>, workload: &WorkloadView, violations: &mut Vec<Violation>) {
    // Wrong input is the user's error, reported by the controller as an Event; nothing to hold.
    let Ok(requests) = plan_workload(workload, &index.snapshot.settings) else {
        return;
    };
    let app = &workload.app;
    let text = workload_text(&app.kind, &app.namespace, &app.name);
    for request in requests {
        let found = index.snapshot.pools.iter().find(|pool| {
            pool.owner_subnet.as_deref() == Some(request.subnet.as_str())
                && pool.auto.as_ref().is_some_and(|owner| {
                    owner.kind == app.kind
                        && owner.namespace == app.namespace
                        && owner.name == app.name
                        && owner.uid == app.uid
                        && owner.interface == request.nic
                        && owner.ip_version == request.version.label_value()
                })
        });
        let subnet_exists = index
            .snapshot
            .subnets
            .iter()
            .any(|subnet| subnet.name == request.subnet);
        let Some(pool) = found else {
            // A workload naming a subnet that does not exist is a user error reported by the
            // controller; there is no pool to expect.
            if !subnet_exists {
                continue;
            }
            violations.push(Violation::AutoPoolMissing {
                workload: text.clone(),
                subnet: request.subnet.clone(),
                interface: request.nic.clone(),
                ip_version: request.version.label_value().to_string(),
            });
            continue;
        };
        let actual = effective_set(&pool.subnet, &pool.ips, &pool.exclude_ips)
            .map_or(0, |set| set.count_i64());
        if actual != request.desired {
            violations.push(Violation::AutoPoolSize {
                pool: pool.name.clone(),
                workload: text.clone(),
                desired: request.desired,
                actual,
            });
        }
        let reclaim = pool.auto.as_ref().is_some_and(|owner| owner.reclaim);
        if reclaim != request.reclaim {
            violations.push(Violation::AutoPoolLabel {
                pool: pool.name.clone(),
                workload: text.clone(),
                label: "ipam.spidernet.io/ippool-reclaim".to_string(),
                expected: request.reclaim.to_string(),
                actual: reclaim.to_string(),
            });
        }
    }
}

/// Kinds whose pools the controller-manager reconciles (third-party ones are the plugin's).
const BUILT_IN_WORKLOAD_KINDS: [&str; 6] = [
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

fn check_auto_pool_owner(index: &Index<'_>, pool: &PoolState, violations: &mut Vec<Violation>) {
    let Some(owner) = &pool.auto else { return };
    if !owner.reclaim
        || !index.in_scope(&owner.namespace)
        || !BUILT_IN_WORKLOAD_KINDS.contains(&owner.kind.as_str())
    {
        return;
    }
    let alive = index.snapshot.workloads.iter().any(|workload| {
        workload.app.kind == owner.kind
            && workload.app.namespace == owner.namespace
            && workload.app.name == owner.name
            && workload.app.uid == owner.uid
    });
    if !alive {
        violations.push(Violation::AutoPoolOrphan {
            pool: pool.name.clone(),
            workload: workload_text(&owner.kind, &owner.namespace, &owner.name),
            uid: owner.uid.clone(),
        });
    }
}

#[cfg(test)]
mod tests;
