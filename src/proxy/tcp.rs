//! Plain TCP listeners (`tcp[]` in the configuration, layer 4): every accepted connection is spliced to one of
//! the listener's static backends (`l4::conn::splice`: balanced, retried on another endpoint, half-close kept),
//! optionally after a PROXY protocol header naming the client (HAProxy's `send-proxy`/`send-proxy-v2`). On
//! shutdown the listener stops accepting and waits for its open connections up to the grace period.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::proxy_protocol::{encode_v1, encode_v2, ProxyHeader};
use crate::config::{ProxyProtocolVersion, TcpConfig};
use crate::l4::stats::Registry;
use crate::l4::L4Route;
use crate::upstream::{ActiveCheck, Backend, HealthPolicy};

/// One configured TCP listener's route and settings, shared by its listen addresses.
#[derive(Debug)]
pub struct TcpService {
    pub route: Arc<L4Route>,
    pub send_proxy_protocol: Option<ProxyProtocolVersion>,
    pub max_connections: Option<usize>,
}

impl TcpService {
    /// The service of `config`, counting into `stats` (listener set label `tcp`, route the entry's name).
    pub fn new(config: &TcpConfig, stats: &Registry) -> Self {
        let backend = Arc::new(Backend::with_check(
            format!("tcp/{}", config.name),
            config.backends.clone(),
            config.balance,
            HealthPolicy::default(),
            // What the listener's own checker (`l4::health`, started by the wiring) does, for `/metrics`; the
            // HTTP checkers never see this backend.
            config.health_check.as_ref().map(|h| ActiveCheck {
                http_path: h.path.clone(),
                interval: h.interval,
                timeout: h.timeout,
                fall: h.fall,
                rise: h.rise,
            }),
        ));
        stats.add_tcp_backend(backend.clone());
        let origin = format!("tcp {}", config.name);
        let mut route = L4Route::new(&config.name, &origin, backend, stats.route("tcp", "tcp", &config.name));
        route.connect_timeout = config.connect_timeout;
        route.idle_timeout = config.idle_timeout;
        Self {
            route: Arc::new(route),
            send_proxy_protocol: config.send_proxy_protocol,
            max_connections: config.max_connections,
        }
    }
}

/// Serves `listener` until `shutdown` turns true, then waits up to `grace` for its connections to end.
pub async fn serve(listener: TcpListener, svc: Arc<TcpService>, shutdown: watch::Receiver<bool>, grace: Duration) {
    let route = svc.route.clone();
    accept_loop(
        listener,
        move || Some(route.clone()),
        svc.send_proxy_protocol,
        svc.max_connections,
        shutdown,
        grace,
    )
    .await;
}

/// Serves a Gateway TCP socket (listener set `set`): each connection goes to the route the snapshot current at
/// accept time has for the set (a TCPRoute's); without one, it is closed.
pub async fn serve_gateway(
    listener: TcpListener,
    set: usize,
    proxy: Arc<super::Proxy>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let route_for = move || proxy.snapshot.load().l4.tcp(set).cloned();
    accept_loop(listener, route_for, None, None, shutdown, grace).await;
}

async fn accept_loop(
    listener: TcpListener,
    route_for: impl Fn() -> Option<Arc<L4Route>>,
    send_proxy_protocol: Option<ProxyProtocolVersion>,
    max_connections: Option<usize>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let graceful = GracefulShutdown::new();
    let limit = max_connections.map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    loop {
        let permit = match &limit {
            None => None,
            Some(sem) => tokio::select! {
                p = sem.clone().acquire_owned() => p.ok(),
                _ = shutdown.wait_for(|s| *s) => break,
            },
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, client) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let header = ProxyHeader::Proxied {
            source: client,
            destination: local,
        };
        let Some(route) = route_for() else {
            tracing::debug!(%local, %client, "no TCPRoute for this socket; closing");
            continue;
        };
        let first = match send_proxy_protocol {
            None => BytesMut::new(),
            Some(ProxyProtocolVersion::V1) => BytesMut::from(&encode_v1(&header)[..]),
            Some(ProxyProtocolVersion::V2) => BytesMut::from(&encode_v2(&header)[..]),
        };
        let watcher = graceful.watcher();
        let peer = crate::l4::conn::Peer { client, local };
        tokio::spawn(Box::pin(async move {
            let _permit = permit;
            crate::l4::conn::splice(stream, first, route, peer, None).await;
            drop(watcher);
        }));
    }
    drop(listener);
    tracing::info!(%local, "TCP listener closed; draining connections");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(%local, "grace period over with TCP connections still open");
    }
}
