//! ACME Renewal Information (ARI, RFC 9773): the certificate identifier the CA knows a certificate by, and what
//! the manager remembers of the CA's answers per Secret. The renewal decision itself is
//! [`plan::need`](super::plan::need), pure; fetching is the manager's (only the replica that orders fetches).
//!
//! ```text
//!  pass ─▶ id = AKI keyIdentifier . serial (base64url, from the certificate's DER)
//!       ─▶ Ari::due(id)? ── no ─▶ the remembered window (or none: the 1/3-lifetime rule)
//!              │ yes (new certificate, or the CA's Retry-After has passed)
//!              ▼
//!          GET {renewalInfo}/{id} ─▶ window ─▶ renew at a uniformly random instant in it (drawn once per window)
//!                                 ─▶ error / garbage / timeout ─▶ no window (fallback), retry with backoff
//!                                 ─▶ Unsupported (no renewalInfo in the directory) ─▶ fallback, ask again in a day
//! ```

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use instant_acme::CertificateIdentifier;
use rustls_pki_types::Der;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

/// The renewal window the CA suggests for a certificate (RFC 9773 §4.2), unix seconds, `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    pub start: i64,
    pub end: i64,
}

impl RenewalWindow {
    /// `None` when `end` is not after `start`: RFC 9773 §4.2 says to treat such an answer as no answer.
    pub fn new(start: i64, end: i64) -> Option<RenewalWindow> {
        (start < end).then_some(RenewalWindow { start, end })
    }

    /// The instant `r` (in `[0, 1)`, uniformly random) of the way through the window.
    pub fn at(&self, r: f64) -> i64 {
        let r = r.clamp(0.0, 1.0);
        self.start + ((self.end - self.start) as f64 * r) as i64
    }
}

/// The ARI identifier of a certificate (RFC 9773 §4.1): the `keyIdentifier` of its Authority Key Identifier
/// extension and its DER-encoded serial number (the value octets, as they appear in the certificate), each
/// base64url. `None` when the DER does not parse or has no AKI `keyIdentifier` (then ARI cannot be used).
pub fn cert_id(der: &[u8]) -> Option<CertificateIdentifier<'static>> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let aki = cert.iter_extensions().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0),
        _ => None,
    })?;
    Some(CertificateIdentifier::new(Der::from_slice(aki), Der::from_slice(cert.raw_serial())).into_owned())
}

/// How long to wait before asking again after the CA answered with `Retry-After: retry_after`. RFC 9773
/// §4.3.2 suggests treating values under a minute as a minute and over a day as a day; the bounds are
/// [`Settings::ari_refetch_min`](super::Settings::ari_refetch_min) and `ari_refetch_max` (tests shorten the
/// lower one).
pub fn refetch_after(retry_after: Duration, min: Duration, max: Duration) -> Duration {
    retry_after.clamp(min, max.max(min))
}

/// After `failures` consecutive failed fetches: `min × 2^(failures−1)`, capped at `max`, a random 50–100% of
/// that (RFC 9773 §4.3.3: retry with exponential backoff; meanwhile the 1/3-lifetime rule applies).
pub fn retry_after_failure(failures: u32, min: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exp).min(max.max(min));
    base.mul_f64(0.5 + random_unit() / 2.0)
}

/// A uniformly distributed value in `[0, 1)` (std's randomly keyed hasher; no extra dependency).
pub fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What the manager knows from the CA about one Secret's current certificate.
#[derive(Debug, Clone)]
pub struct Ari {
    /// The certificate this is about; a different certificate starts afresh.
    pub id: CertificateIdentifier<'static>,
    /// The last valid window, with the point in it where this certificate renews (`[0, 1)`, drawn when the
    /// window was first seen). `None` until a fetch succeeds, and again after a failed one.
    pub window: Option<(RenewalWindow, f64)>,
    /// The CA's directory has `renewalInfo` (so a renewal order may carry `replaces`).
    pub offered: bool,
    /// When to ask again.
    pub next_fetch: Instant,
    /// Consecutive failed fetches (backoff).
    pub failures: u32,
}

impl Ari {
    /// Whether to ask the CA (again) about `id` at `now`.
    pub fn due(this: Option<&Ari>, id: &CertificateIdentifier<'_>, now: Instant) -> bool {
        match this {
            Some(a) if a.id == *id => now >= a.next_fetch,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn id_is_aki_key_identifier_and_serial_base64url() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SerialNumber};
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_der = ca.self_signed(&ca_key).unwrap().der().clone();
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        leaf.serial_number = Some(SerialNumber::from_slice(&[0x01, 0x02, 0x03]));
        leaf.use_authority_key_identifier_extension = true;
        let der = leaf
            .signed_by(&leaf_key, &Issuer::from_params(&ca, &ca_key))
            .unwrap()
            .der()
            .clone();

        let id = cert_id(&der).expect("the leaf carries an AKI").to_string();
        let (aki, serial) = id.split_once('.').unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(b64.decode(serial).unwrap(), [0x01, 0x02, 0x03]);
        // The AKI keyIdentifier is the issuer's subject key identifier.
        let (_, ca_cert) = x509_parser::certificate::X509Certificate::from_der(&ca_der).unwrap();
        let ski = ca_cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap();
        assert_eq!(b64.decode(aki).unwrap(), ski);
        // Without an AKI, or not a certificate: no identifier.
        let plain = CertificateParams::new(vec!["b.test".to_string()])
            .unwrap()
            .self_signed(&leaf_key)
            .unwrap();
        assert!(cert_id(plain.der()).is_none());
        assert!(cert_id(b"not a certificate").is_none());
    }

    #[test]
    fn refetch_is_clamped_and_failures_back_off() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(86_400));
        assert_eq!(refetch_after(Duration::ZERO, min, max), min);
        assert_eq!(
            refetch_after(Duration::from_secs(21_600), min, max),
            Duration::from_secs(21_600)
        );
        assert_eq!(refetch_after(Duration::from_secs(864_000), min, max), max);
        for (n, full) in [(1, 60), (2, 120), (3, 240), (20, 86_400)] {
            let d = retry_after_failure(n, min, max);
            assert!(
                d >= Duration::from_secs(full) / 2 && d <= Duration::from_secs(full),
                "{n}: {d:?}"
            );
        }
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }
}
