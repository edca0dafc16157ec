//! WebRTC ingest: one tokio task owns the UDP socket and every publishing session's str0m
//! [`Rtc`]. HTTP handlers talk to it through [`Ingest`] (a channel), so no lock is ever held
//! around an `Rtc`.
//!
//! ```text
//!  POST /whip ──Publish──▶ ┌──────────── ingest task ────────────┐
//!  DELETE     ──Stop─────▶ │ sessions: Vec<Session>              │──▶ ShowStream (store)
//!  UDP socket ◀──────────▶ │   Rtc (ICE-lite) ─ H264/Opus frames │──▶ StreamEvents
//!                          │   └▶ Packager (CMAF parts)          │
//!                          └─────────────────────────────────────┘
//! ```
//!
//! A publish with audio gets an AAC transcoder ([`crate::aac`], a thread of its own) when the
//! configuration asks for the AAC rendition: Opus packets go to it as they arrive, and the AAC
//! it has finished is packaged before each video frame.
//!
//! Every session shares the one socket. A datagram goes to the session whose `Rtc` accepts it:
//! by ICE ufrag for STUN, by the nominated remote address for DTLS/SRTP. Datagrams nobody
//! accepts (garbage, strays) are dropped.
//!
//! The stream starts at the first keyframe the encoder sends on its own. Later, when a segment
//! runs past its target without one, the packager asks for one and this sends a PLI (or a FIR,
//! whichever the answer negotiated): browsers' encoders send keyframes only when asked. Nothing
//! depends on the answer: OBS ignores PLI and FIR, and gets its segments cut at the target
//! duration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::{KeyframeRequestKind, MediaData, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::aac::{AacStats, AacTranscoder};
use crate::error::ApiError;
use crate::events::{Health, MAX_GOOD_KEYFRAME_INTERVAL_MS, StreamEvent, StreamEvents};
use crate::fmp4::{Codec, TrackInfo};
use crate::h264::{H264Depacketizer, ParameterSets};
use crate::media::{AudioCodec, Frame, TrackKind};
use crate::packager::{AUDIO_TRACK, Packager, PackagerConfig, VIDEO_TRACK};
use crate::playlist::Rendition;
use crate::store::{Library, ShowStream};

/// A keyframe this soon after a keyframe request is its answer: the interval it ends was ours,
/// not the encoder's setting, so it warrants no advice to the host.
const KEYFRAME_ANSWER_WINDOW: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Where the UDP socket listens.
    pub udp: SocketAddr,
    /// The address publishers reach the socket at (behind NAT: the public one). Defaults to the
    /// bound address, or 127.0.0.1 when bound to all interfaces.
    pub public_addr: Option<SocketAddr>,
    pub max_sessions: usize,
    /// A publisher silent this long is gone (it was killed, or its network went away).
    pub silence_timeout: Duration,
    pub health_interval: Duration,
    pub packager: PackagerConfig,
    /// Which audio renditions a publish with audio gets.
    pub audio: AudioRenditions,
}

/// `--audio`: the publisher's Opus as sent, AAC-LC made from it, or both (two variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AudioRenditions {
    Opus,
    Aac,
    #[default]
    Both,
}

impl std::str::FromStr for AudioRenditions {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "opus" => Ok(AudioRenditions::Opus),
            "aac" => Ok(AudioRenditions::Aac),
            "both" => Ok(AudioRenditions::Both),
            _ => Err(format!("{s:?} is not one of aac, opus, both")),
        }
    }
}

impl AudioRenditions {
    fn opus(self) -> bool {
        self != AudioRenditions::Aac
    }
    fn aac(self) -> bool {
        self != AudioRenditions::Opus
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            udp: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_addr: None,
            max_sessions: 16,
            silence_timeout: Duration::from_secs(6),
            health_interval: Duration::from_secs(5),
            packager: PackagerConfig::default(),
            audio: AudioRenditions::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot bind the WebRTC UDP socket on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the ICE candidate address {0} is not usable")]
    Candidate(SocketAddr),
}

/// An accepted publish.
#[derive(Debug, Clone)]
pub struct Published {
    pub session: String,
    pub answer: String,
}

enum Command {
    Publish {
        show: String,
        offer: String,
        reply: oneshot::Sender<Result<Published, ApiError>>,
    },
    /// Ends `session` of `show`, or whichever session the show has when `None`.
    Stop {
        show: String,
        session: Option<String>,
        reply: oneshot::Sender<bool>,
    },
}

/// The handle HTTP uses; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    commands: mpsc::Sender<Command>,
    candidate: SocketAddr,
    aac: Arc<AacStats>,
}

impl Ingest {
    pub async fn start(
        config: IngestConfig,
        library: Arc<Library>,
        events: Arc<dyn StreamEvents>,
    ) -> Result<Ingest, IngestError> {
        let socket = UdpSocket::bind(config.udp)
            .await
            .map_err(|source| IngestError::Bind { addr: config.udp, source })?;
        let bound = socket.local_addr().map_err(|source| IngestError::Bind { addr: config.udp, source })?;
        let candidate = match config.public_addr {
            Some(a) => a,
            None if bound.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], bound.port())),
            None => bound,
        };
        Candidate::host(candidate, "udp").map_err(|_| IngestError::Candidate(candidate))?;
        let (commands, rx) = mpsc::channel(64);
        let aac = Arc::new(AacStats::default());
        let driver =
            Driver { socket, candidate, config, library, events, sessions: Vec::new(), aac: aac.clone() };
        tokio::spawn(driver.run(rx));
        Ok(Ingest { commands, candidate, aac })
    }

    /// What the AAC transcoders have done, summed over publishes.
    pub fn aac_stats(&self) -> &AacStats {
        &self.aac
    }

    /// The UDP address in our ICE candidates.
    pub fn candidate(&self) -> SocketAddr {
        self.candidate
    }

    pub async fn publish(&self, show: String, offer: String) -> Result<Published, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Publish { show, offer, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Ends a session (the show's live one when `session` is `None`); false if there was no
    /// such session on that show.
    pub async fn stop(&self, show: String, session: Option<String>) -> Result<bool, ApiError> {
        let (reply, done) = oneshot::channel();
        self.commands.send(Command::Stop { show, session, reply }).await.map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())
    }
}

fn stopped() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the ingest task has stopped")
}

struct Driver {
    socket: UdpSocket,
    candidate: SocketAddr,
    config: IngestConfig,
    library: Arc<Library>,
    events: Arc<dyn StreamEvents>,
    sessions: Vec<Session>,
    aac: Arc<AacStats>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 2048];
        let mut next_health = Instant::now() + self.config.health_interval;
        loop {
            let soonest =
                self.sessions.iter().map(|s| s.timeout).min().unwrap_or(next_health).min(next_health);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => self.receive(&buf[..n], source).await,
                    Err(e) => tracing::debug!("udp receive: {e}"),
                },
                command = commands.recv() => match command {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(soonest.into()) => {}
            }
            let now = Instant::now();
            for i in 0..self.sessions.len() {
                if self.sessions[i].timeout <= now {
                    let s = &mut self.sessions[i];
                    let _ = s.rtc.handle_input(Input::Timeout(now));
                    self.drain(i).await;
                }
                let s = &mut self.sessions[i];
                if now.duration_since(s.last_packet) > self.config.silence_timeout {
                    tracing::info!(show = s.show, session = s.id, "publisher silent; ending the stream");
                    s.closing = true;
                }
            }
            if now >= next_health {
                next_health = now + self.config.health_interval;
                for s in &mut self.sessions {
                    if let Some(health) = s.health(self.config.health_interval) {
                        self.events.stream_event(&s.show, StreamEvent::Health(health));
                    }
                }
            }
            self.reap();
        }
    }

    async fn receive(&mut self, data: &[u8], source: SocketAddr) {
        let now = Instant::now();
        // Neither STUN, DTLS nor RTP: garbage.
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(
            now,
            Receive { proto: Protocol::Udp, source, destination: self.candidate, contents },
        );
        let Some(i) = self.sessions.iter().position(|s| s.rtc.accepts(&input)) else { return };
        let s = &mut self.sessions[i];
        s.last_packet = now;
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = s.id, "rtc input: {e}");
        }
        self.drain(i).await;
        self.reap();
    }

    /// Runs session `i` until str0m wants nothing but time (its single-mutation contract).
    async fn drain(&mut self, i: usize) {
        loop {
            let s = &mut self.sessions[i];
            match s.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    s.timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(e)) => s.event(e, &*self.events, &self.config),
                Err(e) => {
                    tracing::info!(session = s.id, "rtc failed: {e}");
                    s.closing = true;
                    s.timeout = Instant::now() + Duration::from_secs(3600);
                    return;
                }
            }
        }
    }

    /// Ends the sessions marked for closing.
    fn reap(&mut self) {
        let events = &*self.events;
        self.sessions.retain_mut(|s| {
            if s.closing {
                s.finish(events);
            }
            !s.closing
        });
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Publish { show, offer, reply } => {
                let result = self.publish(show, &offer).await;
                let _ = reply.send(result);
            }
            Command::Stop { show, session, reply } => {
                let found = self
                    .sessions
                    .iter_mut()
                    .find(|s| s.show == show && session.as_ref().is_none_or(|id| *id == s.id));
                let ok = found.map(|s| s.closing = true).is_some();
                self.reap();
                let _ = reply.send(ok);
            }
        }
    }

    async fn publish(&mut self, show: String, offer: &str) -> Result<Published, ApiError> {
        if self.sessions.iter().any(|s| s.show == show) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "show_live",
                format!("show {show:?} is live already; DELETE that session first (or let it time out)"),
            ));
        }
        if self.sessions.len() >= self.config.max_sessions {
            let mut e =
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "at_capacity", "this origin is at capacity");
            e.retry_after = Some(10);
            return Err(e);
        }
        let parsed = SdpOffer::from_sdp_string(offer).map_err(|_| not_sdp(offer))?;
        if !offers_codec(offer, "H264/90000") {
            return Err(no_codecs());
        }
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .build(now);
        let candidate = Candidate::host(self.candidate, "udp").expect("checked at start");
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_sdp", format!("cannot answer the offer: {e}"))
            })?
            .to_sdp_string();
        if !offers_codec(&answer, "H264/90000") {
            return Err(no_codecs());
        }
        let audio = offers_codec(&answer, "opus/48000");
        let aac = match audio && self.config.audio.aac() {
            true => AacTranscoder::start(&show, self.aac.clone())
                .inspect_err(|e| tracing::error!(show, "no AAC rendition: {e}"))
                .ok(),
            false => None,
        };
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("the OS has randomness");
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let stream = self.library.open_show(&show);
        tracing::info!(show, session = id, "publish accepted");
        self.sessions.push(Session {
            id: id.clone(),
            show,
            rtc,
            timeout: now,
            last_packet: now,
            closing: false,
            stream,
            audio,
            aac,
            packaging: None,
            h264: H264Depacketizer::default(),
            video: None,
            clock: Clock::new(now, SystemTime::now()),
            stats: Stats::default(),
            media_seconds: 0.0,
        });
        let i = self.sessions.len() - 1;
        self.drain(i).await;
        Ok(Published { session: id, answer })
    }
}

fn no_codecs() -> ApiError {
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "unsupported_codecs",
        "this origin takes H.264 video (and Opus audio)",
    )
}

/// Whether an SDP has an `a=rtpmap` for `codec` (`H264/90000`), case-insensitively.
/// Why `offer` is not SDP, in words. str0m's parse error prints where it stopped as a heap
/// address (`PointerOffset(0x7f…)`), which tells a publisher nothing and an attacker too much,
/// so it never reaches the answer; the first line that is not `<type>=<value>` does.
fn not_sdp(offer: &str) -> ApiError {
    let mut msg = String::from("the offer is not valid SDP");
    let is_sdp_line = |l: &str| matches!(l.as_bytes(), [t, b'=', ..] if t.is_ascii_lowercase());
    if let Some((n, line)) = offer.lines().enumerate().find(|(_, l)| !is_sdp_line(l)) {
        let shown: String = line.chars().take(40).collect();
        msg.push_str(&format!(": line {} is not <type>=<value>: {shown:?}", n + 1));
    }
    ApiError::new(StatusCode::BAD_REQUEST, "bad_sdp", msg)
}

fn offers_codec(sdp: &str, codec: &str) -> bool {
    sdp.lines().filter(|l| l.starts_with("a=rtpmap:")).any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|c| c.to_ascii_lowercase().starts_with(&codec.to_ascii_lowercase()))
    })
}

struct Session {
    id: String,
    show: String,
    rtc: Rtc,
    timeout: Instant,
    last_packet: Instant,
    closing: bool,
    stream: Arc<ShowStream>,
    audio: bool,
    aac: Option<AacTranscoder>,
    /// Created at the first keyframe; replaced when the parameter sets change.
    packaging: Option<(ParameterSets, Packager)>,
    h264: H264Depacketizer,
    /// Where the video comes from, for keyframe requests.
    video: Option<(Mid, Option<Rid>)>,
    clock: Clock,
    stats: Stats,
    media_seconds: f64,
}

impl Session {
    fn event(&mut self, e: Event, events: &dyn StreamEvents, config: &IngestConfig) {
        match e {
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => self.closing = true,
            Event::MediaData(d) => self.media(d, events, config),
            _ => {}
        }
    }

    fn media(&mut self, d: MediaData, events: &dyn StreamEvents, config: &IngestConfig) {
        self.stats.bytes += d.data.len() as u64;
        match d.params.spec().codec {
            RtcCodec::H264 => {
                self.video = Some((d.mid, d.rid));
                let Some(unit) = self.h264.push(&d.data) else { return };
                let dts = self.clock.dts(TrackKind::Video, &d);
                self.stats.frames += 1;
                let capture = self.clock.capture(&d);
                // Before the publisher's first sender report, capture time is only arrival time:
                // a lag of 0 that says nothing. Taken before `maybe_begin`, so `stream.started`
                // already carries this frame's.
                if d.last_sender_info.is_some() {
                    let lag = self.clock.lag_ms(&d, capture);
                    self.stats.least_lag_ms = Some(self.stats.least_lag_ms.map_or(lag, |l| l.min(lag)));
                }
                if unit.keyframe {
                    if let Some(last) = self.stats.last_keyframe.replace(dts) {
                        self.stats.keyframe_interval_ms = Some((dts.saturating_sub(last) / 90) as u32);
                    }
                    self.stats.keyframe_answered = self.stats.keyframe_asked.take().is_some_and(|asked| {
                        d.network_time.saturating_duration_since(asked) <= KEYFRAME_ANSWER_WINDOW
                    });
                    self.maybe_begin(events, config);
                }
                let frame = Frame {
                    kind: TrackKind::Video,
                    dts,
                    keyframe: unit.keyframe,
                    data: unit.sample,
                    capture,
                };
                self.package(frame);
            }
            RtcCodec::Opus if self.audio => {
                let kind = TrackKind::Audio(AudioCodec::Opus);
                let frame = Frame {
                    kind,
                    dts: self.clock.dts(kind, &d),
                    keyframe: true,
                    data: d.data.to_vec(),
                    capture: self.clock.capture(&d),
                };
                if let Some(aac) = &self.aac {
                    aac.push(frame.clone());
                }
                self.package(frame);
            }
            _ => {}
        }
    }

    /// At a keyframe: start packaging, or start a new period if the SPS or PPS changed.
    fn maybe_begin(&mut self, events: &dyn StreamEvents, config: &IngestConfig) {
        let Some(sets) = self.h264.parameter_sets() else { return };
        if self.packaging.as_ref().is_some_and(|(current, _)| current == sets) {
            return;
        }
        let sets = sets.clone();
        if let Some((_, mut old)) = self.packaging.take() {
            feed_aac(&self.aac, Some(&mut old));
            for item in old.finish() {
                self.stream.packaged(item);
            }
        }
        let renditions = self.renditions(config);
        let inits: Vec<(Rendition, Vec<TrackInfo>)> = renditions
            .iter()
            .map(|&(r, audio)| {
                let video =
                    TrackInfo { id: VIDEO_TRACK, timescale: 90_000, codec: Codec::H264(sets.clone()) };
                let audio = audio.map(|codec| TrackInfo {
                    id: AUDIO_TRACK,
                    timescale: 48_000,
                    codec: match codec {
                        AudioCodec::Opus => Codec::Opus { channels: 2 },
                        AudioCodec::Aac => Codec::Aac {
                            config: crate::aac::AUDIO_SPECIFIC_CONFIG.to_vec(),
                            bitrate: crate::aac::AAC_BITRATE,
                        },
                    },
                });
                (r, std::iter::once(video).chain(audio).collect())
            })
            .collect();
        self.stream.begin(&inits);
        let mut codecs: Vec<String> = Vec::new();
        for t in inits.iter().flat_map(|(_, tracks)| tracks) {
            let c = t.codec_string();
            if !codecs.contains(&c) {
                codecs.push(c);
            }
        }
        events.stream_event(
            &self.show,
            StreamEvent::Started {
                playlist: format!("/hls/{}/master.m3u8", self.show),
                codecs: codecs.join(","),
                width: sets.info.width,
                height: sets.info.height,
                capture_lag_ms: self.stats.capture_lag_ms(),
            },
        );
        let audio: Vec<Option<AudioCodec>> = renditions.iter().map(|(_, a)| *a).collect();
        self.packaging = Some((sets, Packager::new(config.packager, &audio)));
    }

    /// The renditions this publish gets, each with its audio codec (none: video alone).
    fn renditions(&self, config: &IngestConfig) -> Vec<(Rendition, Option<AudioCodec>)> {
        if !self.audio {
            return vec![(Rendition::AsSent, None)];
        }
        let mut out = Vec::new();
        if config.audio.opus() || self.aac.is_none() {
            out.push((Rendition::AsSent, Some(AudioCodec::Opus)));
        }
        if self.aac.is_some() {
            out.push((Rendition::Aac, Some(AudioCodec::Aac)));
        }
        out
    }

    fn package(&mut self, frame: Frame) {
        // The AAC finished so far goes in before a video frame can close a part.
        if frame.kind == TrackKind::Video {
            feed_aac(&self.aac, self.packaging.as_mut().map(|(_, p)| p));
        }
        let Some((_, packager)) = &mut self.packaging else { return };
        for item in packager.push(frame) {
            if let crate::packager::Packaged::Part(p) = &item {
                self.media_seconds += p.duration;
            }
            self.stream.packaged(item);
        }
        if packager.take_keyframe_request() {
            self.request_keyframe();
        }
    }

    /// A PLI where negotiated (what browsers answer), else a FIR, else nothing.
    fn request_keyframe(&mut self) {
        let Some((mid, rid)) = self.video else { return };
        let Some(mut writer) = self.rtc.writer(mid) else { return };
        let kind = [KeyframeRequestKind::Pli, KeyframeRequestKind::Fir]
            .into_iter()
            .find(|&k| writer.is_request_keyframe_possible(k));
        let Some(kind) = kind else { return };
        match writer.request_keyframe(rid, kind) {
            Ok(()) => {
                self.stats.keyframe_asked = Some(Instant::now());
                tracing::debug!(show = self.show, session = self.id, "asked for a keyframe ({kind:?})");
            }
            Err(e) => tracing::debug!(show = self.show, session = self.id, "keyframe request: {e}"),
        }
    }

    fn finish(&mut self, events: &dyn StreamEvents) {
        self.rtc.disconnect();
        if let Some((_, mut packager)) = self.packaging.take() {
            feed_aac(&self.aac, Some(&mut packager));
            for item in packager.finish() {
                if let crate::packager::Packaged::Part(p) = &item {
                    self.media_seconds += p.duration;
                }
                self.stream.packaged(item);
            }
            self.stream.end();
            let duration_ms = (self.media_seconds * 1000.0) as u64;
            events.stream_event(&self.show, StreamEvent::Ended { duration_ms });
        }
        tracing::info!(show = self.show, session = self.id, "publish ended");
    }

    /// Health over the last `interval`, and a fresh window. `None` before any media.
    fn health(&mut self, interval: Duration) -> Option<Health> {
        self.packaging.as_ref()?;
        let secs = interval.as_secs_f32();
        let mut warnings = Vec::new();
        let too_far = |&k: &u32| k > MAX_GOOD_KEYFRAME_INTERVAL_MS && !self.stats.keyframe_answered;
        if let Some(k) = self.stats.keyframe_interval_ms.filter(too_far) {
            warnings.push(format!(
                "keyframes every {:.1} s: set the keyframe interval to 1 or 2 s for low latency",
                f64::from(k) / 1000.0
            ));
        }
        let health = Health {
            bitrate_kbps: (self.stats.bytes as f32 * 8.0 / secs / 1000.0) as u32,
            fps: (self.stats.frames as f32 / secs).round() as u32,
            keyframe_interval_ms: self.stats.keyframe_interval_ms,
            warnings,
            capture_lag_ms: self.stats.capture_lag_ms(),
        };
        self.stats.bytes = 0;
        self.stats.frames = 0;
        self.stats.lag_ms = self.stats.capture_lag_ms();
        self.stats.least_lag_ms = None;
        Some(health)
    }
}

/// The AAC `aac` has finished so far, into `packager`; before packaging starts, nowhere (it
/// would be older than the first keyframe).
fn feed_aac(aac: &Option<AacTranscoder>, mut packager: Option<&mut Packager>) {
    for frame in aac.iter().flat_map(AacTranscoder::drain) {
        if let Some(p) = packager.as_deref_mut() {
            p.push(frame);
        }
    }
}

#[derive(Default)]
struct Stats {
    bytes: u64,
    frames: u64,
    last_keyframe: Option<u64>,
    keyframe_interval_ms: Option<u32>,
    /// When the newest keyframe request went out.
    keyframe_asked: Option<Instant>,
    /// The newest keyframe answered a request.
    keyframe_answered: bool,
    /// The least capture lag of a video frame in this interval (see `Health::capture_lag_ms`).
    least_lag_ms: Option<i64>,
    /// The last interval's, for one without video.
    lag_ms: i64,
}

impl Stats {
    fn capture_lag_ms(&self) -> i64 {
        self.least_lag_ms.unwrap_or(self.lag_ms)
    }
}

/// Maps RTP media time to the shared per-publish timeline, and to the publisher's capture
/// clock.
///
/// Each track's timeline starts where its first frame arrived relative to the first frame of
/// any track, so audio and video line up as they arrived; after that the RTP clock rules (no
/// arrival jitter in the timestamps).
struct Clock {
    start: Instant,
    wall: SystemTime,
    first: Option<Instant>,
    video: Option<(u64, u64)>,
    audio: Option<(u64, u64)>,
}

impl Clock {
    fn new(start: Instant, wall: SystemTime) -> Clock {
        Clock { start, wall, first: None, video: None, audio: None }
    }

    fn dts(&mut self, kind: TrackKind, d: &MediaData) -> u64 {
        let first = *self.first.get_or_insert(d.network_time);
        let rate = u64::from(kind.timescale());
        let slot = match kind {
            TrackKind::Video => &mut self.video,
            TrackKind::Audio(_) => &mut self.audio,
        };
        let (base, offset) = *slot.get_or_insert_with(|| {
            let late = d.network_time.saturating_duration_since(first);
            (d.time.numer(), (late.as_secs_f64() * rate as f64) as u64)
        });
        (d.time.numer() + offset).saturating_sub(base)
    }

    /// How long after `capture` the frame of `d` arrived, in ms: arrival on the origin's wall
    /// clock, minus capture on the publisher's.
    fn lag_ms(&self, d: &MediaData, capture: SystemTime) -> i64 {
        let arrival = self.wall + d.network_time.saturating_duration_since(self.start);
        match arrival.duration_since(capture) {
            Ok(late) => late.as_millis() as i64,
            Err(early) => -(early.duration().as_millis() as i64),
        }
    }

    /// Capture time from the latest sender report; arrival time before the first one.
    fn capture(&self, d: &MediaData) -> SystemTime {
        match &d.last_sender_info {
            Some(sr) => {
                let rate = f64::from(d.time.denom());
                // 32-bit RTP difference: the report may be from just before or after this frame.
                let diff = (d.time.numer() as u32).wrapping_sub(sr.rtp_time.numer() as u32) as i32;
                let offset = Duration::from_secs_f64(f64::from(diff.unsigned_abs()) / rate);
                if diff >= 0 { sr.ntp_time + offset } else { sr.ntp_time - offset }
            }
            None => self.wall + d.network_time.saturating_duration_since(self.start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_lines_are_found_whatever_their_payload_type_or_case() {
        let sdp = "v=0\r\na=rtpmap:102 h264/90000\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(offers_codec(sdp, "H264/90000"));
        assert!(offers_codec(sdp, "opus/48000"));
        assert!(!offers_codec("a=rtpmap:96 VP8/90000\r\n", "H264/90000"));
    }
}
