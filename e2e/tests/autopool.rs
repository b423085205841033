//! SpiderSubnet auto pools through the real API server and kube-controller-manager, with the
//! controller-manager running as a process: one pool per workload, NIC and family, sized from
//! replicas and `ippool-ip-number`, following scale up and down without ever dropping an address
//! in use, reclaimed (or kept and reused by a successor) when the workload goes, a Warning Event
//! when the subnet runs out, and 30 Deployments churning on one subnet leave it exactly as found;
//! manual pools are recorded by their subnet as soon as they are created.

mod autopool_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use autopool_support::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use spiderpool_api::SpiderIPPool;
use spiderpool_e2e::{
    TestNamespace, client, controller_manager, reconciles, wait_for, wait_reconciles,
};

/// Waits until the auto-pool controller has finished `more` reconciliations after `since` (a
/// [`reconciles`] reading taken before the change): the sign it has looked at the change, before
/// a test asserts that the change did nothing.
async fn wait_autopool_reconciles(since: f64, more: f64) -> anyhow::Result<()> {
    wait_reconciles(controller_manager(&[]).await?, "application", since, more).await
}

async fn autopool_reconciles() -> anyhow::Result<f64> {
    reconciles(controller_manager(&[]).await?, "application").await
}

async fn setup(prefix: &str) -> anyhow::Result<(Client, TestNamespace)> {
    let client = client().await?;
    controller_manager(&[]).await?;
    let namespace = TestNamespace::create(&client, prefix).await?;
    Ok((client, namespace))
}

fn label<'a>(pool: &'a SpiderIPPool, key: &str) -> &'a str {
    pool.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(key))
        .map(String::as_str)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_deployment_gets_one_pool_per_interface_and_family() -> anyhow::Result<()> {
    let (client, namespace) = setup("autopool-nics").await?;
    let octet = unique_octet();
    let v4 = create_subnet(
        &client,
        "nics-v4",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.1.1-10.{octet}.1.100")],
               "gateway": format!("10.{octet}.0.1"), "routes": [{"dst": "192.168.0.0/16", "gw": format!("10.{octet}.0.1")}]}),
    )
    .await?;
    let v6 = create_subnet(
        &client,
        "nics-v6",
        json!({"subnet": format!("fd00:{octet}::/64"), "ips": [format!("fd00:{octet}::10-fd00:{octet}::ff")]}),
    )
    .await?;
    let second = octet.wrapping_add(1);
    let net1 = create_subnet(
        &client,
        "nics-net1",
        json!({"subnet": format!("10.{second}.0.0/24"), "ips": [format!("10.{second}.0.10-10.{second}.0.50")]}),
    )
    .await?;
    let subnets = json!([
        {"interface": "eth0", "ipv4": [v4], "ipv6": [v6]},
        {"interface": "net1", "ipv4": [net1]},
    ])
    .to_string();
    let created = create_deployment(
        &client,
        &namespace.name,
        &deployment("web", 2, &[(ANNO_SUBNETS, subnets)]),
    )
    .await?;
    let uid = created.uid().unwrap_or_default();
    let fragment: String = uid
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .chars()
        .take(5)
        .collect();
    let pools = wait_app_pools(&client, "Deployment", &namespace.name, "web", 3, |pools| {
        pools.iter().all(|pool| pool_size(pool) == 3)
    })
    .await?;
    let names: BTreeSet<String> = pools.iter().map(|pool| pool.name_any()).collect();
    let expected: BTreeSet<String> = [
        format!("auto4-web-eth0-{fragment}"),
        format!("auto6-web-eth0-{fragment}"),
        format!("auto4-web-net1-{fragment}"),
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    let eth0_v4 = pools
        .iter()
        .find(|pool| pool.name_any().starts_with("auto4-web-eth0"))
        .expect("eth0 IPv4 pool");
    assert_eq!(
        eth0_v4.spec.ips,
        Some(vec![format!("10.{octet}.1.1-10.{octet}.1.3")])
    );
    assert_eq!(eth0_v4.spec.gateway, Some(format!("10.{octet}.0.1")));
    assert_eq!(eth0_v4.spec.routes.as_ref().map(Vec::len), Some(1));
    assert_eq!(label(eth0_v4, "ipam.spidernet.io/owner-spider-subnet"), v4);
    assert_eq!(
        label(eth0_v4, "ipam.spidernet.io/owner-application-gv"),
        "apps_v1"
    );
    assert_eq!(label(eth0_v4, LABEL_APP_UID), uid);
    assert_eq!(label(eth0_v4, "ipam.spidernet.io/interface"), "eth0");
    assert_eq!(label(eth0_v4, "ipam.spidernet.io/ip-version"), "IPv4");
    assert_eq!(label(eth0_v4, "ipam.spidernet.io/ippool-reclaim"), "true");
    assert_eq!(
        label(eth0_v4, "ipam.spidernet.io/ippool-cidr"),
        format!("10-{octet}-0-0-16")
    );
    assert_eq!(
        eth0_v4
            .annotations()
            .get(ANNO_IP_NUMBER)
            .map(String::as_str),
        Some("+1")
    );
    let owner = &eth0_v4.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("SpiderSubnet", v4.as_str(), Some(true))
    );
    let affinity = eth0_v4
        .spec
        .pod_affinity
        .as_ref()
        .and_then(|affinity| affinity.match_labels.clone())
        .unwrap_or_default();
    assert_eq!(
        affinity
            .get("ipam.spidernet.io/app-kind")
            .map(String::as_str),
        Some("Deployment")
    );
    assert_eq!(
        affinity
            .get("ipam.spidernet.io/app-api-group")
            .map(String::as_str),
        Some("apps")
    );
    let eth0_v6 = pools
        .iter()
        .find(|pool| pool.name_any().starts_with("auto6-"))
        .expect("IPv6 pool");
    assert_eq!(
        eth0_v6.spec.ips,
        Some(vec![format!("fd00:{octet}::10-fd00:{octet}::12")])
    );

    // Subnet status: one record per pool with the application key, counts summed.
    wait_for("subnet status", TIMEOUT, || async {
        let (records, allocated, total) = subnet_state(&client, &v4).await?;
        Ok((records.len() == 1 && allocated == 3 && total == 100).then_some(()))
    })
    .await?;
    let subnet = get_subnet(&client, &v4).await?;
    let controlled = subnet.status.unwrap_or_default().controlled_pools()?;
    let record = &controlled[&format!("auto4-web-eth0-{fragment}")];
    assert_eq!(
        record.application.as_deref(),
        Some(format!("apps_v1_Deployment_{}_web", namespace.name).as_str())
    );
    for subnet in [&v4, &v6, &net1] {
        check_subnet_consistent(&client, subnet).await?;
    }
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    for subnet in [&v4, &v6, &net1] {
        delete_subnet(&client, subnet).await?;
    }
    Ok(())
}

#[tokio::test]
async fn pool_sizes_follow_the_ip_number_annotation() -> anyhow::Result<()> {
    let (client, namespace) = setup("autopool-sizes").await?;
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "sizes",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.200")]}),
    )
    .await?;
    let annotation = subnet_annotation(Some(&subnet), None);
    let cases: [(&str, Option<&str>, u64); 4] = [
        ("flexible", Some("+2"), 5),
        ("fixed", Some("5"), 5),
        ("default", None, 4),
        ("zero", Some("+0"), 3),
    ];
    for (name, number, _) in cases {
        let mut annotations = vec![(ANNO_SUBNET, annotation.clone())];
        if let Some(number) = number {
            annotations.push((ANNO_IP_NUMBER, number.to_string()));
        }
        create_deployment(&client, &namespace.name, &deployment(name, 3, &annotations)).await?;
    }
    for (name, number, size) in cases {
        let pools = wait_app_pools(&client, "Deployment", &namespace.name, name, 1, |pools| {
            pool_size(&pools[0]) == size
        })
        .await?;
        let annotation = pools[0].annotations().get(ANNO_IP_NUMBER).cloned();
        assert_eq!(
            annotation.as_deref(),
            Some(number.unwrap_or("+1")),
            "{name}"
        );
    }
    // A fixed size does not follow replicas; a flexible one does.
    let since = autopool_reconciles().await?;
    scale_deployment(&client, &namespace.name, "fixed", 1).await?;
    scale_deployment(&client, &namespace.name, "flexible", 1).await?;
    wait_app_pools(
        &client,
        "Deployment",
        &namespace.name,
        "flexible",
        1,
        |pools| pool_size(&pools[0]) == 3,
    )
    .await?;
    wait_autopool_reconciles(since, 2.0).await?;
    let fixed = app_pools(&client, "Deployment", &namespace.name, "fixed").await?;
    assert_eq!(pool_size(&fixed[0]), 5);
    check_subnet_consistent(&client, &subnet).await?;
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    delete_subnet(&client, &subnet).await?;
    Ok(())
}

#[tokio::test]
async fn every_workload_kind_gets_an_auto_pool_and_host_network_ones_do_not() -> anyhow::Result<()>
{
    let (client, namespace) = setup("autopool-kinds").await?;
    let ns = namespace.name.as_str();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "kinds",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.250")]}),
    )
    .await?;
    let annotations = json!({ANNO_SUBNET: subnet_annotation(Some(&subnet), None)});
    let template = |host_network: bool| {
        json!({
            "metadata": {"labels": {"app": "x"}, "annotations": annotations},
            "spec": {"hostNetwork": host_network, "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": "registry.invalid/pause:1"}]},
        })
    };
    let always = |host_network: bool| {
        let mut template = template(host_network);
        template["spec"]["restartPolicy"] = json!("Always");
        template
    };
    let replicaset: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "rs"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}, "template": always(false)},
    }))?;
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &replicaset)
        .await?;
    let statefulset: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "sts"},
        "spec": {"replicas": 3, "serviceName": "sts", "selector": {"matchLabels": {"app": "x"}}, "template": always(false)},
    }))?;
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &statefulset)
        .await?;
    let daemonset: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "ds"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": always(false)},
    }))?;
    Api::<DaemonSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &daemonset)
        .await?;
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "job"},
        "spec": {"parallelism": 4, "template": template(false)},
    }))?;
    Api::<Job>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await?;
    let cronjob: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "cron"},
        "spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"completions": 2, "template": template(false)}}},
    }))?;
    Api::<CronJob>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cronjob)
        .await?;
    let since = autopool_reconciles().await?;
    let host: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "host"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "template": always(true)},
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &host)
        .await?;
    create_deployment(
        &client,
        ns,
        &deployment(
            "deploy",
            2,
            &[(ANNO_SUBNET, subnet_annotation(Some(&subnet), None))],
        ),
    )
    .await?;

    // replicas + 1 (DaemonSet: no node, so 0 desired pods + 1).
    for (kind, name, size) in [
        ("ReplicaSet", "rs", 3),
        ("StatefulSet", "sts", 4),
        ("DaemonSet", "ds", 1),
        ("Job", "job", 5),
        ("CronJob", "cron", 3),
        ("Deployment", "deploy", 3),
    ] {
        let pools = wait_app_pools(&client, kind, ns, name, 1, |pools| {
            pool_size(&pools[0]) == size
        })
        .await?;
        assert_eq!(
            label(&pools[0], "ipam.spidernet.io/owner-application-kind"),
            kind
        );
    }
    // The Deployment's ReplicaSet and the host-network Deployment get none, once the controller
    // has reconciled the two Deployments created since `since`.
    wait_autopool_reconciles(since, 2.0).await?;
    assert!(
        app_pools(&client, "Deployment", ns, "host")
            .await?
            .is_empty()
    );
    let replicasets = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await?;
    for replicaset in replicasets.items.iter().filter(|rs| rs.name_any() != "rs") {
        assert!(
            app_pools(&client, "ReplicaSet", ns, &replicaset.name_any())
                .await?
                .is_empty()
        );
    }
    check_subnet_consistent(&client, &subnet).await?;
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    delete_subnet(&client, &subnet).await?;
    Ok(())
}

#[tokio::test]
async fn scaling_a_deployment_resizes_its_pool_without_dropping_an_address_in_use()
-> anyhow::Result<()> {
    let (client, namespace) = setup("autopool-scale").await?;
    let ns = namespace.name.as_str();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "scale",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.100")]}),
    )
    .await?;
    let (_, _, start_total) = wait_for("subnet counted", TIMEOUT, || async {
        let state = subnet_state(&client, &subnet).await?;
        Ok((state.2 == 100).then_some(state))
    })
    .await?;
    let annotations = [
        (ANNO_SUBNET, subnet_annotation(Some(&subnet), None)),
        (ANNO_IP_NUMBER, "+0".to_string()),
    ];
    create_deployment(&client, ns, &deployment("web", 2, &annotations)).await?;
    let pools = wait_app_pools(&client, "Deployment", ns, "web", 1, |pools| {
        pool_size(&pools[0]) == 2
    })
    .await?;
    let pool = pools[0].name_any();
    assert_eq!(
        pools[0].spec.ips,
        Some(vec![format!("10.{octet}.0.1-10.{octet}.0.2")])
    );

    // A pod holds the second address (the test plays the CNI plugin).
    let node = create_node(&client, true).await?;
    let pod = create_pod(&client, ns, "holder", &node, json!({})).await?;
    let first = allocate_record(&client, &pool, &format!("{ns}/other"), "other-uid").await?;
    let held = allocate(&client, &pool, &pod, false).await?;
    assert_eq!(first, format!("10.{octet}.0.1"));
    assert_eq!(held, format!("10.{octet}.0.2"));
    release_records(&client, &pool, "other-uid").await?;

    scale_deployment(&client, ns, "web", 5).await?;
    let pools = wait_app_pools(&client, "Deployment", ns, "web", 1, |pools| {
        pool_size(&pools[0]) == 5
    })
    .await?;
    assert_eq!(
        pools[0].spec.ips,
        Some(vec![format!("10.{octet}.0.1-10.{octet}.0.5")])
    );
    wait_for("subnet follows the scale-up", TIMEOUT, || async {
        let (_, allocated, _) = subnet_state(&client, &subnet).await?;
        Ok((allocated == 5).then_some(()))
    })
    .await?;

    scale_deployment(&client, ns, "web", 1).await?;
    let pools = wait_app_pools(&client, "Deployment", ns, "web", 1, |pools| {
        pool_size(&pools[0]) == 1
    })
    .await?;
    assert_eq!(
        pools[0].spec.ips,
        Some(vec![held.clone()]),
        "the address in use stays; the lowest free ones go"
    );
    wait_for("subnet follows the scale-down", TIMEOUT, || async {
        let (records, allocated, total) = subnet_state(&client, &subnet).await?;
        Ok(
            (allocated == 1 && total == start_total && records[&pool] == vec![held.clone()])
                .then_some(()),
        )
    })
    .await?;
    assert_eq!(
        pool_records(&client, &pool)
            .await?
            .get(&held)
            .map(String::as_str),
        Some(format!("{ns}/holder").as_str())
    );

    // Scale to 0 while the address is still held: the pool keeps it until it is released.
    let since = autopool_reconciles().await?;
    scale_deployment(&client, ns, "web", 0).await?;
    wait_autopool_reconciles(since, 1.0).await?;
    let pools = app_pools(&client, "Deployment", ns, "web").await?;
    assert_eq!(
        pool_size(&pools[0]),
        1,
        "scale-down waits for the pod to free its address"
    );
    release_records(&client, &pool, &pod.uid().unwrap_or_default()).await?;
    // The rest of the plugin's DEL: the endpoint goes with its records.
    let endpoints: Api<spiderpool_api::SpiderEndpoint> = Api::namespaced(client.clone(), ns);
    endpoints
        .patch(
            "holder",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    endpoints.delete("holder", &DeleteParams::default()).await?;
    wait_app_pools(&client, "Deployment", ns, "web", 1, |pools| {
        pool_size(&pools[0]) == 0
    })
    .await?;
    check_subnet_consistent(&client, &subnet).await?;
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    delete_subnet(&client, &subnet).await?;
    Ok(())
}

#[tokio::test]
async fn deleted_workloads_lose_their_pools_unless_reclaim_is_off_and_a_successor_reuses_them()
-> anyhow::Result<()> {
    let (client, namespace) = setup("autopool-reclaim").await?;
    let ns = namespace.name.as_str();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "reclaim",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.100")]}),
    )
    .await?;
    let annotation = subnet_annotation(Some(&subnet), None);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);

    // Reclaimed (the default).
    create_deployment(
        &client,
        ns,
        &deployment("gone", 2, &[(ANNO_SUBNET, annotation.clone())]),
    )
    .await?;
    wait_app_pools(&client, "Deployment", ns, "gone", 1, |_| true).await?;
    deployments.delete("gone", &DeleteParams::default()).await?;
    wait_for("the reclaimed pool to go", TIMEOUT, || async {
        Ok(app_pools(&client, "Deployment", ns, "gone")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;

    // Kept, then reused by a Deployment with the same name.
    let kept_annotations = [
        (ANNO_SUBNET, annotation.clone()),
        (ANNO_RECLAIM, "false".to_string()),
    ];
    let first = create_deployment(&client, ns, &deployment("kept", 2, &kept_annotations)).await?;
    let pools = wait_app_pools(&client, "Deployment", ns, "kept", 1, |_| true).await?;
    let kept_pool = pools[0].name_any();
    assert_eq!(
        label(&pools[0], "ipam.spidernet.io/ippool-reclaim"),
        "false"
    );
    let since = autopool_reconciles().await?;
    deployments.delete("kept", &DeleteParams::default()).await?;
    wait_for("the Deployment to go", TIMEOUT, || async {
        Ok(deployments.get_opt("kept").await?.is_none().then_some(()))
    })
    .await?;
    wait_autopool_reconciles(since, 1.0).await?;
    let pools = app_pools(&client, "Deployment", ns, "kept").await?;
    assert_eq!(
        pools.len(),
        1,
        "a pool with ippool-reclaim=false survives its workload"
    );
    assert!(pools[0].metadata.deletion_timestamp.is_none());

    let successor =
        create_deployment(&client, ns, &deployment("kept", 4, &kept_annotations)).await?;
    assert_ne!(first.uid(), successor.uid());
    let successor_uid = successor.uid().unwrap_or_default();
    let pools = wait_app_pools(&client, "Deployment", ns, "kept", 1, |pools| {
        pool_size(&pools[0]) == 5 && label(&pools[0], LABEL_APP_UID) == successor_uid
    })
    .await?;
    assert_eq!(
        pools[0].name_any(),
        kept_pool,
        "the successor reuses the kept pool"
    );
    check_subnet_consistent(&client, &subnet).await?;

    // Reclaimed pools of a predecessor are not reused: a new pool is made.
    let recl = create_deployment(
        &client,
        ns,
        &deployment("again", 1, &[(ANNO_SUBNET, annotation.clone())]),
    )
    .await?;
    let old = wait_app_pools(&client, "Deployment", ns, "again", 1, |_| true).await?;
    deployments
        .delete("again", &DeleteParams::default())
        .await?;
    wait_for("the Deployment to go", TIMEOUT, || async {
        Ok(deployments.get_opt("again").await?.is_none().then_some(()))
    })
    .await?;
    let second = create_deployment(
        &client,
        ns,
        &deployment("again", 1, &[(ANNO_SUBNET, annotation.clone())]),
    )
    .await?;
    assert_ne!(recl.uid(), second.uid());
    let new = wait_app_pools(&client, "Deployment", ns, "again", 1, |pools| {
        label(&pools[0], LABEL_APP_UID) == second.uid().unwrap_or_default()
    })
    .await?;
    assert_ne!(new[0].name_any(), old[0].name_any());

    // The subnet forgets the reclaimed pools.
    wait_for(
        "subnet records of reclaimed pools dropped",
        TIMEOUT,
        || async {
            let (records, _, _) = subnet_state(&client, &subnet).await?;
            Ok((records.len() == 2).then_some(()))
        },
    )
    .await?;
    check_subnet_consistent(&client, &subnet).await?;
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    delete_subnet(&client, &subnet).await?;
    Ok(())
}

#[tokio::test]
async fn an_exhausted_subnet_gives_a_clear_warning_event() -> anyhow::Result<()> {
    let (client, namespace) = setup("autopool-full").await?;
    let ns = namespace.name.as_str();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "full",
        json!({"subnet": format!("10.{octet}.0.0/24"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.4")]}),
    )
    .await?;
    let annotations = [(ANNO_SUBNET, subnet_annotation(Some(&subnet), None))];
    create_deployment(&client, ns, &deployment("big", 9, &annotations)).await?;
    let events = wait_for("an InsufficientSubnetIPs event", TIMEOUT, || async {
        let events = events(&client, ns, "big", "InsufficientSubnetIPs").await?;
        Ok((!events.is_empty()).then_some(events))
    })
    .await?;
    let event = &events[0];
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.message.clone().unwrap_or_default();
    assert!(
        note.contains("insufficient subnet FreeIPs, required '10' but only left '4'")
            && note.contains(&subnet),
        "{note}"
    );
    assert!(
        app_pools(&client, "Deployment", ns, "big")
            .await?
            .is_empty()
    );
    // Making room lets it through.
    scale_deployment(&client, ns, "big", 3).await?;
    wait_app_pools(&client, "Deployment", ns, "big", 1, |pools| {
        pool_size(&pools[0]) == 4
    })
    .await?;
    check_subnet_consistent(&client, &subnet).await?;
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    delete_subnet(&client, &subnet).await?;
    Ok(())
}

/// Creates `count` Deployments at once and returns, per Deployment, the time from its create
/// call to its pool being seen by one watch on the namespace's auto pools (no polling, so the
/// measurement does not load the API server).
async fn create_many(
    client: &Client,
    namespace: &str,
    prefix: &str,
    count: usize,
    annotations: &[(&str, String)],
) -> anyhow::Result<Vec<Duration>> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{LABEL_APP_NAMESPACE}={namespace}"));
    let watch = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(pools, config).applied_objects());
            while let Some(pool) = stream.next().await {
                if let Ok(pool) = pool {
                    let name = label(&pool, LABEL_APP_NAME).to_string();
                    seen.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    // Let the watch list first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tasks = Vec::new();
    for index in 0..count {
        let client = client.clone();
        let namespace = namespace.to_string();
        let name = format!("{prefix}-{index}");
        let deployment = deployment(&name, 2, annotations);
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            create_deployment(&client, &namespace, &deployment).await?;
            anyhow::Ok((name, started))
        }));
    }
    let mut starts = Vec::new();
    for task in tasks {
        starts.push(task.await??);
    }
    if let Some(first) = starts.iter().map(|(_, started)| *started).min() {
        println!(
            "created {count} Deployments in {:.2}s",
            first.elapsed().as_secs_f64()
        );
    }
    let latencies = wait_for(&format!("{count} auto pools"), TIMEOUT, || {
        let seen = seen.clone();
        let starts = starts.clone();
        async move {
            let seen = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let latencies: Option<Vec<Duration>> = starts
                .iter()
                .map(|(name, started)| {
                    seen.get(name)
                        .map(|at| at.saturating_duration_since(*started))
                })
                .collect();
            Ok(latencies)
        }
    })
    .await;
    watch.abort();
    let mut latencies = latencies?;
    latencies.sort();
    Ok(latencies)
}

#[tokio::test]
async fn thirty_deployments_churning_on_one_subnet_leave_it_exactly_as_found() -> anyhow::Result<()>
{
    let (client, namespace) = setup("autopool-churn").await?;
    let ns = namespace.name.clone();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "churn",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.3.254")]}),
    )
    .await?;
    let start = wait_for("subnet counted", TIMEOUT, || async {
        let state = subnet_state(&client, &subnet).await?;
        Ok((state.2 > 0).then_some(state))
    })
    .await?;
    let annotations = [(ANNO_SUBNET, subnet_annotation(Some(&subnet), None))];

    let began = Instant::now();
    create_many(&client, &ns, "churn", 30, &annotations).await?;
    let created = began.elapsed();
    check_subnet_consistent(&client, &subnet).await?;

    // 15 up (2 -> 6), 15 down (2 -> 1), all at once.
    let began = Instant::now();
    let mut scalings = Vec::new();
    for index in 0..30 {
        let client = client.clone();
        let ns = ns.clone();
        let replicas = if index < 15 { 6 } else { 1 };
        scalings.push(tokio::spawn(async move {
            scale_deployment(&client, &ns, &format!("churn-{index}"), replicas).await
        }));
    }
    for scaling in scalings {
        scaling.await??;
    }
    for index in 0..30 {
        let size = if index < 15 { 7 } else { 2 };
        wait_app_pools(
            &client,
            "Deployment",
            &ns,
            &format!("churn-{index}"),
            1,
            |pools| pool_size(&pools[0]) == size,
        )
        .await?;
    }
    let scaled = began.elapsed();
    wait_for("subnet records follow", TIMEOUT, || async {
        let (_, allocated, _) = subnet_state(&client, &subnet).await?;
        Ok((allocated == 15 * 7 + 15 * 2).then_some(()))
    })
    .await?;
    check_subnet_consistent(&client, &subnet).await?;

    let began = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut deletions = Vec::new();
    for index in 0..30 {
        let deployments = deployments.clone();
        deletions.push(tokio::spawn(async move {
            deployments
                .delete(&format!("churn-{index}"), &DeleteParams::default())
                .await
        }));
    }
    for deletion in deletions {
        deletion.await??;
    }
    let end = wait_for("subnet back to its start", TIMEOUT, || async {
        let state = subnet_state(&client, &subnet).await?;
        Ok((state == start).then_some(state))
    })
    .await?;
    let deleted = began.elapsed();
    assert_eq!(end, start);
    let pools = Api::<SpiderIPPool>::all(client.clone())
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("ipam.spidernet.io/owner-spider-subnet={subnet}")),
        )
        .await?;
    assert!(pools.items.is_empty(), "every auto pool is gone");
    println!(
        "BENCH autopool churn: 30 Deployments created (pools ready) in {:.2}s, 15 up + 15 down scaled in {:.2}s, all deleted and subnet restored in {:.2}s",
        created.as_secs_f64(),
        scaled.as_secs_f64(),
        deleted.as_secs_f64()
    );
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    delete_subnet(&client, &subnet).await?;
    Ok(())
}

#[tokio::test]
async fn auto_pools_exist_soon_after_deployment_create() -> anyhow::Result<()> {
    let (client, namespace) = setup("autopool-latency").await?;
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "latency",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.7.254")]}),
    )
    .await?;
    wait_for("subnet counted", TIMEOUT, || async {
        Ok((subnet_state(&client, &subnet).await?.2 > 0).then_some(()))
    })
    .await?;
    let annotations = [(ANNO_SUBNET, subnet_annotation(Some(&subnet), None))];
    let began = Instant::now();
    let latencies = create_many(&client, &namespace.name, "lat", 100, &annotations).await?;
    let total = began.elapsed();
    check_subnet_consistent(&client, &subnet).await?;
    println!(
        "BENCH autopool latency: Deployment create -> auto pool exists over 100 concurrent Deployments: p50 {:.0}ms, p99 {:.0}ms, max {:.0}ms, all in {:.2}s",
        percentile(&latencies, 50.0).as_secs_f64() * 1000.0,
        percentile(&latencies, 99.0).as_secs_f64() * 1000.0,
        percentile(&latencies, 100.0).as_secs_f64() * 1000.0,
        total.as_secs_f64()
    );
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    wait_for("auto pools reclaimed", TIMEOUT, || async {
        let pools = Api::<SpiderIPPool>::all(client.clone())
            .list(
                &kube::api::ListParams::default()
                    .labels(&format!("ipam.spidernet.io/owner-spider-subnet={subnet}")),
            )
            .await?;
        Ok(pools.items.is_empty().then_some(()))
    })
    .await?;
    delete_subnet(&client, &subnet).await?;
    Ok(())
}

#[tokio::test]
async fn pools_get_true_counts_and_keep_their_finalizer_while_addresses_are_allocated()
-> anyhow::Result<()> {
    let (client, namespace) = setup("autopool-counts").await?;
    let octet = unique_octet();
    let pool = create_pool(
        &client,
        "counts",
        json!({"subnet": format!("10.{octet}.0.0/24"), "ips": [format!("10.{octet}.0.10-10.{octet}.0.19"), format!("10.{octet}.0.30")],
               "excludeIPs": [format!("10.{octet}.0.15")]}),
    )
    .await?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let counts = |pool: &SpiderIPPool| {
        let status = pool.status.clone().unwrap_or_default();
        (status.total_ip_count, status.allocated_ip_count)
    };
    wait_for("counts and finalizer", TIMEOUT, || async {
        let current = pools.get(&pool).await?;
        Ok((counts(&current) == (Some(10), Some(0))
            && current
                .finalizers()
                .iter()
                .any(|finalizer| finalizer == "spiderpool.spidernet.io"))
        .then_some(()))
    })
    .await?;
    allocate_record(&client, &pool, &format!("{}/a", namespace.name), "uid-a").await?;
    // A writer that got the count wrong is corrected from the ledger.
    pools
        .patch_status(
            &pool,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                &json!({"status": {"allocatedIPCount": 7, "totalIPCount": 99}}),
            ),
        )
        .await?;
    wait_for("counts follow the ledger", TIMEOUT, || async {
        Ok((counts(&pools.get(&pool).await?) == (Some(10), Some(1))).then_some(()))
    })
    .await?;
    // Deleted while an address is allocated: it waits for the release.
    let manager = controller_manager(&[]).await?;
    let since = reconciles(manager, "ippool").await?;
    pools.delete(&pool, &DeleteParams::default()).await?;
    wait_reconciles(manager, "ippool", since, 1.0).await?;
    let terminating = pools.get(&pool).await?;
    assert!(terminating.metadata.deletion_timestamp.is_some());
    release_records(&client, &pool, "uid-a").await?;
    wait_for("the pool to go", TIMEOUT, || async {
        Ok(pools.get_opt(&pool).await?.is_none().then_some(()))
    })
    .await?;
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    Ok(())
}

#[tokio::test]
async fn a_reclaimable_auto_pool_whose_workload_is_gone_is_deleted() -> anyhow::Result<()> {
    let (client, namespace) = setup("autopool-legacy").await?;
    let octet = unique_octet();
    // As if its workload's deletion had been missed: an auto pool of a Deployment that does not
    // exist.
    let pool = unique_name_for("auto4-ghost-eth0");
    let object: SpiderIPPool = serde_json::from_value(json!({
        "metadata": {"name": pool, "labels": {
            "ipam.spidernet.io/owner-application-gv": "apps_v1",
            "ipam.spidernet.io/owner-application-kind": "Deployment",
            LABEL_APP_NAMESPACE: namespace.name,
            LABEL_APP_NAME: "ghost",
            LABEL_APP_UID: "6a1f3e2d-0000-0000-0000-000000000001",
            "ipam.spidernet.io/ippool-reclaim": "true",
        }},
        "spec": {"subnet": format!("10.{octet}.0.0/24"), "ips": [format!("10.{octet}.0.10")]},
    }))?;
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    pools.create(&PostParams::default(), &object).await?;
    wait_for("the orphaned auto pool to go", TIMEOUT, || async {
        Ok(pools.get_opt(&pool).await?.is_none().then_some(()))
    })
    .await?;
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_subnet_deletes_its_pools_first() -> anyhow::Result<()> {
    let (client, namespace) = setup("autopool-subnet-delete").await?;
    let ns = namespace.name.as_str();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "doomed",
        json!({"subnet": format!("10.{octet}.0.0/24"), "ips": [format!("10.{octet}.0.10-10.{octet}.0.99")]}),
    )
    .await?;
    create_deployment(
        &client,
        ns,
        &deployment(
            "web",
            2,
            &[(ANNO_SUBNET, subnet_annotation(Some(&subnet), None))],
        ),
    )
    .await?;
    let pools = wait_app_pools(&client, "Deployment", ns, "web", 1, |_| true).await?;
    let pool = pools[0].name_any();
    let subnets: Api<spiderpool_api::SpiderSubnet> = Api::all(client.clone());
    subnets.delete(&subnet, &DeleteParams::default()).await?;
    let pool_api: Api<SpiderIPPool> = Api::all(client.clone());
    wait_for("the pool, then the subnet, to go", TIMEOUT, || async {
        let pool_gone = pool_api.get_opt(&pool).await?.is_none();
        let subnet_gone = subnets.get_opt(&subnet).await?.is_none();
        anyhow::ensure!(pool_gone || !subnet_gone, "the subnet went before its pool");
        Ok((pool_gone && subnet_gone).then_some(()))
    })
    .await?;
    assert!(
        app_pools(&client, "Deployment", ns, "web")
            .await?
            .is_empty()
    );
    spiderpool_e2e::invariants::assert_consistent(&client, &namespace.name).await?;
    namespace.delete().await?;
    Ok(())
}

/// The subnet controller is triggered by the same pool cache it reads: a pool created right
/// after its subnet is recorded by the event of its creation, not by the subnet's resync
/// (60 s). With a trigger watch of its own, racing the cache, some of these pairs were recorded
/// only at the resync.
#[tokio::test]
async fn pools_created_right_after_their_subnets_are_recorded_without_waiting_for_a_resync()
-> anyhow::Result<()> {
    const PAIRS: usize = 8;
    const WITHIN: Duration = Duration::from_secs(30);
    let client = client().await?;
    controller_manager(&[]).await?;
    let subnets: Api<spiderpool_api::SpiderSubnet> = Api::all(client.clone());
    let mut pairs = Vec::new();
    for _ in 0..PAIRS {
        let octet = unique_octet();
        let subnet = create_subnet(
            &client,
            "back-to-back",
            json!({"subnet": format!("10.{octet}.0.0/24"), "ips": [format!("10.{octet}.0.10-10.{octet}.0.99")]}),
        )
        .await?;
        let pool = create_pool(
            &client,
            "back-to-back",
            json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/24"), "ips": [format!("10.{octet}.0.20-10.{octet}.0.29")]}),
        )
        .await?;
        pairs.push((subnet, pool, Instant::now()));
    }
    for (subnet, pool, created) in &pairs {
        let left = WITHIN.saturating_sub(created.elapsed());
        wait_for(
            &format!("subnet {subnet} to record pool {pool}"),
            left,
            || async {
                let controlled = subnets
                    .get(subnet)
                    .await?
                    .status
                    .and_then(|status| status.controlled_ip_pools)
                    .unwrap_or_default();
                Ok(controlled.contains(&format!("\"{pool}\"")).then_some(()))
            },
        )
        .await?;
    }
    for (subnet, pool, _) in &pairs {
        delete_pool(&client, pool).await?;
        delete_subnet(&client, subnet).await?;
    }
    Ok(())
}

fn unique_name_for(prefix: &str) -> String {
    spiderpool_e2e::unique_name(prefix)
}
