//! The live side of the node: one tokio task per live actor (a room or a shop) owning its
//! wasmtime `Store`, events handled one at a time, fan-out batched by load, hibernation, the
//! alarm scheduler, and effects (payments, webhooks) handed to an [`EffectHost`] after commit.
//!
//! Rooms and shops are kept apart: each kind has its own compiled component and its own
//! database, so a chat flood's commits never queue in front of a checkout's.
//!
//! ```text
//!  socket task ──RoomMsg──▶ room task ──(commit)──▶ pending frames ──mailbox drained──▶ broadcast
//!      ▲                     owns Actor                                 channel of batches
//!      └──────────── Subscription: its own frames, in order, or a close ◀──────────┘
//! ```
//!
//! What a room's events release leaves as soon as the room has drained its mailbox: an idle
//! room answers at once, a busy one batches naturally (everything handled since the last batch),
//! and a backlog that never drains still releases a batch every [`NodeConfig::max_batch_delay`].
//! Batches of a room with a big audience are spaced by [`batch_gap`], as every batch wakes every
//! connection.
//! Every connection of a room reads the same batches from one bounded `broadcast` channel, so a
//! broadcast costs one send per batch however many viewers there are. A connection that falls
//! more than [`NodeConfig::queue_batches`] batches behind is closed with [`CLOSE_TOO_SLOW`]; the
//! room never waits for it. The client can reconnect and resume by `seq`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use liveshop_identity::Identity;
use tokio::sync::{broadcast, mpsc, oneshot};

/// A frame as it goes to sockets: shared by reference count, so a broadcast to thousands of
/// connections copies no text.
pub type Frame = axum::extract::ws::Utf8Bytes;

use crate::actor::{
    Actor, ActorError, ActorKind, ConnId, Connection, Effect, Env, HttpRequest, HttpResponse, Outcome,
};
use crate::metrics::Metrics;
use crate::sqlite::Db;

/// Close code for a connection that fell too far behind the room.
pub const CLOSE_TOO_SLOW: u16 = 4008;
/// Close code when the node shuts down or the room failed; the client should reconnect.
pub const CLOSE_RESTART: u16 = 1012;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// A room with no event for this long drops its actor; its sockets stay open.
    pub hibernate_after: Duration,
    /// Longest a room holds the frames its events produced while its mailbox never drains.
    pub max_batch_delay: Duration,
    /// Batches a connection may fall behind before it is closed.
    pub queue_batches: usize,
    pub max_conns_per_room: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            hibernate_after: Duration::from_secs(30),
            max_batch_delay: Duration::from_millis(5),
            queue_batches: 128,
            max_conns_per_room: 20_000,
        }
    }
}

/// One thing for a room's connections to do, in the order the room produced them.
#[derive(Debug)]
enum Out {
    All(Frame),
    To(ConnId, Frame),
    Close(ConnId, u16, Arc<str>),
}

type OutBatch = Arc<Vec<Out>>;

enum RoomMsg {
    Connect { conn: ConnId, who: Identity, resume: Option<(u64, u64)> },
    Message { conn: ConnId, text: String },
    Close { conn: ConnId },
    Request { req: HttpRequest, reply: oneshot::Sender<Option<HttpResponse>> },
    Alarm,
    EffectResult { kind: String, body: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("the room has {0} connections, its limit")]
    RoomFull(usize),
    #[error("the actor is not available")]
    Unavailable,
}

/// The kinds of actor a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One per live show: chat, polls, pins; high fan-out.
    Room,
    /// One per merchant: catalog, checkout, orders; strict state, few connections.
    Shop,
}

impl Kind {
    /// The prefix of the actor's storage name (`room/demo`) and of its alarm.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Room => "room",
            Kind::Shop => "shop",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        [Kind::Room, Kind::Shop].into_iter().find(|k| k.name() == name)
    }

    /// The metrics label of an event of this kind.
    fn event_label(self, event: &'static str) -> &'static str {
        match (self, event) {
            (Kind::Room, e) => e,
            (Kind::Shop, "connect") => "shop_connect",
            (Kind::Shop, "message") => "shop_message",
            (Kind::Shop, "close") => "shop_close",
            (Kind::Shop, "request") => "shop_request",
            (Kind::Shop, "alarm") => "shop_alarm",
            (Kind::Shop, _) => "shop_effect_result",
        }
    }
}

/// One kind of actor as the node runs it: the compiled component and the database it keeps
/// its actors' state in.
pub struct KindSetup {
    pub component: ActorKind,
    pub db: Db,
}

/// Carries out what actors ask of the world beyond their connections (`wit` `effects`): called
/// after the event that asked has committed. Results go back with [`Node::effect_result`].
/// Must not block: spawn the work.
pub trait EffectHost: Send + Sync + 'static {
    fn request(&self, node: &Node, kind: Kind, actor: &str, effect: String, body: String);
}

/// For a node whose actors ask for no effects (tests of rooms alone): each is logged and dropped.
pub struct NoEffects;

impl EffectHost for NoEffects {
    fn request(&self, _: &Node, kind: Kind, actor: &str, effect: String, _: String) {
        tracing::warn!(kind = kind.name(), actor, effect, "this node carries out no effects");
    }
}

#[derive(Clone)]
struct RoomHandle {
    tx: mpsc::Sender<RoomMsg>,
    out: broadcast::Sender<OutBatch>,
    conns: Arc<AtomicUsize>,
}

/// The node: its rooms, their storage, and the engine they run on. Cheap to clone.
#[derive(Clone)]
pub struct Node(Arc<Inner>);

struct Inner {
    config: NodeConfig,
    rooms: Slot,
    shops: Option<Slot>,
    env: Arc<dyn Env>,
    effects: Arc<dyn EffectHost>,
    next_conn: AtomicU64,
    metrics: Arc<Metrics>,
    alarms: mpsc::UnboundedSender<(ActorRef, Option<u64>)>,
}

/// One kind's component, database and live actors.
struct Slot {
    setup: KindSetup,
    actors: Mutex<HashMap<String, RoomHandle>>,
}

type ActorRef = (Kind, String);

impl Node {
    /// Starts the node's background work (the alarm scheduler, with every stored alarm) for
    /// rooms and, if given, shops. Must be called inside a tokio runtime.
    pub fn start(
        config: NodeConfig,
        rooms: KindSetup,
        shops: Option<KindSetup>,
        env: Arc<dyn Env>,
        metrics: Arc<Metrics>,
        effects: Arc<dyn EffectHost>,
    ) -> Result<Node, crate::storage::StorageError> {
        let (alarms, alarm_rx) = mpsc::unbounded_channel();
        let slot = |setup| Slot { setup, actors: Mutex::new(HashMap::new()) };
        let node = Node(Arc::new(Inner {
            config,
            rooms: slot(rooms),
            shops: shops.map(slot),
            env,
            effects,
            next_conn: AtomicU64::new(1),
            metrics,
            alarms,
        }));
        for slot in std::iter::once(&node.0.rooms).chain(&node.0.shops) {
            for (actor, at) in slot.setup.db.alarms()? {
                let parsed = actor.split_once('/').and_then(|(k, id)| Some((Kind::parse(k)?, id)));
                if let Some((kind, id)) = parsed {
                    node.set_alarm(kind, id, Some(at));
                }
            }
        }
        tokio::spawn(schedule_alarms(node.clone(), alarm_rx));
        Ok(node)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Opens a connection to actor `id` of `kind` for `who`. Frames arrive through the returned
    /// [`Subscription`]; the first is the actor's answer (a room's `welcome`, a shop's
    /// products), or an error and a close.
    pub async fn connect(
        &self,
        kind: Kind,
        id: &str,
        who: Identity,
        resume: Option<(u64, u64)>,
    ) -> Result<Subscription, NodeError> {
        let handle = self.actor(kind, id)?;
        let limit = self.0.config.max_conns_per_room;
        if handle.conns.fetch_add(1, Ordering::SeqCst) >= limit {
            handle.conns.fetch_sub(1, Ordering::SeqCst);
            return Err(NodeError::RoomFull(limit));
        }
        let conn = ConnId(self.0.next_conn.fetch_add(1, Ordering::Relaxed));
        // Subscribe before the room hears of us, so our welcome cannot be missed.
        let rx = handle.out.subscribe();
        self.0.metrics.connections.inc();
        let guard = ConnGuard { node: self.clone(), conn, handle: handle.clone(), room_closed: false };
        handle.tx.send(RoomMsg::Connect { conn, who, resume }).await.map_err(|_| NodeError::Unavailable)?;
        Ok(Subscription { conn, rx, welcomed: false, pending_close: None, guard })
    }

    /// An HTTP request for an actor (a room's `GET /state`, a shop's `POST /checkout`).
    pub async fn request(&self, kind: Kind, id: &str, req: HttpRequest) -> Result<HttpResponse, NodeError> {
        let (reply, rx) = oneshot::channel();
        let msg = RoomMsg::Request { req, reply };
        self.actor(kind, id)?.tx.send(msg).await.map_err(|_| NodeError::Unavailable)?;
        rx.await.ok().flatten().ok_or(NodeError::Unavailable)
    }

    /// Tells when actor `id` releases frames (its events' output, once per batch), for hosts that
    /// wait on a room without holding a connection to it: the public feed.
    pub fn releases(&self, kind: Kind, id: &str) -> Result<Releases, NodeError> {
        Ok(Releases(self.actor(kind, id)?.out.subscribe()))
    }

    /// Reports what became of an effect the actor asked for ([`EffectHost`]).
    pub async fn effect_result(
        &self,
        kind: Kind,
        id: &str,
        result: &str,
        body: String,
    ) -> Result<(), NodeError> {
        let msg = RoomMsg::EffectResult { kind: result.to_string(), body };
        self.actor(kind, id)?.tx.send(msg).await.map_err(|_| NodeError::Unavailable)
    }

    fn set_alarm(&self, kind: Kind, id: &str, at: Option<u64>) {
        // The scheduler only stops with the node.
        let _ = self.0.alarms.send(((kind, id.to_string()), at));
    }

    fn slot(&self, kind: Kind) -> Option<&Slot> {
        match kind {
            Kind::Room => Some(&self.0.rooms),
            Kind::Shop => self.0.shops.as_ref(),
        }
    }

    fn actor(&self, kind: Kind, id: &str) -> Result<RoomHandle, NodeError> {
        let slot = self.slot(kind).ok_or(NodeError::Unavailable)?;
        let mut actors = slot.actors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = actors.get(id).filter(|h| !h.tx.is_closed()) {
            return Ok(h.clone());
        }
        let (tx, rx) = mpsc::channel(1024);
        let (out, _) = broadcast::channel(self.0.config.queue_batches);
        let handle = RoomHandle { tx, out, conns: Arc::new(AtomicUsize::new(0)) };
        actors.insert(id.to_string(), handle.clone());
        tokio::spawn(RoomTask::new(self.clone(), kind, id.to_string(), handle.clone()).run(rx));
        Ok(handle)
    }
}

/// See [`Node::releases`].
pub struct Releases(broadcast::Receiver<OutBatch>);

impl Releases {
    /// Waits for the actor's next release. False when its task is gone (a new one takes its
    /// place on the next request).
    pub async fn next(&mut self) -> bool {
        match self.0.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => false,
        }
    }
}

/// Schedules every actor's one alarm and delivers it when due, reviving the actor if needed.
async fn schedule_alarms(node: Node, mut rx: mpsc::UnboundedReceiver<(ActorRef, Option<u64>)>) {
    let mut by_room: HashMap<ActorRef, u64> = HashMap::new();
    let mut due: BTreeSet<(u64, ActorRef)> = BTreeSet::new();
    loop {
        let next = due.first().cloned();
        let wait = next.as_ref().map(|(at, _)| node.0.env.real_delay(at.saturating_sub(node.0.env.now())));
        tokio::select! {
            msg = rx.recv() => {
                let Some((room, at)) = msg else { return };
                if let Some(old) = by_room.remove(&room) {
                    due.remove(&(old, room.clone()));
                }
                if let Some(at) = at {
                    by_room.insert(room.clone(), at);
                    due.insert((at, room));
                }
            }
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {
                let (at, room) = next.expect("a wait implies an alarm");
                due.remove(&(at, room.clone()));
                by_room.remove(&room);
                // One busy actor must not hold up every other actor's alarms.
                let Ok(handle) = node.actor(room.0, &room.1) else { continue };
                let tx = handle.tx;
                if let Err(mpsc::error::TrySendError::Full(msg)) = tx.try_send(RoomMsg::Alarm) {
                    tokio::spawn(async move {
                        let _ = tx.send(msg).await;
                    });
                }
            }
        }
    }
}

/// A connection's end of a room: its frames in order, filtered from the room's batches.
pub struct Subscription {
    conn: ConnId,
    rx: broadcast::Receiver<OutBatch>,
    /// Frames to everyone are skipped until this connection's own welcome arrives: they were
    /// produced before it joined, and its welcome already accounts for them.
    welcomed: bool,
    /// A close that follows frames already handed out.
    pending_close: Option<(u16, String)>,
    guard: ConnGuard,
}

/// What a connection must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Frames(Vec<Frame>),
    Close(u16, String),
}

impl Subscription {
    /// The next frames for this connection, or why it must close. Cancel-safe.
    pub async fn next(&mut self) -> Delivery {
        if let Some((code, reason)) = self.pending_close.take() {
            return Delivery::Close(code, reason);
        }
        loop {
            let batch = match self.rx.recv().await {
                Ok(b) => b,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.guard.node.0.metrics.slow_consumers.inc();
                    return Delivery::Close(CLOSE_TOO_SLOW, "too slow: reconnect and resume".into());
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Delivery::Close(CLOSE_RESTART, "the room restarted: reconnect and resume".into());
                }
            };
            let mut frames = Vec::new();
            for out in batch.iter() {
                match out {
                    Out::All(f) if self.welcomed => frames.push(f.clone()),
                    Out::To(c, f) if *c == self.conn => {
                        self.welcomed = true;
                        frames.push(f.clone());
                    }
                    Out::Close(c, code, reason) if *c == self.conn => {
                        self.guard.room_closed = true;
                        if frames.is_empty() {
                            return Delivery::Close(*code, reason.to_string());
                        }
                        // The frames before a close (its reason) go out first.
                        self.pending_close = Some((*code, reason.to_string()));
                        break;
                    }
                    _ => {}
                }
            }
            if !frames.is_empty() {
                self.guard.node.0.metrics.frames_sent.inc_by(frames.len() as u64);
                return Delivery::Frames(frames);
            }
        }
    }

    /// Sends a text frame from the client to the room.
    pub async fn send(&self, text: String) -> Result<(), NodeError> {
        let msg = RoomMsg::Message { conn: self.conn, text };
        self.guard.handle.tx.send(msg).await.map_err(|_| NodeError::Unavailable)
    }
}

/// Tells the room a connection is gone when the socket's task drops its subscription.
struct ConnGuard {
    node: Node,
    conn: ConnId,
    handle: RoomHandle,
    /// The room closed this connection itself; it needs no `Close` back.
    room_closed: bool,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.handle.conns.fetch_sub(1, Ordering::SeqCst);
        self.node.0.metrics.connections.dec();
        if self.room_closed {
            return;
        }
        let msg = RoomMsg::Close { conn: self.conn };
        if let Err(mpsc::error::TrySendError::Full(msg)) = self.handle.tx.try_send(msg) {
            let tx = self.handle.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(msg).await;
            });
        }
    }
}

/// Connection wake-ups a room's batches may cause per second: every batch wakes every
/// connection of the room (each picks its frames from it), so a big audience gets fewer, fuller
/// batches and a small room gets each event's frames at once.
const WAKEUPS_PER_SEC: f64 = 100_000.0;

/// The least time between two batches of a room read by `receivers` connections: 0.4 ms for 40,
/// 50 ms for 5,000 (what a fixed 50 ms tick gave every room before).
fn batch_gap(receivers: usize) -> Duration {
    Duration::from_secs_f64(receivers as f64 / WAKEUPS_PER_SEC)
}

/// Most messages taken into one group commit: bounds how long the first waits for its ack.
const GROUP_MAX: usize = 64;

/// One event as it ran, with what its release or failure needs.
struct Ran {
    kind: &'static str,
    reply: Option<oneshot::Sender<Option<HttpResponse>>>,
    connecting: Option<ConnId>,
    is_alarm: bool,
}

/// The task that owns one actor (a room or a shop; the name is the common case).
struct RoomTask {
    node: Node,
    kind: Kind,
    id: String,
    handle: RoomHandle,
    actor: Option<Actor>,
    /// The connections the host holds for this room, to revive the actor with.
    conns: BTreeMap<ConnId, Connection>,
    pending: Vec<Out>,
    /// When the current actor was instantiated, until its first event is done.
    revived_at: Option<Instant>,
}

impl RoomTask {
    fn new(node: Node, kind: Kind, id: String, handle: RoomHandle) -> Self {
        RoomTask {
            node,
            kind,
            id,
            handle,
            actor: None,
            conns: BTreeMap::new(),
            pending: Vec::new(),
            revived_at: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<RoomMsg>) {
        let config = self.node.0.config.clone();
        let mut idle_since = Instant::now();
        // When the oldest frame of the pending batch was released, when the last batch left, and
        // when the pending one is due, once it waits only for the audience's gap.
        let (mut batch_since, mut last_batch, mut due) = (None, None::<Instant>, None);
        loop {
            let hibernate_at = tokio::time::Instant::from_std(idle_since + config.hibernate_after);
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.handle_group(msg, &mut rx);
                    idle_since = Instant::now();
                    if self.pending.is_empty() || due.is_some() {
                        continue;
                    }
                    let since = *batch_since.get_or_insert(idle_since);
                    if !rx.is_empty() && since.elapsed() < config.max_batch_delay {
                        continue;
                    }
                    let at = last_batch.map(|t| t + batch_gap(self.handle.out.receiver_count()));
                    match at.filter(|at| *at > Instant::now()) {
                        Some(at) => due = Some(tokio::time::Instant::from_std(at)),
                        None => {
                            self.flush();
                            (batch_since, last_batch) = (None, Some(Instant::now()));
                        }
                    }
                }
                _ = tokio::time::sleep_until(due.unwrap_or(hibernate_at)), if due.is_some() => {
                    self.flush();
                    (batch_since, last_batch, due) = (None, Some(Instant::now()), None);
                }
                // The task itself stays (a parked task is a few hundred bytes, and rooms exist
                // only for shows): ending it could race a sender holding its handle.
                _ = tokio::time::sleep_until(hibernate_at), if self.actor.is_some() => {
                    self.actor = None;
                    self.node.0.metrics.hibernations.inc();
                    self.node.0.metrics.live_actors.dec();
                }
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = Arc::new(std::mem::take(&mut self.pending));
        // No receivers is fine: nobody is connected.
        let _ = self.handle.out.send(batch);
    }

    fn actor(&mut self) -> Option<&mut Actor> {
        if self.actor.is_none() {
            let started = Instant::now();
            let setup =
                &self.node.slot(self.kind).expect("a task exists only for a kind the node runs").setup;
            let storage = Box::new(setup.db.actor(&format!("{}/{}", self.kind.name(), self.id)));
            match setup.component.instantiate(
                &self.id,
                storage,
                self.conns.values().cloned(),
                self.node.0.env.clone(),
            ) {
                Ok(a) => {
                    self.node.0.metrics.revivals.inc();
                    self.node.0.metrics.live_actors.inc();
                    // The guest restores its state lazily, in the first event: the revival is
                    // timed when that event is done.
                    self.revived_at = Some(started);
                    self.actor = Some(a);
                }
                Err(e) => {
                    tracing::error!(kind = self.kind.name(), id = %self.id, "cannot start the actor: {e}");
                    return None;
                }
            }
        }
        self.actor.as_mut()
    }

    /// Handles `first` and whatever else waits in the mailbox (up to [`GROUP_MAX`]) as one
    /// group: one commit for all, then their outcomes released in order. An idle room's group
    /// is its one event; a busy room's backlog shares the cost of a commit.
    fn handle_group(&mut self, first: RoomMsg, rx: &mut mpsc::Receiver<RoomMsg>) {
        let mut held = Vec::new();
        let (mut next, mut taken) = (Some(first), 0);
        while let Some(msg) = next.take() {
            taken += 1;
            // A live actor groups; one revived by this event commits that event on its own.
            if let Some(actor) = self.actor.as_mut() {
                actor.begin_group();
            }
            if let Some((result, ran)) = self.run_event(msg) {
                match result {
                    Some(Ok(outcome)) => held.push((outcome, ran)),
                    failed => {
                        // Its group's earlier events are whole: commit and release them first.
                        self.commit_group(&mut held);
                        if let Some(Err(e)) = failed {
                            tracing::warn!(kind = self.kind.name(), id = %self.id, "event {} failed: {e}", ran.kind);
                            self.node.0.metrics.event_failures.inc();
                        }
                        self.fail(ran);
                    }
                }
            }
            if taken < GROUP_MAX {
                next = rx.try_recv().ok();
            }
        }
        self.commit_group(&mut held);
    }

    /// Ends the actor's group: commits the events of `held` together and releases them; if the
    /// commit fails, none of them happened.
    fn commit_group(&mut self, held: &mut Vec<(Outcome, Ran)>) {
        let started = Instant::now();
        // Held events have the actor that ran them: only `fail` drops it, after committing.
        // With nothing held the batch is empty: the call only ends the group.
        let committed = self.actor.as_mut().map(Actor::commit_group);
        if held.is_empty() {
            return;
        }
        self.node.0.metrics.commit(held.len(), started.elapsed());
        match committed {
            Some(Ok(())) => {
                for (outcome, ran) in held.drain(..) {
                    self.release(outcome, ran.reply);
                }
            }
            failed => {
                let why = failed.and_then(Result::err).map_or("no actor".into(), |e| e.to_string());
                tracing::warn!(kind = self.kind.name(), id = %self.id, "{} events not committed: {why}", held.len());
                self.node.0.metrics.event_failures.inc_by(held.len() as u64);
                for (_, ran) in held.drain(..) {
                    self.fail(ran);
                }
            }
        }
    }

    /// Runs one event on the actor (reviving it if asleep); `None` when the message is for a
    /// connection the room no longer has. Its result is `None` when the actor could not be
    /// started (logged where that happened).
    fn run_event(&mut self, msg: RoomMsg) -> Option<(Option<Result<Outcome, ActorError>>, Ran)> {
        let started = Instant::now();
        // What a failure of this event must undo or retry: a connection being accepted, or one
        // whose frame went unanswered (its client would wait for an ack that never comes; closed,
        // it reconnects and resumes).
        let connecting = match &msg {
            RoomMsg::Connect { conn, .. } | RoomMsg::Message { conn, .. } => Some(*conn),
            _ => None,
        };
        let is_alarm = matches!(msg, RoomMsg::Alarm);
        let (kind, result, reply) = match msg {
            RoomMsg::Connect { conn, who, resume } => {
                let now = self.node.0.env.now();
                self.conns.insert(conn, Connection { id: conn, who: who.clone(), connected_at: now });
                ("connect", self.actor().map(|a| a.on_connect(conn, who, resume)), None)
            }
            RoomMsg::Message { conn, text } => {
                if !self.conns.contains_key(&conn) {
                    return None;
                }
                ("message", self.actor().map(|a| a.on_message(conn, &text)), None)
            }
            RoomMsg::Close { conn } => {
                if !self.conns.contains_key(&conn) {
                    return None;
                }
                // Revived (if asleep) while the closing connection is still among those the room
                // gets back, so the room sees it leave: its visit ends and counts.
                let _ = self.actor();
                self.conns.remove(&conn);
                ("close", self.actor().map(|a| a.on_close(conn)), None)
            }
            RoomMsg::Request { req, reply } => {
                ("request", self.actor().map(|a| a.on_request(req)), Some(reply))
            }
            RoomMsg::Alarm => ("alarm", self.actor().map(|a| a.on_alarm()), None),
            RoomMsg::EffectResult { kind, body } => {
                ("effect_result", self.actor().map(|a| a.on_effect_result(&kind, &body)), None)
            }
        };
        self.node.0.metrics.event(self.kind.event_label(kind), started.elapsed());
        if let Some(at) = self.revived_at.take() {
            self.node.0.metrics.revive_seconds.observe(at.elapsed().as_secs_f64());
        }
        Some((result, Ran { kind, reply, connecting, is_alarm }))
    }

    /// An event that did not happen: the actor, whose memory may be ahead of storage, is dropped
    /// (revived on the next event); whoever waits on the event is told.
    fn fail(&mut self, ran: Ran) {
        if self.actor.take().is_some() {
            self.node.0.metrics.live_actors.dec();
        }
        if let Some(reply) = ran.reply {
            let _ = reply.send(None);
        }
        if let Some(conn) = ran.connecting {
            self.conns.remove(&conn);
            self.pending.push(Out::Close(conn, CLOSE_RESTART, "the room failed: reconnect".into()));
        }
        // The stored alarm survived the failed event; try it again shortly.
        if ran.is_alarm {
            self.node.set_alarm(self.kind, &self.id, Some(self.node.0.env.now() + 1000));
        }
    }

    fn release(&mut self, outcome: Outcome, reply: Option<oneshot::Sender<Option<HttpResponse>>>) {
        let Outcome { effects, alarm, reply: response } = outcome;
        for effect in effects {
            self.pending.push(match effect {
                Effect::Send { to, frame } => Out::To(to, frame.into()),
                Effect::Broadcast { frame } => Out::All(frame.into()),
                Effect::Close { to, code, reason } => {
                    self.conns.remove(&to);
                    Out::Close(to, code, reason.into())
                }
                Effect::Request { kind, body } => {
                    self.node.0.effects.request(&self.node, self.kind, &self.id, kind, body);
                    continue;
                }
            });
        }
        if let Some(at) = alarm {
            self.node.set_alarm(self.kind, &self.id, at);
        }
        if let Some(reply) = reply {
            let _ = reply.send(response);
        }
    }
}
