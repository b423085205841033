//! The `coordinator` CNI meta-plugin binary: policy routing and host connectivity for multi-NIC pods.

use std::process::ExitCode;

fn main() -> ExitCode {
    spiderpool_cni::protocol::run(spiderpool_cni::coordinator::Coordinator::default())
}
