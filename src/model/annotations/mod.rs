//! Typed Ingress annotations. Each is parsed and checked here; a bad value disables the whole Ingress with a
//! reason (never a half-applied policy). Portico's own names live under `portico.dev/`; ingress-nginx's names
//! are accepted for the same features where they mean the same thing.
//!
//! Before any value is read, [`check_keys`] classifies every key under the two prefixes with [`catalog`]:
//! an unsupported or unknown one disables the Ingress, a listed no-op is a warning.
//!
//! One file per feature group, each with its keys, its typed value and its parser, and one runtime home:
//!
//! | group | file | runtime home |
//! |---|---|---|
//! | HTTPS redirects, HSTS | `https.rs` | route filters `HttpsRedirect`, `Hsts` |
//! | source allowlist | `access.rs` | route filter `AllowSources` |
//! | header edits, upstream Host | `headers.rs` | route filters `RequestHeaders`, `ResponseHeaders`; send policy |
//! | request body size and timeout | `body.rs` | route filter `BodyLimit`; `upstream::policy` (timeout) |
//! | rewrites, regex paths, redirects | `rewrite.rs` | route matching; filters `Rewrite`, `Redirect`, `AppRoot` |
//! | backend protocol, TLS, timeout, checks | `backend.rs` | `upstream::policy` (TLS pool); send policy; `upstream::Backend` (checks) |
//! | balancing, affinity cookie | `affinity.rs` | `upstream::Backend` (balance); send policy (cookie) |
//! | connect timeout, retries | `retry.rs` | send policy |
//! | canaries | `canary.rs` | the primary route's weighted split (`model::canary`) |
//! | server aliases, www redirect | `alias.rs` | extra hosts (`model::alias`) |
//! | client certificates (mTLS) | `client_cert.rs` | per-host TLS settings (`certs::build`); route filter `ClientCert` |
//! | forward auth | `auth.rs` | route filter `ForwardAuth` (deferred step, `proxy::auth`); cache in the kept slot |
//! | basic auth | `basic_auth.rs` | route filter `BasicAuth` (deferred step, `proxy::auth`); cache in the kept slot |
//! | custom error pages | `errors.rs` | route filter `ErrorPages` (respond phase, `proxy::errors`); the error Service is a weight-0 backend |
//! | TLS passthrough | `passthrough.rs` | a layer-4 route on the set's TLS port (`model::l4`, `l4::conn`) |
//!
//! Adding a group: its file with a type and `from_meta`, one field in [`IngressPolicy`] and one line in
//! [`IngressPolicy::from_meta`], its keys in the catalog as implemented and in the catalog test below.

pub mod access;
pub mod affinity;
pub mod alias;
pub mod auth;
pub mod backend;
pub mod basic_auth;
pub mod body;
pub mod canary;
pub mod catalog;
pub mod client_cert;
pub mod cors;
pub mod deny;
pub mod errors;
pub mod headers;
pub mod https;
pub mod limit;
pub mod passthrough;
pub mod retry;
pub mod rewrite;

pub use affinity::Balance;
pub use backend::{ActiveCheck, BackendProtocol, UpstreamTls};

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

/// `"false"` keeps ACME away from the Ingress's `spec.tls` (read by the ACME planner; checked here).
pub const ACME: &str = "portico.dev/acme";

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

/// What an Ingress's annotations ask for, by feature group (see the table above).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressPolicy {
    pub https: https::Https,
    pub access: access::Access,
    pub headers: headers::HeaderEdits,
    pub body: body::RequestBody,
    /// Regex paths, the rewrite target, app-root and redirects.
    pub rewrite: rewrite::Rewrites,
    pub backend: backend::BackendPolicy,
    pub balancing: affinity::Balancing,
    /// Connect timeout, retries to the next endpoint, service-upstream.
    pub retry: retry::Retry,
    /// The selection rules of a canary Ingress (`None`: not a canary).
    pub canary: Option<canary::Canary>,
    /// Other names of the Ingress's host (`server-alias`, `from-to-www-redirect`).
    pub alias: alias::Aliases,
    /// Client certificates (`None`: not asked for).
    pub client_cert: Option<client_cert::ClientCert>,
    /// Forward auth (`auth-url` and its companions).
    pub forward_auth: Option<crate::model::auth::ForwardAuth>,
    /// Basic auth (`auth-type: basic`); its users are read from the Secret by translation.
    pub basic_auth: Option<basic_auth::BasicAuth>,
    /// CORS (`enable-cors` and `cors-*`; `None`: off).
    pub cors: Option<cors::Cors>,
    /// Rate and connection limits per client (`limit-*`; `None`: none).
    pub limit: Option<limit::Limits>,
    /// Clients in these networks get 403, whatever the allowlist says.
    pub deny_source_ranges: Option<Vec<crate::cidr::Cidr>>,
    /// Custom error pages (`custom-http-errors`, `default-backend`; `None`: none of its own).
    pub error_pages: Option<errors::ErrorPages>,
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
        self.https.describe_into(out);
        self.headers.describe_into(out);
        self.balancing.describe_into(out);
        self.backend.describe_into(out);
        self.body.describe_into(out);
        self.access.describe_into(out);
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
        if let Some(c) = &self.client_cert {
            c.describe_into(out);
        }
        if let Some(f) = &self.forward_auth {
            let _ = write!(out, " [forward-auth {}]", f.url);
        }
        if let Some(b) = &self.basic_auth {
            let _ = write!(out, " [basic-auth {} users]", b.users.0.len());
        }
        if let Some(e) = &self.error_pages {
            e.describe_into(out);
        }
    }

    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        if let Some(v) = get(meta, ACME) {
            if !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false") {
                return Err(format!("annotation {ACME}: {v:?} is not \"true\" or \"false\""));
            }
        }
        Ok(Self {
            https: https::Https::from_meta(meta)?,
            access: access::Access::from_meta(meta)?,
            headers: headers::HeaderEdits::from_meta(meta)?,
            body: body::RequestBody::from_meta(meta)?,
            rewrite: rewrite::Rewrites::from_meta(meta)?,
            backend: backend::BackendPolicy::from_meta(meta)?,
            balancing: affinity::Balancing::from_meta(meta)?,
            retry: retry::Retry::from_meta(meta)?,
            canary: canary::Canary::from_meta(meta)?,
            alias: alias::Aliases::from_meta(meta)?,
            client_cert: client_cert::ClientCert::from_meta(meta)?,
            forward_auth: auth::parse(meta)?,
            basic_auth: basic_auth::BasicAuth::parse(meta)?,
            cors: cors::Cors::from_meta(meta)?,
            limit: limit::Limits::from_meta(meta)?,
            deny_source_ranges: deny::from_meta(meta)?,
            error_pages: errors::from_meta(meta)?,
        })
    }

    /// Whether the policy reads Secrets other than TLS certificates (so a Secret's change re-translates it).
    pub fn reads_secrets(&self) -> bool {
        self.backend.tls.is_some() || self.client_cert.is_some() || self.basic_auth.is_some()
    }

    /// Reads the Secrets the annotations name, in the Ingress's `namespace`, from the same snapshot (pure).
    pub fn resolve_secrets(
        &mut self,
        namespace: &str,
        secrets: &[k8s_openapi::api::core::v1::Secret],
    ) -> Result<(), String> {
        if let Some(tls) = &mut self.backend.tls {
            tls.resolve_ca(namespace, secrets)?;
        }
        if let Some(c) = &mut self.client_cert {
            c.resolve(namespace, secrets)?;
        }
        if let Some(b) = &mut self.basic_auth {
            b.resolve(namespace, secrets)?;
        }
        Ok(())
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
            &https::SSL_REDIRECT[..],
            &https::FORCE_SSL_REDIRECT,
            &[
                https::HSTS_MAX_AGE,
                https::HSTS_INCLUDE_SUBDOMAINS,
                https::HSTS_PRELOAD,
                headers::PASS_HOST,
                ACME,
            ],
            &headers::UPSTREAM_HOST,
            &headers::FORWARDED_PREFIX,
            &[
                headers::REQUEST_HEADERS_SET,
                headers::REQUEST_HEADERS_ADD,
                headers::REQUEST_HEADERS_REMOVE,
                headers::RESPONSE_HEADERS_SET,
                headers::RESPONSE_HEADERS_REMOVE,
            ],
            &access::ALLOW_SOURCE_RANGES,
            &[
                affinity::LOAD_BALANCE,
                affinity::NGINX_LOAD_BALANCE,
                affinity::NGINX_UPSTREAM_HASH_BY,
                affinity::NGINX_AFFINITY,
            ],
            &affinity::AFFINITY_COOKIE_NAME,
            &body::BODY_SIZE,
            &backend::UPSTREAM_TIMEOUT,
            &[
                backend::HEALTH_CHECK,
                backend::HEALTH_CHECK_PATH,
                backend::HEALTH_CHECK_INTERVAL,
                backend::HEALTH_CHECK_TIMEOUT,
                backend::HEALTH_CHECK_FALL,
                backend::HEALTH_CHECK_RISE,
            ],
            &backend::BACKEND_PROTOCOL,
            &body::REQUEST_BODY_TIMEOUT,
            &backend::PROXY_SSL_VERIFY,
            &backend::PROXY_SSL_SECRET,
            &backend::PROXY_SSL_NAME,
            &rewrite::USE_REGEX,
            &rewrite::REWRITE_TARGET,
            &rewrite::APP_ROOT,
            &rewrite::PERMANENT_REDIRECT,
            &rewrite::PERMANENT_REDIRECT_CODE,
            &rewrite::TEMPORAL_REDIRECT,
            &rewrite::TEMPORAL_REDIRECT_CODE,
            &alias::SERVER_ALIAS,
            &alias::FROM_TO_WWW,
            &client_cert::SECRET,
            &client_cert::VERIFY_CLIENT,
            &client_cert::VERIFY_DEPTH,
            &client_cert::PASS_TO_UPSTREAM,
            &client_cert::ERROR_PAGE,
            &auth::URL,
            &auth::METHOD,
            &auth::RESPONSE_HEADERS,
            &auth::REQUEST_REDIRECT,
            &auth::SIGNIN,
            &auth::SIGNIN_REDIRECT_PARAM,
            &auth::CACHE_KEY,
            &auth::CACHE_DURATION,
            &[auth::TIMEOUT],
            &basic_auth::TYPE,
            &basic_auth::SECRET,
            &basic_auth::SECRET_TYPE,
            &basic_auth::REALM,
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
            &passthrough::SSL_PASSTHROUGH,
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
            &errors::CUSTOM_HTTP_ERRORS,
            &errors::DEFAULT_BACKEND,
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
            ("nginx.ingress.kubernetes.io/auth-keepalive", "10"),
            ("nginx.ingress.kubernetes.io/limit-rate", "5"),
            ("portico.dev/ssl-redirct", "false"),
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
        ]);
        let e = check_keys(&m).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("annotation nginx.ingress.kubernetes.io/auth-keepalive is not supported"));
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
        assert!(!p.https.redirect && p.https.force_redirect);
        assert_eq!(p.https.hsts.as_deref(), Some("max-age=31536000; includeSubDomains"));
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
        assert_eq!(p.headers.upstream_host.as_deref(), Some("jenkins.internal:8080"));
        assert_eq!(
            p.headers.request_set,
            [
                ("x-team".to_string(), "blue".to_string()),
                ("x-env".into(), "prod".into())
            ]
        );
        assert_eq!(p.headers.request_remove, ["x-forwarded-host", "x-forwarded-proto"]);
        assert_eq!(p.headers.response_remove, ["server"]);
        assert_eq!(p.access.allow_source_ranges.unwrap().len(), 2);
        assert_eq!(p.headers.forwarded_prefix.as_deref(), Some("/jenkins"));
    }

    #[test]
    fn balancing_limits_and_timeouts() {
        let p = IngressPolicy::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/upstream-hash-by", "$remote_addr"),
            ("nginx.ingress.kubernetes.io/proxy-body-size", "8m"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "120"),
        ]))
        .unwrap();
        assert_eq!(p.balancing.balance, Balance::SourceHash);
        assert_eq!(p.body.max_bytes, Some(8 << 20));
        assert_eq!(p.backend.timeout, Some(std::time::Duration::from_secs(120)));
        let p = IngressPolicy::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "route"),
            ("portico.dev/proxy-body-size", "0"),
        ]))
        .unwrap();
        assert_eq!(
            (p.balancing.balance, p.balancing.cookie_name.as_str(), p.body.max_bytes),
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
        assert_eq!(p.backend.protocol, BackendProtocol::Grpcs);
        assert_eq!(p.body.timeout, Some(std::time::Duration::from_secs(15)));
        let tls = p.backend.tls.unwrap();
        assert!(tls.verify);
        assert_eq!(tls.ca_secret.as_deref(), Some("ca"));
        assert_eq!(tls.server_name.as_deref(), Some("grpc.internal"));
        // HTTPS without verification needs nothing else.
        let p = IngressPolicy::from_meta(&meta(&[("portico.dev/backend-protocol", "https")])).unwrap();
        assert_eq!(p.backend.protocol, BackendProtocol::Https);
        assert!(!p.backend.tls.unwrap().verify);
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
