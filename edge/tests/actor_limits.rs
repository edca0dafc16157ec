//! The host's guarantees, checked against a tiny hand-written component (WAT) that can be made
//! to misbehave: an event that never returns, one that eats memory, a commit that fails. Each
//! must release nothing and commit nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use liveshop_edge::{
    Actor, ActorError, ActorKind, ConnId, Effect, Env, HttpRequest, MemoryStorage, Runtime, RuntimeConfig,
};
use liveshop_identity::{Identity, Role};

/// `on-message` reads the first byte of the text: `w` writes `k = v` and sends `hi` back,
/// `s` spins forever, `x` does both, `g` grows memory until refused and then traps.
/// `on-request` answers 200 with no body; the other exports do nothing.
const MISBEHAVING: &str = r#"
(component
  (import "liveshop:actor/storage@0.1.0" (instance $storage
    (export "put" (func (param "key" string) (param "value" (list u8))))))
  (import "liveshop:actor/connections@0.1.0" (instance $connections
    (export "send" (func (param "to" u64) (param "frame" string)))))

  ;; The memory lives in its own instance so the imports can be lowered before `main` exists.
  (core module $memory (memory (export "memory") 1))
  (core instance $memory (instantiate $memory))
  (alias core export $memory "memory" (core memory $mem))
  (core func $put (canon lower (func $storage "put") (memory $mem)))
  (core func $send (canon lower (func $connections "send") (memory $mem)))

  (core module $main
    (import "host" "memory" (memory 1))
    (import "host" "put" (func $put (param i32 i32 i32 i32)))
    (import "host" "send" (func $send (param i64 i32 i32)))
    (global $heap (mut i32) (i32.const 1024))
    (data (i32.const 16) "kvhi")
    (data (i32.const 512) "\c8")
    ;; A bump allocator that never frees, 8-byte aligned.
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (global.set $heap (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.get $heap)
      (global.set $heap (i32.add (global.get $heap) (local.get 3))))
    (func (export "on-message") (param $conn i64) (param $text i32) (param $len i32)
      (local $op i32)
      (local.set $op (i32.load8_u (local.get $text)))
      ;; "w" and "x": write a key and send a frame
      (if (i32.or (i32.eq (local.get $op) (i32.const 119)) (i32.eq (local.get $op) (i32.const 120)))
        (then
          (call $put (i32.const 16) (i32.const 1) (i32.const 17) (i32.const 1))
          (call $send (local.get $conn) (i32.const 18) (i32.const 2))))
      ;; "s" and "x": never return
      (if (i32.or (i32.eq (local.get $op) (i32.const 115)) (i32.eq (local.get $op) (i32.const 120)))
        (then (loop $forever (br $forever))))
      ;; "g": grow until refused, then give up as an allocator does
      (if (i32.eq (local.get $op) (i32.const 103))
        (then
          (loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
          unreachable)))
    (func (export "nothing") (param i64))
    (func (export "on-connect") (param i64 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i64 i64))
    ;; A request flattens to more than 16 values, so it comes by pointer.
    (func (export "on-request") (param i32)
      (result i32)
      (i32.const 512))
    (func (export "on-alarm"))
    (func (export "on-effect-result") (param i32 i32 i32 i32)))
  (core instance $main (instantiate $main (with "host" (instance
    (export "memory" (memory $mem))
    (export "put" (func $put))
    (export "send" (func $send))))))

  (type $role (enum "viewer" "moderator" "host" "merchant"))
  (type $identity (record (field "subject" string) (field "role" $role) (field "name" (option string))
    (field "device" (option string))))
  (type $request (record (field "method" string) (field "path" string)
    (field "headers" (list (tuple string string))) (field "body" (list u8))
    (field "who" (option $identity))))
  (type $response (record (field "status" u16) (field "headers" (list (tuple string string)))
    (field "body" (list u8))))

  (func $on-connect (param "conn" u64) (param "who" $identity) (param "resume-from" (option (tuple u64 u64)))
    (canon lift (core func $main "on-connect") (memory $mem) (realloc (core func $main "realloc"))))
  (func $on-message (param "conn" u64) (param "text" string)
    (canon lift (core func $main "on-message") (memory $mem) (realloc (core func $main "realloc"))))
  (func $on-close (param "conn" u64) (canon lift (core func $main "nothing")))
  (func $on-request (param "req" $request) (result $response)
    (canon lift (core func $main "on-request") (memory $mem) (realloc (core func $main "realloc"))))
  (func $on-alarm (canon lift (core func $main "on-alarm")))
  (func $on-effect-result (param "kind" string) (param "body" string)
    (canon lift (core func $main "on-effect-result") (memory $mem) (realloc (core func $main "realloc"))))
  (instance $actor
    (export "role" (type $role))
    (export "identity" (type $identity))
    (export "http-request" (type $request))
    (export "http-response" (type $response))
    (export "on-connect" (func $on-connect))
    (export "on-message" (func $on-message))
    (export "on-close" (func $on-close))
    (export "on-request" (func $on-request))
    (export "on-alarm" (func $on-alarm))
    (export "on-effect-result" (func $on-effect-result)))
  (export "liveshop:actor/actor@0.1.0" (instance $actor)))
"#;

struct FixedEnv;

impl Env for FixedEnv {
    fn now(&self) -> u64 {
        1_700_000_000_000
    }

    fn fill_random(&self, buf: &mut [u8]) {
        buf.fill(7);
    }
}

const DEADLINE: Duration = Duration::from_millis(100);
const MEMORY: usize = 1 << 20;

fn kind() -> ActorKind {
    let config =
        RuntimeConfig { max_actors: 4, memory_bytes: MEMORY, event_deadline: DEADLINE, pooling: true };
    let runtime = Runtime::new(config).unwrap();
    runtime.load(&wat::parse_str(MISBEHAVING).unwrap()).unwrap()
}

fn connected(kind: &ActorKind, storage: &MemoryStorage) -> Actor {
    let mut actor = kind.instantiate("test", Box::new(storage.clone()), [], Arc::new(FixedEnv)).unwrap();
    actor.on_connect(ConnId(1), Identity::new("ana", Role::Viewer), None).unwrap();
    actor
}

#[test]
fn an_event_that_never_returns_is_stopped_at_its_deadline_and_releases_nothing() {
    let kind = kind();
    let storage = MemoryStorage::default();
    let mut actor = connected(&kind, &storage);

    let started = Instant::now();
    let err = actor.on_message(ConnId(1), "x: write, send, then spin").unwrap_err();
    assert!(matches!(err, ActorError::Deadline { .. }), "{err}");
    assert!(started.elapsed() < DEADLINE * 20, "stopped only after {:?}", started.elapsed());
    assert!(storage.entries().is_empty(), "the trapped event's write was committed");

    // The guest may be ahead of storage now: the actor refuses more work until revived.
    let err = actor.on_message(ConnId(1), "w").unwrap_err();
    assert!(matches!(err, ActorError::Poisoned { .. }), "{err}");

    let connections: Vec<_> = actor.connections().cloned().collect();
    drop(actor);
    let mut revived =
        kind.instantiate("test", Box::new(storage.clone()), connections, Arc::new(FixedEnv)).unwrap();
    let outcome = revived.on_message(ConnId(1), "w").unwrap();
    assert_eq!(outcome.effects, [Effect::Send { to: ConnId(1), frame: "hi".into() }]);
    assert_eq!(storage.entries().get("k").map(Vec::as_slice), Some(&b"v"[..]));
}

#[test]
fn an_actor_that_grows_past_its_memory_limit_fails_its_event() {
    let kind = kind();
    let storage = MemoryStorage::default();
    let mut actor = connected(&kind, &storage);

    let err = actor.on_message(ConnId(1), "grow").unwrap_err();
    assert!(matches!(err, ActorError::Memory { limit: MEMORY, .. }), "{err}");
}

#[test]
fn nothing_leaves_an_event_whose_commit_fails() {
    let kind = kind();
    let storage = MemoryStorage::default();
    let mut actor = connected(&kind, &storage);

    storage.fail_commits(true);
    let err = actor.on_message(ConnId(1), "w").unwrap_err();
    assert!(matches!(err, ActorError::Commit { .. }), "{err}");
    assert!(storage.entries().is_empty());
}

#[test]
fn a_request_gets_its_reply_after_the_commit() {
    let kind = kind();
    let storage = MemoryStorage::default();
    let mut actor = kind.instantiate("test", Box::new(storage), [], Arc::new(FixedEnv)).unwrap();

    let req = HttpRequest { method: "GET".into(), path: "/state".into(), ..Default::default() };
    let reply = actor.on_request(req).unwrap().reply.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
}

#[test]
fn a_group_commits_once_after_its_events_and_keeps_those_before_one_that_fails() {
    let kind = kind();
    let storage = MemoryStorage::default();
    let mut actor = connected(&kind, &storage);

    actor.begin_group();
    let wrote = actor.on_message(ConnId(1), "w").unwrap();
    assert_eq!(wrote.frames_to(ConnId(1)), ["hi"]);
    assert!(storage.entries().is_empty(), "a held write reached storage before the group's commit");
    let err = actor.on_message(ConnId(1), "spin").unwrap_err();
    assert!(matches!(err, ActorError::Deadline { .. }), "{err}");
    actor.commit_group().unwrap();
    assert_eq!(storage.entries().into_iter().collect::<Vec<_>>(), [("k".to_string(), b"v".to_vec())]);
    assert_eq!(storage.commits(), 1);
    // The failed event poisoned the actor: it is dropped and revived, as after any failure.
    assert!(matches!(actor.on_message(ConnId(1), "w"), Err(ActorError::Poisoned { .. })));
}

#[test]
fn a_group_whose_commit_fails_commits_nothing_and_poisons_the_actor() {
    let kind = kind();
    let storage = MemoryStorage::default();
    let mut actor = connected(&kind, &storage);

    actor.begin_group();
    actor.on_message(ConnId(1), "w").unwrap();
    actor.on_message(ConnId(1), "w").unwrap();
    storage.fail_commits(true);
    let err = actor.commit_group().unwrap_err();
    assert!(matches!(err, ActorError::Commit { .. }), "{err}");
    assert!(storage.entries().is_empty());
    assert!(matches!(actor.on_message(ConnId(1), "w"), Err(ActorError::Poisoned { .. })));
}
