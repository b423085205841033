//! Pure detection of the cluster's pod and service CIDRs from a snapshot of their sources
//! ([`Sources`], read by the controller) into the SpiderCoordinator status ([`Detection`]).
//!
//! Where each `podCIDRType` looks:
//! - `cluster`: `kube-system/kubeadm-config` (`ClusterConfiguration.networking.podSubnet`), then
//!   the kube-controller-manager pod's `--cluster-cidr`, then the Nodes' `spec.podCIDRs`. The
//!   first source that yields anything wins, and the status reason names it.
//! - `calico`: the enabled Calico IPPools (`crd.projectcalico.org/v1`), oldest first.
//! - `cilium`: `kube-system/cilium-config`: its `cluster-pool-ipv4/6-cidr` in cluster-pool mode,
//!   the CiliumPodIPPools in multi-pool mode, the `cluster` sources in kubernetes mode.
//! - `auto`: Cilium when its ConfigMap exists, else Calico when its IPPools are served, else
//!   `cluster`, and `none` when the cluster sources hold no pod CIDR either (an underlay-only
//!   cluster). Upstream guesses from the CNI configuration files on the controller's own node;
//!   the API server is what a controller-manager can see wherever it runs, so we ask it.
//! - `none`: no pod CIDR.
//!
//! Service CIDRs come from the `networking.k8s.io/v1` ServiceCIDR objects, or, where that API is
//! not served or holds none, from kubeadm-config's `serviceSubnet` and the
//! `--service-cluster-ip-range` flag.
//!
//! Decision (upstream differs): a cluster whose service CIDRs cannot be found is `NotReady`.
//! Upstream reports `Synced` with an empty list, and the plugin then silently routes Services
//! out of the underlay interface, which is the failure users hit first; a `NotReady` with a
//! reason tells them what to fix.

use std::collections::BTreeMap;
use std::net::IpAddr;

use spiderpool_api::PodCIDRType;

pub const PHASE_SYNCED: &str = "Synced";
pub const PHASE_NOT_READY: &str = "NotReady";

/// Where the kube-system ConfigMaps live.
pub const SYSTEM_NAMESPACE: &str = "kube-system";
pub const KUBEADM_CONFIG: &str = "kubeadm-config";
pub const CILIUM_CONFIG: &str = "cilium-config";
/// Label of the kube-controller-manager static pod (kubeadm and most installers).
pub const KCM_SELECTOR: &str = "component=kube-controller-manager";

/// A Calico IPPool as far as detection cares.
#[derive(Debug, Clone, PartialEq)]
pub struct CalicoPool {
    pub cidr: String,
    pub disabled: bool,
}

/// Everything detection reads, as the controller found it. `None` means "not there": the
/// ConfigMap or pod does not exist, or the API is not served.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Data of `kube-system/kubeadm-config`.
    pub kubeadm_config: Option<BTreeMap<String, String>>,
    /// Command and arguments of the first kube-controller-manager pod.
    pub controller_manager_args: Option<Vec<String>>,
    /// `spec.podCIDRs` (or `spec.podCIDR`) of every Node, in listing order.
    pub node_pod_cidrs: Vec<String>,
    /// Calico IPPools, oldest first; `None`: the API is not served.
    pub calico_pools: Option<Vec<CalicoPool>>,
    /// Data of `kube-system/cilium-config`.
    pub cilium_config: Option<BTreeMap<String, String>>,
    /// CIDRs of each CiliumPodIPPool, oldest first; `None`: the API is not served.
    pub cilium_pools: Option<Vec<Vec<String>>>,
    /// CIDRs of the ServiceCIDR objects not being deleted, oldest first; `None`: not served.
    pub service_cidrs: Option<Vec<String>>,
}

/// The status the controller writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub phase: &'static str,
    /// For `NotReady` what is missing; for `Synced` where the CIDRs came from.
    pub reason: String,
    pub overlay_pod_cidr: Vec<String>,
    pub service_cidr: Vec<String>,
}

/// The CIDRs of the cluster's own configuration, with the name of the source they came from.
#[derive(Debug, Clone, PartialEq, Default)]
struct Found {
    cidrs: Vec<String>,
    source: String,
}

/// Whether `cluster` detection still needs the Nodes (neither kubeadm-config nor the
/// kube-controller-manager flags name a pod CIDR), so the controller lists them only then.
pub fn needs_nodes(sources: &Sources) -> bool {
    kubeadm_pod_cidrs(sources).is_empty() && flag_values(sources, "--cluster-cidr").is_empty()
}

/// The status for `pod_cidr_type` given `sources`.
pub fn detect(pod_cidr_type: Option<PodCIDRType>, sources: &Sources) -> Detection {
    let service = service_cidrs(sources);
    let pod = match pod_cidr_type {
        // The webhook requires the field; an object that predates it is treated as `auto`.
        None | Some(PodCIDRType::Auto) => {
            let resolved = resolve_auto(sources);
            match pod_cidrs(resolved, sources) {
                Ok(found) => Ok(Found {
                    source: format!(
                        "podCIDRType auto resolved to {}: {}",
                        type_name(resolved),
                        found.source
                    ),
                    ..found
                }),
                // A cluster whose only CNI is an underlay one has no pod CIDR to route via the
                // host: `auto` then means `none`, as upstream's auto does for a CNI it does not
                // know. An explicit `cluster` still reports what is missing.
                Err(_) if resolved == PodCIDRType::Cluster => Ok(Found {
                    cidrs: Vec::new(),
                    source: "podCIDRType auto: no Cilium, Calico or cluster pod CIDR found, \
                             so no pod CIDR (as none)"
                        .into(),
                }),
                Err(missing) => Err(missing),
            }
        }
        Some(other) => pod_cidrs(other, sources),
    };
    let (pod, service) = match (pod, service) {
        (Ok(pod), Ok(service)) => (pod, service),
        (Err(missing), _) | (Ok(_), Err(missing)) => {
            return Detection {
                phase: PHASE_NOT_READY,
                reason: missing,
                overlay_pod_cidr: Vec::new(),
                service_cidr: Vec::new(),
            };
        }
    };
    if let Some(bad) = pod.cidrs.iter().chain(&service.cidrs).find(|c| !is_cidr(c)) {
        return Detection {
            phase: PHASE_NOT_READY,
            reason: format!("{bad:?} is not a CIDR ({}; {})", pod.source, service.source),
            overlay_pod_cidr: Vec::new(),
            service_cidr: Vec::new(),
        };
    }
    Detection {
        phase: PHASE_SYNCED,
        reason: format!("{}; {}", pod.source, service.source),
        overlay_pod_cidr: pod.cidrs,
        service_cidr: service.cidrs,
    }
}

fn type_name(pod_cidr_type: PodCIDRType) -> &'static str {
    match pod_cidr_type {
        PodCIDRType::Auto => "auto",
        PodCIDRType::Cluster => "cluster",
        PodCIDRType::Calico => "calico",
        PodCIDRType::Cilium => "cilium",
        PodCIDRType::None => "none",
    }
}

fn resolve_auto(sources: &Sources) -> PodCIDRType {
    if sources.cilium_config.is_some() {
        PodCIDRType::Cilium
    } else if sources.calico_pools.is_some() {
        PodCIDRType::Calico
    } else {
        PodCIDRType::Cluster
    }
}

fn pod_cidrs(pod_cidr_type: PodCIDRType, sources: &Sources) -> Result<Found, String> {
    match pod_cidr_type {
        PodCIDRType::None => Ok(Found {
            cidrs: Vec::new(),
            source: "podCIDRType none: no pod CIDR".into(),
        }),
        // `resolve_auto` never returns Auto; treat it as cluster all the same.
        PodCIDRType::Cluster | PodCIDRType::Auto => cluster_pod_cidrs(sources),
        PodCIDRType::Calico => calico_pod_cidrs(sources),
        PodCIDRType::Cilium => cilium_pod_cidrs(sources),
    }
}

fn cluster_pod_cidrs(sources: &Sources) -> Result<Found, String> {
    let from_kubeadm = kubeadm_pod_cidrs(sources);
    if !from_kubeadm.is_empty() {
        return Ok(Found {
            cidrs: from_kubeadm,
            source: format!(
                "pod CIDRs from {SYSTEM_NAMESPACE}/{KUBEADM_CONFIG} networking.podSubnet"
            ),
        });
    }
    let from_flags = flag_values(sources, "--cluster-cidr");
    if !from_flags.is_empty() {
        return Ok(Found {
            cidrs: from_flags,
            source: "pod CIDRs from the kube-controller-manager pod's --cluster-cidr".into(),
        });
    }
    let mut from_nodes: Vec<String> = Vec::new();
    for cidr in &sources.node_pod_cidrs {
        if !from_nodes.contains(cidr) {
            from_nodes.push(cidr.clone());
        }
    }
    if !from_nodes.is_empty() {
        return Ok(Found {
            cidrs: from_nodes,
            source: "pod CIDRs from the Nodes' spec.podCIDRs".into(),
        });
    }
    let kubeadm = if sources.kubeadm_config.is_some() {
        "has no networking.podSubnet"
    } else {
        "does not exist"
    };
    let flags = if sources.controller_manager_args.is_some() {
        "has no --cluster-cidr flag"
    } else {
        "was not found (no pod labelled component=kube-controller-manager in kube-system)"
    };
    Err(format!(
        "podCIDRType cluster: no pod CIDR found: {SYSTEM_NAMESPACE}/{KUBEADM_CONFIG} {kubeadm}, \
         the kube-controller-manager pod {flags}, and no Node has spec.podCIDRs; set \
         spec.podCIDRType to the cluster's CNI (calico, cilium) or none"
    ))
}

fn calico_pod_cidrs(sources: &Sources) -> Result<Found, String> {
    let Some(pools) = &sources.calico_pools else {
        return Err(
            "podCIDRType calico: Calico IPPools (crd.projectcalico.org/v1) are not served; \
                    is Calico installed?"
                .into(),
        );
    };
    let cidrs: Vec<String> = pools
        .iter()
        .filter(|pool| !pool.disabled)
        .map(|pool| pool.cidr.clone())
        .collect();
    if cidrs.is_empty() {
        return Err("podCIDRType calico: no enabled Calico IPPool exists".into());
    }
    Ok(Found {
        cidrs,
        source: "pod CIDRs from the Calico IPPools".into(),
    })
}

fn cilium_pod_cidrs(sources: &Sources) -> Result<Found, String> {
    let Some(config) = &sources.cilium_config else {
        return Err(format!(
            "podCIDRType cilium: the ConfigMap {SYSTEM_NAMESPACE}/{CILIUM_CONFIG} does not exist; \
             is Cilium installed?"
        ));
    };
    // Cilium's own default IPAM mode is cluster-pool.
    let mode = config
        .get("ipam")
        .map(|mode| mode.trim())
        .unwrap_or("cluster-pool");
    match mode {
        "cluster-pool" | "cluster-pool-v2beta" => {
            let cidrs: Vec<String> = ["cluster-pool-ipv4-cidr", "cluster-pool-ipv6-cidr"]
                .iter()
                .filter_map(|key| config.get(*key))
                .flat_map(|value| split_list(value))
                .collect();
            if cidrs.is_empty() {
                return Err(format!(
                    "podCIDRType cilium: {SYSTEM_NAMESPACE}/{CILIUM_CONFIG} (ipam {mode}) has no \
                     cluster-pool-ipv4-cidr or cluster-pool-ipv6-cidr"
                ));
            }
            Ok(Found {
                cidrs,
                source: format!("pod CIDRs from {SYSTEM_NAMESPACE}/{CILIUM_CONFIG} ({mode})"),
            })
        }
        "multi-pool" => {
            let Some(pools) = &sources.cilium_pools else {
                return Err(
                    "podCIDRType cilium: ipam is multi-pool but CiliumPodIPPools \
                            (cilium.io/v2alpha1) are not served"
                        .into(),
                );
            };
            let cidrs: Vec<String> = pools.iter().flatten().cloned().collect();
            if cidrs.is_empty() {
                return Err(
                    "podCIDRType cilium: ipam is multi-pool but no CiliumPodIPPool has a CIDR"
                        .into(),
                );
            }
            Ok(Found {
                cidrs,
                source: "pod CIDRs from the CiliumPodIPPools".into(),
            })
        }
        "kubernetes" => cluster_pod_cidrs(sources).map(|found| Found {
            source: format!("cilium ipam kubernetes, {}", found.source),
            ..found
        }),
        other => Err(format!(
            "podCIDRType cilium: unsupported Cilium IPAM mode {other:?} in \
             {SYSTEM_NAMESPACE}/{CILIUM_CONFIG}"
        )),
    }
}

fn service_cidrs(sources: &Sources) -> Result<Found, String> {
    if let Some(cidrs) = sources.service_cidrs.as_ref().filter(|c| !c.is_empty()) {
        return Ok(Found {
            cidrs: cidrs.clone(),
            source: "service CIDRs from the ServiceCIDR objects".into(),
        });
    }
    let from_kubeadm = kubeadm_networking(sources, "serviceSubnet");
    if !from_kubeadm.is_empty() {
        return Ok(Found {
            cidrs: from_kubeadm,
            source: format!(
                "service CIDRs from {SYSTEM_NAMESPACE}/{KUBEADM_CONFIG} networking.serviceSubnet"
            ),
        });
    }
    let from_flags = flag_values(sources, "--service-cluster-ip-range");
    if !from_flags.is_empty() {
        return Ok(Found {
            cidrs: from_flags,
            source: "service CIDRs from the kube-controller-manager pod's \
                     --service-cluster-ip-range"
                .into(),
        });
    }
    Err(format!(
        "no service CIDR found: no ServiceCIDR object (networking.k8s.io/v1), no \
         networking.serviceSubnet in {SYSTEM_NAMESPACE}/{KUBEADM_CONFIG} and no \
         --service-cluster-ip-range on a kube-controller-manager pod"
    ))
}

fn kubeadm_pod_cidrs(sources: &Sources) -> Vec<String> {
    kubeadm_networking(sources, "podSubnet")
}

/// `networking.<key>` of kubeadm's `ClusterConfiguration` (YAML inside the ConfigMap), split at
/// commas (dual stack). A malformed document yields nothing: the next source is tried.
fn kubeadm_networking(sources: &Sources, key: &str) -> Vec<String> {
    let Some(document) = sources
        .kubeadm_config
        .as_ref()
        .and_then(|data| data.get("ClusterConfiguration"))
    else {
        return Vec::new();
    };
    let Ok(parsed) = serde_yaml::from_str::<serde_yaml::Value>(document) else {
        return Vec::new();
    };
    parsed
        .get("networking")
        .and_then(|networking| networking.get(key))
        .and_then(|value| value.as_str())
        .map(split_list)
        .unwrap_or_default()
}

/// Values of `--flag=value` or `--flag value` among the kube-controller-manager's arguments.
fn flag_values(sources: &Sources, flag: &str) -> Vec<String> {
    let Some(arguments) = &sources.controller_manager_args else {
        return Vec::new();
    };
    let prefix = format!("{flag}=");
    let mut iterator = arguments.iter();
    while let Some(argument) = iterator.next() {
        if let Some(value) = argument.strip_prefix(&prefix) {
            return split_list(value);
        }
        if argument == flag {
            return iterator.next().map(|v| split_list(v)).unwrap_or_default();
        }
    }
    Vec::new()
}

/// A comma- or space-separated list, trimmed, without empty entries.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `address/prefix` with a prefix no longer than the address.
pub fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let (Ok(address), Ok(prefix)) = (address.parse::<IpAddr>(), prefix.parse::<u8>()) else {
        return false;
    };
    match address {
        IpAddr::V4(_) => prefix <= 32,
        IpAddr::V6(_) => prefix <= 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeadm(networking: &str) -> Option<BTreeMap<String, String>> {
        Some(BTreeMap::from([(
            "ClusterConfiguration".to_owned(),
            format!(
                "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n{networking}"
            ),
        )]))
    }

    fn with_service() -> Sources {
        Sources {
            service_cidrs: Some(vec!["10.96.0.0/16".into()]),
            ..Sources::default()
        }
    }

    #[test]
    fn cluster_prefers_kubeadm_config_and_says_so() {
        let sources = Sources {
            kubeadm_config: kubeadm("  podSubnet: 10.244.0.0/16,fd00:10:244::/56\n"),
            controller_manager_args: Some(vec!["--cluster-cidr=10.1.0.0/16".into()]),
            ..with_service()
        };
        let detection = detect(Some(PodCIDRType::Cluster), &sources);
        assert_eq!(detection.phase, PHASE_SYNCED);
        assert_eq!(
            detection.overlay_pod_cidr,
            ["10.244.0.0/16", "fd00:10:244::/56"]
        );
        assert!(detection.reason.contains("kubeadm-config"), "{detection:?}");
        assert!(detection.reason.contains("ServiceCIDR objects"));
    }

    #[test]
    fn cluster_falls_back_to_flags_then_nodes() {
        let sources = Sources {
            controller_manager_args: Some(vec![
                "kube-controller-manager".into(),
                "--cluster-cidr".into(),
                "10.1.0.0/16".into(),
            ]),
            ..with_service()
        };
        assert!(!needs_nodes(&sources));
        let detection = detect(Some(PodCIDRType::Cluster), &sources);
        assert_eq!(detection.overlay_pod_cidr, ["10.1.0.0/16"]);
        assert!(detection.reason.contains("--cluster-cidr"));

        let sources = Sources {
            node_pod_cidrs: vec![
                "10.2.1.0/24".into(),
                "10.2.2.0/24".into(),
                "10.2.1.0/24".into(),
            ],
            ..with_service()
        };
        assert!(needs_nodes(&sources));
        let detection = detect(Some(PodCIDRType::Cluster), &sources);
        assert_eq!(detection.overlay_pod_cidr, ["10.2.1.0/24", "10.2.2.0/24"]);
        assert!(detection.reason.contains("Nodes"));
    }

    #[test]
    fn cluster_without_any_source_is_not_ready_and_names_each_one() {
        let detection = detect(Some(PodCIDRType::Cluster), &with_service());
        assert_eq!(detection.phase, PHASE_NOT_READY);
        assert!(detection.reason.contains("kubeadm-config does not exist"));
        assert!(detection.reason.contains("kube-controller-manager"));
        assert!(detection.reason.contains("spec.podCIDRs"));
        assert!(detection.overlay_pod_cidr.is_empty());
    }

    #[test]
    fn service_cidrs_fall_back_to_kubeadm_and_flags() {
        let sources = Sources {
            kubeadm_config: kubeadm("  serviceSubnet: 10.233.0.0/18\n"),
            ..Sources::default()
        };
        let detection = detect(Some(PodCIDRType::None), &sources);
        assert_eq!(detection.service_cidr, ["10.233.0.0/18"]);
        let sources = Sources {
            service_cidrs: Some(Vec::new()),
            controller_manager_args: Some(vec!["--service-cluster-ip-range=10.3.0.0/16".into()]),
            ..Sources::default()
        };
        assert_eq!(
            detect(Some(PodCIDRType::None), &sources).service_cidr,
            ["10.3.0.0/16"]
        );
        let missing = detect(Some(PodCIDRType::None), &Sources::default());
        assert_eq!(missing.phase, PHASE_NOT_READY);
        assert!(missing.reason.contains("no service CIDR found"));
    }

    #[test]
    fn calico_uses_enabled_pools_only() {
        let sources = Sources {
            calico_pools: Some(vec![
                CalicoPool {
                    cidr: "192.168.0.0/16".into(),
                    disabled: false,
                },
                CalicoPool {
                    cidr: "172.30.0.0/16".into(),
                    disabled: true,
                },
            ]),
            ..with_service()
        };
        let detection = detect(Some(PodCIDRType::Calico), &sources);
        assert_eq!(detection.overlay_pod_cidr, ["192.168.0.0/16"]);
        let auto = detect(Some(PodCIDRType::Auto), &sources);
        assert_eq!(auto.overlay_pod_cidr, ["192.168.0.0/16"]);
        assert!(auto.reason.contains("auto resolved to calico"));
        let not_installed = detect(Some(PodCIDRType::Calico), &with_service());
        assert!(not_installed.reason.contains("not served"));
    }

    #[test]
    fn auto_without_any_pod_cidr_source_is_synced_as_none() {
        let detection = detect(Some(PodCIDRType::Auto), &with_service());
        assert_eq!(detection.phase, PHASE_SYNCED);
        assert!(detection.overlay_pod_cidr.is_empty());
        assert!(detection.reason.contains("as none"), "{detection:?}");
    }

    #[test]
    fn cilium_modes() {
        let config = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let cluster_pool = Sources {
            cilium_config: config(&[
                ("ipam", "cluster-pool"),
                ("cluster-pool-ipv4-cidr", "10.0.0.0/8 10.128.0.0/9"),
                ("cluster-pool-ipv6-cidr", "fd00::/104"),
            ]),
            calico_pools: Some(Vec::new()),
            ..with_service()
        };
        let auto = detect(Some(PodCIDRType::Auto), &cluster_pool);
        assert_eq!(
            auto.overlay_pod_cidr,
            ["10.0.0.0/8", "10.128.0.0/9", "fd00::/104"]
        );
        assert!(auto.reason.contains("resolved to cilium"));
        let multi_pool = Sources {
            cilium_config: config(&[("ipam", "multi-pool")]),
            cilium_pools: Some(vec![vec!["10.10.0.0/16".into()], vec!["fd10::/64".into()]]),
            ..with_service()
        };
        assert_eq!(
            detect(Some(PodCIDRType::Cilium), &multi_pool).overlay_pod_cidr,
            ["10.10.0.0/16", "fd10::/64"]
        );
        let unsupported = Sources {
            cilium_config: config(&[("ipam", "eni")]),
            ..with_service()
        };
        let detection = detect(Some(PodCIDRType::Cilium), &unsupported);
        assert_eq!(detection.phase, PHASE_NOT_READY);
        assert!(detection.reason.contains("\"eni\""));
    }

    #[test]
    fn a_malformed_cidr_is_not_ready() {
        let sources = Sources {
            controller_manager_args: Some(vec!["--cluster-cidr=10.1.0.0/33".into()]),
            ..with_service()
        };
        let detection = detect(Some(PodCIDRType::Cluster), &sources);
        assert_eq!(detection.phase, PHASE_NOT_READY);
        assert!(detection.reason.contains("10.1.0.0/33"));
    }

    #[test]
    fn none_is_synced_with_no_pod_cidr() {
        let detection = detect(Some(PodCIDRType::None), &with_service());
        assert_eq!(detection.phase, PHASE_SYNCED);
        assert!(detection.overlay_pod_cidr.is_empty());
        assert_eq!(detection.service_cidr, ["10.96.0.0/16"]);
    }
}
