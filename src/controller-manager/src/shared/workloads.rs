//! Whether an application (built-in or third-party) still exists: the IPPool controller's and
//! the Subnet controller's reclaim rules ask this with an uncached read.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DynamicObject};
use kube::core::{GroupVersionKind, NamespaceResourceScope};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use spiderpool_ipam::pod::AppRef;

async fn uid_of<K>(client: &Client, app: &AppRef) -> Result<Option<String>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), &app.namespace);
    Ok(api
        .get_opt(&app.name)
        .await?
        .filter(|object| object.meta().deletion_timestamp.is_none())
        .and_then(|object| object.uid()))
}

/// The UID of the application when it exists and is not being deleted (an uncached read).
/// Third-party kinds are resolved through discovery.
pub async fn current_uid(client: &Client, app: &AppRef) -> Result<Option<String>, kube::Error> {
    match (app.api_version().as_str(), app.kind.as_str()) {
        ("apps/v1", "Deployment") => uid_of::<Deployment>(client, app).await,
        ("apps/v1", "ReplicaSet") => uid_of::<ReplicaSet>(client, app).await,
        ("apps/v1", "StatefulSet") => uid_of::<StatefulSet>(client, app).await,
        ("apps/v1", "DaemonSet") => uid_of::<DaemonSet>(client, app).await,
        ("batch/v1", "Job") => uid_of::<Job>(client, app).await,
        ("batch/v1", "CronJob") => uid_of::<CronJob>(client, app).await,
        _ => {
            let gvk = GroupVersionKind::gvk(&app.group, &app.version, &app.kind);
            let (resource, _) = match kube::discovery::pinned_kind(client, &gvk).await {
                Ok(found) => found,
                // The kind is not served any more: none of its objects exist.
                Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(None),
                Err(kube::Error::Discovery(_)) => return Ok(None),
                Err(error) => return Err(error),
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &app.namespace, &resource);
            Ok(api
                .get_opt(&app.name)
                .await?
                .filter(|object| object.metadata.deletion_timestamp.is_none())
                .and_then(|object| object.metadata.uid))
        }
    }
}
