//! SpiderMultusConfig: the webhook's defaulting and validation, then the pure NAD renderer the
//! controller runs.
//!
//! Input: a SpiderMultusConfig as JSON. Checked: rendering never panics on any decodable object,
//! and an object the webhook admits (after its defaulting) always renders, with a config that is
//! JSON, since the controller has no way to report a failure to the user who created it.

use spiderpool_api::SpiderMultusConfig;
use spiderpool_controller_manager::multusconfig::render::render;
use spiderpool_controller_manager::webhook::multusconfig::{TargetNad, mutate, validate};

pub fn run(data: &[u8]) {
    let Ok(mut smc) = serde_json::from_slice::<SpiderMultusConfig>(data) else {
        return;
    };
    if smc.metadata.namespace.is_none() {
        smc.metadata.namespace = Some("default".into());
    }
    let _ = render(&smc);
    let original = smc.clone();
    mutate(&mut smc);
    let target = TargetNad::Present {
        smc_owners: vec![smc.metadata.name.clone().unwrap_or_default()],
    };
    for (old, target) in [(None, &TargetNad::Absent), (Some(&original), &target)] {
        if validate(old, &smc, target).is_ok() {
            match render(&smc) {
                Ok(rendered) => {
                    if let Some(config) = rendered.config {
                        assert!(
                            serde_json::from_str::<serde_json::Value>(&config).is_ok(),
                            "rendered a NAD config that is not JSON: {config}"
                        );
                    }
                }
                Err(error) => panic!(
                    "the webhook admitted a SpiderMultusConfig the controller cannot render: {error}"
                ),
            }
        }
    }
}
