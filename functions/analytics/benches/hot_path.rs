//! What the show's measures cost where it matters, in one run (`cargo bench -p liveshop-analytics`):
//!
//! - chat commands per second into one room core (2,000 viewers connected, a product impression
//!   every tenth command), with measures kept vs not (`Room::keep_measures(false)`), rounds
//!   alternated, the median of each, and the ratio (goal: at least 0.9);
//! - checkouts per second through one shop core (add to cart, checkout, payment), the same way;
//! - the bytes the room stores for its measures after an hour of a 10,000-viewer show, at 10
//!   chat messages a second and at 100 (goal: bounded, the same whatever the chat).
//!
//! The cores alone, without a host: what the measures add is all in them, and a host's commit
//! and fan-out would only dilute the ratio.

use std::time::{Duration, Instant};

use liveshop_identity::{Identity, Role};
use liveshop_room::{ConnId, Epoch, Input, Output, Room};
use liveshop_shop::{Input as ShopInput, Output as ShopOutput, Shop};

const START: u64 = 1_764_000_000_000;
const VIEWERS: u64 = 2_000;
const COMMANDS: u64 = 40_000;
const BUYERS: u64 = 2_000;
const ROUNDS: usize = 9;

/// A room core with its host's duties reduced to the alarm: outputs are dropped once produced.
struct RoomHost {
    room: Room,
    now: u64,
    alarm: Option<u64>,
}

impl RoomHost {
    fn new(measures: bool) -> RoomHost {
        let mut room = Room::new(Epoch(1));
        room.keep_measures(measures);
        RoomHost { room, now: START, alarm: None }
    }

    fn input(&mut self, input: Input) {
        if self.alarm.is_some_and(|at| at <= self.now) {
            self.alarm = None;
            self.handle(Input::Alarm);
        }
        self.handle(input);
    }

    fn handle(&mut self, input: Input) {
        self.room.handle(self.now, input);
        while let Some(out) = self.room.poll_output() {
            if let Output::SetAlarm(at) = out {
                self.alarm = at;
            }
        }
    }

    fn connect(&mut self, i: u64) {
        let who = Identity::new(format!("viewer-{i}"), Role::Viewer);
        self.input(Input::Connect { conn: ConnId(i), who, connected_at: self.now, resume: None });
    }
}

/// Chat commands per second into a room with `VIEWERS` connected.
fn chat(measures: bool) -> f64 {
    let mut h = RoomHost::new(measures);
    for i in 0..VIEWERS {
        h.connect(i);
    }
    let pin = r#"{"type":"product.pin","product":{"id":"shirt","title":"Shirt"}}"#;
    let host = Identity::new("host", Role::Host);
    h.input(Input::Connect { conn: ConnId(u64::MAX), who: host, connected_at: h.now, resume: None });
    h.input(Input::Message { conn: ConnId(u64::MAX), text: pin.into() });
    let started = Instant::now();
    for n in 0..COMMANDS {
        // One command a millisecond: each viewer speaks every two seconds, within every limit.
        h.now += 1;
        let conn = ConnId(n % VIEWERS);
        let text = if n % 10 == 0 {
            r#"{"type":"product.impression","product_id":"shirt"}"#.to_string()
        } else {
            format!(r#"{{"type":"chat.send","id":"c{n}","text":"how much is the shirt in size {}"}}"#, n % 7)
        };
        h.input(Input::Message { conn, text });
    }
    COMMANDS as f64 / started.elapsed().as_secs_f64()
}

/// Checkouts per second: each buyer adds a shirt to the cart through the show's route, checks
/// out, and the test provider's payment comes back.
fn checkouts(measures: bool) -> f64 {
    let mut shop = Shop::new(Epoch(1));
    shop.keep_measures(measures);
    let merchant = Identity::new("acme", Role::Merchant);
    let mut now = START;
    let call = |shop: &mut Shop,
                now: u64,
                who: &Identity,
                method: &str,
                path: &str,
                headers: &[(&str, &str)],
                body: String| {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let input = ShopInput::Request {
            who: Some(who.clone()),
            method: method.into(),
            path: path.into(),
            headers,
            body: body.into_bytes(),
        };
        shop.handle(now, input);
        let mut payments = Vec::new();
        while let Some(out) = shop.poll_output() {
            if let ShopOutput::Payment(req) = out {
                payments.push(req);
            }
        }
        for req in payments {
            for outcome in liveshop_shop::test_provider::respond(&req) {
                shop.handle(now, ShopInput::PaymentResult { order: req.order, outcome });
                while shop.poll_output().is_some() {}
            }
        }
    };
    let product = r#"{"title":"Shirt","variants":[{"sku":"SHIRT","price":{"minor":4990,"currency":"EUR"},"stock":1000000}]}"#;
    call(&mut shop, now, &merchant, "PUT", "/products/shirt", &[], product.into());
    let show = [(liveshop_shop::analytics::SHOW_HEADER, "spring")];
    let started = Instant::now();
    for i in 0..BUYERS {
        now += 10;
        let buyer = Identity::new(format!("buyer-{i}"), Role::Viewer);
        let path = format!("/carts/buyer-{i}/items");
        call(&mut shop, now, &buyer, "POST", &path, &show, r#"{"sku":"SHIRT","quantity":1}"#.into());
        let key = format!("k{i}");
        let headers = [show[0], ("idempotency-key", key.as_str())];
        call(
            &mut shop,
            now,
            &buyer,
            "POST",
            "/checkout",
            &headers,
            r#"{"payment_method":"tok_visa"}"#.into(),
        );
    }
    let rate = BUYERS as f64 / started.elapsed().as_secs_f64();
    assert!(
        !measures || shop.state().analytics["spring"].totals().orders_paid == BUYERS,
        "every checkout was paid and counted"
    );
    rate
}

/// The stored size of the room's measures after an hour of 10,000 viewers coming and going
/// (each stays between 2 and 40 minutes) with `chat_per_sec` messages a second.
fn stored_bytes(chat_per_sec: u64) -> usize {
    const AUDIENCE: u64 = 10_000;
    const HOUR_MS: u64 = 3_600_000;
    let mut h = RoomHost::new(true);
    let stay = |i: u64| 120_000 + (i * 7_919) % 2_280_000;
    let arrive = |i: u64| i * (HOUR_MS - 2_400_000) / AUDIENCE;
    let (mut joined, mut said) = (0, 0u64);
    let mut open: std::collections::BTreeMap<u64, Vec<u64>> = std::collections::BTreeMap::new();
    let step = 100;
    for t in (0..HOUR_MS).step_by(step as usize) {
        h.now = START + t;
        while joined < AUDIENCE && arrive(joined) <= t {
            h.connect(joined);
            open.entry(t + stay(joined)).or_default().push(joined);
            joined += 1;
        }
        while let Some(entry) = open.first_entry().filter(|e| *e.key() <= t) {
            for i in entry.remove() {
                h.input(Input::Close { conn: ConnId(i) });
            }
        }
        while said * 1_000 < t * chat_per_sec {
            // Whoever is connected longest speaks; rate limits are per viewer, and many take turns.
            let speaker = open.values().flatten().nth((said % 50) as usize).copied();
            if let Some(i) = speaker {
                let text = format!(r#"{{"type":"chat.send","id":"c{said}","text":"line {said}"}}"#);
                h.input(Input::Message { conn: ConnId(i), text });
            }
            said += 1;
        }
    }
    h.input(Input::Alarm);
    serde_json::to_vec(&h.room.state().measures).expect("measures serialize").len()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs this too: once, small, as a smoke test.
    let quick = std::env::args().all(|a| a != "--bench");
    let rounds = if quick { 1 } else { ROUNDS };
    let (mut chat_on, mut chat_off, mut buy_on, mut buy_off) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        chat_off.push(chat(false));
        chat_on.push(chat(true));
        buy_off.push(checkouts(false));
        buy_on.push(checkouts(true));
    }
    let (con, coff, bon, boff) = (median(chat_on), median(chat_off), median(buy_on), median(buy_off));
    println!("commands/s into one room ({VIEWERS} viewers, {COMMANDS} commands, median of {rounds}):");
    println!("  measures kept {con:>10.0}   not kept {coff:>10.0}   ratio {:.3} (goal >= 0.9)", con / coff);
    println!("checkouts/s through one shop ({BUYERS} buyers, median of {rounds}):");
    println!("  measures kept {bon:>10.0}   not kept {boff:>10.0}   ratio {:.3} (goal >= 0.9)", bon / boff);
    if quick {
        return;
    }
    let started = Instant::now();
    let (slow, busy) = (stored_bytes(10), stored_bytes(100));
    println!(
        "stored measures after an hour of 10,000 viewers ({:?} to simulate):",
        started.elapsed().max(Duration::ZERO)
    );
    println!(
        "  at 10 chat/s {slow} bytes   at 100 chat/s {busy} bytes   ratio {:.3}",
        busy as f64 / slow as f64
    );
}
