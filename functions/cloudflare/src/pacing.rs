//! Per-address pacing and the Worker's counters.
//!
//! - [`Limiter`]: one object per client address (`CF-Connecting-IP`, which Cloudflare sets: the
//!   client's address; an IPv6 client counts as its /64), with the edge node's token buckets
//!   (`liveshop_room::filter::TokenBucket`) for each [`Limit`]: new connections, guest tokens and
//!   anonymous reads (`CONNS_PER_IP_PER_SEC`, `CONNS_PER_IP_BURST`), guest tokens for new
//!   devices (`GUEST_DEVICES_PER_IP_BURST`, `GUEST_DEVICES_PER_IP_PER_HOUR`), and commands over
//!   HTTP (`COMMANDS_PER_IP_PER_SEC`, `COMMANDS_PER_IP_BURST`), and the public feed's reads that
//!   miss the cache and heartbeats (`FEED_READS_PER_IP_PER_SEC`, `FEED_READS_PER_IP_BURST`). The
//!   new-device bucket is stored,
//!   so an eviction does not reset it; the others live in memory (an evicted limiter starts
//!   them full again, which lets at most a burst more in).
//! - [`Metrics`]: one object holding the refusal counters `GET /metrics` shows. Limiters add
//!   their address's refusals up and report them at most once a second (an alarm), so a flood
//!   never funnels one request per refusal into the one object. The tally waits in memory: a
//!   limiter evicted within that second loses it, which makes a figure low, never wrong.

use std::cell::RefCell;
use std::collections::BTreeMap;

use liveshop_room::filter::{Pace, TokenBucket, address_key};
use serde::Deserialize;
use worker::*;

use crate::{error, now_ms, setting};

/// How long a limiter gathers refusals before it reports them.
const REPORT_EVERY_MS: u64 = 1000;

/// What a limiter's bucket counts (as the edge node's `pacing::Limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Limit {
    /// New connections, room reads, guest tokens and anonymous shop reads.
    Connections,
    /// Guest tokens for new devices (`POST /guest` without a valid device cookie).
    GuestDevices,
    /// `POST /v1/rooms/{room}/commands`.
    Commands,
    /// The public feed's reads that reach the room (not those the cache answers) and
    /// heartbeats: cheap, so allowed far more often than connections.
    Reads,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::GuestDevices => "guests",
            Limit::Commands => "commands",
            Limit::Reads => "reads",
        }
    }

    fn parse(name: &str) -> Option<Limit> {
        [Limit::Connections, Limit::GuestDevices, Limit::Commands, Limit::Reads]
            .into_iter()
            .find(|l| l.name() == name)
    }

    /// The pace from the Worker's vars, with the edge node's defaults.
    fn pace(self, env: &Env) -> Pace {
        let per_sec = |burst: &str, b, rate: &str, r| Pace {
            burst: setting(env, burst, b),
            refill_every_ms: 1000 / setting(env, rate, r).max(1),
        };
        match self {
            Limit::Connections => per_sec("CONNS_PER_IP_BURST", 20, "CONNS_PER_IP_PER_SEC", 5),
            Limit::GuestDevices => Pace {
                burst: setting(env, "GUEST_DEVICES_PER_IP_BURST", 10),
                refill_every_ms: 3_600_000 / setting(env, "GUEST_DEVICES_PER_IP_PER_HOUR", 20).max(1),
            },
            Limit::Commands => per_sec("COMMANDS_PER_IP_BURST", 120, "COMMANDS_PER_IP_PER_SEC", 30),
            Limit::Reads => per_sec("FEED_READS_PER_IP_BURST", 60, "FEED_READS_PER_IP_PER_SEC", 20),
        }
    }

    /// The refusal's reason on `/metrics` and what its message calls the requests.
    fn refusal(self) -> (&'static str, &'static str) {
        match self {
            Limit::Connections => ("connection_rate", "connections"),
            Limit::GuestDevices => ("guest_rate", "new guests"),
            Limit::Commands => ("command_rate", "commands"),
            Limit::Reads => ("feed_rate", "feed reads"),
        }
    }

    /// Kept in storage: an allowance that takes an hour to come back must survive an eviction
    /// (the others refill in seconds; losing them only ever lets a few more in).
    fn durable(self) -> bool {
        self == Limit::GuestDevices
    }
}

#[derive(Deserialize)]
struct BucketRow {
    bucket: String,
}

#[durable_object]
pub struct Limiter {
    state: State,
    env: Env,
    buckets: RefCell<BTreeMap<Limit, TokenBucket>>,
    /// Refusals by reason not reported to [`Metrics`] yet.
    unreported: RefCell<BTreeMap<String, u64>>,
}

impl DurableObject for Limiter {
    fn new(state: State, env: Env) -> Self {
        let _ = state
            .storage()
            .sql()
            .exec("CREATE TABLE IF NOT EXISTS bucket (name TEXT PRIMARY KEY, bucket TEXT NOT NULL)", None);
        Limiter { state, env, buckets: RefCell::default(), unreported: RefCell::default() }
    }

    /// `POST /take/{limit}`: one from the address's allowance, or the 429 to give;
    /// `POST /refused/{reason}`: count one.
    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        if let Some(reason) = url.path().strip_prefix("/refused/") {
            self.count(reason).await?;
            return Ok(Response::empty()?.with_status(204));
        }
        let Some(limit) = url.path().strip_prefix("/take/").and_then(Limit::parse) else {
            return error(404, "not_found", "no such limit");
        };
        let pace = limit.pace(&self.env);
        let now = now_ms();
        let mut bucket = match self.buckets.borrow().get(&limit) {
            Some(b) => *b,
            None => self.stored(limit)?.unwrap_or_else(|| TokenBucket::full(pace, now)),
        };
        let taken = bucket.take(pace, now);
        self.buckets.borrow_mut().insert(limit, bucket);
        if limit.durable() {
            self.state.storage().sql().exec(
                "INSERT OR REPLACE INTO bucket (name, bucket) VALUES (?, ?)",
                vec![limit.name().into(), serde_json::to_string(&bucket)?.into()],
            )?;
        }
        match taken {
            Ok(()) => Ok(Response::empty()?.with_status(204)),
            Err(ms) => {
                let (reason, what) = limit.refusal();
                self.count(reason).await?;
                error(429, "rate_limited", format!("too many {what} from your address; retry in {ms} ms"))
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
    /// A durable limit's bucket as stored.
    fn stored(&self, limit: Limit) -> Result<Option<TokenBucket>> {
        if !limit.durable() {
            return Ok(None);
        }
        let rows: Vec<BucketRow> = self
            .state
            .storage()
            .sql()
            .exec("SELECT bucket FROM bucket WHERE name = ?", vec![limit.name().into()])?
            .to_array()?;
        Ok(rows.first().and_then(|r| serde_json::from_str(&r.bucket).ok()))
    }

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

    /// The address as per-address limits count it (`address_key`), when Cloudflare named one.
    pub(crate) fn addr(&self) -> Option<std::net::IpAddr> {
        self.0.as_deref()?.parse().ok().map(address_key)
    }

    /// The caller's limiter: one per IPv4 address or IPv6 /64 (`address_key`), as on the edge.
    fn limiter(&self, env: &Env) -> Result<Option<Stub>> {
        let key = |ip: &str| ip.parse().map_or_else(|_| ip.to_string(), |ip| address_key(ip).to_string());
        self.0.as_deref().map(|ip| env.durable_object("LIMITERS")?.get_by_name(&key(ip))).transpose()
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
    take(env, req, Limit::Connections).await
}

/// One from the caller's allowance for `limit`: `None`, or the refusal to answer with.
pub(crate) async fn take(env: &Env, req: &Request, limit: Limit) -> Result<Option<Response>> {
    let Some(stub) = Caller::of(req)?.limiter(env)? else { return Ok(None) };
    let url = format!("https://limiter/take/{}", limit.name());
    let taken = stub.fetch_with_request(Request::new(&url, Method::Post)?).await?;
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
