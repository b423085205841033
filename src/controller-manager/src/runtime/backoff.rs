//! Per-object exponential backoff for `error_policy`: each object that keeps failing waits
//! longer (base × 2^failures, capped, with jitter) without slowing down healthy objects, and its
//! count resets on the first success.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;

pub struct ErrorBackoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records one more failure of `key` and returns how long to wait before retrying it.
    pub fn next_delay(&self, key: &str) -> Duration {
        let attempt = {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let count = failures.entry(key.to_owned()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        let exponent = attempt.saturating_sub(1).min(20);
        let delay = self.base.saturating_mul(1u32 << exponent).min(self.max);
        // ±10% jitter so objects that failed together do not retry in lockstep.
        let jitter = rand::rng().random_range(0.9..1.1);
        delay.mul_f64(jitter).min(self.max)
    }

    /// Forgets the failures of `key` after it reconciled successfully.
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_per_failure_up_to_the_cap_and_resets() {
        let backoff = ErrorBackoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = backoff.next_delay("a");
        let second = backoff.next_delay("a");
        assert!(first >= Duration::from_millis(90) && first <= Duration::from_millis(110));
        assert!(second >= Duration::from_millis(180) && second <= Duration::from_millis(220));
        for _ in 0..10 {
            assert!(backoff.next_delay("a") <= Duration::from_secs(1));
        }
        let other = backoff.next_delay("b");
        assert!(
            other <= Duration::from_millis(110),
            "other objects are not slowed down"
        );
        backoff.reset("a");
        assert!(backoff.next_delay("a") <= Duration::from_millis(110));
    }
}
