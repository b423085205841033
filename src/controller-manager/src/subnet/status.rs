//! The one writer of `SpiderSubnet.status`: a JSON merge patch of the status subresource that
//! carries the resourceVersion the caller read, i.e. a compare-and-swap. A `409 Conflict` means
//! someone else wrote first; callers re-read and plan again.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use spiderpool_api::SpiderSubnet;
use spiderpool_ipam::ledger::ControlledIpPools;

/// Writes `controlledIPPools` (absent when empty, as upstream writes nil), `totalIPCount` and
/// `allocatedIPCount`, conditioned on `read`'s resourceVersion.
pub async fn write_subnet_status(
    api: &Api<SpiderSubnet>,
    read: &SpiderSubnet,
    controlled: &ControlledIpPools,
    total: i64,
    allocated: i64,
) -> Result<SpiderSubnet, kube::Error> {
    let patch = json!({
        "metadata": {"resourceVersion": read.resource_version()},
        "status": {
            "controlledIPPools": controlled.encode(),
            "totalIPCount": total,
            "allocatedIPCount": allocated,
        },
    });
    api.patch_status(
        &read.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
}
