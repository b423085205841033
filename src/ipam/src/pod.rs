//! The plain view of the pod being served, its top controller, and the pod predicates the
//! allocation and release paths need (`IsPodAlive`, StatefulSet membership).
//!
//! Callers fill [`PodContext`] from the Pod, its Namespace and its Node; nothing here touches
//! Kubernetes types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A workload reference (the pod's top controller, or the pod itself for orphans).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppRef {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// API versions of the built-in workload kinds (`constant.K8sAPIVersions`).
const BUILT_IN_API_VERSIONS: [&str; 3] = ["v1", "apps/v1", "batch/v1"];
/// Built-in workload kinds (`constant.K8sKinds`).
const BUILT_IN_KINDS: [&str; 7] = [
    "Pod",
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "CronJob",
];

impl AppRef {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Builds the reference from an `apiVersion` string.
    pub fn from_api_version(
        api_version: &str,
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> AppRef {
        let (group, version) = match api_version.split_once('/') {
            Some((group, version)) => (group.to_string(), version.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        AppRef {
            group,
            version,
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    /// The pod has no controller (top controller is the pod itself, `v1/Pod`).
    pub fn is_orphan_pod(&self) -> bool {
        self.api_version() == "v1" && self.kind == "Pod"
    }

    /// Upstream's third-party test: API version or kind outside the built-in lists (checked
    /// independently, as upstream does).
    pub fn is_third_party(&self) -> bool {
        let api_version = self.api_version();
        !BUILT_IN_API_VERSIONS.contains(&api_version.as_str())
            || !BUILT_IN_KINDS.contains(&self.kind.as_str())
    }

    /// The StatefulSet kind of `apps/v1`.
    pub fn is_statefulset(&self) -> bool {
        self.api_version() == "apps/v1" && self.kind == "StatefulSet"
    }
}

/// Everything about the pod that candidate selection and filtering read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodContext {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.nodeName`.
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub namespace_labels: BTreeMap<String, String>,
    pub namespace_annotations: BTreeMap<String, String>,
    pub node_labels: BTreeMap<String, String>,
    pub top_controller: AppRef,
}

impl PodContext {
    /// `namespace/name`, the ledger's `pod` value.
    pub fn namespaced_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The pod fields `IsPodAlive` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodLiveness {
    pub terminating: bool,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    pub phase: String,
    /// `spec.restartPolicy` (`Always`, `OnFailure`, `Never`).
    pub restart_policy: String,
    /// `status.reason` (e.g. `Evicted`).
    pub reason: String,
}

/// `IsPodAlive`: `None` (pod not found) is dead, as are terminating pods, `Succeeded` pods that will
/// not restart, `Failed` pods with `restartPolicy: Never`, and evicted pods.
pub fn is_pod_alive(pod: Option<&PodLiveness>) -> bool {
    let Some(pod) = pod else {
        return false;
    };
    if pod.terminating {
        return false;
    }
    if pod.phase == "Succeeded" && pod.restart_policy != "Always" {
        return false;
    }
    if pod.phase == "Failed" && pod.restart_policy == "Never" {
        return false;
    }
    !(pod.phase == "Failed" && pod.reason == "Evicted")
}

/// `getStatefulSetNameAndOrdinal`: `^(.*)-([0-9]+)$` with an int32 ordinal.
pub fn statefulset_name_and_ordinal(pod_name: &str) -> Option<(&str, i64)> {
    let (parent, ordinal) = pod_name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let ordinal: i32 = ordinal.parse().ok()?;
    Some((parent, i64::from(ordinal)))
}

/// `IsValidStatefulSetPod` once the StatefulSet is known: the ordinal must be inside
/// `[start, start + replicas - 1]` (`start` = `spec.ordinals.start`, 0 when unset).
pub fn is_valid_statefulset_ordinal(
    ordinal: i64,
    replicas: i64,
    ordinals_start: Option<i64>,
) -> bool {
    match ordinals_start {
        Some(start) => start <= ordinal && ordinal < start.saturating_add(replicas),
        None => ordinal < replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, restart_policy: &str, reason: &str) -> PodLiveness {
        PodLiveness {
            terminating: false,
            phase: phase.into(),
            restart_policy: restart_policy.into(),
            reason: reason.into(),
        }
    }

    // G80
    #[test]
    fn pod_liveness_matches_upstream() {
        assert!(!is_pod_alive(None));
        let terminating = PodLiveness {
            terminating: true,
            ..pod("Running", "Always", "")
        };
        assert!(!is_pod_alive(Some(&terminating)));
        assert!(!is_pod_alive(Some(&pod("Succeeded", "Never", ""))));
        assert!(!is_pod_alive(Some(&pod("Failed", "Never", ""))));
        assert!(!is_pod_alive(Some(&pod("Failed", "Always", "Evicted"))));
        assert!(is_pod_alive(Some(&pod("Running", "Always", ""))));
        assert!(is_pod_alive(Some(&pod("Succeeded", "Always", ""))));
        assert!(is_pod_alive(Some(&pod("Failed", "OnFailure", ""))));
    }

    // G81
    #[test]
    fn statefulset_membership_uses_replicas_and_start_ordinal() {
        let (parent, ordinal) = statefulset_name_and_ordinal("web-3").unwrap();
        assert_eq!(parent, "web");
        assert!(!is_valid_statefulset_ordinal(ordinal, 3, None));
        assert!(is_valid_statefulset_ordinal(ordinal, 4, None));
        assert!(is_valid_statefulset_ordinal(ordinal, 2, Some(2)));
        assert!(!is_valid_statefulset_ordinal(ordinal, 1, Some(2)));
        assert_eq!(statefulset_name_and_ordinal("web"), None);
        assert_eq!(statefulset_name_and_ordinal("web-x"), None);
        assert_eq!(
            statefulset_name_and_ordinal("my-web-12"),
            Some(("my-web", 12))
        );
        assert_eq!(statefulset_name_and_ordinal("web-99999999999"), None);
    }

    #[test]
    fn app_ref_classifies_controllers() {
        let deployment = AppRef::from_api_version("apps/v1", "Deployment", "default", "nginx", "u");
        assert_eq!(deployment.api_version(), "apps/v1");
        assert!(!deployment.is_third_party());
        let pod = AppRef::from_api_version("v1", "Pod", "default", "p", "u");
        assert!(pod.is_orphan_pod());
        let kruise =
            AppRef::from_api_version("apps.kruise.io/v1alpha1", "CloneSet", "default", "c", "u");
        assert!(kruise.is_third_party());
        let odd = AppRef::from_api_version("apps/v1", "Widget", "default", "w", "u");
        assert!(odd.is_third_party());
    }
}
