//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Controllers and the garbage collector run only on the replica that holds the Lease; webhooks
//! and metrics serve on every replica. The protocol is client-go's: the holder renews the Lease
//! every `renew_interval`; a candidate takes it over once `renewTime + leaseDurationSeconds` has
//! passed. Every write carries the resourceVersion it read, so two candidates can never both win
//! the same term. A leader that cannot renew within the lease duration steps down on its own
//! before anyone else can take over, and a leader that shuts down releases the Lease so the next
//! replica takes over at once instead of waiting for expiry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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
}

impl LeaderError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            LeaderError::Read { .. } => "lease_read",
            LeaderError::Write { .. } => "lease_write",
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

/// Runs the election until `shutdown` flips to true, publishing whether this replica leads.
pub async fn run(
    client: Client,
    config: LeaderConfig,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_renewal: Option<Instant> = None;
    let mut last_holder: Option<String> = None;
    loop {
        match try_acquire_or_renew(&leases, &config).await {
            Ok(Attempt::Leading) => {
                if !*leading.borrow() {
                    tracing::info!(identity = %config.identity, lease = %config.lease_name, "became leader");
                }
                last_renewal = Some(Instant::now());
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
                last_renewal = None;
                leading.send_replace(false);
            }
            Err(error) => {
                tracing::warn!(%error, category = error.metric_label(), "leader election attempt failed");
                // Step down before the lease can expire for the others, so two leaders never overlap.
                let deadline = config.lease_duration.saturating_sub(config.renew_interval);
                if last_renewal.is_some_and(|at| at.elapsed() >= deadline) && *leading.borrow() {
                    tracing::warn!("could not renew the lease in time; stepping down");
                    leading.send_replace(false);
                    last_renewal = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.renew_interval) => {}
            _ = shutdown.changed() => {
                if *leading.borrow() {
                    leading.send_replace(false);
                    if let Err(error) = release(&leases, &config).await {
                        tracing::warn!(%error, "releasing the lease on shutdown failed");
                    } else {
                        tracing::info!("released the leader lease");
                    }
                }
                return;
            }
        }
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
    if !held_by_us && !holder.is_empty() && !expired(spec) {
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

fn expired(spec: &LeaseSpec) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match renewed.checked_add(duration) {
        Ok(expiry) => expiry < Timestamp::now(),
        Err(_) => false,
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
    use super::*;

    #[test]
    fn lease_without_renew_time_is_expired() {
        assert!(expired(&LeaseSpec::default()));
    }

    #[test]
    fn freshly_renewed_lease_is_not_expired_and_old_one_is() {
        let fresh = LeaseSpec {
            renew_time: Some(now()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(!expired(&fresh));
        let old = LeaseSpec {
            renew_time: Some(MicroTime(
                Timestamp::now()
                    .checked_sub(SignedDuration::from_secs(60))
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            )),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(expired(&old));
    }
}
