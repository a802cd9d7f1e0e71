//! How the API watches retry: a capped backoff, and an immediate relist after `410 Gone`.
//!
//! kube's `default_backoff()` grows towards 30 s (plus jitter) while the API server is away, and the `410` a
//! restarted API server answers to the old resourceVersion is retried after the next, longer step: changes made
//! around an outage were seen 25-75 s after the API server came back. Here a failed watch waits 200 ms, doubling
//! to at most 1 s (each delay drawn between half and all of the step, so replicas do not retry in lockstep); a
//! `410` relists at once (the watcher has already dropped its resourceVersion), once in a row. Any event resets the
//! delay. At the cap a replica sends one request per second per watch while the API server is down.

use std::time::Duration;

use kube::runtime::watcher;

const FIRST: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(1);

/// The delay before a failed watch is polled again.
#[derive(Debug, Default)]
pub struct RetryDelay {
    step: Duration,
    /// The last failure was a `410` retried at once.
    relisted: bool,
}

impl RetryDelay {
    pub fn new() -> Self {
        Self::default()
    }

    /// An event arrived: the next failure starts over.
    pub fn reset(&mut self) {
        self.step = Duration::ZERO;
        self.relisted = false;
    }

    /// The delay after `e`.
    pub fn after(&mut self, e: &watcher::Error) -> Duration {
        if status_of(e) == Some(410) && !self.relisted {
            self.relisted = true;
            return Duration::ZERO;
        }
        self.relisted = false;
        self.step = if self.step.is_zero() {
            FIRST
        } else {
            (self.step * 2).min(CAP)
        };
        // Between half and all of the step.
        let half = self.step / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in [0, 1) from the clock's nanoseconds (no RNG needed for spreading retries).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

/// The HTTP status an API error carries, when it carries one.
pub fn status_of(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::WatchError(s) => Some(s.code),
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            client_status(e)
        }
        watcher::Error::NoResourceVersion => None,
    }
}

/// The HTTP status of a client error, when the API server answered.
pub fn client_status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A log line's worth: the HTTP status and the API server's message when it answered (`403 Forbidden: events is
/// forbidden: ...`), else the error itself (connection refused, ...).
pub fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code != 0 => {
            let reason = http::StatusCode::from_u16(s.code)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("");
            if s.message.is_empty() {
                format!("{} {reason}", s.code)
            } else {
                format!("{} {reason}: {}", s.code, s.message)
            }
        }
        other => other.to_string(),
    }
}

/// [`describe`] for a watch error.
pub fn describe_watch(e: &watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(c) => format!("listing failed: {}", describe(c)),
        watcher::Error::WatchStartFailed(c) => format!("starting the watch failed: {}", describe(c)),
        watcher::Error::WatchFailed(c) => format!("the watch failed: {}", describe(c)),
        watcher::Error::WatchError(s) => format!("the API server ended the watch: {} {}", s.code, s.message),
        watcher::Error::NoResourceVersion => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> watcher::Error {
        let mut s = kube::core::Status::failure("gone", "Expired");
        s.code = code;
        watcher::Error::WatchError(Box::new(s))
    }

    #[test]
    fn capped_and_immediate_after_410() {
        let mut d = RetryDelay::new();
        let refused = status(503);
        let steps: Vec<Duration> = (0..8).map(|_| d.after(&refused)).collect();
        assert!(steps[0] >= FIRST / 2 && steps[0] <= FIRST, "{steps:?}");
        assert!(steps.iter().all(|s| *s <= CAP), "capped: {steps:?}");
        assert!(steps[7] >= CAP / 2, "grows to the cap: {steps:?}");
        // A 410 relists at once, but not twice in a row.
        assert_eq!(d.after(&status(410)), Duration::ZERO);
        assert!(d.after(&status(410)) > Duration::ZERO);
        d.reset();
        assert_eq!(d.after(&status(410)), Duration::ZERO);
        d.reset();
        assert!(d.after(&refused) <= FIRST);
    }

    #[test]
    fn describes_the_status() {
        let mut s = kube::core::Status::failure("events is forbidden: User cannot create", "Forbidden");
        s.code = 403;
        let e = kube::Error::Api(Box::new(s));
        assert_eq!(describe(&e), "403 Forbidden: events is forbidden: User cannot create");
        assert_eq!(client_status(&e), Some(403));
    }
}
