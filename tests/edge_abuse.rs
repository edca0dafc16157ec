//! Abuse of the node's sockets, over real TCP from loopback addresses, as an attacker does it:
//! requests whose headers never end (slowloris), bodies that stall, more connections from one
//! address than it may hold, the node's file-descriptor budget; and a WebSocket text frame
//! that is not UTF-8.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{ROOM, SseClient, TestNode, token};
use futures_util::SinkExt;
use liveshop_identity::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a test waits for the node to do something before it fails.
const WAIT: Duration = Duration::from_secs(10);

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// A request whose headers never end.
async fn half_sent(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let mut s = connect_from(from, to).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    s
}

/// Whether the node closes `s` (EOF or reset) within [`WAIT`].
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, read_to_end).await.is_ok()
}

/// `GET path` from `from`: the status and the body, or `None` if the node closed instead.
async fn get(from: [u8; 4], to: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = connect_from(from, to).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("an answer or a close").ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// `GET path` from `from`, retried until the node answers (it notices closed connections a
/// moment after they close).
async fn get_eventually(from: [u8; 4], to: SocketAddr, path: &str) -> (u16, String) {
    let answer = async {
        loop {
            if let Some(answer) = get(from, to, path).await {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, answer).await.expect("the node answers again")
}

/// `liveshop_refused_total{reason="..."}` from the metrics text.
fn refused(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("liveshop_refused_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_from_one_address_leave_the_node_answering_everyone_else() {
    let node = TestNode::start(|c| {
        c.max_conns_per_ip = 32;
        c.header_timeout_secs = 120.0;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(half_sent([127, 0, 0, 1], node.addr).await);
    }
    // Accepted in order: by the time this one is, the 32 before it are counted.
    let mut over = half_sent([127, 0, 0, 1], node.addr).await;
    assert!(closed(&mut over).await, "a connection over the per-address cap is closed");

    let (status, body) = get([127, 0, 0, 2], node.addr, "/healthz").await.expect("another address is served");
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = get([127, 0, 0, 2], node.addr, "/metrics").await.unwrap();
    assert!(refused(&metrics, "connections_per_address") >= 1, "{metrics}");

    // The held ones are still open (their headers have time left); once they go, the address
    // may connect again.
    let (status, _) = get([127, 0, 0, 1], node.addr, "/healthz").await.map_or((0, String::new()), |a| a);
    assert_ne!(status, 200, "the address is at its cap while it holds 32 connections");
    drop(held);
    assert_eq!(get_eventually([127, 0, 0, 1], node.addr, "/healthz").await.0, 200);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_end_and_bodies_that_stall_are_closed_after_their_timeouts() {
    let node = TestNode::start(|c| {
        c.header_timeout_secs = 0.5;
        c.idle_timeout_secs = 1.0;
    })
    .await;
    let mut slow_headers = half_sent([127, 0, 0, 1], node.addr).await;
    assert!(closed(&mut slow_headers).await, "a request whose headers never end is closed");

    let mut stalled = connect_from([127, 0, 0, 1], node.addr).await;
    let head = format!(
        "POST /v1/rooms/{ROOM}/guest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    assert!(closed(&mut stalled).await, "a body that stops coming is closed");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_event_streams_outlive_the_header_and_idle_timeouts() {
    let node = TestNode::start(|c| {
        c.header_timeout_secs = 0.3;
        c.idle_timeout_secs = 0.6;
    })
    .await;
    let mut ws = node.connect("ana", Role::Viewer).await;
    let mut sse = SseClient::connect(node.addr, ROOM, &token(ROOM, "bo", Role::Viewer), None).await;
    // Quiet for several of both timeouts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut host = node.connect("host", Role::Host).await;
    host.chat("still there?").await;
    ws.until(|f| f["type"] == "chat.message" && f["message"]["text"] == "still there?").await;
    sse.until_chat("still there?").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_descriptor_budget_new_connections_are_closed_until_some_go() {
    let node = TestNode::start(|c| {
        c.max_connections = Some(8);
        c.header_timeout_secs = 120.0;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(half_sent([127, 0, 0, 1], node.addr).await);
    }
    let mut over = half_sent([127, 0, 0, 2], node.addr).await;
    assert!(closed(&mut over).await, "a connection past the budget is closed, whatever its address");
    drop(held);
    let (status, metrics) = get_eventually([127, 0, 0, 2], node.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(refused(&metrics, "connection_budget") >= 1, "{metrics}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_utf8_closes_the_websocket_with_1007() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let node = TestNode::start(|_| {}).await;
    let mut ws = node.connect("ana", Role::Viewer).await;
    let not_utf8 = Frame::message(vec![b'h', b'i', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    ws.ws().send(Message::Frame(not_utf8)).await.unwrap();
    assert_eq!(ws.close_code().await, Some(1007));
    node.stop().await;
}

/// `method path` with `headers`: the status, the response head and the body as JSON.
async fn refusal(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> (u16, String, serde_json::Value) {
    let mut s = connect_from([127, 0, 0, 1], to).await;
    let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
    (text[9..12].parse().unwrap(), head.to_ascii_lowercase(), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axums_own_refusals_answer_in_the_json_error_shape() {
    let node = TestNode::start(|_| {}).await;
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        ("GET", format!("/v1/rooms/{ROOM}/state?seq=abc"), "", 400, "invalid_argument"),
        ("GET", format!("/v1/rooms/{ROOM}/events?seq=abc"), "", 400, "invalid_argument"),
        ("GET", format!("/v1/rooms/{ROOM}/ws?seq=abc"), upgrade, 400, "invalid_argument"),
        ("GET", "/v1/shows/%FF%FE".to_string(), "", 400, "invalid_argument"),
        ("PUT", "/v1/shows".to_string(), "Content-Length: 0\r\n", 405, "method_not_allowed"),
        ("GET", "/v1/rooms/x/commands".to_string(), "", 405, "method_not_allowed"),
    ];
    for (method, path, headers, status, code) in cases {
        let (got, head, body) = refusal(node.addr, method, &path, headers).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{method} {path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty() && message.chars().count() <= 200, "{message}");
        assert!(head.contains("content-type: application/json"), "{head}");
        // The node's own headers stay, and a 405 still says what the route takes.
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        if status == 405 {
            assert!(head.contains("\r\nallow: "), "{head}");
        }
    }
    // Answers that are not refusals keep their own shape.
    let (status, page) = get([127, 0, 0, 1], node.addr, &format!("/watch/{ROOM}")).await.unwrap();
    assert_eq!(status, 200);
    assert!(page.to_ascii_lowercase().contains("<html"), "{page}");
    node.stop().await;
}
