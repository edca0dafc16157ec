//! The shop object: `liveshop-shop` behind a Durable Object, one per shop.
//!
//! The same loop as the edge node's component (`functions/component/src/shop.rs`). Effects
//! leave after the event's writes: payments go to the built-in test provider
//! (`liveshop_shop::test_provider`), whose outcomes come back as the next inputs, or, with
//! `PAYMENTS_PROVIDER=stripe`, to Stripe after the event (`waitUntil`, `liveshop_payments` over
//! `fetch`, each order's intent kept in the `host` table); webhooks are
//! POSTed, signed per Standard Webhooks with the shop's secrets, after the event (`waitUntil`),
//! and their results come back as inputs. Retries are the core's: it asks for an alarm, and on
//! the alarm for the delivery again, so the schedule is the edge node's. The live product feed
//! is a server-sent event stream per reader: the snapshot first, then the shop's broadcasts.
//! Signed merchant updates (`inbound/liveshop`, and Shopify's `inbound/shopify` mapped by
//! `liveshop_shop::shopify`) are verified here and applied by the core as `/merchant/events`,
//! once per event id.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use futures_channel::mpsc::{Sender, channel};
use liveshop_api::Caller;
use liveshop_api::shop::{
    Claim, INBOUND_SECRET_ID, ShopifyInbound, check_secret_id, delivery_headers, issued_secret,
    merchant_update, registered, secret_to_issue, test_payment, verify_liveshop, verify_shopify,
};
use liveshop_identity::Identity;
use liveshop_payments::PaymentError;
use liveshop_payments::stripe::{self, StripeConfig, StripeResult};
use liveshop_room::show::ShopRecord;
use liveshop_shop::guard::{self, AddressGuard};
use liveshop_shop::outbox::DeliveryRequest;
use liveshop_shop::shopify::ShopifySettings;
use liveshop_shop::{Epoch, Input, OrderId, Output, PaymentOutcome, PaymentRequest};
use liveshop_webhooks::rotation::SecretRing;
use liveshop_webhooks::{EndpointPolicy, Secret, check_endpoint};
use serde::Deserialize;
use worker::*;

use crate::{api_error, error, now_ms, random_u53, reply, sse_event, sse_response};

/// Request headers the shop sees; everything else stays with the host.
const FORWARDED_HEADERS: [&str; 1] = ["idempotency-key"];
/// Host record of the shop's Shopify settings.
const SHOPIFY: &str = "shopify";

#[durable_object]
pub struct Shop {
    inner: Rc<Inner>,
}

struct Inner {
    state: State,
    env: Env,
    live: RefCell<Option<Live>>,
    /// Readers of the live product feed (these keep the object in memory while open).
    feeds: RefCell<Vec<Sender<String>>>,
    /// Wrong coupon codes per client address, in memory ([`liveshop_shop::guard`]).
    coupon_guard: RefCell<AddressGuard>,
}

struct Live {
    shop: liveshop_shop::Shop,
    /// Charges asked for before a revival (their outcomes may never have arrived).
    pending: Vec<PaymentRequest>,
}

impl DurableObject for Shop {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        let _ = sql.exec("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)", None);
        let _ = sql.exec("CREATE TABLE IF NOT EXISTS host (kind TEXT PRIMARY KEY, body TEXT NOT NULL)", None);
        let coupon_guard = RefCell::default();
        Shop {
            inner: Rc::new(Inner {
                state,
                env,
                live: RefCell::default(),
                feeds: RefCell::default(),
                coupon_guard,
            }),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // Read before any check; see the room's fetch.
        let body = req.bytes().await?;
        if let Some(refusal) = oversized(&body) {
            return refusal;
        }
        let url = req.url()?;
        let segs: Vec<String> =
            url.path_segments().map(|s| s.map(String::from).collect()).unwrap_or_default();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let full = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let inner = &self.inner;
        match segs.as_slice() {
            ["v1", "shops", shop, "_register"] => {
                let claim: Claim = serde_json::from_slice(&body)?;
                let stored = inner.host("registered");
                let record: Option<ShopRecord> = stored.map(|r| serde_json::from_str(&r).unwrap_or_default());
                match claim.judge(record.as_ref()) {
                    Err(e) => return api_error(&e),
                    Ok(Some(record)) => inner.put_host("registered", &registered(shop, &record))?,
                    Ok(None) => {}
                }
                inner.list_show(claim.show)?;
                Response::empty()
            }
            ["v1", "shops", shop, rest @ ..] => {
                let shop = shop.to_string();
                // As on the edge node, a bad secret id is refused before the shop is looked up.
                if let (Method::Post, ["webhook-secrets", secret_id]) = (req.method(), rest)
                    && let Err(e) = check_secret_id(secret_id)
                {
                    return api_error(&e);
                }
                if inner.host("registered").is_none() {
                    return error(404, "shop_not_found", format!("no shop {shop:?}"));
                }
                match (req.method(), rest) {
                    (Method::Get, ["_shows"]) => Response::from_json(&inner.shows()),
                    // The Worker asks for a show's sales for a reader it verified.
                    (Method::Post, ["_analytics", show]) => {
                        let who: Identity = serde_json::from_slice(&body)?;
                        let path = format!("/analytics/{show}");
                        let input = Input::Request {
                            who: Some(who),
                            method: "GET".into(),
                            path,
                            headers: vec![],
                            body: vec![],
                        };
                        match Inner::run(inner, input).await? {
                            Some((status, content_type, body)) => reply(status, content_type, body),
                            None => error(500, "internal", "the shop produced no reply"),
                        }
                    }
                    (Method::Post, ["webhook-secrets", secret_id]) => {
                        inner.issue_secret(&req, &shop, secret_id, &body).await
                    }
                    (Method::Get, ["live"]) => inner.live_feed(&req).await,
                    (Method::Post, ["inbound-secrets", "liveshop"]) => {
                        inner.issue_secret(&req, &shop, INBOUND_SECRET_ID, &body).await
                    }
                    (Method::Post, ["inbound", "liveshop"]) => {
                        Inner::inbound_liveshop(inner, &req, body).await
                    }
                    (Method::Put, ["inbound-secrets", "shopify"]) => inner.set_shopify(&req, &shop, &body),
                    (Method::Post, ["inbound", "shopify"]) => Inner::inbound_shopify(inner, &req, body).await,
                    (Method::Post, ["_payment"]) => Inner::payment_result(inner, &body).await,
                    _ => {
                        let path =
                            full.strip_prefix(&format!("/v1/shops/{shop}")).unwrap_or(&full).to_string();
                        self.forward(&req, (&shop, None), path, body).await
                    }
                }
            }
            ["v1", "shows", show, "shop", rest @ ..] => {
                if req.method() == Method::Get && matches!(rest, ["live"]) {
                    return inner.live_feed(&req).await;
                }
                let show = show.to_string();
                let path = full.strip_prefix(&format!("/v1/shows/{show}/shop")).unwrap_or(&full).to_string();
                self.forward(&req, (&show, Some(&show)), path, body).await
            }
            _ => error(404, "not_found", "no such endpoint"),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        Inner::run(&self.inner, Input::Alarm).await?;
        Response::ok("")
    }
}

/// `413 payload_too_large` for a request body over the shop's limit (a shop's, a new show's, a
/// guest's), checked first, as on the edge node.
pub(crate) fn oversized(body: &[u8]) -> Option<Result<Response>> {
    liveshop_api::shop::oversized(body.len()).map(|e| api_error(&e))
}

impl Shop {
    /// The shop API: the caller from the token for `scope` (the shop or the show), and the
    /// show the request came through, if it did.
    async fn forward(
        &self,
        req: &Request,
        (scope, show): (&str, Option<&str>),
        path: String,
        body: Vec<u8>,
    ) -> Result<Response> {
        let who = match crate::caller(req, &self.inner.env, scope)? {
            Ok(Caller(who)) => who,
            Err(e) => return api_error(&e),
        };
        // Anonymous reads wake the shop too: paced per address like connections.
        if who.is_none()
            && let Some(refusal) = crate::pacing::admit(&self.inner.env, req).await?
        {
            return Ok(refusal);
        }
        let policy = endpoint_policy(&self.inner.env);
        if let Err(e) = liveshop_shop::api::screen_endpoint(req.method().as_ref(), &path, &body, &policy) {
            return reply(e.status(), "application/json", e.body().into_bytes());
        }
        let mut headers: Vec<(String, String)> = FORWARDED_HEADERS
            .iter()
            .filter_map(|name| Some((name.to_string(), req.headers().get(name).ok()??)))
            .collect();
        // For the show's measures; never taken from the client, as on the edge node.
        if let Some(show) = show {
            headers.push((liveshop_shop::analytics::SHOW_HEADER.into(), show.into()));
        }
        // Guessing coupon codes is limited per address here, as per buyer in the shop; without an
        // address (workerd run locally) only the shop's count applies.
        let method = req.method().to_string();
        let mut attempt = None;
        if let Some(addr) = crate::pacing::Caller::of(req)?.addr() {
            // One object per shop: every key here is this shop's.
            match self.inner.coupon_guard.borrow_mut().before("", addr, &method, &path, now_ms()) {
                Ok(a) => attempt = a,
                Err(refusal) => {
                    return shop_reply(refusal.status(), "application/json", refusal.body().into());
                }
            }
        }
        let input = Input::Request { who, method, path, headers, body };
        let answer = Inner::run(&self.inner, input).await;
        if let Some(attempt) = attempt {
            let (status, body) = match &answer {
                Ok(Some((status, _, body))) => (*status, &body[..]),
                _ => (500, &[][..]),
            };
            self.inner.coupon_guard.borrow_mut().after(attempt, status, body);
        }
        match answer? {
            Some((status, content_type, body)) => shop_reply(status, content_type, body),
            None => error(500, "internal", "the shop produced no reply"),
        }
    }
}

/// A shop's answer, with `Retry-After` when it is a `429` that says when.
fn shop_reply(status: u16, content_type: &str, body: Vec<u8>) -> Result<Response> {
    let retry_after = guard::retry_after(status, &body);
    let mut response = reply(status, content_type, body)?;
    if let Some(secs) = retry_after {
        response.headers_mut().set("retry-after", &secs.to_string())?;
    }
    Ok(response)
}

#[derive(Deserialize)]
struct HostRow {
    body: String,
}

impl Inner {
    fn host(&self, kind: &str) -> Option<String> {
        let cursor = self
            .state
            .storage()
            .sql()
            .exec("SELECT body FROM host WHERE kind = ?", vec![kind.into()])
            .ok()?;
        let rows: Vec<HostRow> = cursor.to_array().ok()?;
        rows.into_iter().next().map(|r| r.body)
    }

    /// The shows sold from this shop, `(created_at, id)`.
    fn shows(&self) -> Vec<(u64, String)> {
        self.host("shows").and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    fn list_show(&self, show: (u64, String)) -> Result<()> {
        let mut shows = self.shows();
        if !shows.iter().any(|(_, id)| *id == show.1) {
            shows.push(show);
            self.put_host("shows", &serde_json::to_string(&shows)?)?;
        }
        Ok(())
    }

    fn put_host(&self, kind: &str, body: &str) -> Result<()> {
        self.state
            .storage()
            .sql()
            .exec("INSERT OR REPLACE INTO host (kind, body) VALUES (?, ?)", vec![kind.into(), body.into()])?;
        Ok(())
    }

    fn secrets(&self, secret_id: &str) -> SecretRing {
        self.host(&format!("secret/{secret_id}"))
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// The secrets that sign now: the newest first, then any still in their overlap.
    fn signing(&self, secret_id: &str, now: u64) -> Vec<Secret> {
        self.secrets(secret_id).signing(now)
    }

    /// `POST /v1/shops/{shop}/webhook-secrets/{secret_id}` and
    /// `POST /v1/shops/{shop}/inbound-secrets/liveshop`: the answer shows the secret once.
    async fn issue_secret(
        &self,
        req: &Request,
        shop: &str,
        secret_id: &str,
        body: &[u8],
    ) -> Result<Response> {
        if let Some(refusal) = self.refuse_non_merchant(req, shop)? {
            return Ok(refusal);
        }
        let mut random = [0u8; liveshop_webhooks::GENERATED_SECRET_LEN];
        crate::fill_random(&mut random);
        let secret = match secret_to_issue(body, random) {
            Ok(secret) => secret,
            Err(e) => return api_error(&e),
        };
        let now = now_ms();
        let mut ring = self.secrets(secret_id);
        let previous_expires_at = ring.rotate(&secret, now);
        self.put_host(&format!("secret/{secret_id}"), &serde_json::to_string(&ring)?)?;
        Ok(Response::from_json(&issued_secret(secret_id, &secret, previous_expires_at))?.with_status(201))
    }

    /// The refusal for a caller without a merchant token for `shop`, if it is one.
    fn refuse_non_merchant(&self, req: &Request, shop: &str) -> Result<Option<Response>> {
        crate::caller(req, &self.env, shop)?
            .and_then(Caller::merchant)
            .err()
            .map(|e| api_error(&e))
            .transpose()
    }

    /// `PUT /v1/shops/{shop}/inbound-secrets/shopify`: `{secret, currency}` of a Shopify app.
    fn set_shopify(&self, req: &Request, shop: &str, body: &[u8]) -> Result<Response> {
        if let Some(refusal) = self.refuse_non_merchant(req, shop)? {
            return Ok(refusal);
        }
        match ShopifySettings::parse(body) {
            Ok(settings) => {
                self.put_host(SHOPIFY, &serde_json::to_string(&settings)?)?;
                Ok(Response::empty()?.with_status(204))
            }
            Err(e) => error(400, e.code(), e.to_string()),
        }
    }

    /// `POST /v1/shops/{shop}/inbound/shopify`: `products/*` webhooks as merchant updates
    /// (`liveshop_shop::shopify`), checked with `X-Shopify-Hmac-Sha256` and applied once per
    /// `X-Shopify-Event-Id`; other topics are acknowledged and ignored (Shopify retries
    /// anything else).
    async fn inbound_shopify(this: &Rc<Inner>, req: &Request, body: Vec<u8>) -> Result<Response> {
        let settings = this.host(SHOPIFY).and_then(|t| serde_json::from_str::<ShopifySettings>(&t).ok());
        let headers: Vec<(String, String)> = req.headers().entries().collect();
        let header =
            |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        match verify_shopify(settings.as_ref(), header, &body) {
            Ok(ShopifyInbound::Apply(event)) => Inner::merchant_event(this, "shopify", event).await,
            Ok(ShopifyInbound::Ignored(answer)) => Response::from_json(&answer),
            Err(e) => api_error(&e),
        }
    }

    /// A verified merchant update, applied by the shop as `/merchant/events` (once per event id).
    async fn merchant_event(this: &Rc<Inner>, source: &str, body: Vec<u8>) -> Result<Response> {
        match Inner::run(this, merchant_update(source, body).into_input()).await? {
            Some((status, content_type, body)) => reply(status, content_type, body),
            None => error(500, "internal", "the shop produced no reply"),
        }
    }

    /// `GET .../live`: public data, so no token (paced per address). The first event is the
    /// full snapshot; later ones are the shop's broadcasts. Frames carry no position: a
    /// reconnect starts over.
    async fn live_feed(&self, req: &Request) -> Result<Response> {
        if let Some(refusal) = crate::pacing::admit(&self.env, req).await? {
            return Ok(refusal);
        }
        let (mut tx, rx) = channel(crate::SSE_QUEUE);
        let snapshot = self.with_live(|live| live.shop.live_snapshot(now_ms()))?;
        let _ = tx.try_send(sse_event(&snapshot));
        self.feeds.borrow_mut().push(tx);
        sse_response(rx)
    }

    /// `POST /v1/shops/{shop}/inbound/liveshop`: a `/merchant/events` body signed with
    /// `X-Liveshop-Signature` (the inbound secret, or the previous one during its overlap). The
    /// shop applies each event id once.
    async fn inbound_liveshop(this: &Rc<Inner>, req: &Request, body: Vec<u8>) -> Result<Response> {
        let now = now_ms();
        let signature = req.headers().get(liveshop_webhooks::liveshop::SIGNATURE_HEADER)?;
        let secrets = this.signing(INBOUND_SECRET_ID, now);
        if let Err(e) = verify_liveshop(&secrets, signature.as_deref(), &body, now) {
            return api_error(&e);
        }
        Inner::merchant_event(this, "liveshop", body).await
    }

    fn with_live<R>(&self, f: impl FnOnce(&mut Live) -> R) -> Result<R> {
        let mut slot = self.live.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.revive()?);
        }
        Ok(f(slot.as_mut().expect("revived above")))
    }

    /// Rebuilds the shop from storage; charges it had asked for are asked for again.
    fn revive(&self) -> Result<Live> {
        let records = crate::records(&self.state.storage().sql())?;
        let shop = liveshop_shop::Shop::restore(records, Epoch(random_u53()))
            .map_err(|e| Error::RustError(format!("cannot restore the shop: {e}")))?;
        let pending = shop.pending_payments();
        Ok(Live { shop, pending })
    }

    /// Feeds `input` to the shop, then the test provider's outcomes of every charge it asks for;
    /// commits and releases; returns the reply. Webhooks go out after the event, and so do
    /// payments when they go through Stripe.
    async fn run(this: &Rc<Inner>, input: Input) -> Result<Option<(u16, &'static str, Vec<u8>)>> {
        let sql = this.state.storage().sql();
        let stripe = crate::payments::stripe_config(&this.env)?;
        let (answer, alarm, deliveries, payments) = this.with_live(|live| -> Result<_> {
            let mut inputs: VecDeque<Input> = VecDeque::new();
            let mut payments = Vec::new();
            let mut pay = |req: PaymentRequest, inputs: &mut VecDeque<Input>| match stripe {
                Some(_) => payments.push(req),
                None => inputs.extend(test_payment(&req)),
            };
            for req in std::mem::take(&mut live.pending) {
                pay(req, &mut inputs);
            }
            inputs.push_front(input);
            let (mut answer, mut alarm, mut deliveries) = (None, None, Vec::new());
            while let Some(input) = inputs.pop_front() {
                let now = now_ms();
                live.shop.handle(now, input);
                while let Some(output) = live.shop.poll_output() {
                    match output {
                        Output::Store(write) => crate::store(&sql, write)?,
                        Output::SetAlarm(at) => alarm = Some(at),
                        Output::Reply { status, content_type, body } => {
                            answer.get_or_insert((status, content_type, body));
                        }
                        Output::Payment(req) => pay(req, &mut inputs),
                        Output::Deliver(req) => deliveries.push(req),
                        Output::Broadcast { frame } => {
                            let event = sse_event(&frame);
                            // Readers that went away, or fell too far behind, are dropped here
                            // (they reconnect and start from a snapshot).
                            this.feeds.borrow_mut().retain_mut(|tx| tx.try_send(event.clone()).is_ok());
                        }
                    }
                }
            }
            Ok((answer, alarm, deliveries, payments))
        })??;
        crate::sync_alarm(&this.state.storage(), alarm).await?;
        if !deliveries.is_empty() {
            let inner = this.clone();
            this.state.wait_until(async move {
                for req in deliveries {
                    let status = inner.deliver(&req).await;
                    let result = Input::DeliveryResult { delivery_id: req.delivery_id, status };
                    // A failed report leaves the delivery to the core's timeout and retry.
                    let _ = Box::pin(Inner::run(&inner, result)).await;
                }
            });
        }
        if let (Some(config), false) = (stripe, payments.is_empty()) {
            let inner = this.clone();
            this.state.wait_until(async move {
                for req in payments {
                    Box::pin(Inner::pay(&inner, &config, req)).await;
                }
            });
        }
        Ok(answer)
    }

    /// Carries out one payment at Stripe, retrying while Stripe cannot be reached (the
    /// idempotency key makes repeats safe), and feeds its outcomes to the shop. A payment given
    /// up on stays pending; the shop asks again when it revives.
    async fn pay(this: &Rc<Inner>, config: &StripeConfig, req: PaymentRequest) {
        let wait = |ms, _: &PaymentError| Delay::from(std::time::Duration::from_millis(ms));
        let outcomes = match liveshop_payments::drive(|| this.stripe(config, &req), wait).await {
            Ok(outcomes) => outcomes,
            Err(e) if e.retryable() => {
                return console_error!("payment {}: {e}; giving up for now", req.idempotency_key);
            }
            Err(e) => return console_error!("payment {} ({}): {e}", req.idempotency_key, e.code()),
        };
        for outcome in outcomes {
            // A failed report leaves the payment pending, asked for again at the next revival.
            let _ = Box::pin(Inner::run(this, Input::PaymentResult { order: req.order, outcome })).await;
        }
    }

    /// One request through `liveshop_payments::stripe`, with the order's intent kept in the
    /// object's storage.
    async fn stripe(
        &self,
        config: &StripeConfig,
        req: &PaymentRequest,
    ) -> std::result::Result<Vec<PaymentOutcome>, PaymentError> {
        let shop = self
            .host("registered")
            .and_then(|r| {
                serde_json::from_str::<serde_json::Value>(&r).ok()?["shop"].as_str().map(String::from)
            })
            // Objects registered before the name was stored know it from their id.
            .or_else(|| self.state.id().name())
            .ok_or_else(|| PaymentError::Storage("the shop's name is not stored".into()))?;
        let known = self.host(&intent_record(req.order));
        let done = stripe::carry_out(config, &shop, req, known.as_deref(), crate::payments::send).await?;
        if let Some(intent) = &done.remember {
            self.remember_intent(req.order, intent).map_err(|e| PaymentError::Storage(e.to_string()))?;
        }
        done.result
    }

    /// Records `intent` as the charge of `order`; the first one recorded stays.
    fn remember_intent(&self, order: OrderId, intent: &str) -> Result<()> {
        self.state.storage().sql().exec(
            "INSERT OR IGNORE INTO host (kind, body) VALUES (?, ?)",
            vec![intent_record(order).into(), intent.into()],
        )?;
        Ok(())
    }

    /// `POST /v1/shops/{shop}/_payment`: a Stripe webhook the Worker verified
    /// (`liveshop_payments::stripe::StripeResult`), for this shop's order.
    async fn payment_result(this: &Rc<Inner>, body: &[u8]) -> Result<Response> {
        let result: StripeResult = serde_json::from_slice(body)?;
        this.remember_intent(result.order, &result.intent)?;
        Inner::run(this, Input::PaymentResult { order: result.order, outcome: result.outcome }).await?;
        Response::empty()
    }

    /// One signed attempt; the status, or `None` when there was no HTTP answer. `fetch` cannot
    /// say which address it connects to, so only the URL is checked here (again: the policy may
    /// have changed since the endpoint was registered), and redirects are not followed.
    async fn deliver(&self, req: &DeliveryRequest) -> Option<u16> {
        if let Err(e) = check_endpoint(&req.endpoint_url, &endpoint_policy(&self.env)) {
            console_warn!("webhook to {} not delivered: {e}", req.endpoint_url);
            return None;
        }
        let now = now_ms();
        let keys = self.signing(&req.secret_id, now);
        let headers = Headers::new();
        for (name, value) in delivery_headers(req, &keys, now).ok()? {
            headers.set(&name, &value).ok()?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(req.payload.clone().into()))
            .with_redirect(RequestRedirect::Manual);
        let request = Request::new_with_init(&req.endpoint_url, &init).ok()?;
        let response = Fetch::Request(request).send().await.ok()?;
        Some(response.status_code())
    }
}

/// Where webhooks may go: public addresses, and the hosts the var `WEBHOOK_ALLOW_PRIVATE_HOSTS`
/// lists (comma-separated), as the edge node's `[webhooks] allow_private_hosts`.
fn endpoint_policy(env: &Env) -> EndpointPolicy {
    let hosts = env.var("WEBHOOK_ALLOW_PRIVATE_HOSTS").map(|v| v.to_string()).unwrap_or_default();
    liveshop_api::shop::endpoint_policy(&hosts)
}

/// Host record of the PaymentIntent of an order's charge.
fn intent_record(order: OrderId) -> String {
    format!("stripe_intent/{order}")
}
