//! What staff and merchants do: the catalog and stock, deals, orders after checkout, settings,
//! coupons, and updates pushed by the merchant's own systems.

use serde_json::{Value, json};

use super::inputs::{
    CouponInput, DealInput, InboundInput, InboundUpdate, MoneyInput, PriceInput, ProductInput, ReasonInput,
    RefundInput, SettingsInput, StockAdjustInput, StockSetInput, decode, event_id, existing_sku, invalid,
    known_sku, quantity, stock, stock_delta, tax_rate, text, url,
};
use super::{Call, Handled, Reply, not_found, number, reply, views};
use crate::Shop;
use crate::cart::Coupon;
use crate::deals::{Discount, FlashDeal, MAX_DEAL_MS};
use crate::ids::{CouponCode, DealId, Millis, OrderId, ProductId, SECOND};
use crate::money::Currency;
use crate::orders::{Change, Checkout, PaymentState};
use crate::payment::{PaymentKind, PaymentRequest};
use crate::protocol::{ApiError, ErrorCode, Event};
use crate::shop::{Output, capture, capture_pending, follow_up};
use crate::state::{CheckoutMode, Settings};

/// Shortest and longest reservation a merchant may configure.
const RESERVATION_TTL_SECS: std::ops::RangeInclusive<u64> = 30..=3_600;

impl Shop {
    pub(super) fn upsert_product(&mut self, c: &Call, id: &str) -> Handled {
        c.staff()?;
        let input: ProductInput = decode(c.body)?;
        reply(200, &self.upsert(c.now, id, &input)?)
    }

    fn upsert(&mut self, now: Millis, id: &str, input: &ProductInput) -> Result<Value, ApiError> {
        let id = ProductId::parse(id)
            .ok_or_else(|| invalid("a product id is 1 to 64 bytes of A-Z a-z 0-9 . _ -"))?;
        let (product, stocks) = input.validate(&self.state, &id)?;
        self.emit(now, Event::ProductUpserted { product });
        for (sku, on_hand) in stocks {
            if self.state.variants[&sku].on_hand != on_hand {
                self.emit(now, Event::StockSet { sku, on_hand });
            }
        }
        Ok(views::product(&self.state, &self.state.products[&id], None, now))
    }

    pub(super) fn archive_product(&mut self, c: &Call, id: &str) -> Handled {
        c.staff()?;
        reply(200, &self.archive(c.now, id)?)
    }

    fn archive(&mut self, now: Millis, id: &str) -> Result<Value, ApiError> {
        let id = ProductId::parse(id).filter(|id| self.state.products.contains_key(id));
        let id = id.ok_or_else(|| not_found("product"))?;
        if !self.state.products[&id].archived {
            self.emit(now, Event::ProductArchived { product_id: id.clone() });
        }
        Ok(json!({ "id": id, "archived": true }))
    }

    pub(super) fn set_stock(&mut self, c: &Call, sku: &str) -> Handled {
        c.staff()?;
        let input: StockSetInput = decode(c.body)?;
        reply(200, &self.stock_set(c.now, sku, &input.on_hand)?)
    }

    fn stock_set(&mut self, now: Millis, sku: &str, on_hand: &serde_json::Number) -> Result<Value, ApiError> {
        let sku = existing_sku(&self.state, sku)?;
        let on_hand = stock(on_hand)?;
        if self.state.variants[&sku].on_hand != on_hand {
            self.emit(now, Event::StockSet { sku: sku.clone(), on_hand });
        }
        Ok(self.stock_view(&sku))
    }

    pub(super) fn adjust_stock(&mut self, c: &Call, sku: &str) -> Handled {
        c.staff()?;
        let input: StockAdjustInput = decode(c.body)?;
        reply(200, &self.stock_adjust(c.now, sku, &input.delta)?)
    }

    fn stock_adjust(
        &mut self,
        now: Millis,
        sku: &str,
        delta: &serde_json::Number,
    ) -> Result<Value, ApiError> {
        let sku = existing_sku(&self.state, sku)?;
        let delta = stock_delta(delta)?;
        if delta != 0 {
            self.emit(now, Event::StockAdjusted { sku: sku.clone(), delta });
        }
        Ok(self.stock_view(&sku))
    }

    fn stock_view(&self, sku: &crate::ids::Sku) -> Value {
        let v = &self.state.variants[sku];
        json!({ "sku": sku, "on_hand": v.on_hand, "reserved": v.reserved, "available": v.available() })
    }

    pub(super) fn set_price(&mut self, c: &Call, sku: &str) -> Handled {
        c.staff()?;
        let input: PriceInput = decode(c.body)?;
        reply(200, &self.price_set(c.now, sku, &input.price)?)
    }

    fn price_set(&mut self, now: Millis, sku: &str, price: &MoneyInput) -> Result<Value, ApiError> {
        let sku = existing_sku(&self.state, sku)?;
        let price = price.parse(self.state.settings.currency)?;
        if self.state.variants[&sku].price != price {
            self.emit(now, Event::PriceChanged { sku: sku.clone(), price });
        }
        Ok(views::variant(&self.state, &self.state.variants[&sku], None, now))
    }

    pub(super) fn create_deal(&mut self, c: &Call) -> Handled {
        c.staff()?;
        let input: DealInput = decode(c.body)?;
        let sku = known_sku(&self.state, &input.sku)?;
        let starts_at = input.starts_at.unwrap_or(c.now).max(c.now);
        let ends_at = match (input.ends_at, input.duration_secs) {
            (Some(end), None) => end,
            (None, Some(secs)) => starts_at.saturating_add(secs.saturating_mul(SECOND)),
            _ => return Err(invalid("give either ends_at or duration_secs")),
        };
        if ends_at <= starts_at || ends_at - starts_at > MAX_DEAL_MS {
            return Err(invalid("a deal ends after it starts, and lasts at most 7 days"));
        }
        let discount = input.discount.parse(self.state.settings.currency)?;
        if let Discount::Amount(a) = discount
            && a.minor > self.state.variants[&sku].price.minor
        {
            return Err(ApiError::new(ErrorCode::InvalidPrice, "the discount is more than the price"));
        }
        let quantity_cap = stock(&input.quantity_cap)?;
        if quantity_cap == 0 {
            return Err(ApiError::new(ErrorCode::InvalidQuantity, "a deal has at least one unit"));
        }
        let per_buyer_cap = quantity(&input.per_buyer_cap, false)?;
        let replay_until = match input.replay_secs {
            Some(secs) if secs.saturating_mul(SECOND) > MAX_DEAL_MS => {
                return Err(invalid("a deal is kept on for replays for at most 7 days"));
            }
            secs => secs.map(|s| ends_at + s * SECOND),
        };
        if self.state.deals.values().any(|d| d.sku == sku && d.overlaps(starts_at, ends_at)) {
            return Err(ApiError::new(
                ErrorCode::DealOverlap,
                format!("{sku} already has a deal in that window"),
            ));
        }
        let deal = FlashDeal {
            id: DealId(self.journal.next_seq().0),
            sku,
            starts_at,
            ends_at,
            discount,
            quantity_cap,
            per_buyer_cap,
            verified_buyers_only: input.verified_buyers_only,
            taken: 0,
            started: None,
            ended: false,
            show: c.show(),
            replay_until,
        };
        let id = deal.id;
        self.emit(c.now, Event::DealCreated { deal });
        reply(201, &views::deal(&self.state, &self.state.deals[&id], c.now))
    }

    pub(super) fn end_deal_early(&mut self, c: &Call, id: &str) -> Handled {
        c.staff()?;
        let id = DealId(number(id, "deal")?);
        let d = self.state.deals.get(&id).ok_or_else(|| not_found("deal"))?;
        if d.ended || d.ends_at <= c.now {
            return Err(ApiError::new(ErrorCode::InvalidTransition, "the deal has ended"));
        }
        self.end_deal(c.now, id);
        reply(200, &views::deal(&self.state, &self.state.deals[&id], c.now))
    }

    fn order_id(&self, id: &str) -> Result<OrderId, ApiError> {
        Some(OrderId(number(id, "order")?))
            .filter(|id| self.state.orders.contains_key(id))
            .ok_or_else(|| not_found("order"))
    }

    fn order_reply(&self, id: OrderId) -> Handled {
        reply(200, &json!({ "order": self.state.orders[&id] }))
    }

    /// Fulfils a paid order. An order whose charge is only authorized (the shop captures on
    /// fulfilment) is captured first: the capture is asked of the provider and the answer is
    /// `202` with the order still `authorized`; it becomes paid and fulfilled together when the
    /// provider says `paid`. Asking again while the capture is out repeats the same request
    /// (same key); after a failed capture it makes a new attempt.
    pub(super) fn fulfil(&mut self, c: &Call, id: &str) -> Handled {
        c.staff()?;
        let id = self.order_id(id)?;
        let order = &self.state.orders[&id];
        if order.needs_capture() {
            if !capture_pending(order) {
                self.emit(c.now, Event::CaptureRequested { order_id: id });
            }
            self.out.push_back(Output::Payment(capture(&self.state.orders[&id])));
            return reply(202, &json!({ "order": self.state.orders[&id] }));
        }
        order.check_fulfil()?;
        self.fulfilled(c.now, id);
        self.order_reply(id)
    }

    pub(super) fn cancel_order(&mut self, c: &Call, id: &str) -> Handled {
        c.merchant()?;
        let input: ReasonInput = decode(c.body)?;
        let id = self.order_id(id)?;
        self.state.orders[&id].check_payment(PaymentState::Cancelled)?;
        let reason = reason(input.reason.as_deref(), "merchant_cancelled")?;
        self.cancel(c.now, id, &reason, Some(PaymentKind::Cancel));
        self.order_reply(id)
    }

    pub(super) fn refund(&mut self, c: &Call, id: &str) -> Handled {
        c.merchant()?;
        let input: RefundInput = decode(c.body)?;
        let id = self.order_id(id)?;
        let order = &self.state.orders[&id];
        order.check_refundable()?;
        let amount = match &input.amount {
            Some(m) => m.parse(order.priced.currency)?,
            None => order.refundable(),
        };
        if amount.is_zero() {
            return Err(ApiError::new(ErrorCode::InvalidPrice, "a refund is more than zero"));
        }
        order.check_refund(amount)?;
        let reason = input.reason.as_deref().map(|r| text(r, 200, "reason", false)).transpose()?;
        self.emit(c.now, Event::OrderRefunded { order_id: id, amount, reason });
        let order = &self.state.orders[&id];
        if let Checkout::InStream { .. } = order.checkout {
            let n = order.history.iter().filter(|t| matches!(t.change, Change::Refund { .. })).count();
            let key = format!("{}-refund-{n}", order.payment_key);
            let req = PaymentRequest { amount, ..follow_up(order, PaymentKind::Refund, key) };
            self.out.push_back(Output::Payment(req));
        }
        let data = json!({ "order": self.order_data(id), "amount": amount });
        self.webhook(c.now, "order.refunded", &data);
        self.order_reply(id)
    }

    pub(super) fn mark_paid(&mut self, c: &Call, id: &str) -> Handled {
        c.merchant()?;
        let id = self.order_id(id)?;
        self.handoff_paid(c.now, id)
    }

    /// A hand-off order paid on the merchant's checkout. If its stock is gone by now, the order
    /// is cancelled (a change) and the answer says why.
    fn handoff_paid(&mut self, now: Millis, id: OrderId) -> Handled {
        let order = &self.state.orders[&id];
        if !matches!(order.checkout, Checkout::Handoff { .. }) {
            let msg = "an in-stream order is paid through the payment provider";
            return Err(ApiError::new(ErrorCode::InvalidTransition, msg));
        }
        order.check_payment(PaymentState::Paid)?;
        match self.settle(now, id, PaymentState::Paid) {
            Ok(()) => self.order_reply(id),
            Err(e) => Ok(Reply { status: e.status(), body: e.body() }),
        }
    }

    pub(super) fn settings(&mut self, c: &Call) -> Handled {
        c.staff()?;
        reply(200, &self.state.settings)
    }

    pub(super) fn change_settings(&mut self, c: &Call) -> Handled {
        c.merchant()?;
        let input: SettingsInput = decode(c.body)?;
        let old = &self.state.settings;
        let mut s: Settings = old.clone();
        if let Some(code) = &input.currency {
            s.currency = Currency::parse(code)?;
            let priced = !self.state.variants.is_empty() || !self.state.coupons.is_empty();
            if s.currency != old.currency && priced {
                let msg = "the currency can change only while the shop has no products or coupons";
                return Err(ApiError::new(ErrorCode::CurrencyLocked, msg));
            }
        }
        if let Some(mode) = input.checkout {
            s.checkout = mode;
        }
        if let Some(u) = &input.handoff_url {
            s.handoff_url = Some(url(u, "handoff_url")?);
        }
        if s.checkout == CheckoutMode::Handoff && s.handoff_url.is_none() {
            let msg = "hand-off checkout needs a handoff_url";
            return Err(ApiError::new(ErrorCode::HandoffNotConfigured, msg));
        }
        if let Some(secs) = input.reservation_ttl_secs {
            if !RESERVATION_TTL_SECS.contains(&secs) {
                return Err(invalid("reservation_ttl_secs is 30 to 3600"));
            }
            s.reservation_ttl_ms = secs * SECOND;
        }
        if let Some(t) = input.low_stock_threshold {
            s.low_stock_threshold = t.min(crate::catalog::limits::MAX_STOCK);
        }
        if let Some(v) = input.prices_include_tax {
            s.prices_include_tax = v;
        }
        if let Some(r) = input.default_tax_rate {
            s.default_tax_rate = tax_rate(r)?;
        }
        if let Some(capture) = input.capture {
            // Orders keep the capture they were charged with; only new checkouts change.
            s.capture = capture;
        }
        if s != *old {
            self.emit(c.now, Event::SettingsChanged { settings: s });
        }
        reply(200, &self.state.settings)
    }

    pub(super) fn set_coupon(&mut self, c: &Call, code: &str) -> Handled {
        c.merchant()?;
        let code = CouponCode::parse(code)
            .ok_or_else(|| invalid("a coupon code is 1 to 64 bytes of A-Z a-z 0-9 . _ -"))?;
        let input: CouponInput = decode(c.body)?;
        let coupon = Coupon {
            code,
            discount: input.discount.parse(self.state.settings.currency)?,
            active: input.active,
        };
        if self.state.coupons.get(&coupon.code) != Some(&coupon) {
            self.emit(c.now, Event::CouponSet { coupon: coupon.clone() });
        }
        reply(200, &coupon)
    }

    pub(super) fn remove_shop_coupon(&mut self, c: &Call, code: &str) -> Handled {
        c.merchant()?;
        let code = CouponCode::parse(code).filter(|c| self.state.coupons.contains_key(c));
        let code = code.ok_or_else(|| not_found("coupon"))?;
        self.emit(c.now, Event::CouponRemoved { code: code.clone() });
        reply(200, &json!({ "removed": code }))
    }

    /// `POST /merchant/events`: an update from the merchant's systems, applied once per event id.
    pub(super) fn inbound(&mut self, c: &Call) -> Handled {
        c.merchant()?;
        let input: InboundInput = decode(c.body)?;
        let event_id = event_id(&input.event_id)?;
        if let Some(at) = self.state.inbound.get(&event_id) {
            let e = ApiError::new(ErrorCode::DuplicateEvent, "this event was applied already");
            return Err(e.with("event_id", &event_id).with("applied_at", at));
        }
        let now = c.now;
        let result = match &input.update {
            InboundUpdate::ProductUpsert { product_id, product } => self.upsert(now, product_id, product)?,
            InboundUpdate::ProductArchive { product_id } => self.archive(now, product_id)?,
            InboundUpdate::StockSet { sku, on_hand } => self.stock_set(now, sku, on_hand)?,
            InboundUpdate::StockAdjust { sku, delta } => self.stock_adjust(now, sku, delta)?,
            InboundUpdate::PriceSet { sku, price } => self.price_set(now, sku, price)?,
            InboundUpdate::OrderPaid { order_id } => {
                let id = self.order_id(&order_id.to_string())?;
                let r = self.handoff_paid(now, id)?;
                serde_json::from_str(&r.body).unwrap_or(Value::Null)
            }
        };
        self.emit(now, Event::InboundApplied { event_id: event_id.clone() });
        reply(200, &json!({ "applied": event_id, "result": result }))
    }
}

fn reason(given: Option<&str>, default: &str) -> Result<String, ApiError> {
    given.map_or_else(|| Ok(default.to_string()), |r| text(r, 200, "reason", false))
}
