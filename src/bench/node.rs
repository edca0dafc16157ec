//! The servers' runtime, and the liveshop edge node run on it with limits fit for a load test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use liveshop_edge::http::AppState;
use liveshop_edge::shows::NewShow;
use liveshop_edge::{Edge, EdgeConfig};
use tokio::sync::oneshot;

use super::cpu::SERVER_THREADS;

/// A tokio runtime for one server under test, apart from the clients' so their CPU time can be
/// told apart (see [`super::cpu`]). Dropping it ends everything the server still runs.
pub struct ServerRuntime(Option<tokio::runtime::Runtime>);

impl ServerRuntime {
    pub fn new(workers: usize) -> anyhow::Result<ServerRuntime> {
        Self::with_blocking_threads(workers, 512)
    }

    /// The same with at most `blocking` threads for `spawn_blocking` (tokio's default is 512);
    /// more blocking tasks queue for them.
    pub fn with_blocking_threads(workers: usize, blocking: usize) -> anyhow::Result<ServerRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .max_blocking_threads(blocking.max(1))
            .thread_name(SERVER_THREADS)
            .enable_all()
            .build()
            .context("starting the servers' tokio runtime")?;
        Ok(ServerRuntime(Some(rt)))
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("a runtime until dropped").handle()
    }
}

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        // Dropped from inside the clients' runtime, where a blocking shutdown would panic.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A running edge node.
pub struct RunningNode {
    pub addr: SocketAddr,
    pub app: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// The node's settings for a bench: every client comes from 127.0.0.1, so the per-address
/// connection limit and the per-connection frame limit are lifted; everything else (fan-out
/// batching, the slow-consumer queue, storage durability) stays at its default.
pub fn bench_config(data_dir: &Path, max_conns: usize) -> EdgeConfig {
    let mut c = EdgeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: data_dir.to_path_buf(),
        ..EdgeConfig::default()
    };
    // 1000/s is the fastest refill the token bucket knows; the burst is what really lifts it.
    c.conns_per_ip_per_sec = 1000;
    c.conns_per_ip_burst = 1_000_000;
    c.max_conns_per_ip = usize::MAX;
    // The burst is twice this: far more than any run sends, so hosts can pipeline freely.
    c.frames_per_conn_per_sec = 1_000_000;
    c.max_conns_per_room = c.max_conns_per_room.max(max_conns);
    // Rooms must not hibernate in the middle of a measurement.
    c.hibernate_after_secs = 3600.0;
    c
}

impl RunningNode {
    /// Starts a node with `config` on `rt` and creates the shows `rooms`.
    pub async fn start(
        rt: &tokio::runtime::Handle,
        config: EdgeConfig,
        rooms: &[&str],
    ) -> anyhow::Result<RunningNode> {
        let rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        // Started on the servers' runtime so the node's own tasks are spawned there.
        let edge = rt
            .spawn(async move {
                let edge = Edge::start(config).await?;
                for room in rooms {
                    edge.ensure_show(NewShow {
                        id: Some(room.clone()),
                        title: format!("Bench {room}"),
                        products: vec![],
                        shop: None,
                        embed_origins: vec![],
                    })?;
                }
                anyhow::Ok(edge)
            })
            .await?
            .context("starting the edge node")?;
        let addr = edge.local_addr();
        let app = edge.app.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = rt.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = edge.serve(shutdown).await {
                eprintln!("bench: the edge node stopped: {e}");
            }
        });
        Ok(RunningNode { addr, app, stop: Some(stop), task })
    }

    /// Stops accepting; dropping the runtime ends the rest.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A value from the node's Prometheus text: the sum over every series named `name` (any labels).
pub fn metric(text: &str, name: &str) -> f64 {
    metric_where(text, name, "")
}

/// The same, over the series whose labels contain `label` (e.g. `kind="message"`).
pub fn metric_where(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
            (series_name == name && labels.contains(label)).then(|| value.parse::<f64>().ok()).flatten()
        })
        // Not `sum()`: an empty float sum is -0.
        .fold(0.0, |a, b| a + b)
}

/// How many actor events of one kind the node handled between two snapshots of its metrics,
/// and their mean time (handling; the pseudo-kind `commit` is the group commits, each carrying
/// the events that were waiting together).
#[derive(Debug, Clone)]
pub struct EventTime {
    pub kind: &'static str,
    pub count: u64,
    pub mean: Duration,
}

/// [`EventTime`]s of the kinds a room sees, then the group commits, between `before` and
/// `after`; kinds with no events are left out.
pub fn event_times(before: &str, after: &str) -> Vec<EventTime> {
    let kinds = ["connect", "message", "close", "request"].map(|k| (k, "liveshop_actor_event_seconds"));
    kinds
        .into_iter()
        .chain([("commit", "liveshop_actor_commit_seconds")])
        .filter_map(|(kind, series)| {
            let label =
                if series.ends_with("event_seconds") { format!("kind=\"{kind}\"") } else { String::new() };
            let delta = |name: &str| metric_where(after, name, &label) - metric_where(before, name, &label);
            let count = delta(&format!("{series}_count"));
            (count > 0.0).then(|| EventTime {
                kind,
                count: count as u64,
                mean: Duration::from_secs_f64(delta(&format!("{series}_sum")).max(0.0) / count),
            })
        })
        .collect()
}

/// A scratch directory for the nodes' databases, removed when dropped.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new() -> anyhow::Result<ScratchDir> {
        let dir = std::env::temp_dir().join(format!("liveshop-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_labels() {
        let text = "# HELP x\nliveshop_refused_total{reason=\"token\"} 2\nliveshop_refused_total{reason=\"a\"} 3\n\
                    liveshop_actor_revive_seconds_sum 0.5\nliveshop_actor_revive_seconds_count 4\n";
        assert_eq!(metric(text, "liveshop_refused_total"), 5.0);
        assert_eq!(metric(text, "liveshop_actor_revive_seconds_count"), 4.0);
        assert_eq!(metric(text, "missing"), 0.0);
        assert_eq!(metric_where(text, "liveshop_refused_total", "reason=\"a\""), 3.0);
    }

    #[test]
    fn event_times_are_deltas() {
        let before = "liveshop_actor_event_seconds_sum{kind=\"message\"} 1.0\n\
                      liveshop_actor_event_seconds_count{kind=\"message\"} 10\n";
        let after = "liveshop_actor_event_seconds_sum{kind=\"message\"} 1.5\n\
                     liveshop_actor_event_seconds_count{kind=\"message\"} 20\n\
                     liveshop_actor_commit_seconds_sum 0.02\nliveshop_actor_commit_seconds_count 2\n";
        let times = event_times(before, after);
        assert_eq!(times.len(), 2);
        assert_eq!((times[0].kind, times[0].count), ("message", 10));
        assert_eq!(times[0].mean, Duration::from_millis(50));
        assert_eq!((times[1].kind, times[1].count, times[1].mean), ("commit", 2, Duration::from_millis(10)));
    }
}
