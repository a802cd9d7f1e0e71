//! Header edits on the way upstream and back: hop-by-hop headers out (including those a `Connection` header
//! names), then the gateway's own `X-Forwarded-*` headers set, so a client cannot remove or spoof them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if name != header::HOST {
                headers.remove(&name);
            }
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// What the gateway knows about the client side of a request.
pub struct Forwarded<'a> {
    pub client_ip: std::net::IpAddr,
    pub proto: &'static str,
    pub host: &'a HeaderValue,
    pub port: u16,
}

/// Sets `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Port`,
/// replacing whatever the client sent (no proxy in front is trusted yet).
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    let ip = itoa_ip(f.client_ip);
    headers.insert(X_REAL_IP.clone(), ip.clone());
    headers.insert(X_FORWARDED_FOR.clone(), ip);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(f.proto));
    headers.insert(X_FORWARDED_HOST.clone(), f.host.clone());
    headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(f.port));
}

fn itoa_ip(ip: std::net::IpAddr) -> HeaderValue {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_go_but_gateway_headers_are_set_after() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Forwarded-For, x-secret, host"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key(header::CONNECTION));
        assert!(!h.contains_key(header::UPGRADE));
        assert!(!h.contains_key("keep-alive"));
        assert_eq!(h.get(header::HOST).unwrap(), "a.example");
        let host = HeaderValue::from_static("a.example:8080");
        set_forwarded(
            &mut h,
            &Forwarded {
                client_ip: "::ffff:10.1.2.3".parse().unwrap(),
                proto: "http",
                host: &host,
                port: 8080,
            },
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-real-ip").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "a.example:8080");
        assert_eq!(h.get("x-forwarded-port").unwrap(), "8080");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    }
}
