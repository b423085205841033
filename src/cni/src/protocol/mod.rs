//! The CNI protocol shared by our plugins (`spiderpool`, `ifacer`, `coordinator`): environment, stdin
//! configuration with `prevResult`, results in every supported version, spec error JSON, and [`run`], the
//! guarded entry point a plugin's `main` calls.
//!
//! A plugin implements [`Plugin`] and calls [`run`]; handlers receive a [`Context`] (environment, raw
//! stdin, common [`NetConf`], decoded `prevResult`) and return a [`CniResult`] or a [`CniError`].

mod config;
mod env;
mod error;
pub mod logging;
mod result;
mod run;
mod version;

pub use config::{Context, NetConf};
pub use env::{CniArgs, Command, Environment, K8S_ARG_KEYS, K8sArgs, validate_interface_name};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use run::{DEFAULT_TIMEOUT, Outcome, Plugin, execute, run, run_guarded};
pub use version::{CniVersion, SUPPORTED_VERSIONS, version_info};
