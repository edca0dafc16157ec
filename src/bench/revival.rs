//! Revival: how long a command to a hibernated room takes, against the same command to a live
//! one.
//!
//! A node with a short `hibernate_after` holds one room with some chat history. The command is
//! `GET /v1/rooms/{room}/state` over a keep-alive connection: it goes through the room actor and
//! is answered straight away (not on the fan-out tick), so the difference between a live and a
//! hibernated room is the revival: a new room task, the instance from the pool, the state read
//! back from SQLite. The node's own `liveshop_actor_revive_seconds` (instantiation alone) is read
//! from its metrics beside it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use liveshop_identity::Role;
use tokio_tungstenite::tungstenite::Message;

use super::client::{self, Target};
use super::http::HttpConn;
use super::node::{RunningNode, bench_config, metric};
use super::stats::Summary;

const ROOM: &str = "bench-revive";
/// How long the room must be idle to hibernate: short, so each sample waits little.
pub const HIBERNATE_AFTER_SECS: f64 = 0.2;
/// Longest wait for the room to hibernate.
const HIBERNATE_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RevivalPlan {
    /// Commands to a hibernated room.
    pub samples: usize,
    /// Commands to the live room, back to back.
    pub live_samples: usize,
    /// Chat messages in the room before it is measured, so revival reads a real state.
    pub history: usize,
}

#[derive(Debug, Default)]
pub struct RevivalResult {
    pub live: Option<Summary>,
    pub revived: Option<Summary>,
    /// Hibernated samples whose command did not revive the room (should be none).
    pub not_revived: usize,
    /// Mean of the node's `liveshop_actor_revive_seconds` over the revived samples.
    pub instantiate_mean: Option<Duration>,
    pub state_bytes: usize,
}

pub async fn run(
    rt: &tokio::runtime::Handle,
    data_dir: &Path,
    plan: &RevivalPlan,
) -> anyhow::Result<RevivalResult> {
    let mut config = bench_config(data_dir, 16);
    config.hibernate_after_secs = HIBERNATE_AFTER_SECS;
    let node = RunningNode::start(rt, config, &[ROOM]).await?;
    let target = Target::Node { addr: node.addr, app: node.app.clone() };
    seed(&target, plan.history).await.context("filling the room's history")?;

    let metrics = node.app.node.metrics();
    let path = format!("/v1/rooms/{ROOM}/state");
    let mut http = HttpConn::connect(node.addr).await?;
    let mut result = RevivalResult::default();

    // Live: back to back, far inside the hibernation delay.
    result.state_bytes = timed_get(&mut http, &path).await?.1;
    let mut live = Vec::with_capacity(plan.live_samples);
    for _ in 0..plan.live_samples {
        live.push(timed_get(&mut http, &path).await?.0);
    }

    let render = || metrics.render();
    let (sum0, count0) = revive_histogram(&render());
    let mut revived = Vec::with_capacity(plan.samples);
    let mut not_revived = 0;
    for _ in 0..plan.samples {
        let hibernations = metrics.hibernations.get();
        let waiting = Instant::now();
        while metrics.hibernations.get() == hibernations {
            anyhow::ensure!(
                waiting.elapsed() < HIBERNATE_LIMIT,
                "the room did not hibernate within {HIBERNATE_LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let revivals = metrics.revivals.get();
        let (took, _) = timed_get(&mut http, &path).await?;
        if metrics.revivals.get() > revivals {
            revived.push(took);
        } else {
            not_revived += 1;
        }
    }
    let (sum1, count1) = revive_histogram(&render());
    result.live = Summary::of_durations(&live);
    result.revived = Summary::of_durations(&revived);
    result.not_revived = not_revived;
    if count1 > count0 {
        result.instantiate_mean = Some(Duration::from_secs_f64((sum1 - sum0) / (count1 - count0)));
    }
    drop(target);
    node.stop().await;
    Ok(result)
}

/// One `GET`, timed; and the body's size.
async fn timed_get(http: &mut HttpConn, path: &str) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let (status, body) = http.get(path).await?;
    let took = started.elapsed();
    anyhow::ensure!(status == 200, "GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    Ok((took, body.len()))
}

/// `(sum, count)` of the node's revival-time histogram.
fn revive_histogram(text: &str) -> (f64, f64) {
    (metric(text, "liveshop_actor_revive_seconds_sum"), metric(text, "liveshop_actor_revive_seconds_count"))
}

/// A host posts `n` chat messages and waits until every one is stored (acknowledged).
async fn seed(target: &Target, n: usize) -> anyhow::Result<()> {
    let ws = client::connect(&target.url(ROOM, "bench-host", Role::Host)?).await?;
    let (mut sink, mut stream) = ws.split();
    for i in 0..n {
        sink.feed(Message::text(client::chat_frame(&format!("s{i}"), i as u64))).await?;
    }
    sink.flush().await?;
    let mut acks = 0;
    let until = tokio::time::Instant::now() + client::CONNECT_TIMEOUT;
    while acks < n {
        let msg = tokio::time::timeout_at(until, stream.next()).await.context("waiting for acks")?;
        match msg {
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"ack""#) => acks += 1,
            Some(Ok(Message::Text(t))) => {
                if let Some(code) = client::error_code(&t) {
                    anyhow::bail!("the room refused a message: {code}");
                }
            }
            Some(Ok(_)) => {}
            other => anyhow::bail!("the host's connection {}", client::ended(other)),
        }
    }
    let _ = sink.close().await;
    Ok(())
}
