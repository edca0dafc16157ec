//! `liveshop bench`: load tools that stay on this machine and on loopback.
//!
//! `liveshop bench rooms` measures, in one run, each figure beside a baseline:
//!
//! 1. **Fan-out** ([`fanout`]): thousands of WebSocket viewers in one room and a host sending chat
//!    at a fixed rate: delivery latency (p50, p99), deliveries per second and CPU; then the same
//!    load against a bare broadcast server ([`baseline`]).
//! 2. **Commands per second into one room** ([`commands`]): hosts pipelining `chat.send`, counted
//!    when acknowledged (stored); the same pipelined load against the bare server.
//! 3. **Revival** ([`revival`]): a command to a hibernated room against the same command to a live
//!    one.
//!
//! The servers under test and the load generators share the process but not a runtime: servers
//! run on one tokio runtime, clients on another, and [`cpu`] tells their CPU time apart by thread.
//! Each server gets a fresh runtime, so nothing of one (the node's wasmtime epoch ticker, its
//! idle rooms) is still running while the next is measured.
//!
//! `liveshop bench checkout` ([`checkout`]) is a flash sale: thousands of buyers checking out at
//! once for a few units, on the node and on a plain SQLite baseline.
//!
//! `liveshop bench feed` ([`feed`]) is the public feed behind a caching proxy ([`cache`]: Varnish
//! or nginx) against the same audience on WebSockets: what reaches the node, latency, CPU and
//! memory per viewer.

mod baseline;
mod cache;
mod checkout;
mod client;
mod commands;
mod cpu;
mod fanout;
mod feed;
mod http;
mod node;
mod report;
mod revival;
mod stats;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tracing_subscriber::filter::LevelFilter;

use self::baseline::Bare;
use self::client::Target;
use self::commands::{CommandsPlan, CommandsResult};
use self::fanout::{FanoutPlan, FanoutResult};
use self::node::{EventTime, RunningNode, ScratchDir, ServerRuntime, bench_config};
use self::revival::{RevivalPlan, RevivalResult};

/// Worker threads of each runtime: the servers' and the clients' compete for this machine's cores.
const WORKERS: usize = 2;
const FANOUT_ROOM: &str = "bench-fanout";
const COMMANDS_ROOM: &str = "bench-commands";
/// Longest wait for a node to see every connection of a phase gone.
const QUIET_LIMIT: Duration = Duration::from_secs(10);
/// Pause between phases, for the server to finish what the last one left (closing sockets).
const PAUSE: Duration = Duration::from_secs(1);

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Rooms under load on this machine (loopback only): fan-out to many viewers, commands per
    /// second into one room and the revival of a hibernated room, each beside a baseline.
    Rooms(RoomsArgs),
    /// A flash sale on this machine (loopback only): thousands of buyers checking out at once for
    /// a few units, on the node and on a plain SQLite baseline.
    Checkout(checkout::CheckoutArgs),
    /// The public feed behind a caching proxy on this machine (loopback only): requests that
    /// reach the node, latency, CPU and memory per viewer, beside the same audience on WebSockets.
    Feed(feed::FeedArgs),
    /// The viewers' side of `bench feed`, which starts it as a child process.
    #[command(hide = true)]
    FeedViewers(feed::ViewersArgs),
}

#[derive(Args)]
pub struct RoomsArgs {
    /// WebSocket viewers in the fan-out room [default: 5000; 500 with --quick].
    #[arg(long)]
    viewers: Option<usize>,
    /// Chat messages per second the host sends [default: 100].
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds the host sends for [default: 10; 3 with --quick].
    #[arg(long)]
    seconds: Option<f64>,
    /// Connections being opened at once while viewers join.
    #[arg(long, default_value_t = 64)]
    connect_parallel: usize,
    /// Host connections pipelining commands into one room.
    #[arg(long, default_value_t = 4)]
    command_connections: usize,
    /// Commands in flight per connection.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Seconds of pipelined commands [default: 5; 2 with --quick].
    #[arg(long)]
    command_seconds: Option<f64>,
    /// Commands timed against a hibernated room [default: 20; 5 with --quick].
    #[arg(long)]
    revivals: Option<usize>,
    /// A smoke run: fewer viewers, shorter phases.
    #[arg(long)]
    quick: bool,
}

/// What one run does, with every default resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub fanout: FanoutPlan,
    pub commands: CommandsPlan,
    pub revival: RevivalPlan,
}

impl RoomsArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        let q = self.quick;
        let plan = Plan {
            fanout: FanoutPlan {
                viewers: self.viewers.unwrap_or(if q { 500 } else { 5000 }),
                rate: self.rate.unwrap_or(100.0),
                seconds: self.seconds.unwrap_or(if q { 3.0 } else { 10.0 }),
                connect_parallel: self.connect_parallel,
            },
            commands: CommandsPlan {
                connections: self.command_connections,
                window: self.window,
                seconds: self.command_seconds.unwrap_or(if q { 2.0 } else { 5.0 }),
            },
            revival: RevivalPlan {
                samples: self.revivals.unwrap_or(if q { 5 } else { 20 }),
                live_samples: if q { 50 } else { 200 },
                history: 100,
            },
        };
        let f = &plan.fanout;
        anyhow::ensure!((1..=50_000).contains(&f.viewers), "--viewers must be 1 to 50000");
        anyhow::ensure!(f.rate > 0.0 && f.rate <= 10_000.0, "--rate must be above 0 and at most 10000");
        anyhow::ensure!(f.seconds > 0.0 && f.seconds <= 600.0, "--seconds must be above 0 and at most 600");
        anyhow::ensure!((1..=1024).contains(&f.connect_parallel), "--connect-parallel must be 1 to 1024");
        let c = &plan.commands;
        anyhow::ensure!((1..=64).contains(&c.connections), "--command-connections must be 1 to 64");
        anyhow::ensure!((1..=4096).contains(&c.window), "--window must be 1 to 4096");
        anyhow::ensure!(
            c.seconds > 0.0 && c.seconds <= 600.0,
            "--command-seconds must be above 0 and at most 600"
        );
        anyhow::ensure!((1..=1000).contains(&plan.revival.samples), "--revivals must be 1 to 1000");
        Ok(plan)
    }
}

/// Everything one run measured.
pub struct Measured {
    pub node_fanout: FanoutResult,
    pub bare_fanout: FanoutResult,
    pub node_commands: CommandsResult,
    pub bare_commands: CommandsResult,
    pub revival: RevivalResult,
    pub node_health: NodeHealth,
    /// Messages the bare server's connections lost by falling behind, in the fan-out and in the
    /// commands phase.
    pub bare_lagged: (u64, u64),
}

/// The node's own account of trouble during the run, from its metrics.
#[derive(Debug, Default)]
pub struct NodeHealth {
    pub slow_consumers_closed: u64,
    pub event_failures: u64,
    pub refused: f64,
    /// The room actor's events during the fan-out phase (connects, chat, closes) and the
    /// commands phase.
    pub fanout_events: Vec<EventTime>,
    pub commands_events: Vec<EventTime>,
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Rooms(args) => rooms(&args.plan()?),
        BenchCommand::Checkout(args) => checkout::run(&args),
        BenchCommand::Feed(args) => feed::run(&args),
        BenchCommand::FeedViewers(args) => feed::viewers(&args),
    }
}

/// The load generators' runtime, apart from the server's so their CPU can be told apart.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name(cpu::CLIENT_THREADS)
        .enable_all()
        .build()
        .context("starting the clients' tokio runtime")
}

fn rooms(plan: &Plan) -> anyhow::Result<()> {
    // A socket at both ends of every connection, both in this process.
    let conns = plan.fanout.viewers + plan.commands.connections + 16;
    cpu::raise_nofile(2 * conns as u64 + 512)?;
    warnings_only();
    let scratch = ScratchDir::new()?;
    let clients = client_runtime()?;
    let measured = clients.block_on(measure(plan, &scratch.0))?;
    clients.shutdown_timeout(Duration::from_secs(1));
    print!("{}", report::render(plan, &measured));
    Ok(())
}

/// The node's warnings (failed events) belong in the run's output; its routine logs do not.
fn warnings_only() {
    tracing_subscriber::fmt()
        .with_target(false)
        .with_max_level(LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .init();
}

async fn measure(plan: &Plan, dir: &Path) -> anyhow::Result<Measured> {
    eprintln!("bench: liveshop node: fan-out");
    let server = ServerRuntime::new(WORKERS)?;
    let config = bench_config(&dir.join("node"), plan.fanout.viewers + plan.commands.connections + 16);
    let node = RunningNode::start(server.handle(), config, &[FANOUT_ROOM, COMMANDS_ROOM]).await?;
    let target = Target::Node { addr: node.addr, app: node.app.clone() };
    let metrics = node.app.node.metrics();
    let before = metrics.render();
    let node_fanout = fanout::run(&target, FANOUT_ROOM, &plan.fanout).await.context("fan-out on the node")?;
    quiet(&node).await;
    let after_fanout = metrics.render();
    eprintln!("bench: liveshop node: commands");
    let node_commands =
        commands::run(&target, COMMANDS_ROOM, &plan.commands).await.context("commands on the node")?;
    let after_commands = metrics.render();
    let node_health = NodeHealth {
        slow_consumers_closed: metrics.slow_consumers.get(),
        event_failures: metrics.event_failures.get(),
        refused: node::metric(&after_commands, "liveshop_refused_total"),
        fanout_events: node::event_times(&before, &after_fanout),
        commands_events: node::event_times(&after_fanout, &after_commands),
    };
    drop(target);
    node.stop().await;
    drop(server);
    tokio::time::sleep(PAUSE).await;

    eprintln!("bench: bare broadcast server: fan-out");
    let server = ServerRuntime::new(WORKERS)?;
    let bare = Bare::start(server.handle()).await?;
    let target = Target::Bare { addr: bare.addr };
    let bare_fanout =
        fanout::run(&target, FANOUT_ROOM, &plan.fanout).await.context("fan-out on the bare server")?;
    tokio::time::sleep(PAUSE).await;
    let lagged_in_fanout = bare.lagged();
    eprintln!("bench: bare broadcast server: commands");
    let bare_commands =
        commands::run(&target, COMMANDS_ROOM, &plan.commands).await.context("commands on the bare server")?;
    let bare_lagged = (lagged_in_fanout, bare.lagged() - lagged_in_fanout);
    bare.stop().await;
    drop(server);
    tokio::time::sleep(PAUSE).await;

    eprintln!("bench: revival of a hibernated room");
    let server = ServerRuntime::new(WORKERS)?;
    let revival = revival::run(server.handle(), &dir.join("revive"), &plan.revival)
        .await
        .context("the revival measurement")?;
    drop(server);
    Ok(Measured { node_fanout, bare_fanout, node_commands, bare_commands, revival, node_health, bare_lagged })
}

/// Waits (bounded) until the node has let go of every connection of the last phase, and a
/// moment more for their rooms to handle the closes.
async fn quiet(node: &RunningNode) {
    let metrics = node.app.node.metrics();
    let until = tokio::time::Instant::now() + QUIET_LIMIT;
    while metrics.connections.get() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(PAUSE).await;
}
