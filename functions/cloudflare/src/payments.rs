//! Payments on Cloudflare: which provider the shops use, Stripe's calls over `fetch`, and
//! Stripe's webhooks in. The rules (which calls, which answers mean what, which events settle
//! which order) are `liveshop_payments`, the same as the edge node's; this is only their IO.
//!
//! Configuration, as the edge node's `[payments]`: the var `PAYMENTS_PROVIDER` (`test`, the
//! default, or `stripe`); for Stripe the secrets `STRIPE_SECRET_KEY` and `STRIPE_WEBHOOK_SECRET`,
//! and the vars `STRIPE_API_BASE` (Stripe's API unless a proxy or a test says otherwise) and
//! `STRIPE_RETURN_URL` (where Stripe sends a buyer back after 3-D Secure).

use futures_util::future::{Either, select};
use liveshop_payments::PaymentError;
use liveshop_payments::stripe::{self, Call, StripeConfig};
use worker::*;

use crate::error;

/// A Stripe call that takes longer is abandoned and retried under its key, as on the edge node.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A secret, or a var of the same name (local runs pass secrets as vars).
fn secret_or_var(env: &Env, name: &str) -> Option<String> {
    env.secret(name).map(|s| s.to_string()).or_else(|_| env.var(name).map(|v| v.to_string())).ok()
}

/// Stripe's settings when `PAYMENTS_PROVIDER` is `stripe`; `None` for the test provider.
pub(crate) fn stripe_config(env: &Env) -> Result<Option<StripeConfig>> {
    match env.var("PAYMENTS_PROVIDER").map(|v| v.to_string()).as_deref() {
        Err(_) | Ok("test") => Ok(None),
        Ok("stripe") => {
            let secret_key = secret_or_var(env, "STRIPE_SECRET_KEY")
                .ok_or_else(|| Error::RustError("Stripe needs a secret key (STRIPE_SECRET_KEY)".into()))?;
            Ok(Some(StripeConfig {
                api_base: env.var("STRIPE_API_BASE").map_or(stripe::API_BASE.into(), |v| v.to_string()),
                secret_key,
                webhook_secret: secret_or_var(env, "STRIPE_WEBHOOK_SECRET"),
                return_url: env.var("STRIPE_RETURN_URL").ok().map(|v| v.to_string()),
            }))
        }
        Ok(other) => Err(Error::RustError(format!("PAYMENTS_PROVIDER: no provider {other:?}"))),
    }
}

/// One call to Stripe; no answer at all (network, timeout) is `ProviderUnavailable`.
pub(crate) async fn send(call: Call) -> std::result::Result<stripe::Response, PaymentError> {
    let unavailable = |e: Error| PaymentError::ProviderUnavailable(e.to_string());
    let headers = Headers::new();
    for (name, value) in &call.headers {
        headers.set(name, value).map_err(unavailable)?;
    }
    let mut init = RequestInit::new();
    let method = if call.method == "GET" { Method::Get } else { Method::Post };
    // An API never legitimately redirects a request carrying a secret key.
    init.with_method(method).with_headers(headers).with_redirect(RequestRedirect::Manual);
    if let Some(body) = call.body {
        init.with_body(Some(body.into()));
    }
    let request = Request::new_with_init(&call.url, &init).map_err(unavailable)?;
    let fetch = Fetch::Request(request);
    let sent = Box::pin(fetch.send());
    let mut response = match select(sent, Delay::from(CALL_TIMEOUT)).await {
        Either::Left((response, _)) => response.map_err(unavailable)?,
        Either::Right(((), _)) => {
            return Err(PaymentError::ProviderUnavailable(format!("no answer from {} in 15 s", call.path)));
        }
    };
    let should_retry = stripe::Response::should_retry(
        response.headers().get("stripe-should-retry").ok().flatten().as_deref(),
    );
    let body = response.bytes().await.map_err(unavailable)?;
    Ok(stripe::Response { status: response.status_code(), should_retry, body })
}

/// `POST /v1/payments/stripe/webhook`: Stripe's news about a charge, verified here and handed to
/// the order's shop object (which remembers the intent and feeds the outcome to the core).
pub(crate) async fn webhook(mut req: Request, env: &Env) -> Result<Response> {
    // Read before any check; see the room's fetch.
    let body = req.bytes().await?;
    if let Some(refusal) = crate::shop::oversized(&body) {
        return refusal;
    }
    let Some(config) = stripe_config(env)? else {
        return error(404, "not_found", "this node does not use Stripe");
    };
    let headers: Vec<(String, String)> = req.headers().entries().collect();
    let result = match stripe::stripe_webhook(&config, &headers, &body, crate::now_ms() / 1000) {
        Ok(Some(result)) => result,
        Ok(None) => return Response::empty(),
        Err(e) => return error(400, e.code(), e.to_string()),
    };
    let forward = Request::new_with_init(
        &format!("https://shop/v1/shops/{}/_payment", result.shop),
        RequestInit::new().with_method(Method::Post).with_body(Some(serde_json::to_string(&result)?.into())),
    )?;
    let answer = crate::shop_stub(env, &result.shop)?.fetch_with_request(forward).await?;
    Ok(answer)
}
