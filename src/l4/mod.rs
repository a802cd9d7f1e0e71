//! Layer 4 (issue #20): TLS passthrough by SNI on the gateway's TLS listeners, and the splice, counters and
//! checks behind the plain TCP listeners of `tcp[]` (their accept loop is `proxy::tcp`). See docs/l4.md.
//!
//! ```text
//!  TLS listener of a set with passthrough routes (proxy::server)
//!    └─ read the ClientHello (client_hello: ≤ 16 KiB, ≤ 10 s; the bytes are kept)
//!         ├─ SNI is a passthrough route ──▶ splice: connect to an endpoint (balanced, retried, passive
//!         │                                 ejection), replay the ClientHello, copy both ways until both
//!         │                                 sides are done (half-close kept); never terminated
//!         ├─ SNI served by the set's HTTP routes, or no SNI ──▶ terminated as on any TLS listener (the bytes
//!         │                                                      read are replayed to rustls first)
//!         └─ anything else ──▶ closed
//! ```
//!
//! A listener set without passthrough routes never reads ahead: its TLS connections go straight to the
//! handshake, as before. The routes come from the pure model (`model::l4`), are built into an [`L4Tables`]
//! at each publish ([`table`], reusing each backend's balancer and health state while its endpoints stay the
//! same) and ride in the one published snapshot; a connection keeps the route it started with, so a republish
//! never cuts an established connection. Counters per route are in [`stats`].

pub mod client_hello;
pub mod conn;
pub mod health;
pub mod standin;
pub mod stats;
pub mod table;

pub use table::{L4Route, L4Tables, PassthroughTable};
