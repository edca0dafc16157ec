//! Inbound Shopify-style webhooks: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the raw body>`,
//! keyed with the app's client secret as bytes.
//!
//! The MAC covers the body only: no timestamp, no event id. So a captured request stays valid for
//! as long as the secret does, and `X-Shopify-Event-Id` (the key Shopify documents for spotting
//! duplicates) is not authenticated. Pair [`verify`] with a [`crate::ReplayGuard`] keyed by that
//! header to drop Shopify's at-least-once duplicates; treat it as deduplication, not as replay
//! protection. After a client-secret rotation Shopify may keep signing with the old secret for a
//! while, so [`verify`] takes every secret that is currently valid.

use crate::{WebhookError, any_matches, decode_base64_tag, mac};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub const HMAC_HEADER: &str = "x-shopify-hmac-sha256";
pub const EVENT_ID_HEADER: &str = "x-shopify-event-id";

/// The header value Shopify would send for `body`: for simulators and tests.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    STANDARD.encode(mac(secret, &[body]))
}

/// Accepted if the header is the MAC of `body` under any of `secrets` (none may be empty).
pub fn verify<'h>(
    secrets: &[impl AsRef<[u8]>],
    headers: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<(), WebhookError> {
    if secrets.is_empty() || secrets.iter().any(|s| s.as_ref().is_empty()) {
        return Err(WebhookError::SecretInvalid);
    }
    let header = crate::required(&headers, HMAC_HEADER)?;
    let candidate = decode_base64_tag(header.trim()).ok_or(WebhookError::SignatureMalformed)?;
    if !any_matches(secrets.iter().map(AsRef::as_ref), &[body], &[candidate]) {
        return Err(WebhookError::SignatureMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "shpss_liveshop_test_secret";
    const BODY: &[u8] = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    /// Computed independently: `base64(hmac.new(b"shpss_liveshop_test_secret", BODY,
    /// hashlib.sha256).digest())` with Python's standard library.
    const EXPECTED: &str = "XSTqiI6Wr6yCCGTn9Y9y5jP+0J4bmaSZDIc25skZZxM=";

    fn check(secrets: &[&str], header: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
        verify(secrets, |n| if n == HMAC_HEADER { header } else { None }, body)
    }

    #[test]
    fn signs_and_verifies_an_independently_computed_vector() {
        assert_eq!(sign(SECRET.as_bytes(), BODY), EXPECTED);
        assert_eq!(check(&[SECRET], Some(EXPECTED), BODY), Ok(()));
    }

    #[test]
    fn a_changed_body_or_another_secret_is_a_mismatch() {
        assert_eq!(check(&[SECRET], Some(EXPECTED), b"{}"), Err(WebhookError::SignatureMismatch));
        assert_eq!(check(&["other"], Some(EXPECTED), BODY), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn both_secrets_verify_while_shopify_rotates() {
        assert_eq!(check(&["new secret", SECRET], Some(EXPECTED), BODY), Ok(()));
    }

    #[test]
    fn missing_malformed_and_secretless_requests_are_told_apart() {
        assert_eq!(check(&[SECRET], None, BODY), Err(WebhookError::SignatureMissing { header: HMAC_HEADER }));
        for bad in ["", "not base64!", "aGVsbG8=", &crate::encode_hex(&[0; 32])] {
            assert_eq!(check(&[SECRET], Some(bad), BODY), Err(WebhookError::SignatureMalformed), "{bad}");
        }
        assert_eq!(check(&[], Some(EXPECTED), BODY), Err(WebhookError::SecretInvalid));
        assert_eq!(check(&[""], Some(EXPECTED), BODY), Err(WebhookError::SecretInvalid));
    }
}
