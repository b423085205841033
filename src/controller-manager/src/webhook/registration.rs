//! The Mutating/ValidatingWebhookConfigurations built for local runs (`--webhook-register-url`:
//! the controller-manager registers itself with `clientConfig.url`, which needs `create`, a verb
//! `config/rbac` does not grant). In a cluster the configurations are installed from
//! `config/webhook` and [`super::cabundle`] only keeps their `caBundle`.
//!
//! Spiderpool kinds use `failurePolicy: Fail` (a bad pool must never slip in); the annotation
//! checks use `Ignore` (an outage must never block pods) and a `matchCondition` so that objects
//! without `ipam.spidernet.io/*` annotations are not even sent.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::hooks::Hook;

const FIELD_MANAGER: &str = "spiderpool-controller-manager-webhook";

/// Where the API server reaches the webhooks.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `clientConfig.url = <base><path>` (local runs: `https://127.0.0.1:5722`). In a cluster
    /// the configurations come from `config/` with `clientConfig.service`.
    Url(String),
}

/// Options of the configurations built here.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub endpoint: Endpoint,
    pub ca_bundle: Vec<u8>,
    /// `key=value` labels a namespace must carry (namespaced kinds and Namespaces); none in
    /// production, set by tests to keep their webhooks to their own namespaces.
    pub namespace_selector: BTreeMap<String, String>,
    /// `key=value` labels a cluster-scoped object must carry.
    pub object_selector: BTreeMap<String, String>,
}

fn selector(labels: &BTreeMap<String, String>) -> Value {
    json!({"matchLabels": labels})
}

impl Registration {
    fn client_config(&self, hook: Hook) -> Value {
        let ca = serde_json::to_value(ByteString(self.ca_bundle.clone())).unwrap_or(Value::Null);
        let Endpoint::Url(base) = &self.endpoint;
        json!({
            "url": format!("{}{}", base.trim_end_matches('/'), hook.path()),
            "caBundle": ca,
        })
    }

    fn spiderpool_webhook(
        &self,
        hook: Hook,
        plural: &str,
        operations: &[&str],
        namespaced: bool,
    ) -> Value {
        let singular = plural.trim_end_matches('s');
        let mut webhook = json!({
            "name": format!("{singular}.spiderpool.spidernet.io"),
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "clientConfig": self.client_config(hook),
            "rules": [{
                "apiGroups": ["spiderpool.spidernet.io"],
                "apiVersions": ["v2beta1"],
                "resources": [plural],
                "operations": operations,
            }],
        });
        self.add_selectors(&mut webhook, namespaced);
        webhook
    }

    fn add_selectors(&self, webhook: &mut Value, namespaced: bool) {
        if namespaced && !self.namespace_selector.is_empty() {
            webhook["namespaceSelector"] = selector(&self.namespace_selector);
        }
        if !namespaced && !self.object_selector.is_empty() {
            webhook["objectSelector"] = selector(&self.object_selector);
        }
    }

    fn annotation_webhook(&self, name: &str, hook: Hook, rules: Value, annotations: &str) -> Value {
        let condition = format!(
            "has({annotations}) && {annotations}.exists(key, key.startsWith('ipam.spidernet.io/'))"
        );
        let mut webhook = json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 5,
            "clientConfig": self.client_config(hook),
            "rules": rules,
            "matchConditions": [{"name": "has-ipam-annotations", "expression": condition}],
        });
        self.add_selectors(&mut webhook, true);
        webhook
    }

    /// The MutatingWebhookConfiguration (upstream's five webhooks).
    pub fn mutating(&self) -> Value {
        let create_update = ["CREATE", "UPDATE"];
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": self.name},
            "webhooks": [
                self.spiderpool_webhook(Hook::MutateSubnet, "spidersubnets", &create_update, false),
                self.spiderpool_webhook(Hook::MutateMultusConfig, "spidermultusconfigs", &create_update, true),
                self.spiderpool_webhook(Hook::MutateIPPool, "spiderippools", &create_update, false),
                self.spiderpool_webhook(Hook::MutateReservedIP, "spiderreservedips", &create_update, false),
                self.spiderpool_webhook(Hook::MutateCoordinator, "spidercoordinators", &create_update, false),
            ],
        })
    }

    /// The ValidatingWebhookConfiguration: upstream's five plus the annotation checks.
    pub fn validating(&self) -> Value {
        let all = ["CREATE", "UPDATE", "DELETE"];
        let create_update = ["CREATE", "UPDATE"];
        let template = "object.spec.template.metadata.annotations";
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": self.name},
            "webhooks": [
                self.spiderpool_webhook(Hook::ValidateSubnet, "spidersubnets", &all, false),
                self.spiderpool_webhook(Hook::ValidateIPPool, "spiderippools", &all, false),
                self.spiderpool_webhook(Hook::ValidateReservedIP, "spiderreservedips", &create_update, false),
                self.spiderpool_webhook(Hook::ValidateCoordinator, "spidercoordinators", &create_update, false),
                self.spiderpool_webhook(Hook::ValidateMultusConfig, "spidermultusconfigs", &create_update, true),
                self.annotation_webhook(
                    "pods.ipam-annotations.spiderpool.spidernet.io",
                    Hook::ValidatePodAnnotations,
                    json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}]),
                    "object.metadata.annotations",
                ),
                self.annotation_webhook(
                    "workloads.ipam-annotations.spiderpool.spidernet.io",
                    Hook::ValidateWorkloadAnnotations,
                    json!([
                        {"apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"], "operations": create_update},
                        {"apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs"], "operations": create_update},
                    ]),
                    template,
                ),
                self.annotation_webhook(
                    "cronjobs.ipam-annotations.spiderpool.spidernet.io",
                    Hook::ValidateWorkloadAnnotations,
                    json!([{"apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["cronjobs"], "operations": create_update}]),
                    "object.spec.jobTemplate.spec.template.metadata.annotations",
                ),
                self.annotation_webhook(
                    "namespaces.ipam-annotations.spiderpool.spidernet.io",
                    Hook::ValidateNamespaceAnnotations,
                    json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["namespaces"], "operations": create_update}]),
                    "object.metadata.annotations",
                ),
            ],
        })
    }

    /// Server-side-applies both configurations.
    pub async fn apply(&self, client: &Client) -> Result<(), kube::Error> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .patch(&self.name, &params, &Patch::Apply(self.mutating()))
            .await?;
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .patch(&self.name, &params, &Patch::Apply(self.validating()))
            .await?;
        Ok(())
    }
}

/// Parses `a=b,c=d` into labels.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("invalid label {pair:?}: write key=value"))?;
        labels.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> Registration {
        Registration {
            name: "spiderpool-controller".into(),
            endpoint: Endpoint::Url("https://127.0.0.1:5722".into()),
            ca_bundle: b"CA".to_vec(),
            namespace_selector: BTreeMap::from([("team".into(), "a".into())]),
            object_selector: BTreeMap::new(),
        }
    }

    #[test]
    fn configurations_decode_as_kubernetes_types_with_every_path() {
        let registration = registration();
        let mutating: MutatingWebhookConfiguration =
            serde_json::from_value(registration.mutating()).unwrap();
        let validating: ValidatingWebhookConfiguration =
            serde_json::from_value(registration.validating()).unwrap();
        let mut urls: Vec<String> = mutating
            .webhooks
            .iter()
            .flatten()
            .map(|webhook| webhook.client_config.url.clone().unwrap())
            .chain(
                validating
                    .webhooks
                    .iter()
                    .flatten()
                    .map(|webhook| webhook.client_config.url.clone().unwrap()),
            )
            .collect();
        urls.sort();
        urls.dedup();
        let mut expected: Vec<String> = Hook::ALL
            .iter()
            .map(|hook| format!("https://127.0.0.1:5722{}", hook.path()))
            .collect();
        expected.sort();
        assert_eq!(urls, expected);
        let pods = validating
            .webhooks
            .iter()
            .flatten()
            .find(|webhook| webhook.name.starts_with("pods."))
            .unwrap();
        assert_eq!(pods.failure_policy.as_deref(), Some("Ignore"));
        assert!(pods.namespace_selector.is_some());
        let pools = validating
            .webhooks
            .iter()
            .flatten()
            .find(|webhook| webhook.name == "spiderippool.spiderpool.spidernet.io")
            .unwrap();
        assert_eq!(pools.failure_policy.as_deref(), Some("Fail"));
        assert!(pools.namespace_selector.is_none());
        assert_eq!(
            pools.client_config.ca_bundle,
            Some(ByteString(b"CA".to_vec()))
        );
    }

    #[test]
    fn the_installed_manifests_name_the_same_paths() {
        let manifests = include_str!("../../../../config/webhook/manifests.yaml");
        for hook in Hook::ALL {
            assert!(
                manifests.contains(&format!("path: {}", hook.path())),
                "{}",
                hook.path()
            );
        }
    }

    #[test]
    fn labels_parse() {
        assert_eq!(
            parse_labels("a=b, c=d").unwrap(),
            BTreeMap::from([("a".into(), "b".into()), ("c".into(), "d".into())])
        );
        assert!(parse_labels("nope").is_err());
    }
}
