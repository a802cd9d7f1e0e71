//! HTTP-01 challenge tokens: written by the ACME client (or, in cluster mode, from shared storage every replica
//! watches), answered by the plain-HTTP listeners of ACME-enabled listener sets before routing, redirects and
//! allowlists. Only live tokens are answered, by exact match.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The path prefix CAs fetch tokens under.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// Live tokens and their key authorizations. Cheap to clone (shared).
#[derive(Clone, Default, Debug)]
pub struct ChallengeStore {
    tokens: Arc<RwLock<HashMap<String, String>>>,
}

impl ChallengeStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, token: impl Into<String>, key_authorization: impl Into<String>) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.into(), key_authorization.into());
    }

    pub fn remove(&self, token: &str) {
        self.tokens.write().unwrap_or_else(|e| e.into_inner()).remove(token);
    }

    /// Replaces every token (for a store fed from shared storage).
    pub fn replace_all(&self, tokens: HashMap<String, String>) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
    }

    pub fn len(&self) -> usize {
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key authorization for a request path, if it is exactly `PREFIX` + a live token. Tokens are base64url
    /// (RFC 8555 §8.3), so anything else — slashes, dots, escapes — is no token.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(PREFIX)?;
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_live_tokens_exactly() {
        let s = ChallengeStore::new();
        s.insert("abc-DEF_123", "abc-DEF_123.thumb");
        assert_eq!(
            s.answer("/.well-known/acme-challenge/abc-DEF_123").as_deref(),
            Some("abc-DEF_123.thumb")
        );
        for p in [
            "/.well-known/acme-challenge/abc",
            "/.well-known/acme-challenge/abc-DEF_123/",
            "/.well-known/acme-challenge/abc-DEF_123/x",
            "/.well-known/acme-challenge/../acme-challenge/abc-DEF_123",
            "/.well-known/acme-challenge/",
            "/x/.well-known/acme-challenge/abc-DEF_123",
        ] {
            assert_eq!(s.answer(p), None, "{p}");
        }
        s.remove("abc-DEF_123");
        assert!(s.is_empty());
    }
}
