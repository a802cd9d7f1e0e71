//! Cluster mode: objects from the Kubernetes API instead of a manifest directory.
//!
//! ```text
//!  watchers (IngressClass, Ingress, Service, EndpointSlice, TLS Secret) ──▶ reflector stores
//!      │ change (debounce 50 ms, at most 500 ms)      every watcher synced? else wait for its InitDone
//!      ▼
//!  ClusterState, kept and updated from the stores ──▶ Compiler::compile (spawn_blocking) ──▶ Publisher::publish
//!      │            (only the objects changed since)
//!      └──Round (owned Ingresses, diagnostics)──▶ leader only: Ingress status, Events (objects read from the stores)
//!  Lease (optional) ──leader: bool──┘
//!      └──▶ ACME manager (orders only while leader; see [`acme`]) ◀── every compile: candidates
//! ```
//!
//! The first table goes out once every watcher has listed; later changes publish whole snapshots. A dropped
//! watch resumes where it was; a relist (a 410, a restart) keeps the previous objects until it completes, and
//! nothing is published while any watcher is relisting. Every replica serves traffic; only the leader writes.

pub mod acme;
pub mod events;
pub mod leader;
pub mod status;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::watcher;
use kube::Api;
use tokio::sync::watch as channel;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::Publish;
use crate::model::{ClusterState, Diagnostic, ObjectRef};
use crate::publish::{Compiler, Publisher};

pub use leader::LeaseConfig;

/// How cluster mode runs (from the command line; all but `identity` have defaults).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Namespaces to watch; empty: all of them.
    pub namespaces: Vec<String>,
    /// Leader election; `None`: this replica is the leader.
    pub leader_election: Option<LeaseConfig>,
    /// This replica's name (the Lease holder, the Events' reporting instance).
    pub identity: String,
    /// Quiet time after a change before publishing.
    pub debounce: Duration,
    /// Longest wait between a change and its publish while changes keep coming.
    pub max_delay: Duration,
    /// The same Event (object and message) is not sent again within this.
    pub event_dedupe: Duration,
    /// At most this many Events per round.
    pub event_burst: usize,
    /// Retry interval for failed status or Event writes.
    pub retry: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            leader_election: None,
            identity: "portico".into(),
            debounce: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            event_dedupe: Duration::from_secs(600),
            event_burst: 25,
            retry: Duration::from_secs(2),
        }
    }
}

/// What one compile tells the leader's writers.
struct Round {
    owned: Arc<Vec<(ObjectRef, usize)>>,
    diagnostics: Vec<Diagnostic>,
}

/// The objects the leader's writers look up by name: the reflector stores as they are now (a `ClusterState`
/// in tests).
pub trait Objects: Send + Sync {
    fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>>;
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    /// The uid of an object of a kind Portico reads.
    fn uid(&self, r: &ObjectRef) -> Option<String>;
}

struct Stores {
    classes: watch::Kind<IngressClass>,
    ingresses: watch::Kind<Ingress>,
    services: watch::Kind<Service>,
    slices: watch::Kind<EndpointSlice>,
    secrets: watch::Kind<Secret>,
    /// The strings the kept Ingresses share (see [`crate::model::Strings`]).
    strings: std::sync::Mutex<crate::model::Strings>,
}

impl Stores {
    /// Brings `state` up to date with the stores, cloning only what changed since the last sync (see
    /// [`watch::Kind::sync`]); `state` must be what the previous sync left (or empty at first).
    fn sync(&self, state: &mut ClusterState) {
        self.classes.sync(&mut state.ingress_classes);
        let mut strings = self.strings.lock().unwrap_or_else(|e| e.into_inner());
        self.ingresses.sync_into(
            &mut state.ingresses,
            |i| (i.metadata.namespace.as_deref(), i.metadata.name.as_deref()),
            |o| crate::model::Ingress::from_k8s_ref(o, &mut strings),
        );
        strings.prune();
        drop(strings);
        self.services.sync(&mut state.services);
        self.slices.sync(&mut state.endpoint_slices);
        self.secrets.sync(&mut state.secrets);
    }

    /// The next sync clones every object again.
    fn resync(&self) {
        self.classes.resync();
        self.ingresses.resync();
        self.services.resync();
        self.slices.resync();
        self.secrets.resync();
    }
}

impl Objects for Stores {
    fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>> {
        self.ingresses.get(Some(namespace), name)
    }

    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(Some(namespace), name)
    }

    fn uid(&self, r: &ObjectRef) -> Option<String> {
        let ns = (!r.namespace.is_empty()).then_some(r.namespace.as_str());
        let meta = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.uid.clone();
        match r.kind {
            "Ingress" => self.ingresses.get(ns, &r.name).and_then(|o| meta(&o.metadata)),
            "IngressClass" => self.classes.get(None, &r.name).and_then(|o| meta(&o.metadata)),
            "Service" => self.services.get(ns, &r.name).and_then(|o| meta(&o.metadata)),
            "Secret" => self.secrets.get(ns, &r.name).and_then(|o| meta(&o.metadata)),
            "EndpointSlice" => self.slices.get(ns, &r.name).and_then(|o| meta(&o.metadata)),
            _ => None,
        }
    }
}

#[cfg(test)]
impl Objects for ClusterState {
    fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>> {
        let found = self
            .ingresses
            .iter()
            .find(|o| o.metadata.namespace.as_deref() == Some(namespace) && o.metadata.name.as_deref() == Some(name));
        found.map(|o| Arc::new(o.to_k8s()))
    }

    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        let found = self
            .services
            .iter()
            .find(|o| o.metadata.namespace.as_deref() == Some(namespace) && o.metadata.name.as_deref() == Some(name));
        found.cloned().map(Arc::new)
    }

    fn uid(&self, r: &ObjectRef) -> Option<String> {
        match r.kind {
            "Ingress" => self.ingress(&r.namespace, &r.name)?.metadata.uid.clone(),
            "Service" => self.service(&r.namespace, &r.name)?.metadata.uid.clone(),
            _ => None,
        }
    }
}

/// The leadership channel [`run`] drives: its initial value (the sole replica leads without election).
/// Create it before [`run`] so other leader-only work (the ACME manager) can follow it.
pub fn leader_channel(options: &ClusterOptions) -> (channel::Sender<bool>, channel::Receiver<bool>) {
    channel::channel(options.leader_election.is_none())
}

/// Portico's own namespace (the Lease's, else the client's default, i.e. the pod's): where the ACME account
/// Secret and the challenge ConfigMap live.
pub fn own_namespace(client: &kube::Client, options: &ClusterOptions) -> String {
    options
        .leader_election
        .as_ref()
        .and_then(|l| l.namespace.clone())
        .unwrap_or_else(|| client.default_namespace().to_string())
}

/// Runs cluster mode until `shutdown`: watches, publishes, and (when leader) writes status and Events.
/// `publish` is each listener set's address source, in configuration order. `leader_tx` is from
/// [`leader_channel`]; `acme` is fed the candidates of every compile.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: kube::Client,
    options: ClusterOptions,
    publish: Vec<Publish>,
    compiler: Arc<Compiler>,
    publisher: Publisher,
    leader_tx: channel::Sender<bool>,
    acme: Option<crate::acme::AcmeHandle>,
    shutdown: channel::Receiver<bool>,
) {
    let watches = watch::Watches::new();
    let stores = Arc::new(start_watches(&client, &options, &publish, &watches, &shutdown));

    let leader_rx = leader_tx.subscribe();
    let (round_tx, round_rx) = channel::channel::<Option<Arc<Round>>>(None);

    let election = {
        let (client, identity, shutdown) = (client.clone(), options.identity.clone(), shutdown.clone());
        let config = options.leader_election.clone();
        async move {
            match config {
                Some(config) => {
                    leader::run(client, config, identity, leader_tx, shutdown)
                        .instrument(tracing::info_span!("leader"))
                        .await
                }
                // The sole replica leads until shutdown; the sender stays alive so the writers keep running.
                None => {
                    let mut shutdown = shutdown;
                    let _ = shutdown.wait_for(|s| *s).await;
                    drop(leader_tx);
                }
            }
        }
    };
    let writers = leader_work(
        client,
        &options,
        publish,
        stores.clone(),
        round_rx,
        leader_rx,
        acme.clone(),
        shutdown.clone(),
    )
    .instrument(tracing::info_span!("status"));
    let publishing = publish_loop(stores, watches, &options, compiler, publisher, round_tx, acme, shutdown)
        .instrument(tracing::info_span!("publish"));
    tokio::join!(election, writers, publishing);
}

fn start_watches(
    client: &kube::Client,
    options: &ClusterOptions,
    publish: &[Publish],
    watches: &watch::Watches,
    shutdown: &channel::Receiver<bool>,
) -> Stores {
    let scopes: Vec<Option<&str>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let label = |kind: &str, ns: Option<&str>| match ns {
        Some(ns) => format!("{kind} in {ns}"),
        None => kind.to_string(),
    };
    let any = watcher::Config::default;
    let mut stores = Stores {
        classes: watch::Kind::new(),
        ingresses: watch::Kind::new(),
        services: watch::Kind::new(),
        slices: watch::Kind::new(),
        secrets: watch::Kind::new(),
        strings: Default::default(),
    };
    let classes = Api::all(client.clone());
    watches.spawn(
        &mut stores.classes,
        "IngressClass".into(),
        classes,
        any(),
        shutdown.clone(),
    );
    for ns in &scopes {
        let ns = *ns;
        let s = &mut stores;
        watches.spawn(
            &mut s.ingresses,
            label("Ingress", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        watches.spawn(
            &mut s.services,
            label("Service", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        watches.spawn(
            &mut s.slices,
            label("EndpointSlice", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        watches.spawn(
            &mut s.secrets,
            label("Secret", ns),
            api(client, ns),
            any().fields("type=kubernetes.io/tls"),
            shutdown.clone(),
        );
    }
    // A publish Service outside the watched namespaces is watched by name.
    for p in publish {
        if let Publish::Service { namespace, name } = p {
            if !options.namespaces.is_empty() && !options.namespaces.contains(namespace) {
                watches.spawn(
                    &mut stores.services,
                    format!("Service {namespace}/{name}"),
                    Api::namespaced(client.clone(), namespace),
                    any().fields(&format!("metadata.name={name}")),
                    shutdown.clone(),
                );
            }
        }
    }
    stores
}

#[allow(clippy::too_many_arguments)]
async fn publish_loop(
    stores: Arc<Stores>,
    watches: watch::Watches,
    options: &ClusterOptions,
    compiler: Arc<Compiler>,
    mut publisher: Publisher,
    rounds: channel::Sender<Option<Arc<Round>>>,
    acme: Option<crate::acme::AcmeHandle>,
    mut shutdown: channel::Receiver<bool>,
) {
    let mut changes = watches.subscribe();
    // The objects as of the last compile, updated from the stores before each compile (moved into the blocking
    // task and back; lost, so listed again, only if a compile panics).
    let mut state = Some(ClusterState::default());
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // Coalesce: wait for `debounce` of quiet, but no longer than `max_delay` after the first change.
        let first = Instant::now();
        loop {
            let deadline = (Instant::now() + options.debounce).min(first + options.max_delay);
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if Instant::now() >= first + options.max_delay {
                break;
            }
        }
        changes.mark_unchanged();
        if !watches.all_synced() {
            tracing::debug!("a watcher is (re)listing; not publishing until it is done");
            continue;
        }
        let (compiler, stores) = (compiler.clone(), stores.clone());
        let now = crate::certs::unix_now();
        let mut current = state.take().unwrap_or_else(|| {
            // A compile panicked with the state: list everything again.
            stores.resync();
            ClusterState::default()
        });
        let compiled = tokio::task::spawn_blocking(move || {
            stores.sync(&mut current);
            let compiled = compiler.compile(&current, Vec::new(), now);
            (current, compiled)
        })
        .await;
        match compiled {
            Ok((current, compiled)) => {
                let round = Round {
                    owned: compiled.translation.owned.clone(),
                    diagnostics: compiled.translation.diagnostics.clone(),
                };
                if let Some(a) = &acme {
                    a.feed(&compiled.translation, &current);
                }
                state = Some(current);
                publisher.publish(compiled);
                rounds.send_replace(Some(Arc::new(round)));
            }
            Err(e) => tracing::error!(error = %e, "translation panicked; keeping the last table"),
        }
    }
}

/// Status and Events, for the leader: runs after every compile, on gaining leadership, on retry, and when the
/// ACME manager reports a changed set of invalid orders (those become Events on their Ingresses too).
#[allow(clippy::too_many_arguments)]
async fn leader_work(
    client: kube::Client,
    options: &ClusterOptions,
    publish: Vec<Publish>,
    objects: Arc<Stores>,
    mut rounds: channel::Receiver<Option<Arc<Round>>>,
    mut leader: channel::Receiver<bool>,
    acme: Option<crate::acme::AcmeHandle>,
    mut shutdown: channel::Receiver<bool>,
) {
    let mut acme_reports = acme.as_ref().map(|a| a.subscribe());
    let mut status = status::StatusWriter::new(client.clone(), publish);
    let mut events = events::EventSink::new(
        client,
        options.identity.clone(),
        options.event_dedupe,
        options.event_burst,
    );
    let mut retry = false;
    loop {
        tokio::select! {
            r = rounds.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(options.retry), if retry => {}
            r = changed(&mut acme_reports) => if r.is_err() { acme_reports = None },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(round) = rounds.borrow_and_update().clone() else {
            continue;
        };
        let is_leader = *leader.borrow_and_update();
        let mut ok = status.reconcile(&round.owned, &*objects, &leader).await;
        if is_leader && *leader.borrow() {
            let mut diagnostics = round.diagnostics.clone();
            if let Some(a) = &acme {
                diagnostics.extend(a.status().diagnostics());
            }
            ok &= events.emit(&diagnostics, &*objects).await;
        }
        retry = !ok;
    }
}

/// The next change of an optional watch channel; never resolves without one.
async fn changed(rx: &mut Option<channel::Receiver<u64>>) -> Result<(), channel::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
