use std::collections::BTreeMap;

use super::*;
use crate::annotations::{ANNO_POOL_IP_NUMBER, ANNO_SUBNET};
use crate::pod::AppRef;

/// A consistent cluster: pod `ns/web-1` holds 10.0.0.2 of the manual pool `manual` (subnet
/// `s1`), StatefulSet member `ns/db-0` holds 10.0.0.3, Deployment `ns/app` (2 replicas, +1)
/// owns the auto pool `auto4-app-eth0-u1` (10.0.0.10-10.0.0.12) of `s1`.
fn consistent() -> Snapshot {
    let records = r#"{"10.0.0.2":{"pod":"ns/web-1","podUid":"u-web"},"10.0.0.3":{"pod":"ns/db-0","podUid":"u-db"}}"#;
    Snapshot {
        namespace: None,
        settings: ClusterSettings {
            enable_ipv6: false,
            ..ClusterSettings::default()
        },
        pools: vec![
            PoolState {
                name: "manual".into(),
                ip_version: Some(IpVersion::V4),
                subnet: "10.0.0.0/24".into(),
                ips: vec!["10.0.0.2-10.0.0.5".into()],
                exclude_ips: vec!["10.0.0.5".into()],
                allocated_ips: Some(records.into()),
                allocated_ip_count: Some(2),
                owner_subnet: Some("s1".into()),
                auto: None,
            },
            PoolState {
                name: "auto4-app-eth0-u1".into(),
                ip_version: Some(IpVersion::V4),
                subnet: "10.0.0.0/24".into(),
                ips: vec!["10.0.0.10-10.0.0.12".into()],
                exclude_ips: vec![],
                allocated_ips: None,
                allocated_ip_count: None,
                owner_subnet: Some("s1".into()),
                auto: Some(AutoPoolOwner {
                    kind: "Deployment".into(),
                    namespace: "ns".into(),
                    name: "app".into(),
                    uid: "u1".into(),
                    interface: "eth0".into(),
                    ip_version: "IPv4".into(),
                    reclaim: true,
                }),
            },
        ],
        subnets: vec![SubnetState {
            name: "s1".into(),
            subnet: "10.0.0.0/24".into(),
            ips: vec!["10.0.0.2-10.0.0.20".into()],
            exclude_ips: vec![],
            controlled_ip_pools: Some(
                r#"{"auto4-app-eth0-u1":{"ips":["10.0.0.10-10.0.0.12"],"application":"apps_v1_Deployment_ns_app"},"manual":{"ips":["10.0.0.2-10.0.0.4"]}}"#
                    .into(),
            ),
            allocated_ip_count: Some(6),
            total_ip_count: Some(19),
        }],
        endpoints: vec![endpoint("web-1", "u-web", "10.0.0.2/24"), endpoint("db-0", "u-db", "10.0.0.3/24")],
        pods: vec![pod("web-1", "u-web"), pod("db-0", "u-db")],
        statefulsets: vec![StatefulSetState {
            namespace: "ns".into(),
            name: "db".into(),
            replicas: 1,
            ordinals_start: None,
        }],
        workloads: vec![WorkloadView {
            app: AppRef::from_api_version("apps/v1", "Deployment", "ns", "app", "u1"),
            replicas: 2,
            host_network: false,
            annotations: BTreeMap::from([
                (ANNO_SUBNET.to_string(), r#"{"ipv4":["s1"]}"#.to_string()),
                (ANNO_POOL_IP_NUMBER.to_string(), "+1".to_string()),
            ]),
        }],
    }
}

fn pod(name: &str, uid: &str) -> PodState {
    PodState {
        namespace: "ns".into(),
        name: name.into(),
        uid: uid.into(),
    }
}

fn endpoint(name: &str, uid: &str, ip: &str) -> EndpointState {
    EndpointState {
        namespace: "ns".into(),
        name: name.into(),
        uid: uid.into(),
        addresses: vec![EndpointAddress {
            interface: "eth0".into(),
            pool: "manual".into(),
            ip: ip.into(),
        }],
        terminating: false,
    }
}

fn kinds(snapshot: &Snapshot) -> Vec<&'static str> {
    check(snapshot).iter().map(Violation::kind).collect()
}

fn set_records(snapshot: &mut Snapshot, records: &str, count: i64) {
    snapshot.pools[0].allocated_ips = Some(records.into());
    snapshot.pools[0].allocated_ip_count = Some(count);
}

#[test]
fn a_consistent_snapshot_has_no_violation() {
    assert_eq!(check(&consistent()), Vec::<Violation>::new());
}

#[test]
fn an_unreadable_ledger_is_reported() {
    let mut snapshot = consistent();
    snapshot.pools[0].allocated_ips = Some("{not json".into());
    assert!(kinds(&snapshot).contains(&"ledger_unreadable"));
}

#[test]
fn a_record_of_a_pod_that_does_not_exist_is_reported_with_pool_address_and_pod() {
    let mut snapshot = consistent();
    snapshot.pods.retain(|pod| pod.name != "web-1");
    let violations = check(&snapshot);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].kind(), "record_pod_missing");
    assert_eq!(
        violations[0].to_string(),
        "SpiderIPPool manual records 10.0.0.2 for pod ns/web-1 (uid u-web), which does not exist"
    );
}

#[test]
fn a_record_of_an_earlier_pod_with_the_same_name_is_reported() {
    let mut snapshot = consistent();
    snapshot.pods[0].uid = "u-web-2".into();
    let violations = check(&snapshot);
    assert_eq!(violations[0].kind(), "record_uid_mismatch");
    assert!(
        violations[0]
            .to_string()
            .contains("the pod's uid is u-web-2")
    );
}

#[test]
fn a_statefulset_member_is_kept_while_its_pod_is_gone_but_not_after_a_scale_down() {
    let mut snapshot = consistent();
    snapshot.pods.retain(|pod| pod.name != "db-0");
    assert_eq!(check(&snapshot), Vec::<Violation>::new());
    snapshot.pods.push(pod("db-0", "u-db-new"));
    assert_eq!(check(&snapshot), Vec::<Violation>::new());
    snapshot.statefulsets[0].replicas = 0;
    assert_eq!(kinds(&snapshot), vec!["record_uid_mismatch"]);
    snapshot.settings.enable_stateful_set = false;
    snapshot.statefulsets[0].replicas = 1;
    assert_eq!(kinds(&snapshot), vec!["record_uid_mismatch"]);
}

#[test]
fn a_record_outside_the_pools_addresses_is_reported() {
    let mut snapshot = consistent();
    set_records(
        &mut snapshot,
        r#"{"10.0.0.5":{"pod":"ns/web-1","podUid":"u-web"},"10.0.0.3":{"pod":"ns/db-0","podUid":"u-db"}}"#,
        2,
    );
    snapshot.endpoints[0].addresses[0].ip = "10.0.0.5/24".into();
    assert_eq!(kinds(&snapshot), vec!["record_outside_pool"]);
}

#[test]
fn a_record_without_endpoint_is_reported() {
    let mut snapshot = consistent();
    snapshot.endpoints.remove(0);
    assert_eq!(kinds(&snapshot), vec!["endpoint_missing"]);
}

#[test]
fn an_endpoint_with_another_uid_or_address_disagrees() {
    let mut snapshot = consistent();
    snapshot.endpoints[0].uid = "u-other".into();
    let violations = check(&snapshot);
    assert!(violations.iter().any(|violation| {
        violation.kind() == "endpoint_disagrees"
            && violation
                .to_string()
                .contains("holds uid u-other instead of u-web")
    }));
    let mut snapshot = consistent();
    snapshot.endpoints[0].addresses[0].ip = "10.0.0.4/24".into();
    let kinds = kinds(&snapshot);
    assert!(kinds.contains(&"endpoint_disagrees"), "{kinds:?}");
    assert!(kinds.contains(&"endpoint_not_recorded"), "{kinds:?}");
}

#[test]
fn an_endpoint_entry_of_a_missing_pool_is_not_recorded() {
    let mut snapshot = consistent();
    snapshot.endpoints[0].addresses.push(EndpointAddress {
        interface: "net1".into(),
        pool: "gone".into(),
        ip: "10.1.0.2/24".into(),
    });
    let violations = check(&snapshot);
    assert_eq!(violations.len(), 1);
    assert_eq!(
        violations[0].to_string(),
        "SpiderEndpoint ns/web-1 (uid u-web) holds 10.1.0.2 of SpiderIPPool gone on net1, but the pool does not exist"
    );
}

#[test]
fn one_address_in_two_pools_is_a_duplicate() {
    let mut snapshot = consistent();
    let mut copy = snapshot.pools[0].clone();
    copy.name = "copy".into();
    copy.owner_subnet = None;
    copy.allocated_ips = Some(r#"{"10.0.0.2":{"pod":"ns/other","podUid":"u-o"}}"#.into());
    copy.allocated_ip_count = Some(1);
    snapshot.pools.push(copy);
    snapshot.pods.push(pod("other", "u-o"));
    snapshot.endpoints.push(EndpointState {
        addresses: vec![EndpointAddress {
            interface: "eth0".into(),
            pool: "copy".into(),
            ip: "10.0.0.2/24".into(),
        }],
        ..endpoint("other", "u-o", "")
    });
    let violations = check(&snapshot);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(
        violations[0].to_string(),
        "address 10.0.0.2 is recorded more than once: manual: ns/web-1 (u-web); copy: ns/other (u-o)"
    );
}

#[test]
fn a_count_that_differs_from_the_records_is_reported() {
    let mut snapshot = consistent();
    snapshot.pools[0].allocated_ip_count = Some(3);
    assert_eq!(kinds(&snapshot), vec!["pool_count_mismatch"]);
}

#[test]
fn subnet_status_must_equal_its_pools() {
    let mut snapshot = consistent();
    snapshot.subnets[0].controlled_ip_pools = Some("[]".into());
    assert_eq!(kinds(&snapshot), vec!["subnet_unreadable"]);

    let mut snapshot = consistent();
    snapshot.subnets[0].controlled_ip_pools = Some(
        r#"{"auto4-app-eth0-u1":{"ips":["10.0.0.10-10.0.0.12"]},"gone":{"ips":["10.0.0.2-10.0.0.4"]}}"#.into(),
    );
    assert_eq!(
        kinds(&snapshot),
        vec!["subnet_record_without_pool", "subnet_record_missing"]
    );

    let mut snapshot = consistent();
    snapshot.pools[1].ips = vec!["10.0.0.10-10.0.0.13".into()];
    let kinds = kinds(&snapshot);
    assert_eq!(kinds, vec!["subnet_record_mismatch", "auto_pool_size"]);

    let mut snapshot = consistent();
    snapshot.subnets[0].allocated_ip_count = Some(5);
    snapshot.subnets[0].total_ip_count = None;
    let violations = check(&snapshot);
    assert_eq!(
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![
            "SpiderSubnet s1: status.allocatedIPCount is 5 but should be 6",
            "SpiderSubnet s1: status.totalIPCount is 0 but should be 19",
        ]
    );
}

#[test]
fn auto_pools_must_match_their_workload() {
    let mut snapshot = consistent();
    snapshot.workloads[0].replicas = 3;
    let violations = check(&snapshot);
    assert_eq!(
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec![
            "SpiderIPPool auto4-app-eth0-u1 of Deployment ns/app has 3 addresses but the IP-number rule asks for 4"
        ]
    );

    let mut snapshot = consistent();
    if let Some(owner) = snapshot.pools[1].auto.as_mut() {
        owner.reclaim = false;
    }
    assert_eq!(kinds(&snapshot), vec!["auto_pool_label"]);

    let mut snapshot = consistent();
    snapshot.workloads[0].app.uid = "u2".into();
    assert_eq!(
        kinds(&snapshot),
        vec!["auto_pool_missing", "auto_pool_orphan"]
    );

    // A workload naming a subnet that does not exist expects no pool.
    snapshot.subnets.clear();
    snapshot.pools.retain(|pool| pool.auto.is_none());
    snapshot.pools[0].owner_subnet = None;
    assert_eq!(check(&snapshot), Vec::<Violation>::new());

    let mut snapshot = consistent();
    snapshot.workloads.clear();
    assert_eq!(kinds(&snapshot), vec!["auto_pool_orphan"]);
    // A pool kept on purpose (reclaim false) may outlive its workload.
    if let Some(owner) = snapshot.pools[1].auto.as_mut() {
        owner.reclaim = false;
    }
    assert_eq!(check(&snapshot), Vec::<Violation>::new());
}

#[test]
fn a_namespace_scope_ignores_what_belongs_to_other_namespaces() {
    let mut snapshot = consistent();
    snapshot.pods.clear();
    snapshot.endpoints.clear();
    snapshot.workloads.clear();
    snapshot.namespace = Some("elsewhere".into());
    assert_eq!(check(&snapshot), Vec::<Violation>::new());
    snapshot.namespace = Some("ns".into());
    assert!(!check(&snapshot).is_empty());
}

#[test]
fn the_serialized_kind_is_the_stable_label() {
    let mut snapshot = consistent();
    snapshot.pods.clear();
    snapshot.pools[0].allocated_ip_count = Some(7);
    snapshot.subnets[0].total_ip_count = Some(1);
    snapshot.workloads[0].replicas = 9;
    for violation in check(&snapshot) {
        let value = serde_json::to_value(&violation).expect("a violation serializes");
        assert_eq!(value["kind"], violation.kind());
    }
}
