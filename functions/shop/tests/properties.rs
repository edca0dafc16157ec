//! Property tests of the shop's invariants over random histories: buyers racing for stock,
//! retries, late and duplicated provider callbacks, webhook failures, alarms and revivals.

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use harness::{Host, eur, merchant, viewer};
use liveshop_shop::ids::{MINUTE, SECOND};
use liveshop_shop::money::allocate;
use liveshop_shop::orders::{PaymentState, StockHold};
use liveshop_shop::{Currency, Input, Money, OrderId, PaymentKind, PaymentOutcome, Sku};
use proptest::prelude::*;
use serde_json::json;

const SKU: &str = "SNK";
const BUYERS: usize = 8;
const TOKENS: [&str; 7] = [
    "tok_visa",
    "tok_visa",
    "tok_chargeDeclined",
    "tok_pending",
    "tok_authorizeThenCapture",
    "tok_threeDSecureRequired",
    "tok_insufficientFunds",
];

/// A flash sale: stock, the deal's caps, the SKU's own per-buyer limit, the reservation time.
#[derive(Debug, Clone)]
struct Sale {
    stock: u32,
    cap: u32,
    per_buyer: u32,
    max_per_buyer: Option<u32>,
    ttl_secs: u64,
}

fn sale() -> impl Strategy<Value = Sale> {
    (1u32..25, 1u32..30, 1u32..4, prop::option::of(1u32..6), 30u64..180).prop_map(
        |(stock, cap, per_buyer, max_per_buyer, ttl_secs)| Sale {
            stock,
            cap,
            per_buyer,
            max_per_buyer,
            ttl_secs,
        },
    )
}

/// One thing that happens; many are refused, late or duplicated on purpose.
#[derive(Debug, Clone)]
enum Step {
    Add {
        buyer: usize,
        qty: u32,
    },
    Checkout {
        buyer: usize,
        key: u8,
    },
    /// The provider answers one waiting charge.
    Answer {
        pick: usize,
    },
    /// A stray, late or duplicated provider callback for some order.
    Stray {
        pick: usize,
        outcome: u8,
    },
    Cancel {
        pick: usize,
    },
    Refund {
        pick: usize,
        minor: i64,
    },
    Fulfil {
        pick: usize,
    },
    /// A webhook delivery answered with this status (0 = network error).
    Deliver {
        status: u16,
    },
    Price {
        minor: i64,
    },
    Advance(u64),
    Alarm,
    Revive,
}

fn step() -> impl Strategy<Value = Step> {
    let buyer = 0..BUYERS;
    prop_oneof![
        6 => (buyer.clone(), 1u32..4).prop_map(|(buyer, qty)| Step::Add { buyer, qty }),
        6 => (buyer, 0u8..3).prop_map(|(buyer, key)| Step::Checkout { buyer, key }),
        5 => any::<usize>().prop_map(|pick| Step::Answer { pick }),
        2 => (any::<usize>(), 0u8..4).prop_map(|(pick, outcome)| Step::Stray { pick, outcome }),
        1 => any::<usize>().prop_map(|pick| Step::Cancel { pick }),
        1 => (any::<usize>(), 1i64..5_000).prop_map(|(pick, minor)| Step::Refund { pick, minor }),
        1 => any::<usize>().prop_map(|pick| Step::Fulfil { pick }),
        2 => prop::sample::select(vec![200u16, 204, 0, 410, 429, 500, 503]).prop_map(|status| Step::Deliver { status }),
        1 => (500i64..20_000).prop_map(|minor| Step::Price { minor }),
        4 => (0u64..90_000).prop_map(Step::Advance),
        2 => Just(Step::Alarm),
        1 => Just(Step::Revive),
    ]
}

fn buyer_name(i: usize) -> String {
    format!("buyer-{i}")
}

fn key_token(key: u8) -> &'static str {
    TOKENS[usize::from(key) * 3 % TOKENS.len()]
}

fn setup(s: &Sale) -> Host {
    let mut h = Host::new();
    h.endpoint("https://merchant.example/hooks");
    assert!(h.put(&merchant(), "/settings", json!({ "reservation_ttl_secs": s.ttl_secs })).ok());
    let mut variant = json!({ "sku": SKU, "price": eur(10_000), "stock": s.stock });
    if let Some(max) = s.max_per_buyer {
        variant["max_per_buyer"] = json!(max);
    }
    assert!(h.put(&merchant(), "/products/snk", json!({ "title": "Sneaker", "variants": [variant] })).ok());
    let deal = json!({ "sku": SKU, "duration_secs": 600, "discount": { "percent": "30" }, "quantity_cap": s.cap, "per_buyer_cap": s.per_buyer });
    assert_eq!(h.post(&merchant(), "/deals", deal).status, 201);
    h
}

fn pick_order(h: &Host, pick: usize) -> Option<OrderId> {
    let ids: Vec<OrderId> = h.shop.state().orders.keys().copied().collect();
    (!ids.is_empty()).then(|| ids[pick % ids.len()])
}

/// Runs one step; returns the reply to a checkout, if it was one.
fn run(h: &mut Host, step: &Step) -> Option<harness::Reply> {
    match step {
        Step::Add { buyer, qty } => {
            h.add(&buyer_name(*buyer), SKU, *qty);
        }
        Step::Checkout { buyer, key } => {
            return Some(h.checkout(&buyer_name(*buyer), &format!("key-{key}"), key_token(*key)));
        }
        Step::Answer { pick } => {
            if !h.unpaid.is_empty() {
                let req = h.unpaid.remove(pick % h.unpaid.len());
                for outcome in liveshop_shop::test_provider::respond(&req) {
                    h.input(Input::PaymentResult { order: req.order, outcome });
                }
            }
        }
        Step::Stray { pick, outcome } => {
            if let Some(order) = pick_order(h, *pick) {
                let outcome = match outcome {
                    0 => PaymentOutcome::Paid,
                    1 => PaymentOutcome::Authorized,
                    2 => PaymentOutcome::Failed { reason: "card_declined".into() },
                    _ => PaymentOutcome::RequiresAction { url: None },
                };
                h.input(Input::PaymentResult { order, outcome });
            }
        }
        Step::Cancel { pick } => {
            if let Some(id) = pick_order(h, *pick) {
                h.post(&merchant(), &format!("/orders/{}/cancel", id.0), json!({}));
            }
        }
        Step::Refund { pick, minor } => {
            if let Some(id) = pick_order(h, *pick) {
                h.post(&merchant(), &format!("/orders/{}/refund", id.0), json!({ "amount": eur(*minor) }));
            }
        }
        Step::Fulfil { pick } => {
            if let Some(id) = pick_order(h, *pick) {
                h.post(&merchant(), &format!("/orders/{}/fulfil", id.0), json!({}));
            }
        }
        Step::Deliver { status } => h.answer_deliveries((*status != 0).then_some(*status)),
        Step::Price { minor } => {
            h.put(&merchant(), &format!("/skus/{SKU}/price"), json!({ "price": eur(*minor) }));
        }
        Step::Advance(ms) => h.advance(*ms),
        Step::Alarm => h.run_for(0),
        Step::Revive => h.revive(),
    }
    None
}

/// Stock and caps, as the orders say they should be, and as the counters say they are.
fn check_stock(h: &Host, s: &Sale) -> Result<(), TestCaseError> {
    let state = h.shop.state();
    let sku: Sku = SKU.parse().unwrap();
    let units = |hold: fn(&StockHold) -> bool| -> u32 {
        state
            .orders
            .values()
            .filter(|o| hold(&o.hold))
            .flat_map(|o| &o.priced.lines)
            .map(|l| l.quantity)
            .sum()
    };
    let committed = units(|h| *h == StockHold::Committed);
    let reserved = units(|h| matches!(h, StockHold::Reserved { .. }));
    prop_assert!(
        committed + reserved <= s.stock,
        "oversold: {} paid + {} reserved > {}",
        committed,
        reserved,
        s.stock
    );
    let v = &state.variants[&sku];
    prop_assert_eq!(v.reserved, reserved);
    prop_assert_eq!(v.on_hand, s.stock - committed);
    let deal = state.deals.values().next().unwrap();
    let at_deal_price: u32 = state
        .orders
        .values()
        .filter(|o| o.hold != StockHold::Released)
        .flat_map(|o| &o.priced.lines)
        .filter(|l| l.deal == Some(deal.id))
        .map(|l| l.quantity)
        .sum();
    prop_assert_eq!(deal.taken, at_deal_price);
    prop_assert!(deal.taken <= s.cap, "deal cap exceeded: {} > {}", deal.taken, s.cap);
    for buyer in state.buyer_orders.keys() {
        prop_assert!(
            state.buyer_deal_units(buyer, None, deal.id) <= s.per_buyer,
            "{} over the deal's per-buyer cap",
            buyer
        );
        if let Some(max) = s.max_per_buyer {
            prop_assert!(state.buyer_units(buyer, &sku) <= max, "{} over the SKU's per-buyer limit", buyer);
        }
    }
    for o in state.orders.values() {
        match o.payment {
            PaymentState::Authorized | PaymentState::Paid => prop_assert_eq!(o.hold, StockHold::Committed),
            PaymentState::Failed | PaymentState::Cancelled => prop_assert_eq!(o.hold, StockHold::Released),
            PaymentState::Pending | PaymentState::RequiresAction => {
                prop_assert_ne!(o.hold, StockHold::Committed)
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Buyers racing for limited stock in a flash sale, with every kind of payment outcome,
    /// expiry, cancellation and revival: paid + reserved never exceeds the stock, and neither
    /// the deal's caps nor the SKU's per-buyer limit is ever exceeded, at any step.
    #[test]
    fn a_flash_sale_never_oversells_and_never_exceeds_a_cap(s in sale(), steps in prop::collection::vec(step(), 1..250)) {
        let mut h = setup(&s);
        for st in &steps {
            run(&mut h, st);
            check_stock(&h, &s)?;
        }
    }

    /// Checkouts retried with the same key, at any moment, across revivals and with duplicated
    /// provider callbacks: one order per key, one charge per order, and once a key has its
    /// answer every retry gets exactly those bytes.
    #[test]
    fn retries_with_the_same_key_never_lose_or_double_charge_an_order(s in sale(), steps in prop::collection::vec(step(), 1..250)) {
        let mut h = setup(&s);
        let mut orders_of_key: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        let mut answers: BTreeMap<(String, String), (u16, String)> = BTreeMap::new();
        for st in &steps {
            let (buyer, key) = match st {
                Step::Checkout { buyer, key } => (buyer_name(*buyer), format!("key-{key}")),
                _ => (String::new(), String::new()),
            };
            let before = h.shop.state().idempotency_record(&buyer, &key, h.now).cloned();
            let orders_before = h.shop.state().orders.len();
            let Some(reply) = run(&mut h, st) else {
                continue;
            };
            match before {
                Some(rec) => {
                    prop_assert_eq!(h.shop.state().orders.len(), orders_before, "a retry made an order");
                    match rec.response {
                        Some(r) => {
                            prop_assert_eq!(reply.status, r.status);
                            prop_assert_eq!(String::from_utf8(reply.raw.clone()).unwrap(), r.body);
                        }
                        None => {
                            prop_assert_eq!(reply.code(), "idempotency_key_in_flight");
                            prop_assert_eq!(&reply.json["error"]["order_id"], &json!(rec.order.0));
                        }
                    }
                }
                None if reply.ok() => {
                    prop_assert_eq!(h.shop.state().orders.len(), orders_before + 1);
                    orders_of_key.entry((buyer.clone(), key.clone())).or_default().insert(reply.order_id().0);
                }
                None => prop_assert_eq!(h.shop.state().orders.len(), orders_before, "a refusal made an order"),
            }
            // A key's stored answer never changes once given.
            for (buyer, keys) in &h.shop.state().idempotency {
                for (key, rec) in keys {
                    if let Some(r) = &rec.response {
                        let first = answers.entry((buyer.clone(), key.clone())).or_insert((r.status, r.body.clone()));
                        prop_assert_eq!(&*first, &(r.status, r.body.clone()));
                    }
                }
            }
        }
        for ((buyer, key), ids) in &orders_of_key {
            prop_assert_eq!(ids.len(), 1, "{} {} made several orders", buyer, key);
        }
        let mut charges: BTreeMap<OrderId, usize> = BTreeMap::new();
        for p in h.payments.iter().filter(|p| p.kind == PaymentKind::Charge) {
            *charges.entry(p.order).or_default() += 1;
        }
        for id in h.shop.state().orders.keys() {
            prop_assert_eq!(charges.get(id).copied(), Some(1), "order {} charged other than once", id.0);
        }
        prop_assert_eq!(charges.len(), h.shop.state().orders.len(), "a charge without an order");
        // Refunds repeat only under the same provider key, and never exceed what was charged.
        let mut refunds: BTreeMap<OrderId, BTreeMap<String, i64>> = BTreeMap::new();
        for p in h.payments.iter().filter(|p| p.kind == PaymentKind::Refund) {
            let previous = refunds.entry(p.order).or_default().insert(p.idempotency_key.clone(), p.amount.minor);
            prop_assert!(previous.is_none_or(|a| a == p.amount.minor), "one key, two amounts");
        }
        for (id, keys) in &refunds {
            let total = h.shop.state().orders[id].priced.total.minor;
            prop_assert!(keys.values().sum::<i64>() <= total, "order {} refunded more than charged", id.0);
        }
    }

    /// What a revived shop rebuilds from storage (snapshot + log) equals the live shop, at every
    /// point of any history, merchant operations and webhook failures included.
    #[test]
    fn snapshot_plus_log_replay_equals_live_state(s in sale(), steps in prop::collection::vec(step(), 1..300)) {
        let mut h = setup(&s);
        for (i, st) in steps.iter().enumerate() {
            run(&mut h, st);
            if i % 20 == 0 || i + 1 == steps.len() {
                let restored = h.restored();
                prop_assert_eq!(restored.state(), h.shop.state());
                prop_assert_eq!(restored.seq(), h.shop.seq());
                prop_assert_eq!(restored.epoch(), h.shop.epoch());
            }
        }
    }

    /// Reservations nobody pays for are released by the alarm alone, and all the stock returns.
    #[test]
    fn expired_reservations_are_released_by_the_alarm_and_the_stock_returns(
        s in sale(),
        plan in prop::collection::vec((0..BUYERS, 1u32..4, 0u64..20_000), 1..40),
    ) {
        let mut h = setup(&s);
        for (buyer, qty, wait) in plan {
            let name = buyer_name(buyer);
            h.add(&name, SKU, qty);
            let token = if buyer % 2 == 0 { "tok_pending" } else { "tok_threeDSecureRequired" };
            h.checkout(&name, &format!("k{}", h.now), token);
            h.pay();
            h.advance(wait);
        }
        let first_expiry = h.shop.state().reservations.values().min().copied();
        if let Some(at) = first_expiry {
            prop_assert!(h.alarm.is_some_and(|alarm| alarm <= at), "the alarm is set for the expiry");
        }
        h.run_for(s.ttl_secs * SECOND + MINUTE);
        let v = h.variant(SKU);
        prop_assert_eq!((v.on_hand, v.reserved, v.available()), (s.stock, 0, s.stock));
        prop_assert!(h.shop.state().reservations.is_empty());
        prop_assert!(h.shop.state().orders.values().all(|o| o.hold == StockHold::Released));
        prop_assert_eq!(h.shop.state().deals.values().next().unwrap().taken, 0);
    }

    /// The largest-remainder split always sums to the whole, never gives a part more than its
    /// weight when the whole fits, and is never a whole unit away from the exact share.
    #[test]
    fn the_largest_remainder_split_always_sums(total in 0i64..1_000_000_000, weights in prop::collection::vec(0i64..10_000_000, 1..20)) {
        let m = |minor| Money::new(minor, Currency::Eur);
        let w: Vec<Money> = weights.iter().map(|&x| m(x)).collect();
        let parts = allocate(m(total), &w).unwrap();
        prop_assert_eq!(parts.iter().map(|p| p.minor).sum::<i64>(), total);
        let sum: i64 = weights.iter().sum();
        if sum > 0 {
            for (p, &wt) in parts.iter().zip(&weights) {
                let exact = i128::from(total) * i128::from(wt);
                let got = i128::from(p.minor) * i128::from(sum);
                prop_assert!((got - exact).abs() < i128::from(sum), "{} is not within a unit of its share", p.minor);
                if total <= sum {
                    prop_assert!(p.minor <= wt);
                }
            }
        }
    }

    /// Any cart, coupon and tax rates: the lines add up to the totals and nothing is negative.
    #[test]
    fn a_quote_adds_up(
        prices in prop::collection::vec((1i64..100_000, 0u32..4, 1u32..5), 1..6),
        coupon in prop_oneof![Just(None), (1u32..=100).prop_map(|p| Some(json!({ "percent": p.to_string() }))), (1i64..50_000).prop_map(|a| Some(json!({ "amount": eur(a) })))],
        inclusive in any::<bool>(),
    ) {
        let mut h = Host::new();
        h.put(&merchant(), "/settings", json!({ "prices_include_tax": inclusive }));
        let rates = ["0", "7", "19", "5.5"];
        for (i, (price, rate, qty)) in prices.iter().enumerate() {
            let v = json!({ "sku": format!("S{i}"), "price": eur(*price), "stock": 10, "tax_rate": rates[*rate as usize] });
            let put = h.put(&merchant(), &format!("/products/p{i}"), json!({ "title": "P", "variants": [v] }));
            prop_assert!(put.ok());
            let added = h.add("ana", &format!("S{i}"), *qty);
            prop_assert!(added.ok());
        }
        if let Some(discount) = coupon {
            h.put(&merchant(), "/coupons/C", json!({ "discount": discount }));
            let applied = h.put(&viewer("ana"), "/carts/ana/coupon", json!({ "code": "C" }));
            prop_assert!(applied.ok());
        }
        let q = h.get(&viewer("ana"), "/carts/ana").json["quote"].clone();
        let lines = q["lines"].as_array().unwrap();
        let sum = |field: &str| lines.iter().map(|l| l[field]["minor"].as_i64().unwrap()).sum::<i64>();
        for field in ["subtotal", "discount", "tax", "total"] {
            prop_assert_eq!(sum(field), q[field]["minor"].as_i64().unwrap(), "{}", field);
        }
        prop_assert!(q["discount"]["minor"].as_i64().unwrap() <= q["subtotal"]["minor"].as_i64().unwrap());
        for l in lines {
            prop_assert!(l["total"]["minor"].as_i64().unwrap() >= 0);
            prop_assert!(l["discount"]["minor"].as_i64().unwrap() <= l["subtotal"]["minor"].as_i64().unwrap());
        }
    }
}
