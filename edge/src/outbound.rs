//! What the node's actors ask of the world beyond their sockets ([`EffectHost`]): charges at the
//! payment provider and signed webhooks to merchants, each carried out after the event that
//! asked for it has committed, with its result fed back to the actor.
//!
//! - `payment`: [`Provider::execute`], retried with backoff while the provider is unreachable
//!   (the idempotency key makes repeats safe); each outcome goes back as a `payment` result.
//! - `deliver`: a POST signed per Standard Webhooks with every current secret of the endpoint's
//!   `secret_id` ([`WebhookSecrets`]), answered by a `delivery` result with the status, or none
//!   for a network error or timeout. The shop decides about retries, dead letters and `410`.
//!
//! At most [`MAX_IN_FLIGHT`] calls run at once, so a flash sale cannot open thousands of sockets.
//!
//! Webhooks go only where the node's [`EndpointPolicy`] lets them ([`webhook_client`]): the
//! address a delivery connects to is checked, not only the URL a merchant registered.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use liveshop_shop::PaymentRequest;
use liveshop_shop::effects::{self, DeliveryResult, PaymentResult};
use liveshop_shop::outbox::DeliveryRequest;
pub use liveshop_webhooks::rotation::ROTATION_OVERLAP_MS;
use liveshop_webhooks::rotation::SecretRing;
use liveshop_webhooks::{EndpointPolicy, Secret};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::actor::Env;
use crate::node::{EffectHost, Kind, Node};
use crate::payments::Provider;
use crate::sealed::SealedRecords;
use crate::storage::StorageError;

/// Calls to providers and merchants at once, node-wide.
pub const MAX_IN_FLIGHT: usize = 64;
/// Record kind of a shop's webhook secrets (sealed).
pub(crate) const SECRETS: &str = "webhook-secrets";

/// The edge node's [`EffectHost`].
pub struct Outbound {
    /// A [`webhook_client`].
    client: reqwest::Client,
    policy: Arc<EndpointPolicy>,
    provider: Arc<Provider>,
    secrets: WebhookSecrets,
    env: Arc<dyn Env>,
    permits: Arc<Semaphore>,
}

impl Outbound {
    pub fn new(
        policy: EndpointPolicy,
        provider: Provider,
        secrets: WebhookSecrets,
        env: Arc<dyn Env>,
    ) -> Self {
        let policy = Arc::new(policy);
        Outbound {
            client: webhook_client(policy.clone()),
            policy,
            provider: Arc::new(provider),
            secrets,
            env,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

impl EffectHost for Outbound {
    fn request(&self, node: &Node, kind: Kind, actor: &str, effect: String, body: String) {
        let (node, actor, permits) = (node.clone(), actor.to_string(), self.permits.clone());
        match effect.as_str() {
            effects::PAYMENT => {
                let req = match effects::payment_request(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        return tracing::error!(actor, "a shop asked for a payment we cannot read: {e}");
                    }
                };
                let provider = self.provider.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else { return };
                    pay(&node, kind, &actor, &provider, req).await;
                });
            }
            effects::DELIVER => {
                let req = match effects::delivery_request(&body) {
                    Ok(r) => r,
                    Err(e) => {
                        return tracing::error!(actor, "a shop asked for a delivery we cannot read: {e}");
                    }
                };
                let (client, secrets, now) = (self.client.clone(), self.secrets.clone(), self.env.now());
                let policy = self.policy.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else { return };
                    let status = deliver(&client, &policy, &secrets, &actor, &req, now).await;
                    let result = DeliveryResult { delivery_id: req.delivery_id, status };
                    report(&node, kind, &actor, effects::DELIVERY_RESULT, &result).await;
                });
            }
            other => {
                tracing::error!(actor, effect = other, "an actor asked for an effect this node does not know")
            }
        }
    }
}

async fn pay(node: &Node, kind: Kind, actor: &str, provider: &Provider, req: PaymentRequest) {
    let retry = |ms, e: &liveshop_payments::PaymentError| {
        tracing::warn!(actor, key = req.idempotency_key, "payment provider: {e}; retrying");
        tokio::time::sleep(Duration::from_millis(ms))
    };
    let outcomes = match liveshop_payments::drive(|| provider.execute(actor, &req), retry).await {
        Ok(outcomes) => outcomes,
        // The order stays pending; the shop asks again when it next revives.
        Err(e) if e.retryable() => {
            return tracing::error!(
                actor,
                key = req.idempotency_key,
                "payment provider: {e}; giving up for now"
            );
        }
        Err(e) => return tracing::error!(actor, key = req.idempotency_key, code = e.code(), "payment: {e}"),
    };
    for outcome in outcomes {
        report(node, kind, actor, effects::PAYMENT_RESULT, &PaymentResult { order: req.order, outcome })
            .await;
    }
}

/// The client webhooks go out with: [`http_client_builder`]'s (no redirects: a redirect could
/// lead anywhere), no proxy (the address connected to must be the endpoint's own), and names
/// resolved through [`PolicyResolver`].
pub fn webhook_client(policy: Arc<EndpointPolicy>) -> reqwest::Client {
    crate::payments::http_client_builder()
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver { policy }))
        .build()
        .expect("a client with a crypto provider installed and no custom TLS config always builds")
}

/// Resolves a webhook's host and keeps only the addresses the policy lets a delivery connect to
/// ([`EndpointPolicy::allowed_addresses`]), so a name that resolves (or later re-resolves) to
/// loopback, a private range or the metadata service is refused before any connection.
struct PolicyResolver {
    policy: Arc<EndpointPolicy>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (policy, host) = (self.policy.clone(), name.as_str().to_string());
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = policy.allowed_addresses(&host, resolved.map(|a| a.ip()));
            if allowed.is_empty() {
                return Err(format!("webhooks may not go to {host}: it resolves to no public address").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// An endpoint whose host is an address (which the client connects to without resolving) must be
/// one the policy allows; names are left to [`PolicyResolver`]. The URL is read by reqwest's own
/// parser, so this is the address it would connect to.
fn literal_allowed(url: &str, policy: &EndpointPolicy) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else { return false };
    let host = parsed.host_str().unwrap_or_default();
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => policy.names(host) || liveshop_webhooks::is_public(ip),
        Err(_) => true,
    }
}

/// One signed attempt; the status, or `None` when there was no HTTP answer.
async fn deliver(
    client: &reqwest::Client,
    policy: &EndpointPolicy,
    secrets: &WebhookSecrets,
    shop: &str,
    req: &DeliveryRequest,
    now: u64,
) -> Option<u16> {
    if !literal_allowed(&req.endpoint_url, policy) {
        tracing::warn!(shop, url = req.endpoint_url, "webhooks may not go to this address: not delivered");
        return None;
    }
    let keys = match secrets.signing(shop, &req.secret_id, now) {
        Ok(keys) if !keys.is_empty() => keys,
        Ok(_) => {
            tracing::warn!(
                shop,
                secret_id = req.secret_id,
                "no such webhook secret: the delivery waits for one"
            );
            return None;
        }
        Err(e) => {
            tracing::error!(shop, "webhook secrets: {e}");
            return None;
        }
    };
    let signed = match liveshop_api::shop::delivery_headers(req, &keys, now) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(shop, event_id = req.event_id, "cannot sign: {e}");
            return None;
        }
    };
    let mut post = client.post(&req.endpoint_url);
    for (name, value) in signed {
        post = post.header(name, value);
    }
    match post.body(req.payload.clone()).send().await {
        Ok(response) => Some(response.status().as_u16()),
        Err(e) => {
            tracing::info!(shop, url = req.endpoint_url, "webhook delivery failed: {e}");
            None
        }
    }
}

async fn report(node: &Node, kind: Kind, actor: &str, result: &str, body: &impl Serialize) {
    let body = serde_json::to_string(body).expect("results serialize");
    if let Err(e) = node.effect_result(kind, actor, result, body).await {
        tracing::error!(actor, "cannot report an effect's result: {e}");
    }
}

/// The shops' webhook signing secrets, by `(shop, secret_id)`, sealed in the node's database.
/// Shops name a secret; they never hold one (their state is readable through their API).
#[derive(Clone)]
pub struct WebhookSecrets {
    records: SealedRecords,
}

/// What a new or rotated secret looks like to the merchant (shown once).
#[derive(Debug, Clone, Serialize)]
pub struct IssuedSecret {
    pub secret_id: String,
    pub secret: String,
    /// The previous secret, if any, keeps signing until then.
    pub previous_expires_at: Option<u64>,
}

impl WebhookSecrets {
    pub fn new(records: SealedRecords) -> Self {
        WebhookSecrets { records }
    }

    fn load(&self, shop: &str, secret_id: &str) -> Result<SecretRing, StorageError> {
        let text = self.records.get(SECRETS, &format!("{shop}/{secret_id}"))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default())
    }

    /// The secrets that sign now: the newest first, then any still in their overlap.
    pub fn signing(&self, shop: &str, secret_id: &str, now: u64) -> Result<Vec<Secret>, StorageError> {
        Ok(self.load(shop, secret_id)?.signing(now))
    }

    /// Adds `secret` as the newest of `secret_id` ([`SecretRing::rotate`]).
    pub fn rotate(
        &self,
        shop: &str,
        secret_id: &str,
        secret: &Secret,
        now: u64,
    ) -> Result<IssuedSecret, StorageError> {
        let mut ring = match self.load(shop, secret_id) {
            // Sealed under an earlier node secret: nothing of it can sign any more, so the new
            // secret starts a fresh ring (this is how merchants recover).
            Err(StorageError::Backend(e)) if e.is::<crate::sealed::Unsealable>() => {
                tracing::warn!("{shop}/{secret_id}: {e}; replaced by the new secret");
                SecretRing::default()
            }
            loaded => loaded?,
        };
        let previous_expires_at = ring.rotate(secret, now);
        let body = serde_json::to_string(&ring).expect("secrets serialize");
        self.records.put(SECRETS, &format!("{shop}/{secret_id}"), &body)?;
        Ok(IssuedSecret { secret_id: secret_id.to_string(), secret: secret.encode(), previous_expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> Secret {
        Secret::generate([b; liveshop_webhooks::GENERATED_SECRET_LEN])
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_for_a_day_then_stops() {
        let db = crate::sqlite::Db::in_memory().unwrap();
        let secrets = WebhookSecrets::new(SealedRecords::new(db, b"a test node secret"));
        assert!(secrets.signing("acme", "whsec_main", 0).unwrap().is_empty());
        let first = secrets.rotate("acme", "whsec_main", &secret(1), 1_000).unwrap();
        assert_eq!(first.previous_expires_at, None);
        let second = secrets.rotate("acme", "whsec_main", &secret(2), 2_000).unwrap();
        assert_eq!(second.previous_expires_at, Some(2_000 + ROTATION_OVERLAP_MS));
        let encoded = |keys: Vec<Secret>| keys.iter().map(Secret::encode).collect::<Vec<_>>();
        let both = encoded(secrets.signing("acme", "whsec_main", 3_000).unwrap());
        assert_eq!(both, [secret(2).encode(), secret(1).encode()], "newest first");
        let later = encoded(secrets.signing("acme", "whsec_main", 2_000 + ROTATION_OVERLAP_MS).unwrap());
        assert_eq!(later, [secret(2).encode()]);
        // A third rotation drops the first for good.
        secrets.rotate("acme", "whsec_main", &secret(3), 4_000).unwrap();
        assert_eq!(secrets.load("acme", "whsec_main").unwrap().len(), 2);
        assert!(secrets.signing("other", "whsec_main", 3_000).unwrap().is_empty(), "per shop");
    }

    #[test]
    fn addresses_in_urls_are_judged_as_reqwest_reads_them() {
        let strict = EndpointPolicy::default();
        for url in [
            "http://127.0.0.1:9/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "not a url",
        ] {
            assert!(!literal_allowed(url, &strict), "{url}");
        }
        assert!(literal_allowed("http://8.8.8.8/", &strict));
        assert!(literal_allowed("http://localhost/", &strict), "names are the resolver's to judge");
        assert!(literal_allowed("http://127.0.0.1:9/", &EndpointPolicy::allowing(["127.0.0.1"])));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_webhook_client_connects_to_a_name_only_where_it_may_resolve() {
        let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://localhost:{}/hooks", trap.local_addr().unwrap().port());
        let strict = webhook_client(Arc::new(EndpointPolicy::default()));
        let refused = strict.post(&url).body("{}").send().await.unwrap_err();
        assert!(format!("{refused:?}").contains("resolves to no public address"), "{refused:?}");
        let knock = tokio::time::timeout(Duration::from_millis(300), trap.accept()).await;
        assert!(knock.is_err(), "the strict client connected to loopback");
        // Named, the same URL is reached.
        let dev = webhook_client(Arc::new(EndpointPolicy::allowing(["localhost"])));
        let send =
            tokio::spawn(
                async move { dev.post(&url).body("{}").timeout(Duration::from_secs(2)).send().await },
            );
        let accepted = tokio::time::timeout(Duration::from_secs(5), trap.accept()).await;
        assert!(matches!(accepted, Ok(Ok(_))), "the allowed client did not connect");
        send.abort();
    }
}
