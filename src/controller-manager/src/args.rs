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

    /// Log filter in `tracing` EnvFilter syntax (e.g. `info,spiderpool=debug`).
    #[arg(long, env = "SPIDERPOOL_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "SPIDERPOOL_LOG_JSON", default_value_t = false, action = clap::ArgAction::Set)]
    pub log_json: bool,
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
