//! The node killed with SIGKILL and started again: nothing acknowledged is lost, the log goes
//! on, and alarms set before the crash still fire.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, http, kill9, now_ms, spawn, temp_dir, token};
use futures_util::{SinkExt, StreamExt};
use liveshop_identity::Role;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "crash";

async fn create_show(addr: SocketAddr) {
    let auth = format!("Bearer {}", token("*", "studio", Role::Host));
    let body = json!({"id": ROOM, "title": "Crash test", "products": [{"id": "mug", "title": "Mug"}]});
    let (status, reply) =
        http(addr, "POST", "/v1/shows", &[("Authorization", &auth)], &body.to_string()).await;
    assert_eq!(status, 201, "{reply}");
}

fn url(addr: SocketAddr, sub: &str, role: Role) -> String {
    format!("ws://{addr}/v1/rooms/{ROOM}/ws?token={}", token(ROOM, sub, role))
}

/// A value from the node's metrics, by the end of its name.
fn counter(metrics: &str, name: &str) -> u64 {
    let line = metrics
        .lines()
        .find(|l| l.starts_with("liveshop_actor_") && l.split(' ').next().unwrap().ends_with(name));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_chat_loses_no_acknowledged_message_and_seq_continues() {
    let dir = temp_dir("crash");
    let (node, addr) = spawn(&dir);
    create_show(addr).await;
    let (ws, _) = tokio_tungstenite::connect_async(url(addr, "host", Role::Host)).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    // The writer pipelines messages without waiting; the reader records every ack.
    let writer = tokio::spawn(async move {
        for i in 0..2000 {
            let frame = json!({"type": "chat.send", "id": format!("m{i}"), "text": format!("message {i}")});
            if tx.send(Message::Text(frame.to_string().into())).await.is_err() {
                break;
            }
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut epoch = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
        let Message::Text(t) = msg else { continue };
        let f: Value = serde_json::from_str(&t).unwrap();
        if f["type"] == "welcome" {
            epoch = f["epoch"].as_u64();
        }
        if f["type"] == "ack" {
            acked.insert(f["id"].as_str().unwrap().to_string(), f["seq"].as_u64().unwrap());
            if acked.len() == 150 {
                // The pipelined messages were committed in groups: the kill lands mid-group work.
                let (_, metrics) = http(addr, "GET", "/metrics", &[], "").await;
                let metrics = metrics.as_str().unwrap();
                let events = counter(metrics, "committed_events_total");
                let commits = counter(metrics, "commit_seconds_count");
                assert!(events > commits && commits > 0, "{events} events in {commits} commits");
                kill9(node);
                break;
            }
        }
    }
    writer.abort();
    assert_eq!(acked.len(), 150, "the node acknowledged messages before it was killed");

    let (node, addr) = spawn(&dir);
    // Resume from the very start: every logged event comes back.
    let mut host =
        Client::connect(&format!("{}&epoch={}&seq=0", url(addr, "host", Role::Host), epoch.unwrap())).await;
    assert_eq!(host.frames[0]["resumed"], true, "same epoch after the restart");
    let last_logged = host.frames[0]["seq"].as_u64().unwrap();
    host.until(|f| f["seq"].as_u64() == Some(last_logged)).await;
    let logged: BTreeMap<u64, String> = host
        .of_type("chat.message")
        .iter()
        .map(|f| (f["seq"].as_u64().unwrap(), f["message"]["text"].as_str().unwrap().to_string()))
        .collect();
    for (id, seq) in &acked {
        let n: u64 = id[1..].parse().unwrap();
        assert_eq!(logged.get(seq), Some(&format!("message {n}")), "acknowledged {id} (seq {seq}) survived");
    }
    let next = host.chat("after the crash").await;
    assert_eq!(next["seq"].as_u64().unwrap(), last_logged + 1, "seq continues where the log ended");
    kill9(node);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_set_before_a_crash_fires_after_the_restart() {
    let dir = temp_dir("alarm");
    let (node, addr) = spawn(&dir);
    create_show(addr).await;
    let mut host = Client::connect(&url(addr, "host", Role::Host)).await;
    let epoch = host.frames[0]["epoch"].as_u64().unwrap();
    let ends = now_ms() + 2500;
    let pin =
        json!({"type": "product.pin", "product": {"id": "mug", "title": "Mug"}, "countdown_ends_at": ends});
    let ack = host.command(pin).await;
    assert_eq!(ack["type"], "ack");
    kill9(node);

    let (node, addr) = spawn(&dir);
    // Resuming from the pin, the viewer sees the deal end whether it ended before or after it
    // connected.
    let resume = format!("{}&epoch={epoch}&seq={}", url(addr, "ana", Role::Viewer), ack["seq"]);
    let mut viewer = Client::connect(&resume).await;
    let ended = viewer.until(|f| f["type"] == "product.countdown_ended").await;
    assert_eq!(ended["product_id"], "mug");
    assert!(ended["at"].as_u64().unwrap() >= ends, "not before the deal's end");
    kill9(node);
    std::fs::remove_dir_all(&dir).unwrap();
}
