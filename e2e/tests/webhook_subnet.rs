//! SpiderSubnet admission through the real API server.
//!
//! Every golden case asserts the HTTP status and the denial text the client sees. Addresses are
//! taken from 198.18.0.0/15 (one /24 per test) so tests can run in parallel; the harness is
//! `webhook_support`.

mod webhook_support;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use spiderpool_api::{SpiderIPPool, SpiderSubnet};
use spiderpool_e2e::unique_name;
use webhook_support::*;

#[tokio::test]
async fn subnet_rules() -> anyhow::Result<()> {
    // G41, G42
    let client = setup().await?;
    let subnets: Api<SpiderSubnet> = Api::all(client.clone());
    let pools: Api<SpiderIPPool> = Api::all(client.clone());
    let inner = unique_name("g41-pool");
    create(
        &pools,
        &pool(
            &inner,
            json!({"subnet": "198.18.41.0/25", "ips": ["198.18.41.40-198.18.41.45"]}),
        )?,
    )
    .await?;
    let wide = unique_name("g41-wide");
    let message = denied(
        create(
            &subnets,
            &subnet(&wide, json!({"subnet": "198.18.41.0/24"}))?,
        )
        .await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderSubnet.spiderpool.spidernet.io \"{wide}\" is invalid: spec.subnet: Invalid value: \"198.18.41.0/24\": overlap with SpiderIPPool '{inner}' resource 'spec.subnet' 198.18.41.0/25",
            webhook_prefix(SUBNET_WEBHOOK)
        )
    );
    let narrow = unique_name("g41-narrow");
    let message = denied(
        create(
            &subnets,
            &subnet(
                &narrow,
                json!({"subnet": "198.18.41.0/25", "ips": ["198.18.41.41-198.18.41.45"]}),
            )?,
        )
        .await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderSubnet.spiderpool.spidernet.io \"{narrow}\" is invalid: spec.ips: Invalid value: []string{{\"198.18.41.41-198.18.41.45\"}}: SpiderIPPool '{inner}' owns some IP addresses that SpiderSubnet '{narrow}' can't control",
            webhook_prefix(SUBNET_WEBHOOK)
        )
    );

    let name = unique_name("g42");
    let created = create(
        &subnets,
        &subnet(
            &name,
            json!({"subnet": "198.18.42.0/24", "ips": ["198.18.42.1-198.18.42.10"]}),
        )?,
    )
    .await?;
    assert_eq!(created.spec.ip_version, Some(4));
    assert!(created.finalizers().iter().any(|f| f == GROUP));
    let record =
        json!({"status": {"controlledIPPools": "{\"some-pool\":{\"ips\":[\"198.18.42.10\"]}}"}});
    subnets
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&record))
        .await?;
    let shrink = json!({"spec": {"ips": ["198.18.42.1-198.18.42.9"]}});
    match subnets
        .patch(&name, &PatchParams::default(), &Patch::Merge(&shrink))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert_eq!(
                status.message,
                format!(
                    "{}SpiderSubnet.spiderpool.spidernet.io \"{name}\" is invalid: spec.ips: Forbidden: remove some IP ranges [198.18.42.10] that is being used by IPPool some-pool, total IP addresses of an Subnet are jointly determined by 'spec.ips' and 'spec.excludeIPs'",
                    webhook_prefix(SUBNET_WEBHOOK)
                )
            );
        }
        // A subnet controller may have dropped the record of a pool that does not exist.
        Ok(updated) => assert!(
            updated
                .status
                .as_ref()
                .and_then(|status| status.controlled_ip_pools.as_deref())
                .is_none_or(|pools| !pools.contains("198.18.42.10")),
            "the shrink was admitted although the record holds the address"
        ),
        Err(error) => return Err(error.into()),
    }
    let record =
        json!({"status": {"controlledIPPools": "{\"some-pool\":{\"ips\":[\"198.18.42.1\"]}}"}});
    subnets
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&record))
        .await?;
    subnets
        .patch(&name, &PatchParams::default(), &Patch::Merge(&shrink))
        .await?;
    Ok(())
}
