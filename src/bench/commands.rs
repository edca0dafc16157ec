//! Commands per second into one room: host connections pipelining `chat.send` as fast as the
//! answers come back, with a bounded number in flight per connection.
//!
//! On the node the answer is the `ack`, sent only once the message is stored; on the bare server
//! it is the relayed frame itself. Either way a connection's answers come back in order, and each
//! command's id carries its send time, so no bookkeeping is shared between writer and reader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use liveshop_identity::Role;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::{self, Target, WRITE_TIMEOUT, Ws};
use super::cpu::{self, CpuUsage};
use super::stats::Summary;

/// How long after the run answers to commands still in flight are waited for.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Most frames written per flush: bounds the write buffer and keeps answers flowing.
const WRITE_BATCH: usize = 64;

#[derive(Debug, Clone)]
pub struct CommandsPlan {
    pub connections: usize,
    /// Commands in flight per connection.
    pub window: usize,
    pub seconds: f64,
}

#[derive(Debug, Default)]
pub struct CommandsResult {
    pub sent: u64,
    /// Commands answered before the run's end.
    pub answered_in_time: u64,
    pub per_sec: f64,
    /// From writing a command to its answer.
    pub latency: Option<Summary>,
    pub errors: BTreeMap<String, u64>,
    /// Commands never answered, even after the drain.
    pub unanswered: u64,
    pub cpu: CpuUsage,
}

#[derive(Default)]
struct ConnOutcome {
    sent: u64,
    answered: u64,
    answered_in_time: u64,
    latencies: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

pub async fn run(target: &Target, room: &str, plan: &CommandsPlan) -> anyhow::Result<CommandsResult> {
    let mut conns = Vec::with_capacity(plan.connections);
    for k in 0..plan.connections {
        let url = target.url(room, &format!("bench-commander-{k}"), Role::Host)?;
        conns.push(client::connect(&url).await.with_context(|| format!("command connection {k}"))?);
    }
    let run_for = Duration::from_secs_f64(plan.seconds);
    let cpu_before = cpu::sample()?;
    let end = Instant::now() + run_for;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(k, ws)| tokio::spawn(pipeline(ws, k, plan.window.max(1), end)))
        .collect();
    tokio::time::sleep_until(end).await;
    let cpu = cpu::usage(&cpu_before, &cpu::sample()?);
    let mut result = CommandsResult { cpu, ..CommandsResult::default() };
    let mut latencies = Vec::new();
    for t in tasks {
        let c = t.await?;
        result.sent += c.sent;
        result.answered_in_time += c.answered_in_time;
        result.unanswered += c.sent.saturating_sub(c.answered);
        latencies.extend_from_slice(&c.latencies);
        for (code, n) in c.errors {
            *result.errors.entry(code).or_default() += n;
        }
    }
    result.per_sec = result.answered_in_time as f64 / run_for.as_secs_f64();
    result.latency = Summary::of(&mut latencies);
    Ok(result)
}

/// One connection: writes commands while fewer than `window` are unanswered, until `end`; then
/// waits (bounded) for the rest of the answers.
async fn pipeline(ws: Ws, k: usize, window: usize, end: Instant) -> ConnOutcome {
    let (sink, stream) = ws.split();
    let permits = Arc::new(Semaphore::new(window));
    let (sent_tx, sent_rx) = oneshot::channel();
    let ((), out) =
        tokio::join!(write(sink, k, permits.clone(), end, sent_tx), read(stream, k, permits, end, sent_rx));
    out
}

async fn write(
    mut sink: SplitSink<Ws, Message>,
    k: usize,
    permits: Arc<Semaphore>,
    end: Instant,
    sent: oneshot::Sender<(u64, Option<String>)>,
) {
    let mut n = 0u64;
    let failure = loop {
        let first = tokio::select! {
            p = permits.acquire() => p,
            _ = tokio::time::sleep_until(end) => break None,
        };
        let Ok(first) = first else { break None };
        first.forget();
        let mut batch = 1;
        while batch < WRITE_BATCH {
            let Ok(p) = permits.try_acquire() else { break };
            p.forget();
            batch += 1;
        }
        let written = async {
            for _ in 0..batch {
                let id = format!("h{k}-{n}-{}", client::now_us());
                sink.feed(Message::text(client::chat_frame(&id, n))).await?;
                n += 1;
            }
            sink.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, written).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Some(format!("write failed: {e}")),
            Err(_) => break Some("write timed out".into()),
        }
    };
    let _ = sent.send((n, failure));
}

async fn read(
    mut stream: SplitStream<Ws>,
    k: usize,
    permits: Arc<Semaphore>,
    end: Instant,
    sent: oneshot::Receiver<(u64, Option<String>)>,
) -> ConnOutcome {
    let mine = format!(r#""id":"h{k}-"#);
    let mut out = ConnOutcome::default();
    let mut sent = std::pin::pin!(sent);
    let mut total: Option<u64> = None;
    let drain_until = end + DRAIN_LIMIT;
    loop {
        if total.is_some_and(|t| out.answered >= t) {
            break;
        }
        tokio::select! {
            s = &mut sent, if total.is_none() => {
                let (n, failure) = s.unwrap_or((0, Some("the writer vanished".into())));
                if let Some(f) = failure {
                    *out.errors.entry(f).or_default() += 1;
                }
                out.sent = n;
                total = Some(n);
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let Some(at) = text.find(&mine) else { continue };
                    out.answered += 1;
                    permits.add_permits(1);
                    if let Some(code) = client::error_code(&text) {
                        *out.errors.entry(code).or_default() += 1;
                        continue;
                    }
                    if Instant::now() <= end {
                        out.answered_in_time += 1;
                    }
                    // The id is `h{k}-{n}-{sent_us}`.
                    let id = &text[at + mine.len()..];
                    let sent_us = id.split(['-', '"']).nth(1).and_then(|s| s.parse::<u64>().ok());
                    if let Some(sent_us) = sent_us {
                        let latency = client::now_us().saturating_sub(sent_us);
                        out.latencies.push(latency.min(u64::from(u32::MAX)) as u32);
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    *out.errors.entry(format!("connection {}", client::ended(msg))).or_default() += 1;
                    break;
                }
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(drain_until) => break,
        }
    }
    if total.is_none() {
        // The reader stopped first (the connection ended): still learn what was sent.
        if let Ok(Ok((n, _))) = tokio::time::timeout(WRITE_TIMEOUT, sent).await {
            out.sent = n;
        }
    }
    out
}
