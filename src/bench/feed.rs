//! `liveshop bench feed`: the public feed behind a CDN cache (Varnish by default, or nginx; both
//! configured by [`cache`]), beside the same audience on WebSockets straight to the node.
//!
//! For each audience size, two phases, each on a fresh node:
//!
//! 1. **Feed through the cache**: every viewer holds one keep-alive connection to the cache and
//!    long-polls as the viewer page does (the snapshot, then `?after=<next>`, with `&wait=` after
//!    an empty round), while a host on a socket straight to the node sends chat at a fixed rate.
//!    The node's own `liveshop_feed_requests_total` says how many requests got past the cache.
//! 2. **WebSockets to the node**, the baseline: the same number of viewers, the same host.
//!
//! The viewers run in a child process ([`viewers`], `liveshop bench feed-viewers`), the node and
//! the host in this one: each process then holds one side of each connection (the open-files
//! limit is per process; 10,000 WebSockets with both ends in one process pass this machine's
//! 20,000), and the node's memory per viewer is measured alone.
//!
//! Latency is from each message's `at` (when the room logged it, on this machine's clock, in
//! milliseconds) to the viewer's receipt. Answers are scanned for what is measured rather than
//! parsed, so the load generator can keep up with large audiences on a small machine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use liveshop_identity::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::cache::{Cache, Kind};
use super::client::{self, Target, WRITE_TIMEOUT};
use super::cpu::{self, CpuUsage};
use super::http::HttpConn;
use super::node::{RunningNode, ScratchDir, ServerRuntime, bench_config, metric};
use super::report::{Table, latency_rows};
use super::stats::{Summary, count, ratio};
use super::{PAUSE, WORKERS, client_runtime, warnings_only};

const ROOM: &str = "bench-feed";
/// The whole connect phase may take at most this long.
const CONNECT_PHASE_LIMIT: Duration = Duration::from_secs(180);
/// Time for the room and the caches to settle between connecting and sending.
const SETTLE: Duration = Duration::from_secs(1);
/// How long after the last message viewers may still be receiving (a feed wait is up to 7.5 s).
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// Pause before a feed viewer asks again after a refusal or a lost connection.
const RETRY: Duration = Duration::from_millis(200);

#[derive(Args)]
pub struct FeedArgs {
    /// Audience sizes, comma-separated [default: 2000,10000; 200,1000 with --quick].
    #[arg(long, value_delimiter = ',')]
    viewers: Option<Vec<usize>>,
    /// Public events (chat messages) per second the host sends.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds the host sends for, at each size [default: 10; 4 with --quick].
    #[arg(long)]
    seconds: Option<f64>,
    /// Connections being opened at once while viewers join.
    #[arg(long, default_value_t = 64)]
    connect_parallel: usize,
    /// The cache in front of the node: `varnish` or `nginx`.
    #[arg(long, default_value = "varnish", value_parser = parse_cache)]
    cache: Kind,
    /// A smoke run: smaller audiences, shorter phases.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone)]
struct FeedPlan {
    sizes: Vec<usize>,
    rate: f64,
    seconds: f64,
    connect_parallel: usize,
    cache: Kind,
}

fn parse_cache(s: &str) -> Result<Kind, String> {
    match s {
        "varnish" => Ok(Kind::Varnish),
        "nginx" => Ok(Kind::Nginx),
        _ => Err("the cache is `varnish` or `nginx`".into()),
    }
}

impl FeedPlan {
    fn messages(&self) -> u64 {
        (self.rate * self.seconds).round().max(1.0) as u64
    }
}

impl FeedArgs {
    fn plan(&self) -> anyhow::Result<FeedPlan> {
        let q = self.quick;
        let plan = FeedPlan {
            sizes: self.viewers.clone().unwrap_or(if q { vec![200, 1000] } else { vec![2000, 10_000] }),
            rate: self.rate,
            seconds: self.seconds.unwrap_or(if q { 4.0 } else { 10.0 }),
            connect_parallel: self.connect_parallel,
            cache: self.cache,
        };
        anyhow::ensure!(
            !plan.sizes.is_empty() && plan.sizes.iter().all(|n| (1..=50_000).contains(n)),
            "--viewers must be sizes from 1 to 50000"
        );
        anyhow::ensure!(plan.rate > 0.0 && plan.rate <= 1000.0, "--rate must be above 0 and at most 1000");
        anyhow::ensure!(
            plan.seconds > 0.0 && plan.seconds <= 600.0,
            "--seconds must be above 0 and at most 600"
        );
        anyhow::ensure!((1..=1024).contains(&plan.connect_parallel), "--connect-parallel must be 1 to 1024");
        Ok(plan)
    }
}

/// How viewers follow the room.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
pub enum Way {
    /// Long-polling the public feed through the cache.
    Feed,
    /// A WebSocket straight to the node.
    Socket,
}

/// One audience on one way.
#[derive(Debug, Default)]
struct WayResult {
    connected: usize,
    /// Viewers that received every message once, in order.
    complete: usize,
    deliveries: u64,
    expected: u64,
    latency: Option<Summary>,
    /// While the host sent: requests viewers made to the cache, and those that reached the node.
    viewer_requests_per_sec: f64,
    node_requests_per_sec: f64,
    node_cpu: CpuUsage,
    /// While the host sent, in percent of one core: the cache's CPU, and the viewers' process's.
    cache_cpu: Option<f64>,
    viewers_cpu: f64,
    /// Resident memory added by connecting the viewers, per viewer: the node's process and the
    /// cache's.
    rss_per_viewer: f64,
    cache_rss_per_viewer: Option<f64>,
    /// Messages received out of order or twice, and feed answers that restarted from a snapshot.
    disorder: u64,
    restarts: u64,
    /// Refusals, lost connections and the like, by kind.
    errors: BTreeMap<String, u64>,
}

struct SizeResult {
    viewers: usize,
    feed: WayResult,
    socket: WayResult,
}

pub fn run(args: &FeedArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    let kind = plan.cache;
    let bin = kind.find().with_context(|| {
        format!("liveshop bench feed needs {} (apt-get install {})", kind.name(), kind.package())
    })?;
    let largest = plan.sizes.iter().copied().max().unwrap_or(1);
    // This process holds the node's side of every viewer's connection.
    cpu::raise_nofile(largest as u64 + 1024)?;
    warnings_only();
    let scratch = ScratchDir::new()?;
    let clients = client_runtime()?;
    let results = clients.block_on(async {
        let mut results = Vec::new();
        for (i, &n) in plan.sizes.iter().enumerate() {
            let dir = |what: &str| scratch.0.join(format!("{what}-{i}"));
            eprintln!("bench: {n} feed viewers through {}", kind.name());
            let feed = audience(Way::Feed, n, &plan, &bin, &dir("feed")).await.context("the feed")?;
            tokio::time::sleep(PAUSE).await;
            eprintln!("bench: {n} WebSocket viewers on the node");
            let socket = audience(Way::Socket, n, &plan, &bin, &dir("ws")).await.context("the sockets")?;
            tokio::time::sleep(PAUSE).await;
            results.push(SizeResult { viewers: n, feed, socket });
        }
        anyhow::Ok(results)
    })?;
    clients.shutdown_timeout(Duration::from_secs(1));
    print!("{}", render(&plan, &results));
    Ok(())
}

/// What the viewers share with the run.
struct Shared {
    /// Messages the host sends; each viewer expects `0..total`.
    total: u64,
    /// Requests viewers have made (the feed's).
    requests: AtomicU64,
    /// Viewers that have the last message, and those whose connection ended for good.
    done: AtomicUsize,
    gone: AtomicUsize,
}

/// What one viewer saw.
#[derive(Default)]
struct Seen {
    latencies: Vec<u32>,
    next: u64,
    got: u64,
    disorder: u64,
    restarts: u64,
    errors: BTreeMap<String, u64>,
}

impl Seen {
    fn chat(&mut self, seq: u64, at_ms: u64, shared: &Shared) {
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        self.latencies.push(now_us.saturating_sub(at_ms * 1000).min(u64::from(u32::MAX)) as u32);
        if seq != self.next {
            self.disorder += 1;
        }
        self.next = seq + 1;
        self.got += 1;
        if seq + 1 == shared.total {
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }
}

/// Every `chat.message` event in a feed answer or socket frame: its chat sequence number (see
/// [`client::chat_frame`]) and the room's `at`. An event frame is written `epoch`, `seq`, `at`,
/// then `type` (`liveshop_room::EventFrame`), so an event's `at` is the last one before its type.
fn chats(text: &str, mut each: impl FnMut(u64, u64)) {
    const TYPE: &str = r#""type":"chat.message""#;
    const AT: &str = r#""at":"#;
    let mut from = 0;
    while let Some(i) = text[from..].find(TYPE).map(|i| from + i) {
        let at = text[..i].rfind(AT).and_then(|j| number(&text[j + AT.len()..]));
        if let (Some(at), Some(seq)) = (at, client::parse_chat(&text[i..])) {
            each(seq, at);
        }
        from = i + TYPE.len();
    }
}

fn number(s: &str) -> Option<u64> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// The query that follows a feed answer, and whether the answer was a snapshot (`state`, no
/// `events`). `next` comes before `events`; `wait` is the answer's last field.
fn follow_up(body: &str) -> Option<(String, bool)> {
    let head = &body[..body.find(r#""events":["#).unwrap_or(body.len())];
    let next = head.split(r#""next":""#).nth(1)?.split('"').next()?;
    // (`get`: the cut may fall inside a character.)
    let tail = body.get(body.len().saturating_sub(32)..).unwrap_or(body);
    let wait = tail.rsplit_once(r#","wait":"#).and_then(|(_, w)| number(w));
    let query = match wait {
        Some(w) => format!("?after={next}&wait={w}"),
        None => format!("?after={next}"),
    };
    Some((query, head.contains(r#""state":"#)))
}

/// One feed viewer on its own keep-alive connection to `addr`.
async fn feed_viewer(
    addr: std::net::SocketAddr,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<anyhow::Result<()>>,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> Seen {
    let path = format!("/v1/rooms/{ROOM}/feed");
    let mut seen = Seen::default();
    let first = {
        let _permit = gate.acquire().await;
        match HttpConn::connect(addr).await {
            Ok(mut conn) => conn.get(&path).await.map(|answer| (conn, answer)),
            Err(e) => Err(e),
        }
    };
    let (mut conn, mut answer) = match first {
        Ok((conn, (200, body))) => (Some(conn), Ok((200, body))),
        Ok((_, (status, body))) => {
            let body = String::from_utf8_lossy(&body).into_owned();
            let _ = ready.send(Err(anyhow::anyhow!("the snapshot: HTTP {status}: {body}"))).await;
            return seen;
        }
        Err(e) => {
            let _ = ready.send(Err(e.context("the snapshot"))).await;
            return seen;
        }
    };
    let _ = ready.send(Ok(())).await;
    drop(ready);
    let mut query = String::new();
    loop {
        match answer {
            Ok((200, body)) => match std::str::from_utf8(&body).ok().and_then(follow_up) {
                Some((next, snapshot)) => {
                    if snapshot && !query.is_empty() {
                        seen.restarts += 1;
                    }
                    chats(std::str::from_utf8(&body).unwrap_or_default(), |seq, at| {
                        seen.chat(seq, at, &shared)
                    });
                    query = next;
                }
                None => seen.error("an answer without next".into()),
            },
            Ok((status, _)) => {
                seen.error(format!("HTTP {status}"));
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => {
                seen.error(format!("{e:#}").chars().take(60).collect());
                conn = None;
                tokio::time::sleep(RETRY).await;
            }
        }
        let request = async {
            if conn.is_none() {
                conn = Some(HttpConn::connect(addr).await?);
            }
            conn.as_mut().expect("connected").get(&format!("{path}{query}")).await
        };
        answer = tokio::select! {
            _ = stop.changed() => return seen,
            a = request => a,
        };
        shared.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// One WebSocket viewer straight to the node.
async fn socket_viewer(
    url: String,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<anyhow::Result<()>>,
    mut stop: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> Seen {
    let mut seen = Seen::default();
    let Some(mut ws) = client::connect_gated(&url, &gate, ready).await else { return seen };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => chats(&text, |seq, at| seen.chat(seq, at, &shared)),
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    seen.error(client::ended(msg));
                    shared.gone.fetch_add(1, Ordering::Relaxed);
                    return seen;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    seen
}

/// `n` viewers following the room `way`, while a host sends: see the module docs. The node's
/// data goes in `dir`, the cache's files beside it: not inside, as the node keeps its data
/// directory to itself and the cache's workers (unprivileged, when started by root) must reach
/// theirs.
async fn audience(way: Way, n: usize, plan: &FeedPlan, bin: &Path, dir: &Path) -> anyhow::Result<WayResult> {
    let server = ServerRuntime::new(WORKERS)?;
    let mut config = bench_config(dir, n + 64);
    // The cache is the node's only direct client on the feed; it says who the viewer is.
    config.client_ip_header = Some("X-Forwarded-For".into());
    config.trusted_proxies = vec!["127.0.0.1".parse().map_err(anyhow::Error::msg)?];
    config.feed_reads_per_ip_burst = 1_000_000;
    config.feed_reads_per_ip_per_sec = 1_000_000;
    let node = RunningNode::start(server.handle(), config, &[ROOM]).await?;
    let target = Target::Node { addr: node.addr, app: node.app.clone() };
    let cache = match way {
        Way::Feed => Some(Cache::start(plan.cache, bin, &dir.with_extension("cache"), node.addr, n + 64)?),
        Way::Socket => None,
    };
    let cache_usage = || cache.as_ref().map(|x| cpu::group_usage(x.pid())).transpose();
    let mut result = WayResult::default();
    // Memory earlier phases freed would otherwise be reused unseen and hide this phase's growth.
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
    let rss_before = (cpu::own_rss()?, cache_usage()?.map(|u| u.1));

    let urls = match way {
        Way::Feed => Vec::new(),
        Way::Socket => (0..n)
            .map(|i| target.url(ROOM, &format!("viewer-{i}"), Role::Viewer))
            .collect::<Result<_, _>>()?,
    };
    let mut viewers = ViewerProcess::spawn(way, n, plan, cache.as_ref().map(|c| c.addr), &urls).await?;
    drop(urls);
    result.connected = viewers.connected().await?;
    tokio::time::sleep(SETTLE).await;
    let rss_after = (cpu::own_rss()?, cache_usage()?.map(|u| u.1));
    result.rss_per_viewer = rss_after.0.saturating_sub(rss_before.0) as f64 / n as f64;
    result.cache_rss_per_viewer =
        rss_after.1.zip(rss_before.1).map(|(a, b)| a.saturating_sub(b) as f64 / n as f64);

    let (stop, stopped) = watch::channel(false);
    let host = client::connect(&target.url(ROOM, "bench-host", Role::Host)?).await.context("the host")?;
    let (mut sink, stream) = host.split();
    let host_reader = tokio::spawn(super::fanout::read_acks(stream, stopped));
    let metrics = node.app.node.metrics();
    let node_requests = || metric(&metrics.render(), "liveshop_feed_requests_total");
    // The node's and the viewers' request counts, the node's CPU, the cache's and the viewers'
    // process's usage: read before and after the host sends.
    let read = async |viewers: &mut ViewerProcess| -> anyhow::Result<_> {
        let requests = viewers.requests().await?;
        let usage = cpu::group_usage(viewers.pid())?;
        anyhow::Ok((node_requests(), requests, cpu::sample()?, cache_usage()?, usage))
    };
    let before = read(&mut viewers).await?;
    let started = Instant::now();
    let schedule = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let total = plan.messages();
    for seq in 0..total {
        tokio::time::sleep_until(schedule + period.mul_f64(seq as f64)).await;
        tokio::time::timeout(
            WRITE_TIMEOUT,
            sink.send(Message::text(client::chat_frame(&format!("m{seq}"), seq))),
        )
        .await
        .context("the host's write timed out")?
        .context("the host's connection failed")?;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = read(&mut viewers).await?;
    result.node_cpu = cpu::usage(&before.2, &after.2);
    result.viewers_cpu = 100.0 * (after.4.0 - before.4.0) / secs;
    let mut others = result.node_cpu.others - result.viewers_cpu;
    if let Some(((a, _), (b, _))) = after.3.zip(before.3) {
        let cache = 100.0 * (a - b) / secs;
        result.cache_cpu = Some(cache);
        others -= cache;
    }
    // The cache and the viewers are other processes; what is left is the rest of the machine.
    result.node_cpu.others = others.max(0.0);
    if way == Way::Feed {
        result.node_requests_per_sec = (after.0 - before.0) / secs;
        result.viewer_requests_per_sec = after.1.saturating_sub(before.1) as f64 / secs;
    }

    let seen = viewers.finish().await?;
    let _ = stop.send(true);
    let (_, host_errors) = host_reader.await?;
    for (what, n) in host_errors {
        *result.errors.entry(format!("host: {what}")).or_default() += n;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    result.complete = seen.complete;
    result.deliveries = seen.deliveries;
    result.disorder = seen.disorder;
    result.restarts = seen.restarts;
    result.latency = seen.latency;
    result.errors.extend(seen.errors);
    result.expected = result.connected as u64 * total;
    drop(cache);
    drop(target);
    node.stop().await;
    drop(server);
    Ok(result)
}

/// `liveshop bench feed-viewers` (hidden): the viewers of one audience, in a process of their
/// own, started by `liveshop bench feed` ([`ViewerProcess`]). They talk to it in lines: the
/// socket viewers' URLs come on stdin, one per viewer; once the viewers have joined, stdout says
/// `connected <n>` (or `failed <error>`); stdin `requests` asks for the feed requests made so far
/// (`requests <n>`), and `finish` for the outcome once every viewer has the last message or the
/// drain limit passed (`result <json>`), after which the process ends.
#[derive(Args)]
pub struct ViewersArgs {
    #[arg(long, value_enum)]
    way: Way,
    /// The cache the feed viewers poll.
    #[arg(long, required_if_eq("way", "feed"))]
    cache: Option<SocketAddr>,
    #[arg(long)]
    viewers: usize,
    /// Messages the host sends: each viewer expects `0..messages`.
    #[arg(long)]
    messages: u64,
    #[arg(long)]
    connect_parallel: usize,
}

pub fn viewers(args: &ViewersArgs) -> anyhow::Result<()> {
    cpu::raise_nofile(args.viewers as u64 + 1024)?;
    warnings_only();
    let clients = client_runtime()?;
    clients.block_on(serve_viewers(args))?;
    clients.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn serve_viewers(args: &ViewersArgs) -> anyhow::Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let shared = Arc::new(Shared {
        total: args.messages,
        requests: AtomicU64::new(0),
        done: AtomicUsize::new(0),
        gone: AtomicUsize::new(0),
    });
    let (stop, stopped) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.connect_parallel));
    let (ready_tx, mut ready) = mpsc::channel(1024);
    let mut viewers = Vec::with_capacity(args.viewers);
    for _ in 0..args.viewers {
        let (gate, ready, stopped, shared) =
            (gate.clone(), ready_tx.clone(), stopped.clone(), shared.clone());
        viewers.push(match (args.way, args.cache) {
            (Way::Feed, Some(cache)) => tokio::spawn(feed_viewer(cache, gate, ready, stopped, shared)),
            (Way::Feed, None) => anyhow::bail!("feed viewers need --cache"),
            (Way::Socket, _) => {
                let url = input.next_line().await?.context("a WebSocket URL per viewer on stdin")?;
                tokio::spawn(socket_viewer(url, gate, ready, stopped, shared))
            }
        });
    }
    drop(ready_tx);
    let deadline = tokio::time::Instant::now() + CONNECT_PHASE_LIMIT;
    let (mut connected, mut first_error) = (0, None);
    loop {
        match tokio::time::timeout_at(deadline, ready.recv()).await {
            Ok(Some(Ok(()))) => connected += 1,
            Ok(Some(Err(e))) => _ = first_error.get_or_insert(e),
            Ok(None) => break,
            Err(_) => {
                _ = first_error
                    .get_or_insert(anyhow::anyhow!("connecting took over {CONNECT_PHASE_LIMIT:?}"));
                break;
            }
        }
    }
    if let Some(e) = first_error {
        let _ = stop.send(true);
        let why = format!(
            "{:#}",
            e.context(format!("{} of {} viewers could not connect", args.viewers - connected, args.viewers))
        );
        println!("failed {}", why.replace('\n', " "));
        return Ok(());
    }
    println!("connected {connected}");
    loop {
        match input.next_line().await?.as_deref() {
            Some("requests") => println!("requests {}", shared.requests.load(Ordering::Relaxed)),
            Some("finish") => break,
            Some(other) => anyhow::bail!("an unknown request from the bench: {other}"),
            // The bench is gone.
            None => return Ok(()),
        }
    }
    let drain_until = Instant::now() + DRAIN_LIMIT;
    while shared.done.load(Ordering::Relaxed) + shared.gone.load(Ordering::Relaxed) < connected
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    let mut outcome = Outcome::default();
    let mut latencies = Vec::new();
    for v in viewers {
        let seen = v.await?;
        outcome.deliveries += seen.got;
        outcome.disorder += seen.disorder;
        outcome.restarts += seen.restarts;
        if seen.got == shared.total && seen.disorder == 0 {
            outcome.complete += 1;
        }
        for (what, n) in seen.errors {
            *outcome.errors.entry(what).or_default() += n;
        }
        latencies.extend_from_slice(&seen.latencies);
    }
    outcome.latency = Summary::of(&mut latencies);
    println!("result {}", outcome.to_json());
    Ok(())
}

/// What an audience saw, as the viewers' process reports it.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    complete: usize,
    deliveries: u64,
    disorder: u64,
    restarts: u64,
    latency: Option<Summary>,
    errors: BTreeMap<String, u64>,
}

impl Outcome {
    fn to_json(&self) -> Value {
        let latency = self.latency.as_ref().map(|l| json!([l.n, l.p50, l.p99, l.max, l.mean]));
        json!({
            "complete": self.complete, "deliveries": self.deliveries, "disorder": self.disorder,
            "restarts": self.restarts, "latency": latency, "errors": self.errors,
        })
    }

    fn from_json(v: &Value) -> Option<Outcome> {
        let latency = match &v["latency"] {
            Value::Null => None,
            l => {
                let f = |i: usize| l.get(i).and_then(Value::as_f64);
                Some(Summary { n: f(0)? as usize, p50: f(1)?, p99: f(2)?, max: f(3)?, mean: f(4)? })
            }
        };
        let errors: Option<BTreeMap<String, u64>> =
            v["errors"].as_object()?.iter().map(|(k, n)| Some((k.clone(), n.as_u64()?))).collect();
        Some(Outcome {
            complete: v["complete"].as_u64()? as usize,
            deliveries: v["deliveries"].as_u64()?,
            disorder: v["disorder"].as_u64()?,
            restarts: v["restarts"].as_u64()?,
            latency,
            errors: errors?,
        })
    }
}

/// The viewers' process ([`viewers`]), seen from `liveshop bench feed`; killed when dropped.
struct ViewerProcess {
    child: Child,
    input: ChildStdin,
    output: Lines<BufReader<ChildStdout>>,
}

impl ViewerProcess {
    async fn spawn(
        way: Way,
        n: usize,
        plan: &FeedPlan,
        cache: Option<SocketAddr>,
        urls: &[String],
    ) -> anyhow::Result<ViewerProcess> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.args(["bench", "feed-viewers", "--way", way.to_possible_value().expect("named").get_name()]);
        command.args(["--viewers", &n.to_string(), "--messages", &plan.messages().to_string()]);
        command.args(["--connect-parallel", &plan.connect_parallel.to_string()]);
        if let Some(cache) = cache {
            command.args(["--cache", &cache.to_string()]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its own group, so its CPU and memory are read apart from this process's.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("starting the viewers' process")?;
        let mut input = child.stdin.take().context("its stdin")?;
        let output = BufReader::new(child.stdout.take().context("its stdout")?).lines();
        for url in urls {
            input.write_all(url.as_bytes()).await?;
            input.write_all(b"\n").await?;
        }
        input.flush().await?;
        Ok(ViewerProcess { child, input, output })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Its next line, which must start with `word`: the rest.
    async fn reply(&mut self, word: &str, within: Duration) -> anyhow::Result<String> {
        let line = tokio::time::timeout(within, self.output.next_line())
            .await
            .with_context(|| format!("the viewers' process said nothing for {within:?}"))??
            .context("the viewers' process ended")?;
        match line.split_once(' ') {
            Some((w, rest)) if w == word => Ok(rest.to_string()),
            Some(("failed", why)) => anyhow::bail!("{why}"),
            _ => anyhow::bail!("the viewers' process said {line:?}"),
        }
    }

    async fn ask(&mut self, request: &str, word: &str, within: Duration) -> anyhow::Result<String> {
        self.input.write_all(format!("{request}\n").as_bytes()).await?;
        self.input.flush().await?;
        self.reply(word, within).await
    }

    /// Viewers that joined, once they all have.
    async fn connected(&mut self) -> anyhow::Result<usize> {
        Ok(self.reply("connected", CONNECT_PHASE_LIMIT + Duration::from_secs(30)).await?.parse()?)
    }

    /// Feed requests the viewers have made so far.
    async fn requests(&mut self) -> anyhow::Result<u64> {
        Ok(self.ask("requests", "requests", Duration::from_secs(10)).await?.parse()?)
    }

    async fn finish(mut self) -> anyhow::Result<Outcome> {
        let json = self.ask("finish", "result", DRAIN_LIMIT + Duration::from_secs(60)).await?;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        Outcome::from_json(&serde_json::from_str(&json)?).context("an outcome in another shape")
    }
}

fn render(plan: &FeedPlan, results: &[SizeResult]) -> String {
    let cache = plan.cache.name();
    let mut t = Table(String::new());
    t.line(&format!(
        "liveshop bench feed: {} cores, loopback only. {cache} (its own processes) caches and collapses \
         the feed in front of the node;",
        cpu::cores()
    ));
    t.line(&format!(
        "the node ({WORKERS} tokio threads) and the host share this process; the viewers run in another. \
         The host sends {} chat messages/s for {} s at each size.",
        plan.rate, plan.seconds
    ));
    for (i, r) in results.iter().enumerate() {
        size(&mut t, cache, i + 1, r);
    }
    t.title("Notes");
    let driven: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{} feed and {} WebSocket",
                count(r.feed.connected as f64),
                count(r.socket.connected as f64)
            )
        })
        .collect();
    t.line(&format!("- This machine's load generator drove, at once: {} viewers.", driven.join("; ")));
    t.line("- Latency is from the room's `at` (ms) to receipt.");
    if plan.cache == Kind::Nginx {
        t.line("- nginx wakes requests waiting on a cache lock every 500 ms (it polls; it is not told when");
        t.line(
            "  the answer lands), so a collapsed feed viewer waits up to that much more than the one whose",
        );
        t.line(
            "  request reached the node. Varnish (the default) wakes its waiting list when the answer lands.",
        );
    }
    t.line("- Memory is resident memory added by connecting the viewers, over all of them: the node's");
    t.line("  process (which holds the node's side of each connection) and the cache's.");
    let busy = results.iter().any(|r| {
        [&r.feed.node_cpu, &r.socket.node_cpu]
            .iter()
            .any(|c| c.total + c.others >= 90.0 * cpu::cores() as f64)
    });
    if busy {
        t.line(
            "- The machine's CPU was saturated in some phases: latencies there include waiting for a core.",
        );
    }
    t.0
}

fn size(t: &mut Table, cache: &str, n: usize, r: &SizeResult) {
    let (f, s) = (&r.feed, &r.socket);
    t.title(&format!("{n}. {} viewers", count(r.viewers as f64)));
    t.head(&format!("feed via {cache}"), "WebSocket to node", "feed / socket");
    latency_rows(t, &f.latency, &s.latency);
    t.row("requests reaching the node/s", &count(f.node_requests_per_sec), "-", "");
    t.row("viewers' feed requests/s", &count(f.viewer_requests_per_sec), "-", "");
    let p = |v: f64| format!("{v:.0}%");
    t.row(
        "node CPU (100% = one core)",
        &p(f.node_cpu.server),
        &p(s.node_cpu.server),
        &ratio(Some(f.node_cpu.server), Some(s.node_cpu.server)),
    );
    let per_k = |w: &WayResult| (w.connected > 0).then(|| w.node_cpu.server * 1000.0 / w.connected as f64);
    let show = |v: Option<f64>| v.map(|v| format!("{v:.2}%")).unwrap_or_else(|| "-".into());
    t.row("node CPU per 1,000 viewers", &show(per_k(f)), &show(per_k(s)), &ratio(per_k(f), per_k(s)));
    t.row(&format!("{cache} CPU"), &f.cache_cpu.map(p).unwrap_or_else(|| "-".into()), "-", "");
    t.row("viewers' process CPU", &p(f.viewers_cpu), &p(s.viewers_cpu), "");
    t.row("other processes' CPU", &p(f.node_cpu.others), &p(s.node_cpu.others), "");
    let kib = |v: f64| format!("{:.1} KiB", v / 1024.0);
    t.row(
        "memory/viewer: node",
        &kib(f.rss_per_viewer),
        &kib(s.rss_per_viewer),
        &ratio(Some(f.rss_per_viewer), Some(s.rss_per_viewer)),
    );
    t.row(
        &format!("memory/viewer: {cache}"),
        &f.cache_rss_per_viewer.map(kib).unwrap_or_else(|| "-".into()),
        "-",
        "",
    );
    let got = |w: &WayResult| format!("{} / {}", count(w.deliveries as f64), count(w.expected as f64));
    t.row("delivered / expected", &got(f), &got(s), "");
    let complete = |w: &WayResult| format!("{} of {}", count(w.complete as f64), count(w.connected as f64));
    t.row("viewers with every message", &complete(f), &complete(s), "");
    t.row("out of order or twice", &count(f.disorder as f64), &count(s.disorder as f64), "");
    t.row("feed restarts from a snapshot", &count(f.restarts as f64), "-", "");
    let errors = |w: &WayResult| w.errors.values().sum::<u64>().to_string();
    t.row("errors", &errors(f), &errors(s), "");
    // Each kind on a line of its own: the table's cells are short.
    for (way, w) in [("feed", f), ("WebSocket", s)] {
        for (what, n) in &w.errors {
            t.line(&format!("  {way} error: {n} {what}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chats_and_the_next_query_are_read_from_an_answer() {
        let body = r##"{"v":1,"epoch":7,"seq":45,"now":1,"next":"7-45","events":[{"epoch":7,"seq":44,"at":1000,"type":"chat.message","message":{"id":44,"user":"h","role":"host","text":"#3 hi","at":1000}},{"epoch":7,"seq":45,"at":1002,"type":"chat.message","message":{"id":45,"user":"h","role":"host","text":"#4 yo","at":1002}}],"latest":[],"wait":12}"##;
        let mut seen = Vec::new();
        chats(body, |seq, at| seen.push((seq, at)));
        assert_eq!(seen, [(3, 1000), (4, 1002)]);
        assert_eq!(follow_up(body), Some(("?after=7-45&wait=12".into(), false)));
        let snapshot = r#"{"v":1,"epoch":7,"seq":42,"now":1,"next":"7-42","state":{"history":[]}}"#;
        assert_eq!(follow_up(snapshot), Some(("?after=7-42".into(), true)));
    }

    #[test]
    fn an_outcome_crosses_from_the_viewers_process_whole() {
        let mut latencies = vec![1200, 900, 45_000];
        let outcome = Outcome {
            complete: 2,
            deliveries: 800,
            disorder: 1,
            restarts: 3,
            latency: Summary::of(&mut latencies),
            errors: BTreeMap::from([("HTTP 500".to_string(), 4)]),
        };
        let line = outcome.to_json().to_string();
        assert_eq!(Outcome::from_json(&serde_json::from_str(&line).unwrap()), Some(outcome));
        let empty = Outcome::default();
        assert_eq!(Outcome::from_json(&empty.to_json()), Some(empty));
        assert_eq!(Outcome::from_json(&json!({"complete": 1})), None);
    }
}
