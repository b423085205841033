//! SpiderIPPool: the process-wide pool/subnet/reservation caches, the object helpers every IPAM
//! controller shares, the IPAM flags, and the IPPool controller.

pub mod args;
pub mod cache;
pub mod controller;
pub mod objects;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use kube::Client;
use prometheus_client::registry::Registry;

use crate::admin::Readiness;
use crate::application::{self, SettingsFn};
use crate::gc;
use crate::metrics::ControllerMetrics;
use crate::poolmetrics::IpamCounters;
use crate::subnet;
use crate::subnet::locks::SubnetLocks;

/// A leader-only controller: its name, the readiness conditions of its caches, and how to start
/// it (called each time this replica becomes leader).
pub type Factory = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Starts the caches and the usage metrics (every replica) and returns the IPAM controllers for
/// the supervisor to run while leading.
pub fn controllers(
    client: Client,
    process_args: &crate::args::Args,
    registry: &mut Registry,
    readiness: &Readiness,
    metrics: &ControllerMetrics,
) -> Vec<(&'static str, Vec<&'static str>, Factory)> {
    let args = &process_args.ipam;
    let cache = cache::IpamCache::start(&client, readiness);
    let counters = IpamCounters::register(registry, cache.clone());
    let configmap = cache::settings_configmap(
        &client,
        readiness,
        &process_args.namespace,
        &process_args.settings_configmap,
    );
    let flags = args.clone();
    let settings: SettingsFn = Arc::new(move || flags.apply(configmap.settings()));
    let locks = SubnetLocks::default();
    let mut controllers: Vec<(&'static str, Vec<&'static str>, Factory)> = Vec::new();

    if args.enable_ippool_controller {
        let context = Arc::new(controller::Context::new(
            client.clone(),
            metrics.clone(),
            counters.clone(),
        ));
        let readiness = readiness.clone();
        controllers.push((
            controller::CONTROLLER_NAME,
            vec![controller::READINESS],
            Box::new(move || controller::run(context.clone(), readiness.clone()).boxed()),
        ));
    }
    if args.enable_spider_subnet {
        let context = Arc::new(subnet::controller::Context::new(
            client.clone(),
            metrics.clone(),
            cache.clone(),
            locks.clone(),
        ));
        let subnet_readiness = readiness.clone();
        controllers.push((
            subnet::controller::CONTROLLER_NAME,
            vec![subnet::controller::READINESS],
            Box::new(move || {
                subnet::controller::run(context.clone(), subnet_readiness.clone()).boxed()
            }),
        ));
        if args.enable_auto_pool_for_application {
            let mut context = application::Context::new(
                client.clone(),
                metrics.clone(),
                counters.clone(),
                cache.clone(),
                locks.clone(),
                settings.clone(),
            );
            context.resync = args.auto_pool_resync;
            let context = Arc::new(context);
            let readiness = readiness.clone();
            controllers.push((
                application::CONTROLLER_NAME,
                application::READINESS.to_vec(),
                Box::new(move || application::run(context.clone(), readiness.clone()).boxed()),
            ));
        }
    }
    if args.gc_enabled {
        let context = Arc::new(gc::Context::new(
            client,
            cache,
            counters,
            metrics.clone(),
            gc::GcConfig {
                interval: args.gc_interval,
                trace_interval: args.gc_trace_interval,
                verdict: args.gc_settings(),
            },
            settings,
        ));
        let readiness = readiness.clone();
        controllers.push((
            gc::CONTROLLER_NAME,
            vec![gc::READINESS],
            Box::new(move || gc::run(context.clone(), readiness.clone()).boxed()),
        ));
    }
    controllers
}
