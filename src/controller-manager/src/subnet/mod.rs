//! SpiderSubnet: the Subnet controller, the per-subnet locks it shares with the application
//! controller, and the compare-and-swap writer of subnet status.

pub mod controller;
pub mod locks;
pub mod status;
