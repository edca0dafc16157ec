//! Opus in, AAC-LC out: the audio every HLS player decodes (iOS before Safari 17, smart TVs and
//! set-top players take no Opus). libopus decodes, Fraunhofer's FDK AAC encodes (48 kHz stereo,
//! 128 kb/s); nothing here is a codec.
//!
//! It runs on a thread of its own, off the ingest task: [`AacTranscoder::push`] never waits. The
//! queue holds one second of packets; a packet that finds it full is dropped and counted
//! ([`AacStats::dropped`]), so a transcoder that falls behind costs AAC audio, never video or
//! Opus. Finished frames come back through [`AacTranscoder::drain`], which the ingest task
//! calls before it packages each video frame.
//!
//! Timestamps: a frame the encoder puts out once it has taken `C` input samples holds the input
//! from `C - 1024 - delay` (`delay` is the encoder's priming and lookahead as FDK reports it), so
//! it is stamped with the input's decode time there: samples are counted from the packet that
//! started the timeline, and every packet's own timestamp is checked against the count (Opus RTP
//! timestamps are exact). The decoded AAC then lies on the Opus samples it came from. The
//! priming frames fall before the first input sample and are not emitted: the first frame a
//! player gets starts on audio, with no click. A short hole in the input (lost packets) is filled
//! by libopus's loss concealment, up to [`MAX_CONCEAL`] samples; a longer one, a jump back in
//! time, or the packets this side dropped while behind (concealing them would only keep it
//! behind) start a new timeline and encoder at the next packet.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Instant, SystemTime};

use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
use prometheus_client::metrics::counter::Counter;

use crate::media::{AAC_FRAME_SAMPLES, AudioCodec, Frame, TrackKind};

/// The AAC rendition's bit rate (stereo AAC-LC is transparent for speech and music about here).
pub const AAC_BITRATE: u32 = 128_000;

/// AudioSpecificConfig (ISO/IEC 14496-3, 1.6.2.1) of what [`AacTranscoder`] makes: object type 2
/// (AAC-LC), sampling frequency index 3 (48 kHz), channel configuration 2 (stereo). The `esds`
/// of the init segment carries it; a test checks the encoder reports the same.
pub const AUDIO_SPECIFIC_CONFIG: [u8; 2] = [0x11, 0x90];

/// Opus packets that may wait for the thread: one second of 20 ms packets.
pub const QUEUE_PACKETS: usize = 50;

/// The longest hole in the input, in 48 kHz samples, that loss concealment fills (120 ms: a
/// burst of lost packets, not an outage).
pub const MAX_CONCEAL: u64 = 5760;

/// The largest Opus packet: 120 ms at 48 kHz.
const MAX_OPUS_SAMPLES: usize = 5760;

/// What the transcoders of this origin did, for `/metrics`.
#[derive(Debug, Default)]
pub struct AacStats {
    /// AAC frames made.
    pub frames: Counter,
    /// Opus packets dropped because the transcoder was a second behind.
    pub dropped: Counter,
    /// Time (wall clock) the transcoder threads spent decoding and encoding.
    pub busy_seconds: Counter<f64, AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("Opus decoder: {0}")]
    Opus(#[from] opus::Error),
    #[error("AAC encoder: {0}")]
    Aac(String),
    #[error("starting the transcoder thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// One publish's transcoder: its thread lives until the handle is dropped.
pub struct AacTranscoder {
    /// Each packet with whether packets were dropped before it.
    input: SyncSender<(Frame, bool)>,
    output: Receiver<Frame>,
    stats: Arc<AacStats>,
    dropped: Cell<bool>,
}

impl AacTranscoder {
    pub fn start(name: &str, stats: Arc<AacStats>) -> Result<AacTranscoder, TranscodeError> {
        let mut pipeline = Pipeline::new()?;
        let (input, packets) = std::sync::mpsc::sync_channel::<(Frame, bool)>(QUEUE_PACKETS);
        let (done, output) = std::sync::mpsc::channel();
        let thread_stats = stats.clone();
        std::thread::Builder::new().name(format!("aac-{name}")).spawn(move || {
            let mut frames = Vec::new();
            for (packet, dropped) in packets {
                let started = Instant::now();
                if let Err(e) = pipeline.push(packet, dropped, &mut frames) {
                    tracing::warn!("AAC transcoder: {e}");
                }
                thread_stats.busy_seconds.inc_by(started.elapsed().as_secs_f64());
                thread_stats.frames.inc_by(frames.len() as u64);
                for frame in frames.drain(..) {
                    if done.send(frame).is_err() {
                        return;
                    }
                }
            }
        })?;
        Ok(AacTranscoder { input, output, stats, dropped: Cell::new(false) })
    }

    /// Hands over one Opus packet; false if it was dropped (the thread is a second behind).
    pub fn push(&self, opus: Frame) -> bool {
        match self.input.try_send((opus, self.dropped.get())) {
            Ok(()) => {
                self.dropped.set(false);
                true
            }
            Err(TrySendError::Full(_)) => {
                self.dropped.set(true);
                let dropped = self.stats.dropped.inc() + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped,
                        "the AAC transcoder is behind: Opus packets dropped from the AAC rendition"
                    );
                }
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// The AAC frames finished since the last call, in order.
    pub fn drain(&self) -> impl Iterator<Item = Frame> + '_ {
        std::iter::from_fn(|| self.output.try_recv().ok())
    }
}

/// Decoder, encoder and the timeline between them; the thread's whole state.
struct Pipeline {
    decoder: opus::Decoder,
    encoder: Encoder,
    /// Encoder priming plus lookahead, in samples.
    delay: u64,
    /// Decoded, interleaved stereo samples the encoder has not taken yet.
    pcm: Vec<i16>,
    /// Decode time of the first sample since the timeline (re)started.
    base: Option<u64>,
    /// Samples decoded since `base`: the next packet is expected at `base + fed`.
    fed: u64,
    /// Samples the encoder has taken since `base`.
    consumed: u64,
    /// The newest packet's capture time, for the frames it completes (the packager takes
    /// PROGRAM-DATE-TIME from video; audio carries it only to be a whole frame).
    capture: SystemTime,
    decoded: Vec<i16>,
    bitstream: Vec<u8>,
}

fn encoder() -> Result<(Encoder, u64), TranscodeError> {
    let aac = |e: fdk_aac::enc::EncoderError| TranscodeError::Aac(e.to_string());
    let encoder = Encoder::new(EncoderParams {
        bit_rate: BitRate::Cbr(AAC_BITRATE),
        sample_rate: 48_000,
        transport: Transport::Raw,
        channels: ChannelMode::Stereo,
        audio_object_type: AudioObjectType::Mpeg4LowComplexity,
    })
    .map_err(aac)?;
    let info = encoder.info().map_err(aac)?;
    Ok((encoder, u64::from(info.nDelay)))
}

impl Pipeline {
    fn new() -> Result<Pipeline, TranscodeError> {
        let (encoder, delay) = encoder()?;
        Ok(Pipeline {
            decoder: opus::Decoder::new(48_000, opus::Channels::Stereo)?,
            encoder,
            delay,
            pcm: Vec::with_capacity(4 * MAX_OPUS_SAMPLES),
            base: None,
            fed: 0,
            consumed: 0,
            capture: SystemTime::UNIX_EPOCH,
            decoded: vec![0; 2 * MAX_OPUS_SAMPLES],
            bitstream: vec![0; 8192],
        })
    }

    /// `dropped`: packets were dropped on the way here since the last one.
    fn push(&mut self, packet: Frame, dropped: bool, out: &mut Vec<Frame>) -> Result<(), TranscodeError> {
        let base = *self.base.get_or_insert(packet.dts);
        let expected = base + self.fed;
        let hole = packet.dts.saturating_sub(expected);
        let back = expected.saturating_sub(packet.dts);
        // Half an Opus frame of tolerance either way: RTP timestamps of Opus are exact.
        if hole > MAX_CONCEAL || back > 48_000 || (dropped && hole >= 480) {
            self.restart(packet.dts)?;
        } else if back >= 480 {
            return Ok(()); // a repeated or reordered packet: its time is already covered
        } else if hole >= 480 {
            self.conceal(hole)?;
        }
        self.capture = packet.capture;
        let n = self.decoder.decode(&packet.data, &mut self.decoded, false)?;
        self.pcm.extend_from_slice(&self.decoded[..2 * n]);
        self.fed += n as u64;
        self.encode(out)
    }

    /// A new timeline and encoder from `dts` on.
    fn restart(&mut self, dts: u64) -> Result<(), TranscodeError> {
        (self.encoder, self.delay) = encoder()?;
        self.pcm.clear();
        (self.base, self.fed, self.consumed) = (Some(dts), 0, 0);
        Ok(())
    }

    /// Fills `samples` of missing input with libopus's concealment (in 2.5 ms steps, as it wants).
    fn conceal(&mut self, samples: u64) -> Result<(), TranscodeError> {
        let mut left = samples / 120 * 120;
        while left > 0 {
            let step = left.min(MAX_OPUS_SAMPLES as u64) as usize;
            let n = self.decoder.decode(&[], &mut self.decoded[..2 * step], false)?;
            self.pcm.extend_from_slice(&self.decoded[..2 * n]);
            self.fed += n as u64;
            left -= step as u64;
        }
        Ok(())
    }

    fn encode(&mut self, out: &mut Vec<Frame>) -> Result<(), TranscodeError> {
        let frame_values = 2 * AAC_FRAME_SAMPLES as usize;
        while self.pcm.len() >= frame_values {
            let info = self
                .encoder
                .encode(&self.pcm[..frame_values], &mut self.bitstream)
                .map_err(|e| TranscodeError::Aac(e.to_string()))?;
            let taken = info.input_consumed.min(self.pcm.len());
            self.pcm.drain(..taken);
            self.consumed += taken as u64 / 2;
            if info.output_size > 0 {
                let frame = u64::from(AAC_FRAME_SAMPLES);
                let start = (self.base.unwrap_or(0) + self.consumed).checked_sub(frame + self.delay);
                // Frames of priming only (before the first input sample) are not emitted.
                if let Some(dts) = start.filter(|&t| t >= self.base.unwrap_or(0)) {
                    out.push(Frame {
                        kind: TrackKind::Audio(AudioCodec::Aac),
                        dts,
                        keyframe: true,
                        data: self.bitstream[..info.output_size].to_vec(),
                        capture: self.capture,
                    });
                }
            }
            if info.input_consumed == 0 {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opus packets of 20 ms from `pcm` (mono, 48 kHz, duplicated to stereo), stamped from `dts0`.
    fn opus_packets(pcm: &[i16], dts0: u64) -> Vec<Frame> {
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).unwrap();
        let mut out = Vec::new();
        for (i, chunk) in pcm.chunks_exact(960).enumerate() {
            let stereo: Vec<i16> = chunk.iter().flat_map(|&s| [s, s]).collect();
            let data = enc.encode_vec(&stereo, 4000).unwrap();
            out.push(Frame {
                kind: TrackKind::Audio(AudioCodec::Opus),
                dts: dts0 + i as u64 * 960,
                keyframe: true,
                data,
                capture: SystemTime::UNIX_EPOCH,
            });
        }
        out
    }

    /// Decodes packets to one mono track indexed by decode time minus `dts0`: Opus directly, or
    /// AAC with FDK's decoder, each frame placed at its own timestamp.
    fn place(frames: &[Frame], dts0: u64, len: usize) -> Vec<i16> {
        let mut track = vec![0i16; len];
        let mut opus_dec = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
        let mut aac_dec = fdk_aac::dec::Decoder::new(fdk_aac::dec::Transport::Raw);
        aac_dec.config_raw(&AUDIO_SPECIFIC_CONFIG).unwrap();
        let mut pcm = vec![0i16; 2 * MAX_OPUS_SAMPLES];
        for f in frames {
            // FDK's decoder hands out each frame this many samples late (its concealment
            // looks ahead); a player's decoder does not.
            let (n, late) = match f.kind {
                TrackKind::Audio(AudioCodec::Opus) => (opus_dec.decode(&f.data, &mut pcm, false).unwrap(), 0),
                _ => {
                    aac_dec.fill(&f.data).unwrap();
                    aac_dec.decode_frame(&mut pcm).unwrap();
                    (aac_dec.decoded_frame_size() / 2, u64::from(aac_dec.stream_info().outputDelay))
                }
            };
            for i in 0..n {
                let at = (f.dts + i as u64).checked_sub(dts0 + late);
                if let Some(slot) = at.and_then(|t| track.get_mut(t as usize)) {
                    *slot = pcm[2 * i];
                }
            }
        }
        track
    }

    fn onset(track: &[i16]) -> usize {
        track.iter().position(|s| s.unsigned_abs() > 4000).expect("the click is heard")
    }

    fn transcode(packets: Vec<Frame>) -> Vec<Frame> {
        let mut p = Pipeline::new().unwrap();
        let mut out = Vec::new();
        for packet in packets {
            p.push(packet, false, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn the_encoder_makes_what_the_init_segment_says() {
        let (encoder, delay) = encoder().unwrap();
        let info = encoder.info().unwrap();
        assert_eq!(&info.confBuf[..info.confSize as usize], &AUDIO_SPECIFIC_CONFIG);
        assert_eq!(info.frameLength, AAC_FRAME_SAMPLES);
        assert!(delay > 0 && delay < 4096, "{delay}");
    }

    #[test]
    fn aac_lies_on_the_opus_samples_it_came_from() {
        // Two seconds of quiet with a loud burst at 1.2 s; the burst's onset must decode at the
        // same decode time from AAC as from the Opus it was made of.
        let dts0 = 1_234_567;
        let mut pcm = vec![0i16; 96_000];
        for (i, s) in pcm[57_600..58_560].iter_mut().enumerate() {
            *s = if (i / 24) % 2 == 0 { 20_000 } else { -20_000 };
        }
        let packets = opus_packets(&pcm, dts0);
        let aac = transcode(packets.clone());
        assert!(aac.len() >= 85, "{} frames for 2 s", aac.len());
        // Consecutive frames, 1024 samples apart, none before the input started.
        assert!(aac[0].dts >= dts0);
        for w in aac.windows(2) {
            assert_eq!(w[1].dts - w[0].dts, u64::from(AAC_FRAME_SAMPLES));
        }
        let opus_at = onset(&place(&packets, dts0, pcm.len()));
        let aac_at = onset(&place(&aac, dts0, pcm.len()));
        let off = aac_at as i64 - opus_at as i64;
        assert!(off.abs() <= 48, "AAC is {off} samples off the Opus it came from (at {opus_at})");
    }

    #[test]
    fn a_hole_is_concealed_and_a_long_one_restarts_the_timeline() {
        let dts0 = 48_000;
        let pcm: Vec<i16> = (0..96_000).map(|i| ((i as f64 * 0.0576).sin() * 8000.0) as i16).collect();
        let mut packets = opus_packets(&pcm, dts0);
        // Packets 40..45 lost (100 ms), and a repeat of packet 60.
        packets.drain(40..45);
        let repeat = packets[55].clone();
        packets.insert(56, repeat);
        let aac = transcode(packets.clone());
        for w in aac.windows(2) {
            assert_eq!(w[1].dts - w[0].dts, u64::from(AAC_FRAME_SAMPLES), "no gap: the hole was concealed");
        }
        let last_in = packets.last().unwrap().dts + 960;
        assert!(last_in - (aac.last().unwrap().dts + 1024) < 4096, "the output kept up with the input");
        // Nine seconds missing, then a jump back in time: each starts a new timeline at the
        // next packet, stamped from that packet.
        let second = |at: u64| opus_packets(&pcm[..48_000], at);
        let mut p = Pipeline::new().unwrap();
        let mut out = Vec::new();
        for packet in second(dts0).into_iter().chain(second(dts0 + 10 * 48_000)).chain(second(dts0)) {
            p.push(packet, false, &mut out).unwrap();
        }
        let jumps: Vec<(u64, u64)> =
            out.windows(2).filter(|w| w[1].dts != w[0].dts + 1024).map(|w| (w[0].dts, w[1].dts)).collect();
        assert_eq!(jumps.len(), 2, "{jumps:?}");
        assert!(
            jumps[0].1 >= dts0 + 10 * 48_000 && jumps[1].1 >= dts0 && jumps[1].1 < dts0 + 4096,
            "{jumps:?}"
        );
        // Packets this side dropped are not concealed: the timeline restarts after them.
        let mut p = Pipeline::new().unwrap();
        let mut out = Vec::new();
        let packets = second(dts0);
        for (i, packet) in packets.into_iter().enumerate().filter(|(i, _)| !(20..25).contains(i)) {
            p.push(packet, i == 25, &mut out).unwrap();
        }
        assert_eq!(out.windows(2).filter(|w| w[1].dts != w[0].dts + 1024).count(), 1);
    }

    #[test]
    fn a_transcoder_a_second_behind_drops_packets_and_counts_them() {
        // Pushing 20 s of packets at once outruns any thread: the queue takes a second's worth.
        let stats = Arc::new(AacStats::default());
        let t = AacTranscoder::start("test", stats.clone()).unwrap();
        let pcm = vec![0i16; 20 * 48_000];
        let accepted = opus_packets(&pcm, 0).into_iter().filter(|p| t.push(p.clone())).count();
        assert!((QUEUE_PACKETS..1000).contains(&accepted), "{accepted} of 1000 accepted");
        assert_eq!(stats.dropped.get(), 1000 - accepted as u64);
        // What was accepted comes out, in order.
        let mut frames = Vec::new();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while frames.len() < 40 && Instant::now() < deadline {
            frames.extend(t.drain());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(frames.len() >= 40, "{} frames from {accepted} packets", frames.len());
        assert!(frames.windows(2).all(|w| w[1].dts > w[0].dts));
    }
}
