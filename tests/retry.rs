//! ingress-nginx's timeout, retry, service-upstream and session-cookie annotations, end to end over loopback.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend answering every request with `status` (keep-alive), counting requests.
async fn status_backend(status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut have = 0;
                loop {
                    match s.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have += n,
                    }
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        h.fetch_add(1, Ordering::SeqCst);
                        let resp = format!("HTTP/1.1 {status} Status\r\ncontent-length: 7\r\n\r\nstatus\n");
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                    }
                }
            });
        }
    });
    (addr, hits)
}

fn service_ingress(ns: &str, name: &str, host: &str, eps: &[SocketAddr], notes: &[(&str, &str)]) -> String {
    service(ns, name, eps) + &annotated_ingress(ns, name, host, name, notes)
}

#[tokio::test]
async fn next_upstream_statuses_off_and_tries() {
    let ok = echo("ok").await;
    let (unavailable, hits_503) = status_backend(503).await;
    let closed_a = closed_port().await;
    let closed_b = closed_port().await;
    let mut m = String::new();
    // http_503: the 503 is dropped and the other endpoint answers.
    m += &service_ingress(
        "default",
        "on503",
        "on503.example",
        &[unavailable, ok.addr],
        &[(
            "nginx.ingress.kubernetes.io/proxy-next-upstream",
            "error timeout http_503",
        )],
    );
    // The default does not retry on a status.
    m += &service_ingress("default", "plain503", "plain503.example", &[unavailable, ok.addr], &[]);
    // off: a refused connection is not retried (the default retries it).
    m += &service_ingress(
        "default",
        "off",
        "off.example",
        &[closed_a, ok.addr],
        &[("nginx.ingress.kubernetes.io/proxy-next-upstream", "off")],
    );
    m += &service_ingress("default", "dflt", "default.example", &[closed_a, ok.addr], &[]);
    // Two tries cannot get past two refusing endpoints; the default three can.
    m += &service_ingress(
        "default",
        "two",
        "two.example",
        &[closed_a, closed_b, ok.addr],
        &[("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", "2")],
    );
    m += &service_ingress("default", "three", "three.example", &[closed_a, closed_b, ok.addr], &[]);
    let gw = Gateway::start(&m).await;
    let a = gw.addr(0);

    let statuses = |host: &'static str, n: usize| async move {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(get(a, host, "/").await.status);
        }
        out
    };
    let plain = statuses("plain503.example", 4).await;
    assert!(
        plain.contains(&503),
        "without the annotation a 503 reaches the client: {plain:?}"
    );
    let before = hits_503.load(Ordering::SeqCst);
    assert_eq!(statuses("on503.example", 4).await, [200; 4]);
    assert!(
        hits_503.load(Ordering::SeqCst) > before,
        "the 503 endpoint was asked and passed over"
    );

    let off = statuses("off.example", 4).await;
    assert!(off.contains(&502), "off: a refused connection is the answer: {off:?}");
    assert_eq!(statuses("default.example", 4).await, [200; 4]);

    let two = statuses("two.example", 3).await;
    assert!(
        two.contains(&502),
        "two tries from the first refusing endpoint end at the second: {two:?}"
    );
    assert_eq!(statuses("three.example", 3).await, [200; 3]);
    gw.stop().await;
}

#[tokio::test]
async fn service_upstream_sends_to_the_cluster_ip() {
    let (via_cluster_ip, via_endpoints) = (echo("cluster-ip").await, echo("endpoint").await);
    // The Service's port is the ClusterIP's port: here the first echo's, on 127.0.0.1 as the "ClusterIP".
    let svc = |name: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: 127.0.0.1, ports: [{{name: http, port: {}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"], conditions: {{ready: true}}}}]\n",
            via_cluster_ip.addr.port(),
            via_endpoints.addr.port()
        )
    };
    // Both Ingresses name the same Service port: by its ClusterIP and by its endpoints, two backends.
    let ing = |name: &str, notes: &[(&str, &str)]| {
        annotated_ingress("default", name, &format!("{name}.example"), "web", notes).replace(
            "port: {number: 80}",
            &format!("port: {{number: {}}}", via_cluster_ip.addr.port()),
        )
    };
    let mut m = svc("web") + &ing("su", &[("nginx.ingress.kubernetes.io/service-upstream", "true")]);
    m += &ing("eps", &[]);
    let gw = Gateway::start(&m).await;
    let a = gw.addr(0);
    assert_eq!(get(a, "su.example", "/").await.backend().as_deref(), Some("cluster-ip"));
    assert_eq!(get(a, "eps.example", "/").await.backend().as_deref(), Some("endpoint"));
    gw.stop().await;
}

#[tokio::test]
async fn session_cookie_attributes_and_change_on_failure() {
    let ok = echo("ok").await;
    let closed = closed_port().await;
    let sticky = [
        ("nginx.ingress.kubernetes.io/affinity", "cookie"),
        ("nginx.ingress.kubernetes.io/session-cookie-name", "route"),
    ];
    let mut attrs = sticky.to_vec();
    attrs.extend([
        ("nginx.ingress.kubernetes.io/session-cookie-path", "/app"),
        ("nginx.ingress.kubernetes.io/session-cookie-samesite", "Lax"),
        ("nginx.ingress.kubernetes.io/session-cookie-secure", "true"),
        ("nginx.ingress.kubernetes.io/session-cookie-max-age", "60"),
        ("nginx.ingress.kubernetes.io/session-cookie-expires", "120"),
    ]);
    let mut change = sticky.to_vec();
    change.push(("nginx.ingress.kubernetes.io/session-cookie-change-on-failure", "true"));
    let mut m = service_ingress("default", "attrs", "attrs.example", &[ok.addr], &attrs);
    m += &service_ingress("default", "keep", "keep.example", &[closed, ok.addr], &sticky);
    m += &service_ingress("default", "change", "change.example", &[closed, ok.addr], &change);
    let gw = Gateway::start(&m).await;
    let a = gw.addr(0);

    let r = get(a, "attrs.example", "/").await;
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("route=")
            && cookie.contains("; Path=/app; Max-Age=60; Secure; HttpOnly; SameSite=Lax; Expires="),
        "{cookie}"
    );
    let expires = cookie.split("; Expires=").nth(1).unwrap();
    let at = httpdate::parse_http_date(expires).unwrap();
    let ahead = at.duration_since(std::time::SystemTime::now()).unwrap().as_secs();
    assert!((100..=121).contains(&ahead), "Expires about 120 s ahead: {ahead}");

    // A client whose cookie names the refusing endpoint is retried on the other one: without change-on-failure
    // its cookie stays, with it the cookie names the endpoint that answered.
    let closed_cookie = {
        let snap = gw.running().shared.snapshot.load();
        let ep = snap.sets[0]
            .backends()
            .flat_map(|b| b.endpoints.iter())
            .find(|e| e.addr == closed)
            .unwrap()
            .cookie_value();
        format!("route={ep}")
    };
    for (host, renewed) in [("keep.example", false), ("change.example", true)] {
        let r = send(
            a,
            http::Method::GET,
            host,
            "/",
            &[("cookie", closed_cookie.as_str())],
            Default::default(),
        )
        .await;
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.headers.contains_key("set-cookie"), renewed, "{host}: {:?}", r.headers);
    }
    gw.stop().await;
}
