//! The self-hosted edge node: runs the durable actors (rooms, shops), WASM components built to
//! the `durable-actor` world in `wit/`, on wasmtime.
//!
//! - [`actor`]: the engine, compiled actor kinds and live actors with their output gate.
//! - `host`: what the component's imports do, per store.
//! - [`storage`]: what an actor's durable state needs from a backend, and the per-event
//!   transaction over it.
//!
//! The room component is built by this crate's `build.rs` (a nested cargo build for
//! `wasm32-wasip2`) and embedded as [`ROOM_COMPONENT`].

pub mod actor;
pub mod config;
mod host;
pub mod http;
pub mod metrics;
pub mod node;
pub mod server;
pub mod shows;
pub mod sqlite;
pub mod storage;

pub use actor::{
    Actor, ActorError, ActorKind, ConnId, Connection, Effect, Env, HttpRequest, HttpResponse, Outcome,
    Runtime, RuntimeConfig, SystemEnv,
};
pub use config::EdgeConfig;
pub use server::{Edge, EdgeError, node_secret};
pub use storage::{Batch, MemoryStorage, Storage, StorageError};

/// The room actor (`functions/component`), as a WASM component.
pub static ROOM_COMPONENT: &[u8] = include_bytes!(env!("LIVESHOP_ROOM_COMPONENT"));
