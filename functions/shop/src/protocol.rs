//! What the shop records ([`Event`]) and how it refuses ([`ErrorCode`], [`ApiError`]).
//!
//! Every refusal is `{"error": {"code", "message", ...details}}` with an HTTP status chosen in
//! one place, [`ErrorCode::status`]. Codes are stable: clients match on them; never rename one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cart::{Coupon, QuoteError};
use crate::catalog::{ProductDef, StockAlert};
use crate::deals::{DealStart, FlashDeal};
use crate::idempotency::{IdempotencyRecord, StoredResponse};
use crate::ids::{CouponCode, DealId, DeliveryId, EndpointId, Millis, OrderId, ProductId, Sku};
use crate::money::{Money, MoneyError};
use crate::orders::{Order, PaymentState, TransitionError};
use crate::outbox::{Endpoint, WebhookEvent};
use crate::state::Settings;

/// Stable error codes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    // The request itself.
    MalformedJson,
    InvalidArgument,
    PayloadTooLarge,
    NotFound,
    // Who may do it.
    Unauthenticated,
    Forbidden,
    // Catalog and money.
    UnknownSku,
    InvalidQuantity,
    InvalidPrice,
    UnknownCurrency,
    CurrencyMismatch,
    CurrencyLocked,
    AmountTooLarge,
    // Carts and checkout.
    PriceMismatch,
    OutOfStock,
    BuyerLimitExceeded,
    CartEmpty,
    CartFull,
    CouponInvalid,
    /// Too many wrong coupon codes from this buyer or address; `retry_after` says when to retry.
    CouponAttemptsExceeded,
    /// A deal for verified buyers only, and the buyer is a guest (a token from `POST /guest`).
    VerifiedBuyerRequired,
    HandoffNotConfigured,
    ReservationExpired,
    PaymentFailed,
    OrderCancelled,
    // Idempotency keys.
    IdempotencyKeyMissing,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    IdempotencyKeyInFlight,
    // Orders.
    InvalidTransition,
    RefundExceedsPaid,
    // Deals.
    DealOverlap,
    // Merchant updates and webhooks.
    DuplicateEvent,
    EndpointDisabled,
    TooManyEndpoints,
    EndpointNotAllowed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The HTTP status of a refusal with this code.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MalformedJson
            | InvalidArgument
            | InvalidQuantity
            | InvalidPrice
            | UnknownCurrency
            | IdempotencyKeyMissing
            | IdempotencyKeyInvalid
            | EndpointNotAllowed => 400,
            Unauthenticated => 401,
            PaymentFailed => 402,
            Forbidden | VerifiedBuyerRequired => 403,
            NotFound | UnknownSku => 404,
            PriceMismatch
            | OutOfStock
            | ReservationExpired
            | OrderCancelled
            | IdempotencyKeyInFlight
            | InvalidTransition
            | DealOverlap
            | DuplicateEvent
            | EndpointDisabled
            | CurrencyLocked
            | HandoffNotConfigured => 409,
            PayloadTooLarge => 413,
            CouponAttemptsExceeded => 429,
            CurrencyMismatch | AmountTooLarge | BuyerLimitExceeded | CartEmpty | CartFull | CouponInvalid
            | IdempotencyKeyReused | RefundExceedsPaid | TooManyEndpoints => 422,
        }
    }
}

/// A request refused: a code, a human-readable message, and details a client may use
/// (`sku`, `available`, `order_id`, ...). On a refusal nothing durable has changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: BTreeMap<String, Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), details: BTreeMap::new() }
    }

    /// Adds a detail to the error object.
    pub fn with(mut self, key: &str, value: impl Serialize) -> ApiError {
        self.details.insert(key.to_string(), serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// `{"error": {"code", "message", ...details}}`.
    pub fn body(&self) -> String {
        let mut error = serde_json::Map::new();
        error.insert("code".into(), Value::from(self.code.as_str()));
        error.insert("message".into(), Value::from(self.message.clone()));
        for (k, v) in &self.details {
            error.insert(k.clone(), v.clone());
        }
        to_json(&serde_json::json!({ "error": error }))
    }
}

impl From<MoneyError> for ApiError {
    fn from(e: MoneyError) -> ApiError {
        let code = match e {
            MoneyError::UnknownCurrency(_) => ErrorCode::UnknownCurrency,
            MoneyError::CurrencyMismatch { .. } => ErrorCode::CurrencyMismatch,
            MoneyError::Overflow => ErrorCode::AmountTooLarge,
            MoneyError::NothingToSplit(_) | MoneyError::Negative | MoneyError::BadAmount(_) => {
                ErrorCode::InvalidArgument
            }
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<QuoteError> for ApiError {
    fn from(e: QuoteError) -> ApiError {
        match e {
            QuoteError::UnknownSku(sku) => {
                ApiError::new(ErrorCode::UnknownSku, format!("no such SKU {sku}")).with("sku", sku)
            }
            QuoteError::Money(m) => m.into(),
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> ApiError {
        let code = match e {
            TransitionError::RefundTooLarge { .. } => ErrorCode::RefundExceedsPaid,
            _ => ErrorCode::InvalidTransition,
        };
        ApiError::new(code, e.to_string())
    }
}

/// Everything that changes the shop. Every event is durable: it takes the next `seq`, is
/// appended to the log, and changes state only through [`crate::state::ShopState::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames)]
#[serde(tag = "type")]
pub enum Event {
    #[serde(rename = "settings.changed")]
    #[strum(serialize = "settings.changed")]
    SettingsChanged { settings: Settings },
    #[serde(rename = "product.upserted")]
    #[strum(serialize = "product.upserted")]
    ProductUpserted { product: ProductDef },
    #[serde(rename = "product.archived")]
    #[strum(serialize = "product.archived")]
    ProductArchived { product_id: ProductId },
    #[serde(rename = "stock.set")]
    #[strum(serialize = "stock.set")]
    StockSet { sku: Sku, on_hand: u32 },
    #[serde(rename = "stock.adjusted")]
    #[strum(serialize = "stock.adjusted")]
    StockAdjusted { sku: Sku, delta: i64 },
    #[serde(rename = "price.changed")]
    #[strum(serialize = "price.changed")]
    PriceChanged { sku: Sku, price: Money },
    /// A merchant update with this event id was applied (the events it made precede this one).
    #[serde(rename = "inbound.applied")]
    #[strum(serialize = "inbound.applied")]
    InboundApplied { event_id: String },
    #[serde(rename = "coupon.set")]
    #[strum(serialize = "coupon.set")]
    CouponSet { coupon: Coupon },
    #[serde(rename = "coupon.removed")]
    #[strum(serialize = "coupon.removed")]
    CouponRemoved { code: CouponCode },
    /// A buyer's cart line now has `quantity` units (0 removes it).
    #[serde(rename = "cart.line_set")]
    #[strum(serialize = "cart.line_set")]
    CartLineSet {
        buyer: String,
        sku: Sku,
        quantity: u32,
        /// The show whose page the buyer used, for its measures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        show: Option<String>,
        /// Filled on the show's replay: deals kept on for replays price it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        replay: bool,
    },
    #[serde(rename = "cart.coupon_set")]
    #[strum(serialize = "cart.coupon_set")]
    CartCouponSet { buyer: String, code: Option<CouponCode> },
    #[serde(rename = "deal.created")]
    #[strum(serialize = "deal.created")]
    DealCreated { deal: FlashDeal },
    #[serde(rename = "deal.started")]
    #[strum(serialize = "deal.started")]
    DealStarted { deal_id: DealId, start: DealStart },
    #[serde(rename = "deal.ended")]
    #[strum(serialize = "deal.ended")]
    DealEnded { deal_id: DealId },
    /// A checkout: the order with its lines and totals, its stock reserved, the cart emptied.
    #[serde(rename = "order.created")]
    #[strum(serialize = "order.created")]
    OrderCreated { order: Box<Order> },
    /// The order's reservation is given back (it expired).
    #[serde(rename = "order.stock_released")]
    #[strum(serialize = "order.stock_released")]
    StockReleased { order_id: OrderId, reason: String },
    /// The payment moved; settling commits the stock, failing or cancelling releases it.
    #[serde(rename = "order.payment_changed")]
    #[strum(serialize = "order.payment_changed")]
    PaymentChanged {
        order_id: OrderId,
        to: PaymentState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action_url: Option<String>,
    },
    #[serde(rename = "order.fulfilled")]
    #[strum(serialize = "order.fulfilled")]
    OrderFulfilled { order_id: OrderId },
    /// Fulfilling a manually captured order asked the provider to capture its authorized charge
    /// (the next attempt, with its own key).
    #[serde(rename = "order.capture_requested")]
    #[strum(serialize = "order.capture_requested")]
    CaptureRequested { order_id: OrderId },
    /// The provider refused the capture: the order stays authorized, with the reason.
    #[serde(rename = "order.capture_failed")]
    #[strum(serialize = "order.capture_failed")]
    CaptureFailed { order_id: OrderId, reason: String },
    #[serde(rename = "order.refunded")]
    #[strum(serialize = "order.refunded")]
    OrderRefunded {
        order_id: OrderId,
        amount: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A SKU's available stock crossed into another alert level.
    #[serde(rename = "inventory.alert")]
    #[strum(serialize = "inventory.alert")]
    InventoryAlert { sku: Sku, alert: StockAlert, available: u32 },
    #[serde(rename = "idempotency.started")]
    #[strum(serialize = "idempotency.started")]
    IdempotencyStarted { buyer: String, key: String, record: IdempotencyRecord },
    #[serde(rename = "idempotency.completed")]
    #[strum(serialize = "idempotency.completed")]
    IdempotencyCompleted { buyer: String, key: String, response: StoredResponse },
    /// Housekeeping: idempotency keys and merchant event ids first seen, and deals ended, before
    /// these times are forgotten.
    #[serde(rename = "forgotten")]
    #[strum(serialize = "forgotten")]
    Forgotten { idempotency_before: Millis, inbound_before: Millis, deals_before: Millis },
    /// A webhook event to deliver to every endpoint that wants it.
    #[serde(rename = "webhook.queued")]
    #[strum(serialize = "webhook.queued")]
    WebhookQueued { webhook: WebhookEvent },
    #[serde(rename = "endpoint.saved")]
    #[strum(serialize = "endpoint.saved")]
    EndpointSaved { endpoint: Endpoint },
    #[serde(rename = "endpoint.removed")]
    #[strum(serialize = "endpoint.removed")]
    EndpointRemoved { endpoint_id: EndpointId },
    /// A delivery was answered `410 Gone`: the endpoint is disabled.
    #[serde(rename = "endpoint.gone")]
    #[strum(serialize = "endpoint.gone")]
    EndpointGone { endpoint_id: EndpointId, delivery_id: DeliveryId },
    #[serde(rename = "delivery.succeeded")]
    #[strum(serialize = "delivery.succeeded")]
    DeliverySucceeded { delivery_id: DeliveryId, status: u16 },
    /// A delivery attempt failed; `next_attempt_at: None` makes it a dead letter.
    #[serde(rename = "delivery.failed")]
    #[strum(serialize = "delivery.failed")]
    DeliveryFailed { delivery_id: DeliveryId, status: Option<u16>, next_attempt_at: Option<Millis> },
    #[serde(rename = "delivery.replayed")]
    #[strum(serialize = "delivery.replayed")]
    DeliveryReplayed { delivery_id: DeliveryId },
}

impl Event {
    pub fn name(&self) -> &'static str {
        self.into()
    }
}

pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Our own types always serialize: string keys, no floats, no foreign Serialize impls.
    serde_json::to_string(value).expect("shop types serialize")
}
