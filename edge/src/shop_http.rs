//! The shops' HTTP face: the shop API, the live product feed, merchant webhooks in, Stripe's
//! webhooks in, and webhook secrets. Mounted by [`crate::http::router`].
//!
//! | route                                              | token for      | what                                   |
//! |----------------------------------------------------|----------------|----------------------------------------|
//! | `ANY /v1/shops/{shop}/{path}`                      | the shop       | the shop API (`liveshop_shop::api`)     |
//! | `ANY /v1/shows/{show}/shop/{path}`                 | the show       | the same, for the show's shop           |
//! | `GET /v1/shops/{shop}/live`, `/v1/shows/{show}/shop/live` | none    | SSE: products, prices, stock, deals     |
//! | `POST /v1/shops/{shop}/webhook-secrets/{secret_id}`| merchant       | create or rotate a `whsec_` secret      |
//! | `POST /v1/shops/{shop}/inbound-secrets/liveshop`   | merchant       | the secret for `X-Liveshop-Signature`   |
//! | `PUT /v1/shops/{shop}/inbound-secrets/shopify`     | merchant       | `{secret, currency}` of a Shopify app   |
//! | `POST /v1/shops/{shop}/inbound/liveshop`           | signature      | a merchant update (`/merchant/events`)  |
//! | `POST /v1/shops/{shop}/inbound/shopify`            | signature      | `products/*` webhooks from Shopify      |
//! | `POST /v1/payments/stripe/webhook`                 | signature      | Stripe's `payment_intent.*` events      |
//!
//! Viewers use the show's route with the token they already hold for the show's room; merchants'
//! systems use the shop's route with a merchant token for the shop. Signed inbound requests act
//! as the merchant once their signature checks out; the shop applies each event id once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use liveshop_api::Caller;
use liveshop_api::shop::{INBOUND_SECRET_ID, ShopifyInbound};
use liveshop_identity::{Identity, Role};
use liveshop_room::filter::address_key;
use liveshop_shop::api::MAX_BODY_BYTES;
use liveshop_shop::effects::{self, PaymentResult};
use liveshop_shop::guard::{self, AddressGuard};
use liveshop_shop::shopify::{ShopifyError, ShopifySettings};
use liveshop_webhooks::GENERATED_SECRET_LEN;
use serde_json::{Value, json};

use crate::actor::{HttpRequest, HttpResponse};
use crate::http::{ApiError, AppState, Limited, Presented, actor_response, read_body, sse};
use crate::node::Kind;

/// Record kind of a shop's Shopify settings (sealed: they hold the app's secret).
pub(crate) const SHOPIFY: &str = "shopify";
/// Request headers the shop sees; everything else stays with the host.
const FORWARDED_HEADERS: [&str; 1] = ["idempotency-key"];

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/shops/{shop}/live", get(shop_live))
        .route("/v1/shops/{shop}/webhook-secrets/{secret_id}", post(rotate_secret))
        .route("/v1/shops/{shop}/inbound-secrets/liveshop", post(rotate_inbound_secret))
        .route("/v1/shops/{shop}/inbound-secrets/shopify", put(set_shopify))
        .route("/v1/shops/{shop}/inbound/liveshop", post(inbound_liveshop))
        .route("/v1/shops/{shop}/inbound/shopify", post(inbound_shopify))
        .route("/v1/shops/{shop}/{*path}", any(shop_api))
        .route("/v1/shows/{show}/shop/live", get(show_shop_live))
        .route("/v1/shows/{show}/shop/{*path}", any(show_shop_api))
        .route("/v1/payments/stripe/webhook", post(stripe))
}

impl AppState {
    /// A shop some show sells from; others do not exist (nobody conjures actors by naming them).
    fn known_shop(&self, shop: &str) -> Result<(), ApiError> {
        if self.shows.shop_exists(shop)? {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::NOT_FOUND, "shop_not_found", format!("no shop {shop:?}")))
        }
    }

    /// The shop a route addresses, with the scope its tokens are for and the route's base path.
    fn addressed(&self, by: &Addressed) -> Result<(String, String, String), ApiError> {
        match by {
            Addressed::Shop(shop) => {
                self.known_shop(shop)?;
                Ok((shop.clone(), shop.clone(), format!("/v1/shops/{shop}")))
            }
            Addressed::Show(show) => {
                let shop = self.show(show)?.shop_id().to_string();
                Ok((shop, show.clone(), format!("/v1/shows/{show}/shop")))
            }
        }
    }

    /// The merchant of `shop`, from the token presented, or the refusal.
    fn merchant(&self, token: &Presented, shop: &str) -> Result<Identity, ApiError> {
        Ok(self.caller(token, shop)?.merchant()?)
    }
}

/// How a shop route names its shop: itself, or a show that sells from it (whose tokens then
/// serve).
enum Addressed {
    Shop(String),
    Show(String),
}

impl Addressed {
    fn show(&self) -> Option<&str> {
        match self {
            Addressed::Show(show) => Some(show),
            Addressed::Shop(_) => None,
        }
    }
}

/// `ANY /v1/shops/{shop}/{path}`.
async fn shop_api(
    State(app): State<Arc<AppState>>,
    Path((shop, _)): Path<(String, String)>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    token: Presented,
    req: Request,
) -> Result<Response, ApiError> {
    shop_request(&app, Addressed::Shop(shop), addr, &token, req).await
}

/// `ANY /v1/shows/{show}/shop/{path}`: the show's shop, with the show's tokens.
async fn show_shop_api(
    State(app): State<Arc<AppState>>,
    Path((show, _)): Path<(String, String)>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    token: Presented,
    req: Request,
) -> Result<Response, ApiError> {
    shop_request(&app, Addressed::Show(show), addr, &token, req).await
}

async fn shop_request(
    app: &AppState,
    by: Addressed,
    addr: SocketAddr,
    token: &Presented,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let (shop, scope, base) = app.addressed(&by)?;
    let Caller(who) = app.caller(token, &scope)?;
    forward(app, addr, (&shop, by.show()), who, method, below(&uri, &base), &headers, body).await
}

/// The path (and query) below `base`, as the shop routes it.
fn below(uri: &Uri, base: &str) -> String {
    let full = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    full.strip_prefix(base).unwrap_or(full).to_string()
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    app: &AppState,
    addr: SocketAddr,
    (shop, show): (&str, Option<&str>),
    who: Option<Identity>,
    method: Method,
    path: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ip = app.client_ip(addr, headers);
    // Anonymous reads revive actors too: paced per address like connections.
    if who.is_none() {
        app.admit(ip)?;
    }
    let body = read_body(body, MAX_BODY_BYTES).await?;
    liveshop_shop::api::screen_endpoint(method.as_str(), &path, &body, &app.endpoint_policy).map_err(
        |e| {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            ApiError::new(status, e.code.as_str(), e.message)
        },
    )?;
    let mut headers: Vec<(String, String)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|name| Some((name.to_string(), headers.get(*name)?.to_str().ok()?.to_string())))
        .collect();
    // The show a request came through, for the show's measures: set here only, never by clients.
    if let Some(show) = show {
        headers.push((liveshop_shop::analytics::SHOW_HEADER.into(), show.into()));
    }
    // Guessing coupon codes is limited per address here, as per buyer in the shop.
    let attempt = app.coupon_guard().before(shop, address_key(ip), method.as_str(), &path, app.env.now());
    let attempt = match attempt {
        Ok(attempt) => attempt,
        Err(refusal) => {
            app.node.metrics().refused("coupon_attempts");
            return shop_answer(HttpResponse {
                status: refusal.status(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: refusal.body().into_bytes(),
            });
        }
    };
    let req = HttpRequest { method: method.to_string(), path, headers, body: body.to_vec(), who };
    let answer = app.node.request(Kind::Shop, shop, req).await;
    if let Some(attempt) = attempt {
        let (status, body) = answer.as_ref().map_or((503, &[][..]), |r| (r.status, &r.body[..]));
        app.coupon_guard().after(attempt, status, body);
    }
    shop_answer(answer?)
}

impl AppState {
    fn coupon_guard(&self) -> std::sync::MutexGuard<'_, AddressGuard> {
        self.coupon_guard.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A shop's answer, with `Retry-After` when it is a `429` that says when.
fn shop_answer(mut answer: HttpResponse) -> Result<Response, ApiError> {
    if let Some(secs) = guard::retry_after(answer.status, &answer.body) {
        answer.headers.push(("retry-after".into(), secs.to_string()));
    }
    actor_response(answer)
}

/// `GET /v1/shops/{shop}/live`.
async fn shop_live(
    State(app): State<Arc<AppState>>,
    Path(shop): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (shop, _, _) = app.addressed(&Addressed::Shop(shop))?;
    live(&app, app.client_ip(addr, &headers), &shop).await
}

/// `GET /v1/shows/{show}/shop/live`.
async fn show_shop_live(
    State(app): State<Arc<AppState>>,
    Path(show): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (shop, _, _) = app.addressed(&Addressed::Show(show))?;
    live(&app, app.client_ip(addr, &headers), &shop).await
}

/// The shop's live feed over SSE: public data, so no token.
async fn live(app: &AppState, ip: IpAddr, shop: &str) -> Result<Response, ApiError> {
    app.admit(ip)?;
    let who = Identity::new("anonymous", Role::Viewer);
    let sub = app.node.connect(Kind::Shop, shop, who, None).await?;
    Ok(sse(sub).into_response())
}

/// `POST /v1/shops/{shop}/webhook-secrets/{secret_id}`: the answer shows the secret once.
async fn rotate_secret(
    State(app): State<Arc<AppState>>,
    Path((shop, secret_id)): Path<(String, String)>,
    token: Presented,
    Limited(body): Limited<MAX_BODY_BYTES>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    liveshop_api::shop::check_secret_id(&secret_id)?;
    issue_secret(&app, &shop, &secret_id, &token, &body)
}

/// `POST /v1/shops/{shop}/inbound-secrets/liveshop`.
async fn rotate_inbound_secret(
    State(app): State<Arc<AppState>>,
    Path(shop): Path<String>,
    token: Presented,
    Limited(body): Limited<MAX_BODY_BYTES>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    issue_secret(&app, &shop, INBOUND_SECRET_ID, &token, &body)
}

fn issue_secret(
    app: &AppState,
    shop: &str,
    secret_id: &str,
    token: &Presented,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.known_shop(shop)?;
    app.merchant(token, shop)?;
    let mut random = [0u8; GENERATED_SECRET_LEN];
    app.env.fill_random(&mut random);
    let secret = liveshop_api::shop::secret_to_issue(body, random)?;
    let issued = app.webhook_secrets.rotate(shop, secret_id, &secret, app.env.now())?;
    Ok((StatusCode::CREATED, Json(json!(issued))))
}

/// `PUT /v1/shops/{shop}/inbound-secrets/shopify`.
async fn set_shopify(
    State(app): State<Arc<AppState>>,
    Path(shop): Path<String>,
    token: Presented,
    Limited(body): Limited<MAX_BODY_BYTES>,
) -> Result<StatusCode, ApiError> {
    app.known_shop(&shop)?;
    app.merchant(&token, &shop)?;
    let settings = ShopifySettings::parse(&body).map_err(shopify_error)?;
    app.sealed.put(SHOPIFY, &shop, &serde_json::to_string(&settings).expect("serializes"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/shops/{shop}/inbound/liveshop`: a `/merchant/events` body, signed with
/// `X-Liveshop-Signature`.
async fn inbound_liveshop(
    State(app): State<Arc<AppState>>,
    Path(shop): Path<String>,
    headers: HeaderMap,
    Limited(body): Limited<MAX_BODY_BYTES>,
) -> Result<Response, ApiError> {
    app.known_shop(&shop)?;
    let secrets = app.webhook_secrets.signing(&shop, INBOUND_SECRET_ID, app.env.now())?;
    let signature = headers.get(liveshop_webhooks::liveshop::SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    liveshop_api::shop::verify_liveshop(&secrets, signature, &body, app.env.now())?;
    merchant_event(&app, &shop, "liveshop", body.to_vec()).await
}

/// `POST /v1/shops/{shop}/inbound/shopify`: `products/*` webhooks as merchant updates
/// ([`liveshop_shop::shopify`]), deduplicated by `X-Shopify-Event-Id`; other topics are
/// acknowledged and ignored (Shopify retries anything else).
async fn inbound_shopify(
    State(app): State<Arc<AppState>>,
    Path(shop): Path<String>,
    headers: HeaderMap,
    Limited(body): Limited<MAX_BODY_BYTES>,
) -> Result<Response, ApiError> {
    app.known_shop(&shop)?;
    let settings: Option<ShopifySettings> =
        app.sealed.get(SHOPIFY, &shop)?.and_then(|t| serde_json::from_str(&t).ok());
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match liveshop_api::shop::verify_shopify(settings.as_ref(), header, &body)? {
        ShopifyInbound::Apply(event) => merchant_event(&app, &shop, "shopify", event).await,
        ShopifyInbound::Ignored(answer) => Ok((StatusCode::OK, Json(answer)).into_response()),
    }
}

async fn merchant_event(
    app: &AppState,
    shop: &str,
    source: &str,
    body: Vec<u8>,
) -> Result<Response, ApiError> {
    let update = liveshop_api::shop::merchant_update(source, body);
    let req = HttpRequest {
        method: "POST".into(),
        path: liveshop_api::shop::MERCHANT_EVENTS_PATH.into(),
        headers: vec![],
        body: update.body,
        who: Some(update.who),
    };
    actor_response(app.node.request(Kind::Shop, shop, req).await?)
}

/// `POST /v1/payments/stripe/webhook`: Stripe's news about a charge, verified, to its shop.
async fn stripe(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Limited(body): Limited<MAX_BODY_BYTES>,
) -> Result<StatusCode, ApiError> {
    let Some(stripe) = &app.stripe else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "this node does not use Stripe"));
    };
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    // Through the adapter, which also records the charge's intent for later refunds.
    let result = stripe
        .receive_webhook(&pairs, &body, app.env.now() / 1000)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    if let Some(r) = result {
        app.known_shop(&r.shop)?;
        let body =
            serde_json::to_string(&PaymentResult { order: r.order, outcome: r.outcome }).expect("serializes");
        app.node.effect_result(Kind::Shop, &r.shop, effects::PAYMENT_RESULT, body).await?;
    }
    Ok(StatusCode::OK)
}

fn shopify_error(e: ShopifyError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string())
}
