//! Which stream key a show takes now. A key is derived from the node's secret, the show id and
//! the show's key version (`liveshop_identity::StreamKeys`); the version lives in the node's show
//! record, and the host bumps it to revoke a leaked key. The origin asks for it on every WHIP
//! request (a publish is rare), so a rotation holds from the next request on, and a show the
//! node does not know cannot be published to.
//!
//! - [`NodeKeyVersions`] asks an edge node over HTTP (`GET /v1/shows/{show}`): `liveshop origin
//!   --edge <url>`.
//! - A node that mounts the origin in its own process answers from its show records directly
//!   (`src/main.rs`).
//! - [`UnversionedKeys`]: every show exists at version 0, for an origin with no node (tests,
//!   benchmarks, the example); no key can be revoked there.

use std::future::Future;
use std::pin::Pin;

use axum::http::StatusCode;

use crate::error::ApiError;

/// What a lookup answers: `Ok(Some(version))` for a show that exists, `Ok(None)` for one that
/// does not, an error (a 503 to the publisher) when it cannot tell.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Result<Option<u32>, ApiError>> + Send + 'a>>;

/// Where the origin learns a show's current key version ([`crate::OriginConfig::key_versions`]).
pub trait KeyVersions: Send + Sync + std::fmt::Debug + 'static {
    fn version<'a>(&'a self, show: &'a str) -> Lookup<'a>;
}

/// Every show at version 0 (the key of a show that was never rotated).
#[derive(Debug)]
pub struct UnversionedKeys;

impl KeyVersions for UnversionedKeys {
    fn version<'a>(&'a self, _show: &'a str) -> Lookup<'a> {
        Box::pin(async { Ok(Some(0)) })
    }
}

/// Asks the edge node at `base` for the show record.
#[derive(Debug)]
pub struct NodeKeyVersions {
    client: reqwest::Client,
    base: String,
}

impl NodeKeyVersions {
    /// `client` is the host's (TLS, timeouts); `base` the node's URL, such as `https://live.example`.
    pub fn new(client: reqwest::Client, base: &str) -> NodeKeyVersions {
        NodeKeyVersions { client, base: base.trim_end_matches('/').to_string() }
    }
}

/// The part of a show record the origin reads.
#[derive(serde::Deserialize)]
struct ShowRecord {
    #[serde(default)]
    stream_key_version: u32,
}

impl KeyVersions for NodeKeyVersions {
    fn version<'a>(&'a self, show: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            // Show ids are checked (`valid_show_id`) before a lookup: they need no escaping.
            let url = format!("{}/v1/shows/{show}", self.base);
            let unavailable = |why: String| {
                tracing::warn!(show, "stream key lookup at the node failed: {why}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the origin cannot reach the node to check the stream key; try again",
                )
            };
            let r = self.client.get(&url).send().await.map_err(|e| unavailable(e.to_string()))?;
            match r.status() {
                reqwest::StatusCode::NOT_FOUND => Ok(None),
                s if s.is_success() => {
                    let record: ShowRecord = r.json().await.map_err(|e| unavailable(e.to_string()))?;
                    Ok(Some(record.stream_key_version))
                }
                s => Err(unavailable(format!("HTTP {s}"))),
            }
        })
    }
}
