//! The README's quickstart: the example manifests with example backends on their documented ports answer the
//! documented curl lines as README says, over HTTP and HTTPS.

use std::net::SocketAddr;
use std::time::Duration;

use portico::config::Config;
use portico::echo::EchoServer;
use rustls_pki_types::pem::PemObject;

#[tokio::test]
async fn readme_curl_lines_answer_as_documented() {
    let mut backends = Vec::new();
    for (name, port) in [
        ("jenkins", 9101),
        ("argocd", 9102),
        ("shop-api", 9103),
        ("shop-web", 9104),
        ("preview", 9105),
        ("fallback", 9106),
    ] {
        backends.push(
            EchoServer::start(name, SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .unwrap(),
        );
    }
    let mut config = Config::default();
    config.listener_sets[0].http = vec!["127.0.0.1:0".parse().unwrap()];
    config.listener_sets[0].https = vec!["127.0.0.1:0".parse().unwrap()];
    config.admin.address = "127.0.0.1:0".parse().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/manifests");
    let running = portico::app::start(
        config,
        portico::app::Source::Manifests {
            dir,
            poll_interval: Duration::from_secs(1),
        },
    )
    .await
    .unwrap();
    let addr = running.http_addrs[0][0];
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    for (host, path, status, backend, uri) in [
        ("jenkins.local", "/", 200, Some("jenkins"), "/"),
        ("argocd.local", "/applications", 200, Some("argocd"), "/applications"),
        (
            "shop.local",
            "/api/orders?id=7",
            200,
            Some("shop-api"),
            "/api/orders?id=7",
        ),
        ("shop.local", "/cart", 200, Some("shop-web"), "/cart"),
        ("pr-42.preview.local", "/", 200, Some("preview"), "/"),
        ("unknown.local", "/", 200, Some("fallback"), "/"),
        ("shop.local", "/a/%2e%2e/%2e%2e/etc/passwd", 400, None, ""),
    ] {
        let req = http::Request::get(format!("http://{addr}{path}"))
            .header("host", host)
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{host}{path}");
        let got = resp.headers().get("x-backend").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(got.as_deref(), backend, "{host}{path}");
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        if let Some(b) = backend {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["backend"], b);
            assert_eq!(json["uri"], uri);
            assert_eq!(json["headers"]["host"], host);
        } else {
            assert_eq!(
                String::from_utf8_lossy(&body),
                "400 Bad Request: path climbs above the root\n"
            );
        }
    }
    // Plain HTTP to the TLS host: 308 to HTTPS.
    let req = http::Request::get(format!("http://{addr}/cart"))
        .header("host", "secure.local")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 308);
    let https = running.https_addrs[0][0];
    assert_eq!(
        resp.headers()["location"],
        format!("https://secure.local:{}/cart", https.port()).as_str()
    );

    // HTTPS with the example CA, as README's curl --cacert line does: verified, routed, HSTS set.
    let ca = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/example-ca.pem"))
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(rustls_pki_types::ServerName::try_from("secure.local").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "secure.local")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-backend"], "shop-web");
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=300");

    // `curl -sk -H 'Host: secure.local' https://127.0.0.1:8443/`: by IP, so no SNI; routed by Host.
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(portico::certs::testing::accept_any_client(true))
        .connect(rustls_pki_types::ServerName::IpAddress(https.ip().into()), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "secure.local")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-backend"], "shop-web");
    running.shutdown().await;
}
