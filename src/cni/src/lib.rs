//! CNI protocol and plugins.
