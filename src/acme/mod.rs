//! ACME (RFC 8555) certificates by HTTP-01, for listener sets with an `acme` configuration.
//!
//! ```text
//!  publish ──AcmeHandle::feed(translation, state)──▶ plan::candidates ──watch──▶ manager task
//!                                       GET renewalInfo (ARI, when offered) ◀──── │ plan::need(now, window):
//!                                                                                 │ missing, expired, not
//!                                                                                 │ covering, renewal
//!                                                                                 ▼
//!                                 client::account / client::issue (instant-acme, tokens in ChallengeStore)
//!                                                                                 │ checked, then
//!                                                                                 ▼
//!           CertStore::store ── file mode: STATE/secrets/NS/NAME.yaml ──▶ manifest source (second root)
//!                                                                   ──▶ next publish ──▶ certs ──▶ proxy
//! ```
//!
//! - [`challenge`]: the HTTP-01 tokens the plain-HTTP listeners of ACME-enabled sets answer.
//! - [`plan`]: pure: which `spec.tls` entries need an order and why (the CA's renewal window, else 1/3 lifetime).
//! - [`ari`]: ACME Renewal Information (RFC 9773): certificate identifiers and what the CA said per Secret.
//! - [`client`]: one account and one order with the CA.
//! - [`manager`]: the task: ordering, backoff, renewal, status.
//! - [`store`]: the [`CertStore`] trait and the file-mode [`FileStore`].
//! - [`kube`]: cluster mode's [`CertStore`] (Secrets and a challenge ConfigMap through the API) and its wiring.
//!
//! A failure never touches the stored certificate: a new one is stored only after it loaded and was checked
//! against every host. See `docs/acme.md`.
pub mod ari;
pub mod challenge;
pub mod client;
pub mod kube;
pub mod manager;
pub mod plan;
pub mod store;

pub use manager::{manager, AcmeHandle, Attempt, Clock, Settings, Status};
pub use store::{CertStore, FileStore, StoreError, StoredCert};
