//! HTTP-01 challenge tokens: written by the ACME client (local tokens) and, in cluster mode, fed from the
//! shared ConfigMap every replica watches (shared tokens), answered by the plain-HTTP listeners of ACME-enabled
//! listener sets before routing, redirects and allowlists. Only live tokens are answered, by exact match.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The path prefix CAs fetch tokens under.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// Live tokens and their key authorizations. Cheap to clone (shared). Two layers: tokens this replica's own
/// orders inserted, and tokens fed from shared storage ([`ChallengeStore::replace_all`]); a token in either is
/// answered, so a stale shared snapshot never hides a local token.
#[derive(Clone, Default, Debug)]
pub struct ChallengeStore {
    tokens: Arc<RwLock<HashMap<String, String>>>,
    shared: Arc<RwLock<HashMap<String, String>>>,
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

    /// Replaces every token fed from shared storage (local tokens stay).
    pub fn replace_all(&self, tokens: HashMap<String, String>) {
        *self.shared.write().unwrap_or_else(|e| e.into_inner()) = tokens;
    }

    /// Whether shared storage has delivered `token` with this key authorization.
    pub fn shared_has(&self, token: &str, key_authorization: &str) -> bool {
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .is_some_and(|k| k == key_authorization)
    }

    /// Live tokens, local and shared (a token in both counts once).
    pub fn len(&self) -> usize {
        let local = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let shared = self.shared.read().unwrap_or_else(|e| e.into_inner());
        local.len() + shared.keys().filter(|k| !local.contains_key(*k)).count()
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
        let local = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        local.or_else(|| {
            self.shared
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(token)
                .cloned()
        })
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

    #[test]
    fn shared_tokens_are_answered_beside_local_ones() {
        let s = ChallengeStore::new();
        s.insert("local", "local.k");
        s.replace_all([("shared".to_string(), "shared.k".to_string())].into());
        assert_eq!(
            s.answer("/.well-known/acme-challenge/local").as_deref(),
            Some("local.k")
        );
        assert_eq!(
            s.answer("/.well-known/acme-challenge/shared").as_deref(),
            Some("shared.k")
        );
        assert!(s.shared_has("shared", "shared.k") && !s.shared_has("shared", "other"));
        assert_eq!(s.len(), 2);
        // A newer shared snapshot without the local token does not hide it.
        s.replace_all(HashMap::new());
        assert_eq!(
            s.answer("/.well-known/acme-challenge/local").as_deref(),
            Some("local.k")
        );
        assert_eq!(s.answer("/.well-known/acme-challenge/shared"), None);
        s.remove("local");
        assert!(s.is_empty());
    }
}
