//! A show's report for its host and its shop's merchant: the room's and the shop's measures
//! fetched from the two actors and joined by [`liveshop_analytics::Report`].
//!
//! | route                                          | answer                                      |
//! |------------------------------------------------|---------------------------------------------|
//! | `GET /v1/shows/{show}/analytics?previous=N`    | the report (JSON; N earlier shows, 0..=10, default 5) |
//! | `GET /v1/shows/{show}/analytics/minutes.csv`   | the per-minute series                       |
//! | `GET /v1/shows/{show}/analytics/products.csv`  | the per-product table                       |
//! | `GET /shows/{show}/report`                     | the report page (`web/report.html`)         |
//!
//! Every data route wants `Authorization: Bearer` with a host token for the show or a merchant
//! token for its shop. When the stream ends, [`report_ready`] has the shop tell the merchant.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use liveshop_analytics::{Report, RoomAnswer, ShopAnswer};
use liveshop_identity::{Identity, Role, TokenError};

use crate::actor::HttpRequest;
use crate::http::{ApiError, AppState, actor_response, bearer};
use crate::node::Kind;
use crate::shows::Show;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/shows/{show}/analytics", get(analytics))
        .route("/v1/shows/{show}/analytics/{file}", get(csv))
}

async fn analytics(
    State(app): State<Arc<AppState>>,
    Path(show): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let previous = liveshop_analytics::parse_query(query.as_deref().unwrap_or_default())
        .map_err(|msg| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", msg))?;
    let (show, who) = reader(&app, &show, &headers)?;
    let mut report = report(&app, &show, &who).await?;
    report.previous = earlier(&app, &show, &who, previous).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(report)).into_response())
}

async fn csv(
    State(app): State<Arc<AppState>>,
    Path((show, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let Some(write) = liveshop_analytics::csv_file(&file) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such file").into());
    };
    let (show, who) = reader(&app, &show, &headers)?;
    let report = report(&app, &show, &who).await?;
    let disposition = format!("attachment; filename=\"{}-{file}\"", show.id);
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
        (header::CONTENT_DISPOSITION, disposition),
        (header::CACHE_CONTROL, "no-store".to_string()),
    ];
    Ok((headers, write(&report)).into_response())
}

/// Why there is no report: the node's refusal, or an actor's (in the JSON error shape already).
pub(crate) enum Refusal {
    Node(ApiError),
    Actor(crate::actor::HttpResponse),
}

impl<E: Into<ApiError>> From<E> for Refusal {
    fn from(e: E) -> Refusal {
        Refusal::Node(e.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Node(e) => e.into_response(),
            Refusal::Actor(r) => actor_response(r).unwrap_or_else(IntoResponse::into_response),
        }
    }
}

/// The show and who asks: its host, or the merchant of its shop.
fn reader(app: &AppState, show: &str, headers: &HeaderMap) -> Result<(Show, Identity), ApiError> {
    let show = app.show(show)?;
    let token = bearer(headers).ok_or_else(|| ApiError::from(TokenError::Malformed))?;
    let who = match app.secret.verify(token, &show.id, app.now_secs()) {
        Err(TokenError::WrongRoom) if show.shop_id() != show.id => app.verify(token, show.shop_id())?,
        verified => verified.map_err(|e| app.refused_token(e))?,
    };
    if !liveshop_analytics::may_read(who.role) {
        let msg = "the report is for the show's host and the shop's merchant";
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", msg));
    }
    Ok((show, who))
}

/// The show's report, from its room and its shop.
async fn report(app: &AppState, show: &Show, who: &Identity) -> Result<Report, Refusal> {
    let get = |path: String| HttpRequest {
        method: "GET".into(),
        path,
        headers: vec![],
        body: vec![],
        who: Some(who.clone()),
    };
    let room = app.node.request(Kind::Room, &show.id, get("/analytics".into())).await?;
    let shop = app.node.request(Kind::Shop, show.shop_id(), get(format!("/analytics/{}", show.id)));
    let shop = shop.await?;
    let room: RoomAnswer = parse(room)?;
    let shop: ShopAnswer = parse(shop)?;
    Ok(Report::build(&show.id, &room, &shop))
}

/// An actor's answer; its refusal (in the JSON error shape already) is passed on as it is.
fn parse<T: serde::de::DeserializeOwned>(r: crate::actor::HttpResponse) -> Result<T, Refusal> {
    if r.status != 200 {
        return Err(Refusal::Actor(r));
    }
    serde_json::from_slice(&r.body).map_err(|e| {
        let msg = format!("an actor answered nonsense: {e}");
        ApiError::new(StatusCode::BAD_GATEWAY, "internal", msg).into()
    })
}

/// Up to `n` shows sold from the same shop before this one, newest first, in a line each.
async fn earlier(
    app: &AppState,
    show: &Show,
    who: &Identity,
    n: usize,
) -> Result<Vec<liveshop_analytics::Summary>, Refusal> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let shows = app.shows.of_shop(show.shop_id()).map_err(ApiError::from)?;
    let ids = liveshop_analytics::earlier(
        (show.created_at, &show.id),
        shows.iter().map(|s| (s.created_at, s.id.as_str())),
        n,
    );
    let mut out = Vec::new();
    for s in ids.into_iter().filter_map(|id| shows.iter().find(|s| s.id == id)) {
        out.push(report(app, s, who).await?.summary);
    }
    Ok(out)
}

/// The stream of `show` ended: the shop queues `show.report_ready` for the merchant, with the
/// report's addresses. A failure is logged; the report itself stays readable.
pub(crate) async fn report_ready(app: &AppState, show: &str) {
    let Ok(show) = app.show(show) else { return };
    let (path, body) = liveshop_analytics::report_ready(&app.config.base_url(), &show.id);
    let req = HttpRequest {
        method: "POST".into(),
        path,
        headers: vec![],
        body: body.to_string().into_bytes(),
        // The node speaks for the platform here, as the merchant's own shop.
        who: Some(Identity::new(liveshop_room::MEDIA_ORIGIN, Role::Merchant)),
    };
    match app.node.request(Kind::Shop, show.shop_id(), req).await {
        Ok(r) if r.status == 202 => {}
        Ok(r) => tracing::warn!(show = %show.id, status = r.status, "show.report_ready was refused"),
        Err(e) => tracing::warn!(show = %show.id, error = %e, "show.report_ready could not be queued"),
    }
}
