//! The shop's durable state and the one function that changes it, [`ShopState::apply`].
//!
//! Every change goes through an [`Event`], so replaying a snapshot plus the log after it gives
//! back exactly the live state. Only ordered maps are used: iteration order and the serialized
//! snapshot are deterministic on every host.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::analytics::ShowSales;
use crate::cart::{Cart, Coupon};
use crate::catalog::{Product, Variant, limits::MAX_STOCK};
use crate::deals::FlashDeal;
use crate::idempotency::IdempotencyRecord;
use crate::ids::{CouponCode, DealId, DeliveryId, EndpointId, MINUTE, Millis, OrderId, ProductId, Sku};
use crate::money::Currency;
use crate::orders::{CaptureState, Change, Order, PaymentState, StockHold};
use crate::outbox::{Delivery, Endpoint, MAX_DEAD_LETTERS};
use crate::payment::Capture;
use crate::protocol::Event;

/// How buyers pay: in the stream through the shop's provider, or on the merchant's own checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutMode {
    InStream,
    Handoff,
}

/// When an in-stream charge is captured: at checkout, or when the merchant fulfils the order
/// (the checkout only authorizes it; see [`crate::orders`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    #[default]
    Automatic,
    OnFulfilment,
}

impl CaptureMode {
    /// What the shop's charges ask of the provider.
    pub fn capture(self) -> Capture {
        match self {
            CaptureMode::Automatic => Capture::Automatic,
            CaptureMode::OnFulfilment => Capture::Manual,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Every price in the shop is in this currency; it can change only while the catalog is empty.
    pub currency: Currency,
    pub checkout: CheckoutMode,
    /// For hand-off: the merchant's cart URL, with `{order}` and `{lines}` (`sku:qty,sku:qty`)
    /// filled in per order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_url: Option<String>,
    /// How long a checkout holds its stock.
    pub reservation_ttl_ms: Millis,
    /// `inventory.low` is sent when a SKU's available stock falls to this (0: never).
    pub low_stock_threshold: u32,
    /// EU style (tax included in prices) or US style (added at checkout).
    pub prices_include_tax: bool,
    /// Percent, for SKUs without their own rate.
    pub default_tax_rate: Decimal,
    /// When in-stream charges are captured (`automatic` in shops stored before this setting).
    #[serde(default)]
    pub capture: CaptureMode,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            currency: Currency::Eur,
            checkout: CheckoutMode::InStream,
            handoff_url: None,
            reservation_ttl_ms: 10 * MINUTE,
            low_stock_threshold: 5,
            prices_include_tax: true,
            default_tax_rate: Decimal::ZERO,
            capture: CaptureMode::Automatic,
        }
    }
}

/// Everything about a shop that must survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopState {
    pub settings: Settings,
    pub products: BTreeMap<ProductId, Product>,
    pub variants: BTreeMap<Sku, Variant>,
    pub deals: BTreeMap<DealId, FlashDeal>,
    pub coupons: BTreeMap<CouponCode, Coupon>,
    pub carts: BTreeMap<String, Cart>,
    pub orders: BTreeMap<OrderId, Order>,
    pub buyer_orders: BTreeMap<String, BTreeSet<OrderId>>,
    /// Orders by guest device, so that a device's guest subjects share its deal caps.
    #[serde(default)]
    pub device_orders: BTreeMap<String, BTreeSet<OrderId>>,
    /// Orders holding a reservation, with when it expires.
    pub reservations: BTreeMap<OrderId, Millis>,
    /// Idempotency keys per buyer.
    pub idempotency: BTreeMap<String, BTreeMap<String, IdempotencyRecord>>,
    /// Merchant update event ids applied, with when.
    pub inbound: BTreeMap<String, Millis>,
    pub endpoints: BTreeMap<EndpointId, Endpoint>,
    /// Deliveries waiting for their next attempt.
    pub outbox: BTreeMap<DeliveryId, Delivery>,
    pub dead_letters: BTreeMap<DeliveryId, Delivery>,
    pub next_delivery: u64,
    /// The sales of each show sold from this shop (see [`crate::analytics`]).
    #[serde(default)]
    pub analytics: BTreeMap<String, ShowSales>,
    /// Sales are not measured (see `Shop::keep_measures`); not stored.
    #[serde(skip)]
    pub measures_off: bool,
}

impl ShopState {
    /// Applies one logged event. Total: an event that no longer matches the state (a release of
    /// an order released since) changes nothing rather than failing, so replay never stops.
    pub fn apply(&mut self, at: Millis, event: &Event) {
        if !self.measures_off {
            self.measure(at, event);
        }
        match event {
            Event::SettingsChanged { settings } => self.settings = settings.clone(),
            Event::ProductUpserted { product } => {
                let old: Vec<Sku> =
                    self.products.get(&product.id).map(|p| p.skus.clone()).unwrap_or_default();
                let skus: Vec<Sku> = product.variants.iter().map(|v| v.sku.clone()).collect();
                for sku in old.iter().filter(|s| !skus.contains(s)) {
                    if let Some(v) = self.variants.get_mut(sku) {
                        v.archived = true;
                    }
                }
                for def in &product.variants {
                    match self.variants.get_mut(&def.sku) {
                        Some(v) => {
                            v.product = product.id.clone();
                            v.title.clone_from(&def.title);
                            v.options.clone_from(&def.options);
                            v.tax_rate = def.tax_rate;
                            v.max_per_buyer = def.max_per_buyer;
                            v.archived = false;
                            v.set_price(at, def.price);
                        }
                        None => {
                            self.variants.insert(def.sku.clone(), Variant::new(product.id.clone(), def, at));
                        }
                    }
                }
                self.products.insert(
                    product.id.clone(),
                    Product {
                        id: product.id.clone(),
                        title: product.title.clone(),
                        description: product.description.clone(),
                        images: product.images.clone(),
                        skus,
                        archived: false,
                    },
                );
            }
            Event::ProductArchived { product_id } => {
                if let Some(p) = self.products.get_mut(product_id) {
                    p.archived = true;
                    for sku in &p.skus {
                        if let Some(v) = self.variants.get_mut(sku) {
                            v.archived = true;
                        }
                    }
                }
            }
            Event::StockSet { sku, on_hand } => {
                if let Some(v) = self.variants.get_mut(sku) {
                    v.on_hand = *on_hand;
                }
            }
            Event::StockAdjusted { sku, delta } => {
                if let Some(v) = self.variants.get_mut(sku) {
                    let n = (i64::from(v.on_hand) + delta).clamp(0, i64::from(MAX_STOCK));
                    v.on_hand = u32::try_from(n).unwrap_or(MAX_STOCK);
                }
            }
            Event::PriceChanged { sku, price } => {
                if let Some(v) = self.variants.get_mut(sku) {
                    v.set_price(at, *price);
                }
            }
            Event::InboundApplied { event_id } => {
                self.inbound.insert(event_id.clone(), at);
            }
            Event::CouponSet { coupon } => {
                self.coupons.insert(coupon.code.clone(), coupon.clone());
            }
            Event::CouponRemoved { code } => {
                self.coupons.remove(code);
            }
            Event::CartLineSet { buyer, sku, quantity, replay, .. } => {
                let cart = self.carts.entry(buyer.clone()).or_default();
                cart.replay = *replay;
                if *quantity == 0 {
                    cart.lines.remove(sku);
                } else {
                    cart.lines.insert(sku.clone(), *quantity);
                }
                self.drop_cart_if_empty(buyer);
            }
            Event::CartCouponSet { buyer, code } => {
                self.carts.entry(buyer.clone()).or_default().coupon.clone_from(code);
                self.drop_cart_if_empty(buyer);
            }
            Event::DealCreated { deal } => {
                self.deals.insert(deal.id, deal.clone());
            }
            Event::DealStarted { deal_id, start } => {
                if let Some(d) = self.deals.get_mut(deal_id) {
                    d.started = Some(*start);
                }
            }
            Event::DealEnded { deal_id } => {
                if let Some(d) = self.deals.get_mut(deal_id) {
                    d.ended = true;
                    if at < d.ends_at {
                        // Ended early: not kept on for replays either.
                        d.ends_at = at;
                        d.replay_until = None;
                    }
                }
            }
            Event::OrderCreated { order } => {
                for (sku, q, deal) in order.units() {
                    if let Some(v) = self.variants.get_mut(sku) {
                        v.reserved = v.reserved.saturating_add(q);
                    }
                    if let Some(d) = deal.and_then(|d| self.deals.get_mut(&d)) {
                        d.taken = d.taken.saturating_add(q);
                    }
                }
                if let StockHold::Reserved { expires_at } = order.hold {
                    self.reservations.insert(order.id, expires_at);
                }
                self.buyer_orders.entry(order.buyer.clone()).or_default().insert(order.id);
                if let Some(device) = &order.device {
                    self.device_orders.entry(device.clone()).or_default().insert(order.id);
                }
                self.carts.remove(&order.buyer);
                self.orders.insert(order.id, (**order).clone());
            }
            Event::StockReleased { order_id, reason } => self.release(*order_id, at, reason),
            Event::PaymentChanged { order_id, to, reason, action_url } => {
                let Some(order) = self.orders.get_mut(order_id) else { return };
                order.set_payment(at, *to, reason.clone());
                if action_url.is_some() {
                    order.action_url.clone_from(action_url);
                }
                if to.is_settled() {
                    self.commit(*order_id, at);
                } else if matches!(to, PaymentState::Failed | PaymentState::Cancelled) {
                    self.release(*order_id, at, reason.as_deref().unwrap_or(to_str(*to)));
                }
            }
            Event::OrderFulfilled { order_id } => {
                if let Some(o) = self.orders.get_mut(order_id) {
                    o.set_fulfilled(at);
                }
            }
            Event::CaptureRequested { order_id } => {
                if let Some(o) = self.orders.get_mut(order_id) {
                    o.set_capture(at, CaptureState::Requested, None);
                }
            }
            Event::CaptureFailed { order_id, reason } => {
                if let Some(o) = self.orders.get_mut(order_id) {
                    o.set_capture(at, CaptureState::Failed, Some(reason.clone()));
                }
            }
            Event::OrderRefunded { order_id, amount, .. } => {
                if let Some(o) = self.orders.get_mut(order_id) {
                    o.add_refund(at, *amount);
                }
            }
            Event::InventoryAlert { sku, alert, .. } => {
                if let Some(v) = self.variants.get_mut(sku) {
                    v.alert = *alert;
                }
            }
            Event::IdempotencyStarted { buyer, key, record } => {
                self.idempotency.entry(buyer.clone()).or_default().insert(key.clone(), record.clone());
            }
            Event::IdempotencyCompleted { buyer, key, response } => {
                if let Some(r) = self.idempotency.get_mut(buyer).and_then(|m| m.get_mut(key)) {
                    r.response = Some(response.clone());
                }
            }
            Event::Forgotten { idempotency_before, inbound_before, deals_before } => {
                for keys in self.idempotency.values_mut() {
                    keys.retain(|_, r| r.created_at >= *idempotency_before);
                }
                self.idempotency.retain(|_, keys| !keys.is_empty());
                self.inbound.retain(|_, seen| *seen >= *inbound_before);
                self.deals.retain(|_, d| !(d.ended && d.ends_at < *deals_before));
            }
            Event::WebhookQueued { webhook } => {
                let wanted: Vec<EndpointId> =
                    self.endpoints.values().filter(|e| e.wants(&webhook.event_type)).map(|e| e.id).collect();
                for endpoint in wanted {
                    let id = DeliveryId(self.next_delivery);
                    self.next_delivery += 1;
                    self.outbox.insert(
                        id,
                        Delivery {
                            id,
                            endpoint,
                            event_id: webhook.id.clone(),
                            event_type: webhook.event_type.clone(),
                            payload: webhook.payload.clone(),
                            created_at: webhook.created_at,
                            attempts: 0,
                            next_attempt_at: at,
                            last_status: None,
                            dead_at: None,
                        },
                    );
                }
            }
            Event::EndpointSaved { endpoint } => {
                self.endpoints.insert(endpoint.id, endpoint.clone());
                if !endpoint.enabled {
                    self.dead_letter_all(endpoint.id, at, None);
                }
            }
            Event::EndpointRemoved { endpoint_id } => {
                self.endpoints.remove(endpoint_id);
                self.outbox.retain(|_, d| d.endpoint != *endpoint_id);
                self.dead_letters.retain(|_, d| d.endpoint != *endpoint_id);
            }
            Event::EndpointGone { endpoint_id, delivery_id } => {
                if let Some(e) = self.endpoints.get_mut(endpoint_id) {
                    e.enabled = false;
                    e.disabled_reason = Some("the endpoint answered 410 Gone".into());
                }
                if let Some(d) = self.outbox.get_mut(delivery_id) {
                    d.attempts += 1;
                }
                self.dead_letter_all(*endpoint_id, at, Some(410));
            }
            Event::DeliverySucceeded { delivery_id, .. } => {
                self.outbox.remove(delivery_id);
            }
            Event::DeliveryFailed { delivery_id, status, next_attempt_at } => {
                let Some(d) = self.outbox.get_mut(delivery_id) else { return };
                d.attempts += 1;
                d.last_status = *status;
                match next_attempt_at {
                    Some(next) => d.next_attempt_at = *next,
                    None => {
                        if let Some(d) = self.outbox.remove(delivery_id) {
                            self.dead_letter(d, at);
                        }
                    }
                }
            }
            Event::DeliveryReplayed { delivery_id } => {
                if let Some(mut d) = self.dead_letters.remove(delivery_id) {
                    d.attempts = 0;
                    d.next_attempt_at = at;
                    d.dead_at = None;
                    self.outbox.insert(d.id, d);
                }
            }
        }
    }

    /// What `event` means for the measures of the show it came through ([`crate::analytics`]),
    /// judged against the state before it applies.
    fn measure(&mut self, at: Millis, event: &Event) {
        let variants = &self.variants;
        let product_of = |sku: &Sku| variants.get(sku).map(|v| v.product.clone());
        match event {
            Event::CartLineSet { buyer, sku, quantity, show, .. } => {
                let had = self.carts.get(buyer).and_then(|c| c.lines.get(sku)).copied().unwrap_or(0);
                let product = product_of(sku).filter(|_| *quantity > had);
                if let (Some(sales), Some(product)) = (sales_of(&mut self.analytics, show.as_ref()), product)
                {
                    sales.added_to_cart(at, &product);
                }
            }
            Event::OrderCreated { order } => {
                if let Some(sales) = sales_of(&mut self.analytics, order.show.as_ref()) {
                    sales.checkout(order, product_of);
                }
            }
            Event::PaymentChanged { order_id, to, .. } => {
                // Paid once: when the money is first secured (an authorization, or a charge).
                let order = self.orders.get(order_id).filter(|o| to.is_settled() && !o.payment.is_settled());
                if let Some((sales, order)) =
                    order.and_then(|o| Some((sales_of(&mut self.analytics, o.show.as_ref())?, o)))
                {
                    sales.paid(at, order, product_of);
                }
            }
            Event::OrderRefunded { order_id, amount, .. } => {
                let show = self.orders.get(order_id).and_then(|o| o.show.as_ref());
                if let Some(sales) = sales_of(&mut self.analytics, show) {
                    sales.refunded(at, *amount);
                }
            }
            Event::DealStarted { deal_id, .. } | Event::DealEnded { deal_id } => {
                let Some(deal) = self.deals.get(deal_id) else { return };
                let started = matches!(event, Event::DealStarted { .. });
                if let (Some(sales), Some(product)) =
                    (sales_of(&mut self.analytics, deal.show.as_ref()), product_of(&deal.sku))
                {
                    sales.deal(at, *deal_id, product, started);
                }
            }
            _ => {}
        }
    }

    fn drop_cart_if_empty(&mut self, buyer: &str) {
        if self.carts.get(buyer).is_some_and(|c| c.lines.is_empty() && c.coupon.is_none()) {
            self.carts.remove(buyer);
        }
    }

    /// Gives an order's stock back: a reservation to `available`, committed units to `on_hand`.
    fn release(&mut self, id: OrderId, at: Millis, reason: &str) {
        let Some(order) = self.orders.get_mut(&id) else { return };
        let hold = order.hold;
        if hold == StockHold::Released {
            return;
        }
        order.hold = StockHold::Released;
        order.note(at, Change::StockReleased { reason: reason.to_string() });
        self.reservations.remove(&id);
        for (sku, q, deal) in order.units() {
            if let Some(v) = self.variants.get_mut(sku) {
                match hold {
                    StockHold::Reserved { .. } => v.reserved = v.reserved.saturating_sub(q),
                    _ => v.on_hand = v.on_hand.saturating_add(q).min(MAX_STOCK),
                }
            }
            if let Some(d) = deal.and_then(|d| self.deals.get_mut(&d)) {
                d.taken = d.taken.saturating_sub(q);
            }
        }
    }

    /// Takes an order's units from `on_hand`, from its reservation if it still has one. The
    /// caller checked that the stock is there (see `Shop::settle`).
    fn commit(&mut self, id: OrderId, at: Millis) {
        let Some(order) = self.orders.get_mut(&id) else { return };
        let hold = order.hold;
        if hold == StockHold::Committed {
            return;
        }
        order.hold = StockHold::Committed;
        order.note(at, Change::StockCommitted);
        self.reservations.remove(&id);
        for (sku, q, deal) in order.units() {
            if let Some(v) = self.variants.get_mut(sku) {
                if let StockHold::Reserved { .. } = hold {
                    v.reserved = v.reserved.saturating_sub(q);
                }
                v.on_hand = v.on_hand.saturating_sub(q);
            }
            if hold == StockHold::Released
                && let Some(d) = deal.and_then(|d| self.deals.get_mut(&d))
            {
                d.taken = d.taken.saturating_add(q);
            }
        }
    }

    fn dead_letter(&mut self, mut d: Delivery, at: Millis) {
        d.dead_at = Some(at);
        self.dead_letters.insert(d.id, d);
        while self.dead_letters.len() > MAX_DEAD_LETTERS {
            self.dead_letters.pop_first();
        }
    }

    fn dead_letter_all(&mut self, endpoint: EndpointId, at: Millis, status: Option<u16>) {
        let ids: Vec<DeliveryId> =
            self.outbox.values().filter(|d| d.endpoint == endpoint).map(|d| d.id).collect();
        for id in ids {
            if let Some(mut d) = self.outbox.remove(&id) {
                d.last_status = status.or(d.last_status);
                self.dead_letter(d, at);
            }
        }
    }

    /// The deal running on `sku` at `now`, if any (deals on one SKU never overlap).
    pub fn active_deal(&self, sku: &Sku, now: Millis) -> Option<&FlashDeal> {
        self.deals.values().find(|d| d.sku == *sku && d.is_active(now))
    }

    /// The deal whose price `sku` has at `now` for a cart: the running one, or for a replay's
    /// cart one kept on for replays ([`FlashDeal::is_replay_price`]).
    pub fn deal_for(&self, sku: &Sku, now: Millis, replay: bool) -> Option<&FlashDeal> {
        self.active_deal(sku, now)
            .or_else(|| self.deals.values().find(|d| replay && d.sku == *sku && d.is_replay_price(now)))
    }

    /// The buyer's orders that hold stock (reserved or committed).
    pub fn holding_orders<'a>(&'a self, buyer: &str) -> impl Iterator<Item = &'a Order> + 'a {
        self.buyer_orders
            .get(buyer)
            .into_iter()
            .flatten()
            .filter_map(|id| self.orders.get(id))
            .filter(|o| o.hold != StockHold::Released)
    }

    /// Units of `sku` the buyer holds in open and committed orders.
    pub fn buyer_units(&self, buyer: &str, sku: &Sku) -> u32 {
        self.holding_orders(buyer)
            .flat_map(|o| o.units())
            .filter(|(s, _, _)| *s == sku)
            .map(|(_, q, _)| q)
            .sum()
    }

    /// Units the buyer holds at `deal`'s price, with those of every subject of their guest
    /// `device` (a new guest token does not make a new buyer).
    pub fn buyer_deal_units(&self, buyer: &str, device: Option<&str>, deal: DealId) -> u32 {
        let of_device = device.and_then(|d| self.device_orders.get(d)).into_iter().flatten();
        let ids: BTreeSet<OrderId> =
            self.buyer_orders.get(buyer).into_iter().flatten().chain(of_device).copied().collect();
        ids.iter()
            .filter_map(|id| self.orders.get(id))
            .filter(|o| o.hold != StockHold::Released)
            .flat_map(|o| o.units())
            .filter(|(_, _, d)| *d == Some(deal))
            .map(|(_, q, _)| q)
            .sum()
    }

    /// The buyer's record of `key`, unless it is older than the idempotency window.
    pub fn idempotency_record(&self, buyer: &str, key: &str, now: Millis) -> Option<&IdempotencyRecord> {
        self.idempotency.get(buyer)?.get(key).filter(|r| r.expires_at() > now)
    }

    pub fn orders_of<'a>(&'a self, buyer: &str) -> impl Iterator<Item = &'a Order> + 'a {
        self.buyer_orders.get(buyer).into_iter().flatten().filter_map(|id| self.orders.get(id))
    }
}

fn to_str(p: PaymentState) -> &'static str {
    match p {
        PaymentState::Failed => "failed",
        PaymentState::Cancelled => "cancelled",
        _ => "released",
    }
}

/// The measures of `show`, if the event came through one.
fn sales_of<'a>(
    analytics: &'a mut BTreeMap<String, ShowSales>,
    show: Option<&String>,
) -> Option<&'a mut ShowSales> {
    show.map(|s| analytics.entry(s.clone()).or_default())
}
