//! The `spiderpool` IPAM plugin binary: allocates pod addresses against the API server.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    spiderpool_cni::protocol::run(spiderpool_cni::ipam_plugin::Spiderpool)
}
