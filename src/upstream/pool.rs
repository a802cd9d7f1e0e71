//! Keep-alive HTTP/1.1 connections to one endpoint, kept on the endpoint itself: a checkout is one short
//! uncontended lock and a scan of that endpoint's connections, with no hashing of pool keys and no task per
//! request. Connections survive table swaps with their endpoint and close when it leaves the table.
//!
//! A connection goes back on the list as soon as its response headers arrive, while its body may still be
//! streaming; hyper reports it ready again (`SendRequest::is_ready`) only once that exchange has finished, so a
//! checkout takes the newest connection that is ready and leaves busy ones where they are.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use super::client::UpstreamBody;
use super::watch::Watch;

/// Connections kept per endpoint (busy and idle together); more are closed after their exchange.
const MAX_PER_ENDPOINT: usize = 256;

/// A connection: its request sender and the read deadlines its task enforces.
pub type Pooled = (SendRequest<UpstreamBody>, Arc<Watch>);

struct Conn {
    sender: SendRequest<UpstreamBody>,
    watch: Arc<Watch>,
    /// When the connection last went back on the list.
    since: Instant,
}

/// An endpoint's HTTP/1.1 connections.
#[derive(Default)]
pub struct Conns {
    list: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns").field("len", &self.len()).finish()
    }
}

impl Conns {
    /// The newest connection ready for a request. Closed connections, and ready ones idle for longer than
    /// `idle_timeout`, are dropped on the way.
    pub fn take(&self, now: Instant, idle_timeout: Duration) -> Option<Pooled> {
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let c = &list[i];
            if c.sender.is_closed() {
                list.swap_remove(i);
            } else if c.sender.is_ready() {
                // `swap_remove` moves the last entry here; it was scanned already (the scan runs downwards).
                let c = list.swap_remove(i);
                if now.saturating_duration_since(c.since) <= idle_timeout {
                    return Some((c.sender, c.watch));
                }
            }
        }
        None
    }

    /// Puts a connection (possibly still receiving its response body) back on the list.
    pub fn put(&self, (sender, watch): Pooled, now: Instant) {
        if sender.is_closed() {
            return;
        }
        let mut list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        if list.len() < MAX_PER_ENDPOINT {
            list.push(Conn {
                sender,
                watch,
                since: now,
            });
        }
    }

    /// Connections on the list, busy or idle.
    pub fn len(&self) -> usize {
        self.list.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http::Request;
    use http_body_util::{BodyExt, Either, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    use super::super::body::ResponseBody;
    use super::super::client::UpstreamClient;
    use super::super::Endpoint;
    use crate::config::UpstreamConfig;

    /// A hand-written HTTP/1.1 origin that counts its connections. `/slow` sends half its body and waits for
    /// `release`; `/close` answers with `Connection: close` and closes.
    struct Origin {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        release: Arc<Notify>,
    }

    async fn origin() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let (count, notify) = (accepted.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let notify = notify.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 1024];
                        let Ok(n) = s.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        match path.as_str() {
                            "/slow" => {
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab").await;
                                notify.notified().await;
                                let _ = s.write_all(b"cd").await;
                            }
                            "/close" => {
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                                    .await;
                                return;
                            }
                            _ => {
                                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                            }
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            accepted,
            release,
        }
    }

    fn get(path: &'static str) -> Request<super::UpstreamBody> {
        Request::builder()
            .uri(path)
            .header("host", "origin")
            .body(Either::Right(Empty::<Bytes>::new()))
            .unwrap()
    }

    /// A GET on one of `ep`'s HTTP/1.1 connections.
    async fn exchange(c: &UpstreamClient, ep: &Endpoint, path: &'static str) -> http::Response<ResponseBody> {
        c.send(ep, get(path), None, crate::upstream::client::Via::Http1)
            .await
            .unwrap()
            .map(|b| ResponseBody::new(b, None, None))
    }

    async fn body(resp: http::Response<ResponseBody>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    fn client(idle: std::time::Duration) -> UpstreamClient {
        let cfg = UpstreamConfig {
            idle_timeout: idle,
            ..Default::default()
        };
        UpstreamClient::new(&cfg)
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let o = origin().await;
        let ep = Endpoint::new(0, o.addr);
        let c = client(std::time::Duration::from_secs(60));
        for _ in 0..5 {
            let resp = exchange(&c, &ep, "/").await;
            assert_eq!(body(resp).await, "ok");
        }
        assert_eq!(o.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(ep.conns.len(), 1);
    }

    #[tokio::test]
    async fn a_connection_still_streaming_is_not_taken_and_is_reused_after() {
        let o = origin().await;
        let ep = Endpoint::new(0, o.addr);
        let c = client(std::time::Duration::from_secs(60));
        let slow = exchange(&c, &ep, "/slow").await;
        // The slow body is still open: the next request needs a second connection.
        let resp = exchange(&c, &ep, "/").await;
        assert_eq!(body(resp).await, "ok");
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
        o.release.notify_one();
        assert_eq!(body(slow).await, "abcd");
        // Both are reusable now; no third connection.
        for _ in 0..4 {
            let resp = exchange(&c, &ep, "/").await;
            assert_eq!(body(resp).await, "ok");
        }
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn closed_and_idle_expired_connections_are_replaced() {
        let o = origin().await;
        let ep = Endpoint::new(0, o.addr);
        let c = client(std::time::Duration::from_millis(50));
        let resp = exchange(&c, &ep, "/close").await;
        assert_eq!(body(resp).await, "ok");
        // The origin closed it: the next request connects again and succeeds.
        let resp = exchange(&c, &ep, "/").await;
        assert_eq!(body(resp).await, "ok");
        assert_eq!(o.accepted.load(Ordering::SeqCst), 2);
        // Idle past the timeout: not reused.
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        let resp = exchange(&c, &ep, "/").await;
        assert_eq!(body(resp).await, "ok");
        assert_eq!(o.accepted.load(Ordering::SeqCst), 3);
    }
}
