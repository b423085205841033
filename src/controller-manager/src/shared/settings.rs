//! The cluster settings: `conf.yml` of upstream's `spiderpool-conf` ConfigMap, cached by a
//! reflector and parsed on every read. One reader for the webhooks and the IPAM controllers.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use spiderpool_ipam::settings::ClusterSettings;

use crate::runtime::admin::Readiness;
use crate::runtime::reflect;

/// Key of the settings document in the ConfigMap (upstream's `spiderpool-conf`).
pub const SETTINGS_KEY: &str = "conf.yml";

/// The cluster settings in force, with the controller-manager's flags applied (re-read on every
/// reconcile).
pub type SettingsFn = Arc<dyn Fn() -> ClusterSettings + Send + Sync>;

/// The cached settings ConfigMap.
#[derive(Clone)]
pub struct SettingsSource {
    store: Store<ConfigMap>,
    namespace: String,
    name: String,
}

impl SettingsSource {
    /// Starts the reflector of the ConfigMap `namespace/name`; `condition` holds once it has
    /// listed.
    pub fn start(
        client: &Client,
        readiness: &Readiness,
        condition: &'static str,
        namespace: &str,
        name: &str,
    ) -> SettingsSource {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        SettingsSource::of(
            reflect::spawn(api, config, readiness, condition),
            namespace,
            name,
        )
    }

    /// The settings of `namespace/name` in `store`.
    pub fn of(store: Store<ConfigMap>, namespace: &str, name: &str) -> SettingsSource {
        SettingsSource {
            store,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The settings now: the chart defaults when the ConfigMap is absent or unreadable.
    pub fn current(&self) -> ClusterSettings {
        let reference = ObjectRef::<ConfigMap>::new(&self.name).within(&self.namespace);
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
