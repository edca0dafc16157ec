//! A host in miniature for tests: applies the room's outputs to an in-memory store, a set of
//! connections with their received frames, and one alarm, exactly as a real host must.

#![allow(dead_code)]

use std::collections::BTreeMap;

use liveshop_room::{ConnId, Epoch, Identity, Input, Millis, Output, Role, Room, Seq, Write};
use serde_json::{Value, json};

pub struct Host {
    pub room: Room,
    pub store: BTreeMap<String, Vec<u8>>,
    pub now: Millis,
    pub open: BTreeMap<ConnId, Identity>,
    pub inbox: BTreeMap<ConnId, Vec<Value>>,
    pub closed: BTreeMap<ConnId, u16>,
    pub alarm: Option<Millis>,
    pub replies: Vec<(u16, Value)>,
    next_conn: u64,
}

pub fn who(subject: &str, role: Role) -> Identity {
    Identity::new(subject, role)
}

impl Host {
    pub fn new() -> Host {
        Host::with_room(Room::restore(Vec::new(), Epoch(42)).unwrap())
    }

    fn with_room(room: Room) -> Host {
        Host {
            room,
            store: BTreeMap::new(),
            now: 1_700_000_000_000,
            open: BTreeMap::new(),
            inbox: BTreeMap::new(),
            closed: BTreeMap::new(),
            alarm: None,
            replies: Vec::new(),
            next_conn: 1,
        }
    }

    /// Drops the room from memory and revives it from storage, keeping connections open, as
    /// hibernation or a crash followed by a restart does.
    pub fn revive(&mut self) {
        let records = self.store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.room = Room::restore(records, Epoch(999)).unwrap();
        for (conn, who) in &self.open {
            self.room.attach(*conn, who.clone(), self.now);
        }
    }

    pub fn input(&mut self, input: Input) {
        self.room.handle(self.now, input);
        self.drain();
    }

    pub fn drain(&mut self) {
        while let Some(out) = self.room.poll_output() {
            match out {
                Output::Store(Write::Put { key, value }) => {
                    self.store.insert(key, value);
                }
                Output::Store(Write::Delete { key }) => {
                    self.store.remove(&key);
                }
                Output::Send { conn, frame } => {
                    if self.open.contains_key(&conn) {
                        self.inbox.entry(conn).or_default().push(serde_json::from_str(&frame).unwrap());
                    }
                }
                Output::Broadcast { frame } => {
                    let v: Value = serde_json::from_str(&frame).unwrap();
                    for conn in self.open.keys() {
                        self.inbox.entry(*conn).or_default().push(v.clone());
                    }
                }
                Output::Close { conn, code, .. } => {
                    self.open.remove(&conn);
                    self.closed.insert(conn, code);
                }
                Output::SetAlarm(at) => self.alarm = at,
                Output::Reply { status, body, .. } => {
                    let body =
                        if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
                    self.replies.push((status, body));
                }
            }
        }
    }

    pub fn connect(&mut self, subject: &str, role: Role) -> ConnId {
        self.connect_resuming(subject, role, None)
    }

    pub fn connect_resuming(&mut self, subject: &str, role: Role, resume: Option<(Epoch, Seq)>) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.open.insert(conn, who(subject, role));
        self.input(Input::Connect { conn, who: who(subject, role), connected_at: self.now, resume });
        conn
    }

    /// Connects `who` as a host verified it (a guest with its device, say).
    pub fn connect_identity(&mut self, who: Identity) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.open.insert(conn, who.clone());
        self.input(Input::Connect { conn, who, connected_at: self.now, resume: None });
        conn
    }

    pub fn close(&mut self, conn: ConnId) {
        self.open.remove(&conn);
        self.input(Input::Close { conn });
    }

    /// Sends a command frame and returns what came back to that connection for it (an ack or an
    /// error with the same id).
    pub fn send(&mut self, conn: ConnId, mut command: Value) -> Value {
        let id = format!("c{}", self.now);
        command["id"] = json!(id);
        self.input(Input::Message { conn, text: command.to_string() });
        self.inbox
            .get(&conn)
            .and_then(|frames| frames.iter().rev().find(|f| f["id"] == json!(id)).cloned())
            .unwrap_or(Value::Null)
    }

    pub fn raw(&mut self, conn: ConnId, text: &str) -> Option<Value> {
        self.input(Input::Message { conn, text: text.to_string() });
        self.inbox.get(&conn).and_then(|f| f.last().cloned())
    }

    pub fn advance(&mut self, ms: Millis) {
        self.now += ms;
    }

    /// Moves time to the alarm (if any is due within `ms`) and fires it, repeatedly.
    pub fn run_for(&mut self, ms: Millis) {
        let end = self.now + ms;
        while let Some(at) = self.alarm.filter(|at| *at <= end) {
            self.now = self.now.max(at);
            self.alarm = None;
            self.input(Input::Alarm);
        }
        self.now = end;
    }

    pub fn frames(&self, conn: ConnId) -> &[Value] {
        self.inbox.get(&conn).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn of_type(&self, conn: ConnId, ty: &str) -> Vec<Value> {
        self.frames(conn).iter().filter(|f| f["type"] == ty).cloned().collect()
    }

    pub fn chat_texts(&self, conn: ConnId) -> Vec<String> {
        self.of_type(conn, "chat.message")
            .iter()
            .map(|f| f["message"]["text"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn clear(&mut self) {
        self.inbox.clear();
    }
}

pub fn code(reply: &Value) -> &str {
    assert_eq!(reply["type"], "error", "expected an error, got {reply}");
    reply["code"].as_str().unwrap()
}

pub fn acked(reply: &Value) -> bool {
    reply["type"] == "ack"
}

impl Host {
    pub fn state_question(&self, id: u64) -> liveshop_room::protocol::Question {
        self.room.state().questions[&liveshop_room::QuestionId(id)].question.clone()
    }
}
