//! What the leader writes back to the cluster, and who the leader is: Ingress status ([`ingress`]), Gateway API
//! status ([`gateway`]), Events for diagnostics ([`events`]), and leader election with a Lease ([`leader`]).
//!
//! ```text
//!  kube source ──Round (owned Ingresses, diagnostics), after every compile──▶ run: leader only
//!                                                                             │ ingress::StatusWriter (status
//!  leader::elect (Lease, optional) ──leader: bool──────────────────────────▶ │ subresource), events::EventSink
//!      └──▶ ACME manager (orders only while leader)                          ▼ (objects read from the stores)
//! ```
//!
//! Every replica serves traffic; only the leader writes. Nothing here is on the request path or feeds the
//! routing table.

pub mod events;
pub mod gateway;
pub mod ingress;
pub mod leader;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use tokio::sync::watch as channel;

use crate::config::Publish;
use crate::model::{Diagnostic, ObjectRef};

/// What one compile tells the leader's writers: the Ingresses that are ours (with their listener set's index)
/// and every diagnostic. The kube source sends one after every compile, published or not (a publish Service's
/// new address changes status without changing the routing model).
pub struct Round {
    pub owned: Arc<Vec<(ObjectRef, usize)>>,
    pub diagnostics: Vec<Diagnostic>,
    /// Gateway API status to write (`None`: leave Gateway API objects alone).
    pub gateway: Option<Arc<crate::model::gateway::GatewayAttachment>>,
}

/// The objects the leader's writers look up by name: the reflector stores as they are now (a `ClusterState`
/// in tests).
pub trait Objects: Send + Sync {
    fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>>;
    fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>>;
    /// Every Ingress (read when leadership is gained, to clear status left behind).
    fn ingresses(&self) -> Vec<Arc<Ingress>>;
    /// The uid of an object of a kind Portico reads.
    fn uid(&self, r: &ObjectRef) -> Option<String>;
    /// A Gateway API object's current status and resourceVersion, by kind (`GatewayClass`, `Gateway`,
    /// `HTTPRoute`, `GRPCRoute`, `BackendTLSPolicy`...; a GatewayClass has no namespace).
    fn gateway_status(&self, _r: &ObjectRef) -> Option<gateway::Current> {
        None
    }
    /// Every HTTPRoute and GRPCRoute (to find our status left on routes no longer attached).
    fn gateway_routes(&self) -> Vec<ObjectRef> {
        Vec::new()
    }
}

/// How the leader's writers run (from [`ClusterOptions`](crate::source::kube::ClusterOptions)).
#[derive(Debug, Clone)]
pub struct Settings {
    /// This replica's name (the Events' reporting instance).
    pub identity: String,
    /// The same Event (object and message) is not sent again within this.
    pub event_dedupe: Duration,
    /// At most this many Events per round.
    pub event_burst: usize,
    /// Retry interval for failed status or Event writes.
    pub retry: Duration,
}

/// Status and Events, for the leader: runs after every compile, on gaining leadership, on retry, and when the
/// ACME manager reports a changed set of invalid orders (those become Events on their Ingresses too).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: kube::Client,
    settings: Settings,
    publish: Vec<Publish>,
    objects: Arc<dyn Objects>,
    mut rounds: channel::Receiver<Option<Arc<Round>>>,
    mut leader: channel::Receiver<bool>,
    acme: Option<crate::acme::AcmeHandle>,
    mut shutdown: channel::Receiver<bool>,
) {
    let mut acme_reports = acme.as_ref().map(|a| a.subscribe());
    // Issued certificates already reported (secret, serial), so each becomes one `CertificateIssued` Event.
    let mut issued_reported: std::collections::HashSet<(ObjectRef, String)> = Default::default();
    let mut notices: Vec<events::Notice> = Vec::new();
    let mut status = ingress::StatusWriter::new(client.clone(), publish);
    let mut gateway_status = gateway::StatusWriter::new(client.clone());
    let mut events = events::EventSink::new(client, settings.identity, settings.event_dedupe, settings.event_burst);
    let mut retry = false;
    loop {
        tokio::select! {
            r = rounds.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(settings.retry), if retry => {}
            r = changed(&mut acme_reports) => if r.is_err() { acme_reports = None },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(round) = rounds.borrow_and_update().clone() else {
            continue;
        };
        let is_leader = *leader.borrow_and_update();
        let mut ok = status.reconcile(&round.owned, &*objects, &leader).await;
        notices.extend(status.take_programmed());
        if let Some(attachment) = &round.gateway {
            ok &= gateway_status.reconcile(attachment, &*objects, &leader).await;
        }
        if is_leader && *leader.borrow() {
            let mut diagnostics = round.diagnostics.clone();
            if let Some(a) = &acme {
                let st = a.status();
                diagnostics.extend(st.diagnostics());
                issued_reported.retain(|(secret, serial)| {
                    st.history
                        .iter()
                        .any(|at| at.secret == *secret && at.outcome.as_ref().is_ok_and(|s| s == serial))
                });
                for at in &st.history {
                    let Ok(serial) = &at.outcome else { continue };
                    if issued_reported.insert((at.secret.clone(), serial.clone())) {
                        notices.push(events::Notice {
                            object: at.secret.clone(),
                            reason: "CertificateIssued",
                            note: format!("certificate for {} issued (serial {serial})", at.hosts.join(", ")),
                        });
                    }
                }
            }
            let sent = events.emit(&diagnostics, &notices, &*objects).await;
            if sent {
                notices.clear();
            }
            ok &= sent;
        } else {
            // Not leading: another replica writes status and reports.
            notices.clear();
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

#[cfg(test)]
impl Objects for crate::model::ClusterState {
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

    fn ingresses(&self) -> Vec<Arc<Ingress>> {
        self.ingresses.iter().map(|o| Arc::new(o.to_k8s())).collect()
    }

    fn uid(&self, r: &ObjectRef) -> Option<String> {
        match r.kind {
            "Ingress" => self.ingress(&r.namespace, &r.name)?.metadata.uid.clone(),
            "Service" => self.service(&r.namespace, &r.name)?.metadata.uid.clone(),
            _ => None,
        }
    }

    fn gateway_status(&self, r: &ObjectRef) -> Option<gateway::Current> {
        let g = &self.gateway;
        let is = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.name.as_deref() == Some(&r.name) && m.namespace.as_deref().unwrap_or_default() == r.namespace
        };
        let found = match r.kind {
            "GatewayClass" => g
                .gateway_classes
                .iter()
                .find(|o| is(&o.metadata))
                .map(|o| (&o.metadata, &o.status)),
            "Gateway" => g
                .gateways
                .iter()
                .find(|o| is(&o.metadata))
                .map(|o| (&o.metadata, &o.status)),
            "HTTPRoute" => g
                .http_routes
                .iter()
                .find(|o| is(&o.metadata))
                .map(|o| (&o.metadata, &o.status)),
            "GRPCRoute" => g
                .grpc_routes
                .iter()
                .find(|o| is(&o.metadata))
                .map(|o| (&o.metadata, &o.status)),
            "BackendTLSPolicy" => g
                .backend_tls_policies
                .iter()
                .find(|o| is(&o.metadata))
                .map(|o| (&o.metadata, &o.status)),
            _ => None,
        };
        found.map(|(m, s)| gateway::Current::new(m, s.as_ref()))
    }

    fn gateway_routes(&self) -> Vec<ObjectRef> {
        let r = |kind, m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| ObjectRef {
            kind,
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        };
        let g = &self.gateway;
        let http = g.http_routes.iter().map(|o| r("HTTPRoute", &o.metadata));
        http.chain(g.grpc_routes.iter().map(|o| r("GRPCRoute", &o.metadata)))
            .collect()
    }
}
