//! File mode: a directory of Kubernetes YAML read as a [`ClusterState`](crate::model::ClusterState), polled for
//! changes.
//!
//! ```text
//!  poll: every interval (adaptive), scan::fingerprint ──changed?──▶ settle ──▶ ManifestDir::load (blocking pool)
//!        scan::yaml_files, a stat each                                        │ store: only changed files are
//!                                                                             │ read; parse: only changed
//!                                                                             ▼ documents are parsed
//!                                          Compiler::compile ──▶ Publisher::publish (crate::publish)
//! ```
//!
//! - `scan.rs`: which files the directory holds, and their fingerprint.
//! - `store.rs`: the per-file store ([`ManifestDir`]): what each file contributed, loads that re-read only changes.
//! - `parse.rs`: YAML documents into objects and per-document diagnostics ([`state_from_yaml`]).
//! - `poll.rs`: the first load and the polling loop that publishes every change.

mod parse;
mod poll;
mod scan;
mod store;

pub use parse::state_from_yaml;
pub use poll::start;
pub use scan::ManifestError;
pub use store::ManifestDir;
