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
    /// pool holds replicas + this many (`clusterSubnetDefaultFlexibleIPNumber`, documented `+1`).
    #[arg(
        long,
        env = "SPIDERPOOL_CLUSTER_SUBNET_DEFAULT_FLEXIBLE_IP_NUMBER",
        default_value_t = 1,
        value_parser = clap::value_parser!(i64).range(0..)
    )]
    pub cluster_subnet_default_flexible_ip_number: i64,

    /// Serve IPv4 (`enableIPv4`).
    #[arg(long, env = "SPIDERPOOL_ENABLE_IPV4", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_ipv4: bool,

    /// Serve IPv6 (`enableIPv6`).
    #[arg(long, env = "SPIDERPOOL_ENABLE_IPV6", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_ipv6: bool,

    /// StatefulSet pods keep their addresses across re-creation (`enableStatefulSet`).
    #[arg(long, env = "SPIDERPOOL_ENABLE_STATEFULSET", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_statefulset: bool,

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
    /// The cluster settings these flags describe (chart defaults for the rest).
    pub fn settings(&self) -> ClusterSettings {
        ClusterSettings {
            enable_ipv4: self.enable_ipv4,
            enable_ipv6: self.enable_ipv6,
            enable_stateful_set: self.enable_statefulset,
            enable_spider_subnet: self.enable_spider_subnet,
            enable_auto_pool_for_application: self.enable_auto_pool_for_application,
            cluster_subnet_default_flexible_ip_number: self
                .cluster_subnet_default_flexible_ip_number,
            ..ClusterSettings::default()
        }
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
