//! Keeps `caBundle` of the installed webhook configurations equal to the CA of the served
//! certificate (`auto` mode, or `provided` mode with a `ca.crt`).
//!
//! Level-triggered, like the controllers: one kube-runtime `Controller` per kind watches the
//! Mutating- and the ValidatingWebhookConfiguration named `--webhook-configuration-name` — and only
//! that object, through a `metadata.name` field selector, so that RBAC `resourceNames` also holds
//! for the list and the watch. A reconcile writes the CA into every webhook whose `caBundle`
//! differs. That covers configurations installed after the controller-manager started, a
//! `caBundle` overwritten by a re-applied manifest, and a renewed CA (every configuration is
//! reconciled again when the CA changes). Failures are retried with per-object backoff.
//!
//! The write is a server-side apply of nothing but `webhooks[*].clientConfig.caBundle`, forced,
//! under its own field manager: the rest of the object belongs to whoever installed it (the
//! manifests, or `--webhook-register-url` for local runs).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::runtime::backoff::ErrorBackoff;

/// Field manager of the `caBundle` fields (not of the configurations themselves).
pub const FIELD_MANAGER: &str = "spiderpool-controller-manager-cabundle";

#[derive(Debug, thiserror::Error)]
#[error("writing caBundle into {kind} {name}: {source}")]
pub struct Error {
    kind: &'static str,
    name: String,
    source: kube::Error,
}

/// The two configuration kinds, seen as a list of named webhooks with a `caBundle` each.
pub trait WebhookConfiguration:
    Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
    + k8s_openapi::Resource
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Every webhook's name and current `caBundle`.
    fn ca_bundles(&self) -> Vec<(&str, Option<&ByteString>)>;
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    fn ca_bundles(&self) -> Vec<(&str, Option<&ByteString>)> {
        self.webhooks
            .iter()
            .flatten()
            .map(|webhook| {
                (
                    webhook.name.as_str(),
                    webhook.client_config.ca_bundle.as_ref(),
                )
            })
            .collect()
    }
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    fn ca_bundles(&self) -> Vec<(&str, Option<&ByteString>)> {
        self.webhooks
            .iter()
            .flatten()
            .map(|webhook| {
                (
                    webhook.name.as_str(),
                    webhook.client_config.ca_bundle.as_ref(),
                )
            })
            .collect()
    }
}

/// The apply configuration that sets `bundle` in every webhook of `configuration`, or `None`
/// when every webhook has it already.
pub fn ca_bundle_apply<K: WebhookConfiguration>(configuration: &K, bundle: &[u8]) -> Option<Value> {
    let webhooks = configuration.ca_bundles();
    if webhooks
        .iter()
        .all(|(_, current)| current.is_some_and(|current| current.0 == bundle))
    {
        return None;
    }
    let encoded = serde_json::to_value(ByteString(bundle.to_vec())).ok()?;
    let webhooks: Vec<Value> = webhooks
        .iter()
        .map(|(name, _)| json!({"name": name, "clientConfig": {"caBundle": encoded}}))
        .collect();
    Some(json!({
        "apiVersion": <K as k8s_openapi::Resource>::API_VERSION,
        "kind": <K as k8s_openapi::Resource>::KIND,
        "metadata": {"name": configuration.name_any()},
        "webhooks": webhooks,
    }))
}

struct Context {
    client: Client,
    /// The CA to inject; `None` until one is known.
    bundle: watch::Receiver<Option<Vec<u8>>>,
    backoff: ErrorBackoff,
}

/// Runs until the process ends: keeps `caBundle` of both configurations named `name` equal to
/// the latest value of `bundle`.
pub async fn keep_injected(client: Client, name: String, bundle: watch::Receiver<Option<Vec<u8>>>) {
    tokio::join!(
        run_kind::<MutatingWebhookConfiguration>(client.clone(), &name, bundle.clone()),
        run_kind::<ValidatingWebhookConfiguration>(client, &name, bundle),
    );
}

async fn run_kind<K: WebhookConfiguration>(
    client: Client,
    name: &str,
    bundle: watch::Receiver<Option<Vec<u8>>>,
) {
    let api: Api<K> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // A new CA is written into whatever configuration the watch holds.
    let ca_changes = futures::stream::unfold(bundle.clone(), |mut bundle| async move {
        bundle.changed().await.ok().map(|()| ((), bundle))
    });
    let context = Arc::new(Context {
        client,
        bundle,
        backoff: ErrorBackoff::new(Duration::from_millis(500), Duration::from_secs(60)),
    });
    Controller::new(api, config)
        .reconcile_all_on(ca_changes)
        .run(reconcile::<K>, error_policy::<K>, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "caBundle reconcile outcome");
            }
        })
        .await;
}

async fn reconcile<K: WebhookConfiguration>(
    configuration: Arc<K>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let Some(bundle) = context.bundle.borrow().clone() else {
        return Ok(Action::await_change());
    };
    let name = configuration.name_any();
    if let Some(apply) = ca_bundle_apply(configuration.as_ref(), &bundle) {
        Api::<K>::all(context.client.clone())
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&apply),
            )
            .await
            .map_err(|source| Error {
                kind: <K as k8s_openapi::Resource>::KIND,
                name: name.clone(),
                source,
            })?;
        tracing::info!(kind = <K as k8s_openapi::Resource>::KIND, %name, "webhook caBundle injected");
    }
    context.backoff.reset(&name);
    Ok(Action::await_change())
}

fn error_policy<K: WebhookConfiguration>(
    configuration: Arc<K>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    let delay = context.backoff.next_delay(&configuration.name_any());
    tracing::warn!(%error, retry_in = ?delay, "webhook caBundle not injected");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validating(bundles: &[Option<&[u8]>]) -> ValidatingWebhookConfiguration {
        let webhooks: Vec<Value> = bundles
            .iter()
            .enumerate()
            .map(|(index, bundle)| {
                let mut client_config = json!({"url": "https://127.0.0.1:5722/validate"});
                if let Some(bundle) = bundle {
                    client_config["caBundle"] =
                        serde_json::to_value(ByteString(bundle.to_vec())).unwrap();
                }
                json!({
                    "name": format!("hook{index}.spiderpool.spidernet.io"),
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "clientConfig": client_config,
                })
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "spiderpool-controller"},
            "webhooks": webhooks,
        }))
        .unwrap()
    }

    #[test]
    fn configurations_with_the_bundle_everywhere_need_no_write() {
        assert_eq!(
            ca_bundle_apply(&validating(&[Some(b"CA"), Some(b"CA")]), b"CA"),
            None
        );
    }

    #[test]
    fn a_missing_or_different_bundle_is_applied_to_every_webhook_and_nothing_else() {
        for bundles in [
            [None, Some(&b"CA"[..])],
            [Some(&b"OLD"[..]), Some(&b"CA"[..])],
        ] {
            let apply = ca_bundle_apply(&validating(&bundles), b"CA").unwrap();
            let encoded = serde_json::to_value(ByteString(b"CA".to_vec())).unwrap();
            assert_eq!(
                apply,
                json!({
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingWebhookConfiguration",
                    "metadata": {"name": "spiderpool-controller"},
                    "webhooks": [
                        {"name": "hook0.spiderpool.spidernet.io", "clientConfig": {"caBundle": encoded}},
                        {"name": "hook1.spiderpool.spidernet.io", "clientConfig": {"caBundle": encoded}},
                    ],
                })
            );
        }
    }
}
