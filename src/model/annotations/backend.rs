//! How the gateway talks to an Ingress's backends: the protocol (`backend-protocol`), TLS to them (`proxy-ssl-*`),
//! the response timeout (`proxy-read-timeout`) and active health checks (`portico.dev/health-check*`).
//!
//! Runtime homes: the protocol and TLS make the Ingress's entry in `upstream::policy` (its own TLS connection
//! pool); the protocol (h2c) and timeout go into the route's send policy (`model::route::SendPolicy`); the check
//! goes with each of the Ingress's backends (`upstream::Backend`), run by the health checker.

use std::time::Duration;

use super::{count_annotation, duration_annotation, get, string_any, timeout_any, IngressMeta};

pub const UPSTREAM_TIMEOUT: [&str; 2] = [
    "portico.dev/upstream-timeout",
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
];
pub const HEALTH_CHECK: &str = "portico.dev/health-check";
pub const HEALTH_CHECK_PATH: &str = "portico.dev/health-check-path";
pub const HEALTH_CHECK_INTERVAL: &str = "portico.dev/health-check-interval";
pub const HEALTH_CHECK_TIMEOUT: &str = "portico.dev/health-check-timeout";
pub const HEALTH_CHECK_FALL: &str = "portico.dev/health-check-fall";
pub const HEALTH_CHECK_RISE: &str = "portico.dev/health-check-rise";
pub const BACKEND_PROTOCOL: [&str; 2] = [
    "portico.dev/backend-protocol",
    "nginx.ingress.kubernetes.io/backend-protocol",
];
pub const PROXY_SSL_VERIFY: [&str; 2] = [
    "portico.dev/proxy-ssl-verify",
    "nginx.ingress.kubernetes.io/proxy-ssl-verify",
];
pub const PROXY_SSL_SECRET: [&str; 2] = [
    "portico.dev/proxy-ssl-secret",
    "nginx.ingress.kubernetes.io/proxy-ssl-secret",
];
pub const PROXY_SSL_NAME: [&str; 2] = [
    "portico.dev/proxy-ssl-name",
    "nginx.ingress.kubernetes.io/proxy-ssl-name",
];

/// The backend half of an Ingress's annotations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendPolicy {
    /// The protocol spoken to the backends.
    pub protocol: BackendProtocol,
    /// TLS to the backends (with `BackendProtocol::Https` and `Grpcs` only).
    pub tls: Option<UpstreamTls>,
    /// Time to the upstream's response headers and between two reads of its body, replacing the configured
    /// defaults (ingress-nginx's `proxy-read-timeout` means both).
    pub timeout: Option<Duration>,
    /// Active health checks of the backends (off when `None`).
    pub check: Option<ActiveCheck>,
}

impl BackendPolicy {
    pub fn from_meta(meta: &IngressMeta) -> Result<Self, String> {
        let protocol = parse_backend_protocol(meta)?;
        Ok(Self {
            protocol,
            tls: parse_upstream_tls(meta, protocol)?,
            timeout: timeout_any(meta, &UPSTREAM_TIMEOUT)?,
            check: parse_active_check(meta)?,
        })
    }

    /// Appends ` [..]` markers for what differs from the defaults.
    pub fn describe_into(&self, out: &mut String) {
        use std::fmt::Write;
        if let Some(c) = &self.check {
            let _ = write!(out, " [check {}]", c.http_path.as_deref().unwrap_or("tcp"));
        }
        if self.protocol != BackendProtocol::Http1 {
            let _ = write!(out, " [backend {:?}]", self.protocol);
        }
        if let Some(t) = self.timeout {
            let _ = write!(out, " [timeout {}s]", t.as_secs());
        }
        if let Some(t) = &self.tls {
            let _ = write!(out, " [tls verify={}", t.verify);
            if let Some(n) = &t.server_name {
                let _ = write!(out, " name={n}");
            }
            out.push(']');
        }
    }
}

/// An active health check, as HAProxy's `check inter 5s fall 3 rise 2` with `option httpchk GET /path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActiveCheck {
    /// `Some(path)`: HTTP GET, 2xx/3xx is up; `None`: a TCP connect.
    pub http_path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
}

/// What the gateway speaks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendProtocol {
    #[default]
    Http1,
    /// HTTP/2 without TLS (prior knowledge): `H2C` and `GRPC`.
    H2c,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`): `HTTPS`.
    Https,
    /// HTTP/2 over TLS (ALPN `h2`): `GRPCS`.
    Grpcs,
}

/// How the gateway talks TLS to an Ingress's backends.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UpstreamTls {
    /// The backend's certificate must chain to the CA in `ca_secret` (default off, as ingress-nginx).
    pub verify: bool,
    /// The Secret (in the Ingress's namespace) whose `ca.crt` holds the CA, by name.
    pub ca_secret: Option<String>,
    /// The CA bundle (PEM) read from `ca_secret` by translation; set whenever `verify` is.
    pub ca_pem: Option<Vec<u8>>,
    /// The name sent as SNI and verified; `None`: the upstream Host (`upstream-host`) if set, else the endpoint's
    /// address (no SNI).
    pub server_name: Option<String>,
    /// Verify against the system's roots instead of `ca_pem` (Gateway API BackendTLSPolicy
    /// `wellKnownCACertificates: System`; no annotation sets it).
    pub system_roots: bool,
    /// Names of which the certificate must be valid for one, instead of `server_name` (BackendTLSPolicy
    /// `subjectAltNames`; no annotation sets them).
    pub subject_alt_names: Vec<String>,
}

fn parse_backend_protocol(meta: &IngressMeta) -> Result<BackendProtocol, String> {
    Ok(
        match string_any(meta, &BACKEND_PROTOCOL)?
            .map(|v| v.to_ascii_uppercase())
            .as_deref()
        {
            None | Some("HTTP") => BackendProtocol::Http1,
            Some("H2C" | "GRPC") => BackendProtocol::H2c,
            Some("HTTPS") => BackendProtocol::Https,
            Some("GRPCS") => BackendProtocol::Grpcs,
            Some(v) => {
                return Err(format!(
                    "annotation {}: {v:?} is not HTTP, HTTPS, H2C, GRPC or GRPCS",
                    BACKEND_PROTOCOL[0]
                ))
            }
        },
    )
}

/// The `proxy-ssl-*` annotations. The CA Secret must be in the Ingress's own namespace (`name`, or
/// `namespace/name` naming that namespace); its contents are read by translation.
fn parse_upstream_tls(meta: &IngressMeta, protocol: BackendProtocol) -> Result<Option<UpstreamTls>, String> {
    let verify = match string_any(meta, &PROXY_SSL_VERIFY)? {
        None | Some("off" | "false") => false,
        Some("on" | "true") => true,
        Some(v) => {
            return Err(format!(
                "annotation {}: {v:?} is not \"on\" or \"off\"",
                PROXY_SSL_VERIFY[0]
            ))
        }
    };
    let ns = meta.namespace.as_deref().unwrap_or("default");
    let ca_secret = match string_any(meta, &PROXY_SSL_SECRET)? {
        None => None,
        Some(v) => Some(same_namespace_secret(PROXY_SSL_SECRET[0], ns, v)?),
    };
    let server_name = match string_any(meta, &PROXY_SSL_NAME)? {
        None => None,
        Some(v) => {
            if rustls_pki_types::ServerName::try_from(v).is_err() {
                return Err(format!("annotation {}: {v:?} is not a server name", PROXY_SSL_NAME[0]));
            }
            Some(v.to_string())
        }
    };
    if !matches!(protocol, BackendProtocol::Https | BackendProtocol::Grpcs) {
        return match [PROXY_SSL_VERIFY, PROXY_SSL_SECRET, PROXY_SSL_NAME]
            .iter()
            .flatten()
            .find(|k| get(meta, k).is_some())
        {
            Some(k) => Err(format!("annotation {k} needs {}: HTTPS or GRPCS", BACKEND_PROTOCOL[0])),
            None => Ok(None),
        };
    }
    if verify && ca_secret.is_none() {
        return Err(format!(
            "annotation {} is on but {} names no CA Secret",
            PROXY_SSL_VERIFY[0], PROXY_SSL_SECRET[0]
        ));
    }
    Ok(Some(UpstreamTls {
        verify,
        ca_secret,
        ca_pem: None,
        server_name,
        system_roots: false,
        subject_alt_names: Vec::new(),
    }))
}

impl UpstreamTls {
    /// Reads the CA bundle from the Ingress's `ca_secret` among `secrets` (pure; translation calls it). Without
    /// verification there is nothing to read.
    pub fn resolve_ca(
        &mut self,
        namespace: &str,
        secrets: &[k8s_openapi::api::core::v1::Secret],
    ) -> Result<(), String> {
        let Some(name) = self.ca_secret.as_deref().filter(|_| self.verify) else {
            return Ok(());
        };
        let secret = find_secret(secrets, namespace, name).ok_or_else(|| {
            format!(
                "CA Secret {namespace}/{name} (annotation {}) not found",
                PROXY_SSL_SECRET[0]
            )
        })?;
        let pem = secret
            .string_data
            .as_ref()
            .and_then(|m| m.get("ca.crt"))
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| secret.data.as_ref().and_then(|m| m.get("ca.crt")).map(|b| b.0.clone()))
            .ok_or_else(|| format!("CA Secret {namespace}/{name} has no ca.crt"))?;
        crate::pem::parse_ca_bundle(&pem).map_err(|e| format!("CA Secret {namespace}/{name}: {e}"))?;
        self.ca_pem = Some(pem);
        Ok(())
    }
}

pub(super) fn parse_active_check(meta: &IngressMeta) -> Result<Option<ActiveCheck>, String> {
    let kind = get(meta, HEALTH_CHECK);
    let http_path = match kind {
        None => {
            for k in [
                HEALTH_CHECK_PATH,
                HEALTH_CHECK_INTERVAL,
                HEALTH_CHECK_TIMEOUT,
                HEALTH_CHECK_FALL,
                HEALTH_CHECK_RISE,
            ] {
                if get(meta, k).is_some() {
                    return Err(format!("annotation {k} needs {HEALTH_CHECK}: http or tcp"));
                }
            }
            return Ok(None);
        }
        Some("http") => {
            let path = get(meta, HEALTH_CHECK_PATH).unwrap_or("/");
            crate::normalize::validate_ingress_path(path)
                .map_err(|e| format!("annotation {HEALTH_CHECK_PATH}: {e}"))?;
            Some(path.to_string())
        }
        Some("tcp") => None,
        Some(v) => return Err(format!("annotation {HEALTH_CHECK}: {v:?} is not http or tcp")),
    };
    Ok(Some(ActiveCheck {
        http_path,
        interval: duration_annotation(meta, HEALTH_CHECK_INTERVAL, Duration::from_secs(5))?,
        timeout: duration_annotation(meta, HEALTH_CHECK_TIMEOUT, Duration::from_secs(2))?,
        fall: count_annotation(meta, HEALTH_CHECK_FALL, 3)?,
        rise: count_annotation(meta, HEALTH_CHECK_RISE, 2)?,
    }))
}

/// A Secret named by annotation `key` as `name` or `namespace/name`, which must be the Ingress's namespace `ns`
/// (no cross-namespace reference without a grant).
pub(super) fn same_namespace_secret(key: &str, ns: &str, v: &str) -> Result<String, String> {
    let name = match v.split_once('/') {
        None => v,
        Some((n, name)) if n == ns => name,
        Some((n, _)) => {
            return Err(format!(
                "annotation {key}: Secret {v} is in namespace {n}; only Secrets in the Ingress's namespace {ns} can be used"
            ))
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!("annotation {key}: {v:?} is not a Secret name"));
    }
    Ok(name.to_string())
}

/// The Secret `namespace/name` among `secrets`.
pub(super) fn find_secret<'s>(
    secrets: &'s [k8s_openapi::api::core::v1::Secret],
    namespace: &str,
    name: &str,
) -> Option<&'s k8s_openapi::api::core::v1::Secret> {
    secrets.iter().find(|s| {
        s.metadata.namespace.as_deref().unwrap_or("default") == namespace && s.metadata.name.as_deref() == Some(name)
    })
}
