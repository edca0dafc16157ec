//! Stream keys: one per show, checkable without a database. A key is the HMAC-SHA256 of the show
//! id with the node's secret (domain-separated from every other use of that secret), in
//! unpadded base64url. Whoever holds the node secret can mint them; nobody else can.

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

    fn mac(&self, show: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(DOMAIN);
        mac.update(show.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The key OBS puts in its Bearer token field for `show`.
    pub fn key(&self, show: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(show))
    }

    /// Constant-time check of a presented key.
    pub fn verify(&self, show: &str, presented: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(presented.trim()) else { return false };
        bytes.len() == 32 && bool::from(bytes.ct_eq(&self.mac(show)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_opens_its_own_show_only() {
        let keys = StreamKeys::new(b"node secret of at least some bytes");
        let k = keys.key("demo");
        assert!(keys.verify("demo", &k));
        assert!(!keys.verify("demo2", &k));
        assert!(!StreamKeys::new(b"another secret").verify("demo", &k));
        assert!(!keys.verify("demo", &k[..k.len() - 1]));
        assert!(!keys.verify("demo", ""));
        assert!(!keys.verify("demo", "not base64 !"));
    }
}
