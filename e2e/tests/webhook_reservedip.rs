//! SpiderReservedIP admission through the real API server.
//!
//! Every golden case asserts the HTTP status and the denial text the client sees. Addresses are
//! taken from 198.18.0.0/15 (one /24 per test) so tests can run in parallel; the harness is
//! `webhook_support`.

mod webhook_support;

use kube::api::Api;
use serde_json::{Value, json};
use spiderpool_api::SpiderReservedIP;
use spiderpool_e2e::unique_name;
use webhook_support::*;

#[tokio::test]
async fn reserved_ips_are_defaulted_and_validated() -> anyhow::Result<()> {
    // G43
    let client = setup().await?;
    let reserved: Api<SpiderReservedIP> = Api::all(client.clone());
    let object = |name: &str, ips: Value| -> anyhow::Result<SpiderReservedIP> {
        Ok(serde_json::from_value(labelled(
            "SpiderReservedIP",
            name,
            json!({"ips": ips}),
        ))?)
    };
    let v4 = create(
        &reserved,
        &object(&unique_name("g43-v4"), json!(["198.18.43.1-198.18.43.2"]))?,
    )
    .await?;
    assert_eq!(v4.spec.ip_version, Some(4));
    let v6 = create(
        &reserved,
        &object(&unique_name("g43-v6"), json!(["abcd:1234::1-abcd:1234::2"]))?,
    )
    .await?;
    assert_eq!(v6.spec.ip_version, Some(6));
    let merged = create(
        &reserved,
        &object(
            &unique_name("g43-merge"),
            json!([
                "198.18.43.10",
                "198.18.43.1-198.18.43.2",
                "198.18.43.2-198.18.43.3"
            ]),
        )?,
    )
    .await?;
    assert_eq!(
        merged.spec.ips,
        Some(vec![
            "198.18.43.1-198.18.43.3".to_string(),
            "198.18.43.10".into()
        ])
    );
    let bad = unique_name("g43-bad");
    let message = denied(
        create(&reserved, &object(&bad, json!(["invalid IP range"]))?).await,
        422,
        &[],
    );
    assert_eq!(
        message,
        format!(
            "{}SpiderReservedIP.spiderpool.spidernet.io \"{bad}\" is invalid: spec.ipVersion: Invalid value: null: is not generated correctly, 'spec.ips' is empty or 'spec.ips[0]' may be invalid",
            webhook_prefix("spiderreservedip.spiderpool.spidernet.io")
        )
    );
    Ok(())
}
