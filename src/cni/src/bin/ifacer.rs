//! The `ifacer` CNI meta-plugin binary: creates host VLAN/bond interfaces for the next plugin's master.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    spiderpool_cni::protocol::run(spiderpool_cni::ifacer::Ifacer)
}
