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
        let conf: NetConf = decode(&stdin)?;
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
        decode(&self.stdin)
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

/// Decodes stdin as a JSON object into `T` (code 6 on failure), naming the field at fault
/// (`ipam.default_ipv4_ippool: invalid type: ...`): serde's own message gives only a column.
/// Anything but an object is refused first, as serde would read a struct from an array.
fn decode<T: DeserializeOwned>(stdin: &[u8]) -> Result<T, CniError> {
    let failed = |detail: String| {
        CniError::decoding(format!("failed to parse network configuration: {detail}"))
    };
    let first = stdin.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(failed("expected a JSON object".to_string()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(stdin);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            failed(inner.to_string())
        } else {
            failed(format!("{path}: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| failed(error.to_string()))?;
    Ok(value)
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

    // Found by the bad-input corpus: serde's message named a column, not the field.
    #[test]
    fn a_wrongly_typed_field_is_named_by_its_path() {
        #[derive(Debug, Deserialize)]
        struct Plugin {
            #[allow(dead_code)]
            ipam: Ipam,
        }
        #[derive(Debug, Deserialize)]
        struct Ipam {
            #[allow(dead_code)]
            default_ipv4_ippool: Vec<String>,
        }
        let stdin = br#"{"cniVersion":"1.0.0","ipam":{"default_ipv4_ippool":7}}"#;
        let context = Context::new(env(), stdin.to_vec()).unwrap();
        let error = context.config::<Plugin>().unwrap_err();
        assert_eq!(error.code, ErrorCode::DECODING_FAILURE);
        assert!(
            error
                .msg
                .contains("ipam.default_ipv4_ippool: invalid type: integer `7`"),
            "{}",
            error.msg
        );
    }

    #[test]
    fn a_configuration_that_is_not_an_object_is_refused() {
        for stdin in [&b"[]"[..], b"", b"null", b"  7", b"{} trailing"] {
            let error = Context::new(env(), stdin.to_vec()).unwrap_err();
            assert_eq!(error.code, ErrorCode::DECODING_FAILURE, "{stdin:?}");
            assert!(
                error
                    .msg
                    .starts_with("failed to parse network configuration: "),
                "{}",
                error.msg
            );
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
