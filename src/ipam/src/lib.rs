//! The IPAM core.
