//! The framework the controllers run on, without domain logic: the admin server and named
//! readiness ([`admin`]), per-object error backoff ([`backoff`]), leader election ([`leader`]),
//! the metrics every controller shares ([`metrics`]), the startup probe ([`probe`]), reflectors
//! ([`reflect`]), the reconcile wrapper every controller uses ([`reconcile`]) and the supervisor
//! of leader-only controllers ([`supervisor`]).

pub mod admin;
pub mod backoff;
pub mod leader;
pub mod metrics;
pub mod probe;
pub mod reconcile;
pub mod reflect;
pub mod supervisor;
