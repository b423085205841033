//! [`Violation`]: one broken invariant, with a stable label, a precise text and a serialized
//! form.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// One broken invariant. `Display` names the objects, the address and what disagrees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    LedgerUnreadable {
        pool: String,
        detail: String,
    },
    RecordPodMissing {
        pool: String,
        ip: String,
        pod: String,
        uid: String,
    },
    RecordUidMismatch {
        pool: String,
        ip: String,
        pod: String,
        recorded_uid: String,
        pod_uid: String,
    },
    RecordOutsidePool {
        pool: String,
        ip: String,
        pod: String,
    },
    EndpointMissing {
        pool: String,
        ip: String,
        pod: String,
        uid: String,
    },
    EndpointDisagrees {
        pool: String,
        ip: String,
        pod: String,
        detail: String,
    },
    EndpointNotRecorded {
        endpoint: String,
        interface: String,
        pool: String,
        ip: String,
        uid: String,
        detail: String,
    },
    DuplicateAddress {
        ip: String,
        /// `<pool>: <pod> (<uid>)` per record.
        holders: Vec<String>,
    },
    PoolCountMismatch {
        pool: String,
        allocated_ip_count: i64,
        records: i64,
    },
    SubnetUnreadable {
        subnet: String,
        detail: String,
    },
    SubnetRecordMissing {
        subnet: String,
        pool: String,
        pool_ips: Vec<String>,
    },
    SubnetRecordMismatch {
        subnet: String,
        pool: String,
        subnet_record: Vec<String>,
        pool_ips: Vec<String>,
    },
    SubnetRecordWithoutPool {
        subnet: String,
        pool: String,
        subnet_record: Vec<String>,
    },
    SubnetCountMismatch {
        subnet: String,
        field: String,
        status: i64,
        expected: i64,
    },
    AutoPoolMissing {
        workload: String,
        subnet: String,
        interface: String,
        ip_version: String,
    },
    AutoPoolSize {
        pool: String,
        workload: String,
        desired: i64,
        actual: i64,
    },
    AutoPoolLabel {
        pool: String,
        workload: String,
        label: String,
        expected: String,
        actual: String,
    },
    AutoPoolOrphan {
        pool: String,
        workload: String,
        uid: String,
    },
}

impl Violation {
    /// A stable label for counting and filtering (the `kind` of the serialized form).
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::LedgerUnreadable { .. } => "ledger_unreadable",
            Violation::RecordPodMissing { .. } => "record_pod_missing",
            Violation::RecordUidMismatch { .. } => "record_uid_mismatch",
            Violation::RecordOutsidePool { .. } => "record_outside_pool",
            Violation::EndpointMissing { .. } => "endpoint_missing",
            Violation::EndpointDisagrees { .. } => "endpoint_disagrees",
            Violation::EndpointNotRecorded { .. } => "endpoint_not_recorded",
            Violation::DuplicateAddress { .. } => "duplicate_address",
            Violation::PoolCountMismatch { .. } => "pool_count_mismatch",
            Violation::SubnetUnreadable { .. } => "subnet_unreadable",
            Violation::SubnetRecordMissing { .. } => "subnet_record_missing",
            Violation::SubnetRecordMismatch { .. } => "subnet_record_mismatch",
            Violation::SubnetRecordWithoutPool { .. } => "subnet_record_without_pool",
            Violation::SubnetCountMismatch { .. } => "subnet_count_mismatch",
            Violation::AutoPoolMissing { .. } => "auto_pool_missing",
            Violation::AutoPoolSize { .. } => "auto_pool_size",
            Violation::AutoPoolLabel { .. } => "auto_pool_label",
            Violation::AutoPoolOrphan { .. } => "auto_pool_orphan",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::LedgerUnreadable { pool, detail } => {
                write!(
                    f,
                    "SpiderIPPool {pool}: status.allocatedIPs does not decode: {detail}"
                )
            }
            Violation::RecordPodMissing { pool, ip, pod, uid } => write!(
                f,
                "SpiderIPPool {pool} records {ip} for pod {pod} (uid {uid}), which does not exist"
            ),
            Violation::RecordUidMismatch {
                pool,
                ip,
                pod,
                recorded_uid,
                pod_uid,
            } => write!(
                f,
                "SpiderIPPool {pool} records {ip} for pod {pod} with uid {recorded_uid}, but the pod's uid is {pod_uid}"
            ),
            Violation::RecordOutsidePool { pool, ip, pod } => write!(
                f,
                "SpiderIPPool {pool} records {ip} for pod {pod}, but {ip} is not in its spec.ips minus spec.excludeIPs"
            ),
            Violation::EndpointMissing { pool, ip, pod, uid } => write!(
                f,
                "SpiderIPPool {pool} records {ip} for pod {pod} (uid {uid}), which has no SpiderEndpoint"
            ),
            Violation::EndpointDisagrees {
                pool,
                ip,
                pod,
                detail,
            } => write!(
                f,
                "SpiderIPPool {pool} records {ip} for pod {pod}, but its SpiderEndpoint {detail}"
            ),
            Violation::EndpointNotRecorded {
                endpoint,
                interface,
                pool,
                ip,
                uid,
                detail,
            } => write!(
                f,
                "SpiderEndpoint {endpoint} (uid {uid}) holds {ip} of SpiderIPPool {pool} on {interface}, but {detail}"
            ),
            Violation::DuplicateAddress { ip, holders } => {
                write!(
                    f,
                    "address {ip} is recorded more than once: {}",
                    holders.join("; ")
                )
            }
            Violation::PoolCountMismatch {
                pool,
                allocated_ip_count,
                records,
            } => write!(
                f,
                "SpiderIPPool {pool}: status.allocatedIPCount is {allocated_ip_count} but status.allocatedIPs holds {records} records"
            ),
            Violation::SubnetUnreadable { subnet, detail } => {
                write!(f, "SpiderSubnet {subnet}: {detail}")
            }
            Violation::SubnetRecordMissing {
                subnet,
                pool,
                pool_ips,
            } => write!(
                f,
                "SpiderSubnet {subnet}: status.controlledIPPools has no entry for its SpiderIPPool {pool} (addresses {})",
                pool_ips.join(",")
            ),
            Violation::SubnetRecordMismatch {
                subnet,
                pool,
                subnet_record,
                pool_ips,
            } => write!(
                f,
                "SpiderSubnet {subnet}: status.controlledIPPools[{pool}] is [{}] but the pool's addresses are [{}]",
                subnet_record.join(","),
                pool_ips.join(",")
            ),
            Violation::SubnetRecordWithoutPool {
                subnet,
                pool,
                subnet_record,
            } => write!(
                f,
                "SpiderSubnet {subnet}: status.controlledIPPools[{pool}] holds [{}] but SpiderIPPool {pool} does not exist",
                subnet_record.join(",")
            ),
            Violation::SubnetCountMismatch {
                subnet,
                field,
                status,
                expected,
            } => write!(
                f,
                "SpiderSubnet {subnet}: status.{field} is {status} but should be {expected}"
            ),
            Violation::AutoPoolMissing {
                workload,
                subnet,
                interface,
                ip_version,
            } => write!(
                f,
                "{workload} uses SpiderSubnet {subnet} on {interface} ({ip_version}) but has no auto-created SpiderIPPool"
            ),
            Violation::AutoPoolSize {
                pool,
                workload,
                desired,
                actual,
            } => write!(
                f,
                "SpiderIPPool {pool} of {workload} has {actual} addresses but the IP-number rule asks for {desired}"
            ),
            Violation::AutoPoolLabel {
                pool,
                workload,
                label,
                expected,
                actual,
            } => write!(
                f,
                "SpiderIPPool {pool} of {workload}: label {label} is {actual:?} but should be {expected:?}"
            ),
            Violation::AutoPoolOrphan {
                pool,
                workload,
                uid,
            } => write!(
                f,
                "reclaimable SpiderIPPool {pool} belongs to {workload} (uid {uid}), which no longer exists"
            ),
        }
    }
}

/// The kinds of a list of violations with their counts, for summaries.
pub fn count_by_kind(violations: &[Violation]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for violation in violations {
        *counts.entry(violation.kind()).or_insert(0) += 1;
    }
    counts
}
