//! Shared harness of the webhook suites (one suite per kind): the controller-manager as
//! installed (ServiceAccount and roles of `config/rbac`, `auto` certificates in
//! `kube-system/spiderpool-controller-server-certs`) and the webhook configurations of
//! `config/webhook/manifests.yaml`, applied with `clientConfig.url = https://127.0.0.1:<port>/...`
//! instead of the Service and restricted to the suites: namespaced kinds only in namespaces
//! labelled `spiderpool-e2e-webhook=true`, cluster-scoped kinds only for objects with that label.
//! Other suites' objects are never judged. The controller-manager only injects their `caBundle`,
//! as in a cluster. Each suite binary runs its own controller-manager and installs the
//! configurations pointing at it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_e2e::{
    client, controller_manager_with_settings, install_webhook_configurations, unique_name, wait_for,
};

pub const LABEL: &str = "spiderpool-e2e-webhook";
/// `conf.yml` of `kube-system/spiderpool-conf` for this suite.
pub const SETTINGS: &str = "enableIPv4: true\nenableIPv6: true\nenableSpiderSubnet: true\nenableValidatingResourcesDeletedWebhook: true\n";
pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const GROUP: &str = "spiderpool.spidernet.io";

/// The port of the webhook server.
pub fn port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port")
    })
}

pub fn manager_args() -> Vec<String> {
    vec![
        format!("--webhook-addr=127.0.0.1:{}", port()),
        "--webhook-cert-mode=auto".into(),
        "--webhook-extra-sans=127.0.0.1".into(),
        // The suite writes subnet records for workloads that do not exist (G38); a running
        // subnet or application controller would rightly drop them mid-test.
        "--enable-ipam-controllers=false".into(),
    ]
}

/// Client, the installed configurations, the running controller-manager, and webhooks that are
/// in effect.
pub async fn setup() -> anyhow::Result<Client> {
    let client = client().await?;
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| install_webhook_configurations(&client, port(), LABEL))
        .await?;
    let args = manager_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let manager = controller_manager_with_settings(Some(SETTINGS), &args).await?;
    wait_for_webhooks(&client)
        .await
        .map_err(|error| error.context(format!("log: {}", manager.log_path.display())))?;
    Ok(client)
}

/// Polls with dry-run creates until both configurations act on a labelled pool.
pub async fn wait_for_webhooks(client: &Client) -> anyhow::Result<()> {
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for("webhooks in effect", TIMEOUT, || async {
        let bad = pool("webhook-probe", json!({"subnet": "198.19.255.1/24"}))?;
        let denied = match pools.create(&dry_run, &bad).await {
            Err(kube::Error::Api(status)) => status.message.contains("unformatted subnet"),
            _ => false,
        };
        let good = pool("webhook-probe", json!({"subnet": "198.19.254.0/24"}))?;
        let mutated = match pools.create(&dry_run, &good).await {
            Ok(created) => created.finalizers().iter().any(|f| f == GROUP),
            Err(_) => false,
        };
        Ok((denied && mutated).then_some(()))
    })
    .await
}

pub fn labelled(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": kind,
        "metadata": {"name": name, "labels": {LABEL: "true"}},
        "spec": spec,
    })
}

pub fn pool(name: &str, spec: Value) -> anyhow::Result<SpiderIPPool> {
    Ok(serde_json::from_value(labelled(
        "SpiderIPPool",
        name,
        spec,
    ))?)
}

pub fn subnet(name: &str, spec: Value) -> anyhow::Result<SpiderSubnet> {
    Ok(serde_json::from_value(labelled(
        "SpiderSubnet",
        name,
        spec,
    ))?)
}

/// A namespace whose objects this suite's webhooks judge (with `extra` labels instead, one
/// they do not).
pub async fn namespace(
    client: &Client,
    prefix: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<String> {
    let name = unique_name(prefix);
    let mut labels = BTreeMap::from([("spiderpool-e2e".to_string(), "true".to_string())]);
    if extra.is_empty() {
        labels.insert(LABEL.to_string(), "true".to_string());
    }
    for (key, value) in extra {
        labels.insert((*key).to_string(), (*value).to_string());
    }
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    // Pods need the namespace's default ServiceAccount, made by kube-controller-manager.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for("default ServiceAccount", TIMEOUT, || async {
        Ok(accounts.get_opt("default").await?)
    })
    .await?;
    Ok(name)
}

pub async fn create<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), object).await
}

/// Asserts an API error with `code` whose message contains every part of `parts`; returns
/// the message.
#[track_caller]
pub fn denied<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    code: u16,
    parts: &[&str],
) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, code, "unexpected status: {status:?}");
            for part in parts {
                assert!(
                    status.message.contains(part),
                    "{:?} does not contain {part:?}",
                    status.message
                );
            }
            status.message
        }
        other => panic!("expected a {code} denial, got {other:?}"),
    }
}

pub fn webhook_prefix(webhook: &str) -> String {
    format!("admission webhook \"{webhook}\" denied the request: ")
}

pub const POOL_WEBHOOK: &str = "spiderippool.spiderpool.spidernet.io";
pub const SUBNET_WEBHOOK: &str = "spidersubnet.spiderpool.spidernet.io";
pub const SMC_WEBHOOK: &str = "spidermultusconfig.spiderpool.spidernet.io";
