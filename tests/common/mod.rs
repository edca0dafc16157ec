//! A node and clients for end-to-end tests over real sockets on loopback.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use liveshop_edge::shows::NewShow;
use liveshop_edge::{Edge, EdgeConfig};
use liveshop_identity::{Claims, Role, Secret};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const ROOM: &str = "show";
pub const SECRET: &str = "an end-to-end test secret of enough length";
/// The host test nodes let webhooks reach: where the tests' receivers listen.
pub const LOOPBACK_RECEIVERS: &str = "127.0.0.1";
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

/// A clock running `speed` times faster than the real one, so schedules of minutes or hours run
/// in seconds. Everything else about a node on it is real.
pub struct FastClock {
    start: Instant,
    base: u64,
    speed: u64,
}

impl FastClock {
    pub fn new(speed: u64) -> FastClock {
        FastClock { start: Instant::now(), base: now_ms(), speed }
    }

    /// How long to really wait until this clock reads `at`.
    pub fn until(&self, at: u64) -> Duration {
        Duration::from_millis(at.saturating_sub(liveshop_edge::Env::now(self)) / self.speed)
    }
}

impl liveshop_edge::Env for FastClock {
    fn now(&self) -> u64 {
        self.base + self.start.elapsed().as_millis() as u64 * self.speed
    }

    fn fill_random(&self, buf: &mut [u8]) {
        liveshop_edge::SystemEnv.fill_random(buf);
    }

    fn real_delay(&self, ms: u64) -> Duration {
        Duration::from_millis(ms / self.speed)
    }
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
        // Every test client is 127.0.0.1 too; cases that test these limits set their own.
        config.guest_devices_per_ip_burst = 10_000;
        config.guest_devices_per_ip_per_hour = 10_000_000;
        config.commands_per_ip_burst = 10_000;
        config.commands_per_ip_per_sec = 10_000;
        // Every client of a test comes from 127.0.0.1 (a flash sale's 2,000 buyers among them).
        config.max_conns_per_ip = 100_000;
        // The deadline is wall time: on a loaded 2-core CI machine running tests in parallel, a
        // descheduled event would trap. Deadlines have their own tests (edge/tests/actor_limits).
        config.event_deadline_ms = 5_000;
        // The tests' webhook receivers listen on loopback; nothing else private is allowed.
        config.webhooks.allow_private_hosts = vec![LOOPBACK_RECEIVERS.into()];
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

/// A client of a room that keeps every frame it reads: over a WebSocket, or, where the host has
/// none (Spin), over server-sent events with commands POSTed (their answers read as the frames a
/// socket would have sent).
pub struct Client {
    link: Link,
    pub frames: Vec<Value>,
    next_id: u32,
}

enum Link {
    Ws(Box<Ws>),
    Sse(Box<SseLink>),
}

/// A room followed over `GET /events`, commanded over `POST /commands`.
struct SseLink {
    events: SseClient,
    addr: SocketAddr,
    room: String,
    token: String,
    /// Answers to commands, as frames, before the next event.
    answers: std::collections::VecDeque<Value>,
}

impl Client {
    /// Connects and reads the welcome.
    pub async fn connect(url: &str) -> Client {
        Self::connect_with_response(url).await.0
    }

    /// Connects and reads the welcome; also the upgrade's response (for its headers).
    pub async fn connect_with_response(
        url: &str,
    ) -> (Client, tokio_tungstenite::tungstenite::handshake::client::Response) {
        let (ws, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.unwrap().unwrap();
        let c = Client { link: Link::Ws(Box::new(ws)), frames: Vec::new(), next_id: 0 };
        (c.welcomed().await, response)
    }

    /// Follows `room` over server-sent events (resuming from `(epoch, seq)` if given) and reads
    /// the welcome.
    pub async fn over_sse(addr: SocketAddr, room: &str, token: &str, resume: Option<(u64, u64)>) -> Client {
        let last_event_id = resume.map(|(e, s)| format!("{e}-{s}"));
        let events = SseClient::connect(addr, room, token, last_event_id.as_deref()).await;
        let link =
            SseLink { events, addr, room: room.into(), token: token.into(), answers: Default::default() };
        Client { link: Link::Sse(Box::new(link)), frames: Vec::new(), next_id: 0 }.welcomed().await
    }

    async fn welcomed(mut self) -> Client {
        let welcome = self.next().await.expect("a welcome frame");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        self
    }

    /// The WebSocket, for cases about sockets themselves.
    pub fn ws(&mut self) -> &mut Ws {
        match &mut self.link {
            Link::Ws(ws) => ws,
            Link::Sse(_) => panic!("this client follows the room over server-sent events"),
        }
    }

    /// The next frame, `None` when the server closed; panics after 10 s of silence.
    pub async fn next(&mut self) -> Option<Value> {
        let frame = match &mut self.link {
            Link::Ws(ws) => loop {
                let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("a frame within 10 s");
                match msg {
                    Some(Ok(Message::Text(t))) => break serde_json::from_str(&t).unwrap(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            },
            Link::Sse(link) => match link.answers.pop_front() {
                Some(answer) => answer,
                None => link.events.next().await.1,
            },
        };
        self.frames.push(frame.clone());
        Some(frame)
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
        match &mut self.link {
            Link::Ws(ws) => ws.send(Message::Text(cmd.to_string().into())).await.unwrap(),
            Link::Sse(link) => {
                let path = format!("/v1/rooms/{}/commands", link.room);
                let auth = format!("Bearer {}", link.token);
                let (status, answer) =
                    http(link.addr, "POST", &path, &[("Authorization", &auth)], &cmd.to_string()).await;
                // A refusal comes in the HTTP error shape; a socket would have sent an error frame.
                let frame = match (status, answer) {
                    (200, ack) => ack,
                    (_, mut refusal) => {
                        let mut frame = refusal["error"].take();
                        frame["type"] = json!("error");
                        frame["id"] = json!(id);
                        frame
                    }
                };
                link.answers.push_back(frame);
            }
        }
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
        let ws = self.ws();
        let mut frames = Vec::new();
        let code = loop {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("a close within 10 s") {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(&t).unwrap()),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break None,
            }
        };
        self.frames.extend(frames);
        code
    }

    /// Whether the server ends a stream followed over server-sent events (which have no close
    /// codes).
    pub async fn ends(&mut self) -> bool {
        match &mut self.link {
            Link::Sse(link) => link.events.ends().await,
            Link::Ws(_) => panic!("a socket ends with a close code: use close_code"),
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
    std::fs::write(
        &config,
        "frames_per_conn_per_sec = 100000\nconns_per_ip_burst = 1000\nevent_deadline_ms = 5000\n\
         [webhooks]\nallow_private_hosts = [\"127.0.0.1\"]\n",
    )
    .unwrap();
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
    // Log lines may come first (a warning that the data directory was open to others).
    let line = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("liveshop: listening on"))
        .expect("the node prints where it listens");
    let addr = line.rsplit("http://").next().unwrap().trim().parse().unwrap();
    // Keep draining stdout so the node never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (NodeProcess(child), addr)
}

pub fn kill9(node: NodeProcess) {
    drop(node);
}

/// JSON over HTTP/1.1 with keep-alive, as a browser or a merchant's system would call.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        // Patient: a loaded CI machine can take many seconds to accept 2,000 connections at once,
        // and a buyer who hears nothing counts as an answer lost.
        let client = liveshop_edge::payments::http_client_builder()
            .connect_timeout(Duration::from_secs(60))
            .timeout(Duration::from_secs(120))
            .build()
            .expect("a plain client builds");
        Api { client, base: format!("http://{addr}") }
    }

    /// `(status, body)`; a network error is status 0.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if !body.is_null() {
            req = req.body(body.to_string());
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }
}

/// The flash-sale SKU of [`Merchant::stock_a_drop`] and its regular price.
pub const SKU: &str = "DROP-1";
pub const PRICE: i64 = 4000;

/// The merchant's view: `/v1/shops/{shop}/...` with a merchant token.
pub struct Merchant {
    pub api: Api,
    pub shop: String,
    pub token: String,
}

impl Merchant {
    pub fn new(api: Api, shop: &str, token: String) -> Merchant {
        Merchant { api, shop: shop.into(), token }
    }

    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, reply) =
            self.api.call(method, &format!("/v1/shops/{}{path}", self.shop), &self.token, None, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {reply}");
        reply
    }

    /// One SKU with `stock` units, at most one per buyer, and a flash deal on all of them.
    pub async fn stock_a_drop(&self, stock: u32) {
        let product = json!({ "title": "Limited drop", "variants": [{
            "sku": SKU, "price": { "minor": PRICE, "currency": "EUR" }, "stock": stock, "max_per_buyer": 1,
        }]});
        self.call("PUT", "/products/drop", product).await;
        let deal = json!({ "sku": SKU, "duration_secs": 3600, "discount": { "percent": "25" }, "quantity_cap": stock, "per_buyer_cap": 1 });
        self.call("POST", "/deals", deal).await;
    }

    /// A new `whsec_main` secret and an endpoint at `url` signed with it.
    pub async fn webhooks_to(&self, url: &str, events: &[&str]) -> liveshop_webhooks::Secret {
        let issued = self.call("POST", "/webhook-secrets/whsec_main", Value::Null).await;
        let secret = liveshop_webhooks::Secret::parse(issued["secret"].as_str().unwrap()).unwrap();
        self.call(
            "POST",
            "/webhooks/endpoints",
            json!({ "url": url, "secret_id": "whsec_main", "events": events }),
        )
        .await;
        secret
    }

    pub async fn orders(&self) -> Vec<Value> {
        self.call("GET", "/orders", Value::Null).await["orders"].as_array().unwrap().clone()
    }

    /// Waits until no order's payment is still open, then returns the orders.
    pub async fn settled_orders(&self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let orders = self.orders().await;
            let open =
                orders.iter().filter(|o| ["pending", "authorized"].contains(&o["payment"].as_str().unwrap()));
            if open.count() == 0 {
                return orders;
            }
            assert!(Instant::now() < deadline, "payments still open after 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn available(&self) -> u64 {
        let p = self.call("GET", "/products/drop", Value::Null).await;
        p["variants"][0]["available"].as_u64().unwrap()
    }
}

/// Reads server-sent events from a raw HTTP stream: `(id, data)` pairs.
pub struct SseClient {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl SseClient {
    pub async fn connect(
        addr: SocketAddr,
        room: &str,
        token: &str,
        last_event_id: Option<&str>,
    ) -> SseClient {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        let req = format!(
            "GET /v1/rooms/{room}/events?token={token} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut lines = tokio::io::BufReader::new(s).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{status}");
        while !lines.next_line().await.unwrap().unwrap().is_empty() {}
        SseClient { lines }
    }

    pub async fn next(&mut self) -> (Option<String>, Value) {
        let (mut id, mut data) = (None, String::new());
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream is open");
            // Chunked encoding puts chunk sizes on their own lines; SSE fields have a colon.
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                return (id, serde_json::from_str(&data).unwrap());
            }
        }
    }

    /// Whether the server ends the stream within 10 s (its last chunk, or the connection's
    /// close), reading past any events until then.
    pub async fn ends(&mut self) -> bool {
        let read_to_end = async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                // Chunk sizes stand on their own lines; the last chunk is empty.
                if line.trim() == "0" {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_to_end).await.is_ok()
    }

    pub async fn until_chat(&mut self, text: &str) -> (Option<String>, Value) {
        loop {
            let (id, v) = self.next().await;
            if v["type"] == "chat.message" && v["message"]["text"] == text {
                return (id, v);
            }
        }
    }
}

/// What `liveshop dev` printed, line by line, after the line that says where it listens.
pub type Printed = std::iter::MapWhile<
    std::io::Lines<BufReader<std::process::ChildStdout>>,
    fn(std::io::Result<String>) -> Option<String>,
>;

/// `liveshop dev` as a newcomer runs it, on a free port over `data`: the process (killed when
/// dropped), its base URL, and the rest of what it prints. Keep reading (or drain) the lines so
/// the node never blocks on its stdout.
pub fn liveshop_dev(data: &Path) -> (NodeProcess, String, Printed) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liveshop"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("LIVESHOP_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let node = NodeProcess(child);
    let mut lines: Printed = BufReader::new(stdout).lines().map_while(Result::ok);
    // Log lines (such as a warning about the data directory) may come first.
    let first = lines.find(|l| l.contains("listening on ")).expect("liveshop dev prints where it listens");
    let url = first.rsplit("listening on ").next().unwrap().trim().to_string();
    (node, url, lines)
}

/// The value of the printed line `label` (for example `Host token:`).
pub fn printed(lines: &mut Printed, label: &str) -> String {
    lines
        .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("liveshop dev prints {label}"))
}
