//! One ACME conversation: account (created once, credentials stored), then an HTTP-01 order for a list of hosts,
//! answered from the shared [`ChallengeStore`], finalized with a fresh ECDSA P-256 key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::challenge::ChallengeStore;
use super::store::{CertStore, StoreError, StoredCert};
use crate::config::AcmeConfig;

/// What went wrong with one attempt. `Invalid` means the CA refused the order (the detail is its problem
/// document); the others are transport, protocol or storage trouble.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("order invalid: {0}")]
    Invalid(String),
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("issued certificate unusable: {0}")]
    Unusable(String),
    #[error("account: {0}")]
    Account(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl AcmeError {
    /// A stale nonce the library gave up on: worth an immediate retry.
    pub fn is_bad_nonce(&self) -> bool {
        matches!(self, AcmeError::Protocol(instant_acme::Error::Api(p))
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce"))
    }

    /// When the CA asked to be polled again (`Retry-After` seen while polling), if it did.
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            AcmeError::Protocol(instant_acme::Error::Timeout(at)) => *at,
            _ => None,
        }
    }
}

/// The HTTPS client for the CA: the system's roots plus `caRoot` (every certificate in that PEM file), ring.
fn http_client(ca_root: Option<&std::path::Path>) -> Result<Box<dyn instant_acme::HttpClient>, AcmeError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_root {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| AcmeError::Account(format!("caRoot {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(AcmeError::Account(format!("caRoot {}: no certificate", path.display())));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| AcmeError::Account(format!("caRoot {}: {e}", path.display())))?;
        }
    }
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| AcmeError::Account(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    Ok(Box::new(client))
}

/// The account for a listener set's ACME configuration: restored from the store, else created and stored.
pub async fn account(cfg: &AcmeConfig, store: &dyn CertStore) -> Result<Account, AcmeError> {
    let builder = || -> Result<_, AcmeError> { Ok(Account::builder_with_http(http_client(cfg.ca_root.as_deref())?)) };
    if let Some(json) = store.load_account(&cfg.directory).await? {
        let creds = serde_json::from_str(&json).map_err(|e| AcmeError::Account(format!("stored credentials: {e}")))?;
        return Ok(builder()?.from_credentials(creds).await?);
    }
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(|s| s.as_str()).collect();
    let eab = match &cfg.external_account_binding {
        None => None,
        Some(e) => {
            use base64::Engine;
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(e.hmac_key.trim_end_matches('='))
                .map_err(|err| AcmeError::Account(format!("externalAccountBinding hmacKey: {err}")))?;
            Some(ExternalAccountKey::new(e.key_id.clone(), &key))
        }
    };
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            eab.as_ref(),
        )
        .await?;
    let json = serde_json::to_string(&creds).map_err(|e| AcmeError::Account(e.to_string()))?;
    store.store_account(&cfg.directory, &json).await?;
    tracing::info!(directory = %cfg.directory, id = %account.id(), "ACME account created");
    Ok(account)
}

/// Removes the tokens it published when the order ends, however it ends: locally at once, and from shared
/// storage by a spawned task when the order was abandoned before [`Tokens::withdraw`] ran (shutdown, lost
/// leadership).
struct Tokens<'a> {
    local: &'a ChallengeStore,
    store: &'a Arc<dyn CertStore>,
    tokens: Vec<String>,
    shared: bool,
}

impl Tokens<'_> {
    async fn withdraw(&mut self) {
        if self.shared {
            if let Err(e) = self.store.withdraw_challenges(&self.tokens).await {
                tracing::warn!(error = %e, "withdrawing shared HTTP-01 tokens failed");
            }
            self.shared = false;
        }
        for t in &self.tokens {
            self.local.remove(t);
        }
    }
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.local.remove(t);
        }
        if self.shared {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (store, tokens) = (self.store.clone(), std::mem::take(&mut self.tokens));
                rt.spawn(async move {
                    if let Err(e) = store.withdraw_challenges(&tokens).await {
                        tracing::warn!(error = %e, "withdrawing abandoned HTTP-01 tokens failed");
                    }
                });
            }
        }
    }
}

/// Polling of one order: first delay, and how long to wait for the CA at most per stage.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub delay: Duration,
    pub timeout: Duration,
}

/// Orders a certificate for `hosts` and returns it with its new key. Nothing is stored here but the HTTP-01
/// tokens, published through `store` (every replica answers them) before the CA is told to validate, and
/// withdrawn when validation ends, whatever the outcome.
pub async fn issue(
    account: &Account,
    hosts: &[String],
    challenges: &ChallengeStore,
    store: &Arc<dyn CertStore>,
    polling: Polling,
) -> Result<StoredCert, AcmeError> {
    let identifiers: Vec<Identifier> = hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    tracing::debug!(url = %order.url(), "order created");
    let mut tokens = Tokens {
        local: challenges,
        store,
        tokens: Vec::new(),
        shared: false,
    };
    let validated = validate(&mut order, challenges, &mut tokens, polling).await;
    tokens.withdraw().await;
    drop(tokens);
    validated?;
    let retries = retry_policy(polling);

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AcmeError::Unusable(format!("key generation: {e}")))?;
    let mut params =
        rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| AcmeError::Unusable(format!("CSR: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::Unusable(format!("CSR: {e}")))?;
    order.finalize_csr(csr.der()).await?;
    let cert_pem = order.poll_certificate(&retries).await?;
    Ok(StoredCert {
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

fn retry_policy(polling: Polling) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(polling.delay)
        .backoff(1.5)
        .timeout(polling.timeout)
}

/// Publishes the tokens of every pending authorization (locally and through the store), tells the CA they are
/// ready, and waits until the order is ready (or reports why it is not).
async fn validate(
    order: &mut instant_acme::Order,
    challenges: &ChallengeStore,
    tokens: &mut Tokens<'_>,
    polling: Polling,
) -> Result<(), AcmeError> {
    let mut pending = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Invalid(format!(
                        "authorization for {} is {other:?}",
                        authz.identifier()
                    )))
                }
            }
            let ch = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::Invalid("the CA offers no http-01 challenge".into()))?;
            let ka = ch.key_authorization();
            challenges.insert(ch.token.clone(), ka.as_str());
            tokens.tokens.push(ch.token.clone());
            pending.push((ch.token.clone(), ka.as_str().to_string()));
        }
    }
    if pending.is_empty() {
        return check_ready(order, polling).await;
    }
    tokens.shared = true;
    tokens.store.publish_challenges(&pending).await?;
    // Second pass: the challenges are marked ready only once every token can be answered.
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            if let Some(mut ch) = authz.challenge(ChallengeType::Http01) {
                ch.set_ready().await?;
            }
        }
    }
    check_ready(order, polling).await
}

async fn check_ready(order: &mut instant_acme::Order, polling: Polling) -> Result<(), AcmeError> {
    let status = match order.poll_ready(&retry_policy(polling)).await {
        Ok(s) => s,
        Err(instant_acme::Error::Api(p)) => return Err(AcmeError::Invalid(p.to_string())),
        Err(e) => return Err(e.into()),
    };
    if status != OrderStatus::Ready {
        return Err(AcmeError::Invalid(invalid_detail(order).await));
    }
    Ok(())
}

/// The CA's reason for an invalid order: the order's problem, else the failed challenges' problems.
async fn invalid_detail(order: &mut instant_acme::Order) -> String {
    if let Some(p) = &order.state().error {
        return p.to_string();
    }
    let mut reasons = Vec::new();
    let mut authzs = order.authorizations();
    while let Some(Ok(mut a)) = authzs.next().await {
        if a.refresh().await.is_err() {
            continue;
        }
        for c in &a.challenges {
            if let Some(p) = &c.error {
                reasons.push(format!("{}: {p}", a.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        "the CA marked the order invalid without a reason".into()
    } else {
        reasons.join("; ")
    }
}
