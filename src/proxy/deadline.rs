//! A request's deadlines from its route's Gateway API `timeouts`: `request`, for the whole exchange from the
//! request's head received to the response body's end, and `backendRequest`, for each try from its send to its
//! response body's end, never beyond the whole exchange's.
//!
//! Routes without them pay an `Option` check: no clock read, no timer. With them, a try's wait for the response
//! headers (connect included) runs in [`Bounded`], one boxed timer per try, and the response body gets the try's
//! deadline ([`crate::upstream::body::ResponseBody::until`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::model::route::SendPolicy;

/// The deadlines of one request (`Copy`: two words and a flag or so).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Deadlines {
    /// The whole exchange's end (`timeouts.request`).
    total: Option<Instant>,
    /// Each try's length (`timeouts.backendRequest`).
    per_try: Option<Duration>,
}

impl Deadlines {
    /// The deadlines `send` asks for, the whole exchange's counted from `received` (the request's head).
    pub(super) fn new(send: &SendPolicy, received: impl FnOnce() -> Instant) -> Self {
        Self {
            total: send.request_timeout.map(|t| received() + t),
            per_try: send.try_timeout,
        }
    }

    /// Whether the request has any deadline.
    pub(super) fn any(&self) -> bool {
        self.total.is_some() || self.per_try.is_some()
    }

    /// The deadline of a try sent at `sent_at` (`None` without deadlines).
    pub(super) fn for_try(&self, sent_at: impl FnOnce() -> Instant) -> Option<Instant> {
        match (self.total, self.per_try) {
            (total, None) => total,
            (None, Some(t)) => Some(sent_at() + t),
            (Some(total), Some(t)) => Some(total.min(sent_at() + t)),
        }
    }

    /// Whether the whole exchange's deadline has passed (no other try then).
    pub(super) fn passed(&self) -> bool {
        self.total.is_some_and(|d| Instant::now() >= d)
    }
}

/// The deadline passed before the future was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Elapsed;

/// A future pinned in its caller's state, bounded by a deadline or not bounded at all (`None`: no timer). It
/// borrows the future rather than owning it: the send phase's upstream future is a few hundred bytes, and each
/// move of it is a `memcpy` per request (two more moves measured +366 instructions per request).
pub(super) struct Bounded<'f, F> {
    fut: Pin<&'f mut F>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<'f, F> Bounded<'f, F> {
    pub(super) fn new(fut: Pin<&'f mut F>, at: Option<Instant>) -> Self {
        Self {
            fut,
            sleep: at.map(|at| Box::pin(tokio::time::sleep_until(at))),
        }
    }
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(out) = this.fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match &mut this.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(request: Option<u64>, per_try: Option<u64>) -> SendPolicy {
        SendPolicy {
            upstream_host: None,
            pass_host: true,
            upstream_h2c: false,
            upstream_timeout: None,
            request_timeout: request.map(Duration::from_millis),
            try_timeout: per_try.map(Duration::from_millis),
            connect_timeout: None,
            next_upstream: Default::default(),
            tries: 1,
            retry_window: None,
            affinity_cookie: None,
            affinity_attributes: "".into(),
            affinity_expires: None,
            affinity_change_on_failure: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_ends_at_the_earlier_of_its_own_and_the_whole_deadline() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let none = Deadlines::new(&policy(None, None), || unreachable!("no clock read without deadlines"));
        assert!(!none.any());
        assert_eq!(none.for_try(|| unreachable!()), None);
        assert!(!none.passed());

        let total = Deadlines::new(&policy(Some(1000), None), || t0);
        assert_eq!(total.for_try(|| t0 + ms(900)), Some(t0 + ms(1000)));

        let per_try = Deadlines::new(&policy(None, Some(300)), || unreachable!());
        assert_eq!(per_try.for_try(|| t0 + ms(500)), Some(t0 + ms(800)));

        let both = Deadlines::new(&policy(Some(1000), Some(300)), || t0);
        assert_eq!(both.for_try(|| t0), Some(t0 + ms(300)), "the first try: its own");
        assert_eq!(
            both.for_try(|| t0 + ms(900)),
            Some(t0 + ms(1000)),
            "a late try: the whole's"
        );
        assert!(!both.passed());
        tokio::time::advance(ms(1000)).await;
        assert!(both.passed());
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_futures_end_at_their_deadline() {
        let slow = tokio::time::sleep(Duration::from_secs(10));
        let at = Instant::now() + Duration::from_secs(1);
        let started = Instant::now();
        assert_eq!(Bounded::new(std::pin::pin!(slow), Some(at)).await, Err(Elapsed));
        assert_eq!(Instant::now() - started, Duration::from_secs(1));
        // Ready first: its output; no deadline: no timer, the future's own time.
        assert_eq!(Bounded::new(std::pin::pin!(async { 7 }), Some(at)).await, Ok(7));
        let started = Instant::now();
        assert_eq!(
            Bounded::new(std::pin::pin!(tokio::time::sleep(Duration::from_secs(10))), None).await,
            Ok(())
        );
        assert_eq!(Instant::now() - started, Duration::from_secs(10));
    }
}
