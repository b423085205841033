//! One module per [`crate::Target`].

pub mod annotations;
pub mod cni_config;
pub mod cni_env;
pub mod ledger;
pub mod multusconfig;
pub mod ranges;
pub mod selection;
pub mod webhook;
