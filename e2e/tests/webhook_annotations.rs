//! Admission of the `ipam.spidernet.io/*` annotations of pods, workloads and namespaces through
//! the real API server; the failure policies of the installed configurations (pools fail closed,
//! pods open) and a webhook outage.
//!
//! Every golden case asserts the HTTP status and the denial text the client sees. Addresses are
//! taken from 198.18.0.0/15 (one /24 per test) so tests can run in parallel; the harness is
//! `webhook_support`.

mod webhook_support;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use spiderpool_api::SpiderIPPool;
use spiderpool_e2e::{WEBHOOK_CONFIGURATION, unique_name, wait_for};
use webhook_support::*;

fn pod_object(namespace: &str, name: &str, annotations: Value) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]},
    }))?)
}

#[tokio::test]
async fn ipam_annotations_of_pods_workloads_and_namespaces_are_checked() -> anyhow::Result<()> {
    let client = setup().await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let pool_v4 = unique_name("anno-v4");
    create(
        &pools,
        &pool(
            &pool_v4,
            json!({"subnet": "198.18.50.0/24", "ips": ["198.18.50.10"]}),
        )?,
    )
    .await?;
    let ns = namespace(&client, "wh-anno", &[]).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Pods without ipam annotations are never sent; valid ones pass.
    create(&pods, &pod_object(&ns, "plain", json!({"other": "x"}))?).await?;
    create(
        &pods,
        &pod_object(
            &ns,
            "good",
            json!({"ipam.spidernet.io/ippool": format!("{{\"ipv4\":[\"{pool_v4}\"]}}")}),
        )?,
    )
    .await?;

    let message = denied(
        create(
            &pods,
            &pod_object(
                &ns,
                "typo",
                json!({"ipam.spidernet.io/ippool": "{\"ipv4\": \"not-a-list\"}"}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(message.starts_with(&format!(
        "{}Pod \"typo\" is invalid: metadata.annotations[ipam.spidernet.io/ippool]: Invalid value: ",
        webhook_prefix("pods.ipam-annotations.spiderpool.spidernet.io")
    )), "{message}");
    assert!(
        message
            .contains("wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippool'")
            && message.contains("expected JSON like"),
        "{message}"
    );

    let message = denied(
        create(
            &pods,
            &pod_object(
                &ns,
                "missing",
                json!({"ipam.spidernet.io/ippool": "{\"ipv4\":[\"no-such-pool\"]}"}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(message.ends_with("SpiderIPPool \"no-such-pool\" does not exist; create it first or fix the name (kubectl get spiderippools)"), "{message}");
    let message = denied(
        create(
            &pods,
            &pod_object(
                &ns,
                "family",
                json!({"ipam.spidernet.io/ippool": format!("{{\"ipv6\":[\"{pool_v4}\"]}}")}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(
        message.contains("is an IPv4 SpiderIPPool but is listed under \"ipv6\""),
        "{message}"
    );
    denied(
        create(&pods, &pod_object(&ns, "routes", json!({"ipam.spidernet.io/routes": "[{\"dst\":\"10.0.0.0/16\",\"gw\":\"fd00::1\"}]"}))?).await,
        422,
        &["metadata.annotations[ipam.spidernet.io/routes]", "invalid route format 'dst: 10.0.0.0/16, gw: fd00::1'"],
    );
    denied(
        create(
            &pods,
            &pod_object(
                &ns,
                "number",
                json!({"ipam.spidernet.io/ippool-ip-number": "++2"}),
            )?,
        )
        .await,
        422,
        &["metadata.annotations[ipam.spidernet.io/ippool-ip-number]"],
    );

    // Workloads: the pod template is judged; an unrelated update is not judged again.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = |name: &str, annotations: Value| -> anyhow::Result<Deployment> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": annotations},
                    "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]},
                },
            },
        }))?)
    };
    let message = denied(
        create(
            &deployments,
            &deployment(
                "bad-subnet",
                json!({"ipam.spidernet.io/subnet": "{\"ipv4\":[\"no-such-subnet\"]}"}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(message.starts_with(&format!(
        "{}Deployment.apps \"bad-subnet\" is invalid: spec.template.metadata.annotations[ipam.spidernet.io/subnet]",
        webhook_prefix("workloads.ipam-annotations.spiderpool.spidernet.io")
    )), "{message}");
    assert!(message.ends_with("interface eth0: SpiderSubnet \"no-such-subnet\" does not exist; create it first or fix the name (kubectl get spidersubnets)"), "{message}");
    create(
        &deployments,
        &deployment(
            "ok",
            json!({"ipam.spidernet.io/ippool": format!("{{\"ipv4\":[\"{pool_v4}\"]}}")}),
        )?,
    )
    .await?;

    // Namespaces: default pools.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let bad_namespace: Namespace = serde_json::from_value(json!({"metadata": {
        "name": unique_name("wh-ns-bad"),
        "labels": {LABEL: "true", "spiderpool-e2e": "true"},
        "annotations": {"ipam.spidernet.io/default-ipv4-ippool": "[\"no-such-pool\"]"}
    }}))?;
    denied(
        create(&namespaces, &bad_namespace).await,
        422,
        &[
            "metadata.annotations[ipam.spidernet.io/default-ipv4-ippool]",
            "SpiderIPPool \"no-such-pool\" does not exist",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn a_webhook_outage_leaves_pods_working_while_pools_fail_closed() -> anyhow::Result<()> {
    let client = setup().await?;
    // Configurations pointing at a port nobody listens on, for objects labelled for this test only.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let name = unique_name("spiderpool-e2e-outage");
    let outage = "spiderpool-e2e-webhook-outage";
    let ca = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(WEBHOOK_CONFIGURATION)
        .await?
        .webhooks
        .and_then(|webhooks| webhooks.into_iter().next())
        .and_then(|webhook| webhook.client_config.ca_bundle)
        .expect("caBundle of the suite's configuration");
    let ca = serde_json::to_value(&ca)?;
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [
            {"name": "pods.outage.spiderpool.spidernet.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "failurePolicy": "Ignore", "timeoutSeconds": 2,
             "clientConfig": {"url": format!("https://127.0.0.1:{dead_port}/validate-ipam-annotations-v1-pod"), "caBundle": ca},
             "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}],
             "namespaceSelector": {"matchLabels": {outage: "true"}}},
            {"name": "spiderippool.outage.spiderpool.spidernet.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
             "failurePolicy": "Fail", "timeoutSeconds": 2,
             "clientConfig": {"url": format!("https://127.0.0.1:{dead_port}/validate-spiderpool-spidernet-io-v2beta1-spiderippool"), "caBundle": ca},
             "rules": [{"apiGroups": [GROUP], "apiVersions": ["v2beta1"], "resources": ["spiderippools"], "operations": ["CREATE"]}],
             "objectSelector": {"matchLabels": {outage: "true"}}}
        ]
    }))?;
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    configurations
        .create(&PostParams::default(), &validating)
        .await?;
    let ns = namespace(&client, "wh-outage", &[(outage, "true")]).await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let mut object = labelled(
        "SpiderIPPool",
        &unique_name("outage"),
        json!({"subnet": "198.18.60.0/24"}),
    );
    object["metadata"]["labels"][outage] = json!("true");
    let object: SpiderIPPool = serde_json::from_value(object)?;
    let failure = wait_for("the outage configuration in effect", TIMEOUT, || async {
        match pools
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &object,
            )
            .await
        {
            Err(kube::Error::Api(status)) if status.message.contains("failed calling webhook") => {
                Ok(Some(*status))
            }
            _ => Ok(None),
        }
    })
    .await?;
    assert_eq!(failure.code, 500);
    assert!(
        failure
            .message
            .contains("spiderippool.outage.spiderpool.spidernet.io"),
        "{}",
        failure.message
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    create(
        &pods,
        &pod_object(
            &ns,
            "still-works",
            json!({"ipam.spidernet.io/ippool": "{\"ipv4\":[\"whatever\"]}"}),
        )?,
    )
    .await?;
    configurations
        .delete(&name, &DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn installed_configurations_fail_closed_for_pools_and_open_for_pods() -> anyhow::Result<()> {
    let client = setup().await?;
    let name = WEBHOOK_CONFIGURATION;
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(name)
        .await?;
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(name)
        .await?;
    let policy = |name: &str| {
        validating
            .webhooks
            .iter()
            .flatten()
            .find(|webhook| webhook.name == name)
            .and_then(|webhook| webhook.failure_policy.clone())
    };
    assert_eq!(policy(POOL_WEBHOOK).as_deref(), Some("Fail"));
    assert_eq!(
        policy("pods.ipam-annotations.spiderpool.spidernet.io").as_deref(),
        Some("Ignore")
    );
    assert_eq!(mutating.webhooks.map(|webhooks| webhooks.len()), Some(5));
    Ok(())
}
