//! The pure half of a CNI ADD: what to do with the pod's SpiderEndpoint ([`plan_add`]: reuse,
//! take over, replace or allocate), which NICs to allocate ([`nic_plan`]), the rollback log of
//! what was taken ([`RollbackLog`]) and whether an endpoint write that reported an error landed
//! anyway ([`endpoint_records`]). No I/O: the executor reads, calls these, and writes.

use std::net::IpAddr;

use spiderpool_api::SpiderEndpoint;
use spiderpool_ipam::annotations::{
    ANNO_POD_ROUTES, AnnotationError, is_multiple_nic_without_names, parse_pod_routes,
};
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::ledger::IpAndUid;
use spiderpool_ipam::pod::PodContext;
use spiderpool_ipam::result::{AllocationResult, IpAllocationDetail, has_allocation_for};
use spiderpool_ipam::routes::Route;
use spiderpool_ipam::selection::{CandidateSource, Candidates, NicCandidates};

use crate::combine::{LedgerOp, release_op};
use crate::objects::detail_from_api;

/// The pod's SpiderEndpoint as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEndpoint {
    /// The UID of the pod the endpoint was written for.
    pub uid: String,
    pub details: Vec<IpAllocationDetail>,
}

impl StoredEndpoint {
    pub fn of(endpoint: &SpiderEndpoint) -> StoredEndpoint {
        let status = endpoint.status.clone().unwrap_or_default();
        StoredEndpoint {
            uid: status.current.uid,
            details: status.current.ips.iter().map(detail_from_api).collect(),
        }
    }

    /// The NICs the endpoint holds.
    pub fn nics(&self) -> Vec<&str> {
        self.details
            .iter()
            .map(|detail| detail.interface.as_str())
            .collect()
    }
}

/// What an ADD finds before it decides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddFacts<'a> {
    pub pod_uid: &'a str,
    /// `CNI_IFNAME`.
    pub nic: &'a str,
    pub endpoint: Option<&'a StoredEndpoint>,
    /// The pod keeps its addresses across re-creation (`enableStatefulSet` and a StatefulSet
    /// pod).
    pub statefulset: bool,
    /// The pod's candidates; read only when [`needs_candidates`] says so.
    pub candidates: Option<&'a Candidates>,
}

/// What to do with the endpoint before (or instead of) allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddPlan {
    /// §5.2 step 6: a repeated ADD, or a later NIC of the `ippools` annotation the endpoint
    /// already holds: make sure the ledger still records the endpoint's addresses (an earlier
    /// ADD whose endpoint write reached the server but reported an error rolled its records
    /// back), then answer from the endpoint. A record another pod holds makes the endpoint
    /// stale: it goes and the pod is allocated afresh.
    Reuse,
    /// §5.2 step 5: a re-created StatefulSet pod takes over its predecessor's addresses under
    /// its UID; when the endpoint does not hold this NIC, the NIC is allocated and appended.
    TakeOver { serves_nic: bool },
    /// The endpoint goes and the pod is allocated afresh: an earlier pod's endpoint (its records
    /// are freed by its own DEL or by garbage collection), or, with `release`, a StatefulSet
    /// pod's whose pools are no longer its candidates (§5.2 step 4, simplified: the whole old
    /// allocation is released first).
    Replace { release: bool },
    /// Allocate the NICs the endpoint (of this pod, if any) does not hold yet.
    Allocate,
}

/// Whether [`plan_add`] must see the pod's candidates: a StatefulSet pod's stored pools are
/// compared with them.
pub(crate) fn needs_candidates(statefulset: bool, endpoint: Option<&StoredEndpoint>) -> bool {
    statefulset && endpoint.is_some_and(|endpoint| !endpoint.details.is_empty())
}

/// The decision of §5.2 steps 4-6.
pub(crate) fn plan_add(facts: &AddFacts<'_>) -> AddPlan {
    let Some(endpoint) = facts.endpoint else {
        return AddPlan::Allocate;
    };
    if needs_candidates(facts.statefulset, facts.endpoint) {
        let changed = facts.candidates.is_some_and(|candidates| {
            statefulset_pools_changed(&endpoint.details, candidates, facts.nic)
        });
        return if changed {
            AddPlan::Replace { release: true }
        } else {
            AddPlan::TakeOver {
                serves_nic: has_allocation_for(&endpoint.details, facts.nic),
            }
        };
    }
    if endpoint.uid != facts.pod_uid {
        return AddPlan::Replace { release: false };
    }
    if has_allocation_for(&endpoint.details, facts.nic) {
        AddPlan::Reuse
    } else {
        AddPlan::Allocate
    }
}

/// §5.2 step 4: whether a StatefulSet pod's stored pools are no longer among its candidates (for
/// the NICs the candidates cover). A NIC without stored entry is not a change (it is allocated).
pub(crate) fn statefulset_pools_changed(
    details: &[IpAllocationDetail],
    candidates: &Candidates,
    current_nic: &str,
) -> bool {
    let unnamed = candidates
        .nics
        .iter()
        .all(|nic| nic.nic.parse::<u32>().is_ok())
        && candidates.source == CandidateSource::PodIpPools;
    for (index, nic) in candidates.nics.iter().enumerate() {
        let stored = if unnamed {
            details.get(index)
        } else {
            let name =
                if candidates.nics.len() == 1 && candidates.source != CandidateSource::PodIpPools {
                    current_nic
                } else {
                    nic.nic.as_str()
                };
            details.iter().find(|detail| detail.interface == name)
        };
        let Some(stored) = stored else { continue };
        for candidate in &nic.candidates {
            let pool = match candidate.ip_version {
                IpVersion::V4 => &stored.ipv4_pool,
                IpVersion::V6 => &stored.ipv6_pool,
            };
            match pool {
                Some(pool) if candidate.pools.contains(pool) => {}
                _ => return true,
            }
        }
        let families: Vec<IpVersion> = nic
            .candidates
            .iter()
            .map(|candidate| candidate.ip_version)
            .collect();
        if (stored.ipv4_pool.is_some() && !families.contains(&IpVersion::V4))
            || (stored.ipv6_pool.is_some() && !families.contains(&IpVersion::V6))
        {
            return true;
        }
    }
    false
}

/// The NICs an allocation takes addresses for, and how their results are finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NicPlan {
    pub source: CandidateSource,
    /// The candidates' NICs the endpoint does not hold yet, in order.
    pub nics: Vec<NicCandidates>,
    /// `ipam.spidernet.io/routes`.
    pub custom_routes: Vec<Route>,
    /// Unnamed multi-NIC mode (`ippools` without interface names): results are renamed and
    /// stored without names.
    pub unnamed: bool,
}

/// What to allocate: the candidates minus the NICs the endpoint of this pod already holds.
pub(crate) fn nic_plan(
    candidates: Candidates,
    held: &[&str],
    pod: &PodContext,
) -> Result<NicPlan, AnnotationError> {
    let custom_routes = match pod.annotations.get(ANNO_POD_ROUTES) {
        Some(value) => parse_pod_routes(value)?,
        None => Vec::new(),
    };
    let source = candidates.source;
    let nics = candidates
        .nics
        .into_iter()
        .filter(|nic| !held.contains(&nic.nic.as_str()))
        .collect();
    Ok(NicPlan {
        source,
        nics,
        custom_routes,
        unnamed: source == CandidateSource::PodIpPools
            && is_multiple_nic_without_names(&pod.annotations),
    })
}

/// An address an ADD took in a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taken {
    pub pool: String,
    pub ip: IpAddr,
    /// The record was written by this call (not found already held by the pod UID).
    pub created: bool,
}

/// What an ADD wrote to pool ledgers, in order: a failed ADD gives back exactly the records it
/// created (a record it found already held by the pod's UID stays: an earlier ADD of the pod made
/// it, and its endpoint may still point at it).
///
/// A write whose outcome is unknown (its answer was lost, or the call's deadline cut it off in
/// flight) is logged as an intent on its pool before it is sent: the rollback then reads the pool
/// and gives back every record of the pod's UID there that the pod's endpoint does not hold. The
/// write carried a `resourceVersion` precondition, so if it lands after that read it conflicts
/// with the rollback's own write instead of slipping past it; a combined (lock-file) request
/// expires with the call's deadline, which has passed when the rollback runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RollbackLog {
    taken: Vec<Taken>,
    uncertain: Vec<String>,
}

impl RollbackLog {
    /// A write to `pool` is about to be sent.
    pub fn intend(&mut self, pool: &str) {
        if !self.uncertain.iter().any(|known| known == pool) {
            self.uncertain.push(pool.to_string());
        }
    }

    /// The write to `pool` has a known outcome (nothing taken, or [`RollbackLog::record`]).
    pub fn settle(&mut self, pool: &str) {
        self.uncertain.retain(|known| known != pool);
    }

    pub fn record(&mut self, taken: Taken) {
        self.settle(&taken.pool);
        self.taken.push(taken);
    }

    /// Pools with a write of unknown outcome.
    pub fn uncertain(&self) -> &[String] {
        &self.uncertain
    }

    /// The releases that undo the call, in the order the records were taken.
    pub fn undo(&self, uid: &str) -> Vec<(&str, IpAddr, LedgerOp)> {
        self.taken
            .iter()
            .filter(|taken| taken.created)
            .map(|taken| {
                let release = [IpAndUid::new(taken.ip.to_string(), uid)];
                (taken.pool.as_str(), taken.ip, release_op(&release))
            })
            .collect()
    }
}

/// The records of `uid` in a pool with an uncertain write that the rollback gives back: all but
/// the addresses the pod's endpoint holds (`kept`).
pub(crate) fn uncertain_releases(
    records: &spiderpool_ipam::ledger::PoolIpAllocations,
    uid: &str,
    kept: &[String],
) -> Vec<IpAndUid> {
    records
        .iter()
        .filter(|(ip, record)| record.pod_uid == uid && !kept.contains(ip))
        .map(|(ip, _)| IpAndUid::new(ip.clone(), uid))
        .collect()
}

/// Whether `stored` (read after an endpoint write reported an error) records the allocation of
/// `results` for `uid`: then the write landed and the allocation stands.
pub(crate) fn endpoint_records(
    stored: Option<&SpiderEndpoint>,
    uid: &str,
    results: &[AllocationResult],
    unnamed: bool,
) -> bool {
    stored
        .and_then(|stored| stored.status.as_ref())
        .is_some_and(|status| {
            status.current.uid == uid
                && results.iter().all(|result| {
                    status.current.ips.iter().any(|entry| {
                        entry.nic == result.ip.nic || (unnamed && entry.nic.is_empty())
                    })
                })
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_uncertain_write_gives_back_every_record_of_the_uid_but_what_the_endpoint_holds() {
        let records = spiderpool_ipam::ledger::PoolIpAllocations::parse(
            "p",
            Some(r#"{"10.0.0.1":{"pod":"ns/a","podUid":"u"},"10.0.0.2":{"pod":"ns/a","podUid":"u"},"10.0.0.3":{"pod":"ns/b","podUid":"v"}}"#),
        )
        .expect("a valid ledger");
        assert_eq!(
            uncertain_releases(&records, "u", &["10.0.0.1".to_string()]),
            vec![IpAndUid::new("10.0.0.2", "u")]
        );
        assert!(uncertain_releases(&records, "w", &[]).is_empty());
    }

    use super::*;
    use spiderpool_ipam::selection::PoolCandidate;

    fn detail(nic: &str, v4_pool: Option<&str>, v6_pool: Option<&str>) -> IpAllocationDetail {
        IpAllocationDetail {
            interface: nic.into(),
            ipv4: v4_pool.map(|_| "10.0.0.10/24".to_string()),
            ipv4_pool: v4_pool.map(str::to_string),
            ipv6: v6_pool.map(|_| "fd00::10/64".to_string()),
            ipv6_pool: v6_pool.map(str::to_string),
            ..IpAllocationDetail::default()
        }
    }

    fn candidates(source: CandidateSource, nics: &[(&str, &[&str], &[&str])]) -> Candidates {
        Candidates {
            source,
            nics: nics
                .iter()
                .map(|(nic, v4, v6)| {
                    let mut list = Vec::new();
                    if !v4.is_empty() {
                        list.push(PoolCandidate {
                            ip_version: IpVersion::V4,
                            pools: v4.iter().map(|p| p.to_string()).collect(),
                        });
                    }
                    if !v6.is_empty() {
                        list.push(PoolCandidate {
                            ip_version: IpVersion::V6,
                            pools: v6.iter().map(|p| p.to_string()).collect(),
                        });
                    }
                    NicCandidates {
                        nic: nic.to_string(),
                        clean_gateway: false,
                        candidates: list,
                    }
                })
                .collect(),
        }
    }

    fn endpoint(uid: &str, details: Vec<IpAllocationDetail>) -> StoredEndpoint {
        StoredEndpoint {
            uid: uid.into(),
            details,
        }
    }

    fn facts<'a>(
        endpoint: Option<&'a StoredEndpoint>,
        statefulset: bool,
        candidates: Option<&'a Candidates>,
    ) -> AddFacts<'a> {
        AddFacts {
            pod_uid: "uid-new",
            nic: "eth0",
            endpoint,
            statefulset,
            candidates,
        }
    }

    #[test]
    fn a_pod_without_endpoint_is_allocated() {
        assert_eq!(plan_add(&facts(None, false, None)), AddPlan::Allocate);
        assert_eq!(plan_add(&facts(None, true, None)), AddPlan::Allocate);
        assert!(!needs_candidates(true, None));
    }

    #[test]
    fn the_same_pod_reuses_what_its_endpoint_holds_for_the_nic() {
        let held = endpoint("uid-new", vec![detail("eth0", Some("a"), None)]);
        assert_eq!(plan_add(&facts(Some(&held), false, None)), AddPlan::Reuse);
        let other_nic = endpoint("uid-new", vec![detail("net1", Some("a"), None)]);
        assert_eq!(
            plan_add(&facts(Some(&other_nic), false, None)),
            AddPlan::Allocate
        );
        let unnamed = endpoint("uid-new", vec![detail("", Some("a"), None)]);
        assert_eq!(
            plan_add(&facts(Some(&unnamed), false, None)),
            AddPlan::Reuse
        );
    }

    #[test]
    fn an_earlier_pods_endpoint_is_replaced_without_releasing_its_records() {
        let earlier = endpoint("uid-old", vec![detail("eth0", Some("a"), None)]);
        assert_eq!(
            plan_add(&facts(Some(&earlier), false, None)),
            AddPlan::Replace { release: false }
        );
    }

    #[test]
    fn a_statefulset_pod_takes_over_while_its_pools_remain_candidates() {
        let stored = endpoint("uid-old", vec![detail("eth0", Some("a"), None)]);
        assert!(needs_candidates(true, Some(&stored)));
        let same = candidates(CandidateSource::PodIpPool, &[("eth0", &["b", "a"], &[])]);
        assert_eq!(
            plan_add(&facts(Some(&stored), true, Some(&same))),
            AddPlan::TakeOver { serves_nic: true }
        );
        let moved = candidates(CandidateSource::PodIpPool, &[("eth0", &["b"], &[])]);
        assert_eq!(
            plan_add(&facts(Some(&stored), true, Some(&moved))),
            AddPlan::Replace { release: true }
        );
        let net1 = endpoint("uid-old", vec![detail("net1", Some("a"), None)]);
        let both = candidates(
            CandidateSource::PodIpPools,
            &[("eth0", &["c"], &[]), ("net1", &["a"], &[])],
        );
        assert_eq!(
            plan_add(&facts(Some(&net1), true, Some(&both))),
            AddPlan::TakeOver { serves_nic: false }
        );
    }

    #[test]
    fn statefulset_keeps_addresses_while_their_pools_remain_candidates() {
        let stored = vec![detail("eth0", Some("v4-a"), Some("v6-a"))];
        let same = candidates(
            CandidateSource::PodIpPool,
            &[("eth0", &["v4-b", "v4-a"], &["v6-a"])],
        );
        assert!(!statefulset_pools_changed(&stored, &same, "eth0"));
        let moved = candidates(
            CandidateSource::PodIpPool,
            &[("eth0", &["v4-b"], &["v6-a"])],
        );
        assert!(statefulset_pools_changed(&stored, &moved, "eth0"));
        let v4_only = candidates(CandidateSource::PodIpPool, &[("eth0", &["v4-a"], &[])]);
        assert!(statefulset_pools_changed(&stored, &v4_only, "eth0"));
    }

    #[test]
    fn statefulset_multi_nic_compares_each_named_nic() {
        let stored = vec![
            detail("eth0", Some("a"), None),
            detail("net1", Some("b"), None),
        ];
        let same = candidates(
            CandidateSource::PodIpPools,
            &[("eth0", &["a"], &[]), ("net1", &["b"], &[])],
        );
        assert!(!statefulset_pools_changed(&stored, &same, "eth0"));
        let changed = candidates(
            CandidateSource::PodIpPools,
            &[("eth0", &["a"], &[]), ("net1", &["c"], &[])],
        );
        assert!(statefulset_pools_changed(&stored, &changed, "net1"));
    }

    #[test]
    fn held_nics_are_not_allocated_again_and_routes_come_from_the_annotation() {
        let mut pod = PodContext::default();
        pod.annotations.insert(
            ANNO_POD_ROUTES.into(),
            r#"[{"dst":"10.9.0.0/16","gw":"10.0.0.1"}]"#.into(),
        );
        let plan = nic_plan(
            candidates(
                CandidateSource::PodIpPools,
                &[("eth0", &["a"], &[]), ("net1", &["b"], &[])],
            ),
            &["eth0"],
            &pod,
        )
        .unwrap();
        let nics: Vec<&str> = plan.nics.iter().map(|nic| nic.nic.as_str()).collect();
        assert_eq!(nics, ["net1"]);
        assert_eq!(plan.custom_routes.len(), 1);
        assert!(!plan.unnamed);
        pod.annotations
            .insert(ANNO_POD_ROUTES.into(), "not json".into());
        assert!(nic_plan(candidates(CandidateSource::PodIpPool, &[]), &[], &pod).is_err());
    }

    #[test]
    fn a_rollback_gives_back_only_the_records_the_call_created_in_order() {
        let mut log = RollbackLog::default();
        assert!(log.undo("uid-1").is_empty());
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        log.record(Taken {
            pool: "v4".into(),
            ip: ip("10.0.0.10"),
            created: true,
        });
        log.record(Taken {
            pool: "v6".into(),
            ip: ip("fd00::10"),
            created: false,
        });
        log.record(Taken {
            pool: "net1-v4".into(),
            ip: ip("10.1.0.10"),
            created: true,
        });
        let undo = log.undo("uid-1");
        let pools: Vec<&str> = undo.iter().map(|(pool, _, _)| *pool).collect();
        assert_eq!(pools, ["v4", "net1-v4"]);
        assert_eq!(
            undo[0].2,
            LedgerOp::Release {
                addresses: vec![("10.0.0.10".into(), "uid-1".into())]
            }
        );
    }
}
