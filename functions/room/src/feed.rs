//! The room's public feed: what every viewer may see, as plain HTTP answers a CDN can cache and
//! collapse, shaped like LL-HLS blocking reload.
//!
//! - `GET /feed`: the latest public state and its position (`epoch-seq`).
//! - `GET /feed?after=E-S`: the public events after that position and the latest-state frames
//!   (presence, the open poll's tally). The room answers **204** while nothing is after it; the
//!   host parks the request and asks again after the room's next event. When the wait ends the
//!   host asks with `&wait=K` ([`deadline`]) and the room always answers, with `"wait": K` when
//!   nothing came: the client repeats with that `wait`, a new URL, so a cache never hands it the
//!   same empty answer twice.
//!
//! Every viewer at one position asks the same URL, so behind a cache that collapses requests a
//! whole audience costs one origin request per cache and position. Personal frames (acks, held
//! messages, moderation, a viewer's own vote) never go on the feed: only events logged for
//! [`crate::Audience::All`].
//!
//! The parts both hosts share live here too: positions, query parsing, the aligned end of a wait,
//! cache headers and the ETag, and the counting of feed viewers by heartbeat ([`Audience`]),
//! which hosts do outside the room and hand it as an [`AudienceCount`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, Millis, Seq};
use crate::protocol::{CommandError, ErrorCode};

/// Longest a feed request waits for something new, about: waits end on multiples of this.
pub const WAIT_MS: Millis = 5_000;
/// `Cache-Control` of the snapshot (`GET /feed`).
pub const CACHE_SNAPSHOT: &str = "public, max-age=1";
/// `Cache-Control` of answers after a position. An answer stays true for its position (later
/// events come with the next request), so it may be served a little stale.
pub const CACHE_AFTER: &str = "public, max-age=2";
/// The `Cache-Control` of a request's answer.
pub fn cache_control(query: &FeedQuery) -> &'static str {
    if query.after.is_some() { CACHE_AFTER } else { CACHE_SNAPSHOT }
}

/// A place in a room's log: the epoch of its storage and the last event's seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub epoch: Epoch,
    pub seq: Seq,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch.0, self.seq.0)
    }
}

impl FromStr for Position {
    type Err = CommandError;

    fn from_str(s: &str) -> Result<Position, CommandError> {
        let bad = || CommandError::new(ErrorCode::InvalidArgument, "after is <epoch>-<seq>, such as 7-42");
        let (epoch, seq) = s.split_once('-').ok_or_else(bad)?;
        let number = |n: &str| n.parse::<u64>().ok().filter(|_| !n.starts_with('+')).ok_or_else(bad);
        Ok(Position { epoch: Epoch(number(epoch)?), seq: Seq(number(seq)?) })
    }
}

/// A feed request's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedQuery {
    /// Absent: the snapshot.
    pub after: Option<Position>,
    /// The wait round the client repeats with after an empty answer (only a cache key to the
    /// host), or, from a host to the room, the round whose wait just ended.
    pub wait: Option<u64>,
}

/// Reads `after=E-S&wait=K` (either may be absent). Unknown parameters are refused, so a
/// cache-busting parameter cannot multiply a CDN's cache keys unnoticed.
pub fn parse_query(query: &str) -> Result<FeedQuery, CommandError> {
    let mut q = FeedQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "after" if q.after.is_none() => q.after = Some(value.parse()?),
            "wait" if q.wait.is_none() => {
                let wait = value.parse().map_err(|_| {
                    CommandError::new(ErrorCode::InvalidArgument, "wait is the number an empty answer gave")
                })?;
                q.wait = Some(wait);
            }
            _ => {
                let key: String = key.chars().take(20).collect();
                return Err(CommandError::new(
                    ErrorCode::InvalidArgument,
                    format!("the feed takes after and wait, once each, not {key:?}"),
                ));
            }
        }
    }
    Ok(q)
}

/// When a wait begun at `now` ends, and the number of that round. Waits end on multiples of
/// [`WAIT_MS`], at least half of it away, so every request for one position that times out, on
/// any host or cache, ends in the same round and the client's repeat is one URL for everyone.
pub fn deadline(now: Millis) -> (Millis, u64) {
    let round = (now + WAIT_MS / 2) / WAIT_MS + 1;
    (round * WAIT_MS, round)
}

/// Answers after a position come at most this often per room. While events flow, a viewer then
/// asks about five times a second, each answer carrying what the room logged meanwhile, rather
/// than once per room commit: a fifth of the requests or fewer at every cache and at the node,
/// for at most this much more latency (the video is seconds behind anyway).
pub const ANSWER_INTERVAL_MS: Millis = 200;

/// How long a host holds a request after a position before asking the room, when the room's
/// last answer with events was made at `last`: nothing once [`ANSWER_INTERVAL_MS`] has passed.
pub fn hold(last: Option<Millis>, now: Millis) -> Millis {
    last.map_or(0, |last| (last + ANSWER_INTERVAL_MS).saturating_sub(now))
}

/// A strong ETag of an answer's body (FNV-1a, 64 bits): equal bodies, equal tags, on any host.
pub fn etag(body: &[u8]) -> String {
    let hash = body
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("\"{hash:016x}\"")
}

/// Whether an `If-None-Match` header names this ETag (or `*`).
pub fn not_modified(if_none_match: &str, etag: &str) -> bool {
    if_none_match.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// The body of an answer after a position: events are frames already serialized by the room.
pub(crate) struct Page<'a> {
    pub now: Millis,
    pub at: Position,
    pub events: &'a [String],
    pub latest: &'a [String],
    pub wait: Option<u64>,
}

impl Page<'_> {
    pub(crate) fn to_json(&self) -> String {
        let mut body = format!(
            r#"{{"v":{},"epoch":{},"seq":{},"now":{},"next":"{}","events":[{}],"latest":[{}]"#,
            crate::protocol::PROTOCOL_VERSION,
            self.at.epoch.0,
            self.at.seq.0,
            self.now,
            self.at,
            self.events.join(","),
            self.latest.join(","),
        );
        if let Some(wait) = self.wait {
            body.push_str(&format!(r#","wait":{wait}"#));
        }
        body.push('}');
        body
    }
}

/// A device not heard from for this long no longer counts as watching (beacons come every 20 s).
pub const HEARTBEAT_TTL_MS: Millis = 60_000;
/// How often a host tells each room its feed audience.
pub const HAND_OFF_MS: Millis = 5_000;

/// A heartbeat's body: empty, or `{"leaving": true}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Beat {
    #[serde(default)]
    leaving: bool,
}

/// Reads a heartbeat's body (any content type: `navigator.sendBeacon` sends text): whether the
/// device is leaving.
pub fn parse_heartbeat(body: &[u8]) -> Result<bool, CommandError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    serde_json::from_slice::<Beat>(body).map(|b| b.leaving).map_err(|e| {
        CommandError::new(
            ErrorCode::InvalidArgument,
            format!("a heartbeat is empty or {{\"leaving\": true}}: {e}"),
        )
    })
}

/// What a host tells the room (`PUT /audience`): how many viewers its feed has now, the watch
/// time they added since the last count, and the visits that began and ended meanwhile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceCount {
    pub viewers: u32,
    #[serde(default)]
    pub watch_ms: u64,
    /// Visits begun.
    #[serde(default)]
    pub joins: u32,
    /// The devices that came, hashed ([`crate::analytics::visitor_hash`]); at most
    /// [`MAX_ARRIVED`] per count (past that, joins are counted but not told apart).
    #[serde(default)]
    pub arrived: Vec<u64>,
    /// Visits ended, by length ([`crate::analytics::WATCH_BOUNDS_SECS`]).
    #[serde(default)]
    pub ended: Vec<u32>,
}

/// Arrivals told apart per count.
pub const MAX_ARRIVED: usize = 2_000;

/// A room that counts no more feed viewers (`max_feed_viewers_per_room`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this room counts no more viewers")]
pub struct RoomFull;

/// A device's visit: when it began and its last beacon.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Visit {
    since: Millis,
    last: Millis,
}

/// The devices watching one room's feed, as a host counts them from heartbeats, outside the
/// room: a million heartbeats become one [`AudienceCount`] every [`HAND_OFF_MS`]. Serializable,
/// for a host whose instances share no memory (Spin), which stores it between beacons.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Audience {
    devices: HashMap<String, Visit>,
    /// What to tell the room at the next count, besides the viewers.
    pending: AudienceCount,
    /// The count last taken; `None` before the first (a new counter tells the room once).
    handed: Option<u32>,
}

impl Audience {
    /// Counts a beacon from `device`; `leaving` takes it off at once. A new device past `max`
    /// devices is refused.
    pub fn beat(&mut self, device: String, leaving: bool, now: Millis, max: usize) -> Result<(), RoomFull> {
        let visit = if leaving { self.devices.remove(&device) } else { self.devices.get(&device).copied() };
        match visit {
            // Time between beacons counts, up to the time a device counts without one.
            Some(v) => self.pending.watch_ms += now.saturating_sub(v.last).min(HEARTBEAT_TTL_MS),
            None if !leaving && self.devices.len() >= max => return Err(RoomFull),
            None if !leaving => {
                self.pending.joins += 1;
                if self.pending.arrived.len() < MAX_ARRIVED {
                    self.pending.arrived.push(crate::analytics::visitor_hash(&device));
                }
            }
            None => {}
        }
        match visit {
            Some(v) if leaving => self.ended(now.saturating_sub(v.since)),
            Some(v) => {
                self.devices.insert(device, Visit { last: now, ..v });
            }
            None if !leaving => {
                self.devices.insert(device, Visit { since: now, last: now });
            }
            None => {}
        }
        Ok(())
    }

    fn ended(&mut self, ms: Millis) {
        crate::analytics::count_visit(&mut self.pending.ended, ms);
    }

    /// What to tell the room now: the count while anyone watches (a room forgets it when it
    /// hibernates or restarts, so it is told every round), once more when the last one left,
    /// and nothing after. Devices gone quiet are forgotten: their visits end at their last
    /// beacon.
    pub fn take(&mut self, now: Millis) -> Option<AudienceCount> {
        let quiet: Vec<Millis> = self
            .devices
            .values()
            .filter(|v| now.saturating_sub(v.last) >= HEARTBEAT_TTL_MS)
            .map(|v| v.last.saturating_sub(v.since))
            .collect();
        self.devices.retain(|_, v| now.saturating_sub(v.last) < HEARTBEAT_TTL_MS);
        for ms in quiet {
            self.ended(ms);
        }
        let viewers = u32::try_from(self.devices.len()).unwrap_or(u32::MAX);
        let count = AudienceCount { viewers, ..std::mem::take(&mut self.pending) };
        if count == (AudienceCount { viewers: 0, ..AudienceCount::default() }) && self.handed == Some(0) {
            return None;
        }
        self.handed = Some(viewers);
        Some(count)
    }

    /// The viewers the room was last told of.
    pub fn handed(&self) -> u32 {
        self.handed.unwrap_or(0)
    }

    /// Whether any device counts (as of the last [`Audience::take`]).
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_after_a_position_are_held_to_the_interval() {
        assert_eq!(hold(None, 1_000), 0, "the first answer is not held");
        assert_eq!(hold(Some(1_000), 1_000), ANSWER_INTERVAL_MS);
        assert_eq!(hold(Some(1_000), 1_150), ANSWER_INTERVAL_MS - 150);
        assert_eq!(hold(Some(1_000), 1_000 + ANSWER_INTERVAL_MS), 0);
        assert_eq!(hold(Some(1_000), 9_000), 0);
    }

    #[test]
    fn positions_and_queries_parse_strictly() {
        let q = parse_query("after=7-42&wait=3").unwrap();
        assert_eq!(q.after, Some(Position { epoch: Epoch(7), seq: Seq(42) }));
        assert_eq!(q.wait, Some(3));
        assert_eq!(parse_query("").unwrap(), FeedQuery::default());
        for bad in
            ["after=7", "after=-1-2", "after=7-+2", "after=a-b", "wait=x", "after=1-1&after=1-2", "t=1"]
        {
            assert_eq!(parse_query(bad).unwrap_err().code, ErrorCode::InvalidArgument, "{bad}");
        }
        assert_eq!(Position { epoch: Epoch(7), seq: Seq(42) }.to_string(), "7-42");
    }

    #[test]
    fn waits_end_on_shared_boundaries_at_least_half_a_wait_away() {
        assert_eq!(deadline(0), (5_000, 1));
        assert_eq!(deadline(2_499), (5_000, 1));
        assert_eq!(deadline(2_500), (10_000, 2));
        assert_eq!(deadline(9_999), (15_000, 3));
        for now in [0, 1_234, 2_500, 7_499, 123_456_789] {
            let (end, round) = deadline(now);
            assert!(end - now >= WAIT_MS / 2 && end - now <= WAIT_MS * 3 / 2);
            assert_eq!(end, round * WAIT_MS);
        }
    }

    #[test]
    fn etags_follow_the_body_and_if_none_match_reads_lists() {
        let a = etag(b"{\"seq\":1}");
        assert_eq!(a, etag(b"{\"seq\":1}"));
        assert_ne!(a, etag(b"{\"seq\":2}"));
        assert!(not_modified(&format!("\"x\", {a}"), &a));
        assert!(not_modified(&format!("W/{a}"), &a));
        assert!(!not_modified("\"x\"", &a));
    }

    #[test]
    fn heartbeats_become_counts_with_watch_time_and_visits() {
        let count = |viewers, watch_ms| AudienceCount { viewers, watch_ms, ..AudienceCount::default() };
        let mut a = Audience::default();
        a.beat("phone".into(), false, 0, 2).unwrap();
        a.beat("laptop".into(), false, 0, 2).unwrap();
        assert_eq!(a.beat("tv".into(), false, 0, 2), Err(RoomFull));
        // A device already counted is never refused.
        a.beat("phone".into(), false, 20_000, 2).unwrap();
        let first = a.take(20_000).unwrap();
        assert_eq!((first.viewers, first.watch_ms, first.joins), (2, 20_000, 2));
        let hashes = ["phone", "laptop"].map(crate::analytics::visitor_hash);
        assert_eq!(first.arrived, hashes);
        assert!(first.ended.is_empty());
        // Told every round while anyone watches.
        assert_eq!(a.take(25_000), Some(count(2, 0)));
        a.beat("laptop".into(), true, 30_000, 2).unwrap();
        // The laptop's 30 s count; the phone goes quiet and is forgotten a minute after its
        // last beacon, its visit ending there (20 s long).
        let gone = a.take(80_000).unwrap();
        assert_eq!((gone.viewers, gone.watch_ms, gone.joins), (0, 30_000, 0));
        let mut ended = vec![0; crate::analytics::WATCH_BUCKETS];
        ended[crate::analytics::watch_bucket(20_000)] = 1;
        ended[crate::analytics::watch_bucket(30_000)] += 1;
        assert_eq!(gone.ended, ended);
        assert!(a.is_empty());
        assert_eq!(a.take(85_000), None);
        // A beacon after a long silence adds at most the time a device counts without one.
        a.beat("phone".into(), false, 90_000, 2).unwrap();
        a.beat("phone".into(), false, 900_000, 2).unwrap();
        let back = a.take(900_000).unwrap();
        assert_eq!((back.viewers, back.watch_ms, back.joins), (1, HEARTBEAT_TTL_MS, 1));
        assert_eq!(a.handed(), 1);
    }

    #[test]
    fn heartbeat_bodies_are_empty_or_say_leaving() {
        assert_eq!(parse_heartbeat(b""), Ok(false));
        assert_eq!(parse_heartbeat(b" \n"), Ok(false));
        assert_eq!(parse_heartbeat(br#"{"leaving": true}"#), Ok(true));
        assert_eq!(parse_heartbeat(b"{}"), Ok(false));
        for bad in [&br#"{"viewers": 9}"#[..], b"leaving", br#"{"leaving": "yes"}"#] {
            assert_eq!(parse_heartbeat(bad).unwrap_err().code, ErrorCode::InvalidArgument);
        }
    }
}
