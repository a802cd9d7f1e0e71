//! Prometheus metrics, kept in atomics and rendered in the text exposition format 0.0.4 by hand.
//!
//! The request path never takes a lock and never allocates to count a request:
//! - per listener set gauges, histograms and error counters live in a fixed `Box<[SetMetrics]>` indexed by the
//!   set's position;
//! - per-route request counters are [`RouteCounter`]s reached from the route itself (the snapshot's per-route
//!   state holds one per backend of the route), so counting costs no lookup. They are handed out by the
//!   [`RouteCounters`] registry, keyed by the route's origin (`namespace/name`) and the backend id
//!   (`namespace/service:port`), when a table is built (before it is published), and never removed from it: a
//!   route rebuilt for the same pair gets the same counter, and a counter never goes backwards. Label values come
//!   from configuration only: never a request's Host or path.
//! - each such counter also holds the pair's request and upstream latency histograms, allocated on the pair's
//!   first request (a route nobody uses costs no histogram memory);
//! - exact status codes by method are counted per listener set in a fixed array (10 methods, codes 100 to 599
//!   and "other"): bounded whatever clients send.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::certs::TlsBuild;
use crate::model::Translation;

/// Upper bounds (seconds) of the request duration histogram.
pub const DURATION_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Methods counted by name in `portico_responses_total`; anything else is `OTHER`.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

/// The index of `m` in [`METHODS`].
pub fn method_index(m: &http::Method) -> u8 {
    match *m {
        http::Method::GET => 0,
        http::Method::HEAD => 1,
        http::Method::POST => 2,
        http::Method::PUT => 3,
        http::Method::DELETE => 4,
        http::Method::PATCH => 5,
        http::Method::OPTIONS => 6,
        http::Method::CONNECT => 7,
        http::Method::TRACE => 8,
        _ => 9,
    }
}

/// Status codes 100..=599 each, then one slot for anything else.
const CODES: usize = 501;

fn code_slot(status: u16) -> usize {
    match status {
        100..=599 => (status - 100) as usize,
        _ => CODES - 1,
    }
}

/// Status classes, indexed by `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upstream failure kinds, as labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect = 0,
    Timeout = 1,
    Reset = 2,
    Tls = 3,
    Invalid = 4,
}

const ERROR_KINDS: [&str; 5] = ["connect", "timeout", "reset", "tls", "invalid"];

impl UpstreamErrorKind {
    pub fn from_error(e: crate::upstream::client::UpstreamError) -> Self {
        use crate::upstream::client::UpstreamError::*;
        match e {
            Connect => Self::Connect,
            ConnectTimeout | ResponseTimeout => Self::Timeout,
            Reset => Self::Reset,
            Tls => Self::Tls,
            Invalid => Self::Invalid,
        }
    }
}

/// All of the gateway's metrics. One per started gateway.
pub struct Metrics {
    set_names: Vec<String>,
    sets: Box<[SetMetrics]>,
    /// With [`Metrics::with_gateways`]: the index of the `gateway` set, which counts for every listener set past
    /// the configured ones (each Gateway socket is one).
    gateway_slot: Option<usize>,
    /// Every route counter handed out (taken by the table builder and by `render`, never on the request path).
    routes: std::sync::Mutex<RouteCounters>,
    /// The counter of requests no route took (`-`, `-`).
    unmatched: RouteCounter,
    publishes: AtomicU64,
    last_build_micros: AtomicU64,
    generation: AtomicU64,
    rejected: AtomicU64,
    /// `(set, host, not_after)` per served certificate, from the last publish.
    certs: ArcSwap<Vec<(usize, String, i64)>>,
    /// Access-log lines written and dropped (channel full).
    pub access_log_written: AtomicU64,
    pub access_log_dropped: AtomicU64,
    /// Layer-4 routes' counters (see `l4::stats`).
    pub l4: crate::l4::stats::Registry,
}

/// What one listener set counts.
struct SetMetrics {
    open_connections: AtomicI64,
    connections: AtomicU64,
    handshakes_ok: AtomicU64,
    handshakes_failed: AtomicU64,
    upstream_errors: [AtomicU64; 5],
    retries: AtomicU64,
    duration: Histogram,
    upstream_duration: Histogram,
    /// Responses by method and exact status: `METHODS.len() * CODES` counters (40 KB per set).
    responses: Box<[AtomicU64]>,
    /// Request and response body bytes, as declared (`Content-Length` or a body of known size).
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Default for SetMetrics {
    fn default() -> Self {
        Self {
            open_connections: AtomicI64::new(0),
            connections: AtomicU64::new(0),
            handshakes_ok: AtomicU64::new(0),
            handshakes_failed: AtomicU64::new(0),
            upstream_errors: Default::default(),
            retries: AtomicU64::new(0),
            duration: Histogram::default(),
            upstream_duration: Histogram::default(),
            responses: (0..METHODS.len() * CODES).map(|_| AtomicU64::new(0)).collect(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is above the largest bound. Rendered cumulatively.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// The bucket of `d` and `d` in microseconds, computed once for the histograms that observe the same value.
    fn slot(d: Duration) -> (usize, u64) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        (i, d.as_micros().min(u64::MAX as u128) as u64)
    }

    fn observe_at(&self, (i, micros): (usize, u64)) {
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// One (origin, backend) pair's counts: requests by listener set and status class, and its latency
/// histograms once it has had a request.
pub struct RouteStats {
    classes: Box<[[AtomicU64; 5]]>,
    latency: std::sync::OnceLock<Box<RouteLatency>>,
}

/// A pair's request duration (to the response head) and upstream duration (to the upstream's response head).
#[derive(Default)]
struct RouteLatency {
    request: Histogram,
    upstream: Histogram,
}

pub type RouteCounter = Arc<RouteStats>;

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStats")
            .field("sets", &self.classes.len())
            .field("latency", &self.latency.get().is_some())
            .finish()
    }
}

fn route_counter(sets: usize) -> RouteCounter {
    Arc::new(RouteStats {
        classes: (0..sets).map(|_| Default::default()).collect(),
        latency: std::sync::OnceLock::new(),
    })
}

/// Looked up once per request: a fast non-cryptographic hash (keys come from configuration, not from clients).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One origin's counters by backend id, searched in order: an Ingress names one backend or a few, and a list
/// costs less memory than a map per Ingress (at 10,000 Ingresses the maps were 4 MB). Backend ids are the
/// routes' own shared strings.
type ByService = Vec<(Arc<str>, RouteCounter)>;

/// Every per-route counter handed out, by origin and backend id (see the module docs for the invariant).
pub struct RouteCounters {
    by_ingress: FastMap<Arc<str>, ByService>,
    sets: usize,
}

impl RouteCounters {
    /// The counter of requests `origin`'s routes send to `backend`: the one handed out before for the pair, else
    /// a new one.
    pub fn counter(&mut self, origin: &Arc<str>, backend: &Arc<str>) -> RouteCounter {
        let per = self.by_ingress.entry(origin.clone()).or_default();
        if let Some((_, c)) = per.iter().find(|(s, _)| **s == **backend) {
            return c.clone();
        }
        let c = route_counter(self.sets);
        per.push((backend.clone(), c.clone()));
        c
    }
}

/// The label value for "no Ingress" / "no service".
pub const NONE: &str = "-";

/// What a finished request reports.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub set: usize,
    /// The counter of the route and backend that took the request; `None` when no route did.
    pub counter: Option<&'a RouteCounter>,
    pub status: u16,
    pub elapsed: Duration,
    /// Time to the upstream's response headers, when a request was sent upstream.
    pub upstream_elapsed: Option<Duration>,
    pub upstream_error: Option<UpstreamErrorKind>,
    /// The request's method ([`method_index`]).
    pub method: u8,
    /// Body sizes, when known (declared length or a body of exact size).
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
}

// === impl Metrics ===

impl Metrics {
    pub fn new(set_names: &[String]) -> Self {
        let n = set_names.len();
        let mut routes = RouteCounters {
            by_ingress: FastMap::default(),
            sets: n,
        };
        let none = Arc::<str>::from(NONE);
        let unmatched = routes.counter(&none, &none);
        Self {
            set_names: set_names.to_vec(),
            sets: (0..n).map(|_| SetMetrics::default()).collect(),
            gateway_slot: None,
            routes: std::sync::Mutex::new(routes),
            unmatched,
            publishes: AtomicU64::new(0),
            last_build_micros: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            certs: ArcSwap::from_pointee(Vec::new()),
            access_log_written: AtomicU64::new(0),
            access_log_dropped: AtomicU64::new(0),
            l4: crate::l4::stats::Registry::default(),
        }
    }

    /// [`Metrics::new`] with one more set, `gateway`, counting the requests and connections of every Gateway
    /// socket (listener sets past the configured ones).
    pub fn with_gateways(set_names: &[String]) -> Self {
        let mut names = set_names.to_vec();
        names.push("gateway".to_string());
        let mut m = Self::new(&names);
        m.gateway_slot = Some(set_names.len());
        m
    }

    /// The index a listener set counts under.
    #[inline]
    fn slot(&self, set: usize) -> usize {
        match self.gateway_slot {
            Some(g) if set >= g => g,
            _ => set,
        }
    }

    /// The listener set names, in configuration order.
    pub fn set_names(&self) -> &[String] {
        &self.set_names
    }

    /// Counts a finished request (at response headers). Lock-free, allocation-free.
    pub fn record(&self, o: &Outcome<'_>) {
        let slot = self.slot(o.set);
        let Some(set) = self.sets.get(slot) else {
            return;
        };
        let elapsed = Histogram::slot(o.elapsed);
        let upstream = o.upstream_elapsed.map(Histogram::slot);
        set.duration.observe_at(elapsed);
        if let Some(u) = upstream {
            set.upstream_duration.observe_at(u);
        }
        if let Some(k) = o.upstream_error {
            set.upstream_errors[k as usize].fetch_add(1, Ordering::Relaxed);
        }
        let class = match o.status / 100 {
            c @ 1..=5 => (c - 1) as usize,
            _ => 4,
        };
        let code = usize::from(o.method.min(9)) * CODES + code_slot(o.status);
        set.responses[code].fetch_add(1, Ordering::Relaxed);
        if let Some(b) = o.bytes_in {
            set.bytes_in.fetch_add(b, Ordering::Relaxed);
        }
        if let Some(b) = o.bytes_out {
            set.bytes_out.fetch_add(b, Ordering::Relaxed);
        }
        let counter = o.counter.unwrap_or(&self.unmatched);
        if let Some(c) = counter.classes.get(slot) {
            c[class].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(route) = o.counter {
            // Allocated once, on the pair's first request; afterwards a load and a branch.
            let l = route.latency.get_or_init(Box::default);
            l.request.observe_at(elapsed);
            if let Some(u) = upstream {
                l.upstream.observe_at(u);
            }
        }
    }

    /// What one (origin, backend) pair has counted so far, for the dashboard: requests by status class (all sets)
    /// and its request-latency histogram as cumulative counts per bound of [`DURATION_BUCKETS`] then +Inf.
    /// `None` when the pair has no counter yet.
    pub fn route_stats(&self, origin: &str, backend: &str) -> Option<([u64; 5], Vec<u64>)> {
        let routes = self.route_counters();
        let c = routes
            .by_ingress
            .get(origin)?
            .iter()
            .find(|(s, _)| &**s == backend)?
            .1
            .clone();
        drop(routes);
        let mut classes = [0u64; 5];
        for per in &*c.classes {
            for (sum, v) in classes.iter_mut().zip(per.iter()) {
                *sum += v.load(Ordering::Relaxed);
            }
        }
        let mut cum = 0;
        let buckets = match c.latency.get() {
            None => vec![0; DURATION_BUCKETS.len() + 1],
            Some(l) => l
                .request
                .buckets
                .iter()
                .map(|b| {
                    cum += b.load(Ordering::Relaxed);
                    cum
                })
                .collect(),
        };
        Some((classes, buckets))
    }

    /// The registry of per-route counters, for the table builder (never on the request path).
    pub fn route_counters(&self) -> std::sync::MutexGuard<'_, RouteCounters> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request was sent again to another endpoint after a connection failure.
    pub fn retry(&self, set: usize) {
        if let Some(s) = self.sets.get(self.slot(set)) {
            s.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn connection_opened(&self, set: usize) {
        if let Some(s) = self.sets.get(self.slot(set)) {
            s.open_connections.fetch_add(1, Ordering::Relaxed);
            s.connections.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn connection_closed(&self, set: usize) {
        if let Some(s) = self.sets.get(self.slot(set)) {
            s.open_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A guard that counts a connection as open until dropped.
    pub fn open_connection(self: &Arc<Self>, set: usize) -> ConnectionGuard {
        self.connection_opened(set);
        ConnectionGuard {
            metrics: self.clone(),
            set,
        }
    }

    pub fn tls_handshake(&self, set: usize, ok: bool) {
        if let Some(s) = self.sets.get(self.slot(set)) {
            if ok {
                s.handshakes_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                s.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Called by the publisher when it publishes a snapshot built from `translation` and `tls`. (The route
    /// counters were handed out while the table was built.)
    pub fn published(&self, translation: &Translation, tls: &TlsBuild, generation: u64, build: Duration) {
        let mut certs = Vec::new();
        for (set, served) in tls.served.iter().enumerate() {
            for (host, info) in served {
                certs.push((set, host.clone(), info.not_after));
            }
        }
        self.certs.store(Arc::new(certs));
        self.rejected.store(translation.errors() as u64, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
        self.last_build_micros
            .store(build.as_micros() as u64, Ordering::Relaxed);
        self.publishes.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let sets = || self.set_names.iter().zip(self.sets.iter());

        header(&mut out, "portico_requests_total", "counter", "Requests answered, by listener set, Ingress (namespace/name, - when none matched), backend service (namespace/service:port) and status class.");
        let routes = self.route_counters();
        let mut keys: Vec<(&Arc<str>, &Arc<str>, &RouteCounter)> = routes
            .by_ingress
            .iter()
            .flat_map(|(i, m)| m.iter().map(move |(s, c)| (i, s, c)))
            .collect();
        keys.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for &(ingress, service, c) in &keys {
            for (set, per) in self.set_names.iter().zip(c.classes.iter()) {
                for (class, v) in CLASSES.iter().zip(per.iter()) {
                    let v = v.load(Ordering::Relaxed);
                    if v > 0 {
                        let _ = writeln!(
                            out,
                            "portico_requests_total{{set=\"{}\",ingress=\"{}\",service=\"{}\",class=\"{class}\"}} {v}",
                            esc(set),
                            esc(ingress),
                            esc(service)
                        );
                    }
                }
            }
        }

        let names = &self.set_names;
        render_histogram(
            &mut out,
            "portico_request_duration_seconds",
            "Time from request to response headers, by listener set.",
            names.iter().zip(self.sets.iter().map(|s| &s.duration)),
        );
        render_histogram(
            &mut out,
            "portico_upstream_duration_seconds",
            "Time from sending a request upstream to its response headers (last attempt), by listener set.",
            names.iter().zip(self.sets.iter().map(|s| &s.upstream_duration)),
        );
        for (name, help, upstream) in [
            (
                "portico_route_request_duration_seconds",
                "Time from request to response headers, by Ingress (route origin) and backend service.",
                false,
            ),
            (
                "portico_route_upstream_duration_seconds",
                "Time from sending a request upstream to its response headers (last attempt), by Ingress (route origin) and backend service.",
                true,
            ),
        ] {
            header(&mut out, name, "histogram", help);
            for &(ingress, service, c) in &keys {
                let Some(l) = c.latency.get() else { continue };
                let h = if upstream { &l.upstream } else { &l.request };
                if h.count.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let labels = format!("ingress=\"{}\",service=\"{}\"", esc(ingress), esc(service));
                histogram_lines(&mut out, name, &labels, h);
            }
        }
        drop(keys);
        drop(routes);

        header(
            &mut out,
            "portico_responses_total",
            "counter",
            "Responses by listener set, request method (9 names and OTHER) and exact status code.",
        );
        for (name, s) in sets() {
            for (i, v) in s.responses.iter().enumerate() {
                let v = v.load(Ordering::Relaxed);
                if v == 0 {
                    continue;
                }
                let (method, code) = (METHODS[i / CODES], i % CODES);
                let code = if code == CODES - 1 {
                    "other".to_string()
                } else {
                    (code + 100).to_string()
                };
                let _ = writeln!(
                    out,
                    "portico_responses_total{{set=\"{}\",method=\"{method}\",code=\"{code}\"}} {v}",
                    esc(name)
                );
            }
        }
        for (metric, help, field) in [
            (
                "portico_request_bytes_total",
                "Request body bytes received, by listener set (bodies of declared or known size).",
                0,
            ),
            (
                "portico_response_bytes_total",
                "Response body bytes sent, by listener set (bodies of declared or known size).",
                1,
            ),
        ] {
            header(&mut out, metric, "counter", help);
            for (name, s) in sets() {
                let v = if field == 0 { &s.bytes_in } else { &s.bytes_out };
                let _ = writeln!(out, "{metric}{{set=\"{}\"}} {}", esc(name), v.load(Ordering::Relaxed));
            }
        }

        header(
            &mut out,
            "portico_upstream_errors_total",
            "counter",
            "Requests that failed upstream, by listener set and kind (connect, timeout, reset).",
        );
        for (name, s) in sets() {
            for (kind, v) in ERROR_KINDS.iter().zip(s.upstream_errors.iter()) {
                let _ = writeln!(
                    out,
                    "portico_upstream_errors_total{{set=\"{}\",kind=\"{kind}\"}} {}",
                    esc(name),
                    v.load(Ordering::Relaxed)
                );
            }
        }

        header(
            &mut out,
            "portico_upstream_retries_total",
            "counter",
            "Requests sent again to another endpoint after a connection failure, by listener set.",
        );
        for (name, s) in sets() {
            let _ = writeln!(
                out,
                "portico_upstream_retries_total{{set=\"{}\"}} {}",
                esc(name),
                s.retries.load(Ordering::Relaxed)
            );
        }

        header(
            &mut out,
            "portico_open_connections",
            "gauge",
            "Client connections currently open, by listener set.",
        );
        for (name, s) in sets() {
            let v = s.open_connections.load(Ordering::Relaxed);
            let _ = writeln!(out, "portico_open_connections{{set=\"{}\"}} {v}", esc(name));
        }
        header(
            &mut out,
            "portico_connections_total",
            "counter",
            "Client connections accepted, by listener set.",
        );
        for (name, s) in sets() {
            let v = s.connections.load(Ordering::Relaxed);
            let _ = writeln!(out, "portico_connections_total{{set=\"{}\"}} {v}", esc(name));
        }
        header(
            &mut out,
            "portico_tls_handshakes_total",
            "counter",
            "TLS handshakes, by listener set and result (ok, failed).",
        );
        for (name, s) in sets() {
            for (result, v) in [("ok", &s.handshakes_ok), ("failed", &s.handshakes_failed)] {
                let _ = writeln!(
                    out,
                    "portico_tls_handshakes_total{{set=\"{}\",result=\"{result}\"}} {}",
                    esc(name),
                    v.load(Ordering::Relaxed)
                );
            }
        }

        let scalar = |out: &mut String, name: &str, kind: &str, help: &str, v: String| {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        scalar(
            &mut out,
            "portico_table_publishes_total",
            "counter",
            "Routing tables published.",
            ld(&self.publishes).to_string(),
        );
        scalar(
            &mut out,
            "portico_table_generation",
            "gauge",
            "Generation of the routing table being served.",
            ld(&self.generation).to_string(),
        );
        scalar(
            &mut out,
            "portico_table_build_seconds",
            "gauge",
            "How long the last published table took to build.",
            (ld(&self.last_build_micros) as f64 / 1e6).to_string(),
        );
        scalar(
            &mut out,
            "portico_rejected_objects",
            "gauge",
            "Diagnostics (rejected objects or parts of objects) in the last published table.",
            ld(&self.rejected).to_string(),
        );
        scalar(
            &mut out,
            "portico_access_log_lines_total",
            "counter",
            "Access-log lines written.",
            ld(&self.access_log_written).to_string(),
        );
        scalar(
            &mut out,
            "portico_access_log_dropped_total",
            "counter",
            "Access-log lines dropped because the writer fell behind.",
            ld(&self.access_log_dropped).to_string(),
        );

        header(&mut out, "portico_certificate_expiry_timestamp_seconds", "gauge", "notAfter of the certificate served for each configured TLS host (*default* is the set's default certificate), unix seconds.");
        for (set, host, not_after) in self.certs.load().iter() {
            let name = self.set_names.get(*set).map_or("", String::as_str);
            let _ = writeln!(
                out,
                "portico_certificate_expiry_timestamp_seconds{{set=\"{}\",host=\"{}\"}} {not_after}",
                esc(name),
                esc(host)
            );
        }
        out.push_str(&self.l4.render());
        out
    }
}

/// Decrements the open-connections gauge when dropped.
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    set: usize,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connection_closed(self.set);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
}

/// One histogram family, cumulative buckets per listener set.
fn render_histogram<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    sets: impl Iterator<Item = (&'a String, &'a Histogram)>,
) {
    header(out, name, "histogram", help);
    for (set, h) in sets {
        histogram_lines(out, name, &format!("set=\"{}\"", esc(set)), h);
    }
}

/// One histogram's bucket, sum and count lines, with `labels` (already escaped) before `le`.
fn histogram_lines(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cum = 0;
    for (i, b) in DURATION_BUCKETS.iter().enumerate() {
        cum += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
    }
    cum += h.buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
    let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
}

/// ACME order outcomes, from the manager's counters at scrape time.
pub fn render_acme(status: &crate::acme::manager::Status) -> String {
    let mut out = String::new();
    for (name, kind, help, v) in [
        (
            "portico_acme_orders_started_total",
            "counter",
            "ACME orders begun (each attempt, retries included).",
            status.orders_started,
        ),
        (
            "portico_acme_certificates_issued_total",
            "counter",
            "Certificates issued and stored.",
            status.certificates_issued,
        ),
        (
            "portico_acme_failures_total",
            "counter",
            "ACME attempts that failed (the working certificate is kept).",
            status.failures,
        ),
        (
            "portico_acme_failing_secrets",
            "gauge",
            "Secrets whose last ACME attempt failed and have no new certificate yet.",
            status.failing.len() as u64,
        ),
        (
            "portico_acme_invalid_orders",
            "gauge",
            "Secrets whose last order the CA marked invalid.",
            status.invalid.len() as u64,
        ),
    ] {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    out
}

/// Backend and endpoint health, read from the published table at scrape time (nothing on the request path).
/// Labels are backend ids and endpoint addresses, both from configuration (EndpointSlices), never from requests.
pub fn render_backends<'a>(all: impl Iterator<Item = &'a Arc<crate::upstream::Backend>>) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut backends: Vec<&Arc<crate::upstream::Backend>> = all.filter(|b| seen.insert(Arc::as_ptr(b))).collect();
    backends.sort_by(|a, b| (&a.id, a.check.is_some()).cmp(&(&b.id, b.check.is_some())));
    let mut out = String::new();
    header(
        &mut out,
        "portico_backend_ejections_total",
        "counter",
        "Passive-health ejections of the endpoints of a backend since it was built.",
    );
    for b in &backends {
        let _ = writeln!(
            out,
            "portico_backend_ejections_total{{backend=\"{}\"}} {}",
            esc(&b.id),
            b.ejections_total()
        );
    }
    header(
        &mut out,
        "portico_backend_upstream_errors_total",
        "counter",
        "Requests that failed upstream, by backend and kind (connect, timeout, reset, tls, invalid), since the backend was built.",
    );
    for b in &backends {
        for (kind, v) in ERROR_KINDS.iter().zip(b.errors_total()) {
            if v > 0 {
                let _ = writeln!(
                    out,
                    "portico_backend_upstream_errors_total{{backend=\"{}\",kind=\"{kind}\"}} {v}",
                    esc(&b.id)
                );
            }
        }
    }
    header(
        &mut out,
        "portico_endpoint_ejected",
        "gauge",
        "1 while an endpoint is ejected by passive health.",
    );
    for b in &backends {
        for e in &b.endpoints {
            let _ = writeln!(
                out,
                "portico_endpoint_ejected{{backend=\"{}\",endpoint=\"{}\"}} {}",
                esc(&b.id),
                e.addr,
                u8::from(e.is_ejected())
            );
        }
    }
    header(
        &mut out,
        "portico_endpoint_check_up",
        "gauge",
        "Active health check state of an endpoint (1 up, 0 down), for backends with checks.",
    );
    for b in backends.iter().filter(|b| b.check.is_some()) {
        for e in &b.endpoints {
            let _ = writeln!(
                out,
                "portico_endpoint_check_up{{backend=\"{}\",endpoint=\"{}\"}} {}",
                esc(&b.id),
                e.addr,
                u8::from(!e.is_check_down())
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let m = Metrics::new(&["a".to_string()]);
        for ms in [0, 3, 3, 70, 20_000] {
            m.record(&Outcome {
                set: 0,
                counter: None,
                status: 404,
                elapsed: Duration::from_millis(ms),
                upstream_elapsed: (ms == 3).then(|| Duration::from_millis(2)),
                upstream_error: None,
                method: method_index(&http::Method::GET),
                bytes_in: None,
                bytes_out: Some(10),
            });
        }
        let text = m.render();
        assert!(text.contains("portico_request_duration_seconds_bucket{set=\"a\",le=\"0.001\"} 1\n"));
        assert!(text.contains("portico_request_duration_seconds_bucket{set=\"a\",le=\"0.005\"} 3\n"));
        assert!(text.contains("portico_request_duration_seconds_bucket{set=\"a\",le=\"10\"} 4\n"));
        assert!(text.contains("portico_request_duration_seconds_bucket{set=\"a\",le=\"+Inf\"} 5\n"));
        assert!(text.contains("portico_request_duration_seconds_count{set=\"a\"} 5\n"));
        assert!(text.contains("portico_upstream_duration_seconds_bucket{set=\"a\",le=\"0.001\"} 0\n"));
        assert!(text.contains("portico_upstream_duration_seconds_bucket{set=\"a\",le=\"0.0025\"} 2\n"));
        assert!(text.contains("portico_upstream_duration_seconds_count{set=\"a\"} 2\n"));
        assert!(text.contains("portico_requests_total{set=\"a\",ingress=\"-\",service=\"-\",class=\"4xx\"} 5\n"));
        assert!(text.contains("portico_responses_total{set=\"a\",method=\"GET\",code=\"404\"} 5\n"));
        assert!(text.contains("portico_response_bytes_total{set=\"a\"} 50\n"));
        assert!(text.contains("portico_request_bytes_total{set=\"a\"} 0\n"));
        // Requests no route took have no per-route histogram.
        assert!(!text.contains("portico_route_request_duration_seconds_bucket"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(esc("plain"), "plain");
    }

    #[test]
    fn a_pair_keeps_its_counter() {
        let m = Metrics::new(&["a".to_string()]);
        let (i1, i2, s1): (Arc<str>, Arc<str>, Arc<str>) = ("ns/i1".into(), "ns/i2".into(), "ns/s1:80".into());
        let c = m.route_counters().counter(&i1, &s1);
        assert!(Arc::ptr_eq(&c, &m.route_counters().counter(&i1, &"ns/s1:80".into())));
        assert!(!Arc::ptr_eq(&c, &m.route_counters().counter(&i2, &s1)));
        for (status, method, upstream) in [(200, "POST", 3), (503, "PROPFIND", 30)] {
            m.record(&Outcome {
                set: 0,
                counter: Some(&c),
                status,
                elapsed: Duration::from_millis(upstream + 1),
                upstream_elapsed: Some(Duration::from_millis(upstream)),
                upstream_error: None,
                method: method_index(&http::Method::from_bytes(method.as_bytes()).unwrap()),
                bytes_in: Some(7),
                bytes_out: None,
            });
        }
        // An out-of-range status from a backend counts as "other", never as a new label value.
        m.record(&Outcome {
            set: 0,
            counter: None,
            status: 999,
            elapsed: Duration::ZERO,
            upstream_elapsed: None,
            upstream_error: None,
            method: 0,
            bytes_in: None,
            bytes_out: None,
        });
        let text = m.render();
        for line in [
            "portico_requests_total{set=\"a\",ingress=\"ns/i1\",service=\"ns/s1:80\",class=\"2xx\"} 1\n",
            "portico_responses_total{set=\"a\",method=\"POST\",code=\"200\"} 1\n",
            "portico_responses_total{set=\"a\",method=\"OTHER\",code=\"503\"} 1\n",
            "portico_responses_total{set=\"a\",method=\"GET\",code=\"other\"} 1\n",
            "portico_request_bytes_total{set=\"a\"} 14\n",
            "portico_route_request_duration_seconds_bucket{ingress=\"ns/i1\",service=\"ns/s1:80\",le=\"0.005\"} 1\n",
            "portico_route_request_duration_seconds_count{ingress=\"ns/i1\",service=\"ns/s1:80\"} 2\n",
            "portico_route_upstream_duration_seconds_bucket{ingress=\"ns/i1\",service=\"ns/s1:80\",le=\"0.025\"} 1\n",
            "portico_route_upstream_duration_seconds_bucket{ingress=\"ns/i1\",service=\"ns/s1:80\",le=\"0.05\"} 2\n",
        ] {
            assert!(text.contains(line), "{line}");
        }
        // The other pair had no request: no histogram lines.
        assert!(!text.contains("ingress=\"ns/i2\",service=\"ns/s1:80\",le="));
    }
}
