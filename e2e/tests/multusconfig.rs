//! SpiderMultusConfig → NetworkAttachmentDefinition through the real API server, with the
//! controller-manager running as a process: every cniType renders the golden upstream JSON,
//! edits are followed, a deleted NAD comes back, unowned NADs are adopted, a NAD owned by
//! another SMC is never overwritten, deleting the SMC garbage-collects the NAD, and a NAD in its
//! desired state is left alone (no rewrite, no reconcile loop).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::{NetworkAttachmentDefinition, SpiderMultusConfig};
use spiderpool_e2e::{
    TestNamespace, client, controller_manager, reconciles, wait_for, wait_reconciles,
};

const TIMEOUT: Duration = Duration::from_secs(20);
const COORDINATOR: &str =
    r#"{"txQueueLen":0,"tunePodRoutes":true,"mode":"auto","type":"coordinator"}"#;

async fn setup(prefix: &str) -> anyhow::Result<(Client, TestNamespace)> {
    let client = client().await?;
    controller_manager(&[]).await?;
    let namespace = TestNamespace::create(&client, prefix).await?;
    Ok((client, namespace))
}

async fn create_smc(
    client: &Client,
    namespace: &str,
    value: Value,
) -> anyhow::Result<SpiderMultusConfig> {
    let mut value = value;
    value["apiVersion"] = json!("spiderpool.spidernet.io/v2beta1");
    value["kind"] = json!("SpiderMultusConfig");
    let smc: SpiderMultusConfig = serde_json::from_value(value)?;
    let api: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), namespace);
    Ok(api.create(&PostParams::default(), &smc).await?)
}

/// Waits until the NAD exists and `accept` holds for it.
async fn wait_nad(
    client: &Client,
    namespace: &str,
    name: &str,
    accept: impl Fn(&NetworkAttachmentDefinition) -> bool,
) -> anyhow::Result<NetworkAttachmentDefinition> {
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("net-attach-def {namespace}/{name}"),
        TIMEOUT,
        || async { Ok(nads.get_opt(name).await?.filter(|nad| accept(nad))) },
    )
    .await
}

fn config(nad: &NetworkAttachmentDefinition) -> Option<&str> {
    nad.spec.config.as_deref()
}

/// Golden table: (SMC name, spec, expected spec.config, expected resourceName annotation).
fn golden_cases() -> Vec<(&'static str, Value, Option<String>, Option<&'static str>)> {
    vec![
        ("macvlan-ens192", json!({"cniType": "macvlan", "macvlan": {"master": ["ens192"]}}),
         Some(format!(r#"{{"cniVersion":"0.3.1","name":"macvlan-ens192","plugins":[{{"type":"macvlan","master":"ens192","mode":"bridge","mtu":0,"ipam":{{"type":"spiderpool"}}}},{COORDINATOR}]}}"#)), None),
        ("macvlan-vlan100", json!({"cniType": "macvlan", "macvlan": {"master": ["ens192"], "vlanID": 100}}),
         Some(format!(r#"{{"cniVersion":"0.3.1","name":"macvlan-vlan100","plugins":[{{"vlanID":100,"type":"ifacer","interfaces":["ens192"]}},{{"type":"macvlan","master":"ens192.100","mode":"bridge","mtu":0,"ipam":{{"type":"spiderpool"}}}},{COORDINATOR}]}}"#)), None),
        ("macvlan-bond", json!({"cniType": "macvlan", "enableCoordinator": false, "macvlan": {"master": ["eth0", "eth1"], "vlanID": 10, "bond": {"name": "ens1", "mode": 0}}}),
         Some(r#"{"cniVersion":"0.3.1","name":"macvlan-bond","plugins":[{"vlanID":10,"type":"ifacer","interfaces":["eth0","eth1"],"bond":{"name":"ens1","mode":0,"options":""}},{"type":"macvlan","master":"ens1.10","mode":"bridge","mtu":0,"ipam":{"type":"spiderpool"}}]}"#.into()), None),
        ("ipvlan-ens192", json!({"cniType": "ipvlan", "ipvlan": {"master": ["ens192"], "ippools": {"ipv4": ["v4-pool"], "ipv6": ["v6-pool"]}}}),
         Some(format!(r#"{{"cniVersion":"0.3.1","name":"ipvlan-ens192","plugins":[{{"type":"ipvlan","master":"ens192","mtu":0,"ipam":{{"type":"spiderpool","default_ipv4_ippool":["v4-pool"],"default_ipv6_ippool":["v6-pool"]}}}},{COORDINATOR}]}}"#)), None),
        ("vlan-ens192", json!({"cniType": "vlan", "vlan": {"master": ["ens192"], "vlanID": 100}}),
         Some(format!(r#"{{"cniVersion":"0.3.1","name":"vlan-ens192","plugins":[{{"type":"vlan","master":"ens192","vlanMode":"manual","vlanId":100,"mtu":0,"ipam":{{"type":"spiderpool"}}}},{COORDINATOR}]}}"#)), None),
        ("vlan-bond100", json!({"cniType": "vlan", "enableCoordinator": false, "vlan": {"master": ["ens192", "ens224"], "vlanID": 100, "mtu": 1480, "bond": {"name": "bond0", "mode": 1, "options": ""}}}),
         Some(r#"{"cniVersion":"0.3.1","name":"vlan-bond100","plugins":[{"type":"ifacer","interfaces":["ens192","ens224"],"bond":{"name":"bond0","mode":1,"options":""}},{"type":"vlan","master":"bond0","vlanMode":"manual","vlanId":100,"mtu":1480,"ipam":{"type":"spiderpool"}}]}"#.into()), None),
        ("vlan-auto", json!({"cniType": "vlan", "enableCoordinator": false, "vlan": {"master": ["eth0"], "vlanMode": "auto"}}),
         Some(r#"{"cniVersion":"0.3.1","name":"vlan-auto","plugins":[{"type":"vlan","master":"eth0","vlanMode":"auto","mtu":0,"ipam":{"type":"spiderpool"}}]}"#.into()), None),
        ("sriov-demo", json!({"cniType": "sriov", "sriov": {"resourceName": "spidernet.io/sriov_netdeivce", "vlanID": 100}}),
         Some(format!(r#"{{"cniVersion":"0.3.1","name":"sriov-demo","plugins":[{{"vlan":100,"min_tx_rate":0,"max_tx_rate":0,"type":"sriov","ipam":{{"type":"spiderpool"}}}},{COORDINATOR}]}}"#)), Some("spidernet.io/sriov_netdeivce")),
        ("sriov-rdma-mtu", json!({"cniType": "sriov", "sriov": {"resourceName": "spidernet.io/test", "rdmaIsolation": true, "mtu": 8000, "minTxRateMbps": 100, "maxTxRateMbps": 1000, "vlanID": 100}}),
         Some(format!(r#"{{"cniVersion":"0.3.1","name":"sriov-rdma-mtu","plugins":[{{"vlan":100,"min_tx_rate":100,"max_tx_rate":1000,"type":"sriov","ipam":{{"type":"spiderpool"}}}},{{"type":"rdma"}},{COORDINATOR},{{"type":"tuning","mtu":8000}}]}}"#)), Some("spidernet.io/test")),
        ("sriov-rail", json!({"cniType": "sriov", "enableCoordinator": false, "sriov": {"resourceName": "r", "ippools": {"ipv4": ["rdmarail1-*"], "matchMasterSubnet": true}}}),
         Some(r#"{"cniVersion":"0.3.1","name":"sriov-rail","plugins":[{"vlan":0,"min_tx_rate":0,"max_tx_rate":0,"type":"sriov","ipam":{"type":"spiderpool","default_ipv4_ippool":["rdmarail1-*"],"match_master_subnet":true}}]}"#.into()), Some("r")),
        ("ib", json!({"cniType": "ib-sriov", "enableCoordinator": false, "ibsriov": {"resourceName": "spidernet.io/mellanoxibsriov"}}),
         Some(r#"{"cniVersion":"0.3.1","name":"ib","plugins":[{"type":"ib-sriov","pkey":"","link_state":"enable","rdmaIsolation":true,"ibKubernetesEnabled":false,"ipam":{"type":"spiderpool"}}]}"#.into()), Some("spidernet.io/mellanoxibsriov")),
        ("ipoib", json!({"cniType": "ipoib", "enableCoordinator": false, "ipoib": {"master": "ibs5f0"}}),
         Some(r#"{"cniVersion":"0.3.1","name":"ipoib","plugins":[{"type":"ipoib","master":"ibs5f0","ipam":{"type":"spiderpool"}}]}"#.into()), None),
        ("ovs", json!({"cniType": "ovs", "enableCoordinator": false, "ovs": {"bridge": "br1", "vlan": 30, "trunk": [{"minID": 10, "maxID": 20}, {"id": 100}], "deviceID": "0000:01:00.1"}}),
         Some(r#"{"cniVersion":"0.3.1","name":"ovs","plugins":[{"vlan":30,"type":"ovs","bridge":"br1","deviceID":"0000:01:00.1","ipam":{"type":"spiderpool"},"trunk":[{"minID":10,"maxID":20},{"id":100}]}]}"#.into()), Some("ovs-cni.network.kubevirt.io/br1")),
        ("chain", json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}, "chainCNIJsonData": [r#"{"type":"tuning","sysctl":{"net.core.somaxconn":"4096"}}"#]}),
         Some(format!(r#"{{"cniVersion":"0.3.1","name":"chain","plugins":[{{"type":"macvlan","master":"eth0","mode":"bridge","mtu":0,"ipam":{{"type":"spiderpool"}}}},{{"sysctl":{{"net.core.somaxconn":"4096"}},"type":"tuning"}},{COORDINATOR}]}}"#)), None),
        ("no-ipam", json!({"cniType": "macvlan", "enableCoordinator": false, "disableIPAM": true, "macvlan": {"master": ["eth0"]}}),
         Some(r#"{"cniVersion":"0.3.1","name":"no-ipam","plugins":[{"type":"macvlan","master":"eth0","mode":"bridge","mtu":0}]}"#.into()), None),
        ("coordinator-fields", json!({"cniType": "macvlan", "macvlan": {"master": ["eth0"]}, "coordinator": {"mode": "disabled", "podCIDRType": "cluster", "policyRoutes": [{"dst": "10.10.0.0/16", "gw": "172.18.0.1"}]}}),
         Some(r#"{"cniVersion":"0.3.1","name":"coordinator-fields","plugins":[{"type":"macvlan","master":"eth0","mode":"bridge","mtu":0,"ipam":{"type":"spiderpool"}},{"txQueueLen":0,"tunePodRoutes":true,"mode":"disabled","type":"coordinator","podRPFilter":0,"policyRoutes":[{"dst":"10.10.0.0/16","gw":"172.18.0.1"}]}]}"#.into()), None),
        ("custom", json!({"cniType": "custom", "customCNI": r#"{"cniVersion":"0.3.1","name":"custom","plugins":[{"type":"bridge"}]}"#}),
         Some(r#"{"cniVersion":"0.3.1","name":"custom","plugins":[{"type":"bridge"}]}"#.into()), None),
        ("empty", json!({}), None, None),
    ]
}

#[tokio::test]
async fn every_cni_type_renders_the_golden_nad_through_the_api_server() -> anyhow::Result<()> {
    let (client, namespace) = setup("smc-golden").await?;
    let ns = namespace.name.clone();
    let cases = golden_cases();
    for (name, spec, _, _) in &cases {
        create_smc(
            &client,
            &ns,
            json!({"metadata": {"name": name}, "spec": spec}),
        )
        .await?;
    }
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &ns);
    for (name, _, expected_config, expected_resource) in cases {
        let smc = smcs.get(name).await?;
        let nad = wait_nad(&client, &ns, name, |_| true).await?;
        assert_eq!(
            config(&nad),
            expected_config.as_deref(),
            "spec.config of {name}"
        );
        assert_eq!(
            nad.annotations()
                .get("k8s.v1.cni.cncf.io/resourceName")
                .map(String::as_str),
            expected_resource,
            "resourceName annotation of {name}"
        );
        let owners = nad.owner_references();
        assert_eq!(owners.len(), 1, "{name}: {owners:?}");
        assert_eq!(owners[0].kind, "SpiderMultusConfig");
        assert_eq!(owners[0].name, name);
        assert_eq!(Some(&owners[0].uid), smc.metadata.uid.as_ref());
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
    }
    namespace.delete().await
}

#[tokio::test]
async fn edits_are_followed_and_a_deleted_nad_comes_back() -> anyhow::Result<()> {
    let (client, namespace) = setup("smc-edit").await?;
    let ns = namespace.name.clone();
    create_smc(&client, &ns, json!({"metadata": {"name": "macvlan-edit"}, "spec": {"cniType": "macvlan", "macvlan": {"master": ["ens192"]}}})).await?;
    wait_nad(&client, &ns, "macvlan-edit", |nad| {
        config(nad).is_some_and(|c| c.contains(r#""master":"ens192""#))
    })
    .await?;

    // A changed vlanID updates the NAD.
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &ns);
    smcs.patch(
        "macvlan-edit",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"macvlan": {"vlanID": 200}}})),
    )
    .await?;
    let nad = wait_nad(&client, &ns, "macvlan-edit", |nad| {
        config(nad).is_some_and(|c| c.contains("ens192.200"))
    })
    .await?;
    assert!(config(&nad).is_some_and(|c| c.starts_with(r#"{"cniVersion":"0.3.1","name":"macvlan-edit","plugins":[{"vlanID":200,"type":"ifacer","interfaces":["ens192"]}"#)), "{:?}", config(&nad));

    // An added bond with a second master updates the ifacer entry and the master.
    smcs.patch(
        "macvlan-edit",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"macvlan": {"master": ["ens192", "ens224"], "bond": {"name": "bond0", "mode": 1, "options": "miimon=100"}}}})),
    )
    .await?;
    let nad = wait_nad(&client, &ns, "macvlan-edit", |nad| {
        config(nad).is_some_and(|c| c.contains("bond0.200"))
    })
    .await?;
    assert!(config(&nad).is_some_and(|c| c.contains(r#"{"vlanID":200,"type":"ifacer","interfaces":["ens192","ens224"],"bond":{"name":"bond0","mode":1,"options":"miimon=100"}}"#)), "{:?}", config(&nad));

    // An annotation added to the SMC is copied; cni-version changes the envelope.
    smcs.patch(
        "macvlan-edit",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"team": "net", "multus.spidernet.io/cni-version": "1.0.0"}}})),
    )
    .await?;
    let nad = wait_nad(&client, &ns, "macvlan-edit", |nad| {
        config(nad).is_some_and(|c| c.starts_with(r#"{"cniVersion":"1.0.0""#))
    })
    .await?;
    assert_eq!(
        nad.annotations().get("team").map(String::as_str),
        Some("net")
    );

    // A deleted NAD is re-created (the controller watches the NADs it owns; how fast is a
    // benchmark's business, not this test's).
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    let old_uid = nad.metadata.uid.clone();
    let deleted_at = Instant::now();
    nads.delete("macvlan-edit", &DeleteParams::default())
        .await?;
    let recreated = wait_nad(&client, &ns, "macvlan-edit", |nad| {
        nad.metadata.uid != old_uid
    })
    .await?;
    eprintln!("deleted NAD re-created after {:?}", deleted_at.elapsed());
    assert!(config(&recreated).is_some_and(|c| c.contains("bond0.200")));

    namespace.delete().await
}

#[tokio::test]
async fn cr_name_renames_the_nad_and_the_config_name_annotation_renames_the_config()
-> anyhow::Result<()> {
    let (client, namespace) = setup("smc-name").await?;
    let ns = namespace.name.clone();
    create_smc(&client, &ns, json!({
        "metadata": {"name": "renamed", "annotations": {"multus.spidernet.io/cr-name": "custom-nad", "cni.spidernet.io/cniconfig-name": "spidernet-chainer"}},
        "spec": {"cniType": "ipvlan", "ipvlan": {"master": ["eth0"]}},
    })).await?;
    let nad = wait_nad(&client, &ns, "custom-nad", |_| true).await?;
    assert!(
        config(&nad).is_some_and(
            |c| c.starts_with(r#"{"cniVersion":"0.3.1","name":"spidernet-chainer","plugins":"#)
        ),
        "{:?}",
        config(&nad)
    );
    assert_eq!(
        nad.owner_references()
            .first()
            .map(|owner| owner.name.as_str()),
        Some("renamed")
    );
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    assert!(
        nads.get_opt("renamed").await?.is_none(),
        "no NAD under the SMC's own name"
    );
    namespace.delete().await
}

#[tokio::test]
async fn an_unowned_nad_is_adopted_and_overwritten() -> anyhow::Result<()> {
    // G56
    let (client, namespace) = setup("smc-adopt").await?;
    let ns = namespace.name.clone();
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    let existing: NetworkAttachmentDefinition = serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "already-multus-x"},
        "spec": {"config": r#"{"cniVersion":"0.3.1","type":"macvlan","master":"old"}"#},
    }))?;
    nads.create(&PostParams::default(), &existing).await?;
    create_smc(&client, &ns, json!({"metadata": {"name": "already-multus-x"}, "spec": {"cniType": "macvlan", "macvlan": {"master": ["ens192"]}}})).await?;
    let nad = wait_nad(&client, &ns, "already-multus-x", |nad| {
        !nad.owner_references().is_empty()
    })
    .await?;
    assert_eq!(nad.owner_references()[0].kind, "SpiderMultusConfig");
    assert!(
        config(&nad).is_some_and(|c| c.contains(r#""master":"ens192""#)),
        "{:?}",
        config(&nad)
    );
    namespace.delete().await
}

#[tokio::test]
async fn a_nad_managed_by_another_smc_is_never_overwritten() -> anyhow::Result<()> {
    // G55 (the webhook rejects this on create; here the controller alone must still be safe)
    let (client, namespace) = setup("smc-conflict").await?;
    let ns = namespace.name.clone();
    create_smc(
        &client,
        &ns,
        json!({
            "metadata": {"name": "smc-a", "annotations": {"multus.spidernet.io/cr-name": "shared"}},
            "spec": {"cniType": "macvlan", "macvlan": {"master": ["ens192"]}},
        }),
    )
    .await?;
    let owned = wait_nad(&client, &ns, "shared", |_| true).await?;
    create_smc(&client, &ns, json!({"metadata": {"name": "shared"}, "spec": {"cniType": "ipvlan", "ipvlan": {"master": ["ens224"]}}})).await?;

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let warning = wait_for("a conflict warning on SMC shared", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list.items.into_iter().find(|event| {
            event.involved_object.name.as_deref() == Some("shared")
                && event.type_.as_deref() == Some("Warning")
                && event.reason.as_deref() == Some("NetworkAttachmentDefinitionConflict")
        }))
    })
    .await?;
    let message = warning.message.unwrap_or_default();
    assert!(message.contains("SpiderMultusConfig smc-a"), "{message}");
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    let after = nads.get("shared").await?;
    assert_eq!(
        config(&after),
        config(&owned),
        "the NAD of smc-a was modified"
    );
    assert_eq!(after.owner_references()[0].name, "smc-a");
    namespace.delete().await
}

#[tokio::test]
async fn deleting_the_smc_garbage_collects_its_nad() -> anyhow::Result<()> {
    let (client, namespace) = setup("smc-gc").await?;
    let ns = namespace.name.clone();
    create_smc(&client, &ns, json!({"metadata": {"name": "short-lived"}, "spec": {"cniType": "macvlan", "macvlan": {"master": ["ens192"]}}})).await?;
    wait_nad(&client, &ns, "short-lived", |_| true).await?;
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &ns);
    smcs.delete("short-lived", &DeleteParams::foreground())
        .await?;
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "the NAD to be garbage-collected",
        Duration::from_secs(60),
        || async { Ok(nads.get_opt("short-lived").await?.is_none().then_some(())) },
    )
    .await?;
    namespace.delete().await
}

#[tokio::test]
async fn an_smc_that_cannot_render_gets_a_warning_event_and_no_nad() -> anyhow::Result<()> {
    // Without the webhook nothing stops an ipvlan SMC that lacks its ipvlan section.
    let (client, namespace) = setup("smc-invalid").await?;
    let ns = namespace.name.clone();
    create_smc(&client, &ns, json!({"metadata": {"name": "broken"}, "spec": {"cniType": "ipvlan", "macvlan": {"master": ["eth0"]}}})).await?;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let warning = wait_for("an InvalidSpec warning", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .find(|event| event.reason.as_deref() == Some("InvalidSpec")))
    })
    .await?;
    assert!(
        warning
            .message
            .unwrap_or_default()
            .contains("spec.ipvlan must be set when cniType is ipvlan")
    );
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    assert!(nads.get_opt("broken").await?.is_none());
    namespace.delete().await
}

/// A NAD already in its desired state is not written again: its resourceVersion stays put (a
/// rewrite per reconcile would trigger the next reconcile through the owned-NAD watch, a hot loop
/// per SMC). Checked with and without annotations, and after an edit of the SMC.
#[tokio::test]
async fn a_nad_in_its_desired_state_is_not_rewritten() -> anyhow::Result<()> {
    let (client, namespace) = setup("smc-steady").await?;
    let ns = namespace.name.clone();
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns);
    let plain = json!({"metadata": {"name": "plain"},
        "spec": {"cniType": "macvlan", "macvlan": {"master": ["ens192"], "vlanID": 100}}});
    let sriov = json!({"metadata": {"name": "sriov"},
        "spec": {"cniType": "sriov", "sriov": {"resourceName": "spidernet.io/sriov_netdevice"}}});
    for spec in [plain, sriov] {
        let name = spec["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        create_smc(&client, &ns, spec).await?;
        wait_nad(&client, &ns, &name, |_| true).await?;
    }
    // An edit: one more write, then quiet again.
    let smcs: Api<SpiderMultusConfig> = Api::namespaced(client.clone(), &ns);
    smcs.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"macvlan": {"vlanID": 200}}})),
    )
    .await?;
    wait_nad(&client, &ns, "plain", |nad| {
        config(nad).is_some_and(|config| config.contains(r#""vlanID":200"#))
    })
    .await?;
    let before: Vec<String> =
        futures::future::try_join_all(["plain", "sriov"].map(|name| nads.get(name)))
            .await?
            .iter()
            .map(|nad| nad.resource_version().unwrap_or_default())
            .collect();
    // Both SMCs reconciled again after that read (a label: the NAD copies annotations only, so
    // its desired state stays put); the reconcile counter is the sign they ran.
    let manager = controller_manager(&[]).await?;
    let since = reconciles(manager, "multusconfig").await?;
    for name in ["plain", "sriov"] {
        smcs.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"spiderpool-e2e/touched": "yes"}}})),
        )
        .await?;
    }
    wait_reconciles(manager, "multusconfig", since, 2.0).await?;
    for (name, version) in ["plain", "sriov"].into_iter().zip(before) {
        let now = nads.get(name).await?.resource_version().unwrap_or_default();
        assert_eq!(now, version, "net-attach-def {name} was rewritten");
    }
    namespace.delete().await
}
