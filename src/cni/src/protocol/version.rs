//! CNI specification versions this crate speaks, and the VERSION command's answer.

use std::fmt;

use serde::Serialize;

use super::error::CniError;

/// Versions accepted in `cniVersion`, oldest first. 0.3.0–1.0.0 are upstream Spiderpool's list; 1.1.0 adds
/// the STATUS and GC commands and uses the 1.0.0 result encoding.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A supported specification version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub const LATEST: Self = Self::V1_1_0;

    pub fn parse(version: &str) -> Result<Self, CniError> {
        match version.trim() {
            "0.3.0" => Ok(Self::V0_3_0),
            "0.3.1" => Ok(Self::V0_3_1),
            "0.4.0" => Ok(Self::V0_4_0),
            "1.0.0" => Ok(Self::V1_0_0),
            "1.1.0" => Ok(Self::V1_1_0),
            other => Err(CniError::incompatible_version(format!(
                "unsupported specified CNI version {other:?}, the CNI versions supported by this plugin: [{}]",
                SUPPORTED_VERSIONS.join(" ")
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// Results of the 0.3.x/0.4.0 family carry a `version` field per IP.
    pub fn is_legacy(self) -> bool {
        self < Self::V1_0_0
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn has_status_and_gc(self) -> bool {
        self >= Self::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The VERSION command's answer.
pub fn version_info() -> serde_json::Value {
    #[derive(Serialize)]
    struct VersionInfo {
        #[serde(rename = "cniVersion")]
        cni_version: &'static str,
        #[serde(rename = "supportedVersions")]
        supported_versions: &'static [&'static str],
    }
    serde_json::to_value(VersionInfo {
        cni_version: CniVersion::LATEST.as_str(),
        supported_versions: SUPPORTED_VERSIONS,
    })
    .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn every_listed_version_parses_and_round_trips() {
        for version in SUPPORTED_VERSIONS {
            assert_eq!(
                CniVersion::parse(version).map(CniVersion::as_str),
                Ok(*version)
            );
        }
    }

    #[test]
    fn unknown_version_is_an_incompatible_version_error() {
        let error = CniVersion::parse("0.2.0").unwrap_err();
        assert_eq!(error.code, ErrorCode::INCOMPATIBLE_VERSION);
        assert!(
            error.msg.contains("0.3.0 0.3.1 0.4.0 1.0.0"),
            "{}",
            error.msg
        );
    }

    #[test]
    fn version_info_lists_supported_versions() {
        assert_eq!(
            version_info().to_string(),
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }
}
