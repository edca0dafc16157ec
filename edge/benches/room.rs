//! What running the room as a component costs, in one run:
//!
//! - chat commands per second through the room core natively vs through the room component on
//!   wasmtime (with the host's transaction, commit into `MemoryStorage` and output gate), and
//!   their ratio;
//! - the time to instantiate the component from its `InstancePre` with the pooling allocator,
//!   beside an on-demand engine as the baseline;
//! - `GET /state` on a room with 100 messages revived from storage for it (a new instance that
//!   restores the room), beside the same request to the live room: the revival's cost without
//!   SQLite or the network.
//!
//! Criterion prints its usual report per benchmark; the summary at the end is computed from the
//! same iterations (via `iter_custom`), so nothing is measured twice.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use liveshop_edge::{
    ActorKind, ConnId, Env, HttpRequest, MemoryStorage, ROOM_COMPONENT, Runtime, RuntimeConfig,
};
use liveshop_identity::{Identity, Role};
use liveshop_room::{Epoch, Input, Output, Room, Write};

/// Viewers in the room: every chat message is broadcast to all of them.
const VIEWERS: u64 = 100;
/// Time between two commands; with `VIEWERS` taking turns nobody hits the chat rate limit.
const STEP_MS: u64 = 20;
const START_MS: u64 = 1_700_000_000_000;
/// Chat messages in the room the revival benchmark brings back (as in `liveshop bench rooms`).
const REVIVAL_HISTORY: u64 = 100;

/// Mean time per iteration over everything a benchmark ran, warm-up included.
#[derive(Default)]
struct Tally {
    iters: Cell<u64>,
    time: Cell<Duration>,
}

impl Tally {
    fn add(&self, iters: u64, time: Duration) -> Duration {
        self.iters.set(self.iters.get() + iters);
        self.time.set(self.time.get() + time);
        time
    }

    fn per_iter(&self) -> Duration {
        Duration::from_secs_f64(self.time.get().as_secs_f64() / self.iters.get().max(1) as f64)
    }
}

struct BenchEnv(std::sync::atomic::AtomicU64);

impl Env for BenchEnv {
    fn now(&self) -> u64 {
        self.0.fetch_add(STEP_MS, std::sync::atomic::Ordering::Relaxed)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        buf.fill(42);
    }
}

fn viewer(i: u64) -> Identity {
    Identity::new(format!("viewer-{i}"), Role::Viewer)
}

/// Ordinary chat; a viewer never repeats its previous line (that would be a duplicate).
const LINES: [&str; 4] = [
    "love this jacket, does it come in blue?",
    "how long does shipping take to Lisbon?",
    "just ordered two, thanks!",
    "can you show the back again please",
];

/// Words that make each text of [`command`] new. Not digits: the filter reads those as
/// leetspeak and holds some numbers for review.
const COLOURS: [&str; 10] =
    ["blue", "green", "red", "navy", "olive", "cream", "amber", "teal", "plum", "sand"];

/// The n-th command: viewers take turns. Every text is new (n spelled in colours), so the filter
/// reads each one: the cost of a chat where nobody repeats anybody.
fn command(n: u64) -> (u64, String) {
    let line = LINES[(n / VIEWERS) as usize % LINES.len()];
    let mut text = line.to_string();
    let mut rest = n;
    loop {
        text.push(' ');
        text.push_str(COLOURS[(rest % 10) as usize]);
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    (n % VIEWERS, format!(r#"{{"type":"chat.send","id":"c{n}","text":"{text}"}}"#))
}

/// The n-th command of a chat that repeats itself (everyone saying the same few lines, as at a
/// flash sale): the filter has read each text before.
fn repeated_command(n: u64) -> (u64, String) {
    let line = LINES[(n / VIEWERS) as usize % LINES.len()];
    (n % VIEWERS, format!(r#"{{"type":"chat.send","id":"c{n}","text":"{line}"}}"#))
}

fn native_commands(c: &mut Criterion, tally: &Tally) {
    let mut room = Room::restore(Vec::new(), Epoch(42)).unwrap();
    let mut stored = BTreeMap::new();
    let mut now = START_MS;
    // Applies writes as a host would and counts what it would send.
    let mut drain = |room: &mut Room| {
        let mut frames = Vec::new();
        while let Some(out) = room.poll_output() {
            match out {
                Output::Store(Write::Put { key, value }) => drop(stored.insert(key, value)),
                Output::Store(Write::Delete { key }) => drop(stored.remove(&key)),
                Output::Send { frame, .. } | Output::Broadcast { frame } => frames.push(frame),
                _ => {}
            }
        }
        frames
    };
    for i in 0..VIEWERS {
        let input = Input::Connect {
            conn: liveshop_room::ConnId(i),
            who: viewer(i),
            connected_at: now,
            resume: None,
        };
        room.handle(now, input);
        drain(&mut room);
    }
    let mut n = 0;
    c.bench_function("chat command, room core natively", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (from, text) = command(n);
                n += 1;
                now += STEP_MS;
                room.handle(now, Input::Message { conn: liveshop_room::ConnId(from), text });
                let frames = drain(&mut room);
                assert!(frames.len() >= 2, "command {n} was not acked and broadcast: {frames:?}");
            }
            tally.add(iters, start.elapsed())
        })
    });
}

fn component_commands(
    c: &mut Criterion,
    name: &str,
    command: fn(u64) -> (u64, String),
    kind: &ActorKind,
    tally: &Tally,
) {
    let env = Arc::new(BenchEnv(START_MS.into()));
    let storage = Box::new(MemoryStorage::default());
    let mut actor = kind.instantiate("bench", storage, [], env).unwrap();
    for i in 0..VIEWERS {
        actor.on_connect(ConnId(i), viewer(i), None).unwrap();
    }
    let mut n = 0;
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (from, text) = command(n);
                n += 1;
                let outcome = actor.on_message(ConnId(from), &text).unwrap();
                assert!(outcome.effects.len() >= 2, "the command was not acked and broadcast");
            }
            tally.add(iters, start.elapsed())
        })
    });
}

fn instantiation(c: &mut Criterion, name: &str, kind: &ActorKind, tally: &Tally) {
    let env: Arc<dyn Env> = Arc::new(BenchEnv(START_MS.into()));
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let storage = Box::new(MemoryStorage::default());
                // Dropping is part of the cost: it hands the slot back to the pool.
                drop(kind.instantiate("bench", storage, [], env.clone()).unwrap());
            }
            tally.add(iters, start.elapsed())
        })
    });
}

/// A room's storage after `n` chat messages, each from a viewer who came, wrote and left.
fn seeded(kind: &ActorKind, n: u64) -> MemoryStorage {
    let env = Arc::new(BenchEnv(START_MS.into()));
    let storage = MemoryStorage::default();
    let mut actor = kind.instantiate("bench", Box::new(storage.clone()), [], env).unwrap();
    for k in 0..n {
        let (from, text) = command(k);
        actor.on_connect(ConnId(k), viewer(from), None).unwrap();
        actor.on_message(ConnId(k), &text).unwrap();
        actor.on_close(ConnId(k)).unwrap();
    }
    storage
}

fn get_state(actor: &mut liveshop_edge::Actor) {
    let req = HttpRequest { method: "GET".into(), path: "/state".into(), ..Default::default() };
    let reply = actor.on_request(req).unwrap().reply.unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
}

/// `GET /state` to a hibernated room (instantiated and restored for it), then to a live one.
fn revival(c: &mut Criterion, kind: &ActorKind, revived: &Tally, live: &Tally) {
    let storage = seeded(kind, REVIVAL_HISTORY);
    let env: Arc<dyn Env> = Arc::new(BenchEnv(START_MS.into()));
    let name = format!("GET /state, hibernated room with {REVIVAL_HISTORY} messages");
    c.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                get_state(
                    &mut kind.instantiate("bench", Box::new(storage.clone()), [], env.clone()).unwrap(),
                );
            }
            revived.add(iters, start.elapsed())
        })
    });
    let mut actor = kind.instantiate("bench", Box::new(storage), [], env).unwrap();
    c.bench_function(&format!("GET /state, live room with {REVIVAL_HISTORY} messages"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                get_state(&mut actor);
            }
            live.add(iters, start.elapsed())
        })
    });
}

fn load(pooling: bool) -> ActorKind {
    let config = RuntimeConfig { max_actors: 16, pooling, ..RuntimeConfig::default() };
    let runtime = Runtime::new(config).unwrap();
    let started = Instant::now();
    let kind = runtime.load(ROOM_COMPONENT).unwrap();
    let how = if pooling { "pooling" } else { "on-demand" };
    eprintln!("compiled the room component ({how} engine) in {:.2?}", started.elapsed());
    kind
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    let pooled = load(true);
    let on_demand = load(false);

    let [native, component, repeated, pooled_new, on_demand_new, revived, live] = Default::default();
    native_commands(&mut c, &native);
    component_commands(&mut c, "chat command, room component on wasmtime", command, &pooled, &component);
    let name = "chat command, room component on wasmtime, texts said before";
    component_commands(&mut c, name, repeated_command, &pooled, &repeated);
    instantiation(&mut c, "instantiate room component, pooling allocator", &pooled, &pooled_new);
    instantiation(&mut c, "instantiate room component, on demand", &on_demand, &on_demand_new);
    revival(&mut c, &pooled, &revived, &live);
    c.final_summary();

    let per_sec = |t: &Tally| 1.0 / t.per_iter().as_secs_f64();
    let ratio = |a: &Tally, b: &Tally| a.per_iter().as_secs_f64() / b.per_iter().as_secs_f64();
    if native.iters.get() == 0 {
        return; // filtered out, or `cargo test --benches`
    }
    println!("\n== summary ({VIEWERS} viewers, chat.send with ack + broadcast) ==");
    println!("commands/s  native room core     {:>12.0}", per_sec(&native));
    println!("commands/s  component (wasmtime) {:>12.0}", per_sec(&component));
    println!("ratio       native / component   {:>12.2}x", ratio(&component, &native));
    println!("commands/s  component, said before {:>10.0}", per_sec(&repeated));
    println!("ratio       said before / new    {:>12.2}x", ratio(&component, &repeated));
    println!("instantiate pooling allocator    {:>12.2?}", pooled_new.per_iter());
    println!("instantiate on demand            {:>12.2?}", on_demand_new.per_iter());
    println!("ratio       on-demand / pooling  {:>12.2}x", ratio(&on_demand_new, &pooled_new));
    println!("== GET /state, room with {REVIVAL_HISTORY} messages ==");
    println!("hibernated (revived for it)      {:>12.2?}", revived.per_iter());
    println!("live                             {:>12.2?}", live.per_iter());
    println!(
        "revival: hibernated - live       {:>12.2?}",
        revived.per_iter().saturating_sub(live.per_iter())
    );
    println!("ratio       hibernated / live    {:>12.2}x", ratio(&revived, &live));
}
