//! The `CNI_*` environment: command, container id, netns, interface name, `CNI_ARGS` and `CNI_PATH`.

use std::fmt;
use std::path::PathBuf;

use super::error::CniError;

/// The operation requested through `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        match text {
            "ADD" => Ok(Self::Add),
            "DEL" => Ok(Self::Del),
            "CHECK" => Ok(Self::Check),
            "VERSION" => Ok(Self::Version),
            "STATUS" => Ok(Self::Status),
            "GC" => Ok(Self::Gc),
            other => Err(CniError::invalid_environment(format!(
                "unknown CNI_COMMAND: {other}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Version => "VERSION",
            Self::Status => "STATUS",
            Self::Gc => "GC",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(text: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        for item in text.split(';').filter(|item| !item.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(CniError::invalid_environment(format!(
                    "ARGS: invalid pair {item:?}"
                )));
            };
            pairs.push((key.to_string(), value.to_string()));
        }
        Ok(Self { pairs })
    }

    /// The value of `key` (the last one if repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// `IgnoreUnknown=1|true` (case-insensitive, as the Go library's `UnmarshallableBool`).
    pub fn ignore_unknown(&self) -> bool {
        self.get("IgnoreUnknown")
            .is_some_and(|value| value == "1" || value.eq_ignore_ascii_case("true"))
    }

    /// Fail on keys outside `known` unless `IgnoreUnknown` is set, like the Go library's `LoadArgs`.
    pub fn check_known(&self, known: &[&str]) -> Result<(), CniError> {
        if self.ignore_unknown() {
            return Ok(());
        }
        let unknown: Vec<String> = self
            .pairs
            .iter()
            .filter(|(key, _)| key != "IgnoreUnknown" && !known.contains(&key.as_str()))
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(CniError::invalid_environment(format!(
                "ARGS: unknown args {unknown:?}"
            )))
        }
    }

    /// The Kubernetes keys every runtime (kubelet/CRI, Multus) passes.
    pub fn k8s(&self) -> K8sArgs {
        let value = |key: &str| {
            self.get(key)
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        K8sArgs {
            pod_namespace: value("K8S_POD_NAMESPACE"),
            pod_name: value("K8S_POD_NAME"),
            pod_uid: value("K8S_POD_UID"),
            infra_container_id: value("K8S_POD_INFRA_CONTAINER_ID"),
        }
    }
}

/// Keys of [`K8sArgs`] plus `IP` (parsed and unused upstream), for [`CniArgs::check_known`].
pub const K8S_ARG_KEYS: &[&str] = &[
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_UID",
    "K8S_POD_INFRA_CONTAINER_ID",
    "IP",
];

/// Pod identity from `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub infra_container_id: Option<String>,
}

/// Everything the runtime passes through the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`: a path such as `/var/run/netns/<name>` or `/proc/<pid>/ns/net`.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

impl Environment {
    /// Read from the process environment.
    pub fn from_process() -> Result<Self, CniError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Read through `lookup` (tests pass a map). Validates what the command needs, like the Go `skel`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let get = |key: &str| lookup(key).filter(|value| !value.is_empty());
        let command = match get("CNI_COMMAND") {
            Some(command) => Command::parse(&command)?,
            None => {
                return Err(CniError::invalid_environment(
                    "required env variables [CNI_COMMAND] missing",
                ));
            }
        };
        let required: &[&str] = match command {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Version | Command::Status | Command::Gc => &[],
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|key| get(key).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::invalid_environment(format!(
                "required env variables [{}] missing",
                missing.join(" ")
            )));
        }
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        if !container_id.is_empty() {
            validate_container_id(&container_id)?;
        }
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if !ifname.is_empty() {
            validate_interface_name(&ifname).map_err(|msg| {
                CniError::invalid_environment(format!("invalid CNI_IFNAME {ifname:?}: {msg}"))
            })?;
        }
        let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        let path = get("CNI_PATH")
            .map(|paths| {
                paths
                    .split(':')
                    .filter(|dir| !dir.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            command,
            container_id,
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname,
            args,
            path,
        })
    }
}

fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::invalid_environment(format!(
            "invalid characters in containerID {id:?}"
        )))
    }
}

/// Linux interface-name rules (`dev_valid_name`), shared with plugin config validation.
pub fn validate_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".to_string());
    }
    if name.len() > 15 {
        return Err("interface name is too long (max 15 bytes)".to_string());
    }
    if name == "." || name == ".." {
        return Err("interface name is . or ..".to_string());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("interface name contains / or : or whitespace".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    #[test]
    fn add_environment_parses_k8s_args() {
        let env = Environment::from_lookup(lookup(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/pod"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1",
            ),
        ]))
        .unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(
            env.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        let k8s = env.args.k8s();
        assert_eq!(k8s.pod_namespace.as_deref(), Some("default"));
        assert_eq!(k8s.pod_name.as_deref(), Some("web-0"));
        assert_eq!(k8s.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(k8s.infra_container_id.as_deref(), Some("abc123"));
        assert!(env.args.ignore_unknown());
    }

    #[test]
    fn missing_variables_are_listed_with_code_4() {
        let error =
            Environment::from_lookup(lookup(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]))
                .unwrap_err();
        assert_eq!(error.code, ErrorCode::INVALID_ENVIRONMENT);
        assert_eq!(
            error.msg,
            "required env variables [CNI_CONTAINERID CNI_NETNS CNI_PATH] missing"
        );
        let error = Environment::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(error.msg, "required env variables [CNI_COMMAND] missing");
    }

    #[test]
    fn del_does_not_need_a_netns_and_version_needs_nothing() {
        let env = Environment::from_lookup(lookup(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]))
        .unwrap();
        assert_eq!(env.netns, None);
        assert!(Environment::from_lookup(lookup(&[("CNI_COMMAND", "VERSION")])).is_ok());
    }

    #[test]
    fn bad_container_id_ifname_and_command_are_rejected() {
        let base = [("CNI_NETNS", "/x"), ("CNI_PATH", "/p")];
        let mut vars = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_IFNAME", "eth0"),
        ];
        vars.extend(base);
        assert!(Environment::from_lookup(lookup(&vars)).is_err());
        let mut vars = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ok"),
            ("CNI_IFNAME", "a/b"),
        ];
        vars.extend(base);
        assert!(Environment::from_lookup(lookup(&vars)).is_err());
        let error = Environment::from_lookup(lookup(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert_eq!(error.code, ErrorCode::INVALID_ENVIRONMENT);
    }

    #[test]
    fn unknown_args_fail_unless_ignore_unknown() {
        let args = CniArgs::parse("K8S_POD_NAME=a;FOO=bar").unwrap();
        let error = args.check_known(K8S_ARG_KEYS).unwrap_err();
        assert_eq!(error.msg, r#"ARGS: unknown args ["FOO=bar"]"#);
        let args = CniArgs::parse("IgnoreUnknown=true;FOO=bar").unwrap();
        assert!(args.check_known(K8S_ARG_KEYS).is_ok());
        assert!(CniArgs::parse("novalue").is_err());
    }
}
