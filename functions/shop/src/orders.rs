//! Orders and their three independent state machines: payment, fulfilment and refund. Every
//! transition is checked here ([`Order::check_payment`] and friends) before the event that makes
//! it is logged, and recorded in the order's own append-only `history`.
//!
//! ```text
//! payment:     pending ──┬─▶ requires_action ──┬─▶ authorized ──▶ paid
//!                        │                     │        │
//!                        └──────────┬──────────┴────────┴─▶ failed | cancelled
//! fulfilment:  unfulfilled ──▶ fulfilled            (only once paid)
//! refund:      none ──▶ partial ──▶ refunded        (only once paid; partial may repeat)
//! capture:     (none) ──▶ requested ──┬─▶ captured   (manual capture only, see below)
//!                  ▲                  └─▶ failed ──┐
//!                  └──────────── fulfil again ◀────┘
//! ```
//!
//! An order of a shop that captures on fulfilment (`capture: "on_fulfilment"`) is charged with
//! [`Capture::Manual`]: the provider answers `authorized` and the stock is committed. The
//! merchant's fulfil then asks the provider to capture (the order stays `authorized`, its
//! [`CaptureState`] `requested`); when the provider says `paid` the order is paid and fulfilled
//! in one go. A failed capture leaves it `authorized` with the reason, to fulfil (capture) again
//! or to cancel (which voids the authorization).

use serde::{Deserialize, Serialize};

use crate::cart::Quote;
use crate::ids::{DealId, Millis, OrderId, Sku};
use crate::money::Money;
use crate::payment::Capture;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PaymentState {
    /// Waiting for the provider (in-stream) or the merchant's checkout (hand-off).
    Pending,
    /// The buyer must act (3-D Secure); still waiting for the provider.
    RequiresAction,
    /// The money is secured but not captured yet.
    Authorized,
    Paid,
    Failed,
    Cancelled,
}

impl PaymentState {
    pub fn may_become(self, to: PaymentState) -> bool {
        use PaymentState::*;
        matches!(
            (self, to),
            (Pending, RequiresAction | Authorized | Paid | Failed | Cancelled)
                | (RequiresAction, Authorized | Paid | Failed | Cancelled)
                | (Authorized, Paid | Failed | Cancelled)
        )
    }

    /// Still waiting for the provider or the merchant.
    pub fn is_open(self) -> bool {
        matches!(self, PaymentState::Pending | PaymentState::RequiresAction)
    }

    /// The money is secured: the order's stock is committed.
    pub fn is_settled(self) -> bool {
        matches!(self, PaymentState::Authorized | PaymentState::Paid)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FulfilmentState {
    Unfulfilled,
    Fulfilled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RefundState {
    None,
    Partial,
    Refunded,
}

/// Where the capture of a manually captured charge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CaptureState {
    /// Asked of the provider (at fulfil); not answered yet.
    Requested,
    /// The provider refused it; `payment_reason` says why. The order is still authorized.
    Failed,
    /// The provider took the money: the order is paid.
    Captured,
}

/// What the order holds of the SKUs' stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StockHold {
    /// Counted in `reserved` until `expires_at`; the alarm releases it then.
    Reserved { expires_at: Millis },
    /// Taken from `on_hand`: the payment is authorized or paid.
    Committed,
    /// Given back (expired, failed, cancelled). A late payment re-checks the stock.
    Released,
}

/// How the buyer pays: through the shop's provider in the stream, or on the merchant's own
/// checkout page (the order records where the buyer was sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Checkout {
    InStream { method: String },
    Handoff { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub title: String,
    pub quantity: u32,
    pub unit_price: Money,
    /// The regular price; differs from `unit_price` on a flash deal's line.
    pub regular_unit_price: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal: Option<DealId>,
    /// `unit_price × quantity`.
    pub subtotal: Money,
    /// This line's share of the cart discount (largest remainder).
    pub discount: Money,
    /// This line's share of the tax at its rate (largest remainder); included in `total` when
    /// prices include tax.
    pub tax: Money,
    pub total: Money,
}

/// One entry of an order's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: Millis,
    #[serde(flatten)]
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Created,
    Payment {
        from: PaymentState,
        to: PaymentState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    StockCommitted,
    StockReleased {
        reason: String,
    },
    Fulfilment {
        from: FulfilmentState,
        to: FulfilmentState,
    },
    Capture {
        to: CaptureState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Refund {
        from: RefundState,
        to: RefundState,
        amount: Money,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("order {order}: payment cannot go from {from} to {to}")]
    Payment { order: OrderId, from: PaymentState, to: PaymentState },
    #[error("order {order}: fulfilment cannot go from {from} to {to}")]
    Fulfilment { order: OrderId, from: FulfilmentState, to: FulfilmentState },
    #[error("order {order}: only a paid order is fulfilled or refunded (payment is {payment})")]
    NotPaid { order: OrderId, payment: PaymentState },
    #[error("order {order}: already refunded in full")]
    AlreadyRefunded { order: OrderId },
    #[error("order {order}: a refund of {amount} exceeds the {left} left to refund")]
    RefundTooLarge { order: OrderId, amount: Money, left: Money },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub buyer: String,
    /// The buyer's guest device (guest tokens only): deal caps count per device as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub created_at: Millis,
    /// The show the buyer checked out in, for its measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show: Option<String>,
    /// The cart as priced at checkout: lines, totals, tax and coupon.
    #[serde(flatten)]
    pub priced: Quote,
    pub checkout: Checkout,
    pub payment: PaymentState,
    /// Why the payment failed, the order was cancelled or its last capture failed
    /// (`card_declined`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_reason: Option<String>,
    /// How the charge is captured, fixed at checkout from the shop's `capture` setting.
    #[serde(default, skip_serializing_if = "Capture::is_automatic")]
    pub capture: Capture,
    /// Manual capture: where the capture asked for at fulfil stands; `None` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_state: Option<CaptureState>,
    /// Capture requests made so far; each has its own provider key.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub capture_attempts: u32,
    /// Where the buyer completes a payment that requires action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_url: Option<String>,
    pub fulfilment: FulfilmentState,
    pub refund: RefundState,
    pub refunded: Money,
    pub hold: StockHold,
    /// The key the shop gives its payment provider for this order's charge.
    pub payment_key: String,
    /// The buyer's Idempotency-Key of the checkout that created the order.
    pub idempotency_key: String,
    pub history: Vec<Transition>,
}

impl Order {
    pub fn check_payment(&self, to: PaymentState) -> Result<(), TransitionError> {
        if self.payment.may_become(to) {
            Ok(())
        } else {
            Err(TransitionError::Payment { order: self.id, from: self.payment, to })
        }
    }

    /// Whether fulfilling this order means asking the provider to capture first: an in-stream,
    /// manually captured order that is authorized and not fulfilled.
    pub fn needs_capture(&self) -> bool {
        self.capture == Capture::Manual
            && self.payment == PaymentState::Authorized
            && self.fulfilment == FulfilmentState::Unfulfilled
            && matches!(self.checkout, Checkout::InStream { .. })
    }

    /// The provider key of the current capture attempt: `{payment_key}-capture`, then
    /// `-capture-2`, ... (a failed capture's key would only replay its failure).
    pub fn capture_key(&self) -> String {
        match self.capture_attempts {
            0 | 1 => format!("{}-capture", self.payment_key),
            n => format!("{}-capture-{n}", self.payment_key),
        }
    }

    pub fn check_fulfil(&self) -> Result<(), TransitionError> {
        if self.payment != PaymentState::Paid {
            return Err(TransitionError::NotPaid { order: self.id, payment: self.payment });
        }
        match self.fulfilment {
            FulfilmentState::Unfulfilled => Ok(()),
            from => Err(TransitionError::Fulfilment { order: self.id, from, to: FulfilmentState::Fulfilled }),
        }
    }

    /// Whether anything can be refunded at all: the order is paid and not refunded in full.
    pub fn check_refundable(&self) -> Result<(), TransitionError> {
        if self.payment != PaymentState::Paid {
            return Err(TransitionError::NotPaid { order: self.id, payment: self.payment });
        }
        if self.refund == RefundState::Refunded {
            return Err(TransitionError::AlreadyRefunded { order: self.id });
        }
        Ok(())
    }

    pub fn check_refund(&self, amount: Money) -> Result<(), TransitionError> {
        self.check_refundable()?;
        let left = self.refundable();
        if amount.currency != left.currency || amount.minor <= 0 || amount.minor > left.minor {
            return Err(TransitionError::RefundTooLarge { order: self.id, amount, left });
        }
        Ok(())
    }

    /// What is left to refund.
    pub fn refundable(&self) -> Money {
        Money { minor: self.priced.total.minor - self.refunded.minor, ..self.priced.total }
    }

    /// Units per line, for reserving and releasing stock.
    pub fn units(&self) -> impl Iterator<Item = (&Sku, u32, Option<DealId>)> {
        self.priced.lines.iter().map(|l| (&l.sku, l.quantity, l.deal))
    }

    pub(crate) fn note(&mut self, at: Millis, change: Change) {
        self.history.push(Transition { at, change });
    }

    /// Moves the payment state. Unchecked: the caller checked before logging the event, and
    /// replay must not fail.
    pub(crate) fn set_payment(&mut self, at: Millis, to: PaymentState, reason: Option<String>) {
        let from = self.payment;
        self.payment = to;
        if reason.is_some() {
            self.payment_reason.clone_from(&reason);
        }
        self.note(at, Change::Payment { from, to, reason });
        if to == PaymentState::Paid && self.capture_state.is_some() {
            // Captured at last: an earlier capture's failure no longer explains anything.
            self.capture_state = Some(CaptureState::Captured);
            self.payment_reason = None;
            self.note(at, Change::Capture { to: CaptureState::Captured, reason: None });
        }
    }

    /// Records where the capture stands (see [`CaptureState`]).
    pub(crate) fn set_capture(&mut self, at: Millis, to: CaptureState, reason: Option<String>) {
        if to == CaptureState::Requested {
            self.capture_attempts = self.capture_attempts.saturating_add(1);
        }
        if reason.is_some() {
            self.payment_reason.clone_from(&reason);
        }
        self.capture_state = Some(to);
        self.note(at, Change::Capture { to, reason });
    }

    pub(crate) fn set_fulfilled(&mut self, at: Millis) {
        let from = self.fulfilment;
        self.fulfilment = FulfilmentState::Fulfilled;
        self.note(at, Change::Fulfilment { from, to: FulfilmentState::Fulfilled });
    }

    pub(crate) fn add_refund(&mut self, at: Millis, amount: Money) {
        let from = self.refund;
        self.refunded.minor = self.refunded.minor.saturating_add(amount.minor);
        self.refund = if self.refunded.minor >= self.priced.total.minor {
            RefundState::Refunded
        } else {
            RefundState::Partial
        };
        self.note(at, Change::Refund { from, to: self.refund, amount });
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::PaymentState::*;

    #[test]
    fn payment_moves_forward_only() {
        assert!(Pending.may_become(Paid));
        assert!(RequiresAction.may_become(Authorized));
        assert!(Authorized.may_become(Paid));
        assert!(!Paid.may_become(Cancelled), "a paid order is refunded, not cancelled");
        assert!(!Failed.may_become(Paid));
        assert!(!Cancelled.may_become(Pending));
        assert!(!Authorized.may_become(RequiresAction));
    }
}
