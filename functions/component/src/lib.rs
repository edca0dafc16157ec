//! The room as a WASM component: a thin shell that implements the `durable-actor` world
//! (`wit/actor.wit`) on top of the sans-IO core in `liveshop-room`.
//!
//! The host may drop this instance between any two events (hibernation) and create a fresh one.
//! So the live [`Room`] sits in a per-instance static, rebuilt on an instance's first event from
//! everything in storage plus the connections the host still holds. Each export then reads the
//! clock, feeds one [`Input`] to the room and drains its outputs into the host imports; the host
//! commits the writes before it releases any frame (the output gate), so ordering here is free.

use std::cell::RefCell;

use liveshop_identity::{Identity, Role};
use liveshop_room::{ConnId, Epoch, Input, Millis, Output, Room, Seq, Write};

wit_bindgen::generate!({ path: "../../wit", world: "durable-actor" });

use exports::liveshop::actor::actor::Guest;
use liveshop::actor::types::{self, HttpRequest, HttpResponse};
use liveshop::actor::{alarm, connections, env, storage};

thread_local! {
    /// `None` until the first event of this instance: restoring is deferred so instantiation
    /// stays cheap and calls no import.
    static ROOM: RefCell<Option<Room>> = const { RefCell::new(None) };
}

// Exported only when built as a component: WIT export names (`liveshop:actor/...`) are not
// symbols a native linker accepts, and natively this crate is only compiled for lints.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct RoomActor;
#[cfg(target_arch = "wasm32")]
export!(RoomActor);

impl Guest for RoomActor {
    fn on_connect(conn: u64, who: types::Identity, resume_from: Option<(u64, u64)>) {
        run(|now| Input::Connect {
            conn: ConnId(conn),
            who: identity(who),
            connected_at: now,
            resume: resume_from.map(|(epoch, seq)| (Epoch(epoch), Seq(seq))),
        });
    }

    fn on_message(conn: u64, text: String) {
        run(|_| Input::Message { conn: ConnId(conn), text });
    }

    fn on_close(conn: u64) {
        run(|_| Input::Close { conn: ConnId(conn) });
    }

    fn on_request(req: HttpRequest) -> HttpResponse {
        let input = |_| Input::Request {
            who: req.who.map(identity),
            method: req.method,
            path: req.path,
            body: req.body,
        };
        // The core answers every request; this is only a guard against a core bug.
        run(input).unwrap_or_else(|| HttpResponse {
            status: 500,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"the room produced no reply".to_vec(),
        })
    }

    fn on_alarm() {
        run(|_| Input::Alarm);
    }
}

/// Feeds one input, made at the host's `now`, to the room and forwards its outputs to the host;
/// returns the reply, if any.
fn run(input: impl FnOnce(Millis) -> Input) -> Option<HttpResponse> {
    ROOM.with_borrow_mut(|slot| {
        let room = slot.get_or_insert_with(revive);
        let now = env::now();
        room.handle(now, input(now));
        let mut reply = None;
        while let Some(output) = room.poll_output() {
            match output {
                Output::Store(Write::Put { key, value }) => storage::put(&key, &value),
                Output::Store(Write::Delete { key }) => storage::delete(&key),
                Output::Send { conn, frame } => connections::send(conn.0, &frame),
                Output::Broadcast { frame } => connections::broadcast(&frame),
                Output::Close { conn, code, reason } => connections::close(conn.0, code, &reason),
                Output::SetAlarm(Some(at)) => alarm::set(at),
                Output::SetAlarm(None) => alarm::clear(),
                Output::Reply { status, content_type, body } => {
                    reply = Some(HttpResponse {
                        status,
                        headers: vec![("content-type".into(), content_type.into())],
                        body,
                    });
                }
            }
        }
        reply
    })
}

/// Rebuilds the room from storage and re-attaches the connections the host kept open.
fn revive() -> Room {
    let random: [u8; 8] = env::random(8).try_into().expect("the host returns the bytes asked for");
    // 53 bits, so JavaScript clients hold the epoch exactly (their numbers are doubles).
    let epoch = Epoch(u64::from_le_bytes(random) >> 11);
    let mut room = match Room::restore(storage::list(""), epoch) {
        Ok(room) => room,
        // Nothing sensible can run on state we cannot read: trap, so the event writes nothing
        // and the host can report it, instead of starting an empty room over the old one.
        Err(e) => panic!("cannot restore room {}: {e}", env::actor_id()),
    };
    for c in connections::list() {
        room.attach(ConnId(c.id), identity(c.who), c.connected_at);
    }
    room
}

fn identity(who: types::Identity) -> Identity {
    let role = match who.role {
        types::Role::Viewer => Role::Viewer,
        types::Role::Moderator => Role::Moderator,
        types::Role::Host => Role::Host,
        types::Role::Merchant => Role::Merchant,
    };
    Identity { subject: who.subject, role, name: who.name }
}
