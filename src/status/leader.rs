//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it: acquire the
//! Lease when it is absent, released or expired, renew it every `renew_interval` with optimistic concurrency
//! (the write carries the resourceVersion read; a 409 means someone else wrote first), and step down at once
//! when a renewal is refused or none succeeded within two thirds of the lease duration.
//!
//! Expiry is judged by the local clock only: a Lease held by another replica is expired when its
//! resourceVersion has not changed for a whole lease duration since this replica first saw it, so clock skew
//! between replicas does not matter.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

/// Where the Lease lives and how it is timed.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name (default `portico-leader`).
    pub name: String,
    /// Lease namespace; `None`: the client's default namespace (the service account's, in a pod).
    pub namespace: Option<String>,
    /// How long a Lease stays valid without renewal (default 15 s).
    pub lease_duration: Duration,
    /// How often the holder renews and the others retry (default 5 s).
    pub renew_interval: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            name: "portico-leader".into(),
            namespace: None,
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
        }
    }
}

/// The leadership channel [`elect`] drives, at its initial value: without election (`config` is `None`) the sole
/// replica leads. Create it before the election starts so other leader-only work (the ACME manager, the status
/// writers) can follow it.
pub fn channel(config: Option<&LeaseConfig>) -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(config.is_none())
}

/// Runs the election with `config` until `shutdown` (see [`run`]); without one, holds `leader` (true) open until
/// `shutdown`, so that the writers following it keep running.
pub async fn elect(
    client: kube::Client,
    config: Option<LeaseConfig>,
    identity: String,
    leader: watch::Sender<bool>,
    shutdown: watch::Receiver<bool>,
) {
    match config {
        Some(config) => {
            run(client, config, identity, leader, shutdown)
                .instrument(tracing::info_span!("leader"))
                .await
        }
        // The sole replica leads until shutdown; the sender stays alive so the writers keep running.
        None => {
            let mut shutdown = shutdown;
            let _ = shutdown.wait_for(|s| *s).await;
            drop(leader);
        }
    }
}

/// The elector's memory between rounds.
struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// resourceVersion of the Lease last read, and when this replica first saw it.
    observed: Option<(String, Instant)>,
}

/// Runs the election until `shutdown`; `leader` follows whether this replica holds the Lease. On shutdown the
/// Lease is released (holder cleared) so another replica can take over without waiting for expiry.
pub async fn run(
    client: kube::Client,
    config: LeaseConfig,
    identity: String,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let mut e = Elector {
        api: Api::namespaced(client, &namespace),
        name: config.name.clone(),
        identity,
        duration: config.lease_duration,
        observed: None,
    };
    let renew_deadline = config.lease_duration * 2 / 3;
    let mut last_renewal: Option<Instant> = None;
    tracing::info!(lease = %config.name, %namespace, identity = %e.identity, "leader election started");
    loop {
        let held = match e.round().await {
            Ok(true) => {
                last_renewal = Some(Instant::now());
                true
            }
            Ok(false) => {
                last_renewal = None;
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "lease round failed");
                // Keep leading only while the last renewal is recent enough that nobody can have taken over.
                last_renewal.is_some_and(|t| t.elapsed() < renew_deadline)
            }
        };
        if held != *leader.borrow() {
            tracing::info!(identity = %e.identity, leader = held, "leadership changed");
            leader.send_replace(held);
        }
        tokio::select! {
            _ = tokio::time::sleep(config.renew_interval) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    if leader.send_replace(false) {
        if let Err(err) = e.release().await {
            tracing::warn!(error = %err, "releasing the lease failed; it will expire");
        }
    }
}

impl Elector {
    /// One read-then-write round. `Ok(true)`: this replica holds the Lease now.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_secs()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return self.write(self.api.create(&PostParams::default(), &lease).await);
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        match &self.observed {
            Some((seen, _)) if *seen == rv => {}
            _ => self.observed = Some((rv, Instant::now())),
        }
        let mut next = lease;
        let mut next_spec = spec.clone();
        next_spec.renew_time = Some(now.clone());
        next_spec.lease_duration_seconds = Some(self.duration_secs());
        if holder.as_deref() == Some(self.identity.as_str()) {
            next.spec = Some(next_spec);
            return self.write(self.api.replace(&self.name, &PostParams::default(), &next).await);
        }
        let their_duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.duration);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= their_duration);
        if holder.is_some() && !expired {
            return Ok(false);
        }
        tracing::info!(previous = holder.as_deref().unwrap_or(""), "taking over the lease");
        next_spec.holder_identity = Some(self.identity.clone());
        next_spec.acquire_time = Some(now);
        next_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        next.spec = Some(next_spec);
        self.write(self.api.replace(&self.name, &PostParams::default(), &next).await)
    }

    /// The outcome of a write: success holds the Lease; a conflict means someone else wrote first.
    fn write(&mut self, r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
        match r {
            Ok(l) => {
                self.observed = l.metadata.resource_version.map(|rv| (rv, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!("lease changed under us; re-reading next round");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        self.api.replace(&self.name, &PostParams::default(), &lease).await?;
        tracing::info!("lease released");
        Ok(())
    }

    fn duration_secs(&self) -> i32 {
        self.duration.as_secs().clamp(1, i32::MAX as u64) as i32
    }
}
