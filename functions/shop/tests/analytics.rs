//! The sales side of a show's measures: what a request through a show's route counts for that
//! show (and nothing else does), paid once however the payment settles, refunds, deals; read by
//! staff only, and told to the merchant when the show ends.

mod harness;

use harness::{Host, eur, merchant, viewer};
use liveshop_identity::{Identity, Role};
use liveshop_shop::analytics::{SHOW_HEADER, ShowSales};
use serde_json::{Value, json};

/// A buyer's request through the show's route, as a host forwards it.
fn in_show(
    h: &mut Host,
    who: &Identity,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Value,
) -> harness::Reply {
    let mut headers = vec![(SHOW_HEADER, "spring")];
    headers.extend_from_slice(extra);
    h.request(Some(who), method, path, &headers, &body.to_string())
}

fn sales(h: &mut Host) -> ShowSales {
    let r = h.get(&merchant(), "/analytics/spring");
    assert_eq!(r.status, 200, "{}", r.json);
    serde_json::from_value(r.json["sales"].clone()).unwrap()
}

fn buy(h: &mut Host, buyer: &str, sku: &str, quantity: u32) {
    let who = viewer(buyer);
    let r = in_show(
        h,
        &who,
        "POST",
        &format!("/carts/{buyer}/items"),
        &[],
        json!({"sku": sku, "quantity": quantity}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let r = in_show(
        h,
        &who,
        "POST",
        "/checkout",
        &[("Idempotency-Key", buyer)],
        json!({"payment_method": "tok_visa"}),
    );
    assert!(r.ok(), "{}", r.json);
    h.pay();
}

#[test]
fn carts_checkouts_payments_and_refunds_count_for_the_show_they_came_through() {
    let mut h = Host::new();
    h.product("shirt", &[("SHIRT-M", 4990, 10)]);
    h.product("bag", &[("BAG", 12000, 10)]);
    buy(&mut h, "ana", "SHIRT-M", 2);
    // The same buyer without the show's route (the shop's own route) counts for no show.
    assert!(h.add("bob", "BAG", 1).ok());
    let r = h.checkout("bob", "k-bob", "tok_visa");
    assert!(r.ok());
    h.pay();
    // Lowering a cart line is no add to cart; raising it is.
    let cleo = viewer("cleo");
    for q in [3, 1, 2] {
        let path = "/carts/cleo/items/BAG";
        assert_eq!(in_show(&mut h, &cleo, "PUT", path, &[], json!({"quantity": q})).status, 200);
    }
    let ana_order = h.shop.state().orders.values().find(|o| o.buyer == "ana").unwrap().id;
    let refund = h.post(&merchant(), &format!("/orders/{}/refund", ana_order.0), json!({"amount": eur(990)}));
    assert!(refund.ok(), "{}", refund.json);

    let s = sales(&mut h);
    let t = s.totals();
    assert_eq!((t.orders_paid, t.units, t.refunds), (1, 2, 1));
    let read = h.get(&merchant(), "/analytics/spring");
    assert_eq!(
        (&read.json["buyers"], &read.json["sales"]["buyers"]),
        (&json!(1), &json!([])),
        "counted, not named"
    );
    // A show's host reads that show, not another one of the shop.
    let host = Identity::new("hana", Role::Host);
    assert_eq!(in_show(&mut h, &host, "GET", "/analytics/winter", &[], Value::Null).status, 403);
    assert_eq!(serde_json::to_value(&t.gmv).unwrap(), json!([eur(9980)]));
    assert_eq!(serde_json::to_value(&t.refunded).unwrap(), json!([eur(990)]));
    let products: Vec<(String, u64, u64, u64)> = s
        .slots
        .values()
        .flat_map(|slot| slot.products.iter())
        .map(|(id, p)| (id.as_str().to_string(), p.add_to_carts, p.checkouts, p.orders_paid))
        .collect();
    assert_eq!(products, [("bag".into(), 2, 0, 0), ("shirt".into(), 1, 1, 1)]);
}

#[test]
fn an_order_authorized_then_captured_counts_as_paid_once() {
    let mut h = Host::new();
    h.product("shirt", &[("SHIRT-M", 4990, 10)]);
    assert!(h.put(&merchant(), "/settings", json!({"capture": "on_fulfilment"})).ok());
    buy(&mut h, "ana", "SHIRT-M", 1);
    let order = h.shop.state().orders.values().next().unwrap().id;
    assert_eq!(sales(&mut h).totals().orders_paid, 1, "authorized: the money is secured");
    assert!(h.post(&merchant(), &format!("/orders/{}/fulfil", order.0), Value::Null).ok());
    h.pay();
    assert_eq!(h.order(order).payment, liveshop_shop::orders::PaymentState::Paid);
    assert_eq!(sales(&mut h).totals().orders_paid, 1, "captured: still one order");
}

#[test]
fn a_deal_made_in_a_show_marks_its_start_and_end_there() {
    let mut h = Host::new();
    h.product("shirt", &[("SHIRT-M", 4990, 10)]);
    let host = Identity::new("hana", Role::Host);
    let deal = json!({"sku": "SHIRT-M", "duration_secs": 60, "discount": {"percent": "10"}, "quantity_cap": 5, "per_buyer_cap": 1});
    let r = in_show(&mut h, &host, "POST", "/deals", &[], deal);
    assert_eq!(r.status, 201, "{}", r.json);
    h.run_for(61_000);
    let deals: Vec<(bool, String)> =
        sales(&mut h).deals.iter().map(|d| (d.started, d.product_id.as_str().to_string())).collect();
    assert_eq!(deals, [(true, "shirt".to_string()), (false, "shirt".to_string())]);
}

#[test]
fn sales_are_for_staff_and_the_report_ready_webhook_is_the_merchants_to_ask() {
    let mut h = Host::new();
    h.product("shirt", &[("SHIRT-M", 4990, 10)]);
    h.endpoint("https://merchant.example/hooks");
    buy(&mut h, "ana", "SHIRT-M", 1);
    assert_eq!(h.get(&viewer("ana"), "/analytics/spring").status, 403);
    assert_eq!(h.get(&Identity::new("hana", Role::Host), "/analytics/spring").status, 200);
    let body = json!({"report_url": "https://node.example/shows/spring/report", "analytics_url": "https://node.example/v1/shows/spring/analytics"});
    let host = Identity::new("hana", Role::Host);
    assert_eq!(h.post(&host, "/analytics/spring/report-ready", body.clone()).status, 403);
    let bad = h.post(
        &merchant(),
        "/analytics/spring/report-ready",
        json!({"report_url": "javascript:x", "analytics_url": "x"}),
    );
    assert_eq!(bad.code(), "invalid_argument");
    let r = h.post(&merchant(), "/analytics/spring/report-ready", body);
    assert_eq!(r.status, 202, "{}", r.json);
    h.run_for(1_000);
    let told = h.sent.iter().find(|s| s.event_type == "show.report_ready").expect("queued and sent");
    assert_eq!(told.payload["data"]["sales"]["gmv"], json!([eur(4990)]));
    assert_eq!(told.payload["data"]["show"], "spring");
}
