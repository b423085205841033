//! SpiderCoordinator: the controller that keeps the `default` object present and its status
//! (the cluster's pod and service CIDRs, `Synced` or `NotReady`) true ([`controller`]), and the
//! pure detection of those CIDRs from their sources ([`detect`]).

pub mod controller;
pub mod detect;
