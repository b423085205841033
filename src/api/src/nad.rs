//! The Multus `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition, which k8s-openapi does not have.
//!
//! Spiderpool generates one per SpiderMultusConfig. The CRD belongs to Multus: in a cluster
//! with Multus it is already installed, and the controller never installs it.
//! [`multus_crd`] reproduces Multus's definition for clusters (and tests) without Multus.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{CustomResourceExt, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A NetworkAttachmentDefinition object.
///
/// Written by hand instead of derived because Multus allows an object without `spec` (the
/// config then comes from a file on the node); a derived type would fail to decode such an
/// object and break every list or watch that meets one. Here a missing spec reads as empty.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NetworkAttachmentDefinition {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// The network's CNI configuration; absent (empty) when Multus reads it from the node.
    #[serde(default)]
    pub spec: NetworkAttachmentDefinitionSpec,
}

impl Serialize for NetworkAttachmentDefinition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            api_version: &'a str,
            kind: &'a str,
            metadata: &'a ObjectMeta,
            #[serde(skip_serializing_if = "NetworkAttachmentDefinitionSpec::is_empty")]
            spec: &'a NetworkAttachmentDefinitionSpec,
        }
        Wire {
            api_version: "k8s.cni.cncf.io/v1",
            kind: "NetworkAttachmentDefinition",
            metadata: &self.metadata,
            spec: &self.spec,
        }
        .serialize(serializer)
    }
}

impl NetworkAttachmentDefinition {
    /// A NAD with the given name and spec (namespace to be set by the caller).
    pub fn new(name: &str, spec: NetworkAttachmentDefinitionSpec) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            spec,
        }
    }
}

impl Resource for NetworkAttachmentDefinition {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "NetworkAttachmentDefinition".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "k8s.cni.cncf.io".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        "k8s.cni.cncf.io/v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "network-attachment-definitions".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl NetworkAttachmentDefinitionSpec {
    fn is_empty(&self) -> bool {
        self.config.is_none()
    }
}

/// The derived type exists only to generate the CRD schema.
mod generated {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "k8s.cni.cncf.io",
        version = "v1",
        kind = "NetworkAttachmentDefinition",
        plural = "network-attachment-definitions",
        singular = "network-attachment-definition",
        shortname = "nad",
        shortname = "net-attach-def",
        namespaced,
        doc = "NetworkAttachmentDefinition (Kubernetes Network Plumbing Working Group) describes a \
               network that pods can be attached to through Multus."
    )]
    #[schemars(transform = crate::schema::tidy)]
    pub struct Spec {
        #[serde(flatten)]
        pub inner: super::NetworkAttachmentDefinitionSpec,
    }
}

/// Desired state of a NetworkAttachmentDefinition: the CNI configuration Multus runs for the
/// network.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
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
    let mut crd = generated::NetworkAttachmentDefinition::crd();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_without_spec_decodes_as_empty_spec() {
        let nad: NetworkAttachmentDefinition = serde_json::from_str(
            r#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition","metadata":{"name":"from-file"}}"#,
        )
        .expect("a NAD without spec is valid");
        assert_eq!(nad.spec.config, None);
    }

    #[test]
    fn serialises_type_meta_and_omits_an_empty_spec() {
        let nad = NetworkAttachmentDefinition::new("n", NetworkAttachmentDefinitionSpec::default());
        let value = serde_json::to_value(&nad).expect("serialises");
        assert_eq!(value["apiVersion"], "k8s.cni.cncf.io/v1");
        assert_eq!(value["kind"], "NetworkAttachmentDefinition");
        assert!(value.get("spec").is_none());
        let nad = NetworkAttachmentDefinition::new(
            "n",
            NetworkAttachmentDefinitionSpec {
                config: Some("{}".into()),
            },
        );
        let value = serde_json::to_value(&nad).expect("serialises");
        assert_eq!(value["spec"]["config"], "{}");
    }
}
