//! `liveshop bench checkout`: a flash sale. Thousands of buyers, each with one unit of the same
//! SKU in their cart, check out at once for a few units; then the same burst against a plain
//! SQLite baseline in the same process.
//!
//! On the node every checkout is `POST /v1/shows/{show}/shop/checkout` over a keep-alive HTTP/1.1
//! connection (bearer token, JSON body, `Idempotency-Key`), routed to the shop actor (wasm in
//! wasmtime), which commits the event to SQLite before it answers; the test payment provider then
//! settles each order as a further event. The baseline does the same reserve-and-order writes (the
//! idempotency key, the cart, the stock check, the reservation, the order) in one `BEGIN
//! IMMEDIATE` transaction per buyer on a rusqlite connection with the node's storage settings
//! (WAL, `synchronous=NORMAL`), called from as many tokio tasks as the node gets connections and
//! run by a few blocking threads (`--sqlite-threads`, default 2: with hundreds, the threads
//! convoy on the connection's mutex and the baseline gets slower): no HTTP, no JSON requests, no
//! tokens, no actor, no wasm.
//!
//! Carts are filled before each burst, one request (one transaction) per buyer, timed on their
//! own and kept out of the burst's figures.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use liveshop_identity::{Claims, Role};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Value, json};

use super::cpu::{self, CpuUsage};
use super::http::HttpConn;
use super::node::{self, RunningNode, ScratchDir, ServerRuntime, bench_config};
use super::report::{Table, latency_rows};
use super::stats::{Summary, count, ratio, us};
use super::{PAUSE, WORKERS};

const SHOW: &str = "bench-flash-sale";
const PRODUCT: &str = "flash-tee";
const SKU: &str = "FLASH-TEE-M";
const PRICE_MINOR: i64 = 1999;
const CURRENCY: &str = "EUR";
/// What every buyer puts in their cart before the burst.
const CART_BODY: &str = r#"{"sku":"FLASH-TEE-M","quantity":1}"#;
/// The test provider's card that pays.
const CHECKOUT_BODY: &str = r#"{"payment_method":"tok_visa"}"#;
/// How long the node gets after the burst to settle the accepted orders' payments.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// Orders `GET /orders` lists at most (the newest).
const MAX_LISTED: usize = 100;
/// The shop's reservation of a checkout's stock, as the shop's default (10 minutes).
const RESERVATION_MS: i64 = 10 * 60 * 1000;

#[derive(Args)]
pub struct CheckoutArgs {
    /// Buyers in the burst, each checking out one unit.
    #[arg(long, default_value_t = 10_000)]
    buyers: usize,
    /// Units of the one SKU on sale.
    #[arg(long, default_value_t = 100)]
    units: u32,
    /// Checkouts in flight at once: on the node, one keep-alive connection each.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Threads running the SQLite baseline's transactions; the rest of the transactions in
    /// flight wait in a queue for them.
    #[arg(long, default_value_t = 2)]
    sqlite_threads: usize,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    buyers: usize,
    units: u32,
    concurrency: usize,
    sqlite_threads: usize,
}

impl CheckoutArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        anyhow::ensure!((1..=1_000_000).contains(&self.buyers), "--buyers must be 1 to 1000000");
        anyhow::ensure!((1..=1_000_000).contains(&self.units), "--units must be 1 to 1000000");
        anyhow::ensure!((1..=4096).contains(&self.concurrency), "--concurrency must be 1 to 4096");
        anyhow::ensure!((1..=512).contains(&self.sqlite_threads), "--sqlite-threads must be 1 to 512");
        let concurrency = self.concurrency.min(self.buyers);
        Ok(Plan {
            buyers: self.buyers,
            units: self.units,
            concurrency,
            sqlite_threads: self.sqlite_threads.min(concurrency),
        })
    }
}

/// What each buyer does in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Puts one unit in their cart.
    Cart,
    /// Checks out their cart.
    Checkout,
}

/// What a server answered.
enum Answer {
    /// 2xx: in a checkout, an order.
    Accepted,
    /// An error answer, by its code (`out_of_stock`).
    Refused(String),
}

/// One phase's answers, as they come in.
#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    accepted: usize,
    refused: BTreeMap<String, usize>,
    /// Requests that got no answer (a broken connection, a timeout, a failed transaction).
    lost: usize,
    first_lost: Option<String>,
}

impl Tally {
    fn answer(&mut self, took: Duration, answer: Answer) {
        self.latencies.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
        match answer {
            Answer::Accepted => self.accepted += 1,
            Answer::Refused(code) => *self.refused.entry(code).or_default() += 1,
        }
    }

    fn lost(&mut self, why: String) {
        self.lost += 1;
        self.first_lost.get_or_insert(why);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend_from_slice(&other.latencies);
        self.accepted += other.accepted;
        for (code, n) in other.refused {
            *self.refused.entry(code).or_default() += n;
        }
        self.lost += other.lost;
        if self.first_lost.is_none() {
            self.first_lost = other.first_lost;
        }
    }

    fn finish(mut self, wall: Duration, cpu: CpuUsage) -> Phase {
        let answered = self.latencies.len();
        Phase {
            answered,
            per_sec: answered as f64 / wall.as_secs_f64().max(1e-9),
            latency: Summary::of(&mut self.latencies),
            wall,
            accepted: self.accepted,
            refused: self.refused,
            lost: self.lost,
            first_lost: self.first_lost,
            cpu,
        }
    }
}

/// One phase measured: from the first request sent to the last answer.
struct Phase {
    answered: usize,
    per_sec: f64,
    latency: Option<Summary>,
    wall: Duration,
    accepted: usize,
    refused: BTreeMap<String, usize>,
    lost: usize,
    first_lost: Option<String>,
    cpu: CpuUsage,
}

/// What was sold, as the server itself tells after the burst.
struct Sold {
    /// Stock taken: the units on sale minus those still available.
    units: u32,
    orders_paid: usize,
    /// Orders looked at for `orders_paid` (the node lists the newest [`MAX_LISTED`]).
    orders_seen: usize,
}

/// One server's run: the carts, the burst, and what was sold.
struct Side {
    carts: Phase,
    burst: Phase,
    sold: Sold,
    /// The shop actor's events during the burst (node only).
    events: Vec<node::EventTime>,
}

pub fn run(args: &CheckoutArgs) -> anyhow::Result<()> {
    let plan = args.plan()?;
    // A socket at both ends of every connection, both in this process.
    cpu::raise_nofile(2 * plan.concurrency as u64 + 512)?;
    super::warnings_only();
    let scratch = ScratchDir::new()?;
    let clients = super::client_runtime()?;
    let (node, sql) = clients.block_on(async {
        eprintln!("bench: liveshop node: {} carts, then the checkout burst", plan.buyers);
        let node = on_node(&plan, &scratch.0).await.context("the burst on the node")?;
        tokio::time::sleep(PAUSE).await;
        eprintln!("bench: SQLite baseline: {} carts, then the checkout burst", plan.buyers);
        let sql = on_sqlite(&plan, &scratch.0).await.context("the burst on the SQLite baseline")?;
        anyhow::Ok((node, sql))
    })?;
    clients.shutdown_timeout(Duration::from_secs(1));
    print!("{}", render(&plan, &node, &sql));
    let expected = expected_sold(&plan);
    anyhow::ensure!(
        [&node, &sql].iter().all(|s| s.sold.units == expected && s.burst.accepted == expected as usize),
        "units sold or orders accepted differ from min(units, buyers) = {expected}"
    );
    Ok(())
}

fn expected_sold(plan: &Plan) -> u32 {
    plan.units.min(u32::try_from(plan.buyers).unwrap_or(u32::MAX))
}

fn buyer(i: usize) -> String {
    format!("buyer-{i}")
}

fn idempotency_key(i: usize) -> String {
    format!("bench-checkout-{i}")
}

// ---------------------------------------------------------------------------------------------
// The node

/// The show's shop as its buyers and its merchant reach it.
struct Storefront {
    addr: SocketAddr,
    /// `Bearer ...` for each buyer, minted before any phase.
    buyers: Vec<String>,
    merchant: String,
}

impl Storefront {
    fn new(node: &RunningNode, buyers: usize) -> anyhow::Result<Storefront> {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
        let bearer = |sub: &str, role: Role| -> anyhow::Result<String> {
            Ok(format!("Bearer {}", node.app.secret.mint(&Claims::new(sub, SHOW, role, exp))?))
        };
        Ok(Storefront {
            addr: node.addr,
            buyers: (0..buyers).map(|i| bearer(&buyer(i), Role::Viewer)).collect::<Result<_, _>>()?,
            merchant: bearer("bench-merchant", Role::Merchant)?,
        })
    }

    fn path(rest: &str) -> String {
        format!("/v1/shows/{SHOW}/shop{rest}")
    }

    /// Buyer `i`'s request for `step`.
    async fn send(&self, conn: &mut HttpConn, step: Step, i: usize) -> anyhow::Result<(u16, Vec<u8>)> {
        let auth = ("Authorization", self.buyers[i].as_str());
        let json = ("Content-Type", "application/json");
        match step {
            Step::Cart => {
                let path = Self::path(&format!("/carts/{}/items", buyer(i)));
                conn.request("POST", &path, &[auth, json], CART_BODY.as_bytes()).await
            }
            Step::Checkout => {
                let key = idempotency_key(i);
                let headers = [auth, json, ("Idempotency-Key", key.as_str())];
                conn.request("POST", &Self::path("/checkout"), &headers, CHECKOUT_BODY.as_bytes()).await
            }
        }
    }

    /// A merchant's request, which must succeed: its JSON answer.
    async fn merchant(
        &self,
        conn: &mut HttpConn,
        method: &str,
        rest: &str,
        body: &str,
    ) -> anyhow::Result<Value> {
        let headers = [("Authorization", self.merchant.as_str()), ("Content-Type", "application/json")];
        let (status, answer) = conn.request(method, &Self::path(rest), &headers, body.as_bytes()).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{method} {rest}: HTTP {status}: {}",
            String::from_utf8_lossy(&answer)
        );
        serde_json::from_slice(&answer).with_context(|| format!("{method} {rest}: not JSON"))
    }
}

/// 2xx is accepted; anything else is refused with the shop's (or the node's) error code.
fn node_answer(status: u16, body: &[u8]) -> Answer {
    if (200..300).contains(&status) {
        return Answer::Accepted;
    }
    let code = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = &v["error"];
        e["code"].as_str().or_else(|| e.as_str()).map(str::to_string)
    });
    Answer::Refused(code.unwrap_or_else(|| format!("HTTP {status}")))
}

async fn on_node(plan: &Plan, dir: &Path) -> anyhow::Result<Side> {
    let server = ServerRuntime::new(WORKERS)?;
    let config = bench_config(&dir.join("node"), plan.concurrency + 16);
    let node = RunningNode::start(server.handle(), config, &[SHOW]).await?;
    let shop = Arc::new(Storefront::new(&node, plan.buyers)?);
    let mut admin = HttpConn::connect(node.addr).await?;
    let product = json!({
        "title": "Flash-sale tee",
        "variants": [{
            "sku": SKU,
            "title": "M",
            "price": { "minor": PRICE_MINOR, "currency": CURRENCY },
            "stock": plan.units,
        }],
    });
    shop.merchant(&mut admin, "PUT", &format!("/products/{PRODUCT}"), &product.to_string())
        .await
        .context("creating the product")?;
    let mut conns = Vec::with_capacity(plan.concurrency);
    for k in 0..plan.concurrency {
        conns.push(HttpConn::connect(node.addr).await.with_context(|| format!("connection {k}"))?);
    }
    let (conns, carts) = node_phase(&shop, conns, Step::Cart, plan.buyers).await?;
    anyhow::ensure!(
        carts.accepted == plan.buyers,
        "filling the carts: {} of {} accepted; refused: {:?}; no answer: {} ({})",
        carts.accepted,
        plan.buyers,
        carts.refused,
        carts.lost,
        carts.first_lost.as_deref().unwrap_or("-")
    );
    tokio::time::sleep(PAUSE).await;
    let metrics = node.app.node.metrics();
    let before = metrics.render();
    let (conns, burst) = node_phase(&shop, conns, Step::Checkout, plan.buyers).await?;
    drop(conns);
    let sold = node_sold(&shop, &mut admin, plan, burst.accepted).await?;
    let after = metrics.render();
    let events = shop_events(&before, &after);
    drop(admin);
    node.stop().await;
    drop(server);
    Ok(Side { carts, burst, sold, events })
}

/// Every buyer's request for `step`, `conns.len()` at a time, one per connection.
async fn node_phase(
    shop: &Arc<Storefront>,
    conns: Vec<HttpConn>,
    step: Step,
    buyers: usize,
) -> anyhow::Result<(Vec<HttpConn>, Phase)> {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu::sample()?;
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let (shop, next) = (shop.clone(), next.clone());
            tokio::spawn(async move {
                let mut conn = Some(conn);
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= buyers {
                        break;
                    }
                    let Some(c) = conn.as_mut() else {
                        tally.lost("the connection could not be opened again".into());
                        continue;
                    };
                    let sent = Instant::now();
                    match shop.send(c, step, i).await {
                        Ok((status, body)) => tally.answer(sent.elapsed(), node_answer(status, &body)),
                        Err(e) => {
                            tally.lost(format!("{e:#}"));
                            // The connection is in an unknown state: start a fresh one.
                            conn = HttpConn::connect(shop.addr).await.ok();
                        }
                    }
                }
                (conn, tally)
            })
        })
        .collect();
    let mut tally = Tally::default();
    let mut conns = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (conn, t) = t.await?;
        conns.extend(conn);
        tally.merge(t);
    }
    let wall = started.elapsed();
    let cpu = cpu::usage(&cpu_before, &cpu::sample()?);
    Ok((conns, tally.finish(wall, cpu)))
}

/// Waits (bounded) for the listed orders' payments to settle, then reads the stock left.
async fn node_sold(
    shop: &Storefront,
    conn: &mut HttpConn,
    plan: &Plan,
    accepted: usize,
) -> anyhow::Result<Sold> {
    let listed = accepted.min(MAX_LISTED);
    let until = Instant::now() + SETTLE_LIMIT;
    let (orders_seen, orders_paid) = loop {
        let orders = shop.merchant(conn, "GET", "/orders", "").await?;
        let orders = orders["orders"].as_array().cloned().unwrap_or_default();
        let paid = orders.iter().filter(|o| o["payment"] == "paid").count();
        if paid >= listed || Instant::now() >= until {
            break (orders.len(), paid);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let product = shop.merchant(conn, "GET", &format!("/products/{PRODUCT}"), "").await?;
    let available = product["variants"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["sku"] == SKU))
        .and_then(|v| v["available"].as_u64())
        .context("the product's answer has no availability for the SKU")?;
    let units = plan.units.saturating_sub(u32::try_from(available).unwrap_or(u32::MAX));
    Ok(Sold { units, orders_paid, orders_seen })
}

/// The shop actor's requests and effect results (the payments) between two metrics texts.
fn shop_events(before: &str, after: &str) -> Vec<node::EventTime> {
    ["shop_request", "shop_effect_result", "shop_alarm"]
        .into_iter()
        .filter_map(|kind| {
            let label = format!("kind=\"{kind}\"");
            let delta = |name: &str| {
                node::metric_where(after, name, &label) - node::metric_where(before, name, &label)
            };
            let n = delta("liveshop_actor_event_seconds_count");
            (n > 0.0).then(|| node::EventTime {
                kind,
                count: n as u64,
                mean: Duration::from_secs_f64(delta("liveshop_actor_event_seconds_sum").max(0.0) / n),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The SQLite baseline

/// A shop in plain SQLite: one connection, shared behind a mutex as the node's own database is
/// (writers to one SQLite file take turns anyway; separate connections would wait for the write
/// lock in SQLite's busy handler, which sleeps for milliseconds).
struct Baseline {
    conn: Mutex<Connection>,
}

impl Baseline {
    fn open(path: &Path, units: u32) -> anyhow::Result<Baseline> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE stock (
                 sku TEXT PRIMARY KEY, price_minor INTEGER NOT NULL, currency TEXT NOT NULL,
                 on_hand INTEGER NOT NULL, reserved INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE cart_lines (
                 buyer TEXT NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL,
                 PRIMARY KEY (buyer, sku)) WITHOUT ROWID;
             CREATE TABLE orders (
                 id INTEGER PRIMARY KEY, buyer TEXT NOT NULL, total_minor INTEGER NOT NULL,
                 currency TEXT NOT NULL, payment TEXT NOT NULL, created_at INTEGER NOT NULL,
                 body TEXT NOT NULL);
             CREATE TABLE reservations (
                 order_id INTEGER NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL, PRIMARY KEY (order_id, sku)) WITHOUT ROWID;
             CREATE TABLE idempotency (
                 buyer TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
                 order_id INTEGER NOT NULL, created_at INTEGER NOT NULL,
                 PRIMARY KEY (buyer, key)) WITHOUT ROWID;",
        )
        .context("creating the baseline's tables")?;
        conn.execute(
            "INSERT INTO stock (sku, price_minor, currency, on_hand, reserved) VALUES (?1, ?2, ?3, ?4, 0)",
            params![SKU, PRICE_MINOR, CURRENCY, units],
        )?;
        Ok(Baseline { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One unit more in `buyer`'s cart, if the stock has it: `Err(code)` for a refusal.
    fn add_to_cart(&self, buyer: &str) -> rusqlite::Result<Result<(), String>> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let in_cart: u32 = tx
            .prepare_cached("SELECT quantity FROM cart_lines WHERE buyer = ?1 AND sku = ?2")?
            .query_row(params![buyer, SKU], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let available: u32 = tx
            .prepare_cached("SELECT on_hand - reserved FROM stock WHERE sku = ?1")?
            .query_row(params![SKU], |r| r.get(0))?;
        if in_cart + 1 > available {
            return Ok(Err("out_of_stock".into()));
        }
        tx.prepare_cached(
            "INSERT INTO cart_lines (buyer, sku, quantity) VALUES (?1, ?2, 1)
             ON CONFLICT (buyer, sku) DO UPDATE SET quantity = quantity + 1",
        )?
        .execute(params![buyer, SKU])?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// `buyer`'s cart becomes an order with its stock reserved, in one transaction: the order's
    /// id, or `Err(code)` for a refusal (which writes nothing). A key seen before gets its order.
    fn checkout(
        &self,
        buyer: &str,
        key: &str,
        body: &str,
        now: i64,
    ) -> rusqlite::Result<Result<i64, String>> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seen: Option<(i64, String)> = tx
            .prepare_cached("SELECT order_id, fingerprint FROM idempotency WHERE buyer = ?1 AND key = ?2")?
            .query_row(params![buyer, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((order, fingerprint)) = seen {
            return Ok(if fingerprint == body { Ok(order) } else { Err("idempotency_key_reused".into()) });
        }
        let lines: Vec<(String, u32)> = tx
            .prepare_cached("SELECT sku, quantity FROM cart_lines WHERE buyer = ?1 ORDER BY sku")?
            .query_map(params![buyer], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if lines.is_empty() {
            return Ok(Err("cart_empty".into()));
        }
        let mut total = 0i64;
        let mut priced = Vec::with_capacity(lines.len());
        for (sku, quantity) in &lines {
            let (price, available): (i64, u32) = tx
                .prepare_cached("SELECT price_minor, on_hand - reserved FROM stock WHERE sku = ?1")?
                .query_row(params![sku], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if *quantity > available {
                return Ok(Err("out_of_stock".into()));
            }
            total += price * i64::from(*quantity);
            priced.push(json!({ "sku": sku, "quantity": quantity, "unit_price": price }));
        }
        let order = json!({
            "buyer": buyer,
            "lines": priced,
            "total": { "minor": total, "currency": CURRENCY },
            "payment": "pending",
            "created_at": now,
            "idempotency_key": key,
        });
        tx.prepare_cached(
            "INSERT INTO orders (buyer, total_minor, currency, payment, created_at, body)
             VALUES (?1, ?2, ?3, 'pending', ?4, ?5)",
        )?
        .execute(params![buyer, total, CURRENCY, now, order.to_string()])?;
        let id = tx.last_insert_rowid();
        for (sku, quantity) in &lines {
            tx.prepare_cached("UPDATE stock SET reserved = reserved + ?2 WHERE sku = ?1")?
                .execute(params![sku, quantity])?;
            tx.prepare_cached(
                "INSERT INTO reservations (order_id, sku, quantity, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, sku, quantity, now + RESERVATION_MS])?;
        }
        tx.prepare_cached("DELETE FROM cart_lines WHERE buyer = ?1")?.execute(params![buyer])?;
        tx.prepare_cached(
            "INSERT INTO idempotency (buyer, key, fingerprint, order_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![buyer, key, body, id, now])?;
        tx.commit()?;
        Ok(Ok(id))
    }

    /// The order's payment went through: paid, its reserved units taken from the stock.
    fn settle(&self, order: i64) -> rusqlite::Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held: Vec<(String, u32)> = tx
            .prepare_cached("SELECT sku, quantity FROM reservations WHERE order_id = ?1")?
            .query_map(params![order], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (sku, quantity) in &held {
            tx.prepare_cached(
                "UPDATE stock SET on_hand = on_hand - ?2, reserved = reserved - ?2 WHERE sku = ?1",
            )?
            .execute(params![sku, quantity])?;
        }
        tx.prepare_cached("DELETE FROM reservations WHERE order_id = ?1")?.execute(params![order])?;
        tx.prepare_cached("UPDATE orders SET payment = 'paid' WHERE id = ?1")?.execute(params![order])?;
        tx.commit()
    }

    fn sold(&self, units: u32) -> rusqlite::Result<Sold> {
        let conn = self.lock();
        let available: u32 =
            conn.query_row("SELECT on_hand - reserved FROM stock WHERE sku = ?1", params![SKU], |r| {
                r.get(0)
            })?;
        let (orders, paid): (i64, i64) =
            conn.query_row("SELECT count(*), coalesce(sum(payment = 'paid'), 0) FROM orders", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(Sold {
            units: units.saturating_sub(available),
            orders_paid: paid as usize,
            orders_seen: orders as usize,
        })
    }
}

async fn on_sqlite(plan: &Plan, dir: &Path) -> anyhow::Result<Side> {
    let server = ServerRuntime::with_blocking_threads(WORKERS, plan.sqlite_threads)?;
    let db = Arc::new(Baseline::open(&dir.join("baseline.db"), plan.units)?);
    let rt = server.handle().clone();
    let carts = sqlite_phase(&db, &rt, plan, Step::Cart).await?;
    anyhow::ensure!(
        carts.accepted == plan.buyers,
        "filling the baseline's carts: {} of {} accepted ({:?}, {})",
        carts.accepted,
        plan.buyers,
        carts.refused,
        carts.first_lost.as_deref().unwrap_or("-")
    );
    tokio::time::sleep(PAUSE).await;
    let burst = sqlite_phase(&db, &rt, plan, Step::Checkout).await?;
    let (sold_db, units) = (db.clone(), plan.units);
    let sold = rt.spawn_blocking(move || sold_db.sold(units)).await??;
    drop(server);
    Ok(Side { carts, burst, sold, events: vec![] })
}

/// Every buyer's transaction for `step`, `plan.concurrency` at a time, each run on one of the
/// server runtime's `plan.sqlite_threads` blocking threads (queued for one until it is free). An accepted checkout's payment settles in a transaction of its own
/// that nobody waits for, like the node's test payments; the phase's figures end with the last
/// answer, and the settlements are awaited after.
async fn sqlite_phase(
    db: &Arc<Baseline>,
    rt: &tokio::runtime::Handle,
    plan: &Plan,
    step: Step,
) -> anyhow::Result<Phase> {
    // The blocking threads exist before the clock starts, as the node's runtime threads do.
    let warm: Vec<_> = (0..plan.sqlite_threads)
        .map(|_| rt.spawn_blocking(|| std::thread::sleep(Duration::from_millis(5))))
        .collect();
    for w in warm {
        w.await?;
    }
    let buyers = plan.buyers;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu::sample()?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..plan.concurrency)
        .map(|_| {
            let (db, rt, next) = (db.clone(), rt.clone(), next.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut settling = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= buyers {
                        break;
                    }
                    let sent = Instant::now();
                    let tx_db = db.clone();
                    let done = rt
                        .spawn_blocking(move || match step {
                            Step::Cart => tx_db.add_to_cart(&buyer(i)).map(|r| r.map(|()| None)),
                            Step::Checkout => tx_db
                                .checkout(&buyer(i), &idempotency_key(i), CHECKOUT_BODY, now)
                                .map(|r| r.map(Some)),
                        })
                        .await;
                    match done {
                        Ok(Ok(Ok(order))) => {
                            tally.answer(sent.elapsed(), Answer::Accepted);
                            if let Some(order) = order {
                                let db = db.clone();
                                settling.push(rt.spawn_blocking(move || db.settle(order)));
                            }
                        }
                        Ok(Ok(Err(code))) => tally.answer(sent.elapsed(), Answer::Refused(code)),
                        Ok(Err(e)) => tally.lost(format!("SQLite: {e}")),
                        Err(e) => tally.lost(format!("the transaction's thread: {e}")),
                    }
                }
                (tally, settling)
            })
        })
        .collect();
    let mut tally = Tally::default();
    let mut settling = Vec::new();
    for t in tasks {
        let (t, s) = t.await?;
        tally.merge(t);
        settling.extend(s);
    }
    let wall = started.elapsed();
    let cpu = cpu::usage(&cpu_before, &cpu::sample()?);
    for s in settling {
        s.await?.context("settling a baseline order")?;
    }
    Ok(tally.finish(wall, cpu))
}

// ---------------------------------------------------------------------------------------------
// The report

/// A section's title and its columns.
fn title(t: &mut Table, text: &str) {
    t.title(text);
    t.head("liveshop node", "SQLite baseline", "node / baseline");
}

/// Answers per second, latency percentiles and what did not go through.
fn phase(t: &mut Table, rate: &str, a: &Phase, b: &Phase) {
    t.row(rate, &count(a.per_sec), &count(b.per_sec), &ratio(Some(a.per_sec), Some(b.per_sec)));
    latency_rows(t, &a.latency, &b.latency);
    let wall = |p: &Phase| format!("{:.2} s", p.wall.as_secs_f64());
    t.row("first request to last answer", &wall(a), &wall(b), "");
    let refused = |p: &Phase| {
        if p.refused.is_empty() {
            return "0".to_string();
        }
        p.refused
            .iter()
            .map(|(code, n)| format!("{} {code}", count(*n as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    t.row("accepted", &count(a.accepted as f64), &count(b.accepted as f64), "");
    t.row("refused", &refused(a), &refused(b), "");
    t.row("no answer", &count(a.lost as f64), &count(b.lost as f64), "");
    let pct = |v: f64| format!("{v:.0}%");
    t.row(
        "server CPU (100% = one core)",
        &pct(a.cpu.server),
        &pct(b.cpu.server),
        &ratio(Some(a.cpu.server), Some(b.cpu.server)),
    );
    let per = |p: &Phase| (p.answered > 0).then(|| 1e6 * p.cpu.server_secs / p.answered as f64);
    let show = |v: Option<f64>| v.map(|v| format!("{v:.1} µs")).unwrap_or_else(|| "-".into());
    t.row("server CPU per answer", &show(per(a)), &show(per(b)), &ratio(per(a), per(b)));
    t.row("load generators' CPU", &pct(a.cpu.client), &pct(b.cpu.client), "");
    t.row("other processes' CPU", &pct(a.cpu.others), &pct(b.cpu.others), "");
    for (name, p) in [("node", a), ("baseline", b)] {
        if let Some(why) = &p.first_lost {
            t.line(&format!("{name}: the first request without an answer: {why}"));
        }
    }
}

fn render(plan: &Plan, node: &Side, sql: &Side) -> String {
    let mut t = Table(String::new());
    let _ = writeln!(
        t.0,
        "liveshop bench checkout: a flash sale of {} units to {} buyers (one unit each), {} checkouts in \
         flight; {} cores, loopback only.",
        count(f64::from(plan.units)),
        count(plan.buyers as f64),
        plan.concurrency,
        cpu::cores()
    );
    t.line("liveshop node: each checkout is an HTTP/1.1 POST on a keep-alive connection (bearer token,");
    t.line("  JSON body, Idempotency-Key) through the edge's router to the shop actor: wasm in wasmtime,");
    t.line("  one SQLite commit per request (WAL, synchronous=NORMAL) before the answer; the test payment");
    t.line("  provider then settles each order as one more event.");
    t.line("SQLite baseline: the same reserve-and-order writes (idempotency key, cart, stock check,");
    t.line("  reservation, order) in one BEGIN IMMEDIATE transaction per buyer on one rusqlite connection");
    t.line(&format!(
        "  (WAL, synchronous=NORMAL), run in-process by {} blocking thread(s) that the transactions in",
        plan.sqlite_threads
    ));
    t.line("  flight queue for: no HTTP, no JSON requests, no tokens, no actor, no wasm. Payments settle");
    t.line("  in one more transaction per order.");
    t.line(&format!(
        "Servers and load generators share this process on separate tokio runtimes ({WORKERS} threads each)."
    ));

    title(
        &mut t,
        &format!(
            "Carts, filled before the burst (not in its figures): one request per buyer, {} at a time",
            plan.concurrency
        ),
    );
    phase(&mut t, "carts filled/s", &node.carts, &sql.carts);

    title(
        &mut t,
        &format!(
            "Burst: {} buyers check out at once, {} in flight; latency = request sent to answer received",
            count(plan.buyers as f64),
            plan.concurrency
        ),
    );
    phase(&mut t, "checkouts/s (answers)", &node.burst, &sql.burst);
    let expected = expected_sold(plan);
    let sold = |s: &Side| count(f64::from(s.sold.units));
    t.row("units sold (the server's stock)", &sold(node), &sold(sql), "");
    let check = |s: &Side| {
        let ok = s.sold.units == expected && s.burst.accepted == expected as usize;
        format!("{} ({})", if ok { "yes" } else { "NO" }, count(f64::from(expected)))
    };
    t.row("sold == min(units, buyers)", &check(node), &check(sql), "");
    let paid =
        |s: &Side| format!("{} of {}", count(s.sold.orders_paid as f64), count(s.sold.orders_seen as f64));
    t.row("orders paid (after the burst)", &paid(node), &paid(sql), "");

    let _ = writeln!(t.0, "\nNotes");
    let events = node
        .events
        .iter()
        .map(|e| format!("{} {} x {}", e.kind, us(e.mean.as_micros() as f64), count(e.count as f64)))
        .collect::<Vec<_>>()
        .join(", ");
    t.line("- The shop actor's events in the burst, mean time to handle x count (commits apart):");
    t.line(&format!("  {events}."));
    t.line("  Refused checkouts (out_of_stock) change nothing durable, but each still runs in the actor.");
    if node.sold.orders_seen < node.burst.accepted {
        t.line(&format!(
            "- The node lists its newest {MAX_LISTED} orders: \"orders paid\" counts those; units sold comes"
        ));
        t.line("  from the product's availability.");
    }
    let saturated = |c: &CpuUsage| c.total >= 90.0 * cpu::cores() as f64;
    if saturated(&node.burst.cpu) || saturated(&sql.burst.cpu) {
        t.line("- The machine's CPU was saturated (90% of every core or more) during a burst: latencies");
        t.line("  there include waiting for a core, on the server's and on the clients' side.");
    }
    if node.burst.cpu.others >= 10.0 || sql.burst.cpu.others >= 10.0 {
        t.line("- WARNING: other processes used 10% of a core or more during a burst; run again on a quiet");
        t.line("  machine.");
    }
    t.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_sells_each_unit_once_and_answers_a_retry_with_its_order() {
        let dir = std::env::temp_dir().join(format!("liveshop-bench-checkout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = Baseline::open(&dir.join("b.db"), 3).unwrap();
        for i in 0..5 {
            db.add_to_cart(&buyer(i)).unwrap().unwrap();
        }
        let answers: Vec<_> =
            (0..5).map(|i| db.checkout(&buyer(i), &idempotency_key(i), CHECKOUT_BODY, 1).unwrap()).collect();
        assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 3);
        assert_eq!(answers[4], Err("out_of_stock".to_string()));
        let first = *answers[0].as_ref().unwrap();
        assert_eq!(db.checkout(&buyer(0), &idempotency_key(0), CHECKOUT_BODY, 2).unwrap(), Ok(first));
        assert_eq!(
            db.checkout(&buyer(0), &idempotency_key(0), "{}", 2).unwrap(),
            Err("idempotency_key_reused".into())
        );
        db.settle(first).unwrap();
        let sold = db.sold(3).unwrap();
        assert_eq!((sold.units, sold.orders_paid, sold.orders_seen), (3, 1, 3));
        // A cart for stock that is gone is refused.
        assert_eq!(db.add_to_cart(&buyer(9)).unwrap(), Err("out_of_stock".into()));
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn answers_are_classified_by_status_and_code() {
        assert!(matches!(node_answer(202, b"{}"), Answer::Accepted));
        let refused = node_answer(409, br#"{"error":{"code":"out_of_stock","message":"only 0 left"}}"#);
        assert!(matches!(refused, Answer::Refused(c) if c == "out_of_stock"));
        assert!(matches!(node_answer(502, b"oops"), Answer::Refused(c) if c == "HTTP 502"));
    }
}
