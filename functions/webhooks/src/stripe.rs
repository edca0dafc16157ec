//! Inbound Stripe-style webhooks: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>][,v0=<hex>]`,
//! where each `v1` is the hex HMAC-SHA256 of `{t}.{body}` keyed with the endpoint secret.
//!
//! As in Stripe's own libraries, the endpoint secret is used as it is shown, `whsec_...`
//! included, as raw bytes: it is *not* base64-decoded the way Standard Webhooks secrets are.
//! While Stripe rolls an endpoint secret it sends one `v1` per secret; any match is enough. `v0`
//! (test-mode, legacy) and unknown schemes are ignored. Stripe's libraries refuse only timestamps
//! that are too old; we also refuse ones too far in the future, like every verifier in this crate.

use crate::{
    Tag, WebhookError, any_matches, check_timestamp, decode_hex_tag, encode_hex, mac, parse_timestamp,
};

pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// The header value Stripe would send: for simulators and tests.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    format!("t={t},v1={}", encode_hex(&mac(secret.as_bytes(), &[t.as_bytes(), b".", body])))
}

/// Accepted if any `v1` in the header was made by any of `secrets` (each `whsec_...`) and `t` is
/// within `tolerance_secs` of `now`. Returns the signed timestamp.
pub fn verify<'h>(
    secrets: &[impl AsRef<str>],
    headers: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now: u64,
    tolerance_secs: u64,
) -> Result<u64, WebhookError> {
    if secrets.is_empty() || !secrets.iter().all(|s| s.as_ref().starts_with("whsec_")) {
        return Err(WebhookError::SecretInvalid);
    }
    let header = crate::required(&headers, SIGNATURE_HEADER)?;
    let (t, v1) = crate::parse_t_v1(header)?;
    let timestamp = parse_timestamp(t)?;
    let candidates: Vec<Tag> = v1.into_iter().filter_map(decode_hex_tag).collect();
    if candidates.is_empty() {
        return Err(WebhookError::SignatureMalformed);
    }
    let keys = secrets.iter().map(|s| s.as_ref().as_bytes());
    if !any_matches(keys, &[t.as_bytes(), b".", body], &candidates) {
        return Err(WebhookError::SignatureMismatch);
    }
    check_timestamp(timestamp, now, tolerance_secs)?;
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_TOLERANCE_SECS;

    const SECRET: &str = "whsec_liveshop_stripe_test";
    const T: u64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    /// Computed independently: `hmac.new(b"whsec_liveshop_stripe_test", b"1700000000." + BODY,
    /// hashlib.sha256).hexdigest()` with Python's standard library.
    const EXPECTED_V1: &str = "e0256a989494d671aa2e10e93c587854888eacdeb74aa98f3b3084fa0791e4d6";

    fn check(secrets: &[&str], header: &str, body: &[u8], now: u64) -> Result<u64, WebhookError> {
        verify(secrets, |n| (n == SIGNATURE_HEADER).then_some(header), body, now, DEFAULT_TOLERANCE_SECS)
    }

    #[test]
    fn signs_and_verifies_an_independently_computed_vector() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(header, format!("t={T},v1={EXPECTED_V1}"));
        assert_eq!(check(&[SECRET], &header, BODY, T + 5), Ok(T));
    }

    #[test]
    fn any_v1_of_several_may_match_and_v0_is_ignored() {
        let other = sign("whsec_rolled_out", T, BODY);
        let other_v1 = other.split_once(",v1=").unwrap().1;
        let header = format!("t={T},v1={other_v1},v1={EXPECTED_V1},v0={}", "0".repeat(64));
        assert_eq!(check(&[SECRET], &header, BODY, T), Ok(T));
        assert_eq!(check(&["whsec_rolled_out"], &header, BODY, T), Ok(T));
        assert_eq!(check(&["whsec_third"], &header, BODY, T), Err(WebhookError::SignatureMismatch));
        // A v0 that would match is not enough on its own.
        let only_v0 = format!("t={T},v0={EXPECTED_V1}");
        assert_eq!(check(&[SECRET], &only_v0, BODY, T), Err(WebhookError::SignatureMalformed));
    }

    #[test]
    fn secrets_must_look_like_stripe_endpoint_secrets() {
        // Catches the usual mix-up of an API key for the endpoint secret.
        let header = format!("t={T},v1={EXPECTED_V1}");
        assert_eq!(check(&["sk_live_123"], &header, BODY, T), Err(WebhookError::SecretInvalid));
        assert_eq!(check(&[], &header, BODY, T), Err(WebhookError::SecretInvalid));
    }

    #[test]
    fn tampered_body_or_timestamp_is_a_mismatch() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(check(&[SECRET], &header, b"{\"id\":\"evt_2\"}", T), Err(WebhookError::SignatureMismatch));
        let moved = header.replace(&format!("t={T}"), &format!("t={}", T + 1));
        assert_eq!(check(&[SECRET], &moved, BODY, T), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn tolerance_is_300_seconds_each_way_edges_included() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(check(&[SECRET], &header, BODY, T + 300), Ok(T));
        assert_eq!(check(&[SECRET], &header, BODY, T - 300), Ok(T));
        assert_eq!(check(&[SECRET], &header, BODY, T + 301), Err(WebhookError::TimestampTooOld));
        assert_eq!(check(&[SECRET], &header, BODY, T - 301), Err(WebhookError::TimestampInFuture));
    }

    #[test]
    fn malformed_headers_are_told_apart_from_mismatches() {
        for bad in [
            "",
            "v1=abc",
            &format!("v1={EXPECTED_V1}"),
            &format!("t=,v1={EXPECTED_V1}"),
            &format!("t=abc,v1={EXPECTED_V1}"),
            &format!("t={T},t={T},v1={EXPECTED_V1}"),
            &format!("t={T},{EXPECTED_V1}"),
            &format!("t={T}"),
            &format!("t={T},v1=xyz"),
        ] {
            assert_eq!(check(&[SECRET], bad, BODY, T), Err(WebhookError::SignatureMalformed), "{bad}");
        }
        let missing = verify(&[SECRET], |_| None, BODY, T, DEFAULT_TOLERANCE_SECS);
        assert_eq!(missing, Err(WebhookError::SignatureMissing { header: SIGNATURE_HEADER }));
    }
}
