//! The shop routes on Spin: the shop's own API (through a show or the shop), its webhook and
//! inbound secrets, signed merchant updates, the webhooks it sends and the payments it asks for.
//! The test provider's answers are the event's next inputs; Stripe's charges are leased in the
//! shop's value and carried out once the event committed (see [`crate::payments`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use liveshop_api::route::ShopRoute;
use liveshop_api::shop::{Claim, INBOUND_SECRET_ID, ShopifyInbound};
use liveshop_api::{ApiError, Caller};
use liveshop_identity::Identity;
use liveshop_payments::stripe::{self, StripeConfig, StripeResult};
use liveshop_room::filter::address_key;
use liveshop_room::show::ShopRecord;
use liveshop_shop::guard::AddressGuard;
use liveshop_shop::outbox::DeliveryRequest;
use liveshop_shop::shopify::ShopifySettings;
use liveshop_shop::{Epoch, Input, OrderId, Output, PaymentKind, PaymentRequest, Shop};
use liveshop_webhooks::rotation::SecretRing;

use crate::store::{self, Blob, StoreError};
use crate::{Call, Config, Reply, internal, json, now_ms, random_bytes, random_u53, reply};

/// Request headers the shop's core sees; everything else stays with the host.
const FORWARDED_HEADERS: [&str; 1] = ["idempotency-key"];
/// Host records: the shop's owner, the shows sold from it, Shopify settings, secrets.
const REGISTERED: &str = "registered";
const SHOWS: &str = "shows";
const SHOPIFY: &str = "shopify";
const COUPON_GUARD: &str = "coupon-guard";
const COUPON_FAILURES: &str = "coupon-failures";
/// Stripe charges being carried out: the order, and until when (ms) its lease runs.
const CHARGE_LEASES: &str = "charge-leases";
/// How long a request that leased a charge has to carry it out before another may ask again.
const CHARGE_LEASE_MS: u64 = 60_000;
/// How many times the request's event was applied again because another instance had written
/// the shop first (the compare-and-swap's retries): what the flash-sale bench counts.
pub const RETRIES_HEADER: &str = "liveshop-retries";
/// How long a webhook attempt may take before it counts as no answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn key(shop: &str) -> String {
    format!("shop/{shop}")
}

fn no_shop(shop: &str) -> ApiError {
    ApiError::new(404, "shop_not_found", format!("no shop {shop:?}"))
}

fn secrets(blob: &Blob, secret_id: &str) -> SecretRing {
    blob.host
        .get(&format!("secret/{secret_id}"))
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// The shop's part of `POST /v1/shows`: judge the claim and list the show.
pub(crate) fn register(shop: &str, claim: &Claim) -> Result<(), ApiError> {
    let registered = store::transact(&key(shop), |blob| {
        let record: Option<ShopRecord> =
            blob.host.get(REGISTERED).map(|r| serde_json::from_str(r).unwrap_or_default());
        match claim.judge(record.as_ref()) {
            Err(refusal) => return Ok(Err(refusal)),
            Ok(Some(record)) => blob.set_host(REGISTERED, liveshop_api::shop::registered(shop, &record)),
            Ok(None) => {}
        }
        let mut shows: Vec<(u64, String)> =
            blob.host.get(SHOWS).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
        if !shows.iter().any(|(_, id)| *id == claim.show.1) {
            shows.push(claim.show.clone());
            blob.set_host(SHOWS, serde_json::to_string(&shows).map_err(|e| StoreError::Core(e.to_string()))?);
        }
        Ok(Ok(()))
    })?;
    registered.value
}

/// Host record of the PaymentIntent of an order's charge.
fn intent_record(order: OrderId) -> String {
    format!("stripe_intent/{order}")
}

/// Records `intent` as the charge of `order`; the first one recorded stays.
fn remember_intent(blob: &mut Blob, order: OrderId, intent: &str) {
    let record = intent_record(order);
    if !blob.host.contains_key(&record) {
        blob.set_host(&record, intent.to_string());
    }
}

/// What one event of the shop gave out, and what to do after it committed: the webhooks to
/// send (with the keys that sign each) and the Stripe payments leased to this request (with the
/// intent known for the order).
#[derive(Default)]
struct Ran {
    reply: Option<(u16, &'static str, Vec<u8>)>,
    deliveries: Vec<(DeliveryRequest, Vec<liveshop_webhooks::Secret>)>,
    payments: Vec<(PaymentRequest, Option<String>)>,
}

/// Applies `make`'s inputs to a registered shop (after its alarm if due, and after charges asked
/// for before), commits under compare-and-swap, then sends the webhooks the event queued and the
/// payments it leased, and reports what became of them.
async fn run<I: IntoIterator<Item = Input>>(
    config: &Config,
    shop: &str,
    mut make: impl FnMut(&mut Blob) -> I,
) -> Result<Option<(u16, &'static str, Vec<u8>)>, ApiError> {
    let stripe = config.stripe.as_ref();
    Ok(commit(config, shop, |blob| apply(blob, stripe, &mut make)).await?.0)
}

/// Runs `event` on a registered shop under compare-and-swap, then sends the webhooks it queued;
/// its reply and how many times it was redone because another instance wrote first.
async fn commit(
    config: &Config,
    shop: &str,
    mut event: impl FnMut(&mut Blob) -> Result<Ran, StoreError>,
) -> Result<(Option<(u16, &'static str, Vec<u8>)>, u32), ApiError> {
    let committed = store::transact(&key(shop), |blob| {
        if !blob.host.contains_key(REGISTERED) {
            return Ok(Err(no_shop(shop)));
        }
        Ok(Ok(event(blob)?))
    })?;
    let ran = committed.value?;
    deliver(config, shop, ran.deliveries).await;
    if let Some(stripe) = &config.stripe {
        pay(config, stripe, shop, ran.payments).await;
    }
    Ok((ran.reply, committed.conflicts))
}

/// Where a payment the shop asks for goes: the test provider's answers are the event's next
/// inputs; a Stripe payment is leased to this request, to carry out once the event committed.
struct Payer {
    stripe: bool,
    now: u64,
    leases: BTreeMap<String, u64>,
}

impl Payer {
    fn ask(&mut self, req: PaymentRequest, blob: &Blob, inputs: &mut VecDeque<Input>, ran: &mut Ran) {
        if !self.stripe {
            return inputs.extend(liveshop_api::shop::test_payment(&req));
        }
        self.leases.insert(req.order.to_string(), self.now + CHARGE_LEASE_MS);
        let known = blob.host.get(&intent_record(req.order)).cloned();
        ran.payments.push((req, known));
    }

    /// Whether a payment asked for before is free to ask again: always for the test provider; for
    /// Stripe when no request holds it (none did, or its lease ran out).
    fn free(&self, req: &PaymentRequest) -> bool {
        !self.stripe || self.leases.get(&req.order.to_string()).is_none_or(|until| *until <= self.now)
    }
}

fn restore(blob: &Blob) -> Result<Shop, StoreError> {
    Shop::restore(blob.records(), Epoch(random_u53()))
        .map_err(|e| StoreError::Core(format!("cannot restore a shop: {e}")))
}

fn apply<I: IntoIterator<Item = Input>>(
    blob: &mut Blob,
    stripe: Option<&StripeConfig>,
    make: &mut impl FnMut(&mut Blob) -> I,
) -> Result<Ran, StoreError> {
    let now = now_ms();
    let mut core = restore(blob)?;
    let mut ran = Ran::default();
    let leases = blob.host.get(CHARGE_LEASES).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    let mut payer = Payer { stripe: stripe.is_some(), now, leases };
    let mut inputs: VecDeque<Input> = VecDeque::new();
    if blob.alarm_due(now) {
        inputs.push_back(Input::Alarm);
    }
    for req in core.pending_payments() {
        if payer.free(&req) {
            payer.ask(req, blob, &mut inputs, &mut ran);
        }
    }
    inputs.extend(make(blob));
    // Wrong coupon codes per buyer: the core keeps them in memory, which no instance keeps.
    let failures: Vec<(String, u64)> =
        blob.host.get(COUPON_FAILURES).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    core.load_coupon_failures(failures.clone());
    while let Some(input) = inputs.pop_front() {
        core.handle(now, input);
        while let Some(output) = core.poll_output() {
            match output {
                Output::Store(write) => blob.write(write),
                Output::SetAlarm(at) => blob.set_alarm(at),
                Output::Reply { status, content_type, body } => {
                    ran.reply.get_or_insert((status, content_type, body));
                }
                Output::Payment(req) => payer.ask(req, blob, &mut inputs, &mut ran),
                Output::Deliver(req) => {
                    let keys = secrets(blob, &req.secret_id).signing(now);
                    ran.deliveries.push((req, keys));
                }
                // Live readers follow the stored shop.
                Output::Broadcast { .. } => {}
            }
        }
    }
    if payer.stripe {
        // A charge this very event settled (Stripe's webhook, a cancel) is not asked for again.
        let open: Vec<OrderId> = core.pending_payments().iter().map(|r| r.order).collect();
        ran.payments.retain(|(req, _)| {
            !matches!(req.kind, PaymentKind::Charge | PaymentKind::Capture) || open.contains(&req.order)
        });
        keep_leases(blob, &open, payer.leases, now)?;
    }
    let after = core.coupon_failures(now);
    if after != failures.into_iter().filter(|(_, t)| *t > now).collect::<Vec<_>>() {
        blob.set_host(
            COUPON_FAILURES,
            serde_json::to_string(&after).map_err(|e| StoreError::Core(e.to_string()))?,
        );
    }
    Ok(ran)
}

/// Keeps the leases of payments still open, and wakes the shop when the first one ends (so a
/// charge Stripe did not answer, or settles later, is asked for again).
fn keep_leases(
    blob: &mut Blob,
    open: &[OrderId],
    mut leases: BTreeMap<String, u64>,
    now: u64,
) -> Result<(), StoreError> {
    let open: Vec<String> = open.iter().map(OrderId::to_string).collect();
    leases.retain(|order, _| open.contains(order));
    let stored: BTreeMap<String, u64> =
        blob.host.get(CHARGE_LEASES).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    if leases != stored {
        blob.set_host(
            CHARGE_LEASES,
            serde_json::to_string(&leases).map_err(|e| StoreError::Core(e.to_string()))?,
        );
    }
    if let Some(end) = leases.values().min().copied() {
        let at = blob.alarm.filter(|at| *at > now).map_or(end, |at| at.min(end));
        blob.set_alarm(Some(at));
    }
    Ok(())
}

/// Carries out the payments an event leased, at Stripe, and applies each one's outcome (and the
/// intent to remember) as the shop's next event. One that gets no answer stays pending, asked
/// for again when its lease ends.
async fn pay(
    config: &Config,
    stripe: &StripeConfig,
    shop: &str,
    payments: Vec<(PaymentRequest, Option<String>)>,
) {
    for (req, known) in payments {
        let send = crate::payments::send;
        let (remember, outcomes) = match stripe::carry_out(stripe, shop, &req, known.as_deref(), send).await {
            Ok(done) => match done.result {
                Ok(outcomes) => (done.remember, outcomes),
                Err(e) => {
                    eprintln!("payment {} ({}): {e}", req.idempotency_key, e.code());
                    (done.remember, Vec::new())
                }
            },
            Err(e) => {
                eprintln!("payment {}: {e}; asked again when its lease ends", req.idempotency_key);
                continue;
            }
        };
        if remember.is_none() && outcomes.is_empty() {
            continue;
        }
        let order = req.order;
        let results = |blob: &mut Blob| {
            if let Some(intent) = &remember {
                remember_intent(blob, order, intent);
            }
            outcomes.iter().map(|o| Input::PaymentResult { order, outcome: o.clone() }).collect::<Vec<_>>()
        };
        // A report that fails leaves the payment pending, asked for again when its lease ends.
        if let Err(e) = Box::pin(run(config, shop, results)).await {
            eprintln!("payment {}: its outcome was not applied: {}", req.idempotency_key, e.message);
        }
    }
}

/// The core's answer to `GET path` from `who`.
pub(crate) async fn ask(
    config: &Config,
    shop: &str,
    who: Identity,
    path: &str,
) -> Result<(u16, Vec<u8>), ApiError> {
    let request = |_: &mut Blob| {
        let (method, path) = ("GET".into(), path.to_string());
        Some(Input::Request { who: Some(who.clone()), method, path, headers: vec![], body: vec![] })
    };
    let (status, _, body) =
        run(config, shop, request).await?.ok_or_else(|| internal("the shop produced no reply"))?;
    Ok((status, body))
}

/// The shows sold from `shop`, with when each was created.
pub(crate) async fn shows(shop: &str) -> Result<Vec<(u64, String)>, ApiError> {
    let blob = Blob::decode(store::read(&key(shop)).await?.as_deref())?;
    Ok(blob.host.get(SHOWS).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default())
}

/// A Stripe webhook's news (verified by [`crate::payments::webhook`]) applied to its order.
pub(crate) async fn settle(config: &Config, result: StripeResult) -> Result<Reply, ApiError> {
    let StripeResult { shop, order, outcome, intent } = result;
    run(config, &shop, |blob| {
        remember_intent(blob, order, &intent);
        Some(Input::PaymentResult { order, outcome: outcome.clone() })
    })
    .await?;
    Ok(reply(200, "application/json", Vec::new()))
}

/// Sends each webhook once, signed, and tells the shop what came of it (a failed attempt is
/// retried on the core's schedule, from its alarm).
async fn deliver(
    config: &Config,
    shop: &str,
    deliveries: Vec<(DeliveryRequest, Vec<liveshop_webhooks::Secret>)>,
) {
    let policy = liveshop_api::shop::endpoint_policy(&config.allow_private_hosts);
    for (req, keys) in deliveries {
        let status = match liveshop_webhooks::check_endpoint(&req.endpoint_url, &policy) {
            Ok(()) => send(&req, &keys).await,
            Err(e) => {
                eprintln!("webhook to {} not delivered: {e}", req.endpoint_url);
                None
            }
        };
        let result = |_: &mut Blob| Some(Input::DeliveryResult { delivery_id: req.delivery_id, status });
        // A report that fails leaves the delivery to the core's timeout and retry.
        let _ = Box::pin(run(config, shop, result)).await;
    }
}

async fn send(req: &DeliveryRequest, keys: &[liveshop_webhooks::Secret]) -> Option<u16> {
    let headers = liveshop_api::shop::delivery_headers(req, keys, now_ms()).ok()?;
    let mut request = http::Request::builder().method("POST").uri(&req.endpoint_url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request.body(req.payload.clone()).ok()?;
    let attempt = spin_sdk::http::send(request);
    let timeout = spin_sdk::time::sleep(DELIVERY_TIMEOUT);
    futures::pin_mut!(attempt, timeout);
    match futures::future::select(attempt, timeout).await {
        futures::future::Either::Left((Ok(response), _)) => Some(response.status().as_u16()),
        _ => None,
    }
}

/// `/v1/shops/{shop}/...` and `/v1/shows/{show}/shop/...` (`show` set).
pub(crate) async fn route(
    config: &Config,
    call: &Call,
    (shop, show): (&str, Option<&str>),
    what: ShopRoute<'_>,
    below: &str,
) -> Result<Reply, ApiError> {
    if let Some(refusal) = liveshop_api::shop::oversized(call.body.len()) {
        return Err(refusal);
    }
    // As on the other hosts, a bad secret id is refused first, then an unknown shop.
    if let ShopRoute::WebhookSecret(secret_id) = what {
        liveshop_api::shop::check_secret_id(secret_id)?;
    }
    if show.is_none()
        && !Blob::decode(store::read(&key(shop)).await?.as_deref())?.host.contains_key(REGISTERED)
    {
        return Err(no_shop(shop));
    }
    match what {
        ShopRoute::WebhookSecret(secret_id) => issue_secret(config, call, shop, secret_id),
        ShopRoute::InboundSecret => issue_secret(config, call, shop, INBOUND_SECRET_ID),
        ShopRoute::ShopifySettings => set_shopify(config, call, shop),
        ShopRoute::InboundLiveshop => {
            let body = call.body.clone();
            let signature = call.header(liveshop_webhooks::liveshop::SIGNATURE_HEADER).map(str::to_string);
            let mut refusal = None;
            let answer = run(config, shop, |blob| {
                let keys = secrets(blob, INBOUND_SECRET_ID).signing(now_ms());
                match liveshop_api::shop::verify_liveshop(&keys, signature.as_deref(), &body, now_ms()) {
                    Ok(()) => {
                        Some(liveshop_api::shop::merchant_update("liveshop", body.clone()).into_input())
                    }
                    Err(e) => {
                        refusal.get_or_insert(e);
                        None
                    }
                }
            })
            .await?;
            answer_or(answer, refusal)
        }
        ShopRoute::InboundShopify => {
            let body = call.body.clone();
            let mut refusal = None;
            let mut ignored = None;
            let answer = run(config, shop, |blob| {
                let settings: Option<ShopifySettings> =
                    blob.host.get(SHOPIFY).and_then(|t| serde_json::from_str(t).ok());
                let header = |name: &str| call.header(name);
                match liveshop_api::shop::verify_shopify(settings.as_ref(), header, &body) {
                    Ok(ShopifyInbound::Apply(event)) => {
                        Some(liveshop_api::shop::merchant_update("shopify", event).into_input())
                    }
                    Ok(ShopifyInbound::Ignored(answer)) => {
                        ignored.get_or_insert(answer);
                        None
                    }
                    Err(e) => {
                        refusal.get_or_insert(e);
                        None
                    }
                }
            })
            .await?;
            match ignored {
                Some(answer) => Ok(json(200, &answer)),
                None => answer_or(answer, refusal),
            }
        }
        ShopRoute::Live => live(shop).await,
        ShopRoute::Api => forward(config, call, shop, show, below).await,
    }
}

/// `GET .../live`: the products on sale as server-sent events: all of them first, then what
/// changed each time the stored shop did. A reconnect starts over from all of them.
async fn live(shop: &str) -> Result<Reply, ApiError> {
    let value = store::read(&key(shop)).await?;
    let mut core = restore(&Blob::decode(value.as_deref())?)?;
    let now = now_ms();
    let first = core.live_snapshot(now);
    let mut views = core.live_views(now);
    let follow = move |blob: &Blob| {
        let now = now_ms();
        let after = restore(blob).ok()?.live_views(now);
        let frame = Shop::live_changes(&views, &after, now);
        views = after;
        Some(frame.into_iter().collect())
    };
    Ok(crate::follow::stream(key(shop), vec![first], Some(value), Some(follow), |_| {}))
}

/// The core's answer, or the refusal the host made instead of asking it.
fn answer_or(
    answer: Option<(u16, &'static str, Vec<u8>)>,
    refusal: Option<ApiError>,
) -> Result<Reply, ApiError> {
    match (refusal, answer) {
        (Some(refusal), _) => Err(refusal),
        (None, Some((status, content_type, body))) => Ok(shop_reply(status, content_type, body)),
        (None, None) => Err(internal("the shop produced no reply")),
    }
}

/// A shop's answer, with `Retry-After` when it is a `429` that says when.
fn shop_reply(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
    let retry_after = liveshop_shop::guard::retry_after(status, &body);
    let mut out = reply(status, content_type, body);
    if let Some(secs) = retry_after {
        out.headers_mut().insert("retry-after", http::HeaderValue::from(secs));
    }
    out
}

/// The merchant of `shop`, from the token presented, or the refusal.
fn merchant(config: &Config, call: &Call, shop: &str) -> Result<(), ApiError> {
    config.caller(call, shop)?.merchant().map(drop)
}

/// `POST .../webhook-secrets/{secret_id}` and `POST .../inbound-secrets/liveshop`: the answer
/// shows the secret once.
fn issue_secret(config: &Config, call: &Call, shop: &str, secret_id: &str) -> Result<Reply, ApiError> {
    merchant(config, call, shop)?;
    let secret = liveshop_api::shop::secret_to_issue(&call.body, random_bytes())?;
    let issued = store::transact(&key(shop), |blob| {
        if !blob.host.contains_key(REGISTERED) {
            return Ok(Err(no_shop(shop)));
        }
        let mut ring = secrets(blob, secret_id);
        let previous_expires_at = ring.rotate(&secret, now_ms());
        let ring = serde_json::to_string(&ring).map_err(|e| StoreError::Core(e.to_string()))?;
        blob.set_host(&format!("secret/{secret_id}"), ring);
        Ok(Ok(previous_expires_at))
    })?;
    let previous_expires_at = issued.value?;
    Ok(json(201, &liveshop_api::shop::issued_secret(secret_id, &secret, previous_expires_at)))
}

/// `PUT .../inbound-secrets/shopify`: `{secret, currency}` of a Shopify app.
fn set_shopify(config: &Config, call: &Call, shop: &str) -> Result<Reply, ApiError> {
    merchant(config, call, shop)?;
    let settings =
        ShopifySettings::parse(&call.body).map_err(|e| ApiError::new(400, e.code(), e.to_string()))?;
    let settings = serde_json::to_string(&settings).map_err(|e| internal(e.to_string()))?;
    let stored = store::transact(&key(shop), |blob| {
        if !blob.host.contains_key(REGISTERED) {
            return Ok(Err(no_shop(shop)));
        }
        blob.set_host(SHOPIFY, settings.clone());
        Ok(Ok(()))
    })?;
    stored.value?;
    Ok(reply(204, "application/json", vec![]))
}

/// The shop's own API: the caller from the token for the shop or the show, and the show
/// the request came through, if it did.
async fn forward(
    config: &Config,
    call: &Call,
    shop: &str,
    show: Option<&str>,
    below: &str,
) -> Result<Reply, ApiError> {
    let scope = show.unwrap_or(shop);
    let Caller(who) = config.caller(call, scope)?;
    let mut path = below.to_string();
    if !call.query.is_empty() {
        path = format!("{path}?{}", call.query);
    }
    let method = call.method.as_str().to_string();
    let policy = liveshop_api::shop::endpoint_policy(&config.allow_private_hosts);
    if let Err(e) = liveshop_shop::api::screen_endpoint(&method, &path, &call.body, &policy) {
        return Ok(reply(e.status(), "application/json", e.body().into_bytes()));
    }
    let mut headers: Vec<(String, String)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|name| Some((name.to_string(), call.header(name)?.to_string())))
        .collect();
    // For the show's measures; never taken from the client.
    if let Some(show) = show {
        headers.push((liveshop_shop::analytics::SHOW_HEADER.into(), show.into()));
    }
    let body = call.body.clone();
    let mut input = |_: &mut Blob| {
        Some(Input::Request {
            who: who.clone(),
            method: method.clone(),
            path: path.clone(),
            headers: headers.clone(),
            body: body.clone(),
        })
    };
    let addr = call.client_ip();
    let (answer, conflicts) = commit(config, shop, |blob| {
        // Wrong coupon codes per client address, kept with the shop: instances share no memory.
        let mut guard = AddressGuard::from_rows(
            blob.host
                .get(COUPON_GUARD)
                .and_then(|t| serde_json::from_str::<Vec<_>>(t).ok())
                .unwrap_or_default(),
        );
        let attempt = match addr.map(|a| guard.before("", address_key(a), &method, &path, now_ms())) {
            Some(Err(refusal)) => {
                let reply = Some((refusal.status(), "application/json", refusal.body().into_bytes()));
                return Ok(Ran { reply, ..Ran::default() });
            }
            Some(Ok(attempt)) => attempt,
            None => None,
        };
        let ran = apply(blob, config.stripe.as_ref(), &mut input)?;
        if let Some(attempt) = attempt {
            let (status, body) = ran.reply.as_ref().map_or((500, &[][..]), |(s, _, b)| (*s, &b[..]));
            guard.after(attempt, status, body);
            let rows =
                serde_json::to_string(&guard.rows(now_ms())).map_err(|e| StoreError::Core(e.to_string()))?;
            blob.set_host(COUPON_GUARD, rows);
        }
        Ok(ran)
    })
    .await?;
    let mut out = answer_or(answer, None)?;
    out.headers_mut().insert(RETRIES_HEADER, http::HeaderValue::from(conflicts));
    Ok(out)
}

/// `POST /v1/alarms`: runs every listed alarm that is due (see `docs/spin.md`): what a Spin
/// cron trigger, or any scheduler, calls every second. Running an alarm early or twice is
/// harmless to the cores, so the route needs no token.
pub(crate) async fn run_alarms(config: &Config) -> Result<Reply, ApiError> {
    let due = store::due_alarms(now_ms())?;
    for key in &due {
        // The alarm runs first in any event of the actor.
        let ran = match key.split_once('/') {
            Some(("room", room)) => crate::room::touch(room),
            Some(("audience", room)) => crate::room::count_audience(room, None, false),
            Some(("shop", shop)) => run(config, shop, |_| None).await.map(drop),
            _ => Ok(()),
        };
        if let Err(e) =
            ran.map_err(|e| e.message).and_then(|()| store::relist_alarm(key).map_err(|e| e.to_string()))
        {
            eprintln!("alarm of {key}: {e}");
        }
    }
    Ok(json(200, &serde_json::json!({ "ran": due.len() })))
}
