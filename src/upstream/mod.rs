//! Upstream side: the endpoints behind a Service port ([`Backend`]), their health ([`health`]), how one is
//! picked ([`Balance`]), how much retrying it may take ([`budget`]), the pooled HTTP client that forwards to them
//! ([`client`], with TLS from [`tls`] and per-Ingress settings from [`policy`]), and the bodies that carry
//! timeouts and in-flight accounting ([`body`]).
//!
//! All state here is atomics: picking an endpoint and recording an outcome take no lock and allocate nothing.

pub mod body;
pub mod budget;
pub mod client;
pub mod h1;
pub mod health;
pub mod policy;
pub mod pool;
pub mod tls;
pub mod watch;

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use crate::model::annotations::{ActiveCheck, Balance};

/// Passive health: consecutive failures eject an endpoint for a growing interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HealthPolicy {
    /// Consecutive connect failures or 5xx responses that eject.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this share (percent) of a backend's endpoints are ejected at once.
    pub max_ejected_percent: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

/// One endpoint and what is known about it.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Position in the backend's endpoint list.
    index: usize,
    /// `addr` as a URI authority, rendered once (requests upstream name it in their target).
    pub authority: http::uri::Authority,
    /// Keep-alive HTTP/1.1 connections to this endpoint, through hyper's client (requests with a body, upgrades).
    pub conns: pool::Conns,
    /// Idle HTTP/1.1 connections of the gateway's own client (requests without a body).
    pub idle: Arc<h1::Pool>,
    /// Requests in flight (least-request balancing).
    in_flight: AtomicU32,
    consecutive_failures: AtomicU32,
    /// Times ejected so far (the next ejection lasts longer).
    ejections: AtomicU32,
    /// Milliseconds since the process clock's start until which the endpoint is ejected (0: not ejected).
    ejected_until: AtomicU64,
    /// Stable identity for hashing and affinity cookies.
    key: u64,
    /// Down by active health check (written by the checker only).
    check_down: std::sync::atomic::AtomicBool,
    /// Consecutive check results in the current direction (failures while up, successes while down).
    check_streak: AtomicU32,
}

fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn hash_of(v: impl Hash) -> u64 {
    // SipHash with fixed keys: stable across processes, so every replica agrees on hashes and cookies.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl Endpoint {
    fn new(index: usize, addr: SocketAddr) -> Self {
        Self {
            addr,
            index,
            // Built from an `IpAddr` (no IPv6 zone), so it always parses.
            authority: http::uri::Authority::try_from(addr.to_string()).expect("a socket address is an authority"),
            conns: pool::Conns::default(),
            idle: Arc::default(),
            in_flight: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            key: hash_of(addr),
            check_down: std::sync::atomic::AtomicBool::new(false),
            check_streak: AtomicU32::new(0),
        }
    }

    /// Requests in flight here: from sending until the response body ended (or failed, or was dropped).
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Down by active health check.
    pub fn is_check_down(&self) -> bool {
        self.check_down.load(Ordering::Relaxed)
    }

    /// Whether new requests may go here (not ejected, not down by active check).
    pub fn is_usable(&self) -> bool {
        !self.is_ejected() && !self.is_check_down()
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > clock_ms()
    }

    /// The affinity cookie value naming this endpoint.
    pub fn cookie_value(&self) -> String {
        format!("{:016x}", self.key)
    }
}

/// A Service port's endpoints with balancing and health state. Invariant: the endpoint list never changes after
/// construction; a new endpoint set makes a new `Backend` (routing reuses the old one when nothing changed, so
/// state survives table swaps).
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`.
    pub id: String,
    pub endpoints: Box<[Endpoint]>,
    pub balance: Balance,
    pub health: HealthPolicy,
    /// Active health check (`None`: passive health only).
    pub check: Option<ActiveCheck>,
    next: AtomicUsize,
    ejected: AtomicU32,
    ejections: AtomicU64,
    /// Requests that failed upstream, by `metrics::UpstreamErrorKind` (connect, timeout, reset, tls, invalid).
    errors: [AtomicU64; 5],
    /// Requests and retries over the retry budget's window.
    pub retry_budget: budget::RetryBudget,
}

/// What a pick needs to know about the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext<'a> {
    pub client: Option<IpAddr>,
    /// The affinity cookie's value, if the request carried one.
    pub cookie: Option<&'a str>,
}

impl Backend {
    pub fn new(id: String, endpoints: Vec<SocketAddr>) -> Self {
        Self::with_policy(id, endpoints, Balance::default(), HealthPolicy::default())
    }

    pub fn with_policy(id: String, endpoints: Vec<SocketAddr>, balance: Balance, health: HealthPolicy) -> Self {
        Self::with_check(id, endpoints, balance, health, None)
    }

    pub fn with_check(
        id: String,
        endpoints: Vec<SocketAddr>,
        balance: Balance,
        health: HealthPolicy,
        check: Option<ActiveCheck>,
    ) -> Self {
        Self {
            id,
            endpoints: endpoints
                .into_iter()
                .enumerate()
                .map(|(i, a)| Endpoint::new(i, a))
                .collect(),
            balance,
            health,
            check,
            next: AtomicUsize::new(0),
            ejected: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
            errors: Default::default(),
            retry_budget: budget::RetryBudget::default(),
        }
    }

    /// Whether this backend serves exactly these endpoints with these policies (then it can be reused).
    pub fn same_as(
        &self,
        endpoints: &[SocketAddr],
        balance: Balance,
        health: HealthPolicy,
        check: Option<&ActiveCheck>,
    ) -> bool {
        self.balance == balance
            && self.health == health
            && self.check.as_ref() == check
            && self.endpoints.len() == endpoints.len()
            && self.endpoints.iter().zip(endpoints).all(|(e, a)| e.addr == *a)
    }

    /// Whether an affinity cookie's value names one of this backend's endpoints (parsed, not rendered per
    /// endpoint: no allocation).
    pub fn names_endpoint(&self, cookie: &str) -> bool {
        cookie.len() == 16
            && u64::from_str_radix(cookie, 16).is_ok_and(|key| self.endpoints.iter().any(|e| e.key == key))
    }

    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.endpoints.iter().map(|e| e.addr)
    }

    /// Picks an endpoint; `None` when there are none. Ejected endpoints are skipped unless all are ejected.
    pub fn pick(&self, cx: &PickContext<'_>) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let usable = |e: &Endpoint| e.is_usable();
        match self.balance {
            Balance::Cookie => {
                if let Some(c) = cx.cookie {
                    if let Some(e) = self.endpoints.iter().find(|e| usable(e) && e.cookie_value() == c) {
                        return Some(e);
                    }
                }
                self.round_robin(usable)
            }
            Balance::RoundRobin => self.round_robin(usable),
            Balance::LeastRequest => {
                if n == 1 {
                    return self.endpoints.first();
                }
                let r = self.next.fetch_add(1, Ordering::Relaxed);
                // Two distinct pseudo-random candidates from a cheap mix of the counter.
                let a = (hash_of(r) as usize) % n;
                let b = (a + 1 + (hash_of(r ^ 0x9e37) as usize) % (n - 1)) % n;
                let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                match (usable(ea), usable(eb)) {
                    (true, true) => Some(
                        if eb.in_flight.load(Ordering::Relaxed) < ea.in_flight.load(Ordering::Relaxed) {
                            eb
                        } else {
                            ea
                        },
                    ),
                    (true, false) => Some(ea),
                    (false, true) => Some(eb),
                    (false, false) => self.round_robin(usable),
                }
            }
            Balance::SourceHash => {
                let Some(ip) = cx.client else {
                    return self.round_robin(usable);
                };
                let k = hash_of(crate::cidr::canonical(ip));
                let best = |only_usable: bool| {
                    self.endpoints
                        .iter()
                        .filter(|e| !only_usable || usable(e))
                        .max_by_key(|e| hash_of((k, e.key)))
                };
                best(true).or_else(|| best(false))
            }
        }
    }

    fn round_robin(&self, usable: impl Fn(&Endpoint) -> bool) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.endpoints[(start + i) % n])
            .find(|e| usable(e))
            .or_else(|| self.endpoints.get(start % n))
    }

    /// Another endpoint than `after`, for a retry; `None` when there is no other usable one.
    pub fn pick_other(&self, after: SocketAddr) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        let pos = self.endpoints.iter().position(|e| e.addr == after)?;
        (1..n).map(|i| &self.endpoints[(pos + i) % n]).find(|e| e.is_usable())
    }

    /// Counts a request that failed upstream (`kind`: a `metrics::UpstreamErrorKind` as index).
    pub fn count_error(&self, kind: usize) {
        if let Some(c) = self.errors.get(kind) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests that failed upstream by kind, as counted by [`Backend::count_error`].
    pub fn errors_total(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.errors[i].load(Ordering::Relaxed))
    }

    /// Ejections of this backend's endpoints so far.
    pub fn ejections_total(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Marks a request as started on `e` (one of this backend's endpoints); the guard ends it. The guard owns a
    /// reference to the backend, so it can travel with the response body.
    pub fn start(self: &Arc<Self>, e: &Endpoint) -> InFlight {
        debug_assert!(std::ptr::eq(&self.endpoints[e.index], e));
        e.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            backend: self.clone(),
            index: e.index,
        }
    }

    /// Records an outcome for passive health: `ok` false for a connect failure or a 5xx.
    pub fn record(&self, e: &Endpoint, ok: bool) {
        if ok {
            e.consecutive_failures.store(0, Ordering::Relaxed);
            if e.ejected_until.load(Ordering::Relaxed) != 0 && !e.is_ejected() {
                // Back from ejection and serving: forget the ejection.
                if e.ejected_until.swap(0, Ordering::Relaxed) != 0 {
                    self.ejected.fetch_sub(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let failures = e.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.health.consecutive_failures || e.is_ejected() {
            return;
        }
        let n = self.endpoints.len() as u32;
        // Never all of several endpoints; a backend's only endpoint can be ejected (it still gets the requests,
        // as `pick` falls back to ejected endpoints, but the ejection shows in metrics and the dashboard).
        let cap = if n == 1 {
            1
        } else {
            (n * self.health.max_ejected_percent / 100).max(1).min(n - 1)
        };
        let was = e.ejected_until.load(Ordering::Relaxed) != 0;
        if !was && self.ejected.load(Ordering::Relaxed) >= cap {
            return;
        }
        let k = e.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let span = self
            .health
            .base_ejection
            .saturating_mul(1 << k)
            .min(self.health.max_ejection);
        e.ejected_until
            .store(clock_ms() + span.as_millis() as u64, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        e.consecutive_failures.store(0, Ordering::Relaxed);
        if !was {
            self.ejected.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(backend = %self.id, endpoint = %e.addr, for_ms = span.as_millis() as u64, "endpoint ejected after consecutive failures");
    }
}

/// An in-flight request on an endpoint (for least-request balancing); ends when dropped.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
    index: usize,
}

impl InFlight {
    pub fn endpoint(&self) -> &Endpoint {
        &self.backend.endpoints[self.index]
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint().in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u16) -> Vec<SocketAddr> {
        (1..=n).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect()
    }

    #[test]
    fn round_robin_visits_every_endpoint_evenly() {
        let b = Backend::new("ns/s:80".into(), eps(3));
        let mut counts = [0; 3];
        for _ in 0..300 {
            let e = b.pick(&PickContext::default()).unwrap();
            counts[usize::from(e.addr.port()) - 1] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        assert_eq!(b.pick_other(eps(3)[2]).unwrap().addr, eps(3)[0]);
        assert!(Backend::new("x".into(), vec![]).pick(&PickContext::default()).is_none());
        assert!(Backend::new("x".into(), eps(1)).pick_other(eps(1)[0]).is_none());
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let b = Arc::new(Backend::with_policy(
            "x".into(),
            eps(4),
            Balance::LeastRequest,
            HealthPolicy::default(),
        ));
        // Endpoint 1 is busy with many requests: it should almost never be picked.
        let busy = &b.endpoints[0];
        let guards: Vec<_> = (0..50).map(|_| b.start(busy)).collect();
        let picks_busy = (0..400)
            .filter(|_| b.pick(&PickContext::default()).unwrap().addr == busy.addr)
            .count();
        assert_eq!(picks_busy, 0, "P2C never prefers the busier of two");
        assert_eq!(busy.in_flight(), 50);
        drop(guards);
        assert_eq!(busy.in_flight(), 0);
        let mut counts = [0; 4];
        for _ in 0..400 {
            counts[usize::from(b.pick(&PickContext::default()).unwrap().addr.port()) - 1] += 1;
        }
        assert!(
            counts.iter().all(|c| *c > 40),
            "idle endpoints share the load: {counts:?}"
        );
    }

    #[test]
    fn source_hash_is_stable_and_moves_few_clients() {
        let mk = |n| Backend::with_policy("x".into(), eps(n), Balance::SourceHash, HealthPolicy::default());
        let (five, six) = (mk(5), mk(6));
        let clients: Vec<IpAddr> = (0..1000u32)
            .map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
            .collect();
        let at = |b: &Backend, ip: IpAddr| {
            b.pick(&PickContext {
                client: Some(ip),
                cookie: None,
            })
            .unwrap()
            .addr
        };
        assert!(clients.iter().all(|c| at(&five, *c) == at(&five, *c)));
        let moved = clients.iter().filter(|c| at(&five, **c) != at(&six, **c)).count();
        // Ideal is 1/6 of the clients; a modulo scheme would move about 5/6.
        assert!(moved < 250, "{moved} of 1000 clients moved when one endpoint was added");
        assert!(clients.iter().filter(|c| at(&six, **c) == eps(6)[5]).count() > 100);
    }

    #[test]
    fn cookie_affinity_sticks() {
        let b = Backend::with_policy("x".into(), eps(3), Balance::Cookie, HealthPolicy::default());
        let target = &b.endpoints[2];
        let cookie = target.cookie_value();
        for _ in 0..10 {
            let e = b
                .pick(&PickContext {
                    client: None,
                    cookie: Some(&cookie),
                })
                .unwrap();
            assert_eq!(e.addr, target.addr);
        }
        // An unknown cookie falls back to round robin.
        assert!(b
            .pick(&PickContext {
                client: None,
                cookie: Some("nope")
            })
            .is_some());
    }

    #[test]
    fn consecutive_failures_eject_with_a_cap() {
        let health = HealthPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(60),
            max_ejection: Duration::from_secs(600),
            max_ejected_percent: 50,
        };
        let b = Backend::with_policy("x".into(), eps(4), Balance::RoundRobin, health);
        for _ in 0..3 {
            b.record(&b.endpoints[0], false);
        }
        assert!(b.endpoints[0].is_ejected());
        for _ in 0..300 {
            assert_ne!(b.pick(&PickContext::default()).unwrap().addr, eps(4)[0]);
        }
        // A success in between resets the count.
        b.record(&b.endpoints[1], false);
        b.record(&b.endpoints[1], false);
        b.record(&b.endpoints[1], true);
        b.record(&b.endpoints[1], false);
        assert!(!b.endpoints[1].is_ejected());
        // The cap: at most half of four endpoints ejected at once.
        for i in 1..4 {
            for _ in 0..3 {
                b.record(&b.endpoints[i], false);
            }
        }
        let ejected = b.endpoints.iter().filter(|e| e.is_ejected()).count();
        assert_eq!(ejected, 2);
    }
}
