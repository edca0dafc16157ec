//! Secrets at rest. The node's records that hold secrets (shops' webhook signing secrets, a
//! shop's Shopify app secret) are sealed with ChaCha20-Poly1305 under a key derived from the
//! node's secret, so a copy of `shops.db` (a backup, a file readable by others) gives none of them
//! away. Each seal is bound to its record's kind and id, so sealed bodies cannot be swapped
//! between records. Records an earlier version stored in plain text are sealed at start
//! ([`SealedRecords::seal_plain`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::Mac;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::actor::{Env, SystemEnv};
use crate::sqlite::Db;
use crate::storage::StorageError;

/// How a sealed body starts; anything else is a plain record of an earlier version.
const SEALED: &str = "sealed:v1:";

/// A record that does not open under the node's key: the node's secret changed, or the
/// database was tampered with.
#[derive(Debug, thiserror::Error)]
#[error("the sealed record {kind}/{id} does not open with this node's secret")]
pub struct Unsealable {
    kind: String,
    id: String,
}

/// The node's records that hold secrets, sealed.
#[derive(Clone)]
pub struct SealedRecords {
    db: Db,
    key: std::sync::Arc<LessSafeKey>,
}

impl SealedRecords {
    pub fn new(db: Db, node_secret: &[u8]) -> Self {
        // Domain-separated from every other key derived from the node's secret.
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(node_secret).expect("HMAC takes keys of any length");
        mac.update(b"liveshop secrets at rest v1\0");
        let key = UnboundKey::new(&CHACHA20_POLY1305, &mac.finalize().into_bytes())
            .expect("a 32-byte key is a ChaCha20-Poly1305 key");
        SealedRecords { db, key: std::sync::Arc::new(LessSafeKey::new(key)) }
    }

    /// The plain text of a record.
    pub fn get(&self, kind: &str, id: &str) -> Result<Option<String>, StorageError> {
        self.db.record(kind, id)?.map(|body| self.open(kind, id, &body)).transpose()
    }

    /// Seals `plain` and stores it as the record `kind/id`.
    pub fn put(&self, kind: &str, id: &str, plain: &str) -> Result<(), StorageError> {
        self.db.put_record(kind, id, &self.seal(kind, id, plain))
    }

    /// Seals every record of `kind` that an earlier version stored in plain text; how many.
    pub fn seal_plain(&self, kind: &str) -> Result<usize, StorageError> {
        let plain: Vec<_> =
            self.db.records(kind)?.into_iter().filter(|(_, b)| !b.starts_with(SEALED)).collect();
        for (id, body) in &plain {
            self.put(kind, id, body)?;
        }
        Ok(plain.len())
    }

    fn seal(&self, kind: &str, id: &str, plain: &str) -> String {
        // Random nonces from the operating system, never from a test clock's generator: a
        // repeated nonce under one key would give the secrets away.
        let mut nonce = [0u8; NONCE_LEN];
        SystemEnv.fill_random(&mut nonce);
        let mut sealed = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(kind, id), &mut sealed)
            .expect("ChaCha20-Poly1305 seals any record the database can hold");
        format!("{SEALED}{}{}", STANDARD.encode(nonce), STANDARD.encode(sealed))
    }

    fn open(&self, kind: &str, id: &str, body: &str) -> Result<String, StorageError> {
        let unsealable = || StorageError::Backend(Box::new(Unsealable { kind: kind.into(), id: id.into() }));
        let encoded = body.strip_prefix(SEALED).ok_or_else(unsealable)?;
        // 12 nonce bytes are 16 base64 characters, without padding.
        let (nonce, sealed) = (encoded.get(..16).ok_or_else(unsealable)?, &encoded[16..]);
        let nonce = STANDARD.decode(nonce).ok().and_then(|n| <[u8; NONCE_LEN]>::try_from(n).ok());
        let (Some(nonce), Ok(mut sealed)) = (nonce, STANDARD.decode(sealed)) else {
            return Err(unsealable());
        };
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), aad(kind, id), &mut sealed)
            .map_err(|_| unsealable())?;
        String::from_utf8(plain.to_vec()).map_err(|_| unsealable())
    }
}

/// What a seal is bound to: the record's kind and id.
fn aad(kind: &str, id: &str) -> Aad<Vec<u8>> {
    Aad::from([kind.as_bytes(), b"\0", id.as_bytes()].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_sealed_bound_to_their_name_and_plain_ones_are_sealed_at_start() {
        let db = Db::in_memory().unwrap();
        let sealed = SealedRecords::new(db.clone(), b"node secret");
        sealed.put("webhook-secrets", "acme/whsec_main", "whsec_plain").unwrap();
        let raw = db.record("webhook-secrets", "acme/whsec_main").unwrap().unwrap();
        assert!(raw.starts_with(SEALED) && !raw.contains("whsec_plain"), "{raw}");
        assert_eq!(sealed.get("webhook-secrets", "acme/whsec_main").unwrap().as_deref(), Some("whsec_plain"));
        // The same body under another name, or under another node's key, does not open.
        db.put_record("webhook-secrets", "evil/whsec_main", &raw).unwrap();
        assert!(sealed.get("webhook-secrets", "evil/whsec_main").is_err());
        assert!(
            SealedRecords::new(db.clone(), b"another").get("webhook-secrets", "acme/whsec_main").is_err()
        );
        // An earlier version's plain record.
        db.put_record("shopify", "acme", r#"{"secret":"shpss_x"}"#).unwrap();
        assert_eq!(sealed.seal_plain("shopify").unwrap(), 1);
        assert_eq!(sealed.seal_plain("shopify").unwrap(), 0);
        assert!(!db.record("shopify", "acme").unwrap().unwrap().contains("shpss_x"));
        assert_eq!(sealed.get("shopify", "acme").unwrap().as_deref(), Some(r#"{"secret":"shpss_x"}"#));
    }
}
