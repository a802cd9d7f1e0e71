//! The ACME manager task: fed the [`Candidate`]s after each publish, it orders what is missing, due for renewal
//! or not covering its hosts, one order at a time, and stores the results. Failures back off exponentially with
//! jitter (capped, honouring the CA's `Retry-After` while polling) and never replace a working certificate.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{Account, CertificateIdentifier};
use tokio::sync::watch;

use super::ari::RenewalWindow;
use super::ari::{self, Ari};
use super::challenge::ChallengeStore;
use super::client::{self, AcmeError, Polling};
use super::plan::{self, Candidate};
use super::store::{CertStore, StoredCert};
use crate::certs::{CertInfo, LoadedCert};
use crate::config::AcmeConfig;
use crate::model::{ClusterState, Diagnostic, ObjectRef, Translation};

/// Unix seconds. Injected so tests can move the manager's idea of time (renewal decisions only).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Timing of the manager. [`Settings::default`] is for production; tests shorten everything.
#[derive(Clone)]
pub struct Settings {
    /// How often certificates are re-checked for renewal when nothing else happens.
    pub check_interval: Duration,
    /// First delay after a failed attempt; doubled per consecutive failure up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Order polling: first delay and the longest wait per stage (validation, issuance).
    pub poll_delay: Duration,
    pub poll_timeout: Duration,
    /// Renew when less than this share of the lifetime is left (plus up to 10% per-Secret jitter).
    pub renew_fraction: f64,
    /// Immediate retries of a whole attempt that failed only with `badNonce`.
    pub bad_nonce_retries: u32,
    /// Cluster mode: after the ordering replica's own watch has delivered the shared tokens, how long it
    /// waits more (for the other replicas' watches) before telling the CA to validate.
    pub challenge_propagation: Duration,
    /// ACME Renewal Information: the CA's `Retry-After` for the next look at a certificate's renewal window is
    /// clamped to `ari_refetch_min..=ari_refetch_max` (RFC 9773 §4.3.2 suggests one minute and one day). A
    /// failed fetch is retried after `ari_refetch_min`, doubling per consecutive failure up to the maximum.
    pub ari_refetch_min: Duration,
    pub ari_refetch_max: Duration,
    /// The longest a renewal-information request may take (account included); then the 1/3-lifetime rule
    /// decides.
    pub ari_timeout: Duration,
    pub clock: Clock,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_secs(3600),
            backoff_min: Duration::from_secs(300),
            backoff_max: Duration::from_secs(12 * 3600),
            poll_delay: Duration::from_millis(500),
            poll_timeout: Duration::from_secs(90),
            renew_fraction: 1.0 / 3.0,
            bad_nonce_retries: 5,
            challenge_propagation: Duration::from_secs(1),
            ari_refetch_min: Duration::from_secs(60),
            ari_refetch_max: Duration::from_secs(24 * 3600),
            ari_timeout: Duration::from_secs(10),
            clock: Arc::new(crate::certs::unix_now),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("check_interval", &self.check_interval)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("ari_refetch_min", &self.ari_refetch_min)
            .field("ari_refetch_max", &self.ari_refetch_max)
            .finish_non_exhaustive()
    }
}

/// One attempt, kept in [`Status::history`] (newest last, at most [`HISTORY`]).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub secret: ObjectRef,
    pub hosts: Vec<String>,
    pub reason: String,
    pub started: SystemTime,
    /// `Ok(serial)` or the error.
    pub outcome: Result<String, String>,
}

pub const HISTORY: usize = 200;

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What the manager has done, for the admin API, logs and tests.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Whether this replica may order (always in file mode; the Lease holder in cluster mode).
    pub leading: bool,
    /// Candidates examined while leading (whether or not they needed an order).
    pub passes: u64,
    /// Orders begun (each attempt, including retries).
    pub orders_started: u64,
    pub certificates_issued: u64,
    pub failures: u64,
    /// Per Secret: the last failure, until a certificate is issued for it.
    pub failing: HashMap<ObjectRef, String>,
    /// `spec.tls` entries ACME does not handle (wildcards), from the last feed.
    pub skipped: Vec<Diagnostic>,
    /// Per Secret: the last order the CA marked invalid, on the Ingress, with the CA's problem detail. Cleared
    /// when a certificate is issued for it.
    pub invalid: HashMap<ObjectRef, Diagnostic>,
    pub history: Vec<Attempt>,
}

impl Status {
    /// Everything worth showing next to the translation's diagnostics.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut invalid: Vec<_> = self.invalid.iter().collect();
        invalid.sort_by(|a, b| a.0.cmp(b.0));
        self.skipped
            .iter()
            .cloned()
            .chain(invalid.into_iter().map(|(_, d)| d.clone()))
            .collect()
    }
}

/// The app's side of the manager: feed it after each publish, read its status.
#[derive(Clone)]
pub struct AcmeHandle {
    acme_sets: Arc<Vec<bool>>,
    input: Arc<watch::Sender<Vec<Candidate>>>,
    status: Arc<Mutex<Status>>,
    /// Bumped whenever [`Status::invalid`] changes (cluster mode turns those into Events).
    reported: Arc<watch::Sender<u64>>,
}

impl AcmeHandle {
    /// Computes the candidates of this publish and hands them to the manager (cheap; no I/O).
    pub fn feed(&self, t: &Translation, state: &ClusterState) {
        let (cands, diags) = plan::candidates(t, state, &self.acme_sets);
        for d in &diags {
            tracing::debug!(subject = %d.subject, reason = %d.reason, "no ACME order");
        }
        self.with_status(|s| s.skipped = diags);
        self.input.send_if_modified(|cur| {
            if *cur == cands {
                false
            } else {
                *cur = cands;
                true
            }
        });
    }

    /// Changes whenever the set of invalid orders (and so [`Status::diagnostics`]) changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.reported.subscribe()
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn with_status<R>(&self, f: impl FnOnce(&mut Status) -> R) -> R {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Creates the manager for `sets` (one entry per listener set, `Some` where ACME is configured). Spawn the
/// future; it returns when `shutdown` turns true. This replica always orders (one process, file mode).
pub fn manager(
    sets: Vec<Option<AcmeConfig>>,
    store: Arc<dyn CertStore>,
    challenges: ChallengeStore,
    settings: Settings,
    shutdown: watch::Receiver<bool>,
) -> (AcmeHandle, impl Future<Output = ()> + Send + 'static) {
    manager_led(sets, store, challenges, settings, watch::channel(true).1, shutdown)
}

/// [`manager`] for one of several replicas: it orders only while `leader` is true, and abandons an order in
/// flight (withdrawing its tokens, storing nothing) when leadership is lost.
pub fn manager_led(
    sets: Vec<Option<AcmeConfig>>,
    store: Arc<dyn CertStore>,
    challenges: ChallengeStore,
    settings: Settings,
    leader: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> (AcmeHandle, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = watch::channel(Vec::new());
    let handle = AcmeHandle {
        acme_sets: Arc::new(sets.iter().map(|s| s.is_some()).collect()),
        input: Arc::new(tx),
        status: Arc::new(Mutex::new(Status::default())),
        reported: Arc::new(watch::channel(0).0),
    };
    let m = Manager {
        sets,
        store,
        challenges,
        settings,
        handle: handle.clone(),
        accounts: HashMap::new(),
        forgotten: std::collections::HashSet::new(),
        retry_after: HashMap::new(),
        tracks: HashMap::new(),
        ari: HashMap::new(),
    };
    (handle, m.run(rx, leader, shutdown))
}

/// Resolves when `leader` turns false; never when its sender is gone while true.
async fn lost(leader: &mut watch::Receiver<bool>) {
    if leader.wait_for(|l| !*l).await.is_err() && *leader.borrow() {
        std::future::pending::<()>().await;
    }
}

/// Per Secret: consecutive failures, when the next attempt may start, and the last certificate issued here
/// (used until the source republishes it).
#[derive(Default)]
struct Track {
    failures: u32,
    not_before: Option<Instant>,
    issued: Option<Arc<CertInfo>>,
    /// The ARI identifier of `issued`.
    issued_id: Option<CertificateIdentifier<'static>>,
}

struct Manager {
    sets: Vec<Option<AcmeConfig>>,
    store: Arc<dyn CertStore>,
    challenges: ChallengeStore,
    settings: Settings,
    handle: AcmeHandle,
    accounts: HashMap<String, Account>,
    /// Directory URLs whose CA said it does not know the stored account: the next account is registered anew.
    forgotten: std::collections::HashSet<String>,
    /// Per directory URL: the CA's latest `Retry-After` on an error response.
    retry_after: HashMap<String, client::RetryAfter>,
    tracks: HashMap<ObjectRef, Track>,
    /// Per Secret: what the CA said about its current certificate's renewal window.
    ari: HashMap<ObjectRef, Ari>,
}

impl Manager {
    async fn run(
        mut self,
        mut input: watch::Receiver<Vec<Candidate>>,
        mut leader: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut leader_open = true;
        'outer: loop {
            let leading = *leader.borrow_and_update();
            self.handle.with_status(|s| s.leading = leading);
            if !leading {
                // A follower only answers challenges (fed from shared storage); it waits to be elected.
                tokio::select! {
                    r = leader.changed(), if leader_open => if r.is_err() { leader_open = false },
                    r = input.changed() => if r.is_err() { return },
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                continue;
            }
            let cands = input.borrow_and_update().clone();
            let mut wake = Instant::now() + self.settings.check_interval;
            for c in &cands {
                // An order in flight is abandoned at shutdown or when leadership is lost: its tokens are
                // withdrawn and nothing is stored.
                let next = tokio::select! {
                    next = self.pass(c) => next,
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = lost(&mut leader) => {
                        tracing::info!("leadership lost: not ordering");
                        continue 'outer;
                    }
                };
                if let Some(at) = next {
                    wake = wake.min(at);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                r = input.changed() => if r.is_err() { return },
                r = leader.changed(), if leader_open => if r.is_err() { leader_open = false },
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Looks at one candidate and orders if needed. Returns when it wants to look again (backoff, the CA's
    /// renewal window or its next fetch), if earlier than the regular check.
    async fn pass(&mut self, c: &Candidate) -> Option<Instant> {
        let now = (self.settings.clock)();
        let fraction = self.settings.renew_fraction;
        self.handle.with_status(|s| s.passes += 1);
        // A certificate issued here and not published (yet) counts only while the store still holds it: deleted
        // (the Secret or its file removed), it is served no more and is ordered again now, not at the next
        // renewal check.
        if c.current.is_none() && self.tracks.get(&c.secret).is_some_and(|t| t.issued.is_some()) {
            if let Ok(None) = self.store.load(&c.secret).await {
                tracing::info!(secret = %c.secret, "issued certificate deleted from the store; ordering again");
                let track = self.tracks.entry(c.secret.clone()).or_default();
                track.issued = None;
                track.issued_id = None;
            }
        }
        let track = self.tracks.entry(c.secret.clone()).or_default();
        // The freshest certificate known: the published one, or one issued here and not yet republished.
        let (best, best_id) = match (&c.current, &track.issued) {
            (Some(a), Some(b)) if b.not_after > a.not_after => (Some(b.clone()), track.issued_id.clone()),
            (Some(a), _) => (Some(a.clone()), c.current_id.clone()),
            (None, b) => (b.clone(), track.issued_id.clone()),
        };
        let managed = c.managed || track.issued.is_some();
        // The CA's renewal window counts for a certificate Portico would renew: valid, covering, its own.
        let window = match (&best, &best_id) {
            (Some(cert), Some(id))
                if managed
                    && plan::need(&c.hosts, &c.secret, Some(cert), now, fraction, None)
                        .is_none_or(|n| n.is_renewal()) =>
            {
                self.renewal_window(c, id).await
            }
            _ => None,
        };
        let Some(need) = plan::need(&c.hosts, &c.secret, best.as_deref(), now, fraction, window) else {
            return self.ari_wake(&c.secret, window, now);
        };
        if !plan::may_replace(&need, managed) {
            tracing::debug!(secret = %c.secret, "due for renewal but managed by someone else; not ordering");
            return None;
        }
        let track = self.tracks.entry(c.secret.clone()).or_default();
        if let Some(at) = track.not_before {
            if at > Instant::now() {
                return Some(at);
            }
        }
        // The store may hold a newer certificate than the published state (written before a restart, or by
        // another replica); use it rather than ordering again.
        if let Ok(Some(stored)) = self.store.load(&c.secret).await {
            if let Ok(l) = LoadedCert::from_pem(stored.cert_pem.as_bytes(), stored.key_pem.as_bytes(), String::new()) {
                let same = best.as_ref().is_some_and(|b| b.serial == l.info.serial);
                if !same && plan::need(&c.hosts, &c.secret, Some(&l.info), now, fraction, None).is_none() {
                    let track = self.tracks.entry(c.secret.clone()).or_default();
                    track.issued = Some(l.info.clone());
                    track.issued_id = l.chain().first().and_then(|d| ari::cert_id(d));
                    return None;
                }
            }
        }
        // A renewal names the certificate it replaces when the CA offers renewal information (RFC 9773 §5).
        let replaces = match (&best_id, self.ari.get(&c.secret)) {
            (Some(id), Some(a)) if need.is_renewal() && a.offered && a.id == *id => Some(id.clone()),
            _ => None,
        };
        let cfg = self.sets.get(c.set).cloned().flatten()?;
        tracing::info!(secret = %c.secret, hosts = %c.hosts.join(","), reason = %need, "ordering certificate");
        let started = SystemTime::now();
        let retry_after = self.retry_after.entry(cfg.directory.clone()).or_default().clone();
        retry_after.take();
        let mut result = self.attempt(&cfg, c, replaces.as_ref()).await;
        let mut nonce_retries = 0;
        while result.as_ref().is_err_and(|e| e.is_bad_nonce()) && nonce_retries < self.settings.bad_nonce_retries {
            nonce_retries += 1;
            tracing::debug!(secret = %c.secret, "badNonce; retrying the order");
            result = self.attempt(&cfg, c, replaces.as_ref()).await;
        }
        // The CA forgot the account (a CA reset, a staging/production switch at the same URL): register a new one
        // and order again at once; a failure of that attempt backs off as any other.
        if result.as_ref().is_err_and(AcmeError::is_account_gone) {
            tracing::warn!(directory = %cfg.directory, secret = %c.secret, "the CA does not know the ACME account; registering a new one");
            self.accounts.remove(&cfg.directory);
            self.forgotten.insert(cfg.directory.clone());
            result = self.attempt(&cfg, c, None).await;
        }
        let track = self.tracks.entry(c.secret.clone()).or_default();
        let outcome = match result {
            Ok((info, id)) => {
                tracing::info!(secret = %c.secret, serial = %info.serial, not_after = %crate::certs::format_unix(info.not_after), "certificate issued and stored");
                track.failures = 0;
                track.not_before = None;
                track.issued = Some(info.clone());
                track.issued_id = id;
                let cleared = self.handle.with_status(|s| {
                    s.certificates_issued += 1;
                    s.failing.remove(&c.secret);
                    s.invalid.remove(&c.secret).is_some()
                });
                if cleared {
                    self.handle.reported.send_modify(|n| *n += 1);
                }
                Ok(info.serial.clone())
            }
            Err(e) => {
                track.failures += 1;
                let mut delay = backoff(&self.settings, track.failures);
                if let Some(at) = e.retry_at() {
                    delay = delay.max(at.saturating_duration_since(Instant::now()));
                }
                // A Retry-After on an error response (rate limit, 503): honoured, up to a day.
                if let Some(at) = retry_after.take() {
                    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                    delay = delay.max(wait.min(MAX_RETRY_AFTER));
                }
                track.not_before = Some(Instant::now() + delay);
                let invalid = matches!(e, AcmeError::Invalid(_));
                tracing::warn!(secret = %c.secret, hosts = %c.hosts.join(","), error = %e, failures = track.failures, retry_in = ?delay, "ACME order failed; keeping the current certificate");
                let msg = e.to_string();
                self.handle.with_status(|s| {
                    s.failures += 1;
                    s.failing.insert(c.secret.clone(), msg.clone());
                    if invalid {
                        let d = Diagnostic::object(
                            c.ingress.clone(),
                            format!("ACME order for {} ({}): {msg}", c.hosts.join(", "), c.secret.name),
                        );
                        s.invalid.insert(c.secret.clone(), d);
                    }
                });
                if invalid {
                    self.handle.reported.send_modify(|n| *n += 1);
                }
                Err(msg)
            }
        };
        let track = &self.tracks[&c.secret];
        let again = track.not_before;
        self.handle.with_status(|s| {
            s.history.push(Attempt {
                secret: c.secret.clone(),
                hosts: c.hosts.clone(),
                reason: need.to_string(),
                started,
                outcome,
            });
            if s.history.len() > HISTORY {
                s.history.remove(0);
            }
        });
        again
    }

    /// The account for `cfg`'s directory: cached, else restored from the store or created.
    async fn account(&mut self, cfg: &AcmeConfig) -> Result<Account, AcmeError> {
        if let Some(a) = self.accounts.get(&cfg.directory) {
            return Ok(a.clone());
        }
        let slot = self.retry_after.entry(cfg.directory.clone()).or_default().clone();
        let fresh = self.forgotten.contains(&cfg.directory);
        let a = client::account(cfg, &*self.store, &slot, fresh).await?;
        self.forgotten.remove(&cfg.directory);
        self.accounts.insert(cfg.directory.clone(), a.clone());
        Ok(a)
    }

    /// One order, bounded in time: account, order, validation, finalization, checks, storage.
    async fn attempt(
        &mut self,
        cfg: &AcmeConfig,
        c: &Candidate,
        replaces: Option<&CertificateIdentifier<'static>>,
    ) -> Result<(Arc<CertInfo>, Option<CertificateIdentifier<'static>>), AcmeError> {
        self.handle.with_status(|s| s.orders_started += 1);
        let limit = self.settings.poll_timeout * 3;
        let fut = async {
            let account = self.account(cfg).await?;
            let polling = Polling {
                delay: self.settings.poll_delay,
                timeout: self.settings.poll_timeout,
            };
            let issued = client::issue(&account, &c.hosts, replaces, &self.challenges, &self.store, polling).await?;
            let checked = check(&issued, &c.hosts, (self.settings.clock)())?;
            self.store.store(&c.secret, &issued).await?;
            Ok(checked)
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(AcmeError::Timeout(limit)),
        }
    }

    // === ACME Renewal Information ===

    /// The CA's renewal window for the certificate `id` of `c`, with the point picked in it: remembered, or
    /// fetched when the certificate is new to it or the CA's `Retry-After` has passed. `None` when the CA
    /// offers no renewal information or the fetch failed: then the 1/3-lifetime rule decides. Bounded by
    /// [`Settings::ari_timeout`].
    async fn renewal_window(
        &mut self,
        c: &Candidate,
        id: &CertificateIdentifier<'static>,
    ) -> Option<(RenewalWindow, f64)> {
        let prev = self.ari.get(&c.secret);
        if !Ari::due(prev, id, Instant::now()) {
            return prev.and_then(|a| a.window);
        }
        let cfg = self.sets.get(c.set).cloned().flatten()?;
        let slot = self.retry_after.entry(cfg.directory.clone()).or_default().clone();
        slot.take();
        let limit = self.settings.ari_timeout;
        // Outer error: no account; inner: the renewal-information request itself.
        let fetched = tokio::time::timeout(limit, async {
            let account = self.account(&cfg).await?;
            Ok::<_, AcmeError>(account.renewal_info(id).await)
        })
        .await;
        let prev = self.ari.remove(&c.secret).filter(|a| a.id == *id);
        let (min, max) = (self.settings.ari_refetch_min, self.settings.ari_refetch_max);
        let failed = |prev: Option<Ari>, offered: bool, error: String| {
            let failures = prev.map_or(0, |a| a.failures) + 1;
            let mut wait = ari::retry_after_failure(failures, min, max);
            // A Retry-After on the error response (recorded by the account's HTTP client).
            if let Some(at) = slot.take() {
                let asked = at.duration_since(SystemTime::now()).unwrap_or_default();
                wait = wait.max(ari::refetch_after(asked, min, max));
            }
            tracing::warn!(secret = %c.secret, id = %id, %error, failures, retry_in = ?wait, "renewal information unavailable; renewing at a third of the lifetime meanwhile");
            Ari {
                id: id.clone(),
                window: None,
                offered,
                next_fetch: Instant::now() + wait,
                failures,
            }
        };
        let next = match fetched {
            Ok(Ok(Ok((info, retry_after)))) => {
                let w = &info.suggested_window;
                match RenewalWindow::new(w.start.unix_timestamp(), w.end.unix_timestamp()) {
                    None => failed(
                        prev,
                        true,
                        format!("window end {} not after its start {}", w.end, w.start),
                    ),
                    Some(w) => {
                        // The point drawn for a window is kept while the window stays; a moved window gets a new one.
                        let pick = match prev.as_ref().and_then(|a| a.window) {
                            Some((old, r)) if old == w => r,
                            _ => {
                                let r = ari::random_unit();
                                tracing::info!(
                                    secret = %c.secret,
                                    id = %id,
                                    start = %crate::certs::format_unix(w.start),
                                    end = %crate::certs::format_unix(w.end),
                                    renew_at = %crate::certs::format_unix(w.at(r)),
                                    explanation_url = info.explanation_url.as_deref().unwrap_or("-"),
                                    "renewal window from the CA (ARI)"
                                );
                                r
                            }
                        };
                        let wait = ari::refetch_after(retry_after, min, max);
                        tracing::debug!(secret = %c.secret, next_fetch_in = ?wait, "renewal information fetched");
                        Ari {
                            id: id.clone(),
                            window: Some((w, pick)),
                            offered: true,
                            next_fetch: Instant::now() + wait,
                            failures: 0,
                        }
                    }
                }
            }
            Ok(Ok(Err(instant_acme::Error::Unsupported(_)))) => {
                // Asked again a day later (the directory is read when the account is loaded, at start).
                tracing::debug!(secret = %c.secret, "the CA offers no renewal information; renewing at a third of the lifetime");
                Ari {
                    id: id.clone(),
                    window: None,
                    offered: false,
                    next_fetch: Instant::now() + max,
                    failures: 0,
                }
            }
            // The directory has `renewalInfo` (instant-acme checks that first): the request failed.
            Ok(Ok(Err(e))) => failed(prev, true, e.to_string()),
            Ok(Err(e)) => failed(prev, false, format!("account: {e}")),
            Err(_) => {
                let offered = prev.as_ref().is_some_and(|a| a.offered);
                failed(prev, offered, format!("no answer within {limit:?}"))
            }
        };
        let window = next.window;
        self.ari.insert(c.secret.clone(), next);
        window
    }

    /// When a certificate that needs nothing now should be looked at again for ARI: the picked point of its
    /// window or the next fetch, whichever comes first (if in the future).
    fn ari_wake(&self, secret: &ObjectRef, window: Option<(RenewalWindow, f64)>, now: i64) -> Option<Instant> {
        let a = self.ari.get(secret)?;
        let mut at = a.next_fetch;
        if let Some((w, r)) = window {
            let secs = w.at(r).saturating_sub(now);
            if secs > 0 {
                at = at.min(Instant::now() + Duration::from_secs(secs.unsigned_abs()));
            }
        }
        (at > Instant::now()).then_some(at)
    }
}

/// An issued certificate must load and serve every host before it is stored.
/// Returns its summary and ARI identifier.
fn check(
    issued: &StoredCert,
    hosts: &[String],
    now: i64,
) -> Result<(Arc<CertInfo>, Option<CertificateIdentifier<'static>>), AcmeError> {
    let l = LoadedCert::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes(), "acme".into())
        .map_err(|e| AcmeError::Unusable(e.to_string()))?;
    for (host, r) in l.validate_for_hosts(hosts, now) {
        r.map_err(|e| AcmeError::Unusable(format!("{host}: {e}")))?;
    }
    Ok((l.info.clone(), l.chain().first().and_then(|d| ari::cert_id(d))))
}

/// `backoff_min * 2^(failures-1)`, capped at `backoff_max`, then a random 50–100% of that.
pub fn backoff(s: &Settings, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = s.backoff_min.saturating_mul(1u32 << exp).min(s.backoff_max);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(failures);
    let r = (h.finish() % 1000) as f64 / 1000.0;
    base.mul_f64(0.5 + r / 2.0)
}

/// Wiring for the app: when a listener set has `acme`, a [`FileStore`](super::FileStore) in the state directory
/// and the manager task (spawned on `tasks`). `None` when no set uses ACME, or when there is no state directory
/// (then tokens are still answered but nothing is ordered; `portico run` refuses that combination).
pub fn spawn_for(
    config: &crate::config::Config,
    state_dir: Option<&std::path::Path>,
    settings: &Settings,
    challenges: &ChallengeStore,
    shutdown: watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<Option<AcmeHandle>> {
    use tracing::Instrument;
    let sets: Vec<Option<AcmeConfig>> = config.listener_sets.iter().map(|s| s.acme.clone()).collect();
    if sets.iter().all(|s| s.is_none()) {
        return Ok(None);
    }
    let Some(state_dir) = state_dir else {
        tracing::warn!("a listener set has acme configured but there is no state directory: not ordering certificates");
        return Ok(None);
    };
    let store = Arc::new(super::FileStore::new(state_dir));
    let (handle, task) = manager(sets, store, challenges.clone(), settings.clone(), shutdown);
    tasks.spawn(task.instrument(tracing::info_span!("acme")));
    Ok(Some(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_capped_with_jitter() {
        let s = Settings {
            backoff_min: Duration::from_secs(10),
            backoff_max: Duration::from_secs(100),
            ..Settings::default()
        };
        for (n, full) in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (40, 100)] {
            let d = backoff(&s, n);
            assert!(
                d >= Duration::from_secs(full) / 2 && d <= Duration::from_secs(full),
                "{n}: {d:?}"
            );
        }
    }
}
