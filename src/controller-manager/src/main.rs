//! spiderpool-controller-manager: one binary hosting every controller, the admission webhooks,
//! the IP garbage collector and the metrics endpoint.
//!
//! Start-up order: flags → logging → API client → startup probe of required APIs → admin server
//! (`/livez` at once, `/readyz` once caches sync) → leader election → controllers (leader only).
//! SIGTERM/SIGINT stop the controllers, release the Lease and drain the servers.

mod admin;
mod application;
mod args;
mod backoff;
mod gc;
mod ippool;
mod leader;
mod metrics;
mod multusconfig;
mod poolmetrics;
mod probe;
mod subnet;
mod supervisor;
mod webhook;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::args::Args;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // kube and the webhook server use rustls; pick ring before anything opens a connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    init_logging(&args);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("spiderpool-controller-manager: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn client(args: &Args) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await.context(
            "no --kubeconfig given and no in-cluster or $KUBECONFIG configuration found",
        )?,
    };
    Ok(Client::try_from(config)?)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = client(&args).await?;
    probe::check(&client, probe::REQUIRED)
        .await
        .context("startup probe")?;
    tracing::info!("all required APIs are served");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        shutdown_tx.send_replace(true);
    });

    let mut registry = Registry::with_prefix("spiderpool");
    let readiness = admin::Readiness::default();
    let controllers =
        supervisor::Controllers::new(client.clone(), &args, &mut registry, &readiness);
    let webhook_metrics = webhook::metrics::WebhookMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    // Webhooks serve on every replica, leader or not.
    let webhooks = args.enable_webhook.then(|| {
        tokio::spawn(webhook::run(
            client.clone(),
            args.clone(),
            webhook_metrics,
            readiness.clone(),
            shutdown_rx.clone(),
        ))
    });

    let admin_shutdown = {
        let mut shutdown = shutdown_rx.clone();
        async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        }
    };
    let admin = tokio::spawn(admin::serve(
        args.admin_addr,
        admin::router(readiness.clone(), registry),
        admin_shutdown,
    ));

    let (leading_tx, leading_rx) = watch::channel(!args.leader_elect);
    let election = if args.leader_elect {
        let identity = args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("spiderpool-controller-manager-{}", std::process::id()));
        let config = leader::LeaderConfig {
            namespace: args.namespace.clone(),
            lease_name: args.leader_election_lease.clone(),
            identity: format!("{identity}_{}", std::process::id()),
            lease_duration: args.lease_duration,
            renew_interval: args.lease_renew_interval,
        };
        Some(tokio::spawn(leader::run(
            client.clone(),
            config,
            leading_tx,
            shutdown_rx.clone(),
        )))
    } else {
        None
    };

    controllers.supervise(leading_rx, shutdown_rx).await;
    if let Some(election) = election {
        let _ = election.await;
    }
    if let Some(webhooks) = webhooks {
        webhooks
            .await
            .context("webhook server task")?
            .context("webhook server")?;
    }
    admin
        .await
        .context("admin server task")?
        .context("admin server")?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
