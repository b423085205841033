//! What several domain modules share, started once per process by the composition root: the
//! IPAM caches ([`cache`]), the cluster settings ([`settings`]), the per-subnet locks of the
//! Subnet and auto-pool controllers ([`locks`]), the IPAM metrics the controllers count into and
//! `/metrics` computes from the caches ([`metrics`]), and whether a workload still exists
//! ([`workloads`]). Domain modules use these and never each other.

pub mod cache;
pub mod locks;
pub mod metrics;
pub mod settings;
pub mod workloads;

use std::sync::Arc;

use kube::Client;
use prometheus_client::registry::Registry;

use crate::args::Args;
use crate::runtime::admin::Readiness;
use cache::IpamCache;
use locks::SubnetLocks;
use metrics::IpamCounters;
use settings::{SettingsFn, SettingsSource};

/// Readiness of the IPAM controllers' settings cache.
pub const READINESS_SETTINGS: &str = "ipam settings cache";

/// The state the IPAM controllers share.
#[derive(Clone)]
pub struct IpamShared {
    pub client: Client,
    pub cache: IpamCache,
    /// The settings ConfigMap with the IPAM flags applied.
    pub settings: SettingsFn,
    pub locks: SubnetLocks,
    pub counters: IpamCounters,
}

impl IpamShared {
    /// Starts the settings reader and the usage metrics on `cache` (every replica, leader or
    /// not).
    pub fn start(
        client: &Client,
        args: &Args,
        cache: IpamCache,
        registry: &mut Registry,
        readiness: &Readiness,
    ) -> IpamShared {
        let counters = IpamCounters::register(registry, cache.clone());
        let source = SettingsSource::start(
            client,
            readiness,
            READINESS_SETTINGS,
            &args.namespace,
            &args.settings_configmap,
        );
        let flags = args.ipam.clone();
        IpamShared {
            client: client.clone(),
            cache,
            settings: Arc::new(move || flags.apply(source.current())),
            locks: SubnetLocks::default(),
            counters,
        }
    }
}
