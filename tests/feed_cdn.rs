//! The public feed behind real CDN caches: nginx and Varnish, configured as `docs/cdn.md` says
//! (the configuration is `src/bench/cache.rs`, the one `liveshop bench feed` measures), in front
//! of a node. Each case runs behind each cache.
//!
//! - A hundred viewers follow the feed through the cache while the host posts: each sees every
//!   public event once, in order, and the cache collapses their requests into a few that reach
//!   the node.
//! - Two hundred viewers heartbeat through the cache, each with its own cookie: the room counts
//!   each device once, by the client address the cache forwards; viewers who leave are taken off
//!   at once.
//! - A replay's timeline: while the show is live every request reaches the node (`no-cache`);
//!   once it ended, a hundred viewers cost the node one request.
//!
//! Skipped when a cache is not installed, unless `LIVESHOP_REQUIRE_CACHES` is set (CI sets it).

mod common;
// The bench uses all of it; this test not quite.
#[allow(dead_code)]
#[path = "../src/bench/cache.rs"]
mod cache;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache::{Cache, Kind};
use common::{Client, ROOM, TestNode, temp_dir, token};
use liveshop_identity::Role;
use serde_json::{Value, json};

/// Feed readers in the first case, heartbeating devices in the second.
const READERS: usize = 100;
const DEVICES: usize = 200;
/// Addresses the devices beat from, each allowed exactly its share of new devices.
const ADDRESSES: usize = 4;
/// A feed request waits at most 7.5 s (`liveshop_room::feed::deadline`).
const FEED_WAIT: Duration = Duration::from_secs(15);
/// Longest wait for a count to reach the room: it is handed over every 5 s.
const HAND_OFF_WAIT: Duration = Duration::from_secs(12);

/// The cache `kind` in front of a node that believes it about the client's address; `None`
/// (skipped) when the cache is absent and not required.
async fn behind(kind: Kind, tweak: impl FnOnce(&mut liveshop_edge::EdgeConfig)) -> Option<(TestNode, Cache)> {
    let Some(bin) = kind.find() else {
        assert!(
            std::env::var_os("LIVESHOP_REQUIRE_CACHES").is_none(),
            "LIVESHOP_REQUIRE_CACHES is set but {} is not installed",
            kind.name()
        );
        eprintln!("skipped: {} is not installed (apt-get install {})", kind.name(), kind.package());
        return None;
    };
    let node = TestNode::start(|c| {
        c.client_ip_header = Some("X-Forwarded-For".into());
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        // The node sees the cache's requests with the readers' addresses, a few for many readers.
        c.feed_reads_per_ip_burst = 100_000;
        c.feed_reads_per_ip_per_sec = 100_000;
        tweak(c);
    })
    .await;
    let cache = Cache::start(kind, &bin, &temp_dir("cache"), node.addr, 1024).expect("the cache starts");
    Some((node, cache))
}
/// `liveshop_feed_requests_total`, from the node's own `/metrics`.
async fn feed_requests(node: SocketAddr) -> u64 {
    counter(node, "liveshop_feed_requests_total").await
}

/// A counter of the node's own `/metrics`.
async fn counter(node: SocketAddr, name: &str) -> u64 {
    let (status, body) = common::http(node, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    let text = body.as_str().expect("metrics are text").to_string();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).expect("the counter");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn client(from: Option<IpAddr>) -> reqwest::Client {
    liveshop_edge::payments::http_client_builder()
        .timeout(FEED_WAIT)
        .local_address(from)
        .build()
        .expect("a plain client builds")
}

/// One feed answer through `base`: its body.
async fn get_feed(http: &reqwest::Client, base: &str, query: &str) -> Value {
    let r = http.get(format!("{base}/v1/rooms/{ROOM}/feed{query}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{query}");
    r.json().await.unwrap()
}

/// A viewer page's feed loop: the snapshot, then `after=<next>` (with `&wait=` after an empty
/// round) until an event matches `last`. The events in the order received, and the requests made.
async fn follow(
    http: reqwest::Client,
    base: String,
    snapshot: Value,
    last: impl Fn(&Value) -> bool,
    requests: Arc<AtomicU64>,
) -> Vec<Value> {
    let mut next = snapshot["next"].as_str().unwrap().to_string();
    let mut wait = None;
    let mut events = Vec::new();
    loop {
        let query = match wait {
            Some(w) => format!("?after={next}&wait={w}"),
            None => format!("?after={next}"),
        };
        requests.fetch_add(1, Ordering::Relaxed);
        let answer = get_feed(&http, &base, &query).await;
        assert!(answer.get("state").is_none(), "no restart from a snapshot expected: {answer}");
        let got = answer["events"].as_array().unwrap();
        events.extend(got.iter().cloned());
        if got.iter().any(&last) {
            return events;
        }
        next = answer["next"].as_str().unwrap().to_string();
        wait = answer["wait"].as_u64();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_viewers_behind_nginx_see_every_event_for_a_few_node_requests() {
    a_hundred_viewers_see_every_event_for_a_few_node_requests(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_viewers_behind_varnish_see_every_event_for_a_few_node_requests() {
    a_hundred_viewers_see_every_event_for_a_few_node_requests(Kind::Varnish).await;
}

async fn a_hundred_viewers_see_every_event_for_a_few_node_requests(kind: Kind) {
    let Some((node, cache)) = behind(kind, |_| {}).await else {
        return;
    };
    let base = format!("http://{}", cache.addr);
    // The host's socket goes through the cache too (WebSocket upgrades pass uncached).
    let mut host = Client::connect(&format!(
        "ws://{}/v1/rooms/{ROOM}/ws?token={}",
        cache.addr,
        token(ROOM, "host", Role::Host)
    ))
    .await;
    let http = client(None);
    let before = feed_requests(node.addr).await;
    let requests = Arc::new(AtomicU64::new(0));

    // Every reader has its snapshot before the host says anything.
    let mut readers = Vec::new();
    for _ in 0..READERS {
        requests.fetch_add(1, Ordering::Relaxed);
        let snapshot = get_feed(&http, &base, "").await;
        let last = |e: &Value| e["type"] == "banner.set" && e["text"] == "That's all";
        readers.push(tokio::spawn(follow(http.clone(), base.clone(), snapshot, last, requests.clone())));
    }

    let mut acked = Vec::new();
    let mut ack = |reply: Value| {
        assert_eq!(reply["type"], "ack", "{reply}");
        acked.push(reply["seq"].as_u64().unwrap());
        reply["seq"].as_u64().unwrap()
    };
    for i in 0..30 {
        let said = ack(host.chat(&format!("message {i}")).await);
        match i % 10 {
            3 => _ = ack(host.command(json!({"type": "chat.pin", "message_id": said})).await),
            6 => {
                let pin = json!({"type": "product.pin", "product": {"id": format!("p{i}"), "title": "Mug"}});
                ack(host.command(pin).await);
            }
            9 => _ = ack(host.command(json!({"type": "banner.set", "text": format!("Deal {i}")})).await),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ack(host.command(json!({"type": "chat.unpin"})).await);
    ack(host.command(json!({"type": "banner.set", "text": "That's all"})).await);

    for reader in readers {
        let events =
            tokio::time::timeout(Duration::from_secs(60), reader).await.expect("readers finish").unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        // Every public event the host caused, once each, in order, and nothing else.
        assert_eq!(seqs, acked, "{events:?}");
        let texts: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "chat.message")
            .map(|e| e["message"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts.len(), 30);
        assert_eq!(texts[29], "message 29");
    }
    let clients = requests.load(Ordering::Relaxed);
    let reached = feed_requests(node.addr).await - before;
    eprintln!("{}: {clients} feed requests by {READERS} readers, {reached} reached the node", kind.name());
    assert!(reached * 5 <= clients, "the cache collapses requests: {reached} of {clients} reached the node");
    drop(cache);
    node.stop().await;
}

/// A heartbeat from `http` with the device's cookie, if it has one: the status and the cookie
/// the node set.
async fn beat(http: &reqwest::Client, base: &str, cookie: Option<&str>, body: &str) -> (u16, Option<String>) {
    let mut req = http.post(format!("{base}/v1/rooms/{ROOM}/heartbeat")).body(body.to_string());
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    let set =
        r.headers().get("set-cookie").map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
    (r.status().as_u16(), set)
}

/// Reads the host's frames until presence says `viewers`; panics after [`HAND_OFF_WAIT`].
async fn until_viewers(host: &mut Client, viewers: u64) {
    let mut last = None;
    let found = tokio::time::timeout(HAND_OFF_WAIT, async {
        loop {
            let f = host.next().await.expect("the host's socket stays open");
            if f["type"] == "presence" {
                last = f["viewers"].as_u64();
                if last == Some(viewers) {
                    return;
                }
            }
        }
    })
    .await;
    assert!(found.is_ok(), "presence never said {viewers} viewers (last said {last:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_feed_viewers_heartbeating_through_nginx_are_counted_once_each() {
    two_hundred_heartbeating_feed_viewers_are_counted_once_each(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_feed_viewers_heartbeating_through_varnish_are_counted_once_each() {
    two_hundred_heartbeating_feed_viewers_are_counted_once_each(Kind::Varnish).await;
}

async fn two_hundred_heartbeating_feed_viewers_are_counted_once_each(kind: Kind) {
    let per_address = (DEVICES / ADDRESSES) as u64;
    let Some((node, cache)) = behind(kind, |c| {
        // Each address may make its share of new devices and no more: the node must tell the
        // viewers apart by the address the cache forwards, not count the cache's own.
        c.guest_devices_per_ip_burst = per_address;
        c.guest_devices_per_ip_per_hour = 1;
    })
    .await
    else {
        return;
    };
    let base = format!("http://{}", cache.addr);
    let mut host = node.connect("host", Role::Host).await;
    let before = host.frames[0]["state"]["viewers"].as_u64().unwrap();

    // Viewers from 127.0.0.2 to 127.0.0.5 (all loopback on Linux); the cache is on 127.0.0.1.
    let clients: Vec<reqwest::Client> =
        (0..ADDRESSES).map(|a| client(Some(IpAddr::from([127, 0, 0, 2 + a as u8])))).collect();
    let beats = (0..DEVICES).map(|i| {
        let (http, base) = (clients[i % ADDRESSES].clone(), base.clone());
        tokio::spawn(async move {
            let (status, cookie) = beat(&http, &base, None, "").await;
            assert_eq!(status, 204, "device {i}'s first beat");
            let cookie = cookie.expect("a new device gets its cookie");
            // The next beacon names the device: the same viewer, no new cookie.
            assert_eq!(beat(&http, &base, Some(&cookie), "").await, (204, None));
            cookie
        })
    });
    let mut jars = Vec::new();
    for b in beats.collect::<Vec<_>>() {
        jars.push(b.await.unwrap());
    }
    // Each address's allowance is spent: a new device from it is refused.
    assert_eq!(beat(&clients[0], &base, None, "").await.0, 429);
    until_viewers(&mut host, before + DEVICES as u64).await;

    for (i, cookie) in jars.iter().take(50).enumerate() {
        let http = &clients[i % ADDRESSES];
        assert_eq!(beat(http, &base, Some(cookie), r#"{"leaving": true}"#).await.0, 204);
    }
    until_viewers(&mut host, before + DEVICES as u64 - 50).await;
    drop(cache);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replays_timeline_behind_nginx_costs_the_node_one_request() {
    a_replays_timeline_costs_the_node_one_request(Kind::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replays_timeline_behind_varnish_costs_the_node_one_request() {
    a_replays_timeline_costs_the_node_one_request(Kind::Varnish).await;
}

async fn a_replays_timeline_costs_the_node_one_request(kind: Kind) {
    let Some((node, cache)) = behind(kind, |_| {}).await else {
        return;
    };
    let url = format!("http://{}/v1/rooms/{ROOM}/timeline", cache.addr);
    let mut host = node.connect("host", Role::Host).await;
    let mut origin = node.connect(liveshop_room::MEDIA_ORIGIN, Role::Host).await;
    let started = json!({"type": "stream.started", "playlist": format!("/hls/{ROOM}/master.m3u8"),
        "codecs": "avc1.42e01f", "width": 640, "height": 360, "capture_lag_ms": 30});
    assert_eq!(origin.command(started).await["type"], "ack");
    let pin = json!({"type": "product.pin", "product": {"id": "mug", "title": "Mug"}});
    assert_eq!(host.command(pin).await["type"], "ack");
    let http = client(None);
    let get = |http: reqwest::Client, url: String| async move {
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };

    let before = counter(node.addr, "liveshop_timeline_requests_total").await;
    for _ in 0..5 {
        let live = get(http.clone(), url.clone()).await;
        assert_eq!((&live["live"], &live["moments"]), (&json!(true), &json!([])), "{live}");
    }
    let live = counter(node.addr, "liveshop_timeline_requests_total").await - before;
    assert_eq!(live, 5, "a live timeline is never served from the cache");

    assert_eq!(origin.command(json!({"type": "stream.ended", "duration_ms": 1000})).await["type"], "ack");
    let before = counter(node.addr, "liveshop_timeline_requests_total").await;
    let viewers: Vec<_> = (0..READERS).map(|_| tokio::spawn(get(http.clone(), url.clone()))).collect();
    for viewer in viewers {
        let t = viewer.await.unwrap();
        assert_eq!((&t["ended"], &t["live"]), (&json!(true), &json!(false)));
        let kinds: Vec<&str> =
            t["moments"].as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["stream.started", "product.pinned", "stream.ended"]);
    }
    let reached = counter(node.addr, "liveshop_timeline_requests_total").await - before;
    eprintln!("{}: {READERS} replay viewers' timeline requests, {reached} reached the node", kind.name());
    assert_eq!(reached, 1, "the cache serves a replay's audience from one answer");
    drop(cache);
    node.stop().await;
}
