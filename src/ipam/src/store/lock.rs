//! Node-local serialisation of one pool's read-modify-write: an advisory `flock` on
//! `<lock_dir>/<pool>.lock`.
//!
//! Every CNI call on a node is its own process, so an in-process mutex cannot order them. Without
//! it, N concurrent ADDs on one node all read the same `resourceVersion` and N-1 of them lose the
//! compare-and-swap and retry; with it they queue on the node and only writers on *different*
//! nodes can still conflict (handled by the compare-and-swap). The lock is advisory, held only
//! around one pool's GET + status write, and released by the kernel when the process dies, so a
//! crashed plugin never wedges a node.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::StoreError;

/// A held lock; released on drop.
#[derive(Debug)]
pub struct PoolLock {
    file: File,
}

impl Drop for PoolLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Lock files of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockDir {
    dir: PathBuf,
}

impl LockDir {
    /// `None` for an empty path (serialisation disabled).
    pub fn new(dir: impl Into<PathBuf>) -> Option<LockDir> {
        let dir = dir.into();
        (!dir.as_os_str().is_empty()).then_some(LockDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file_for(&self, pool: &str) -> PathBuf {
        // Pool names are DNS subdomains (no '/'); keep the file name safe anyway.
        let name: String = pool
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        self.dir.join(format!("{name}.lock"))
    }

    /// Waits for the lock of `pool` until `deadline`.
    pub async fn lock(&self, pool: &str, deadline: Instant) -> Result<PoolLock, StoreError> {
        let path = self.file_for(pool);
        let dir = self.dir.clone();
        let open_path = path.clone();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            std::fs::create_dir_all(&dir)?;
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&open_path)
        })
        .await
        .map_err(|error| StoreError::Lock {
            path: path.display().to_string(),
            detail: error.to_string(),
        })?
        .map_err(|error| StoreError::Lock {
            path: path.display().to_string(),
            detail: error.to_string(),
        })?;
        // Fast path: uncontended.
        match file.try_lock() {
            Ok(()) => return Ok(PoolLock { file }),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(StoreError::Lock {
                    path: path.display().to_string(),
                    detail: error.to_string(),
                });
            }
        }
        let waiter = tokio::task::spawn_blocking(move || file.lock().map(|()| file));
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, waiter).await {
            Ok(Ok(Ok(file))) => Ok(PoolLock { file }),
            Ok(Ok(Err(error))) => Err(StoreError::Lock {
                path: path.display().to_string(),
                detail: error.to_string(),
            }),
            Ok(Err(error)) => Err(StoreError::Lock {
                path: path.display().to_string(),
                detail: error.to_string(),
            }),
            // The blocked thread is abandoned; the process ends with the call anyway.
            Err(_) => Err(StoreError::Deadline {
                what: format!("the node-local lock {}", path.display()),
            }),
        }
    }
}
