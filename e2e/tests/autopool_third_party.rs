//! Pods of a third-party controller (an OpenKruise-style `CloneSet`, served by a CRD the test
//! installs) annotated with `ipam.spidernet.io/subnet`: nobody but the `spiderpool` plugin creates
//! their auto pools (§4.5 `applyThirdControllerAutoPool`). Like every plugin suite, the plugin
//! runs with the identity and RBAC of `config/rbac/cni.yaml` (see `ipam_support`).
//!
//! Covered: the pool of each family is created on the first ADD with the absolute
//! `ippool-ip-number` and recorded in the subnet; later pods share it; a larger number scales it;
//! a burst of concurrent first ADDs creates exactly one pool per family and distinct addresses; a
//! pod without `ippool-ip-number` gets upstream's error and nothing is created; once the
//! workload and its pods are gone the controller-manager reclaims the pools, for every
//! pod-owning OpenKruise kind its ClusterRole lists.

mod autopool_support;
#[path = "ipam_support/mod.rs"]
mod ipam_support;

use std::collections::BTreeSet;

use anyhow::Context;
use autopool_support::*;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::SpiderIPPool;
use spiderpool_e2e::{TestNamespace, client, controller_manager, wait_for};

const GROUP: &str = "apps.kruise.io";

/// An OpenKruise workload kind, served by a schemaless CRD the test installs (the test only needs
/// objects that own pods).
struct KruiseKind {
    kind: &'static str,
    plural: &'static str,
    version: &'static str,
}

const CLONE_SET: KruiseKind = KruiseKind {
    kind: "CloneSet",
    plural: "clonesets",
    version: "v1alpha1",
};
const KIND: &str = CLONE_SET.kind;

/// The other pod-owning kinds the controller-manager's ClusterRole lists (Advanced StatefulSet,
/// BroadcastJob, Advanced DaemonSet).
const OTHER_KINDS: [KruiseKind; 3] = [
    KruiseKind {
        kind: "StatefulSet",
        plural: "statefulsets",
        version: "v1beta1",
    },
    KruiseKind {
        kind: "BroadcastJob",
        plural: "broadcastjobs",
        version: "v1alpha1",
    },
    KruiseKind {
        kind: "DaemonSet",
        plural: "daemonsets",
        version: "v1alpha1",
    },
];

impl KruiseKind {
    fn resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, self.version, self.kind),
            self.plural,
        )
    }

    async fn install(&self, client: &Client) -> anyhow::Result<()> {
        let name = format!("{}.{GROUP}", self.plural);
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {"plural": self.plural, "singular": self.kind.to_lowercase(), "kind": self.kind,
                          "listKind": format!("{}List", self.kind)},
                "versions": [{"name": self.version, "served": true, "storage": true, "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }}],
            },
        }))?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.patch(
            &name,
            &PatchParams::apply("spiderpool-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        wait_for(
            &format!("the {} CRD established", self.kind),
            TIMEOUT,
            || async {
                let crd = crds.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|status| status.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|condition| {
                        condition.type_ == "Established" && condition.status == "True"
                    });
                Ok(established.then_some(()))
            },
        )
        .await
    }

    /// A workload object; returns its UID.
    async fn create(&self, client: &Client, namespace: &str, name: &str) -> anyhow::Result<String> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &self.resource());
        let object =
            DynamicObject::new(name, &self.resource()).data(json!({"spec": {"replicas": 0}}));
        let created = api.create(&PostParams::default(), &object).await?;
        created
            .uid()
            .with_context(|| format!("{} without uid", self.kind))
    }

    async fn delete(&self, client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &self.resource());
        api.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }

    /// A pod of the workload, bound to `node`.
    async fn pod(
        &self,
        client: &Client,
        namespace: &str,
        node: &str,
        (owner, owner_uid): (&str, &str),
        name: &str,
        annotations: Value,
    ) -> anyhow::Result<Pod> {
        create_pod(
            client,
            namespace,
            name,
            node,
            json!({
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": format!("{GROUP}/{}", self.version), "kind": self.kind,
                    "name": owner, "uid": owner_uid, "controller": true}],
            }),
        )
        .await
    }
}

async fn create_clone_set(client: &Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    CLONE_SET.create(client, namespace, name).await
}

async fn delete_clone_set(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    CLONE_SET.delete(client, namespace, name).await
}

/// A pod of the CloneSet, bound to `node`.
async fn clone_set_pod(
    client: &Client,
    namespace: &str,
    node: &str,
    owner: (&str, &str),
    name: &str,
    annotations: Value,
) -> anyhow::Result<Pod> {
    CLONE_SET
        .pod(client, namespace, node, owner, name, annotations)
        .await
}

fn annotations(v4: &str, v6: &str, number: Option<&str>) -> Value {
    let mut annotations = json!({ANNO_SUBNET: subnet_annotation(Some(v4), Some(v6))});
    if let Some(number) = number {
        annotations[ANNO_IP_NUMBER] = json!(number);
    }
    annotations
}

fn pool_of(pools: &[SpiderIPPool], prefix: &str) -> anyhow::Result<SpiderIPPool> {
    pools
        .iter()
        .find(|pool| pool.name_any().starts_with(prefix))
        .cloned()
        .with_context(|| {
            format!(
                "no pool {prefix}* among {:?}",
                pools.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
            )
        })
}

#[tokio::test]
async fn third_party_controllers_get_their_auto_pools_from_the_plugin() -> anyhow::Result<()> {
    let client = client().await?;
    controller_manager(&[]).await?;
    CLONE_SET.install(&client).await?;
    let namespace = TestNamespace::create(&client, "third-party").await?;
    let ns = namespace.name.clone();
    let octet = unique_octet();
    let v4 = create_subnet(
        &client,
        "kruise-v4",
        json!({"subnet": format!("10.{octet}.0.0/24"), "ips": [format!("10.{octet}.0.10-10.{octet}.0.40")], "gateway": format!("10.{octet}.0.1")}),
    )
    .await?;
    let v6 = create_subnet(
        &client,
        "kruise-v6",
        json!({"subnet": format!("fd00:{octet}::/64"), "ips": [format!("fd00:{octet}::10-fd00:{octet}::40")]}),
    )
    .await?;
    let scratch = ipam_support::Scratch::new("third-party")?;
    let node = ipam_support::SimNode::create(&client, &scratch, &[], "").await?;
    let config = ipam_support::netconf("1.0.0", &node, json!({}));
    let add = |pod: Pod| {
        let config = config.clone();
        async move { ipam_support::cni("ADD", &ipam_support::PodRef::of(&pod), "eth0", &config).await }
    };

    // First pod: the plugin creates one pool per family of exactly two addresses.
    let web_uid = create_clone_set(&client, &ns, "web").await?;
    let web = ("web", web_uid.as_str());
    let first = clone_set_pod(
        &client,
        &ns,
        &node.name,
        web,
        "web-a",
        annotations(&v4, &v6, Some("2")),
    )
    .await?;
    let first_ips = add(first.clone()).await?.addresses()?;
    assert_eq!(first_ips.len(), 2, "{first_ips:?}");
    let pools = app_pools(&client, KIND, &ns, "web").await?;
    assert_eq!(pools.len(), 2);
    let fragment: String = web_uid
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .chars()
        .take(5)
        .collect();
    let pool_v4 = pool_of(&pools, &format!("auto4-web-eth0-{fragment}"))?;
    let pool_v6 = pool_of(&pools, &format!("auto6-web-eth0-{fragment}"))?;
    for pool in [&pool_v4, &pool_v6] {
        assert_eq!(pool_size(pool), 2, "{}", pool.name_any());
        let labels = pool.labels();
        assert_eq!(
            labels["ipam.spidernet.io/owner-application-gv"],
            "apps.kruise.io_v1alpha1"
        );
        assert_eq!(labels[LABEL_APP_UID], web_uid);
        assert_eq!(pool.annotations()[ANNO_IP_NUMBER], "2");
        assert_eq!(pool.owner_references()[0].kind, "SpiderSubnet");
    }
    let (records, _, _) = subnet_state(&client, &v4).await?;
    assert!(records.contains_key(&pool_v4.name_any()), "{records:?}");
    let application = get_subnet(&client, &v4)
        .await?
        .status
        .unwrap_or_default()
        .controlled_pools()?[&pool_v4.name_any()]
        .application
        .clone();
    assert_eq!(
        application.as_deref(),
        Some(format!("apps.kruise.io_v1alpha1_CloneSet_{ns}_web").as_str())
    );

    // A second pod shares the pools.
    let second = clone_set_pod(
        &client,
        &ns,
        &node.name,
        web,
        "web-b",
        annotations(&v4, &v6, Some("2")),
    )
    .await?;
    let second_ips = add(second.clone()).await?.addresses()?;
    assert_eq!(second_ips.len(), 2);
    assert!(
        second_ips.iter().all(|ip| !first_ips.contains(ip)),
        "{first_ips:?} {second_ips:?}"
    );
    assert_eq!(app_pools(&client, KIND, &ns, "web").await?.len(), 2);

    // A third pod asking for three addresses scales the pools up.
    let third = clone_set_pod(
        &client,
        &ns,
        &node.name,
        web,
        "web-c",
        annotations(&v4, &v6, Some("3")),
    )
    .await?;
    let third_ips = add(third.clone()).await?.addresses()?;
    assert_eq!(third_ips.len(), 2);
    for pool in app_pools(&client, KIND, &ns, "web").await? {
        assert_eq!(pool_size(&pool), 3, "{}", pool.name_any());
        assert_eq!(pool.annotations()[ANNO_IP_NUMBER], "3");
        assert_eq!(pool_records(&client, &pool.name_any()).await?.len(), 3);
    }

    // A burst of first ADDs of another CloneSet: one pool per family, distinct addresses.
    let burst_uid = create_clone_set(&client, &ns, "burst").await?;
    let mut pods = Vec::new();
    for index in 0..6 {
        pods.push(
            clone_set_pod(
                &client,
                &ns,
                &node.name,
                ("burst", &burst_uid),
                &format!("burst-{index}"),
                annotations(&v4, &v6, Some("6")),
            )
            .await?,
        );
    }
    let outputs = futures::future::join_all(pods.iter().cloned().map(add)).await;
    let mut seen = BTreeSet::new();
    for output in outputs {
        for ip in output?.addresses()? {
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        }
    }
    assert_eq!(seen.len(), 12);
    let burst_pools = app_pools(&client, KIND, &ns, "burst").await?;
    assert_eq!(
        burst_pools.len(),
        2,
        "{:?}",
        burst_pools
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    );
    for subnet in [&v4, &v6] {
        check_subnet_consistent(&client, subnet).await?;
    }

    // Without an IP number: upstream's error, and no pool.
    let bare_uid = create_clone_set(&client, &ns, "bare").await?;
    let bare = clone_set_pod(
        &client,
        &ns,
        &node.name,
        ("bare", &bare_uid),
        "bare-a",
        annotations(&v4, &v6, None),
    )
    .await?;
    let (code, message) = add(bare.clone()).await?.error()?;
    assert!(
        message.contains(&format!(
            "CloneSet/{ns}/bare only supports fixed auto-created IPPool IP Number"
        )),
        "{code}: {message}"
    );
    assert!(app_pools(&client, KIND, &ns, "bare").await?.is_empty());

    // The workloads go, then their pods: the controller-manager reclaims the pools.
    for name in ["web", "burst", "bare"] {
        delete_clone_set(&client, &ns, name).await?;
    }
    let all: Vec<Pod> = [first, second, third, bare]
        .into_iter()
        .chain(pods)
        .collect();
    for pod in &all {
        // As kubelet: the pod is terminating when its sandbox goes.
        ipam_support::terminate_pod(&client, &ns, &pod.name_any()).await?;
        let output =
            ipam_support::cni("DEL", &ipam_support::PodRef::of(pod), "eth0", &config).await?;
        anyhow::ensure!(output.success, "DEL failed: {}", output.stdout);
        force_delete_pod(&client, &ns, &pod.name_any()).await?;
    }
    for subnet in [&v4, &v6] {
        wait_for(&format!("{subnet} empty"), TIMEOUT, || async {
            let (records, allocated, _) = subnet_state(&client, subnet).await?;
            Ok((records.is_empty() && allocated == 0).then_some(()))
        })
        .await?;
    }
    for app in ["web", "burst"] {
        assert!(
            app_pools(&client, KIND, &ns, app).await?.is_empty(),
            "pools of {app} left"
        );
    }
    namespace.delete().await?;
    node.delete(&client).await?;
    for subnet in [&v4, &v6] {
        delete_subnet(&client, subnet).await?;
    }
    Ok(())
}

#[tokio::test]
async fn pools_of_every_other_listed_openkruise_kind_are_reclaimed_with_their_workload()
-> anyhow::Result<()> {
    let client = client().await?;
    controller_manager(&[]).await?;
    let namespace = TestNamespace::create(&client, "kruise-kinds").await?;
    let ns = namespace.name.clone();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "kruise-kinds",
        json!({"subnet": format!("10.{octet}.0.0/24"), "ips": [format!("10.{octet}.0.10-10.{octet}.0.40")]}),
    )
    .await?;
    let scratch = ipam_support::Scratch::new("kruise-kinds")?;
    let node = ipam_support::SimNode::create(&client, &scratch, &[], "").await?;
    let config = ipam_support::netconf("1.0.0", &node, json!({}));
    let mut annotations = json!({ANNO_SUBNET: subnet_annotation(Some(&subnet), None)});
    annotations[ANNO_IP_NUMBER] = json!("1");
    for kind in &OTHER_KINDS {
        kind.install(&client).await?;
        let name = kind.kind.to_lowercase();
        let uid = kind.create(&client, &ns, &name).await?;
        let pod = kind
            .pod(
                &client,
                &ns,
                &node.name,
                (&name, &uid),
                &format!("{name}-0"),
                annotations.clone(),
            )
            .await?;
        let pod_ref = ipam_support::PodRef::of(&pod);
        let added = ipam_support::cni("ADD", &pod_ref, "eth0", &config).await?;
        assert_eq!(added.addresses()?.len(), 1, "{}", kind.kind);
        assert_eq!(app_pools(&client, kind.kind, &ns, &name).await?.len(), 1);

        // The workload goes, then its pod: the controller-manager finds the workload gone (a
        // read of its kind) and deletes the pool.
        kind.delete(&client, &ns, &name).await?;
        ipam_support::terminate_pod(&client, &ns, &pod.name_any()).await?;
        let deleted = ipam_support::cni("DEL", &pod_ref, "eth0", &config).await?;
        anyhow::ensure!(deleted.success, "DEL failed: {}", deleted.stdout);
        force_delete_pod(&client, &ns, &pod.name_any()).await?;
        wait_for(
            &format!("the {} pool reclaimed", kind.kind),
            TIMEOUT,
            || async {
                Ok(app_pools(&client, kind.kind, &ns, &name)
                    .await?
                    .is_empty()
                    .then_some(()))
            },
        )
        .await?;
    }
    wait_for(&format!("{subnet} empty"), TIMEOUT, || async {
        let (records, allocated, _) = subnet_state(&client, &subnet).await?;
        Ok((records.is_empty() && allocated == 0).then_some(()))
    })
    .await?;
    namespace.delete().await?;
    node.delete(&client).await?;
    delete_subnet(&client, &subnet).await?;
    Ok(())
}
