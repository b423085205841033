//! The IPAM section of a CNI network configuration (`"ipam": {"type": "spiderpool", ...}`), one
//! serde struct shared by the NAD generator (which writes it) and the CNI plugin (which reads it).
//!
//! Field order is upstream's `IPAMConfig` (`cmd/spiderpool/cmd/cni_types.go`) so generated NADs are
//! byte-identical; every field except `type` is omitted when empty, zero or false (Go `omitempty`;
//! `type` has no `omitempty` upstream). Two optional fields of our own follow: `kubeconfig` and
//! `settings`, because our plugin talks to the API server directly instead of to an agent socket.
//! Defaults (log level, kubeconfig path, ...) are applied by accessors, never serialised.

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

/// The IPAM plugin type.
pub const IPAM_TYPE: &str = "spiderpool";
/// CNI versions the plugin supports (`SupportCNIVersions`).
pub const SUPPORTED_CNI_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// Kubeconfig used when the network config names none.
pub const DEFAULT_KUBECONFIG_PATH: &str = "/etc/cni/net.d/spiderpool.d/spiderpool.kubeconfig";
/// Cluster settings file used when the network config names none.
pub const DEFAULT_SETTINGS_PATH: &str = "/etc/cni/net.d/spiderpool.d/spiderpool.yaml";
/// Upstream's agent socket default (kept for round-trips; our plugin has no agent).
pub const DEFAULT_IPAM_UNIX_SOCKET_PATH: &str = "/var/run/spidernet/spiderpool.sock";
/// Upstream's log file default.
pub const DEFAULT_LOG_FILE_PATH: &str = "/var/log/spidernet/spiderpool.log";

/// Errors of network-config checks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error(
        "unsupported specified CNI version {0}, the CNI versions supported by Spiderpool: [0.3.0 0.3.1 0.4.0 1.0.0]"
    )]
    UnsupportedCniVersion(String),
    #[error("unsupported log level {0:?}, use one of debug, info, warn, error, fatal")]
    UnsupportedLogLevel(String),
}

impl ConfigError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ConfigError::UnsupportedCniVersion(_) => "unsupported_cni_version",
            ConfigError::UnsupportedLogLevel(_) => "unsupported_log_level",
        }
    }
}

/// `LoadNetConf`'s version check.
pub fn check_cni_version(version: &str) -> Result<(), ConfigError> {
    if SUPPORTED_CNI_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(ConfigError::UnsupportedCniVersion(version.to_string()))
    }
}

/// Plugin log levels (`logutils.ConvertLogLevel`, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Go decodes `null` into a field as "leave it at the zero value".
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The `ipam` object of a spiderpool network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub ipam_type: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub log_level: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub log_file_path: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub log_file_max_size: i64,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub log_file_max_age: i64,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub log_file_max_count: i64,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_ipv4_ippool: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_ipv6_ippool: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub clean_gateway: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_false"
    )]
    pub match_master_subnet: bool,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipam_unix_socket_path: String,
    /// Path of the kubeconfig the plugin uses (ours; see [`IpamConfig::kubeconfig_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// Path of the cluster settings file (ours; see [`IpamConfig::settings_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
}

impl IpamConfig {
    /// `{"type":"spiderpool"}` with the given default pools (what the NAD generator emits).
    pub fn spiderpool(
        default_ipv4_ippool: Vec<String>,
        default_ipv6_ippool: Vec<String>,
    ) -> IpamConfig {
        IpamConfig {
            ipam_type: IPAM_TYPE.to_string(),
            default_ipv4_ippool,
            default_ipv6_ippool,
            ..IpamConfig::default()
        }
    }

    /// The kubeconfig path, defaulted.
    pub fn kubeconfig_path(&self) -> &str {
        self.kubeconfig
            .as_deref()
            .filter(|path| !path.is_empty())
            .unwrap_or(DEFAULT_KUBECONFIG_PATH)
    }

    /// The settings file path, defaulted.
    pub fn settings_path(&self) -> &str {
        self.settings
            .as_deref()
            .filter(|path| !path.is_empty())
            .unwrap_or(DEFAULT_SETTINGS_PATH)
    }

    /// The log level, `debug` when empty; anything else unknown is an error.
    pub fn log_level(&self) -> Result<LogLevel, ConfigError> {
        if self.log_level.is_empty() {
            return Ok(LogLevel::Debug);
        }
        match self.log_level.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            "fatal" => Ok(LogLevel::Fatal),
            _ => Err(ConfigError::UnsupportedLogLevel(self.log_level.clone())),
        }
    }

    /// The log file path, defaulted.
    pub fn log_file_path(&self) -> &str {
        if self.log_file_path.is_empty() {
            DEFAULT_LOG_FILE_PATH
        } else {
            &self.log_file_path
        }
    }

    /// Max log file size in MB (100 when negative).
    pub fn log_file_max_size(&self) -> i64 {
        if self.log_file_max_size < 0 {
            100
        } else {
            self.log_file_max_size
        }
    }

    /// Max log file age in days (30 when negative).
    pub fn log_file_max_age(&self) -> i64 {
        if self.log_file_max_age < 0 {
            30
        } else {
            self.log_file_max_age
        }
    }

    /// Max number of log files (10 when negative).
    pub fn log_file_max_count(&self) -> i64 {
        if self.log_file_max_count < 0 {
            10
        } else {
            self.log_file_max_count
        }
    }

    /// The agent socket path, defaulted (unused by our plugin, kept for compatibility).
    pub fn ipam_unix_socket_path(&self) -> &str {
        if self.ipam_unix_socket_path.is_empty() {
            DEFAULT_IPAM_UNIX_SOCKET_PATH
        } else {
            &self.ipam_unix_socket_path
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let config: IpamConfig = serde_json::from_str(text).unwrap();
        serde_json::to_string(&config).unwrap()
    }

    #[test]
    fn minimal_ipam_section_round_trips_exactly() {
        assert_eq!(
            round_trip(r#"{"type":"spiderpool"}"#),
            r#"{"type":"spiderpool"}"#
        );
        assert_eq!(
            serde_json::to_string(&IpamConfig::spiderpool(vec![], vec![])).unwrap(),
            r#"{"type":"spiderpool"}"#
        );
    }

    // §3.7 item 2
    #[test]
    fn default_pools_are_emitted_in_upstream_order() {
        let text = r#"{"type":"spiderpool","default_ipv4_ippool":["v4-pool"],"default_ipv6_ippool":["v6-pool"]}"#;
        assert_eq!(round_trip(text), text);
        assert_eq!(
            serde_json::to_string(&IpamConfig::spiderpool(
                vec!["v4-pool".into()],
                vec!["v6-pool".into()]
            ))
            .unwrap(),
            text
        );
    }

    // §3.7 item 11
    #[test]
    fn match_master_subnet_follows_the_pool_lists() {
        let config = IpamConfig {
            match_master_subnet: true,
            ..IpamConfig::spiderpool(vec!["rdmarail1-*".into()], vec![])
        };
        assert_eq!(
            serde_json::to_string(&config).unwrap(),
            r#"{"type":"spiderpool","default_ipv4_ippool":["rdmarail1-*"],"match_master_subnet":true}"#
        );
    }

    #[test]
    fn every_field_round_trips_in_order() {
        let text = r#"{"type":"spiderpool","log_level":"info","log_file_path":"/tmp/x.log","log_file_max_size":5,"log_file_max_age":6,"log_file_max_count":7,"default_ipv4_ippool":["a"],"default_ipv6_ippool":["b"],"clean_gateway":true,"match_master_subnet":true,"ipam_unix_socket_path":"/run/x.sock","kubeconfig":"/k","settings":"/s"}"#;
        assert_eq!(round_trip(text), text);
    }

    #[test]
    fn defaults_are_applied_by_accessors_not_serialised() {
        let config: IpamConfig =
            serde_json::from_str(r#"{"type":"spiderpool","default_ipv4_ippool":null,"unknown":1}"#)
                .unwrap();
        assert_eq!(config.kubeconfig_path(), DEFAULT_KUBECONFIG_PATH);
        assert_eq!(config.settings_path(), DEFAULT_SETTINGS_PATH);
        assert_eq!(
            config.ipam_unix_socket_path(),
            DEFAULT_IPAM_UNIX_SOCKET_PATH
        );
        assert_eq!(config.log_level(), Ok(LogLevel::Debug));
        assert_eq!(
            serde_json::to_string(&config).unwrap(),
            r#"{"type":"spiderpool"}"#
        );
        let custom = IpamConfig {
            kubeconfig: Some("/etc/k".into()),
            ..IpamConfig::default()
        };
        assert_eq!(custom.kubeconfig_path(), "/etc/k");
    }

    // G78
    #[test]
    fn unsupported_cni_version_and_log_level_are_errors() {
        assert_eq!(
            check_cni_version("0.1.0").unwrap_err().to_string(),
            "unsupported specified CNI version 0.1.0, the CNI versions supported by Spiderpool: [0.3.0 0.3.1 0.4.0 1.0.0]"
        );
        for version in SUPPORTED_CNI_VERSIONS {
            assert!(check_cni_version(version).is_ok());
        }
        let bad = IpamConfig {
            log_level: "bad".into(),
            ..IpamConfig::default()
        };
        assert_eq!(
            bad.log_level().unwrap_err().metric_label(),
            "unsupported_log_level"
        );
        let upper = IpamConfig {
            log_level: "WARN".into(),
            ..IpamConfig::default()
        };
        assert_eq!(upper.log_level(), Ok(LogLevel::Warn));
    }
}
