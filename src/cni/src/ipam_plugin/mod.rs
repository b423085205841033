//! The `spiderpool` IPAM plugin: allocates and releases pod addresses straight against the API
//! server (no node agent), with the allocation store of `spiderpool-store`.
//!
//! Inputs: `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`,
//! `K8S_POD_INFRA_CONTAINER_ID`), the `ipam` section of the network configuration
//! ([`IpamConfig`], kubeconfig path defaulting to
//! `/etc/cni/net.d/spiderpool.d/spiderpool.kubeconfig`), and the settings file next to it (cluster
//! settings plus the node-local keys of [`NodeSettings`]; defaults when absent).
//!
//! - ADD allocates every NIC the pod's plan names on its first call and prints the CNI result of
//!   `CNI_IFNAME` (§6.1), converted to the configuration's `cniVersion` by the protocol module.
//! - DEL releases all of the pod's addresses unless the pod is alive or a StatefulSet member. It
//!   is idempotent. When the API server cannot be reached (or does not answer in time) DEL fails
//!   with code 11 so the runtime retries, as upstream's DEL fails when its agent is down; any other
//!   release error is logged and DEL succeeds, as upstream ignores the agent's release errors
//!   (garbage collection reclaims what is left).
//! - CHECK succeeds; STATUS (1.1.0) reports whether the API server answers; GC (1.1.0) is a no-op
//!   (the controller-manager's garbage collector owns leaked records).
//!
//! Every call runs on a current-thread Tokio runtime under the settings' `cniTimeoutSeconds`
//! (default 60 s), inside the protocol module's hard guard.

mod errors;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde::Deserialize;
use spiderpool_ipam::config::{IpamConfig, check_cni_version};
use spiderpool_ipam::result::cni_result_for;
use spiderpool_ipam::settings::ClusterSettings;
use spiderpool_store::{
    AddOutcome, AddRequest, Backoff, DelOutcome, DelRequest, LockDir, ROLLBACK_BUDGET, Store,
    StoreError, StoreOptions,
};

use crate::protocol::{
    self, CniError, CniResult, Context, ErrorCode, IpConfig, K8S_ARG_KEYS, Plugin, Route, logging,
};

pub use errors::*;

/// Default of `cniTimeoutSeconds`.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The protocol guard: a call is cut off here whatever the settings say.
pub const HARD_TIMEOUT: Duration = Duration::from_secs(120);
/// Default node-local lock directory (`lockDir`; empty disables the locks).
pub const DEFAULT_LOCK_DIR: &str = "/run/spiderpool/locks";

/// Node-local keys of the settings file, next to the cluster settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSettings {
    /// Directory of the per-pool lock files; `""` disables node-local serialisation.
    pub lock_dir: String,
    /// Bound of one CNI call, in seconds (at most 110).
    pub cni_timeout_seconds: u64,
    /// Compare-and-swap attempts per pool write before giving up with code 11.
    pub cas_max_attempts: u32,
    /// First backoff after a conflict, in milliseconds.
    pub cas_backoff_initial_millis: u64,
    /// Largest backoff after a conflict, in milliseconds.
    pub cas_backoff_cap_millis: u64,
}

impl Default for NodeSettings {
    fn default() -> NodeSettings {
        let backoff = Backoff::default();
        NodeSettings {
            lock_dir: DEFAULT_LOCK_DIR.to_string(),
            cni_timeout_seconds: DEFAULT_CALL_TIMEOUT.as_secs(),
            cas_max_attempts: backoff.max_attempts,
            cas_backoff_initial_millis: u64::try_from(backoff.initial.as_millis()).unwrap_or(50),
            cas_backoff_cap_millis: u64::try_from(backoff.cap.as_millis()).unwrap_or(1000),
        }
    }
}

impl NodeSettings {
    fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.cni_timeout_seconds.clamp(1, 110))
    }

    fn store_options(&self) -> StoreOptions {
        StoreOptions {
            lock_dir: LockDir::new(&self.lock_dir),
            backoff: Backoff {
                max_attempts: self.cas_max_attempts.max(1),
                initial: Duration::from_millis(self.cas_backoff_initial_millis),
                cap: Duration::from_millis(self.cas_backoff_cap_millis),
            },
        }
    }
}

/// The network configuration fields this plugin reads.
#[derive(Debug, Deserialize)]
struct NetworkConfig {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    ipam: Option<IpamConfig>,
}

/// Everything one call needs, loaded from stdin and the settings file.
struct Call {
    ipam: IpamConfig,
    settings: ClusterSettings,
    node: NodeSettings,
    namespace: String,
    pod_name: String,
    pod_uid: Option<String>,
    started: Instant,
}

/// Process-wide setup of a call: the rustls provider kube uses, and no `tracing` events from the
/// client stack turned into log lines (a disabled global subscriber stops `tracing`'s `log`
/// fallback), so the plugin log carries the plugin's own lines only.
fn prepare_process() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
}

impl Call {
    fn load(context: &Context) -> Result<Call, CniError> {
        prepare_process();
        let started = Instant::now();
        let config: NetworkConfig = context.config()?;
        if context.env.command != protocol::Command::Status {
            // Upstream's list; 1.1.0 is accepted on top for STATUS and GC.
            if config.cni_version != "1.1.0" {
                check_cni_version(&config.cni_version)
                    .map_err(|error| CniError::incompatible_version(error.to_string()))?;
            }
        }
        let ipam = config.ipam.unwrap_or_default();
        let level = ipam
            .log_level()
            .map_err(|error| CniError::invalid_config(error.to_string()))?;
        logging::set_level(match level {
            spiderpool_ipam::config::LogLevel::Debug => log::LevelFilter::Debug,
            spiderpool_ipam::config::LogLevel::Info => log::LevelFilter::Info,
            spiderpool_ipam::config::LogLevel::Warn => log::LevelFilter::Warn,
            spiderpool_ipam::config::LogLevel::Error | spiderpool_ipam::config::LogLevel::Fatal => {
                log::LevelFilter::Error
            }
        });
        let log_path = PathBuf::from(ipam.log_file_path());
        if let Err(error) = logging::log_to_file(&log_path) {
            log::warn!("logging to stderr: {error}");
        }
        let (settings, node) = load_settings(Path::new(ipam.settings_path()))?;
        context.env.args.check_known(K8S_ARG_KEYS)?;
        let k8s = context.k8s();
        Ok(Call {
            ipam,
            settings,
            node,
            namespace: k8s.pod_namespace.unwrap_or_default(),
            pod_name: k8s.pod_name.unwrap_or_default(),
            pod_uid: k8s.pod_uid,
            started,
        })
    }

    fn deadline(&self) -> Instant {
        self.started + self.node.call_timeout()
    }

    fn require_pod(&self) -> Result<(), CniError> {
        if self.namespace.is_empty() || self.pod_name.is_empty() {
            return Err(CniError::invalid_environment(
                "CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME: the spiderpool plugin allocates per pod",
            ));
        }
        Ok(())
    }

    /// Runs `work` with a client, on a current-thread runtime, bounded by the call's deadline plus
    /// the store's rollback budget: the store stops its writes at the deadline itself and may
    /// then still give back what a failed ADD took (cutting it off earlier would leak those
    /// records). `cniTimeoutSeconds` (at most 110) plus the budget stays under [`HARD_TIMEOUT`].
    fn run<T>(
        &self,
        work: impl AsyncFnOnce(Store) -> Result<T, StoreError>,
    ) -> Result<T, Box<StoreError>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| {
                Box::new(StoreError::Invalid(format!(
                    "failed to start a runtime: {error}"
                )))
            })?;
        let deadline = self.deadline();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let kubeconfig = PathBuf::from(self.ipam.kubeconfig_path());
        let options = self.node.store_options();
        let outcome = runtime.block_on(async move {
            let call = async move {
                let client = Store::client_from_kubeconfig(&kubeconfig, remaining).await?;
                log::debug!("client ready");
                work(Store::new(client, options)).await
            };
            match tokio::time::timeout(remaining + ROLLBACK_BUDGET, call).await {
                Ok(outcome) => outcome,
                Err(_) => Err(StoreError::Deadline {
                    what: format!(
                        "the API server (call timeout {}s, cniTimeoutSeconds)",
                        remaining.as_secs()
                    ),
                }),
            }
        });
        // Threads blocked on a node-local lock must not hold the process open.
        runtime.shutdown_background();
        outcome.map_err(Box::new)
    }
}

/// The cluster settings and the node keys from one YAML file; both default when it is absent.
fn load_settings(path: &Path) -> Result<(ClusterSettings, NodeSettings), CniError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            log::debug!("no settings file {}: using defaults", path.display());
            return Ok((ClusterSettings::default(), NodeSettings::default()));
        }
        Err(error) => {
            return Err(CniError::invalid_config(format!(
                "failed to read the settings file {}: {error}",
                path.display()
            )));
        }
    };
    parse_settings(&text).map_err(|error| {
        CniError::invalid_config(format!("settings file {}: {error}", path.display()))
    })
}

/// The settings file's text read as cluster settings plus node keys (the node installer checks
/// the `spiderpool-conf` ConfigMap with this before writing it, so the plugins never meet a file
/// they refuse).
pub fn parse_settings(text: &str) -> Result<(ClusterSettings, NodeSettings), String> {
    let settings = ClusterSettings::from_yaml(text).map_err(|error| error.to_string())?;
    let node: NodeSettings = if text.trim().is_empty() {
        NodeSettings::default()
    } else {
        serde_yaml::from_str(text).map_err(|error| error.to_string())?
    };
    Ok((settings, node))
}

/// The CNI result of `if_name` from an allocation.
fn cni_result(if_name: &str, outcome: &AddOutcome) -> Result<CniResult, CniError> {
    let data = cni_result_for(if_name, &outcome.ips, &outcome.routes)
        .map_err(|error| allocation_error(&StoreError::Result(error)))?;
    let mut result = CniResult::default();
    for ip in data.ips {
        let address: IpNetwork = ip.address.parse().map_err(|error| {
            CniError::internal(format!(
                "allocated address {} is invalid: {error}",
                ip.address
            ))
        })?;
        result.ips.push(IpConfig {
            interface: None,
            address,
            gateway: ip.gateway,
        });
    }
    for route in data.routes {
        let dst: IpNetwork = route.dst.parse().map_err(|error| {
            CniError::internal(format!(
                "route destination {} is invalid: {error}",
                route.dst
            ))
        })?;
        result.routes.push(Route::new(dst, route.gw));
    }
    Ok(result)
}

/// The plugin.
pub struct Spiderpool;

impl Plugin for Spiderpool {
    fn name(&self) -> &'static str {
        "spiderpool"
    }

    fn add(&self, context: &Context) -> Result<CniResult, CniError> {
        let call = Call::load(context)?;
        call.require_pod()?;
        let nic = context.env.ifname.clone();
        let request = AddRequest {
            namespace: &call.namespace,
            pod_name: &call.pod_name,
            nic: &nic,
            ipam: &call.ipam,
            settings: &call.settings,
            deadline: call.deadline(),
        };
        let outcome = call
            .run(async |store| store.allocate(&request).await)
            .map_err(|error| {
                log::error!(
                    "ADD {}/{} {nic} failed after {:?} ({}): {error}",
                    call.namespace,
                    call.pod_name,
                    call.started.elapsed(),
                    error.metric_label()
                );
                allocation_error(&error)
            })?;
        let result = cni_result(&nic, &outcome)?;
        let addresses: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
        log::info!(
            "ADD {}/{} {nic} uid={} ips={addresses:?} source={:?} elapsed_ms={} cas_writes={} cas_conflicts={} cas_retries={} lock_wait_ms={}",
            call.namespace,
            call.pod_name,
            outcome.pod_uid,
            outcome.source,
            call.started.elapsed().as_millis(),
            outcome.stats.writes,
            outcome.stats.conflicts,
            outcome.stats.retries,
            outcome.stats.lock_wait.as_millis(),
        );
        Ok(result)
    }

    fn del(&self, context: &Context) -> Result<(), CniError> {
        let call = Call::load(context)?;
        if call.require_pod().is_err() {
            log::warn!("DEL without K8S_POD_NAMESPACE/K8S_POD_NAME: nothing to release");
            return Ok(());
        }
        let nic = context.env.ifname.clone();
        let request = DelRequest {
            namespace: &call.namespace,
            pod_name: &call.pod_name,
            pod_uid: call.pod_uid.as_deref(),
            nic: &nic,
            settings: &call.settings,
            deadline: call.deadline(),
        };
        match call.run(async |store| store.release(&request).await) {
            Ok(outcome) => {
                match &outcome {
                    DelOutcome::Released { released, stats } => log::info!(
                        "DEL {}/{} {nic} released={released:?} elapsed_ms={} cas_writes={} cas_conflicts={} cas_retries={}",
                        call.namespace,
                        call.pod_name,
                        call.started.elapsed().as_millis(),
                        stats.writes,
                        stats.conflicts,
                        stats.retries
                    ),
                    other => {
                        log::info!("DEL {}/{} {nic}: {other:?}", call.namespace, call.pod_name)
                    }
                }
                Ok(())
            }
            Err(error) if code_of(&error) == TRY_AGAIN_LATER => {
                log::error!(
                    "DEL {}/{} {nic} could not reach the API server: {error}",
                    call.namespace,
                    call.pod_name
                );
                Err(release_error(&error))
            }
            Err(error) => {
                log::error!(
                    "DEL {}/{} {nic} failed, leaving the rest to garbage collection ({}): {error}",
                    call.namespace,
                    call.pod_name,
                    error.metric_label()
                );
                Ok(())
            }
        }
    }

    fn status(&self, context: &Context) -> Result<(), CniError> {
        let call = Call::load(context)?;
        call.run(async |store| {
            store
                .client()
                .apiserver_version()
                .await
                .map(|_| ())
                .map_err(|error| StoreError::Unavailable {
                    what: "get the API server version".into(),
                    detail: error.to_string(),
                })
        })
        .map_err(|error| {
            CniError::new(
                ErrorCode::PLUGIN_NOT_AVAILABLE,
                format!("spiderpool cannot serve ADD: {error}"),
            )
        })
    }

    fn timeout(&self) -> Duration {
        HARD_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_settings_default_and_parse_from_the_shared_file() {
        let dir = std::env::temp_dir().join(format!("spiderpool-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spiderpool.yaml");
        let (settings, node) = load_settings(&path).unwrap();
        assert_eq!(settings, ClusterSettings::default());
        assert_eq!(node.lock_dir, DEFAULT_LOCK_DIR);
        std::fs::write(
            &path,
            "enableIPv6: false\nlockDir: \"\"\ncniTimeoutSeconds: 5\nagent: {x: 1}\n",
        )
        .unwrap();
        let (settings, node) = load_settings(&path).unwrap();
        assert!(!settings.enable_ipv6);
        assert!(node.store_options().lock_dir.is_none());
        assert_eq!(node.call_timeout(), Duration::from_secs(5));
        std::fs::write(&path, "enableIPv6: [").unwrap();
        assert_eq!(
            load_settings(&path).unwrap_err().code,
            ErrorCode::INVALID_NETWORK_CONFIG
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
