//! A real Prometheus (Debian's `prometheus`, started by the suite) scrapes the controller-manager
//! while the real `spiderpool` plugin allocates and releases addresses and a Deployment's auto
//! pool scales. After every step, a scrape newer than the change must report exactly what the
//! pools' and the subnet's status say; the GC, controller and leader series exist; the target is
//! up without scrape errors; every panel query of `config/grafana/` returns data; the alert rules
//! load and evaluate, and `promtool` checks them and runs their unit tests — which a mutated
//! threshold makes fail.

mod autopool_support;
#[path = "ipam_support/mod.rs"]
mod ipam_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use autopool_support::{
    ANNO_SUBNET, create_deployment, delete_pool, delete_subnet, deployment, force_delete_pod,
    pool_size, scale_deployment, subnet_annotation, unique_octet, wait_app_pools,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_e2e::{TestNamespace, client, controller_manager, http_get, wait_for};

const JOB: &str = "spiderpool-controller-manager";
const TIMEOUT: Duration = Duration::from_secs(60);
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/prometheus/prometheusrule.yaml"
);
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../config/prometheus/alerts-test.yaml"
);
const DASHBOARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/grafana");

/// A Prometheus process scraping the controller-manager every 500 ms and evaluating the alert
/// rules every 500 ms; killed with the suite.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The PrometheusRule's `spec` (a plain rule file) written to `dir/spiderpool-rules.yaml`, with
/// `mutate` applied to its text.
fn write_rule_file(dir: &Path, mutate: impl Fn(String) -> String) -> anyhow::Result<PathBuf> {
    let manifest: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(RULES)?)?;
    let spec = manifest
        .get("spec")
        .context("the PrometheusRule has no spec")?;
    let path = dir.join("spiderpool-rules.yaml");
    std::fs::write(&path, mutate(serde_yaml::to_string(spec)?))?;
    std::fs::copy(RULE_TESTS, dir.join("alerts-test.yaml"))?;
    Ok(path)
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> anyhow::Result<Prometheus> {
        let dir = spiderpool_e2e::run_dir().join(spiderpool_e2e::unique_name("prometheus"));
        std::fs::create_dir_all(dir.join("data"))?;
        write_rule_file(&dir, |text| text)?;
        let port = free_port()?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let config = json!({
            "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms", "scrape_timeout": "400ms"},
            "rule_files": ["spiderpool-rules.yaml"],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": [target.to_string()]}]},
                {"job_name": "prometheus", "static_configs": [{"targets": [addr.to_string()]}]},
            ],
        });
        std::fs::write(dir.join("prometheus.yml"), serde_yaml::to_string(&config)?)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian package `prometheus`; `make deps`)")?;
        Ok(Prometheus { child, addr, dir })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = http_get(self.addr, path).await?;
        ensure!(status == 200, "GET {path}: {status} {body}");
        let value: Value = serde_json::from_str(&body)?;
        ensure!(value["status"] == "success", "GET {path}: {body}");
        Ok(value["data"].clone())
    }

    /// An instant query: `(labels, value)` per series.
    async fn query(&self, promql: &str) -> anyhow::Result<Vec<(Value, f64)>> {
        let data = self
            .get(&format!("/api/v1/query?query={}", url_encode(promql)))
            .await
            .with_context(|| format!("query {promql}"))?;
        let mut series = Vec::new();
        for item in data["result"].as_array().cloned().unwrap_or_default() {
            let value = item["value"][1]
                .as_str()
                .with_context(|| format!("no value in {item}"))?
                .parse::<f64>()?;
            series.push((item["metric"].clone(), value));
        }
        Ok(series)
    }

    /// The one value of `promql`, `None` without data.
    async fn value(&self, promql: &str) -> anyhow::Result<Option<f64>> {
        let series = self.query(promql).await?;
        ensure!(series.len() <= 1, "{promql} has {} series", series.len());
        Ok(series.first().map(|(_, value)| *value))
    }

    /// Waits until Prometheus holds a scrape of the controller-manager that started after now.
    async fn scrape_after_now(&self) -> anyhow::Result<()> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
        wait_for("a scrape newer than the change", TIMEOUT, || async {
            let last = self
                .value(&format!("timestamp(up{{job=\"{JOB}\"}})"))
                .await?;
            Ok(last.filter(|last| *last > now).map(|_| ()))
        })
        .await
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `(total, allocated)` of a status.
fn counts(total: Option<i64>, allocated: Option<i64>) -> Option<(f64, f64)> {
    Some((total? as f64, allocated? as f64))
}

/// Waits until a scrape newer than the objects' current status reports, for every pool of the
/// subnet and for the subnet, exactly the status' counts. Returns the pools' status.
async fn prometheus_matches_status(
    client: &Client,
    prometheus: &Prometheus,
    subnet: &str,
    expected_pools: usize,
) -> anyhow::Result<Vec<(String, f64, f64)>> {
    wait_for("Prometheus equal to the status", TIMEOUT, || async {
        let pools = Api::<SpiderIPPool>::all(client.clone())
            .list(
                &ListParams::default()
                    .labels(&format!("ipam.spidernet.io/owner-spider-subnet={subnet}")),
            )
            .await?
            .items;
        let subnet_status = Api::<SpiderSubnet>::all(client.clone())
            .get(subnet)
            .await?
            .status
            .unwrap_or_default();
        prometheus.scrape_after_now().await?;
        if pools.len() != expected_pools {
            return Ok(None);
        }
        let mut seen = Vec::new();
        for pool in &pools {
            let status = pool.status.clone().unwrap_or_default();
            let Some((total, allocated)) = counts(status.total_ip_count, status.allocated_ip_count)
            else {
                return Ok(None);
            };
            let name = pool.name_any();
            let selector = format!("{{job=\"{JOB}\",pool=\"{name}\",subnet=\"{subnet}\"}}");
            let reported = (
                prometheus
                    .value(&format!("spiderpool_ippool_total_ip_counts{selector}"))
                    .await?,
                prometheus
                    .value(&format!("spiderpool_ippool_allocated_ip_counts{selector}"))
                    .await?,
                prometheus
                    .value(&format!("spiderpool_ippool_available_ip_counts{selector}"))
                    .await?,
            );
            if reported != (Some(total), Some(allocated), Some(total - allocated)) {
                return Ok(None);
            }
            seen.push((name, total, allocated));
        }
        let Some((total, allocated)) = counts(
            subnet_status.total_ip_count,
            subnet_status.allocated_ip_count,
        ) else {
            return Ok(None);
        };
        let selector = format!("{{job=\"{JOB}\",subnet=\"{subnet}\"}}");
        let reported = (
            prometheus
                .value(&format!("spiderpool_subnet_total_ip_counts{selector}"))
                .await?,
            prometheus
                .value(&format!("spiderpool_subnet_allocated_ip_counts{selector}"))
                .await?,
            prometheus
                .value(&format!("spiderpool_subnet_available_ip_counts{selector}"))
                .await?,
            prometheus
                .value(&format!("spiderpool_subnet_ippool_counts{selector}"))
                .await?,
        );
        let expected = (
            Some(total),
            Some(allocated),
            Some(total - allocated),
            Some(expected_pools as f64),
        );
        Ok((reported == expected).then_some(seen))
    })
    .await
}

/// Plays scheduler and kubelet for the Deployment's new pods: bind, then CNI ADD on eth0.
async fn start_new_pods(
    client: &Client,
    namespace: &str,
    node: &ipam_support::SimNode,
    config: &Value,
    started: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for pod in pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
    {
        let name = pod.name_any();
        if started.contains(&name) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node.name},
        });
        let _: Value = pods
            .create_subresource("binding", &name, &PostParams::default(), &binding)
            .await?;
        let pod = pods.get(&name).await?;
        let output =
            ipam_support::cni("ADD", &ipam_support::PodRef::of(&pod), "eth0", config).await?;
        output.addresses()?;
        started.insert(name);
    }
    Ok(())
}

/// Plays kubelet for the terminating pods: CNI DEL, then the pod goes. Returns how many.
async fn stop_terminating_pods(
    client: &Client,
    namespace: &str,
    config: &Value,
    started: &mut BTreeSet<String>,
) -> anyhow::Result<usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut stopped = 0;
    for pod in pods
        .list(&ListParams::default().labels("app=web"))
        .await?
        .items
    {
        if pod.metadata.deletion_timestamp.is_none() {
            continue;
        }
        let output =
            ipam_support::cni("DEL", &ipam_support::PodRef::of(&pod), "eth0", config).await?;
        ensure!(output.success, "DEL failed: {}", output.stdout);
        force_delete_pod(client, namespace, &pod.name_any()).await?;
        started.remove(&pod.name_any());
        stopped += 1;
    }
    Ok(stopped)
}

/// Every `expr` of the dashboards' panels (nested rows included), with the panel's title.
fn panel_queries(dashboard: &Value, found: &mut Vec<(String, String)>) {
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                found.push((title.clone(), expr.to_string()));
            }
        }
        panel_queries(panel, found);
    }
}

/// A panel query as Grafana would send it: `$job` the suite's job, `$__rate_interval` a window
/// of several scrapes, every other template variable `.*`.
fn substitute(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "30s")
        .replace("${job}", JOB)
        .replace("$job", JOB);
    let mut out = String::new();
    let mut rest = expr.as_str();
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let variable = rest[start + 1..]
            .trim_start_matches('{')
            .chars()
            .take_while(|character| character.is_ascii_alphanumeric() || *character == '_')
            .count();
        let braces = usize::from(rest[start + 1..].starts_with('{')) * 2;
        out.push_str(".*");
        rest = &rest[start + 1 + variable + braces..];
    }
    out.push_str(rest);
    out
}

fn promtool(args: &[&str], dir: &Path) -> anyhow::Result<std::process::Output> {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running promtool (Debian package `prometheus`)")
}

#[test]
fn promtool_checks_the_rules_and_their_tests_pass_and_a_mutated_threshold_fails_them()
-> anyhow::Result<()> {
    let dir = spiderpool_e2e::run_dir().join(spiderpool_e2e::unique_name("promtool"));
    std::fs::create_dir_all(&dir)?;
    write_rule_file(&dir, |text| text)?;
    let check = promtool(&["check", "rules", "spiderpool-rules.yaml"], &dir)?;
    ensure!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    ensure!(String::from_utf8_lossy(&check.stdout).contains("SUCCESS: 6 rules found"));
    let test = promtool(&["test", "rules", "alerts-test.yaml"], &dir)?;
    ensure!(
        test.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );

    // The tests notice a changed threshold: 90 % becomes 95 %, and the alert that must fire
    // for the 90 % pool no longer does.
    let mutated = write_rule_file(&dir, |text| text.replace(">= 0.9", ">= 0.95"))?;
    ensure!(std::fs::read_to_string(&mutated)?.contains(">= 0.95"));
    let test = promtool(&["test", "rules", "alerts-test.yaml"], &dir)?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    ensure!(
        !test.status.success() && output.contains("SpiderpoolIPPoolUsageHigh"),
        "a mutated threshold passed the rule tests: {output}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn prometheus_scrapes_usage_equal_to_the_status_and_every_panel_and_rule_has_data()
-> anyhow::Result<()> {
    let client = client().await?;
    let manager = controller_manager(&[]).await?;
    let prometheus = Prometheus::start(manager.admin_addr)?;
    wait_for(
        "Prometheus to scrape the controller-manager",
        TIMEOUT,
        || async {
            Ok(prometheus
                .value(&format!("up{{job=\"{JOB}\"}}"))
                .await
                .ok()
                .flatten()
                .filter(|up| *up == 1.0)
                .map(|_| ()))
        },
    )
    .await
    .with_context(|| format!("prometheus log: {}", prometheus.dir.display()))?;

    let namespace = TestNamespace::create(&client, "prometheus").await?;
    let ns = namespace.name.clone();
    let octet = unique_octet();
    let subnet = autopool_support::create_subnet(
        &client,
        "prom",
        json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.100")]}),
    )
    .await?;
    // A manual pool of two addresses inside the subnet (adopted by it), and a Deployment with
    // an auto pool from the subnet.
    let manual = autopool_support::create_pool(
        &client,
        "prom-manual",
        json!({"ipVersion": 4, "subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.90-10.{octet}.0.91")]}),
    )
    .await?;
    create_deployment(
        &client,
        &ns,
        &deployment(
            "web",
            2,
            &[(ANNO_SUBNET, subnet_annotation(Some(&subnet), None))],
        ),
    )
    .await?;
    wait_app_pools(&client, "Deployment", &ns, "web", 1, |_| true).await?;
    let scratch = ipam_support::Scratch::new("prometheus")?;
    let node = ipam_support::SimNode::create(&client, &scratch, &[], "").await?;
    let config = ipam_support::netconf("1.0.0", &node, json!({}));
    let mut started = BTreeSet::new();
    prometheus_matches_status(&client, &prometheus, &subnet, 2).await?;

    // The Deployment's pods and two pods of the manual pool get addresses through the plugin;
    // the manual pool is then exhausted.
    start_new_pods(&client, &ns, &node, &config, &mut started).await?;
    let pool_annotation = format!(r#"{{"ipv4":["{manual}"]}}"#);
    let mut single = Vec::new();
    for name in ["solo-a", "solo-b"] {
        let pod = ipam_support::create_pod(
            &client,
            &ns,
            name,
            &node.name,
            &[("ipam.spidernet.io/ippool", &pool_annotation)],
            &[],
        )
        .await?;
        let pod = ipam_support::PodRef::of(&pod);
        ipam_support::cni("ADD", &pod, "eth0", &config)
            .await?
            .addresses()?;
        single.push(pod);
    }
    let pools = prometheus_matches_status(&client, &prometheus, &subnet, 2).await?;
    let manual_row = pools.iter().find(|(name, ..)| *name == manual);
    assert_eq!(
        manual_row.map(|(_, total, allocated)| (*total, *allocated)),
        Some((2.0, 2.0))
    );
    println!("SAMPLE PromQL next to the status after allocating:");
    for (name, total, allocated) in &pools {
        for metric in [
            "spiderpool_ippool_allocated_ip_counts",
            "spiderpool_ippool_total_ip_counts",
        ] {
            let promql = format!("{metric}{{pool=\"{name}\"}}");
            for (labels, value) in prometheus.query(&promql).await? {
                println!("  PromQL {promql} => {value} {labels}");
            }
        }
        println!("  SpiderIPPool {name} status: allocatedIPCount={allocated} totalIPCount={total}");
    }
    // The real Prometheus evaluates the exhausted-pool alert: pending (its `for` is 5m).
    wait_for("SpiderpoolIPPoolExhausted pending", TIMEOUT, || async {
        let alerts = prometheus
            .query(&format!(
                "ALERTS{{alertname=\"SpiderpoolIPPoolExhausted\",pool=\"{manual}\"}}"
            ))
            .await?;
        Ok(alerts
            .iter()
            .any(|(labels, _)| labels["alertstate"] == "pending")
            .then_some(()))
    })
    .await?;

    // Scaled up: the auto pool grows with the subnet's allocation.
    scale_deployment(&client, &ns, "web", 4).await?;
    wait_app_pools(&client, "Deployment", &ns, "web", 1, |pools| {
        pool_size(&pools[0]) == 5
    })
    .await?;
    wait_for("four pods of web", TIMEOUT, || async {
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items;
        Ok((pods.len() == 4).then_some(()))
    })
    .await?;
    start_new_pods(&client, &ns, &node, &config, &mut started).await?;
    prometheus_matches_status(&client, &prometheus, &subnet, 2).await?;

    // Released: a pod of the manual pool is deleted and DEL frees its address; the alert ends.
    let released = single.remove(0);
    ipam_support::delete_pod_now(&client, &ns, &released.name).await?;
    let output = ipam_support::cni("DEL", &released, "eth0", &config).await?;
    ensure!(output.success, "DEL failed: {}", output.stdout);
    let pools = prometheus_matches_status(&client, &prometheus, &subnet, 2).await?;
    assert_eq!(
        pools
            .iter()
            .find(|(name, ..)| *name == manual)
            .map(|(_, total, allocated)| (*total, *allocated)),
        Some((2.0, 1.0))
    );
    wait_for("SpiderpoolIPPoolExhausted resolved", TIMEOUT, || async {
        let alerts = prometheus
            .query(&format!(
                "ALERTS{{alertname=\"SpiderpoolIPPoolExhausted\",pool=\"{manual}\"}}"
            ))
            .await?;
        Ok(alerts.is_empty().then_some(()))
    })
    .await?;

    // Scaled down: terminating pods are released through DEL, the auto pool shrinks.
    scale_deployment(&client, &ns, "web", 1).await?;
    let mut stopped = 0;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while stopped < 3 {
        ensure!(
            std::time::Instant::now() < deadline,
            "only {stopped} of web's pods were terminated within {TIMEOUT:?}"
        );
        stopped += stop_terminating_pods(&client, &ns, &config, &mut started).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_app_pools(&client, "Deployment", &ns, "web", 1, |pools| {
        pool_size(&pools[0]) == 2
    })
    .await?;
    prometheus_matches_status(&client, &prometheus, &subnet, 2).await?;

    // The controller, GC and leader series; the target is healthy.
    for (promql, at_least) in [
        (format!("up{{job=\"{JOB}\"}}"), 1.0),
        (
            format!("spiderpool_controller_leader{{job=\"{JOB}\"}}"),
            1.0,
        ),
        (
            format!("sum(spiderpool_auto_pool_scalings_total{{job=\"{JOB}\"}})"),
            2.0,
        ),
        (
            format!("sum(spiderpool_controller_reconcile_total{{job=\"{JOB}\"}})"),
            1.0,
        ),
        (
            format!("count(spiderpool_ip_gc_counts_total{{job=\"{JOB}\"}})"),
            1.0,
        ),
        (
            format!("count(spiderpool_ip_gc_failure_counts_total{{job=\"{JOB}\"}})"),
            1.0,
        ),
        (format!("scrape_samples_scraped{{job=\"{JOB}\"}}"), 10.0),
    ] {
        let value = prometheus.value(&promql).await?;
        assert!(
            value.is_some_and(|value| value >= at_least),
            "{promql} = {value:?}, expected at least {at_least}"
        );
    }
    for controller in ["ippool", "subnet", "application", "gc"] {
        let promql = format!(
            "spiderpool_controller_reconcile_failures_total{{job=\"{JOB}\",controller=\"{controller}\",category=\"api_error\"}}"
        );
        assert!(
            prometheus.value(&promql).await?.is_some(),
            "{promql} has no data"
        );
    }
    let targets = prometheus.get("/api/v1/targets").await?;
    for target in targets["activeTargets"].as_array().into_iter().flatten() {
        assert_eq!(target["health"], "up", "target {target}");
        assert_eq!(target["lastError"], "", "target {target}");
    }
    for counter in [
        "prometheus_target_scrapes_sample_out_of_order_total",
        "prometheus_target_scrapes_sample_duplicate_timestamp_total",
        "prometheus_target_scrapes_sample_out_of_bounds_total",
        "prometheus_target_scrapes_exceeded_sample_limit_total",
        "prometheus_target_scrape_pool_exceeded_label_limits_total",
    ] {
        assert_eq!(
            prometheus.value(&format!("sum({counter})")).await?,
            Some(0.0),
            "{counter}"
        );
    }

    // Every rule loaded and evaluated without error; no leader alert.
    let rules = prometheus.get("/api/v1/rules").await?;
    let mut evaluated = 0;
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            assert_eq!(rule["health"], "ok", "rule {rule}");
            evaluated += 1;
        }
    }
    assert_eq!(evaluated, 6, "{rules}");
    assert_eq!(
        prometheus
            .query("ALERTS{alertname=\"SpiderpoolControllerManagerWithoutLeader\"}")
            .await?,
        Vec::new()
    );

    // Every panel of every dashboard has data.
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(DASHBOARDS)? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "json")
        {
            let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
                .with_context(|| format!("{}", path.display()))?;
            panel_queries(&dashboard, &mut queries);
        }
    }
    ensure!(queries.len() >= 20, "only {} panel queries", queries.len());
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let promql = substitute(expr);
        let series = prometheus.query(&promql).await?;
        if series.is_empty() {
            empty.push(format!("{title}: {promql}"));
        }
    }
    if !empty.is_empty() {
        bail!("panels without data:\n{}", empty.join("\n"));
    }
    println!("{} panel queries returned data", queries.len());

    // Clean up.
    for pod in single {
        ipam_support::delete_pod_now(&client, &ns, &pod.name).await?;
        ipam_support::cni("DEL", &pod, "eth0", &config).await?;
    }
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await?;
    stop_terminating_pods(&client, &ns, &config, &mut started).await?;
    ipam_support::release_endpoints(&client, &ns).await?;
    namespace.delete().await?;
    node.delete(&client).await?;
    let _ = delete_pool(&client, &manual).await;
    let _ = delete_subnet(&client, &subnet).await;
    Ok(())
}

#[test]
fn template_variables_are_substituted_like_grafana_does() {
    assert_eq!(
        substitute("rate(x{job=~\"$job\",subnet=~\"$subnet\"}[$__rate_interval])"),
        format!("rate(x{{job=~\"{JOB}\",subnet=~\".*\"}}[30s])")
    );
    assert_eq!(substitute("y{a=~\"${pool}\"}"), "y{a=~\".*\"}");
}
