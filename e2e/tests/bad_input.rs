//! The bad-input corpus (`bad_input/cases.yaml`): malformed annotations on pods, workloads and
//! namespaces, invalid objects of every Spiderpool kind, broken CNI configurations and
//! environments, hostile values (huge ranges, overlapping pools, unicode, empty and 1 MB
//! strings).
//!
//! Webhook cases are created through the real API server with the webhooks of
//! `config/webhook/manifests.yaml` installed (restricted to this suite's label, as in
//! `webhook.rs`); CNI cases run the real `spiderpool` plugin binary against pods in a namespace
//! the webhooks do not judge, so the bad annotation reaches the plugin. Every case must be
//! refused with a message that names the field, annotation key or variable at fault (the
//! case's `expect` substrings), never with a 500, and must leave the cluster as it was: every
//! object of the suite (its label, its namespaces) keeps its resourceVersion, nothing new exists,
//! no pool records the pod, and the invariant checker finds nothing in the suite's namespaces.
//! Failures are collected, so one run reports every bad message.

#[path = "ipam_support/mod.rs"]
mod ipam_support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Map, Value, json};
use spiderpool_api::{SpiderEndpoint, SpiderIPPool};
use spiderpool_e2e::invariants::wait_consistent;
use spiderpool_e2e::{
    binary, client, controller_manager_with_settings, install_webhook_configurations, unique_name,
    wait_for,
};
use tokio::io::AsyncWriteExt;

use ipam_support::{PodRef, Scratch, SimNode, create_pod, delete_pod_now, netconf};

const CASES: &str = include_str!("bad_input/cases.yaml");
const LABEL: &str = "spiderpool-e2e-bad-input";
const SETTINGS: &str = "enableIPv4: true\nenableIPv6: true\nenableSpiderSubnet: true\nenableAutoPoolForApplication: true\n";
const TIMEOUT: Duration = Duration::from_secs(30);
/// A denial longer than this echoes a hostile value back at the user.
const MAX_MESSAGE: usize = 16 * 1024;
const POOL_V4: &str = "bad-input-pool-v4";
const POOL_V6: &str = "bad-input-pool-v6";
const SUBNET: &str = "bad-input-subnet";

// ------------------------------------------------------------------------------ the corpus

/// One expanded case.
#[derive(Debug, Clone)]
struct Case {
    /// `case[index]` or `case[index]/Kind`.
    id: String,
    template: Value,
    expect: Vec<String>,
    code: Option<u64>,
    /// The kind a webhook case creates (an annotation case gets one per `kinds` item).
    kind: Option<String>,
}

/// Expands `{{repeat:N:TEXT}}` in a string.
fn expand_repeats(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{repeat:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{repeat:".len()..];
        let parsed = after.split_once(':').and_then(|(count, tail)| {
            let end = tail.find("}}")?;
            Some((count.parse::<usize>().ok()?, &tail[..end], &tail[end + 2..]))
        });
        match parsed {
            Some((count, unit, tail)) => {
                out.push_str(&unit.repeat(count));
                rest = tail;
            }
            None => {
                out.push_str("{{repeat:");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The template with `{{value}}` replaced (keys and strings), repeats expanded.
fn substitute(template: &Value, value: &Value) -> Value {
    let value_text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    match template {
        Value::String(text) if text == "{{value}}" => match value {
            Value::String(text) => Value::String(expand_repeats(text)),
            other => substitute(other, &Value::Null),
        },
        Value::String(text) => {
            Value::String(expand_repeats(&text.replace("{{value}}", &value_text)))
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| substitute(item, value)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| {
                    (
                        expand_repeats(&key.replace("{{value}}", &value_text)),
                        substitute(item, value),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn cases(section: &str) -> anyhow::Result<Vec<Case>> {
    let document: Value = serde_yaml::from_str(CASES).context("bad_input/cases.yaml")?;
    let mut expanded = Vec::new();
    for entry in document[section].as_array().context("a list of cases")? {
        let name = entry["case"].as_str().context("a case without a name")?;
        let values = entry["values"]
            .as_array()
            .cloned()
            .unwrap_or(vec![Value::Null]);
        let kinds: Vec<Option<String>> = match entry["kinds"].as_array() {
            Some(kinds) => kinds
                .iter()
                .map(|kind| kind.as_str().map(str::to_string))
                .collect(),
            None => vec![entry["object"]["kind"].as_str().map(str::to_string)],
        };
        for (index, value) in values.iter().enumerate() {
            let template = substitute(entry, value);
            let each = &template["expect_each"];
            if each.is_array() && each.as_array().map(Vec::len) != Some(values.len()) {
                anyhow::bail!("{name}: expect_each has not one item per value");
            }
            let expect: Vec<String> = template["expect"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(each[index].as_array().into_iter().flatten())
                .filter_map(|part| part.as_str().map(str::to_string))
                .collect();
            for kind in &kinds {
                let id = match kind {
                    Some(kind) if entry["kinds"].is_array() => format!("{name}[{index}]/{kind}"),
                    _ => format!("{name}[{index}]"),
                };
                expanded.push(Case {
                    id,
                    template: template.clone(),
                    expect: Vec::clone(&expect),
                    code: template["code"].as_u64(),
                    kind: kind.clone(),
                });
            }
        }
    }
    Ok(expanded)
}

/// Whether `message` is a good refusal for `case`; `Err` says what is wrong with it.
fn judge(case: &Case, code: Option<u64>, message: &str) -> Result<(), String> {
    let shown: String = message.chars().take(400).collect();
    if let (Some(expected), Some(code)) = (case.code, code)
        && expected != code
    {
        return Err(format!("code {code}, expected {expected}: {shown}"));
    }
    if let Some(code) = code
        && case.code.is_none()
        && !(400..500).contains(&code)
    {
        return Err(format!("code {code}: {shown}"));
    }
    let missing: Vec<&String> = case
        .expect
        .iter()
        .filter(|part| !message.contains(part.as_str()))
        .collect();
    if !missing.is_empty() {
        return Err(format!("does not name {missing:?}: {shown}"));
    }
    if message.len() > MAX_MESSAGE {
        return Err(format!("a {} byte message: {shown}...", message.len()));
    }
    Ok(())
}

fn report(section: &str, total: usize, failures: &[String]) -> anyhow::Result<()> {
    eprintln!(
        "{section}: {} of {total} cases refused as expected",
        total - failures.len()
    );
    if failures.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} {section} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    )
}

#[test]
fn the_corpus_has_at_least_200_cases_each_expecting_a_named_field() -> anyhow::Result<()> {
    let webhook = cases("webhook")?;
    let cni = cases("cni")?;
    for case in webhook.iter().chain(&cni) {
        assert!(!case.expect.is_empty(), "{} expects nothing", case.id);
        assert!(
            case.expect.iter().all(|part| !part.is_empty()),
            "{} expects an empty text",
            case.id
        );
    }
    assert!(
        webhook.len() + cni.len() >= 200,
        "{} + {} cases",
        webhook.len(),
        cni.len()
    );
    let kinds: std::collections::BTreeSet<&str> = webhook
        .iter()
        .filter_map(|case| case.kind.as_deref())
        .collect();
    for kind in [
        "SpiderIPPool",
        "SpiderSubnet",
        "SpiderReservedIP",
        "SpiderMultusConfig",
        "SpiderCoordinator",
        "Pod",
        "Namespace",
        "Deployment",
    ] {
        assert!(kinds.contains(kind), "no case for {kind}");
    }
    Ok(())
}

#[test]
fn a_changed_a_missing_and_a_new_object_are_all_reported() {
    let before = BTreeMap::from([
        ("SpiderIPPool /a".to_string(), "1".to_string()),
        ("SpiderIPPool /b".to_string(), "2".to_string()),
    ]);
    let after = BTreeMap::from([
        ("SpiderIPPool /a".to_string(), "3".to_string()),
        ("Pod ns/c".to_string(), "4".to_string()),
    ]);
    assert_eq!(
        changes(&before, &after),
        vec![
            "SpiderIPPool /a changed (resourceVersion 1 -> 3)",
            "SpiderIPPool /b is gone",
            "Pod ns/c appeared"
        ]
    );
    assert!(changes(&before, &before).is_empty());
}

#[test]
fn repeats_and_values_expand() {
    assert_eq!(expand_repeats("a{{repeat:3:xy}}b"), "axyxyxyb");
    let template = json!({"k": "{{value}}", "s": "v={{value}}", "{{value}}": 1});
    assert_eq!(
        substitute(&template, &json!(7)),
        json!({"k": 7, "s": "v=7", "7": 1})
    );
    assert_eq!(
        substitute(&json!("{{value}}"), &json!("{{repeat:2:ab}}")),
        json!("abab")
    );
}

// ------------------------------------------------------------------------------ webhooks

fn port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or(0)
    })
}

/// The API resource of a kind the corpus creates.
fn resource(kind: &str) -> anyhow::Result<(ApiResource, bool)> {
    let (group, version, plural, namespaced) = match kind {
        "SpiderIPPool" => ("spiderpool.spidernet.io", "v2beta1", "spiderippools", false),
        "SpiderSubnet" => ("spiderpool.spidernet.io", "v2beta1", "spidersubnets", false),
        "SpiderReservedIP" => (
            "spiderpool.spidernet.io",
            "v2beta1",
            "spiderreservedips",
            false,
        ),
        "SpiderCoordinator" => (
            "spiderpool.spidernet.io",
            "v2beta1",
            "spidercoordinators",
            false,
        ),
        "SpiderMultusConfig" => (
            "spiderpool.spidernet.io",
            "v2beta1",
            "spidermultusconfigs",
            true,
        ),
        "Pod" => ("", "v1", "pods", true),
        "Namespace" => ("", "v1", "namespaces", false),
        "Deployment" => ("apps", "v1", "deployments", true),
        "StatefulSet" => ("apps", "v1", "statefulsets", true),
        "DaemonSet" => ("apps", "v1", "daemonsets", true),
        "ReplicaSet" => ("apps", "v1", "replicasets", true),
        "Job" => ("batch", "v1", "jobs", true),
        "CronJob" => ("batch", "v1", "cronjobs", true),
        other => anyhow::bail!("no resource for kind {other}"),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Ok((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

fn api(client: &Client, kind: &str, namespace: &str) -> anyhow::Result<Api<DynamicObject>> {
    let (resource, namespaced) = resource(kind)?;
    Ok(if namespaced {
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    })
}

/// The object a webhook case creates, named `name`.
fn object_of(case: &Case, kind: &str, name: &str, namespace: &str) -> anyhow::Result<Value> {
    let (resource, namespaced) = resource(kind)?;
    let annotations = case.template["annotations"].clone();
    let labels = json!({LABEL: "true", "app": name});
    let pod_spec = json!({"restartPolicy": "Never", "automountServiceAccountToken": false,
                          "containers": [{"name": "app", "image": "registry.invalid/app:1"}]});
    let template = json!({"metadata": {"labels": {"app": name}, "annotations": annotations}, "spec": pod_spec});
    let mut object = match kind {
        "Pod" => json!({"metadata": {"annotations": annotations}, "spec": pod_spec}),
        "Namespace" => json!({"metadata": {"annotations": annotations}}),
        "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet" => {
            let mut template = template.clone();
            template["spec"]["restartPolicy"] = json!("Always");
            let mut spec =
                json!({"selector": {"matchLabels": {"app": name}}, "template": template});
            if kind == "StatefulSet" {
                spec["serviceName"] = json!(name);
            }
            json!({ "spec": spec })
        }
        "Job" => json!({"spec": {"template": template}}),
        "CronJob" => {
            json!({"spec": {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"template": template}}}})
        }
        _ => case.template["object"].clone(),
    };
    object["apiVersion"] = json!(resource.api_version);
    object["kind"] = json!(kind);
    let metadata = object["metadata"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut merged = Map::new();
    merged.insert("name".into(), json!(name));
    merged.insert("labels".into(), labels);
    if namespaced {
        merged.insert("namespace".into(), json!(namespace));
    }
    for (key, value) in metadata {
        if !value.is_null() {
            merged.insert(key, value);
        }
    }
    object["metadata"] = Value::Object(merged);
    Ok(object)
}

/// The two tests take turns: each compares the suite's objects before and after its cases, which
/// the other one's objects would disturb.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Client, webhooks in effect for this suite's label, the fixtures.
async fn webhook_setup() -> anyhow::Result<Client> {
    let client = client().await?;
    // Both tests share the webhooks and the fixtures; they are made once, before either test
    // takes its snapshot of the cluster.
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    READY.get_or_try_init(|| install_once(&client)).await?;
    Ok(client)
}

async fn install_once(client: &Client) -> anyhow::Result<()> {
    install_webhook_configurations(client, port(), LABEL).await?;
    let args = [
        format!("--webhook-addr=127.0.0.1:{}", port()),
        "--webhook-cert-mode=auto".to_string(),
        "--webhook-extra-sans=127.0.0.1".to_string(),
        "--enable-ipam-controllers=false".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let manager = controller_manager_with_settings(Some(SETTINGS), &args).await?;
    let pools = api(client, "SpiderIPPool", "")?;
    // A positive sign first: a malformed pool is denied by our webhook.
    wait_for("webhooks in effect", TIMEOUT, || async {
        let probe: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
            "metadata": {"name": "bad-input-probe", "labels": {LABEL: "true"}},
            "spec": {"subnet": "192.0.2.1/24"}}))?;
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        Ok(match pools.create(&dry_run, &probe).await {
            Err(kube::Error::Api(status)) => {
                status.message.contains("unformatted subnet").then_some(())
            }
            _ => None,
        })
    })
    .await
    .with_context(|| format!("controller-manager log: {}", manager.log_path.display()))?;
    let fixtures = [
        (
            "SpiderIPPool",
            json!({"metadata": {"name": POOL_V4}, "spec": {"subnet": "192.0.2.0/24", "ips": ["192.0.2.10-192.0.2.20"]}}),
        ),
        (
            "SpiderIPPool",
            json!({"metadata": {"name": POOL_V6}, "spec": {"subnet": "2001:db8:bad::/64", "ips": ["2001:db8:bad::10-2001:db8:bad::20"]}}),
        ),
        (
            "SpiderSubnet",
            json!({"metadata": {"name": SUBNET}, "spec": {"subnet": "198.51.100.0/24", "ips": ["198.51.100.1-198.51.100.100"]}}),
        ),
    ];
    for (kind, mut object) in fixtures {
        object["apiVersion"] = json!("spiderpool.spidernet.io/v2beta1");
        object["kind"] = json!(kind);
        object["metadata"]["labels"] = json!({LABEL: "true"});
        let object: DynamicObject = serde_json::from_value(object)?;
        match api(client, kind, "")?
            .create(&PostParams::default(), &object)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error).context(format!("creating the {kind} fixture")),
        }
    }
    Ok(())
}

/// The kinds whose objects the corpus could create or change.
const STATE_KINDS: [&str; 12] = [
    "SpiderIPPool",
    "SpiderSubnet",
    "SpiderReservedIP",
    "SpiderCoordinator",
    "SpiderMultusConfig",
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// `Kind namespace/name` -> resourceVersion of everything the suite owns: objects with its label
/// (the fixtures, and anything a case managed to create) anywhere, every object of the suite's
/// namespaces, SpiderEndpoints included, and the namespaces themselves.
async fn snapshot(
    client: &Client,
    namespaces: &[&str],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut state = BTreeMap::new();
    // Objects on their way out (the other test's namespace) are left out.
    let mut record = |kind: &str, object: &DynamicObject| {
        let metadata = &object.metadata;
        if metadata.deletion_timestamp.is_some() {
            return;
        }
        state.insert(
            format!(
                "{kind} {}/{}",
                metadata.namespace.as_deref().unwrap_or(""),
                metadata.name.as_deref().unwrap_or("")
            ),
            metadata.resource_version.clone().unwrap_or_default(),
        );
    };
    let labelled = kube::api::ListParams::default().labels(&format!("{LABEL}=true"));
    for kind in STATE_KINDS.iter().chain(&["Namespace"]) {
        let (resource, namespaced) = resource(kind)?;
        let everywhere: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        for object in everywhere.list(&labelled).await?.items {
            record(kind, &object);
        }
        if !namespaced {
            continue;
        }
        for namespace in namespaces {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            for object in api.list(&Default::default()).await?.items {
                record(kind, &object);
            }
        }
    }
    for namespace in namespaces {
        let endpoints: Api<SpiderEndpoint> = Api::namespaced(client.clone(), namespace);
        for endpoint in endpoints.list(&Default::default()).await?.items {
            state.insert(
                format!(
                    "SpiderEndpoint {namespace}/{}",
                    endpoint.metadata.name.clone().unwrap_or_default()
                ),
                endpoint
                    .metadata
                    .resource_version
                    .clone()
                    .unwrap_or_default(),
            );
        }
    }
    Ok(state)
}

/// What differs between two snapshots, one line per object.
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, version) in before {
        match after.get(key) {
            None => lines.push(format!("{key} is gone")),
            Some(now) if now != version => lines.push(format!(
                "{key} changed (resourceVersion {version} -> {now})"
            )),
            Some(_) => {}
        }
    }
    for key in after.keys().filter(|key| !before.contains_key(*key)) {
        lines.push(format!("{key} appeared"));
    }
    lines
}

/// Removes an object a case should not have created, so later cases do not trip over it: the
/// deletion, then its finalizers, as the controllers (which do not run here) would remove them.
async fn remove(api: &Api<DynamicObject>, name: &str) {
    let _ = api.delete(name, &DeleteParams::background()).await;
    let _ = api
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
    let _ = wait_for("the admitted object to go", TIMEOUT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await;
}

async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// A namespace, judged by this suite's webhooks or not.
async fn namespace(client: &Client, prefix: &str, judged: bool) -> anyhow::Result<String> {
    let name = unique_name(prefix);
    let mut labels = BTreeMap::from([("spiderpool-e2e".to_string(), "true".to_string())]);
    if judged {
        labels.insert(LABEL.to_string(), "true".to_string());
    }
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for("default ServiceAccount", TIMEOUT, || async {
        Ok(accounts.get_opt("default").await?)
    })
    .await?;
    Ok(name)
}

/// The suite's own objects of `kind` that exist (the corpus's names start with `bad-`; the
/// suite's namespaces with `bad-input`).
async fn leftovers(client: &Client, kind: &str, namespace: &str) -> anyhow::Result<Vec<String>> {
    let fixtures = [POOL_V4, POOL_V6, SUBNET];
    let list = api(client, kind, namespace)?
        .list(&kube::api::ListParams::default().labels(&format!("{LABEL}=true")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|object| object.metadata.name)
        .filter(|name| {
            name.starts_with("bad-")
                && !name.starts_with("bad-input")
                && !fixtures.contains(&name.as_str())
        })
        .collect())
}

#[tokio::test]
async fn every_bad_object_is_denied_naming_the_field_and_nothing_is_created() -> anyhow::Result<()>
{
    let cases = cases("webhook")?;
    let _turn = TURN.lock().await;
    let client = webhook_setup().await?;
    let namespace = namespace(&client, "bad-input", true).await?;
    let before = snapshot(&client, &[&namespace]).await?;
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for case in &cases {
        let kind = case.kind.clone().context("a webhook case without a kind")?;
        kinds.insert(kind.clone());
        let name = match case.template["object"]["metadata"]["name"].as_str() {
            Some(custom) => custom.to_string(),
            None => unique_name("bad"),
        };
        let object: DynamicObject = match object_of(case, &kind, &name, &namespace)
            .and_then(|object| Ok(serde_json::from_value(object)?))
        {
            Ok(object) => object,
            Err(error) => {
                failures.push(format!("{}: cannot build the object: {error}", case.id));
                continue;
            }
        };
        let api = api(&client, &kind, &namespace)?;
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                failures.push(format!("{}: admitted", case.id));
                remove(&api, &name).await;
            }
            Err(kube::Error::Api(status)) => {
                if let Err(problem) = judge(case, Some(u64::from(status.code)), &status.message) {
                    failures.push(format!("{}: {problem}", case.id));
                }
            }
            Err(error) => failures.push(format!("{}: not an API error: {error}", case.id)),
        }
        // The cluster is unchanged: nothing by that name.
        if !name.is_empty() && name.len() < 254 && api.get_opt(&name).await.ok().flatten().is_some()
        {
            failures.push(format!(
                "{}: {kind} {name} exists after the refusal",
                case.id
            ));
        }
    }
    for kind in &kinds {
        let left = leftovers(&client, kind, &namespace).await?;
        if !left.is_empty() {
            failures.push(format!("{kind} objects left behind: {left:?}"));
        }
    }
    failures.extend(changes(&before, &snapshot(&client, &[&namespace]).await?));
    if let Err(error) = wait_consistent(&client, Some(&namespace), TIMEOUT).await {
        failures.push(format!("{error:#}"));
    }
    eprintln!(
        "webhook: {} cases in {:.1}s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    delete_namespace(&client, &namespace).await;
    report("webhook", cases.len(), &failures)
}

// ------------------------------------------------------------------------------ the CNI plugin

/// What one plugin call printed.
struct PluginOutput {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the plugin like a runtime, with `env` over the defaults for `pod` and raw `stdin`.
async fn plugin(
    pod: &PodRef,
    env: &BTreeMap<String, String>,
    stdin: &[u8],
) -> anyhow::Result<PluginOutput> {
    let container_id = format!("c{}", pod.uid.replace('-', ""));
    let mut variables = BTreeMap::from([
        ("CNI_COMMAND".to_string(), "ADD".to_string()),
        ("CNI_CONTAINERID".to_string(), container_id.clone()),
        (
            "CNI_NETNS".to_string(),
            format!("/var/run/netns/{container_id}"),
        ),
        ("CNI_IFNAME".to_string(), "eth0".to_string()),
        ("CNI_PATH".to_string(), "/opt/cni/bin".to_string()),
        (
            "CNI_ARGS".to_string(),
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID={}",
                pod.namespace, pod.name, pod.uid
            ),
        ),
    ]);
    variables.extend(env.clone());
    let mut child = tokio::process::Command::new(binary("spiderpool"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&variables)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("spawning the spiderpool plugin")?;
    let mut input = child.stdin.take().context("no stdin")?;
    // A plugin that fails before reading all of stdin closes the pipe: not an error here.
    let _ = input.write_all(stdin).await;
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(130), child.wait_with_output())
        .await
        .context("the plugin did not finish")??;
    Ok(PluginOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
    })
}

/// Merges `overlay` into `base` (objects recursively; other values replace).
fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (_, Value::Null) => {}
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value)
                    }
                    _ => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// Records and endpoints that mention `pod` (its uid or `namespace/name`): must be none.
async fn traces_of(client: &Client, pod: &PodRef) -> anyhow::Result<Vec<String>> {
    let mut traces = Vec::new();
    let pods_name = format!("{}/{}", pod.namespace, pod.name);
    for pool in Api::<SpiderIPPool>::all(client.clone())
        .list(&Default::default())
        .await?
        .items
    {
        let records = pool
            .status
            .as_ref()
            .map(|status| status.allocations())
            .transpose()?
            .unwrap_or_default();
        for (ip, record) in records {
            if record.pod_uid == pod.uid || record.namespaced_name == pods_name {
                traces.push(format!(
                    "pool {} records {ip}",
                    pool.metadata.name.clone().unwrap_or_default()
                ));
            }
        }
    }
    if Api::<SpiderEndpoint>::namespaced(client.clone(), &pod.namespace)
        .get_opt(&pod.name)
        .await?
        .is_some()
    {
        traces.push(format!("SpiderEndpoint {pods_name}"));
    }
    Ok(traces)
}

#[tokio::test]
async fn every_bad_cni_call_fails_naming_the_field_and_allocates_nothing() -> anyhow::Result<()> {
    let cases = cases("cni")?;
    // The pools and subnet the annotations name, judged and created like the webhook suite's.
    let _turn = TURN.lock().await;
    let client = webhook_setup().await?;
    let scratch = Scratch::new("bad-input")?;
    let node =
        SimNode::create(&client, &scratch, &[], "enableIPv4: true\nenableIPv6: true").await?;
    let plain = namespace(&client, "bad-input-cni", false).await?;
    let before = snapshot(&client, &[&plain]).await?;
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for case in &cases {
        let namespace = match case.template["namespace_annotations"].as_object() {
            Some(annotations) => {
                let name = namespace(&client, "bad-input-ns", false).await?;
                ipam_support::patch_namespace(&client, &name, json!({"annotations": annotations}))
                    .await?;
                name
            }
            None => plain.clone(),
        };
        let annotations: Vec<(String, String)> = case.template["pod_annotations"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_string()))
            .collect();
        let annotations: Vec<(&str, &str)> = annotations
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let pod_name = unique_name("bad");
        let pod = match create_pod(
            &client,
            &namespace,
            &pod_name,
            &node.name,
            &annotations,
            &[],
        )
        .await
        {
            Ok(pod) => PodRef::of(&pod),
            Err(error) => {
                failures.push(format!("{}: cannot create the pod: {error:#}", case.id));
                continue;
            }
        };
        let mut config = netconf("1.0.0", &node, case.template["ipam"].clone());
        merge(&mut config, &case.template["netconf"]);
        let stdin = match case.template["stdin"].as_str() {
            Some(raw) => raw.as_bytes().to_vec(),
            None => config.to_string().into_bytes(),
        };
        let env: BTreeMap<String, String> = case.template["env"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_string()))
            .collect();
        let output = plugin(&pod, &env, &stdin).await?;
        if output.success {
            failures.push(format!(
                "{}: the plugin succeeded: {}",
                case.id, output.stdout
            ));
        } else {
            match serde_json::from_str::<Value>(&output.stdout) {
                Ok(error) => {
                    let message = format!(
                        "{} {}",
                        error["msg"].as_str().unwrap_or_default(),
                        error["details"].as_str().unwrap_or_default()
                    );
                    let code = error["code"].as_u64();
                    if code.is_none() {
                        failures.push(format!(
                            "{}: an error without a code: {}",
                            case.id, output.stdout
                        ));
                    } else if let Err(problem) = judge_cni(case, code, &message) {
                        failures.push(format!("{}: {problem}", case.id));
                    }
                }
                Err(_) => failures.push(format!(
                    "{}: stdout is not an error JSON: {:?} (stderr {})",
                    case.id,
                    output.stdout.chars().take(300).collect::<String>(),
                    output.stderr.chars().take(300).collect::<String>()
                )),
            }
        }
        let traces = traces_of(&client, &pod).await?;
        if !traces.is_empty() {
            failures.push(format!("{}: left {traces:?}", case.id));
        }
        delete_pod_now(&client, &namespace, &pod.name).await?;
        if namespace != plain {
            delete_namespace(&client, &namespace).await;
        }
    }
    // Every case's pod is gone again; the fixtures and the namespace are as they were.
    failures.extend(changes(&before, &snapshot(&client, &[&plain]).await?));
    if let Err(error) = wait_consistent(&client, Some(&plain), TIMEOUT).await {
        failures.push(format!("{error:#}"));
    }
    eprintln!(
        "cni: {} cases in {:.1}s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    node.delete(&client).await?;
    delete_namespace(&client, &plain).await;
    report("cni", cases.len(), &failures)
}

/// [`judge`] for a CNI error: the code is the CNI error code, any code is fine unless given.
fn judge_cni(case: &Case, code: Option<u64>, message: &str) -> Result<(), String> {
    let case = Case {
        code: case.code.or(code),
        ..case.clone()
    };
    judge(&case, code, message)
}
