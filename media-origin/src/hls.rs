//! `GET /hls/{show}/{file}`: playlists (with blocking reload and delta updates), init segments,
//! segments and parts, with the cache headers a CDN needs (see `docs/cdn.md`).
//!
//! | file                 | what                                  | Cache-Control                 |
//! |----------------------|---------------------------------------|-------------------------------|
//! | `master.m3u8`        | multivariant playlist                 | `no-cache`                    |
//! | `master-aac.m3u8`    | the same with the AAC variant alone   | `no-cache`                    |
//! | `live.m3u8`          | media playlist                        | `no-cache`                    |
//! | `live.m3u8?_HLS_msn` | blocking reload, answered when ready  | `public, max-age=<target>`    |
//! | any, of a recording  | the playlists once the show ended     | `public, max-age=10`          |
//! | `init-N.mp4`, `seg-N.m4s`, `part-N.P.m4s` | media             | `public, max-age=31536000, immutable` |
//!
//! The AAC rendition's files are the same names with `aac-` in front. A request for the part
//! named in the preload hint waits until that part exists; one for the multivariant playlist of
//! a stream that is being published waits for its first whole segment (the bit rates it states
//! are measured on segments), and like every blocking request gets 503 with `Retry-After` if
//! that takes longer than three target durations.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::playlist::{Readiness, Rendition};
use crate::store::{
    AAC_MULTIVARIANT_PLAYLIST, Library, MEDIA_PLAYLIST, MULTIVARIANT_PLAYLIST, ShowStream, parse_init_name,
    parse_part_name, parse_segment_name, valid_show_id,
};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A recording's playlists (ended: `EXT-X-ENDLIST`): a CDN serves a replay's viewers, asking
/// again every few seconds in case the show goes live once more (an encoder's reconnect).
const RECORDING: &str = "public, max-age=10";

/// A playlist's `Cache-Control`: a recording's is cacheable, a live one's never.
fn playlist_cache(ended: bool) -> &'static str {
    if ended { RECORDING } else { "no-cache" }
}

#[derive(Debug, Default, Deserialize)]
pub struct HlsQuery {
    #[serde(rename = "_HLS_msn")]
    msn: Option<String>,
    #[serde(rename = "_HLS_part")]
    part: Option<String>,
    #[serde(rename = "_HLS_skip")]
    skip: Option<String>,
}

pub async fn get(
    State(library): State<Arc<Library>>,
    Path((show, file)): Path<(String, String)>,
    Query(q): Query<HlsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let response = serve(&library, &show, &file, q, gzip).await;
    // Media served, by rendition: which variant players take.
    let (rendition, name) = Rendition::of_file(&file);
    if response.is_ok() && name.ends_with(".m4s") {
        library.served.get_or_create(&rendition.into()).inc();
    }
    response
}

async fn serve(
    library: &Library,
    show: &str,
    file: &str,
    q: HlsQuery,
    gzip: bool,
) -> Result<Response, ApiError> {
    let Some(stream) = library.get(show) else {
        return from_disk(library, show, file, gzip).await;
    };
    // One deadline and one subscription (taken before anything is checked, so no change is
    // missed) for whatever this request waits for.
    let deadline = tokio::time::Instant::now() + block_limit(&stream);
    let mut changes = stream.subscribe();
    if file == MULTIVARIANT_PLAYLIST || file == AAC_MULTIVARIANT_PLAYLIST {
        loop {
            let ready = {
                let s = stream.lock();
                s.multivariant(file).map(|text| (text, s.ended()))
            };
            if let Some((text, ended)) = ready {
                return Ok(playlist_response(Bytes::from(text), playlist_cache(ended), gzip));
            }
            wait(&mut changes, deadline).await?;
        }
    }
    let (rendition, name) = Rendition::of_file(file);
    let missing = || ApiError::not_found(file.to_string());
    // A publish is accepted before its first keyframe makes the renditions: a request that comes
    // in between waits for them, as for anything else not there yet.
    loop {
        let (ready, begun) = {
            let mut s = stream.lock();
            (s.media(rendition).is_some(), s.begun())
        };
        match (ready, begun) {
            (true, _) => break,
            (false, true) => return Err(missing()),
            (false, false) => wait(&mut changes, deadline).await?,
        }
    }
    if name == MEDIA_PLAYLIST {
        media_playlist(&stream, rendition, q, gzip, (&mut changes, deadline)).await
    } else if let Some(n) = parse_init_name(name) {
        let init = stream.lock().media(rendition).and_then(|m| m.init(n));
        init.map(|b| media(b, "video/mp4")).ok_or_else(missing)
    } else if let Some((msn, part)) = parse_part_name(name) {
        loop {
            {
                let mut s = stream.lock();
                let m = s.media(rendition).ok_or_else(missing)?;
                match m.playlist.part_state(msn, part) {
                    Readiness::Ready => {
                        return m
                            .part(msn, part)
                            .map(|b| media(b, "video/mp4"))
                            .ok_or_else(|| ApiError::new(StatusCode::GONE, "gone", "that part is too old"));
                    }
                    Readiness::TooFar => return Err(missing()),
                    Readiness::Wait => {}
                }
            }
            wait(&mut changes, deadline).await?;
        }
    } else if let Some(msn) = parse_segment_name(name) {
        let in_memory = stream.lock().media(rendition).and_then(|m| m.segment(msn));
        match in_memory {
            Some(b) => Ok(media(b, "video/mp4")),
            None => from_disk(library, show, file, gzip).await,
        }
    } else {
        Err(missing())
    }
}

/// How long a blocking request may wait: three target durations, then 503.
fn block_limit(stream: &ShowStream) -> Duration {
    Duration::from_secs(3 * u64::from(stream.config().target_duration))
}

async fn wait(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
) -> Result<(), ApiError> {
    match tokio::time::timeout_at(deadline, changes.changed()).await {
        Ok(Ok(())) => Ok(()),
        _ => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the requested part did not appear within three target durations",
            );
            e.retry_after = Some(1);
            Err(e)
        }
    }
}

async fn media_playlist(
    stream: &ShowStream,
    rendition: Rendition,
    q: HlsQuery,
    gzip: bool,
    (changes, deadline): (&mut tokio::sync::watch::Receiver<u64>, tokio::time::Instant),
) -> Result<Response, ApiError> {
    let gone = || ApiError::not_found(rendition.file(MEDIA_PLAYLIST));
    let bad = |what: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", what.to_string());
    let msn = q.msn.as_deref().map(str::parse::<u64>).transpose().map_err(|_| bad("_HLS_msn is a number"))?;
    let part =
        q.part.as_deref().map(str::parse::<u32>).transpose().map_err(|_| bad("_HLS_part is a number"))?;
    if part.is_some() && msn.is_none() {
        return Err(bad("_HLS_part needs _HLS_msn"));
    }
    let skip = q.skip.as_deref() == Some("YES");
    let Some(msn) = msn else {
        let (text, ended) = {
            let mut s = stream.lock();
            let ended = s.ended();
            (s.media(rendition).ok_or_else(gone)?.live_playlist(skip), ended)
        };
        return Ok(playlist_response(text, playlist_cache(ended), gzip));
    };
    loop {
        {
            let mut s = stream.lock();
            let m = s.media(rendition).ok_or_else(gone)?;
            match m.playlist.readiness(msn, part) {
                Readiness::Ready => {
                    let text = m.live_playlist(skip);
                    let cache = format!("public, max-age={}", m.playlist.config().target_duration);
                    return Ok(playlist_response(text, &cache, gzip));
                }
                Readiness::TooFar => {
                    return Err(bad("_HLS_msn/_HLS_part is further ahead than the playlist allows"));
                }
                Readiness::Wait => {}
            }
        }
        wait(changes, deadline).await?;
    }
}

/// Recordings of shows not live in this process: the files on disk.
async fn from_disk(library: &Library, show: &str, file: &str, gzip: bool) -> Result<Response, ApiError> {
    let name = Rendition::of_file(file).1;
    let known = name == MEDIA_PLAYLIST
        || file == MULTIVARIANT_PLAYLIST
        || file == AAC_MULTIVARIANT_PLAYLIST
        || parse_init_name(name).is_some()
        || parse_segment_name(name).is_some();
    if !known || !valid_show_id(show) {
        return Err(ApiError::not_found(file.to_string()));
    }
    let dir = library.dir().join(show);
    let mut bytes = tokio::fs::read(dir.join(file)).await;
    if bytes.is_err() && file == AAC_MULTIVARIANT_PLAYLIST {
        // A recording from before the AAC variant: all it has.
        bytes = tokio::fs::read(dir.join(MULTIVARIANT_PLAYLIST)).await;
    }
    let bytes = bytes.map_err(|_| ApiError::not_found(file.to_string()))?;
    if file.ends_with(".m3u8") {
        Ok(playlist_response(Bytes::from(bytes), RECORDING, gzip))
    } else {
        Ok(media(Bytes::from(bytes), "video/mp4"))
    }
}

fn media(bytes: Bytes, content_type: &'static str) -> Response {
    let mut r = Body::from(bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}

fn playlist_response(text: Bytes, cache: &str, gzip: bool) -> Response {
    let mut r = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(&text);
        let body = enc.finish().unwrap_or_default();
        let mut r = Body::from(body).into_response();
        r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Body::from(text).into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.apple.mpegurl"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(cache).unwrap_or(HeaderValue::from_static("no-cache")),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r
}
