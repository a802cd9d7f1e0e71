//! The retry budget: retries to a backend are allowed while they stay under a share of its requests over a
//! sliding window, with a floor so a quiet backend can still retry (the scheme Envoy and Linkerd use). It keeps a
//! retry storm from multiplying load on a backend that is already failing.
//!
//! The window is ten buckets of a tenth of its length, each stamped with the bucket period it counts; a stale
//! bucket is reset by whoever first touches it. Atomics only, no allocation: counts are approximate under races
//! (a reset can lose an increment), which a budget tolerates.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const BUCKETS: usize = 10;

pub use crate::config::RetryBudgetConfig;

#[derive(Debug, Default)]
struct Bucket {
    /// The bucket period (milliseconds since the process clock's start divided by the bucket width) counted here.
    period: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

/// Request and retry counts of one backend over the sliding window.
#[derive(Debug, Default)]
pub struct RetryBudget {
    buckets: [Bucket; BUCKETS],
}

/// Why a retry was not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSpent {
    pub requests: u32,
    pub retries: u32,
    pub allowed: u32,
}

impl RetryBudget {
    fn width_ms(cfg: &RetryBudgetConfig) -> u64 {
        (cfg.window.as_millis() as u64 / BUCKETS as u64).max(1)
    }

    /// The current bucket, reset first when it still counts an older period.
    fn bucket(&self, period: u64) -> &Bucket {
        let b = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = b.period.load(Ordering::Acquire);
        if seen != period
            && b.period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
        }
        b
    }

    /// Counts a request (first attempts only; retries are counted by [`RetryBudget::try_retry`]).
    pub fn record_request(&self, cfg: &RetryBudgetConfig) {
        self.record_request_at(cfg, super::clock_ms());
    }

    /// Takes one retry from the budget, or says how it is spent.
    pub fn try_retry(&self, cfg: &RetryBudgetConfig) -> Result<(), BudgetSpent> {
        self.try_retry_at(cfg, super::clock_ms())
    }

    fn record_request_at(&self, cfg: &RetryBudgetConfig, now_ms: u64) {
        let period = now_ms / Self::width_ms(cfg);
        self.bucket(period).requests.fetch_add(1, Ordering::Relaxed);
    }

    fn try_retry_at(&self, cfg: &RetryBudgetConfig, now_ms: u64) -> Result<(), BudgetSpent> {
        let period = now_ms / Self::width_ms(cfg);
        let oldest = period.saturating_sub(BUCKETS as u64 - 1);
        let (mut requests, mut retries) = (0u32, 0u32);
        for b in &self.buckets {
            let p = b.period.load(Ordering::Acquire);
            if (oldest..=period).contains(&p) {
                requests = requests.saturating_add(b.requests.load(Ordering::Relaxed));
                retries = retries.saturating_add(b.retries.load(Ordering::Relaxed));
            }
        }
        let floor = u64::from(cfg.min_per_second) * cfg.window.as_millis() as u64 / 1000;
        let share = u64::from(requests) * u64::from(cfg.percent) / 100;
        let allowed = floor.max(share).min(u64::from(u32::MAX)) as u32;
        if retries >= allowed {
            return Err(BudgetSpent {
                requests,
                retries,
                allowed,
            });
        }
        self.bucket(period).retries.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const CFG: RetryBudgetConfig = RetryBudgetConfig {
        percent: 20,
        min_per_second: 1,
        window: Duration::from_secs(10),
    };

    #[test]
    fn the_floor_allows_retries_without_traffic() {
        let b = RetryBudget::default();
        // 1 per second over 10 s: ten retries, then none.
        for i in 0..10 {
            assert!(b.try_retry_at(&CFG, 5_000 + i).is_ok(), "retry {i}");
        }
        let spent = b.try_retry_at(&CFG, 5_100).unwrap_err();
        assert_eq!((spent.retries, spent.allowed), (10, 10));
    }

    #[test]
    fn retries_are_a_share_of_requests() {
        let b = RetryBudget::default();
        for _ in 0..1000 {
            b.record_request_at(&CFG, 1_000);
        }
        let granted = (0..500).filter(|_| b.try_retry_at(&CFG, 1_500).is_ok()).count();
        assert_eq!(granted, 200, "20 % of 1000 requests");
    }

    #[test]
    fn the_window_slides() {
        let b = RetryBudget::default();
        for _ in 0..100 {
            b.record_request_at(&CFG, 0);
        }
        while b.try_retry_at(&CFG, 500).is_ok() {}
        // Still inside the window: spent.
        assert!(b.try_retry_at(&CFG, 9_900).is_err());
        // Ten seconds later the old bucket has left the window and the floor applies again.
        assert!(b.try_retry_at(&CFG, 10_000).is_ok());
        let spent = b.try_retry_at(&CFG, 10_000);
        assert!(spent.is_ok(), "{spent:?}");
    }
}
