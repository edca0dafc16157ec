//! The show on the video's clock: the media time of room events, and the replay's timeline.
//!
//! **One clock.** The video's clock is the publisher's capture time, which the media origin
//! writes as `EXT-X-PROGRAM-DATE-TIME` (from RTCP sender reports). With every `stream.started`
//! and `stream.health` the origin says how long after capture a frame reaches it
//! (`capture_lag_ms`, on the origin's wall clock). An event at room time `at` then belongs to
//! the frame captured at `media_at = at - capture_lag_ms`: the frame that was reaching the
//! origin as the event happened. Its error is the difference between the host's click reaching
//! the room and their camera's frame reaching the origin (both a few tens of milliseconds, and
//! they cancel in part), plus any offset between the origin's and the room's wall clocks (none
//! in one process; NTP's few milliseconds otherwise). `docs/sync.md` has the whole derivation.
//!
//! **Timeline.** The public events a replay needs (products shown, deals' countdowns, polls,
//! banners, pinned messages, chat, stream markers) are kept with their media time as
//! [`Moment`]s, bounded ([`MAX_MARKS`], [`MAX_CHAT`]); a deleted message leaves the replay too.
//! `GET /timeline` answers them for the replay page.

use serde::{Deserialize, Serialize};

use crate::ids::Millis;
use crate::protocol::{Audience, Event};

/// Moments other than chat and stream markers a timeline keeps; later ones are not kept.
pub const MAX_MARKS: usize = 1000;
/// Chat lines a timeline keeps: the first of the show (the rest are counted in `chat_dropped`).
pub const MAX_CHAT: usize = 1000;
/// The stream's starts and ends a timeline keeps (by which a replay finds where its video
/// plays), apart from the other moments so that neither crowds out the other.
pub const MAX_STREAM_MARKERS: usize = 200;
/// Bytes of chat moments, and apart of the other moments (as JSON), a timeline keeps whatever
/// their count: the room's snapshot holds them, and a host stores a snapshot as one value (a
/// Durable Object's SQLite row holds 2 MB). Past them, chat is counted in `chat_dropped` and
/// other moments are not kept, as past the counts.
pub const MAX_BYTES: u64 = 512 * 1024;

/// One public event on the video's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moment {
    /// Room time.
    pub at: Millis,
    /// The capture time of the frame it belongs to (ms since the Unix epoch, as PROGRAM-DATE-TIME).
    pub media_at: Millis,
    #[serde(flatten)]
    pub event: Event,
}

/// The clock mapping and the moments kept for the replay. Part of the room's state, so it is
/// stored with the snapshot and rebuilt exactly by replaying the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The origin's latest `capture_lag_ms`; `None` before any stream started here.
    pub capture_lag_ms: Option<i64>,
    /// A stream is live (started and not ended).
    pub live: bool,
    pub moments: Vec<Moment>,
    pub chat_kept: u32,
    pub chat_dropped: u32,
    /// The chat moments' size as JSON, for [`MAX_BYTES`].
    pub chat_bytes: u64,
    /// The other moments' size as JSON, for [`MAX_BYTES`].
    pub mark_bytes: u64,
    pub stream_markers: u32,
}

impl Timeline {
    /// The media time of an event at room time `at`, once a stream has given the mapping.
    pub fn media_at(&self, at: Millis) -> Option<Millis> {
        self.capture_lag_ms.map(|lag| shift(at, lag))
    }

    /// Whether the replay shows message `id`: a moderator can still delete it from there after it
    /// scrolled out of the live chat's history.
    pub fn replays_message(&self, id: crate::MessageId) -> bool {
        self.moments.iter().any(|m| match &m.event {
            Event::ChatMessage { message } | Event::ChatPinned { message } => message.id == id,
            _ => false,
        })
    }

    /// Takes in one logged event at room time `at` (from `RoomState::apply`).
    pub fn record(&mut self, at: Millis, audience: &Audience, event: &Event) {
        match event {
            Event::StreamStarted(s) => {
                self.capture_lag_ms = Some(s.capture_lag_ms);
                self.live = true;
            }
            Event::StreamHealth(h) => self.capture_lag_ms = Some(h.capture_lag_ms),
            Event::StreamEnded { .. } => self.live = false,
            Event::ChatDeleted { message_id } => {
                let (mut chat_gone, mut chat_bytes, mut mark_bytes) = (0, 0, 0);
                self.moments.retain(|m| match &m.event {
                    Event::ChatMessage { message } if message.id == *message_id => {
                        chat_gone += 1;
                        chat_bytes += size(&m.event);
                        false
                    }
                    Event::ChatPinned { message } if message.id == *message_id => {
                        mark_bytes += size(&m.event);
                        false
                    }
                    _ => true,
                });
                self.chat_kept -= chat_gone;
                self.chat_bytes -= chat_bytes;
                self.mark_bytes -= mark_bytes;
                return;
            }
            _ => {}
        }
        if *audience != Audience::All || !is_moment(event) {
            return;
        }
        // Sized only once the counts allow it: a busy show's chat passes them in minutes.
        if matches!(event, Event::ChatMessage { .. }) {
            let bytes = if self.chat_kept as usize >= MAX_CHAT { None } else { Some(size(event)) };
            match bytes.filter(|b| self.chat_bytes + b <= MAX_BYTES) {
                Some(bytes) => {
                    self.chat_kept += 1;
                    self.chat_bytes += bytes;
                }
                None => {
                    self.chat_dropped += 1;
                    return;
                }
            }
        } else if matches!(event, Event::StreamStarted(_) | Event::StreamEnded { .. }) {
            if self.stream_markers as usize >= MAX_STREAM_MARKERS {
                return;
            }
            self.stream_markers += 1;
        } else {
            let marks = self.moments.len() - self.chat_kept as usize - self.stream_markers as usize;
            if marks >= MAX_MARKS {
                return;
            }
            let bytes = size(event);
            if self.mark_bytes + bytes > MAX_BYTES {
                return;
            }
            self.mark_bytes += bytes;
        }
        let media_at = shift(at, self.capture_lag_ms.unwrap_or(0));
        self.moments.push(Moment { at, media_at, event: event.clone() });
    }
}

/// Whether a replay shows `event`: what the viewer saw over the video and in the chat.
fn is_moment(event: &Event) -> bool {
    matches!(
        event,
        Event::ChatMessage { .. }
            | Event::ChatPinned { .. }
            | Event::ChatUnpinned {}
            | Event::PollOpened { .. }
            | Event::PollClosed { .. }
            | Event::BannerSet { .. }
            | Event::BannerCleared {}
            | Event::ProductPinned { .. }
            | Event::ProductUnpinned { .. }
            | Event::ProductSoldOut { .. }
            | Event::ProductCountdownEnded { .. }
            | Event::StreamStarted(_)
            | Event::StreamEnded { .. }
    )
}

/// A moment's size as JSON: its event's and about that of its `at` and `media_at`. Counted as
/// written, not kept.
fn size(event: &Event) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, event).map_or(0, |()| count.0) + 48
}

fn shift(at: Millis, lag: i64) -> Millis {
    at.saturating_add_signed(-lag)
}

/// The replay's view of a room: `GET /timeline`'s answer. `ended` is written first, for
/// [`cache_control`]. It lists the moments once ended only: every viewer's page asks at load
/// whether to play a replay, and a page before or during the show needs none of them.
#[derive(Debug, Serialize)]
pub struct TimelineView<'a> {
    /// A stream ran and none runs now: the replay's timeline, final but for deletions.
    pub ended: bool,
    pub live: bool,
    pub capture_lag_ms: Option<i64>,
    pub chat_dropped: u32,
    pub moments: &'a [Moment],
}

impl<'a> From<&'a Timeline> for TimelineView<'a> {
    fn from(t: &'a Timeline) -> Self {
        let ended = !t.live && t.moments.iter().any(|m| matches!(m.event, Event::StreamEnded { .. }));
        TimelineView {
            ended,
            live: t.live,
            capture_lag_ms: t.capture_lag_ms,
            chat_dropped: t.chat_dropped,
            moments: if ended { &t.moments } else { &[] },
        }
    }
}

/// How long a cache may keep a timeline answer (`docs/cdn.md`). Once the stream ended it
/// changes only if a moderator deletes a message or the show goes live again, which a cache
/// shows at most this late: a CDN serves a replay's whole audience from one answer per period.
/// Before and during the show it changes with every event.
pub fn cache_control(body: &[u8]) -> &'static str {
    if body.starts_with(br#"{"ended":true"#) { ENDED_CACHE } else { "no-cache" }
}

/// `Cache-Control` of an ended show's timeline (the origin's recordings' playlists say the same).
pub const ENDED_CACHE: &str = "public, max-age=10";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChatMessage, StreamHealth, StreamStarted};
    use crate::{MessageId, Role};

    fn started(lag: i64) -> Event {
        Event::StreamStarted(StreamStarted {
            playlist: "/hls/demo/master.m3u8".into(),
            codecs: "avc1.42e01f".into(),
            width: 640,
            height: 360,
            capture_lag_ms: lag,
        })
    }

    fn chat(id: u64) -> Event {
        Event::ChatMessage {
            message: ChatMessage {
                id: MessageId(id),
                user: "ana".into(),
                name: Some("Ana".into()),
                role: Role::Viewer,
                text: format!("line {id}"),
                reply_to: None,
                at: 0,
            },
        }
    }

    #[test]
    fn room_time_maps_to_media_time_by_the_latest_lag() {
        let mut t = Timeline::default();
        assert_eq!(t.media_at(10_000), None, "no stream, no video clock");
        let before = serde_json::to_vec(&TimelineView::from(&t)).unwrap();
        assert_eq!(cache_control(&before), "no-cache", "before the show it changes with every event");
        t.record(10_000, &Audience::All, &started(40));
        assert_eq!(t.media_at(10_000), Some(9_960));
        let health = StreamHealth {
            bitrate_kbps: 1,
            fps: 30,
            keyframe_interval_ms: None,
            warnings: vec![],
            capture_lag_ms: -25,
        };
        t.record(15_000, &Audience::All, &Event::StreamHealth(health));
        assert_eq!(t.media_at(20_000), Some(20_025), "a publisher clock ahead of the origin's");
        assert!(t.live);
        t.record(30_000, &Audience::All, &Event::StreamEnded { duration_ms: 20_000 });
        assert!(!t.live);
        let ended = serde_json::to_vec(&TimelineView::from(&t)).unwrap();
        assert_eq!(cache_control(&ended), ENDED_CACHE);
        t.record(40_000, &Audience::All, &started(40));
        let live = TimelineView::from(&t);
        assert!(live.moments.is_empty(), "a live show's page needs no replay");
        assert_eq!(cache_control(&serde_json::to_vec(&live).unwrap()), "no-cache");
        let kinds: Vec<&str> = t.moments.iter().map(|m| m.event.name()).collect();
        assert_eq!(kinds, ["stream.started", "stream.ended", "stream.started"], "health is no moment");
        assert_eq!(t.moments[1].media_at, 30_025);
    }

    #[test]
    fn deleted_and_private_messages_are_not_replayed_and_chat_is_bounded() {
        let mut t = Timeline::default();
        t.record(1, &Audience::User("shadow".into()), &chat(1));
        for id in 2..(MAX_CHAT as u64 + 12) {
            t.record(id, &Audience::All, &chat(id));
        }
        assert_eq!(t.chat_kept as usize, MAX_CHAT);
        assert_eq!(t.chat_dropped, 10);
        assert!(t.replays_message(MessageId(2)));
        t.record(5_000, &Audience::All, &Event::ChatDeleted { message_id: MessageId(2) });
        assert_eq!(t.moments.len(), MAX_CHAT - 1);
        assert_eq!(t.chat_kept as usize, MAX_CHAT - 1);
        assert!(!t.replays_message(MessageId(2)));
        // Room time is media time before any stream.
        assert_eq!(t.moments[0].media_at, t.moments[0].at);
    }

    #[test]
    fn marks_are_bounded_apart_from_the_streams_start_and_end() {
        let mut t = Timeline::default();
        t.record(1, &Audience::All, &started(0));
        for at in 2..(MAX_MARKS as u64 + 10) {
            t.record(at, &Audience::All, &Event::BannerSet { text: format!("banner {at}") });
        }
        assert_eq!(t.moments.len(), MAX_MARKS + 1);
        t.record(50_000, &Audience::All, &Event::StreamEnded { duration_ms: 49_999 });
        assert_eq!(t.moments.len(), MAX_MARKS + 2);
        assert_eq!(t.moments.last().map(|m| m.event.name()), Some("stream.ended"));
        // A publisher that keeps reconnecting is bounded too.
        for at in 0..(MAX_STREAM_MARKERS as u64) {
            t.record(60_000 + at, &Audience::All, &Event::StreamEnded { duration_ms: 1 });
        }
        assert_eq!(t.stream_markers as usize, MAX_STREAM_MARKERS);
        assert_eq!(t.moments.len(), MAX_MARKS + MAX_STREAM_MARKERS);
    }

    #[test]
    fn a_timeline_stays_within_its_bytes_whatever_its_lines_hold() {
        let mut t = Timeline::default();
        let long = |id: u64| {
            let Event::ChatMessage { mut message } = chat(id) else { unreachable!("chat() makes a line") };
            message.text = "🛍".repeat(500);
            Event::ChatMessage { message }
        };
        for id in 1..=MAX_CHAT as u64 {
            t.record(id, &Audience::All, &long(id));
        }
        let json = serde_json::to_vec(&t.moments).unwrap();
        assert!(json.len() as u64 <= MAX_BYTES, "{} bytes", json.len());
        assert!(t.chat_dropped > 0 && t.chat_bytes <= MAX_BYTES);
        assert_eq!(t.chat_kept + t.chat_dropped, MAX_CHAT as u32);
        // Chat that filled its bytes leaves the products their own.
        t.record(4_000, &Audience::All, &Event::BannerSet { text: "Two left".into() });
        assert_eq!(t.moments.last().map(|m| m.event.name()), Some("banner.set"));
        let kept = t.chat_bytes;
        t.record(5_000, &Audience::All, &Event::ChatDeleted { message_id: MessageId(1) });
        assert_eq!(t.chat_bytes, kept - size(&long(1)), "a deletion frees its bytes");
    }
}
