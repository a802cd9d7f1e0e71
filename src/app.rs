//! Wiring: bind the listeners, publish tables from a source, serve, shut down. No policy lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::Config;
use crate::model::{self, Diagnostic, Options, Translation};
use crate::proxy::Proxy;
use crate::routing::Snapshot;
use crate::source::manifests::ManifestDir;
use crate::upstream::client::UpstreamClient;

/// State shared by the data plane, the admin listener and the publisher.
pub struct Shared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    ready: AtomicBool,
    /// The last published translation and its diagnostics (read by the admin API; never on the request path).
    last: Mutex<Option<Arc<Translation>>>,
}

impl Shared {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn last_translation(&self) -> Option<Arc<Translation>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Turns translations into published snapshots. Skips publishing when nothing changed.
pub struct Publisher {
    shared: Arc<Shared>,
    generation: u64,
}

impl Publisher {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared, generation: 0 }
    }

    /// Publishes `t` (with `extra` diagnostics from the source prepended). Returns whether a new table went out.
    pub fn publish(&mut self, mut t: Translation, extra: Vec<Diagnostic>) -> bool {
        if !extra.is_empty() {
            let mut all = extra;
            all.append(&mut t.diagnostics);
            t.diagnostics = all;
        }
        if let Some(prev) = self.shared.last_translation() {
            if *prev == t && self.generation > 0 {
                tracing::debug!("objects changed but the routing model did not; not publishing");
                return false;
            }
        }
        let started = Instant::now();
        self.generation += 1;
        let prev = self.shared.snapshot.load_full();
        let snap = Snapshot::build(&t, self.generation, Some(&prev));
        let hosts: usize = snap.sets.iter().map(|s| s.host_count()).sum();
        let routes: usize = snap.sets.iter().map(|s| s.route_count()).sum();
        self.shared.snapshot.store(Arc::new(snap));
        self.shared.ready.store(true, Ordering::Release);
        for d in &t.diagnostics {
            tracing::warn!(subject = %d.subject, reason = %d.reason, "rejected");
        }
        tracing::info!(
            generation = self.generation,
            hosts,
            routes,
            diagnostics = t.diagnostics.len(),
            build_us = started.elapsed().as_micros() as u64,
            "routing table published"
        );
        *self.shared.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(t));
        true
    }
}

/// Where the objects come from.
pub enum Source {
    /// A manifest directory, polled for changes every `poll_interval`.
    Manifests { dir: PathBuf, poll_interval: Duration },
}

/// A started gateway. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    /// Bound plain-HTTP addresses, per listener set (configuration order).
    pub http_addrs: Vec<Vec<SocketAddr>>,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the grace period), and returns when all is done.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Grace period for in-flight requests at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Binds every listener, publishes the first table, and starts serving.
pub async fn start(config: Config, source: Source) -> anyhow::Result<Running> {
    let set_names: Vec<String> = config.listener_sets.iter().map(|s| s.name.clone()).collect();
    let shared = Arc::new(Shared {
        snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::empty(&set_names))),
        ready: AtomicBool::new(false),
        last: Mutex::new(None),
    });

    // Bind first, so a taken port fails startup before anything is published.
    let mut http = Vec::new();
    let mut http_addrs = Vec::new();
    for set in &config.listener_sets {
        let mut addrs = Vec::new();
        for addr in &set.http {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listener set {}: cannot bind {addr}", set.name))?;
            addrs.push(l.local_addr()?);
            http.push((http_addrs.len(), l));
        }
        http_addrs.push(addrs);
    }
    let admin = TcpListener::bind(config.admin.address)
        .await
        .with_context(|| format!("admin: cannot bind {}", config.admin.address))?;
    let admin_addr = admin.local_addr()?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut publisher = Publisher::new(shared.clone());

    match source {
        Source::Manifests { dir, poll_interval } => {
            let opts = Options::from_config(&config, true);
            let mut manifests = ManifestDir::new(dir);
            // The baseline is taken before the first load, so an edit made at any moment after it is seen.
            let baseline = manifests.fingerprint().ok();
            let (state, diags) = manifests.load()?;
            publisher.publish(model::translate(&state, &opts), diags);
            let rx = shutdown_rx.clone();
            tasks.spawn(
                watch_manifests(manifests, baseline, opts, publisher, poll_interval, rx)
                    .instrument(tracing::info_span!("manifests")),
            );
        }
    }

    let proxy = Arc::new(Proxy::new(
        shared.snapshot.clone(),
        UpstreamClient::new(&config.upstream),
    ));
    for (set, listener) in http {
        let addr = listener.local_addr()?;
        tracing::info!(set = %config.listener_sets[set].name, %addr, "serving plain HTTP");
        tasks.spawn(
            crate::proxy::server::serve_plain(listener, set, proxy.clone(), shutdown_rx.clone(), SHUTDOWN_GRACE)
                .instrument(tracing::info_span!("listener", set = %config.listener_sets[set].name, %addr)),
        );
    }
    tracing::info!(addr = %admin_addr, "serving admin");
    tasks.spawn(
        crate::admin::serve(admin, shared.clone(), shutdown_rx.clone()).instrument(tracing::info_span!("admin")),
    );

    Ok(Running {
        http_addrs,
        admin_addr,
        shared,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Debounce after a change is seen, so an editor's several writes publish once.
const DEBOUNCE: Duration = Duration::from_millis(100);

async fn watch_manifests(
    mut manifests: ManifestDir,
    mut seen: Option<u64>,
    opts: Options,
    mut publisher: Publisher,
    poll_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll_interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = manifests.fingerprint().ok();
        if now == seen {
            continue;
        }
        tokio::time::sleep(DEBOUNCE).await;
        seen = manifests.fingerprint().ok();
        match manifests.load() {
            Ok((state, diags)) => {
                let state = Arc::new(state);
                let opts2 = opts.clone();
                // Translation is CPU work: keep it off the reactor threads serving requests.
                let t = match tokio::task::spawn_blocking(move || model::translate(&state, &opts2)).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "translation panicked; keeping the last table");
                        continue;
                    }
                };
                publisher.publish(t, diags);
            }
            Err(e) => tracing::warn!(error = %e, "manifest directory unreadable; keeping the last table"),
        }
    }
}
