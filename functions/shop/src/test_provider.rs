//! A payment provider in miniature, for development hosts and tests: the outcome of a charge is
//! chosen by its test token, deterministically, with the names Stripe's test tokens use.
//!
//! | token                                                  | outcomes                           |
//! |--------------------------------------------------------|------------------------------------|
//! | `tok_visa`, `tok_mastercard`, `tok_amex`               | `paid` (manual capture: `authorized`) |
//! | `tok_authorizeThenCapture`                             | `authorized`, then `paid` (manual capture: `authorized`) |
//! | `tok_chargeDeclined`                                   | `failed` (`card_declined`)         |
//! | `tok_insufficientFunds`, `tok_chargeDeclinedInsufficientFunds` | `failed` (`insufficient_funds`) |
//! | `tok_chargeDeclinedExpiredCard`                        | `failed` (`expired_card`)          |
//! | `tok_threeDSecureRequired`                             | `requires_action`, then nothing    |
//! | `tok_pending`                                          | nothing: stays pending             |
//! | anything else                                          | `failed` (`invalid_payment_method`)|
//!
//! A charge with [`Capture::Manual`](crate::payment::Capture) stops at `authorized`; a
//! [`PaymentKind::Capture`] then answers `paid`. Cancels and refunds get no answer.
//!
//! ```
//! use liveshop_shop::payment::{Capture, PaymentKind, PaymentOutcome, PaymentRequest};
//! use liveshop_shop::{Currency, Money, OrderId, test_provider};
//! let req = PaymentRequest {
//!     order: OrderId(3),
//!     kind: PaymentKind::Charge,
//!     amount: Money::new(1999, Currency::Eur),
//!     idempotency_key: "7-ord3".into(),
//!     method: Some("tok_chargeDeclined".into()),
//!     capture: Capture::Automatic,
//! };
//! assert_eq!(test_provider::respond(&req), [PaymentOutcome::Failed { reason: "card_declined".into() }]);
//! let manual = PaymentRequest { method: Some("tok_visa".into()), capture: Capture::Manual, ..req.clone() };
//! assert_eq!(test_provider::respond(&manual), [PaymentOutcome::Authorized]);
//! let capture = PaymentRequest { kind: PaymentKind::Capture, method: None, ..req };
//! assert_eq!(test_provider::respond(&capture), [PaymentOutcome::Paid]);
//! ```

use crate::payment::{Capture, PaymentKind, PaymentOutcome, PaymentRequest};

pub const TOK_VISA: &str = "tok_visa";
pub const TOK_AUTHORIZE_THEN_CAPTURE: &str = "tok_authorizeThenCapture";
pub const TOK_DECLINED: &str = "tok_chargeDeclined";
pub const TOK_INSUFFICIENT_FUNDS: &str = "tok_insufficientFunds";
pub const TOK_EXPIRED_CARD: &str = "tok_chargeDeclinedExpiredCard";
pub const TOK_3DS: &str = "tok_threeDSecureRequired";
pub const TOK_PENDING: &str = "tok_pending";

/// The callbacks the provider makes for `req`, in order. Captures are answered `paid`; cancels
/// and refunds get nothing.
pub fn respond(req: &PaymentRequest) -> Vec<PaymentOutcome> {
    use PaymentOutcome::*;
    match req.kind {
        PaymentKind::Charge => {}
        PaymentKind::Capture => return vec![Paid],
        PaymentKind::Cancel | PaymentKind::Refund => return Vec::new(),
    }
    let manual = req.capture == Capture::Manual;
    let failed = |reason: &str| vec![Failed { reason: reason.to_string() }];
    match req.method.as_deref().unwrap_or_default() {
        "tok_visa" | "tok_mastercard" | "tok_amex" | TOK_AUTHORIZE_THEN_CAPTURE if manual => vec![Authorized],
        "tok_visa" | "tok_mastercard" | "tok_amex" => vec![Paid],
        TOK_AUTHORIZE_THEN_CAPTURE => vec![Authorized, Paid],
        TOK_DECLINED => failed("card_declined"),
        TOK_INSUFFICIENT_FUNDS | "tok_chargeDeclinedInsufficientFunds" => failed("insufficient_funds"),
        TOK_EXPIRED_CARD => failed("expired_card"),
        TOK_3DS => {
            let url = format!("https://test-provider.invalid/3ds/{}", req.idempotency_key);
            vec![RequiresAction { url: Some(url) }]
        }
        TOK_PENDING => Vec::new(),
        _ => failed("invalid_payment_method"),
    }
}
