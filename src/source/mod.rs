//! Where objects come from: a manifest directory ([`file`](mod@self::file)) or the Kubernetes API ([`kube`]).
//! Sources produce a whole [`crate::model::ClusterState`] at a time; translation never sees a partial one. Each
//! compiles with a [`crate::publish::Compiler`] and hands the result to its [`crate::publish::Publisher`].

pub mod file;
pub mod kube;
