//! The shop routes' rules that sit outside the shop's core, written once for every host: the
//! claim a new show makes on its shop, webhook secrets issued to a merchant, signed merchant
//! updates coming in (ours and Shopify's), signed webhooks going out, and the test provider's
//! answers. Hosts keep the records (a SQLite table, an object's storage, a key-value blob) and
//! carry the requests; the decisions are here.

use liveshop_identity::{Identity, Role};
use liveshop_room::show::{Credential, ShopRecord, claim_shop};
use liveshop_shop::api::MAX_BODY_BYTES;
use liveshop_shop::outbox::DeliveryRequest;
use liveshop_shop::shopify::{self, ShopifySettings};
use liveshop_shop::{Input, PaymentRequest, test_provider};
use liveshop_webhooks::{DEFAULT_TOLERANCE_SECS, EndpointPolicy, GENERATED_SECRET_LEN, Secret, WebhookError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ApiError;

/// The `secret_id` merchants' inbound updates are signed with (not a `whsec_` name, so no
/// endpoint can pick it).
pub const INBOUND_SECRET_ID: &str = "inbound";

/// `413 payload_too_large` for a body over the shop's limit (a shop's, a new show's, a guest's),
/// checked before anything else.
pub fn oversized(len: usize) -> Option<ApiError> {
    let msg = || format!("request bodies are limited to {MAX_BODY_BYTES} bytes");
    (len > MAX_BODY_BYTES).then(|| ApiError::new(413, "payload_too_large", msg()))
}

/// A refused signature is a 401; a signed request seen before, a 409 (it was delivered).
pub fn webhook_error(e: WebhookError) -> ApiError {
    let status = if e == WebhookError::ReplayedEvent { 409 } else { 401 };
    ApiError::new(status, e.code(), e.to_string())
}

/// Who asks to sell from a shop when a show is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    pub who: Identity,
    /// A platform-wide token (`room: "*"`), else a token for this shop.
    pub platform: bool,
    /// Whether the host's config names `who` a platform operator.
    pub operator: bool,
    /// The new show, `(created_at, id)`: the shop lists the shows sold from it, for reports.
    pub show: (u64, String),
}

impl Claim {
    /// Judges the claim against the shop's record (`None`: no shop yet): the record to store,
    /// if it changes, or the refusal.
    pub fn judge(&self, record: Option<&ShopRecord>) -> Result<Option<ShopRecord>, ApiError> {
        let credential = if self.platform { Credential::Platform } else { Credential::Shop };
        match claim_shop(&self.who, credential, self.operator, record) {
            Err(e) => Err(ApiError::new(403, e.code(), e.to_string())),
            Ok(claimed) if claimed.is_some() || record.is_none() => Ok(Some(claimed.unwrap_or_default())),
            Ok(_) => Ok(None),
        }
    }
}

/// The record a shop keeps of its owner, with its name (which goes into Stripe's idempotency
/// keys and metadata).
pub fn registered(shop: &str, record: &ShopRecord) -> String {
    json!({ "shop": shop, "owner": record.owner }).to_string()
}

/// `POST .../webhook-secrets/{secret_id}`: a secret id is a `whsec_` name of at most 128 bytes,
/// checked before the shop is looked up.
pub fn check_secret_id(secret_id: &str) -> Result<(), ApiError> {
    if !secret_id.starts_with("whsec_") || secret_id.len() > 128 {
        let msg = "a secret id is a name starting with whsec_ (at most 128 bytes)";
        return Err(ApiError::new(400, "invalid_argument", msg));
    }
    Ok(())
}

/// The secret a merchant asked to be issued: the one in `{"secret": ...}`, or a new one from
/// `random` when the body is empty or names none.
pub fn secret_to_issue(body: &[u8], random: [u8; GENERATED_SECRET_LEN]) -> Result<Secret, ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct SecretInput {
        secret: Option<String>,
    }
    let input: SecretInput = if body.is_empty() {
        SecretInput::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::new(400, "invalid_argument", e.to_string()))?
    };
    match input.secret {
        Some(s) => Secret::parse(&s).map_err(|e| ApiError::new(400, "invalid_argument", e.to_string())),
        None => Ok(Secret::generate(random)),
    }
}

/// The answer to an issued secret: it is shown this once.
pub fn issued_secret(secret_id: &str, secret: &Secret, previous_expires_at: Option<u64>) -> Value {
    json!({ "secret_id": secret_id, "secret": secret.encode(), "previous_expires_at": previous_expires_at })
}

/// Only the shop's merchant manages its secrets.
pub fn merchant_only(who: &Identity) -> Result<(), ApiError> {
    match who.role {
        Role::Merchant => Ok(()),
        _ => Err(ApiError::new(403, "forbidden", "only the merchant may do this")),
    }
}

/// `POST .../inbound/liveshop`: the body signed with `X-Liveshop-Signature` by one of `secrets`
/// (the inbound secret, or the previous one during its overlap).
pub fn verify_liveshop(
    secrets: &[Secret],
    signature: Option<&str>,
    body: &[u8],
    now_ms: u64,
) -> Result<(), ApiError> {
    let header = |name: &str| signature.filter(|_| name == liveshop_webhooks::liveshop::SIGNATURE_HEADER);
    liveshop_webhooks::liveshop::verify(secrets, header, body, now_ms / 1000, DEFAULT_TOLERANCE_SECS)
        .map(drop)
        .map_err(webhook_error)
}

/// What a verified Shopify webhook asks of the shop.
#[derive(Debug, PartialEq, Eq)]
pub enum ShopifyInbound {
    /// The `/merchant/events` body to apply (once per event id).
    Apply(Vec<u8>),
    /// A topic the shop does not take: acknowledged (Shopify retries anything else).
    Ignored(Value),
}

/// `POST .../inbound/shopify`: `products/*` webhooks checked with `X-Shopify-Hmac-Sha256` under
/// the shop's Shopify settings (none: refused), mapped to merchant updates.
pub fn verify_shopify<'h>(
    settings: Option<&ShopifySettings>,
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<ShopifyInbound, ApiError> {
    use liveshop_webhooks::shopify::EVENT_ID_HEADER;
    let settings = settings.ok_or_else(|| webhook_error(WebhookError::SecretInvalid))?;
    liveshop_webhooks::shopify::verify(&[settings.secret.as_bytes()], &header, body)
        .map_err(webhook_error)?;
    let event_id = header(EVENT_ID_HEADER)
        .ok_or(WebhookError::SignatureMissing { header: EVENT_ID_HEADER })
        .map_err(webhook_error)?;
    let topic = header("x-shopify-topic").unwrap_or_default();
    match shopify::merchant_event(topic, event_id, body, settings.currency) {
        Ok(Some(event)) => Ok(ShopifyInbound::Apply(event)),
        Ok(None) => Ok(ShopifyInbound::Ignored(json!({ "ignored": topic }))),
        Err(e) => Err(ApiError::new(400, e.code(), e.to_string())),
    }
}

/// The shop's route for merchant updates (applied once per event id).
pub const MERCHANT_EVENTS_PATH: &str = "/merchant/events";

/// A verified merchant update: `POST` [`MERCHANT_EVENTS_PATH`] as the source's merchant identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantUpdate {
    pub who: Identity,
    pub body: Vec<u8>,
}

/// The update a verified inbound request from `source` (`liveshop`, `shopify`) makes.
pub fn merchant_update(source: &str, body: Vec<u8>) -> MerchantUpdate {
    MerchantUpdate { who: Identity::new(format!("inbound:{source}"), Role::Merchant), body }
}

impl MerchantUpdate {
    /// As the shop core's input.
    pub fn into_input(self) -> Input {
        Input::Request {
            who: Some(self.who),
            method: "POST".into(),
            path: MERCHANT_EVENTS_PATH.into(),
            headers: vec![],
            body: self.body,
        }
    }
}

/// Where webhooks may go: public addresses, and the hosts a comma-separated setting lists.
pub fn endpoint_policy(allowed_private_hosts: &str) -> EndpointPolicy {
    EndpointPolicy::allowing(allowed_private_hosts.split(',').map(str::trim).filter(|h| !h.is_empty()))
}

/// The headers of one signed attempt of a webhook (Standard Webhooks, every key in `keys`
/// signing), with its content type.
pub fn delivery_headers(
    req: &DeliveryRequest,
    keys: &[Secret],
    now_ms: u64,
) -> Result<Vec<(String, String)>, WebhookError> {
    let signed =
        liveshop_webhooks::standard::sign(keys, &req.event_id, now_ms / 1000, req.payload.as_bytes())?;
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    headers.extend(signed.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Ok(headers)
}

/// What the built-in test provider answers to a charge, as the shop's next inputs.
pub fn test_payment(req: &PaymentRequest) -> Vec<Input> {
    test_provider::respond(req)
        .into_iter()
        .map(|outcome| Input::PaymentResult { order: req.order, outcome })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_on_a_new_shop_makes_its_creator_the_owner() {
        let ana = Identity::new("ana", Role::Host);
        let claim = Claim { who: ana.clone(), platform: true, operator: false, show: (1, "s".into()) };
        let record = claim.judge(None).unwrap().unwrap();
        assert_eq!(record.owner.as_deref(), Some("ana"));
        // Hers already: nothing to store; someone else's: refused.
        assert_eq!(claim.judge(Some(&record)).unwrap(), None);
        let bo = Claim { who: Identity::new("bo", Role::Host), ..claim };
        assert_eq!(bo.judge(Some(&record)).unwrap_err().status, 403);
    }

    #[test]
    fn secrets_are_named_given_or_generated() {
        assert!(check_secret_id("whsec_main").is_ok());
        assert_eq!(check_secret_id("main").unwrap_err().code, "invalid_argument");
        let generated = secret_to_issue(b"", [7; GENERATED_SECRET_LEN]).unwrap();
        assert_eq!(generated.encode(), Secret::generate([7; GENERATED_SECRET_LEN]).encode());
        assert_eq!(secret_to_issue(br#"{"secret": "short"}"#, [0; 32]).unwrap_err().status, 400);
        assert_eq!(secret_to_issue(br#"{"other": 1}"#, [0; 32]).unwrap_err().status, 400);
        assert_eq!(oversized(MAX_BODY_BYTES + 1).unwrap().status, 413);
        assert!(oversized(MAX_BODY_BYTES).is_none());
    }

    #[test]
    fn inbound_updates_need_a_valid_signature() {
        let secret = Secret::generate([3; GENERATED_SECRET_LEN]);
        let body = br#"{"event_id":"e1","update":{}}"#;
        let now_ms = 1_700_000_000_000;
        let signature = liveshop_webhooks::liveshop::sign(&secret, now_ms / 1000, body);
        assert!(verify_liveshop(std::slice::from_ref(&secret), Some(&signature), body, now_ms).is_ok());
        let e = verify_liveshop(&[secret], Some(&signature), b"{}", now_ms).unwrap_err();
        assert_eq!(e.status, 401);
        assert_eq!(verify_shopify(None, |_| None, b"{}").unwrap_err().status, 401);
    }
}
