//! The network configuration on stdin: the fields every plugin shares, the decoded `prevResult`, and the
//! [`Context`] handed to a plugin's command handlers.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::env::{Environment, K8sArgs};
use super::error::CniError;
use super::result::CniResult;
use super::version::CniVersion;

/// Fields of the network configuration that are common to every plugin.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<serde_json::Value>,
}

/// One invocation: environment, raw stdin and the decoded common configuration.
#[derive(Debug, Clone)]
pub struct Context {
    pub env: Environment,
    pub stdin: Vec<u8>,
    pub conf: NetConf,
    pub version: CniVersion,
    /// `prevResult` decoded from whatever version the previous plugin printed.
    pub prev_result: Option<CniResult>,
}

impl Context {
    /// Decode the common configuration: code 6 when stdin is not a JSON object of the right shape,
    /// code 1 when `cniVersion` is unsupported.
    pub fn new(env: Environment, stdin: Vec<u8>) -> Result<Self, CniError> {
        let conf: NetConf = serde_json::from_slice(&stdin).map_err(|error| {
            CniError::decoding(format!("failed to parse network configuration: {error}"))
        })?;
        let version = CniVersion::parse(&conf.cni_version)?;
        let prev_result = match &conf.prev_result {
            Some(value) if !value.is_null() => Some(
                CniResult::from_json(value)
                    .map_err(|error| error.context("failed to parse prevResult"))?,
            ),
            _ => None,
        };
        Ok(Self {
            env,
            stdin,
            conf,
            version,
            prev_result,
        })
    }

    /// Decode the plugin-specific configuration from stdin (code 6 on failure).
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        serde_json::from_slice(&self.stdin).map_err(|error| {
            CniError::decoding(format!("failed to parse network configuration: {error}"))
        })
    }

    /// `CNI_NETNS`, required for ADD and CHECK.
    pub fn netns(&self) -> Result<&Path, CniError> {
        self.env.netns.as_deref().ok_or_else(|| {
            CniError::invalid_environment("required env variables [CNI_NETNS] missing")
        })
    }

    pub fn k8s(&self) -> K8sArgs {
        self.env.args.k8s()
    }

    /// The result to print when a meta-plugin has nothing of its own to add: `prevResult`, or an empty
    /// result when there is none (the version is applied when printing).
    pub fn pass_through(&self) -> CniResult {
        self.prev_result.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, ErrorCode};

    fn env() -> Environment {
        Environment {
            command: Command::Add,
            container_id: "c".into(),
            netns: Some("/var/run/netns/x".into()),
            ifname: "eth0".into(),
            args: Default::default(),
            path: vec![],
        }
    }

    #[test]
    fn prev_result_of_any_version_is_decoded() {
        let stdin = br#"{"cniVersion":"1.0.0","name":"n","type":"coordinator",
            "prevResult":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.6.168.173/16","gateway":"10.6.0.1"}],"dns":{}}}"#;
        let context = Context::new(env(), stdin.to_vec()).unwrap();
        assert_eq!(context.version, CniVersion::V1_0_0);
        let prev = context.prev_result.unwrap();
        assert_eq!(prev.ips[0].address.to_string(), "10.6.168.173/16");
    }

    #[test]
    fn bad_stdin_version_and_prev_result_have_spec_codes() {
        assert_eq!(
            Context::new(env(), b"{".to_vec()).unwrap_err().code,
            ErrorCode::DECODING_FAILURE
        );
        assert_eq!(
            Context::new(env(), br#"{"cniVersion":"0.2.0"}"#.to_vec())
                .unwrap_err()
                .code,
            ErrorCode::INCOMPATIBLE_VERSION
        );
        let bad_prev = br#"{"cniVersion":"1.0.0","prevResult":{"ips":[{"address":"x"}]}}"#;
        let error = Context::new(env(), bad_prev.to_vec()).unwrap_err();
        assert_eq!(error.code, ErrorCode::DECODING_FAILURE);
        assert!(
            error.msg.starts_with("failed to parse prevResult"),
            "{}",
            error.msg
        );
    }
}
