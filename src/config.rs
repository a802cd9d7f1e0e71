//! Gateway configuration: listener sets, the admin listener and upstream defaults.
//!
//! Read once at startup from YAML (`--config FILE`). Every key is checked: an unknown key, a bad address or a
//! duplicate name is a [`ConfigError`] and the binary exits with code 2 before binding anything.
//!
//! ```yaml
//! listenerSets:
//!   - name: external
//!     ingressClasses: [portico-external]
//!     http: ["0.0.0.0:8080"]
//!     https: ["0.0.0.0:8443"]
//!     publish: { addresses: ["192.168.1.240"] }
//!   - name: internal
//!     ingressClasses: [portico-internal]
//!     adoptClasses: [nginx]              # Ingresses of class nginx, whatever its controller
//!     http: ["10.0.0.5:8080"]
//! admin: { address: "127.0.0.1:9000" }
//! upstream: { connectTimeout: 5s, responseHeaderTimeout: 60s, readTimeout: 60s }
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::cidr::Cidr;
/// Moved to [`crate::units`]; kept here so callers of `config::parse_duration` compile.
pub use crate::units::parse_duration;

/// The `spec.controller` value that marks an `IngressClass` as ours.
pub const CONTROLLER_NAME: &str = "portico.dev/ingress-controller";

/// The whole, validated configuration. Invariant: listener set names and class names are unique, and every
/// class, own or adopted, belongs to exactly one listener set.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listener_sets: Vec<ListenerSetConfig>,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub shutdown: ShutdownConfig,
    /// Plain TCP listeners forwarding to static backends (layer 4, see [`TcpConfig`]).
    pub tcp: Vec<TcpConfig>,
}

/// What happens on SIGTERM: keep accepting for `drain_delay` (so endpoint removal reaches load balancers), then
/// stop accepting and give in-flight requests up to `grace_period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShutdownConfig {
    pub drain_delay: Duration,
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_delay: Duration::ZERO,
            grace_period: Duration::from_secs(25),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSetConfig {
    pub name: String,
    /// Classes that are ours when their `IngressClass` names our controller (`CONTROLLER_NAME`).
    pub ingress_classes: Vec<String>,
    /// Classes this set serves by name whatever their `IngressClass`'s controller, and whether or not the object
    /// exists (taking over from another controller, e.g. ingress-nginx's `nginx`).
    pub adopt_classes: Vec<String>,
    /// Let Ingresses of several namespaces serve paths of one host (ingress-nginx's behaviour). Off: a host
    /// belongs to the namespace of its oldest Ingress, and other namespaces cannot add paths to it.
    pub share_hosts_across_namespaces: bool,
    /// Gateways (namespace, name) this set serves on its own sockets instead of binding theirs: their listeners'
    /// routes and certificates join the set's table (keeping its PROXY protocol, trusted proxies, allowlist and
    /// ports). A host the set's Ingresses already have stays theirs.
    pub gateways: Vec<(String, String)>,
    pub http: Vec<SocketAddr>,
    pub https: Vec<SocketAddr>,
    pub publish: Publish,
    /// The certificate for unknown SNI and clients without SNI. `None`: a self-signed one made at startup.
    pub default_certificate: Option<DefaultCertificate>,
    /// The port in plain-HTTP to HTTPS redirects. Default: the first `https` bind's port. Set it to 443 when a
    /// load balancer maps 443 to the HTTPS bind.
    pub https_redirect_port: Option<u16>,
    /// ACME for this set's Ingresses (off when `None`).
    pub acme: Option<AcmeConfig>,
    /// Every connection on this set's listeners starts with a PROXY protocol (v1 or v2) header, accepted only
    /// from `trusted_proxies`.
    pub proxy_protocol: bool,
    /// Peers whose PROXY headers and `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// When set, only clients in these networks are served on this set (403 otherwise).
    pub allow_source_ranges: Option<Vec<Cidr>>,
    /// Clients in these networks get 403 on this set, whatever the allowlist says.
    pub deny_source_ranges: Option<Vec<Cidr>>,
    /// Open connections per listener; further clients wait in the accept queue until one closes.
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's headers (slowloris), also bounding an idle keep-alive
    /// wait for the next request.
    pub header_read_timeout: Duration,
    /// How long a connection may sit without a request in flight before it is shut down (HTTP/2: GOAWAY). On
    /// HTTP/1.1 the header-read timeout also runs while waiting for the next request, so the shorter wins.
    pub keep_alive_timeout: Duration,
    /// Longest pause between two pieces of a request body (408 when nothing was answered yet); Ingresses can
    /// override it (`request-body-timeout`, ingress-nginx's `proxy-send-timeout`).
    pub body_read_timeout: Duration,
    /// Protocols a request may switch to with `Upgrade` (lower case). `None`: WebSocket only. Any other `Upgrade`
    /// (`h2c` in particular) is removed from requests, and a tunnel opens only after a 101 naming an allowed one.
    pub allowed_upgrades: Option<Vec<String>>,
    /// The set's default error backend (`errorPages`): responses with these codes on routes of Ingresses that
    /// name no error pages of their own are answered with this Service's page (ingress-nginx's global
    /// `custom-http-errors` with `--default-backend-service`).
    pub error_pages: Option<ErrorPagesConfig>,
}

/// A listener set's default error backend: a Service (`namespace/name`, its `port` or else its first) and the
/// status codes it serves pages for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPagesConfig {
    pub namespace: String,
    pub service: String,
    pub port: Option<String>,
    pub codes: Vec<u16>,
}

pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Let's Encrypt presets.
pub const LETSENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// ACME for one listener set.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// The directory URL (`letsencrypt` and `letsencrypt-staging` are accepted as names).
    pub directory: String,
    pub email: Option<String>,
    pub external_account_binding: Option<ExternalAccountBinding>,
    /// A PEM root to trust for the CA's own HTTPS endpoint, in addition to the system roots (tests, private CAs).
    pub ca_root: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExternalAccountBinding {
    pub key_id: String,
    /// base64url-encoded HMAC key, as CAs hand it out.
    pub hmac_key: String,
}

/// Where a listener set's default certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultCertificate {
    /// A `kubernetes.io/tls` Secret among the watched objects.
    Secret { namespace: String, name: String },
    /// PEM files read at startup.
    Files {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
}

/// `errorPages`: `service` is `namespace/name` or `namespace/name:port`; codes 400-599, at least one.
fn error_pages(ctx: &str, raw: RawErrorPages) -> Result<ErrorPagesConfig, ConfigError> {
    use crate::model::annotations::errors;
    let Some((namespace, rest)) = raw.service.split_once('/') else {
        return Err(invalid(format!(
            "{ctx}.service: {:?} must be namespace/name or namespace/name:port",
            raw.service
        )));
    };
    let (service, port) = errors::parse_service(rest).map_err(|e| invalid(format!("{ctx}.service: {e}")))?;
    if errors::parse_service(namespace).is_err() || namespace.contains(':') {
        return Err(invalid(format!("{ctx}.service: {namespace:?} is not a namespace name")));
    }
    let list: Vec<String> = raw.codes.iter().map(u16::to_string).collect();
    let codes = errors::parse_codes(&list.join(",")).map_err(|e| invalid(format!("{ctx}.codes: {e}")))?;
    Ok(ErrorPagesConfig {
        namespace: namespace.to_string(),
        service,
        port,
        codes,
    })
}

impl ListenerSetConfig {
    /// The port written in HTTPS redirects, when the set serves HTTPS at all.
    pub fn redirect_port(&self) -> Option<u16> {
        self.https_redirect_port
            .or_else(|| self.https.first().map(|a| a.port()))
    }
}

/// Where a listener set's public address comes from (written to `status.loadBalancer` in cluster mode).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Publish {
    #[default]
    None,
    /// `namespace/name` of a Service whose `status.loadBalancer.ingress` is copied (e.g. a MetalLB VIP).
    Service { namespace: String, name: String },
    /// Fixed addresses: IPs or hostnames.
    Addresses(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// When set, the JSON API and the dashboard are served here only, and `address` serves health and metrics
    /// only (e.g. metrics on the pod network, the dashboard on 127.0.0.1 for `kubectl port-forward`).
    pub api_address: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub connect_timeout: Duration,
    pub response_header_timeout: Duration,
    /// How long a pooled backend connection may stay idle.
    pub idle_timeout: Duration,
    /// Longest pause between two reads of a response body (the stream is aborted after it); Ingresses can
    /// override it with `upstream-timeout` / ingress-nginx's `proxy-read-timeout`.
    pub read_timeout: Duration,
    /// Retries per backend: a share of its requests over a sliding window, with a floor.
    pub retry_budget: RetryBudgetConfig,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            read_timeout: Duration::from_secs(60),
            retry_budget: Default::default(),
        }
    }
}

/// How much retrying a backend may do. Part of the upstream configuration (used by `upstream::budget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a percentage of requests in the window.
    pub percent: u32,
    /// Retries allowed per second of the window regardless of traffic (the floor).
    pub min_per_second: u32,
    /// The sliding window's length.
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            percent: 20,
            min_per_second: 3,
            window: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Default for Config {
    /// One set `default` serving class `portico` on `0.0.0.0:8080` (HTTPS on `0.0.0.0:8443`), admin on
    /// `127.0.0.1:9000`.
    fn default() -> Self {
        Self {
            listener_sets: vec![ListenerSetConfig {
                name: "default".into(),
                ingress_classes: vec!["portico".into()],
                adopt_classes: Vec::new(),
                share_hosts_across_namespaces: false,
                gateways: Vec::new(),
                http: vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
                https: vec![SocketAddr::from(([0, 0, 0, 0], 8443))],
                publish: Publish::None,
                default_certificate: None,
                https_redirect_port: None,
                acme: None,
                proxy_protocol: false,
                trusted_proxies: Vec::new(),
                allow_source_ranges: None,
                deny_source_ranges: None,
                max_connections: None,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
                body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
                allowed_upgrades: None,
                error_pages: None,
            }],
            admin: AdminConfig {
                address: SocketAddr::from(([127, 0, 0, 1], 9000)),
                api_address: None,
            },
            upstream: UpstreamConfig::default(),
            shutdown: ShutdownConfig::default(),
            tcp: Vec::new(),
        }
    }
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text)?;
        raw.validate()
    }

    /// The listener set that serves `class` (its own or adopted), by index.
    pub fn set_for_class(&self, class: &str) -> Option<usize> {
        self.listener_sets
            .iter()
            .position(|s| s.ingress_classes.iter().chain(&s.adopt_classes).any(|c| c == class))
    }
}

// === raw, as written ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    listener_sets: Option<Vec<RawListenerSet>>,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    upstream: Option<RawUpstream>,
    #[serde(default)]
    shutdown: Option<RawShutdown>,
    #[serde(default)]
    tcp: Vec<RawTcp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawShutdown {
    #[serde(default)]
    drain_delay: Option<String>,
    #[serde(default)]
    grace_period: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawListenerSet {
    name: String,
    #[serde(default)]
    ingress_classes: Vec<String>,
    #[serde(default)]
    adopt_classes: Vec<String>,
    #[serde(default)]
    share_hosts_across_namespaces: bool,
    #[serde(default)]
    gateways: Vec<String>,
    #[serde(default)]
    http: Vec<String>,
    #[serde(default)]
    https: Vec<String>,
    #[serde(default)]
    publish: Option<RawPublish>,
    #[serde(default)]
    default_certificate: Option<RawDefaultCertificate>,
    #[serde(default)]
    https_redirect_port: Option<u16>,
    #[serde(default)]
    acme: Option<RawAcme>,
    #[serde(default)]
    proxy_protocol: bool,
    #[serde(default)]
    trusted_proxies: Vec<Cidr>,
    #[serde(default)]
    allow_source_ranges: Option<Vec<Cidr>>,
    #[serde(default)]
    deny_source_ranges: Option<Vec<Cidr>>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    header_read_timeout: Option<String>,
    #[serde(default)]
    keep_alive_timeout: Option<String>,
    #[serde(default)]
    body_read_timeout: Option<String>,
    #[serde(default)]
    allowed_upgrades: Option<Vec<String>>,
    #[serde(default)]
    error_pages: Option<RawErrorPages>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawErrorPages {
    service: String,
    codes: Vec<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAcme {
    directory: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    external_account_binding: Option<RawEab>,
    #[serde(default)]
    ca_root: Option<std::path::PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEab {
    key_id: String,
    hmac_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDefaultCertificate {
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    cert_file: Option<std::path::PathBuf>,
    #[serde(default)]
    key_file: Option<std::path::PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPublish {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    addresses: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAdmin {
    address: String,
    #[serde(default)]
    api_address: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawUpstream {
    #[serde(default)]
    connect_timeout: Option<String>,
    #[serde(default)]
    response_header_timeout: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    read_timeout: Option<String>,
    #[serde(default)]
    retry_budget: Option<RawRetryBudget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRetryBudget {
    #[serde(default)]
    percent: Option<u32>,
    #[serde(default)]
    min_per_second: Option<u32>,
    #[serde(default)]
    window: Option<String>,
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

fn parse_addr(what: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        invalid(format!(
            "{what}: {s:?} is not an address:port (e.g. 0.0.0.0:8080 or [::]:8080)"
        ))
    })
}

/// A Kubernetes object name (DNS subdomain): lowercase alphanumerics, `-` and `.`, starting and ending with
/// an alphanumeric, at most 253 characters. IngressClass names are such names.
fn is_class_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 253 && s.starts_with(alnum) && s.ends_with(alnum) && s.chars().all(|c| alnum(c) || c == '-' || c == '.')
}

/// Splits `namespace/name`.
fn split_ref(s: &str) -> Option<(String, String)> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => Some((ns.into(), name.into())),
        _ => None,
    }
}

fn duration_field(what: &str, v: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => match parse_duration(&s) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(invalid(format!(
                "{what}: {s:?} is not a positive duration like 250ms, 5s or 2m"
            ))),
        },
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let listener_sets = match self.listener_sets {
            None => defaults.listener_sets,
            Some(sets) => {
                let mut names = HashSet::new();
                let mut classes = HashSet::new();
                let mut out = Vec::with_capacity(sets.len());
                for set in sets {
                    let ctx = format!("listenerSets[{}]", set.name);
                    if set.name.is_empty() || !set.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                        return Err(invalid(format!(
                            "{ctx}: name must be non-empty letters, digits and '-'"
                        )));
                    }
                    if !names.insert(set.name.clone()) {
                        return Err(invalid(format!("{ctx}: duplicate listener set name")));
                    }
                    if set.ingress_classes.is_empty() && set.adopt_classes.is_empty() {
                        return Err(invalid(format!(
                            "{ctx}: ingressClasses (or adoptClasses) must name at least one class"
                        )));
                    }
                    if let Some(bad) = set.adopt_classes.iter().find(|c| !is_class_name(c)) {
                        return Err(invalid(format!(
                            "{ctx}.adoptClasses: {bad:?} is not an IngressClass name (lowercase letters, digits, '-' and '.', at most 253)"
                        )));
                    }
                    let own = set.ingress_classes.iter().map(|c| ("ingressClasses", c));
                    for (key, class) in own.chain(set.adopt_classes.iter().map(|c| ("adoptClasses", c))) {
                        if !classes.insert(class.clone()) {
                            return Err(invalid(format!(
                                "{ctx}.{key}: class {class:?} is listed twice; a class belongs to one listener set, in its ingressClasses or its adoptClasses"
                            )));
                        }
                    }
                    if set.http.is_empty() && set.https.is_empty() {
                        return Err(invalid(format!("{ctx}: needs at least one http or https bind")));
                    }
                    let http = set
                        .http
                        .iter()
                        .map(|a| parse_addr(&format!("{ctx}.http"), a))
                        .collect::<Result<Vec<_>, _>>()?;
                    let https = set
                        .https
                        .iter()
                        .map(|a| parse_addr(&format!("{ctx}.https"), a))
                        .collect::<Result<Vec<_>, _>>()?;
                    let publish = match set.publish {
                        None => Publish::None,
                        Some(RawPublish {
                            service: Some(svc),
                            addresses: None,
                        }) => match svc.split_once('/') {
                            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                                Publish::Service {
                                    namespace: ns.into(),
                                    name: name.into(),
                                }
                            }
                            _ => {
                                return Err(invalid(format!(
                                    "{ctx}.publish.service: {svc:?} must be namespace/name"
                                )))
                            }
                        },
                        Some(RawPublish {
                            service: None,
                            addresses: Some(addrs),
                        }) if !addrs.is_empty() => Publish::Addresses(addrs),
                        Some(_) => {
                            return Err(invalid(format!(
                            "{ctx}.publish: give exactly one of service (namespace/name) or a non-empty addresses list"
                        )))
                        }
                    };
                    let default_certificate = match set.default_certificate {
                        None => None,
                        Some(RawDefaultCertificate {
                            secret: Some(s),
                            cert_file: None,
                            key_file: None,
                        }) => {
                            let (namespace, name) = split_ref(&s).ok_or_else(|| {
                                invalid(format!("{ctx}.defaultCertificate.secret: {s:?} must be namespace/name"))
                            })?;
                            Some(DefaultCertificate::Secret { namespace, name })
                        }
                        Some(RawDefaultCertificate {
                            secret: None,
                            cert_file: Some(cert),
                            key_file: Some(key),
                        }) => Some(DefaultCertificate::Files { cert, key }),
                        Some(_) => {
                            return Err(invalid(format!(
                                "{ctx}.defaultCertificate: give either secret (namespace/name) or both certFile and keyFile"
                            )))
                        }
                    };
                    if set.https_redirect_port == Some(0) {
                        return Err(invalid(format!("{ctx}.httpsRedirectPort: 0 is not a port")));
                    }
                    let acme = match set.acme {
                        None => None,
                        Some(a) => {
                            let directory = match a.directory.as_str() {
                                "letsencrypt" => LETSENCRYPT_PRODUCTION.to_string(),
                                "letsencrypt-staging" => LETSENCRYPT_STAGING.to_string(),
                                url if url.starts_with("https://") || url.starts_with("http://") => url.to_string(),
                                other => {
                                    return Err(invalid(format!(
                                    "{ctx}.acme.directory: {other:?} is not a URL, letsencrypt or letsencrypt-staging"
                                )))
                                }
                            };
                            if set.http.is_empty() {
                                return Err(invalid(format!(
                                    "{ctx}.acme: HTTP-01 needs a plain-HTTP bind in this listener set"
                                )));
                            }
                            if let Some(e) = &a.email {
                                if !e.contains('@') {
                                    return Err(invalid(format!("{ctx}.acme.email: {e:?} is not an email address")));
                                }
                            }
                            Some(AcmeConfig {
                                directory,
                                email: a.email,
                                external_account_binding: a.external_account_binding.map(|e| ExternalAccountBinding {
                                    key_id: e.key_id,
                                    hmac_key: e.hmac_key,
                                }),
                                ca_root: a.ca_root,
                            })
                        }
                    };
                    if set.proxy_protocol && set.trusted_proxies.is_empty() {
                        return Err(invalid(format!(
                            "{ctx}.proxyProtocol: needs trustedProxies (the addresses of the proxies that send it)"
                        )));
                    }
                    let mut gateways = Vec::with_capacity(set.gateways.len());
                    for g in &set.gateways {
                        match g.split_once('/') {
                            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                                gateways.push((ns.to_string(), name.to_string()));
                            }
                            _ => return Err(invalid(format!("{ctx}.gateways: {g:?} must be namespace/name"))),
                        }
                    }
                    out.push(ListenerSetConfig {
                        gateways,
                        name: set.name,
                        ingress_classes: set.ingress_classes,
                        adopt_classes: set.adopt_classes,
                        share_hosts_across_namespaces: set.share_hosts_across_namespaces,
                        http,
                        https,
                        publish,
                        default_certificate,
                        https_redirect_port: set.https_redirect_port,
                        acme,
                        proxy_protocol: set.proxy_protocol,
                        trusted_proxies: set.trusted_proxies,
                        allow_source_ranges: set.allow_source_ranges,
                        deny_source_ranges: set.deny_source_ranges.filter(|d| !d.is_empty()),
                        max_connections: match set.max_connections {
                            Some(0) => return Err(invalid(format!("{ctx}.maxConnections: must be at least 1"))),
                            m => m,
                        },
                        header_read_timeout: duration_field(
                            &format!("{ctx}.headerReadTimeout"),
                            set.header_read_timeout,
                            DEFAULT_HEADER_READ_TIMEOUT,
                        )?,
                        keep_alive_timeout: duration_field(
                            &format!("{ctx}.keepAliveTimeout"),
                            set.keep_alive_timeout,
                            DEFAULT_KEEP_ALIVE_TIMEOUT,
                        )?,
                        body_read_timeout: duration_field(
                            &format!("{ctx}.bodyReadTimeout"),
                            set.body_read_timeout,
                            DEFAULT_BODY_READ_TIMEOUT,
                        )?,
                        allowed_upgrades: match set.allowed_upgrades {
                            None => None,
                            Some(list) => Some(
                                list.into_iter()
                                    .map(|p| {
                                        if p.eq_ignore_ascii_case("h2c") {
                                            Err(invalid(format!(
                                                "{ctx}.allowedUpgrades: h2c cannot be allowed (a client would reach \
                                                 HTTP/2 streams the gateway never routed); for HTTP/2 to a backend \
                                                 use the backend-protocol annotation (H2C)"
                                            )))
                                        } else if crate::http1::tokens::is_token(p.as_bytes()) {
                                            Ok(p.to_ascii_lowercase())
                                        } else {
                                            Err(invalid(format!("{ctx}.allowedUpgrades: {p:?} is not a protocol name")))
                                        }
                                    })
                                    .collect::<Result<Vec<_>, _>>()?,
                            ),
                        },
                        error_pages: set
                            .error_pages
                            .map(|e| error_pages(&format!("{ctx}.errorPages"), e))
                            .transpose()?,
                    });
                }
                out
            }
        };
        let admin = match self.admin {
            None => defaults.admin,
            Some(a) => AdminConfig {
                address: parse_addr("admin.address", &a.address)?,
                api_address: a
                    .api_address
                    .as_deref()
                    .map(|x| parse_addr("admin.apiAddress", x))
                    .transpose()?,
            },
        };
        let upstream = match self.upstream {
            None => defaults.upstream,
            Some(u) => {
                let d = UpstreamConfig::default();
                UpstreamConfig {
                    connect_timeout: duration_field("upstream.connectTimeout", u.connect_timeout, d.connect_timeout)?,
                    response_header_timeout: duration_field(
                        "upstream.responseHeaderTimeout",
                        u.response_header_timeout,
                        d.response_header_timeout,
                    )?,
                    idle_timeout: duration_field("upstream.idleTimeout", u.idle_timeout, d.idle_timeout)?,
                    read_timeout: duration_field("upstream.readTimeout", u.read_timeout, d.read_timeout)?,
                    retry_budget: match u.retry_budget {
                        None => d.retry_budget,
                        Some(r) => {
                            let db = d.retry_budget;
                            let percent = r.percent.unwrap_or(db.percent);
                            if percent > 100 {
                                return Err(invalid("upstream.retryBudget.percent: at most 100"));
                            }
                            RetryBudgetConfig {
                                percent,
                                min_per_second: r.min_per_second.unwrap_or(db.min_per_second),
                                window: duration_field("upstream.retryBudget.window", r.window, db.window)?,
                            }
                        }
                    },
                }
            }
        };
        let shutdown = match self.shutdown {
            None => ShutdownConfig::default(),
            Some(sh) => {
                let d = ShutdownConfig::default();
                ShutdownConfig {
                    drain_delay: match sh.drain_delay.as_deref() {
                        None => d.drain_delay,
                        Some(v) => parse_duration(v)
                            .ok_or_else(|| invalid(format!("shutdown.drainDelay: {v:?} is not a duration like 5s")))?,
                    },
                    grace_period: duration_field("shutdown.gracePeriod", sh.grace_period, d.grace_period)?,
                }
            }
        };
        let tcp = tcp::validate(self.tcp)?;
        Ok(Config {
            listener_sets,
            admin,
            upstream,
            shutdown,
            tcp,
        })
    }
}

// === tcp: layer-4 listeners ===

/// A plain TCP listener (`tcp[]`): every connection to `listen` goes to one of `backends`, bytes copied both
/// ways without protocol knowledge (HAProxy's `mode tcp`). See docs/l4.md.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    /// Names the route in logs and metrics: letters, digits and `-`.
    pub name: String,
    pub listen: Vec<SocketAddr>,
    /// Static endpoints (`address:port`), in the order given.
    pub backends: Vec<SocketAddr>,
    /// `round-robin` (default), `least-connections` or `source` (sticky by client address).
    pub balance: crate::model::annotations::Balance,
    /// Send a PROXY protocol header of this version to the backend first (`v1` or `v2`).
    pub send_proxy_protocol: Option<ProxyProtocolVersion>,
    /// Per endpoint tried; the next endpoint is tried on failure (default 5s).
    pub connect_timeout: Duration,
    /// A connection with no byte either way for this long is closed (default: none).
    pub idle_timeout: Option<Duration>,
    /// Open connections per listen address (`None`: unlimited); beyond it, clients wait in the accept queue.
    pub max_connections: Option<usize>,
    pub health_check: Option<TcpHealthCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    V1,
    V2,
}

/// An active check of every backend: a TCP connect, or (with `path`) an HTTPS `GET path` answered 2xx.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpHealthCheck {
    /// `Some`: HTTPS GET of this path; `None`: TCP connect.
    pub path: Option<String>,
    /// With `path`: a PEM CA file the backends' certificates must chain to; none: not verified (`verify none`).
    pub ca_file: Option<std::path::PathBuf>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that take an endpoint out, successes that bring it back.
    pub fall: u32,
    pub rise: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTcp {
    name: String,
    listen: Vec<String>,
    backends: Vec<String>,
    #[serde(default)]
    balance: Option<String>,
    #[serde(default)]
    send_proxy_protocol: Option<String>,
    #[serde(default)]
    connect_timeout: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    health_check: Option<RawTcpHealthCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTcpHealthCheck {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    fall: Option<u32>,
    #[serde(default)]
    rise: Option<u32>,
}

mod tcp {
    use super::*;
    use crate::model::annotations::Balance;

    pub(super) fn validate(raw: Vec<RawTcp>) -> Result<Vec<TcpConfig>, ConfigError> {
        let mut names = HashSet::new();
        raw.into_iter().map(|t| one(t, &mut names)).collect()
    }

    fn one(t: RawTcp, names: &mut HashSet<String>) -> Result<TcpConfig, ConfigError> {
        let ctx = format!("tcp[{}]", t.name);
        if t.name.is_empty() || !t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid(format!(
                "{ctx}: name must be non-empty letters, digits and '-'"
            )));
        }
        if !names.insert(t.name.clone()) {
            return Err(invalid(format!("{ctx}: duplicate name")));
        }
        if t.listen.is_empty() || t.backends.is_empty() {
            return Err(invalid(format!(
                "{ctx}: needs at least one listen address and one backend"
            )));
        }
        let listen = t
            .listen
            .iter()
            .map(|a| parse_addr(&format!("{ctx}.listen"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let backends = t
            .backends
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| invalid(format!("{ctx}.backends: {a:?} is not an address:port")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let balance = match t.balance.as_deref() {
            None | Some("round-robin") => Balance::RoundRobin,
            Some("least-connections") => Balance::LeastRequest,
            Some("source") => Balance::SourceHash,
            Some(b) => {
                return Err(invalid(format!(
                    "{ctx}.balance: {b:?} is not round-robin, least-connections or source"
                )))
            }
        };
        let send_proxy_protocol = match t.send_proxy_protocol.as_deref() {
            None => None,
            Some("v1") => Some(ProxyProtocolVersion::V1),
            Some("v2") => Some(ProxyProtocolVersion::V2),
            Some(v) => return Err(invalid(format!("{ctx}.sendProxyProtocol: {v:?} is not v1 or v2"))),
        };
        let health_check = match t.health_check {
            None => None,
            Some(h) => {
                if h.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                    return Err(invalid(format!("{ctx}.healthCheck.path: must start with /")));
                }
                if h.ca_file.is_some() && h.path.is_none() {
                    return Err(invalid(format!(
                        "{ctx}.healthCheck.caFile: only with path (an HTTPS check)"
                    )));
                }
                let (fall, rise) = (h.fall.unwrap_or(3), h.rise.unwrap_or(2));
                if fall == 0 || rise == 0 {
                    return Err(invalid(format!("{ctx}.healthCheck: fall and rise are at least 1")));
                }
                Some(TcpHealthCheck {
                    path: h.path,
                    ca_file: h.ca_file,
                    interval: duration_field(
                        &format!("{ctx}.healthCheck.interval"),
                        h.interval,
                        Duration::from_secs(2),
                    )?,
                    timeout: duration_field(&format!("{ctx}.healthCheck.timeout"), h.timeout, Duration::from_secs(1))?,
                    fall,
                    rise,
                })
            }
        };
        Ok(TcpConfig {
            name: t.name,
            listen,
            backends,
            balance,
            send_proxy_protocol,
            connect_timeout: duration_field(
                &format!("{ctx}.connectTimeout"),
                t.connect_timeout,
                Duration::from_secs(5),
            )?,
            idle_timeout: t
                .idle_timeout
                .map(|v| duration_field(&format!("{ctx}.idleTimeout"), Some(v), Duration::ZERO))
                .transpose()?,
            max_connections: t.max_connections.filter(|n| *n > 0),
            health_check,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tcp_listeners_parse_with_defaults_and_reject_bad_values() {
            let c = Config::from_yaml(
                "tcp:\n  - name: apiserver\n    listen: [\"127.0.0.1:6443\"]\n    backends: [\"10.0.0.1:6443\", \"10.0.0.2:6443\"]\n    balance: source\n    sendProxyProtocol: v2\n    idleTimeout: 50s\n    healthCheck: {path: /readyz, fall: 3, rise: 2}\n",
            )
            .unwrap();
            let t = &c.tcp[0];
            assert_eq!(t.balance, Balance::SourceHash);
            assert_eq!(t.send_proxy_protocol, Some(ProxyProtocolVersion::V2));
            assert_eq!(t.connect_timeout, Duration::from_secs(5));
            assert_eq!(t.idle_timeout, Some(Duration::from_secs(50)));
            let h = t.health_check.as_ref().unwrap();
            assert_eq!(
                (h.path.as_deref(), h.fall, h.rise, h.interval),
                (Some("/readyz"), 3, 2, Duration::from_secs(2))
            );
            for bad in [
                "tcp: [{name: a, listen: [], backends: [\"10.0.0.1:1\"]}]",
                "tcp: [{name: a, listen: [\"127.0.0.1:1\"], backends: [\"host:1\"]}]",
                "tcp: [{name: a, listen: [\"127.0.0.1:1\"], backends: [\"10.0.0.1:1\"], balance: random}]",
                "tcp: [{name: a, listen: [\"127.0.0.1:1\"], backends: [\"10.0.0.1:1\"], sendProxyProtocol: v3}]",
                "tcp: [{name: a, listen: [\"127.0.0.1:1\"], backends: [\"10.0.0.1:1\"], healthCheck: {path: readyz}}]",
            ] {
                assert!(Config::from_yaml(bad).is_err(), "{bad}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_yaml("{}").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.set_for_class("portico"), Some(0));
    }

    #[test]
    fn timeouts_and_retry_budget() {
        let c = Config::from_yaml(
            r#"
listenerSets:
  - name: a
    ingressClasses: [a]
    http: ["127.0.0.1:8080"]
    keepAliveTimeout: 10s
    bodyReadTimeout: 2s
upstream: { readTimeout: 90s, retryBudget: { percent: 10, minPerSecond: 1, window: 30s } }
"#,
        )
        .unwrap();
        let set = &c.listener_sets[0];
        assert_eq!(
            (set.keep_alive_timeout, set.body_read_timeout),
            (Duration::from_secs(10), Duration::from_secs(2))
        );
        assert_eq!(c.upstream.read_timeout, Duration::from_secs(90));
        let b = c.upstream.retry_budget;
        assert_eq!(
            (b.percent, b.min_per_second, b.window),
            (10, 1, Duration::from_secs(30))
        );
        let e = Config::from_yaml("upstream: { retryBudget: { percent: 150 } }").unwrap_err();
        assert!(e.to_string().contains("at most 100"), "{e}");
    }

    #[test]
    fn two_sets_parse() {
        let c = Config::from_yaml(
            r#"
listenerSets:
  - name: external
    ingressClasses: [portico-external]
    http: ["127.0.0.1:8080"]
    publish: { service: portico/portico-external }
  - name: internal
    ingressClasses: [portico-internal, admin]
    http: ["127.0.0.2:8080", "127.0.0.2:8081"]
    publish: { addresses: ["10.0.0.5"] }
    https: ["127.0.0.2:8443"]
    httpsRedirectPort: 443
    defaultCertificate: { secret: portico/default-tls }
    acme: { directory: letsencrypt-staging, email: ops@example.com }
    proxyProtocol: true
    trustedProxies: [10.0.0.10, 192.168.0.0/24]
    allowSourceRanges: [192.168.0.0/16]
    denySourceRanges: [192.168.7.0/24, 192.168.9.9]
admin: { address: "127.0.0.1:9100" }
upstream: { connectTimeout: 250ms }
shutdown: { drainDelay: 5s, gracePeriod: 40s }
"#,
        )
        .unwrap();
        assert_eq!(c.listener_sets.len(), 2);
        assert_eq!(c.set_for_class("admin"), Some(1));
        assert_eq!(c.listener_sets[1].http.len(), 2);
        assert_eq!(
            c.listener_sets[0].publish,
            Publish::Service {
                namespace: "portico".into(),
                name: "portico-external".into()
            }
        );
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.shutdown.drain_delay, Duration::from_secs(5));
        assert_eq!(c.shutdown.grace_period, Duration::from_secs(40));
        assert_eq!(c.listener_sets[1].redirect_port(), Some(443));
        assert_eq!(c.listener_sets[1].acme.as_ref().unwrap().directory, LETSENCRYPT_STAGING);
        assert_eq!(c.listener_sets[0].acme, None);
        assert!(c.listener_sets[1].proxy_protocol && !c.listener_sets[0].proxy_protocol);
        assert_eq!(c.listener_sets[1].trusted_proxies.len(), 2);
        assert_eq!(c.listener_sets[1].allow_source_ranges.as_ref().unwrap().len(), 1);
        assert_eq!(c.listener_sets[1].deny_source_ranges.as_ref().unwrap().len(), 2);
        assert_eq!(c.listener_sets[0].deny_source_ranges, None);
        assert_eq!(c.listener_sets[0].redirect_port(), None);
        assert_eq!(Config::default().listener_sets[0].redirect_port(), Some(8443));
        assert_eq!(
            c.listener_sets[1].default_certificate,
            Some(DefaultCertificate::Secret {
                namespace: "portico".into(),
                name: "default-tls".into()
            })
        );
        assert_eq!(c.admin.address.port(), 9100);
    }

    #[test]
    fn adopted_classes() {
        let c = Config::from_yaml(
            r#"
listenerSets:
  - name: external
    ingressClasses: [portico-external]
    adoptClasses: [nginx, nginx-public.example.com]
    http: ["127.0.0.1:8080"]
  - name: migrated
    adoptClasses: [traefik]
    http: ["127.0.0.1:8081"]
"#,
        )
        .unwrap();
        assert_eq!(c.listener_sets[0].adopt_classes, ["nginx", "nginx-public.example.com"]);
        assert!(c.listener_sets[1].ingress_classes.is_empty());
        assert_eq!(c.set_for_class("portico-external"), Some(0));
        assert_eq!(c.set_for_class("nginx"), Some(0));
        assert_eq!(c.set_for_class("traefik"), Some(1));
        assert_eq!(c.set_for_class("other"), None);
        assert!(Config::default().listener_sets[0].adopt_classes.is_empty());

        let set = |extra: &str| format!("{{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"]{extra}}}");
        for (yaml, needle) in [
            // A class belongs to one set: not twice in a set, not in two sets, not both own and adopted.
            (
                format!("listenerSets: [{}]", set(", adoptClasses: [nginx, nginx]")),
                "listenerSets[a].adoptClasses: class \"nginx\" is listed twice",
            ),
            (
                format!("listenerSets: [{}]", set(", adoptClasses: [x]")),
                "listenerSets[a].adoptClasses: class \"x\" is listed twice",
            ),
            (
                format!(
                    "listenerSets: [{}, {{name: b, ingressClasses: [nginx], http: [\"0.0.0.0:2\"]}}]",
                    set(", adoptClasses: [nginx]")
                ),
                "listenerSets[b].ingressClasses: class \"nginx\" is listed twice",
            ),
            (
                format!("listenerSets: [{}]", set(", adoptClasses: [Nginx]")),
                "listenerSets[a].adoptClasses: \"Nginx\" is not an IngressClass name",
            ),
            (
                format!("listenerSets: [{}]", set(", adoptClasses: [\"\"]")),
                "is not an IngressClass name",
            ),
            (
                format!("listenerSets: [{}]", set(", adoptClasses: nginx")),
                "adoptClasses",
            ),
            (
                format!("listenerSets: [{}]", set(", adoptClass: [nginx]")),
                "unknown field `adoptClass`",
            ),
            (
                "listenerSets: [{name: a, adoptClasses: [], http: [\"0.0.0.0:1\"]}]".to_string(),
                "must name at least one class",
            ),
        ] {
            let e = Config::from_yaml(&yaml).unwrap_err().to_string();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = Config::from_yaml("listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"], bogus: 1}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    /// No listener set: valid (only Gateways are served, which bind their own listeners).
    #[test]
    fn no_listener_set_is_valid() {
        let c = Config::from_yaml("listenerSets: []\nadmin: { address: \"127.0.0.1:0\" }\n").unwrap();
        assert!(c.listener_sets.is_empty());
    }

    #[test]
    fn invalid_values_are_errors() {
        for (yaml, needle) in [
            ("listenerSets: [{name: a, ingressClasses: [x], http: [\"nope\"]}]", "not an address"),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"]}, {name: a, ingressClasses: [y], http: [\"0.0.0.0:2\"]}]",
                "duplicate",
            ),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"]}, {name: b, ingressClasses: [x], http: [\"0.0.0.0:2\"]}]",
                "listed twice",
            ),
            ("listenerSets: [{name: a, ingressClasses: [x]}]", "at least one http"),
            ("upstream: {connectTimeout: 5 parsecs}", "duration"),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"], publish: {service: nons}}]",
                "namespace/name",
            ),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"], defaultCertificate: {certFile: /a}}]",
                "both certFile and keyFile",
            ),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"], defaultCertificate: {secret: x}}]",
                "namespace/name",
            ),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"], acme: {directory: le}}]",
                "not a URL",
            ),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"], proxyProtocol: true}]",
                "needs trustedProxies",
            ),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"], trustedProxies: [10.0.0.0/99]}]",
                "not an IP address",
            ),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"], allowedUpgrades: [H2C]}]",
                "h2c cannot be allowed",
            ),
            (
                "listenerSets: [{name: a, ingressClasses: [x], http: [\"0.0.0.0:1\"], allowedUpgrades: [\"web socket\"]}]",
                "not a protocol name",
            ),
            (
                "listenerSets: [{name: a, ingressClasses: [x], https: [\"0.0.0.0:1\"], acme: {directory: letsencrypt}}]",
                "plain-HTTP bind",
            ),
        ] {
            let e = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
