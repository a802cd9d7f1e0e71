//! How a backend picks an endpoint, and the affinity cookie: `portico.dev/load-balance`, ingress-nginx's
//! `load-balance`, `upstream-hash-by`, `affinity: cookie`, and the cookie's name and `session-cookie-*`
//! attributes. Runtime homes: the balance goes with each of the Ingress's backends (`upstream::Backend`); the
//! cookie's name and attributes go into the route's send policy (`model::route::SendPolicy`), read where the
//! proxy's respond phase sets the cookie. The attributes need cookie affinity (`affinity: cookie` or
//! `portico.dev/load-balance: cookie`); without it they are an error, as a check's settings without a check are.
//!
//! Without them the cookie is `NAME=ENDPOINT; Path=/; HttpOnly`, a session cookie. `change-on-failure: "false"`
//! (the default, as in ingress-nginx) keeps a client's cookie when its request had to be retried on another
//! endpoint; `"true"` re-issues it for the endpoint that answered.

use super::{boolean_any, get, string_any, IngressMeta};

pub const LOAD_BALANCE: &str = "portico.dev/load-balance";
pub const NGINX_LOAD_BALANCE: &str = "nginx.ingress.kubernetes.io/load-balance";
pub const NGINX_UPSTREAM_HASH_BY: &str = "nginx.ingress.kubernetes.io/upstream-hash-by";
pub const NGINX_AFFINITY: &str = "nginx.ingress.kubernetes.io/affinity";
pub const AFFINITY_COOKIE_NAME: [&str; 2] = [
    "portico.dev/affinity-cookie-name",
    "nginx.ingress.kubernetes.io/session-cookie-name",
];
pub const DEFAULT_AFFINITY_COOKIE: &str = "PORTICO_AFFINITY";

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

pub(super) fn parse_balance(meta: &IngressMeta) -> Result<Balance, String> {
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

pub const PATH: [&str; 2] = [
    "portico.dev/affinity-cookie-path",
    "nginx.ingress.kubernetes.io/session-cookie-path",
];
pub const DOMAIN: [&str; 2] = [
    "portico.dev/affinity-cookie-domain",
    "nginx.ingress.kubernetes.io/session-cookie-domain",
];
pub const SAMESITE: [&str; 2] = [
    "portico.dev/affinity-cookie-samesite",
    "nginx.ingress.kubernetes.io/session-cookie-samesite",
];
pub const SECURE: [&str; 2] = [
    "portico.dev/affinity-cookie-secure",
    "nginx.ingress.kubernetes.io/session-cookie-secure",
];
pub const MAX_AGE: [&str; 2] = [
    "portico.dev/affinity-cookie-max-age",
    "nginx.ingress.kubernetes.io/session-cookie-max-age",
];
pub const EXPIRES: [&str; 2] = [
    "portico.dev/affinity-cookie-expires",
    "nginx.ingress.kubernetes.io/session-cookie-expires",
];
pub const CHANGE_ON_FAILURE: [&str; 2] = [
    "portico.dev/affinity-cookie-change-on-failure",
    "nginx.ingress.kubernetes.io/session-cookie-change-on-failure",
];

/// An Ingress's balancing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancing {
    /// How the backends of this Ingress pick an endpoint.
    pub balance: Balance,
    /// Cookie name for `Balance::Cookie`.
    pub cookie_name: String,
    /// The affinity cookie's attributes (with `Balance::Cookie`).
    pub cookie: CookieAttributes,
}

impl Default for Balancing {
    fn default() -> Self {
        Self {
            balance: Balance::RoundRobin,
            cookie_name: DEFAULT_AFFINITY_COOKIE.to_string(),
            cookie: CookieAttributes::default(),
        }
    }
}

impl Balancing {
    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        let balance = parse_balance(meta)?;
        Ok(Self {
            balance,
            cookie_name: match string_any(meta, &AFFINITY_COOKIE_NAME)? {
                None => DEFAULT_AFFINITY_COOKIE.to_string(),
                Some(n) if super::canary::is_cookie_name(n) => n.to_string(),
                Some(n) => {
                    return Err(format!(
                        "annotation {}: {n:?} is not a cookie name",
                        AFFINITY_COOKIE_NAME[0]
                    ))
                }
            },
            cookie: CookieAttributes::from_meta(meta, balance == Balance::Cookie)?,
        })
    }

    /// Appends ` [..]` markers for what differs from the defaults.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        if self.balance != Balance::RoundRobin {
            let _ = write!(out, " [balance {:?}]", self.balance);
        }
        if self.cookie != CookieAttributes::default() {
            let _ = write!(out, " [cookie{}]", self.cookie.suffix());
        }
    }
}

/// The affinity cookie's attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CookieAttributes {
    pub path: Option<String>,
    pub domain: Option<String>,
    /// `Strict`, `Lax` or `None`, as written in the attribute.
    pub samesite: Option<&'static str>,
    pub secure: bool,
    /// `Max-Age`, seconds.
    pub max_age: Option<u64>,
    /// `Expires`, seconds from the response.
    pub expires: Option<u64>,
    pub change_on_failure: bool,
}

impl CookieAttributes {
    /// Parses the attributes; `cookie_affinity` says whether the Ingress balances by cookie.
    pub fn from_meta(meta: &IngressMeta, cookie_affinity: bool) -> Result<Self, String> {
        let path = match string_any(meta, &PATH)? {
            None => None,
            Some(p) if p.starts_with('/') && cookie_safe(p) => Some(p.to_string()),
            Some(p) => return Err(format!("annotation {}: {p:?} is not a cookie path like /app", PATH[0])),
        };
        let domain = match string_any(meta, &DOMAIN)? {
            None => None,
            Some(d) => {
                let bare = d.strip_prefix('.').unwrap_or(d);
                if bare.is_empty() || !cookie_safe(d) || crate::normalize::normalize_host(bare).is_err() {
                    return Err(format!("annotation {}: {d:?} is not a domain", DOMAIN[0]));
                }
                Some(d.to_string())
            }
        };
        let samesite = match string_any(meta, &SAMESITE)? {
            None => None,
            Some(v) => Some(match v.to_ascii_lowercase().as_str() {
                "strict" => "Strict",
                "lax" => "Lax",
                "none" => "None",
                _ => return Err(format!("annotation {}: {v:?} is not Strict, Lax or None", SAMESITE[0])),
            }),
        };
        let seconds = |keys: &[&str; 2]| -> Result<Option<u64>, String> {
            match string_any(meta, keys)? {
                None => Ok(None),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0 && *n <= 400 * 86_400)
                    .map(Some)
                    .ok_or_else(|| {
                        format!(
                            "annotation {}: {v:?} is not a number of seconds (at most 400 days)",
                            keys[0]
                        )
                    }),
            }
        };
        let attrs = Self {
            path,
            domain,
            samesite,
            secure: boolean_any(meta, &SECURE)?.unwrap_or(false),
            max_age: seconds(&MAX_AGE)?,
            expires: seconds(&EXPIRES)?,
            change_on_failure: boolean_any(meta, &CHANGE_ON_FAILURE)?.unwrap_or(false),
        };
        if !cookie_affinity && attrs != Self::default() {
            let key = [PATH, DOMAIN, SAMESITE, SECURE, MAX_AGE, EXPIRES, CHANGE_ON_FAILURE]
                .iter()
                .flatten()
                .find(|k| meta.annotations.as_ref().is_some_and(|a| a.contains_key(**k)))
                .copied()
                .unwrap_or(PATH[1]);
            return Err(format!(
                "annotation {key} needs cookie affinity (nginx.ingress.kubernetes.io/affinity: cookie or portico.dev/load-balance: cookie)"
            ));
        }
        Ok(attrs)
    }

    /// The attributes after `NAME=VALUE` in `Set-Cookie`, but `Expires` (which depends on the time of the
    /// response): `; Path=/; HttpOnly` without annotations.
    pub fn suffix(&self) -> String {
        use std::fmt::Write;
        let mut s = format!("; Path={}", self.path.as_deref().unwrap_or("/"));
        if let Some(d) = &self.domain {
            let _ = write!(s, "; Domain={d}");
        }
        if let Some(m) = self.max_age {
            let _ = write!(s, "; Max-Age={m}");
        }
        if self.secure {
            s.push_str("; Secure");
        }
        s.push_str("; HttpOnly");
        if let Some(v) = self.samesite {
            let _ = write!(s, "; SameSite={v}");
        }
        s
    }
}

/// No separator, space or control character a cookie attribute value may not hold.
fn cookie_safe(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_meta as meta;

    #[test]
    fn attributes_render_and_fail_closed() {
        assert_eq!(CookieAttributes::default().suffix(), "; Path=/; HttpOnly");
        let a = CookieAttributes::from_meta(
            &meta(&[
                ("nginx.ingress.kubernetes.io/session-cookie-path", "/app"),
                ("nginx.ingress.kubernetes.io/session-cookie-domain", ".example.com"),
                ("nginx.ingress.kubernetes.io/session-cookie-samesite", "none"),
                ("nginx.ingress.kubernetes.io/session-cookie-secure", "true"),
                ("nginx.ingress.kubernetes.io/session-cookie-max-age", "3600"),
                ("nginx.ingress.kubernetes.io/session-cookie-expires", "7200"),
                ("nginx.ingress.kubernetes.io/session-cookie-change-on-failure", "true"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            a.suffix(),
            "; Path=/app; Domain=.example.com; Max-Age=3600; Secure; HttpOnly; SameSite=None"
        );
        assert_eq!((a.expires, a.change_on_failure), (Some(7200), true));
        for (pairs, affinity, needle) in [
            (
                vec![("nginx.ingress.kubernetes.io/session-cookie-path", "/app")],
                false,
                "needs cookie affinity",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/session-cookie-path", "/a;b")],
                true,
                "not a cookie path",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/session-cookie-samesite", "sometimes")],
                true,
                "not Strict",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/session-cookie-max-age", "-1")],
                true,
                "number of seconds",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/session-cookie-domain", "a b")],
                true,
                "not a domain",
            ),
        ] {
            let e = CookieAttributes::from_meta(&meta(&pairs), affinity).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }
}
