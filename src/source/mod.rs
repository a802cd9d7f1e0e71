//! Where objects come from: a manifest directory (file mode) or, later, the Kubernetes API. Sources produce a
//! whole [`crate::model::ClusterState`] at a time; translation never sees a partial one.

pub mod manifests;
