//! The composition root: everything the process runs is built and wired here, and nowhere else.
//!
//! Start-up order: API client → startup probe of required APIs → the registry, readiness, the
//! shared IPAM state and every leader-only controller's Context → admin server (`/livez` at once,
//! `/readyz` once caches sync) → webhook server (every replica) → leader election → the
//! supervisor runs the controllers while this replica leads. SIGTERM/SIGINT stop the
//! controllers, release the Lease and drain the servers.

use std::sync::Arc;

use anyhow::Context as _;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::args::Args;
use crate::runtime::admin::{self, Readiness};
use crate::runtime::leader;
use crate::runtime::metrics::{self, ControllerMetrics};
use crate::runtime::probe;
use crate::runtime::supervisor::{LeaderController, Supervisor};
use crate::shared::IpamShared;
use crate::shared::cache::IpamCache;
use crate::{autopool, coordinator, gc, ippool, multusconfig, subnet, webhook};

/// Runs the controller-manager until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
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
    let readiness = Readiness::default();
    // One set of IPAM caches per process, read by the webhooks and the IPAM controllers alike.
    let cache = (args.enable_webhook || args.enable_ipam_controllers)
        .then(|| IpamCache::start(&client, &readiness));
    let controllers = leader_controllers(&client, &args, cache.as_ref(), &mut registry, &readiness);
    let supervisor = Supervisor::new(controllers, &readiness);
    let webhook_metrics = webhook::metrics::WebhookMetrics::register(&mut registry);
    let (leading_tx, leading_rx) = watch::channel(!args.leader_elect);
    metrics::register_leader(&mut registry, leading_rx.clone());
    let registry = Arc::new(registry);
    // Webhooks serve on every replica, leader or not.
    let webhooks = cache.filter(|_| args.enable_webhook).map(|cache| {
        tokio::spawn(webhook::run(
            client.clone(),
            args.clone(),
            cache,
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

    supervisor.supervise(leading_rx, shutdown_rx).await;
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

/// Every leader-only controller the flags enable, with its Context. The IPAM state (settings,
/// usage metrics, on `cache`) starts here on every replica: `/metrics` reports from it whether
/// or not this replica leads.
fn leader_controllers(
    client: &Client,
    args: &Args,
    cache: Option<&IpamCache>,
    registry: &mut Registry,
    readiness: &Readiness,
) -> Vec<LeaderController> {
    let metrics = ControllerMetrics::register(registry);
    let mut controllers = Vec::new();
    if args.enable_multus_config {
        let context = Arc::new(multusconfig::controller::Context::new(
            client.clone(),
            metrics.clone(),
        ));
        let ready = readiness.clone();
        controllers.push(LeaderController::new(
            multusconfig::controller::CONTROLLER_NAME,
            &[multusconfig::controller::READINESS],
            move || multusconfig::controller::run(context.clone(), ready.clone()),
        ));
    }
    if args.enable_coordinator_controller {
        let context = Arc::new(coordinator::controller::Context::new(
            client.clone(),
            metrics.clone(),
        ));
        let ready = readiness.clone();
        controllers.push(LeaderController::new(
            coordinator::controller::CONTROLLER_NAME,
            &[coordinator::controller::READINESS],
            move || coordinator::controller::run(context.clone(), ready.clone()),
        ));
    }
    let Some(cache) = cache.filter(|_| args.enable_ipam_controllers) else {
        return controllers;
    };
    let flags = &args.ipam;
    let shared = IpamShared::start(client, args, cache.clone(), registry, readiness);
    if flags.enable_ippool_controller {
        let context = Arc::new(ippool::Context::new(&shared, metrics.clone()));
        let ready = readiness.clone();
        controllers.push(LeaderController::new(
            ippool::CONTROLLER_NAME,
            &[ippool::READINESS],
            move || ippool::run(context.clone(), ready.clone()),
        ));
    }
    if flags.enable_spider_subnet {
        let context = Arc::new(subnet::Context::new(&shared, metrics.clone()));
        let ready = readiness.clone();
        controllers.push(LeaderController::new(
            subnet::CONTROLLER_NAME,
            &[subnet::READINESS],
            move || subnet::run(context.clone(), ready.clone()),
        ));
        if flags.enable_auto_pool_for_application {
            let context = Arc::new(autopool::Context::new(
                &shared,
                metrics.clone(),
                flags.auto_pool_resync,
            ));
            let ready = readiness.clone();
            controllers.push(LeaderController::new(
                autopool::CONTROLLER_NAME,
                &autopool::READINESS,
                move || autopool::run(context.clone(), ready.clone()),
            ));
        }
    }
    if flags.gc_enabled {
        let config = gc::GcConfig {
            interval: flags.gc_interval,
            trace_interval: flags.gc_trace_interval,
            verdict: flags.gc_settings(),
        };
        let context = Arc::new(gc::Context::new(&shared, metrics, config));
        let ready = readiness.clone();
        controllers.push(LeaderController::new(
            gc::CONTROLLER_NAME,
            &[gc::READINESS],
            move || gc::run(context.clone(), ready.clone()),
        ));
    }
    controllers
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
