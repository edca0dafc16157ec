//! What the origin tells the rest of liveshop about a show's stream: it started, it is healthy
//! (or not), it ended. The host of the origin decides where these go; [`PostEvents`] posts them
//! to an edge node's `POST /v1/stream-events`, signed, and the edge hands each to the show's
//! room as a host command, which the room relays to the dashboard and the viewers. They
//! serialize as exactly those commands (`docs/protocol.md`, `stream.*`).
//!
//! ```text
//!  ingest ──stream_event()──▶ bounded queue ──one task, in order──▶ POST /v1/stream-events
//!  (never waits)              (full: dropped, logged)  retries 5xx   {"show", "event"} + webhook-id,
//!                                                      and no answer  webhook-timestamp, webhook-signature
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;

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
        /// How long after its capture the first frame reached the origin (see [`Health`]).
        capture_lag_ms: i64,
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
    /// How long after its capture (the publisher's clock, from RTCP sender reports, as
    /// PROGRAM-DATE-TIME says it) a video frame reached the origin (the origin's wall clock): the
    /// least over the interval, the path's delay without queueing. The room maps its own clock
    /// to the video's with it (`docs/sync.md`). Negative when the publisher's clock is ahead.
    pub capture_lag_ms: i64,
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

/// Events waiting for the edge; beyond this the edge is not keeping up and new ones are dropped.
const QUEUE: usize = 128;
/// Health reports only take the first half of the queue: they come every few seconds per show and
/// the next one replaces a lost one, so the rest stays free for `started` and `ended`.
const HEALTH_QUEUE: usize = QUEUE / 2;
/// Waits before the second, third and fourth attempt of one event.
const RETRY_AFTER: [Duration; 3] =
    [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5)];

/// Posts events to an edge node, signed per Standard Webhooks (`liveshop_webhooks::standard`)
/// with the key the edge derives from the node's secret (`liveshop_edge::stream_event_secret`).
/// One task delivers them in order, each with its own id across retries; the ingest task only
/// puts them in a bounded queue.
pub struct PostEvents {
    queue: mpsc::Sender<(String, StreamEvent)>,
}

/// What one delivery attempt came to.
enum Attempt {
    Delivered,
    Retry(String),
    Refused(String),
}

impl PostEvents {
    /// Starts delivering to `endpoint` (the edge's `.../v1/stream-events`) with `client` (the
    /// host's, with its TLS and timeouts). Call it inside a tokio runtime.
    pub fn start(client: reqwest::Client, endpoint: String, secret: liveshop_webhooks::Secret) -> PostEvents {
        let (queue, mut rx) = mpsc::channel::<(String, StreamEvent)>(QUEUE);
        tokio::spawn(async move {
            while let Some((show, event)) = rx.recv().await {
                let body = serde_json::to_vec(&serde_json::json!({ "show": show, "event": event }))
                    .expect("an event serializes");
                let id = event_id();
                let mut attempt = deliver(&client, &endpoint, &secret, &id, &body).await;
                for wait in RETRY_AFTER {
                    let Attempt::Retry(why) = &attempt else { break };
                    tracing::debug!(show, id, "stream event: {why}; retrying");
                    tokio::time::sleep(wait).await;
                    attempt = deliver(&client, &endpoint, &secret, &id, &body).await;
                }
                match attempt {
                    Attempt::Delivered => {}
                    Attempt::Retry(why) | Attempt::Refused(why) => {
                        tracing::warn!(show, ?event, "a stream event did not reach the edge: {why}");
                    }
                }
            }
        });
        PostEvents { queue }
    }
}

impl StreamEvents for PostEvents {
    fn stream_event(&self, show: &str, event: StreamEvent) {
        let waiting = QUEUE - self.queue.capacity();
        if matches!(event, StreamEvent::Health(_)) && waiting >= HEALTH_QUEUE {
            return tracing::debug!(show, "a health report was skipped: the edge is behind");
        }
        if let Err(e) = self.queue.try_send((show.to_string(), event)) {
            tracing::warn!(show, "a stream event was dropped: the edge is not keeping up ({e})");
        }
    }
}

/// One signed POST: a 2xx delivered it, and so did a 409 (the edge already has this id, from an
/// attempt whose answer was lost); no answer, a 408, 429 or 5xx may pass later; any other
/// refusal will not.
async fn deliver(
    client: &reqwest::Client,
    endpoint: &str,
    secret: &liveshop_webhooks::Secret,
    id: &str,
    body: &[u8],
) -> Attempt {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let signed = match liveshop_webhooks::standard::sign(std::slice::from_ref(secret), id, now, body) {
        Ok(headers) => headers,
        Err(e) => return Attempt::Refused(e.to_string()),
    };
    let mut request = client.post(endpoint).header("content-type", "application/json").body(body.to_vec());
    for (name, value) in signed.iter() {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(r) if r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT => Attempt::Delivered,
        Ok(r) => {
            let status = r.status();
            let why = format!("{status}: {}", r.text().await.unwrap_or_default());
            let transient = status.is_server_error()
                || matches!(
                    status,
                    reqwest::StatusCode::REQUEST_TIMEOUT | reqwest::StatusCode::TOO_MANY_REQUESTS
                );
            if transient { Attempt::Retry(why) } else { Attempt::Refused(why) }
        }
        Err(e) => Attempt::Retry(e.to_string()),
    }
}

/// A random id: the edge takes each id once, whichever origin (or restart of one) sent it.
fn event_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    format!("evt_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
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
            capture_lag_ms: 42,
        });
        assert_eq!(
            serde_json::to_value(&health).unwrap(),
            serde_json::json!({"type": "stream.health", "bitrate_kbps": 2480, "fps": 30, "keyframe_interval_ms": 2000, "capture_lag_ms": 42})
        );
        let ended = StreamEvent::Ended { duration_ms: 1_834_000 };
        assert_eq!(
            serde_json::to_value(&ended).unwrap(),
            serde_json::json!({"type": "stream.ended", "duration_ms": 1_834_000})
        );
    }

    /// What a fake edge got: each attempt's id, and the event of those it took.
    type Attempts = mpsc::UnboundedReceiver<(String, Option<serde_json::Value>)>;

    /// An edge on loopback that checks signatures as the real one does and answers each
    /// attempt with the next of `statuses` (then 200).
    async fn fake_edge(secret: liveshop_webhooks::Secret, statuses: Vec<u16>) -> (PostEvents, Attempts) {
        use axum::http::{HeaderMap, StatusCode};
        use std::sync::{Arc, Mutex};
        let (tx, rx) = mpsc::unbounded_channel();
        let statuses = Arc::new(Mutex::new(statuses.into_iter()));
        let key = secret.clone();
        let edge = axum::Router::new().route(
            "/v1/stream-events",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| async move {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
                let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
                let id = liveshop_webhooks::standard::verify(&[key], header, &body, now, 300)
                    .expect("signed with the key")
                    .id
                    .to_string();
                let status = statuses.lock().unwrap().next().unwrap_or(200);
                let took = (status == 200).then(|| serde_json::from_slice(&body).unwrap());
                tx.send((id, took)).unwrap();
                StatusCode::from_u16(status).unwrap()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/v1/stream-events", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, edge).await });
        (PostEvents::start(client(), endpoint, secret), rx)
    }

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder().tls_backend_rustls().build().unwrap()
    }

    async fn next(attempts: &mut Attempts) -> (String, Option<serde_json::Value>) {
        tokio::time::timeout(Duration::from_secs(30), attempts.recv()).await.expect("an attempt").unwrap()
    }

    #[tokio::test]
    async fn events_reach_the_edge_signed_and_in_order_and_a_503_is_retried_with_the_same_id() {
        let (post, mut attempts) = fake_edge(liveshop_webhooks::Secret::generate([7; 32]), vec![503]).await;
        let started = StreamEvent::Started {
            playlist: "/hls/demo/master.m3u8".into(),
            codecs: "avc1".into(),
            width: 640,
            height: 360,
            capture_lag_ms: 0,
        };
        post.stream_event("demo", started);
        post.stream_event("demo", StreamEvent::Ended { duration_ms: 5000 });
        let (first, refused) = next(&mut attempts).await;
        assert_eq!(refused, None);
        let (retried, took) = next(&mut attempts).await;
        assert_eq!(retried, first, "a retry keeps its id, so the edge can take it once");
        let took = took.unwrap();
        assert_eq!(
            (took["show"].as_str(), took["event"]["type"].as_str()),
            (Some("demo"), Some("stream.started"))
        );
        let (other, took) = next(&mut attempts).await;
        assert_ne!(other, first);
        assert_eq!(took.unwrap()["event"], serde_json::json!({"type": "stream.ended", "duration_ms": 5000}));
    }

    #[tokio::test]
    async fn a_refused_event_is_not_retried_and_the_next_one_still_goes() {
        let (post, mut attempts) = fake_edge(liveshop_webhooks::Secret::generate([8; 32]), vec![404]).await;
        post.stream_event("gone", StreamEvent::Ended { duration_ms: 1 });
        post.stream_event("demo", StreamEvent::Ended { duration_ms: 2 });
        let (refused, took) = next(&mut attempts).await;
        assert_eq!(took, None);
        let (id, took) = next(&mut attempts).await;
        assert_ne!(id, refused, "no second attempt of a 404");
        assert_eq!(took.unwrap()["show"], "demo");
    }

    #[tokio::test]
    async fn health_reports_leave_room_in_the_queue_for_starts_and_ends() {
        // An edge that takes connections and never answers: the sender waits on its first event.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/v1/stream-events", listener.local_addr().unwrap());
        let (accepted, mut first) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
                let _ = accepted.send(());
            }
        });
        let post = PostEvents::start(client(), endpoint, liveshop_webhooks::Secret::generate([5; 32]));
        let health = || {
            StreamEvent::Health(Health {
                bitrate_kbps: 1,
                fps: 30,
                keyframe_interval_ms: None,
                warnings: vec![],
                capture_lag_ms: 0,
            })
        };
        post.stream_event("demo", health());
        first.recv().await.unwrap();

        for _ in 0..QUEUE {
            post.stream_event("demo", health());
        }
        assert_eq!(QUEUE - post.queue.capacity(), HEALTH_QUEUE, "health reports stop at half the queue");
        for _ in 0..QUEUE - HEALTH_QUEUE {
            post.stream_event("demo", StreamEvent::Ended { duration_ms: 1 });
        }
        assert_eq!(post.queue.capacity(), 0, "every end found room");
    }
}
