//! Durable actors on wasmtime: components built to the `durable-actor` world (`wit/actor.wit`),
//! one [`wasmtime::Store`] per live actor id.
//!
//! ```text
//!  Runtime (Engine: pooling allocator, epoch ticker)
//!    └─ ActorKind (Component + InstancePre: linked once, instantiated in microseconds)
//!         └─ Actor (Store + instance for one id)
//!              event ─▶ guest ─▶ imports buffer writes + effects ─▶ commit ─▶ Outcome
//! ```
//!
//! Each event runs under an epoch deadline and a memory limit. Writes go to a transaction;
//! frames, closes and the reply wait in the store until the batch is committed (the output gate),
//! so a caller sees an [`Outcome`] only for an event whose effects are durable; inside a group
//! ([`Actor::begin_group`]) the caller holds the outcomes until the group's one commit. An event that
//! traps or fails to commit releases nothing and *poisons* the actor: its in-guest state may be
//! ahead of storage, so the caller drops it and revives a new one from storage.
//!
//! Time stands still during an event: `env.now` returns one value per event, which is also the
//! `connected-at` recorded for a connection accepted by `on-connect`.

use std::sync::Arc;
use std::time::Duration;

use liveshop_identity::Identity;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::host::bindings::liveshop::actor::types;
use crate::host::bindings::{DurableActor, DurableActorPre};
use crate::host::{HostState, to_wit_identity};
use crate::storage::{Storage, StorageError};

/// How often the epoch ticks; event deadlines are counted in these ticks.
const TICK: Duration = Duration::from_millis(5);
/// Core instances and tables a component is given per actor in the pool (one memory). A Rust
/// component has a main module plus a couple of small shims made by `wit-component`.
const CORE_INSTANCES_PER_ACTOR: u32 = 8;
const TABLES_PER_ACTOR: u32 = 4;
/// Bytes of each table slot kept resident between actors (a room's function table fits).
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// A connection the host holds open for an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub id: ConnId,
    pub who: Identity,
    /// Milliseconds since the Unix epoch.
    pub connected_at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// Below the actor's base, with the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub who: Option<Identity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Something an event asked the host to do to its connections, released after commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Send {
        to: ConnId,
        frame: String,
    },
    /// To every connection open when the effect is released.
    Broadcast {
        frame: String,
    },
    Close {
        to: ConnId,
        code: u16,
        reason: String,
    },
    /// A call beyond the connections (`effects.request`): a payment, a webhook.
    Request {
        kind: String,
        body: String,
    },
}

/// What one committed event released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub effects: Vec<Effect>,
    /// `Some(new alarm)` when the event set or cleared the alarm (already persisted).
    pub alarm: Option<Option<u64>>,
    /// The answer to `on_request`.
    pub reply: Option<HttpResponse>,
}

impl Outcome {
    /// The frames `conn` receives from this event, in order, assuming it was open at the start.
    pub fn frames_to(&self, conn: ConnId) -> Vec<&str> {
        let mut frames = Vec::new();
        for effect in &self.effects {
            match effect {
                Effect::Send { to, frame } if *to == conn => frames.push(frame.as_str()),
                Effect::Broadcast { frame } => frames.push(frame.as_str()),
                Effect::Close { to, .. } if *to == conn => break,
                _ => {}
            }
        }
        frames
    }
}

/// The clock and the randomness an actor sees; tests pass fixed ones.
pub trait Env: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> u64;
    fn fill_random(&self, buf: &mut [u8]);
    /// How long to really wait for `ms` of this clock to pass. The real clock waits that long;
    /// a test clock running faster waits less, so a schedule of hours can be tested in seconds.
    fn real_delay(&self, ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
}

/// The real clock and the operating system's randomness.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnv;

impl Env for SystemEnv {
    fn now(&self) -> u64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.map_or(0, |d| d.as_millis() as u64)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        getrandom::fill(buf).expect("the operating system has no randomness to give");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("cannot set up the wasm engine: {0}")]
    Engine(#[source] wasmtime::Error),
    #[error("not a durable-actor component: {0}")]
    Component(#[source] wasmtime::Error),
    #[error("cannot instantiate actor {id}: {source}")]
    Instantiate { id: String, source: wasmtime::Error },
    #[error("actor {id} ran past its deadline of {deadline:?} in {event}")]
    Deadline { id: String, event: &'static str, deadline: Duration },
    #[error("actor {id} went over its memory limit of {limit} bytes in {event}")]
    Memory { id: String, event: &'static str, limit: usize },
    #[error("actor {id} trapped in {event}: {source:?}")]
    Trap { id: String, event: &'static str, source: wasmtime::Error },
    #[error("actor {id} could not commit {event}: {source}")]
    Commit { id: String, event: &'static str, source: StorageError },
    #[error("actor {id} failed earlier and must be revived from storage")]
    Poisoned { id: String },
}

/// Limits and sizing of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Live actors at once: the size of the instance pool.
    pub max_actors: u32,
    /// Linear memory one actor may grow to.
    pub memory_bytes: usize,
    /// Wall time one event may run before it traps.
    pub event_deadline: Duration,
    /// Pre-allocated instance slots (the default); off means allocate on demand.
    pub pooling: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_actors: 1000,
            memory_bytes: 64 << 20,
            event_deadline: Duration::from_millis(200),
            pooling: true,
        }
    }
}

/// The engine every actor kind and actor of a node shares.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    config: RuntimeConfig,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, ActorError> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(config.max_actors)
                .total_memories(config.max_actors)
                .total_core_instances(config.max_actors.saturating_mul(CORE_INSTANCES_PER_ACTOR))
                .total_tables(config.max_actors.saturating_mul(TABLES_PER_ACTOR))
                .max_memory_size(config.memory_bytes);
            // Zeroing a slot's tables in place on reuse is cheaper than handing their pages back
            // to the kernel and faulting them in again: 10.2 -> 6.0 µs per instantiation.
            pool.table_keep_resident(TABLE_KEEP_RESIDENT);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm).map_err(ActorError::Engine)?;
        spawn_ticker(&engine);
        Ok(Self { engine, config })
    }

    /// Compiles a component and links it once, so each [`ActorKind::instantiate`] is cheap.
    pub fn load(&self, wasm: &[u8]) -> Result<ActorKind, ActorError> {
        let component = Component::new(&self.engine, wasm).map_err(ActorError::Component)?;
        let mut linker = Linker::<HostState>::new(&self.engine);
        DurableActor::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(ActorError::Component)?;
        // Rust's std makes components import `wasi:cli` and `wasi:io` (stdio, environment, exit)
        // for paths a room only takes when it panics: its panic hook reads the environment
        // and prints. Calling one traps, which ends the panicking event as the panic would;
        // the trap's wasm backtrace still shows where the panic came from.
        linker.define_unknown_imports_as_traps(&component).map_err(ActorError::Component)?;
        let pre = linker.instantiate_pre(&component).map_err(ActorError::Component)?;
        let pre = DurableActorPre::new(pre).map_err(ActorError::Component)?;
        let ticks = self.config.event_deadline.as_millis().div_ceil(TICK.as_millis()).max(1);
        Ok(ActorKind {
            pre,
            deadline: self.config.event_deadline,
            deadline_ticks: ticks as u64,
            memory_bytes: self.config.memory_bytes,
        })
    }
}

/// Advances the engine's epoch every [`TICK`] while the engine (any store of it) is alive.
fn spawn_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("cannot spawn the epoch ticker thread");
}

/// One compiled, linked component (the room, the shop) from which actors are made.
#[derive(Clone)]
pub struct ActorKind {
    pre: DurableActorPre<HostState>,
    deadline: Duration,
    deadline_ticks: u64,
    memory_bytes: usize,
}

impl ActorKind {
    /// Creates the actor `id` over its storage, with the connections the host still holds.
    /// Runs no event: the guest restores itself from storage on its first one.
    pub fn instantiate(
        &self,
        id: &str,
        storage: Box<dyn Storage>,
        connections: impl IntoIterator<Item = Connection>,
        env: Arc<dyn Env>,
    ) -> Result<Actor, ActorError> {
        let connections = connections.into_iter().map(|c| (c.id, c)).collect();
        let state = HostState::new(id, storage, connections, env, self.memory_bytes);
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        // Start functions run during instantiation, so they get a deadline too.
        store.set_epoch_deadline(self.deadline_ticks);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|source| ActorError::Instantiate { id: id.to_owned(), source })?;
        Ok(Actor { store, instance, kind: self.clone(), poisoned: false, grouping: false })
    }
}

/// One live actor: its store, its instance and the connections the host holds for it.
/// `Send`, so each can live in its own task.
pub struct Actor {
    store: Store<HostState>,
    instance: DurableActor,
    kind: ActorKind,
    poisoned: bool,
    /// Events since [`Actor::begin_group`] hold their writes for [`Actor::commit_group`].
    grouping: bool,
}

const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<Actor>();
};

impl Actor {
    pub fn id(&self) -> &str {
        &self.store.data().id
    }

    /// The open connections, to revive this actor with after it is dropped.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.store.data().connections.values()
    }

    /// A new connection; the actor answers on it, or closes it to refuse. It counts as open
    /// from the release of this event on (unless closed by it), so `connections.list` during
    /// the event does not include it yet.
    pub fn on_connect(
        &mut self,
        conn: ConnId,
        who: Identity,
        resume_from: Option<(u64, u64)>,
    ) -> Result<Outcome, ActorError> {
        let guest_who = to_wit_identity(&who);
        let (outcome, ()) = self.event(
            "on-connect",
            |state| {
                state.connecting = Some(Connection { id: conn, who, connected_at: state.now });
            },
            |actor, store| {
                actor.liveshop_actor_actor().call_on_connect(store, conn.0, &guest_who, resume_from)
            },
        )?;
        Ok(outcome)
    }

    pub fn on_message(&mut self, conn: ConnId, text: &str) -> Result<Outcome, ActorError> {
        self.event(
            "on-message",
            |_| {},
            |actor, store| actor.liveshop_actor_actor().call_on_message(store, conn.0, text),
        )
        .map(|(outcome, ())| outcome)
    }

    /// The host closed `conn` (the peer went away); it is gone before the event runs.
    pub fn on_close(&mut self, conn: ConnId) -> Result<Outcome, ActorError> {
        self.store.data_mut().connections.remove(&conn);
        self.event(
            "on-close",
            |_| {},
            |actor, store| actor.liveshop_actor_actor().call_on_close(store, conn.0),
        )
        .map(|(outcome, ())| outcome)
    }

    pub fn on_request(&mut self, req: HttpRequest) -> Result<Outcome, ActorError> {
        let req = types::HttpRequest {
            method: req.method,
            path: req.path,
            headers: req.headers,
            body: req.body,
            who: req.who.as_ref().map(to_wit_identity),
        };
        let (mut outcome, reply) = self.event(
            "on-request",
            |_| {},
            |actor, store| actor.liveshop_actor_actor().call_on_request(store, &req),
        )?;
        outcome.reply = Some(HttpResponse { status: reply.status, headers: reply.headers, body: reply.body });
        Ok(outcome)
    }

    /// The alarm fired. It counts as cleared unless the event sets it again; if the event
    /// fails, it stays set, so it fires again (at least once).
    pub fn on_alarm(&mut self) -> Result<Outcome, ActorError> {
        self.event(
            "on-alarm",
            |state| state.tx.set_alarm(None),
            |actor, store| actor.liveshop_actor_actor().call_on_alarm(store),
        )
        .map(|(outcome, ())| outcome)
    }

    /// What became of an effect this actor asked for.
    pub fn on_effect_result(&mut self, kind: &str, body: &str) -> Result<Outcome, ActorError> {
        self.event(
            "on-effect-result",
            |_| {},
            |actor, store| actor.liveshop_actor_actor().call_on_effect_result(store, kind, body),
        )
        .map(|(outcome, ())| outcome)
    }

    /// Starts a group commit: the events that follow keep their writes (later events read them)
    /// and their outcomes are **not yet durable**; [`Actor::commit_group`] commits them all in
    /// one batch, and only then may the caller release those outcomes. One commit for many
    /// events is what lets a busy room take tens of thousands of commands a second.
    pub fn begin_group(&mut self) {
        self.grouping = true;
    }

    /// Commits the writes of every event that succeeded since [`Actor::begin_group`], even if a
    /// later one failed (the events before it are whole). On `Ok` their outcomes may be
    /// released; on `Err` none of them happened, and the actor is poisoned.
    pub fn commit_group(&mut self) -> Result<(), ActorError> {
        self.grouping = false;
        let state = self.store.data_mut();
        let batch = state.tx.take_held();
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(source) = state.storage.commit(batch) {
            self.poisoned = true;
            return Err(ActorError::Commit { id: state.id.clone(), event: "a group of events", source });
        }
        Ok(())
    }

    /// Runs one event to completion: call, commit (or hold, in a group), then release.
    fn event<R>(
        &mut self,
        event: &'static str,
        prepare: impl FnOnce(&mut HostState),
        call: impl FnOnce(&DurableActor, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<(Outcome, R), ActorError> {
        if self.poisoned {
            return Err(ActorError::Poisoned { id: self.id().to_owned() });
        }
        let state = self.store.data_mut();
        state.now = state.env.now();
        state.output_bytes = 0;
        state.limiter.exceeded = false;
        prepare(state);
        self.store.set_epoch_deadline(self.kind.deadline_ticks);
        let result = call(&self.instance, &mut self.store);

        let state = self.store.data_mut();
        let effects = std::mem::take(&mut state.effects);
        let connecting = state.connecting.take();
        let value = match result {
            Ok(value) => value,
            Err(source) => {
                // Its writes go; those of the group's earlier events stay held.
                state.tx.take();
                self.poisoned = true;
                let id = state.id.clone();
                return Err(if source.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    ActorError::Deadline { id, event, deadline: self.kind.deadline }
                } else if std::mem::take(&mut state.limiter.exceeded) {
                    ActorError::Memory { id, event, limit: self.kind.memory_bytes }
                } else {
                    ActorError::Trap { id, event, source }
                });
            }
        };
        let alarm;
        if self.grouping {
            alarm = state.tx.pending_alarm();
            state.tx.hold();
        } else {
            let batch = state.tx.take();
            alarm = batch.alarm;
            if let Err(source) = state.storage.commit(batch) {
                self.poisoned = true;
                return Err(ActorError::Commit { id: state.id.clone(), event, source });
            }
        }

        // Released (in a group, as good as: if the group's commit fails the actor is dropped):
        // the connection list follows what the event did to it.
        if let Some(conn) = connecting {
            state.connections.insert(conn.id, conn);
        }
        for effect in &effects {
            if let Effect::Close { to, .. } = effect {
                state.connections.remove(to);
            }
        }
        Ok((Outcome { effects, alarm, reply: None }, value))
    }
}
