//! # liveshop-room: the room of a live show, as a sans-IO state machine
//!
//! Everything interactive in a show happens in its room: chat with history, moderation,
//! reactions, polls, Q&A, pinned messages, banners, product pins with countdowns, presence and
//! the first analytics. This crate is the room's rules and nothing else: it does no IO, reads no
//! clock and spawns nothing. The host (the edge node's wasmtime component, a Cloudflare Durable
//! Object, a Spin component, or a test) owns sockets, time and storage:
//!
//! ```text
//!            Input::{Connect, Message, Close, Request, Alarm} + now
//!   host  ─────────────────────────────────────────────────────────▶  Room
//!         ◀─────────────────────────────────────────────────────────
//!            Output::{Put, Delete, Send, Broadcast, Close, SetAlarm, Reply}
//! ```
//!
//! The run loop of every host:
//!
//! ```
//! use liveshop_room::{ConnId, Epoch, Input, Output, Room};
//! use liveshop_identity::{Identity, Role};
//!
//! let mut room = Room::restore(Vec::new(), Epoch(7)).unwrap(); // nothing stored yet: a new room
//! let ana = Identity::new("ana", Role::Viewer);
//! room.handle(1_000, Input::Connect { conn: ConnId(1), who: ana, connected_at: 1_000, resume: None });
//! room.handle(1_010, Input::Message { conn: ConnId(1), text: r#"{"type":"chat.send","id":"c1","text":"hi!"}"#.into() });
//! let mut stored = 0;
//! while let Some(out) = room.poll_output() {
//!     match out {
//!         Output::Store(_) => stored += 1,                          // commit these first ...
//!         Output::Send { .. } | Output::Broadcast { .. } => {}       // ... then release these
//!         _ => {}
//!     }
//! }
//! assert_eq!(room.seq().0, 1);
//! assert!(stored >= 2); // the room's meta record and the logged chat message
//! ```
//!
//! ## The rules, in short
//!
//! - **Events and seq.** Every durable change is an [`Event`] with the next [`Seq`]; state changes
//!   only in [`state::RoomState::apply`]. Frames carry `(epoch, seq)`. A client that reconnects
//!   with its last `(epoch, seq)` gets exactly the events it missed (those its role may see), or a
//!   snapshot of the room when the log no longer reaches back that far or the epoch changed.
//! - **Persistence.** Stored are `meta` (the epoch), `log/<seq>` (each event with its audience)
//!   and `snapshot` (the state at some seq). Every [`SNAPSHOT_EVERY`] events a new snapshot is
//!   written and log records older than the last [`LOG_RETAIN`] are deleted. Restoring applies
//!   the log after the snapshot: the result equals the live state (a property test checks it).
//!   Token buckets and the 250 ms aggregation window are not stored; at worst a crash loses one
//!   window of reaction taps and product impressions, which are never acknowledged.
//! - **Output gate.** Outputs come in the order they must take effect: a host commits every
//!   `Put`/`Delete` of one `handle` call together before it releases any frame, close or reply.
//!   A command is acknowledged (`ack`) only through that gate, so an ack means durable.
//! - **Moderation.** Viewer chat passes, in order: bans and timeouts, length, slow mode and
//!   duplicate suppression, the content filter ([`filter`]), then the per-user token bucket.
//!   The filter refuses, holds for review (moderators only see it until approved), or passes.
//!   Shadow-banned users' messages reach only their own connections. Every moderator action is a
//!   `mod.action` event that moderators see.
//! - **Aggregation.** Reaction taps, poll tallies, presence and analytics are collected over a
//!   [`FLUSH_MS`] window and sent as latest state when the room's alarm fires.

pub mod analytics;
pub mod feed;
pub mod filter;
pub mod ids;
pub mod pages;
pub mod protocol;
mod room;
pub mod show;
pub mod state;
pub mod timeline;
pub mod view;

pub use ids::{ConnId, Epoch, MessageId, Millis, Money, PollId, ProductId, QuestionId, Seq};
pub use liveshop_identity::{Identity, Role};
pub use protocol::{
    Audience, ClientFrame, Command, CommandError, ErrorCode, Event, ServerFrame, StreamHealth, StreamStarted,
    decode,
};
pub use room::{
    Bucket, CLOSE_BANNED, FLUSH_MS, Input, LOG_RETAIN, LogRecord, MEDIA_ORIGIN, Output, QUESTION_INTERVAL_MS,
    RestoreError, Room, SNAPSHOT_EVERY, STREAM_EVENTS_PATH, StreamEventTaken, Write, keys,
};
