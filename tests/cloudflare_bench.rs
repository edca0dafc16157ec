//! The same room scenario against the edge node and the Cloudflare Worker in workerd, side by
//! side, plus the Worker's size and a room object's cold start. Not a test: run it with
//!
//! ```text
//! functions/cloudflare/build.sh
//! cargo test --release --test cloudflare_bench -- --ignored --nocapture
//! ```
//!
//! `LIVESHOP_BENCH_VIEWERS` (200) viewers watch one host send `LIVESHOP_BENCH_MESSAGES` (150)
//! chat messages at 15 a second; each frame's delivery time is measured from the send.

mod common;
mod conformance;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, temp_dir, token};
use conformance::{Host, Target, Workerd};
use liveshop_identity::Role;
use serde_json::json;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
    delivered: usize,
    expected: usize,
    elapsed: Duration,
}

async fn scenario(t: &Target, viewers: usize, messages: usize) -> Figures {
    let show = t.new_show().await;
    let mut clients = Vec::new();
    for i in 0..viewers {
        clients.push(t.connect(&show, &format!("v{i}"), Role::Viewer).await);
    }
    let start = Instant::now();
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while latencies.len() < messages {
                    let Some(f) = c.next().await else { break };
                    if f["type"] == "chat.message" {
                        let text = f["message"]["text"].as_str().unwrap();
                        let sent: u128 = text.rsplit(' ').next().unwrap().parse().unwrap();
                        latencies.push(start.elapsed().as_micros() - sent);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut host = t.connect(&show, "host", Role::Host).await;
    let every = Duration::from_millis(1000 / 15);
    for i in 0..messages {
        let at = start + every * i as u32;
        tokio::time::sleep_until(at.into()).await;
        host.send(json!({"type": "chat.send", "text": format!("m{i} {}", start.elapsed().as_micros())}))
            .await;
    }
    let mut all: Vec<u128> = Vec::new();
    for w in watchers {
        all.extend(w.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct =
        |p: f64| Duration::from_micros(all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as u64);
    Figures {
        p50: pct(0.50),
        p99: pct(0.99),
        max: pct(1.0),
        delivered: all.len(),
        expected: viewers * messages,
        elapsed,
    }
}

/// A room object's cold start: the first request to an existing room after workerd restarted
/// (isolate, Wasm instance and restore from SQLite), then the same request warm.
async fn cold_start(dir: &Path) -> (Duration, Duration) {
    let w = Workerd::start(dir, &[("FRAMES_PER_CONN_PER_SEC", "1000")]);
    let t = Target::new(w.addr);
    let show = t.new_show().await;
    let mut host = t.connect(&show, "host", Role::Host).await;
    for i in 0..50 {
        host.chat(&format!("history {i}")).await;
    }
    drop(host);
    drop(w);
    let w = Workerd::start(dir, &[]);
    let t = Target::new(w.addr);
    let started = Instant::now();
    let c = Client::connect(&t.ws_url(&show, &token(&show, "late", Role::Viewer))).await;
    let cold = started.elapsed();
    assert_eq!(c.frames[0]["state"]["history"].as_array().unwrap().len(), 50);
    let started = Instant::now();
    Client::connect(&t.ws_url(&show, &token(&show, "later", Role::Viewer))).await;
    (cold, started.elapsed())
}

fn size(path: &Path) -> (u64, u64) {
    use std::io::Write;
    let raw = std::fs::read(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&raw).unwrap();
    (raw.len() as u64, gz.finish().unwrap().len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test --release --test cloudflare_bench -- --ignored --nocapture"]
async fn room_scenario_edge_vs_workerd() {
    assert!(Workerd::built(), "build the Worker first: functions/cloudflare/build.sh");
    let (viewers, messages) =
        (setting("LIVESHOP_BENCH_VIEWERS", 200), setting("LIVESHOP_BENCH_MESSAGES", 150));
    let edge = Host::edge().await.unwrap();
    let workerd = Host::workerd().await.unwrap();
    let e = scenario(&edge.target, viewers, messages).await;
    let w = scenario(&workerd.target, viewers, messages).await;
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    println!("\nroom scenario: {viewers} viewers, {messages} messages at 15/s, one host");
    println!("{:<22}{:>14}{:>14}{:>16}", "", "edge node", "workerd", "workerd/edge");
    for (name, a, b) in
        [("delivery p50", e.p50, w.p50), ("delivery p99", e.p99, w.p99), ("delivery max", e.max, w.max)]
    {
        println!("{name:<22}{:>14}{:>14}{:>15.2}x", format!("{a:.2?}"), format!("{b:.2?}"), ratio(a, b));
    }
    println!(
        "{:<22}{:>14}{:>14}",
        "frames delivered",
        format!("{}/{}", e.delivered, e.expected),
        format!("{}/{}", w.delivered, w.expected)
    );
    println!("{:<22}{:>14}{:>14}", "run time", format!("{:.2?}", e.elapsed), format!("{:.2?}", w.elapsed));
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/cloudflare/build");
    let (raw, gz) = size(&build.join("index_bg.wasm"));
    println!("\nWorker .wasm: {:.1} KiB raw, {:.1} KiB gzipped", raw as f64 / 1024.0, gz as f64 / 1024.0);
    let (js, _) = size(&build.join("index.js"));
    println!("Worker index.js: {:.1} KiB", js as f64 / 1024.0);
    let (cold, warm) = cold_start(&temp_dir("bench-cold")).await;
    println!(
        "room object, first connect after a restart (50 events to restore): {cold:.2?}; warm: {warm:.2?}"
    );
}
