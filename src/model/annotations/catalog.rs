//! Every annotation under Portico's two prefixes, classified in one table: implemented, accepted as a harmless
//! no-op (served, with a warning), or unsupported (the Ingress is not served, with a reason saying what to use
//! instead). A key under either prefix that is not in the table is unsupported too, so a misspelt
//! `portico.dev/ssl-redirct` disables its Ingress instead of being ignored.
//!
//! The table is the source of the classified list in `docs/annotations.md` (`render_markdown`; a test checks
//! the two agree) and of `portico migrate`'s report. Nothing that grants or restricts access (auth, client
//! certificates, allow/deny lists, rate limits, WAF rules, snippets) may be a no-op: a test checks that too.

use std::collections::BTreeMap;

pub const PORTICO: &str = "portico.dev/";
pub const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// What Portico does with an annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Support {
    /// Parsed, checked and applied (a bad value disables the Ingress).
    Implemented,
    /// Accepted and ignored, with a warning: leaving it out changes nothing that is served or who may reach it.
    NoOp,
    /// The Ingress is not served while it carries the annotation.
    Unsupported,
}

impl Support {
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Implemented => "implemented",
            Support::NoOp => "no-op",
            Support::Unsupported => "unsupported",
        }
    }
}

/// One annotation key and what becomes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The whole key, prefix included.
    pub key: &'static str,
    pub support: Support,
    /// The feature group (a heading in the docs and the report).
    pub group: Group,
    /// Implemented: what it does (or the Portico name it equals). No-op: why leaving it out is harmless.
    /// Unsupported: what to use instead.
    pub note: &'static str,
}

/// Feature groups, in the order the docs list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Tls,
    Headers,
    Routing,
    Upstream,
    Affinity,
    Timeouts,
    Health,
    Access,
    Snippets,
    Buffering,
    Observability,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Group::Tls => "TLS, HTTPS redirects and certificates",
            Group::Headers => "Headers and Host",
            Group::Routing => "Rewrites, regex paths, redirects, aliases and canaries",
            Group::Upstream => "Backends and balancing",
            Group::Affinity => "Session affinity",
            Group::Timeouts => "Timeouts, retries and body size",
            Group::Health => "Health checks",
            Group::Access => "Access control (never a no-op)",
            Group::Snippets => "Snippets and templated configuration (never supported)",
            Group::Buffering => "Buffering",
            Group::Observability => "Logs, tracing and metrics",
        }
    }

    /// Whether the group's annotations grant or restrict access: these are never no-ops.
    pub fn controls_access(self) -> bool {
        matches!(self, Group::Access | Group::Snippets)
    }
}

use Group as G;
use Support::{Implemented as Impl, NoOp, Unsupported as Unsup};

const fn e(key: &'static str, support: Support, group: Group, note: &'static str) -> Entry {
    Entry {
        key,
        support,
        group,
        note,
    }
}

const LIMIT: &str =
    "bandwidth limits are not implemented; limit-rps, limit-rpm and limit-connections are (remove it only if the backend can take the traffic unthrottled)";

/// The table. Sorted by key (a test checks), one entry per key.
#[rustfmt::skip]
pub static TABLE: &[Entry] = &[
    // --- nginx.ingress.kubernetes.io/ ---
    e("nginx.ingress.kubernetes.io/add-base-url", Unsup, G::Routing, "removed from ingress-nginx in 0.22; remove it"),
    e("nginx.ingress.kubernetes.io/affinity", Impl, G::Affinity, "`cookie` = portico.dev/load-balance: cookie"),
    e("nginx.ingress.kubernetes.io/affinity-canary-behavior", Impl, G::Affinity, "= portico.dev/affinity-canary-behavior"),
    e("nginx.ingress.kubernetes.io/affinity-mode", NoOp, G::Affinity, "Portico's affinity cookie names an endpoint and keeps it while that endpoint is ready (ingress-nginx's `persistent`); `balanced` only differs after a scale-up"),
    e("nginx.ingress.kubernetes.io/allowlist-source-range", Impl, G::Access, "= portico.dev/allow-source-ranges"),
    e("nginx.ingress.kubernetes.io/app-root", Impl, G::Routing, "= portico.dev/app-root"),
    e("nginx.ingress.kubernetes.io/auth-always-set-cookie", Unsup, G::Access, "not implemented: the auth service's Set-Cookie reaches the client on 401/403 only; remove it knowingly, or have the application set the cookie"),
    e("nginx.ingress.kubernetes.io/auth-cache-duration", Impl, G::Access, "= portico.dev/auth-cache-duration"),
    e("nginx.ingress.kubernetes.io/auth-cache-key", Impl, G::Access, "= portico.dev/auth-cache-key"),
    e("nginx.ingress.kubernetes.io/auth-keepalive", Unsup, G::Access, "Portico's auth client keeps its own connection pool; nginx's keepalive settings for it are not taken (remove it)"),
    e("nginx.ingress.kubernetes.io/auth-keepalive-requests", Unsup, G::Access, "Portico's auth client keeps its own connection pool; nginx's keepalive settings for it are not taken (remove it)"),
    e("nginx.ingress.kubernetes.io/auth-keepalive-share-vars", Unsup, G::Access, "Portico's auth client keeps its own connection pool; nginx's keepalive settings for it are not taken (remove it)"),
    e("nginx.ingress.kubernetes.io/auth-keepalive-timeout", Unsup, G::Access, "Portico's auth client keeps its own connection pool; nginx's keepalive settings for it are not taken (remove it)"),
    e("nginx.ingress.kubernetes.io/auth-method", Impl, G::Access, "= portico.dev/auth-method"),
    e("nginx.ingress.kubernetes.io/auth-proxy-set-headers", Unsup, G::Access, "a ConfigMap of headers for the auth subrequest is not supported; the subrequest carries the request's own headers"),
    e("nginx.ingress.kubernetes.io/auth-realm", Impl, G::Access, "= portico.dev/auth-realm"),
    e("nginx.ingress.kubernetes.io/auth-request-redirect", Impl, G::Access, "= portico.dev/auth-request-redirect"),
    e("nginx.ingress.kubernetes.io/auth-response-headers", Impl, G::Access, "= portico.dev/auth-response-headers"),
    e("nginx.ingress.kubernetes.io/auth-secret", Impl, G::Access, "= portico.dev/auth-secret"),
    e("nginx.ingress.kubernetes.io/auth-secret-type", Impl, G::Access, "= portico.dev/auth-secret-type"),
    e("nginx.ingress.kubernetes.io/auth-signin", Impl, G::Access, "= portico.dev/auth-signin"),
    e("nginx.ingress.kubernetes.io/auth-signin-redirect-param", Impl, G::Access, "= portico.dev/auth-signin-redirect-param"),
    e("nginx.ingress.kubernetes.io/auth-snippet", Unsup, G::Snippets, "snippets are templated configuration; Portico has none"),
    e("nginx.ingress.kubernetes.io/auth-tls-error-page", Impl, G::Access, "= portico.dev/auth-tls-error-page"),
    e("nginx.ingress.kubernetes.io/auth-tls-match-cn", Unsup, G::Access, "matching the client certificate's CN is not implemented; rather than accept any CN the CA signed, the Ingress is not served (give these clients their own CA, or check the ssl-client-subject-dn header in the backend)"),
    e("nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream", Impl, G::Access, "= portico.dev/auth-tls-pass-certificate-to-upstream"),
    e("nginx.ingress.kubernetes.io/auth-tls-secret", Impl, G::Access, "= portico.dev/auth-tls-secret"),
    e("nginx.ingress.kubernetes.io/auth-tls-verify-client", Impl, G::Access, "= portico.dev/auth-tls-verify-client"),
    e("nginx.ingress.kubernetes.io/auth-tls-verify-depth", Impl, G::Access, "= portico.dev/auth-tls-verify-depth"),
    e("nginx.ingress.kubernetes.io/auth-type", Impl, G::Access, "= portico.dev/auth-type (`basic` only)"),
    e("nginx.ingress.kubernetes.io/auth-url", Impl, G::Access, "= portico.dev/auth-url"),
    e("nginx.ingress.kubernetes.io/backend-protocol", Impl, G::Upstream, "= portico.dev/backend-protocol (`AJP` and `FCGI` are rejected)"),
    e("nginx.ingress.kubernetes.io/base-url-scheme", Unsup, G::Routing, "removed from ingress-nginx in 0.22; remove it"),
    e("nginx.ingress.kubernetes.io/canary", Impl, G::Routing, "= portico.dev/canary"),
    e("nginx.ingress.kubernetes.io/canary-by-cookie", Impl, G::Routing, "= portico.dev/canary-by-cookie"),
    e("nginx.ingress.kubernetes.io/canary-by-header", Impl, G::Routing, "= portico.dev/canary-by-header"),
    e("nginx.ingress.kubernetes.io/canary-by-header-pattern", Impl, G::Routing, "= portico.dev/canary-by-header-pattern"),
    e("nginx.ingress.kubernetes.io/canary-by-header-value", Impl, G::Routing, "= portico.dev/canary-by-header-value"),
    e("nginx.ingress.kubernetes.io/canary-weight", Impl, G::Routing, "= portico.dev/canary-weight"),
    e("nginx.ingress.kubernetes.io/canary-weight-total", Impl, G::Routing, "= portico.dev/canary-weight-total"),
    e("nginx.ingress.kubernetes.io/client-body-buffer-size", NoOp, G::Buffering, "Portico streams request bodies and never spools them to disk"),
    e("nginx.ingress.kubernetes.io/configuration-snippet", Unsup, G::Snippets, "snippets are templated configuration; use portico.dev/request-headers-* and response-headers-* for header edits"),
    e("nginx.ingress.kubernetes.io/connection-proxy-header", NoOp, G::Headers, "Portico manages the Connection header of backend requests itself (pooled keep-alive)"),
    e("nginx.ingress.kubernetes.io/cors-allow-credentials", Impl, G::Access, "= portico.dev/cors-allow-credentials"),
    e("nginx.ingress.kubernetes.io/cors-allow-headers", Impl, G::Access, "= portico.dev/cors-allow-headers"),
    e("nginx.ingress.kubernetes.io/cors-allow-methods", Impl, G::Access, "= portico.dev/cors-allow-methods"),
    e("nginx.ingress.kubernetes.io/cors-allow-origin", Impl, G::Access, "= portico.dev/cors-allow-origin"),
    e("nginx.ingress.kubernetes.io/cors-expose-headers", Impl, G::Access, "= portico.dev/cors-expose-headers"),
    e("nginx.ingress.kubernetes.io/cors-max-age", Impl, G::Access, "= portico.dev/cors-max-age"),
    e("nginx.ingress.kubernetes.io/custom-headers", Unsup, G::Headers, "a ConfigMap reference; list the headers in portico.dev/response-headers-set instead"),
    e("nginx.ingress.kubernetes.io/custom-http-errors", Impl, G::Routing, "= portico.dev/custom-http-errors"),
    e("nginx.ingress.kubernetes.io/default-backend", Impl, G::Routing, "= portico.dev/default-backend"),
    e("nginx.ingress.kubernetes.io/denylist-source-range", Impl, G::Access, "= portico.dev/deny-source-ranges"),
    e("nginx.ingress.kubernetes.io/disable-proxy-intercept-errors", Unsup, G::Routing, "not implemented: Portico replaces the listed codes whether the backend or the gateway produced them; list fewer codes in custom-http-errors"),
    e("nginx.ingress.kubernetes.io/enable-access-log", NoOp, G::Observability, "Portico's access log is set per process (--access-log, --access-log-sample)"),
    e("nginx.ingress.kubernetes.io/enable-cors", Impl, G::Access, "= portico.dev/enable-cors"),
    e("nginx.ingress.kubernetes.io/enable-global-auth", Unsup, G::Access, "Portico has no global external auth; remove it"),
    e("nginx.ingress.kubernetes.io/enable-influxdb", NoOp, G::Observability, "Portico exports Prometheus metrics on the admin address"),
    e("nginx.ingress.kubernetes.io/enable-modsecurity", Unsup, G::Access, "Portico has no WAF; put one in front or remove it knowingly"),
    e("nginx.ingress.kubernetes.io/enable-opentelemetry", NoOp, G::Observability, "Portico does not trace yet; requests are served the same"),
    e("nginx.ingress.kubernetes.io/enable-opentracing", NoOp, G::Observability, "Portico does not trace yet; requests are served the same"),
    e("nginx.ingress.kubernetes.io/enable-owasp-core-rules", Unsup, G::Access, "Portico has no WAF; put one in front or remove it knowingly"),
    e("nginx.ingress.kubernetes.io/enable-rewrite-log", NoOp, G::Observability, "a debug log of nginx's rewrite module"),
    e("nginx.ingress.kubernetes.io/force-ssl-redirect", Impl, G::Tls, "= portico.dev/force-ssl-redirect"),
    e("nginx.ingress.kubernetes.io/from-to-www-redirect", Impl, G::Routing, "= portico.dev/from-to-www-redirect"),
    e("nginx.ingress.kubernetes.io/global-rate-limit", Unsup, G::Access, "removed from ingress-nginx in 1.6; use portico.dev/limit-rps or limit-rpm (per replica)"),
    e("nginx.ingress.kubernetes.io/global-rate-limit-ignored-cidrs", Unsup, G::Access, "removed from ingress-nginx in 1.6"),
    e("nginx.ingress.kubernetes.io/global-rate-limit-key", Unsup, G::Access, "removed from ingress-nginx in 1.6"),
    e("nginx.ingress.kubernetes.io/global-rate-limit-window", Unsup, G::Access, "removed from ingress-nginx in 1.6"),
    e("nginx.ingress.kubernetes.io/grpc-backend", Unsup, G::Upstream, "removed from ingress-nginx; use backend-protocol: GRPC"),
    e("nginx.ingress.kubernetes.io/http2-push-preload", NoOp, G::Buffering, "browsers no longer accept HTTP/2 server push"),
    e("nginx.ingress.kubernetes.io/influxdb-host", NoOp, G::Observability, "see enable-influxdb"),
    e("nginx.ingress.kubernetes.io/influxdb-measurement", NoOp, G::Observability, "see enable-influxdb"),
    e("nginx.ingress.kubernetes.io/influxdb-port", NoOp, G::Observability, "see enable-influxdb"),
    e("nginx.ingress.kubernetes.io/influxdb-server-name", NoOp, G::Observability, "see enable-influxdb"),
    e("nginx.ingress.kubernetes.io/limit-allowlist", Impl, G::Access, "= portico.dev/limit-allowlist"),
    e("nginx.ingress.kubernetes.io/limit-burst-multiplier", Impl, G::Access, "= portico.dev/limit-burst-multiplier"),
    e("nginx.ingress.kubernetes.io/limit-connections", Impl, G::Access, "= portico.dev/limit-connections"),
    e("nginx.ingress.kubernetes.io/limit-rate", Unsup, G::Access, LIMIT),
    e("nginx.ingress.kubernetes.io/limit-rate-after", Unsup, G::Access, LIMIT),
    e("nginx.ingress.kubernetes.io/limit-rpm", Impl, G::Access, "= portico.dev/limit-rpm"),
    e("nginx.ingress.kubernetes.io/limit-rps", Impl, G::Access, "= portico.dev/limit-rps"),
    e("nginx.ingress.kubernetes.io/limit-whitelist", Impl, G::Access, "= portico.dev/limit-allowlist"),
    e("nginx.ingress.kubernetes.io/load-balance", Impl, G::Upstream, "`round_robin`; `ewma` and `least_conn` = least-request"),
    e("nginx.ingress.kubernetes.io/mirror-host", Unsup, G::Routing, "mirroring to a URL is not served (an HTTPRoute's RequestMirror to a Service is, body included)"),
    e("nginx.ingress.kubernetes.io/mirror-request-body", Unsup, G::Routing, "mirroring to a URL is not served (an HTTPRoute's RequestMirror to a Service is, body included)"),
    e("nginx.ingress.kubernetes.io/mirror-target", Unsup, G::Routing, "mirroring to a URL is not served (an HTTPRoute's RequestMirror to a Service is, body included)"),
    e("nginx.ingress.kubernetes.io/modsecurity-snippet", Unsup, G::Snippets, "snippets are templated configuration; Portico has none"),
    e("nginx.ingress.kubernetes.io/modsecurity-transaction-id", Unsup, G::Access, "Portico has no WAF; put one in front or remove it knowingly"),
    e("nginx.ingress.kubernetes.io/opentelemetry-operation-name", NoOp, G::Observability, "see enable-opentelemetry"),
    e("nginx.ingress.kubernetes.io/opentelemetry-trust-incoming-span", NoOp, G::Observability, "see enable-opentelemetry"),
    e("nginx.ingress.kubernetes.io/opentracing-trust-incoming-span", NoOp, G::Observability, "see enable-opentracing"),
    e("nginx.ingress.kubernetes.io/permanent-redirect", Impl, G::Routing, "= portico.dev/permanent-redirect"),
    e("nginx.ingress.kubernetes.io/permanent-redirect-code", Impl, G::Routing, "= portico.dev/permanent-redirect-code"),
    e("nginx.ingress.kubernetes.io/preserve-trailing-slash", NoOp, G::Tls, "Portico's HTTPS redirects always keep the path exactly as sent"),
    e("nginx.ingress.kubernetes.io/proxy-body-size", Impl, G::Timeouts, "= portico.dev/proxy-body-size"),
    e("nginx.ingress.kubernetes.io/proxy-buffer-size", NoOp, G::Buffering, "Portico streams responses; buffers are sized by the gateway"),
    e("nginx.ingress.kubernetes.io/proxy-buffering", NoOp, G::Buffering, "Portico streams responses; there is no response buffer to turn on or off"),
    e("nginx.ingress.kubernetes.io/proxy-buffers-number", NoOp, G::Buffering, "Portico streams responses; buffers are sized by the gateway"),
    e("nginx.ingress.kubernetes.io/proxy-connect-timeout", Impl, G::Timeouts, "= portico.dev/connect-timeout (seconds; HTTP/1.1 and HTTPS backends)"),
    e("nginx.ingress.kubernetes.io/proxy-cookie-domain", Unsup, G::Headers, "rewriting Set-Cookie is not supported; fix the domain in the application"),
    e("nginx.ingress.kubernetes.io/proxy-cookie-path", Unsup, G::Headers, "rewriting Set-Cookie is not supported; fix the path in the application"),
    e("nginx.ingress.kubernetes.io/proxy-http-version", NoOp, G::Upstream, "Portico speaks HTTP/1.1 to HTTP backends (backend-protocol selects HTTP/2)"),
    e("nginx.ingress.kubernetes.io/proxy-max-temp-file-size", NoOp, G::Buffering, "Portico never spools responses to disk"),
    e("nginx.ingress.kubernetes.io/proxy-next-upstream", Impl, G::Timeouts, "= portico.dev/next-upstream"),
    e("nginx.ingress.kubernetes.io/proxy-next-upstream-timeout", Impl, G::Timeouts, "= portico.dev/next-upstream-timeout (seconds; 0: no limit)"),
    e("nginx.ingress.kubernetes.io/proxy-next-upstream-tries", Impl, G::Timeouts, "= portico.dev/next-upstream-tries (0: the most, 10)"),
    e("nginx.ingress.kubernetes.io/proxy-read-timeout", Impl, G::Timeouts, "= portico.dev/upstream-timeout (seconds)"),
    e("nginx.ingress.kubernetes.io/proxy-redirect-from", Unsup, G::Headers, "rewriting Location is not supported; set the application's external URL"),
    e("nginx.ingress.kubernetes.io/proxy-redirect-to", Unsup, G::Headers, "rewriting Location is not supported; set the application's external URL"),
    e("nginx.ingress.kubernetes.io/proxy-request-buffering", NoOp, G::Buffering, "Portico streams request bodies to the backend as they arrive"),
    e("nginx.ingress.kubernetes.io/proxy-send-timeout", Impl, G::Timeouts, "= portico.dev/request-body-timeout (seconds)"),
    e("nginx.ingress.kubernetes.io/proxy-ssl-ciphers", Unsup, G::Upstream, "Portico (rustls) offers only TLS 1.2/1.3 AEAD cipher suites and cannot restrict them per Ingress; remove it"),
    e("nginx.ingress.kubernetes.io/proxy-ssl-name", Impl, G::Upstream, "= portico.dev/proxy-ssl-name"),
    e("nginx.ingress.kubernetes.io/proxy-ssl-protocols", Unsup, G::Upstream, "Portico (rustls) offers TLS 1.2 and 1.3 and cannot restrict them per Ingress; remove it"),
    e("nginx.ingress.kubernetes.io/proxy-ssl-secret", Impl, G::Upstream, "= portico.dev/proxy-ssl-secret"),
    e("nginx.ingress.kubernetes.io/proxy-ssl-server-name", NoOp, G::Upstream, "Portico sends SNI whenever it has a name (proxy-ssl-name, or upstream-vhost)"),
    e("nginx.ingress.kubernetes.io/proxy-ssl-verify", Impl, G::Upstream, "= portico.dev/proxy-ssl-verify"),
    e("nginx.ingress.kubernetes.io/proxy-ssl-verify-depth", Unsup, G::Upstream, "rustls has no chain-depth limit; remove it"),
    e("nginx.ingress.kubernetes.io/rewrite-target", Impl, G::Routing, "= portico.dev/rewrite-target"),
    e("nginx.ingress.kubernetes.io/satisfy", Unsup, G::Access, "combines auth with allowlists; authentication is not implemented yet"),
    e("nginx.ingress.kubernetes.io/secure-backends", Unsup, G::Upstream, "removed from ingress-nginx; use backend-protocol: HTTPS"),
    e("nginx.ingress.kubernetes.io/server-alias", Impl, G::Routing, "= portico.dev/server-alias"),
    e("nginx.ingress.kubernetes.io/server-snippet", Unsup, G::Snippets, "snippets are templated configuration; Portico has none"),
    e("nginx.ingress.kubernetes.io/service-upstream", Impl, G::Upstream, "= portico.dev/service-upstream"),
    e("nginx.ingress.kubernetes.io/session-cookie-change-on-failure", Impl, G::Affinity, "= portico.dev/affinity-cookie-change-on-failure"),
    e("nginx.ingress.kubernetes.io/session-cookie-conditional-samesite-none", NoOp, G::Affinity, "Portico sends SameSite=None as asked; the browsers that mishandled it (before 2020) are not special-cased"),
    e("nginx.ingress.kubernetes.io/session-cookie-domain", Impl, G::Affinity, "= portico.dev/affinity-cookie-domain"),
    e("nginx.ingress.kubernetes.io/session-cookie-expires", Impl, G::Affinity, "= portico.dev/affinity-cookie-expires"),
    e("nginx.ingress.kubernetes.io/session-cookie-max-age", Impl, G::Affinity, "= portico.dev/affinity-cookie-max-age"),
    e("nginx.ingress.kubernetes.io/session-cookie-name", Impl, G::Affinity, "= portico.dev/affinity-cookie-name"),
    e("nginx.ingress.kubernetes.io/session-cookie-path", Impl, G::Affinity, "= portico.dev/affinity-cookie-path"),
    e("nginx.ingress.kubernetes.io/session-cookie-samesite", Impl, G::Affinity, "= portico.dev/affinity-cookie-samesite"),
    e("nginx.ingress.kubernetes.io/session-cookie-secure", Impl, G::Affinity, "= portico.dev/affinity-cookie-secure"),
    e("nginx.ingress.kubernetes.io/ssl-ciphers", Unsup, G::Tls, "Portico (rustls) offers only TLS 1.2/1.3 AEAD cipher suites and cannot restrict them per Ingress; remove it"),
    e("nginx.ingress.kubernetes.io/ssl-passthrough", Impl, G::Tls, "= portico.dev/ssl-passthrough"),
    e("nginx.ingress.kubernetes.io/ssl-prefer-server-ciphers", NoOp, G::Tls, "rustls always prefers the server's order"),
    e("nginx.ingress.kubernetes.io/ssl-redirect", Impl, G::Tls, "= portico.dev/ssl-redirect"),
    e("nginx.ingress.kubernetes.io/stream-snippet", Unsup, G::Snippets, "snippets are templated configuration; Portico has none"),
    e("nginx.ingress.kubernetes.io/temporal-redirect", Impl, G::Routing, "= portico.dev/temporal-redirect"),
    e("nginx.ingress.kubernetes.io/temporal-redirect-code", Impl, G::Routing, "= portico.dev/temporal-redirect-code"),
    e("nginx.ingress.kubernetes.io/upstream-hash-by", Impl, G::Upstream, "`$remote_addr` = portico.dev/load-balance: source-hash (other keys are rejected)"),
    e("nginx.ingress.kubernetes.io/upstream-hash-by-subset", Unsup, G::Upstream, "not supported; use upstream-hash-by alone"),
    e("nginx.ingress.kubernetes.io/upstream-hash-by-subset-size", Unsup, G::Upstream, "not supported; use upstream-hash-by alone"),
    e("nginx.ingress.kubernetes.io/upstream-vhost", Impl, G::Headers, "= portico.dev/upstream-host"),
    e("nginx.ingress.kubernetes.io/use-regex", Impl, G::Routing, "= portico.dev/use-regex"),
    e("nginx.ingress.kubernetes.io/whitelist-source-range", Impl, G::Access, "= portico.dev/allow-source-ranges"),
    e("nginx.ingress.kubernetes.io/x-forwarded-prefix", Impl, G::Headers, "= portico.dev/x-forwarded-prefix"),
    // --- portico.dev/ ---
    e("portico.dev/acme", Impl, G::Tls, "`false` keeps ACME away from this Ingress's spec.tls entries"),
    e("portico.dev/affinity-canary-behavior", Impl, G::Affinity, "on a canary: `sticky` (default) keeps a request carrying an affinity cookie on the side that set it; `legacy` lets the weight decide every time"),
    e("portico.dev/affinity-cookie-change-on-failure", Impl, G::Affinity, "`true`: re-issue the cookie when the request was retried on another endpoint"),
    e("portico.dev/affinity-cookie-domain", Impl, G::Affinity, "the cookie's Domain"),
    e("portico.dev/affinity-cookie-expires", Impl, G::Affinity, "the cookie's Expires, seconds from the response"),
    e("portico.dev/affinity-cookie-max-age", Impl, G::Affinity, "the cookie's Max-Age, seconds"),
    e("portico.dev/affinity-cookie-name", Impl, G::Affinity, "the affinity cookie's name"),
    e("portico.dev/affinity-cookie-path", Impl, G::Affinity, "the cookie's Path (default /)"),
    e("portico.dev/affinity-cookie-samesite", Impl, G::Affinity, "the cookie's SameSite: Strict, Lax or None"),
    e("portico.dev/affinity-cookie-secure", Impl, G::Affinity, "`true`: the cookie is Secure"),
    e("portico.dev/allow-source-ranges", Impl, G::Access, "403 for clients outside these networks"),
    e("portico.dev/app-root", Impl, G::Routing, "a request for exactly / gets 302 to this path"),
    e("portico.dev/auth-cache-duration", Impl, G::Access, "how long forward-auth answers are cached, by status: `200 202 10m, 401 30s` (2xx, 401, 403; default `200 202 401 5m`)"),
    e("portico.dev/auth-cache-key", Impl, G::Access, "cache forward-auth answers per route by this key: text with `$http_NAME`, `$cookie_NAME`, `$remote_user`, `$host`, `$request_uri`"),
    e("portico.dev/auth-method", Impl, G::Access, "the forward-auth subrequest's method (default: the request's)"),
    e("portico.dev/auth-realm", Impl, G::Access, "basic auth: the realm in `WWW-Authenticate`"),
    e("portico.dev/auth-request-redirect", Impl, G::Access, "forward auth: the `X-Auth-Request-Redirect` sent to the auth service (default: the request URI)"),
    e("portico.dev/auth-response-headers", Impl, G::Access, "forward auth: headers of the 2xx answer copied onto the upstream request (the client's own values removed)"),
    e("portico.dev/auth-secret", Impl, G::Access, "basic auth: the Secret with the users (same namespace; any type)"),
    e("portico.dev/auth-secret-type", Impl, G::Access, "basic auth: `auth-file` (key `auth`, htpasswd lines: bcrypt, apr1, {SHA}) or `auth-map` (key per user)"),
    e("portico.dev/auth-signin", Impl, G::Access, "forward auth: a 401 becomes 302 to this URL with `rd=` the request's URL added (unless the URL has `rd=` already, e.g. `?rd=$scheme://$host$request_uri`)"),
    e("portico.dev/auth-signin-redirect-param", Impl, G::Access, "forward auth: the parameter name of `auth-signin`'s redirect (default `rd`)"),
    e("portico.dev/auth-timeout", Impl, G::Access, "forward auth: time for the whole subrequest (default 5s); on timeout 503, never allowed"),
    e("portico.dev/auth-tls-error-page", Impl, G::Access, "a client without a required certificate is redirected (302) here instead of answered 400"),
    e("portico.dev/auth-tls-pass-certificate-to-upstream", Impl, G::Access, "`true`: the client's certificate goes upstream in ssl-client-cert (URL-encoded PEM)"),
    e("portico.dev/auth-tls-secret", Impl, G::Access, "client certificates: the Secret (same namespace) whose ca.crt (and ca.crl) verifies them; the host gets a TLS configuration of its own"),
    e("portico.dev/auth-tls-verify-client", Impl, G::Access, "`on` (default: required, 400 without), `optional`, `optional_no_ca` (asked for, passed on, not verified)"),
    e("portico.dev/auth-tls-verify-depth", Impl, G::Access, "the longest client chain accepted (default 1: signed by the CA itself)"),
    e("portico.dev/auth-type", Impl, G::Access, "`basic`: basic auth with the users of auth-secret (401 without the right password)"),
    e("portico.dev/auth-url", Impl, G::Access, "forward auth: each request's head is sent to this http(s) URL first (`$scheme`, `$host`, `$http_host`, `$request_uri`, `$escaped_request_uri` filled in); 2xx allows, 401/403 are answered, anything else is 500/503"),
    e("portico.dev/backend-protocol", Impl, G::Upstream, "HTTP, H2C, GRPC, HTTPS or GRPCS to the backends"),
    e("portico.dev/canary", Impl, G::Routing, "`true`: the Ingress's paths become the alternative backend of the main Ingress's same paths"),
    e("portico.dev/canary-by-cookie", Impl, G::Routing, "a cookie: `always` sends to the canary, `never` to the main backend"),
    e("portico.dev/canary-by-header", Impl, G::Routing, "a header: `always` sends to the canary, `never` to the main backend"),
    e("portico.dev/canary-by-header-pattern", Impl, G::Routing, "a regex the canary-by-header value must match to send to the canary"),
    e("portico.dev/canary-by-header-value", Impl, G::Routing, "the canary-by-header value that sends to the canary"),
    e("portico.dev/canary-weight", Impl, G::Routing, "requests out of canary-weight-total sent to the canary at random"),
    e("portico.dev/canary-weight-total", Impl, G::Routing, "the total canary-weight counts out of (default 100)"),
    e("portico.dev/connect-timeout", Impl, G::Timeouts, "time to connect to an endpoint (HTTP/1.1 and HTTPS backends)"),
    e("portico.dev/cors-allow-credentials", Impl, G::Access, "`false`: no Access-Control-Allow-Credentials (default true)"),
    e("portico.dev/cors-allow-headers", Impl, G::Access, "the preflight's Access-Control-Allow-Headers (default ingress-nginx's list)"),
    e("portico.dev/cors-allow-methods", Impl, G::Access, "the preflight's Access-Control-Allow-Methods (default GET, PUT, POST, DELETE, PATCH, OPTIONS)"),
    e("portico.dev/cors-allow-origin", Impl, G::Access, "`*` or a comma list of scheme://host[:port], `*.` for one label (default `*`)"),
    e("portico.dev/cors-expose-headers", Impl, G::Access, "Access-Control-Expose-Headers on allowed responses"),
    e("portico.dev/cors-max-age", Impl, G::Access, "the preflight's Access-Control-Max-Age, seconds (default 1728000)"),
    e("portico.dev/custom-http-errors", Impl, G::Routing, "these status codes (400-599) are answered with the error backend's page, keeping the code"),
    e("portico.dev/default-backend", Impl, G::Routing, "the Service (NAME or NAME:PORT, same namespace) that serves the error pages; alone, it covers the gateway's own 503"),
    e("portico.dev/deny-source-ranges", Impl, G::Access, "403 for clients in these networks (wins over the allowlist)"),
    e("portico.dev/enable-cors", Impl, G::Access, "`true`: the gateway answers CORS preflights (204) and adds CORS headers for allowed origins"),
    e("portico.dev/force-ssl-redirect", Impl, G::Tls, "redirect to HTTPS even without spec.tls here"),
    e("portico.dev/from-to-www-redirect", Impl, G::Routing, "`true`: www.HOST and HOST redirect (308) to the rule's host, path and query kept"),
    e("portico.dev/health-check", Impl, G::Health, "active checks: http or tcp"),
    e("portico.dev/health-check-fall", Impl, G::Health, "failed checks before down"),
    e("portico.dev/health-check-interval", Impl, G::Health, "time between checks"),
    e("portico.dev/health-check-path", Impl, G::Health, "the path an http check requests"),
    e("portico.dev/health-check-rise", Impl, G::Health, "good checks before up"),
    e("portico.dev/health-check-timeout", Impl, G::Health, "time a check may take"),
    e("portico.dev/hsts-include-subdomains", Impl, G::Tls, "HSTS includeSubDomains"),
    e("portico.dev/hsts-max-age", Impl, G::Tls, "Strict-Transport-Security max-age"),
    e("portico.dev/hsts-preload", Impl, G::Tls, "HSTS preload"),
    e("portico.dev/limit-allowlist", Impl, G::Access, "networks exempt from the limits"),
    e("portico.dev/limit-burst-multiplier", Impl, G::Access, "burst = limit × this (default 5)"),
    e("portico.dev/limit-connections", Impl, G::Access, "requests in flight at once per client address, per replica"),
    e("portico.dev/limit-rpm", Impl, G::Access, "requests per minute per client address, per replica"),
    e("portico.dev/limit-rps", Impl, G::Access, "requests per second per client address, per replica"),
    e("portico.dev/limit-status", Impl, G::Access, "the status over a limit (default 503 as ingress-nginx; 429 recommended)"),
    e("portico.dev/load-balance", Impl, G::Upstream, "round-robin, least-request, source-hash or cookie"),
    e("portico.dev/next-upstream", Impl, G::Timeouts, "when another endpoint is tried: error, timeout, http_5xx..., non_idempotent, off"),
    e("portico.dev/next-upstream-timeout", Impl, G::Timeouts, "no further try after this long"),
    e("portico.dev/next-upstream-tries", Impl, G::Timeouts, "tries per request, the first included (default 3)"),
    e("portico.dev/pass-host", Impl, G::Headers, "`false` sends the endpoint's address as Host"),
    e("portico.dev/permanent-redirect", Impl, G::Routing, "answer every request with a redirect to this URL (301)"),
    e("portico.dev/permanent-redirect-code", Impl, G::Routing, "the permanent redirect's status (300-303, 307, 308)"),
    e("portico.dev/proxy-body-size", Impl, G::Timeouts, "the largest request body (413 above)"),
    e("portico.dev/proxy-ssl-name", Impl, G::Upstream, "the SNI sent to and verified of HTTPS backends"),
    e("portico.dev/proxy-ssl-secret", Impl, G::Upstream, "the CA Secret for HTTPS backends"),
    e("portico.dev/proxy-ssl-verify", Impl, G::Upstream, "verify HTTPS backends' certificates"),
    e("portico.dev/request-body-timeout", Impl, G::Timeouts, "the longest pause in a request body"),
    e("portico.dev/request-headers-add", Impl, G::Headers, "append request headers"),
    e("portico.dev/request-headers-remove", Impl, G::Headers, "remove request headers"),
    e("portico.dev/request-headers-set", Impl, G::Headers, "set request headers"),
    e("portico.dev/response-headers-remove", Impl, G::Headers, "remove response headers"),
    e("portico.dev/response-headers-set", Impl, G::Headers, "set response headers"),
    e("portico.dev/rewrite-target", Impl, G::Routing, "the path sent upstream, $1..$9 being the path's capture groups; makes the paths regexes"),
    e("portico.dev/server-alias", Impl, G::Routing, "more names (comma-separated) serving the paths of the Ingress's one host"),
    e("portico.dev/service-upstream", Impl, G::Upstream, "`true`: send to the Service's ClusterIP instead of its endpoints"),
    e("portico.dev/ssl-passthrough", Impl, G::Tls, "the hosts are spliced to the `/` path's backend by SNI, never terminated; of the other annotations only load-balance and health-check: tcp apply (docs/l4.md)"),
    e("portico.dev/ssl-redirect", Impl, G::Tls, "308 from plain HTTP to HTTPS for TLS hosts"),
    e("portico.dev/temporal-redirect", Impl, G::Routing, "answer every request with a redirect to this URL (302)"),
    e("portico.dev/temporal-redirect-code", Impl, G::Routing, "the temporal redirect's status (300-303, 307, 308)"),
    e("portico.dev/upstream-host", Impl, G::Headers, "the Host sent upstream"),
    e("portico.dev/upstream-timeout", Impl, G::Timeouts, "time to the response head and between body reads"),
    e("portico.dev/use-regex", Impl, G::Routing, "the paths are case-insensitive regexes anchored at the start (and so are the host's other paths)"),
    e("portico.dev/x-forwarded-prefix", Impl, G::Headers, "X-Forwarded-Prefix sent upstream"),
];

/// The entry for `key`, if the table has one.
pub fn lookup(key: &str) -> Option<&'static Entry> {
    TABLE.binary_search_by(|e| e.key.cmp(key)).ok().map(|i| &TABLE[i])
}

/// Whether `key` is under one of the two prefixes the table covers.
pub fn is_covered(key: &str) -> bool {
    key.starts_with(PORTICO) || key.starts_with(NGINX)
}

/// What became of one annotation of an Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding<'a> {
    pub key: &'a str,
    /// `None`: under our prefixes but not in the table (unknown).
    pub entry: Option<&'static Entry>,
}

impl Finding<'_> {
    /// How the annotation counts: an unknown key is unsupported.
    pub fn support(&self) -> Support {
        self.entry.map_or(Support::Unsupported, |e| e.support)
    }

    /// The diagnostic text: for a no-op, why it is harmless; for an unsupported or unknown key, what to do.
    pub fn message(&self) -> String {
        match self.entry {
            Some(e) => match e.support {
                Support::Implemented => format!("annotation {}: {}", e.key, e.note),
                Support::NoOp => format!("annotation {} has no effect in Portico and is ignored: {}", e.key, e.note),
                Support::Unsupported => format!("annotation {} is not supported: {}", e.key, e.note),
            },
            None => match suggest(self.key) {
                Some(s) => format!("unknown annotation {}: did you mean {s}?", self.key),
                None => format!(
                    "unknown annotation {}: Portico does not know it (docs/annotations.md lists every annotation); remove or rename it",
                    self.key
                ),
            },
        }
    }
}

/// The annotations of `annotations` under our prefixes, each with its entry, in key order.
pub fn classify(annotations: Option<&BTreeMap<String, String>>) -> Vec<Finding<'_>> {
    annotations
        .into_iter()
        .flat_map(|m| m.keys())
        .filter(|k| is_covered(k))
        .map(|k| Finding {
            key: k,
            entry: lookup(k),
        })
        .collect()
}

/// The known key of the same prefix closest to `key` (at most two edits), for "did you mean".
fn suggest(key: &str) -> Option<&'static str> {
    let prefix = if key.starts_with(PORTICO) { PORTICO } else { NGINX };
    let name = key.strip_prefix(prefix)?;
    TABLE
        .iter()
        .filter_map(|e| e.key.strip_prefix(prefix).map(|n| (e.key, n)))
        .map(|(full, n)| (edit_distance(name, n), full))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
        .or_else(|| {
            // The same name under the other prefix (`portico.dev/rewrite-target` for nginx's).
            let other = if prefix == PORTICO { NGINX } else { PORTICO };
            TABLE
                .iter()
                .find(|e| e.key.strip_prefix(other) == Some(name) && e.support == Support::Implemented)
                .map(|e| e.key)
        })
}

/// Levenshtein distance over bytes (annotation names are short ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The classified list as Markdown, grouped, for `docs/annotations.md` between the generated-section markers.
pub fn render_markdown() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut groups: Vec<Group> = TABLE.iter().map(|e| e.group).collect();
    groups.sort();
    groups.dedup();
    for g in groups {
        let _ = writeln!(out, "\n### {}\n", g.title());
        out.push_str("| annotation | status | note |\n|---|---|---|\n");
        for e in TABLE.iter().filter(|e| e.group == g) {
            let _ = writeln!(out, "| `{}` | {} | {} |", e.key, e.support.as_str(), e.note);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_prefixed() {
        for w in TABLE.windows(2) {
            assert!(w[0].key < w[1].key, "{} must sort before {}", w[0].key, w[1].key);
        }
        for e in TABLE {
            assert!(is_covered(e.key), "{}", e.key);
            assert!(!e.note.is_empty(), "{} has no note", e.key);
        }
    }

    #[test]
    fn nothing_that_controls_access_is_a_no_op() {
        for e in TABLE {
            if e.group.controls_access() {
                assert_ne!(e.support, Support::NoOp, "{} controls access", e.key);
            }
            // The names themselves, in case an entry lands in the wrong group.
            let name = e.key.rsplit('/').next().unwrap();
            if [
                "auth",
                "limit",
                "source-range",
                "snippet",
                "satisfy",
                "modsecurity",
                "cors",
                "owasp",
            ]
            .iter()
            .any(|w| name.contains(w))
            {
                assert_ne!(e.support, Support::NoOp, "{} controls access", e.key);
                assert!(e.group.controls_access(), "{} belongs in the access group", e.key);
            }
        }
    }

    /// docs/annotations.md carries `render_markdown()` between its markers, and every full key its hand-written
    /// part names is implemented. `PORTICO_BLESS=1` rewrites the generated part.
    #[test]
    fn docs_agree_with_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/annotations.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let begin = doc.find("<!-- BEGIN catalog").expect("BEGIN catalog marker");
        let body_start = begin + doc[begin..].find("-->").unwrap() + 3;
        let end = doc.find("<!-- END catalog -->").expect("END catalog marker");
        let want = render_markdown();
        let have = doc[body_start..end].trim_end_matches('\n');
        if have != want.trim_end_matches('\n') {
            if std::env::var_os("PORTICO_BLESS").is_some() {
                let new = format!("{}{}\n{}", &doc[..body_start], want, &doc[end..]);
                std::fs::write(path, new).unwrap();
            } else {
                panic!("docs/annotations.md's classified list is out of date: run PORTICO_BLESS=1 cargo test --lib catalog");
            }
        }
        let rows = doc[..begin].lines().filter(|l| l.starts_with('|'));
        for word in rows.flat_map(|l| l.split('`')) {
            let key = word.split_whitespace().next().unwrap_or("").trim_end_matches(':');
            if is_covered(key) && !key.ends_with('*') {
                let e = lookup(key).unwrap_or_else(|| panic!("docs/annotations.md names {key}, which the table lacks"));
                assert_eq!(
                    e.support,
                    Support::Implemented,
                    "docs/annotations.md documents {key} as working"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_and_suggestions() {
        let m: BTreeMap<String, String> = [
            ("portico.dev/ssl-redirct", "false"),
            ("nginx.ingress.kubernetes.io/auth-keepalive", "10"),
            ("nginx.ingress.kubernetes.io/proxy-buffering", "on"),
            ("kubernetes.io/ingress.class", "nginx"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "true"),
            ("portico.dev/completely-new", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let found = classify(Some(&m));
        let by_key = |k: &str| found.iter().find(|f| f.key == k).unwrap();
        assert_eq!(found.len(), 5, "the legacy class annotation is not ours to classify");
        assert_eq!(by_key("portico.dev/ssl-redirct").support(), Support::Unsupported);
        assert_eq!(
            by_key("portico.dev/ssl-redirct").message(),
            "unknown annotation portico.dev/ssl-redirct: did you mean portico.dev/ssl-redirect?"
        );
        assert!(by_key("portico.dev/completely-new")
            .message()
            .contains("remove or rename it"));
        assert_eq!(
            by_key("nginx.ingress.kubernetes.io/auth-keepalive").support(),
            Support::Unsupported
        );
        assert_eq!(
            by_key("nginx.ingress.kubernetes.io/proxy-buffering").support(),
            Support::NoOp
        );
        assert_eq!(
            by_key("nginx.ingress.kubernetes.io/ssl-redirect").support(),
            Support::Implemented
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            suggest("portico.dev/mirror-target"),
            None,
            "nginx's name is not implemented"
        );
        assert_eq!(suggest("portico.dev/upstream-vhost"), Some("portico.dev/upstream-host"));
        assert_eq!(
            suggest("portico.dev/session-cookie-name"),
            Some("nginx.ingress.kubernetes.io/session-cookie-name"),
            "the same name under the other prefix"
        );
    }
}
