//! Turning PEM (from a `kubernetes.io/tls` Secret, a file, or rcgen) into a rustls [`CertifiedKey`] plus the
//! [`CertInfo`] that describes it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};

use super::info::{normalize_host, parse};
use super::time::unix_now;
use super::{CertError, CertInfo};

/// The Secret type that carries a certificate and its key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A certificate chain with its private key, ready for rustls, and a description of its leaf.
///
/// Invariants: the chain is non-empty, leaf first, in the order given; the key matches the leaf; every
/// certificate in the chain parses as X.509. Validity dates and host coverage are *not* checked at load time
/// (see [`LoadedCert::validate_for_hosts`]). Cloning is cheap (two `Arc`s), so a clone serves as the handle a
/// connection keeps to answer "is this Host covered by the certificate I presented?".
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    pub info: Arc<CertInfo>,
}

// === impl LoadedCert ===

impl LoadedCert {
    /// Parses a PEM chain (leaf first, intermediates after, in order) and one PEM private key (PKCS#8
    /// `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`; RSA >= 2048 bits, ECDSA P-256/P-384,
    /// Ed25519). Other PEM blocks in either input are ignored, so a combined cert+key file works for both.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], source: String) -> Result<LoadedCert, CertError> {
        let chain = parse_chain(cert_pem)?;
        let key_der = parse_key(key_pem)?;

        // Parse the whole chain up front so a broken intermediate is reported here, not in a client's log.
        for (index, der) in chain.iter().enumerate().skip(1) {
            parse(der, index)?;
        }
        let info = CertInfo::from_der(&chain[0], source)?;

        let signing_key =
            any_supported_type(&key_der).map_err(|e| CertError::UnsupportedKey { reason: e.to_string() })?;
        let key = CertifiedKey::new(chain, signing_key);
        match key.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(CertError::KeyMismatch)
            }
            Err(e) => {
                return Err(CertError::UnsupportedKey {
                    reason: format!("cannot compare the key with the certificate: {e}"),
                })
            }
        }

        Ok(LoadedCert {
            key: Arc::new(key),
            info: Arc::new(info),
        })
    }

    /// Reads a `kubernetes.io/tls` Secret: `tls.crt` and `tls.key` from `data` (already base64-decoded) or
    /// `stringData` (hand-written manifests in file mode). `stringData` wins over `data` for the same key, as it
    /// does when the API server merges them. `source` is `secret <namespace>/<name>`.
    pub fn from_tls_secret(secret: &Secret) -> Result<LoadedCert, CertError> {
        let found = secret.type_.as_deref().unwrap_or("Opaque");
        if found != TLS_SECRET_TYPE {
            return Err(CertError::WrongSecretType {
                found: found.to_owned(),
            });
        }
        let field = |name: &'static str| -> Result<&[u8], CertError> {
            crate::pem::secret_field(secret, name).ok_or(CertError::MissingSecretField { field: name })
        };
        let cert_pem = field("tls.crt")?;
        let key_pem = field("tls.key")?;
        let source = format!(
            "secret {}/{}",
            secret.metadata.namespace.as_deref().unwrap_or("default"),
            secret.metadata.name.as_deref().unwrap_or("")
        );
        Self::from_pem(cert_pem, key_pem, source)
    }

    /// A fresh self-signed certificate (ECDSA P-256, valid from one hour ago for one year) for `names`, used as
    /// the default certificate for unknown or absent SNI. An empty `names` gives `portico.invalid`. Names that
    /// are not valid DNS names or IP addresses are skipped.
    pub fn self_signed(names: &[String]) -> LoadedCert {
        Self::self_signed_at(names, unix_now())
    }

    pub(crate) fn self_signed_at(names: &[String], now: i64) -> LoadedCert {
        use rcgen::{CertificateParams, DnType, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};

        let mut sans: Vec<SanType> = names
            .iter()
            .filter_map(|n| {
                let n = normalize_host(n);
                match n.parse() {
                    Ok(ip) => Some(SanType::IpAddress(ip)),
                    Err(_) => n.as_ref().try_into().ok().map(SanType::DnsName),
                }
            })
            .collect();
        if sans.is_empty() {
            sans.push(SanType::DnsName("portico.invalid".try_into().expect("valid DNS name")));
        }

        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Portico default certificate");
        params.subject_alt_names = sans;
        // `time::OffsetDateTime` without depending on `time`: x509-parser converts unix seconds for us.
        let at = |secs: i64| {
            x509_parser::time::ASN1Time::from_timestamp(secs)
                .expect("current time is within the calendar")
                .to_datetime()
        };
        params.not_before = at(now - 3600);
        params.not_after = at(now + 365 * 24 * 3600);

        // Generating a P-256 key and signing with it cannot fail with the ring backend; the PEM round trip
        // through `from_pem` keeps one code path for all certificates.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key generation");
        let cert = params.self_signed(&key).expect("self-signing");
        Self::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            "self-signed".to_owned(),
        )
        .expect("a freshly generated certificate loads")
    }

    /// One entry per host, in the given order: `Ok` when this certificate may serve the host at `now`, else the
    /// reason (expired / not yet valid first, then `DoesNotCover`).
    pub fn validate_for_hosts(&self, hosts: &[String], now: i64) -> Vec<(String, Result<(), CertError>)> {
        let validity = self.info.check_validity(now);
        hosts
            .iter()
            .map(|host| {
                let result = validity.clone().and_then(|()| self.info.check_covers(host));
                (host.clone(), result)
            })
            .collect()
    }

    /// Whether this certificate covers `host` (see [`CertInfo::covers`]).
    pub fn covers(&self, host: &str) -> bool {
        self.info.covers(host)
    }

    /// The DER chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }
}

// === PEM ===

fn parse_chain(cert_pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("the certificate", e))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    Ok(chain)
}

fn parse_key(key_pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    let mut keys = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(key_pem) {
        let (kind, der) = section.map_err(|e| pem_error("the private key", e))?;
        match kind {
            SectionKind::PrivateKey => keys.push(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))),
            SectionKind::RsaPrivateKey => keys.push(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der))),
            SectionKind::EcPrivateKey => keys.push(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der))),
            _ => {}
        }
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 if contains(key_pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") => Err(CertError::UnsupportedKey {
            reason: "the private key is encrypted".to_owned(),
        }),
        0 if contains(key_pem, b"-----BEGIN DSA PRIVATE KEY-----") => Err(CertError::UnsupportedKey {
            reason: "DSA keys are not supported".to_owned(),
        }),
        0 => Err(CertError::NoPrivateKey),
        count => Err(CertError::MultiplePrivateKeys { count }),
    }
}

fn pem_error(what: &'static str, e: pem::Error) -> CertError {
    CertError::MalformedPem {
        what,
        reason: e.to_string(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};

    use super::*;
    use crate::certs::testing::{self, TestCa, DAY, EC_PKCS8, EC_SEC1, RSA_PKCS1, RSA_PKCS8};

    fn load(cert: &str, key: &str) -> Result<LoadedCert, CertError> {
        LoadedCert::from_pem(cert.as_bytes(), key.as_bytes(), "test".to_owned())
    }

    /// A leaf for `a.example.test` valid now, with a fresh key of `alg`: (cert PEM, key PEM).
    fn leaf_pem(ca: &TestCa, alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
        let key = testing::key(alg);
        let now = unix_now();
        let cert = ca.issue_pem(&["a.example.test"], &key, now - DAY, now + DAY);
        (cert, key.serialize_pem())
    }

    #[test]
    fn describes_the_leaf() {
        let ca = TestCa::new();
        let key = testing::key(&PKCS_ECDSA_P256_SHA256);
        let cert = ca.issue_pem(&["a.example.test", "*.Example.Test", "192.0.2.1"], &key, 1_000, 2_000);
        let loaded = LoadedCert::from_pem(
            cert.as_bytes(),
            key.serialize_pem().as_bytes(),
            "secret default/foo".to_owned(),
        )
        .unwrap();
        let info = &loaded.info;
        assert_eq!(info.subject, "a.example.test");
        assert_eq!(info.dns_names, ["a.example.test", "*.example.test"]);
        assert_eq!(info.ip_addresses, ["192.0.2.1"]);
        assert_eq!((info.not_before, info.not_after), (1_000, 2_000));
        assert_eq!(info.issuer, "CN=Portico Test Root CA, O=Portico");
        assert_eq!(info.key_algorithm, "ECDSA-P256");
        assert_eq!(info.source, "secret default/foo");
        let (_, parsed) = x509_parser::parse_x509_certificate(&loaded.chain()[0]).unwrap();
        let expected_serial = parsed.raw_serial_as_string().replace(':', "");
        assert_eq!(info.serial, expected_serial);
        assert!(!info.serial.is_empty() && info.serial.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn keeps_the_chain_in_order() {
        let root = TestCa::new();
        let intermediate = root.intermediate();
        let (leaf, key) = leaf_pem(&intermediate, &PKCS_ECDSA_P256_SHA256);
        let loaded = load(&format!("{leaf}{}", intermediate.pem), &key).unwrap();
        assert_eq!(loaded.chain().len(), 2);
        assert_eq!(loaded.chain()[1], intermediate.der);
        assert_eq!(loaded.info.issuer, "CN=Portico Test Intermediate CA, O=Portico");

        // The first certificate is the leaf: an intermediate first means the key matches nothing.
        let reversed = load(&format!("{}{leaf}", intermediate.pem), &key);
        assert_eq!(reversed.unwrap_err(), CertError::KeyMismatch);
    }

    #[test]
    fn loads_ecdsa_p384_and_ed25519() {
        let ca = TestCa::new();
        let (cert, key) = leaf_pem(&ca, &PKCS_ECDSA_P384_SHA384);
        assert_eq!(load(&cert, &key).unwrap().info.key_algorithm, "ECDSA-P384");
        let (cert, key) = leaf_pem(&ca, &PKCS_ED25519);
        assert_eq!(load(&cert, &key).unwrap().info.key_algorithm, "Ed25519");
    }

    #[test]
    fn loads_rsa_in_pkcs8_and_pkcs1() {
        let ca = TestCa::new();
        let key = KeyPair::from_pem(RSA_PKCS8).unwrap();
        let now = unix_now();
        let cert = ca.issue_pem(&["rsa.example.test"], &key, now - DAY, now + DAY);
        for key_pem in [RSA_PKCS8, RSA_PKCS1] {
            let loaded = load(&cert, key_pem).unwrap_or_else(|e| panic!("{}: {e}", &key_pem[..40]));
            assert_eq!(loaded.info.key_algorithm, "RSA-2048");
        }
        assert_eq!(load(&cert, EC_SEC1).unwrap_err(), CertError::KeyMismatch);
    }

    #[test]
    fn loads_ecdsa_in_pkcs8_and_sec1() {
        let ca = TestCa::new();
        let key = KeyPair::from_pem(EC_PKCS8).unwrap();
        let now = unix_now();
        let cert = ca.issue_pem(&["ec.example.test"], &key, now - DAY, now + DAY);
        for key_pem in [EC_PKCS8, EC_SEC1] {
            let loaded = load(&cert, key_pem).unwrap_or_else(|e| panic!("{}: {e}", &key_pem[..40]));
            assert_eq!(loaded.info.key_algorithm, "ECDSA-P256");
        }
        assert_eq!(load(&cert, RSA_PKCS1).unwrap_err(), CertError::KeyMismatch);
    }

    #[test]
    fn rejects_a_key_of_another_certificate() {
        let ca = TestCa::new();
        let (cert, _) = leaf_pem(&ca, &PKCS_ECDSA_P256_SHA256);
        let (_, other_key) = leaf_pem(&ca, &PKCS_ECDSA_P256_SHA256);
        assert_eq!(load(&cert, &other_key).unwrap_err(), CertError::KeyMismatch);
    }

    #[test]
    fn accepts_one_combined_file_for_both() {
        let ca = TestCa::new();
        let (cert, key) = leaf_pem(&ca, &PKCS_ECDSA_P256_SHA256);
        let combined = format!("{key}{cert}");
        let loaded = load(&combined, &combined).unwrap();
        assert_eq!(loaded.chain().len(), 1);
    }

    #[test]
    fn names_each_pem_failure() {
        let ca = TestCa::new();
        let (cert, key) = leaf_pem(&ca, &PKCS_ECDSA_P256_SHA256);

        assert_eq!(load("", &key).unwrap_err(), CertError::NoCertificate);
        assert_eq!(load(&key, &key).unwrap_err(), CertError::NoCertificate);
        assert_eq!(load(&cert, &cert).unwrap_err(), CertError::NoPrivateKey);
        assert_eq!(load(&cert, "").unwrap_err(), CertError::NoPrivateKey);
        assert_eq!(
            load(&cert, &format!("{key}{EC_SEC1}")).unwrap_err(),
            CertError::MultiplePrivateKeys { count: 2 }
        );

        let truncated = &cert[..cert.find("-----END").unwrap()];
        assert!(matches!(
            load(truncated, &key).unwrap_err(),
            CertError::MalformedPem {
                what: "the certificate",
                ..
            }
        ));
        let bad_base64 = "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            load(&cert, bad_base64).unwrap_err(),
            CertError::MalformedPem {
                what: "the private key",
                ..
            }
        ));

        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkq\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            load(&cert, encrypted).unwrap_err(),
            CertError::UnsupportedKey {
                reason: "the private key is encrypted".to_owned()
            }
        );
        let garbage_key = "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgc=\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            load(&cert, garbage_key).unwrap_err(),
            CertError::UnsupportedKey { .. }
        ));
    }

    #[test]
    fn names_the_unparsable_certificate() {
        let ca = TestCa::new();
        let (cert, key) = leaf_pem(&ca, &PKCS_ECDSA_P256_SHA256);
        let garbage = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgc=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            load(garbage, &key).unwrap_err(),
            CertError::UnparsableCertificate { index: 0, .. }
        ));
        assert!(matches!(
            load(&format!("{cert}{garbage}"), &key).unwrap_err(),
            CertError::UnparsableCertificate { index: 1, .. }
        ));
    }

    #[test]
    fn validates_hosts_one_reason_each() {
        let ca = TestCa::new();
        let key = testing::key(&PKCS_ECDSA_P256_SHA256);
        let cert = ca.issue_pem(&["a.example.test", "*.wild.test"], &key, 1_000_000, 2_000_000);
        let loaded = load(&cert, &key.serialize_pem()).unwrap();
        let hosts: Vec<String> = ["a.example.test", "x.wild.test", "b.example.test", "*.wild.test"]
            .map(String::from)
            .into();

        let results = loaded.validate_for_hosts(&hosts, 1_500_000);
        let verdicts: Vec<(&str, bool)> = results.iter().map(|(h, r)| (h.as_str(), r.is_ok())).collect();
        assert_eq!(
            verdicts,
            [
                ("a.example.test", true),
                ("x.wild.test", true),
                ("b.example.test", false),
                ("*.wild.test", true)
            ]
        );
        assert_eq!(
            results[2].1,
            Err(CertError::DoesNotCover {
                host: "b.example.test".to_owned(),
                names: vec!["a.example.test".to_owned(), "*.wild.test".to_owned()],
            })
        );

        for (_, result) in loaded.validate_for_hosts(&hosts, 2_000_001) {
            assert_eq!(
                result,
                Err(CertError::Expired {
                    not_after: 2_000_000,
                    now: 2_000_001
                })
            );
        }
        let early = loaded.validate_for_hosts(&hosts[..1], 999_999);
        assert_eq!(
            early[0].1,
            Err(CertError::NotYetValid {
                not_before: 1_000_000,
                now: 999_999
            })
        );
        assert_eq!(
            early[0].1.as_ref().unwrap_err().to_string(),
            "certificate is not valid before 1970-01-12T13:46:40Z (now 1970-01-12T13:46:39Z)"
        );
    }

    #[test]
    fn expired_certificate_still_loads_but_fails_validation() {
        let ca = TestCa::new();
        let key = testing::key(&PKCS_ECDSA_P256_SHA256);
        let now = unix_now();
        let cert = ca.issue_pem(&["old.example.test"], &key, now - 30 * DAY, now - DAY);
        let loaded = load(&cert, &key.serialize_pem()).unwrap();
        assert!(!loaded.info.is_valid_at(now));
        let results = loaded.validate_for_hosts(&["old.example.test".to_owned()], now);
        assert!(matches!(results[0].1, Err(CertError::Expired { .. })));
    }

    // === Secrets ===

    fn secret(type_: Option<&str>, data: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect();
        let string_data: BTreeMap<String, String> = string_data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some("foo".to_owned()),
                namespace: Some("apps".to_owned()),
                ..ObjectMeta::default()
            },
            type_: type_.map(str::to_owned),
            data: (!data.is_empty()).then_some(data),
            string_data: (!string_data.is_empty()).then_some(string_data),
            ..Secret::default()
        }
    }

    #[test]
    fn reads_tls_secrets_from_data_or_string_data() {
        let ca = TestCa::new();
        let (cert, key) = leaf_pem(&ca, &PKCS_ECDSA_P256_SHA256);
        let tls = Some(TLS_SECRET_TYPE);

        let from_data = LoadedCert::from_tls_secret(&secret(tls, &[("tls.crt", &cert), ("tls.key", &key)], &[]));
        assert_eq!(from_data.unwrap().info.source, "secret apps/foo");

        let from_string =
            LoadedCert::from_tls_secret(&secret(tls, &[], &[("tls.crt", &cert), ("tls.key", &key)])).unwrap();
        assert!(from_string.covers("a.example.test"));

        // stringData wins over data, as the API server merges them.
        let (_, wrong_key) = leaf_pem(&ca, &PKCS_ECDSA_P256_SHA256);
        let mixed = secret(
            tls,
            &[("tls.crt", &cert), ("tls.key", &wrong_key)],
            &[("tls.key", &key)],
        );
        assert!(LoadedCert::from_tls_secret(&mixed).is_ok());
        let mixed = secret(
            tls,
            &[("tls.crt", &cert), ("tls.key", &key)],
            &[("tls.key", &wrong_key)],
        );
        assert_eq!(LoadedCert::from_tls_secret(&mixed).unwrap_err(), CertError::KeyMismatch);
    }

    #[test]
    fn rejects_secrets_of_the_wrong_shape() {
        let ca = TestCa::new();
        let (cert, key) = leaf_pem(&ca, &PKCS_ECDSA_P256_SHA256);
        let both = [("tls.crt", cert.as_str()), ("tls.key", key.as_str())];

        assert_eq!(
            LoadedCert::from_tls_secret(&secret(Some("Opaque"), &both, &[])).unwrap_err(),
            CertError::WrongSecretType {
                found: "Opaque".to_owned()
            }
        );
        assert_eq!(
            LoadedCert::from_tls_secret(&secret(None, &both, &[])).unwrap_err(),
            CertError::WrongSecretType {
                found: "Opaque".to_owned()
            }
        );
        let tls = Some(TLS_SECRET_TYPE);
        assert_eq!(
            LoadedCert::from_tls_secret(&secret(tls, &[("tls.crt", &cert)], &[])).unwrap_err(),
            CertError::MissingSecretField { field: "tls.key" }
        );
        assert_eq!(
            LoadedCert::from_tls_secret(&secret(tls, &[("tls.key", &key)], &[])).unwrap_err(),
            CertError::MissingSecretField { field: "tls.crt" }
        );
        assert_eq!(
            LoadedCert::from_tls_secret(&secret(tls, &[("tls.crt", ""), ("tls.key", &key)], &[])).unwrap_err(),
            CertError::MissingSecretField { field: "tls.crt" }
        );
    }

    // === self-signed ===

    #[test]
    fn self_signed_covers_its_names_for_a_year() {
        let now = 1_750_000_000;
        let names = [
            "Portico.Local.".to_owned(),
            "*.portico.local".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        let cert = LoadedCert::self_signed_at(&names, now);
        let info = &cert.info;
        assert_eq!(info.source, "self-signed");
        assert_eq!(info.key_algorithm, "ECDSA-P256");
        assert_eq!(info.dns_names, ["portico.local", "*.portico.local"]);
        assert!(cert.covers("portico.local") && cert.covers("x.portico.local") && cert.covers("127.0.0.1"));
        assert_eq!(info.issuer, "CN=Portico default certificate");
        assert!(info.is_valid_at(now) && info.is_valid_at(now + 364 * DAY));
        assert!(!info.is_valid_at(now + 366 * DAY));

        let unnamed = LoadedCert::self_signed(&[]);
        assert_eq!(unnamed.info.dns_names, ["portico.invalid"]);
        assert!(unnamed.info.is_valid_at(unix_now()));
    }
}
