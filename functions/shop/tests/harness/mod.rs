//! A host in miniature for tests: applies the shop's outputs to an in-memory store and one alarm,
//! keeps the payments and webhook deliveries the shop asked for, and answers payments with the
//! test provider when told to, exactly as a real host must.

#![allow(dead_code)]

use std::collections::BTreeMap;

use liveshop_shop::{
    DeliveryId, Epoch, Identity, Input, Millis, OrderId, Output, PaymentKind, PaymentRequest, Role, Shop,
    Write, outbox::DeliveryRequest, test_provider,
};
use serde_json::{Value, json};

pub const START: Millis = 1_700_000_000_000;

/// One answer to a request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub json: Value,
    pub raw: Vec<u8>,
}

impl Reply {
    /// The error code of a refusal (panics on success).
    pub fn code(&self) -> &str {
        self.json["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error, got {} {}", self.status, self.json))
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn order_id(&self) -> OrderId {
        OrderId(self.json["order"]["id"].as_u64().unwrap_or_else(|| panic!("no order in {}", self.json)))
    }
}

/// A webhook the shop asked the host to deliver.
#[derive(Debug, Clone)]
pub struct Sent {
    pub delivery_id: DeliveryId,
    pub url: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: Value,
}

pub struct Host {
    pub shop: Shop,
    pub store: BTreeMap<String, Vec<u8>>,
    pub now: Millis,
    pub alarm: Option<Millis>,
    /// Every payment request, in order.
    pub payments: Vec<PaymentRequest>,
    /// Every live frame the shop broadcast, decoded.
    pub live: Vec<Value>,
    /// Charges and captures not yet answered by [`Host::pay`].
    pub unpaid: Vec<PaymentRequest>,
    /// Deliveries handed out and not yet answered.
    pub outgoing: Vec<Sent>,
    /// Every delivery attempt, in order.
    pub sent: Vec<Sent>,
}

pub fn merchant() -> Identity {
    Identity::new("acme", Role::Merchant)
}

pub fn viewer(name: &str) -> Identity {
    Identity::new(name, Role::Viewer)
}

pub fn eur(minor: i64) -> Value {
    json!({ "minor": minor, "currency": "EUR" })
}

impl Host {
    pub fn new() -> Host {
        Host {
            shop: Shop::restore(Vec::new(), Epoch(42)).unwrap(),
            store: BTreeMap::new(),
            now: START,
            alarm: None,
            payments: Vec::new(),
            live: Vec::new(),
            unpaid: Vec::new(),
            outgoing: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Drops the shop from memory and revives it from storage, as hibernation or a crash
    /// followed by a restart does. Deliveries in flight are forgotten by both sides.
    pub fn revive(&mut self) {
        let records = self.store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.shop = Shop::restore(records, Epoch(999)).unwrap();
        self.outgoing.clear();
    }

    /// A fresh shop restored from what is stored now (the live one is left alone).
    pub fn restored(&self) -> Shop {
        let records = self.store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Shop::restore(records, Epoch(1)).unwrap()
    }

    pub fn input(&mut self, input: Input) -> Option<Reply> {
        self.shop.handle(self.now, input);
        self.drain()
    }

    pub fn drain(&mut self) -> Option<Reply> {
        let mut reply = None;
        while let Some(out) = self.shop.poll_output() {
            match out {
                Output::Store(Write::Put { key, value }) => {
                    self.store.insert(key, value);
                }
                Output::Store(Write::Delete { key }) => {
                    self.store.remove(&key);
                }
                Output::SetAlarm(at) => self.alarm = at,
                Output::Reply { status, body, content_type } => {
                    assert_eq!(content_type, "application/json");
                    let json = serde_json::from_slice(&body).unwrap();
                    reply = Some(Reply { status, json, raw: body });
                }
                Output::Payment(req) => {
                    if matches!(req.kind, PaymentKind::Charge | PaymentKind::Capture) {
                        self.unpaid.push(req.clone());
                    }
                    self.payments.push(req);
                }
                Output::Deliver(DeliveryRequest {
                    delivery_id,
                    endpoint_url,
                    event_id,
                    event_type,
                    payload,
                    ..
                }) => {
                    let sent = Sent {
                        delivery_id,
                        url: endpoint_url,
                        event_id,
                        event_type,
                        payload: serde_json::from_str(&payload).unwrap(),
                    };
                    self.sent.push(sent.clone());
                    self.outgoing.push(sent);
                }
                Output::Broadcast { frame } => self.live.push(serde_json::from_str(&frame).unwrap()),
            }
        }
        reply
    }

    pub fn request(
        &mut self,
        who: Option<&Identity>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let input = Input::Request {
            who: who.cloned(),
            method: method.into(),
            path: path.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.as_bytes().to_vec(),
        };
        self.input(input).expect("every request is answered")
    }

    pub fn get(&mut self, who: &Identity, path: &str) -> Reply {
        self.request(Some(who), "GET", path, &[], "")
    }

    pub fn post(&mut self, who: &Identity, path: &str, body: Value) -> Reply {
        self.request(Some(who), "POST", path, &[], &body.to_string())
    }

    pub fn put(&mut self, who: &Identity, path: &str, body: Value) -> Reply {
        self.request(Some(who), "PUT", path, &[], &body.to_string())
    }

    pub fn delete(&mut self, who: &Identity, path: &str) -> Reply {
        self.request(Some(who), "DELETE", path, &[], "")
    }

    /// A product with one variant per `(sku, price, stock)`.
    pub fn product(&mut self, id: &str, variants: &[(&str, i64, u32)]) -> Reply {
        let variants: Vec<Value> = variants
            .iter()
            .map(|(sku, price, stock)| json!({ "sku": sku, "price": eur(*price), "stock": stock }))
            .collect();
        let r =
            self.put(&merchant(), &format!("/products/{id}"), json!({ "title": id, "variants": variants }));
        assert_eq!(r.status, 200, "{}", r.json);
        r
    }

    pub fn add(&mut self, buyer: &str, sku: &str, quantity: u32) -> Reply {
        self.post(
            &viewer(buyer),
            &format!("/carts/{buyer}/items"),
            json!({ "sku": sku, "quantity": quantity }),
        )
    }

    pub fn checkout(&mut self, buyer: &str, key: &str, token: &str) -> Reply {
        let body = json!({ "payment_method": token }).to_string();
        self.request(Some(&viewer(buyer)), "POST", "/checkout", &[("Idempotency-Key", key)], &body)
    }

    /// Answers every unanswered charge and capture as the test provider would.
    pub fn pay(&mut self) {
        for req in std::mem::take(&mut self.unpaid) {
            for outcome in test_provider::respond(&req) {
                self.input(Input::PaymentResult { order: req.order, outcome });
            }
        }
    }

    /// Answers every delivery handed out with `status`.
    pub fn answer_deliveries(&mut self, status: Option<u16>) {
        for s in std::mem::take(&mut self.outgoing) {
            self.input(Input::DeliveryResult { delivery_id: s.delivery_id, status });
        }
    }

    pub fn advance(&mut self, ms: Millis) {
        self.now += ms;
    }

    /// Moves time forward by `ms`, firing the alarm whenever it is due on the way.
    pub fn run_for(&mut self, ms: Millis) {
        let end = self.now + ms;
        while let Some(at) = self.alarm.filter(|at| *at <= end) {
            self.now = self.now.max(at);
            self.alarm = None;
            self.input(Input::Alarm);
        }
        self.now = end;
    }

    pub fn order(&self, id: OrderId) -> &liveshop_shop::orders::Order {
        &self.shop.state().orders[&id]
    }

    pub fn variant(&self, sku: &str) -> &liveshop_shop::catalog::Variant {
        &self.shop.state().variants[&sku.parse().unwrap()]
    }

    /// Adds an endpoint that wants every event type.
    pub fn endpoint(&mut self, url: &str) -> u64 {
        let r =
            self.post(&merchant(), "/webhooks/endpoints", json!({ "url": url, "secret_id": "whsec_test" }));
        assert_eq!(r.status, 201, "{}", r.json);
        r.json["id"].as_u64().unwrap()
    }

    pub fn sent_types(&self) -> Vec<String> {
        self.sent.iter().map(|s| s.event_type.clone()).collect()
    }
}
