//! The configuration of the traffic-policy filters (`Filter::DenySources`, `Filter::Cors`, `Filter::RateLimit`),
//! made from an Ingress's annotations (`annotations::{deny, cors, limit}`). Their behaviour is in
//! `proxy/traffic.rs`; the rate limit's per-client state lives in the route's kept slot (`snapshot::Kept`).

use std::time::Duration;

use http::{HeaderValue, StatusCode};

use super::annotations::{cors, limit};
use crate::cidr::Cidr;

/// Clients in these networks get 403 (checked before any allowlist: deny wins).
#[derive(Debug)]
pub struct DenySources(pub Box<[Cidr]>);

/// CORS: preflights answered by the gateway, allowed origins' responses given the CORS headers. One filter for
/// both sources: an Ingress's `enable-cors` annotations ([`Cors::new`]) and Gateway API's `CORS` filter
/// (`model::gateway::cors`), which differ in their defaults and in how wildcards answer.
#[derive(Debug)]
pub struct Cors {
    /// `None`: any origin.
    pub origins: Option<Box<[cors::OriginPattern]>>,
    /// `Access-Control-Allow-Methods` on preflights (`None`: not sent).
    pub methods: Option<CorsValue>,
    /// `Access-Control-Allow-Headers` on preflights (`None`: not sent).
    pub headers: Option<CorsValue>,
    /// `Access-Control-Expose-Headers` on responses (`Echo`: the names of the response's own headers).
    pub expose: Option<CorsValue>,
    pub credentials: bool,
    pub max_age: HeaderValue,
    /// `Access-Control-Allow-Origin` is always the request's origin, never `*` (Gateway API).
    pub echo_origin: bool,
    /// The answer to a preflight: 204 (ingress-nginx) or 200 (Gateway API, as its conformance tests expect).
    pub preflight_status: StatusCode,
}

/// A CORS response header's value: fixed, or taken from the request (`*` where a wildcard must not be sent).
#[derive(Debug, Clone, PartialEq)]
pub enum CorsValue {
    Fixed(HeaderValue),
    /// Preflights: the request's `Access-Control-Request-Method` (or `-Headers`); responses: their header names.
    Echo,
}

impl Cors {
    pub fn new(c: &cors::Cors) -> Option<Self> {
        Some(Self {
            origins: c.origins.as_ref().map(|l| l.clone().into_boxed_slice()),
            methods: Some(CorsValue::Fixed(HeaderValue::from_str(&c.methods).ok()?)),
            headers: Some(CorsValue::Fixed(HeaderValue::from_str(&c.headers).ok()?)),
            expose: match &c.expose {
                Some(e) => Some(CorsValue::Fixed(HeaderValue::from_str(e).ok()?)),
                None => None,
            },
            credentials: c.credentials,
            max_age: HeaderValue::from(c.max_age),
            echo_origin: false,
            preflight_status: StatusCode::NO_CONTENT,
        })
    }

    /// Whether an `Origin` value is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            None => true,
            Some(list) => list.iter().any(|p| p.matches(origin)),
        }
    }
}

/// Rate and concurrency limits per client address (state: `snapshot::Kept`).
#[derive(Debug)]
pub struct RateLimit {
    /// Per second: the interval between requests and the burst above the rate.
    pub per_second: Option<(Duration, u32)>,
    /// Per minute: the same.
    pub per_minute: Option<(Duration, u32)>,
    /// Requests in flight at once.
    pub connections: Option<u32>,
    /// Clients exempt from every limit.
    pub exempt: Box<[Cidr]>,
    /// The answer over a limit.
    pub status: StatusCode,
}

impl RateLimit {
    pub fn new(l: &limit::Limits) -> Self {
        let rate = |n: u32, per: Duration| (per / n.max(1), n.saturating_mul(l.burst_multiplier));
        Self {
            per_second: l.rps.map(|n| rate(n, Duration::from_secs(1))),
            per_minute: l.rpm.map(|n| rate(n, Duration::from_secs(60))),
            connections: l.connections,
            exempt: l.allowlist.clone().into_boxed_slice(),
            status: StatusCode::from_u16(l.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}
