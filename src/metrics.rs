//! Prometheus metrics, kept in atomics and rendered in the text exposition format 0.0.4 by hand.
//!
//! The request path never takes a lock and never allocates to count a request:
//! - per listener set gauges, histograms and error counters live in a fixed `Box<[SetMetrics]>` indexed by the
//!   set's position;
//! - per-route request counters live in a [`RouteCounters`] table behind an `ArcSwap`, keyed by the Ingress
//!   (`namespace/name`) and then by the backend id (`namespace/service:port`). Its keys are `Arc<str>`, so a
//!   request looks them up by `&str` (one `ArcSwap` load and two hash probes). The table is rebuilt on publish
//!   from the compiled configuration *before* the routing snapshot is swapped in, and entries are never removed
//!   (their `Arc<RouteCounter>` is carried over), so every route a request can match already has its counters and
//!   a counter never goes backwards. Label values come from configuration only: never a request's Host or path.

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
    routes: ArcSwap<RouteCounters>,
    /// Every backend id in `routes`, so a new pair shares its id with the Ingresses naming the same backend
    /// (touched by the publisher only).
    backend_ids: std::sync::Mutex<std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>>,
    publishes: AtomicU64,
    last_build_micros: AtomicU64,
    generation: AtomicU64,
    rejected: AtomicU64,
    /// `(set, host, not_after)` per served certificate, from the last publish.
    certs: ArcSwap<Vec<(usize, String, i64)>>,
    /// Access-log lines written and dropped (channel full).
    pub access_log_written: AtomicU64,
    pub access_log_dropped: AtomicU64,
}

/// What one listener set counts.
#[derive(Default)]
struct SetMetrics {
    open_connections: AtomicI64,
    connections: AtomicU64,
    handshakes_ok: AtomicU64,
    handshakes_failed: AtomicU64,
    upstream_errors: [AtomicU64; 5],
    retries: AtomicU64,
    duration: Histogram,
    upstream_duration: Histogram,
}

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is above the largest bound. Rendered cumulatively.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Requests by listener set and status class, for one (Ingress, backend) pair: one allocation.
type RouteCounter = Arc<[[AtomicU64; 5]]>;

fn route_counter(sets: usize) -> RouteCounter {
    (0..sets).map(|_| Default::default()).collect()
}

/// Looked up once per request: a fast non-cryptographic hash (keys come from configuration, not from clients).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One Ingress's counters by backend id, searched in order: an Ingress names one backend or a few, and a slice
/// costs less memory than a map per Ingress (at 10,000 Ingresses the maps were 4 MB). Backend ids are shared
/// between Ingresses naming the same backend.
type ByService = [(Arc<str>, RouteCounter)];

/// The per-route counters, rebuilt on publish (see the module docs for the invariant).
pub struct RouteCounters {
    by_ingress: FastMap<Arc<str>, Arc<ByService>>,
    /// Per listener set: the Ingress that set its default backend.
    defaults: Vec<Option<Arc<str>>>,
}

/// The label value for "no Ingress" / "no service".
pub const NONE: &str = "-";

/// What a finished request reports.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub set: usize,
    /// The Ingress of the matched route; `None` for the default backend or no route.
    pub ingress: Option<&'a str>,
    /// The matched backend's id; `None` when nothing matched.
    pub service: Option<&'a str>,
    /// The listener set's default backend served the request.
    pub default_backend: bool,
    pub status: u16,
    pub elapsed: Duration,
    /// Time to the upstream's response headers, when a request was sent upstream.
    pub upstream_elapsed: Option<Duration>,
    pub upstream_error: Option<UpstreamErrorKind>,
}

// === impl Metrics ===

impl Metrics {
    pub fn new(set_names: &[String]) -> Self {
        let n = set_names.len();
        let none: Arc<ByService> = Arc::new([(Arc::<str>::from(NONE), route_counter(n))]);
        let mut by_ingress = FastMap::default();
        by_ingress.insert(Arc::<str>::from(NONE), none);
        Self {
            set_names: set_names.to_vec(),
            sets: (0..n).map(|_| SetMetrics::default()).collect(),
            routes: ArcSwap::from_pointee(RouteCounters {
                by_ingress,
                defaults: vec![None; n],
            }),
            backend_ids: Default::default(),
            publishes: AtomicU64::new(0),
            last_build_micros: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            certs: ArcSwap::from_pointee(Vec::new()),
            access_log_written: AtomicU64::new(0),
            access_log_dropped: AtomicU64::new(0),
        }
    }

    /// The listener set names, in configuration order.
    pub fn set_names(&self) -> &[String] {
        &self.set_names
    }

    /// Counts a finished request (at response headers). Lock-free, allocation-free.
    pub fn record(&self, o: &Outcome<'_>) {
        let Some(set) = self.sets.get(o.set) else {
            return;
        };
        set.duration.observe(o.elapsed);
        if let Some(u) = o.upstream_elapsed {
            set.upstream_duration.observe(u);
        }
        if let Some(k) = o.upstream_error {
            set.upstream_errors[k as usize].fetch_add(1, Ordering::Relaxed);
        }
        let class = match o.status / 100 {
            c @ 1..=5 => (c - 1) as usize,
            _ => 4,
        };
        let routes = self.routes.load();
        let ingress = match (o.ingress, o.default_backend) {
            (Some(i), _) => i,
            (None, true) => routes.defaults.get(o.set).and_then(|d| d.as_deref()).unwrap_or(NONE),
            (None, false) => NONE,
        };
        let service = o.service.unwrap_or(NONE);
        // Every configured pair is present (inserted before its table is published); anything else counts as
        // unmatched rather than allocating on the request path.
        let find = |ingress: &str, service: &str| {
            let per = routes.by_ingress.get(ingress)?;
            per.iter().find(|(s, _)| **s == *service).map(|(_, c)| c)
        };
        let counter = find(ingress, service).or_else(|| find(NONE, NONE));
        if let Some(c) = counter.and_then(|c| c.get(o.set)) {
            c[class].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Ingress that set a listener set's default backend (as last published).
    /// A request was sent again to another endpoint after a connection failure.
    pub fn retry(&self, set: usize) {
        if let Some(s) = self.sets.get(set) {
            s.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn default_ingress(&self, set: usize) -> Option<Arc<str>> {
        self.routes.load().defaults.get(set).cloned().flatten()
    }

    pub fn connection_opened(&self, set: usize) {
        if let Some(s) = self.sets.get(set) {
            s.open_connections.fetch_add(1, Ordering::Relaxed);
            s.connections.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn connection_closed(&self, set: usize) {
        if let Some(s) = self.sets.get(set) {
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
        if let Some(s) = self.sets.get(set) {
            if ok {
                s.handshakes_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                s.handshakes_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Called by the publisher before the new routing snapshot `snap` (built from `translation` and `tls`) is
    /// swapped in, with the translation published before (`None` at first). Counters are never removed (their totals stay in the
    /// exposition), so every pair of the previous translation has its counters already and only the hosts that
    /// changed since ([`crate::model::changed_hosts`]) and the default backends are looked at. The map is
    /// copied only when the table names a new (Ingress, backend) pair, and then shallowly (each Ingress's slice
    /// is shared until it changes). A new Ingress's key is its routes' `namespace/name` string (shared, not
    /// copied).
    pub fn published(
        &self,
        translation: &Translation,
        tls: &TlsBuild,
        snap: &crate::routing::Snapshot,
        previous: Option<&Translation>,
        generation: u64,
        build: Duration,
    ) {
        let old = self.routes.load();
        let n = self.set_names.len();
        let mut pairs: Vec<(Arc<str>, String)> = Vec::new();
        let mut note = |ingress: &Arc<str>, service: &str| {
            let known = old
                .by_ingress
                .get(&**ingress)
                .is_some_and(|m| m.iter().any(|(s, _)| **s == *service));
            if !known {
                pairs.push((ingress.clone(), service.to_string()));
            }
        };
        let mut defaults: Vec<Option<Arc<str>>> = vec![None; n];
        for (i, set) in translation.sets.iter().enumerate() {
            let table = snap.sets.get(i);
            let mut routes = |h: &crate::model::HostModel| {
                for r in table.map_or(&[][..], |t| t.routes_of(&h.host)) {
                    note(&r.ingress, &r.backend.id);
                    // A request the canary serves counts under the route's Ingress and the canary's Service.
                    if let Some(c) = &r.canary {
                        note(&r.ingress, &c.backend.id);
                    }
                }
            };
            match previous.and_then(|t| t.sets.get(i)) {
                Some(before) => crate::model::changed_hosts(before, set)
                    .filter_map(|(_, after)| after)
                    .for_each(|h| routes(h)),
                None => set.hosts.iter().for_each(|h| routes(h)),
            }
            if let Some(d) = &set.default_backend {
                let ing = format!("{}/{}", d.ingress.namespace, d.ingress.name);
                // Reuse the old label value when it is the same Ingress.
                let ing = match old.defaults.get(i) {
                    Some(Some(prev)) if **prev == *ing => prev.clone(),
                    _ => Arc::from(ing),
                };
                note(&ing, &d.backend.id());
                if let Some(slot) = defaults.get_mut(i) {
                    *slot = Some(ing);
                }
            }
        }
        if !pairs.is_empty() || old.defaults != defaults {
            let mut by_ingress = old.by_ingress.clone();
            // Backend ids already known, to share rather than copy.
            let mut services = self.backend_ids.lock().unwrap_or_else(|e| e.into_inner());
            pairs.sort();
            pairs.dedup();
            for (ingress, service) in pairs {
                let service: Arc<str> = match services.get(service.as_str()) {
                    Some(s) => s.clone(),
                    None => {
                        let s: Arc<str> = Arc::from(service);
                        services.insert(s.clone());
                        s
                    }
                };
                let entry = by_ingress.entry(ingress).or_insert_with(|| Arc::new([]));
                if !entry.iter().any(|(s, _)| *s == service) {
                    let grown: Vec<(Arc<str>, RouteCounter)> =
                        entry.iter().cloned().chain([(service, route_counter(n))]).collect();
                    *entry = grown.into();
                }
            }
            self.routes.store(Arc::new(RouteCounters { by_ingress, defaults }));
        }
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
        let routes = self.routes.load();
        let mut keys: Vec<(&Arc<str>, &Arc<str>, &RouteCounter)> = routes
            .by_ingress
            .iter()
            .flat_map(|(i, m)| m.iter().map(move |(s, c)| (i, s, c)))
            .collect();
        keys.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (ingress, service, c) in keys {
            for (set, per) in self.set_names.iter().zip(c.iter()) {
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
        let set = esc(set);
        let mut cum = 0;
        for (i, b) in DURATION_BUCKETS.iter().enumerate() {
            cum += h.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{set=\"{set}\",le=\"{b}\"}} {cum}");
        }
        cum += h.buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{set=\"{set}\",le=\"+Inf\"}} {cum}");
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{set=\"{set}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{set=\"{set}\"}} {cum}");
    }
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
pub fn render_backends(snapshot: &crate::routing::Snapshot) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut backends: Vec<&Arc<crate::upstream::Backend>> = snapshot
        .sets
        .iter()
        .flat_map(|s| s.backends())
        .filter(|b| seen.insert(Arc::as_ptr(b)))
        .collect();
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
                ingress: None,
                service: None,
                default_backend: false,
                status: 404,
                elapsed: Duration::from_millis(ms),
                upstream_elapsed: (ms == 3).then(|| Duration::from_millis(2)),
                upstream_error: None,
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
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(esc("plain"), "plain");
    }

    fn translation(hosts: &[(usize, usize)]) -> crate::model::Translation {
        use crate::model::{BackendModel, HostModel, HostPattern, ObjectRef, PathKind, PathModel, PortRef};
        let hosts = hosts
            .iter()
            .map(|&(ingress, service)| {
                Arc::new(HostModel {
                    host: HostPattern::Exact(format!("h{ingress:03}.example")),
                    paths: vec![PathModel {
                        path: "/".into(),
                        kind: PathKind::Prefix,
                        backend: BackendModel {
                            namespace: "ns".into(),
                            service: format!("s{service}").into(),
                            port: PortRef::Number(80),
                            endpoints: vec![],
                        },
                        ingress: ObjectRef {
                            kind: "Ingress",
                            namespace: "ns".into(),
                            name: format!("i{ingress}"),
                        },
                        https_redirect: false,
                        policy: Default::default(),
                        canary: None,
                    }],
                })
            })
            .collect();
        crate::model::Translation::one_set("a", hosts)
    }

    fn no_tls() -> TlsBuild {
        TlsBuild {
            sets: vec![],
            served: vec![],
            diagnostics: vec![],
            fingerprint: 0,
        }
    }

    #[test]
    fn publishes_after_edits_give_every_route_its_counter() {
        let m = Metrics::new(&["a".to_string()]);
        let mut last = translation(&(0..10).map(|i| (i, i)).collect::<Vec<_>>());
        let snap = |t: &crate::model::Translation| crate::routing::Snapshot::build(t, None, 1, None);
        m.published(&last, &no_tls(), &snap(&last), None, 1, Duration::ZERO);
        // Host 3 now names service 7, host 5 is gone, host 10 is new; the other hosts are the same `Arc`s, so only
        // the changed ones are looked at.
        let mut next = last.clone();
        let edited = translation(&[(3, 7), (10, 10)]);
        next.sets[0].hosts[3] = edited.sets[0].hosts[0].clone();
        next.sets[0].hosts.remove(5);
        next.sets[0].hosts.push(edited.sets[0].hosts[1].clone());
        for (generation, t) in [(2, next.clone()), (3, translation(&[(1, 2), (2, 1)]))] {
            m.published(&t, &no_tls(), &snap(&t), Some(&last), generation, Duration::ZERO);
            let routes = m.routes.load();
            for p in t.sets[0].hosts.iter().flat_map(|h| &h.paths) {
                let ingress = format!("{}/{}", p.ingress.namespace, p.ingress.name);
                let service = format!("{}/{}:{}", p.backend.namespace, p.backend.service, p.backend.port);
                let per = routes.by_ingress.get(ingress.as_str()).expect("Ingress counted");
                assert!(per.iter().any(|(s, _)| **s == *service), "{ingress} {service}");
            }
            last = t;
        }
        // Counters are never removed, and a backend id is shared by the Ingresses naming it.
        let routes = m.routes.load();
        let id = |i: &str, s: &str| routes.by_ingress[i].iter().find(|(x, _)| **x == *s).unwrap().0.clone();
        assert!(Arc::ptr_eq(&id("ns/i3", "ns/s7:80"), &id("ns/i7", "ns/s7:80")));
        assert!(Arc::ptr_eq(&id("ns/i2", "ns/s1:80"), &id("ns/i1", "ns/s1:80")));
        assert!(routes.by_ingress.contains_key("ns/i5"));
    }
}
