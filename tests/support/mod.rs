//! Shared test harness: a gateway in-process on loopback, fed from a temporary manifest directory, and small
//! real clients (hyper for well-formed requests, raw TCP for malformed ones).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portico::app::{Running, Source};
use portico::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const ONE_SET: &str = r#"
listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0" }
"#;

pub struct Gateway {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
}

impl Gateway {
    pub async fn start(manifests: &str) -> Self {
        Self::start_with(ONE_SET, manifests).await
    }

    pub async fn start_with(config: &str, manifests: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifests.yaml"), manifests).unwrap();
        let running = portico::app::start(
            Config::from_yaml(config).unwrap(),
            Source::Manifests {
                dir: dir.path().to_path_buf(),
                poll_interval: Duration::from_millis(50),
            },
        )
        .await
        .unwrap();
        Self {
            running: Some(running),
            dir,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// The first plain-HTTP address of listener set `set`.
    pub fn addr(&self, set: usize) -> SocketAddr {
        self.running().http_addrs[set][0]
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.path().join("manifests.yaml")
    }

    pub fn generation(&self) -> u64 {
        self.running().shared.snapshot.load().generation
    }

    /// Rewrites the manifests and waits until a new table is published.
    pub async fn rewrite(&self, manifests: &str) {
        let before = self.generation();
        write_atomically(&self.manifest_path(), manifests);
        for _ in 0..200 {
            if self.generation() > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no new table published after rewriting the manifests");
    }

    pub async fn stop(mut self) {
        self.running.take().unwrap().shutdown().await;
    }
}

pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A Service named `name` (port 80, named `http`) whose ready endpoints are `addrs`: one EndpointSlice per
/// distinct target port, since a slice gives one port to all its endpoints.
pub fn service(ns: &str, name: &str, addrs: &[SocketAddr]) -> String {
    let mut ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
    ports.sort();
    ports.dedup();
    let mut slices = String::new();
    for (i, p) in ports.iter().enumerate() {
        let eps: String = addrs
            .iter()
            .filter(|a| a.port() == *p)
            .map(|a| format!("  - addresses: [\"{}\"]\n    conditions: {{ready: true}}\n", a.ip()))
            .collect();
        slices.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {p}}}]\nendpoints:\n{eps}"
        ));
    }
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n{slices}"
    )
}

/// One Ingress rule: `(host or "", path, pathType, service)`.
pub fn ingress(ns: &str, name: &str, class: &str, rules: &[(&str, &str, &str, &str)]) -> String {
    let mut out = format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ingressClassName: {class}\n  rules:\n"
    );
    for (host, path, kind, svc) in rules {
        if host.is_empty() {
            out.push_str("  - http:\n");
        } else {
            out.push_str(&format!("  - host: \"{host}\"\n    http:\n"));
        }
        out.push_str(&format!(
            "      paths: [{{path: \"{path}\", pathType: {kind}, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]\n"
        ));
    }
    out
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The echo backend that answered, if any.
    pub fn backend(&self) -> Option<String> {
        self.headers.get("x-backend").map(|v| v.to_str().unwrap().to_string())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` with `Host: host` from `addr` with a real HTTP/1.1 client.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    send(addr, http::Method::GET, host, path, &[], Bytes::new()).await
}

/// GET over a new connection, the status or why there is none (for requests that may fail).
pub async fn try_get(addr: SocketAddr, host: &str, path: &str) -> Result<u16, String> {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.map_err(|e| format!("{e:?}"))?;
    Ok(status)
}

pub async fn send(
    addr: SocketAddr,
    method: http::Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client().request(req.body(Full::new(body)).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body }
}

/// Sends raw bytes and returns the raw response (until the server closes or 2 s pass).
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The status code of a raw HTTP/1.1 response.
pub fn raw_status(resp: &str) -> u16 {
    resp.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A loopback port that was free a moment ago (for processes that must be told a port up front).
/// A loopback port nothing listens on, for a server the test starts later (Pebble, a Gateway's listener).
///
/// Taken below Linux's ephemeral range (32768-60999), where the kernel never hands out ports on its own: a port
/// from `bind(0)` could be given meanwhile to an outgoing connection or another `bind(0)` of a test running in
/// parallel, and the server would then fail with "address already in use". Each call of a process takes the next
/// port of a sequence that starts at a place drawn from the process id.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One listener set `default` (class `portico`) with plain HTTP and HTTPS on ephemeral loopback ports.
pub const TLS_SET: &str = r#"
listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    https: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0" }
"#;

/// A `kubernetes.io/tls` Secret in namespace `default` holding `cert` and `key` (PEM) as `stringData`.
pub fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert),
        indent(key)
    )
}

/// An example backend on an ephemeral loopback port.
pub async fn echo(name: &str) -> portico::echo::EchoServer {
    portico::echo::EchoServer::start(name, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A loopback backend that runs `serve` on each connection it accepts, in a task of its own.
pub async fn serve_each<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// [`serve_each`] behind TLS: `serve` gets each connection whose handshake with `acceptor` succeeded.
pub async fn serve_tls_each<F, Fut>(acceptor: tokio_rustls::TlsAcceptor, serve: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let serve = std::sync::Arc::new(serve);
    serve_each(move |s| {
        let (acceptor, serve) = (acceptor.clone(), serve.clone());
        async move {
            if let Ok(tls) = acceptor.accept(s).await {
                serve(tls).await;
            }
        }
    })
    .await
}

/// A loopback address with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// An Ingress `name` in `ns` (class `portico`) sending every path of `host` to `svc` port 80, with annotations.
pub fn annotated_ingress(ns: &str, name: &str, host: &str, svc: &str, annotations: &[(&str, &str)]) -> String {
    let notes: String = annotations.iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{notes}")
    };
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {ns}\n{notes}spec:\n  ingressClassName: portico\n  rules: [{{host: \"{host}\", http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}}}]\n"
    )
}

/// Requests in flight on the endpoint `addr` in the gateway's current table (summed over the backends that
/// list it).
pub fn in_flight(gw: &Gateway, addr: SocketAddr) -> u32 {
    let snap = gw.running().shared.snapshot.load();
    let mut seen = std::collections::HashSet::new();
    snap.sets
        .iter()
        .flat_map(|s| s.backends())
        .filter(|b| seen.insert(std::sync::Arc::as_ptr(b)))
        .flat_map(|b| b.endpoints.iter())
        .filter(|e| e.addr == addr)
        .map(|e| e.in_flight())
        .sum()
}

/// Polls `cond` every 20 ms until it holds or `within` passes; whether it held.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one sample line of the gateway's `/metrics` (`name{labels}` exactly as rendered), if present.
pub async fn metric(gw: &Gateway, sample: &str) -> Option<f64> {
    let text = get(gw.running().admin_addr, "admin", "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A backend that accepts connections and closes each one as soon as a request arrived (a reset before any
/// response byte).
pub async fn resetting_backend() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                if let Ok(n) = s.read(&mut buf).await {
                    if n > 0 {
                        h.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                drop(s);
            });
        }
    });
    (addr, hits)
}

/// A TLS acceptor with a certificate for `names` issued by `ca` (valid from an hour ago for a day), offering
/// the ALPN protocols `alpn`.
pub fn tls_acceptor(ca: &portico::certs::testing::TestCa, names: &[&str], alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let key = portico::certs::testing::key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let now = portico::certs::unix_now();
    let pem = ca.issue_pem(names, &key, now - 3600, now + 86400);
    let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()];
    let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

/// A TLS backend on loopback with a certificate for `names` issued by `ca`, offering `alpn` (`h2` serves
/// HTTP/2, anything else HTTP/1.1). Answers every request with 200, the body `tls <version>`, and for
/// `application/grpc` requests a gRPC message and `grpc-status: 0` trailers.
pub async fn tls_backend(ca: &portico::certs::testing::TestCa, names: &[&str], alpn: &[u8]) -> SocketAddr {
    let acceptor = tls_acceptor(ca, names, &[alpn]);
    let h2 = alpn == b"h2";
    serve_tls_each(acceptor, move |tls| async move {
        let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let version = format!("{:?}", req.version());
            let grpc = req
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let _ = req.into_body().collect().await;
            let body: Vec<http_body::Frame<Bytes>> = if grpc {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                vec![
                    http_body::Frame::data(Bytes::from_static(&[0, 0, 0, 0, 2, b'o', b'k'])),
                    http_body::Frame::trailers(trailers),
                ]
            } else {
                vec![http_body::Frame::data(Bytes::from(format!("tls {version}")))]
            };
            let body = http_body_util::StreamBody::new(futures::stream::iter(
                body.into_iter().map(Ok::<_, std::convert::Infallible>),
            ));
            let mut resp = http::Response::new(body);
            if grpc {
                resp.headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("application/grpc"));
            }
            Ok::<_, std::convert::Infallible>(resp)
        });
        let io = hyper_util::rt::TokioIo::new(tls);
        if h2 {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await;
        } else {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        }
    })
    .await
}

/// A `v1` Secret in `ns` holding `ca.crt` (PEM) as `stringData`.
pub fn ca_secret(ns: &str, name: &str, ca_pem: &str) -> String {
    let indent: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: Opaque\nstringData:\n  ca.crt: |\n{indent}"
    )
}

/// A response body fed from a channel of frames (data and trailers), for backends that stream on cue.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<http_body::Frame<Bytes>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// Kills the child process it holds when dropped (a failed assertion must not leave it running).
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
pub mod kube;

/// Serves one HTTP/1.1 connection as a WebSocket backend: an upgrade request gets 101 and the tunnel's bytes
/// echoed; any other request gets 200 with `body`.
pub async fn serve_websocket_echo<IO>(io: IO, body: &'static [u8])
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| async move {
        let mut r = http::Response::new(Full::new(Bytes::from_static(body)));
        if req.headers().get("upgrade").is_some_and(|v| v == "websocket") {
            tokio::spawn(async move {
                if let Ok(up) = hyper::upgrade::on(&mut req).await {
                    let mut io = hyper_util::rt::TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            *r.body_mut() = Full::new(Bytes::new());
            *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", http::HeaderValue::from_static("websocket"));
            r.headers_mut()
                .insert("connection", http::HeaderValue::from_static("upgrade"));
        }
        Ok::<_, std::convert::Infallible>(r)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

/// What a gRPC unary call got back: the response's status and headers, its trailers and its body.
pub struct GrpcReply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub trailers: http::HeaderMap,
    pub body: Bytes,
}

/// A gRPC unary call with an empty message to `uri` over HTTP/2 with prior knowledge (h2c) on a new connection
/// to `addr`.
pub async fn grpc_unary(addr: SocketAddr, uri: &str) -> GrpcReply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let (parts, body) = sender.send_request(req).await.unwrap().into_parts();
    let collected = body.collect().await.unwrap();
    GrpcReply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        trailers: collected.trailers().cloned().unwrap_or_default(),
        body: collected.to_bytes(),
    }
}

/// `portico check` on `manifests` (one file) with the configuration `config`: its exit code and standard output.
pub fn portico_check(manifests: &str, config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("m")).unwrap();
    std::fs::write(dir.path().join("m/all.yaml"), manifests).unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("check")
        .arg("--manifests")
        .arg(dir.path().join("m"))
        .arg("--config")
        .arg(dir.path().join("config.yaml"))
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `127.0.0.1:port`, once something accepts connections there (a Gateway's listener binds after the first
/// publish); fails the test after 5 s.
pub async fn bound(port: u16) -> SocketAddr {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(addr).is_ok()).await,
        "nothing accepts connections on {addr}"
    );
    addr
}

/// Reads an HTTP/1.1 response head from a raw stream, byte by byte (nothing after it is consumed); fails the
/// test if the connection ends first or a byte takes more than 5 s.
pub async fn read_response_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "the connection closed before the head ended");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends `frames` short messages through an upgraded connection and asserts each comes back unchanged.
pub async fn assert_tunnel_echoes(c: &mut TcpStream, frames: usize) {
    for i in 0..frames {
        let msg = format!("frame {i}");
        c.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(buf, msg.as_bytes());
    }
}
