//! WHIP (RFC 9725) over HTTP: `POST /whip/{show}` publishes, `DELETE /whip/{show}/{session}`
//! ends, `PATCH` answers 405 (the origin is ICE-lite with every candidate in the answer, so
//! there is nothing to trickle), `OPTIONS` serves CORS preflights so a browser page can publish.
//!
//! Statuses and their stable `error.code`s:
//!
//! | status | code                     | when                                              |
//! |--------|--------------------------|---------------------------------------------------|
//! | 201    |                          | published: SDP answer, `Location`, `ETag`         |
//! | 400    | `bad_sdp`, `bad_request` | the offer does not parse or cannot be answered    |
//! | 401    | `unauthorized`           | missing or wrong stream key (a rotated key is wrong) |
//! | 404    | `not_found`              | a show the node does not have; DELETE of a session that is not there |
//! | 405    | `trickle_not_supported`  | PATCH                                             |
//! | 406    | `unsupported_codecs`     | no H.264 in the offer                             |
//! | 409    | `show_live`              | the show has a publisher already                  |
//! | 413    | `payload_too_large`      | an offer over [`MAX_OFFER_BYTES`]                 |
//! | 415    | `unsupported_media_type` | POST without `Content-Type: application/sdp`      |
//! | 503    | `at_capacity`            | every session slot is taken (with `Retry-After`)  |
//!
//! A second publisher is refused (409) rather than taking over: a stream key typed into two
//! OBS instances should not make them fight over the show. The first one ends with DELETE, or
//! by going silent for the silence timeout.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::ingest::Ingest;
use crate::keys::KeyVersions;
use crate::store::valid_show_id;
use liveshop_identity::StreamKeys;

/// Largest SDP offer taken: OBS sends about 2 KiB, a browser with every codec about 10 KiB.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

/// A STUN or TURN server offered to publishers in `Link` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
}

impl IceServer {
    fn link(&self) -> String {
        let mut v = format!("<{}>; rel=\"ice-server\"", self.url);
        if let (Some(u), Some(c)) = (&self.username, &self.credential) {
            v.push_str(&format!("; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""));
        }
        v
    }
}

pub struct WhipState {
    pub keys: StreamKeys,
    /// The show's current key version (see [`crate::keys`]).
    pub versions: Arc<dyn KeyVersions>,
    pub ingest: Ingest,
    pub ice_servers: Vec<IceServer>,
}

pub async fn post(
    State(state): State<Arc<WhipState>>,
    Path(show): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        // Read here, not by axum's `Bytes`, whose refusal is plain text.
        let body = axum::body::to_bytes(body, MAX_OFFER_BYTES).await.map_err(|_| {
            let msg = format!("an offer is at most {MAX_OFFER_BYTES} bytes");
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", msg)
        })?;
        let sdp_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        });
        if !sdp_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the SDP offer as Content-Type: application/sdp",
            ));
        }
        authorize(&state, &show, &headers).await?;
        let offer = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_sdp", "the offer is not UTF-8"))?;
        let published = state.ingest.publish(show.clone(), offer).await?;
        let mut r = (StatusCode::CREATED, published.answer).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
        let location = format!("/whip/{show}/{}", published.session);
        h.insert(header::LOCATION, HeaderValue::from_str(&location).expect("ids are ASCII"));
        let etag = format!("\"{}\"", published.session);
        h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("ids are ASCII"));
        ice_links(&state.ice_servers, h);
        Ok(r)
    }
    .await;
    with_cors(result.unwrap_or_else(IntoResponse::into_response))
}

pub async fn delete(
    State(state): State<Arc<WhipState>>,
    Path((show, session)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        authorize(&state, &show, &headers).await?;
        if state.ingest.stop(show, Some(session)).await? {
            Ok(StatusCode::OK.into_response())
        } else {
            Err(ApiError::not_found("no such session"))
        }
    }
    .await;
    with_cors(result.unwrap_or_else(IntoResponse::into_response))
}

pub async fn patch() -> Response {
    let mut r = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle_not_supported",
        "the origin is ICE-lite and sends all its candidates in the answer; trickle is not needed",
    )
    .into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    with_cors(r)
}

pub async fn options(State(state): State<Arc<WhipState>>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    ice_links(&state.ice_servers, h);
    with_cors(r)
}

/// The show's key at its current version, or a 401; a show the node does not have is a 404.
async fn authorize(state: &WhipState, show: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    if !valid_show_id(show) {
        return Err(ApiError::not_found("no such show"));
    }
    let version = state.versions.version(show).await?.ok_or_else(|| ApiError::not_found("no such show"))?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    match presented {
        Some(key) if state.keys.verify(show, version, key) => Ok(()),
        Some(_) => {
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong stream key for this show"))
        }
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the show's stream key as Authorization: Bearer <key>",
        )),
    }
}

fn ice_links(servers: &[IceServer], h: &mut HeaderMap) {
    for s in servers {
        if let Ok(v) = HeaderValue::from_str(&s.link()) {
            h.append(header::LINK, v);
        }
    }
}

fn with_cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location, ETag, Link"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers() {
        let turn = IceServer {
            url: "turn:turn.example.net?transport=udp".into(),
            username: Some("u".into()),
            credential: Some("p".into()),
        };
        assert_eq!(
            turn.link(),
            "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\""
        );
    }
}
