//! `ssl-passthrough`: the Ingress's hosts are served at layer 4 on the TLS listeners of its class's listener
//! set. The gateway reads the ClientHello's server name and splices the connection, still encrypted, to the
//! backend of the host's `/` path (the Service port is the application's TLS port); it never terminates TLS
//! for these hosts. As in ingress-nginx, the Ingress's other annotations have no effect (there is no HTTP
//! request to apply them to), except balancing and health checks ([`policy`]). Such an Ingress is not part of the HTTP routing model at all (its hosts get no
//! HTTP routes, its `spec.tls` is not used); `model::l4` translates it.

use super::super::ingress::IngressMeta;
use super::{ActiveCheck, Balance};

pub const SSL_PASSTHROUGH: [&str; 2] = [
    "portico.dev/ssl-passthrough",
    "nginx.ingress.kubernetes.io/ssl-passthrough",
];

/// Whether the Ingress asks for passthrough: `Ok(true)` with `"true"`, `Ok(false)` when unset or `"false"`, an
/// error for another value or the two names disagreeing (the Ingress is then served neither way).
pub fn asked(meta: &IngressMeta) -> Result<bool, String> {
    Ok(super::boolean_any(meta, &SSL_PASSTHROUGH)?.unwrap_or(false))
}

/// Whether the HTTP translation leaves the Ingress to `model::l4`: it asks for passthrough, or its
/// passthrough annotation is invalid (then `model::l4` reports it, once).
pub fn leaves_http(meta: &IngressMeta) -> bool {
    meta.annotations.is_some() && asked(meta) != Ok(false)
}

/// How a passthrough Ingress's connections are balanced and its endpoints checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer4Policy {
    /// `load-balance` as for HTTP: round robin, least request (counting open connections), source hash.
    pub balance: Balance,
    /// `health-check: tcp` (a TCP connect) and its interval, timeout, fall and rise.
    pub check: Option<ActiveCheck>,
}

/// The balancing and health-check annotations of a passthrough Ingress. Cookie affinity and HTTP checks need
/// HTTP, which a passthrough connection never shows the gateway: errors.
pub fn policy(meta: &IngressMeta) -> Result<Layer4Policy, String> {
    let balance = super::affinity::parse_balance(meta)?;
    if balance == Balance::Cookie {
        return Err("cookie affinity needs HTTP, which ssl-passthrough never shows the gateway".into());
    }
    let check = super::backend::parse_active_check(meta)?;
    if check.as_ref().is_some_and(|c| c.http_path.is_some()) {
        return Err(format!(
            "annotation {}: http checks speak plain HTTP to a TLS backend; use tcp with ssl-passthrough",
            super::backend::HEALTH_CHECK
        ));
    }
    Ok(Layer4Policy { balance, check })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::annotations::test_meta as meta;

    #[test]
    fn true_false_unset_and_bad_values() {
        assert_eq!(asked(&meta(&[])), Ok(false));
        assert_eq!(asked(&meta(&[(SSL_PASSTHROUGH[1], "true")])), Ok(true));
        assert_eq!(asked(&meta(&[(SSL_PASSTHROUGH[0], " true ")])), Ok(true));
        assert_eq!(asked(&meta(&[(SSL_PASSTHROUGH[1], "false")])), Ok(false));
        assert!(asked(&meta(&[(SSL_PASSTHROUGH[1], "yes")])).is_err());
        assert!(asked(&meta(&[(SSL_PASSTHROUGH[0], "true"), (SSL_PASSTHROUGH[1], "false")])).is_err());
        assert!(!leaves_http(&meta(&[])));
        assert!(leaves_http(&meta(&[(SSL_PASSTHROUGH[1], "yes")])));
    }

    #[test]
    fn balancing_and_tcp_checks_apply_cookies_and_http_checks_do_not() {
        assert_eq!(
            policy(&meta(&[])),
            Ok(Layer4Policy {
                balance: Balance::RoundRobin,
                check: None
            })
        );
        let p = policy(&meta(&[
            ("portico.dev/load-balance", "source-hash"),
            ("portico.dev/health-check", "tcp"),
            ("portico.dev/health-check-fall", "4"),
        ]))
        .unwrap();
        assert_eq!(p.balance, Balance::SourceHash);
        assert_eq!(p.check.map(|c| (c.http_path, c.fall)), Some((None, 4)));
        assert!(policy(&meta(&[("nginx.ingress.kubernetes.io/affinity", "cookie")])).is_err());
        assert!(policy(&meta(&[("portico.dev/health-check", "http")])).is_err());
    }
}
