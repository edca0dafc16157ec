//! The node's HTTP face (axum): rooms over WebSocket and SSE + POST, shows, guest tokens, the
//! media origin's signed stream events, health, metrics and the web pages; the shops' routes are
//! in [`crate::shop_http`]. Every error is one [`ApiError`]: status + `{"error": {"code", "message"}}`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, Stream, StreamExt, stream};
use liveshop_api::route::{Paced, Route};
use liveshop_api::{Caller, Credentials};
use liveshop_identity::{DEVICE_ID_BYTES, Devices, Identity, Role, Secret, TokenError};
use liveshop_room::filter::{Pace, TokenBucket};
use liveshop_room::pages::Page;
use liveshop_shop::api::MAX_BODY_BYTES;
use liveshop_webhooks::{DEFAULT_TOLERANCE_SECS, ReplayGuard, WebhookError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::actor::{Env, HttpRequest};
use crate::config::EdgeConfig;
use crate::node::{Delivery, Kind, Node, NodeError, Subscription};
use crate::outbound::WebhookSecrets;
use crate::pacing::{Limit, Pacer};
use crate::payments::Stripe;
use crate::shows::{NewShow, Show, ShowError, Shows};
use crate::sqlite::Db;

/// Close code for a connection that sends frames faster than allowed.
pub const CLOSE_RATE_LIMITED: u16 = 4029;
/// A socket write that takes longer than this means a dead or stuck client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bucket of `burst` that refills `per_sec` a second.
fn per_sec(burst: u64, per_sec: u64) -> Pace {
    Pace { burst, refill_every_ms: 1000 / per_sec.max(1) }
}

/// An error as every endpoint reports it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        (self.status, body).into_response()
    }
}

impl From<liveshop_api::ApiError> for ApiError {
    fn from(e: liveshop_api::ApiError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.code, e.message)
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
    }
}

/// A refused signature is a 401; a signed request seen before, a 409 (it was delivered).
impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        let status = match e {
            WebhookError::ReplayedEvent => StatusCode::CONFLICT,
            _ => StatusCode::UNAUTHORIZED,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::RoomFull(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "room_full", e.to_string())
            }
            NodeError::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
            }
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        tracing::error!("storage: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "storage failed")
    }
}

impl From<ShowError> for ApiError {
    fn from(e: ShowError) -> Self {
        let (status, code) = match &e {
            ShowError::Exists(_) => (StatusCode::CONFLICT, "show_exists"),
            ShowError::NotFound(_) => (StatusCode::NOT_FOUND, "show_not_found"),
            ShowError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            ShowError::Claim(c) => (StatusCode::FORBIDDEN, c.code()),
            ShowError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// What every handler shares.
pub struct AppState {
    pub node: Node,
    pub shows: Shows,
    pub secret: Secret,
    pub env: Arc<dyn Env>,
    pub config: EdgeConfig,
    pub commerce: Commerce,
    stream_events: StreamEventInbox,
    /// Every per-address limit ([`crate::pacing`]).
    pacer: Pacer,
    /// Wrong coupon codes per shop and client address ([`liveshop_shop::guard`]).
    pub(crate) coupon_guard: Mutex<liveshop_shop::guard::AddressGuard>,
    /// The media origin in this process, when there is one (it ends live sessions).
    pub(crate) live_streams: std::sync::OnceLock<Arc<dyn crate::stream_keys::LiveStreams>>,
    pub(crate) feeds: crate::feed::Feeds,
}

/// What `POST /v1/stream-events` checks: the key the media origin signs with, and the event
/// ids it has already taken.
struct StreamEventInbox {
    secret: liveshop_webhooks::Secret,
    seen: Mutex<ReplayGuard>,
}

/// Ids of stream events are remembered for every timestamp the tolerance still accepts, up to
/// this many (the guard scans them): a health report every 5 s from 160 live shows.
const STREAM_EVENT_IDS: usize = 20_000;

/// What the shop routes need besides the node: where secrets and host records of shops live.
pub struct Commerce {
    pub shop_db: Db,
    pub webhook_secrets: WebhookSecrets,
    /// Set when the node's payments go through Stripe (for its inbound webhooks).
    pub stripe: Option<Stripe>,
    /// The shop records that hold secrets.
    pub sealed: crate::sealed::SealedRecords,
    /// Where webhook endpoints may point (`[webhooks]`).
    pub endpoint_policy: liveshop_webhooks::EndpointPolicy,
}

impl std::ops::Deref for AppState {
    type Target = Commerce;
    fn deref(&self) -> &Commerce {
        &self.commerce
    }
}

impl AppState {
    pub fn new(
        node: Node,
        shows: Shows,
        secret: Secret,
        env: Arc<dyn Env>,
        config: EdgeConfig,
        commerce: Commerce,
        stream_event_secret: liveshop_webhooks::Secret,
    ) -> Self {
        let stream_events = StreamEventInbox {
            secret: stream_event_secret,
            seen: Mutex::new(ReplayGuard::new(2 * DEFAULT_TOLERANCE_SECS, STREAM_EVENT_IDS)),
        };
        AppState {
            node,
            shows,
            secret,
            env,
            pacer: Pacer::new(config.paced_addresses),
            config,
            commerce,
            stream_events,
            coupon_guard: Mutex::default(),
            live_streams: std::sync::OnceLock::new(),
            feeds: crate::feed::Feeds::default(),
        }
    }

    pub(crate) fn now_secs(&self) -> u64 {
        self.env.now() / 1000
    }

    /// The client's address, for every per-address limit: the TCP peer's, or what a trusted
    /// proxy says it is ([`crate::pacing::client_address`]).
    pub(crate) fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let header = self.config.client_ip_header.as_deref();
        crate::pacing::client_address(peer, headers, header, &self.config.trusted_proxies)
    }

    /// One new connection (or read) for this client address ([`AppState::client_ip`]), or a 429.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.pace(Limit::Connections, ip)
    }

    /// One from `ip`'s allowance for `limit`, or a 429 `rate_limited` saying when to retry.
    pub(crate) fn pace(&self, limit: Limit, ip: IpAddr) -> Result<(), ApiError> {
        let c = &self.config;
        let (pace, reason, what) = match limit {
            Limit::Connections => {
                (per_sec(c.conns_per_ip_burst, c.conns_per_ip_per_sec), "connection_rate", "connections")
            }
            Limit::GuestDevices => {
                let refill_every_ms = 3_600_000 / c.guest_devices_per_ip_per_hour.max(1);
                (Pace { burst: c.guest_devices_per_ip_burst, refill_every_ms }, "guest_rate", "new guests")
            }
            Limit::Commands => {
                (per_sec(c.commands_per_ip_burst, c.commands_per_ip_per_sec), "command_rate", "commands")
            }
            Limit::Reads => {
                (per_sec(c.feed_reads_per_ip_burst, c.feed_reads_per_ip_per_sec), "feed_rate", "feed reads")
            }
        };
        self.pacer.take(limit, pace, ip, self.env.now()).map_err(|ms| {
            self.node.metrics().refused(reason);
            let msg = format!("too many {what} from your address; retry in {ms} ms");
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", msg)
        })
    }

    /// Who presents `token` for `scope` (a room, a shop, a show); refused tokens are counted.
    pub(crate) fn caller(&self, token: &Presented, scope: &str) -> Result<Caller, ApiError> {
        Caller::of(token.0.as_deref(), |t| self.secret.verify(t, scope, self.now_secs()))
            .map_err(|e| self.refusal(e))
    }

    /// A refusal of the shared HTTP face (`liveshop_api`); refused tokens are counted.
    pub(crate) fn refusal(&self, e: liveshop_api::ApiError) -> ApiError {
        if e.status == 401 {
            self.node.metrics().refused("token");
        }
        e.into()
    }

    /// Lets `POST /v1/shows/{show}/stream-key` end live sessions at the media origin that this
    /// process runs (`liveshop dev` and `liveshop edge`); set once, at start.
    pub fn mount_live_streams(&self, streams: Arc<dyn crate::stream_keys::LiveStreams>) {
        let _ = self.live_streams.set(streams);
    }

    pub(crate) fn show(&self, room: &str) -> Result<Show, ApiError> {
        Ok(self.shows.get(room)?)
    }

    /// The device the request's signed `liveshop_device` cookie names, or a new one from `ip`'s
    /// allowance of new guests ([`Limit::GuestDevices`]) with the `Set-Cookie` that names it.
    pub(crate) fn device(
        &self,
        ip: IpAddr,
        headers: &HeaderMap,
    ) -> Result<(String, Option<HeaderValue>), ApiError> {
        let devices = self.secret.devices();
        let cookies = headers.get_all(header::COOKIE).into_iter().filter_map(|v| v.to_str().ok());
        if let Some(device) = cookies.into_iter().find_map(|c| devices.from_cookie_header(c)) {
            return Ok((device, None));
        }
        self.pace(Limit::GuestDevices, ip)?;
        let mut random = [0u8; DEVICE_ID_BYTES];
        self.env.fill_random(&mut random);
        let device = Devices::new_device(random);
        let cookie = self.device_cookie(&device);
        Ok((device, Some(cookie)))
    }

    fn device_cookie(&self, device: &str) -> HeaderValue {
        let secure = self.config.base_url().starts_with("https://");
        HeaderValue::from_str(&self.secret.devices().set_cookie(device, secure))
            .expect("a cookie of hex and base64url")
    }
}

/// The token a request presents, read once ([`liveshop_api::Credentials`]): `?token=` or a
/// WebSocket subprotocol beside `liveshop.v1` where the route takes them, or
/// `Authorization: Bearer`.
pub(crate) struct Presented(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Presented {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let header = |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
        let credentials = Credentials {
            authorization: header(header::AUTHORIZATION),
            query: parts.uri.query(),
            protocols: header(header::SEC_WEBSOCKET_PROTOCOL),
        };
        let route = Route::of(parts.method.as_str(), parts.uri.path());
        Ok(Presented(credentials.for_route(route).token().map(str::to_string)))
    }
}

/// A `/v1/rooms/{room}/...` route's gate, as axum's JWT example's `Claims` extractor: the
/// client's address paced by the route's allowance ([`Route::paced`]), the show found, and the
/// caller verified for its room, in that order. Handlers get who calls, not a token to check.
pub(crate) struct RoomCaller {
    pub room: String,
    pub caller: Caller,
}

#[derive(Deserialize)]
struct RoomPath {
    room: String,
}

impl FromRequestParts<Arc<AppState>> for RoomCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ApiError> {
        let Path(RoomPath { room }) = Path::<RoomPath>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.body_text()))?;
        let paced = Route::of(parts.method.as_str(), parts.uri.path()).and_then(|r| r.paced());
        if let (Some(paced), Some(ConnectInfo(peer))) =
            (paced, parts.extensions.get::<ConnectInfo<SocketAddr>>())
        {
            let limit = match paced {
                Paced::Connections => Limit::Connections,
                Paced::Commands => Limit::Commands,
                Paced::Reads => Limit::Reads,
            };
            app.pace(limit, app.client_ip(*peer, &parts.headers))?;
        }
        app.show(&room)?;
        let Ok(presented) = Presented::from_request_parts(parts, app).await;
        let caller = app.caller(&presented, &room)?;
        Ok(RoomCaller { room, caller })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/watch/demo") }))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/metrics", get(metrics))
        .route("/v1/shows", post(create_show))
        .route("/v1/shows/{show}", get(get_show))
        .route("/v1/rooms/{room}/guest", post(guest_token))
        .route("/v1/rooms/{room}/ws", get(websocket))
        .route("/v1/rooms/{room}/events", get(events))
        .route("/v1/rooms/{room}/commands", post(command))
        .route("/v1/rooms/{room}/state", get(room_state))
        .route("/v1/rooms/{room}/feed", get(crate::feed::get_feed))
        .route("/v1/rooms/{room}/heartbeat", post(crate::feed::heartbeat))
        .route("/v1/rooms/{room}/timeline", get(room_timeline))
        .route("/v1/stream-events", post(stream_event))
        .route("/watch/{show}", get(viewer_page))
        .route(
            "/dashboard/{show}",
            get(|| async { with_policy(page("dashboard.html"), Page::Dashboard, None) }),
        )
        .route("/web/{file}", get(|Path(file): Path<String>| async move { web_file(&file) }))
        .route("/web/vendor/{file}", get(vendor_file))
        .route("/shows/{show}/report", get(|| async { with_policy(page("report.html"), Page::Report, None) }))
        .merge(crate::analytics::routes())
        .merge(crate::shop_http::routes())
        .merge(crate::stream_keys::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(axum::middleware::map_response(json_refusals))
        .layer(axum::middleware::map_response(common_headers))
        .with_state(state)
}

async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let mut text = app.node.metrics().render_without_eof();
    if let Some(origin) = app.live_streams.get() {
        origin.encode_metrics(&mut text);
    }
    text.push_str("# EOF\n");
    ([(header::CONTENT_TYPE, ct)], text)
}

/// `POST /v1/shows`: hosts and merchants with a platform-wide token (`room: "*"`) create shows
/// selling from shops they own (or any shop, for the config's `operators`); merchants with a
/// token for a shop create shows selling from it (`liveshop_room::show::claim_shop`).
async fn create_show(
    State(app): State<Arc<AppState>>,
    Presented(token): Presented,
    Limited(body): Limited<MAX_BODY_BYTES>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let token = token.ok_or_else(|| app.refusal(liveshop_api::ApiError::token(TokenError::Malformed)))?;
    let new: NewShow = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.to_string()))?;
    let show = Show::new(new, app.env.now()).map_err(ShowError::Invalid)?;
    let verify = |t: &str, scope: &str| app.secret.verify(t, scope, app.now_secs());
    let (who, credential) =
        liveshop_api::show_creator(&token, show.shop_id(), verify).map_err(|e| app.refusal(e))?;
    // Before the shop is claimed: a show that exists must not leave a claim behind.
    if app.shows.get(&show.id).is_ok() {
        return Err(ShowError::Exists(show.id).into());
    }
    let operator = app.config.operators.contains(&who.subject);
    app.shows.claim_shop(show.shop_id(), &who, credential, operator)?;
    let show = app.shows.insert(show)?;
    // The room knows its host from the start, so nobody can sanction them before they connect.
    let host = Identity::new(who.subject.clone(), Role::Host);
    let vouch = HttpRequest {
        method: "PUT".into(),
        path: "/staff".into(),
        body: vec![],
        who: Some(host),
        headers: vec![],
    };
    app.node.request(Kind::Room, &show.id, vouch).await?;
    let host_token = app.secret.mint(&liveshop_api::host_claims(&who, &show, app.now_secs()))?;
    let mut created = liveshop_api::created_show(&app.config.base_url(), &show, &host_token);
    // The edge node also says how to go live: it runs the media origin.
    let publishing = serde_json::to_value(crate::stream_keys::Publishing::of(&app, &show));
    if let (Value::Object(created), Ok(Value::Object(publishing))) = (&mut created, publishing) {
        created.extend(publishing);
    }
    Ok((StatusCode::CREATED, Json(created)))
}

async fn get_show(
    State(app): State<Arc<AppState>>,
    Path(show): Path<String>,
) -> Result<Json<Show>, ApiError> {
    Ok(Json(app.show(&show)?))
}

/// `POST /v1/rooms/{room}/guest`: a viewer token for anyone, when the node allows guests, with
/// the name given or none. The token is for the device its signed `liveshop_device` cookie
/// names, whose guest subject is always the same (a cart made before picking a name stays the
/// viewer's); a request without one gets a new device and its cookie ([`AppState::device`]).
async fn guest_token(
    State(app): State<Arc<AppState>>,
    Path(room): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Limited(body): Limited<MAX_BODY_BYTES>,
) -> Result<Response, ApiError> {
    if !app.config.guest_tokens {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this node gives no guest tokens"));
    }
    let ip = app.client_ip(addr, &headers);
    app.admit(ip)?;
    app.show(&room)?;
    let name = liveshop_api::guest_name(&body)?;
    let (device, _) = app.device(ip, &headers)?;
    let guest = liveshop_api::Guest::new(&app.secret.devices(), &room, &device, name, app.now_secs());
    let token = app.secret.mint(&guest.claims)?;
    let body = Json(guest.answer(&token));
    // Set again each time, so a device seen within its lifetime keeps it.
    Ok(([(header::SET_COOKIE, app.device_cookie(&device))], body).into_response())
}

/// Where a socket or stream resumes (`?token=` is the caller's, [`Presented`]).
#[derive(Deserialize, Default)]
struct ConnectQuery {
    epoch: Option<u64>,
    seq: Option<u64>,
}

/// `GET /v1/rooms/{room}/ws`: the token comes as `?token=` or as a `Sec-WebSocket-Protocol`
/// value offered beside `liveshop.v1`.
async fn websocket(
    State(app): State<Arc<AppState>>,
    RoomCaller { room, caller }: RoomCaller,
    Query(q): Query<ConnectQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // A plain GET gets the JSON error every endpoint gives, not axum's text.
    let ws =
        ws.map_err(|e| ApiError::new(StatusCode::UPGRADE_REQUIRED, "upgrade_required", e.body_text()))?;
    let who = caller.required()?;
    let sub = app.node.connect(Kind::Room, &room, who, q.epoch.zip(q.seq)).await?;
    let pace = Pace {
        burst: app.config.frames_per_conn_per_sec * 2,
        refill_every_ms: 1000 / app.config.frames_per_conn_per_sec.max(1),
    };
    let env = app.env.clone();
    Ok(ws
        .protocols([liveshop_api::PROTOCOL])
        .max_message_size(app.config.max_ws_message_bytes)
        // tungstenite zero-fills its whole read buffer on every read; clients send little.
        .read_buffer_size(8 * 1024)
        .on_upgrade(move |socket| serve_websocket(socket, sub, pace, env)))
}

async fn serve_websocket(socket: WebSocket, mut sub: Subscription, pace: Pace, env: Arc<dyn Env>) {
    let (mut tx, mut rx) = socket.split();
    let mut bucket = TokenBucket::full(pace, env.now());
    let close = |code: u16, reason: String| Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    loop {
        tokio::select! {
            delivery = sub.next() => match delivery {
                Delivery::Frames(frames) => {
                    let write = async {
                        for f in frames {
                            tx.feed(Message::Text(f)).await?;
                        }
                        tx.flush().await
                    };
                    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Delivery::Close(code, reason) => {
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, tx.send(close(code, reason))).await;
                    return;
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if bucket.take(pace, env.now()).is_err() {
                        let _ = tx.send(close(CLOSE_RATE_LIMITED, "too many frames".into())).await;
                        return;
                    }
                    if sub.send(text.to_string()).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let _ = tx.send(close(1003, "text frames only".into())).await;
                    return;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => {
                    // axum hides tungstenite's error type; its capacity and UTF-8 errors name
                    // themselves. RFC 6455 closes a text frame that is not UTF-8 with 1007.
                    let e = e.to_string();
                    let (code, reason) = if e.contains("too long") {
                        (1009, "message too big")
                    } else if e.contains("UTF-8") {
                        (1007, "text frames are UTF-8")
                    } else {
                        (1002, "protocol error")
                    };
                    let _ = tx.send(close(code, reason.into())).await;
                    return;
                }
                Some(Ok(Message::Close(_))) | None => return,
            },
        }
    }
}

/// `GET /v1/rooms/{room}/events`: the same frames as the WebSocket, as server-sent events whose
/// ids are `<epoch>-<seq>`, resumable with `Last-Event-ID`.
async fn events(
    State(app): State<Arc<AppState>>,
    RoomCaller { room, caller }: RoomCaller,
    Query(q): Query<ConnectQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let who = caller.required()?;
    let last_id = liveshop_api::last_event_id(headers.get("last-event-id").and_then(|v| v.to_str().ok()));
    let sub = app.node.connect(Kind::Room, &room, who, last_id.or(q.epoch.zip(q.seq))).await?;
    Ok(sse(sub))
}

/// A subscription's frames as server-sent events, ending with a `close` event.
pub(crate) fn sse(sub: Subscription) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let frames = stream::unfold(Some(sub), |state| async move {
        let mut sub = state?;
        match sub.next().await {
            Delivery::Frames(frames) => {
                Some((frames.iter().map(|f| sse_event(f.as_str())).collect::<Vec<_>>(), Some(sub)))
            }
            Delivery::Close(code, reason) => {
                let data = json!({ "code": code, "reason": reason }).to_string();
                Some((vec![SseEvent::default().event("close").data(data)], None))
            }
        }
    });
    Sse::new(frames.flat_map(|events| stream::iter(events.into_iter().map(Ok))))
        .keep_alive(KeepAlive::default())
}

/// A frame as an SSE event; logged events get the id `<epoch>-<seq>` to resume from.
fn sse_event(frame: &str) -> SseEvent {
    let event = SseEvent::default().data(frame);
    match liveshop_room::protocol::EventFrame::position(frame) {
        Some((e, s)) => event.id(format!("{}-{}", e.0, s.0)),
        None => event,
    }
}

/// `POST /v1/rooms/{room}/commands`: one client frame as the body; the answer is its `ack`, or
/// the error with a 4xx status. Paced per client address before anything else, on top of the
/// room's pacing per user (which new guest tokens would otherwise reset).
async fn command(
    State(app): State<Arc<AppState>>,
    RoomCaller { room, caller }: RoomCaller,
    body: Body,
) -> Result<Response, ApiError> {
    let who = caller.required()?;
    let body = command_body(body).await?;
    room_command(&app, &room, who, body.to_vec()).await
}

/// A command's body, up to [`liveshop_api::MAX_COMMAND_BYTES`].
async fn command_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    read_body(body, liveshop_api::MAX_COMMAND_BYTES).await
}

/// A request body of at most `MAX` bytes, read before anything else is looked at. Every route
/// takes its body this way (or through [`read_body`]): axum's own `Bytes`, `String` and `Json`
/// refuse in plain text, and every refusal here is an [`ApiError`].
pub(crate) struct Limited<const MAX: usize>(pub axum::body::Bytes);

impl<S: Send + Sync, const MAX: usize> axum::extract::FromRequest<S> for Limited<MAX> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, _: &S) -> Result<Self, ApiError> {
        read_body(req.into_body(), MAX).await.map(Limited)
    }
}

/// `body`, or `413 payload_too_large` when it is longer than `max` bytes.
pub(crate) async fn read_body(body: Body, max: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, max).await.map_err(|_| {
        let msg = format!("request bodies are limited to {max} bytes");
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", msg)
    })
}

/// One command to `room` as `who`; the answer is the room's (its `ack`, or the error).
async fn room_command(
    app: &AppState,
    room: &str,
    who: Identity,
    body: Vec<u8>,
) -> Result<Response, ApiError> {
    let req = HttpRequest {
        method: "POST".into(),
        path: "/commands".into(),
        body,
        who: Some(who),
        headers: vec![],
    };
    actor_response(app.node.request(Kind::Room, room, req).await?)
}

/// `POST /v1/stream-events`: a `stream.*` event from the media origin, `{"show", "event"}`,
/// signed with Standard Webhooks headers and the key derived from the node's secret
/// ([`crate::server::stream_event_secret`]). Each event id is taken once; the event goes to the
/// show's room as a command from a host, which relays it to the dashboard and the viewers.
async fn stream_event(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = command_body(body).await?;
    let now = app.now_secs();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = std::slice::from_ref(&app.stream_events.secret);
    let signed = liveshop_webhooks::standard::verify(secret, header, &body, now, DEFAULT_TOLERANCE_SECS)
        .inspect_err(|_| app.node.metrics().refused("signature"))?;
    let seen = || app.stream_events.seen.lock().unwrap_or_else(|p| p.into_inner());
    seen().check(signed.id, now)?;
    let answer = relay_stream_event(&app, &body).await;
    // Only an event the room took counts as seen: the origin retries the others with their id.
    if !answer.as_ref().is_ok_and(|r| r.status().is_success()) {
        seen().forget(signed.id);
    }
    answer
}

/// A verified stream event to its show's room, as it came: the room reads it (once) and
/// refuses what the origin may not say.
async fn relay_stream_event(app: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let post = liveshop_api::StreamEventPost::parse(body)?;
    app.show(&post.show)?;
    let req = HttpRequest {
        method: "POST".into(),
        path: liveshop_room::STREAM_EVENTS_PATH.into(),
        body: post.event.get().as_bytes().to_vec(),
        who: Some(Identity::new(liveshop_room::MEDIA_ORIGIN, Role::Host)),
        headers: vec![],
    };
    let answer = app.node.request(Kind::Room, &post.show, req).await?;
    let taken: Option<liveshop_room::StreamEventTaken> =
        (answer.status == 200).then(|| serde_json::from_slice(&answer.body).ok()).flatten();
    let response = actor_response(answer)?;
    if taken.is_some_and(|t| t.ended) {
        crate::analytics::report_ready(app, &post.show).await;
    }
    Ok(response)
}

/// `GET /v1/rooms/{room}/state`: the room as the caller (or an anonymous viewer) sees it.
async fn room_state(
    State(app): State<Arc<AppState>>,
    RoomCaller { room, caller: Caller(who) }: RoomCaller,
    // The sockets' query, refused as theirs is when malformed.
    Query(_): Query<ConnectQuery>,
) -> Result<Response, ApiError> {
    // Each read is an event of the room (it may revive it): the gate paced it as a connection.
    let req = HttpRequest { method: "GET".into(), path: "/state".into(), body: vec![], who, headers: vec![] };
    actor_response(app.node.request(Kind::Room, &room, req).await?)
}

/// `GET /v1/rooms/{room}/timeline`: the replay's moments, public and cacheable
/// (`liveshop_api::timeline`).
async fn room_timeline(
    State(app): State<Arc<AppState>>,
    Path(room): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Public, as the feed: a stale token a replay page still holds must not refuse it.
    app.node.metrics().timeline_requests.inc();
    app.pace(Limit::Reads, app.client_ip(addr, &headers))?;
    app.show(&room)?;
    let req = HttpRequest {
        method: "GET".into(),
        path: "/timeline".into(),
        body: vec![],
        who: None,
        headers: vec![],
    };
    let answer = app.node.request(Kind::Room, &room, req).await?;
    let tags = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    let (status, headers, body) = liveshop_api::timeline::answer(answer.status, answer.body, tags);
    actor_response(crate::actor::HttpResponse {
        status,
        headers: headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        body,
    })
}

pub(crate) fn actor_response(r: crate::actor::HttpResponse) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(r.status)
        .map_err(|_| ApiError::new(StatusCode::BAD_GATEWAY, "internal", "the room answered nonsense"))?;
    let mut response = (status, r.body).into_response();
    for (k, v) in r.headers {
        if let (Ok(name), Ok(value)) = (header::HeaderName::try_from(k), HeaderValue::try_from(v)) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// The headers of every response ([`liveshop_room::pages::COMMON_HEADERS`]).
async fn common_headers(mut response: Response) -> Response {
    for (name, value) in liveshop_room::pages::COMMON_HEADERS {
        response.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Every refusal in the JSON error shape, including axum's own (a query string that does not
/// parse, a path that is not UTF-8, a method a route does not take), which come as plain text
/// or nothing. The status and its headers (`Allow`, `Retry-After`) stay; successes (pages,
/// playlists, SDP answers, streams, upgrades) pass untouched. The node's router and the media
/// origin's, merged or standalone (`liveshop origin`), all answer through it.
pub async fn json_refusals(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text: String = String::from_utf8_lossy(&text).trim().chars().take(200).collect();
    let code = match status.as_u16() {
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        429 => "rate_limited",
        500.. => "internal",
        _ => "invalid_argument",
    };
    let message =
        if text.is_empty() { status.canonical_reason().unwrap_or("refused").to_string() } else { text };
    let mut refusal = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            refusal.headers_mut().insert(name.clone(), value.clone());
        }
    }
    refusal
}

/// `GET /watch/{show}`: frameable by the show's embed origins only (by nobody when there is no
/// such show).
async fn viewer_page(State(app): State<Arc<AppState>>, Path(show): Path<String>) -> Response {
    let show = app.shows.get(&show).ok();
    with_policy(page("viewer.html"), Page::Viewer, show.as_ref())
}

/// `/web/{file}`: the pages' scripts and styles; a page's HTML file itself only inert (the
/// pages are `/watch/{show}` and `/dashboard/{show}`, with their policies).
fn web_file(file: &str) -> Response {
    let mut response = page(file);
    if file.ends_with(".html") {
        let policy = HeaderValue::from_static(liveshop_room::pages::RAW_PAGE_POLICY);
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// A page with its `Content-Security-Policy` ([`liveshop_room::pages`]).
fn with_policy(mut response: Response, page: Page, show: Option<&Show>) -> Response {
    let policy = liveshop_room::pages::content_security_policy(page, show);
    // Embed origins are validated when the show is made: the policy is always a header value.
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// `/web/vendor/{file}`: the third-party code the pages load, from npm (`web/package.json`).
async fn vendor_file(
    State(app): State<Arc<AppState>>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let (path, ct) = match file.as_str() {
        "uplot.js" => ("uplot/dist/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        "uplot.css" => ("uplot/dist/uPlot.min.css", "text/css; charset=utf-8"),
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file")),
    };
    let modules = app.config.web_modules.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "this node serves no npm packages (web_modules)")
    })?;
    let path = modules.join(path);
    let body = tokio::fs::read(&path).await.map_err(|_| {
        let msg = format!("{} is missing: run `npm ci` in web/", path.display());
        ApiError::new(StatusCode::NOT_FOUND, "not_found", msg)
    })?;
    Ok(([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response())
}

/// The web pages, built into the binary so the node is one file (`liveshop_api::web`).
fn page(file: &str) -> Response {
    match liveshop_api::web::file(file) {
        Some(f) => ([(header::CONTENT_TYPE, f.content_type), (header::CACHE_CONTROL, "no-cache")], f.body)
            .into_response(),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into_response(),
    }
}
