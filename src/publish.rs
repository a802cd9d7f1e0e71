//! The pipeline's one writer: a source's snapshot of objects in, one routing [`Snapshot`] swapped in out.
//!
//! ```text
//!  source (file poll | kube watch) ──ClusterState──▶ Compiler::compile ──Compiled──▶ Publisher::publish
//!                                    translation (incremental),      unchanged? stop │ snapshot::Builder::build
//!                                    then certificates (certs)                       │ (routes, live state,
//!                                                                                    │ upstream policies),
//!                                                                                    │ health checkers
//!                                                                                    ▼
//!                                                      Shared::snapshot (ArcSwap) ◀── one store, then ready
//! ```
//!
//! Sources call [`Compiler::compile`] (pure but for the clock they pass in) and hand the result to their
//! [`Publisher`]; nothing else writes the snapshot. The admin listener and the ACME manager read [`Shared`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use arc_swap::ArcSwap;

use crate::certs::{build_tls, DefaultSource, LoadedCert, TlsBuild};
use crate::config::{Config, DefaultCertificate};
use crate::model::{self, ClusterState, Diagnostic, ImplicitClass, ObjectRef, Options, SetOptions, Translation};
use crate::snapshot::Snapshot;

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
    /// The upstream settings the snapshot's per-Ingress policies are built with.
    upstream: crate::config::UpstreamConfig,
}

impl Shared {
    /// Nothing published yet: `snapshot` holds an empty table per listener set and [`Shared::is_ready`] is false.
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<crate::metrics::Metrics>,
        upstream: &crate::config::UpstreamConfig,
    ) -> Self {
        Self {
            snapshot,
            metrics,
            ready: AtomicBool::new(false),
            last: Mutex::new(None),
            acme: std::sync::OnceLock::new(),
            upstream: upstream.clone(),
        }
    }

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
    /// The Gateway sockets to serve: each is the listener set `set` of the translation (after the configured
    /// ones).
    pub gateways: Vec<GatewaySocket>,
    /// Layer-4 routes per listener set: TLS passthrough of the configured sets (`ssl-passthrough` Ingresses)
    /// and of Gateway sockets (TLSRoutes), and the TCPRoute of each Gateway TCP socket.
    pub l4: model::l4::L4Model,
}

/// A bound socket of a Gateway of our class, served as a listener set of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewaySocket {
    /// Its index among the snapshot's listener sets: stable for an address for the life of the process.
    pub set: usize,
    pub address: std::net::SocketAddr,
    /// TLS (HTTPS listeners, TLS passthrough listeners, or both).
    pub https: bool,
    /// Plain TCP (a TCP listener): served by the layer-4 accept loop, not the HTTP server.
    pub tcp: bool,
}

impl Compiled {
    /// What `portico check` prints: routes, the certificate each TLS host is served with, then diagnostics.
    pub fn describe(&self) -> String {
        let mut out = self.translation.describe_routes();
        let names: Vec<String> = self.translation.sets.iter().map(|s| s.name.clone()).collect();
        out.push_str(&self.l4.describe(&names));
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

// === impl Options ===

/// Here rather than in `model`, so that translation does not depend on the configuration's types.
impl Options {
    /// Options from a configuration. `file_mode` makes every configured class implicit, the first class of the
    /// first listener set being the default.
    pub fn from_config(config: &Config, file_mode: bool) -> Self {
        let implicit_classes = if file_mode {
            config
                .listener_sets
                .iter()
                .flat_map(|s| s.ingress_classes.iter())
                .enumerate()
                .map(|(i, c)| ImplicitClass {
                    name: c.clone(),
                    default: i == 0,
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            controller: crate::config::CONTROLLER_NAME.to_string(),
            listener_sets: config
                .listener_sets
                .iter()
                .map(|s| SetOptions {
                    name: s.name.clone(),
                    classes: s.ingress_classes.clone(),
                    adopted: s.adopt_classes.clone(),
                    share_hosts: s.share_hosts_across_namespaces,
                    error_pages: s.error_pages.as_ref().map(|e| model::SetErrorPages {
                        namespace: e.namespace.clone(),
                        service: e.service.clone(),
                        port: e.port.clone(),
                        codes: e.codes.clone(),
                    }),
                })
                .collect(),
            implicit_classes,
            owned_list: !file_mode,
        }
    }
}

// === impl Compiler ===

/// Runs translation and the certificate stage with what the configuration fixed at startup. Translation is
/// incremental: each compile translates again only what changed since the previous one (same result as a full
/// translation, see `model::Incremental`).
pub struct Compiler {
    translator: Mutex<model::Incremental>,
    defaults: Vec<DefaultSource>,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
    /// Gateway socket addresses in the order they were first seen: a socket's listener set is the configured
    /// sets' count plus its index here, so it keeps its index (and its accept loop) across compiles.
    gateway_slots: Mutex<Vec<std::net::SocketAddr>>,
    self_signed: LoadedCert,
    /// Gateways served by a configured listener set (`listenerSets[].gateways`): namespace, name, set index.
    attached: Vec<(String, String, usize)>,
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
            gateway_slots: Mutex::new(Vec::new()),
            self_signed,
            attached: config
                .listener_sets
                .iter()
                .enumerate()
                .flat_map(|(i, s)| s.gateways.iter().map(move |(ns, n)| (ns.clone(), n.clone(), i)))
                .collect(),
        })
    }

    pub fn compile(&self, state: &ClusterState, mut source_diagnostics: Vec<Diagnostic>, now: i64) -> Compiled {
        let l4;
        let mut translation = {
            let mut translator = self.translator.lock().unwrap_or_else(|poisoned| {
                // A translation panicked half-way: its indexes cannot be trusted, start over.
                self.translator.clear_poison();
                let mut t = poisoned.into_inner();
                *t = model::Incremental::new(t.options().clone());
                t
            });
            l4 = model::l4::translate(state, translator.options());
            translator.translate(state)
        };
        let (mut l4, mut l4_diagnostics) = l4;
        translation.diagnostics.append(&mut l4_diagnostics);
        let (gateways, defaults) = self.gateway_sets(state, &mut translation, &mut l4);
        let mut tls = build_tls(&translation, &state.secrets, &defaults, now, &self.sessions);
        source_diagnostics.append(&mut translation.diagnostics);
        source_diagnostics.append(&mut tls.diagnostics);
        translation.diagnostics = source_diagnostics;
        Compiled {
            translation,
            tls,
            gateways,
            l4,
        }
    }

    /// Appends a listener set per Gateway socket slot (an empty one for a slot whose socket is gone) and returns
    /// the sockets to serve with every set's default certificate.
    fn gateway_sets(
        &self,
        state: &ClusterState,
        translation: &mut Translation,
        l4: &mut model::l4::L4Model,
    ) -> (Vec<GatewaySocket>, Vec<DefaultSource>) {
        let mut defaults = self.defaults.clone();
        let configured = translation.sets.len();
        let mut slots = self.gateway_slots.lock().unwrap_or_else(|e| e.into_inner());
        if state.gateway.gateways.is_empty() && slots.is_empty() {
            return (Vec::new(), defaults);
        }
        let attachment = model::gateway::attach(state, model::gateway::CONTROLLER_NAME);
        let served_by = |ns: &str, name: &str| {
            self.attached
                .iter()
                .find(|(n, m, _)| n == ns && m == name)
                .map(|(_, _, i)| *i)
        };
        let (mut sets, merged) = model::gateway::serve::sets(state, &attachment, &served_by);
        let (mut l4_sockets, l4_merged) = model::gateway::l4routes::l4_sets(state, &attachment, &served_by);
        for (i, m) in l4_merged {
            if let Some(set) = l4.sets.get_mut(i) {
                model::gateway::l4routes::merge_into(set, m);
            }
        }
        l4.sets.resize(configured, model::l4::L4SetModel::default());
        translation.diagnostics.extend(attachment.diagnostics.iter().cloned());
        for (i, g) in merged {
            if let Some(set) = translation.sets.get_mut(i) {
                model::gateway::serve::merge_into(set, g);
            }
        }
        for s in &sets {
            if !slots.contains(&s.address) {
                slots.push(s.address);
            }
        }
        let mut gateways = Vec::new();
        for (i, addr) in slots.iter().enumerate() {
            let set = configured + i;
            match sets.iter().position(|s| s.address == *addr) {
                Some(at) => {
                    let g = sets.swap_remove(at);
                    let socket = l4_sockets
                        .iter()
                        .position(|s| s.address == *addr)
                        .map(|i| l4_sockets.swap_remove(i));
                    let protocol = socket.as_ref().map(|s| s.protocol);
                    use model::gateway::attach::Protocol;
                    gateways.push(GatewaySocket {
                        set,
                        address: g.address,
                        https: g.https || protocol == Some(Protocol::Tls),
                        tcp: protocol == Some(Protocol::Tcp),
                    });
                    l4.sets.push(socket.map(|s| s.model).unwrap_or_default());
                    defaults.push(match g.default_certificate {
                        Some(secret) => DefaultSource::Secret {
                            secret,
                            fallback: self.self_signed.clone(),
                        },
                        None => DefaultSource::Loaded(self.self_signed.clone()),
                    });
                    translation.sets.push(g.model);
                }
                None => {
                    l4.sets.push(model::l4::L4SetModel::default());
                    defaults.push(DefaultSource::Loaded(self.self_signed.clone()));
                    translation.sets.push(model::SetModel {
                        name: format!("gateway {addr} (unbound)"),
                        hosts: Vec::new(),
                        default_backend: None,
                        tls: Vec::new(),
                    });
                }
            }
        }
        (gateways, defaults)
    }
}

// === impl Publisher ===

/// Turns compilations into published snapshots. Skips publishing when nothing changed.
pub struct Publisher {
    shared: Arc<Shared>,
    generation: u64,
    /// Keeps indexes of the live state it handed out, so a rebuild walks only the hosts that changed.
    builder: crate::snapshot::Builder,
    checkers: crate::upstream::health::Checkers,
}

impl Publisher {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            builder: crate::snapshot::Builder::new(&shared.upstream),
            shared,
            generation: 0,
            checkers: Default::default(),
        }
    }

    /// Publishes a compilation. Returns whether a new table went out.
    pub fn publish(&mut self, c: Compiled) -> bool {
        let last = self.shared.last_compiled();
        if let Some(prev) = &last {
            if prev.translation == c.translation
                && prev.tls.fingerprint == c.tls.fingerprint
                && prev.l4 == c.l4
                && self.generation > 0
            {
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
        let snap = self.builder.build(
            &c.translation,
            tls,
            self.generation,
            Some((&prev, before)),
            &mut self.shared.metrics.route_counters(),
        );
        let names: Vec<String> = c.translation.sets.iter().map(|s| s.name.clone()).collect();
        let mut snap = snap;
        snap.l4 = Arc::new(crate::l4::L4Tables::build(
            &c.l4,
            &names,
            &prev.l4,
            &self.shared.metrics.l4,
        ));
        // Passthrough backends with `health-check: tcp` get their checkers like HTTP backends.
        self.checkers.ensure(snap.l4.backends());
        let t = &c.translation;
        let hosts: usize = snap.sets.iter().map(|s| s.host_count()).sum();
        let routes: usize = snap.sets.iter().map(|s| s.route_count()).sum();
        // Backends of unchanged hosts were in the previous table and have their checkers.
        self.checkers.ensure(self.builder.built_backends().iter());
        self.shared
            .metrics
            .published(&c.translation, &c.tls, self.generation, started.elapsed());
        drop(last);
        // The one swap: routes, their live state, certificates and upstream policies together.
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
