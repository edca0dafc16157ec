//! Frames in, CMAF parts out. Pure: no clock, no IO; [`Packager::push`] takes one frame and
//! returns what became ready.
//!
//! Rules:
//! - Nothing is emitted before the first video keyframe (a decoder could not start there).
//! - A video frame's duration is known when the next one arrives, so each frame is held back
//!   until then (one frame of delay, the least any packager can have without guessing).
//! - A part closes before a frame that would make it longer than the part target, so every part
//!   is at most the target; at a constant frame rate each is within one frame of it.
//! - A segment closes at the first keyframe after `segment_target`, so segments start on
//!   keyframes. An encoder whose keyframes are further apart than `target_duration` gets a cut
//!   there anyway (that segment is not independent), because a segment may not outlast the
//!   playlist's target duration.
//! - Audio rides in the same fragments: a part carries the audio frames that start before its
//!   video ends. Each `traf` has its own decode time, so late audio costs nothing but a part.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::fmp4::{Sample, TrackRun, fragment};
use crate::media::{Frame, TrackKind, opus_packet_ticks};

/// Track ids in the init segment.
pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackagerConfig {
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
    /// `moof` + `mdat`.
    pub data: Vec<u8>,
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
    audio: bool,
    started: bool,
    /// The newest video frame, waiting for its successor to know its duration.
    pending: Option<Frame>,
    last_duration: u32,
    audio_queue: VecDeque<Frame>,
    /// Decode time of the first video frame; earlier audio is dropped.
    origin_dts: u64,
    part: Vec<Sample>,
    part_dts: u64,
    part_ticks: u64,
    part_segment_start: Option<SystemTime>,
    /// Ticks in the open segment; `None` between segments.
    segment_ticks: Option<u64>,
    sequence: u32,
}

impl Packager {
    /// `audio`: whether the init segment has an audio track.
    pub fn new(config: PackagerConfig, audio: bool) -> Packager {
        Packager {
            config,
            audio,
            started: false,
            pending: None,
            last_duration: 3000,
            audio_queue: VecDeque::new(),
            origin_dts: 0,
            part: Vec::new(),
            part_dts: 0,
            part_ticks: 0,
            part_segment_start: None,
            segment_ticks: None,
            sequence: 0,
        }
    }

    pub fn push(&mut self, frame: Frame) -> Vec<Packaged> {
        let mut out = Vec::new();
        match frame.kind {
            TrackKind::Audio => {
                let origin = self.origin_dts * 48_000 / 90_000;
                if self.audio && self.started && frame.dts >= origin {
                    self.audio_queue.push_back(frame);
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
            } else if !self.part.is_empty() && self.part_ticks + d > Self::ticks(self.config.part_target) {
                self.close_part(out);
            }
        }
        if self.segment_ticks.is_none() {
            self.segment_ticks = Some(0);
            self.part_segment_start = Some(frame.capture);
        }
        if self.part.is_empty() {
            self.part_dts = frame.dts;
        }
        self.part.push(Sample { duration, keyframe: frame.keyframe, data: frame.data });
        self.part_ticks += d;
        self.segment_ticks = self.segment_ticks.map(|s| s + d);
    }

    fn close_part(&mut self, out: &mut Vec<Packaged>) {
        if self.part.is_empty() {
            return;
        }
        let video_end = (self.part_dts + self.part_ticks) * 48_000 / 90_000;
        let mut audio = Vec::new();
        let mut audio_dts = None;
        while self.audio_queue.front().is_some_and(|f| f.dts < video_end) {
            let f = self.audio_queue.pop_front().expect("checked above");
            audio_dts.get_or_insert(f.dts);
            // The gap to the next packet absorbs losses; the last one goes by its TOC.
            let next = self.audio_queue.front().filter(|n| n.dts < video_end).map(|n| n.dts - f.dts);
            let duration = match next {
                Some(gap) if gap > 0 && gap <= 48_000 => gap as u32,
                _ => opus_packet_ticks(&f.data).unwrap_or(960),
            };
            audio.push(Sample { duration, keyframe: true, data: f.data });
        }
        self.sequence += 1;
        let video = TrackRun { track_id: VIDEO_TRACK, decode_time: self.part_dts, samples: &self.part };
        let audio_run =
            TrackRun { track_id: AUDIO_TRACK, decode_time: audio_dts.unwrap_or(0), samples: &audio };
        let data = fragment(self.sequence, &[video, audio_run]);
        out.push(Packaged::Part(Part {
            data,
            duration: self.part_ticks as f64 / 90_000.0,
            independent: self.part[0].keyframe,
            segment_start: self.part_segment_start.take(),
        }));
        self.part.clear();
        self.part_ticks = 0;
    }
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
            kind: TrackKind::Audio,
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
        let mut p = Packager::new(PackagerConfig::default(), true);
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
    fn nothing_comes_out_before_the_first_keyframe() {
        let mut p = Packager::new(PackagerConfig::default(), true);
        for n in 0..20 {
            assert!(p.push(video(n, false)).is_empty());
            assert!(p.push(audio(n)).is_empty());
        }
        assert!(p.finish().is_empty());
    }

    #[test]
    fn every_audio_frame_lands_in_exactly_one_part() {
        let mut p = Packager::new(PackagerConfig::default(), true);
        let out = run(&mut p, 4);
        // Count Opus payloads (3 bytes starting 0xfc) across the mdat boxes.
        let total: usize =
            parts(&out).iter().map(|p| p.data.windows(3).filter(|w| w == &[0xfc, 1, 2]).count()).sum();
        // The last audio frames after the last video frame's end stay queued.
        assert!((195..=200).contains(&total), "{total}");
    }

    #[test]
    fn keyframes_too_far_apart_still_give_segments_within_the_target_duration() {
        let mut p = Packager::new(PackagerConfig::default(), false);
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
}
