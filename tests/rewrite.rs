//! ingress-nginx's regex paths, rewrites and redirects, end to end over loopback: what the backend receives is
//! what the echo backend reports it parsed.

mod support;

use support::*;

fn uri(r: &Reply) -> String {
    r.json()["uri"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn rewrite_target_with_captures_and_regex_precedence() {
    let (api, web, legacy) = (echo("api").await, echo("web").await, echo("legacy").await);
    let mut m = service("default", "api", &[api.addr]);
    m += &service("default", "web", &[web.addr]);
    m += &service("default", "legacy", &[legacy.addr]);
    m += r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: default
  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /$2}
spec:
  ingressClassName: portico
  rules:
    - host: shop.example
      http:
        paths:
          - {path: "/api(/|$)(.*)", pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: portico
  rules:
    - host: shop.example
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
          - {path: /api/legacy/v1, pathType: Prefix, backend: {service: {name: legacy, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
  namespace: default
  annotations: {nginx.ingress.kubernetes.io/rewrite-target: /}
spec:
  ingressClassName: portico
  rules:
    - host: app.example
      http:
        paths:
          - {path: /app, pathType: Prefix, backend: {service: {name: api, port: {number: 80}}}}
"#;
    let gw = Gateway::start(&m).await;
    let a = gw.addr(0);

    // Captures: /api/x -> /x, the query kept; /api alone -> /.
    let r = get(a, "shop.example", "/api/orders/7?full=1").await;
    assert_eq!(
        (r.backend().as_deref(), uri(&r).as_str()),
        (Some("api"), "/orders/7?full=1")
    );
    let r = get(a, "shop.example", "/api").await;
    assert_eq!((r.backend().as_deref(), uri(&r).as_str()), (Some("api"), "/"));
    // Case-insensitive, as nginx's ~*.
    let r = get(a, "shop.example", "/API/x").await;
    assert_eq!((r.backend().as_deref(), uri(&r).as_str()), (Some("api"), "/x"));
    // Longest path first, by the path as written: the other Ingress's literal /api/legacy/v1 (14 characters) is
    // tried before /api(/|$)(.*) (13), and is forwarded unchanged.
    let r = get(a, "shop.example", "/api/legacy/v1/x").await;
    assert_eq!(
        (r.backend().as_deref(), uri(&r).as_str()),
        (Some("legacy"), "/api/legacy/v1/x")
    );
    // A literal path on a regex host is a prefix of characters, case-insensitive (nginx's "^/api/legacy/v1").
    let r = get(a, "shop.example", "/API/LEGACY/v1beta").await;
    assert_eq!(r.backend().as_deref(), Some("legacy"));
    // Anything else: the literal / of the other Ingress, forwarded unchanged.
    let r = get(a, "shop.example", "/cart?id=3").await;
    assert_eq!((r.backend().as_deref(), uri(&r).as_str()), (Some("web"), "/cart?id=3"));
    // "/apix" is not "/api(/|$)": served by /.
    assert_eq!(get(a, "shop.example", "/apix").await.backend().as_deref(), Some("web"));

    // rewrite-target: / replaces the whole path, as nginx's rewrite does.
    let r = get(a, "app.example", "/app/x/y?z=1").await;
    assert_eq!((r.backend().as_deref(), uri(&r).as_str()), (Some("api"), "/?z=1"));

    // The request path is normalised before matching, so %2e%2e never reaches a capture as "..".
    let r = get(a, "shop.example", "/api/%2e%2e/%2e%2e/etc/passwd").await;
    assert_eq!(r.status, 400, "climbing above the root is refused before matching");
    let r = get(a, "shop.example", "/api/a%2Fb").await;
    assert_eq!(r.status, 400, "an encoded slash is refused");
    assert_eq!(api.count(), 4, "the refused requests never reached a backend");
    gw.stop().await;
}

#[tokio::test]
async fn a_rewritten_path_is_normalised_and_checked() {
    let api = echo("api").await;
    let mut m = service("default", "api", &[api.addr]);
    // $1$1 doubles a capture: "/p." would become "/../etc" after the rewrite.
    m += r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: default
  annotations: {nginx.ingress.kubernetes.io/rewrite-target: "/$1$1/etc?from=rewrite"}
spec:
  ingressClassName: portico
  rules:
    - host: shop.example
      http:
        paths:
          - {path: "/p(.*)", pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 80}}}}
"#;
    let gw = Gateway::start(&m).await;
    let a = gw.addr(0);
    let r = get(a, "shop.example", "/p.").await;
    assert_eq!(
        r.status,
        400,
        "a rewrite that climbs above the root is refused: {}",
        r.text()
    );
    let r = get(a, "shop.example", "/p/a/./b?q=1").await;
    assert_eq!(
        uri(&r),
        "/a/b/a/b/etc?from=rewrite&q=1",
        "normalised, the target's query first"
    );
    assert_eq!(api.count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn app_root_and_redirects() {
    let web = echo("web").await;
    let mut m = service("default", "web", &[web.addr]);
    let ing = |name: &str, host: &str, notes: &[(&str, &str)]| annotated_ingress("default", name, host, "web", notes);
    m += &ing(
        "dash",
        "dash.example",
        &[("nginx.ingress.kubernetes.io/app-root", "/dashboard")],
    );
    m += &ing(
        "moved",
        "old.example",
        &[
            ("nginx.ingress.kubernetes.io/permanent-redirect", "https://new.example/"),
            ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
        ],
    );
    m += &ing(
        "maint",
        "maint.example",
        &[("portico.dev/temporal-redirect", "https://status.example/maintenance")],
    );
    m += &ing(
        "perm",
        "perm.example",
        &[(
            "nginx.ingress.kubernetes.io/permanent-redirect",
            "https://perm.example.org",
        )],
    );
    let gw = Gateway::start(&m).await;
    let a = gw.addr(0);
    let location = |r: &Reply| r.headers["location"].to_str().unwrap().to_string();

    let r = get(a, "dash.example", "/").await;
    assert_eq!(r.status, 302);
    assert_eq!(location(&r), "http://dash.example/dashboard");
    let r = get(a, "dash.example", "/dashboard/x").await;
    assert_eq!((r.status, uri(&r).as_str()), (200, "/dashboard/x"));

    let r = get(a, "old.example", "/any/path?x=1").await;
    assert_eq!((r.status, location(&r).as_str()), (308, "https://new.example/"));
    let r = get(a, "maint.example", "/").await;
    assert_eq!(
        (r.status, location(&r).as_str()),
        (302, "https://status.example/maintenance")
    );
    let r = get(a, "perm.example", "/x").await;
    assert_eq!((r.status, location(&r).as_str()), (301, "https://perm.example.org"));
    assert_eq!(web.count(), 1, "only the app-root's non-root request was proxied");
    gw.stop().await;
}

/// `server-alias` serves the Ingress's paths under other names; `from-to-www-redirect` answers the www twin with
/// 308 to the same path, query and port on the rule's host. A name with rules of its own keeps them.
#[tokio::test]
async fn server_alias_and_www_redirect() {
    let (web, other) = (echo("web").await, echo("other").await);
    let mut m = service("default", "web", &[web.addr]);
    m += &service("default", "other", &[other.addr]);
    m += &annotated_ingress(
        "default",
        "app",
        "app.example",
        "web",
        &[
            (
                "nginx.ingress.kubernetes.io/server-alias",
                "app.example.net, *.apps.example, taken.example",
            ),
            ("nginx.ingress.kubernetes.io/from-to-www-redirect", "true"),
        ],
    );
    m += &annotated_ingress("default", "taken", "taken.example", "other", &[]);
    m += &annotated_ingress(
        "default",
        "shop",
        "www.shop.example",
        "web",
        &[("portico.dev/from-to-www-redirect", "true")],
    );
    let gw = Gateway::start(&m).await;
    let a = gw.addr(0);
    let location = |r: &Reply| r.headers["location"].to_str().unwrap().to_string();

    for host in ["app.example", "app.example.net", "x.apps.example", "APP.example.NET"] {
        let r = get(a, host, "/p?q=1").await;
        assert_eq!(
            (r.backend().as_deref(), uri(&r).as_str()),
            (Some("web"), "/p?q=1"),
            "{host}"
        );
    }
    // The alias's own rules win: taken.example stays the other Ingress's.
    assert_eq!(get(a, "taken.example", "/").await.backend().as_deref(), Some("other"));
    // An unrelated name is still not served.
    assert_eq!(
        get(a, "apps.example", "/").await.status,
        404,
        "*.apps.example is not apps.example"
    );

    // www twin -> the rule's host, path, query and port kept; and the other way round.
    let r = get(a, "www.app.example", "/a/b?c=d").await;
    assert_eq!((r.status, location(&r).as_str()), (308, "http://app.example/a/b?c=d"));
    let r = get(a, "www.app.example:8080", "/").await;
    assert_eq!((r.status, location(&r).as_str()), (308, "http://app.example:8080/"));
    let r = get(a, "shop.example", "/cart").await;
    assert_eq!((r.status, location(&r).as_str()), (308, "http://www.shop.example/cart"));
    assert_eq!(
        get(a, "www.shop.example", "/cart").await.backend().as_deref(),
        Some("web")
    );
    // A redirect is not a route to the backend: only the five served requests above reached it.
    assert_eq!(web.count(), 5);
    assert_eq!(other.count(), 1);
    gw.stop().await;
}
