//! The I/O around the pure rules: read what each rule needs (caches, or the API server where
//! upstream reads uncached), call it, and turn the result into an [`Outcome`].
//!
//! Reads, per rule:
//! - IPPool defaulting: subnets from the cache (upstream uses its cached client too).
//! - IPPool / Subnet validation: pools and subnets LISTed from the API server, the owner subnet
//!   by GET — upstream's uncached `APIReader`; a cache could miss a pool created a moment
//!   earlier in the same burst and let an overlapping one through.
//! - SpiderMultusConfig: the target NetworkAttachmentDefinition by GET (upstream: uncached).
//! - Annotation checks: pools and subnets from the caches; a name the cache does not know is
//!   confirmed with a GET before it is reported missing.
//! - Cluster settings: the `spiderpool-conf`-style ConfigMap from its cache.

use std::collections::BTreeMap;

use kube::api::{Api, ListParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use spiderpool_api::{
    NetworkAttachmentDefinition, SpiderCoordinator, SpiderIPPool, SpiderMultusConfig,
    SpiderReservedIP, SpiderSubnet,
};
use spiderpool_ipam::ip::IpVersion;
use spiderpool_ipam::settings::ClusterSettings;

use super::annotations::{self, Known, Target};
use super::common::controller_of;
use super::field::Denial;
use super::hooks::{Hook, Outcome, patch_between, typed};
use super::metrics::WebhookMetrics;
use super::{coordinator, ippool, multusconfig, reservedip, subnet};
use crate::shared::settings::SettingsSource;

pub struct WebhookState {
    pub client: Client,
    pub settings: SettingsSource,
    pub pools: Store<SpiderIPPool>,
    pub subnets: Store<SpiderSubnet>,
    pub metrics: WebhookMetrics,
}

fn api_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

fn internal(what: &str, error: &kube::Error) -> Denial {
    Denial::Internal(format!("{what}: {}", api_error(error)))
}

/// Dispatches one request.
pub async fn handle(
    state: &WebhookState,
    hook: Hook,
    request: &AdmissionRequest<DynamicObject>,
) -> Outcome {
    let result = match hook {
        Hook::MutateIPPool => mutate_ippool(state, request),
        Hook::ValidateIPPool => validate_ippool(state, request).await,
        Hook::MutateSubnet => {
            mutate_simple(request, |subnet: &mut SpiderSubnet| subnet::mutate(subnet))
        }
        Hook::ValidateSubnet => validate_subnet(state, request).await,
        Hook::MutateReservedIP => mutate_simple(request, |reserved: &mut SpiderReservedIP| {
            reservedip::mutate(reserved)
        }),
        Hook::ValidateReservedIP => validate_reservedip(state, request),
        Hook::MutateMultusConfig => mutate_simple(request, |smc: &mut SpiderMultusConfig| {
            multusconfig::mutate(smc);
            Ok(())
        }),
        Hook::ValidateMultusConfig => validate_multusconfig(state, request).await,
        Hook::MutateCoordinator => mutate_simple(request, |coordinator: &mut SpiderCoordinator| {
            coordinator::mutate(coordinator)
        }),
        Hook::ValidateCoordinator => validate_coordinator(request),
        Hook::ValidatePodAnnotations
        | Hook::ValidateWorkloadAnnotations
        | Hook::ValidateNamespaceAnnotations => validate_annotations(state, hook, request).await,
    };
    match result {
        Ok(outcome) => outcome,
        Err(denial) => Outcome::Deny(denial),
    }
}

/// Runs a pure mutation on CREATE/UPDATE; a mutation error is logged and the object admitted
/// as far as it was defaulted, like upstream's `Default()`.
fn mutate_simple<K, F>(
    request: &AdmissionRequest<DynamicObject>,
    mutate: F,
) -> Result<Outcome, Denial>
where
    K: serde::de::DeserializeOwned + serde::Serialize + Clone,
    F: FnOnce(&mut K) -> Result<(), String>,
{
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok(Outcome::Allow);
    }
    let before: K = typed(request.object.as_ref(), "object")?;
    let mut after = before.clone();
    if let Err(error) = mutate(&mut after) {
        tracing::info!(%error, "defaulting stopped early");
    }
    Ok(Outcome::Patch(patch_between(&before, &after)?))
}

fn mutate_ippool(
    state: &WebhookState,
    request: &AdmissionRequest<DynamicObject>,
) -> Result<Outcome, Denial> {
    let settings = state.settings.current();
    let mut subnets: Vec<SpiderSubnet> = state
        .subnets
        .state()
        .iter()
        .map(|subnet| (**subnet).clone())
        .collect();
    subnets.sort_by_key(|subnet| subnet.name_any());
    mutate_simple(request, |pool: &mut SpiderIPPool| {
        ippool::mutate(pool, &settings, &subnets)
    })
}

async fn list_pools(client: &Client) -> Result<Vec<SpiderIPPool>, Denial> {
    Api::<SpiderIPPool>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .map_err(|error| internal("failed to list IPPools", &error))
}

async fn owner_subnet(
    client: &Client,
    pool: &SpiderIPPool,
    settings: &ClusterSettings,
) -> ippool::OwnerSubnet {
    let Some(owner) = controller_of(&pool.metadata).filter(|_| settings.enable_spider_subnet)
    else {
        return ippool::OwnerSubnet::NotNeeded;
    };
    match Api::<SpiderSubnet>::all(client.clone())
        .get(&owner.name)
        .await
    {
        Ok(subnet) => ippool::OwnerSubnet::Found(Box::new(subnet)),
        Err(error) => ippool::OwnerSubnet::Missing {
            name: owner.name.clone(),
            error: api_error(&error),
        },
    }
}

async fn validate_ippool(
    state: &WebhookState,
    request: &AdmissionRequest<DynamicObject>,
) -> Result<Outcome, Denial> {
    let settings = state.settings.current();
    match request.operation {
        Operation::Create => {
            let pool: SpiderIPPool = typed(request.object.as_ref(), "object")?;
            let pools = list_pools(&state.client).await?;
            let owner = owner_subnet(&state.client, &pool, &settings).await;
            ippool::validate_create(&pool, &pools, &owner, &settings)?;
        }
        Operation::Update => {
            let new: SpiderIPPool = typed(request.object.as_ref(), "object")?;
            let old: SpiderIPPool = typed(request.old_object.as_ref(), "old object")?;
            let (pools, owner) = if new.metadata.deletion_timestamp.is_some() {
                (Vec::new(), ippool::OwnerSubnet::NotNeeded)
            } else {
                (
                    list_pools(&state.client).await?,
                    owner_subnet(&state.client, &new, &settings).await,
                )
            };
            ippool::validate_update(&old, &new, &pools, &owner, &settings)?;
        }
        Operation::Delete => {
            let pool: SpiderIPPool = typed(request.old_object.as_ref(), "old object")?;
            ippool::validate_delete(&pool, &settings)?;
        }
        Operation::Connect => {}
    }
    Ok(Outcome::Allow)
}

async fn validate_subnet(
    state: &WebhookState,
    request: &AdmissionRequest<DynamicObject>,
) -> Result<Outcome, Denial> {
    let settings = state.settings.current();
    match request.operation {
        Operation::Create => {
            let candidate: SpiderSubnet = typed(request.object.as_ref(), "object")?;
            let subnets = Api::<SpiderSubnet>::all(state.client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|error| internal("failed to list Subnets", &error))?
                .items;
            let pools = list_pools(&state.client).await?;
            subnet::validate_create(&candidate, &subnets, &pools, &settings)?;
        }
        Operation::Update => {
            let new: SpiderSubnet = typed(request.object.as_ref(), "object")?;
            let old: SpiderSubnet = typed(request.old_object.as_ref(), "old object")?;
            subnet::validate_update(&old, &new, &settings)?;
        }
        Operation::Delete => {
            let candidate: SpiderSubnet = typed(request.old_object.as_ref(), "old object")?;
            subnet::validate_delete(&candidate, &settings)?;
        }
        Operation::Connect => {}
    }
    Ok(Outcome::Allow)
}

fn validate_reservedip(
    state: &WebhookState,
    request: &AdmissionRequest<DynamicObject>,
) -> Result<Outcome, Denial> {
    let settings = state.settings.current();
    match request.operation {
        Operation::Create => {
            let reserved: SpiderReservedIP = typed(request.object.as_ref(), "object")?;
            reservedip::validate_create(&reserved, &settings)?;
        }
        Operation::Update => {
            let new: SpiderReservedIP = typed(request.object.as_ref(), "object")?;
            let old: SpiderReservedIP = typed(request.old_object.as_ref(), "old object")?;
            reservedip::validate_update(&old, &new, &settings)?;
        }
        Operation::Delete | Operation::Connect => {}
    }
    Ok(Outcome::Allow)
}

async fn validate_multusconfig(
    state: &WebhookState,
    request: &AdmissionRequest<DynamicObject>,
) -> Result<Outcome, Denial> {
    let old: Option<SpiderMultusConfig> = match request.operation {
        Operation::Create => None,
        Operation::Update => Some(typed(request.old_object.as_ref(), "old object")?),
        Operation::Delete | Operation::Connect => return Ok(Outcome::Allow),
    };
    let smc: SpiderMultusConfig = typed(request.object.as_ref(), "object")?;
    let namespace = smc
        .namespace()
        .or_else(|| request.namespace.clone())
        .unwrap_or_default();
    let nad_name = multusconfig::target_nad_name(&smc);
    // An invalid custom name is reported by the rule itself; do not ask the API server for it.
    let target = if spiderpool_ipam::labels::dns1123_subdomain_errors(&nad_name).is_empty() {
        match Api::<NetworkAttachmentDefinition>::namespaced(state.client.clone(), &namespace)
            .get_opt(&nad_name)
            .await
        {
            Ok(None) => multusconfig::TargetNad::Absent,
            Ok(Some(nad)) => multusconfig::TargetNad::Present {
                smc_owners: nad
                    .owner_references()
                    .iter()
                    .filter(|reference| reference.kind == multusconfig::KIND)
                    .map(|reference| reference.name.clone())
                    .collect(),
            },
            Err(error) => multusconfig::TargetNad::Error(api_error(&error)),
        }
    } else {
        multusconfig::TargetNad::Absent
    };
    let mut smc = smc;
    if smc.metadata.namespace.is_none() {
        smc.metadata.namespace = Some(namespace);
    }
    multusconfig::validate(old.as_ref(), &smc, &target)?;
    Ok(Outcome::Allow)
}

fn validate_coordinator(request: &AdmissionRequest<DynamicObject>) -> Result<Outcome, Denial> {
    if matches!(request.operation, Operation::Create | Operation::Update) {
        let candidate: SpiderCoordinator = typed(request.object.as_ref(), "object")?;
        if candidate.metadata.deletion_timestamp.is_none() {
            coordinator::validate(&candidate)?;
        }
    }
    Ok(Outcome::Allow)
}

/// Where a kind keeps the annotations of its pods.
fn annotations_path(hook: Hook, kind: &str) -> Option<(&'static str, &'static str)> {
    match hook {
        Hook::ValidatePodAnnotations | Hook::ValidateNamespaceAnnotations => {
            Some(("/metadata/annotations", "metadata.annotations"))
        }
        _ => match kind {
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => Some((
                "/spec/template/metadata/annotations",
                "spec.template.metadata.annotations",
            )),
            "CronJob" => Some((
                "/spec/jobTemplate/spec/template/metadata/annotations",
                "spec.jobTemplate.spec.template.metadata.annotations",
            )),
            _ => None,
        },
    }
}

fn annotations_at(object: Option<&DynamicObject>, pointer: &str) -> BTreeMap<String, String> {
    object
        .and_then(|object| serde_json::to_value(object).ok())
        .and_then(|value| value.pointer(pointer).cloned())
        .and_then(|value| serde_json::from_value::<BTreeMap<String, String>>(value).ok())
        .map(|annotations| annotations::ipam_annotations(&annotations))
        .unwrap_or_default()
}

async fn lookup<K>(
    store: &Store<K>,
    client: &Client,
    name: &str,
    version: impl Fn(&K) -> Option<i64>,
) -> Result<Option<IpVersion>, Denial>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let found = match store.get(&ObjectRef::new(name)) {
        Some(object) => Some((*object).clone()),
        None => Api::<K>::all(client.clone())
            .get_opt(name)
            .await
            .map_err(|error| internal(&format!("failed to look up {name}"), &error))?,
    };
    // An object that exists but has no (valid) family yet is reported under no family.
    Ok(found.map(|object| {
        version(&object)
            .and_then(IpVersion::from_number)
            .unwrap_or(IpVersion::V4)
    }))
}

async fn validate_annotations(
    state: &WebhookState,
    hook: Hook,
    request: &AdmissionRequest<DynamicObject>,
) -> Result<Outcome, Denial> {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok(Outcome::Allow);
    }
    let kind = request.kind.kind.as_str();
    let Some((pointer, path)) = annotations_path(hook, kind) else {
        return Ok(Outcome::Allow);
    };
    let current = annotations_at(request.object.as_ref(), pointer);
    if current.is_empty() {
        return Ok(Outcome::Allow);
    }
    // An update that leaves the annotations alone (a scale, an image change) is not judged
    // again: a pool deleted since must not block the workload.
    if matches!(request.operation, Operation::Update)
        && annotations_at(request.old_object.as_ref(), pointer) == current
    {
        return Ok(Outcome::Allow);
    }
    let target = if hook == Hook::ValidateNamespaceAnnotations {
        Target::Namespace
    } else {
        Target::Pod
    };
    let (pool_names, subnet_names) = annotations::referenced_names(&current, target);
    let mut known = Known::default();
    for name in pool_names {
        let version = lookup(&state.pools, &state.client, &name, |pool: &SpiderIPPool| {
            pool.spec.ip_version
        })
        .await?;
        known.pools.insert(name, version);
    }
    for name in subnet_names {
        let version = lookup(
            &state.subnets,
            &state.client,
            &name,
            |subnet: &SpiderSubnet| subnet.spec.ip_version,
        )
        .await?;
        known.subnets.insert(name, version);
    }
    let settings = state.settings.current();
    let refused = settings.enable_spider_subnet && !settings.enable_auto_pool_for_application;
    let errors = annotations::validate(&current, target, &known, path, refused);
    if errors.is_empty() {
        return Ok(Outcome::Allow);
    }
    let group: &'static str = match request.kind.group.as_str() {
        "apps" => "apps",
        "batch" => "batch",
        _ => "",
    };
    Err(Denial::InvalidIn {
        group,
        kind: kind.to_string(),
        name: request.name.clone(),
        errors,
    })
}
