//! What anyone and buyers do: browse, fill a cart, check out, look at their orders.

use std::collections::BTreeMap;

use liveshop_identity::Identity;
use serde_json::json;

use super::inputs::{
    CartAddInput, CartSetInput, CheckoutInput, CouponApplyInput, MoneyInput, coupon_code, decode,
};
use super::inputs::{invalid, known_sku, quantity};
use super::views::{self, offered_price};
use super::{Call, Handled, Reply, is_staff, not_found, number, reply};
use crate::cart::{MAX_CART_LINES, MAX_QUANTITY, Quote, quote};
use crate::idempotency::{IdempotencyRecord, StoredResponse, fingerprint, valid_key};
use crate::ids::{Millis, OrderId, ProductId, Sku};
use crate::money::Money;
use crate::orders::{
    Change, Checkout, FulfilmentState, Order, PaymentState, RefundState, StockHold, Transition,
};
use crate::protocol::{ApiError, ErrorCode, Event, to_json};
use crate::shop::{Output, charge};
use crate::state::{CheckoutMode, ShopState};
use crate::{Shop, cart, guard};

/// Orders listed at most per `GET /orders`.
const MAX_LISTED_ORDERS: usize = 100;

impl Shop {
    pub(super) fn catalog(&mut self, c: &Call) -> Handled {
        let products: Vec<_> = self
            .state
            .products
            .values()
            .filter(|p| !p.archived)
            .map(|p| views::product(&self.state, p, c.who, c.now))
            .collect();
        reply(200, &json!({ "now": c.now, "currency": self.state.settings.currency, "products": products }))
    }

    pub(super) fn product(&mut self, c: &Call, id: &str) -> Handled {
        let p = ProductId::parse(id)
            .and_then(|id| self.state.products.get(&id))
            .filter(|p| !p.archived)
            .ok_or_else(|| not_found("product"))?;
        reply(200, &views::product(&self.state, p, c.who, c.now))
    }

    pub(super) fn deals(&mut self, c: &Call) -> Handled {
        let deals: Vec<_> = self
            .state
            .deals
            .values()
            .filter(|d| !d.ended && c.now < d.ends_at)
            .map(|d| views::deal(&self.state, d, c.now))
            .collect();
        reply(200, &json!({ "now": c.now, "deals": deals }))
    }

    pub(super) fn cart(&mut self, c: &Call, buyer: &str) -> Handled {
        c.own_or_staff(buyer)?;
        self.cart_reply(c, buyer)
    }

    fn cart_reply(&self, c: &Call, buyer: &str) -> Handled {
        let device = c.who.filter(|w| w.subject == buyer).and_then(|w| w.device.as_deref());
        reply(200, &views::cart(&self.state, buyer, device, c.now)?)
    }

    pub(super) fn add_item(&mut self, c: &Call, buyer: &str) -> Handled {
        c.own(buyer)?;
        let input: CartAddInput = decode(c.body)?;
        let sku = known_sku(&self.state, &input.sku)?;
        let add = quantity(&input.quantity, false)?;
        let total = self.in_cart(buyer, &sku) + add;
        if total > MAX_QUANTITY {
            let msg = format!("at most {MAX_QUANTITY} units of one SKU in a cart");
            return Err(ApiError::new(ErrorCode::InvalidQuantity, msg));
        }
        self.put_line(c, buyer, (sku, total, input.replay), input.expected_unit_price.as_ref())
    }

    pub(super) fn set_item(&mut self, c: &Call, buyer: &str, sku: &str) -> Handled {
        c.own(buyer)?;
        let input: CartSetInput = decode(c.body)?;
        let q = quantity(&input.quantity, true)?;
        let sku = match Sku::parse(sku) {
            // Removing a line whose SKU is gone from the catalog is always fine.
            Some(s) if q == 0 && self.in_cart(buyer, &s) > 0 => s,
            _ => known_sku(&self.state, sku)?,
        };
        self.put_line(c, buyer, (sku, q, input.replay), input.expected_unit_price.as_ref())
    }

    pub(super) fn remove_item(&mut self, c: &Call, buyer: &str, sku: &str) -> Handled {
        c.own(buyer)?;
        match Sku::parse(sku).filter(|s| self.in_cart(buyer, s) > 0) {
            Some(sku) => self.put_line(c, buyer, (sku, 0, false), None),
            None => self.cart_reply(c, buyer),
        }
    }

    fn in_cart(&self, buyer: &str, sku: &Sku) -> u32 {
        self.state.carts.get(buyer).and_then(|c| c.lines.get(sku)).copied().unwrap_or(0)
    }

    /// Sets a cart line (`replay`: from the show's replay page) after checking what a checkout
    /// would check, so the buyer learns early.
    fn put_line(
        &mut self,
        c: &Call,
        buyer: &str,
        (sku, quantity, replay): (Sku, u32, bool),
        expected: Option<&MoneyInput>,
    ) -> Handled {
        let have = self.in_cart(buyer, &sku);
        let was_replay = self.state.carts.get(buyer).is_some_and(|cart| cart.replay);
        // Taking a line out leaves the rest priced as they were (live or replay).
        let replay = if quantity == 0 { was_replay } else { replay };
        if quantity > 0 {
            let lines = self.state.carts.get(buyer).map_or(0, |c| c.lines.len());
            if have == 0 && lines >= MAX_CART_LINES {
                let msg = format!("a cart holds at most {MAX_CART_LINES} different SKUs");
                return Err(ApiError::new(ErrorCode::CartFull, msg));
            }
            let v = &self.state.variants[&sku];
            verified_if_required(&self.state, c.buyer()?, &sku, c.now, replay)?;
            limits_allow(&self.state, buyer, &sku, quantity)?;
            if let Some(expected) = expected {
                let expected = expected.parse(self.state.settings.currency)?;
                let price = offered_price(&self.state, c.who, &sku, c.now, replay).unwrap_or(v.price);
                if expected != price {
                    return Err(price_mismatch("unit price", price));
                }
            }
        }
        if quantity != have || replay != was_replay {
            let event =
                Event::CartLineSet { buyer: buyer.to_string(), sku, quantity, show: c.show(), replay };
            self.emit(c.now, event);
        }
        self.cart_reply(c, buyer)
    }

    pub(super) fn apply_coupon(&mut self, c: &Call, buyer: &str) -> Handled {
        c.own(buyer)?;
        let input: CouponApplyInput = decode(c.body)?;
        let code = coupon_code(&input.code)?;
        // Taken before the lookup, so that while limited even the right code is refused.
        let key = buyer.to_string();
        self.coupon_failures.try_take(&key, c.now).map_err(|ms| guard::attempts_exceeded(ms, "for you"))?;
        if !self.state.coupons.get(&code).is_some_and(|c| c.active) {
            return Err(ApiError::new(ErrorCode::CouponInvalid, "no such coupon, or it is no longer valid"));
        }
        self.coupon_failures.give_back(&key);
        if self.state.carts.get(buyer).and_then(|c| c.coupon.as_ref()) != Some(&code) {
            self.emit(c.now, Event::CartCouponSet { buyer: buyer.to_string(), code: Some(code) });
        }
        self.cart_reply(c, buyer)
    }

    pub(super) fn remove_coupon(&mut self, c: &Call, buyer: &str) -> Handled {
        c.own(buyer)?;
        if self.state.carts.get(buyer).is_some_and(|c| c.coupon.is_some()) {
            self.emit(c.now, Event::CartCouponSet { buyer: buyer.to_string(), code: None });
        }
        self.cart_reply(c, buyer)
    }

    /// `POST /checkout`: the buyer's cart becomes an order with its stock reserved; see
    /// [`crate::idempotency`] for what a retry with the same key gets.
    pub(super) fn checkout(&mut self, c: &Call) -> Handled {
        let who = c.buyer()?;
        let (buyer, device) = (who.subject.clone(), who.device.clone());
        let key = c.header("idempotency-key").ok_or_else(|| {
            ApiError::new(ErrorCode::IdempotencyKeyMissing, "a checkout needs an Idempotency-Key header")
        })?;
        if !valid_key(key) {
            let msg = "an Idempotency-Key is 1 to 255 bytes of visible ASCII";
            return Err(ApiError::new(ErrorCode::IdempotencyKeyInvalid, msg));
        }
        let key = key.to_string();
        let fp = fingerprint("POST", "/checkout", c.body);
        if let Some(rec) = self.state.idempotency_record(&buyer, &key, c.now) {
            if rec.fingerprint != fp {
                let msg = "this Idempotency-Key was used for a different request";
                return Err(ApiError::new(ErrorCode::IdempotencyKeyReused, msg));
            }
            return match &rec.response {
                Some(r) => Ok(Reply { status: r.status, body: r.body.clone() }),
                None => Err(ApiError::new(
                    ErrorCode::IdempotencyKeyInFlight,
                    "this checkout is still waiting for the payment provider",
                )
                .with("order_id", rec.order)),
            };
        }
        let input: CheckoutInput = decode(c.body)?;
        let cart = self.state.carts.get(&buyer).filter(|c| !c.lines.is_empty()).cloned();
        let cart = cart.ok_or_else(|| ApiError::new(ErrorCode::CartEmpty, "the cart is empty"))?;
        for sku in cart.lines.keys() {
            verified_if_required(&self.state, who, sku, c.now, cart.replay)?;
        }
        let q = quote(&self.state, &buyer, device.as_deref(), &cart.lines, &cart, c.now)?;
        if cart.coupon.is_some() && q.coupon.is_none() {
            return Err(ApiError::new(ErrorCode::CouponInvalid, "the cart's coupon is no longer valid"));
        }
        for (sku, n) in units_per_sku(&q) {
            limits_allow(&self.state, &buyer, sku, n)?;
        }
        if let Some(expected) = &input.expected_total {
            let expected = expected.parse(self.state.settings.currency)?;
            if expected != q.total {
                return Err(price_mismatch("total", q.total));
            }
        }
        let id = OrderId(self.journal.next_seq().0);
        let settings = &self.state.settings;
        let checkout = match settings.checkout {
            CheckoutMode::InStream => {
                let method = input.payment_method.filter(|m| valid_key(m));
                Checkout::InStream {
                    method: method.ok_or_else(|| invalid("payment_method is a provider token"))?,
                }
            }
            CheckoutMode::Handoff => {
                let template = settings.handoff_url.as_ref().ok_or_else(|| {
                    ApiError::new(ErrorCode::HandoffNotConfigured, "the merchant has not set a checkout URL")
                })?;
                Checkout::Handoff { url: handoff_url(template, id, &q) }
            }
        };
        let order = Order {
            id,
            buyer: buyer.clone(),
            device,
            created_at: c.now,
            show: c.show(),
            refunded: Money::zero(q.currency),
            priced: q,
            checkout,
            payment: PaymentState::Pending,
            payment_reason: None,
            capture: settings.capture.capture(),
            capture_state: None,
            capture_attempts: 0,
            action_url: None,
            fulfilment: FulfilmentState::Unfulfilled,
            refund: RefundState::None,
            hold: StockHold::Reserved { expires_at: c.now + settings.reservation_ttl_ms },
            payment_key: format!("{}-ord{id}", self.journal.epoch().0),
            idempotency_key: key.clone(),
            history: vec![Transition { at: c.now, change: Change::Created }],
        };
        self.emit(c.now, Event::OrderCreated { order: Box::new(order) });
        let data = self.order_data(id);
        self.webhook(c.now, "order.created", &data);
        let order = &self.state.orders[&id];
        let body = to_json(&json!({ "order": order }));
        let mut record = IdempotencyRecord { fingerprint: fp, created_at: c.now, order: id, response: None };
        let status = match &order.checkout {
            Checkout::InStream { method } => {
                self.out.push_back(Output::Payment(charge(order, method)));
                202
            }
            Checkout::Handoff { .. } => {
                record.response = Some(StoredResponse { status: 201, body: body.clone() });
                201
            }
        };
        self.emit(c.now, Event::IdempotencyStarted { buyer, key, record });
        Ok(Reply { status, body })
    }

    pub(super) fn orders(&mut self, c: &Call) -> Handled {
        let who = c.buyer()?;
        let orders: Vec<&Order> = if is_staff(who.role) {
            self.state.orders.values().rev().take(MAX_LISTED_ORDERS).collect()
        } else {
            let mine: Vec<&Order> = self.state.orders_of(&who.subject).collect();
            mine.into_iter().rev().take(MAX_LISTED_ORDERS).collect()
        };
        reply(200, &json!({ "orders": orders }))
    }

    pub(super) fn order(&mut self, c: &Call, id: &str) -> Handled {
        let who = c.buyer()?;
        let order = self
            .state
            .orders
            .get(&OrderId(number(id, "order")?))
            .filter(|o| o.buyer == who.subject || is_staff(who.role))
            .ok_or_else(|| not_found("order"))?;
        reply(200, &json!({ "order": order }))
    }
}

/// A deal for verified buyers only is not for guests (tokens a host minted at `POST /guest`,
/// which carry a device): a token the platform or the merchant minted is a verified buyer. That
/// holds for a deal kept on for the replay too, which a `replay` cart prices by.
fn verified_if_required(
    state: &ShopState,
    who: &Identity,
    sku: &Sku,
    now: Millis,
    replay: bool,
) -> Result<(), ApiError> {
    if who.device.is_some() && state.deal_for(sku, now, replay).is_some_and(|d| d.verified_buyers_only) {
        let msg = "this deal is for verified buyers only: sign in with the shop to buy it";
        return Err(ApiError::new(ErrorCode::VerifiedBuyerRequired, msg).with("sku", sku));
    }
    Ok(())
}

/// Whether the buyer may hold `quantity` more units of `sku`: the stock is there and the SKU's
/// per-buyer limit allows it with what they already hold.
fn limits_allow(
    state: &crate::state::ShopState,
    buyer: &str,
    sku: &Sku,
    quantity: u32,
) -> Result<(), ApiError> {
    let v = &state.variants[sku];
    if quantity > v.available() {
        let e = ApiError::new(ErrorCode::OutOfStock, format!("only {} of {sku} left", v.available()));
        return Err(e.with("sku", sku).with("available", v.available()));
    }
    if let Some(max) = v.max_per_buyer {
        let held = state.buyer_units(buyer, sku);
        if held + quantity > max {
            let e = ApiError::new(ErrorCode::BuyerLimitExceeded, format!("at most {max} of {sku} per buyer"));
            return Err(e.with("sku", sku).with("limit", max).with("held", held));
        }
    }
    Ok(())
}

fn units_per_sku(q: &Quote) -> BTreeMap<&Sku, u32> {
    let mut m = BTreeMap::new();
    for l in &q.lines {
        *m.entry(&l.sku).or_default() += l.quantity;
    }
    m
}

fn price_mismatch(what: &str, actual: Money) -> ApiError {
    ApiError::new(ErrorCode::PriceMismatch, format!("the {what} is now {actual}")).with("actual", actual)
}

/// The merchant's cart URL with `{order}` and `{lines}` (`sku:qty,sku:qty`) filled in.
fn handoff_url(template: &str, id: OrderId, q: &cart::Quote) -> String {
    let lines: Vec<String> = units_per_sku(q).into_iter().map(|(sku, n)| format!("{sku}:{n}")).collect();
    template.replace("{order}", &id.to_string()).replace("{lines}", &lines.join(","))
}
