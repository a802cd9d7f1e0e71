//! Forward auth and basic auth, end to end over loopback: the gateway in file mode, echo backends, and a small
//! implementation of oauth2-proxy's contract (`/oauth2/auth`: 202 with `X-Auth-Request-User`/`-Email` for a valid
//! cookie, else 401; `/oauth2/start?rd=...`: the sign-in page).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use support::*;

/// The loopback oauth2-proxy: counts `/oauth2/auth` calls and keeps the last one's headers.
struct AuthService {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<http::HeaderMap>>>,
}

impl AuthService {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new(None));
        let (c, l) = (calls.clone(), last.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (c, l) = (c.clone(), l.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, c.clone(), l.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, calls, last }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn last(&self, name: &str) -> Option<String> {
        let last = self.last.lock().unwrap();
        last.as_ref()?.get(name).map(|v| v.to_str().unwrap().to_string())
    }
}

async fn answer(
    req: Request<Incoming>,
    calls: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<http::HeaderMap>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: u16, headers: &[(&str, &str)], body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        Ok(r)
    };
    match req.uri().path() {
        "/oauth2/auth" => {
            calls.fetch_add(1, Ordering::SeqCst);
            *last.lock().unwrap() = Some(req.headers().clone());
            let valid = req
                .headers()
                .get_all("cookie")
                .iter()
                .any(|v| v.to_str().unwrap_or("").contains("_oauth2_proxy=valid"));
            if valid {
                reply(
                    202,
                    &[
                        ("x-auth-request-user", "alice"),
                        ("x-auth-request-email", "alice@example.test"),
                    ],
                    "",
                )
            } else {
                reply(
                    401,
                    &[
                        ("www-authenticate", "Bearer realm=\"oauth2\""),
                        ("set-cookie", "csrf=1; Path=/"),
                    ],
                    "unauthorized by oauth2-proxy\n",
                )
            }
        }
        "/forbidden" => reply(403, &[], "forbidden by policy\n"),
        "/slow" => {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
            reply(200, &[], "")
        }
        "/broken" => {
            calls.fetch_add(1, Ordering::SeqCst);
            reply(500, &[], "oops")
        }
        _ => reply(404, &[], ""),
    }
}

fn forward_ingress(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    annotated_ingress("default", name, host, "app", annotations)
}

#[tokio::test]
async fn forward_auth_with_oauth2_proxy() {
    let auth = AuthService::start().await;
    let app = echo("app").await;
    let a = auth.addr;
    let url = format!("http://{a}/oauth2/auth");
    let mut m = service("default", "app", &[app.addr]);
    m += &forward_ingress(
        "signin",
        "app.example",
        &[
            ("nginx.ingress.kubernetes.io/auth-url", &url),
            (
                "nginx.ingress.kubernetes.io/auth-signin",
                "https://auth.example/oauth2/start",
            ),
            (
                "nginx.ingress.kubernetes.io/auth-response-headers",
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
        ],
    );
    m += &forward_ingress("plain", "plain.example", &[("portico.dev/auth-url", &url)]);
    // ingress-nginx's usual oauth2-proxy setup: the redirect parameter written into the sign-in URL.
    m += &forward_ingress(
        "template",
        "template.example",
        &[
            ("nginx.ingress.kubernetes.io/auth-url", &url),
            (
                "nginx.ingress.kubernetes.io/auth-signin",
                "https://auth.example/oauth2/start?rd=$scheme://$host$escaped_request_uri",
            ),
        ],
    );
    m += &forward_ingress(
        "forbidden",
        "forbidden.example",
        &[("portico.dev/auth-url", &format!("http://{a}/forbidden"))],
    );
    m += &forward_ingress(
        "cached",
        "cached.example",
        &[
            ("nginx.ingress.kubernetes.io/auth-url", &url),
            (
                "nginx.ingress.kubernetes.io/auth-response-headers",
                "X-Auth-Request-User",
            ),
            ("nginx.ingress.kubernetes.io/auth-cache-key", "$cookie__oauth2_proxy"),
            ("nginx.ingress.kubernetes.io/auth-cache-duration", "202 5m"),
        ],
    );
    // Basic auth and forward auth together: both must agree.
    m += &opaque_secret("users", &[("auth", "sid:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=")]);
    m += &forward_ingress(
        "both",
        "both.example",
        &[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "users"),
            ("nginx.ingress.kubernetes.io/auth-url", &url),
        ],
    );
    let gw = Gateway::start(&m).await;
    let g = gw.addr(0);
    let valid = ("cookie", "_oauth2_proxy=valid");

    let calls = auth.calls();
    assert_eq!(get(g, "both.example", "/").await.status, 401, "no password");
    assert_eq!(auth.calls(), calls, "basic auth answered before the subrequest");
    let right = basic("sid", "secret");
    let with_password = [("authorization", right.as_str())];
    let r = send(g, http::Method::GET, "both.example", "/", &with_password, Bytes::new()).await;
    assert_eq!(r.status, 401, "the password, but no session");
    assert_eq!(r.headers.get("www-authenticate").unwrap(), "Bearer realm=\"oauth2\"");
    let both = [("authorization", right.as_str()), valid];
    for _ in 0..2 {
        let r = send(g, http::Method::GET, "both.example", "/", &both, Bytes::new()).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(app.count(), 2);

    // Allowed: the backend gets the user headers from the auth answer, not the client's.
    let r = send(
        g,
        http::Method::GET,
        "app.example",
        "/orders?id=7",
        &[
            valid,
            ("x-auth-request-user", "mallory"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-prefix", "/evil"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = app.requests().pop().unwrap();
    let users: Vec<_> = seen.headers.get_all("x-auth-request-user").iter().collect();
    assert_eq!(users, ["alice"], "the client's value is replaced");
    assert_eq!(seen.headers.get("x-auth-request-email").unwrap(), "alice@example.test");
    // The subrequest carried the original request's facts.
    assert_eq!(
        auth.last("x-original-url").as_deref(),
        Some("http://app.example/orders?id=7")
    );
    assert_eq!(auth.last("x-original-method").as_deref(), Some("GET"));
    assert_eq!(auth.last("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(auth.last("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        auth.last("forwarded"),
        None,
        "an untrusted client's forwarding headers are removed"
    );
    assert_eq!(auth.last("x-forwarded-prefix"), None);
    assert_eq!(auth.last("x-forwarded-host").as_deref(), Some("app.example"));
    assert_eq!(auth.last("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(auth.last("x-forwarded-uri").as_deref(), Some("/orders?id=7"));
    assert_eq!(auth.last("x-auth-request-redirect").as_deref(), Some("/orders?id=7"));
    assert_eq!(auth.last("cookie").as_deref(), Some("_oauth2_proxy=valid"));

    // A client-supplied user header without a valid cookie gets nowhere: 401 becomes 302 to the sign-in page.
    let before = app.count();
    let r = send(
        g,
        http::Method::GET,
        "app.example",
        "/orders?id=7",
        &[("x-auth-request-user", "mallory")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "https://auth.example/oauth2/start?rd=http%3A%2F%2Fapp.example%2Forders%3Fid%3D7"
    );
    assert_eq!(app.count(), before, "the backend was not reached");

    let r = get(g, "template.example", "/a%20b?x=1").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "https://auth.example/oauth2/start?rd=http://template.example%2Fa%2520b%3Fx%3D1"
    );

    // Without auth-signin: the auth service's 401 with its headers and body.
    let r = get(g, "plain.example", "/").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers.get("www-authenticate").unwrap(), "Bearer realm=\"oauth2\"");
    assert_eq!(r.headers.get("set-cookie").unwrap(), "csrf=1; Path=/");
    assert_eq!(r.text(), "unauthorized by oauth2-proxy\n");
    let r = get(g, "forbidden.example", "/").await;
    assert_eq!((r.status, r.text().as_str()), (403, "forbidden by policy\n"));
    assert_eq!(app.count(), before, "the backend was not reached");

    // The cache: a second request with the same cookie is answered without a subrequest.
    let calls = auth.calls();
    for _ in 0..2 {
        let r = send(g, http::Method::GET, "cached.example", "/", &[valid], Bytes::new()).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            app.requests()
                .pop()
                .unwrap()
                .headers
                .get("x-auth-request-user")
                .unwrap(),
            "alice"
        );
    }
    assert_eq!(auth.calls(), calls + 1, "the second request hit the cache");
    // 401 is not in the cached statuses: asked every time, never let through.
    for _ in 0..2 {
        assert_eq!(get(g, "cached.example", "/").await.status, 401);
    }
    assert_eq!(auth.calls(), calls + 3);
    gw.stop().await;
}

#[tokio::test]
async fn forward_auth_fails_closed() {
    let auth = AuthService::start().await;
    let app = echo("app").await;
    let down = closed_port().await;
    let a = auth.addr;
    let mut m = service("default", "app", &[app.addr]);
    m += &forward_ingress(
        "down",
        "down.example",
        &[(
            "nginx.ingress.kubernetes.io/auth-url",
            &format!("http://{down}/oauth2/auth"),
        )],
    );
    m += &forward_ingress(
        "slow",
        "slow.example",
        &[
            ("nginx.ingress.kubernetes.io/auth-url", &format!("http://{a}/slow")),
            ("portico.dev/auth-timeout", "300ms"),
        ],
    );
    m += &forward_ingress(
        "broken",
        "broken.example",
        &[("nginx.ingress.kubernetes.io/auth-url", &format!("http://{a}/broken"))],
    );
    let gw = Gateway::start(&m).await;
    let g = gw.addr(0);
    let valid = [("cookie", "_oauth2_proxy=valid")];

    let r = send(g, http::Method::GET, "down.example", "/", &valid, Bytes::new()).await;
    assert_eq!(r.status, 503, "auth service down");
    let started = std::time::Instant::now();
    let r = send(g, http::Method::GET, "slow.example", "/", &valid, Bytes::new()).await;
    assert_eq!(r.status, 503, "auth service too slow");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout bounds the wait"
    );
    let r = send(
        g,
        http::Method::POST,
        "broken.example",
        "/",
        &valid,
        Bytes::from_static(b"x"),
    )
    .await;
    assert_eq!(r.status, 500, "auth service answered 500");
    assert_eq!(app.count(), 0, "the backend was never reached");
    gw.stop().await;
}

// === basic auth ===

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn opaque_secret(name: &str, data: &[(&str, &str)]) -> String {
    let data: String = data.iter().map(|(k, v)| format!("  {k}: '{v}'\n")).collect();
    format!("---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: Opaque\nstringData:\n{data}")
}

#[tokio::test]
async fn basic_auth_with_each_hash_and_a_missing_secret() {
    let app = echo("app").await;
    // bcrypt (cost 4 keeps the test quick), apr1 (`openssl passwd -apr1 -salt abcdefgh secret`), {SHA}.
    let bcrypt_hash = bcrypt::hash("b-secret", 4).unwrap().replacen("$2b$", "$2y$", 1);
    let file = format!(
        "bob:{bcrypt_hash}\\nann:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\\nsid:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\\n"
    );
    let mut m = service("default", "app", &[app.addr]);
    // Double quotes in YAML so \n is a newline.
    m += &format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: default}}\ntype: Opaque\nstringData:\n  auth: \"{file}\"\n"
    );
    m += &opaque_secret("map", &[("carol", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=")]);
    m += &annotated_ingress(
        "default",
        "file",
        "file.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "users"),
            ("nginx.ingress.kubernetes.io/auth-realm", "Staff only"),
        ],
    );
    m += &annotated_ingress(
        "default",
        "map",
        "map.example",
        "app",
        &[
            ("portico.dev/auth-type", "basic"),
            ("portico.dev/auth-secret", "default/map"),
            ("portico.dev/auth-secret-type", "auth-map"),
        ],
    );
    m += &annotated_ingress(
        "default",
        "missing",
        "missing.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "no-such-secret"),
        ],
    );
    m += &opaque_secret("plain", &[("auth", "dave:hunter2")]);
    m += &annotated_ingress(
        "default",
        "plain",
        "plain.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "plain"),
        ],
    );
    m += &annotated_ingress("default", "open", "open.example", "app", &[]);
    let gw = Gateway::start(&m).await;
    let g = gw.addr(0);
    let with = |host: &'static str, auth: String| async move {
        send(
            g,
            http::Method::GET,
            host,
            "/",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
    };

    for (user, right) in [("bob", "b-secret"), ("ann", "secret"), ("sid", "secret")] {
        assert_eq!(with("file.example", basic(user, right)).await.status, 200, "{user}");
        // Again: bcrypt's answer comes from the cache the second time.
        assert_eq!(with("file.example", basic(user, right)).await.status, 200, "{user}");
        let r = with("file.example", basic(user, "wrong")).await;
        assert_eq!(r.status, 401, "{user}");
        assert_eq!(r.headers.get("www-authenticate").unwrap(), "Basic realm=\"Staff only\"");
    }
    let r = get(g, "file.example", "/").await;
    assert_eq!(r.status, 401, "no credentials");
    assert_eq!(r.headers.get("www-authenticate").unwrap(), "Basic realm=\"Staff only\"");
    assert_eq!(with("file.example", "Basic !!!".into()).await.status, 401, "malformed");
    assert_eq!(
        with("file.example", basic("nobody", "secret")).await.status,
        401,
        "unknown user"
    );
    assert_eq!(app.count(), 6, "only the right passwords reached the backend");

    assert_eq!(with("map.example", basic("carol", "secret")).await.status, 200);
    assert_eq!(with("map.example", basic("carol", "nope")).await.status, 401);

    // A missing Secret, or one with a plain-text password: the Ingress is not served (404), the others are.
    assert_eq!(with("missing.example", basic("bob", "b-secret")).await.status, 404);
    assert_eq!(with("plain.example", basic("dave", "hunter2")).await.status, 404);
    assert_eq!(get(g, "open.example", "/").await.status, 200);
    let diagnostics = gw.running().shared.last_translation().unwrap().describe_diagnostics();
    assert!(
        diagnostics.contains("Ingress default/missing: auth Secret default/no-such-secret (annotation portico.dev/auth-secret) not found; Ingress not served"),
        "{diagnostics}"
    );
    assert!(
        diagnostics.contains("Ingress default/plain: auth Secret default/plain (annotation portico.dev/auth-secret): key auth: line 1: user \"dave\": plain-text"),
        "{diagnostics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_changed_password_is_not_served_from_the_cache() {
    let app = echo("app").await;
    let secret = |hash: &str| opaque_secret("users", &[("auth", &format!("ann:{hash}"))]);
    let ingress = annotated_ingress(
        "default",
        "file",
        "file.example",
        "app",
        &[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "users"),
        ],
    );
    let base = format!("{}{ingress}", service("default", "app", &[app.addr]));
    let old = bcrypt::hash("old", 4).unwrap();
    let gw = Gateway::start(&format!("{base}{}", secret(&old))).await;
    let g = gw.addr(0);
    let auth = basic("ann", "old");
    let r = send(
        g,
        http::Method::GET,
        "file.example",
        "/",
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    let new = bcrypt::hash("new", 4).unwrap();
    gw.rewrite(&format!("{base}{}", secret(&new))).await;
    let r = send(
        g,
        http::Method::GET,
        "file.example",
        "/",
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 401, "the old password no longer works");
    let auth = basic("ann", "new");
    let r = send(
        g,
        http::Method::GET,
        "file.example",
        "/",
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    gw.stop().await;
}
