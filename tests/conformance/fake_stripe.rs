//! A local stand-in for Stripe's API: an axum server that answers as Stripe's API reference
//! documents (docs.stripe.com/api: PaymentIntents create, retrieve, capture and cancel, Refunds
//! create, errors, idempotent requests). It checks the bearer key ([`SECRET_KEY`]), the
//! `Stripe-Version` header and the form fields, replays its first answer for a repeated
//! `Idempotency-Key` (and refuses the key with other parameters), and answers the documented JSON
//! shapes. Stripe forgets a key after 24 hours; [`Fake::forget_keys`] stands in for that day.
//! **It proves a host speaks the documented protocol, not that Stripe answers as documented.**
//!
//! Which token leads to which answer is the fake's choice: Stripe's own test tokens where one
//! exists (`tok_visa`, `tok_chargeDeclinedInsufficientFunds`, `tok_threeDSecure2Required`), and
//! `tok_fake_*` where Stripe has none for a state a host must handle.
//!
//! Used by the conformance suite (both hosts) and by `edge/tests/stripe.rs` (the edge adapter).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The only API key the fake accepts.
pub const SECRET_KEY: &str = "sk_test_liveshop_fake";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: &'static str,
    pub path: String,
    pub key: Option<String>,
    pub form: HashMap<String, String>,
    pub replayed: bool,
}

#[derive(Default)]
pub struct FakeStripe {
    /// Idempotency-Key -> (path and body of the first request, its status and answer).
    pub saved: HashMap<String, (String, u16, Value)>,
    pub intents: HashMap<String, Value>,
    pub refunds: Vec<Value>,
    pub calls: Vec<Call>,
    /// Tokens whose first charge fails with a 500 before anything is created.
    pub failed_once: HashSet<String>,
    /// How many of the next retrievals fail with a 500.
    pub failing_reads: u32,
    pub next_id: u32,
}

impl FakeStripe {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_fake{}", self.next_id)
    }
}

pub type Shared = Arc<Mutex<FakeStripe>>;

fn error(status: u16, body: Value) -> (u16, Value) {
    (status, json!({ "error": body }))
}

fn invalid(param: &str, message: &str) -> (u16, Value) {
    error(
        400,
        json!({ "type": "invalid_request_error", "code": "parameter_invalid", "param": param, "message": message }),
    )
}

/// `application/x-www-form-urlencoded`, decoded as Stripe does (`+` is a space).
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    let body = std::str::from_utf8(body).unwrap();
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// What every endpoint does first: the API key, the version, the form, the idempotency layer.
fn handle(
    state: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    endpoint: impl FnOnce(&mut FakeStripe, &HashMap<String, String>) -> (u16, Value),
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let respond = |status: u16, body: &Value, replayed: bool| {
        let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(body.clone())).into_response();
        if replayed {
            r.headers_mut().insert("idempotent-replayed", "true".parse().unwrap());
        }
        r
    };
    if header("authorization").as_deref() != Some(&format!("Bearer {SECRET_KEY}")) {
        let (s, b) = error(
            401,
            json!({ "type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****" }),
        );
        return respond(s, &b, false);
    }
    assert_eq!(header("stripe-version").as_deref(), Some("2024-06-20"), "the API version is pinned");
    assert_eq!(header("content-type").as_deref(), Some("application/x-www-form-urlencoded"));
    let form = parse_form(body);
    let key = header("idempotency-key");
    let mut s = state.lock().unwrap();
    let fingerprint = format!("{path}?{}", String::from_utf8_lossy(body));
    if let Some(key) = &key
        && let Some((first, status, answer)) = s.saved.get(key).cloned()
    {
        s.calls.push(Call {
            method: "POST",
            path: path.into(),
            key: Some(key.clone()),
            form,
            replayed: true,
        });
        if first == fingerprint {
            return respond(status, &answer, true);
        }
        let (st, b) = error(
            400,
            json!({ "type": "idempotency_error",
                    "message": format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request.") }),
        );
        return respond(st, &b, false);
    }
    s.calls.push(Call {
        method: "POST",
        path: path.into(),
        key: key.clone(),
        form: form.clone(),
        replayed: false,
    });
    // A failure before the endpoint starts executing: Stripe saves no idempotent result for it.
    let token = form.get("payment_method_data[card][token]").cloned().unwrap_or_default();
    if token == "tok_fake_500_once" && s.failed_once.insert(token) {
        let (st, b) = error(500, json!({ "type": "api_error", "message": "An unknown error occurred" }));
        return respond(st, &b, false);
    }
    let (status, answer) = endpoint(&mut s, &form);
    if let Some(key) = key {
        s.saved.insert(key, (fingerprint, status, answer.clone()));
    }
    respond(status, &answer, false)
}

/// `GET /v1/payment_intents/{id}`: the intent as it is now, or 404 `resource_missing`. Reads take
/// no body and no idempotency key (one sent would be recorded, and the tests check for none).
fn retrieve_intent(state: &Shared, id: &str, headers: &HeaderMap) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let respond = |(status, body): (u16, Value)| {
        (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
    };
    if header("authorization").as_deref() != Some(&format!("Bearer {SECRET_KEY}")) {
        return respond(error(
            401,
            json!({ "type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****" }),
        ));
    }
    assert_eq!(header("stripe-version").as_deref(), Some("2024-06-20"), "the API version is pinned");
    let mut s = state.lock().unwrap();
    let path = format!("/v1/payment_intents/{id}");
    let key = header("idempotency-key");
    s.calls.push(Call { method: "GET", path, key, form: HashMap::new(), replayed: false });
    if s.failing_reads > 0 {
        s.failing_reads -= 1;
        return respond(error(500, json!({ "type": "api_error", "message": "An unknown error occurred" })));
    }
    match s.intents.get(id) {
        Some(intent) => respond((200, intent.clone())),
        None => respond(no_such_intent(id)),
    }
}

pub fn intent_json(id: &str, form: &HashMap<String, String>, status: &str, amount: i64) -> Value {
    let metadata: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_string(), Value::String(v.clone())))
        })
        .collect();
    json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": if status == "requires_capture" { amount } else { 0 },
        "amount_received": if status == "succeeded" { amount } else { 0 },
        "capture_method": form["capture_method"],
        "client_secret": format!("{id}_secret_fake"),
        "confirmation_method": "automatic",
        "currency": form["currency"],
        "livemode": false,
        "metadata": metadata,
        "next_action": null,
        "last_payment_error": null,
        "payment_method_types": ["card"],
        "status": status,
    })
}

fn create_intent(s: &mut FakeStripe, form: &HashMap<String, String>) -> (u16, Value) {
    for (field, expected) in [("confirm", "true"), ("payment_method_types[0]", "card")] {
        if form.get(field).map(String::as_str) != Some(expected) {
            return invalid(field, &format!("expected {field}={expected}"));
        }
    }
    // Stripe takes automatic_async too; liveshop sends one of these two.
    let manual = match form.get("capture_method").map(String::as_str) {
        Some("automatic") => false,
        Some("manual") => true,
        _ => return invalid("capture_method", "expected capture_method=automatic or manual"),
    };
    // A card that authorizes succeeds at once, or waits for its capture.
    let authorized = if manual { "requires_capture" } else { "succeeded" };
    let amount: i64 = match form.get("amount").and_then(|a| a.parse().ok()) {
        Some(a) if a > 0 => a,
        _ => return invalid("amount", "Invalid positive integer"),
    };
    match form.get("currency") {
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_lowercase()) => {}
        _ => return invalid("currency", "Invalid currency"),
    }
    for field in ["metadata[shop]", "metadata[order]", "metadata[payment_key]"] {
        if !form.contains_key(field) {
            return invalid(field, "liveshop always sends this metadata");
        }
    }
    let method = match (form.get("payment_method"), form.get("payment_method_data[type]")) {
        (Some(pm), None) => pm.clone(),
        (None, Some(kind)) if kind == "card" => match form.get("payment_method_data[card][token]") {
            Some(token) => token.clone(),
            None => return invalid("payment_method_data[card][token]", "Missing required param"),
        },
        _ => return invalid("payment_method", "Give exactly one of payment_method or payment_method_data"),
    };
    let id = s.id("pi");
    let decline = |code: &str, decline_code: Option<&str>, message: &str| {
        let mut e = json!({ "type": "card_error", "code": code, "message": message,
                            "doc_url": format!("https://stripe.com/docs/error-codes/{code}") });
        if let Some(d) = decline_code {
            e["decline_code"] = json!(d);
        }
        e
    };
    let (status, mut intent, failure) = match method.as_str() {
        "tok_visa" | "pm_card_visa" | "tok_fake_500_once" => {
            (200, intent_json(&id, form, authorized, amount), None)
        }
        // Stripe has no token for this with capture_method=automatic; the fake stands in for an
        // account or method that authorizes first.
        "tok_fake_requires_capture" => (200, intent_json(&id, form, "requires_capture", amount), None),
        "tok_fake_processing" => (200, intent_json(&id, form, "processing", amount), None),
        "tok_threeDSecure2Required" => {
            let mut pi = intent_json(&id, form, "requires_action", amount);
            pi["next_action"] = match form.get("return_url") {
                Some(back) => json!({ "type": "redirect_to_url", "redirect_to_url": {
                    "url": format!("https://hooks.stripe.com/3d_secure_2/hosted?payment_intent={id}"),
                    "return_url": back } }),
                None => {
                    json!({ "type": "use_stripe_sdk", "use_stripe_sdk": { "type": "stripe_3ds2_fingerprint" } })
                }
            };
            (200, pi, None)
        }
        "tok_chargeDeclinedInsufficientFunds" => (
            402,
            intent_json(&id, form, "requires_payment_method", amount),
            Some(decline("card_declined", Some("insufficient_funds"), "Your card has insufficient funds.")),
        ),
        "tok_fake_expired" => (
            402,
            intent_json(&id, form, "requires_payment_method", amount),
            Some(decline("expired_card", None, "Your card has expired.")),
        ),
        // The status an intent is left in when a confirmation failed later (after 3-D Secure):
        // a 200 whose last_payment_error says why.
        "tok_fake_failed_after_action" => {
            let mut pi = intent_json(&id, form, "requires_payment_method", amount);
            pi["last_payment_error"] =
                decline("card_declined", Some("do_not_honor"), "Your card was declined.");
            (200, pi, None)
        }
        other => {
            return error(
                400,
                json!({ "type": "invalid_request_error", "code": "resource_missing",
                                              "param": "payment_method_data[card][token]",
                                              "message": format!("No such token: '{other}'") }),
            );
        }
    };
    if let Some(failure) = &failure {
        intent["last_payment_error"] = failure.clone();
    }
    s.intents.insert(id, intent.clone());
    match failure {
        Some(mut e) => {
            e["payment_intent"] = intent;
            error(status, e)
        }
        None => (status, intent),
    }
}

fn cancel_intent(s: &mut FakeStripe, id: &str) -> (u16, Value) {
    let Some(intent) = s.intents.get_mut(id) else { return no_such_intent(id) };
    let status = intent["status"].as_str().unwrap().to_string();
    if status == "succeeded" || status == "canceled" {
        return error(
            400,
            json!({ "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
            "message": format!("You cannot cancel this PaymentIntent because it has a status of {status}."),
            "payment_intent": intent.clone() }),
        );
    }
    intent["status"] = json!("canceled");
    intent["cancellation_reason"] = Value::Null;
    (200, intent.clone())
}

/// `POST /v1/payment_intents/{id}/capture`: only a `requires_capture` intent is captured, of at
/// most `amount_capturable` (`amount_to_capture`, by default all of it); any other status is
/// `payment_intent_unexpected_state` with the intent attached.
fn capture_intent(s: &mut FakeStripe, id: &str, form: &HashMap<String, String>) -> (u16, Value) {
    if let Some(unknown) = form.keys().find(|k| !matches!(k.as_str(), "amount_to_capture")) {
        return invalid(unknown, &format!("Received unknown parameter: {unknown}"));
    }
    let Some(intent) = s.intents.get_mut(id) else { return no_such_intent(id) };
    let status = intent["status"].as_str().unwrap().to_string();
    if status != "requires_capture" {
        return error(
            400,
            json!({ "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                    "message": format!("This PaymentIntent could not be captured because it has a status of {status}. Only a PaymentIntent with one of the following statuses may be captured: requires_capture."),
                    "payment_intent": intent.clone() }),
        );
    }
    let capturable = intent["amount_capturable"].as_i64().unwrap();
    let amount = match form.get("amount_to_capture").map(|a| a.parse::<i64>()) {
        None => capturable,
        Some(Ok(a)) if a > 0 && a <= capturable => a,
        Some(_) => {
            return invalid("amount_to_capture", "amount_to_capture must be at most amount_capturable");
        }
    };
    intent["status"] = json!("succeeded");
    intent["amount_capturable"] = json!(0);
    intent["amount_received"] = json!(amount);
    (200, intent.clone())
}

fn create_refund(s: &mut FakeStripe, form: &HashMap<String, String>) -> (u16, Value) {
    let Some(pi) = form.get("payment_intent") else {
        return invalid("payment_intent", "Missing required param");
    };
    let Some(intent) = s.intents.get(pi).cloned() else {
        return error(
            400,
            json!({ "type": "invalid_request_error", "code": "resource_missing",
                                  "param": "payment_intent", "message": format!("No such payment_intent: '{pi}'") }),
        );
    };
    if intent["status"] != "succeeded" {
        return error(
            400,
            json!({ "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                                  "message": "This PaymentIntent does not have a successful charge to refund." }),
        );
    }
    let refunded: i64 =
        s.refunds.iter().filter(|r| r["payment_intent"] == *pi).map(|r| r["amount"].as_i64().unwrap()).sum();
    let left = intent["amount"].as_i64().unwrap() - refunded;
    if left == 0 {
        return error(
            400,
            json!({ "type": "invalid_request_error", "code": "charge_already_refunded",
                                  "message": "Charge has already been refunded." }),
        );
    }
    let amount: i64 = form.get("amount").map_or(left, |a| a.parse().unwrap());
    if amount > left {
        return invalid("amount", "Refund amount is greater than unrefunded amount on charge");
    }
    let id = s.id("re");
    let refund = json!({ "id": id, "object": "refund", "amount": amount, "currency": intent["currency"],
                         "payment_intent": pi, "status": "succeeded", "metadata": {} });
    s.refunds.push(refund.clone());
    (200, refund)
}

pub struct Fake {
    pub base: String,
    pub state: Shared,
}

impl Fake {
    pub async fn start() -> Fake {
        let state = Shared::default();
        let app = Router::new()
            .route(
                "/v1/payment_intents",
                post(|State(s): State<Shared>, h: HeaderMap, b: Bytes| async move {
                    handle(&s, "/v1/payment_intents", &h, &b, create_intent)
                }),
            )
            .route(
                "/v1/payment_intents/{id}",
                get(|State(s): State<Shared>, Path(id): Path<String>, h: HeaderMap| async move {
                    retrieve_intent(&s, &id, &h)
                }),
            )
            .route(
                "/v1/payment_intents/{id}/capture",
                post(|State(s): State<Shared>, Path(id): Path<String>, h: HeaderMap, b: Bytes| async move {
                    let path = format!("/v1/payment_intents/{id}/capture");
                    handle(&s, &path, &h, &b, |s, form| capture_intent(s, &id, form))
                }),
            )
            .route(
                "/v1/payment_intents/{id}/cancel",
                post(|State(s): State<Shared>, Path(id): Path<String>, h: HeaderMap, b: Bytes| async move {
                    let path = format!("/v1/payment_intents/{id}/cancel");
                    handle(&s, &path, &h, &b, |s, _| cancel_intent(s, &id))
                }),
            )
            .route(
                "/v1/refunds",
                post(|State(s): State<Shared>, h: HeaderMap, b: Bytes| async move {
                    handle(&s, "/v1/refunds", &h, &b, create_refund)
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { base, state }
    }

    pub fn stripe(&self) -> MutexGuard<'_, FakeStripe> {
        self.state.lock().unwrap()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.stripe().calls.clone()
    }

    /// 24 hours pass: Stripe no longer knows any idempotency key, and a request under an old key
    /// is executed anew.
    pub fn forget_keys(&self) {
        self.stripe().saved.clear();
    }

    /// What happened to the intent of `order` since it was created (3-D Secure finished, an
    /// asynchronous payment settled).
    pub fn set_status(&self, order: u64, status: &str, last_payment_error: Value) {
        let id = self.intent_of(order)["id"].as_str().unwrap().to_string();
        let mut s = self.stripe();
        let intent = s.intents.get_mut(&id).unwrap();
        intent["status"] = json!(status);
        intent["next_action"] = Value::Null;
        intent["last_payment_error"] = last_payment_error;
        if status == "succeeded" {
            intent["amount_received"] = intent["amount"].clone();
        }
    }

    /// The intent the fake created for the last charge of `order` (by its metadata).
    pub fn intent_of(&self, order: u64) -> Value {
        let s = self.stripe();
        let mut matching: Vec<&Value> = s
            .intents
            .values()
            .filter(|pi| pi["metadata"]["order"].as_str().and_then(|o| o.parse().ok()) == Some(order))
            .collect();
        assert_eq!(matching.len(), 1, "one intent for order {order}");
        matching.pop().unwrap().clone()
    }
}

/// Stripe's answer for an intent id it does not know.
fn no_such_intent(id: &str) -> (u16, Value) {
    error(
        404,
        json!({ "type": "invalid_request_error", "code": "resource_missing", "param": "intent",
                "message": format!("No such payment_intent: '{id}'") }),
    )
}
