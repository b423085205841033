//! The process-wide caches of SpiderIPPools, SpiderSubnets and SpiderReservedIPs.
//!
//! They run on every replica (leader or not) from start to shutdown, because `/metrics` reports
//! pool and subnet usage from them and the webhooks validate against them on every replica. They
//! are the only copy of pools and subnets in the process: the IPPool and Subnet controllers use
//! them as their stores and their changes as triggers, the others read them for fast paths and
//! cross-object lookups. Anything that decides an address (pre-allocation, GC releases) re-reads
//! from the API server and writes with compare-and-swap, so a lagging cache can cost a retry but
//! never a double allocation.

use std::sync::Arc;

use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use spiderpool_api::{SpiderIPPool, SpiderReservedIP, SpiderSubnet};

use crate::runtime::admin::{Readiness, synced};
use crate::runtime::reflect::{self, Changes};

pub const READINESS_POOLS: &str = "ippool cache";
pub const READINESS_SUBNETS: &str = "subnet cache";
pub const READINESS_RESERVED: &str = "reservedip cache";

/// Read handles of the three caches.
#[derive(Clone)]
pub struct IpamCache {
    pub pools: Store<SpiderIPPool>,
    /// What `pools` just took in: the trigger of a controller that reads `pools`.
    pub pool_changes: Changes<SpiderIPPool>,
    pub subnets: Store<SpiderSubnet>,
    /// What `subnets` just took in.
    pub subnet_changes: Changes<SpiderSubnet>,
    pub reserved: Store<SpiderReservedIP>,
}

impl IpamCache {
    /// Starts the three reflectors on the current runtime; they run until the process exits.
    /// Readiness conditions are set once each has listed everything.
    pub fn start(client: &Client, readiness: &Readiness) -> IpamCache {
        let config = || watcher::Config::default().any_semantic();
        let (pools, pool_changes) = reflect::spawn_with_changes(
            Api::all(client.clone()),
            config(),
            readiness,
            READINESS_POOLS,
        );
        let (subnets, subnet_changes) = reflect::spawn_with_changes(
            Api::all(client.clone()),
            config(),
            readiness,
            READINESS_SUBNETS,
        );
        IpamCache {
            pools,
            pool_changes,
            subnets,
            subnet_changes,
            reserved: reflect::spawn(
                Api::all(client.clone()),
                config(),
                readiness,
                READINESS_RESERVED,
            ),
        }
    }

    /// Returns once all three caches have listed everything (at once when they have). A
    /// controller that derives state from the caches must not act on a partial list: missing
    /// pools would read as pools that do not exist.
    pub async fn synced(&self) {
        synced(&self.pools).await;
        synced(&self.subnets).await;
        synced(&self.reserved).await;
    }

    pub fn pool(&self, name: &str) -> Option<Arc<SpiderIPPool>> {
        self.pools.get(&reflector::ObjectRef::new(name))
    }

    pub fn subnet(&self, name: &str) -> Option<Arc<SpiderSubnet>> {
        self.subnets.get(&reflector::ObjectRef::new(name))
    }
}
