//! # liveshop media origin
//!
//! Hosts go live from OBS over WHIP (WebRTC); viewers watch Low-Latency HLS that any CDN can
//! carry. No transcoding: the H.264 and Opus the publisher sends are repackaged as CMAF fMP4
//! parts of about 200 ms, listed in a playlist that players reload with blocking requests, so a
//! viewer is about a second behind the host.
//!
//! ```text
//!  OBS ──WHIP POST──▶ whip ──▶ ingest (str0m, one UDP socket) ──frames──▶ packager ──parts──▶ store
//!                                                                                             │
//!  player ◀──────────────────────────── hls (blocking reload, delta updates) ◀────────────────┘
//! ```
//!
//! One module per step, a plain model between them (MediaMTX's shape):
//! - [`whip`]: the HTTP side of WHIP (RFC 9725): stream keys, statuses, CORS; [`keys`]: which
//!   key version a show takes now (the node's show record says).
//! - [`ingest`]: the task owning the UDP socket and every session's `str0m::Rtc`; turns RTP into
//!   [`media::Frame`]s with capture times from RTCP sender reports.
//! - [`h264`]: SPS/PPS tracking and parsing, Annex B to length-prefixed samples.
//! - [`packager`] (pure) cuts frames into parts and segments; [`fmp4`] (pure) writes the boxes.
//! - [`playlist`] (pure): LL-HLS media playlist state and text.
//! - [`store`]: per-show parts and segments in memory, files on disk (the replay).
//! - [`hls`]: serving it all with CDN-friendly cache headers.
//! - [`events`]: what the room hears about a stream (started, health, ended);
//!   [`events::PostEvents`] posts them, signed, to an edge node's `POST /v1/stream-events`, off
//!   the ingest task.
//!
//! - [`aac`]: the AAC-LC rendition, transcoded from the publisher's Opus on a thread of its own.
//!
//! The pure parts take no clock and do no IO; their tests run a ten-second stream in
//! microseconds. A WHEP output would be a new module beside these.
//!
//! ```no_run
//! # async fn run() -> Result<(), liveshop_media_origin::OriginError> {
//! use std::sync::Arc;
//! use liveshop_media_origin::{Origin, OriginConfig, events::LogEvents};
//! let origin = Origin::start(OriginConfig::new(".liveshop/media".into()), b"node secret", Arc::new(LogEvents)).await?;
//! println!("OBS bearer token for show demo: {}", origin.stream_key("demo"));
//! let app: axum::Router = origin.router(); // serve it on any listener, or merge it into another router
//! # Ok(()) }
//! ```

pub mod aac;
pub mod error;
pub mod events;
pub mod fmp4;
pub mod h264;
pub mod hls;
pub mod ingest;
pub mod keys;
pub mod media;
pub mod packager;
pub mod playlist;
pub mod store;
pub mod whip;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::events::StreamEvents;
use crate::ingest::{Ingest, IngestConfig, IngestError};
use crate::keys::{KeyVersions, UnversionedKeys};
use crate::playlist::PlaylistConfig;
use crate::store::Library;
use crate::whip::{IceServer, WhipState};
use liveshop_identity::StreamKeys;

#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Where recordings live, one directory per show.
    pub media_dir: PathBuf,
    pub ingest: IngestConfig,
    /// STUN/TURN servers offered to publishers (none needed when the UDP port is reachable).
    pub ice_servers: Vec<IceServer>,
    /// Recordings older than this are deleted at start; `None` keeps them forever.
    pub vod_retention: Option<Duration>,
    /// hls.js as npm installed it (`web/node_modules/hls.js/dist/hls.min.js`), served at
    /// `/media/hls.js` for the viewer page's player.
    pub hls_js: Option<PathBuf>,
    /// Where a show's current stream key version comes from (the node's show records); by
    /// default every show takes its version-0 key ([`keys::UnversionedKeys`]).
    pub key_versions: Arc<dyn KeyVersions>,
}

impl OriginConfig {
    pub fn new(media_dir: PathBuf) -> OriginConfig {
        OriginConfig {
            media_dir,
            ingest: IngestConfig::default(),
            ice_servers: Vec::new(),
            vod_retention: None,
            hls_js: None,
            key_versions: Arc::new(UnversionedKeys),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("media directory {path}: {source}")]
    MediaDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// A running origin: its ingest task is live; [`Origin::router`] serves WHIP and HLS.
#[derive(Clone)]
pub struct Origin {
    whip: Arc<WhipState>,
    library: Arc<Library>,
    hls_js: Option<PathBuf>,
    metrics: Arc<prometheus_client::registry::Registry>,
}

impl Origin {
    /// Binds the UDP socket and starts ingest. `secret` is the node's secret (stream keys are
    /// derived from it); `events` hears about streams starting, their health and their end.
    pub async fn start(
        config: OriginConfig,
        secret: &[u8],
        events: Arc<dyn StreamEvents>,
    ) -> Result<Origin, OriginError> {
        let p = config.ingest.packager;
        let playlist =
            PlaylistConfig { part_target: p.part_target.as_secs_f64(), target_duration: p.target_duration };
        let library =
            Library::open(config.media_dir.clone(), playlist, config.vod_retention).map_err(|source| {
                OriginError::MediaDir { path: config.media_dir.display().to_string(), source }
            })?;
        let library = Arc::new(library);
        let ingest = Ingest::start(config.ingest, library.clone(), events).await?;
        let mut metrics = prometheus_client::registry::Registry::with_prefix("liveshop_media");
        let aac = ingest.aac_stats();
        metrics.register("aac_frames", "AAC frames transcoded from the publishers' Opus", aac.frames.clone());
        metrics.register(
            "aac_dropped_packets",
            "Opus packets left out of the AAC rendition because its transcoder was a second behind",
            aac.dropped.clone(),
        );
        metrics.register(
            "hls_served",
            "Media parts and segments served, by rendition (aac, or as_sent: the publisher's Opus)",
            library.served.clone(),
        );
        metrics.register(
            "aac_transcode_seconds",
            "Time (wall clock) the AAC transcoders spent decoding and encoding",
            aac.busy_seconds.clone(),
        );
        let whip = Arc::new(WhipState {
            keys: StreamKeys::new(secret),
            versions: config.key_versions,
            ingest,
            ice_servers: config.ice_servers,
        });
        Ok(Origin { whip, library, hls_js: config.hls_js, metrics: Arc::new(metrics) })
    }

    /// The Bearer token OBS needs for `show` while its key was never rotated (version 0); the
    /// node that keeps the show's record answers the current one.
    pub fn stream_key(&self, show: &str) -> String {
        self.whip.keys.key(show, 0)
    }

    /// Ends the show's live WHIP session, as its publisher's DELETE would; false if the show had
    /// none. (A host who rotates a leaked key cuts off whoever publishes with it.)
    pub async fn end_stream(&self, show: &str) -> Result<bool, ApiError> {
        self.whip.ingest.stop(show.to_string(), None).await
    }

    /// Appends the origin's metrics (`liveshop_media_*`) to an OpenMetrics text without its
    /// `# EOF`: the node's `/metrics` carries them, or `liveshop origin`'s own.
    pub fn encode_metrics(&self, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(out, &self.metrics);
    }

    /// The UDP address publishers send media to (what our ICE candidates say).
    pub fn udp_addr(&self) -> SocketAddr {
        self.whip.ingest.candidate()
    }

    /// `/whip/{show}`, `/whip/{show}/{session}`, `/hls/{show}/{file}`, and the viewer page's
    /// player at `/media/player.js` and `/media/hls.js`.
    pub fn router(&self) -> Router {
        let whip = Router::new()
            .route("/whip/{show}", post(whip::post).options(whip::options))
            .route(
                "/whip/{show}/{session}",
                axum::routing::delete(whip::delete).patch(whip::patch).options(whip::options),
            )
            .with_state(self.whip.clone());
        let hls = Router::new().route("/hls/{show}/{file}", get(hls::get)).with_state(self.library.clone());
        let hls_js = self.hls_js.clone();
        let player =
            Router::new().route("/media/player.js", get(|| async { script(PLAYER_JS.into()) })).route(
                "/media/hls.js",
                get(|| async move {
                    let path = hls_js.ok_or_else(|| ApiError::not_found("hls.js is not configured"))?;
                    let text = tokio::fs::read_to_string(&path).await.map_err(|_| {
                        ApiError::not_found(format!("{} is missing: run `npm ci` in web/", path.display()))
                    })?;
                    Ok::<_, ApiError>(script(text))
                }),
            );
        // Browsers take the declared types (a playlist or an error never runs as a script).
        whip.merge(hls).merge(player).layer(axum::middleware::map_response(nosniff))
    }
}

/// The viewer page's player (`web/player.js`), built into the binary like the pages.
const PLAYER_JS: &str = include_str!("../../web/player.js");

async fn nosniff(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn script(text: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")], text).into_response()
}
