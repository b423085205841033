//! Harness of the real-node suite: the node `testenv up --with-node` runs (kubelet, containerd,
//! Multus, veth underlay NICs), the install of `config/` through a test overlay, and a small
//! runner that prints one libtest-style line per scenario.
//!
//! The suite runs under `e2e/scripts/with-testenv.sh --with-node` (see the Makefile's `test`
//! target), which exports the node's facts; run any other way it fails at once, saying so.

#![forbid(unsafe_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
pub use spiderpool_e2e::{client, kubeconfig_path, unique_name, wait_for};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// What `testenv up --with-node` tells about its node.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub ip: String,
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub containerd_socket: PathBuf,
    pub underlay_nics: Vec<String>,
    pub apiserver_port: String,
    /// The test run's directory (control-plane state, logs).
    pub dir: PathBuf,
}

fn required(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| {
        anyhow::anyhow!(
            "{name} is not set: the real-node suite needs the node of `testenv up --with-node`; \
             run it with `make test` or `e2e/scripts/with-testenv.sh --with-node -- cargo test -p spiderpool-e2e-realnode`"
        )
    })
}

impl Node {
    pub fn from_env() -> anyhow::Result<Node> {
        let underlay_nics: Vec<String> = required("UNDERLAY_NICS")?
            .split(',')
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect();
        anyhow::ensure!(
            underlay_nics.len() >= 2,
            "UNDERLAY_NICS names {underlay_nics:?}: the suite needs two underlay NICs"
        );
        Ok(Node {
            name: required("NODE_NAME")?,
            ip: required("NODE_IP")?,
            cni_bin_dir: required("CNI_BIN_DIR")?.into(),
            cni_conf_dir: required("CNI_CONF_DIR")?.into(),
            containerd_socket: required("CONTAINERD_SOCKET")?.into(),
            underlay_nics,
            apiserver_port: required("APISERVER_PORT")?,
            dir: required("SPIDERPOOL_E2E_DIR")?.into(),
        })
    }

    /// `ctr` against the node's containerd, in kubelet's namespace.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd_socket)
            .args(["--namespace", "k8s.io"])
            .args(args))
    }
}

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `kubectl ARGS` (the one built into testenv) as the cluster admin: what a user types.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    spiderpool_e2e::kubectl(args)
}

/// `kubectl ARGS` with `stdin` as input (`kubectl apply -f -`).
pub fn kubectl_stdin(args: &[&str], stdin: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = spiderpool_e2e::kubectl_command(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running kubectl")?;
    child
        .stdin
        .take()
        .context("kubectl stdin")?
        .write_all(stdin.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `kubectl apply -f -` of a YAML/JSON text.
pub fn apply(manifest: &str) -> anyhow::Result<String> {
    kubectl_stdin(&["apply", "-f", "-"], manifest)
}

/// `kubectl exec -n NAMESPACE POD -- COMMAND...`.
pub fn exec(namespace: &str, pod: &str, command: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["exec", "-n", namespace, pod, "--"];
    args.extend_from_slice(command);
    kubectl(&args)
}

/// One scenario of the suite.
pub type Scenario<'a> = (
    &'static str,
    Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>,
);

/// Outcome of a group of scenarios.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: Vec<String>,
}

impl Tally {
    /// Runs the scenarios concurrently and prints a line for each as it ends.
    pub async fn run_all(&mut self, scenarios: Vec<Scenario<'_>>) {
        let runs = scenarios.into_iter().map(|(name, future)| async move {
            let started = Instant::now();
            let outcome = future.await;
            (name, started.elapsed(), outcome)
        });
        let mut pending: futures::stream::FuturesUnordered<_> = runs.collect();
        use futures::StreamExt;
        while let Some((name, elapsed, outcome)) = pending.next().await {
            self.record(name, elapsed, outcome);
        }
    }

    /// Runs one scenario; true when it passed.
    pub async fn run_one(
        &mut self,
        name: &'static str,
        future: impl Future<Output = anyhow::Result<()>>,
    ) -> bool {
        let started = Instant::now();
        let outcome = future.await;
        let passed = outcome.is_ok();
        self.record(name, started.elapsed(), outcome);
        passed
    }

    fn record(&mut self, name: &str, elapsed: Duration, outcome: anyhow::Result<()>) {
        match outcome {
            Ok(()) => {
                println!("test {name} ... ok ({:.1} s)", elapsed.as_secs_f64());
                self.passed += 1;
            }
            Err(error) => {
                println!("test {name} ... FAILED ({:.1} s)", elapsed.as_secs_f64());
                eprintln!("---- {name} ----\n{error:#}\n");
                self.failed.push(name.to_string());
            }
        }
    }

    /// Prints libtest's summary line; true when nothing failed.
    pub fn summary(&self) -> bool {
        let result = if self.failed.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        if !self.failed.is_empty() {
            println!("\nfailures:");
            for name in &self.failed {
                println!("    {name}");
            }
        }
        println!(
            "\ntest result: {result}. {} passed; {} failed; 0 ignored; 0 measured; 0 filtered out",
            self.passed,
            self.failed.len()
        );
        self.failed.is_empty()
    }
}

/// Everything a failing run needs to be understood, printed to stderr: pods, events, the logs of
/// our pods and the Multus and kubelet logs' tails.
pub fn diagnostics(node: &Node) {
    let show = |title: &str, result: anyhow::Result<String>| {
        eprintln!("==== {title}");
        match result {
            Ok(text) => eprintln!("{text}"),
            Err(error) => eprintln!("({error:#})"),
        }
    };
    show(
        "kubectl get pods -A -o wide",
        kubectl(&["get", "pods", "-A", "-o", "wide"]),
    );
    show(
        "kubectl get events -A",
        kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"]),
    );
    for selector in [
        "app.kubernetes.io/name=spiderpool-controller-manager",
        "app.kubernetes.io/name=spiderpool-installer",
    ] {
        show(
            &format!("kubectl logs -n kube-system -l {selector}"),
            kubectl(&[
                "logs",
                "-n",
                "kube-system",
                "-l",
                selector,
                "--tail=80",
                "--all-containers",
            ]),
        );
    }
    for (title, path) in [
        ("multus log", node.dir.join("node/multus.log")),
        (
            "spiderpool plugin log",
            PathBuf::from("/var/log/spidernet/spiderpool.log"),
        ),
        (
            "coordinator log",
            PathBuf::from("/var/log/spidernet/coordinator.log"),
        ),
    ] {
        show(title, tail(&path, 60));
    }
}

fn tail(path: &Path, lines: usize) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}
