//! Crate-level tests: the generated CRDs (names, columns, subresources, defaults, enums), exact
//! round-trips of stored upstream objects, and the shipped samples.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, Resource};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::*;

fn crd_json<K: CustomResourceExt>() -> Value {
    serde_json::to_value(K::crd()).expect("CRD serializes")
}

/// The schema node at a dotted path below `openAPIV3Schema` of the only version.
fn schema_at<'a>(crd: &'a Value, path: &str) -> &'a Value {
    let mut node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for segment in path.split('.').filter(|segment| !segment.is_empty()) {
        node = &node[segment];
    }
    assert!(!node.is_null(), "no schema at {path}");
    node
}

/// Property path helper: `prop("spec", "macvlan", "mtu")` is
/// `properties.spec.properties.macvlan.properties.mtu`.
fn prop(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|segment| format!("properties.{segment}"))
        .collect::<Vec<_>>()
        .join(".")
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("valid YAML document"))
        .filter(|document| !document.is_null())
        .collect()
}

/// Deserializes `document` as `K`, serializes it again, and checks nothing was added, dropped or
/// changed.
fn assert_round_trip<K: DeserializeOwned + Serialize>(document: &Value) -> K {
    let typed: K = serde_json::from_value(document.clone()).expect("document deserializes");
    let back = serde_json::to_value(&typed).expect("object serializes");
    assert_eq!(&back, document, "round trip changed the object");
    typed
}

struct Expected {
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_name: &'static str,
    scope: &'static str,
    status_subresource: bool,
    columns: &'static [(&'static str, &'static str, &'static str, Option<i32>)],
}

const POOL_COLUMNS: &[(&str, &str, &str, Option<i32>)] = &[
    ("VERSION", ".spec.ipVersion", "string", None),
    ("SUBNET", ".spec.subnet", "string", None),
    (
        "ALLOCATED-IP-COUNT",
        ".status.allocatedIPCount",
        "integer",
        None,
    ),
    ("TOTAL-IP-COUNT", ".status.totalIPCount", "integer", None),
    ("DEFAULT", ".spec.default", "boolean", None),
    ("DISABLE", ".spec.disable", "boolean", Some(10)),
    ("NodeName", ".spec.nodeName", "string", Some(10)),
    ("MultusName", ".spec.multusName", "string", Some(10)),
    (
        "APP-NAMESPACE",
        r".spec.podAffinity.matchLabels['ipam\.spidernet\.io/app\-namespace']",
        "string",
        Some(10),
    ),
];

const SUBNET_COLUMNS: &[(&str, &str, &str, Option<i32>)] = &[
    ("VERSION", ".spec.ipVersion", "string", None),
    ("SUBNET", ".spec.subnet", "string", None),
    (
        "ALLOCATED-IP-COUNT",
        ".status.allocatedIPCount",
        "integer",
        None,
    ),
    ("TOTAL-IP-COUNT", ".status.totalIPCount", "integer", None),
];

const ENDPOINT_COLUMNS: &[(&str, &str, &str, Option<i32>)] = &[
    (
        "INTERFACE",
        ".status.current.ips[0].interface",
        "string",
        None,
    ),
    (
        "IPV4POOL",
        ".status.current.ips[0].ipv4Pool",
        "string",
        None,
    ),
    ("IPV4", ".status.current.ips[0].ipv4", "string", None),
    (
        "IPV6POOL",
        ".status.current.ips[0].ipv6Pool",
        "string",
        None,
    ),
    ("IPV6", ".status.current.ips[0].ipv6", "string", None),
    ("NODE", ".status.current.node", "string", None),
];

const RESERVED_COLUMNS: &[(&str, &str, &str, Option<i32>)] =
    &[("VERSION", ".spec.ipVersion", "string", None)];

fn check_crd(crd: &CustomResourceDefinition, expected: &Expected) {
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some(format!("{}.spiderpool.spidernet.io", expected.plural).as_str())
    );
    assert_eq!(crd.spec.group, "spiderpool.spidernet.io");
    assert_eq!(crd.spec.scope, expected.scope, "{}", expected.kind);
    let names = &crd.spec.names;
    assert_eq!(names.kind, expected.kind);
    assert_eq!(names.plural, expected.plural);
    assert_eq!(names.singular.as_deref(), Some(expected.singular));
    assert_eq!(
        names.short_names,
        Some(vec![expected.short_name.to_owned()])
    );
    assert_eq!(names.categories, Some(vec!["spiderpool".to_owned()]));

    assert_eq!(crd.spec.versions.len(), 1);
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v2beta1");
    assert!(version.served && version.storage);

    let status_subresource = version
        .subresources
        .as_ref()
        .is_some_and(|subresources| subresources.status.is_some());
    assert_eq!(
        status_subresource, expected.status_subresource,
        "{} status subresource",
        expected.kind
    );
    assert!(
        version
            .subresources
            .as_ref()
            .is_none_or(|subresources| subresources.scale.is_none())
    );

    let columns: Vec<(String, String, String, Option<i32>)> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|column| {
            (
                column.name.clone(),
                column.json_path.clone(),
                column.type_.clone(),
                column.priority,
            )
        })
        .collect();
    let expected_columns: Vec<(String, String, String, Option<i32>)> = expected
        .columns
        .iter()
        .map(|(name, path, ty, priority)| {
            (
                (*name).to_owned(),
                (*path).to_owned(),
                (*ty).to_owned(),
                *priority,
            )
        })
        .collect();
    assert_eq!(columns, expected_columns, "{} columns", expected.kind);
}

#[test]
fn every_crd_has_upstream_names_columns_and_subresources() {
    let expectations = [
        Expected {
            kind: "SpiderIPPool",
            plural: "spiderippools",
            singular: "spiderippool",
            short_name: "sp",
            scope: "Cluster",
            status_subresource: true,
            columns: POOL_COLUMNS,
        },
        Expected {
            kind: "SpiderSubnet",
            plural: "spidersubnets",
            singular: "spidersubnet",
            short_name: "ss",
            scope: "Cluster",
            status_subresource: true,
            columns: SUBNET_COLUMNS,
        },
        Expected {
            kind: "SpiderEndpoint",
            plural: "spiderendpoints",
            singular: "spiderendpoint",
            short_name: "se",
            scope: "Namespaced",
            status_subresource: false,
            columns: ENDPOINT_COLUMNS,
        },
        Expected {
            kind: "SpiderReservedIP",
            plural: "spiderreservedips",
            singular: "spiderreservedip",
            short_name: "sr",
            scope: "Cluster",
            status_subresource: false,
            columns: RESERVED_COLUMNS,
        },
        Expected {
            kind: "SpiderMultusConfig",
            plural: "spidermultusconfigs",
            singular: "spidermultusconfig",
            short_name: "smc",
            scope: "Namespaced",
            status_subresource: false,
            columns: &[],
        },
        Expected {
            kind: "SpiderCoordinator",
            plural: "spidercoordinators",
            singular: "spidercoordinator",
            short_name: "scc",
            scope: "Cluster",
            status_subresource: true,
            columns: &[],
        },
    ];
    let crds = spiderpool_crds();
    assert_eq!(crds.len(), expectations.len());
    for (crd, expected) in crds.iter().zip(&expectations) {
        check_crd(crd, expected);
    }
}

#[test]
fn kinds_without_status_subresource_keep_status_in_the_schema_only_where_upstream_has_one() {
    let endpoint = crd_json::<SpiderEndpoint>();
    assert_eq!(endpoint["spec"]["versions"][0]["subresources"], json!({}));
    let root = schema_at(&endpoint, "properties");
    assert!(root.get("status").is_some());
    assert!(root.get("spec").is_none(), "SpiderEndpoint has no spec");

    for crd in [
        crd_json::<SpiderMultusConfig>(),
        crd_json::<SpiderReservedIP>(),
    ] {
        assert!(schema_at(&crd, "properties").get("status").is_none());
        assert!(crd["spec"]["versions"][0].get("subresources").is_none());
    }
}

#[test]
fn ip_version_is_an_integer_enum_of_4_and_6() {
    for crd in [
        crd_json::<SpiderIPPool>(),
        crd_json::<SpiderSubnet>(),
        crd_json::<SpiderReservedIP>(),
    ] {
        let ip_version = schema_at(&crd, &prop(&["spec", "ipVersion"]));
        assert_eq!(ip_version["type"], "integer");
        assert_eq!(ip_version["enum"], json!([4, 6]));
        assert!(ip_version.get("nullable").is_none());
    }
}

#[test]
fn required_fields_match_upstream() {
    let pool = crd_json::<SpiderIPPool>();
    assert_eq!(
        schema_at(&pool, &prop(&["spec"]))["required"],
        json!(["subnet"])
    );
    assert_eq!(
        schema_at(&pool, &prop(&["spec", "routes"]))["items"]["required"],
        json!(["dst", "gw"])
    );
    let subnet = crd_json::<SpiderSubnet>();
    assert_eq!(
        schema_at(&subnet, &prop(&["spec"]))["required"],
        json!(["subnet"])
    );

    let endpoint = crd_json::<SpiderEndpoint>();
    let status = schema_at(&endpoint, &prop(&["status"]));
    assert_eq!(
        status["required"],
        json!(["current", "ownerControllerName", "ownerControllerType"])
    );
    assert_eq!(
        status["properties"]["current"]["required"],
        json!(["ips", "node", "uid"])
    );
    assert_eq!(
        status["properties"]["current"]["properties"]["ips"]["items"]["required"],
        json!(["interface"])
    );

    let smc = crd_json::<SpiderMultusConfig>();
    for plugin in ["macvlan", "ipvlan", "vlan"] {
        assert_eq!(
            schema_at(&smc, &prop(&["spec", plugin]))["required"],
            json!(["master"])
        );
        assert_eq!(
            schema_at(&smc, &prop(&["spec", plugin, "bond"]))["required"],
            json!(["mode", "name"])
        );
    }
    assert_eq!(
        schema_at(&smc, &prop(&["spec", "ovs"]))["required"],
        json!(["bridge"])
    );
    for optional in ["sriov", "ibsriov", "ipoib"] {
        assert!(
            schema_at(&smc, &prop(&["spec", optional]))
                .get("required")
                .is_none()
        );
    }
    assert!(schema_at(&smc, &prop(&["spec"])).get("required").is_none());

    let coordinator = crd_json::<SpiderCoordinator>();
    assert_eq!(
        schema_at(&coordinator, &prop(&["status"]))["required"],
        json!(["phase"])
    );
    assert!(
        schema_at(&coordinator, &prop(&["spec"]))
            .get("required")
            .is_none()
    );
}

#[test]
fn crd_defaults_are_in_the_schema() {
    let pool = crd_json::<SpiderIPPool>();
    assert_eq!(
        schema_at(&pool, &prop(&["spec", "default"]))["default"],
        json!(false)
    );
    assert_eq!(
        schema_at(&pool, &prop(&["spec", "disable"]))["default"],
        json!(false)
    );

    let endpoint = crd_json::<SpiderEndpoint>();
    let vlan = schema_at(&endpoint, &prop(&["status", "current", "ips"]));
    assert_eq!(vlan["items"]["properties"]["vlan"]["default"], json!(0));

    let smc = crd_json::<SpiderMultusConfig>();
    let defaults = [
        (prop(&["spec", "cniType"]), json!("custom")),
        (prop(&["spec", "enableCoordinator"]), json!(true)),
        (prop(&["spec", "disableIPAM"]), json!(false)),
        (prop(&["spec", "macvlan", "mtu"]), json!(0)),
        (prop(&["spec", "ipvlan", "mtu"]), json!(0)),
        (prop(&["spec", "vlan", "mtu"]), json!(0)),
        (prop(&["spec", "vlan", "vlanMode"]), json!("manual")),
        (prop(&["spec", "sriov", "mtu"]), json!(0)),
        (prop(&["spec", "sriov", "rdmaIsolation"]), json!(false)),
        (prop(&["spec", "ibsriov", "linkState"]), json!("enable")),
        (prop(&["spec", "ibsriov", "rdmaIsolation"]), json!(true)),
        (
            prop(&["spec", "ibsriov", "enableIbKubernetes"]),
            json!(false),
        ),
        (
            prop(&["spec", "macvlan", "ippools", "matchMasterSubnet"]),
            json!(false),
        ),
        (prop(&["spec", "coordinator", "mode"]), json!("auto")),
        (prop(&["spec", "coordinator", "hostRuleTable"]), json!(500)),
        (prop(&["spec", "coordinator", "podRPFilter"]), json!(0)),
        (prop(&["spec", "coordinator", "tunePodRoutes"]), json!(true)),
        (prop(&["spec", "coordinator", "txQueueLen"]), json!(0)),
    ];
    for (path, default) in &defaults {
        assert_eq!(
            &schema_at(&smc, path)["default"],
            default,
            "default of {path}"
        );
    }

    let coordinator = crd_json::<SpiderCoordinator>();
    for (field, default) in [
        ("mode", json!("auto")),
        ("hostRuleTable", json!(500)),
        ("podRPFilter", json!(0)),
        ("tunePodRoutes", json!(true)),
        ("txQueueLen", json!(0)),
    ] {
        assert_eq!(
            schema_at(&coordinator, &prop(&["spec", field]))["default"],
            default,
            "{field}"
        );
    }
    for no_default in ["podCIDRType", "vethMTU", "vethLinkAddress"] {
        assert!(
            schema_at(&coordinator, &prop(&["spec", no_default]))
                .get("default")
                .is_none()
        );
    }
}

#[test]
fn string_enums_have_upstream_values() {
    let smc = crd_json::<SpiderMultusConfig>();
    let enums = [
        (
            prop(&["spec", "cniType"]),
            json!([
                "macvlan", "ipvlan", "vlan", "sriov", "ovs", "ib-sriov", "ipoib", "custom"
            ]),
        ),
        (
            prop(&["spec", "vlan", "vlanMode"]),
            json!(["manual", "auto"]),
        ),
        (
            prop(&["spec", "ibsriov", "linkState"]),
            json!(["auto", "enable", "disable"]),
        ),
        (
            prop(&["spec", "coordinator", "mode"]),
            json!(["auto", "underlay", "overlay", "disabled"]),
        ),
        (
            prop(&["spec", "coordinator", "podCIDRType"]),
            json!(["auto", "cluster", "calico", "cilium", "none"]),
        ),
        (
            prop(&["spec", "sriov", "ippools", "matchMasterSubnet"]),
            json!([true, false]),
        ),
    ];
    for (path, values) in &enums {
        let schema = schema_at(&smc, path);
        assert_eq!(&schema["enum"], values, "enum of {path}");
        assert!(
            schema.get("oneOf").is_none() && schema.get("anyOf").is_none(),
            "{path}"
        );
    }
}

#[test]
fn numeric_ranges_match_upstream() {
    let smc = crd_json::<SpiderMultusConfig>();
    let range = |path: &str| {
        let schema = schema_at(&smc, path);
        (schema["minimum"].as_f64(), schema["maximum"].as_f64())
    };
    for plugin in ["macvlan", "ipvlan", "vlan", "sriov"] {
        assert_eq!(
            range(&prop(&["spec", plugin, "vlanID"])),
            (Some(0.0), Some(4094.0)),
            "{plugin}"
        );
        assert_eq!(
            range(&prop(&["spec", plugin, "mtu"])),
            (Some(0.0), None),
            "{plugin}"
        );
    }
    assert_eq!(
        range(&prop(&["spec", "macvlan", "bond", "mode"])),
        (Some(0.0), Some(6.0))
    );
    for field in ["minTxRateMbps", "maxTxRateMbps"] {
        assert_eq!(range(&prop(&["spec", "sriov", field])), (Some(0.0), None));
    }
    for field in ["minID", "maxID", "id"] {
        let trunk = schema_at(&smc, &prop(&["spec", "ovs", "trunk"]));
        let schema = &trunk["items"]["properties"][field];
        assert_eq!(schema["minimum"], json!(0.0));
        assert_eq!(schema["maximum"], json!(4094.0));
        assert!(schema.get("format").is_none(), "Go uint carries no format");
    }
    assert_eq!(
        range(&prop(&["spec", "coordinator", "vethMTU"])),
        (Some(1.0), None)
    );

    let pool = crd_json::<SpiderIPPool>();
    for field in ["allocatedIPCount", "totalIPCount"] {
        assert_eq!(
            schema_at(&pool, &prop(&["status", field]))["minimum"],
            json!(0.0)
        );
    }
    let endpoint = crd_json::<SpiderEndpoint>();
    let vlan =
        &schema_at(&endpoint, &prop(&["status", "current", "ips"]))["items"]["properties"]["vlan"];
    assert_eq!(
        (vlan["minimum"].as_f64(), vlan["maximum"].as_f64()),
        (Some(0.0), Some(4094.0))
    );
}

#[test]
fn optional_fields_are_not_nullable_inside_spec_and_status() {
    fn walk(node: &Value, path: &str) {
        match node {
            Value::Object(map) => {
                assert!(!map.contains_key("nullable"), "nullable at {path}");
                assert!(
                    !map.contains_key("anyOf") && !map.contains_key("oneOf"),
                    "union at {path}"
                );
                for (key, child) in map {
                    walk(child, &format!("{path}.{key}"));
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, path)),
            _ => {}
        }
    }
    for crd in spiderpool_crds() {
        let crd = serde_json::to_value(&crd).expect("CRD serializes");
        let root = schema_at(&crd, "properties");
        for section in ["spec", "status"] {
            if let Some(node) = root.get(section) {
                for (key, child) in node.as_object().into_iter().flatten() {
                    walk(
                        child,
                        &format!("{}.{section}.{key}", crd["spec"]["names"]["kind"]),
                    );
                }
            }
        }
    }
}

#[test]
fn label_selectors_are_atomic_like_upstream() {
    let pool = crd_json::<SpiderIPPool>();
    for field in ["podAffinity", "namespaceAffinity", "nodeAffinity"] {
        let selector = schema_at(&pool, &prop(&["spec", field]));
        assert_eq!(selector["x-kubernetes-map-type"], "atomic", "{field}");
        let expressions = &selector["properties"]["matchExpressions"];
        assert_eq!(expressions["x-kubernetes-list-type"], "atomic");
        assert_eq!(
            expressions["items"]["properties"]["values"]["x-kubernetes-list-type"],
            "atomic"
        );
        assert_eq!(
            selector["properties"]["matchLabels"]["additionalProperties"]["type"],
            "string"
        );
    }
}

#[test]
fn every_field_has_a_description() {
    fn walk(node: &Value, path: &str) {
        let Some(properties) = node.get("properties").and_then(Value::as_object) else {
            if let Some(items) = node.get("items") {
                walk(items, path);
            }
            return;
        };
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            let description = child
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            assert!(!description.is_empty(), "no description at {child_path}");
            assert!(
                !description.replace("\n\n", "").contains('\n'),
                "description at {child_path} keeps hard line breaks"
            );
            walk(child, &child_path);
        }
    }
    let mut crds = spiderpool_crds();
    crds.push(nad::multus_crd());
    for crd in crds {
        let crd = serde_json::to_value(&crd).expect("CRD serializes");
        let root = schema_at(&crd, "");
        assert!(root["description"].is_string());
        walk(
            root,
            crd["spec"]["names"]["kind"].as_str().unwrap_or_default(),
        );
    }
}

#[test]
fn multus_crd_matches_multus_names_and_schema() {
    let crd = nad::multus_crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("network-attachment-definitions.k8s.cni.cncf.io")
    );
    assert_eq!(crd.spec.group, "k8s.cni.cncf.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    let names = &crd.spec.names;
    assert_eq!(names.kind, "NetworkAttachmentDefinition");
    assert_eq!(names.plural, "network-attachment-definitions");
    assert_eq!(
        names.singular.as_deref(),
        Some("network-attachment-definition")
    );
    assert_eq!(
        names.short_names,
        Some(vec!["nad".to_owned(), "net-attach-def".to_owned()])
    );
    assert!(names.categories.is_none());
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1");
    assert!(version.served && version.storage && version.subresources.is_none());

    let crd = serde_json::to_value(&crd).expect("CRD serializes");
    let root = schema_at(&crd, "");
    assert!(
        root.get("required").is_none(),
        "Multus does not require spec"
    );
    let config = schema_at(&crd, &prop(&["spec", "config"]));
    assert_eq!(config["type"], "string");
    assert!(config.get("nullable").is_none());

    assert_eq!(
        NetworkAttachmentDefinition::api_version(&()),
        "k8s.cni.cncf.io/v1"
    );
    assert_eq!(
        NetworkAttachmentDefinition::plural(&()),
        "network-attachment-definitions"
    );
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

/// The stored objects of section 1.7 of the compatibility reference.
const STORED_OBJECTS: &str = r#"
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderIPPool
metadata:
  name: pool-v4
  finalizers: [spiderpool.spidernet.io]
  labels:
    ipam.spidernet.io/ippool-cidr: 172-18-40-0-24
    ipam.spidernet.io/owner-spider-subnet: subnet-v4
  ownerReferences:
  - {apiVersion: spiderpool.spidernet.io/v2beta1, kind: SpiderSubnet, name: subnet-v4, uid: 9d7c1f2e-4b1a-4c55-9d0e-3f1a2b3c4d5e, controller: true, blockOwnerDeletion: true}
spec:
  ipVersion: 4
  subnet: 172.18.40.0/24
  ips: ["172.18.40.40-172.18.40.50"]
  excludeIPs: ["172.18.40.41"]
  gateway: 172.18.40.1
  routes: [{dst: 10.0.0.0/8, gw: 172.18.40.1}]
  default: false
  disable: false
status:
  allocatedIPs: '{"172.18.40.40":{"pod":"default/nginx-7d9c-x2l4q","podUid":"5f1c0b9e-0000-4000-8000-000000000001"}}'
  allocatedIPCount: 1
  totalIPCount: 10
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderEndpoint
metadata:
  name: nginx-7d9c-x2l4q
  namespace: default
  finalizers: [spiderpool.spidernet.io]
  ownerReferences: [{apiVersion: v1, kind: Pod, name: nginx-7d9c-x2l4q, uid: 5f1c0b9e-0000-4000-8000-000000000001}]
status:
  current:
    uid: 5f1c0b9e-0000-4000-8000-000000000001
    node: worker-1
    ips:
    - interface: eth0
      ipv4: 172.18.40.40/24
      ipv4Pool: pool-v4
      ipv4Gateway: 172.18.40.1
      cleanGateway: false
      vlan: 0
      routes: [{dst: 10.0.0.0/8, gw: 172.18.40.1}]
  ownerControllerType: Deployment
  ownerControllerName: nginx
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderSubnet
metadata:
  name: subnet-v4
  finalizers: [spiderpool.spidernet.io]
  labels: {ipam.spidernet.io/subnet-cidr: 172-18-40-0-24}
spec:
  ipVersion: 4
  subnet: 172.18.40.0/24
  ips: ["172.18.40.10-172.18.40.200"]
  gateway: 172.18.40.1
status:
  controlledIPPools: '{"auto4-nginx-eth0-9a2b3":{"ips":["172.18.40.10-172.18.40.12"],"application":"apps_v1_Deployment_default_nginx"},"pool-v4":{"ips":["172.18.40.40","172.18.40.42-172.18.40.50"]}}'
  totalIPCount: 191
  allocatedIPCount: 13
"#;

#[test]
fn stored_upstream_objects_round_trip_unchanged() {
    let documents = yaml_documents(STORED_OBJECTS);
    assert_eq!(documents.len(), 3);

    let pool: SpiderIPPool = assert_round_trip(&documents[0]);
    assert_eq!(pool.spec.ip_version, Some(4));
    assert_eq!(pool.spec.exclude_ips, Some(vec!["172.18.40.41".to_owned()]));
    let status = pool.status.expect("pool has a status");
    let allocations = status.allocations().expect("ledger decodes");
    assert_eq!(
        allocations["172.18.40.40"].namespaced_name,
        "default/nginx-7d9c-x2l4q"
    );

    let endpoint: SpiderEndpoint = assert_round_trip(&documents[1]);
    let current = &endpoint
        .status
        .as_ref()
        .expect("endpoint has a status")
        .current;
    assert_eq!(current.ips[0].nic, "eth0");
    assert_eq!(current.ips[0].vlan, Some(0));

    let subnet: SpiderSubnet = assert_round_trip(&documents[2]);
    let pools = subnet
        .status
        .as_ref()
        .expect("subnet has a status")
        .controlled_pools()
        .expect("controlledIPPools decodes");
    assert_eq!(
        pools["auto4-nginx-eth0-9a2b3"].application.as_deref(),
        Some("apps_v1_Deployment_default_nginx")
    );
    assert_eq!(pools["pool-v4"].application, None);
}

/// Objects as upstream's webhooks leave them: Go writes `chainCNIJsonData: []` and OVS
/// `deviceID: ""` (no omitempty), and pointers to zero values.
const STORED_SMC_AND_COORDINATOR: &str = r#"
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata: {name: macvlan-ens192, namespace: default}
spec:
  cniType: macvlan
  macvlan:
    master: [ens192, ens224]
    mtu: 0
    vlanID: 100
    bond: {name: bond0, mode: 1, options: ""}
    rdmaResourceName: ""
    ippools: {ipv4: [pool-v4], ipv6: [pool-v6]}
  enableCoordinator: true
  disableIPAM: false
  coordinator:
    mode: auto
    hijackCIDR: []
    policyRoutes: []
    podMACPrefix: ""
    tunePodRoutes: true
    podDefaultRouteNIC: ""
    hostRuleTable: 500
    podRPFilter: 0
    txQueueLen: 0
    vethLinkAddress: ""
  chainCNIJsonData: []
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata: {name: ovs-br1, namespace: default}
spec:
  cniType: ovs
  ovs:
    bridge: br1
    vlan: 0
    trunk: [{minID: 10, maxID: 20}, {id: 42}]
    deviceID: ""
  enableCoordinator: true
  disableIPAM: false
  chainCNIJsonData: ['{"type":"tuning","sysctl":{"net.core.somaxconn":"500"}}']
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata: {name: sriov-and-ib, namespace: default}
spec:
  cniType: ib-sriov
  ibsriov: {resourceName: spidernet.io/mlnx_ib, pkey: "", linkState: enable, rdmaIsolation: true, enableIbKubernetes: false}
  sriov: {resourceName: spidernet.io/sriov_netdevice, vlanID: 0, mtu: 9000, minTxRateMbps: 0, maxTxRateMbps: 100, rdmaIsolation: false, ippools: {matchMasterSubnet: false}}
  ipoib: {master: ib0}
  vlan: {master: [ens192], mtu: 0, vlanMode: auto}
  customCNI: ""
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderCoordinator
metadata: {name: default, finalizers: [spiderpool.spidernet.io]}
spec:
  mode: disabled
  podCIDRType: calico
  hijackCIDR: [169.254.0.0/16]
  policyRoutes: [{dst: 10.20.0.0/16, gw: 172.18.40.1}]
  podMACPrefix: "0a:1b"
  tunePodRoutes: true
  podDefaultRouteNIC: net1
  hostRuleTable: 500
  podRPFilter: -1
  txQueueLen: 1000
  vethLinkAddress: 169.254.100.1
  vethMTU: 1500
status:
  phase: Synced
  overlayPodCIDR: [10.222.0.0/16]
  serviceCIDR: [10.233.0.0/18]
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderReservedIP
metadata: {name: reserved-v6}
spec:
  ipVersion: 6
  ips: ["fd00:172:18::49-fd00:172:18::50"]
"#;

#[test]
fn stored_multus_configs_and_coordinators_round_trip_unchanged() {
    let documents = yaml_documents(STORED_SMC_AND_COORDINATOR);
    assert_eq!(documents.len(), 5);

    let macvlan: SpiderMultusConfig = assert_round_trip(&documents[0]);
    assert_eq!(macvlan.spec.cni_type, Some(CniType::Macvlan));
    assert_eq!(macvlan.spec.chain_cni_json_data, Some(Vec::new()));
    let bond = macvlan
        .spec
        .macvlan
        .and_then(|config| config.bond)
        .expect("bond kept");
    assert_eq!((bond.mode, bond.options.as_deref()), (1, Some("")));

    let ovs: SpiderMultusConfig = assert_round_trip(&documents[1]);
    let ovs = ovs.spec.ovs.expect("ovs section kept");
    assert_eq!(
        ovs.device_id.as_deref(),
        Some(""),
        "an empty deviceID is kept, not dropped"
    );
    assert_eq!(ovs.trunk.as_ref().map(Vec::len), Some(2));

    let mixed: SpiderMultusConfig = assert_round_trip(&documents[2]);
    assert_eq!(mixed.spec.cni_type, Some(CniType::IbSriov));
    assert_eq!(
        mixed.spec.ibsriov.and_then(|config| config.link_state),
        Some(LinkState::Enable)
    );
    assert_eq!(
        mixed.spec.vlan.and_then(|config| config.vlan_mode),
        Some(VlanMode::Auto)
    );

    let coordinator: SpiderCoordinator = assert_round_trip(&documents[3]);
    assert_eq!(coordinator.spec.mode, Some(CoordinatorMode::Disabled));
    assert_eq!(coordinator.spec.pod_cidr_type, Some(PodCIDRType::Calico));
    assert_eq!(coordinator.spec.pod_rp_filter, Some(-1));

    let reserved: SpiderReservedIP = assert_round_trip(&documents[4]);
    assert_eq!(reserved.spec.ip_version, Some(6));
}

#[test]
fn an_object_without_optional_fields_serializes_without_inventing_any() {
    let pool = SpiderIPPool::new(
        "pool-v4",
        IPPoolSpec {
            subnet: "172.18.40.0/24".to_owned(),
            ..IPPoolSpec::default()
        },
    );
    assert_eq!(
        serde_json::to_value(&pool).expect("pool serializes"),
        json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1",
            "kind": "SpiderIPPool",
            "metadata": {"name": "pool-v4"},
            "spec": {"subnet": "172.18.40.0/24"},
        })
    );
    let smc = SpiderMultusConfig::new("custom", MultusCNIConfigSpec::default());
    assert_eq!(
        serde_json::to_value(&smc.spec).expect("spec serializes"),
        json!({})
    );
    assert_eq!(
        serde_json::to_value(CoordinatorSpec::default()).expect("spec serializes"),
        json!({})
    );
}

#[test]
fn spider_endpoint_carries_type_information_and_no_spec() {
    let endpoint = SpiderEndpoint::new(
        "web-0",
        WorkloadEndpointStatus {
            current: PodIPAllocation {
                uid: "uid-1".to_owned(),
                node: "worker-1".to_owned(),
                ips: vec![IPAllocationDetail {
                    nic: "eth0".to_owned(),
                    ipv4: Some("172.18.40.42/24".to_owned()),
                    ipv4_pool: Some("pool-v4".to_owned()),
                    ..IPAllocationDetail::default()
                }],
            },
            owner_controller_type: "StatefulSet".to_owned(),
            owner_controller_name: "web".to_owned(),
        },
    );
    let value = serde_json::to_value(&endpoint).expect("endpoint serializes");
    assert_eq!(value["apiVersion"], "spiderpool.spidernet.io/v2beta1");
    assert_eq!(value["kind"], "SpiderEndpoint");
    assert!(value.get("spec").is_none());
    assert_eq!(
        value["status"]["current"]["ips"],
        json!([{"interface": "eth0", "ipv4": "172.18.40.42/24", "ipv4Pool": "pool-v4"}])
    );
    assert_eq!(SpiderEndpoint::plural(&()), "spiderendpoints");
    assert_eq!(SpiderEndpoint::api_resource().plural, "spiderendpoints");
    assert_eq!(SpiderEndpoint::shortnames(), &["se"]);
    assert_eq!(
        SpiderEndpoint::crd_name(),
        "spiderendpoints.spiderpool.spidernet.io"
    );

    let back: SpiderEndpoint = serde_json::from_value(value).expect("endpoint deserializes");
    assert_eq!(back, endpoint);
}

#[test]
fn cni_type_uses_the_upstream_spelling() {
    assert_eq!(
        serde_json::to_value(CniType::IbSriov).expect("serializes"),
        json!("ib-sriov")
    );
    assert_eq!(CniType::IbSriov.to_string(), "ib-sriov");
    assert_eq!(CniType::default(), CniType::Custom);
    let all = [
        CniType::Macvlan,
        CniType::Ipvlan,
        CniType::Vlan,
        CniType::Sriov,
        CniType::Ovs,
        CniType::IbSriov,
        CniType::Ipoib,
        CniType::Custom,
    ];
    for cni_type in all {
        assert_eq!(
            serde_json::to_value(cni_type).expect("serializes"),
            json!(cni_type.as_str())
        );
    }
    assert!(serde_json::from_value::<CniType>(json!("ibsriov")).is_err());
}

// ---------------------------------------------------------------------------------------------
// Samples
// ---------------------------------------------------------------------------------------------

fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/samples")
}

fn sample(name: &str) -> Vec<Value> {
    let path = samples_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    yaml_documents(&text)
}

#[test]
fn kustomization_lists_every_sample_file() {
    let kustomization = sample("kustomization.yaml").remove(0);
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("resources list")
        .iter()
        .map(|entry| entry.as_str().expect("file name").to_owned())
        .collect();
    listed.sort();
    let mut present: Vec<String> = std::fs::read_dir(samples_dir())
        .expect("samples directory")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    present.sort();
    assert_eq!(listed, present);
}

#[test]
fn samples_are_valid_typed_objects_that_round_trip() {
    let subnets: Vec<SpiderSubnet> = sample("spidersubnet.yaml")
        .iter()
        .map(assert_round_trip)
        .collect();
    let pools: Vec<SpiderIPPool> = sample("spiderippool.yaml")
        .iter()
        .map(assert_round_trip)
        .collect();
    let reserved: Vec<SpiderReservedIP> = sample("spiderreservedip.yaml")
        .iter()
        .map(assert_round_trip)
        .collect();
    let smcs: Vec<SpiderMultusConfig> = [
        "spidermultusconfig-macvlan.yaml",
        "spidermultusconfig-macvlan-vlan-bond.yaml",
    ]
    .into_iter()
    .flat_map(sample)
    .map(|document| assert_round_trip(&document))
    .collect();
    let coordinators: Vec<SpiderCoordinator> = sample("spidercoordinator.yaml")
        .iter()
        .map(assert_round_trip)
        .collect();

    assert_eq!(
        (
            subnets.len(),
            pools.len(),
            reserved.len(),
            smcs.len(),
            coordinators.len()
        ),
        (2, 2, 1, 2, 1)
    );
    assert_eq!(coordinators[0].metadata.name.as_deref(), Some("default"));

    // Every pool has a subnet with the same CIDR, so the subnet adopts it.
    for pool in &pools {
        assert!(
            subnets
                .iter()
                .any(|subnet| subnet.spec.subnet == pool.spec.subnet),
            "pool {:?} has no subnet",
            pool.metadata.name
        );
    }
    // Default pools named by the SpiderMultusConfigs exist.
    let pool_names: Vec<&str> = pools
        .iter()
        .filter_map(|pool| pool.metadata.name.as_deref())
        .collect();
    for smc in &smcs {
        let ippools = smc
            .spec
            .macvlan
            .as_ref()
            .and_then(|config| config.ippools.as_ref());
        for name in ippools
            .into_iter()
            .flat_map(|pools| pools.ipv4.iter().chain(pools.ipv6.iter()).flatten())
        {
            assert!(pool_names.contains(&name.as_str()), "unknown pool {name}");
        }
    }
    // The vlan + bond sample really has both.
    let bonded = smcs
        .iter()
        .filter_map(|smc| smc.spec.macvlan.as_ref())
        .find(|config| config.bond.is_some())
        .expect("a sample with a bond");
    assert!(bonded.master.len() >= 2 && bonded.vlan_id.is_some_and(|id| id > 0));
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[test]
fn allocation_ledger_encodes_with_string_sorted_keys_and_vanishes_when_empty() {
    let mut ledger = PoolIPAllocations::new();
    for (address, pod) in [
        ("172.18.40.9", "default/web-0"),
        ("172.18.40.10", "default/nginx-7d9c-x2l4q"),
    ] {
        ledger.insert(
            address.to_owned(),
            PoolIPAllocation {
                namespaced_name: pod.to_owned(),
                pod_uid: format!("uid-{pod}"),
            },
        );
    }
    let mut status = IPPoolStatus::default();
    status.set_allocations(&ledger).expect("ledger encodes");
    assert_eq!(
        status.allocated_ips.as_deref(),
        Some(
            r#"{"172.18.40.10":{"pod":"default/nginx-7d9c-x2l4q","podUid":"uid-default/nginx-7d9c-x2l4q"},"172.18.40.9":{"pod":"default/web-0","podUid":"uid-default/web-0"}}"#
        )
    );
    assert_eq!(status.allocated_ip_count, Some(2));
    assert_eq!(status.allocations().expect("ledger decodes"), ledger);

    status
        .set_allocations(&PoolIPAllocations::new())
        .expect("empty ledger encodes");
    assert_eq!(
        (status.allocated_ips, status.allocated_ip_count),
        (None, Some(0))
    );
    assert!(
        IPPoolStatus::default()
            .allocations()
            .expect("absent ledger")
            .is_empty()
    );
}

#[test]
fn controlled_pools_encode_like_upstream() {
    let mut pools = PoolIPPreAllocations::new();
    pools.insert(
        "pool-v4".to_owned(),
        PoolIPPreAllocation {
            ips: vec!["172.18.40.40".to_owned()],
            application: None,
        },
    );
    pools.insert(
        "auto4-nginx-eth0-9a2b3".to_owned(),
        PoolIPPreAllocation {
            ips: vec!["172.18.40.10-172.18.40.12".to_owned()],
            application: Some("apps_v1_Deployment_default_nginx".to_owned()),
        },
    );
    let mut status = SubnetStatus::default();
    status.set_controlled_pools(&pools).expect("pools encode");
    assert_eq!(
        status.controlled_ip_pools.as_deref(),
        Some(
            r#"{"auto4-nginx-eth0-9a2b3":{"ips":["172.18.40.10-172.18.40.12"],"application":"apps_v1_Deployment_default_nginx"},"pool-v4":{"ips":["172.18.40.40"]}}"#
        )
    );
    assert_eq!(status.controlled_pools().expect("pools decode"), pools);
    status
        .set_controlled_pools(&PoolIPPreAllocations::new())
        .expect("empty map encodes");
    assert_eq!(status.controlled_ip_pools, None);
}

#[test]
fn controlled_pool_without_addresses_decodes_from_go_null() {
    let status = SubnetStatus {
        controlled_ip_pools: Some(r#"{"auto4-web-eth0-1a2b3":{"ips":null,"application":"apps_v1_Deployment_default_web"}}"#.to_owned()),
        ..SubnetStatus::default()
    };
    let pools = status.controlled_pools().expect("null ips decode");
    assert!(pools["auto4-web-eth0-1a2b3"].ips.is_empty());
}

#[test]
fn cidr_label_values_match_upstream_examples() {
    use crate::constants::cidr_label_value;
    assert_eq!(cidr_label_value("172.18.40.0/24"), "172-18-40-0-24");
    assert_eq!(cidr_label_value("abcd:1234::/120"), "abcd-1234---120");
    assert_eq!(cidr_label_value("fd00::/64"), "fd00---64");
    assert_eq!(cidr_label_value("fd00:172:18::/64"), "fd00-172-18---64");
}
