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
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use liveshop_analytics::{Report, RoomAnswer, ShopAnswer};
use liveshop_api::report::{ReportAsk, reader};
use liveshop_identity::{Identity, Role};

use crate::actor::HttpRequest;
use crate::http::{ApiError, AppState, Presented, actor_response};
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
    token: Presented,
) -> Result<Response, Refusal> {
    answer(&app, &show, None, query.as_deref(), &token).await
}

async fn csv(
    State(app): State<Arc<AppState>>,
    Path((show, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    token: Presented,
) -> Result<Response, Refusal> {
    answer(&app, &show, Some(&file), query.as_deref(), &token).await
}

/// The report as JSON (`file` absent) or one of its CSV files.
async fn answer(
    app: &AppState,
    show: &str,
    file: Option<&str>,
    query: Option<&str>,
    token: &Presented,
) -> Result<Response, Refusal> {
    let ask = ReportAsk::parse(file, query.unwrap_or_default()).map_err(ApiError::from)?;
    let show = app.show(show)?;
    let verify = |t: &str, scope: &str| app.secret.verify(t, scope, app.now_secs());
    let who = reader(&show, token.0.as_deref(), verify).map_err(|e| app.refusal(e))?;
    let mut report = report(app, &show, &who).await?;
    report.previous = earlier(app, &show, &who, ask.previous).await?;
    let (headers, body) = ask.answer(&show.id, &report);
    let mut response = body.into_response();
    for (name, value) in headers {
        let value = header::HeaderValue::from_str(&value)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        response.headers_mut().insert(name, value);
    }
    Ok(response)
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
