//! The auto-pool controllers across controller-manager restarts and replicas: a controller
//! killed in the middle of a burst of Deployments and replaced loses nothing (every workload gets
//! exactly one right-sized pool, the subnet records match the pools), and of two replicas only
//! the leader writes while both report usage metrics; the follower takes over when the leader
//! dies. The processes are started and killed by the test itself, one scenario at a time.

mod autopool_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use autopool_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::json;
use spiderpool_e2e::{
    MANAGER_NAMESPACE, TestNamespace, binary, client, http_get, manager_kubeconfig, run_dir,
    wait_for, write_settings,
};

/// The shipped leader Lease (`--leader-election-lease` default; `config/rbac` grants only it).
const LEASE: &str = "spiderpool-controller-manager";

/// The scenarios start their own controller-managers: never two scenarios at once.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Manager {
    child: Child,
    admin: std::net::SocketAddr,
    identity: String,
    log: PathBuf,
}

impl Manager {
    /// A controller-manager as installed ([`prepare`]), with a short lease for quick takeovers.
    fn start(kubeconfig: &Path, identity: &str) -> anyhow::Result<Manager> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let admin: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = run_dir().join(format!("controller-manager-failover-{identity}-{port}.log"));
        let child = Command::new(binary("spiderpool-controller-manager"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--admin-addr", &admin.to_string()])
            .args(["--namespace", MANAGER_NAMESPACE])
            .args(["--identity", identity, "--enable-webhook=false"])
            .args(["--lease-duration", "4s", "--lease-renew-interval", "1s"])
            .env(
                "SPIDERPOOL_LOG_LEVEL",
                "info,spiderpool_controller_manager=debug",
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Manager {
            child,
            admin,
            identity: identity.to_string(),
            log,
        })
    }

    async fn ready(&self) -> anyhow::Result<()> {
        wait_for(
            &format!("{} /readyz (log {})", self.identity, self.log.display()),
            TIMEOUT,
            || async {
                Ok(matches!(http_get(self.admin, "/readyz").await, Ok((200, _))).then_some(()))
            },
        )
        .await
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let (_, text) = http_get(self.admin, "/metrics").await?;
        Ok(metric(&text, name, labels).unwrap_or(0.0))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn app_pools_in(client: &Client, namespace: &str) -> anyhow::Result<usize> {
    let pools: Api<spiderpool_api::SpiderIPPool> = Api::all(client.clone());
    let selector = format!("{LABEL_APP_NAMESPACE}={namespace}");
    Ok(pools
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?
        .items
        .len())
}

/// The chart-default settings and the controller-manager's identity of `config/rbac`.
async fn prepare(client: &Client) -> anyhow::Result<PathBuf> {
    write_settings(client, None).await?;
    manager_kubeconfig(client).await
}

/// The identity holding the shipped leader Lease (`kube-system/spiderpool-controller-manager`),
/// without the `_<pid>` suffix.
async fn holder(client: &Client) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), MANAGER_NAMESPACE);
    Ok(leases
        .get_opt(LEASE)
        .await?
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity)
        .and_then(|holder| holder.split('_').next().map(str::to_string)))
}

#[tokio::test]
async fn a_controller_killed_mid_burst_and_replaced_loses_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let client = client().await?;
    let kubeconfig = prepare(&client).await?;
    let mut first = Manager::start(&kubeconfig, "first")?;
    first.ready().await?;
    let namespace = TestNamespace::create(&client, "failover").await?;
    let ns = namespace.name.clone();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "failover",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.3.254")]}),
    )
    .await?;
    let annotations = [(ANNO_SUBNET, subnet_annotation(Some(&subnet), None))];

    // 20 Deployments at once; the controller dies once a few pools exist.
    let mut creations = Vec::new();
    for index in 0..20 {
        let client = client.clone();
        let ns = ns.clone();
        let deployment = deployment(&format!("burst-{index}"), 1 + (index % 3), &annotations);
        creations.push(tokio::spawn(async move {
            create_deployment(&client, &ns, &deployment).await
        }));
    }
    for creation in creations {
        creation.await??;
    }
    wait_for("the first subnet record", TIMEOUT, || async {
        let count = subnet_state(&client, &subnet).await?.0.len();
        Ok((count >= 1).then_some(()))
    })
    .await?;
    first.kill();
    let killed_at = Instant::now();
    let records_at_kill = subnet_state(&client, &subnet).await?.0.len();
    let pools_at_kill = app_pools_in(&client, &ns).await?;
    // While no controller runs, half of them change size.
    for index in 0..10 {
        scale_deployment(&client, &ns, &format!("burst-{index}"), 4).await?;
    }

    let second = Manager::start(&kubeconfig, "second")?;
    second.ready().await?;
    for index in 0..20 {
        let replicas = if index < 10 {
            4
        } else {
            1 + (index % 3) as u64
        };
        wait_app_pools(
            &client,
            "Deployment",
            &ns,
            &format!("burst-{index}"),
            1,
            |pools| pool_size(&pools[0]) == replicas + 1,
        )
        .await?;
    }
    println!(
        "BENCH failover: killed with {records_at_kill}/20 subnet records and {pools_at_kill}/20 pools; replacement converged all 20 (10 rescaled meanwhile) {:.2}s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    wait_for("subnet records match the pools", TIMEOUT, || async {
        let (records, _, _) = subnet_state(&client, &subnet).await?;
        Ok((records.len() == 20).then_some(()))
    })
    .await?;
    check_subnet_consistent(&client, &subnet).await?;
    assert_eq!(holder(&client).await?.as_deref(), Some("second"));

    namespace.delete().await?;
    wait_for("auto pools reclaimed", TIMEOUT, || async {
        Ok(subnet_state(&client, &subnet)
            .await?
            .0
            .is_empty()
            .then_some(()))
    })
    .await?;
    delete_subnet(&client, &subnet).await?;
    drop(second);
    Ok(())
}

#[tokio::test]
async fn of_two_replicas_only_the_leader_writes_and_the_follower_takes_over() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let client = client().await?;
    let kubeconfig = prepare(&client).await?;
    let mut managers: BTreeMap<String, Manager> = BTreeMap::new();
    for identity in ["alpha", "beta"] {
        let manager = Manager::start(&kubeconfig, identity)?;
        manager.ready().await?;
        managers.insert(identity.to_string(), manager);
    }
    // The Lease may still name a replica of an earlier scenario until it expires.
    let leader = wait_for("alpha or beta leading", TIMEOUT, || async {
        Ok(holder(&client)
            .await?
            .filter(|holder| managers.contains_key(holder)))
    })
    .await?;
    let follower = if leader == "alpha" { "beta" } else { "alpha" }.to_string();

    let namespace = TestNamespace::create(&client, "replicas").await?;
    let ns = namespace.name.clone();
    let octet = unique_octet();
    let subnet = create_subnet(
        &client,
        "replicas",
        json!({"subnet": format!("10.{octet}.0.0/16"), "ips": [format!("10.{octet}.0.1-10.{octet}.0.200")]}),
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
    let pools = wait_app_pools(&client, "Deployment", &ns, "web", 1, |pools| {
        pool_size(&pools[0]) == 3
    })
    .await?;
    let pool = pools[0].name_any();
    let pool_labels = [
        ("pool", pool.as_str()),
        ("ip_version", "4"),
        ("subnet", subnet.as_str()),
    ];
    // Both serve usage metrics; only the leader reconciled anything.
    for manager in managers.values() {
        wait_for("the pool in every replica's metrics", TIMEOUT, || async {
            Ok((manager
                .metric("spiderpool_ippool_total_ip_counts", &pool_labels)
                .await?
                == 3.0)
                .then_some(()))
        })
        .await?;
    }
    let leading = &managers[&leader];
    let following = &managers[&follower];
    assert!(
        leading
            .metric("spiderpool_auto_pool_creations_total", &[])
            .await?
            >= 1.0
    );
    assert_eq!(
        following
            .metric("spiderpool_auto_pool_creations_total", &[])
            .await?,
        0.0
    );
    for controller in ["application", "subnet", "ippool"] {
        assert_eq!(
            following
                .metric(
                    "spiderpool_controller_reconcile_total",
                    &[("controller", controller)]
                )
                .await?,
            0.0,
            "the follower ran no {controller} reconcile"
        );
    }

    // The leader dies; the follower takes over and follows a scale-up.
    let mut dead = managers.remove(&leader).expect("the leader is known");
    dead.kill();
    scale_deployment(&client, &ns, "web", 5).await?;
    wait_app_pools(&client, "Deployment", &ns, "web", 1, |pools| {
        pool_size(&pools[0]) == 6
    })
    .await?;
    assert_eq!(holder(&client).await?, Some(follower.clone()));
    let survivor = &managers[&follower];
    assert!(
        survivor
            .metric(
                "spiderpool_auto_pool_scalings_total",
                &[("direction", "up")]
            )
            .await?
            >= 1.0
    );
    check_subnet_consistent(&client, &subnet).await?;

    namespace.delete().await?;
    wait_for("auto pools reclaimed", TIMEOUT, || async {
        Ok(subnet_state(&client, &subnet)
            .await?
            .0
            .is_empty()
            .then_some(()))
    })
    .await?;
    delete_subnet(&client, &subnet).await?;
    Ok(())
}
