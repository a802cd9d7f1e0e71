//! Counters per layer-4 route, rendered at the admin listener's `/metrics` beside the HTTP ones. A route's
//! counters are kept by (listener set, route) across republishes, so they only ever grow.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One route's counters. Updated once per connection (bytes when it ends): lock-free.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub connections: AtomicU64,
    pub active: AtomicI64,
    /// Bytes from the client to the backend.
    pub bytes_in: AtomicU64,
    /// Bytes from the backend to the client.
    pub bytes_out: AtomicU64,
    /// Connect attempts that failed (refused, unreachable, timed out).
    pub connect_errors: AtomicU64,
}

impl RouteStats {
    /// Counts a connection opened; the guard counts it closed.
    pub fn open(self: &Arc<Self>) -> Active {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }
}

/// An open connection of a route (see [`RouteStats::open`]).
#[derive(Debug)]
pub struct Active(Arc<RouteStats>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A route's labels: listener set, kind, route.
type Key = (String, &'static str, String);

/// Every route's counters handed out, by (listener set, kind, route).
#[derive(Debug, Default)]
pub struct Registry {
    routes: Mutex<BTreeMap<Key, Arc<RouteStats>>>,
    /// The backends of the `tcp[]` listeners (fixed at startup), for the endpoint gauges at `/metrics`.
    tcp_backends: Mutex<Vec<Arc<crate::upstream::Backend>>>,
}

impl Registry {
    /// The counters of a route, made on first use (at a publish, never on the connection path).
    pub fn route(&self, set: &str, kind: &'static str, route: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .entry((set.to_string(), kind, route.to_string()))
            .or_default()
            .clone()
    }

    /// Registers a `tcp[]` listener's backend (see [`Registry::backends`]).
    pub fn add_tcp_backend(&self, b: Arc<crate::upstream::Backend>) {
        self.tcp_backends.lock().unwrap_or_else(|e| e.into_inner()).push(b);
    }

    /// The `tcp[]` listeners' backends.
    pub fn backends(&self) -> Vec<Arc<crate::upstream::Backend>> {
        self.tcp_backends.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Prometheus text for every route (nothing when there are none).
    pub fn render(&self) -> String {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        if routes.is_empty() {
            return out;
        }
        type Get = fn(&RouteStats) -> i64;
        let families: [(&str, &str, &str, Get); 5] = [
            (
                "portico_l4_connections_total",
                "counter",
                "Layer-4 connections accepted, by listener set, kind and route.",
                |s| s.connections.load(Ordering::Relaxed) as i64,
            ),
            (
                "portico_l4_active_connections",
                "gauge",
                "Layer-4 connections open now.",
                |s| s.active.load(Ordering::Relaxed),
            ),
            (
                "portico_l4_received_bytes_total",
                "counter",
                "Bytes from clients to backends (counted when a connection ends).",
                |s| s.bytes_in.load(Ordering::Relaxed) as i64,
            ),
            (
                "portico_l4_sent_bytes_total",
                "counter",
                "Bytes from backends to clients (counted when a connection ends).",
                |s| s.bytes_out.load(Ordering::Relaxed) as i64,
            ),
            (
                "portico_l4_connect_errors_total",
                "counter",
                "Failed connects to a layer-4 route's endpoints.",
                |s| s.connect_errors.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((set, k, route), s) in routes.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{set=\"{}\",kind=\"{k}\",route=\"{}\"}} {}",
                    esc(set),
                    esc(route),
                    get(s)
                );
            }
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
