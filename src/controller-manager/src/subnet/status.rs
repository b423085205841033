//! The one writer of `SpiderSubnet.status` lives with the allocation store (the CNI plugin writes
//! subnet records for third-party controllers' pools too).

pub use spiderpool_store::autopool::write_subnet_status;
