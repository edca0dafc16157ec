//! Stream keys: one per show and key version, checkable without a database. A key is the
//! HMAC-SHA256 of the show id (and, from version 1, the version) with the node's secret
//! (domain-separated from every other use of that secret), in unpadded base64url. Whoever holds
//! the node secret can mint them; nobody else can. The show record keeps its current version;
//! bumping it revokes the old key (a leaked key is revoked without changing every show's).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Keeps the secret's HMAC state, not the secret.
#[derive(Clone)]
pub struct StreamKeys(Hmac<Sha256>);

impl std::fmt::Debug for StreamKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKeys(..)")
    }
}

/// Prefixed to the show id, so a stream key is never a valid MAC for anything else.
const DOMAIN: &[u8] = b"liveshop stream key v1\0";

impl StreamKeys {
    pub fn new(secret: &[u8]) -> StreamKeys {
        StreamKeys(Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    /// The keys of the node whose tokens `secret` signs (the same secret, another domain).
    pub(crate) fn from_mac(mac: Hmac<Sha256>) -> StreamKeys {
        StreamKeys(mac)
    }

    fn mac(&self, show: &str, version: u32) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(DOMAIN);
        mac.update(show.as_bytes());
        // Version 0 is the key of before rotation, unchanged. A show id never holds a NUL, so
        // `id\0version` is never another show's input.
        if version > 0 {
            mac.update(b"\0");
            mac.update(&version.to_be_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// The key OBS puts in its Bearer token field for `show` at key `version`.
    pub fn key(&self, show: &str, version: u32) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(show, version))
    }

    /// Constant-time check of a presented key against the show's current `version`.
    pub fn verify(&self, show: &str, version: u32, presented: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(presented.trim()) else { return false };
        bytes.len() == 32 && bool::from(bytes.ct_eq(&self.mac(show, version)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_opens_its_own_show_only() {
        let keys = StreamKeys::new(b"node secret of at least some bytes");
        let k = keys.key("demo", 0);
        assert!(keys.verify("demo", 0, &k));
        assert!(!keys.verify("demo2", 0, &k));
        assert!(!StreamKeys::new(b"another secret").verify("demo", 0, &k));
        assert!(!keys.verify("demo", 0, &k[..k.len() - 1]));
        assert!(!keys.verify("demo", 0, ""));
        assert!(!keys.verify("demo", 0, "not base64 !"));
    }

    #[test]
    fn a_rotated_key_replaces_the_old_one_and_version_0_is_the_key_of_before() {
        let keys = StreamKeys::new(b"node secret of at least some bytes");
        // The key of before versions existed (HMAC of the domain and the id), kept for existing
        // shows and OBS setups.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"node secret of at least some bytes").unwrap();
        mac.update(b"liveshop stream key v1\0demo");
        assert_eq!(keys.key("demo", 0), URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        let (v0, v1, v2) = (keys.key("demo", 0), keys.key("demo", 1), keys.key("demo", 2));
        assert!(v0 != v1 && v1 != v2 && v0 != v2);
        assert!(keys.verify("demo", 1, &v1));
        assert!(!keys.verify("demo", 1, &v0));
        assert!(!keys.verify("demo", 2, &v1));
    }
}
