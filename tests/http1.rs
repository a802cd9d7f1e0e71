//! The gateway's own HTTP/1.1 server side on real sockets: pipelined requests, response framing (length, chunked,
//! trailers, HEAD, `Connection: close`), and the hand-over to hyper's server for the requests it leaves to it
//! (bodies, HTTP/1.0, malformed heads) on the same connection.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One response as a client reads it.
#[derive(Debug)]
struct Raw {
    /// Status line and fields, lower-cased.
    head: String,
    body: Vec<u8>,
    /// Trailer fields of a chunked body, lower-cased.
    trailers: String,
}

impl Raw {
    fn status(&self) -> u16 {
        raw_status(&self.head)
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .skip(1)
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    }
}

/// Reads until `buf` holds `upto` bytes; false if the peer closed first.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, upto: usize) -> bool {
    while buf.len() < upto {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
    true
}

/// Reads up to and including the next CRLF at or after `at`; the line without it.
async fn line(s: &mut TcpStream, buf: &mut Vec<u8>, at: &mut usize) -> String {
    loop {
        if let Some(i) = buf[*at..].windows(2).position(|w| w == b"\r\n") {
            let l = String::from_utf8_lossy(&buf[*at..*at + i]).into_owned();
            *at += i + 2;
            return l;
        }
        assert!(fill(s, buf, buf.len() + 1).await, "connection closed mid-line");
    }
}

/// The next response on `s` (`buf`: bytes read and not consumed yet). `head_request`: no body follows.
async fn response(s: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Raw {
    let mut at = 0;
    let mut head = String::new();
    loop {
        let l = line(s, buf, &mut at).await;
        if l.is_empty() {
            break;
        }
        head.push_str(&l.to_ascii_lowercase());
        head.push('\n');
    }
    let mut r = Raw {
        head,
        body: Vec::new(),
        trailers: String::new(),
    };
    let bodiless = head_request || r.status() == 204 || r.status() == 304;
    if bodiless {
    } else if r.field("transfer-encoding") == Some("chunked") {
        loop {
            let size = usize::from_str_radix(line(s, buf, &mut at).await.trim(), 16).unwrap();
            if size == 0 {
                loop {
                    let l = line(s, buf, &mut at).await;
                    if l.is_empty() {
                        break;
                    }
                    r.trailers.push_str(&l.to_ascii_lowercase());
                    r.trailers.push('\n');
                }
                break;
            }
            assert!(fill(s, buf, at + size + 2).await, "connection closed mid-chunk");
            r.body.extend_from_slice(&buf[at..at + size]);
            assert_eq!(&buf[at + size..at + size + 2], b"\r\n");
            at += size + 2;
        }
    } else {
        let len: usize = r.field("content-length").expect("a length or chunked").parse().unwrap();
        assert!(fill(s, buf, at + len).await, "connection closed mid-body");
        r.body = buf[at..at + len].to_vec();
        at += len;
    }
    buf.drain(..at);
    r
}

/// Whether the gateway closed `s` (nothing more arrives, then end of stream).
async fn closed(s: &mut TcpStream, buf: &[u8]) -> bool {
    let mut rest = [0u8; 64];
    buf.is_empty()
        && matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut rest)).await,
            Ok(Ok(0))
        )
}

async fn echo_gateway() -> (Gateway, portico::echo::EchoServer) {
    let b = echo("b").await;
    let m =
        service("default", "b", &[b.addr]) + &ingress("default", "b", "portico", &[("h.example", "/", "Prefix", "b")]);
    (Gateway::start(&m).await, b)
}

fn uri_of(r: &Raw) -> String {
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    json["uri"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_connection_close_is_honoured() {
    let (gw, _b) = echo_gateway().await;
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    // Four requests in one write; the last asks to close.
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: h.example\r\n\r\n\
          GET /two?q=1 HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0\r\n\r\n\
          HEAD /three HTTP/1.1\r\nHost: h.example\r\n\r\n\
          GET /four HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let one = response(&mut s, &mut buf, false).await;
    let two = response(&mut s, &mut buf, false).await;
    let three = response(&mut s, &mut buf, true).await;
    let four = response(&mut s, &mut buf, false).await;
    assert_eq!((one.status(), uri_of(&one)), (200, "/one".to_string()), "{one:?}");
    assert_eq!(uri_of(&two), "/two?q=1");
    assert_eq!(uri_of(&four), "/four");
    // HEAD: the length of the body a GET would get, and no body.
    assert_eq!(three.status(), 200, "{three:?}");
    assert!(three.field("content-length").is_some_and(|l| l != "0"), "{three:?}");
    for r in [&one, &two, &three] {
        assert_eq!(r.field("connection"), None, "{r:?}");
        assert!(r.field("date").is_some_and(|d| d.ends_with(" gmt")), "{r:?}");
    }
    assert_eq!(four.field("connection"), Some("close"), "{four:?}");
    assert!(
        closed(&mut s, &buf).await,
        "the connection stayed open after Connection: close"
    );
    gw.stop().await;
}

#[tokio::test]
async fn requests_with_bodies_http10_and_malformed_heads_go_to_the_fallback_server() {
    let (gw, b) = echo_gateway().await;
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    let mut buf = Vec::new();
    // A bodiless request, then one with a body (hyper's from here on, same connection), then a bodiless one.
    s.write_all(b"GET /a HTTP/1.1\r\nHost: h.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(uri_of(&response(&mut s, &mut buf, false).await), "/a");
    s.write_all(b"POST /b HTTP/1.1\r\nHost: h.example\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let posted = response(&mut s, &mut buf, false).await;
    let json: serde_json::Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(
        (json["uri"].as_str(), json["body_bytes"].as_u64()),
        (Some("/b"), Some(5))
    );
    s.write_all(b"GET /c HTTP/1.1\r\nHost: h.example\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(uri_of(&response(&mut s, &mut buf, false).await), "/c");
    // A chunked request body, pipelined behind a bodiless request.
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(
        b"GET /d HTTP/1.1\r\nHost: h.example\r\n\r\n\
          PUT /e HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(uri_of(&response(&mut s, &mut buf, false).await), "/d");
    let put = response(&mut s, &mut buf, false).await;
    let json: serde_json::Value = serde_json::from_slice(&put.body).unwrap();
    assert_eq!(
        (json["uri"].as_str(), json["body_bytes"].as_u64()),
        (Some("/e"), Some(3))
    );
    let seen = b.requests();
    assert_eq!(seen.last().map(|r| &r.body[..]), Some(&b"abc"[..]));
    // HTTP/1.0 is answered in HTTP/1.0's terms.
    let resp = raw(gw.addr(0), "GET /f HTTP/1.0\r\nHost: h.example\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    // A malformed head, after a good request on the same connection: 400 from the fallback.
    let resp = raw(
        gw.addr(0),
        "GET /g HTTP/1.1\r\nHost: h.example\r\n\r\nGET /h i HTTP/1.1\r\nHost: h.example\r\n\r\n",
    )
    .await;
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 1, "{resp}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp}");
    gw.stop().await;
}

/// A backend that answers each request on a connection with `response`, as raw bytes.
async fn scripted(response: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        if s.write_all(response).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn bodies_of_unknown_length_are_chunked_with_trailers_only_for_clients_that_take_them() {
    let backend = scripted(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: Sun, 22 Nov 2026 12:00:00 GMT\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
    )
    .await;
    let m =
        service("default", "c", &[backend]) + &ingress("default", "c", "portico", &[("c.example", "/", "Prefix", "c")]);
    let gw = Gateway::start(&m).await;
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: c.example\r\nTE: trailers\r\n\r\nGET / HTTP/1.1\r\nHost: c.example\r\n\r\n")
        .await
        .unwrap();
    let with = response(&mut s, &mut buf, false).await;
    let without = response(&mut s, &mut buf, false).await;
    for r in [&with, &without] {
        assert_eq!(r.field("transfer-encoding"), Some("chunked"), "{r:?}");
        assert_eq!(r.body, b"hello world", "{r:?}");
        // The backend's Date is kept, not doubled.
        assert_eq!(r.head.matches("\ndate:").count(), 1, "{r:?}");
        assert_eq!(r.field("date"), Some("sun, 22 nov 2026 12:00:00 gmt"));
    }
    assert_eq!(with.trailers, "x-sum: 42\n");
    assert_eq!(without.trailers, "");
    gw.stop().await;
}

#[tokio::test]
async fn a_body_shorter_than_its_length_ends_the_connection() {
    // The backend promises 10 bytes, sends 4 and closes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut chunk = [0u8; 4096];
            let _ = s.read(&mut chunk).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd").await;
        }
    });
    let m =
        service("default", "t", &[addr]) + &ingress("default", "t", "portico", &[("t.example", "/", "Prefix", "t")]);
    let gw = Gateway::start(&m).await;
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t.example\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 200"), "{got}");
    assert!(got.contains("content-length: 10\r\n"), "{got}");
    assert!(
        got.ends_with("\r\n\r\nabcd"),
        "the connection was not closed after the short body: {got}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_partial_head_pipelined_behind_a_request_is_due_within_the_header_read_timeout() {
    let b = echo("b").await;
    let config = ONE_SET.replace(
        "    http: [\"127.0.0.1:0\"]\n",
        "    http: [\"127.0.0.1:0\"]\n    headerReadTimeout: 300ms\n    keepAliveTimeout: 30s\n",
    );
    let m =
        service("default", "b", &[b.addr]) + &ingress("default", "b", "portico", &[("h.example", "/", "Prefix", "b")]);
    let gw = Gateway::start_with(&config, &m).await;
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    // A whole request and, in the same write, the start of a second head that never completes.
    s.write_all(b"GET /a HTTP/1.1\r\nHost: h.example\r\n\r\nGET /b HTTP/1.1\r\nHost: h.exa")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(uri_of(&response(&mut s, &mut buf, false).await), "/a");
    let answered = std::time::Instant::now();
    // Closed by the header-read timeout, long before the keep-alive timeout.
    assert!(closed(&mut s, &buf).await, "the connection stayed open");
    assert!(answered.elapsed() < Duration::from_secs(3), "{:?}", answered.elapsed());
    assert_eq!(b.count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_large_body_goes_out_whole_and_in_order_after_its_head() {
    // 200 KB in one frame or a few: past the size copied behind the head, so head and body leave in vectored
    // writes; a position-dependent pattern shows any byte written twice or skipped.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n".to_vec();
    answer.extend_from_slice(&body);
    let backend = scripted(Box::leak(answer.into_boxed_slice())).await;
    let m =
        service("default", "l", &[backend]) + &ingress("default", "l", "portico", &[("l.example", "/", "Prefix", "l")]);
    let gw = Gateway::start(&m).await;
    let mut s = TcpStream::connect(gw.addr(0)).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: l.example\r\n\r\n").await.unwrap();
        let r = response(&mut s, &mut buf, false).await;
        assert_eq!(r.status(), 200, "{}", r.head);
        assert!(r.body == body, "body damaged ({} bytes)", r.body.len());
    }
    gw.stop().await;
}
