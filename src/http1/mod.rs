//! HTTP/1.1 message framing, the one copy shared by the gateway's own server (`proxy/h1.rs`), its own client
//! (`upstream/h1.rs`) and the checks on what hyper parsed:
//!
//! - [`tokens`]: list fields, `Connection` options, `Transfer-Encoding` codings (the one token parser);
//! - [`framing`]: the one [`Framing`] type, how requests and responses are delimited (strictly: see its docs),
//!   response framing fields cleaned, trailer fields that may not be trailers;
//! - [`request`]: the own request-head parser; [`response`]: the own response-head parser;
//! - [`chunked`]: the chunked coding decoder (chunk extensions checked, trailers filtered);
//! - [`upgrade`]: which `Upgrade`s may be forwarded and when a 101 may open a tunnel;
//! - [`maps`]: header maps kept for reuse per thread (the parsers take from it, the writers give back).
//!
//! A leaf: it imports nothing from the rest of the crate, so the fuzz targets (`fuzz/`) reach every parser here.

pub mod chunked;
pub mod framing;
pub mod maps;
pub mod request;
pub mod response;
pub mod tokens;
pub mod upgrade;

pub use framing::{Framing, FramingError};

/// Longest request or response head, and the header budget of a request whatever its protocol: an HTTP/2
/// request's fields are counted as they would be sent over HTTP/1.1 (cookie crumbs joined, RFC 9113 section
/// 8.2.3). Over it: 431.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most fields in a head (hyper's default too); cookie crumbs count as one.
pub const MAX_FIELDS: usize = 100;
