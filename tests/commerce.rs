//! Commerce end to end over real sockets: a flash sale with thousands of concurrent buyers, a
//! `kill -9` in the middle of one, and merchant webhooks through a receiver that fails half its
//! requests, goes down for a while and finally answers `410 Gone`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{
    Api, FastClock, Merchant, PRICE, ROOM, SECRET, SKU, TestNode, http, kill9, now_ms, spawn, temp_dir, token,
};
use liveshop_edge::{Env, SystemEnv};
use liveshop_identity::{Claims, Role, Secret as TokenSecret};
use liveshop_webhooks::Secret;
use serde_json::{Value, json};

/// What one buyer was told.
#[derive(Debug, Clone, PartialEq)]
enum Told {
    Order(u64),
    Refused(String),
    /// No answer (the node was killed).
    Nothing,
}

/// One buyer's flash-sale run through the show's shop: add to cart, then check out with its key.
/// Every tenth buyer first asks for two units (over the cap); every seventh sends its checkout
/// twice at once and once more after, with the same key.
async fn buy(api: &Api, show: &str, buyer: usize, key: &str) -> Told {
    let (name, token) = (format!("b{buyer}"), token(show, &format!("b{buyer}"), Role::Viewer));
    let base = format!("/v1/shows/{show}/shop");
    let items = format!("{base}/carts/{name}/items");
    let add =
        |quantity: u32| api.call("POST", &items, &token, None, json!({ "sku": SKU, "quantity": quantity }));
    if buyer.is_multiple_of(10) {
        let (status, r) = add(2).await;
        if status == 0 {
            return Told::Nothing;
        }
        // Over the cap, unless the stock ran out first.
        let code = r["error"]["code"].as_str().unwrap_or_default();
        assert!(["buyer_limit_exceeded", "out_of_stock"].contains(&code), "{r}");
    }
    let (status, r) = add(1).await;
    match status {
        0 => return Told::Nothing,
        200 => {}
        _ => return Told::Refused(r["error"]["code"].as_str().unwrap_or("?").to_string()),
    }
    let path = format!("{base}/checkout");
    let checkout = || api.call("POST", &path, &token, Some(key), json!({ "payment_method": "tok_visa" }));
    let answers = if buyer.is_multiple_of(7) {
        let (a, b) = tokio::join!(checkout(), checkout());
        let c = checkout().await;
        vec![a, b, c]
    } else {
        vec![checkout().await]
    };
    let orders: BTreeSet<u64> = answers.iter().filter_map(|(_, r)| r["order"]["id"].as_u64()).collect();
    assert!(orders.len() <= 1, "one key, one order: {answers:?}");
    for (status, r) in &answers {
        let in_flight = r["error"]["code"] == "idempotency_key_in_flight";
        assert!(
            *status == 0 || (200..300).contains(status) || in_flight || r["error"]["code"].is_string(),
            "{r}"
        );
    }
    match orders.first() {
        Some(id) => Told::Order(*id),
        None => match answers.iter().find(|(s, _)| *s != 0) {
            Some((_, r)) if r["error"]["code"] != "idempotency_key_in_flight" => {
                Told::Refused(r["error"]["code"].as_str().unwrap_or("?").to_string())
            }
            _ => Told::Nothing,
        },
    }
}

/// Checks what a sale left: every order a buyer was told about exists, each paid once, nobody
/// above the cap, and stock is what was there minus what was sold. Returns units sold.
fn check_sale(orders: &[Value], told: &[Told], stock: u64, available: u64) -> u64 {
    let by_id: BTreeMap<u64, &Value> = orders.iter().map(|o| (o["id"].as_u64().unwrap(), o)).collect();
    for t in told {
        if let Told::Order(id) = t {
            assert!(by_id.contains_key(id), "order {id} was confirmed to a buyer but does not exist");
        }
    }
    let mut units_per_buyer: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sold = 0;
    for o in orders {
        let paid_transitions = o["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["kind"] == "payment" && h["to"] == "paid")
            .count();
        if o["payment"] == "paid" {
            assert_eq!(paid_transitions, 1, "charged once: {o}");
            let units: u64 =
                o["lines"].as_array().unwrap().iter().map(|l| l["quantity"].as_u64().unwrap()).sum();
            *units_per_buyer.entry(o["buyer"].as_str().unwrap()).or_default() += units;
            sold += units;
            assert_eq!(o["total"]["minor"], PRICE * 3 / 4, "the deal price: {o}");
        } else {
            assert_eq!(paid_transitions, 0, "{o}");
        }
    }
    assert!(units_per_buyer.values().all(|u| *u == 1), "nobody above the cap: {units_per_buyer:?}");
    assert_eq!(available, stock - sold, "stock equals initial minus sold");
    sold
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_sale_of_100_units_to_2000_concurrent_buyers_sells_exactly_100() {
    let node = TestNode::start(|_| {}).await;
    let api = Api::new(node.addr);
    let merchant = Merchant::new(api.clone(), ROOM, token(ROOM, "acme", Role::Merchant));
    merchant.stock_a_drop(100).await;

    let buyers: Vec<_> = (0..2000)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { buy(&api, ROOM, i, &format!("key-{i}")).await })
        })
        .collect();
    let mut told = Vec::new();
    for b in buyers {
        told.push(b.await.unwrap());
    }
    let confirmed = told.iter().filter(|t| matches!(t, Told::Order(_))).count();
    let refusals: BTreeSet<&str> =
        told.iter().filter_map(|t| if let Told::Refused(c) = t { Some(c.as_str()) } else { None }).collect();
    assert!(!told.contains(&Told::Nothing), "every buyer got an answer");
    assert!(confirmed >= 100, "at least the units on sale were ordered: {confirmed}");
    assert!(refusals.iter().all(|c| ["out_of_stock", "deal_sold_out"].contains(c)), "{refusals:?}");

    let orders = merchant.settled_orders().await;
    let sold = check_sale(&orders, &told, 100, merchant.available().await);
    assert_eq!(sold, 100, "exactly the stock was sold");
    node.stop().await;
}

/// A merchant's webhook receiver: verifies every request, records it, and fails as told.
struct Receiver {
    secret: Mutex<Option<Secret>>,
    /// Signature freshness is checked against this clock, with this tolerance.
    clock: Arc<dyn Env>,
    tolerance_secs: u64,
    mode: AtomicU8,
    requests: AtomicUsize,
    /// Requests per `webhook-id`.
    attempts: Mutex<BTreeMap<String, usize>>,
    got: Mutex<Vec<Got>>,
}

#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
    event: Value,
}

const OK: u8 = 0;
/// The first request for each event fails (`503`), the next succeeds: half of all requests fail.
const FAIL_HALF: u8 = 1;
const GONE: u8 = 2;

impl Receiver {
    fn new(clock: Arc<dyn Env>, tolerance_secs: u64) -> Arc<Receiver> {
        Arc::new(Receiver {
            secret: Mutex::new(None),
            clock,
            tolerance_secs,
            mode: AtomicU8::new(OK),
            requests: AtomicUsize::new(0),
            attempts: Mutex::new(BTreeMap::new()),
            got: Mutex::new(Vec::new()),
        })
    }

    /// Serves on `addr` (port 0 for any) until the returned task is aborted.
    async fn serve(self: &Arc<Self>, addr: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/hooks", axum::routing::post(receive)).with_state(self.clone());
        (addr, tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }))
    }

    fn event_ids(&self) -> BTreeSet<String> {
        self.got.lock().unwrap().iter().map(|g| g.id.clone()).collect()
    }
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = r.secret.lock().unwrap().clone().expect("a secret before any delivery");
    let now = r.clock.now() / 1000;
    if let Err(e) = liveshop_webhooks::standard::verify(&[secret], header, &body, now, r.tolerance_secs) {
        panic!("a delivery failed verification: {e}");
    }
    let id = header("webhook-id").unwrap().to_string();
    let before = std::mem::replace(r.attempts.lock().unwrap().entry(id.clone()).or_default(), 0);
    r.attempts.lock().unwrap().insert(id.clone(), before + 1);
    match r.mode.load(Ordering::SeqCst) {
        GONE => return StatusCode::GONE,
        FAIL_HALF if before == 0 => return StatusCode::SERVICE_UNAVAILABLE,
        _ => {}
    }
    r.got.lock().unwrap().push(Got {
        id,
        timestamp: header("webhook-timestamp").unwrap().to_string(),
        signature: header("webhook-signature").unwrap().to_string(),
        event: serde_json::from_slice(&body).unwrap(),
        body,
    });
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_sale_loses_no_confirmed_order_and_no_webhook() {
    let dir = temp_dir("sale-crash");
    let (node, addr) = spawn(&dir);
    let studio = format!("Bearer {}", token("*", "studio", Role::Merchant));
    let show = json!({ "id": "sale", "title": "Crash sale" });
    let (status, reply) =
        http(addr, "POST", "/v1/shows", &[("Authorization", &studio)], &show.to_string()).await;
    assert_eq!(status, 201, "{reply}");

    let receiver = Receiver::new(Arc::new(SystemEnv), liveshop_webhooks::DEFAULT_TOLERANCE_SECS);
    let (hooks, _server) = receiver.serve("127.0.0.1:0".parse().unwrap()).await;
    let merchant = Merchant::new(Api::new(addr), "sale", token("sale", "acme", Role::Merchant));
    merchant.stock_a_drop(100).await;
    let secret =
        merchant.webhooks_to(&format!("http://{hooks}/hooks"), &["order.created", "order.paid"]).await;
    *receiver.secret.lock().unwrap() = Some(secret.clone());

    // 400 buyers; the node is killed once 40 of them have been told of an order.
    let confirmed = Arc::new(AtomicUsize::new(0));
    let api = Api::new(addr);
    let buyers: Vec<_> = (0..400)
        .map(|i| {
            let (api, confirmed) = (api.clone(), confirmed.clone());
            tokio::spawn(async move {
                let told = buy(&api, "sale", i, &format!("key-{i}")).await;
                if matches!(told, Told::Order(_)) {
                    confirmed.fetch_add(1, Ordering::SeqCst);
                }
                told
            })
        })
        .collect();
    while confirmed.load(Ordering::SeqCst) < 40 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    kill9(node);
    let mut told = Vec::new();
    for b in buyers {
        told.push(b.await.unwrap());
    }
    let before = told.iter().filter(|t| matches!(t, Told::Order(_))).count();
    assert!(before >= 40 && told.contains(&Told::Nothing), "the kill landed mid-sale: {before} confirmed");

    // Back up; buyers who heard nothing retry with the same key, as a client should, and new
    // buyers come until the sale is over: whatever the crash interrupted, no unit is lost.
    let (_node, addr) = spawn(&dir);
    let api = Api::new(addr);
    for (i, t) in told.iter_mut().enumerate() {
        if *t == Told::Nothing {
            *t = buy(&api, "sale", i, &format!("key-{i}")).await;
        }
    }
    let merchant = Merchant::new(api.clone(), "sale", token("sale", "acme", Role::Merchant));
    let mut orders = merchant.settled_orders().await;
    let mut next = told.len();
    while merchant.available().await > 0 {
        assert!(next < 1_000, "stock left that nobody can buy");
        told.push(buy(&api, "sale", next, &format!("key-{next}")).await);
        next += 1;
        orders = merchant.settled_orders().await;
    }
    let sold = check_sale(&orders, &told, 100, merchant.available().await);
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for o in &orders {
        *states.entry(format!("{}/{}", o["payment"], o["payment_reason"])).or_default() += 1;
    }
    assert_eq!(sold, 100, "the sale sold out after the restart: orders {states:?}");

    // Every order's webhooks arrive, each event under one stable id however often it came.
    let wanted: BTreeSet<(String, u64)> = orders
        .iter()
        .filter(|o| o["payment"] == "paid")
        .flat_map(|o| {
            let id = o["id"].as_u64().unwrap();
            [("order.created".to_string(), id), ("order.paid".to_string(), id)]
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = receiver.got.lock().unwrap().clone();
        let mut ids: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
        for g in &got {
            let key =
                (g.event["type"].as_str().unwrap().to_string(), g.event["data"]["id"].as_u64().unwrap());
            ids.entry(key).or_default().insert(g.id.clone());
        }
        assert!(ids.values().all(|s| s.len() == 1), "a redelivery keeps its webhook-id");
        let have: BTreeSet<_> = ids.into_keys().collect();
        if wanted.is_subset(&have) {
            break;
        }
        let missing = wanted.difference(&have).count();
        assert!(Instant::now() < deadline, "{missing} webhooks still missing after 90 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The official Standard Webhooks library accepts what we sent, and refuses it tampered.
    let sample = receiver.got.lock().unwrap()[0].clone();
    standard_webhooks_python(&secret, &sample);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Verifies a delivery with the `standardwebhooks` package from PyPI (`pip install
/// standardwebhooks`; `.ci/run` installs it), then checks it refuses a tampered body.
fn standard_webhooks_python(secret: &Secret, got: &Got) {
    const SCRIPT: &str = r#"
import os, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
wh = Webhook(os.environ["SECRET"])
headers = {k: os.environ[k.upper().replace("-", "_")] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
body = os.environ["BODY"]
wh.verify(body, headers)
try:
    wh.verify(body.replace("order", "0rder", 1), headers)
except WebhookVerificationError:
    print("verified; tampered refused")
    sys.exit(0)
sys.exit("a tampered body verified")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .env("SECRET", secret.encode())
        .env("WEBHOOK_ID", &got.id)
        .env("WEBHOOK_TIMESTAMP", &got.timestamp)
        .env("WEBHOOK_SIGNATURE", &got.signature)
        .env("BODY", std::str::from_utf8(&got.body).unwrap())
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "standardwebhooks (PyPI) refused our signature or accepted a forgery: {stderr}\n\
         (needs `pip install standardwebhooks`; .ci/run installs it)"
    );
}

/// The retry schedule (5 s to 10 h) runs in seconds on a clock this much faster.
const SPEED: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_a_flaky_receiver_that_was_down_and_stop_at_410() {
    let clock: Arc<dyn Env> = Arc::new(FastClock::new(SPEED));
    let node = TestNode::start_with_env(temp_dir("webhooks"), clock.clone(), |_| {}).await;
    // Tokens must outlive days of the fast clock.
    let exp = clock.now() / 1000 + 365 * 24 * 3600;
    let mint = |room: &str, sub: &str, role| {
        let secret = TokenSecret::new(SECRET.as_bytes().to_vec()).unwrap();
        secret.mint(&Claims::new(sub, room, role, exp)).unwrap()
    };
    let api = Api::new(node.addr);
    let merchant = Merchant::new(api.clone(), ROOM, mint(ROOM, "acme", Role::Merchant));
    merchant.stock_a_drop(100).await;

    // Freshness is not what this test is about: a fast clock ages a signature in milliseconds.
    let receiver = Receiver::new(clock.clone(), 10 * 365 * 24 * 3600);
    receiver.mode.store(FAIL_HALF, Ordering::SeqCst);
    let (hooks, server) = receiver.serve("127.0.0.1:0".parse().unwrap()).await;
    *receiver.secret.lock().unwrap() =
        Some(merchant.webhooks_to(&format!("http://{hooks}/hooks"), &[]).await);

    let sell = |from: usize, to: usize| {
        let (api, mint) = (api.clone(), &mint);
        async move {
            for i in from..to {
                let (buyer, token) = (format!("b{i}"), mint(ROOM, &format!("b{i}"), Role::Viewer));
                let base = format!("/v1/shows/{ROOM}/shop");
                let item = json!({ "sku": SKU, "quantity": 1 });
                api.call("POST", &format!("{base}/carts/{buyer}/items"), &token, None, item).await;
                let pay = json!({ "payment_method": "tok_visa" });
                let (status, r) = api.call("POST", &format!("{base}/checkout"), &token, Some("k"), pay).await;
                assert!((200..300).contains(&status), "{r}");
            }
        }
    };
    sell(0, 10).await;
    // Down for a while (over eight minutes of the node's clock, past the first three retries),
    // while more orders come in.
    server.abort();
    let _ = server.await;
    sell(10, 20).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, server) = receiver.serve(hooks).await;

    // Everything queued arrives in the end: the outbox drains, nothing is a dead letter.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let outbox = merchant.call("GET", "/webhooks/outbox", Value::Null).await;
        let dead = merchant.call("GET", "/webhooks/dead-letters", Value::Null).await;
        assert_eq!(dead["dead_letters"], json!([]), "nothing died");
        if outbox["deliveries"] == json!([]) {
            break;
        }
        assert!(Instant::now() < deadline, "still queued after 120 s: {outbox}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids = receiver.event_ids();
    let orders = merchant.orders().await;
    assert_eq!(orders.len(), 20);
    for o in &orders {
        let id = o["id"].as_u64().unwrap();
        for ty in ["order.created", "order.paid"] {
            let got = receiver
                .got
                .lock()
                .unwrap()
                .iter()
                .any(|g| g.event["type"] == ty && g.event["data"]["id"] == id);
            assert!(got, "{ty} of order {id} arrived");
        }
    }
    assert!(ids.len() >= 40, "{} events", ids.len());
    let (requests, delivered) =
        (receiver.requests.load(Ordering::SeqCst), receiver.got.lock().unwrap().len());
    assert!(requests >= 2 * ids.len(), "the receiver refused half: {delivered} of {requests} succeeded");

    // 410 disables the endpoint; its deliveries become dead letters and nothing more is sent.
    receiver.mode.store(GONE, Ordering::SeqCst);
    sell(20, 21).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let endpoint = loop {
        let e = merchant.call("GET", "/webhooks/endpoints", Value::Null).await["endpoints"][0].clone();
        if e["enabled"] == false {
            break e;
        }
        assert!(Instant::now() < deadline, "the endpoint was not disabled: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(endpoint["disabled_reason"].as_str().unwrap().contains("410"), "{endpoint}");
    // Attempts already on their way when the first 410 came back still land; then silence.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = receiver.requests.load(Ordering::SeqCst);
    sell(21, 23).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.requests.load(Ordering::SeqCst), requests, "a gone endpoint gets nothing more");
    let dead = merchant.call("GET", "/webhooks/dead-letters", Value::Null).await;
    assert!(
        !dead["dead_letters"].as_array().unwrap().is_empty(),
        "its deliveries wait as dead letters: {dead}"
    );
    server.abort();
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_own_code_and_changes_nothing() {
    let node = TestNode::start(|_| {}).await;
    let api = Api::new(node.addr);
    let merchant = Merchant::new(api.clone(), ROOM, token(ROOM, "acme", Role::Merchant));
    merchant.stock_a_drop(5).await;
    let ana = token(ROOM, "ana", Role::Viewer);
    let base = format!("/v1/shows/{ROOM}/shop");
    let code = |r: (u16, Value)| (r.0, r.1["error"]["code"].as_str().unwrap_or_default().to_string());
    let items = format!("{base}/carts/ana/items");
    for (body, expected) in [
        (json!({ "sku": SKU, "quantity": -1 }), (400, "invalid_quantity")),
        (json!({ "sku": SKU, "quantity": 1_000_000_000u64 }), (400, "invalid_quantity")),
        (json!({ "sku": "NOPE", "quantity": 1 }), (404, "unknown_sku")),
        (
            json!({ "sku": SKU, "quantity": 1, "expected_unit_price": { "minor": 1, "currency": "EUR" } }),
            (409, "price_mismatch"),
        ),
        (
            json!({ "sku": SKU, "quantity": 1, "expected_unit_price": { "minor": 3000, "currency": "USD" } }),
            (422, "currency_mismatch"),
        ),
    ] {
        let got = code(api.call("POST", &items, &ana, None, body.clone()).await);
        assert_eq!((got.0, got.1.as_str()), expected, "{body}");
    }
    let (status, cart) = api.call("GET", &format!("{base}/carts/ana"), &ana, None, Value::Null).await;
    assert_eq!((status, cart["quote"]["lines"].clone()), (200, json!([])), "refusals left the cart alone");

    let checkout = format!("{base}/checkout");
    api.call("POST", &items, &ana, None, json!({ "sku": SKU, "quantity": 1 })).await;
    let pay = json!({ "payment_method": "tok_visa" });
    assert_eq!(
        code(api.call("POST", &checkout, &ana, None, pay.clone()).await),
        (400, "idempotency_key_missing".into())
    );
    let tampered =
        json!({ "payment_method": "tok_visa", "expected_total": { "minor": 1, "currency": "EUR" } });
    assert_eq!(
        code(api.call("POST", &checkout, &ana, Some("t"), tampered).await),
        (409, "price_mismatch".into())
    );
    let (status, first) = api.call("POST", &checkout, &ana, Some("k1"), pay.clone()).await;
    assert!((200..300).contains(&status), "{first}");
    let other = json!({ "payment_method": "tok_mastercard" });
    assert_eq!(
        code(api.call("POST", &checkout, &ana, Some("k1"), other).await),
        (422, "idempotency_key_reused".into())
    );
    let orders = merchant.settled_orders().await;
    assert_eq!(orders.len(), 1, "one order for one key");
    assert_eq!(merchant.available().await, 4);
    // Buyers act for themselves only, and tokens of other shows do not open this shop.
    let (bob, foreign) = (token(ROOM, "bob", Role::Viewer), token("other", "ana", Role::Viewer));
    let bob_cart = api.call("GET", &format!("{base}/carts/ana"), &bob, None, Value::Null).await;
    assert_eq!(code(bob_cart), (403, "forbidden".into()));
    let catalog = api.call("GET", &format!("{base}/catalog"), &foreign, None, Value::Null).await;
    assert_eq!(code(catalog), (401, "token_wrong_room".into()));
    let deal = json!({ "sku": SKU, "duration_secs": 60, "discount": { "percent": "10" }, "quantity_cap": 1, "per_buyer_cap": 1 });
    assert_eq!(
        code(api.call("POST", &format!("{base}/deals"), &ana, None, deal).await),
        (403, "forbidden".into())
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_updates_are_applied_once_and_only_when_signed() {
    let node = TestNode::start(|_| {}).await;
    let api = Api::new(node.addr);
    let merchant = Merchant::new(api.clone(), ROOM, token(ROOM, "acme", Role::Merchant));
    merchant.stock_a_drop(5).await;
    let post = |path: &str, headers: Vec<(&'static str, String)>, body: String| {
        let mut req = api.client.post(format!("{}/v1/shops/{ROOM}{path}", api.base)).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Ours: X-Liveshop-Signature over the timestamp and the body.
    let issued = merchant.call("POST", "/inbound-secrets/liveshop", Value::Null).await;
    let secret = Secret::parse(issued["secret"].as_str().unwrap()).unwrap();
    let update = json!({ "event_id": "erp-1", "update": { "type": "stock.set", "sku": SKU, "on_hand": 42 } })
        .to_string();
    let signed = |body: &str, secret: &Secret| {
        vec![(
            "x-liveshop-signature",
            liveshop_webhooks::liveshop::sign(secret, now_ms() / 1000, body.as_bytes()),
        )]
    };
    let forged = Secret::generate([7; liveshop_webhooks::GENERATED_SECRET_LEN]);
    let (status, r) = post("/inbound/liveshop", signed(&update, &forged), update.clone()).await;
    assert_eq!((status, r["error"]["code"].as_str()), (401, Some("signature_mismatch")));
    let (status, r) = post("/inbound/liveshop", vec![], update.clone()).await;
    assert_eq!((status, r["error"]["code"].as_str()), (401, Some("signature_missing")));
    let stale = vec![(
        "x-liveshop-signature",
        liveshop_webhooks::liveshop::sign(&secret, now_ms() / 1000 - 3600, update.as_bytes()),
    )];
    let (status, r) = post("/inbound/liveshop", stale, update.clone()).await;
    assert_eq!((status, r["error"]["code"].as_str()), (401, Some("timestamp_too_old")));
    assert_eq!(merchant.available().await, 5, "nothing unsigned was applied");
    let (status, r) = post("/inbound/liveshop", signed(&update, &secret), update.clone()).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(merchant.available().await, 42);
    // A replay, even freshly signed, is the same event: applied once.
    let (status, r) = post("/inbound/liveshop", signed(&update, &secret), update.clone()).await;
    assert_eq!((status, r["error"]["code"].as_str()), (409, Some("duplicate_event")));

    // Shopify's webhooks: the conformance case
    // `shopify_product_webhooks_are_applied_once_and_only_when_signed`, on both hosts.
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_webhook_settles_a_charge_stripe_never_answered() {
    const WHSEC: &str = "whsec_stripe_endpoint_secret_for_tests";
    // Stripe's API is a closed port: every charge attempt fails as a network error and waits.
    let node = TestNode::start(|c| {
        c.payments.provider = liveshop_edge::config::ProviderName::Stripe;
        c.payments.stripe_api_base = "http://127.0.0.1:9".into();
        c.payments.stripe_secret_key = Some("sk_test_unreachable".into());
        c.payments.stripe_webhook_secret = Some(WHSEC.into());
    })
    .await;
    let api = Api::new(node.addr);
    let merchant = Merchant::new(api.clone(), ROOM, token(ROOM, "acme", Role::Merchant));
    merchant.stock_a_drop(5).await;
    let ana = token(ROOM, "ana", Role::Viewer);
    let base = format!("/v1/shows/{ROOM}/shop");
    api.call("POST", &format!("{base}/carts/ana/items"), &ana, None, json!({ "sku": SKU, "quantity": 1 }))
        .await;
    let (status, r) = api
        .call("POST", &format!("{base}/checkout"), &ana, Some("k"), json!({ "payment_method": "tok_visa" }))
        .await;
    assert_eq!(status, 202, "pending: {r}");
    let order = r["order"]["id"].as_u64().unwrap();

    let event = |kind: &str| {
        json!({ "id": "evt_1", "type": kind, "data": { "object": {
            "id": "pi_3Mtw", "object": "payment_intent", "status": "succeeded", "amount": 3000, "currency": "eur",
            "metadata": { "shop": ROOM, "order": order.to_string() },
        }}})
        .to_string()
    };
    let hook = |body: String, secret: &str| {
        let sig = liveshop_webhooks::stripe::sign(secret, now_ms() / 1000, body.as_bytes());
        api.client
            .post(format!("{}/v1/payments/stripe/webhook", api.base))
            .header("Stripe-Signature", sig)
            .body(body)
            .send()
    };
    let forged = hook(event("payment_intent.succeeded"), "whsec_not_the_secret").await.unwrap();
    assert_eq!(forged.status().as_u16(), 400);
    assert_eq!(merchant.orders().await[0]["payment"], "pending");
    let ok = hook(event("payment_intent.succeeded"), WHSEC).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let orders = merchant.settled_orders().await;
    assert_eq!((orders[0]["id"].as_u64(), orders[0]["payment"].as_str()), (Some(order), Some("paid")));
    assert_eq!(merchant.available().await, 4);
    node.stop().await;
}

/// One buyer pays for one unit of the drop through the show's shop.
async fn buy_one(api: &Api, buyer: &str) {
    let (base, token) = (format!("/v1/shows/{ROOM}/shop"), token(ROOM, buyer, Role::Viewer));
    let item = json!({ "sku": SKU, "quantity": 1 });
    api.call("POST", &format!("{base}/carts/{buyer}/items"), &token, None, item).await;
    let pay = json!({ "payment_method": "tok_visa" });
    let (status, r) = api.call("POST", &format!("{base}/checkout"), &token, Some(buyer), pay).await;
    assert!((200..300).contains(&status), "{r}");
}

/// The attack of issue 10 on a node without `[webhooks] allow_private_hosts`: every loopback,
/// private or metadata endpoint is refused before anything connects. And a name is checked where
/// it resolves: an endpoint at `localhost`, stored while the node allowed it, is not delivered
/// once the node no longer does, because `localhost` resolves to loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_never_reach_loopback_private_or_metadata_addresses_without_the_setting() {
    let dir = temp_dir("ssrf");
    let strict = |c: &mut liveshop_edge::EdgeConfig| c.webhooks.allow_private_hosts.clear();
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = trap.local_addr().unwrap().port();
    let node = TestNode::start_in(dir.clone(), strict).await;
    let merchant = Merchant::new(Api::new(node.addr), ROOM, token(ROOM, "acme", Role::Merchant));
    merchant.stock_a_drop(10).await;
    merchant.call("POST", "/webhook-secrets/whsec_main", Value::Null).await;
    for url in [
        format!("http://127.0.0.1:{port}/hooks"),
        format!("http://[::ffff:127.0.0.1]:{port}/hooks"),
        format!("http://localhost:{port}/hooks"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/hooks".to_string(),
    ] {
        let body = json!({ "url": url, "secret_id": "whsec_main", "events": ["order.paid"] });
        let (status, r) = merchant
            .api
            .call("POST", &format!("/v1/shops/{ROOM}/webhooks/endpoints"), &merchant.token, None, body)
            .await;
        assert_eq!((status, r["error"]["code"].as_str()), (400, Some("endpoint_not_allowed")), "{url}: {r}");
    }
    buy_one(&merchant.api, "b0").await;
    node.stop().await;

    // Allowed by name, for a while: the endpoint is stored.
    let node =
        TestNode::start_in(dir.clone(), |c| c.webhooks.allow_private_hosts = vec!["localhost".into()]).await;
    let merchant = Merchant::new(Api::new(node.addr), ROOM, token(ROOM, "acme", Role::Merchant));
    let url = format!("http://localhost:{port}/hooks");
    let body = json!({ "url": url, "secret_id": "whsec_main", "events": ["order.paid"] });
    merchant.call("POST", "/webhooks/endpoints", body).await;
    node.stop().await;

    // No longer allowed: `localhost` resolves, is refused, and the delivery fails without a status.
    let node = TestNode::start_in(dir, strict).await;
    let merchant = Merchant::new(Api::new(node.addr), ROOM, token(ROOM, "acme", Role::Merchant));
    buy_one(&merchant.api, "b1").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let outbox = merchant.call("GET", "/webhooks/outbox", Value::Null).await;
        if let Some(d) =
            outbox["deliveries"].as_array().unwrap().iter().find(|d| d["attempts"].as_u64() > Some(0))
        {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "no attempt within 30 s: {outbox}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["last_status"], Value::Null, "no answer, because no connection: {delivery}");
    let knock = tokio::time::timeout(Duration::from_millis(500), trap.accept()).await;
    assert!(knock.is_err(), "a webhook connected to loopback");
    node.stop().await;
}

/// Issue 10, data at rest: the data directory is its owner's alone (0700, tightened when an
/// earlier version left it open), every file in it is 0600, and `shops.db` holds no webhook
/// secret in a readable form, neither a new one nor one an earlier version stored in plain text,
/// while deliveries still verify with the secret the merchant was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_and_webhook_secrets_are_sealed_at_rest() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("at-rest");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = TestNode::start_in(dir.clone(), |_| {}).await;
    let merchant = Merchant::new(Api::new(node.addr), ROOM, token(ROOM, "acme", Role::Merchant));
    merchant.stock_a_drop(10).await;
    let receiver = Receiver::new(Arc::new(SystemEnv), liveshop_webhooks::DEFAULT_TOLERANCE_SECS);
    let (hooks, server) = receiver.serve("127.0.0.1:0".parse().unwrap()).await;
    let secret = merchant.webhooks_to(&format!("http://{hooks}/hooks"), &["order.paid"]).await;
    *receiver.secret.lock().unwrap() = Some(secret.clone());
    buy_one(&merchant.api, "b0").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.got.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no verified delivery within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the data directory");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    for name in ["liveshop.db", "shops.db", "shops.db-wal"] {
        assert!(files.iter().any(|f| f.ends_with(name)), "{name} in {files:?}");
    }
    for file in files.iter().filter(|f| f.is_file() && !f.ends_with("edge.toml")) {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    let encoded = secret.encode();
    let key = encoded.trim_start_matches("whsec_");
    let raw: Vec<u8> =
        ["shops.db", "shops.db-wal"].iter().flat_map(|f| std::fs::read(dir.join(f)).unwrap()).collect();
    assert!(!raw.windows(key.len()).any(|w| w == key.as_bytes()), "the secret is in shops.db's bytes");
    let db = rusqlite::Connection::open(dir.join("shops.db")).unwrap();
    let bodies = |db: &rusqlite::Connection| -> Vec<String> {
        let mut stmt = db.prepare("SELECT body FROM records WHERE kind = 'webhook-secrets'").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let sealed = bodies(&db);
    assert!(!sealed.is_empty() && sealed.iter().all(|b| !b.contains(key)), "{sealed:?}");
    node.stop().await;

    // A secret an earlier version stored in plain text is sealed when the node starts, and the
    // directory and files it left open to others are closed.
    let old = Secret::generate([7; liveshop_webhooks::GENERATED_SECRET_LEN]).encode();
    let plain = json!([{ "secret": old, "created_at": 0, "expires_at": null }]).to_string();
    db.execute(
        "INSERT INTO records (kind, id, body) VALUES ('webhook-secrets', 'show/whsec_old', ?1)",
        [&plain],
    )
    .unwrap();
    drop(db);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("shops.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let node = TestNode::start_in(dir.clone(), |_| {}).await;
    assert_eq!((mode(&dir), mode(&dir.join("shops.db"))), (0o700, 0o600));
    let db = rusqlite::Connection::open(dir.join("shops.db")).unwrap();
    let old_key = old.trim_start_matches("whsec_");
    assert!(
        bodies(&db).iter().all(|b| b.starts_with("sealed:") && !b.contains(old_key)),
        "{:?}",
        bodies(&db)
    );
    server.abort();
    node.stop().await;
}
