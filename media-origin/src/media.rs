//! The stream model between ingest and packaging: frames on a per-track timeline, each with the
//! publisher's capture time. Ingest (WHIP today) produces them; the packager consumes them; neither
//! looks at the other's types.

use std::time::SystemTime;

/// Which track a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio(AudioCodec),
}

/// The audio a rendition carries: the publisher's Opus as sent, or AAC-LC transcoded from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    Opus,
    Aac,
}

/// Samples in one AAC-LC frame.
pub const AAC_FRAME_SAMPLES: u32 = 1024;

impl TrackKind {
    /// Ticks per second of the track's timeline (the RTP clock rates of H.264 and Opus; AAC is
    /// encoded at Opus's 48 kHz, so both audio tracks share one timeline).
    pub fn timescale(self) -> u32 {
        match self {
            TrackKind::Video => 90_000,
            TrackKind::Audio(_) => 48_000,
        }
    }
}

/// One coded frame: a video access unit (length-prefixed NAL units), one Opus packet or one raw
/// AAC frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: TrackKind,
    /// Decode time in the track's timescale, on a timeline shared by the tracks of one publish.
    pub dts: u64,
    pub keyframe: bool,
    pub data: Vec<u8>,
    /// When the publisher captured it (from RTCP sender reports), for EXT-X-PROGRAM-DATE-TIME.
    pub capture: SystemTime,
}

/// The duration of an Opus packet in 48 kHz ticks, from its TOC byte (RFC 6716 section 3.1).
pub fn opus_packet_ticks(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in 1/400 s (2.5 ms = 120 ticks at 48 kHz) per configuration group.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    Some(frame * frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_durations_come_from_the_toc() {
        // CELT fullband 20 ms, one frame (what browsers send).
        assert_eq!(opus_packet_ticks(&[0xfc, 0xff]), Some(960));
        // SILK 60 ms.
        assert_eq!(opus_packet_ticks(&[0x18]), Some(2880));
        // Two 10 ms CELT frames.
        assert_eq!(opus_packet_ticks(&[(30 << 3) | 1]), Some(960));
        // Code 3 with three frames of 20 ms.
        assert_eq!(opus_packet_ticks(&[(31 << 3) | 3, 3]), Some(2880));
        assert_eq!(opus_packet_ticks(&[]), None);
    }
}
