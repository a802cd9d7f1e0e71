//! Gateway API (issue #23): the objects ([`objects`]) and, next, their translation onto listener sets and routes.

pub mod objects;

pub use objects::*;
