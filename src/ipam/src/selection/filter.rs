//! Which candidate pools survive (§5.4) and in which order they are tried: disabled,
//! terminating, wrong-family, node-, namespace-, pod- and Multus-mismatched pools are dropped with
//! upstream's reason for each; the survivors are sorted by priority.

use crate::cidr::Cidr;
use crate::ip::IpVersion;
use crate::multus::{ANNO_MULTUS_DEFAULT_NETWORK, ANNO_MULTUS_NETWORKS, parse_network_annotation};
use crate::pod::AppRef;
use crate::pool::{
    AUTO_POOL_AFFINITY_API_GROUP, AUTO_POOL_AFFINITY_API_VERSION, AUTO_POOL_AFFINITY_KIND,
    AUTO_POOL_AFFINITY_NAME, AUTO_POOL_AFFINITY_NAMESPACE, PoolView, sort_by_priority,
};
use crate::result::DEFAULT_INTERFACE;

use super::{Candidates, SelectionContext, SelectionError, go_list};

/// The NAD a NIC is attached through, or why it cannot be determined.
type NadLookup = Result<(String, String), String>;

fn first_nic_nad(ctx: &SelectionContext<'_>, pool: &PoolView) -> NadLookup {
    let namespace = &ctx.settings.spiderpool_namespace;
    let value = match ctx.pod.annotations.get(ANNO_MULTUS_DEFAULT_NETWORK) {
        Some(value) if !value.is_empty() => value.clone(),
        _ => match ctx.settings.cluster_network_namespaced() {
            Some(network) => network,
            None => {
                return Err(format!(
                    "cluster-network multus isn't set, the IPPool {} specified multusName {} unmatched",
                    pool.name,
                    go_list(&pool.multus_name)
                ));
            }
        },
    };
    let networks = parse_network_annotation(&value, namespace).map_err(|error| {
        format!("failed to parse Annotation '{ANNO_MULTUS_DEFAULT_NETWORK}' value '{value}', error: {error}")
    })?;
    let Some(first) = networks.first() else {
        return Err(format!(
            "failed to parse Annotation '{ANNO_MULTUS_DEFAULT_NETWORK}' value '{value}': empty result"
        ));
    };
    let nad_namespace = if first.namespace.is_empty() {
        namespace.clone()
    } else {
        first.namespace.clone()
    };
    Ok((nad_namespace, first.name.clone()))
}

fn additional_nic_nad(ctx: &SelectionContext<'_>, nic: &str) -> NadLookup {
    let value = ctx
        .pod
        .annotations
        .get(ANNO_MULTUS_NETWORKS)
        .cloned()
        .unwrap_or_default();
    let networks = parse_network_annotation(&value, &ctx.pod.namespace)
        .map_err(|error| format!("failed to parse pod network annotation: {error}"))?;
    for (index, network) in networks.iter().enumerate() {
        let interface = if network.interface.is_empty() {
            format!("net{}", index + 1)
        } else {
            network.interface.clone()
        };
        if nic == interface || nic == (index + 1).to_string() {
            let namespace = if network.namespace.is_empty() {
                ctx.pod.namespace.clone()
            } else {
                network.namespace.clone()
            };
            return Ok((namespace, network.name.clone()));
        }
    }
    Err(format!(
        "unknown: no matched multus object for NIC '{nic}'. The multus network-attachments: {value}"
    ))
}

fn is_first_nic(nic: &str) -> bool {
    nic == DEFAULT_INTERFACE || nic == "0"
}

fn auto_pool_affinity_matches(pool: &PoolView, controller: &AppRef) -> bool {
    let Some(affinity) = &pool.pod_affinity else {
        return false;
    };
    let expected = [
        (AUTO_POOL_AFFINITY_API_GROUP, controller.group.as_str()),
        (AUTO_POOL_AFFINITY_API_VERSION, controller.version.as_str()),
        (AUTO_POOL_AFFINITY_KIND, controller.kind.as_str()),
        (AUTO_POOL_AFFINITY_NAMESPACE, controller.namespace.as_str()),
        (AUTO_POOL_AFFINITY_NAME, controller.name.as_str()),
    ];
    expected.iter().all(|(key, value)| {
        affinity
            .match_labels
            .get(*key)
            .map_or(value.is_empty(), |label| label == value)
    })
}

/// `selectByPod`: `None` when the pool is acceptable for this NIC and family, otherwise the reason.
fn rejection(
    ctx: &SelectionContext<'_>,
    version: IpVersion,
    pool: &PoolView,
    nic: &str,
    additional_nad: &mut Option<NadLookup>,
) -> Option<String> {
    let name = &pool.name;
    if pool.terminating {
        return Some(format!("terminating IPPool {name}"));
    }
    if pool.disable {
        return Some(format!("disabled IPPool {name}"));
    }
    let Some(pool_version) = pool.ip_version else {
        return Some("nil ippool ipVersion".to_string());
    };
    if pool_version != version {
        return Some(format!(
            "expect an IPv{version} IPPool, but the version of the IPPool {name} is IPv{pool_version}"
        ));
    }

    if !pool.node_name.is_empty() {
        if !pool.node_name.contains(&ctx.pod.node_name) {
            return Some(format!("unmatched Node name of IPPool {name}"));
        }
    } else if let Some(affinity) = &pool.node_affinity {
        match affinity.matches(&ctx.pod.node_labels) {
            Err(error) => return Some(error.to_string()),
            Ok(false) => return Some(format!("unmatched Node affinity of IPPool {name}")),
            Ok(true) => {}
        }
    }

    if !pool.namespace_name.is_empty() {
        if !pool.namespace_name.contains(&ctx.pod.namespace) {
            return Some(format!("unmatched Namespace name of IPPool {name}"));
        }
    } else if let Some(affinity) = &pool.namespace_affinity {
        match affinity.matches(&ctx.pod.namespace_labels) {
            Err(error) => return Some(error.to_string()),
            Ok(false) => return Some(format!("unmatched Namespace affinity of IPPool {name}")),
            Ok(true) => {}
        }
    }

    if let Some(affinity) = &pool.pod_affinity {
        if pool.auto_created {
            if !auto_pool_affinity_matches(pool, &ctx.pod.top_controller) {
                return Some(format!(
                    "unmatched Pod annifity of auto-created IPool {name}"
                ));
            }
            return None;
        }
        match affinity.matches(&ctx.pod.labels) {
            Err(error) => return Some(error.to_string()),
            Ok(false) => return Some(format!("unmatched Pod affinity of IPPool {name}")),
            Ok(true) => {}
        }
    }

    // The NAD of the NIC: for the first NIC only needed when the pool restricts `multusName`
    // (deliberate difference #4); for other NICs always resolved, as upstream does.
    let nad = if is_first_nic(nic) {
        if pool.multus_name.is_empty() {
            None
        } else {
            Some(first_nic_nad(ctx, pool))
        }
    } else {
        Some(
            additional_nad
                .get_or_insert_with(|| additional_nic_nad(ctx, nic))
                .clone(),
        )
    };
    let nad = match nad {
        Some(Err(reason)) => return Some(reason),
        Some(Ok(nad)) => Some(nad),
        None => None,
    };

    if !pool.multus_name.is_empty() {
        let (nad_namespace, nad_name) = nad.unwrap_or_default();
        let actual = format!("{nad_namespace}/{nad_name}");
        let agent_namespace = &ctx.settings.spiderpool_namespace;
        let matched = pool.multus_name.iter().any(|expected| {
            if expected.contains('/') {
                *expected == actual
            } else {
                format!("{agent_namespace}/{expected}") == actual
            }
        });
        if matched {
            return None;
        }
        return Some(format!(
            "the spec.multusName {} in the IPPool {name} used by the Pod interface {nic} is not matched with the multusCR {actual} specified by the Pod",
            go_list(&pool.multus_name)
        ));
    }

    if !ctx.ipam.match_master_subnet {
        return None;
    }
    let master = match ctx.master_interface {
        None => {
            return Some("filterPoolCandidatesByPfSubnet: podNetNamespace is empty".to_string());
        }
        Some(Err(reason)) => return Some(reason.clone()),
        Some(Ok(master)) => master,
    };
    if pool.subnet.is_empty() {
        return Some("filterPoolCandidatesByPfSubnet: subnet is empty".to_string());
    }
    let subnet = match Cidr::parse_any(&pool.subnet) {
        Ok(subnet) => subnet,
        Err(error) => {
            return Some(format!(
                "filterPoolCandidatesByPfSubnet: failed to parse subnet {:?}: {error}",
                pool.subnet
            ));
        }
    };
    if master
        .addresses
        .iter()
        .any(|address| subnet.contains_ip(address))
    {
        return None;
    }
    Some(format!(
        "filterPoolCandidatesByPfSubnet: the ippool's subnet {:?} not found on pod's PF {:?}",
        pool.subnet, master.pf_name
    ))
}

/// `checkIPVersionEnable` + `precheckPoolCandidates` + `filterPoolCandidates` + `sortPoolCandidates`.
pub fn filter_candidates(
    ctx: &SelectionContext<'_>,
    mut candidates: Candidates,
) -> Result<Candidates, SelectionError> {
    for nic in &mut candidates.nics {
        nic.candidates
            .retain(|candidate| ctx.settings.family_enabled(candidate.ip_version));
    }

    for nic in &candidates.nics {
        for candidate in &nic.candidates {
            let mut seen: Vec<&str> = Vec::with_capacity(candidate.pools.len());
            for pool in &candidate.pools {
                if seen.contains(&pool.as_str()) {
                    return Err(SelectionError::DuplicatePool {
                        pool: pool.clone(),
                        nic: nic.nic.clone(),
                    });
                }
                seen.push(pool);
                if ctx.pool(pool).is_none() {
                    return Err(SelectionError::PoolNotFound { pool: pool.clone() });
                }
            }
        }
    }

    for nic in &mut candidates.nics {
        let mut additional_nad: Option<NadLookup> = None;
        for candidate in &mut nic.candidates {
            let mut reasons = Vec::new();
            let mut kept: Vec<&PoolView> = Vec::new();
            for name in &candidate.pools {
                let Some(pool) = ctx.pool(name) else {
                    continue;
                };
                match rejection(
                    ctx,
                    candidate.ip_version,
                    pool,
                    &nic.nic,
                    &mut additional_nad,
                ) {
                    Some(reason) => reasons.push(reason),
                    None => kept.push(pool),
                }
            }
            if kept.is_empty() {
                return Err(SelectionError::AllFiltered {
                    version: candidate.ip_version,
                    pools: candidate.pools.clone(),
                    nic: nic.nic.clone(),
                    reasons,
                });
            }
            sort_by_priority(&mut kept);
            candidate.pools = kept.into_iter().map(|pool| pool.name.clone()).collect();
        }
    }
    Ok(candidates)
}
