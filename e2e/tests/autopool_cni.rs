//! The user workflow of seed 002 end to end: SpiderSubnets, a Deployment annotated with
//! `ipam.spidernet.io/subnets` for two interfaces, the controller-manager creating its auto
//! pools, and the real `spiderpool` CNI plugin (the test plays scheduler and kubelet) giving the
//! Deployment's pods their addresses from them — through scale up, scale down (addresses in use
//! are never taken from the pool; it shrinks once pods are gone) and deletion.

mod autopool_support;
#[path = "ipam_support/mod.rs"]
mod ipam_support;

use std::collections::BTreeSet;

use autopool_support::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::SpiderIPPool;
use spiderpool_e2e::{TestNamespace, client, controller_manager, wait_for};

/// The Deployment's pods, by name.
async fn app_pods(client: &Client, namespace: &str) -> anyhow::Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels("app=app"))
        .await?
        .items)
}

/// Plays scheduler and kubelet for every new pod: bind it to the node, then CNI ADD on both
/// interfaces. Returns the addresses per pod and interface.
async fn start_new_pods(
    client: &Client,
    namespace: &str,
    node: &ipam_support::SimNode,
    config: &Value,
    started: &mut BTreeSet<String>,
) -> anyhow::Result<Vec<(String, String, Vec<String>)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut addresses = Vec::new();
    for pod in app_pods(client, namespace).await? {
        let name = pod.name_any();
        if started.contains(&name) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node.name},
        });
        let _: Value = pods
            .create_subresource("binding", &name, &PostParams::default(), &binding)
            .await?;
        let pod = pods.get(&name).await?;
        for nic in ["eth0", "net1"] {
            let output =
                ipam_support::cni("ADD", &ipam_support::PodRef::of(&pod), nic, config).await?;
            addresses.push((name.clone(), nic.to_string(), output.addresses()?));
        }
        started.insert(name);
    }
    Ok(addresses)
}

/// Plays kubelet for every terminating pod: CNI DEL on both interfaces, then the pod goes.
async fn stop_terminating_pods(
    client: &Client,
    namespace: &str,
    config: &Value,
    started: &mut BTreeSet<String>,
) -> anyhow::Result<usize> {
    let mut stopped = 0;
    for pod in app_pods(client, namespace).await? {
        if pod.metadata.deletion_timestamp.is_none() {
            continue;
        }
        for nic in ["eth0", "net1"] {
            let output =
                ipam_support::cni("DEL", &ipam_support::PodRef::of(&pod), nic, config).await?;
            anyhow::ensure!(output.success, "DEL failed: {}", output.stdout);
        }
        force_delete_pod(client, namespace, &pod.name_any()).await?;
        started.remove(&pod.name_any());
        stopped += 1;
    }
    Ok(stopped)
}

async fn allocated(client: &Client, pool: &str) -> anyhow::Result<usize> {
    Ok(pool_records(client, pool).await?.len())
}

#[tokio::test]
async fn a_deployments_pods_get_their_addresses_from_its_auto_pools_through_scale_and_delete()
-> anyhow::Result<()> {
    let client = client().await?;
    controller_manager(&[]).await?;
    let namespace = TestNamespace::create(&client, "autopool-cni").await?;
    let ns = namespace.name.clone();
    let octet = unique_octet();
    let second = unique_octet();
    let eth0_v4 = create_subnet(
        &client,
        "cni-eth0-v4",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.1.1-10.{octet}.1.50")], "gateway": format!("10.{octet}.0.1")}),
    )
    .await?;
    let eth0_v6 = create_subnet(
        &client,
        "cni-eth0-v6",
        json!({"subnet": format!("fd00:{octet}::/64"), "ips": [format!("fd00:{octet}::100-fd00:{octet}::1ff")]}),
    )
    .await?;
    let net1 = create_subnet(
        &client,
        "cni-net1",
        json!({"subnet": format!("10.{second}.0.0/24"), "ips": [format!("10.{second}.0.10-10.{second}.0.40")]}),
    )
    .await?;
    let subnets = json!([
        {"interface": "eth0", "ipv4": [eth0_v4], "ipv6": [eth0_v6]},
        {"interface": "net1", "ipv4": [net1]},
    ])
    .to_string();
    let scratch = ipam_support::Scratch::new("autopool-cni")?;
    let node = ipam_support::SimNode::create(&client, &scratch, &[], "").await?;
    let config = ipam_support::netconf("1.0.0", &node, json!({}));

    create_deployment(
        &client,
        &ns,
        &deployment("app", 2, &[(ANNO_SUBNETS, subnets)]),
    )
    .await?;
    let pools = wait_app_pools(&client, "Deployment", &ns, "app", 3, |pools| {
        pools.iter().all(|pool| pool_size(pool) == 3)
    })
    .await?;
    let pool_of = |prefix: &str| -> String {
        pools
            .iter()
            .map(ResourceExt::name_any)
            .find(|name| name.starts_with(prefix))
            .unwrap_or_default()
    };
    let (pool_v4, pool_v6, pool_net1) = (
        pool_of("auto4-app-eth0"),
        pool_of("auto6-app-eth0"),
        pool_of("auto4-app-net1"),
    );

    // Two pods, each with IPv4 + IPv6 on eth0 and IPv4 on net1, from the auto pools.
    let mut started = BTreeSet::new();
    wait_for("2 pods", TIMEOUT, || async {
        Ok((app_pods(&client, &ns).await?.len() == 2).then_some(()))
    })
    .await?;
    let addresses = start_new_pods(&client, &ns, &node, &config, &mut started).await?;
    assert_eq!(addresses.len(), 4);
    for (pod, nic, ips) in &addresses {
        let expected = if nic == "eth0" { 2 } else { 1 };
        assert_eq!(ips.len(), expected, "{pod} {nic}: {ips:?}");
        for ip in ips {
            let inside = ip.starts_with(&format!("10.{octet}.1."))
                || ip.starts_with(&format!("fd00:{octet}::1"))
                || ip.starts_with(&format!("10.{second}.0."));
            assert!(inside, "{pod} {nic} got {ip}");
        }
    }
    for pool in [&pool_v4, &pool_v6, &pool_net1] {
        assert_eq!(allocated(&client, pool).await?, 2, "{pool}");
    }

    // Scale up: the pools grow first, then the new pods get addresses.
    scale_deployment(&client, &ns, "app", 4).await?;
    wait_app_pools(&client, "Deployment", &ns, "app", 3, |pools| {
        pools.iter().all(|pool| pool_size(pool) == 5)
    })
    .await?;
    wait_for("4 pods", TIMEOUT, || async {
        Ok((app_pods(&client, &ns).await?.len() == 4).then_some(()))
    })
    .await?;
    start_new_pods(&client, &ns, &node, &config, &mut started).await?;
    for pool in [&pool_v4, &pool_v6, &pool_net1] {
        assert_eq!(allocated(&client, pool).await?, 4, "{pool}");
    }

    // Scale down: the pools keep every address in use until the pods are gone, then shrink.
    scale_deployment(&client, &ns, "app", 1).await?;
    wait_for("3 pods terminating", TIMEOUT, || async {
        let terminating = app_pods(&client, &ns)
            .await?
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_some())
            .count();
        Ok((terminating == 3).then_some(()))
    })
    .await?;
    let while_terminating = app_pools(&client, "Deployment", &ns, "app").await?;
    for pool in &while_terminating {
        let records = pool_records(&client, &pool.name_any()).await?;
        let ips = expand(&pool.spec.ips.clone().unwrap_or_default());
        for ip in records.keys() {
            let value = ip_value(ip.parse()?);
            assert!(
                ips.contains(&value),
                "{} dropped {ip} while a pod holds it",
                pool.name_any()
            );
        }
    }
    assert_eq!(
        stop_terminating_pods(&client, &ns, &config, &mut started).await?,
        3
    );
    wait_app_pools(&client, "Deployment", &ns, "app", 3, |pools| {
        pools.iter().all(|pool| pool_size(pool) == 2)
    })
    .await?;
    for pool in [&pool_v4, &pool_v6, &pool_net1] {
        assert_eq!(allocated(&client, pool).await?, 1, "{pool}");
    }
    for subnet in [&eth0_v4, &eth0_v6, &net1] {
        check_subnet_consistent(&client, subnet).await?;
        assert_eq!(subnet_state(&client, subnet).await?.1, 2, "{subnet}");
    }

    // Deleted: the last pod goes, the pools are reclaimed, the subnets are empty again.
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .delete("app", &DeleteParams::default())
        .await?;
    wait_for("the last pod terminating", TIMEOUT, || async {
        let pods = app_pods(&client, &ns).await?;
        Ok(pods
            .iter()
            .all(|pod| pod.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await?;
    stop_terminating_pods(&client, &ns, &config, &mut started).await?;
    for subnet in [&eth0_v4, &eth0_v6, &net1] {
        wait_for(&format!("{subnet} empty"), TIMEOUT, || async {
            let (records, allocated, _) = subnet_state(&client, subnet).await?;
            Ok((records.is_empty() && allocated == 0).then_some(()))
        })
        .await?;
    }
    let remaining = Api::<SpiderIPPool>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{LABEL_APP_NAMESPACE}={ns}")))
        .await?;
    assert!(remaining.items.is_empty());
    namespace.delete().await?;
    node.delete(&client).await?;
    for subnet in [&eth0_v4, &eth0_v6, &net1] {
        delete_subnet(&client, subnet).await?;
    }
    Ok(())
}
