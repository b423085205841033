//! `SpiderIPPool`: a cluster-scoped set of addresses from one CIDR that pods draw their IPs from.
//!
//! The spec says which addresses belong to the pool and which pods, namespaces, nodes and Multus
//! networks may use it; the status holds the allocation ledger (`allocatedIPs`) that the IPAM
//! path updates with compare-and-swap, plus the counters shown by `kubectl get sp`.
//! [`Route`] lives here too and is shared by subnets, endpoints and the coordinator.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a SpiderIPPool: the CIDR, the addresses handed out from it, the gateway and
/// routes given to pods, and the affinities that decide which pods may use the pool.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "spiderpool.spidernet.io",
    version = "v2beta1",
    kind = "SpiderIPPool",
    plural = "spiderippools",
    singular = "spiderippool",
    shortname = "sp",
    category = "spiderpool",
    status = "IPPoolStatus",
    derive = "PartialEq",
    doc = "SpiderIPPool is a cluster-wide pool of IP addresses taken from one subnet, from which \
           Spiderpool assigns addresses to pod interfaces.",
    printcolumn(
        name = "VERSION",
        type_ = "string",
        json_path = ".spec.ipVersion",
        description = "ipVersion"
    ),
    printcolumn(
        name = "SUBNET",
        type_ = "string",
        json_path = ".spec.subnet",
        description = "subnet"
    ),
    printcolumn(
        name = "ALLOCATED-IP-COUNT",
        type_ = "integer",
        json_path = ".status.allocatedIPCount",
        description = "allocatedIPCount"
    ),
    printcolumn(
        name = "TOTAL-IP-COUNT",
        type_ = "integer",
        json_path = ".status.totalIPCount",
        description = "totalIPCount"
    ),
    printcolumn(
        name = "DEFAULT",
        type_ = "boolean",
        json_path = ".spec.default",
        description = "default"
    ),
    printcolumn(
        name = "DISABLE",
        type_ = "boolean",
        json_path = ".spec.disable",
        description = "disable",
        priority = "10"
    ),
    printcolumn(
        name = "NodeName",
        type_ = "string",
        json_path = ".spec.nodeName",
        description = "nodeName",
        priority = "10"
    ),
    printcolumn(
        name = "MultusName",
        type_ = "string",
        json_path = ".spec.multusName",
        description = "multusName",
        priority = "10"
    ),
    printcolumn(
        name = "APP-NAMESPACE",
        type_ = "string",
        json_path = r".spec.podAffinity.matchLabels['ipam\.spidernet\.io/app\-namespace']",
        description = "AppNamespace",
        priority = "10"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::tidy)]
pub struct IPPoolSpec {
    /// IP family of the pool: 4 or 6. When left out, the admission webhook fills it in from
    /// `subnet`. Cannot be changed once set.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [4, 6]))]
    pub ip_version: Option<i64>,

    /// The subnet all addresses of the pool belong to, in CIDR notation with the host bits
    /// cleared (for example `172.18.40.0/24` or `fd00:172:18::/64`). Required; cannot be changed
    /// once set.
    pub subnet: String,

    /// Addresses the pool hands out. Each entry is one address (`172.18.40.10`) or an inclusive
    /// range of two addresses of the same family joined by a dash, without spaces
    /// (`172.18.40.10-172.18.40.20`). All addresses must lie inside `subnet`. When there is more
    /// than one entry the webhook rewrites the list sorted, de-duplicated and merged. An empty
    /// list makes a pool with no usable address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,

    /// Addresses never handed out even though they fall inside `ips`. Same syntax as `ips`.
    #[serde(rename = "excludeIPs", skip_serializing_if = "Option::is_none")]
    pub exclude_ips: Option<Vec<String>>,

    /// Default gateway given to pods, an address inside `subnet`. When it also falls inside an
    /// `ips` range it must be listed in `excludeIPs`. Left out, pods get no default route from
    /// this pool (unless inherited from the owning SpiderSubnet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,

    /// Extra routes given to pods that take an address from this pool. Destinations must be of
    /// the pool's IP family and unique; each gateway must lie inside `subnet`. A default route
    /// (`0.0.0.0/0`, `::/0`) is not allowed here: use `gateway`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,

    /// Label selector on pods: only matching pods may use the pool. For pools created
    /// automatically from a SpiderSubnet it holds the `ipam.spidernet.io/app-*` keys that name
    /// the owning workload. An empty selector is rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::atomic_label_selector)]
    pub pod_affinity: Option<LabelSelector>,

    /// Label selector on namespaces: only pods in matching namespaces may use the pool.
    /// Ignored when `namespaceName` is not empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::atomic_label_selector)]
    pub namespace_affinity: Option<LabelSelector>,

    /// Names of the namespaces whose pods may use the pool. Takes precedence over
    /// `namespaceAffinity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_name: Option<Vec<String>>,

    /// Label selector on nodes: only pods scheduled to matching nodes may use the pool.
    /// Ignored when `nodeName` is not empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::atomic_label_selector)]
    pub node_affinity: Option<LabelSelector>,

    /// Names of the nodes whose pods may use the pool. Takes precedence over `nodeAffinity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<Vec<String>>,

    /// NetworkAttachmentDefinitions whose interfaces may use the pool, each written
    /// `namespace/name`, or a bare `name` for one in Spiderpool's own namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multus_name: Option<Vec<String>>,

    /// Marks the pool as a cluster default, tried last when neither the pod, its namespace nor
    /// the CNI configuration names a pool. Defaults to false.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub default: Option<bool>,

    /// A disabled pool hands out no new address; existing allocations stay. Defaults to false.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub disable: Option<bool>,
}

/// A route given to a pod: traffic to `dst` goes through `gw`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Route {
    /// Destination network in CIDR notation, for example `10.0.0.0/8`.
    pub dst: String,

    /// Next-hop address for `dst`, of the same IP family.
    pub gw: String,
}

/// Observed state of a SpiderIPPool, written by Spiderpool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::tidy)]
pub struct IPPoolStatus {
    /// The allocation ledger: a JSON object, stored as a string, that maps each allocated
    /// address (without prefix length) to `{"pod": "<namespace>/<name>", "podUid": "<uid>"}`,
    /// keys sorted. Absent when nothing is allocated.
    #[serde(rename = "allocatedIPs", skip_serializing_if = "Option::is_none")]
    pub allocated_ips: Option<String>,

    /// Number of usable addresses: those in `ips` minus those in `excludeIPs`. Reserved
    /// addresses are still counted.
    #[serde(rename = "totalIPCount", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub total_ip_count: Option<i64>,

    /// Number of entries in `allocatedIPs`.
    #[serde(rename = "allocatedIPCount", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub allocated_ip_count: Option<i64>,
}

/// One entry of a pool's allocation ledger: who holds an address.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolIPAllocation {
    /// The holder as `namespace/name`: the pod, or for a KubeVirt VM with static IPs the
    /// VirtualMachineInstance.
    #[serde(rename = "pod")]
    pub namespaced_name: String,

    /// UID of the pod that holds the address.
    #[serde(rename = "podUid")]
    pub pod_uid: String,
}

/// The decoded form of `status.allocatedIPs`: address (without prefix length) to holder.
/// A `BTreeMap` keeps the keys sorted as plain strings, which is the order upstream writes.
pub type PoolIPAllocations = BTreeMap<String, PoolIPAllocation>;

impl IPPoolStatus {
    /// Decodes `allocatedIPs`; an absent ledger is an empty map.
    pub fn allocations(&self) -> Result<PoolIPAllocations, serde_json::Error> {
        match self.allocated_ips.as_deref() {
            None => Ok(PoolIPAllocations::new()),
            Some(encoded) => serde_json::from_str(encoded),
        }
    }

    /// Encodes `allocations` into `allocatedIPs` and sets `allocatedIPCount` to match. An empty
    /// map clears the ledger (the field is left out), as upstream does.
    pub fn set_allocations(
        &mut self,
        allocations: &PoolIPAllocations,
    ) -> Result<(), serde_json::Error> {
        self.allocated_ips = if allocations.is_empty() {
            None
        } else {
            Some(serde_json::to_string(allocations)?)
        };
        self.allocated_ip_count = Some(allocations.len() as i64);
        Ok(())
    }
}
