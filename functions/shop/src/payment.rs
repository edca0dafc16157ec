//! Payments are effects: the shop never talks to a provider. It asks the host to charge, cancel
//! or refund ([`PaymentRequest`], emitted as [`crate::Output::Payment`]), and the host reports
//! what the provider said about a charge ([`PaymentOutcome`], fed back as
//! [`crate::Input::PaymentResult`]). [`crate::test_provider`] answers like a provider would, for
//! development and tests.

use serde::{Deserialize, Serialize};

use crate::ids::OrderId;
use crate::money::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// Take `amount` with `method` (a provider token such as `tok_visa`). Answered by one or
    /// more [`PaymentOutcome`]s.
    Charge,
    /// Void the order's pending or authorized charge. Not answered.
    Cancel,
    /// Return `amount` of a captured charge. Not answered: the shop records the refund when the
    /// merchant asks for it, and the host retries the provider call under the same key.
    Refund,
}

/// One call the host must make to the payment provider, at least once, with `idempotency_key`
/// as the provider's idempotency key, so that repeating it never charges twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    pub order: OrderId,
    pub kind: PaymentKind,
    pub amount: Money,
    pub idempotency_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// What the provider said about an order's charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PaymentOutcome {
    /// The buyer must act (3-D Secure) at `url`; another outcome follows.
    RequiresAction {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// The money is secured; `paid` follows on capture.
    Authorized,
    Paid,
    /// `reason` is the provider's decline code: `card_declined`, `insufficient_funds`, ...
    Failed {
        reason: String,
    },
}
