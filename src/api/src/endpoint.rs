//! `SpiderEndpoint`: the record of the addresses a pod (or KubeVirt VM) currently holds.
//!
//! The IPAM path writes one per pod, named after it, when it allocates; release and garbage
//! collection read it back. Upstream gives this kind no `spec` and a top-level `status` that is
//! written with a plain update, without a status subresource. `#[derive(CustomResource)]` cannot
//! express that shape (it always adds a `spec`, and a `status` always brings the subresource),
//! so the root type and its CRD are written out here by hand, with the same schema machinery.

use std::borrow::Cow;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceSubresources,
    CustomResourceValidation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use kube::core::dynamic::ApiResource;
use kube::core::object::HasStatus;
use kube::core::{NamespaceResourceScope, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::constants::{API_VERSION, GROUP, VERSION};
use crate::ippool::Route;

const KIND: &str = "SpiderEndpoint";
const PLURAL: &str = "spiderendpoints";
const SINGULAR: &str = "spiderendpoint";
const SHORT_NAMES: &[&str] = &["se"];
const CRD_NAME: &str = "spiderendpoints.spiderpool.spidernet.io";

/// SpiderEndpoint records the IP addresses that Spiderpool assigned to a pod, one entry per
/// interface. It is named after the pod, lives in the pod's namespace, has no spec, and is
/// written by Spiderpool only.
#[derive(Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(transform = crate::schema::tidy)]
pub struct SpiderEndpoint {
    /// Standard object metadata.
    #[schemars(skip)]
    pub metadata: ObjectMeta,

    /// The pod's current allocation and the workload that owns the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WorkloadEndpointStatus>,
}

impl SpiderEndpoint {
    /// An endpoint named `name` holding `status`.
    pub fn new(name: &str, status: WorkloadEndpointStatus) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            status: Some(status),
        }
    }
}

impl Serialize for SpiderEndpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            api_version: &'a str,
            kind: &'a str,
            metadata: &'a ObjectMeta,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<&'a WorkloadEndpointStatus>,
        }
        Wire {
            api_version: API_VERSION,
            kind: KIND,
            metadata: &self.metadata,
            status: self.status.as_ref(),
        }
        .serialize(serializer)
    }
}

impl Resource for SpiderEndpoint {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        API_VERSION.into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl HasStatus for SpiderEndpoint {
    type Status = WorkloadEndpointStatus;

    fn status(&self) -> Option<&WorkloadEndpointStatus> {
        self.status.as_ref()
    }

    fn status_mut(&mut self) -> &mut Option<WorkloadEndpointStatus> {
        &mut self.status
    }
}

impl CustomResourceExt for SpiderEndpoint {
    fn crd() -> CustomResourceDefinition {
        let column =
            |name: &str, json_path: &str, description: &str| CustomResourceColumnDefinition {
                name: name.to_owned(),
                type_: "string".to_owned(),
                json_path: json_path.to_owned(),
                description: Some(description.to_owned()),
                ..CustomResourceColumnDefinition::default()
            };
        CustomResourceDefinition {
            metadata: ObjectMeta {
                name: Some(CRD_NAME.to_owned()),
                ..ObjectMeta::default()
            },
            spec: CustomResourceDefinitionSpec {
                group: GROUP.to_owned(),
                names: CustomResourceDefinitionNames {
                    categories: Some(vec![crate::constants::CATEGORY.to_owned()]),
                    kind: KIND.to_owned(),
                    plural: PLURAL.to_owned(),
                    short_names: Some(SHORT_NAMES.iter().map(|name| (*name).to_owned()).collect()),
                    singular: Some(SINGULAR.to_owned()),
                    ..CustomResourceDefinitionNames::default()
                },
                scope: "Namespaced".to_owned(),
                versions: vec![CustomResourceDefinitionVersion {
                    additional_printer_columns: Some(vec![
                        column("INTERFACE", ".status.current.ips[0].interface", "interface"),
                        column("IPV4POOL", ".status.current.ips[0].ipv4Pool", "ipv4Pool"),
                        column("IPV4", ".status.current.ips[0].ipv4", "ipv4"),
                        column("IPV6POOL", ".status.current.ips[0].ipv6Pool", "ipv6Pool"),
                        column("IPV6", ".status.current.ips[0].ipv6", "ipv6"),
                        column("NODE", ".status.current.node", "node"),
                    ]),
                    name: VERSION.to_owned(),
                    schema: Some(CustomResourceValidation {
                        open_api_v3_schema: Some(crate::schema::crd_schema_for::<Self>()),
                    }),
                    served: true,
                    storage: true,
                    // Deliberately no status subresource: the whole object, status included, is
                    // written with an ordinary update, as upstream does.
                    subresources: Some(CustomResourceSubresources::default()),
                    ..CustomResourceDefinitionVersion::default()
                }],
                ..CustomResourceDefinitionSpec::default()
            },
            status: None,
        }
    }

    fn crd_name() -> &'static str {
        CRD_NAME
    }

    fn api_resource() -> ApiResource {
        ApiResource::erase::<Self>(&())
    }

    fn shortnames() -> &'static [&'static str] {
        SHORT_NAMES
    }
}

/// The addresses a pod holds and the workload that owns it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpointStatus {
    /// The allocation of the pod as it exists now.
    pub current: PodIPAllocation,

    /// Kind of the pod's top-level owner: `Pod` for a pod without controller, `Deployment`,
    /// `ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`, `VirtualMachineInstance`, or
    /// the kind of a third-party controller.
    pub owner_controller_type: String,

    /// Name of the pod's top-level owner (the pod's own name when it has none).
    pub owner_controller_name: String,
}

/// One pod's allocation: which pod instance, on which node, with which addresses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PodIPAllocation {
    /// UID of the pod instance the addresses were allocated to.
    pub uid: String,

    /// Name of the node the pod runs on.
    pub node: String,

    /// One entry per pod interface that received addresses.
    pub ips: Vec<IPAllocationDetail>,
}

/// The addresses, gateways and routes assigned to one pod interface.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAllocationDetail {
    /// Name of the interface inside the pod, for example `eth0` or `net1`.
    #[serde(rename = "interface")]
    pub nic: String,

    /// IPv4 address with the prefix length of its pool, for example `172.18.40.40/24`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,

    /// IPv6 address with the prefix length of its pool, for example `fd00:172:18::40/64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,

    /// Name of the SpiderIPPool the IPv4 address came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_pool: Option<String>,

    /// Name of the SpiderIPPool the IPv6 address came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_pool: Option<String>,

    /// VLAN ID of the interface, 0 to 4094. Kept for compatibility; always 0. Defaults to 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4094), extend("default" = 0))]
    pub vlan: Option<i64>,

    /// IPv4 gateway of the interface, present when its pool has a gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_gateway: Option<String>,

    /// IPv6 gateway of the interface, present when its pool has a gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<String>,

    /// Whether the default route through this interface's gateway was left out, as requested
    /// by the pod's `ipam.spidernet.io/ippools` annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_gateway: Option<bool>,

    /// Routes installed for this interface: the pool's routes plus the pod's custom routes
    /// whose gateway lies in this interface's subnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,

    /// MAC address of the interface (`aa:bb:cc:dd:ee:ff`), set only when an external system
    /// such as a cloud provider chose it during allocation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}
