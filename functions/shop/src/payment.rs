//! Payments are effects: the shop never talks to a provider. It asks the host to charge, capture,
//! cancel or refund ([`PaymentRequest`], emitted as [`crate::Output::Payment`]), and the host
//! reports what the provider said about a charge or a capture ([`PaymentOutcome`], fed back as
//! [`crate::Input::PaymentResult`]). [`crate::test_provider`] answers like a provider would, for
//! development and tests.
//!
//! A charge is captured by the provider at once ([`Capture::Automatic`], the default) or only
//! authorized ([`Capture::Manual`], the shop setting `capture: "on_fulfilment"`): the money is
//! held and the order's stock committed, and the shop sends a [`PaymentKind::Capture`] when the
//! merchant fulfils the order.

use serde::{Deserialize, Serialize};

use crate::ids::OrderId;
use crate::money::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// Take `amount` with `method` (a provider token such as `tok_visa`), captured as `capture`
    /// says. Answered by one or more [`PaymentOutcome`]s.
    Charge,
    /// Capture the order's authorized (manual-capture) charge in full, `amount`. Answered like a
    /// charge: [`PaymentOutcome::Paid`] (also when it was captured already), or
    /// [`PaymentOutcome::Failed`] with the reason, after which the order stays authorized. Its
    /// key is `{payment_key}-capture` (`-capture-2`, ... for a retry after a failure).
    Capture,
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
    /// For a charge: whether the provider captures it at once or only authorizes it. Always
    /// `Automatic` for the other kinds.
    #[serde(default, skip_serializing_if = "Capture::is_automatic")]
    pub capture: Capture,
}

/// When the provider takes the money of a charge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capture {
    /// Captured as soon as it is authorized: the charge ends `paid`.
    #[default]
    Automatic,
    /// Authorized only: the charge ends `authorized`, and a [`PaymentKind::Capture`] takes the
    /// money later (at fulfilment).
    Manual,
}

impl Capture {
    pub fn is_automatic(&self) -> bool {
        *self == Capture::Automatic
    }
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
    /// The money is secured; `paid` follows on capture (automatic, or the shop's capture
    /// request).
    Authorized,
    Paid,
    /// `reason` is the provider's decline code: `card_declined`, `insufficient_funds`, ...
    Failed {
        reason: String,
    },
}
