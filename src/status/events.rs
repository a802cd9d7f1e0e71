//! Kubernetes Events for diagnostics: each diagnostic about an object becomes a `Warning` Event (reason
//! `Rejected`) on that object, in `events.k8s.io/v1`. The same object and message are not sent again within
//! `dedupe` (a diagnostic persists for as long as the object is broken, and every rebuild reports it again), and
//! at most `burst` Events go out per round; the rest wait for a later round. Only the leader sends Events.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;
use tokio::time::Instant;

use super::Objects;
use crate::model::{Diagnostic, ObjectRef, Subject};

pub struct EventSink {
    client: kube::Client,
    controller: String,
    instance: String,
    dedupe: Duration,
    burst: usize,
    sent: HashMap<(ObjectRef, String), Instant>,
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
        }
    }

    /// Sends the Events not sent recently. Returns false when some are still waiting (rate limit or error).
    pub async fn emit(&mut self, diagnostics: &[Diagnostic], objects: &dyn Objects) -> bool {
        let dedupe = self.dedupe;
        self.sent.retain(|_, at| at.elapsed() < dedupe);
        let mut budget = self.burst;
        let mut done = true;
        for d in diagnostics {
            let Subject::Object(obj) = &d.subject else { continue };
            let key = (obj.clone(), d.reason.clone());
            if self.sent.contains_key(&key) {
                continue;
            }
            if budget == 0 {
                done = false;
                break;
            }
            budget -= 1;
            match self.send(obj, &d.reason, objects).await {
                Ok(()) => {
                    self.sent.insert(key, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(object = %obj, error = %e, "sending an Event failed");
                    done = false;
                }
            }
        }
        done
    }

    async fn send(&self, obj: &ObjectRef, message: &str, objects: &dyn Objects) -> Result<(), kube::Error> {
        let (api_version, uid) = (api_version(obj.kind), objects.uid(obj));
        let namespace = if obj.namespace.is_empty() {
            "default".to_string()
        } else {
            obj.namespace.clone()
        };
        let now = Timestamp::now();
        let mut note = message.to_string();
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", obj.name, now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Translate".into()),
            reason: Some("Rejected".into()),
            type_: Some("Warning".into()),
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
        api.create(&PostParams::default(), &event).await?;
        tracing::debug!(object = %obj, "event sent");
        Ok(())
    }
}

/// The apiVersion of a kind Portico reads.
fn api_version(kind: &str) -> &'static str {
    match kind {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        _ => "v1",
    }
}
