//! Per-address pacing and the Worker's counters.
//!
//! - [`Limiter`]: one object per client address (`CF-Connecting-IP`, which Cloudflare sets), with
//!   the edge node's token bucket (`liveshop_room::filter::TokenBucket`) for new connections,
//!   guest tokens and anonymous reads (`CONNS_PER_IP_PER_SEC`, `CONNS_PER_IP_BURST`). The bucket
//!   lives in memory only: an evicted limiter starts full again, which only ever lets more in.
//! - [`Metrics`]: one object holding the refusal counters `GET /metrics` shows. Limiters add
//!   their address's refusals up and report them at most once a second (an alarm), so a flood
//!   never funnels one request per refusal into the one object. The tally waits in memory: a
//!   limiter evicted within that second loses it, which makes a figure low, never wrong.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use liveshop_room::filter::{Pace, TokenBucket};
use serde::Deserialize;
use worker::*;

use crate::{error, now_ms, setting};

/// How long a limiter gathers refusals before it reports them.
const REPORT_EVERY_MS: u64 = 1000;

#[durable_object]
pub struct Limiter {
    state: State,
    env: Env,
    bucket: Cell<Option<TokenBucket>>,
    /// Refusals by reason not reported to [`Metrics`] yet.
    unreported: RefCell<BTreeMap<String, u64>>,
}

impl DurableObject for Limiter {
    fn new(state: State, env: Env) -> Self {
        Limiter { state, env, bucket: Cell::new(None), unreported: RefCell::default() }
    }

    /// `POST /take`: one connection, or the 429 to give; `POST /refused/{reason}`: count one.
    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        match url.path().strip_prefix("/refused/") {
            None => {
                let per_sec = setting(&self.env, "CONNS_PER_IP_PER_SEC", 5).max(1);
                let pace = Pace {
                    burst: setting(&self.env, "CONNS_PER_IP_BURST", 20),
                    refill_every_ms: 1000 / per_sec,
                };
                let now = now_ms();
                let mut bucket = self.bucket.get().unwrap_or_else(|| TokenBucket::full(pace, now));
                let taken = bucket.take(pace, now);
                self.bucket.set(Some(bucket));
                match taken {
                    Ok(()) => Ok(Response::empty()?.with_status(204)),
                    Err(ms) => {
                        self.count("connection_rate").await?;
                        let msg = format!("too many connections from your address; retry in {ms} ms");
                        error(429, "rate_limited", msg)
                    }
                }
            }
            Some(reason) => {
                self.count(reason).await?;
                Ok(Response::empty()?.with_status(204))
            }
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let counts = std::mem::take(&mut *self.unreported.borrow_mut());
        if !counts.is_empty() {
            let mut init = RequestInit::new();
            init.with_method(Method::Post).with_body(Some(serde_json::to_string(&counts)?.into()));
            let add = Request::new_with_init("https://metrics/add", &init)?;
            metrics_stub(&self.env)?.fetch_with_request(add).await?;
        }
        Response::ok("")
    }
}

impl Limiter {
    async fn count(&self, reason: &str) -> Result<()> {
        let first = {
            let mut unreported = self.unreported.borrow_mut();
            let first = unreported.is_empty();
            *unreported.entry(reason.to_string()).or_default() += 1;
            first
        };
        if first {
            let at = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64((now_ms() + REPORT_EVERY_MS) as f64));
            self.state.storage().set_alarm(ScheduledTime::new(at)).await?;
        }
        Ok(())
    }
}

/// The caller's address, as Cloudflare gives it (absent on calls that did not come through
/// Cloudflare's edge, which are not paced).
pub(crate) struct Caller(Option<String>);

impl Caller {
    pub(crate) fn of(req: &Request) -> Result<Caller> {
        Ok(Caller(req.headers().get("cf-connecting-ip")?))
    }

    fn limiter(&self, env: &Env) -> Result<Option<Stub>> {
        self.0.as_deref().map(|ip| env.durable_object("LIMITERS")?.get_by_name(ip)).transpose()
    }

    /// Counts a refusal of the caller's request, after the answer, through its limiter.
    pub(crate) fn refused(&self, env: &Env, ctx: &Context, reason: &'static str) -> Result<()> {
        let Some(stub) = self.limiter(env)? else { return Ok(()) };
        let count = Request::new(&format!("https://limiter/refused/{reason}"), Method::Post)?;
        ctx.wait_until(async move {
            // A lost count is only a lower figure on /metrics.
            let _ = stub.fetch_with_request(count).await;
        });
        Ok(())
    }
}

/// One new connection (or guest token, or anonymous read) for the caller's address: `None`, or
/// the refusal to answer with.
pub(crate) async fn admit(env: &Env, req: &Request) -> Result<Option<Response>> {
    let Some(stub) = Caller::of(req)?.limiter(env)? else { return Ok(None) };
    let taken = stub.fetch_with_request(Request::new("https://limiter/take", Method::Post)?).await?;
    Ok((taken.status_code() == 429).then_some(taken))
}

fn metrics_stub(env: &Env) -> Result<Stub> {
    env.durable_object("METRICS")?.get_by_name("metrics")
}

/// `GET /metrics`.
pub(crate) async fn metrics(env: &Env) -> Result<Response> {
    metrics_stub(env)?.fetch_with_str("https://metrics/").await
}

#[durable_object]
pub struct Metrics {
    state: State,
}

#[derive(Deserialize)]
struct Row {
    reason: String,
    count: i64,
}

impl DurableObject for Metrics {
    fn new(state: State, _env: Env) -> Self {
        let sql = state.storage().sql();
        let _ = sql.exec(
            "CREATE TABLE IF NOT EXISTS refused (reason TEXT PRIMARY KEY, count INTEGER NOT NULL)",
            None,
        );
        Metrics { state }
    }

    /// `POST /add` `{reason: count}` from a limiter; `GET /` the counters in the Prometheus text
    /// format (OpenMetrics), named as on the edge node.
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let sql = self.state.storage().sql();
        if req.method() == Method::Post {
            let counts: BTreeMap<String, i64> = req.json().await?;
            for (reason, n) in counts {
                sql.exec(
                    "INSERT INTO refused (reason, count) VALUES (?, ?) \
                     ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count",
                    vec![reason.into(), n.into()],
                )?;
            }
            return Ok(Response::empty()?.with_status(204));
        }
        let rows: Vec<Row> =
            sql.exec("SELECT reason, count FROM refused ORDER BY reason", None)?.to_array()?;
        let mut text = String::from(
            "# HELP liveshop_refused Requests and connections refused, by reason.\n# TYPE liveshop_refused counter\n",
        );
        for Row { reason, count } in rows {
            text.push_str(&format!("liveshop_refused_total{{reason=\"{reason}\"}} {count}\n"));
        }
        text.push_str("# EOF\n");
        crate::reply(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", text.into_bytes())
    }
}
