//! Starts the leader-only controllers while this replica leads and stops them when it no longer
//! does.
//!
//! Each controller is an independent future; losing leadership aborts them all (their watches
//! and in-flight reconciles are dropped), regaining it starts them afresh from a new list, which
//! is what level-triggered reconcilers are built for.

use std::future::Future;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::admin::Readiness;

/// How to start a controller (called each time this replica becomes leader).
pub type ControllerFactory = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A leader-only controller: its name, the readiness conditions of its caches, and its factory.
pub struct LeaderController {
    pub name: &'static str,
    pub readiness: Vec<&'static str>,
    pub start: ControllerFactory,
}

impl LeaderController {
    pub fn new<F, Fut>(name: &'static str, readiness: &[&'static str], start: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        LeaderController {
            name,
            readiness: readiness.to_vec(),
            start: Box::new(move || start().boxed()),
        }
    }
}

pub struct Supervisor {
    controllers: Vec<LeaderController>,
    readiness: Readiness,
}

impl Supervisor {
    pub fn new(controllers: Vec<LeaderController>, readiness: &Readiness) -> Self {
        Supervisor {
            controllers,
            readiness: readiness.clone(),
        }
    }

    /// A follower has no caches to wait for: its conditions hold; a new leader must sync first.
    fn set_leader_conditions(&self, met: bool) {
        for controller in &self.controllers {
            for condition in &controller.readiness {
                self.readiness.set(condition, met);
            }
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
            for controller in &self.controllers {
                tracing::info!(controller = controller.name, "starting controller");
                running.spawn((controller.start)());
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
