//! The payment providers, end to end over HTTP.
//!
//! Stripe cannot be reached from where this is built and tested, so the Stripe adapter runs
//! against `Fake` (`tests/conformance/fake_stripe.rs`, shared with the conformance suite): a
//! local axum server that answers as Stripe's API reference documents. **These tests prove the
//! adapter speaks the documented protocol; they do not prove Stripe answers as documented.**

use std::collections::HashMap;

use liveshop_edge::payments::{
    IntentStore, PaymentError, Provider, Stripe, StripeConfig, StripeResult, http_client, stripe_webhook,
};
use liveshop_edge::sqlite::{Db, Durability};
use liveshop_shop::test_provider;
use liveshop_shop::{Capture, Currency, Money, OrderId, PaymentKind, PaymentOutcome, PaymentRequest};
use liveshop_webhooks::WebhookError;
use serde_json::{Value, json};

const WEBHOOK_SECRET: &str = "whsec_liveshop_fake_endpoint";
const RETURN_URL: &str = "https://shop.example/return";
const SHOP: &str = "shop-a";

// ---------------------------------------------------------------------------------------------
// The fake Stripe, shared with the conformance suite.

#[path = "../../tests/conformance/fake_stripe.rs"]
mod fake_stripe;

use fake_stripe::{Fake, SECRET_KEY, intent_json};

/// The edge adapter pointed at the fake.
trait EdgeProvider {
    fn config(&self) -> StripeConfig;
    fn provider(&self) -> Provider;
    fn provider_with(&self, config: StripeConfig, db: Db) -> Provider;
}

impl EdgeProvider for Fake {
    fn config(&self) -> StripeConfig {
        StripeConfig {
            api_base: self.base.clone(),
            webhook_secret: Some(WEBHOOK_SECRET.into()),
            return_url: Some(RETURN_URL.into()),
            ..StripeConfig::new(SECRET_KEY)
        }
    }

    fn provider(&self) -> Provider {
        self.provider_with(self.config(), Db::in_memory().unwrap())
    }

    fn provider_with(&self, config: StripeConfig, db: Db) -> Provider {
        Provider::Stripe(Stripe::new(config, IntentStore::new(db), http_client()))
    }
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::Eur)
}

fn charge(order: u64, method: &str, amount: Money) -> PaymentRequest {
    PaymentRequest {
        order: OrderId(order),
        kind: PaymentKind::Charge,
        amount,
        idempotency_key: format!("7-ord{order}"),
        method: Some(method.into()),
        capture: Capture::Automatic,
    }
}

/// A charge of a shop that captures on fulfilment.
fn authorize(order: u64, method: &str, amount: Money) -> PaymentRequest {
    PaymentRequest { capture: Capture::Manual, ..charge(order, method, amount) }
}

/// The shop's capture of an order's authorized charge, first attempt.
fn capture(order: u64, amount: Money) -> PaymentRequest {
    PaymentRequest {
        order: OrderId(order),
        kind: PaymentKind::Capture,
        amount,
        idempotency_key: format!("7-ord{order}-capture"),
        method: None,
        capture: Capture::Automatic,
    }
}

/// The shop's cancel and full refund of an order: their own keys, as `liveshop_shop` makes them.
fn undo(order: u64, kind: PaymentKind, amount: Money) -> PaymentRequest {
    let suffix = if kind == PaymentKind::Refund { "refund-all" } else { "cancel" };
    PaymentRequest {
        order: OrderId(order),
        kind,
        amount,
        idempotency_key: format!("7-ord{order}-{suffix}"),
        method: None,
        capture: Capture::Automatic,
    }
}

fn failed(reason: &str) -> Vec<PaymentOutcome> {
    vec![PaymentOutcome::Failed { reason: reason.into() }]
}

// ---------------------------------------------------------------------------------------------
// Charges.

#[tokio::test]
async fn a_card_charge_is_paid_and_sends_what_the_api_reference_asks_for() {
    let fake = Fake::start().await;
    let outcomes = fake.provider().execute(SHOP, &charge(1, "tok_visa", eur(1999))).await.unwrap();
    assert_eq!(outcomes, [PaymentOutcome::Paid]);

    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.path, "/v1/payment_intents");
    // Scoped by shop: another shop's "7-ord1" must not replay this charge.
    assert_eq!(call.key.as_deref(), Some("shop-a/7-ord1"));
    let expected: HashMap<String, String> = [
        ("amount", "1999"),
        ("currency", "eur"),
        ("confirm", "true"),
        ("capture_method", "automatic"),
        ("payment_method_types[0]", "card"),
        ("payment_method_data[type]", "card"),
        ("payment_method_data[card][token]", "tok_visa"),
        ("metadata[shop]", SHOP),
        ("metadata[order]", "1"),
        ("metadata[payment_key]", "7-ord1"),
        ("return_url", RETURN_URL),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(call.form, expected);
}

#[tokio::test]
async fn a_saved_payment_method_is_sent_as_payment_method_not_as_a_token() {
    let fake = Fake::start().await;
    let outcomes = fake.provider().execute(SHOP, &charge(1, "pm_card_visa", eur(500))).await.unwrap();
    assert_eq!(outcomes, [PaymentOutcome::Paid]);
    let form = &fake.calls()[0].form;
    assert_eq!(form.get("payment_method").map(String::as_str), Some("pm_card_visa"));
    assert!(!form.keys().any(|k| k.starts_with("payment_method_data")), "{form:?}");
}

#[tokio::test]
async fn a_charge_repeated_after_a_crash_creates_one_intent() {
    let fake = Fake::start().await;
    let req = charge(1, "tok_visa", eur(1999));
    let first = fake.provider().execute(SHOP, &req).await.unwrap();
    // The node died before it recorded the intent (a fresh store): the repeat posts under the
    // same key, and Stripe replays its answer.
    let restarted = fake.provider();
    let again = restarted.execute(SHOP, &req).await.unwrap();
    // Recorded now: a further repeat reads the intent.
    let third = restarted.execute(SHOP, &req).await.unwrap();
    for outcomes in [first, again, third] {
        assert_eq!(outcomes, [PaymentOutcome::Paid]);
    }
    assert_eq!(fake.stripe().intents.len(), 1);
    let calls: Vec<(&str, bool)> = fake.calls().into_iter().map(|c| (c.method, c.replayed)).collect();
    assert_eq!(calls, [("POST", false), ("POST", true), ("GET", false)]);
}

#[tokio::test]
async fn a_charge_reissued_after_stripe_forgot_its_key_reads_the_intent_and_creates_none() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    let reqs = [
        charge(1, "tok_threeDSecure2Required", eur(1999)),
        charge(2, "tok_threeDSecure2Required", eur(1999)),
        charge(3, "tok_fake_processing", eur(1999)),
        charge(4, "tok_fake_processing", eur(1999)),
    ];
    let mut first = Vec::new();
    for req in &reqs {
        first.push(provider.execute(SHOP, req).await.unwrap());
    }
    let url = |order| {
        let id = fake.intent_of(order)["id"].as_str().unwrap().to_string();
        Some(format!("https://hooks.stripe.com/3d_secure_2/hosted?payment_intent={id}"))
    };
    let challenge = |order| vec![PaymentOutcome::RequiresAction { url: url(order) }];
    assert_eq!(first, [challenge(1), challenge(2), vec![], vec![]]);

    // More than a day passes: the buyer of order 1 finished 3-D Secure, order 2's did not, order 3
    // is still settling and order 4's settled as declined.
    fake.set_status(1, "succeeded", Value::Null);
    fake.set_status(
        4,
        "requires_payment_method",
        json!({ "type": "card_error", "code": "card_declined", "decline_code": "do_not_honor" }),
    );
    fake.forget_keys();
    let before = fake.calls().len();

    // The shop revives and re-issues its pending charges under their old keys.
    let mut reissued = Vec::new();
    for req in &reqs {
        reissued.push(provider.execute(SHOP, req).await.unwrap());
    }
    assert_eq!(reissued, [vec![PaymentOutcome::Paid], challenge(2), vec![], failed("do_not_honor")]);
    assert_eq!(fake.stripe().intents.len(), 4, "no second intent");
    let calls: Vec<_> =
        fake.calls()[before..].iter().map(|c| (c.method, c.path.clone(), c.key.clone())).collect();
    let expected: Vec<_> = (1..=4)
        .map(|order| {
            let id = fake.intent_of(order)["id"].as_str().unwrap().to_string();
            ("GET", format!("/v1/payment_intents/{id}"), None)
        })
        .collect();
    assert_eq!(calls, expected);

    // What the rule prevents: a post under a forgotten key is a new charge.
    fake.provider().execute(SHOP, &reqs[0]).await.unwrap();
    assert_eq!(fake.stripe().intents.len(), 5);
}

#[tokio::test]
async fn a_failed_retrieval_is_retried_or_refused_and_never_creates_an_intent() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    let req = charge(1, "tok_fake_processing", eur(1999));
    provider.execute(SHOP, &req).await.unwrap();
    fake.forget_keys();

    fake.stripe().failing_reads = 1;
    let err = provider.execute(SHOP, &req).await.unwrap_err();
    assert!(matches!(err, PaymentError::ProviderUnavailable(_)), "{err:?}");
    assert!(err.retryable());
    assert_eq!(provider.execute(SHOP, &req).await.unwrap(), []);

    // Stripe does not know the intent (say, the node's key now points at another account): an
    // error for the operator, not a failed payment, and no new charge.
    fake.stripe().intents.clear();
    let err = provider.execute(SHOP, &req).await.unwrap_err();
    assert!(
        matches!(&err, PaymentError::ProviderRejected { status: 404, code, .. } if code == "resource_missing"),
        "{err:?}"
    );
    assert!(!err.retryable());
    assert!(fake.stripe().intents.is_empty());
    let methods: Vec<&str> = fake.calls().into_iter().map(|c| c.method).collect();
    assert_eq!(methods, ["POST", "GET", "GET", "GET"]);
}

#[tokio::test]
async fn an_order_number_of_an_earlier_epoch_does_not_answer_for_a_new_charge() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    provider.execute(SHOP, &charge(1, "tok_visa", eur(1999))).await.unwrap();
    // The shop lost its history and numbers orders from 1 again, in a new epoch.
    let new = PaymentRequest {
        idempotency_key: "9-ord1".into(),
        ..charge(1, "tok_threeDSecure2Required", eur(500))
    };
    let outcomes = provider.execute(SHOP, &new).await.unwrap();
    assert!(matches!(outcomes.as_slice(), [PaymentOutcome::RequiresAction { url: Some(_) }]), "{outcomes:?}");
    assert_eq!(fake.stripe().intents.len(), 2);
    let calls: Vec<_> = fake.calls().into_iter().map(|c| (c.method, c.key)).collect();
    let key = |k: &str| Some(k.to_string());
    assert_eq!(calls, [("POST", key("shop-a/7-ord1")), ("GET", None), ("POST", key("shop-a/9-ord1"))]);
}

#[tokio::test]
async fn two_shops_with_the_same_order_key_make_two_charges() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    let req = charge(1, "tok_visa", eur(1999));
    provider.execute("shop-a", &req).await.unwrap();
    provider.execute("shop-b", &req).await.unwrap();
    assert_eq!(fake.stripe().intents.len(), 2);
}

#[tokio::test]
async fn a_key_reused_with_other_parameters_is_not_reported_as_a_failed_payment() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    provider.execute(SHOP, &charge(1, "tok_visa", eur(1999))).await.unwrap();
    let check = |err: PaymentError| {
        assert_eq!(err.code(), "provider_rejected");
        assert!(!err.retryable());
        assert!(
            matches!(err, PaymentError::ProviderRejected { status: 400, ref code, .. } if code == "idempotency_error"),
            "{err:?}"
        );
    };
    // Same key, other amount: the first charge went through, so "failed" (or "paid") would be a
    // lie. Stripe says so while it knows the key, to a node that did not record the intent...
    let other_amount = charge(1, "tok_visa", eur(2999));
    check(fake.provider().execute(SHOP, &other_amount).await.unwrap_err());
    // ...and the adapter says so itself where it knows the intent, however old the key.
    fake.forget_keys();
    check(provider.execute(SHOP, &other_amount).await.unwrap_err());
    assert_eq!(fake.stripe().intents.len(), 1);
}

#[tokio::test]
async fn authorizations_challenges_and_pending_payments_map_to_their_outcomes() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    let run = |order, token| {
        let provider = &provider;
        async move { provider.execute(SHOP, &charge(order, token, eur(1999))).await.unwrap() }
    };
    assert_eq!(run(1, "tok_fake_requires_capture").await, [PaymentOutcome::Authorized]);
    let challenge = run(2, "tok_threeDSecure2Required").await;
    let url = format!(
        "https://hooks.stripe.com/3d_secure_2/hosted?payment_intent={}",
        fake.intent_of(2)["id"].as_str().unwrap()
    );
    assert_eq!(challenge, [PaymentOutcome::RequiresAction { url: Some(url) }]);
    // Nothing yet: payment_intent.succeeded or .payment_failed will follow as a webhook.
    assert_eq!(run(3, "tok_fake_processing").await, []);

    // Without a return_url Stripe answers use_stripe_sdk: the buyer must act, but there is no page.
    let no_return =
        fake.provider_with(StripeConfig { return_url: None, ..fake.config() }, Db::in_memory().unwrap());
    let outcomes = no_return.execute(SHOP, &charge(4, "tok_threeDSecure2Required", eur(1999))).await.unwrap();
    assert_eq!(outcomes, [PaymentOutcome::RequiresAction { url: None }]);
    assert!(!fake.calls()[3].form.contains_key("return_url"));
}

#[tokio::test]
async fn a_declined_card_fails_with_the_issuers_reason_and_its_intent_can_still_be_cancelled() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    let declined = provider.execute(SHOP, &charge(1, "tok_chargeDeclinedInsufficientFunds", eur(1999))).await;
    assert_eq!(declined.unwrap(), failed("insufficient_funds"));
    // No decline_code: Stripe's error code is the reason.
    let expired = provider.execute(SHOP, &charge(2, "tok_fake_expired", eur(1999))).await;
    assert_eq!(expired.unwrap(), failed("expired_card"));
    // A 200 whose intent is back to requires_payment_method.
    let later = provider.execute(SHOP, &charge(3, "tok_fake_failed_after_action", eur(1999))).await;
    assert_eq!(later.unwrap(), failed("do_not_honor"));

    // The 402 carried the intent it created; the shop's cancel reaches it.
    provider.execute(SHOP, &undo(1, PaymentKind::Cancel, eur(1999))).await.unwrap();
    assert_eq!(fake.intent_of(1)["status"], "canceled");
}

#[tokio::test]
async fn refusals_other_than_declines_fail_the_charge_with_stripes_code() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    let unknown = provider.execute(SHOP, &charge(1, "tok_noSuchToken", eur(1999))).await;
    assert_eq!(unknown.unwrap(), failed("resource_missing"));
    let no_method = PaymentRequest { method: None, ..charge(2, "", eur(1999)) };
    assert_eq!(provider.execute(SHOP, &no_method).await.unwrap(), failed("invalid_payment_method"));

    let wrong_key = fake.provider_with(
        StripeConfig { secret_key: "sk_test_wrong".into(), ..fake.config() },
        Db::in_memory().unwrap(),
    );
    assert_eq!(
        wrong_key.execute(SHOP, &charge(3, "tok_visa", eur(1999))).await.unwrap(),
        failed("provider_rejected")
    );
    assert!(fake.stripe().intents.is_empty());
}

#[tokio::test]
async fn a_server_error_is_an_error_to_retry_and_the_retry_charges_once() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    let req = charge(1, "tok_fake_500_once", eur(1999));
    let err = provider.execute(SHOP, &req).await.unwrap_err();
    assert_eq!(err.code(), "provider_unavailable");
    assert!(err.retryable());
    assert_eq!(provider.execute(SHOP, &req).await.unwrap(), [PaymentOutcome::Paid]);
    assert_eq!(fake.stripe().intents.len(), 1);
    let keys: Vec<_> = fake.calls().into_iter().map(|c| c.key).collect();
    assert_eq!(keys, [Some("shop-a/7-ord1".to_string()), Some("shop-a/7-ord1".to_string())]);
}

#[tokio::test]
async fn an_unreachable_stripe_is_an_error_to_retry() {
    // A port that was just free and is closed again.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = StripeConfig { api_base: base, ..StripeConfig::new(SECRET_KEY) };
    let provider =
        Provider::Stripe(Stripe::new(config, IntentStore::new(Db::in_memory().unwrap()), http_client()));
    let err = provider.execute(SHOP, &charge(1, "tok_visa", eur(1999))).await.unwrap_err();
    assert!(matches!(err, PaymentError::ProviderUnavailable(_)), "{err:?}");
    assert!(err.retryable());
}

#[tokio::test]
async fn amounts_follow_stripes_currency_rules() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    provider.execute(SHOP, &charge(1, "tok_visa", Money::new(1500, Currency::Jpy))).await.unwrap();
    provider.execute(SHOP, &charge(2, "tok_visa", Money::new(500, Currency::Isk))).await.unwrap();
    provider.execute(SHOP, &charge(3, "tok_visa", Money::new(5120, Currency::Kwd))).await.unwrap();
    let sent: Vec<(String, String)> =
        fake.calls().iter().map(|c| (c.form["amount"].clone(), c.form["currency"].clone())).collect();
    let expected =
        [("1500", "jpy"), ("50000", "isk"), ("5120", "kwd")].map(|(a, c)| (a.to_string(), c.to_string()));
    assert_eq!(sent, expected);

    // Refused before any call: Stripe would not take them, and rounding would change the total.
    let odd_fils = provider.execute(SHOP, &charge(4, "tok_visa", Money::new(5124, Currency::Kwd))).await;
    assert_eq!(odd_fils.unwrap(), failed("amount_unsupported"));
    let dinar = provider.execute(SHOP, &charge(5, "tok_visa", Money::new(5000, Currency::Iqd))).await;
    assert_eq!(dinar.unwrap(), failed("currency_unsupported"));
    assert_eq!(fake.calls().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Cancels and refunds.

#[tokio::test]
async fn cancel_and_refund_reach_the_intent_of_their_order_even_after_a_restart() {
    let fake = Fake::start().await;
    let dir = std::env::temp_dir().join(format!("liveshop-stripe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.db");
    {
        let provider = fake.provider_with(fake.config(), Db::open(&path, Durability::Process).unwrap());
        provider.execute(SHOP, &charge(1, "tok_threeDSecure2Required", eur(1999))).await.unwrap();
        provider.execute(SHOP, &charge(2, "tok_visa", eur(2500))).await.unwrap();
    }
    // A new process: the intents are found in SQLite.
    let provider = fake.provider_with(fake.config(), Db::open(&path, Durability::Process).unwrap());
    let (pi1, pi2) = (fake.intent_of(1)["id"].clone(), fake.intent_of(2)["id"].clone());

    let cancel = undo(1, PaymentKind::Cancel, eur(1999));
    assert_eq!(provider.execute(SHOP, &cancel).await.unwrap(), []);
    let call = fake.calls().pop().unwrap();
    assert_eq!(call.path, format!("/v1/payment_intents/{}/cancel", pi1.as_str().unwrap()));
    assert_eq!(call.key.as_deref(), Some("shop-a/7-ord1-cancel"));
    assert_eq!(fake.intent_of(1)["status"], "canceled");
    // Repeated: replayed under its key, still fine.
    assert_eq!(provider.execute(SHOP, &cancel).await.unwrap(), []);

    let refund = undo(2, PaymentKind::Refund, eur(2500));
    assert_eq!(provider.execute(SHOP, &refund).await.unwrap(), []);
    assert_eq!(provider.execute(SHOP, &refund).await.unwrap(), []);
    let call = fake.calls().pop().unwrap();
    assert_eq!((call.path.as_str(), call.key.as_deref()), ("/v1/refunds", Some("shop-a/7-ord2-refund-all")));
    assert_eq!(call.form["payment_intent"], pi2.as_str().unwrap());
    assert_eq!(call.form["amount"], "2500");
    let refunds = fake.stripe().refunds.clone();
    assert_eq!(refunds.len(), 1, "the repeat refunded nothing more");
    assert_eq!((refunds[0]["payment_intent"].clone(), refunds[0]["amount"].clone()), (pi2, json!(2500)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn undoing_what_stripe_never_saw_or_cannot_undo() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    // No intent: nothing to void, and no call.
    assert_eq!(provider.execute(SHOP, &undo(1, PaymentKind::Cancel, eur(1999))).await.unwrap(), []);
    // A refund needs the intent; this is a wiring bug for the operator, not a retry.
    let err = provider.execute(SHOP, &undo(1, PaymentKind::Refund, eur(1999))).await.unwrap_err();
    assert_eq!((err.code(), err.retryable()), ("intent_unknown", false));
    assert!(fake.calls().is_empty());

    // A paid intent cannot be cancelled: Stripe's refusal comes back, not a retry.
    provider.execute(SHOP, &charge(2, "tok_visa", eur(1999))).await.unwrap();
    let err = provider.execute(SHOP, &undo(2, PaymentKind::Cancel, eur(1999))).await.unwrap_err();
    assert!(
        matches!(&err, PaymentError::ProviderRejected { code, .. } if code == "payment_intent_unexpected_state"),
        "{err:?}"
    );
    assert!(!err.retryable());
    // A refund under a new key after a full one: nothing left, which is what was asked.
    provider.execute(SHOP, &undo(2, PaymentKind::Refund, eur(1999))).await.unwrap();
    let other_key = PaymentRequest {
        idempotency_key: "7-ord2-refund-again".into(),
        ..undo(2, PaymentKind::Refund, eur(1999))
    };
    assert_eq!(provider.execute(SHOP, &other_key).await.unwrap(), []);
    assert_eq!(fake.stripe().refunds.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Authorize now, capture at fulfilment.

#[tokio::test]
async fn a_manual_charge_is_authorized_and_its_capture_is_paid_once_however_often_it_is_sent() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    let authorized = provider.execute(SHOP, &authorize(1, "tok_visa", eur(1999))).await.unwrap();
    assert_eq!(authorized, [PaymentOutcome::Authorized]);
    assert_eq!(fake.calls()[0].form["capture_method"], "manual");
    let pi = fake.intent_of(1);
    assert_eq!((&pi["status"], &pi["amount_capturable"]), (&json!("requires_capture"), &json!(1999)));
    let pi = pi["id"].as_str().unwrap().to_string();

    let req = capture(1, eur(1999));
    assert_eq!(provider.execute(SHOP, &req).await.unwrap(), [PaymentOutcome::Paid]);
    let call = fake.calls().pop().unwrap();
    assert_eq!((call.method, call.path.clone()), ("POST", format!("/v1/payment_intents/{pi}/capture")));
    assert_eq!(call.key.as_deref(), Some("shop-a/7-ord1-capture"));
    let expected: HashMap<String, String> = [("amount_to_capture".to_string(), "1999".to_string())].into();
    assert_eq!((call.form, call.replayed), (expected, false));
    let pi_now = fake.intent_of(1);
    assert_eq!((&pi_now["status"], &pi_now["amount_received"]), (&json!("succeeded"), &json!(1999)));

    // Repeated after a crash: Stripe replays its answer under the key.
    assert_eq!(provider.execute(SHOP, &req).await.unwrap(), [PaymentOutcome::Paid]);
    assert!(fake.calls().pop().unwrap().replayed);
    // Under another key (Stripe forgot the first, or a new attempt): captured already is captured.
    fake.forget_keys();
    assert_eq!(provider.execute(SHOP, &req).await.unwrap(), [PaymentOutcome::Paid]);
    let again = PaymentRequest { idempotency_key: "7-ord1-capture-2".into(), ..capture(1, eur(1999)) };
    assert_eq!(provider.execute(SHOP, &again).await.unwrap(), [PaymentOutcome::Paid]);
    let call = fake.calls().pop().unwrap();
    assert_eq!((call.key.as_deref(), call.replayed), (Some("shop-a/7-ord1-capture-2"), false));
    assert_eq!(fake.intent_of(1)["amount_received"], 1999, "captured once");

    // The charge re-issued by a revived shop reads the intent: paid now.
    assert_eq!(
        provider.execute(SHOP, &authorize(1, "tok_visa", eur(1999))).await.unwrap(),
        [PaymentOutcome::Paid]
    );
    // And the captured money can be refunded.
    assert_eq!(provider.execute(SHOP, &undo(1, PaymentKind::Refund, eur(1999))).await.unwrap(), []);
    assert_eq!(fake.stripe().intents.len(), 1);
}

#[tokio::test]
async fn a_capture_of_an_unknown_voided_or_mismatched_intent_is_not_paid() {
    let fake = Fake::start().await;
    let provider = fake.provider();
    // No intent recorded for the order: a wiring bug for the operator, not a retry, and no call.
    let err = provider.execute(SHOP, &capture(9, eur(1999))).await.unwrap_err();
    assert_eq!((err.code(), err.retryable()), ("intent_unknown", false));
    assert!(fake.calls().is_empty());

    // Voided (or expired) before the capture: the capture fails, the shop keeps the order.
    provider.execute(SHOP, &authorize(2, "tok_visa", eur(1999))).await.unwrap();
    assert_eq!(provider.execute(SHOP, &undo(2, PaymentKind::Cancel, eur(1999))).await.unwrap(), []);
    assert_eq!(provider.execute(SHOP, &capture(2, eur(1999))).await.unwrap(), failed("canceled"));

    // More than was authorized: Stripe's refusal comes back for the operator, not a failure.
    provider.execute(SHOP, &authorize(3, "tok_visa", eur(1000))).await.unwrap();
    let err = provider.execute(SHOP, &capture(3, eur(1001))).await.unwrap_err();
    assert!(
        matches!(&err, PaymentError::ProviderRejected { status: 400, code, .. } if code == "parameter_invalid")
    );
    assert!(!err.retryable());
    assert_eq!(fake.intent_of(3)["status"], "requires_capture");

    // An automatic charge is captured already: a capture of it is paid, and changes nothing.
    provider.execute(SHOP, &charge(4, "tok_visa", eur(500))).await.unwrap();
    assert_eq!(provider.execute(SHOP, &capture(4, eur(500))).await.unwrap(), [PaymentOutcome::Paid]);
    // A declined authorization never reaches requires_capture.
    let declined = authorize(5, "tok_chargeDeclinedInsufficientFunds", eur(500));
    assert_eq!(provider.execute(SHOP, &declined).await.unwrap(), failed("insufficient_funds"));
}

// ---------------------------------------------------------------------------------------------
// The test provider.

#[tokio::test]
async fn the_test_provider_answers_as_the_shops_test_provider() {
    let tokens = [
        test_provider::TOK_VISA,
        test_provider::TOK_AUTHORIZE_THEN_CAPTURE,
        test_provider::TOK_DECLINED,
        test_provider::TOK_INSUFFICIENT_FUNDS,
        test_provider::TOK_EXPIRED_CARD,
        test_provider::TOK_3DS,
        test_provider::TOK_PENDING,
        "tok_unknown",
    ];
    for token in tokens {
        let req = charge(1, token, eur(1999));
        assert_eq!(
            Provider::Test.execute(SHOP, &req).await.unwrap(),
            test_provider::respond(&req),
            "{token}"
        );
    }
    assert_eq!(
        Provider::Test.execute(SHOP, &charge(1, "tok_visa", eur(1))).await.unwrap(),
        [PaymentOutcome::Paid]
    );
    assert_eq!(Provider::Test.execute(SHOP, &undo(1, PaymentKind::Refund, eur(1))).await.unwrap(), []);
    assert_eq!(
        Provider::Test.execute(SHOP, &authorize(1, "tok_visa", eur(1))).await.unwrap(),
        [PaymentOutcome::Authorized]
    );
    assert_eq!(Provider::Test.execute(SHOP, &capture(1, eur(1))).await.unwrap(), [PaymentOutcome::Paid]);
}

// ---------------------------------------------------------------------------------------------
// Webhooks.

const NOW: u64 = 1_700_000_000;

fn event(kind: &str, intent: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "evt_fake1", "object": "event", "api_version": "2024-06-20", "created": NOW,
        "livemode": false, "type": kind, "data": { "object": intent },
    }))
    .unwrap()
}

fn our_intent(status: &str) -> Value {
    json!({ "id": "pi_fake42", "object": "payment_intent", "amount": 1999, "currency": "eur", "status": status,
            "metadata": { "shop": SHOP, "order": "42", "payment_key": "7-ord42" },
            "next_action": null, "last_payment_error": null })
}

fn signed(body: &[u8], secret: &str, at: u64) -> Vec<(String, String)> {
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("Stripe-Signature".into(), liveshop_webhooks::stripe::sign(secret, at, body)),
    ]
}

fn config() -> StripeConfig {
    StripeConfig { webhook_secret: Some(WEBHOOK_SECRET.into()), ..StripeConfig::new(SECRET_KEY) }
}

fn receive(body: &[u8]) -> Result<Option<StripeResult>, PaymentError> {
    stripe_webhook(&config(), &signed(body, WEBHOOK_SECRET, NOW), body, NOW + 10)
}

#[test]
fn signed_payment_intent_events_become_the_orders_outcome() {
    let mut action = our_intent("requires_action");
    action["next_action"] = json!({ "type": "redirect_to_url",
        "redirect_to_url": { "url": "https://hooks.stripe.com/3ds/x", "return_url": RETURN_URL } });
    let mut declined = our_intent("requires_payment_method");
    declined["last_payment_error"] =
        json!({ "type": "card_error", "code": "card_declined", "decline_code": "stolen_card" });
    let cases = [
        ("payment_intent.succeeded", our_intent("succeeded"), PaymentOutcome::Paid),
        (
            "payment_intent.amount_capturable_updated",
            our_intent("requires_capture"),
            PaymentOutcome::Authorized,
        ),
        ("payment_intent.payment_failed", declined, PaymentOutcome::Failed { reason: "stolen_card".into() }),
        (
            "payment_intent.requires_action",
            action,
            PaymentOutcome::RequiresAction { url: Some("https://hooks.stripe.com/3ds/x".into()) },
        ),
    ];
    for (kind, intent, outcome) in cases {
        let result = receive(&event(kind, intent)).unwrap();
        let expected =
            StripeResult { shop: SHOP.into(), order: OrderId(42), outcome, intent: "pi_fake42".into() };
        assert_eq!(result, Some(expected), "{kind}");
    }
}

#[test]
fn events_we_do_not_handle_and_intents_we_did_not_create_are_ignored() {
    assert_eq!(
        receive(&event("charge.succeeded", json!({ "id": "ch_1", "object": "charge" }))).unwrap(),
        None
    );
    assert_eq!(receive(&event("payment_intent.canceled", our_intent("canceled"))).unwrap(), None);
    let mut foreign = our_intent("succeeded");
    foreign["metadata"] = json!({});
    assert_eq!(receive(&event("payment_intent.succeeded", foreign)).unwrap(), None);
}

#[test]
fn forged_stale_or_garbled_webhooks_are_refused_with_their_codes() {
    let body = event("payment_intent.succeeded", our_intent("succeeded"));
    let headers = signed(&body, WEBHOOK_SECRET, NOW);
    let check = |headers: &[(String, String)], body: &[u8], now: u64| {
        let err = stripe_webhook(&config(), headers, body, now).unwrap_err();
        match err {
            PaymentError::BadSignature(e) => {
                assert_eq!(err.code(), "bad_signature");
                e
            }
            other => panic!("expected a bad signature, got {other:?}"),
        }
    };
    let tampered = String::from_utf8(body.clone()).unwrap().replace("1999", "1");
    assert_eq!(check(&headers, tampered.as_bytes(), NOW), WebhookError::SignatureMismatch);
    assert_eq!(check(&signed(&body, "whsec_someone_else", NOW), &body, NOW), WebhookError::SignatureMismatch);
    assert_eq!(check(&headers, &body, NOW + 301), WebhookError::TimestampTooOld);
    // 300 s late is still on time.
    assert!(stripe_webhook(&config(), &headers, &body, NOW + 300).unwrap().is_some());
    let with = |value: &str| vec![("stripe-signature".to_string(), value.to_string())];
    assert_eq!(check(&with(""), &body, NOW), WebhookError::SignatureMalformed);
    let full = &headers[1].1;
    assert_eq!(check(&with(&full[..full.len() - 10]), &body, NOW), WebhookError::SignatureMalformed);
    assert_eq!(check(&with(&full[..5]), &body, NOW), WebhookError::SignatureMalformed);
    assert_eq!(
        check(&headers[..1], &body, NOW),
        WebhookError::SignatureMissing { header: "stripe-signature" }
    );

    let unconfigured = StripeConfig::new(SECRET_KEY);
    assert_eq!(
        stripe_webhook(&unconfigured, &headers, &body, NOW).unwrap_err().code(),
        "webhook_not_configured"
    );

    // Signed, but not an event we can read.
    let not_json = b"not json";
    assert_eq!(receive(not_json).unwrap_err().code(), "malformed_event");
    let mut bad_order = our_intent("succeeded");
    bad_order["metadata"]["order"] = json!("ord-42");
    assert_eq!(receive(&event("payment_intent.succeeded", bad_order)).unwrap_err().code(), "malformed_event");
}

#[tokio::test]
async fn a_webhook_teaches_the_provider_an_intent_whose_answer_was_lost() {
    let fake = Fake::start().await;
    let stripe = Stripe::new(fake.config(), IntentStore::new(Db::in_memory().unwrap()), http_client());
    // Stripe charged, but the process died before it read the answer: only the webhook tells.
    let form: HashMap<String, String> = [
        ("capture_method", "automatic"),
        ("currency", "eur"),
        ("metadata[shop]", SHOP),
        ("metadata[order]", "42"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    fake.stripe().intents.insert("pi_fake42".into(), intent_json("pi_fake42", &form, "succeeded", 1999));

    let body = event("payment_intent.succeeded", our_intent("succeeded"));
    let result = stripe.receive_webhook(&signed(&body, WEBHOOK_SECRET, NOW), &body, NOW).unwrap().unwrap();
    assert_eq!(result.outcome, PaymentOutcome::Paid);

    let provider = Provider::Stripe(stripe);
    provider.execute(SHOP, &undo(42, PaymentKind::Refund, eur(1999))).await.unwrap();
    assert_eq!(fake.stripe().refunds[0]["payment_intent"], "pi_fake42");
}
