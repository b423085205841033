//! SpiderEndpoint writes (§5.7, §5.8): create with the finalizer and an owner reference to the
//! pod (none for StatefulSet pods), add the entries of NICs allocated later, rewrite the UID and
//! node of a re-created StatefulSet pod, and remove the finalizer / delete on release.
//!
//! Writes carry the `resourceVersion` that was read; on a conflict the endpoint is read again and
//! the change re-applied (ADDs for the NICs of one pod are sequential, so this is rare).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use spiderpool_api::constants::FINALIZER;
use spiderpool_api::{IPAllocationDetail, PodIPAllocation, SpiderEndpoint, WorkloadEndpointStatus};

use super::{Store, StoreError, api_error};
use spiderpool_ipam::pod::AppRef;

/// Attempts of one endpoint read-modify-write.
const ENDPOINT_ATTEMPTS: u32 = 8;

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict())
}

fn is_already_exists(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_already_exists())
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}

/// The new endpoint of `pod`.
pub(crate) fn new_endpoint(
    pod: &Pod,
    top_controller: &AppRef,
    owned_by_pod: bool,
    entries: Vec<IPAllocationDetail>,
) -> SpiderEndpoint {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    SpiderEndpoint {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: pod.metadata.namespace.clone(),
            finalizers: Some(vec![FINALIZER.to_string()]),
            // Plain `SetOwnerReference`: neither `controller` nor `blockOwnerDeletion`.
            owner_references: owned_by_pod.then(|| {
                vec![OwnerReference {
                    api_version: "v1".to_string(),
                    kind: "Pod".to_string(),
                    name,
                    uid: uid.clone(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        status: Some(WorkloadEndpointStatus {
            current: PodIPAllocation {
                uid,
                node: pod
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.node_name.clone())
                    .unwrap_or_default(),
                ips: entries,
            },
            owner_controller_type: top_controller.kind.clone(),
            owner_controller_name: top_controller.name.clone(),
        }),
    }
}

impl Store {
    pub(crate) async fn get_endpoint(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SpiderEndpoint>, StoreError> {
        self.endpoints(namespace)
            .get_opt(name)
            .await
            .map_err(|error| api_error(format!("get SpiderEndpoint {namespace}/{name}"), error))
    }

    /// Creates the endpoint, or, when one with the same pod UID exists, appends the entries of
    /// NICs it does not hold yet. An endpoint of another pod UID is an error (the caller deletes
    /// stale endpoints before allocating).
    pub(crate) async fn write_endpoint(&self, desired: SpiderEndpoint) -> Result<(), StoreError> {
        let namespace = desired.metadata.namespace.clone().unwrap_or_default();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let api = self.endpoints(&namespace);
        let what = format!("write SpiderEndpoint {namespace}/{name}");
        let desired_status = desired.status.clone().unwrap_or_default();
        for _ in 0..ENDPOINT_ATTEMPTS {
            let Some(mut existing) = self.get_endpoint(&namespace, &name).await? else {
                match api.create(&PostParams::default(), &desired).await {
                    Ok(_) => return Ok(()),
                    Err(error) if is_already_exists(&error) => continue,
                    Err(error) => return Err(api_error(what, error)),
                }
            };
            let status = existing.status.get_or_insert_with(Default::default);
            if status.current.uid != desired_status.current.uid {
                return Err(StoreError::Invalid(format!(
                    "SpiderEndpoint {namespace}/{name} belongs to pod UID {}, not {}",
                    status.current.uid, desired_status.current.uid
                )));
            }
            let mut changed = false;
            for entry in &desired_status.current.ips {
                if !status.current.ips.iter().any(|held| held.nic == entry.nic) {
                    status.current.ips.push(entry.clone());
                    changed = true;
                }
            }
            if !changed {
                return Ok(());
            }
            match api.replace(&name, &PostParams::default(), &existing).await {
                Ok(_) => return Ok(()),
                Err(error) if is_conflict(&error) => continue,
                Err(error) => return Err(api_error(what, error)),
            }
        }
        Err(StoreError::Unavailable {
            what,
            detail: format!("{ENDPOINT_ATTEMPTS} conflicting updates in a row"),
        })
    }

    /// Re-reads the endpoint and applies `change` until the write succeeds; `change` returns
    /// whether anything must be written.
    pub(crate) async fn update_endpoint(
        &self,
        namespace: &str,
        name: &str,
        mut change: impl FnMut(&mut SpiderEndpoint) -> bool,
    ) -> Result<(), StoreError> {
        let api = self.endpoints(namespace);
        let what = format!("update SpiderEndpoint {namespace}/{name}");
        for _ in 0..ENDPOINT_ATTEMPTS {
            let Some(mut endpoint) = self.get_endpoint(namespace, name).await? else {
                return Ok(());
            };
            if !change(&mut endpoint) {
                return Ok(());
            }
            match api.replace(name, &PostParams::default(), &endpoint).await {
                Ok(_) => return Ok(()),
                Err(error) if is_conflict(&error) => continue,
                Err(error) if is_not_found(&error) => return Ok(()),
                Err(error) => return Err(api_error(what, error)),
            }
        }
        Err(StoreError::Unavailable {
            what,
            detail: format!("{ENDPOINT_ATTEMPTS} conflicting updates in a row"),
        })
    }

    /// Removes our finalizer (the endpoint then goes with its pod through garbage collection)
    /// and, with `delete`, deletes it, guarded by its UID: a same-named successor (the
    /// StatefulSet pod re-created meanwhile) keeps its endpoint. Other finalizers are kept. The
    /// plugin's DEL and the controller-manager's garbage collector both retire through here.
    pub async fn retire_endpoint(
        &self,
        endpoint: &SpiderEndpoint,
        delete: bool,
    ) -> Result<(), StoreError> {
        let namespace = endpoint.metadata.namespace.clone().unwrap_or_default();
        let name = endpoint.metadata.name.clone().unwrap_or_default();
        let api = self.endpoints(&namespace);
        let mut current = endpoint.clone();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let finalizers: Vec<String> = current.metadata.finalizers.clone().unwrap_or_default();
            if !finalizers.iter().any(|finalizer| finalizer == FINALIZER) {
                break;
            }
            let remaining: Vec<String> = finalizers
                .into_iter()
                .filter(|finalizer| finalizer != FINALIZER)
                .collect();
            let patch = json!({
                "metadata": {
                    "finalizers": remaining,
                    "resourceVersion": current.metadata.resource_version,
                }
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => break,
                Err(error) if is_not_found(&error) => return Ok(()),
                Err(error) if is_conflict(&error) && attempts < ENDPOINT_ATTEMPTS => {
                    let Some(fresh) = self.get_endpoint(&namespace, &name).await? else {
                        return Ok(());
                    };
                    if fresh.metadata.uid != endpoint.metadata.uid {
                        return Ok(());
                    }
                    current = fresh;
                }
                Err(error) => {
                    return Err(api_error(
                        format!("remove the finalizer of SpiderEndpoint {namespace}/{name}"),
                        error,
                    ));
                }
            }
        }
        if delete {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: endpoint.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(error) if is_not_found(&error) || is_conflict(&error) => {}
                Err(error) => {
                    return Err(api_error(
                        format!("delete SpiderEndpoint {namespace}/{name}"),
                        error,
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use kube::Client;
    use kube::client::Body;

    use super::*;
    use crate::StoreOptions;

    /// Method, path and body of each request the stub API server saw.
    type Requests = Arc<Mutex<Vec<(String, String, String)>>>;

    /// An API server that records each request (method, path, body) and answers the finalizer
    /// patch with the endpoint and the delete with 409, as for a precondition that no longer
    /// holds (a same-named successor has another UID).
    fn recording_server() -> (Client, Requests) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let log = log.clone();
            async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_string();
                let body = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                log.lock().unwrap().push((
                    method.clone(),
                    path,
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                let (status, answer) = if method == "DELETE" {
                    (
                        409,
                        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,"message":"Precondition failed: UID in precondition: old-uid, UID in object meta: new-uid"}"#,
                    )
                } else {
                    (
                        200,
                        r#"{"apiVersion":"spiderpool.spidernet.io/v2beta1","kind":"SpiderEndpoint","metadata":{"name":"db-0","namespace":"ns","uid":"old-uid","resourceVersion":"8"}}"#,
                    )
                };
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(answer.as_bytes().to_vec()))
            }
        });
        (Client::new(service, "default"), seen)
    }

    #[tokio::test]
    async fn retiring_an_endpoint_deletes_it_only_if_it_is_still_the_same_object() {
        let (client, seen) = recording_server();
        let store = Store::new(client, StoreOptions::default());
        let endpoint: SpiderEndpoint = serde_json::from_value(serde_json::json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1",
            "kind": "SpiderEndpoint",
            "metadata": {"name": "db-0", "namespace": "ns", "uid": "old-uid",
                         "resourceVersion": "7", "finalizers": [FINALIZER]},
        }))
        .unwrap();
        // The successor's endpoint answered 409 to the UID precondition: not an error, and it
        // is left alone.
        store.retire_endpoint(&endpoint, true).await.unwrap();
        let seen = seen.lock().unwrap();
        let methods: Vec<&str> = seen.iter().map(|(method, _, _)| method.as_str()).collect();
        assert_eq!(methods, ["PATCH", "DELETE"]);
        let (_, path, body) = &seen[1];
        assert_eq!(
            path,
            "/apis/spiderpool.spidernet.io/v2beta1/namespaces/ns/spiderendpoints/db-0"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["preconditions"]["uid"], "old-uid", "{body}");
        // The finalizer patch is conditioned on the version read.
        let patch: serde_json::Value = serde_json::from_str(&seen[0].2).unwrap();
        assert_eq!(patch["metadata"]["resourceVersion"], "7", "{patch}");
    }
}
