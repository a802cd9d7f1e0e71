//! Test fixtures: a throw-away CA built with rcgen, and fixed keys in the encodings rcgen with ring cannot
//! produce (RSA keys at all, PKCS#1, SEC1).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::time::unix_now;
use super::LoadedCert;

pub const DAY: i64 = 24 * 3600;

/// Sets rcgen's validity from unix seconds (the `time` crate is not a direct dependency; x509-parser converts).
pub fn set_validity(params: &mut CertificateParams, not_before: i64, not_after: i64) {
    let at = |secs: i64| x509_parser::time::ASN1Time::from_timestamp(secs).unwrap().to_datetime();
    params.not_before = at(not_before);
    params.not_after = at(not_after);
}

pub fn key(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).unwrap()
}

/// A CA (root or intermediate) that issues test certificates.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pub der: CertificateDer<'static>,
    pub pem: String,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A self-signed root, valid from a day ago for ten years.
    pub fn new() -> TestCa {
        let (params, key) = Self::ca_params("Portico Test Root CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            params,
            key,
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self) -> TestCa {
        let (params, key) = Self::ca_params("Portico Test Intermediate CA");
        let cert = params.signed_by(&key, &self.issuer()).unwrap();
        TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            params,
            key,
        }
    }

    fn ca_params(cn: &str) -> (CertificateParams, KeyPair) {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, "Portico");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = unix_now();
        set_validity(&mut params, now - DAY, now + 3650 * DAY);
        (params, key(&PKCS_ECDSA_P256_SHA256))
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// A PEM leaf for `names` (DNS or IP; the first is also the CN) with `key`, valid over the given period.
    pub fn issue_pem(&self, names: &[&str], key: &KeyPair, not_before: i64, not_after: i64) -> String {
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, not_before, not_after);
        params.signed_by(key, &self.issuer()).unwrap().pem()
    }

    /// A PEM client certificate (extended key usage clientAuth) for common name `cn` with `key`, valid over the
    /// given period.
    pub fn issue_client_pem(&self, cn: &str, key: &KeyPair, not_before: i64, not_after: i64) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Portico Clients");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, not_before, not_after);
        params.signed_by(key, &self.issuer()).unwrap().pem()
    }

    /// A PEM revocation list, signed by this CA, revoking the certificates (PEM) in `revoked`.
    pub fn crl_pem(&self, revoked: &[&str]) -> String {
        let at = |secs: i64| x509_parser::time::ASN1Time::from_timestamp(secs).unwrap().to_datetime();
        let now = unix_now();
        let revoked_certs = revoked
            .iter()
            .map(|pem| {
                let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
                let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
                rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(cert.raw_serial()),
                    revocation_time: at(now - 3600),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }
            })
            .collect();
        rcgen::CertificateRevocationListParams {
            this_update: at(now - 3600),
            next_update: at(now + 30 * DAY),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer())
        .unwrap()
        .pem()
        .unwrap()
    }

    /// A loaded P-256 leaf for `names`, valid from a day ago for 30 days, with the given `source`.
    /// A client that trusts only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = Resumption::disabled();
        Arc::new(config)
    }

    pub fn leaf(&self, names: &[&str], source: &str) -> LoadedCert {
        let key = key(&PKCS_ECDSA_P256_SHA256);
        let now = unix_now();
        let pem = self.issue_pem(names, &key, now - DAY, now + 30 * DAY);
        LoadedCert::from_pem(pem.as_bytes(), key.serialize_pem().as_bytes(), source.to_owned()).unwrap()
    }
}

// Test keys generated once with openssl 3.0 (`openssl genrsa 2048`, `openssl pkcs8 -topk8 -nocrypt`,
// `openssl rsa -traditional`, `openssl ecparam -name prime256v1 -genkey -noout`).
// Each pair is the same key in two encodings. Test-only: never use them for anything else.

/// RSA 2048, PKCS#8 (`PRIVATE KEY`).
pub const RSA_PKCS8: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDjfv3z6G45u3mu\n\
p3kE/VuIWzbekgDu+yQQ2++MzdxLp31PaoLOtArwWyMHblCyFG2jbcX58wIDGSXQ\n\
W8IV037U7e6M+qbxvZ7gfMUfL99JAXWX9RAtPZzVlxdAP0IBHmshNhYoCUw/AcP1\n\
sk3Ogu9PuV2BwG415ZAYNAUVT0J5whjG2XxYsV+iUXpPtcgKpWGO/P+MKrnlOwh+\n\
wau875Npy9fYDrHAyP7rIROK1VQA8drWHDceqCnxzJOw4xCAp3dC/UspPKoNtp/G\n\
TCzbKR0JSpoW7LQ2/Y/l7ItRTcaq5g0TH1+24D4HfvkoRgNyzDXVhFjTie8YZUnj\n\
/x1RyOO7AgMBAAECggEAa1cPpya734SsUPLXQLn0lt2HAbR9OUWJSmUj3dmCQLYa\n\
A787UiGUab1uxUJRU/0ckDiq6Zk2EVUryOiKprbAiOJtJNrdq4FvdfeZIPJ7FdzY\n\
6eapB9ei6Qrd3yQZ1iJOpQB6qtBcR/xixEqpuK+CECljy+WKeubCuxDMdzYLJRxC\n\
wr7Vpvj7MyZU36g01c/1iqvUrkb9a3WQSl8pnj0z//aMgnC8Lf19Os8mLzQzEtLk\n\
SgOYIcxMGoKKOLF6zFO26qlXD0awVVkavX2IkCYe8TDi+eBzClzP8jK0VZ9uIrX4\n\
4/cS0Qccg/jCOPalyEeWqqgy/1xqBqRzDTYBGTt80QKBgQD17eWKYXUIQmRdoisf\n\
hCxtEwSsxABLAfn0Ie4zNbGYGAlZhddT/tom6JDXUAtlSD8WPBTJvWAVNo+QNVY5\n\
zx6mZuABVyKgDfkMd7ccNpY3DVYs40Igyp+auUs9g0rkSlS6NqmXaoe2VyzAXAmi\n\
z8TF6O3ODO72j6flhSrDUygGSwKBgQDsz9uffo0LnmsOfxjc1q/l8hep8aYy8h1f\n\
BWC9W9V7J4zRfVvoXwI36bDdtlVudVvxizC3ZJ1GPn81aw2U7KpWtB4aG/eHM9j6\n\
Ng/949SPhKrjm0vb967otehCy5/yYg6Um4N044y6LiO37LO8B+PoysQrUSngKCfl\n\
kDUsWQTyUQKBgQCDO7utqGvnSGZ+gLc6TjHW0rs/5iex3xAe8qxFr3VhkBINL5rE\n\
O871zEzeWNx7452mo9EEBoZrS344mf21Q407htIqZPEZL9uih4+zAn4OSpOdyHfV\n\
P8sDqbU40gL456Fm7Rx6rGJXLxW2YGbT9sMuSSn9NnGeKPKTTAiRyqIlGQKBgHbC\n\
Hp+ztUQYZBPXBT7qozer2tYtC24NIVGfvs33me2y/dmpBkhYLSKhHUNyxxEn5b4S\n\
UZIG8SBjAyRk1WDT9vCYT2hEkjPJeoywRADNGrIGlDSkkrxzT9IAN8QXndTN/AXm\n\
n1wlKVPNA7ifCdvIETGTTiFzCI8TVD65vRDKa8KhAoGAXWaKxY8Y6oO+eeHhMQ4S\n\
GP6IShJBOweBrK9fbB6OwA7+nZ0QIMdhwW93TkfQh+qPXTfRObjvshOamqPy1y+o\n\
I89u8qMh7pI/57d2h8QpcEehi0IPhqQ5+3Du74jMdkV7aPd32YlleeG5h10gLN/0\n\
XVBHjFWaYOM2Gr7MzJ39Pm0=\n\
-----END PRIVATE KEY-----\n\
";
/// The same RSA key, PKCS#1 (`RSA PRIVATE KEY`).
pub const RSA_PKCS1: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEowIBAAKCAQEA43798+huObt5rqd5BP1biFs23pIA7vskENvvjM3cS6d9T2qC\n\
zrQK8FsjB25QshRto23F+fMCAxkl0FvCFdN+1O3ujPqm8b2e4HzFHy/fSQF1l/UQ\n\
LT2c1ZcXQD9CAR5rITYWKAlMPwHD9bJNzoLvT7ldgcBuNeWQGDQFFU9CecIYxtl8\n\
WLFfolF6T7XICqVhjvz/jCq55TsIfsGrvO+TacvX2A6xwMj+6yETitVUAPHa1hw3\n\
Hqgp8cyTsOMQgKd3Qv1LKTyqDbafxkws2ykdCUqaFuy0Nv2P5eyLUU3GquYNEx9f\n\
tuA+B375KEYDcsw11YRY04nvGGVJ4/8dUcjjuwIDAQABAoIBAGtXD6cmu9+ErFDy\n\
10C59JbdhwG0fTlFiUplI93ZgkC2GgO/O1IhlGm9bsVCUVP9HJA4qumZNhFVK8jo\n\
iqa2wIjibSTa3auBb3X3mSDyexXc2OnmqQfXoukK3d8kGdYiTqUAeqrQXEf8YsRK\n\
qbivghApY8vlinrmwrsQzHc2CyUcQsK+1ab4+zMmVN+oNNXP9Yqr1K5G/Wt1kEpf\n\
KZ49M//2jIJwvC39fTrPJi80MxLS5EoDmCHMTBqCijixesxTtuqpVw9GsFVZGr19\n\
iJAmHvEw4vngcwpcz/IytFWfbiK1+OP3EtEHHIP4wjj2pchHlqqoMv9cagakcw02\n\
ARk7fNECgYEA9e3limF1CEJkXaIrH4QsbRMErMQASwH59CHuMzWxmBgJWYXXU/7a\n\
JuiQ11ALZUg/FjwUyb1gFTaPkDVWOc8epmbgAVcioA35DHe3HDaWNw1WLONCIMqf\n\
mrlLPYNK5EpUujapl2qHtlcswFwJos/Exejtzgzu9o+n5YUqw1MoBksCgYEA7M/b\n\
n36NC55rDn8Y3Nav5fIXqfGmMvIdXwVgvVvVeyeM0X1b6F8CN+mw3bZVbnVb8Ysw\n\
t2SdRj5/NWsNlOyqVrQeGhv3hzPY+jYP/ePUj4Sq45tL2/eu6LXoQsuf8mIOlJuD\n\
dOOMui4jt+yzvAfj6MrEK1Ep4Cgn5ZA1LFkE8lECgYEAgzu7rahr50hmfoC3Ok4x\n\
1tK7P+Ynsd8QHvKsRa91YZASDS+axDvO9cxM3ljce+OdpqPRBAaGa0t+OJn9tUON\n\
O4bSKmTxGS/booePswJ+DkqTnch31T/LA6m1ONIC+OehZu0ceqxiVy8VtmBm0/bD\n\
Lkkp/TZxnijyk0wIkcqiJRkCgYB2wh6fs7VEGGQT1wU+6qM3q9rWLQtuDSFRn77N\n\
95ntsv3ZqQZIWC0ioR1DcscRJ+W+ElGSBvEgYwMkZNVg0/bwmE9oRJIzyXqMsEQA\n\
zRqyBpQ0pJK8c0/SADfEF53UzfwF5p9cJSlTzQO4nwnbyBExk04hcwiPE1Q+ub0Q\n\
ymvCoQKBgF1misWPGOqDvnnh4TEOEhj+iEoSQTsHgayvX2wejsAO/p2dECDHYcFv\n\
d05H0Ifqj1030Tm477ITmpqj8tcvqCPPbvKjIe6SP+e3dofEKXBHoYtCD4akOftw\n\
7u+IzHZFe2j3d9mJZXnhuYddICzf9F1QR4xVmmDjNhq+zMyd/T5t\n\
-----END RSA PRIVATE KEY-----\n\
";
/// ECDSA P-256, PKCS#8.
pub const EC_PKCS8: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgklRDiY6x2Yaw1JQc\n\
3Q0q8S4HWrWTdZhxnDfyf5cKuyihRANCAAQJjQyWrsdnz9FCdNNFA/BBQoNYra1x\n\
aAoxnNw5m6aeQhlwYJDZ27NcKWZX5k8ZQ3Y3ex/kIyVcyriZgsHPixJp\n\
-----END PRIVATE KEY-----\n\
";
/// The same P-256 key, SEC1 (`EC PRIVATE KEY`).
pub const EC_SEC1: &str = "\
-----BEGIN EC PRIVATE KEY-----\n\
MHcCAQEEIJJUQ4mOsdmGsNSUHN0NKvEuB1q1k3WYcZw38n+XCrsooAoGCCqGSM49\n\
AwEHoUQDQgAECY0Mlq7HZ8/RQnTTRQPwQUKDWK2tcWgKMZzcOZumnkIZcGCQ2duz\n\
XClmV+ZPGUN2N3sf5CMlXMq4mYLBz4sSaQ==\n\
-----END EC PRIVATE KEY-----\n\
";

fn ring() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that accepts any server certificate (to look at what was presented), with or without SNI.
pub fn accept_any_client(send_sni: bool) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::upstream::tls::NoVerify(ring())))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.enable_sni = send_sni;
    Arc::new(config)
}
