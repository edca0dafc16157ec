//! Payments on Spin: which provider the shops use, Stripe's calls over Spin's outbound HTTP, and
//! Stripe's webhooks in. The rules (which calls, which answers mean what, which events settle
//! which order) are `liveshop_payments`, as on the other hosts; this is only their IO.
//!
//! Settings are Spin variables, as the edge node's `[payments]`: `payments_provider` (`test`, the
//! default, or `stripe`); for Stripe `stripe_secret_key`, `stripe_webhook_secret`,
//! `stripe_api_base` (Stripe's API unless a proxy or a test says otherwise) and
//! `stripe_return_url` (where Stripe sends a buyer back after 3-D Secure).
//!
//! No instance outlives its request, so a charge is carried out right after the event that asked
//! for it committed, within the same request, and the outcome is the shop's next event. The
//! charge is leased in the shop's value first ([`crate::shop`]): while the lease runs no other
//! instance asks Stripe for it; a charge still open when its lease ends (Stripe unreachable, or
//! settling later) is asked for again by the next event or alarm, under its idempotency key.

use std::time::Duration;

use liveshop_api::ApiError;
use liveshop_payments::PaymentError;
use liveshop_payments::stripe::{self, Call, StripeConfig};

use crate::{internal, now_ms};

/// A Stripe call that takes longer is abandoned and asked again when its lease ends.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Stripe's settings when `payments_provider` is `stripe`; `None` for the test provider.
pub(crate) async fn stripe_config() -> Result<Option<StripeConfig>, ApiError> {
    let get = async |name: &str| spin_sdk::variables::get(name).await.ok().filter(|v| !v.is_empty());
    match get("payments_provider").await.as_deref() {
        None | Some("test") => Ok(None),
        Some("stripe") => {
            let secret_key = get("stripe_secret_key")
                .await
                .ok_or_else(|| internal("Stripe needs a secret key (stripe_secret_key)"))?;
            Ok(Some(StripeConfig {
                api_base: get("stripe_api_base").await.unwrap_or_else(|| stripe::API_BASE.into()),
                secret_key,
                webhook_secret: get("stripe_webhook_secret").await,
                return_url: get("stripe_return_url").await,
            }))
        }
        Some(other) => Err(internal(format!("payments_provider: no provider {other:?}"))),
    }
}

/// One call to Stripe; no answer at all (network, timeout) is `ProviderUnavailable`.
pub(crate) async fn send(call: Call) -> Result<stripe::Response, PaymentError> {
    let unavailable = |e: String| PaymentError::ProviderUnavailable(e);
    let mut request = http::Request::builder().method(call.method).uri(&call.url);
    for (name, value) in &call.headers {
        request = request.header(*name, value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(call.body.unwrap_or_default())))
        .map_err(|e| unavailable(e.to_string()))?;
    // Outbound requests on Spin never follow redirects: a secret key is not carried elsewhere.
    let sent = spin_sdk::http::send(request);
    let timeout = spin_sdk::time::sleep(CALL_TIMEOUT);
    futures::pin_mut!(sent, timeout);
    let response = match futures::future::select(sent, timeout).await {
        futures::future::Either::Left((response, _)) => {
            response.map_err(|e| unavailable(format!("{e:?}")))?
        }
        futures::future::Either::Right(_) => {
            return Err(unavailable(format!("no answer from {} in 15 s", call.path)));
        }
    };
    let should_retry = stripe::Response::should_retry(
        response.headers().get("stripe-should-retry").and_then(|v| v.to_str().ok()),
    );
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| unavailable(format!("{e:?}")))?
        .to_bytes()
        .to_vec();
    Ok(stripe::Response { status, should_retry, body })
}

/// `POST /v1/payments/stripe/webhook`: Stripe's news about a charge, verified here and applied
/// to the order's shop.
pub(crate) async fn webhook(config: &crate::Config, call: &crate::Call) -> Result<crate::Reply, ApiError> {
    if let Some(refusal) = liveshop_api::shop::oversized(call.body.len()) {
        return Err(refusal);
    }
    let Some(stripe) = &config.stripe else {
        return Err(ApiError::new(404, "not_found", "this app does not use Stripe"));
    };
    let headers: Vec<(String, String)> = call
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    match stripe::stripe_webhook(stripe, &headers, &call.body, now_ms() / 1000) {
        Ok(Some(result)) => crate::shop::settle(config, result).await,
        Ok(None) => Ok(crate::reply(200, "application/json", Vec::new())),
        Err(e) => Err(ApiError::new(400, e.code(), e.to_string())),
    }
}
