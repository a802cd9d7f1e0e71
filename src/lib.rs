//! Portico: a Kubernetes ingress gateway.
pub mod certs;
pub mod config;
