//! The SpiderCoordinator controller against the test control plane, running as installed (the
//! roles of `config/rbac/rbac.yaml`): it creates the `default` object, detects the pod CIDRs for
//! each `podCIDRType` from the real sources (kubeadm-config, a kube-controller-manager pod, Node
//! `spec.podCIDRs`, Calico and Cilium CRDs with sample objects installed here) and the service
//! CIDRs from the control plane's own ServiceCIDR, follows changes of those sources, publishes an
//! Event when the phase changes, and never lets a deletion hang.
//!
//! Every test changes the one `default` object, so they take turns ([`DEFAULT_OBJECT`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::{CoordinatorStatus, SpiderCoordinator};
use spiderpool_e2e::{apply_object, client, controller_manager, http_get, unique_name, wait_for};
use tokio::sync::Mutex;

static DEFAULT_OBJECT: Mutex<()> = Mutex::const_new(());

const SERVICE_CIDR: &str = "10.96.0.0/16"; // the test control plane's --service-cluster-ip-range
const TIMEOUT: Duration = Duration::from_secs(60);
/// A watch of an API installed after the controller started is retried with backoff (at most
/// 10 s between attempts).
const LATE_API_TIMEOUT: Duration = Duration::from_secs(90);

async fn setup() -> anyhow::Result<(Client, Api<SpiderCoordinator>)> {
    let client = client().await?;
    controller_manager(&[]).await?;
    let coordinators: Api<SpiderCoordinator> = Api::all(client.clone());
    wait_for("the default SpiderCoordinator", TIMEOUT, || {
        let coordinators = coordinators.clone();
        async move { Ok(coordinators.get_opt("default").await?.map(|_| ())) }
    })
    .await?;
    Ok((client, coordinators))
}

async fn set_pod_cidr_type(
    coordinators: &Api<SpiderCoordinator>,
    pod_cidr_type: &str,
) -> anyhow::Result<()> {
    coordinators
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podCIDRType": pod_cidr_type}})),
        )
        .await?;
    Ok(())
}

/// Waits until the status satisfies `check`, returning it.
async fn wait_status(
    coordinators: &Api<SpiderCoordinator>,
    what: &str,
    timeout: Duration,
    check: impl Fn(&CoordinatorStatus) -> bool,
) -> anyhow::Result<CoordinatorStatus> {
    let check = &check;
    wait_for(what, timeout, || async move {
        let status = coordinators.get("default").await?.status;
        match status {
            Some(status) if check(&status) => Ok(Some(status)),
            other => anyhow::bail!("status is {other:?}"),
        }
    })
    .await
}

fn synced_with(status: &CoordinatorStatus, pod: &[&str], reason_part: &str) -> bool {
    status.phase == "Synced"
        && status.overlay_pod_cidr.as_deref().unwrap_or_default() == pod
        && status.service_cidr.as_deref().unwrap_or_default() == [SERVICE_CIDR]
        && status
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains(reason_part))
}

fn not_ready_with(status: &CoordinatorStatus, reason_part: &str) -> bool {
    status.phase == "NotReady"
        && status
            .reason
            .as_deref()
            .is_some_and(|reason| reason.contains(reason_part))
        && status
            .overlay_pod_cidr
            .as_deref()
            .unwrap_or_default()
            .is_empty()
}

async fn delete_config_map(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    if api.get_opt(name).await?.is_some() {
        api.delete(name, &DeleteParams::default()).await?;
    }
    Ok(())
}

async fn delete_crd(client: &Client, name: &str) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        api.delete(name, &DeleteParams::default()).await?;
        wait_for("the CRD to be gone", TIMEOUT, || {
            let api = api.clone();
            async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
        })
        .await?;
    }
    Ok(())
}

/// A minimal CRD for a third-party kind (only what the controller reads matters).
async fn install_crd(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> anyhow::Result<()> {
    apply_object(
        client,
        &json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group, "scope": "Cluster",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                          "listKind": format!("{kind}List")},
                "versions": [{"name": version, "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}],
            },
        }),
    )
    .await?;
    let name = format!("{plural}.{group}");
    let api_version = format!("{group}/{version}");
    // Served once discovery lists it: applying a sample object before that fails.
    wait_for(&format!("{name} to be served"), TIMEOUT, || {
        let client = client.clone();
        let api_version = api_version.clone();
        async move {
            let resources = client.list_api_group_resources(&api_version).await;
            Ok(resources
                .ok()
                .filter(|list| list.resources.iter().any(|r| r.name == plural))
                .map(|_| ()))
        }
    })
    .await
}

async fn event_reasons(client: &Client) -> anyhow::Result<Vec<(String, String)>> {
    let events: Api<Event> = Api::all(client.clone());
    let list = events
        .list(
            &ListParams::default()
                .fields("regarding.name=default,regarding.kind=SpiderCoordinator"),
        )
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|event| {
            (
                event.reason.unwrap_or_default(),
                event.note.unwrap_or_default(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_type_reads_kubeadm_config_then_the_controller_manager_pod_then_nodes()
-> anyhow::Result<()> {
    let _turn = DEFAULT_OBJECT.lock().await;
    let (client, coordinators) = setup().await?;
    delete_config_map(&client, "kubeadm-config").await?;
    set_pod_cidr_type(&coordinators, "cluster").await?;
    // Nodes other suites left behind may carry pod CIDRs; without them the type has no source.
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes_have_cidrs = nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|node| {
            node.spec
                .as_ref()
                .is_some_and(|spec| spec.pod_cidr.is_some() || spec.pod_cidrs.is_some())
        });
    if !nodes_have_cidrs {
        let status = wait_status(&coordinators, "NotReady without sources", TIMEOUT, |s| {
            not_ready_with(s, "kubeadm-config does not exist")
        })
        .await?;
        assert!(
            status
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("spec.podCIDRs"),
            "{status:?}"
        );
    }

    // kubeadm-config, and a change of it.
    let kubeadm = |pod_subnet: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
               "data": {"ClusterConfiguration": format!(
                   "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: {pod_subnet}\n  serviceSubnet: 10.233.0.0/18\n")}})
    };
    apply_object(&client, &kubeadm("10.244.0.0/16")).await?;
    wait_status(
        &coordinators,
        "pod CIDR from kubeadm-config",
        TIMEOUT,
        |s| synced_with(s, &["10.244.0.0/16"], "kube-system/kubeadm-config"),
    )
    .await?;
    apply_object(&client, &kubeadm("10.245.0.0/16,fd00:245::/56")).await?;
    wait_status(&coordinators, "the edited kubeadm-config", TIMEOUT, |s| {
        synced_with(s, &["10.245.0.0/16", "fd00:245::/56"], "kubeadm-config")
    })
    .await?;
    if !nodes_have_cidrs {
        // kube's Recorder folds a repeated reason into one Event series (the first note stays),
        // so only the reasons are checked; the status reason carries the current text.
        wait_for("an Event for each phase change", TIMEOUT, || {
            let client = client.clone();
            async move {
                let reasons = event_reasons(&client).await?;
                let seen = |wanted: &str| reasons.iter().any(|(reason, _)| reason == wanted);
                if seen("NotReady") && seen("Synced") {
                    Ok(Some(()))
                } else {
                    anyhow::bail!("events: {reasons:?}")
                }
            }
        })
        .await?;
    }

    // The kube-controller-manager pod's flag.
    delete_config_map(&client, "kubeadm-config").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let pod_name = unique_name("kube-controller-manager");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "labels": {"component": "kube-controller-manager"}},
        "spec": {"automountServiceAccountToken": false, "containers": [{
            "name": "kube-controller-manager", "image": "registry.k8s.io/kube-controller-manager:v1.36.0",
            "command": ["kube-controller-manager", "--cluster-cidr=10.50.0.0/16",
                        "--service-cluster-ip-range=10.233.0.0/18"]}]},
    }))?;
    wait_for("the kube-controller-manager pod", TIMEOUT, || {
        let pods = pods.clone();
        let pod = pod.clone();
        async move { Ok(Some(pods.create(&PostParams::default(), &pod).await?)) }
    })
    .await?;
    wait_status(
        &coordinators,
        "pod CIDR from --cluster-cidr",
        TIMEOUT,
        |s| synced_with(s, &["10.50.0.0/16"], "--cluster-cidr"),
    )
    .await?;
    pods.delete(&pod_name, &DeleteParams::default().grace_period(0))
        .await?;

    // Nodes' spec.podCIDRs.
    let node_name = unique_name("coordinator-node");
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name},
        "spec": {"podCIDR": "10.60.1.0/24", "podCIDRs": ["10.60.1.0/24"]},
    }))?;
    nodes.create(&PostParams::default(), &node).await?;
    let status = wait_status(&coordinators, "pod CIDR from the Nodes", TIMEOUT, |s| {
        s.phase == "Synced"
            && s.overlay_pod_cidr
                .as_deref()
                .unwrap_or_default()
                .contains(&"10.60.1.0/24".to_owned())
    })
    .await?;
    assert!(
        status
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("Nodes"),
        "{status:?}"
    );
    nodes.delete(&node_name, &DeleteParams::default()).await?;
    if !nodes_have_cidrs {
        wait_status(
            &coordinators,
            "NotReady once the Node is gone",
            TIMEOUT,
            |s| not_ready_with(s, "podCIDRType cluster"),
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calico_type_reads_the_enabled_ip_pools_and_auto_finds_them() -> anyhow::Result<()> {
    let _turn = DEFAULT_OBJECT.lock().await;
    let (client, coordinators) = setup().await?;
    delete_config_map(&client, "cilium-config").await?;
    delete_crd(&client, "ippools.crd.projectcalico.org").await?;
    set_pod_cidr_type(&coordinators, "calico").await?;
    wait_status(&coordinators, "NotReady without Calico", TIMEOUT, |s| {
        not_ready_with(
            s,
            "Calico IPPools (crd.projectcalico.org/v1) are not served",
        )
    })
    .await?;

    install_crd(&client, "crd.projectcalico.org", "v1", "IPPool", "ippools").await?;
    for (name, cidr, disabled) in [
        ("default-ipv4-ippool", "192.168.0.0/16", false),
        ("retired", "172.30.0.0/16", true),
    ] {
        apply_object(
            &client,
            &json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                    "metadata": {"name": name},
                    "spec": {"cidr": cidr, "disabled": disabled, "ipipMode": "Always"}}),
        )
        .await?;
    }
    wait_status(&coordinators, "the Calico IPPool", LATE_API_TIMEOUT, |s| {
        synced_with(s, &["192.168.0.0/16"], "Calico IPPools")
    })
    .await?;

    // Nothing but the IPPool watch tells the controller about a new pool.
    apply_object(
        &client,
        &json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                "metadata": {"name": "extra"}, "spec": {"cidr": "192.169.0.0/16"}}),
    )
    .await?;
    wait_status(
        &coordinators,
        "the added Calico IPPool",
        LATE_API_TIMEOUT,
        |s| synced_with(s, &["192.168.0.0/16", "192.169.0.0/16"], "Calico IPPools"),
    )
    .await?;
    apply_object(
        &client,
        &json!({"apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
                "metadata": {"name": "extra"}, "spec": {"cidr": "192.169.0.0/16", "disabled": true}}),
    )
    .await?;

    set_pod_cidr_type(&coordinators, "auto").await?;
    wait_status(&coordinators, "auto resolving to calico", TIMEOUT, |s| {
        synced_with(s, &["192.168.0.0/16"], "auto resolved to calico")
    })
    .await?;
    delete_crd(&client, "ippools.crd.projectcalico.org").await?;
    set_pod_cidr_type(&coordinators, "none").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cilium_type_reads_its_config_map_and_pod_ip_pools() -> anyhow::Result<()> {
    let _turn = DEFAULT_OBJECT.lock().await;
    let (client, coordinators) = setup().await?;
    delete_crd(&client, "ciliumpodippools.cilium.io").await?;
    let cilium_config = |data: Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cilium-config", "namespace": "kube-system"}, "data": data})
    };
    apply_object(
        &client,
        &cilium_config(json!({"ipam": "cluster-pool",
            "cluster-pool-ipv4-cidr": "10.0.0.0/8", "cluster-pool-ipv6-cidr": "fd00::/104"})),
    )
    .await?;
    set_pod_cidr_type(&coordinators, "auto").await?;
    wait_status(&coordinators, "auto resolving to cilium", TIMEOUT, |s| {
        synced_with(s, &["10.0.0.0/8", "fd00::/104"], "auto resolved to cilium")
    })
    .await?;

    set_pod_cidr_type(&coordinators, "cilium").await?;
    apply_object(&client, &cilium_config(json!({"ipam": "multi-pool"}))).await?;
    wait_status(
        &coordinators,
        "NotReady without CiliumPodIPPools",
        TIMEOUT,
        |s| not_ready_with(s, "CiliumPodIPPools (cilium.io/v2alpha1) are not served"),
    )
    .await?;
    install_crd(
        &client,
        "cilium.io",
        "v2alpha1",
        "CiliumPodIPPool",
        "ciliumpodippools",
    )
    .await?;
    apply_object(
        &client,
        &json!({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumPodIPPool",
                "metadata": {"name": "default"},
                "spec": {"ipv4": {"cidrs": ["10.10.0.0/16"], "maskSize": 24}}}),
    )
    .await?;
    wait_status(
        &coordinators,
        "the CiliumPodIPPool",
        LATE_API_TIMEOUT,
        |s| synced_with(s, &["10.10.0.0/16"], "CiliumPodIPPools"),
    )
    .await?;

    // Nothing but the CiliumPodIPPool watch tells the controller about a new pool.
    apply_object(
        &client,
        &json!({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumPodIPPool",
                "metadata": {"name": "v6"}, "spec": {"ipv6": {"cidrs": ["fd10::/112"], "maskSize": 120}}}),
    )
    .await?;
    wait_status(
        &coordinators,
        "the added CiliumPodIPPool",
        LATE_API_TIMEOUT,
        |s| synced_with(s, &["10.10.0.0/16", "fd10::/112"], "CiliumPodIPPools"),
    )
    .await?;

    delete_config_map(&client, "cilium-config").await?;
    wait_status(
        &coordinators,
        "NotReady once Cilium's ConfigMap is gone",
        TIMEOUT,
        |s| not_ready_with(s, "cilium-config does not exist"),
    )
    .await?;
    delete_crd(&client, "ciliumpodippools.cilium.io").await?;
    set_pod_cidr_type(&coordinators, "none").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_type_is_synced_with_the_service_cidr_only_and_reconciles_are_counted()
-> anyhow::Result<()> {
    let _turn = DEFAULT_OBJECT.lock().await;
    let (_client, coordinators) = setup().await?;
    set_pod_cidr_type(&coordinators, "none").await?;
    wait_status(&coordinators, "Synced with no pod CIDR", TIMEOUT, |s| {
        synced_with(s, &[], "service CIDRs from the ServiceCIDR objects")
    })
    .await?;
    let manager = controller_manager(&[]).await?;
    let (code, body) = http_get(manager.admin_addr, "/metrics").await?;
    assert_eq!(code, 200);
    assert!(
        body.lines().any(
            |line| line.starts_with("spiderpool_controller_reconcile_total{")
                && line.contains("controller=\"coordinator\"")
        ),
        "coordinator reconciles in /metrics"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_default_object_never_hangs_and_it_comes_back_with_defaults()
-> anyhow::Result<()> {
    let _turn = DEFAULT_OBJECT.lock().await;
    let (_client, coordinators) = setup().await?;
    let before = coordinators.get("default").await?;
    assert!(
        before.finalizers().is_empty(),
        "the controller adds no finalizer, so uninstalling the CRD never waits for it: {:?}",
        before.finalizers()
    );
    // A finalizer as upstream's webhook adds it: the controller removes it on deletion.
    coordinators
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["spiderpool.spidernet.io"]}})),
        )
        .await?;
    coordinators
        .delete("default", &DeleteParams::default())
        .await?;
    let old_uid = before.uid();
    let recreated = wait_for("the default object re-created", TIMEOUT, || {
        let coordinators = coordinators.clone();
        let old_uid = old_uid.clone();
        async move {
            Ok(coordinators
                .get_opt("default")
                .await?
                .filter(|object| object.uid() != old_uid))
        }
    })
    .await?;
    let spec = serde_json::to_value(&recreated.spec)?;
    assert_eq!(spec["podCIDRType"], "auto");
    assert_eq!(spec["mode"], "auto");
    assert_eq!(spec["hijackCIDR"], json!(["169.254.0.0/16"]));
    assert_eq!(spec["vethMTU"], 1500);
    wait_status(&coordinators, "the new object's status", TIMEOUT, |s| {
        !s.phase.is_empty()
    })
    .await?;
    Ok(())
}
