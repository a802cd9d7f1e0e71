//! Kubernetes Events for diagnostics: each diagnostic about an object becomes an Event on that object, in
//! `events.k8s.io/v1`, with a reason naming the kind of problem ([`reason_of`]: `ServiceNotFound`,
//! `InvalidAnnotation`, `HostConflict`, ...), type `Warning` (the object, or part of it, is not served as written)
//! or `Normal` (a warning diagnostic: served, with a remark).
//!
//! Deduplicated across replicas and restarts: an Event's name is derived from the object (and its uid), the
//! reason and the message, so every replica and every restart names the same report the same way. Creating it
//! again gets `409 AlreadyExists`; the existing Event is then read, and when it was last observed longer ago than
//! `dedupe` its `series` (count, last observed time) is bumped, as `events.k8s.io` intends for a repeated
//! event. Within one process, the same object and message are not sent again within `dedupe` either, and at most
//! `burst` Events go out per round; the rest wait for a later round. Only the leader sends Events.
//!
//! Besides diagnostics, [`Notice`]s are reported as `Normal` Events: an Ingress `Programmed` (its status got
//! an address: it is served there) and a `CertificateIssued` on a Secret the ACME manager filled.
//!
//! When the API refuses Events (`403`: the ServiceAccount may not create them), that is logged once with the
//! status and message, not once per diagnostic per round, and each report is not retried before `dedupe`.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::time::Instant;

use super::Objects;
use crate::kube_retry::{client_status, describe};
use crate::model::{Diagnostic, ObjectRef, Severity, Subject};

/// The Event reason for a diagnostic: one per kind of problem, from what the diagnostic says (diagnostics are
/// sentences written in a few places; this is where their kinds are named).
pub fn reason_of(d: &Diagnostic) -> &'static str {
    let m = d.reason.as_str();
    let has = |s: &str| m.contains(s);
    if has("ACME order") || has("HTTP-01") {
        "AcmeOrderFailed"
    } else if has("canary") && (has("no main Ingress") || has("already has the canary") || has("another namespace")) {
        "CanaryNotAttached"
    } else if has("annotation") {
        "InvalidAnnotation"
    } else if has("is already served for namespace")
        || has("is already claimed by")
        || has("already an alias")
        || has("has rules of its own")
    {
        "HostConflict"
    } else if has("spec.tls") || has("certificate") {
        "TLSSecretInvalid"
    } else if has("not found; requests get 503") {
        "ServiceNotFound"
    } else if has("has no port") || has("ExternalName") || has("no ClusterIP") {
        "ServicePortInvalid"
    } else if has("no ready endpoints") {
        "NoReadyEndpoints"
    } else if has("spec.defaultBackend") {
        "DefaultBackendIgnored"
    } else if has("path") || has("host") || has("pathType") {
        "InvalidRule"
    } else {
        "Rejected"
    }
}

/// The Event's name: the object's name and a digest of everything that identifies the report (FNV-1a, fixed, so
/// every replica and version computes the same).
fn event_name(obj: &ObjectRef, uid: Option<&str>, reason: &str, message: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [obj.kind, &obj.namespace, &obj.name, uid.unwrap_or(""), reason, message] {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // 253 characters at most: the name's prefix, a dot and 16 hex digits.
    let mut prefix = obj.name.as_str();
    if prefix.len() > 236 {
        prefix = &prefix[..236];
    }
    format!("{}.{h:016x}", prefix.trim_end_matches(['.', '-']))
}

/// A `Normal` Event that is not a diagnostic: something went right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub object: ObjectRef,
    /// `Programmed`, `CertificateIssued`.
    pub reason: &'static str,
    pub note: String,
}

pub struct EventSink {
    client: kube::Client,
    controller: String,
    instance: String,
    dedupe: Duration,
    burst: usize,
    sent: HashMap<(ObjectRef, String), Instant>,
    /// A refusal (`403`) was logged; cleared by the next Event that goes through.
    refused_logged: bool,
}

impl EventSink {
    pub fn new(client: kube::Client, instance: String, dedupe: Duration, burst: usize) -> Self {
        Self {
            client,
            controller: crate::config::CONTROLLER_NAME.to_string(),
            instance,
            dedupe,
            burst,
            sent: HashMap::new(),
            refused_logged: false,
        }
    }

    /// Sends the Events not sent recently: one per diagnostic about an object, one per notice. Returns false
    /// when some are still waiting (rate limit or error).
    pub async fn emit(&mut self, diagnostics: &[Diagnostic], notices: &[Notice], objects: &dyn Objects) -> bool {
        let dedupe = self.dedupe;
        self.sent.retain(|_, at| at.elapsed() < dedupe);
        let reports = diagnostics
            .iter()
            .filter_map(|d| {
                let Subject::Object(obj) = &d.subject else { return None };
                let kind = if d.severity == Severity::Warning {
                    "Normal"
                } else {
                    "Warning"
                };
                Some((obj, reason_of(d), kind, &d.reason))
            })
            .chain(notices.iter().map(|n| (&n.object, n.reason, "Normal", &n.note)));
        let mut budget = self.burst;
        let mut done = true;
        for (obj, reason, kind, note) in reports {
            let key = (obj.clone(), note.clone());
            if self.sent.contains_key(&key) {
                continue;
            }
            if budget == 0 {
                done = false;
                break;
            }
            budget -= 1;
            match self.send(obj, reason, kind, note, objects).await {
                Ok(()) => {
                    self.refused_logged = false;
                    self.sent.insert(key, Instant::now());
                }
                Err(e) if client_status(&e) == Some(403) => {
                    if !self.refused_logged {
                        self.refused_logged = true;
                        tracing::warn!(
                            error = %describe(&e),
                            "the API refuses Events; diagnostics are not reported as Events (grant create, get and patch on events.k8s.io events)"
                        );
                    }
                    // Not retried before `dedupe`: a refusal does not pass by itself.
                    self.sent.insert(key, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(object = %obj, error = %describe(&e), "sending an Event failed");
                    done = false;
                }
            }
        }
        done
    }

    async fn send(
        &self,
        obj: &ObjectRef,
        reason: &'static str,
        kind: &'static str,
        note: &str,
        objects: &dyn Objects,
    ) -> Result<(), kube::Error> {
        let (api_version, uid) = (api_version(obj.kind), objects.uid(obj));
        let namespace = if obj.namespace.is_empty() {
            "default".to_string()
        } else {
            obj.namespace.clone()
        };
        let now = Timestamp::now();
        let mut note = note.to_string();
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let name = event_name(obj, uid.as_deref(), reason, &note);
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Translate".into()),
            reason: Some(reason.into()),
            type_: Some(kind.into()),
            note: Some(note),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            regarding: Some(ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(obj.kind.to_string()),
                name: Some(obj.name.clone()),
                namespace: (!obj.namespace.is_empty()).then(|| obj.namespace.clone()),
                uid,
                ..Default::default()
            }),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                tracing::debug!(object = %obj, reason, "event sent");
                Ok(())
            }
            // Reported before (by this replica before a restart, or another): a repeat.
            Err(e) if client_status(&e) == Some(409) => self.repeat(&api, &name, now).await,
            Err(e) => Err(e),
        }
    }

    /// Bumps an existing Event's series when it was last observed longer ago than `dedupe`.
    async fn repeat(&self, api: &Api<Event>, name: &str, now: Timestamp) -> Result<(), kube::Error> {
        let existing = api.get(name).await?;
        let (count, last) = match &existing.series {
            Some(EventSeries {
                count,
                last_observed_time,
            }) => (*count, last_observed_time.0),
            None => (1, existing.event_time.as_ref().map_or(now, |t| t.0)),
        };
        let age = now.duration_since(last).unsigned_abs();
        if age < self.dedupe {
            return Ok(());
        }
        let body = json!({"series": {"count": count + 1, "lastObservedTime": MicroTime(now)}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&body)).await?;
        tracing::debug!(event = name, count = count + 1, "event repeated");
        Ok(())
    }
}

/// The apiVersion of a kind Portico reads.
fn api_version(kind: &str) -> &'static str {
    match kind {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "TLSRoute" | "TCPRoute" | "ReferenceGrant"
        | "BackendTLSPolicy" => "gateway.networking.k8s.io/v1",
        _ => "v1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ing() -> ObjectRef {
        ObjectRef {
            kind: "Ingress",
            namespace: "shop".into(),
            name: "web".into(),
        }
    }

    #[test]
    fn events_regard_gateway_api_objects_by_their_group() {
        assert_eq!(api_version("HTTPRoute"), "gateway.networking.k8s.io/v1");
        assert_eq!(api_version("Gateway"), "gateway.networking.k8s.io/v1");
        assert_eq!(api_version("Ingress"), "networking.k8s.io/v1");
        assert_eq!(api_version("Secret"), "v1");
    }

    #[test]
    fn reasons_name_the_kind_of_problem() {
        for (message, want) in [
            ("spec.rules[0].http.paths[0]: Service shop/nope not found; requests get 503", "ServiceNotFound"),
            ("spec.rules[0].http.paths[0]: Service shop/api has no port 81; requests get 503", "ServicePortInvalid"),
            ("annotation nginx.ingress.kubernetes.io/auth-url is not supported: x; Ingress not served", "InvalidAnnotation"),
            ("unknown annotation portico.dev/ssl-redirct: did you mean portico.dev/ssl-redirect?; Ingress not served", "InvalidAnnotation"),
            ("spec.rules[0]: host shared.example is already served for namespace team-a; another namespace cannot take it over; rule ignored", "HostConflict"),
            ("spec.rules[0].http.paths[0]: shop.example/ (Prefix) is already claimed by the older Ingress frontend/web; path ignored", "HostConflict"),
            ("spec.tls: Secret shop/tls not found; a.example use the default certificate", "TLSSecretInvalid"),
            ("ACME order for a.example (tls): urn:ietf:params:acme:error:rejectedIdentifier", "AcmeOrderFailed"),
            ("spec.rules[0].http.paths[0]: canary: no main Ingress serves shop.example/ (Prefix) on this listener set; the canary path is not served", "CanaryNotAttached"),
            ("spec.rules[0].http.paths[1]: path \"//double\" is not in normal form (it would be \"/double\"); path ignored", "InvalidRule"),
            ("Ingress has no spec", "Rejected"),
        ] {
            let d = Diagnostic::object(ing(), message);
            assert_eq!(reason_of(&d), want, "{message}");
        }
    }

    #[test]
    fn event_names_are_stable_and_distinct() {
        let a = event_name(&ing(), Some("uid-1"), "InvalidRule", "m");
        assert_eq!(a, event_name(&ing(), Some("uid-1"), "InvalidRule", "m"));
        assert!(a.starts_with("web.") && a.len() == "web.".len() + 16, "{a}");
        assert_ne!(
            a,
            event_name(&ing(), Some("uid-2"), "InvalidRule", "m"),
            "a recreated object"
        );
        assert_ne!(a, event_name(&ing(), Some("uid-1"), "InvalidRule", "n"));
        let long = ObjectRef {
            name: "x".repeat(253),
            ..ing()
        };
        assert!(event_name(&long, None, "Rejected", "m").len() <= 253);
    }
}
