//! The webhook outbox: which events go to which merchant endpoints, and when to try again.
//!
//! A webhook event is logged ([`crate::Event::WebhookQueued`]) in the same `handle` call, so the
//! same storage transaction, as the event that causes it; applying it creates one [`Delivery`]
//! per enabled endpoint that wants that type. The shop hands due deliveries to the host
//! ([`crate::Output::Deliver`]), which signs and sends them (`functions/webhooks`), and reports
//! the status back ([`crate::Input::DeliveryResult`]):
//!
//! - `2xx`: delivered; the delivery is dropped.
//! - `410 Gone`: the endpoint is disabled; its pending deliveries become dead letters.
//! - anything else (`429`, `5xx`, other `4xx`, a network error or no answer within
//!   [`DELIVERY_TIMEOUT_MS`]): tried again after [`RETRY_SCHEDULE_MS`], then a dead letter.
//!
//! Dead letters are kept (the newest [`MAX_DEAD_LETTERS`]) until a merchant replays them.
//! Delivery is at least once: receivers deduplicate on the event id (`webhook-id`).

use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, EndpointId, HOUR, MINUTE, Millis, SECOND};

/// One attempt the host must make: POST `payload` to `endpoint_url`, signed (Standard Webhooks)
/// with the secrets the host keeps under `secret_id`, with `webhook-id: event_id`, then report
/// [`crate::Input::DeliveryResult`]. Serializable, so a component can hand it across its ABI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRequest {
    pub delivery_id: DeliveryId,
    pub endpoint_url: String,
    pub secret_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
}

/// Waits after the 1st, 2nd, ... failed attempt. After the last, the delivery is a dead letter:
/// eight attempts over about 32 hours.
pub const RETRY_SCHEDULE_MS: [Millis; 7] =
    [5 * SECOND, 5 * MINUTE, 30 * MINUTE, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR];
/// An attempt the host has not answered within this long counts as a network error.
pub const DELIVERY_TIMEOUT_MS: Millis = 60 * SECOND;
pub const MAX_DEAD_LETTERS: usize = 1_000;
pub const MAX_ENDPOINTS: usize = 10;

/// Every webhook event type the shop sends.
pub const EVENT_TYPES: [&str; 11] = [
    "order.created",
    "order.paid",
    "order.payment_failed",
    "order.cancelled",
    "order.refunded",
    "order.fulfilled",
    "inventory.low",
    "inventory.sold_out",
    "flash_deal.started",
    "flash_deal.ended",
    "show.report_ready",
];

/// A merchant's webhook receiver. The signing secret itself stays with the host; the shop only
/// names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub url: String,
    /// Names the `whsec_...` secret the host signs with.
    pub secret_id: String,
    /// Event types wanted; empty means all.
    pub events: Vec<String>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

impl Endpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled && (self.events.is_empty() || self.events.iter().any(|e| e == event_type))
    }
}

/// One webhook event, as it was logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// `evt_<epoch>_<seq>`: the `webhook-id` receivers deduplicate on.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created_at: Millis,
    /// The body to send: `{"type", "timestamp", "data"}` (Standard Webhooks), kept as the exact
    /// bytes so every attempt sends the same thing.
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: DeliveryId,
    pub endpoint: EndpointId,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: Millis,
    /// Failed attempts so far.
    pub attempts: u32,
    pub next_attempt_at: Millis,
    /// The last status (`None` after a network error or before any attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<Millis>,
}

/// What a delivery attempt's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// 410: the receiver says it is gone for good.
    Gone,
    Retry,
}

pub fn classify(status: Option<u16>) -> Verdict {
    match status {
        Some(200..=299) => Verdict::Delivered,
        Some(410) => Verdict::Gone,
        _ => Verdict::Retry,
    }
}

/// When to try again after the `failures`-th failed attempt, or `None` for a dead letter.
pub fn next_attempt(failures: u32, now: Millis) -> Option<Millis> {
    let i = usize::try_from(failures.checked_sub(1)?).ok()?;
    RETRY_SCHEDULE_MS.get(i).map(|wait| now + wait)
}

/// The Standard Webhooks body: `{"type", "timestamp" (RFC 3339), "data"}`.
pub fn payload(event_type: &str, at: Millis, data: &serde_json::Value) -> String {
    let body = serde_json::json!({ "type": event_type, "timestamp": rfc3339(at), "data": data });
    crate::protocol::to_json(&body)
}

/// `2025-11-26T08:00:00.000Z` for milliseconds since the Unix epoch (proleptic Gregorian, UTC).
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_five_seconds_to_ten_hours_then_dead() {
        assert_eq!(next_attempt(1, 0), Some(5_000));
        assert_eq!(next_attempt(2, 0), Some(300_000));
        assert_eq!(next_attempt(7, 0), Some(36_000_000));
        assert_eq!(next_attempt(8, 0), None);
        assert_eq!(classify(Some(204)), Verdict::Delivered);
        assert_eq!(classify(Some(410)), Verdict::Gone);
        assert_eq!(classify(Some(429)), Verdict::Retry);
        assert_eq!(classify(Some(503)), Verdict::Retry);
        assert_eq!(classify(None), Verdict::Retry);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
