//! Wiring: bind the listeners, publish tables from a source, serve, shut down. No policy lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::acme::challenge::ChallengeStore;
use crate::config::Config;
use crate::proxy::server::Transport;
use crate::proxy::Proxy;
use crate::publish::{Compiler, Publisher, Shared};
use crate::snapshot::Snapshot;
use crate::source::file::ManifestDir;
use crate::source::kube::{ClusterOptions, KubeSource};
use crate::upstream::client::UpstreamClient;

/// Where the objects come from.
#[allow(clippy::large_enum_variant)] // built once at startup
pub enum Source {
    /// A manifest directory, polled for changes every `poll_interval`.
    Manifests { dir: PathBuf, poll_interval: Duration },
    /// The Kubernetes API (cluster mode): watches, status, leader election and Events. The first table is
    /// published in the background once every watch has listed; [`Shared::is_ready`] turns true then.
    Kube {
        client: kube::Client,
        options: ClusterOptions,
    },
}

/// A started gateway. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    /// Bound plain-HTTP addresses, per listener set (configuration order).
    pub http_addrs: Vec<Vec<SocketAddr>>,
    /// Bound HTTPS addresses, per listener set.
    pub https_addrs: Vec<Vec<SocketAddr>>,
    /// Bound addresses of each `tcp[]` listener (configuration order).
    pub tcp_addrs: Vec<Vec<SocketAddr>>,
    pub admin_addr: SocketAddr,
    /// The admin API and dashboard's own address, when `admin.apiAddress` is set.
    pub api_addr: Option<SocketAddr>,
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
    let shared = Arc::new(Shared::new(
        Arc::new(ArcSwap::from_pointee(Snapshot::empty(&set_names))),
        Arc::new(crate::metrics::Metrics::with_gateways(&set_names)),
        &config.upstream,
    ));

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
    let mut tcp_listeners = Vec::new();
    let mut tcp_addrs = Vec::new();
    for (i, t) in config.tcp.iter().enumerate() {
        let mut addrs = Vec::new();
        for addr in &t.listen {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("tcp {}: cannot bind {addr}", t.name))?;
            addrs.push(l.local_addr()?);
            tcp_listeners.push((i, l));
        }
        tcp_addrs.push(addrs);
    }
    let admin = TcpListener::bind(config.admin.address)
        .await
        .with_context(|| format!("admin: cannot bind {}", config.admin.address))?;
    let admin_addr = admin.local_addr()?;
    let api = match config.admin.api_address {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("admin: cannot bind apiAddress {a}"))?,
        ),
        None => None,
    };
    let api_addr = api.as_ref().map(TcpListener::local_addr).transpose()?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let publisher = Publisher::new(shared.clone());
    let challenges = ChallengeStore::new();
    let mut acme = match &source {
        Source::Manifests { .. } => crate::acme::manager::spawn_for(
            &config,
            extras.state_dir.as_deref(),
            &extras.acme,
            &challenges,
            shutdown_rx.clone(),
            &mut tasks,
        )?,
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
            let (rx, a) = (shutdown_rx.clone(), acme.clone());
            let poll = crate::source::file::start(manifests, compiler, publisher, poll_interval, rx, a)?;
            tasks.spawn(poll.instrument(tracing::info_span!("manifests")));
        }
        Source::Kube { client, options } => {
            let compiler = Arc::new(Compiler::new(&config, false)?);
            let publish = config.listener_sets.iter().map(|s| s.publish.clone()).collect();
            let (leader_tx, leader_rx) = crate::status::leader::channel(options.leader_election.as_ref());
            let namespace = options.own_namespace(&client);
            let (settings, rx) = (&extras.acme, shutdown_rx.clone());
            acme = crate::acme::kube::spawn(
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
                run_cluster(client, options, publish, compiler, publisher, leader_tx, a, rx)
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
            deny_source_ranges: s.deny_source_ranges.clone(),
            proxy_protocol: s.proxy_protocol,
            max_connections: s.max_connections,
            header_read_timeout: s.header_read_timeout,
            keep_alive_timeout: s.keep_alive_timeout,
            body_read_timeout: s.body_read_timeout,
            allowed_upgrades: s.allowed_upgrades.clone(),
        })
        .collect();
    let access_log =
        crate::accesslog::start(&extras.access_log, shared.metrics.clone()).context("opening the access log")?;
    let proxy = Arc::new(
        Proxy::new(
            shared.snapshot.clone(),
            UpstreamClient::new(&config.upstream),
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
    serve_tcp(&config, tcp_listeners, &shared, &shutdown_rx, &mut tasks)?;
    tasks.spawn(
        serve_gateways(
            shared.clone(),
            proxy.clone(),
            shutdown_rx.clone(),
            config.shutdown.grace_period,
        )
        .instrument(tracing::info_span!("gateways")),
    );
    tracing::info!(addr = %admin_addr, "serving admin");
    let admin_state = crate::admin::Admin::new(shared.clone(), &set_names, &http_addrs, &https_addrs);
    if let (Some(l), Some(addr)) = (api, api_addr) {
        tracing::info!(%addr, "serving the admin API and dashboard");
        let api_state = crate::admin::Admin {
            shared: shared.clone(),
            sets: admin_state.sets.clone(),
            api: true,
            started: admin_state.started,
        };
        tasks
            .spawn(crate::admin::serve(l, api_state, shutdown_rx.clone()).instrument(tracing::info_span!("admin-api")));
    }
    let admin_state = crate::admin::Admin {
        api: api_addr.is_none(),
        ..admin_state
    };
    tasks.spawn(crate::admin::serve(admin, admin_state, shutdown_rx.clone()).instrument(tracing::info_span!("admin")));

    Ok(Running {
        challenges,
        acme,
        http_addrs,
        https_addrs,
        tcp_addrs,
        admin_addr,
        api_addr,
        shared,
        shutdown: shutdown_tx,
        tasks,
        drain_delay: config.shutdown.drain_delay,
    })
}

/// Cluster mode until `shutdown`: the kube source publishes; the leader (every replica without election) writes
/// status and Events. `publish` is each listener set's address source, in configuration order. `leader_tx` is
/// from [`crate::status::leader::channel`]; `acme` is fed the candidates of every compile.
#[allow(clippy::too_many_arguments)]
async fn run_cluster(
    client: kube::Client,
    options: ClusterOptions,
    publish: Vec<crate::config::Publish>,
    compiler: Arc<Compiler>,
    publisher: Publisher,
    leader_tx: watch::Sender<bool>,
    acme: Option<crate::acme::AcmeHandle>,
    shutdown: watch::Receiver<bool>,
) {
    let source = KubeSource::start(&client, &options, &publish, &shutdown);
    let leader_rx = leader_tx.subscribe();
    let (round_tx, round_rx) = watch::channel(None);
    let (c, identity, rx) = (client.clone(), options.identity.clone(), shutdown.clone());
    let election = crate::status::leader::elect(c, options.leader_election.clone(), identity, leader_tx, rx);
    let (objects, a, rx) = (source.objects(), acme.clone(), shutdown.clone());
    let settings = options.status_settings();
    let writers = crate::status::run(client, settings, publish, objects, round_rx, leader_rx, a, rx)
        .instrument(tracing::info_span!("status"));
    let publishing = source
        .run(&options, compiler, publisher, round_tx, acme, shutdown)
        .instrument(tracing::info_span!("publish"));
    tokio::join!(election, writers, publishing);
}

/// Serves the `tcp[]` listeners (layer 4), and runs their backends' active health checks.
fn serve_tcp(
    config: &Config,
    listeners: Vec<(usize, TcpListener)>,
    shared: &Arc<Shared>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let mut services = Vec::new();
    for t in &config.tcp {
        let svc = Arc::new(crate::proxy::tcp::TcpService::new(t, &shared.metrics.l4));
        if let Some(h) = &t.health_check {
            let https = match &h.path {
                None => None,
                Some(path) => {
                    let ca = match &h.ca_file {
                        None => None,
                        Some(f) => {
                            Some(std::fs::read(f).with_context(|| format!("tcp {}: reading {}", t.name, f.display()))?)
                        }
                    };
                    let tls = crate::upstream::tls::client_config(ca.as_deref(), b"http/1.1")
                        .map_err(|e| anyhow::anyhow!("tcp {}: health check CA: {e}", t.name))?;
                    Some((path.clone(), Arc::new(tls)))
                }
            };
            let check = crate::l4::health::Check {
                interval: h.interval,
                timeout: h.timeout,
                fall: h.fall,
                rise: h.rise,
                https,
            };
            let backend = Arc::downgrade(&svc.route.backend);
            tasks.spawn(
                crate::l4::health::run(backend, check, shutdown.clone())
                    .instrument(tracing::info_span!("tcp-health", name = %t.name)),
            );
        }
        services.push(svc);
    }
    for (i, listener) in listeners {
        let addr = listener.local_addr()?;
        let name = &config.tcp[i].name;
        tracing::info!(tcp = %name, %addr, "serving TCP");
        tasks.spawn(
            crate::proxy::tcp::serve(
                listener,
                services[i].clone(),
                shutdown.clone(),
                config.shutdown.grace_period,
            )
            .instrument(tracing::info_span!("tcp", name = %name, %addr)),
        );
    }
    Ok(())
}

/// How often the Gateway listener manager looks for a new publish.
const GATEWAY_POLL: Duration = Duration::from_millis(100);
/// How long before a socket that could not be bound is tried again (without a new publish).
const GATEWAY_RETRY: Duration = Duration::from_secs(2);

/// The Gateway listener manager: after each publish, binds the sockets of Gateways of our class that are not
/// bound yet and stops those no Gateway has any more (their connections drain for `grace`). A socket that cannot
/// be bound is tried again after the next publish or [`GATEWAY_RETRY`].
async fn serve_gateways(shared: Arc<Shared>, proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>, grace: Duration) {
    type Bound = (crate::publish::GatewaySocket, watch::Sender<bool>);
    let mut bound: Vec<Bound> = Vec::new();
    let mut loops = JoinSet::new();
    let mut last: Option<Arc<crate::publish::Compiled>> = None;
    // When a socket last failed to bind: tried again on the next publish, or after GATEWAY_RETRY.
    let mut failed: Option<std::time::Instant> = None;
    loop {
        let now = shared.last_compiled();
        let changed = match (&now, &last) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (a, b) => a.is_some() != b.is_some(),
        };
        if changed || failed.is_some_and(|t| t.elapsed() >= GATEWAY_RETRY) {
            failed = None;
            let want = now.as_ref().map(|c| c.gateways.clone()).unwrap_or_default();
            bound.retain(|(g, stop)| {
                let keep = want.contains(g);
                if !keep {
                    tracing::info!(addr = %g.address, set = g.set, "gateway socket removed: stop serving");
                    let _ = stop.send(true);
                }
                keep
            });
            for g in want {
                if bound.iter().any(|(b, _)| *b == g) {
                    continue;
                }
                let listener = match TcpListener::bind(g.address).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(addr = %g.address, error = %e, "cannot bind a Gateway socket; trying again");
                        failed = Some(std::time::Instant::now());
                        continue;
                    }
                };
                let (stop, stop_rx) = watch::channel(false);
                if g.tcp {
                    tracing::info!(addr = %g.address, set = g.set, "serving a Gateway TCP socket");
                    loops.spawn(
                        crate::proxy::tcp::serve_gateway(listener, g.set, proxy.clone(), stop_rx, grace)
                            .instrument(tracing::info_span!("gateway", addr = %g.address)),
                    );
                    bound.push((g, stop));
                    continue;
                }
                let transport = if g.https { Transport::Tls } else { Transport::Plain };
                tracing::info!(addr = %g.address, set = g.set, ?transport, "serving a Gateway socket");
                loops.spawn(
                    crate::proxy::server::serve(listener, g.set, transport, proxy.clone(), stop_rx, grace)
                        .instrument(tracing::info_span!("gateway", addr = %g.address)),
                );
                bound.push((g, stop));
            }
            last = now;
        }
        tokio::select! {
            () = tokio::time::sleep(GATEWAY_POLL) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        while loops.try_join_next().is_some() {}
    }
    for (_, stop) in &bound {
        let _ = stop.send(true);
    }
    while loops.join_next().await.is_some() {}
}
