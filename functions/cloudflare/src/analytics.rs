//! A show's report on the Worker, as on the edge node: `GET /v1/shows/{show}/analytics` and its
//! CSV downloads (`minutes.csv`, `products.csv`), for the show's host and its shop's merchant.
//! The room and the shop objects answer their halves (`_analytics`, which no client reaches);
//! `liveshop_analytics` joins them and `liveshop_api::report` holds the routes' rules.
//!
//! `show.report_ready` is not sent from here: it follows the stream's end, and stream events
//! come from the media origin, which runs beside an edge node, not on Cloudflare.

use liveshop_analytics::{Report, RoomAnswer, ShopAnswer, Summary};
use liveshop_api::report::{ReportAsk, reader};
use liveshop_identity::Identity;
use serde::de::DeserializeOwned;
use worker::*;

use crate::shows::Show;
use crate::{api_error, now_ms, presented, room_stub, secret, shop_stub, show_record};

/// `GET /v1/shows/{show}/analytics` (`file` absent) or `/v1/shows/{show}/analytics/{file}`.
pub(crate) async fn get(req: Request, env: &Env, show: &str, file: Option<&str>) -> Result<Response> {
    let ask = match ReportAsk::parse(file, req.url()?.query().unwrap_or_default()) {
        Ok(ask) => ask,
        Err(e) => return api_error(&e),
    };
    let show = match show_record(env, show).await? {
        Ok(show) => show,
        Err(refusal) => return Ok(refusal),
    };
    let (secret, now) = (secret(env)?, now_ms() / 1000);
    let who = match reader(&show, presented(&req).as_deref(), |t, scope| secret.verify(t, scope, now)) {
        Ok(who) => who,
        Err(e) => return api_error(&e),
    };
    let mut report = match report(env, &show, &who).await? {
        Ok(report) => report,
        Err(refusal) => return Ok(refusal),
    };
    report.previous = earlier(env, &show, &who, ask.previous).await?;
    let (headers, body) = ask.answer(&show.id, &report);
    let mut response = Response::from_bytes(body)?;
    for (name, value) in headers {
        response.headers_mut().set(name, &value)?;
    }
    Ok(response)
}

/// The show's report from its room and its shop; `Err` is a refusal of either, passed on.
async fn report(env: &Env, show: &Show, who: &Identity) -> Result<std::result::Result<Report, Response>> {
    let url = format!("https://room/v1/rooms/{}/_analytics", show.id);
    let room: RoomAnswer = match ask(room_stub(env, &show.id)?, &url, who).await? {
        Ok(answer) => answer,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let path = format!("https://shop/v1/shops/{}/_analytics/{}", show.shop_id(), show.id);
    let shop: ShopAnswer = match ask(shop_stub(env, show.shop_id())?, &path, who).await? {
        Ok(answer) => answer,
        Err(refusal) => return Ok(Err(refusal)),
    };
    Ok(Ok(Report::build(&show.id, &room, &shop)))
}

/// An object's `_analytics` answer for `who`.
async fn ask<T: DeserializeOwned>(
    stub: Stub,
    url: &str,
    who: &Identity,
) -> Result<std::result::Result<T, Response>> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(serde_json::to_string(who)?.into()));
    let mut answer = stub.fetch_with_request(Request::new_with_init(url, &init)?).await?;
    if answer.status_code() != 200 {
        return Ok(Err(answer));
    }
    Ok(Ok(answer.json().await?))
}

/// Up to `n` shows sold from the same shop before this one, newest first, in a line each. The
/// shop object lists the shows registered with it; one whose creation failed is skipped.
async fn earlier(env: &Env, show: &Show, who: &Identity, n: usize) -> Result<Vec<Summary>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let url = format!("https://shop/v1/shops/{}/_shows", show.shop_id());
    let mut listed = shop_stub(env, show.shop_id())?.fetch_with_str(&url).await?;
    let shows: Vec<(u64, String)> = listed.json().await?;
    let ids = liveshop_analytics::earlier(
        (show.created_at, &show.id),
        shows.iter().map(|(t, id)| (*t, id.as_str())),
        n,
    );
    let mut out = Vec::new();
    for id in ids {
        if let Ok(earlier) = show_record(env, id).await?
            && earlier.shop_id() == show.shop_id()
            && let Ok(report) = report(env, &earlier, who).await?
        {
            out.push(report.summary);
        }
    }
    Ok(out)
}
