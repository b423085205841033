//! Test harness for the integration suites.
//!
//! The suites run against ONE local control plane per `make test` run, started by
//! `e2e/scripts/with-testenv.sh`, which exports its kubeconfig as `SPIDERPOOL_E2E_KUBECONFIG`
//! and has already installed the CRDs. Each test takes its own namespace (and unique names for
//! cluster-scoped objects) so tests can run in parallel and never see each other's objects.
//!
//! The components run as installed: the harness applies `config/rbac` as shipped and gives the
//! controller-manager and the CNI plugin kubeconfigs of their own ServiceAccounts, so a permission
//! missing from `config/rbac` fails a suite, and `rbac-audit` ([`rbac_audit`]) finds the ones no
//! suite used. The tests themselves act as cluster admin.

#![forbid(unsafe_code)]

pub mod invariants;
pub mod procstat;
pub mod rbac;
pub mod rbac_audit;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
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

/// The control plane of a test binary that starts its own (see [`use_own_control_plane`]).
static OWN_CONTROL_PLANE: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();

/// For a test binary that brings up its own control plane (the chaos suite restarts it): every
/// helper of this crate then uses `kubeconfig` and writes its files under `dir` instead of the
/// shared control plane's. Call it once, before any other helper.
pub fn use_own_control_plane(kubeconfig: PathBuf, dir: PathBuf) -> anyhow::Result<()> {
    OWN_CONTROL_PLANE
        .set((kubeconfig, dir))
        .map_err(|_| anyhow::anyhow!("the control plane of this test binary is already chosen"))
}

/// Path of the kubeconfig of the running control plane.
///
/// Integration tests are meant to be run by `make test`; run directly they fail here with a
/// message saying how to run them instead of silently passing.
pub fn kubeconfig_path() -> PathBuf {
    if let Some((kubeconfig, _)) = OWN_CONTROL_PLANE.get() {
        return kubeconfig.clone();
    }
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

/// Namespace of the controller-manager, its ServiceAccount, Lease, settings and certificate, as
/// installed from `config/`.
pub const MANAGER_NAMESPACE: &str = "kube-system";
/// The settings ConfigMap the controller-manager reads (`--settings-configmap` default).
pub const SETTINGS_CONFIGMAP: &str = "spiderpool-conf";
/// The webhook configurations of `config/webhook` (`--webhook-configuration-name` default).
pub const WEBHOOK_CONFIGURATION: &str = "spiderpool-controller";
/// The auto-mode certificate Secret (`--webhook-secret-name` default).
pub const WEBHOOK_SECRET: &str = "spiderpool-controller-server-certs";
/// Field manager of what the harness applies as admin (what `kubectl apply` would).
const FIELD_MANAGER: &str = "spiderpool-e2e";

/// Server-side applies one object as admin, whatever its kind (resolved through discovery).
pub async fn apply_object(client: &Client, object: &serde_json::Value) -> anyhow::Result<()> {
    let types: kube::core::TypeMeta =
        serde_json::from_value(object.clone()).context("an object without apiVersion and kind")?;
    let gvk = kube::core::GroupVersionKind::try_from(&types)?;
    let name = object["metadata"]["name"]
        .as_str()
        .with_context(|| format!("a {} without a name", types.kind))?;
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("resolving {}", types.kind))?;
    let api: Api<kube::core::DynamicObject> =
        if capabilities.scope == kube::discovery::Scope::Namespaced {
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .with_context(|| format!("applying {} {name}", types.kind))?;
    Ok(())
}

/// Applies `config/rbac` as shipped (what `kubectl apply -k config/rbac` does), once per test
/// binary, and waits until the API server's authorizer honours every rule for every
/// ServiceAccount it binds (checked with SubjectAccessReviews as admin: requests made as the
/// accounts themselves would show up in the audit log as theirs).
pub async fn install_rbac(client: &Client) -> anyhow::Result<()> {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| async {
            let dir = rbac::rbac_dir();
            for object in rbac::kustomization_documents(&dir)? {
                apply_object(client, &object).await?;
            }
            let policy = rbac::Policy::load(&dir)?;
            for account in &policy.accounts {
                for role in policy.granted(account)? {
                    for rule in &role.rules {
                        wait_until_authorized(client, account, &role, rule).await?;
                    }
                }
            }
            Ok(())
        })
        .await
        .copied()
}

async fn wait_until_authorized(
    client: &Client,
    account: &rbac::Account,
    role: &rbac::GrantedRole,
    rule: &k8s_openapi::api::rbac::v1::PolicyRule,
) -> anyhow::Result<()> {
    let first = |values: &Option<Vec<String>>| {
        values
            .as_ref()
            .and_then(|values| values.first().cloned())
            .unwrap_or_default()
    };
    let verb = rule.verbs.first().cloned().unwrap_or_default();
    let attributes = match rule
        .non_resource_urls
        .as_ref()
        .and_then(|urls| urls.first())
    {
        Some(path) => serde_json::json!({"nonResourceAttributes": {"path": path, "verb": verb}}),
        None => {
            let resource = first(&rule.resources);
            let (resource, subresource) = resource
                .split_once('/')
                .map(|(resource, subresource)| (resource.to_string(), subresource.to_string()))
                .unwrap_or((resource, String::new()));
            serde_json::json!({"resourceAttributes": {
                "group": first(&rule.api_groups),
                "resource": resource,
                "subresource": subresource,
                "verb": verb,
                "name": first(&rule.resource_names),
                "namespace": role.scope.clone().unwrap_or_default(),
            }})
        }
    };
    wait_until_allowed(
        client,
        account,
        attributes,
        &format!("{} {} to be allowed {rule:?}", role.kind, role.name),
    )
    .await
}

/// Waits until the API server's authorizer allows ServiceAccount `account` what `attributes`
/// (a SubjectAccessReview's `resourceAttributes` or `nonResourceAttributes`) describe: a new
/// binding takes a moment to reach the authorizer. Asked as admin, so the account's own audit
/// trail stays clean.
pub async fn wait_until_allowed(
    client: &Client,
    account: &rbac::Account,
    attributes: serde_json::Value,
    what: &str,
) -> anyhow::Result<()> {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let mut spec = attributes;
    spec["user"] = serde_json::json!(account.username());
    spec["groups"] = serde_json::json!([
        "system:serviceaccounts",
        format!("system:serviceaccounts:{}", account.namespace),
        "system:authenticated"
    ]);
    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": spec,
    }))?;
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    wait_for(what, Duration::from_secs(30), || async {
        let answer = reviews.create(&PostParams::default(), &review).await?;
        Ok(answer
            .status
            .is_some_and(|status| status.allowed)
            .then_some(()))
    })
    .await
}

/// A kubeconfig of the test control plane that authenticates as ServiceAccount
/// `namespace/name` with a bound token (TokenRequest API), written into `dir`.
pub async fn service_account_kubeconfig(
    client: &Client,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": 86400},
    }))?;
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{name}"))?
        .status
        .context("TokenRequest without status")?
        .token;
    let admin = std::fs::read_to_string(kubeconfig_path())?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin)?;
    let users = config["users"]
        .as_sequence_mut()
        .context("kubeconfig without users")?;
    for user in users.iter_mut() {
        user["user"] = serde_yaml::to_value(serde_json::json!({"token": token}))?;
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

/// The directory for this run's files: the control plane's (`SPIDERPOOL_E2E_DIR`) or a temporary
/// one.
pub fn run_dir() -> PathBuf {
    if let Some((_, dir)) = OWN_CONTROL_PLANE.get() {
        return dir.clone();
    }
    std::env::var_os("SPIDERPOOL_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// `config/rbac` installed and a kubeconfig of ServiceAccount `kube-system/<account>`, once per
/// test binary and account: the identity the component runs with in a cluster.
pub async fn component_kubeconfig(client: &Client, account: &str) -> anyhow::Result<PathBuf> {
    install_rbac(client).await?;
    let dir = run_dir().join(unique_name(account));
    service_account_kubeconfig(client, MANAGER_NAMESPACE, account, &dir).await
}

/// The controller-manager's kubeconfig (ServiceAccount `kube-system/spiderpool-controller` of
/// `config/rbac/rbac.yaml`), made once per test binary.
pub async fn manager_kubeconfig(client: &Client) -> anyhow::Result<PathBuf> {
    static KUBECONFIG: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    KUBECONFIG
        .get_or_try_init(|| component_kubeconfig(client, "spiderpool-controller"))
        .await
        .cloned()
}

/// Makes `kube-system/spiderpool-conf` hold `conf_yml` (`None`: deletes it, so the chart defaults
/// apply). Call it before starting a controller-manager: the ConfigMap outlives the test binary
/// that wrote it, and test binaries run one after another.
pub async fn write_settings(client: &Client, conf_yml: Option<&str>) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), MANAGER_NAMESPACE);
    match conf_yml {
        Some(text) => {
            apply_object(
                client,
                &serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": SETTINGS_CONFIGMAP, "namespace": MANAGER_NAMESPACE},
                    "data": {"conf.yml": text},
                }),
            )
            .await
        }
        None => match config_maps
            .delete(SETTINGS_CONFIGMAP, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        },
    }
}

/// Installs the webhook configurations of `config/webhook/manifests.yaml` as the install does
/// (server-side apply as admin), changing only what this environment differs in: without a node
/// there is no Service routing, so `clientConfig.service` becomes `clientConfig.url:
/// https://127.0.0.1:<port><path>`; and every webhook judges only the suite's objects (labelled
/// `selector_label=true`: a namespace selector for namespaced kinds, an object selector for
/// cluster-scoped ones), so configurations left behind after the test binary exits never judge
/// another suite's objects. `caBundle` is left to the controller-manager.
pub async fn install_webhook_configurations(
    client: &Client,
    port: u16,
    selector_label: &str,
) -> anyhow::Result<()> {
    for mut configuration in rbac::yaml_documents(&webhook_manifests())? {
        let webhooks = configuration["webhooks"]
            .as_array_mut()
            .context("a webhook configuration without webhooks")?;
        for webhook in webhooks {
            let path = webhook["clientConfig"]["service"]["path"]
                .as_str()
                .context("a webhook without clientConfig.service.path")?
                .to_string();
            webhook["clientConfig"] =
                serde_json::json!({"url": format!("https://127.0.0.1:{port}{path}")});
            let cluster_scoped = webhook["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|rule| rule["resources"].as_array().into_iter().flatten())
                .all(|resource| {
                    CLUSTER_SCOPED_JUDGED.contains(&resource.as_str().unwrap_or_default())
                });
            let selector = if cluster_scoped {
                "objectSelector"
            } else {
                "namespaceSelector"
            };
            webhook[selector] = serde_json::json!({"matchLabels": {selector_label: "true"}});
        }
        apply_object(client, &configuration).await?;
    }
    Ok(())
}

/// `config/webhook/manifests.yaml`.
pub fn webhook_manifests() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/webhook/manifests.yaml"
    ))
}

/// Kinds the webhooks judge that have no namespace (the namespace selector does not apply).
const CLUSTER_SCOPED_JUDGED: &[&str] = &[
    "spidersubnets",
    "spiderippools",
    "spiderreservedips",
    "spidercoordinators",
];

/// A running controller-manager process, started once per test binary by [`controller_manager`].
pub struct ControllerManager {
    /// `host:port` of its admin server (`/livez`, `/readyz`, `/metrics`).
    pub admin_addr: std::net::SocketAddr,
    /// Its process id (benchmarks read its memory and CPU from `/proc`).
    pub pid: u32,
    /// Its log file (stderr).
    pub log_path: PathBuf,
}

/// Starts the controller-manager with the chart-default settings; see
/// [`controller_manager_with_settings`].
pub async fn controller_manager(args: &[&str]) -> anyhow::Result<&'static ControllerManager> {
    controller_manager_with_settings(None, args).await
}

/// Starts the controller-manager binary against the test control plane (once per test binary)
/// as installed: in `kube-system`, as ServiceAccount `spiderpool-controller` with exactly the
/// roles of `config/rbac/rbac.yaml` (a missing permission fails the suite), reading
/// `kube-system/spiderpool-conf` written from `settings` first (`None`: the chart defaults). Waits
/// until `/readyz` answers 200. Extra flags come from `args`; every call in one binary must pass
/// the same settings and flags.
///
/// The process is spawned from a dedicated thread that lives as long as the test binary, with a
/// parent-death signal, so it never outlives the tests.
pub async fn controller_manager_with_settings(
    settings: Option<&str>,
    args: &[&str],
) -> anyhow::Result<&'static ControllerManager> {
    static CONTROLLER_MANAGER: tokio::sync::OnceCell<ControllerManager> =
        tokio::sync::OnceCell::const_new();
    let manager = CONTROLLER_MANAGER
        .get_or_try_init(|| async {
            let client = client().await?;
            write_settings(&client, settings).await?;
            let kubeconfig = manager_kubeconfig(&client).await?;
            start_controller_manager(&kubeconfig, args)
        })
        .await?;
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

fn start_controller_manager(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<ControllerManager> {
    let port = free_port()?;
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let binary_name = std::env::current_exe()
        .ok()
        .and_then(|path| {
            path.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "e2e".into());
    let log_path = run_dir().join(format!("controller-manager-{binary_name}.log"));
    let command = controller_manager_command(kubeconfig, admin_addr, args, &log_path)?;
    let pid = spawn_with_parent_death(command)?;
    Ok(ControllerManager {
        admin_addr,
        pid,
        log_path,
    })
}

/// The controller-manager's command line as the suites run it: in `kube-system` with the
/// kubeconfig of its ServiceAccount, the admin server on `admin_addr`, stderr to `log_path`.
pub fn controller_manager_command(
    kubeconfig: &Path,
    admin_addr: std::net::SocketAddr,
    args: &[&str],
    log_path: &Path,
) -> anyhow::Result<Command> {
    let log = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    // `setpriv --pdeathsig` (util-linux, essential on Debian) asks for SIGTERM when the spawning
    // thread exits, then execs the controller-manager in place (same pid): the suite needs no
    // unsafe `pre_exec` for it.
    let mut command = Command::new("setpriv");
    command
        .args(["--pdeathsig", "TERM", "--"])
        .arg(binary("spiderpool-controller-manager"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--admin-addr")
        .arg(admin_addr.to_string())
        .arg("--namespace")
        .arg(MANAGER_NAMESPACE)
        .args(args)
        // The webhook server binds a port and injects caBundle: only suites that ask for it (any
        // `--webhook-*` / `--enable-webhook` flag) get it.
        .args((!args.iter().any(|arg| arg.contains("webhook"))).then_some("--enable-webhook=false"))
        .env(
            "SPIDERPOOL_LOG_LEVEL",
            // SPIDERPOOL_E2E_MANAGER_LOG overrides, e.g. `debug,kube_client=trace` for requests.
            std::env::var("SPIDERPOOL_E2E_MANAGER_LOG")
                .unwrap_or_else(|_| "info,spiderpool_controller_manager=debug".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(log);
    Ok(command)
}

/// Spawns `command` with a parent-death signal (SIGTERM) so it never outlives the test binary;
/// returns its pid. The spawning thread lives as long as the process: the parent-death signal
/// fires when the spawning *thread* exits. The child is never waited for (the test binary's
/// exit reaps it); callers that kill it wait with `waitpid` themselves if they need to.
pub fn spawn_with_parent_death(mut command: Command) -> anyhow::Result<u32> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
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
        .context("spawner thread")?
        .map_err(|error| anyhow::anyhow!("spawning {error}"))
}

/// A GET of the admin server (plain HTTP on loopback); returns status and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client as HttpClient;
    use hyper_util::rt::TokioExecutor;

    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}{path}")
        .parse()
        .with_context(|| format!("a URI of {addr}{path}"))?;
    let response = client
        .get(uri)
        .await
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading the answer of GET http://{addr}{path}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The value of one sample of an OpenMetrics text: `name` with exactly these labels (in any
/// order). `None` when absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric_name, label_text) = match series.split_once('{') {
            Some((metric_name, rest)) => (metric_name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric_name != name {
            continue;
        }
        let found: std::collections::BTreeSet<(String, String)> = label_text
            .split(',')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key.to_string(), value.trim_matches('"').to_string()))
            })
            .collect();
        let wanted: std::collections::BTreeSet<(String, String)> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        if found == wanted {
            return value.parse().ok();
        }
    }
    None
}

/// `spiderpool_controller_reconcile_total{controller}` of `manager`: how many reconciliations
/// (for the garbage collector: full scans) the controller has finished. Suites wait for it to
/// advance before asserting that something did not happen.
pub async fn reconciles(manager: &ControllerManager, controller: &str) -> anyhow::Result<f64> {
    let (_, text) = http_get(manager.admin_addr, "/metrics").await?;
    Ok(metric(
        &text,
        "spiderpool_controller_reconcile_total",
        &[("controller", controller)],
    )
    .unwrap_or(0.0))
}

/// Waits until `controller` of `manager` has finished `more` reconciliations after `since`
/// (a [`reconciles`] reading): the sign that it has seen a change made before `since`.
pub async fn wait_reconciles(
    manager: &ControllerManager,
    controller: &str,
    since: f64,
    more: f64,
) -> anyhow::Result<()> {
    wait_for(
        &format!("{more} more {controller} reconciliations"),
        Duration::from_secs(60),
        || async { Ok((reconciles(manager, controller).await? >= since + more).then_some(())) },
    )
    .await
}
