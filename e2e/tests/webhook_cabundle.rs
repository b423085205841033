//! `caBundle` injection in `auto` certificate mode, with the controller-manager running as
//! installed (ServiceAccount and roles of `config/rbac`): webhook configurations that appear
//! after it started get the CA of its Secret, and a `caBundle` a user overwrites (a manifest
//! re-applied with a stale one) is written back, and a certificate found due for renewal at start-up
//! is re-issued by the CA already in the Secret. The configurations are those of
//! `config/webhook/manifests.yaml` (see `install_webhook_configurations`), judging only objects
//! labelled for this suite; the two tests take turns, since both rewrite them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use spiderpool_api::SpiderIPPool;
use spiderpool_e2e::{
    MANAGER_NAMESPACE, WEBHOOK_CONFIGURATION, WEBHOOK_SECRET, client, controller_manager,
    install_webhook_configurations, run_dir, unique_name, wait_for,
};

const LABEL: &str = "spiderpool-e2e-webhook-cabundle";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The tests rewrite the same two configurations: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The port of the webhook server.
fn port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port")
    })
}

/// What the test left in the certificate Secret before the controller-manager started.
struct Seeded {
    ca: Vec<u8>,
    certificate: Vec<u8>,
}

/// An earlier installation's Secret whose certificate is due for renewal: the CA and serving
/// certificate of `webhook-certs/generate.sh`, without the annotations that record the
/// certificate's names and expiry (so the controller-manager must re-issue it, by that CA).
async fn seed_secret(client: &Client) -> anyhow::Result<Seeded> {
    let dir = run_dir().join(unique_name("webhook-cabundle-seed"));
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../webhook-certs/generate.sh");
    let status = std::process::Command::new(script)
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "webhook-certs/generate.sh failed");
    let mut files = BTreeMap::new();
    for file in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        files.insert(file.to_string(), ByteString(std::fs::read(dir.join(file))?));
    }
    let seeded = Seeded {
        ca: files["ca.crt"].0.clone(),
        certificate: files["tls.crt"].0.clone(),
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), MANAGER_NAMESPACE);
    match secrets
        .delete(WEBHOOK_SECRET, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": WEBHOOK_SECRET, "namespace": MANAGER_NAMESPACE},
        "type": "kubernetes.io/tls",
    }))?;
    let secret = Secret {
        data: Some(files),
        ..secret
    };
    // The previous Secret may still be terminating for a moment.
    wait_for("the seeded Secret created", TIMEOUT, || async {
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(Some(())),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(error) => Err(error.into()),
        }
    })
    .await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(seeded)
}

/// The running controller-manager (webhooks only), started after the Secret was seeded, and
/// what was seeded.
async fn setup() -> anyhow::Result<(Client, &'static Seeded)> {
    let client = client().await?;
    static SEEDED: tokio::sync::OnceCell<Seeded> = tokio::sync::OnceCell::const_new();
    let seeded = SEEDED.get_or_try_init(|| seed_secret(&client)).await?;
    let args = [
        format!("--webhook-addr=127.0.0.1:{}", port()),
        "--webhook-cert-mode=auto".to_string(),
        "--webhook-extra-sans=127.0.0.1".to_string(),
        "--enable-ipam-controllers=false".to_string(),
        "--enable-multus-config=false".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    controller_manager(&args).await?;
    Ok((client, seeded))
}

/// The `caBundle` of every webhook of both configurations (`None` for a webhook without one).
async fn bundles(client: &Client) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(WEBHOOK_CONFIGURATION)
        .await?;
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get_opt(WEBHOOK_CONFIGURATION)
        .await?;
    let mut bundles: Vec<Option<Vec<u8>>> = Vec::new();
    for webhook in mutating
        .iter()
        .flat_map(|configuration| configuration.webhooks.iter().flatten())
    {
        bundles.push(
            webhook
                .client_config
                .ca_bundle
                .clone()
                .map(|bundle| bundle.0),
        );
    }
    for webhook in validating
        .iter()
        .flat_map(|configuration| configuration.webhooks.iter().flatten())
    {
        bundles.push(
            webhook
                .client_config
                .ca_bundle
                .clone()
                .map(|bundle| bundle.0),
        );
    }
    Ok(bundles)
}

/// Waits until every webhook of both configurations (14 in `config/webhook`) trusts `ca`.
async fn wait_injected(client: &Client, ca: &[u8]) -> anyhow::Result<()> {
    wait_for(
        "caBundle injected into both configurations",
        TIMEOUT,
        || async {
            let bundles = bundles(client).await?;
            Ok(
                (bundles.len() == 14 && bundles.iter().all(|bundle| bundle.as_deref() == Some(ca)))
                    .then_some(()),
            )
        },
    )
    .await
}

/// The webhooks judge a labelled pool through the API server, which verifies the webhook server
/// with the injected CA: a bad subnet is denied.
async fn wait_webhooks_act(client: &Client) -> anyhow::Result<()> {
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let pool: SpiderIPPool = serde_json::from_value(json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderIPPool",
        "metadata": {"name": unique_name("cabundle"), "labels": {LABEL: "true"}},
        "spec": {"subnet": "198.19.250.1/24"},
    }))?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for("the webhooks judging a labelled pool", TIMEOUT, || async {
        Ok(match pools.create(&dry_run, &pool).await {
            Err(kube::Error::Api(status)) if status.message.contains("unformatted subnet") => {
                Some(())
            }
            _ => None,
        })
    })
    .await
}

async fn delete_configurations(client: &Client) -> anyhow::Result<()> {
    for result in [
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(WEBHOOK_CONFIGURATION, &DeleteParams::default())
            .await
            .map(|_| ()),
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .delete(WEBHOOK_CONFIGURATION, &DeleteParams::default())
            .await
            .map(|_| ()),
    ] {
        match result {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    wait_for("both configurations gone", TIMEOUT, || async {
        Ok(bundles(client).await?.is_empty().then_some(()))
    })
    .await
}

/// Writes `bundle` into every webhook of the configuration, as `kubectl replace -f` of a manifest
/// carrying a stale CA would.
async fn overwrite<K>(client: &Client, bundle: &[u8]) -> anyhow::Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let mut configuration = serde_json::to_value(api.get(WEBHOOK_CONFIGURATION).await?)?;
    let encoded = serde_json::to_value(ByteString(bundle.to_vec()))?;
    for webhook in configuration["webhooks"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        webhook["clientConfig"]["caBundle"] = encoded.clone();
    }
    api.replace(
        WEBHOOK_CONFIGURATION,
        &PostParams::default(),
        &serde_json::from_value(configuration)?,
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn configurations_created_after_the_controller_manager_started_get_the_ca_bundle()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (client, seeded) = setup().await?;
    let ca = &seeded.ca;
    // The controller-manager runs; the configurations are installed (again) only now, without
    // caBundle, as `kubectl apply -k config/default` would after it.
    delete_configurations(&client).await?;
    install_webhook_configurations(&client, port(), LABEL).await?;
    wait_injected(&client, ca).await?;
    wait_webhooks_act(&client).await?;
    Ok(())
}

#[tokio::test]
async fn a_ca_bundle_overwritten_by_a_user_is_restored() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let (client, seeded) = setup().await?;
    let ca = &seeded.ca;
    install_webhook_configurations(&client, port(), LABEL).await?;
    wait_injected(&client, ca).await?;
    let stale = b"-----BEGIN CERTIFICATE-----\nstale\n-----END CERTIFICATE-----\n";
    overwrite::<MutatingWebhookConfiguration>(&client, stale).await?;
    overwrite::<ValidatingWebhookConfiguration>(&client, stale).await?;
    wait_injected(&client, ca).await?;
    wait_webhooks_act(&client).await?;
    Ok(())
}

#[tokio::test]
async fn a_certificate_due_for_renewal_at_start_up_is_reissued_by_the_same_ca() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let (client, seeded) = setup().await?;
    // The webhook server is ready, so the certificate it serves has been stored.
    let secret = Api::<Secret>::namespaced(client.clone(), MANAGER_NAMESPACE)
        .get(WEBHOOK_SECRET)
        .await?;
    let data = secret.data.clone().unwrap_or_default();
    assert_eq!(
        data.get("ca.crt").map(|ca| &ca.0),
        Some(&seeded.ca),
        "the CA is kept"
    );
    assert_ne!(
        data.get("tls.crt").map(|certificate| &certificate.0),
        Some(&seeded.certificate),
        "the serving certificate is re-issued"
    );
    // The controller-manager's record of the new certificate's expiry (unix seconds).
    let not_after: i64 = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get("spiderpool.spidernet.io/webhook-cert-not-after"))
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no expiry recorded on Secret {WEBHOOK_SECRET}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    assert!(
        not_after > i64::try_from(now)? + 300 * 86_400,
        "renewed for a year: {not_after}"
    );
    // The API server verifies the renewed certificate with the kept CA.
    install_webhook_configurations(&client, port(), LABEL).await?;
    wait_injected(&client, &seeded.ca).await?;
    wait_webhooks_act(&client).await?;
    Ok(())
}
