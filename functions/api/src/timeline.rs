//! `GET /v1/rooms/{room}/timeline`: the replay's moments as the room answers them
//! (`liveshop_room::timeline`), with the headers that let a CDN serve a replay's audience: an
//! `ETag` of the body (`If-None-Match` gives 304) and the room's `Cache-Control`.

use liveshop_room::{feed, timeline};

/// The answer to a timeline request, from the room's `(status, body)`.
pub fn answer(
    status: u16,
    body: Vec<u8>,
    if_none_match: Option<&str>,
) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
    if status != 200 {
        return (status, vec![("content-type", "application/json".into())], body);
    }
    let etag = feed::etag(&body);
    let headers = vec![
        ("content-type", "application/json".into()),
        ("cache-control", timeline::cache_control(&body).into()),
        ("etag", etag.clone()),
        ("access-control-allow-origin", "*".into()),
    ];
    match if_none_match {
        Some(tags) if feed::not_modified(tags, &etag) => (304, headers, Vec::new()),
        _ => (200, headers, body),
    }
}
