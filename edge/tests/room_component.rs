//! The real room component (built by `build.rs`) on wasmtime with in-memory storage, driven
//! through the durable-actor ABI the way the edge node drives it for its users.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use liveshop_edge::{
    Actor, ActorError, ActorKind, Batch, ConnId, Env, HttpRequest, MemoryStorage, Outcome, ROOM_COMPONENT,
    Runtime, RuntimeConfig, Storage,
};
use liveshop_identity::{Identity, Role};
use serde_json::Value;

/// A clock the test moves by hand, and randomness that is always the same.
#[derive(Default)]
struct TestEnv {
    now: AtomicU64,
}

impl TestEnv {
    fn at(ms: u64) -> Arc<Self> {
        Arc::new(Self { now: AtomicU64::new(ms) })
    }

    fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Env for TestEnv {
    fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 + 1);
    }
}

/// Compiled once for all tests here: compiling the room takes seconds, instantiating it does not.
fn room_kind() -> &'static ActorKind {
    static KIND: OnceLock<ActorKind> = OnceLock::new();
    KIND.get_or_init(|| {
        let config = RuntimeConfig { max_actors: 8, ..RuntimeConfig::default() };
        Runtime::new(config).unwrap().load(ROOM_COMPONENT).unwrap()
    })
}

/// The frames `conn` got from one event, parsed, with their `type`.
fn frames(outcome: &Outcome, conn: ConnId) -> Vec<Value> {
    let parse = |f: &str| serde_json::from_str::<Value>(f).expect("frames are JSON");
    outcome.frames_to(conn).into_iter().map(parse).collect()
}

fn of_type<'a>(frames: &'a [Value], ty: &str) -> &'a Value {
    let types: Vec<_> = frames.iter().map(|f| f["type"].clone()).collect();
    frames.iter().find(|f| f["type"] == ty).unwrap_or_else(|| panic!("no {ty} frame in {types:?}"))
}

fn chat(id: &str, text: &str) -> String {
    serde_json::json!({ "type": "chat.send", "id": id, "text": text }).to_string()
}

const ANA: ConnId = ConnId(1);
const BEN: ConnId = ConnId(2);

fn connect(actor: &mut Actor, conn: ConnId, subject: &str) -> Value {
    let outcome = actor.on_connect(conn, Identity::new(subject, Role::Viewer), None).unwrap();
    of_type(&frames(&outcome, conn), "welcome").clone()
}

#[test]
fn viewers_chat_and_the_room_keeps_counting_after_it_hibernates() {
    let kind = room_kind();
    let storage = MemoryStorage::default();
    let env = TestEnv::at(1_700_000_000_000);
    let mut room = kind.instantiate("show-1", Box::new(storage.clone()), [], env.clone()).unwrap();

    let welcome = connect(&mut room, ANA, "ana");
    assert!(welcome["epoch"].is_u64() && welcome["seq"].is_u64(), "{welcome}");
    env.advance(1_000);
    connect(&mut room, BEN, "ben");

    env.advance(1_000);
    let said = room.on_message(ANA, &chat("c1", "hello")).unwrap();
    let to_ana = frames(&said, ANA);
    let to_ben = frames(&said, BEN);
    let message = of_type(&to_ben, "chat.message");
    assert_eq!(message, of_type(&to_ana, "chat.message"));
    assert_eq!(message["message"]["text"], "hello");
    assert_eq!(message["message"]["user"], "ana");
    assert_eq!(message["epoch"], welcome["epoch"]);
    assert_eq!(message["at"], env.now());
    assert_eq!(of_type(&to_ana, "ack")["id"], "c1");
    assert!(to_ben.iter().all(|f| f["type"] != "ack"), "ben got ana's ack: {to_ben:?}");
    let stored = storage.entries();
    assert!(
        stored.values().any(|v| String::from_utf8_lossy(v).contains("hello")),
        "the message is not in storage: {:?}",
        stored.keys().collect::<Vec<_>>()
    );

    // Hibernation: the instance goes away, the host keeps the sockets and the storage.
    let open: Vec<_> = room.connections().cloned().collect();
    assert_eq!(open.len(), 2);
    drop(room);
    let mut room = kind.instantiate("show-1", Box::new(storage.clone()), open, env.clone()).unwrap();

    env.advance(1_000);
    let said = room.on_message(BEN, &chat("c2", "still here?")).unwrap();
    let again = of_type(&frames(&said, ANA), "chat.message").clone();
    assert_eq!(again["message"]["text"], "still here?");
    assert_eq!(again["epoch"], message["epoch"], "revival started a new epoch");
    assert_eq!(again["seq"], message["seq"].as_u64().unwrap() + 1);
    assert_eq!(of_type(&frames(&said, BEN), "ack")["id"], "c2");
}

#[test]
fn a_group_of_chat_messages_is_one_commit_and_a_revived_room_has_all_of_it() {
    let kind = room_kind();
    let storage = MemoryStorage::default();
    let env = TestEnv::at(1_700_000_000_000);
    let mut room = kind.instantiate("show-group", Box::new(storage.clone()), [], env.clone()).unwrap();
    connect(&mut room, ANA, "ana");
    connect(&mut room, BEN, "ben");
    let (commits, stored) = (storage.commits(), storage.entries().len());

    room.begin_group();
    let mut seqs = Vec::new();
    for i in 0..5 {
        env.advance(1_000);
        let said = room.on_message([ANA, BEN][i % 2], &chat(&format!("g{i}"), &format!("line {i}"))).unwrap();
        seqs.push(of_type(&frames(&said, ANA), "chat.message")["seq"].as_u64().unwrap());
    }
    assert_eq!(
        (storage.commits(), storage.entries().len()),
        (commits, stored),
        "held writes reached storage"
    );
    room.commit_group().unwrap();
    assert_eq!(storage.commits(), commits + 1, "five events, one commit");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

    let open: Vec<_> = room.connections().cloned().collect();
    drop(room);
    let mut room = kind.instantiate("show-group", Box::new(storage.clone()), open, env.clone()).unwrap();
    env.advance(1_000);
    let said = room.on_message(ANA, &chat("after", "after the group")).unwrap();
    assert_eq!(of_type(&frames(&said, ANA), "chat.message")["seq"], seqs[4] + 1);
    let req = HttpRequest { method: "GET".into(), path: "/state".into(), ..Default::default() };
    let state: Value = serde_json::from_slice(&room.on_request(req).unwrap().reply.unwrap().body).unwrap();
    let history = state["state"]["history"].as_array().unwrap();
    let texts: Vec<_> = history.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["line 0", "line 1", "line 2", "line 3", "line 4", "after the group"]);
}

#[test]
fn a_viewer_who_leaves_gets_nothing_more_and_the_rest_still_chat() {
    let kind = room_kind();
    let env = TestEnv::at(1_700_000_000_000);
    let mut room = kind.instantiate("show-2", Box::new(MemoryStorage::default()), [], env.clone()).unwrap();
    connect(&mut room, ANA, "ana");
    connect(&mut room, BEN, "ben");

    room.on_close(BEN).unwrap();
    assert_eq!(room.connections().map(|c| c.id).collect::<Vec<_>>(), [ANA]);
    env.advance(1_000);
    let said = room.on_message(ANA, &chat("c1", "anyone?")).unwrap();
    assert_eq!(of_type(&frames(&said, ANA), "chat.message")["message"]["text"], "anyone?");
    assert!(said.effects.iter().all(|e| !matches!(e, liveshop_edge::Effect::Send { to: BEN, .. })));
}

#[test]
fn a_request_is_answered_after_its_event_commits() {
    let kind = room_kind();
    let env = TestEnv::at(1_700_000_000_000);
    let mut room = kind.instantiate("show-3", Box::new(MemoryStorage::default()), [], env).unwrap();
    let req = HttpRequest { method: "GET".into(), path: "/state".into(), ..Default::default() };
    let reply = room.on_request(req).unwrap().reply.expect("on_request always replies");
    assert!(reply.status < 600, "{}", reply.status);
}

#[test]
fn a_room_whose_storage_is_unreadable_fails_its_events_and_writes_nothing() {
    let kind = room_kind();
    let mut storage = MemoryStorage::default();
    let mut garbage = Batch::default();
    garbage.writes.insert("meta".into(), Some(b"not json".to_vec()));
    storage.commit(garbage).unwrap();
    let env = TestEnv::at(1_700_000_000_000);
    let mut room = kind.instantiate("show-4", Box::new(storage.clone()), [], env).unwrap();

    let err = room.on_connect(ANA, Identity::new("ana", Role::Viewer), None).unwrap_err();
    assert!(matches!(err, ActorError::Trap { .. }), "{err}");
    assert_eq!(storage.commits(), 1, "the failed event committed something");
    assert_eq!(room.connections().count(), 0);
}
