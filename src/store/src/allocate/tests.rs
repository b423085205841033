//! The ADD executor against an API server that fails, answers late and loses answers
//! ([`crate::fake_api`]): what a failed ADD leaves behind, and what a repeated ADD repairs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spiderpool_api::constants::FINALIZER;
use spiderpool_ipam::config::IpamConfig;
use spiderpool_ipam::settings::ClusterSettings;

use super::{AddRequest, AddSource};
use crate::fake_api::{FakeApi, FaultKind, POOLS, RESERVED, endpoints};
use crate::{Backoff, Store, StoreError, StoreOptions};

const NAMESPACE: &str = "ns";
const POD: &str = "web-1";
const POD_UID: &str = "pod-uid-1";

fn pool(name: &str, version: u8, subnet: &str, ips: &str) -> Value {
    json!({"apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
           "metadata": {"name": name, "uid": format!("{name}-uid"), "finalizers": [FINALIZER]},
           "spec": {"ipVersion": version, "subnet": subnet, "ips": [ips]}})
}

/// A pod on `node-1` and two pools of two addresses each, `v4` and `v6`.
fn cluster() -> FakeApi {
    let api = FakeApi::default();
    api.insert(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    );
    api.insert(
        &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": POD, "namespace": NAMESPACE, "uid": POD_UID},
               "spec": {"nodeName": "node-1", "containers": []},
               "status": {"phase": "Pending"}}),
    );
    api.insert(POOLS, pool("v4", 4, "10.0.0.0/24", "10.0.0.10-10.0.0.11"));
    api.insert(POOLS, pool("v6", 6, "fd00::/64", "fd00::10-fd00::11"));
    api
}

fn store(api: &FakeApi) -> Store {
    let options = StoreOptions {
        lock_dir: None,
        backoff: Backoff {
            max_attempts: 3,
            initial: Duration::from_millis(20),
            cap: Duration::from_millis(20),
        },
    };
    Store::new(api.client(), options)
}

fn ipam() -> IpamConfig {
    IpamConfig {
        default_ipv4_ippool: vec!["v4".into()],
        default_ipv6_ippool: vec!["v6".into()],
        ..IpamConfig::default()
    }
}

async fn add(api: &FakeApi, timeout: Duration) -> Result<super::AddOutcome, StoreError> {
    let (ipam, settings) = (ipam(), ClusterSettings::default());
    let request = AddRequest {
        namespace: NAMESPACE,
        pod_name: POD,
        nic: "eth0",
        ipam: &ipam,
        settings: &settings,
        deadline: Instant::now() + timeout,
    };
    store(api).allocate(&request).await
}

/// The `ip -> pod UID` records of a pool.
fn ledger(api: &FakeApi, name: &str) -> Vec<(String, String)> {
    let pool = api.get(&format!("{POOLS}/{name}")).unwrap_or_default();
    let text = pool["status"]["allocatedIPs"].as_str().unwrap_or("{}");
    let records: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap_or_default();
    records
        .into_iter()
        .map(|(ip, record)| (ip, record["podUid"].as_str().unwrap_or_default().into()))
        .collect()
}

fn endpoint(api: &FakeApi) -> Option<Value> {
    api.get(&format!("{}/{POD}", endpoints(NAMESPACE)))
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_dual_stack_add_records_both_addresses_and_the_endpoint() {
    let api = cluster();
    let outcome = add(&api, 10 * SECOND).await.unwrap();
    assert_eq!(outcome.ips.len(), 2, "{outcome:?}");
    assert_eq!(ledger(&api, "v4"), [("10.0.0.10".into(), POD_UID.into())]);
    assert_eq!(ledger(&api, "v6"), [("fd00::10".into(), POD_UID.into())]);
    let stored = endpoint(&api).expect("an endpoint");
    assert_eq!(stored["status"]["current"]["uid"], POD_UID);
}

#[tokio::test]
async fn a_failing_second_pool_write_gives_back_the_first_address() {
    let api = cluster();
    api.fault("PATCH", "spiderippools/v6/status", 0, FaultKind::Fail(500));
    let error = add(&api, 10 * SECOND).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        ledger(&api, "v4").is_empty(),
        "the IPv4 record was rolled back"
    );
    assert!(ledger(&api, "v6").is_empty());
    assert!(endpoint(&api).is_none());
}

#[tokio::test]
async fn a_failing_endpoint_write_gives_back_every_address() {
    let api = cluster();
    api.fault("POST", "spiderendpoints", 0, FaultKind::Fail(500));
    let error = add(&api, 10 * SECOND).await.unwrap_err();
    assert!(error.to_string().contains("SpiderEndpoint"), "{error}");
    assert!(ledger(&api, "v4").is_empty());
    assert!(ledger(&api, "v6").is_empty());
    assert!(endpoint(&api).is_none());
}

#[tokio::test]
async fn an_endpoint_write_whose_answer_is_lost_keeps_the_allocation() {
    let api = cluster();
    api.fault("POST", "spiderendpoints", 0, FaultKind::Lose);
    let outcome = add(&api, 10 * SECOND).await.unwrap();
    assert!(
        matches!(outcome.source, AddSource::Allocated(_)),
        "{outcome:?}"
    );
    assert_eq!(ledger(&api, "v4"), [("10.0.0.10".into(), POD_UID.into())]);
    assert_eq!(ledger(&api, "v6"), [("fd00::10".into(), POD_UID.into())]);
    assert!(endpoint(&api).is_some());
    // The next ADD of the pod finds what the lost answer wrote.
    let again = add(&api, 10 * SECOND).await.unwrap();
    assert_eq!(again.source, AddSource::Existing);
}

#[tokio::test]
async fn a_rollback_that_fails_leaves_the_record_to_garbage_collection() {
    let api = cluster();
    api.fault("POST", "spiderendpoints", 0, FaultKind::Fail(500));
    // The v4 allocation is the first PATCH of v4's status, its rollback the second.
    api.fault("PATCH", "spiderippools/v4/status", 1, FaultKind::Fail(500));
    let error = add(&api, 10 * SECOND).await.unwrap_err();
    assert!(
        error.to_string().contains("SpiderEndpoint"),
        "the ADD reports its own failure, not the rollback's: {error}"
    );
    assert_eq!(ledger(&api, "v4"), [("10.0.0.10".into(), POD_UID.into())]);
    assert!(
        ledger(&api, "v6").is_empty(),
        "the other rollback still ran"
    );
}

#[tokio::test]
async fn a_conflict_answered_after_the_deadline_fails_the_add_and_rolls_back() {
    let api = cluster();
    // The IPv6 write is answered late, with a conflict: the call's deadline has passed by then.
    api.fault(
        "PATCH",
        "spiderippools/v6/status",
        0,
        FaultKind::Delay(Duration::from_millis(400)),
    );
    api.fault("PATCH", "spiderippools/v6/status", 0, FaultKind::Fail(409));
    let error = add(&api, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(error, StoreError::Deadline { .. }), "{error}");
    assert!(error.is_transient());
    assert!(
        ledger(&api, "v4").is_empty(),
        "rolled back after the deadline"
    );
    assert!(ledger(&api, "v6").is_empty());
}

#[tokio::test]
async fn a_lost_ledger_write_is_given_back_and_the_retry_starts_clean() {
    let api = cluster();
    api.fault("PATCH", "spiderippools/v6/status", 0, FaultKind::Lose);
    let error = add(&api, 10 * SECOND).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    // The lost write landed; the call did not know, but it had logged its intent on the pool, so
    // its rollback found the record there and gave it back with the IPv4 one.
    assert!(ledger(&api, "v4").is_empty());
    assert!(ledger(&api, "v6").is_empty(), "{:?}", ledger(&api, "v6"));
    let outcome = add(&api, 10 * SECOND).await.unwrap();
    assert_eq!(ledger(&api, "v6"), [("fd00::10".into(), POD_UID.into())]);
    assert_eq!(ledger(&api, "v4"), [("10.0.0.10".into(), POD_UID.into())]);
    assert_eq!(outcome.ips.len(), 2);
}

#[tokio::test]
async fn an_add_cut_off_by_its_deadline_in_flight_still_rolls_back() {
    let api = cluster();
    // The IPv6 write hangs far past the call's deadline (an API server that stopped answering).
    api.fault(
        "PATCH",
        "spiderippools/v6/status",
        0,
        FaultKind::Delay(Duration::from_secs(600)),
    );
    // Generous bound: the ADD must give up at its own deadline, not when the write answers.
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        add(&api, Duration::from_millis(300)),
    )
    .await
    .expect("the ADD returned after its deadline instead of waiting for the hung write");
    let error = outcome.unwrap_err();
    assert!(matches!(error, StoreError::Deadline { .. }), "{error}");
    assert!(
        ledger(&api, "v4").is_empty(),
        "the IPv4 record was rolled back"
    );
    assert!(ledger(&api, "v6").is_empty());
    assert!(endpoint(&api).is_none());
}

#[tokio::test]
async fn a_repeated_add_does_not_record_again_an_address_removed_from_the_pool() {
    let api = cluster();
    add(&api, 10 * SECOND).await.unwrap();
    // 10.0.0.10 is excluded from the pool and its record is gone (released by garbage collection);
    // the endpoint still names it.
    let mut v4 = api.get(&format!("{POOLS}/v4")).unwrap();
    v4["spec"]["excludeIPs"] = json!(["10.0.0.10"]);
    v4["status"]["allocatedIPs"] = Value::Null;
    v4["status"]["allocatedIPCount"] = json!(0);
    api.insert(POOLS, v4);
    let outcome = add(&api, 10 * SECOND).await.unwrap();
    assert!(
        matches!(outcome.source, AddSource::Allocated(_)),
        "{outcome:?}"
    );
    assert_eq!(ledger(&api, "v4"), [("10.0.0.11".into(), POD_UID.into())]);
    assert_eq!(ledger(&api, "v6"), [("fd00::10".into(), POD_UID.into())]);
    let stored = endpoint(&api).expect("a new endpoint");
    assert_eq!(
        stored["status"]["current"]["ips"][0]["ipv4"],
        "10.0.0.11/24"
    );
}

#[tokio::test]
async fn a_repeated_add_does_not_record_again_a_reserved_address() {
    let api = cluster();
    add(&api, 10 * SECOND).await.unwrap();
    api.insert(
        RESERVED,
        json!({"apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderReservedIP",
               "metadata": {"name": "hold"}, "spec": {"ipVersion": 4, "ips": ["10.0.0.10"]}}),
    );
    let mut v4 = api.get(&format!("{POOLS}/v4")).unwrap();
    v4["status"]["allocatedIPs"] = Value::Null;
    v4["status"]["allocatedIPCount"] = json!(0);
    api.insert(POOLS, v4);
    let outcome = add(&api, 10 * SECOND).await.unwrap();
    assert!(
        matches!(outcome.source, AddSource::Allocated(_)),
        "{outcome:?}"
    );
    assert_eq!(ledger(&api, "v4"), [("10.0.0.11".into(), POD_UID.into())]);
}

#[tokio::test]
async fn a_repeated_add_repairs_a_record_its_endpoint_lost() {
    let api = cluster();
    add(&api, 10 * SECOND).await.unwrap();
    // The IPv4 record goes (an earlier rollback that raced the endpoint write).
    let mut v4 = api.get(&format!("{POOLS}/v4")).unwrap();
    v4["status"]["allocatedIPs"] = Value::Null;
    api.insert(POOLS, v4);
    let outcome = add(&api, 10 * SECOND).await.unwrap();
    assert_eq!(outcome.source, AddSource::Existing);
    assert_eq!(ledger(&api, "v4"), [("10.0.0.10".into(), POD_UID.into())]);
}

#[tokio::test]
async fn an_endpoint_whose_address_another_pod_holds_is_replaced_by_a_fresh_allocation() {
    let api = cluster();
    add(&api, 10 * SECOND).await.unwrap();
    let mut v4 = api.get(&format!("{POOLS}/v4")).unwrap();
    v4["status"]["allocatedIPs"] =
        json!(json!({"10.0.0.10": {"pod": "ns/other", "podUid": "other-uid"}}).to_string());
    api.insert(POOLS, v4);
    let outcome = add(&api, 10 * SECOND).await.unwrap();
    assert!(
        matches!(outcome.source, AddSource::Allocated(_)),
        "{outcome:?}"
    );
    let v4 = ledger(&api, "v4");
    assert!(
        v4.contains(&("10.0.0.11".into(), POD_UID.into())),
        "a fresh address: {v4:?}"
    );
    assert!(v4.contains(&("10.0.0.10".into(), "other-uid".into())));
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.starts_with("DELETE") && request.contains("spiderendpoints")),
        "the stale endpoint was retired: {requests:?}"
    );
}

/// The pod as a StatefulSet member with this UID.
fn statefulset_pod(uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": POD, "namespace": NAMESPACE, "uid": uid,
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                             "name": "web", "uid": "sts-uid", "controller": true}]},
           "spec": {"nodeName": "node-1", "containers": []},
           "status": {"phase": "Pending"}})
}

#[tokio::test]
async fn a_recreated_statefulset_pod_whose_address_left_the_pool_is_allocated_afresh() {
    let api = cluster();
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    api.insert(&pods, statefulset_pod(POD_UID));
    add(&api, 10 * SECOND).await.unwrap();
    // The pod is re-created; meanwhile 10.0.0.10 was excluded from the pool and its record went.
    api.insert(&pods, statefulset_pod("pod-uid-2"));
    let mut v4 = api.get(&format!("{POOLS}/v4")).unwrap();
    v4["spec"]["excludeIPs"] = json!(["10.0.0.10"]);
    v4["status"]["allocatedIPs"] = Value::Null;
    v4["status"]["allocatedIPCount"] = json!(0);
    api.insert(POOLS, v4);
    let outcome = add(&api, 10 * SECOND).await.unwrap();
    assert!(
        matches!(outcome.source, AddSource::Allocated(_)),
        "{outcome:?}"
    );
    assert_eq!(
        ledger(&api, "v4"),
        [("10.0.0.11".into(), "pod-uid-2".into())]
    );
    assert_eq!(
        ledger(&api, "v6"),
        [("fd00::10".into(), "pod-uid-2".into())]
    );
    let stored = endpoint(&api).expect("a new endpoint");
    assert_eq!(stored["status"]["current"]["uid"], "pod-uid-2");
}
