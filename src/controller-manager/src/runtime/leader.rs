//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Controllers and the garbage collector run only on the replica that holds the Lease; webhooks
//! and metrics serve on every replica. The protocol is client-go's: the holder renews the Lease
//! every `renew_interval`; a candidate takes it over once it has seen the Lease unchanged for
//! `leaseDurationSeconds`. Every write carries the resourceVersion it read, so two candidates can
//! never both win the same term.
//!
//! Two rules keep two leaders from ever overlapping:
//! - Expiry is judged on the candidate's own monotonic clock, from the moment it *observed* the
//!   holder's last renewal, never by comparing the holder's `renewTime` with the local wall
//!   clock (clock skew between nodes would let a candidate take over early).
//! - Every attempt is bounded in time, and a leader whose last successful renewal *started*
//!   more than `lease_duration - renew_interval` ago steps down, even while a request hangs:
//!   the others cannot take over before a full lease duration after that renewal was written.
//!
//! A leader that shuts down releases the Lease so the next replica takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading lease {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("writing lease {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("no answer from the API server within {after:?}")]
    Timeout { after: Duration },
}

impl LeaderError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            LeaderError::Read { .. } => "lease_read",
            LeaderError::Write { .. } => "lease_write",
            LeaderError::Timeout { .. } => "lease_timeout",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
}

/// Outcome of one attempt to acquire or renew.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Leading,
    /// Someone else holds a valid lease.
    Following(String),
}

/// The holder and renewal of a Lease as a candidate saw them, and when it first saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    holder: String,
    renew_time: Option<MicroTime>,
    lease_duration_seconds: Option<i32>,
}

/// What this replica remembers between attempts.
#[derive(Debug, Default)]
struct Memory {
    /// When the last successful renewal (or acquisition) was *sent*.
    renewed_at: Option<Instant>,
    /// The other holder's record and when this replica first saw it.
    observed: Option<(Observed, Instant)>,
}

impl Memory {
    /// Notes the record read from the API server; returns whether the holder's lease has run out
    /// by this replica's clock (unchanged for its whole duration since first seen).
    fn observe(&mut self, record: Observed, now: Instant) -> bool {
        let duration = Duration::from_secs(
            u64::try_from(record.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        let since = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.observed = Some((record, now));
                now
            }
        };
        now.saturating_duration_since(since) >= duration
    }
}

/// How long a leader keeps leading after its last renewal started without a newer one.
fn renew_deadline(config: &LeaderConfig) -> Duration {
    config.lease_duration.saturating_sub(config.renew_interval)
}

/// Runs the election until `shutdown` flips to true, publishing whether this replica leads.
pub async fn run(
    client: Client,
    config: LeaderConfig,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut memory = Memory::default();
    let mut last_holder: Option<String> = None;
    loop {
        let started = Instant::now();
        // A leader's attempt may run only until its step-down point; a follower's for a lease
        // duration. A hanging request then counts as a failed attempt.
        let budget = match memory.renewed_at.filter(|_| *leading.borrow()) {
            Some(at) => renew_deadline(&config).saturating_sub(at.elapsed()),
            None => config.lease_duration,
        };
        let attempt = tokio::select! {
            outcome = tokio::time::timeout(budget, try_acquire_or_renew(&leases, &config, &mut memory)) => {
                outcome.unwrap_or(Err(LeaderError::Timeout { after: budget }))
            }
            _ = shutdown.changed() => {
                step_down_and_release(&leases, &config, &leading).await;
                return;
            }
        };
        match attempt {
            Ok(Attempt::Leading) => {
                if !*leading.borrow() {
                    tracing::info!(identity = %config.identity, lease = %config.lease_name, "became leader");
                }
                memory.renewed_at = Some(started);
                leading.send_replace(true);
            }
            Ok(Attempt::Following(holder)) => {
                if *leading.borrow() {
                    tracing::warn!(%holder, "lost leadership");
                }
                if last_holder.as_deref() != Some(holder.as_str()) {
                    tracing::info!(%holder, "following the current leader");
                    last_holder = Some(holder);
                }
                memory.renewed_at = None;
                leading.send_replace(false);
            }
            Err(error) => {
                tracing::warn!(%error, category = error.metric_label(), "leader election attempt failed");
            }
        }
        // Step down before the lease can expire for the others, so two leaders never overlap.
        if *leading.borrow()
            && memory
                .renewed_at
                .is_none_or(|at| at.elapsed() >= renew_deadline(&config))
        {
            tracing::warn!("could not renew the lease in time; stepping down");
            leading.send_replace(false);
            memory.renewed_at = None;
        }
        tokio::select! {
            _ = tokio::time::sleep(config.renew_interval) => {}
            _ = shutdown.changed() => {
                step_down_and_release(&leases, &config, &leading).await;
                return;
            }
        }
    }
}

async fn step_down_and_release(
    leases: &Api<Lease>,
    config: &LeaderConfig,
    leading: &watch::Sender<bool>,
) {
    if !*leading.borrow() {
        return;
    }
    leading.send_replace(false);
    match tokio::time::timeout(
        config.renew_interval.max(Duration::from_secs(1)),
        release(leases, config),
    )
    .await
    {
        Ok(Ok(())) => tracing::info!("released the leader lease"),
        Ok(Err(error)) => tracing::warn!(%error, "releasing the lease on shutdown failed"),
        Err(_) => tracing::warn!("releasing the lease on shutdown timed out"),
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn lease_seconds(config: &LeaderConfig) -> i32 {
    i32::try_from(config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

async fn try_acquire_or_renew(
    leases: &Api<Lease>,
    config: &LeaderConfig,
    memory: &mut Memory,
) -> Result<Attempt, LeaderError> {
    let read_error = |source| LeaderError::Read {
        namespace: config.namespace.clone(),
        name: config.lease_name.clone(),
        source,
    };
    let write_error = |source| LeaderError::Write {
        namespace: config.namespace.clone(),
        name: config.lease_name.clone(),
        source,
    };
    let Some(mut lease) = leases
        .get_opt(&config.lease_name)
        .await
        .map_err(read_error)?
    else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.lease_name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(lease_seconds(config)),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            // Another replica created it first; it leads this term.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Attempt::Following("another replica".into()))
            }
            Err(source) => Err(write_error(source)),
        };
    };

    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let held_by_us = holder == config.identity;
    let record = Observed {
        holder: holder.clone(),
        renew_time: spec.renew_time.clone(),
        lease_duration_seconds: spec.lease_duration_seconds,
    };
    if !held_by_us && !holder.is_empty() && !memory.observe(record, Instant::now()) {
        return Ok(Attempt::Following(holder));
    }
    if !held_by_us {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(lease_seconds(config));
    let name = config.lease_name.clone();
    // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
    match leases.replace(&name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Attempt::Leading),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            Ok(Attempt::Following("another replica".into()))
        }
        Err(source) => Err(write_error(source)),
    }
}

async fn release(leases: &Api<Lease>, config: &LeaderConfig) -> Result<(), LeaderError> {
    let mut lease = leases
        .get(&config.lease_name)
        .await
        .map_err(|source| LeaderError::Read {
            namespace: config.namespace.clone(),
            name: config.lease_name.clone(),
            source,
        })?;
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now());
    leases
        .replace(&config.lease_name, &PostParams::default(), &lease)
        .await
        .map_err(|source| LeaderError::Write {
            namespace: config.namespace.clone(),
            name: config.lease_name.clone(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kube::client::Body;

    use super::*;

    fn record(holder: &str, renewed: i64) -> Observed {
        Observed {
            holder: holder.into(),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(15),
        }
    }

    #[test]
    fn a_lease_expires_only_after_being_seen_unchanged_for_its_duration() {
        let start = Instant::now();
        let mut memory = Memory::default();
        // Whatever the holder's renewTime says (here: long ago by any clock), the first sight
        // starts the count.
        assert!(!memory.observe(record("a", 0), start));
        assert!(!memory.observe(record("a", 0), start + Duration::from_secs(14)));
        assert!(memory.observe(record("a", 0), start + Duration::from_secs(15)));
        // A renewal restarts it.
        assert!(!memory.observe(record("a", 20), start + Duration::from_secs(16)));
        assert!(!memory.observe(record("a", 20), start + Duration::from_secs(30)));
        assert!(memory.observe(record("a", 20), start + Duration::from_secs(31)));
    }

    #[test]
    fn a_renew_time_in_the_future_does_not_extend_the_lease() {
        // A holder whose clock runs an hour ahead: still expires after 15 s of no change here.
        let start = Instant::now();
        let mut memory = Memory::default();
        let ahead = Timestamp::now().as_second() + 3600;
        assert!(!memory.observe(record("a", ahead), start));
        assert!(memory.observe(record("a", ahead), start + Duration::from_secs(15)));
    }

    /// An API server that answers the first `answered` requests (no Lease yet, then created) and
    /// never answers after that.
    fn stalling_api(answered: usize) -> (Client, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let call = counter.fetch_add(1, Ordering::SeqCst);
            let method = request.method().clone();
            async move {
                if call >= answered {
                    std::future::pending::<()>().await;
                }
                let (status, body) = if method == http::Method::GET {
                    (
                        404,
                        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
                    )
                } else {
                    (
                        201,
                        r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"l","namespace":"ns","resourceVersion":"1"}}"#,
                    )
                };
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body.as_bytes().to_vec()))
            }
        });
        (Client::new(service, "ns"), calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_whose_renewal_hangs_steps_down_before_the_lease_can_expire() {
        let (client, calls) = stalling_api(2);
        let config = LeaderConfig {
            namespace: "ns".into(),
            lease_name: "l".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
        };
        let (leading, mut watching) = watch::channel(false);
        let (_stop, shutdown) = watch::channel(false);
        let started = Instant::now();
        let election = tokio::spawn(run(client, config, leading, shutdown));
        watching.wait_for(|leading| *leading).await.unwrap();
        let became = started.elapsed();
        // The renewal 2 s later hangs forever: the leader must step down by itself, no later
        // than 13 s (lease duration - renew interval) after its last renewal started.
        watching.wait_for(|leading| !*leading).await.unwrap();
        let led_for = started.elapsed() - became;
        assert!(
            led_for <= Duration::from_secs(13),
            "led for {led_for:?} without renewing"
        );
        assert!(
            led_for >= Duration::from_secs(12),
            "stepped down early: {led_for:?}"
        );
        assert!(calls.load(Ordering::SeqCst) >= 3);
        election.abort();
    }
}
