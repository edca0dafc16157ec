//! A node and clients for end-to-end tests over real sockets on loopback.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use liveshop_edge::shows::NewShow;
use liveshop_edge::{Edge, EdgeConfig};
use liveshop_identity::{Claims, Role, Secret};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ROOM: &str = "show";
pub const SECRET: &str = "an end-to-end test secret of enough length";
const WAIT: Duration = Duration::from_secs(10);

pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "liveshop-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn secret() -> Secret {
    Secret::new(SECRET.as_bytes().to_vec()).unwrap()
}

pub fn token(room: &str, sub: &str, role: Role) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    secret().mint(&Claims::new(sub, room, role, exp).with_name(sub)).unwrap()
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

pub fn show() -> NewShow {
    serde_json::from_value(json!({
        "id": ROOM,
        "title": "Test show",
        "products": [{"id": "mug", "title": "Mug", "price": {"minor": 1200, "currency": "EUR"}}]
    }))
    .unwrap()
}

/// A node in this process, on a free port, with its own data directory.
pub struct TestNode {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestNode {
    pub async fn start(tweak: impl FnOnce(&mut EdgeConfig)) -> TestNode {
        Self::start_in(temp_dir("node"), tweak).await
    }

    pub async fn start_in(data_dir: PathBuf, tweak: impl FnOnce(&mut EdgeConfig)) -> TestNode {
        Self::start_with_env(data_dir, Arc::new(liveshop_edge::SystemEnv), tweak).await
    }

    /// A node on another clock (see [`liveshop_edge::Env::real_delay`]).
    pub async fn start_with_env(
        data_dir: PathBuf,
        env: Arc<dyn liveshop_edge::Env>,
        tweak: impl FnOnce(&mut EdgeConfig),
    ) -> TestNode {
        // SAFETY: tests set the same value everywhere; nothing reads it concurrently with a change.
        unsafe { std::env::set_var("LIVESHOP_SECRET", SECRET) };
        let mut config = EdgeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.clone(),
            ..EdgeConfig::default()
        };
        config.conns_per_ip_burst = 10_000;
        config.conns_per_ip_per_sec = 10_000;
        tweak(&mut config);
        let edge = Edge::start_with_env(config, env).await.unwrap();
        edge.ensure_show(show()).unwrap();
        let addr = edge.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            edge.serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestNode { addr, data_dir, stop: Some(stop), task: Some(task) }
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/v1/rooms/{ROOM}/ws?token={token}", self.addr)
    }

    pub async fn connect(&self, sub: &str, role: Role) -> Client {
        Client::connect(&self.ws_url(&token(ROOM, sub, role))).await
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client that keeps every frame it reads.
pub struct Client {
    pub ws: Ws,
    pub frames: Vec<Value>,
    next_id: u32,
}

impl Client {
    /// Connects and reads the welcome.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.unwrap().unwrap();
        let mut c = Client { ws, frames: Vec::new(), next_id: 0 };
        let welcome = c.next().await.expect("a welcome frame");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c
    }

    /// The next frame, `None` when the server closed; panics after 10 s of silence.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame within 10 s");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    self.frames.push(v.clone());
                    return Some(v);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Reads until a frame matches.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let f = self.next().await.expect("the connection closed while waiting");
            if pred(&f) {
                return f;
            }
        }
    }

    pub async fn send(&mut self, mut cmd: Value) -> String {
        self.next_id += 1;
        let id = format!("c{}", self.next_id);
        cmd["id"] = json!(id);
        self.ws.send(Message::Text(cmd.to_string().into())).await.unwrap();
        id
    }

    /// Sends a command and waits for its ack or error.
    pub async fn command(&mut self, cmd: Value) -> Value {
        let id = self.send(cmd).await;
        self.until(|f| f["id"] == json!(id)).await
    }

    pub async fn chat(&mut self, text: &str) -> Value {
        self.command(json!({"type": "chat.send", "text": text})).await
    }

    /// The close code the server ended with (reading and dropping frames until then).
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("a close within 10 s") {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(Message::Text(t))) => self.frames.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return None,
            }
        }
    }

    pub fn of_type(&self, ty: &str) -> Vec<&Value> {
        self.frames.iter().filter(|f| f["type"] == ty).collect()
    }
}

/// An HTTP/1.1 request over a plain TCP stream: status and body. Enough for JSON endpoints.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out);
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A node process, SIGKILLed when dropped, so a failing test leaves nothing running.
pub struct NodeProcess(pub Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // SAFETY: plain FFI call with a pid we own.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Starts `liveshop edge` on a free port over `dir` and waits for it to listen.
pub fn spawn(dir: &Path) -> (NodeProcess, SocketAddr) {
    let config = dir.join("edge.toml");
    // Pipelined test traffic is faster than a person; the per-connection frame limit would stop it.
    std::fs::write(&config, "frames_per_conn_per_sec = 100000\nconns_per_ip_burst = 1000\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_liveshop"))
        .args(["edge", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .env("LIVESHOP_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("the node prints where it listens").unwrap();
    let addr = line.rsplit("http://").next().unwrap().trim().parse().unwrap();
    // Keep draining stdout so the node never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (NodeProcess(child), addr)
}

pub fn kill9(node: NodeProcess) {
    drop(node);
}
