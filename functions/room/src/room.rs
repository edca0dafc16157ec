//! The room actor: one [`Room`] per live show. Inputs in, outputs out; see the crate docs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use liveshop_identity::{Identity, Role};
pub use liveshop_journal::Write;
use liveshop_journal::{Entry, Journal, Policy};
pub use liveshop_journal::{RestoreError, keys};
use serde::{Deserialize, Serialize};

use crate::analytics;
use crate::feed;
use crate::filter::{self, Pace, Rules, TokenBucket, Verdict};
use crate::ids::{ConnId, Epoch, MessageId, Millis, PollId, ProductId, QuestionId, Seq};
use crate::protocol::HoldReason;
use crate::protocol::{
    Audience, ChatMessage, Command, CommandError, ErrorCode, Event, EventFrame, ModAction, PROTOCOL_VERSION,
    PollInfo, ProductPin, Question, ServerFrame, SettingsPatch, StatsDelta, StreamHealth, StreamStarted, You,
    decode, limits, to_json,
};
use crate::state::{DUPLICATE_WINDOW_MS, RoomState, authority, higher};
use crate::timeline::TimelineView;
use crate::view::RoomView;

mod engagement;
mod moderation;
mod stage;

use stage::Interest;

/// A snapshot is written after this many events.
pub const SNAPSHOT_EVERY: u64 = 256;
/// Events kept in the log (and in memory) for clients that resume.
pub const LOG_RETAIN: u64 = 512;
/// Aggregation window for reactions, tallies, presence and analytics.
pub const FLUSH_MS: Millis = 250;
/// One question per user per this long.
pub const QUESTION_INTERVAL_MS: Millis = 60_000;
/// Close code for a banned user's connections.
pub const CLOSE_BANNED: u16 = 4003;
/// The subject the media origin's stream events come from: it can never be sanctioned.
pub const MEDIA_ORIGIN: &str = "media-origin";
/// The room's route for the media origin's stream events (`POST`, the body one `stream.*`
/// command as the origin sent it): the host relays the event without reading it, and the room
/// parses it once. The answer is a [`StreamEventTaken`].
pub const STREAM_EVENTS_PATH: &str = "/stream-events";

/// The room's answer to a stream event it took: the seq it logged, and whether the stream ended
/// (the host then has the show's report announced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEventTaken {
    pub seq: Option<Seq>,
    pub ended: bool,
}

/// Every command from a viewer: a generous burst, ten a second sustained.
const COMMAND_PACE: Pace = Pace { burst: 30, refill_every_ms: 100 };
/// Chat from a viewer: five at once, one a second sustained.
const CHAT_PACE: Pace = Pace { burst: 5, refill_every_ms: 1000 };

/// What the host tells the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A client connected; `resume` is its last `(epoch, seq)` if it is reconnecting.
    Connect {
        conn: ConnId,
        who: Identity,
        connected_at: Millis,
        resume: Option<(Epoch, Seq)>,
    },
    /// One text frame from a connection.
    Message {
        conn: ConnId,
        text: String,
    },
    Close {
        conn: ConnId,
    },
    /// An HTTP request routed to this room (`GET /state`, `POST /commands`).
    Request {
        who: Option<Identity>,
        method: String,
        path: String,
        body: Vec<u8>,
    },
    /// The alarm the room asked for has fired (maybe late, maybe twice).
    Alarm,
}

/// What the room asks of the host, in order. Storage writes of one `handle` call must commit
/// together before any frame, close or reply of that call leaves the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A storage write of the event (the journal's: log records, snapshots, the epoch).
    Store(Write),
    Send {
        conn: ConnId,
        frame: String,
    },
    /// One frame to every open connection.
    Broadcast {
        frame: String,
    },
    Close {
        conn: ConnId,
        code: u16,
        reason: String,
    },
    /// Set (or with `None`, clear) the room's one alarm.
    SetAlarm(Option<Millis>),
    /// The answer to an [`Input::Request`].
    Reply {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
}

/// One logged event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub seq: Seq,
    pub at: Millis,
    /// See [`EventFrame::media_at`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_at: Option<Millis>,
    pub audience: Audience,
    pub event: Event,
}

impl Entry for LogRecord {
    fn seq(&self) -> Seq {
        self.seq
    }
}

/// When the room snapshots and how much log it keeps for resuming clients.
const POLICY: Policy = Policy { snapshot_every: SNAPSHOT_EVERY, retain: LOG_RETAIN };

#[derive(Debug, Clone)]
struct Conn {
    /// Shared, so handling a message borrows the sender's identity for a refcount, not a copy.
    who: std::sync::Arc<Identity>,
    connected_at: Millis,
}

/// A connected viewer's open connections and when the first of them opened.
#[derive(Debug, Clone, Copy)]
struct Visit {
    conns: u32,
    since: Millis,
}

/// What a command produced, for its `ack`.
struct Accepted {
    seq: Option<Seq>,
    held: bool,
}

impl Accepted {
    fn none() -> Self {
        Accepted { seq: None, held: false }
    }
}

/// State that only aggregates between flushes, or paces senders. Lost on a restart by design.
#[derive(Debug, Default)]
struct Window {
    reactions: BTreeMap<String, u32>,
    tally_dirty: bool,
    presence_dirty: bool,
    stats: StatsDelta,
    flush_at: Option<Millis>,
}

/// Which allowance a user's action draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    Command,
    Chat,
}

impl Bucket {
    fn pace(self) -> Pace {
        match self {
            Bucket::Command => COMMAND_PACE,
            Bucket::Chat => CHAT_PACE,
        }
    }
}

/// One live show's room. See the crate documentation for the model.
#[derive(Debug)]
pub struct Room {
    journal: Journal,
    state: RoomState,
    log: VecDeque<LogRecord>,
    conns: BTreeMap<ConnId, Conn>,
    /// Each connected viewer's visit, so counting viewers is O(1) on every join.
    viewer_conns: BTreeMap<String, Visit>,
    /// Viewers reading the public feed, as the host last counted them (heartbeats). Not
    /// stored: the host hands the count over again every few seconds.
    feed_viewers: u32,
    buckets: BTreeMap<(String, Bucket), TokenBucket>,
    /// The content filter's memo of texts read lately (not stored: it only saves work).
    readings: filter::Readings,
    window: Window,
    /// The alarm last asked of the host; `None` when unknown (after a revival).
    alarm: Option<Option<Millis>>,
    out: VecDeque<Output>,
}

impl Room {
    /// A room with no history, in a new epoch.
    pub fn new(epoch: Epoch) -> Room {
        Room {
            journal: Journal::new(epoch, POLICY),
            state: RoomState::default(),
            log: VecDeque::new(),
            conns: BTreeMap::new(),
            viewer_conns: BTreeMap::new(),
            feed_viewers: 0,
            buckets: BTreeMap::new(),
            readings: filter::Readings::default(),
            window: Window::default(),
            alarm: None,
            out: VecDeque::new(),
        }
    }

    /// Rebuilds a room from everything it stored (any order). With nothing stored, it is a new
    /// room in `new_epoch`.
    pub fn restore(records: Vec<(String, Vec<u8>)>, new_epoch: Epoch) -> Result<Room, RestoreError> {
        let restored =
            Journal::restore(records, new_epoch, POLICY, |state: &mut RoomState, r: &LogRecord| {
                state.apply(r.at, &r.audience, &r.event)
            })?;
        let mut room = Room::new(restored.journal.epoch());
        room.journal = restored.journal;
        room.state = restored.state;
        room.log = restored.entries.into();
        room.trim_log();
        Ok(room)
    }

    /// Whether the room keeps its show's measures ([`crate::analytics`]); it does unless told
    /// otherwise, after every restore. Off, the show's report counts nothing new: for a
    /// deployment that wants no analytics, and the baseline of `liveshop-analytics`'s bench.
    pub fn keep_measures(&mut self, on: bool) {
        self.state.measures_off = !on;
    }

    /// Registers a connection the host kept open while the room was not in memory. Emits nothing.
    pub fn attach(&mut self, conn: ConnId, who: Identity, connected_at: Millis) {
        // Not a join: the visit began before the room was put to sleep.
        self.add_conn(conn, Conn { who: who.into(), connected_at });
    }

    pub fn epoch(&self) -> Epoch {
        self.journal.epoch()
    }

    pub fn seq(&self) -> Seq {
        self.journal.seq()
    }

    pub fn state(&self) -> &RoomState {
        &self.state
    }

    /// The logged events still retained for resuming clients, oldest first.
    pub fn log(&self) -> impl Iterator<Item = &LogRecord> {
        self.log.iter()
    }

    /// The frames of the retained events after `last` that `subject` may see: what a client
    /// resuming from `last` is sent, and what a host without sockets (Spin) streams to a reader
    /// as the stored room moves on.
    pub fn events_after(&self, subject: &str, role: Role, last: Seq) -> Vec<String> {
        self.log
            .iter()
            .filter(|r| r.seq > last && r.audience.admits(subject, role))
            .map(|r| self.event_frame(r))
            .collect()
    }

    /// Closes the aggregation window now, whatever its time: for a host that keeps no room
    /// between events (Spin), where a window left open would be lost with the instance. Its
    /// measures are logged (`stats`) and its frames released, as at the end of a window.
    pub fn flush_window(&mut self, now: Millis) {
        if self.window.flush_at.is_some() {
            self.flush(now);
            self.sync_alarm();
        }
    }

    /// Each user's allowances not yet refilled at `now`. The room keeps them in memory; a host
    /// whose instances share no memory (Spin) stores them with the room and hands them back with
    /// [`Room::load_paces`], so pacing holds across instances.
    pub fn paces(&self, now: Millis) -> Vec<(String, Bucket, TokenBucket)> {
        let limited = self.buckets.iter().filter(|((_, b), t)| !t.is_full(b.pace(), now));
        limited.map(|((who, b), t)| (who.clone(), *b, *t)).collect()
    }

    /// Takes back what [`Room::paces`] gave.
    pub fn load_paces(&mut self, paces: Vec<(String, Bucket, TokenBucket)>) {
        self.buckets.extend(paces.into_iter().map(|(who, b, t)| ((who, b), t)));
    }

    /// Distinct viewers now: connected ones and those the host counts on the feed.
    pub fn viewers(&self) -> u32 {
        u32::try_from(self.viewer_conns.len()).unwrap_or(u32::MAX).saturating_add(self.feed_viewers)
    }

    /// Adds a connection; true when it begins a viewer's visit.
    fn add_conn(&mut self, conn: ConnId, c: Conn) -> bool {
        let mut begun = false;
        if c.who.role == Role::Viewer {
            let visit = self.viewer_conns.entry(c.who.subject.clone()).or_insert_with(|| {
                begun = true;
                Visit { conns: 0, since: c.connected_at }
            });
            visit.conns += 1;
            // Connections re-attached after a revival come in any order: the visit began at the first.
            visit.since = visit.since.min(c.connected_at);
        }
        if let Some(old) = self.conns.insert(conn, c) {
            self.forget_viewer(&old);
        }
        begun
    }

    /// Removes a connection; a viewer's last one ends their visit, counted at `now`.
    fn remove_conn(&mut self, now: Millis, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        if let Some(since) = self.forget_viewer(&c) {
            let watched = now.saturating_sub(since);
            self.window.stats.visit_ended(watched);
            self.window.stats.socket_watch_ms += watched;
            self.window.presence_dirty = true;
            self.schedule_flush(now);
        }
        Some(c)
    }

    /// Forgets a viewer's connection; when it was their last, when their visit began.
    fn forget_viewer(&mut self, c: &Conn) -> Option<Millis> {
        if c.who.role != Role::Viewer {
            return None;
        }
        let visit = self.viewer_conns.get_mut(&c.who.subject)?;
        visit.conns -= 1;
        let since = visit.since;
        (visit.conns == 0).then(|| {
            self.viewer_conns.remove(&c.who.subject);
            since
        })
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Handles one input at `now`. Outputs are queued for [`Room::poll_output`].
    pub fn handle(&mut self, now: Millis, input: Input) {
        // The epoch is stored before anything else, so a client that saw it can resume after a
        // revival even if the room had logged nothing yet.
        if let Some(w) = self.journal.open() {
            self.out.push_back(Output::Store(w));
        }
        match input {
            Input::Connect { conn, who, connected_at, resume } => {
                self.connect(now, conn, who, connected_at, resume)
            }
            Input::Message { conn, text } => {
                // A frame from a connection we do not know (closed meanwhile) has nobody to answer.
                let Some(who) = self.conns.get(&conn).map(|c| c.who.clone()) else { return };
                let frame = match decode(&text) {
                    Ok(f) => f,
                    Err((id, e)) => return self.refuse(conn, id, e),
                };
                let signal = frame.command.is_signal();
                match self.command(now, &who, frame.command) {
                    Ok(a) => {
                        if let (Some(id), false) = (frame.id, signal) {
                            self.send(conn, &ServerFrame::Ack { id, seq: a.seq, held: a.held });
                        }
                    }
                    Err(e) => self.refuse(conn, frame.id, e),
                }
            }
            Input::Close { conn } => {
                self.remove_conn(now, conn);
            }
            Input::Request { who, method, path, body } => self.request(now, who, &method, &path, &body),
            Input::Alarm => self.alarm(now),
        }
        self.sync_alarm();
    }

    fn connect(
        &mut self,
        now: Millis,
        conn: ConnId,
        who: Identity,
        connected_at: Millis,
        resume: Option<(Epoch, Seq)>,
    ) {
        if self.state.banned(&who.subject, who.role) {
            self.refuse(conn, None, CommandError::new(ErrorCode::Banned, "you are banned from this room"));
            self.out.push_back(Output::Close { conn, code: CLOSE_BANNED, reason: "banned".into() });
            return;
        }
        let you = You { subject: who.subject.clone(), role: who.role, name: who.name.clone() };
        let first_retained = self.log.front().map_or(self.journal.seq().0 + 1, |r| r.seq.0);
        let resumable = resume.filter(|(e, s)| {
            *e == self.journal.epoch() && *s <= self.journal.seq() && s.0 + 1 >= first_retained
        });
        let (subject, role) = (who.subject.clone(), who.role);
        let who = std::sync::Arc::new(who);
        if self.add_conn(conn, Conn { who: who.clone(), connected_at }) {
            self.window.stats.joins += 1;
            // A guest by their device, as the feed counts them: one visitor from the feed to chat.
            let visitor = who.device.as_deref().unwrap_or(&subject);
            self.window.stats.arrived.push(analytics::visitor_hash(visitor));
        }
        if role == Role::Viewer {
            self.window.presence_dirty = true;
            self.schedule_flush(now);
        }
        let state = match resumable {
            Some(_) => None,
            None => Some(Box::new(RoomView::of(&self.state, &subject, role, now, self.viewers()))),
        };
        let welcome = ServerFrame::Welcome {
            v: PROTOCOL_VERSION,
            epoch: self.journal.epoch(),
            seq: self.journal.seq(),
            now,
            you,
            resumed: resumable.is_some(),
            state,
        };
        self.send(conn, &welcome);
        if let Some((_, last)) = resumable {
            for frame in self.events_after(&subject, role, last) {
                self.out.push_back(Output::Send { conn, frame });
            }
            if let Some(frame) = self.tally_frame() {
                self.out.push_back(Output::Send { conn, frame });
            }
        }
        // After the welcome: a connection the host attached on a revival is already among those
        // an event reaches, and nothing may reach it before its welcome.
        self.admit_staff(now, &who);
    }

    fn request(&mut self, now: Millis, who: Option<Identity>, method: &str, path: &str, body: &[u8]) {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let json = "application/json";
        let (status, body) = match (method, path) {
            ("GET", "/feed") => match feed::parse_query(query) {
                Ok(q) => self.feed(now, q),
                Err(e) => http_error(e),
            },
            // Only host shells call this (no client route leads here): the feed viewers their
            // heartbeats counted, and the watch time those added since the last hand-off.
            ("PUT", "/audience") => match serde_json::from_slice::<feed::AudienceCount>(body) {
                Ok(count) => {
                    if count.viewers != self.feed_viewers {
                        self.feed_viewers = count.viewers;
                        self.window.presence_dirty = true;
                        self.schedule_flush(now);
                    }
                    let w = &mut self.window.stats;
                    w.feed_watch_ms += count.watch_ms;
                    w.joins = w.joins.saturating_add(count.joins);
                    w.arrived.extend(&count.arrived);
                    w.visits_ended(&count.ended);
                    if count.watch_ms > 0 || count.joins > 0 || !count.ended.is_empty() {
                        self.schedule_flush(now);
                    }
                    (200, to_json(&serde_json::json!({ "viewers": self.viewers() })))
                }
                Err(e) => http_error(invalid(e.to_string())),
            },
            ("GET", "/state") => {
                let (subject, role) =
                    who.as_ref().map_or(("", Role::Viewer), |w| (w.subject.as_str(), w.role));
                let view = RoomView::of(&self.state, subject, role, now, self.viewers());
                (
                    200,
                    to_json(
                        &serde_json::json!({ "epoch": self.journal.epoch(), "seq": self.journal.seq(), "state": view }),
                    ),
                )
            }
            // The replay's moments on the video's clock: public, as the feed.
            ("GET", "/timeline") => (200, to_json(&TimelineView::from(&self.state.timeline))),
            // The show's measures, for its staff (the host's report joins them with the shop's).
            ("GET", "/analytics") => match who.filter(|w| w.role.is_staff()) {
                None => http_error(CommandError::new(ErrorCode::Forbidden, "staff only")),
                Some(_) => (
                    200,
                    to_json(&serde_json::json!({
                        "now": now, "viewers": self.viewers(), "measures": self.state.measures,
                    })),
                ),
            },
            // Only host shells call this (no client route leads here): they vouch for a staff
            // identity the room has not met yet, such as the creator of the show.
            ("PUT", "/staff") => match who.filter(|w| w.role.is_staff()) {
                None => http_error(CommandError::new(ErrorCode::Forbidden, "staff only")),
                Some(who) => {
                    self.admit_staff(now, &who);
                    (200, to_json(&serde_json::json!({ "staff": who.subject, "role": who.role })))
                }
            },
            ("POST", STREAM_EVENTS_PATH) => match who {
                Some(who) if who.subject == MEDIA_ORIGIN && who.role == Role::Host => {
                    self.admit_staff(now, &who);
                    self.stream_event(now, &who, body)
                }
                _ => http_error(CommandError::new(
                    ErrorCode::Forbidden,
                    "only the media origin sends stream events",
                )),
            },
            ("POST", "/commands") => match who {
                None => http_error(CommandError::new(ErrorCode::Forbidden, "a token is required")),
                Some(who) => {
                    self.admit_staff(now, &who);
                    let text = String::from_utf8_lossy(body);
                    match decode(&text) {
                        Err((_, e)) => http_error(e),
                        Ok(frame) => match self.command(now, &who, frame.command) {
                            Err(e) => http_error(e),
                            Ok(a) => {
                                let id = frame.id.unwrap_or_default();
                                (200, to_json(&ServerFrame::Ack { id, seq: a.seq, held: a.held }))
                            }
                        },
                    }
                }
            },
            _ => http_error(CommandError::new(ErrorCode::NotFound, format!("no route {method} {path}"))),
        };
        self.out.push_back(Output::Reply { status, content_type: json, body: body.into_bytes() });
    }

    /// A feed answer (see [`feed`]): the public snapshot, the public events after a position,
    /// or 204 while nothing is after it and the host's wait goes on.
    fn feed(&mut self, now: Millis, q: feed::FeedQuery) -> (u16, String) {
        let here = feed::Position { epoch: self.journal.epoch(), seq: self.journal.seq() };
        let first_retained = self.log.front().map_or(here.seq.0 + 1, |r| r.seq.0);
        let after =
            q.after.filter(|a| a.epoch == here.epoch && a.seq <= here.seq && a.seq.0 + 1 >= first_retained);
        let Some(after) = after else {
            let view = RoomView::public(&self.state, now, self.viewers());
            let body = serde_json::json!({
                "v": PROTOCOL_VERSION, "epoch": here.epoch, "seq": here.seq, "now": now,
                "next": here.to_string(), "state": view,
            });
            return (200, to_json(&body));
        };
        let waited = q.wait.is_some();
        if after.seq == here.seq && !waited {
            return (204, String::new());
        }
        let events: Vec<String> = self
            .log
            .iter()
            .filter(|r| r.seq > after.seq && r.audience == Audience::All)
            .map(|r| self.event_frame(r))
            .collect();
        let latest: Vec<String> = std::iter::once(self.presence_frame()).chain(self.tally_frame()).collect();
        let wait = q.wait.filter(|_| after.seq == here.seq);
        (200, feed::Page { now, at: here, events: &events, latest: &latest, wait }.to_json())
    }

    fn alarm(&mut self, now: Millis) {
        // A fired alarm is cleared by the host (the ABI's rule), so whatever is wanted next must
        // be asked for again, even if it equals what was asked before.
        self.alarm = Some(None);
        if self.window.flush_at.is_some_and(|at| at <= now) {
            self.flush(now);
        }
        let ended: Vec<ProductId> = self
            .state
            .products
            .iter()
            .filter(|p| p.countdown_ends_at.is_some_and(|at| at <= now))
            .map(|p| p.product.id.clone())
            .collect();
        for product_id in ended {
            self.emit(now, Audience::All, Event::ProductCountdownEnded { product_id });
        }
    }

    fn flush(&mut self, now: Millis) {
        let w = std::mem::take(&mut self.window);
        if !w.reactions.is_empty() {
            let f = ServerFrame::Reactions {
                epoch: self.journal.epoch(),
                seq: self.journal.seq(),
                counts: w.reactions,
            };
            self.out.push_back(Output::Broadcast { frame: to_json(&f) });
        }
        if w.tally_dirty
            && let Some(frame) = self.tally_frame()
        {
            self.out.push_back(Output::Broadcast { frame });
        }
        let mut delta = w.stats;
        if w.presence_dirty {
            let viewers = self.viewers();
            delta.viewers = Some(viewers);
            if viewers > self.state.stats.peak_viewers {
                delta.peak_viewers = Some(viewers);
            }
            self.out.push_back(Output::Broadcast { frame: self.presence_frame() });
        }
        if delta != StatsDelta::default() {
            self.emit(now, Audience::Staff, Event::Stats { delta });
        }
    }

    fn presence_frame(&self) -> String {
        let viewers = self.viewers();
        let peak = viewers.max(self.state.stats.peak_viewers);
        to_json(&ServerFrame::Presence {
            epoch: self.journal.epoch(),
            seq: self.journal.seq(),
            viewers,
            peak,
        })
    }

    fn tally_frame(&self) -> Option<String> {
        let p = self.state.poll.as_ref().filter(|p| p.open)?;
        let counts = p.counts();
        let total = counts.iter().sum();
        Some(to_json(&ServerFrame::PollTally {
            epoch: self.journal.epoch(),
            seq: self.journal.seq(),
            poll_id: p.info.id,
            counts,
            total,
        }))
    }

    fn schedule_flush(&mut self, now: Millis) {
        self.window.flush_at.get_or_insert(now + FLUSH_MS);
    }

    fn sync_alarm(&mut self) {
        let countdown = self.state.products.iter().filter_map(|p| p.countdown_ends_at).min();
        let wanted = match (self.window.flush_at, countdown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if self.alarm != Some(wanted) {
            self.alarm = Some(wanted);
            self.out.push_back(Output::SetAlarm(wanted));
        }
    }

    /// Records an event: next seq, state change, journal (with compaction when due), fan-out.
    fn emit(&mut self, now: Millis, audience: Audience, event: Event) -> Seq {
        let seq = self.journal.next_seq();
        self.state.apply(now, &audience, &event);
        let media_at = self.state.timeline.media_at(now);
        let rec = LogRecord { seq, at: now, media_at, audience, event };
        for w in self.journal.append(&rec, &self.state) {
            self.out.push_back(Output::Store(w));
        }
        let frame = self.event_frame(&rec);
        match &rec.audience {
            Audience::All => self.out.push_back(Output::Broadcast { frame }),
            audience => {
                let to: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| audience.admits(&c.who.subject, c.who.role))
                    .map(|(id, _)| *id)
                    .collect();
                for conn in to {
                    self.out.push_back(Output::Send { conn, frame: frame.clone() });
                }
            }
        }
        self.log.push_back(rec);
        self.trim_log();
        seq
    }

    fn trim_log(&mut self) {
        while self.log.len() as u64 > LOG_RETAIN {
            self.log.pop_front();
        }
    }

    fn event_frame(&self, r: &LogRecord) -> String {
        to_json(&EventFrame {
            epoch: self.journal.epoch(),
            seq: r.seq,
            at: r.at,
            media_at: r.media_at,
            event: &r.event,
        })
    }

    fn send(&mut self, conn: ConnId, frame: &ServerFrame) {
        self.out.push_back(Output::Send { conn, frame: to_json(frame) });
    }

    fn refuse(&mut self, conn: ConnId, id: Option<String>, e: CommandError) {
        let frame =
            ServerFrame::Error { id, code: e.code, message: e.message, retry_after_ms: e.retry_after_ms };
        self.send(conn, &frame);
    }

    fn pace(&mut self, who: &Identity, bucket: Bucket, now: Millis) -> Result<(), CommandError> {
        if who.role.is_staff() {
            return Ok(());
        }
        let pace = bucket.pace();
        self.buckets
            .entry((who.subject.clone(), bucket))
            .or_insert_with(|| TokenBucket::full(pace, now))
            .take(pace, now)
            .map_err(|ms| CommandError::new(ErrorCode::RateLimited, "slow down").retry_after(ms))
    }

    /// Checks and carries out one command. On `Err` nothing durable has changed.
    fn command(&mut self, now: Millis, who: &Identity, cmd: Command) -> Result<Accepted, CommandError> {
        use Command as C;
        if self.state.banned(&who.subject, who.role) {
            return Err(CommandError::new(ErrorCode::Banned, "you are banned from this room"));
        }
        self.pace(who, Bucket::Command, now)?;
        // One method per command, grouped by area: chat and moderation (`moderation.rs`), polls,
        // questions and reactions (`engagement.rs`), the banner, the stream and the products
        // (`stage.rs`).
        match cmd {
            C::ChatSend { text, reply_to } => self.chat(now, who, text, reply_to),
            C::ChatDelete { message_id } => self.delete_message(now, who, message_id),
            C::ChatPin { message_id } => self.pin_message(now, who, message_id),
            C::ChatUnpin {} => self.unpin_message(now, who),
            C::Approve { message_id } => self.approve(now, who, message_id),
            C::Reject { message_id } => self.reject(now, who, message_id),
            C::Timeout { user, seconds } => self.time_out(now, who, user, seconds),
            C::Ban { user } => self.ban(now, who, user),
            C::Unban { user } => self.unban(now, who, user),
            C::ShadowBan { user } => self.shadow_ban(now, who, user),
            C::UnshadowBan { user } => self.unshadow_ban(now, who, user),
            C::Settings { patch } => self.change_settings(now, who, patch),
            C::React { emoji } => self.react(now, emoji),
            C::PollOpen { question, options } => self.open_poll(now, who, question, options),
            C::PollVote { poll_id, option } => self.vote(now, who, poll_id, option),
            C::PollClose { poll_id } => self.close_poll(now, who, poll_id),
            C::QuestionAsk { text } => self.ask(now, who, text),
            C::QuestionUpvote { question_id } => self.upvote(now, who, question_id),
            C::QuestionAnswer { question_id } => self.answer_question(now, who, question_id),
            C::QuestionPin { question_id } => self.pin_question(now, who, question_id),
            C::QuestionUnpin {} => self.unpin_question(now, who),
            C::BannerSet { text } => self.set_banner(now, who, text),
            C::BannerClear {} => self.clear_banner(now, who),
            C::StreamStarted(started) => self.stream_started(now, who, started),
            C::StreamHealth(health) => self.stream_health(now, who, health),
            C::StreamEnded { duration_ms } => self.stream_ended(now, who, duration_ms),
            C::ProductPin { product, countdown_ends_at } => {
                self.pin_product(now, who, product, countdown_ends_at)
            }
            C::ProductUnpin { product_id } => self.unpin_product(now, who, product_id),
            C::ProductSoldOut { product_id, sold_out } => self.mark_sold_out(now, who, product_id, sold_out),
            C::ProductImpression { product_id } => self.count_product(now, product_id, Interest::Seen),
            C::ProductClick { product_id } => self.count_product(now, product_id, Interest::Opened),
        }
    }

    fn chat(
        &mut self,
        now: Millis,
        who: &Identity,
        text: String,
        reply_to: Option<MessageId>,
    ) -> Result<Accepted, CommandError> {
        self.may_speak(who, now)?;
        let text = filter::normalize_whitespace(&text);
        if text.is_empty() {
            return Err(CommandError::new(ErrorCode::EmptyMessage, "say something"));
        }
        if text.chars().count() > limits::MAX_CHAT_CHARS {
            return Err(CommandError::new(
                ErrorCode::MessageTooLong,
                format!("messages are limited to {} characters", limits::MAX_CHAT_CHARS),
            ));
        }
        if let Some(r) = reply_to
            && self.state.find_message(r).is_none()
        {
            return Err(not_found("message to reply to"));
        }
        let staff = who.role.is_staff();
        if !staff {
            let last = self.state.last_said.get(&who.subject);
            let slow = u64::from(self.state.settings.slow_mode_secs) * 1000;
            if let Some(l) = last
                && slow > 0
                && now < l.at + slow
            {
                let e = CommandError::new(ErrorCode::SlowMode, "slow mode is on");
                return Err(e.retry_after(l.at + slow - now));
            }
            if let Some(l) = last
                && now < l.at + DUPLICATE_WINDOW_MS
                && l.skeleton == filter::skeleton(&text)
            {
                return Err(CommandError::new(ErrorCode::DuplicateMessage, "you just said that"));
            }
        }
        let verdict = self.judge(&text, staff);
        if let Verdict::Refuse(code) = verdict {
            return Err(CommandError::new(code, refusal(code)));
        }
        // Pace last, so a refused message does not cost the sender a token.
        self.pace(who, Bucket::Chat, now)?;
        let message = ChatMessage {
            id: MessageId(self.journal.next_seq().0),
            user: who.subject.clone(),
            name: who.name.clone(),
            role: who.role,
            text,
            reply_to,
            at: now,
        };
        match verdict {
            Verdict::Hold(reason) => {
                let seq = self.emit(now, Audience::Moderators, Event::ChatHeld { message, reason });
                Ok(Accepted { seq: Some(seq), held: true })
            }
            _ => {
                let audience = self.audience_of(&who.subject, who.role);
                Ok(Accepted {
                    seq: Some(self.emit(now, audience, Event::ChatMessage { message })),
                    held: false,
                })
            }
        }
    }

    fn judge(&mut self, text: &str, staff: bool) -> Verdict {
        let s = &self.state.settings;
        let rules = Rules {
            links: s.links,
            review: s.review,
            blocked_terms: &s.blocked_terms,
            allowed_terms: &s.allowed_terms,
        };
        filter::judge(text, &rules, staff, &mut self.readings)
    }

    fn may_speak(&self, who: &Identity, now: Millis) -> Result<(), CommandError> {
        if self.state.banned(&who.subject, who.role) {
            return Err(CommandError::new(ErrorCode::Banned, "you are banned from this room"));
        }
        if let Some(until) = self
            .state
            .timed_out_until(&who.subject, now)
            .filter(|_| self.state.sanction_binds(&who.subject, who.role))
        {
            return Err(CommandError::new(ErrorCode::TimedOut, "you are timed out").retry_after(until - now));
        }
        Ok(())
    }

    /// Shadow-banned users are the only audience of what they say (when the shadow ban binds
    /// the role they speak in).
    fn audience_of(&self, user: &str, role: Role) -> Audience {
        if self.state.shadow_bans.contains(user) && self.state.sanction_binds(user, role) {
            Audience::User(user.to_string())
        } else {
            Audience::All
        }
    }

    /// Records a staff identity the room has not met in this role (or a higher one) yet.
    fn admit_staff(&mut self, now: Millis, who: &Identity) {
        let known = self.state.staff.get(&who.subject).copied();
        if who.role.is_staff() && known.is_none_or(|k| authority(k) < authority(who.role)) {
            let event = Event::StaffAdmitted { user: who.subject.clone(), role: who.role };
            self.emit(now, Audience::Staff, event);
        }
    }

    /// The highest role `user` is known by here: staff it was ever admitted as, its open
    /// connections and its messages in history.
    fn known_role(&self, user: &str) -> Option<Role> {
        let admitted = self.state.staff.get(user).copied();
        let live = self.conns.values().filter(|c| c.who.subject == user).map(|c| c.who.role);
        let said = self.state.history.iter().filter(|p| p.message.user == user).map(|p| p.message.role);
        admitted.into_iter().chain(live).chain(said).reduce(higher)
    }
}

fn require(allowed: bool) -> Result<(), CommandError> {
    if allowed { Ok(()) } else { Err(CommandError::new(ErrorCode::Forbidden, "your role may not do this")) }
}

fn not_found(what: &str) -> CommandError {
    CommandError::new(ErrorCode::NotFound, format!("no such {what}"))
}

fn invalid(msg: impl Into<String>) -> CommandError {
    CommandError::new(ErrorCode::InvalidArgument, msg)
}

fn refusal(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::LinkNotAllowed => "links are not allowed in this room",
        _ => "this message breaks the room's rules",
    }
}

/// A short text field: whitespace normalised, not empty, at most `max` characters.
fn text_field(text: &str, max: usize, what: &str) -> Result<String, CommandError> {
    let t = filter::normalize_whitespace(text);
    if t.is_empty() {
        return Err(CommandError::new(ErrorCode::EmptyMessage, format!("{what} is empty")));
    }
    if t.chars().count() > max {
        return Err(CommandError::new(
            ErrorCode::MessageTooLong,
            format!("{what} is limited to {max} characters"),
        ));
    }
    Ok(t)
}

fn validate_settings(mut p: SettingsPatch) -> Result<SettingsPatch, CommandError> {
    if p == SettingsPatch::default() {
        return Err(invalid("nothing to change"));
    }
    if p.slow_mode_secs.is_some_and(|s| s > limits::MAX_SLOW_MODE_SECS) {
        return Err(invalid(format!("slow mode is at most {} seconds", limits::MAX_SLOW_MODE_SECS)));
    }
    if let Some(emojis) = &p.emojis {
        let unique: BTreeSet<&String> = emojis.iter().collect();
        let ok = (1..=limits::MAX_EMOJIS).contains(&emojis.len())
            && unique.len() == emojis.len()
            && emojis.iter().all(|e| {
                !e.is_empty()
                    && e.len() <= limits::MAX_EMOJI_BYTES
                    && !e.chars().any(|c| c.is_whitespace() || c.is_control())
            });
        if !ok {
            return Err(CommandError::new(
                ErrorCode::InvalidEmoji,
                format!("1 to {} distinct reactions, each a short symbol", limits::MAX_EMOJIS),
            ));
        }
    }
    for terms in [&mut p.blocked_terms, &mut p.allowed_terms].into_iter().flatten() {
        if terms.len() > limits::MAX_TERMS {
            return Err(invalid(format!("at most {} terms", limits::MAX_TERMS)));
        }
        for t in terms.iter_mut() {
            *t = filter::normalize_whitespace(t);
            if t.is_empty() || t.chars().count() > limits::MAX_TERM_CHARS {
                return Err(invalid(format!("terms are 1 to {} characters", limits::MAX_TERM_CHARS)));
            }
        }
    }
    Ok(p)
}

/// A command accepted as the event logged at `seq`.
fn one(seq: Seq) -> Result<Accepted, CommandError> {
    Ok(Accepted { seq: Some(seq), held: false })
}

fn http_error(e: CommandError) -> (u16, String) {
    let status = match e.code {
        ErrorCode::Forbidden | ErrorCode::Banned | ErrorCode::TimedOut => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::PayloadTooLarge => 413,
        ErrorCode::RateLimited | ErrorCode::SlowMode | ErrorCode::QuestionRateLimited => 429,
        ErrorCode::PollAlreadyOpen
        | ErrorCode::PollClosed
        | ErrorCode::AlreadyUpvoted
        | ErrorCode::TooManyPins
        | ErrorCode::DuplicateMessage => 409,
        ErrorCode::BlockedContent | ErrorCode::LinkNotAllowed => 422,
        _ => 400,
    };
    let mut error = serde_json::json!({ "code": e.code, "message": e.message });
    if let Some(ms) = e.retry_after_ms {
        error["retry_after_ms"] = ms.into();
    }
    (status, to_json(&serde_json::json!({ "error": error })))
}
