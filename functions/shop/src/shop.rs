//! The shop actor: one [`Shop`] per merchant. Inputs in, outputs out; see the crate docs.
//! The HTTP routes are in [`crate::api`]; this file holds the actor's machinery: persistence,
//! time, payments, inventory alerts and the webhook outbox.

use std::collections::{BTreeMap, VecDeque};

use liveshop_identity::Identity;
pub use liveshop_journal::Write;
use liveshop_journal::{Entry, Journal, Policy};
pub use liveshop_journal::{RestoreError, keys};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalog::StockAlert;
use crate::deals::DealStart;
use crate::guard::{Attempts, BUYER_COUPON_FAILURES, MAX_KEYS};
use crate::idempotency::StoredResponse;
use crate::ids::{DAY, DealId, DeliveryId, Epoch, Millis, OrderId, ProductId, Seq, Sku};
use crate::orders::{CaptureState, Checkout, FulfilmentState, Order, PaymentState, StockHold};
use crate::outbox::{self, DELIVERY_TIMEOUT_MS, DeliveryRequest, Verdict, WebhookEvent};
use crate::payment::{Capture, PaymentKind, PaymentOutcome, PaymentRequest};
use crate::protocol::{ApiError, ErrorCode, Event, to_json};
use crate::state::ShopState;

/// A snapshot is written after this many events; the log before it is deleted.
pub const SNAPSHOT_EVERY: u64 = 256;
/// Merchant update event ids are remembered this long (providers retry for up to 3 days).
pub const INBOUND_TTL_MS: Millis = 7 * DAY;
/// Ended deals are kept this long, for the Omnibus price of later deals.
pub const DEAL_RETENTION_MS: Millis = 60 * DAY;

/// What the host tells the shop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An HTTP request routed to this shop; see [`crate::api`] for the routes. `who` is the
    /// caller the host verified from a token, if any; headers are matched case-insensitively.
    Request {
        who: Option<Identity>,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// What the provider said about an order's charge (maybe late, maybe twice).
    PaymentResult { order: OrderId, outcome: PaymentOutcome },
    /// The answer to a [`Output::Deliver`]: the HTTP status, or `None` for a network error.
    DeliveryResult { delivery_id: DeliveryId, status: Option<u16> },
    /// The alarm the shop asked for has fired (maybe late, maybe twice).
    Alarm,
}

/// What the shop asks of the host, in order. Storage writes of one `handle` call must commit
/// together before any reply, payment or delivery of that call leaves the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A storage write of the event (the journal's: log records, snapshots, the epoch).
    Store(Write),
    /// Set (or with `None`, clear) the shop's one alarm.
    SetAlarm(Option<Millis>),
    /// The answer to an [`Input::Request`].
    Reply { status: u16, content_type: &'static str, body: Vec<u8> },
    /// Call the payment provider; see [`PaymentRequest`].
    Payment(PaymentRequest),
    /// Send a webhook; see [`DeliveryRequest`].
    Deliver(DeliveryRequest),
    /// A frame for every client watching the shop live: the products whose public view (price,
    /// stock, deal) changed, as [`Shop::live_snapshot`] describes.
    Broadcast { frame: String },
}

/// One logged event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub seq: Seq,
    pub at: Millis,
    pub event: Event,
}

impl Entry for LogRecord {
    fn seq(&self) -> Seq {
        self.seq
    }
}

/// A snapshot every [`SNAPSHOT_EVERY`] events, and the log it covers deleted: nobody resumes a
/// shop's log.
const POLICY: Policy = Policy { snapshot_every: SNAPSHOT_EVERY, retain: 0 };

/// The public view of each product on sale, by id ([`Shop::live_views`]).
pub type LiveViews = BTreeMap<ProductId, Value>;

/// One merchant's shop. See the crate documentation for the model.
#[derive(Debug)]
pub struct Shop {
    pub(crate) journal: Journal,
    pub(crate) state: ShopState,
    /// Deliveries handed to the host and not answered yet, with when to stop waiting. Not
    /// stored: after a revival they are simply handed out again (at least once).
    in_flight: BTreeMap<DeliveryId, Millis>,
    /// The alarm last asked of the host; `None` when unknown (after a revival).
    alarm: Option<Option<Millis>>,
    /// Each product's public view as last sent to live clients; empty after a revival, so the
    /// first event then sends everything once.
    live: LiveViews,
    /// Wrong coupon codes per buyer. Not stored: a revival forgets them (one more burst).
    pub(crate) coupon_failures: Attempts<String>,
    pub(crate) out: VecDeque<Output>,
}

impl Shop {
    /// A shop with no history, in a new epoch.
    pub fn new(epoch: Epoch) -> Shop {
        Shop {
            journal: Journal::new(epoch, POLICY),
            state: ShopState::default(),
            in_flight: BTreeMap::new(),
            alarm: None,
            live: BTreeMap::new(),
            coupon_failures: Attempts::new(BUYER_COUPON_FAILURES, MAX_KEYS),
            out: VecDeque::new(),
        }
    }

    /// Rebuilds a shop from everything it stored (any order). With nothing stored, it is a new
    /// shop in `new_epoch`.
    pub fn restore(records: Vec<(String, Vec<u8>)>, new_epoch: Epoch) -> Result<Shop, RestoreError> {
        let restored =
            Journal::restore(records, new_epoch, POLICY, |state: &mut ShopState, r: &LogRecord| {
                state.apply(r.at, &r.event)
            })?;
        let mut shop = Shop::new(restored.journal.epoch());
        shop.journal = restored.journal;
        shop.state = restored.state;
        Ok(shop)
    }

    pub fn epoch(&self) -> Epoch {
        self.journal.epoch()
    }

    pub fn seq(&self) -> Seq {
        self.journal.seq()
    }

    /// Whether the shop measures its shows' sales ([`crate::analytics`]); it does unless told
    /// otherwise, after every restore. Off, no show's report counts new sales: for a deployment
    /// that wants no analytics, and the baseline of `liveshop-analytics`'s bench.
    pub fn keep_measures(&mut self, on: bool) {
        self.state.measures_off = !on;
    }

    pub fn state(&self) -> &ShopState {
        &self.state
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Charges and captures still waiting for the provider. A host that may have lost `Payment`
    /// outputs (it crashed after committing an event's writes but before calling the provider)
    /// re-issues these after a restore; their idempotency keys make that safe.
    /// Wrong coupon codes per buyer not yet forgiven at `now` (kept in memory: see
    /// [`crate::guard`]), for a host that must carry them from one instance to the next.
    pub fn coupon_failures(&self, now: Millis) -> Vec<(String, Millis)> {
        self.coupon_failures.rows(now)
    }

    /// Takes back what [`Shop::coupon_failures`] gave.
    pub fn load_coupon_failures(&mut self, rows: Vec<(String, Millis)>) {
        self.coupon_failures.load(rows);
    }

    pub fn pending_payments(&self) -> Vec<PaymentRequest> {
        self.state
            .orders
            .values()
            .filter_map(|o| match &o.checkout {
                Checkout::InStream { method } if o.payment.is_open() => Some(charge(o, method)),
                Checkout::InStream { .. } if capture_pending(o) => Some(capture(o)),
                _ => None,
            })
            .collect()
    }

    /// Handles one input at `now`. Outputs are queued for [`Shop::poll_output`].
    pub fn handle(&mut self, now: Millis, input: Input) {
        // The epoch is stored before anything else: provider keys depend on it.
        if let Some(w) = self.journal.open() {
            self.out.push_back(Output::Store(w));
        }
        // Timers run first, whether or not the alarm came: a reservation that expired a moment
        // ago must not count as held, however late the host's alarm is.
        self.tick(now);
        match input {
            Input::Request { who, method, path, headers, body } => {
                let (status, body) = self.request(now, who.as_ref(), &method, &path, &headers, &body);
                self.out.push_back(Output::Reply {
                    status,
                    content_type: "application/json",
                    body: body.into_bytes(),
                });
            }
            Input::PaymentResult { order, outcome } => self.payment_result(now, order, outcome),
            Input::DeliveryResult { delivery_id, status } => self.delivery_result(now, delivery_id, status),
            Input::Alarm => {}
        }
        // Again: a command may have created a deal that starts now.
        self.tick(now);
        self.check_inventory(now);
        self.dispatch(now);
        self.sync_alarm(now);
        self.publish_live(now);
    }

    /// The frame a client watching the shop live gets first: every product on sale with its
    /// price, stock and running deal (`full: true`). Later frames
    /// ([`Output::Broadcast`]) carry only the products that changed, and `removed` ids.
    /// `now` lets clients run deal countdowns on the shop's clock.
    pub fn live_snapshot(&mut self, now: Millis) -> String {
        self.live = self.live_views(now);
        let products: Vec<&Value> = self.live.values().collect();
        to_json(
            &serde_json::json!({ "type": "shop.products", "full": true, "now": now, "products": products }),
        )
    }

    /// The public view of every product on sale, by id: what live frames are made of. A host that
    /// follows a stored shop instead of its broadcasts keeps the last views it sent and asks
    /// [`Shop::live_changes`] for what changed since.
    pub fn live_views(&self, now: Millis) -> LiveViews {
        let s = &self.state;
        s.products
            .values()
            .filter(|p| !p.archived)
            .map(|p| (p.id.clone(), crate::api::views::product(s, p, None, now)))
            .collect()
    }

    /// The live frame of the products whose view differs between `before` and `after` (with the
    /// ids no longer on sale), or `None` when nothing changed.
    pub fn live_changes(before: &LiveViews, after: &LiveViews, now: Millis) -> Option<String> {
        let changed: Vec<&Value> =
            after.iter().filter(|(id, v)| before.get(*id) != Some(*v)).map(|(_, v)| v).collect();
        let removed: Vec<&ProductId> = before.keys().filter(|id| !after.contains_key(*id)).collect();
        (!changed.is_empty() || !removed.is_empty()).then(|| {
            to_json(&serde_json::json!({
                "type": "shop.products", "full": false, "now": now, "products": changed, "removed": removed,
            }))
        })
    }

    /// Broadcasts the products whose public view changed in this event.
    fn publish_live(&mut self, now: Millis) {
        let views = self.live_views(now);
        if let Some(frame) = Shop::live_changes(&self.live, &views, now) {
            self.out.push_back(Output::Broadcast { frame });
        }
        self.live = views;
    }

    fn tick(&mut self, now: Millis) {
        let expired: Vec<OrderId> =
            self.state.reservations.iter().filter(|(_, at)| **at <= now).map(|(id, _)| *id).collect();
        for order_id in expired {
            self.emit(now, Event::StockReleased { order_id, reason: "reservation_expired".into() });
        }
        let starting: Vec<DealId> = self
            .state
            .deals
            .values()
            .filter(|d| !d.ended && d.started.is_none() && d.starts_at <= now)
            .map(|d| d.id)
            .collect();
        for id in starting {
            self.start_deal(now, id);
        }
        let ending: Vec<DealId> =
            self.state.deals.values().filter(|d| !d.ended && d.ends_at <= now).map(|d| d.id).collect();
        for id in ending {
            self.end_deal(now, id);
        }
        let timed_out: Vec<DeliveryId> =
            self.in_flight.iter().filter(|(_, at)| **at <= now).map(|(id, _)| *id).collect();
        for id in timed_out {
            self.delivery_result(now, id, None);
        }
        if self.housekeeping_due().is_some_and(|at| at <= now) {
            self.emit(
                now,
                Event::Forgotten {
                    idempotency_before: now.saturating_sub(crate::idempotency::IDEMPOTENCY_TTL_MS) + 1,
                    inbound_before: now.saturating_sub(INBOUND_TTL_MS) + 1,
                    deals_before: now.saturating_sub(DEAL_RETENTION_MS) + 1,
                },
            );
        }
    }

    /// When the next thing is to be forgotten.
    fn housekeeping_due(&self) -> Option<Millis> {
        let s = &self.state;
        let keys = s.idempotency.values().flat_map(|m| m.values()).map(|r| r.expires_at());
        let inbound = s.inbound.values().map(|at| at + INBOUND_TTL_MS);
        let deals = s.deals.values().filter(|d| d.ended).map(|d| d.ends_at + DEAL_RETENTION_MS);
        keys.chain(inbound).chain(deals).min()
    }

    fn sync_alarm(&mut self, now: Millis) {
        let s = &self.state;
        let reservations = s.reservations.values().copied();
        // The end of a replay's deal price changes the products' live views.
        let replays = s.deals.values().filter_map(|d| d.replay_until).filter(|until| *until > now);
        let deals = s
            .deals
            .values()
            .filter(|d| !d.ended)
            .map(|d| if d.started.is_none() { d.starts_at } else { d.ends_at });
        let retries =
            s.outbox.values().filter(|d| !self.in_flight.contains_key(&d.id)).map(|d| d.next_attempt_at);
        let timeouts = self.in_flight.values().copied();
        let wanted = reservations
            .chain(deals)
            .chain(replays)
            .chain(retries)
            .chain(timeouts)
            .chain(self.housekeeping_due())
            .min();
        if self.alarm != Some(wanted) {
            self.alarm = Some(wanted);
            self.out.push_back(Output::SetAlarm(wanted));
        }
    }

    /// Records an event: next seq, state change, and the journal (with compaction when due).
    pub(crate) fn emit(&mut self, now: Millis, event: Event) -> Seq {
        let seq = self.journal.next_seq();
        self.state.apply(now, &event);
        let rec = LogRecord { seq, at: now, event };
        for w in self.journal.append(&rec, &self.state) {
            self.out.push_back(Output::Store(w));
        }
        seq
    }

    /// Queues a webhook event in the outbox, in the same transaction as the event that caused
    /// it. Nothing is logged when no endpoint wants the type.
    pub(crate) fn webhook(&mut self, now: Millis, event_type: &str, data: &Value) {
        if !self.state.endpoints.values().any(|e| e.wants(event_type)) {
            return;
        }
        let webhook = WebhookEvent {
            id: format!("evt_{}_{}", self.journal.epoch().0, self.journal.next_seq().0),
            event_type: event_type.to_string(),
            created_at: now,
            payload: outbox::payload(event_type, now, data),
        };
        self.emit(now, Event::WebhookQueued { webhook });
    }

    /// Hands every due delivery to the host.
    fn dispatch(&mut self, now: Millis) {
        let due: Vec<DeliveryRequest> = self
            .state
            .outbox
            .values()
            .filter(|d| d.next_attempt_at <= now && !self.in_flight.contains_key(&d.id))
            .filter_map(|d| {
                let e = self.state.endpoints.get(&d.endpoint).filter(|e| e.enabled)?;
                Some(DeliveryRequest {
                    delivery_id: d.id,
                    endpoint_url: e.url.clone(),
                    secret_id: e.secret_id.clone(),
                    event_id: d.event_id.clone(),
                    event_type: d.event_type.clone(),
                    payload: d.payload.clone(),
                })
            })
            .collect();
        for req in due {
            self.in_flight.insert(req.delivery_id, now + DELIVERY_TIMEOUT_MS);
            self.out.push_back(Output::Deliver(req));
        }
    }

    fn delivery_result(&mut self, now: Millis, delivery_id: DeliveryId, status: Option<u16>) {
        self.in_flight.remove(&delivery_id);
        // A late answer for a delivery already settled (or dead) changes nothing.
        let Some(d) = self.state.outbox.get(&delivery_id) else { return };
        let event = match outbox::classify(status) {
            Verdict::Delivered => Event::DeliverySucceeded { delivery_id, status: status.unwrap_or(200) },
            Verdict::Gone => Event::EndpointGone { endpoint_id: d.endpoint, delivery_id },
            Verdict::Retry => Event::DeliveryFailed {
                delivery_id,
                status,
                next_attempt_at: outbox::next_attempt(d.attempts + 1, now),
            },
        };
        self.emit(now, event);
    }

    fn start_deal(&mut self, now: Millis, id: DealId) {
        let s = &self.state;
        let Some(d) = s.deals.get(&id) else { return };
        let Some(v) = s.variants.get(&d.sku) else { return };
        let others = s.deals.values().filter(|o| o.sku == d.sku && o.id != id).filter_map(|o| o.promotion());
        let was = v.omnibus_price(d.starts_at, others);
        let price = d.discount.apply(v.price).unwrap_or(v.price);
        self.emit(now, Event::DealStarted { deal_id: id, start: DealStart { was, price } });
        let data = self.deal_data(id, now);
        self.webhook(now, "flash_deal.started", &data);
    }

    pub(crate) fn end_deal(&mut self, now: Millis, id: DealId) {
        self.emit(now, Event::DealEnded { deal_id: id });
        let data = self.deal_data(id, now);
        self.webhook(now, "flash_deal.ended", &data);
    }

    fn deal_data(&self, id: DealId, now: Millis) -> Value {
        self.state.deals.get(&id).map_or(Value::Null, |d| crate::api::views::deal(&self.state, d, now))
    }

    /// Sends `inventory.low` / `inventory.sold_out` once per crossing.
    fn check_inventory(&mut self, now: Millis) {
        let threshold = self.state.settings.low_stock_threshold;
        let changed: Vec<(Sku, StockAlert, StockAlert, u32)> = self
            .state
            .variants
            .values()
            .filter(|v| v.sellable())
            .filter_map(|v| {
                let level = StockAlert::of(v.available(), threshold);
                (level != v.alert).then(|| (v.sku.clone(), v.alert, level, v.available()))
            })
            .collect();
        for (sku, before, alert, available) in changed {
            self.emit(now, Event::InventoryAlert { sku: sku.clone(), alert, available });
            if alert > before {
                let v = &self.state.variants[&sku];
                let data = serde_json::json!({
                    "sku": sku, "product_id": v.product, "available": available, "on_hand": v.on_hand,
                });
                let event_type =
                    if alert == StockAlert::SoldOut { "inventory.sold_out" } else { "inventory.low" };
                self.webhook(now, event_type, &data);
            }
        }
    }

    fn payment_result(&mut self, now: Millis, id: OrderId, outcome: PaymentOutcome) {
        let Some(order) = self.state.orders.get(&id) else { return };
        if !matches!(order.checkout, Checkout::InStream { .. }) {
            return;
        }
        let from = order.payment;
        match outcome {
            PaymentOutcome::RequiresAction { url } => {
                if from == PaymentState::Pending {
                    let to = PaymentState::RequiresAction;
                    self.emit(now, Event::PaymentChanged { order_id: id, to, reason: None, action_url: url });
                }
            }
            PaymentOutcome::Authorized | PaymentOutcome::Paid => {
                let to = if outcome == PaymentOutcome::Paid {
                    PaymentState::Paid
                } else {
                    PaymentState::Authorized
                };
                if from.may_become(to) {
                    // Paid after the merchant's fulfil asked for the capture: fulfil it now.
                    let fulfil = capture_pending(order) && to == PaymentState::Paid;
                    // A refusal here has already cancelled the order and answered the buyer.
                    if self.settle(now, id, to).is_ok() && fulfil {
                        self.fulfilled(now, id);
                    }
                } else if from == PaymentState::Cancelled && to == PaymentState::Paid {
                    // Captured after we gave up on it (a cancel raced the capture): give it back,
                    // under the one key every full refund of this order uses, so repeats of this
                    // report never refund twice.
                    self.out.push_back(Output::Payment(undo(order, PaymentKind::Refund)));
                }
                // Anything else is a duplicate or stale report: already applied.
            }
            PaymentOutcome::Failed { reason } => {
                if from == PaymentState::Authorized && order.capture_state.is_some() {
                    // The capture's answer, not the charge's: the authorization still holds, and
                    // the merchant may fulfil (capture) again or cancel. A repeated report of a
                    // failure already recorded changes nothing.
                    if capture_pending(order) {
                        self.emit(now, Event::CaptureFailed { order_id: id, reason });
                        let data = self.order_data(id);
                        self.webhook(now, "order.payment_failed", &data);
                    }
                } else if from.may_become(PaymentState::Failed) {
                    let to = PaymentState::Failed;
                    self.emit(
                        now,
                        Event::PaymentChanged { order_id: id, to, reason: Some(reason), action_url: None },
                    );
                    let data = self.order_data(id);
                    self.webhook(now, "order.payment_failed", &data);
                    self.complete_idempotency(now, id);
                }
            }
        }
    }

    /// Marks a paid order fulfilled and tells the merchant (checked by the caller).
    pub(crate) fn fulfilled(&mut self, now: Millis, id: OrderId) {
        if self.state.orders.get(&id).is_some_and(|o| o.fulfilment == FulfilmentState::Unfulfilled) {
            self.emit(now, Event::OrderFulfilled { order_id: id });
            let data = self.order_data(id);
            self.webhook(now, "order.fulfilled", &data);
        }
    }

    /// Settles an order's payment (authorized or paid), committing its stock. The stock is
    /// checked again first: a reservation that expired while the buyer paid is taken again only
    /// if the stock and the caps still allow it; otherwise the order is cancelled, the money
    /// given back, and the refusal returned.
    pub(crate) fn settle(&mut self, now: Millis, id: OrderId, to: PaymentState) -> Result<(), ApiError> {
        let order =
            self.state.orders.get(&id).ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such order"))?;
        order.check_payment(to)?;
        if order.hold != StockHold::Committed
            && let Err(e) = self.can_commit(order)
        {
            let kind = if to == PaymentState::Paid { PaymentKind::Refund } else { PaymentKind::Cancel };
            self.cancel(now, id, e.code.as_str(), Some(kind));
            return Err(e);
        }
        self.emit(now, Event::PaymentChanged { order_id: id, to, reason: None, action_url: None });
        if to == PaymentState::Paid {
            let data = self.order_data(id);
            self.webhook(now, "order.paid", &data);
        }
        self.complete_idempotency(now, id);
        Ok(())
    }

    /// Whether an order's units can be taken from stock now.
    fn can_commit(&self, order: &Order) -> Result<(), ApiError> {
        let s = &self.state;
        let mut per_sku: BTreeMap<&Sku, u32> = BTreeMap::new();
        let mut per_deal: BTreeMap<DealId, u32> = BTreeMap::new();
        for (sku, q, deal) in order.units() {
            *per_sku.entry(sku).or_default() += q;
            if let Some(d) = deal {
                *per_deal.entry(d).or_default() += q;
            }
        }
        let reserved = matches!(order.hold, StockHold::Reserved { .. });
        for (sku, q) in per_sku {
            let Some(v) = s.variants.get(sku) else {
                return Err(ApiError::new(ErrorCode::OutOfStock, format!("{sku} is gone")).with("sku", sku));
            };
            if reserved {
                // Held for us, but the merchant may have lowered the stock since.
                if v.on_hand < q {
                    let e = ApiError::new(ErrorCode::OutOfStock, format!("{sku} is out of stock"));
                    return Err(e.with("sku", sku).with("available", v.on_hand));
                }
                continue;
            }
            let over_limit = v.max_per_buyer.is_some_and(|max| s.buyer_units(&order.buyer, sku) + q > max);
            if v.available() < q || over_limit {
                let e = ApiError::new(
                    ErrorCode::ReservationExpired,
                    "the reservation expired and the stock is gone",
                );
                return Err(e.with("sku", sku).with("order_id", order.id));
            }
        }
        if !reserved {
            for (deal, q) in per_deal {
                let ok = s.deals.get(&deal).is_some_and(|d| {
                    d.remaining() >= q
                        && s.buyer_deal_units(&order.buyer, order.device.as_deref(), deal) + q
                            <= d.per_buyer_cap
                });
                if !ok {
                    let e = ApiError::new(
                        ErrorCode::ReservationExpired,
                        "the reservation expired and the deal is gone",
                    );
                    return Err(e.with("order_id", order.id));
                }
            }
        }
        Ok(())
    }

    /// Cancels an order (checked by the caller), releasing its stock, undoing its charge at the
    /// provider, telling the merchant and answering a buyer who is still waiting.
    pub(crate) fn cancel(&mut self, now: Millis, id: OrderId, reason: &str, undo_kind: Option<PaymentKind>) {
        let to = PaymentState::Cancelled;
        self.emit(
            now,
            Event::PaymentChanged { order_id: id, to, reason: Some(reason.into()), action_url: None },
        );
        let order = &self.state.orders[&id];
        if let (Some(kind), Checkout::InStream { .. }) = (undo_kind, &order.checkout) {
            self.out.push_back(Output::Payment(undo(order, kind)));
        }
        let data = self.order_data(id);
        self.webhook(now, "order.cancelled", &data);
        self.complete_idempotency(now, id);
    }

    /// Stores the final answer of the checkout that created `id`, if the buyer's key is still
    /// waiting for it.
    fn complete_idempotency(&mut self, now: Millis, id: OrderId) {
        let Some(order) = self.state.orders.get(&id) else { return };
        let (buyer, key) = (order.buyer.clone(), order.idempotency_key.clone());
        let waiting = self
            .state
            .idempotency
            .get(&buyer)
            .and_then(|m| m.get(&key))
            .is_some_and(|r| r.response.is_none());
        if waiting {
            let (status, body) = final_response(order);
            self.emit(
                now,
                Event::IdempotencyCompleted { buyer, key, response: StoredResponse { status, body } },
            );
        }
    }

    pub(crate) fn order_data(&self, id: OrderId) -> Value {
        serde_json::to_value(self.state.orders.get(&id)).unwrap_or(Value::Null)
    }
}

/// The charge request for an order.
pub(crate) fn charge(order: &Order, method: &str) -> PaymentRequest {
    PaymentRequest {
        order: order.id,
        kind: PaymentKind::Charge,
        amount: order.priced.total,
        idempotency_key: order.payment_key.clone(),
        method: Some(method.to_string()),
        capture: order.capture,
    }
}

/// A request about an order's charge other than the charge itself (capture, cancel, refund):
/// no method, automatic capture.
pub(crate) fn follow_up(order: &Order, kind: PaymentKind, idempotency_key: String) -> PaymentRequest {
    PaymentRequest { kind, idempotency_key, method: None, capture: Capture::Automatic, ..charge(order, "") }
}

/// The capture of an order's authorized charge, in full, under the current attempt's key.
pub(crate) fn capture(order: &Order) -> PaymentRequest {
    follow_up(order, PaymentKind::Capture, order.capture_key())
}

/// Whether the order's capture was asked for and not answered yet (while it is authorized).
pub(crate) fn capture_pending(order: &Order) -> bool {
    order.payment == PaymentState::Authorized && order.capture_state == Some(CaptureState::Requested)
}

/// Voiding (`Cancel`) or refunding in full (`Refund`) an order's charge. Each has one fixed
/// provider key per order, so asking twice never undoes twice.
fn undo(order: &Order, kind: PaymentKind) -> PaymentRequest {
    let suffix = if kind == PaymentKind::Refund { "refund-all" } else { "cancel" };
    follow_up(order, kind, format!("{}-{suffix}", order.payment_key))
}

/// What a finished checkout answers, forever after, to a retry with the same key.
pub(crate) fn final_response(order: &Order) -> (u16, String) {
    let reason = order.payment_reason.clone().unwrap_or_default();
    let error = match order.payment {
        PaymentState::Failed => {
            ApiError::new(ErrorCode::PaymentFailed, format!("the payment failed: {reason}"))
                .with("reason", &reason)
        }
        PaymentState::Cancelled => {
            let code = match reason.as_str() {
                "reservation_expired" => ErrorCode::ReservationExpired,
                "out_of_stock" => ErrorCode::OutOfStock,
                _ => ErrorCode::OrderCancelled,
            };
            ApiError::new(code, format!("the order was cancelled: {reason}")).with("reason", &reason)
        }
        _ => return (201, to_json(&serde_json::json!({ "order": order }))),
    };
    let error = error.with("order_id", order.id);
    (error.status(), error.body())
}
