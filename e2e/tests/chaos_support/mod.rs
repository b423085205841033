//! The chaos suite's own world: a control plane it may restart (its own `testenv up`, restarted
//! on the same etcd data, CA, certificates and tokens), controller-manager replicas it SIGKILLs
//! and restarts (the shipped RBAC, leader election on, short GC timings), and the counters the
//! run reports.

#![allow(dead_code)]

pub mod actions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The chaos suite's control plane: `testenv up` as a child process, on a fixed port so that a
/// restart keeps every kubeconfig valid.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub port: u16,
    pub kubeconfig: PathBuf,
    testenv: PathBuf,
    child: Option<Child>,
    generation: u32,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl ControlPlane {
    /// Starts a fresh control plane (with kube-controller-manager) in a new directory and
    /// installs the CRDs. `TESTENV` names the binary (`make test` and `make chaos` export it).
    pub async fn start() -> anyhow::Result<ControlPlane> {
        let testenv = std::env::var_os("TESTENV").map(PathBuf::from).context(
            "TESTENV is not set: the chaos suite starts its own control plane with the testenv \
             binary; run it with `make test` or `make chaos`",
        )?;
        let dir = std::env::temp_dir().join(spiderpool_e2e::unique_name("spiderpool-chaos"));
        std::fs::create_dir_all(&dir)?;
        let mut plane = ControlPlane {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            port: free_port()?,
            testenv,
            child: None,
            generation: 0,
        };
        plane.up(false).await?;
        let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/");
        plane.kubectl(&["apply", "--server-side", "-f", crds])?;
        plane.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ])?;
        Ok(plane)
    }

    fn kubectl(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = std::process::Command::new(&self.testenv)
            .arg("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()?;
        if !output.status.success() {
            bail!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    async fn up(&mut self, keep_data: bool) -> anyhow::Result<()> {
        self.generation += 1;
        let stderr =
            std::fs::File::create(self.dir.join(format!("testenv-{}.stderr", self.generation)))?;
        let mut command = Command::new(&self.testenv);
        command
            .arg("up")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--with-controller-manager")
            .args(keep_data.then_some("--keep-data"))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command.spawn().context("spawning testenv")?;
        let stdout = child.stdout.take().context("testenv stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(180), async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("TESTENV READY") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        if !matches!(ready, Ok(Ok(true))) {
            bail!(
                "the chaos control plane did not become ready: see {}",
                self.dir.display()
            );
        }
        // Keep draining stdout so testenv never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        Ok(())
    }

    /// Stops kube-apiserver, etcd and kube-controller-manager (SIGTERM, then SIGKILL after 30 s).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Restarts the control plane on the same etcd data, port, CA, certificates and tokens.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.up(true).await
    }
}

/// Flags of every controller-manager replica: leader election with a short lease, short GC
/// timings (trace every second, one second of extra grace, a three-second fresh window, a full
/// scan every five seconds), no webhooks.
pub const MANAGER_FLAGS: &[&str] = &[
    "--leader-elect=true",
    "--lease-duration",
    "4s",
    "--lease-renew-interval",
    "1s",
    "--gc-trace-interval",
    "1s",
    "--gc-additional-grace-delay",
    "1s",
    "--gc-fresh-window",
    "3s",
    "--gc-interval",
    "5s",
    "--auto-pool-resync",
    "20s",
];

/// Controller-manager replicas as processes the suite kills and restarts.
pub struct Managers {
    kubeconfig: PathBuf,
    dir: PathBuf,
    replicas: Vec<Option<Child>>,
    starts: Vec<u32>,
}

impl Managers {
    pub fn start(kubeconfig: &Path, dir: &Path, count: usize) -> anyhow::Result<Managers> {
        let mut managers = Managers {
            kubeconfig: kubeconfig.to_path_buf(),
            dir: dir.to_path_buf(),
            replicas: (0..count).map(|_| None).collect(),
            starts: vec![0; count],
        };
        for index in 0..count {
            managers.start_replica(index)?;
        }
        Ok(managers)
    }

    pub fn count(&self) -> usize {
        self.replicas.len()
    }

    fn start_replica(&mut self, index: usize) -> anyhow::Result<()> {
        self.starts[index] += 1;
        let admin = format!("127.0.0.1:{}", free_port()?).parse()?;
        let log = self.dir.join(format!(
            "controller-manager-{index}-{}.log",
            self.starts[index]
        ));
        let identity = format!("chaos-manager-{index}");
        let mut args: Vec<&str> = MANAGER_FLAGS.to_vec();
        args.extend(["--identity", identity.as_str()]);
        let command =
            spiderpool_e2e::controller_manager_command(&self.kubeconfig, admin, &args, &log)?;
        let child = Command::from(command)
            .kill_on_drop(true)
            .spawn()
            .context("spawning a controller-manager")?;
        self.replicas[index] = Some(child);
        Ok(())
    }

    /// SIGKILLs replica `index` (no graceful Lease release: the survivor must wait it out).
    pub async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.replicas[index].take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        if self.replicas[index].is_none() {
            self.start_replica(index)?;
        }
        Ok(())
    }

    /// Starts every replica that is down.
    pub fn ensure_all(&mut self) -> anyhow::Result<()> {
        for index in 0..self.replicas.len() {
            self.restart(index)?;
        }
        Ok(())
    }
}

/// Counters of a run, by kind.
#[derive(Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn add(&self, kind: &str) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(kind.to_string()).or_insert(0) += 1;
    }

    pub fn get(&self, kind: &str) -> u64 {
        self.snapshot().get(kind).copied().unwrap_or(0)
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Operations (everything counted under `op:`).
    pub fn operations(&self) -> u64 {
        self.snapshot()
            .iter()
            .filter(|(kind, _)| kind.starts_with("op:"))
            .map(|(_, count)| count)
            .sum()
    }
}
