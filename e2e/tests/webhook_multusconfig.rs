//! SpiderMultusConfig admission through the real API server: defaulting, the rules of every CNI
//! type, and the ownership of the target NetworkAttachmentDefinition.
//!
//! Every golden case asserts the HTTP status and the denial text the client sees. Addresses are
//! taken from 198.18.0.0/15 (one /24 per test) so tests can run in parallel; the harness is
//! `webhook_support`.

mod webhook_support;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use spiderpool_api::{NetworkAttachmentDefinition, SpiderMultusConfig};
use spiderpool_e2e::wait_for;
use webhook_support::*;

fn smc(
    namespace: &str,
    name: &str,
    annotations: Value,
    spec: Value,
) -> anyhow::Result<SpiderMultusConfig> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderMultusConfig",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
    }))?)
}

#[tokio::test]
async fn multus_config_defaults_and_rules() -> anyhow::Result<()> {
    // G45, G50-G54, G57, G63, G67
    let client = setup().await?;
    let ns = namespace(&client, "wh-smc", &[]).await?;
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &ns);
    let none = json!({});

    let vlan = create(
        &smcs,
        &smc(
            &ns,
            "vlan",
            none.clone(),
            json!({"cniType": "vlan", "vlan": {"master": ["eth0"]}}),
        )?,
    )
    .await?;
    let config = vlan.spec.vlan.as_ref().expect("vlan section");
    assert_eq!(
        (config.vlan_mode, config.vlan_id),
        (Some(spiderpool_api::VlanMode::Manual), Some(0))
    );
    assert_eq!(
        vlan.spec.coordinator.as_ref().and_then(|c| c.mode),
        Some(spiderpool_api::CoordinatorMode::Auto)
    );

    // G47
    let message = denied(
        create(&smcs, &smc(&ns, "vlan-auto", none.clone(), json!({"cniType": "vlan", "vlan": {"master": ["eth0"], "vlanMode": "auto", "vlanID": 100}}))?).await,
        422,
        &[],
    );
    assert!(
        message.ends_with("vlanId must not be specified when vlanMode is auto"),
        "{message}"
    );
    // G49: injectable networks with pools pass; the annotation is copied to a label.
    let inject = json!({"cni.spidernet.io/network-resource-inject": "true"});
    for (name, spec) in [
        (
            "inject-macvlan",
            json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"], "ippools": {"ipv4": ["pool-a"]}}}),
        ),
        (
            "inject-ipvlan",
            json!({"cniType": "ipvlan", "ipvlan": {"master": ["eth0"], "ippools": {"ipv4": ["pool-a"]}}}),
        ),
        (
            "inject-sriov",
            json!({"cniType": "sriov", "sriov": {"resourceName": "vendor.io/resource", "ippools": {"ipv4": ["pool-a"]}}}),
        ),
    ] {
        let created = create(&smcs, &smc(&ns, name, inject.clone(), spec)?).await?;
        assert_eq!(
            created
                .labels()
                .get("cni.spidernet.io/network-resource-inject")
                .map(String::as_str),
            Some("true")
        );
    }
    denied(
        create(
            &smcs,
            &smc(
                &ns,
                "inject-rdma",
                json!({"cni.spidernet.io/rdma-resource-inject": "x"}),
                json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
            )?,
        )
        .await,
        422,
        &[&format!(
            "rdmaResourceName can not empty for spidermultusconfig {ns}/inject-rdma"
        )],
    );
    // G50: out of range (the CRD schema or the webhook refuses it).
    for id in [-1, 4095] {
        denied(
            create(
                &smcs,
                &smc(
                    &ns,
                    &format!("range{}", id + 1),
                    none.clone(),
                    json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"], "vlanID": id}}),
                )?,
            )
            .await,
            422,
            &["vlanID"],
        );
    }
    // G51
    let message = denied(
        create(
            &smcs,
            &smc(
                &ns,
                "wrong-section",
                none.clone(),
                json!({"cniType": "ipvlan", "macvlan": {"master": ["eth0"]}}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderMultusConfig.spiderpool.spidernet.io \"wrong-section\" is invalid: spec.ipvlanConfig: Required value: no spec.ipvlanConfig specified",
            webhook_prefix(SMC_WEBHOOK)
        )
    );
    // G52
    let message = denied(
        create(
            &smcs,
            &smc(
                &ns,
                "custom-bad",
                none.clone(),
                json!({"cniType": "custom", "customCNI": "{ \"invalid\" }"}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(
        message.ends_with(
            "spec.customCniTypeConfig: Forbidden: customCniConfig isn't a valid JSON encoding"
        ),
        "{message}"
    );
    let custom = r#"{"cniVersion":"0.3.1","name":"custom-good","type":"macvlan","master":"eth0"}"#;
    create(
        &smcs,
        &smc(
            &ns,
            "custom-good",
            none.clone(),
            json!({"cniType": "custom", "customCNI": custom}),
        )?,
    )
    .await?;
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    let nad = wait_for("custom NAD", TIMEOUT, || async {
        Ok(nads.get_opt("custom-good").await?)
    })
    .await?;
    assert_eq!(nad.spec.config.as_deref(), Some(custom));
    // G53
    let message = denied(
        create(
            &smcs,
            &smc(
                &ns,
                "version-bad",
                json!({"multus.spidernet.io/cni-version": "x.y.z"}),
                json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(
        message.ends_with("unsupported CNI version x.y.z"),
        "{message}"
    );
    create(
        &smcs,
        &smc(
            &ns,
            "version-ok",
            json!({"multus.spidernet.io/cni-version": "0.4.0"}),
            json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
        )?,
    )
    .await?;
    let nad = wait_for("versioned NAD", TIMEOUT, || async {
        Ok(nads.get_opt("version-ok").await?)
    })
    .await?;
    assert_eq!(
        nad.annotations()
            .get("multus.spidernet.io/cni-version")
            .map(String::as_str),
        Some("0.4.0")
    );
    // G54
    for (name, custom, expected) in [
        (
            "long-name",
            "a".repeat(254),
            "must be no more than 253 characters",
        ),
        (
            "stars",
            "custom-error-name************".to_string(),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
        ),
    ] {
        denied(
            create(
                &smcs,
                &smc(
                    &ns,
                    name,
                    json!({"multus.spidernet.io/cr-name": custom}),
                    json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}}),
                )?,
            )
            .await,
            422,
            &[
                "metadata.annotations: Invalid value: map[string]string{",
                "invalid custom net-attach-def resource name, err: [",
                expected,
            ],
        );
    }
    // G57
    create(&smcs, &smc(&ns, "empty", none.clone(), json!({}))?).await?;
    let nad = wait_for("empty NAD", TIMEOUT, || async {
        Ok(nads.get_opt("empty").await?)
    })
    .await?;
    assert!(nad.spec.config.as_deref().unwrap_or_default().is_empty());
    // G63
    let message = denied(
        create(&smcs, &smc(&ns, "rates", none.clone(), json!({"cniType": "sriov", "sriov": {"resourceName": "r", "minTxRateMbps": 100, "maxTxRateMbps": 10}}))?).await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderMultusConfig.spiderpool.spidernet.io \"rates\" is invalid: spec.sriovConfig: Invalid value: 100: minTxRateMbps must be less than maxTxRateMbps",
            webhook_prefix(SMC_WEBHOOK)
        )
    );
    // G67
    let macvlan = |coordinator: Value| json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}, "coordinator": coordinator});
    create(
        &smcs,
        &smc(
            &ns,
            "mac-ok",
            none.clone(),
            macvlan(json!({"podMACPrefix": "9e:10"})),
        )?,
    )
    .await?;
    create(
        &smcs,
        &smc(
            &ns,
            "rp-ok",
            none.clone(),
            macvlan(json!({"podRPFilter": -1})),
        )?,
    )
    .await?;
    let cases = [
        (
            "mac-bad",
            json!({"podMACPrefix": "01:10"}),
            "spec.podMACPrefix: Invalid value: \"01:10\": not a unicast MAC: the lowest bit of the first byte must be 0",
        ),
        (
            "rp-bad",
            json!({"podRPFilter": 4}),
            "spec.podRPFilter: Unsupported value: 4: supported values: \"0\", \"1\", \"2\"",
        ),
        (
            "txq-bad",
            json!({"txQueueLen": -1}),
            "spec.txQueueLen: Invalid value: -1: txQueueLen can't be less than 0",
        ),
        (
            "family-bad",
            json!({"policyRoutes": [{"dst": "10.10.0.0/16", "gw": "fd00::1"}]}),
            "spec.policyRoutes[0]: Invalid value: v2beta1.Route{Dst:\"10.10.0.0/16\", Gw:\"fd00::1\"}: dst and gw must use the same IP family",
        ),
    ];
    for (name, coordinator, detail) in cases {
        let message = denied(
            create(&smcs, &smc(&ns, name, none.clone(), macvlan(coordinator))?).await,
            422,
            &[],
        );
        assert_eq!(
            message,
            format!(
                "{}SpiderMultusConfig.spiderpool.spidernet.io \"{name}\" is invalid: {detail}",
                webhook_prefix(SMC_WEBHOOK)
            )
        );
    }
    // vethMTU 0: the CRD minimum refuses it before the webhook would.
    denied(
        create(
            &smcs,
            &smc(&ns, "mtu-bad", none, macvlan(json!({"vethMTU": 0})))?,
        )
        .await,
        422,
        &["vethMTU"],
    );
    Ok(())
}

#[tokio::test]
async fn multus_config_net_attach_def_ownership() -> anyhow::Result<()> {
    // G55, G56
    let client = setup().await?;
    let ns = namespace(&client, "wh-nad", &[]).await?;
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &ns);
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    let macvlan = json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}});
    create(
        &smcs,
        &smc(
            &ns,
            "a",
            json!({"multus.spidernet.io/cr-name": "x"}),
            macvlan.clone(),
        )?,
    )
    .await?;
    wait_for("NAD x owned by SMC a", TIMEOUT, || async {
        Ok(nads
            .get_opt("x")
            .await?
            .filter(|nad| nad.owner_references().iter().any(|owner| owner.name == "a")))
    })
    .await?;
    let message = denied(
        create(
            &smcs,
            &smc(
                &ns,
                "b",
                json!({"multus.spidernet.io/cr-name": "x"}),
                macvlan.clone(),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert!(
        message.ends_with(&format!(
            "the net-attach-def {ns}/x already exists and is managed by SpiderMultusConfig {ns}/a."
        )),
        "{message}"
    );
    denied(
        create(&smcs, &smc(&ns, "x", json!({}), macvlan.clone())?).await,
        422,
        &["is managed by SpiderMultusConfig"],
    );
    // G56: an unowned NAD is taken over.
    let unowned: NetworkAttachmentDefinition = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "already-multus-x", "namespace": ns}, "spec": {"config": "{}"}
    }))?;
    create(&nads, &unowned).await?;
    create(&smcs, &smc(&ns, "already-multus-x", json!({}), macvlan)?).await?;
    wait_for("NAD adopted", TIMEOUT, || async {
        Ok(nads.get_opt("already-multus-x").await?.filter(|nad| {
            nad.owner_references()
                .iter()
                .any(|owner| owner.kind == "SpiderMultusConfig" && owner.controller == Some(true))
                && nad.spec.config.as_deref() != Some("{}")
        }))
    })
    .await?;
    // Renaming the NAD afterwards is refused.
    let rename = json!({"metadata": {"annotations": {"multus.spidernet.io/cr-name": "y"}}});
    denied(
        smcs.patch("a", &PatchParams::default(), &Patch::Merge(&rename))
            .await,
        422,
        &[
            "metadata.annotations: Invalid value: \"x\": it's unsupported to change customized Multus net-attach-def resource name from 'x' to 'y'",
        ],
    );
    Ok(())
}
