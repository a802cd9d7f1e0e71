//! Cluster mode's source: objects from the Kubernetes API instead of a manifest directory.
//!
//! ```text
//!  watchers (IngressClass, Ingress, Service, EndpointSlice, TLS and Opaque Secret) ──▶ reflector stores
//!      │ change (debounce 50 ms, at most 500 ms)      every watcher synced? else wait for its InitDone
//!      ▼
//!  ClusterState, kept and updated from the stores ──▶ Compiler::compile (spawn_blocking) ──▶ Publisher::publish
//!      │            (only the objects changed since)
//!      ├──Round (owned Ingresses, diagnostics)──▶ crate::status (leader only: Ingress status, Events)
//!      └──candidates──▶ ACME manager
//! ```
//!
//! The first table goes out once every watcher has listed; later changes publish whole snapshots. A dropped
//! watch resumes where it was; a relist (a 410, a restart) keeps the previous objects until it completes, and
//! nothing is published while any watcher is relisting. The leader's writers read the same stores
//! ([`KubeSource::objects`]).

mod gateway;
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

use crate::config::Publish;
use crate::model::{ClusterState, ObjectRef};
use crate::publish::{Compiler, Publisher};
use crate::status::{Objects, Round};

pub use crate::status::leader::LeaseConfig;

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

impl ClusterOptions {
    /// Portico's own namespace (the Lease's, else the client's default, i.e. the pod's): where the ACME account
    /// Secret and the challenge ConfigMap live.
    pub fn own_namespace(&self, client: &kube::Client) -> String {
        self.leader_election
            .as_ref()
            .and_then(|l| l.namespace.clone())
            .unwrap_or_else(|| client.default_namespace().to_string())
    }

    /// What the leader's writers take from these options.
    pub fn status_settings(&self) -> crate::status::Settings {
        crate::status::Settings {
            identity: self.identity.clone(),
            event_dedupe: self.event_dedupe,
            event_burst: self.event_burst,
            retry: self.retry,
        }
    }
}

struct Stores {
    classes: watch::Kind<IngressClass>,
    ingresses: watch::Kind<Ingress>,
    services: watch::Kind<Service>,
    slices: watch::Kind<EndpointSlice>,
    secrets: watch::Kind<Secret>,
    gateway_classes: watch::Kind<crate::model::gateway::GatewayClass>,
    gateways: watch::Kind<crate::model::gateway::Gateway>,
    http_routes: watch::Kind<crate::model::gateway::HttpRoute>,
    grpc_routes: watch::Kind<crate::model::gateway::GrpcRoute>,
    tls_routes: watch::Kind<crate::model::gateway::TlsRoute>,
    tcp_routes: watch::Kind<crate::model::gateway::TcpRoute>,
    reference_grants: watch::Kind<crate::model::gateway::ReferenceGrant>,
    backend_tls_policies: watch::Kind<crate::model::gateway::BackendTlsPolicy>,
    /// ConfigMaps of the watched namespaces: the CA bundles of BackendTLSPolicies.
    config_maps: watch::Kind<k8s_openapi::api::core::v1::ConfigMap>,
    namespaces: watch::Kind<k8s_openapi::api::core::v1::Namespace>,
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
        let g = &mut state.gateway;
        self.gateway_classes.sync(&mut g.gateway_classes);
        self.gateways.sync(&mut g.gateways);
        self.http_routes.sync(&mut g.http_routes);
        self.grpc_routes.sync(&mut g.grpc_routes);
        self.tls_routes.sync(&mut g.tls_routes);
        self.tcp_routes.sync(&mut g.tcp_routes);
        self.reference_grants.sync(&mut g.reference_grants);
        self.backend_tls_policies.sync(&mut g.backend_tls_policies);
        self.config_maps.sync(&mut g.config_maps);
        self.namespaces.sync(&mut g.namespaces);
    }

    /// The next sync clones every object again.
    fn resync(&self) {
        self.classes.resync();
        self.ingresses.resync();
        self.services.resync();
        self.slices.resync();
        self.secrets.resync();
        self.gateway_classes.resync();
        self.gateways.resync();
        self.http_routes.resync();
        self.grpc_routes.resync();
        self.tls_routes.resync();
        self.tcp_routes.resync();
        self.reference_grants.resync();
        self.backend_tls_policies.resync();
        self.config_maps.resync();
        self.namespaces.resync();
    }
}

impl Objects for Stores {
    fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>> {
        self.ingresses.get(Some(namespace), name)
    }

    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(Some(namespace), name)
    }

    fn ingresses(&self) -> Vec<Arc<Ingress>> {
        self.ingresses.all()
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
            "GatewayClass" => self.gateway_classes.get(None, &r.name).and_then(|o| meta(&o.metadata)),
            "Gateway" => self.gateways.get(ns, &r.name).and_then(|o| meta(&o.metadata)),
            "HTTPRoute" => self.http_routes.get(ns, &r.name).and_then(|o| meta(&o.metadata)),
            "GRPCRoute" => self.grpc_routes.get(ns, &r.name).and_then(|o| meta(&o.metadata)),
            "TLSRoute" => self.tls_routes.get(ns, &r.name).and_then(|o| meta(&o.metadata)),
            "TCPRoute" => self.tcp_routes.get(ns, &r.name).and_then(|o| meta(&o.metadata)),
            "BackendTLSPolicy" => self
                .backend_tls_policies
                .get(ns, &r.name)
                .and_then(|o| meta(&o.metadata)),
            _ => None,
        }
    }

    fn gateway_status(&self, r: &ObjectRef) -> Option<crate::status::gateway::Current> {
        use crate::status::gateway::Current;
        let ns = (!r.namespace.is_empty()).then_some(r.namespace.as_str());
        match r.kind {
            "GatewayClass" => self
                .gateway_classes
                .get(None, &r.name)
                .map(|o| Current::new(&o.metadata, o.status.as_ref())),
            "Gateway" => self
                .gateways
                .get(ns, &r.name)
                .map(|o| Current::new(&o.metadata, o.status.as_ref())),
            "HTTPRoute" => self
                .http_routes
                .get(ns, &r.name)
                .map(|o| Current::new(&o.metadata, o.status.as_ref())),
            "GRPCRoute" => self
                .grpc_routes
                .get(ns, &r.name)
                .map(|o| Current::new(&o.metadata, o.status.as_ref())),
            "TLSRoute" => self
                .tls_routes
                .get(ns, &r.name)
                .map(|o| Current::new(&o.metadata, o.status.as_ref())),
            "TCPRoute" => self
                .tcp_routes
                .get(ns, &r.name)
                .map(|o| Current::new(&o.metadata, o.status.as_ref())),
            "BackendTLSPolicy" => self
                .backend_tls_policies
                .get(ns, &r.name)
                .map(|o| Current::new(&o.metadata, o.status.as_ref())),
            _ => None,
        }
    }

    fn gateway_routes(&self) -> Vec<ObjectRef> {
        let r = |kind, m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| ObjectRef {
            kind,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        };
        let http = self.http_routes.all().into_iter().map(|o| r("HTTPRoute", &o.metadata));
        let grpc = self.grpc_routes.all().into_iter().map(|o| r("GRPCRoute", &o.metadata));
        let tls = self.tls_routes.all().into_iter().map(|o| r("TLSRoute", &o.metadata));
        let tcp = self.tcp_routes.all().into_iter().map(|o| r("TCPRoute", &o.metadata));
        http.chain(grpc).chain(tls).chain(tcp).collect()
    }
}

/// The running watchers: their stores, and whether each has listed.
pub struct KubeSource {
    stores: Arc<Stores>,
    watches: watch::Watches,
}

impl KubeSource {
    /// Starts the watchers (a task each, ending with `shutdown`): every kind Portico reads, in each of
    /// `options.namespaces` (all when empty), and each publish Service outside them by name. `publish` is each
    /// listener set's address source, in configuration order.
    pub fn start(
        client: &kube::Client,
        options: &ClusterOptions,
        publish: &[Publish],
        shutdown: &channel::Receiver<bool>,
    ) -> Self {
        let watches = watch::Watches::new();
        let stores = Arc::new(start_watches(client, options, publish, &watches, shutdown));
        Self { stores, watches }
    }

    /// The objects as the stores hold them now (for the leader's writers).
    pub fn objects(&self) -> Arc<dyn Objects> {
        self.stores.clone()
    }

    /// Compiles and publishes after every change (debounced, see [`ClusterOptions`]) once every watcher has
    /// listed, until `shutdown`; after each compile, sends a [`Round`] on `rounds` and feeds `acme`.
    pub async fn run(
        self,
        options: &ClusterOptions,
        compiler: Arc<Compiler>,
        publisher: Publisher,
        rounds: channel::Sender<Option<Arc<Round>>>,
        acme: Option<crate::acme::AcmeHandle>,
        shutdown: channel::Receiver<bool>,
    ) {
        publish_loop(
            self.stores,
            self.watches,
            options,
            compiler,
            publisher,
            rounds,
            acme,
            shutdown,
        )
        .await
    }
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
        gateway_classes: watch::Kind::new(),
        gateways: watch::Kind::new(),
        http_routes: watch::Kind::new(),
        grpc_routes: watch::Kind::new(),
        tls_routes: watch::Kind::new(),
        tcp_routes: watch::Kind::new(),
        reference_grants: watch::Kind::new(),
        backend_tls_policies: watch::Kind::new(),
        config_maps: watch::Kind::new(),
        namespaces: watch::Kind::new(),
        strings: Default::default(),
    };
    // Gateway API: optional kinds (a 404 list means the CRDs are not installed: listed, empty). Namespaces are
    // cluster-wide (allowedRoutes selects on their labels); GatewayClasses too.
    watches.spawn_optional(
        &mut stores.gateway_classes,
        "GatewayClass".into(),
        Api::all(client.clone()),
        any(),
        shutdown.clone(),
    );
    watches.spawn_optional(
        &mut stores.namespaces,
        "Namespace".into(),
        Api::all(client.clone()),
        any(),
        shutdown.clone(),
    );
    for ns in &scopes {
        let ns = *ns;
        let s = &mut stores;
        watches.spawn_optional(
            &mut s.gateways,
            label("Gateway", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        watches.spawn_optional(
            &mut s.http_routes,
            label("HTTPRoute", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        watches.spawn_optional(
            &mut s.grpc_routes,
            label("GRPCRoute", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        watches.spawn_optional(
            &mut s.tls_routes,
            label("TLSRoute", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        watches.spawn_optional(
            &mut s.tcp_routes,
            label("TCPRoute", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        watches.spawn_optional(
            &mut s.reference_grants,
            label("ReferenceGrant", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        watches.spawn_optional(
            &mut s.backend_tls_policies,
            label("BackendTLSPolicy", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
        // The CA bundles BackendTLSPolicies name (optional like the Gateway kinds: a 404 lists as empty).
        watches.spawn_optional(
            &mut s.config_maps,
            label("ConfigMap", ns),
            api(client, ns),
            any(),
            shutdown.clone(),
        );
    }
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
        // Basic auth's user Secrets (`auth-secret`) are Opaque; into the same store, found by name like TLS ones.
        watches.spawn(
            &mut s.secrets,
            format!("Opaque {}", label("Secret", ns)),
            api(client, ns),
            any().fields("type=Opaque"),
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
            let gateway = crate::model::gateway::attach(&current, crate::model::gateway::CONTROLLER_NAME);
            (current, compiled, gateway)
        })
        .await;
        match compiled {
            Ok((current, compiled, gateway)) => {
                let round = Round {
                    owned: compiled.translation.owned.clone(),
                    diagnostics: compiled.translation.diagnostics.clone(),
                    gateway: Some(Arc::new(gateway)),
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
