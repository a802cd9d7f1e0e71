//! Where objects come from: a manifest directory ([`file`]) or the Kubernetes API ([`kube`]). Sources produce a
//! whole [`crate::model::ClusterState`] at a time; translation never sees a partial one.

pub mod file;
pub mod kube;
