//! `SpiderMultusConfig`: a namespaced, typed description of a secondary network from which
//! Spiderpool generates the Multus NetworkAttachmentDefinition of the same name.
//!
//! `cniType` picks the main plugin and, with it, which of the per-plugin sections
//! (`macvlan`, `ipvlan`, `vlan`, `sriov`, `ovs`, `ibsriov`, `ipoib`) is read; `custom` takes the
//! CNI configuration verbatim from `customCNI`. The kind has no status.

use std::fmt;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::coordinator::CoordinatorSpec;

/// Desired state of a SpiderMultusConfig: the main CNI plugin and its settings, the coordinator
/// and IPAM options, and extra chained plugins.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "spiderpool.spidernet.io",
    version = "v2beta1",
    kind = "SpiderMultusConfig",
    plural = "spidermultusconfigs",
    singular = "spidermultusconfig",
    shortname = "smc",
    category = "spiderpool",
    namespaced,
    derive = "PartialEq",
    doc = "SpiderMultusConfig describes a secondary network in typed form; Spiderpool generates \
           and keeps in sync the Multus NetworkAttachmentDefinition for it."
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::tidy)]
pub struct MultusCNIConfigSpec {
    /// The main CNI plugin: `macvlan`, `ipvlan`, `vlan`, `sriov`, `ovs`, `ib-sriov`, `ipoib`, or
    /// `custom` (use `customCNI` verbatim). Only the section of the chosen plugin may be set.
    /// Defaults to `custom`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "custom"))]
    pub cni_type: Option<CniType>,

    /// Settings of the macvlan plugin, used when `cniType` is `macvlan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macvlan: Option<SpiderMacvlanCniConfig>,

    /// Settings of the ipvlan plugin, used when `cniType` is `ipvlan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipvlan: Option<SpiderIPvlanCniConfig>,

    /// Settings of the vlan plugin, used when `cniType` is `vlan`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<SpiderVlanCniConfig>,

    /// Settings of the SR-IOV plugin, used when `cniType` is `sriov`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sriov: Option<SpiderSRIOVCniConfig>,

    /// Settings of the Open vSwitch plugin, used when `cniType` is `ovs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ovs: Option<SpiderOvsCniConfig>,

    /// Settings of the InfiniBand SR-IOV plugin, used when `cniType` is `ib-sriov`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ibsriov: Option<SpiderIBSriovCniConfig>,

    /// Settings of the IP-over-InfiniBand plugin, used when `cniType` is `ipoib`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipoib: Option<SpiderIpoibCniConfig>,

    /// Whether the coordinator plugin is appended to the generated plugin chain. Defaults to
    /// true; the webhook forces it to false when `cniType` is `custom`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub enable_coordinator: Option<bool>,

    /// When true the generated configuration has no `ipam` section, so the main plugin gets no
    /// address from Spiderpool. Defaults to false.
    #[serde(rename = "disableIPAM", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub disable_ipam: Option<bool>,

    /// Per-network coordinator settings; a field left out here takes the SpiderCoordinator
    /// value when the plugin runs. Ignored (and cleared by the webhook) for `custom`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorSpec>,

    /// Extra plugins chained after the main plugin, each a JSON object in a string, for example
    /// `{"type":"tuning","sysctl":{"net.core.somaxconn":"500"}}`. Upstream always writes this
    /// field (an empty list by default); an existing value, even empty, is kept as it is.
    #[serde(rename = "chainCNIJsonData", skip_serializing_if = "Option::is_none")]
    pub chain_cni_json_data: Option<Vec<String>>,

    /// The complete CNI configuration as a JSON string, used only when `cniType` is `custom`. May
    /// be empty, in which case the generated NetworkAttachmentDefinition has no config.
    #[serde(rename = "customCNI", skip_serializing_if = "Option::is_none")]
    pub custom_cni: Option<String>,
}

/// The main CNI plugin of a SpiderMultusConfig.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum CniType {
    /// The macvlan plugin.
    #[serde(rename = "macvlan")]
    Macvlan,
    /// The ipvlan plugin.
    #[serde(rename = "ipvlan")]
    Ipvlan,
    /// The vlan plugin.
    #[serde(rename = "vlan")]
    Vlan,
    /// The SR-IOV plugin.
    #[serde(rename = "sriov")]
    Sriov,
    /// The Open vSwitch plugin.
    #[serde(rename = "ovs")]
    Ovs,
    /// The InfiniBand SR-IOV plugin.
    #[serde(rename = "ib-sriov")]
    IbSriov,
    /// The IP-over-InfiniBand plugin.
    #[serde(rename = "ipoib")]
    Ipoib,
    /// A configuration given verbatim in `customCNI`.
    #[default]
    #[serde(rename = "custom")]
    Custom,
}

impl CniType {
    /// The spelling used in `spec.cniType` (and as the `type` of the generated main plugin).
    pub fn as_str(self) -> &'static str {
        match self {
            CniType::Macvlan => "macvlan",
            CniType::Ipvlan => "ipvlan",
            CniType::Vlan => "vlan",
            CniType::Sriov => "sriov",
            CniType::Ovs => "ovs",
            CniType::IbSriov => "ib-sriov",
            CniType::Ipoib => "ipoib",
            CniType::Custom => "custom",
        }
    }
}

impl fmt::Display for CniType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Settings of the macvlan or ipvlan plugin (the two take the same fields).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpiderMacvlanCniConfig {
    /// Host interface(s) the pod interface is created on; at least one. With two or more, the
    /// `ifacer` plugin first bonds them according to `bond`.
    pub master: Vec<String>,

    /// MTU of the pod interface; 0 lets the kernel choose. Must not be negative. Defaults to 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 0))]
    pub mtu: Option<i32>,

    /// VLAN ID, 0 to 4094. When not 0, the `ifacer` plugin creates a VLAN sub-interface of the
    /// master (or bond) and the pod interface is created on it; 0 means untagged.
    #[serde(rename = "vlanID", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094))]
    pub vlan_id: Option<i32>,

    /// Bond created from the masters; required when `master` lists two or more interfaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bond: Option<BondConfig>,

    /// Name of the RDMA device-plugin resource of this interface (for example one advertised by
    /// the RDMA shared device plugin). When set and pod resource injection is enabled, the pod
    /// webhook adds the resource to the pod's limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdma_resource_name: Option<String>,

    /// Default IPPools written into the generated IPAM configuration.
    #[serde(rename = "ippools", skip_serializing_if = "Option::is_none")]
    pub ippools: Option<SpiderpoolPools>,
}

/// Settings of the ipvlan plugin: the same fields as macvlan.
pub type SpiderIPvlanCniConfig = SpiderMacvlanCniConfig;

/// Settings of the vlan plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpiderVlanCniConfig {
    /// Host interface(s) the VLAN interface is created on; at least one. With two or more, the
    /// `ifacer` plugin first bonds them according to `bond`.
    pub master: Vec<String>,

    /// MTU of the pod interface; 0 lets the kernel choose. Must not be negative. Defaults to 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 0))]
    pub mtu: Option<i32>,

    /// How the VLAN ID is obtained: `manual` (from `vlanID`, which is then required) or `auto`
    /// (chosen by the plugin; `vlanID` must be left out). Defaults to `manual`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "manual"))]
    pub vlan_mode: Option<VlanMode>,

    /// VLAN ID, 0 to 4094. Required when `vlanMode` is `manual`, forbidden when it is `auto`.
    #[serde(rename = "vlanID", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094))]
    pub vlan_id: Option<i32>,

    /// Bond created from the masters; required when `master` lists two or more interfaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bond: Option<BondConfig>,

    /// Name of the RDMA device-plugin resource of this interface. When set and pod resource
    /// injection is enabled, the pod webhook adds the resource to the pod's limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdma_resource_name: Option<String>,

    /// Default IPPools written into the generated IPAM configuration.
    #[serde(rename = "ippools", skip_serializing_if = "Option::is_none")]
    pub ippools: Option<SpiderpoolPools>,
}

/// How the vlan plugin obtains the VLAN ID.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VlanMode {
    /// The VLAN ID comes from `vlanID`.
    #[default]
    Manual,
    /// The plugin chooses the VLAN ID; `vlanID` must not be set.
    Auto,
}

/// Settings of the SR-IOV plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpiderSRIOVCniConfig {
    /// Name of the SR-IOV device-plugin resource the virtual function is taken from, for
    /// example `spidernet.io/sriov_netdevice`. Required (checked by the webhook).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,

    /// VLAN ID set on the virtual function, 0 to 4094; 0 means untagged.
    #[serde(rename = "vlanID", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094))]
    pub vlan_id: Option<i32>,

    /// MTU of the pod interface, applied by a chained `tuning` plugin; 0 lets the kernel choose.
    /// Must not be negative. Defaults to 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("default" = 0))]
    pub mtu: Option<i32>,

    /// Minimum transmit rate of the virtual function in Mbps; 0 means no minimum. Must not be
    /// greater than `maxTxRateMbps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), transform = crate::schema::no_format)]
    pub min_tx_rate_mbps: Option<i64>,

    /// Maximum transmit rate of the virtual function in Mbps; 0 disables rate limiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), transform = crate::schema::no_format)]
    pub max_tx_rate_mbps: Option<i64>,

    /// When true the `rdma` plugin is chained after the main plugin, moving the RDMA device of
    /// the virtual function into the pod so that RDMA traffic is isolated. Defaults to false.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub rdma_isolation: Option<bool>,

    /// Default IPPools written into the generated IPAM configuration.
    #[serde(rename = "ippools", skip_serializing_if = "Option::is_none")]
    pub ippools: Option<SpiderpoolPools>,
}

/// Settings of the InfiniBand SR-IOV plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpiderIBSriovCniConfig {
    /// Name of the SR-IOV device-plugin resource the virtual function is taken from. Required
    /// (checked by the webhook).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,

    /// InfiniBand partition key of the virtual function, handed to ib-kubernetes so that the
    /// subnet manager (for example UFM or OpenSM) adds the function's GUID to the partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pkey: Option<String>,

    /// Link state forced on the virtual function: `auto`, `enable` or `disable`. Defaults to
    /// `enable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "enable"))]
    pub link_state: Option<LinkState>,

    /// When true the RDMA device of the virtual function is moved into the pod so that RDMA
    /// traffic is isolated. Defaults to true.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub rdma_isolation: Option<bool>,

    /// When true the ib-sriov plugin works together with ib-kubernetes. Defaults to false.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false))]
    pub enable_ib_kubernetes: Option<bool>,

    /// Default IPPools written into the generated IPAM configuration.
    #[serde(rename = "ippools", skip_serializing_if = "Option::is_none")]
    pub ippools: Option<SpiderpoolPools>,
}

/// Link state forced on an InfiniBand virtual function.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Follow the state of the physical function.
    Auto,
    /// Always up.
    #[default]
    Enable,
    /// Always down.
    Disable,
}

/// Settings of the IP-over-InfiniBand plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpiderIpoibCniConfig {
    /// Host InfiniBand interface the pod interface is created from. Required (checked by the
    /// webhook).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,

    /// Default IPPools written into the generated IPAM configuration.
    #[serde(rename = "ippools", skip_serializing_if = "Option::is_none")]
    pub ippools: Option<SpiderpoolPools>,
}

/// Settings of the Open vSwitch plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpiderOvsCniConfig {
    /// Name of the OVS bridge the pod port is added to. Required.
    #[serde(rename = "bridge")]
    pub bridge: String,

    /// VLAN tag of the port (access mode), 0 to 4094 (checked by the webhook).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<i32>,

    /// VLANs allowed on the port (trunk mode): single IDs and inclusive ID ranges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trunk: Option<Vec<Trunk>>,

    /// PCI address of an SR-IOV virtual function in sysfs form (for example `0000:af:06.0`),
    /// for OVS hardware offload. Upstream always writes this field (an empty string by
    /// default); an existing value, even empty, is kept as it is.
    #[serde(rename = "deviceID", skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,

    /// Default IPPools written into the generated IPAM configuration.
    #[serde(rename = "ippools", skip_serializing_if = "Option::is_none")]
    pub ippools: Option<SpiderpoolPools>,
}

/// One VLAN trunk entry of an OVS port: either a single `id` or a range `minID`..`maxID`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Trunk {
    /// First VLAN ID of an inclusive range, 0 to 4094.
    #[serde(rename = "minID", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4094), transform = crate::schema::no_format)]
    pub min_id: Option<u32>,

    /// Last VLAN ID of an inclusive range, 0 to 4094.
    #[serde(rename = "maxID", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4094), transform = crate::schema::no_format)]
    pub max_id: Option<u32>,

    /// A single VLAN ID, 0 to 4094.
    #[serde(rename = "id", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4094), transform = crate::schema::no_format)]
    pub id: Option<u32>,
}

/// A Linux bond built from several master interfaces by the `ifacer` plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BondConfig {
    /// Name of the bond interface on the host, for example `bond0`. Required.
    pub name: String,

    /// Bonding mode, 0 to 6 (0 balance-rr, 1 active-backup, 2 balance-xor, 3 broadcast,
    /// 4 802.3ad, 5 balance-tlb, 6 balance-alb). Required.
    #[schemars(range(min = 0, max = 6))]
    pub mode: i32,

    /// Further bonding parameters as `key=value` pairs separated by `;`, for example
    /// `miimon=100;primary=eth1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

/// Default IPPools of a generated IPAM configuration, used for pods that name no pool
/// themselves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpiderpoolPools {
    /// Only for `sriov`: when true, IPAM only uses pools whose subnet matches an address on the
    /// master interface of the virtual function. Rejected for macvlan, ipvlan and vlan. Defaults
    /// to false.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = false, "enum" = [true, false]))]
    pub match_master_subnet: Option<bool>,

    /// Names of the default IPv4 IPPools; glob patterns (`*`, `?`, `[...]`) are allowed.
    #[serde(rename = "ipv4", skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Vec<String>>,

    /// Names of the default IPv6 IPPools; glob patterns (`*`, `?`, `[...]`) are allowed.
    #[serde(rename = "ipv6", skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Vec<String>>,
}
