//! Run code inside another network namespace.
//!
//! `setns(2)` switches only the calling thread, and a netlink socket stays bound to the namespace it was
//! created in. So [`run_in`] runs the closure on a fresh OS thread that first enters the namespace; the
//! closure opens its own [`crate::netlink::Netlink`] (and packet sockets, `/proc/sys/net` files) there.
//! The thread ends with the closure, so no thread ever returns to the pool in the wrong namespace.

use std::fs::File;
use std::io::ErrorKind;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

use crate::protocol::{CniError, ErrorCode};

/// Why a namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path} does not exist")]
    NotFound { path: String },
    #[error("failed to open network namespace {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("failed to enter network namespace {path}: {source}")]
    Enter { path: String, source: nix::Error },
}

impl From<NetnsError> for CniError {
    fn from(error: NetnsError) -> Self {
        let code = match error {
            NetnsError::NotFound { .. } => ErrorCode::UNKNOWN_CONTAINER,
            _ => ErrorCode::NETWORK_SETUP,
        };
        CniError::new(code, error.to_string())
    }
}

/// Open a namespace file, telling "does not exist" apart from other failures.
pub fn open(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => NetnsError::NotFound {
            path: path.display().to_string(),
        },
        _ => NetnsError::Open {
            path: path.display().to_string(),
            source,
        },
    })
}

/// Whether `path` names an existing namespace file.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// Run `work` on a dedicated thread inside the network namespace at `path`.
pub fn run_in<T, F>(path: &Path, work: F) -> Result<T, CniError>
where
    T: Send,
    F: FnOnce() -> Result<T, CniError> + Send,
{
    let namespace = open(path)?;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, move || {
                setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetnsError::Enter {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                work()
            })
            .map_err(|error| {
                CniError::internal(format!("failed to start netns thread: {error}"))
            })?;
        // Re-raise a panic so the guard in `protocol::run_guarded` reports its message.
        worker
            .join()
            .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    })
}
