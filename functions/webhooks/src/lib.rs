//! Signed webhooks for every liveshop host: signing what we send, verifying what we receive.
//!
//! Merchants plug into liveshop through webhooks in both directions. This crate holds the
//! cryptography and the header formats, and nothing else: it does no IO, reads no clock and draws
//! no random numbers. The host passes the headers (as a lookup function), the raw body, the current
//! time in Unix seconds and, when minting a secret, the random bytes. The same code therefore runs
//! in the edge node, in wasm32 components, in Workers and in tests driven faster than real time.
//!
//! ```text
//!            outbound (shop actor -> merchant)                 inbound (third party -> us)
//!  standard::sign(secrets, id, now, body) -> headers    shopify::verify  | X-Shopify-Hmac-Sha256
//!  standard::verify(..)  (merchants' tests, our own     stripe::verify   | Stripe-Signature
//!                         test receivers)               liveshop::verify | X-Liveshop-Signature
//!  classify_delivery(status) -> Delivered | Retry |     ReplayGuard::seen(event id, now) -> bool
//!                               DisableEndpoint
//! ```
//!
//! # The header formats
//!
//! | direction | header | value | HMAC-SHA256 key | signed content |
//! |---|---|---|---|---|
//! | out | `webhook-id` | the message id, same on every retry | | |
//! | out | `webhook-timestamp` | Unix seconds of this attempt | | |
//! | out | `webhook-signature` | `v1,<base64>`, space-separated, one per active secret | base64-decoded `whsec_` secret | `{id}.{timestamp}.{body}` |
//! | in | `X-Shopify-Hmac-Sha256` | `<base64>` | the app's client secret, as bytes | `{body}` |
//! | in | `Stripe-Signature` | `t=<unix>,v1=<hex>[,v1=<hex>][,v0=..]` | the endpoint secret `whsec_..`, as bytes (not decoded) | `{t}.{body}` |
//! | in | `X-Liveshop-Signature` | `t=<unix>,v1=<base64>[,v1=<base64>]` | base64-decoded `whsec_` secret | `{t}.{body}` |
//!
//! The first three are the [Standard Webhooks](https://www.standardwebhooks.com/) headers. The
//! last is ours, for merchants who call liveshop's API: sign the exact bytes you send, prefixed by
//! the current Unix time and a `.`, with the secret we issued you (decode the base64 after `whsec_`
//! to get the key, as Standard Webhooks libraries do), and send
//! `X-Liveshop-Signature: t=1700000000,v1=<base64 of the 32-byte MAC>`. For example, with the key
//! `whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, the time `1700000000` and the body
//! `{"type":"product.updated","sku":"MUG-1"}`, the header is
//! `t=1700000000,v1=oco6TTpDz7XcY64f2TZPGWkH1EHlCtVGjM0SFn17dbk=`.
//!
//! # The rules every verifier follows
//!
//! - The body is the raw bytes as received, before any JSON parsing.
//! - Signatures are compared in constant time. A header may carry several signatures and a
//!   verifier may hold several secrets (during a rotation, on either side): one match is enough.
//!   Signatures of schemes we do not know (`v1a`, Stripe's `v0`) are ignored.
//! - The signature is checked before the timestamp, so a forged request never learns whether its
//!   timestamp would have passed. Then the timestamp must lie within `tolerance_secs` of `now`, in
//!   both directions ([`DEFAULT_TOLERANCE_SECS`] = 5 minutes); the edges are accepted.
//! - A valid signature says who sent a request, not that it is new. Feed the event id to a
//!   [`ReplayGuard`] after verifying, never before (or forged requests could fill it).
//!
//! # Example
//!
//! ```
//! use liveshop_webhooks::{DEFAULT_TOLERANCE_SECS, Secret, standard};
//!
//! // The shop mints one secret per merchant endpoint from random bytes the host provides.
//! let secret = Secret::generate([7; 32]);
//! let whsec = secret.encode(); // shown once to the merchant: "whsec_BwcH..."
//!
//! // Sending: sign the body, put the three headers on the POST.
//! let body = br#"{"type":"order.paid","data":{"order":"ord_1"}}"#;
//! let headers = standard::sign(&[secret], "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1_700_000_000, body)?;
//! assert!(headers.signature.starts_with("v1,"));
//!
//! // Receiving (the merchant's side): verify with the same secret and the receiver's clock.
//! let merchant = [Secret::parse(&whsec)?];
//! let now = 1_700_000_042;
//! let ok = standard::verify(&merchant, |name| headers.get(name), body, now, DEFAULT_TOLERANCE_SECS)?;
//! assert_eq!(ok.id, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W");
//!
//! // A changed body, or a request replayed ten minutes later, is refused with a stable code.
//! let forged = standard::verify(&merchant, |name| headers.get(name), b"{}", now, DEFAULT_TOLERANCE_SECS);
//! assert_eq!(forged.unwrap_err().code(), "signature_mismatch");
//! let late = standard::verify(&merchant, |name| headers.get(name), body, now + 600, DEFAULT_TOLERANCE_SECS);
//! assert_eq!(late.unwrap_err().code(), "timestamp_too_old");
//! # Ok::<(), liveshop_webhooks::WebhookError>(())
//! ```

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

mod delivery;
pub mod liveshop;
mod replay;
pub mod rotation;
pub mod shopify;
pub mod standard;
pub mod stripe;

pub use delivery::{
    DeliveryOutcome, EndpointError, EndpointPolicy, check_endpoint, classify_delivery, is_public,
};
pub use replay::ReplayGuard;

/// How far a signed timestamp may be from `now`, either way, unless the caller says otherwise.
pub const DEFAULT_TOLERANCE_SECS: u64 = 5 * 60;
/// Shortest `whsec_` key, in bytes (Standard Webhooks: at least 192 bits).
pub const MIN_SECRET_LEN: usize = 24;
/// Longest `whsec_` key, in bytes (Standard Webhooks: at most 512 bits).
pub const MAX_SECRET_LEN: usize = 64;
/// The size of the secrets we mint.
pub const GENERATED_SECRET_LEN: usize = 32;

const SECRET_PREFIX: &str = "whsec_";
/// An HMAC-SHA256 output.
type Tag = [u8; 32];

/// Why a webhook was refused or could not be signed. Each has a stable code hosts can return and
/// tests can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the {header} header is missing")]
    SignatureMissing { header: &'static str },
    #[error("the signature header is not in the expected format, or carries no signature we check")]
    SignatureMalformed,
    #[error("no signature matches the body")]
    SignatureMismatch,
    #[error("the signed timestamp is older than the tolerance allows")]
    TimestampTooOld,
    #[error("the signed timestamp is further in the future than the tolerance allows")]
    TimestampInFuture,
    #[error("the secret is missing or not a valid webhook secret")]
    SecretInvalid,
    #[error("the webhook id is empty, too long, or contains '.', spaces or control characters")]
    IdInvalid,
    #[error("this event was already received")]
    ReplayedEvent,
}

impl WebhookError {
    pub fn code(self) -> &'static str {
        match self {
            WebhookError::SignatureMissing { .. } => "signature_missing",
            WebhookError::SignatureMalformed => "signature_malformed",
            WebhookError::SignatureMismatch => "signature_mismatch",
            WebhookError::TimestampTooOld => "timestamp_too_old",
            WebhookError::TimestampInFuture => "timestamp_in_future",
            WebhookError::SecretInvalid => "secret_invalid",
            WebhookError::IdInvalid => "id_invalid",
            WebhookError::ReplayedEvent => "replayed_event",
        }
    }
}

/// A Standard Webhooks signing secret: 24 to 64 random bytes, shown to people as
/// `whsec_<base64>`. Used for our outbound webhooks and for the `X-Liveshop-Signature` of
/// merchants calling us.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Reads `whsec_<base64>` (padding optional, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Result<Self, WebhookError> {
        let encoded = s.trim().strip_prefix(SECRET_PREFIX).ok_or(WebhookError::SecretInvalid)?;
        let lenient = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let key = lenient.decode(encoded).map_err(|_| WebhookError::SecretInvalid)?;
        if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&key.len()) {
            return Err(WebhookError::SecretInvalid);
        }
        Ok(Secret(key))
    }

    /// A new secret from [`GENERATED_SECRET_LEN`] random bytes the host drew from its CSPRNG.
    pub fn generate(random: [u8; GENERATED_SECRET_LEN]) -> Self {
        Secret(random.to_vec())
    }

    /// The `whsec_<base64>` form, to show the merchant once and to store.
    pub fn encode(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    fn key(&self) -> &[u8] {
        &self.0
    }
}

/// HMAC-SHA256 of the concatenation of `parts`, without building it.
fn mac(key: &[u8], parts: &[&[u8]]) -> Tag {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Whether any key signs `signed` into any of `candidates`. Every pair is compared, in constant
/// time, so timing reveals neither which pair matched nor how much of a candidate was right.
fn any_matches<'k>(keys: impl IntoIterator<Item = &'k [u8]>, signed: &[&[u8]], candidates: &[Tag]) -> bool {
    let mut matched = Choice::from(0);
    for key in keys {
        let expected = mac(key, signed);
        for candidate in candidates {
            matched |= expected.ct_eq(candidate);
        }
    }
    matched.into()
}

fn decode_base64_tag(s: &str) -> Option<Tag> {
    STANDARD.decode(s).ok()?.try_into().ok()
}

fn decode_hex_tag(s: &str) -> Option<Tag> {
    fn nibble(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut tag = [0; 32];
    for (byte, pair) in tag.iter_mut().zip(s.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(tag)
}

fn encode_hex(tag: &Tag) -> String {
    tag.iter().map(|b| format!("{b:02x}")).collect()
}

/// A timestamp header: decimal digits only (no sign, no spaces), as it will be signed.
fn parse_timestamp(s: &str) -> Result<u64, WebhookError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::SignatureMalformed);
    }
    s.parse().map_err(|_| WebhookError::SignatureMalformed)
}

fn check_timestamp(timestamp: u64, now: u64, tolerance_secs: u64) -> Result<(), WebhookError> {
    if timestamp < now.saturating_sub(tolerance_secs) {
        Err(WebhookError::TimestampTooOld)
    } else if timestamp > now.saturating_add(tolerance_secs) {
        Err(WebhookError::TimestampInFuture)
    } else {
        Ok(())
    }
}

/// The `t=<unix>,v1=<sig>[,v1=<sig>][,other=..]` header shared by Stripe and liveshop: the
/// timestamp text as sent and every `v1` value. Exactly one `t` is required; every item must be
/// `key=value`; keys other than `t` and `v1` are ignored.
fn parse_t_v1(header: &str) -> Result<(&str, Vec<&str>), WebhookError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (key, value) = item.trim().split_once('=').ok_or(WebhookError::SignatureMalformed)?;
        match key {
            "t" if timestamp.is_none() => timestamp = Some(value),
            "t" => return Err(WebhookError::SignatureMalformed),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    Ok((timestamp.ok_or(WebhookError::SignatureMalformed)?, signatures))
}

/// What every verifier needs from a header lookup: the value, or which header is missing.
fn required<'h>(
    headers: &impl Fn(&str) -> Option<&'h str>,
    name: &'static str,
) -> Result<&'h str, WebhookError> {
    headers(name).ok_or(WebhookError::SignatureMissing { header: name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_own_stable_code() {
        let all = [
            WebhookError::SignatureMissing { header: "webhook-id" },
            WebhookError::SignatureMalformed,
            WebhookError::SignatureMismatch,
            WebhookError::TimestampTooOld,
            WebhookError::TimestampInFuture,
            WebhookError::SecretInvalid,
            WebhookError::IdInvalid,
            WebhookError::ReplayedEvent,
        ];
        let codes: Vec<_> = all.iter().map(|e| e.code()).collect();
        assert_eq!(
            codes,
            [
                "signature_missing",
                "signature_malformed",
                "signature_mismatch",
                "timestamp_too_old",
                "timestamp_in_future",
                "secret_invalid",
                "id_invalid",
                "replayed_event",
            ]
        );
        assert_eq!(all[0].to_string(), "the webhook-id header is missing");
    }

    #[test]
    fn a_secret_round_trips_through_its_whsec_form() {
        let secret = Secret::generate([42; 32]);
        let again = Secret::parse(&secret.encode()).unwrap();
        assert_eq!(again.key(), secret.key());
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        // Padding is optional and a stray newline from a config file is forgiven.
        let unpadded = secret.encode().trim_end_matches('=').to_owned();
        assert_eq!(Secret::parse(&format!("{unpadded}\n")).unwrap().key(), secret.key());
    }

    #[test]
    fn secrets_without_prefix_or_of_the_wrong_length_are_refused() {
        let b64 = |n: usize| STANDARD.encode(vec![1u8; n]);
        assert!(Secret::parse(&format!("whsec_{}", b64(MIN_SECRET_LEN))).is_ok());
        assert!(Secret::parse(&format!("whsec_{}", b64(MAX_SECRET_LEN))).is_ok());
        for bad in [
            format!("whsec_{}", b64(MIN_SECRET_LEN - 1)),
            format!("whsec_{}", b64(MAX_SECRET_LEN + 1)),
            b64(32),
            "whsec_not base64!".to_owned(),
            "whsec_".to_owned(),
            "sk_live_123".to_owned(),
        ] {
            assert_eq!(Secret::parse(&bad).unwrap_err(), WebhookError::SecretInvalid, "{bad}");
        }
    }

    #[test]
    fn tolerance_accepts_its_edges_and_refuses_one_second_beyond() {
        let now = 1_700_000_000;
        assert_eq!(check_timestamp(now - 300, now, 300), Ok(()));
        assert_eq!(check_timestamp(now + 300, now, 300), Ok(()));
        assert_eq!(check_timestamp(now - 301, now, 300), Err(WebhookError::TimestampTooOld));
        assert_eq!(check_timestamp(now + 301, now, 300), Err(WebhookError::TimestampInFuture));
        // No overflow near the ends of time.
        assert_eq!(check_timestamp(0, 10, 300), Ok(()));
        assert_eq!(check_timestamp(u64::MAX, u64::MAX - 1, 300), Ok(()));
    }

    #[test]
    fn timestamps_are_plain_decimal_digits() {
        assert_eq!(parse_timestamp("1700000000"), Ok(1_700_000_000));
        for bad in ["", "+1700000000", "-1", " 1", "1.5", "1e9", "99999999999999999999999"] {
            assert_eq!(parse_timestamp(bad), Err(WebhookError::SignatureMalformed), "{bad:?}");
        }
    }

    #[test]
    fn hex_tags_decode_both_cases_and_refuse_anything_else() {
        let tag: Tag = std::array::from_fn(|i| i as u8 * 7);
        let hex = encode_hex(&tag);
        assert_eq!(decode_hex_tag(&hex), Some(tag));
        assert_eq!(decode_hex_tag(&hex.to_uppercase()), Some(tag));
        assert_eq!(decode_hex_tag(&hex[2..]), None);
        assert_eq!(decode_hex_tag(&format!("zz{}", &hex[2..])), None);
    }
}
