//! The HTTP routes a host forwards to a shop, with JSON bodies. Every refusal is
//! `{"error": {"code", "message", ...}}` ([`crate::protocol::ErrorCode`] lists the codes and
//! their statuses). Paths are below the shop's base; the query string is ignored.
//!
//! Who may call what: *anyone* needs no token; *buyer* is any verified identity acting for
//! itself (`{buyer}` must be its own subject; staff may read other buyers' carts and orders);
//! *staff* is the `merchant` or `host` role; *merchant* is the `merchant` role alone.
//!
//! | route                                        | who      | body → answer                                        |
//! |----------------------------------------------|----------|------------------------------------------------------|
//! | `GET /catalog`                               | anyone   | → `{now, currency, products}`                        |
//! | `GET /products/{id}`                         | anyone   | → product                                            |
//! | `GET /deals`                                 | anyone   | → `{now, deals}` (running and upcoming)              |
//! | `GET /carts/{buyer}`                         | buyer    | → cart (`{buyer, now, quote, coupon, unavailable}`)  |
//! | `POST /carts/{buyer}/items`                  | buyer    | `{sku, quantity, expected_unit_price?}` → cart       |
//! | `PUT /carts/{buyer}/items/{sku}`             | buyer    | `{quantity, expected_unit_price?}` (0 removes) → cart|
//! | `DELETE /carts/{buyer}/items/{sku}`          | buyer    | → cart                                               |
//! | `PUT /carts/{buyer}/coupon`                  | buyer    | `{code}` → cart; wrong codes are limited (`429`, [`crate::guard`]) |
//! | `DELETE /carts/{buyer}/coupon`               | buyer    | → cart                                               |
//! | `POST /checkout` + `Idempotency-Key`         | buyer    | `{payment_method?, expected_total?}` → 202/201 `{order}` |
//! | `GET /orders`                                | buyer    | → `{orders}` (own; staff: all, newest first)         |
//! | `GET /orders/{id}`                           | buyer    | → `{order}`                                          |
//! | `PUT /products/{id}`                         | staff    | product (variants with `stock?`) → product           |
//! | `DELETE /products/{id}`                      | staff    | → product (archived)                                 |
//! | `PUT /skus/{sku}/stock`                      | staff    | `{on_hand}` → stock                                  |
//! | `POST /skus/{sku}/stock/adjust`              | staff    | `{delta}` → stock                                    |
//! | `PUT /skus/{sku}/price`                      | staff    | `{price}` → variant                                  |
//! | `POST /deals`                                | staff    | `{sku, starts_at?, ends_at \| duration_secs, discount, quantity_cap, per_buyer_cap, verified_buyers_only?}` → 201 deal |
//! | `POST /deals/{id}/end`                       | staff    | → deal                                               |
//! | `POST /orders/{id}/fulfil`                   | staff    | → `{order}`; 202 `{order}` when it asks for the capture (below) |
//! | `POST /orders/{id}/cancel`                   | merchant | `{reason?}` → `{order}`                              |
//! | `POST /orders/{id}/refund`                   | merchant | `{amount?, reason?}` → `{order}`                     |
//! | `POST /orders/{id}/mark-paid`                | merchant | (hand-off orders) → `{order}`                        |
//! | `GET /settings`, `PUT /settings`             | staff, merchant | settings patch (`currency`, `checkout`, `handoff_url`, `reservation_ttl_secs`, `low_stock_threshold`, `prices_include_tax`, `default_tax_rate`, `capture`) → settings |
//! | `PUT /coupons/{code}`, `DELETE /coupons/{code}` | merchant | `{discount, active?}` → coupon                    |
//! | `POST /merchant/events`                      | merchant | `{event_id, update: {type, ...}}` → `{applied}`      |
//! | `GET /webhooks/endpoints`                    | merchant | → `{endpoints}`                                      |
//! | `POST /webhooks/endpoints`                   | merchant | `{url, secret_id, events?}` → 201 endpoint           |
//! | `PUT /webhooks/endpoints/{id}`               | merchant | `{url?, secret_id?, events?, enabled?}` → endpoint   |
//! | `DELETE /webhooks/endpoints/{id}`            | merchant | → `{removed}`                                        |
//! | `GET /webhooks/outbox`                       | merchant | → `{deliveries}`                                     |
//! | `GET /webhooks/dead-letters`                 | merchant | → `{dead_letters}`                                   |
//! | `POST /webhooks/dead-letters/{id}/replay`    | merchant | → delivery                                           |
//! | `GET /analytics/{show}`                      | staff    | → `{now, show, currency, sales, buyers, titles}` (sales without the buyers' names) |
//! | `POST /analytics/{show}/report-ready`        | merchant | `{report_url, analytics_url}` → 202; queues `show.report_ready` |
//!
//! **Capture.** With `capture: "automatic"` (the default) the provider takes the money at
//! checkout. With `capture: "on_fulfilment"` checkout only authorizes (`payment: "authorized"`,
//! the stock committed), and `POST /orders/{id}/fulfil` on an authorized order asks the provider
//! to capture: it answers `202` with the order still `authorized` and `capture_state:
//! "requested"`, and the order becomes `paid` (`order.paid`) and `fulfilled` (`order.fulfilled`)
//! together when the provider says so. A failed capture leaves it `authorized` with
//! `capture_state: "failed"` and the reason in `payment_reason` (`order.payment_failed`): fulfil
//! again to retry, or cancel to void the authorization. The setting applies to checkouts after it.
//!
//! Amounts are `{"minor": 1999, "currency": "EUR"}`; percentages and rates are decimal strings
//! (`"12.5"`). Clients never set prices: a cart holds SKUs and quantities, the shop prices them.
//! A client may say what price it showed (`expected_unit_price`, `expected_total`) and is refused
//! with `price_mismatch` when that is not the price now, so a buyer is never charged more than
//! they saw and a tampered price is caught.

mod analytics;
mod buyer;
pub(crate) mod inputs;
mod merchant;
pub mod views;
mod webhooks;

use liveshop_identity::{Identity, Role};
use serde::Serialize;
pub use webhooks::screen_endpoint;

use crate::Shop;
use crate::ids::Millis;
use crate::protocol::{ApiError, ErrorCode, to_json};

/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A status and a JSON body.
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
}

pub(crate) type Handled = Result<Reply, ApiError>;

pub(crate) fn reply(status: u16, value: &impl Serialize) -> Handled {
    Ok(Reply { status, body: to_json(value) })
}

pub(crate) fn not_found(what: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no such {what}"))
}

/// A request from one of the shop's parts of the API.
pub(crate) struct Call<'a> {
    pub now: Millis,
    pub who: Option<&'a Identity>,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Call<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
    }

    /// The show the request came through, as its host named it ([`crate::analytics::SHOW_HEADER`]).
    pub fn show(&self) -> Option<String> {
        self.header(crate::analytics::SHOW_HEADER)
            .filter(|s| !s.is_empty() && s.len() <= 128)
            .map(str::to_string)
    }

    /// Anyone with a verified identity.
    pub fn buyer(&self) -> Result<&Identity, ApiError> {
        self.who.ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "a token is required"))
    }

    /// The buyer named in the path, acting for themselves.
    pub fn own(&self, buyer: &str) -> Result<&Identity, ApiError> {
        let who = self.buyer()?;
        if who.subject == buyer { Ok(who) } else { Err(forbidden()) }
    }

    /// The buyer named in the path, or staff looking.
    pub fn own_or_staff(&self, buyer: &str) -> Result<&Identity, ApiError> {
        let who = self.buyer()?;
        if who.subject == buyer || is_staff(who.role) { Ok(who) } else { Err(forbidden()) }
    }

    pub fn staff(&self) -> Result<&Identity, ApiError> {
        let who = self.buyer()?;
        if is_staff(who.role) { Ok(who) } else { Err(forbidden()) }
    }

    pub fn merchant(&self) -> Result<&Identity, ApiError> {
        let who = self.buyer()?;
        if who.role == Role::Merchant { Ok(who) } else { Err(forbidden()) }
    }
}

/// Merchants run the shop; hosts run the show and its deals. Moderators run chat, not sales.
pub(crate) fn is_staff(role: Role) -> bool {
    matches!(role, Role::Merchant | Role::Host)
}

fn forbidden() -> ApiError {
    ApiError::new(ErrorCode::Forbidden, "your role may not do this")
}

impl Shop {
    /// Answers one request: `(status, JSON body)`. On a refusal nothing durable has changed.
    pub(crate) fn request(
        &mut self,
        now: Millis,
        who: Option<&Identity>,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> (u16, String) {
        let result = if body.len() > MAX_BODY_BYTES {
            let msg = format!("request bodies are limited to {MAX_BODY_BYTES} bytes");
            Err(ApiError::new(ErrorCode::PayloadTooLarge, msg))
        } else {
            self.route(&Call { now, who, headers, body }, method, path)
        };
        match result {
            Ok(r) => (r.status, r.body),
            Err(e) => (e.status(), e.body()),
        }
    }

    fn route(&mut self, c: &Call, method: &str, path: &str) -> Handled {
        let segs = segments(path)?;
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (method, s.as_slice()) {
            ("GET", ["catalog"]) => self.catalog(c),
            ("GET", ["analytics", show]) => self.show_sales(c, show),
            ("POST", ["analytics", show, "report-ready"]) => self.report_ready(c, show),
            ("GET", ["products", id]) => self.product(c, id),
            ("GET", ["deals"]) => self.deals(c),
            ("GET", ["carts", buyer]) => self.cart(c, buyer),
            ("POST", ["carts", buyer, "items"]) => self.add_item(c, buyer),
            ("PUT", ["carts", buyer, "items", sku]) => self.set_item(c, buyer, sku),
            ("DELETE", ["carts", buyer, "items", sku]) => self.remove_item(c, buyer, sku),
            ("PUT", ["carts", buyer, "coupon"]) => self.apply_coupon(c, buyer),
            ("DELETE", ["carts", buyer, "coupon"]) => self.remove_coupon(c, buyer),
            ("POST", ["checkout"]) => self.checkout(c),
            ("GET", ["orders"]) => self.orders(c),
            ("GET", ["orders", id]) => self.order(c, id),
            ("PUT", ["products", id]) => self.upsert_product(c, id),
            ("DELETE", ["products", id]) => self.archive_product(c, id),
            ("PUT", ["skus", sku, "stock"]) => self.set_stock(c, sku),
            ("POST", ["skus", sku, "stock", "adjust"]) => self.adjust_stock(c, sku),
            ("PUT", ["skus", sku, "price"]) => self.set_price(c, sku),
            ("POST", ["deals"]) => self.create_deal(c),
            ("POST", ["deals", id, "end"]) => self.end_deal_early(c, id),
            ("POST", ["orders", id, "fulfil"]) => self.fulfil(c, id),
            ("POST", ["orders", id, "cancel"]) => self.cancel_order(c, id),
            ("POST", ["orders", id, "refund"]) => self.refund(c, id),
            ("POST", ["orders", id, "mark-paid"]) => self.mark_paid(c, id),
            ("GET", ["settings"]) => self.settings(c),
            ("PUT", ["settings"]) => self.change_settings(c),
            ("PUT", ["coupons", code]) => self.set_coupon(c, code),
            ("DELETE", ["coupons", code]) => self.remove_shop_coupon(c, code),
            ("POST", ["merchant", "events"]) => self.inbound(c),
            ("GET", ["webhooks", "endpoints"]) => self.endpoints(c),
            ("POST", ["webhooks", "endpoints"]) => self.add_endpoint(c),
            ("PUT", ["webhooks", "endpoints", id]) => self.update_endpoint(c, id),
            ("DELETE", ["webhooks", "endpoints", id]) => self.remove_endpoint(c, id),
            ("GET", ["webhooks", "outbox"]) => self.outbox(c),
            ("GET", ["webhooks", "dead-letters"]) => self.dead_letters(c),
            ("POST", ["webhooks", "dead-letters", id, "replay"]) => self.replay(c, id),
            _ => Err(not_found(&format!("route {method} /{}", s.join("/")))),
        }
    }
}

/// The decoded segments of a route's path; the query string is ignored.
pub(crate) fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    let path = path.split('?').next().unwrap_or_default();
    let segs = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect::<Option<Vec<_>>>();
    segs.ok_or_else(|| not_found("route (bad escape in path)"))
}

/// Decodes `%XX` escapes (subjects such as `auth0|123` arrive escaped); `None` when malformed.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An id in a path: a plain number.
pub(crate) fn number(s: &str, what: &str) -> Result<u64, ApiError> {
    s.parse().map_err(|_| not_found(what))
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(super::percent_decode("auth0%7C123").as_deref(), Some("auth0|123"));
        assert_eq!(super::percent_decode("bad%7"), None);
        assert_eq!(super::percent_decode("%FF"), None);
    }
}
