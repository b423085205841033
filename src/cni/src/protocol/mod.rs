//! The CNI protocol shared by our plugins (`spiderpool`, `ifacer`, `coordinator`): environment, stdin
//! configuration with `prevResult`, results in every supported version, spec error JSON, and [`run`], the
//! guarded entry point a plugin's `main` calls.
//!
//! A plugin implements [`Plugin`] and calls [`run`]; handlers receive a [`Context`] (environment, raw
//! stdin, common [`NetConf`], decoded `prevResult`) and return a [`CniResult`] or a [`CniError`].
//! [`run`] prints the result converted to the configuration's `cniVersion` (0.3.x/0.4.0 get a `version`
//! per IP), or the error JSON; DEL, CHECK, STATUS and GC print nothing on success.
//!
//! ```no_run
//! use serde::Deserialize;
//! use spiderpool_cni::protocol::{self, CniError, CniResult, Context, IpConfig, Plugin};
//!
//! #[derive(Deserialize)]
//! struct Ipam {
//!     #[serde(default)]
//!     default_ipv4_ippool: Vec<String>,
//! }
//! #[derive(Deserialize)]
//! struct Config {
//!     ipam: Ipam,
//! }
//!
//! struct Spiderpool;
//!
//! impl Plugin for Spiderpool {
//!     fn name(&self) -> &'static str {
//!         "spiderpool"
//!     }
//!     fn add(&self, context: &Context) -> Result<CniResult, CniError> {
//!         let config: Config = context.config()?; // code 6 when it does not decode
//!         let pod = context.k8s(); // K8S_POD_NAMESPACE / K8S_POD_NAME / K8S_POD_UID from CNI_ARGS
//!         let _ = (config.ipam.default_ipv4_ippool, pod, &context.env.ifname);
//!         let address = "172.18.40.40/24".parse().map_err(|_| CniError::plugin("bad address"))?;
//!         Ok(CniResult {
//!             ips: vec![IpConfig { interface: None, address, gateway: "172.18.40.1".parse().ok() }],
//!             ..CniResult::default()
//!         })
//!     }
//!     fn del(&self, _context: &Context) -> Result<(), CniError> {
//!         Ok(()) // must be idempotent
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     protocol::run(Spiderpool)
//! }
//! ```

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
