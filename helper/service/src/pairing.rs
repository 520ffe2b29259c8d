//! Pairing tokens: 256 random bits, handed out once, stored only as SHA-256, compared in
//! constant time.

use crate::store::{now_ms, random_hex, Pairing, Store, StoreError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix so a leaked token is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "dmh1_";

/// Letters and digits that cannot be confused when read aloud or typed (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", random_hex(32))
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// An 8-character approval code shown as `ABCD-EFGH` (~40 bits; requests expire quickly).
pub fn new_code() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("operating system random source");
    let chars: String = b.iter().map(|x| CODE_ALPHABET[(*x as usize) % CODE_ALPHABET.len()] as char).collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// What a presented token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// Approved pairing: full access.
    Approved(String),
    /// Issued by a pairing request that waits for the user's approval.
    Pending(String),
    /// Unknown, revoked, denied or expired.
    Invalid,
}

/// Check a bearer token. The hash of the presented token is compared with every live
/// hash in constant time, so neither the comparison nor an early exit tells how close a
/// guess was.
pub fn verify(store: &mut Store, token: &str) -> Result<TokenState, StoreError> {
    let presented = hash_token(token);
    let now = now_ms();
    let mut found = TokenState::Invalid;
    for (id, hash, status, expires) in store.live_token_hashes()? {
        let equal: bool = hash.ct_eq(&presented).into();
        if equal {
            found = match status.as_str() {
                "approved" => TokenState::Approved(id),
                "pending" if expires.is_none_or(|e| e > now) => TokenState::Pending(id),
                _ => TokenState::Invalid,
            };
        }
    }
    if let TokenState::Approved(id) = &found {
        store.touch_pairing(id)?;
    }
    Ok(found)
}

/// A pairing created by IT or the native-messaging host: approved at once. The token is
/// returned once and never stored.
pub fn provision(store: &mut Store, client: &str, source: &str) -> Result<(Pairing, String), StoreError> {
    let token = new_token();
    let p = store.add_pairing(client, None, &hash_token(&token), "approved", source, None, None)?;
    Ok((p, token))
}

/// A pairing request from the add-in: pending until the user approves its code.
pub fn request(
    store: &mut Store,
    client: &str,
    origin: Option<&str>,
    ttl_secs: u64,
) -> Result<(Pairing, String), StoreError> {
    let token = new_token();
    let code = new_code();
    let expires = now_ms() + (ttl_secs as i64) * 1000;
    let p = store.add_pairing(client, Some(&code), &hash_token(&token), "pending", "request", origin, Some(expires))?;
    Ok((p, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_then_approved_then_revoked() {
        let dir = std::env::temp_dir().join(format!("demail-pair-{}", random_hex(6)));
        let mut s = Store::open(&dir).unwrap();
        let (p, token) = request(&mut s, "Thunderbird", None, 60).unwrap();
        assert!(matches!(verify(&mut s, &token).unwrap(), TokenState::Pending(_)));
        assert_eq!(verify(&mut s, "dmh1_wrong").unwrap(), TokenState::Invalid);
        let code = p.code.clone().unwrap();
        assert!(s.decide_by_code(&code.to_lowercase().replace('-', ""), true).unwrap().is_some());
        assert_eq!(verify(&mut s, &token).unwrap(), TokenState::Approved(p.id.clone()));
        assert_eq!(s.revoke(&p.id).unwrap(), 1);
        assert_eq!(verify(&mut s, &token).unwrap(), TokenState::Invalid);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn codes_use_the_alphabet() {
        for _ in 0..100 {
            let c = new_code();
            assert_eq!(c.len(), 9);
            assert!(c.chars().all(|ch| ch == '-' || CODE_ALPHABET.contains(&(ch as u8))));
        }
    }
}
