//! SpiderMultusConfig → NetworkAttachmentDefinition.
//!
//! `render` is the pure generator with golden tests (it fills what the webhook and CRD schema
//! would first, with [`spiderpool_api::defaults`]); `controller` watches SMCs and the NADs they
//! own and server-side-applies the rendered NAD.

pub mod controller;
pub mod render;
