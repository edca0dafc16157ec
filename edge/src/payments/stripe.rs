//! Stripe PaymentIntents on the edge node: the sans-IO adapter of
//! [`liveshop_payments::stripe`] (which calls, which answers, which outcomes; read its docs for
//! the rules) carried out over reqwest, with each order's intent kept in the node's SQLite
//! ([`IntentStore`]) so a cancel or refund after a restart still finds it.
//!
//! Tested in `edge/tests/stripe.rs` against a local HTTP server that answers as Stripe's API
//! reference documents, not against Stripe itself.

pub use liveshop_payments::stripe::{
    API_BASE, API_VERSION, StripeConfig, StripeResult, stripe_amount, stripe_webhook,
};
use liveshop_payments::stripe::{Call, Response, carry_out, check_intent_id};
use liveshop_shop::{OrderId, PaymentOutcome, PaymentRequest};
use serde::Deserialize;

use super::PaymentError;
use crate::sqlite::Db;

const INTENT_RECORD: &str = "stripe_intent";

/// Which PaymentIntent each order's charge created, kept in the node's SQLite so a cancel or a
/// refund after a restart still finds it. The first intent recorded for an order stays.
#[derive(Clone)]
pub struct IntentStore {
    db: Db,
}

#[derive(serde::Serialize, Deserialize)]
struct IntentRecord {
    intent: String,
}

impl IntentStore {
    pub fn new(db: Db) -> Self {
        IntentStore { db }
    }

    /// Records `intent` as the charge of `order` in `shop`.
    pub fn remember(&self, shop: &str, order: OrderId, intent: &str) -> Result<(), PaymentError> {
        check_intent_id(intent)?;
        let body = serde_json::to_string(&IntentRecord { intent: intent.to_string() })
            .expect("a struct of one string always serializes");
        if !self.db.insert_record(INTENT_RECORD, &record_id(shop, order), &body)? {
            let known = self.intent(shop, order)?;
            if known.as_deref() != Some(intent) {
                // Only if a repeat came after Stripe forgot the key (24 h): two charges for one order.
                tracing::warn!(shop, %order, ?known, intent, "a second PaymentIntent for one order; keeping the first");
            }
        }
        Ok(())
    }

    /// The intent recorded for `order` in `shop`, if any.
    pub fn intent(&self, shop: &str, order: OrderId) -> Result<Option<String>, PaymentError> {
        let Some(body) = self.db.record(INTENT_RECORD, &record_id(shop, order))? else { return Ok(None) };
        let record: IntentRecord = serde_json::from_str(&body)
            .map_err(|e| PaymentError::MalformedResponse(format!("stored intent record: {e}")))?;
        Ok(Some(record.intent))
    }
}

fn record_id(shop: &str, order: OrderId) -> String {
    format!("{shop}/{order}")
}

/// The Stripe provider: a configuration, where intents are remembered, and an HTTP client.
#[derive(Clone)]
pub struct Stripe {
    config: StripeConfig,
    intents: IntentStore,
    client: reqwest::Client,
}

impl Stripe {
    pub fn new(config: StripeConfig, intents: IntentStore, client: reqwest::Client) -> Self {
        Stripe { config, intents, client }
    }

    pub fn config(&self) -> &StripeConfig {
        &self.config
    }

    /// Carries out `req` for `shop`: the adapter's calls, then its intent recorded, then its
    /// outcomes.
    pub(super) async fn execute(
        &self,
        shop: &str,
        req: &PaymentRequest,
    ) -> Result<Vec<PaymentOutcome>, PaymentError> {
        let known = self.intents.intent(shop, req.order)?;
        let done = carry_out(&self.config, shop, req, known.as_deref(), |call| self.send(call)).await?;
        if let Some(intent) = &done.remember {
            self.intents.remember(shop, req.order, intent)?;
        }
        done.result
    }

    /// [`stripe_webhook`] with this provider's config, remembering the intent it reports.
    pub fn receive_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
        now_secs: u64,
    ) -> Result<Option<StripeResult>, PaymentError> {
        let result = stripe_webhook(&self.config, headers, body, now_secs)?;
        if let Some(r) = &result {
            self.intents.remember(&r.shop, r.order, &r.intent)?;
        }
        Ok(result)
    }

    /// One call; no answer at all (network, timeout) is [`PaymentError::ProviderUnavailable`].
    async fn send(&self, call: Call) -> Result<Response, PaymentError> {
        let unavailable = |e: reqwest::Error| PaymentError::ProviderUnavailable(e.to_string());
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).expect("GET or POST");
        let mut request = self.client.request(method, &call.url);
        for (name, value) in call.headers {
            request = request.header(name, value);
        }
        if let Some(body) = call.body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(unavailable)?;
        let status = response.status().as_u16();
        let should_retry = Response::should_retry(
            response.headers().get("stripe-should-retry").and_then(|v| v.to_str().ok()),
        );
        let body = response.bytes().await.map_err(unavailable)?.to_vec();
        Ok(Response { status, should_retry, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_ids_are_kept_per_shop_and_order_and_the_first_stays() {
        let store = IntentStore::new(Db::in_memory().unwrap());
        store.remember("a", OrderId(1), "pi_first").unwrap();
        store.remember("a", OrderId(1), "pi_second").unwrap();
        store.remember("b", OrderId(1), "pi_other_shop").unwrap();
        assert_eq!(store.intent("a", OrderId(1)).unwrap().as_deref(), Some("pi_first"));
        assert_eq!(store.intent("b", OrderId(1)).unwrap().as_deref(), Some("pi_other_shop"));
        assert_eq!(store.intent("a", OrderId(2)).unwrap(), None);
        // Ids end up in URL paths.
        assert_eq!(
            store.remember("a", OrderId(3), "pi_1/../x").unwrap_err().code(),
            "provider_malformed_response"
        );
    }
}
