//! Seed corpora, built from what the repository already holds: the string literals of the unit
//! tests of each parser (annotation values, ranges, CIDRs, ledger strings), the golden
//! SpiderMultusConfigs of the renderer's tests, and the objects of `config/samples`, wrapped in
//! AdmissionReviews for every operation their hooks see. A few hand-written inputs cover shapes
//! the tests do not (a CNI environment, stdin of each plugin, hostile sizes).

use serde_json::{Value, json};
use spiderpool_ipam::PoolView;
use spiderpool_ipam::ip::IpVersion;

use crate::Target;

const SAMPLES: [&str; 7] = [
    include_str!("../../../config/samples/spiderippool.yaml"),
    include_str!("../../../config/samples/spidersubnet.yaml"),
    include_str!("../../../config/samples/spiderreservedip.yaml"),
    include_str!("../../../config/samples/spidercoordinator.yaml"),
    include_str!("../../../config/samples/spidermultusconfig-macvlan.yaml"),
    include_str!("../../../config/samples/spidermultusconfig-macvlan-vlan-bond.yaml"),
    include_str!("../../../config/samples/deployment-autopool.yaml"),
];

const ANNOTATION_TESTS: [&str; 5] = [
    include_str!("../../../src/ipam/src/annotations.rs"),
    include_str!("../../../src/ipam/src/selection/mod.rs"),
    include_str!("../../../src/ipam/src/selection/filter.rs"),
    include_str!("../../../src/ipam/src/multus.rs"),
    include_str!("../../../src/controller-manager/src/webhook/annotations.rs"),
];

const RANGE_TESTS: [&str; 4] = [
    include_str!("../../../src/ipam/src/range.rs"),
    include_str!("../../../src/ipam/src/cidr.rs"),
    include_str!("../../../src/ipam/src/pool_ips.rs"),
    include_str!("../../../src/ipam/src/routes.rs"),
];

const LEDGER_TESTS: &str = include_str!("../../../src/ipam/src/ledger.rs");
const RENDER_TESTS: &str =
    include_str!("../../../src/controller-manager/src/multusconfig/render_tests.rs");
const CNI_TESTS: [&str; 3] = [
    include_str!("../../../src/cni/src/coordinator/config.rs"),
    include_str!("../../../src/cni/src/ifacer.rs"),
    include_str!("../../../src/cni/src/protocol/result.rs"),
];

/// The string literals of a Rust source file (plain and raw), unescaped for `\"`, `\\` and
/// `\n`; good enough for test vectors, which is all this reads.
pub fn string_literals(source: &str) -> Vec<String> {
    let bytes = source.as_bytes();
    let mut literals = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index..].starts_with(b"r#\"") {
            let start = index + 3;
            match source[start..].find("\"#") {
                Some(length) => {
                    literals.push(source[start..start + length].to_string());
                    index = start + length + 2;
                }
                None => break,
            }
        } else if bytes[index] == b'"' {
            let mut literal = String::new();
            let mut chars = source[index + 1..].char_indices();
            let mut end = None;
            while let Some((offset, character)) = chars.next() {
                match character {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => literal.push('\n'),
                        Some((_, 't')) => literal.push('\t'),
                        Some((_, other)) => literal.push(other),
                        None => break,
                    },
                    '"' => {
                        end = Some(index + 1 + offset + 1);
                        break;
                    }
                    other => literal.push(other),
                }
            }
            let Some(end) = end else {
                break;
            };
            literals.push(literal);
            index = end;
        } else if bytes[index] == b'\'' && index + 2 < bytes.len() && bytes[index + 2] == b'\'' {
            // A character literal such as '"': skip it whole.
            index += 3;
        } else {
            index += 1;
        }
    }
    literals
}

fn with_selector(selector: u8, text: &str) -> Vec<u8> {
    let mut bytes = vec![selector];
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// The objects of `config/samples` as JSON.
pub fn sample_objects() -> Vec<Value> {
    let mut objects = Vec::new();
    for sample in SAMPLES {
        for document in serde_yaml::Deserializer::from_str(sample) {
            if let Ok(value) = serde::Deserialize::deserialize(document) {
                let value: Value = value;
                if value.is_object() {
                    objects.push(value);
                }
            }
        }
    }
    objects
}

/// The golden SpiderMultusConfigs of the renderer's tests, as JSON.
pub fn golden_multus_configs() -> Vec<Value> {
    string_literals(RENDER_TESTS)
        .into_iter()
        .filter(|literal| literal.starts_with("metadata:"))
        .filter_map(|literal| serde_yaml::from_str::<Value>(&literal).ok())
        .map(|mut value| {
            value["apiVersion"] = json!("spiderpool.spidernet.io/v2beta1");
            value["kind"] = json!("SpiderMultusConfig");
            value
        })
        .collect()
}

/// An AdmissionReview as the API server posts it.
pub fn review(operation: &str, object: Option<&Value>, old_object: Option<&Value>) -> Value {
    let source = object.or(old_object).cloned().unwrap_or(Value::Null);
    let api_version = source["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let mut request = json!({
        "uid": "00000000-0000-0000-0000-000000000001",
        "kind": {"group": group, "version": version, "kind": source["kind"]},
        "resource": {"group": group, "version": version, "resource": "objects"},
        "name": source["metadata"]["name"],
        "namespace": source["metadata"]["namespace"],
        "operation": operation,
        "userInfo": {"username": "fuzz"},
    });
    if let Some(object) = object {
        request["object"] = object.clone();
    }
    if let Some(old_object) = old_object {
        request["oldObject"] = old_object.clone();
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// The webhook hooks (their index in `Hook::ALL`) that judge an object of `kind`.
fn hooks_of(kind: &str) -> &'static [u8] {
    match kind {
        "SpiderIPPool" => &[0, 1],
        "SpiderSubnet" => &[2, 3],
        "SpiderReservedIP" => &[4, 5],
        "SpiderMultusConfig" => &[6, 7],
        "SpiderCoordinator" => &[8, 9],
        "Pod" => &[10],
        "Namespace" => &[12],
        _ => &[11],
    }
}

fn annotation_values() -> Vec<String> {
    let mut values: Vec<String> = ANNOTATION_TESTS
        .iter()
        .flat_map(|source| string_literals(source))
        .filter(|literal| literal.starts_with('{') || literal.starts_with('['))
        .collect();
    values.extend(
        [
            "+1",
            "2",
            "-1",
            "true",
            "false",
            "0",
            "ens192@net1",
            "kube-system/macvlan@net1",
        ]
        .map(String::from),
    );
    values.sort();
    values.dedup();
    values
}

fn pod_with_annotations(annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "fuzz", "namespace": "default", "annotations": annotations},
           "spec": {"containers": [{"name": "c", "image": "pause"}]}})
}

/// The seeds of a target.
pub fn seeds(target: Target) -> Vec<Vec<u8>> {
    match target {
        Target::Annotations => {
            let mut seeds = Vec::new();
            for value in annotation_values() {
                for selector in 0..7 {
                    seeds.push(with_selector(selector, &value));
                }
                seeds.push(with_selector(
                    7,
                    &format!("ipam.spidernet.io/ippools={value}\nipam.spidernet.io/default-route-nic=net1"),
                ));
            }
            seeds
        }
        Target::Ranges => {
            let literals: Vec<String> = RANGE_TESTS
                .iter()
                .flat_map(|source| string_literals(source))
                .filter(|literal| {
                    !literal.is_empty()
                        && literal.len() < 80
                        && literal.chars().any(|character| character.is_ascii_digit())
                        && literal.chars().all(|character| {
                            character.is_ascii_hexdigit() || ":./-, \n".contains(character)
                        })
                })
                .collect();
            let mut seeds = Vec::new();
            for literal in &literals {
                for selector in [0, 1, 7] {
                    seeds.push(with_selector(selector, literal));
                }
            }
            for pair in literals.chunks(4) {
                let lines = pair.join("\n");
                seeds.push(with_selector(2, &lines));
                seeds.push(with_selector(3, &format!("{}\n\n{}", pair[0], pair[pair.len() - 1])));
                seeds.push(with_selector(4, &lines));
            }
            seeds.push(with_selector(5, "10.0.0.0/24\n10.0.0.1-10.0.0.100\n\n10.0.0.50-10.0.0.60"));
            seeds.push(with_selector(5, "fd00::/64\nfd00::1-fd00::ff\n\nfd00::10"));
            seeds.push(with_selector(6, "10.0.0.0/24\n0.0.0.0/0 10.0.0.1\n10.1.0.0/16 10.0.0.254"));
            seeds.push(with_selector(3, "10.0.0.0-10.255.255.255\n\n10.0.0.1"));
            seeds.push(with_selector(4, "fd00::-fd00::ffff:ffff:ffff:ffff\n\nfd00::"));
            seeds
        }
        Target::Ledger => {
            let mut seeds: Vec<Vec<u8>> = string_literals(LEDGER_TESTS)
                .into_iter()
                .filter(|literal| literal.starts_with('{'))
                .flat_map(|literal| [with_selector(0, &literal), with_selector(1, &literal)])
                .collect();
            seeds.push(with_selector(
                0,
                r#"{"10.0.0.1":{"pod":"default/a","podUid":"u1"},"10.0.0.3":{"pod":"default/b","podUid":"u2"},"fd00::1":null}"#,
            ));
            seeds.push(with_selector(
                1,
                r#"{"pool-a":{"ips":["10.0.0.1-10.0.0.5"],"application":"apps_v1_Deployment_default_web"},"pool-b":{"ips":null}}"#,
            ));
            seeds
        }
        Target::CniEnv => vec![
            b"CNI_COMMAND=ADD\nCNI_CONTAINERID=abc\nCNI_NETNS=/var/run/netns/x\nCNI_IFNAME=eth0\nCNI_PATH=/opt/cni/bin\nCNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u;IgnoreUnknown=1".to_vec(),
            b"CNI_COMMAND=DEL\nCNI_CONTAINERID=abc\nCNI_IFNAME=net1\nCNI_PATH=/opt/cni/bin:/usr/lib/cni\nCNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;FOO=bar".to_vec(),
            b"CNI_COMMAND=CHECK\nCNI_CONTAINERID=a.b_c-d\nCNI_NETNS=/proc/1/ns/net\nCNI_IFNAME=eth0\nCNI_PATH=/bin".to_vec(),
            b"CNI_COMMAND=VERSION".to_vec(),
            b"CNI_COMMAND=STATUS\nCNI_ARGS=;;".to_vec(),
            b"CNI_COMMAND=GC\nCNI_ARGS=IgnoreUnknown=true;IP=10.0.0.1".to_vec(),
        ],
        Target::CniConfig => cni_config_seeds(),
        Target::Selection => selection_seeds(),
        Target::Webhook => webhook_seeds(),
        Target::MultusConfig => {
            let mut objects = golden_multus_configs();
            objects.extend(
                sample_objects()
                    .into_iter()
                    .filter(|object| object["kind"] == json!("SpiderMultusConfig")),
            );
            objects.iter().map(|object| object.to_string().into_bytes()).collect()
        }
    }
}

fn cni_config_seeds() -> Vec<Vec<u8>> {
    let prev_result = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "00:11:22:33:44:55", "sandbox": "/var/run/netns/x"}],
        "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}], "dns": {"nameservers": ["10.96.0.10"]}});
    let configs = [
        json!({"cniVersion": "0.3.1", "name": "macvlan", "type": "macvlan",
               "ipam": {"type": "spiderpool", "log_level": "debug", "default_ipv4_ippool": ["pool-v4"],
                        "default_ipv6_ippool": ["pool-v6"], "clean_gateway": true}}),
        json!({"cniVersion": "1.0.0", "name": "n", "type": "coordinator", "mode": "underlay",
               "podDefaultRouteNic": "net1", "hijackCIDR": ["10.96.0.0/12"], "podMACPrefix": "0a:1b",
               "policyRoutes": [{"dst": "10.1.0.0/16", "gw": "10.0.0.1"}], "hostRuleTable": 500,
               "vethLinkAddress": "169.254.0.1", "prevResult": prev_result}),
        json!({"cniVersion": "0.4.0", "name": "n", "type": "ifacer", "interfaces": ["ens192", "ens224"],
               "vlanID": 100, "bond": {"name": "bond0", "mode": 1, "options": "primary=ens192;miimon=100"}}),
        json!({"cniVersion": "1.1.0", "name": "n", "type": "coordinator", "mode": "overlay",
               "prevResult": {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.0.0.5/24"}]}}),
    ];
    let mut seeds = Vec::new();
    for (index, config) in configs.iter().enumerate() {
        let text = config.to_string();
        for command in 0..4u8 {
            let selector = u8::try_from(index % 3).unwrap_or(0) + command * 3;
            seeds.push(with_selector(selector, &text));
        }
    }
    for literal in CNI_TESTS.iter().flat_map(|source| string_literals(source)) {
        if literal.starts_with('{') {
            for selector in 0..3 {
                seeds.push(with_selector(selector, &literal));
            }
        }
    }
    seeds.push(with_selector(
        7,
        "ipamUnixSocketPath: /var/run/spidernet/spiderpool.sock\nenableIPv4: true\nenableIPv6: false\nenableSpiderSubnet: true\nclusterSubnetDefaultFlexibleIPNumber: 1\ncniTimeoutSeconds: 30\n",
    ));
    seeds
}

fn selection_seeds() -> Vec<Vec<u8>> {
    let mut v4 = PoolView::new("pool-v4", IpVersion::V4, "10.0.0.0/24");
    v4.ips = vec!["10.0.0.10-10.0.0.20".into()];
    v4.gateway = Some("10.0.0.1".into());
    v4.default = true;
    let mut v6 = PoolView::new("pool-v6", IpVersion::V6, "fd00::/120");
    v6.ips = vec!["fd00::10-fd00::20".into()];
    v6.node_name = vec!["node-1".into()];
    v6.namespace_name = vec!["default".into()];
    let pools = serde_json::to_value([v4, v6]).unwrap_or_default();
    let mut seeds = Vec::new();
    for value in annotation_values() {
        for key in [
            "ipam.spidernet.io/ippool",
            "ipam.spidernet.io/ippools",
            "ipam.spidernet.io/subnets",
        ] {
            let input = json!({
                "pod": {"namespace": "default", "name": "web-0", "uid": "u", "nodeName": "node-1",
                        "annotations": {key: value}, "topController": {"group": "apps", "version": "v1",
                        "kind": "StatefulSet", "namespace": "default", "name": "web", "uid": "app-uid"}},
                "nic": "eth0",
                "ipam": {"type": "spiderpool", "default_ipv4_ippool": ["pool-v4"]},
                "settings": {"enableIPv4": true, "enableIPv6": true, "enableSpiderSubnet": true,
                             "enableAutoPoolForApplication": true, "ipPoolMaxAllocatedIPs": 5000},
                "pools": pools,
            });
            seeds.push(input.to_string().into_bytes());
        }
    }
    seeds
}

fn webhook_seeds() -> Vec<Vec<u8>> {
    let mut objects = sample_objects();
    objects.extend(golden_multus_configs());
    for value in annotation_values().into_iter().take(40) {
        objects.push(pod_with_annotations(
            json!({"ipam.spidernet.io/ippool": value}),
        ));
        objects.push(pod_with_annotations(
            json!({"ipam.spidernet.io/ippools": value}),
        ));
    }
    objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "ns", "annotations": {"ipam.spidernet.io/default-ipv4-ippool": "[\"existing-v4\"]"}}}));
    let mut seeds = Vec::new();
    for object in &objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let mut changed = object.clone();
        changed["metadata"]["labels"] = json!({"changed": "yes"});
        let reviews = [
            review("CREATE", Some(object), None),
            review("UPDATE", Some(&changed), Some(object)),
            review("DELETE", None, Some(object)),
        ];
        for hook in hooks_of(kind) {
            for review in &reviews {
                let mut bytes = vec![*hook];
                bytes.extend_from_slice(review.to_string().as_bytes());
                seeds.push(bytes);
            }
        }
    }
    seeds.push(b"\x01{not json".to_vec());
    seeds
}
