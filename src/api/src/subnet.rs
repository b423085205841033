//! `SpiderSubnet`: a cluster-scoped address range that IPPools of the same CIDR are carved from.
//!
//! A subnet owns the pools whose `spec.subnet` equals its own: manually created ones are adopted,
//! and per-workload pools are created from it automatically. Its status records which addresses
//! each owned pool holds (`controlledIPPools`), so two pools never receive the same address.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ippool::Route;

/// Desired state of a SpiderSubnet: the CIDR, the addresses that pools may take from it, and the
/// gateway and routes that pools inherit.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "spiderpool.spidernet.io",
    version = "v2beta1",
    kind = "SpiderSubnet",
    plural = "spidersubnets",
    singular = "spidersubnet",
    shortname = "ss",
    category = "spiderpool",
    status = "SubnetStatus",
    derive = "PartialEq",
    doc = "SpiderSubnet is a cluster-wide address range from which SpiderIPPools of the same \
           CIDR are carved, by hand or automatically per workload.",
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
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::tidy)]
pub struct SubnetSpec {
    /// IP family of the subnet: 4 or 6. When left out, the admission webhook fills it in from
    /// `subnet`. Cannot be changed once set.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [4, 6]))]
    pub ip_version: Option<i64>,

    /// The subnet in CIDR notation with the host bits cleared (for example `172.18.40.0/24`).
    /// No two SpiderSubnets may overlap. Required; cannot be changed once set.
    pub subnet: String,

    /// Addresses that pools may take from this subnet. Each entry is one address or an inclusive
    /// dash-joined range of two addresses (`172.18.40.10-172.18.40.200`), all inside `subnet`.
    /// When there is more than one entry the webhook rewrites the list sorted and merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,

    /// Addresses that no pool may take even though they fall inside `ips`. Same syntax as `ips`.
    #[serde(rename = "excludeIPs", skip_serializing_if = "Option::is_none")]
    pub exclude_ips: Option<Vec<String>>,

    /// Default gateway, an address inside `subnet`, inherited by pools that set none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,

    /// Routes inherited by pools that set none. Same rules as SpiderIPPool `spec.routes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
}

/// Observed state of a SpiderSubnet, written by Spiderpool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::tidy)]
pub struct SubnetStatus {
    /// The addresses held by each pool this subnet owns: a JSON object, stored as a string,
    /// mapping pool name to `{"ips": [<ranges>], "application": "<workload key>"}` (the
    /// `application` key only for automatically created pools), keys sorted. Absent when the
    /// subnet owns no pool.
    #[serde(rename = "controlledIPPools", skip_serializing_if = "Option::is_none")]
    pub controlled_ip_pools: Option<String>,

    /// Number of usable addresses: those in `ips` minus those in `excludeIPs`.
    #[serde(rename = "totalIPCount", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub total_ip_count: Option<i64>,

    /// Number of addresses held by the pools listed in `controlledIPPools`.
    #[serde(rename = "allocatedIPCount", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub allocated_ip_count: Option<i64>,
}

/// One entry of a subnet's `controlledIPPools`: the addresses an owned pool holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolIPPreAllocation {
    /// The pool's addresses as single addresses and dash-joined ranges. Upstream writes `null` for
    /// a pool without addresses (a Go nil slice); that reads as an empty list.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub ips: Vec<String>,

    /// For an automatically created pool, the workload it serves, written
    /// `<group>_<version>_<Kind>_<namespace>_<name>` (`<version>_<Kind>_<namespace>_<name>` for
    /// the core group), for example `apps_v1_Deployment_default_nginx`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
}

/// The decoded form of `status.controlledIPPools`: pool name to the addresses it holds, keys
/// sorted as upstream writes them.
pub type PoolIPPreAllocations = BTreeMap<String, PoolIPPreAllocation>;

impl SubnetStatus {
    /// Decodes `controlledIPPools`; an absent value is an empty map.
    pub fn controlled_pools(&self) -> Result<PoolIPPreAllocations, serde_json::Error> {
        match self.controlled_ip_pools.as_deref() {
            None => Ok(PoolIPPreAllocations::new()),
            Some(encoded) => serde_json::from_str(encoded),
        }
    }

    /// Encodes `pools` into `controlledIPPools`; an empty map leaves the field out, as upstream
    /// does. `allocatedIPCount` is not touched: counting addresses needs range arithmetic.
    pub fn set_controlled_pools(
        &mut self,
        pools: &PoolIPPreAllocations,
    ) -> Result<(), serde_json::Error> {
        self.controlled_ip_pools = if pools.is_empty() {
            None
        } else {
            Some(serde_json::to_string(pools)?)
        };
        Ok(())
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}
