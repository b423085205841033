//! The v2beta1 CRDs as the real API server serves them: every kind can be stored, the OpenAPI
//! schema rejects out-of-range values and missing required fields, defaults appear on read, and
//! kubectl shows upstream's columns and the `spiderpool` category.
//!
//! Objects are sent as plain JSON on purpose: the point is what the API server accepts from any
//! client (kubectl users included), not what our typed structs can express.

use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use spiderpool_e2e::{TestNamespace, client, kubectl, unique_name};

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "spiderpool.spidernet.io".into(),
        version: "v2beta1".into(),
        api_version: "spiderpool.spidernet.io/v2beta1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn cluster_api(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource(kind, plural))
}

fn namespaced_api(
    client: &Client,
    namespace: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &resource(kind, plural))
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("test object literal is a valid DynamicObject")
}

/// Creates `value` and returns the API server's error message, failing when it was accepted.
async fn rejected(api: &Api<DynamicObject>, value: Value) -> (u16, String) {
    match api.create(&PostParams::default(), &object(value)).await {
        Ok(created) => panic!(
            "expected the API server to reject {:?}",
            created.metadata.name
        ),
        Err(kube::Error::Api(status)) => (status.code, status.message),
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

fn table_header(output: &str) -> Vec<String> {
    output
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_kind_is_stored_and_pool_defaults_appear_on_read() -> anyhow::Result<()> {
    let client = client().await?;
    let namespace = TestNamespace::create(&client, "crds").await?;
    let ns = namespace.name.as_str();
    let pool_name = unique_name("pool");
    let subnet_name = unique_name("subnet");
    let reserved_name = unique_name("reserved");
    let coordinator_name = unique_name("coordinator");

    let pools = cluster_api(&client, "SpiderIPPool", "spiderippools");
    let pool = pools
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
                "metadata": {"name": pool_name},
                "spec": {"ipVersion": 4, "subnet": "172.31.40.0/24", "ips": ["172.31.40.10-172.31.40.20"]},
            })),
        )
        .await?;
    assert_eq!(
        pool.data["spec"]["default"],
        json!(false),
        "CRD default for spec.default"
    );
    assert_eq!(
        pool.data["spec"]["disable"],
        json!(false),
        "CRD default for spec.disable"
    );
    let read_back = pools.get(&pool_name).await?;
    assert_eq!(read_back.data["spec"]["default"], json!(false));
    assert_eq!(read_back.data["spec"]["disable"], json!(false));

    let subnets = cluster_api(&client, "SpiderSubnet", "spidersubnets");
    subnets
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderSubnet",
                "metadata": {"name": subnet_name},
                "spec": {"ipVersion": 6, "subnet": "fd00:31:40::/64", "ips": ["fd00:31:40::10-fd00:31:40::20"]},
            })),
        )
        .await?;

    let reserved = cluster_api(&client, "SpiderReservedIP", "spiderreservedips");
    reserved
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderReservedIP",
                "metadata": {"name": reserved_name},
                "spec": {"ipVersion": 4, "ips": ["172.31.40.15"]},
            })),
        )
        .await?;

    let multus_configs = namespaced_api(&client, ns, "SpiderMultusConfig", "spidermultusconfigs");
    let smc = multus_configs
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderMultusConfig",
                "metadata": {"name": "macvlan-ens192"},
                "spec": {"cniType": "macvlan", "macvlan": {"master": ["ens192"]}},
            })),
        )
        .await?;
    assert_eq!(
        smc.data["spec"]["enableCoordinator"],
        json!(true),
        "CRD default for enableCoordinator"
    );
    assert_eq!(
        smc.data["spec"]["disableIPAM"],
        json!(false),
        "CRD default for disableIPAM"
    );
    assert_eq!(
        smc.data["spec"]["macvlan"]["mtu"],
        json!(0),
        "CRD default for macvlan.mtu"
    );

    let empty_smc = multus_configs
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderMultusConfig",
                "metadata": {"name": "empty"}, "spec": {},
            })),
        )
        .await?;
    assert_eq!(
        empty_smc.data["spec"]["cniType"],
        json!("custom"),
        "CRD default for cniType"
    );

    let coordinators = cluster_api(&client, "SpiderCoordinator", "spidercoordinators");
    let coordinator = coordinators
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderCoordinator",
                "metadata": {"name": coordinator_name},
                "spec": {"podCIDRType": "cluster"},
            })),
        )
        .await?;
    assert_eq!(coordinator.data["spec"]["mode"], json!("auto"));
    assert_eq!(coordinator.data["spec"]["hostRuleTable"], json!(500));
    assert_eq!(coordinator.data["spec"]["tunePodRoutes"], json!(true));

    let endpoints = namespaced_api(&client, ns, "SpiderEndpoint", "spiderendpoints");
    endpoints
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderEndpoint",
                "metadata": {"name": "web-0"},
                "status": {
                    "current": {
                        "uid": "0b1e0000-0000-0000-0000-00000000f00d",
                        "node": "worker-1",
                        "ips": [{"interface": "eth0", "ipv4": "172.31.40.10/24", "ipv4Pool": pool_name}],
                    },
                    "ownerControllerType": "StatefulSet",
                    "ownerControllerName": "web",
                },
            })),
        )
        .await?;
    let endpoint = endpoints.get("web-0").await?;
    assert_eq!(
        endpoint.data["status"]["current"]["ips"][0]["vlan"],
        json!(0),
        "CRD default for the endpoint's per-NIC vlan"
    );

    // The `spiderpool` category lists every kind (cluster-scoped ones and those in the namespace).
    let listed = kubectl(&["get", "spiderpool", "-n", ns, "-o", "name"])?;
    for expected in [
        format!("spiderippool.spiderpool.spidernet.io/{pool_name}"),
        format!("spidersubnet.spiderpool.spidernet.io/{subnet_name}"),
        format!("spiderreservedip.spiderpool.spidernet.io/{reserved_name}"),
        format!("spidercoordinator.spiderpool.spidernet.io/{coordinator_name}"),
        "spidermultusconfig.spiderpool.spidernet.io/macvlan-ens192".to_owned(),
        "spiderendpoint.spiderpool.spidernet.io/web-0".to_owned(),
    ] {
        assert!(
            listed.lines().any(|line| line == expected),
            "`kubectl get spiderpool` lacks {expected}:\n{listed}"
        );
    }

    // Short names resolve.
    for (short, name) in [
        ("sp", &pool_name),
        ("ss", &subnet_name),
        ("sr", &reserved_name),
        ("scc", &coordinator_name),
    ] {
        let output = kubectl(&["get", short, name, "-o", "name"])?;
        assert!(
            output.contains(name.as_str()),
            "kubectl get {short} {name}: {output}"
        );
    }
    for (short, name) in [("smc", "macvlan-ens192"), ("se", "web-0")] {
        let output = kubectl(&["get", short, name, "-n", ns, "-o", "name"])?;
        assert!(
            output.contains(name),
            "kubectl get {short} {name}: {output}"
        );
    }

    for (kind_api, name) in [
        (&pools, &pool_name),
        (&subnets, &subnet_name),
        (&reserved, &reserved_name),
        (&coordinators, &coordinator_name),
    ] {
        kind_api.delete(name, &DeleteParams::default()).await?;
    }
    namespace.delete().await
}

#[tokio::test]
async fn kubectl_shows_upstream_columns() -> anyhow::Result<()> {
    let client = client().await?;
    let namespace = TestNamespace::create(&client, "columns").await?;
    let pool_name = unique_name("columns-pool");
    let pools = cluster_api(&client, "SpiderIPPool", "spiderippools");
    pools
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
                "metadata": {"name": pool_name},
                "spec": {"ipVersion": 4, "subnet": "172.31.41.0/24", "nodeName": ["worker-1"],
                          "podAffinity": {"matchLabels": {"ipam.spidernet.io/app-namespace": "demo"}}},
            })),
        )
        .await?;

    let wide = kubectl(&["get", "sp", &pool_name, "-o", "wide"])?;
    assert_eq!(
        table_header(&wide),
        [
            "NAME",
            "VERSION",
            "SUBNET",
            "ALLOCATED-IP-COUNT",
            "TOTAL-IP-COUNT",
            "DEFAULT",
            "DISABLE",
            "NODENAME",
            "MULTUSNAME",
            "APP-NAMESPACE"
        ],
        "{wide}"
    );
    let row: Vec<&str> = wide
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.first(), Some(&pool_name.as_str()));
    assert!(
        row.contains(&"172.31.41.0/24") && row.contains(&"demo"),
        "{wide}"
    );
    let narrow = kubectl(&["get", "sp", &pool_name])?;
    assert_eq!(
        table_header(&narrow),
        [
            "NAME",
            "VERSION",
            "SUBNET",
            "ALLOCATED-IP-COUNT",
            "TOTAL-IP-COUNT",
            "DEFAULT"
        ],
        "wide-only columns must be hidden without -o wide:\n{narrow}"
    );

    let subnet_name = unique_name("columns-subnet");
    cluster_api(&client, "SpiderSubnet", "spidersubnets")
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderSubnet",
                "metadata": {"name": subnet_name},
                "spec": {"ipVersion": 4, "subnet": "172.31.42.0/24"},
            })),
        )
        .await?;
    let subnets = kubectl(&["get", "ss", &subnet_name])?;
    assert_eq!(
        table_header(&subnets),
        [
            "NAME",
            "VERSION",
            "SUBNET",
            "ALLOCATED-IP-COUNT",
            "TOTAL-IP-COUNT"
        ],
        "{subnets}"
    );

    let reserved_name = unique_name("columns-reserved");
    cluster_api(&client, "SpiderReservedIP", "spiderreservedips")
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderReservedIP",
                "metadata": {"name": reserved_name},
                "spec": {"ipVersion": 4, "ips": ["172.31.41.9"]},
            })),
        )
        .await?;
    let reserved = kubectl(&["get", "sr", &reserved_name])?;
    assert_eq!(table_header(&reserved), ["NAME", "VERSION"], "{reserved}");

    namespaced_api(
        &client,
        &namespace.name,
        "SpiderEndpoint",
        "spiderendpoints",
    )
    .create(
        &PostParams::default(),
        &object(json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderEndpoint",
            "metadata": {"name": "nginx-1"},
            "status": {"current": {"uid": "u-1", "node": "worker-1",
                "ips": [{"interface": "eth0", "ipv4": "172.31.41.10/24", "ipv4Pool": pool_name,
                         "ipv6": "fd00::10/64", "ipv6Pool": "pool-v6"}]},
                    "ownerControllerType": "Deployment", "ownerControllerName": "nginx"},
        })),
    )
    .await?;
    let endpoints = kubectl(&["get", "se", "-n", &namespace.name])?;
    assert_eq!(
        table_header(&endpoints),
        [
            "NAME",
            "INTERFACE",
            "IPV4POOL",
            "IPV4",
            "IPV6POOL",
            "IPV6",
            "NODE"
        ],
        "{endpoints}"
    );
    let row: Vec<&str> = endpoints
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "nginx-1",
            "eth0",
            pool_name.as_str(),
            "172.31.41.10/24",
            "pool-v6",
            "fd00::10/64",
            "worker-1"
        ]
    );

    namespace.delete().await
}

#[tokio::test]
async fn schema_rejects_out_of_range_enum_and_missing_required_values() -> anyhow::Result<()> {
    let client = client().await?;
    let namespace = TestNamespace::create(&client, "schema").await?;
    let pools = cluster_api(&client, "SpiderIPPool", "spiderippools");

    let (code, message) = rejected(
        &pools,
        json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
            "metadata": {"name": unique_name("bad-version")},
            "spec": {"ipVersion": 5, "subnet": "172.31.43.0/24"},
        }),
    )
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains(r#"spec.ipVersion: Unsupported value: 5: supported values: "4", "6""#),
        "{message}"
    );

    let (code, message) = rejected(
        &pools,
        json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
            "metadata": {"name": unique_name("no-subnet")},
            "spec": {"ipVersion": 4},
        }),
    )
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("spec.subnet: Required value"), "{message}");

    let multus_configs = namespaced_api(
        &client,
        &namespace.name,
        "SpiderMultusConfig",
        "spidermultusconfigs",
    );
    let (code, message) = rejected(
        &multus_configs,
        json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderMultusConfig",
            "metadata": {"name": "vlan-too-big"},
            "spec": {"cniType": "macvlan", "macvlan": {"master": ["ens192"], "vlanID": 5000}},
        }),
    )
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("spec.macvlan.vlanID: Invalid value: 5000: spec.macvlan.vlanID in body should be less than or equal to 4094"), "{message}");

    let (code, message) = rejected(
        &multus_configs,
        json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderMultusConfig",
            "metadata": {"name": "bad-cni-type"},
            "spec": {"cniType": "bridge"},
        }),
    )
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains(r#"spec.cniType: Unsupported value: "bridge""#),
        "{message}"
    );

    let (code, message) = rejected(
        &multus_configs,
        json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderMultusConfig",
            "metadata": {"name": "bond-without-name"},
            "spec": {"cniType": "macvlan", "macvlan": {"master": ["eth0", "eth1"], "bond": {"mode": 7}}},
        }),
    )
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("spec.macvlan.bond.name: Required value"),
        "{message}"
    );
    assert!(
        message.contains("spec.macvlan.bond.mode: Invalid value: 7"),
        "{message}"
    );

    let coordinators = cluster_api(&client, "SpiderCoordinator", "spidercoordinators");
    let (code, message) = rejected(
        &coordinators,
        json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderCoordinator",
            "metadata": {"name": unique_name("bad-mode")},
            "spec": {"mode": "bridge", "vethMTU": 0},
        }),
    )
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains(r#"spec.mode: Unsupported value: "bridge""#),
        "{message}"
    );
    assert!(
        message.contains("spec.vethMTU: Invalid value: 0"),
        "{message}"
    );

    namespace.delete().await
}
