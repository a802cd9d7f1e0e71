//! Memory after connection bursts. Each open connection holds buffers and its task (about 22 KiB idle); when
//! thousands close, glibc keeps the freed memory inside its heap and the process stays at its peak size. The
//! process counts its open connections here, and [`return_memory_after_bursts`] hands the freed memory back to
//! the operating system once the count has fallen far below its peak: after a burst, not during steady churn
//! (trimming while connections keep coming would only make the next ones fault their pages in again).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Connections open in this process, over all listeners.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// A connection counted in [`open_connections`] until dropped.
pub struct Counted(());

impl Counted {
    pub fn open() -> Self {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Counted(())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// How far below its peak the connection count must fall before memory is handed back.
pub const BURST: usize = 1000;

/// The peak connection count since the last trim, and whether the count has now fallen far enough below it.
#[derive(Debug, Default)]
pub struct Bursts {
    peak: usize,
}

impl Bursts {
    /// Looks at the current count; true when a burst of at least [`BURST`] connections has ended since the last
    /// trim (the peak then restarts from the current count).
    pub fn ended(&mut self, open: usize) -> bool {
        self.peak = self.peak.max(open);
        if self.peak - open >= BURST {
            self.peak = open;
            return true;
        }
        false
    }
}

/// Runs for the life of the process: every `every`, compare the open connections with their peak; after a
/// burst, trim the heap on the blocking pool.
pub async fn return_memory_after_bursts(every: Duration) {
    let mut bursts = Bursts::default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if bursts.ended(open_connections()) {
            let started = std::time::Instant::now();
            let released = tokio::task::spawn_blocking(portico_heap_trim::trim)
                .await
                .unwrap_or(false);
            tracing::debug!(released, took = ?started.elapsed(), "connection burst over; heap trimmed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_a_large_fall_from_the_peak_not_churn() {
        let mut b = Bursts::default();
        // Steady churn around 64 connections never counts.
        for open in [10, 64, 3, 64, 0, 64] {
            assert!(!b.ended(open));
        }
        // 5,000 open, then closing: it counts once, when the fall reaches BURST.
        assert!(!b.ended(5000));
        assert!(!b.ended(4001));
        assert!(b.ended(4000));
        assert!(!b.ended(3500));
        assert!(b.ended(0));
        assert!(!b.ended(0));
    }
}
