//! The room object: `liveshop-room` behind a Durable Object, one per show.
//!
//! The same loop as the edge node's component (`functions/component/src/room.rs`): read the
//! clock, feed one input to the core, drain its outputs into this host. Storage is a SQLite
//! table of the core's records; writes and frames of one event leave together through
//! Cloudflare's output gate. Sockets use the hibernation API: when the object is evicted the
//! sockets stay open, and the next event rebuilds the room from storage and their attachments.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};

use futures_channel::mpsc::{Sender, channel};
use liveshop_api::Caller;
use liveshop_identity::Identity;
use liveshop_room::filter::TokenBucket;
use liveshop_room::{ConnId, Epoch, Input, Millis, Output};
use serde::{Deserialize, Serialize};
use worker::*;

use crate::fanout::Item;
use crate::feed::{self, Parked};
use crate::shows::Show;
use crate::{
    api_error, error, frame_check, now_ms, query, random_u53, reply, secret, setting, sse_event, sse_response,
};

/// What a socket carries through hibernation.
#[derive(Serialize, Deserialize)]
struct Attachment {
    conn: u64,
    who: Identity,
    connected_at: Millis,
}

/// The room in memory: rebuilt on the first event after the object was (re)created.
struct Live {
    room: liveshop_room::Room,
    sockets: HashMap<u64, WebSocket>,
    buckets: HashMap<u64, TokenBucket>,
    /// Connections held by fan-out objects: connection id -> fan-out index.
    remote: HashMap<u64, u32>,
    /// Server-sent event streams (these keep the object in memory while open).
    streams: HashMap<u64, Sender<String>>,
}

impl Live {
    fn fanout_sizes(&self) -> BTreeMap<u32, usize> {
        let mut sizes = BTreeMap::new();
        for k in self.remote.values() {
            *sizes.entry(*k).or_default() += 1;
        }
        sizes
    }
}

#[durable_object]
pub struct Room {
    state: State,
    env: Env,
    live: RefCell<Option<Live>>,
    /// Frames for fan-out objects, one batch per event and object, sent strictly in order.
    outbox: RefCell<VecDeque<(u32, Vec<Item>)>>,
    pumping: Cell<bool>,
    /// Feed requests waiting for the room's next event ([`crate::feed`]).
    parked: Parked,
    /// When the core last answered a feed request with events (`liveshop_room::feed::hold`).
    answered: Cell<Option<u64>>,
}

impl DurableObject for Room {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        // Idempotent; runs once per object instance.
        let _ = sql.exec("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)", None);
        let _ = sql.exec("CREATE TABLE IF NOT EXISTS show (id TEXT PRIMARY KEY, body TEXT NOT NULL)", None);
        let _ = sql.exec(
            "CREATE TABLE IF NOT EXISTS remote (conn INTEGER PRIMARY KEY, fanout INTEGER NOT NULL, attachment TEXT NOT NULL)",
            None,
        );
        Room {
            state,
            env,
            live: RefCell::new(None),
            outbox: RefCell::default(),
            pumping: Cell::new(false),
            parked: Parked::default(),
            answered: Cell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // The body is read before any check: a refusal that leaves it unread makes workerd reset
        // the client's kept-alive connection.
        let body = req.bytes().await?;
        let url = req.url()?;
        let segs: Vec<String> =
            url.path_segments().map(|s| s.map(String::from).collect()).unwrap_or_default();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (req.method(), segs.as_slice()) {
            (Method::Get, ["v1", "shows", _]) => match self.show() {
                Some(show) => Response::from_json(&show),
                None => self.no_show(&segs),
            },
            (Method::Put, ["v1", "shows", _]) => {
                if self.show().is_some() {
                    let id = segs[2];
                    return error(409, "show_exists", format!("a show {id:?} exists already"));
                }
                let show: Show = serde_json::from_slice(&body)?;
                let body = serde_json::to_string(&show)?;
                self.state
                    .storage()
                    .sql()
                    .exec("INSERT INTO show (id, body) VALUES (?, ?)", vec![show.id.into(), body.into()])?;
                Ok(Response::empty()?.with_status(201))
            }
            (_, ["v1", "rooms", room, action]) => {
                let room = room.to_string();
                match (req.method(), *action) {
                    (Method::Get, "ws") => self.websocket(&req, &room).await,
                    (Method::Post, "commands") => self.command(&req, &room, body).await,
                    (Method::Get, "state") => self.room_state(&req, &room).await,
                    (Method::Post, "guest") => self.guest(&req, &room, &body).await,
                    (Method::Get, "feed") => self.feed(url.query().unwrap_or_default(), &room).await,
                    (Method::Get, "timeline") => self.timeline(&room).await,
                    // The room's Audience object hands over the feed's viewers (`crate::audience`).
                    (Method::Put, "_audience") => {
                        let input = |_| Input::Request {
                            who: None,
                            method: "PUT".into(),
                            path: "/audience".into(),
                            body,
                        };
                        self.answer(input).await
                    }
                    // The Worker vouches for a new show's creator (no client reaches `_` actions).
                    (Method::Put, "_staff") => {
                        let who: Identity = serde_json::from_slice(&body)?;
                        self.answer(|_| Input::Request {
                            who: Some(who),
                            method: "PUT".into(),
                            path: "/staff".into(),
                            body: vec![],
                        })
                        .await
                    }
                    // The Worker asks for the show's measures for a reader it verified.
                    (Method::Post, "_analytics") => {
                        let who: Identity = serde_json::from_slice(&body)?;
                        self.answer(|_| Input::Request {
                            who: Some(who),
                            method: "GET".into(),
                            path: "/analytics".into(),
                            body: vec![],
                        })
                        .await
                    }
                    (Method::Post, "_fanout_message" | "_fanout_close") => {
                        self.heard_from_fanout(action == &"_fanout_close", &body).await
                    }
                    (Method::Get, "events") => self.events(&req, &room).await,
                    _ => error(404, "not_found", "no such endpoint"),
                }
            }
            _ => error(404, "not_found", "no such endpoint"),
        }
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        let Some(conn) = attachment(&ws).map(|a| a.conn) else { return Ok(()) };
        let checked =
            self.with_live(|live| frame_check(&self.env, live.buckets.entry(conn), message, now_ms()))?;
        match checked {
            Ok(text) => {
                self.run(|_| Input::Message { conn: ConnId(conn), text }).await?;
                Ok(())
            }
            Err((code, reason)) => self.drop_conn(&ws, conn, code, reason).await,
        }
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        if let Some(a) = attachment(&ws) {
            self.run(|_| Input::Close { conn: ConnId(a.conn) }).await?;
        }
        // Complete the closing handshake (runtimes without automatic close replies need it).
        let _ = ws.close(Some(1000), Some(""));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: Error) -> Result<()> {
        if let Some(a) = attachment(&ws) {
            self.run(|_| Input::Close { conn: ConnId(a.conn) }).await?;
        }
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        self.run(|_| Input::Alarm).await?;
        Response::ok("")
    }
}

fn attachment(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment().ok().flatten()
}

impl Room {
    fn show(&self) -> Option<Show> {
        let rows: Vec<ShowRow> =
            self.state.storage().sql().exec("SELECT body FROM show", None).ok()?.to_array().ok()?;
        serde_json::from_str(&rows.first()?.body).ok()
    }

    fn no_show(&self, segs: &[&str]) -> Result<Response> {
        let id: String = segs.get(2).copied().unwrap_or_default().chars().take(64).collect();
        error(404, "show_not_found", format!("no show {id:?}"))
    }

    /// `GET /v1/rooms/{room}/ws`: the token comes as `?token=` or as a `Sec-WebSocket-Protocol`
    /// value offered beside `liveshop.v1`.
    async fn websocket(&self, req: &Request, room: &str) -> Result<Response> {
        if self.show().is_none() {
            return self.no_show(&["v1", "rooms", room]);
        }
        let who = match crate::caller(req, &self.env, room)?.and_then(Caller::required) {
            Ok(who) => who,
            Err(e) => return api_error(&e),
        };
        let offered = req.headers().get("sec-websocket-protocol")?.unwrap_or_default();
        if req.headers().get("upgrade")?.is_none_or(|u| !u.eq_ignore_ascii_case("websocket")) {
            return error(426, "upgrade_required", "this endpoint speaks WebSocket");
        }
        let limit = setting(&self.env, "MAX_CONNS_PER_ROOM", 20_000) as usize;
        let (local, remote) = self.with_live(|live| (live.sockets.len(), live.remote.len()))?;
        if local + remote >= limit {
            return error(503, "room_full", format!("the room is full ({limit} connections)"));
        }
        let resume = query(req, "epoch")
            .and_then(|e| e.parse().ok())
            .zip(query(req, "seq").and_then(|s| s.parse().ok()));
        let conn = random_u53();
        let connected_at = now_ms();
        let a = Attachment { conn, who: who.clone(), connected_at };
        let resume = resume.map(|(e, s)| (Epoch(e), liveshop_room::Seq(s)));
        let threshold = setting(&self.env, "FANOUT_THRESHOLD", 10_000).max(1) as usize;
        if local >= threshold {
            return self.websocket_via_fanout(room, a, resume, &offered, threshold).await;
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        pair.server.serialize_attachment(&a)?;
        let server = pair.server;
        self.with_live(|live| live.sockets.insert(conn, server))?;
        self.run(|_| Input::Connect { conn: ConnId(conn), who, connected_at, resume }).await?;
        let headers = Headers::new();
        if liveshop_api::offers_protocol(&offered) {
            headers.set("sec-websocket-protocol", liveshop_api::PROTOCOL)?;
        }
        Ok(Response::from_websocket(pair.client)?.with_headers(headers))
    }

    /// A new connection beyond the room's own threshold: the socket goes to the first fan-out
    /// object with room; the room registers the connection (stored, so a revived room knows it)
    /// and welcomes it through that object.
    async fn websocket_via_fanout(
        &self,
        room: &str,
        a: Attachment,
        resume: Option<(Epoch, liveshop_room::Seq)>,
        offered: &str,
        threshold: usize,
    ) -> Result<Response> {
        let sizes = self.with_live(|live| live.fanout_sizes())?;
        let k = (0..).find(|k| sizes.get(k).is_none_or(|n| *n < threshold)).expect("some index has room");
        let headers = Headers::new();
        headers.set("upgrade", "websocket")?;
        headers.set("x-liveshop-conn", &a.conn.to_string())?;
        headers.set("x-liveshop-room", room)?;
        if liveshop_api::offers_protocol(offered) {
            headers.set("sec-websocket-protocol", liveshop_api::PROTOCOL)?;
        }
        let mut init = RequestInit::new();
        init.with_headers(headers);
        let accept = Request::new_with_init("https://fanout/accept", &init)?;
        let stub = self.env.durable_object("FANOUTS")?.get_by_name(&format!("{room}#{k}"))?;
        let response = stub.fetch_with_request(accept).await?;
        if response.status_code() != 101 {
            return error(503, "unavailable", "the fan-out object refused the connection");
        }
        self.state.storage().sql().exec(
            "INSERT OR REPLACE INTO remote (conn, fanout, attachment) VALUES (?, ?, ?)",
            vec![(a.conn as i64).into(), (k as i64).into(), serde_json::to_string(&a)?.into()],
        )?;
        self.with_live(|live| live.remote.insert(a.conn, k))?;
        let Attachment { conn, who, connected_at } = a;
        self.run(|_| Input::Connect { conn: ConnId(conn), who, connected_at, resume }).await?;
        // The object's response is immutable: the same socket, with our headers.
        let protocol = response.headers().get("sec-websocket-protocol")?;
        let client = response.websocket().ok_or("the fan-out object answered without a socket")?;
        let headers = Headers::new();
        if let Some(p) = protocol {
            headers.set("sec-websocket-protocol", &p)?;
        }
        headers.set("x-liveshop-fanout", &k.to_string())?;
        Ok(Response::from_websocket(client)?.with_headers(headers))
    }

    /// A fan-out object's client sent a frame (or left).
    async fn heard_from_fanout(&self, closed: bool, body: &[u8]) -> Result<Response> {
        #[derive(Deserialize)]
        struct FromFanout {
            conn: u64,
            text: Option<String>,
        }
        let m: FromFanout = serde_json::from_slice(body)?;
        let known = self.with_live(|live| live.remote.contains_key(&m.conn))?;
        if !known {
            return Response::empty();
        }
        match (closed, m.text) {
            (false, Some(text)) => {
                self.run(|_| Input::Message { conn: ConnId(m.conn), text }).await?;
            }
            _ => {
                self.forget_remote(m.conn)?;
                self.run(|_| Input::Close { conn: ConnId(m.conn) }).await?;
            }
        }
        Response::empty()
    }

    fn forget_remote(&self, conn: u64) -> Result<()> {
        self.with_live(|live| live.remote.remove(&conn))?;
        self.state.storage().sql().exec("DELETE FROM remote WHERE conn = ?", vec![(conn as i64).into()])?;
        Ok(())
    }

    /// Sends the queued batches to their fan-out objects, one at a time, in order. Only one
    /// event pumps at a time; others just queue.
    async fn pump(&self, room: &str) -> Result<()> {
        if self.pumping.replace(true) {
            return Ok(());
        }
        let namespace = self.env.durable_object("FANOUTS")?;
        loop {
            let next = self.outbox.borrow_mut().pop_front();
            let Some((k, items)) = next else { break };
            let mut init = RequestInit::new();
            init.with_method(Method::Post).with_body(Some(serde_json::to_string(&items)?.into()));
            let sent = match namespace.get_by_name(&format!("{room}#{k}")) {
                Ok(stub) => match Request::new_with_init("https://fanout/deliver", &init) {
                    Ok(req) => stub.fetch_with_request(req).await.map(|_| ()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                console_error!("fan-out {k} of {room}: {e}");
            }
        }
        self.pumping.set(false);
        Ok(())
    }

    /// `GET /v1/rooms/{room}/events`: the same frames as the WebSocket, as server-sent events
    /// whose ids are `<epoch>-<seq>`, resumable with `Last-Event-ID`; ends with a `close` event.
    async fn events(&self, req: &Request, room: &str) -> Result<Response> {
        if self.show().is_none() {
            return self.no_show(&["v1", "rooms", room]);
        }
        let who = match crate::caller(req, &self.env, room)?.and_then(Caller::required) {
            Ok(who) => who,
            Err(e) => return api_error(&e),
        };
        let last_id = liveshop_api::last_event_id(req.headers().get("last-event-id")?.as_deref());
        let query_position = query(req, "epoch")
            .and_then(|e| e.parse().ok())
            .zip(query(req, "seq").and_then(|s| s.parse().ok()));
        let resume = last_id.or(query_position).map(|(e, s)| (Epoch(e), liveshop_room::Seq(s)));
        let (tx, rx) = channel::<String>(crate::SSE_QUEUE);
        let conn = random_u53();
        self.with_live(|live| live.streams.insert(conn, tx))?;
        let connected_at = now_ms();
        self.run(|_| Input::Connect { conn: ConnId(conn), who, connected_at, resume }).await?;
        sse_response(rx)
    }

    /// `GET /v1/rooms/{room}/feed[?after=E-S[&wait=K]]`: the core's answer, at once or, while
    /// nothing is after `E-S`, when the room logs something or the wait round ends (see
    /// [`crate::feed`]).
    async fn feed(&self, query: &str, room: &str) -> Result<Response> {
        use futures_util::future::{Either, select};
        if self.show().is_none() {
            return self.no_show(&["v1", "rooms", room]);
        }
        let q = match liveshop_room::feed::parse_query(query) {
            Ok(q) => q,
            Err(e) => return error(400, "invalid_argument", e.message),
        };
        let Some(after) = q.after.map(|a| a.to_string()) else {
            return feed::response(self.ask_feed("/feed".into()).await?, &q);
        };
        // Answers after a position come at most every ANSWER_INTERVAL_MS, each with what the room
        // logged meanwhile.
        let hold = liveshop_room::feed::hold(self.answered.get(), now_ms());
        if hold > 0 {
            Delay::from(std::time::Duration::from_millis(hold)).await;
        }
        let answer = self.ask_after(&after).await?;
        if answer.0 != 204 {
            return feed::response(answer, &q);
        }
        let (deadline, round) = liveshop_room::feed::deadline(now_ms());
        let mut parked = self.parked.park(&after, round);
        let left = std::time::Duration::from_millis(deadline.saturating_sub(now_ms()));
        let answer = match select(&mut parked, Delay::from(left)).await {
            Either::Left((answer, _)) => answer,
            Either::Right(((), _)) => {
                // The first of the round to wake asks for everyone of its position.
                if let Some(waiters) = self.parked.take_round(&after, round) {
                    let answer = self.ask_feed(format!("/feed?after={after}&wait={round}")).await?;
                    feed::release(waiters, &answer);
                }
                parked.await
            }
        };
        match answer {
            Ok(answer) => feed::response(answer, &q),
            // Only when the question for everyone failed; its error went to the log.
            Err(_) => error(500, "internal", "the room could not answer this feed request"),
        }
    }

    /// The core's answer to a feed request.
    async fn ask_feed(&self, path: String) -> Result<feed::Answer> {
        let input = |_| Input::Request { who: None, method: "GET".into(), path, body: vec![] };
        let (status, _, body) = self.run(input).await?.ok_or("the room produced no reply")?;
        Ok((status, body))
    }

    /// The core's answer after position `after` (204 while nothing is); an answer with events
    /// starts the next answer interval.
    async fn ask_after(&self, after: &str) -> Result<feed::Answer> {
        let answer = self.ask_feed(format!("/feed?after={after}")).await?;
        if answer.0 == 200 {
            self.answered.set(Some(now_ms()));
        }
        Ok(answer)
    }

    /// After an event that logged something: the waiting positions the core now has an answer
    /// for get it, one question per position. A question that fails does not fail the event:
    /// its waiters ask again when their round ends.
    async fn release_parked(&self) {
        for after in self.parked.positions() {
            match Box::pin(self.ask_after(&after)).await {
                Ok(answer) if answer.0 != 204 => feed::release(self.parked.take_position(&after), &answer),
                Ok(_) => {}
                Err(e) => console_error!("feed after {after}: {e}"),
            }
        }
    }

    /// `POST /v1/rooms/{room}/commands`: one client frame as the body; the answer is its `ack`.
    async fn command(&self, req: &Request, room: &str, body: Vec<u8>) -> Result<Response> {
        let who = match crate::caller(req, &self.env, room)?.and_then(Caller::required) {
            Ok(who) => who,
            Err(e) => return api_error(&e),
        };
        if self.show().is_none() {
            return self.no_show(&["v1", "rooms", room]);
        }
        if body.len() > liveshop_api::MAX_COMMAND_BYTES {
            let msg = format!("commands are limited to {} bytes", liveshop_api::MAX_COMMAND_BYTES);
            return error(413, "payload_too_large", msg);
        }
        let input =
            |_| Input::Request { who: Some(who), method: "POST".into(), path: "/commands".into(), body };
        self.answer(input).await
    }

    /// `GET /v1/rooms/{room}/state`: the room as the caller (or an anonymous viewer) sees it.
    async fn room_state(&self, req: &Request, room: &str) -> Result<Response> {
        if self.show().is_none() {
            return self.no_show(&["v1", "rooms", room]);
        }
        let who = match crate::caller(req, &self.env, room)? {
            Ok(Caller(who)) => who,
            Err(e) => return api_error(&e),
        };
        self.answer(|_| Input::Request { who, method: "GET".into(), path: "/state".into(), body: vec![] })
            .await
    }

    /// `GET /v1/rooms/{room}/timeline`: the replay's moments, with the headers the Worker's
    /// cache keeps them by (`liveshop_api::timeline`).
    async fn timeline(&self, room: &str) -> Result<Response> {
        if self.show().is_none() {
            return self.no_show(&["v1", "rooms", room]);
        }
        let input =
            |_| Input::Request { who: None, method: "GET".into(), path: "/timeline".into(), body: vec![] };
        let Some((status, _, body)) = self.run(input).await? else {
            return error(500, "internal", "the room produced no reply");
        };
        let (status, headers, body) = liveshop_api::timeline::answer(status, body, None);
        let out = Headers::new();
        for (name, value) in headers {
            out.set(name, &value)?;
        }
        Ok(Response::from_bytes(body)?.with_status(status).with_headers(out))
    }

    /// `POST /v1/rooms/{room}/guest`: a viewer token for anyone, when guests are allowed, with
    /// the name given or none (`{}`: a buyer who has not picked one). The token is for the device
    /// its signed `liveshop_device` cookie names (one guest subject per device); without one, a
    /// new device from the address's allowance of new guests ([`crate::device`]).
    async fn guest(&self, req: &Request, room: &str, body: &[u8]) -> Result<Response> {
        if setting(&self.env, "GUEST_TOKENS", 1) == 0 {
            return error(403, "forbidden", "this node gives no guest tokens");
        }
        if let Some(refusal) = crate::shop::oversized(body) {
            return refusal;
        }
        if self.show().is_none() {
            return self.no_show(&["v1", "rooms", room]);
        }
        let name = match liveshop_api::guest_name(body) {
            Ok(name) => name,
            Err(e) => return error(e.status, e.code, e.message),
        };
        let secret = secret(&self.env)?;
        let devices = secret.devices();
        let device = match crate::device(&self.env, req, &devices).await? {
            Ok((device, _)) => device,
            Err(refusal) => return Ok(refusal),
        };
        let guest = liveshop_api::Guest::new(&devices, room, &device, name, now_ms() / 1000);
        let token = secret.mint(&guest.claims).map_err(|e| e.to_string())?;
        let mut response = Response::from_json(&guest.answer(&token))?;
        // Set again each time, so a device seen within its lifetime keeps it.
        let secure = req.url()?.scheme() == "https";
        response.headers_mut().set("set-cookie", &devices.set_cookie(&device, secure))?;
        Ok(response)
    }

    async fn answer(&self, input: impl FnOnce(Millis) -> Input) -> Result<Response> {
        match self.run(input).await? {
            Some((status, content_type, body)) => reply(status, content_type, body),
            // The core answers every request; this is only a guard against a core bug.
            None => error(500, "internal", "the room produced no reply"),
        }
    }

    /// Closes a connection the host refuses and tells the room it left.
    async fn drop_conn(&self, ws: &WebSocket, conn: u64, code: u16, reason: &str) -> Result<()> {
        let _ = ws.close(Some(code), Some(reason));
        self.with_live(|live| {
            live.sockets.remove(&conn);
            live.buckets.remove(&conn);
        })?;
        self.run(|_| Input::Close { conn: ConnId(conn) }).await?;
        Ok(())
    }

    fn with_live<R>(&self, f: impl FnOnce(&mut Live) -> R) -> Result<R> {
        let mut slot = self.live.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.revive()?);
        }
        Ok(f(slot.as_mut().expect("revived above")))
    }

    /// Rebuilds the room from storage and re-attaches the sockets the runtime kept open.
    fn revive(&self) -> Result<Live> {
        let records = crate::records(&self.state.storage().sql())?;
        // Nothing sensible can run on state we cannot read: fail the event instead of starting
        // an empty room over the old one.
        let mut room = liveshop_room::Room::restore(records, Epoch(random_u53()))
            .map_err(|e| Error::RustError(format!("cannot restore the room: {e}")))?;
        let mut sockets = HashMap::new();
        for ws in self.state.get_websockets() {
            if let Some(a) = attachment(&ws) {
                room.attach(ConnId(a.conn), a.who, a.connected_at);
                sockets.insert(a.conn, ws);
            }
        }
        let mut remote = HashMap::new();
        for row in self.state.storage().sql().exec("SELECT fanout, attachment FROM remote", None)?.raw() {
            if let [SqlStorageValue::Integer(k), SqlStorageValue::String(a)] = row?.as_slice()
                && let Ok(a) = serde_json::from_str::<Attachment>(a)
            {
                room.attach(ConnId(a.conn), a.who, a.connected_at);
                remote.insert(a.conn, *k as u32);
            }
        }
        Ok(Live { room, sockets, buckets: HashMap::new(), remote, streams: HashMap::new() })
    }

    /// Feeds one input, made at `now`, to the room and carries out its outputs; returns the
    /// reply, if any. Everything but the alarm happens synchronously, so the event's writes are
    /// one transaction and its frames wait for them behind the output gate.
    async fn run(&self, input: impl FnOnce(Millis) -> Input) -> Result<Option<(u16, &'static str, Vec<u8>)>> {
        self.run_boxed(Box::new(input)).await
    }

    async fn run_boxed(
        &self,
        input: Box<dyn FnOnce(Millis) -> Input + '_>,
    ) -> Result<Option<(u16, &'static str, Vec<u8>)>> {
        let sql = self.state.storage().sql();
        let (answer, alarm, batches, gone, logged) = self.with_live(|live| -> Result<_> {
            let now = now_ms();
            let seq = live.room.seq();
            live.room.handle(now, input(now));
            let logged = live.room.seq() != seq;
            let (mut answer, mut alarm) = (None, None);
            let mut batches: BTreeMap<u32, Vec<Item>> = BTreeMap::new();
            let mut gone = Vec::new();
            while let Some(output) = live.room.poll_output() {
                match output {
                    Output::Store(write) => crate::store(&sql, write)?,
                    Output::Send { conn, frame } => {
                        if let Some(ws) = live.sockets.get(&conn.0) {
                            let _ = ws.send_with_str(&frame);
                        } else if let Some(tx) = live.streams.get_mut(&conn.0) {
                            if tx.try_send(sse_event(&frame)).is_err() {
                                gone.push(conn.0);
                            }
                        } else if let Some(k) = live.remote.get(&conn.0) {
                            batches.entry(*k).or_default().push(Item::To(conn.0, frame));
                        }
                    }
                    Output::Broadcast { frame } => {
                        for ws in live.sockets.values() {
                            let _ = ws.send_with_str(&frame);
                        }
                        if !live.streams.is_empty() {
                            let event = sse_event(&frame);
                            for (conn, tx) in &mut live.streams {
                                if tx.try_send(event.clone()).is_err() {
                                    gone.push(*conn);
                                }
                            }
                        }
                        for k in live.fanout_sizes().into_keys() {
                            batches.entry(k).or_default().push(Item::All(frame.clone()));
                        }
                    }
                    Output::Close { conn, code, reason } => {
                        if let Some(ws) = live.sockets.remove(&conn.0) {
                            let _ = ws.close(Some(code), Some(reason));
                        } else if let Some(mut tx) = live.streams.remove(&conn.0) {
                            let data = serde_json::json!({ "code": code, "reason": reason }).to_string();
                            let _ = tx.try_send(format!("event: close\ndata: {data}\n\n"));
                        } else if let Some(k) = live.remote.remove(&conn.0) {
                            sql.exec("DELETE FROM remote WHERE conn = ?", vec![(conn.0 as i64).into()])?;
                            batches.entry(k).or_default().push(Item::Close(conn.0, code, reason));
                        }
                    }
                    Output::SetAlarm(at) => alarm = Some(at),
                    Output::Reply { status, content_type, body } => {
                        answer = Some((status, content_type, body))
                    }
                }
            }
            for conn in &gone {
                live.streams.remove(conn);
            }
            Ok((answer, alarm, batches, gone, logged))
        })??;
        crate::sync_alarm(&self.state.storage(), alarm).await?;
        if !batches.is_empty() {
            self.outbox.borrow_mut().extend(batches);
            self.pump(&self.room_name()?).await?;
        }
        // Event streams whose readers went away, or fell too far behind, leave the room.
        for conn in gone {
            Box::pin(self.run_boxed(Box::new(move |_| Input::Close { conn: ConnId(conn) }))).await?;
        }
        if logged && !self.parked.is_empty() {
            self.release_parked().await;
        }
        Ok(answer)
    }
}

#[derive(Deserialize)]
struct ShowRow {
    body: String,
}

impl Room {
    /// This room's name (its show's id), which its fan-out objects are named after.
    fn room_name(&self) -> Result<String> {
        self.show().map(|s| s.id).ok_or_else(|| Error::RustError("a room without a show".into()))
    }
}
