//! The invariant checker for the suites: [`assert_consistent`] gathers pools, subnets, endpoints,
//! pods and workloads (`spiderpool_store::invariants::gather`) and checks them
//! (`spiderpool_ipam::invariants::check`), scoped to the suite's namespace so suites running in
//! parallel only judge their own objects.

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use spiderpool_ipam::ClusterSettings;
use spiderpool_ipam::invariants::{Violation, check};
use spiderpool_store::invariants::{Scope, gather};

use crate::{MANAGER_NAMESPACE, SETTINGS_CONFIGMAP};

/// The settings the controller-manager reads (`kube-system/spiderpool-conf`; absent = defaults).
pub async fn cluster_settings(client: &Client) -> anyhow::Result<ClusterSettings> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), MANAGER_NAMESPACE);
    let text = config_maps
        .get_opt(SETTINGS_CONFIGMAP)
        .await?
        .and_then(|config_map| config_map.data)
        .and_then(|data| data.get("conf.yml").cloned())
        .unwrap_or_default();
    Ok(ClusterSettings::from_yaml(&text)?)
}

/// One look: the violations now (`namespace`: only what touches it; `None`: the whole cluster).
pub async fn violations(
    client: &Client,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<Violation>> {
    let scope = Scope {
        namespace: namespace.map(str::to_string),
        settings: cluster_settings(client).await?,
    };
    let snapshot = gather(client, &scope)
        .await
        .context("gathering the invariant snapshot")?;
    Ok(check(&snapshot))
}

/// Waits (up to `timeout`) until the namespace shows no violation; fails with every violation of
/// the last look. Controllers converge asynchronously (an endpoint lands after its record, GC
/// collects on its own schedule), so a clean look is the positive signal waited for.
pub async fn wait_consistent(
    client: &Client,
    namespace: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = violations(client, namespace).await?;
        if found.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let lines: Vec<String> = found
                .iter()
                .map(|violation| format!("  [{}] {violation}", violation.kind()))
                .collect();
            anyhow::bail!(
                "{} invariant violation(s) in {} after {timeout:?}:\n{}",
                found.len(),
                namespace.unwrap_or("the cluster"),
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The end-of-suite check: the namespace settles to no violation within 60 s.
pub async fn assert_consistent(client: &Client, namespace: &str) -> anyhow::Result<()> {
    wait_consistent(client, Some(namespace), Duration::from_secs(60)).await
}
