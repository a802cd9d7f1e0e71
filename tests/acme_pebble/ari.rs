//! A loopback stand-in for a CA's ACME Renewal Information endpoint (RFC 9773), in front of a real Pebble:
//! Debian's Pebble 2.4 has no `renewalInfo`. An HTTPS reverse proxy (certificate from Pebble's HTTPS test CA,
//! so the gateway's `caRoot` trusts both) forwards every request to Pebble with the `Host` header unchanged
//! (Pebble builds its URLs from it, so every later request of the client comes back through the proxy and the
//! JWS `url` checks agree), adds `renewalInfo` to the directory, answers `GET /renewal-info/{certID}` as the test
//! says, and records the certificate IDs asked about and the `replaces` field of every newOrder payload. Pebble
//! 2.4 accepts that unknown field and ignores it; an ARI CA must reflect it in the new order, so the double adds
//! it to Pebble's newOrder response (unless told not to).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::certs::testing::{key, DAY};
use portico::certs::{format_unix, unix_now};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use super::{client_config, Pebble};

/// What `GET /renewal-info/{id}` answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with this `suggestedWindow` (unix seconds) and `explanationURL`.
    Window { start: i64, end: i64 },
    /// This status with a problem document.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
}

impl Answer {
    /// A window a year ahead: nothing to do for a long time.
    pub fn far_future() -> Answer {
        let now = unix_now();
        Answer::Window {
            start: now + 365 * DAY,
            end: now + 366 * DAY,
        }
    }

    /// A window that opened a minute ago and closes in `secs` seconds.
    pub fn open_for(secs: i64) -> Answer {
        let now = unix_now();
        Answer::Window {
            start: now - 60,
            end: now + secs,
        }
    }
}

#[derive(Debug)]
pub struct AriState {
    /// The answer for IDs without their own.
    pub default: Answer,
    pub per_id: HashMap<String, Answer>,
    /// `Retry-After` (seconds) on every renewal-information answer.
    pub retry_after: u64,
    /// Every renewal-information request: when, and the certificate ID (the last path segment).
    pub asked: Vec<(Instant, String)>,
    /// The `replaces` of every order created (`None` when absent).
    pub replaces: Vec<Option<String>>,
    /// Reflect `replaces` in the newOrder response, as RFC 9773 §5 requires of a CA that accepts it (Pebble
    /// 2.4 accepts the field, ignores it and does not reflect it; instant-acme then fails the order).
    pub reflect_replaces: bool,
}

pub struct AriDouble {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<AriState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AriDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AriDouble {
    pub async fn start(pebble: &Pebble, default: Answer, retry_after: u64) -> AriDouble {
        let state = Arc::new(Mutex::new(AriState {
            default,
            per_id: HashMap::new(),
            retry_after,
            asked: Vec::new(),
            replaces: Vec::new(),
            reflect_replaces: true,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The proxy's certificate comes from the test CA that also signed Pebble's.
        let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let pem = pebble
            .https_ca
            .issue_pem(&["127.0.0.1"], &k, unix_now() - DAY, unix_now() + DAY);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                chain,
                PrivateKeyDer::from_pem_slice(k.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        // The client towards Pebble trusts Pebble's HTTPS test CA.
        let mut roots = RootCertStore::empty();
        roots.add(pebble.https_ca.der.clone()).unwrap();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*client_config(roots)).clone())
            .https_only()
            .enable_http1()
            .build();
        let upstream: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        let ctx = Arc::new(Ctx {
            state: state.clone(),
            pebble: format!("https://127.0.0.1:{}", pebble.port),
            me: format!("https://{addr}"),
            upstream,
        });
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req| {
                        let ctx = ctx.clone();
                        async move { Ok::<_, hyper::Error>(ctx.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        AriDouble { addr, state, task }
    }

    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.addr)
    }

    pub fn set(&self, f: impl FnOnce(&mut AriState)) {
        f(&mut self.state.lock().unwrap())
    }

    pub fn asked(&self) -> Vec<(Instant, String)> {
        self.state.lock().unwrap().asked.clone()
    }

    pub fn replaces(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().replaces.clone()
    }
}

type Upstream = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

struct Ctx {
    state: Arc<Mutex<AriState>>,
    pebble: String,
    me: String,
    upstream: Upstream,
}

impl Ctx {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        if let Some(id) = path.strip_prefix("/renewal-info/") {
            return self.renewal_info(id);
        }
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let replaces = if path == "/order-plz" {
            Some(new_order_replaces(&body))
        } else {
            None
        };
        let mut fwd = Request::builder().method(parts.method.clone()).uri(format!(
            "{}{}",
            self.pebble,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        ));
        for (name, value) in &parts.headers {
            if name != hyper::header::CONTENT_LENGTH && name != hyper::header::TRANSFER_ENCODING {
                fwd = fwd.header(name, value);
            }
        }
        let rsp = match self.upstream.request(fwd.body(Full::new(body)).unwrap()).await {
            Ok(r) => r,
            Err(e) => {
                return Response::builder()
                    .status(502)
                    .body(Full::new(Bytes::from(format!("pebble: {e}"))))
                    .unwrap()
            }
        };
        let (mut parts, body) = rsp.into_parts();
        let mut body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        parts.headers.remove(hyper::header::CONTENT_LENGTH);
        parts.headers.remove(hyper::header::TRANSFER_ENCODING);
        if path == "/dir" && parts.status == StatusCode::OK {
            let mut dir: serde_json::Value = serde_json::from_slice(&body).expect("Pebble's directory is JSON");
            dir["renewalInfo"] = format!("{}/renewal-info", self.me).into();
            body = Bytes::from(dir.to_string());
        }
        // A created order (a newOrder rejected for a bad nonce is sent again): record its `replaces`, and
        // reflect it as an ARI CA does.
        if let (Some(replaces), StatusCode::CREATED) = (replaces, parts.status) {
            let mut st = self.state.lock().unwrap();
            st.replaces.push(replaces.clone());
            if let (Some(id), true) = (replaces, st.reflect_replaces) {
                let mut order: serde_json::Value = serde_json::from_slice(&body).expect("Pebble's order is JSON");
                order["replaces"] = id.into();
                body = Bytes::from(order.to_string());
            }
        }
        Response::from_parts(parts, Full::new(body))
    }

    fn renewal_info(&self, id: &str) -> Response<Full<Bytes>> {
        let mut st = self.state.lock().unwrap();
        st.asked.push((Instant::now(), id.to_string()));
        let answer = st.per_id.get(id).unwrap_or(&st.default).clone();
        let rsp = Response::builder().header("retry-after", st.retry_after.to_string());
        match answer {
            Answer::Window { start, end } => {
                let body = serde_json::json!({
                    "suggestedWindow": {"start": format_unix(start), "end": format_unix(end)},
                    "explanationURL": "https://ca.example.test/ari-explained",
                });
                rsp.header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
            }
            Answer::Status(code) => rsp
                .status(code)
                .header("content-type", "application/problem+json")
                .body(Full::new(Bytes::from_static(
                br#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"renewal info broken","status":500}"#,
            ))),
            Answer::Garbage => rsp
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    b"<html>this is not renewal information</html>",
                ))),
        }
        .unwrap()
    }
}

/// The `replaces` member of a newOrder JWS (flattened JSON serialization, payload base64url JSON).
fn new_order_replaces(jws: &[u8]) -> Option<String> {
    let jws: serde_json::Value = serde_json::from_slice(jws).ok()?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jws["payload"].as_str()?)
        .ok()?;
    let payload: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    payload["replaces"].as_str().map(str::to_string)
}
