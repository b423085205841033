//! `spiderpool-ipam`: the pure IPAM core of spiderpool-rs.
//!
//! Everything here is plain data in, plain data out: no Kubernetes client, no async runtime. The CNI
//! plugin and the controller-manager read objects from the API server, convert them into the views
//! defined here ([`pool::PoolView`], [`pod::PodContext`]), call these functions, and write the results
//! back (pool status with compare-and-swap, SpiderEndpoints, NADs).
//!
//! Layers, bottom up:
//! - [`ip`], [`range`], [`cidr`], [`pool_ips`]: addresses, ranges and sets without materialising
//!   addresses; upstream's parsing rules, merge output and error texts.
//! - [`ledger`]: the `status.allocatedIPs` / `status.controlledIPPools` encodings and the pure
//!   allocate / release steps.
//! - [`annotations`], [`multus`], [`labels`], [`glob`]: parsers and matchers for what users write.
//! - [`selection`]: candidate pools per NIC and family, filtering and priority order.
//! - [`routes`], [`result`]: routes and the per-NIC result the CNI result and SpiderEndpoint are built
//!   from.
//! - [`config`], [`settings`]: the IPAM section of the CNI network config and the cluster settings.
//! - [`invariants`]: what must hold between pools, subnets, endpoints, pods and workloads.
//! - [`autopool`], [`gc`]: the decisions of the auto-pool controller (pool names, sizes,
//!   pre-allocation) and of the IP garbage collector (keep or release a record).
//!
//! No feature adds I/O: the API-server side (compare-and-swap, combining, locks, endpoint and
//! auto-pool writes) is the `spiderpool-store` crate, which the CNI plugin and the
//! controller-manager share.

#![forbid(unsafe_code)]

pub mod annotations;
pub mod autopool;
pub mod cidr;
pub mod config;
pub mod gc;
pub mod glob;
mod gojson;
pub mod invariants;
pub mod ip;
pub mod labels;
pub mod ledger;
pub mod multus;
pub mod pod;
pub mod pool;
pub mod pool_ips;
pub mod range;
pub mod result;
pub mod routes;
pub mod selection;
pub mod settings;

pub use cidr::Cidr;
pub use config::IpamConfig;
pub use ip::IpVersion;
pub use ledger::{
    Allocation, PoolIpAllocation, PoolIpAllocations, PoolStatusUpdate, allocate, release,
};
pub use pod::{AppRef, PodContext};
pub use pool::PoolView;
pub use range::{IpRange, IpSet};
pub use selection::{CandidatePlan, Candidates, SelectionContext};
pub use settings::ClusterSettings;
