//! The `spiderpool` IPAM plugin against the real API server: the test plays kubelet (Node and Pod
//! objects bound with `spec.nodeName`, the real binary run with the CNI environment) and checks
//! results, pool ledgers and SpiderEndpoints: every pool source and its precedence, invalid
//! annotations, multi-NIC, partial failure without leaks, exhaustion, idempotent ADD, DEL,
//! affinity filters, excluded and reserved addresses, dual stack, StatefulSet and Deployment pods
//! re-created under the same name, a CronJob's Job pod, 200 concurrent ADDs on one pool, and an ADD waiting for a full
//! auto pool to grow.

mod ipam_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::{SpiderIPPool, SpiderReservedIP};
use spiderpool_e2e::{TestNamespace, client, unique_name, wait_for};

use ipam_support::*;

const IPPOOL: &str = "ipam.spidernet.io/ippool";
const IPPOOLS: &str = "ipam.spidernet.io/ippools";
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// `range` is `"a"` or `"a-b"` (last octet / last group).
fn expand(prefix: &str, range: &str) -> String {
    match range.split_once('-') {
        Some((first, last)) => format!("{prefix}{first}-{prefix}{last}"),
        None => format!("{prefix}{range}"),
    }
}

fn v4_pool(third: u8, range: &str) -> Value {
    json!({
        "ipVersion": 4,
        "subnet": format!("10.{third}.0.0/24"),
        "ips": [expand(&format!("10.{third}.0."), range)],
        "gateway": format!("10.{third}.0.1"),
    })
}

fn v6_pool(third: u16, range: &str) -> Value {
    json!({
        "ipVersion": 6,
        "subnet": format!("fd00:{third:x}::/64"),
        "ips": [expand(&format!("fd00:{third:x}::"), range)],
        "gateway": format!("fd00:{third:x}::1"),
    })
}

/// A random second octet per test, so each test's addresses say which pool they came from
/// (2-19 belong to the reservation test alone: reservations are cluster-wide).
fn octet() -> u8 {
    rand::random_range(20..250)
}

struct Fixture {
    client: Client,
    namespace: TestNamespace,
    node: SimNode,
    scratch: Scratch,
    pools: Vec<String>,
}

impl Fixture {
    async fn new(prefix: &str) -> anyhow::Result<Fixture> {
        Fixture::with_node(prefix, &[], "").await
    }

    async fn with_node(
        prefix: &str,
        labels: &[(&str, &str)],
        settings: &str,
    ) -> anyhow::Result<Fixture> {
        let client = client().await?;
        let namespace = TestNamespace::create(&client, prefix).await?;
        let scratch = Scratch::new(prefix)?;
        let node = SimNode::create(&client, &scratch, labels, settings).await?;
        Ok(Fixture {
            client,
            namespace,
            node,
            scratch,
            pools: Vec::new(),
        })
    }

    async fn pool(&mut self, prefix: &str, spec: Value) -> anyhow::Result<String> {
        let name = create_pool(&self.client, prefix, spec).await?;
        self.pools.push(name.clone());
        Ok(name)
    }

    async fn pod(&self, name: &str, annotations: &[(&str, &str)]) -> anyhow::Result<PodRef> {
        let pod = create_pod(
            &self.client,
            &self.namespace.name,
            name,
            &self.node.name,
            annotations,
            &[("app", name)],
        )
        .await?;
        Ok(PodRef::of(&pod))
    }

    fn conf(&self, ipam: Value) -> Value {
        netconf("1.0.0", &self.node, ipam)
    }

    async fn add(&self, pod: &PodRef, ifname: &str) -> anyhow::Result<Output> {
        cni("ADD", pod, ifname, &self.conf(json!({}))).await
    }

    async fn del(&self, pod: &PodRef, ifname: &str) -> anyhow::Result<Output> {
        cni("DEL", pod, ifname, &self.conf(json!({}))).await
    }

    async fn records(&self, pool: &str) -> anyhow::Result<BTreeMap<String, (String, String)>> {
        pool_records(&self.client, pool).await
    }

    /// The plugin log, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.node.log).unwrap_or_default()
    }

    /// Checks the namespace's invariants, then removes what the test made.
    async fn finish(self) -> anyhow::Result<()> {
        spiderpool_e2e::invariants::assert_consistent(&self.client, &self.namespace.name).await?;
        self.clean_up().await
    }

    async fn clean_up(self) -> anyhow::Result<()> {
        release_endpoints(&self.client, &self.namespace.name).await?;
        delete_pools(&self.client, &self.pools).await;
        self.node.delete(&self.client).await?;
        self.namespace.delete().await
    }
}

#[tokio::test]
async fn add_prints_the_result_of_each_cni_version_and_records_the_pod() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-versions").await?;
    let third = octet();
    let mut spec = v4_pool(third, "10-20");
    spec["routes"] = json!([{"dst": "172.30.0.0/16", "gw": format!("10.{third}.0.1")}]);
    let pool = fixture.pool("versions", spec).await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);

    let mut expected_ips = Vec::new();
    for (index, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"].iter().enumerate() {
        let pod = fixture
            .pod(&format!("pod-{index}"), &[(IPPOOL, &annotation)])
            .await?;
        let output = cni(
            "ADD",
            &pod,
            "eth0",
            &netconf(version, &fixture.node, json!({})),
        )
        .await?;
        let result = output.result()?;
        let address = format!("10.{third}.0.{}/24", 10 + index);
        let mut ip = json!({"address": address, "gateway": format!("10.{third}.0.1")});
        if *version != "1.0.0" {
            ip["version"] = json!("4");
        }
        assert_eq!(
            result,
            json!({
                "cniVersion": version,
                "ips": [ip],
                "routes": [
                    {"dst": "172.30.0.0/16", "gw": format!("10.{third}.0.1")},
                    {"dst": "0.0.0.0/0", "gw": format!("10.{third}.0.1")},
                ],
                "dns": {},
            }),
            "CNI {version}"
        );
        expected_ips.push((format!("10.{third}.0.{}", 10 + index), pod));

        let check = cni(
            "CHECK",
            &expected_ips[index].1,
            "eth0",
            &fixture.conf(json!({})),
        )
        .await?;
        assert!(check.success && check.stdout.is_empty(), "{check:?}");
    }

    let records = fixture.records(&pool).await?;
    assert_eq!(records.len(), 4);
    for (ip, pod) in &expected_ips {
        assert_eq!(
            records.get(ip),
            Some(&(format!("{}/{}", pod.namespace, pod.name), pod.uid.clone()))
        );
    }
    // The endpoint of the last pod: named after it, finalizer, owned by the pod (plain owner ref).
    let pod = &expected_ips[3].1;
    let endpoint = endpoint(&fixture.client, &pod.namespace, &pod.name)
        .await?
        .expect("endpoint exists");
    assert_eq!(
        endpoint.metadata.finalizers,
        Some(vec!["spiderpool.spidernet.io".to_string()])
    );
    let owner = &endpoint.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Pod", pod.name.as_str(), pod.uid.as_str())
    );
    assert_eq!(owner.controller, None);
    let status = endpoint.status.expect("status");
    assert_eq!(status.current.uid, pod.uid);
    assert_eq!(status.current.node, fixture.node.name);
    assert_eq!(status.owner_controller_type, "Pod");
    assert_eq!(status.owner_controller_name, pod.name);
    let entry = &status.current.ips[0];
    assert_eq!(entry.nic, "eth0");
    assert_eq!(
        entry.ipv4.as_deref(),
        Some(format!("10.{third}.0.13/24").as_str())
    );
    assert_eq!(entry.ipv4_pool.as_deref(), Some(pool.as_str()));
    assert_eq!(
        entry.ipv4_gateway.as_deref(),
        Some(format!("10.{third}.0.1").as_str())
    );
    assert_eq!(entry.clean_gateway, Some(false));
    assert_eq!(entry.vlan, Some(0));

    let version = cni("VERSION", pod, "eth0", &json!({})).await?;
    assert_eq!(
        version.result()?["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    fixture.finish().await
}

#[tokio::test]
async fn pool_sources_follow_upstream_precedence() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-precedence").await?;
    let third = octet();
    let ippools = fixture.pool("src-ippools", v4_pool(third, "10")).await?;
    let ippool = fixture.pool("src-ippool", v4_pool(third, "20")).await?;
    let namespace_pool = fixture.pool("src-ns", v4_pool(third, "30")).await?;
    let config_pool = fixture.pool("src-conf", v4_pool(third, "40")).await?;
    let mut cluster_spec = v4_pool(third, "50");
    cluster_spec["default"] = json!(true);
    // Only pods of this test's namespaces may use this cluster default pool.
    let other_namespace = TestNamespace::create(&fixture.client, "ipam-precedence-plain").await?;
    cluster_spec["namespaceName"] = json!([fixture.namespace.name, other_namespace.name]);
    let cluster_pool = fixture.pool("src-default", cluster_spec).await?;

    patch_namespace(
        &fixture.client,
        &fixture.namespace.name,
        json!({"annotations": {
            "ipam.spidernet.io/default-ipv4-ippool": format!(r#"["{namespace_pool}"]"#),
        }}),
    )
    .await?;
    let config = fixture.conf(json!({"default_ipv4_ippool": [config_pool]}));
    let ippools_value = format!(r#"[{{"interface":"eth0","ipv4":["{ippools}"]}}]"#);
    let ippool_value = format!(r#"{{"ipv4":["{ippool}"]}}"#);

    // G85: every source present, only `ippools` is used.
    let all = fixture
        .pod("all", &[(IPPOOLS, &ippools_value), (IPPOOL, &ippool_value)])
        .await?;
    let output = cni("ADD", &all, "eth0", &config).await?;
    assert_eq!(output.addresses()?, vec![format!("10.{third}.0.10/24")]);
    let single = fixture.pod("single", &[(IPPOOL, &ippool_value)]).await?;
    let output = cni("ADD", &single, "eth0", &config).await?;
    assert_eq!(output.addresses()?, vec![format!("10.{third}.0.20/24")]);
    let namespaced = fixture.pod("namespaced", &[]).await?;
    let output = cni("ADD", &namespaced, "eth0", &config).await?;
    assert_eq!(output.addresses()?, vec![format!("10.{third}.0.30/24")]);

    // A namespace without default pools: the network configuration, then the cluster default.
    let plain = create_pod(
        &fixture.client,
        &other_namespace.name,
        "plain",
        &fixture.node.name,
        &[],
        &[],
    )
    .await?;
    let plain = PodRef::of(&plain);
    let output = cni("ADD", &plain, "eth0", &config).await?;
    assert_eq!(output.addresses()?, vec![format!("10.{third}.0.40/24")]);
    let fallback = create_pod(
        &fixture.client,
        &other_namespace.name,
        "fallback",
        &fixture.node.name,
        &[],
        &[],
    )
    .await?;
    let fallback = PodRef::of(&fallback);
    let output = cni("ADD", &fallback, "eth0", &fixture.conf(json!({}))).await?;
    assert_eq!(output.addresses()?, vec![format!("10.{third}.0.50/24")]);

    for (pool, pod) in [
        (&ippools, &all),
        (&ippool, &single),
        (&namespace_pool, &namespaced),
        (&config_pool, &plain),
        (&cluster_pool, &fallback),
    ] {
        let records = fixture.records(pool).await?;
        assert_eq!(records.len(), 1, "pool {pool}: {records:?}");
        assert_eq!(records.values().next().map(|r| &r.1), Some(&pod.uid));
    }
    other_namespace.delete().await?;
    fixture.finish().await
}

#[tokio::test]
async fn invalid_annotations_fail_clearly_and_allocate_nothing() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-invalid").await?;
    let third = octet();
    let pool = fixture.pool("invalid", v4_pool(third, "10-20")).await?;
    // (pod name, annotations, expected code, expected message prefix)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, u64, String);
    let cases: Vec<Case> = vec![
        (
            "broken-json",
            vec![(IPPOOL, "{\"ipv4\": [".to_string())],
            110,
            "spiderpool IP allocation error: wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippool': ".to_string(),
        ),
        (
            "missing-nic",
            vec![(IPPOOLS, format!(r#"[{{"interface":"net1","ipv4":["{pool}"]}}]"#))],
            110,
            "spiderpool IP allocation error: wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippools': interface eth0 must be specified".to_string(),
        ),
        (
            "bad-route",
            vec![
                (IPPOOL, format!(r#"{{"ipv4":["{pool}"]}}"#)),
                ("ipam.spidernet.io/routes", r#"[{"dst":"10.0.0.0/8","gw":"fd00::1"}]"#.to_string()),
            ],
            110,
            "spiderpool IP allocation error: wrong input, invalid format of Pod annotation 'ipam.spidernet.io/routes': invalid route format".to_string(),
        ),
        (
            "ghost-pool",
            vec![(IPPOOL, r#"{"ipv4":["no-such-pool-e2e"]}"#.to_string())],
            111,
            "spiderpool IP allocation error: failed to get original IPPool no-such-pool-e2e: spiderippools.spiderpool.spidernet.io \"no-such-pool-e2e\" not found".to_string(),
        ),
        (
            "duplicate-pool",
            vec![(IPPOOL, format!(r#"{{"ipv4":["{pool}","{pool}"]}}"#))],
            111,
            format!("spiderpool IP allocation error: wrong input, duplicate IPPool {pool} specified for NIC eth0"),
        ),
    ];
    for (name, annotations, code, message) in &cases {
        let annotations: Vec<(&str, &str)> = annotations
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        let pod = fixture.pod(name, &annotations).await?;
        let output = fixture.add(&pod, "eth0").await?;
        let (actual_code, msg) = output.error()?;
        assert_eq!(actual_code, *code, "{name}: {msg}");
        assert!(msg.starts_with(message.as_str()), "{name}: {msg}");
        let value = output.json()?;
        assert_eq!(value["cniVersion"], "1.0.0");
        assert!(
            !value["details"].as_str().unwrap_or_default().is_empty(),
            "{name}: a hint is given"
        );
        assert!(
            endpoint(&fixture.client, &pod.namespace, &pod.name)
                .await?
                .is_none()
        );
    }
    assert!(fixture.records(&pool).await?.is_empty());

    // Plugin-level input errors use the spec codes.
    let pod = fixture.pod("versionless", &[]).await?;
    let output = cni(
        "ADD",
        &pod,
        "eth0",
        &netconf("0.2.0", &fixture.node, json!({})),
    )
    .await?;
    assert_eq!(output.error()?.0, 1);
    let anonymous = PodRef {
        namespace: String::new(),
        name: String::new(),
        uid: "x".into(),
    };
    let output = fixture.add(&anonymous, "eth0").await?;
    assert_eq!(output.error()?.0, 4);
    fixture.finish().await
}

#[tokio::test]
async fn multi_nic_annotation_allocates_every_nic_on_the_first_add() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-multinic").await?;
    let third = octet();
    let eth0_pool = fixture.pool("eth0", v4_pool(third, "10-20")).await?;
    let mut net1_spec = v4_pool(third.wrapping_add(1), "10-20");
    net1_spec["routes"] =
        json!([{"dst": "192.168.0.0/16", "gw": format!("10.{}.0.1", third.wrapping_add(1))}]);
    let net1_pool = fixture.pool("net1", net1_spec).await?;
    let annotation = format!(
        r#"[{{"interface":"eth0","ipv4":["{eth0_pool}"]}},{{"interface":"net1","ipv4":["{net1_pool}"],"cleangateway":true}}]"#
    );
    let networks = format!("{}/macvlan-net1", fixture.namespace.name);
    let pod = fixture
        .pod("multi", &[(IPPOOLS, &annotation), (NETWORKS, &networks)])
        .await?;

    let eth0 = fixture.add(&pod, "eth0").await?;
    assert_eq!(eth0.addresses()?, vec![format!("10.{third}.0.10/24")]);
    // Both NICs are recorded after the first ADD.
    assert_eq!(fixture.records(&eth0_pool).await?.len(), 1);
    assert_eq!(fixture.records(&net1_pool).await?.len(), 1);
    let stored = endpoint(&fixture.client, &pod.namespace, &pod.name)
        .await?
        .and_then(|endpoint| endpoint.status)
        .expect("endpoint");
    let nics: Vec<&str> = stored
        .current
        .ips
        .iter()
        .map(|entry| entry.nic.as_str())
        .collect();
    assert_eq!(nics, vec!["eth0", "net1"]);

    let net1 = fixture.add(&pod, "net1").await?.result()?;
    let second = third.wrapping_add(1);
    assert_eq!(
        net1,
        json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": format!("10.{second}.0.10/24"), "gateway": format!("10.{second}.0.1")}],
            // cleangateway: the pool route only, no default route.
            "routes": [{"dst": "192.168.0.0/16", "gw": format!("10.{second}.0.1")}],
            "dns": {},
        })
    );
    assert_eq!(fixture.records(&net1_pool).await?.len(), 1);

    // DEL of one NIC releases every NIC of the pod.
    delete_pod_now(&fixture.client, &pod.namespace, &pod.name).await?;
    assert!(fixture.del(&pod, "eth0").await?.success);
    assert!(fixture.records(&eth0_pool).await?.is_empty());
    assert!(fixture.records(&net1_pool).await?.is_empty());
    assert!(fixture.del(&pod, "net1").await?.success);
    fixture.finish().await
}

#[tokio::test]
async fn a_nic_without_free_address_fails_the_add_and_leaks_nothing() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-partial").await?;
    let third = octet();
    let eth0_pool = fixture
        .pool("partial-eth0", v4_pool(third, "10-20"))
        .await?;
    // One address, excluded: nothing to hand out.
    let mut full = v4_pool(third.wrapping_add(1), "10");
    full["excludeIPs"] = json!([format!("10.{}.0.10", third.wrapping_add(1))]);
    let net1_pool = fixture.pool("partial-net1", full).await?;
    let annotation = format!(
        r#"[{{"interface":"eth0","ipv4":["{eth0_pool}"]}},{{"interface":"net1","ipv4":["{net1_pool}"]}}]"#
    );
    let networks = format!("{}/macvlan-net1", fixture.namespace.name);
    let pod = fixture
        .pod("partial", &[(IPPOOLS, &annotation), (NETWORKS, &networks)])
        .await?;
    let output = fixture.add(&pod, "eth0").await?;
    let (code, msg) = output.error()?;
    assert_eq!(code, 113, "{msg}");
    assert_eq!(
        msg,
        format!(
            "spiderpool IP allocation error: failed to allocate any IPv4 IP address to NIC net1 from IPPools [{net1_pool}]: all IP addresses used out"
        )
    );
    assert!(
        fixture.records(&eth0_pool).await?.is_empty(),
        "eth0's address was given back"
    );
    assert!(fixture.records(&net1_pool).await?.is_empty());
    assert!(
        endpoint(&fixture.client, &pod.namespace, &pod.name)
            .await?
            .is_none()
    );
    // The runtime then calls DEL, which succeeds with nothing to release.
    assert!(fixture.del(&pod, "eth0").await?.success);
    fixture.finish().await
}

#[tokio::test]
async fn exhausted_pools_are_named_in_the_error() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-exhaust").await?;
    let third = octet();
    let small = fixture.pool("small", v4_pool(third, "10-11")).await?;
    let tiny = fixture
        .pool("tiny", v4_pool(third.wrapping_add(1), "10"))
        .await?;
    let annotation = format!(r#"{{"ipv4":["{small}","{tiny}"]}}"#);
    let mut addresses = Vec::new();
    for index in 0..3 {
        let pod = fixture
            .pod(&format!("p{index}"), &[(IPPOOL, &annotation)])
            .await?;
        addresses.extend(fixture.add(&pod, "eth0").await?.addresses()?);
    }
    // The first pool is used up before the second is tried.
    assert_eq!(
        addresses,
        vec![
            format!("10.{third}.0.10/24"),
            format!("10.{third}.0.11/24"),
            format!("10.{}.0.10/24", third.wrapping_add(1)),
        ]
    );
    let pod = fixture.pod("p3", &[(IPPOOL, &annotation)]).await?;
    let (code, msg) = fixture.add(&pod, "eth0").await?.error()?;
    assert_eq!(code, 113);
    assert_eq!(
        msg,
        format!(
            "spiderpool IP allocation error: failed to allocate any IPv4 IP address to NIC eth0 from IPPools [{small} {tiny}]: all IP addresses used out"
        )
    );
    fixture.finish().await
}

#[tokio::test]
async fn repeated_add_returns_the_same_addresses() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-idempotent").await?;
    let third = octet();
    let pool = fixture.pool("idem", v4_pool(third, "10-20")).await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);
    let pod = fixture.pod("again", &[(IPPOOL, &annotation)]).await?;
    let first = fixture.add(&pod, "eth0").await?.result()?;
    let second = fixture.add(&pod, "eth0").await?.result()?;
    assert_eq!(first, second);
    let records = fixture.records(&pool).await?;
    assert_eq!(records.len(), 1);
    assert!(
        fixture.log().contains("source=Existing"),
        "{}",
        fixture.log()
    );
    fixture.finish().await
}

#[tokio::test]
async fn del_keeps_live_pods_releases_gone_ones_and_is_idempotent() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-del").await?;
    let third = octet();
    let v4 = fixture.pool("del-v4", v4_pool(third, "10-20")).await?;
    let v6 = fixture
        .pool("del-v6", v6_pool(u16::from(third), "10-20"))
        .await?;
    let annotation = format!(r#"{{"ipv4":["{v4}"],"ipv6":["{v6}"]}}"#);

    // A live pod keeps its addresses for its next sandbox.
    let live = fixture.pod("live", &[(IPPOOL, &annotation)]).await?;
    fixture.add(&live, "eth0").await?.result()?;
    assert!(fixture.del(&live, "eth0").await?.success);
    assert_eq!(fixture.records(&v4).await?.len(), 1);
    assert_eq!(fixture.records(&v6).await?.len(), 1);

    // Terminating (graceful deletion without kubelet): released, endpoint finalizer removed.
    terminate_pod(&fixture.client, &live.namespace, &live.name).await?;
    assert!(fixture.del(&live, "eth0").await?.success);
    assert!(fixture.records(&v4).await?.is_empty());
    assert!(fixture.records(&v6).await?.is_empty());
    let endpoint_left = endpoint(&fixture.client, &live.namespace, &live.name).await?;
    assert!(
        endpoint_left
            .as_ref()
            .is_none_or(|endpoint| endpoint.finalizers().is_empty()),
        "{endpoint_left:?}"
    );
    delete_pod_now(&fixture.client, &live.namespace, &live.name).await?;

    // Gone pod: released through K8S_POD_UID; DEL again succeeds and changes nothing.
    let gone = fixture.pod("gone", &[(IPPOOL, &annotation)]).await?;
    let addresses = fixture.add(&gone, "eth0").await?.addresses()?;
    assert_eq!(addresses.len(), 2);
    delete_pod_now(&fixture.client, &gone.namespace, &gone.name).await?;
    assert!(fixture.del(&gone, "eth0").await?.success);
    assert!(fixture.records(&v4).await?.is_empty());
    assert!(fixture.records(&v6).await?.is_empty());
    wait_for("endpoint removal", TIMEOUT, || async {
        Ok(endpoint(&fixture.client, &gone.namespace, &gone.name)
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    for _ in 0..2 {
        let again = fixture.del(&gone, "eth0").await?;
        assert!(again.success && again.stdout.is_empty(), "{again:?}");
    }
    fixture.finish().await
}

#[tokio::test]
async fn unreachable_api_server_asks_the_runtime_to_retry() -> anyhow::Result<()> {
    let fixture = Fixture::new("ipam-unreachable").await?;
    let pod = fixture.pod("lonely", &[]).await?;
    // A kubeconfig whose server is a closed port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    let original = std::fs::read_to_string(spiderpool_e2e::kubeconfig_path())?;
    let rewritten: String = original
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("server:") {
                format!("    server: https://127.0.0.1:{port}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let kubeconfig = fixture.scratch.dir.join("closed.kubeconfig");
    std::fs::write(&kubeconfig, rewritten)?;
    let config = fixture.conf(json!({"kubeconfig": kubeconfig}));
    let (code, msg) = cni("ADD", &pod, "eth0", &config).await?.error()?;
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("API server unavailable"), "{msg}");
    let (code, _) = cni("DEL", &pod, "eth0", &config).await?.error()?;
    assert_eq!(code, 11);
    // CNI 1.1.0 STATUS: not available without the API server, available with it; GC is a no-op.
    let mut status_config = netconf("1.1.0", &fixture.node, json!({"kubeconfig": kubeconfig}));
    let (code, msg) = cni("STATUS", &pod, "eth0", &status_config).await?.error()?;
    assert_eq!(code, 50, "{msg}");
    status_config["ipam"]["kubeconfig"] = json!(spiderpool_e2e::kubeconfig_path());
    let status = cni("STATUS", &pod, "eth0", &status_config).await?;
    assert!(status.success && status.stdout.is_empty(), "{status:?}");
    let gc = cni("GC", &pod, "eth0", &status_config).await?;
    assert!(gc.success, "{gc:?}");
    // A missing kubeconfig is named.
    let config = fixture.conf(json!({"kubeconfig": "/nonexistent/spiderpool.kubeconfig"}));
    let (code, msg) = cni("ADD", &pod, "eth0", &config).await?.error()?;
    assert_eq!(code, 100);
    assert!(msg.contains("/nonexistent/spiderpool.kubeconfig"), "{msg}");
    fixture.finish().await
}

#[tokio::test]
async fn affinity_filters_skip_pools_and_explain_why() -> anyhow::Result<()> {
    let mut fixture = Fixture::with_node("ipam-affinity", &[("zone", "blue")], "").await?;
    let third = octet();
    let mut other_node = v4_pool(third, "10-20");
    other_node["nodeName"] = json!(["some-other-node"]);
    let other_node = fixture.pool("aff-node", other_node).await?;
    let mut other_namespace = v4_pool(third, "10-20");
    other_namespace["namespaceName"] = json!(["some-other-namespace"]);
    let other_namespace = fixture.pool("aff-ns", other_namespace).await?;
    let mut other_pods = v4_pool(third, "10-20");
    other_pods["podAffinity"] = json!({"matchLabels": {"app": "someone-else"}});
    let other_pods = fixture.pool("aff-pod", other_pods).await?;
    let mut red_nodes = v4_pool(third, "10-20");
    red_nodes["nodeAffinity"] = json!({"matchLabels": {"zone": "red"}});
    let red_nodes = fixture.pool("aff-red", red_nodes).await?;
    let mut blue_nodes = v4_pool(third.wrapping_add(1), "10-20");
    blue_nodes["nodeAffinity"] = json!({"matchLabels": {"zone": "blue"}});
    let blue_nodes = fixture.pool("aff-blue", blue_nodes).await?;
    let mut my_pods = v4_pool(third.wrapping_add(2), "10-20");
    my_pods["podAffinity"] = json!({"matchLabels": {"app": "matched"}});
    my_pods["namespaceName"] = json!([fixture.namespace.name]);
    let my_pods = fixture.pool("aff-mine", my_pods).await?;

    let annotation =
        format!(r#"{{"ipv4":["{other_node}","{other_namespace}","{other_pods}","{red_nodes}"]}}"#);
    let pod = fixture.pod("filtered", &[(IPPOOL, &annotation)]).await?;
    let (code, msg) = fixture.add(&pod, "eth0").await?.error()?;
    assert_eq!(code, 112, "{msg}");
    assert_eq!(
        msg,
        format!(
            "spiderpool IP allocation error: no IPPool available, all IPv4 IPPools [{other_node} {other_namespace} {other_pods} {red_nodes}] of eth0 filtered out: [unmatched Node name of IPPool {other_node}, unmatched Namespace name of IPPool {other_namespace}, unmatched Pod affinity of IPPool {other_pods}, unmatched Node affinity of IPPool {red_nodes}]"
        )
    );

    // A matching pool among non-matching ones is used; the node-affinity pool outranks others.
    let annotation = format!(r#"{{"ipv4":["{other_node}","{blue_nodes}"]}}"#);
    let pod = fixture.pod("blue", &[(IPPOOL, &annotation)]).await?;
    assert_eq!(
        fixture.add(&pod, "eth0").await?.addresses()?,
        vec![format!("10.{}.0.10/24", third.wrapping_add(1))]
    );
    let annotation = format!(r#"{{"ipv4":["{blue_nodes}","{my_pods}"]}}"#);
    let pod = create_pod(
        &fixture.client,
        &fixture.namespace.name,
        "matched",
        &fixture.node.name,
        &[(IPPOOL, &annotation)],
        &[("app", "matched")],
    )
    .await?;
    let pod = PodRef::of(&pod);
    // Pod affinity ranks first (ByPoolPriority), even though listed second.
    assert_eq!(
        fixture.add(&pod, "eth0").await?.addresses()?,
        vec![format!("10.{}.0.10/24", third.wrapping_add(2))]
    );
    for pool in [&other_node, &other_namespace, &other_pods, &red_nodes] {
        assert!(fixture.records(pool).await?.is_empty());
    }
    fixture.finish().await
}

#[tokio::test]
async fn excluded_and_reserved_addresses_are_never_handed_out() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-reserved").await?;
    // Reservations apply to every pool: an octet no other test uses (they take 20-249).
    let third: u8 = rand::random_range(2..20);
    let mut spec = v4_pool(third, "10-15");
    spec["excludeIPs"] = json!([format!("10.{third}.0.10"), format!("10.{third}.0.13")]);
    let pool = fixture.pool("reserved", spec).await?;
    let reserved = create_reserved(
        &fixture.client,
        4,
        &[&format!("10.{third}.0.11-10.{third}.0.12")],
    )
    .await?;
    // The plugin reads reservations from the API server's cache: wait until it has this one.
    let reservations: Api<SpiderReservedIP> = Api::all(fixture.client.clone());
    wait_for("the reservation in the cache", TIMEOUT, || async {
        let cached = reservations
            .list(&ListParams::default().match_any())
            .await?;
        Ok(cached
            .items
            .iter()
            .any(|item| item.name_any() == reserved)
            .then_some(()))
    })
    .await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);
    let mut handed_out = BTreeSet::new();
    for index in 0..3 {
        let pod = fixture
            .pod(&format!("r{index}"), &[(IPPOOL, &annotation)])
            .await?;
        let output = fixture.add(&pod, "eth0").await?;
        if index < 2 {
            handed_out.extend(output.addresses()?);
        } else {
            assert_eq!(output.error()?.0, 113);
        }
    }
    assert_eq!(
        handed_out,
        BTreeSet::from([format!("10.{third}.0.14/24"), format!("10.{third}.0.15/24")])
    );
    delete_reserved(&fixture.client, &reserved).await;
    fixture.finish().await
}

#[tokio::test]
async fn dual_stack_pods_get_both_families_and_ipv4_only_pods_one() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-dual").await?;
    let third = octet();
    let v4 = fixture.pool("dual-v4", v4_pool(third, "10-20")).await?;
    let v6 = fixture
        .pool("dual-v6", v6_pool(u16::from(third), "10-20"))
        .await?;
    let dual = format!(r#"{{"ipv4":["{v4}"],"ipv6":["{v6}"]}}"#);
    let pod = fixture.pod("dual", &[(IPPOOL, &dual)]).await?;
    let result = cni(
        "ADD",
        &pod,
        "eth0",
        &netconf("0.4.0", &fixture.node, json!({})),
    )
    .await?
    .result()?;
    assert_eq!(
        result["ips"],
        json!([
            {"version": "4", "address": format!("10.{third}.0.10/24"), "gateway": format!("10.{third}.0.1")},
            {"version": "6", "address": format!("fd00:{third:x}::10/64"), "gateway": format!("fd00:{third:x}::1")},
        ])
    );
    assert_eq!(
        result["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": format!("10.{third}.0.1")},
            {"dst": "::/0", "gw": format!("fd00:{third:x}::1")},
        ])
    );
    let status = endpoint(&fixture.client, &pod.namespace, &pod.name)
        .await?
        .and_then(|endpoint| endpoint.status)
        .expect("endpoint");
    assert_eq!(
        status.current.ips[0].ipv6_pool.as_deref(),
        Some(v6.as_str())
    );

    let v4_only = format!(r#"{{"ipv4":["{v4}"]}}"#);
    let pod = fixture.pod("v4only", &[(IPPOOL, &v4_only)]).await?;
    assert_eq!(
        fixture.add(&pod, "eth0").await?.addresses()?,
        vec![format!("10.{third}.0.11/24")]
    );
    assert_eq!(fixture.records(&v6).await?.len(), 1);

    // IPv6 disabled in the cluster settings: a dual-stack annotation yields IPv4 only.
    let node = SimNode::create(&fixture.client, &fixture.scratch, &[], "enableIPv6: false").await?;
    let pod = create_pod(
        &fixture.client,
        &fixture.namespace.name,
        "v6off",
        &node.name,
        &[(IPPOOL, &dual)],
        &[],
    )
    .await?;
    let pod = PodRef::of(&pod);
    let output = cni("ADD", &pod, "eth0", &netconf("1.0.0", &node, json!({}))).await?;
    assert_eq!(output.addresses()?, vec![format!("10.{third}.0.12/24")]);
    node.delete(&fixture.client).await?;
    fixture.finish().await
}

#[tokio::test]
async fn statefulset_pod_recreated_with_the_same_name_keeps_its_address() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-sts").await?;
    let third = octet();
    let pool = fixture.pool("sts", v4_pool(third, "10-20")).await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);
    let statefulsets: Api<StatefulSet> =
        Api::namespaced(fixture.client.clone(), &fixture.namespace.name);
    let statefulset: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "serviceName": "web",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {IPPOOL: annotation}},
                "spec": {
                    "nodeName": fixture.node.name,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                },
            },
        },
    }))?;
    statefulsets
        .create(&PostParams::default(), &statefulset)
        .await?;
    let pods: Api<Pod> = Api::namespaced(fixture.client.clone(), &fixture.namespace.name);
    let first = wait_for("web-0", Duration::from_secs(60), || async {
        Ok(pods.get_opt("web-0").await?)
    })
    .await?;
    let first = PodRef::of(&first);
    let address = fixture.add(&first, "eth0").await?.addresses()?;
    let stored = endpoint(&fixture.client, &first.namespace, "web-0")
        .await?
        .expect("endpoint");
    assert!(
        stored.owner_references().is_empty(),
        "StatefulSet endpoints have no owner"
    );
    let status = stored.status.expect("status");
    assert_eq!(
        (
            status.owner_controller_type.as_str(),
            status.owner_controller_name.as_str()
        ),
        ("StatefulSet", "web")
    );

    // The pod goes; its DEL keeps the address for the re-created pod.
    delete_pod_now(&fixture.client, &first.namespace, "web-0").await?;
    assert!(fixture.del(&first, "eth0").await?.success);
    assert_eq!(fixture.records(&pool).await?.len(), 1);
    let second = wait_for("re-created web-0", Duration::from_secs(60), || async {
        Ok(pods
            .get_opt("web-0")
            .await?
            .filter(|pod| pod.uid().as_deref() != Some(first.uid.as_str())))
    })
    .await?;
    let second = PodRef::of(&second);
    assert_eq!(fixture.add(&second, "eth0").await?.addresses()?, address);
    let records = fixture.records(&pool).await?;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records.values().next().map(|record| &record.1),
        Some(&second.uid)
    );
    let status = endpoint(&fixture.client, &second.namespace, "web-0")
        .await?
        .and_then(|endpoint| endpoint.status)
        .expect("endpoint");
    assert_eq!(status.current.uid, second.uid);
    assert!(fixture.log().contains("source=StatefulSet"));

    // Scaled to zero: the member is no longer valid and DEL releases everything.
    statefulsets
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await?;
    delete_pod_now(&fixture.client, &second.namespace, "web-0").await?;
    assert!(fixture.del(&second, "eth0").await?.success);
    assert!(fixture.records(&pool).await?.is_empty());
    assert!(
        endpoint(&fixture.client, &second.namespace, "web-0")
            .await?
            .is_none()
    );
    statefulsets.delete("web", &DeleteParams::default()).await?;
    fixture.finish().await
}

#[tokio::test]
async fn deployment_pods_name_their_deployment_and_a_recreated_pod_gets_a_fresh_record()
-> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-deploy").await?;
    let third = octet();
    let pool = fixture.pool("deploy", v4_pool(third, "10-20")).await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);

    // A real Deployment: the plugin resolves Pod -> ReplicaSet -> Deployment.
    let deployments: Api<Deployment> =
        Api::namespaced(fixture.client.clone(), &fixture.namespace.name);
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nginx"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}, "annotations": {IPPOOL: annotation}},
                "spec": {
                    "nodeName": fixture.node.name,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                },
            },
        },
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(fixture.client.clone(), &fixture.namespace.name);
    let managed = wait_for("deployment pod", Duration::from_secs(60), || async {
        Ok(pods
            .list(&ListParams::default().labels("app=nginx"))
            .await?
            .items
            .into_iter()
            .next())
    })
    .await?;
    let managed = PodRef::of(&managed);
    fixture.add(&managed, "eth0").await?.result()?;
    let status = endpoint(&fixture.client, &managed.namespace, &managed.name)
        .await?
        .and_then(|endpoint| endpoint.status)
        .expect("endpoint");
    assert_eq!(
        (
            status.owner_controller_type.as_str(),
            status.owner_controller_name.as_str()
        ),
        ("Deployment", "nginx")
    );
    deployments
        .delete("nginx", &DeleteParams::default())
        .await?;
    delete_pod_now(&fixture.client, &managed.namespace, &managed.name).await?;
    assert!(fixture.del(&managed, "eth0").await?.success);

    // The same name re-created (a new UID): a fresh record; the old one goes with the old DEL.
    let name = unique_name("same");
    let old = fixture.pod(&name, &[(IPPOOL, &annotation)]).await?;
    let old_address = fixture.add(&old, "eth0").await?.addresses()?;
    delete_pod_now(&fixture.client, &old.namespace, &name).await?;
    let new = fixture.pod(&name, &[(IPPOOL, &annotation)]).await?;
    assert_ne!(old.uid, new.uid);
    let new_address = fixture.add(&new, "eth0").await?.addresses()?;
    assert_ne!(old_address, new_address, "the old record is still held");
    let status = endpoint(&fixture.client, &new.namespace, &name)
        .await?
        .and_then(|endpoint| endpoint.status)
        .expect("endpoint");
    assert_eq!(status.current.uid, new.uid);
    let holders = |records: &BTreeMap<String, (String, String)>| -> BTreeSet<String> {
        records.values().map(|record| record.1.clone()).collect()
    };
    let records = fixture.records(&pool).await?;
    assert!(holders(&records).contains(&old.uid) && holders(&records).contains(&new.uid));
    // The old sandbox's DEL frees only the old pod's record.
    assert!(fixture.del(&old, "eth0").await?.success);
    let records = fixture.records(&pool).await?;
    assert!(!holders(&records).contains(&old.uid), "{records:?}");
    assert!(holders(&records).contains(&new.uid), "{records:?}");
    fixture.finish().await
}

#[tokio::test]
async fn job_pods_of_a_cronjob_name_their_cronjob() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-cronjob").await?;
    let third = octet();
    let pool = fixture.pool("cron", v4_pool(third, "10-20")).await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);
    let namespace = fixture.namespace.name.clone();
    let template = json!({
        "metadata": {"labels": {"app": "nightly"}, "annotations": {IPPOOL: annotation}},
        "spec": {
            "nodeName": fixture.node.name,
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    });
    // A CronJob that never fires and a Job it controls, as its schedule would create one;
    // kube-controller-manager makes the pod and the plugin resolves Pod -> Job -> CronJob.
    let cronjobs: Api<CronJob> = Api::namespaced(fixture.client.clone(), &namespace);
    let cronjob: CronJob = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 0 1 1 *", "suspend": true, "jobTemplate": {"spec": {"template": template}}},
    }))?;
    let cronjob = cronjobs.create(&PostParams::default(), &cronjob).await?;
    let jobs: Api<Job> = Api::namespaced(fixture.client.clone(), &namespace);
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "nightly-1", "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly",
            "uid": cronjob.uid().unwrap_or_default(), "controller": true,
        }]},
        "spec": {"template": template},
    }))?;
    jobs.create(&PostParams::default(), &job).await?;
    let pods: Api<Pod> = Api::namespaced(fixture.client.clone(), &namespace);
    let managed = wait_for("job pod", Duration::from_secs(60), || async {
        Ok(pods
            .list(&ListParams::default().labels("app=nightly"))
            .await?
            .items
            .into_iter()
            .next())
    })
    .await?;
    let managed = PodRef::of(&managed);
    fixture.add(&managed, "eth0").await?.result()?;
    let status = endpoint(&fixture.client, &managed.namespace, &managed.name)
        .await?
        .and_then(|endpoint| endpoint.status)
        .expect("endpoint");
    assert_eq!(
        (
            status.owner_controller_type.as_str(),
            status.owner_controller_name.as_str()
        ),
        ("CronJob", "nightly")
    );
    cronjobs
        .delete("nightly", &DeleteParams::background())
        .await?;
    delete_pod_now(&fixture.client, &managed.namespace, &managed.name).await?;
    assert!(fixture.del(&managed, "eth0").await?.success);
    fixture.finish().await
}

/// Runs ADD for every pod at once and returns the addresses in pod order.
async fn concurrent_adds(pods: &[(PodRef, Value)]) -> anyhow::Result<Vec<String>> {
    let mut tasks = Vec::new();
    for (pod, config) in pods {
        let (pod, config) = (pod.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            cni("ADD", &pod, "eth0", &config).await
        }));
    }
    let mut addresses = Vec::new();
    for task in tasks {
        let output = task.await??;
        let mut pod_addresses = output.addresses()?;
        anyhow::ensure!(pod_addresses.len() == 1, "{output:?}");
        addresses.push(pod_addresses.remove(0));
    }
    Ok(addresses)
}

async fn create_pods(
    client: &Client,
    namespace: &str,
    count: usize,
    nodes: &[&SimNode],
    annotation: &str,
) -> anyhow::Result<Vec<(PodRef, Value)>> {
    let mut pods = Vec::new();
    for index in 0..count {
        let node = nodes[index % nodes.len()];
        let pod = create_pod(
            client,
            namespace,
            &format!("burst-{index}"),
            &node.name,
            &[(IPPOOL, annotation)],
            &[],
        )
        .await?;
        pods.push((PodRef::of(&pod), netconf("1.0.0", node, json!({}))));
    }
    Ok(pods)
}

#[tokio::test]
async fn two_hundred_concurrent_adds_on_one_pool_get_distinct_addresses() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-burst").await?;
    let third = octet();
    let pool = fixture.pool("burst", v4_pool(third, "1-254")).await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);
    let pods = create_pods(
        &fixture.client,
        &fixture.namespace.name,
        200,
        &[&fixture.node],
        &annotation,
    )
    .await?;
    let started = std::time::Instant::now();
    let addresses = concurrent_adds(&pods).await?;
    eprintln!(
        "200 concurrent ADDs on one node took {:?}",
        started.elapsed()
    );
    let distinct: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(distinct.len(), 200, "duplicate addresses handed out");
    let records = fixture.records(&pool).await?;
    assert_eq!(records.len(), 200);
    let holders: BTreeSet<&String> = records.values().map(|record| &record.1).collect();
    assert_eq!(holders.len(), 200);
    for address in &addresses {
        assert!(
            records.contains_key(&bare(address)),
            "{address} not recorded"
        );
    }
    fixture.finish().await
}

#[tokio::test]
async fn concurrent_adds_from_several_nodes_resolve_conflicts() -> anyhow::Result<()> {
    let mut fixture = Fixture::new("ipam-nodes").await?;
    let third = octet();
    let pool = fixture.pool("nodes", v4_pool(third, "1-254")).await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(SimNode::create(&fixture.client, &fixture.scratch, &[], "").await?);
    }
    let node_refs: Vec<&SimNode> = nodes.iter().collect();
    let pods = create_pods(
        &fixture.client,
        &fixture.namespace.name,
        100,
        &node_refs,
        &annotation,
    )
    .await?;
    let addresses = concurrent_adds(&pods).await?;
    let distinct: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(distinct.len(), 100);
    assert_eq!(fixture.records(&pool).await?.len(), 100);
    // Writers on different nodes did meet: the CAS loop retried.
    let conflicts: u64 = nodes
        .iter()
        .flat_map(|node| {
            std::fs::read_to_string(&node.log)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| {
                    line.split("cas_conflicts=")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|value| value.parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .sum();
    eprintln!("100 ADDs from 4 nodes: {conflicts} conflicts");
    for node in &nodes {
        node.delete(&fixture.client).await?;
    }
    fixture.finish().await
}

/// §4.5: a pod of a built-in controller whose auto pool is still full (the controller-manager has
/// not scaled it up for the new replica yet) waits for the pool to grow instead of failing; when
/// it never grows, the ADD fails with the exhaustion error once the configured wait is over.
#[tokio::test]
async fn a_full_auto_pool_is_waited_for_until_it_grows() -> anyhow::Result<()> {
    let mut fixture = Fixture::with_node(
        "ipam-grow",
        &[],
        "waitSubnetPoolMaxRetries: 3\nwaitSubnetPoolTimeInSecond: 2",
    )
    .await?;
    let namespace = fixture.namespace.name.clone();
    let subnet = unique_name("grow-subnet");
    // Three replicas of a ReplicaSet (kube-controller-manager creates the pods); no
    // controller-manager runs in this suite: the test plays it and makes the auto pool.
    let replicasets: Api<ReplicaSet> = Api::namespaced(fixture.client.clone(), &namespace);
    let replicaset: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {
                    "labels": {"app": "web"},
                    "annotations": {"ipam.spidernet.io/subnet": format!(r#"{{"ipv4":["{subnet}"]}}"#)},
                },
                "spec": {
                    "nodeName": fixture.node.name,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                },
            },
        },
    }))?;
    let uid = replicasets
        .create(&PostParams::default(), &replicaset)
        .await?
        .uid()
        .unwrap_or_default();
    let third = octet();
    // The auto pool as the controller-manager makes it for one replica.
    let pool = fixture.pool("auto4-web", v4_pool(third, "10")).await?;
    // Sized by replicas ("+N"): it grows with a scale-up, so a full pool is waited for.
    let labels = json!({"metadata": {
        "annotations": {"ipam.spidernet.io/ippool-ip-number": "+0"},
        "labels": {
        "ipam.spidernet.io/owner-spider-subnet": subnet,
        "ipam.spidernet.io/owner-application-gv": "apps_v1",
        "ipam.spidernet.io/owner-application-kind": "ReplicaSet",
        "ipam.spidernet.io/owner-application-namespace": namespace,
        "ipam.spidernet.io/owner-application-name": "web",
        "ipam.spidernet.io/owner-application-uid": uid,
        "ipam.spidernet.io/interface": "eth0",
        "ipam.spidernet.io/ip-version": "IPv4",
    }}});
    let pools: Api<SpiderIPPool> = Api::all(fixture.client.clone());
    pools
        .patch(&pool, &PatchParams::default(), &Patch::Merge(&labels))
        .await?;
    let pods: Api<Pod> = Api::namespaced(fixture.client.clone(), &namespace);
    let refs = wait_for("3 replicas", Duration::from_secs(60), || async {
        let replicas = pods
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items;
        Ok((replicas.len() == 3).then(|| replicas.iter().map(PodRef::of).collect::<Vec<_>>()))
    })
    .await?;

    let first = fixture.add(&refs[0], "eth0").await?;
    assert_eq!(
        first.addresses()?,
        vec![format!("10.{third}.0.10/24")],
        "{}",
        fixture.log()
    );

    // The second replica's ADD waits while the pool is full: it says so in the plugin's log
    // (the positive sign), and it has not returned ...
    const WAITING: &str = "waiting for the controller-manager to scale it up";
    let waits = |log: &str| log.matches(WAITING).count();
    let waits_before = waits(&fixture.log());
    let conf = fixture.conf(json!({}));
    let second_pod = refs[1].clone();
    let second = tokio::spawn(async move { cni("ADD", &second_pod, "eth0", &conf).await });
    wait_for(
        "the ADD to wait for a scale-up",
        Duration::from_secs(30),
        || async {
            Ok((waits(&fixture.log()) > waits_before || second.is_finished()).then_some(()))
        },
    )
    .await?;
    assert!(
        !second.is_finished(),
        "the ADD did not wait for the pool to grow: {}",
        fixture.log()
    );
    // ... and gets the address the scale-up adds.
    pools
        .patch(
            &pool,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ips": [format!("10.{third}.0.10-10.{third}.0.11")]}})),
        )
        .await?;
    let second = second.await??;
    assert_eq!(
        second.addresses()?,
        vec![format!("10.{third}.0.11/24")],
        "{}",
        fixture.log()
    );
    assert!(
        fixture
            .log()
            .contains("waiting for the controller-manager to scale it up")
    );

    // A pool that never grows: the exhaustion error after the configured wait (3 x 2 s) ...
    let third_add = fixture.add(&refs[2], "eth0").await?;
    let (code, message) = third_add.error()?;
    assert!(
        message.contains(&pool) && message.contains("all IP addresses used out"),
        "{code}: {message}"
    );
    assert!(
        third_add.elapsed >= Duration::from_secs(4),
        "{:?}",
        third_add.elapsed
    );
    // ... and a pool of a fixed size ("N") is not waited for: no scale-up will grow it.
    pools
        .patch(
            &pool,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"ipam.spidernet.io/ippool-ip-number": "2"}}}),
            ),
        )
        .await?;
    let waits_before = waits(&fixture.log());
    let fixed_add = fixture.add(&refs[2], "eth0").await?;
    let (code, message) = fixed_add.error()?;
    assert!(
        message.contains("all IP addresses used out"),
        "{code}: {message}"
    );
    // The ADD has returned (the positive sign): it never logged a wait.
    assert_eq!(
        waits(&fixture.log()),
        waits_before,
        "the ADD on a fixed-size pool waited for a scale-up (took {:?})",
        fixed_add.elapsed
    );
    assert_eq!(fixture.records(&pool).await?.len(), 2);
    // The test plays the controller-manager with an auto pool held mid scale-up on purpose (no
    // subnet, smaller than its replicas): the invariants of a settled cluster do not hold here.
    fixture.clean_up().await
}
