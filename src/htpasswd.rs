//! Password files for basic auth: htpasswd lines (`user:hash`) and the hashes Portico accepts, with their checks.
//!
//! Accepted hashes: bcrypt (`$2y$`, `$2a$`, `$2b$`; `htpasswd -B`), Apache's MD5 (`$apr1$`; `htpasswd -m`, the
//! default of older htpasswd) and `{SHA}` (base64 of SHA-1; `htpasswd -s`). Plain text, `crypt(3)` (DES) and the
//! glibc `$1$`/`$5$`/`$6$` forms are refused with the line that holds them: the first two are no protection, and
//! nginx itself only reads the others through the system's crypt. Every comparison of a digest is constant-time
//! (bcrypt's own, `subtle` for the others).
//!
//! Pure: no I/O. Checking a bcrypt hash is deliberately slow (milliseconds); callers cache what they verified.

use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// One user's password hash.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Hash {
    /// The whole `$2y$NN$...` string.
    Bcrypt(String),
    /// `$apr1$SALT$DIGEST`: the salt (at most 8 characters) and the 22-character digest.
    Apr1 { salt: String, digest: String },
    /// `{SHA}base64`: the SHA-1 of the password.
    Sha1([u8; 20]),
}

impl std::fmt::Debug for Hash {
    /// The kind only: hashes stay out of logs and diagnostics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hash::Bcrypt(_) => "Bcrypt",
            Hash::Apr1 { .. } => "Apr1",
            Hash::Sha1(_) => "Sha1",
        })
    }
}

/// The users of a password file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Users(pub Vec<(String, Hash)>);

/// A line that is not a usable `user:hash` (1-based line number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

impl Users {
    /// An htpasswd file: `user:hash` per line; empty lines and `#` comments are skipped, a trailing `\r` is
    /// dropped. A user named twice is an error (which line would win is not obvious).
    pub fn parse_htpasswd(text: &str) -> Result<Self, LineError> {
        let mut users: Vec<(String, Hash)> = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let err = |reason: String| LineError { line: i + 1, reason };
            let (user, hash) = line.split_once(':').ok_or_else(|| err("not \"user:hash\"".into()))?;
            Self::push(&mut users, user, hash).map_err(err)?;
        }
        Ok(Self(users))
    }

    /// Adds `user` with `hash` (an auth-map entry); the reason when either is unusable.
    pub fn push_entry(&mut self, user: &str, hash: &str) -> Result<(), String> {
        Self::push(&mut self.0, user, hash)
    }

    fn push(users: &mut Vec<(String, Hash)>, user: &str, hash: &str) -> Result<(), String> {
        if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
            return Err(format!("user {user:?} is not a user name"));
        }
        if users.iter().any(|(u, _)| u == user) {
            return Err(format!("user {user:?} is listed twice"));
        }
        let hash = Hash::parse(hash.trim()).map_err(|why| format!("user {user:?}: {why}"))?;
        users.push((user.to_string(), hash));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The hash of `user`.
    pub fn get(&self, user: &str) -> Option<&Hash> {
        self.0.iter().find(|(u, _)| u == user).map(|(_, h)| h)
    }
}

impl Hash {
    /// One hash as htpasswd writes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("$apr1$") {
            let (salt, digest) = rest.split_once('$').ok_or("an $apr1$ hash needs $SALT$DIGEST")?;
            if salt.is_empty() || salt.len() > 8 || !salt.bytes().all(is_crypt64) {
                return Err("the $apr1$ salt is not 1 to 8 characters of ./0-9A-Za-z".into());
            }
            if digest.len() != 22 || !digest.bytes().all(is_crypt64) {
                return Err("the $apr1$ digest is not 22 characters of ./0-9A-Za-z".into());
            }
            return Ok(Hash::Apr1 {
                salt: salt.to_string(),
                digest: digest.to_string(),
            });
        }
        if let Some(b64) = s.strip_prefix("{SHA}") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| "the {SHA} hash is not base64")?;
            let digest: [u8; 20] = bytes.try_into().map_err(|_| "the {SHA} hash is not 20 bytes (SHA-1)")?;
            return Ok(Hash::Sha1(digest));
        }
        if ["$2y$", "$2a$", "$2b$"].iter().any(|p| s.starts_with(p)) {
            // `$2y$NN$` and 53 characters of salt and digest.
            let b = s.as_bytes();
            let cost = s.get(4..6).and_then(|c| c.parse::<u32>().ok());
            if b.len() != 60 || b[6] != b'$' || !cost.is_some_and(|c| (4..=31).contains(&c)) {
                return Err("not a bcrypt hash ($2y$NN$ and 53 characters)".into());
            }
            if !b[7..].iter().copied().all(is_crypt64) {
                return Err("the bcrypt hash has characters outside ./0-9A-Za-z".into());
            }
            return Ok(Hash::Bcrypt(s.to_string()));
        }
        Err(match s.as_bytes() {
            [b'$', b'1', b'$', ..] => "$1$ (MD5-crypt) hashes are not supported; use bcrypt (htpasswd -B)".into(),
            [b'$', b'5' | b'6', b'$', ..] => {
                "$5$/$6$ (SHA-crypt) hashes are not supported; use bcrypt (htpasswd -B)".into()
            }
            [b'$', ..] => "unknown hash scheme; use bcrypt (htpasswd -B)".into(),
            _ => "plain-text or crypt(3) passwords are not supported; use bcrypt (htpasswd -B)".into(),
        })
    }

    /// Whether `password` matches (constant-time in the digest). bcrypt is slow by design.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::Apr1 { salt, digest } => {
                let computed = apr1_digest(password, salt.as_bytes());
                computed.as_bytes().ct_eq(digest.as_bytes()).into()
            }
            Hash::Sha1(d) => {
                let computed: [u8; 20] = Sha1::digest(password).into();
                computed.ct_eq(d).into()
            }
        }
    }

    /// Whether checking costs a bcrypt round (worth moving off the request's thread).
    pub fn is_slow(&self) -> bool {
        matches!(self, Hash::Bcrypt(_))
    }
}

fn is_crypt64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's `$apr1$` MD5 digest of `pw` with `salt` (apr_md5_encode), the 22 characters after the salt.
pub fn apr1_digest(pw: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let mut ctx = Md5::new();
    ctx.update(pw);
    ctx.update(MAGIC);
    ctx.update(salt);
    let alt = {
        let mut a = Md5::new();
        a.update(pw);
        a.update(salt);
        a.update(pw);
        a.finalize()
    };
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = pw.len();
    while i != 0 {
        if i & 1 != 0 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for i in 0..1000 {
        let mut c = Md5::new();
        if i & 1 != 0 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if i % 3 != 0 {
            c.update(salt);
        }
        if i % 7 != 0 {
            c.update(pw);
        }
        if i & 1 != 0 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize();
    }
    let f = fin;
    let mut out = String::with_capacity(22);
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let w = |a: usize, b: usize, c: usize| (u32::from(f[a]) << 16) | (u32::from(f[b]) << 8) | u32::from(f[c]);
    put(w(0, 6, 12), 4);
    put(w(1, 7, 13), 4);
    put(w(2, 8, 14), 4);
    put(w(3, 9, 15), 4);
    put(w(4, 10, 5), 4);
    put(u32::from(f[11]), 2);
    out
}

/// The user and password of an `Authorization: Basic` value (`None` when it is not one).
pub fn basic_credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let rest = value.get(..6).filter(|p| p.eq_ignore_ascii_case(b"basic "))?;
    let _ = rest;
    let b64 = value[6..].trim_ascii();
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_openssl() {
        // `openssl passwd -apr1 -salt abcdefgh secret`
        let h = Hash::parse("$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/").unwrap();
        assert!(h.verify(b"secret"));
        assert!(!h.verify(b"secreT"));
        assert!(!h.verify(b""));
    }

    #[test]
    fn sha_and_bcrypt_verify() {
        // `htpasswd -nbs u secret`
        let h = Hash::parse("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=").unwrap();
        assert!(h.verify(b"secret") && !h.verify(b"Secret"));
        let b = bcrypt::hash("secret", 4).unwrap().replacen("$2b$", "$2y$", 1);
        let h = Hash::parse(&b).unwrap();
        assert!(h.is_slow() && h.verify(b"secret") && !h.verify(b"secret2"));
    }

    #[test]
    fn htpasswd_lines_and_refusals() {
        let u = Users::parse_htpasswd(
            "# comment\r\n\nalice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\r\nbob:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\n",
        )
        .unwrap();
        assert_eq!(u.0.len(), 2);
        assert!(u.get("bob").unwrap().verify(b"secret"));
        let e = Users::parse_htpasswd("a:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\ncarol:plaintext\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("plain-text"), "{e}");
        assert!(Users::parse_htpasswd("d:$1$xyz$abc")
            .unwrap_err()
            .reason
            .contains("MD5-crypt"));
        assert!(Users::parse_htpasswd("nocolon").is_err());
        assert!(
            Users::parse_htpasswd("a:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\na:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=")
                .unwrap_err()
                .reason
                .contains("twice")
        );
        assert!(Users::parse_htpasswd(":{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=").is_err());
        assert!(Users::parse_htpasswd("a:$2y$10$short").is_err());
    }

    #[test]
    fn basic_header() {
        assert_eq!(
            basic_credentials(b"Basic YWxpY2U6czpl"),
            Some(("alice".to_string(), b"s:e".to_vec()))
        );
        assert_eq!(
            basic_credentials(b"basic  YWxpY2U6czpl "),
            Some(("alice".into(), b"s:e".to_vec()))
        );
        assert_eq!(basic_credentials(b"Bearer x"), None);
        assert_eq!(basic_credentials(b"Basic !!"), None);
        assert_eq!(basic_credentials(b"Basic YWxpY2U="), None, "no colon");
    }
}
