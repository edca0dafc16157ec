//! The shop's rules, driven the way hosts drive them: requests, payment results, delivery
//! results and alarms in; replies, payments, deliveries and storage writes out.

mod harness;

use harness::{Host, START, eur, merchant, viewer};
use liveshop_shop::ids::{DAY, HOUR, MINUTE, SECOND};
use liveshop_shop::orders::{CaptureState, FulfilmentState, PaymentState, RefundState, StockHold};
use liveshop_shop::{Capture, Input, PaymentKind, PaymentOutcome, Role};
use serde_json::json;

#[test]
fn a_buyer_fills_a_cart_checks_out_and_pays_and_the_stock_is_committed() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 10)]);
    let cart = h.add("ana", "TEE-M", 2);
    assert_eq!(cart.status, 200);
    assert_eq!(cart.json["quote"]["total"], eur(3998));
    let r = h.checkout("ana", "k1", "tok_visa");
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(r.json["order"]["payment"], "pending");
    let id = r.order_id();
    assert_eq!(h.variant("TEE-M").reserved, 2);
    assert_eq!(h.variant("TEE-M").available(), 8);
    assert!(h.shop.state().carts.is_empty(), "the cart became the order");
    assert_eq!(h.unpaid.len(), 1);
    assert_eq!(h.unpaid[0].amount.minor, 3998);
    assert_eq!(h.unpaid[0].idempotency_key, format!("42-ord{}", id.0));
    h.pay();
    let order = h.order(id);
    assert_eq!(order.payment, PaymentState::Paid);
    assert_eq!(order.hold, StockHold::Committed);
    assert_eq!((h.variant("TEE-M").on_hand, h.variant("TEE-M").reserved), (8, 0));
    let seen = h.get(&viewer("ana"), &format!("/orders/{}", id.0));
    assert_eq!(seen.json["order"]["payment"], "paid");
    assert_eq!(h.get(&viewer("bob"), &format!("/orders/{}", id.0)).code(), "not_found", "not bob's order");
}

#[test]
fn prices_come_from_the_catalog_and_a_tampered_price_is_refused() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 10)]);
    let ana = viewer("ana");
    let tampered = json!({ "sku": "TEE-M", "quantity": 1, "expected_unit_price": eur(1) });
    let r = h.post(&ana, "/carts/ana/items", tampered);
    assert_eq!((r.status, r.code()), (409, "price_mismatch"));
    assert_eq!(r.json["error"]["actual"], eur(1999));
    assert!(h.shop.state().carts.is_empty(), "nothing was added");
    // A price field is not part of the API at all.
    let r = h.post(&ana, "/carts/ana/items", json!({ "sku": "TEE-M", "quantity": 1, "price": eur(1) }));
    assert_eq!(r.code(), "invalid_argument");
    let honest = json!({ "sku": "TEE-M", "quantity": 1, "expected_unit_price": eur(1999) });
    assert!(h.post(&ana, "/carts/ana/items", honest).ok());
    // The price changes between the cart and the checkout: the buyer is not charged more than
    // they saw.
    assert!(h.put(&merchant(), "/skus/TEE-M/price", json!({ "price": eur(2499) })).ok());
    let body = json!({ "payment_method": "tok_visa", "expected_total": eur(1999) }).to_string();
    let r = h.request(Some(&ana), "POST", "/checkout", &[("Idempotency-Key", "k1")], &body);
    assert_eq!(r.code(), "price_mismatch");
    assert_eq!(r.json["error"]["actual"], eur(2499));
    assert!(h.shop.state().orders.is_empty());
    let r = h.post(
        &ana,
        "/carts/ana/items",
        json!({ "sku": "TEE-M", "quantity": 1, "expected_unit_price": { "minor": 2499, "currency": "USD" } }),
    );
    assert_eq!(r.code(), "currency_mismatch");
}

#[test]
fn checkout_needs_an_idempotency_key() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 10)]);
    h.add("ana", "TEE-M", 1);
    let body = json!({ "payment_method": "tok_visa" }).to_string();
    let r = h.request(Some(&viewer("ana")), "POST", "/checkout", &[], &body);
    assert_eq!((r.status, r.code()), (400, "idempotency_key_missing"));
    let r = h.request(Some(&viewer("ana")), "POST", "/checkout", &[("Idempotency-Key", "has space")], &body);
    assert_eq!((r.status, r.code()), (400, "idempotency_key_invalid"));
    let r = h.request(None, "POST", "/checkout", &[("Idempotency-Key", "k")], &body);
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    assert!(h.shop.state().orders.is_empty());
}

#[test]
fn a_retry_with_the_same_key_never_makes_a_second_order_and_gets_the_same_bytes() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 10)]);
    h.add("ana", "TEE-M", 1);
    let first = h.checkout("ana", "k1", "tok_visa");
    assert_eq!(first.status, 202);
    // While the provider is still deciding.
    let retry = h.checkout("ana", "k1", "tok_visa");
    assert_eq!((retry.status, retry.code()), (409, "idempotency_key_in_flight"));
    assert_eq!(retry.json["error"]["order_id"], first.json["order"]["id"]);
    // The same key with another body.
    let other = h.checkout("ana", "k1", "tok_mastercard");
    assert_eq!((other.status, other.code()), (422, "idempotency_key_reused"));
    h.pay();
    // After it finished: the stored answer, byte for byte, every time, even after a revival.
    let done = h.checkout("ana", "k1", "tok_visa");
    assert_eq!(done.status, 201);
    assert_eq!(done.json["order"]["payment"], "paid");
    h.advance(HOUR);
    h.revive();
    let again = h.checkout("ana", "k1", "tok_visa");
    assert_eq!((again.status, &again.raw), (201, &done.raw));
    // A body with the same meaning but another key order and spacing is the same request.
    let reordered = "{ \"payment_method\" : \"tok_visa\" }";
    let same = h.request(Some(&viewer("ana")), "POST", "/checkout", &[("Idempotency-Key", "k1")], reordered);
    assert_eq!(same.raw, done.raw);
    assert_eq!(h.shop.state().orders.len(), 1);
    assert_eq!(h.payments.iter().filter(|p| p.kind == PaymentKind::Charge).count(), 1, "charged once");
}

#[test]
fn keys_belong_to_one_buyer_and_are_forgotten_after_a_day() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 10)]);
    h.add("ana", "TEE-M", 1);
    h.add("bob", "TEE-M", 1);
    assert_eq!(h.checkout("ana", "same", "tok_visa").status, 202);
    assert_eq!(h.checkout("bob", "same", "tok_visa").status, 202, "bob's key is his own");
    h.pay();
    assert_eq!(h.checkout("ana", "same", "tok_visa").status, 201);
    h.run_for(DAY - MINUTE);
    assert!(h.shop.state().idempotency.contains_key("ana"));
    h.run_for(2 * MINUTE);
    assert!(h.shop.state().idempotency.is_empty(), "the alarm forgot them after 24 hours");
    // Now the key is new again: this checkout executes (and finds an empty cart).
    assert_eq!(h.checkout("ana", "same", "tok_visa").code(), "cart_empty");
}

#[test]
fn a_declined_card_fails_the_order_releases_the_stock_and_is_the_keys_answer() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 3)]);
    h.add("ana", "TEE-M", 3);
    let id = h.checkout("ana", "k1", "tok_chargeDeclined").order_id();
    assert_eq!(h.variant("TEE-M").available(), 0);
    h.pay();
    let order = h.order(id);
    assert_eq!(order.payment, PaymentState::Failed);
    assert_eq!(order.payment_reason.as_deref(), Some("card_declined"));
    assert_eq!(h.variant("TEE-M").available(), 3, "the stock is back");
    let retry = h.checkout("ana", "k1", "tok_chargeDeclined");
    assert_eq!((retry.status, retry.code()), (402, "payment_failed"));
    assert_eq!(retry.json["error"]["reason"], "card_declined");
    // A late duplicate of the result changes nothing.
    let seq = h.shop.seq();
    h.input(Input::PaymentResult { order: id, outcome: PaymentOutcome::Paid });
    assert_eq!(h.shop.seq(), seq);
    assert_eq!(h.order(id).payment, PaymentState::Failed);
}

#[test]
fn an_unpaid_reservation_expires_and_the_alarm_gives_the_stock_back() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 2)]);
    h.add("ana", "TEE-M", 2);
    let id = h.checkout("ana", "k1", "tok_pending").order_id();
    assert_eq!(h.variant("TEE-M").available(), 0);
    assert_eq!(h.add("bob", "TEE-M", 1).code(), "out_of_stock");
    let expires = START + 10 * MINUTE;
    assert_eq!(h.alarm, Some(expires), "the shop asked to be woken when the reservation expires");
    h.run_for(10 * MINUTE - 1);
    assert_eq!(h.variant("TEE-M").available(), 0);
    h.run_for(1);
    assert_eq!(h.variant("TEE-M").available(), 2);
    assert_eq!(h.order(id).hold, StockHold::Released);
    assert_eq!(h.order(id).payment, PaymentState::Pending, "the payment may still come");
    assert!(h.add("bob", "TEE-M", 1).ok());
}

#[test]
fn a_payment_after_the_reservation_expired_takes_the_stock_again_only_if_it_is_still_there() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 2)]);
    h.add("ana", "TEE-M", 1);
    let ana = h.checkout("ana", "k1", "tok_pending").order_id();
    h.add("bob", "TEE-M", 2);
    let bob = h.checkout("bob", "k1", "tok_pending").order_id_or_refused();
    assert_eq!(bob, None, "only one left for bob");
    h.run_for(11 * MINUTE);
    // Ana's payment arrives late, the stock is still there: the order is paid.
    h.input(Input::PaymentResult { order: ana, outcome: PaymentOutcome::Paid });
    assert_eq!(h.order(ana).payment, PaymentState::Paid);
    assert_eq!(h.variant("TEE-M").on_hand, 1);
    // Bob reserves the last one and lets it expire; carol buys it meanwhile.
    let bob = {
        h.put(&viewer("bob"), "/carts/bob/items/TEE-M", json!({ "quantity": 1 }));
        h.checkout("bob", "k2", "tok_pending").order_id()
    };
    h.run_for(11 * MINUTE);
    h.add("carol", "TEE-M", 1);
    h.checkout("carol", "k", "tok_visa");
    h.pay();
    h.input(Input::PaymentResult { order: bob, outcome: PaymentOutcome::Paid });
    let order = h.order(bob);
    assert_eq!(order.payment, PaymentState::Cancelled);
    assert_eq!(order.payment_reason.as_deref(), Some("reservation_expired"));
    let refund = h.payments.last().unwrap();
    assert_eq!((refund.kind, refund.order, refund.amount.minor), (PaymentKind::Refund, bob, 1999));
    assert_eq!(h.variant("TEE-M").on_hand, 0, "never oversold");
    let retry = h.checkout("bob", "k2", "tok_pending");
    assert_eq!((retry.status, retry.code()), (409, "reservation_expired"));
}

trait OrderOrRefused {
    fn order_id_or_refused(&self) -> Option<liveshop_shop::OrderId>;
}

impl OrderOrRefused for harness::Reply {
    fn order_id_or_refused(&self) -> Option<liveshop_shop::OrderId> {
        self.ok().then(|| self.order_id())
    }
}

#[test]
fn per_buyer_limits_hold_across_carts_and_orders() {
    let mut h = Host::new();
    let limited = json!({ "title": "Sneaker", "variants": [{ "sku": "SNK", "price": eur(9900), "stock": 100, "max_per_buyer": 2 }] });
    assert!(h.put(&merchant(), "/products/snk", limited).ok());
    let r = h.add("ana", "SNK", 3);
    assert_eq!((r.status, r.code()), (422, "buyer_limit_exceeded"));
    assert_eq!(r.json["error"]["limit"], 2);
    assert!(h.add("ana", "SNK", 2).ok());
    h.checkout("ana", "k1", "tok_visa");
    h.pay();
    let r = h.add("ana", "SNK", 1);
    assert_eq!(r.code(), "buyer_limit_exceeded");
    assert_eq!(r.json["error"]["held"], 2);
    assert!(h.add("bob", "SNK", 2).ok(), "the limit is per buyer");
}

#[test]
fn bad_input_gets_its_own_error_code_and_changes_nothing() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 5)]);
    let ana = viewer("ana");
    let (seq, store) = (h.shop.seq(), h.store.clone());
    let cases = [
        (json!({ "sku": "TEE-M", "quantity": -1 }), "invalid_quantity"),
        (json!({ "sku": "TEE-M", "quantity": 0 }), "invalid_quantity"),
        (json!({ "sku": "TEE-M", "quantity": 1.5 }), "invalid_quantity"),
        (json!({ "sku": "TEE-M", "quantity": 1e30 }), "invalid_quantity"),
        (json!({ "sku": "TEE-M", "quantity": 1000 }), "invalid_quantity"),
        (json!({ "sku": "TEE-M", "quantity": 6 }), "out_of_stock"),
        (json!({ "sku": "NOPE", "quantity": 1 }), "unknown_sku"),
        (json!({ "sku": "../etc", "quantity": 1 }), "unknown_sku"),
        (
            json!({ "sku": "TEE-M", "quantity": 1, "expected_unit_price": { "minor": 1999, "currency": "XYZ" } }),
            "unknown_currency",
        ),
        (json!({ "sku": "TEE-M" }), "invalid_argument"),
    ];
    for (body, code) in cases {
        let r = h.post(&ana, "/carts/ana/items", body.clone());
        assert_eq!(r.code(), code, "{body}");
    }
    assert_eq!(h.request(Some(&ana), "POST", "/carts/ana/items", &[], "{not json").code(), "malformed_json");
    assert_eq!(
        h.request(Some(&ana), "POST", "/carts/ana/items", &[], &"x".repeat(70_000)).code(),
        "payload_too_large"
    );
    assert_eq!(h.get(&ana, "/nowhere").code(), "not_found");
    let price =
        json!({ "title": "X", "variants": [{ "sku": "X1", "price": { "minor": -5, "currency": "EUR" } }] });
    assert_eq!(h.put(&merchant(), "/products/x", price).code(), "invalid_price");
    let yen =
        json!({ "title": "X", "variants": [{ "sku": "X1", "price": { "minor": 5, "currency": "JPY" } }] });
    assert_eq!(h.put(&merchant(), "/products/x", yen).code(), "currency_mismatch");
    let unknown =
        json!({ "title": "X", "variants": [{ "sku": "X1", "price": { "minor": 5, "currency": "ZZZ" } }] });
    assert_eq!(h.put(&merchant(), "/products/x", unknown).code(), "unknown_currency");
    assert_eq!(h.put(&merchant(), "/skus/TEE-M/stock", json!({ "on_hand": -3 })).code(), "invalid_quantity");
    assert_eq!(h.checkout("ana", "k", "tok_visa").code(), "cart_empty");
    assert_eq!((h.shop.seq(), &h.store), (seq, &store), "no refusal wrote anything");
}

#[test]
fn every_mutating_route_checks_the_role() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1999, 5)]);
    let (ana, host, moderator) = (
        viewer("ana"),
        liveshop_shop::Identity::new("hh", Role::Host),
        liveshop_shop::Identity::new("mo", Role::Moderator),
    );
    let product = json!({ "title": "T", "variants": [{ "sku": "T1", "price": eur(100) }] });
    assert_eq!(h.put(&ana, "/products/t", product.clone()).code(), "forbidden");
    assert_eq!(h.put(&moderator, "/products/t", product.clone()).code(), "forbidden");
    assert_eq!(h.request(None, "PUT", "/products/t", &[], &product.to_string()).code(), "unauthenticated");
    assert!(h.put(&host, "/products/t", product).ok(), "hosts run the show's catalog");
    assert_eq!(h.post(&ana, "/deals", json!({})).code(), "forbidden");
    assert_eq!(h.put(&ana, "/skus/TEE-M/stock", json!({ "on_hand": 1 })).code(), "forbidden");
    assert_eq!(
        h.post(&host, "/webhooks/endpoints", json!({ "url": "https://x.example", "secret_id": "whsec_1" }))
            .code(),
        "forbidden"
    );
    assert_eq!(h.put(&host, "/settings", json!({ "low_stock_threshold": 1 })).code(), "forbidden");
    assert_eq!(h.post(&host, "/merchant/events", json!({})).code(), "forbidden");
    // Carts are their owner's.
    assert_eq!(
        h.post(&ana, "/carts/bob/items", json!({ "sku": "TEE-M", "quantity": 1 })).code(),
        "forbidden"
    );
    assert_eq!(h.get(&ana, "/carts/bob").code(), "forbidden");
    assert!(h.get(&host, "/carts/bob").ok(), "staff may look");
    // Anyone may browse.
    assert!(h.request(None, "GET", "/catalog", &[], "").ok());
}

#[test]
fn a_flash_deal_sells_within_its_caps_and_the_rest_at_the_regular_price() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 2000, 100)]);
    let deal = json!({ "sku": "TEE-M", "duration_secs": 600, "discount": { "percent": "25" }, "quantity_cap": 3, "per_buyer_cap": 2 });
    let r = h.post(&merchant(), "/deals", deal);
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["price"], eur(1500));
    assert_eq!(r.json["ends_at"], START + 10 * MINUTE, "the room counts down to this");
    // Three units: two at the deal price (the per-buyer cap), one at the regular price.
    let cart = h.add("ana", "TEE-M", 3);
    let lines = cart.json["quote"]["lines"].as_array().unwrap().clone();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["quantity"].clone(), lines[0]["unit_price"].clone()), (json!(2), eur(1500)));
    assert_eq!((lines[1]["quantity"].clone(), lines[1]["unit_price"].clone()), (json!(1), eur(2000)));
    assert_eq!(cart.json["quote"]["total"], eur(5000));
    h.checkout("ana", "k", "tok_visa");
    h.pay();
    // One deal unit left in all: bob gets one at the deal price, one regular.
    let cart = h.add("bob", "TEE-M", 2);
    assert_eq!(cart.json["quote"]["total"], eur(3500));
    h.checkout("bob", "k", "tok_visa");
    h.pay();
    let d = h.shop.state().deals.values().next().unwrap();
    assert_eq!((d.taken, d.remaining()), (3, 0));
    assert_eq!(h.add("carol", "TEE-M", 1).json["quote"]["total"], eur(2000));
    // When the deal ends, prices are regular again, and the alarm said so.
    h.run_for(10 * MINUTE);
    assert!(h.shop.state().deals.values().next().unwrap().ended);
}

/// A deal the merchant keeps on for replays: after its countdown, carts filled on the show's
/// replay page still get the deal price (within its caps) until the replay window closes; a live
/// page's carts, and every cart once it closes, pay the price now. An early end takes it back.
#[test]
fn a_deal_kept_on_for_replays_prices_replay_carts_after_it_ends() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 2000, 100), ("TEE-L", 2000, 100)]);
    let deal = json!({ "sku": "TEE-M", "duration_secs": 300, "discount": { "percent": "25" }, "quantity_cap": 3, "per_buyer_cap": 2, "replay_secs": 3600 });
    let r = h.post(&merchant(), "/deals", deal);
    assert_eq!((r.status, &r.json["replay_until"]), (201, &json!(START + 5 * MINUTE + HOUR)), "{}", r.json);
    let too_long = json!({ "sku": "TEE-L", "duration_secs": 60, "discount": { "percent": "5" }, "quantity_cap": 3, "per_buyer_cap": 1, "replay_secs": 8 * 24 * 3600 });
    assert_eq!(h.post(&merchant(), "/deals", too_long).code(), "invalid_argument");
    h.run_for(5 * MINUTE);
    let replay = |h: &mut Host, buyer: &str| {
        let body = json!({ "sku": "TEE-M", "quantity": 1, "replay": true });
        h.post(&viewer(buyer), &format!("/carts/{buyer}/items"), body)
    };
    assert_eq!(h.add("ana", "TEE-M", 1).json["quote"]["total"], eur(2000), "live carts pay the price now");
    assert_eq!(replay(&mut h, "bob").json["quote"]["total"], eur(1500), "a replay's cart gets the deal");
    let catalog = h.request(None, "GET", "/catalog", &[], "");
    let v = &catalog.json["products"][0]["variants"][0];
    assert_eq!((v["offered_price"].clone(), v["replay_price"].clone()), (eur(2000), eur(1500)));
    // Taking another line out of a replay's cart leaves its deal price.
    let bob = viewer("bob");
    assert!(h.post(&bob, "/carts/bob/items", json!({ "sku": "TEE-L", "quantity": 1, "replay": true })).ok());
    let r = h.request(Some(&bob), "DELETE", "/carts/bob/items/TEE-L", &[], "");
    assert_eq!(r.json["quote"]["total"], eur(1500), "{}", r.json);
    assert!(h.post(&bob, "/carts/bob/items", json!({ "sku": "TEE-L", "quantity": 1, "replay": true })).ok());
    let r = h.put(&bob, "/carts/bob/items/TEE-L", json!({ "quantity": 0 }));
    assert_eq!(r.json["quote"]["total"], eur(1500), "setting a line to 0 too: {}", r.json);
    h.checkout("bob", "k", "tok_visa");
    h.pay();
    assert_eq!(h.shop.state().deals.values().next().unwrap().taken, 1, "the caps still count");
    h.run_for(HOUR);
    assert_eq!(replay(&mut h, "carol").json["quote"]["total"], eur(2000), "the replay window closed");

    let early = json!({ "sku": "TEE-L", "duration_secs": 300, "discount": { "percent": "25" }, "quantity_cap": 3, "per_buyer_cap": 2, "replay_secs": 3600 });
    let id = h.post(&merchant(), "/deals", early).json["id"].clone();
    h.run_for(MINUTE);
    assert_eq!(h.post(&merchant(), &format!("/deals/{id}/end"), json!({})).status, 200);
    let body = json!({ "sku": "TEE-L", "quantity": 1, "replay": true });
    assert_eq!(
        h.post(&viewer("dan"), "/carts/dan/items", body).json["quote"]["total"],
        eur(2000),
        "ended early: no replay price"
    );
}

#[test]
fn the_was_price_is_the_lowest_of_the_thirty_days_before_the_deal() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 3000, 10)]);
    h.advance(10 * DAY);
    h.put(&merchant(), "/skus/TEE-M/price", json!({ "price": eur(2500) }));
    h.advance(10 * DAY);
    // Raised just before the sale, to make the discount look bigger.
    h.put(&merchant(), "/skus/TEE-M/price", json!({ "price": eur(4000) }));
    h.advance(DAY);
    let deal = json!({ "sku": "TEE-M", "duration_secs": 600, "discount": { "percent": "30" }, "quantity_cap": 5, "per_buyer_cap": 1 });
    let r = h.post(&merchant(), "/deals", deal);
    assert_eq!(r.json["price"], eur(2800));
    assert_eq!(r.json["was"], eur(2500), "the lowest of the last 30 days, not the inflated 40.00");
    let catalog = h.request(None, "GET", "/catalog", &[], "");
    let v = &catalog.json["products"][0]["variants"][0];
    assert_eq!(v["deal"]["was"], eur(2500));
    assert_eq!(v["offered_price"], eur(2800));
    assert_eq!(catalog.json["now"], h.now, "clients count down with the shop's clock");
}

#[test]
fn flash_deals_start_and_end_by_the_alarm_with_webhooks() {
    let mut h = Host::new();
    h.endpoint("https://merchant.example/hooks");
    h.product("tee", &[("TEE-M", 2000, 100)]);
    let starts = START + HOUR;
    let deal = json!({ "sku": "TEE-M", "starts_at": starts, "ends_at": starts + 10 * MINUTE, "discount": { "amount": eur(500) }, "quantity_cap": 50, "per_buyer_cap": 1 });
    assert_eq!(h.post(&merchant(), "/deals", deal).status, 201);
    assert_eq!(h.add("ana", "TEE-M", 1).json["quote"]["total"], eur(2000), "not yet");
    let overlapping = json!({ "sku": "TEE-M", "starts_at": starts + MINUTE, "duration_secs": 60, "discount": { "percent": "10" }, "quantity_cap": 5, "per_buyer_cap": 1 });
    assert_eq!(h.post(&merchant(), "/deals", overlapping).code(), "deal_overlap");
    h.run_for(HOUR);
    assert!(h.sent_types().contains(&"flash_deal.started".to_string()));
    assert_eq!(h.get(&viewer("ana"), "/carts/ana").json["quote"]["total"], eur(1500));
    h.run_for(10 * MINUTE);
    assert!(h.sent_types().contains(&"flash_deal.ended".to_string()));
    assert_eq!(h.get(&viewer("ana"), "/carts/ana").json["quote"]["total"], eur(2000));
    let started = h.sent.iter().find(|s| s.event_type == "flash_deal.started").unwrap();
    assert_eq!(started.payload["type"], "flash_deal.started");
    assert_eq!(started.payload["data"]["ends_at"], starts + 10 * MINUTE);
    assert_eq!(started.payload["timestamp"], "2023-11-14T23:13:20.000Z");
}

#[test]
fn a_coupon_is_split_over_the_lines_so_no_cent_goes_missing() {
    let mut h = Host::new();
    h.put(&merchant(), "/settings", json!({ "default_tax_rate": "19" }));
    h.product("a", &[("A", 1000, 10)]);
    h.product("b", &[("B", 1000, 10)]);
    h.product("c", &[("C", 1000, 10)]);
    assert!(h.put(&merchant(), "/coupons/TENOFF", json!({ "discount": { "amount": eur(1000) } })).ok());
    for sku in ["A", "B", "C"] {
        h.add("ana", sku, 1);
    }
    let cart = h.put(&viewer("ana"), "/carts/ana/coupon", json!({ "code": "TENOFF" }));
    let q = &cart.json["quote"];
    let discounts: Vec<i64> =
        q["lines"].as_array().unwrap().iter().map(|l| l["discount"]["minor"].as_i64().unwrap()).collect();
    assert_eq!(discounts, [334, 333, 333], "10.00 over three equal lines");
    assert_eq!(q["discount"], eur(1000));
    assert_eq!(q["total"], eur(2000));
    // 19 % included in 20.00 is 3.19 (3.1932 rounded once), split 107/106/106.
    assert_eq!(q["tax"], eur(319));
    let taxes: i64 = q["lines"].as_array().unwrap().iter().map(|l| l["tax"]["minor"].as_i64().unwrap()).sum();
    assert_eq!(taxes, 319);
    assert_eq!(
        h.put(&viewer("ana"), "/carts/ana/coupon", json!({ "code": "NOPE" })).code(),
        "coupon_invalid"
    );
    // The coupon stops working before checkout: the buyer is told rather than charged more.
    h.put(&merchant(), "/coupons/TENOFF", json!({ "discount": { "amount": eur(1000) }, "active": false }));
    assert_eq!(h.checkout("ana", "k", "tok_visa").code(), "coupon_invalid");
}

#[test]
fn a_buyer_guessing_coupon_codes_is_held_back_and_even_the_right_code_waits() {
    let mut h = Host::new();
    h.product("a", &[("A", 1000, 10)]);
    assert!(h.put(&merchant(), "/coupons/SAVE10", json!({ "discount": { "percent": "10" } })).ok());
    let (ana, bob) = (viewer("ana"), viewer("bob"));
    h.add("ana", "A", 1);
    let guess = |h: &mut Host, code: &str| {
        let r = h.put(&ana, "/carts/ana/coupon", json!({ "code": code }));
        let refused = r.json["error"]["code"].as_str().unwrap_or_default().to_string();
        (r.status, refused, r.json["error"]["retry_after"].as_u64())
    };
    for n in 0..5 {
        assert_eq!(guess(&mut h, &format!("GUESS{n}")), (422, "coupon_invalid".into(), None));
    }
    let limited = (429, "coupon_attempts_exceeded".to_string(), Some(30));
    assert_eq!(guess(&mut h, "GUESS5"), limited);
    // Guessing stops paying: while limited, the right code is refused like any other.
    assert_eq!(guess(&mut h, "SAVE10"), limited);
    assert!(h.shop.state().carts["ana"].coupon.is_none());
    // The limit is ana's: bob applies the code.
    h.add("bob", "A", 1);
    assert!(h.put(&bob, "/carts/bob/coupon", json!({ "code": "SAVE10" })).ok());
    h.advance(29 * SECOND);
    assert_eq!(guess(&mut h, "SAVE10").2, Some(1), "a second to go");
    h.advance(SECOND);
    assert_eq!(guess(&mut h, "SAVE10"), (200, String::new(), None), "after the wait, attempts work again");
    assert!(h.shop.state().carts["ana"].coupon.is_some());
    // A right code used up nothing: one more wrong one is allowed, then one per 30 s again.
    assert_eq!(guess(&mut h, "GUESS6").1, "coupon_invalid");
    assert_eq!(guess(&mut h, "GUESS7").1, "coupon_attempts_exceeded");
}

#[test]
fn zero_and_three_decimal_currencies_price_in_their_own_minor_units() {
    let mut h = Host::new();
    assert!(h.put(&merchant(), "/settings", json!({ "currency": "JPY" })).ok());
    let yen = json!({ "title": "Fan", "variants": [{ "sku": "FAN", "price": { "minor": 1500, "currency": "JPY" }, "stock": 5 }] });
    assert!(h.put(&merchant(), "/products/fan", yen).ok());
    let deal = json!({ "sku": "FAN", "duration_secs": 60, "discount": { "percent": "33" }, "quantity_cap": 5, "per_buyer_cap": 5 });
    assert_eq!(
        h.post(&merchant(), "/deals", deal).json["price"],
        json!({ "minor": 1005, "currency": "JPY" }),
        "495 yen off, no fractions of a yen"
    );
    assert_eq!(h.put(&merchant(), "/settings", json!({ "currency": "KWD" })).code(), "currency_locked");

    let mut k = Host::new();
    k.put(&merchant(), "/settings", json!({ "currency": "KWD" }));
    let dinar = json!({ "title": "Oud", "variants": [{ "sku": "OUD", "price": { "minor": 12345, "currency": "KWD" }, "stock": 5 }] });
    assert!(k.put(&merchant(), "/products/oud", dinar).ok());
    let deal = json!({ "sku": "OUD", "duration_secs": 60, "discount": { "percent": "10" }, "quantity_cap": 5, "per_buyer_cap": 5 });
    // 12.345 KWD - 1.2345 (rounded half away: 1.235) = 11.110 KWD.
    assert_eq!(
        k.post(&merchant(), "/deals", deal).json["price"],
        json!({ "minor": 11110, "currency": "KWD" })
    );
}

#[test]
fn handoff_checkout_sends_the_buyer_to_the_merchants_cart_and_a_webhook_instead_of_a_payment() {
    let mut h = Host::new();
    h.endpoint("https://merchant.example/hooks");
    assert_eq!(
        h.put(&merchant(), "/settings", json!({ "checkout": "handoff" })).code(),
        "handoff_not_configured"
    );
    let settings =
        json!({ "checkout": "handoff", "handoff_url": "https://shop.example/cart/{lines}?ref=live-{order}" });
    assert!(h.put(&merchant(), "/settings", settings).ok());
    h.product("tee", &[("TEE-M", 1999, 10)]);
    h.add("ana", "TEE-M", 2);
    let r = h.checkout("ana", "k1", "ignored");
    assert_eq!(r.status, 201);
    let id = r.order_id();
    let url = format!("https://shop.example/cart/TEE-M:2?ref=live-{}", id.0);
    assert_eq!(r.json["order"]["checkout"], json!({ "mode": "handoff", "url": url }));
    assert!(h.payments.is_empty(), "no payment through the shop");
    let created = h.sent.iter().find(|s| s.event_type == "order.created").unwrap();
    assert_eq!(created.payload["data"]["checkout"]["url"], url);
    assert_eq!(h.checkout("ana", "k1", "ignored").raw, r.raw, "the key is answered at once");
    // The merchant's checkout reports the payment.
    let paid = h.post(
        &merchant(),
        "/merchant/events",
        json!({ "event_id": "shopify-1", "update": { "type": "order.paid", "order_id": id.0 } }),
    );
    assert!(paid.ok(), "{}", paid.json);
    assert_eq!(h.order(id).payment, PaymentState::Paid);
    assert_eq!(h.variant("TEE-M").on_hand, 8);
}

#[test]
fn order_transitions_are_checked_and_recorded() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1000, 10)]);
    h.add("ana", "TEE-M", 2);
    let id = h.checkout("ana", "k", "tok_pending").order_id();
    let path = |what: &str| format!("/orders/{}/{what}", id.0);
    let r = h.post(&merchant(), &path("fulfil"), json!({}));
    assert_eq!((r.status, r.code()), (409, "invalid_transition"));
    assert_eq!(h.post(&merchant(), &path("refund"), json!({})).code(), "invalid_transition");
    h.input(Input::PaymentResult { order: id, outcome: PaymentOutcome::Paid });
    assert_eq!(
        h.post(&merchant(), &path("cancel"), json!({})).code(),
        "invalid_transition",
        "a paid order is refunded"
    );
    assert!(h.post(&merchant(), &path("fulfil"), json!({})).ok());
    assert_eq!(h.post(&merchant(), &path("fulfil"), json!({})).code(), "invalid_transition");
    assert_eq!(
        h.post(&merchant(), &path("refund"), json!({ "amount": eur(2001) })).code(),
        "refund_exceeds_paid"
    );
    assert!(h.post(&merchant(), &path("refund"), json!({ "amount": eur(500), "reason": "stain" })).ok());
    assert_eq!(h.order(id).refund, RefundState::Partial);
    assert!(h.post(&merchant(), &path("refund"), json!({})).ok(), "the rest");
    let order = h.order(id);
    assert_eq!((order.refund, order.refunded.minor), (RefundState::Refunded, 2000));
    assert_eq!(order.fulfilment, FulfilmentState::Fulfilled);
    assert_eq!(h.post(&merchant(), &path("refund"), json!({})).code(), "invalid_transition");
    let refunds: Vec<(i64, String)> = h
        .payments
        .iter()
        .filter(|p| p.kind == PaymentKind::Refund)
        .map(|p| (p.amount.minor, p.idempotency_key.clone()))
        .collect();
    assert_eq!(
        refunds,
        [(500, format!("42-ord{}-refund-1", id.0)), (1500, format!("42-ord{}-refund-2", id.0))]
    );
    let kinds: Vec<String> = h
        .order(id)
        .history
        .iter()
        .map(|t| serde_json::to_value(t).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["created", "payment", "stock_committed", "fulfilment", "refund", "refund"]);
}

#[test]
fn a_merchant_cancels_a_pending_order_and_the_provider_is_told_to_void_it() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1000, 10)]);
    h.add("ana", "TEE-M", 2);
    let id = h.checkout("ana", "k", "tok_authorizeThenCapture").order_id();
    h.input(Input::PaymentResult { order: id, outcome: PaymentOutcome::Authorized });
    assert_eq!(h.variant("TEE-M").on_hand, 8, "authorized: committed");
    assert!(
        h.post(&merchant(), &format!("/orders/{}/cancel", id.0), json!({ "reason": "fraud_suspected" })).ok()
    );
    assert_eq!(h.variant("TEE-M").on_hand, 10, "back on the shelf");
    let void = h.payments.last().unwrap();
    assert_eq!(
        (void.kind, void.idempotency_key.as_str()),
        (PaymentKind::Cancel, format!("42-ord{}-cancel", id.0).as_str())
    );
    // The capture races the void: the money is given back.
    h.input(Input::PaymentResult { order: id, outcome: PaymentOutcome::Paid });
    assert_eq!(h.payments.last().unwrap().kind, PaymentKind::Refund);
    assert_eq!(h.order(id).payment, PaymentState::Cancelled);
    assert_eq!(
        h.checkout("ana", "k", "tok_authorizeThenCapture").status,
        201,
        "the buyer's key had its answer at authorization"
    );
}

#[test]
fn three_d_secure_keeps_the_key_in_flight_and_shows_where_to_act() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1000, 10)]);
    h.add("ana", "TEE-M", 1);
    let id = h.checkout("ana", "k", "tok_threeDSecureRequired").order_id();
    h.pay();
    let order = h.get(&viewer("ana"), &format!("/orders/{}", id.0));
    assert_eq!(order.json["order"]["payment"], "requires_action");
    assert!(
        order.json["order"]["action_url"].as_str().unwrap().starts_with("https://test-provider.invalid/3ds/")
    );
    assert_eq!(h.checkout("ana", "k", "tok_threeDSecureRequired").code(), "idempotency_key_in_flight");
    h.input(Input::PaymentResult { order: id, outcome: PaymentOutcome::Paid });
    assert_eq!(h.checkout("ana", "k", "tok_threeDSecureRequired").status, 201);
}

#[test]
fn webhooks_retry_on_the_schedule_then_become_dead_letters_that_can_be_replayed() {
    let mut h = Host::new();
    h.endpoint("https://merchant.example/hooks");
    h.product("tee", &[("TEE-M", 1000, 10)]);
    h.add("ana", "TEE-M", 1);
    h.checkout("ana", "k", "tok_visa");
    assert_eq!(h.outgoing.len(), 1, "order.created, handed out after its event committed");
    let event_id = h.outgoing[0].event_id.clone();
    let mut waits = Vec::new();
    for status in [Some(500), None, Some(429), Some(503), Some(502), Some(500), Some(500), Some(500)] {
        h.answer_deliveries(status);
        match h.shop.state().outbox.values().next() {
            Some(d) => {
                let wait = d.next_attempt_at - h.now;
                waits.push(wait);
                h.run_for(wait);
            }
            None => break,
        }
    }
    assert_eq!(waits, [5 * SECOND, 5 * MINUTE, 30 * MINUTE, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR]);
    let attempts: Vec<&String> =
        h.sent.iter().filter(|s| s.event_type == "order.created").map(|s| &s.event_id).collect();
    assert_eq!(attempts.len(), 8);
    assert!(attempts.iter().all(|id| **id == event_id), "every attempt is the same event");
    assert!(h.shop.state().outbox.is_empty());
    let dead = h.get(&merchant(), "/webhooks/dead-letters");
    let dead_id = dead.json["dead_letters"][0]["id"].as_u64().unwrap();
    assert_eq!(dead.json["dead_letters"][0]["attempts"], 8);
    let r = h.post(&merchant(), &format!("/webhooks/dead-letters/{dead_id}/replay"), json!({}));
    assert!(r.ok(), "{}", r.json);
    assert_eq!(h.outgoing.len(), 1, "sent again at once");
    h.answer_deliveries(Some(204));
    assert!(h.shop.state().outbox.is_empty() && h.shop.state().dead_letters.is_empty());
}

#[test]
fn a_410_disables_the_endpoint_and_replaying_to_it_waits_for_it_to_be_enabled() {
    let mut h = Host::new();
    let id = h.endpoint("https://merchant.example/hooks");
    h.product("tee", &[("TEE-M", 1000, 10)]);
    h.add("ana", "TEE-M", 1);
    h.checkout("ana", "k", "tok_visa");
    h.answer_deliveries(Some(410));
    let e = &h.shop.state().endpoints.values().next().unwrap();
    assert!(!e.enabled);
    h.pay();
    assert!(h.outgoing.is_empty(), "nothing more goes to a gone endpoint");
    let dead = h.shop.state().dead_letters.keys().next().unwrap().0;
    let replay = format!("/webhooks/dead-letters/{dead}/replay");
    assert_eq!(h.post(&merchant(), &replay, json!({})).code(), "endpoint_disabled");
    assert!(h.put(&merchant(), &format!("/webhooks/endpoints/{id}"), json!({ "enabled": true })).ok());
    assert!(h.post(&merchant(), &replay, json!({})).ok());
    assert_eq!(h.outgoing[0].event_type, "order.created");
}

#[test]
fn a_delivery_nobody_answers_times_out_and_is_retried() {
    let mut h = Host::new();
    h.endpoint("https://merchant.example/hooks");
    h.product("tee", &[("TEE-M", 1000, 10)]);
    h.add("ana", "TEE-M", 1);
    h.checkout("ana", "k", "tok_visa");
    h.outgoing.clear(); // lost
    h.run_for(MINUTE + 5 * SECOND);
    assert_eq!(h.sent.len(), 2, "retried 5 s after the 60 s timeout");
}

#[test]
fn merchant_updates_are_applied_once_per_event_id() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 1000, 10)]);
    let update =
        json!({ "event_id": "evt-77", "update": { "type": "stock.adjust", "sku": "TEE-M", "delta": -3 } });
    let r = h.post(&merchant(), "/merchant/events", update.clone());
    assert!(r.ok(), "{}", r.json);
    assert_eq!(h.variant("TEE-M").on_hand, 7);
    let r = h.post(&merchant(), "/merchant/events", update.clone());
    assert_eq!((r.status, r.code()), (409, "duplicate_event"));
    assert_eq!(h.variant("TEE-M").on_hand, 7, "not twice");
    let upsert = json!({ "event_id": "evt-78", "update": { "type": "product.upsert", "product_id": "cap", "product": { "title": "Cap", "variants": [{ "sku": "CAP", "price": eur(1500), "stock": 4 }] } } });
    assert!(h.post(&merchant(), "/merchant/events", upsert).ok());
    assert_eq!(h.variant("CAP").on_hand, 4);
    let bad = json!({ "event_id": "evt-79", "update": { "type": "stock.set", "sku": "NOPE", "on_hand": 1 } });
    assert_eq!(h.post(&merchant(), "/merchant/events", bad.clone()).code(), "unknown_sku");
    assert!(!h.shop.state().inbound.contains_key("evt-79"), "a refused update is not marked applied");
    // After a week the id is forgotten.
    h.run_for(8 * DAY);
    assert!(h.shop.state().inbound.is_empty());
}

#[test]
fn inventory_low_and_sold_out_are_sent_once_per_crossing() {
    let mut h = Host::new();
    h.endpoint("https://merchant.example/hooks");
    h.product("tee", &[("TEE-M", 1000, 7)]);
    for (i, buyer) in ["a", "b", "c", "d", "e", "f", "g"].into_iter().enumerate() {
        h.add(buyer, "TEE-M", 1);
        h.checkout(buyer, &format!("k{i}"), "tok_visa");
        h.pay();
    }
    let types = h.sent_types();
    assert_eq!(types.iter().filter(|t| *t == "inventory.low").count(), 1);
    assert_eq!(types.iter().filter(|t| *t == "inventory.sold_out").count(), 1);
    let sold_out = h.sent.iter().find(|s| s.event_type == "inventory.sold_out").unwrap();
    assert_eq!(sold_out.payload["data"]["sku"], "TEE-M");
    h.put(&merchant(), "/skus/TEE-M/stock", json!({ "on_hand": 20 }));
    h.put(&merchant(), "/skus/TEE-M/stock", json!({ "on_hand": 0 }));
    assert_eq!(h.sent_types().iter().filter(|t| *t == "inventory.sold_out").count(), 2, "a new crossing");
}

#[test]
fn storage_is_meta_snapshot_and_log_and_a_revived_shop_is_the_same_shop() {
    let mut h = Host::new();
    h.endpoint("https://merchant.example/hooks");
    h.product("tee", &[("TEE-M", 1000, 1_000)]);
    for i in 0..150 {
        let buyer = format!("b{i}");
        h.add(&buyer, "TEE-M", 1);
        h.checkout(&buyer, "k", if i % 3 == 0 { "tok_chargeDeclined" } else { "tok_visa" });
        h.pay();
        h.answer_deliveries(Some(200));
        h.advance(SECOND);
    }
    assert!(h.store.contains_key("meta") && h.store.contains_key("snapshot"));
    let logs = h.store.keys().filter(|k| k.starts_with("log/")).count() as u64;
    assert!(logs < liveshop_shop::SNAPSHOT_EVERY, "compaction deleted the log the snapshot covers: {logs}");
    let restored = h.restored();
    assert_eq!(restored.state(), h.shop.state());
    assert_eq!(restored.seq(), h.shop.seq());
    assert_eq!(restored.epoch().0, 42, "the first epoch is kept");
}

#[test]
fn a_ten_minute_flash_sale_with_hundreds_of_buyers_runs_in_milliseconds() {
    let clock = std::time::Instant::now();
    let mut h = Host::new();
    h.endpoint("https://merchant.example/hooks");
    h.product("sneaker", &[("SNK", 12_000, 500)]);
    let deal = json!({ "sku": "SNK", "duration_secs": 600, "discount": { "percent": "40" }, "quantity_cap": 300, "per_buyer_cap": 2 });
    assert_eq!(h.post(&merchant(), "/deals", deal).status, 201);
    let tokens = [
        "tok_visa",
        "tok_visa",
        "tok_visa",
        "tok_mastercard",
        "tok_chargeDeclined",
        "tok_pending",
        "tok_threeDSecureRequired",
    ];
    for i in 0..400u32 {
        h.advance(1_500); // 400 buyers over ten minutes
        let buyer = format!("viewer-{i}");
        if !h.add(&buyer, "SNK", 1 + i % 3).ok() {
            continue;
        }
        let key = format!("key-{i}");
        let token = tokens[i as usize % tokens.len()];
        let r = h.checkout(&buyer, &key, token);
        if i % 5 == 0 {
            h.checkout(&buyer, &key, token); // an impatient double tap
        }
        if r.ok() {
            h.pay();
        }
        h.answer_deliveries(Some(200));
    }
    h.run_for(20 * MINUTE);
    let s = h.shop.state();
    let sold: u32 = s
        .orders
        .values()
        .filter(|o| o.payment.is_settled())
        .flat_map(|o| o.priced.lines.iter())
        .map(|l| l.quantity)
        .sum();
    let v = h.variant("SNK");
    assert_eq!((v.on_hand, v.reserved), (500 - sold, 0), "every unpaid reservation came back");
    assert!(sold > 300 && sold <= 500, "sold {sold}");
    let d = s.deals.values().next().unwrap();
    assert!(d.ended && d.taken <= 300);
    for buyer in s.buyer_orders.keys() {
        assert!(s.buyer_deal_units(buyer, None, d.id) <= 2, "{buyer} got more than two at the deal price");
    }
    let charges = h.payments.iter().filter(|p| p.kind == PaymentKind::Charge).count();
    assert_eq!(charges, s.orders.len(), "one charge per order, double taps included");
    assert!(h.sent_types().contains(&"flash_deal.ended".to_string()));
    let elapsed = clock.elapsed();
    eprintln!(
        "a 10-minute sale, 400 buyers, {} orders, {} events: {elapsed:?}",
        s.orders.len(),
        h.shop.seq().0
    );
    assert!(elapsed < std::time::Duration::from_secs(20), "{elapsed:?}");
}

#[test]
fn live_clients_see_price_stock_and_deal_changes_only_when_they_change() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 2000, 3)]);
    let full: serde_json::Value = serde_json::from_str(&h.shop.live_snapshot(h.now)).unwrap();
    assert_eq!(full["full"], true);
    assert_eq!(full["products"][0]["variants"][0]["available"], 3);
    h.live.clear();
    // Browsing changes nothing anyone sees: no frame.
    h.request(None, "GET", "/catalog", &[], "");
    h.add("ana", "TEE-M", 2);
    assert!(h.live.is_empty(), "{:?}", h.live);
    // A checkout reserves stock: "1 left" goes out.
    h.checkout("ana", "k", "tok_visa");
    let last = h.live.last().expect("a frame for the reservation").clone();
    assert_eq!(
        (last["full"].clone(), last["products"][0]["variants"][0]["available"].clone()),
        (json!(false), json!(1))
    );
    let deal = json!({ "sku": "TEE-M", "duration_secs": 60, "discount": { "percent": "50" }, "quantity_cap": 1, "per_buyer_cap": 1 });
    h.post(&merchant(), "/deals", deal);
    let last = h.live.last().unwrap().clone();
    assert_eq!(last["products"][0]["variants"][0]["deal"]["price"], eur(1000));
    assert_eq!(last["products"][0]["variants"][0]["deal"]["ends_at"], h.now + MINUTE);
    h.run_for(MINUTE);
    let last = h.live.last().unwrap().clone();
    assert!(last["products"][0]["variants"][0].get("deal").is_none(), "the deal ended: {last}");
    h.delete(&merchant(), "/products/tee");
    assert_eq!(h.live.last().unwrap()["removed"], json!(["tee"]));
}

/// A shop that captures on fulfilment, with an endpoint for every webhook and one tee in stock 10.
fn capturing_shop() -> Host {
    let mut h = Host::new();
    h.endpoint("https://merchant.example/hooks");
    h.product("tee", &[("TEE-M", 1000, 10)]);
    assert_eq!(h.get(&merchant(), "/settings").json["capture"], "automatic", "the default");
    let r = h.put(&merchant(), "/settings", json!({ "capture": "on_fulfilment" }));
    assert_eq!((r.status, &r.json["capture"]), (200, &json!("on_fulfilment")));
    assert_eq!(h.put(&merchant(), "/settings", json!({ "capture": "later" })).code(), "invalid_argument");
    h
}

/// Checks out `buyer` (2 tees with `tok_visa`) and lets the provider authorize it.
fn authorized_order(h: &mut Host, buyer: &str) -> liveshop_shop::OrderId {
    h.add(buyer, "TEE-M", 2);
    let id = h.checkout(buyer, "k", "tok_visa").order_id();
    let charge = h.payments.last().unwrap();
    assert_eq!((charge.kind, charge.capture), (PaymentKind::Charge, Capture::Manual));
    h.pay();
    assert_eq!(h.order(id).payment, PaymentState::Authorized);
    id
}

#[test]
fn capture_on_fulfilment_authorizes_at_checkout_and_captures_when_the_merchant_fulfils() {
    let mut h = capturing_shop();
    let id = authorized_order(&mut h, "ana");
    let path = |what: &str| format!("/orders/{}/{what}", id.0);
    assert_eq!(h.variant("TEE-M").on_hand, 8, "authorized: the stock is committed");
    assert_eq!(h.checkout("ana", "k", "tok_visa").status, 201, "the buyer's key has its answer");
    assert_eq!(h.post(&merchant(), &path("refund"), json!({})).code(), "invalid_transition");
    assert!(!h.sent_types().contains(&"order.paid".to_string()), "not paid yet");

    let r = h.post(&merchant(), &path("fulfil"), json!({}));
    assert_eq!(r.status, 202, "{}", r.json);
    assert_eq!(r.json["order"]["payment"], "authorized");
    assert_eq!(
        (&r.json["order"]["capture_state"], &r.json["order"]["fulfilment"]),
        (&json!("requested"), &json!("unfulfilled"))
    );
    let capture = h.payments.last().unwrap().clone();
    assert_eq!(capture.kind, PaymentKind::Capture);
    assert_eq!((capture.amount.minor, capture.method.as_deref()), (2000, None));
    assert_eq!(capture.idempotency_key, format!("42-ord{}-capture", id.0));
    // Fulfilling again while the capture is out repeats the same request.
    assert_eq!(h.post(&merchant(), &path("fulfil"), json!({})).status, 202);
    assert_eq!(h.payments.last().unwrap(), &capture);
    assert_eq!(h.order(id).capture_attempts, 1);

    h.pay(); // both captures answer paid; the second report is a duplicate
    let order = h.order(id);
    assert_eq!((order.payment, order.fulfilment), (PaymentState::Paid, FulfilmentState::Fulfilled));
    assert_eq!(order.capture_state, Some(CaptureState::Captured));
    assert_eq!(h.variant("TEE-M").on_hand, 8, "committed once");
    let types = h.sent_types();
    let at = |t: &str| types.iter().position(|s| s == t).unwrap_or_else(|| panic!("no {t} in {types:?}"));
    assert!(at("order.paid") < at("order.fulfilled"));
    assert_eq!(types.iter().filter(|t| *t == "order.paid").count(), 1);
    assert_eq!(h.post(&merchant(), &path("fulfil"), json!({})).code(), "invalid_transition");
    assert!(h.post(&merchant(), &path("refund"), json!({})).ok(), "captured money can be refunded");
    let kinds: Vec<String> = h
        .order(id)
        .history
        .iter()
        .map(|t| serde_json::to_value(t).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["created", "payment", "stock_committed", "capture", "payment", "capture", "fulfilment", "refund"]
    );

    // The setting changes new checkouts only; the default charges capture at once.
    assert!(h.put(&merchant(), "/settings", json!({ "capture": "automatic" })).ok());
    h.add("bob", "TEE-M", 1);
    let bob = h.checkout("bob", "k", "tok_visa").order_id();
    assert_eq!(h.payments.last().unwrap().capture, Capture::Automatic);
    h.pay();
    assert_eq!(h.order(bob).payment, PaymentState::Paid);
    assert_eq!(h.post(&merchant(), &format!("/orders/{}/fulfil", bob.0), json!({})).status, 200);
}

#[test]
fn a_requested_capture_is_asked_again_after_a_revival_under_the_same_key() {
    let mut h = capturing_shop();
    let id = authorized_order(&mut h, "ana");
    assert_eq!(h.post(&merchant(), &format!("/orders/{}/fulfil", id.0), json!({})).status, 202);
    h.add("bob", "TEE-M", 1);
    let bob = h.checkout("bob", "k", "tok_pending").order_id();
    let asked: Vec<_> = std::mem::take(&mut h.unpaid); // the host crashed before calling the provider
    h.revive();
    assert_eq!(h.restored().state(), h.shop.state());
    let pending = h.shop.pending_payments();
    assert_eq!(pending, asked, "the capture and the open charge, as first asked");
    assert_eq!(pending[0].idempotency_key, format!("42-ord{}-capture", id.0));
    assert_eq!((pending[1].order, pending[1].capture), (bob, Capture::Manual));
    h.unpaid = pending;
    h.pay();
    let order = h.order(id);
    assert_eq!((order.payment, order.fulfilment), (PaymentState::Paid, FulfilmentState::Fulfilled));
    assert_eq!(h.order(bob).payment, PaymentState::Pending, "tok_pending stays pending");
    assert_eq!(h.shop.pending_payments().len(), 1, "only bob's charge is still open");

    // Shops and orders stored before the setting existed read as automatic capture.
    let mut old = serde_json::to_value(h.shop.state()).unwrap();
    old["settings"].as_object_mut().unwrap().remove("capture");
    let old: liveshop_shop::state::ShopState = serde_json::from_value(old).unwrap();
    assert_eq!(old.settings.capture, liveshop_shop::state::CaptureMode::Automatic);
    assert_eq!(old.orders[&bob].capture, Capture::Manual);
    let mut order = serde_json::to_value(&h.shop.state().orders[&bob]).unwrap();
    order.as_object_mut().unwrap().remove("capture");
    let order: liveshop_shop::orders::Order = serde_json::from_value(order).unwrap();
    assert_eq!((order.capture, order.capture_state, order.capture_attempts), (Capture::Automatic, None, 0));
}

#[test]
fn a_failed_capture_leaves_the_order_authorized_to_capture_again_or_to_cancel() {
    let mut h = capturing_shop();
    let id = authorized_order(&mut h, "ana");
    let path = |what: &str| format!("/orders/{}/{what}", id.0);
    assert_eq!(h.post(&merchant(), &path("fulfil"), json!({})).status, 202);
    h.unpaid.clear();
    let declined = PaymentOutcome::Failed { reason: "card_declined".into() };
    h.input(Input::PaymentResult { order: id, outcome: declined.clone() });
    let order = h.order(id).clone();
    assert_eq!((order.payment, order.fulfilment), (PaymentState::Authorized, FulfilmentState::Unfulfilled));
    assert_eq!(order.capture_state, Some(CaptureState::Failed));
    assert_eq!(order.payment_reason.as_deref(), Some("card_declined"));
    assert_eq!((order.hold, h.variant("TEE-M").on_hand), (StockHold::Committed, 8), "still held");
    assert_eq!(h.sent_types().last().map(String::as_str), Some("order.payment_failed"));
    h.input(Input::PaymentResult { order: id, outcome: declined });
    assert_eq!(h.order(id), &order, "a repeated failure changes nothing");
    assert!(h.shop.pending_payments().is_empty(), "a failed capture waits for the merchant");

    // Fulfil again: a new attempt, with a key of its own (the first would replay its failure).
    assert_eq!(h.post(&merchant(), &path("fulfil"), json!({})).status, 202);
    assert_eq!(h.payments.last().unwrap().idempotency_key, format!("42-ord{}-capture-2", id.0));
    h.pay();
    let order = h.order(id);
    assert_eq!((order.payment, order.fulfilment), (PaymentState::Paid, FulfilmentState::Fulfilled));
    assert_eq!(order.payment_reason, None, "the failure no longer applies");

    // Or give up: cancelling a failed capture's order voids the authorization.
    let bob = authorized_order(&mut h, "bob");
    assert_eq!(h.post(&merchant(), &format!("/orders/{}/fulfil", bob.0), json!({})).status, 202);
    h.unpaid.clear();
    h.input(Input::PaymentResult {
        order: bob,
        outcome: PaymentOutcome::Failed { reason: "expired".into() },
    });
    assert!(h.post(&merchant(), &format!("/orders/{}/cancel", bob.0), json!({})).ok());
    let void = h.payments.last().unwrap();
    assert_eq!(
        (void.kind, void.idempotency_key.clone()),
        (PaymentKind::Cancel, format!("42-ord{}-cancel", bob.0))
    );
    assert_eq!(h.order(bob).payment, PaymentState::Cancelled);
    assert_eq!(h.variant("TEE-M").on_hand, 8, "bob's two are back on the shelf");
}

#[test]
fn cancelling_an_authorized_order_voids_it_and_a_capture_that_raced_the_void_is_refunded() {
    let mut h = capturing_shop();
    let id = authorized_order(&mut h, "ana");
    assert!(h.post(&merchant(), &format!("/orders/{}/cancel", id.0), json!({})).ok());
    let void = h.payments.last().unwrap();
    assert_eq!((void.kind, void.amount.minor, void.capture), (PaymentKind::Cancel, 2000, Capture::Automatic));
    assert_eq!((h.order(id).payment, h.variant("TEE-M").on_hand), (PaymentState::Cancelled, 10));
    assert_eq!(
        h.post(&merchant(), &format!("/orders/{}/fulfil", id.0), json!({})).code(),
        "invalid_transition"
    );

    // A capture still out when the merchant cancels: if the provider took the money, it goes back.
    let bob = authorized_order(&mut h, "bob");
    assert_eq!(h.post(&merchant(), &format!("/orders/{}/fulfil", bob.0), json!({})).status, 202);
    assert!(h.post(&merchant(), &format!("/orders/{}/cancel", bob.0), json!({})).ok());
    assert!(h.shop.pending_payments().is_empty(), "a cancelled order's capture is not asked again");
    h.pay();
    let refund = h.payments.last().unwrap();
    assert_eq!(
        (refund.kind, refund.idempotency_key.clone()),
        (PaymentKind::Refund, format!("42-ord{}-refund-all", bob.0))
    );
    let order = h.order(bob);
    assert_eq!((order.payment, order.fulfilment), (PaymentState::Cancelled, FulfilmentState::Unfulfilled));
}

/// A guest as a host verifies one: a subject from `POST /guest` and its device.
fn guest(subject: &str, device: &str) -> liveshop_shop::Identity {
    liveshop_shop::Identity { device: Some(device.into()), ..viewer(subject) }
}

#[test]
fn a_deal_per_buyer_cap_holds_per_guest_device_whatever_its_subjects() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 2000, 100)]);
    let deal = json!({ "sku": "TEE-M", "duration_secs": 600, "discount": { "percent": "50" }, "quantity_cap": 20, "per_buyer_cap": 1 });
    assert_eq!(h.post(&merchant(), "/deals", deal).status, 201);
    for (i, subject) in ["g1", "g2", "g3"].into_iter().enumerate() {
        let who = guest(subject, "phone");
        let cart = h.post(&who, &format!("/carts/{subject}/items"), json!({ "sku": "TEE-M", "quantity": 1 }));
        let price = if i == 0 { eur(1000) } else { eur(2000) };
        assert_eq!(cart.json["quote"]["total"], price, "{subject}: {}", cart.json);
        let body = json!({ "payment_method": "tok_visa" }).to_string();
        let r = h.request(Some(&who), "POST", "/checkout", &[("Idempotency-Key", "k")], &body);
        assert!(r.status < 300, "{}", r.json);
        h.pay();
    }
    // Another device is another buyer; the deal counts one unit for the phone, after a revival too.
    h.revive();
    let laptop = guest("g4", "laptop");
    let cart = h.post(&laptop, "/carts/g4/items", json!({ "sku": "TEE-M", "quantity": 1 }));
    assert_eq!(cart.json["quote"]["total"], eur(1000));
    assert_eq!(h.shop.state().deals.values().next().unwrap().taken, 1);
}

#[test]
fn a_verified_buyers_only_deal_refuses_guests_at_cart_and_checkout() {
    let mut h = Host::new();
    h.product("tee", &[("TEE-M", 2000, 100)]);
    // In the cart before the deal starts: the checkout refuses it once the deal runs.
    let early = guest("g1", "phone");
    assert!(h.post(&early, "/carts/g1/items", json!({ "sku": "TEE-M", "quantity": 1 })).ok());
    let deal = json!({ "sku": "TEE-M", "duration_secs": 600, "discount": { "percent": "50" }, "quantity_cap": 20, "per_buyer_cap": 1, "verified_buyers_only": true });
    let created = h.post(&merchant(), "/deals", deal);
    assert_eq!(created.json["verified_buyers_only"], true);
    let body = json!({ "payment_method": "tok_visa" }).to_string();
    let r = h.request(Some(&early), "POST", "/checkout", &[("Idempotency-Key", "k")], &body);
    assert_eq!((r.status, r.code()), (403, "verified_buyer_required"));
    let r = h.post(&guest("g2", "laptop"), "/carts/g2/items", json!({ "sku": "TEE-M", "quantity": 1 }));
    assert_eq!((r.status, r.code()), (403, "verified_buyer_required"));
    // A token the platform or merchant minted (no device) is a verified buyer.
    assert_eq!(h.add("ana", "TEE-M", 1).json["quote"]["total"], eur(1000));

    // Kept on for the replay, the deal is still not for guests.
    h.product("cap", &[("CAP", 1000, 100)]);
    let kept = json!({ "sku": "CAP", "duration_secs": 60, "discount": { "percent": "50" }, "quantity_cap": 20, "per_buyer_cap": 1, "verified_buyers_only": true, "replay_secs": 3600 });
    assert_eq!(h.post(&merchant(), "/deals", kept).status, 201);
    h.run_for(2 * MINUTE);
    let on_replay = json!({ "sku": "CAP", "quantity": 1, "replay": true });
    let r = h.post(&guest("g3", "tablet"), "/carts/g3/items", on_replay.clone());
    assert_eq!((r.status, r.code()), (403, "verified_buyer_required"));
    assert_eq!(h.post(&viewer("bea"), "/carts/bea/items", on_replay).json["quote"]["total"], eur(500));
}
