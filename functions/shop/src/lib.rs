//! # liveshop-shop: a merchant's shop, as a sans-IO state machine
//!
//! Everything a viewer buys during a show goes through one shop actor per merchant (or per show
//! for a flash sale): the catalog with stock and price history, carts, flash deals, checkout with
//! idempotency keys and stock reservations, orders with their payment, fulfilment and refund
//! states, and the webhook outbox to the merchant. This crate is the shop's rules and nothing
//! else: it does no IO, reads no clock and spawns nothing. The host (the edge node's wasmtime
//! component, a Cloudflare Durable Object, a Spin component, or a test) owns HTTP, time, storage,
//! the payment provider and the webhook sender:
//!
//! ```text
//!            Input::{Request, PaymentResult, DeliveryResult, Alarm} + now
//!   host  ─────────────────────────────────────────────────────────────▶  Shop
//!         ◀─────────────────────────────────────────────────────────────
//!            Output::{Store, SetAlarm, Reply, Payment, Deliver, Broadcast}
//!
//!   buyer ──HTTP──▶ host ──Request──▶ Shop ──Payment(charge)──▶ host ──▶ provider
//!                                      ▲                                   │
//!                                      └──────── PaymentResult ◀───────────┘
//!                                      Shop ──Deliver(order.paid)──▶ host ──signed POST──▶ merchant
//! ```
//!
//! The run loop of every host:
//!
//! ```
//! use liveshop_shop::{Epoch, Identity, Input, Output, Role, Shop, Write, test_provider};
//!
//! let mut shop = Shop::restore(Vec::new(), Epoch(7)).unwrap(); // nothing stored yet: a new shop
//! let mut store = std::collections::BTreeMap::new();
//! let mut run = |shop: &mut Shop, now, input| {
//!     shop.handle(now, input);
//!     let (mut replies, mut payments) = (Vec::new(), Vec::new());
//!     while let Some(out) = shop.poll_output() {
//!         match out {
//!             Output::Store(Write::Put { key, value }) => { store.insert(key, value); } // commit these first ...
//!             Output::Store(Write::Delete { key }) => { store.remove(&key); }
//!             Output::Reply { status, body, .. } => replies.push((status, body)), // ... then release
//!             Output::Payment(req) => payments.push(req),
//!             Output::SetAlarm(_) | Output::Deliver(_) | Output::Broadcast { .. } => {}
//!         }
//!     }
//!     (replies, payments)
//! };
//! let request = |who: Identity, method: &str, path: &str, headers: &[(&str, &str)], body: &str| Input::Request {
//!     who: Some(who),
//!     method: method.into(),
//!     path: path.into(),
//!     headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
//!     body: body.as_bytes().to_vec(),
//! };
//! let (merchant, ana) = (Identity::new("acme", Role::Merchant), Identity::new("ana", Role::Viewer));
//! let tee = r#"{"title": "Tee", "variants": [{"sku": "TEE-M", "price": {"minor": 1999, "currency": "EUR"}, "stock": 3}]}"#;
//! run(&mut shop, 1_000, request(merchant, "PUT", "/products/tee", &[], tee));
//! run(&mut shop, 2_000, request(ana.clone(), "POST", "/carts/ana/items", &[], r#"{"sku": "TEE-M", "quantity": 2}"#));
//! let checkout = request(ana, "POST", "/checkout", &[("Idempotency-Key", "k1")], r#"{"payment_method": "tok_visa"}"#);
//! let (replies, payments) = run(&mut shop, 3_000, checkout);
//! assert_eq!(replies[0].0, 202); // the order exists, its stock is reserved, the payment is pending
//! assert_eq!(payments[0].amount.minor, 3998);
//! for outcome in test_provider::respond(&payments[0]) {
//!     run(&mut shop, 4_000, Input::PaymentResult { order: payments[0].order, outcome });
//! }
//! let order = &shop.state().orders[&payments[0].order];
//! assert_eq!(order.payment.to_string(), "paid");
//! assert_eq!(shop.state().variants[&"TEE-M".parse().unwrap()].on_hand, 1);
//! ```
//!
//! ## The rules, in short
//!
//! - **Events.** Every durable change is an [`Event`] with the next [`Seq`]; state changes only
//!   in [`state::ShopState::apply`]. Orders also keep their own append-only `history`.
//! - **Persistence.** Stored are `meta` (the epoch), `log/<seq>` (each event) and `snapshot`
//!   (the whole state at some seq). Every [`SNAPSHOT_EVERY`] events a snapshot is written and
//!   the log it covers deleted. Restoring applies the log after the snapshot: the result equals
//!   the live state (a property test checks it). Only deliveries in flight are not stored; after
//!   a revival they are handed out again (webhooks are at least once).
//! - **Output gate.** A host commits every `Put`/`Delete` of one `handle` call together before it
//!   releases any reply, payment or delivery of that call. So a webhook's outbox entry is stored
//!   in the same transaction as the event that caused it, and a 2xx reply means durable.
//! - **Money** ([`money`]). Integer minor units per ISO 4217 currency; `rust_decimal` only for
//!   rates. One rounding rule: once, to the nearest minor unit, halves away from zero; wholes
//!   (a cart discount, the tax at one rate) are split over lines by largest remainder.
//! - **Prices** ([`cart`]). The shop prices every cart from the catalog; clients never send
//!   prices, only what they showed (`expected_unit_price`, `expected_total`), refused with
//!   `price_mismatch` when it is not the price now.
//! - **Stock.** Checkout reserves stock for the shop's reservation time (10 minutes by
//!   default). The alarm releases expired reservations; a payment that settles after that takes
//!   the stock again only if it is still there (otherwise the order is cancelled and the money
//!   given back). A SKU may limit units per buyer across their orders.
//! - **Flash deals** ([`deals`]). A window, a percentage or fixed discount, a total cap and a
//!   per-buyer cap; units beyond a cap sell at the regular price. The "was" price is the lowest
//!   price of the 30 days before the deal (EU Omnibus), from the price history.
//! - **Checkout** ([`idempotency`]). An `Idempotency-Key` per buyer; a retry gets the stored
//!   answer byte for byte, or `idempotency_key_in_flight` while the provider is still deciding,
//!   or `idempotency_key_reused` for another body. Keys are forgotten after 24 hours.
//! - **Payments** ([`payment`]) are effects: [`Output::Payment`] out, [`Input::PaymentResult`] in.
//!   [`test_provider`] answers by test card token. A shop may capture on fulfilment (setting
//!   `capture: "on_fulfilment"`): checkout then only authorizes, and fulfilling the order asks
//!   the provider to capture ([`PaymentKind::Capture`]). Hand-off checkout sends the buyer to the
//!   merchant's cart URL instead and waits for the merchant to report the payment.
//! - **Webhooks** ([`outbox`]). `order.*`, `inventory.*` and `flash_deal.*` events go to the
//!   merchant's endpoints with a retry schedule of 5 s to 10 h, then to dead letters the
//!   merchant can replay. `410 Gone` disables an endpoint.
//! - **Coupon guessing** ([`guard`]). A buyer's wrong coupon codes are limited (5, then one per
//!   30 s) and answered `429 coupon_attempts_exceeded` with `retry_after`; while limited, the
//!   right code is refused too. Hosts limit the same per client address. Counted in memory.
//! - **Merchant updates** ([`api`]): catalog and stock changes from the merchant's systems are
//!   applied once per event id; a replayed id is `duplicate_event`. Shopify's product webhooks
//!   become such updates in [`shopify`], the same on every host.

pub mod analytics;
pub mod api;
pub mod cart;
pub mod catalog;
pub mod deals;
pub mod effects;
pub mod guard;
pub mod idempotency;
pub mod ids;
pub mod money;
pub mod orders;
pub mod outbox;
pub mod payment;
pub mod protocol;
mod shop;
pub mod shopify;
pub mod state;
pub mod test_provider;

pub use ids::{CouponCode, DealId, DeliveryId, EndpointId, Epoch, Millis, OrderId, ProductId, Seq, Sku};
pub use liveshop_identity::{Identity, Role};
pub use money::{Currency, Money, MoneyError};
pub use payment::{Capture, PaymentKind, PaymentOutcome, PaymentRequest};
pub use protocol::{ApiError, ErrorCode, Event};
pub use shop::{
    DEAL_RETENTION_MS, INBOUND_TTL_MS, Input, LiveViews, LogRecord, Output, RestoreError, SNAPSHOT_EVERY,
    Shop, Write, keys,
};
