//! Read deadlines of one upstream HTTP/1.1 connection without a timer per request.
//!
//! The gateway waits on a backend connection in two places: for the response headers after sending a request,
//! and for the next frame of a response body. Each wait has a limit (the response-header timeout, the read
//! timeout). Instead of arming a timer for every wait, the waiting side writes when it started waiting and for
//! how long it may ([`Watch::begin`], two atomic stores), and the connection's own task keeps one timer that
//! fires at most once per limit: when it fires it looks at the wait in progress, and either closes the connection
//! (the wait ran over; [`Watch::expired`] tells the waiting side why its exchange failed) or sleeps until that
//! wait's deadline. A wait with a limit shorter than the timer's next firing wakes the task to re-arm it earlier;
//! with the default limits that never happens, so a request costs no timer registration at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

/// The deadlines of one backend connection, shared by its task and whoever is waiting on it.
#[derive(Debug)]
pub struct Watch {
    base: Instant,
    /// Milliseconds after `base`, plus one, when the current wait began; 0: nobody is waiting.
    waiting: AtomicU64,
    /// How long the current wait may last, in milliseconds.
    limit: AtomicU64,
    /// When (milliseconds after `base`) the connection task's timer fires next.
    armed: AtomicU64,
    /// A wait asked for an earlier firing than `armed`.
    rearm: AtomicBool,
    expired: AtomicBool,
    task: AtomicWaker,
    /// Whoever waits on the connection when it is not the connection's task (the gateway's own HTTP/1.1 client,
    /// [`super::h1`], reads the connection in the request's task): woken when a wait runs over.
    waiter: AtomicWaker,
}

impl Watch {
    /// `check`: how often the connection task's timer fires while nobody waits with a shorter limit (the usual
    /// limit, so that waits with it never need to re-arm the timer).
    pub fn new(check: Duration) -> Self {
        Self {
            base: Instant::now(),
            waiting: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            armed: AtomicU64::new(ms(check)),
            rearm: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            task: AtomicWaker::new(),
            waiter: AtomicWaker::new(),
        }
    }

    fn since_base(&self, at: Instant) -> u64 {
        ms(at.saturating_duration_since(self.base))
    }

    /// The gateway starts waiting on this connection at `now`, for at most `limit`.
    pub fn begin(&self, now: Instant, limit: Duration) {
        let start = self.since_base(now) + 1;
        let limit = ms(limit);
        self.limit.store(limit, Ordering::Relaxed);
        self.waiting.store(start, Ordering::Release);
        if start - 1 + limit < self.armed.load(Ordering::Acquire) {
            self.rearm.store(true, Ordering::Release);
            self.task.wake();
        }
    }

    /// The wait is over (the headers or a frame arrived).
    pub fn end(&self) {
        self.waiting.store(0, Ordering::Release);
    }

    /// `waker` is to be woken when the current wait runs over (for a waiter that polls the connection itself).
    /// Register before looking at [`Watch::expired`], so that an expiry in between is not missed.
    pub fn register_waiter(&self, waker: &std::task::Waker) {
        self.waiter.register(waker);
    }

    /// Whether the connection was closed because a wait on it ran over its limit.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// Runs the connection future `conn` until it ends (`Some`), or until a wait on it runs over its limit
    /// (`None`: `conn` is dropped, which closes the connection and fails the exchange on it).
    pub async fn guard<F: Future>(&self, conn: F, check: Duration) -> Option<F::Output> {
        let conn = std::pin::pin!(conn);
        let timer = std::pin::pin!(tokio::time::sleep_until(self.base + check));
        Guarded {
            watch: self,
            conn,
            timer,
            registered: false,
            check,
        }
        .await
    }

    /// The connection task's timer: ready when the current wait ran over. `registered`: the timer was polled
    /// since it was last armed, so it holds the task's waker and need not be polled again until it has fired.
    fn poll_timer(
        &self,
        mut timer: Pin<&mut Sleep>,
        registered: &mut bool,
        check: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        self.task.register(cx.waker());
        if self.rearm.load(Ordering::Acquire) && self.rearm.swap(false, Ordering::AcqRel) {
            self.arm(timer.as_mut(), Instant::now(), check);
            *registered = false;
        }
        loop {
            if *registered && !timer.is_elapsed() {
                return Poll::Pending;
            }
            if timer.as_mut().poll(cx).is_pending() {
                *registered = true;
                return Poll::Pending;
            }
            *registered = false;
            let now = Instant::now();
            let waiting = self.waiting.load(Ordering::Acquire);
            if waiting != 0 {
                let deadline = waiting - 1 + self.limit.load(Ordering::Relaxed);
                if self.since_base(now) >= deadline {
                    self.expired.store(true, Ordering::Release);
                    self.waiter.wake();
                    return Poll::Ready(());
                }
            }
            self.arm(timer.as_mut(), now, check);
        }
    }

    /// Arms the timer for the current wait's deadline, or for `check` from now (whichever is first).
    fn arm(&self, timer: Pin<&mut Sleep>, now: Instant, check: Duration) {
        let mut at = self.since_base(now) + ms(check);
        let waiting = self.waiting.load(Ordering::Acquire);
        if waiting != 0 {
            at = at.min(waiting - 1 + self.limit.load(Ordering::Relaxed));
        }
        self.armed.store(at, Ordering::Release);
        timer.reset(self.base + Duration::from_millis(at));
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4).min(u64::MAX / 4)
}

struct Guarded<'a, F> {
    watch: &'a Watch,
    conn: Pin<&'a mut F>,
    timer: Pin<&'a mut Sleep>,
    registered: bool,
    check: Duration,
}

impl<F: Future> Future for Guarded<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match this
            .watch
            .poll_timer(this.timer.as_mut(), &mut this.registered, this.check, cx)
        {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_over_its_limit_ends_the_connection() {
        let watch = std::sync::Arc::new(Watch::new(Duration::from_secs(60)));
        let w = watch.clone();
        let task = tokio::spawn(async move { w.guard(std::future::pending::<()>(), Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A short limit re-arms the timer earlier than its 60 s check.
        watch.begin(Instant::now(), Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!task.is_finished());
        assert!(!watch.expired());
        let out = task.await.unwrap();
        assert!(out.is_none());
        assert!(watch.expired());
        assert!(Instant::now() - watch.base >= Duration::from_millis(1500));
        assert!(Instant::now() - watch.base < Duration::from_millis(1600));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_that_end_in_time_and_idle_periods_do_not() {
        let watch = std::sync::Arc::new(Watch::new(Duration::from_secs(2)));
        let w = watch.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move { w.guard(rx, Duration::from_secs(2)).await });
        // Many waits with the usual limit, each ending before it; idle for several check periods in between.
        for _ in 0..5 {
            watch.begin(Instant::now(), Duration::from_secs(2));
            tokio::time::sleep(Duration::from_millis(1900)).await;
            watch.end();
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        assert!(!task.is_finished());
        // A wait with the usual limit that runs over it.
        watch.begin(Instant::now(), Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(task.is_finished());
        assert!(watch.expired());
        drop(tx);
        assert!(task.await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_ending_first_is_its_own_outcome() {
        let watch = Watch::new(Duration::from_secs(1));
        let out = watch.guard(async { 7 }, Duration::from_secs(1)).await;
        assert_eq!(out, Some(7));
        assert!(!watch.expired());
    }
}
