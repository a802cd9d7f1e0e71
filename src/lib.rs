//! Portico: a Kubernetes ingress gateway.
//!
//! ```text
//!  source ──ClusterState──▶ publish::Compiler ──Compiled──▶ publish::Publisher ──Arc<Snapshot>──▶ ArcSwap
//!  source::file (poll)       model::translate   (+diagnostics)  snapshot::Builder                   │ one load
//!  source::kube (watch)      + certs::build_tls                 (model::route → routing::build      ▼ per request
//!       │ Round (cluster mode)                                  + live state per route)     proxy: admit → route
//!       ▼                                                       unchanged: not published    → filters → send
//!  status (leader: Ingress status, Events)       acme (fed every compile)     admin (reads publish::Shared)
//! ```
//!
//! - [`source`]: where objects come from: [`source::file`] (manifest directory: scan, per-file store, parse,
//!   poll loop) and [`source::kube`] (watchers, stores, the publish loop). Either way, whole snapshots only.
//! - [`model`]: the pure translation of objects into a per-listener-set routing model plus diagnostics, and the
//!   source-neutral route model ([`model::route`]: matches, filters, send policy, weighted backends, origin).
//! - [`publish`]: the pipeline's one writer: compile (translation, certificates), build the snapshot, swap it in.
//! - [`routing`]: the immutable table (exact hosts, wildcard suffixes, host-less rules, matchit per host), generic
//!   over the state the data plane attaches to each route.
//! - [`snapshot`]: the one published snapshot: tables with each route's live state (backends, counters, kept
//!   slot, reused by key across publishes), certificates, upstream policies.
//! - [`proxy`]: listeners; each request through admit, route, filters ([`proxy::filters`]), send and respond; the
//!   one error-to-status table.
//! - [`l4`]: layer 4: TLS passthrough by SNI on the TLS listeners and the splice behind `tcp[]` listeners
//!   (`proxy::tcp`): ClientHello reader, splice, tables, per-route counters, active checks. See docs/l4.md.
//! - [`upstream`]: backends (endpoints, balancing, health) and the pooled upstream client.
//! - [`status`]: what the leader writes back (Ingress status, Events) and leader election.
//! - [`acme`]: ACME certificates and HTTP-01 challenges (file store, or Secrets in [`acme::kube`]).
//! - [`certs`]: certificates for TLS. [`admin`]: health, metrics, the JSON API and the dashboard. [`metrics`]:
//!   Prometheus counters. [`accesslog`]: JSON access log. [`config`]: the YAML config.
//! - Leaves shared by the layers above: [`units`] (durations), [`pem`] (CA bundles), [`cidr`], [`kube_retry`]
//!   (how API watches retry), [`normalize`] (path and host normalisation for translation and the proxy),
//!   [`http1`] (HTTP/1.1 framing for the own server and client: one `Framing`, one token parser, the head
//!   parsers, the chunked decoder), [`htpasswd`] (basic auth's password files and hashes), [`auth_cache`] (the
//!   bounded per-route cache of auth results, kept in a route's kept slot).
//! - [`migrate`]: `portico migrate`'s report. [`app`]: wiring only (nothing imports it). [`echo`]: an example
//!   backend for the quickstart and the tests.
//!
//! The table for a request is chosen by the listener that accepted its connection, never by Host or SNI. Import
//! direction (pure `model`/`routing`, no cycles between these modules) is checked by `tests/architecture.rs`;
//! `docs/architecture.md` has the file for each stage and where to add things.

pub mod accesslog;
pub mod acme;
pub mod admin;
pub mod app;
pub mod auth_cache;
pub mod certs;
pub mod cidr;
pub mod config;
pub mod echo;
pub mod htpasswd;
pub mod http1;
pub mod kube_retry;
pub mod l4;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod normalize;
pub mod pem;
pub mod proxy;
pub mod publish;
pub mod ratelimit;
pub mod routing;
pub mod snapshot;
pub mod source;
pub mod status;
#[cfg(test)]
mod test_rng;
pub mod units;
pub mod upstream;
