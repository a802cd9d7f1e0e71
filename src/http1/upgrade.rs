//! Protocol upgrades (RFC 9110 section 7.8): which a request may ask a backend for, and whether the backend's
//! `101 Switching Protocols` answers what was asked. A tunnel is opened only for an allowed protocol, and only
//! after a 101 naming it; every other `Upgrade` (`h2c` above all: a backend that switches to HTTP/2 would serve
//! streams the gateway never routed) is removed from the request, which goes on as a plain one.

use http::header::{self, HeaderMap, HeaderValue};
use http::Version;

use super::tokens;

/// The protocols allowed when a listener set names none (`allowedUpgrades`).
pub const DEFAULT_ALLOWED: [&str; 1] = ["websocket"];

/// The name part of a protocol (`websocket` of `websocket/13`).
fn name(protocol: &[u8]) -> &[u8] {
    protocol.split(|&b| b == b'/').next().unwrap_or_default().trim_ascii()
}

fn allowed_name(protocol: &[u8], allowed: Option<&[String]>) -> bool {
    let protocol = name(protocol);
    match allowed {
        Some(list) => list.iter().any(|a| protocol.eq_ignore_ascii_case(a.as_bytes())),
        None => DEFAULT_ALLOWED
            .iter()
            .any(|a| protocol.eq_ignore_ascii_case(a.as_bytes())),
    }
}

/// The `Upgrade` value to forward for a request that asks to switch protocols (HTTP/1.1, `Connection: upgrade`,
/// one `Upgrade` field), when every protocol it lists is allowed (`allowed`: the listener set's list, `None` for
/// [`DEFAULT_ALLOWED`]). `None`: no upgrade is forwarded.
pub fn requested(version: Version, headers: &HeaderMap, allowed: Option<&[String]>) -> Option<HeaderValue> {
    // Most requests ask for none: one lookup.
    let upgrade = headers.get(header::UPGRADE).filter(|_| version == Version::HTTP_11)?;
    if headers.get_all(header::UPGRADE).iter().nth(1).is_some() {
        return None;
    }
    if !headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens::has(v.as_bytes(), b"upgrade"))
    {
        return None;
    }
    let mut protocols = tokens::list(upgrade.as_bytes()).peekable();
    protocols.peek()?;
    protocols.all(|p| allowed_name(p, allowed)).then(|| upgrade.clone())
}

/// Whether a 101 response switches to one protocol of those `asked` lists (RFC 9110 section 15.2.2: the server
/// names the protocol it switches to).
pub fn switched_to(asked: &HeaderValue, response: &HeaderMap) -> bool {
    let mut answered = response.get_all(header::UPGRADE).iter();
    let (Some(answer), None) = (answered.next(), answered.next()) else {
        return false;
    };
    let mut switched = tokens::list(answer.as_bytes());
    let (Some(to), None) = (switched.next(), switched.next()) else {
        return false;
    };
    tokens::list(asked.as_bytes()).any(|p| name(p).eq_ignore_ascii_case(name(to)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_allowed_protocols_are_forwarded() {
        let ws = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")]);
        assert_eq!(requested(Version::HTTP_11, &ws, None).unwrap(), "WebSocket");
        assert!(requested(Version::HTTP_10, &ws, None).is_none());
        let h2c = headers(&[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")]);
        assert!(requested(Version::HTTP_11, &h2c, None).is_none());
        let both = headers(&[("connection", "upgrade"), ("upgrade", "websocket, h2c")]);
        assert!(requested(Version::HTTP_11, &both, None).is_none());
        let no_connection = headers(&[("upgrade", "websocket")]);
        assert!(requested(Version::HTTP_11, &no_connection, None).is_none());
        let custom = headers(&[("connection", "upgrade"), ("upgrade", "echo/1")]);
        assert!(requested(Version::HTTP_11, &custom, None).is_none());
        let list = vec!["websocket".to_string(), "echo".to_string()];
        assert!(requested(Version::HTTP_11, &custom, Some(&list)).is_some());
        let empty = headers(&[("connection", "upgrade"), ("upgrade", " , ")]);
        assert!(requested(Version::HTTP_11, &empty, Some(&list)).is_none());
    }

    #[test]
    fn a_101_must_name_what_was_asked() {
        let asked = HeaderValue::from_static("websocket");
        assert!(switched_to(&asked, &headers(&[("upgrade", "WebSocket")])));
        assert!(!switched_to(&asked, &headers(&[("upgrade", "h2c")])));
        assert!(!switched_to(&asked, &headers(&[])));
        assert!(!switched_to(&asked, &headers(&[("upgrade", "websocket, h2c")])));
    }
}
