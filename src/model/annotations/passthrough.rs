//! `ssl-passthrough`: the Ingress's hosts are served at layer 4 on the TLS listeners of its class's listener
//! set. The gateway reads the ClientHello's server name and splices the connection, still encrypted, to the
//! backend of the host's `/` path (the Service port is the application's TLS port); it never terminates TLS
//! for these hosts. As in ingress-nginx, the Ingress's other annotations have no effect: there is no HTTP
//! request to apply them to. Such an Ingress is not part of the HTTP routing model at all (its hosts get no
//! HTTP routes, its `spec.tls` is not used); `model::l4` translates it.

use super::super::ingress::IngressMeta;

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
}
