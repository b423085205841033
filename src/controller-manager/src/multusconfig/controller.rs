//! The SpiderMultusConfig controller.
//!
//! Level-triggered: every SMC event and every event on a NAD it owns re-renders the NAD and
//! server-side-applies it under one field manager, so edits are followed, a deleted NAD comes
//! back at once, and a no-op apply costs the API server nothing. Deletion needs no finalizer:
//! the NAD carries a controller ownerReference and Kubernetes garbage-collects it.
//!
//! Safety rules: a NAD controlled by another object (another SMC, or any other controller) is
//! never overwritten — the SMC gets a Warning Event instead. A NAD without a controller is
//! adopted, as upstream does.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use spiderpool_api::{NetworkAttachmentDefinition, SpiderMultusConfig};

use super::render::{self, RenderError};
use crate::runtime::admin::Readiness;
use crate::runtime::backoff::ErrorBackoff;
use crate::runtime::metrics::ControllerMetrics;
use crate::runtime::reconcile::{Events, Frame};

pub const CONTROLLER_NAME: &str = "multusconfig";
/// Field manager of everything this controller applies.
pub const FIELD_MANAGER: &str = "spiderpool-multusconfig-controller";
pub const READINESS: &str = "multusconfig cache";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading NetworkAttachmentDefinition {namespace}/{name}: {source}")]
    ReadNad {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("applying NetworkAttachmentDefinition {namespace}/{name}: {source}")]
    ApplyNad {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "NetworkAttachmentDefinition {namespace}/{name} is being deleted; it will be re-created once it is gone"
    )]
    NadTerminating { namespace: String, name: String },
    #[error("SpiderMultusConfig has no namespace or uid")]
    IncompleteObject,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadNad { .. } => "read_nad",
            Error::ApplyNad { .. } => "apply_nad",
            Error::NadTerminating { .. } => "nad_terminating",
            Error::IncompleteObject => "incomplete_object",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub events: Events,
    pub frame: Frame,
}

impl Context {
    pub fn new(client: Client, metrics: ControllerMetrics) -> Self {
        Self {
            events: Events::new(&client, "Reconcile"),
            client,
            frame: Frame::new(
                CONTROLLER_NAME,
                metrics,
                ErrorBackoff::new(Duration::from_millis(200), Duration::from_secs(300)),
            ),
        }
    }
}

/// Runs the controller until the future is dropped (leadership lost or shutdown).
pub async fn run(context: Arc<Context>, readiness: Readiness) {
    let smcs: Api<SpiderMultusConfig> = Api::all(context.client.clone());
    let nads: Api<NetworkAttachmentDefinition> = Api::all(context.client.clone());
    let controller = Controller::new(smcs, watcher::Config::default().any_semantic())
        .owns(nads, watcher::Config::default().any_semantic());
    let store = controller.store();
    let outcomes = controller.run(reconcile, error_policy, context.clone());
    context
        .frame
        .run(store, readiness, READINESS, outcomes)
        .await;
}

fn key(smc: &SpiderMultusConfig) -> String {
    format!("{}/{}", smc.namespace().unwrap_or_default(), smc.name_any())
}

async fn reconcile(smc: Arc<SpiderMultusConfig>, context: Arc<Context>) -> Result<Action, Error> {
    context
        .frame
        .timed(&key(&smc), reconcile_inner(&smc, &context))
        .await
}

fn error_policy(smc: Arc<SpiderMultusConfig>, error: &Error, context: Arc<Context>) -> Action {
    context
        .frame
        .requeue(&key(&smc), error.metric_label(), error, false)
}

async fn reconcile_inner(smc: &SpiderMultusConfig, context: &Context) -> Result<Action, Error> {
    if smc.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (Some(namespace), Some(uid)) = (smc.namespace(), smc.uid()) else {
        return Err(Error::IncompleteObject);
    };
    let rendered = match render::render(smc) {
        Ok(rendered) => rendered,
        Err(error) => {
            // Bad input is the user's to fix; retrying would not help. Report it and wait for an edit.
            context.frame.failure(error.metric_label());
            report_render_error(smc, context, &error).await;
            return Ok(Action::await_change());
        }
    };
    let nads: Api<NetworkAttachmentDefinition> =
        Api::namespaced(context.client.clone(), &namespace);
    let existing = nads
        .get_opt(&rendered.name)
        .await
        .map_err(|source| Error::ReadNad {
            namespace: namespace.clone(),
            name: rendered.name.clone(),
            source,
        })?;
    if let Some(existing) = &existing {
        if existing.meta().deletion_timestamp.is_some() {
            return Err(Error::NadTerminating {
                namespace,
                name: rendered.name,
            });
        }
        if let Some(other) = foreign_controller(existing, &uid) {
            context
                .events
                .publish(
                    smc,
                    EventType::Warning,
                    "NetworkAttachmentDefinitionConflict",
                    format!(
                        "not updating net-attach-def {namespace}/{}: it is managed by {} {}",
                        rendered.name, other.kind, other.name
                    ),
                )
                .await;
            return Ok(Action::await_change());
        }
    }

    let owner = OwnerReference {
        api_version: "spiderpool.spidernet.io/v2beta1".into(),
        kind: "SpiderMultusConfig".into(),
        name: smc.name_any(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut desired = json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {
            "name": rendered.name,
            "namespace": namespace,
            "ownerReferences": [owner],
        },
    });
    // Never an empty map: the API server stores none, so every apply of `annotations: {}` would
    // be a change (a write, a watch event, another reconcile: a hot loop per SMC).
    if !rendered.annotations.is_empty() {
        desired["metadata"]["annotations"] = json!(rendered.annotations);
    }
    if let Some(config) = &rendered.config {
        desired["spec"] = json!({ "config": config });
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let applied = nads
        .patch(&rendered.name, &params, &Patch::Apply(&desired))
        .await
        .map_err(|source| Error::ApplyNad {
            namespace: namespace.clone(),
            name: rendered.name.clone(),
            source,
        })?;

    match existing {
        None => {
            context
                .events
                .publish(
                    smc,
                    EventType::Normal,
                    "NetworkAttachmentDefinitionCreated",
                    format!("created net-attach-def {namespace}/{}", rendered.name),
                )
                .await;
        }
        Some(before) if before.resource_version() != applied.resource_version() => {
            context
                .events
                .publish(
                    smc,
                    EventType::Normal,
                    "NetworkAttachmentDefinitionUpdated",
                    format!("updated net-attach-def {namespace}/{}", rendered.name),
                )
                .await;
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

/// The controller reference of `nad` when it points at anything other than this SMC.
fn foreign_controller<'a>(
    nad: &'a NetworkAttachmentDefinition,
    uid: &str,
) -> Option<&'a OwnerReference> {
    nad.owner_references()
        .iter()
        .find(|reference| reference.controller == Some(true) && reference.uid != uid)
}

async fn report_render_error(smc: &SpiderMultusConfig, context: &Context, error: &RenderError) {
    tracing::warn!(smc = %key(smc), %error, "cannot render the net-attach-def");
    context
        .events
        .publish(
            smc,
            EventType::Warning,
            "InvalidSpec",
            format!("cannot generate the net-attach-def: {error}"),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nad_with_owner(uid: &str, controller: Option<bool>) -> NetworkAttachmentDefinition {
        let mut nad = NetworkAttachmentDefinition::new("n", Default::default());
        nad.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "spiderpool.spidernet.io/v2beta1".into(),
            kind: "SpiderMultusConfig".into(),
            name: "other".into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: None,
        }]);
        nad
    }

    #[test]
    fn nad_controlled_by_another_object_is_foreign() {
        assert!(foreign_controller(&nad_with_owner("other-uid", Some(true)), "mine").is_some());
    }

    #[test]
    fn nad_controlled_by_us_or_uncontrolled_is_not_foreign() {
        assert!(foreign_controller(&nad_with_owner("mine", Some(true)), "mine").is_none());
        assert!(foreign_controller(&nad_with_owner("other-uid", None), "mine").is_none());
        let bare = NetworkAttachmentDefinition::new("n", Default::default());
        assert!(foreign_controller(&bare, "mine").is_none());
    }
}
