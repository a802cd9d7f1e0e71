//! Why a certificate could not be loaded or used. One variant per cause, so callers (the translator's
//! diagnostics, the ACME loop) can react without matching strings.

use super::time::format_unix;

/// A certificate or key that cannot be loaded, or cannot be used for a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The Secret's `type` is not `kubernetes.io/tls` (a missing type means `Opaque`, as the API server says).
    #[error("secret has type {found:?}, expected \"kubernetes.io/tls\"")]
    WrongSecretType { found: String },

    /// The Secret has no `tls.crt` or no `tls.key` entry (in `data` or `stringData`), or it is empty.
    #[error("secret has no {field} entry (or it is empty)")]
    MissingSecretField { field: &'static str },

    /// A PEM block is malformed (bad base64, missing END line, ...).
    #[error("malformed PEM in {what}: {reason}")]
    MalformedPem { what: &'static str, reason: String },

    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("no CERTIFICATE block found in the certificate PEM")]
    NoCertificate,

    /// The key PEM holds no unencrypted private key block.
    #[error("no private key found (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NoPrivateKey,

    /// The key PEM holds more than one private key: which one is meant is ambiguous.
    #[error("{count} private keys found, expected exactly one")]
    MultiplePrivateKeys { count: usize },

    /// The private key is of a kind we cannot sign with (encrypted, DSA, P-521, RSA under 2048 bits, ...).
    #[error("unsupported private key: {reason}")]
    UnsupportedKey { reason: String },

    /// The private key is not the one the leaf certificate was issued for.
    #[error("private key does not match the leaf certificate's public key")]
    KeyMismatch,

    /// A certificate in the chain is not valid X.509 DER (index 0 is the leaf).
    #[error("certificate #{index} in the chain cannot be parsed: {reason}")]
    UnparsableCertificate { index: usize, reason: String },

    /// The leaf certificate's `notAfter` is in the past.
    #[error("certificate expired at {} (now {})", format_unix(*not_after), format_unix(*now))]
    Expired { not_after: i64, now: i64 },

    /// The leaf certificate's `notBefore` is in the future.
    #[error("certificate is not valid before {} (now {})", format_unix(*not_before), format_unix(*now))]
    NotYetValid { not_before: i64, now: i64 },

    /// The certificate does not name the host; `names` are the names it does cover.
    #[error("certificate does not cover host {host:?}; it covers [{}]", names.join(", "))]
    DoesNotCover { host: String, names: Vec<String> },
}
