//! What the origin tells the rest of liveshop about a show's stream: it started, it is healthy
//! (or not), it ended. The host of the origin decides where these go (`liveshop dev` posts them
//! to the show's room as host commands, which the room relays to the dashboard and the viewers).
//! They serialize as exactly those commands (`docs/protocol.md`, `stream.*`).

use serde::Serialize;

/// A stream event, serialized as the room protocol's `stream.*` events.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "stream.started")]
    Started {
        /// Multivariant playlist path, relative to the origin: `/hls/<show>/master.m3u8`.
        playlist: String,
        codecs: String,
        width: u32,
        height: u32,
    },
    #[serde(rename = "stream.health")]
    Health(Health),
    #[serde(rename = "stream.ended")]
    Ended {
        /// Media in this publish.
        duration_ms: u64,
    },
}

/// Measured over the last health interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub bitrate_kbps: u32,
    pub fps: u32,
    /// Between the last two keyframes; `None` before the second keyframe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyframe_interval_ms: Option<u32>,
    /// Human-readable problems, such as keyframes too far apart for low latency.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Longest keyframe interval that still gives 2 s segments.
pub const MAX_GOOD_KEYFRAME_INTERVAL_MS: u32 = 2000;

/// Receives stream events. Called from the ingest task: implementations must not block.
pub trait StreamEvents: Send + Sync + 'static {
    fn stream_event(&self, show: &str, event: StreamEvent);
}

/// Events go to the log only (an origin without a room to tell).
pub struct LogEvents;

impl StreamEvents for LogEvents {
    fn stream_event(&self, show: &str, event: StreamEvent) {
        tracing::info!(show, ?event, "stream event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON is the room's `stream.*` command as `docs/protocol.md` shows it.
    #[test]
    fn events_serialize_as_the_rooms_commands() {
        let health = StreamEvent::Health(Health {
            bitrate_kbps: 2480,
            fps: 30,
            keyframe_interval_ms: Some(2000),
            warnings: Vec::new(),
        });
        assert_eq!(
            serde_json::to_value(&health).unwrap(),
            serde_json::json!({"type": "stream.health", "bitrate_kbps": 2480, "fps": 30, "keyframe_interval_ms": 2000})
        );
        let ended = StreamEvent::Ended { duration_ms: 1_834_000 };
        assert_eq!(
            serde_json::to_value(&ended).unwrap(),
            serde_json::json!({"type": "stream.ended", "duration_ms": 1_834_000})
        );
    }
}
