//! The LL-HLS media playlist of one show (draft-pantos-hls-rfc8216bis), as plain state and text.
//! Pure: segments and parts go in, playlist text comes out; the HTTP side decides when to answer.
//!
//! Choices:
//! - Every segment of the show stays in the playlist (media sequence starts at 0 and never
//!   slides): the live playlist *is* the replay. Delta updates (`_HLS_skip=YES`) keep reloads
//!   small however long the show runs.
//! - `EXT-X-PART` lines are listed for the segments of the last three target durations, as the
//!   spec recommends, and for the segment being built.
//! - Every segment carries its own `EXT-X-PROGRAM-DATE-TIME` (the capture time of its first
//!   frame), so a player never has to extrapolate across a discontinuity.
//! - A new publish after an end removes `EXT-X-ENDLIST` and continues after an
//!   `EXT-X-DISCONTINUITY`; players that saw the end reload when the room says `stream.started`.
//! - `PART-TARGET` is the packager's part limit ([`part_limit_ms`]: the configured part target
//!   plus 10%), the bound it keeps every part within; `PART-HOLD-BACK` is three times that, as
//!   the spec recommends. Twice (the least it allows) saves about 110 ms at the start, but a
//!   10-minute hls.js run then stalled twice and drifted 1.9 s behind (`tests/media_player.rs`
//!   with `LIVESHOP_PLAY_SECONDS=600`).

use std::fmt::Write;
use std::time::SystemTime;

use crate::packager::part_limit_ms;

/// One variant of a show: the video with one audio track. Each has its own media playlist and
/// files, named with its prefix; their parts and segments line up (one packager cuts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rendition {
    /// The video with the publisher's own audio (Opus), or alone when it sends none:
    /// `live.m3u8`, `init-0.mp4`, `part-1.0.m4s`, ...
    AsSent,
    /// The video with AAC-LC made from the publisher's Opus: `aac-live.m3u8`, `aac-init-0.mp4`, ...
    Aac,
}

impl Rendition {
    pub fn prefix(self) -> &'static str {
        match self {
            Rendition::AsSent => "",
            Rendition::Aac => "aac-",
        }
    }

    /// The name of this rendition's copy of `file` (a name from [`init_name`] and its kin).
    pub fn file(self, file: &str) -> String {
        format!("{}{file}", self.prefix())
    }

    /// The rendition a file name belongs to, and the name without its prefix.
    pub fn of_file(name: &str) -> (Rendition, &str) {
        match name.strip_prefix(Rendition::Aac.prefix()) {
            Some(rest) => (Rendition::Aac, rest),
            None => (Rendition::AsSent, name),
        }
    }
}

/// The naming of the files a playlist points at, in one place.
pub fn init_name(init: u32) -> String {
    format!("init-{init}.mp4")
}
pub fn segment_name(msn: u64) -> String {
    format!("seg-{msn}.m4s")
}
pub fn part_name(msn: u64, part: u32) -> String {
    format!("part-{msn}.{part}.m4s")
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaylistConfig {
    /// The configured part target, seconds (`PackagerConfig::part_target`); the playlist
    /// advertises the packager's limit for it.
    pub part_target: f64,
    /// EXT-X-TARGETDURATION, seconds.
    pub target_duration: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartInfo {
    pub duration: f64,
    pub independent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub msn: u64,
    pub duration: f64,
    pub parts: Vec<PartInfo>,
    pub pdt: SystemTime,
    pub discontinuity: bool,
    pub init: u32,
    pub complete: bool,
}

/// What a blocking request asks for, checked against the playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Wait,
    /// Further ahead than a client may ask (400).
    TooFar,
}

#[derive(Debug, Clone)]
pub struct Playlist {
    config: PlaylistConfig,
    rendition: Rendition,
    segments: Vec<Segment>,
    /// The media sequence number of the first segment: [`FIRST_MSN`], unless the playlist
    /// joined its show late ([`Playlist::start_at`]).
    first_msn: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE: discontinuities before the first segment.
    discontinuity_sequence: u64,
    /// Some segment starts without a keyframe (kept as segments open: every multivariant
    /// request asks).
    dependent_segment: bool,
    init: u32,
    discontinuity_next: bool,
    ended: bool,
}

/// How far past the last part a blocking request may reach (the spec's Advance Part Limit).
const ADVANCE_PART_LIMIT: u64 = 3;

/// The first segment's media sequence number. Not 0: hls.js 1.7 reads a part of segment 0 as
/// "no part" (`sn || -1`), forgets it once appended and reloads segment 0's parts in a loop, so a
/// player that joins while segment 0 is the newest complete one stalls.
pub const FIRST_MSN: u64 = 1;

impl Playlist {
    pub fn new(config: PlaylistConfig, rendition: Rendition) -> Playlist {
        Playlist {
            config,
            rendition,
            segments: Vec::new(),
            first_msn: FIRST_MSN,
            discontinuity_sequence: 0,
            dependent_segment: false,
            init: 0,
            discontinuity_next: false,
            ended: false,
        }
    }

    /// Starts over, empty, with segment `msn` next and `discontinuities` before it: for a
    /// rendition that joins (or rejoins) a show whose other renditions are there already, so its
    /// segments keep their numbers.
    pub fn start_at(&mut self, msn: u64, discontinuities: u64) {
        self.segments.clear();
        (self.first_msn, self.discontinuity_sequence, self.dependent_segment) = (msn, discontinuities, false);
        (self.discontinuity_next, self.ended) = (false, false);
    }

    /// The discontinuity sequence number the next segment will have.
    pub fn next_discontinuity(&self) -> u64 {
        let before =
            self.discontinuity_sequence + self.segments.iter().filter(|s| s.discontinuity).count() as u64;
        before + u64::from(self.discontinuity_next)
    }

    /// Every segment so far starts with a keyframe (a publisher that ignores keyframe requests
    /// and sends them further apart than the target duration gets segments that do not).
    pub fn independent(&self) -> bool {
        !self.dependent_segment
    }

    pub fn config(&self) -> PlaylistConfig {
        self.config
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    fn segment(&self, msn: u64) -> Option<&Segment> {
        self.segments.get(usize::try_from(msn.checked_sub(self.first_msn)?).ok()?)
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// A new publish (or new codec parameters): later segments use init `init`, after a
    /// discontinuity if anything came before.
    pub fn begin_period(&mut self, init: u32) {
        self.end_segment();
        self.init = init;
        self.discontinuity_next = !self.segments.is_empty();
        self.ended = false;
    }

    /// Appends a part; returns its `(msn, part index)`. `segment_start` opens a new segment.
    pub fn push_part(&mut self, part: PartInfo, segment_start: Option<SystemTime>) -> (u64, u32) {
        let open = self.segments.last().is_some_and(|s| !s.complete);
        if !open || segment_start.is_some() {
            self.end_segment();
            let msn = self.first_msn + self.segments.len() as u64;
            self.segments.push(Segment {
                msn,
                duration: 0.0,
                parts: Vec::new(),
                pdt: segment_start.unwrap_or(SystemTime::UNIX_EPOCH),
                discontinuity: std::mem::take(&mut self.discontinuity_next),
                init: self.init,
                complete: false,
            });
            self.dependent_segment |= !part.independent;
        }
        let seg = self.segments.last_mut().expect("pushed above");
        seg.duration += part.duration;
        seg.parts.push(part);
        (seg.msn, seg.parts.len() as u32 - 1)
    }

    pub fn end_segment(&mut self) {
        if let Some(s) = self.segments.last_mut() {
            s.complete = true;
        }
    }

    pub fn end(&mut self) {
        self.end_segment();
        self.ended = true;
    }

    /// The part a client should ask for next (the preload hint).
    pub fn next_part(&self) -> (u64, u32) {
        match self.segments.last() {
            None => (self.first_msn, 0),
            Some(s) if s.complete => (s.msn + 1, 0),
            Some(s) => (s.msn, s.parts.len() as u32),
        }
    }

    /// Whether the playlist holds segment `msn` (complete) or, with `part`, that part of it.
    pub fn readiness(&self, msn: u64, part: Option<u32>) -> Readiness {
        let (next_msn, next_part) = self.next_part();
        let ready = match self.segment(msn) {
            Some(s) => match part {
                Some(p) => s.complete || (p as usize) < s.parts.len(),
                None => s.complete,
            },
            // Before the first segment: already there.
            None => msn < self.first_msn,
        };
        if ready || self.ended {
            return Readiness::Ready;
        }
        let last_msn = next_msn.saturating_sub(u64::from(next_part == 0));
        let too_far = msn > last_msn + 2
            || (msn == next_msn && u64::from(part.unwrap_or(0)) > u64::from(next_part) + ADVANCE_PART_LIMIT);
        if too_far { Readiness::TooFar } else { Readiness::Wait }
    }

    /// Whether part `part` of segment `msn` exists, or is the next one (a preload hint target).
    pub fn part_state(&self, msn: u64, part: u32) -> Readiness {
        if self.segment(msn).is_some_and(|s| (part as usize) < s.parts.len()) {
            Readiness::Ready
        } else if !self.ended && self.next_part() == (msn, part) {
            Readiness::Wait
        } else {
            Readiness::TooFar
        }
    }

    /// The playlist text. `skip`: a delta update (`_HLS_skip=YES`). `vod`: no parts or hints,
    /// for the copy on disk.
    pub fn render(&self, skip: bool, vod: bool) -> String {
        let c = self.config;
        let td = f64::from(c.target_duration);
        let skip_until = 6.0 * td;
        let part_target = part_limit_ms(c.part_target) as f64 / 1000.0;
        let prefix = self.rendition.prefix();
        let mut out = String::with_capacity(4096);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:9\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", c.target_duration);
        if self.independent() {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        if !vod {
            let _ = writeln!(
                out,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.3}",
                skip_until,
                3.0 * part_target
            );
            let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.first_msn);
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuity_sequence);
        }
        if vod && self.ended {
            out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
        }

        let total: f64 = self.segments.iter().map(|s| s.duration).sum();
        // Delta update: leave out the segments that end before the skip boundary.
        let mut skipped = 0;
        if skip && !vod {
            let mut start = 0.0;
            for s in &self.segments {
                if !s.complete || start + s.duration > total - skip_until {
                    break;
                }
                start += s.duration;
                skipped += 1;
            }
            if skipped > 0 {
                let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
            }
        }
        // Parts for the segments that end within three target durations of the live edge.
        let mut end = total;
        let mut parts_from = self.next_part().0;
        for s in self.segments.iter().rev() {
            if total - end > 3.0 * td {
                break;
            }
            end -= s.duration;
            parts_from = s.msn;
        }

        let mut map = None;
        for s in &self.segments[skipped..] {
            if vod && !s.complete {
                break;
            }
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if map != Some(s.init) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{prefix}{}\"", init_name(s.init));
                map = Some(s.init);
            }
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(s.pdt));
            if !vod && s.msn >= parts_from {
                for (i, p) in s.parts.iter().enumerate() {
                    let _ = write!(
                        out,
                        "#EXT-X-PART:DURATION={:.5},URI=\"{prefix}{}\"",
                        p.duration,
                        part_name(s.msn, i as u32)
                    );
                    out.push_str(if p.independent { ",INDEPENDENT=YES\n" } else { "\n" });
                }
            }
            if s.complete {
                let _ = writeln!(out, "#EXTINF:{:.5},\n{prefix}{}", s.duration, segment_name(s.msn));
            }
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        } else if !vod {
            let (msn, part) = self.next_part();
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{prefix}{}\"", part_name(msn, part));
        }
        out
    }
}

/// `2026-11-26T10:00:00.123Z`: UTC with milliseconds, as EXT-X-PROGRAM-DATE-TIME wants.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> PlaylistConfig {
        PlaylistConfig { part_target: 0.2, target_duration: 4 }
    }

    /// `n` segments of 2 s in 200 ms parts, the last one left open with `open_parts` parts.
    fn playlist(n: u64, open_parts: u32) -> Playlist {
        let mut p = Playlist::new(config(), Rendition::AsSent);
        p.begin_period(0);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for s in 0..=n {
            let parts = if s == n { open_parts } else { 10 };
            for i in 0..parts {
                let start = (i == 0).then(|| t0 + Duration::from_secs(2 * s));
                p.push_part(PartInfo { duration: 0.2, independent: i == 0 }, start);
            }
            if s < n {
                p.end_segment();
            }
        }
        p
    }

    #[test]
    fn live_playlist_has_the_low_latency_tags() {
        let text = playlist(3, 2).render(false, false);
        assert!(text.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=24.0,PART-HOLD-BACK=0.660\n"
        ));
        // 200 ms configured: parts are up to 220 ms, and that is what the playlist says.
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.220\n"));
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n"));
        assert!(text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part-4.1.m4s\"\n"));
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-4.2.m4s\"\n"));
        assert_eq!(text.matches("#EXTINF:2.00000,").count(), 3);
        assert!(!text.contains("ENDLIST"));
        // Numbered from 1, not 0 (see FIRST_MSN).
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-MAP:URI=\"init-0.mp4\"\n"), "{text}");
        assert!(text.contains("\nseg-1.m4s\n") && !text.contains("seg-0"), "{text}");
    }

    #[test]
    fn parts_are_listed_only_near_the_live_edge() {
        // 20.2 s of media: segments ending within 12 s of the end (from segment 5 on) keep parts.
        let text = playlist(10, 1).render(false, false);
        assert!(!text.contains("part-4.0.m4s"), "{text}");
        assert!(text.contains("part-5.0.m4s"));
        assert!(text.contains("part-11.0.m4s"));
    }

    #[test]
    fn delta_update_skips_what_is_older_than_the_skip_boundary() {
        let p = playlist(20, 3);
        let text = p.render(true, false);
        // 40.6 s of media, boundary at 16.6 s: segments ending by then (1..=8) are skipped.
        assert!(text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=8\n"), "{text}");
        assert!(!text.contains("seg-8.m4s"));
        assert!(text.contains("seg-9.m4s"));
        assert!(text.contains("#EXT-X-MAP:URI=\"init-0.mp4\""));
        // A short playlist has nothing to skip.
        assert!(!playlist(2, 1).render(true, false).contains("EXT-X-SKIP"));
    }

    #[test]
    fn blocking_requests_wait_for_their_part_and_refuse_the_far_future() {
        let p = playlist(3, 2);
        assert_eq!(p.readiness(4, Some(1)), Readiness::Ready);
        assert_eq!(p.readiness(3, None), Readiness::Ready);
        assert_eq!(p.readiness(4, Some(2)), Readiness::Wait);
        assert_eq!(p.readiness(4, None), Readiness::Wait);
        assert_eq!(p.readiness(5, Some(0)), Readiness::Wait);
        assert_eq!(p.readiness(6, None), Readiness::Wait);
        assert_eq!(p.readiness(7, None), Readiness::TooFar);
        assert_eq!(p.readiness(4, Some(9)), Readiness::TooFar);
        assert_eq!(p.part_state(4, 2), Readiness::Wait);
        assert_eq!(p.part_state(4, 3), Readiness::TooFar);
        assert_eq!(p.part_state(4, 0), Readiness::Ready);
        // Before the first segment there is nothing to wait for.
        assert_eq!(p.readiness(0, None), Readiness::Ready);
        assert_eq!(p.part_state(0, 0), Readiness::TooFar);
    }

    #[test]
    fn a_republish_continues_after_a_discontinuity_with_its_own_init() {
        let mut p = playlist(2, 4);
        p.end();
        assert!(p.render(false, false).ends_with("#EXT-X-ENDLIST\n"));
        p.begin_period(1);
        p.push_part(PartInfo { duration: 0.2, independent: true }, Some(SystemTime::UNIX_EPOCH));
        let text = p.render(false, false);
        assert!(!text.contains("ENDLIST"));
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n"), "{text}");
    }

    #[test]
    fn the_vod_copy_has_whole_segments_only() {
        let mut p = playlist(3, 4);
        p.end();
        let text = p.render(false, true);
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(!text.contains("EXT-X-PART"));
        assert!(!text.contains("PRELOAD-HINT"));
        assert_eq!(text.matches("#EXTINF:").count(), 4);
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn dates_are_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(951_825_600_250); // 2000-02-29 12:00
        assert_eq!(iso8601(t), "2000-02-29T12:00:00.250Z");
        assert_eq!(iso8601(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
