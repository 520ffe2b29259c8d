//! Signed checkpoints of the chain: whoever can write the database can rewrite entries and
//! recompute every hash and the head, but cannot sign for the gateway's key or get an
//! earlier time stamp. A checkpoint covers the entries after the one before it: their
//! hashes (so `verify` names the first entry that no longer matches), the head's seq and
//! hash, the time, and the key id, signed with the gateway's Ed25519 key ([seal]). A TSA
//! time-stamps the signed checkpoint (RFC 3161, [`crate::tsa`]).

use super::{hex, unhex32, Entry, Problem};
use base64::Engine;
use demail_core::cert::Cert;
use demail_core::seal::SealKey;
use demail_core::Error;
use sha2::{Digest, Sha256};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const FORMAT: &str = "demail-archive-checkpoint/1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The newest entry it covers, and that entry's hash.
    pub seq: i64,
    pub hash: String,
    /// The first entry it covers (the previous checkpoint's seq + 1).
    pub from: i64,
    /// The 32-byte hashes of entries `from..=seq`, in order.
    pub hashes: Vec<u8>,
    /// Unix milliseconds.
    pub time: i64,
    pub kid: String,
    /// Ed25519 over [`Checkpoint::statement`], base64.
    pub signature: String,
    /// RFC 3161 token (DER) over [`Checkpoint::stamped_digest`].
    pub timestamp: Option<Vec<u8>>,
}

impl Checkpoint {
    /// The signed text: every field but the signature and the time stamp.
    pub fn statement(&self) -> String {
        format!(
            "{FORMAT}\nkid: {}\nseq: {}\nhash: {}\nfrom: {}\nleaves: {}\ntime: {}\n",
            self.kid,
            self.seq,
            self.hash,
            self.from,
            hex(&Sha256::digest(&self.hashes)),
            self.time
        )
    }

    /// What the TSA stamps: the statement with its signature.
    pub fn stamped_digest(&self) -> [u8; 32] {
        Sha256::digest(format!("{}signature: {}\n", self.statement(), self.signature).as_bytes()).into()
    }

    /// Sign entries `from..=seq` (`hashes`: their 32-byte hashes, checked by the caller).
    pub fn sign(
        from: i64,
        (seq, hash): (i64, String),
        hashes: Vec<u8>,
        kid: &str,
        secret: &[u8; 32],
        time: i64,
    ) -> Checkpoint {
        use ed25519_dalek::Signer;
        let mut cp = Checkpoint {
            seq,
            hash,
            from,
            hashes,
            time,
            kid: kid.to_string(),
            signature: String::new(),
            timestamp: None,
        };
        let sig = ed25519_dalek::SigningKey::from_bytes(secret).sign(cp.statement().as_bytes());
        cp.signature = B64.encode(sig.to_bytes());
        cp
    }

    /// The hash of entry `seq`, if this checkpoint covers it.
    pub fn leaf(&self, seq: i64) -> Option<String> {
        if seq < self.from || seq > self.seq {
            return None;
        }
        let i = usize::try_from(seq - self.from).ok()? * 32;
        self.hashes.get(i..i + 32).map(hex)
    }

    /// Signed by one of `keys`, and its hashes are what it claims (the newest equals `hash`).
    fn signature_check(&self, keys: &[SealKey]) -> Result<(), (&'static str, String, String)> {
        let Some(k) = keys.iter().find(|k| k.kid == self.kid) else {
            return Err((
                "archive.checkpoint_unknown_key",
                format!(
                    "Prüfpunkt {}: Schlüssel „{}“ ist nicht bekannt (seal.public_keys der Richtlinie).",
                    self.seq, self.kid
                ),
                format!("Checkpoint {}: key \"{}\" is not known (the policy's seal.public_keys).", self.seq, self.kid),
            ));
        };
        let forged = || {
            (
                "archive.checkpoint_forged",
                format!(
                    "Prüfpunkt {}: Die Signatur ist ungültig; er wurde verändert oder nicht vom Gateway erstellt.",
                    self.seq
                ),
                format!(
                    "Checkpoint {}: the signature is invalid; it was altered or not made by the gateway.",
                    self.seq
                ),
            )
        };
        let sig = B64
            .decode(&self.signature)
            .ok()
            .and_then(|s| <[u8; 64]>::try_from(s).ok())
            .map(|s| ed25519_dalek::Signature::from_bytes(&s));
        let key = ed25519_dalek::VerifyingKey::from_bytes(&k.key).ok();
        let (Some(sig), Some(key)) = (sig, key) else { return Err(forged()) };
        if key.verify_strict(self.statement().as_bytes(), &sig).is_err() {
            return Err(forged());
        }
        let n = usize::try_from(self.seq - self.from + 1).unwrap_or(0);
        if self.from < 1 || self.hashes.len() != n * 32 || self.leaf(self.seq).as_deref() != Some(self.hash.as_str()) {
            return Err(forged());
        }
        Ok(())
    }

    /// As the export's `checkpoints.json` carries it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "seq": self.seq, "hash": self.hash, "from": self.from, "hashes": B64.encode(&self.hashes),
            "time": self.time, "kid": self.kid, "signature": self.signature,
            "timestamp": self.timestamp.as_ref().map(|t| B64.encode(t)),
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Checkpoint> {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let i = |k: &str| v.get(k).and_then(|x| x.as_i64());
        Some(Checkpoint {
            seq: i("seq")?,
            hash: s("hash")?,
            from: i("from")?,
            hashes: B64.decode(s("hashes")?).ok()?,
            time: i("time")?,
            kid: s("kid")?,
            signature: s("signature")?,
            timestamp: match v.get("timestamp") {
                Some(serde_json::Value::String(t)) => Some(B64.decode(t).ok()?),
                _ => None,
            },
        })
    }
}

/// What `verify` trusts: the gateway's public keys and the TSA's CA certificates.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub keys: Vec<SealKey>,
    pub tsa: Vec<Cert>,
    /// Entries older than `now_ms - grace_ms` must be covered by a valid checkpoint.
    pub require: bool,
    pub now_ms: i64,
    pub grace_ms: i64,
}

/// The checkpoints' side of `verify`: built before the walk over the entries, fed each entry.
pub(super) struct Checker<'a> {
    trust: &'a Trust,
    valid: Vec<&'a Checkpoint>,
    pub stamped: usize,
    pub problems: Vec<Problem>,
    rewritten: Option<(i64, usize)>,
    uncovered: Option<(i64, i64)>,
    last_seen: i64,
}

fn problem(seq: Option<i64>, (code, de, en): (&'static str, String, String)) -> Problem {
    Problem { seq, code, message: de, message_en: en }
}

fn date(ms: i64) -> String {
    demail_core::cert::rfc3339(u64::try_from(ms / 1000).unwrap_or(0))
}

impl<'a> Checker<'a> {
    pub fn new(checkpoints: &'a [Checkpoint], trust: &'a Trust) -> Checker<'a> {
        let mut c = Checker {
            trust,
            valid: Vec::new(),
            stamped: 0,
            problems: Vec::new(),
            rewritten: None,
            uncovered: None,
            last_seen: 0,
        };
        for cp in checkpoints {
            if let Err(p) = cp.signature_check(&trust.keys) {
                c.problems.push(problem(Some(cp.seq), p));
                continue;
            }
            c.valid.push(cp);
            match (&cp.timestamp, trust.tsa.is_empty()) {
                (Some(t), false) => match crate::tsa::check(t, &cp.stamped_digest(), &trust.tsa) {
                    // A stamp before the checkpoint was made (beyond clock skew) is not its stamp.
                    Ok(s) if (s.time as i64) * 1000 + 300_000 >= cp.time => c.stamped += 1,
                    Ok(s) => c.problems.push(problem(
                        Some(cp.seq),
                        (
                            "archive.timestamp_invalid",
                            format!(
                                "Prüfpunkt {}: Der Zeitstempel ({}) liegt vor dem Prüfpunkt.",
                                cp.seq,
                                demail_core::cert::rfc3339(s.time)
                            ),
                            format!(
                                "Checkpoint {}: the time stamp ({}) is older than the checkpoint.",
                                cp.seq,
                                demail_core::cert::rfc3339(s.time)
                            ),
                        ),
                    )),
                    Err(e) => c.problems.push(problem(
                        Some(cp.seq),
                        (
                            "archive.timestamp_invalid",
                            format!("Prüfpunkt {}: {} ({})", cp.seq, e.reason.message, e.code()),
                            format!("Checkpoint {}: {} ({})", cp.seq, e.reason.message_en, e.code()),
                        ),
                    )),
                },
                (None, false) => c.problems.push(problem(
                    Some(cp.seq),
                    (
                        "archive.timestamp_missing",
                        format!("Prüfpunkt {} vom {} hat keinen Zeitstempel.", cp.seq, date(cp.time)),
                        format!("Checkpoint {} of {} has no time stamp.", cp.seq, date(cp.time)),
                    ),
                )),
                (_, true) => {}
            }
        }
        c.valid.sort_by_key(|cp| cp.seq);
        c
    }

    /// Valid checkpoints that cover `seq`.
    fn covering(&self, seq: i64) -> impl Iterator<Item = &&'a Checkpoint> {
        let start = self.valid.partition_point(|cp| cp.seq < seq);
        self.valid[start..].iter().take_while(move |cp| cp.from <= seq)
    }

    /// One entry of the walk, whose own hash was recomputed by the caller.
    pub fn entry(&mut self, e: &Entry) {
        self.last_seen = e.seq;
        let mut covered = false;
        let mut rewritten = false;
        for cp in self.covering(e.seq) {
            covered = true;
            rewritten |= cp.leaf(e.seq).as_deref() != Some(e.hash.as_str());
        }
        if rewritten {
            self.rewritten = Some(match self.rewritten {
                None => (e.seq, 1),
                Some((first, n)) => (first, n + 1),
            });
        }
        if !covered && self.trust.require && e.time < self.trust.now_ms - self.trust.grace_ms {
            self.uncovered = Some(match self.uncovered {
                None => (e.seq, e.seq),
                Some((a, _)) => (a, e.seq),
            });
        }
    }

    /// The findings after the walk.
    pub fn finish(mut self) -> (Vec<Problem>, usize, i64) {
        if let Some((first, n)) = self.rewritten {
            let cp = self.covering(first).next().map(|cp| (cp.seq, cp.time));
            let (cs, ct) = cp.unwrap_or((first, 0));
            self.problems.push(problem(
                Some(first),
                (
                    "archive.rewritten",
                    format!(
                        "Eintrag {first} weicht vom signierten Prüfpunkt {cs} vom {} ab: das Archiv wurde danach umgeschrieben ({n} Einträge betroffen).",
                        date(ct)
                    ),
                    format!(
                        "Entry {first} differs from signed checkpoint {cs} of {}: the archive was rewritten after it ({n} entries affected).",
                        date(ct)
                    ),
                ),
            ));
        }
        let newest = self.valid.iter().map(|cp| cp.seq).max().unwrap_or(0);
        if newest > self.last_seen {
            self.problems.push(problem(
                None,
                (
                    "archive.checkpoint_entries_missing",
                    format!(
                        "Die Einträge {} bis {newest} sind durch einen signierten Prüfpunkt belegt, fehlen aber.",
                        self.last_seen + 1
                    ),
                    format!(
                        "Entries {} to {newest} are attested by a signed checkpoint but missing.",
                        self.last_seen + 1
                    ),
                ),
            ));
        }
        if let Some((a, b)) = self.uncovered {
            self.problems.push(problem(
                Some(a),
                (
                    "archive.not_checkpointed",
                    format!("Die Einträge {a} bis {b} sind durch keinen gültigen signierten Prüfpunkt gedeckt (gelöscht oder nie erstellt)."),
                    format!("Entries {a} to {b} are covered by no valid signed checkpoint (deleted or never made)."),
                ),
            ));
        }
        (self.problems, self.stamped, newest)
    }
}

/// Entries must chain from `prev` before they are signed (a checkpoint never vouches for
/// an entry that does not verify); their hashes are added to `hashes`.
pub(super) fn chains(prev: (i64, &str), entries: &[Entry], hashes: &mut Vec<u8>) -> Result<(), Error> {
    let (mut seq, mut hash) = (prev.0, prev.1.to_string());
    for e in entries {
        if e.seq != seq + 1 || e.prev_hash != hash || super::entry_hash(e) != e.hash {
            return Err(Error::new(
                "archive.checkpoint_refused",
                format!("Kein Prüfpunkt: Eintrag {} ist nicht unversehrt (archive verify).", e.seq),
                format!("No checkpoint: entry {} is not intact (archive verify).", e.seq),
            ));
        }
        hashes.extend_from_slice(&unhex32(&e.hash).unwrap_or_default());
        (seq, hash) = (e.seq, e.hash.clone());
    }
    Ok(())
}
