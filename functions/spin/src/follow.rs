//! Event streams that follow a stored actor: Spin delivers nothing between instances, so a
//! stream's instance looks at the actor's value every [`POLL`] and, when it changed, sends what
//! the change means for this reader (the room's events, the shop's live products). A quiet
//! stream gets a comment every [`KEEP_ALIVE`] so proxies keep it open. A stream may count its
//! reader as present: told every [`BEAT`] while the stream is open, and once more when it ends.

use std::time::Duration;

use futures::{Sink, SinkExt};
use spin_sdk::http::box_body;

use crate::Reply;
use crate::store::{self, Blob};

/// How often a stream (or a waiting feed request) looks at the stored actor.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How long a stream may stay silent before a comment keeps it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an open stream says its reader is still there, as the viewer page's beacons do.
const BEAT: Duration = Duration::from_secs(20);

/// A server-sent event stream: `first` at once, then, each time the value under `key` differs
/// from the last one seen (`seen`, or unknown), the frames `next` makes of it; the stream ends
/// when `next` says `None`, the reader goes away, or the store fails. Without `next`, it ends
/// after `first`. `present(leaving)` is called every [`BEAT`] while it runs, and with `true`
/// once it ended.
pub(crate) fn stream<F, P>(
    key: String,
    first: Vec<String>,
    seen: Option<Option<Vec<u8>>>,
    next: Option<F>,
    mut present: P,
) -> Reply
where
    F: FnMut(&Blob) -> Option<Vec<String>> + 'static,
    P: FnMut(bool) + 'static,
{
    let (mut tx, body) = spin_sdk::http::body::stream::<String>();
    spin_sdk::wasip3::spawn(async move {
        follow(&mut tx, &key, first, seen, next, &mut present).await;
        present(true);
    });
    http::Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(box_body(body))
        .expect("a valid response")
}

async fn follow<F: FnMut(&Blob) -> Option<Vec<String>>>(
    tx: &mut (impl Sink<String> + Unpin),
    key: &str,
    first: Vec<String>,
    mut seen: Option<Option<Vec<u8>>>,
    next: Option<F>,
    present: &mut impl FnMut(bool),
) {
    for frame in first {
        if tx.send(liveshop_api::sse_event(&frame)).await.is_err() {
            return;
        }
    }
    let Some(mut next) = next else { return };
    let (mut quiet, mut since_beat) = (Duration::ZERO, Duration::ZERO);
    loop {
        spin_sdk::time::sleep(POLL).await;
        (quiet, since_beat) = (quiet + POLL, since_beat + POLL);
        if since_beat >= BEAT {
            present(false);
            since_beat = Duration::ZERO;
        }
        let Ok(now) = store::read(key).await else { return };
        let mut frames = Vec::new();
        if Some(&now) != seen.as_ref() {
            let Ok(blob) = Blob::decode(now.as_deref()) else { return };
            let Some(made) = next(&blob) else { return };
            frames = made;
            seen = Some(now);
        }
        let events: Vec<String> = match frames.is_empty() {
            true if quiet < KEEP_ALIVE => continue,
            // A comment, so proxies keep a quiet stream open.
            true => vec![":\n\n".to_string()],
            false => frames.iter().map(|f| liveshop_api::sse_event(f)).collect(),
        };
        quiet = Duration::ZERO;
        for event in events {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}
