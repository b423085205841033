//! The coordinator's fallback read from the API server: the cluster's SpiderCoordinator (named
//! `default` unless configured) and the pod's `ipam.spidernet.io/default-route-nic` annotation.
//!
//! Upstream's plugin asks its node agent, which refuses to answer until the SpiderCoordinator's
//! status phase is `Synced`. We read the object directly and use whatever it holds: a missing
//! object means the built-in defaults (logged), since refusing every pod because CIDR discovery
//! has not run would turn a missing optional feature into an outage.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use spiderpool_api::SpiderCoordinator;
use spiderpool_store::Store;

use super::config::{
    DEFAULT_ROUTE_NIC_ANNOTATION, Fallback, FallbackSource, fallback_from_coordinator,
};
use crate::protocol::{CniError, ErrorCode, K8sArgs};

/// Name of the SpiderCoordinator the cluster-wide defaults are read from.
pub const DEFAULT_COORDINATOR_NAME: &str = "default";

/// Reads the fallback from the API server through a kubeconfig.
#[derive(Debug, Clone)]
pub struct KubeFallback {
    pub kubeconfig: PathBuf,
    pub coordinator_name: String,
    pub timeout: Duration,
}

impl FallbackSource for KubeFallback {
    fn load(&self, pod: &K8sArgs) -> Result<Fallback, CniError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| {
                CniError::new(ErrorCode::INTERNAL, format!("starting a runtime: {error}"))
            })?;
        runtime.block_on(async {
            match tokio::time::timeout(self.timeout, self.read(pod)).await {
                Ok(result) => result,
                Err(_) => Err(CniError::new(
                    ErrorCode::TRY_AGAIN_LATER,
                    format!(
                        "reading SpiderCoordinator {} and the pod from the API server timed out after {:?}",
                        self.coordinator_name, self.timeout
                    ),
                )),
            }
        })
    }
}

impl KubeFallback {
    async fn read(&self, pod: &K8sArgs) -> Result<Fallback, CniError> {
        let unreachable = |what: String, error: String| {
            CniError::new(
                ErrorCode::TRY_AGAIN_LATER,
                format!("reading {what} from the API server failed: {error}"),
            )
        };
        let client = Store::client_from_kubeconfig(&self.kubeconfig, self.timeout)
            .await
            .map_err(|error| {
                CniError::invalid_config(format!(
                    "the coordinator needs the API server for its cluster defaults: {error}"
                ))
            })?;
        let coordinators: Api<SpiderCoordinator> = Api::all(client.clone());
        let coordinator = coordinators
            .get_opt(&self.coordinator_name)
            .await
            .map_err(|error| {
                unreachable(
                    format!("SpiderCoordinator {}", self.coordinator_name),
                    error.to_string(),
                )
            })?;
        if coordinator.is_none() {
            log::warn!(
                "SpiderCoordinator {} not found: using the built-in coordinator defaults",
                self.coordinator_name
            );
        }
        let annotation = match (&pod.pod_namespace, &pod.pod_name) {
            (Some(namespace), Some(name)) => {
                let pods: Api<Pod> = Api::namespaced(client, namespace);
                pods.get_opt(name)
                    .await
                    .map_err(|error| {
                        unreachable(format!("pod {namespace}/{name}"), error.to_string())
                    })?
                    .and_then(|pod| pod.metadata.annotations)
                    .and_then(|mut annotations| annotations.remove(DEFAULT_ROUTE_NIC_ANNOTATION))
            }
            _ => None,
        };
        let (spec, status) = coordinator
            .map(|object| (object.spec, object.status.unwrap_or_default()))
            .unwrap_or_default();
        Ok(fallback_from_coordinator(
            &spec,
            status.overlay_pod_cidr.unwrap_or_default(),
            status.service_cidr.unwrap_or_default(),
            annotation.as_deref(),
        ))
    }
}
