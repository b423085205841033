//! The six built-in workload kinds of §4.1 behind one trait: what the auto-pool controller (and
//! the invariant checker) reads from each (pod template annotations, host network, replica count)
//! and which ones it leaves to their parent (a Deployment's ReplicaSets, a CronJob's Jobs).

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use spiderpool_ipam::autopool::{WorkloadView, job_pod_count};
use spiderpool_ipam::pod::AppRef;

/// A workload kind the auto-pool controller serves.
pub trait Workload:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + serde::Serialize
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    const API_VERSION: &'static str;

    fn template(&self) -> Option<&PodTemplateSpec>;

    /// Replicas per §4.1.
    fn replicas(&self) -> i64;

    /// Whether the pools belong to the controlling parent instead (`apps/v1` Deployment of a
    /// ReplicaSet, `batch/v1` CronJob of a Job).
    fn served_by_parent(&self) -> bool {
        false
    }
}

fn controlled_by(object: &impl Resource, api_version: &str, kind: &str) -> bool {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|owner| {
            owner.controller == Some(true) && owner.api_version == api_version && owner.kind == kind
        })
}

impl Workload for Deployment {
    const KIND: &'static str = "Deployment";
    const API_VERSION: &'static str = "apps/v1";
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }
    fn replicas(&self) -> i64 {
        i64::from(
            self.spec
                .as_ref()
                .and_then(|spec| spec.replicas)
                .unwrap_or(0),
        )
    }
}

impl Workload for ReplicaSet {
    const KIND: &'static str = "ReplicaSet";
    const API_VERSION: &'static str = "apps/v1";
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|spec| spec.template.as_ref())
    }
    fn replicas(&self) -> i64 {
        i64::from(
            self.spec
                .as_ref()
                .and_then(|spec| spec.replicas)
                .unwrap_or(0),
        )
    }
    fn served_by_parent(&self) -> bool {
        controlled_by(self, "apps/v1", "Deployment")
    }
}

impl Workload for StatefulSet {
    const KIND: &'static str = "StatefulSet";
    const API_VERSION: &'static str = "apps/v1";
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }
    fn replicas(&self) -> i64 {
        i64::from(
            self.spec
                .as_ref()
                .and_then(|spec| spec.replicas)
                .unwrap_or(0),
        )
    }
}

impl Workload for DaemonSet {
    const KIND: &'static str = "DaemonSet";
    const API_VERSION: &'static str = "apps/v1";
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }
    fn replicas(&self) -> i64 {
        i64::from(
            self.status
                .as_ref()
                .map(|status| status.desired_number_scheduled)
                .unwrap_or(0),
        )
    }
}

impl Workload for Job {
    const KIND: &'static str = "Job";
    const API_VERSION: &'static str = "batch/v1";
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|spec| &spec.template)
    }
    fn replicas(&self) -> i64 {
        let spec = self.spec.as_ref();
        job_pod_count(
            spec.and_then(|spec| spec.parallelism),
            spec.and_then(|spec| spec.completions),
        )
    }
    fn served_by_parent(&self) -> bool {
        controlled_by(self, "batch/v1", "CronJob")
    }
}

impl Workload for CronJob {
    const KIND: &'static str = "CronJob";
    const API_VERSION: &'static str = "batch/v1";
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec
            .job_template
            .spec
            .as_ref()
            .map(|spec| &spec.template)
    }
    fn replicas(&self) -> i64 {
        let spec = self.spec.job_template.spec.as_ref();
        job_pod_count(
            spec.and_then(|spec| spec.parallelism),
            spec.and_then(|spec| spec.completions),
        )
    }
}

/// The application reference of a workload.
pub fn app_ref<K: Workload>(workload: &K) -> AppRef {
    AppRef::from_api_version(
        K::API_VERSION,
        K::KIND,
        workload.namespace().unwrap_or_default(),
        workload.name_any(),
        workload.uid().unwrap_or_default(),
    )
}

/// What the pure planner reads.
pub fn view<K: Workload>(workload: &K) -> WorkloadView {
    let template = workload.template();
    WorkloadView {
        app: app_ref(workload),
        replicas: workload.replicas(),
        host_network: template
            .and_then(|template| template.spec.as_ref())
            .and_then(|spec| spec.host_network)
            .unwrap_or(false),
        annotations: template
            .and_then(|template| template.metadata.as_ref())
            .and_then(|metadata| metadata.annotations.clone())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replicasets_of_deployments_and_jobs_of_cronjobs_are_left_to_their_parent() {
        let replicaset: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u", "controller": true}
            ]},
            "spec": {"replicas": 2, "selector": {}}
        }))
        .unwrap();
        assert!(replicaset.served_by_parent());
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "default", "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "CronJob", "name": "c", "uid": "u", "controller": true}
            ]},
            "spec": {"template": {}}
        }))
        .unwrap();
        assert!(job.served_by_parent());
        assert_eq!(job.replicas(), 1);
    }

    #[test]
    fn daemonsets_count_desired_scheduled_pods_and_views_read_the_template() {
        let daemonset: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "1-2-3"},
            "spec": {"selector": {}, "template": {
                "metadata": {"annotations": {"ipam.spidernet.io/subnet": "{\"ipv4\":[\"s\"]}"}},
                "spec": {"hostNetwork": true, "containers": []}
            }},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 0,
                       "numberMisscheduled": 0, "numberReady": 0}
        }))
        .unwrap();
        let view = view(&daemonset);
        assert_eq!(view.replicas, 3);
        assert!(view.host_network);
        assert_eq!(view.app.api_version(), "apps/v1");
        assert_eq!(view.app.kind, "DaemonSet");
        assert_eq!(view.annotations.len(), 1);
    }
}
