//! Feed viewers, counted outside the room: one `Audience` object per room takes the room's
//! heartbeats (`POST /v1/rooms/{room}/heartbeat`, see `docs/protocol.md`), by the device its
//! signed `liveshop_device` cookie names, and hands the room the count, as the edge node does
//! (`edge/src/feed.rs`):
//!
//! - a device counts while it was heard from in the last [`feed::HEARTBEAT_TTL_MS`] (beacons
//!   come every 20 s); `{"leaving": true}` takes it off at once;
//! - every [`feed::HAND_OFF_MS`] while anyone is counted (an alarm), and once more when the last
//!   one left, the room gets `PUT /audience` (`feed::AudienceCount`: the viewers, their watch
//!   time, the visits begun and ended): a million heartbeats are a few requests to the room, not
//!   a million events.
//!
//! The counting is `liveshop_room::feed::Audience`, the edge node's too.
//!
//! The devices live in memory only (a beacon a second per viewer is no storage write): an evicted
//! object counts again from the next beacons, and tells the room once, on its first hand-off,
//! what it counts then.

use std::cell::{Cell, RefCell};

use liveshop_room::feed;
use worker::*;

use crate::{error, now_ms, room_stub, secret, setting};

/// Largest heartbeat body (`{"leaving": true}` and some room).
const MAX_BEAT_BYTES: usize = 1024;

#[durable_object]
pub struct Audience {
    state: State,
    env: Env,
    count: RefCell<feed::Audience>,
    /// The room's name (its show's id), once a heartbeat named it; stored for the alarm.
    room: RefCell<Option<String>>,
    /// Whether the hand-off alarm is set, once known.
    armed: Cell<bool>,
}

impl DurableObject for Audience {
    fn new(state: State, env: Env) -> Self {
        Audience { state, env, count: RefCell::default(), room: RefCell::default(), armed: Cell::new(false) }
    }

    /// `POST /v1/rooms/{room}/heartbeat`, as the client sent it: 204, with a new device's
    /// cookie when the request had none.
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // Read before any check; see the room's fetch.
        let body = req.bytes().await?;
        let url = req.url()?;
        let Some(room) = url.path_segments().and_then(|mut s| s.nth(2)).map(String::from) else {
            return error(404, "not_found", "no such endpoint");
        };
        if self.room.borrow().is_none() {
            // Shows are never deleted: once found, the room need not be asked again.
            let show =
                room_stub(&self.env, &room)?.fetch_with_str(&format!("https://room/v1/shows/{room}")).await?;
            if show.status_code() != 200 {
                return Ok(show);
            }
            self.state.storage().put("room", &room).await?;
            *self.room.borrow_mut() = Some(room);
        }
        if body.len() > MAX_BEAT_BYTES {
            let msg = format!("request bodies are limited to {MAX_BEAT_BYTES} bytes");
            return error(413, "payload_too_large", msg);
        }
        let leaving = match feed::parse_heartbeat(&body) {
            Ok(leaving) => leaving,
            Err(e) => return error(400, "invalid_argument", e.message),
        };
        let devices = secret(&self.env)?.devices();
        let (device, new) = match crate::device(&self.env, &req, &devices).await? {
            Ok(device) => device,
            Err(refusal) => return Ok(refusal),
        };
        let max = setting(&self.env, "MAX_FEED_VIEWERS_PER_ROOM", 1_000_000) as usize;
        let counted = self.count.borrow_mut().beat(device.clone(), leaving, now_ms(), max);
        if let Err(full) = counted {
            return error(503, "room_full", full.to_string());
        }
        if !self.armed.get() {
            let storage = self.state.storage();
            if storage.get_alarm().await?.is_none() {
                storage.set_alarm(std::time::Duration::from_millis(feed::HAND_OFF_MS)).await?;
            }
            self.armed.set(true);
        }
        let mut response = Response::empty()?.with_status(204);
        if new {
            let secure = url.scheme() == "https";
            response.headers_mut().set("set-cookie", &devices.set_cookie(&device, secure))?;
        }
        Ok(response)
    }

    /// The hand-off: tells the room its feed audience, and comes again while anyone is counted.
    async fn alarm(&self) -> Result<Response> {
        self.armed.set(false);
        let known = self.room.borrow().clone();
        let room = match known {
            Some(room) => Some(room),
            None => self.state.storage().get::<String>("room").await?,
        };
        let Some(room) = room else { return Response::ok("") };
        let taken = self.count.borrow_mut().take(now_ms());
        if let Some(count) = taken {
            let mut init = RequestInit::new();
            let body = serde_json::to_string(&count)?;
            init.with_method(Method::Put).with_body(Some(body.into()));
            let put = Request::new_with_init(&format!("https://room/v1/rooms/{room}/_audience"), &init)?;
            let told = room_stub(&self.env, &room)?.fetch_with_request(put).await?;
            if told.status_code() != 200 {
                console_error!("the room {room} refused its feed audience: {}", told.status_code());
            }
            if count.viewers > 0 {
                self.state.storage().set_alarm(std::time::Duration::from_millis(feed::HAND_OFF_MS)).await?;
                self.armed.set(true);
            }
        }
        Response::ok("")
    }
}

/// The Audience object of `room`.
pub(crate) fn stub(env: &Env, room: &str) -> Result<Stub> {
    env.durable_object("AUDIENCES")?.get_by_name(room)
}
