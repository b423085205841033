//! The `coordinator` CNI meta-plugin binary: policy routing and host connectivity for multi-NIC pods.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    spiderpool_cni::protocol::run(spiderpool_cni::coordinator::Coordinator::default())
}
