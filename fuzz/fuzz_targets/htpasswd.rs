//! Basic auth's password files (htpasswd lines from a Secret) and `Authorization: Basic` values: never panic; a
//! parsed file has distinct, non-empty user names without `:`; checking a password against any accepted hash
//! other than bcrypt (slow by design: its cost comes from the input) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico::htpasswd::{basic_credentials, Users};

fuzz_target!(|data: &[u8]| {
    let _ = basic_credentials(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(users) = Users::parse_htpasswd(text) else { return };
    for (i, (user, hash)) in users.0.iter().enumerate() {
        assert!(!user.is_empty() && !user.contains(':'));
        assert!(users.0[..i].iter().all(|(u, _)| u != user), "user {user:?} twice");
        assert_eq!(users.get(user), Some(hash));
        if !hash.is_slow() {
            let _ = hash.verify(user.as_bytes());
        }
    }
});
