//! Frames in, CMAF parts out. Pure: no clock, no IO; [`Packager::push`] takes one frame and
//! returns what became ready.
//!
//! Rules:
//! - Nothing is emitted before the first video keyframe (a decoder could not start there).
//! - A video frame's duration is known when the next one arrives, so each frame is held back
//!   until then (one frame of delay, the least any packager can have without guessing).
//! - Parts are cut against the [`part_limit_ms`]: the configured part target plus 10%, which is
//!   the `PART-TARGET` the playlist advertises. A part closes before a frame that would take it
//!   past the limit, so no part is longer; and since at 15 to 60 fps the configured target is a
//!   whole number of frames (or nearly: 5 frames at 24 fps are 208 ms), the 10% is room for that
//!   and for timestamp jitter, and every part but a segment's last is at least 85% of the limit
//!   (the LL-HLS rule). A single frame longer than the limit (an encoder stalled for that long)
//!   still makes a part of its own: no cut can shorten one frame.
//! - A segment closes at the first keyframe after `segment_target`, so segments start on
//!   keyframes. An encoder whose keyframes are further apart than `target_duration` gets a cut
//!   there anyway (that segment is not independent), because a segment may not outlast the
//!   playlist's target duration.
//! - A segment that runs past `segment_target` without a keyframe asks for one
//!   ([`Packager::take_keyframe_request`], a PLI to the publisher), at most once a second of
//!   media. Browsers' encoders send keyframes only at the start and when asked; OBS ignores the
//!   request, so the cut above stays the fallback.
//! - Audio rides in the same fragments: a part carries the audio frames that start before its
//!   video ends. Each `traf` has its own decode time, so late audio costs nothing but a part.
//! - One packager serves every rendition (video with the publisher's Opus, video with AAC): a
//!   part is cut once and written once per rendition ([`Part::fragments`]), so the renditions'
//!   parts and segments line up exactly, as players switching between them need. AAC comes
//!   from its transcoder tens of milliseconds after the Opus it was made of; what misses a part
//!   rides in the next, and never holds the video back.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::fmp4::{Sample, TrackRun, fragment};
use crate::media::{AAC_FRAME_SAMPLES, AudioCodec, Frame, TrackKind, opus_packet_ticks};

/// Track ids in the init segment.
pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;

/// How often a segment without a keyframe asks again (ticks of media), should a request or its
/// answer be lost.
const KEYFRAME_REQUEST_INTERVAL: u64 = 90_000;

/// The longest a part may be, in milliseconds, for a configured part target in seconds: the
/// target plus 10%. The playlist advertises it as `PART-TARGET`. (Seconds in, as the playlist
/// configuration has them, so the packager and the playlist compute the same number.)
pub fn part_limit_ms(part_target: f64) -> u64 {
    (part_target * 1000.0).round() as u64 * 11 / 10
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackagerConfig {
    /// About how long parts are; none is longer than [`part_limit_ms`] of it.
    pub part_target: Duration,
    pub segment_target: Duration,
    /// EXT-X-TARGETDURATION in seconds: no segment is longer.
    pub target_duration: u32,
}

impl Default for PackagerConfig {
    fn default() -> Self {
        PackagerConfig {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(2),
            target_duration: 4,
        }
    }
}

/// One finished part.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// `moof` + `mdat`, one per rendition in the order [`Packager::new`] was given them.
    pub fragments: Vec<Vec<u8>>,
    /// Seconds.
    pub duration: f64,
    /// It starts with a keyframe.
    pub independent: bool,
    /// Set on the first part of a segment: the capture time of its first frame.
    pub segment_start: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Packaged {
    Part(Part),
    /// The last part emitted ended its segment.
    SegmentEnd,
}

pub struct Packager {
    config: PackagerConfig,
    started: bool,
    /// The newest video frame, waiting for its successor to know its duration.
    pending: Option<Frame>,
    last_duration: u32,
    /// Per rendition: its audio codec (none: video alone) and the frames waiting for a part.
    audio: Vec<(Option<AudioCodec>, VecDeque<Frame>)>,
    /// Decode time of the first video frame; earlier audio is dropped.
    origin_dts: u64,
    part: Vec<Sample>,
    part_dts: u64,
    part_ticks: u64,
    part_segment_start: Option<SystemTime>,
    /// Ticks in the open segment; `None` between segments.
    segment_ticks: Option<u64>,
    /// From [`part_limit_ms`].
    part_limit: u64,
    /// Segment ticks from which a frame that is not a keyframe asks for one.
    keyframe_request_from: u64,
    keyframe_wanted: bool,
    sequence: u32,
}

impl Packager {
    /// `renditions`: the audio track of each rendition's init segment, if it has one.
    pub fn new(config: PackagerConfig, renditions: &[Option<AudioCodec>]) -> Packager {
        Packager {
            config,
            started: false,
            pending: None,
            last_duration: 3000,
            audio: renditions.iter().map(|&codec| (codec, VecDeque::new())).collect(),
            origin_dts: 0,
            part: Vec::new(),
            part_dts: 0,
            part_ticks: 0,
            part_segment_start: None,
            segment_ticks: None,
            part_limit: part_limit_ms(config.part_target.as_secs_f64()) * 90,
            keyframe_request_from: 0,
            keyframe_wanted: false,
            sequence: 0,
        }
    }

    /// Whether to ask the publisher for a keyframe now (true once per request). Nothing depends
    /// on the answer: a publisher that ignores it gets its segments cut at `target_duration`.
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_wanted)
    }

    pub fn push(&mut self, frame: Frame) -> Vec<Packaged> {
        let mut out = Vec::new();
        match frame.kind {
            TrackKind::Audio(codec) => {
                let origin = self.origin_dts * 48_000 / 90_000;
                let queue = self.audio.iter_mut().find(|(c, _)| *c == Some(codec));
                if let Some((_, queue)) = queue.filter(|_| self.started && frame.dts >= origin) {
                    queue.push_back(frame);
                }
            }
            TrackKind::Video => {
                if !self.started {
                    if !frame.keyframe {
                        return out;
                    }
                    self.started = true;
                    self.origin_dts = frame.dts;
                }
                if let Some(prev) = self.pending.take() {
                    // Out-of-order or repeated timestamps keep the last known duration, so the
                    // timeline never runs backwards.
                    let gap = frame.dts.saturating_sub(prev.dts);
                    let duration =
                        if gap == 0 || gap > 10 * 90_000 { self.last_duration } else { gap as u32 };
                    self.last_duration = duration;
                    self.commit(prev, duration, &mut out);
                }
                self.pending = Some(frame);
            }
        }
        out
    }

    /// Flushes everything held back: the end of a publish.
    pub fn finish(&mut self) -> Vec<Packaged> {
        let mut out = Vec::new();
        if let Some(prev) = self.pending.take() {
            self.commit(prev, self.last_duration, &mut out);
        }
        self.close_part(&mut out);
        if self.segment_ticks.take().is_some() {
            out.push(Packaged::SegmentEnd);
        }
        out
    }

    fn ticks(d: Duration) -> u64 {
        (d.as_secs_f64() * 90_000.0).round() as u64
    }

    fn commit(&mut self, frame: Frame, duration: u32, out: &mut Vec<Packaged>) {
        let d = u64::from(duration);
        if let Some(seg) = self.segment_ticks {
            let max = u64::from(self.config.target_duration) * 90_000;
            if (frame.keyframe && seg >= Self::ticks(self.config.segment_target)) || seg + d > max {
                self.close_part(out);
                out.push(Packaged::SegmentEnd);
                self.segment_ticks = None;
            } else if !self.part.is_empty() && self.part_ticks + d > self.part_limit {
                self.close_part(out);
            }
        }
        let seg = *self.segment_ticks.get_or_insert_with(|| {
            self.part_segment_start = Some(frame.capture);
            self.keyframe_request_from = Self::ticks(self.config.segment_target);
            0
        });
        if !frame.keyframe && seg >= self.keyframe_request_from {
            self.keyframe_wanted = true;
            self.keyframe_request_from = seg + KEYFRAME_REQUEST_INTERVAL;
        }
        if self.part.is_empty() {
            self.part_dts = frame.dts;
        }
        self.part.push(Sample { duration, keyframe: frame.keyframe, data: frame.data });
        self.part_ticks += d;
        self.segment_ticks = Some(seg + d);
    }

    fn close_part(&mut self, out: &mut Vec<Packaged>) {
        if self.part.is_empty() {
            return;
        }
        let video_end = (self.part_dts + self.part_ticks) * 48_000 / 90_000;
        self.sequence += 1;
        let video = TrackRun { track_id: VIDEO_TRACK, decode_time: self.part_dts, samples: &self.part };
        let mut fragments = Vec::with_capacity(self.audio.len());
        for (codec, queue) in &mut self.audio {
            let (audio_dts, audio) = take_audio(queue, video_end, *codec);
            let audio_run = TrackRun { track_id: AUDIO_TRACK, decode_time: audio_dts, samples: &audio };
            fragments.push(fragment(self.sequence, &[video.clone(), audio_run]));
        }
        out.push(Packaged::Part(Part {
            fragments,
            duration: self.part_ticks as f64 / 90_000.0,
            independent: self.part[0].keyframe,
            segment_start: self.part_segment_start.take(),
        }));
        self.part.clear();
        self.part_ticks = 0;
    }
}

/// The frames of `queue` that start before `end`, as samples, and the first one's decode time.
fn take_audio(queue: &mut VecDeque<Frame>, end: u64, codec: Option<AudioCodec>) -> (u64, Vec<Sample>) {
    let mut audio = Vec::new();
    let mut first = None;
    while let Some(f) = queue.pop_front_if(|f| f.dts < end) {
        first.get_or_insert(f.dts);
        // The gap to the next frame absorbs losses; the last one goes by its own length.
        let next = queue.front().filter(|n| n.dts < end).map(|n| n.dts - f.dts);
        let duration = match (next, codec) {
            (Some(gap), _) if gap > 0 && gap <= 48_000 => gap as u32,
            (_, Some(AudioCodec::Aac)) => AAC_FRAME_SAMPLES,
            _ => opus_packet_ticks(&f.data).unwrap_or(960),
        };
        audio.push(Sample { duration, keyframe: true, data: f.data });
    }
    (first.unwrap_or(0), audio)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(n: u64, keyframe: bool) -> Frame {
        Frame {
            kind: TrackKind::Video,
            dts: 1_000_000 + n * 3000,
            keyframe,
            data: vec![0, 0, 0, 1, if keyframe { 0x65 } else { 0x41 }],
            capture: SystemTime::UNIX_EPOCH + Duration::from_millis(n * 1000 / 30),
        }
    }

    fn audio(n: u64) -> Frame {
        Frame {
            kind: TrackKind::Audio(AudioCodec::Opus),
            dts: 1_000_000 * 48_000 / 90_000 + n * 960,
            keyframe: true,
            data: vec![0xfc, 1, 2],
            capture: SystemTime::UNIX_EPOCH,
        }
    }

    /// 30 fps with a keyframe every second, 20 ms audio, for `secs` seconds.
    fn run(p: &mut Packager, secs: u64) -> Vec<Packaged> {
        let mut out = Vec::new();
        for n in 0..secs * 30 {
            out.extend(p.push(video(n, n.is_multiple_of(30))));
            for a in n * 50 / 30..(n + 1) * 50 / 30 {
                out.extend(p.push(audio(a)));
            }
        }
        out.extend(p.finish());
        out
    }

    fn parts(out: &[Packaged]) -> Vec<&Part> {
        out.iter()
            .filter_map(|p| match p {
                Packaged::Part(p) => Some(p),
                Packaged::SegmentEnd => None,
            })
            .collect()
    }

    #[test]
    fn parts_are_at_the_target_and_segments_start_on_keyframes() {
        let mut p = Packager::new(PackagerConfig::default(), &[Some(AudioCodec::Opus)]);
        let out = run(&mut p, 10);
        let parts = parts(&out);
        assert_eq!(parts.len(), 50, "10 s of 200 ms parts");
        for part in &parts {
            assert!((part.duration - 0.2).abs() < 1e-9, "{}", part.duration);
        }
        // Segments of 2 s: 10 parts each, the first of each independent and carrying a time.
        let mut segment_parts = Vec::new();
        let mut count = 0;
        for item in &out {
            match item {
                Packaged::Part(part) => {
                    assert_eq!(part.segment_start.is_some(), count == 0);
                    if count == 0 {
                        assert!(part.independent);
                    }
                    count += 1;
                }
                Packaged::SegmentEnd => {
                    segment_parts.push(count);
                    count = 0;
                }
            }
        }
        assert_eq!(segment_parts, [10, 10, 10, 10, 10]);
    }

    #[test]
    fn renditions_share_their_parts_and_late_aac_rides_in_the_next_one() {
        let mut p =
            Packager::new(PackagerConfig::default(), &[Some(AudioCodec::Opus), Some(AudioCodec::Aac)]);
        let aac = |k: u64| Frame {
            kind: TrackKind::Audio(AudioCodec::Aac),
            dts: 1_000_000 * 48_000 / 90_000 + k * 1024,
            keyframe: true,
            data: vec![0xaa, 0xac, k as u8],
            capture: SystemTime::UNIX_EPOCH,
        };
        let mut out = Vec::new();
        let mut sent = 0;
        for n in 0..30 * 4 {
            out.extend(p.push(video(n, n.is_multiple_of(30))));
            for a in n * 50 / 30..(n + 1) * 50 / 30 {
                out.extend(p.push(audio(a)));
            }
            // AAC arrives three video frames (100 ms) after its time, as from a transcoder.
            while (sent + 1) * 1024 * 90_000 / 48_000 + 3 * 3000 <= n * 3000 {
                out.extend(p.push(aac(sent)));
                sent += 1;
            }
        }
        out.extend(p.finish());
        let parts = parts(&out);
        assert_eq!(parts.len(), 20);
        let mut aac_frames = 0;
        for part in &parts {
            assert_eq!(part.fragments.len(), 2);
            // The same video in both: the Opus rendition's fragment has no AAC, the AAC one no Opus.
            assert_eq!(part.fragments[0].windows(2).filter(|w| w == &[0xaa, 0xac]).count(), 0);
            assert_eq!(part.fragments[1].windows(3).filter(|w| w == &[0xfc, 1, 2]).count(), 0);
            aac_frames += part.fragments[1].windows(2).filter(|w| w == &[0xaa, 0xac]).count();
        }
        // Every AAC frame sent is in a part, though most came after their part's time.
        assert_eq!(aac_frames as u64, sent);
        assert!(sent > 170, "{sent}");
    }

    #[test]
    fn nothing_comes_out_before_the_first_keyframe() {
        let mut p = Packager::new(PackagerConfig::default(), &[Some(AudioCodec::Opus)]);
        for n in 0..20 {
            assert!(p.push(video(n, false)).is_empty());
            assert!(p.push(audio(n)).is_empty());
        }
        assert!(p.finish().is_empty());
    }

    #[test]
    fn every_audio_frame_lands_in_exactly_one_part() {
        let mut p = Packager::new(PackagerConfig::default(), &[Some(AudioCodec::Opus)]);
        let out = run(&mut p, 4);
        // Count Opus payloads (3 bytes starting 0xfc) across the mdat boxes.
        let total: usize = parts(&out)
            .iter()
            .map(|p| p.fragments[0].windows(3).filter(|w| w == &[0xfc, 1, 2]).count())
            .sum();
        // The last audio frames after the last video frame's end stay queued.
        assert!((195..=200).contains(&total), "{total}");
    }

    #[test]
    fn keyframes_too_far_apart_still_give_segments_within_the_target_duration() {
        let mut p = Packager::new(PackagerConfig::default(), &[None]);
        let mut out = Vec::new();
        for n in 0..300 {
            out.extend(p.push(video(n, n == 0)));
        }
        out.extend(p.finish());
        let mut seg = 0.0;
        for item in &out {
            match item {
                Packaged::Part(part) => seg += part.duration,
                Packaged::SegmentEnd => {
                    assert!(seg <= 4.0 + 1e-9, "{seg}");
                    seg = 0.0;
                }
            }
        }
    }

    /// Splits packager output into segments, each a list of parts.
    fn segments(out: &[Packaged]) -> Vec<Vec<&Part>> {
        let mut segments = vec![Vec::new()];
        for item in out {
            match item {
                Packaged::Part(p) => segments.last_mut().expect("one at least").push(p),
                Packaged::SegmentEnd => segments.push(Vec::new()),
            }
        }
        assert!(segments.pop().is_some_and(|s| s.is_empty()), "the stream ends with a segment end");
        segments
    }

    /// `secs` of video at `fps` with each timestamp off by up to `jitter_ms` either way (as a
    /// browser's capture clock is), a keyframe each second. Deterministic: xorshift from `seed`
    /// (not 0).
    fn jittery(p: &mut Packager, fps: f64, jitter_ms: f64, secs: u64, seed: u32) -> Vec<Packaged> {
        let mut x = seed;
        let mut out = Vec::new();
        let frames = (secs as f64 * fps) as u64;
        for n in 0..frames {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let off = (f64::from(x) / f64::from(u32::MAX) * 2.0 - 1.0) * jitter_ms / 1000.0;
            let dts = 1_000_000 + ((n as f64 / fps + off) * 90_000.0).round() as u64;
            let keyframe = n % fps.round() as u64 == 0;
            let mut frame = video(n, keyframe);
            frame.dts = dts;
            out.extend(p.push(frame));
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn parts_keep_the_ll_hls_bounds_at_common_frame_rates_with_jittery_timestamps() {
        // (part target, jitter): the default with a browser's few milliseconds of capture
        // jitter, and the targets suggested behind a CDN with more.
        for (target_ms, jitter_ms) in [(200, 5.0), (333, 8.0), (500, 8.0)] {
            let config =
                PackagerConfig { part_target: Duration::from_millis(target_ms), ..Default::default() };
            let limit = part_limit_ms(config.part_target.as_secs_f64()) as f64 / 1000.0;
            for fps in [15.0, 20.0, 24.0, 25.0, 30_000.0 / 1001.0, 30.0, 50.0, 60.0] {
                for seed in 1..4 {
                    let mut p = Packager::new(config, &[None]);
                    let out = jittery(&mut p, fps, jitter_ms, 30, seed);
                    let segments = segments(&out);
                    assert!(segments.len() >= 10, "{fps} fps: {} segments", segments.len());
                    for parts in &segments {
                        assert!(parts[0].independent && parts[0].segment_start.is_some());
                        let total: f64 = parts.iter().map(|p| p.duration).sum();
                        assert!(total <= f64::from(config.target_duration) + 1e-9);
                        for (i, part) in parts.iter().enumerate() {
                            let d = part.duration;
                            let at = format!("{target_ms} ms at {fps:.2} fps, seed {seed}: part of {d:.4} s");
                            assert!(d <= limit + 1e-9, "{at} over PART-TARGET {limit}");
                            // Only a segment's last part may be short (the keyframe came).
                            if i + 1 < parts.len() {
                                assert!(d >= 0.85 * limit - 1e-9, "{at} under 85% of {limit}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_part_limit_is_the_target_plus_ten_percent_in_whole_milliseconds() {
        assert_eq!(part_limit_ms(0.2), 220);
        assert_eq!(part_limit_ms(Duration::from_millis(333).as_secs_f64()), 366);
        assert_eq!(part_limit_ms(0.5), 550);
    }

    #[test]
    fn a_publisher_that_keyframes_only_when_asked_gets_segments_that_start_on_keyframes() {
        // Like a browser's OpenH264: one keyframe at the start, then one in answer to a request,
        // two frames later (the round trip and the encoder).
        let mut p = Packager::new(PackagerConfig::default(), &[Some(AudioCodec::Opus)]);
        let mut out = Vec::new();
        let mut asked = Vec::new();
        let mut answer_at = None;
        for n in 0..30 * 20 {
            out.extend(p.push(video(n, n == 0 || answer_at == Some(n))));
            for a in n * 50 / 30..(n + 1) * 50 / 30 {
                out.extend(p.push(audio(a)));
            }
            if p.take_keyframe_request() {
                asked.push(n);
                answer_at = Some(n + 2);
            }
        }
        out.extend(p.finish());
        let segments = segments(&out);
        assert!(segments.len() >= 8, "{} segments in 20 s", segments.len());
        for parts in &segments {
            assert!(parts[0].independent, "every segment starts on a keyframe");
            let total: f64 = parts.iter().map(|p| p.duration).sum();
            assert!(total < 2.2, "a segment of {total} s: the answer came after 2 s plus 3 frames");
        }
        // Asked once per segment, when its frame at 2 s (committed on the next one's arrival)
        // was no keyframe.
        assert_eq!(asked.len(), segments.len() - 1, "{asked:?}");
        assert_eq!(asked[0], 61);
    }

    #[test]
    fn a_publisher_that_ignores_keyframe_requests_is_asked_once_a_second_and_still_gets_cut() {
        let mut p = Packager::new(PackagerConfig::default(), &[None]);
        let mut out = Vec::new();
        let mut asked = Vec::new();
        for n in 0..30 * 12 {
            out.extend(p.push(video(n, n == 0)));
            if p.take_keyframe_request() {
                asked.push(n);
            }
        }
        out.extend(p.finish());
        // Segments of 4 s (the target duration): asked at 2 s and 3 s into each, committed one
        // frame later.
        assert_eq!(asked, [61, 91, 181, 211, 301, 331]);
        let lengths: Vec<usize> = segments(&out).iter().map(|s| s.len()).collect();
        assert_eq!(lengths.len(), 3, "{lengths:?}");
    }

    #[test]
    fn a_publisher_with_keyframes_in_time_is_never_asked() {
        let mut p = Packager::new(PackagerConfig::default(), &[Some(AudioCodec::Opus)]);
        let mut asked = 0;
        for n in 0..30 * 10 {
            p.push(video(n, n.is_multiple_of(60)));
            asked += usize::from(p.take_keyframe_request());
        }
        assert_eq!(asked, 0);
    }
}
