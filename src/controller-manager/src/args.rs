//! Every command-line flag of the controller-manager, in one place: the process's ([`Args`]) and
//! the IPAM controllers' ([`IpamArgs`], flattened into them). Every flag has an environment
//! fallback (named after upstream's where one exists) so the same binary is configured by a
//! Deployment's `env:` or by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as FlagGroup, Parser};
use spiderpool_ipam::gc::GcSettings;
use spiderpool_ipam::settings::ClusterSettings;

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
    pub ipam: IpamArgs,

    /// Log filter in `tracing` EnvFilter syntax (e.g. `info,spiderpool=debug`).
    #[arg(long, env = "SPIDERPOOL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "SPIDERPOOL_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_json: bool,
}

// The IPAM controllers' flags: IPPool, Subnet, auto pools and the IP garbage collector (a plain
// comment: a doc comment here would change `--help`).
#[derive(Debug, Clone, FlagGroup)]
pub struct IpamArgs {
    /// Run the IPPool controller (pool counts, finalizers, legacy auto-pool cleanup).
    #[arg(long, env = "SPIDERPOOL_ENABLE_IPPOOL_CONTROLLER", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_ippool_controller: bool,

    /// The SpiderSubnet feature: the Subnet controller (`enableSpiderSubnet`).
    #[arg(long, env = "SPIDERPOOL_ENABLE_SPIDER_SUBNET", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_spider_subnet: bool,

    /// Auto-created IPPools for workloads annotated with `ipam.spidernet.io/subnet(s)`
    /// (`enableAutoPoolForApplication`; needs `--enable-spider-subnet`).
    #[arg(long, env = "SPIDERPOOL_ENABLE_AUTO_POOL_FOR_APPLICATION", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_auto_pool_for_application: bool,

    /// Extra addresses of an auto pool when `ipam.spidernet.io/ippool-ip-number` is absent: the
    /// pool holds replicas + this many. Overrides `clusterSubnetDefaultFlexibleIPNumber` of the
    /// cluster settings ConfigMap (whose default is the documented `+1`).
    #[arg(
        long,
        env = "SPIDERPOOL_CLUSTER_SUBNET_DEFAULT_FLEXIBLE_IP_NUMBER",
        value_parser = clap::value_parser!(i64).range(0..)
    )]
    pub cluster_subnet_default_flexible_ip_number: Option<i64>,

    /// How often a healthy workload's auto pools are checked again (from the caches).
    #[arg(long, env = "SPIDERPOOL_AUTO_POOL_RESYNC", default_value = "5m", value_parser = parse_duration)]
    pub auto_pool_resync: Duration,

    /// Run the IP garbage collector (`SPIDERPOOL_GC_IP_ENABLED`).
    #[arg(long, env = "SPIDERPOOL_GC_IP_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub gc_enabled: bool,

    /// Interval of the full scan of every pool record and endpoint
    /// (`SPIDERPOOL_GC_DEFAULT_INTERVAL_DURATION`).
    #[arg(long, env = "SPIDERPOOL_GC_DEFAULT_INTERVAL_DURATION", default_value = "10m", value_parser = parse_duration)]
    pub gc_interval: Duration,

    /// How often traced pods whose grace period ended are collected
    /// (`SPIDERPOOL_GC_TRACE_POD_GAP_DURATION`).
    #[arg(long, env = "SPIDERPOOL_GC_TRACE_POD_GAP_DURATION", default_value = "5s", value_parser = parse_duration)]
    pub gc_trace_interval: Duration,

    /// Added to every grace deadline (`SPIDERPOOL_GC_ADDITIONAL_GRACE_DELAY`).
    #[arg(long, env = "SPIDERPOOL_GC_ADDITIONAL_GRACE_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub gc_additional_grace_delay: Duration,

    /// Records of pods or endpoints younger than this are never collected (a CNI ADD may be in
    /// flight).
    #[arg(long, env = "SPIDERPOOL_GC_FRESH_WINDOW", default_value = "30s", value_parser = parse_duration)]
    pub gc_fresh_window: Duration,

    /// Release terminating stateless pods past their grace period on Ready nodes.
    #[arg(long, env = "SPIDERPOOL_GC_STATELESS_TERMINATING_POD_ON_READY_NODE_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub gc_terminating_pod_on_ready_node: bool,

    /// Release terminating stateless pods past their grace period on NotReady nodes.
    #[arg(long, env = "SPIDERPOOL_GC_STATELESS_TERMINATING_POD_ON_NOT_READY_NODE_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub gc_terminating_pod_on_not_ready_node: bool,

    /// Release Running stateless pods that report no `status.podIPs`.
    #[arg(long, env = "SPIDERPOOL_GC_ENABLE_STATELESS_RUNNING_POD_ON_EMPTY_POD_STATUS_IPS", default_value_t = false, action = clap::ArgAction::Set)]
    pub gc_running_pod_without_ips: bool,
}

impl IpamArgs {
    /// The cluster settings in force: those of the ConfigMap with these flags applied on top.
    pub fn apply(&self, mut settings: ClusterSettings) -> ClusterSettings {
        if let Some(number) = self.cluster_subnet_default_flexible_ip_number {
            settings.cluster_subnet_default_flexible_ip_number = number;
        }
        settings.enable_spider_subnet &= self.enable_spider_subnet;
        settings.enable_auto_pool_for_application &= self.enable_auto_pool_for_application;
        settings
    }

    pub fn gc_settings(&self) -> GcSettings {
        let seconds = |duration: Duration| i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        GcSettings {
            additional_grace_delay_seconds: seconds(self.gc_additional_grace_delay),
            terminating_on_ready_node: self.gc_terminating_pod_on_ready_node,
            terminating_on_not_ready_node: self.gc_terminating_pod_on_not_ready_node,
            running_without_pod_ips: self.gc_running_pod_without_ips,
            fresh_window_seconds: seconds(self.gc_fresh_window),
        }
    }
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

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        ipam: IpamArgs,
    }

    fn parse(flags: &[&str]) -> IpamArgs {
        let mut argv = vec!["test"];
        argv.extend_from_slice(flags);
        Flags::parse_from(argv).ipam
    }

    #[test]
    fn the_configmap_sets_the_default_flexible_number_unless_the_flag_does() {
        let configmap = ClusterSettings::from_yaml("clusterSubnetDefaultFlexibleIPNumber: 3")
            .expect("valid settings");
        assert_eq!(
            parse(&[])
                .apply(configmap.clone())
                .cluster_subnet_default_flexible_ip_number,
            3
        );
        let overridden = parse(&["--cluster-subnet-default-flexible-ip-number", "0"]);
        assert_eq!(
            overridden
                .apply(configmap)
                .cluster_subnet_default_flexible_ip_number,
            0
        );
        assert_eq!(
            parse(&[])
                .apply(ClusterSettings::default())
                .cluster_subnet_default_flexible_ip_number,
            1,
            "the documented +1 without ConfigMap or flag"
        );
    }

    #[test]
    fn disabling_the_feature_by_flag_wins_over_the_configmap() {
        let settings = parse(&["--enable-auto-pool-for-application", "false"])
            .apply(ClusterSettings::default());
        assert!(!settings.enable_auto_pool_for_application);
        assert!(settings.enable_spider_subnet);
        assert!(
            Flags::try_parse_from(["test", "--cluster-subnet-default-flexible-ip-number", "-1"])
                .is_err(),
            "a negative default is refused"
        );
    }
}
