//! SpiderSubnet auto-created pools (§4): the pure half of the application controller.
//!
//! The controller-manager turns a workload (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job,
//! CronJob) into a [`WorkloadView`], asks [`plan_workload`] which pools it needs (one per NIC and IP
//! family, sized from its replicas and `ipam.spidernet.io/ippool-ip-number`), and for each pool
//! asks [`plan_pre_allocation`] which addresses of the subnet the pool must hold. It then writes the
//! subnet's `status.controlledIPPools` (compare-and-swap) before the pool, so the subnet status stays
//! the single arbiter of which address belongs to which pool.
//!
//! Everything that identifies an auto pool lives here too: its name ([`auto_pool_name`]), the
//! application key stored in the subnet status ([`application_key`]), the label values
//! ([`AutoPoolLabels`]) and the pod-affinity values ([`AutoPoolAffinity`]).
//!
//! Differences from upstream, on purpose: names never exceed 253 characters (upstream's budget is
//! off by one), and pre-allocation also keeps out addresses other pools of the same CIDR hold or have
//! allocated, and never drops an address the pool has allocated, even when its subnet record lost it.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::annotations::{self, AnnotationError, PoolIpNumber};
use crate::ip::IpVersion;
use crate::ledger::{ControlledIpPools, PoolIpPreAllocation};
use crate::pod::AppRef;
use crate::range::{IpSet, RangeError};
use crate::settings::ClusterSettings;

/// Longest Kubernetes object name (DNS-1123 subdomain).
pub const MAX_POOL_NAME_LENGTH: usize = 253;

/// Errors of auto-pool planning. [`AutoPoolError::metric_label`] gives a stable category.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AutoPoolError {
    /// The workload's annotations are invalid (`ErrWrongInput`: not retried).
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error("the desired IP number {desired} of IPPool {pool} is negative")]
    NegativeDesired { pool: String, desired: i64 },
    /// A record of the subnet status or pool ledger could not be parsed.
    #[error("invalid IP ranges of {what}: {source}")]
    InvalidRanges { what: String, source: RangeError },
    /// Scale-down would have to drop addresses that pods use (`ErrFreeIPsNotEnough`: retried).
    #[error(
        "failed to scale down IPPool {pool} IPs: IPPool available free IPs are not enough, \
         {free} free but {required} must be released"
    )]
    FreeIpsNotEnough {
        pool: String,
        required: u128,
        free: u128,
    },
    /// The subnet has fewer free addresses than the pool needs.
    #[error("insufficient subnet FreeIPs, required '{required}' but only left '{left}'")]
    InsufficientSubnetIps {
        subnet: String,
        pool: String,
        required: u128,
        left: u128,
    },
    /// The pool has allocated addresses that the subnet status gives to another pool.
    #[error(
        "IPPool {pool} has allocated IPs {ips:?} that SpiderSubnet {subnet} records for other IPPools"
    )]
    ForeignAllocation {
        subnet: String,
        pool: String,
        ips: Vec<String>,
    },
}

impl AutoPoolError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AutoPoolError::Annotation(_) => "invalid_annotation",
            AutoPoolError::NegativeDesired { .. } => "invalid_ip_number",
            AutoPoolError::InvalidRanges { .. } => "invalid_ranges",
            AutoPoolError::FreeIpsNotEnough { .. } => "free_ips_not_enough",
            AutoPoolError::InsufficientSubnetIps { .. } => "subnet_exhausted",
            AutoPoolError::ForeignAllocation { .. } => "foreign_allocation",
        }
    }

    /// Whether the input itself is wrong (`ErrWrongInput`): retrying without a change is useless.
    pub fn is_wrong_input(&self) -> bool {
        matches!(
            self,
            AutoPoolError::Annotation(_) | AutoPoolError::NegativeDesired { .. }
        )
    }
}

/// `AutoPoolName`: `auto<v>-<name>-<nic>-<uid fragment>`, lower-cased, at most 253 characters.
///
/// The UID fragment is the first five characters of the text after the UID's last `-`. When the
/// result would be too long, the workload name is shortened (and a `.` left at its end dropped, so
/// the name stays a valid DNS subdomain).
pub fn auto_pool_name(
    controller_name: &str,
    version: IpVersion,
    nic: &str,
    app_uid: &str,
) -> String {
    let fragment = uid_fragment(app_uid);
    let nic = nic.to_lowercase();
    let mut name = controller_name.to_lowercase();
    // `auto4` plus three dashes.
    let fixed = 8 + fragment.len() + nic.len();
    if name.len() + fixed > MAX_POOL_NAME_LENGTH {
        let mut budget = MAX_POOL_NAME_LENGTH.saturating_sub(fixed);
        while budget > 0 && !name.is_char_boundary(budget) {
            budget -= 1;
        }
        name.truncate(budget);
        while name.ends_with('.') {
            name.pop();
        }
    }
    let mut pool = format!("auto{}-{name}-{nic}-{fragment}", version.number());
    if pool.len() > MAX_POOL_NAME_LENGTH {
        // Only an absurdly long interface name gets here.
        let mut cut = MAX_POOL_NAME_LENGTH;
        while !pool.is_char_boundary(cut) {
            cut -= 1;
        }
        pool.truncate(cut);
    }
    pool
}

/// The UID fragment that ends an auto pool's name: the first five characters (lower-cased) of
/// the text after the UID's last `-`.
pub fn uid_fragment(app_uid: &str) -> String {
    let last_segment = app_uid.rsplit('-').next().unwrap_or_default();
    last_segment
        .chars()
        .take(5)
        .collect::<String>()
        .to_lowercase()
}

/// Whether an auto pool name was made for the workload with this UID (a pool kept and reused by a
/// successor keeps its predecessor's name, so this only tells apart pools that were never reused).
pub fn pool_name_matches_uid(pool: &str, app_uid: &str) -> bool {
    pool.rsplit('-').next() == Some(uid_fragment(app_uid).as_str())
}

/// `ApplicationLabelGV`: `apps/v1` -> `apps_v1`, `v1` -> `v1`.
pub fn application_label_gv(api_version: &str) -> String {
    api_version.replacen('/', "_", 1)
}

/// `ParseApplicationGVStr`: `apps_v1` -> (`apps`, `v1`), `v1` -> (``, `v1`); anything else `None`.
pub fn parse_application_gv(gv: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = gv.split('_').collect();
    match parts.as_slice() {
        [version] if !version.is_empty() => Some((String::new(), (*version).to_string())),
        [group, version] if !group.is_empty() && !version.is_empty() => {
            Some(((*group).to_string(), (*version).to_string()))
        }
        _ => None,
    }
}

/// `ApplicationNamespacedName`: `<group>_<version>_<Kind>_<namespace>_<name>` (or without the group
/// for the core group), the `application` of a `controlledIPPools` entry.
pub fn application_key(app: &AppRef) -> String {
    let mut parts: Vec<&str> = Vec::with_capacity(5);
    if !app.group.is_empty() {
        parts.push(&app.group);
    }
    parts.extend([
        app.version.as_str(),
        app.kind.as_str(),
        app.namespace.as_str(),
        app.name.as_str(),
    ]);
    parts.join("_")
}

/// Parses an application key back (exactly 4 or 5 `_`-separated parts); the UID stays empty.
pub fn parse_application_key(key: &str) -> Option<AppRef> {
    let parts: Vec<&str> = key.split('_').collect();
    let (group, rest) = match parts.len() {
        4 => ("", &parts[..]),
        5 => (parts[0], &parts[1..]),
        _ => return None,
    };
    if rest.iter().any(|part| part.is_empty()) {
        return None;
    }
    Some(AppRef {
        group: group.to_string(),
        version: rest[0].to_string(),
        kind: rest[1].to_string(),
        namespace: rest[2].to_string(),
        name: rest[3].to_string(),
        uid: String::new(),
    })
}

/// `CalculateJobPodNum`: the pods a Job runs at once for pool sizing.
pub fn job_pod_count(parallelism: Option<i32>, completions: Option<i32>) -> i64 {
    let at_least_one = |value: i32| i64::from(value.max(1));
    match (parallelism, completions) {
        (_, Some(completions)) => at_least_one(completions),
        (Some(parallelism), None) => at_least_one(parallelism),
        (None, None) => 1,
    }
}

/// Label values of an auto pool (§2.5); the caller maps them onto the label keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPoolLabels {
    /// `ipam.spidernet.io/owner-spider-subnet`.
    pub owner_spider_subnet: String,
    /// `ipam.spidernet.io/owner-application-gv`.
    pub application_gv: String,
    /// `ipam.spidernet.io/owner-application-kind`.
    pub application_kind: String,
    /// `ipam.spidernet.io/owner-application-namespace`.
    pub application_namespace: String,
    /// `ipam.spidernet.io/owner-application-name`.
    pub application_name: String,
    /// `ipam.spidernet.io/owner-application-uid`.
    pub application_uid: String,
    /// `ipam.spidernet.io/interface`.
    pub interface: String,
    /// `ipam.spidernet.io/ip-version`: `IPv4` / `IPv6`.
    pub ip_version: String,
    /// `ipam.spidernet.io/ippool-reclaim`: `"true"` / `"false"`.
    pub reclaim: String,
}

impl AutoPoolLabels {
    pub fn new(
        subnet: &str,
        app: &AppRef,
        nic: &str,
        version: IpVersion,
        reclaim: bool,
    ) -> AutoPoolLabels {
        AutoPoolLabels {
            owner_spider_subnet: subnet.to_string(),
            application_gv: application_label_gv(&app.api_version()),
            application_kind: app.kind.clone(),
            application_namespace: app.namespace.clone(),
            application_name: app.name.clone(),
            application_uid: app.uid.clone(),
            interface: nic.to_string(),
            ip_version: version.label_value().to_string(),
            reclaim: reclaim.to_string(),
        }
    }
}

/// The pod-affinity matchLabels values of an auto pool (`NewAutoPoolPodAffinity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPoolAffinity {
    /// `ipam.spidernet.io/app-api-group` (empty for the core group).
    pub api_group: String,
    /// `ipam.spidernet.io/app-api-version`.
    pub api_version: String,
    /// `ipam.spidernet.io/app-kind`.
    pub kind: String,
    /// `ipam.spidernet.io/app-namespace`.
    pub namespace: String,
    /// `ipam.spidernet.io/app-name`.
    pub name: String,
}

impl AutoPoolAffinity {
    pub fn new(app: &AppRef) -> AutoPoolAffinity {
        AutoPoolAffinity {
            api_group: app.group.clone(),
            api_version: app.version.clone(),
            kind: app.kind.clone(),
            namespace: app.namespace.clone(),
            name: app.name.clone(),
        }
    }
}

/// What the application controller knows about one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadView {
    pub app: AppRef,
    /// Replicas per §4.1 (Deployment/ReplicaSet/StatefulSet `spec.replicas`, DaemonSet
    /// `status.desiredNumberScheduled`, Job/CronJob [`job_pod_count`]).
    pub replicas: i64,
    /// `spec.template.spec.hostNetwork`.
    pub host_network: bool,
    /// The pod template's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// One auto pool a workload needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRequest {
    pub subnet: String,
    pub version: IpVersion,
    pub nic: String,
    /// The pool size.
    pub desired: i64,
    /// How the size was asked for; its annotation value is written on the pool.
    pub ip_number: PoolIpNumber,
    pub reclaim: bool,
    pub pool_name: String,
}

/// The pools of a workload: empty when it does not use the SpiderSubnet feature (no subnet
/// annotation, host network, feature disabled), one entry per NIC and enabled family otherwise.
pub fn plan_workload(
    workload: &WorkloadView,
    settings: &ClusterSettings,
) -> Result<Vec<PoolRequest>, AutoPoolError> {
    if workload.host_network
        || !settings.enable_spider_subnet
        || !settings.enable_auto_pool_for_application
    {
        return Ok(Vec::new());
    }
    let Some(config) = annotations::parse_subnet_annotations(
        &workload.annotations,
        settings.cluster_subnet_default_flexible_ip_number,
    )?
    else {
        return Ok(Vec::new());
    };
    let desired = config.ip_number.desired(workload.replicas.max(0));
    let items: Vec<_> = if config.multiple.is_empty() {
        config.single.iter().cloned().collect()
    } else {
        config.multiple.clone()
    };
    let mut requests = Vec::new();
    for item in items {
        for (version, subnet) in [
            (IpVersion::V4, item.ipv4_subnet()),
            (IpVersion::V6, item.ipv6_subnet()),
        ] {
            let Some(subnet) = subnet else { continue };
            if !settings.family_enabled(version) {
                continue;
            }
            let pool_name = auto_pool_name(
                &workload.app.name,
                version,
                &item.interface,
                &workload.app.uid,
            );
            if desired < 0 {
                return Err(AutoPoolError::NegativeDesired {
                    pool: pool_name,
                    desired,
                });
            }
            requests.push(PoolRequest {
                subnet: subnet.to_string(),
                version,
                nic: item.interface.clone(),
                desired,
                ip_number: config.ip_number,
                reclaim: config.reclaim,
                pool_name,
            });
        }
    }
    Ok(requests)
}

/// `GenSubnetFreeIPs`: the subnet's effective addresses no `controlledIPPools` entry holds.
pub fn subnet_free_ips(
    subnet_ips: &IpSet,
    controlled: &ControlledIpPools,
) -> Result<IpSet, AutoPoolError> {
    let held =
        controlled
            .union(subnet_ips.version())
            .map_err(|source| AutoPoolError::InvalidRanges {
                what: "status.controlledIPPools".to_string(),
                source,
            })?;
    Ok(subnet_ips.subtract(&held))
}

/// The pool an existing auto pool is, as far as pre-allocation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// Effective `spec.ips` minus `spec.excludeIPs`.
    pub ips: IpSet,
    /// Addresses in `status.allocatedIPs`.
    pub allocated: IpSet,
}

/// Inputs of [`plan_pre_allocation`].
#[derive(Debug, Clone)]
pub struct PreAllocationInput<'a> {
    pub subnet: &'a str,
    pub pool: &'a str,
    /// Application key of the entry (`None` for a manual pool).
    pub application: Option<String>,
    pub desired: i64,
    /// The subnet's effective addresses.
    pub subnet_ips: &'a IpSet,
    /// The subnet's `status.controlledIPPools`.
    pub controlled: &'a ControlledIpPools,
    /// Reserved addresses of the family (never handed out anew).
    pub reserved: &'a IpSet,
    /// Addresses other pools of the same CIDR hold or have allocated (never handed out anew,
    /// whatever the subnet status says).
    pub held_elsewhere: &'a IpSet,
    /// The pool, when it exists.
    pub existing: Option<&'a PoolSnapshot>,
}

/// How a pre-allocation changed the pool's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolChange {
    Created,
    ScaledUp {
        from: u128,
        to: u128,
    },
    ScaledDown {
        from: u128,
        to: u128,
    },
    /// Same size, different addresses (a record repaired to cover allocated addresses).
    Repaired,
    Unchanged,
}

/// The outcome of [`plan_pre_allocation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreAllocation {
    /// The addresses the pool must hold (its `spec.ips` and its subnet record).
    pub ips: IpSet,
    /// The whole `status.controlledIPPools` after the change.
    pub controlled: ControlledIpPools,
    /// Whether the subnet status must be written.
    pub subnet_changed: bool,
    pub change: PoolChange,
    /// Addresses removed from the record (must still be free in the pool when it is written).
    pub released: IpSet,
}

fn parse_set(version: IpVersion, what: String, ranges: &[String]) -> Result<IpSet, AutoPoolError> {
    IpSet::from_ranges(version, ranges)
        .map_err(|source| AutoPoolError::InvalidRanges { what, source })
}

/// `preAllocateIPsFromSubnet`, made safe: the pool's record becomes `desired` addresses that
///
/// * keep every address the pool has allocated (a scale-down drops only free addresses, lowest
///   first, and fails with [`AutoPoolError::FreeIpsNotEnough`] when too few are free);
/// * keep the current record as far as the size allows;
/// * add the lowest addresses of the subnet that no other record holds, that are not reserved and
///   that no other pool of the CIDR holds or has allocated.
pub fn plan_pre_allocation(input: &PreAllocationInput<'_>) -> Result<PreAllocation, AutoPoolError> {
    let version = input.subnet_ips.version();
    if input.desired < 0 {
        return Err(AutoPoolError::NegativeDesired {
            pool: input.pool.to_string(),
            desired: input.desired,
        });
    }
    let desired = u128::try_from(input.desired).unwrap_or_default();
    let record = input.controlled.0.get(input.pool);
    let current = match record {
        Some(entry) => parse_set(
            version,
            format!("the controlledIPPools entry of IPPool {}", input.pool),
            &entry.ips,
        )?,
        None => IpSet::new(version),
    };
    let mut others = IpSet::new(version);
    for (name, entry) in &input.controlled.0 {
        if name != input.pool {
            let set = parse_set(
                version,
                format!("the controlledIPPools entry of IPPool {name}"),
                &entry.ips,
            )?;
            others = others.union(&set);
        }
    }
    let allocated = input
        .existing
        .map(|pool| pool.allocated.clone())
        .unwrap_or_else(|| IpSet::new(version));
    let foreign = allocated.subtract(&current).intersect(&others);
    if !foreign.is_empty() {
        return Err(AutoPoolError::ForeignAllocation {
            subnet: input.subnet.to_string(),
            pool: input.pool.to_string(),
            ips: foreign.to_range_strings(),
        });
    }
    let mut ips = current.union(&allocated);
    let size = ips.count();
    if size > desired {
        let free = ips.subtract(&allocated);
        let required = size - desired;
        if free.count() < required {
            return Err(AutoPoolError::FreeIpsNotEnough {
                pool: input.pool.to_string(),
                required,
                free: free.count(),
            });
        }
        ips = ips.subtract(&free.lowest(required));
    } else if size < desired {
        let required = desired - size;
        let candidates = input
            .subnet_ips
            .subtract(&others)
            .subtract(&ips)
            .subtract(input.reserved)
            .subtract(input.held_elsewhere);
        if candidates.count() < required {
            return Err(AutoPoolError::InsufficientSubnetIps {
                subnet: input.subnet.to_string(),
                pool: input.pool.to_string(),
                required,
                left: candidates.count(),
            });
        }
        ips = ips.union(&candidates.lowest(required));
    }
    let change = match record {
        None if input.existing.is_none() => PoolChange::Created,
        _ => {
            let from = current.count();
            let to = ips.count();
            if to > from {
                PoolChange::ScaledUp { from, to }
            } else if to < from {
                PoolChange::ScaledDown { from, to }
            } else if ips != current {
                PoolChange::Repaired
            } else {
                PoolChange::Unchanged
            }
        }
    };
    let entry = PoolIpPreAllocation {
        ips: ips.to_range_strings(),
        application: input.application.clone(),
    };
    let mut controlled = input.controlled.clone();
    let subnet_changed = record != Some(&entry);
    controlled.0.insert(input.pool.to_string(), entry);
    Ok(PreAllocation {
        released: current.subtract(&ips),
        ips,
        controlled,
        subnet_changed,
        change,
    })
}

/// `status.totalIPCount` and `status.allocatedIPCount` of a subnet with these records.
pub fn subnet_counts(
    subnet_ips: &IpSet,
    controlled: &ControlledIpPools,
) -> Result<(i64, i64), AutoPoolError> {
    let allocated = controlled
        .allocated_ip_count(subnet_ips.version())
        .map_err(|source| AutoPoolError::InvalidRanges {
            what: "status.controlledIPPools".to_string(),
            source,
        })?;
    Ok((subnet_ips.count_i64(), allocated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::{ANNO_POOL_IP_NUMBER, ANNO_POOL_RECLAIM, ANNO_SUBNET, ANNO_SUBNETS};

    fn set(ranges: &[&str]) -> IpSet {
        IpSet::from_ranges(IpVersion::V4, ranges).expect("valid test ranges")
    }

    fn app(kind: &str, name: &str, uid: &str) -> AppRef {
        AppRef::from_api_version("apps/v1", kind, "default", name, uid)
    }

    // G18, G19, G20
    #[test]
    fn pool_names_follow_upstream() {
        assert_eq!(
            auto_pool_name("test-name", IpVersion::V4, "test-nic", "a-b-c-d"),
            "auto4-test-name-test-nic-d"
        );
        assert_eq!(
            auto_pool_name("test-name", IpVersion::V4, "test-nic", "a-b-c-defghi"),
            "auto4-test-name-test-nic-defgh"
        );
        assert_eq!(
            auto_pool_name(
                "Nginx",
                IpVersion::V6,
                "ETH0",
                "2d6a1f3e-5b7c-4d9e-8f10-9A2B3c4d5e6f"
            ),
            "auto6-nginx-eth0-9a2b3"
        );
    }

    #[test]
    fn pool_names_tell_which_workload_instance_they_were_made_for() {
        let name = auto_pool_name(
            "web",
            IpVersion::V4,
            "eth0",
            "2d6a1f3e-5b7c-4d9e-8f10-9a2b3c4d5e6f",
        );
        assert!(pool_name_matches_uid(
            &name,
            "2d6a1f3e-5b7c-4d9e-8f10-9A2B3c4d5e6f"
        ));
        assert!(!pool_name_matches_uid(
            &name,
            "2d6a1f3e-5b7c-4d9e-8f10-111111111111"
        ));
    }

    #[test]
    fn pool_names_never_exceed_253_characters() {
        let long = "a".repeat(253);
        let name = auto_pool_name(&long, IpVersion::V4, "eth0", "x-9a2b3c4d5e6f");
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-eth0-9a2b3"));
        let dotted = format!("{}.b", "a".repeat(235));
        let name = auto_pool_name(&dotted, IpVersion::V4, "eth0", "x-9a2b3c4d5e6f");
        assert!(name.len() <= 253);
        assert!(!name.contains(".-"), "{name}");
        let huge_nic = "n".repeat(300);
        assert_eq!(
            auto_pool_name("web", IpVersion::V4, &huge_nic, "u").len(),
            253
        );
    }

    // G21
    #[test]
    fn application_gv_round_trips() {
        assert_eq!(application_label_gv("v1"), "v1");
        assert_eq!(application_label_gv("apps/v1"), "apps_v1");
        assert_eq!(
            parse_application_gv("apps_v1"),
            Some(("apps".into(), "v1".into()))
        );
        assert_eq!(
            parse_application_gv("v1"),
            Some((String::new(), "v1".into()))
        );
        assert_eq!(parse_application_gv("a_b_c"), None);
    }

    // G22
    #[test]
    fn application_keys_round_trip() {
        let with_group =
            AppRef::from_api_version("apps/v1", "test-kind", "test-ns", "test-name", "");
        assert_eq!(
            application_key(&with_group),
            "apps_v1_test-kind_test-ns_test-name"
        );
        let core = AppRef::from_api_version("v1", "test-kind", "test-ns", "test-name", "");
        assert_eq!(application_key(&core), "v1_test-kind_test-ns_test-name");
        assert_eq!(
            parse_application_key("apps_v1_test-kind_test-ns_test-name"),
            Some(with_group)
        );
        assert_eq!(
            parse_application_key("v1_test-kind_test-ns_test-name"),
            Some(core)
        );
        assert_eq!(parse_application_key("wrong-input"), None);
        assert_eq!(parse_application_key("a__b_c"), None);
    }

    // G26
    #[test]
    fn job_pod_count_follows_parallelism_and_completions() {
        assert_eq!(job_pod_count(Some(0), None), 1);
        assert_eq!(job_pod_count(Some(2), None), 2);
        assert_eq!(job_pod_count(None, Some(0)), 1);
        assert_eq!(job_pod_count(None, Some(2)), 2);
        assert_eq!(job_pod_count(Some(3), Some(0)), 1);
        assert_eq!(job_pod_count(Some(3), Some(2)), 2);
        assert_eq!(job_pod_count(None, None), 1);
    }

    // G27
    #[test]
    fn subnet_free_ips_leave_out_every_record() {
        let subnet = IpSet::from_ranges(
            IpVersion::V4,
            &["10.0.0.10-10.0.0.100", "10.0.1.10-10.0.1.100"],
        )
        .unwrap();
        let controlled = ControlledIpPools::parse(
            "s",
            Some(r#"{"test-pool":{"ips":["10.0.0.10-10.0.0.100"]}}"#),
        )
        .unwrap();
        let free = subnet_free_ips(&subnet, &controlled).unwrap();
        assert_eq!(free.count(), 91);
        assert_eq!(free.to_range_strings(), vec!["10.0.1.10-10.0.1.100"]);
    }

    fn workload(annotations: &[(&str, &str)], replicas: i64) -> WorkloadView {
        WorkloadView {
            app: app(
                "Deployment",
                "nginx",
                "2d6a1f3e-5b7c-4d9e-8f10-9a2b3c4d5e6f",
            ),
            replicas,
            host_network: false,
            annotations: annotations
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        }
    }

    // G24 (through plan_workload)
    #[test]
    fn pool_sizes_follow_the_ip_number_annotation() {
        let settings = ClusterSettings::default();
        let subnets = r#"[{"interface":"eth0","ipv4":["v4"],"ipv6":["v6"]}]"#;
        let size = |number: Option<&str>| {
            let mut annotations = vec![(ANNO_SUBNETS, subnets)];
            if let Some(number) = number {
                annotations.push((ANNO_POOL_IP_NUMBER, number));
            }
            plan_workload(&workload(&annotations, 3), &settings).map(|requests| {
                requests
                    .iter()
                    .map(|request| request.desired)
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(size(Some("5")), Ok(vec![5, 5]));
        assert_eq!(size(Some("+2")), Ok(vec![5, 5]));
        assert_eq!(size(None), Ok(vec![4, 4]), "default is +1");
        assert!(size(Some("a")).is_err());
        assert!(size(Some("-1")).is_err());
        assert!(size(Some("++5")).is_err());
        let mut zero = settings.clone();
        zero.cluster_subnet_default_flexible_ip_number = 0;
        let requests = plan_workload(&workload(&[(ANNO_SUBNETS, subnets)], 3), &zero).unwrap();
        assert_eq!(requests[0].desired, 3);
    }

    #[test]
    fn every_nic_and_enabled_family_gets_a_pool() {
        let mut settings = ClusterSettings::default();
        let subnets = r#"[{"interface":"eth0","ipv4":["a4"],"ipv6":["a6"]},{"interface":"net1","ipv4":["b4"]}]"#;
        let requests = plan_workload(
            &workload(&[(ANNO_SUBNETS, subnets), (ANNO_POOL_RECLAIM, "false")], 2),
            &settings,
        )
        .unwrap();
        let summary: Vec<_> = requests
            .iter()
            .map(|request| {
                (
                    request.pool_name.as_str(),
                    request.subnet.as_str(),
                    request.reclaim,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("auto4-nginx-eth0-9a2b3", "a4", false),
                ("auto6-nginx-eth0-9a2b3", "a6", false),
                ("auto4-nginx-net1-9a2b3", "b4", false),
            ]
        );
        settings.enable_ipv6 = false;
        let requests = plan_workload(&workload(&[(ANNO_SUBNETS, subnets)], 2), &settings).unwrap();
        assert_eq!(requests.len(), 2);
    }

    #[test]
    fn single_subnet_annotation_defaults_to_eth0() {
        let requests = plan_workload(
            &workload(&[(ANNO_SUBNET, r#"{"ipv4":["s4"]}"#)], 1),
            &ClusterSettings::default(),
        )
        .unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].nic, "eth0");
        assert_eq!(requests[0].ip_number.annotation_value(), "+1");
    }

    #[test]
    fn host_network_and_unannotated_workloads_need_no_pool() {
        let settings = ClusterSettings::default();
        assert!(
            plan_workload(&workload(&[], 3), &settings)
                .unwrap()
                .is_empty()
        );
        let mut host = workload(&[(ANNO_SUBNET, r#"{"ipv4":["s4"]}"#)], 3);
        host.host_network = true;
        assert!(plan_workload(&host, &settings).unwrap().is_empty());
        let mut disabled = settings.clone();
        disabled.enable_auto_pool_for_application = false;
        let annotated = workload(&[(ANNO_SUBNET, r#"{"ipv4":["s4"]}"#)], 3);
        assert!(plan_workload(&annotated, &disabled).unwrap().is_empty());
    }

    #[test]
    fn invalid_annotations_are_wrong_input() {
        let error = plan_workload(
            &workload(&[(ANNO_SUBNETS, r#"[{"interface":"eth0"}]"#)], 1),
            &ClusterSettings::default(),
        )
        .unwrap_err();
        assert!(error.is_wrong_input());
        assert_eq!(error.metric_label(), "invalid_annotation");
    }

    fn input<'a>(
        pool: &'a str,
        desired: i64,
        subnet: &'a IpSet,
        controlled: &'a ControlledIpPools,
        empty: &'a IpSet,
        existing: Option<&'a PoolSnapshot>,
    ) -> PreAllocationInput<'a> {
        PreAllocationInput {
            subnet: "subnet",
            pool,
            application: Some("apps_v1_Deployment_default_deployment1".into()),
            desired,
            subnet_ips: subnet,
            controlled,
            reserved: empty,
            held_elsewhere: empty,
            existing,
        }
    }

    // G28
    #[test]
    fn first_pre_allocation_takes_the_lowest_subnet_address() {
        let subnet = set(&["172.16.41.1-172.16.41.200"]);
        let controlled = ControlledIpPools::default();
        let empty = IpSet::new(IpVersion::V4);
        let name = auto_pool_name("deployment1", IpVersion::V4, "eth0", "a-b-c");
        assert_eq!(name, "auto4-deployment1-eth0-c");
        let plan =
            plan_pre_allocation(&input(&name, 1, &subnet, &controlled, &empty, None)).unwrap();
        assert_eq!(plan.ips.to_range_strings(), vec!["172.16.41.1"]);
        assert_eq!(plan.change, PoolChange::Created);
        assert!(plan.subnet_changed);
        assert_eq!(
            plan.controlled.encode().unwrap(),
            r#"{"auto4-deployment1-eth0-c":{"ips":["172.16.41.1"],"application":"apps_v1_Deployment_default_deployment1"}}"#
        );
        assert_eq!(subnet_counts(&subnet, &plan.controlled).unwrap(), (200, 1));
    }

    #[test]
    fn scale_up_keeps_the_record_and_adds_the_lowest_free_addresses() {
        let subnet = set(&["10.0.0.1-10.0.0.20"]);
        let controlled = ControlledIpPools::parse(
            "subnet",
            Some(r#"{"other":{"ips":["10.0.0.1-10.0.0.3"]},"mine":{"ips":["10.0.0.4-10.0.0.5"]}}"#),
        )
        .unwrap();
        let reserved = set(&["10.0.0.6"]);
        let held = set(&["10.0.0.7"]);
        let existing = PoolSnapshot {
            ips: set(&["10.0.0.4-10.0.0.5"]),
            allocated: set(&["10.0.0.4"]),
        };
        let mut request = input("mine", 5, &subnet, &controlled, &reserved, Some(&existing));
        request.held_elsewhere = &held;
        let plan = plan_pre_allocation(&request).unwrap();
        assert_eq!(
            plan.ips.to_range_strings(),
            vec!["10.0.0.4-10.0.0.5", "10.0.0.8-10.0.0.10"]
        );
        assert_eq!(plan.change, PoolChange::ScaledUp { from: 2, to: 5 });
        assert!(plan.released.is_empty());
    }

    #[test]
    fn scale_down_drops_the_lowest_free_addresses_only() {
        let subnet = set(&["10.0.0.1-10.0.0.20"]);
        let controlled =
            ControlledIpPools::parse("subnet", Some(r#"{"mine":{"ips":["10.0.0.1-10.0.0.5"]}}"#))
                .unwrap();
        let empty = IpSet::new(IpVersion::V4);
        let existing = PoolSnapshot {
            ips: set(&["10.0.0.1-10.0.0.5"]),
            allocated: set(&["10.0.0.1", "10.0.0.4"]),
        };
        let plan = plan_pre_allocation(&input(
            "mine",
            3,
            &subnet,
            &controlled,
            &empty,
            Some(&existing),
        ))
        .unwrap();
        assert_eq!(
            plan.ips.to_range_strings(),
            vec!["10.0.0.1", "10.0.0.4-10.0.0.5"]
        );
        assert_eq!(plan.released.to_range_strings(), vec!["10.0.0.2-10.0.0.3"]);
        assert_eq!(plan.change, PoolChange::ScaledDown { from: 5, to: 3 });
    }

    #[test]
    fn scale_down_never_drops_an_allocated_address() {
        let subnet = set(&["10.0.0.1-10.0.0.20"]);
        let controlled =
            ControlledIpPools::parse("subnet", Some(r#"{"mine":{"ips":["10.0.0.1-10.0.0.5"]}}"#))
                .unwrap();
        let empty = IpSet::new(IpVersion::V4);
        let existing = PoolSnapshot {
            ips: set(&["10.0.0.1-10.0.0.5"]),
            allocated: set(&["10.0.0.1-10.0.0.4"]),
        };
        let error = plan_pre_allocation(&input(
            "mine",
            2,
            &subnet,
            &controlled,
            &empty,
            Some(&existing),
        ))
        .unwrap_err();
        assert_eq!(
            error,
            AutoPoolError::FreeIpsNotEnough {
                pool: "mine".into(),
                required: 3,
                free: 1
            }
        );
        assert!(!error.is_wrong_input());
    }

    #[test]
    fn an_unchanged_pool_needs_no_write() {
        let subnet = set(&["10.0.0.1-10.0.0.20"]);
        let controlled = ControlledIpPools::parse(
            "subnet",
            Some(r#"{"mine":{"ips":["10.0.0.1-10.0.0.2"],"application":"apps_v1_Deployment_default_deployment1"}}"#),
        )
        .unwrap();
        let empty = IpSet::new(IpVersion::V4);
        let existing = PoolSnapshot {
            ips: set(&["10.0.0.1-10.0.0.2"]),
            allocated: set(&["10.0.0.2"]),
        };
        let plan = plan_pre_allocation(&input(
            "mine",
            2,
            &subnet,
            &controlled,
            &empty,
            Some(&existing),
        ))
        .unwrap();
        assert_eq!(plan.change, PoolChange::Unchanged);
        assert!(!plan.subnet_changed);
    }

    #[test]
    fn a_record_that_lost_an_allocated_address_is_repaired() {
        // A scale-down wrote the subnet record, then a pod took 10.0.0.1 before the pool was
        // updated: the record gets the address back and gives up a free one instead.
        let subnet = set(&["10.0.0.1-10.0.0.20"]);
        let controlled =
            ControlledIpPools::parse("subnet", Some(r#"{"mine":{"ips":["10.0.0.2-10.0.0.3"]}}"#))
                .unwrap();
        let empty = IpSet::new(IpVersion::V4);
        let existing = PoolSnapshot {
            ips: set(&["10.0.0.1-10.0.0.5"]),
            allocated: set(&["10.0.0.1", "10.0.0.3"]),
        };
        let plan = plan_pre_allocation(&input(
            "mine",
            2,
            &subnet,
            &controlled,
            &empty,
            Some(&existing),
        ))
        .unwrap();
        assert_eq!(plan.ips.to_range_strings(), vec!["10.0.0.1", "10.0.0.3"]);
        assert_eq!(plan.change, PoolChange::Repaired);
    }

    #[test]
    fn an_allocation_recorded_for_another_pool_is_reported() {
        let subnet = set(&["10.0.0.1-10.0.0.20"]);
        let controlled = ControlledIpPools::parse(
            "subnet",
            Some(r#"{"mine":{"ips":["10.0.0.2"]},"theirs":{"ips":["10.0.0.1"]}}"#),
        )
        .unwrap();
        let empty = IpSet::new(IpVersion::V4);
        let existing = PoolSnapshot {
            ips: set(&["10.0.0.1-10.0.0.2"]),
            allocated: set(&["10.0.0.1"]),
        };
        let error = plan_pre_allocation(&input(
            "mine",
            2,
            &subnet,
            &controlled,
            &empty,
            Some(&existing),
        ))
        .unwrap_err();
        assert_eq!(error.metric_label(), "foreign_allocation");
    }

    #[test]
    fn an_exhausted_subnet_says_how_many_are_left() {
        let subnet = set(&["10.0.0.1-10.0.0.3"]);
        let controlled = ControlledIpPools::default();
        let empty = IpSet::new(IpVersion::V4);
        let error =
            plan_pre_allocation(&input("mine", 5, &subnet, &controlled, &empty, None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "insufficient subnet FreeIPs, required '5' but only left '3'"
        );
        assert_eq!(error.metric_label(), "subnet_exhausted");
    }

    #[test]
    fn a_pool_scaled_to_zero_keeps_an_empty_record() {
        let subnet = set(&["10.0.0.1-10.0.0.3"]);
        let controlled =
            ControlledIpPools::parse("subnet", Some(r#"{"mine":{"ips":["10.0.0.1"]}}"#)).unwrap();
        let empty = IpSet::new(IpVersion::V4);
        let existing = PoolSnapshot {
            ips: set(&["10.0.0.1"]),
            allocated: IpSet::new(IpVersion::V4),
        };
        let plan = plan_pre_allocation(&input(
            "mine",
            0,
            &subnet,
            &controlled,
            &empty,
            Some(&existing),
        ))
        .unwrap();
        assert!(plan.ips.is_empty());
        assert_eq!(
            plan.controlled.encode().unwrap(),
            r#"{"mine":{"ips":null,"application":"apps_v1_Deployment_default_deployment1"}}"#
        );
    }
}
