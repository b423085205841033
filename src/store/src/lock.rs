//! Node-local serialisation of one pool's read-modify-write: an advisory `flock` on
//! `<lock_dir>/<pool>.lock`.
//!
//! Every CNI call on a node is its own process, so an in-process mutex cannot order them. Without
//! it, N concurrent ADDs on one node all read the same `resourceVersion` and N-1 of them lose the
//! compare-and-swap and retry; with it they queue on the node and only writers on *different*
//! nodes can still conflict (handled by the compare-and-swap). The lock is advisory, held only
//! around one pool's GET + status write, and released by the kernel when the process dies, so a
//! crashed plugin never wedges a node.
//!
//! The same directory holds the per-pool operation queues of [`super::combine`] and the node's
//! copy of each pool's spec (`<pool>.spec.json`, without the ledger), refreshed by every write
//! on the node and used by selection for a few seconds instead of reading the whole pool.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use spiderpool_api::SpiderIPPool;

use super::StoreError;

/// Pool names are DNS subdomains (no '/'); keep file names safe anyway.
fn safe_name(pool: &str) -> String {
    pool.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect()
}

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

    fn spec_file(&self, pool: &str) -> PathBuf {
        self.dir.join(format!("{}.spec.json", safe_name(pool)))
    }

    /// The node's copy of a pool without its ledger, if written less than `ttl` ago.
    pub fn cached_pool(&self, pool: &str, ttl: Duration) -> Option<SpiderIPPool> {
        let path = self.spec_file(pool);
        let age = std::fs::metadata(&path)
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok())?;
        if age > ttl {
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps a copy of `pool` without its ledger (best effort).
    pub fn cache_pool(&self, pool: &SpiderIPPool) {
        let Some(name) = pool.metadata.name.as_deref() else {
            return;
        };
        let mut copy = pool.clone();
        copy.status = None;
        copy.metadata.managed_fields = None;
        let path = self.spec_file(name);
        let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
        let written = serde_json::to_vec(&copy)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
    }

    fn file_for(&self, pool: &str) -> PathBuf {
        self.dir.join(format!("{}.lock", safe_name(pool)))
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
