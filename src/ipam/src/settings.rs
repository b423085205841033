//! Cluster-wide settings: our equivalent of upstream's `spiderpool-conf` ConfigMap (`conf.yml`,
//! §9) plus the agent environment knobs the allocation path needs.
//!
//! The controller-manager reads them from the ConfigMap; the CNI plugin from the settings file
//! installed next to it (see [`crate::config::IpamConfig::settings_path`]). Keys are upstream's
//! camelCase names; absent keys take the Helm chart defaults. Unknown keys (`agent`,
//! `iaasNetworkProvider`, ...) are ignored so an upstream `conf.yml` loads unchanged.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ledger::DEFAULT_MAX_ALLOCATED_IPS;

/// Errors loading settings.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    #[error("invalid cluster settings YAML: {0}")]
    Yaml(String),
    #[error("invalid cluster settings JSON: {0}")]
    Json(String),
}

impl SettingsError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        "invalid_settings"
    }
}

/// `podResourceInject` of `conf.yml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodResourceInject {
    pub enabled: bool,
    pub namespaces_exclude: Vec<String>,
    pub namespaces_include: Vec<String>,
}

/// The cluster settings (`SpiderpoolConfigmapConfig` plus our extras).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterSettings {
    pub ipam_unix_socket_path: String,
    #[serde(rename = "enableIPv4")]
    pub enable_ipv4: bool,
    #[serde(rename = "enableIPv6")]
    pub enable_ipv6: bool,
    pub tune_sysctl_config: bool,
    pub enable_stateful_set: bool,
    #[serde(rename = "enableKubevirtStaticIP")]
    pub enable_kubevirt_static_ip: bool,
    pub enable_spider_subnet: bool,
    pub enable_auto_pool_for_application: bool,
    pub enable_clean_outdated_endpoint: bool,
    #[serde(rename = "enableIPConflictDetection")]
    pub enable_ip_conflict_detection: bool,
    pub enable_gateway_detection: bool,
    /// Extra addresses of flexible auto pools when `ipam.spidernet.io/ippool-ip-number` is absent.
    /// Read under the documented key (deliberate difference #8); upstream's Go tag is accepted too.
    #[serde(
        rename = "clusterSubnetDefaultFlexibleIPNumber",
        alias = "clusterSubnetAutoPoolDefaultRedundantIPNumber"
    )]
    pub cluster_subnet_default_flexible_ip_number: i64,
    pub enable_validating_resources_deleted_webhook: bool,
    pub pod_resource_inject: PodResourceInject,
    /// Record cap per pool (`SPIDERPOOL_IPPOOL_MAX_ALLOCATED_IPS`).
    #[serde(rename = "ipPoolMaxAllocatedIPs")]
    pub ip_pool_max_allocated_ips: i64,
    /// The Multus cluster network (`clusterNetwork` / `MULTUS_CLUSTER_NETWORK`): `ns/name` or a bare
    /// name in the spiderpool namespace. Used for the first NIC when the pod names no default network.
    pub cluster_network: Option<String>,
    /// Namespace spiderpool is installed in (`SPIDERPOOL_POD_NAMESPACE`); bare `multusName` entries and
    /// the default network without namespace refer to it.
    pub spiderpool_namespace: String,
    /// Seconds between looks for an auto-created pool (`SPIDERPOOL_WAIT_SUBNET_POOL_TIME_IN_SECOND`).
    pub wait_subnet_pool_time_in_second: i64,
    /// Looks for an auto-created pool (`SPIDERPOOL_WAIT_SUBNET_POOL_MAX_RETRIES`).
    pub wait_subnet_pool_max_retries: i64,
}

impl Default for ClusterSettings {
    /// The Helm chart defaults.
    fn default() -> ClusterSettings {
        ClusterSettings {
            ipam_unix_socket_path: crate::config::DEFAULT_IPAM_UNIX_SOCKET_PATH.to_string(),
            enable_ipv4: true,
            enable_ipv6: true,
            tune_sysctl_config: true,
            enable_stateful_set: true,
            enable_kubevirt_static_ip: true,
            enable_spider_subnet: true,
            enable_auto_pool_for_application: true,
            enable_clean_outdated_endpoint: false,
            enable_ip_conflict_detection: false,
            enable_gateway_detection: false,
            cluster_subnet_default_flexible_ip_number: 1,
            enable_validating_resources_deleted_webhook: false,
            pod_resource_inject: PodResourceInject::default(),
            ip_pool_max_allocated_ips: DEFAULT_MAX_ALLOCATED_IPS,
            cluster_network: None,
            spiderpool_namespace: "kube-system".to_string(),
            wait_subnet_pool_time_in_second: 2,
            wait_subnet_pool_max_retries: 25,
        }
    }
}

impl ClusterSettings {
    /// Parses `conf.yml` (YAML).
    pub fn from_yaml(text: &str) -> Result<ClusterSettings, SettingsError> {
        if text.trim().is_empty() {
            return Ok(ClusterSettings::default());
        }
        serde_yaml::from_str(text).map_err(|error| SettingsError::Yaml(error.to_string()))
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<ClusterSettings, SettingsError> {
        serde_json::from_str(text).map_err(|error| SettingsError::Json(error.to_string()))
    }

    /// Whether the family is enabled.
    pub fn family_enabled(&self, version: crate::ip::IpVersion) -> bool {
        match version {
            crate::ip::IpVersion::V4 => self.enable_ipv4,
            crate::ip::IpVersion::V6 => self.enable_ipv6,
        }
    }

    /// The cluster network as `namespace/name`, if set (bare names get the spiderpool namespace).
    pub fn cluster_network_namespaced(&self) -> Option<String> {
        let network = self
            .cluster_network
            .as_deref()
            .filter(|name| !name.is_empty())?;
        if network.contains('/') {
            Some(network.to_string())
        } else {
            Some(format!("{}/{}", self.spiderpool_namespace, network))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_conf_yml_loads_with_documented_key() {
        let text = r#"
ipamUnixSocketPath: /var/run/spidernet/spiderpool.sock
enableIPv4: true
enableIPv6: false
enableStatefulSet: true
enableKubevirtStaticIP: false
enableCleanOutdatedEndpoint: false
enableSpiderSubnet: true
enableAutoPoolForApplication: false
enableIPConflictDetection: true
enableGatewayDetection: false
enableValidatingResourcesDeletedWebhook: false
clusterSubnetDefaultFlexibleIPNumber: 3
tuneSysctlConfig: true
podResourceInject:
  enabled: true
  namespacesExclude: ["kube-system"]
  namespacesInclude: []
agent:
  networkResourcePlugin:
    enabled: false
"#;
        let settings = ClusterSettings::from_yaml(text).unwrap();
        assert!(settings.enable_ipv4);
        assert!(!settings.enable_ipv6);
        assert!(!settings.enable_auto_pool_for_application);
        assert!(settings.enable_ip_conflict_detection);
        assert_eq!(settings.cluster_subnet_default_flexible_ip_number, 3);
        assert_eq!(
            settings.pod_resource_inject.namespaces_exclude,
            vec!["kube-system"]
        );
        assert_eq!(settings.ip_pool_max_allocated_ips, 5000);
    }

    #[test]
    fn absent_keys_take_chart_defaults() {
        let settings = ClusterSettings::from_yaml("enableIPv6: false\n").unwrap();
        assert!(settings.enable_stateful_set);
        assert_eq!(settings.cluster_subnet_default_flexible_ip_number, 1);
        assert_eq!(settings.ip_pool_max_allocated_ips, 5000);
        assert_eq!(
            ClusterSettings::from_yaml("").unwrap(),
            ClusterSettings::default()
        );
        let json = ClusterSettings::from_json(
            r#"{"ipPoolMaxAllocatedIPs":10,"clusterSubnetAutoPoolDefaultRedundantIPNumber":0}"#,
        )
        .unwrap();
        assert_eq!(json.ip_pool_max_allocated_ips, 10);
        assert_eq!(json.cluster_subnet_default_flexible_ip_number, 0);
        assert!(ClusterSettings::from_yaml("enableIPv4: [").is_err());
    }

    #[test]
    fn cluster_network_gets_the_spiderpool_namespace() {
        let settings = ClusterSettings {
            cluster_network: Some("calico".into()),
            spiderpool_namespace: "spiderpool".into(),
            ..ClusterSettings::default()
        };
        assert_eq!(
            settings.cluster_network_namespaced().as_deref(),
            Some("spiderpool/calico")
        );
        assert_eq!(
            ClusterSettings::default().cluster_network_namespaced(),
            None
        );
    }
}
