//! Bodies on their way through the gateway, each with an idle timeout:
//! - [`ResponseBody`]: the backend's response, streamed to the client. It carries the request's in-flight guard,
//!   so least-request balancing sees a request until its body ended, failed or was dropped by the client, and it
//!   aborts the stream when the backend stalls longer than the read timeout between two frames. Its trailers
//!   lose the fields that may not be trailers (RFC 9110 section 6.5.1), whatever protocol they go out on.
//! - [`RequestBody`]: the client's request body, streamed to the backend. It fails with [`RequestBodyTimeout`]
//!   when the client stalls longer than the body-read timeout between two frames. It may copy its data frames
//!   to `RequestMirror` backends ([`Tee`]), whose requests read them as a [`RequestBody::mirror`].
//! - A route's deadline (Gateway API `timeouts`): [`ResponseBody::until`] ends the response body with
//!   [`ResponseDeadline`] when it passes; [`BodyProgress`] tells the send phase whether the gateway was waiting on
//!   the client's body when it passed.
//!
//! The response body's read timeout is kept by the HTTP/1.1 connection's own task ([`Watch`]); other bodies arm
//! a timer of their own, and only while the inner body is pending; a frame costs one clock read.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::watch::Watch;
use super::InFlight;

/// The backend sent nothing for longer than the read timeout in the middle of a response body.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("upstream response body idle for longer than the read timeout")]
pub struct ResponseBodyTimeout;

/// The route's deadline (Gateway API `timeouts.request` or `timeouts.backendRequest`) passed before the response
/// body ended.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("upstream response body not complete by the route's deadline")]
pub struct ResponseDeadline;

/// A `RequestMirror` copy of a request body was abandoned: its mirror fell behind (its channel was full), or the
/// client's body failed. The mirror's request is aborted, never sent as a short body that looks complete.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("mirrored request body abandoned")]
pub struct MirrorAbandoned;

/// The client sent nothing for longer than the body-read timeout in the middle of a request body.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body idle for longer than the body-read timeout")]
pub struct RequestBodyTimeout;

/// The client's request body failed on the client's side: it broke its framing (a malformed chunk), or the
/// client closed or reset before the end. Never the endpoint's fault.
#[derive(Debug, thiserror::Error)]
#[error("request body failed on the client's side: {0}")]
pub struct ClientBodyError(#[source] pub BoxError);

/// An idle deadline that moves with activity: `touch` records a frame, `poll_expired` reports whether `idle` has
/// passed since the last one.
struct Idle {
    idle: Duration,
    last: Instant,
}

impl Idle {
    fn new(idle: Duration) -> Self {
        Self {
            idle,
            last: Instant::now(),
        }
    }

    fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// Polls the timer (arming it as needed); ready when the body has been idle for too long, or `cap` (a fixed
    /// deadline) has passed.
    fn poll_expired(&mut self, cap: Option<Instant>, mut sleep: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let deadline = cap.map_or(self.last + self.idle, |cap| cap.min(self.last + self.idle));
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            ready!(sleep.as_mut().poll(cx));
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
        }
    }
}

/// How a response body's read timeout is enforced.
enum Deadline {
    /// HTTP/1.1 on an endpoint's own connection: that connection's task enforces it ([`Watch`]); the body only
    /// says when it starts and stops waiting.
    Conn {
        watch: Arc<Watch>,
        limit: Duration,
        waiting: bool,
    },
    /// Other connections (h2c, TLS): a timer of the body's own, allocated the first time the backend makes it
    /// wait.
    Timer {
        idle: Idle,
        sleep: Option<Pin<Box<Sleep>>>,
    },
    None,
}

impl Deadline {
    /// A frame arrived.
    fn progress(&mut self) {
        match self {
            Deadline::Conn { watch, waiting, .. } => {
                if *waiting {
                    watch.end();
                    *waiting = false;
                }
            }
            Deadline::Timer { idle, .. } => idle.touch(),
            Deadline::None => {}
        }
    }

    /// The backend is pending: ready when it has been for longer than the read timeout.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Deadline::Conn { watch, limit, waiting } => {
                if !*waiting {
                    watch.begin(Instant::now(), *limit);
                    *waiting = true;
                }
                Poll::Pending
            }
            Deadline::Timer { idle, sleep } => {
                let deadline = idle.last + idle.idle;
                let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                idle.poll_expired(None, sleep.as_mut(), cx)
            }
            Deadline::None => Poll::Pending,
        }
    }

    /// Whether the body failed because the connection's task closed it for running over the read timeout.
    fn expired(&self) -> bool {
        matches!(self, Deadline::Conn { watch, .. } if watch.expired())
    }

    fn stop(&mut self) {
        if let Deadline::Conn { watch, waiting, .. } = self {
            if *waiting {
                watch.end();
                *waiting = false;
            }
        }
    }
}

/// A response body as the upstream client received it.
pub enum Received {
    /// Through hyper's client; `watch`: the HTTP/1.1 connection's deadlines.
    Hyper { body: Incoming, watch: Option<Arc<Watch>> },
    /// Through the gateway's own HTTP/1.1 client, which keeps its read timeout itself.
    Own(super::h1::Body),
}

impl Received {
    pub fn hyper(body: Incoming) -> Self {
        Received::Hyper { body, watch: None }
    }
}

/// What a [`ResponseBody`] reads from.
enum Inner {
    Hyper(Incoming),
    Own(super::h1::Body),
}

impl Inner {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Inner::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Inner::Own(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inner::Hyper(b) => b.is_end_stream(),
            Inner::Own(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inner::Hyper(b) => b.size_hint(),
            Inner::Own(b) => b.size_hint(),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The backend's response body with the request's in-flight guard and a read timeout.
pub struct ResponseBody {
    inner: Option<Inner>,
    guard: Option<InFlight>,
    deadline: Deadline,
    /// Anything else to release when the exchange ends (a rate limit's count of requests in flight).
    hold: Option<Box<dyn Send + Sync>>,
    /// The route's deadline for the whole body ([`ResponseBody::until`]); `None` for most routes.
    until: Option<Pin<Box<Sleep>>>,
}

impl ResponseBody {
    /// `read_timeout`: longest wait between two frames (`None`: no limit). An HTTP/1.1 connection's deadlines
    /// enforce it (hyper's client: its watch; the own client: itself), other bodies a timer of their own.
    pub fn new(received: Received, guard: Option<InFlight>, read_timeout: Option<Duration>) -> Self {
        let (inner, watch) = match received {
            Received::Hyper { body, watch } => (Inner::Hyper(body), watch),
            Received::Own(mut body) => {
                body.set_read_timeout(read_timeout);
                return Self {
                    inner: Some(Inner::Own(body)),
                    guard,
                    deadline: Deadline::None,
                    hold: None,
                    until: None,
                };
            }
        };
        let deadline = match (read_timeout, watch) {
            (None, _) => Deadline::None,
            (Some(limit), Some(watch)) => Deadline::Conn {
                watch,
                limit,
                waiting: false,
            },
            (Some(idle), None) => Deadline::Timer {
                idle: Idle::new(idle),
                sleep: None,
            },
        };
        Self {
            inner: Some(inner),
            guard,
            deadline,
            hold: None,
            until: None,
        }
    }

    /// Ends the body with [`ResponseDeadline`] if it has not ended by `at`: the client sees a cut stream (an
    /// error, not a short body that looks complete) and the backend connection is closed, not reused. One timer,
    /// allocated here: only routes with a deadline call this.
    pub fn until(&mut self, at: Instant) {
        if self.inner.as_ref().is_some_and(|i| !i.is_end_stream()) {
            self.until = Some(Box::pin(tokio::time::sleep_until(at)));
        }
    }

    /// Keeps `hold` until the exchange ends (as the in-flight guard).
    pub fn hold(&mut self, hold: Box<dyn Send + Sync>) {
        if self.inner.is_some() {
            self.hold = Some(hold);
        }
    }

    /// Ends the exchange: the in-flight count drops and the backend connection is released (closed if the
    /// body was not complete).
    fn finish(&mut self) {
        self.deadline.stop();
        self.inner = None;
        self.guard = None;
        self.hold = None;
        self.until = None;
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.inner.is_none() {
            return Poll::Ready(None);
        }
        if let Some(until) = this.until.as_mut() {
            if until.as_mut().poll(cx).is_ready() {
                this.finish();
                return Poll::Ready(Some(Err(ResponseDeadline.into())));
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.deadline.progress();
                if frame.is_trailers() {
                    this.finish();
                    // Whatever client and protocol it goes to: no field that may not be a trailer.
                    return Poll::Ready(Some(Ok(match frame.into_trailers() {
                        Ok(mut trailers) => {
                            crate::http1::framing::retain_trailers(&mut trailers);
                            Frame::trailers(trailers)
                        }
                        Err(frame) => frame,
                    })));
                }
                if inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let timed_out = this.deadline.expired();
                this.finish();
                Poll::Ready(Some(Err(if timed_out { ResponseBodyTimeout.into() } else { e })))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.deadline.poll_pending(cx));
                this.finish();
                Poll::Ready(Some(Err(ResponseBodyTimeout.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Inner::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Inner::size_hint)
    }
}

/// What the client sends upstream: its body with a size limit.
type Limited = http_body_util::Limited<Incoming>;

/// Frames a [`Tee`] keeps for each mirror before giving up on it: a mirror this far behind the main backend is
/// abandoned, so a request's memory for its mirrors stays within `MIRROR_FRAMES` frames per mirror (each at most
/// one read of the client's connection: the server's 64 KiB read buffer on HTTP/1.1, a 16 KiB DATA frame on
/// HTTP/2).
pub const MIRROR_FRAMES: usize = 4;

/// Where a request body stands, shared between its [`RequestBody`] and the send phase of a route with a deadline:
/// whether the gateway was waiting on the client for more of it (the client is slow, not the backend).
#[derive(Debug, Clone, Default)]
pub struct BodyProgress(Arc<AtomicU8>);

const SENDING: u8 = 0;
const WAITING_ON_CLIENT: u8 = 1;
const DONE: u8 = 2;

impl BodyProgress {
    /// The body's last read found nothing from the client, and it has not ended.
    pub fn waiting_on_client(&self) -> bool {
        self.0.load(Ordering::Relaxed) == WAITING_ON_CLIENT
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Relaxed);
    }
}

/// The `RequestMirror` copies of a request body: one bounded channel per mirror, fed a refcounted clone of each
/// data frame as the main request's body reads it. `None` in a channel marks the body's clean end; a channel
/// whose sender goes away without it was abandoned ([`MirrorAbandoned`]).
#[derive(Debug, Default)]
pub struct Tee {
    mirrors: Vec<mpsc::Sender<Option<Bytes>>>,
}

impl Tee {
    /// A new mirror's channel, read by the body [`RequestBody::mirror`] makes of it.
    pub fn add(&mut self) -> mpsc::Receiver<Option<Bytes>> {
        // One slot more than the frames kept, so the end always fits.
        let (tx, rx) = mpsc::channel(MIRROR_FRAMES + 1);
        self.mirrors.push(tx);
        rx
    }

    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty()
    }

    /// A data frame for every mirror; a mirror with no room left (or gone) is abandoned.
    fn data(&mut self, data: &Bytes) {
        self.mirrors.retain(|tx| {
            // The last slot is kept for the end: a mirror needing it for data is too far behind.
            tx.capacity() > 1 && tx.try_send(Some(data.clone())).is_ok()
        });
    }

    /// The body ended cleanly: every mirror gets its end (the slot kept for it).
    fn end(&mut self) {
        for tx in self.mirrors.drain(..) {
            let _ = tx.try_send(None);
        }
    }

    /// The body failed: every mirror is abandoned.
    fn abandon(&mut self) {
        self.mirrors.clear();
    }
}

/// What a [`RequestBody`] reads: the client's body, or a mirror's copy of one.
enum Source {
    Client(Limited),
    Mirror {
        rx: mpsc::Receiver<Option<Bytes>>,
        len: Option<u64>,
        ended: bool,
    },
}

/// A request body sent upstream: the client's, with a body-read timeout, or a `RequestMirror`'s copy of one.
/// `Unpin` (the upstream client needs that): the timer is boxed, and only allocated the first time the client
/// makes the gateway wait.
pub struct RequestBody {
    source: Source,
    idle: Idle,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Shared with the send phase of a route with a deadline.
    progress: Option<BodyProgress>,
    /// That deadline: the client must have sent the whole body by then.
    until: Option<Instant>,
    /// The mirrors' copies (empty, without allocation, for routes without mirrors).
    tee: Tee,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: usize, idle: Duration) -> Self {
        Self {
            source: Source::Client(http_body_util::Limited::new(inner, limit)),
            idle: Idle::new(idle),
            sleep: None,
            progress: None,
            until: None,
            tee: Tee::default(),
        }
    }

    /// A mirror's copy of a client's body, read from its [`Tee`] channel; `len`: the client's Content-Length.
    /// Fails with [`MirrorAbandoned`] when the tee gave up on it.
    pub fn mirror(rx: mpsc::Receiver<Option<Bytes>>, len: Option<u64>) -> Self {
        Self {
            source: Source::Mirror { rx, len, ended: false },
            // Unused: a mirror's copy waits as long as the client's body does.
            idle: Idle::new(Duration::ZERO),
            sleep: None,
            progress: None,
            until: None,
            tee: Tee::default(),
        }
    }

    /// Reports where the body stands to `progress`, and fails with [`RequestBodyTimeout`] if the gateway is still
    /// waiting on the client for it at `until` (a route's deadline: the client is too slow).
    pub fn report(&mut self, progress: BodyProgress, until: Option<Instant>) {
        self.progress = Some(progress);
        self.until = until;
    }

    /// Copies the body's data frames to the mirrors of `tee`.
    pub fn tee(&mut self, tee: Tee) {
        self.tee = tee;
    }

    fn report_state(&self, state: u8) {
        if let Some(p) = &self.progress {
            p.set(state);
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // Dropped before its end (the main request failed or was cancelled): the mirrors are abandoned.
        self.tee.abandon();
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let inner = match &mut this.source {
            Source::Client(inner) => inner,
            Source::Mirror { rx, ended, .. } => {
                if *ended {
                    return Poll::Ready(None);
                }
                return match ready!(rx.poll_recv(cx)) {
                    Some(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
                    Some(None) => {
                        *ended = true;
                        Poll::Ready(None)
                    }
                    None => Poll::Ready(Some(Err(MirrorAbandoned.into()))),
                };
            }
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.touch();
                let end = inner.is_end_stream();
                if !this.tee.is_empty() {
                    if let Some(data) = frame.data_ref() {
                        this.tee.data(data);
                    }
                    if end {
                        this.tee.end();
                    }
                }
                this.report_state(if end { DONE } else { SENDING });
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                this.report_state(WAITING_ON_CLIENT);
                let deadline = this.idle.last + this.idle.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                ready!(this.idle.poll_expired(this.until, sleep.as_mut(), cx));
                this.tee.abandon();
                Poll::Ready(Some(Err(RequestBodyTimeout.into())))
            }
            Poll::Ready(None) => {
                this.tee.end();
                this.report_state(DONE);
                Poll::Ready(None)
            }
            // Over the size limit: kept as it is (413). Anything else the client's connection reported.
            Poll::Ready(Some(Err(e))) => {
                this.tee.abandon();
                this.report_state(DONE);
                if e.is::<http_body_util::LengthLimitError>() {
                    Poll::Ready(Some(Err(e)))
                } else {
                    Poll::Ready(Some(Err(ClientBodyError(e).into())))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Client(inner) => inner.is_end_stream(),
            Source::Mirror { ended, .. } => *ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Client(inner) => inner.size_hint(),
            Source::Mirror { len: Some(n), .. } => SizeHint::with_exact(*n),
            Source::Mirror { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// The frames of a mirror's body until its end or error: the data, and whether it ended cleanly.
    async fn read_all(mut body: RequestBody) -> (Vec<u8>, bool) {
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => data.extend_from_slice(f.data_ref().unwrap()),
                Err(e) => {
                    assert!(e.is::<MirrorAbandoned>(), "{e}");
                    return (data, false);
                }
            }
        }
        (data, true)
    }

    #[tokio::test]
    async fn a_mirror_gets_every_frame_then_its_end() {
        let mut tee = Tee::default();
        let body = RequestBody::mirror(tee.add(), Some(11));
        assert_eq!(body.size_hint().exact(), Some(11), "the client's length");
        let reader = tokio::spawn(read_all(body));
        for piece in [&b"hello"[..], b" ", b"world"] {
            // The reader keeps up: a frame at a time.
            while tee.mirrors[0].capacity() <= MIRROR_FRAMES {
                tokio::task::yield_now().await;
            }
            tee.data(&Bytes::copy_from_slice(piece));
        }
        tee.end();
        assert!(tee.is_empty());
        assert_eq!(reader.await.unwrap(), (b"hello world".to_vec(), true));
    }

    #[tokio::test]
    async fn a_mirror_too_far_behind_is_abandoned_and_the_others_go_on() {
        let mut tee = Tee::default();
        let (slow, mut fast) = (tee.add(), tee.add());
        let frame = Bytes::from_static(b"frame");
        for i in 0..MIRROR_FRAMES {
            tee.data(&frame);
            // `fast` reads each frame as it comes.
            assert_eq!(fast.try_recv().unwrap(), Some(frame.clone()), "frame {i}");
        }
        assert_eq!(tee.mirrors.len(), 2, "{MIRROR_FRAMES} frames behind: still kept");
        tee.data(&frame);
        assert_eq!(tee.mirrors.len(), 1, "one more: the slow mirror is dropped");
        tee.end();
        // The slow mirror's body: what it had, then an error, never a clean end.
        let (data, clean) = read_all(RequestBody::mirror(slow, None)).await;
        assert_eq!((data.len(), clean), (MIRROR_FRAMES * frame.len(), false));
        // The fast one: the fifth frame, then its clean end.
        assert_eq!(fast.try_recv().unwrap(), Some(frame));
        assert_eq!(fast.try_recv().unwrap(), None);
    }

    #[tokio::test]
    async fn a_dropped_tee_abandons_its_mirrors() {
        let mut tee = Tee::default();
        let body = RequestBody::mirror(tee.add(), Some(100));
        tee.data(&Bytes::from_static(b"part"));
        drop(tee);
        assert_eq!(read_all(body).await, (b"part".to_vec(), false));
    }
}
