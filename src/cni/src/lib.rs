//! CNI plugins of spiderpool-rs: the protocol module every plugin binary is built on ([`protocol`]), the
//! network-namespace and netlink helpers ([`netns`], [`netlink`]), the `spiderpool` IPAM plugin
//! ([`ipam_plugin`]), and the `ifacer` and `coordinator` meta-plugins.

pub mod arp;
pub mod coordinator;
pub mod ifacer;
pub mod ipam_plugin;
pub mod netlink;
pub mod netns;
pub mod protocol;
