//! IP garbage collection (§5.10): whether an allocation record may be released.
//!
//! The garbage collector in the controller-manager looks at every `(pool, ip, record)` of every
//! pool (and every SpiderEndpoint), reads the pod the record names, and asks [`decide`]. Only a
//! [`Verdict::Release`] frees anything; the collector re-reads the pod and the endpoint from the
//! API server (not a cache) and asks again before it writes.
//!
//! Upstream's rules, plus one guard of our own: a record whose pod or endpoint was created less than
//! [`GcSettings::fresh_window_seconds`] ago is always kept, so a collector that races a CNI ADD in
//! flight (the pool record is written before the endpoint, and caches lag) never frees a fresh
//! allocation.
//!
//! Times are Unix seconds.

/// The collector's knobs (upstream's `SPIDERPOOL_GC_*` environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSettings {
    /// `SPIDERPOOL_GC_ADDITIONAL_GRACE_DELAY`: added to every grace deadline.
    pub additional_grace_delay_seconds: i64,
    /// `SPIDERPOOL_GC_STATELESS_TERMINATING_POD_ON_READY_NODE_ENABLED`.
    pub terminating_on_ready_node: bool,
    /// `SPIDERPOOL_GC_STATELESS_TERMINATING_POD_ON_NOT_READY_NODE_ENABLED`.
    pub terminating_on_not_ready_node: bool,
    /// `SPIDERPOOL_GC_ENABLE_STATELESS_RUNNING_POD_ON_EMPTY_POD_STATUS_IPS`.
    pub running_without_pod_ips: bool,
    /// Records of pods or endpoints younger than this are kept (an ADD may be in flight).
    pub fresh_window_seconds: i64,
}

impl Default for GcSettings {
    fn default() -> GcSettings {
        GcSettings {
            additional_grace_delay_seconds: 5,
            terminating_on_ready_node: true,
            terminating_on_not_ready_node: true,
            running_without_pod_ips: false,
            fresh_window_seconds: 30,
        }
    }
}

/// Whether the pod keeps its addresses across re-creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Addresses belong to one pod instance (Deployment, Job, ... pods).
    Stateless,
    /// A StatefulSet (or KubeVirt VM) member: `valid` while the StatefulSet exists and the ordinal
    /// is inside its replicas.
    Static { valid: bool },
}

impl Membership {
    fn is_valid_static(self) -> bool {
        matches!(self, Membership::Static { valid: true })
    }
}

/// The record being judged: who the pool (or endpoint) says holds the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOwner {
    /// The pod UID of the record.
    pub uid: String,
}

/// What the collector knows about the pod named by the record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodState {
    pub uid: String,
    /// `status.phase`; empty when the pod has no status yet.
    pub phase: String,
    /// `metadata.creationTimestamp`.
    pub created_at: Option<i64>,
    /// `deletionTimestamp + deletionGracePeriodSeconds` when the pod is terminating.
    pub deletion_deadline: Option<i64>,
    /// The latest container finish time of a Succeeded / Failed pod.
    pub finished_at: Option<i64>,
    /// `spec.terminationGracePeriodSeconds` (30 when unset).
    pub termination_grace_seconds: i64,
    /// `status.podIPs` is not empty.
    pub has_pod_ips: bool,
    /// The Ready condition of the pod's node (`None` when unknown or unscheduled).
    pub node_ready: Option<bool>,
}

/// What the collector knows about the pod's SpiderEndpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointState {
    /// `status.current.uid`.
    pub uid: String,
    pub created_at: Option<i64>,
}

/// Why a record is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    /// The pod or endpoint is younger than the fresh window.
    Fresh,
    PodAlive,
    PodPending,
    /// A valid StatefulSet / KubeVirt member keeps its addresses.
    StaticMember,
    /// Stateless Running pod without `status.podIPs` (released only when enabled).
    RunningWithoutPodIps,
    /// Terminating pod past its deadline on a node whose state forbids the release.
    NodeStatePolicy,
}

impl KeepReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::Fresh => "fresh",
            KeepReason::PodAlive => "pod_alive",
            KeepReason::PodPending => "pod_pending",
            KeepReason::StaticMember => "static_member",
            KeepReason::RunningWithoutPodIps => "running_without_pod_ips",
            KeepReason::NodeStatePolicy => "node_state_policy",
        }
    }
}

/// Why a record is released (bounded: used as a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    PodNotFound,
    PodUidChanged,
    PodTerminating,
    PodFinished,
    PodNotRunning,
    StaticMemberInvalid,
}

impl ReleaseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::PodNotFound => "pod_not_found",
            ReleaseReason::PodUidChanged => "pod_uid_changed",
            ReleaseReason::PodTerminating => "pod_terminating",
            ReleaseReason::PodFinished => "pod_finished",
            ReleaseReason::PodNotRunning => "pod_not_running",
            ReleaseReason::StaticMemberInvalid => "static_member_invalid",
        }
    }
}

/// The decision about one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep(KeepReason),
    /// Keep for now; decide again at `deadline` (grace period of a terminating or finished pod).
    KeepUntil {
        deadline: i64,
    },
    /// Release the record; `endpoint` says whether the pod's SpiderEndpoint goes too.
    Release {
        reason: ReleaseReason,
        endpoint: bool,
    },
}

impl Verdict {
    pub fn is_release(&self) -> bool {
        matches!(self, Verdict::Release { .. })
    }
}

fn younger_than(created_at: Option<i64>, now: i64, window: i64) -> bool {
    created_at.is_some_and(|created| now.saturating_sub(created) < window)
}

/// Decides about one record held by `owner` for the pod named in it.
///
/// `pod` and `endpoint` are `None` when they do not exist. `membership` is the pod's (or, when
/// the pod is gone, its endpoint's) StatefulSet / KubeVirt membership.
pub fn decide(
    owner: &RecordOwner,
    pod: Option<&PodState>,
    endpoint: Option<&EndpointState>,
    membership: Membership,
    now: i64,
    settings: &GcSettings,
) -> Verdict {
    let window = settings.fresh_window_seconds;
    if endpoint.is_some_and(|endpoint| {
        endpoint.uid == owner.uid && younger_than(endpoint.created_at, now, window)
    }) || pod.is_some_and(|pod| younger_than(pod.created_at, now, window))
    {
        return Verdict::Keep(KeepReason::Fresh);
    }
    let endpoint_is_the_records = endpoint.is_some_and(|endpoint| endpoint.uid == owner.uid);
    let Some(pod) = pod else {
        return match endpoint {
            None => Verdict::Release {
                reason: ReleaseReason::PodNotFound,
                endpoint: false,
            },
            Some(_) if membership.is_valid_static() => Verdict::Keep(KeepReason::StaticMember),
            Some(_) => Verdict::Release {
                reason: ReleaseReason::PodNotFound,
                endpoint: true,
            },
        };
    };
    if pod.uid != owner.uid {
        return match membership {
            // The re-created member takes the record over on its ADD, unless it already has
            // addresses (then it got others and this record is stale).
            Membership::Static { valid: true } if !pod.has_pod_ips => {
                Verdict::Keep(KeepReason::StaticMember)
            }
            _ => Verdict::Release {
                reason: ReleaseReason::PodUidChanged,
                endpoint: endpoint_is_the_records,
            },
        };
    }
    let delay = settings.additional_grace_delay_seconds;
    if let Some(deletion_deadline) = pod.deletion_deadline {
        if membership.is_valid_static() {
            return Verdict::Keep(KeepReason::StaticMember);
        }
        let deadline = deletion_deadline.saturating_add(delay);
        if now < deadline {
            // Upstream releases a terminating pod without `status.podIPs` at once. A pod deleted
            // while still Pending has no podIPs yet, but its ADD may be in flight: releasing now
            // could hand its address to another pod while this one comes up with it. Wait for
            // the deadline whatever podIPs says (its DEL, or this deadline, releases it).
            return Verdict::KeepUntil { deadline };
        }
        let allowed = if pod.node_ready == Some(true) {
            settings.terminating_on_ready_node
        } else {
            settings.terminating_on_not_ready_node
        };
        if !allowed {
            return Verdict::Keep(KeepReason::NodeStatePolicy);
        }
        return Verdict::Release {
            reason: ReleaseReason::PodTerminating,
            endpoint: true,
        };
    }
    match pod.phase.as_str() {
        "Succeeded" | "Failed" => match membership {
            Membership::Static { valid: true } => Verdict::Keep(KeepReason::StaticMember),
            Membership::Static { valid: false } => Verdict::Release {
                reason: ReleaseReason::StaticMemberInvalid,
                endpoint: true,
            },
            Membership::Stateless => {
                let finished = pod.finished_at.or(pod.created_at).unwrap_or(now);
                let deadline = finished
                    .saturating_add(pod.termination_grace_seconds.max(0))
                    .saturating_add(delay);
                if now < deadline {
                    Verdict::KeepUntil { deadline }
                } else {
                    Verdict::Release {
                        reason: ReleaseReason::PodFinished,
                        endpoint: true,
                    }
                }
            }
        },
        "" | "Pending" => Verdict::Keep(KeepReason::PodPending),
        phase => {
            if pod.has_pod_ips {
                return Verdict::Keep(KeepReason::PodAlive);
            }
            match membership {
                Membership::Static { valid: true } => Verdict::Keep(KeepReason::StaticMember),
                Membership::Static { valid: false } => Verdict::Release {
                    reason: ReleaseReason::StaticMemberInvalid,
                    endpoint: true,
                },
                Membership::Stateless
                    if phase == "Running" && !settings.running_without_pod_ips =>
                {
                    Verdict::Keep(KeepReason::RunningWithoutPodIps)
                }
                Membership::Stateless => Verdict::Release {
                    reason: ReleaseReason::PodNotRunning,
                    endpoint: true,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn owner() -> RecordOwner {
        RecordOwner { uid: "u1".into() }
    }

    fn pod(phase: &str) -> PodState {
        PodState {
            uid: "u1".into(),
            phase: phase.into(),
            created_at: Some(NOW - 3600),
            termination_grace_seconds: 30,
            has_pod_ips: true,
            node_ready: Some(true),
            ..PodState::default()
        }
    }

    fn endpoint(uid: &str, age: i64) -> EndpointState {
        EndpointState {
            uid: uid.into(),
            created_at: Some(NOW - age),
        }
    }

    fn verdict(
        pod: Option<&PodState>,
        endpoint: Option<&EndpointState>,
        membership: Membership,
    ) -> Verdict {
        decide(
            &owner(),
            pod,
            endpoint,
            membership,
            NOW,
            &GcSettings::default(),
        )
    }

    fn released(reason: ReleaseReason, endpoint: bool) -> Verdict {
        Verdict::Release { reason, endpoint }
    }

    #[test]
    fn record_of_a_vanished_pod_without_endpoint_is_released() {
        assert_eq!(
            verdict(None, None, Membership::Stateless),
            released(ReleaseReason::PodNotFound, false)
        );
    }

    #[test]
    fn record_and_endpoint_of_a_vanished_pod_are_released() {
        assert_eq!(
            verdict(None, Some(&endpoint("u1", 600)), Membership::Stateless),
            released(ReleaseReason::PodNotFound, true)
        );
    }

    #[test]
    fn a_valid_statefulset_member_keeps_its_address_while_its_pod_is_away() {
        assert_eq!(
            verdict(
                None,
                Some(&endpoint("u1", 600)),
                Membership::Static { valid: true }
            ),
            Verdict::Keep(KeepReason::StaticMember)
        );
        assert_eq!(
            verdict(
                None,
                Some(&endpoint("u1", 600)),
                Membership::Static { valid: false }
            ),
            released(ReleaseReason::PodNotFound, true)
        );
    }

    #[test]
    fn a_fresh_endpoint_or_pod_is_never_collected() {
        assert_eq!(
            verdict(None, Some(&endpoint("u1", 3)), Membership::Stateless),
            Verdict::Keep(KeepReason::Fresh)
        );
        let mut young = pod("Running");
        young.uid = "u2".into();
        young.created_at = Some(NOW - 2);
        assert_eq!(
            verdict(Some(&young), None, Membership::Stateless),
            Verdict::Keep(KeepReason::Fresh)
        );
    }

    #[test]
    fn a_running_pod_keeps_its_address() {
        assert_eq!(
            verdict(
                Some(&pod("Running")),
                Some(&endpoint("u1", 600)),
                Membership::Stateless
            ),
            Verdict::Keep(KeepReason::PodAlive)
        );
    }

    #[test]
    fn a_pending_pod_keeps_its_address() {
        let mut pending = pod("Pending");
        pending.has_pod_ips = false;
        assert_eq!(
            verdict(Some(&pending), None, Membership::Stateless),
            Verdict::Keep(KeepReason::PodPending)
        );
        pending.phase = String::new();
        assert_eq!(
            verdict(Some(&pending), None, Membership::Stateless),
            Verdict::Keep(KeepReason::PodPending)
        );
    }

    #[test]
    fn a_record_of_a_previous_pod_with_the_same_name_is_released() {
        let mut successor = pod("Running");
        successor.uid = "u2".into();
        assert_eq!(
            verdict(
                Some(&successor),
                Some(&endpoint("u2", 600)),
                Membership::Stateless
            ),
            released(ReleaseReason::PodUidChanged, false),
            "the endpoint belongs to the successor and stays"
        );
        assert_eq!(
            verdict(
                Some(&successor),
                Some(&endpoint("u1", 600)),
                Membership::Stateless
            ),
            released(ReleaseReason::PodUidChanged, true)
        );
    }

    #[test]
    fn a_recreated_statefulset_member_inherits_the_record_until_it_has_addresses() {
        let mut successor = pod("Pending");
        successor.uid = "u2".into();
        successor.has_pod_ips = false;
        assert_eq!(
            verdict(
                Some(&successor),
                Some(&endpoint("u1", 600)),
                Membership::Static { valid: true }
            ),
            Verdict::Keep(KeepReason::StaticMember)
        );
        successor.has_pod_ips = true;
        assert_eq!(
            verdict(
                Some(&successor),
                Some(&endpoint("u1", 600)),
                Membership::Static { valid: true }
            ),
            released(ReleaseReason::PodUidChanged, true)
        );
    }

    #[test]
    fn a_terminating_pod_is_released_after_its_grace_deadline() {
        let mut terminating = pod("Running");
        terminating.deletion_deadline = Some(NOW + 10);
        assert_eq!(
            verdict(Some(&terminating), None, Membership::Stateless),
            Verdict::KeepUntil { deadline: NOW + 15 }
        );
        terminating.deletion_deadline = Some(NOW - 6);
        assert_eq!(
            verdict(Some(&terminating), None, Membership::Stateless),
            released(ReleaseReason::PodTerminating, true)
        );
    }

    #[test]
    fn a_terminating_pod_without_addresses_is_kept_until_its_grace_deadline() {
        // Deleted while Pending: no podIPs yet, but its ADD may still be running.
        let mut terminating = pod("Pending");
        terminating.deletion_deadline = Some(NOW + 10);
        terminating.has_pod_ips = false;
        assert_eq!(
            verdict(Some(&terminating), None, Membership::Stateless),
            Verdict::KeepUntil { deadline: NOW + 15 }
        );
        terminating.deletion_deadline = Some(NOW - 6);
        assert_eq!(
            verdict(Some(&terminating), None, Membership::Stateless),
            released(ReleaseReason::PodTerminating, true)
        );
    }

    #[test]
    fn node_state_settings_gate_terminating_pods_past_their_deadline() {
        let mut terminating = pod("Running");
        terminating.deletion_deadline = Some(NOW - 100);
        terminating.node_ready = Some(false);
        let settings = GcSettings {
            terminating_on_not_ready_node: false,
            ..GcSettings::default()
        };
        assert_eq!(
            decide(
                &owner(),
                Some(&terminating),
                None,
                Membership::Stateless,
                NOW,
                &settings
            ),
            Verdict::Keep(KeepReason::NodeStatePolicy)
        );
        terminating.node_ready = Some(true);
        assert!(
            decide(
                &owner(),
                Some(&terminating),
                None,
                Membership::Stateless,
                NOW,
                &settings
            )
            .is_release()
        );
    }

    #[test]
    fn a_terminating_statefulset_member_keeps_its_address() {
        let mut terminating = pod("Running");
        terminating.deletion_deadline = Some(NOW - 100);
        assert_eq!(
            verdict(Some(&terminating), None, Membership::Static { valid: true }),
            Verdict::Keep(KeepReason::StaticMember)
        );
        assert!(
            verdict(
                Some(&terminating),
                None,
                Membership::Static { valid: false }
            )
            .is_release()
        );
    }

    #[test]
    fn a_finished_pod_is_released_after_its_termination_grace() {
        let mut finished = pod("Succeeded");
        finished.finished_at = Some(NOW - 10);
        assert_eq!(
            verdict(Some(&finished), None, Membership::Stateless),
            Verdict::KeepUntil { deadline: NOW + 25 }
        );
        finished.finished_at = Some(NOW - 100);
        assert_eq!(
            verdict(Some(&finished), None, Membership::Stateless),
            released(ReleaseReason::PodFinished, true)
        );
        assert_eq!(
            verdict(Some(&finished), None, Membership::Static { valid: false }),
            released(ReleaseReason::StaticMemberInvalid, true)
        );
    }

    #[test]
    fn running_without_pod_ips_is_kept_unless_enabled() {
        let mut running = pod("Running");
        running.has_pod_ips = false;
        assert_eq!(
            verdict(Some(&running), None, Membership::Stateless),
            Verdict::Keep(KeepReason::RunningWithoutPodIps)
        );
        let enabled = GcSettings {
            running_without_pod_ips: true,
            ..GcSettings::default()
        };
        assert_eq!(
            decide(
                &owner(),
                Some(&running),
                None,
                Membership::Stateless,
                NOW,
                &enabled
            ),
            released(ReleaseReason::PodNotRunning, true)
        );
        running.phase = "Unknown".into();
        assert_eq!(
            verdict(Some(&running), None, Membership::Stateless),
            released(ReleaseReason::PodNotRunning, true)
        );
    }
}
