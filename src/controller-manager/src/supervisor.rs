//! Starts the controllers while this replica leads and stops them when it no longer does.
//!
//! Each controller is an independent future; losing leadership aborts them all (their watches
//! and in-flight reconciles are dropped), regaining it starts them afresh from a new list, which
//! is what level-triggered reconcilers are built for.

use futures::future::BoxFuture;
use kube::Client;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::Readiness;
use crate::args::Args;

type ControllerFactory = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

pub struct Controllers {
    factories: Vec<(&'static str, ControllerFactory)>,
}

impl Controllers {
    pub fn new(
        _client: Client,
        _args: &Args,
        _registry: &mut Registry,
        _readiness: &Readiness,
    ) -> Self {
        Self {
            factories: Vec::new(),
        }
    }

    /// Runs until `shutdown` flips to true.
    pub async fn supervise(
        &self,
        mut leading: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                result = leading.wait_for(|leading| *leading) => {
                    if result.is_err() { return; }
                }
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let mut running = JoinSet::new();
            for (name, factory) in &self.factories {
                tracing::info!(controller = name, "starting controller");
                running.spawn(factory());
            }
            tokio::select! {
                _ = leading.wait_for(|leading| !*leading) => {
                    tracing::warn!("not leading any more: stopping controllers");
                    running.shutdown().await;
                }
                _ = shutdown.wait_for(|stop| *stop) => {
                    running.shutdown().await;
                    return;
                }
            }
        }
    }
}
