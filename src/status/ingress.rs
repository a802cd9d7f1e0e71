//! Ingress status: every Ingress that is ours gets its listener set's addresses in
//! `status.loadBalancer.ingress`, written through the status subresource only when it differs from what is
//! there. An Ingress that stops being ours (its class changed) gets the field cleared. Only the leader writes.
//!
//! What a replica saw stop being ours is known only while it runs: an Ingress moved to another class while no
//! replica ran (or while another replica led) would keep our address. So on gaining leadership the writer also
//! clears every Ingress that is not ours and whose status is exactly one of our listener sets' addresses (another
//! controller publishes its own).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;

use super::Objects;
use crate::config::Publish;
use crate::model::ObjectRef;

/// One `status.loadBalancer.ingress` entry: an IP or a hostname.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub ip: Option<String>,
    pub hostname: Option<String>,
}

impl Address {
    fn json(&self) -> serde_json::Value {
        match (&self.ip, &self.hostname) {
            (Some(ip), Some(h)) => json!({"ip": ip, "hostname": h}),
            (Some(ip), None) => json!({"ip": ip}),
            (None, Some(h)) => json!({"hostname": h}),
            (None, None) => json!({}),
        }
    }
}

/// The addresses a listener set publishes, or `None` when it publishes nothing (or its Service has no address
/// yet: an unknown address never overwrites a known one).
pub fn set_addresses(publish: &Publish, objects: &dyn Objects) -> Option<Vec<Address>> {
    match publish {
        Publish::None => None,
        Publish::Addresses(list) => Some(
            list.iter()
                .map(|a| match a.parse::<IpAddr>() {
                    Ok(_) => Address {
                        ip: Some(a.clone()),
                        hostname: None,
                    },
                    Err(_) => Address {
                        ip: None,
                        hostname: Some(a.clone()),
                    },
                })
                .collect(),
        ),
        Publish::Service { namespace, name } => {
            let svc = objects.service(namespace, name)?;
            let list: Vec<Address> = svc
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .as_ref()?
                .iter()
                .map(|i| Address {
                    ip: i.ip.clone(),
                    hostname: i.hostname.clone(),
                })
                .filter(|a| a.ip.is_some() || a.hostname.is_some())
                .collect();
            (!list.is_empty()).then_some(list)
        }
    }
}

fn current(ing: &Ingress) -> Vec<Address> {
    ing.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|l| {
            l.iter()
                .map(|i| Address {
                    ip: i.ip.clone(),
                    hostname: i.hostname.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes Ingress status. Keeps what it wrote until the watch shows it, so a round that runs before the
/// Ingress's watch event arrives does not write the same thing twice.
pub struct StatusWriter {
    client: kube::Client,
    publish: Vec<Publish>,
    /// Ours in the previous round (leader or not).
    owned_before: HashSet<ObjectRef>,
    /// No longer ours, status not yet cleared.
    to_clear: HashSet<ObjectRef>,
    /// What was written, with the resourceVersion the store had then.
    written: HashMap<ObjectRef, (Vec<Address>, Option<String>)>,
    /// Status left behind was looked for since leadership was gained.
    swept: bool,
    /// Ingresses given an address since [`StatusWriter::take_programmed`] was last called (`Normal` Events).
    programmed: Vec<super::events::Notice>,
}

impl StatusWriter {
    /// `publish`: each listener set's address source, in configuration order.
    pub fn new(client: kube::Client, publish: Vec<Publish>) -> Self {
        Self {
            client,
            publish,
            owned_before: HashSet::new(),
            to_clear: HashSet::new(),
            written: HashMap::new(),
            swept: false,
            programmed: Vec::new(),
        }
    }

    /// The `Programmed` notices of the status written since the last call.
    pub fn take_programmed(&mut self) -> Vec<super::events::Notice> {
        std::mem::take(&mut self.programmed)
    }

    /// One round. Returns false when a write failed (the caller retries later).
    ///
    /// `leader` is checked before every write, so a replica that loses the Lease stops writing at once.
    pub async fn reconcile(
        &mut self,
        owned: &[(ObjectRef, usize)],
        objects: &dyn Objects,
        leader: &tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let ingress = |r: &ObjectRef| objects.ingress(&r.namespace, &r.name);
        let now: HashSet<ObjectRef> = owned.iter().map(|(r, _)| r.clone()).collect();
        for gone in self.owned_before.difference(&now) {
            self.to_clear.insert(gone.clone());
        }
        self.to_clear.retain(|r| !now.contains(r) && ingress(r).is_some());
        self.owned_before = now;
        let leading = || *leader.borrow();
        if !leading() {
            self.swept = false;
            return true;
        }
        let addresses: Vec<Option<Vec<Address>>> = self.publish.iter().map(|p| set_addresses(p, objects)).collect();
        if !self.swept {
            self.swept = true;
            for ing in objects.ingresses() {
                let (Some(namespace), Some(name)) = (&ing.metadata.namespace, &ing.metadata.name) else {
                    continue;
                };
                let r = ObjectRef {
                    kind: "Ingress",
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                let have = current(&ing);
                if !have.is_empty() && !self.owned_before.contains(&r) && addresses.iter().flatten().any(|a| *a == have)
                {
                    self.to_clear.insert(r);
                }
            }
        }
        let mut ok = true;
        for (r, set) in owned {
            let Some(Some(want)) = addresses.get(*set) else {
                continue;
            };
            let Some(ing) = ingress(r) else { continue };
            if !leading() {
                return true;
            }
            ok &= self.write(r, &ing, want.clone()).await;
        }
        for r in self.to_clear.clone() {
            let Some(ing) = ingress(&r) else { continue };
            if !leading() {
                return true;
            }
            if current(&ing).is_empty() {
                self.to_clear.remove(&r);
                continue;
            }
            if self.write(&r, &ing, Vec::new()).await {
                self.to_clear.remove(&r);
            } else {
                ok = false;
            }
        }
        ok
    }

    async fn write(&mut self, r: &ObjectRef, ing: &Ingress, want: Vec<Address>) -> bool {
        let have = current(ing);
        let rv = ing.metadata.resource_version.clone();
        if have == want {
            self.written.remove(r);
            return true;
        }
        if self.written.get(r) == Some(&(want.clone(), rv.clone())) {
            // Written already; the store has not seen it yet.
            return true;
        }
        let body = if want.is_empty() {
            json!({"status": {"loadBalancer": {"ingress": null}}})
        } else {
            let list: Vec<_> = want.iter().map(Address::json).collect();
            json!({"status": {"loadBalancer": {"ingress": list}}})
        };
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), &r.namespace);
        match api
            .patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                tracing::info!(ingress = %r, addresses = ?want, "status written");
                if !want.is_empty() {
                    let list: Vec<&str> = want
                        .iter()
                        .filter_map(|a| a.ip.as_deref().or(a.hostname.as_deref()))
                        .collect();
                    self.programmed.push(super::events::Notice {
                        object: r.clone(),
                        reason: "Programmed",
                        note: format!("served at {}", list.join(", ")),
                    });
                }
                self.written.insert(r.clone(), (want, rv));
                true
            }
            Err(kube::Error::Api(s)) if s.code == 404 => true,
            Err(e) => {
                tracing::warn!(ingress = %r, error = %e, "writing status failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClusterState;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service, ServiceStatus};

    #[test]
    fn addresses_per_publish_source() {
        let mut state = ClusterState::default();
        assert_eq!(set_addresses(&Publish::None, &state), None);
        let fixed = Publish::Addresses(vec!["192.0.2.1".into(), "2001:db8::1".into(), "lb.example".into()]);
        let got = set_addresses(&fixed, &state).unwrap();
        assert_eq!(got[0].ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(got[1].ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(
            (got[2].ip.as_deref(), got[2].hostname.as_deref()),
            (None, Some("lb.example"))
        );

        let vip = Publish::Service {
            namespace: "sys".into(),
            name: "vip".into(),
        };
        assert_eq!(set_addresses(&vip, &state), None, "Service missing");
        let mut svc = Service::default();
        svc.metadata.namespace = Some("sys".into());
        svc.metadata.name = Some("vip".into());
        state.services.push(svc.clone());
        assert_eq!(set_addresses(&vip, &state), None, "no address yet");
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("203.0.113.9".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        state.services = vec![svc];
        let got = set_addresses(&vip, &state).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ip.as_deref(), Some("203.0.113.9"));
    }
}
