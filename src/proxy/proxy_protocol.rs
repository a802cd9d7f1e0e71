//! PROXY protocol v1 (text) and v2 (binary) headers, as HAProxy and cloud load balancers send them ahead of a
//! connection's first byte. Read exactly the header's bytes (never more, so nothing is lost for HTTP), bounded
//! in size; the caller bounds the time and closes the connection on any error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// What the header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection was relayed for this client.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v2 LOCAL (health checks by the proxy itself) or v1 UNKNOWN / v2 UNSPEC: keep the socket's addresses.
    Local,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
}

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the protocol's own bound).
const V1_MAX: usize = 107;
/// The largest v2 payload accepted (addresses plus TLVs; real proxies send far less).
const V2_MAX_PAYLOAD: usize = 512;

/// Reads one PROXY header (v1 or v2) from the start of `s`.
pub async fn read_header<S: AsyncRead + Unpin>(s: &mut S) -> Result<ProxyHeader, ProxyProtocolError> {
    let mut start = [0u8; 6];
    s.read_exact(&mut start).await?;
    if &start == b"PROXY " {
        read_v1(s).await
    } else if start == V2_SIGNATURE[..6] {
        read_v2(s).await
    } else {
        Err(ProxyProtocolError::Malformed("no PROXY protocol signature"))
    }
}

async fn read_v1<S: AsyncRead + Unpin>(s: &mut S) -> Result<ProxyHeader, ProxyProtocolError> {
    // Byte by byte up to CRLF: the header is short and this never reads past it.
    let mut line = Vec::with_capacity(V1_MAX);
    line.extend_from_slice(b"PROXY ");
    loop {
        if line.len() >= V1_MAX {
            return Err(ProxyProtocolError::Malformed("v1 header longer than 107 bytes"));
        }
        let b = s.read_u8().await?;
        line.push(b);
        if line.ends_with(b"\r\n") {
            break;
        }
    }
    let text = std::str::from_utf8(&line[6..line.len() - 2])
        .map_err(|_| ProxyProtocolError::Malformed("v1 header is not ASCII"))?;
    let mut parts = text.split(' ');
    let family = parts.next().unwrap_or("");
    if family == "UNKNOWN" {
        return Ok(ProxyHeader::Local);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyProtocolError::Malformed(
            "v1 header needs 4 fields after the family",
        ));
    };
    let parse_ip = |s: &str| -> Result<IpAddr, ProxyProtocolError> {
        match family {
            "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
            "TCP6" => s.parse::<Ipv6Addr>().map(IpAddr::V6),
            _ => return Err(ProxyProtocolError::Malformed("v1 family is not TCP4, TCP6 or UNKNOWN")),
        }
        .map_err(|_| ProxyProtocolError::Malformed("v1 address does not match its family"))
    };
    let parse_port = |s: &str| -> Result<u16, ProxyProtocolError> {
        if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(ProxyProtocolError::Malformed("v1 port is not a number"));
        }
        s.parse()
            .map_err(|_| ProxyProtocolError::Malformed("v1 port out of range"))
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(parse_ip(src)?, parse_port(sport)?),
        destination: SocketAddr::new(parse_ip(dst)?, parse_port(dport)?),
    })
}

async fn read_v2<S: AsyncRead + Unpin>(s: &mut S) -> Result<ProxyHeader, ProxyProtocolError> {
    let mut rest = [0u8; 10];
    s.read_exact(&mut rest).await?;
    if rest[..6] != V2_SIGNATURE[6..] {
        return Err(ProxyProtocolError::Malformed("bad v2 signature"));
    }
    let (ver_cmd, family) = (rest[6], rest[7]);
    let len = usize::from(u16::from_be_bytes([rest[8], rest[9]]));
    if ver_cmd >> 4 != 2 {
        return Err(ProxyProtocolError::Malformed("v2 version is not 2"));
    }
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyProtocolError::Malformed("v2 payload too large"));
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    match ver_cmd & 0x0f {
        0 => return Ok(ProxyHeader::Local),
        1 => {}
        _ => return Err(ProxyProtocolError::Malformed("v2 command is not LOCAL or PROXY")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family {
        // UNSPEC: the receiver uses the socket's addresses.
        0x00 => Ok(ProxyHeader::Local),
        // TCP over IPv4.
        0x11 => {
            if len < 12 {
                return Err(ProxyProtocolError::Malformed("v2 TCP4 addresses truncated"));
            }
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(&payload[0..4]), port(&payload[8..10])),
                destination: SocketAddr::new(ip(&payload[4..8]), port(&payload[10..12])),
            })
        }
        // TCP over IPv6.
        0x21 => {
            if len < 36 {
                return Err(ProxyProtocolError::Malformed("v2 TCP6 addresses truncated"));
            }
            let ip = |b: &[u8]| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes")));
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(ip(&payload[0..16]), port(&payload[32..34])),
                destination: SocketAddr::new(ip(&payload[16..32]), port(&payload[34..36])),
            })
        }
        _ => Err(ProxyProtocolError::Malformed("v2 family is not TCP over IPv4 or IPv6")),
    }
}

/// Encodes a v1 (text) PROXY header, as sent to layer-4 backends with `sendProxyProtocol: v1`. An IPv4 address
/// beside an IPv6 one is sent in its IPv4-mapped IPv6 form, so both are of one family.
pub fn encode_v1(header: &ProxyHeader) -> Vec<u8> {
    match header {
        ProxyHeader::Local => b"PROXY UNKNOWN\r\n".to_vec(),
        ProxyHeader::Proxied { source, destination } => {
            let (s, d) = (source.ip(), destination.ip());
            let line = match (s, d) {
                (IpAddr::V4(s), IpAddr::V4(d)) => format!("PROXY TCP4 {s} {d}"),
                _ => {
                    let v6 = |a: IpAddr| match a {
                        IpAddr::V6(x) => x,
                        IpAddr::V4(x) => x.to_ipv6_mapped(),
                    };
                    format!("PROXY TCP6 {} {}", v6(s), v6(d))
                }
            };
            format!("{line} {} {}\r\n", source.port(), destination.port()).into_bytes()
        }
    }
}

/// Encodes a v2 PROXY header (sent to layer-4 backends with `sendProxyProtocol: v2`; also for tests and tools
/// that speak to Portico).
pub fn encode_v2(header: &ProxyHeader) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    match header {
        ProxyHeader::Local => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
        ProxyHeader::Proxied { source, destination } => match (source, destination) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                out.extend_from_slice(&[0x21, 0x11, 0, 12]);
                out.extend_from_slice(&s.ip().octets());
                out.extend_from_slice(&d.ip().octets());
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&d.port().to_be_bytes());
            }
            (s, d) => {
                let v6 = |a: &SocketAddr| match a.ip() {
                    IpAddr::V6(x) => x.octets(),
                    IpAddr::V4(x) => x.to_ipv6_mapped().octets(),
                };
                out.extend_from_slice(&[0x21, 0x21, 0, 36]);
                out.extend_from_slice(&v6(s));
                out.extend_from_slice(&v6(d));
                out.extend_from_slice(&s.port().to_be_bytes());
                out.extend_from_slice(&d.port().to_be_bytes());
            }
        },
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<ProxyHeader, ProxyProtocolError>, Vec<u8>) {
        let mut r = bytes;
        let h = read_header(&mut r).await;
        (h, r.to_vec())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn v1_headers_sent_read_back() {
        for (s, d) in [
            ("203.0.113.7:51234", "10.0.0.1:443"),
            ("[2001:db8::1]:1", "10.0.0.1:443"),
        ] {
            let h = ProxyHeader::Proxied {
                source: addr(s),
                destination: addr(d),
            };
            let (back, rest) = parse(&encode_v1(&h)).await;
            let back = back.unwrap();
            assert!(rest.is_empty());
            if s.starts_with('[') {
                let ProxyHeader::Proxied { destination, .. } = back else {
                    panic!()
                };
                assert_eq!(destination.port(), 443);
            } else {
                assert_eq!(back, h);
            }
        }
        assert_eq!(
            parse(&encode_v1(&ProxyHeader::Local)).await.0.unwrap(),
            ProxyHeader::Local
        );
    }

    #[tokio::test]
    async fn v1() {
        let (h, rest) = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(
            h.unwrap(),
            ProxyHeader::Proxied {
                source: addr("203.0.113.7:51234"),
                destination: addr("10.0.0.1:443")
            }
        );
        assert_eq!(rest, b"GET / HTTP/1.1\r\n", "the header must be consumed exactly");
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n").await;
        assert_eq!(
            h.unwrap(),
            ProxyHeader::Proxied {
                source: addr("[2001:db8::1]:1"),
                destination: addr("[2001:db8::2]:2")
            }
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").await.0.unwrap(), ProxyHeader::Local);
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(parse(bad).await.0.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 200));
        assert!(matches!(parse(&long).await.0, Err(ProxyProtocolError::Malformed(_))));
    }

    #[tokio::test]
    async fn v2_round_trips_and_rejects() {
        for h in [
            ProxyHeader::Proxied {
                source: addr("203.0.113.7:51234"),
                destination: addr("10.0.0.1:443"),
            },
            ProxyHeader::Proxied {
                source: addr("[2001:db8::7]:5"),
                destination: addr("[2001:db8::1]:80"),
            },
            ProxyHeader::Local,
        ] {
            let mut bytes = encode_v2(&h);
            bytes.extend_from_slice(b"GET");
            let (got, rest) = parse(&bytes).await;
            assert_eq!(got.unwrap(), h);
            assert_eq!(rest, b"GET");
        }
        // Truncated, oversized, wrong version, UDP.
        let good = encode_v2(&ProxyHeader::Proxied {
            source: addr("1.2.3.4:1"),
            destination: addr("5.6.7.8:2"),
        });
        assert!(parse(&good[..20]).await.0.is_err());
        let mut big = good.clone();
        big[14..16].copy_from_slice(&2000u16.to_be_bytes());
        assert!(parse(&big).await.0.is_err());
        let mut v1 = good.clone();
        v1[12] = 0x11;
        assert!(parse(&v1).await.0.is_err());
        let mut udp = good.clone();
        udp[13] = 0x12;
        assert!(parse(&udp).await.0.is_err());
    }
}
