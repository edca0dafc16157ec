//! The room actor: `liveshop-room` behind the `durable-actor` exports.

use std::cell::RefCell;

use liveshop_room::{ConnId, Epoch, Input, Millis, Output, Room, Seq, Write};

use crate::exports::liveshop::actor::actor::Guest;
use crate::liveshop::actor::types::{self, HttpRequest, HttpResponse};
use crate::liveshop::actor::{alarm, connections, env, storage};
use crate::{identity, new_epoch, reply};

thread_local! {
    /// `None` until the first event of this instance: restoring is deferred so instantiation
    /// stays cheap and calls no import.
    static ROOM: RefCell<Option<Room>> = const { RefCell::new(None) };
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) struct RoomActor;

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
        run(input).unwrap_or_else(|| reply(500, "text/plain", b"the room produced no reply".to_vec()))
    }

    fn on_alarm() {
        run(|_| Input::Alarm);
    }

    /// A room asks for no effects, so it gets no results.
    fn on_effect_result(_kind: String, _body: String) {}
}

/// Feeds one input, made at the host's `now`, to the room and forwards its outputs to the host;
/// returns the reply, if any.
fn run(input: impl FnOnce(Millis) -> Input) -> Option<HttpResponse> {
    ROOM.with_borrow_mut(|slot| {
        let room = slot.get_or_insert_with(revive);
        let now = env::now();
        room.handle(now, input(now));
        let mut answer = None;
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
                    answer = Some(reply(status, content_type, body));
                }
            }
        }
        answer
    })
}

/// Rebuilds the room from storage and re-attaches the connections the host kept open.
fn revive() -> Room {
    let mut room = match Room::restore(storage::list(""), Epoch(new_epoch())) {
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
