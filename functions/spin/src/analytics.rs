//! A show's report on Spin, as on the other hosts: `GET /v1/shows/{show}/analytics` and its CSV
//! downloads, for the show's host and its shop's merchant. The room and the shop answer their
//! halves; `liveshop_analytics` joins them and `liveshop_api::report` holds the routes' rules.

use liveshop_analytics::{Report, RoomAnswer, ShopAnswer, Summary};
use liveshop_api::ApiError;
use liveshop_api::report::ReportAsk;
use liveshop_identity::Identity;
use liveshop_room::show::Show;
use serde::de::DeserializeOwned;

use crate::{Call, Config, Reply, reply};

/// `GET /v1/shows/{show}/analytics` (`file` absent) or `/v1/shows/{show}/analytics/{file}`.
pub(crate) async fn get(
    config: &Config,
    call: &Call,
    show: &str,
    file: Option<&str>,
) -> Result<Reply, ApiError> {
    let ask = ReportAsk::parse(file, &call.query)?;
    let show = crate::room::show_record(show).await?;
    let who = liveshop_api::report::reader(&show, call.token(), |t, scope| {
        config.secret.verify(t, scope, crate::now_ms() / 1000)
    })?;
    let mut report = match report(config, &show, &who).await {
        Ok(report) => report,
        Err(Refusal::App(e)) => return Err(e),
        Err(Refusal::Actor(status, body)) => return Ok(reply(status, "application/json", body)),
    };
    report.previous = earlier(config, &show, &who, ask.previous).await?;
    let (headers, body) = ask.answer(&show.id, &report);
    let mut out = reply(200, "application/json", body);
    for (name, value) in headers {
        out.headers_mut()
            .insert(name, http::HeaderValue::from_str(&value).map_err(|e| crate::internal(e.to_string()))?);
    }
    Ok(out)
}

/// Why there is no report: the app's refusal, or an actor's (in the JSON error shape already).
enum Refusal {
    App(ApiError),
    Actor(u16, Vec<u8>),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal::App(e)
    }
}

/// The show's report from its room and its shop.
async fn report(config: &Config, show: &Show, who: &Identity) -> Result<Report, Refusal> {
    let room: RoomAnswer = half(crate::room::ask(&show.id, Some(who.clone()), "/analytics")?)?;
    let path = format!("/analytics/{}", show.id);
    let shop: ShopAnswer = half(crate::shop::ask(config, show.shop_id(), who.clone(), &path).await?)?;
    Ok(Report::build(&show.id, &room, &shop))
}

/// An actor's half of the report, or its refusal.
fn half<T: DeserializeOwned>((status, body): (u16, Vec<u8>)) -> Result<T, Refusal> {
    if status != 200 {
        return Err(Refusal::Actor(status, body));
    }
    serde_json::from_slice(&body).map_err(|e| Refusal::App(crate::internal(e.to_string())))
}

/// Up to `n` shows sold from the same shop before this one, newest first, in a line each.
async fn earlier(config: &Config, show: &Show, who: &Identity, n: usize) -> Result<Vec<Summary>, ApiError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let shows = crate::shop::shows(show.shop_id()).await?;
    let ids = liveshop_analytics::earlier(
        (show.created_at, &show.id),
        shows.iter().map(|(t, id)| (*t, id.as_str())),
        n,
    );
    let mut out = Vec::new();
    for id in ids {
        if let Ok(earlier) = crate::room::show_record(id).await
            && earlier.shop_id() == show.shop_id()
            && let Ok(report) = report(config, &earlier, who).await
        {
            out.push(report.summary);
        }
    }
    Ok(out)
}
