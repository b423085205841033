//! `check`: the consistency check of pools, subnets, endpoints, pods and workloads — every
//! record against its pod and endpoint, no address twice, counts true, subnets against their
//! pools, auto pools against their workloads. The same checker the reliability suites run
//! (`spiderpool_store::invariants::gather`, then the pure `spiderpool_ipam::invariants::check`).

use serde::Serialize;
use spiderpool_ipam::invariants::{Violation, check, count_by_kind};
use spiderpool_ipam::settings::ClusterSettings;
use spiderpool_store::invariants::{Scope, gather};

#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// `the cluster`, or the namespace checked.
    pub scope: String,
    pub pools: usize,
    pub subnets: usize,
    pub endpoints: usize,
    pub pods: usize,
    pub violations: Vec<ViolationLine>,
}

#[derive(Debug, Serialize)]
pub struct ViolationLine {
    pub kind: &'static str,
    pub message: String,
    pub detail: Violation,
}

impl CheckReport {
    /// `kind: count` of the violations.
    pub fn summary(&self) -> String {
        let violations: Vec<Violation> = self
            .violations
            .iter()
            .map(|line| line.detail.clone())
            .collect();
        count_by_kind(&violations)
            .iter()
            .map(|(kind, count)| format!("{kind}: {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub async fn run(
    client: &kube::Client,
    settings: ClusterSettings,
    namespace: Option<String>,
) -> anyhow::Result<CheckReport> {
    let scope = Scope {
        namespace: namespace.clone(),
        settings,
    };
    let snapshot = gather(client, &scope).await?;
    let violations = check(&snapshot)
        .into_iter()
        .map(|violation| ViolationLine {
            kind: violation.kind(),
            message: violation.to_string(),
            detail: violation,
        })
        .collect();
    Ok(CheckReport {
        scope: namespace.unwrap_or_else(|| "the cluster".to_string()),
        pools: snapshot.pools.len(),
        subnets: snapshot.subnets.len(),
        endpoints: snapshot.endpoints.len(),
        pods: snapshot.pods.len(),
        violations,
    })
}
