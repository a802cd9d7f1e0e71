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

use crate::acme::challenge::ChallengeStore;
use crate::certs::{build_tls, DefaultSource, LoadedCert, TlsBuild};
use crate::config::{Config, DefaultCertificate};
use crate::model::{self, ClusterState, Diagnostic, ObjectRef, Options, Translation};
use crate::proxy::server::Transport;
use crate::proxy::Proxy;
use crate::routing::Snapshot;
use crate::source::manifests::ManifestDir;
use crate::upstream::client::UpstreamClient;

/// State shared by the data plane, the admin listener and the publisher.
pub struct Shared {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Counters and gauges, rendered at the admin listener's `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    ready: AtomicBool,
    /// The last published compilation (read by the admin API and tests; never on the request path).
    last: Mutex<Option<Arc<Compiled>>>,
    /// The ACME manager, when a listener set has `acme` (its counters are shown at `/metrics`).
    pub acme: std::sync::OnceLock<crate::acme::AcmeHandle>,
    /// Per-Ingress upstream settings (TLS to backends, body timeouts), published with each table.
    pub upstream_policies: Arc<crate::upstream::policy::Policies>,
}

impl Shared {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn last_translation(&self) -> Option<Arc<Translation>> {
        self.last_compiled().map(|c| Arc::new(c.translation.clone()))
    }

    pub fn last_compiled(&self) -> Option<Arc<Compiled>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The pure stages of a publish: translation, then certificates. Every diagnostic ends up in `translation`.
pub struct Compiled {
    pub translation: Translation,
    pub tls: TlsBuild,
}

impl Compiled {
    /// What `portico check` prints: routes, the certificate each TLS host is served with, then diagnostics.
    pub fn describe(&self) -> String {
        let mut out = self.translation.describe_routes();
        for (set, served) in self.translation.sets.iter().zip(&self.tls.served) {
            out.push_str(&format!("certificates of listener set {}:\n", set.name));
            for (host, info) in served {
                let host = if host == "*default*" {
                    "(default)"
                } else {
                    host.as_str()
                };
                out.push_str(&format!(
                    "  {host}: subject {}, names [{}], not after {}, {}\n",
                    info.subject,
                    info.names().join(", "),
                    crate::certs::format_unix(info.not_after),
                    info.source
                ));
            }
        }
        out.push_str(&self.translation.describe_diagnostics());
        out
    }
}

/// Runs translation and the certificate stage with what the configuration fixed at startup. Translation is
/// incremental: each compile translates again only what changed since the previous one (same result as a full
/// translation, see `model::Incremental`).
pub struct Compiler {
    translator: Mutex<model::Incremental>,
    defaults: Vec<DefaultSource>,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
}

impl Compiler {
    /// Reads default-certificate files (the only I/O) and makes one self-signed certificate for sets without one.
    pub fn new(config: &Config, file_mode: bool) -> anyhow::Result<Self> {
        let self_signed = LoadedCert::self_signed(&["portico.invalid".to_string()]);
        let mut defaults = Vec::new();
        for set in &config.listener_sets {
            defaults.push(match &set.default_certificate {
                None => DefaultSource::Loaded(self_signed.clone()),
                Some(DefaultCertificate::Files { cert, key }) => {
                    let c = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
                    let k = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
                    DefaultSource::Loaded(
                        LoadedCert::from_pem(&c, &k, format!("file {}", cert.display()))
                            .with_context(|| format!("listener set {}: default certificate", set.name))?,
                    )
                }
                Some(DefaultCertificate::Secret { namespace, name }) => DefaultSource::Secret {
                    secret: ObjectRef {
                        kind: "Secret",
                        namespace: namespace.clone(),
                        name: name.clone(),
                    },
                    fallback: self_signed.clone(),
                },
            });
        }
        Ok(Self {
            translator: Mutex::new(model::Incremental::new(Options::from_config(config, file_mode))),
            defaults,
            sessions: rustls::server::ServerSessionMemoryCache::new(4096),
        })
    }

    pub fn compile(&self, state: &ClusterState, mut source_diagnostics: Vec<Diagnostic>, now: i64) -> Compiled {
        let mut translation = {
            let mut translator = self.translator.lock().unwrap_or_else(|poisoned| {
                // A translation panicked half-way: its indexes cannot be trusted, start over.
                self.translator.clear_poison();
                let mut t = poisoned.into_inner();
                *t = model::Incremental::new(t.options().clone());
                t
            });
            translator.translate(state)
        };
        let mut tls = build_tls(&translation, &state.secrets, &self.defaults, now, &self.sessions);
        source_diagnostics.append(&mut translation.diagnostics);
        source_diagnostics.append(&mut tls.diagnostics);
        translation.diagnostics = source_diagnostics;
        Compiled { translation, tls }
    }
}

/// Turns compilations into published snapshots. Skips publishing when nothing changed.
pub struct Publisher {
    shared: Arc<Shared>,
    generation: u64,
    /// Keeps an index of the backends it handed out, so a rebuild walks only the hosts that changed.
    builder: crate::routing::Builder,
    checkers: crate::upstream::health::Checkers,
}

impl Publisher {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            generation: 0,
            builder: Default::default(),
            checkers: Default::default(),
        }
    }

    /// Publishes a compilation. Returns whether a new table went out.
    pub fn publish(&mut self, c: Compiled) -> bool {
        let last = self.shared.last_compiled();
        if let Some(prev) = &last {
            if prev.translation == c.translation && prev.tls.fingerprint == c.tls.fingerprint && self.generation > 0 {
                tracing::debug!("objects changed but the routing model and certificates did not; not publishing");
                return false;
            }
        }
        let started = Instant::now();
        self.generation += 1;
        let prev = self.shared.snapshot.load_full();
        let tls = Some(c.tls.sets.clone());
        // Hosts whose model did not change keep their compiled routes.
        let before = last.as_ref().map(|l| &l.translation);
        let snap = self
            .builder
            .build(&c.translation, tls, self.generation, Some((&prev, before)));
        let t = &c.translation;
        let hosts: usize = snap.sets.iter().map(|s| s.host_count()).sum();
        let routes: usize = snap.sets.iter().map(|s| s.route_count()).sum();
        // Backends of unchanged hosts were in the previous table and have their checkers.
        self.checkers.ensure(self.builder.built_backends().iter());
        // These look only at the hosts that changed since `before`.
        self.shared.upstream_policies.publish(t, before);
        // Before the swap, so every route in the new table already has its counters.
        self.shared
            .metrics
            .published(&c, &snap, before, self.generation, started.elapsed());
        drop(last);
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
        *self.shared.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(c));
        true
    }
}

/// Where the objects come from.
#[allow(clippy::large_enum_variant)] // built once at startup
pub enum Source {
    /// A manifest directory, polled for changes every `poll_interval`.
    Manifests { dir: PathBuf, poll_interval: Duration },
    /// The Kubernetes API (cluster mode): watches, status, leader election and Events. The first table is
    /// published in the background once every watch has listed; [`Shared::is_ready`] turns true then.
    Kube {
        client: kube::Client,
        options: crate::cluster::ClusterOptions,
    },
}

/// A started gateway. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    /// Bound plain-HTTP addresses, per listener set (configuration order).
    pub http_addrs: Vec<Vec<SocketAddr>>,
    /// Bound HTTPS addresses, per listener set.
    pub https_addrs: Vec<Vec<SocketAddr>>,
    pub admin_addr: SocketAddr,
    pub shared: Arc<Shared>,
    /// HTTP-01 tokens answered by the plain listeners of ACME-enabled sets.
    pub challenges: crate::acme::challenge::ChallengeStore,
    /// The ACME manager, when a listener set has `acme` configured.
    pub acme: Option<crate::acme::AcmeHandle>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    drain_delay: Duration,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (up to the grace period), and returns when all is done.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// The SIGTERM path: keep serving (and accepting) for the drain delay, so that load balancers and
    /// kube-proxy stop sending here first, then [`Running::shutdown`].
    pub async fn drain_and_shutdown(self) {
        if !self.drain_delay.is_zero() {
            tracing::info!(
                delay_ms = self.drain_delay.as_millis() as u64,
                "draining: still accepting"
            );
            tokio::time::sleep(self.drain_delay).await;
        }
        self.shutdown().await;
    }
}

/// What `start` takes besides the configuration and the source.
#[derive(Debug, Default, Clone)]
pub struct Extras {
    /// Where file mode keeps ACME accounts and issued certificates (`STATE/secrets` is read as manifests too).
    pub state_dir: Option<PathBuf>,
    /// ACME timing (tests shorten it).
    pub acme: crate::acme::Settings,
    /// The access log (off by default here; the binary turns it on).
    pub access_log: crate::accesslog::Settings,
}

/// Binds every listener, publishes the first table, and starts serving (no access log, no state directory).
pub async fn start(config: Config, source: Source) -> anyhow::Result<Running> {
    start_with(config, source, Extras::default()).await
}

/// [`start`] with a state directory, ACME settings and an access log.
pub async fn start_with(config: Config, source: Source, extras: Extras) -> anyhow::Result<Running> {
    let set_names: Vec<String> = config.listener_sets.iter().map(|s| s.name.clone()).collect();
    let shared = Arc::new(Shared {
        snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::empty(&set_names))),
        metrics: Arc::new(crate::metrics::Metrics::new(&set_names)),
        ready: AtomicBool::new(false),
        last: Mutex::new(None),
        acme: std::sync::OnceLock::new(),
        upstream_policies: Arc::new(crate::upstream::policy::Policies::new(&config.upstream)),
    });

    // Bind first, so a taken port fails startup before anything is published.
    let mut listeners = Vec::new();
    let (mut http_addrs, mut https_addrs) = (Vec::new(), Vec::new());
    for (idx, set) in config.listener_sets.iter().enumerate() {
        for (binds, transport, out) in [
            (&set.http, Transport::Plain, &mut http_addrs),
            (&set.https, Transport::Tls, &mut https_addrs),
        ] {
            let mut addrs = Vec::new();
            for addr in binds {
                let l = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listener set {}: cannot bind {addr}", set.name))?;
                addrs.push(l.local_addr()?);
                listeners.push((idx, transport, l));
            }
            out.push(addrs);
        }
    }
    let admin = TcpListener::bind(config.admin.address)
        .await
        .with_context(|| format!("admin: cannot bind {}", config.admin.address))?;
    let admin_addr = admin.local_addr()?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut publisher = Publisher::new(shared.clone());
    let challenges = ChallengeStore::new();
    let mut acme = match &source {
        Source::Manifests { .. } => {
            crate::acme::manager::spawn_for(&config, &extras, &challenges, shutdown_rx.clone(), &mut tasks)?
        }
        Source::Kube { .. } => None, // started with the cluster source below
    };
    if let Some(a) = &acme {
        let _ = shared.acme.set(a.clone());
    }

    match source {
        Source::Manifests { dir, poll_interval } => {
            let compiler = Arc::new(Compiler::new(&config, true)?);
            let mut manifests = ManifestDir::new(dir);
            if let Some(state) = &extras.state_dir {
                manifests = manifests.with_extra_root(crate::acme::FileStore::secrets_dir(state));
            }
            // The baseline is taken before the first load, so an edit made at any moment after it is seen.
            let baseline = manifests.fingerprint().ok();
            let (state, diags) = manifests.load()?;
            let compiled = compiler.compile(&state, diags, crate::certs::unix_now());
            if let Some(a) = &acme {
                a.feed(&compiled.translation, &state);
            }
            publisher.publish(compiled);
            let rx = shutdown_rx.clone();
            tasks.spawn(
                watch_manifests(
                    manifests,
                    baseline,
                    compiler,
                    publisher,
                    poll_interval,
                    rx,
                    acme.clone(),
                )
                .instrument(tracing::info_span!("manifests")),
            );
        }
        Source::Kube { client, options } => {
            let compiler = Arc::new(Compiler::new(&config, false)?);
            let publish = config.listener_sets.iter().map(|s| s.publish.clone()).collect();
            let (leader_tx, leader_rx) = crate::cluster::leader_channel(&options);
            let namespace = crate::cluster::own_namespace(&client, &options);
            let (settings, rx) = (&extras.acme, shutdown_rx.clone());
            acme = crate::cluster::acme::spawn(
                &config,
                settings,
                &client,
                namespace,
                &challenges,
                leader_rx,
                rx,
                &mut tasks,
            );
            if let Some(a) = &acme {
                let _ = shared.acme.set(a.clone());
            }
            let (a, rx) = (acme.clone(), shutdown_rx.clone());
            tasks.spawn(
                crate::cluster::run(client, options, publish, compiler, publisher, leader_tx, a, rx)
                    .instrument(tracing::info_span!("cluster")),
            );
        }
    }

    // Redirects name the configured port, else the port the first HTTPS listener actually bound.
    let set_options = config
        .listener_sets
        .iter()
        .zip(&https_addrs)
        .map(|(s, bound)| crate::proxy::SetOptions {
            redirect_port: s.https_redirect_port.or_else(|| bound.first().map(|a| a.port())),
            acme: s.acme.is_some(),
            trusted_proxies: s.trusted_proxies.clone(),
            allow_source_ranges: s.allow_source_ranges.clone(),
            proxy_protocol: s.proxy_protocol,
            max_connections: s.max_connections,
            header_read_timeout: s.header_read_timeout,
            keep_alive_timeout: s.keep_alive_timeout,
            body_read_timeout: s.body_read_timeout,
        })
        .collect();
    let access_log =
        crate::accesslog::start(&extras.access_log, shared.metrics.clone()).context("opening the access log")?;
    let proxy = Arc::new(
        Proxy::new(
            shared.snapshot.clone(),
            UpstreamClient::new(&config.upstream, shared.upstream_policies.clone()),
            set_options,
            challenges.clone(),
        )
        .with_observers(shared.metrics.clone(), access_log),
    );
    for (set, transport, listener) in listeners {
        let addr = listener.local_addr()?;
        let name = &config.listener_sets[set].name;
        tracing::info!(set = %name, %addr, ?transport, "serving");
        tasks.spawn(
            crate::proxy::server::serve(
                listener,
                set,
                transport,
                proxy.clone(),
                shutdown_rx.clone(),
                config.shutdown.grace_period,
            )
            .instrument(tracing::info_span!("listener", set = %name, %addr)),
        );
    }
    tracing::info!(addr = %admin_addr, "serving admin");
    tasks.spawn(
        crate::admin::serve(
            admin,
            crate::admin::Admin::new(shared.clone(), &set_names, &http_addrs, &https_addrs),
            shutdown_rx.clone(),
        )
        .instrument(tracing::info_span!("admin")),
    );

    Ok(Running {
        challenges,
        acme,
        http_addrs,
        https_addrs,
        admin_addr,
        shared,
        shutdown: shutdown_tx,
        tasks,
        drain_delay: config.shutdown.drain_delay,
    })
}

/// After a change is seen, the directory must stay unchanged this long before it is loaded, so that a writer's
/// several writes (an editor, a copy of many files) publish once and a file is not read half-written.
const SETTLE: Duration = Duration::from_millis(10);
/// Longest wait for the directory to settle while it keeps changing.
const SETTLE_MAX: Duration = Duration::from_millis(500);
/// Polling adapts its interval so that fingerprinting (a `stat` per file) takes 1/`POLL_COST_RATIO` of the time:
/// shorter than the configured interval (down to [`POLL_MIN`]) when a check is cheap, longer when many files
/// make it expensive.
const POLL_COST_RATIO: u32 = 50;
/// The shortest poll interval: a directory of a few files is checked this often (a change waits half of it on
/// average before it is seen).
const POLL_MIN: Duration = Duration::from_millis(20);

/// The next poll interval after a fingerprint that took `cost`: `cost * POLL_COST_RATIO`, at least [`POLL_MIN`]
/// (or the configured interval when that is shorter), at most the configured interval unless checking is slower.
fn next_poll_interval(configured: Duration, cost: Duration) -> Duration {
    (cost * POLL_COST_RATIO).max(POLL_MIN.min(configured))
}

async fn watch_manifests(
    mut manifests: ManifestDir,
    mut seen: Option<u64>,
    compiler: Arc<Compiler>,
    mut publisher: Publisher,
    poll_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    acme: Option<crate::acme::AcmeHandle>,
) {
    let mut interval = poll_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        let mut now = manifests.fingerprint().ok();
        interval = next_poll_interval(poll_interval, started.elapsed());
        if now == seen {
            continue;
        }
        let first = Instant::now();
        loop {
            tokio::time::sleep(SETTLE).await;
            let again = manifests.fingerprint().ok();
            let settled = again == now;
            now = again;
            if settled || first.elapsed() >= SETTLE_MAX {
                break;
            }
        }
        seen = now;
        // Reading, parsing and translating are CPU work (a 10,000-Ingress file parses for about a second): keep
        // them off the threads serving requests. A panic in translation keeps the last table.
        let compiler = compiler.clone();
        let now = crate::certs::unix_now();
        let job = tokio::task::spawn_blocking(move || {
            let out = manifests.load().map(|(state, diags)| {
                let compiled =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compiler.compile(&state, diags, now)));
                (compiled, state)
            });
            (manifests, out)
        });
        let out;
        (manifests, out) = match job.await {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "reading the manifest directory panicked; no more reloads");
                return;
            }
        };
        match out {
            Ok((Ok(c), state)) => {
                if let Some(a) = &acme {
                    a.feed(&c.translation, &state);
                }
                drop(state);
                publisher.publish(c);
            }
            Ok((Err(_), _)) => tracing::error!("translation panicked; keeping the last table"),
            Err(e) => tracing::warn!(error = %e, "manifest directory unreadable; keeping the last table"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_interval_follows_the_cost_of_a_check() {
        let ms = Duration::from_millis;
        // Cheap checks: as often as POLL_MIN, or the configured interval when shorter.
        assert_eq!(next_poll_interval(ms(100), Duration::from_micros(30)), POLL_MIN);
        assert_eq!(next_poll_interval(ms(5), Duration::from_micros(30)), ms(5));
        // In between: 2 % of the time.
        assert_eq!(next_poll_interval(ms(100), ms(1)), ms(50));
        // Expensive checks stretch past the configured interval.
        assert_eq!(next_poll_interval(ms(100), ms(4)), ms(200));
    }
}
