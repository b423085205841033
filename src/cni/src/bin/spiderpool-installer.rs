//! `spiderpool-installer`: puts the spiderpool CNI plugins, their kubeconfig and their settings
//! on a node and keeps them current (run by the `spiderpool-installer` DaemonSet). See
//! `spiderpool_cni::installer`.
//!
//!   spiderpool-installer [flags]          install, then keep everything current until SIGTERM
//!   spiderpool-installer probe [flags]    exit 0 when the node is set up (readiness probe)

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spiderpool_cni::installer::{self, Options, kubeconfig};
use spiderpool_cni::protocol::logging;

#[derive(Debug, Parser)]
#[command(
    name = "spiderpool-installer",
    version,
    about = "installs the spiderpool CNI plugins, their kubeconfig and settings on a node"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Directory in the image holding the plugins to install.
    #[arg(
        long,
        env = "SPIDERPOOL_PLUGINS_DIR",
        default_value = "/usr/lib/spiderpool/cni"
    )]
    plugins_dir: PathBuf,

    /// The node's CNI bin directory (as mounted into the container).
    #[arg(
        long,
        env = "SPIDERPOOL_CNI_BIN_DIR",
        default_value = "/host/opt/cni/bin"
    )]
    cni_bin_dir: PathBuf,

    /// Where the plugins read `spiderpool.kubeconfig` and `spiderpool.yaml`: the node's
    /// `/etc/cni/net.d/spiderpool.d` (as mounted into the container).
    #[arg(
        long,
        env = "SPIDERPOOL_CONFIG_DIR",
        default_value = "/host/etc/cni/net.d/spiderpool.d"
    )]
    config_dir: PathBuf,

    /// Namespace of the settings ConfigMap, the plugins' ServiceAccount and the DaemonSet.
    #[arg(long, env = "SPIDERPOOL_NAMESPACE", default_value = "kube-system")]
    namespace: String,

    /// ConfigMap whose `conf.yml` holds the cluster settings (upstream's `spiderpool-conf`).
    #[arg(
        long,
        env = "SPIDERPOOL_SETTINGS_CONFIGMAP",
        default_value = "spiderpool-conf"
    )]
    settings_configmap: String,

    /// ServiceAccount the plugins act as (their permissions: config/rbac/cni.yaml).
    #[arg(
        long,
        env = "SPIDERPOOL_PLUGIN_SERVICE_ACCOUNT",
        default_value = "spiderpool-cni"
    )]
    plugin_service_account: String,

    /// Lifetime of the plugins' token (at least 10m); it is renewed at half of it.
    #[arg(long, env = "SPIDERPOOL_TOKEN_LIFETIME", default_value = "1h", value_parser = parse_duration)]
    token_lifetime: Duration,

    /// API server URL written into the plugins' kubeconfig; default: from
    /// KUBERNETES_SERVICE_HOST/PORT (the kubernetes Service, reachable from the host where
    /// kube-proxy or an equivalent runs).
    #[arg(long, env = "SPIDERPOOL_API_SERVER")]
    api_server: Option<String>,

    /// PEM file of the cluster CA written into the plugins' kubeconfig.
    #[arg(
        long,
        env = "SPIDERPOOL_CA_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    ca_file: PathBuf,

    /// This node's name: the plugins' token is bound to the Node object.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,

    /// The installer's own DaemonSet: when it is deleted (an uninstall) the kubeconfig and
    /// settings are removed from the node on exit.
    #[arg(long, env = "SPIDERPOOL_INSTALLER_DAEMONSET")]
    daemonset_name: Option<String>,

    /// File that exists while the node is set up (what `probe` checks).
    #[arg(
        long,
        env = "SPIDERPOOL_READY_FILE",
        default_value = "/run/spiderpool-installer/ready"
    )]
    ready_file: PathBuf,

    /// Kubeconfig of the installer itself; default: in-cluster.
    #[arg(long, env = "SPIDERPOOL_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Log level: debug, info, warn, error.
    #[arg(long, env = "SPIDERPOOL_LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 when the node is set up (the ready file exists), 1 otherwise.
    Probe,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 10m, 1h, 3600s"))?;
    let seconds = match unit {
        "" | "s" => Some(value),
        "m" => value.checked_mul(60),
        "h" => value.checked_mul(3600),
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {text:?}: use s, m or h"
            ));
        }
    };
    seconds
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Probe) = args.command {
        return if args.ready_file.exists() {
            ExitCode::SUCCESS
        } else {
            eprintln!("not ready: {} does not exist", args.ready_file.display());
            ExitCode::FAILURE
        };
    }
    logging::init("spiderpool-installer");
    match logging::parse_level(&args.log_level) {
        Ok(level) => logging::set_level(level),
        Err(error) => {
            log::error!("{}", error.msg);
            return ExitCode::from(2);
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api_server = match kubeconfig::api_server_url(
        args.api_server.as_deref(),
        std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
        std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
    ) {
        Ok(url) => url,
        Err(error) => {
            log::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let options = Options {
        plugins_dir: args.plugins_dir,
        cni_bin_dir: args.cni_bin_dir,
        config_dir: args.config_dir,
        namespace: args.namespace,
        settings_configmap: args.settings_configmap,
        plugin_service_account: args.plugin_service_account,
        token_lifetime: args.token_lifetime,
        api_server,
        ca_file: args.ca_file,
        node_name: args.node_name.filter(|name| !name.is_empty()),
        daemonset_name: args.daemonset_name.filter(|name| !name.is_empty()),
        ready_file: args.ready_file,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            log::error!("failed to start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let kubeconfig = args.kubeconfig;
    let outcome = runtime.block_on(async move {
        let client = match &kubeconfig {
            Some(path) => {
                let config = kube::config::Kubeconfig::read_from(path)
                    .map_err(|error| format!("kubeconfig {}: {error}", path.display()))?;
                let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
                    .await
                    .map_err(|error| format!("kubeconfig {}: {error}", path.display()))?;
                kube::Client::try_from(config).map_err(|error| error.to_string())?
            }
            None => kube::Client::try_default()
                .await
                .map_err(|error| format!("in-cluster configuration: {error}"))?,
        };
        installer::run(client, options)
            .await
            .map_err(|error| error.to_string())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("600").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("1d").unwrap_err().contains("unit"));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("invalid duration")
        );
    }
}
