//! The SpiderCoordinator controller (leader only).
//!
//! It keeps the SpiderCoordinator named `default` present and its status true: the pod and
//! service CIDRs of the cluster, `phase` `Synced` or `NotReady` with a reason. The sources are
//! read fresh at every reconcile ([`super::detect`] turns them into the status); watches on each
//! of them (the kube-system ConfigMaps `kubeadm-config` and `cilium-config`, the
//! kube-controller-manager pods, Nodes, ServiceCIDRs, Calico IPPools and CiliumPodIPPools) only
//! trigger the reconcile. A watch of an API that is not served (Calico or Cilium not installed)
//! keeps retrying with a backoff capped at 10 s, so installing it later is noticed within
//! seconds; a periodic resync covers anything else. The status is written by server-side apply: this controller is its only writer.
//!
//! Decisions (upstream differs):
//! - The default object is created by this controller whenever it is missing, with the defaults
//!   of upstream's chart (upstream's `spiderpool-init` job creates it once at install). A manifest
//!   in `config/` would be applied while the webhook that validates it is not yet serving, and
//!   the plugin cannot work without the object; deleting it therefore resets it to the defaults,
//!   like Kubernetes' own `default` Namespace.
//! - No finalizer: nothing needs cleaning up when the object goes, and a finalizer would make
//!   the deletion (and the CRD's uninstall) hang whenever this controller is not running. A
//!   `spiderpool.spidernet.io` finalizer left by upstream's webhook is removed on deletion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use spiderpool_api::constants::{API_VERSION, FINALIZER};
use spiderpool_api::{CoordinatorMode, CoordinatorSpec, PodCIDRType, SpiderCoordinator};
use spiderpool_store::objects::{is_already_exists, is_not_found};
use tokio::sync::Notify;

use super::detect::{
    self, CILIUM_CONFIG, CalicoPool, Detection, KCM_SELECTOR, KUBEADM_CONFIG, PHASE_SYNCED,
    SYSTEM_NAMESPACE, Sources,
};
use crate::runtime::admin::{Readiness, synced};
use crate::runtime::backoff::ErrorBackoff;
use crate::runtime::metrics::ControllerMetrics;
use crate::runtime::reconcile::{Events, Frame};

pub const CONTROLLER_NAME: &str = "coordinator";
/// Field manager of the status this controller applies.
pub const FIELD_MANAGER: &str = "spiderpool-coordinator-controller";
pub const READINESS: &str = "coordinator cache";
/// The only SpiderCoordinator the plugin and this controller use.
pub const DEFAULT_NAME: &str = "default";
/// Re-detection without a trigger: sources we cannot watch well (an API installed while its
/// watch is backing off) are picked up within this time.
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    ReadSource {
        what: &'static str,
        source: kube::Error,
    },
    #[error("creating the default SpiderCoordinator: {0}")]
    CreateDefault(#[source] kube::Error),
    #[error("applying the SpiderCoordinator status: {0}")]
    ApplyStatus(#[source] kube::Error),
    #[error("removing the finalizer of the terminating SpiderCoordinator: {0}")]
    RemoveFinalizer(#[source] kube::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadSource { .. } => "read_source",
            Error::CreateDefault(_) => "create_default",
            Error::ApplyStatus(_) => "apply_status",
            Error::RemoveFinalizer(_) => "remove_finalizer",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub events: Events,
    pub frame: Frame,
}

impl Context {
    pub fn new(client: Client, metrics: ControllerMetrics) -> Self {
        // One object: a failed read of a source is retried soon, at most every 5 minutes.
        let backoff = ErrorBackoff::new(Duration::from_millis(200), RESYNC);
        let frame = Frame::new(CONTROLLER_NAME, metrics, backoff);
        let events = Events::new(&client, "Reconcile");
        Self {
            client,
            events,
            frame,
        }
    }
}

fn calico_pools() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("crd.projectcalico.org", "v1", "IPPool"),
        "ippools",
    )
}

fn cilium_pools() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2alpha1", "CiliumPodIPPool"),
        "ciliumpodippools",
    )
}

fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

/// Runs the controller until the future is dropped (leadership lost or shutdown).
pub async fn run(context: Arc<Context>, readiness: Readiness) {
    let client = context.client.clone();
    let coordinators: Api<SpiderCoordinator> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let missing = Arc::new(Notify::new());
    let notify = missing.clone();
    let coordinator_stream = watcher(coordinators, by_name(DEFAULT_NAME))
        .default_backoff()
        .reflect(writer)
        .inspect(move |event| {
            // After the first list and after a deletion the object may be missing.
            if matches!(
                event,
                Ok(watcher::Event::InitDone | watcher::Event::Delete(_))
            ) {
                notify.notify_one();
            }
        })
        .touched_objects();
    let system_config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let system_pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let triggers = stream::select_all([
        source_trigger(
            "kubeadm-config",
            watcher(system_config_maps.clone(), by_name(KUBEADM_CONFIG)),
        ),
        source_trigger(
            "cilium-config",
            watcher(system_config_maps, by_name(CILIUM_CONFIG)),
        ),
        source_trigger(
            "kube-controller-manager pods",
            watcher(system_pods, watcher::Config::default().labels(KCM_SELECTOR)),
        ),
        source_trigger(
            "nodes",
            // Only a change of a Node's pod CIDRs matters, not its heartbeats.
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                .backoff(CappedBackoff::default())
                .applied_objects()
                .predicate_filter(
                    |node: &Node| {
                        let spec = node.spec.as_ref();
                        Some(hash_of(&(
                            spec.and_then(|s| s.pod_cidr.clone()),
                            spec.and_then(|s| s.pod_cidrs.clone()),
                        )))
                    },
                    Default::default(),
                )
                .map(|result| result.map(|_| watcher::Event::<()>::InitDone)),
        ),
        source_trigger(
            "ServiceCIDRs",
            watcher(
                Api::<ServiceCIDR>::all(client.clone()),
                watcher::Config::default(),
            ),
        ),
        source_trigger(
            "Calico IPPools",
            watcher(
                Api::<DynamicObject>::all_with(client.clone(), &calico_pools()),
                watcher::Config::default(),
            ),
        ),
        source_trigger(
            "CiliumPodIPPools",
            watcher(
                Api::<DynamicObject>::all_with(client.clone(), &cilium_pools()),
                watcher::Config::default(),
            ),
        ),
    ]);
    let controller = Controller::for_stream(coordinator_stream, reader.clone())
        .reconcile_on(triggers.map(|()| ObjectRef::new(DEFAULT_NAME)));
    let outcomes = controller.run(reconcile, error_policy, context.clone());
    let frame = context
        .frame
        .run(reader.clone(), readiness, READINESS, outcomes);
    tokio::join!(
        frame,
        keep_default_present(reader, missing, context.clone())
    );
}

fn hash_of<T: std::hash::Hash>(value: &T) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value)
}

/// One `()` per change of a source. Errors (most often: the API is not served because Calico or
/// Cilium is not installed) are logged at debug level and retried with backoff.
fn source_trigger<E, S>(what: &'static str, events: S) -> BoxStream<'static, ()>
where
    S: futures::Stream<Item = Result<watcher::Event<E>, watcher::Error>> + Send + 'static,
    E: Send + 'static,
{
    events
        .backoff(CappedBackoff::default())
        .filter_map(move |event| {
            future::ready(match event {
                // The first list's objects arrive one by one: one trigger at its end is enough.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                Ok(_) => Some(()),
                Err(error) => {
                    tracing::debug!(source = what, %error, "coordinator source watch (retrying)");
                    None
                }
            })
        })
        .boxed()
}

/// Doubling from 500 ms up to [`CappedBackoff::MAX`]: an API that is not served (yet) is
/// listed again at least that often, so installing Calico or Cilium later is noticed within
/// seconds, at the cost of one cheap failed list per missing API and interval.
struct CappedBackoff {
    next: Duration,
}

impl CappedBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);
}

impl Default for CappedBackoff {
    fn default() -> Self {
        CappedBackoff { next: Self::FIRST }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (current * 2).min(Self::MAX);
        Some(current)
    }
}

impl kube::runtime::utils::Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Creates the default object whenever the cache shows it missing (after the first list and
/// after each deletion).
async fn keep_default_present(
    store: Store<SpiderCoordinator>,
    missing: Arc<Notify>,
    context: Arc<Context>,
) {
    let api: Api<SpiderCoordinator> = Api::all(context.client.clone());
    let key = ObjectRef::new(DEFAULT_NAME);
    loop {
        missing.notified().await;
        if !synced(&store).await {
            return;
        }
        loop {
            if store.get(&key).is_some() {
                break;
            }
            let outcome = context
                .frame
                .timed(DEFAULT_NAME, create_default(&api))
                .await;
            match outcome {
                Ok(()) => break,
                Err(error) => {
                    let action = error.metric_label();
                    context.frame.failure(action);
                    tracing::warn!(%error, "creating the default SpiderCoordinator (retrying)");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }
}

/// The object upstream's install creates, with upstream's chart defaults.
pub fn default_object() -> SpiderCoordinator {
    SpiderCoordinator::new(
        DEFAULT_NAME,
        CoordinatorSpec {
            mode: Some(CoordinatorMode::Auto),
            pod_cidr_type: Some(PodCIDRType::Auto),
            hijack_cidr: Some(vec!["169.254.0.0/16".into()]),
            tune_pod_routes: Some(true),
            host_rule_table: Some(500),
            pod_rp_filter: Some(0),
            tx_queue_len: Some(0),
            veth_mtu: Some(1500),
            ..CoordinatorSpec::default()
        },
    )
}

async fn create_default(api: &Api<SpiderCoordinator>) -> Result<(), Error> {
    match api.create(&PostParams::default(), &default_object()).await {
        Ok(_) => {
            tracing::info!("created the default SpiderCoordinator");
            Ok(())
        }
        Err(error) if is_already_exists(&error) => Ok(()),
        Err(error) => Err(Error::CreateDefault(error)),
    }
}

async fn reconcile(
    coordinator: Arc<SpiderCoordinator>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    context
        .frame
        .timed(
            &coordinator.name_any(),
            reconcile_inner(&coordinator, &context),
        )
        .await
}

fn error_policy(
    coordinator: Arc<SpiderCoordinator>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    context
        .frame
        .requeue(&coordinator.name_any(), error.metric_label(), error, false)
}

async fn reconcile_inner(
    coordinator: &SpiderCoordinator,
    context: &Context,
) -> Result<Action, Error> {
    let api: Api<SpiderCoordinator> = Api::all(context.client.clone());
    let name = coordinator.name_any();
    if coordinator.meta().deletion_timestamp.is_some() {
        if coordinator.finalizers().iter().any(|f| f == FINALIZER) {
            let kept: Vec<&String> = coordinator
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .collect();
            // Compare-and-swap: never drop a finalizer someone added meanwhile.
            let patch = json!({"metadata": {
                "finalizers": kept,
                "resourceVersion": coordinator.resource_version(),
            }});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(Error::RemoveFinalizer(error)),
            }
        }
        return Ok(Action::await_change());
    }

    let sources = read_sources(&context.client).await?;
    let detection = detect::detect(coordinator.spec.pod_cidr_type, &sources);
    let current = coordinator.status.as_ref();
    let unchanged = current.is_some_and(|status| {
        status.phase == detection.phase
            && status.reason.as_deref() == Some(detection.reason.as_str())
            && status.overlay_pod_cidr.as_deref() == Some(detection.overlay_pod_cidr.as_slice())
            && status.service_cidr.as_deref() == Some(detection.service_cidr.as_slice())
    });
    if !unchanged {
        tracing::info!(
            phase = detection.phase,
            reason = %detection.reason,
            pod_cidrs = ?detection.overlay_pod_cidr,
            service_cidrs = ?detection.service_cidr,
            "updating the SpiderCoordinator status"
        );
        apply_status(&api, &name, &detection).await?;
    }
    let previous_phase = current.map(|status| status.phase.as_str());
    if previous_phase != Some(detection.phase) {
        let (type_, reason) = if detection.phase == PHASE_SYNCED {
            (EventType::Normal, "Synced")
        } else {
            (EventType::Warning, "NotReady")
        };
        context
            .events
            .publish(coordinator, type_, reason, detection.reason.clone())
            .await;
    }
    Ok(Action::requeue(RESYNC))
}

async fn apply_status(
    api: &Api<SpiderCoordinator>,
    name: &str,
    detection: &Detection,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": API_VERSION,
        "kind": "SpiderCoordinator",
        "status": {
            "phase": detection.phase,
            "reason": detection.reason,
            "overlayPodCIDR": detection.overlay_pod_cidr,
            "serviceCIDR": detection.service_cidr,
        },
    });
    match api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: the deletion's own event brings the next reconcile.
        Err(error) if is_not_found(&error) => Ok(()),
        Err(error) => Err(Error::ApplyStatus(error)),
    }
}

/// Any `404`: an API that is not served answers with a plain-text `404 page not found`, which
/// carries no `NotFound` reason.
fn is_404(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// `Ok(None)` when the API is not served (`404`).
async fn list_if_served<K>(
    api: Api<K>,
    params: &ListParams,
    what: &'static str,
) -> Result<Option<Vec<K>>, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list(params).await {
        Ok(list) => {
            let mut items: Vec<K> = list
                .items
                .into_iter()
                .filter(|item| item.meta().deletion_timestamp.is_none())
                .collect();
            items.sort_by(|a, b| {
                let key = |object: &K| {
                    (
                        object.meta().creation_timestamp.clone(),
                        object.meta().name.clone(),
                    )
                };
                key(a).cmp(&key(b))
            });
            Ok(Some(items))
        }
        Err(error) if is_404(&error) => Ok(None),
        Err(source) => Err(Error::ReadSource { what, source }),
    }
}

/// Data of the kube-system ConfigMap `name`, read by a list limited to it (what its RBAC
/// grants: `list`/`watch` of that name only).
async fn system_config_map(
    client: &Client,
    name: &str,
    what: &'static str,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let params = ListParams::default().fields(&format!("metadata.name={name}"));
    let found = list_if_served(api, &params, what).await?;
    Ok(found
        .and_then(|items| items.into_iter().next())
        .map(|config_map| config_map.data.unwrap_or_default()))
}

fn string_list(value: Option<&serde_json::Value>) -> Vec<String> {
    value
        .and_then(|v| v.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn read_sources(client: &Client) -> Result<Sources, Error> {
    let mut sources = Sources {
        kubeadm_config: system_config_map(client, KUBEADM_CONFIG, "kubeadm-config").await?,
        cilium_config: system_config_map(client, CILIUM_CONFIG, "cilium-config").await?,
        ..Sources::default()
    };
    let system_pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let controller_managers = list_if_served(
        system_pods,
        &ListParams::default().labels(KCM_SELECTOR),
        "kube-controller-manager pods",
    )
    .await?;
    sources.controller_manager_args = controller_managers
        .and_then(|pods| pods.into_iter().next())
        .map(|pod| {
            pod.spec
                .and_then(|spec| spec.containers.into_iter().next())
                .map(|container| {
                    let mut arguments = container.command.unwrap_or_default();
                    arguments.extend(container.args.unwrap_or_default());
                    arguments
                })
                .unwrap_or_default()
        });
    if detect::needs_nodes(&sources) {
        let nodes = list_if_served(
            Api::<Node>::all(client.clone()),
            &ListParams::default(),
            "nodes",
        )
        .await?;
        sources.node_pod_cidrs = nodes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|node| node.spec)
            .flat_map(|spec| match spec.pod_cidrs {
                Some(cidrs) if !cidrs.is_empty() => cidrs,
                _ => spec.pod_cidr.into_iter().collect(),
            })
            .collect();
    }
    sources.service_cidrs = list_if_served(
        Api::<ServiceCIDR>::all(client.clone()),
        &ListParams::default(),
        "ServiceCIDRs",
    )
    .await?
    .map(|objects| {
        objects
            .into_iter()
            .flat_map(|object| object.spec.and_then(|spec| spec.cidrs).unwrap_or_default())
            .collect()
    });
    let calico = Api::<DynamicObject>::all_with(client.clone(), &calico_pools());
    sources.calico_pools = list_if_served(calico, &ListParams::default(), "Calico IPPools")
        .await?
        .map(|pools| {
            pools
                .into_iter()
                .filter_map(|pool| {
                    let spec = pool.data.get("spec")?;
                    Some(CalicoPool {
                        cidr: spec.get("cidr")?.as_str()?.to_owned(),
                        disabled: spec
                            .get("disabled")
                            .and_then(|d| d.as_bool())
                            .unwrap_or(false),
                    })
                })
                .collect()
        });
    let cilium = Api::<DynamicObject>::all_with(client.clone(), &cilium_pools());
    sources.cilium_pools = list_if_served(cilium, &ListParams::default(), "CiliumPodIPPools")
        .await?
        .map(|pools| {
            pools
                .into_iter()
                .map(|pool| {
                    let spec = pool.data.get("spec");
                    let family = |key: &str| {
                        string_list(
                            spec.and_then(|s| s.get(key))
                                .and_then(|family| family.get("cidrs")),
                        )
                    };
                    let mut cidrs = family("ipv4");
                    cidrs.extend(family("ipv6"));
                    cidrs
                })
                .collect()
        });
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_object_has_upstream_chart_defaults() {
        let object = serde_json::to_value(default_object()).expect("serializes");
        assert_eq!(
            object["spec"],
            json!({
                "mode": "auto", "podCIDRType": "auto", "hijackCIDR": ["169.254.0.0/16"],
                "tunePodRoutes": true, "hostRuleTable": 500, "podRPFilter": 0,
                "txQueueLen": 0, "vethMTU": 1500,
            })
        );
        assert_eq!(object["metadata"]["name"], "default");
    }
}
