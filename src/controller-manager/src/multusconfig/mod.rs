//! SpiderMultusConfig → NetworkAttachmentDefinition.
//!
//! `defaults` fills what the webhook and CRD schema would; `render` is the pure generator with
//! golden tests; `controller` watches SMCs and the NADs they own and server-side-applies the
//! rendered NAD.

pub mod controller;
pub mod defaults;
pub mod render;
