//! The affinity cookie's attributes, by ingress-nginx's `session-cookie-*` names (the cookie's name is
//! `affinity-cookie-name` / `session-cookie-name`, with the balancing in `mod.rs`). Runtime home: the route's
//! send policy (`model::route::SendPolicy`), read where the proxy's respond phase sets the cookie. They need cookie affinity (`affinity: cookie` or
//! `portico.dev/load-balance: cookie`); without it they are an error, as a check's settings without a check are.
//!
//! Without them the cookie is `NAME=ENDPOINT; Path=/; HttpOnly`, a session cookie. `change-on-failure: "false"`
//! (the default, as in ingress-nginx) keeps a client's cookie when its request had to be retried on another
//! endpoint; `"true"` re-issues it for the endpoint that answered.

use super::{boolean_any, string_any, IngressMeta};

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
