//! The self-hosted edge node: runs the durable actors (rooms, shops), WASM components built to
//! the `durable-actor` world in `wit/`, on wasmtime.
//!
//! - [`actor`]: the engine, compiled actor kinds and live actors with their output gate.
//! - `host`: what the component's imports do, per store.
//! - [`storage`]: what an actor's durable state needs from a backend, and the per-event
//!   transaction over it.
//!
//! - [`node`]: one task per live actor, fan-out, hibernation, alarms, effects.
//! - [`outbound`]: payments and signed merchant webhooks, the effects shops ask for.
//! - [`payments`]: the payment providers (the test provider, Stripe).
//! - [`http`] and [`shop_http`]: the HTTP face, including `POST /v1/stream-events`, where the
//!   media origin's signed `stream.*` events come in for the rooms.
//! - [`listener`]: the accept loop: header and idle timeouts, connections per address and the
//!   file-descriptor budget.
//!
//! The components are built by this crate's `build.rs` (nested cargo builds for
//! `wasm32-wasip2`) and embedded as [`ROOM_COMPONENT`] and [`SHOP_COMPONENT`].

pub mod actor;
pub mod analytics;
pub mod config;
pub mod feed;
mod host;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod pacing;
pub mod payments;
pub mod sealed;
pub mod server;
pub mod shop_http;
pub mod shows;
pub mod sqlite;
pub mod storage;
pub mod stream_keys;

pub use actor::{
    Actor, ActorError, ActorKind, ConnId, Connection, Effect, Env, HttpRequest, HttpResponse, Outcome,
    Runtime, RuntimeConfig, SystemEnv,
};
pub use config::EdgeConfig;
pub use server::{Edge, EdgeError, node_secret, stream_event_secret};
pub use storage::{Batch, MemoryStorage, Storage, StorageError};

/// The room actor (`functions/component --features room`), as a WASM component.
pub static ROOM_COMPONENT: &[u8] = include_bytes!(env!("LIVESHOP_ROOM_COMPONENT"));
/// The shop actor (`functions/component --features shop`), as a WASM component.
pub static SHOP_COMPONENT: &[u8] = include_bytes!(env!("LIVESHOP_SHOP_COMPONENT"));
