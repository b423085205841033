//! The `spiderpool.spidernet.io/v2beta1` API: the six Spiderpool custom resource kinds, the
//! Multus NetworkAttachmentDefinition they generate, and the finalizer, annotation and label
//! names every component shares.
//!
//! Types are wire-compatible with upstream Spiderpool: same JSON field names, same CRD names,
//! columns, defaults and constraints. Every optional field is an `Option` that is left out when
//! `None`, so a read-modify-write sends back exactly what it read. Addresses and CIDRs are plain
//! strings here; parsing them is the job of the `spiderpool-ipam` crate. [`defaults`] fills what
//! the CRD schema and the mutating webhook default in a SpiderMultusConfig. The `crdgen` binary
//! (feature `crdgen`) writes the CRD YAML under `crds/` from these types.

#![forbid(unsafe_code)]

pub mod constants;
pub mod coordinator;
pub mod defaults;
pub mod endpoint;
pub mod ippool;
pub mod multusconfig;
pub mod nad;
pub mod reservedip;
mod schema;
pub mod subnet;
#[cfg(test)]
mod tests;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use coordinator::{
    CoordinatorMode, CoordinatorSpec, CoordinatorStatus, PodCIDRType, SpiderCoordinator,
};
pub use endpoint::{IPAllocationDetail, PodIPAllocation, SpiderEndpoint, WorkloadEndpointStatus};
pub use ippool::{
    IPPoolSpec, IPPoolStatus, PoolIPAllocation, PoolIPAllocations, Route, SpiderIPPool,
};
pub use multusconfig::{
    BondConfig, CniType, LinkState, MultusCNIConfigSpec, SpiderIBSriovCniConfig,
    SpiderIPvlanCniConfig, SpiderIpoibCniConfig, SpiderMacvlanCniConfig, SpiderMultusConfig,
    SpiderOvsCniConfig, SpiderSRIOVCniConfig, SpiderVlanCniConfig, SpiderpoolPools, Trunk,
    VlanMode,
};
pub use nad::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
pub use reservedip::{ReservedIPSpec, SpiderReservedIP};
pub use subnet::{
    PoolIPPreAllocation, PoolIPPreAllocations, SpiderSubnet, SubnetSpec, SubnetStatus,
};

/// The CRDs of the six Spiderpool kinds, in a fixed order. These are what a Spiderpool
/// installation applies; Multus's NetworkAttachmentDefinition CRD is separate
/// ([`nad::multus_crd`]).
pub fn spiderpool_crds() -> Vec<CustomResourceDefinition> {
    vec![
        SpiderIPPool::crd(),
        SpiderSubnet::crd(),
        SpiderEndpoint::crd(),
        SpiderReservedIP::crd(),
        SpiderMultusConfig::crd(),
        SpiderCoordinator::crd(),
    ]
}
