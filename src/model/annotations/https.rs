//! Plain HTTP to HTTPS and HSTS: `ssl-redirect`, `force-ssl-redirect`, `portico.dev/hsts-*`. Runtime home: the
//! route's filters (`HttpsRedirect`, decided with the routing table's TLS hosts, and `Hsts`).

use super::{boolean, boolean_any, get, IngressMeta};

pub const SSL_REDIRECT: [&str; 2] = ["portico.dev/ssl-redirect", "nginx.ingress.kubernetes.io/ssl-redirect"];
pub const FORCE_SSL_REDIRECT: [&str; 2] = [
    "portico.dev/force-ssl-redirect",
    "nginx.ingress.kubernetes.io/force-ssl-redirect",
];
pub const HSTS_MAX_AGE: &str = "portico.dev/hsts-max-age";
pub const HSTS_INCLUDE_SUBDOMAINS: &str = "portico.dev/hsts-include-subdomains";
pub const HSTS_PRELOAD: &str = "portico.dev/hsts-preload";

/// Redirects to HTTPS and the HSTS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Https {
    /// Redirect plain HTTP to HTTPS for hosts with TLS (default true).
    pub redirect: bool,
    /// Redirect plain HTTP to HTTPS even for hosts without TLS here (TLS terminated elsewhere).
    pub force_redirect: bool,
    /// The `Strict-Transport-Security` value sent on HTTPS responses, if enabled.
    pub hsts: Option<String>,
}

impl Default for Https {
    fn default() -> Self {
        Self {
            redirect: true,
            force_redirect: false,
            hsts: None,
        }
    }
}

impl Https {
    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        let d = Self::default();
        let include_sub = boolean(meta, HSTS_INCLUDE_SUBDOMAINS)?;
        let preload = boolean(meta, HSTS_PRELOAD)?;
        let hsts = match get(meta, HSTS_MAX_AGE) {
            None => {
                if include_sub.is_some() || preload.is_some() {
                    return Err(format!("annotation {HSTS_MAX_AGE} is required to enable HSTS"));
                }
                None
            }
            Some(v) => {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("annotation {HSTS_MAX_AGE}: {v:?} is not a number of seconds"))?;
                let mut h = format!("max-age={secs}");
                if include_sub == Some(true) {
                    h.push_str("; includeSubDomains");
                }
                if preload == Some(true) {
                    h.push_str("; preload");
                }
                Some(h)
            }
        };
        Ok(Self {
            redirect: boolean_any(meta, &SSL_REDIRECT)?.unwrap_or(d.redirect),
            force_redirect: boolean_any(meta, &FORCE_SSL_REDIRECT)?.unwrap_or(d.force_redirect),
            hsts,
        })
    }

    /// Appends ` [..]` markers for what differs from the defaults.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(h) = &self.hsts {
            let _ = write!(out, " [hsts {h}]");
        }
    }
}
