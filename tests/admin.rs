//! The admin listener over loopback: `/metrics` parsed with a strict text-format parser and checked against the
//! traffic sent, the JSON API (`/api/routes`, `/api/certificates`, `/api/diagnostics`, `/api/explain`) and the
//! access log written to a file.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use portico::certs::testing::{accept_any_client, key, TestCa, DAY};
use portico::certs::unix_now;
use portico::echo::EchoServer;
use rustls_pki_types::ServerName;
use serde_json::Value;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TWO_SETS: &str = r#"
listenerSets:
  - name: public
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
    https: ["127.0.0.1:0"]
  - name: internal
    ingressClasses: [internal]
    http: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0" }
"#;

// === a strict parser for the Prometheus text format 0.0.4 ===

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn parse_labels(s: &str, line: &str) -> (BTreeMap<String, String>, usize) {
    // `s` starts just after '{'; returns the labels and the bytes consumed up to and including '}'.
    let b = s.as_bytes();
    let mut labels = BTreeMap::new();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'}') {
            return (labels, i + 1);
        }
        let eq = s[i..].find('=').unwrap_or_else(|| panic!("label without '=': {line}")) + i;
        let name = &s[i..eq];
        assert!(is_name(name), "bad label name {name:?}: {line}");
        assert_eq!(b.get(eq + 1), Some(&b'"'), "label value not quoted: {line}");
        let mut j = eq + 2;
        let mut value = String::new();
        loop {
            match b.get(j) {
                Some(b'\\') => {
                    match b.get(j + 1) {
                        Some(b'\\') => value.push('\\'),
                        Some(b'"') => value.push('"'),
                        Some(b'n') => value.push('\n'),
                        _ => panic!("bad escape: {line}"),
                    }
                    j += 2;
                }
                Some(b'"') => break,
                Some(_) => {
                    let ch = s[j..].chars().next().unwrap();
                    value.push(ch);
                    j += ch.len_utf8();
                }
                None => panic!("unterminated label value: {line}"),
            }
        }
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "repeated label: {line}"
        );
        i = j + 1;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => panic!("expected ',' or '}}' after a label: {line}"),
        }
    }
}

fn parse_value(v: &str, line: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().unwrap_or_else(|_| panic!("bad value {v:?}: {line}")),
    }
}

/// The family a sample belongs to (histogram series carry a suffix).
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).map(String::as_str) == Some("histogram") {
                return base;
            }
        }
    }
    name
}

fn parse(text: &str) -> Exposition {
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut e = Exposition::default();
    let mut help: HashSet<String> = HashSet::new();
    let mut seen_series: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in exposition");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, tail) = (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next());
            assert!(is_name(name), "bad metric name in comment: {line}");
            match kw {
                "HELP" => {
                    assert!(tail.is_some_and(|t| !t.is_empty()), "empty HELP: {line}");
                    assert!(help.insert(name.to_string()), "second HELP for {name}");
                }
                "TYPE" => {
                    let t = tail.unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                        "bad TYPE: {line}"
                    );
                    assert!(help.contains(name), "TYPE before HELP for {name}");
                    assert!(
                        e.types.insert(name.to_string(), t.to_string()).is_none(),
                        "second TYPE for {name}"
                    );
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "comment without a space: {line}");
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(is_name(name), "bad metric name: {line}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            let (l, used) = parse_labels(&line[name_end + 1..], line);
            (l, &line[name_end + 1 + used..])
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before value: {line}"));
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap(), line);
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().unwrap_or_else(|_| panic!("bad timestamp: {line}"));
        }
        assert!(fields.next().is_none(), "trailing fields: {line}");
        let fam = family(name, &e.types);
        assert!(
            help.contains(fam) && e.types.contains_key(fam),
            "sample before HELP/TYPE of {fam}: {line}"
        );
        if e.types[fam] == "counter" {
            assert!(value >= 0.0, "negative counter: {line}");
        }
        assert!(
            seen_series.insert((name.to_string(), labels.clone())),
            "duplicate series: {line}"
        );
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: per series, buckets cumulative, ascending `le`, ending with +Inf equal to _count.
    for (fam, t) in &e.types {
        if t != "histogram" {
            continue;
        }
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in e.samples.iter().filter(|s| s.name == format!("{fam}_bucket")) {
            let mut key = s.labels.clone();
            let le = key.remove("le").expect("bucket without le");
            series.entry(key).or_default().push((parse_value(&le, &le), s.value));
        }
        for (key, buckets) in series {
            for w in buckets.windows(2) {
                assert!(w[0].0 < w[1].0, "{fam}{key:?}: le not ascending");
                assert!(w[0].1 <= w[1].1, "{fam}{key:?}: buckets not cumulative");
            }
            let last = buckets.last().unwrap();
            assert_eq!(last.0, f64::INFINITY, "{fam}{key:?}: last bucket is not +Inf");
            let count = e
                .samples
                .iter()
                .find(|s| s.name == format!("{fam}_count") && s.labels == key)
                .unwrap_or_else(|| panic!("{fam}{key:?}: no _count"));
            assert_eq!(count.value, last.1, "{fam}{key:?}: +Inf bucket differs from _count");
            assert!(
                e.samples
                    .iter()
                    .any(|s| s.name == format!("{fam}_sum") && s.labels == key),
                "{fam}{key:?}: no _sum"
            );
        }
    }
    e
}

impl Exposition {
    /// The value of the series with exactly these labels; 0 when absent (a labelled counter not yet touched).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map_or(0.0, |s| s.value)
    }

    fn has_family(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }
}

// === the setup ===

struct Setup {
    gw: Gateway,
    secure_not_after: i64,
    _echo: Vec<EchoServer>,
    _ca: TestCa,
}

/// Listener set `public`: `a.example` (`/` to a, `/dead` to a closed port), `*.wild.example` to w,
/// `empty.example` to a Service without endpoints, `secure.example` with TLS (a 308 on plain HTTP), a default
/// backend `def`, and an Ingress `broken` pointing at a missing Service. Listener set `internal`:
/// `intra.example` to a, no default backend.
fn manifests(a: SocketAddr, w: SocketAddr, def: SocketAddr, dead: SocketAddr, secure: &(String, String)) -> String {
    let mut m = service("default", "a", &[a]);
    m += &service("default", "w", &[w]);
    m += &service("default", "def", &[def]);
    m += &service("default", "dead", &[dead]);
    m += &service("default", "empty", &[]);
    m += &tls_secret("secure-tls", &secure.0, &secure.1);
    m += &ingress(
        "default",
        "site",
        "portico",
        &[
            ("a.example", "/", "Prefix", "a"),
            ("a.example", "/dead", "Prefix", "dead"),
            ("*.wild.example", "/", "Prefix", "w"),
            ("empty.example", "/", "Prefix", "empty"),
        ],
    );
    m += &ingress(
        "default",
        "broken",
        "portico",
        &[("broken.example", "/", "Prefix", "no-such-service")],
    );
    m += &ingress(
        "default",
        "intra",
        "internal",
        &[("intra.example", "/api", "Exact", "a")],
    );
    m += r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback, namespace: default}
spec:
  ingressClassName: portico
  defaultBackend: {service: {name: def, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure, namespace: default}
spec:
  ingressClassName: portico
  tls: [{hosts: [secure.example], secretName: secure-tls}]
  rules: [{host: secure.example, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}}]
"#;
    m
}

async fn setup() -> Setup {
    let echo = |n: &'static str| async move { EchoServer::start(n, "127.0.0.1:0".parse().unwrap()).await.unwrap() };
    let (a, w, def) = (echo("a").await, echo("w").await, echo("def").await);
    let ca = TestCa::new();
    let k = key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let not_after = unix_now() + 30 * DAY;
    let secure = (
        ca.issue_pem(&["secure.example"], &k, unix_now() - DAY, not_after),
        k.serialize_pem(),
    );
    let m = manifests(a.addr, w.addr, def.addr, closed_port().await, &secure);
    let gw = Gateway::start_with(TWO_SETS, &m).await;
    Setup {
        gw,
        secure_not_after: not_after,
        _echo: vec![a, w, def],
        _ca: ca,
    }
}

impl Setup {
    fn admin(&self) -> SocketAddr {
        self.gw.running().admin_addr
    }

    async fn api(&self, path: &str) -> Value {
        let r = get(self.admin(), "admin", path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.headers["content-type"], "application/json");
        r.json()
    }

    async fn metrics(&self) -> Exposition {
        let r = get(self.admin(), "admin", "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        parse(&r.text())
    }

    /// Polls `/metrics` until `f` holds (connection gauges move when the server notices a close).
    async fn metrics_until(&self, what: &str, f: impl Fn(&Exposition) -> bool) -> Exposition {
        for _ in 0..200 {
            let m = self.metrics().await;
            if f(&m) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("metrics never showed {what}");
    }
}

fn req(set: &str, ingress: &str, service: &str, class: &str) -> [(&'static str, String); 4] {
    [
        ("set", set.to_string()),
        ("ingress", ingress.to_string()),
        ("service", service.to_string()),
        ("class", class.to_string()),
    ]
}

fn requests(m: &Exposition, set: &str, ingress: &str, service: &str, class: &str) -> f64 {
    let l = req(set, ingress, service, class);
    let labels: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
    m.get("portico_requests_total", &labels)
}

// === tests ===

#[tokio::test]
async fn metrics_count_exactly_the_traffic_sent() {
    let s = setup().await;
    let public = s.gw.addr(0);
    let internal = s.gw.addr(1);
    let before = s.metrics().await;
    for family in [
        "portico_requests_total",
        "portico_request_duration_seconds",
        "portico_upstream_errors_total",
        "portico_open_connections",
        "portico_tls_handshakes_total",
        "portico_table_publishes_total",
        "portico_table_build_seconds",
        "portico_table_generation",
        "portico_rejected_objects",
        "portico_certificate_expiry_timestamp_seconds",
    ] {
        assert!(before.has_family(family), "{family} missing");
    }

    let mut sent = 0;
    for _ in 0..3 {
        assert_eq!(get(public, "a.example", "/x").await.status, 200);
        sent += 1;
    }
    for host in ["x.wild.example", "y.wild.example"] {
        assert_eq!(get(public, host, "/").await.status, 200);
        sent += 1;
    }
    assert_eq!(get(public, "empty.example", "/").await.status, 503);
    assert_eq!(get(public, "a.example", "/dead").await.status, 502);
    assert_eq!(get(public, "nothing.example", "/").await.status, 200); // the default backend
    assert_eq!(get(public, "secure.example", "/").await.status, 308);
    sent += 4;
    assert_eq!(get(internal, "intra.example", "/api").await.status, 200);
    assert_eq!(get(internal, "nothing.example", "/").await.status, 404);
    assert_eq!(get(internal, "intra.example", "/api/other").await.status, 404);
    let sent_internal = 3;

    let m = s.metrics().await;
    let delta = |set: &str, ing: &str, svc: &str, class: &str| {
        requests(&m, set, ing, svc, class) - requests(&before, set, ing, svc, class)
    };
    assert_eq!(delta("public", "default/site", "default/a:80", "2xx"), 3.0);
    assert_eq!(delta("public", "default/site", "default/w:80", "2xx"), 2.0);
    assert_eq!(delta("public", "default/site", "default/empty:80", "5xx"), 1.0);
    assert_eq!(delta("public", "default/site", "default/dead:80", "5xx"), 1.0);
    assert_eq!(delta("public", "default/fallback", "default/def:80", "2xx"), 1.0);
    assert_eq!(delta("public", "default/secure", "default/a:80", "3xx"), 1.0);
    assert_eq!(delta("internal", "default/intra", "default/a:80", "2xx"), 1.0);
    assert_eq!(delta("internal", "-", "-", "4xx"), 2.0);
    // Nothing else moved: the per-series deltas add up to what was sent.
    let total = |e: &Exposition, set: &str| -> f64 {
        e.samples
            .iter()
            .filter(|x| x.name == "portico_requests_total" && x.labels["set"] == set)
            .map(|x| x.value)
            .sum()
    };
    assert_eq!(total(&m, "public") - total(&before, "public"), sent as f64);
    assert_eq!(total(&m, "internal") - total(&before, "internal"), sent_internal as f64);
    // Label values come from configuration only: no request Host or path anywhere.
    let text = get(s.admin(), "admin", "/metrics").await.text();
    for leaked in ["nothing.example", "/api/other", "x.wild.example", "\"/dead"] {
        assert!(!text.contains(leaked), "{leaked} leaked into the metrics");
    }

    let count = |e: &Exposition, set: &str| e.get("portico_request_duration_seconds_count", &[("set", set)]);
    assert_eq!(count(&m, "public") - count(&before, "public"), sent as f64);
    assert_eq!(count(&m, "internal") - count(&before, "internal"), sent_internal as f64);
    let errors =
        |e: &Exposition, kind: &str| e.get("portico_upstream_errors_total", &[("set", "public"), ("kind", kind)]);
    assert_eq!(errors(&m, "connect") - errors(&before, "connect"), 1.0);
    assert_eq!(errors(&m, "timeout") - errors(&before, "timeout"), 0.0);
    assert_eq!(errors(&m, "reset") - errors(&before, "reset"), 0.0);
    // One connection per request (each `get` uses a fresh client).
    let conns = |e: &Exposition, set: &str| e.get("portico_connections_total", &[("set", set)]);
    assert_eq!(conns(&m, "public") - conns(&before, "public"), sent as f64);
    assert_eq!(conns(&m, "internal") - conns(&before, "internal"), sent_internal as f64);

    s.gw.stop().await;
}

#[tokio::test]
async fn connection_gauges_and_tls_handshakes() {
    let s = setup().await;
    let open = |e: &Exposition, set: &str| e.get("portico_open_connections", &[("set", set)]);
    s.metrics_until("no open connection", |m| {
        open(m, "public") == 0.0 && open(m, "internal") == 0.0
    })
    .await;

    let c1 = TcpStream::connect(s.gw.addr(0)).await.unwrap();
    let c2 = TcpStream::connect(s.gw.addr(0)).await.unwrap();
    let c3 = TcpStream::connect(s.gw.addr(1)).await.unwrap();
    s.metrics_until("2 public and 1 internal open", |m| {
        open(m, "public") == 2.0 && open(m, "internal") == 1.0
    })
    .await;
    drop((c1, c2, c3));
    s.metrics_until("all closed again", |m| {
        open(m, "public") == 0.0 && open(m, "internal") == 0.0
    })
    .await;

    let https = s.gw.running().https_addrs[0][0];
    let handshakes =
        |e: &Exposition, r: &str| e.get("portico_tls_handshakes_total", &[("set", "public"), ("result", r)]);
    let before = s.metrics().await;
    let connector = tokio_rustls::TlsConnector::from(accept_any_client(true));
    let tcp = TcpStream::connect(https).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("secure.example").unwrap(), tcp)
        .await
        .unwrap();
    let mut bad = TcpStream::connect(https).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\nHost: secure.example\r\n\r\n")
        .await
        .unwrap();
    let m = s
        .metrics_until("one good and one failed handshake", |m| {
            handshakes(m, "ok") - handshakes(&before, "ok") == 1.0
                && handshakes(m, "failed") - handshakes(&before, "failed") == 1.0
        })
        .await;
    assert!(open(&m, "public") >= 1.0);
    drop((tls, bad));
    s.gw.stop().await;
}

#[tokio::test]
async fn publish_metrics_follow_manifest_edits() {
    let s = setup().await;
    let m = s.metrics().await;
    assert_eq!(m.get("portico_table_publishes_total", &[]), 1.0);
    assert_eq!(m.get("portico_table_generation", &[]), 1.0);
    assert_eq!(m.get("portico_rejected_objects", &[]), 1.0);
    assert!(m.get("portico_table_build_seconds", &[]) > 0.0);
    let expiry = m.get(
        "portico_certificate_expiry_timestamp_seconds",
        &[("set", "public"), ("host", "secure.example")],
    );
    assert_eq!(expiry, s.secure_not_after as f64);
    assert!(
        m.get(
            "portico_certificate_expiry_timestamp_seconds",
            &[("set", "public"), ("host", "*default*")]
        ) > unix_now() as f64
    );

    // Add a second broken Ingress: a new table with two rejected objects.
    let mut text = std::fs::read_to_string(s.gw.manifest_path()).unwrap();
    text += &ingress(
        "default",
        "broken-too",
        "portico",
        &[("b2.example", "/", "Prefix", "missing-too")],
    );
    s.gw.rewrite(&text).await;
    let m = s.metrics().await;
    assert_eq!(m.get("portico_table_publishes_total", &[]), 2.0);
    assert_eq!(m.get("portico_table_generation", &[]), 2.0);
    assert_eq!(m.get("portico_rejected_objects", &[]), 2.0);
    s.gw.stop().await;
}

#[tokio::test]
async fn request_counters_follow_ingresses_added_by_an_edit_and_keep_their_totals() {
    let s = setup().await;
    let public = s.gw.addr(0);
    assert_eq!(get(public, "a.example", "/").await.status, 200);
    let before = s.metrics().await;
    assert_eq!(requests(&before, "public", "default/site", "default/a:80", "2xx"), 1.0);

    // A new Ingress with two backends, added by an edit: each pair gets its own series, old totals stay.
    let mut text = std::fs::read_to_string(s.gw.manifest_path()).unwrap();
    text += &ingress(
        "default",
        "late",
        "portico",
        &[
            ("late.example", "/", "Prefix", "a"),
            ("late.example", "/w", "Prefix", "w"),
        ],
    );
    s.gw.rewrite(&text).await;
    assert_eq!(get(public, "late.example", "/").await.status, 200);
    assert_eq!(get(public, "late.example", "/w").await.status, 200);
    assert_eq!(get(public, "late.example", "/w/x").await.status, 200);
    assert_eq!(get(public, "a.example", "/").await.status, 200);
    let m = s.metrics().await;
    assert_eq!(requests(&m, "public", "default/late", "default/a:80", "2xx"), 1.0);
    assert_eq!(requests(&m, "public", "default/late", "default/w:80", "2xx"), 2.0);
    assert_eq!(requests(&m, "public", "default/site", "default/a:80", "2xx"), 2.0);

    // Removing the Ingress keeps its total (counters are never dropped) and stops nothing else.
    let without = text.replace("name: late", "name: late-gone");
    s.gw.rewrite(&without).await;
    let m = s.metrics().await;
    assert_eq!(requests(&m, "public", "default/late", "default/a:80", "2xx"), 1.0);
    s.gw.stop().await;
}

#[tokio::test]
async fn api_routes_certificates_and_diagnostics() {
    let s = setup().await;
    let routes = s.api("/api/routes").await;
    assert_eq!(routes["generation"], 1);
    let sets = routes["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0]["name"], "public");
    assert_eq!(sets[0]["http"][0], s.gw.addr(0).to_string());
    assert_eq!(sets[0]["https"][0], s.gw.running().https_addrs[0][0].to_string());
    assert_eq!(sets[1]["name"], "internal");
    let hosts: Vec<&str> = sets[0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    for h in [
        "a.example",
        "*.wild.example",
        "empty.example",
        "secure.example",
        "broken.example",
    ] {
        assert!(hosts.contains(&h), "{h} not in {hosts:?}");
    }
    let a = sets[0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "a.example")
        .unwrap();
    assert_eq!(a["kind"], "exact");
    let root = a["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "/")
        .unwrap();
    assert_eq!(root["kind"], "Prefix");
    assert_eq!(root["ingress"], "default/site");
    assert_eq!(root["backend"]["id"], "default/a:80");
    assert_eq!(root["backend"]["endpoints"][0], s._echo[0].addr.to_string());
    let wild = sets[0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "*.wild.example")
        .unwrap();
    assert_eq!(wild["kind"], "wildcard");
    assert_eq!(sets[0]["default_backend"]["ingress"], "default/fallback");
    assert_eq!(sets[0]["default_backend"]["backend"]["id"], "default/def:80");
    assert_eq!(sets[0]["tls"][0]["hosts"][0], "secure.example");
    assert_eq!(sets[1]["hosts"][0]["paths"][0]["kind"], "Exact");
    assert!(sets[1]["default_backend"].is_null());

    let certs = s.api("/api/certificates").await;
    let public = certs["sets"][0]["certificates"].as_array().unwrap();
    let secure = public.iter().find(|c| c["host"] == "secure.example").unwrap();
    assert_eq!(secure["not_after_unix"], s.secure_not_after);
    assert_eq!(secure["names"][0], "secure.example");
    assert!(secure["source"].as_str().unwrap().contains("secure-tls"), "{secure}");
    assert!(secure["expires_in_days"].as_i64().unwrap() >= 29);
    assert!(public.iter().any(|c| c["default"] == true));

    let diags = s.api("/api/diagnostics").await;
    assert_eq!(diags["count"], 1);
    let d = &diags["diagnostics"][0];
    assert_eq!(d["subject"], "Ingress default/broken");
    assert!(d["reason"].as_str().unwrap().contains("not found"), "{d}");
    s.gw.stop().await;
}

#[tokio::test]
async fn api_explain_says_which_route_and_why() {
    let s = setup().await;
    let e = s.api("/api/explain?set=public&host=A.Example:8080&path=/x/../y").await;
    assert_eq!(e["match"], "exact");
    assert_eq!(e["host"], "a.example");
    assert_eq!(e["path"], "/y");
    assert_eq!(e["route"]["path"], "/");
    assert_eq!(e["route"]["kind"], "Prefix");
    assert_eq!(e["route"]["ingress"], "default/site");
    assert_eq!(e["backend"]["id"], "default/a:80");
    assert_eq!(e["backend"]["endpoints"][0], s._echo[0].addr.to_string());

    let e = s
        .api("/api/explain?set=public&host=x.wild.example&path=%2Fdeep%2Fpath")
        .await;
    assert_eq!(e["match"], "wildcard");
    assert_eq!(e["route"]["host"], "*.wild.example");
    assert_eq!(e["backend"]["id"], "default/w:80");

    let e = s.api("/api/explain?set=public&host=nowhere.example&path=/").await;
    assert_eq!(e["match"], "default");
    assert_eq!(e["ingress"], "default/fallback");
    assert_eq!(e["backend"]["id"], "default/def:80");

    let e = s.api("/api/explain?set=internal&host=intra.example&path=/api/x").await;
    assert_eq!(e["match"], "none");
    assert!(e["backend"].is_null());
    let e = s.api("/api/explain?set=internal&host=intra.example&path=/api").await;
    assert_eq!(e["match"], "exact");
    assert_eq!(e["route"]["kind"], "Exact");

    let r = get(s.admin(), "admin", "/api/explain?set=nope&host=a.example").await;
    assert_eq!(r.status, 400);
    let r = get(s.admin(), "admin", "/api/explain?host=a.example").await;
    assert_eq!(r.status, 400, "two sets: set= is required");
    s.gw.stop().await;
}

#[tokio::test]
async fn access_log_writes_one_json_line_per_sampled_request() {
    let a = EchoServer::start("a", "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = service("default", "a", &[a.addr])
        + &ingress("default", "site", "portico", &[("a.example", "/", "Prefix", "a")]);
    std::fs::write(dir.path().join("m.yaml"), m).unwrap();
    let log_path = dir.path().join("access.log");
    let start = |sample: u64| {
        portico::app::start_with(
            portico::config::Config::from_yaml(ONE_SET).unwrap(),
            portico::app::Source::Manifests {
                dir: dir.path().to_path_buf(),
                poll_interval: Duration::from_millis(50),
            },
            portico::app::Extras {
                access_log: portico::accesslog::Settings {
                    target: portico::accesslog::Target::File(log_path.clone()),
                    sample,
                },
                ..Default::default()
            },
        )
    };
    let running = start(1).await.unwrap();
    let addr = running.http_addrs[0][0];
    assert_eq!(get(addr, "a.example", "/hello?q=1").await.status, 200);
    assert_eq!(get(addr, "other.example", "/nope").await.status, 404);
    let lines = wait_for_lines(&log_path, 2).await;
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["set"], "default");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "a.example");
    assert_eq!(first["path"], "/hello");
    assert_eq!(first["status"], 200);
    assert_eq!(first["ingress"], "default/site");
    assert_eq!(first["service"], "default/a:80");
    assert_eq!(first["upstream"], a.addr.to_string());
    assert_eq!(first["tls"], false);
    assert!(first["bytes_out"].as_u64().unwrap() > 0);
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let t = first["time"].as_str().unwrap();
    assert!(t.len() == 24 && t.ends_with('Z') && &t[10..11] == "T", "{t}");
    let second: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["status"], 404);
    assert!(second["ingress"].is_null() && second["upstream"].is_null());
    assert!(
        second["bytes_out"].as_u64().unwrap() > 0,
        "the 404 body the gateway wrote"
    );
    assert_eq!(first["bytes_in"], 0);

    // The default backend is attributed to the Ingress that set it, as in the metrics.
    let mut text = std::fs::read_to_string(dir.path().join("m.yaml")).unwrap();
    text += "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: fallback, namespace: default}\nspec:\n  ingressClassName: portico\n  defaultBackend: {service: {name: a, port: {number: 80}}}\n";
    let before = running.shared.snapshot.load().generation;
    write_atomically(&dir.path().join("m.yaml"), &text);
    while running.shared.snapshot.load().generation == before {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(addr, "other.example", "/nope").await.status, 200);
    let lines = wait_for_lines(&log_path, 3).await;
    let third: Value = serde_json::from_str(&lines[2]).unwrap();
    assert_eq!(third["ingress"], "default/fallback");
    assert_eq!(third["service"], "default/a:80");
    running.shutdown().await;

    // 1 in 3: six requests, two lines.
    std::fs::remove_file(&log_path).unwrap();
    let running = start(3).await.unwrap();
    let addr = running.http_addrs[0][0];
    for _ in 0..6 {
        get(addr, "a.example", "/").await;
    }
    wait_for_lines(&log_path, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(std::fs::read_to_string(&log_path).unwrap().lines().count(), 2);
    running.shutdown().await;
}

async fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    for _ in 0..300 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("access log never reached {n} lines");
}

#[test]
fn the_parser_rejects_malformed_expositions() {
    let ok = "# HELP x_total A counter.\n# TYPE x_total counter\nx_total{a=\"b\\\"c\"} 3\n";
    assert_eq!(parse(ok).get("x_total", &[("a", "b\"c")]), 3.0);
    for bad in [
        "x_total 1\n",                             // no HELP/TYPE
        "# HELP x A.\n# TYPE x gauge\nx{a=b} 1\n", // unquoted label
        "# HELP x A.\n# TYPE x gauge\nx 1 2 3\n",  // trailing fields
        "# HELP h A.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", // not cumulative
        "# HELP h A.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
    ] {
        assert!(std::panic::catch_unwind(|| parse(bad)).is_err(), "accepted: {bad:?}");
    }
}

/// `admin.apiAddress`: the API and dashboard move to their own listener (e.g. loopback, for `kubectl
/// port-forward`); the admin address keeps health and metrics only.
#[tokio::test]
async fn the_api_and_dashboard_can_have_their_own_address() {
    let config = r#"
listenerSets:
  - name: public
    ingressClasses: [portico]
    http: ["127.0.0.1:0"]
admin: { address: "127.0.0.1:0", apiAddress: "127.0.0.1:0" }
"#;
    let gw = Gateway::start_with(config, "").await;
    let (admin, api) = (
        gw.running().admin_addr,
        gw.running().api_addr.expect("apiAddress bound"),
    );
    assert_ne!(admin, api);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            get(admin, "admin", path).await.status,
            200,
            "{path} on the admin address"
        );
    }
    for path in [
        "/",
        "/index.html",
        "/dashboard.js",
        "/api/routes",
        "/api/diagnostics",
        "/api/explain?host=a",
    ] {
        let r = get(admin, "admin", path).await;
        assert_eq!(r.status, 404, "{path} is not on the admin address");
        assert!(r.text().contains("apiAddress"), "{}", r.text());
    }
    for path in ["/", "/dashboard.js", "/api/routes", "/api/diagnostics", "/metrics"] {
        assert_eq!(get(api, "admin", path).await.status, 200, "{path} on apiAddress");
    }
    gw.stop().await;
}
