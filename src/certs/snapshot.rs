//! The immutable SNI → certificate map that one TLS handshake reads. A new map is built and swapped in whole
//! when Secrets change; nothing in it is ever mutated.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use super::info::{normalize_host, wildcard_suffix};
use super::LoadedCert;

/// Certificates by host pattern, plus the default for unknown or absent SNI.
///
/// Invariants: keys are normalised (lowercase, no trailing dot); exact hosts and wildcard hosts live in
/// separate maps, wildcards keyed by their suffix (`*.example.test` under `example.test`), so a lookup is at
/// most two hash probes and allocates nothing for a lowercase SNI. The snapshot does not check coverage: the
/// translator only offers pairs for which [`LoadedCert::validate_for_hosts`] said yes.
#[derive(Clone)]
pub struct CertSnapshot {
    exact: HashMap<Box<str>, LoadedCert>,
    wildcard: HashMap<Box<str>, LoadedCert>,
    default: LoadedCert,
}

// === impl CertSnapshot ===

impl CertSnapshot {
    /// Builds the map from `(host pattern, certificate)` pairs. The first pair for a pattern wins (the
    /// translator orders them); patterns that are neither a host nor a one-label wildcard (`*.test`, `a*.b.c`)
    /// are skipped with a warning.
    pub fn new(default: LoadedCert, entries: impl IntoIterator<Item = (String, LoadedCert)>) -> CertSnapshot {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (pattern, cert) in entries {
            let pattern = normalize_host(&pattern);
            let (map, key) = if pattern.starts_with('*') {
                match wildcard_suffix(&pattern) {
                    Some(suffix) => (&mut wildcard, suffix),
                    None => {
                        tracing::warn!(host = %pattern, source = %cert.info.source, "unusable wildcard host, skipped");
                        continue;
                    }
                }
            } else if pattern.is_empty() || pattern.contains('*') {
                tracing::warn!(host = %pattern, source = %cert.info.source, "unusable host, skipped");
                continue;
            } else {
                (&mut exact, pattern.as_ref())
            };
            if map.contains_key(key) {
                tracing::debug!(host = %pattern, source = %cert.info.source, "host already has a certificate");
                continue;
            }
            map.insert(Box::from(key), cert);
        }
        CertSnapshot {
            exact,
            wildcard,
            default,
        }
    }

    /// A snapshot that serves `default` for every SNI.
    pub fn only_default(default: LoadedCert) -> CertSnapshot {
        Self::new(default, [])
    }

    /// The certificate for an SNI: the exact host, then the wildcard one label up, then the default. The SNI is
    /// compared lowercase without a trailing dot.
    pub fn resolve_cert(&self, sni: Option<&str>) -> &LoadedCert {
        let Some(sni) = sni else {
            return &self.default;
        };
        let host = normalize_host(sni);
        if let Some(cert) = self.exact.get(host.as_ref()) {
            return cert;
        }
        if let Some((label, suffix)) = host.split_once('.') {
            if !label.is_empty() {
                if let Some(cert) = self.wildcard.get(suffix) {
                    return cert;
                }
            }
        }
        &self.default
    }

    /// The rustls key for an SNI (see [`CertSnapshot::resolve_cert`]).
    pub fn resolve(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        &self.resolve_cert(sni).key
    }

    /// The certificate served when nothing else matches.
    pub fn default_cert(&self) -> &LoadedCert {
        &self.default
    }

    /// Number of host patterns (exact and wildcard), the default not counted.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// True when only the default certificate is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for CertSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut exact: Vec<_> = self
            .exact
            .iter()
            .map(|(h, c)| (h.as_ref(), c.info.source.as_str()))
            .collect();
        let mut wildcard: Vec<_> = self
            .wildcard
            .iter()
            .map(|(h, c)| (format!("*.{h}"), c.info.source.as_str()))
            .collect();
        exact.sort_unstable();
        wildcard.sort_unstable();
        f.debug_struct("CertSnapshot")
            .field("exact", &exact)
            .field("wildcard", &wildcard)
            .field("default", &self.default.info.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::testing::TestCa;

    fn snapshot(ca: &TestCa) -> (CertSnapshot, [LoadedCert; 3]) {
        let exact = ca.leaf(&["a.example.test"], "exact");
        let wild = ca.leaf(&["*.example.test"], "wild");
        let default = ca.leaf(&["default.invalid"], "default");
        let snap = CertSnapshot::new(
            default.clone(),
            [
                ("A.Example.Test.".to_owned(), exact.clone()),
                ("*.example.test".to_owned(), wild.clone()),
                // Skipped: a later duplicate, a too-broad wildcard, a partial wildcard, an empty host.
                ("a.example.test".to_owned(), default.clone()),
                ("*.test".to_owned(), default.clone()),
                ("b*.example.test".to_owned(), default.clone()),
                (String::new(), default.clone()),
            ],
        );
        (snap, [exact, wild, default])
    }

    fn same(a: &LoadedCert, b: &LoadedCert) -> bool {
        Arc::ptr_eq(&a.key, &b.key)
    }

    #[test]
    fn resolves_exact_then_wildcard_then_default() {
        let ca = TestCa::new();
        let (snap, [exact, wild, default]) = snapshot(&ca);
        assert_eq!(snap.len(), 2);
        assert!(same(snap.resolve_cert(Some("a.example.test")), &exact));
        assert!(same(snap.resolve_cert(Some("A.EXAMPLE.TEST.")), &exact));
        assert!(same(snap.resolve_cert(Some("b.example.test")), &wild));
        assert!(same(snap.resolve_cert(Some("example.test")), &default));
        assert!(same(snap.resolve_cert(Some("x.b.example.test")), &default));
        assert!(same(snap.resolve_cert(Some(".example.test")), &default));
        assert!(same(snap.resolve_cert(Some("unknown.test")), &default));
        assert!(same(snap.resolve_cert(Some("bb.example.test")), &wild));
        assert!(same(snap.resolve_cert(None), &default));
        assert!(Arc::ptr_eq(snap.resolve(Some("a.example.test")), &exact.key));
    }

    #[test]
    fn resolved_handle_answers_misdirected_requests() {
        let ca = TestCa::new();
        let (snap, _) = snapshot(&ca);
        // The connection keeps the handle of the certificate it presented and checks each request's Host.
        let presented = snap.resolve_cert(Some("a.example.test")).clone();
        assert!(presented.covers("a.example.test"));
        assert!(
            !presented.covers("b.example.test"),
            "HTTP/2 reuse for another host must get 421"
        );
        let presented = snap.resolve_cert(Some("b.example.test")).clone();
        assert!(presented.covers("c.example.test"));
        assert!(!presented.covers("example.test"));
    }

    #[test]
    fn debug_lists_hosts_sorted() {
        let ca = TestCa::new();
        let (snap, _) = snapshot(&ca);
        let text = format!("{snap:?}");
        assert!(text.contains(r#"exact: [("a.example.test", "exact")]"#), "{text}");
        assert!(text.contains(r#"wildcard: [("*.example.test", "wild")]"#), "{text}");
    }

    #[test]
    fn only_default_serves_everything() {
        let ca = TestCa::new();
        let default = ca.leaf(&["d.test"], "default");
        let snap = CertSnapshot::only_default(default.clone());
        assert!(snap.is_empty());
        assert!(same(snap.resolve_cert(Some("a.example.test")), &default));
        assert!(same(snap.resolve_cert(None), &default));
    }
}
