//! A show's report, driven the way a show runs: viewers join and leave over sockets and on the
//! public feed on a schedule of minutes, the host pins and unpins, a deal starts, buyers check
//! out and one is refunded, the stream ends; two shows in two currencies at once. The report's
//! retention, funnel, per-product table and GMV must equal what the script did, its CSVs must
//! read the same in Python's `csv` module, the merchant gets a signed `show.report_ready`, and a
//! `kill -9` loses nothing the report had counted.
//!
//! The schedule runs on a clock ten times faster than the real one: five minutes of show in half
//! a minute, each step in the middle of its minute (three real seconds from either end).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{Api, Client, FastClock, Merchant, SECRET, TestNode, http, kill9, spawn, temp_dir};
use liveshop_edge::Env;
use liveshop_identity::{Claims, Role, Secret};
use serde_json::{Value, json};

const SPEED: u64 = 10;
const MINUTE: u64 = 60_000;

/// Tokens for a node on `clock`, valid for days of it.
fn mint(clock: &dyn Env, room: &str, sub: &str, role: Role) -> String {
    let exp = clock.now() / 1000 + 30 * 24 * 3600;
    Secret::new(SECRET.as_bytes().to_vec())
        .unwrap()
        .mint(&Claims::new(sub, room, role, exp).with_name(sub))
        .unwrap()
}

/// A feed viewer: a device that beats `POST /heartbeat` with the cookie it was given.
struct Device {
    cookie: Option<String>,
}

impl Device {
    async fn beat(&mut self, api: &Api, show: &str, leaving: bool) {
        let mut req = api.client.post(format!("{}/v1/rooms/{show}/heartbeat", api.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if leaving {
            req = req.body(r#"{"leaving": true}"#);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 204);
        if let Some(set) = r.headers().get("set-cookie") {
            self.cookie = Some(set.to_str().unwrap().split(';').next().unwrap().to_string());
        }
    }
}

/// A device the test and the beating task share.
type Shared = Arc<tokio::sync::Mutex<Device>>;

/// Devices on the feed, beating every second of real time (10 s of the clock) until they leave.
#[derive(Clone, Default)]
struct Feed(Arc<Mutex<Vec<(String, Shared)>>>);

impl Feed {
    async fn join(&self, api: &Api, show: &str) -> Shared {
        let device = Arc::new(tokio::sync::Mutex::new(Device { cookie: None }));
        device.lock().await.beat(api, show, false).await;
        self.0.lock().unwrap().push((show.to_string(), device.clone()));
        device
    }

    async fn leave(&self, api: &Api, show: &str, device: &Shared) {
        self.0.lock().unwrap().retain(|(_, d)| !Arc::ptr_eq(d, device));
        device.lock().await.beat(api, show, true).await;
    }

    fn keep_beating(&self, api: Api) -> tokio::task::JoinHandle<()> {
        let feed = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let devices = feed.0.lock().unwrap().clone();
                for (show, d) in devices {
                    d.lock().await.beat(&api, &show, false).await;
                }
            }
        })
    }
}

/// One show's people: its host's socket, and a buyer's way to the show's shop.
struct Show {
    id: &'static str,
    host: Client,
    host_token: String,
}

async fn viewer(node: &TestNode, clock: &dyn Env, show: &str, sub: &str) -> (Client, String) {
    let token = mint(clock, show, sub, Role::Viewer);
    (Client::connect(&format!("ws://{}/v1/rooms/{show}/ws?token={token}", node.addr)).await, token)
}

/// Puts `quantity` of `sku` in the buyer's cart through the show's shop and checks out with a
/// card that pays; returns the order once paid.
async fn buy(api: &Api, show: &str, buyer: &str, token: &str, items: &[(&str, u32)]) -> Value {
    for (sku, quantity) in items {
        let path = format!("/v1/shows/{show}/shop/carts/{buyer}/items");
        let (status, reply) =
            api.call("POST", &path, token, None, json!({"sku": sku, "quantity": quantity})).await;
        assert_eq!(status, 200, "{reply}");
    }
    let key = format!("{show}-{buyer}-{}", items.len());
    let path = format!("/v1/shows/{show}/shop/checkout");
    let (status, reply) =
        api.call("POST", &path, token, Some(&key), json!({"payment_method": "tok_visa"})).await;
    assert!(status == 201 || status == 202, "{reply}");
    let id = reply["order"]["id"].as_u64().unwrap();
    for _ in 0..200 {
        let (_, o) =
            api.call("GET", &format!("/v1/shows/{show}/shop/orders/{id}"), token, None, Value::Null).await;
        if o["order"]["payment"] == "paid" {
            return o["order"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("order {id} of {buyer} was never paid");
}

async fn report(api: &Api, show: &str, token: &str) -> Value {
    let (status, r) = api.call("GET", &format!("/v1/shows/{show}/analytics"), token, None, Value::Null).await;
    assert_eq!(status, 200, "{r}");
    r
}

/// Waits, in real time, until the clock is `offset` into minute `m` of a show that began at
/// `origin`.
async fn at(clock: &FastClock, origin: u64, m: u64, offset: u64) {
    tokio::time::sleep(clock.until(origin + m * MINUTE + offset)).await;
}

/// Sends a product signal over a viewer's socket (no ack comes for signals).
async fn signal(c: &mut Client, kind: &str, product: &str) {
    c.send(json!({"type": kind, "product_id": product})).await;
}

/// `POST /v1/stream-events` as the media origin signs it, on the node's clock.
async fn stream_event(node: &TestNode, clock: &dyn Env, show: &str, event: Value, id: &str) {
    let key = liveshop_edge::stream_event_secret(SECRET.as_bytes());
    let body = json!({ "show": show, "event": event }).to_string();
    let signed = liveshop_webhooks::standard::sign(&[key], id, clock.now() / 1000, body.as_bytes()).unwrap();
    let headers: Vec<(&str, &str)> = signed.iter().collect();
    let (status, reply) = http(node.addr, "POST", "/v1/stream-events", &headers, &body).await;
    assert_eq!(status, 200, "{reply}");
}

/// The merchant's webhook receiver: keeps every verified delivery.
#[derive(Clone)]
struct Hooks {
    secret: Arc<Mutex<Option<liveshop_webhooks::Secret>>>,
    clock: Arc<FastClock>,
    got: Arc<Mutex<Vec<Value>>>,
}

async fn receive(State(h): State<Hooks>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = h.secret.lock().unwrap().clone().expect("a secret before any delivery");
    let now = h.clock.now() / 1000;
    liveshop_webhooks::standard::verify(&[secret], header, &body, now, 300).expect("a signed delivery");
    h.got.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
    StatusCode::NO_CONTENT
}

/// Column sums of a CSV as Python's `csv` module reads it (`python3`, as CI installs it).
fn python_sums(csv: &str, columns: &[&str]) -> Value {
    let script = "import csv, json, sys\n\
        rows = list(csv.DictReader(sys.stdin))\n\
        cols = sys.argv[1:]\n\
        print(json.dumps({c: sum(float(r[c] or 0) for r in rows) for c in cols} | {'rows': len(rows)}))";
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(columns)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(csv.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn csv(api: &Api, show: &str, file: &str, token: &str) -> String {
    let r = api
        .client
        .get(format!("{}/v1/shows/{show}/analytics/{file}", api.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    r.text().await.unwrap()
}

fn ints(v: &Value, field: &str) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|r| r[field].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_scripted_show_equals_what_the_script_did_in_two_currencies() {
    let clock = Arc::new(FastClock::new(SPEED));
    let node = TestNode::start_with_env(temp_dir("analytics"), clock.clone(), |_| {}).await;
    let api = Api::new(node.addr);

    // Two merchants, each with a shop and a show: euros and yen.
    let atelier =
        Merchant::new(Api::new(node.addr), "atelier", mint(&*clock, "atelier", "ines", Role::Merchant));
    let kobo = Merchant::new(Api::new(node.addr), "kobo", mint(&*clock, "kobo", "kenji", Role::Merchant));
    for (merchant, show) in [(&atelier, "spring"), (&kobo, "tokyo")] {
        let body = json!({"id": show, "title": format!("{show} show"), "shop": merchant.shop});
        let (status, reply) = api.call("POST", "/v1/shows", &merchant.token, None, body).await;
        assert_eq!(status, 201, "{reply}");
    }
    kobo.call("PUT", "/settings", json!({"currency": "JPY"})).await;
    let variant = |sku: &str, minor: i64, currency: &str| json!({"variants": [{"sku": sku, "price": {"minor": minor, "currency": currency}, "stock": 50}]});
    let mut linen = variant("LINEN-M", 4990, "EUR");
    linen["title"] = json!("Linen shirt");
    atelier.call("PUT", "/products/linen", linen).await;
    let mut silk = variant("SILK-S", 8000, "EUR");
    silk["title"] = json!("Silk scarf");
    atelier.call("PUT", "/products/silk", silk).await;
    let mut tea = variant("TEA-1", 1500, "JPY");
    tea["title"] = json!("Sencha");
    kobo.call("PUT", "/products/tea", tea).await;
    let hooks = Hooks { secret: Default::default(), clock: clock.clone(), got: Default::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hooks_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hooks", axum::routing::post(receive)).with_state(hooks.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    *hooks.secret.lock().unwrap() = Some(atelier.webhooks_to(&hooks_url, &["show.report_ready"]).await);

    let host = |show: &'static str, sub: &str| {
        let token = mint(&*clock, show, sub, Role::Host);
        async move {
            let url = format!("ws://{}/v1/rooms/{show}/ws?token={token}", node.addr);
            Show { id: show, host: Client::connect(&url).await, host_token: token }
        }
    };
    let mut spring = host("spring", "hana").await;
    let mut tokyo = host("tokyo", "yuki").await;

    // The show begins: the stream starts and the host pins the linen shirt.
    let started = json!({"type": "stream.started", "playlist": "/hls/spring/master.m3u8", "codecs": "avc1.42e01f,mp4a.40.2", "width": 1280, "height": 720});
    stream_event(&node, &*clock, "spring", started, "evt_spring_start").await;
    let pin = |id: &str, title: &str| json!({"type": "product.pin", "product": {"id": id, "title": title}});
    assert_eq!(spring.host.command(pin("linen", "Linen shirt")).await["type"], "ack");
    assert_eq!(tokyo.host.command(pin("tea", "Sencha")).await["type"], "ack");
    let origin = report(&api, spring.id, &spring.host_token).await["started_at"].as_u64().unwrap();
    let tokyo_origin = report(&api, tokyo.id, &tokyo.host_token).await["started_at"].as_u64().unwrap();
    assert!(tokyo_origin.abs_diff(origin) <= 10_000, "both shows began in the same slot or the next");
    let feed = Feed::default();
    let beating = feed.keep_beating(Api::new(node.addr));

    // Minute 0: four viewers on sockets and two on the feed; all four sockets see the shirt,
    // two click it; a chat line and two reactions. In Tokyo, two viewers, one clicks the tea.
    at(&clock, origin, 0, 30_000).await;
    let mut v = Vec::new();
    for i in 1..=4 {
        v.push(viewer(&node, &*clock, "spring", &format!("v{i}")).await);
    }
    let d1 = feed.join(&api, "spring").await;
    let d2 = feed.join(&api, "spring").await;
    for (c, _) in v.iter_mut() {
        signal(c, "product.impression", "linen").await;
    }
    signal(&mut v[0].0, "product.click", "linen").await;
    signal(&mut v[1].0, "product.click", "linen").await;
    assert_eq!(v[0].0.chat("Love the colour").await["type"], "ack");
    for _ in 0..2 {
        v[2].0.send(json!({"type": "react", "emoji": "🔥"})).await;
    }
    let (mut t1, t1_token) = viewer(&node, &*clock, "tokyo", "t1").await;
    let (_t2, _) = viewer(&node, &*clock, "tokyo", "t2").await;
    signal(&mut t1, "product.impression", "tea").await;
    signal(&mut t1, "product.click", "tea").await;

    // Minute 1: v1 buys a shirt, v2 puts two in the cart; v4 and one device leave. In Tokyo,
    // t1 buys two teas.
    at(&clock, origin, 1, 30_000).await;
    let v1_order = buy(&api, "spring", "v1", &v[0].1, &[("LINEN-M", 1)]).await;
    let path = "/v1/shows/spring/shop/carts/v2/items";
    let (status, _) = api.call("POST", path, &v[1].1, None, json!({"sku": "LINEN-M", "quantity": 2})).await;
    assert_eq!(status, 200);
    let (mut v4, _) = v.pop().unwrap();
    v4.ws().close(None).await.unwrap();
    feed.leave(&api, "spring", &d2).await;
    buy(&api, "tokyo", "t1", &t1_token, &[("TEA-1", 2)]).await;

    // Minute 2: the host pins the scarf and starts a deal on it (25 % off), v3 sees, clicks and buys it at
    // the deal price, v2 checks out, two more viewers come.
    at(&clock, origin, 2, 30_000).await;
    assert_eq!(spring.host.command(pin("silk", "Silk scarf")).await["type"], "ack");
    let deal = json!({"sku": "SILK-S", "duration_secs": 3600, "discount": {"percent": "25"}, "quantity_cap": 5, "per_buyer_cap": 1});
    let (status, reply) =
        api.call("POST", "/v1/shows/spring/shop/deals", &spring.host_token, None, deal).await;
    assert_eq!(status, 201, "{reply}");
    signal(&mut v[2].0, "product.impression", "silk").await;
    signal(&mut v[2].0, "product.click", "silk").await;
    let scarf = buy(&api, "spring", "v3", &v[2].1, &[("SILK-S", 1)]).await;
    assert_eq!(scarf["total"]["minor"], 6000, "the deal price");
    let (status, reply) = api
        .call(
            "POST",
            "/v1/shows/spring/shop/checkout",
            &v[1].1,
            Some("v2-shirts"),
            json!({"payment_method": "tok_visa"}),
        )
        .await;
    assert!(status == 201 || status == 202, "{reply}");
    let v5 = viewer(&node, &*clock, "spring", "v5").await;
    let (v6, _) = viewer(&node, &*clock, "spring", "v6").await;

    // Minute 3: v1, v2 and the other device leave; the shirt is unpinned; v1 gets 10 € back.
    at(&clock, origin, 3, 30_000).await;
    for (mut c, _) in v.drain(..2) {
        c.ws().close(None).await.unwrap();
    }
    feed.leave(&api, "spring", &d1).await;
    assert_eq!(
        spring.host.command(json!({"type": "product.unpin", "product_id": "linen"})).await["type"],
        "ack"
    );
    let refund = json!({"amount": {"minor": 1000, "currency": "EUR"}});
    atelier.call("POST", &format!("/orders/{}/refund", v1_order["id"]), refund).await;

    // Minute 4: the stream ends; the report is read a few seconds later (of the clock).
    at(&clock, origin, 4, 30_000).await;
    stream_event(
        &node,
        &*clock,
        "spring",
        json!({"type": "stream.ended", "duration_ms": 270_000}),
        "evt_spring_end",
    )
    .await;
    at(&clock, origin, 4, 35_000).await;
    beating.abort();
    let r = report(&api, "spring", &spring.host_token).await;

    // Audience, minute by minute: who watched at the minute's end, the visits so far, the share
    // still there, and where visits ended.
    let minutes = &r["minutes"];
    assert_eq!(minutes.as_array().unwrap().len(), 5, "{minutes}");
    assert_eq!(ints(minutes, "watching"), [6, 4, 6, 3, 3]);
    assert_eq!(ints(minutes, "joined"), [6, 6, 8, 8, 8]);
    assert_eq!(ints(minutes, "ended"), [0, 2, 0, 3, 0]);
    let retention: Vec<f64> =
        minutes.as_array().unwrap().iter().map(|m| m["retention"].as_f64().unwrap()).collect();
    assert_eq!(retention, [1.0, 4.0 / 6.0, 0.75, 0.375, 0.375]);
    assert_eq!(ints(minutes, "chat"), [1, 0, 0, 0, 0]);
    assert_eq!(ints(minutes, "reactions"), [2, 0, 0, 0, 0]);
    assert_eq!(ints(minutes, "impressions"), [4, 0, 1, 0, 0]);
    assert_eq!(ints(minutes, "clicks"), [2, 0, 1, 0, 0]);
    assert_eq!(ints(minutes, "add_to_carts"), [0, 2, 1, 0, 0]);
    assert_eq!(ints(minutes, "checkouts"), [0, 1, 2, 0, 0]);
    assert_eq!(ints(minutes, "orders_paid"), [0, 1, 2, 0, 0]);
    assert_eq!(minutes[1]["gmv"], json!([{"minor": 4990, "currency": "EUR"}]));
    assert_eq!(minutes[2]["gmv"], json!([{"minor": 15980, "currency": "EUR"}]));
    let slots = r["slots"].as_array().unwrap();
    assert_eq!(slots.iter().map(|s| s["peak"].as_u64().unwrap()).max(), Some(6));

    // The funnel, the totals and GMV to the cent.
    let funnel: Vec<(String, u64)> = r["funnel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().into(), s["count"].as_u64().unwrap()))
        .collect();
    let steps = ["impressions", "clicks", "add_to_carts", "checkouts", "orders_paid"].map(String::from);
    assert_eq!(funnel, steps.into_iter().zip([5, 3, 3, 3, 3]).collect::<Vec<_>>());
    assert_eq!(r["funnel"][1]["rate"], 0.6);
    let t = &r["totals"];
    assert_eq!(
        (t["unique_viewers"].as_u64(), t["visits"].as_u64(), t["peak_viewers"].as_u64()),
        (Some(8), Some(8), Some(6))
    );
    assert_eq!(
        (t["orders_paid"].as_u64(), t["units"].as_u64(), t["buyers"].as_u64()),
        (Some(3), Some(4), Some(3))
    );
    assert_eq!(t["gmv"], json!([{"minor": 20970, "currency": "EUR"}]));
    assert_eq!(t["aov"], json!([{"minor": 6990, "currency": "EUR"}]));
    assert_eq!(
        (t["refunds"].as_u64(), &t["refunded"]),
        (Some(1), &json!([{"minor": 1000, "currency": "EUR"}]))
    );
    assert_eq!(t["conversion"], 0.375, "three buyers of eight viewers");

    // Per product, best seller first, titled as pinned.
    let products = r["products"].as_array().unwrap();
    let row = |p: &Value| {
        (
            p["product_id"].as_str().unwrap().to_string(),
            p["title"].as_str().unwrap().to_string(),
            ["impressions", "clicks", "add_to_carts", "checkouts", "orders_paid", "units"]
                .map(|f| p[f].as_u64().unwrap()),
            p["revenue"].clone(),
        )
    };
    assert_eq!(
        row(&products[0]),
        (
            "linen".into(),
            "Linen shirt".into(),
            [4, 2, 2, 2, 2, 3],
            json!([{"minor": 14970, "currency": "EUR"}])
        )
    );
    assert_eq!(
        row(&products[1]),
        ("silk".into(), "Silk scarf".into(), [1, 1, 1, 1, 1, 1], json!([{"minor": 6000, "currency": "EUR"}]))
    );

    // The shirt minute by minute: seen and clicked in minute 0, bought in minutes 1 and 2.
    let shirt: Vec<Value> = products[0]["minutes"].as_array().unwrap().clone();
    let counts = |m: &Value| {
        ["minute", "impressions", "clicks", "add_to_carts", "checkouts", "orders_paid", "units"]
            .map(|f| m[f].as_u64().unwrap())
    };
    assert_eq!(
        shirt.iter().map(counts).collect::<Vec<_>>(),
        [[0, 4, 2, 0, 0, 0, 0], [1, 0, 0, 2, 1, 1, 1], [2, 0, 0, 0, 1, 1, 2]]
    );
    assert_eq!(shirt[2]["revenue"], json!([{"minor": 9980, "currency": "EUR"}]));

    // The show's moments, on its clock.
    let moments: Vec<(String, u64)> = r["moments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["kind"].as_str().unwrap().into(), m["minute"].as_u64().unwrap()))
        .collect();
    let expected = [
        ("stream_started", 0),
        ("product_pinned", 0),
        ("product_pinned", 2),
        ("deal_started", 2),
        ("product_unpinned", 3),
        ("stream_ended", 4),
    ];
    assert_eq!(moments, expected.map(|(k, m)| (k.to_string(), m)));
    assert!(r["ended_at"].as_u64().is_some());
    assert_eq!(r["moments"][3]["label"], "Silk scarf", "a deal is labelled with its product");
    assert_eq!(r["summary"]["gmv"], t["gmv"]);

    // Yen, in the other show at the same time.
    let tr = report(&api, "tokyo", &tokyo.host_token).await;
    assert_eq!(tr["totals"]["gmv"], json!([{"minor": 3000, "currency": "JPY"}]));
    assert_eq!(tr["currency"], "JPY");
    assert_eq!(
        (tr["totals"]["unique_viewers"].as_u64(), tr["totals"]["buyers"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(tr["totals"]["conversion"], 0.5);

    // The CSVs, as Python's csv module reads them, add up to the same totals.
    let m = python_sums(
        &csv(&api, "spring", "minutes.csv", &spring.host_token).await,
        &["ended", "chat", "orders_paid", "units", "gmv_EUR", "impressions"],
    );
    assert_eq!(
        m,
        json!({"rows": 5, "ended": 5.0, "chat": 1.0, "orders_paid": 3.0, "units": 4.0, "gmv_EUR": 209.70, "impressions": 5.0})
    );
    let p = python_sums(
        &csv(&api, "spring", "products.csv", &spring.host_token).await,
        &["clicks", "units", "revenue_EUR"],
    );
    assert_eq!(p, json!({"rows": 2, "clicks": 3.0, "units": 4.0, "revenue_EUR": 209.70}));
    let y = python_sums(&csv(&api, "tokyo", "minutes.csv", &tokyo.host_token).await, &["gmv_JPY"]);
    assert_eq!(y["gmv_JPY"], 3000.0);

    // The merchant reads it too (their shop's token); viewers and other shops' merchants do not.
    let merchant_view = report(&api, "spring", &atelier.token).await;
    assert_eq!(merchant_view["totals"], r["totals"]);
    for (token, status) in [(v5.1.clone(), 403), (kobo.token.clone(), 401)] {
        let (got, body) = api.call("GET", "/v1/shows/spring/analytics", &token, None, Value::Null).await;
        assert_eq!(got, status, "{body}");
    }
    let (got, _) =
        api.call("GET", "/v1/shows/spring/analytics/other.csv", &spring.host_token, None, Value::Null).await;
    assert_eq!(got, 404);

    // When the stream ended the merchant was told, signed, with the sales in total.
    let mut told = None;
    for _ in 0..200 {
        told = hooks.got.lock().unwrap().iter().find(|e| e["type"] == "show.report_ready").cloned();
        if told.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let told = told.expect("show.report_ready reached the merchant");
    assert_eq!(told["data"]["show"], "spring");
    assert_eq!(told["data"]["sales"]["gmv"], json!([{"minor": 20970, "currency": "EUR"}]));
    assert!(told["data"]["report_url"].as_str().unwrap().ends_with("/shows/spring/report"));
    drop((v5, v6));
    node.stop().await;
}

/// `kill -9` in the middle of a show: everything the report had counted before the kill (visits,
/// chat, engagement, sales) is there after the restart, to the cent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_survives_kill_9_with_everything_it_had_counted() {
    let dir = temp_dir("analytics-crash");
    let (node, addr) = spawn(&dir);
    let api = Api::new(addr);
    let clock = liveshop_edge::SystemEnv;
    let merchant = mint(&clock, "*", "studio", Role::Merchant);
    let (status, reply) =
        api.call("POST", "/v1/shows", &merchant, None, json!({"id": "crash", "title": "Crash"})).await;
    assert_eq!(status, 201, "{reply}");
    let shop = Merchant::new(Api::new(addr), "crash", mint(&clock, "crash", "studio", Role::Merchant));
    let product = json!({"title": "Mug", "variants": [{"sku": "MUG", "price": {"minor": 1250, "currency": "EUR"}, "stock": 9}]});
    shop.call("PUT", "/products/mug", product).await;
    let host_token = mint(&clock, "crash", "host", Role::Host);
    let ws = |token: String| format!("ws://{addr}/v1/rooms/crash/ws?token={token}");
    let mut host = Client::connect(&ws(host_token.clone())).await;
    let pin = json!({"type": "product.pin", "product": {"id": "mug", "title": "Mug"}});
    assert_eq!(host.command(pin).await["type"], "ack");
    let mut viewers = Vec::new();
    for i in 0..3 {
        let token = mint(&clock, "crash", &format!("c{i}"), Role::Viewer);
        let mut c = Client::connect(&ws(token.clone())).await;
        c.send(json!({"type": "product.impression", "product_id": "mug"})).await;
        assert_eq!(c.chat(&format!("hello {i}")).await["type"], "ack");
        viewers.push((c, token));
    }
    for (i, (_, token)) in viewers.iter().enumerate().take(2) {
        buy(&api, "crash", &format!("c{i}"), token, &[("MUG", 2)]).await;
    }
    // Once the report shows everything (impressions are counted in windows of 250 ms), kill.
    let mut before = report(&api, "crash", &host_token).await;
    for _ in 0..100 {
        if before["totals"]["impressions"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        before = report(&api, "crash", &host_token).await;
    }
    assert_eq!(before["totals"]["impressions"], 3);
    kill9(node);
    drop(viewers);

    let (_node, addr) = spawn(&dir);
    let after = report(&Api::new(addr), "crash", &host_token).await;
    let counted = [
        "unique_viewers",
        "visits",
        "peak_viewers",
        "chat",
        "impressions",
        "add_to_carts",
        "checkouts",
        "orders_paid",
        "units",
        "buyers",
        "gmv",
    ];
    for field in counted {
        assert_eq!(after["totals"][field], before["totals"][field], "{field}");
    }
    assert_eq!(after["totals"]["gmv"], json!([{"minor": 5000, "currency": "EUR"}]));
    assert_eq!(after["totals"]["visits"], 3);
    assert_eq!(after["moments"], before["moments"]);
    for (a, b) in after["minutes"].as_array().unwrap().iter().zip(before["minutes"].as_array().unwrap()) {
        for field in ["joined", "chat", "impressions", "orders_paid", "gmv"] {
            assert_eq!(a[field], b[field], "{field}");
        }
    }
}
