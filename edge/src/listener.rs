//! Accepting connections. The node runs its own accept loop rather than `axum::serve`, which
//! reads request headers for as long as a client cares to send them: one address holding
//! thousands of half-sent requests (slowloris) would take every file descriptor and the node
//! with them. Here:
//!
//! - a request's headers must arrive within the header timeout (hyper's
//!   `header_read_timeout`, counted from when the node waits for them: on a new connection and
//!   between requests on a kept-alive one);
//! - a connection on which nothing moves either way for the idle timeout, in the middle of a
//!   request or an answer (a stalled upload, a client that stopped reading), is closed. A
//!   WebSocket leaves this loop once upgraded and an event stream is exempt: both stay open for
//!   as long as the client listens;
//! - one address may hold at most so many connections at once; more are closed as they are
//!   accepted;
//! - all connections together stay within a share of the open-files limit (`RLIMIT_NOFILE`),
//!   leaving the rest to the databases, WebRTC and outbound calls. Near it, the node says so in
//!   its log.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use liveshop_room::filter::address_key;

use crate::config::EdgeConfig;
use crate::metrics::Metrics;
use crate::pacing::Cidr;

/// What the accept loop enforces; see the module's documentation.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub per_address: usize,
    /// Open connections at most, all addresses together.
    pub connections: usize,
    /// Peers exempt from the per-address cap: the proxies the node is told to trust carry many
    /// clients on their addresses.
    pub trusted_proxies: Vec<Cidr>,
}

impl Limits {
    pub fn from_config(config: &EdgeConfig) -> Limits {
        Limits {
            header_timeout: crate::config::secs(config.header_timeout_secs),
            idle_timeout: crate::config::secs(config.idle_timeout_secs),
            per_address: config.max_conns_per_ip,
            connections: config.max_connections.unwrap_or_else(|| open_files_limit() / 4 * 3),
            trusted_proxies: config.trusted_proxies.clone(),
        }
    }

    /// The address a connection counts against: the peer's, an IPv6 peer's /64 (one subscriber
    /// gets a whole /64 and could otherwise open a cap's worth from each of its addresses), or
    /// none for a trusted proxy (its clients are told apart per request, by their header).
    pub fn key(&self, peer: SocketAddr) -> Option<IpAddr> {
        let ip = peer.ip().to_canonical();
        (!self.trusted_proxies.iter().any(|c| c.contains(ip))).then(|| address_key(ip))
    }
}

/// The soft `RLIMIT_NOFILE`: how many descriptors this process may have open.
fn open_files_limit() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        // Linux's usual default: the safe guess.
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// The connections open now, by address and in all.
#[derive(Default)]
struct Open {
    by_key: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
}

/// One connection's place in [`Open`], given back when the connection's socket is dropped
/// (which, for a WebSocket, is when the WebSocket closes).
struct Slot {
    open: Arc<Open>,
    key: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(key) = self.key {
            let mut by_key = self.open.by_key.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = by_key.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    by_key.remove(&key);
                }
            }
        }
    }
}

/// Why a connection was closed as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    PerAddress,
    Budget,
}

impl Open {
    fn take(self: &Arc<Self>, key: Option<IpAddr>, limits: &Limits) -> Result<Slot, Refusal> {
        if self.total.load(Ordering::Relaxed) >= limits.connections {
            return Err(Refusal::Budget);
        }
        if let Some(key) = key {
            let mut by_key = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
            let n = by_key.entry(key).or_default();
            if *n >= limits.per_address {
                return Err(Refusal::PerAddress);
            }
            *n += 1;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { open: self.clone(), key })
    }
}

/// At most one line per this long about the descriptor budget, however hard the node is hit.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line at most every [`LOG_EVERY`].
struct Throttled(Option<Instant>);

impl Throttled {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        let ready = self.0.is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if ready {
            self.0 = Some(now);
        }
        ready
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then waits for
/// the requests in progress (as `axum::serve` with graceful shutdown does).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let open = Arc::new(Open::default());
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(stop_rx);
    });
    // Every connection task holds a receiver; the loop's end waits for them all to go.
    let (done_tx, done_rx) = watch::channel(());
    let mut budget_log = Throttled(None);
    let mut accept_log = Throttled(None);
    let near = limits.connections / 10 * 9;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE) or the like: the kernel keeps the connection
                    // queued; pause rather than spin on it.
                    if accept_log.ready() {
                        tracing::warn!("accepting a connection failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop_tx.closed() => break,
        };
        let slot = match open.take(limits.key(peer), &limits) {
            Ok(slot) => slot,
            Err(refusal) => {
                let reason = match refusal {
                    Refusal::PerAddress => "connections_per_address",
                    Refusal::Budget => "connection_budget",
                };
                metrics.refused(reason);
                if refusal == Refusal::Budget && budget_log.ready() {
                    tracing::warn!(
                        "refusing connections: {} open, the budget (max_connections) of the open-files limit",
                        limits.connections
                    );
                }
                drop(stream);
                continue;
            }
        };
        let total = open.total.load(Ordering::Relaxed);
        if total >= near && budget_log.ready() {
            tracing::warn!(
                "{total} connections open, near the budget of {} (max_connections; raise the open-files limit, ulimit -n, to raise it)",
                limits.connections
            );
        }
        let _ = stream.set_nodelay(true);
        let conn = Conn::new(stream, slot);
        tokio::spawn(serve_connection(
            conn,
            peer,
            router.clone(),
            limits.clone(),
            stop_tx.clone(),
            done_rx.clone(),
        ));
    }
    drop(done_rx);
    done_tx.closed().await;
}

async fn serve_connection(
    conn: Conn,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    stop: watch::Sender<()>,
    _done: watch::Receiver<()>,
) {
    let activity = conn.activity.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        let activity = activity.clone();
        async move {
            // A Router is always ready.
            let response = tower_service::Service::call(&mut router, req.map(Body::new)).await?;
            let stream =
                response.headers().get(header::CONTENT_TYPE).is_some_and(|t| t == "text/event-stream");
            if stream {
                activity.exempt.store(true, Ordering::Relaxed);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let activity = conn.activity.clone();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let connection = builder.serve_connection(TokioIo::new(conn), service).with_upgrades();
    tokio::pin!(connection);
    let stopped = stop.closed();
    tokio::pin!(stopped);
    let mut stopping = false;
    loop {
        tokio::select! {
            // Done, failed, timed out reading headers, or handed over to a WebSocket.
            _ = connection.as_mut() => return,
            _ = activity.idle(limits.idle_timeout) => return,
            _ = &mut stopped, if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When bytes last moved on a connection, for the idle timeout.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    /// An event stream is being served: the idle timeout no longer applies.
    exempt: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `timeout` (never for an exempt connection).
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline && !self.exempt.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep_until(deadline.max(Instant::now() + timeout / 4)).await;
        }
    }
}

/// An accepted socket with its [`Slot`] and its [`Activity`].
struct Conn {
    stream: TcpStream,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl Conn {
    fn new(stream: TcpStream, slot: Slot) -> Conn {
        let activity =
            Activity { start: Instant::now(), last: AtomicU64::new(0), exempt: AtomicBool::new(false) };
        Conn { stream, activity: Arc::new(activity), _slot: slot }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_peer_counts_against_its_64_a_mapped_ipv4_peer_against_its_address_and_a_proxy_not_at_all() {
        let config =
            EdgeConfig { trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()], ..EdgeConfig::default() };
        let limits = Limits::from_config(&config);
        let key = |s: &str| limits.key(s.parse().unwrap()).map(|k| k.to_string());
        assert_eq!(key("[2001:db8:1:2:aaaa::1]:1").unwrap(), "2001:db8:1:2::");
        assert_eq!(key("[2001:db8:1:2:bbbb::9]:2").unwrap(), "2001:db8:1:2::");
        assert_eq!(key("[::ffff:192.0.2.7]:3").unwrap(), "192.0.2.7");
        assert_eq!(key("127.0.0.1:4").unwrap(), "127.0.0.1");
        assert_eq!(key("10.1.2.3:5"), None, "a trusted proxy carries many clients");
    }
}
