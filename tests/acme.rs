//! ACME HTTP-01 against a real Pebble (Debian package `pebble`, installed by `.ci/run`): issuance end to end,
//! nonce rejection, invalid challenges, an unreachable CA, renewal and restart. Pebble, its DNS
//! (`pebble-challtestsrv`) and the gateway all listen on 127.0.0.1; clients verify the served chain against
//! Pebble's issuing root, fetched from its management interface.

mod acme_pebble;
mod support;

use acme_pebble::{client_config, served_serial, wait_served, Pebble};
use support::free_port;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use portico::acme::Settings;
use portico::app::{Extras, Running, Source};
use portico::certs::testing::{key, TestCa, DAY};
use portico::certs::unix_now;
use portico::config::Config;
use portico::echo::EchoServer;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HOST: &str = "shop.acme.test";

// === the gateway ===

fn fast_settings() -> Settings {
    Settings {
        check_interval: Duration::from_millis(200),
        backoff_min: Duration::from_millis(400),
        backoff_max: Duration::from_secs(3),
        poll_delay: Duration::from_millis(100),
        poll_timeout: Duration::from_secs(15),
        ..Settings::default()
    }
}

fn config(http_port: u16, directory: &str, ca_root: &Path) -> Config {
    Config::from_yaml(&format!(
        r#"
listenerSets:
  - name: default
    ingressClasses: [portico]
    http: ["127.0.0.1:{http_port}"]
    https: ["127.0.0.1:0"]
    acme:
      directory: "{directory}"
      email: ops@example.test
      caRoot: "{}"
admin: {{ address: "127.0.0.1:0" }}
"#,
        ca_root.display()
    ))
    .unwrap()
}

fn manifests(backend: SocketAddr, annotations: &str) -> String {
    support::service("default", "shop", &[backend])
        + &format!(
            r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: default
  annotations: {{{annotations}}}
spec:
  ingressClassName: portico
  tls:
  - hosts: ["{HOST}"]
    secretName: shop-tls
  rules:
  - host: "{HOST}"
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: shop, port: {{number: 80}}}}}}}}]}}
"#
        )
}

struct Setup {
    running: Option<Running>,
    manifests: tempfile::TempDir,
    state: tempfile::TempDir,
    _backend: EchoServer,
    http_port: u16,
}

impl Setup {
    async fn new(http_port: u16) -> Setup {
        Self::with_annotations(http_port, "").await
    }

    async fn with_annotations(http_port: u16, annotations: &str) -> Setup {
        let backend = EchoServer::start("shop", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let manifests = tempfile::tempdir().unwrap();
        std::fs::write(
            manifests.path().join("m.yaml"),
            self::manifests(backend.addr, annotations),
        )
        .unwrap();
        Setup {
            running: None,
            manifests,
            state: tempfile::tempdir().unwrap(),
            _backend: backend,
            http_port,
        }
    }

    async fn start(&mut self, directory: &str, ca_root: &Path, settings: Settings) {
        let running = portico::app::start_with(
            config(self.http_port, directory, ca_root),
            Source::Manifests {
                dir: self.manifests.path().to_path_buf(),
                poll_interval: Duration::from_millis(100),
            },
            Extras {
                state_dir: Some(self.state.path().to_path_buf()),
                acme: settings,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        self.running = Some(running);
    }

    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    fn https(&self) -> SocketAddr {
        self.running().https_addrs[0][0]
    }

    fn status(&self) -> portico::acme::Status {
        self.running().acme.as_ref().expect("acme manager running").status()
    }

    fn secret_file(&self) -> PathBuf {
        self.state.path().join("secrets/default/shop-tls.yaml")
    }

    async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Issues through Pebble, checks the served chain and the stored Secret; returns the serial.
async fn issue_end_to_end(env: &[(&str, &str)]) -> (Setup, Pebble, CertificateDer<'static>, String) {
    let http_port = free_port();
    let pebble = Pebble::start(http_port, "127.0.0.1", env).await;
    let mut s = Setup::new(http_port).await;
    s.start(&pebble.directory(), &pebble.ca_root(), fast_settings()).await;
    let root = pebble.issuing_root().await;
    let serial = tokio::time::timeout(Duration::from_secs(60), async {
        wait_served(s.https(), HOST, &root, Duration::from_secs(60)).await
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no certificate within a minute; status {:?}\n{}",
            s.status(),
            pebble.logs()
        )
    });
    let status = s.status();
    assert_eq!(status.certificates_issued, 1, "{status:?}");
    assert!(status.failing.is_empty(), "{status:?}");
    // The stored Secret holds the served certificate, privately.
    let text = std::fs::read_to_string(s.secret_file()).unwrap();
    let (state, d) = portico::source::file::state_from_yaml(&text, "secret");
    assert!(d.is_empty(), "{d:?}");
    let stored = portico::certs::LoadedCert::from_tls_secret(&state.secrets[0]).unwrap();
    assert_eq!(stored.info.serial, serial);
    assert!(stored.covers(HOST));
    assert!(stored.chain().len() >= 2, "chain with the intermediate");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.secret_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The tokens were withdrawn once validation ended.
    assert!(s.running().challenges.is_empty());
    (s, pebble, root, serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_a_certificate_end_to_end() {
    let (mut s, _pebble, _root, _serial) = issue_end_to_end(&[]).await;
    let account_files = std::fs::read_dir(s.state.path().join("acme/accounts")).unwrap().count();
    assert_eq!(account_files, 1);
    // The outcome is counted at /metrics.
    let admin = s.running().admin_addr;
    let mut metrics = String::new();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(admin).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        c.read_to_string(&mut metrics).await.unwrap();
    }
    assert!(
        metrics.contains("\nportico_acme_certificates_issued_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nportico_acme_failing_secrets 0\n"), "{metrics}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_nonce_rejection() {
    let (mut s, pebble, _root, _serial) = issue_end_to_end(&[("PEBBLE_WFE_NONCEREJECT", "50")]).await;
    // Pebble really rejected nonces (instant-acme retries badNonce three times per request; the manager
    // retries the whole order when that is not enough).
    assert!(pebble.logs().contains("reject 50% of good nonces"), "{}", pebble.logs());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_the_stored_certificate() {
    let (mut s, pebble, root, serial) = issue_end_to_end(&[]).await;
    s.stop().await;
    s.start(&pebble.directory(), &pebble.ca_root(), fast_settings()).await;
    assert_eq!(served_serial(s.https(), HOST, &root).await.unwrap(), serial);
    // Several check intervals pass without an order.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = s.status();
    assert_eq!(status.orders_started, 0, "{status:?}");
    assert_eq!(served_serial(s.https(), HOST, &root).await.unwrap(), serial);
    s.stop().await;
}

/// Waits (20 s at most) until a certificate other than `old`, issued under `root`, is served.
async fn wait_reissued(s: &Setup, root: &CertificateDer<'static>, old: &str, why: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // The default certificate (not under `root`) is served meanwhile.
        if let Ok(now) = served_serial(s.https(), HOST, root).await {
            if now != old {
                return now;
            }
        }
        assert!(Instant::now() < deadline, "{why}: no new certificate: {:?}", s.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_certificate_is_issued_again_even_after_the_ca_forgot_the_account() {
    let (mut s, mut pebble, root, first) = issue_end_to_end(&[]).await;
    // The managed Secret is deleted: the default certificate is served meanwhile, and a new one is ordered at
    // once (not at the next renewal check).
    std::fs::remove_file(s.secret_file()).unwrap();
    let second = wait_reissued(&s, &root, &first, "after the Secret was deleted").await;
    assert!(s.secret_file().exists());
    assert_eq!(s.status().certificates_issued, 2, "{:?}", s.status());
    // The CA is reset (as after a staging-to-production switch or a CA wipe): the stored account is unknown to it
    // (`accountDoesNotExist`). The manager registers a new account and issues, without waiting out a backoff.
    pebble.restart().await;
    let root = pebble.issuing_root().await;
    std::fs::remove_file(s.secret_file()).unwrap();
    let third = wait_reissued(&s, &root, &second, "after the CA forgot the account").await;
    assert_ne!(third, first);
    let status = s.status();
    assert_eq!(status.certificates_issued, 3, "{status:?}");
    assert!(status.failing.is_empty(), "{status:?}");
    // The third took two attempts in one pass: the stored account refused, then a new one registered.
    assert_eq!(status.orders_started, 4, "{status:?}");
    let account_files = std::fs::read_dir(s.state.path().join("acme/accounts")).unwrap().count();
    assert_eq!(
        account_files, 1,
        "the new account's credentials replace the forgotten one's"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_challenge_is_reported_and_retried_with_backoff() {
    let http_port = free_port();
    // Every name resolves to 127.0.0.2, where nothing listens on the gateway's port.
    let pebble = Pebble::start(http_port, "127.0.0.2", &[]).await;
    let mut s = Setup::new(http_port).await;
    let settings = Settings {
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(4),
        ..fast_settings()
    };
    s.start(&pebble.directory(), &pebble.ca_root(), settings).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.status().invalid.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no invalid order reported: {:?}\n{}",
            s.status(),
            pebble.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = Instant::now();
    let d = s.status().diagnostics();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].reason.contains(HOST), "{d:?}");
    // Pebble's problem detail names the failed connection.
    assert!(d[0].reason.contains("127.0.0.2"), "{d:?}");
    assert!(d[0].reason.contains("urn:ietf:params:acme:error:connection"), "{d:?}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let status = s.status();
    let attempts: Vec<_> = status.history.iter().filter(|a| a.outcome.is_err()).collect();
    assert!(
        status.certificates_issued == 0 && !s.secret_file().exists(),
        "{status:?}"
    );
    // Backoff 0.25–0.5 s, 0.5–1, 1–2, 2–4 (capped): over ~6 s, between 3 and 6 attempts, never a tight loop.
    assert!(
        (3..=6).contains(&attempts.len()),
        "{} attempts in {:?}: {status:?}",
        attempts.len(),
        first.elapsed()
    );
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|w| w[1].started.duration_since(w[0].started).unwrap())
        .collect();
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(200)), "{gaps:?}");
    assert!(gaps.last() > gaps.first(), "backoff grows: {gaps:?}");
    // Nothing swapped: the host still gets the default certificate (not trusted by Pebble's root).
    let root = pebble.issuing_root().await;
    assert!(served_serial(s.https(), HOST, &root).await.is_err());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_ca_keeps_the_stored_certificate() {
    let mut s = Setup::new(free_port()).await;
    // A valid certificate already stored, two thirds of its lifetime gone: due for renewal.
    let ca = TestCa::new();
    let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let now = unix_now();
    let pem = ca.issue_pem(&[HOST], &k, now - 20 * DAY, now + 5 * DAY);
    let stored = portico::acme::StoredCert {
        cert_pem: pem.clone(),
        key_pem: k.serialize_pem(),
    };
    let store = portico::acme::FileStore::new(s.state.path());
    let secret = portico::model::ObjectRef {
        kind: "Secret",
        namespace: "default".into(),
        name: "shop-tls".into(),
    };
    portico::acme::CertStore::store(&store, &secret, &stored).await.unwrap();
    let serial = portico::certs::LoadedCert::from_pem(pem.as_bytes(), k.serialize_pem().as_bytes(), String::new())
        .unwrap()
        .info
        .serial
        .clone();
    let closed = free_port();
    let ca_root = s.state.path().join("unused-ca.pem");
    std::fs::write(&ca_root, &ca.pem).unwrap();
    let settings = Settings {
        backoff_min: Duration::from_millis(400),
        backoff_max: Duration::from_secs(2),
        ..fast_settings()
    };
    s.start(&format!("https://127.0.0.1:{closed}/dir"), &ca_root, settings)
        .await;
    let root = ca.der.clone();
    assert_eq!(served_serial(s.https(), HOST, &root).await.unwrap(), serial);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = s.status();
    let attempts = status.history.len();
    // 0.2–0.4, 0.4–0.8, 0.8–1.6, 1–2, 1–2 ...: spaced out, not a tight loop.
    assert!((3..=9).contains(&attempts), "{attempts} attempts: {status:?}");
    assert!(status.history.iter().all(|a| a.outcome.is_err()));
    assert!(status.failing.contains_key(&secret), "{status:?}");
    assert_eq!(served_serial(s.https(), HOST, &root).await.unwrap(), serial);
    assert!(
        !s.state.path().join("acme/accounts").exists(),
        "no account without a CA"
    );
    let again = portico::acme::CertStore::load(&store, &secret).await.unwrap().unwrap();
    assert_eq!(again, stored, "the stored certificate is untouched");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_before_expiry_without_breaking_open_connections() {
    let http_port = free_port();
    let pebble = Pebble::start(http_port, "127.0.0.1", &[]).await;
    let mut s = Setup::new(http_port).await;
    // The manager's clock runs `offset` seconds ahead of the real one (Pebble 2.4 always issues long-lived
    // certificates and instant-acme cannot ask for a short notAfter, so time is moved instead).
    let offset = Arc::new(AtomicI64::new(0));
    let o = offset.clone();
    let settings = Settings {
        clock: Arc::new(move || unix_now() + o.load(Ordering::Relaxed)),
        ..fast_settings()
    };
    s.start(&pebble.directory(), &pebble.ca_root(), settings).await;
    let root = pebble.issuing_root().await;
    let first = wait_served(s.https(), HOST, &root, Duration::from_secs(60)).await;

    // An open HTTP/1.1 connection over TLS, used before and after the renewal.
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let tcp = TcpStream::connect(s.https()).await.unwrap();
    let tls = TlsConnector::from(client_config(roots))
        .connect(ServerName::try_from(HOST.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let get = || {
        hyper::Request::get("/")
            .header("host", HOST)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(sender.send_request(get()).await.unwrap().status(), 200);

    // Move to the last fifth of the certificate's lifetime.
    let info = portico::certs::LoadedCert::from_tls_secret(
        &portico::source::file::state_from_yaml(&std::fs::read_to_string(s.secret_file()).unwrap(), "s")
            .0
            .secrets[0],
    )
    .unwrap()
    .info
    .clone();
    let lifetime = info.not_after - info.not_before;
    offset.store(info.not_after - lifetime / 5 - unix_now(), Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        let now = served_serial(s.https(), HOST, &root).await.unwrap();
        if now != first {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed: {:?}\n{}",
            s.status(),
            pebble.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    offset.store(0, Ordering::Relaxed);
    assert_ne!(first, second);
    let status = s.status();
    assert!(status.certificates_issued >= 2, "{status:?}");
    assert!(
        status.history.iter().any(|a| a.reason.contains("renewal")),
        "{status:?}"
    );
    // The connection opened before the renewal still works.
    let rsp = sender.send_request(get()).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let _ = rsp.into_body().collect().await.unwrap();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_ingress_gets_no_order() {
    let http_port = free_port();
    let pebble = Pebble::start(http_port, "127.0.0.1", &[]).await;
    let mut s = Setup::with_annotations(http_port, r#"portico.dev/acme: "false""#).await;
    s.start(&pebble.directory(), &pebble.ca_root(), fast_settings()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = s.status();
    assert_eq!(status.orders_started, 0, "{status:?}");
    assert!(!s.secret_file().exists());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_an_error_response_spaces_the_attempts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A CA that answers every request 503 with `Retry-After: 3` (maintenance, or a rate limit's 429).
    let ca_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ca_port = ca_listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = ca_listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"down for maintenance","status":503}"#;
                let rsp = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nRetry-After: 3\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(rsp.as_bytes()).await;
            });
        }
    });
    let mut s = Setup::new(free_port()).await;
    let ca_root = s.state.path().join("unused-ca.pem");
    std::fs::write(&ca_root, &TestCa::new().pem).unwrap();
    // Without Retry-After the next attempt would come after 50–100 ms.
    let settings = Settings {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        ..fast_settings()
    };
    s.start(&format!("http://127.0.0.1:{ca_port}/dir"), &ca_root, settings)
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.status().history.len() < 2 {
        assert!(Instant::now() < deadline, "no second attempt: {:?}", s.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = s.status().history;
    // (instant-acme parses the directory without looking at the status: the error is about JSON.)
    assert!(h[0].outcome.is_err() && h[1].outcome.is_err(), "{h:?}");
    let gap = h[1].started.duration_since(h[0].started).unwrap();
    // Retry-After counts from the response, which came a little after the attempt started.
    assert!(gap >= Duration::from_millis(2900), "{gap:?}");
    s.stop().await;
}

// === ACME Renewal Information (RFC 9773), through the loopback renewalInfo double in front of Pebble ===

/// Settings for the ARI tests: the manager's clock is `clock`; renewal information may be re-fetched after
/// 200 ms (instead of at least a minute) so the CA's `Retry-After` decides.
fn ari_settings(clock: &Arc<TestClock>) -> Settings {
    let c = clock.clone();
    Settings {
        clock: Arc::new(move || c.now()),
        ari_refetch_min: Duration::from_millis(200),
        ..fast_settings()
    }
}

/// The manager's clock: `offset` seconds ahead of the real one; with `while_serial`, only while the stored
/// certificate has that serial (so a certificate issued while the clock is ahead, itself then in the last
/// fifth of its lifetime, is not renewed again before the test moves the clock back).
struct TestClock {
    offset: AtomicI64,
    while_serial: std::sync::Mutex<Option<(PathBuf, String)>>,
}

impl TestClock {
    fn new() -> Arc<TestClock> {
        Arc::new(TestClock {
            offset: AtomicI64::new(0),
            while_serial: std::sync::Mutex::new(None),
        })
    }

    fn now(&self) -> i64 {
        let offset = self.offset.load(Ordering::Relaxed);
        if offset == 0 {
            return unix_now();
        }
        if let Some((file, serial)) = &*self.while_serial.lock().unwrap() {
            let stored = std::fs::read_to_string(file).ok().and_then(|text| {
                let state = portico::source::file::state_from_yaml(&text, "s").0;
                let l = portico::certs::LoadedCert::from_tls_secret(state.secrets.first()?).ok()?;
                Some(l.info.serial.clone())
            });
            if stored.as_ref() != Some(serial) {
                return unix_now();
            }
        }
        unix_now() + offset
    }
}

/// The stored certificate: its summary and its leaf's DER.
fn stored_leaf(s: &Setup) -> (Arc<portico::certs::CertInfo>, CertificateDer<'static>) {
    let text = std::fs::read_to_string(s.secret_file()).unwrap();
    let state = portico::source::file::state_from_yaml(&text, "s").0;
    let l = portico::certs::LoadedCert::from_tls_secret(&state.secrets[0]).unwrap();
    (l.info.clone(), l.chain()[0].clone())
}

/// The RFC 9773 §4.1 certificate ID, computed here without Portico's code: base64url of the AKI extension's
/// keyIdentifier, `.`, base64url of the serial number's DER value octets; the serial is checked against the
/// hex serial Portico reports.
fn ari_id(der: &[u8], serial_hex: &str) -> String {
    use base64::Engine;
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    let aki = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.35")
        .expect("Pebble's certificates carry an authority key identifier");
    // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING, ... } (short lengths).
    let v = aki.value;
    assert_eq!(v[0], 0x30, "SEQUENCE");
    assert_eq!(v[2], 0x80, "[0] keyIdentifier first");
    let key_id = &v[4..4 + v[3] as usize];
    let serial = cert.raw_serial();
    let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex.trim_start_matches('0'), serial_hex.trim_start_matches('0'));
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}", b64.encode(key_id), b64.encode(serial))
}

async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool, status: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: {}", status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the double was asked about the stored certificate (serial `serial`), after `since` when given;
/// returns that certificate's ID, computed here from its bytes.
async fn asked_about_stored(
    s: &Setup,
    double: &acme_pebble::ari::AriDouble,
    serial: &str,
    since: Option<Instant>,
    what: &str,
) -> String {
    let (_, der) = stored_leaf(s);
    let id = ari_id(&der, serial);
    wait_for(
        what,
        Duration::from_secs(10),
        || {
            double
                .asked()
                .iter()
                .any(|(t, a)| *a == id && since.is_none_or(|since| *t > since))
        },
        || format!("asked {:?}, expected {id}", double.asked()),
    )
    .await;
    id
}

/// Pebble, the renewalInfo double in front of it (answering `default`, `Retry-After: retry_after`), and a
/// gateway whose ACME directory is the double's; returns once Pebble's first certificate is served.
async fn ari_setup(
    default: acme_pebble::ari::Answer,
    retry_after: u64,
    clock: &Arc<TestClock>,
) -> (
    Setup,
    Pebble,
    acme_pebble::ari::AriDouble,
    CertificateDer<'static>,
    String,
) {
    let http_port = free_port();
    let pebble = Pebble::start(http_port, "127.0.0.1", &[]).await;
    let double = acme_pebble::ari::AriDouble::start(&pebble, default, retry_after).await;
    let mut s = Setup::new(http_port).await;
    s.start(&double.directory(), &pebble.ca_root(), ari_settings(clock))
        .await;
    let root = pebble.issuing_root().await;
    let first = wait_served(s.https(), HOST, &root, Duration::from_secs(60)).await;
    // The first order (and any retry of it) replaced nothing.
    assert!(
        !double.replaces().is_empty() && double.replaces().iter().all(Option::is_none),
        "{:?} {:?}",
        double.replaces(),
        s.status()
    );
    (s, pebble, double, root, first)
}

async fn wait_new_serial(s: &Setup, root: &CertificateDer<'static>, old: &str, within: Duration, why: &str) -> String {
    let deadline = Instant::now() + within;
    loop {
        let now = served_serial(s.https(), HOST, root).await.unwrap();
        if now != old {
            return now;
        }
        assert!(Instant::now() < deadline, "{why}: not renewed: {:?}", s.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ari_open_window_renews_early_and_the_order_replaces_the_old_certificate() {
    let clock = TestClock::new();
    let (mut s, _pebble, double, root, first) = ari_setup(acme_pebble::ari::Answer::far_future(), 1, &clock).await;
    let info = stored_leaf(&s).0;
    assert_eq!(info.serial, first);
    // The gateway asks the CA about the certificate it got, by the ID computed here independently.
    let id = asked_about_stored(
        &s,
        &double,
        &first,
        None,
        "renewal information asked for the new certificate",
    )
    .await;
    // The CA opens the window (e.g. the certificate is to be revoked).
    double.set(|st| {
        st.per_id.insert(id.clone(), acme_pebble::ari::Answer::open_for(2));
    });
    let second = wait_new_serial(&s, &root, &first, Duration::from_secs(30), "window open").await;
    assert_ne!(second, first);
    // Long before a third of the lifetime was left (the manager's clock is the real one).
    assert!(info.remaining_lifetime_fraction(unix_now()) > 0.9);
    let status = s.status();
    assert_eq!(status.certificates_issued, 2, "{status:?}");
    assert!(
        status.history.last().unwrap().reason.contains("renewal window"),
        "{status:?}"
    );
    // The renewal order named the certificate it replaces (and Pebble 2.4 accepted the extra field).
    assert_eq!(double.replaces().last(), Some(&Some(id.clone())));
    assert_eq!(double.replaces().iter().flatten().count(), 1, "{:?}", double.replaces());
    // The new certificate (window a year ahead) gets its own question and no further order.
    asked_about_stored(
        &s,
        &double,
        &second,
        None,
        "renewal information asked for the renewed certificate",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let status = s.status();
    assert_eq!(status.certificates_issued, 2, "{status:?}");
    assert_eq!(double.replaces().iter().flatten().count(), 1, "{:?}", double.replaces());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ari_window_ahead_outranks_the_one_third_rule() {
    let clock = TestClock::new();
    let (mut s, _pebble, double, root, first) = ari_setup(acme_pebble::ari::Answer::far_future(), 1, &clock).await;
    let (info, der) = stored_leaf(&s);
    let id = ari_id(&der, &first);
    // Where the clock will be: in the last fifth of the lifetime (the 1/3 rule says renew). The CA's window
    // is a month after that.
    let lifetime = info.not_after - info.not_before;
    let moved = info.not_after - lifetime / 5;
    double.set(|st| {
        st.per_id.insert(
            id.clone(),
            acme_pebble::ari::Answer::Window {
                start: moved + 30 * DAY,
                end: moved + 31 * DAY,
            },
        );
    });
    // Wait until the gateway has fetched the new window (Retry-After: 1 s), then move its clock.
    asked_about_stored(&s, &double, &first, Some(Instant::now()), "re-fetch").await;
    clock.offset.store(moved - unix_now(), Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let status = s.status();
    assert_eq!(status.certificates_issued, 1, "{status:?}");
    assert!(
        status.history.iter().all(|a| a.reason == "no usable certificate"),
        "{status:?}"
    );
    assert_eq!(served_serial(s.https(), HOST, &root).await.unwrap(), first);
    // Meanwhile it kept asking (every second), so the window was current.
    let asks = double.asked().iter().filter(|(_, a)| *a == id).count();
    assert!(asks >= 3, "{asks}");
    s.stop().await;
}

/// Moves the manager's clock to the last fifth of the stored certificate's lifetime (while it is stored) until
/// a certificate is issued, then back.
async fn renew_by_the_clock(s: &Setup, clock: &Arc<TestClock>, why: &str) {
    let (info, _) = stored_leaf(s);
    let issued = s.status().certificates_issued;
    *clock.while_serial.lock().unwrap() = Some((s.secret_file(), info.serial.clone()));
    clock.offset.store(
        info.not_after - (info.not_after - info.not_before) / 5 - unix_now(),
        Ordering::Relaxed,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.status().certificates_issued == issued {
        assert!(Instant::now() < deadline, "{why}: not renewed: {:?}", s.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clock.offset.store(0, Ordering::Relaxed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ari_errors_and_garbage_fall_back_to_the_one_third_rule() {
    let clock = TestClock::new();
    let (mut s, _pebble, double, root, first) = ari_setup(acme_pebble::ari::Answer::Status(500), 1, &clock).await;
    let id = asked_about_stored(&s, &double, &first, None, "renewal information asked").await;
    // Nothing happens while more than a third is left...
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.status().certificates_issued, 1, "{:?}", s.status());
    // ...and the 1/3 rule renews although renewal information fails (500).
    renew_by_the_clock(&s, &clock, "500").await;
    let second = wait_new_serial(&s, &root, &first, Duration::from_secs(10), "500").await;
    // The directory offers renewalInfo, so the renewal still says what it replaces.
    assert_eq!(double.replaces().last(), Some(&Some(id.clone())));
    assert!(
        s.status()
            .history
            .iter()
            .any(|a| a.reason == "certificate due for renewal"),
        "{:?}",
        s.status()
    );

    // Renewal information that is not JSON: the same. And this time the CA ignores `replaces` (does not
    // reflect it): the order is placed again without it.
    double.set(|st| {
        st.default = acme_pebble::ari::Answer::Garbage;
        st.reflect_replaces = false;
    });
    let id2 = asked_about_stored(
        &s,
        &double,
        &second,
        Some(Instant::now()),
        "renewal information asked after the switch",
    )
    .await;
    renew_by_the_clock(&s, &clock, "garbage").await;
    wait_new_serial(&s, &root, &second, Duration::from_secs(10), "garbage").await;
    let replaces = double.replaces();
    let at = replaces
        .iter()
        .position(|r| *r == Some(id2.clone()))
        .expect("an order replacing the second certificate");
    assert_eq!(replaces.get(at + 1), Some(&None), "{replaces:?}");
    let status = s.status();
    assert_eq!(status.certificates_issued, 3, "{status:?}");
    assert!(status.history.iter().all(|a| a.outcome.is_ok()), "{status:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ari_retry_after_decides_when_the_window_is_fetched_again() {
    let clock = TestClock::new();
    // Retry-After: 2 s; the manager looks at the certificate every 200 ms and could re-fetch after 200 ms.
    let (mut s, _pebble, double, root, first) = ari_setup(acme_pebble::ari::Answer::far_future(), 2, &clock).await;
    let id = asked_about_stored(&s, &double, &first, None, "renewal information asked").await;
    // The window moves into the past right after the first answer (a revocation).
    double.set(|st| {
        let now = unix_now();
        st.per_id.insert(
            id.clone(),
            acme_pebble::ari::Answer::Window {
                start: now - 120,
                end: now - 60,
            },
        );
    });
    let second = wait_new_serial(&s, &root, &first, Duration::from_secs(30), "moved window").await;
    assert_ne!(second, first);
    let asks: Vec<Instant> = double
        .asked()
        .iter()
        .filter(|(_, a)| *a == id)
        .map(|(t, _)| *t)
        .collect();
    // Asked again once, after the CA's Retry-After (not after 200 ms), and that answer renewed it.
    assert_eq!(asks.len(), 2, "{asks:?}");
    let gap = asks[1] - asks[0];
    assert!(gap >= Duration::from_millis(1800), "{gap:?}");
    assert_eq!(double.replaces().last(), Some(&Some(id)));
    assert_eq!(double.replaces().iter().flatten().count(), 1, "{:?}", double.replaces());
    s.stop().await;
}
