//! The room routes on Spin: shows, guest tokens, commands over POST, the room's state, the
//! public feed (long-polled) and server-sent events that follow the stored room.

use std::time::Duration;

use liveshop_api::{ApiError, Caller};
use liveshop_identity::{Identity, Role, TokenError};
use liveshop_room::filter::TokenBucket;
use liveshop_room::show::{Credential, Show};
use liveshop_room::{Bucket, ConnId, Epoch, Input, Millis, Output, Room, Seq};

use crate::follow::POLL;
use crate::store::{self, Blob, StoreError};
use crate::{Call, Config, Reply, internal, json, now_ms, random_u53, reply};

/// The host record of the show.
const SHOW: &str = "show";
/// The host record of each user's command and chat allowance.
const PACES: &str = "paces";
/// The host record of the latest frames that are not logged events.
const LATEST: &str = "latest";
/// How many of them are kept: a reader that falls further behind misses the oldest (they are
/// summaries, each superseded by the next).
const LATEST_KEPT: usize = 16;

/// The latest frames that are not logged events (presence, poll tallies, reactions), numbered,
/// so an event stream sends each once.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Latest {
    next: u64,
    frames: std::collections::VecDeque<(u64, String)>,
}

impl Latest {
    fn of(blob: &Blob) -> Latest {
        blob.host.get(LATEST).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
    }

    fn push(&mut self, frame: String) {
        self.frames.push_back((self.next, frame));
        self.next += 1;
        while self.frames.len() > LATEST_KEPT {
            self.frames.pop_front();
        }
    }

    /// The frames numbered from `from` on.
    fn since(&self, from: u64) -> impl Iterator<Item = &String> {
        self.frames.iter().filter(move |(n, _)| *n >= from).map(|(_, f)| f)
    }
}

pub(crate) fn key(room: &str) -> String {
    format!("room/{room}")
}

fn no_show(room: &str) -> ApiError {
    let id: String = room.chars().take(64).collect();
    ApiError::new(404, "show_not_found", format!("no show {id:?}"))
}

fn show_of(blob: &Blob) -> Option<Show> {
    serde_json::from_str(blob.host.get(SHOW)?).ok()
}

/// The show `id` as its room stored it.
pub(crate) async fn show_record(id: &str) -> Result<Show, ApiError> {
    let bytes = store::read(&key(id)).await?;
    show_of(&Blob::decode(bytes.as_deref())?).ok_or_else(|| no_show(id))
}

/// What one event of the room gave out.
#[derive(Default)]
struct Ran {
    reply: Option<(u16, &'static str, Vec<u8>)>,
    /// Frames to connection 1 (an event stream's own welcome and catch-up), and its close.
    sent: Vec<String>,
    closed: bool,
}

/// Applies the inputs `make` gives (at the event's time) to the room of a show that exists,
/// after its alarm if that is due; commits under compare-and-swap.
fn run(room: &str, make: impl Fn(Millis) -> Vec<Input>) -> Result<Ran, ApiError> {
    let committed = store::transact(&key(room), |blob| {
        if !blob.host.contains_key(SHOW) {
            return Ok(Err(no_show(room)));
        }
        Ok(Ok(apply(blob, &make)?))
    })?;
    committed.value
}

fn apply(blob: &mut Blob, make: &impl Fn(Millis) -> Vec<Input>) -> Result<Ran, StoreError> {
    let now = now_ms();
    let mut core = restore(blob)?;
    // Each user's command and chat allowance: the core keeps them in memory, which no
    // instance keeps.
    let paces: Vec<(String, Bucket, TokenBucket)> =
        blob.host.get(PACES).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    core.load_paces(paces.clone());
    let mut ran = Ran::default();
    let mut latest = Vec::new();
    let mut inputs = make(now);
    if blob.alarm_due(now) {
        inputs.insert(0, Input::Alarm);
    }
    for input in inputs {
        // A reader on Spin is not a connection the room keeps, so its connect is not counted
        // into presence; everything else closes the aggregation window with the event, as no
        // instance keeps the room until the window ends.
        let counted = !matches!(input, Input::Connect { .. });
        core.handle(now, input);
        if counted {
            core.flush_window(now);
        }
        while let Some(output) = core.poll_output() {
            match output {
                Output::Store(write) => blob.write(write),
                Output::SetAlarm(at) => blob.set_alarm(at),
                Output::Reply { status, content_type, body } => {
                    ran.reply = Some((status, content_type, body))
                }
                Output::Send { frame, .. } => ran.sent.push(frame),
                Output::Close { .. } => ran.closed = true,
                // Logged events reach readers from the stored log; the rest (presence, tallies,
                // reactions) is kept as the latest few, for event streams to pass on.
                Output::Broadcast { frame } => {
                    if liveshop_room::protocol::EventFrame::position(&frame).is_none() {
                        latest.push(frame);
                    }
                }
            }
        }
    }
    if !latest.is_empty() {
        let mut ring = Latest::of(blob);
        for frame in latest {
            ring.push(frame);
        }
        blob.set_host(LATEST, serde_json::to_string(&ring).map_err(|e| StoreError::Core(e.to_string()))?);
    }
    let after = core.paces(now);
    if after != core_paces_at(paces, now) {
        blob.set_host(PACES, serde_json::to_string(&after).map_err(|e| StoreError::Core(e.to_string()))?);
    }
    Ok(ran)
}

/// The stored allowances still limiting at `now` (what an unchanged table would store).
fn core_paces_at(
    paces: Vec<(String, Bucket, TokenBucket)>,
    now: Millis,
) -> Vec<(String, Bucket, TokenBucket)> {
    let mut room = Room::new(Epoch(0));
    room.load_paces(paces);
    room.paces(now)
}

/// An event with no input: the room's alarm runs if it is due.
pub(crate) fn touch(room: &str) -> Result<(), ApiError> {
    run(room, |_| Vec::new()).map(drop)
}

fn restore(blob: &Blob) -> Result<Room, StoreError> {
    Room::restore(blob.records(), Epoch(random_u53()))
        .map_err(|e| StoreError::Core(format!("cannot restore a room: {e}")))
}

fn answer(ran: Ran) -> Result<Reply, ApiError> {
    let (status, content_type, body) = ran.reply.ok_or_else(|| internal("the room produced no reply"))?;
    Ok(reply(status, content_type, body))
}

/// `POST /v1/shows`: hosts and merchants with a platform-wide token (`room: "*"`) create shows
/// selling from shops they own, merchants with a token for a shop create shows selling from it.
/// The shop judges the claim first; then the room stores the show (once) and learns its host.
pub(crate) async fn create_show(config: &Config, call: &Call) -> Result<Reply, ApiError> {
    if let Some(refusal) = liveshop_api::shop::oversized(call.body.len()) {
        return Err(refusal);
    }
    let now = now_ms();
    let token = call.token().ok_or_else(|| ApiError::token(TokenError::Malformed))?;
    let show = serde_json::from_slice(&call.body)
        .map_err(|e| e.to_string())
        .and_then(|n| Show::new(n, now))
        .map_err(|message| ApiError::new(400, "invalid_argument", message))?;
    let verify = |t: &str, scope: &str| config.secret.verify(t, scope, now / 1000);
    let (who, credential) = liveshop_api::show_creator(token, show.shop_id(), verify)?;
    let platform = credential == Credential::Platform;
    let exists = || ApiError::new(409, "show_exists", format!("a show {:?} exists already", show.id));
    // Before the shop is claimed: a show that exists must not leave a claim behind.
    if show_record(&show.id).await.is_ok() {
        return Err(exists());
    }
    let claim = liveshop_api::shop::Claim {
        operator: config.operators.contains(&who.subject),
        who: who.clone(),
        platform,
        show: (show.created_at, show.id.clone()),
    };
    crate::shop::register(show.shop_id(), &claim)?;
    let record = serde_json::to_string(&show).map_err(|e| internal(e.to_string()))?;
    let host = Identity::new(who.subject.clone(), Role::Host);
    let created = store::transact(&key(&show.id), |blob| {
        if blob.host.contains_key(SHOW) {
            return Ok(Err(exists()));
        }
        blob.set_host(SHOW, record.clone());
        // The room knows its host from the start, so nobody can sanction them before they connect.
        let staff = |_| {
            vec![Input::Request {
                who: Some(host.clone()),
                method: "PUT".into(),
                path: "/staff".into(),
                body: vec![],
            }]
        };
        apply(blob, &staff)?;
        Ok(Ok(()))
    })?;
    created.value?;
    let host_token = config
        .secret
        .mint(&liveshop_api::host_claims(&who, &show, now / 1000))
        .map_err(|e| internal(e.to_string()))?;
    Ok(json(201, &liveshop_api::created_show(&call.base(), &show, &host_token)))
}

/// `GET /v1/shows/{show}`.
pub(crate) async fn get_show(id: &str) -> Result<Reply, ApiError> {
    Ok(json(200, &show_record(id).await?))
}

/// `POST /v1/rooms/{room}/guest`: a viewer token for the device the signed `liveshop_device`
/// cookie names (a new device without one), with the name given or none.
pub(crate) async fn guest(config: &Config, call: &Call, room: &str) -> Result<Reply, ApiError> {
    if !config.guest_tokens {
        return Err(ApiError::new(403, "forbidden", "this node gives no guest tokens"));
    }
    if let Some(refusal) = liveshop_api::shop::oversized(call.body.len()) {
        return Err(refusal);
    }
    show_record(room).await?;
    let name = liveshop_api::guest_name(&call.body)?;
    let devices = config.secret.devices();
    let cookies = call.headers.get_all("cookie").into_iter().filter_map(|v| v.to_str().ok());
    let device = cookies
        .into_iter()
        .find_map(|c| devices.from_cookie_header(c))
        .unwrap_or_else(|| liveshop_identity::Devices::new_device(crate::random_bytes()));
    let guest = liveshop_api::Guest::new(&devices, room, &device, name, now_ms() / 1000);
    let token = config.secret.mint(&guest.claims).map_err(|e| internal(e.to_string()))?;
    let mut answer = json(200, &guest.answer(&token));
    // Set again each time, so a device seen within its lifetime keeps it.
    let cookie = devices.set_cookie(&device, call.header("x-forwarded-proto") == Some("https"));
    answer
        .headers_mut()
        .insert("set-cookie", http::HeaderValue::from_str(&cookie).map_err(|e| internal(e.to_string()))?);
    Ok(answer)
}

/// `POST /v1/rooms/{room}/commands`: one client frame as the body; the answer is its `ack`.
pub(crate) fn command(config: &Config, call: &Call, room: &str) -> Result<Reply, ApiError> {
    let who = config.caller(call, room)?.required()?;
    if call.body.len() > liveshop_api::MAX_COMMAND_BYTES {
        let msg = format!("commands are limited to {} bytes", liveshop_api::MAX_COMMAND_BYTES);
        return Err(ApiError::new(413, "payload_too_large", msg));
    }
    let body = call.body.clone();
    answer(run(room, |_| {
        vec![Input::Request {
            who: Some(who.clone()),
            method: "POST".into(),
            path: "/commands".into(),
            body: body.clone(),
        }]
    })?)
}

/// `GET /v1/rooms/{room}/state`: the room as the caller (or an anonymous viewer) sees it.
pub(crate) async fn state(config: &Config, call: &Call, room: &str) -> Result<Reply, ApiError> {
    show_record(room).await?;
    let Caller(who) = config.caller(call, room)?;
    answer(run(room, |_| {
        vec![Input::Request { who: who.clone(), method: "GET".into(), path: "/state".into(), body: vec![] }]
    })?)
}

/// The core's answer to a feed request.
fn ask_feed(room: &str, path: &str) -> Result<(u16, Vec<u8>), ApiError> {
    ask(room, None, path)
}

/// The core's answer to `GET path` from `who`.
pub(crate) fn ask(room: &str, who: Option<Identity>, path: &str) -> Result<(u16, Vec<u8>), ApiError> {
    let ran = run(room, |_| {
        vec![Input::Request { who: who.clone(), method: "GET".into(), path: path.into(), body: vec![] }]
    })?;
    let (status, _, body) = ran.reply.ok_or_else(|| internal("the room produced no reply"))?;
    Ok((status, body))
}

/// `GET /v1/rooms/{room}/feed[?after=E-S[&wait=K]]`: the core's answer, at once or, while
/// nothing is after `E-S`, when the stored room moves on or the wait round ends. Answers are
/// kept as long as their `Cache-Control` says ([`FeedCache`]), as a CDN in front would, and
/// answers after a position come at most every `ANSWER_INTERVAL_MS` per room.
pub(crate) async fn feed(call: &Call, room: &str) -> Result<Reply, ApiError> {
    use liveshop_room::feed;
    let q = feed::parse_query(&call.query).map_err(|e| ApiError::new(400, "invalid_argument", e.message))?;
    show_record(room).await?;
    let kv = spin_sdk::key_value::Store::open(store::STORE).await.map_err(|e| internal(format!("{e:?}")))?;
    let cache_key = format!("feed-cache/{room}");
    let mut cache = FeedCache::decode(kv.get(&cache_key).await.ok().flatten());
    let (status, body) = match cache.get(&call.query, now_ms()) {
        Some(body) => (200, body),
        None => {
            let answer = answer_feed(&kv, room, &q).await?;
            if answer.0 == 200 {
                let max_age = if q.after.is_some() { 2_000 } else { 1_000 };
                cache.put(&call.query, now_ms() + max_age, &answer.1);
                // Last writer wins: a lost entry costs the room one more question.
                let _ = kv.set(&cache_key, &cache.encode(now_ms())).await;
            }
            answer
        }
    };
    if status != 200 {
        return Ok(reply(status, "application/json", body));
    }
    let etag = feed::etag(&body);
    let mut out = match call.header("if-none-match") {
        Some(v) if feed::not_modified(v, &etag) => reply(304, "application/json", vec![]),
        _ => reply(200, "application/json", body),
    };
    let headers = out.headers_mut();
    headers.insert("cache-control", http::HeaderValue::from_static(feed::cache_control(&q)));
    headers.insert("etag", http::HeaderValue::from_str(&etag).map_err(|e| internal(e.to_string()))?);
    Ok(out)
}

/// `GET /v1/rooms/{room}/timeline`: the replay's moments, public and cacheable
/// (`liveshop_api::timeline`).
pub(crate) async fn timeline(call: &Call, room: &str) -> Result<Reply, ApiError> {
    show_record(room).await?;
    let (status, body) = ask(room, None, "/timeline")?;
    let (status, headers, body) = liveshop_api::timeline::answer(status, body, call.header("if-none-match"));
    let mut out = reply(status, "application/json", body);
    for (name, value) in headers {
        let value = http::HeaderValue::from_str(&value).map_err(|e| internal(e.to_string()))?;
        out.headers_mut().insert(name, value);
    }
    Ok(out)
}

/// The core's answer to a feed query, waiting while nothing is after its position.
async fn answer_feed(
    kv: &spin_sdk::key_value::Store,
    room: &str,
    q: &liveshop_room::feed::FeedQuery,
) -> Result<(u16, Vec<u8>), ApiError> {
    use liveshop_room::feed;
    let Some(after) = q.after else { return ask_feed(room, "/feed") };
    let answered_key = format!("feed-answered/{room}");
    let last = kv
        .get(&answered_key)
        .await
        .ok()
        .flatten()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes);
    let hold = feed::hold(last, now_ms());
    if hold > 0 {
        spin_sdk::time::sleep(Duration::from_millis(hold)).await;
    }
    let (deadline, round) = feed::deadline(now_ms());
    let mut seen = store::read(&key(room)).await?;
    let mut answer = ask_feed(room, &format!("/feed?after={after}"))?;
    while answer.0 == 204 && now_ms() < deadline {
        spin_sdk::time::sleep(POLL).await;
        let now = store::read(&key(room)).await?;
        if now != seen {
            seen = now;
            answer = ask_feed(room, &format!("/feed?after={after}"))?;
        }
    }
    if answer.0 == 204 {
        return ask_feed(room, &format!("/feed?after={after}&wait={round}"));
    }
    if answer.0 == 200 {
        let _ = kv.set(&answered_key, &now_ms().to_le_bytes()).await;
    }
    Ok(answer)
}

/// A room's recent feed answers by query, each until it expires: one value per room, pruned
/// when written.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct FeedCache(std::collections::BTreeMap<String, (u64, String)>);

impl FeedCache {
    fn decode(bytes: Option<Vec<u8>>) -> FeedCache {
        bytes.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn get(&self, query: &str, now: u64) -> Option<Vec<u8>> {
        self.0.get(query).filter(|(until, _)| *until > now).map(|(_, body)| body.clone().into_bytes())
    }

    fn put(&mut self, query: &str, until: u64, body: &[u8]) {
        self.0.insert(query.to_string(), (until, String::from_utf8_lossy(body).into_owned()));
    }

    fn encode(&mut self, now: u64) -> Vec<u8> {
        self.0.retain(|_, (until, _)| *until > now);
        serde_json::to_vec(&self.0).expect("strings serialize")
    }
}

/// Heartbeat bodies are tiny: `{}` or `{"leaving": true}`.
const MAX_BEAT_BYTES: usize = 1024;

pub(crate) fn audience_key(room: &str) -> String {
    format!("audience/{room}")
}

/// The host record of a room's feed audience (`liveshop_room::feed::Audience`).
const AUDIENCE: &str = "audience";

/// `POST /v1/rooms/{room}/heartbeat`: a feed viewer's beacon, by the device its signed cookie
/// names (a new one without). The room's feed audience is one value of its own, counted under
/// compare-and-swap and handed to the room every `HAND_OFF_MS` (at a beacon, or from its alarm).
pub(crate) async fn heartbeat(config: &Config, call: &Call, room: &str) -> Result<Reply, ApiError> {
    use liveshop_room::feed;
    show_record(room).await?;
    if call.body.len() > MAX_BEAT_BYTES {
        let msg = format!("request bodies are limited to {MAX_BEAT_BYTES} bytes");
        return Err(ApiError::new(413, "payload_too_large", msg));
    }
    let leaving =
        feed::parse_heartbeat(&call.body).map_err(|e| ApiError::new(400, "invalid_argument", e.message))?;
    let devices = config.secret.devices();
    let cookies = call.headers.get_all("cookie").into_iter().filter_map(|v| v.to_str().ok());
    let known = cookies.into_iter().find_map(|c| devices.from_cookie_header(c));
    let device =
        known.clone().unwrap_or_else(|| liveshop_identity::Devices::new_device(crate::random_bytes()));
    count_audience(room, Some((device.clone(), leaving)), false)?;
    let mut answer = reply(204, "application/json", vec![]);
    if known.is_none() {
        let cookie = devices.set_cookie(&device, call.header("x-forwarded-proto") == Some("https"));
        answer
            .headers_mut()
            .insert("set-cookie", http::HeaderValue::from_str(&cookie).map_err(|e| internal(e.to_string()))?);
    }
    Ok(answer)
}

/// Counts a beacon (if any) into the room's feed audience, and hands the room the count when
/// the hand-off is due (or `at_once`); the audience's alarm is the next hand-off while anyone
/// watches.
pub(crate) fn count_audience(
    room: &str,
    beat: Option<(String, bool)>,
    at_once: bool,
) -> Result<(), ApiError> {
    use liveshop_room::feed::{self, Audience};
    let counted = store::transact(&audience_key(room), |blob| {
        let mut audience: Audience =
            blob.host.get(AUDIENCE).and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
        let now = now_ms();
        if let Some((device, leaving)) = beat.clone()
            && audience.beat(device, leaving, now, MAX_FEED_VIEWERS).is_err()
        {
            return Ok(Err(ApiError::new(503, "room_full", feed::RoomFull.to_string())));
        }
        let due = at_once || blob.alarm.is_none_or(|at| at <= now);
        let count = if due { audience.take(now) } else { None };
        if due {
            blob.set_alarm((!audience.is_empty()).then_some(now + feed::HAND_OFF_MS));
        }
        blob.set_host(
            AUDIENCE,
            serde_json::to_string(&audience).map_err(|e| StoreError::Core(e.to_string()))?,
        );
        Ok(Ok(count))
    })?;
    if let Some(count) = counted.value? {
        let body = serde_json::to_vec(&count).map_err(|e| internal(e.to_string()))?;
        run(room, |_| {
            vec![Input::Request {
                who: None,
                method: "PUT".into(),
                path: "/audience".into(),
                body: body.clone(),
            }]
        })?;
    }
    Ok(())
}

/// Feed viewers one room counts at most.
const MAX_FEED_VIEWERS: usize = 1_000_000;

/// `GET /v1/rooms/{room}/events`: the welcome (a snapshot, or what was missed since
/// `Last-Event-ID`), then every event the caller may see as the stored room logs it.
pub(crate) async fn events(config: &Config, call: &Call, room: &str) -> Result<Reply, ApiError> {
    show_record(room).await?;
    let who = config.caller(call, room)?.required()?;
    let last_id = liveshop_api::last_event_id(call.header("last-event-id"));
    let query_position =
        call.query("epoch").and_then(|e| e.parse().ok()).zip(call.query("seq").and_then(|s| s.parse().ok()));
    let resume = last_id.or(query_position).map(|(e, s)| (Epoch(e), Seq(s)));
    // The connect is an event (staff are admitted by it), but the connection is not stored: a
    // reader on Spin is not among the room's connections, it follows the stored log.
    let connect = |now| vec![Input::Connect { conn: ConnId(1), who: who.clone(), connected_at: now, resume }];
    let Ran { sent: first, closed, .. } = run(room, connect)?;
    // Where the stream stands: the welcome's position, then that of each event sent.
    let welcome: serde_json::Value =
        first.first().and_then(|w| serde_json::from_str(w).ok()).unwrap_or_default();
    let (mut epoch, mut last) =
        (Epoch(welcome["epoch"].as_u64().unwrap_or(0)), Seq(welcome["seq"].as_u64().unwrap_or(0)));
    for frame in &first[1.min(first.len())..] {
        if let Some((_, seq)) = liveshop_room::protocol::EventFrame::position(frame) {
            last = last.max(seq);
        }
    }
    // A viewer reading the stream counts among the room's audience as feed viewers do (by
    // beacons, here from the stream itself), told to the room at once when it comes and goes.
    let (reader, room_id) = (format!("reader:{}", who.subject), room.to_string());
    let counted = who.role == Role::Viewer && !closed;
    if counted {
        count_audience(room, Some((reader.clone(), false)), true)?;
    }
    // Frames that are not events count from the connect on.
    let mut from = Latest::of(&Blob::decode(store::read(&key(room)).await?.as_deref())?).next;
    let follow = move |blob: &Blob| {
        let core = restore(blob).ok()?;
        // A room restored into a new epoch cannot be followed, and a banned reader is let go:
        // either reconnects (and is refused, if banned).
        if core.epoch() != epoch || core.state().banned(&who.subject, who.role) {
            return None;
        }
        let mut frames = core.events_after(&who.subject, who.role, last);
        (epoch, last) = (core.epoch(), core.seq());
        let latest = Latest::of(blob);
        frames.extend(latest.since(from).cloned());
        from = latest.next;
        Some(frames)
    };
    let present = move |leaving: bool| {
        if counted && let Err(e) = count_audience(&room_id, Some((reader.clone(), leaving)), leaving) {
            eprintln!("the audience of {room_id}: {}", e.message);
        }
    };
    // Unknown (`None`): the first look restores the room and sends whatever came after the
    // welcome.
    Ok(crate::follow::stream(key(room), first, None, (!closed).then_some(follow), present))
}
