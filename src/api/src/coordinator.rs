//! `SpiderCoordinator`: cluster-wide settings of the `coordinator` CNI meta-plugin.
//!
//! [`CoordinatorSpec`] is shared: a SpiderMultusConfig embeds it as `spec.coordinator` to
//! override these settings for one network. The controller reconciles only the instance named
//! `default` and fills the status with the pod and service CIDRs it discovered in the cluster.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ippool::Route;

/// Settings of the coordinator plugin, which tunes routes, MAC address and sysctls of pods with
/// several interfaces. Used by SpiderCoordinator (cluster defaults) and by SpiderMultusConfig
/// `spec.coordinator` (per-network overrides).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "spiderpool.spidernet.io",
    version = "v2beta1",
    kind = "SpiderCoordinator",
    plural = "spidercoordinators",
    singular = "spidercoordinator",
    shortname = "scc",
    category = "spiderpool",
    status = "CoordinatorStatus",
    derive = "PartialEq",
    doc = "SpiderCoordinator holds the cluster-wide settings of the coordinator CNI plugin. Only \
           the instance named `default` is used."
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::tidy)]
pub struct CoordinatorSpec {
    /// How the coordinator treats the interface it runs for: `auto` (underlay when it is the
    /// pod's first interface or a `veth0` already exists, overlay otherwise), `underlay`,
    /// `overlay`, or `disabled` (leave the pod untouched). Defaults to `auto`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "auto"))]
    pub mode: Option<CoordinatorMode>,

    /// Where the cluster's pod CIDRs are read from: `auto` (detect), `cluster` (the Kubernetes
    /// control-plane configuration), `calico` (Calico IPPools), `cilium` (Cilium configuration)
    /// or `none` (do not look them up). Required for SpiderCoordinator (checked by the webhook);
    /// optional in SpiderMultusConfig, where the SpiderCoordinator value applies when left out.
    #[serde(rename = "podCIDRType", skip_serializing_if = "Option::is_none")]
    pub pod_cidr_type: Option<PodCIDRType>,

    /// Extra destinations that pods reach through the host network stack rather than through
    /// their own interface, for example `169.254.0.0/16` for node-local DNS. Each entry is a
    /// CIDR or a bare address (stored as `/32` or `/128`).
    #[serde(rename = "hijackCIDR", skip_serializing_if = "Option::is_none")]
    pub hijack_cidr: Option<Vec<String>>,

    /// Static routes that the coordinator adds to the policy-routing table of the interface it
    /// runs for. `dst` is a CIDR or address, `gw` an address of the same family.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_routes: Option<Vec<Route>>,

    /// Fixed first two bytes of the MAC address given to pod interfaces, written `xx:yy` in
    /// hexadecimal, for example `0a:1b`. The lowest bit of the first byte must be 0 (unicast).
    /// Left out, MAC addresses are not changed.
    #[serde(rename = "podMACPrefix", skip_serializing_if = "Option::is_none")]
    pub pod_mac_prefix: Option<String>,

    /// Whether to adjust the routes of a pod with several interfaces so that replies leave
    /// through the interface the request came in on. Defaults to true.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub tune_pod_routes: Option<bool>,

    /// Interface inside the pod that carries the default route. Left out, the default route
    /// stays on `eth0`.
    #[serde(rename = "podDefaultRouteNIC", skip_serializing_if = "Option::is_none")]
    pub pod_default_route_nic: Option<String>,

    /// Number of the host routing table used for traffic between a pod and its own node.
    /// Defaults to 500.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 500), transform = crate::schema::no_format)]
    pub host_rule_table: Option<i64>,

    /// Value of the pod's `rp_filter` sysctl: 0 (off), 1 (strict) or 2 (loose); a negative
    /// number leaves the sysctl as it is. Defaults to 0.
    #[serde(rename = "podRPFilter", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0), transform = crate::schema::no_format)]
    pub pod_rp_filter: Option<i64>,

    /// Transmit queue length set on the pod interface; 0 leaves it as it is. Must not be
    /// negative. Defaults to 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0), transform = crate::schema::no_format)]
    pub tx_queue_len: Option<i64>,

    /// IPv4 link-local address (for example `169.254.100.1`) given to the pod's `veth0` device
    /// in underlay mode. Left out or empty, none is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub veth_link_address: Option<String>,

    /// MTU of the pod's `veth0` device in underlay mode; at least 1. The SpiderCoordinator
    /// webhook fills in 1500 when left out.
    #[serde(rename = "vethMTU", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), transform = crate::schema::no_format)]
    pub veth_mtu: Option<i64>,
}

/// How the coordinator plugin treats the interface it runs for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CoordinatorMode {
    /// Underlay when the interface is the pod's first one or a `veth0` already exists, overlay
    /// otherwise.
    Auto,
    /// The pod's first interface sits directly on the physical network; a `veth0` pair to the
    /// host carries service and node-local traffic.
    Underlay,
    /// The interface is an extra one next to an overlay CNI's `eth0`, whose veth carries
    /// service and node-local traffic.
    Overlay,
    /// The coordinator leaves the pod untouched.
    Disabled,
}

/// Where the cluster's pod CIDRs are discovered.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PodCIDRType {
    /// Detect the cluster's CNI and read its configuration.
    Auto,
    /// The Kubernetes control-plane configuration (`kubeadm-config` or the
    /// kube-controller-manager flags).
    Cluster,
    /// Calico IPPools.
    Calico,
    /// Cilium's configuration and CiliumPodIPPools.
    Cilium,
    /// Do not discover pod CIDRs.
    None,
}

/// Observed state of a SpiderCoordinator, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::tidy)]
pub struct CoordinatorStatus {
    /// `Synced` when the pod and service CIDRs were discovered, `NotReady` otherwise. The
    /// coordinator plugin refuses to run until the phase is `Synced`.
    pub phase: String,

    /// Why the phase is `NotReady` (what is missing), or, when `Synced`, where the pod and
    /// service CIDRs were found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Pod CIDRs of the cluster's default (overlay) CNI, as discovered according to
    /// `podCIDRType`.
    #[serde(rename = "overlayPodCIDR", skip_serializing_if = "Option::is_none")]
    pub overlay_pod_cidr: Option<Vec<String>>,

    /// Service CIDRs of the cluster.
    #[serde(rename = "serviceCIDR", skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<Vec<String>>,
}
