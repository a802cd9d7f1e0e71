//! One ACME conversation: account (created once, credentials stored), then an HTTP-01 order for a list of hosts,
//! answered from the shared [`ChallengeStore`], finalized with a fresh ECDSA P-256 key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, ExternalAccountKey, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
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

    /// The CA does not know the account (`accountDoesNotExist`: the CA was reset, or the stored credentials
    /// belong to another CA at the same URL): a new account must be registered.
    pub fn is_account_gone(&self) -> bool {
        matches!(self, AcmeError::Protocol(instant_acme::Error::Api(p))
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
    }

    /// When the CA asked to be polled again (`Retry-After` seen while polling), if it did.
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            AcmeError::Protocol(instant_acme::Error::Timeout(at)) => *at,
            _ => None,
        }
    }
}

/// The latest `Retry-After` the CA sent with an error response (a rate limit, a 503). instant-acme 0.8.5 reads
/// `Retry-After` itself only while polling an order or fetching renewal information; its errors (a
/// `Problem`) do not carry the header. It does let the caller supply the HTTP client, so Portico's client
/// records the header here and the manager honours it when it schedules the next attempt.
#[derive(Clone, Default, Debug)]
pub struct RetryAfter(Arc<Mutex<Option<SystemTime>>>);

impl RetryAfter {
    /// The recorded time, clearing it.
    pub fn take(&self) -> Option<SystemTime> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn record(&self, at: SystemTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<SystemTime> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(now + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

/// Passes requests to the real client and records `Retry-After` from error responses.
struct Observing {
    inner: Box<dyn instant_acme::HttpClient>,
    retry_after: RetryAfter,
}

impl instant_acme::HttpClient for Observing {
    fn request(
        &self,
        req: http::Request<instant_acme::BodyWrapper<bytes::Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<instant_acme::BytesResponse, instant_acme::Error>> + Send>,
    > {
        let (fut, slot) = (self.inner.request(req), self.retry_after.clone());
        Box::pin(async move {
            let rsp = fut.await?;
            let status = rsp.parts.status;
            if status.is_client_error() || status.is_server_error() {
                let header = rsp.parts.headers.get(http::header::RETRY_AFTER);
                if let Some(at) = header
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()))
                {
                    tracing::debug!(%status, retry_after = ?at, "the CA asked to retry later");
                    slot.record(at);
                }
            }
            Ok(rsp)
        })
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

/// The account for a listener set's ACME configuration: restored from the store, else (or when `fresh`: the CA
/// forgot the stored one) created and stored, replacing the stored credentials. Every request of the account
/// (and of its orders) records the CA's `Retry-After` in `retry_after`.
pub async fn account(
    cfg: &AcmeConfig,
    store: &dyn CertStore,
    retry_after: &RetryAfter,
    fresh: bool,
) -> Result<Account, AcmeError> {
    let builder = || -> Result<_, AcmeError> {
        Ok(Account::builder_with_http(Box::new(Observing {
            inner: http_client(cfg.ca_root.as_deref())?,
            retry_after: retry_after.clone(),
        })))
    };
    if let Some(json) = store.load_account(&cfg.directory).await?.filter(|_| !fresh) {
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
///
/// `replaces`: the ARI identifier of the certificate this order renews (RFC 9773 §5), only when the CA's
/// directory offers `renewalInfo` (instant-acme refuses it otherwise). When the CA answers `alreadyReplaced`
/// (another order already replaced that certificate), or does not reflect the field in the new order (it
/// ignored it), the order is placed again without it.
pub async fn issue(
    account: &Account,
    hosts: &[String],
    replaces: Option<&CertificateIdentifier<'static>>,
    challenges: &ChallengeStore,
    store: &Arc<dyn CertStore>,
    polling: Polling,
) -> Result<StoredCert, AcmeError> {
    let identifiers: Vec<Identifier> = hosts.iter().map(|h| Identifier::Dns(h.clone())).collect();
    let mut order = match replaces {
        None => account.new_order(&NewOrder::new(&identifiers)).await?,
        Some(id) => match account
            .new_order(&NewOrder::new(&identifiers).replaces(id.clone()))
            .await
        {
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:alreadyReplaced") =>
            {
                tracing::info!(replaces = %id, detail = ?p.detail, "certificate already replaced; ordering without `replaces`");
                account.new_order(&NewOrder::new(&identifiers)).await?
            }
            Err(instant_acme::Error::Unsupported(what)) => {
                tracing::debug!(
                    what,
                    "the CA's directory has no renewalInfo; ordering without `replaces`"
                );
                account.new_order(&NewOrder::new(&identifiers)).await?
            }
            // instant-acme's check that the CA reflected `replaces` in the order (RFC 9773 §5), or a response
            // body that could not be read: a CA that takes the field but ignores it must not block renewals.
            Err(instant_acme::Error::Other(e)) => {
                tracing::warn!(replaces = %id, error = %e, "the order with `replaces` failed; ordering without it");
                account.new_order(&NewOrder::new(&identifiers)).await?
            }
            r => r?,
        },
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_retry_after(" 120 ", now), Some(now + Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
