//! Idempotency keys for checkout, as Stripe and the IETF draft
//! (`draft-ietf-httpapi-idempotency-key-header`) define them.
//!
//! A checkout must carry an `Idempotency-Key` header, scoped to the buyer. The shop records the
//! key with a fingerprint of the request (SHA-256 of the method, the path and the body's
//! canonical JSON: keys sorted, no insignificant whitespace) when the checkout starts executing,
//! and the final response when it finishes. Then, for the same buyer and key:
//!
//! | the earlier request             | this request          | answer                                   |
//! |---------------------------------|-----------------------|------------------------------------------|
//! | any                             | another fingerprint   | 422 `idempotency_key_reused`             |
//! | payment pending at the provider | same fingerprint      | 409 `idempotency_key_in_flight`          |
//! | finished                        | same fingerprint      | the stored response, byte for byte       |
//!
//! A checkout refused before it executes (empty cart, out of stock, price mismatch, ...) stores
//! nothing, as with Stripe: the buyer may fix the cause and retry with the same key. Keys are
//! kept [`IDEMPOTENCY_TTL_MS`] from their first use; lookups ignore older keys at once, and the
//! shop's alarm forgets them (a logged `forgotten` event) at the first alarm after that.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ids::{HOUR, Millis, OrderId};

pub const IDEMPOTENCY_TTL_MS: Millis = 24 * HOUR;
/// Longest key accepted, in bytes (Stripe's limit).
pub const MAX_KEY_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    /// The exact body sent, so a retry gets the same bytes.
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub created_at: Millis,
    pub order: OrderId,
    /// `None` while the payment is pending at the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<StoredResponse>,
}

impl IdempotencyRecord {
    pub fn expires_at(&self) -> Millis {
        self.created_at + IDEMPOTENCY_TTL_MS
    }
}

/// 1 to 255 bytes of visible ASCII (UUIDs, ULIDs and the like).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The request's fingerprint: hex SHA-256 of `method \n path \n canonical body`. A body that is
/// not JSON is hashed as it is (it will be refused anyway).
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let mut s = String::new();
            canonical(&v, &mut s);
            h.update(s.as_bytes());
        }
        Err(_) => h.update(body),
    }
    h.finalize().iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// JSON with object keys sorted and no whitespace, whatever map order serde_json was built with.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace_but_not_values() {
        let a = fingerprint("POST", "/checkout", br#"{"payment_method":"tok_visa","x":{"b":1,"a":2}}"#);
        let b =
            fingerprint("POST", "/checkout", br#"{ "x": {"a": 2, "b": 1}, "payment_method": "tok_visa" }"#);
        let c = fingerprint("POST", "/checkout", br#"{"payment_method":"tok_mastercard"}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255_bytes() {
        assert!(valid_key("8e03978e-40d5-43e8-bc93-6894a57f9324"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key(&"k".repeat(256)));
    }
}
