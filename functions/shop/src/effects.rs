//! The shop's effects as a host carries them across an ABI boundary (the `effects` import and
//! `on-effect-result` export of `wit/actor.wit`, or a Durable Object's fetch): a kind name and a
//! JSON body, both ways. One definition, so every host and shell agree on the wire form.

use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, OrderId};
use crate::outbox::DeliveryRequest;
use crate::payment::{PaymentOutcome, PaymentRequest};
use crate::protocol::to_json;
use crate::{Input, Output};

/// Request kind: call the payment provider with a [`PaymentRequest`].
pub const PAYMENT: &str = "payment";
/// Request kind: send a webhook, a [`DeliveryRequest`].
pub const DELIVER: &str = "deliver";
/// Result kind: what the provider said, a [`PaymentResult`] (the same name as the request).
pub const PAYMENT_RESULT: &str = PAYMENT;
/// Result kind: how a webhook attempt went, a [`DeliveryResult`].
pub const DELIVERY_RESULT: &str = "delivery";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentResult {
    pub order: OrderId,
    pub outcome: PaymentOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryResult {
    pub delivery_id: DeliveryId,
    /// The HTTP status, or `None` for a network error or timeout.
    pub status: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    #[error("unknown effect kind {0:?}")]
    UnknownKind(String),
    #[error("malformed {kind} body: {source}")]
    Malformed { kind: &'static str, source: serde_json::Error },
}

impl Output {
    /// `(kind, body)` when this output is an effect that leaves through the host.
    pub fn as_effect(&self) -> Option<(&'static str, String)> {
        match self {
            Output::Payment(req) => Some((PAYMENT, to_json(req))),
            Output::Deliver(req) => Some((DELIVER, to_json(req))),
            _ => None,
        }
    }
}

impl Input {
    /// The input a host's report of an effect's result becomes.
    pub fn from_effect_result(kind: &str, body: &str) -> Result<Input, EffectError> {
        match kind {
            PAYMENT_RESULT => {
                let r: PaymentResult = serde_json::from_str(body)
                    .map_err(|source| EffectError::Malformed { kind: PAYMENT_RESULT, source })?;
                Ok(Input::PaymentResult { order: r.order, outcome: r.outcome })
            }
            DELIVERY_RESULT => {
                let r: DeliveryResult = serde_json::from_str(body)
                    .map_err(|source| EffectError::Malformed { kind: DELIVERY_RESULT, source })?;
                Ok(Input::DeliveryResult { delivery_id: r.delivery_id, status: r.status })
            }
            other => Err(EffectError::UnknownKind(other.to_string())),
        }
    }
}

/// Parses what an `effects.request` carried, for hosts.
pub fn payment_request(body: &str) -> Result<PaymentRequest, EffectError> {
    serde_json::from_str(body).map_err(|source| EffectError::Malformed { kind: PAYMENT, source })
}

/// Parses what an `effects.request` carried, for hosts.
pub fn delivery_request(body: &str) -> Result<DeliveryRequest, EffectError> {
    serde_json::from_str(body).map_err(|source| EffectError::Malformed { kind: DELIVER, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::{Capture, PaymentKind};
    use crate::{Currency, Money};

    #[test]
    fn requests_and_results_round_trip() {
        let req = PaymentRequest {
            order: OrderId(4),
            kind: PaymentKind::Charge,
            amount: Money::new(1999, Currency::Eur),
            idempotency_key: "k".into(),
            method: Some("tok_visa".into()),
            capture: Capture::Manual,
        };
        let (kind, body) = Output::Payment(req.clone()).as_effect().unwrap();
        assert_eq!((kind, payment_request(&body).unwrap()), (PAYMENT, req));
        // Requests from before manual capture read as automatic.
        let old =
            r#"{"order":4,"kind":"charge","amount":{"minor":1,"currency":"EUR"},"idempotency_key":"k"}"#;
        assert_eq!(payment_request(old).unwrap().capture, Capture::Automatic);
        let input =
            Input::from_effect_result("payment", r#"{"order":4,"outcome":{"status":"paid"}}"#).unwrap();
        assert_eq!(input, Input::PaymentResult { order: OrderId(4), outcome: PaymentOutcome::Paid });
        let input = Input::from_effect_result("delivery", r#"{"delivery_id":9,"status":null}"#).unwrap();
        assert_eq!(input, Input::DeliveryResult { delivery_id: DeliveryId(9), status: None });
        assert!(matches!(Input::from_effect_result("refund", "{}"), Err(EffectError::UnknownKind(_))));
        assert!(matches!(Input::from_effect_result("payment", "{"), Err(EffectError::Malformed { .. })));
    }
}
