//! Test harness for the integration suites.
//!
//! The suites run against ONE local control plane per `make test` run, started by
//! `e2e/scripts/with-testenv.sh`, which exports its kubeconfig as `SPIDERPOOL_E2E_KUBECONFIG`
//! and has already installed the CRDs. Each test takes its own namespace (and unique names for
//! cluster-scoped objects) so tests can run in parallel and never see each other's objects.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rand::Rng;

/// Environment variable naming the kubeconfig of the running test control plane.
pub const KUBECONFIG_ENV: &str = "SPIDERPOOL_E2E_KUBECONFIG";

static CRYPTO: Once = Once::new();

/// Installs the rustls ring provider once per test binary (kube uses rustls).
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        // Another crate may have installed it already; either way ring is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Path of the kubeconfig of the running control plane.
///
/// Integration tests are meant to be run by `make test`; run directly they fail here with a
/// message saying how to run them instead of silently passing.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os(KUBECONFIG_ENV) {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "{KUBECONFIG_ENV} is not set: integration tests need the local control plane; \
             run them with `make test` or `e2e/scripts/with-testenv.sh -- cargo test ...`"
        ),
    }
}

/// A client for the test control plane.
pub async fn client() -> anyhow::Result<Client> {
    install_crypto_provider();
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// A lowercase random suffix for unique object names (cluster-scoped objects are shared by all
/// tests of a run).
pub fn unique_name(prefix: &str) -> String {
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| {
            let index = rng.random_range(0..36u8);
            char::from_digit(u32::from(index), 36).unwrap_or('x')
        })
        .collect();
    format!("{prefix}-{suffix}")
}

/// A namespace owned by one test. Call [`TestNamespace::delete`] at the end of the test; the
/// control plane is discarded after the run anyway, so a failed test leaves no trace either.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"spiderpool-e2e": "true"}},
        }))?;
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    pub async fn delete(self) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.name, &DeleteParams::background())
            .await?;
        Ok(())
    }
}

/// Polls `check` every 50 ms until it returns `Ok(Some(value))` or `timeout` passes. The last
/// error or "still not ready" state is reported on timeout.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("condition not met");
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last = format!("{error:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `kubectl` (the one built into the test control plane binary) against the test control
/// plane and returns its stdout; a non-zero exit is an error carrying stderr.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let output = kubectl_command(args).output().context("running kubectl")?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The kubectl command, for tests that need stdin or want to inspect a failure.
pub fn kubectl_command(args: &[&str]) -> Command {
    let testenv = std::env::var_os("TESTENV").unwrap_or_else(|| "testenv".into());
    let mut command = Command::new(testenv);
    command
        .arg("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args);
    command
}

/// Path of one of the project's binaries (the controller-manager or a CNI plugin), built by
/// `make test` into `SPIDERPOOL_BIN_DIR` (default `target/debug`).
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("SPIDERPOOL_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug")));
    dir.join(name)
}

/// A running controller-manager process, started once per test binary by [`controller_manager`].
pub struct ControllerManager {
    /// `host:port` of its admin server (`/livez`, `/readyz`, `/metrics`).
    pub admin_addr: std::net::SocketAddr,
    /// Its log file (stderr).
    pub log_path: PathBuf,
}

static CONTROLLER_MANAGER: std::sync::OnceLock<Result<ControllerManager, String>> =
    std::sync::OnceLock::new();

/// Starts the controller-manager binary against the test control plane (once per test binary)
/// and waits until `/readyz` answers 200. Extra flags come from `args`; every call in one binary
/// must pass the same ones.
///
/// The process is spawned from a dedicated thread that lives as long as the test binary, with a
/// parent-death signal, so it never outlives the tests.
pub async fn controller_manager(args: &[&str]) -> anyhow::Result<&'static ControllerManager> {
    let started = CONTROLLER_MANAGER
        .get_or_init(|| start_controller_manager(args).map_err(|error| format!("{error:#}")));
    let manager = started
        .as_ref()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    wait_for(
        "controller-manager /readyz",
        Duration::from_secs(60),
        || async {
            match http_get(manager.admin_addr, "/readyz").await {
                Ok((200, _)) => Ok(Some(())),
                Ok((status, body)) => anyhow::bail!("status {status}: {body}"),
                Err(error) => Err(error),
            }
        },
    )
    .await
    .with_context(|| format!("controller-manager log: {}", manager.log_path.display()))?;
    Ok(manager)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn start_controller_manager(args: &[&str]) -> anyhow::Result<ControllerManager> {
    let port = free_port()?;
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let binary_name = std::env::current_exe()
        .ok()
        .and_then(|path| {
            path.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "e2e".into());
    let log_dir = std::env::var_os("SPIDERPOOL_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let log_path = log_dir.join(format!("controller-manager-{binary_name}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = Command::new(binary("spiderpool-controller-manager"));
    command
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .arg("--admin-addr")
        .arg(admin_addr.to_string())
        .arg("--namespace")
        .arg("default")
        .arg("--leader-election-lease")
        .arg(format!(
            "spiderpool-e2e-{}",
            binary_name.replace('_', "-").to_lowercase()
        ))
        .args(args)
        // The webhook server binds a port and registers configurations: only suites that ask
        // for it (any `--webhook-*` / `--enable-webhook` flag) get it.
        .args((!args.iter().any(|arg| arg.contains("webhook"))).then_some("--enable-webhook=false"))
        .env(
            "SPIDERPOOL_LOG_LEVEL",
            // SPIDERPOOL_E2E_MANAGER_LOG overrides, e.g. `debug,kube_client=trace` for requests.
            std::env::var("SPIDERPOOL_E2E_MANAGER_LOG")
                .unwrap_or_else(|_| "info,spiderpool_controller_manager=debug".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // The child must be spawned by a thread that lives as long as the process: the parent-death
    // signal fires when the spawning *thread* exits.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let result = command.spawn();
        let spawned = result
            .map(|child| child.id())
            .map_err(|error| error.to_string());
        let _ = sender.send(spawned);
        loop {
            std::thread::park();
        }
    });
    receiver
        .recv()
        .context("controller-manager spawner thread")?
        .map_err(|error| anyhow::anyhow!("spawning the controller-manager: {error}"))?;
    Ok(ControllerManager {
        admin_addr,
        log_path,
    })
}

/// A minimal HTTP/1.1 GET (the admin server is plain HTTP on loopback); returns status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("malformed HTTP response: {head}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}
