//! Test harness: throw-away network namespaces, a minimal CNI runtime that runs plugin binaries through the
//! protocol (env vars + stdin) inside a test-made "host" namespace, and kernel-feature probes.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

/// Debian's reference plugins (`containernetworking-plugins`).
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails the test unless it can create network namespaces (root and iproute2). These suites run
/// as root in CI (`make test`); run elsewhere they fail rather than pass without testing.
pub fn require_netns(test: &str) {
    assert!(
        is_root(),
        "{test}: needs root to create network namespaces (run the CNI suites as root)"
    );
    assert!(
        Command::new("ip").arg("-V").output().is_ok(),
        "{test}: iproute2 (`ip`) is not installed (make deps)"
    );
}

/// Fails the test unless Debian's macvlan and static plugins are installed (`make deps`).
pub fn require_debian_plugins(test: &str) {
    let missing: Vec<&str> = ["macvlan", "static"]
        .into_iter()
        .filter(|plugin| !Path::new(DEBIAN_CNI_DIR).join(plugin).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "{test}: {missing:?} missing in {DEBIAN_CNI_DIR} (apt-get install containernetworking-plugins, or make deps)"
    );
}

/// Run `ip <args>` and panic with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Run `ip <args>`, returning whether it succeeded.
pub fn try_ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false)
}

/// A uniquely named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        let name = format!(
            "spcni-{role}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    pub fn try_ip(&self, args: &[&str]) -> bool {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        try_ip(&full)
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.try_ip(&["link", "show", "dev", name])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Output of one plugin call.
#[derive(Debug)]
pub struct PluginOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PluginOutput {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|error| {
            panic!(
                "stdout is not one JSON document ({error}): {:?}",
                self.stdout
            )
        })
    }

    pub fn error_code(&self) -> Option<u64> {
        self.json().get("code").and_then(Value::as_u64)
    }

    pub fn error_msg(&self) -> String {
        self.json()
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

/// Directory of our compiled plugin binaries (for CNI_PATH).
pub fn our_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_coordinator"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

pub fn plugin_binary(plugin: &str) -> PathBuf {
    match plugin {
        "ifacer" => PathBuf::from(env!("CARGO_BIN_EXE_ifacer")),
        "coordinator" => PathBuf::from(env!("CARGO_BIN_EXE_coordinator")),
        other => Path::new(DEBIAN_CNI_DIR).join(other),
    }
}

/// Invocation parameters (the CNI environment).
#[derive(Debug, Clone)]
pub struct Invocation {
    pub command: String,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: String,
}

/// Run `binary` with `invocation` and `stdin`, inside `host` when given (via `ip netns exec`).
pub fn run_plugin(
    host: Option<&Netns>,
    binary: &Path,
    invocation: &Invocation,
    stdin: &str,
) -> PluginOutput {
    let mut command = match host {
        Some(host) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &host.name]).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    let cni_path = format!("{DEBIAN_CNI_DIR}:{}", our_bin_dir().display());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", &invocation.command)
        .env("CNI_CONTAINERID", &invocation.container_id)
        .env("CNI_IFNAME", &invocation.ifname)
        .env("CNI_PATH", cni_path)
        .env("CNI_ARGS", &invocation.args)
        .env("CNI_LOG_LEVEL", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(netns) = &invocation.netns {
        command.env("CNI_NETNS", netns);
    }
    let mut child = command.spawn().expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait for plugin");
    let result = PluginOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    if !result.stderr.is_empty() {
        eprintln!(
            "--- {} {} stderr ---\n{}",
            binary.display(),
            invocation.command,
            result.stderr.trim_end()
        );
    }
    result
}

/// A network configuration list, run like libcni runs a conflist.
pub struct Chain {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl Chain {
    pub fn new(name: &str, cni_version: &str, plugins: Vec<Value>) -> Self {
        Self {
            name: name.into(),
            cni_version: cni_version.into(),
            plugins,
        }
    }

    fn plugin_config(&self, plugin: &Value, previous: Option<&Value>) -> String {
        let mut config = plugin.clone();
        let object = config.as_object_mut().expect("plugin config is an object");
        object.insert("name".into(), json!(self.name));
        object.insert("cniVersion".into(), json!(self.cni_version));
        if let Some(previous) = previous {
            object.insert("prevResult".into(), previous.clone());
        }
        config.to_string()
    }

    /// ADD through every plugin; returns the final result or the failing plugin's output.
    pub fn add(
        &self,
        host: &Netns,
        invocation: &Invocation,
    ) -> Result<Value, (String, PluginOutput)> {
        self.add_after(host, invocation, None)
    }

    /// ADD through every plugin, the first one getting `previous` as its prevResult (the rest of a chain
    /// whose first part ran before).
    pub fn add_after(
        &self,
        host: &Netns,
        invocation: &Invocation,
        mut previous: Option<Value>,
    ) -> Result<Value, (String, PluginOutput)> {
        for plugin in &self.plugins {
            let kind = plugin["type"].as_str().expect("type").to_string();
            let invocation = Invocation {
                command: "ADD".into(),
                ..invocation.clone()
            };
            let output = run_plugin(
                Some(host),
                &plugin_binary(&kind),
                &invocation,
                &self.plugin_config(plugin, previous.as_ref()),
            );
            if !output.success {
                return Err((kind, output));
            }
            previous = Some(output.json());
        }
        Ok(previous.unwrap_or(Value::Null))
    }

    /// DEL through every plugin in reverse order (with prevResult from 0.4.0 on, as libcni).
    pub fn del(
        &self,
        host: &Netns,
        invocation: &Invocation,
        result: Option<&Value>,
    ) -> Result<(), (String, PluginOutput)> {
        let previous = result.filter(|_| self.cni_version.as_str() >= "0.4.0");
        for plugin in self.plugins.iter().rev() {
            let kind = plugin["type"].as_str().expect("type").to_string();
            let invocation = Invocation {
                command: "DEL".into(),
                ..invocation.clone()
            };
            let output = run_plugin(
                Some(host),
                &plugin_binary(&kind),
                &invocation,
                &self.plugin_config(plugin, previous),
            );
            if !output.success {
                return Err((kind, output));
            }
        }
        Ok(())
    }
}

/// Whether this kernel can create a link of `kind` (`vlan`, `bond`) — probed in a scratch namespace.
pub fn kernel_supports(kind: &str) -> bool {
    let scratch = Netns::new("probe");
    scratch.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
    match kind {
        "vlan" => scratch.try_ip(&[
            "link", "add", "link", "p0", "name", "p0.5", "type", "vlan", "id", "5",
        ]),
        other => scratch.try_ip(&["link", "add", "probe0", "type", other]),
    }
}

/// Whitespace-normalised lines (iproute2 mixes tabs and trailing spaces).
pub fn normalise(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect()
}

/// Print expected and actual side by side.
pub fn side_by_side(title: &str, expected: &[String], actual: &[String]) {
    let width = expected.iter().map(String::len).max().unwrap_or(0).max(40);
    eprintln!("=== {title} ===");
    eprintln!("{:<width$} | actual (this pod)", "expected (seed 002)");
    eprintln!("{}-+-{}", "-".repeat(width), "-".repeat(width));
    for index in 0..expected.len().max(actual.len()) {
        let left = expected.get(index).map(String::as_str).unwrap_or("");
        let right = actual.get(index).map(String::as_str).unwrap_or("");
        let mark = if left == right { " " } else { "≠" };
        eprintln!("{left:<width$} |{mark}{right}");
    }
}

/// Connect by TCP from inside `netns` to `address:port` and report whether the packet reached a host that
/// answered (connected or refused) rather than timing out or being unroutable.
pub fn tcp_reachable(netns: &Netns, address: &str, port: u16) -> bool {
    let target: std::net::SocketAddr = format!("{address}:{port}").parse().expect("socket address");
    let path = netns.path();
    spiderpool_cni::netns::run_in(&path, move || {
        Ok(
            match std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(2)) {
                Ok(_) => true,
                Err(error) => error.kind() == std::io::ErrorKind::ConnectionRefused,
            },
        )
    })
    .unwrap_or(false)
}
