//! Other names for an Ingress's host: `server-alias` and `from-to-www-redirect`, with ingress-nginx's meaning.
//! Runtime home: translation (`model::alias`) adds the names as hosts of the table; the proxy's redirect step
//! answers for the `www` twin.
//!
//! - `server-alias: "a.example, *.b.example"`: the Ingress's paths are served under these names too. The Ingress
//!   must have rules for exactly one host (an alias of several would be ambiguous). A name that has rules of its
//!   own on the listener set (from any Ingress) keeps them: the alias is dropped with a warning, as ingress-nginx
//!   drops an alias that is another server's name. Two Ingresses aliasing one name: the older keeps it.
//! - `from-to-www-redirect: "true"`: for each exact rule host, the other of `www.HOST` / `HOST` answers every
//!   request with 308 to the same path and query on the Ingress's host (same scheme and port), unless that name
//!   has rules of its own.
//!
//! Both names are ordinary hosts of the table: they need a TLS entry (and certificate) of their own to be served
//! over HTTPS without a certificate warning, and their HTTP-to-HTTPS redirect follows that entry. Canary Ingresses
//! attach to the main Ingress's own host only: the alias serves the main backends.

use super::{boolean_any, string_any, IngressMeta};
use crate::model::HostPattern;

pub const SERVER_ALIAS: [&str; 2] = ["portico.dev/server-alias", "nginx.ingress.kubernetes.io/server-alias"];
pub const FROM_TO_WWW: [&str; 2] = [
    "portico.dev/from-to-www-redirect",
    "nginx.ingress.kubernetes.io/from-to-www-redirect",
];

/// What an Ingress's alias annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Aliases {
    /// `server-alias`: more names for the Ingress's one host, in the order written, without duplicates.
    pub names: Vec<HostPattern>,
    /// `from-to-www-redirect`.
    pub www: bool,
}

impl Aliases {
    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        let mut names = Vec::new();
        if let Some(list) = string_any(meta, &SERVER_ALIAS)? {
            for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let host = crate::model::translate::rule_host(Some(raw))
                    .map_err(|e| format!("annotation {}: {raw:?}: {e}", SERVER_ALIAS[0]))?;
                if !names.contains(&host) {
                    names.push(host);
                }
            }
            if names.is_empty() {
                return Err(format!(
                    "annotation {}: no host name; write names separated by commas",
                    SERVER_ALIAS[0]
                ));
            }
        }
        Ok(Self {
            names,
            www: boolean_any(meta, &FROM_TO_WWW)?.unwrap_or(false),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && !self.www
    }

    /// Appends ` [..]` markers for `portico check` and fixtures.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        for n in &self.names {
            let _ = write!(out, " [alias {n}]");
        }
        if self.www {
            out.push_str(" [www-redirect]");
        }
    }
}

/// Whether an Ingress's metadata names an alias annotation at all (cheap: the translation's second pass skips
/// every other Ingress on this).
pub fn asked(meta: &IngressMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| SERVER_ALIAS.iter().chain(&FROM_TO_WWW).any(|k| a.contains_key(*k)))
}

/// The `www` twin of an exact host: `www.a.example` for `a.example` and the other way round. `None` for a
/// wildcard, a rule without host, and a name with a single label (`www.localhost` is not a twin of `localhost`).
pub fn www_twin(host: &HostPattern) -> Option<HostPattern> {
    let HostPattern::Exact(h) = host else { return None };
    match h.strip_prefix("www.") {
        Some(bare) if bare.contains('.') => Some(HostPattern::Exact(bare.to_string())),
        Some(_) => None,
        None if h.contains('.') => Some(HostPattern::Exact(format!("www.{h}"))),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_meta as meta;
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let a = Aliases::from_meta(&meta(&[(
            "nginx.ingress.kubernetes.io/server-alias",
            "B.example, *.c.example ,b.example",
        )]))
        .unwrap();
        assert_eq!(
            a.names,
            vec![
                HostPattern::Exact("b.example".into()),
                HostPattern::Wildcard("c.example".into())
            ]
        );
        assert!(!a.www);
        let a = Aliases::from_meta(&meta(&[("portico.dev/from-to-www-redirect", "true")])).unwrap();
        assert!(a.www && a.names.is_empty());
        assert!(Aliases::from_meta(&meta(&[])).unwrap().is_empty());
        for (pairs, needle) in [
            (
                vec![("nginx.ingress.kubernetes.io/server-alias", "a b")],
                "server-alias",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/server-alias", " , ")],
                "no host name",
            ),
            (vec![("nginx.ingress.kubernetes.io/server-alias", "*")], "server-alias"),
            (
                vec![("nginx.ingress.kubernetes.io/from-to-www-redirect", "yes")],
                "not \"true\"",
            ),
            (
                vec![
                    ("nginx.ingress.kubernetes.io/server-alias", "a.example"),
                    ("portico.dev/server-alias", "b.example"),
                ],
                "disagree",
            ),
        ] {
            let e = Aliases::from_meta(&meta(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn www_twins() {
        let twin = |h: &str| www_twin(&HostPattern::Exact(h.into())).map(|t| t.to_string());
        assert_eq!(twin("a.example").as_deref(), Some("www.a.example"));
        assert_eq!(twin("www.a.example").as_deref(), Some("a.example"));
        assert_eq!(twin("localhost"), None);
        assert_eq!(twin("www.localhost"), None);
        assert_eq!(www_twin(&HostPattern::Wildcard("a.example".into())), None);
        assert_eq!(www_twin(&HostPattern::Any), None);
    }
}
