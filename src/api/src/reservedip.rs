//! `SpiderReservedIP`: cluster-scoped addresses that allocation must never hand out.
//!
//! Reserved addresses may still be listed in pools; allocation and subnet pre-allocation skip
//! them, and addresses already allocated when a reservation appears are left alone.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a SpiderReservedIP: the addresses to keep out of allocation.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "spiderpool.spidernet.io",
    version = "v2beta1",
    kind = "SpiderReservedIP",
    plural = "spiderreservedips",
    singular = "spiderreservedip",
    shortname = "sr",
    category = "spiderpool",
    derive = "PartialEq",
    doc = "SpiderReservedIP lists IP addresses that Spiderpool never assigns to pods, whichever \
           pool contains them.",
    printcolumn(
        name = "VERSION",
        type_ = "string",
        json_path = ".spec.ipVersion",
        description = "ipVersion"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::tidy)]
pub struct ReservedIPSpec {
    /// IP family of the reserved addresses: 4 or 6. When left out, the admission webhook fills
    /// it in from the first entry of `ips`. Cannot be changed once set.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [4, 6]))]
    pub ip_version: Option<i64>,

    /// The reserved addresses, all of the family given by `ipVersion`. Each entry is one address
    /// or an inclusive dash-joined range of two (`172.18.40.2-172.18.40.9`). When there is more
    /// than one entry the webhook rewrites the list sorted and merged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
}
