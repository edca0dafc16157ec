//! The load generators' side: what server is under test, how to connect to it, and the
//! timestamped chat text both servers carry.
//!
//! Every client frame is the node's `chat.send` command; the bare server relays it as is, the
//! node answers with a `chat.message` event. Both carry the text unchanged, so one parser reads
//! the sequence number and send time out of either.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::StreamExt;
use liveshop_edge::http::AppState;
use liveshop_identity::{Claims, Role};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for a connection to open and be greeted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one write to a socket.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries per connection before the run gives up.
const CONNECT_ATTEMPTS: u32 = 3;

/// A server under test.
#[derive(Clone)]
pub enum Target {
    /// The liveshop edge node; tokens are minted with its secret.
    Node { addr: SocketAddr, app: Arc<AppState> },
    /// The bare broadcast server of [`super::baseline`].
    Bare { addr: SocketAddr },
}

impl Target {
    /// The WebSocket URL for `who` in `room`.
    pub fn url(&self, room: &str, who: &str, role: Role) -> anyhow::Result<String> {
        match self {
            Target::Node { addr, app } => {
                let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
                let token = app.secret.mint(&Claims::new(who, room, role, exp).with_name(who))?;
                Ok(format!("ws://{addr}/v1/rooms/{room}/ws?token={token}"))
            }
            Target::Bare { addr } => Ok(format!("ws://{addr}/v1/rooms/{room}/ws")),
        }
    }
}

/// Connects and waits for the server's `welcome` (the node's first frame; the bare server sends
/// one once the connection is subscribed), retrying a failed connect a few times.
pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    let mut last = None;
    for attempt in 0..CONNECT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, connect_once(url)).await {
            Ok(Ok(ws)) => return Ok(ws),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(anyhow::anyhow!("no welcome within {CONNECT_TIMEOUT:?}")),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// One viewer among many joining at once: connects while holding a permit of `gate` (so only
/// so many handshakes run together), then tells `ready` how it went. `None` when it failed.
pub async fn connect_gated(
    url: &str,
    gate: &tokio::sync::Semaphore,
    ready: tokio::sync::mpsc::Sender<anyhow::Result<()>>,
) -> Option<Ws> {
    let connected = {
        let _permit = gate.acquire().await;
        connect(url).await
    };
    match connected {
        Ok(ws) => {
            let _ = ready.send(Ok(())).await;
            Some(ws)
        }
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            None
        }
    }
}

async fn connect_once(url: &str) -> anyhow::Result<Ws> {
    // Small buffers: thousands of these live at once, and each frame is a few hundred bytes.
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024).write_buffer_size(16 * 1024);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.map_err(|e| match e {
            tungstenite::Error::Http(r) => {
                let body = r.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                anyhow::anyhow!("refused with HTTP {}: {body}", r.status())
            }
            e => anyhow::Error::new(e).context("opening the WebSocket"),
        })?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains(r#""type":"welcome""#) => return Ok(ws),
            Some(Ok(Message::Close(c))) => anyhow::bail!("closed before the welcome: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading the welcome"),
            None => anyhow::bail!("the connection ended before the welcome"),
        }
    }
}

/// Why a connection ended, for the report (`4008 too slow: ...`, `eof`, ...).
pub fn ended(msg: Option<Result<Message, tungstenite::Error>>) -> String {
    match msg {
        Some(Ok(Message::Close(Some(c)))) => format!("closed {}: {}", u16::from(c.code), c.reason),
        Some(Ok(Message::Close(None))) => "closed without a code".into(),
        Some(Err(e)) => format!("error: {e}"),
        None => "connection ended".into(),
        Some(Ok(_)) => "unexpected frame".into(),
    }
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Microseconds on the one clock every client of this process shares; never 0, which
/// [`SendTimes`] keeps for "not sent".
pub fn now_us() -> u64 {
    base().elapsed().as_micros() as u64 + 1
}

/// Ordinary chat, as in the room's own benchmark (`edge/benches/room.rs`). The content filter's
/// cost depends on the text: long runs of digits (a timestamp, say) cost it several times more
/// than words, so the text carries only a short sequence number and the send time is kept on
/// the side, in [`SendTimes`].
const LINES: [&str; 4] = [
    "love this jacket, does it come in blue?",
    "how long does shipping take to Lisbon?",
    "just ordered two, thanks!",
    "can you show the back again please",
];

/// The `chat.send` frame for message `seq`. Hosts are not rate-limited or checked for
/// duplicates, and the text passes every filter.
pub fn chat_frame(id: &str, seq: u64) -> String {
    let line = LINES[seq as usize % LINES.len()];
    format!(r##"{{"type":"chat.send","id":"{id}","text":"#{seq} {line}"}}"##)
}

/// The sequence number of the [`chat_frame`] a frame carries, if it does (the node's
/// `chat.message` event and the bare server's relayed frame both keep the text as sent).
pub fn parse_chat(frame: &str) -> Option<u64> {
    const MARK: &str = r##""text":"#"##;
    let rest = &frame[frame.find(MARK)? + MARK.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// When each message was sent, on the [`now_us`] clock: written by the sender just before the
/// write, read by every viewer that receives the message (all in this process).
pub struct SendTimes(Vec<AtomicU64>);

impl SendTimes {
    pub fn new(messages: u64) -> SendTimes {
        SendTimes((0..messages).map(|_| AtomicU64::new(0)).collect())
    }

    pub fn mark(&self, seq: u64) {
        if let Some(t) = self.0.get(seq as usize) {
            t.store(now_us(), Ordering::Release);
        }
    }

    /// How many messages this run sends.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// The send time of `seq`, if it was sent by this run.
    pub fn get(&self, seq: u64) -> Option<u64> {
        self.0.get(seq as usize).map(|t| t.load(Ordering::Acquire)).filter(|&t| t > 0)
    }
}

/// The `code` of an `error` frame.
pub fn error_code(frame: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    (v["type"] == "error").then(|| v["code"].as_str().unwrap_or("?").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_number_survives_both_servers() {
        let sent = chat_frame("m1", 42);
        assert_eq!(parse_chat(&sent), Some(42));
        let event = r##"{"type":"chat.message","epoch":1,"seq":9,"at":1,"message":{"id":9,"user":"h","role":"host","text":"#42 just ordered two, thanks!","at":1}}"##;
        assert_eq!(parse_chat(event), Some(42));
        assert_eq!(parse_chat(r#"{"type":"presence","viewers":3}"#), None);
        assert_eq!(
            error_code(r#"{"type":"error","id":"x","code":"rate_limited"}"#).as_deref(),
            Some("rate_limited")
        );
        assert_eq!(error_code(r#"{"type":"ack","id":"x","seq":1}"#), None);
    }

    #[test]
    fn send_times_are_kept_per_message() {
        let times = SendTimes::new(2);
        assert_eq!(times.get(1), None);
        times.mark(1);
        assert!(times.get(1).is_some_and(|t| t <= now_us()));
        times.mark(7);
        assert_eq!(times.get(7), None);
    }
}
