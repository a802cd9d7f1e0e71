//! Portico: a Kubernetes ingress gateway.
//!
//! ```text
//!  source ──ClusterState──▶ model::translate ──Translation──▶ routing::Snapshot::build ──Arc<Snapshot>──▶ ArcSwap
//!  (manifest dir | kube)     pure, no I/O        (+diagnostics)   pure                                    │ one load
//!                                                                                                         ▼ per request
//!                                                                  proxy (listeners → normalise → lookup → upstream)
//! ```
//!
//! - [`source`]: file mode's manifest directory. [`cluster`]: cluster mode (watches, status, leader election,
//!   Events). Either way, whole snapshots only.
//! - [`model`]: the pure translation of objects into a per-listener-set routing model plus diagnostics.
//! - [`routing`]: the immutable table (exact hosts, wildcard suffixes, host-less rules, matchit per host).
//! - [`proxy`]: listeners, request checks and normalisation, forwarding, the one error-to-status table.
//! - [`upstream`]: backends (endpoints, balancing) and the pooled upstream client.
//! - [`normalize`]: path and host normalisation shared by translation and the proxy.
//! - [`acme`]: ACME certificates and HTTP-01 challenges. [`certs`]: certificates for TLS. [`admin`]: health, metrics, the JSON API and the dashboard. [`metrics`]: Prometheus counters. [`accesslog`]: JSON access log. [`app`]: wiring. [`config`]: the YAML config.
//! - [`echo`]: an example backend used by the quickstart and the tests.
//!
//! The table for a request is chosen by the listener that accepted its connection, never by Host or SNI.

pub mod accesslog;
pub mod acme;
pub mod admin;
pub mod app;
pub mod certs;
pub mod cidr;
pub mod config;
pub mod echo;
pub mod metrics;
pub mod model;
pub mod normalize;
pub mod pem;
pub mod proxy;
pub mod publish;
pub mod routing;
pub mod source;
pub mod status;
#[cfg(test)]
mod test_rng;
pub mod units;
pub mod upstream;
