//! Compare-and-swap writes of `SpiderIPPool.status`: read the pool, compute the next ledger with a
//! pure step, write it back conditioned on the `resourceVersion` that was read, and on `409
//! Conflict` start again from a fresh read after a jittered exponential backoff.
//!
//! The write is a JSON merge patch of the status subresource that carries
//! `metadata.resourceVersion`: the API server applies it only if the object still has that version,
//! which is exactly an optimistic-concurrency update, with a smaller request than a full PUT.
//! Nothing is ever serialised through a lease; on one node the optional [`LockDir`] queues the
//! writers of a pool so they stop conflicting with each other.

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use rand::Rng;
use serde_json::json;
use spiderpool_api::{SpiderIPPool, SpiderReservedIP};
use std::sync::Arc;
use tokio::sync::OnceCell;

use super::lock::LockDir;
use super::{StoreError, api_error};
use spiderpool_ipam::ledger::PoolStatusUpdate;

/// Retry policy of one compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts (reads + writes) before giving up.
    pub max_attempts: u32,
    /// First sleep after a conflict.
    pub initial: Duration,
    /// Largest sleep.
    pub cap: Duration,
}

impl Default for Backoff {
    /// Tuned with the 1000-pod benchmark (docs/benchmarks.md): a loser waiting 12.5-50 ms, then
    /// up to 1 s, lets the winner's write land and lets its own node queue more operations for
    /// one combined write; 5 ms / 500 ms gave 34.7 pods/s, this 48.5-59.2 pods/s with half the
    /// conflicts and the ADD p50 halved. An uncontended call never sleeps.
    fn default() -> Backoff {
        Backoff {
            max_attempts: 15,
            initial: Duration::from_millis(50),
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// "Full jitter": a uniform sleep in `[0, min(cap, initial * 2^attempt)]`, with a floor of a
    /// quarter of the window so two losers rarely collide again at once.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let window = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.cap);
        let window_micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        if window_micros == 0 {
            return Duration::ZERO;
        }
        let floor = window_micros / 4;
        Duration::from_micros(rng.random_range(floor..=window_micros))
    }

    /// The sleep before attempt `attempt + 1` of a write of `pool` that lost a conflict, or the
    /// error when the attempts or the `deadline` do not allow another one.
    pub fn after_conflict(
        &self,
        pool: &str,
        attempt: u32,
        deadline: Instant,
    ) -> Result<Duration, StoreError> {
        if attempt >= self.max_attempts {
            return Err(StoreError::ConflictsExhausted {
                pool: pool.to_string(),
                attempts: attempt,
                releasing: false,
            });
        }
        let delay = self.delay(attempt - 1, &mut rand::rng());
        if Instant::now() + delay >= deadline {
            return Err(StoreError::Deadline {
                what: format!("a conflict-free write of SpiderIPPool {pool} ({attempt} attempts)"),
            });
        }
        Ok(delay)
    }
}

/// What the compare-and-swap loops cost, summed over one CNI call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CasStats {
    /// Successful status writes.
    pub writes: u32,
    /// Writes rejected with `409 Conflict`.
    pub conflicts: u32,
    /// Fresh reads after a conflict (= conflicts that were retried).
    pub retries: u32,
    /// Time spent waiting for node-local locks.
    pub lock_wait: Duration,
    /// Operations of other calls on the node this call applied in its writes.
    pub batched: u32,
    /// Operations of this call another call on the node applied.
    pub served_by_peer: u32,
}

impl CasStats {
    pub fn add(&mut self, other: CasStats) {
        self.writes += other.writes;
        self.conflicts += other.conflicts;
        self.retries += other.retries;
        self.lock_wait += other.lock_wait;
        self.batched += other.batched;
        self.served_by_peer += other.served_by_peer;
    }
}

/// The decision of one read-modify-write step.
pub enum Step<T> {
    /// Nothing to write; finish with this value.
    Done(T),
    /// Write this status, then finish with the value.
    Write(PoolStatusUpdate, T),
}

/// Writes pool statuses with compare-and-swap.
#[derive(Clone)]
pub struct PoolWriter {
    pub(crate) pools: Api<SpiderIPPool>,
    pub(crate) reserved_ips: Api<SpiderReservedIP>,
    /// The reserved addresses, read at most once per store.
    pub(crate) reserved_cache: Arc<OnceCell<Vec<SpiderReservedIP>>>,
    pub(crate) lock_dir: Option<LockDir>,
    pub(crate) backoff: Backoff,
}

impl PoolWriter {
    /// Runs `step` on fresh reads of `pool` until its write succeeds, nothing needs writing, or the
    /// attempts / `deadline` run out. `first_read` (a copy just read, possibly from the API
    /// server's cache) saves the first GET when no node-local lock is used; it is only trusted for
    /// a write (which the resourceVersion guards), never for a decision to write nothing.
    pub async fn update<T, F>(
        &self,
        pool: &str,
        first_read: Option<SpiderIPPool>,
        deadline: Instant,
        mut step: F,
    ) -> Result<(T, CasStats), StoreError>
    where
        F: FnMut(&SpiderIPPool) -> Result<Step<T>, StoreError>,
    {
        let mut stats = CasStats::default();
        // Under a node-local lock the read must happen inside the lock to be worth anything.
        let mut cached = if self.lock_dir.is_some() {
            None
        } else {
            first_read
        };
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let guard = match &self.lock_dir {
                Some(dir) => {
                    let started = Instant::now();
                    let guard = dir.lock(pool, deadline).await?;
                    stats.lock_wait += started.elapsed();
                    Some(guard)
                }
                None => None,
            };
            let (current, from_cache) = match cached.take() {
                Some(current) => (current, true),
                None => (
                    self.pools
                        .get_opt(pool)
                        .await
                        .map_err(|error| api_error(format!("get SpiderIPPool {pool}"), error))?
                        .ok_or_else(|| StoreError::PoolGone {
                            pool: pool.to_string(),
                        })?,
                    false,
                ),
            };
            let (update, value) = match step(&current)? {
                // A decision to write nothing is never checked by the API server, so it must not
                // rest on a copy that may be stale (e.g. "this UID already holds an address" read
                // before that record was rolled back): decide again on a fresh read.
                Step::Done(_) if from_cache => {
                    attempt -= 1;
                    drop(guard);
                    continue;
                }
                Step::Done(value) => return Ok((value, stats)),
                Step::Write(update, value) => (update, value),
            };
            let resource_version = current.metadata.resource_version.clone().ok_or_else(|| {
                StoreError::Invalid(format!("SpiderIPPool {pool} has no resourceVersion"))
            })?;
            let written = self.write_status(pool, &resource_version, &update).await;
            drop(guard);
            match written {
                Ok(()) => {
                    stats.writes += 1;
                    return Ok((value, stats));
                }
                Err(WriteError::Conflict) => {
                    stats.conflicts += 1;
                    let delay = self.backoff.after_conflict(pool, attempt, deadline)?;
                    tokio::time::sleep(delay).await;
                    stats.retries += 1;
                }
                Err(WriteError::Other(error)) => return Err(error),
            }
        }
    }

    /// One compare-and-swap write of the pool's ledger: a JSON merge patch of the status
    /// subresource carrying the `resourceVersion` it was computed from.
    pub(crate) async fn write_status(
        &self,
        pool: &str,
        resource_version: &str,
        update: &PoolStatusUpdate,
    ) -> Result<(), WriteError> {
        let patch = json!({
            "metadata": {"resourceVersion": resource_version},
            "status": {
                // `null` removes the field, as upstream writes a nil map for an empty ledger.
                "allocatedIPs": update.allocated_ips,
                "allocatedIPCount": update.allocated_ip_count,
            },
        });
        match self
            .pools
            .patch_status(pool, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_conflict() => Err(WriteError::Conflict),
            Err(error) => Err(WriteError::Other(api_error(
                format!("update status of SpiderIPPool {pool}"),
                error,
            ))),
        }
    }
}

/// Why a status write did not land.
pub(crate) enum WriteError {
    /// `409 Conflict`: the pool changed since it was read.
    Conflict,
    Other(StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_is_capped() {
        let backoff = Backoff::default();
        let mut rng = rand::rng();
        for _ in 0..200 {
            let first = backoff.delay(0, &mut rng);
            assert!(first >= Duration::from_micros(12500) && first <= Duration::from_millis(50));
            let third = backoff.delay(2, &mut rng);
            assert!(third >= Duration::from_millis(50) && third <= Duration::from_millis(200));
            let late = backoff.delay(40, &mut rng);
            assert!(late >= Duration::from_millis(250) && late <= Duration::from_secs(1));
        }
    }

    #[test]
    fn zero_backoff_does_not_sleep() {
        let backoff = Backoff {
            max_attempts: 3,
            initial: Duration::ZERO,
            cap: Duration::ZERO,
        };
        assert_eq!(backoff.delay(5, &mut rand::rng()), Duration::ZERO);
    }
}
