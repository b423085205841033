//! The Multus `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition, which k8s-openapi does not have.
//!
//! Spiderpool generates one per SpiderMultusConfig. The CRD belongs to Multus: in a cluster
//! with Multus it is already installed, and the controller never installs it.
//! [`multus_crd`] reproduces Multus's definition for clusters (and tests) without Multus.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a NetworkAttachmentDefinition: the CNI configuration Multus runs for the
/// network.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    singular = "network-attachment-definition",
    shortname = "nad",
    shortname = "net-attach-def",
    namespaced,
    derive = "PartialEq",
    doc = "NetworkAttachmentDefinition (Kubernetes Network Plumbing Working Group) describes a \
           network that pods can be attached to through Multus."
)]
#[schemars(transform = crate::schema::tidy)]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI configuration as a JSON string: a single plugin configuration or a configuration
    /// list (`{"cniVersion": ..., "name": ..., "plugins": [...]}`). When left out, Multus looks
    /// for a configuration file named after the object on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// Multus's NetworkAttachmentDefinition CRD, for clusters without Multus: the same names,
/// scope, version and schema semantics as the definition Multus ships (`spec` is optional,
/// `spec.config` is a string), with our own descriptions.
pub fn multus_crd() -> CustomResourceDefinition {
    let mut crd = NetworkAttachmentDefinition::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|validation| validation.open_api_v3_schema.as_mut())
        {
            // The derive makes `spec` required; Multus accepts an object without one.
            schema.required = None;
        }
    }
    crd
}
