//! # liveshop-payments: payment providers, sans-IO
//!
//! A shop asks for payments as effects ([`PaymentRequest`]: charge, capture, cancel, refund, each
//! with an idempotency key) and takes the provider's answers back as [`PaymentOutcome`]s. Between
//! the two sits the host, which owns the network and the storage. This crate is everything in
//! between that is not IO, so the edge node (reqwest) and the Cloudflare Worker (`fetch`) carry
//! out a payment by the same rules: which HTTP calls to make, with which form and headers, and
//! what each answer means.
//!
//! ```text
//!  shop --PaymentRequest--> host: stripe::Operation::start(config, shop, req, known intent)
//!                                  |  Step::Send(Call)  --HTTP-->  Stripe
//!                                  |  op.receive(Response) <------+
//!                                  v  Step::Done { remember, result }
//!  shop <--PaymentOutcomes--- host (remembers the intent for the order, then reports)
//!  shop <--PaymentOutcome---- host <-- stripe::stripe_webhook(Stripe-Signature'd POST)
//! ```
//!
//! The run loop of every host, against any HTTP client:
//!
//! ```
//! use liveshop_payments::stripe::{Operation, Response, Step, StripeConfig};
//! use liveshop_shop::{Capture, Currency, Money, OrderId, PaymentKind, PaymentOutcome, PaymentRequest};
//!
//! let config = StripeConfig::new("sk_test_123");
//! let req = PaymentRequest {
//!     order: OrderId(1), kind: PaymentKind::Charge, amount: Money::new(1999, Currency::Eur),
//!     idempotency_key: "7-ord1".into(), method: Some("tok_visa".into()), capture: Capture::Automatic,
//! };
//! let (mut op, mut step) = Operation::start(&config, "shop-a", &req, None); // no intent known yet
//! let done = loop {
//!     match step {
//!         Step::Send(call) => {
//!             assert_eq!(call.header("idempotency-key"), Some("shop-a/7-ord1"));
//!             // ... send `call` (method, url, headers, body) and read the answer:
//!             let answer = br#"{"id": "pi_1", "status": "succeeded"}"#.to_vec();
//!             step = op.receive(Response { status: 200, should_retry: None, body: answer });
//!         }
//!         Step::Done(done) => break done,
//!     }
//! };
//! assert_eq!(done.remember.as_deref(), Some("pi_1")); // store it for the order, then report:
//! assert_eq!(done.result.unwrap(), [PaymentOutcome::Paid]);
//! ```
//!
//! A transport failure (no answer at all) is [`PaymentError::ProviderUnavailable`]: the host
//! reports it without calling `receive`, and repeats the whole request later ([`RETRY_WAITS_MS`]);
//! the idempotency key makes that safe.
//!
//! # What a result promises
//!
//! - `Ok(outcomes)`: the provider answered. For a charge, a definitive refusal (a declined card,
//!   a request the provider will not take, an amount Stripe cannot express) is a
//!   [`PaymentOutcome::Failed`], so the shop can release the stock and tell the buyer. A capture
//!   answers `Paid` (also when it was captured already) or `Failed`, after which the shop keeps the
//!   order authorized. Cancels and refunds answer `Ok(vec![])` when done.
//! - `Err(e)` with [`PaymentError::retryable`]: nothing definite happened (network, timeout, 5xx,
//!   429, a concurrent request under the same key). Repeat the same request later.
//! - `Err(e)` otherwise: repeating it will not help (a cancel or refund the provider refused, a
//!   key reused with other parameters, an answer we could not read). Log it with
//!   [`PaymentError::code`] for the operator; for a charge, money may have moved, so do not report
//!   it as failed.
//!
//! Why a crate of its own: the shop core stays provider-agnostic (it never sees a secret key or a
//! provider's JSON), and `liveshop-webhooks` only signs and verifies; the provider's protocol sits
//! between them and needs both.

use liveshop_shop::{Currency, Money};
pub use liveshop_shop::{PaymentOutcome, PaymentRequest};

pub mod stripe;

/// Waits between attempts at an unreachable provider, in milliseconds; after the last the
/// request stays pending until the shop asks again (when it revives).
pub const RETRY_WAITS_MS: [u64; 5] = [500, 2_000, 5_000, 15_000, 60_000];

/// Carries out one payment request the way every host does: `attempt` makes the call (the test
/// provider's answer, or a whole `stripe::Operation`); while it fails in a way worth repeating,
/// it is repeated after each wait of [`RETRY_WAITS_MS`], which the host's `sleep` takes (so this
/// crate needs no runtime). The last retryable error is returned once the waits run out: the
/// request stays pending and the shop asks again when it revives. Any other error at once.
pub async fn drive<A, S>(
    mut attempt: impl FnMut() -> A,
    mut sleep: impl FnMut(u64, &PaymentError) -> S,
) -> Result<Vec<PaymentOutcome>, PaymentError>
where
    A: std::future::Future<Output = Result<Vec<PaymentOutcome>, PaymentError>>,
    S: std::future::Future<Output = ()>,
{
    let mut waits = RETRY_WAITS_MS.iter();
    loop {
        match attempt().await {
            Err(e) if e.retryable() => match waits.next() {
                Some(ms) => sleep(*ms, &e).await,
                None => return Err(e),
            },
            done => return done,
        }
    }
}

/// Why a payment call or a provider webhook did not go through. Each has a stable
/// [`code`](PaymentError::code) for logs and HTTP answers.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// Nothing definite happened: try again later with the same request.
    #[error("payment provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// The provider refused the request and says repeating it would not help.
    #[error("payment provider refused the request ({status}, {code}): {message}")]
    ProviderRejected { status: u16, code: String, message: String },
    /// A success status with a body we cannot read: the request may have taken effect.
    #[error("payment provider answered with something unreadable: {0}")]
    MalformedResponse(String),
    /// A capture, cancel or refund for an order whose charge we never saw reach the provider.
    #[error("no payment intent is known for order {order} of shop {shop}")]
    IntentUnknown { shop: String, order: u64 },
    /// The provider cannot take this currency at all.
    #[error("{0} cannot be charged through this provider")]
    CurrencyUnsupported(Currency),
    /// The provider cannot take this amount in this currency (see [`stripe::stripe_amount`]).
    #[error("{0} cannot be expressed as this provider requires")]
    AmountUnsupported(Money),
    /// The host's own storage failed.
    #[error("payment storage: {0}")]
    Storage(String),
    /// An inbound webhook arrived, but no webhook secret is configured to check it with.
    #[error("no webhook secret is configured for this provider")]
    WebhookNotConfigured,
    /// The webhook's signature header is missing, malformed, wrong or too old.
    #[error("webhook signature refused: {0}")]
    BadSignature(#[from] liveshop_webhooks::WebhookError),
    /// A correctly signed webhook whose body is not the event we expect.
    #[error("webhook event unreadable: {0}")]
    MalformedEvent(String),
}

impl PaymentError {
    pub fn code(&self) -> &'static str {
        match self {
            PaymentError::ProviderUnavailable(_) => "provider_unavailable",
            PaymentError::ProviderRejected { .. } => "provider_rejected",
            PaymentError::MalformedResponse(_) => "provider_malformed_response",
            PaymentError::IntentUnknown { .. } => "intent_unknown",
            PaymentError::CurrencyUnsupported(_) => "currency_unsupported",
            PaymentError::AmountUnsupported(_) => "amount_unsupported",
            PaymentError::Storage(_) => "storage_failed",
            PaymentError::WebhookNotConfigured => "webhook_not_configured",
            PaymentError::BadSignature(_) => "bad_signature",
            PaymentError::MalformedEvent(_) => "malformed_event",
        }
    }

    /// Whether repeating the same request later may succeed. Storage failures count: the
    /// provider call is idempotent, so redoing it once the disk is back is safe.
    pub fn retryable(&self) -> bool {
        matches!(self, PaymentError::ProviderUnavailable(_) | PaymentError::Storage(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls a future that never waits on anything (the test's attempts and sleeps are ready).
    fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("nothing here waits"),
        }
    }

    #[test]
    fn drive_repeats_what_may_succeed_on_schedule_and_stops_at_what_cannot() {
        let unavailable = || PaymentError::ProviderUnavailable("down".into());
        // Down twice, then paid: two waits, the schedule's first two.
        let (mut calls, mut slept) = (0, Vec::new());
        let paid = ready(drive(
            || {
                calls += 1;
                std::future::ready(if calls <= 2 {
                    Err(unavailable())
                } else {
                    Ok(vec![PaymentOutcome::Paid])
                })
            },
            |ms, _| {
                slept.push(ms);
                std::future::ready(())
            },
        ));
        assert_eq!(paid.unwrap(), [PaymentOutcome::Paid]);
        assert_eq!(slept, RETRY_WAITS_MS[..2]);
        // Always down: every wait, then the last error (the request stays pending).
        let mut slept = Vec::new();
        let gave_up = ready(drive(
            || std::future::ready(Err(unavailable())),
            |ms, _| {
                slept.push(ms);
                std::future::ready(())
            },
        ));
        assert_eq!(gave_up.unwrap_err().code(), "provider_unavailable");
        assert_eq!(slept, RETRY_WAITS_MS);
        // Refused: no repeat at all.
        let mut calls = 0;
        let refused = ready(drive(
            || {
                calls += 1;
                std::future::ready(Err(PaymentError::MalformedResponse("?".into())))
            },
            |_, _| std::future::ready(()),
        ));
        assert_eq!((refused.unwrap_err().code(), calls), ("provider_malformed_response", 1));
    }

    #[test]
    fn every_error_has_its_own_code_and_only_transient_ones_are_retryable() {
        let all = [
            PaymentError::ProviderUnavailable("timeout".into()),
            PaymentError::ProviderRejected { status: 400, code: "x".into(), message: "y".into() },
            PaymentError::MalformedResponse("z".into()),
            PaymentError::IntentUnknown { shop: "s".into(), order: 1 },
            PaymentError::CurrencyUnsupported(Currency::Iqd),
            PaymentError::AmountUnsupported(Money::new(1, Currency::Kwd)),
            PaymentError::Storage("disk".into()),
            PaymentError::WebhookNotConfigured,
            PaymentError::BadSignature(liveshop_webhooks::WebhookError::SignatureMismatch),
            PaymentError::MalformedEvent("e".into()),
        ];
        let mut codes: Vec<_> = all.iter().map(PaymentError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        let retryable: Vec<_> = all.iter().filter(|e| e.retryable()).map(PaymentError::code).collect();
        assert_eq!(retryable, ["provider_unavailable", "storage_failed"]);
    }
}
