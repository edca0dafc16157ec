//! # liveshop-analytics: a show's report
//!
//! The room measures its show's audience and engagement ([`liveshop_room::analytics`]) and the
//! shop its sales per show ([`liveshop_shop::analytics`]), both on 10-second slots of wall-clock
//! time. This crate joins the two on that clock into the [`Report`] every host serves at
//! `GET /v1/shows/{show}/analytics`, and writes its CSV downloads. It does no IO: hosts fetch the
//! two halves from their actors and hand them in. The schema is documented in
//! `docs/analytics.md` and versioned by [`VERSION`].
//!
//! The show's clock starts at the first slot anything was measured in (a viewer, a pin, a sale)
//! and counts whole minutes from there. Money stays in integer minor units per currency.

use std::collections::{BTreeMap, BTreeSet};

use liveshop_room::analytics::{Measures, MomentKind, SLOT_MS, Slot, WATCH_BOUNDS_SECS};
use liveshop_room::{Millis, ProductId as RoomProductId, Role};
use liveshop_shop::analytics::{Amounts, SalesTotals, ShowSales, amounts};
use liveshop_shop::money::{Currency, Money};
use serde::{Deserialize, Serialize};

/// The report's schema version.
pub const VERSION: u32 = 1;
/// Earlier shows compared in a report (`?previous=N`), at most and by default.
pub const MAX_PREVIOUS: usize = 10;
pub const DEFAULT_PREVIOUS: usize = 5;

/// Reads a report request's query (`previous=N`), or says what is wrong with it (a 400).
pub fn parse_query(query: &str) -> Result<usize, String> {
    let mut previous = DEFAULT_PREVIOUS;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("previous", n)) => {
                previous =
                    n.parse().ok().filter(|n| *n <= MAX_PREVIOUS).ok_or_else(|| {
                        format!("previous is a number of earlier shows, 0 to {MAX_PREVIOUS}")
                    })?;
            }
            _ => {
                return Err(format!(
                    "unknown parameter {:?}: only previous",
                    pair.chars().take(32).collect::<String>()
                ));
            }
        }
    }
    Ok(previous)
}

/// Who reads a show's report: its host, and the merchant of its shop (hosts verify the token
/// for the show, or failing that for its shop).
pub fn may_read(role: Role) -> bool {
    matches!(role, Role::Host | Role::Merchant)
}

/// The CSV downloads (`/v1/shows/{show}/analytics/{file}`) by file name.
pub fn csv_file(name: &str) -> Option<fn(&Report) -> String> {
    match name {
        "minutes.csv" => Some(minutes_csv),
        "products.csv" => Some(products_csv),
        _ => None,
    }
}

/// The shows a report compares with: up to `n` of `shows` (`(created_at, id)`, all sold from
/// the same shop) made before `show`, newest first.
pub fn earlier<'a>(
    show: (u64, &str),
    shows: impl IntoIterator<Item = (u64, &'a str)>,
    n: usize,
) -> Vec<&'a str> {
    let mut before: Vec<(u64, &str)> = shows.into_iter().filter(|s| *s < show).collect();
    before.sort_unstable_by(|a, b| b.cmp(a));
    before.into_iter().take(n).map(|(_, id)| id).collect()
}

/// What a host asks of the show's shop when its stream ended (as the merchant, `POST`): the
/// path below the shop and the body, with the report's addresses under `base`.
pub fn report_ready(base: &str, show: &str) -> (String, serde_json::Value) {
    let body = serde_json::json!({
        "report_url": format!("{base}/shows/{show}/report"),
        "analytics_url": format!("{base}/v1/shows/{show}/analytics"),
    });
    (format!("/analytics/{show}/report-ready"), body)
}

// The two halves are joined slot by slot: they must agree on what a slot is.
const _: () = assert!(SLOT_MS == liveshop_shop::analytics::SLOT_MS);
const SLOTS_PER_MINUTE: u64 = 60_000 / SLOT_MS;

/// Everything the report says about a show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub v: u32,
    pub show: String,
    pub generated_at: Millis,
    /// The start of the show's clock (its first slot); `None` when nothing was measured.
    pub started_at: Option<Millis>,
    /// When the stream last ended, unless it started again after.
    pub ended_at: Option<Millis>,
    /// The shop's currency (GMV may also hold amounts in a currency it had before).
    pub currency: Currency,
    pub totals: Totals,
    pub funnel: Vec<Step>,
    /// Every 10 s from the start: viewers watching, visits begun and ended.
    pub slots: Vec<SlotRow>,
    pub minutes: Vec<MinuteRow>,
    /// Ended visits by length.
    pub watch_time: Vec<WatchBucket>,
    pub products: Vec<ProductRow>,
    pub moments: Vec<MomentRow>,
    /// This show in a line, as `previous` has the others.
    pub summary: Summary,
    /// The merchant's earlier shows on the same shop, newest first (hosts fill this in).
    pub previous: Vec<Summary>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub unique_viewers: u64,
    pub visits: u64,
    pub peak_viewers: u32,
    pub watch_ms: u64,
    /// Watch time per visit.
    pub avg_watch_ms: u64,
    pub chat: u64,
    pub reactions: u64,
    pub votes: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub add_to_carts: u64,
    /// Checkouts (orders created), paid orders, units, buyers, GMV and refunds.
    #[serde(flatten)]
    pub sales: SalesTotals,
    /// GMV per paid order, per currency (halves rounded away from zero); only while all paid
    /// orders are in one currency.
    pub aov: Vec<Money>,
    /// Buyers per unique viewer.
    pub conversion: f64,
}

/// One step of the funnel: its count and its share of the step before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub step: String,
    pub count: u64,
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRow {
    pub t: Millis,
    pub viewers: u32,
    pub peak: u32,
    pub joins: u32,
    pub leaves: u32,
}

/// A minute of the show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MinuteRow {
    pub minute: u64,
    pub t: Millis,
    /// Viewers watching at the minute's end.
    pub watching: u32,
    pub peak: u32,
    /// Visits begun up to the minute's end.
    pub joined: u64,
    /// `watching / joined`: the share of the audience so far still watching.
    pub retention: f64,
    /// Visits that ended in the minute (where viewers left).
    pub ended: u64,
    pub chat: u64,
    pub reactions: u64,
    pub votes: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub add_to_carts: u64,
    pub checkouts: u64,
    pub orders_paid: u64,
    pub units: u64,
    /// What the minute's paid orders came to.
    pub gmv: Vec<Money>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchBucket {
    /// The bucket's upper bound; `None` for the last (longer visits).
    pub up_to_secs: Option<u64>,
    pub visits: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProductRow {
    pub product_id: String,
    pub title: String,
    pub impressions: u64,
    pub clicks: u64,
    /// Clicks per impression.
    pub ctr: Option<f64>,
    pub add_to_carts: u64,
    pub checkouts: u64,
    pub orders_paid: u64,
    pub units: u64,
    pub revenue: Vec<Money>,
    /// The same per minute of the show, for the minutes anything happened: a pin or a deal
    /// read against what it caused.
    pub minutes: Vec<ProductMinute>,
}

/// A product's counts in one minute of the show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductMinute {
    pub minute: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub add_to_carts: u64,
    pub checkouts: u64,
    pub orders_paid: u64,
    pub units: u64,
    pub revenue: Vec<Money>,
}

impl ProductMinute {
    fn add(&mut self, other: &ProductMinute) {
        self.impressions += other.impressions;
        self.clicks += other.clicks;
        self.add_to_carts += other.add_to_carts;
        self.checkouts += other.checkouts;
        self.orders_paid += other.orders_paid;
        self.units += other.units;
        let mut revenue: Amounts = self.revenue.iter().map(|m| (m.currency, m.minor)).collect();
        add_amounts(&mut revenue, &other.revenue.iter().map(|m| (m.currency, m.minor)).collect());
        self.revenue = amounts(&revenue);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MomentRow {
    pub at: Millis,
    pub minute: u64,
    pub kind: MomentKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

/// A show in a line, to compare shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub show: String,
    pub started_at: Option<Millis>,
    pub duration_ms: u64,
    pub unique_viewers: u64,
    pub peak_viewers: u32,
    pub orders_paid: u64,
    pub gmv: Vec<Money>,
    pub conversion: f64,
}

/// What the room answers (`GET /analytics`).
#[derive(Debug, Clone, Deserialize)]
pub struct RoomAnswer {
    pub now: Millis,
    pub viewers: u32,
    pub measures: Measures,
}

/// What the shop answers (`GET /analytics/{show}`).
#[derive(Debug, Clone, Deserialize)]
pub struct ShopAnswer {
    pub currency: Currency,
    pub sales: ShowSales,
    /// Buyers with a paid order (the shop does not name them).
    #[serde(default)]
    pub buyers: u64,
    /// The catalog's titles of the products sold.
    #[serde(default)]
    pub titles: BTreeMap<String, String>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn add_amounts(to: &mut Amounts, from: &Amounts) {
    for (&c, &m) in from {
        *to.entry(c).or_default() += m;
    }
}

/// `total / n` in minor units, halves away from zero.
fn per(total: i64, n: u64) -> i64 {
    let n = i64::try_from(n).unwrap_or(i64::MAX).max(1);
    let q = (2 * total.abs() + n) / (2 * n);
    if total < 0 { -q } else { q }
}

impl Report {
    /// Joins the room's and the shop's halves. The series run from the first measured slot to
    /// the last, and on to `now` while anyone is watching.
    pub fn build(show: &str, room: &RoomAnswer, shop: &ShopAnswer) -> Report {
        let (m, sales, now) = (&room.measures, &shop.sales, room.now);
        let firsts = [
            m.slots.keys().next().map(|s| s.0),
            sales.slots.keys().next().copied(),
            m.moments.first().map(|x| Slot::of(x.at).0),
            sales.deals.first().map(|d| Slot::of(d.at).0),
        ];
        let Some(origin) = firsts.into_iter().flatten().min() else {
            return Report::empty(show, now, shop.currency);
        };
        let mut last = [m.slots.keys().next_back().map(|s| s.0), sales.slots.keys().next_back().copied()]
            .into_iter()
            .flatten()
            .chain(m.moments.iter().map(|x| Slot::of(x.at).0))
            .chain(sales.deals.iter().map(|d| Slot::of(d.at).0))
            .max()
            .unwrap_or(origin);
        if room.viewers > 0 {
            last = last.max(Slot::of(now).0);
        }
        let last = last.min(origin + liveshop_room::analytics::MAX_SLOTS as u64);
        let minute_of = |at: Millis| Slot::of(at).0.saturating_sub(origin) / SLOTS_PER_MINUTE;

        let mut slots = Vec::new();
        let mut minutes: Vec<MinuteRow> = Vec::new();
        let (mut viewers, mut joined) = (0u32, 0u64);
        for n in origin..=last {
            let r = m.slots.get(&Slot(n)).cloned().unwrap_or_default();
            viewers = r.viewers.unwrap_or(viewers);
            joined += u64::from(r.joins);
            let peak = r.peak.max(viewers);
            slots.push(SlotRow { t: Slot(n).start(), viewers, peak, joins: r.joins, leaves: r.leaves });
            let minute = (n - origin) / SLOTS_PER_MINUTE;
            if minutes.len() as u64 <= minute {
                minutes.push(MinuteRow { minute, t: Slot(n).start(), ..MinuteRow::default() });
            }
            let row = minutes.last_mut().expect("pushed above");
            row.watching = viewers;
            row.peak = row.peak.max(peak);
            row.joined = joined;
            row.retention = ratio(u64::from(viewers), joined);
            row.ended += u64::from(r.leaves);
            row.chat += u64::from(r.chat);
            row.reactions += u64::from(r.reactions);
            row.votes += u64::from(r.votes);
            for e in r.products.values() {
                row.impressions += e.impressions;
                row.clicks += e.clicks;
            }
            if let Some(s) = sales.slots.get(&n) {
                row.orders_paid += s.orders_paid;
                row.checkouts += s.checkouts;
                let mut gmv: Amounts = row.gmv.iter().map(|m| (m.currency, m.minor)).collect();
                add_amounts(&mut gmv, &s.gmv);
                row.gmv = amounts(&gmv);
                for p in s.products.values() {
                    row.add_to_carts += p.add_to_carts;
                    row.units += p.units;
                }
            }
        }

        let products = product_rows(m, sales, &shop.titles, origin);
        let sum = |f: fn(&MinuteRow) -> u64| minutes.iter().map(f).sum::<u64>();
        let sales_totals = SalesTotals { buyers: shop.buyers, ..sales.totals() };
        let visits = joined;
        let unique_viewers = m.visitors.count();
        let aov = match sales_totals.gmv.as_slice() {
            [one] => vec![Money { minor: per(one.minor, sales_totals.orders_paid), currency: one.currency }],
            _ => Vec::new(),
        };
        let totals = Totals {
            unique_viewers,
            visits,
            peak_viewers: slots.iter().map(|s| s.peak).max().unwrap_or(0),
            watch_ms: m.watch_ms,
            avg_watch_ms: m.watch_ms / visits.max(1),
            chat: sum(|r| r.chat),
            reactions: sum(|r| r.reactions),
            votes: sum(|r| r.votes),
            impressions: sum(|r| r.impressions),
            clicks: sum(|r| r.clicks),
            add_to_carts: sum(|r| r.add_to_carts),
            conversion: ratio(sales_totals.buyers, unique_viewers),
            aov,
            sales: sales_totals,
        };
        let funnel = funnel(&totals);

        let mut moments: Vec<MomentRow> = m
            .moments
            .iter()
            .map(|x| MomentRow {
                at: x.at,
                minute: minute_of(x.at),
                kind: x.kind,
                product_id: x.product_id.as_ref().map(|p| p.0.clone()),
                label: x.label.clone(),
            })
            .chain(sales.deals.iter().map(|d| MomentRow {
                at: d.at,
                minute: minute_of(d.at),
                kind: if d.started { MomentKind::DealStarted } else { MomentKind::DealEnded },
                product_id: Some(d.product_id.as_str().to_string()),
                label: String::new(),
            }))
            .collect();
        moments.sort_by_key(|x| x.at);
        let ended_at = moments
            .iter()
            .rev()
            .find(|x| {
                matches!(
                    x.kind,
                    MomentKind::StreamEnded | MomentKind::StreamStarted | MomentKind::StreamReconnected
                )
            })
            .filter(|x| x.kind == MomentKind::StreamEnded)
            .map(|x| x.at);
        // A deal is about a product: its moments take the product's title.
        for x in moments.iter_mut().filter(|x| x.label.is_empty()) {
            if let Some(p) = products.iter().find(|p| Some(&p.product_id) == x.product_id.as_ref()) {
                x.label.clone_from(&p.title);
            }
        }
        Report {
            v: VERSION,
            show: show.to_string(),
            generated_at: now,
            started_at: Some(Slot(origin).start()),
            ended_at,
            currency: shop.currency,
            totals,
            funnel,
            slots,
            minutes,
            watch_time: watch_time(&m.watch),
            products,
            moments,
            summary: Summary::default(),
            previous: Vec::new(),
        }
        .summarized()
    }

    fn empty(show: &str, now: Millis, currency: Currency) -> Report {
        let totals = Totals::default();
        Report {
            v: VERSION,
            show: show.to_string(),
            generated_at: now,
            started_at: None,
            ended_at: None,
            currency,
            funnel: funnel(&totals),
            totals,
            slots: Vec::new(),
            minutes: Vec::new(),
            watch_time: watch_time(&[]),
            products: Vec::new(),
            moments: Vec::new(),
            summary: Summary::default(),
            previous: Vec::new(),
        }
        .summarized()
    }

    /// The report with its `summary` filled in.
    fn summarized(mut self) -> Report {
        self.summary = self.summarize();
        self
    }

    /// This show in a line, for comparing it with others.
    fn summarize(&self) -> Summary {
        let duration_ms = match (self.started_at, self.slots.last()) {
            (Some(start), Some(last)) => self.ended_at.unwrap_or(last.t + SLOT_MS).saturating_sub(start),
            _ => 0,
        };
        Summary {
            show: self.show.clone(),
            started_at: self.started_at,
            duration_ms,
            unique_viewers: self.totals.unique_viewers,
            peak_viewers: self.totals.peak_viewers,
            orders_paid: self.totals.sales.orders_paid,
            gmv: self.totals.sales.gmv.clone(),
            conversion: self.totals.conversion,
        }
    }
}

/// Impression → click → add to cart → checkout → paid, each step's rate of the one before.
fn funnel(t: &Totals) -> Vec<Step> {
    let steps = [
        ("impressions", t.impressions),
        ("clicks", t.clicks),
        ("add_to_carts", t.add_to_carts),
        ("checkouts", t.sales.checkouts),
        ("orders_paid", t.sales.orders_paid),
    ];
    steps
        .iter()
        .enumerate()
        .map(|(i, &(step, count))| Step {
            step: step.into(),
            count,
            rate: i.checked_sub(1).map(|p| steps[p].1).filter(|&b| b > 0).map(|b| ratio(count, b)),
        })
        .collect()
}

fn watch_time(counts: &[u64]) -> Vec<WatchBucket> {
    (0..=WATCH_BOUNDS_SECS.len())
        .map(|i| WatchBucket {
            up_to_secs: WATCH_BOUNDS_SECS.get(i).copied(),
            visits: counts.get(i).copied().unwrap_or(0),
        })
        .collect()
}

/// The per-product table: every product seen in the room or sold in the shop, by revenue then
/// clicks; titled as last pinned, else as in the catalog, else by id.
fn product_rows(
    m: &Measures,
    sales: &ShowSales,
    catalog: &BTreeMap<String, String>,
    origin: u64,
) -> Vec<ProductRow> {
    type Minutes = BTreeMap<String, BTreeMap<u64, ProductMinute>>;
    fn minute_of<'a>(rows: &'a mut Minutes, id: &str, slot: u64, origin: u64) -> &'a mut ProductMinute {
        let minute = slot.saturating_sub(origin) / SLOTS_PER_MINUTE;
        let minutes = rows.entry(id.to_string()).or_default();
        minutes.entry(minute).or_insert_with(|| ProductMinute { minute, ..ProductMinute::default() })
    }
    let mut rows = Minutes::new();
    for (slot, s) in &m.slots {
        for (RoomProductId(id), e) in &s.products {
            let c = minute_of(&mut rows, id, slot.0, origin);
            c.impressions += e.impressions;
            c.clicks += e.clicks;
        }
    }
    for (&slot, s) in &sales.slots {
        for (id, p) in &s.products {
            let c = minute_of(&mut rows, id.as_str(), slot, origin);
            c.add(&ProductMinute {
                add_to_carts: p.add_to_carts,
                checkouts: p.checkouts,
                orders_paid: p.orders_paid,
                units: p.units,
                revenue: amounts(&p.revenue),
                ..ProductMinute::default()
            });
        }
    }
    let titles: BTreeMap<&str, &str> = m
        .moments
        .iter()
        .filter(|x| x.kind == MomentKind::ProductPinned)
        .filter_map(|x| Some((x.product_id.as_ref()?.0.as_str(), x.label.as_str())))
        .collect();
    let mut rows: Vec<ProductRow> = rows
        .into_iter()
        .map(|(id, minutes)| {
            let mut total = ProductMinute::default();
            minutes.values().for_each(|c| total.add(c));
            let title = titles.get(id.as_str()).copied().or_else(|| catalog.get(&id).map(String::as_str));
            ProductRow {
                title: title.unwrap_or(&id).to_string(),
                ctr: (total.impressions > 0).then(|| ratio(total.clicks, total.impressions)),
                impressions: total.impressions,
                clicks: total.clicks,
                add_to_carts: total.add_to_carts,
                checkouts: total.checkouts,
                orders_paid: total.orders_paid,
                units: total.units,
                revenue: total.revenue,
                minutes: minutes.into_values().collect(),
                product_id: id,
            }
        })
        .collect();
    let major = |r: &ProductRow| r.revenue.iter().map(|m| m.minor).sum::<i64>();
    rows.sort_by(|a, b| {
        major(b).cmp(&major(a)).then(b.clicks.cmp(&a.clicks)).then(a.product_id.cmp(&b.product_id))
    });
    rows
}

/// The currencies a report's amounts are in, in order: one revenue column each in the CSVs.
fn currencies(report: &Report) -> Vec<Currency> {
    let mut all: BTreeSet<Currency> = report.totals.sales.gmv.iter().map(|m| m.currency).collect();
    all.extend(report.products.iter().flat_map(|p| p.revenue.iter().map(|m| m.currency)));
    if all.is_empty() {
        all.insert(report.currency);
    }
    all.into_iter().collect()
}

/// An amount column's cell: major units, exactly (`19.99`), `0` when none.
fn cell(amounts: &[Money], currency: Currency) -> String {
    let m = amounts.iter().find(|m| m.currency == currency).copied();
    m.unwrap_or(Money { minor: 0, currency }).major().to_string()
}

/// A CSV column: its name and how to write a row's cell.
type Column<R> = (&'static str, fn(&R) -> String);

/// A CSV of `rows`: a column per `(name, value)`, then one per currency named `{prefix}_{CUR}`
/// with the row's `amounts` in it.
fn table<R>(
    rows: &[R],
    columns: &[Column<R>],
    (prefix, amounts): (&str, fn(&R) -> &[Money]),
    currencies: &[Currency],
) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let names = columns.iter().map(|(name, _)| name.to_string());
    let header: Vec<String> = names.chain(currencies.iter().map(|c| format!("{prefix}_{c}"))).collect();
    w.write_record(&header).expect("writing to memory");
    for r in rows {
        let cells = columns.iter().map(|(_, value)| value(r));
        let record: Vec<String> = cells.chain(currencies.iter().map(|&c| cell(amounts(r), c))).collect();
        w.write_record(&record).expect("writing to memory");
    }
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("CSV of UTF-8 fields")
}

/// The per-minute series as CSV: one row per minute of the show, GMV in a column per currency.
pub fn minutes_csv(report: &Report) -> String {
    let columns: [Column<MinuteRow>; 16] = [
        ("minute", |r| r.minute.to_string()),
        ("start_ms", |r| r.t.to_string()),
        ("watching", |r| r.watching.to_string()),
        ("peak", |r| r.peak.to_string()),
        ("joined", |r| r.joined.to_string()),
        ("retention", |r| format!("{:.4}", r.retention)),
        ("ended", |r| r.ended.to_string()),
        ("chat", |r| r.chat.to_string()),
        ("reactions", |r| r.reactions.to_string()),
        ("votes", |r| r.votes.to_string()),
        ("impressions", |r| r.impressions.to_string()),
        ("clicks", |r| r.clicks.to_string()),
        ("add_to_carts", |r| r.add_to_carts.to_string()),
        ("checkouts", |r| r.checkouts.to_string()),
        ("orders_paid", |r| r.orders_paid.to_string()),
        ("units", |r| r.units.to_string()),
    ];
    table(&report.minutes, &columns, ("gmv", |r| &r.gmv), &currencies(report))
}

/// The per-product table as CSV, revenue in a column per currency.
pub fn products_csv(report: &Report) -> String {
    let columns: [Column<ProductRow>; 9] = [
        ("product_id", |p| p.product_id.clone()),
        ("title", |p| p.title.clone()),
        ("impressions", |p| p.impressions.to_string()),
        ("clicks", |p| p.clicks.to_string()),
        ("ctr", |p| p.ctr.map_or_else(String::new, |r| format!("{r:.4}"))),
        ("add_to_carts", |p| p.add_to_carts.to_string()),
        ("checkouts", |p| p.checkouts.to_string()),
        ("orders_paid", |p| p.orders_paid.to_string()),
        ("units", |p| p.units.to_string()),
    ];
    table(&report.products, &columns, ("revenue", |p| &p.revenue), &currencies(report))
}

#[cfg(test)]
mod tests {
    use liveshop_room::analytics::{Distinct, Moment, SlotMeasures};
    use liveshop_shop::analytics::{Sales, SlotSales};
    use liveshop_shop::ids::ProductId as ShopProductId;

    use super::*;

    const T0: Millis = 1_764_000_000_000; // on a minute boundary

    fn room(slots: &[(u64, SlotMeasures)], moments: Vec<Moment>) -> RoomAnswer {
        let measures = Measures {
            slots: slots.iter().map(|(n, s)| (Slot(T0 / SLOT_MS + n), s.clone())).collect(),
            moments,
            ..Measures::default()
        };
        RoomAnswer { now: T0 + 3_600_000, viewers: 0, measures }
    }

    fn shop(slots: &[(u64, SlotSales)]) -> ShopAnswer {
        let sales = ShowSales {
            slots: slots.iter().map(|(n, s)| (T0 / SLOT_MS + n, s.clone())).collect(),
            ..ShowSales::default()
        };
        ShopAnswer { currency: Currency::Eur, sales, buyers: 0, titles: BTreeMap::new() }
    }

    fn eur(minor: i64) -> Money {
        Money { minor, currency: Currency::Eur }
    }

    #[test]
    fn a_show_with_nothing_measured_has_an_empty_report() {
        let r = Report::build("quiet", &room(&[], vec![]), &shop(&[]));
        assert_eq!((r.started_at, r.slots.len(), r.minutes.len()), (None, 0, 0));
        assert_eq!(r.funnel.iter().map(|s| s.count).sum::<u64>(), 0);
        assert_eq!(r.watch_time.len(), WATCH_BOUNDS_SECS.len() + 1);
        assert_eq!(minutes_csv(&r).lines().count(), 1, "a header and no rows");
    }

    #[test]
    fn viewers_carry_forward_between_counts_and_minutes_close_on_the_last() {
        let count = |viewers, joins, leaves| SlotMeasures {
            viewers: Some(viewers),
            peak: viewers,
            joins,
            leaves,
            ..Default::default()
        };
        // 4 join in slot 0; nothing changes until slot 7 (minute 1), when one leaves.
        let r = Report::build("s", &room(&[(0, count(4, 4, 0)), (7, count(3, 0, 1))], vec![]), &shop(&[]));
        assert_eq!(r.slots.len(), 8);
        assert_eq!(r.slots.iter().map(|s| s.viewers).collect::<Vec<_>>(), [4, 4, 4, 4, 4, 4, 4, 3]);
        assert_eq!(
            r.minutes.iter().map(|m| (m.watching, m.joined, m.ended)).collect::<Vec<_>>(),
            [(4, 4, 0), (3, 4, 1)]
        );
        assert_eq!(r.minutes[1].retention, 0.75);
        assert_eq!(r.started_at, Some(T0));
    }

    #[test]
    fn sales_alone_start_the_clock_and_aov_rounds_half_away_from_zero() {
        let mut s = SlotSales { orders_paid: 3, ..Default::default() };
        s.gmv.insert(Currency::Eur, 1000);
        let r = Report::build("s", &room(&[], vec![]), &shop(&[(2, s)]));
        assert_eq!(r.started_at, Some(T0 + 2 * SLOT_MS));
        assert_eq!(r.totals.aov, [eur(333)]);
        assert_eq!(per(1001, 2), 501, "500.5 rounds away from zero");
        assert_eq!(per(-1001, 2), -501);
        assert_eq!(per(5, 0), 5, "no orders: nothing to divide by");
    }

    #[test]
    fn amounts_in_two_currencies_have_no_single_aov_and_a_column_each() {
        let mut s = SlotSales { orders_paid: 2, ..Default::default() };
        s.gmv.insert(Currency::Eur, 1999);
        s.gmv.insert(Currency::Jpy, 1500);
        let r = Report::build("s", &room(&[], vec![]), &shop(&[(0, s)]));
        assert!(r.totals.aov.is_empty());
        let csv = minutes_csv(&r);
        assert!(csv.lines().next().unwrap().ends_with(",gmv_EUR,gmv_JPY"), "{csv}");
        assert!(csv.lines().nth(1).unwrap().ends_with(",19.99,1500"), "{csv}");
    }

    #[test]
    fn products_are_titled_as_pinned_else_as_in_the_catalog_and_csv_quotes_what_needs_it() {
        let engaged = SlotMeasures {
            products: [(
                RoomProductId("a".into()),
                liveshop_room::analytics::Engagement { impressions: 10, clicks: 4 },
            )]
            .into(),
            ..Default::default()
        };
        let pin = Moment {
            at: T0,
            kind: MomentKind::ProductPinned,
            product_id: Some(RoomProductId("a".into())),
            label: "Shirt, \"linen\"".into(),
        };
        let mut sold = SlotSales::default();
        let mut sales = Sales { orders_paid: 1, units: 2, ..Default::default() };
        sales.revenue.insert(Currency::Eur, 5000);
        sold.products.insert(ShopProductId::parse("b").unwrap(), sales);
        let mut s = shop(&[(0, sold)]);
        s.titles.insert("b".into(), "Bag".into());
        let r = Report::build("s", &room(&[(0, engaged)], vec![pin]), &s);
        let titles: Vec<(&str, &str)> =
            r.products.iter().map(|p| (p.product_id.as_str(), p.title.as_str())).collect();
        assert_eq!(titles, [("b", "Bag"), ("a", "Shirt, \"linen\"")], "by revenue first");
        assert_eq!(r.products[1].ctr, Some(0.4));
        assert_eq!(r.products[0].ctr, None, "never shown in the room");
        let csv = products_csv(&r);
        assert!(csv.contains("a,\"Shirt, \"\"linen\"\"\",10,4,0.4000"), "{csv}");
    }

    #[test]
    fn a_stream_that_started_again_after_ending_has_not_ended() {
        let m = |minute: u64, kind| Moment {
            at: T0 + minute * 60_000,
            kind,
            product_id: None,
            label: String::new(),
        };
        let ended = room(&[], vec![m(0, MomentKind::StreamStarted), m(5, MomentKind::StreamEnded)]);
        assert_eq!(Report::build("s", &ended, &shop(&[])).ended_at, Some(T0 + 300_000));
        let again = room(
            &[],
            vec![
                m(0, MomentKind::StreamStarted),
                m(5, MomentKind::StreamEnded),
                m(6, MomentKind::StreamReconnected),
            ],
        );
        assert_eq!(Report::build("s", &again, &shop(&[])).ended_at, None);
    }

    #[test]
    fn the_funnel_rates_each_step_by_the_one_before() {
        let t = Totals { impressions: 200, clicks: 50, add_to_carts: 10, ..Totals::default() };
        let rates: Vec<Option<f64>> = funnel(&t).iter().map(|s| s.rate).collect();
        assert_eq!(rates, [None, Some(0.25), Some(0.2), Some(0.0), None]);
    }

    #[test]
    fn queries_and_earlier_shows() {
        assert_eq!(parse_query(""), Ok(DEFAULT_PREVIOUS));
        assert_eq!(parse_query("previous=0"), Ok(0));
        for bad in ["previous=11", "previous=x", "since=1", "previous"] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
        let shows = [(5, "e"), (1, "a"), (3, "c"), (3, "b"), (9, "later")];
        assert_eq!(earlier((5, "d"), shows, 2), ["c", "b"]);
        assert_eq!(earlier((5, "e"), shows, 10), ["c", "b", "a"], "not itself");
        assert!(csv_file("minutes.csv").is_some() && csv_file("../secret").is_none());
        assert!(may_read(Role::Merchant) && may_read(Role::Host) && !may_read(Role::Moderator));
    }

    #[test]
    fn visitors_count_distinct() {
        let mut m = room(&[], vec![]);
        m.measures.visitors = Distinct::default();
        m.measures.visitors.extend(&[1, 2, 2, 3]);
        m.measures.slots.insert(Slot(T0 / SLOT_MS), SlotMeasures { joins: 4, ..Default::default() });
        let r = Report::build("s", &m, &shop(&[]));
        assert_eq!((r.totals.unique_viewers, r.totals.visits), (3, 4));
    }
}
