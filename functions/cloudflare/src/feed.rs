//! The public feed on Cloudflare (`liveshop_room::feed` has the rules; `edge/src/feed.rs` is the
//! edge node's side of the same contract).
//!
//! ```text
//!  viewer ──GET /v1/rooms/{room}/feed?after=E-S──▶ Worker ──hit──▶ the Cache API's answer
//!                                                    └─miss──▶ Room DO: asks the core; on 204
//!                                                              parks the request until the room
//!                                                              logs something or the wait ends
//! ```
//!
//! - The Worker looks every feed request up in the Cache API (`caches.default`, keyed by the
//!   full URL), so a cached answer never reaches the room; a miss is paced per address
//!   (`FEED_READS_PER_IP_*`), answered by the room and put in the cache for as long as its
//!   `Cache-Control` says. `If-None-Match` is answered here, from the answer's `ETag`.
//! - The room object answers `GET /feed?after=E-S` at once when anything is after `E-S`. When
//!   nothing is, the request waits in [`Parked`] under its position and wait round: every event
//!   that moves the room's log releases the positions the core now has an answer for (one
//!   question to the core per position, one answer for all its requests), and at the end of the
//!   round (`liveshop_room::feed::deadline`) the first waiter to wake asks the core with
//!   `&wait=K` for everyone of its position. So one position costs the core about one question
//!   per event, however many requests wait on it.
//! - Heartbeats are counted outside the room, by an [`crate::audience::Audience`] object per
//!   room.

use std::cell::RefCell;
use std::collections::BTreeMap;

use futures_channel::oneshot;
use liveshop_room::feed::{self, FeedQuery};
use worker::*;

use crate::{error, pacing, room_stub};

/// A core's feed answer: status and body, shared by the requests of one position.
pub(crate) type Answer = (u16, Vec<u8>);

/// Feed requests a room holds while nothing is after their position: by position and the wait
/// round they end in.
#[derive(Default)]
pub(crate) struct Parked(RefCell<BTreeMap<(String, u64), Waiters>>);

/// The requests waiting for one answer.
pub(crate) type Waiters = Vec<oneshot::Sender<Answer>>;

impl Parked {
    /// A new waiter for `after` in `round`; its answer comes on the receiver.
    pub(crate) fn park(&self, after: &str, round: u64) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        self.0.borrow_mut().entry((after.to_string(), round)).or_default().push(tx);
        rx
    }

    /// The waiters of `after` in `round`, if nobody answered them yet.
    pub(crate) fn take_round(&self, after: &str, round: u64) -> Option<Waiters> {
        self.0.borrow_mut().remove(&(after.to_string(), round))
    }

    /// Every waiter of `after`, whatever its round.
    pub(crate) fn take_position(&self, after: &str) -> Waiters {
        let mut parked = self.0.borrow_mut();
        let rounds: Vec<_> = parked.keys().filter(|(a, _)| a == after).cloned().collect();
        rounds.into_iter().filter_map(|k| parked.remove(&k)).flatten().collect()
    }

    /// The positions someone waits on.
    pub(crate) fn positions(&self) -> Vec<String> {
        let mut positions: Vec<String> = self.0.borrow().keys().map(|(a, _)| a.clone()).collect();
        positions.dedup();
        positions
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}

/// Gives every waiter `answer`.
pub(crate) fn release(waiters: Waiters, answer: &Answer) {
    for tx in waiters {
        // A waiter that went away needs nothing.
        let _ = tx.send(answer.clone());
    }
}

/// A core's feed answer as the room object's response: with the feed's `Cache-Control` and
/// `ETag` when it is one (the core's refusals carry neither, so no cache keeps them).
pub(crate) fn response((status, body): Answer, q: &FeedQuery) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if status == 200 {
        headers.set("cache-control", feed::cache_control(q))?;
        headers.set("etag", &feed::etag(&body))?;
    }
    Ok(Response::from_bytes(body)?.with_status(status).with_headers(headers))
}

/// `GET /v1/rooms/{room}/feed`: the cache's answer, or the room's (see the module docs). No
/// token: everything on it is public.
pub(crate) async fn get(req: Request, env: &Env, ctx: &Context, room: &str) -> Result<Response> {
    let url = req.url()?;
    if let Err(e) = feed::parse_query(url.query().unwrap_or_default()) {
        return error(400, "invalid_argument", e.message);
    }
    cached(req, env, ctx, room).await
}

/// A public answer of the room (the feed, the replay's timeline) through the Cache API: a hit
/// never reaches the room; a miss is paced per address, answered by the room and kept as long
/// as its `Cache-Control` says (not at all when that is `no-cache`).
pub(crate) async fn cached(req: Request, env: &Env, ctx: &Context, room: &str) -> Result<Response> {
    let url = req.url()?;
    let cache = Cache::default();
    let key = url.to_string();
    let mut answer = match cache.get(&key, false).await? {
        Some(hit) => hit,
        None => {
            if let Some(refusal) = pacing::take(env, &req, pacing::Limit::Reads).await? {
                return Ok(refusal);
            }
            let mut fresh = room_stub(env, room)?.fetch_with_str(&key).await?;
            let keep = fresh.headers().get("cache-control")?.is_some_and(|c| c.starts_with("public"));
            if fresh.status_code() == 200 && keep {
                let copy = fresh.cloned()?;
                ctx.wait_until(async move {
                    // A copy the cache did not keep only costs the room another question.
                    if let Err(e) = Cache::default().put(&key, copy).await {
                        console_error!("cache: {e}");
                    }
                });
            }
            fresh
        }
    };
    let etag = answer.headers().get("etag")?.unwrap_or_default();
    let matches = req
        .headers()
        .get("if-none-match")?
        .is_some_and(|v| answer.status_code() == 200 && feed::not_modified(&v, &etag));
    if !matches {
        return Ok(answer);
    }
    let headers = Headers::new();
    headers.set("etag", &etag)?;
    if let Some(cc) = answer.headers().get("cache-control")? {
        headers.set("cache-control", &cc)?;
    }
    // Read, so the runtime does not keep the body's stream open.
    answer.bytes().await?;
    Ok(Response::empty()?.with_status(304).with_headers(headers))
}
