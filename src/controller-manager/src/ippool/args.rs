//! Flags of the IPAM controllers: IPPool, Subnet, application (auto pools) and the IP garbage
//! collector. Flattened into the controller-manager's flags; every flag has an environment
//! fallback named after upstream's where one exists.

use std::time::Duration;

use clap::Args;
use spiderpool_ipam::gc::GcSettings;
use spiderpool_ipam::settings::ClusterSettings;

use crate::args::parse_duration;

#[derive(Debug, Clone, Args)]
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

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
