//! The CNI error object (`{"cniVersion","code","msg","details"}`) and the spec's well-known error codes.

use std::fmt;

use serde::Serialize;

/// A CNI error code. Codes 1–99 are reserved by the CNI specification; plugins use 100 and above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// The requested `cniVersion` is not supported.
    pub const INCOMPATIBLE_VERSION: Self = Self(1);
    /// The network configuration contains a field the plugin does not support.
    pub const UNSUPPORTED_FIELD: Self = Self(2);
    /// The container is unknown or does not exist.
    pub const UNKNOWN_CONTAINER: Self = Self(3);
    /// A required `CNI_*` environment variable is missing or malformed.
    pub const INVALID_ENVIRONMENT: Self = Self(4);
    /// An I/O failure, e.g. reading stdin.
    pub const IO_FAILURE: Self = Self(5);
    /// The network configuration or a result could not be decoded.
    pub const DECODING_FAILURE: Self = Self(6);
    /// The network configuration decoded but is not valid.
    pub const INVALID_NETWORK_CONFIG: Self = Self(7);
    /// A transient failure; the runtime should retry.
    pub const TRY_AGAIN_LATER: Self = Self(11);
    /// STATUS: the plugin cannot serve ADD requests.
    pub const PLUGIN_NOT_AVAILABLE: Self = Self(50);
    /// STATUS: the plugin is available but with limited connectivity.
    pub const LIMITED_CONNECTIVITY: Self = Self(51);
    /// A generic plugin-specific failure (first plugin-reserved code).
    pub const PLUGIN_FAILURE: Self = Self(100);
    /// A plugin-specific failure while changing the network (netlink, sysctl, sockets).
    pub const NETWORK_SETUP: Self = Self(101);
    /// A plugin-specific failure: an address is already used by another host.
    pub const IP_CONFLICT: Self = Self(102);
    /// A plugin-specific failure: the gateway did not answer.
    pub const GATEWAY_UNREACHABLE: Self = Self(103);
    /// An internal error (a bug): a panic or an impossible state. Same value as the Go library's `ErrInternal`.
    pub const INTERNAL: Self = Self(999);
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An error a plugin returns to the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    #[must_use]
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::INCOMPATIBLE_VERSION, msg)
    }

    pub fn invalid_environment(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::INVALID_ENVIRONMENT, msg)
    }

    pub fn decoding(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::DECODING_FAILURE, msg)
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::INVALID_NETWORK_CONFIG, msg)
    }

    pub fn try_again_later(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::TRY_AGAIN_LATER, msg)
    }

    pub fn plugin(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::PLUGIN_FAILURE, msg)
    }

    pub fn network(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::NETWORK_SETUP, msg)
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::INTERNAL, msg)
    }

    /// Prefix the message with context, keeping code and details.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.msg = format!("{context}: {}", self.msg);
        self
    }

    /// The JSON object printed on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let wire = ErrorWire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_value(wire).unwrap_or_else(|_| serde_json::Value::Null)
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

#[derive(Serialize)]
struct ErrorWire<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: ErrorCode,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_field_order_and_omits_empty_details() {
        let error = CniError::invalid_config("bad vlanID");
        assert_eq!(
            error.to_json("1.0.0").to_string(),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"bad vlanID"}"#
        );
        let error = error.with_details("vlanID must be in range [0,4094]");
        assert_eq!(
            error.to_json("0.3.1").to_string(),
            r#"{"cniVersion":"0.3.1","code":7,"msg":"bad vlanID","details":"vlanID must be in range [0,4094]"}"#
        );
    }
}
