//! The coordinator's cluster defaults come from the API server: the SpiderCoordinator object and
//! the pod's `ipam.spidernet.io/default-route-nic` annotation (which wins over the object's
//! `podDefaultRouteNIC`) and its status CIDRs, refused while it is not `Synced`. A missing object
//! means the built-in defaults, not a failed pod. The
//! reads are made as the plugin runs on a node: ServiceAccount `spiderpool-cni` with the roles of
//! `config/rbac/cni.yaml`.

use kube::api::{Api, PostParams};
use serde_json::json;
use spiderpool_api::SpiderCoordinator;
use spiderpool_cni::coordinator::config::FallbackSource;
use spiderpool_cni::coordinator::kube_fallback::KubeFallback;
use spiderpool_cni::protocol::K8sArgs;
use spiderpool_e2e::{TestNamespace, client, component_kubeconfig, unique_name};

fn fallback(kubeconfig: &std::path::Path, name: &str) -> KubeFallback {
    KubeFallback {
        kubeconfig: kubeconfig.to_path_buf(),
        coordinator_name: name.to_owned(),
        timeout: std::time::Duration::from_secs(10),
    }
}

fn pod_args(namespace: &str, name: &str) -> K8sArgs {
    K8sArgs {
        pod_namespace: Some(namespace.to_owned()),
        pod_name: Some(name.to_owned()),
        pod_uid: None,
        infra_container_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_fallback_reads_the_object_and_the_pod_annotation() -> anyhow::Result<()> {
    let client = client().await?;
    let kubeconfig = component_kubeconfig(&client, "spiderpool-cni").await?;
    let namespace = TestNamespace::create(&client, "coordinator-fallback").await?;
    let coordinator_name = unique_name("scc");
    let coordinators: Api<SpiderCoordinator> = Api::all(client.clone());
    let object: SpiderCoordinator = serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderCoordinator",
        "metadata": {"name": coordinator_name},
        "spec": {"podCIDRType": "none", "mode": "underlay", "podDefaultRouteNIC": "net1",
                 "hostRuleTable": 600, "hijackCIDR": ["10.233.0.0/18"], "vethMTU": 1400},
    }))?;
    coordinators.create(&PostParams::default(), &object).await?;
    // Only the `default` object has a controller; this one's status is written here, first as
    // the controller writes a cluster it cannot read.
    let set_status = |status: serde_json::Value| {
        let coordinators = coordinators.clone();
        let name = coordinator_name.clone();
        async move {
            coordinators
                .patch_status(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"status": status})),
                )
                .await
        }
    };
    set_status(json!({"phase": "NotReady", "reason": "no service CIDR found: test"})).await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), &namespace.name);
    for (name, annotations) in [
        ("plain", json!({})),
        (
            "annotated",
            json!({"ipam.spidernet.io/default-route-nic": "net2"}),
        ),
    ] {
        let pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }

    let source = fallback(&kubeconfig, &coordinator_name);
    let not_synced = {
        let source = source.clone();
        let ns = namespace.name.clone();
        tokio::task::spawn_blocking(move || source.load(&pod_args(&ns, "plain"))).await?
    };
    let error = not_synced.expect_err("a coordinator that is not Synced is refused");
    assert_eq!(
        error.code,
        spiderpool_cni::protocol::ErrorCode::TRY_AGAIN_LATER
    );
    assert!(
        error
            .msg
            .contains("is not Synced (phase NotReady): no service CIDR found: test"),
        "{}",
        error.msg
    );
    set_status(
        json!({"phase": "Synced", "reason": "test", "overlayPodCIDR": ["10.244.0.0/16"],
                      "serviceCIDR": ["10.96.0.0/12"]}),
    )
    .await?;
    let ns = namespace.name.clone();
    let (plain, annotated, missing) = tokio::task::spawn_blocking(move || {
        (
            source.load(&pod_args(&ns, "plain")),
            source.load(&pod_args(&ns, "annotated")),
            fallback(&kubeconfig, "no-such-coordinator").load(&pod_args(&ns, "plain")),
        )
    })
    .await?;
    let plain = plain.map_err(|error| anyhow::anyhow!("{error:?}"))?;
    assert_eq!(plain.mode, "underlay");
    assert_eq!(plain.pod_default_route_nic, "net1");
    assert_eq!(plain.host_rule_table, 600);
    assert_eq!(plain.hijack_cidr, vec!["10.233.0.0/18".to_owned()]);
    assert_eq!(plain.veth_mtu, 1400);
    assert!(plain.tune_pod_routes, "CRD default tunePodRoutes=true");
    assert_eq!(plain.overlay_pod_cidr, vec!["10.244.0.0/16".to_owned()]);
    assert_eq!(plain.service_cidr, vec!["10.96.0.0/12".to_owned()]);

    let annotated = annotated.map_err(|error| anyhow::anyhow!("{error:?}"))?;
    assert_eq!(
        annotated.pod_default_route_nic, "net2",
        "the pod annotation wins"
    );

    let missing = missing.map_err(|error| anyhow::anyhow!("{error:?}"))?;
    assert_eq!(missing.mode, "auto");
    assert_eq!(missing.host_rule_table, 500);
    assert_eq!(missing.veth_mtu, 1500);

    coordinators
        .delete(&coordinator_name, &Default::default())
        .await?;
    namespace.delete().await
}
