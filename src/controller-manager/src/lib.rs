//! spiderpool-controller-manager: one binary hosting every controller, the admission webhooks,
//! the IP garbage collector and the metrics endpoint; `main` parses the flags and calls [`run`].
//!
//! Layers, bottom up (a module uses only the layers below it; `tests/no_module_cycles.rs` checks
//! that no modules use each other in a circle):
//! - [`args`]: every flag.
//! - [`runtime`]: the framework — admin server and readiness, leader election, per-object
//!   backoff, controller metrics, the reconcile frame, reflectors, the supervisor.
//! - [`shared`]: state several domain modules share — the IPAM caches, the cluster settings, the
//!   subnet locks, the IPAM metrics, workload existence.
//! - The domain modules, one per resource or job, which never use each other: [`ippool`] (the
//!   IPPool controller), [`subnet`] (the Subnet controller), [`autopool`] (the auto-pool
//!   controller: per-workload pools from SpiderSubnets), [`gc`] (IP garbage collection),
//!   [`multusconfig`] (SpiderMultusConfig → NetworkAttachmentDefinition), [`coordinator`]
//!   (the SpiderCoordinator status: the cluster's pod and service CIDRs) and [`webhook`] (the
//!   admission webhooks).
//! - [`compose`]: the composition root that builds and wires all of the above.
//!
//! The allocation logic itself is in `spiderpool-ipam` (pure) and `spiderpool-store` (the
//! compare-and-swap writes the CNI plugin shares); see `docs/architecture.md`.

#![forbid(unsafe_code)]

pub mod args;
pub mod autopool;
pub mod compose;
pub mod coordinator;
pub mod gc;
pub mod ippool;
pub mod multusconfig;
pub mod runtime;
pub mod shared;
pub mod subnet;
pub mod webhook;

pub use compose::run;
