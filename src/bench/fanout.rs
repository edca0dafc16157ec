//! Fan-out: many viewers in one room, one host sending chat at a fixed rate.
//!
//! Each message carries its sequence number (see [`client::chat_frame`]); the host notes when it
//! wrote each one, and each viewer how long after that it arrived. The server's CPU is measured
//! while the host sends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use liveshop_identity::Role;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::client::{self, SendTimes, Target, WRITE_TIMEOUT};
use super::cpu::{self, CpuUsage};
use super::stats::Summary;

/// The whole connect phase may take at most this long.
const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(120);
/// Time for the room to settle (presence updates, queued frames) between connecting and sending.
const SETTLE: Duration = Duration::from_secs(1);
/// How long after the last message viewers may still be receiving.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct FanoutPlan {
    pub viewers: usize,
    /// Chat messages per second the host sends.
    pub rate: f64,
    pub seconds: f64,
    /// Connections being opened at once.
    pub connect_parallel: usize,
}

impl FanoutPlan {
    pub fn messages(&self) -> u64 {
        (self.rate * self.seconds).round().max(1.0) as u64
    }
}

#[derive(Debug, Default)]
pub struct FanoutResult {
    pub connected: usize,
    pub connect_time: Duration,
    /// CPU while the viewers connected.
    pub connect_cpu: CpuUsage,
    pub sent: u64,
    pub send_time: Duration,
    /// How far behind its schedule the host fell at worst.
    pub sender_late: Duration,
    pub deliveries: u64,
    pub expected: u64,
    /// Viewers that received every message.
    pub complete: usize,
    pub latency: Option<Summary>,
    pub delivered_per_sec: f64,
    pub cpu: CpuUsage,
    /// Viewers whose connection ended during the run, by how it ended.
    pub ended: BTreeMap<String, usize>,
    pub acks: u64,
    pub sender_errors: BTreeMap<String, u64>,
    /// Frames and bytes viewers received (every kind of frame).
    pub frames: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct ViewerOutcome {
    latencies: Vec<u32>,
    last_delivery: Option<Instant>,
    frames: u64,
    bytes: u64,
    ended: Option<String>,
}

/// Counters the viewers share with the run, to know when every message has arrived.
#[derive(Default)]
struct Progress {
    /// Viewers that have the last message.
    done: AtomicUsize,
    /// Viewers whose connection ended early.
    gone: AtomicUsize,
}

pub async fn run(target: &Target, room: &str, plan: &FanoutPlan) -> anyhow::Result<FanoutResult> {
    let total = plan.messages();
    let mut result = FanoutResult { sent: total, ..FanoutResult::default() };
    let progress = Arc::new(Progress::default());
    let times = Arc::new(SendTimes::new(total));
    let (stop, stopped) = watch::channel(false);

    // Connect every viewer, a bounded number at a time.
    let cpu_connecting = cpu::sample()?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(plan.connect_parallel.max(1)));
    let (ready_tx, mut ready) = mpsc::channel(1024);
    let mut viewers = Vec::with_capacity(plan.viewers);
    for i in 0..plan.viewers {
        let url = target.url(room, &format!("viewer-{i}"), Role::Viewer)?;
        let task =
            viewer(url, gate.clone(), ready_tx.clone(), stopped.clone(), times.clone(), progress.clone());
        viewers.push(tokio::spawn(task));
    }
    drop(ready_tx);
    let deadline = tokio::time::Instant::now() + CONNECT_PHASE_LIMIT;
    let (mut failed, mut first_error) = (0usize, None);
    while let Some(r) = tokio::time::timeout_at(deadline, ready.recv())
        .await
        .map_err(|_| anyhow::anyhow!("connecting viewers took over {CONNECT_PHASE_LIMIT:?}"))?
    {
        match r {
            Ok(()) => {
                result.connected += 1;
                if result.connected.is_multiple_of(1000) {
                    eprintln!("bench:   {} viewers connected", result.connected);
                }
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    result.connect_time = started.elapsed();
    result.connect_cpu = cpu::usage(&cpu_connecting, &cpu::sample()?);
    if let Some(e) = first_error {
        let _ = stop.send(true);
        return Err(e.context(format!("{failed} of {} viewers could not connect", plan.viewers)));
    }
    let host = client::connect(&target.url(room, "bench-host", Role::Host)?).await.context("the host")?;
    let (mut sink, stream) = host.split();
    let host_reader = tokio::spawn(read_acks(stream, stopped.clone()));
    tokio::time::sleep(SETTLE).await;

    // Send on a fixed schedule; a late tick sends at once rather than dropping a message.
    eprintln!("bench:   sending {total} messages at {}/s to {} viewers", plan.rate, result.connected);
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let cpu_before = cpu::sample()?;
    let first_send = Instant::now();
    let schedule = tokio::time::Instant::now();
    for seq in 0..total {
        let due = schedule + period.mul_f64(seq as f64);
        tokio::time::sleep_until(due).await;
        result.sender_late = result.sender_late.max(tokio::time::Instant::now().duration_since(due));
        let frame = client::chat_frame(&format!("m{seq}"), seq);
        times.mark(seq);
        tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::text(frame)))
            .await
            .context("the host's write timed out")?
            .context("the host's connection failed")?;
    }
    result.send_time = first_send.elapsed();
    result.cpu = cpu::usage(&cpu_before, &cpu::sample()?);

    // Wait for the last message to reach every viewer still connected.
    let drain_until = Instant::now() + DRAIN_LIMIT;
    while progress.done.load(Ordering::Relaxed) + progress.gone.load(Ordering::Relaxed) < result.connected
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    // The reader first, so the end of the host's connection is not counted as an error.
    (result.acks, result.sender_errors) = host_reader.await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;

    let mut latencies = Vec::with_capacity(result.connected * total as usize);
    let mut last_delivery = first_send;
    for v in viewers {
        let v = v.await?;
        result.deliveries += v.latencies.len() as u64;
        if v.latencies.len() as u64 == total {
            result.complete += 1;
        }
        latencies.extend_from_slice(&v.latencies);
        last_delivery = last_delivery.max(v.last_delivery.unwrap_or(first_send));
        result.frames += v.frames;
        result.bytes += v.bytes;
        if let Some(why) = v.ended {
            *result.ended.entry(why).or_default() += 1;
        }
    }
    result.expected = result.connected as u64 * total;
    result.latency = Summary::of(&mut latencies);
    let window = last_delivery.duration_since(first_send).as_secs_f64();
    result.delivered_per_sec = if window > 0.0 { result.deliveries as f64 / window } else { 0.0 };
    Ok(result)
}

/// One viewer: connects (holding a permit of `gate`), says so on `ready`, then notes every
/// chat message's latency until `stop`.
async fn viewer(
    url: String,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<anyhow::Result<()>>,
    mut stop: watch::Receiver<bool>,
    times: Arc<SendTimes>,
    progress: Arc<Progress>,
) -> ViewerOutcome {
    let last_seq = times.len() - 1;
    let mut out = ViewerOutcome::default();
    let Some(mut ws) = client::connect_gated(&url, &gate, ready).await else { return out };
    out.latencies.reserve(times.len() as usize);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    out.frames += 1;
                    out.bytes += text.len() as u64;
                    if let Some((seq, sent)) = client::parse_chat(&text).and_then(|s| Some((s, times.get(s)?))) {
                        let latency = client::now_us().saturating_sub(sent);
                        out.latencies.push(latency.min(u64::from(u32::MAX)) as u32);
                        out.last_delivery = Some(Instant::now());
                        if seq == last_seq {
                            progress.done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    out.ended = Some(client::ended(msg));
                    progress.gone.fetch_add(1, Ordering::Relaxed);
                    return out;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    out
}

/// The host's incoming side: counts `ack`s and `error`s (by code) until `stop`.
pub(super) async fn read_acks(
    mut stream: futures_util::stream::SplitStream<client::Ws>,
    mut stop: watch::Receiver<bool>,
) -> (u64, BTreeMap<String, u64>) {
    let (mut acks, mut errors) = (0, BTreeMap::new());
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if text.contains(r#""type":"ack""#) {
                        acks += 1;
                    } else if let Some(code) = client::error_code(&text) {
                        *errors.entry(code).or_default() += 1;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    *errors.entry(format!("host connection {}", client::ended(msg))).or_default() += 1;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    (acks, errors)
}
