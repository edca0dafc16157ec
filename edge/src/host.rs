//! What an actor's imports do: the state of one store behind `storage`, `alarm`,
//! `connections`, `effects` and `env`. Everything an event produces is buffered here until
//! [`crate::Actor`] has committed it.

use std::collections::BTreeMap;
use std::sync::Arc;

use liveshop_identity::{Identity, Role};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use crate::actor::{ConnId, Connection, Effect, Env};
use crate::storage::{Storage, Transaction};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "durable-actor",
        // Storage reads can fail in the backend, and a guest asking for absurd amounts is
        // stopped; both become traps, so every import is trappable.
        imports: { default: trappable },
    });
}

use bindings::liveshop::actor::{alarm, connections, effects, env, storage, types};

/// Most bytes of writes and frames one event may leave with the host. The memory limit only
/// bounds the guest; this bounds what a runaway loop piles up on the host before its deadline.
const MAX_EVENT_OUTPUT_BYTES: usize = 32 << 20;
/// Most bytes one `env.random` call may ask for.
const MAX_RANDOM_LEN: u32 = 4096;

/// Everything the imports of one actor's store reach.
pub(crate) struct HostState {
    pub(crate) id: String,
    pub(crate) storage: Box<dyn Storage>,
    pub(crate) tx: Transaction,
    pub(crate) connections: BTreeMap<ConnId, Connection>,
    /// The connection `on-connect` is running for: it may be sent to, not yet listed.
    pub(crate) connecting: Option<Connection>,
    /// Held back until the event's writes are committed.
    pub(crate) effects: Vec<Effect>,
    /// Bytes of writes and effects the running event produced.
    pub(crate) output_bytes: usize,
    /// The time of the running event.
    pub(crate) now: u64,
    pub(crate) env: Arc<dyn Env>,
    pub(crate) limiter: Limiter,
}

impl HostState {
    pub(crate) fn new(
        id: &str,
        storage: Box<dyn Storage>,
        connections: BTreeMap<ConnId, Connection>,
        env: Arc<dyn Env>,
        memory_bytes: usize,
    ) -> Self {
        HostState {
            id: id.to_owned(),
            storage,
            tx: Transaction::default(),
            connections,
            connecting: None,
            effects: Vec::new(),
            output_bytes: 0,
            now: 0,
            env,
            limiter: Limiter {
                limits: StoreLimitsBuilder::new().memory_size(memory_bytes).build(),
                exceeded: false,
            },
        }
    }

    pub(crate) fn is_open(&self, conn: ConnId) -> bool {
        self.connections.contains_key(&conn) || self.connecting.as_ref().is_some_and(|c| c.id == conn)
    }

    /// Counts `bytes` against [`MAX_EVENT_OUTPUT_BYTES`]; past it, the event traps.
    fn output(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.output_bytes = self.output_bytes.saturating_add(bytes);
        if self.output_bytes > MAX_EVENT_OUTPUT_BYTES {
            wasmtime::bail!("the event produced more than {MAX_EVENT_OUTPUT_BYTES} bytes of output");
        }
        Ok(())
    }
}

/// [`StoreLimits`] that remembers it refused, so the failed event reads as over memory
/// rather than as the guest's own `unreachable` after its allocator gave up.
pub(crate) struct Limiter {
    pub(crate) limits: StoreLimits,
    pub(crate) exceeded: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.exceeded |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

impl types::Host for HostState {}

impl storage::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.tx.get(&*self.storage, &key)?)
    }

    fn list(&mut self, prefix: String) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        Ok(self.tx.list(&*self.storage, &prefix)?)
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.output(key.len() + value.len())?;
        self.tx.put(key, value);
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.output(key.len())?;
        self.tx.delete(key);
        Ok(())
    }
}

impl alarm::Host for HostState {
    fn set(&mut self, at: u64) -> wasmtime::Result<()> {
        self.tx.set_alarm(Some(at));
        Ok(())
    }

    fn clear(&mut self) -> wasmtime::Result<()> {
        self.tx.set_alarm(None);
        Ok(())
    }

    fn get(&mut self) -> wasmtime::Result<Option<u64>> {
        Ok(self.tx.alarm(&*self.storage)?)
    }
}

impl connections::Host for HostState {
    fn send(&mut self, to: u64, frame: String) -> wasmtime::Result<()> {
        // A frame to a connection that is gone has nobody to reach.
        if self.is_open(ConnId(to)) {
            self.output(frame.len())?;
            self.effects.push(Effect::Send { to: ConnId(to), frame });
        }
        Ok(())
    }

    fn broadcast(&mut self, frame: String) -> wasmtime::Result<()> {
        self.output(frame.len())?;
        self.effects.push(Effect::Broadcast { frame });
        Ok(())
    }

    fn close(&mut self, to: u64, code: u16, reason: String) -> wasmtime::Result<()> {
        if self.is_open(ConnId(to)) {
            self.output(reason.len())?;
            self.effects.push(Effect::Close { to: ConnId(to), code, reason });
        }
        Ok(())
    }

    fn list(&mut self) -> wasmtime::Result<Vec<types::Connection>> {
        let list = self.connections.values().map(|c| types::Connection {
            id: c.id.0,
            who: to_wit_identity(&c.who),
            connected_at: c.connected_at,
        });
        Ok(list.collect())
    }
}

impl effects::Host for HostState {
    fn request(&mut self, kind: String, body: String) -> wasmtime::Result<()> {
        self.output(kind.len() + body.len())?;
        self.effects.push(Effect::Request { kind, body });
        Ok(())
    }
}

impl env::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.now)
    }

    fn random(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_LEN {
            wasmtime::bail!("env.random asked for {len} bytes, more than {MAX_RANDOM_LEN}");
        }
        let mut buf = vec![0; len as usize];
        self.env.fill_random(&mut buf);
        Ok(buf)
    }

    fn actor_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.id.clone())
    }
}

pub(crate) fn to_wit_identity(who: &Identity) -> types::Identity {
    let role = match who.role {
        Role::Viewer => types::Role::Viewer,
        Role::Moderator => types::Role::Moderator,
        Role::Host => types::Role::Host,
        Role::Merchant => types::Role::Merchant,
    };
    types::Identity { subject: who.subject.clone(), role, name: who.name.clone(), device: who.device.clone() }
}
