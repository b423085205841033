//! Names shared across Spiderpool components: the API group, the finalizer, and every
//! annotation and label key Spiderpool reads or writes, with their fixed values.
//!
//! Keys and values are part of the wire contract with upstream Spiderpool and must not change.

// ---------------------------------------------------------------------------------------------
// API group
// ---------------------------------------------------------------------------------------------

/// API group of every Spiderpool kind.
pub const GROUP: &str = "spiderpool.spidernet.io";

/// The single served and stored version of the Spiderpool kinds.
pub const VERSION: &str = "v2beta1";

/// `apiVersion` of every Spiderpool object.
pub const API_VERSION: &str = "spiderpool.spidernet.io/v2beta1";

/// kubectl category of every Spiderpool kind (`kubectl get spiderpool`).
pub const CATEGORY: &str = "spiderpool";

/// Finalizer Spiderpool puts on IPPools, Subnets, Endpoints and Coordinators so that it can
/// clean up (release addresses, drop records) before they disappear.
pub const FINALIZER: &str = "spiderpool.spidernet.io";

/// `spec.ipVersion` of an IPv4 pool, subnet or reservation.
pub const IP_VERSION_V4: i64 = 4;

/// `spec.ipVersion` of an IPv6 pool, subnet or reservation.
pub const IP_VERSION_V6: i64 = 6;

// ---------------------------------------------------------------------------------------------
// Pod (and pod template) annotations
// ---------------------------------------------------------------------------------------------

/// Pod annotation naming the pools of the interface being set up:
/// `{"ipv4": ["pool"], "ipv6": ["pool"]}`.
pub const ANNO_POD_IPPOOL: &str = "ipam.spidernet.io/ippool";

/// Pod annotation naming the pools of several interfaces at once: a JSON array of
/// `{"interface": "eth0", "ipv4": [...], "ipv6": [...], "cleangateway": bool}`.
pub const ANNO_POD_IPPOOLS: &str = "ipam.spidernet.io/ippools";

/// Pod annotation with extra routes: a JSON array of `{"dst": "<cidr>", "gw": "<ip>"}`, each
/// attached to the interface whose subnet contains `gw`.
pub const ANNO_POD_ROUTES: &str = "ipam.spidernet.io/routes";

/// Pod annotation that names the interface carrying the default route, overriding the
/// SpiderCoordinator's `podDefaultRouteNIC`.
pub const ANNO_POD_DEFAULT_ROUTE_NIC: &str = "ipam.spidernet.io/default-route-nic";

/// Reserved pod annotation for DNS settings; defined upstream but never read.
pub const ANNO_POD_DNS: &str = "ipam.spidernet.io/dns";

/// Pod-template annotation choosing SpiderSubnets for one interface (SpiderSubnet mode):
/// `{"interface": "eth0", "ipv4": ["subnet"], "ipv6": ["subnet"]}`; the interface defaults to
/// `eth0`.
pub const ANNO_SUBNET: &str = "ipam.spidernet.io/subnet";

/// Pod-template annotation choosing SpiderSubnets for several interfaces: a JSON array of
/// `{"interface": ..., "ipv4": [...], "ipv6": [...]}`. Takes precedence over [`ANNO_SUBNET`].
pub const ANNO_SUBNETS: &str = "ipam.spidernet.io/subnets";

/// Number of addresses of an automatically created pool: `"N"` for exactly N, `"+N"` for the
/// workload's replicas plus N. Read on pod templates and written on the auto pools.
pub const ANNO_IPPOOL_IP_NUMBER: &str = "ipam.spidernet.io/ippool-ip-number";

/// Pod-template annotation saying whether the automatically created pool is deleted with its
/// workload; a boolean string, true when absent. The same key is used as a label on the pool
/// ([`LABEL_IPPOOL_RECLAIM`]).
pub const ANNO_IPPOOL_RECLAIM: &str = "ipam.spidernet.io/ippool-reclaim";

/// Set by KubeVirt on the target pod of a live migration; address-conflict detection is skipped
/// for such a pod.
pub const ANNO_KUBEVIRT_MIGRATION_JOB_NAME: &str = "kubevirt.io/migrationJobName";

// ---------------------------------------------------------------------------------------------
// Namespace annotations
// ---------------------------------------------------------------------------------------------

/// Namespace annotation with the default IPv4 pools of its pods: a JSON array of pool names.
pub const ANNO_NS_DEFAULT_IPV4_IPPOOL: &str = "ipam.spidernet.io/default-ipv4-ippool";

/// Namespace annotation with the default IPv6 pools of its pods: a JSON array of pool names.
pub const ANNO_NS_DEFAULT_IPV6_IPPOOL: &str = "ipam.spidernet.io/default-ipv6-ippool";

// ---------------------------------------------------------------------------------------------
// Resource injection (pods, namespaces, SpiderMultusConfigs)
// ---------------------------------------------------------------------------------------------

/// On a pod or namespace: inject the RDMA networks (SpiderMultusConfigs) labelled with the same
/// key and value. On a SpiderMultusConfig the annotation is copied to a label of the same key.
pub const RDMA_RESOURCE_INJECT: &str = "cni.spidernet.io/rdma-resource-inject";

/// On a pod or namespace: inject the networks (SpiderMultusConfigs) labelled with the same key
/// and value. On a SpiderMultusConfig the annotation is copied to a label of the same key.
pub const NETWORK_RESOURCE_INJECT: &str = "cni.spidernet.io/network-resource-inject";

/// Name of the pod mutating webhook that performs resource injection.
pub const POD_MUTATING_WEBHOOK_NAME: &str = "pods.spiderpool.spidernet.io";

// ---------------------------------------------------------------------------------------------
// SpiderMultusConfig annotations
// ---------------------------------------------------------------------------------------------

/// SpiderMultusConfig annotation giving the generated NetworkAttachmentDefinition a name other
/// than the SpiderMultusConfig's own (a DNS-1123 subdomain). Cannot be added or changed after
/// creation; may be removed.
pub const ANNO_MULTUS_CR_NAME: &str = "multus.spidernet.io/cr-name";

/// SpiderMultusConfig annotation setting the `cniVersion` of the generated configuration; one
/// of [`SUPPORTED_CNI_VERSIONS`], [`DEFAULT_CNI_VERSION`] when absent.
pub const ANNO_MULTUS_CNI_VERSION: &str = "multus.spidernet.io/cni-version";

/// SpiderMultusConfig annotation overriding the `name` inside the generated CNI configuration
/// (not the NetworkAttachmentDefinition's object name).
pub const ANNO_CNI_CONFIG_NAME: &str = "cni.spidernet.io/cniconfig-name";

/// `cniVersion` of generated configurations when [`ANNO_MULTUS_CNI_VERSION`] is absent.
pub const DEFAULT_CNI_VERSION: &str = "0.3.1";

/// The values [`ANNO_MULTUS_CNI_VERSION`] may take.
pub const SUPPORTED_CNI_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Annotation written by `kubectl apply`; not copied from a SpiderMultusConfig to its
/// NetworkAttachmentDefinition.
pub const ANNO_LAST_APPLIED_CONFIGURATION: &str =
    "kubectl.kubernetes.io/last-applied-configuration";

// ---------------------------------------------------------------------------------------------
// Multus
// ---------------------------------------------------------------------------------------------

/// API group of the Multus NetworkAttachmentDefinition.
pub const MULTUS_GROUP: &str = "k8s.cni.cncf.io";

/// Pod annotation naming the NetworkAttachmentDefinition of the pod's first interface
/// (`namespace/name`, `name`, or Multus's JSON form).
pub const MULTUS_DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";

/// Pod annotation listing the NetworkAttachmentDefinitions of additional interfaces
/// (comma-separated `namespace/name@interface`, or a JSON array).
pub const MULTUS_NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// Pod annotation in which Multus reports the interfaces it attached.
pub const MULTUS_NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// NetworkAttachmentDefinition annotation naming the device-plugin resource the network needs
/// (set for `sriov`, `ib-sriov`, and `ovs` with a `deviceID`).
pub const MULTUS_RESOURCE_NAME: &str = "k8s.v1.cni.cncf.io/resourceName";

/// Prefix of [`MULTUS_RESOURCE_NAME`] for OVS hardware offload: the value is
/// `ovs-cni.network.kubevirt.io/<bridge>`.
pub const OVS_RESOURCE_NAME_PREFIX: &str = "ovs-cni.network.kubevirt.io";

// ---------------------------------------------------------------------------------------------
// Labels on IPPools and Subnets
// ---------------------------------------------------------------------------------------------

/// Label on every SpiderIPPool: its subnet as a label value (see [`cidr_label_value`]).
pub const LABEL_IPPOOL_CIDR: &str = "ipam.spidernet.io/ippool-cidr";

/// Label on every SpiderSubnet: its subnet as a label value (see [`cidr_label_value`]).
pub const LABEL_SUBNET_CIDR: &str = "ipam.spidernet.io/subnet-cidr";

/// Label on IPPools owned by a SpiderSubnet: the subnet's name.
pub const LABEL_OWNER_SPIDER_SUBNET: &str = "ipam.spidernet.io/owner-spider-subnet";

/// Label on automatically created pools: the workload's group and version as `<group>_<version>`
/// (`apps_v1`), or just `<version>` for the core group (`v1`).
pub const LABEL_OWNER_APPLICATION_GV: &str = "ipam.spidernet.io/owner-application-gv";

/// Label on automatically created pools: the workload's kind (`Deployment`, `StatefulSet`, ...).
pub const LABEL_OWNER_APPLICATION_KIND: &str = "ipam.spidernet.io/owner-application-kind";

/// Label on automatically created pools: the workload's namespace.
pub const LABEL_OWNER_APPLICATION_NAMESPACE: &str = "ipam.spidernet.io/owner-application-namespace";

/// Label on automatically created pools: the workload's name. Its presence is what marks a pool
/// as automatically created.
pub const LABEL_OWNER_APPLICATION_NAME: &str = "ipam.spidernet.io/owner-application-name";

/// Label on automatically created pools: the workload's UID.
pub const LABEL_OWNER_APPLICATION_UID: &str = "ipam.spidernet.io/owner-application-uid";

/// Label on automatically created pools: the pod interface the pool serves (`eth0`, `net1`).
pub const LABEL_INTERFACE: &str = "ipam.spidernet.io/interface";

/// Label on automatically created pools: [`LABEL_VALUE_IPV4`] or [`LABEL_VALUE_IPV6`].
pub const LABEL_IP_VERSION: &str = "ipam.spidernet.io/ip-version";

/// Value of [`LABEL_IP_VERSION`] on an IPv4 pool.
pub const LABEL_VALUE_IPV4: &str = "IPv4";

/// Value of [`LABEL_IP_VERSION`] on an IPv6 pool.
pub const LABEL_VALUE_IPV6: &str = "IPv6";

/// Label on automatically created pools: `"true"` when the pool is deleted with its workload,
/// `"false"` when it is kept for a successor of the same kind, namespace and name.
pub const LABEL_IPPOOL_RECLAIM: &str = "ipam.spidernet.io/ippool-reclaim";

// ---------------------------------------------------------------------------------------------
// podAffinity keys of automatically created pools
// ---------------------------------------------------------------------------------------------
// These are matched against the pod's top-level controller, not against pod labels.

/// `podAffinity.matchLabels` key of an auto pool: the workload's API group (`""` for core).
pub const AUTO_POOL_APP_API_GROUP: &str = "ipam.spidernet.io/app-api-group";

/// `podAffinity.matchLabels` key of an auto pool: the workload's API version (`v1`).
pub const AUTO_POOL_APP_API_VERSION: &str = "ipam.spidernet.io/app-api-version";

/// `podAffinity.matchLabels` key of an auto pool: the workload's kind.
pub const AUTO_POOL_APP_KIND: &str = "ipam.spidernet.io/app-kind";

/// `podAffinity.matchLabels` key of an auto pool: the workload's namespace (shown in the
/// APP-NAMESPACE column of `kubectl get sp -o wide`).
pub const AUTO_POOL_APP_NAMESPACE: &str = "ipam.spidernet.io/app-namespace";

/// `podAffinity.matchLabels` key of an auto pool: the workload's name.
pub const AUTO_POOL_APP_NAME: &str = "ipam.spidernet.io/app-name";

/// Turns a CIDR into the value of [`LABEL_IPPOOL_CIDR`] / [`LABEL_SUBNET_CIDR`] the way upstream
/// does: the first 3 `.`, the first 7 `:` and the first `/` become `-` (`172.18.40.0/24` gives
/// `172-18-40-0-24`, `fd00::/64` gives `fd00---64`). The input is not validated.
pub fn cidr_label_value(cidr: &str) -> String {
    cidr.replacen('.', "-", 3)
        .replacen(':', "-", 7)
        .replacen('/', "-", 1)
}
