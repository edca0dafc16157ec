//! A payment provider in miniature, for development hosts and tests: the outcome of a charge is
//! chosen by its test token, deterministically, with the names Stripe's test tokens use.
//!
//! | token                                                  | outcomes                           |
//! |--------------------------------------------------------|------------------------------------|
//! | `tok_visa`, `tok_mastercard`, `tok_amex`               | `paid`                             |
//! | `tok_authorizeThenCapture`                             | `authorized`, then `paid`          |
//! | `tok_chargeDeclined`                                   | `failed` (`card_declined`)         |
//! | `tok_insufficientFunds`, `tok_chargeDeclinedInsufficientFunds` | `failed` (`insufficient_funds`) |
//! | `tok_chargeDeclinedExpiredCard`                        | `failed` (`expired_card`)          |
//! | `tok_threeDSecureRequired`                             | `requires_action`, then nothing    |
//! | `tok_pending`                                          | nothing: stays pending             |
//! | anything else                                          | `failed` (`invalid_payment_method`)|
//!
//! ```
//! use liveshop_shop::payment::{PaymentKind, PaymentOutcome, PaymentRequest};
//! use liveshop_shop::{Currency, Money, OrderId, test_provider};
//! let req = PaymentRequest {
//!     order: OrderId(3),
//!     kind: PaymentKind::Charge,
//!     amount: Money::new(1999, Currency::Eur),
//!     idempotency_key: "7-ord3".into(),
//!     method: Some("tok_chargeDeclined".into()),
//! };
//! assert_eq!(test_provider::respond(&req), [PaymentOutcome::Failed { reason: "card_declined".into() }]);
//! ```

use crate::payment::{PaymentKind, PaymentOutcome, PaymentRequest};

pub const TOK_VISA: &str = "tok_visa";
pub const TOK_AUTHORIZE_THEN_CAPTURE: &str = "tok_authorizeThenCapture";
pub const TOK_DECLINED: &str = "tok_chargeDeclined";
pub const TOK_INSUFFICIENT_FUNDS: &str = "tok_insufficientFunds";
pub const TOK_EXPIRED_CARD: &str = "tok_chargeDeclinedExpiredCard";
pub const TOK_3DS: &str = "tok_threeDSecureRequired";
pub const TOK_PENDING: &str = "tok_pending";

/// The callbacks the provider makes for `req`, in order. Cancels and refunds get none.
pub fn respond(req: &PaymentRequest) -> Vec<PaymentOutcome> {
    use PaymentOutcome::*;
    if req.kind != PaymentKind::Charge {
        return Vec::new();
    }
    let failed = |reason: &str| vec![Failed { reason: reason.to_string() }];
    match req.method.as_deref().unwrap_or_default() {
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
