//! ACME (RFC 8555) certificates. [`challenge`] holds the HTTP-01 tokens the plain-HTTP listeners answer.
pub mod challenge;
