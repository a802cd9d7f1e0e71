//! Client certificates (mutual TLS): `auth-tls-secret`, `auth-tls-verify-client`, `auth-tls-verify-depth`,
//! `auth-tls-pass-certificate-to-upstream`, `auth-tls-error-page`, by ingress-nginx's names and the same names
//! under `portico.dev/`.
//!
//! Runtime homes: the certificate stage (`certs::build`) gives each host with these annotations a TLS
//! configuration of its own that asks for a client certificate and verifies it against the Secret's `ca.crt`
//! (and `ca.crl`, when present); the route's `ClientCert` filter then requires one (`on`), reports what was
//! verified to the backend, and answers 421 on a connection whose handshake did not use that host's settings.
//!
//! The CA Secret must be in the Ingress's namespace (`namespace/name` or `name`), as for `proxy-ssl-secret`; its
//! contents are read by translation.

use std::hash::{Hash, Hasher};

use super::{boolean_any, string_any, IngressMeta};

pub const SECRET: [&str; 2] = [
    "portico.dev/auth-tls-secret",
    "nginx.ingress.kubernetes.io/auth-tls-secret",
];
pub const VERIFY_CLIENT: [&str; 2] = [
    "portico.dev/auth-tls-verify-client",
    "nginx.ingress.kubernetes.io/auth-tls-verify-client",
];
pub const VERIFY_DEPTH: [&str; 2] = [
    "portico.dev/auth-tls-verify-depth",
    "nginx.ingress.kubernetes.io/auth-tls-verify-depth",
];
pub const PASS_TO_UPSTREAM: [&str; 2] = [
    "portico.dev/auth-tls-pass-certificate-to-upstream",
    "nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream",
];
pub const ERROR_PAGE: [&str; 2] = [
    "portico.dev/auth-tls-error-page",
    "nginx.ingress.kubernetes.io/auth-tls-error-page",
];

/// What is asked of the client's certificate (nginx's `ssl_verify_client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyClient {
    /// A certificate chaining to the CA is required (400, or the error page, without one).
    On,
    /// Asked for; when sent it must chain to the CA.
    Optional,
    /// Asked for and passed on, not verified against the CA (the backend decides).
    OptionalNoCa,
}

/// One Ingress's client-certificate settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCert {
    /// The CA Secret's name, in the Ingress's namespace.
    pub secret: String,
    pub verify: VerifyClient,
    /// The longest chain accepted: 1 means the client's certificate is signed by the CA itself (nginx's default).
    pub depth: u32,
    /// Send the client's certificate upstream (`ssl-client-cert`, URL-encoded PEM).
    pub pass_to_upstream: bool,
    /// Where a client without a required certificate is redirected (302), instead of a 400.
    pub error_page: Option<String>,
    /// `ca.crt` (PEM), read by translation.
    pub ca_pem: Vec<u8>,
    /// `ca.crl` (PEM), when the Secret has one: certificates it revokes are refused.
    pub crl_pem: Option<Vec<u8>>,
}

impl ClientCert {
    /// `None` without `auth-tls-secret`; the other keys without it are an error.
    pub fn from_meta(meta: &IngressMeta) -> Result<Option<Self>, String> {
        let Some(v) = string_any(meta, &SECRET)? else {
            for k in [VERIFY_CLIENT, VERIFY_DEPTH, PASS_TO_UPSTREAM, ERROR_PAGE]
                .iter()
                .flatten()
            {
                if super::get(meta, k).is_some() {
                    return Err(format!("annotation {k} needs {}", SECRET[1]));
                }
            }
            return Ok(None);
        };
        let ns = meta.namespace.as_deref().unwrap_or("default");
        let secret = super::backend::same_namespace_secret(SECRET[1], ns, v)?;
        let verify = match string_any(meta, &VERIFY_CLIENT)? {
            None | Some("on") => VerifyClient::On,
            Some("optional") => VerifyClient::Optional,
            Some("optional_no_ca") => VerifyClient::OptionalNoCa,
            Some("off") => {
                return Err(format!(
                    "annotation {}: \"off\" with {} set is ambiguous; remove both to turn client certificates off",
                    VERIFY_CLIENT[1], SECRET[1]
                ))
            }
            Some(v) => {
                return Err(format!(
                    "annotation {}: {v:?} is not on, optional or optional_no_ca",
                    VERIFY_CLIENT[1]
                ))
            }
        };
        let depth = match string_any(meta, &VERIFY_DEPTH)? {
            None => 1,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|d| (1..=10).contains(d))
                .ok_or_else(|| format!("annotation {}: {v:?} is not a depth from 1 to 10", VERIFY_DEPTH[1]))?,
        };
        let error_page = match string_any(meta, &ERROR_PAGE)? {
            None => None,
            Some(u) => {
                let ok = (u.starts_with("https://") || u.starts_with("http://") || u.starts_with('/'))
                    && http::HeaderValue::from_str(u).is_ok()
                    && u.parse::<http::Uri>().is_ok();
                if !ok {
                    return Err(format!(
                        "annotation {}: {u:?} is not an absolute URL or a path",
                        ERROR_PAGE[1]
                    ));
                }
                Some(u.to_string())
            }
        };
        Ok(Some(Self {
            secret,
            verify,
            depth,
            pass_to_upstream: boolean_any(meta, &PASS_TO_UPSTREAM)?.unwrap_or(false),
            error_page,
            ca_pem: Vec::new(),
            crl_pem: None,
        }))
    }

    /// Reads `ca.crt` (and `ca.crl`) from the Secret among `secrets` (pure; translation calls it).
    pub fn resolve(&mut self, namespace: &str, secrets: &[k8s_openapi::api::core::v1::Secret]) -> Result<(), String> {
        let name = &self.secret;
        let secret = super::backend::find_secret(secrets, namespace, name)
            .ok_or_else(|| format!("CA Secret {namespace}/{name} (annotation {}) not found", SECRET[1]))?;
        let pem = crate::pem::secret_field(secret, "ca.crt")
            .ok_or_else(|| format!("CA Secret {namespace}/{name} (annotation {}) has no ca.crt", SECRET[1]))?;
        let crl = crate::pem::secret_field(secret, "ca.crl");
        crate::pem::client_verifier(pem, crl).map_err(|e| format!("CA Secret {namespace}/{name}: {e}"))?;
        self.ca_pem = pem.to_vec();
        self.crl_pem = crl.map(<[u8]>::to_vec);
        Ok(())
    }

    /// What identifies the TLS settings a handshake used (CA, CRL, depth, verification): a route checks that
    /// its connection's handshake had them.
    pub fn tls_id(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.ca_pem, &self.crl_pem, self.depth, self.verify).hash(&mut h);
        // Zero is never an id, so "no client certificate settings" cannot collide with one.
        h.finish().max(1)
    }

    /// Appends a ` [..]` marker.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            " [client-cert {:?} ca={} depth={}{}]",
            self.verify,
            self.secret,
            self.depth,
            if self.pass_to_upstream { " pass" } else { "" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_meta as meta;

    #[test]
    fn settings_parse_and_fail_closed() {
        assert_eq!(ClientCert::from_meta(&meta(&[])), Ok(None));
        let c = ClientCert::from_meta(&meta(&[
            ("nginx.ingress.kubernetes.io/auth-tls-secret", "default/ca"),
            ("nginx.ingress.kubernetes.io/auth-tls-verify-client", "optional"),
            ("nginx.ingress.kubernetes.io/auth-tls-verify-depth", "2"),
            (
                "nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream",
                "true",
            ),
            (
                "nginx.ingress.kubernetes.io/auth-tls-error-page",
                "https://example.com/nocert",
            ),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.secret.as_str(), c.verify, c.depth, c.pass_to_upstream),
            ("ca", VerifyClient::Optional, 2, true)
        );
        assert_eq!(c.error_page.as_deref(), Some("https://example.com/nocert"));
        for (pairs, needle) in [
            (
                vec![("nginx.ingress.kubernetes.io/auth-tls-verify-client", "on")],
                "needs",
            ),
            (
                vec![("nginx.ingress.kubernetes.io/auth-tls-secret", "other/ca")],
                "namespace",
            ),
            (
                vec![
                    ("nginx.ingress.kubernetes.io/auth-tls-secret", "ca"),
                    ("nginx.ingress.kubernetes.io/auth-tls-verify-client", "maybe"),
                ],
                "not on, optional",
            ),
            (
                vec![
                    ("nginx.ingress.kubernetes.io/auth-tls-secret", "ca"),
                    ("nginx.ingress.kubernetes.io/auth-tls-verify-client", "off"),
                ],
                "ambiguous",
            ),
            (
                vec![
                    ("nginx.ingress.kubernetes.io/auth-tls-secret", "ca"),
                    ("nginx.ingress.kubernetes.io/auth-tls-verify-depth", "0"),
                ],
                "depth",
            ),
            (
                vec![
                    ("nginx.ingress.kubernetes.io/auth-tls-secret", "ca"),
                    ("nginx.ingress.kubernetes.io/auth-tls-error-page", "javascript:alert(1)"),
                ],
                "not an absolute URL",
            ),
        ] {
            let e = ClientCert::from_meta(&meta(&pairs)).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }
}
