//! IP garbage collection (§5.10), leader only.
//!
//! Two triggers feed one release path:
//! - **pod tracing**: pod events (terminating, finished, deleted) put the pod on a trace list with
//!   the time its grace period ends; every `trace_interval` the expired entries are collected;
//! - **scan all**: at start (once the caches are synced) and every `interval`, every record of
//!   every pool and every SpiderEndpoint is checked.
//!
//! A record whose pod is alive in the cache is kept without any API call. Every other record is
//! judged by [`spiderpool_ipam::gc::decide`] on a fresh read of the pod, its endpoint, its node and
//! its StatefulSet, and only a `Release` verdict on those fresh reads frees anything: the pool
//! record through the IPAM store's compare-and-swap writer (matching address AND pod UID, so a
//! re-used address is never freed), then the endpoint (its other addresses, its finalizer, the
//! object). Records of pods and endpoints younger than the fresh window are always kept, so a CNI
//! ADD in flight never loses its new address.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use spiderpool_api::SpiderEndpoint;
use spiderpool_ipam::gc::{
    EndpointState, GcSettings, KeepReason, Membership, PodState, RecordOwner, Verdict, decide,
};
use spiderpool_ipam::ledger::{IpAndUid, release};
use spiderpool_ipam::pod::{is_valid_statefulset_ordinal, statefulset_name_and_ordinal};
use spiderpool_store::objects::{self, is_conflict};
use spiderpool_store::{Step, Store as IpamStore, StoreError, StoreOptions};

use crate::runtime::admin::{Readiness, mark_ready_when_synced, synced};
use crate::runtime::metrics::ControllerMetrics;
use crate::shared::IpamShared;
use crate::shared::cache::IpamCache;
use crate::shared::metrics::IpamCounters;
use crate::shared::settings::SettingsFn;

pub const CONTROLLER_NAME: &str = "gc";
pub const READINESS: &str = "gc pod cache";

/// The collector's configuration (flags).
#[derive(Debug, Clone, Copy)]
pub struct GcConfig {
    pub interval: Duration,
    pub trace_interval: Duration,
    pub verdict: GcSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } if is_conflict(source) => "conflict",
            Error::Kube { .. } => "api_error",
            Error::Store(error) => error.metric_label(),
        }
    }
}

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// `namespace/name` of a pod.
type PodKey = (String, String);

/// `(pool, ip, pod UID)` of one ledger record.
type Record = (String, String, String);

/// Every record of every cached pool, by holder (`namespace/name`).
fn records_by_holder(cache: &IpamCache) -> HashMap<String, Vec<Record>> {
    let mut index: HashMap<String, Vec<Record>> = HashMap::new();
    for pool in cache.pools.state() {
        let Ok(ledger) = objects::pool_allocations(&pool) else {
            continue;
        };
        let name = objects::pool_name(&pool);
        for (ip, record) in ledger.iter() {
            index.entry(record.pod.clone()).or_default().push((
                name.clone(),
                ip.clone(),
                record.pod_uid.clone(),
            ));
        }
    }
    index
}

pub struct Context {
    pub client: Client,
    pub store: IpamStore,
    pub cache: IpamCache,
    pub counters: IpamCounters,
    pub metrics: ControllerMetrics,
    pub config: GcConfig,
    pub settings: SettingsFn,
    /// Pods to look at again, with the time their grace period ends.
    traced: Mutex<HashMap<PodKey, i64>>,
}

impl Context {
    pub fn new(shared: &IpamShared, metrics: ControllerMetrics, config: GcConfig) -> Context {
        metrics.declare(CONTROLLER_NAME);
        Context {
            store: IpamStore::new(shared.client.clone(), StoreOptions::default()),
            client: shared.client.clone(),
            cache: shared.cache.clone(),
            counters: shared.counters.clone(),
            metrics,
            config,
            settings: shared.settings.clone(),
            traced: Mutex::new(HashMap::new()),
        }
    }

    fn trace(&self, key: PodKey, deadline: i64) {
        let mut traced = self.traced.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = traced.entry(key).or_insert(deadline);
        *entry = (*entry).min(deadline);
    }

    fn take_expired(&self, now: i64) -> Vec<PodKey> {
        let mut traced = self.traced.lock().unwrap_or_else(PoisonError::into_inner);
        let expired: Vec<PodKey> = traced
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &expired {
            traced.remove(key);
        }
        expired
    }
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

fn seconds(time: &Time) -> i64 {
    time.0.as_second()
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.host_network)
        .unwrap_or(false)
}

/// The pod as [`decide`] sees it (the node's readiness is filled in by the caller).
pub fn pod_state(pod: &Pod) -> PodState {
    let status = pod.status.as_ref();
    let deletion_deadline = pod.metadata.deletion_timestamp.as_ref().map(|time| {
        seconds(time).saturating_add(pod.metadata.deletion_grace_period_seconds.unwrap_or(0))
    });
    let finished_at = status
        .and_then(|status| status.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|container| {
            container
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
        })
        .map(seconds)
        .max();
    let has_pod_ips = status.is_some_and(|status| {
        status.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
            || status.pod_ip.as_ref().is_some_and(|ip| !ip.is_empty())
    });
    PodState {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        phase: status
            .and_then(|status| status.phase.clone())
            .unwrap_or_default(),
        created_at: pod.metadata.creation_timestamp.as_ref().map(seconds),
        deletion_deadline,
        finished_at,
        termination_grace_seconds: pod
            .spec
            .as_ref()
            .and_then(|spec| spec.termination_grace_period_seconds)
            .unwrap_or(30),
        has_pod_ips,
        node_ready: None,
    }
}

/// When a pod event should make the collector look again (`None`: nothing to trace).
fn trace_deadline(pod: &Pod, settings: &GcSettings) -> Option<i64> {
    if host_network(pod) {
        return None;
    }
    let state = pod_state(pod);
    let delay = settings.additional_grace_delay_seconds;
    if let Some(deadline) = state.deletion_deadline {
        return Some(deadline.saturating_add(delay));
    }
    if matches!(state.phase.as_str(), "Succeeded" | "Failed") {
        let finished = state.finished_at.or(state.created_at).unwrap_or_else(now);
        return Some(
            finished
                .saturating_add(state.termination_grace_seconds.max(0))
                .saturating_add(delay),
        );
    }
    None
}

/// A pod in the cache that certainly keeps its addresses: same UID, not terminating, and Pending
/// or running with addresses.
fn cached_alive(pods: &Store<Pod>, namespace: &str, name: &str, uid: &str) -> bool {
    let Some(pod) = pods.get(&ObjectRef::new(name).within(namespace)) else {
        return false;
    };
    let state = pod_state(&pod);
    state.uid == uid
        && state.deletion_deadline.is_none()
        && (matches!(state.phase.as_str(), "" | "Pending")
            || (state.phase == "Running" && state.has_pod_ips))
}

fn split_pod(holder: &str) -> Option<PodKey> {
    let (namespace, name) = holder.split_once('/')?;
    Some((namespace.to_string(), name.to_string()))
}

/// Runs the collector until the future is dropped.
pub async fn run(context: Arc<Context>, readiness: Readiness) {
    let pods_api: Api<Pod> = Api::all(context.client.clone());
    let (pods, writer) = reflector::store();
    let ready = mark_ready_when_synced(pods.clone(), readiness, READINESS);
    let events = {
        let context = context.clone();
        watcher(pods_api, watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(writer)
            .for_each(move |event| {
                let context = context.clone();
                async move {
                    let settings = context.config.verdict;
                    match event {
                        Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                            if let Some(deadline) = trace_deadline(&pod, &settings) {
                                context.trace(
                                    (pod.namespace().unwrap_or_default(), pod.name_any()),
                                    deadline,
                                );
                            }
                        }
                        Ok(watcher::Event::Delete(pod)) if !host_network(&pod) => {
                            let deadline =
                                now().saturating_add(settings.additional_grace_delay_seconds);
                            context.trace(
                                (pod.namespace().unwrap_or_default(), pod.name_any()),
                                deadline,
                            );
                        }
                        Ok(_) => {}
                        Err(error) => tracing::warn!(%error, "pod watch error (retrying)"),
                    }
                }
            })
    };
    let traces = {
        let context = context.clone();
        async move {
            let mut ticks = tokio::time::interval(context.config.trace_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                for (namespace, name) in context.take_expired(now()) {
                    collect_pod(&context, &namespace, &name, None).await;
                }
            }
        }
    };
    let scans = {
        let context = context.clone();
        let pods = pods.clone();
        async move {
            // Scan once everything is listed, then every interval.
            if !synced(&pods).await {
                return;
            }
            context.cache.synced().await;
            loop {
                scan_all(&context, &pods).await;
                tokio::time::sleep(context.config.interval).await;
            }
        }
    };
    tokio::join!(ready, events, traces, scans);
}

/// Checks every record of every pool and every endpoint.
pub async fn scan_all(context: &Context, pods: &Store<Pod>) {
    let timer = context.metrics.start(CONTROLLER_NAME);
    let mut suspects: BTreeMap<PodKey, ()> = BTreeMap::new();
    let mut index = records_by_holder(&context.cache);
    for (holder, records) in &index {
        let Some((namespace, name)) = split_pod(holder) else {
            continue;
        };
        if records
            .iter()
            .any(|(_, _, uid)| !cached_alive(pods, &namespace, &name, uid))
        {
            suspects.insert((namespace, name), ());
        }
    }
    let endpoints: Api<SpiderEndpoint> = Api::all(context.client.clone());
    match endpoints.list(&ListParams::default()).await {
        Ok(list) => {
            for endpoint in list.items {
                let uid = endpoint
                    .status
                    .as_ref()
                    .map(|status| status.current.uid.clone())
                    .unwrap_or_default();
                let namespace = endpoint.namespace().unwrap_or_default();
                let name = endpoint.name_any();
                if !cached_alive(pods, &namespace, &name, &uid) {
                    suspects.insert((namespace, name), ());
                }
            }
        }
        Err(error) => {
            context.counters.gc_failed("api_error");
            tracing::warn!(%error, "listing SpiderEndpoints for garbage collection failed");
        }
    }
    let count = suspects.len();
    for (namespace, name) in suspects.into_keys() {
        let records = index
            .remove(&format!("{namespace}/{name}"))
            .unwrap_or_default();
        collect_pod(context, &namespace, &name, Some(records)).await;
    }
    timer.finish();
    tracing::debug!(checked = count, "garbage collection scan done");
}

/// Looks at everything held for `namespace/name` on fresh reads and releases what may go.
/// `records` are the cached records of the pod when the caller already has them.
pub async fn collect_pod(
    context: &Context,
    namespace: &str,
    name: &str,
    records: Option<Vec<Record>>,
) {
    if let Err(error) = collect_pod_inner(context, namespace, name, records).await {
        context.counters.gc_failed(error.metric_label());
        context
            .metrics
            .failure(CONTROLLER_NAME, error.metric_label());
        tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "garbage collection failed; retrying later");
        let retry = now().saturating_add(
            i64::try_from(context.config.trace_interval.as_secs())
                .unwrap_or(5)
                .max(1),
        );
        context.trace((namespace.to_string(), name.to_string()), retry);
    }
}

async fn membership(
    context: &Context,
    namespace: &str,
    name: &str,
    pod: Option<&Pod>,
    endpoint: Option<&SpiderEndpoint>,
) -> Result<Membership, Error> {
    let settings = (context.settings)();
    let controller_kind = match pod {
        Some(pod) => pod
            .owner_references()
            .iter()
            .find(|owner| owner.controller == Some(true))
            .map(|owner| owner.kind.clone())
            .unwrap_or_default(),
        None => endpoint
            .and_then(|endpoint| endpoint.status.as_ref())
            .map(|status| status.owner_controller_type.clone())
            .unwrap_or_default(),
    };
    match controller_kind.as_str() {
        "StatefulSet" if settings.enable_stateful_set => {
            let Some((parent, ordinal)) = statefulset_name_and_ordinal(name) else {
                return Ok(Membership::Static { valid: false });
            };
            let api: Api<StatefulSet> = Api::namespaced(context.client.clone(), namespace);
            let statefulset = api
                .get_opt(parent)
                .await
                .map_err(kube_error(format!("get StatefulSet {namespace}/{parent}")))?;
            let valid = statefulset.is_some_and(|statefulset| {
                let spec = statefulset.spec.as_ref();
                statefulset.metadata.deletion_timestamp.is_none()
                    && is_valid_statefulset_ordinal(
                        ordinal,
                        i64::from(spec.and_then(|spec| spec.replicas).unwrap_or(1)),
                        spec.and_then(|spec| spec.ordinals.as_ref())
                            .and_then(|ordinals| ordinals.start)
                            .map(i64::from),
                    )
            });
            Ok(Membership::Static { valid })
        }
        // KubeVirt VMs keep their addresses while they exist; this collector does not watch
        // them, so it never frees them.
        "VirtualMachineInstance" | "VirtualMachine" if settings.enable_kubevirt_static_ip => {
            Ok(Membership::Static { valid: true })
        }
        _ => Ok(Membership::Stateless),
    }
}

async fn node_ready(context: &Context, pod: &Pod) -> Result<Option<bool>, Error> {
    let Some(node) = pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref()) else {
        return Ok(None);
    };
    let nodes: Api<Node> = Api::all(context.client.clone());
    let node = nodes
        .get_opt(node)
        .await
        .map_err(kube_error(format!("get Node {node}")))?;
    Ok(node.map(|node| {
        node.status
            .and_then(|status| status.conditions)
            .into_iter()
            .flatten()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True")
    }))
}

async fn collect_pod_inner(
    context: &Context,
    namespace: &str,
    name: &str,
    records: Option<Vec<Record>>,
) -> Result<(), Error> {
    let holder = format!("{namespace}/{name}");
    // Records from the cache: a record the cache does not show yet is at most a fresh one.
    let records = records.unwrap_or_else(|| {
        records_by_holder(&context.cache)
            .remove(&holder)
            .unwrap_or_default()
    });
    let pod_api: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let pod = pod_api
        .get_opt(name)
        .await
        .map_err(kube_error(format!("get Pod {holder}")))?;
    if pod.as_ref().is_some_and(host_network) {
        return Ok(());
    }
    let endpoint_api: Api<SpiderEndpoint> = Api::namespaced(context.client.clone(), namespace);
    let endpoint = endpoint_api
        .get_opt(name)
        .await
        .map_err(kube_error(format!("get SpiderEndpoint {holder}")))?;
    if records.is_empty() && endpoint.is_none() {
        return Ok(());
    }
    let membership = membership(context, namespace, name, pod.as_ref(), endpoint.as_ref()).await?;
    let mut pod_view = pod.as_ref().map(pod_state);
    if let (Some(view), Some(pod)) = (pod_view.as_mut(), pod.as_ref())
        && view.deletion_deadline.is_some()
    {
        view.node_ready = node_ready(context, pod).await?;
    }
    let endpoint_view = endpoint.as_ref().map(|endpoint| EndpointState {
        uid: endpoint
            .status
            .as_ref()
            .map(|status| status.current.uid.clone())
            .unwrap_or_default(),
        created_at: endpoint.metadata.creation_timestamp.as_ref().map(seconds),
    });
    let settings = context.config.verdict;
    let at = now();
    // A fresh record is looked at again once it is no longer fresh.
    let fresh_until = at.saturating_add(settings.fresh_window_seconds);
    let key = || (namespace.to_string(), name.to_string());
    let mut release_endpoint = false;
    let mut endpoint_reason = None;
    for (pool, ip, uid) in &records {
        let verdict = decide(
            &RecordOwner { uid: uid.clone() },
            pod_view.as_ref(),
            endpoint_view.as_ref(),
            membership,
            at,
            &settings,
        );
        match verdict {
            Verdict::Release { reason, endpoint } => {
                if release_record(context, pool, ip, uid).await? {
                    context.counters.gc_released(reason.as_str());
                    tracing::info!(pool = %pool, ip = %ip, pod = %holder, uid = %uid, reason = reason.as_str(), "released a leaked IP");
                }
                if endpoint {
                    release_endpoint = true;
                    endpoint_reason = Some(reason);
                }
            }
            Verdict::KeepUntil { deadline } => {
                context.trace((namespace.to_string(), name.to_string()), deadline)
            }
            Verdict::Keep(reason) => {
                context.counters.gc_kept(reason.as_str());
                if reason == KeepReason::Fresh {
                    context.trace(key(), fresh_until);
                }
            }
        }
    }
    if let (Some(endpoint), Some(view)) = (endpoint.as_ref(), endpoint_view.as_ref()) {
        let verdict = decide(
            &RecordOwner {
                uid: view.uid.clone(),
            },
            pod_view.as_ref(),
            endpoint_view.as_ref(),
            membership,
            at,
            &settings,
        );
        match verdict {
            Verdict::Release {
                reason,
                endpoint: true,
            } => {
                release_endpoint = true;
                endpoint_reason.get_or_insert(reason);
            }
            Verdict::KeepUntil { deadline } => {
                context.trace((namespace.to_string(), name.to_string()), deadline)
            }
            Verdict::Keep(KeepReason::Fresh) => context.trace(key(), fresh_until),
            _ => {}
        }
        if release_endpoint {
            retire_endpoint(context, endpoint, &view.uid).await?;
            if let Some(reason) = endpoint_reason {
                tracing::info!(endpoint = %holder, reason = reason.as_str(), "released a SpiderEndpoint");
            }
        }
    }
    Ok(())
}

/// Frees `ip` in `pool` if its record still names `uid`; `Ok(true)` when something was freed.
// The step's error type is the IPAM store's.
#[allow(clippy::result_large_err)]
async fn release_record(context: &Context, pool: &str, ip: &str, uid: &str) -> Result<bool, Error> {
    let releases = [IpAndUid::new(ip, uid)];
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = context
        .store
        .pool_writer()
        .update(pool, None, deadline, |current| {
            let records = objects::pool_allocations(current)?;
            Ok(match release(&records, &releases) {
                Some((_, status)) => Step::Write(status, true),
                None => Step::Done(false),
            })
        })
        .await;
    match result {
        Ok((released, _stats)) => Ok(released),
        Err(StoreError::PoolGone { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Frees every address the endpoint records for `uid`, then removes its finalizer and deletes it.
async fn retire_endpoint(
    context: &Context,
    endpoint: &SpiderEndpoint,
    uid: &str,
) -> Result<(), Error> {
    if let Some(status) = &endpoint.status {
        for detail in &status.current.ips {
            for (address, pool) in [
                (&detail.ipv4, &detail.ipv4_pool),
                (&detail.ipv6, &detail.ipv6_pool),
            ] {
                let (Some(address), Some(pool)) = (address, pool) else {
                    continue;
                };
                let bare = address.split('/').next().unwrap_or_default();
                if release_record(context, pool, bare, uid).await? {
                    context.counters.gc_released("endpoint_released");
                }
            }
        }
    }
    context.store.retire_endpoint(endpoint, true).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_state_reads_deadlines_finish_times_and_addresses() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "deletionTimestamp": "2026-01-01T00:10:00Z",
                         "deletionGracePeriodSeconds": 30},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 10},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}],
                       "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false,
                           "restartCount": 0, "state": {"terminated": {"exitCode": 0,
                           "finishedAt": "2026-01-01T00:05:00Z"}}}]}
        }))
        .unwrap();
        let state = pod_state(&pod);
        let created = Time(k8s_openapi::jiff::Timestamp::from_second(1_767_225_600).unwrap());
        assert_eq!(state.created_at, Some(seconds(&created)));
        assert_eq!(state.deletion_deadline, Some(1_767_225_600 + 600 + 30));
        assert_eq!(state.finished_at, Some(1_767_225_600 + 300));
        assert_eq!(state.termination_grace_seconds, 10);
        assert!(state.has_pod_ips);
        let settings = GcSettings::default();
        assert_eq!(
            trace_deadline(&pod, &settings),
            Some(1_767_225_600 + 630 + settings.additional_grace_delay_seconds)
        );
    }

    #[test]
    fn running_pods_are_not_traced_and_expired_traces_are_taken_once() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u"},
            "spec": {"containers": []},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        assert_eq!(trace_deadline(&pod, &GcSettings::default()), None);
        assert_eq!(split_pod("ns/name"), Some(("ns".into(), "name".into())));
        assert_eq!(split_pod("broken"), None);
    }
}
