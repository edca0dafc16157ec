//! Fuzzes the client frame decoder, and the room behind it: any bytes a client can send must
//! decode to a command or a typed error, a decoded command must survive re-encoding unchanged,
//! and feeding it to a room must not panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use liveshop_room::{ConnId, Epoch, Identity, Input, Role, Room};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(frame) = liveshop_room::decode(text) {
        let again = serde_json::to_string(&frame.command).unwrap();
        let round = liveshop_room::decode(&again).expect("a decoded command re-encodes to a valid frame");
        assert_eq!(round.command, frame.command);
    }
    let mut room = Room::new(Epoch(1));
    for (conn, role) in [(1, Role::Viewer), (2, Role::Host)] {
        let who = Identity::new(format!("u{conn}"), role);
        room.handle(0, Input::Connect { conn: ConnId(conn), who, connected_at: 0, resume: None });
        room.handle(1, Input::Message { conn: ConnId(conn), text: text.to_string() });
    }
    while room.poll_output().is_some() {}
});
