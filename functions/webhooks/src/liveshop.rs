//! Our own inbound header, for merchants who call liveshop:
//! `X-Liveshop-Signature: t=<unix>,v1=<base64 HMAC-SHA256 of "{t}.{body}">[,v1=...]`.
//!
//! The key is the `whsec_` secret we issued, base64-decoded (the same [`Secret`] as outbound
//! webhooks, so a merchant reuses one decoding routine). The rules are Stripe's shape with
//! Standard Webhooks' encoding: several `v1` may be sent, any match is enough, other keys are
//! ignored, and `t` must be within the tolerance of `now` in both directions. See the crate docs
//! for a worked example.

use crate::{
    Secret, Tag, WebhookError, any_matches, check_timestamp, decode_base64_tag, mac, parse_timestamp,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub const SIGNATURE_HEADER: &str = "x-liveshop-signature";

/// The header value a merchant sends: what SDKs and our CLI compute, and what tests use.
pub fn sign(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    format!("t={t},v1={}", STANDARD.encode(mac(secret.key(), &[t.as_bytes(), b".", body])))
}

/// Accepted if any `v1` in the header was made by any of `secrets` (the merchant's current secret
/// and, during a rotation, the previous one) and `t` is within `tolerance_secs` of `now`.
/// Returns the signed timestamp.
pub fn verify<'h>(
    secrets: &[Secret],
    headers: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now: u64,
    tolerance_secs: u64,
) -> Result<u64, WebhookError> {
    if secrets.is_empty() {
        return Err(WebhookError::SecretInvalid);
    }
    let header = crate::required(&headers, SIGNATURE_HEADER)?;
    let (t, v1) = crate::parse_t_v1(header)?;
    let timestamp = parse_timestamp(t)?;
    let candidates: Vec<Tag> = v1.into_iter().filter_map(decode_base64_tag).collect();
    if candidates.is_empty() {
        return Err(WebhookError::SignatureMalformed);
    }
    if !any_matches(secrets.iter().map(Secret::key), &[t.as_bytes(), b".", body], &candidates) {
        return Err(WebhookError::SignatureMismatch);
    }
    check_timestamp(timestamp, now, tolerance_secs)?;
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_TOLERANCE_SECS;

    const T: u64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"type":"product.updated","sku":"MUG-1"}"#;
    /// The example of the crate docs, computed independently with Python's standard library:
    /// `base64(hmac.new(b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), b"1700000000." + BODY,
    /// hashlib.sha256).digest())`.
    const EXPECTED: &str = "t=1700000000,v1=oco6TTpDz7XcY64f2TZPGWkH1EHlCtVGjM0SFn17dbk=";

    fn secret() -> Secret {
        Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    fn check(secrets: &[Secret], header: &str, body: &[u8], now: u64) -> Result<u64, WebhookError> {
        verify(secrets, |n| (n == SIGNATURE_HEADER).then_some(header), body, now, DEFAULT_TOLERANCE_SECS)
    }

    #[test]
    fn signs_and_verifies_the_documented_example() {
        assert_eq!(sign(&secret(), T, BODY), EXPECTED);
        assert_eq!(check(&[secret()], EXPECTED, BODY, T), Ok(T));
    }

    #[test]
    fn base64_padding_inside_the_header_does_not_confuse_the_parser() {
        // `=` separates keys from values and also pads base64; only the first one splits.
        let header = format!(" t={T} , v1={} ", EXPECTED.split_once(",v1=").unwrap().1);
        assert_eq!(check(&[secret()], &header, BODY, T), Ok(T));
    }

    #[test]
    fn a_merchant_mid_rotation_is_accepted_with_either_secret() {
        let new = Secret::generate([9; 32]);
        let header = sign(&new, T, BODY);
        assert_eq!(check(&[new.clone(), secret()], &header, BODY, T), Ok(T));
        assert_eq!(check(&[secret(), new], EXPECTED, BODY, T), Ok(T));
        assert_eq!(
            check(&[Secret::generate([8; 32])], EXPECTED, BODY, T),
            Err(WebhookError::SignatureMismatch)
        );
        // Or the merchant sends both signatures.
        let both = format!(
            "{},v1={}",
            sign(&Secret::generate([8; 32]), T, BODY),
            EXPECTED.split_once(",v1=").unwrap().1
        );
        assert_eq!(check(&[secret()], &both, BODY, T), Ok(T));
    }

    #[test]
    fn tampering_and_time_are_checked() {
        assert_eq!(check(&[secret()], EXPECTED, b"{}", T), Err(WebhookError::SignatureMismatch));
        let moved = EXPECTED.replace("t=1700000000", "t=1700000001");
        assert_eq!(check(&[secret()], &moved, BODY, T), Err(WebhookError::SignatureMismatch));
        assert_eq!(check(&[secret()], EXPECTED, BODY, T + 300), Ok(T));
        assert_eq!(check(&[secret()], EXPECTED, BODY, T - 300), Ok(T));
        assert_eq!(check(&[secret()], EXPECTED, BODY, T + 301), Err(WebhookError::TimestampTooOld));
        assert_eq!(check(&[secret()], EXPECTED, BODY, T - 301), Err(WebhookError::TimestampInFuture));
    }

    #[test]
    fn missing_malformed_and_secretless_are_told_apart() {
        let missing = verify(&[secret()], |_| None, BODY, T, DEFAULT_TOLERANCE_SECS);
        assert_eq!(missing, Err(WebhookError::SignatureMissing { header: SIGNATURE_HEADER }));
        let hex_instead = format!("t={T},v1={}", "ab".repeat(32));
        for bad in ["t=1700000000", "v1=abc", "t=1700000000,v1=not-base64", &hex_instead] {
            assert_eq!(check(&[secret()], bad, BODY, T), Err(WebhookError::SignatureMalformed), "{bad}");
        }
        assert_eq!(check(&[], EXPECTED, BODY, T), Err(WebhookError::SecretInvalid));
    }
}
