//! Client certificates (`auth-tls-*`) end to end over real TLS: a certificate from the Ingress's CA reaches the
//! backend with ingress-nginx's `ssl-client-*` headers; none, one from another CA, an expired one, or one too
//! deep in its chain does not; `optional` and the error page; a reused HTTP/2 connection from a host without
//! client certificates gets 421; a missing CA Secret disables only its Ingress.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico::certs::testing::{key, TestCa, DAY};
use portico::certs::unix_now;
use portico::echo::EchoServer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const HOSTS: [&str; 5] = ["secure", "optional", "page", "open", "broken"];

struct Setup {
    gw: Gateway,
    server_ca: TestCa,
    client_ca: TestCa,
    backend: EchoServer,
}

fn ingress(name: &str, annotations: &[(&str, &str)]) -> String {
    let ann: String = annotations.iter().map(|(k, v)| format!("    {k}: {v:?}\n")).collect();
    let ann = if ann.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{ann}")
    };
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: default
{ann}spec:
  ingressClassName: portico
  tls: [{{hosts: [{name}.example.test], secretName: wild-tls}}]
  rules: [{{host: {name}.example.test, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}]}}}}]
"#
    )
}

async fn setup() -> Setup {
    let (server_ca, client_ca) = (TestCa::new(), TestCa::new());
    let backend = EchoServer::start("app", "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let wild = server_ca.issue_pem(&["*.example.test"], &k, unix_now() - DAY, unix_now() + 30 * DAY);
    let mut m = service("default", "app", &[backend.addr]);
    m += &tls_secret("wild-tls", &wild, &k.serialize_pem());
    m += &ca_secret("default", "client-ca", &client_ca.pem);
    let ca = ("nginx.ingress.kubernetes.io/auth-tls-secret", "default/client-ca");
    m += &ingress(
        "secure",
        &[
            ca,
            (
                "nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream",
                "true",
            ),
        ],
    );
    m += &ingress(
        "optional",
        &[ca, ("nginx.ingress.kubernetes.io/auth-tls-verify-client", "optional")],
    );
    m += &ingress(
        "page",
        &[
            ("portico.dev/auth-tls-secret", "client-ca"),
            (
                "portico.dev/auth-tls-error-page",
                "https://login.example.test/no-certificate",
            ),
        ],
    );
    m += &ingress("open", &[]);
    m += &ingress(
        "broken",
        &[("nginx.ingress.kubernetes.io/auth-tls-secret", "default/nope")],
    );
    let gw = Gateway::start_with(TLS_SET, &m).await;
    Setup {
        gw,
        server_ca,
        client_ca,
        backend,
    }
}

impl Setup {
    fn https(&self) -> SocketAddr {
        self.gw.running().https_addrs[0][0]
    }

    /// A client trusting the gateway's CA, presenting `identity` (certificate chain PEM, key PEM) if given.
    fn client(&self, identity: Option<(String, String)>, alpn: &[u8]) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.der.clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
                builder
                    .with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap())
                    .unwrap()
            }
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    /// A client certificate for `cn` from `ca`, valid until `not_after`.
    fn identity(ca: &TestCa, cn: &str, not_after: i64) -> (String, String) {
        let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        (
            ca.issue_client_pem(cn, &k, unix_now() - 2 * DAY, not_after),
            k.serialize_pem(),
        )
    }

    /// One HTTP/1.1 GET over a new connection with SNI `host`; `Err` when the handshake or the request fails.
    async fn get(
        &self,
        identity: Option<(String, String)>,
        host: &str,
        extra: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let tls = connect(self.client(identity, b"http/1.1"), self.https(), host).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::get("/who").header("host", host);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(read(resp).await)
    }
}

async fn connect(config: Arc<ClientConfig>, addr: SocketAddr, sni: &str) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(config)
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body }
}

#[tokio::test]
async fn client_certificates_from_the_ingress_ca_reach_the_backend_and_nothing_else_does() {
    let s = setup().await;
    let year = unix_now() + 365 * DAY;
    let alice = Setup::identity(&s.client_ca, "alice", year);

    // A certificate from the Ingress's CA: the backend gets the verification, the names and the certificate.
    let r = s
        .get(
            Some(alice.clone()),
            "secure.example.test",
            &[("ssl-client-verify", "FORGED")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.backend.requests();
    let h = &seen.last().unwrap().headers;
    assert_eq!(h["ssl-client-verify"], "SUCCESS");
    assert_eq!(h["ssl-client-subject-dn"], "O=Portico Clients,CN=alice");
    assert_eq!(h["ssl-client-issuer-dn"], "O=Portico,CN=Portico Test Root CA");
    let pem = h["ssl-client-cert"].to_str().unwrap();
    assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
    let count = seen.len();

    // No certificate where one is required: 400, and the backend never sees it.
    let r = s.get(None, "secure.example.test", &[]).await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("no required SSL certificate"), "{}", r.text());
    // A certificate from another CA, an expired one, or one behind an intermediate (depth 1): no answer at all.
    let other = Setup::identity(&TestCa::new(), "mallory", year);
    let expired = Setup::identity(&s.client_ca, "alice", unix_now() - DAY);
    let inter = s.client_ca.intermediate();
    let (leaf, k) = Setup::identity(&inter, "deep", year);
    let deep = (format!("{leaf}{}", inter.pem), k);
    for (what, id) in [("other CA", other), ("expired", expired), ("too deep", deep)] {
        let r = s.get(Some(id), "secure.example.test", &[]).await;
        let e = r.map(|r| r.status).unwrap_err();
        // The server's verifier refused the certificate: a TLS alert, not an HTTP answer.
        assert!(e.contains("AlertReceived") || e.contains("alert"), "{what}: {e}");
    }
    assert_eq!(s.backend.requests().len(), count, "refused clients reached the backend");

    // optional: without a certificate the request goes through, marked NONE (a client's own header replaced).
    let r = s
        .get(None, "optional.example.test", &[("ssl-client-verify", "SUCCESS")])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let seen = s.backend.requests();
    let h = &seen.last().unwrap().headers;
    assert_eq!(h["ssl-client-verify"], "NONE");
    assert!(!h.contains_key("ssl-client-subject-dn"));
    let r = s.get(Some(alice.clone()), "optional.example.test", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    let seen = s.backend.requests();
    let h = &seen.last().unwrap().headers;
    assert_eq!(h["ssl-client-verify"], "SUCCESS");
    assert!(!h.contains_key("ssl-client-cert"), "not passed unless asked");

    // The error page: a redirect instead of 400.
    let r = s.get(None, "page.example.test", &[]).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "https://login.example.test/no-certificate");

    // A host without client certificates is unaffected, with or without one.
    assert_eq!(s.get(None, "open.example.test", &[]).await.unwrap().status, 200);
    assert_eq!(s.get(Some(alice), "open.example.test", &[]).await.unwrap().status, 200);
    s.gw.stop().await;
}

#[tokio::test]
async fn a_connection_made_for_another_host_gets_421_and_a_missing_ca_disables_only_its_ingress() {
    let s = setup().await;
    // HTTP/2 to open.example.test, whose (wildcard) certificate also covers secure.example.test: reusing the
    // connection for the host that needs client certificates is 421, not a way around them.
    let tls = connect(s.client(None, b"h2"), s.https(), "open.example.test")
        .await
        .unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let before = s.backend.requests().len();
    for (host, status) in [
        ("secure.example.test", 421),
        ("open.example.test", 200),
        ("optional.example.test", 421),
    ] {
        let req = http::Request::get(format!("https://{host}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let r = read(h2.send_request(req).await.unwrap()).await;
        assert_eq!(r.status, status, "{host}");
    }
    assert_eq!(s.backend.requests().len(), before + 1);

    // The Ingress naming a missing CA Secret is not served; the others are.
    let t = s.gw.running().shared.last_translation().unwrap();
    assert!(
        t.diagnostics.iter().any(|d| {
            let d = d.to_string();
            d.starts_with("Ingress default/broken:") && d.contains("CA Secret default/nope") && d.contains("not found")
        }),
        "{:?}",
        t.diagnostics
    );
    // Its host has no certificate of its own any more; on a connection whose certificate covers it: 404.
    let req = http::Request::get("https://broken.example.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(read(h2.send_request(req).await.unwrap()).await.status, 404);
    for h in HOSTS {
        assert!(
            t.describe().contains(&format!("{h}.example.test")) || h == "broken",
            "{h}"
        );
    }
    s.gw.stop().await;
}

#[tokio::test]
async fn a_certificate_revoked_by_the_secrets_crl_is_refused() {
    let s = setup().await;
    let year = unix_now() + 365 * DAY;
    let (alice, bob) = (
        Setup::identity(&s.client_ca, "alice", year),
        Setup::identity(&s.client_ca, "bob", year),
    );
    assert_eq!(
        s.get(Some(bob.clone()), "secure.example.test", &[])
            .await
            .unwrap()
            .status,
        200
    );
    // The same Secret, now with a ca.crt and a ca.crl revoking bob's certificate.
    let crl = s.client_ca.crl_pem(&[&bob.0]);
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: client-ca, namespace: default}}\ntype: Opaque\nstringData:\n  ca.crt: |\n{}  ca.crl: |\n{}",
        indent(&s.client_ca.pem),
        indent(&crl)
    );
    let text = std::fs::read_to_string(s.gw.manifest_path()).unwrap();
    let start = text.find("kind: Secret\nmetadata: {name: client-ca").unwrap();
    let start = text[..start].rfind("---\n").unwrap();
    let end = text[start + 4..]
        .find("\n---\n")
        .map_or(text.len(), |i| start + 4 + i + 1);
    s.gw.rewrite(&format!("{}{secret}{}", &text[..start], &text[end..]))
        .await;
    let t = s.gw.running().shared.last_translation().unwrap();
    assert_eq!(t.errors(), 1, "{}", t.describe());
    let e = s
        .get(Some(bob), "secure.example.test", &[])
        .await
        .map(|r| r.status)
        .unwrap_err();
    assert!(e.contains("AlertReceived"), "{e}");
    assert_eq!(
        s.get(Some(alice), "secure.example.test", &[]).await.unwrap().status,
        200
    );
    s.gw.stop().await;
}
