//! Differential test of the two HTTP/1.1 server paths (issue #22): every raw request of a corpus (valid,
//! borderline, hostile) is sent once as the first request of a connection, where the gateway's own parser
//! (`http1::request`) reads it, and once after a request with a body, when hyper's server serves the rest of the
//! connection. Both must agree on accept or reject (the status) and on what the backend receives.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request with a body: hyper's server serves the connection after it.
const HANDOVER: &[u8] = b"POST /handover HTTP/1.1\r\nHost: h.example\r\nContent-Length: 2\r\n\r\nok";

/// The corpus: (name, request head and body). Each is sent with nothing after it.
const CORPUS: &[(&str, &[u8])] = &[
    ("plain", b"GET / HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("query", b"GET /a/b?x=1&y=%20z HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("head", b"HEAD /a HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("options", b"OPTIONS /a HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("extension-method", b"PURGE /a HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("lowercase-method", b"get /a HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("host-port", b"GET / HTTP/1.1\r\nHost: h.example:80\r\n\r\n"),
    ("host-case-dot", b"GET / HTTP/1.1\r\nHost: H.Example.\r\n\r\n"),
    ("absolute-form", b"GET http://h.example/abs?q HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("absolute-disagrees", b"GET http://other.example/ HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("no-host", b"GET / HTTP/1.1\r\n\r\n"),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: h.example\r\nHost: h.example\r\n\r\n"),
    ("host-bad-char", b"GET / HTTP/1.1\r\nHost: h.ex ample\r\n\r\n"),
    ("host-bad-port", b"GET / HTTP/1.1\r\nHost: h.example:99999\r\n\r\n"),
    ("empty-host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n"),
    ("content-length-zero", b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0\r\n\r\n"),
    ("content-length-00", b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 00\r\n\r\n"),
    ("content-length-list", b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0, 0\r\n\r\n"),
    ("content-length-plus", b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: +0\r\n\r\n"),
    ("content-length-twice", b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"),
    ("content-length-disagree", b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\nx"),
    ("content-length-negative", b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: -1\r\n\r\n"),
    ("content-length-hex", b"GET / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 0x0\r\n\r\n"),
    ("te-chunked-chunked", b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("te-gzip-chunked", b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("te-two-lines", b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-unknown-chunked", b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: x-custom, chunked\r\n\r\n0\r\n\r\n"),
    ("te-chunked-param", b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked;x=1\r\n\r\n0\r\n\r\n"),
    ("te-empty-list", b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n"),
    ("te-chunked", b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("te-chunked-upper", b"POST / HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    ("body-length", b"POST /p HTTP/1.1\r\nHost: h.example\r\nContent-Length: 3\r\n\r\nabc"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: h.example\r\nX-A: a\r\n b\r\n\r\n"),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost: h.example\r\nX-A : a\r\n\r\n"),
    ("leading-space-field", b"GET / HTTP/1.1\r\n Host: h.example\r\n\r\n"),
    ("tab-in-value", b"GET / HTTP/1.1\r\nHost: h.example\r\nX-A: a\tb\r\n\r\n"),
    ("obs-text-value", b"GET / HTTP/1.1\r\nHost: h.example\r\nX-A: caf\xc3\xa9\r\n\r\n"),
    ("ctl-in-value", b"GET / HTTP/1.1\r\nHost: h.example\r\nX-A: a\x01b\r\n\r\n"),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: h.example\r\nX-A: a\x00b\r\n\r\n"),
    ("empty-value", b"GET / HTTP/1.1\r\nHost: h.example\r\nX-A:\r\n\r\n"),
    ("underscore-name", b"GET / HTTP/1.1\r\nHost: h.example\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n"),
    ("bare-lf", b"GET /lf HTTP/1.1\nHost: h.example\n\n"),
    ("bare-cr", b"GET / HTTP/1.1\rHost: h.example\r\r\n"),
    ("trailing-space-version", b"GET / HTTP/1.1 \r\nHost: h.example\r\n\r\n"),
    ("two-spaces", b"GET  / HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("fragment", b"GET /a#frag HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("asterisk-get", b"GET * HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("http2-version", b"GET / HTTP/2.0\r\nHost: h.example\r\n\r\n"),
    ("http09", b"GET /\r\n\r\n"),
    ("version-1.2", b"GET / HTTP/1.2\r\nHost: h.example\r\n\r\n"),
    ("dot-segments", b"GET /a/./b/../c HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("dot-params", b"GET /a/..;/b HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("encoded-dots", b"GET /a/%2e%2e/b HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("encoded-slash", b"GET /a%2Fb HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("backslash", b"GET /a\\b HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("above-root", b"GET /../x HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("utf8-target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h.example\r\n\r\n"),
    ("connection-close", b"GET / HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n"),
    ("connection-names", b"GET / HTTP/1.1\r\nHost: h.example\r\nConnection: x-secret\r\nX-Secret: 1\r\n\r\n"),
    ("te-trailers", b"GET / HTTP/1.1\r\nHost: h.example\r\nTE: trailers\r\n\r\n"),
    ("upgrade-without-connection", b"GET / HTTP/1.1\r\nHost: h.example\r\nUpgrade: h2c\r\n\r\n"),
    ("h2c-upgrade", b"GET / HTTP/1.1\r\nHost: h.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"),
    ("forwarded-untrusted", b"GET / HTTP/1.1\r\nHost: h.example\r\nX-Forwarded-Prefix: /admin\r\nForwarded: for=1.2.3.4\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"),
    ("many-fields", b"GET / HTTP/1.1\r\nHost: h.example\r\nA0: 0\r\nA1: 1\r\nA2: 2\r\nA3: 3\r\nA4: 4\r\nA5: 5\r\nA6: 6\r\nA7: 7\r\nA8: 8\r\nA9: 9\r\n\r\n"),
];

/// What a backend saw, in a comparable form.
fn seen(b: &portico::echo::EchoServer) -> Option<String> {
    let r = b.requests().into_iter().rfind(|r| r.uri.path() != "/handover")?;
    let mut fields: Vec<String> = r
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    fields.sort();
    Some(format!(
        "{} {} {:?}\n{}\n{}",
        r.method,
        r.uri,
        r.version,
        fields.join("\n"),
        String::from_utf8_lossy(&r.body)
    ))
}

/// The end of each complete response at the start of `buf` (`head_last`: the last one answers a HEAD).
fn complete(buf: &[u8], head_last: bool, want: usize) -> usize {
    let mut at = 0;
    let mut n = 0;
    while n < want {
        let Some(end) = buf[at..].windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&buf[at..at + end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let len = if head_last && n + 1 == want { 0 } else { len };
        if buf.len() < at + end + 4 + len {
            break;
        }
        at += end + 4 + len;
        n += 1;
    }
    n
}

/// Sends `prefix` then `request` on a new connection; the status of the last response (0: none).
async fn status_of(addr: std::net::SocketAddr, prefix: &[u8], request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut all = prefix.to_vec();
    all.extend_from_slice(request);
    s.write_all(&all).await.unwrap();
    // The hand-over's own response comes first.
    let want = 1 + usize::from(!prefix.is_empty());
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while complete(&buf, request.starts_with(b"HEAD"), want) < want {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let responses: Vec<&str> = text.match_indices("HTTP/1.").map(|(i, _)| &text[i..]).collect();
    responses.get(want - 1).map_or(0, |r| raw_status(r))
}

#[tokio::test]
async fn the_own_parser_and_hypers_agree_on_every_request_of_the_corpus() {
    let b = echo("b").await;
    let m =
        service("default", "b", &[b.addr]) + &ingress("default", "b", "portico", &[("h.example", "/", "Prefix", "b")]);
    let gw = Gateway::start(&m).await;
    let addr = gw.addr(0);
    let mut disagreements = Vec::new();
    let mut table = String::new();
    for (name, request) in CORPUS {
        let before = b.count();
        let own = status_of(addr, b"", request).await;
        let own_seen = (b.count() > before).then(|| seen(&b)).flatten();
        let before = b.count();
        let hyper = status_of(addr, HANDOVER, request).await;
        let hyper_seen = (b.count() > before + 1).then(|| seen(&b)).flatten();
        table.push_str(&format!("{name:28} own {own:3} hyper {hyper:3}\n"));
        if own != hyper {
            disagreements.push(format!("{name}: status {own} (own) vs {hyper} (hyper)"));
        } else if own_seen != hyper_seen {
            disagreements.push(format!(
                "{name}: the backend received\n--- own\n{own_seen:?}\n--- hyper\n{hyper_seen:?}"
            ));
        }
    }
    println!("{table}");
    assert!(disagreements.is_empty(), "{}\n\n{table}", disagreements.join("\n\n"));
    gw.stop().await;
}
