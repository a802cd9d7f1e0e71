//! What a certificate says about itself (names, dates, issuer, key), read once at load time with x509-parser,
//! and the host-coverage rules that the translator (which hosts may use a certificate) and the proxy (HTTP 421)
//! share.

use std::borrow::Cow;
use std::net::IpAddr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::CertError;

/// A summary of a leaf certificate. Immutable once built; the names are lowercase with no trailing dot, in
/// the certificate's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name, or the whole subject DN when there is no CN.
    pub subject: String,
    /// DNS subjectAltNames, lowercase, trailing dot removed.
    pub dns_names: Vec<String>,
    /// IP subjectAltNames, formatted (`192.0.2.1`, `2001:db8::1`).
    pub ip_addresses: Vec<String>,
    /// `notBefore`, unix seconds.
    pub not_before: i64,
    /// `notAfter`, unix seconds.
    pub not_after: i64,
    /// The serial number as lowercase hex without separators.
    pub serial: String,
    /// The issuer DN (`CN=Test CA, O=Portico`).
    pub issuer: String,
    /// `RSA-2048`, `ECDSA-P256`, `ECDSA-P384`, `Ed25519`, ...
    pub key_algorithm: String,
    /// Where the certificate came from: `secret default/foo`, `file /path`, `self-signed`.
    pub source: String,
}

// === impl CertInfo ===

impl CertInfo {
    /// Reads a DER leaf certificate (errors name it as certificate #0 of the chain).
    pub fn from_der(der: &[u8], source: String) -> Result<CertInfo, CertError> {
        let cert = parse(der, 0)?;
        let tbs = &cert.tbs_certificate;

        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| CertError::UnparsableCertificate {
                index: 0,
                reason: format!("subjectAltName: {e}"),
            })?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns_names.push(normalize_host(n).into_owned()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            ip_addresses.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }

        Ok(CertInfo {
            subject: common_name(tbs.subject()).unwrap_or_else(|| tbs.subject().to_string()),
            dns_names,
            ip_addresses,
            not_before: tbs.validity().not_before.timestamp(),
            not_after: tbs.validity().not_after.timestamp(),
            serial: hex(cert.raw_serial()),
            issuer: tbs.issuer().to_string(),
            key_algorithm: key_algorithm(&cert),
            source,
        })
    }

    /// Whether a TLS client asking for `host` would accept this certificate.
    ///
    /// `host` is compared lowercase with a trailing dot removed. `*.example.test` covers `a.example.test`, not
    /// `example.test` nor `a.b.example.test`. A wildcard host (`*.example.test`, as written in an Ingress) is
    /// covered only by the same wildcard name. The subject CN counts only when there are no DNS SANs (RFC 6125).
    /// An IP address is covered by an equal IP SAN.
    pub fn covers(&self, host: &str) -> bool {
        let host = normalize_host(host);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self
                .ip_addresses
                .iter()
                .any(|s| s.parse::<IpAddr>().is_ok_and(|a| a == ip));
        }
        self.names()
            .iter()
            .any(|name| name_covers(&normalize_host(name), &host))
    }

    /// The names this certificate is matched against: the DNS SANs, else the CN; then the IP SANs.
    pub fn names(&self) -> Vec<String> {
        let mut names = if !self.dns_names.is_empty() {
            self.dns_names.clone()
        } else if !self.subject.is_empty() && !self.subject.contains('=') {
            // `subject` is a CN (a DN string always holds `=`, a host name never does).
            vec![normalize_host(&self.subject).into_owned()]
        } else {
            Vec::new()
        };
        names.extend(self.ip_addresses.iter().cloned());
        names
    }

    /// `not_before <= now <= not_after` (the X.509 validity period is inclusive).
    pub fn is_valid_at(&self, unix_secs: i64) -> bool {
        self.not_before <= unix_secs && unix_secs <= self.not_after
    }

    /// `Ok` when valid at `now`, else `Expired` / `NotYetValid` with the dates.
    pub fn check_validity(&self, now: i64) -> Result<(), CertError> {
        if now < self.not_before {
            Err(CertError::NotYetValid {
                not_before: self.not_before,
                now,
            })
        } else if now > self.not_after {
            Err(CertError::Expired {
                not_after: self.not_after,
                now,
            })
        } else {
            Ok(())
        }
    }

    /// `Ok` when the certificate covers `host`, else `DoesNotCover` listing its names.
    pub fn check_covers(&self, host: &str) -> Result<(), CertError> {
        if self.covers(host) {
            Ok(())
        } else {
            Err(CertError::DoesNotCover {
                host: normalize_host(host).into_owned(),
                names: self.names(),
            })
        }
    }

    /// The share of the validity period still ahead at `now`: 1.0 at `not_before`, 0.0 at `not_after` and
    /// after, clamped to `[0, 1]`. ACME renews below one third.
    pub fn remaining_lifetime_fraction(&self, now: i64) -> f64 {
        let total = self.not_after.saturating_sub(self.not_before);
        if total <= 0 {
            return 0.0;
        }
        let left = self.not_after.saturating_sub(now);
        (left as f64 / total as f64).clamp(0.0, 1.0)
    }
}

// === host names ===

/// Lowercase, trailing dot removed; borrows when nothing changes (the common case on the request path).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Whether certificate name `name` covers `host`; both already normalised.
fn name_covers(name: &str, host: &str) -> bool {
    if host.starts_with("*.") {
        // A wildcard host needs the same wildcard name: `a.example.test` does not serve `*.example.test`.
        return name == host;
    }
    match wildcard_suffix(name) {
        Some(suffix) => match host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == suffix,
            None => false,
        },
        None => name == host,
    }
}

/// `example.test` for `*.example.test`. `None` for a non-wildcard, a partial wildcard (`a*.example.test`, which
/// browsers no longer honour) and a wildcard directly under a single label (`*.test`).
pub fn wildcard_suffix(name: &str) -> Option<&str> {
    let suffix = name.strip_prefix("*.")?;
    let valid = suffix.contains('.') && !suffix.contains('*') && suffix.split('.').all(|label| !label.is_empty());
    valid.then_some(suffix)
}

// === x509 helpers ===

pub(super) fn parse(der: &[u8], index: usize) -> Result<X509Certificate<'_>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(CertError::UnparsableCertificate {
            index,
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        }),
        Err(e) => Err(CertError::UnparsableCertificate {
            index,
            reason: e.to_string(),
        }),
    }
}

fn common_name(name: &X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn key_algorithm(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let alg = &spki.algorithm;
    if alg.algorithm == OID_PKCS1_RSAENCRYPTION {
        let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
        format!("RSA-{bits}")
    } else if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = alg.parameters.as_ref().and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => "ECDSA-P256".to_owned(),
            Some(c) if c == OID_NIST_EC_P384 => "ECDSA-P384".to_owned(),
            Some(c) if c == OID_NIST_EC_P521 => "ECDSA-P521".to_owned(),
            Some(c) => format!("ECDSA-{c}"),
            None => "ECDSA".to_owned(),
        }
    } else if alg.algorithm == OID_SIG_ED25519 {
        "Ed25519".to_owned()
    } else {
        alg.algorithm.to_id_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dns: &[&str], cn: &str) -> CertInfo {
        CertInfo {
            subject: cn.to_owned(),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ip_addresses: vec!["192.0.2.7".to_owned(), "2001:db8::1".to_owned()],
            not_before: 1_000,
            not_after: 4_000,
            serial: "01".to_owned(),
            issuer: "CN=x".to_owned(),
            key_algorithm: "ECDSA-P256".to_owned(),
            source: "test".to_owned(),
        }
    }

    #[test]
    fn exact_names_are_case_and_trailing_dot_insensitive() {
        let c = info(&["a.example.test"], "ignored");
        assert!(c.covers("a.example.test"));
        assert!(c.covers("A.Example.TEST"));
        assert!(c.covers("a.example.test."));
        assert!(!c.covers("b.example.test"));
        assert!(!c.covers("example.test"));
        assert!(!c.covers(""));
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        let c = info(&["*.example.test"], "");
        assert!(c.covers("a.example.test"));
        assert!(c.covers("A.EXAMPLE.test."));
        assert!(!c.covers("example.test"));
        assert!(!c.covers("a.b.example.test"));
        assert!(!c.covers(".example.test"));
        assert!(!c.covers("aexample.test"));
        assert!(!c.covers("a.example.test.evil"));
    }

    #[test]
    fn wildcard_host_needs_the_same_wildcard_name() {
        assert!(info(&["*.example.test"], "").covers("*.example.test"));
        assert!(info(&["*.example.test"], "").covers("*.EXAMPLE.test."));
        assert!(!info(&["a.example.test"], "").covers("*.example.test"));
        assert!(!info(&["*.b.example.test"], "").covers("*.example.test"));
        assert!(!info(&["*.example.test"], "").covers("*.b.example.test"));
    }

    #[test]
    fn unusual_wildcards_cover_nothing() {
        assert!(!info(&["*.test"], "").covers("example.test"));
        assert!(!info(&["a*.example.test"], "").covers("ab.example.test"));
        assert!(!info(&["*"], "").covers("localhost"));
        assert!(!info(&["*.*.example.test"], "").covers("a.b.example.test"));
    }

    #[test]
    fn common_name_counts_only_without_dns_sans() {
        assert!(info(&[], "legacy.example.test").covers("legacy.example.test"));
        assert!(info(&[], "*.example.test").covers("x.example.test"));
        assert!(!info(&["a.example.test"], "legacy.example.test").covers("legacy.example.test"));
    }

    #[test]
    fn ip_sans_cover_ip_hosts_only() {
        let c = info(&["a.example.test"], "");
        assert!(c.covers("192.0.2.7"));
        assert!(c.covers("2001:DB8:0:0::1"));
        assert!(!c.covers("192.0.2.8"));
        assert!(!info(&["192.0.2.9"], "").covers("192.0.2.9"));
    }

    #[test]
    fn does_not_cover_lists_the_names() {
        let err = info(&["a.example.test", "*.example.test"], "")
            .check_covers("X.other.test.")
            .unwrap_err();
        assert_eq!(
            err,
            CertError::DoesNotCover {
                host: "x.other.test".to_owned(),
                names: vec![
                    "a.example.test".to_owned(),
                    "*.example.test".to_owned(),
                    "192.0.2.7".to_owned(),
                    "2001:db8::1".to_owned()
                ],
            }
        );
        assert!(err.to_string().contains("a.example.test, *.example.test"));
    }

    #[test]
    fn validity_period_is_inclusive() {
        let c = info(&["a"], "");
        assert!(!c.is_valid_at(999));
        assert!(c.is_valid_at(1_000));
        assert!(c.is_valid_at(4_000));
        assert!(!c.is_valid_at(4_001));
        assert_eq!(
            c.check_validity(999),
            Err(CertError::NotYetValid {
                not_before: 1_000,
                now: 999
            })
        );
        assert_eq!(
            c.check_validity(4_001),
            Err(CertError::Expired {
                not_after: 4_000,
                now: 4_001
            })
        );
        assert_eq!(c.check_validity(2_000), Ok(()));
    }

    #[test]
    fn remaining_lifetime_fraction_is_clamped() {
        let c = info(&["a"], "");
        assert_eq!(c.remaining_lifetime_fraction(0), 1.0);
        assert_eq!(c.remaining_lifetime_fraction(1_000), 1.0);
        assert_eq!(c.remaining_lifetime_fraction(3_000), 1.0 / 3.0);
        assert_eq!(c.remaining_lifetime_fraction(4_000), 0.0);
        assert_eq!(c.remaining_lifetime_fraction(9_000), 0.0);
        let degenerate = CertInfo { not_after: 1_000, ..c };
        assert_eq!(degenerate.remaining_lifetime_fraction(1_000), 0.0);
    }

    #[test]
    fn normalize_host_borrows_when_already_normal() {
        assert!(matches!(normalize_host("a.example"), Cow::Borrowed("a.example")));
        assert!(matches!(normalize_host("a.example."), Cow::Borrowed("a.example")));
        assert_eq!(normalize_host("A.Example."), "a.example");
    }
}
