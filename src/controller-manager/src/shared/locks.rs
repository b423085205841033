//! One async mutex per subnet name, shared by the application and Subnet controllers.
//!
//! Every read-plan-write of a subnet's `status.controlledIPPools` and of the pool it concerns
//! happens under the subnet's lock. The subnet status is still written with compare-and-swap (other
//! processes may write it), but inside this process the lock makes the two writes of one change
//! (subnet record, then pool) atomic for every other planner: an address a scale-down removes from
//! a record is never handed to another pool before the shrunken pool is written, and a record the
//! Subnet controller rebuilds never races a pool being created.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

#[derive(Clone, Default)]
pub struct SubnetLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl SubnetLocks {
    /// Waits for the subnet's lock.
    pub async fn lock(&self, subnet: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(subnet.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_subnet_and_subnets_are_independent() {
        let locks = SubnetLocks::default();
        let held = locks.lock("a").await;
        let other =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("b")).await;
        assert!(other.is_ok(), "another subnet is not blocked");
        let same =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a")).await;
        assert!(same.is_err(), "the same subnet waits");
        drop(held);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a"))
                .await
                .is_ok()
        );
    }
}
