//! The payment providers on the host side: where a shop's [`PaymentRequest`]s go and where the
//! provider's answers come back from.
//!
//! The shop core never talks to a provider (see `liveshop_shop::payment`). It emits a request
//! (charge, capture, cancel, refund) with an idempotency key; the edge node carries it out with
//! [`Provider::execute`], at least once, and feeds the [`PaymentOutcome`]s back to the shop.
//! Later news about a charge (3-D Secure finished, an asynchronous payment settled) arrives as a
//! provider webhook, which [`stripe_webhook`] verifies and turns into the same outcomes.
//!
//! ```text
//!  shop actor --PaymentRequest--> Provider::execute --Test-----> test_provider::respond
//!      ^                                 |          \--Stripe--> POST /v1/payment_intents, .../capture,
//!      |                                 |                       .../cancel, /v1/refunds (Idempotency-Key)
//!      +------- Vec<PaymentOutcome> -----+
//!      +------- StripeResult <-- stripe_webhook <-- Stripe-Signature'd POST from Stripe
//! ```
//!
//! # What `execute` promises
//!
//! - `Ok(outcomes)`: the provider answered. For a charge, a definitive refusal (a declined card,
//!   a request the provider will not take, an amount Stripe cannot express) is a
//!   [`PaymentOutcome::Failed`], so the shop can release the stock and tell the buyer. A capture
//!   answers `Paid` (also when it was captured already) or `Failed`, after which the shop keeps the
//!   order authorized. Cancels and refunds answer `Ok(vec![])` when done.
//! - `Err(e)` with [`PaymentError::retryable`]: nothing definite happened (network, timeout, 5xx,
//!   429, a concurrent request under the same key). Repeat the same request later; the
//!   idempotency key makes that safe.
//! - `Err(e)` otherwise: repeating it will not help (a cancel or refund the provider refused, a
//!   key reused with other parameters, an answer we could not read). Log it with [`PaymentError::code`]
//!   for the operator; for a charge, money may have moved, so do not report it as failed.
//!
//! The Stripe adapter lives in [`stripe`]. It is tested (`edge/tests/stripe.rs`) against a local
//! HTTP server that answers as Stripe's API reference documents, **not against Stripe**, which
//! cannot be reached from where this was built.

use std::time::Duration;

use liveshop_shop::test_provider;
use liveshop_shop::{PaymentOutcome, PaymentRequest};

pub mod stripe;

pub use stripe::{IntentStore, Stripe, StripeConfig, StripeResult, stripe_webhook};

/// Which provider a shop's in-stream payments go through.
pub enum Provider {
    /// Deterministic outcomes chosen by test card tokens, with no IO: for `liveshop dev` and tests.
    Test,
    Stripe(Stripe),
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::Test => f.write_str("Test"),
            Provider::Stripe(s) => f.debug_tuple("Stripe").field(s.config()).finish(),
        }
    }
}

impl Provider {
    /// Carries out one request for `shop`; returns what the provider said about a charge or a
    /// capture, in order (cancel and refund return an empty Vec on success). See the module
    /// docs for what an `Err` means.
    pub async fn execute(
        &self,
        shop: &str,
        req: &PaymentRequest,
    ) -> Result<Vec<PaymentOutcome>, PaymentError> {
        match self {
            Provider::Test => Ok(test_provider::respond(req)),
            Provider::Stripe(stripe) => stripe.execute(shop, req).await,
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
    CurrencyUnsupported(liveshop_shop::Currency),
    /// The provider cannot take this amount in this currency (see [`stripe::stripe_amount`]).
    #[error("{0} cannot be expressed as this provider requires")]
    AmountUnsupported(liveshop_shop::Money),
    /// The node's own storage failed.
    #[error("payment storage: {0}")]
    Storage(#[from] crate::StorageError),
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

/// A shared outbound HTTP client: rustls on ring with the platform's roots, 5 s to connect and
/// 15 s per request in all (a payment call that takes longer is retried under its key rather than
/// held open), no redirects (an API never legitimately redirects a POST carrying a secret key),
/// and the user agent `liveshop/<version>`.
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .expect("a client with a crypto provider installed and no custom TLS config always builds")
}

/// [`http_client`]'s settings, for a caller that needs other timeouts.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // reqwest is built without a crypto provider of its own; ring is the process-wide one. A
    // second install (another client, the lead's code) fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_backend_rustls()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("liveshop/", env!("CARGO_PKG_VERSION")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use liveshop_shop::{Currency, Money};

    #[test]
    fn every_error_has_its_own_code_and_only_transient_ones_are_retryable() {
        let all = [
            PaymentError::ProviderUnavailable("timeout".into()),
            PaymentError::ProviderRejected { status: 400, code: "x".into(), message: "y".into() },
            PaymentError::MalformedResponse("z".into()),
            PaymentError::IntentUnknown { shop: "s".into(), order: 1 },
            PaymentError::CurrencyUnsupported(Currency::Iqd),
            PaymentError::AmountUnsupported(Money::new(1, Currency::Kwd)),
            PaymentError::Storage(crate::StorageError::Backend("disk".into())),
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

    #[test]
    fn execute_can_run_on_a_spawned_task() {
        // The node spawns one task per payment; a non-Send future would not compile there.
        fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
        let req = PaymentRequest {
            order: liveshop_shop::OrderId(1),
            kind: liveshop_shop::PaymentKind::Charge,
            amount: Money::new(100, Currency::Eur),
            idempotency_key: "k".into(),
            method: None,
            capture: liveshop_shop::Capture::Manual,
        };
        let provider = std::sync::Arc::new(Provider::Test);
        spawnable(async move { provider.execute("shop", &req).await });
    }

    #[test]
    fn the_shared_client_builds_more_than_once() {
        // The second call finds ring installed already and must not panic.
        let _ = http_client();
        let _ = http_client();
    }
}
