//! The process-wide caches of SpiderIPPools, SpiderSubnets and SpiderReservedIPs.
//!
//! They run on every replica (leader or not) from start to shutdown, because `/metrics` reports
//! pool and subnet usage from them on every replica. The leader's controllers read them for fast
//! paths and cross-object lookups; anything that decides an address (pre-allocation, GC releases)
//! re-reads from the API server and writes with compare-and-swap, so a lagging cache can cost a
//! retry but never a double allocation.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use spiderpool_api::{SpiderIPPool, SpiderReservedIP, SpiderSubnet};
use spiderpool_ipam::settings::ClusterSettings;

use crate::admin::{Readiness, mark_ready_when_synced};

pub const READINESS_POOLS: &str = "ippool cache";
pub const READINESS_SUBNETS: &str = "subnet cache";
pub const READINESS_RESERVED: &str = "reservedip cache";
pub const READINESS_SETTINGS: &str = "ipam settings cache";

/// Key of the settings document in the cluster settings ConfigMap (upstream's `spiderpool-conf`).
const SETTINGS_KEY: &str = "conf.yml";

/// Read handles of the three caches.
#[derive(Clone)]
pub struct IpamCache {
    pub pools: Store<SpiderIPPool>,
    pub subnets: Store<SpiderSubnet>,
    pub reserved: Store<SpiderReservedIP>,
}

impl IpamCache {
    /// Starts the three reflectors on the current runtime; they run until the process exits.
    /// Readiness conditions are set once each has listed everything.
    pub fn start(client: &Client, readiness: &Readiness) -> IpamCache {
        IpamCache {
            pools: spawn_reflector::<SpiderIPPool>(client, readiness, READINESS_POOLS),
            subnets: spawn_reflector::<SpiderSubnet>(client, readiness, READINESS_SUBNETS),
            reserved: spawn_reflector::<SpiderReservedIP>(client, readiness, READINESS_RESERVED),
        }
    }

    pub fn pool(&self, name: &str) -> Option<Arc<SpiderIPPool>> {
        self.pools.get(&reflector::ObjectRef::new(name))
    }

    pub fn subnet(&self, name: &str) -> Option<Arc<SpiderSubnet>> {
        self.subnets.get(&reflector::ObjectRef::new(name))
    }
}

fn spawn_reflector<K>(client: &Client, readiness: &Readiness, condition: &'static str) -> Store<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    readiness.set(condition, false);
    tokio::spawn(mark_ready_when_synced(
        reader.clone(),
        readiness.clone(),
        condition,
    ));
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, cache = condition, "watch error (retrying)");
                }
            })
            .await;
    });
    reader
}

/// The cluster settings ConfigMap (`conf.yml`, upstream's `spiderpool-conf`), cached.
#[derive(Clone)]
pub struct SettingsConfigMap {
    store: Store<ConfigMap>,
    namespace: String,
    name: String,
}

impl SettingsConfigMap {
    /// The settings now: the chart defaults when the ConfigMap is absent or unreadable.
    pub fn settings(&self) -> ClusterSettings {
        let reference = reflector::ObjectRef::<ConfigMap>::new(&self.name).within(&self.namespace);
        let text = self
            .store
            .get(&reference)
            .and_then(|config_map| config_map.data.as_ref()?.get(SETTINGS_KEY).cloned())
            .unwrap_or_default();
        ClusterSettings::from_yaml(&text).unwrap_or_else(|error| {
            tracing::warn!(configmap = %self.name, %error, "ignoring unreadable cluster settings");
            ClusterSettings::default()
        })
    }
}

/// Starts the reflector of the settings ConfigMap `namespace/name`.
pub fn settings_configmap(
    client: &Client,
    readiness: &Readiness,
    namespace: &str,
    name: &str,
) -> SettingsConfigMap {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let (reader, writer) = reflector::store();
    readiness.set(READINESS_SETTINGS, false);
    tokio::spawn(mark_ready_when_synced(
        reader.clone(),
        readiness.clone(),
        READINESS_SETTINGS,
    ));
    let stream = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .reflect(writer);
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::warn!(%error, "settings ConfigMap watch error (retrying)");
                }
            })
            .await;
    });
    SettingsConfigMap {
        store: reader,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}
