//! SpiderCoordinator admission through the real API server.
//!
//! Every golden case asserts the HTTP status and the denial text the client sees. Addresses are
//! taken from 198.18.0.0/15 (one /24 per test) so tests can run in parallel; the harness is
//! `webhook_support`.

mod webhook_support;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use spiderpool_api::SpiderCoordinator;
use spiderpool_e2e::{unique_name, wait_for};
use webhook_support::*;

#[tokio::test]
async fn spider_coordinator_is_defaulted_and_validated() -> anyhow::Result<()> {
    let client = setup().await?;
    let coordinators: Api<SpiderCoordinator> = Api::all(client.clone());
    let name = unique_name("scc");
    let created = create(
        &coordinators,
        &serde_json::from_value(labelled(
            "SpiderCoordinator",
            &name,
            json!({"podCIDRType": "none", "hijackCIDR": ["10.96.0.10"]}),
        ))?,
    )
    .await?;
    assert_eq!(created.spec.veth_mtu, Some(1500));
    assert_eq!(
        created.spec.hijack_cidr,
        Some(vec!["10.96.0.10/32".to_string()])
    );
    // No finalizer until a coordinator controller exists to remove it (see the webhook's
    // `mutate`): deleting the object must not hang.
    assert!(
        created.finalizers().is_empty(),
        "{:?}",
        created.finalizers()
    );
    coordinators.delete(&name, &DeleteParams::default()).await?;
    wait_for("the SpiderCoordinator to be gone", TIMEOUT, || async {
        Ok(coordinators.get_opt(&name).await?.is_none().then_some(()))
    })
    .await?;
    let bad = unique_name("scc-bad");
    let message = denied(
        create(
            &coordinators,
            &serde_json::from_value(labelled(
                "SpiderCoordinator",
                &bad,
                json!({"podCIDRType": "none", "podRPFilter": 4}),
            ))?,
        )
        .await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderCoordinator.spiderpool.spidernet.io \"{bad}\" is invalid: spec.podRPFilter: Unsupported value: 4: supported values: \"0\", \"1\", \"2\"",
            webhook_prefix("spidercoordinator.spiderpool.spidernet.io")
        )
    );
    Ok(())
}
