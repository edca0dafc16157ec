//! What one outbound delivery attempt means for the endpoint. The retry schedule itself belongs
//! to the shop core's webhook outbox.

use serde::{Deserialize, Serialize};

/// The verdict on one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The merchant has it; stop.
    Delivered,
    /// Try again on the outbox's schedule (which gives up, and disables, when it runs out).
    Retry,
    /// The merchant asked us to stop (410 Gone): disable the endpoint now, no more attempts.
    DisableEndpoint,
}

/// Classifies an attempt by its HTTP status, `None` meaning no response at all (connection
/// refused or reset, TLS failure, timeout).
///
/// Following Standard Webhooks, only `2xx` is success and only `410 Gone` stops delivery.
/// Everything else is a failure to retry, including `3xx` (redirects are not followed: the
/// merchant should fix the URL) and `4xx` other than 410: a 401, 404 or 400 is most often a
/// deploy or configuration mistake on the merchant's side that gets fixed within the retry
/// schedule, and the schedule is finite anyway. `429`, `502`, `503` and `504` are retries too;
/// honouring `Retry-After` is the schedule's business.
pub fn classify_delivery(status: Option<u16>) -> DeliveryOutcome {
    match status {
        Some(200..=299) => DeliveryOutcome::Delivered,
        Some(410) => DeliveryOutcome::DisableEndpoint,
        _ => DeliveryOutcome::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_delivers_only_410_disables_and_everything_else_retries() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(classify_delivery(Some(status)), DeliveryOutcome::Delivered, "{status}");
        }
        assert_eq!(classify_delivery(Some(410)), DeliveryOutcome::DisableEndpoint);
        for status in
            [100, 199, 300, 301, 308, 400, 401, 403, 404, 408, 409, 429, 500, 502, 503, 504, 599, 0, 999]
        {
            assert_eq!(classify_delivery(Some(status)), DeliveryOutcome::Retry, "{status}");
        }
        assert_eq!(classify_delivery(None), DeliveryOutcome::Retry);
    }
}
