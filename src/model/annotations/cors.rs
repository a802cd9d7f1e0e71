//! CORS, by ingress-nginx's names and defaults: `enable-cors` turns it on; `cors-allow-origin`,
//! `cors-allow-methods`, `cors-allow-headers`, `cors-allow-credentials`, `cors-expose-headers` and `cors-max-age`
//! shape it. Runtime home: the route's `Filter::Cors` (`proxy/traffic.rs`).
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the gateway with 204
//!   and never reaches the backend; the allow headers are only sent when the origin is allowed.
//! - Any other request with an allowed `Origin` gets `Access-Control-Allow-Origin` (the origin itself, or `*` when
//!   the list is `*` and credentials are off), `Vary: Origin`, `-Allow-Credentials` and `-Expose-Headers` added to
//!   the backend's response.
//! - `cors-allow-origin` is `*` or a comma list of `scheme://host[:port]`; a host may start with `*.` for exactly
//!   one label (`https://*.example.com` allows `https://a.example.com`, not `https://example.com` nor
//!   `https://a.b.example.com`), as ingress-nginx.
//!
//! Any of the other keys without `enable-cors: "true"` is an error (it would otherwise do nothing).

use super::{boolean_any, string_any, IngressMeta};

pub const ENABLE: [&str; 2] = ["portico.dev/enable-cors", "nginx.ingress.kubernetes.io/enable-cors"];
pub const ALLOW_ORIGIN: [&str; 2] = [
    "portico.dev/cors-allow-origin",
    "nginx.ingress.kubernetes.io/cors-allow-origin",
];
pub const ALLOW_METHODS: [&str; 2] = [
    "portico.dev/cors-allow-methods",
    "nginx.ingress.kubernetes.io/cors-allow-methods",
];
pub const ALLOW_HEADERS: [&str; 2] = [
    "portico.dev/cors-allow-headers",
    "nginx.ingress.kubernetes.io/cors-allow-headers",
];
pub const ALLOW_CREDENTIALS: [&str; 2] = [
    "portico.dev/cors-allow-credentials",
    "nginx.ingress.kubernetes.io/cors-allow-credentials",
];
pub const EXPOSE_HEADERS: [&str; 2] = [
    "portico.dev/cors-expose-headers",
    "nginx.ingress.kubernetes.io/cors-expose-headers",
];
pub const MAX_AGE: [&str; 2] = ["portico.dev/cors-max-age", "nginx.ingress.kubernetes.io/cors-max-age"];

/// ingress-nginx's defaults.
pub const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
pub const DEFAULT_HEADERS: &str =
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
pub const DEFAULT_MAX_AGE: u64 = 1_728_000;

/// What an Ingress's CORS annotations ask for (`IngressPolicy::cors`, `None` without `enable-cors`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cors {
    /// `None`: any origin (`*`).
    pub origins: Option<Vec<OriginPattern>>,
    /// The `Access-Control-Allow-Methods` value, normalised (`GET, POST`).
    pub methods: String,
    /// The `Access-Control-Allow-Headers` value, normalised.
    pub headers: String,
    pub credentials: bool,
    /// The `Access-Control-Expose-Headers` value, when set.
    pub expose: Option<String>,
    /// Seconds a preflight may be cached.
    pub max_age: u64,
}

/// One allowed origin: `scheme://host[:port]`, the host possibly `*.rest` (one label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginPattern {
    scheme: String,
    /// Lowercase; without the `*.` of a wildcard; empty for Gateway API's `scheme://*` (any host).
    host: String,
    wildcard: bool,
    port: Option<u16>,
    rules: OriginRules,
}

/// Whose reading of a pattern applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OriginRules {
    /// ingress-nginx: `*.` stands for exactly one label; the port is compared as written.
    IngressNginx,
    /// Gateway API's `CORS` filter: `*.` stands for one or more labels, `scheme://*` for any host, and a missing
    /// port is the scheme's default (`https://a.example` is `https://a.example:443`).
    GatewayApi,
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

/// An origin split into scheme, host and port (lowercased scheme and host), or `None` if it is not one.
fn split_origin(s: &str) -> Option<(&str, &str, Option<u16>)> {
    let (scheme, rest) = s.split_once("://")?;
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (h, Some(p.parse::<u16>().ok().filter(|p| *p > 0)?))
        }
        None => (rest, None),
    };
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    Some((scheme, host, port))
}

fn is_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

impl OriginPattern {
    /// `https://example.com`, `http://example.com:8080`, `https://*.example.com`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an origin like https://example.com, https://*.example.com:8443 or *");
        let (scheme, host, port) = split_origin(s).ok_or_else(bad)?;
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if !host.split('.').all(is_label) {
            return Err(bad());
        }
        Ok(Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
            rules: OriginRules::IngressNginx,
        })
    }

    /// An entry of a Gateway API `CORS` filter's `allowOrigins` other than `*`: `http` or `https`, then a host,
    /// `*.` and a host (one or more labels), or `*` (any host), and an optional port.
    pub fn parse_gateway(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not an origin like https://example.com, https://*.example.com:8443, https://* or *");
        let (scheme, host, port) = split_origin(s).ok_or_else(bad)?;
        if !matches!(scheme, "http" | "https") {
            return Err(bad());
        }
        let (wildcard, host) = match host {
            "*" => (true, ""),
            h => match h.strip_prefix("*.") {
                Some(rest) => (true, rest),
                None => (false, h),
            },
        };
        if !host.is_empty() && !host.split('.').all(is_label) {
            return Err(bad());
        }
        Ok(Self {
            scheme: scheme.to_string(),
            host: host.to_ascii_lowercase(),
            wildcard,
            port: port.filter(|p| Some(*p) != default_port(scheme)),
            rules: OriginRules::GatewayApi,
        })
    }

    /// Whether the request's `Origin` value is this origin (scheme and host compared without case).
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, host, port)) = split_origin(origin) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        match self.rules {
            OriginRules::IngressNginx => {
                if port != self.port {
                    return false;
                }
                if !self.wildcard {
                    return host.eq_ignore_ascii_case(&self.host);
                }
                // Exactly one label before the pattern's host.
                match host.split_once('.') {
                    Some((label, rest)) => is_label(label) && rest.eq_ignore_ascii_case(&self.host),
                    None => false,
                }
            }
            OriginRules::GatewayApi => {
                // `self.port` is `None` for the scheme's default port.
                if port.filter(|p| Some(*p) != default_port(scheme)) != self.port {
                    return false;
                }
                if !self.wildcard {
                    return host.eq_ignore_ascii_case(&self.host);
                }
                if self.host.is_empty() {
                    return host.split('.').all(is_label);
                }
                // One or more labels before the pattern's host.
                host.len() > self.host.len() + 1
                    && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
                    && host[host.len() - self.host.len()..].eq_ignore_ascii_case(&self.host)
                    && host[..host.len() - self.host.len() - 1].split('.').all(is_label)
            }
        }
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let star = match (self.wildcard, self.host.is_empty()) {
            (false, _) => "",
            (true, false) => "*.",
            (true, true) => "*",
        };
        write!(f, "{}://{star}{}", self.scheme, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl Cors {
    /// Whether an `Origin` value is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            None => true,
            Some(list) => list.iter().any(|p| p.matches(origin)),
        }
    }

    pub fn from_meta(meta: &IngressMeta) -> Result<Option<Self>, String> {
        let enabled = boolean_any(meta, &ENABLE)?.unwrap_or(false);
        if !enabled {
            for keys in [
                ALLOW_ORIGIN,
                ALLOW_METHODS,
                ALLOW_HEADERS,
                ALLOW_CREDENTIALS,
                EXPOSE_HEADERS,
                MAX_AGE,
            ] {
                for k in keys {
                    if super::get(meta, k).is_some() {
                        return Err(format!("annotation {k} needs {}: \"true\"", ENABLE[0]));
                    }
                }
            }
            return Ok(None);
        }
        let origins = match string_any(meta, &ALLOW_ORIGIN)? {
            None => None,
            Some(v) => parse_origins(v).map_err(|e| format!("annotation {}: {e}", ALLOW_ORIGIN[0]))?,
        };
        let methods = match string_any(meta, &ALLOW_METHODS)? {
            None => DEFAULT_METHODS.to_string(),
            Some(v) => token_list(v, is_method).map_err(|e| format!("annotation {}: {e}", ALLOW_METHODS[0]))?,
        };
        let headers = match string_any(meta, &ALLOW_HEADERS)? {
            None => DEFAULT_HEADERS.to_string(),
            Some(v) => token_list(v, is_header_or_star).map_err(|e| format!("annotation {}: {e}", ALLOW_HEADERS[0]))?,
        };
        let expose = match string_any(meta, &EXPOSE_HEADERS)? {
            None => None,
            Some(v) => {
                Some(token_list(v, is_header_or_star).map_err(|e| format!("annotation {}: {e}", EXPOSE_HEADERS[0]))?)
            }
        };
        let max_age = match string_any(meta, &MAX_AGE)? {
            None => DEFAULT_MAX_AGE,
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| format!("annotation {}: {v:?} is not a number of seconds", MAX_AGE[0]))?,
        };
        Ok(Some(Self {
            origins,
            methods,
            headers,
            credentials: boolean_any(meta, &ALLOW_CREDENTIALS)?.unwrap_or(true),
            expose,
            max_age,
        }))
    }

    /// For `portico check` and fixtures.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        match &self.origins {
            None => out.push_str(" [cors *"),
            Some(list) => {
                let list: Vec<String> = list.iter().map(ToString::to_string).collect();
                let _ = write!(out, " [cors {}", list.join(","));
            }
        }
        if !self.credentials {
            out.push_str(" no-credentials");
        }
        out.push(']');
    }
}

/// `*` (any: `None`) or a comma list of origin patterns.
pub fn parse_origins(v: &str) -> Result<Option<Vec<OriginPattern>>, String> {
    let items: Vec<&str> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err("the list is empty".into());
    }
    if items.contains(&"*") {
        if items.len() > 1 {
            return Err("\"*\" allows every origin; write it alone".into());
        }
        return Ok(None);
    }
    let mut out: Vec<OriginPattern> = Vec::with_capacity(items.len());
    for s in items {
        let p = OriginPattern::parse(s)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(Some(out))
}

fn is_method(t: &str) -> bool {
    t.bytes().all(|b| b.is_ascii_alphabetic()) && http::Method::from_bytes(t.as_bytes()).is_ok()
}

fn is_header_or_star(t: &str) -> bool {
    t == "*" || http::HeaderName::from_bytes(t.as_bytes()).is_ok()
}

/// A comma list of tokens, each checked, joined as `A, B`.
fn token_list(v: &str, ok: fn(&str) -> bool) -> Result<String, String> {
    let items: Vec<&str> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if items.is_empty() {
        return Err("the list is empty".into());
    }
    if let Some(bad) = items.iter().find(|t| !ok(t)) {
        return Err(format!("{bad:?} is not a valid entry"));
    }
    Ok(items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::test_meta as meta;
    use super::*;

    #[test]
    fn defaults_follow_ingress_nginx() {
        assert_eq!(Cors::from_meta(&meta(&[])).unwrap(), None);
        let c = Cors::from_meta(&meta(&[("nginx.ingress.kubernetes.io/enable-cors", "true")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.origins, None);
        assert_eq!(c.methods, DEFAULT_METHODS);
        assert_eq!(c.headers, DEFAULT_HEADERS);
        assert!(c.credentials);
        assert_eq!(c.max_age, 1_728_000);
        assert_eq!(c.expose, None);
    }

    #[test]
    fn origins_and_wildcards() {
        let list = parse_origins("https://a.example, https://*.w.example:8443 ,http://x.example:80")
            .unwrap()
            .unwrap();
        let c = Cors {
            origins: Some(list),
            methods: String::new(),
            headers: String::new(),
            credentials: true,
            expose: None,
            max_age: 0,
        };
        assert!(c.allows("https://a.example"));
        assert!(c.allows("HTTPS://A.Example"));
        assert!(!c.allows("http://a.example"));
        assert!(!c.allows("https://a.example:444"));
        assert!(c.allows("https://b.w.example:8443"));
        assert!(!c.allows("https://w.example:8443"), "the wildcard needs a label");
        assert!(!c.allows("https://c.b.w.example:8443"), "exactly one label");
        assert!(!c.allows("https://b.w.example"), "the port is part of the origin");
        assert!(!c.allows("https://evil.example/https://a.example"));
        assert!(!c.allows("https://a.example.evil"));
        assert!(!c.allows("null"));
        assert!(c.allows("http://x.example:80"));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (k, v) in [
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "example.com"),
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "*, https://a.example"),
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "https://a.*.example"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://a.example/path",
            ),
            ("nginx.ingress.kubernetes.io/cors-allow-origin", "https://a.example:0"),
            ("nginx.ingress.kubernetes.io/cors-allow-methods", "GET, P OST"),
            ("nginx.ingress.kubernetes.io/cors-allow-headers", "X-A, b@d"),
            ("nginx.ingress.kubernetes.io/cors-max-age", "-1"),
            ("nginx.ingress.kubernetes.io/cors-allow-credentials", "yes"),
        ] {
            let e = Cors::from_meta(&meta(&[("nginx.ingress.kubernetes.io/enable-cors", "true"), (k, v)])).unwrap_err();
            let short = k.rsplit('/').next().unwrap();
            assert!(e.contains(short), "{k}={v}: {e}");
        }
        let e = Cors::from_meta(&meta(&[("portico.dev/cors-allow-origin", "*")])).unwrap_err();
        assert!(e.contains("needs portico.dev/enable-cors"), "{e}");
        let c = Cors::from_meta(&meta(&[
            ("portico.dev/enable-cors", "true"),
            ("portico.dev/cors-allow-methods", "get,post"),
            ("portico.dev/cors-allow-credentials", "false"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.methods, "get, post");
        assert!(!c.credentials);
    }
}
