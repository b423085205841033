//! The invariant checker against the real API server: a state made by the real `spiderpool`
//! plugin checks clean; each corruption written behind the plugin's back (a record of a pod that
//! does not exist, an address recorded in two pools, a count that disagrees, an endpoint whose
//! record is gone) is reported by its kind, naming the pool, the address and the pod.

mod ipam_support;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use spiderpool_api::SpiderIPPool;
use spiderpool_e2e::invariants::{assert_consistent, violations};
use spiderpool_e2e::{TestNamespace, client};

use ipam_support::*;

const IPPOOL: &str = "ipam.spidernet.io/ippool";

async fn write_records(
    client: &Client,
    pool: &str,
    records: serde_json::Value,
    count: i64,
) -> anyhow::Result<()> {
    Api::<SpiderIPPool>::all(client.clone())
        .patch_status(
            pool,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "allocatedIPs": records.to_string(),
                "allocatedIPCount": count,
            }})),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_plugin_made_state_is_clean_and_each_corruption_is_reported() -> anyhow::Result<()> {
    spiderpool_e2e::install_crypto_provider();
    let client = client().await?;
    let namespace = TestNamespace::create(&client, "invariants").await?;
    let ns = namespace.name.clone();
    let scratch = Scratch::new("invariants")?;
    let node = SimNode::create(&client, &scratch, &[], "").await?;
    let third: u8 = rand::random_range(20..250);
    let spec = || {
        json!({
            "ipVersion": 4,
            "subnet": format!("10.{third}.7.0/24"),
            "ips": [format!("10.{third}.7.10-10.{third}.7.20")],
        })
    };
    let pool = create_pool(&client, "inv", spec()).await?;
    let annotation = format!(r#"{{"ipv4":["{pool}"]}}"#);
    let config = netconf("1.0.0", &node, json!({}));
    let mut pods = Vec::new();
    for name in ["first", "second"] {
        let pod = create_pod(
            &client,
            &ns,
            name,
            &node.name,
            &[(IPPOOL, &annotation)],
            &[],
        )
        .await?;
        let pod = PodRef::of(&pod);
        cni("ADD", &pod, "eth0", &config).await?.result()?;
        pods.push(pod);
    }
    assert_consistent(&client, &ns).await?;

    // A record of a pod that does not exist, and a count that disagrees with the records.
    let records = Api::<SpiderIPPool>::all(client.clone()).get(&pool).await?;
    let mut ledger: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        records
            .status
            .as_ref()
            .and_then(|status| status.allocated_ips.as_deref())
            .unwrap_or("{}"),
    )?;
    let ghost_ip = format!("10.{third}.7.20");
    ledger.insert(
        ghost_ip.clone(),
        json!({"pod": format!("{ns}/ghost"), "podUid": "ghost-uid"}),
    );
    write_records(&client, &pool, json!(ledger), 2).await?;
    let found = violations(&client, Some(&ns)).await?;
    let texts: Vec<String> = found
        .iter()
        .map(|violation| format!("[{}] {violation}", violation.kind()))
        .collect();
    let expected = format!(
        "[record_pod_missing] SpiderIPPool {pool} records {ghost_ip} for pod {ns}/ghost (uid ghost-uid), which does not exist"
    );
    assert!(texts.contains(&expected), "{texts:#?}");
    assert!(
        texts
            .iter()
            .any(|text| text.starts_with("[endpoint_missing]") && text.contains("ghost")),
        "{texts:#?}"
    );
    assert!(
        texts.contains(&format!(
            "[pool_count_mismatch] SpiderIPPool {pool}: status.allocatedIPCount is 2 but status.allocatedIPs holds 3 records"
        )),
        "{texts:#?}"
    );
    assert_eq!(found.len(), 3, "{texts:#?}");

    // The same address recorded in a second pool.
    ledger.remove(&ghost_ip);
    write_records(&client, &pool, json!(ledger), 2).await?;
    let (taken_ip, _) = ledger
        .iter()
        .next()
        .map(|(ip, record)| (ip.clone(), record.clone()))
        .unwrap_or_default();
    let copy = create_pool(&client, "inv-copy", spec()).await?;
    let other = PodRef::of(&create_pod(&client, &ns, "other", &node.name, &[], &[]).await?);
    write_records(
        &client,
        &copy,
        json!({taken_ip.clone(): {"pod": format!("{ns}/other"), "podUid": other.uid}}),
        1,
    )
    .await?;
    let found = violations(&client, Some(&ns)).await?;
    let kinds: Vec<&str> = found.iter().map(|violation| violation.kind()).collect();
    assert!(kinds.contains(&"duplicate_address"), "{found:#?}");
    let duplicate = found
        .iter()
        .find(|violation| violation.kind() == "duplicate_address")
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        duplicate.starts_with(&format!("address {taken_ip} is recorded more than once"))
            && duplicate.contains(&pool)
            && duplicate.contains(&copy),
        "{duplicate}"
    );
    // `other` has no endpoint: reported too.
    assert!(kinds.contains(&"endpoint_missing"), "{found:#?}");
    write_records(&client, &copy, json!({}), 0).await?;

    // An endpoint whose pool record vanished.
    let first_ip = ledger
        .iter()
        .find(|(_, record)| record["podUid"] == json!(pods[0].uid))
        .map(|(ip, _)| ip.clone())
        .unwrap_or_default();
    ledger.remove(&first_ip);
    write_records(&client, &pool, json!(ledger), 1).await?;
    let found = violations(&client, Some(&ns)).await?;
    let texts: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        vec![format!(
            "SpiderEndpoint {ns}/first (uid {}) holds {first_ip} of SpiderIPPool {pool} on eth0, but the pool holds no record of it",
            pods[0].uid
        )],
    );
    // Another namespace's check does not see any of it.
    assert!(
        violations(&client, Some("default"))
            .await?
            .iter()
            .all(|violation| !violation.to_string().contains(&ns))
    );

    release_endpoints(&client, &ns).await?;
    delete_pools(&client, &[pool, copy]).await;
    node.delete(&client).await?;
    namespace.delete().await
}
