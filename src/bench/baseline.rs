//! The baseline: a bare WebSocket broadcast server with no rules, no storage and no actor.
//!
//! Every text frame any connection of a room sends is relayed to every connection of that room
//! (the sender included) through a tokio `broadcast` channel. It is built on the same stack as
//! the node (axum's WebSocket on hyper and tokio) so the comparison measures what the node adds:
//! authentication, the room actor in wasmtime, the rules, SQLite, the output gate and the batched
//! fan-out. It is written the way a competent minimal server would be, not as a straw man: a
//! connection that wakes for one message also writes whatever else is already queued before it
//! flushes, and TCP_NODELAY is set so relayed frames are not held back by Nagle's algorithm.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, oneshot};

/// Messages a connection may fall behind by before it starts losing them.
pub const CAPACITY: usize = 1024;
/// A socket write that takes longer than this means a stuck client (as on the node).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first frame, once the connection is subscribed: clients wait for it, as for the node's.
const WELCOME: &str = r#"{"type":"welcome"}"#;

#[derive(Default)]
struct Rooms {
    rooms: Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>,
    /// Messages connections lost by falling more than [`CAPACITY`] behind.
    lagged: AtomicU64,
}

impl Rooms {
    fn room(&self, id: &str) -> broadcast::Sender<Utf8Bytes> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.entry(id.to_string()).or_insert_with(|| broadcast::channel(CAPACITY).0).clone()
    }
}

/// A running bare server.
pub struct Bare {
    pub addr: SocketAddr,
    rooms: Arc<Rooms>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Bare {
    /// Starts the server on `rt`, on a free loopback port.
    pub async fn start(rt: &tokio::runtime::Handle) -> anyhow::Result<Bare> {
        let listener = rt
            .spawn(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .await?
            .context("binding the baseline server to loopback")?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            // Without it a frame can wait for the ACK of the one before.
            let _ = tcp.set_nodelay(true);
        });
        let rooms = Arc::new(Rooms::default());
        let app = Router::new().route("/v1/rooms/{room}/ws", get(upgrade)).with_state(rooms.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = rt.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                eprintln!("bench: the baseline server stopped: {e}");
            }
        });
        Ok(Bare { addr, rooms, stop: Some(stop), task })
    }

    /// Messages lost to slow connections so far.
    pub fn lagged(&self) -> u64 {
        self.rooms.lagged.load(Ordering::Relaxed)
    }

    /// Stops accepting; the runtime it runs on ends the open connections.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn upgrade(
    State(rooms): State<Arc<Rooms>>,
    Path(room): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let tx = rooms.room(&room);
    ws.on_upgrade(move |socket| relay(socket, tx, rooms))
}

async fn relay(socket: WebSocket, tx: broadcast::Sender<Utf8Bytes>, rooms: Arc<Rooms>) {
    let mut rx = tx.subscribe();
    let (mut sink, mut stream) = socket.split();
    if sink.send(Message::Text(Utf8Bytes::from_static(WELCOME))).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Ok(text) => {
                    let write = async {
                        sink.feed(Message::Text(text)).await?;
                        loop {
                            match rx.try_recv() {
                                Ok(more) => sink.feed(Message::Text(more)).await?,
                                Err(TryRecvError::Lagged(n)) => {
                                    rooms.lagged.fetch_add(n, Ordering::Relaxed);
                                }
                                Err(_) => break,
                            }
                        }
                        sink.flush().await
                    };
                    if !matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(()))) {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    rooms.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => return,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    // No receivers cannot happen: this connection is one.
                    let _ = tx.send(text);
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
