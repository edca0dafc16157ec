//! Whatever the body, what we sign verifies, and changing any single byte of it does not.

use liveshop_webhooks::{DEFAULT_TOLERANCE_SECS, Secret, WebhookError, liveshop, shopify, standard, stripe};
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000;

/// Every scheme's verdict on `body`, given headers signed over `signed_body`.
fn verdicts(key: [u8; 32], signed_body: &[u8], body: &[u8]) -> [Result<(), WebhookError>; 4] {
    let secret = Secret::generate(key);
    let headers = standard::sign(std::slice::from_ref(&secret), "msg_1", NOW, signed_body).unwrap();
    let standard = standard::verify(
        std::slice::from_ref(&secret),
        |n| headers.get(n),
        body,
        NOW,
        DEFAULT_TOLERANCE_SECS,
    );

    let mac = shopify::sign(&key, signed_body);
    let shopify = shopify::verify(&[key], |n| (n == shopify::HMAC_HEADER).then_some(&*mac), body);

    let stripe_secret = format!("whsec_{}", key.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let sig = stripe::sign(&stripe_secret, NOW, signed_body);
    let lookup = |n: &str| (n == stripe::SIGNATURE_HEADER).then_some(&*sig);
    let stripe = stripe::verify(&[&stripe_secret], lookup, body, NOW, DEFAULT_TOLERANCE_SECS);

    let ours = liveshop::sign(&secret, NOW, signed_body);
    let lookup = |n: &str| (n == liveshop::SIGNATURE_HEADER).then_some(&*ours);
    let liveshop = liveshop::verify(&[secret], lookup, body, NOW, DEFAULT_TOLERANCE_SECS);

    [standard.map(drop), shopify, stripe.map(drop), liveshop.map(drop)]
}

proptest! {
    #[test]
    fn what_we_sign_verifies(key in any::<[u8; 32]>(), body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert_eq!(verdicts(key, &body, &body), [Ok(()), Ok(()), Ok(()), Ok(())]);
    }

    #[test]
    fn any_single_byte_change_is_a_mismatch(
        key in any::<[u8; 32]>(),
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        at in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let mut tampered = body.clone();
        tampered[at.index(body.len())] ^= flip;
        let mismatch = Err(WebhookError::SignatureMismatch);
        prop_assert_eq!(verdicts(key, &body, &tampered), [mismatch; 4]);
    }
}
