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
use common::{ROOM, SECRET, TestNode, http, kill9, now_ms, spawn, temp_dir, token};
use liveshop_edge::{Env, SystemEnv};
use liveshop_identity::{Claims, Role, Secret as TokenSecret};
use liveshop_webhooks::Secret;
use serde_json::{Value, json};

const SKU: &str = "DROP-1";
const PRICE: i64 = 4000;

/// JSON over HTTP/1.1 with keep-alive, as a browser or a merchant's system would call.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api { client: liveshop_edge::payments::http_client(), base: format!("http://{addr}") }
    }

    /// `(status, body)`; a network error is status 0.
    async fn call(
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

/// The merchant's view: `/v1/shops/{shop}/...` with a merchant token.
struct Merchant {
    api: Api,
    shop: String,
    token: String,
}

impl Merchant {
    fn new(api: Api, shop: &str, token: String) -> Merchant {
        Merchant { api, shop: shop.into(), token }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, reply) =
            self.api.call(method, &format!("/v1/shops/{}{path}", self.shop), &self.token, None, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {reply}");
        reply
    }

    /// One SKU with `stock` units, at most one per buyer, and a flash deal on all of them.
    async fn stock_a_drop(&self, stock: u32) {
        let product = json!({ "title": "Limited drop", "variants": [{
            "sku": SKU, "price": { "minor": PRICE, "currency": "EUR" }, "stock": stock, "max_per_buyer": 1,
        }]});
        self.call("PUT", "/products/drop", product).await;
        let deal = json!({ "sku": SKU, "duration_secs": 3600, "discount": { "percent": "25" }, "quantity_cap": stock, "per_buyer_cap": 1 });
        self.call("POST", "/deals", deal).await;
    }

    /// A new `whsec_main` secret and an endpoint at `url` signed with it.
    async fn webhooks_to(&self, url: &str, events: &[&str]) -> Secret {
        let issued = self.call("POST", "/webhook-secrets/whsec_main", Value::Null).await;
        let secret = Secret::parse(issued["secret"].as_str().unwrap()).unwrap();
        self.call(
            "POST",
            "/webhooks/endpoints",
            json!({ "url": url, "secret_id": "whsec_main", "events": events }),
        )
        .await;
        secret
    }

    async fn orders(&self) -> Vec<Value> {
        self.call("GET", "/orders", Value::Null).await["orders"].as_array().unwrap().clone()
    }

    /// Waits until no order's payment is still open, then returns the orders.
    async fn settled_orders(&self) -> Vec<Value> {
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

    async fn available(&self) -> u64 {
        let p = self.call("GET", "/products/drop", Value::Null).await;
        p["variants"][0]["available"].as_u64().unwrap()
    }
}

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
    if buyer % 10 == 0 {
        let (status, r) = api
            .call(
                "POST",
                &format!("{base}/carts/{name}/items"),
                &token,
                None,
                json!({ "sku": SKU, "quantity": 2 }),
            )
            .await;
        if status == 0 {
            return Told::Nothing;
        }
        // Over the cap, unless the stock ran out first.
        let code = r["error"]["code"].as_str().unwrap_or_default();
        assert!(["buyer_limit_exceeded", "out_of_stock"].contains(&code), "{r}");
    }
    let (status, r) = api
        .call(
            "POST",
            &format!("{base}/carts/{name}/items"),
            &token,
            None,
            json!({ "sku": SKU, "quantity": 1 }),
        )
        .await;
    match status {
        0 => return Told::Nothing,
        200 => {}
        _ => return Told::Refused(r["error"]["code"].as_str().unwrap_or("?").to_string()),
    }
    let path = format!("{base}/checkout");
    let checkout = || api.call("POST", &path, &token, Some(key), json!({ "payment_method": "tok_visa" }));
    let answers = if buyer % 7 == 0 {
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

    // Back up; buyers who heard nothing retry with the same key, as a client should.
    let (_node, addr) = spawn(&dir);
    let api = Api::new(addr);
    for (i, t) in told.iter_mut().enumerate() {
        if *t == Told::Nothing {
            *t = buy(&api, "sale", i, &format!("key-{i}")).await;
        }
    }
    let merchant = Merchant::new(api, "sale", token("sale", "acme", Role::Merchant));
    let orders = merchant.settled_orders().await;
    let sold = check_sale(&orders, &told, 100, merchant.available().await);
    assert_eq!(sold, 100, "the sale sold out after the restart");

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

/// A clock running `SPEED` times faster than the real one, so the retry schedule (5 s to 10 h)
/// runs in seconds. Everything else about the node is real.
struct FastClock {
    start: Instant,
    base: u64,
}

const SPEED: u64 = 500;

impl Env for FastClock {
    fn now(&self) -> u64 {
        self.base + self.start.elapsed().as_millis() as u64 * SPEED
    }

    fn fill_random(&self, buf: &mut [u8]) {
        SystemEnv.fill_random(buf);
    }

    fn real_delay(&self, ms: u64) -> Duration {
        Duration::from_millis(ms / SPEED)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_a_flaky_receiver_that_was_down_and_stop_at_410() {
    let clock: Arc<dyn Env> = Arc::new(FastClock { start: Instant::now(), base: now_ms() });
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
