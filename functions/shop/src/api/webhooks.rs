//! The merchant's webhook endpoints, the outbox and its dead letters.

use liveshop_webhooks::{EndpointError, EndpointPolicy, check_endpoint};
use serde::Deserialize;
use serde_json::json;

use super::inputs::{EndpointInput, EndpointPatch, decode, event_types, secret_id, url};
use super::{Call, Handled, not_found, number, reply, segments};
use crate::Shop;
use crate::ids::{DeliveryId, EndpointId};
use crate::outbox::{Endpoint, MAX_ENDPOINTS};
use crate::protocol::{ApiError, ErrorCode, Event};

/// Refuses a request that would point a webhook endpoint where the node's `policy` does not let
/// webhooks go ([`check_endpoint`]): `400 endpoint_not_allowed` (or `invalid_argument` for a URL
/// it cannot read safely). Hosts call it before forwarding a request, because the policy is the
/// node's and the shop does not know it; anything else passes, for the shop to judge.
pub fn screen_endpoint(
    method: &str,
    path: &str,
    body: &[u8],
    policy: &EndpointPolicy,
) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Url {
        url: Option<String>,
    }
    let registers = match segments(path) {
        Ok(segs) => matches!(
            (method, segs.iter().map(String::as_str).collect::<Vec<_>>().as_slice()),
            ("POST", ["webhooks", "endpoints"]) | ("PUT", ["webhooks", "endpoints", _])
        ),
        Err(_) => false,
    };
    let Some(target) = registers.then(|| serde_json::from_slice::<Url>(body).ok()?.url).flatten() else {
        return Ok(());
    };
    check_endpoint(&target, policy).map_err(|e| {
        let code = match e {
            EndpointError::Malformed(_) => ErrorCode::InvalidArgument,
            EndpointError::NotAllowed { .. } => ErrorCode::EndpointNotAllowed,
        };
        ApiError::new(code, e.to_string())
    })
}

impl Shop {
    pub(super) fn endpoints(&mut self, c: &Call) -> Handled {
        c.merchant()?;
        let endpoints: Vec<&Endpoint> = self.state.endpoints.values().collect();
        reply(200, &json!({ "endpoints": endpoints }))
    }

    pub(super) fn add_endpoint(&mut self, c: &Call) -> Handled {
        c.merchant()?;
        let input: EndpointInput = decode(c.body)?;
        if self.state.endpoints.len() >= MAX_ENDPOINTS {
            let msg = format!("a shop has at most {MAX_ENDPOINTS} webhook endpoints");
            return Err(ApiError::new(ErrorCode::TooManyEndpoints, msg));
        }
        let endpoint = Endpoint {
            id: EndpointId(self.journal.next_seq().0),
            url: url(&input.url, "url")?,
            secret_id: secret_id(&input.secret_id)?,
            events: event_types(&input.events)?,
            enabled: true,
            disabled_reason: None,
        };
        self.emit(c.now, Event::EndpointSaved { endpoint: endpoint.clone() });
        reply(201, &endpoint)
    }

    pub(super) fn update_endpoint(&mut self, c: &Call, id: &str) -> Handled {
        c.merchant()?;
        let id = self.endpoint_id(id)?;
        let patch: EndpointPatch = decode(c.body)?;
        let mut e = self.state.endpoints[&id].clone();
        if let Some(u) = &patch.url {
            e.url = url(u, "url")?;
        }
        if let Some(s) = &patch.secret_id {
            e.secret_id = secret_id(s)?;
        }
        if let Some(events) = &patch.events {
            e.events = event_types(events)?;
        }
        if let Some(enabled) = patch.enabled {
            e.enabled = enabled;
            e.disabled_reason = (!enabled).then(|| "disabled by the merchant".to_string());
        }
        if e != self.state.endpoints[&id] {
            self.emit(c.now, Event::EndpointSaved { endpoint: e.clone() });
        }
        reply(200, &e)
    }

    pub(super) fn remove_endpoint(&mut self, c: &Call, id: &str) -> Handled {
        c.merchant()?;
        let id = self.endpoint_id(id)?;
        self.emit(c.now, Event::EndpointRemoved { endpoint_id: id });
        reply(200, &json!({ "removed": id }))
    }

    pub(super) fn outbox(&mut self, c: &Call) -> Handled {
        c.merchant()?;
        let deliveries: Vec<_> = self.state.outbox.values().collect();
        reply(200, &json!({ "deliveries": deliveries }))
    }

    pub(super) fn dead_letters(&mut self, c: &Call) -> Handled {
        c.merchant()?;
        let dead: Vec<_> = self.state.dead_letters.values().collect();
        reply(200, &json!({ "dead_letters": dead }))
    }

    /// Puts a dead letter back in the outbox, with a fresh retry schedule, due now.
    pub(super) fn replay(&mut self, c: &Call, id: &str) -> Handled {
        c.merchant()?;
        let id = DeliveryId(number(id, "dead letter")?);
        let d = self.state.dead_letters.get(&id).ok_or_else(|| not_found("dead letter"))?;
        if !self.state.endpoints.get(&d.endpoint).is_some_and(|e| e.enabled) {
            let msg = "enable the endpoint before replaying to it";
            return Err(ApiError::new(ErrorCode::EndpointDisabled, msg).with("endpoint_id", d.endpoint));
        }
        self.emit(c.now, Event::DeliveryReplayed { delivery_id: id });
        reply(200, &self.state.outbox[&id])
    }

    fn endpoint_id(&self, id: &str) -> Result<EndpointId, ApiError> {
        Some(EndpointId(number(id, "endpoint")?))
            .filter(|id| self.state.endpoints.contains_key(id))
            .ok_or_else(|| not_found("endpoint"))
    }
}
