//! CNI plugins of spiderpool-rs: the protocol module every plugin binary is built on ([`protocol`]), the
//! network-namespace and netlink helpers ([`netns`], [`netlink`]), the `spiderpool` IPAM plugin
//! ([`ipam_plugin`]), the `ifacer` and `coordinator` meta-plugins, and the node installer that puts
//! them, their kubeconfig and their settings on every node ([`installer`]).
//!
//! Unsafe code is denied everywhere but in [`raw_link`], whose `AF_PACKET` socket (the ARP and NDP
//! probes and announcements of [`neighbour`]) has no safe wrapper in the crates we use.

#![deny(unsafe_code)]

pub mod arp;
pub mod coordinator;
pub mod ifacer;
pub mod installer;
pub mod ipam_plugin;
pub mod ndp;
pub mod neighbour;
pub mod netlink;
pub mod netns;
pub mod protocol;
#[allow(unsafe_code)]
pub mod raw_link;
