//! Secret rotation, the same on every host: the secrets stored under one id, which of them sign
//! now, and what a rotation keeps. A host stores a [`SecretRing`] however it stores things (it
//! serializes as a JSON list).

use serde::{Deserialize, Serialize};

use crate::Secret;

/// A secret rotated out still signs for this long, so receivers can switch over.
pub const ROTATION_OVERLAP_MS: u64 = 24 * 3600 * 1000;

/// The secrets of one id, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretRing(Vec<StoredSecret>);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSecret {
    /// The `whsec_` form.
    secret: String,
    created_at: u64,
    /// Set when a newer secret replaced it: it signs until then.
    expires_at: Option<u64>,
}

impl StoredSecret {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl SecretRing {
    /// The secrets that sign at `now` (milliseconds): the newest first, then any still in its
    /// overlap.
    pub fn signing(&self, now: u64) -> Vec<Secret> {
        self.0.iter().rev().filter(|s| s.live(now)).filter_map(|s| Secret::parse(&s.secret).ok()).collect()
    }

    /// Adds `secret` as the newest. The one before keeps signing for [`ROTATION_OVERLAP_MS`] (or
    /// less, if it was ending sooner); older ones are dropped. Returns when the previous one stops.
    pub fn rotate(&mut self, secret: &Secret, now: u64) -> Option<u64> {
        self.0.retain(|s| s.live(now));
        // Only the newest and the one it replaces sign.
        let keep_from = self.0.len().saturating_sub(1);
        self.0.drain(..keep_from);
        let previous_expires_at = self.0.last_mut().map(|prev| {
            let at = now + ROTATION_OVERLAP_MS;
            let until = prev.expires_at.map_or(at, |old| old.min(at));
            prev.expires_at = Some(until);
            until
        });
        self.0.push(StoredSecret { secret: secret.encode(), created_at: now, expires_at: None });
        previous_expires_at
    }

    /// How many secrets are kept (signing or not).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> Secret {
        Secret::generate([b; crate::GENERATED_SECRET_LEN])
    }

    fn encoded(keys: Vec<Secret>) -> Vec<String> {
        keys.iter().map(Secret::encode).collect()
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_for_a_day_then_stops() {
        let mut ring = SecretRing::default();
        assert!(ring.signing(0).is_empty());
        assert_eq!(ring.rotate(&secret(1), 1_000), None);
        assert_eq!(ring.rotate(&secret(2), 2_000), Some(2_000 + ROTATION_OVERLAP_MS));
        assert_eq!(encoded(ring.signing(3_000)), [secret(2).encode(), secret(1).encode()], "newest first");
        assert_eq!(encoded(ring.signing(2_000 + ROTATION_OVERLAP_MS)), [secret(2).encode()]);
        // A third rotation drops the first for good.
        ring.rotate(&secret(3), 4_000);
        assert_eq!(ring.len(), 2);
        assert_eq!(encoded(ring.signing(5_000)), [secret(3).encode(), secret(2).encode()]);
        let json = serde_json::to_string(&ring).unwrap();
        assert!(json.starts_with('['), "stored as a plain list: {json}");
    }
}
