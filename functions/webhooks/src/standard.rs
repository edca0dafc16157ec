//! Outbound webhooks per the Standard Webhooks specification (symmetric `v1` signatures).
//!
//! `webhook-signature` is a space-separated list of `v1,<base64 HMAC-SHA256>` entries, one per
//! secret the endpoint currently has: during a rotation the shop signs with the new and the old
//! secret at once, and a receiver holding either accepts.

use crate::{
    Secret, Tag, WebhookError, any_matches, check_timestamp, decode_base64_tag, mac, parse_timestamp,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Longest message id we sign or accept, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// The three headers of a signed delivery, as their text values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
}

impl SignedHeaders {
    /// The value of header `name` (ASCII case-insensitive), like any HTTP header map.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// `(name, value)` pairs to put on the request.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [(ID_HEADER, &*self.id), (TIMESTAMP_HEADER, &*self.timestamp), (SIGNATURE_HEADER, &*self.signature)]
            .into_iter()
    }
}

/// What a verified delivery proved: its id (the receiver's idempotency key) and when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'h> {
    pub id: &'h str,
    pub timestamp: u64,
}

/// Signs one delivery attempt with every secret in `secrets` (the current one first, then any
/// being rotated out). `id` stays the same across retries; `timestamp` is the attempt's `now`.
pub fn sign(
    secrets: &[Secret],
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> Result<SignedHeaders, WebhookError> {
    check_id(id)?;
    if secrets.is_empty() {
        return Err(WebhookError::SecretInvalid);
    }
    let timestamp = timestamp.to_string();
    let signed = signed_content(id, &timestamp, body);
    let signature = secrets
        .iter()
        .map(|secret| format!("v1,{}", STANDARD.encode(mac(secret.key(), &signed))))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(SignedHeaders { id: id.to_owned(), timestamp, signature })
}

/// Verifies a delivery: accepted if any `v1` signature in the header was made by any of
/// `secrets` and the timestamp is within `tolerance_secs` of `now`. `headers` looks a header up
/// by its lower-case name.
pub fn verify<'h>(
    secrets: &[Secret],
    headers: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now: u64,
    tolerance_secs: u64,
) -> Result<Verified<'h>, WebhookError> {
    if secrets.is_empty() {
        return Err(WebhookError::SecretInvalid);
    }
    let id = crate::required(&headers, ID_HEADER)?;
    let timestamp_text = crate::required(&headers, TIMESTAMP_HEADER)?;
    let signature = crate::required(&headers, SIGNATURE_HEADER)?;
    check_id(id)?;
    let timestamp = parse_timestamp(timestamp_text)?;
    let candidates: Vec<Tag> = signature
        .split_ascii_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(decode_base64_tag)
        .collect();
    if candidates.is_empty() {
        return Err(WebhookError::SignatureMalformed);
    }
    let keys = secrets.iter().map(Secret::key);
    if !any_matches(keys, &signed_content(id, timestamp_text, body), &candidates) {
        return Err(WebhookError::SignatureMismatch);
    }
    check_timestamp(timestamp, now, tolerance_secs)?;
    Ok(Verified { id, timestamp })
}

/// `{id}.{timestamp}.{body}`, in pieces.
fn signed_content<'a>(id: &'a str, timestamp: &'a str, body: &'a [u8]) -> [&'a [u8]; 5] {
    [id.as_bytes(), b".", timestamp.as_bytes(), b".", body]
}

/// Ids are printable ASCII without `.` (the separator of the signed content: an id with dots
/// could shift bytes between id, timestamp and body without changing the signature).
fn check_id(id: &str) -> Result<(), WebhookError> {
    let printable = |b: u8| b.is_ascii_graphic() && b != b'.';
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(printable) {
        return Err(WebhookError::IdInvalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_TOLERANCE_SECS;

    const ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    const T: u64 = 1_674_087_231;
    const BODY: &[u8] = br#"{"type":"order.paid","data":{"order":"ord_1"}}"#;

    fn secret(byte: u8) -> Secret {
        Secret::generate([byte; 32])
    }

    fn check(
        secrets: &[Secret],
        headers: &SignedHeaders,
        body: &[u8],
        now: u64,
    ) -> Result<u64, WebhookError> {
        verify(secrets, |n| headers.get(n), body, now, DEFAULT_TOLERANCE_SECS).map(|v| v.timestamp)
    }

    /// The vector of the Standard Webhooks reference libraries (`libraries/rust/src/lib.rs`,
    /// `test_sign`, in github.com/standard-webhooks/standard-webhooks); recomputed independently
    /// with Python's `hmac` module, which gives the same signature.
    #[test]
    fn signs_the_reference_vector_of_the_specification() {
        let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let headers =
            sign(std::slice::from_ref(&secret), "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1_649_367_553, body)
                .unwrap();
        assert_eq!(headers.signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert_eq!(headers.timestamp, "1649367553");
        assert_eq!(check(&[secret], &headers, body, 1_649_367_553), Ok(1_649_367_553));
    }

    #[test]
    fn a_signed_delivery_verifies_and_yields_its_id() {
        let headers = sign(&[secret(1)], ID, T, BODY).unwrap();
        let got = verify(&[secret(1)], |n| headers.get(n), BODY, T + 10, DEFAULT_TOLERANCE_SECS).unwrap();
        assert_eq!(got, Verified { id: ID, timestamp: T });
        let names: Vec<_> = headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["webhook-id", "webhook-timestamp", "webhook-signature"]);
        assert_eq!(headers.get("Webhook-Id"), Some(ID));
    }

    #[test]
    fn an_empty_or_truncated_signature_is_refused() {
        let headers = sign(&[secret(1)], ID, T, BODY).unwrap();
        let with = |signature: &str| SignedHeaders { signature: signature.into(), ..headers.clone() };
        let full = headers.signature.clone();
        for malformed in ["", " ", "v1,", "v1", "v2,abc", &full[..full.len() - 8]] {
            let got = check(&[secret(1)], &with(malformed), BODY, T);
            assert!(
                matches!(got, Err(WebhookError::SignatureMalformed | WebhookError::SignatureMissing { .. })),
                "{malformed:?}: {got:?}"
            );
        }
        // Truncated to a length that still decodes: the wrong length, so no match.
        let short = format!("v1,{}", &full[3..full.len() - 4]);
        assert!(check(&[secret(1)], &with(&short), BODY, T).is_err(), "{short}");
        assert_eq!(check(&[secret(1)], &with(&full), BODY, T), Ok(T));
    }

    #[test]
    fn tampering_with_body_timestamp_or_id_breaks_the_signature() {
        let headers = sign(&[secret(1)], ID, T, BODY).unwrap();
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        assert_eq!(check(&[secret(1)], &headers, &body, T), Err(WebhookError::SignatureMismatch));

        let moved = SignedHeaders { timestamp: (T + 1).to_string(), ..headers.clone() };
        assert_eq!(check(&[secret(1)], &moved, BODY, T), Err(WebhookError::SignatureMismatch));

        let renamed = SignedHeaders { id: "msg_other".into(), ..headers.clone() };
        assert_eq!(check(&[secret(1)], &renamed, BODY, T), Err(WebhookError::SignatureMismatch));

        assert_eq!(check(&[secret(2)], &headers, BODY, T), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn during_rotation_both_old_and_new_secrets_verify() {
        let (new, old) = (secret(1), secret(2));
        let headers = sign(&[new.clone(), old.clone()], ID, T, BODY).unwrap();
        assert_eq!(headers.signature.split(' ').count(), 2);
        assert!(headers.signature.split(' ').all(|s| s.starts_with("v1,")));
        assert_eq!(check(&[new], &headers, BODY, T), Ok(T));
        assert_eq!(check(&[old], &headers, BODY, T), Ok(T));
        assert_eq!(check(&[secret(3)], &headers, BODY, T), Err(WebhookError::SignatureMismatch));
        // A receiver mid-rotation holds both; one signed with only the new one still passes.
        let only_new = sign(&[secret(1)], ID, T, BODY).unwrap();
        assert_eq!(check(&[secret(2), secret(1)], &only_new, BODY, T), Ok(T));
    }

    #[test]
    fn unknown_schemes_are_ignored_and_a_header_without_v1_is_malformed() {
        let mut headers = sign(&[secret(1)], ID, T, BODY).unwrap();
        let v1 = headers.signature.clone();
        headers.signature = format!("v1a,aGVsbG8= v2,xyz   {v1} v1,bm90MzJieXRlcw==");
        assert_eq!(check(&[secret(1)], &headers, BODY, T), Ok(T));
        for only_garbage in ["", "v1a,aGVsbG8=", "v1,", "v1,bm90MzJieXRlcw==", v1.trim_start_matches("v1,")] {
            headers.signature = only_garbage.to_owned();
            assert_eq!(check(&[secret(1)], &headers, BODY, T), Err(WebhookError::SignatureMalformed));
        }
    }

    #[test]
    fn the_timestamp_window_is_five_minutes_each_way_edges_included() {
        let headers = sign(&[secret(1)], ID, T, BODY).unwrap();
        assert_eq!(check(&[secret(1)], &headers, BODY, T + 300), Ok(T));
        assert_eq!(check(&[secret(1)], &headers, BODY, T - 300), Ok(T));
        assert_eq!(check(&[secret(1)], &headers, BODY, T + 301), Err(WebhookError::TimestampTooOld));
        assert_eq!(check(&[secret(1)], &headers, BODY, T - 301), Err(WebhookError::TimestampInFuture));
        let wider = verify(&[secret(1)], |n| headers.get(n), BODY, T + 3600, 3600);
        assert_eq!(wider.map(|v| v.timestamp), Ok(T));
    }

    #[test]
    fn a_forged_old_request_learns_only_that_its_signature_is_wrong() {
        let headers = sign(&[secret(2)], ID, T, BODY).unwrap();
        assert_eq!(check(&[secret(1)], &headers, BODY, T + 10_000), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn each_missing_header_is_named() {
        let headers = sign(&[secret(1)], ID, T, BODY).unwrap();
        for missing in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let lookup = |n: &str| if n == missing { None } else { headers.get(n) };
            let err = verify(&[secret(1)], lookup, BODY, T, DEFAULT_TOLERANCE_SECS).unwrap_err();
            assert_eq!(err, WebhookError::SignatureMissing { header: missing });
            assert_eq!(err.code(), "signature_missing");
        }
    }

    #[test]
    fn a_timestamp_that_is_not_plain_digits_is_malformed() {
        let headers = sign(&[secret(1)], ID, T, BODY).unwrap();
        let odd = SignedHeaders { timestamp: format!("+{T}"), ..headers };
        assert_eq!(check(&[secret(1)], &odd, BODY, T), Err(WebhookError::SignatureMalformed));
    }

    #[test]
    fn ids_that_could_shift_the_signed_content_are_refused_both_ways() {
        for bad in ["", "msg.1", "msg 1", "msg\n1", "msé", &"x".repeat(MAX_ID_LEN + 1)] {
            assert_eq!(sign(&[secret(1)], bad, T, BODY), Err(WebhookError::IdInvalid), "{bad:?}");
        }
        let headers = sign(&[secret(1)], ID, T, BODY).unwrap();
        let dotted = SignedHeaders { id: "msg.1".into(), ..headers };
        assert_eq!(check(&[secret(1)], &dotted, BODY, T), Err(WebhookError::IdInvalid));
    }

    #[test]
    fn signing_or_verifying_without_a_secret_is_a_secret_error() {
        assert_eq!(sign(&[], ID, T, BODY), Err(WebhookError::SecretInvalid));
        let headers = sign(&[secret(1)], ID, T, BODY).unwrap();
        assert_eq!(check(&[], &headers, BODY, T), Err(WebhookError::SecretInvalid));
    }
}
