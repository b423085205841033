//! Our `spiderpool` IPAM plugin in the benchmark driver: the two pools (one per family, named by
//! the network configuration as a SpiderMultusConfig would), a settings file, lock directory,
//! log and ServiceAccount kubeconfig per node (`config/rbac` as shipped); what is recorded: pool
//! records and SpiderEndpoints.

use std::collections::BTreeSet;
use std::path::PathBuf;

use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use spiderpool_api::{SpiderEndpoint, SpiderIPPool, SpiderReservedIP};
use spiderpool_e2e::binary;

use super::{BenchPlugin, SimPod, V4, V6};
use crate::ipam_support::{
    Scratch, SimNode, bare, create_pool, delete_pools, netconf, pool_records,
};

pub struct Spiderpool {
    /// Node-local lock files (the default) or none (`lockDir: ""`).
    pub lock_files: bool,
    /// Settings-file lines added on every node (`BENCH_IPAM_SETTINGS`).
    pub settings: String,
    /// The plugin's log level (`BENCH_IPAM_LOG_LEVEL`).
    pub log_level: String,
    /// Fail the run on a duplicate, a leak or a record of no pod (bench_ipam); otherwise only
    /// count them (the side-by-side table).
    pub strict: bool,
    /// What the label calls this build (a commit).
    pub revision: String,
    pools: Vec<String>,
    nodes: Vec<SimNode>,
}

impl Spiderpool {
    pub fn new(lock_files: bool, strict: bool) -> Spiderpool {
        Spiderpool {
            lock_files,
            settings: std::env::var("BENCH_IPAM_SETTINGS").unwrap_or_default(),
            log_level: std::env::var("BENCH_IPAM_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            strict,
            revision: String::new(),
            pools: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Sums `key=<n>` over the plugin log lines of `command` (`ADD` / `DEL`).
    pub fn sum_from_logs(&self, command: &str, key: &str) -> u64 {
        self.nodes
            .iter()
            .flat_map(|node| {
                std::fs::read_to_string(&node.log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| line.contains(&format!(": {command} ")))
                    .filter_map(|line| {
                        line.split(&format!("{key}="))
                            .nth(1)
                            .and_then(|rest| rest.split_whitespace().next())
                            .and_then(|value| value.parse::<u64>().ok())
                    })
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// No duplicate, no leak: records == endpoints == pods, every record held by a live pod.
    async fn verify(&self, client: &Client, pods: &[SimPod]) -> anyhow::Result<()> {
        let total = pods.len();
        let namespace = pods
            .first()
            .map(|sim| sim.pod.namespace.clone())
            .unwrap_or_default();
        let uids: BTreeSet<&String> = pods.iter().map(|sim| &sim.pod.uid).collect();
        let mut v4_records = None;
        for pool in &self.pools {
            let records = pool_records(client, pool).await?;
            anyhow::ensure!(
                records.len() == total,
                "pool {pool}: {} records for {total} pods",
                records.len()
            );
            let holders: BTreeSet<&String> = records.values().map(|record| &record.1).collect();
            anyhow::ensure!(
                holders == uids,
                "pool {pool}: records are not exactly the pods"
            );
            v4_records.get_or_insert(records);
        }
        let endpoints = Api::<SpiderEndpoint>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default())
            .await?
            .items;
        anyhow::ensure!(
            endpoints.len() == total,
            "{} endpoints for {total} pods",
            endpoints.len()
        );
        let endpoint_v4: BTreeSet<String> = endpoints
            .iter()
            .filter_map(|endpoint| endpoint.status.as_ref()?.current.ips.first()?.ipv4.clone())
            .map(|address| bare(&address))
            .collect();
        anyhow::ensure!(
            endpoint_v4.len() == total,
            "duplicate IPv4 addresses among endpoints"
        );
        let v4_records = v4_records.unwrap_or_default();
        anyhow::ensure!(
            endpoint_v4.iter().all(|ip| v4_records.contains_key(ip)),
            "endpoint address without record"
        );
        Ok(())
    }
}

impl BenchPlugin for Spiderpool {
    fn label(&self) -> String {
        if self.revision.is_empty() {
            "ours".to_string()
        } else {
            format!("ours ({})", self.revision)
        }
    }

    fn binary(&self) -> PathBuf {
        binary("spiderpool")
    }

    async fn install(&mut self, client: &Client, _scratch: &Scratch) -> anyhow::Result<()> {
        // Warm the API server's caches of the kinds the plugin lists (a first LIST waits for
        // them).
        Api::<SpiderReservedIP>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        Api::<SpiderIPPool>::all(client.clone())
            .list(&ListParams::default())
            .await?;
        let v4 = create_pool(
            client,
            "bench-v4",
            json!({"ipVersion": 4, "subnet": V4.subnet, "ips": [format!("{}-{}", V4.first, V4.last)], "gateway": V4.gateway}),
        )
        .await?;
        let v6 = create_pool(
            client,
            "bench-v6",
            json!({"ipVersion": 6, "subnet": V6.subnet, "ips": [format!("{}-{}", V6.first, V6.last)], "gateway": V6.gateway}),
        )
        .await?;
        self.pools = vec![v4, v6];
        Ok(())
    }

    async fn add_node(&mut self, client: &Client, scratch: &Scratch) -> anyhow::Result<String> {
        let node = SimNode::create(client, scratch, &[], &self.settings).await?;
        // The settings file names the node's lock directory; without locks it is emptied.
        if !self.lock_files {
            std::fs::write(
                &node.settings,
                format!("cniTimeoutSeconds: 60\nlockDir: \"\"\n{}\n", self.settings),
            )?;
        }
        let name = node.name.clone();
        self.nodes.push(node);
        Ok(name)
    }

    fn config(&self, index: usize) -> Value {
        let mut config = netconf(
            "1.0.0",
            &self.nodes[index],
            json!({
                "default_ipv4_ippool": [self.pools[0]],
                "default_ipv6_ippool": [self.pools[1]],
                "log_level": self.log_level,
            }),
        );
        config["name"] = json!("bench");
        config
    }

    async fn recorded(
        &self,
        client: &Client,
        namespace: &str,
    ) -> anyhow::Result<Vec<(&'static str, usize)>> {
        let mut records = 0;
        for pool in &self.pools {
            records += pool_records(client, pool).await?.len();
        }
        let endpoints = Api::<SpiderEndpoint>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await?
            .items
            .len();
        Ok(vec![("pool records", records), ("endpoints", endpoints)])
    }

    async fn after_add(&self, client: &Client, pods: &[SimPod]) -> anyhow::Result<Vec<String>> {
        if self.strict {
            self.verify(client, pods).await?;
        }
        Ok(vec![format!(
            "ADD: CAS writes {}, conflicts {}, retries {}, lock wait {} ms total",
            self.sum_from_logs("ADD", "cas_writes"),
            self.sum_from_logs("ADD", "cas_conflicts"),
            self.sum_from_logs("ADD", "cas_retries"),
            self.sum_from_logs("ADD", "lock_wait_ms"),
        )])
    }

    fn after_del(&self) -> Vec<String> {
        vec![format!(
            "DEL: CAS conflicts {}",
            self.sum_from_logs("DEL", "cas_conflicts")
        )]
    }

    async fn uninstall(&self, client: &Client) -> anyhow::Result<()> {
        delete_pools(client, &self.pools).await;
        for node in &self.nodes {
            node.delete(client).await?;
        }
        Ok(())
    }
}
