//! Certificates: parsing `kubernetes.io/tls` Secrets and PEM files into rustls keys, checking which hosts a
//! certificate covers, and the default self-signed certificate.
//!
//! ```text
//!  Secret / PEM file / rcgen ──LoadedCert::from_*──▶ LoadedCert { key, info }
//!                                                      │ validate_for_hosts(hosts, now): one reason per host
//!                      translator: (host, LoadedCert) pairs + default
//!                                                      ▼
//!                     CertSnapshot::new ──Arc──▶ ArcSwap<CertSnapshot> ──▶ SniResolver (one load per handshake)
//!                                                                            └─▶ server_config(): ring, TLS 1.2/1.3, h2
//! ```
//!
//! - [`LoadedCert`] keeps the rustls [`CertifiedKey`](rustls::sign::CertifiedKey) and a [`CertInfo`] summary;
//!   cloning it is two `Arc` clones, so a connection can keep the one it presented and, when its client sent
//!   SNI, answer 421 Misdirected Request with [`LoadedCert::covers`] for each request's Host (a connection
//!   without SNI is routed by Host; see `TlsConn::may_serve` in `proxy`).
//! - [`CertSnapshot`] is immutable; replacing it in the `ArcSwap` changes the certificate on the next
//!   handshake and leaves open connections alone.
//! - Nothing here reads the clock except [`LoadedCert::self_signed`]; checks take `now` in unix seconds.
//!
//! For 421 the connection needs the certificate its handshake presented. Exact: publish a
//! `(Arc<CertSnapshot>, server_config(SniResolver::pinned(snapshot)))` pair in one `ArcSwap`, load it once per
//! connection, and after the handshake keep `snapshot.resolve_cert(conn.server_name()).clone()`. With the live
//! [`SniResolver::new`] the same lookup on the current snapshot can only be wrong if a new snapshot was
//! published during that connection's handshake.

mod build;
pub mod client_auth;
mod error;
mod info;
mod loaded;
mod resolver;
mod snapshot;
mod time;

/// A throw-away CA and fixed test keys, for tests and examples (not for production certificates).
#[doc(hidden)]
pub mod testing;

pub use build::{build_tls, DefaultSource, SetTls, TlsBuild};
pub use error::CertError;
pub use info::{normalize_host, CertInfo};
pub use loaded::{LoadedCert, TLS_SECRET_TYPE};
pub use resolver::{server_config, server_config_with_sessions, SniResolver};
pub use snapshot::CertSnapshot;
pub use time::{format_unix, unix_now};
