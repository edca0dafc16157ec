//! The payment providers on the host side: where a shop's [`PaymentRequest`]s go and where the
//! provider's answers come back from.
//!
//! The shop core never talks to a provider (see `liveshop_shop::payment`). It emits a request
//! (charge, capture, cancel, refund) with an idempotency key; the edge node carries it out with
//! [`Provider::execute`], at least once, and feeds the [`PaymentOutcome`]s back to the shop.
//! Later news about a charge (3-D Secure finished, an asynchronous payment settled) arrives as a
//! provider webhook, which [`stripe_webhook`] verifies and turns into the same outcomes.
//!
//! What to call and what the answers mean is `liveshop_payments` (sans-IO, shared with the
//! Cloudflare Worker); this module is its IO on the edge node: reqwest for the calls, the node's
//! SQLite for the intents.
//!
//! ```text
//!  shop actor --PaymentRequest--> Provider::execute --Test-----> test_provider::respond
//!      ^                                 |          \--Stripe--> POST /v1/payment_intents, .../capture,
//!      |                                 |                       .../cancel, /v1/refunds (Idempotency-Key)
//!      +------- Vec<PaymentOutcome> -----+
//!      +------- StripeResult <-- stripe_webhook <-- Stripe-Signature'd POST from Stripe
//! ```
//!
//! What `execute`'s results promise is written down in `liveshop_payments`.
//!
//! The Stripe adapter lives in [`stripe`]. It is tested (`edge/tests/stripe.rs`) against a local
//! HTTP server that answers as Stripe's API reference documents, **not against Stripe**, which
//! cannot be reached from where this was built.

use std::time::Duration;

pub use liveshop_payments::PaymentError;
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

impl From<crate::StorageError> for PaymentError {
    fn from(e: crate::StorageError) -> Self {
        PaymentError::Storage(e.to_string())
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
