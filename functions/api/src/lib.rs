//! # liveshop-api: the HTTP face every host serves, written once
//!
//! The edge node (axum), the Worker (workers-rs) and the Spin app (spin-sdk) answer the same
//! routes with the same rules; what does not depend on how a host reads a request or stores a
//! thing lives here, so the hosts only adapt it: the routes ([`route`]) and who calls them
//! ([`Credentials`], [`Caller`]), the limits and their defaults, the JSON error shape, a stream's
//! resume position and SSE framing, guest tokens, who may create a show and the answer to
//! `POST /v1/shows`, the media origin's stream events, report requests ([`report`]) and the shop
//! routes' rules ([`shop`]). No IO, no clock: the current time comes in. `tests/conformance`
//! holds the three hosts to the same answers.

pub mod report;
pub mod route;
pub mod shop;
pub mod timeline;
pub mod web;

use liveshop_identity::{Claims, Devices, Identity, Role, TokenError};
use liveshop_room::show::{Credential, Show};
use serde::Deserialize;
use serde_json::{Value, json};

/// The largest command a client may send over HTTP (`POST /v1/rooms/{room}/commands`); the room
/// refuses larger frames on sockets too.
pub const MAX_COMMAND_BYTES: usize = 8 * 1024;
/// How long a guest token lasts.
pub const GUEST_TOKEN_SECS: u64 = 24 * 3600;
/// How long the host token of a new show lasts.
pub const HOST_TOKEN_SECS: u64 = 7 * 24 * 3600;
/// The WebSocket subprotocol of the client-room protocol.
pub const PROTOCOL: &str = "liveshop.v1";
/// The longest guest name, in characters (the token's own limit is in bytes).
pub const MAX_GUEST_NAME_CHARS: usize = 40;

/// A refusal: an HTTP status and the stable code and message of the JSON error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    /// A refused token: `401` with the token's code.
    pub fn token(e: TokenError) -> ApiError {
        ApiError::new(401, e.code(), e.to_string())
    }

    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_argument", message)
    }

    /// `{"error": {"code", "message"}}`, every refusal's body on every host.
    pub fn body(&self) -> String {
        error_body(self.code, &self.message)
    }
}

/// The JSON error shape.
pub fn error_body(code: &str, message: &str) -> String {
    json!({ "error": { "code": code, "message": message } }).to_string()
}

/// The token of an `Authorization: Bearer <token>` header's value.
fn bearer(authorization: &str) -> Option<&str> {
    authorization.strip_prefix("Bearer ").map(str::trim)
}

/// The token a WebSocket client offers as a subprotocol beside [`PROTOCOL`] (browsers cannot set
/// headers on a WebSocket): the offered value shaped like a JWT.
fn token_from_protocols(offered: &str) -> Option<&str> {
    offered.split(',').map(str::trim).find(|p| p.matches('.').count() == 2 && *p != PROTOCOL)
}

/// Where a request may carry its token, as the host read them from its request type.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// The `Authorization` header's value.
    pub authorization: Option<&'a str>,
    /// The raw query string, whose `token=` serves clients that cannot set headers (a browser's
    /// `EventSource` and WebSocket).
    pub query: Option<&'a str>,
    /// The `Sec-WebSocket-Protocol` header's value.
    pub protocols: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    /// Only what a request for `route` may carry its token in: the URL and the subprotocol only
    /// where [`route::Route::token_in_url`] says so, else the header alone.
    pub fn for_route(self, route: Option<route::Route>) -> Credentials<'a> {
        match route {
            Some(r) if r.token_in_url() => self,
            _ => Credentials { authorization: self.authorization, query: None, protocols: None },
        }
    }

    /// The token presented: `?token=`, else a subprotocol offered beside [`PROTOCOL`], else
    /// `Authorization: Bearer`. (Tokens are base64url and dots: nothing to percent-decode.)
    pub fn token(&self) -> Option<&'a str> {
        let query = self.query.and_then(|q| q.split('&').find_map(|p| p.strip_prefix("token=")));
        query
            .or_else(|| self.protocols.and_then(token_from_protocols))
            .or_else(|| self.authorization.and_then(bearer))
    }
}

/// Who calls a route of one room or shop: the identity the presented token proves there, or
/// nobody when none was presented (a bad token is refused, never taken as nobody). Every host
/// makes it once per request, before its handler looks at anything the caller may not see.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caller(pub Option<Identity>);

impl Caller {
    /// `token` checked by `verify` (the host's secret, for the route's room or shop).
    pub fn of(
        token: Option<&str>,
        verify: impl FnOnce(&str) -> Result<Identity, TokenError>,
    ) -> Result<Caller, ApiError> {
        token.map(verify).transpose().map(Caller).map_err(ApiError::token)
    }

    /// Who calls, for a route that needs someone: `401 token_malformed` without a token.
    pub fn required(self) -> Result<Identity, ApiError> {
        self.0.ok_or_else(|| ApiError::token(TokenError::Malformed))
    }

    /// The merchant of the shop, for its secrets and settings.
    pub fn merchant(self) -> Result<Identity, ApiError> {
        let who =
            self.0.ok_or_else(|| ApiError::new(401, "token_malformed", "a merchant token is required"))?;
        shop::merchant_only(&who)?;
        Ok(who)
    }
}

/// Whether the client offered [`PROTOCOL`]: the answer then names it.
pub fn offers_protocol(offered: &str) -> bool {
    offered.split(',').any(|p| p.trim() == PROTOCOL)
}

/// A frame as a server-sent event. Logged events get the id `<epoch>-<seq>` to resume from; the
/// shop's live frames have none, so a reconnect starts over from a snapshot.
pub fn sse_event(frame: &str) -> String {
    match liveshop_room::protocol::EventFrame::position(frame) {
        Some((e, s)) => format!("id: {}-{}\ndata: {frame}\n\n", e.0, s.0),
        None => format!("data: {frame}\n\n"),
    }
}

/// Where an event stream resumes: `Last-Event-ID: <epoch>-<seq>`; `None` when absent or not
/// that shape (the stream then starts from a snapshot).
pub fn last_event_id(value: Option<&str>) -> Option<(u64, u64)> {
    let (epoch, seq) = value?.split_once('-')?;
    Some((epoch.parse().ok()?, seq.parse().ok()?))
}

/// `POST /v1/stream-events`' body, `{"show", "event"}`: the envelope is read here, the event
/// stays as it came, for the show's room to parse once (`liveshop_room::STREAM_EVENTS_PATH`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamEventPost<'a> {
    pub show: String,
    #[serde(borrow)]
    pub event: &'a serde_json::value::RawValue,
}

impl<'a> StreamEventPost<'a> {
    pub fn parse(body: &'a [u8]) -> Result<StreamEventPost<'a>, ApiError> {
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(e.to_string()))
    }
}

/// A guest token's request body: `{}` or `{"name": "..."}`; the name normalized, or why not.
pub fn guest_name(body: &[u8]) -> Result<Option<String>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct GuestRequest {
        /// Absent for a buyer who has not picked a name: the cart and checkout need none.
        #[serde(default)]
        name: Option<String>,
    }
    let req: GuestRequest = serde_json::from_slice(body).map_err(|e| ApiError::invalid(e.to_string()))?;
    let name = req.name.map(|n| liveshop_room::filter::normalize_whitespace(&n));
    // Characters for people, bytes for the token's own limit.
    let bad = |n: &String| {
        n.is_empty() || n.chars().count() > MAX_GUEST_NAME_CHARS || n.len() > liveshop_identity::MAX_NAME_LEN
    };
    if name.as_ref().is_some_and(bad) {
        return Err(ApiError::invalid(format!("a name is 1 to {MAX_GUEST_NAME_CHARS} characters")));
    }
    Ok(name)
}

/// A guest token to mint for `device` in `room`: a viewer whose subject is the device's guest
/// subject (always the same, so a cart made before picking a name stays theirs).
#[derive(Debug, Clone)]
pub struct Guest {
    pub claims: Claims,
    pub subject: String,
    pub expires_at: u64,
}

impl Guest {
    pub fn new(devices: &Devices, room: &str, device: &str, name: Option<String>, now_secs: u64) -> Guest {
        let subject = devices.guest_subject(device);
        let expires_at = now_secs + GUEST_TOKEN_SECS;
        let mut claims = Claims::new(&subject, room, Role::Viewer, expires_at).with_device(device);
        if let Some(name) = name {
            claims = claims.with_name(name);
        }
        Guest { claims, subject, expires_at }
    }

    /// The answer, once the host minted `token`.
    pub fn answer(&self, token: &str) -> Value {
        json!({ "token": token, "subject": self.subject, "expires_at": self.expires_at })
    }
}

/// The claims of a new show's host token: its creator, as host of the show.
pub fn host_claims(creator: &Identity, show: &Show, now_secs: u64) -> Claims {
    Claims::new(&creator.subject, &show.id, Role::Host, now_secs + HOST_TOKEN_SECS)
}

/// Who creates a show that sells from `shop`, and with which credential: a platform-wide token
/// (room `*`), or else a token for the shop; refused unless their role may create shows with it
/// (`liveshop_room::show::may_create`). `verify` checks a token for a scope.
pub fn show_creator(
    token: &str,
    shop: &str,
    verify: impl Fn(&str, &str) -> Result<Identity, TokenError>,
) -> Result<(Identity, Credential), ApiError> {
    let (who, credential) = match verify(token, "*") {
        Err(TokenError::WrongRoom) => (verify(token, shop), Credential::Shop),
        verified => (verified, Credential::Platform),
    };
    let who = who.map_err(ApiError::token)?;
    liveshop_room::show::may_create(&who, credential)
        .map_err(|e| ApiError::new(403, e.code(), e.to_string()))?;
    Ok((who, credential))
}

/// `POST /v1/shows`'s answer: the show, its host token and the pages' addresses under `base`.
pub fn created_show(base: &str, show: &Show, host_token: &str) -> Value {
    json!({
        "show": show,
        "host_token": host_token,
        "viewer_url": format!("{base}/watch/{}", show.id),
        "dashboard_url": format!("{base}/dashboard/{}#token={host_token}", show.id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_subprotocol_offer_and_streams_resume_by_last_event_id() {
        assert_eq!(bearer("Bearer  aaa.bbb.ccc "), Some("aaa.bbb.ccc"));
        assert_eq!(bearer("Basic dXNlcg=="), None);
        assert_eq!(token_from_protocols("liveshop.v1, aaa.bbb.ccc"), Some("aaa.bbb.ccc"));
        assert_eq!(token_from_protocols("liveshop.v1"), None);
        assert_eq!(token_from_protocols("chat, x.y"), None);
        assert!(offers_protocol("aaa.bbb.ccc , liveshop.v1"));
        assert!(!offers_protocol("liveshop.v2"));
        assert_eq!(last_event_id(Some("7-42")), Some((7, 42)));
        for bad in [None, Some("7"), Some("7-x"), Some("-1-2"), Some("")] {
            assert_eq!(last_event_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_caller_is_who_the_token_presented_proves_or_nobody() {
        let secret = liveshop_identity::Secret::new(b"a test secret that is long enough".to_vec()).unwrap();
        let token = |room: &str| secret.mint(&Claims::new("ana", room, Role::Viewer, 2_000)).unwrap();
        let (mine, other) = (token("demo"), token("other"));
        let bearer = format!("Bearer {other}");
        let query = format!("epoch=1&token={mine}");
        let offer = format!("liveshop.v1, {mine}");
        // The query wins over a subprotocol, which wins over the header.
        let all = Credentials { authorization: Some(&bearer), query: Some(&query), protocols: Some(&offer) };
        assert_eq!(all.token(), Some(mine.as_str()));
        let header_only = Credentials { authorization: Some(&bearer), ..Credentials::default() };
        assert_eq!(header_only.token(), Some(other.as_str()));
        let offered = Credentials { protocols: Some(&offer), ..Credentials::default() };
        assert_eq!(offered.token(), Some(mine.as_str()));
        assert_eq!(Credentials { query: Some("epoch=1"), ..Credentials::default() }.token(), None);
        // Off the routes browsers open without headers, only the header counts.
        let commands = route::Route::of("POST", "/v1/rooms/demo/commands");
        assert_eq!(all.for_route(commands).token(), Some(other.as_str()));
        assert_eq!(offered.for_route(commands).token(), None);
        assert_eq!(
            all.for_route(route::Route::of("GET", "/v1/rooms/demo/events")).token(),
            Some(mine.as_str())
        );

        let verify = |t: &str| secret.verify(t, "demo", 1_000);
        let ana = Caller::of(Some(&mine), verify).unwrap();
        assert_eq!(ana.clone().required().unwrap().subject, "ana");
        assert_eq!(ana.merchant().unwrap_err().code, "forbidden");
        assert_eq!(Caller::of(Some(&other), verify).unwrap_err().code, "token_wrong_room");
        let nobody = Caller::of(None, verify).unwrap();
        assert_eq!(nobody, Caller(None));
        assert_eq!(nobody.required().unwrap_err().code, "token_malformed");
    }

    #[test]
    fn shows_are_created_with_a_platform_token_or_a_merchant_token_for_the_shop() {
        let secret = liveshop_identity::Secret::new(b"a test secret that is long enough".to_vec()).unwrap();
        let token = |room: &str, role| secret.mint(&Claims::new("ana", room, role, 2_000)).unwrap();
        let verify = |t: &str, scope: &str| secret.verify(t, scope, 1_000);
        let creator = |t: String| show_creator(&t, "acme", verify).map(|(who, c)| (who.role, c));
        assert_eq!(creator(token("*", Role::Host)), Ok((Role::Host, Credential::Platform)));
        assert_eq!(creator(token("acme", Role::Merchant)), Ok((Role::Merchant, Credential::Shop)));
        assert_eq!(creator(token("acme", Role::Host)).unwrap_err().status, 403, "a shop's host");
        assert_eq!(creator(token("*", Role::Viewer)).unwrap_err().status, 403);
        assert_eq!(creator(token("other", Role::Merchant)).unwrap_err().code, "token_wrong_room");
    }

    #[test]
    fn a_stream_event_is_passed_on_as_it_came() {
        let body = br#"{"show": "spring", "event": {"type":"stream.ended",  "duration_ms": 4200}}"#;
        let post = StreamEventPost::parse(body).unwrap();
        assert_eq!(
            (post.show.as_str(), post.event.get()),
            ("spring", r#"{"type":"stream.ended",  "duration_ms": 4200}"#)
        );
        for bad in [&br#"{"show": "spring"}"#[..], br#"{"show": "s", "event": {}, "x": 1}"#, b"{"] {
            assert_eq!(StreamEventPost::parse(bad).unwrap_err().code, "invalid_argument");
        }
    }

    #[test]
    fn guest_names_are_normalized_and_bounded() {
        assert_eq!(guest_name(b"{}"), Ok(None));
        assert_eq!(guest_name(br#"{"name": "  Ana   Lima "}"#), Ok(Some("Ana Lima".into())));
        let long = format!(r#"{{"name": "{}"}}"#, "é".repeat(41));
        for bad in [&br#"{"name": "   "}"#[..], long.as_bytes(), br#"{"nick": "x"}"#, b"name"] {
            assert_eq!(guest_name(bad).unwrap_err().code, "invalid_argument");
        }
        assert_eq!(
            ApiError::new(403, "forbidden", "no").body(),
            r#"{"error":{"code":"forbidden","message":"no"}}"#
        );
    }

    #[test]
    fn a_guest_is_a_viewer_of_the_room_by_their_device() {
        let secret = liveshop_identity::Secret::new(b"a test secret that is long enough".to_vec()).unwrap();
        let devices = secret.devices();
        let g = Guest::new(&devices, "demo", "dev-1", Some("Ana".into()), 1_000);
        assert_eq!(g.subject, devices.guest_subject("dev-1"));
        assert_eq!((g.claims.role, g.expires_at), (Role::Viewer, 1_000 + GUEST_TOKEN_SECS));
        let token = secret.mint(&g.claims).unwrap();
        let who = secret.verify(&token, "demo", 1_001).unwrap();
        assert_eq!((who.device.as_deref(), who.name.as_deref()), (Some("dev-1"), Some("Ana")));
        assert_eq!(g.answer(&token)["subject"], g.subject.as_str());
    }
}
