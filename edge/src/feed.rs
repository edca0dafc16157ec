//! The public feed and heartbeats on the node (`liveshop_room::feed` has the rules).
//!
//! - `GET /v1/rooms/{room}/feed[?after=E-S[&wait=K]]`: requests for one position share one
//!   answer ([`Feeds::answer`]): the first asks the room and, while the room says nothing is after
//!   that position (204), waits for the room's next release or the end of the wait round; the
//!   others wait for that answer, and later ones get it until it is [`Answer::max_age`] old. So a
//!   whole audience costs the room one question per position, with or without a CDN in front.
//!   Answers after a position come at most every [`feed::ANSWER_INTERVAL_MS`] per room
//!   ([`feed::hold`]): while events flow, each answer carries a few of them.
//! - `POST /v1/rooms/{room}/heartbeat`: a feed viewer's beacon, by device. Heartbeats are
//!   counted here ([`feed::Audience`]), outside the room; every [`feed::HAND_OFF_MS`] the room is
//!   told how many viewers the feed has and the watch time they added, one request per room
//!   whatever the audience.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use liveshop_room::Millis;
use liveshop_room::feed::{self, Audience, FeedQuery};

use crate::actor::HttpRequest;
use crate::http::{ApiError, AppState, Limited};
use crate::node::Kind;
use crate::pacing::Limit;

/// Answers kept for sharing, at most; past it, fresh ones are kept and stale ones forgotten.
const MAX_ANSWERS: usize = 10_000;

/// One answer of the feed, shared by every request for its room and query.
pub struct Answer {
    status: StatusCode,
    body: Bytes,
    etag: HeaderValue,
    cache_control: &'static str,
    max_age: Duration,
    ready_at: Instant,
}

/// The node's shared feed answers and heartbeat counts.
#[derive(Default)]
pub struct Feeds {
    answers: Mutex<HashMap<(String, String), Arc<Shared>>>,
    /// When each room last answered with events ([`feed::hold`]).
    answered: Mutex<HashMap<String, Millis>>,
    audiences: Mutex<HashMap<String, Audience>>,
    hand_off: OnceLock<()>,
}

/// An answer being made (requests wait on it) or made.
#[derive(Default)]
struct Shared(tokio::sync::OnceCell<Arc<Answer>>);

impl Shared {
    fn fresh(&self) -> bool {
        self.0.get().is_none_or(|a| a.ready_at.elapsed() < a.max_age)
    }
}

impl Feeds {
    /// The answer for `query` on `room`: shared with every request for the same room and query.
    async fn answer(&self, app: &AppState, room: &str, query: FeedQuery) -> Result<Arc<Answer>, ApiError> {
        let key = (room.to_string(), key_of(query, app.env.now()));
        let shared = {
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            match answers.get(&key).filter(|s| s.fresh()) {
                Some(s) => s.clone(),
                None => {
                    if answers.len() >= MAX_ANSWERS {
                        answers.retain(|_, s| s.fresh());
                    }
                    let s = Arc::new(Shared::default());
                    answers.insert(key, s.clone());
                    s
                }
            }
        };
        shared.0.get_or_try_init(|| self.ask(app, room, query)).await.cloned()
    }

    /// Asks the room; while nothing is after the position, waits for the room's next release (or
    /// the end of the round) and asks again. A question after a position waits first until the
    /// room's last answer is [`feed::ANSWER_INTERVAL_MS`] old.
    async fn ask(&self, app: &AppState, room: &str, q: FeedQuery) -> Result<Arc<Answer>, ApiError> {
        let Some(after) = q.after else {
            return room_answer(app, room, "/feed".into(), q).await;
        };
        let last = self.answered.lock().unwrap_or_else(|p| p.into_inner()).get(room).copied();
        let hold = feed::hold(last, app.env.now());
        if hold > 0 {
            tokio::time::sleep(app.env.real_delay(hold)).await;
        }
        // Subscribed before the first question, so a release in between is not missed.
        let mut releases = app.node.releases(Kind::Room, room)?;
        let (deadline, round) = feed::deadline(app.env.now());
        loop {
            let answer = room_answer(app, room, format!("/feed?after={after}"), q).await?;
            if answer.status != StatusCode::NO_CONTENT {
                if answer.status == StatusCode::OK {
                    self.note_answer(room, app.env.now());
                }
                return Ok(answer);
            }
            let left = deadline.saturating_sub(app.env.now());
            if left == 0 {
                break;
            }
            tokio::select! {
                alive = releases.next() => if !alive {
                    releases = app.node.releases(Kind::Room, room)?;
                },
                _ = tokio::time::sleep(app.env.real_delay(left)) => break,
            }
        }
        room_answer(app, room, format!("/feed?after={after}&wait={round}"), q).await
    }

    /// Room `room` answered with events at `now`: the next answer after a position waits.
    fn note_answer(&self, room: &str, now: Millis) {
        let mut answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        if answered.len() >= MAX_ANSWERS {
            // Only recent answers hold anything back.
            answered.retain(|_, at| feed::hold(Some(*at), now) > 0);
        }
        answered.insert(room.to_string(), now);
    }

    /// Counts a beacon from `device`; `leaving` takes it off at once.
    fn beat(
        &self,
        room: &str,
        device: String,
        leaving: bool,
        now: Millis,
        max: usize,
    ) -> Result<(), ApiError> {
        let mut audiences = self.audiences.lock().unwrap_or_else(|p| p.into_inner());
        let audience = audiences.entry(room.to_string()).or_default();
        audience
            .beat(device, leaving, now, max)
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "room_full", e.to_string()))
    }

    /// What to tell each room of its feed audience now ([`Audience::take`]); rooms nobody
    /// watches any more are forgotten once told.
    fn take_counts(&self, now: Millis) -> Vec<(String, feed::AudienceCount)> {
        let mut audiences = self.audiences.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts = Vec::new();
        audiences.retain(|room, a| {
            counts.extend(a.take(now).map(|count| (room.clone(), count)));
            !a.is_empty()
        });
        counts
    }
}

/// The key an answer is shared under: the position, and the wait round only while it is
/// current (an old one, from a tab that slept, is the same as none), so a client cannot mint
/// endless keys.
fn key_of(q: FeedQuery, now: Millis) -> String {
    let (_, round) = feed::deadline(now);
    let wait = q.wait.filter(|w| w.abs_diff(round) <= 2);
    match (q.after, wait) {
        (None, _) => String::new(),
        (Some(after), None) => after.to_string(),
        (Some(after), Some(w)) => format!("{after}&{w}"),
    }
}

async fn room_answer(
    app: &AppState,
    room: &str,
    path: String,
    q: FeedQuery,
) -> Result<Arc<Answer>, ApiError> {
    app.node.metrics().feed_room_queries.inc();
    let req = HttpRequest { method: "GET".into(), path, body: vec![], who: None, headers: vec![] };
    let r = app.node.request(Kind::Room, room, req).await?;
    let status = StatusCode::from_u16(r.status)
        .map_err(|_| ApiError::new(StatusCode::BAD_GATEWAY, "internal", "the room answered nonsense"))?;
    let cache_control = feed::cache_control(&q);
    let max_age = Duration::from_secs(if q.after.is_some() { 2 } else { 1 });
    let etag = HeaderValue::from_str(&feed::etag(&r.body)).expect("an ETag is hex in quotes");
    Ok(Arc::new(Answer {
        status,
        body: r.body.into(),
        etag,
        cache_control,
        max_age,
        ready_at: Instant::now(),
    }))
}

/// `GET /v1/rooms/{room}/feed`: see the module docs. No token: everything on it is public.
pub(crate) async fn get_feed(
    State(app): State<Arc<AppState>>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.node.metrics().feed_requests.inc();
    app.pace(Limit::Reads, app.client_ip(addr, &headers))?;
    let q = feed::parse_query(query.as_deref().unwrap_or_default())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.message))?;
    app.show(&room)?;
    let answer = app.feeds.answer(&app, &room, q).await?;
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| feed::not_modified(v, answer.etag.to_str().unwrap_or_default()));
    let cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static(answer.cache_control)),
        (header::ETAG, answer.etag.clone()),
    ];
    if answer.status != StatusCode::OK {
        // The room's own refusal; not for caches to keep.
        return Ok((answer.status, [(header::CONTENT_TYPE, "application/json")], answer.body.clone())
            .into_response());
    }
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((cache, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], answer.body.clone())
        .into_response())
}

/// `POST /v1/rooms/{room}/heartbeat`: a feed viewer's beacon (`navigator.sendBeacon`, any
/// content type), by the device its signed cookie names; a request without one gets a new
/// device, from the address's allowance of new guests, as a guest token does. Answers 204.
pub(crate) async fn heartbeat(
    State(app): State<Arc<AppState>>,
    Path(room): Path<String>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Limited(body): Limited<1024>,
) -> Result<Response, ApiError> {
    let ip = app.client_ip(addr, &headers);
    app.pace(Limit::Reads, ip)?;
    app.show(&room)?;
    let leaving = feed::parse_heartbeat(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.message))?;
    let (device, cookie) = app.device(ip, &headers)?;
    app.feeds.beat(&room, device, leaving, app.env.now(), app.config.max_feed_viewers_per_room)?;
    start_hand_off(&app);
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Starts, once per node, the task that tells rooms their feed audience.
fn start_hand_off(app: &Arc<AppState>) {
    app.feeds.hand_off.get_or_init(|| {
        tokio::spawn(hand_off(Arc::downgrade(app)));
    });
}

async fn hand_off(app: Weak<AppState>) {
    loop {
        let Some(app) = app.upgrade() else { return };
        let every = app.env.real_delay(feed::HAND_OFF_MS);
        let counts = app.feeds.take_counts(app.env.now());
        let total = app
            .feeds
            .audiences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|a| i64::from(a.handed()))
            .sum();
        app.node.metrics().feed_viewers.set(total);
        for (room, count) in counts {
            let body = serde_json::to_vec(&count).expect("numbers serialize");
            let req = HttpRequest {
                method: "PUT".into(),
                path: "/audience".into(),
                body,
                who: None,
                headers: vec![],
            };
            if let Err(e) = app.node.request(Kind::Room, &room, req).await {
                tracing::warn!(room, "could not tell the room its feed audience: {e}");
            }
        }
        drop(app);
        tokio::time::sleep(every).await;
    }
}
