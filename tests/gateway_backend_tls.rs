//! BackendTLSPolicy in file mode, end to end over loopback with real TLS backends and certificates made here:
//! a backendRef to a Service port a valid policy targets goes over TLS verified by the policy (its CA ConfigMap or
//! Secret, its hostname or subjectAltNames); a wrong CA or name fails the handshake (502, never plaintext); a
//! Service port whose `appProtocol` needs TLS without a policy, or one whose policy is invalid, is unresolved (its
//! share answers 500) with a diagnostic naming the object and field; a GRPCRoute reaches an h2 backend over TLS.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use support::*;
use tokio::net::TcpStream;

const GATEWAY_ONLY: &str = r#"
listenerSets: []
admin: { address: "127.0.0.1:0" }
"#;

const CLASS: &str = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n";

fn gateway(port: u16) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: portico\n  addresses: [{{type: IPAddress, value: 127.0.0.1}}]\n  listeners:\n  - {{name: http, protocol: HTTP, port: {port}}}\n"
    )
}

/// A Service (port 80 named `http`) whose port has `appProtocol` when given.
fn svc(name: &str, addr: SocketAddr, app_protocol: Option<&str>) -> String {
    let s = service("default", name, &[addr]);
    match app_protocol {
        None => s,
        Some(p) => s.replace(
            "spec: {ports: [{name: http, port: 80}]}",
            &format!("spec: {{ports: [{{name: http, port: 80, appProtocol: {p}}}]}}"),
        ),
    }
}

fn ca_config_map(name: &str, ca_pem: &str) -> String {
    let indent: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata:\n  ca.crt: |\n{indent}")
}

/// A BackendTLSPolicy for Service `target` (its port `http` with `section`), with `validation` as flow YAML.
fn policy(name: &str, target: &str, section: bool, validation: &str) -> String {
    let section = if section { ", sectionName: http" } else { "" };
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: {target}{section}}}]\n  validation: {validation}\n"
    )
}

fn ca_ref(kind: &str, name: &str) -> String {
    format!("[{{group: \"\", kind: {kind}, name: {name}}}]")
}

const ROUTES: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: tls, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [tls.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /good}}]
    backendRefs: [{name: good, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /secret-ca}}]
    backendRefs: [{name: secret-ca, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /alt-names}}]
    backendRefs: [{name: alt-names, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /wrong-ca}}]
    backendRefs: [{name: wrong-ca, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /wrong-name}}]
    backendRefs: [{name: wrong-name, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /no-policy}}]
    backendRefs: [{name: no-policy, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /bad-ca}}]
    backendRefs: [{name: bad-ca, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /plain}}]
    backendRefs: [{name: plain, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.test]
  rules:
  - backendRefs: [{name: grpc, port: 80}]
"#;

struct Setup {
    manifests: String,
    /// Backends that must never see a request (a plaintext echo behind `appProtocol: https`).
    no_policy: portico::echo::EchoServer,
    plain: portico::echo::EchoServer,
    port: u16,
}

async fn setup() -> Setup {
    let ca = portico::certs::testing::TestCa::new();
    let other_ca = portico::certs::testing::TestCa::new();
    let name = "backend.internal";
    let good = tls_backend(&ca, &[name], b"http/1.1").await;
    let secret_ca = tls_backend(&ca, &[name], b"http/1.1").await;
    let alt_names = tls_backend(&ca, &["alt.internal"], b"http/1.1").await;
    let wrong_ca = tls_backend(&other_ca, &[name], b"http/1.1").await;
    let wrong_name = tls_backend(&ca, &["someone.else"], b"http/1.1").await;
    let grpc = tls_backend(&ca, &["grpc.internal"], b"h2").await;
    let bad_ca = tls_backend(&ca, &[name], b"http/1.1").await;
    let no_policy = echo("no-policy").await;
    let plain = echo("plain").await;
    let port = free_port();
    let cm = ca_ref("ConfigMap", "backend-ca");
    let hostname = format!("{{hostname: {name}, caCertificateRefs: {cm}}}");
    let manifests = [
        CLASS.to_string(),
        gateway(port),
        ca_config_map("backend-ca", &ca.pem),
        ca_config_map("junk-ca", "not a certificate"),
        ca_secret("default", "backend-ca-secret", &ca.pem),
        svc("good", good, Some("https")),
        policy("good", "good", true, &hostname),
        svc("secret-ca", secret_ca, None),
        policy(
            "secret-ca",
            "secret-ca",
            false,
            &format!("{{hostname: {name}, caCertificateRefs: {}}}", ca_ref("Secret", "backend-ca-secret")),
        ),
        svc("alt-names", alt_names, Some("https")),
        policy(
            "alt-names",
            "alt-names",
            false,
            &format!("{{hostname: {name}, caCertificateRefs: {cm}, subjectAltNames: [{{type: Hostname, hostname: alt.internal}}]}}"),
        ),
        svc("wrong-ca", wrong_ca, Some("https")),
        policy("wrong-ca", "wrong-ca", false, &hostname),
        svc("wrong-name", wrong_name, Some("https")),
        policy("wrong-name", "wrong-name", false, &hostname),
        svc("no-policy", no_policy.addr, Some("HTTPS")),
        svc("bad-ca", bad_ca, Some("kubernetes.io/wss")),
        policy(
            "bad-ca",
            "bad-ca",
            false,
            &format!("{{hostname: {name}, caCertificateRefs: {}}}", ca_ref("ConfigMap", "junk-ca")),
        ),
        svc("plain", plain.addr, None),
        policy("no-such-port", "plain", false, &hostname).replace("name: plain}", "name: plain, sectionName: https}"),
        svc("grpc", grpc, Some("kubernetes.io/h2c")),
        policy(
            "grpc",
            "grpc",
            false,
            &format!("{{hostname: grpc.internal, caCertificateRefs: {cm}}}"),
        ),
        ROUTES.to_string(),
    ]
    .concat();
    Setup {
        manifests,
        no_policy,
        plain,
        port,
    }
}

async fn get_tls(addr: SocketAddr, path: &str) -> Reply {
    send(addr, http::Method::GET, "tls.test", path, &[], Bytes::new()).await
}

#[tokio::test]
async fn backend_tls_policies_verify_backends_and_fail_closed() {
    let s = setup().await;
    let gw = Gateway::start_with(GATEWAY_ONLY, &s.manifests).await;
    let addr = bound(s.port).await;
    // The policy's CA signed the backend's certificate and its hostname is in it: over TLS (the backend says so).
    for path in ["/good", "/secret-ca", "/alt-names"] {
        let r = get_tls(addr, path).await;
        assert_eq!((r.status, r.text().as_str()), (200, "tls HTTP/1.1"), "{path}");
    }
    // An untrusted issuer, or a certificate for another name: the handshake fails, 502 as for Ingress backends.
    for path in ["/wrong-ca", "/wrong-name"] {
        let r = get_tls(addr, path).await;
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        assert!(r.text().contains("TLS"), "{path}: {}", r.text());
    }
    // appProtocol https without a policy, or a policy whose CA ConfigMap holds no certificate: unresolved, 500,
    // and nothing sent in plaintext.
    for path in ["/no-policy", "/bad-ca"] {
        assert_eq!(get_tls(addr, path).await.status, 500, "{path}");
    }
    assert!(s.no_policy.requests().is_empty(), "nothing sent in plaintext");
    // A Service no policy targets is plain HTTP as before.
    assert_eq!(get_tls(addr, "/plain").await.status, 200);
    assert_eq!(s.plain.requests().len(), 1);

    // GRPCRoute to an h2 backend over TLS (ALPN h2), trailers through.
    let r = grpc_unary(addr, "http://grpc.test/echo.Echo/Unary").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.trailers["grpc-status"], "0", "trailers passed through");
    assert_eq!(r.body.as_ref(), &[0, 0, 0, 0, 2, b'o', b'k']);

    let diagnostics = gw.running().shared.last_translation().unwrap().describe_diagnostics();
    for says in [
        "BackendTLSPolicy default/bad-ca: spec.validation.caCertificateRefs[0]: ConfigMap default/junk-ca key ca.crt",
        "BackendTLSPolicy default/no-such-port: spec.targetRefs[0]: Service default/plain has no port named https",
        "HTTPRoute default/tls: spec.rules[5].backendRefs[0]: Service default/no-policy port 80 has appProtocol HTTPS, and no BackendTLSPolicy",
        "HTTPRoute default/tls: spec.rules[6].backendRefs[0]: Service default/bad-ca port 80 is targeted by BackendTLSPolicy default/bad-ca, which cannot be used",
    ] {
        assert!(diagnostics.contains(says), "{says}\n{diagnostics}");
    }
    gw.stop().await;
}

#[test]
fn check_shows_backend_tls() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(setup());
    let (code, text) = portico_check(&s.manifests, GATEWAY_ONLY);
    assert_eq!(code, Some(1), "{text}");
    for says in [
        "[tls good name=backend.internal policy=default/good]",
        "[tls grpc name=grpc.internal policy=default/grpc] [h2]",
        "BackendTLSPolicy default/bad-ca: spec.validation.caCertificateRefs[0]",
    ] {
        assert!(text.contains(says), "{says}\n{text}");
    }
}

/// A WebSocket backend behind TLS (certificate for `names` from `ca`): answers an upgrade with 101 and echoes
/// the tunnel's bytes.
async fn wss_backend(ca: &portico::certs::testing::TestCa, names: &[&str]) -> SocketAddr {
    let acceptor = tls_acceptor(ca, names, &[b"http/1.1"]);
    serve_tls_each(acceptor, |tls| serve_websocket_echo(tls, b"not an upgrade")).await
}

/// `appProtocol: kubernetes.io/wss` with a policy: the upgrade goes over TLS to the backend and the tunnel
/// carries bytes both ways.
#[tokio::test]
async fn websocket_upgrades_tunnel_over_backend_tls() {
    use tokio::io::AsyncWriteExt;
    let ca = portico::certs::testing::TestCa::new();
    let backend = wss_backend(&ca, &["ws.internal"]).await;
    let port = free_port();
    let manifests = [
        CLASS.to_string(),
        gateway(port),
        ca_config_map("backend-ca", &ca.pem),
        svc("wss", backend, Some("kubernetes.io/wss")),
        policy(
            "wss",
            "wss",
            true,
            &format!("{{hostname: ws.internal, caCertificateRefs: {}}}", ca_ref("ConfigMap", "backend-ca")),
        ),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: ws, namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  hostnames: [ws.test]\n  rules:\n  - backendRefs: [{name: wss, port: 80}]\n".to_string(),
    ]
    .concat();
    let gw = Gateway::start_with(GATEWAY_ONLY, &manifests).await;
    let addr = bound(port).await;
    // A plain request: over TLS, HTTP/1.1.
    let r = send(addr, http::Method::GET, "ws.test", "/", &[], Bytes::new()).await;
    assert_eq!((r.status, r.text().as_str()), (200, "not an upgrade"));
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(
        b"GET /socket HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_response_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_tunnel_echoes(&mut c, 3).await;
    gw.stop().await;
}
