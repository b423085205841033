//! Node-local combining of ledger operations: every CNI call on a node that wants to change a
//! pool's ledger drops its operation into `<lock_dir>/<pool>.queue/` and takes the pool's lock;
//! whoever holds the lock applies *every* queued operation in one compare-and-swap write and
//! leaves each caller its outcome. A caller that finds its outcome on taking the lock is done
//! without a single API request.
//!
//! Why: `status.allocatedIPs` is one string in one object, so every allocation of a pool is a
//! write of the same object, and optimistic concurrency wastes work in proportion to the number of
//! concurrent writers. Combining makes a node one writer whose writes grow with the load (the
//! longer a write takes or conflicts with other nodes, the more operations the next one carries),
//! the way upstream's agent serialises a node's requests, without an agent.
//!
//! Safety: the write is an ordinary compare-and-swap, so nodes never overwrite each other.
//! Operations are idempotent by pod UID (an allocation finds the UID's existing record; a release
//! only removes `ip + uid` matches), so an operation applied for a caller that has meanwhile given
//! up is harmless: its retried ADD finds the address, its DEL (or garbage collection) frees it.
//! Requests past their caller's deadline are discarded, and a caller removes its files on exit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use spiderpool_api::{SpiderIPPool, SpiderReservedIP};
use spiderpool_ipam::ip::{IpVersion, parse_any_ip, parse_ip};
use spiderpool_ipam::ledger::{
    AllocateError, IpAndUid, PoolIpAllocation, PoolIpAllocations, allocate_in_place,
};
use spiderpool_ipam::pool::PoolView;
use spiderpool_ipam::range::IpSet;

use super::cas::{CasStats, PoolWriter, Step, WriteError};
use super::objects::{pool_view, reserved_set};
use super::{StoreError, api_error};

/// A change of one pool's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LedgerOp {
    /// The lowest free address for `owner` (its existing record when it holds one).
    Allocate { owner: PoolIpAllocation },
    /// Remove the records of these `ip` + `uid` pairs.
    Release { addresses: Vec<(String, String)> },
}

/// The outcome of one [`LedgerOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LedgerOutcome {
    /// `created`: the record was written by this operation (not already held by the UID).
    Allocated {
        ip: String,
        created: bool,
    },
    Released {
        count: usize,
    },
    /// No free address.
    Exhausted,
    /// The pool's record cap is reached.
    ThresholdExceeded {
        max: i64,
    },
    /// Any other failure of the pure step (broken spec or ledger), as text.
    Failed {
        message: String,
    },
}

impl LedgerOutcome {
    /// The allocation error of a failed allocation outcome.
    pub fn allocate_error(&self, pool: &str) -> Option<StoreError> {
        match self {
            LedgerOutcome::Exhausted => Some(
                AllocateError::Exhausted {
                    pool: pool.to_string(),
                }
                .into(),
            ),
            LedgerOutcome::ThresholdExceeded { max } => Some(
                AllocateError::ThresholdExceeded {
                    pool: pool.to_string(),
                    max: *max,
                }
                .into(),
            ),
            LedgerOutcome::Failed { message } => Some(StoreError::Invalid(message.clone())),
            _ => None,
        }
    }
}

/// A queued operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    op: LedgerOp,
    /// Enqueue time (Unix ms): operations are applied in arrival order.
    enqueued: u64,
    /// The caller gives up at this time (Unix ms); later the request is discarded.
    deadline: u64,
}

fn unix_millis(time: SystemTime) -> u64 {
    u64::try_from(
        time.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

fn deadline_millis(deadline: Instant) -> u64 {
    let remaining = deadline.saturating_duration_since(Instant::now());
    unix_millis(SystemTime::now() + remaining)
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Writes `value` as `path` atomically (temporary file + rename).
fn write_atomically(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_vec(value)?)?;
    std::fs::rename(&temporary, path)
}

/// The request and outcome files of one caller; removed on drop.
struct Ticket {
    request: PathBuf,
    done: PathBuf,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.request);
        let _ = std::fs::remove_file(&self.done);
    }
}

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::Lock {
        path: path.display().to_string(),
        detail: error.to_string(),
    }
}

/// Applies `op` to `records` (the pure step of one operation).
fn apply_op(
    op: &LedgerOp,
    records: &mut PoolIpAllocations,
    view: &spiderpool_ipam::pool::PoolView,
    reserved: &spiderpool_ipam::range::IpSet,
    max: i64,
) -> (LedgerOutcome, bool) {
    match op {
        LedgerOp::Allocate { owner } => {
            match allocate_in_place(view, reserved, records, owner, max) {
                Ok((ip, created)) => (
                    LedgerOutcome::Allocated {
                        ip: ip.to_string(),
                        created,
                    },
                    created,
                ),
                Err(AllocateError::Exhausted { .. }) => (LedgerOutcome::Exhausted, false),
                Err(AllocateError::ThresholdExceeded { max, .. }) => {
                    (LedgerOutcome::ThresholdExceeded { max }, false)
                }
                Err(error) => (
                    LedgerOutcome::Failed {
                        message: error.to_string(),
                    },
                    false,
                ),
            }
        }
        LedgerOp::Release { addresses } => {
            let mut count = 0;
            for (ip, uid) in addresses {
                if records.get(ip).is_some_and(|record| record.pod_uid == *uid) {
                    records.0.remove(ip);
                    count += 1;
                }
            }
            (LedgerOutcome::Released { count }, count > 0)
        }
    }
}

/// What the pure step of an operation reads from a pool: its view, its ledger, and the reserved
/// addresses of its family (none when `reservations` were not read: a release needs none).
fn ledger_inputs(
    pool: &str,
    current: &SpiderIPPool,
    reservations: Option<&[SpiderReservedIP]>,
) -> Result<(PoolView, PoolIpAllocations, IpSet), StoreError> {
    let view = pool_view(current);
    let records = PoolIpAllocations::parse(
        pool,
        current
            .status
            .as_ref()
            .and_then(|status| status.allocated_ips.as_deref()),
    )?;
    let reserved = match (reservations, view.ip_version) {
        (Some(reservations), Some(version)) => reserved_set(reservations, version),
        _ => IpSet::new(view.ip_version.unwrap_or(IpVersion::V4)),
    };
    Ok((view, records, reserved))
}

impl PoolWriter {
    /// Applies `op` to `pool`: combined with the node's other queued operations when a lock
    /// directory is configured, as a plain compare-and-swap otherwise (where `first_read`, a copy
    /// of the pool just read, saves the first GET).
    pub async fn apply(
        &self,
        pool: &str,
        op: LedgerOp,
        max_allocated_ips: i64,
        first_read: Option<SpiderIPPool>,
        deadline: Instant,
    ) -> Result<(LedgerOutcome, CasStats), StoreError> {
        match &self.lock_dir {
            Some(dir) => {
                self.apply_combined(dir.path(), pool, op, max_allocated_ips, deadline)
                    .await
            }
            None => {
                let reserved = self.reserved_for(pool, &op).await?;
                self.update(pool, first_read, deadline, |current| {
                    let (view, mut records, reserved) =
                        ledger_inputs(pool, current, Some(&reserved))?;
                    let (outcome, changed) =
                        apply_op(&op, &mut records, &view, &reserved, max_allocated_ips);
                    Ok(if changed {
                        Step::Write(records.status(), outcome)
                    } else {
                        Step::Done(outcome)
                    })
                })
                .await
            }
        }
    }

    /// The reserved addresses, read once per process and only when an allocation needs them.
    async fn reserved_for(
        &self,
        _pool: &str,
        op: &LedgerOp,
    ) -> Result<Vec<SpiderReservedIP>, StoreError> {
        if !matches!(op, LedgerOp::Allocate { .. }) {
            return Ok(Vec::new());
        }
        self.reserved().await
    }

    pub(crate) async fn reserved(&self) -> Result<Vec<SpiderReservedIP>, StoreError> {
        self.reserved_list()
            .await
            .map_err(|error| api_error("list SpiderReservedIPs", error))
    }

    /// The reserved addresses, listed at most once per store.
    pub(crate) async fn reserved_list(&self) -> Result<Vec<SpiderReservedIP>, kube::Error> {
        let api = self.reserved_ips.clone();
        self.reserved_cache
            .get_or_try_init(|| async move {
                super::list_cached(
                    &api,
                    &kube::api::ListParams::default(),
                    "list SpiderReservedIPs",
                )
                .await
            })
            .await
            .cloned()
    }

    async fn apply_combined(
        &self,
        lock_dir: &Path,
        pool: &str,
        op: LedgerOp,
        max_allocated_ips: i64,
        deadline: Instant,
    ) -> Result<(LedgerOutcome, CasStats), StoreError> {
        let queue = lock_dir.join(format!("{pool}.queue"));
        std::fs::create_dir_all(&queue).map_err(|error| io_error(&queue, error))?;
        let id = format!(
            "{}-{}-{}",
            unix_millis(SystemTime::now()),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let ticket = Ticket {
            request: queue.join(format!("{id}.req")),
            done: queue.join(format!("{id}.done")),
        };
        let needs_reserved = matches!(op, LedgerOp::Allocate { .. });
        let request = Request {
            op,
            enqueued: unix_millis(SystemTime::now()),
            deadline: deadline_millis(deadline),
        };
        write_atomically(&ticket.request, &request)
            .map_err(|error| io_error(&ticket.request, error))?;
        // Reserved addresses are read before queueing for the lock, not while holding it.
        let mut reserved = if needs_reserved {
            Some(self.reserved().await?)
        } else {
            None
        };
        let dir = self
            .lock_dir
            .clone()
            .ok_or_else(|| StoreError::Invalid("combining without a lock directory".into()))?;
        let mut stats = CasStats::default();
        let mut attempt: u32 = 0;
        let started = Instant::now();
        let guard = dir.lock(pool, deadline).await?;
        stats.lock_wait += started.elapsed();
        if let Some(outcome) = read_outcome(&ticket.done) {
            drop(guard);
            stats.served_by_peer += 1;
            return Ok((outcome, stats));
        }
        // The lock is kept through conflicts and their backoff: the node backs off as one
        // writer (its other calls queue meanwhile and ride along on the next attempt) instead of
        // letting the next local call try again at once.
        loop {
            attempt += 1;
            let batch = pending(&queue);
            if batch
                .iter()
                .any(|(_, request)| matches!(request.op, LedgerOp::Allocate { .. }))
                && reserved.is_none()
            {
                reserved = Some(self.reserved().await?);
            }
            let read_started = Instant::now();
            let current = self
                .pools
                .get_opt(pool)
                .await
                .map_err(|error| api_error(format!("get SpiderIPPool {pool}"), error))?
                .ok_or_else(|| StoreError::PoolGone {
                    pool: pool.to_string(),
                })?;
            dir.cache_pool(&current);
            let (view, mut records, reserved_set) =
                ledger_inputs(pool, &current, reserved.as_deref())?;
            let mut outcomes: Vec<(PathBuf, LedgerOutcome)> = Vec::with_capacity(batch.len());
            let mut own: Option<LedgerOutcome> = None;
            let mut changed = false;
            let mut own_applied = false;
            for (path, queued) in &batch {
                let (outcome, write) = apply_op(
                    &queued.op,
                    &mut records,
                    &view,
                    &reserved_set,
                    max_allocated_ips,
                );
                changed |= write;
                if *path == ticket.request {
                    own = Some(outcome);
                    own_applied = true;
                } else {
                    outcomes.push((path.clone(), outcome));
                }
            }
            if !own_applied {
                // Our request file vanished (cannot happen unless removed by hand): apply it last.
                let (outcome, write) = apply_op(
                    &request.op,
                    &mut records,
                    &view,
                    &reserved_set,
                    max_allocated_ips,
                );
                changed |= write;
                own = Some(outcome);
            }
            let own = own.ok_or_else(|| StoreError::Invalid("no outcome".into()))?;
            if changed {
                let resource_version =
                    current.metadata.resource_version.clone().ok_or_else(|| {
                        StoreError::Invalid(format!("SpiderIPPool {pool} has no resourceVersion"))
                    })?;
                let status = records.status();
                let write_started = Instant::now();
                let written = self.write_status(pool, &resource_version, &status).await;
                log::debug!(
                    "combined {} operations on IPPool {pool} (attempt {attempt}): read {:?}, write {:?} ({})",
                    batch.len(),
                    write_started.duration_since(read_started),
                    write_started.elapsed(),
                    if written.is_ok() {
                        "written"
                    } else {
                        "not written"
                    },
                );
                match written {
                    Ok(()) => stats.writes += 1,
                    Err(WriteError::Conflict) => {
                        stats.conflicts += 1;
                        let delay = self.backoff.after_conflict(pool, attempt, deadline)?;
                        tokio::time::sleep(delay).await;
                        stats.retries += 1;
                        continue;
                    }
                    Err(WriteError::Other(error)) => return Err(error),
                }
            }
            // Written (or nothing to write): hand every other caller its outcome.
            for (path, outcome) in outcomes {
                let done = path.with_extension("done");
                if write_atomically(&done, &outcome).is_ok() {
                    let _ = std::fs::remove_file(&path);
                    stats.batched += 1;
                }
            }
            drop(guard);
            return Ok((own, stats));
        }
    }
}

/// The outcome left for a caller, if any.
fn read_outcome(path: &Path) -> Option<LedgerOutcome> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Queued requests in arrival order; expired and unreadable ones (and stale outcomes) are
/// removed.
fn pending(queue: &Path) -> Vec<(PathBuf, Request)> {
    let now = unix_millis(SystemTime::now());
    let mut requests = Vec::new();
    let Ok(entries) = std::fs::read_dir(queue) else {
        return requests;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match path.extension().and_then(|extension| extension.to_str()) {
            Some("req") => {
                let request = std::fs::read(&path)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<Request>(&bytes).ok());
                match request {
                    Some(request) if request.deadline > now => requests.push((path, request)),
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Some("done") | Some("tmp") => {
                // Outcomes nobody collected (their caller died) go after a while.
                let stale = entry
                    .metadata()
                    .and_then(|metadata| metadata.modified())
                    .map(|modified| {
                        SystemTime::now()
                            .duration_since(modified)
                            .unwrap_or_default()
                            > Duration::from_secs(300)
                    })
                    .unwrap_or(false);
                if stale {
                    let _ = std::fs::remove_file(&path);
                }
            }
            _ => {}
        }
    }
    requests.sort_by(|(left_path, left), (right_path, right)| {
        left.enqueued
            .cmp(&right.enqueued)
            .then_with(|| left_path.cmp(right_path))
    });
    requests
}

/// `ip` + `uid` pairs of a release.
pub fn release_op(addresses: &[IpAndUid]) -> LedgerOp {
    LedgerOp::Release {
        addresses: addresses
            .iter()
            .map(|address| (address.ip.clone(), address.uid.clone()))
            .collect(),
    }
}

/// The allocated address of an outcome.
pub fn allocated_address(
    outcome: &LedgerOutcome,
    version: Option<IpVersion>,
) -> Option<(std::net::IpAddr, bool)> {
    match outcome {
        LedgerOutcome::Allocated { ip, created } => {
            let address = match version {
                Some(version) => parse_ip(version, ip),
                None => parse_any_ip(ip),
            }?;
            Some((address, *created))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spiderpool_ipam::pool::PoolView;
    use spiderpool_ipam::range::IpSet;

    fn view() -> PoolView {
        PoolView {
            ips: vec!["10.0.0.10-10.0.0.11".into()],
            ..PoolView::new("p", IpVersion::V4, "10.0.0.0/24")
        }
    }

    #[test]
    fn a_batch_allocates_in_order_and_reports_exhaustion_per_request() {
        let mut records = PoolIpAllocations::default();
        let reserved = IpSet::new(IpVersion::V4);
        let owner = |name: &str| LedgerOp::Allocate {
            owner: PoolIpAllocation::new(format!("ns/{name}"), format!("uid-{name}")),
        };
        let outcomes: Vec<LedgerOutcome> = ["a", "b", "a", "c"]
            .iter()
            .map(|name| apply_op(&owner(name), &mut records, &view(), &reserved, 5000).0)
            .collect();
        assert_eq!(
            outcomes,
            vec![
                LedgerOutcome::Allocated {
                    ip: "10.0.0.10".into(),
                    created: true
                },
                LedgerOutcome::Allocated {
                    ip: "10.0.0.11".into(),
                    created: true
                },
                LedgerOutcome::Allocated {
                    ip: "10.0.0.10".into(),
                    created: false
                },
                LedgerOutcome::Exhausted,
            ]
        );
        let (released, changed) = apply_op(
            &LedgerOp::Release {
                addresses: vec![
                    ("10.0.0.10".into(), "uid-a".into()),
                    ("10.0.0.11".into(), "uid-other".into()),
                ],
            },
            &mut records,
            &view(),
            &reserved,
            5000,
        );
        assert_eq!(released, LedgerOutcome::Released { count: 1 });
        assert!(changed);
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn expired_requests_are_dropped_and_the_rest_sorted_by_arrival() {
        let queue = std::env::temp_dir().join(format!("combine-test-{}", std::process::id()));
        std::fs::create_dir_all(&queue).unwrap();
        let now = unix_millis(SystemTime::now());
        let request = |enqueued: u64, deadline: u64| Request {
            op: LedgerOp::Release { addresses: vec![] },
            enqueued,
            deadline,
        };
        write_atomically(&queue.join("b.req"), &request(now - 5, now + 60_000)).unwrap();
        write_atomically(&queue.join("a.req"), &request(now - 1, now + 60_000)).unwrap();
        write_atomically(&queue.join("old.req"), &request(now - 90_000, now - 1)).unwrap();
        let names: Vec<String> = pending(&queue)
            .iter()
            .map(|(path, _)| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["b.req", "a.req"]);
        assert!(!queue.join("old.req").exists());
        std::fs::remove_dir_all(&queue).unwrap();
    }
}
