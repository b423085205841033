//! Command-line flags of the controller-manager. Every flag has an environment fallback so the
//! same binary is configured by a Deployment's `env:` or by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "spiderpool-controller-manager",
    version,
    about = "spiderpool-rs controllers, admission webhooks, IP garbage collection and metrics"
)]
pub struct Args {
    /// Path of a kubeconfig; without it the in-cluster config (or $KUBECONFIG) is used.
    #[arg(long, env = "SPIDERPOOL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Address of the plain-HTTP admin server (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "SPIDERPOOL_ADMIN_ADDR", default_value = "0.0.0.0:5721")]
    pub admin_addr: SocketAddr,

    /// Namespace holding the leader-election Lease (and, in a cluster, the controller itself).
    #[arg(long, env = "SPIDERPOOL_NAMESPACE", default_value = "kube-system")]
    pub namespace: String,

    /// Identity of this replica in leader election; defaults to the pod name or host name.
    #[arg(long, env = "SPIDERPOOL_POD_NAME")]
    pub identity: Option<String>,

    /// Run the controllers only while holding the leader Lease (webhooks serve on every replica).
    #[arg(long, env = "SPIDERPOOL_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SPIDERPOOL_LEADER_ELECTION_LEASE",
        default_value = "spiderpool-controller-manager"
    )]
    pub leader_election_lease: String,

    /// How long a Lease stays valid without renewal.
    #[arg(long, env = "SPIDERPOOL_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How often the leader renews, and how often a candidate retries.
    #[arg(long, env = "SPIDERPOOL_LEASE_RENEW_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub lease_renew_interval: Duration,

    /// Reconcile SpiderMultusConfigs into NetworkAttachmentDefinitions.
    #[arg(long, env = "SPIDERPOOL_ENABLE_MULTUS_CONFIG", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_multus_config: bool,

    /// Run the IPAM controllers: IPPool and Subnet status, auto pools for workloads, and IP
    /// garbage collection (leader only). Off for a replica that should only serve webhooks.
    #[arg(long, env = "SPIDERPOOL_ENABLE_IPAM_CONTROLLERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_ipam_controllers: bool,

    /// Serve the admission webhooks (on every replica, leader or not).
    #[arg(long, env = "SPIDERPOOL_ENABLE_WEBHOOK", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_webhook: bool,

    /// Address of the HTTPS webhook server.
    #[arg(long, env = "SPIDERPOOL_WEBHOOK_ADDR", default_value = "0.0.0.0:5722")]
    pub webhook_addr: SocketAddr,

    /// Where the serving certificate comes from: `auto` (a CA and certificate made at start-up
    /// and kept in `--webhook-secret-name`) or `provided` (`tls.crt`/`tls.key`, optionally
    /// `ca.crt`, in `--webhook-cert-dir`, reloaded when they change).
    #[arg(
        long,
        env = "SPIDERPOOL_WEBHOOK_CERT_MODE",
        value_enum,
        default_value = "auto"
    )]
    pub webhook_cert_mode: CertMode,

    /// Directory of the PEM files in `provided` mode.
    #[arg(
        long,
        env = "SPIDERPOOL_WEBHOOK_CERT_DIR",
        default_value = "/etc/spiderpool/webhook-certs"
    )]
    pub webhook_cert_dir: PathBuf,

    /// How often `provided` mode looks for changed certificate files.
    #[arg(long, env = "SPIDERPOOL_WEBHOOK_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub webhook_cert_reload_interval: Duration,

    /// Secret (in `--namespace`) holding the `auto` mode CA and certificate.
    #[arg(
        long,
        env = "SPIDERPOOL_WEBHOOK_SECRET_NAME",
        default_value = "spiderpool-controller-server-certs"
    )]
    pub webhook_secret_name: String,

    /// Service (in `--namespace`) in front of the webhook server; its DNS names go into the
    /// `auto` certificate.
    #[arg(
        long,
        env = "SPIDERPOOL_WEBHOOK_SERVICE_NAME",
        default_value = "spiderpool-controller"
    )]
    pub webhook_service_name: String,

    /// Extra certificate names, comma-separated; IP addresses become IP SANs (`127.0.0.1` for
    /// a local run).
    #[arg(long, env = "SPIDERPOOL_WEBHOOK_EXTRA_SANS", value_delimiter = ',')]
    pub webhook_extra_sans: Vec<String>,

    /// Name of the Mutating and ValidatingWebhookConfiguration whose `caBundle` is kept current:
    /// written when they appear and whenever it differs (empty: leave them alone, e.g. when
    /// cert-manager injects it). `config/rbac` grants this name only.
    #[arg(
        long,
        env = "SPIDERPOOL_WEBHOOK_CONFIGURATION_NAME",
        default_value = "spiderpool-controller"
    )]
    pub webhook_configuration_name: String,

    /// Local development only (`make run`): create the webhook configurations ourselves with
    /// `clientConfig.url = <this><path>` (e.g. `https://127.0.0.1:5722`) instead of using the ones
    /// installed from `config/webhook`. Needs `create` on the configurations, which
    /// `config/rbac` does not grant.
    #[arg(long, env = "SPIDERPOOL_WEBHOOK_REGISTER_URL")]
    pub webhook_register_url: Option<String>,

    /// With `--webhook-register-url`: `key=value,...` labels a namespace must carry for its
    /// objects to be judged (default: every namespace).
    #[arg(
        long,
        env = "SPIDERPOOL_WEBHOOK_NAMESPACE_SELECTOR",
        default_value = ""
    )]
    pub webhook_namespace_selector: String,

    /// With `--webhook-register-url`: `key=value,...` labels a cluster-scoped Spiderpool object
    /// must carry to be judged (default: every object).
    #[arg(long, env = "SPIDERPOOL_WEBHOOK_OBJECT_SELECTOR", default_value = "")]
    pub webhook_object_selector: String,

    /// ConfigMap (in `--namespace`) whose `conf.yml` holds the cluster settings (upstream's
    /// `spiderpool-conf`); absent means the chart defaults.
    #[arg(
        long,
        env = "SPIDERPOOL_SETTINGS_CONFIGMAP",
        default_value = "spiderpool-conf"
    )]
    pub settings_configmap: String,

    #[command(flatten)]
    pub ipam: crate::ippool::args::IpamArgs,

    /// Log filter in `tracing` EnvFilter syntax (e.g. `info,spiderpool=debug`).
    #[arg(long, env = "SPIDERPOOL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "SPIDERPOOL_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_json: bool,
}

/// Where the webhook serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertMode {
    Auto,
    Provided,
}

/// Parses `500ms`, `15s`, `10m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 15s, 10m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn durations_reject_unknown_units_and_garbage() {
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("").is_err());
    }
}
