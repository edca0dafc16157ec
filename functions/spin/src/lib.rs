//! # liveshop on Spin: the same rooms and shops as a Spin HTTP app
//!
//! One component (`wasi:http/handler@0.3.0`, built with `spin-sdk` 7) answers every route; the
//! rules live in the sans-IO cores `liveshop-room` and `liveshop-shop` and in `liveshop-api`, as
//! on the edge node and the Worker. What Spin does not have, and what stands in for it:
//!
//! - **No single-writer objects**: Spin may run any number of instances at once, each request
//!   on a fresh one. Every room and shop is one value in Spin's key-value store, and every event
//!   is applied under compare-and-swap ([`store`]): an instance that loses the race applies its
//!   event again to what the winner wrote. So no two instances take the same seq or sell the
//!   same unit.
//! - **No WebSockets**: commands are `POST /v1/rooms/{room}/commands` (the answer is the ack);
//!   delivery is the public feed (`GET /v1/rooms/{room}/feed`, long-polled) and server-sent
//!   events (`GET /v1/rooms/{room}/events`, a streamed response that follows the stored room).
//!   `GET /v1/rooms/{room}/ws` answers `501 not_supported`.
//! - **No timers**: a room's or shop's alarm (deal ends, reservation expiry, webhook retries)
//!   runs first in the next event of that actor; `POST /v1/alarms` runs every due alarm, for a
//!   scheduler to call (see `docs/spin.md`).
//!
//! Settings are Spin variables (`spin.toml`): `liveshop_secret` (required),
//! `webhook_allow_private_hosts`, `guest_tokens`, `operators`, and the payment provider's
//! ([`payments`]).

mod analytics;
mod follow;
mod payments;
mod room;
mod shop;
mod store;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use liveshop_api::route::{RoomRoute, Route, ShopOf};
use liveshop_api::{ApiError, Caller};
use liveshop_identity::Secret;
use liveshop_room::pages::Page;
use spin_sdk::http::{BoxBody, Request, box_body};
use spin_sdk::http_service;

use crate::store::StoreError;

/// Every answer: a status, headers and a body (whole, or streamed for event streams).
pub(crate) type Reply = http::Response<BoxBody>;

#[http_service]
async fn handle(req: Request) -> Reply {
    let answer = match route(req).await {
        Ok(reply) => reply,
        Err(refusal) => error(&refusal),
    };
    with_common_headers(answer)
}

/// What a request is about, read once.
pub(crate) struct Call {
    pub method: http::Method,
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// The token presented, read once ([`liveshop_api::Credentials`]).
    pub fn token(&self) -> Option<&str> {
        let query = (!self.query.is_empty()).then_some(self.query.as_str());
        let credentials =
            liveshop_api::Credentials { authorization: self.header("authorization"), query, protocols: None };
        credentials.for_route(Route::of(self.method.as_str(), &self.path)).token()
    }

    /// The client's address, as Spin gives it (`spin-client-addr`), for per-address limits.
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.header("spin-client-addr")?.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
    }

    /// The origin clients reached us at, for the addresses in answers.
    pub fn base(&self) -> String {
        format!("http://{}", self.header("host").unwrap_or("localhost"))
    }
}

/// The largest body any route reads; each route has its own, smaller limit too.
const MAX_READ_BYTES: usize = 256 * 1024;

async fn route(req: Request) -> Result<Reply, ApiError> {
    let (parts, body) = req.into_parts();
    let body = read_body(body).await?;
    let call = Call {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        body,
    };
    let config = Config::load().await?;
    let not_found = || ApiError::new(404, "not_found", "no such endpoint");
    let path = call.path.clone();
    let route = Route::of(call.method.as_str(), &path).ok_or_else(not_found)?;
    match route {
        Route::Health => Ok(json(200, &serde_json::json!({ "status": "ok" }))),
        Route::CreateShow => room::create_show(&config, &call).await,
        Route::Show(show) => room::get_show(show).await,
        Route::Report(show, file) => analytics::get(&config, &call, show, file).await,
        Route::Room(room, what) => match what {
            RoomRoute::Guest => room::guest(&config, &call, room).await,
            RoomRoute::Commands => room::command(&config, &call, room),
            RoomRoute::State => room::state(&config, &call, room).await,
            RoomRoute::Feed => room::feed(&call, room).await,
            RoomRoute::Timeline => room::timeline(&call, room).await,
            RoomRoute::Events => room::events(&config, &call, room).await,
            RoomRoute::Heartbeat => room::heartbeat(&config, &call, room).await,
            RoomRoute::Socket => Err(ApiError::new(
                501,
                "not_supported",
                "Spin has no WebSockets: read /events or /feed and send commands with POST /commands",
            )),
        },
        Route::Shop(by, what) => {
            let (shop, show, base) = match by {
                ShopOf::Show(show) => {
                    let shop = room::show_record(show).await?.shop_id().to_string();
                    (shop, Some(show), format!("/v1/shows/{show}/shop"))
                }
                ShopOf::Shop(shop) => (shop.to_string(), None, format!("/v1/shops/{shop}")),
            };
            shop::route(&config, &call, (&shop, show), what, &path[base.len()..]).await
        }
        Route::Alarms => shop::run_alarms(&config).await,
        Route::StripeWebhook => payments::webhook(&config, &call).await,
        Route::Home => Ok(http::Response::builder()
            .status(307)
            .header("location", "/watch/demo")
            .body(box_body(Full::new(Bytes::new()).map_err(|e| match e {})))
            .expect("a valid redirect")),
        Route::Page(page, show) => {
            // Only the viewer page of a show that exists may be framed, by its embed origins.
            let show = match page {
                Page::Viewer => room::show_record(show).await.ok(),
                _ => None,
            };
            let policy = liveshop_room::pages::content_security_policy(page, show.as_ref());
            Ok(web_reply(liveshop_api::web::page(page), &policy))
        }
        Route::Web(name) => match liveshop_api::web::file(name) {
            Some(file) if file.html => Ok(web_reply(file, liveshop_room::pages::RAW_PAGE_POLICY)),
            Some(file) => Ok(web_reply(file, "")),
            None => Err(ApiError::new(404, "not_found", "no such file")),
        },
        // uPlot comes from npm (web/package.json): serve web/node_modules beside the app, or do
        // without the dashboard's charts. Metrics are the edge node's and the Worker's.
        Route::Vendor(_) | Route::Metrics => Err(not_found()),
    }
}

/// The request's body, refused past [`MAX_READ_BYTES`] without reading the rest.
async fn read_body(mut body: impl http_body::Body<Data = Bytes> + Unpin) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| ApiError::new(400, "invalid_argument", "the request body broke off"))?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
            if out.len() > MAX_READ_BYTES {
                return Err(liveshop_api::shop::oversized(out.len()).expect("over every limit"));
            }
        }
    }
    Ok(out)
}

/// The app's settings, from Spin variables.
pub(crate) struct Config {
    pub secret: Secret,
    pub allow_private_hosts: String,
    pub guest_tokens: bool,
    pub operators: Vec<String>,
    /// Stripe's settings, or `None` where payments go to the test provider.
    pub stripe: Option<liveshop_payments::stripe::StripeConfig>,
}

impl Config {
    async fn load() -> Result<Config, ApiError> {
        let secret =
            spin_sdk::variables::get("liveshop_secret").await.map_err(|e| internal(format!("{e:?}")))?;
        let secret =
            Secret::new(secret.into_bytes()).map_err(|e| internal(format!("liveshop_secret: {e}")))?;
        let optional = async |name: &str| spin_sdk::variables::get(name).await.unwrap_or_default();
        Ok(Config {
            secret,
            allow_private_hosts: optional("webhook_allow_private_hosts").await,
            guest_tokens: optional("guest_tokens").await.trim() != "0",
            operators: optional("operators")
                .await
                .split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            stripe: payments::stripe_config().await?,
        })
    }

    /// Who calls, for `scope` (a room, a shop, a show): the token presented, verified.
    pub fn caller(&self, call: &Call, scope: &str) -> Result<Caller, ApiError> {
        Caller::of(call.token(), |t| self.secret.verify(t, scope, now_ms() / 1000))
    }
}

pub(crate) fn internal(message: impl Into<String>) -> ApiError {
    let message = message.into();
    eprintln!("liveshop: {message}");
    ApiError::new(500, "internal", "the app failed this request; its log says why")
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Busy => ApiError::new(503, "busy", e.to_string()),
            e => internal(e.to_string()),
        }
    }
}

pub(crate) fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(box_body(Full::new(Bytes::from(body)).map_err(|e| match e {})))
        .expect("a valid status and header")
}

/// A file of `web/`, with its Content-Security-Policy (none for scripts and styles).
fn web_reply(file: liveshop_api::web::WebFile, policy: &str) -> Reply {
    let mut out = reply(200, file.content_type, file.body.as_bytes().to_vec());
    out.headers_mut().insert("cache-control", http::HeaderValue::from_static("no-cache"));
    if let (false, Ok(policy)) = (policy.is_empty(), http::HeaderValue::from_str(policy)) {
        out.headers_mut().insert("content-security-policy", policy);
    }
    out
}

pub(crate) fn json(status: u16, value: &impl serde::Serialize) -> Reply {
    reply(status, "application/json", serde_json::to_vec(value).expect("JSON values serialize"))
}

pub(crate) fn error(e: &ApiError) -> Reply {
    reply(e.status, "application/json", e.body().into_bytes())
}

fn with_common_headers(mut reply: Reply) -> Reply {
    for (name, value) in liveshop_room::pages::COMMON_HEADERS {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(value))
        {
            reply.headers_mut().entry(name).or_insert(value);
        }
    }
    reply
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let bytes = spin_sdk::wasip3::random::random::get_random_bytes(N as u64);
    bytes.try_into().expect("the host returns the bytes asked for")
}

/// 53 random bits: a new epoch that JavaScript clients hold exactly.
pub(crate) fn random_u53() -> u64 {
    u64::from_le_bytes(random_bytes::<8>()) >> 11
}
