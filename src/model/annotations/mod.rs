//! Typed Ingress annotations. Each is parsed and checked here; a bad value disables the whole Ingress with a
//! reason (never a half-applied policy). Portico's own names live under `portico.dev/`; ingress-nginx's names
//! are accepted for the same features where they mean the same thing.
//!
//! Before any value is read, [`check_keys`] classifies every key under the two prefixes with [`catalog`]:
//! an unsupported or unknown one disables the Ingress, a listed no-op is a warning.

pub mod affinity;
pub mod alias;
pub mod canary;
pub mod catalog;
pub mod cors;
pub mod deny;
pub mod limit;
pub mod retry;
pub mod rewrite;

use super::ingress::IngressMeta;

/// What the catalog says of an Ingress's annotation keys: `Err` with one reason per unsupported or unknown key
/// (the Ingress is not served), else the warnings for the no-ops it carries.
pub fn check_keys(meta: &IngressMeta) -> Result<Vec<String>, Vec<String>> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for f in catalog::classify(meta.annotations.as_deref()) {
        match f.support() {
            catalog::Support::Implemented => {}
            catalog::Support::NoOp => warnings.push(f.message()),
            catalog::Support::Unsupported => errors.push(f.message()),
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(errors)
    }
}

pub const SSL_REDIRECT: [&str; 2] = ["portico.dev/ssl-redirect", "nginx.ingress.kubernetes.io/ssl-redirect"];
pub const FORCE_SSL_REDIRECT: [&str; 2] = [
    "portico.dev/force-ssl-redirect",
    "nginx.ingress.kubernetes.io/force-ssl-redirect",
];
pub const HSTS_MAX_AGE: &str = "portico.dev/hsts-max-age";
pub const HSTS_INCLUDE_SUBDOMAINS: &str = "portico.dev/hsts-include-subdomains";
pub const HSTS_PRELOAD: &str = "portico.dev/hsts-preload";
pub const UPSTREAM_HOST: [&str; 2] = [
    "portico.dev/upstream-host",
    "nginx.ingress.kubernetes.io/upstream-vhost",
];
pub const PASS_HOST: &str = "portico.dev/pass-host";
pub const FORWARDED_PREFIX: [&str; 2] = [
    "portico.dev/x-forwarded-prefix",
    "nginx.ingress.kubernetes.io/x-forwarded-prefix",
];
pub const REQUEST_HEADERS_SET: &str = "portico.dev/request-headers-set";
pub const REQUEST_HEADERS_ADD: &str = "portico.dev/request-headers-add";
pub const REQUEST_HEADERS_REMOVE: &str = "portico.dev/request-headers-remove";
pub const RESPONSE_HEADERS_SET: &str = "portico.dev/response-headers-set";
pub const RESPONSE_HEADERS_REMOVE: &str = "portico.dev/response-headers-remove";
pub const ALLOW_SOURCE_RANGES: [&str; 3] = [
    "portico.dev/allow-source-ranges",
    "nginx.ingress.kubernetes.io/whitelist-source-range",
    "nginx.ingress.kubernetes.io/allowlist-source-range",
];

pub const LOAD_BALANCE: &str = "portico.dev/load-balance";
pub const NGINX_LOAD_BALANCE: &str = "nginx.ingress.kubernetes.io/load-balance";
pub const NGINX_UPSTREAM_HASH_BY: &str = "nginx.ingress.kubernetes.io/upstream-hash-by";
pub const NGINX_AFFINITY: &str = "nginx.ingress.kubernetes.io/affinity";
pub const AFFINITY_COOKIE_NAME: [&str; 2] = [
    "portico.dev/affinity-cookie-name",
    "nginx.ingress.kubernetes.io/session-cookie-name",
];
pub const BODY_SIZE: [&str; 2] = [
    "portico.dev/proxy-body-size",
    "nginx.ingress.kubernetes.io/proxy-body-size",
];
pub const UPSTREAM_TIMEOUT: [&str; 2] = [
    "portico.dev/upstream-timeout",
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
];
pub const DEFAULT_AFFINITY_COOKIE: &str = "PORTICO_AFFINITY";
/// `"false"` keeps ACME away from the Ingress's `spec.tls` (read by the ACME planner; checked here).
pub const ACME: &str = "portico.dev/acme";
pub const HEALTH_CHECK: &str = "portico.dev/health-check";
pub const HEALTH_CHECK_PATH: &str = "portico.dev/health-check-path";
pub const HEALTH_CHECK_INTERVAL: &str = "portico.dev/health-check-interval";
pub const HEALTH_CHECK_TIMEOUT: &str = "portico.dev/health-check-timeout";
pub const HEALTH_CHECK_FALL: &str = "portico.dev/health-check-fall";
pub const HEALTH_CHECK_RISE: &str = "portico.dev/health-check-rise";
pub const BACKEND_PROTOCOL: [&str; 2] = [
    "portico.dev/backend-protocol",
    "nginx.ingress.kubernetes.io/backend-protocol",
];
pub const REQUEST_BODY_TIMEOUT: [&str; 2] = [
    "portico.dev/request-body-timeout",
    "nginx.ingress.kubernetes.io/proxy-send-timeout",
];
pub const PROXY_SSL_VERIFY: [&str; 2] = [
    "portico.dev/proxy-ssl-verify",
    "nginx.ingress.kubernetes.io/proxy-ssl-verify",
];
pub const PROXY_SSL_SECRET: [&str; 2] = [
    "portico.dev/proxy-ssl-secret",
    "nginx.ingress.kubernetes.io/proxy-ssl-secret",
];
pub const PROXY_SSL_NAME: [&str; 2] = [
    "portico.dev/proxy-ssl-name",
    "nginx.ingress.kubernetes.io/proxy-ssl-name",
];

/// Headers an annotation may not set, add or remove: framing, hop-by-hop, and Host (use upstream-host).
const PROTECTED: [&str; 10] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    ":authority",
];

/// What an Ingress's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressPolicy {
    /// Redirect plain HTTP to HTTPS for hosts with TLS (default true).
    pub ssl_redirect: bool,
    /// Redirect plain HTTP to HTTPS even for hosts without TLS here (TLS terminated elsewhere).
    pub force_ssl_redirect: bool,
    /// The `Strict-Transport-Security` value sent on HTTPS responses, if enabled.
    pub hsts: Option<String>,
    /// The Host header sent upstream instead of the client's.
    pub upstream_host: Option<String>,
    /// Send the client's Host upstream (default); `false` sends the endpoint's address instead.
    pub pass_host: bool,
    /// `X-Forwarded-Prefix` sent upstream.
    pub forwarded_prefix: Option<String>,
    /// Request headers set (replacing), added (appending) and removed, applied after the gateway's own.
    pub request_set: Vec<(String, String)>,
    pub request_add: Vec<(String, String)>,
    pub request_remove: Vec<String>,
    /// Response headers set and removed.
    pub response_set: Vec<(String, String)>,
    pub response_remove: Vec<String>,
    /// Only clients in these networks are served (403 otherwise).
    pub allow_source_ranges: Option<Vec<crate::cidr::Cidr>>,
    /// How the backends of this Ingress pick an endpoint.
    pub balance: Balance,
    /// Cookie name for `Balance::Cookie`.
    pub affinity_cookie: String,
    /// Largest request body accepted (413 above it); `None`: no limit.
    pub max_body_bytes: Option<u64>,
    /// Time to the upstream's response headers and between two reads of its body, replacing the configured
    /// defaults (ingress-nginx's `proxy-read-timeout` means both).
    pub upstream_timeout: Option<std::time::Duration>,
    /// Longest pause between two pieces of the client's request body, replacing the listener set's default.
    pub request_body_timeout: Option<std::time::Duration>,
    /// TLS to the backends (with `BackendProtocol::Https` and `Grpcs` only).
    pub upstream_tls: Option<UpstreamTls>,
    /// The protocol spoken to the backends.
    pub backend_protocol: BackendProtocol,
    /// Active health checks of this Ingress's backends (off when `None`).
    pub active_check: Option<ActiveCheck>,
    /// Regex paths, the rewrite target, app-root and redirects.
    pub rewrite: rewrite::Rewrites,
    /// Connect timeout, retries to the next endpoint, service-upstream.
    pub retry: retry::Retry,
    /// The affinity cookie's attributes (with `Balance::Cookie`).
    pub cookie: affinity::CookieAttributes,
    /// The selection rules of a canary Ingress (`None`: not a canary).
    pub canary: Option<canary::Canary>,
    /// Other names of the Ingress's host (`server-alias`, `from-to-www-redirect`).
    pub alias: alias::Aliases,
    /// CORS (`enable-cors` and `cors-*`; `None`: off).
    pub cors: Option<cors::Cors>,
    /// Rate and connection limits per client (`limit-*`; `None`: none).
    pub limit: Option<limit::Limits>,
    /// Clients in these networks get 403, whatever the allowlist says.
    pub deny_source_ranges: Option<Vec<crate::cidr::Cidr>>,
}

/// An active health check, as HAProxy's `check inter 5s fall 3 rise 2` with `option httpchk GET /path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActiveCheck {
    /// `Some(path)`: HTTP GET, 2xx/3xx is up; `None`: a TCP connect.
    pub http_path: Option<String>,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub fall: u32,
    pub rise: u32,
}

/// What the gateway speaks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendProtocol {
    #[default]
    Http1,
    /// HTTP/2 without TLS (prior knowledge): `H2C` and `GRPC`.
    H2c,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`): `HTTPS`.
    Https,
    /// HTTP/2 over TLS (ALPN `h2`): `GRPCS`.
    Grpcs,
}

/// How the gateway talks TLS to an Ingress's backends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UpstreamTls {
    /// The backend's certificate must chain to the CA in `ca_secret` (default off, as ingress-nginx).
    pub verify: bool,
    /// The Secret (in the Ingress's namespace) whose `ca.crt` holds the CA, by name.
    pub ca_secret: Option<String>,
    /// The CA bundle (PEM) read from `ca_secret` by translation; set whenever `verify` is.
    pub ca_pem: Option<Vec<u8>>,
    /// The name sent as SNI and verified; `None`: the upstream Host (`upstream-host`) if set, else the endpoint's
    /// address (no SNI).
    pub server_name: Option<String>,
}

/// How a backend picks an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Least outstanding requests between two random endpoints (power of two choices).
    LeastRequest,
    /// Rendezvous hashing on the client address (HAProxy's `balance source`).
    SourceHash,
    /// A cookie names the endpoint; set on the first response.
    Cookie,
}

impl Default for IngressPolicy {
    fn default() -> Self {
        Self {
            ssl_redirect: true,
            force_ssl_redirect: false,
            hsts: None,
            upstream_host: None,
            pass_host: true,
            forwarded_prefix: None,
            request_set: Vec::new(),
            request_add: Vec::new(),
            request_remove: Vec::new(),
            response_set: Vec::new(),
            response_remove: Vec::new(),
            allow_source_ranges: None,
            balance: Balance::RoundRobin,
            affinity_cookie: DEFAULT_AFFINITY_COOKIE.to_string(),
            max_body_bytes: None,
            upstream_timeout: None,
            request_body_timeout: None,
            upstream_tls: None,
            backend_protocol: BackendProtocol::Http1,
            active_check: None,
            rewrite: rewrite::Rewrites::default(),
            retry: retry::Retry::default(),
            alias: alias::Aliases::default(),
            cookie: affinity::CookieAttributes::default(),
            canary: None,
            cors: None,
            limit: None,
            deny_source_ranges: None,
        }
    }
}

/// A timeout annotation: bare seconds (ingress-nginx's form) or a duration like `500ms` or `2m`.
fn timeout_any(meta: &IngressMeta, keys: &[&str]) -> Result<Option<std::time::Duration>, String> {
    let Some(v) = string_any(meta, keys)? else {
        return Ok(None);
    };
    v.parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
        .or_else(|| crate::units::parse_duration(v))
        .filter(|d| !d.is_zero())
        .map(Some)
        .ok_or_else(|| format!("annotation {}: {v:?} is not a duration like 30 or 30s", keys[0]))
}

fn parse_backend_protocol(meta: &IngressMeta) -> Result<BackendProtocol, String> {
    Ok(
        match string_any(meta, &BACKEND_PROTOCOL)?
            .map(|v| v.to_ascii_uppercase())
            .as_deref()
        {
            None | Some("HTTP") => BackendProtocol::Http1,
            Some("H2C" | "GRPC") => BackendProtocol::H2c,
            Some("HTTPS") => BackendProtocol::Https,
            Some("GRPCS") => BackendProtocol::Grpcs,
            Some(v) => {
                return Err(format!(
                    "annotation {}: {v:?} is not HTTP, HTTPS, H2C, GRPC or GRPCS",
                    BACKEND_PROTOCOL[0]
                ))
            }
        },
    )
}

/// The `proxy-ssl-*` annotations. The CA Secret must be in the Ingress's own namespace (`name`, or
/// `namespace/name` naming that namespace); its contents are read by translation.
fn parse_upstream_tls(meta: &IngressMeta, protocol: BackendProtocol) -> Result<Option<UpstreamTls>, String> {
    let verify = match string_any(meta, &PROXY_SSL_VERIFY)? {
        None | Some("off" | "false") => false,
        Some("on" | "true") => true,
        Some(v) => {
            return Err(format!(
                "annotation {}: {v:?} is not \"on\" or \"off\"",
                PROXY_SSL_VERIFY[0]
            ))
        }
    };
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let ca_secret = match string_any(meta, &PROXY_SSL_SECRET)? {
        None => None,
        Some(v) => {
            let name = match v.split_once('/') {
                None => v,
                Some((n, name)) if n == ns => name,
                Some((n, _)) => {
                    return Err(format!(
                        "annotation {}: Secret {v} is in namespace {n}; only Secrets in the Ingress's namespace {ns} can be used",
                        PROXY_SSL_SECRET[0]
                    ))
                }
            };
            if name.is_empty() || name.contains('/') {
                return Err(format!(
                    "annotation {}: {v:?} is not a Secret name",
                    PROXY_SSL_SECRET[0]
                ));
            }
            Some(name.to_string())
        }
    };
    let server_name = match string_any(meta, &PROXY_SSL_NAME)? {
        None => None,
        Some(v) => {
            if rustls_pki_types::ServerName::try_from(v).is_err() {
                return Err(format!("annotation {}: {v:?} is not a server name", PROXY_SSL_NAME[0]));
            }
            Some(v.to_string())
        }
    };
    if !matches!(protocol, BackendProtocol::Https | BackendProtocol::Grpcs) {
        return match [PROXY_SSL_VERIFY, PROXY_SSL_SECRET, PROXY_SSL_NAME]
            .iter()
            .flatten()
            .find(|k| get(meta, k).is_some())
        {
            Some(k) => Err(format!("annotation {k} needs {}: HTTPS or GRPCS", BACKEND_PROTOCOL[0])),
            None => Ok(None),
        };
    }
    if verify && ca_secret.is_none() {
        return Err(format!(
            "annotation {} is on but {} names no CA Secret",
            PROXY_SSL_VERIFY[0], PROXY_SSL_SECRET[0]
        ));
    }
    Ok(Some(UpstreamTls {
        verify,
        ca_secret,
        ca_pem: None,
        server_name,
    }))
}

impl UpstreamTls {
    /// Reads the CA bundle from the Ingress's `ca_secret` among `secrets` (pure; translation calls it). Without
    /// verification there is nothing to read.
    pub fn resolve_ca(
        &mut self,
        namespace: &str,
        secrets: &[k8s_openapi::api::core::v1::Secret],
    ) -> Result<(), String> {
        let Some(name) = self.ca_secret.as_deref().filter(|_| self.verify) else {
            return Ok(());
        };
        let secret = secrets
            .iter()
            .find(|s| {
                s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                    && s.metadata.name.as_deref() == Some(name)
            })
            .ok_or_else(|| {
                format!(
                    "CA Secret {namespace}/{name} (annotation {}) not found",
                    PROXY_SSL_SECRET[0]
                )
            })?;
        let pem = secret
            .string_data
            .as_ref()
            .and_then(|m| m.get("ca.crt"))
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| secret.data.as_ref().and_then(|m| m.get("ca.crt")).map(|b| b.0.clone()))
            .ok_or_else(|| format!("CA Secret {namespace}/{name} has no ca.crt"))?;
        crate::pem::parse_ca_bundle(&pem).map_err(|e| format!("CA Secret {namespace}/{name}: {e}"))?;
        self.ca_pem = Some(pem);
        Ok(())
    }
}

fn duration_annotation(
    meta: &IngressMeta,
    key: &str,
    default: std::time::Duration,
) -> Result<std::time::Duration, String> {
    match get(meta, key) {
        None => Ok(default),
        Some(v) => crate::units::parse_duration(v)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("annotation {key}: {v:?} is not a duration like 5s or 500ms")),
    }
}

fn count_annotation(meta: &IngressMeta, key: &str, default: u32) -> Result<u32, String> {
    match get(meta, key) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| format!("annotation {key}: {v:?} is not a count from 1 to 100")),
    }
}

fn parse_active_check(meta: &IngressMeta) -> Result<Option<ActiveCheck>, String> {
    let kind = get(meta, HEALTH_CHECK);
    let http_path = match kind {
        None => {
            for k in [
                HEALTH_CHECK_PATH,
                HEALTH_CHECK_INTERVAL,
                HEALTH_CHECK_TIMEOUT,
                HEALTH_CHECK_FALL,
                HEALTH_CHECK_RISE,
            ] {
                if get(meta, k).is_some() {
                    return Err(format!("annotation {k} needs {HEALTH_CHECK}: http or tcp"));
                }
            }
            return Ok(None);
        }
        Some("http") => {
            let path = get(meta, HEALTH_CHECK_PATH).unwrap_or("/");
            crate::normalize::validate_ingress_path(path)
                .map_err(|e| format!("annotation {HEALTH_CHECK_PATH}: {e}"))?;
            Some(path.to_string())
        }
        Some("tcp") => None,
        Some(v) => return Err(format!("annotation {HEALTH_CHECK}: {v:?} is not http or tcp")),
    };
    Ok(Some(ActiveCheck {
        http_path,
        interval: duration_annotation(meta, HEALTH_CHECK_INTERVAL, std::time::Duration::from_secs(5))?,
        timeout: duration_annotation(meta, HEALTH_CHECK_TIMEOUT, std::time::Duration::from_secs(2))?,
        fall: count_annotation(meta, HEALTH_CHECK_FALL, 3)?,
        rise: count_annotation(meta, HEALTH_CHECK_RISE, 2)?,
    }))
}

/// `8m`, `512k`, `1g`, `1024` (bytes); `0` means no limit.
fn parse_size(key: &str, v: &str) -> Result<Option<u64>, String> {
    let lower = v.to_ascii_lowercase();
    let (num, mult) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1u64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        _ => (lower.as_str(), 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("annotation {key}: {v:?} is not a size like 8m, 512k or 1g"))?;
    Ok((n > 0).then(|| n.saturating_mul(mult)))
}

fn parse_balance(meta: &IngressMeta) -> Result<Balance, String> {
    let mut choices: Vec<(Balance, String)> = Vec::new();
    if let Some(v) = get(meta, LOAD_BALANCE) {
        let b = match v {
            "round-robin" => Balance::RoundRobin,
            "least-request" => Balance::LeastRequest,
            "source-hash" => Balance::SourceHash,
            "cookie" => Balance::Cookie,
            _ => {
                return Err(format!(
                    "annotation {LOAD_BALANCE}: {v:?} is not round-robin, least-request, source-hash or cookie"
                ))
            }
        };
        choices.push((b, LOAD_BALANCE.into()));
    }
    if let Some(v) = get(meta, NGINX_LOAD_BALANCE) {
        let b = match v {
            "round_robin" => Balance::RoundRobin,
            "ewma" | "least_conn" => Balance::LeastRequest,
            _ => {
                return Err(format!(
                    "annotation {NGINX_LOAD_BALANCE}: {v:?} is not round_robin, ewma or least_conn"
                ))
            }
        };
        choices.push((b, NGINX_LOAD_BALANCE.into()));
    }
    if let Some(v) = get(meta, NGINX_UPSTREAM_HASH_BY) {
        if v != "$remote_addr" && v != "$binary_remote_addr" {
            return Err(format!(
                "annotation {NGINX_UPSTREAM_HASH_BY}: only $remote_addr is supported (hashing on the client address)"
            ));
        }
        choices.push((Balance::SourceHash, NGINX_UPSTREAM_HASH_BY.into()));
    }
    if let Some(v) = get(meta, NGINX_AFFINITY) {
        if v != "cookie" {
            return Err(format!("annotation {NGINX_AFFINITY}: only \"cookie\" is supported"));
        }
        choices.push((Balance::Cookie, NGINX_AFFINITY.into()));
    }
    match choices.as_slice() {
        [] => Ok(Balance::RoundRobin),
        [(b, _)] => Ok(*b),
        [(a, ka), rest @ ..] => match rest.iter().find(|(b, _)| b != a) {
            None => Ok(*a),
            Some((_, kb)) => Err(format!("annotations {ka} and {kb} ask for different balancing")),
        },
    }
}

/// The first of several equivalent string annotations that is set; two set to different values is an error.
fn string_any<'a>(meta: &'a IngressMeta, keys: &[&str]) -> Result<Option<&'a str>, String> {
    let mut found: Option<(&str, &str)> = None;
    for k in keys {
        if let Some(v) = get(meta, k) {
            match found {
                Some((prev, pk)) if prev != v => return Err(format!("annotations {pk} and {k} disagree")),
                _ => found = Some((v, k)),
            }
        }
    }
    Ok(found.map(|f| f.0))
}

fn header_name(key: &str, name: &str) -> Result<String, String> {
    let lower = name.trim().to_ascii_lowercase();
    if http::HeaderName::from_bytes(lower.as_bytes()).is_err() || lower.is_empty() {
        return Err(format!("annotation {key}: {name:?} is not a header name"));
    }
    if PROTECTED.contains(&lower.as_str()) {
        return Err(format!(
            "annotation {key}: header {lower} cannot be changed by an annotation"
        ));
    }
    Ok(lower)
}

fn header_value(key: &str, value: &str) -> Result<String, String> {
    let v = value.trim();
    if http::HeaderValue::from_str(v).is_err() {
        return Err(format!("annotation {key}: {v:?} is not a valid header value"));
    }
    Ok(v.to_string())
}

/// `Name: value` per line.
fn header_lines(meta: &IngressMeta, key: &str) -> Result<Vec<(String, String)>, String> {
    let Some(text) = get(meta, key) else {
        return Ok(Vec::new());
    };
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .ok_or_else(|| format!("annotation {key}: line {l:?} is not \"Name: value\""))?;
            Ok((header_name(key, n)?, header_value(key, v)?))
        })
        .collect()
}

/// A comma-separated list of header names.
fn header_list(meta: &IngressMeta, key: &str) -> Result<Vec<String>, String> {
    let Some(text) = get(meta, key) else {
        return Ok(Vec::new());
    };
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| header_name(key, n))
        .collect()
}

fn get<'a>(meta: &'a IngressMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(|s| s.trim())
}

fn boolean(meta: &IngressMeta, key: &str) -> Result<Option<bool>, String> {
    match get(meta, key) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(v) => Err(format!("annotation {key}: {v:?} is not \"true\" or \"false\"")),
    }
}

/// The first of several equivalent annotations that is set; two set to different values is an error.
fn boolean_any(meta: &IngressMeta, keys: &[&str]) -> Result<Option<bool>, String> {
    let mut found: Option<(bool, &str)> = None;
    for k in keys {
        if let Some(v) = boolean(meta, k)? {
            match found {
                Some((prev, pk)) if prev != v => {
                    return Err(format!("annotations {pk} and {k} disagree"));
                }
                _ => found = Some((v, k)),
            }
        }
    }
    Ok(found.map(|f| f.0))
}

impl IngressPolicy {
    /// Appends ` [..]` markers for what differs from the defaults (for `portico check` and fixtures).
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(h) = &self.hsts {
            let _ = write!(out, " [hsts {h}]");
        }
        if let Some(h) = &self.upstream_host {
            let _ = write!(out, " [upstream-host {h}]");
        }
        if !self.pass_host {
            out.push_str(" [no pass-host]");
        }
        let edits = self.request_set.len()
            + self.request_add.len()
            + self.request_remove.len()
            + self.response_set.len()
            + self.response_remove.len()
            + usize::from(self.forwarded_prefix.is_some());
        if edits > 0 {
            let _ = write!(out, " [{edits} header edits]");
        }
        if self.balance != Balance::RoundRobin {
            let _ = write!(out, " [balance {:?}]", self.balance);
        }
        if let Some(c) = &self.active_check {
            let _ = write!(out, " [check {}]", c.http_path.as_deref().unwrap_or("tcp"));
        }
        if self.backend_protocol != BackendProtocol::Http1 {
            let _ = write!(out, " [backend {:?}]", self.backend_protocol);
        }
        if let Some(b) = self.max_body_bytes {
            let _ = write!(out, " [max-body {b}]");
        }
        if let Some(t) = self.upstream_timeout {
            let _ = write!(out, " [timeout {}s]", t.as_secs());
        }
        if let Some(t) = self.request_body_timeout {
            let _ = write!(out, " [body-timeout {}ms]", t.as_millis());
        }
        if let Some(t) = &self.upstream_tls {
            let _ = write!(out, " [tls verify={}", t.verify);
            if let Some(n) = &t.server_name {
                let _ = write!(out, " name={n}");
            }
            out.push(']');
        }
        if let Some(a) = &self.allow_source_ranges {
            let list: Vec<String> = a.iter().map(|c| c.to_string()).collect();
            let _ = write!(out, " [allow {}]", list.join(","));
        }
        if let Some(d) = &self.deny_source_ranges {
            let list: Vec<String> = d.iter().map(|c| c.to_string()).collect();
            let _ = write!(out, " [deny {}]", list.join(","));
        }
        if let Some(c) = &self.cors {
            c.describe_into(out);
        }
        if let Some(l) = &self.limit {
            l.describe_into(out);
        }
        self.rewrite.describe_into(out);
        self.alias.describe_into(out);
        self.retry.describe_into(out);
        if self.cookie != affinity::CookieAttributes::default() {
            let _ = write!(out, " [cookie{}]", self.cookie.suffix());
        }
    }

    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        let d = Self::default();
        let ssl_redirect = boolean_any(meta, &SSL_REDIRECT)?.unwrap_or(d.ssl_redirect);
        let force_ssl_redirect = boolean_any(meta, &FORCE_SSL_REDIRECT)?.unwrap_or(d.force_ssl_redirect);
        let include_sub = boolean(meta, HSTS_INCLUDE_SUBDOMAINS)?;
        let preload = boolean(meta, HSTS_PRELOAD)?;
        let hsts = match get(meta, HSTS_MAX_AGE) {
            None => {
                if include_sub.is_some() || preload.is_some() {
                    return Err(format!("annotation {HSTS_MAX_AGE} is required to enable HSTS"));
                }
                None
            }
            Some(v) => {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("annotation {HSTS_MAX_AGE}: {v:?} is not a number of seconds"))?;
                let mut h = format!("max-age={secs}");
                if include_sub == Some(true) {
                    h.push_str("; includeSubDomains");
                }
                if preload == Some(true) {
                    h.push_str("; preload");
                }
                Some(h)
            }
        };
        let upstream_host = match string_any(meta, &UPSTREAM_HOST)? {
            None => None,
            Some(h) => {
                if crate::normalize::normalize_host(h).is_err() {
                    return Err(format!(
                        "annotation {}: {h:?} is not a host name (with an optional port)",
                        UPSTREAM_HOST[0]
                    ));
                }
                Some(h.to_string())
            }
        };
        let forwarded_prefix = match string_any(meta, &FORWARDED_PREFIX)? {
            None => None,
            Some(p) => Some(header_value(FORWARDED_PREFIX[0], p)?),
        };
        let allow_source_ranges = match string_any(meta, &ALLOW_SOURCE_RANGES)? {
            None => None,
            Some(list) => {
                let cidrs = crate::cidr::Cidr::parse_list(list)
                    .map_err(|e| format!("annotation {}: {e}", ALLOW_SOURCE_RANGES[0]))?;
                if cidrs.is_empty() {
                    return Err(format!("annotation {}: the list is empty", ALLOW_SOURCE_RANGES[0]));
                }
                Some(cidrs)
            }
        };
        let backend_protocol = parse_backend_protocol(meta)?;
        let balance = parse_balance(meta)?;
        if let Some(v) = get(meta, ACME) {
            if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                return Err(format!("annotation {ACME}: {v:?} is not \"true\" or \"false\""));
            }
        }
        Ok(Self {
            ssl_redirect,
            force_ssl_redirect,
            hsts,
            upstream_host,
            pass_host: boolean(meta, PASS_HOST)?.unwrap_or(true),
            forwarded_prefix,
            request_set: header_lines(meta, REQUEST_HEADERS_SET)?,
            request_add: header_lines(meta, REQUEST_HEADERS_ADD)?,
            request_remove: header_list(meta, REQUEST_HEADERS_REMOVE)?,
            response_set: header_lines(meta, RESPONSE_HEADERS_SET)?,
            response_remove: header_list(meta, RESPONSE_HEADERS_REMOVE)?,
            allow_source_ranges,
            balance,
            affinity_cookie: match string_any(meta, &AFFINITY_COOKIE_NAME)? {
                None => DEFAULT_AFFINITY_COOKIE.to_string(),
                Some(n) if canary::is_cookie_name(n) => n.to_string(),
                Some(n) => {
                    return Err(format!(
                        "annotation {}: {n:?} is not a cookie name",
                        AFFINITY_COOKIE_NAME[0]
                    ))
                }
            },
            max_body_bytes: match string_any(meta, &BODY_SIZE)? {
                None => None,
                Some(v) => parse_size(BODY_SIZE[0], v)?,
            },
            active_check: parse_active_check(meta)?,
            backend_protocol,
            upstream_tls: parse_upstream_tls(meta, backend_protocol)?,
            upstream_timeout: timeout_any(meta, &UPSTREAM_TIMEOUT)?,
            request_body_timeout: timeout_any(meta, &REQUEST_BODY_TIMEOUT)?,
            rewrite: rewrite::Rewrites::from_meta(meta)?,
            retry: retry::Retry::from_meta(meta)?,
            cookie: affinity::CookieAttributes::from_meta(meta, balance == Balance::Cookie)?,
            canary: canary::Canary::from_meta(meta)?,
            alias: alias::Aliases::from_meta(meta)?,
            cors: cors::Cors::from_meta(meta)?,
            limit: limit::Limits::from_meta(meta)?,
            deny_source_ranges: deny::from_meta(meta)?,
        })
    }
}

/// Metadata holding these annotations (the annotation groups' tests).
#[cfg(test)]
pub(crate) fn test_meta(pairs: &[(&str, &str)]) -> IngressMeta {
    IngressMeta {
        annotations: Some(Box::new(
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        )),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_meta as meta;

    /// Every key a parser here reads, and nothing else, is `implemented` in the catalog.
    #[test]
    fn catalog_lists_exactly_the_parsed_keys() {
        let mut parsed: Vec<&str> = [
            &SSL_REDIRECT[..],
            &FORCE_SSL_REDIRECT,
            &[HSTS_MAX_AGE, HSTS_INCLUDE_SUBDOMAINS, HSTS_PRELOAD, PASS_HOST, ACME],
            &UPSTREAM_HOST,
            &FORWARDED_PREFIX,
            &[
                REQUEST_HEADERS_SET,
                REQUEST_HEADERS_ADD,
                REQUEST_HEADERS_REMOVE,
                RESPONSE_HEADERS_SET,
                RESPONSE_HEADERS_REMOVE,
            ],
            &ALLOW_SOURCE_RANGES,
            &[LOAD_BALANCE, NGINX_LOAD_BALANCE, NGINX_UPSTREAM_HASH_BY, NGINX_AFFINITY],
            &AFFINITY_COOKIE_NAME,
            &BODY_SIZE,
            &UPSTREAM_TIMEOUT,
            &[
                HEALTH_CHECK,
                HEALTH_CHECK_PATH,
                HEALTH_CHECK_INTERVAL,
                HEALTH_CHECK_TIMEOUT,
                HEALTH_CHECK_FALL,
                HEALTH_CHECK_RISE,
            ],
            &BACKEND_PROTOCOL,
            &REQUEST_BODY_TIMEOUT,
            &PROXY_SSL_VERIFY,
            &PROXY_SSL_SECRET,
            &PROXY_SSL_NAME,
            &rewrite::USE_REGEX,
            &rewrite::REWRITE_TARGET,
            &rewrite::APP_ROOT,
            &rewrite::PERMANENT_REDIRECT,
            &rewrite::PERMANENT_REDIRECT_CODE,
            &rewrite::TEMPORAL_REDIRECT,
            &rewrite::TEMPORAL_REDIRECT_CODE,
            &alias::SERVER_ALIAS,
            &alias::FROM_TO_WWW,
            &retry::CONNECT_TIMEOUT,
            &retry::NEXT_UPSTREAM,
            &retry::NEXT_UPSTREAM_TRIES,
            &retry::NEXT_UPSTREAM_TIMEOUT,
            &retry::SERVICE_UPSTREAM,
            &affinity::PATH,
            &affinity::DOMAIN,
            &affinity::SAMESITE,
            &affinity::SECURE,
            &affinity::MAX_AGE,
            &affinity::EXPIRES,
            &affinity::CHANGE_ON_FAILURE,
            &canary::CANARY,
            &canary::BY_HEADER,
            &canary::BY_HEADER_VALUE,
            &canary::BY_HEADER_PATTERN,
            &canary::BY_COOKIE,
            &canary::WEIGHT,
            &canary::WEIGHT_TOTAL,
            &canary::AFFINITY_BEHAVIOR,
            &cors::ENABLE,
            &cors::ALLOW_ORIGIN,
            &cors::ALLOW_METHODS,
            &cors::ALLOW_HEADERS,
            &cors::ALLOW_CREDENTIALS,
            &cors::EXPOSE_HEADERS,
            &cors::MAX_AGE,
            &limit::RPS,
            &limit::RPM,
            &limit::CONNECTIONS,
            &limit::BURST_MULTIPLIER,
            &limit::ALLOWLIST,
            &[limit::STATUS],
            &deny::DENY_SOURCE_RANGES,
        ]
        .concat();
        parsed.sort_unstable();
        let implemented: Vec<&str> = catalog::TABLE
            .iter()
            .filter(|e| e.support == catalog::Support::Implemented)
            .map(|e| e.key)
            .collect();
        assert_eq!(parsed, implemented);
        assert_eq!(ACME, crate::acme::plan::OPT_OUT_ANNOTATION);
    }

    #[test]
    fn unknown_and_unsupported_keys_fail_closed() {
        assert_eq!(check_keys(&IngressMeta::default()), Ok(vec![]));
        let m = meta(&[
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
        ]);
        let w = check_keys(&m).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("proxy-buffering has no effect"), "{w:?}");
        let m = meta(&[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/limit-rate", "5"),
            ("portico.dev/ssl-redirct", "false"),
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
        ]);
        let e = check_keys(&m).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("annotation nginx.ingress.kubernetes.io/auth-type is not supported"));
        assert!(e[2].contains("did you mean portico.dev/ssl-redirect"));
        let e = IngressPolicy::from_meta(&meta(&[("portico.dev/acme", "flase")])).unwrap_err();
        assert!(e.contains("portico.dev/acme"), "{e}");
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(
            IngressPolicy::from_meta(&IngressMeta::default()).unwrap(),
            IngressPolicy::default()
        );
        let p = IngressPolicy::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("portico.dev/force-ssl-redirect", "true"),
            ("portico.dev/hsts-max-age", "31536000"),
            ("portico.dev/hsts-include-subdomains", "true"),
        ]))
        .unwrap();
        assert!(!p.ssl_redirect && p.force_ssl_redirect);
        assert_eq!(p.hsts.as_deref(), Some("max-age=31536000; includeSubDomains"));
    }

    #[test]
    fn rewrites_and_allowlists() {
        let p = IngressPolicy::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/upstream-vhost", "jenkins.internal:8080"),
            ("portico.dev/request-headers-set", "X-Team: blue\nX-Env: prod"),
            (
                "portico.dev/request-headers-remove",
                "X-Forwarded-Host, x-forwarded-proto",
            ),
            ("portico.dev/response-headers-set", "X-Frame-Options: DENY"),
            ("portico.dev/response-headers-remove", "Server"),
            (
                "nginx.ingress.kubernetes.io/whitelist-source-range",
                "10.0.0.0/8, 192.168.1.7",
            ),
            ("nginx.ingress.kubernetes.io/x-forwarded-prefix", "/jenkins"),
        ]))
        .unwrap();
        assert_eq!(p.upstream_host.as_deref(), Some("jenkins.internal:8080"));
        assert_eq!(
            p.request_set,
            [
                ("x-team".to_string(), "blue".to_string()),
                ("x-env".into(), "prod".into())
            ]
        );
        assert_eq!(p.request_remove, ["x-forwarded-host", "x-forwarded-proto"]);
        assert_eq!(p.response_remove, ["server"]);
        assert_eq!(p.allow_source_ranges.unwrap().len(), 2);
        assert_eq!(p.forwarded_prefix.as_deref(), Some("/jenkins"));
    }

    #[test]
    fn balancing_limits_and_timeouts() {
        let p = IngressPolicy::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/upstream-hash-by", "$remote_addr"),
            ("nginx.ingress.kubernetes.io/proxy-body-size", "8m"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "120"),
        ]))
        .unwrap();
        assert_eq!(p.balance, Balance::SourceHash);
        assert_eq!(p.max_body_bytes, Some(8 << 20));
        assert_eq!(p.upstream_timeout, Some(std::time::Duration::from_secs(120)));
        let p = IngressPolicy::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "route"),
            ("portico.dev/proxy-body-size", "0"),
        ]))
        .unwrap();
        assert_eq!(
            (p.balance, p.affinity_cookie.as_str(), p.max_body_bytes),
            (Balance::Cookie, "route", None)
        );
        for (pairs, needle) in [
            (vec![("portico.dev/load-balance", "random")], "is not round-robin"),
            (
                vec![("nginx.ingress.kubernetes.io/upstream-hash-by", "$request_uri")],
                "only $remote_addr",
            ),
            (
                vec![
                    ("portico.dev/load-balance", "cookie"),
                    ("nginx.ingress.kubernetes.io/load-balance", "ewma"),
                ],
                "different balancing",
            ),
            (vec![("portico.dev/proxy-body-size", "8 MB")], "not a size"),
            (vec![("portico.dev/upstream-timeout", "soon")], "not a duration"),
            (
                vec![("portico.dev/health-check-path", "/readyz")],
                "needs portico.dev/health-check",
            ),
            (vec![("portico.dev/health-check", "icmp")], "not http or tcp"),
            (
                vec![
                    ("portico.dev/health-check", "tcp"),
                    ("portico.dev/health-check-fall", "0"),
                ],
                "count from 1",
            ),
        ] {
            let e = IngressPolicy::from_meta(&meta(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn upstream_tls_and_body_timeouts() {
        let mut m = meta(&[
            ("nginx.ingress.kubernetes.io/backend-protocol", "GRPCS"),
            ("nginx.ingress.kubernetes.io/proxy-ssl-verify", "on"),
            ("nginx.ingress.kubernetes.io/proxy-ssl-secret", "team/ca"),
            ("nginx.ingress.kubernetes.io/proxy-ssl-name", "grpc.internal"),
            ("nginx.ingress.kubernetes.io/proxy-send-timeout", "15"),
        ]);
        m.namespace = Some("team".into());
        let p = IngressPolicy::from_meta(&m).unwrap();
        assert_eq!(p.backend_protocol, BackendProtocol::Grpcs);
        assert_eq!(p.request_body_timeout, Some(std::time::Duration::from_secs(15)));
        let tls = p.upstream_tls.unwrap();
        assert!(tls.verify);
        assert_eq!(tls.ca_secret.as_deref(), Some("ca"));
        assert_eq!(tls.server_name.as_deref(), Some("grpc.internal"));
        // HTTPS without verification needs nothing else.
        let p = IngressPolicy::from_meta(&meta(&[("portico.dev/backend-protocol", "https")])).unwrap();
        assert_eq!(p.backend_protocol, BackendProtocol::Https);
        assert!(!p.upstream_tls.unwrap().verify);
        for (pairs, needle) in [
            (
                vec![
                    ("portico.dev/backend-protocol", "HTTPS"),
                    ("portico.dev/proxy-ssl-secret", "other/ca"),
                ],
                "only Secrets in the Ingress's namespace default",
            ),
            (
                vec![
                    ("portico.dev/backend-protocol", "HTTPS"),
                    ("portico.dev/proxy-ssl-verify", "on"),
                ],
                "names no CA Secret",
            ),
            (
                vec![("portico.dev/proxy-ssl-verify", "on")],
                "needs portico.dev/backend-protocol",
            ),
            (
                vec![
                    ("portico.dev/backend-protocol", "HTTPS"),
                    ("portico.dev/proxy-ssl-verify", "maybe"),
                ],
                "not \"on\" or \"off\"",
            ),
            (vec![("portico.dev/backend-protocol", "QUIC")], "is not HTTP, HTTPS"),
            (vec![("portico.dev/request-body-timeout", "later")], "not a duration"),
        ] {
            let e = IngressPolicy::from_meta(&meta(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn bad_values_are_reasons() {
        for (pairs, needle) in [
            (vec![("portico.dev/ssl-redirect", "yes")], "not \"true\""),
            (
                vec![
                    ("portico.dev/ssl-redirect", "true"),
                    ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
                ],
                "disagree",
            ),
            (vec![("portico.dev/hsts-max-age", "1y")], "seconds"),
            (vec![("portico.dev/hsts-preload", "true")], "required"),
            (
                vec![("portico.dev/request-headers-set", "Host: evil")],
                "cannot be changed",
            ),
            (vec![("portico.dev/request-headers-set", "X-A")], "Name: value"),
            (
                vec![("portico.dev/request-headers-set", "Bad Name: 1")],
                "not a header name",
            ),
            (
                vec![("portico.dev/request-headers-remove", "transfer-encoding")],
                "cannot be changed",
            ),
            (vec![("portico.dev/allow-source-ranges", "10.0.0.0/40")], "not an IP"),
            (vec![("portico.dev/upstream-host", "a b")], "not a host"),
            (
                vec![
                    ("portico.dev/upstream-host", "a"),
                    ("nginx.ingress.kubernetes.io/upstream-vhost", "b"),
                ],
                "disagree",
            ),
        ] {
            let e = IngressPolicy::from_meta(&meta(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
