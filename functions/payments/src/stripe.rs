//! Stripe PaymentIntents, sans-IO: the calls to make and what Stripe's answers mean.
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
//! for an order whose intent is already known (the host's `known` intent) posts nothing: it retrieves that
//! intent and answers what its status says now, with the mapping below. Only a charge whose
//! answer was lost before the intent was recorded (and that no webhook reported since) is posted
//! again, which is safe only while Stripe still holds its key. The retrieved intent must be the same charge: one whose
//! `metadata.payment_key` is another (the same order number in an earlier epoch of the shop) is
//! ignored and a new intent is created (unprotected by this rule: the store keeps the first
//! intent of an order number), and one with another amount or currency is refused as
//! Stripe refuses a key reused with other parameters (`idempotency_error`). A refusal of the
//! retrieval itself (`404 resource_missing`) is an error, never a failed payment.
//!
//! **The intent id is remembered per order** by the host ([`Done::remember`]; the edge node in
//! SQLite, the Worker in the shop object), written before the charge's outcome is reported:
//! cancels and refunds carry their own keys, and the order is what they share with the charge.
//! Webhooks record it too ([`StripeResult::intent`]), so a charge whose answer was lost in a
//! crash can still be refunded once Stripe reports it. The first intent of an order stays.
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

use std::collections::HashMap;

use liveshop_shop::{Capture, Currency, Money, OrderId, PaymentKind, PaymentOutcome, PaymentRequest};
use liveshop_webhooks::{DEFAULT_TOLERANCE_SECS, stripe as signature};
use serde::{Deserialize, Serialize};

use crate::PaymentError;

/// Stripe's API, unless a test or a proxy says otherwise.
pub const API_BASE: &str = "https://api.stripe.com";
/// The API version every request asks for (`Stripe-Version`): the shapes parsed here are this
/// version's.
pub const API_VERSION: &str = "2024-06-20";

/// How a host talks to one Stripe account.
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

/// Checks that `id` can be a PaymentIntent's: hosts store it and put it into URL paths later, so
/// only what Stripe ids are made of is accepted.
pub fn check_intent_id(id: &str) -> Result<(), PaymentError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(PaymentError::MalformedResponse(format!("not a PaymentIntent id: {id:?}")));
    }
    Ok(())
}

/// What a verified Stripe webhook says about one of our orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeResult {
    pub shop: String,
    pub order: OrderId,
    pub outcome: PaymentOutcome,
    /// The PaymentIntent (a checked id), to remember for later cancels and refunds.
    pub intent: String,
}

/// One HTTP call to Stripe, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The API path (`/v1/payment_intents`), for logs.
    pub path: String,
    /// The config's API base and the path.
    pub url: String,
    /// The secret key, the pinned version, and for POSTs the form's content type and the
    /// `Idempotency-Key` (scoped by shop).
    pub headers: Vec<(&'static str, String)>,
    /// The form-encoded body of a POST (possibly empty); none for a GET.
    pub body: Option<String>,
}

impl Call {
    /// A header by (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Stripe's answer to a [`Call`], as the host received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The `Stripe-Should-Retry` header: `Some(true)`/`Some(false)` when Stripe said, else `None`.
    pub should_retry: Option<bool>,
    pub body: Vec<u8>,
}

impl Response {
    /// Reads `Stripe-Should-Retry` from a header value.
    pub fn should_retry(header: Option<&str>) -> Option<bool> {
        match header {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        }
    }
}

/// What the host does next.
#[derive(Debug)]
pub enum Step {
    /// Send this call and feed its answer to [`Operation::receive`]; if no answer comes (network,
    /// timeout), the request ends with [`PaymentError::ProviderUnavailable`].
    Send(Call),
    Done(Done),
}

/// The end of one request.
#[derive(Debug)]
pub struct Done {
    /// An intent to record as the order's charge (a checked id) before reporting the result;
    /// the first one recorded for an order stays.
    pub remember: Option<String>,
    pub result: Result<Vec<PaymentOutcome>, PaymentError>,
}

/// Carries out `req` for `shop` with the host's `send`: every call of one [`Operation`] in
/// turn. A call that gets no answer at all ends it with `send`'s error (nothing to remember).
pub async fn carry_out<F>(
    config: &StripeConfig,
    shop: &str,
    req: &PaymentRequest,
    known: Option<&str>,
    mut send: impl FnMut(Call) -> F,
) -> Result<Done, PaymentError>
where
    F: std::future::Future<Output = Result<Response, PaymentError>>,
{
    let (mut op, mut step) = Operation::start(config, shop, req, known);
    loop {
        match step {
            Step::Send(call) => step = op.receive(send(call).await?),
            Step::Done(done) => return Ok(done),
        }
    }
}

/// One [`PaymentRequest`] being carried out at Stripe.
pub struct Operation<'a> {
    config: &'a StripeConfig,
    shop: String,
    req: PaymentRequest,
    waiting: Waiting,
}

/// Which answer the operation waits for.
enum Waiting {
    /// A charge's retrieval of the order's known intent (Stripe's `amount` and `currency`).
    Retrieval {
        amount: i64,
        currency: String,
    },
    /// A charge's new intent.
    Creation,
    Capture,
    Cancel,
    Refund,
}

/// Stripe's answer to one call, when it is an answer (transient failures are errors).
enum Reply {
    Success(Vec<u8>),
    Refused { status: u16, error: StripeError },
}

impl<'a> Operation<'a> {
    /// Starts `req` for `shop`; `known` is the intent the host remembers for the order, if any.
    pub fn start(
        config: &'a StripeConfig,
        shop: &str,
        req: &PaymentRequest,
        known: Option<&str>,
    ) -> (Operation<'a>, Step) {
        let mut op =
            Operation { config, shop: shop.to_string(), req: req.clone(), waiting: Waiting::Creation };
        let step = match req.kind {
            PaymentKind::Charge => op.charge(known),
            PaymentKind::Capture => op.capture(known).unwrap_or_else(|e| done(Err(e))),
            PaymentKind::Cancel => match known {
                // The charge never reached Stripe, so there is nothing to void. Were it still in
                // flight and to succeed, the shop answers that `paid` with a refund.
                None => done(Ok(Vec::new())),
                Some(intent) => {
                    op.waiting = Waiting::Cancel;
                    op.post(format!("/v1/payment_intents/{intent}/cancel"), &[])
                }
            },
            PaymentKind::Refund => op.refund(known).unwrap_or_else(|e| done(Err(e))),
        };
        (op, step)
    }

    /// Feeds Stripe's answer to the last [`Step::Send`].
    pub fn receive(&mut self, response: Response) -> Step {
        let reply = match sort(response) {
            Ok(reply) => reply,
            Err(e) => return done(Err(e)),
        };
        match self.waiting {
            Waiting::Retrieval { amount, ref currency } => {
                let currency = currency.clone();
                self.retrieved(reply, amount, &currency)
            }
            Waiting::Creation => self.created(reply),
            Waiting::Capture => done(self.captured(reply)),
            Waiting::Cancel => done(match reply {
                Reply::Success(_) => Ok(Vec::new()),
                // Cancelled already (by an earlier key, or by Stripe): what we asked for holds.
                Reply::Refused { error, .. }
                    if error.payment_intent.as_ref().is_some_and(|pi| pi.status == "canceled") =>
                {
                    Ok(Vec::new())
                }
                Reply::Refused { status, error } => Err(error.into_rejected(status)),
            }),
            Waiting::Refund => done(match reply {
                Reply::Success(_) => Ok(Vec::new()),
                // Refunded in full already: nothing is left to give back.
                Reply::Refused { error, .. } if error.code.as_deref() == Some("charge_already_refunded") => {
                    Ok(Vec::new())
                }
                Reply::Refused { status, error } => Err(error.into_rejected(status)),
            }),
        }
    }

    fn charge(&mut self, known: Option<&str>) -> Step {
        // Refusals Stripe would give anyway, answered without a call so the buyer hears at once.
        let amount = match stripe_amount(self.req.amount) {
            Ok(amount) => amount,
            Err(e) => return failed(e.code()),
        };
        let currency = self.req.amount.currency.code().to_ascii_lowercase();
        match known {
            // Created already: read it rather than risk a second intent once Stripe forgot the key.
            Some(id) => {
                self.waiting = Waiting::Retrieval { amount, currency };
                self.get(&format!("/v1/payment_intents/{id}"))
            }
            None => self.create(amount, currency),
        }
    }

    fn create(&mut self, amount: i64, currency: String) -> Step {
        let req = &self.req;
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
            ("metadata[shop]", self.shop.clone()),
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
        self.waiting = Waiting::Creation;
        self.post("/v1/payment_intents".into(), &form)
    }

    /// A charge repeated for an order whose intent is known: what the intent says now, or a new
    /// intent when it belongs to another charge of the same order number (an earlier epoch of
    /// the shop).
    fn retrieved(&mut self, reply: Reply, amount: i64, currency: &str) -> Step {
        let intent: Intent = match reply {
            Reply::Success(body) => match parse(&body) {
                Ok(intent) => intent,
                Err(e) => return done(Err(e)),
            },
            // Even 404 resource_missing: the charge was made under this account, so something is
            // wrong with the configuration, and money may have moved; not a failed payment.
            Reply::Refused { status, error } => return done(Err(error.into_rejected(status))),
        };
        if intent.metadata.get("payment_key").is_some_and(|key| *key != self.req.idempotency_key) {
            return self.create(amount, currency.to_string());
        }
        if intent.amount.is_some_and(|a| a != amount)
            || intent.currency.as_deref().is_some_and(|c| c != currency)
        {
            return done(Err(PaymentError::ProviderRejected {
                status: 400,
                code: "idempotency_error".into(),
                message: format!(
                    "order {} already has PaymentIntent {} for {:?} {:?}, not {amount} {currency}",
                    self.req.order, intent.id, intent.amount, intent.currency
                ),
            }));
        }
        done(intent.outcomes())
    }

    fn created(&mut self, reply: Reply) -> Step {
        match reply {
            Reply::Success(body) => match parse::<Intent>(&body) {
                Ok(intent) => remembering(&intent.id, intent.outcomes()),
                Err(e) => done(Err(e)),
            },
            Reply::Refused { status, error } => {
                let result = match error.kind.as_str() {
                    "card_error" => Ok(failure(error.reason().unwrap_or("card_declined"))),
                    // The key was used with other parameters: the first request may have
                    // charged, so this must not be reported as a failed payment.
                    "idempotency_error" => Err(error.clone().into_rejected(status)),
                    _ => Ok(failure(error.code.as_deref().unwrap_or("provider_rejected"))),
                };
                // A declined confirmation still created an intent; remember it for the cancel.
                match &error.payment_intent {
                    Some(intent) => remembering(&intent.id, result),
                    None => done(result),
                }
            }
        }
    }

    fn captured(&self, reply: Reply) -> Result<Vec<PaymentOutcome>, PaymentError> {
        match reply {
            Reply::Success(body) => parse::<Intent>(&body)?.outcomes(),
            Reply::Refused { status, error } => match error.payment_intent.as_deref() {
                // Captured already (under an earlier key, or in the dashboard): what we asked for holds.
                Some(pi) if pi.status == "succeeded" => Ok(vec![PaymentOutcome::Paid]),
                // Voided, or the authorization expired: there is nothing left to capture.
                Some(pi) if pi.status == "canceled" => Ok(failure("canceled")),
                _ if error.kind == "card_error" => Ok(failure(error.reason().unwrap_or("capture_declined"))),
                _ => Err(error.into_rejected(status)),
            },
        }
    }

    /// Captures the authorized intent of a manually captured charge, in full.
    fn capture(&mut self, known: Option<&str>) -> Result<Step, PaymentError> {
        let amount = stripe_amount(self.req.amount)?;
        let intent = self.known(known)?;
        self.waiting = Waiting::Capture;
        Ok(self.post(
            format!("/v1/payment_intents/{intent}/capture"),
            &[("amount_to_capture", amount.to_string())],
        ))
    }

    fn refund(&mut self, known: Option<&str>) -> Result<Step, PaymentError> {
        let amount = stripe_amount(self.req.amount)?;
        let intent = self.known(known)?;
        let form = [
            ("payment_intent", intent.to_string()),
            ("amount", amount.to_string()),
            ("metadata[shop]", self.shop.clone()),
            ("metadata[order]", self.req.order.to_string()),
        ];
        self.waiting = Waiting::Refund;
        Ok(self.post("/v1/refunds".into(), &form))
    }

    /// The order's intent, which a capture or a refund needs.
    fn known<'k>(&self, known: Option<&'k str>) -> Result<&'k str, PaymentError> {
        known.ok_or_else(|| PaymentError::IntentUnknown { shop: self.shop.clone(), order: self.req.order.0 })
    }

    /// A form POST under the request's key, scoped by shop.
    fn post(&self, path: String, form: &[(&str, String)]) -> Step {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut call = self.call("POST", path);
        call.headers.push(("content-type", "application/x-www-form-urlencoded".into()));
        call.headers.push(("idempotency-key", format!("{}/{}", self.shop, self.req.idempotency_key)));
        call.body = Some(body);
        Step::Send(call)
    }

    /// A GET (reads need no idempotency key).
    fn get(&self, path: &str) -> Step {
        Step::Send(self.call("GET", path.to_string()))
    }

    /// The secret key and the pinned API version.
    fn call(&self, method: &'static str, path: String) -> Call {
        Call {
            method,
            url: format!("{}{path}", self.config.api_base.trim_end_matches('/')),
            path,
            headers: vec![
                ("authorization", format!("Bearer {}", self.config.secret_key)),
                ("stripe-version", API_VERSION.into()),
            ],
            body: None,
        }
    }
}

fn done(result: Result<Vec<PaymentOutcome>, PaymentError>) -> Step {
    Step::Done(Done { remember: None, result })
}

/// Done, with `id` to record first; an id that cannot be one makes the answer unreadable.
fn remembering(id: &str, result: Result<Vec<PaymentOutcome>, PaymentError>) -> Step {
    match check_intent_id(id) {
        Ok(()) => Step::Done(Done { remember: Some(id.to_string()), result }),
        Err(e) => done(Err(e)),
    }
}

fn failure(reason: &str) -> Vec<PaymentOutcome> {
    vec![PaymentOutcome::Failed { reason: reason.to_string() }]
}

fn failed(reason: &str) -> Step {
    done(Ok(failure(reason)))
}

/// Sorts an answer into a [`Reply`] or a transient [`PaymentError::ProviderUnavailable`].
fn sort(response: Response) -> Result<Reply, PaymentError> {
    let status = response.status;
    // Stripe says outright whether a retry can help; without the header, judge by status.
    // 409: another request with this key is still running; 429: rate limited.
    let transient = response.should_retry.unwrap_or(status == 409 || status == 429 || status >= 500);
    if (200..300).contains(&status) {
        Ok(Reply::Success(response.body))
    } else if transient {
        Err(PaymentError::ProviderUnavailable(format!("Stripe answered {status}")))
    } else {
        let error = serde_json::from_slice::<ErrorBody>(&response.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| StripeError { kind: format!("http_{status}"), ..StripeError::default() });
        Ok(Reply::Refused { status, error })
    }
}

/// Stripe's error object (`{"error": {...}}`), also used for an intent's `last_payment_error`.
#[derive(Debug, Clone, Default, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
struct NextAction {
    redirect_to_url: Option<Redirect>,
}

#[derive(Debug, Clone, Deserialize)]
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
            "canceled" => failure("canceled"),
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
/// matter; the shop already ignores an outcome it has applied. The host remembers the result's
/// intent for the order, as for a charge's.
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
        return Ok(None);
    };
    let order = order
        .parse()
        .map(OrderId)
        .map_err(|_| PaymentError::MalformedEvent(format!("metadata.order is not an order id: {order:?}")))?;
    check_intent_id(&intent.id).map_err(|e| PaymentError::MalformedEvent(e.to_string()))?;
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
    fn intent_ids_that_could_escape_a_url_path_are_refused() {
        assert!(check_intent_id("pi_3Mtw").is_ok());
        for bad in ["", "pi_1/../x", "pi 1", "pi_1?x=y"] {
            assert_eq!(check_intent_id(bad).unwrap_err().code(), "provider_malformed_response", "{bad:?}");
        }
    }

    fn charge() -> PaymentRequest {
        PaymentRequest {
            order: OrderId(3),
            kind: PaymentKind::Charge,
            amount: Money::new(1999, Currency::Eur),
            idempotency_key: "7-ord3".into(),
            method: Some("tok_visa".into()),
            capture: Capture::Automatic,
        }
    }

    fn answer(status: u16, body: &str) -> Response {
        Response { status, should_retry: None, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn a_charge_posts_a_form_under_the_shops_key_and_remembers_its_intent() {
        let config =
            StripeConfig { api_base: "http://stripe.test/".into(), ..StripeConfig::new("sk_test_1") };
        let (mut op, step) = Operation::start(&config, "shop a", &charge(), None);
        let Step::Send(call) = step else { panic!("a charge calls Stripe") };
        assert_eq!((call.method, call.url.as_str()), ("POST", "http://stripe.test/v1/payment_intents"));
        assert_eq!(call.header("idempotency-key"), Some("shop a/7-ord3"));
        assert_eq!(call.header("authorization"), Some("Bearer sk_test_1"));
        assert_eq!(call.header("stripe-version"), Some(API_VERSION));
        let body = call.body.unwrap();
        assert!(body.starts_with("amount=1999&currency=eur&confirm=true&"), "{body}");
        assert!(body.contains("metadata%5Bshop%5D=shop+a"), "form-encoded: {body}");
        let Step::Done(done) = op.receive(answer(200, r#"{"id": "pi_1", "status": "succeeded"}"#)) else {
            panic!("one call")
        };
        assert_eq!(
            (done.remember.as_deref(), done.result.unwrap()),
            (Some("pi_1"), vec![PaymentOutcome::Paid])
        );
    }

    #[test]
    fn a_known_intent_is_read_not_created_and_transient_answers_are_errors_to_retry() {
        let config = StripeConfig::new("sk_test_1");
        let (mut op, step) = Operation::start(&config, "s", &charge(), Some("pi_9"));
        let Step::Send(call) = step else { panic!() };
        assert_eq!(call.header("idempotency-key"), None);
        assert_eq!((call.method, call.path.as_str(), call.body), ("GET", "/v1/payment_intents/pi_9", None));
        let Step::Done(done) = op.receive(answer(503, "")) else { panic!() };
        assert!(done.result.unwrap_err().retryable());
        // Stripe's header wins over the status.
        let (mut op, _) = Operation::start(&config, "s", &charge(), Some("pi_9"));
        let refused =
            Response { should_retry: Some(false), ..answer(500, r#"{"error": {"type": "api_error"}}"#) };
        let Step::Done(done) = op.receive(refused) else { panic!() };
        assert_eq!(done.result.unwrap_err().code(), "provider_rejected");
    }
}
