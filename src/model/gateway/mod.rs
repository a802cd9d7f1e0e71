//! Gateway API (issue #23): the objects ([`objects`]), and which of them are ours, their status and what they
//! serve ([`attach`](attach::attach)).
//!
//! ```text
//!  ClusterState.gateway ──attach (pure)──▶ GatewayAttachment ──▶ status::gateway (leader writes status)
//!                                              └──────────────────▶ the data plane (sockets, listeners, rules)
//! ```

pub mod attach;
pub mod backendtls;
pub mod conditions;
pub mod cors;
pub mod hostname;
pub mod l4objects;
pub mod l4routes;
pub mod objects;
pub mod precedence;
pub mod refs;
mod routes;
pub mod serve;

pub use attach::{attach, GatewayAttachment, CONTROLLER_NAME};
pub use backendtls::{BackendTls, BackendTlsPolicy};
pub use conditions::Condition;
pub use l4objects::{L4RouteRule, TcpRoute, TcpRouteSpec, TlsRoute, TlsRouteSpec};
pub use objects::*;
