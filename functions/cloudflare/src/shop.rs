//! The shop object: `liveshop-shop` behind a Durable Object, one per shop.
//!
//! The same loop as the edge node's component (`functions/component/src/shop.rs`). Effects
//! leave after the event's writes: payments go to the built-in test provider
//! (`liveshop_shop::test_provider`), whose outcomes come back as the next inputs; webhooks are
//! POSTed, signed per Standard Webhooks with the shop's secrets, after the event (`waitUntil`),
//! and their results come back as inputs. Retries are the core's: it asks for an alarm, and on
//! the alarm for the delivery again, so the schedule is the edge node's. The live product feed
//! is a server-sent event stream per reader: the snapshot first, then the shop's broadcasts.
//! Signed merchant updates (`inbound/liveshop`) are verified here and applied by the core as
//! `/merchant/events`, once per event id.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use futures_channel::mpsc::{UnboundedSender, unbounded};
use liveshop_identity::{Identity, Role};
use liveshop_shop::api::MAX_BODY_BYTES;
use liveshop_shop::outbox::DeliveryRequest;
use liveshop_shop::{Epoch, Input, Output, PaymentRequest, test_provider};
use liveshop_webhooks::rotation::SecretRing;
use liveshop_webhooks::{DEFAULT_TOLERANCE_SECS, Secret};
use serde::Deserialize;
use serde_json::json;
use worker::*;

use crate::{error, now_ms, random_u53, reply, secret, sse_event, sse_response, token_error};

/// Request headers the shop sees; everything else stays with the host.
const FORWARDED_HEADERS: [&str; 1] = ["idempotency-key"];
/// The `secret_id` of the secret merchants sign inbound updates with (not a `whsec_` name, so no
/// endpoint can pick it).
const INBOUND_SECRET_ID: &str = "inbound";

#[durable_object]
pub struct Shop {
    inner: Rc<Inner>,
}

struct Inner {
    state: State,
    env: Env,
    live: RefCell<Option<Live>>,
    /// Readers of the live product feed (these keep the object in memory while open).
    feeds: RefCell<Vec<UnboundedSender<String>>>,
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
        Shop { inner: Rc::new(Inner { state, env, live: RefCell::default(), feeds: RefCell::default() }) }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // Read before any check; see the room's fetch.
        let body = req.bytes().await?;
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
            ["v1", "shops", _, "_register"] => {
                inner.put_host("registered", "{}")?;
                Response::empty()
            }
            ["v1", "shops", shop, rest @ ..] => {
                let shop = shop.to_string();
                // As on the edge node, a bad secret id is refused before the shop is looked up.
                if let (Method::Post, ["webhook-secrets", secret_id]) = (req.method(), rest)
                    && (!secret_id.starts_with("whsec_") || secret_id.len() > 128)
                {
                    let msg = "a secret id is a name starting with whsec_ (at most 128 bytes)";
                    return error(400, "invalid_argument", msg);
                }
                if inner.host("registered").is_none() {
                    return error(404, "shop_not_found", format!("no shop {shop:?}"));
                }
                match (req.method(), rest) {
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
                    (_, ["inbound-secrets" | "inbound", ..]) => {
                        error(501, "not_implemented", "not served by the Cloudflare host yet")
                    }
                    _ => {
                        let path =
                            full.strip_prefix(&format!("/v1/shops/{shop}")).unwrap_or(&full).to_string();
                        self.forward(&req, &shop, path, body).await
                    }
                }
            }
            ["v1", "shows", show, "shop", rest @ ..] => {
                if req.method() == Method::Get && matches!(rest, ["live"]) {
                    return inner.live_feed(&req).await;
                }
                let show = show.to_string();
                let path = full.strip_prefix(&format!("/v1/shows/{show}/shop")).unwrap_or(&full).to_string();
                self.forward(&req, &show, path, body).await
            }
            _ => error(404, "not_found", "no such endpoint"),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        Inner::run(&self.inner, Input::Alarm).await?;
        Response::ok("")
    }
}

impl Shop {
    /// The shop API: the caller from a bearer token for `scope` (the shop or the show).
    async fn forward(&self, req: &Request, scope: &str, path: String, body: Vec<u8>) -> Result<Response> {
        let secret = secret(&self.inner.env)?;
        let who = match crate::bearer(req).map(|t| secret.verify(&t, scope, now_ms() / 1000)).transpose() {
            Ok(who) => who,
            Err(e) => return token_error(e),
        };
        // Anonymous reads wake the shop too: paced per address like connections.
        if who.is_none()
            && let Some(refusal) = crate::pacing::admit(&self.inner.env, req).await?
        {
            return Ok(refusal);
        }
        if body.len() > MAX_BODY_BYTES {
            let msg = format!("request bodies are limited to {MAX_BODY_BYTES} bytes");
            return error(413, "payload_too_large", msg);
        }
        let headers = FORWARDED_HEADERS
            .iter()
            .filter_map(|name| Some((name.to_string(), req.headers().get(name).ok()??)))
            .collect();
        let input = Input::Request { who, method: req.method().to_string(), path, headers, body };
        match Inner::run(&self.inner, input).await? {
            Some((status, content_type, body)) => reply(status, content_type, body),
            None => error(500, "internal", "the shop produced no reply"),
        }
    }
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
        let who = match crate::bearer(req) {
            None => return error(401, "token_malformed", "a merchant token is required"),
            Some(t) => match secret(&self.env)?.verify(&t, shop, now_ms() / 1000) {
                Ok(who) => who,
                Err(e) => return token_error(e),
            },
        };
        if who.role != Role::Merchant {
            return error(403, "forbidden", "only the merchant may do this");
        }
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct SecretInput {
            secret: Option<String>,
        }
        let input: SecretInput = if body.is_empty() {
            SecretInput::default()
        } else {
            match serde_json::from_slice(body) {
                Ok(i) => i,
                Err(e) => return error(400, "invalid_argument", e.to_string()),
            }
        };
        let secret = match input.secret {
            Some(s) => match Secret::parse(&s) {
                Ok(s) => s,
                Err(e) => return error(400, "invalid_argument", e.to_string()),
            },
            None => {
                let mut random = [0u8; liveshop_webhooks::GENERATED_SECRET_LEN];
                for chunk in random.chunks_mut(6) {
                    let r = random_u53().to_le_bytes();
                    chunk.copy_from_slice(&r[..chunk.len()]);
                }
                Secret::generate(random)
            }
        };
        let now = now_ms();
        let mut ring = self.secrets(secret_id);
        let previous_expires_at = ring.rotate(&secret, now);
        self.put_host(&format!("secret/{secret_id}"), &serde_json::to_string(&ring)?)?;
        let issued = json!({ "secret_id": secret_id, "secret": secret.encode(), "previous_expires_at": previous_expires_at });
        Ok(Response::from_json(&issued)?.with_status(201))
    }

    /// `GET .../live`: public data, so no token (paced per address). The first event is the
    /// full snapshot; later ones are the shop's broadcasts. Frames carry no position: a
    /// reconnect starts over.
    async fn live_feed(&self, req: &Request) -> Result<Response> {
        if let Some(refusal) = crate::pacing::admit(&self.env, req).await? {
            return Ok(refusal);
        }
        let (tx, rx) = unbounded();
        let snapshot = self.with_live(|live| live.shop.live_snapshot(now_ms()))?;
        let _ = tx.unbounded_send(sse_event(&snapshot));
        self.feeds.borrow_mut().push(tx);
        sse_response(rx)
    }

    /// `POST /v1/shops/{shop}/inbound/liveshop`: a `/merchant/events` body signed with
    /// `X-Liveshop-Signature` (the inbound secret, or the previous one during its overlap). The
    /// shop applies each event id once.
    async fn inbound_liveshop(this: &Rc<Inner>, req: &Request, body: Vec<u8>) -> Result<Response> {
        let now = now_ms();
        let signature = req.headers().get(liveshop_webhooks::liveshop::SIGNATURE_HEADER)?;
        let header = |name: &str| {
            signature.as_deref().filter(|_| name == liveshop_webhooks::liveshop::SIGNATURE_HEADER)
        };
        let secrets = this.signing(INBOUND_SECRET_ID, now);
        if let Err(e) =
            liveshop_webhooks::liveshop::verify(&secrets, header, &body, now / 1000, DEFAULT_TOLERANCE_SECS)
        {
            return error(401, e.code(), e.to_string());
        }
        let who = Some(Identity::new("inbound:liveshop", Role::Merchant));
        let input = Input::Request {
            who,
            method: "POST".into(),
            path: "/merchant/events".into(),
            headers: vec![],
            body,
        };
        match Inner::run(this, input).await? {
            Some((status, content_type, body)) => reply(status, content_type, body),
            None => error(500, "internal", "the shop produced no reply"),
        }
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
        let rows = self.state.storage().sql().exec("SELECT key, value FROM kv", None)?;
        let mut records = Vec::new();
        for row in rows.raw() {
            if let [SqlStorageValue::String(k), SqlStorageValue::Blob(v)] = row?.as_slice() {
                records.push((k.clone(), v.clone()));
            }
        }
        let shop = liveshop_shop::Shop::restore(records, Epoch(random_u53()))
            .map_err(|e| Error::RustError(format!("cannot restore the shop: {e}")))?;
        let pending = shop.pending_payments();
        Ok(Live { shop, pending })
    }

    /// Feeds `input` to the shop, then the test provider's outcomes of every charge it asks for;
    /// commits and releases; returns the reply. Webhooks go out after the event.
    async fn run(this: &Rc<Inner>, input: Input) -> Result<Option<(u16, &'static str, Vec<u8>)>> {
        let sql = this.state.storage().sql();
        let (answer, alarm, deliveries) = this.with_live(|live| -> Result<_> {
            let mut inputs: VecDeque<Input> = VecDeque::new();
            for req in std::mem::take(&mut live.pending) {
                inputs.extend(outcomes(&req));
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
                        Output::Payment(req) => inputs.extend(outcomes(&req)),
                        Output::Deliver(req) => deliveries.push(req),
                        Output::Broadcast { frame } => {
                            let event = sse_event(&frame);
                            // Readers that went away are dropped here.
                            this.feeds.borrow_mut().retain(|tx| tx.unbounded_send(event.clone()).is_ok());
                        }
                    }
                }
            }
            Ok((answer, alarm, deliveries))
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
        Ok(answer)
    }

    /// One signed attempt; the status, or `None` when there was no HTTP answer.
    async fn deliver(&self, req: &DeliveryRequest) -> Option<u16> {
        let now = now_ms();
        let keys = self.signing(&req.secret_id, now);
        let signed =
            liveshop_webhooks::standard::sign(&keys, &req.event_id, now / 1000, req.payload.as_bytes())
                .ok()?;
        let headers = Headers::new();
        headers.set("content-type", "application/json").ok()?;
        for (name, value) in signed.iter() {
            headers.set(name, value).ok()?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Post).with_headers(headers).with_body(Some(req.payload.clone().into()));
        let request = Request::new_with_init(&req.endpoint_url, &init).ok()?;
        let response = Fetch::Request(request).send().await.ok()?;
        Some(response.status_code())
    }
}

/// What the test provider answers to a charge, as the shop's next inputs.
fn outcomes(req: &PaymentRequest) -> Vec<Input> {
    test_provider::respond(req)
        .into_iter()
        .map(|outcome| Input::PaymentResult { order: req.order, outcome })
        .collect()
}
