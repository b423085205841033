//! Auto-created IPPools (§4.3, §4.4) as API objects: their labels, affinity, the choice among
//! the pools carrying a workload's labels, the new pool and the update patch, and the one writer
//! of `SpiderSubnet.status` (compare-and-swap). [`reconcile`] is the one reconcile of a pool,
//! shared by the controller-manager's auto-pool controller and the CNI plugin (pods of
//! third-party controllers, [`third_party`]).

mod reconcile;
mod third_party;

pub use reconcile::{
    AutoPoolReads, AutoPoolWriter, Creation, PoolTarget, ReconcileError, Reconciled, Retry,
    RoundOutcome,
};
pub use third_party::ThirdPartyPool;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::constants::{
    ANNO_IPPOOL_IP_NUMBER, API_VERSION, AUTO_POOL_APP_API_GROUP, AUTO_POOL_APP_API_VERSION,
    AUTO_POOL_APP_KIND, AUTO_POOL_APP_NAME, AUTO_POOL_APP_NAMESPACE, FINALIZER, LABEL_INTERFACE,
    LABEL_IP_VERSION, LABEL_IPPOOL_CIDR, LABEL_IPPOOL_RECLAIM, LABEL_OWNER_APPLICATION_GV,
    LABEL_OWNER_APPLICATION_KIND, LABEL_OWNER_APPLICATION_NAME, LABEL_OWNER_APPLICATION_NAMESPACE,
    LABEL_OWNER_APPLICATION_UID, LABEL_OWNER_SPIDER_SUBNET, cidr_label_value,
};
use spiderpool_api::{IPPoolSpec, SpiderIPPool, SpiderSubnet};
use spiderpool_ipam::autopool::{AutoPoolAffinity, AutoPoolLabels, PreAllocation, application_key};
use spiderpool_ipam::ledger::ControlledIpPools;
use spiderpool_ipam::pod::AppRef;
use spiderpool_ipam::range::IpSet;

use crate::objects::{
    canonical_cidr, controlled_pools, is_reclaimable, label, pool_allocated_set, pool_ips,
    pool_name, subnet_name,
};

/// The labels that find a workload's pool (all of §2.5 but the UID and reclaim flag).
pub fn lookup_labels(labels: &AutoPoolLabels) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        (
            LABEL_OWNER_SPIDER_SUBNET,
            labels.owner_spider_subnet.clone(),
        ),
        (LABEL_OWNER_APPLICATION_GV, labels.application_gv.clone()),
        (
            LABEL_OWNER_APPLICATION_KIND,
            labels.application_kind.clone(),
        ),
        (
            LABEL_OWNER_APPLICATION_NAMESPACE,
            labels.application_namespace.clone(),
        ),
        (
            LABEL_OWNER_APPLICATION_NAME,
            labels.application_name.clone(),
        ),
        (LABEL_IP_VERSION, labels.ip_version.clone()),
        (LABEL_INTERFACE, labels.interface.clone()),
    ])
}

/// `key=value,...` of a label map.
pub fn label_selector<K: AsRef<str>>(labels: &BTreeMap<K, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{}={value}", key.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels that find the pool of one workload instance: the lookup labels and its UID (the
/// eight of upstream's `findAppAutoPool`).
pub fn instance_labels(labels: &AutoPoolLabels) -> BTreeMap<String, String> {
    let mut instance: BTreeMap<String, String> = lookup_labels(labels)
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect();
    instance.insert(
        LABEL_OWNER_APPLICATION_UID.to_string(),
        labels.application_uid.clone(),
    );
    instance
}

/// Every label of a new auto pool.
pub fn all_labels(labels: &AutoPoolLabels, cidr_label: String) -> BTreeMap<String, String> {
    let mut all = instance_labels(labels);
    all.insert(LABEL_IPPOOL_RECLAIM.to_string(), labels.reclaim.clone());
    all.insert(LABEL_IPPOOL_CIDR.to_string(), cidr_label);
    all
}

/// The pod affinity of an auto pool: the application's pods only.
pub fn affinity(app: &AppRef) -> LabelSelector {
    let values = AutoPoolAffinity::new(app);
    LabelSelector {
        match_labels: Some(BTreeMap::from([
            (AUTO_POOL_APP_API_GROUP.to_string(), values.api_group),
            (AUTO_POOL_APP_API_VERSION.to_string(), values.api_version),
            (AUTO_POOL_APP_KIND.to_string(), values.kind),
            (AUTO_POOL_APP_NAMESPACE.to_string(), values.namespace),
            (AUTO_POOL_APP_NAME.to_string(), values.name),
        ])),
        match_expressions: None,
    }
}

/// Upstream's choice among the pools carrying the lookup labels: skip reclaimable pools of a
/// previous workload with the same name (they are being deleted) and terminating pools.
pub fn choose<'a>(
    pools: impl IntoIterator<Item = &'a SpiderIPPool>,
    uid: &str,
) -> Option<&'a SpiderIPPool> {
    pools.into_iter().find(|pool| {
        pool.metadata.deletion_timestamp.is_none()
            && !(is_reclaimable(pool) && label(pool, LABEL_OWNER_APPLICATION_UID) != Some(uid))
    })
}

pub fn matches_labels(pool: &SpiderIPPool, wanted: &BTreeMap<&'static str, String>) -> bool {
    wanted
        .iter()
        .all(|(key, value)| label(pool, key) == Some(value.as_str()))
}

/// Whether the pool's metadata and addresses already say what the plan says.
pub fn pool_up_to_date(
    pool: &SpiderIPPool,
    labels: &AutoPoolLabels,
    annotation: &str,
    ips: &IpSet,
) -> bool {
    label(pool, LABEL_OWNER_APPLICATION_UID) == Some(labels.application_uid.as_str())
        && label(pool, LABEL_IPPOOL_RECLAIM) == Some(labels.reclaim.as_str())
        && pool
            .annotations()
            .get(ANNO_IPPOOL_IP_NUMBER)
            .is_some_and(|value| value == annotation)
        && pool_ips(pool).as_ref() == Some(ips)
}

/// Whether `pool` already is what a reconcile would make it (so a reconcile writes nothing):
/// `desired` addresses, exactly its record in `subnet` for `app`, every allocated address among
/// them, the subnet's CIDR, and the current UID/reclaim labels and IP-number annotation. Returns
/// the pool's addresses when it is.
pub fn settled_ips(
    pool: &SpiderIPPool,
    subnet: &SpiderSubnet,
    app: &AppRef,
    labels: &AutoPoolLabels,
    annotation: &str,
    desired: i64,
) -> Option<IpSet> {
    let ips = pool_ips(pool)?;
    let controlled = controlled_pools(subnet).ok()?;
    let record = controlled.0.get(&pool_name(pool))?;
    let recorded = IpSet::from_ranges(ips.version(), &record.ips).ok()?;
    let settled = u128::try_from(desired).ok() == Some(ips.count())
        && recorded == ips
        && record.application.as_deref() == Some(application_key(app).as_str())
        && canonical_cidr(&pool.spec.subnet) == canonical_cidr(&subnet.spec.subnet)
        && pool_allocated_set(pool, ips.version()).is_subset_of(&ips)
        && pool_up_to_date(pool, labels, annotation, &ips);
    settled.then_some(ips)
}

/// A new auto pool (§4.3): controlled by its subnet, with its finalizer, identity labels, the
/// subnet's gateway and routes, and the application's pods as its only tenants.
pub fn new_pool(
    name: &str,
    subnet: &SpiderSubnet,
    app: &AppRef,
    labels: &AutoPoolLabels,
    annotation: &str,
    plan: &PreAllocation,
    subnet_cidr: &str,
) -> SpiderIPPool {
    let owner = OwnerReference {
        api_version: API_VERSION.to_string(),
        kind: SpiderSubnet::kind(&()).to_string(),
        name: subnet_name(subnet),
        uid: subnet.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    SpiderIPPool {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(all_labels(labels, cidr_label_value(subnet_cidr))),
            annotations: Some(BTreeMap::from([(
                ANNO_IPPOOL_IP_NUMBER.to_string(),
                annotation.to_string(),
            )])),
            owner_references: Some(vec![owner]),
            finalizers: Some(vec![FINALIZER.to_string()]),
            ..ObjectMeta::default()
        },
        spec: IPPoolSpec {
            ip_version: Some(i64::from(plan.ips.version().number())),
            subnet: subnet.spec.subnet.clone(),
            ips: Some(plan.ips.to_range_strings()),
            gateway: subnet.spec.gateway.clone(),
            routes: subnet.spec.routes.clone(),
            pod_affinity: Some(affinity(app)),
            ..IPPoolSpec::default()
        },
        status: None,
    }
}

/// The JSON merge patch that brings an existing auto pool to the plan: exactly the fields the
/// reconciler owns (`spec.ips`, the UID and reclaim labels, the IP-number annotation),
/// conditioned on the resourceVersion the plan read: an address a pod took meanwhile is never
/// dropped, and a write of an older plan never lands last.
pub fn pool_update_patch(
    pool: &SpiderIPPool,
    labels: &AutoPoolLabels,
    annotation: &str,
    ips: &IpSet,
) -> Value {
    json!({
        "metadata": {
            "resourceVersion": pool.resource_version(),
            "labels": {
                LABEL_OWNER_APPLICATION_UID: labels.application_uid,
                LABEL_IPPOOL_RECLAIM: labels.reclaim,
            },
            "annotations": { ANNO_IPPOOL_IP_NUMBER: annotation },
        },
        "spec": {"ips": ips.to_range_strings()},
    })
}

/// The one writer of `SpiderSubnet.status`: `controlledIPPools` (absent when empty, as upstream
/// writes nil), `totalIPCount` and `allocatedIPCount`, as a JSON merge patch of the status
/// subresource conditioned on `read`'s resourceVersion (a compare-and-swap: `409 Conflict` means
/// someone else wrote first; callers re-read and plan again).
pub async fn write_subnet_status(
    api: &Api<SpiderSubnet>,
    read: &SpiderSubnet,
    controlled: &ControlledIpPools,
    total: i64,
    allocated: i64,
) -> Result<SpiderSubnet, kube::Error> {
    let patch = json!({
        "metadata": {"resourceVersion": read.resource_version()},
        "status": {
            "controlledIPPools": controlled.encode(),
            "totalIPCount": total,
            "allocatedIPCount": allocated,
        },
    });
    api.patch_status(
        &read.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use spiderpool_ipam::ip::IpVersion;

    fn app() -> AppRef {
        AppRef {
            group: "apps.kruise.io".into(),
            version: "v1alpha1".into(),
            kind: "CloneSet".into(),
            namespace: "default".into(),
            name: "web".into(),
            uid: "2d6a1f3e-5b7c-4d9e-8f10-9a2b3c4d5e6f".into(),
        }
    }

    fn pool(name: &str, uid: &str, reclaim: bool, terminating: bool) -> SpiderIPPool {
        let mut pool = SpiderIPPool::new(name, IPPoolSpec::default());
        pool.metadata.labels = Some(BTreeMap::from([
            (LABEL_OWNER_APPLICATION_UID.to_string(), uid.to_string()),
            (LABEL_IPPOOL_RECLAIM.to_string(), reclaim.to_string()),
        ]));
        if terminating {
            pool.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            );
        }
        pool
    }

    #[test]
    fn a_kept_pool_of_a_predecessor_is_reused_but_a_reclaimable_one_is_not() {
        let reclaimable = pool("a", "old", true, false);
        let kept = pool("b", "old", false, false);
        let terminating = pool("c", "new", true, true);
        let own = pool("d", "new", true, false);
        let pools = [reclaimable, kept, terminating, own];
        assert_eq!(
            choose(pools.iter(), "new").map(pool_name).as_deref(),
            Some("b")
        );
        assert_eq!(choose(pools[..1].iter(), "new"), None);
        assert_eq!(
            choose(pools[2..].iter(), "new").map(pool_name).as_deref(),
            Some("d")
        );
    }

    #[test]
    fn third_party_pools_carry_upstreams_identity() {
        let app = app();
        let labels = AutoPoolLabels::new("subnet-a", &app, "eth0", IpVersion::V4, true);
        let lookup = lookup_labels(&labels);
        assert_eq!(
            lookup[LABEL_OWNER_APPLICATION_GV],
            "apps.kruise.io_v1alpha1"
        );
        assert_eq!(lookup[LABEL_OWNER_APPLICATION_KIND], "CloneSet");
        assert_eq!(lookup[LABEL_IP_VERSION], "IPv4");
        assert!(!lookup.contains_key(LABEL_OWNER_APPLICATION_UID));
        assert_eq!(
            label_selector(&BTreeMap::from([
                ("a", "1".to_string()),
                ("b", "2".to_string())
            ])),
            "a=1,b=2"
        );
        let matched = affinity(&app).match_labels.unwrap_or_default();
        assert_eq!(matched[AUTO_POOL_APP_API_GROUP], "apps.kruise.io");
        assert_eq!(matched[AUTO_POOL_APP_API_VERSION], "v1alpha1");
        assert_eq!(matched[AUTO_POOL_APP_KIND], "CloneSet");
    }

    #[test]
    fn the_update_patch_is_conditioned_on_the_version_read() {
        let mut existing = pool("auto4-web-eth0-9a2b3", "old", false, false);
        existing.metadata.resource_version = Some("42".into());
        let app = app();
        let labels = AutoPoolLabels::new("subnet-a", &app, "eth0", IpVersion::V4, true);
        let ips = IpSet::from_ranges(IpVersion::V4, &["10.0.0.1-10.0.0.3".to_string()])
            .unwrap_or_else(|_| IpSet::new(IpVersion::V4));
        let patch = pool_update_patch(&existing, &labels, "3", &ips);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(
            patch["metadata"]["labels"][LABEL_OWNER_APPLICATION_UID],
            app.uid
        );
        assert_eq!(patch["metadata"]["labels"][LABEL_IPPOOL_RECLAIM], "true");
        assert_eq!(patch["metadata"]["annotations"][ANNO_IPPOOL_IP_NUMBER], "3");
        assert_eq!(patch["spec"]["ips"], json!(["10.0.0.1-10.0.0.3"]));
        assert!(!pool_up_to_date(&existing, &labels, "3", &ips));
    }
    #[test]
    fn new_pools_carry_upstreams_identity() {
        let mut subnet = SpiderSubnet::new(
            "subnet-v4",
            spiderpool_api::SubnetSpec {
                subnet: "172.16.0.0/16".into(),
                gateway: Some("172.16.0.1".into()),
                ..Default::default()
            },
        );
        subnet.metadata.uid = Some("subnet-uid".into());
        let app =
            AppRef::from_api_version("apps/v1", "Deployment", "default", "deployment1", "a-b-c");
        let labels = AutoPoolLabels::new("subnet-v4", &app, "eth0", IpVersion::V4, true);
        let plan = PreAllocation {
            ips: IpSet::from_ranges(IpVersion::V4, &["172.16.41.1"]).unwrap(),
            controlled: Default::default(),
            subnet_changed: true,
            change: spiderpool_ipam::autopool::PoolChange::Created,
            released: IpSet::new(IpVersion::V4),
        };
        let pool = new_pool(
            "auto4-deployment1-eth0-c",
            &subnet,
            &app,
            &labels,
            "1",
            &plan,
            "172.16.0.0/16",
        );
        let value = serde_json::to_value(&pool).unwrap();
        let labels = &value["metadata"]["labels"];
        assert_eq!(labels[LABEL_OWNER_APPLICATION_GV], "apps_v1");
        assert_eq!(labels[LABEL_IP_VERSION], "IPv4");
        assert_eq!(labels[LABEL_IPPOOL_RECLAIM], "true");
        assert_eq!(labels[LABEL_IPPOOL_CIDR], "172-16-0-0-16");
        assert_eq!(labels.as_object().map(|labels| labels.len()), Some(10));
        assert_eq!(value["metadata"]["annotations"][ANNO_IPPOOL_IP_NUMBER], "1");
        assert_eq!(
            value["metadata"]["ownerReferences"][0]["kind"],
            "SpiderSubnet"
        );
        assert_eq!(value["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(value["metadata"]["finalizers"][0], FINALIZER);
        assert_eq!(value["spec"]["ips"], json!(["172.16.41.1"]));
        assert_eq!(value["spec"]["gateway"], "172.16.0.1");
        assert_eq!(
            value["spec"]["podAffinity"]["matchLabels"][AUTO_POOL_APP_API_GROUP],
            "apps"
        );
        assert_eq!(value["spec"]["ipVersion"], 4);
    }
    #[test]
    fn a_pool_is_settled_only_when_it_is_exactly_its_record() {
        let app = app();
        let labels = AutoPoolLabels::new("subnet-a", &app, "eth0", IpVersion::V4, true);
        let name = "auto4-web-eth0-9a2b3";
        let subnet: SpiderSubnet = serde_json::from_value(json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderSubnet",
            "metadata": {"name": "subnet-a"},
            "spec": {"subnet": "10.0.0.0/24", "ips": ["10.0.0.1-10.0.0.100"]},
            "status": {"controlledIPPools": json!({name: {
                "ips": ["10.0.0.1-10.0.0.3"],
                "application": "apps.kruise.io_v1alpha1_CloneSet_default_web",
            }}).to_string()},
        }))
        .unwrap();
        let pool_with = |ips: &str, allocated: &str, annotation: &str| -> SpiderIPPool {
            serde_json::from_value(json!({
                "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
                "metadata": {"name": name, "annotations": {ANNO_IPPOOL_IP_NUMBER: annotation},
                    "labels": {LABEL_OWNER_APPLICATION_UID: app.uid, LABEL_IPPOOL_RECLAIM: "true"}},
                "spec": {"subnet": "10.0.0.0/24", "ips": [ips]},
                "status": {"allocatedIPs": json!({allocated: {"pod": "default/web-a", "podUid": "u"}}).to_string()},
            }))
            .unwrap()
        };
        let settled = pool_with("10.0.0.1-10.0.0.3", "10.0.0.2", "3");
        assert_eq!(
            settled_ips(&settled, &subnet, &app, &labels, "3", 3).map(|ips| ips.count()),
            Some(3)
        );
        // Another size, another annotation, a record that differs, an address outside it.
        assert!(settled_ips(&settled, &subnet, &app, &labels, "4", 4).is_none());
        assert!(settled_ips(&settled, &subnet, &app, &labels, "+3", 3).is_none());
        let wider = pool_with("10.0.0.1-10.0.0.4", "10.0.0.2", "4");
        assert!(settled_ips(&wider, &subnet, &app, &labels, "4", 4).is_none());
        let stray = pool_with("10.0.0.1-10.0.0.3", "10.0.0.9", "3");
        assert!(settled_ips(&stray, &subnet, &app, &labels, "3", 3).is_none());
    }
}
