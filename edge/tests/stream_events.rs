//! The media origin's stream events, as the edge node takes them over real sockets: signed with
//! the key derived from the node's secret, each id once, fresh, small, for a show that exists,
//! and only `stream.*`. The one that passes reaches the host's WebSocket as the room's event;
//! the rest are refused with a stable code and change nothing.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use liveshop_edge::shows::NewShow;
use liveshop_edge::{Edge, EdgeConfig};
use liveshop_identity::{Claims, Role};
use liveshop_webhooks::{Secret, standard};
use serde_json::{Value, json};

const SHOW: &str = "spring";

struct Node {
    url: String,
    key: Secret,
    host_token: String,
    data_dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn start() -> Node {
    let data_dir = std::env::temp_dir().join(format!("liveshop-stream-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut config = EdgeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.clone(),
        ..EdgeConfig::default()
    };
    // Wall time: a loaded CI machine may deschedule an event for a while.
    config.event_deadline_ms = 5_000;
    let edge = Edge::start(config).await.unwrap();
    let show = json!({ "id": SHOW, "title": "Spring drop", "products": [] });
    edge.ensure_show(serde_json::from_value::<NewShow>(show).unwrap()).unwrap();
    // What the origin does with the secret it shares with the node.
    let key =
        liveshop_edge::stream_event_secret(&liveshop_edge::server::node_secret_bytes(&data_dir).unwrap());
    let host_token = edge.app.secret.mint(&Claims::new("host", SHOW, Role::Host, now() + 3600)).unwrap();
    let url = format!("http://{}", edge.local_addr());
    tokio::spawn(edge.serve(std::future::pending()));
    Node { url, key, host_token, data_dir }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn started(width: u32) -> Value {
    json!({ "type": "stream.started", "playlist": "/hls/spring/master.m3u8", "codecs": "avc1.64001f,opus", "width": width, "height": 720 })
}

/// A POST to `/v1/stream-events`, with these headers; the status and the JSON answer.
async fn post(node: &Node, headers: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut request = liveshop_edge::payments::http_client()
        .post(format!("{}/v1/stream-events", node.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn signed(key: &Secret, id: &str, at: u64, body: &[u8]) -> Vec<(&'static str, String)> {
    standard::sign(std::slice::from_ref(key), id, at, body)
        .unwrap()
        .iter()
        .map(|(n, v)| (n, v.to_string()))
        .collect()
}

fn body(show: &str, event: Value) -> Vec<u8> {
    json!({ "show": show, "event": event }).to_string().into_bytes()
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn only_a_fresh_signed_stream_event_reaches_the_hosts_socket() {
    let node = start().await;
    let ws = format!("{}/v1/rooms/{SHOW}/ws?token={}", node.url.replace("http://", "ws://"), node.host_token);
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.unwrap();

    // Refused before the room sees anything: unsigned, forged, stale, from the future, too big.
    let unsigned = body(SHOW, started(1));
    let (status, answer) = post(&node, &[], &unsigned).await;
    assert_eq!((status, code(&answer)), (401, "signature_missing"), "{answer}");
    let forged = body(SHOW, started(2));
    let other_key = Secret::generate([9; 32]);
    let (status, answer) = post(&node, &signed(&other_key, "evt_forged", now(), &forged), &forged).await;
    assert_eq!((status, code(&answer)), (401, "signature_mismatch"), "{answer}");
    let stale = body(SHOW, started(3));
    let (status, answer) = post(&node, &signed(&node.key, "evt_stale", now() - 600, &stale), &stale).await;
    assert_eq!((status, code(&answer)), (401, "timestamp_too_old"), "{answer}");
    let early = body(SHOW, started(4));
    let (status, answer) = post(&node, &signed(&node.key, "evt_early", now() + 600, &early), &early).await;
    assert_eq!((status, code(&answer)), (401, "timestamp_in_future"), "{answer}");
    let mut huge = started(5);
    huge["codecs"] = json!("x".repeat(9000));
    let huge = body(SHOW, huge);
    let (status, answer) = post(&node, &signed(&node.key, "evt_huge", now(), &huge), &huge).await;
    assert_eq!((status, code(&answer)), (413, "payload_too_large"), "{answer}");

    // A moderator cannot ban the origin (the attack that kept viewers from learning the stream
    // started), so the real one still goes through.
    let moderator =
        liveshop_identity::Secret::new(liveshop_edge::server::node_secret_bytes(&node.data_dir).unwrap())
            .unwrap()
            .mint(&Claims::new("mod-1", SHOW, Role::Moderator, now() + 3600))
            .unwrap();
    let ban = liveshop_edge::payments::http_client()
        .post(format!("{}/v1/rooms/{SHOW}/commands", node.url))
        .bearer_auth(moderator)
        .body(json!({ "type": "mod.ban", "id": "1", "user": liveshop_room::MEDIA_ORIGIN }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(ban.status(), 403);
    assert_eq!(code(&ban.json().await.unwrap()), "forbidden");

    // The real one: taken once.
    let real = body(SHOW, started(1280));
    let headers = signed(&node.key, "evt_real", now(), &real);
    let (status, answer) = post(&node, &headers, &real).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = post(&node, &headers, &real).await;
    assert_eq!((status, code(&answer)), (409, "replayed_event"), "{answer}");

    // Signed, but not something the origin may say, or for no show.
    let chat = body(SHOW, json!({ "type": "chat.send", "text": "buy now" }));
    let (status, answer) = post(&node, &signed(&node.key, "evt_chat", now(), &chat), &chat).await;
    assert_eq!((status, code(&answer)), (400, "invalid_argument"), "{answer}");
    let nowhere = body("no-such-show", started(6));
    let headers = signed(&node.key, "evt_nowhere", now(), &nowhere);
    let (status, answer) = post(&node, &headers, &nowhere).await;
    assert_eq!((status, code(&answer)), (404, "show_not_found"), "{answer}");
    // A refused event's id is not taken: the origin's retry gets the answer again, not 409.
    let (status, answer) = post(&node, &headers, &nowhere).await;
    assert_eq!((status, code(&answer)), (404, "show_not_found"), "{answer}");

    // The end, after everything above was answered: anything that got into the room came first.
    let ended = body(SHOW, json!({ "type": "stream.ended", "duration_ms": 4200 }));
    let (status, answer) = post(&node, &signed(&node.key, "evt_end", now(), &ended), &ended).await;
    assert_eq!(status, 200, "{answer}");

    let mut seen = Vec::new();
    while seen.last().is_none_or(|f: &Value| f["type"] != "stream.ended") {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the room relays stream.ended")
            .unwrap()
            .unwrap();
        let frame: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        if frame["type"].as_str().is_some_and(|t| t.starts_with("stream.") || t.starts_with("chat.")) {
            seen.push(frame);
        }
    }
    let kinds: Vec<_> = seen.iter().map(|f| (f["type"].as_str().unwrap(), f["width"].as_u64())).collect();
    assert_eq!(kinds, [("stream.started", Some(1280)), ("stream.ended", None)]);
    assert_eq!(seen[0]["playlist"], "/hls/spring/master.m3u8");
}
