//! Whereabouts (the `whereabouts` IPAM plugin of k8snetworkplumbingwg) in the benchmark driver,
//! set up as its daemonset installer would set up a node, from what `e2e/peers/build.sh` put in
//! `WHEREABOUTS_DIR`: the plugin binary, its CRDs and its RBAC, all of the same module version.
//!
//! - CRDs from the module's `doc/crds`; the ServiceAccount `kube-system/whereabouts`, ClusterRole
//!   `whereabouts-cni` and their binding from its `daemonset-install.yaml` (its DaemonSet and
//!   ConfigMap are not applied: nothing runs in pods here).
//! - Per node: the plugin's flat file (`whereabouts.conf`: datastore, kubeconfig, log file), as
//!   the installer writes it, named by `configuration_path`; the kubeconfig is the
//!   ServiceAccount's, its context naming `kube-system` as the installer's does (the plugin keeps
//!   its IPPools, reservations and leader-election Lease in that namespace).
//! - The network configuration: `"ipam": {"type": "whereabouts", "ipRanges": [v4, v6], ...}` with
//!   `range_start` / `range_end`, one range per family, the same 1000 addresses as ours.
//! - Recorded: the allocations of its IPPools and its OverlappingRangeIPReservations (on by
//!   default), both counted for the benchmark's pods.
//!
//! Its controller (ip-reconciler, which frees addresses of deleted pods later) is not run: the
//! benchmark measures the CNI calls, and what is left after every DEL returned is what the
//! plugin itself did not release.

use std::path::{Path, PathBuf};

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};
use serde_json::{Value, json};
use spiderpool_e2e::rbac::{Account, yaml_documents};
use spiderpool_e2e::{
    apply_object, service_account_kubeconfig, unique_name, wait_for, wait_until_allowed,
};

use super::{BenchPlugin, SimPod, V4, V6};
use crate::ipam_support::{Scratch, TIMEOUT, create_node, delete_node};

const GROUP: &str = "whereabouts.cni.cncf.io";
/// Where the plugin keeps its objects: the namespace of its kubeconfig's context.
const NAMESPACE: &str = "kube-system";
const ACCOUNT: &str = "whereabouts";

/// A namespaced resource of the `whereabouts.cni.cncf.io/v1alpha1` API.
fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1alpha1".into(),
        api_version: format!("{GROUP}/v1alpha1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

pub struct Whereabouts {
    /// The directory of `e2e/peers/build.sh` (`WHEREABOUTS_DIR`).
    dir: PathBuf,
    version: String,
    /// The plugin's log level (`error` unless `BENCH_PEERS_WHEREABOUTS_LOG_LEVEL`).
    log_level: String,
    kubeconfig: PathBuf,
    /// Per node: its name, flat file and log.
    nodes: Vec<(String, PathBuf, PathBuf)>,
}

impl Whereabouts {
    /// From `WHEREABOUTS_DIR`; a clear error without it.
    pub fn from_env() -> anyhow::Result<Whereabouts> {
        let dir = std::env::var_os("WHEREABOUTS_DIR")
            .map(PathBuf::from)
            .context("WHEREABOUTS_DIR is not set: `make bench-peers` builds Whereabouts (e2e/peers/build.sh) and sets it")?;
        let version = std::fs::read_to_string(dir.join("version"))
            .with_context(|| format!("{} has no version file", dir.display()))?
            .trim()
            .to_string();
        Ok(Whereabouts {
            dir,
            version,
            log_level: std::env::var("BENCH_PEERS_WHEREABOUTS_LOG_LEVEL")
                .unwrap_or_else(|_| "error".into()),
            kubeconfig: PathBuf::new(),
            nodes: Vec::new(),
        })
    }

    async fn install_crds(&self, client: &Client) -> anyhow::Result<()> {
        let crds_dir = self.dir.join("crds");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&crds_dir)
            .with_context(|| format!("reading {}", crds_dir.display()))?
        {
            for crd in yaml_documents(&entry?.path())? {
                apply_object(client, &crd).await?;
                names.push(
                    crd["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in names {
            wait_for(
                &format!("CRD {name} to be established"),
                TIMEOUT,
                || async {
                    let crd = crds.get(&name).await?;
                    let established =
                        crd.status
                            .and_then(|status| status.conditions)
                            .is_some_and(|conditions| {
                                conditions.iter().any(|condition| {
                                    condition.type_ == "Established" && condition.status == "True"
                                })
                            });
                    Ok(established.then_some(()))
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The ServiceAccount, ClusterRole and binding of the upstream installer, and a kubeconfig
    /// of that account once the authorizer lets it write IPPools.
    async fn install_rbac(&mut self, client: &Client, scratch: &Scratch) -> anyhow::Result<()> {
        let install = self.dir.join("daemonset-install.yaml");
        let mut applied = 0;
        for object in yaml_documents(&install)? {
            let kind = object["kind"].as_str().unwrap_or_default();
            if matches!(
                kind,
                "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding"
            ) {
                apply_object(client, &object).await?;
                applied += 1;
            }
        }
        anyhow::ensure!(
            applied == 3,
            "{} has {applied} of the 3 RBAC objects expected",
            install.display()
        );
        let account = Account {
            namespace: NAMESPACE.into(),
            name: ACCOUNT.into(),
        };
        for (verb, plural) in [
            ("patch", "ippools"),
            ("create", "overlappingrangeipreservations"),
        ] {
            wait_until_allowed(
                client,
                &account,
                json!({"resourceAttributes": {"group": GROUP, "resource": plural, "verb": verb, "namespace": NAMESPACE}}),
                &format!("whereabouts to be allowed to {verb} {plural}"),
            )
            .await?;
        }
        let kubeconfig = service_account_kubeconfig(
            client,
            NAMESPACE,
            ACCOUNT,
            &scratch.dir.join("whereabouts"),
        )
        .await?;
        // The installer names its own namespace in the context (the plugin keeps its objects
        // there); the admin kubeconfig this one is made from names `default`.
        let mut config: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&kubeconfig)?)?;
        for context in config["contexts"]
            .as_sequence_mut()
            .context("kubeconfig without contexts")?
        {
            context["context"]["namespace"] = NAMESPACE.into();
        }
        std::fs::write(&kubeconfig, serde_yaml::to_string(&config)?)?;
        self.kubeconfig = kubeconfig;
        Ok(())
    }

    /// Objects of one whereabouts kind in its namespace.
    async fn list(
        &self,
        client: &Client,
        kind: &str,
        plural: &str,
    ) -> anyhow::Result<Vec<DynamicObject>> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), NAMESPACE, &resource(kind, plural));
        Ok(api.list(&ListParams::default()).await?.items)
    }
}

/// Whether a `podRef` (`namespace/name`) is one of the benchmark's pods.
fn in_namespace(pod_ref: &Value, namespace: &str) -> bool {
    pod_ref
        .as_str()
        .and_then(|pod_ref| pod_ref.split_once('/'))
        .is_some_and(|(pod_namespace, _)| pod_namespace == namespace)
}

fn write_flat_file(
    path: &Path,
    kubeconfig: &Path,
    log: &Path,
    log_level: &str,
) -> anyhow::Result<()> {
    let flat = json!({
        "datastore": "kubernetes",
        "kubernetes": {"kubeconfig": kubeconfig},
        "log_file": log,
        "log_level": log_level,
    });
    std::fs::write(path, serde_json::to_string_pretty(&flat)?)?;
    Ok(())
}

impl BenchPlugin for Whereabouts {
    fn label(&self) -> String {
        format!("Whereabouts {}", self.version)
    }

    fn binary(&self) -> PathBuf {
        self.dir.join("whereabouts")
    }

    async fn install(&mut self, client: &Client, scratch: &Scratch) -> anyhow::Result<()> {
        self.install_crds(client).await?;
        self.install_rbac(client, scratch).await
    }

    async fn add_node(&mut self, client: &Client, scratch: &Scratch) -> anyhow::Result<String> {
        let name = unique_name("node");
        create_node(client, &name, &[]).await?;
        let flat = scratch.dir.join(format!("{name}-whereabouts.conf"));
        let log = scratch.dir.join(format!("{name}.log"));
        write_flat_file(&flat, &self.kubeconfig, &log, &self.log_level)?;
        self.nodes.push((name.clone(), flat, log));
        Ok(name)
    }

    fn config(&self, index: usize) -> Value {
        let (_, flat, log) = &self.nodes[index];
        let range = |range: &super::Range| json!({"range": range.subnet, "range_start": range.first, "range_end": range.last});
        json!({
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "macvlan",
            "ipam": {
                "type": "whereabouts",
                "ipRanges": [range(&V4), range(&V6)],
                "kubernetes": {"kubeconfig": self.kubeconfig},
                "configuration_path": flat,
                "log_file": log,
                "log_level": self.log_level,
            },
        })
    }

    async fn recorded(
        &self,
        client: &Client,
        namespace: &str,
    ) -> anyhow::Result<Vec<(&'static str, usize)>> {
        let allocations = self
            .list(client, "IPPool", "ippools")
            .await?
            .iter()
            .filter_map(|pool| pool.data["spec"]["allocations"].as_object())
            .flat_map(|allocations| allocations.values())
            .filter(|allocation| in_namespace(&allocation["podref"], namespace))
            .count();
        let reservations = self
            .list(
                client,
                "OverlappingRangeIPReservation",
                "overlappingrangeipreservations",
            )
            .await?
            .iter()
            .filter(|reservation| in_namespace(&reservation.data["spec"]["podref"], namespace))
            .count();
        Ok(vec![
            ("IPPool allocations", allocations),
            ("OverlappingRangeIPReservations", reservations),
        ])
    }

    async fn after_add(&self, client: &Client, _pods: &[SimPod]) -> anyhow::Result<Vec<String>> {
        let pools = self.list(client, "IPPool", "ippools").await?;
        let names: Vec<String> = pools
            .iter()
            .filter_map(|pool| pool.metadata.name.clone())
            .collect();
        Ok(vec![format!(
            "IPPools {} (created by the plugin on first use); its controller (ip-reconciler) is not run: only the CNI calls are measured",
            names.join(", ")
        )])
    }

    fn after_del(&self) -> Vec<String> {
        let errors: usize = self
            .nodes
            .iter()
            .map(|(_, _, log)| {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains("[error]"))
                    .count()
            })
            .sum();
        vec![format!("plugin log: {errors} error lines over all calls")]
    }

    async fn uninstall(&self, client: &Client) -> anyhow::Result<()> {
        for (kind, plural) in [
            ("IPPool", "ippools"),
            (
                "OverlappingRangeIPReservation",
                "overlappingrangeipreservations",
            ),
        ] {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), NAMESPACE, &resource(kind, plural));
            let _ = api
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await;
        }
        for (name, _, _) in &self.nodes {
            delete_node(client, name).await;
        }
        Ok(())
    }
}
