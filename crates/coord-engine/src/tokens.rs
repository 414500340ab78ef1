//! Session and admin tokens: 128 random bits as hex; only SHA-256 hashes
//! are kept (in the store, as attachments `token/<session_id>`).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// A new random token (32 lower-case hex characters).
pub fn generate() -> String {
    let mut bytes = [0u8; 16];
    // getrandom only fails when the OS has no entropy source at all; fall
    // back to a ULID's randomness rather than refusing to serve.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = ulid::Ulid::new().0.to_be_bytes();
    }
    hex(&bytes)
}

/// The hex SHA-256 of a token.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Whether a client-chosen token is acceptable: 32–128 of `A-Za-z0-9_-`.
pub fn acceptable(token: &str) -> bool {
    (32..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Compares two strings in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `bytes` as lowercase hexadecimal, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Session token hashes, loaded from the store on a miss.
#[derive(Default)]
pub struct TokenCache {
    map: Mutex<HashMap<String, String>>,
}

impl TokenCache {
    /// The cached hash for a session.
    pub fn get(&self, session_id: &str) -> Option<String> {
        self.map.lock().ok()?.get(session_id).cloned()
    }
    /// Caches a hash.
    pub fn put(&self, session_id: &str, hash: String) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(session_id.to_string(), hash);
        }
    }
    /// Forgets a session's hash (it ended).
    pub fn remove(&self, session_id: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(session_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_hash_stably() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(acceptable(&a));
        assert_eq!(hash(&a), hash(&a));
        assert!(same(&hash(&a), &hash(&a)));
        assert!(!same(&hash(&a), &hash(&b)));
        assert!(!acceptable("short"));
        assert!(!acceptable(&format!("{a}/x")));
    }
}
