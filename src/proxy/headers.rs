//! Header edits on the way upstream and back: hop-by-hop headers out (including those a `Connection` header
//! names, and `HTTP2-Settings`), then the gateway's own `X-Forwarded-*` headers set, so a client cannot remove or
//! spoof them. From a peer that is not a trusted proxy, every forwarding header it sent (`Forwarded`, any
//! `X-Forwarded-*`, `X-Forwarded-Prefix` included) is removed first. HTTP/2 cookie crumbs are joined into one
//! field, and the header budget is counted as HTTP/1.1 would send the fields ([`over_budget`]).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::cidr::Cidr;

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // The h2c upgrade's settings (RFC 7540 section 3.2.1): connection-specific even when `Connection` omits it.
    HeaderName::from_static("http2-settings"),
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Removes hop-by-hop headers and every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (standard names compare as integers) finds which hop-by-hop headers are present;
    // most messages carry none, or only `Connection: keep-alive`.
    let mut present = 0u8;
    for k in headers.keys() {
        // Most names fail on their length alone (the hop-by-hop names are 2, 7, 10, 14, 16 or 17 bytes long).
        if !matches!(k.as_str().len(), 2 | 7 | 10 | 14 | 16 | 17) {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Names listed in `Connection` (index 0), other than the connection options that are not header names
        // or are removed below anyway.
        let mut named: Vec<HeaderName> = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| crate::http1::tokens::list(v.as_bytes()))
        {
            if token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token) {
                if name != header::HOST && !HOP_BY_HOP.contains(&name) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(&name);
        }
    }
    for (i, h) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(h);
        }
    }
}

/// Drops headers whose names use underscores to pass for a gateway header (`X_Forwarded_For`,
/// `x_real_ip`): some backends and frameworks fold `_` into `-`, which would let a client spoof them.
pub fn drop_underscore_impostors(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let impostors: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let n = k.as_str();
            n.contains('_') && {
                let folded = n.replace('_', "-");
                folded.starts_with("x-forwarded-") || folded == "x-real-ip" || folded == "forwarded"
            }
        })
        .cloned()
        .collect();
    for k in impostors {
        headers.remove(&k);
    }
}

/// The client address of a request that arrived from `hop`: `hop` itself, unless `hop` is a trusted proxy, in
/// which case the rightmost address in `X-Forwarded-For` that is not a trusted proxy (an unparsable entry stops
/// the walk: the address to its right is used).
pub fn client_ip(headers: &HeaderMap, trusted: &[Cidr], hop: IpAddr) -> IpAddr {
    if !Cidr::any_contains(trusted, hop) {
        return hop;
    }
    let mut client = hop;
    let values: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(ip) = parse_xff_entry(entry.trim()) else { break };
        client = ip;
        if !Cidr::any_contains(trusted, ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_xff_entry(e: &str) -> Option<IpAddr> {
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    e.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// What the gateway knows about the client side of a request.
pub struct Forwarded<'a> {
    /// The real client (after PROXY protocol and trusted `X-Forwarded-For`).
    pub client_ip: IpAddr,
    /// The address the request came from (the socket peer, or the PROXY header's source).
    pub hop: &'a HopValues,
    /// Whether `hop` is a trusted proxy, whose `X-Forwarded-*` headers are kept and extended.
    pub trusted: bool,
    pub proto: &'static str,
    pub host: &'a HeaderValue,
}

/// A connection's hop address and local port, with their header values rendered once per connection rather than
/// once per request.
#[derive(Debug, Clone)]
pub struct HopValues {
    pub ip: IpAddr,
    ip_value: HeaderValue,
    port_value: HeaderValue,
}

impl HopValues {
    pub fn new(ip: IpAddr, local_port: u16) -> Self {
        Self {
            ip,
            ip_value: ip_value(ip),
            port_value: HeaderValue::from(local_port),
        }
    }
}

/// Whether a field is a forwarding header only a trusted hop may set: `Forwarded` (RFC 7239) or any
/// `X-Forwarded-*` (`-For`, `-Proto`, `-Host`, `-Port`, `-Prefix`, `-Server`, `-Uri`, ...).
fn is_forwarding(name: &HeaderName) -> bool {
    // Most names fail on their first byte.
    let n = name.as_str().as_bytes();
    match n.first() {
        Some(b'x') => n.starts_with(b"x-forwarded-"),
        Some(b'f') => n == b"forwarded",
        _ => false,
    }
}

/// Sets `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Port`. From an
/// untrusted hop every forwarding header it sent is removed first (`Forwarded`, `X-Forwarded-Prefix` and the
/// rest: backends build redirects and links from them) and ours replace them; from a trusted proxy its chain is
/// extended with the hop and its other forwarding headers are kept. `X-Forwarded-Prefix` is then set only by the
/// route's own configuration.
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    if !f.trusted && headers.keys().any(is_forwarding) {
        let sent: Vec<HeaderName> = headers.keys().filter(|k| is_forwarding(k)).cloned().collect();
        for name in sent {
            headers.remove(&name);
        }
    }
    // Room for the five at once (one growth at most, instead of one per insert past the parsed headers).
    headers.reserve(5);
    let hop = &f.hop.ip_value;
    let real_ip = if f.client_ip == f.hop.ip {
        hop.clone()
    } else {
        ip_value(f.client_ip)
    };
    headers.insert(X_REAL_IP.clone(), real_ip);
    let chain = if f.trusted {
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            hop.clone()
        } else {
            let joined = format!("{}, {}", prior.join(", "), hop.to_str().unwrap_or_default());
            HeaderValue::from_str(&joined).unwrap_or_else(|_| hop.clone())
        }
    } else {
        hop.clone()
    };
    headers.insert(X_FORWARDED_FOR.clone(), chain);
    if !(f.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(f.proto));
    }
    if !(f.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        headers.insert(X_FORWARDED_HOST.clone(), f.host.clone());
    }
    if !(f.trusted && headers.contains_key(&X_FORWARDED_PORT)) {
        headers.insert(X_FORWARDED_PORT.clone(), f.hop.port_value.clone());
    }
}

/// Joins HTTP/2 `cookie` crumbs into one field with `"; "` (RFC 9113 section 8.2.3), as an HTTP/1.1 backend
/// must receive them (RFC 6265 allows one `Cookie` field).
pub fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (crumbs.next(), crumbs.next()) else {
        return;
    };
    let mut joined = Vec::with_capacity(first.len() * 2);
    for (i, crumb) in headers.get_all(header::COOKIE).iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Whether an HTTP/2 request is over the header budget HTTP/1.1 requests have ([`crate::http1::MAX_HEAD`] bytes,
/// [`crate::http1::MAX_FIELDS`] fields): its fields counted as HTTP/1.1 would carry them (`name: value\r\n`, the
/// request line, `Host` from `:authority`), cookie crumbs as one field (RFC 9113 section 8.2.3), so splitting a
/// cookie in crumbs costs nothing extra and neither protocol allows more than the other.
pub fn over_budget(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> bool {
    // "METHOD TARGET HTTP/1.1\r\n", "host: AUTHORITY\r\n", the empty line.
    let target = uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    let mut size = method.as_str().len() + target + 11 + uri.authority().map_or(0, |a| a.as_str().len() + 8) + 2;
    let mut fields = usize::from(uri.authority().is_some());
    let mut cookie = false;
    for (name, value) in headers {
        if *name == header::COOKIE {
            // Crumbs after the first cost their "; " only.
            size += value.len() + if cookie { 2 } else { name.as_str().len() + 4 };
            fields += usize::from(!cookie);
            cookie = true;
        } else {
            size += name.as_str().len() + value.len() + 4;
            fields += 1;
        }
    }
    size > crate::http1::MAX_HEAD || fields > crate::http1::MAX_FIELDS
}

/// The last client address a listener saw and its header value, so that a run of connections from one address
/// (a load balancer, a busy client) shares one rendered value.
pub struct HopCache {
    port: HeaderValue,
    last: Option<(IpAddr, HeaderValue)>,
}

impl HopCache {
    pub fn new(local_port: u16) -> Self {
        Self {
            port: HeaderValue::from(local_port),
            last: None,
        }
    }

    pub fn get(&mut self, ip: IpAddr) -> HopValues {
        let ip_value = match &self.last {
            Some((last, v)) if *last == ip => v.clone(),
            _ => {
                let v = ip_value(ip);
                self.last = Some((ip, v.clone()));
                v
            }
        };
        HopValues {
            ip,
            ip_value,
            port_value: self.port.clone(),
        }
    }
}

fn ip_value(ip: IpAddr) -> HeaderValue {
    match crate::cidr::canonical(ip) {
        // Dotted quad by hand: `to_string` goes through the formatting machinery.
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            HeaderValue::from_bytes(&buf[..n]).expect("an IP address is a valid header value")
        }
        v6 => HeaderValue::from_str(&v6.to_string()).expect("an IP address is a valid header value"),
    }
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
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        set_forwarded(
            &mut h,
            &Forwarded {
                client_ip: ip,
                hop: &HopValues::new(ip, 8080),
                trusted: false,
                proto: "http",
                host: &host,
            },
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-real-ip").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "a.example:8080");
        assert_eq!(h.get("x-forwarded-port").unwrap(), "8080");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    }

    #[test]
    fn the_length_filter_lets_every_hop_by_hop_name_through() {
        for h in &HOP_BY_HOP {
            assert!(matches!(h.as_str().len(), 2 | 7 | 10 | 14 | 16 | 17), "{h}");
        }
    }

    #[test]
    fn addresses_render_like_display_and_the_cache_follows_the_address() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "10.0.0.1",
            "::ffff:192.0.2.33",
            "2001:db8::1",
            "::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip), crate::cidr::canonical(ip).to_string().as_str());
        }
        let mut cache = HopCache::new(8443);
        let a = cache.get("10.1.2.3".parse().unwrap());
        let b = cache.get("10.1.2.4".parse().unwrap());
        let a2 = cache.get("10.1.2.3".parse().unwrap());
        assert_eq!(
            (a.ip_value.to_str().unwrap(), b.ip_value.to_str().unwrap()),
            ("10.1.2.3", "10.1.2.4")
        );
        assert_eq!(a2.ip_value, "10.1.2.3");
        assert_eq!(a2.port_value, "8443");
    }

    #[test]
    fn client_address_from_trusted_proxies_only() {
        let trusted = Cidr::parse_list("10.0.0.0/8").unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.9"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.7"));
        // Untrusted hop: its word counts for nothing.
        assert_eq!(client_ip(&h, &trusted, ip("198.51.100.1")), ip("198.51.100.1"));
        // Trusted hop: rightmost untrusted entry, skipping trusted proxies in the chain.
        assert_eq!(client_ip(&h, &trusted, ip("10.0.0.1")), ip("203.0.113.9"));
        // Garbage stops the walk at the address to its right.
        let mut g = HeaderMap::new();
        g.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, junk, 10.0.0.9"));
        assert_eq!(client_ip(&g, &trusted, ip("10.0.0.1")), ip("10.0.0.9"));
        // A trusted hop's chain is extended; its proto is kept.
        let host = HeaderValue::from_static("a");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        set_forwarded(
            &mut h,
            &Forwarded {
                client_ip: ip("203.0.113.9"),
                hop: &HopValues::new(ip("10.0.0.1"), 80),
                trusted: true,
                proto: "http",
                host: &host,
            },
        );
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 203.0.113.9, 10.0.0.7, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
    }

    #[test]
    fn each_hop_by_hop_header_goes_alone_and_others_stay() {
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("a.example"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            h.insert(name.clone(), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} kept");
            assert_eq!(h.len(), 2, "{name}: other headers lost");
        }
        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("a.example"));
        plain.insert("x-trace", HeaderValue::from_static("1"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn forwarding_headers_of_untrusted_peers_go_and_trusted_ones_stay() {
        let sent = [
            ("x-forwarded-prefix", "/admin"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-server", "evil"),
            ("x-forwarded-proto", "https"),
            ("x-trace", "1"),
        ];
        let host = HeaderValue::from_static("a");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for trusted in [false, true] {
            let mut h = HeaderMap::new();
            for (n, v) in sent {
                h.insert(n, HeaderValue::from_static(v));
            }
            set_forwarded(
                &mut h,
                &Forwarded {
                    client_ip: ip,
                    hop: &HopValues::new(ip, 80),
                    trusted,
                    proto: "http",
                    host: &host,
                },
            );
            assert_eq!(h.contains_key("x-forwarded-prefix"), trusted);
            assert_eq!(h.contains_key("forwarded"), trusted);
            assert_eq!(h.contains_key("x-forwarded-server"), trusted);
            assert_eq!(h["x-forwarded-proto"], if trusted { "https" } else { "http" });
            assert_eq!(h["x-trace"], "1");
        }
    }

    #[test]
    fn cookie_crumbs_are_joined_and_counted_once() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookie_crumbs(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2; c=3"]);
        let uri: http::Uri = "http://h.example/".parse().unwrap();
        // 150 crumbs of a 20 KiB cookie: within the budget, as the same cookie in one HTTP/1.1 field is.
        let mut crumbs = HeaderMap::new();
        for i in 0..150 {
            crumbs.append(
                header::COOKIE,
                HeaderValue::from_str(&format!("c{i:03}={}", "v".repeat(131))).unwrap(),
            );
        }
        assert!(!over_budget(&http::Method::GET, &uri, &crumbs));
        for i in 0..400 {
            crumbs.append(
                header::COOKIE,
                HeaderValue::from_str(&format!("d{i:03}={}", "v".repeat(200))).unwrap(),
            );
        }
        assert!(over_budget(&http::Method::GET, &uri, &crumbs));
        let mut many = HeaderMap::new();
        for i in 0..crate::http1::MAX_FIELDS {
            many.insert(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        assert!(
            over_budget(&http::Method::GET, &uri, &many),
            "the authority counts as Host"
        );
    }

    #[test]
    fn underscore_impostors_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("x_forwarded_for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x_real_ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("my_header", HeaderValue::from_static("kept"));
        drop_underscore_impostors(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("my_header"));
    }
}
