//! Stripe PaymentIntents, over Stripe's HTTP API.
//!
//! | shop request | Stripe call | key (`Idempotency-Key`) |
//! |---|---|---|
//! | `Charge` | `POST /v1/payment_intents` with `confirm=true`, `capture_method=automatic` (or `manual`, see below) | `{shop}/{idempotency_key}` |
//! | `Charge` of an order whose intent is known | `GET /v1/payment_intents/{id}` | none |
//! | `Capture` | `POST /v1/payment_intents/{id}/capture` with `amount_to_capture` | `{shop}/{idempotency_key}` |
//! | `Cancel` | `POST /v1/payment_intents/{id}/cancel` | `{shop}/{idempotency_key}` |
//! | `Refund` | `POST /v1/refunds` with `payment_intent={id}` and `amount` | `{shop}/{idempotency_key}` |
//!
//! Requests are form-encoded, authenticated with `Authorization: Bearer sk_...`, and pinned to
//! [`API_VERSION`] so a change of the account's default version cannot change the shapes we read.
//!
//! **Idempotency keys are scoped by shop.** Stripe scopes keys per account, and the shop's keys
//! (`{epoch}-ord{n}`) are unique only within one shop: two shops sharing one Stripe account would
//! otherwise be handed each other's charges. A repeated request (after a crash, a timeout) reuses
//! the key, so Stripe replays its first answer instead of charging again.
//!
//! **A charge is created at most once per order; a repeat reads the intent.** Stripe forgets an
//! idempotency key after 24 hours, and the node re-issues a shop's pending charges whenever the
//! shop revives, however old they are (3-D Secure never finished, `processing`). So a `Charge`
//! for an order whose intent is already known ([`IntentStore`]) posts nothing: it retrieves that
//! intent and answers what its status says now, with the mapping below. Only a charge whose
//! answer was lost before the intent was recorded (and that no webhook reported since) is posted
//! again, which is safe only while Stripe still holds its key. The retrieved intent must be the same charge: one whose
//! `metadata.payment_key` is another (the same order number in an earlier epoch of the shop) is
//! ignored and a new intent is created (unprotected by this rule: the store keeps the first
//! intent of an order number), and one with another amount or currency is refused as
//! Stripe refuses a key reused with other parameters (`idempotency_error`). A refusal of the
//! retrieval itself (`404 resource_missing`) is an error, never a failed payment.
//!
//! **The intent id is remembered per order** in the node's SQLite ([`IntentStore`]), written
//! before the charge's outcome is returned: cancels and refunds carry their own keys, and the
//! order is what they share with the charge. Webhooks record it too ([`Stripe::receive_webhook`]),
//! so a charge whose answer was lost in a crash can still be refunded once Stripe reports it.
//!
//! **The PaymentIntent status becomes outcomes**: `succeeded` -> `Paid`; `requires_capture` ->
//! `Authorized`; `requires_action` -> `RequiresAction` with `next_action.redirect_to_url.url`
//! (Stripe gives a redirect URL only when a `return_url` is sent, see
//! [`StripeConfig::return_url`]); `processing` -> nothing yet, a webhook follows;
//! `requires_payment_method` -> `Failed` with the decline code of `last_payment_error`. A `402`
//! `card_error` is `Failed` with its `decline_code`, or its `code` when it has none.
//!
//! **Authorize now, capture at fulfilment.** A charge with [`Capture::Manual`] (the shop setting
//! `capture: "on_fulfilment"`) is created with `capture_method=manual`: Stripe authorizes it and
//! answers `requires_capture`, which is `Authorized`. The shop's `Capture` request, sent when the
//! merchant fulfils the order, posts `/capture` for the order's remembered intent: `succeeded` is
//! `Paid`. An intent that is `succeeded` already (captured under an earlier key, or in the
//! dashboard) counts as captured, so Stripe's `payment_intent_unexpected_state` refusal of a
//! repeat is `Paid` too; a `canceled` one (voided, or its authorization expired after 7 days) is
//! `Failed` (`canceled`), and a `card_error` is `Failed` with its decline code: the shop then keeps
//! the order authorized for the merchant to retry or cancel. A capture for an order with no known
//! intent is [`PaymentError::IntentUnknown`], as a refund is.
//!
//! **Amounts** are the shop's ISO 4217 minor units, which is what Stripe expects for nearly every
//! currency, with the exceptions in [`stripe_amount`].
//!
//! Tested in `edge/tests/stripe.rs` against a local HTTP server that answers as Stripe's API
//! reference documents, not against Stripe itself.

use std::collections::HashMap;

use liveshop_shop::{Capture, Currency, Money, OrderId, PaymentKind, PaymentOutcome, PaymentRequest};
use liveshop_webhooks::{DEFAULT_TOLERANCE_SECS, stripe as signature};
use serde::Deserialize;

use super::PaymentError;
use crate::sqlite::Db;

/// Stripe's API, unless a test or a proxy says otherwise.
pub const API_BASE: &str = "https://api.stripe.com";
/// The API version every request asks for (`Stripe-Version`): the shapes parsed here are this
/// version's.
pub const API_VERSION: &str = "2024-06-20";

/// How the edge node talks to one Stripe account.
#[derive(Clone)]
pub struct StripeConfig {
    /// [`API_BASE`], or a local server in tests.
    pub api_base: String,
    /// The secret API key, `sk_live_...` or `sk_test_...`.
    pub secret_key: String,
    /// The endpoint secret (`whsec_...`) of the webhook endpoint Stripe posts to; without it every
    /// inbound webhook is refused.
    pub webhook_secret: Option<String>,
    /// Where Stripe sends the buyer back after 3-D Secure. With it, an intent that needs the buyer
    /// answers `next_action.redirect_to_url.url`, a page the viewer can open; without it Stripe
    /// expects Stripe.js on the page (`use_stripe_sdk`) and the outcome carries no URL.
    pub return_url: Option<String>,
}

impl StripeConfig {
    /// A configuration for [`API_BASE`] with no webhook secret and no return URL.
    pub fn new(secret_key: impl Into<String>) -> Self {
        StripeConfig {
            api_base: API_BASE.to_string(),
            secret_key: secret_key.into(),
            webhook_secret: None,
            return_url: None,
        }
    }
}

impl std::fmt::Debug for StripeConfig {
    /// Never prints the secrets: configs end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig")
            .field("api_base", &self.api_base)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| ".."))
            .field("return_url", &self.return_url)
            .finish_non_exhaustive()
    }
}

/// Stripe's `amount` for `money`: the ISO 4217 minor units, except where Stripe's currency guide
/// (docs.stripe.com/currencies) says otherwise.
///
/// - ISK: ISO has no minor unit, but Stripe keeps ISK two-decimal for backwards compatibility and
///   requires whole krónur, so 500 ISK is sent as `50000`.
/// - BHD, JOD, KWD, OMR, TND (three decimals): Stripe takes them, but only with the last digit 0.
///   An amount that is not a multiple of 10 fils is refused rather than rounded: the shop fixed
///   the total the buyer agreed to, and we do not charge a different one.
/// - IQD, LYD: not among Stripe's presentment currencies (its three-decimal list names only the
///   five above), so refused.
/// - HUF, TWD: Stripe treats them as zero-decimal for *payouts* only; charges take ISO's two
///   decimals, so they pass unchanged. Zero-decimal JPY, KRW, VND, CLP, XOF, XAF, PYG and UGX are
///   zero-decimal at Stripe too.
pub fn stripe_amount(money: Money) -> Result<i64, PaymentError> {
    use Currency::*;
    // Exhaustive on purpose: a currency added to the shop must be placed here by someone who
    // checked Stripe's guide, since a wrong guess is off by a factor of 100.
    match money.currency {
        Eur | Usd | Gbp | Chf | Sek | Nok | Dkk | Pln | Czk | Huf | Ron | Cad | Aud | Nzd | Sgd | Hkd
        | Cny | Inr | Brl | Mxn | Zar | Try | Ils | Aed | Sar | Thb | Myr | Php | Idr | Twd => {
            Ok(money.minor)
        }
        Jpy | Krw | Vnd | Clp | Xof | Xaf | Pyg | Ugx => Ok(money.minor),
        Isk => money.minor.checked_mul(100).ok_or(PaymentError::AmountUnsupported(money)),
        Kwd | Bhd | Omr | Jod | Tnd if money.minor % 10 == 0 => Ok(money.minor),
        Kwd | Bhd | Omr | Jod | Tnd => Err(PaymentError::AmountUnsupported(money)),
        Lyd | Iqd => Err(PaymentError::CurrencyUnsupported(money.currency)),
    }
}

/// Stripe's `capture_method` for a charge.
fn capture_method(capture: Capture) -> &'static str {
    match capture {
        Capture::Automatic => "automatic",
        Capture::Manual => "manual",
    }
}

const INTENT_RECORD: &str = "stripe_intent";

/// Which PaymentIntent each order's charge created, kept in the node's SQLite so a cancel or a
/// refund after a restart still finds it. The first intent recorded for an order stays.
#[derive(Clone)]
pub struct IntentStore {
    db: Db,
}

#[derive(serde::Serialize, Deserialize)]
struct IntentRecord {
    intent: String,
}

impl IntentStore {
    pub fn new(db: Db) -> Self {
        IntentStore { db }
    }

    /// Records `intent` as the charge of `order` in `shop`.
    pub fn remember(&self, shop: &str, order: OrderId, intent: &str) -> Result<(), PaymentError> {
        // The id goes into a URL path later: accept only what Stripe ids are made of.
        if intent.is_empty() || !intent.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(PaymentError::MalformedResponse(format!("not a PaymentIntent id: {intent:?}")));
        }
        let body = serde_json::to_string(&IntentRecord { intent: intent.to_string() })
            .expect("a struct of one string always serializes");
        if !self.db.insert_record(INTENT_RECORD, &record_id(shop, order), &body)? {
            let known = self.intent(shop, order)?;
            if known.as_deref() != Some(intent) {
                // Only if a repeat came after Stripe forgot the key (24 h): two charges for one order.
                tracing::warn!(shop, %order, ?known, intent, "a second PaymentIntent for one order; keeping the first");
            }
        }
        Ok(())
    }

    /// The intent recorded for `order` in `shop`, if any.
    pub fn intent(&self, shop: &str, order: OrderId) -> Result<Option<String>, PaymentError> {
        let Some(body) = self.db.record(INTENT_RECORD, &record_id(shop, order))? else { return Ok(None) };
        let record: IntentRecord = serde_json::from_str(&body)
            .map_err(|e| PaymentError::MalformedResponse(format!("stored intent record: {e}")))?;
        Ok(Some(record.intent))
    }
}

fn record_id(shop: &str, order: OrderId) -> String {
    format!("{shop}/{order}")
}

/// The Stripe provider: a configuration, where intents are remembered, and an HTTP client.
#[derive(Clone)]
pub struct Stripe {
    config: StripeConfig,
    intents: IntentStore,
    client: reqwest::Client,
}

/// What a verified Stripe webhook says about one of our orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeResult {
    pub shop: String,
    pub order: OrderId,
    pub outcome: PaymentOutcome,
    /// The PaymentIntent, to remember for later cancels and refunds ([`IntentStore::remember`]).
    pub intent: String,
}

/// Stripe's answer to one call, when it is an answer (transient failures are errors).
enum Reply {
    Success(Vec<u8>),
    Refused { status: u16, error: StripeError },
}

/// Stripe's error object (`{"error": {...}}`), also used for an intent's `last_payment_error`.
#[derive(Debug, Default, Deserialize)]
struct StripeError {
    #[serde(rename = "type", default)]
    kind: String,
    code: Option<String>,
    decline_code: Option<String>,
    message: Option<String>,
    /// Present on errors about an intent, such as a declined confirmation.
    payment_intent: Option<Box<Intent>>,
}

impl StripeError {
    /// The reason the shop records: the issuer's decline code when there is one
    /// (`insufficient_funds`), else Stripe's error code (`expired_card`).
    fn reason(&self) -> Option<&str> {
        self.decline_code.as_deref().or(self.code.as_deref())
    }

    fn into_rejected(self, status: u16) -> PaymentError {
        PaymentError::ProviderRejected {
            status,
            code: self.code.unwrap_or(self.kind),
            message: self.message.unwrap_or_default(),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: StripeError,
}

/// The parts of a PaymentIntent we read.
#[derive(Debug, Deserialize)]
struct Intent {
    id: String,
    status: String,
    /// In Stripe's units ([`stripe_amount`]); compared when a charge is repeated.
    amount: Option<i64>,
    /// Lowercase ISO code, as sent.
    currency: Option<String>,
    next_action: Option<NextAction>,
    last_payment_error: Option<StripeError>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct NextAction {
    redirect_to_url: Option<Redirect>,
}

#[derive(Debug, Deserialize)]
struct Redirect {
    url: Option<String>,
}

impl Intent {
    fn requires_action(&self) -> PaymentOutcome {
        let url =
            self.next_action.as_ref().and_then(|a| a.redirect_to_url.as_ref()).and_then(|r| r.url.clone());
        PaymentOutcome::RequiresAction { url }
    }

    fn failed(&self, otherwise: &str) -> PaymentOutcome {
        let reason = self.last_payment_error.as_ref().and_then(StripeError::reason).unwrap_or(otherwise);
        PaymentOutcome::Failed { reason: reason.to_string() }
    }

    /// What the intent's status says about the charge.
    fn outcomes(&self) -> Result<Vec<PaymentOutcome>, PaymentError> {
        Ok(match self.status.as_str() {
            "succeeded" => vec![PaymentOutcome::Paid],
            "requires_capture" => vec![PaymentOutcome::Authorized],
            "requires_action" => vec![self.requires_action()],
            // Settles later; payment_intent.succeeded or .payment_failed will say how.
            "processing" => Vec::new(),
            "requires_payment_method" => vec![self.failed("requires_payment_method")],
            // A replayed create whose intent we cancelled since, or one Stripe cancelled.
            "canceled" => vec![PaymentOutcome::Failed { reason: "canceled".into() }],
            // requires_confirmation cannot follow confirm=true; anything else is newer than us.
            other => {
                return Err(PaymentError::MalformedResponse(format!(
                    "PaymentIntent {} has unexpected status {other:?}",
                    self.id
                )));
            }
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PaymentError> {
    serde_json::from_slice(body).map_err(|e| PaymentError::MalformedResponse(e.to_string()))
}

impl Stripe {
    pub fn new(config: StripeConfig, intents: IntentStore, client: reqwest::Client) -> Self {
        Stripe { config, intents, client }
    }

    pub fn config(&self) -> &StripeConfig {
        &self.config
    }

    pub(super) async fn execute(
        &self,
        shop: &str,
        req: &PaymentRequest,
    ) -> Result<Vec<PaymentOutcome>, PaymentError> {
        match req.kind {
            PaymentKind::Charge => self.charge(shop, req).await,
            PaymentKind::Capture => self.capture(shop, req).await,
            PaymentKind::Cancel => self.cancel(shop, req).await.map(|()| Vec::new()),
            PaymentKind::Refund => self.refund(shop, req).await.map(|()| Vec::new()),
        }
    }

    /// [`stripe_webhook`] with this provider's config, remembering the intent it reports.
    pub fn receive_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
        now_secs: u64,
    ) -> Result<Option<StripeResult>, PaymentError> {
        let result = stripe_webhook(&self.config, headers, body, now_secs)?;
        if let Some(r) = &result {
            self.intents.remember(&r.shop, r.order, &r.intent)?;
        }
        Ok(result)
    }

    async fn charge(&self, shop: &str, req: &PaymentRequest) -> Result<Vec<PaymentOutcome>, PaymentError> {
        let failed = |reason: &str| Ok(vec![PaymentOutcome::Failed { reason: reason.to_string() }]);
        // Refusals Stripe would give anyway, answered without a call so the buyer hears at once.
        let amount = match stripe_amount(req.amount) {
            Ok(amount) => amount,
            Err(e) => return failed(e.code()),
        };
        let currency = req.amount.currency.code().to_ascii_lowercase();
        // Created already: read it rather than risk a second intent once Stripe forgot the key.
        if let Some(id) = self.intents.intent(shop, req.order)?
            && let Some(outcomes) = self.retrieve_charge(shop, req, &id, amount, &currency).await?
        {
            return Ok(outcomes);
        }
        let Some(method) = req.method.as_deref().filter(|m| !m.is_empty()) else {
            // As the test provider answers a charge without a usable method.
            return failed("invalid_payment_method");
        };
        let mut form = vec![
            ("amount", amount.to_string()),
            ("currency", currency),
            ("confirm", "true".into()),
            ("capture_method", capture_method(req.capture).into()),
            // Cards only: with the default automatic payment methods, confirming requires a
            // return_url even for cards, and would offer methods the shop never set up.
            ("payment_method_types[0]", "card".into()),
            ("metadata[shop]", shop.to_string()),
            ("metadata[order]", req.order.to_string()),
            ("metadata[payment_key]", req.idempotency_key.clone()),
        ];
        if method.starts_with("pm_") {
            form.push(("payment_method", method.to_string()));
        } else {
            form.push(("payment_method_data[type]", "card".into()));
            form.push(("payment_method_data[card][token]", method.to_string()));
        }
        if let Some(url) = &self.config.return_url {
            form.push(("return_url", url.clone()));
        }
        match self.post(shop, "/v1/payment_intents", &req.idempotency_key, &form).await? {
            Reply::Success(body) => {
                let intent: Intent = parse(&body)?;
                self.intents.remember(shop, req.order, &intent.id)?;
                intent.outcomes()
            }
            Reply::Refused { status, error } => {
                // A declined confirmation still created an intent; remember it for the cancel.
                if let Some(intent) = &error.payment_intent {
                    self.intents.remember(shop, req.order, &intent.id)?;
                }
                match error.kind.as_str() {
                    "card_error" => failed(error.reason().unwrap_or("card_declined")),
                    // The key was used with other parameters: the first request may have
                    // charged, so this must not be reported as a failed payment.
                    "idempotency_error" => Err(error.into_rejected(status)),
                    _ => {
                        tracing::warn!(shop, order = %req.order, status, ?error, "Stripe refused a charge");
                        failed(error.code.as_deref().unwrap_or("provider_rejected"))
                    }
                }
            }
        }
    }

    /// A charge repeated for an order whose intent `id` is known: what the intent says now, or
    /// `None` when it belongs to another charge of the same order number (an earlier epoch of the
    /// shop), which then needs an intent of its own.
    async fn retrieve_charge(
        &self,
        shop: &str,
        req: &PaymentRequest,
        id: &str,
        amount: i64,
        currency: &str,
    ) -> Result<Option<Vec<PaymentOutcome>>, PaymentError> {
        let intent: Intent = match self.get(&format!("/v1/payment_intents/{id}")).await? {
            Reply::Success(body) => parse(&body)?,
            // Even 404 resource_missing: the charge was made under this account, so something is
            // wrong with the configuration, and money may have moved; not a failed payment.
            Reply::Refused { status, error } => return Err(error.into_rejected(status)),
        };
        if intent.metadata.get("payment_key").is_some_and(|key| *key != req.idempotency_key) {
            tracing::warn!(shop, order = %req.order, intent = intent.id, key = req.idempotency_key,
                "the known PaymentIntent is another charge's (an earlier epoch); creating one");
            return Ok(None);
        }
        if intent.amount.is_some_and(|a| a != amount)
            || intent.currency.as_deref().is_some_and(|c| c != currency)
        {
            return Err(PaymentError::ProviderRejected {
                status: 400,
                code: "idempotency_error".into(),
                message: format!(
                    "order {} already has PaymentIntent {} for {:?} {:?}, not {amount} {currency}",
                    req.order, intent.id, intent.amount, intent.currency
                ),
            });
        }
        intent.outcomes().map(Some)
    }

    /// Captures the authorized intent of a manually captured charge, in full.
    async fn capture(&self, shop: &str, req: &PaymentRequest) -> Result<Vec<PaymentOutcome>, PaymentError> {
        let amount = stripe_amount(req.amount)?;
        let Some(intent) = self.intents.intent(shop, req.order)? else {
            return Err(PaymentError::IntentUnknown { shop: shop.to_string(), order: req.order.0 });
        };
        let path = format!("/v1/payment_intents/{intent}/capture");
        let form = [("amount_to_capture", amount.to_string())];
        match self.post(shop, &path, &req.idempotency_key, &form).await? {
            Reply::Success(body) => parse::<Intent>(&body)?.outcomes(),
            Reply::Refused { status, error } => match error.payment_intent.as_deref() {
                // Captured already (under an earlier key, or in the dashboard): what we asked for holds.
                Some(pi) if pi.status == "succeeded" => Ok(vec![PaymentOutcome::Paid]),
                // Voided, or the authorization expired: there is nothing left to capture.
                Some(pi) if pi.status == "canceled" => {
                    Ok(vec![PaymentOutcome::Failed { reason: "canceled".into() }])
                }
                _ if error.kind == "card_error" => {
                    let reason = error.reason().unwrap_or("capture_declined").to_string();
                    Ok(vec![PaymentOutcome::Failed { reason }])
                }
                _ => Err(error.into_rejected(status)),
            },
        }
    }

    async fn cancel(&self, shop: &str, req: &PaymentRequest) -> Result<(), PaymentError> {
        let Some(intent) = self.intents.intent(shop, req.order)? else {
            // The charge never reached Stripe, so there is nothing to void. Were it still in
            // flight and to succeed, the shop answers that `paid` with a refund.
            tracing::debug!(shop, order = %req.order, "cancel without a PaymentIntent: nothing to void");
            return Ok(());
        };
        let path = format!("/v1/payment_intents/{intent}/cancel");
        match self.post(shop, &path, &req.idempotency_key, &[]).await? {
            Reply::Success(_) => Ok(()),
            // Cancelled already (by an earlier key, or by Stripe): what we asked for holds.
            Reply::Refused { error, .. }
                if error.payment_intent.as_ref().is_some_and(|pi| pi.status == "canceled") =>
            {
                Ok(())
            }
            Reply::Refused { status, error } => Err(error.into_rejected(status)),
        }
    }

    async fn refund(&self, shop: &str, req: &PaymentRequest) -> Result<(), PaymentError> {
        let amount = stripe_amount(req.amount)?;
        let Some(intent) = self.intents.intent(shop, req.order)? else {
            return Err(PaymentError::IntentUnknown { shop: shop.to_string(), order: req.order.0 });
        };
        let form = [
            ("payment_intent", intent),
            ("amount", amount.to_string()),
            ("metadata[shop]", shop.to_string()),
            ("metadata[order]", req.order.to_string()),
        ];
        match self.post(shop, "/v1/refunds", &req.idempotency_key, &form).await? {
            Reply::Success(_) => Ok(()),
            // Refunded in full already: nothing is left to give back.
            Reply::Refused { error, .. } if error.code.as_deref() == Some("charge_already_refunded") => {
                Ok(())
            }
            Reply::Refused { status, error } => Err(error.into_rejected(status)),
        }
    }

    /// One form POST to Stripe under `key`, scoped by shop. Transient failures come back as
    /// [`PaymentError::ProviderUnavailable`]; answers (success or refusal) as a [`Reply`].
    async fn post(
        &self,
        shop: &str,
        path: &str,
        key: &str,
        form: &[(&str, String)],
    ) -> Result<Reply, PaymentError> {
        let request =
            self.client.post(self.url(path)).header("Idempotency-Key", format!("{shop}/{key}")).form(form);
        self.send(path, request).await
    }

    /// One GET from Stripe (reads need no idempotency key), answered as [`Stripe::post`] is.
    async fn get(&self, path: &str) -> Result<Reply, PaymentError> {
        self.send(path, self.client.get(self.url(path))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.api_base.trim_end_matches('/'))
    }

    /// Sends `request` with the secret key and the pinned API version, and sorts the answer into
    /// a [`Reply`] or a transient [`PaymentError::ProviderUnavailable`].
    async fn send(&self, path: &str, request: reqwest::RequestBuilder) -> Result<Reply, PaymentError> {
        let unavailable = |e: reqwest::Error| PaymentError::ProviderUnavailable(e.to_string());
        let response = request
            .bearer_auth(&self.config.secret_key)
            .header("Stripe-Version", API_VERSION)
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        // Stripe says outright whether a retry can help; without the header, judge by status.
        let should_retry = response.headers().get("stripe-should-retry").and_then(|v| v.to_str().ok());
        let transient = match should_retry {
            Some("true") => true,
            Some("false") => false,
            // 409: another request with this key is still running; 429: rate limited.
            _ => status.as_u16() == 409 || status.as_u16() == 429 || status.is_server_error(),
        };
        let body = response.bytes().await.map_err(unavailable)?.to_vec();
        if status.is_success() {
            Ok(Reply::Success(body))
        } else if transient {
            Err(PaymentError::ProviderUnavailable(format!("{status} from {path}")))
        } else {
            let error = serde_json::from_slice::<ErrorBody>(&body).map(|b| b.error).unwrap_or_else(|_| {
                StripeError { kind: format!("http_{}", status.as_u16()), ..StripeError::default() }
            });
            Ok(Reply::Refused { status: status.as_u16(), error })
        }
    }
}

/// A Stripe event, as far as we read it.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// Verifies a Stripe webhook (`Stripe-Signature`, 300 s tolerance, via
/// [`liveshop_webhooks::stripe::verify`]) and maps `payment_intent.*` events to the order they
/// are about and its outcome: `succeeded` -> `Paid`, `amount_capturable_updated` ->
/// `Authorized`, `payment_failed` -> `Failed` (decline code), `requires_action` ->
/// `RequiresAction`. `Ok(None)` for other events (`payment_intent.canceled` follows our own
/// cancel) and for intents that are not ours (no `shop`/`order` metadata). Header names match
/// case-insensitively. Feed the event id to a `liveshop_webhooks::ReplayGuard` if duplicates
/// matter; the shop already ignores an outcome it has applied.
///
/// Prefer [`Stripe::receive_webhook`], which also remembers the intent for later refunds.
pub fn stripe_webhook(
    config: &StripeConfig,
    headers: &[(String, String)],
    body: &[u8],
    now_secs: u64,
) -> Result<Option<StripeResult>, PaymentError> {
    let secret = config.webhook_secret.as_deref().ok_or(PaymentError::WebhookNotConfigured)?;
    let header =
        |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
    signature::verify(&[secret], header, body, now_secs, DEFAULT_TOLERANCE_SECS)?;

    let malformed = |e: serde_json::Error| PaymentError::MalformedEvent(e.to_string());
    let event: Event = serde_json::from_slice(body).map_err(malformed)?;
    let outcome: fn(&Intent) -> PaymentOutcome = match event.kind.as_str() {
        "payment_intent.succeeded" => |_| PaymentOutcome::Paid,
        "payment_intent.amount_capturable_updated" => |_| PaymentOutcome::Authorized,
        "payment_intent.payment_failed" => |pi| pi.failed("payment_failed"),
        "payment_intent.requires_action" => Intent::requires_action,
        _ => return Ok(None),
    };
    let intent: Intent = serde_json::from_value(event.data.object).map_err(malformed)?;
    let (Some(shop), Some(order)) = (intent.metadata.get("shop"), intent.metadata.get("order")) else {
        tracing::debug!(intent = intent.id, "Stripe event for an intent liveshop did not create");
        return Ok(None);
    };
    let order = order
        .parse()
        .map(OrderId)
        .map_err(|_| PaymentError::MalformedEvent(format!("metadata.order is not an order id: {order:?}")))?;
    Ok(Some(StripeResult { shop: shop.clone(), order, outcome: outcome(&intent), intent: intent.id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_iso_minor_units_except_where_stripe_differs() {
        let amount = |minor, currency| stripe_amount(Money::new(minor, currency)).map_err(|e| e.code());
        assert_eq!(amount(1999, Currency::Eur), Ok(1999));
        assert_eq!(amount(1500, Currency::Jpy), Ok(1500));
        assert_eq!(amount(1500, Currency::Ugx), Ok(1500));
        // Payout-only quirks: charges pass unchanged.
        assert_eq!(amount(12345, Currency::Huf), Ok(12345));
        assert_eq!(amount(12345, Currency::Twd), Ok(12345));
        // ISK: whole krónur in a two-decimal field.
        assert_eq!(amount(500, Currency::Isk), Ok(50_000));
        assert_eq!(amount(i64::MAX / 10, Currency::Isk), Err("amount_unsupported"));
        // Three decimals: only with a last digit of 0.
        assert_eq!(amount(5120, Currency::Kwd), Ok(5120));
        assert_eq!(amount(5124, Currency::Kwd), Err("amount_unsupported"));
        assert_eq!(amount(1000, Currency::Iqd), Err("currency_unsupported"));
        assert_eq!(amount(1000, Currency::Lyd), Err("currency_unsupported"));
    }

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let config = StripeConfig {
            webhook_secret: Some("whsec_do_not_print".into()),
            ..StripeConfig::new("sk_test_do_not_print")
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("do_not_print"), "{shown}");
        assert!(shown.contains(API_BASE));
    }

    #[test]
    fn intent_ids_are_kept_per_shop_and_order_and_the_first_stays() {
        let store = IntentStore::new(Db::in_memory().unwrap());
        store.remember("a", OrderId(1), "pi_first").unwrap();
        store.remember("a", OrderId(1), "pi_second").unwrap();
        store.remember("b", OrderId(1), "pi_other_shop").unwrap();
        assert_eq!(store.intent("a", OrderId(1)).unwrap().as_deref(), Some("pi_first"));
        assert_eq!(store.intent("b", OrderId(1)).unwrap().as_deref(), Some("pi_other_shop"));
        assert_eq!(store.intent("a", OrderId(2)).unwrap(), None);
        // Ids end up in URL paths.
        assert_eq!(
            store.remember("a", OrderId(3), "pi_1/../x").unwrap_err().code(),
            "provider_malformed_response"
        );
    }
}
