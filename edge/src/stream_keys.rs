//! `POST /v1/shows/{show}/stream-key`: the show's host rotates its stream key. A key is derived
//! from the node's secret, the show id and the show's key version
//! (`liveshop_identity::StreamKeys`); bumping the version in the show record revokes the old key
//! for every WHIP request from then on (the media origin asks for the version each time). A
//! publisher already live keeps streaming unless the host asks `{"disconnect": true}`, which
//! ends the show's WHIP session as its publisher's DELETE would.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use liveshop_identity::{Role, TokenError};
use serde::{Deserialize, Serialize};

use crate::http::{ApiError, AppState, Limited, Presented};
use crate::shows::Show;

/// The media origin the node runs in its own process ([`AppState::mount_live_streams`]): what
/// ends a show's live WHIP session (answering whether one was live), and its metrics.
pub trait LiveStreams: Send + Sync + 'static {
    fn end<'a>(&'a self, show: &'a str) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;
    /// Appends the origin's own metrics to the node's `/metrics` text (before its `# EOF`).
    fn encode_metrics(&self, out: &mut String);
}

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/shows/{show}/stream-key", post(rotate))
}

/// Where and with what OBS publishes a show: Settings > Stream > Service "WHIP", this server URL
/// and the stream key as Bearer token.
#[derive(Serialize)]
pub(crate) struct Publishing {
    pub whip_url: String,
    pub stream_key: String,
}

impl Publishing {
    pub(crate) fn of(app: &AppState, show: &Show) -> Publishing {
        Publishing {
            whip_url: format!("{}/whip/{}", app.config.base_url(), show.id),
            stream_key: app.secret.stream_keys().key(&show.id, show.stream_key_version),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    /// End the live publisher's session too (it holds the old key, maybe a leaked one).
    #[serde(default)]
    disconnect: bool,
}

#[derive(Serialize)]
struct Rotated {
    #[serde(flatten)]
    publishing: Publishing,
    stream_key_version: u32,
    /// Whether a live session was ended (only asked with `disconnect`).
    disconnected: bool,
}

/// A small JSON object, or nothing.
const MAX_ROTATE_BODY: usize = 1024;

async fn rotate(
    State(app): State<Arc<AppState>>,
    Path(show): Path<String>,
    token: Presented,
    Limited(body): Limited<MAX_ROTATE_BODY>,
) -> Result<Json<Rotated>, ApiError> {
    let forbidden =
        || ApiError::new(StatusCode::FORBIDDEN, "forbidden", "only the show's host rotates its stream key");
    // Another show's valid token is a caller without the right, not a bad token.
    let who = app
        .caller(&token, &show)
        .and_then(|c| c.required().map_err(ApiError::from))
        .map_err(|e| if e.code == TokenError::WrongRoom.code() { forbidden() } else { e })?;
    if who.role != Role::Host {
        return Err(forbidden());
    }
    app.show(&show)?;
    let request: RotateRequest = if body.is_empty() {
        RotateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.to_string()))?
    };
    let live = app.live_streams.get();
    if request.disconnect && live.is_none() {
        // Refused before anything changes: the host learns the publisher is still on.
        let msg = "this node runs no media origin of its own, so it cannot end the live session; \
                   rotate without disconnect and stop the publisher at the origin";
        return Err(ApiError::new(StatusCode::CONFLICT, "no_media_origin", msg));
    }
    let rotated = app.shows.rotate_stream_key(&show)?;
    let disconnected = match live {
        Some(live) if request.disconnect => live.end(&show).await.map_err(|e| {
            tracing::error!(show, "ending the live session after a key rotation: {e}");
            let msg = "the key was rotated, but the live session could not be ended; try again";
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
        })?,
        _ => false,
    };
    Ok(Json(Rotated {
        publishing: Publishing::of(&app, &rotated),
        stream_key_version: rotated.stream_key_version,
        disconnected,
    }))
}
