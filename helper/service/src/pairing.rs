//! Pairing tokens: 256 random bits, handed out once, stored only as SHA-256, compared in
//! constant time.

use crate::store::{now_ms, random_hex, NewPairing, Pairing, Store, StoreError};
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
/// guess was. Approved pairings live `token_ttl` ms after their last use; a use renews them.
pub fn verify(store: &mut Store, token: &str, token_ttl: i64) -> Result<TokenState, StoreError> {
    let presented = hash_token(token);
    let now = now_ms();
    let mut found = TokenState::Invalid;
    for (id, hash, status, _) in store.live_token_hashes(now, token_ttl)? {
        let equal: bool = hash.ct_eq(&presented).into();
        if equal {
            found = match status.as_str() {
                "approved" => TokenState::Approved(id),
                "pending" => TokenState::Pending(id),
                _ => TokenState::Invalid,
            };
        }
    }
    if let TokenState::Approved(id) = &found {
        store.touch_pairing(id)?;
    }
    Ok(found)
}

/// `pairing.token_days` in milliseconds.
pub fn token_ttl(cfg: &crate::config::Config) -> i64 {
    i64::from(cfg.pairing.token_days) * 86_400_000
}

/// A pairing created by IT (`demail pair provision`): approved at once. The token is
/// returned once and never stored.
pub fn provision(store: &mut Store, client: &str) -> Result<(Pairing, String), StoreError> {
    let token = new_token();
    let p = store.add_pairing(&NewPairing {
        client,
        code: None,
        token_hash: &hash_token(&token),
        status: "approved",
        source: "provisioned",
        origin: None,
        addon_id: None,
        expires_at: None,
    })?;
    Ok((p, token))
}

/// The native host's pairing (IT's auto-approval) for the add-in `addon_id`, which
/// Thunderbird vouched for: approved at once, replacing that add-in's earlier native
/// pairings (a reinstalled add-in leaves no live token behind).
pub fn provision_native(store: &mut Store, client: &str, addon_id: &str) -> Result<(Pairing, String), StoreError> {
    let token = new_token();
    let (p, revoked) = store.replace_native_pairing(
        addon_id,
        &NewPairing {
            client,
            code: None,
            token_hash: &hash_token(&token),
            status: "approved",
            source: "native",
            origin: None,
            addon_id: Some(addon_id),
            expires_at: None,
        },
    )?;
    if revoked > 0 {
        tracing::info!(pairing = %p.id, revoked, "native pairing replaced the add-in's earlier ones");
    }
    Ok((p, token))
}

/// A pairing request from the add-in: pending until the user approves its code.
pub fn request(
    store: &mut Store,
    client: &str,
    origin: Option<&str>,
    addon_id: Option<&str>,
    ttl_secs: u64,
) -> Result<(Pairing, String), StoreError> {
    let token = new_token();
    let code = new_code();
    let expires = now_ms() + (ttl_secs as i64) * 1000;
    let p = store.add_pairing(&NewPairing {
        client,
        code: Some(&code),
        token_hash: &hash_token(&token),
        status: "pending",
        source: "request",
        origin,
        addon_id,
        expires_at: Some(expires),
    })?;
    Ok((p, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Decision;

    const DAY: i64 = 86_400_000;

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("demail-pair-{}", random_hex(6)));
        (Store::open(&dir).unwrap(), dir)
    }

    #[test]
    fn pending_then_approved_then_revoked() {
        let (mut s, dir) = store();
        let (p, token) = request(&mut s, "Thunderbird", None, None, 60).unwrap();
        assert!(matches!(verify(&mut s, &token, DAY).unwrap(), TokenState::Pending(_)));
        assert_eq!(verify(&mut s, "dmh1_wrong", DAY).unwrap(), TokenState::Invalid);
        let code = p.code.clone().unwrap();
        assert!(s.decide_by_code(&code.to_lowercase().replace('-', ""), true).unwrap().is_some());
        assert_eq!(verify(&mut s, &token, DAY).unwrap(), TokenState::Approved(p.id.clone()));
        assert_eq!(s.revoke(&p.id).unwrap(), 1);
        assert_eq!(verify(&mut s, &token, DAY).unwrap(), TokenState::Invalid);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn tokens_expire_unless_used() {
        let (mut s, dir) = store();
        let (p, token) = provision(&mut s, "Fachverfahren").unwrap();
        s.set_last_used(&p.id, now_ms() - 10 * DAY);
        assert_eq!(verify(&mut s, &token, 30 * DAY).unwrap(), TokenState::Approved(p.id.clone()), "used 10 days ago");
        // That use renewed it: 25 more days are fine.
        let used = s.pairing(&p.id).unwrap().unwrap().last_used_at.unwrap();
        assert!(used > now_ms() - 60_000, "renewed on use");
        s.set_last_used(&p.id, now_ms() - 31 * DAY);
        assert_eq!(verify(&mut s, &token, 30 * DAY).unwrap(), TokenState::Invalid, "unused for 31 days");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_new_native_pairing_revokes_the_add_ins_earlier_one() {
        let (mut s, dir) = store();
        let (first, t1) = provision_native(&mut s, "Thunderbird", "demail-addin@open-demail.de").unwrap();
        let (other, t_other) = provision_native(&mut s, "Thunderbird", "other@example.org").unwrap();
        let (_, t_prov) = provision(&mut s, "Logon script").unwrap();
        let (second, t2) = provision_native(&mut s, "Thunderbird", "demail-addin@open-demail.de").unwrap();
        assert_eq!(verify(&mut s, &t1, DAY).unwrap(), TokenState::Invalid, "replaced");
        assert_eq!(s.pairing(&first.id).unwrap().unwrap().status, "revoked");
        assert_eq!(verify(&mut s, &t2, DAY).unwrap(), TokenState::Approved(second.id));
        assert_eq!(verify(&mut s, &t_other, DAY).unwrap(), TokenState::Approved(other.id), "another add-in");
        assert!(matches!(verify(&mut s, &t_prov, DAY).unwrap(), TokenState::Approved(_)), "not a native pairing");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn expired_requests_are_purged_and_never_compared() {
        let (mut s, dir) = store();
        let (old, old_token) = request(&mut s, "alt", Some("moz-extension://a"), None, 0).unwrap();
        let (live, _) = request(&mut s, "neu", Some("moz-extension://a"), None, 600).unwrap();
        let live_ids: Vec<String> = s.live_token_hashes(now_ms(), DAY).unwrap().into_iter().map(|t| t.0).collect();
        assert_eq!(live_ids, vec![live.id.clone()], "an expired request is not among the hashes compared");
        assert_eq!(verify(&mut s, &old_token, DAY).unwrap(), TokenState::Invalid);
        assert_eq!(s.purge_pairings(now_ms()).unwrap(), 1);
        assert!(s.pairing(&old.id).unwrap().is_none());
        assert!(s.pairing(&live.id).unwrap().is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_tray_approves_only_with_the_typed_code() {
        let (mut s, dir) = store();
        let (p, token) = request(&mut s, "Thunderbird", None, None, 60).unwrap();
        let code = p.code.clone().unwrap();
        assert!(matches!(s.decide_by_id(&p.id, "", true).unwrap(), Decision::WrongCode));
        assert!(matches!(s.decide_by_id(&p.id, "AAAA-AAAA", true).unwrap(), Decision::WrongCode));
        assert!(matches!(verify(&mut s, &token, DAY).unwrap(), TokenState::Pending(_)));
        assert!(matches!(s.decide_by_id(&p.id, &code.to_lowercase(), true).unwrap(), Decision::Decided(_)));
        assert!(matches!(verify(&mut s, &token, DAY).unwrap(), TokenState::Approved(_)));
        assert!(matches!(s.decide_by_id(&p.id, &code, true).unwrap(), Decision::Unknown), "decided already");
        let (q, _) = request(&mut s, "Unbekannt", None, None, 60).unwrap();
        assert!(matches!(s.decide_by_id(&q.id, "", false).unwrap(), Decision::Decided(_)), "deny needs no code");
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
