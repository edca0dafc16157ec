//! The edge node over real sockets: what only the edge node has (hibernation with sockets open,
//! its room size and frame limits, `/metrics`). What every host must do over sockets is in the
//! conformance suite (`tests/conformance/`).

mod common;

use std::time::Duration;

use common::{Client, ROOM, TestNode, http, now_ms, token};
use liveshop_identity::Role;
use serde_json::{Value, json};

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(node: &TestNode) -> String {
    match http(node.addr, "GET", "/metrics", &[], "").await.1 {
        Value::String(s) => s,
        other => panic!("metrics are text: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_room_hibernates_and_is_revived_by_its_next_event_with_sockets_still_open() {
    let node = TestNode::start(|c| c.hibernate_after_secs = 0.3).await;
    let mut viewer = node.connect("ana", Role::Viewer).await;
    let mut host = node.connect("host", Role::Host).await;
    let first = host.chat("before the nap").await["seq"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m = metrics(&node).await;
    assert!(metric(&m, "liveshop_actor_hibernations_total") >= 1.0, "{m}");
    assert_eq!(metric(&m, "liveshop_live_actors"), 0.0);
    let second = host.chat("after the nap").await["seq"].as_u64().unwrap();
    // In between the room logged its presence statistics; what matters is that the log goes on.
    assert!(second > first, "the revived room continues the log: {first} then {second}");
    let seen = viewer.until(|f| f["message"]["text"] == "after the nap").await;
    assert_eq!(seen["epoch"], viewer.frames[0]["epoch"], "same epoch: the room was revived, not reset");
    let m = metrics(&node).await;
    assert!(metric(&m, "liveshop_actor_revivals_total") >= 2.0);
    node.stop().await;
}

async fn refused(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().clone().unwrap_or_default();
            (resp.status().as_u16(), serde_json::from_slice(&body).unwrap())
        }
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_unknown_shows_and_limits_get_clear_errors() {
    let node = TestNode::start(|c| {
        c.max_conns_per_room = 2;
        c.frames_per_conn_per_sec = 5;
    })
    .await;
    let base = format!("ws://{}/v1/rooms", node.addr);
    // A plain GET of the socket's URL: the JSON error, as the Worker answers it.
    let (status, plain) = http(node.addr, "GET", &format!("/v1/rooms/{ROOM}/ws"), &[], "").await;
    assert_eq!((status, plain["error"]["code"].as_str()), (426, Some("upgrade_required")), "{plain}");
    let expired = {
        let claims = liveshop_identity::Claims::new("ana", ROOM, Role::Viewer, 1);
        common::secret().mint(&claims).unwrap()
    };
    let cases = [
        (format!("{base}/{ROOM}/ws?token={expired}"), 401, "token_expired"),
        (format!("{base}/{ROOM}/ws?token={}", token("other", "ana", Role::Viewer)), 401, "token_wrong_room"),
        (format!("{base}/{ROOM}/ws?token=abc.def.ghi"), 401, "token_malformed"),
        (format!("{base}/{ROOM}/ws"), 401, "token_malformed"),
        (format!("{base}/nope/ws?token={}", token("nope", "ana", Role::Viewer)), 404, "show_not_found"),
    ];
    for (url, status, code) in cases {
        let (s, body) = refused(&url).await;
        assert_eq!((s, body["error"]["code"].as_str().unwrap()), (status, code), "{url}");
    }
    let forged = token(ROOM, "ana", Role::Host) + "x";
    assert_eq!(refused(&node.ws_url(&forged)).await.1["error"]["code"], "token_bad_signature");

    // Two connections fit, the third is refused, and a slot frees up when one leaves.
    let mut a = node.connect("a", Role::Viewer).await;
    let b = node.connect("b", Role::Viewer).await;
    let (s, body) = refused(&node.ws_url(&token(ROOM, "c", Role::Viewer))).await;
    assert_eq!((s, body["error"]["code"].as_str().unwrap()), (503, "room_full"));
    drop(b);
    // The slot frees once the node has seen the close; on a busy machine that takes a moment.
    let url = node.ws_url(&token(ROOM, "c", Role::Viewer));
    let mut freed = false;
    for _ in 0..50 {
        if tokio_tungstenite::connect_async(&url).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "a slot frees up when a connection leaves");

    // Frame size: over the room's 8 KiB is refused by the room, over the socket limit closes.
    // An oversized frame is not parsed, so its error cannot carry the id.
    a.send(json!({"type": "chat.send", "text": "a".repeat(9000)})).await;
    a.until(|f| f["type"] == "error" && f["code"] == "payload_too_large").await;
    use futures_util::SinkExt;
    let huge = "a".repeat(100 * 1024);
    let _ = a.ws().send(tokio_tungstenite::tungstenite::Message::Text(huge.into())).await;
    assert_eq!(a.close_code().await, Some(1009));

    // Frame rate: a connection that floods is closed with 4029.
    let mut flood = node.connect("flood", Role::Viewer).await;
    for _ in 0..30 {
        flood.send(json!({"type": "react", "emoji": "🔥"})).await;
    }
    assert_eq!(flood.close_code().await, Some(liveshop_edge::http::CLOSE_RATE_LIMITED));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shows_health_and_metrics_over_http() {
    let node = TestNode::start(|_| {}).await;
    assert_eq!(http(node.addr, "GET", "/healthz", &[], "").await, (200, json!({"status": "ok"})));
    let platform_host = format!("Bearer {}", token("*", "studio", Role::Host));
    let body = r#"{"id":"friday","title":"Friday deals","products":[{"id":"a","title":"A"}]}"#;
    let (s, created) = http(node.addr, "POST", "/v1/shows", &[("Authorization", &platform_host)], body).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["show"]["id"], "friday");
    assert!(created["dashboard_url"].as_str().unwrap().contains("/dashboard/friday#token="));
    // The OBS settings: the key is the one the media origin checks, derived from the node secret.
    assert!(created["whip_url"].as_str().unwrap().ends_with("/whip/friday"), "{created}");
    let keys = liveshop_identity::StreamKeys::new(common::SECRET.as_bytes());
    assert!(keys.verify("friday", 0, created["stream_key"].as_str().unwrap()));
    let host_token = created["host_token"].as_str().unwrap();
    let mut host =
        Client::connect(&format!("ws://{}/v1/rooms/friday/ws?token={host_token}", node.addr)).await;
    assert_eq!(host.frames[0]["you"]["role"], "host");
    let pin = json!({"type": "product.pin", "product": {"id": "a", "title": "A"}, "countdown_ends_at": now_ms() + 60_000});
    assert_eq!(host.command(pin).await["type"], "ack");
    let (s, again) = http(node.addr, "POST", "/v1/shows", &[("Authorization", &platform_host)], body).await;
    assert_eq!((s, again["error"]["code"].as_str().unwrap()), (409, "show_exists"));
    let viewer = format!("Bearer {}", token("*", "eve", Role::Viewer));
    let (s, denied) = http(node.addr, "POST", "/v1/shows", &[("Authorization", &viewer)], body).await;
    assert_eq!((s, denied["error"]["code"].as_str().unwrap()), (403, "forbidden"));
    let (s, bad) =
        http(node.addr, "POST", "/v1/shows", &[("Authorization", &platform_host)], r#"{"title":""}"#).await;
    assert_eq!((s, bad["error"]["code"].as_str().unwrap()), (400, "invalid_argument"));
    let (s, show) = http(node.addr, "GET", "/v1/shows/friday", &[], "").await;
    assert_eq!((s, show["products"][0]["id"].clone()), (200, json!("a")));
    let (s, state) = http(node.addr, "GET", "/v1/rooms/friday/state", &[], "").await;
    assert_eq!((s, state["state"]["products"][0]["product"]["id"].clone()), (200, json!("a")));
    let (s, guest) = http(node.addr, "POST", "/v1/rooms/friday/guest", &[], r#"{"name":"Ana"}"#).await;
    assert_eq!(s, 200);
    let mut g = Client::connect(&format!(
        "ws://{}/v1/rooms/friday/ws?token={}",
        node.addr,
        guest["token"].as_str().unwrap()
    ))
    .await;
    assert_eq!(g.frames[0]["you"]["name"], "Ana");
    assert_eq!(g.frames[0]["state"]["products"][0]["product"]["id"], "a");
    assert_eq!(g.chat("hi").await["type"], "ack");
    // Browsers that keep tokens out of URLs offer them as a WebSocket subprotocol.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/v1/rooms/friday/ws", node.addr).into_client_request().unwrap();
    let offer = format!("liveshop.v1, {host_token}");
    req.headers_mut().insert("Sec-WebSocket-Protocol", offer.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "liveshop.v1");
    use futures_util::StreamExt;
    let welcome = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(welcome.contains(r#""role":"host""#), "{welcome}");
    let m = metrics(&node).await;
    assert!(m.contains("liveshop_connections"), "{m}");
    assert!(metric(&m, "liveshop_actor_events_total") >= 3.0);
    node.stop().await;
}
