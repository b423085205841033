//! The admission webhooks: defaulting and validation of every Spiderpool kind (upstream's rules
//! and denial texts) and validation of the `ipam.spidernet.io/*` annotations of pods, workloads
//! and namespaces.
//!
//! Layout: one pure module per kind ([`ippool`], [`subnet`], [`reservedip`], [`multusconfig`],
//! [`coordinator`], [`annotations`]) holding the rules with their unit tests; [`field`] renders
//! Kubernetes field errors and status errors exactly as Go does; [`hooks`] names the webhooks
//! and decodes the reviewed objects; [`handlers`] reads what the rules need; [`server`] speaks
//! AdmissionReview over HTTPS (rustls, HTTP/1.1 and h2);
//! [`certs`] makes or loads the serving certificate; [`cabundle`] keeps the CA in the installed
//! webhook configurations; [`registration`] builds them for local runs.
//!
//! The webhooks serve on every replica (they are not leader-gated) and read pools and subnets
//! from the process-wide IPAM caches. The replica is ready once the caches have synced and the
//! certificate is loaded.

pub mod annotations;
pub mod cabundle;
pub mod certs;
pub mod common;
pub mod coordinator;
pub mod field;
pub mod handlers;
pub mod hooks;
pub mod ippool;
pub mod metrics;
pub mod multusconfig;
pub mod registration;
pub mod reservedip;
pub mod server;
pub mod subnet;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum_server::tls_rustls::RustlsConfig;
use kube::Client;
use tokio::sync::watch;

use crate::args::{Args, CertMode};
use crate::runtime::admin::Readiness;
use crate::shared::cache::IpamCache;
use crate::shared::settings::SettingsSource;
use handlers::WebhookState;
use metrics::WebhookMetrics;
use registration::{Endpoint, Registration};

pub const READY_CERTIFICATE: &str = "webhook certificate";
pub const READY_SETTINGS: &str = "webhook settings cache";

/// How the webhook server gets its certificate, resolved from the flags.
struct Certificates {
    config: RustlsConfig,
    ca_bundle: Option<Vec<u8>>,
}

async fn load_certificates(client: &Client, args: &Args) -> anyhow::Result<Certificates> {
    match args.webhook_cert_mode {
        CertMode::Auto => {
            let sans = certs::service_sans(
                &args.webhook_service_name,
                &args.namespace,
                &args.webhook_extra_sans,
            );
            let bundle =
                certs::ensure_secret(client, &args.namespace, &args.webhook_secret_name, &sans)
                    .await
                    .context("webhook certificate (auto mode)")?;
            let config = RustlsConfig::from_pem(
                bundle.cert.clone().into_bytes(),
                bundle.key.clone().into_bytes(),
            )
            .await
            .context("loading the webhook certificate")?;
            Ok(Certificates {
                config,
                ca_bundle: Some(bundle.ca_cert.into_bytes()),
            })
        }
        CertMode::Provided => {
            let files = certs::CertFiles {
                dir: args.webhook_cert_dir.clone(),
            };
            let contents = files
                .read()
                .await
                .context("webhook certificate (provided mode)")?;
            let config = RustlsConfig::from_pem(contents.cert.clone(), contents.key.clone())
                .await
                .context("loading the webhook certificate")?;
            Ok(Certificates {
                config,
                ca_bundle: contents.ca,
            })
        }
    }
}

/// `--webhook-register-url` (local development): creates or updates both configurations with
/// `clientConfig.url`. This needs `create` and `patch` on them, which `config/rbac` does not grant:
/// in a cluster the configurations come from `config/webhook` and only their `caBundle` is ours.
async fn register_local(
    client: &Client,
    args: &Args,
    base: &str,
    ca_bundle: Option<&[u8]>,
) -> anyhow::Result<()> {
    let registration = Registration {
        name: args.webhook_configuration_name.clone(),
        endpoint: Endpoint::Url(base.to_string()),
        ca_bundle: ca_bundle.unwrap_or_default().to_vec(),
        namespace_selector: registration::parse_labels(&args.webhook_namespace_selector)
            .map_err(anyhow::Error::msg)?,
        object_selector: registration::parse_labels(&args.webhook_object_selector)
            .map_err(anyhow::Error::msg)?,
    };
    registration
        .apply(client)
        .await
        .context("registering the webhook configurations")?;
    tracing::info!(name = %registration.name, url = %base, "webhook configurations registered");
    Ok(())
}

/// Runs the webhook server until `shutdown` flips to true. Failing to get a certificate is
/// retried (the replica stays unready meanwhile), so a slow API server does not crash it.
pub async fn run(
    client: Client,
    args: Args,
    cache: IpamCache,
    metrics: WebhookMetrics,
    readiness: Readiness,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    readiness.set(READY_CERTIFICATE, false);
    let settings = SettingsSource::start(
        &client,
        &readiness,
        READY_SETTINGS,
        &args.namespace,
        &args.settings_configmap,
    );

    let certificates = loop {
        match load_certificates(&client, &args).await {
            Ok(certificates) => break certificates,
            Err(error) => {
                tracing::warn!("{error:#}; retrying in 2s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
                }
            }
        }
    };
    if let Some(base) = &args.webhook_register_url {
        loop {
            match register_local(&client, &args, base, certificates.ca_bundle.as_deref()).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!("{error:#}; retrying in 2s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
                    }
                }
            }
        }
    }
    // The CA the configurations must trust; a rotation publishes the new one.
    let (ca_bundle, ca_bundle_updates) = watch::channel(certificates.ca_bundle.clone());
    if !args.webhook_configuration_name.is_empty() {
        tokio::spawn(cabundle::keep_injected(
            client.clone(),
            args.webhook_configuration_name.clone(),
            ca_bundle_updates,
        ));
    }
    spawn_rotation(
        client.clone(),
        args.clone(),
        certificates.config.clone(),
        metrics.clone(),
        ca_bundle,
    );

    let state = Arc::new(WebhookState {
        client,
        settings,
        pools: cache.pools,
        subnets: cache.subnets,
        metrics,
    });
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
        });
    }
    let addr: SocketAddr = args.webhook_addr;
    // TCP_NODELAY: small request/response pairs must not wait on Nagle and delayed ACKs.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(certificates.config)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    let server = axum_server::bind(addr)
        .acceptor(acceptor)
        .handle(handle.clone())
        .serve(server::router(state).into_make_service());
    let readiness_on_listen = {
        let handle = handle.clone();
        let readiness = readiness.clone();
        async move {
            if let Some(address) = handle.listening().await {
                tracing::info!(%address, "webhook server listening (https, h2 and http/1.1)");
                readiness.set(READY_CERTIFICATE, true);
            }
        }
    };
    tokio::spawn(readiness_on_listen);
    let result = server
        .await
        .with_context(|| format!("webhook server on {addr}"));
    if let Err(error) = &result {
        // main only collects this result at shutdown: say it now (the replica stays unready).
        tracing::error!("{error:#}");
    }
    result
}

/// Keeps the served certificate current: `provided` reloads changed files; `auto` re-checks the
/// Secret hourly (renewal before expiry, or a certificate rotated by another replica).
fn spawn_rotation(
    client: Client,
    args: Args,
    config: RustlsConfig,
    metrics: WebhookMetrics,
    ca_bundle: watch::Sender<Option<Vec<u8>>>,
) {
    match args.webhook_cert_mode {
        CertMode::Provided => {
            let files = certs::CertFiles {
                dir: args.webhook_cert_dir.clone(),
            };
            tokio::spawn(async move {
                let Ok(initial) = files.read().await else {
                    return;
                };
                certs::watch_files(files, initial, args.webhook_cert_reload_interval, |contents| {
                    let config = config.clone();
                    let metrics = metrics.clone();
                    let ca_bundle = ca_bundle.clone();
                    async move {
                        if let Err(error) = config.reload_from_pem(contents.cert, contents.key).await {
                            tracing::warn!(%error, "new webhook certificate files are not usable yet");
                            return false;
                        }
                        metrics.certificate_reloaded();
                        tracing::info!("reloaded the webhook serving certificate");
                        if let Some(ca) = contents.ca {
                            ca_bundle.send_if_modified(|current| replace_if_new(current, ca));
                        }
                        true
                    }
                })
                .await;
            });
        }
        CertMode::Auto => {
            tokio::spawn(async move {
                let sans = certs::service_sans(
                    &args.webhook_service_name,
                    &args.namespace,
                    &args.webhook_extra_sans,
                );
                let mut served = None::<String>;
                let mut ticker = tokio::time::interval(Duration::from_secs(3600));
                loop {
                    ticker.tick().await;
                    match certs::ensure_secret(
                        &client,
                        &args.namespace,
                        &args.webhook_secret_name,
                        &sans,
                    )
                    .await
                    {
                        Ok(bundle) => {
                            let changed = served.as_ref().is_some_and(|cert| *cert != bundle.cert);
                            if changed {
                                match config
                                    .reload_from_pem(
                                        bundle.cert.clone().into_bytes(),
                                        bundle.key.clone().into_bytes(),
                                    )
                                    .await
                                {
                                    Ok(()) => {
                                        metrics.certificate_reloaded();
                                        let ca = bundle.ca_cert.clone().into_bytes();
                                        ca_bundle.send_if_modified(|current| {
                                            replace_if_new(current, ca)
                                        });
                                    }
                                    Err(error) => {
                                        tracing::warn!(%error, "cannot load the renewed certificate")
                                    }
                                }
                            }
                            served = Some(bundle.cert);
                        }
                        Err(error) => tracing::warn!("{error:#}"),
                    }
                }
            });
        }
    }
}

/// Stores `new` in `current`; whether that changed anything (only a new CA is published).
fn replace_if_new(current: &mut Option<Vec<u8>>, new: Vec<u8>) -> bool {
    if current.as_ref() == Some(&new) {
        return false;
    }
    *current = Some(new);
    true
}
