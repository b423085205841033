//! Starts the controllers while this replica leads and stops them when it no longer does.
//!
//! Each controller is an independent future; losing leadership aborts them all (their watches
//! and in-flight reconciles are dropped), regaining it starts them afresh from a new list, which
//! is what level-triggered reconcilers are built for.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::Client;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::Readiness;
use crate::args::Args;
use crate::metrics::ControllerMetrics;
use crate::multusconfig;

type ControllerFactory = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

pub struct Controllers {
    factories: Vec<(&'static str, ControllerFactory)>,
    /// Readiness conditions that only mean something while leading (cache syncs).
    leader_conditions: Vec<&'static str>,
    readiness: Readiness,
}

impl Controllers {
    pub fn new(
        client: Client,
        args: &Args,
        registry: &mut Registry,
        readiness: &Readiness,
    ) -> Self {
        let metrics = ControllerMetrics::register(registry);
        let mut factories: Vec<(&'static str, ControllerFactory)> = Vec::new();
        let mut leader_conditions = Vec::new();
        if args.enable_multus_config {
            let context = Arc::new(multusconfig::controller::Context::new(
                client.clone(),
                metrics.clone(),
            ));
            let readiness = readiness.clone();
            leader_conditions.push(multusconfig::controller::READINESS);
            factories.push((
                multusconfig::controller::CONTROLLER_NAME,
                Box::new(move || {
                    multusconfig::controller::run(context.clone(), readiness.clone()).boxed()
                }),
            ));
        }
        if args.enable_ipam_controllers {
            for (name, conditions, factory) in
                crate::ippool::controllers(client.clone(), args, registry, readiness, &metrics)
            {
                leader_conditions.extend(conditions);
                factories.push((name, factory));
            }
        }
        Self {
            factories,
            leader_conditions,
            readiness: readiness.clone(),
        }
    }

    /// A follower has no caches to wait for: its conditions hold; a new leader must sync first.
    fn set_leader_conditions(&self, met: bool) {
        for condition in &self.leader_conditions {
            self.readiness.set(condition, met);
        }
    }

    /// Runs until `shutdown` flips to true.
    pub async fn supervise(
        &self,
        mut leading: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.set_leader_conditions(!*leading.borrow());
        loop {
            tokio::select! {
                result = leading.wait_for(|leading| *leading) => {
                    if result.is_err() { return; }
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            self.set_leader_conditions(false);
            let mut running = JoinSet::new();
            for (name, factory) in &self.factories {
                tracing::info!(controller = name, "starting controller");
                running.spawn(factory());
            }
            tokio::select! {
                _ = leading.wait_for(|leading| !*leading) => {
                    tracing::warn!("not leading any more: stopping controllers");
                    running.shutdown().await;
                    self.set_leader_conditions(true);
                }
                _ = shutdown.wait_for(|stop| *stop) => {
                    running.shutdown().await;
                    return;
                }
            }
        }
    }
}
