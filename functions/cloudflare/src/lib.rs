//! # liveshop on Cloudflare: the same rooms and shops as a Worker with Durable Objects
//!
//! The Worker only routes; the rules live in the sans-IO cores `liveshop-room` and
//! `liveshop-shop`, exactly as in the edge node's components (`functions/component`):
//!
//! ```text
//!  client ──HTTP/WS──▶ Worker (this file: routes, shows) ──fetch──▶ Room DO  (one per show)
//!                                                        ├─fetch──▶ Shop DO  (one per shop)
//!                                                        └─fetch──▶ Audience DO (one per show)
//! ```
//!
//! - [`room::Room`] keeps viewers' WebSockets with the hibernation API (`accept_web_socket`,
//!   `websocket_message`, `websocket_close`); each socket's attachment holds its connection id,
//!   identity and connect time, so an evicted object is rebuilt from storage and its sockets.
//! - Both objects store the cores' records in a SQLite table (`new_sqlite_classes`). An event is
//!   handled synchronously, so its writes commit together in one implicit transaction, and
//!   Cloudflare's output gate holds every frame and reply of the event until they are durable.
//! - Alarms carry the cores' timers (aggregation windows, countdowns, reservation expiry,
//!   webhook retries); handling an alarm twice is harmless to the cores.
//! - A room holding `FANOUT_THRESHOLD` sockets hands new ones to fan-out objects
//!   ([`fanout::Fanout`]); it stays the only writer and sends each object its frames in order.
//! - The shop object serves the live product feed (SSE) and verifies signed merchant updates
//!   (ours and Shopify's); outbound webhook secrets rotate as on the edge
//!   (`liveshop_webhooks::rotation`). Payments go to the test provider or to Stripe over `fetch`
//!   ([`payments`], on `liveshop-payments`), whose webhooks the Worker verifies.
//! - The public feed (`GET /v1/rooms/{room}/feed`) goes through the Cache API, and a room holds
//!   requests for a position until it logs something ([`feed`]); feed heartbeats are counted
//!   by an [`audience::Audience`] object per room, which hands the room the count every 5 s.
//! - New connections and anonymous reads are paced per client address by [`pacing::Limiter`]
//!   objects; `/metrics` shows their refusals ([`pacing::Metrics`]). The pages of `web/` are
//!   static assets.
//! - Errors are the edge node's: status + `{"error": {"code", "message"}}`.
//!
//! The API is the edge node's (`edge/src/http.rs`, `edge/src/shop_http.rs`, `docs/protocol.md`);
//! `tests/conformance*` runs one suite against both hosts. See `docs/cloudflare.md`.

use liveshop_api::route::{Paced, RoomRoute, Route, ShopOf, ShopRoute};
use liveshop_api::{ApiError, Caller};
use liveshop_identity::{Identity, Role, Secret, TokenError};
use liveshop_room::pages::{COMMON_HEADERS, Page};
use liveshop_room::show::Credential;
use serde_json::json;
use worker::*;

mod analytics;
mod audience;
mod fanout;
mod feed;
mod pacing;
mod payments;
mod room;
mod shop;
mod shows;

pub use audience::Audience;
pub use fanout::Fanout;
pub use pacing::{Limiter, Metrics};
pub use room::Room;
pub use shop::Shop;

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let url = req.url()?;
    let route = Route::of(req.method().as_ref(), url.path());
    if let Some(limit) = paced(&req, &env, route)?
        && let Some(refusal) = pacing::take(&env, &req, limit).await?
    {
        // Read before refusing; see the room's fetch.
        req.bytes().await?;
        return with_headers(refusal, &COMMON_HEADERS);
    }
    let counted = pacing::Caller::of(&req)?;
    let response = match self::route(req, &env, &ctx, route).await {
        Ok(response) => response,
        // What no route answered itself (storage, a bad setting such as PAYMENTS_PROVIDER) is
        // still JSON with a stable code, not the runtime's plain-text 500.
        Err(e) => {
            console_error!("{}: {e}", url.path());
            error(500, "internal", "the Worker failed this request; its log says why")?
        }
    };
    // Signed inbound requests refuse signatures, not tokens.
    let signed =
        matches!(route, Some(Route::Shop(_, ShopRoute::InboundLiveshop | ShopRoute::InboundShopify)));
    if response.status_code() == 401 && !signed {
        counted.refused(&env, &ctx, "token")?;
    }
    with_headers(response, &COMMON_HEADERS)
}

/// `response` with `extra` headers set: a fetched response's (an object's, an asset's) own
/// headers cannot be changed, so they are copied.
fn with_headers(response: Response, extra: &[(&str, &str)]) -> Result<Response> {
    let headers = Headers::new();
    for (name, value) in response.headers() {
        headers.append(&name, &value)?;
    }
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    Ok(response.with_headers(headers))
}

async fn route(mut req: Request, env: &Env, ctx: &Context, route: Option<Route<'_>>) -> Result<Response> {
    let Some(route) = route else {
        req.bytes().await?;
        return error(404, "not_found", "no such endpoint");
    };
    match route {
        Route::Home => Response::redirect_with_status(req.url()?.join("/watch/demo")?, 307),
        Route::Health => Response::from_json(&json!({ "status": "ok" })),
        Route::Metrics => pacing::metrics(env).await,
        Route::Page(Page::Viewer, show) => {
            let show = show_record(env, show).await?.ok();
            page(env, Page::Viewer, show.as_ref()).await
        }
        Route::Page(other, _) => page(env, other, None).await,
        Route::CreateShow => create_show(req, env).await,
        Route::Show(show) => room_stub(env, show)?.fetch_with_request(req).await,
        Route::Report(show, file) => analytics::get(req, env, show, file).await,
        Route::Room(room, RoomRoute::Feed) => feed::get(req, env, ctx, room).await,
        Route::Room(room, RoomRoute::Timeline) => feed::cached(req, env, ctx, room).await,
        Route::Room(room, RoomRoute::Heartbeat) => audience::stub(env, room)?.fetch_with_request(req).await,
        Route::Room(room, _) => room_stub(env, room)?.fetch_with_request(req).await,
        Route::Shop(ShopOf::Show(show), _) => {
            let shop = match show_record(env, show).await? {
                Ok(s) => s.shop_id().to_string(),
                Err(response) => {
                    // Read before refusing; see the room's fetch.
                    req.bytes().await?;
                    return Ok(response);
                }
            };
            shop_stub(env, &shop)?.fetch_with_request(req).await
        }
        Route::Shop(ShopOf::Shop(shop), _) => shop_stub(env, shop)?.fetch_with_request(req).await,
        Route::StripeWebhook => payments::webhook(req, env).await,
        // Durable Objects keep their own alarms; the pages' files are static assets, served
        // before the Worker (a file that is not there comes here).
        Route::Alarms | Route::Web(_) | Route::Vendor(_) => {
            req.bytes().await?;
            error(404, "not_found", "no such endpoint")
        }
    }
}

/// The per-address limit the edge node paces this request by before anything else
/// ([`Route::paced`]): a socket route only for an upgrade, guest tokens only where given.
/// (The shop object paces its live feed and anonymous reads itself, after the shop is found, as
/// the edge node does; the room paces guest tokens for new devices; feed reads are paced when
/// they miss the cache, `feed::get`.)
fn paced(req: &Request, env: &Env, route: Option<Route<'_>>) -> Result<Option<pacing::Limit>> {
    let Some(route) = route else { return Ok(None) };
    Ok(match (route, route.paced()) {
        (Route::Room(_, RoomRoute::Socket), _)
            if req.headers().get("upgrade")?.is_none_or(|u| !u.eq_ignore_ascii_case("websocket")) =>
        {
            None
        }
        (Route::Room(_, RoomRoute::Guest), _) if setting(env, "GUEST_TOKENS", 1) == 0 => None,
        // A replay's timeline is paced only when it misses the cache (`feed::cached`).
        (Route::Room(_, RoomRoute::Timeline), _) => None,
        (_, Some(Paced::Commands)) => Some(pacing::Limit::Commands),
        (_, Some(Paced::Reads)) => Some(pacing::Limit::Reads),
        (_, Some(Paced::Connections)) => Some(pacing::Limit::Connections),
        (_, None) => None,
    })
}

/// `GET /watch/{show}` and `GET /dashboard/{show}`: the pages of `web/`, which `build.sh` puts
/// among the Worker's static assets (where `/web/{file}` is served without the Worker, with the
/// headers of its `_headers` file), with their Content-Security-Policy.
async fn page(env: &Env, page: Page, show: Option<&shows::Show>) -> Result<Response> {
    let file = match page {
        Page::Viewer => "viewer.html",
        Page::Dashboard => "dashboard.html",
        Page::Report => "report.html",
    };
    let response = env.assets("ASSETS")?.fetch(format!("https://assets/web/{file}"), None).await?;
    let policy = liveshop_room::pages::content_security_policy(page, show);
    with_headers(response, &[("content-security-policy", &policy)])
}

pub(crate) fn room_stub(env: &Env, room: &str) -> Result<Stub> {
    env.durable_object("ROOMS")?.get_by_name(room)
}

pub(crate) fn shop_stub(env: &Env, shop: &str) -> Result<Stub> {
    env.durable_object("SHOPS")?.get_by_name(shop)
}

/// The show `id` as its room stored it, or the error response to give.
async fn show_record(env: &Env, id: &str) -> Result<std::result::Result<shows::Show, Response>> {
    let mut r = room_stub(env, id)?.fetch_with_str(&format!("https://room/v1/shows/{id}")).await?;
    if r.status_code() != 200 {
        return Ok(Err(r));
    }
    Ok(Ok(r.json().await?))
}

/// `POST /v1/shows`: hosts and merchants with a platform-wide token (`room: "*"`) create shows
/// selling from shops they own, merchants with a token for a shop create shows selling from it
/// (`liveshop_room::show::claim_shop`). The shop judges the claim first; then the show's room
/// stores the show (and refuses a second one) and learns its host.
async fn create_show(mut req: Request, env: &Env) -> Result<Response> {
    // Read before any check; see the room's fetch.
    let body = req.bytes().await?;
    if let Some(refusal) = shop::oversized(&body) {
        return refusal;
    }
    let secret = secret(env)?;
    let now = now_ms();
    let Some(token) = presented(&req) else { return token_error(TokenError::Malformed) };
    let show =
        match serde_json::from_slice(&body).map_err(|e| e.to_string()).and_then(|n| shows::Show::new(n, now))
        {
            Ok(show) => show,
            Err(message) => return error(400, "invalid_argument", message),
        };
    let verify = |t: &str, scope: &str| secret.verify(t, scope, now / 1000);
    let (who, credential) = match liveshop_api::show_creator(&token, show.shop_id(), verify) {
        Ok(creator) => creator,
        Err(e) => return api_error(&e),
    };
    let platform = credential == Credential::Platform;
    // Before the shop is claimed: a show that exists must not leave a claim behind.
    if show_record(env, &show.id).await?.is_ok() {
        return error(409, "show_exists", format!("a show {:?} exists already", show.id));
    }
    // The shop judges the claim (`liveshop_room::show::claim_shop`) before the show exists.
    let operator =
        env.var("OPERATORS").is_ok_and(|v| v.to_string().split(',').any(|o| o.trim() == who.subject));
    let claim = liveshop_api::shop::Claim {
        who: who.clone(),
        platform,
        operator,
        show: (show.created_at, show.id.clone()),
    };
    let claim = serde_json::to_string(&claim)?;
    let register = Request::new_with_init(
        &format!("https://shop/v1/shops/{}/_register", show.shop_id()),
        RequestInit::new().with_method(Method::Post).with_body(Some(claim.into())),
    )?;
    let claimed = shop_stub(env, show.shop_id())?.fetch_with_request(register).await?;
    if claimed.status_code() >= 300 {
        return Ok(claimed);
    }
    let put = Request::new_with_init(
        &format!("https://room/v1/shows/{}", show.id),
        RequestInit::new().with_method(Method::Put).with_body(Some(serde_json::to_string(&show)?.into())),
    )?;
    let created = room_stub(env, &show.id)?.fetch_with_request(put).await?;
    if created.status_code() != 201 {
        return Ok(created);
    }
    // The room knows its host from the start, so nobody can sanction them before they connect.
    let host = serde_json::to_string(&Identity::new(who.subject.clone(), Role::Host))?;
    let vouch = Request::new_with_init(
        &format!("https://room/v1/rooms/{}/_staff", show.id),
        RequestInit::new().with_method(Method::Put).with_body(Some(host.into())),
    )?;
    room_stub(env, &show.id)?.fetch_with_request(vouch).await?;
    let host_token =
        secret.mint(&liveshop_api::host_claims(&who, &show, now / 1000)).map_err(|e| e.to_string())?;
    let base = req.url()?.origin().ascii_serialization();
    Ok(Response::from_json(&liveshop_api::created_show(&base, &show, &host_token))?.with_status(201))
}

/// The device the request's signed `liveshop_device` cookie names, or a new one from the
/// caller's allowance of new guests (`pacing::Limit::GuestDevices`), as on the edge node; `true`
/// with a new one, whose cookie the answer sets. `Err` is the refusal to answer with.
pub(crate) async fn device(
    env: &Env,
    req: &Request,
    devices: &liveshop_identity::Devices,
) -> Result<std::result::Result<(String, bool), Response>> {
    if let Some(device) = req.headers().get("cookie")?.and_then(|c| devices.from_cookie_header(&c)) {
        return Ok(Ok((device, false)));
    }
    if let Some(refusal) = pacing::take(env, req, pacing::Limit::GuestDevices).await? {
        return Ok(Err(refusal));
    }
    let mut random = [0u8; liveshop_identity::DEVICE_ID_BYTES];
    fill_random(&mut random);
    Ok(Ok((liveshop_identity::Devices::new_device(random), true)))
}

/// The token secret: the Worker secret (or var) `LIVESHOP_SECRET`.
pub(crate) fn secret(env: &Env) -> Result<Secret> {
    let value = env
        .secret("LIVESHOP_SECRET")
        .map(|s| s.to_string())
        .or_else(|_| env.var("LIVESHOP_SECRET").map(|v| v.to_string()))?;
    Secret::new(value.into_bytes()).map_err(|e| Error::RustError(format!("LIVESHOP_SECRET: {e}")))
}

/// A numeric setting from a var, or its default.
pub(crate) fn setting(env: &Env, name: &str, default: u64) -> u64 {
    env.var(name).ok().and_then(|v| v.to_string().parse().ok()).unwrap_or(default)
}

/// The token the request presents, read once ([`liveshop_api::Credentials`]): `?token=` or a
/// WebSocket subprotocol beside `liveshop.v1` where the route takes them, or
/// `Authorization: Bearer`.
pub(crate) fn presented(req: &Request) -> Option<String> {
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let (authorization, protocols) = (header("authorization"), header("sec-websocket-protocol"));
    let url = req.url().ok();
    let credentials = liveshop_api::Credentials {
        authorization: authorization.as_deref(),
        query: url.as_ref().and_then(|u| u.query()),
        protocols: protocols.as_deref(),
    };
    let route = url.as_ref().and_then(|u| Route::of(req.method().as_ref(), u.path()));
    credentials.for_route(route).token().map(str::to_string)
}

/// Who calls, for `scope` (a room, a shop, a show): the token presented, verified.
pub(crate) fn caller(req: &Request, env: &Env, scope: &str) -> Result<std::result::Result<Caller, ApiError>> {
    let secret = secret(env)?;
    Ok(Caller::of(presented(req).as_deref(), |t| secret.verify(t, scope, now_ms() / 1000)))
}

pub(crate) fn query(req: &Request, name: &str) -> Option<String> {
    req.url().ok()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// 53 random bits: a new epoch that JavaScript clients hold exactly.
pub(crate) fn random_u53() -> u64 {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    u64::from_le_bytes(bytes) >> 11
}

/// Fills `bytes` from the runtime's cryptographic random source.
pub(crate) fn fill_random(bytes: &mut [u8]) {
    let crypto: web_crypto::Crypto = js_sys::global().unchecked_into::<web_crypto::Global>().crypto();
    crypto.get_random_values(bytes);
}

mod web_crypto {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        pub type Global;
        pub type Crypto;
        #[wasm_bindgen(method, getter)]
        pub fn crypto(this: &Global) -> Crypto;
        #[wasm_bindgen(method, js_name = getRandomValues)]
        pub fn get_random_values(this: &Crypto, buf: &mut [u8]);
    }
}

use wasm_bindgen::JsCast;

/// One storage write of an event into the object's `kv` table. An event's writes all run before
/// its first `await`, so they commit together (and the output gate holds what follows).
pub(crate) fn store(sql: &SqlStorage, write: liveshop_room::Write) -> Result<()> {
    match write {
        liveshop_room::Write::Put { key, value } => {
            sql.exec("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", vec![key.into(), value.into()])?;
        }
        liveshop_room::Write::Delete { key } => {
            sql.exec("DELETE FROM kv WHERE key = ?", vec![key.into()])?;
        }
    }
    Ok(())
}

/// Every record of the object's `kv` table, for the core to restore from.
pub(crate) fn records(sql: &SqlStorage) -> Result<Vec<(String, Vec<u8>)>> {
    let mut records = Vec::new();
    for row in sql.exec("SELECT key, value FROM kv", None)?.raw() {
        if let [SqlStorageValue::String(k), SqlStorageValue::Blob(v)] = row?.as_slice() {
            records.push((k.clone(), v.clone()));
        }
    }
    Ok(records)
}

/// Sets or clears the object's one alarm, when an event asked to (`Some`).
pub(crate) async fn sync_alarm(storage: &Storage, alarm: Option<Option<u64>>) -> Result<()> {
    match alarm {
        Some(Some(at)) => {
            let when = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(at as f64));
            storage.set_alarm(ScheduledTime::new(when)).await?;
        }
        Some(None) => storage.delete_alarm().await?,
        None => {}
    }
    Ok(())
}

/// An error as every endpoint reports it.
pub(crate) fn error(status: u16, code: &str, message: impl Into<String>) -> Result<Response> {
    let body = liveshop_api::error_body(code, &message.into()).into_bytes();
    reply(status, "application/json", body)
}

/// A refusal decided in `liveshop-api`.
pub(crate) fn api_error(e: &liveshop_api::ApiError) -> Result<Response> {
    error(e.status, e.code, e.message.clone())
}

pub(crate) fn token_error(e: TokenError) -> Result<Response> {
    error(401, e.code(), e.to_string())
}

/// A core's reply as a response.
pub(crate) fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", content_type)?;
    Ok(Response::from_bytes(body)?.with_status(status).with_headers(headers))
}

pub(crate) use liveshop_api::sse_event;

/// An event stream fed by an object: what arrives on `events` goes out as it is, with an empty
/// comment after every 15 s of silence (the edge node's keep-alive), so proxies keep it open.
/// Events one server-sent event stream may have waiting (more than the 512 a resume replays). A
/// reader further behind is dropped, as the edge node drops a lagging connection; it reconnects
/// and resumes.
pub(crate) const SSE_QUEUE: usize = 1024;

pub(crate) fn sse_response(events: futures_channel::mpsc::Receiver<String>) -> Result<Response> {
    use futures_util::StreamExt;
    use futures_util::future::{Either, select};
    let headers = Headers::new();
    headers.set("content-type", "text/event-stream")?;
    headers.set("cache-control", "no-cache")?;
    let body = futures_util::stream::unfold(events, |mut events| async move {
        let quiet = Delay::from(std::time::Duration::from_secs(15));
        match select(events.next(), quiet).await {
            Either::Left((Some(event), _)) => Some((Ok::<Vec<u8>, Error>(event.into_bytes()), events)),
            Either::Left((None, _)) => None,
            Either::Right(((), _)) => Some((Ok(b":\n\n".to_vec()), events)),
        }
    });
    Ok(Response::from_stream(body)?.with_headers(headers))
}

/// Close code for a connection that sends frames faster than allowed (as on the edge node).
pub(crate) const CLOSE_RATE_LIMITED: u16 = 4029;

/// The host's checks of one client frame, as in the edge node's socket loop: text only, within
/// the size limit, at the connection's pace. The text, or the close code and reason.
pub(crate) fn frame_check(
    env: &Env,
    bucket: std::collections::hash_map::Entry<'_, u64, liveshop_room::filter::TokenBucket>,
    message: WebSocketIncomingMessage,
    now: u64,
) -> std::result::Result<String, (u16, &'static str)> {
    use liveshop_room::filter::{Pace, TokenBucket};
    let text = match message {
        WebSocketIncomingMessage::String(text) => text,
        WebSocketIncomingMessage::Binary(_) => return Err((1003, "text frames only")),
    };
    if text.len() > setting(env, "MAX_WS_MESSAGE_BYTES", 64 * 1024) as usize {
        return Err((1009, "message too big"));
    }
    let per_sec = setting(env, "FRAMES_PER_CONN_PER_SEC", 20).max(1);
    let pace = Pace { burst: per_sec * 2, refill_every_ms: 1000 / per_sec };
    match bucket.or_insert_with(|| TokenBucket::full(pace, now)).take(pace, now) {
        Ok(_) => Ok(text),
        Err(_) => Err((CLOSE_RATE_LIMITED, "too many frames")),
    }
}
