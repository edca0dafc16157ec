//! The same room scenario on the three hosts in one run: the edge node, the Cloudflare Worker in
//! workerd and the Spin app on this repository's Spin host, side by side, plus the Worker's size
//! and a room object's cold start; and a flash sale on Spin beside the edge node. Not tests: run
//! them with
//!
//! ```text
//! functions/cloudflare/build.sh
//! cargo test --release --test hosts_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Room: `LIVESHOP_BENCH_VIEWERS` (200) viewers watch one host send `LIVESHOP_BENCH_MESSAGES`
//! (150) chat messages at 15 a second; each frame's delivery time is measured from the send
//! (on Spin, viewers follow the room over server-sent events and the host POSTs). Then
//! `LIVESHOP_BENCH_SENDERS` (8) clients POST 100 commands each as fast as acks come: commands/s.
//!
//! Flash sale: `LIVESHOP_BENCH_BUYERS` (2,000) buyers, 64 at a time, each add one unit to a cart
//! and check out, for 100 units: checkouts/s on Spin and on the edge node, and on Spin the
//! compare-and-swap retries per checkout (the `liveshop-retries` header).

mod common;
mod conformance;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Client, temp_dir, token};
use conformance::{Host, Target, Workerd};
use futures_util::StreamExt;
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

/// Commands acknowledged per second: `senders` clients each POST 100 chat messages to
/// `/commands` (the way every host takes commands, Spin included), the next as soon as the last
/// is acked.
async fn commands_per_sec(t: &Target, senders: usize) -> f64 {
    const EACH: usize = 100;
    let show = t.new_show().await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|i| {
            let (t, show) = (t.clone(), show.clone());
            tokio::spawn(async move {
                let auth = format!("Bearer {}", token(&show, &format!("s{i}"), Role::Host));
                let path = format!("/v1/rooms/{show}/commands");
                for n in 0..EACH {
                    let cmd =
                        json!({"type": "chat.send", "id": format!("b{n}"), "text": format!("burst {i} {n}")});
                    let (status, ack) =
                        t.http("POST", &path, &[("Authorization", &auth)], &cmd.to_string()).await;
                    assert_eq!((status, &ack["type"]), (200, &json!("ack")), "{ack}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (senders * EACH) as f64 / start.elapsed().as_secs_f64()
}

struct Sale {
    checkouts_per_sec: f64,
    paid: usize,
    retries: u64,
}

/// `buyers` buyers, `IN_FLIGHT` at a time, each add a unit of the drop and check out.
async fn flash_sale(t: &Target, buyers: usize, units: u32) -> Sale {
    const IN_FLIGHT: usize = 64;
    let show = t.new_show().await;
    let merchant = conformance::merchant_of(t, &show);
    merchant.stock_a_drop(units).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}/v1/shows/{show}/shop", t.addr);
    let start = Instant::now();
    let results: Vec<(bool, u64)> = futures_util::stream::iter(0..buyers)
        .map(|b| {
            let (client, base, show) = (client.clone(), base.clone(), show.clone());
            async move {
                let auth = format!("Bearer {}", token(&show, &format!("b{b}"), Role::Viewer));
                let item = json!({ "sku": common::SKU, "quantity": 1 });
                let added = client
                    .post(format!("{base}/carts/b{b}/items"))
                    .header("authorization", &auth)
                    .json(&item)
                    .send()
                    .await
                    .unwrap();
                if !added.status().is_success() {
                    return (false, 0);
                }
                let r = client
                    .post(format!("{base}/checkout"))
                    .header("authorization", &auth)
                    .header("idempotency-key", format!("k{b}"))
                    .json(&json!({ "payment_method": "tok_visa" }))
                    .send()
                    .await
                    .unwrap();
                let retries = r.headers().get("liveshop-retries").and_then(|v| v.to_str().ok()?.parse().ok());
                (r.status().is_success(), retries.unwrap_or(0))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let paid = merchant.settled_orders().await.iter().filter(|o| o["payment"] == "paid").count();
    assert_eq!(paid, units as usize, "exactly the stock is sold");
    assert_eq!(results.iter().filter(|(ok, _)| *ok).count(), paid, "every confirmed checkout was paid");
    Sale {
        checkouts_per_sec: buyers as f64 / elapsed.as_secs_f64(),
        paid,
        retries: results.iter().map(|(_, r)| r).sum(),
    }
}

fn size(path: &Path) -> (u64, u64) {
    use std::io::Write;
    let raw = std::fs::read(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&raw).unwrap();
    (raw.len() as u64, gz.finish().unwrap().len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test --release --test hosts_bench -- --ignored --nocapture --test-threads 1"]
async fn room_scenario_on_three_hosts() {
    assert!(Workerd::built(), "build the Worker first: functions/cloudflare/build.sh");
    let (viewers, messages) =
        (setting("LIVESHOP_BENCH_VIEWERS", 200), setting("LIVESHOP_BENCH_MESSAGES", 150));
    let senders = setting("LIVESHOP_BENCH_SENDERS", 8);
    let hosts = [Host::edge().await.unwrap(), Host::workerd().await.unwrap(), Host::spin().await.unwrap()];
    let mut figures = Vec::new();
    for host in &hosts {
        let room = scenario(&host.target, viewers, messages).await;
        let rate = commands_per_sec(&host.target, senders).await;
        figures.push((room, rate));
    }
    let [(e, e_rate), (w, w_rate), (s, s_rate)] = <[_; 3]>::try_from(figures).ok().unwrap();
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-9);
    println!("\nroom scenario: {viewers} viewers, {messages} messages at 15/s, one host");
    println!(
        "{:<22}{:>12}{:>12}{:>12}{:>14}{:>14}",
        "", "edge node", "workerd", "spin", "workerd/edge", "spin/edge"
    );
    for (name, a, b, c) in [
        ("delivery p50", e.p50, w.p50, s.p50),
        ("delivery p99", e.p99, w.p99, s.p99),
        ("delivery max", e.max, w.max, s.max),
    ] {
        println!(
            "{name:<22}{:>12}{:>12}{:>12}{:>13.2}x{:>13.2}x",
            format!("{a:.2?}"),
            format!("{b:.2?}"),
            format!("{c:.2?}"),
            ratio(a, b),
            ratio(a, c)
        );
    }
    println!(
        "{:<22}{:>12.0}{:>12.0}{:>12.0}{:>13.2}x{:>13.2}x",
        format!("commands/s ({senders} senders)"),
        e_rate,
        w_rate,
        s_rate,
        w_rate / e_rate,
        s_rate / e_rate
    );
    println!(
        "{:<22}{:>12}{:>12}{:>12}",
        "frames delivered",
        format!("{}/{}", e.delivered, e.expected),
        format!("{}/{}", w.delivered, w.expected),
        format!("{}/{}", s.delivered, s.expected)
    );
    println!(
        "{:<22}{:>12}{:>12}{:>12}",
        "run time",
        format!("{:.2?}", e.elapsed),
        format!("{:.2?}", w.elapsed),
        format!("{:.2?}", s.elapsed)
    );
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/cloudflare/build");
    let (raw, gz) = size(&build.join("index_bg.wasm"));
    println!("\nWorker .wasm: {:.1} KiB raw, {:.1} KiB gzipped", raw as f64 / 1024.0, gz as f64 / 1024.0);
    let (js, _) = size(&build.join("index.js"));
    println!("Worker index.js: {:.1} KiB", js as f64 / 1024.0);
    let (raw, gz) = size(&liveshop_spin_host::app::component().unwrap());
    println!("Spin app .wasm: {:.1} KiB raw, {:.1} KiB gzipped", raw as f64 / 1024.0, gz as f64 / 1024.0);
    let (cold, warm) = cold_start(&temp_dir("bench-cold")).await;
    println!(
        "room object, first connect after a restart (50 events to restore): {cold:.2?}; warm: {warm:.2?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test --release --test hosts_bench -- --ignored --nocapture --test-threads 1"]
async fn flash_sale_on_spin_beside_the_edge_node() {
    let buyers = setting("LIVESHOP_BENCH_BUYERS", 2_000);
    const UNITS: u32 = 100;
    let edge = flash_sale(&Host::edge().await.unwrap().target, buyers, UNITS).await;
    let spin = flash_sale(&Host::spin().await.unwrap().target, buyers, UNITS).await;
    println!("\nflash sale: {buyers} buyers (64 at a time) for {UNITS} units, add to cart + checkout each");
    println!("{:<30}{:>12}{:>12}{:>14}", "", "edge node", "spin", "spin/edge");
    println!(
        "{:<30}{:>12.0}{:>12.0}{:>13.2}x",
        "checkouts/s",
        edge.checkouts_per_sec,
        spin.checkouts_per_sec,
        spin.checkouts_per_sec / edge.checkouts_per_sec
    );
    println!("{:<30}{:>12}{:>12}", "orders paid", edge.paid, spin.paid);
    println!("{:<30}{:>12}{:>12.2}", "CAS retries per checkout", "-", spin.retries as f64 / buyers as f64);
}
