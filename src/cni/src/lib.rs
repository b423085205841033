//! CNI plugins of spiderpool-rs: the protocol module every plugin binary is built on ([`protocol`]), the
//! network-namespace and netlink helpers ([`netns`], [`netlink`]), the `spiderpool` IPAM plugin
//! ([`ipam_plugin`]), the `ifacer` and `coordinator` meta-plugins, and the node installer that puts
//! them, their kubeconfig and their settings on every node ([`installer`]).
//!
//! Unsafe code is denied everywhere but in [`arp`], whose raw `AF_PACKET` socket (gratuitous ARP
//! and duplicate-address probes) has no safe wrapper in the crates we use.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod arp;
pub mod coordinator;
pub mod ifacer;
pub mod installer;
pub mod ipam_plugin;
pub mod netlink;
pub mod netns;
pub mod protocol;
