//! `cargo bench -p liveshop-media-origin --bench cost [-- N]`: CPU per stream with N publishers
//! (default 4), with the AAC rendition (`--audio both`, the default) and without it (`opus`),
//! beside the CPU of only receiving and decrypting the same packets, as ratios. Then how far the
//! audio in each part ends before the part's video does, AAC beside Opus (p50/p95): AAC comes
//! from its transcoder after the Opus it was made of, and what misses a part rides in the next.
//!
//! The load publisher is this binary in a child process (so its CPU is not counted): N str0m
//! WebRTC sessions replaying a recording made here by ffmpeg (x264 High at 1280x720, 30 fps,
//! 2.5 Mbit/s, a keyframe a second; Opus 48 kHz stereo in 20 ms packets). The parent runs
//! either the real origin (ingest, packaging, store) or a bare str0m receiver that answers
//! the same WHIP offers and drops every frame after decryption and depacketizing, and measures
//! its own CPU time over the same window. Needs ffmpeg.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use liveshop_media_origin::events::{StreamEvent, StreamEvents};
use liveshop_media_origin::ingest::AudioRenditions;
use liveshop_media_origin::{Origin, OriginConfig};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const SECRET: &[u8] = b"the cost bench secret";
const WARMUP: Duration = Duration::from_secs(4);
const WINDOW: Duration = Duration::from_secs(10);
/// Frames the bare receiver got (and dropped).
static BARE_FRAMES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn main() {
    if let Ok(url) = std::env::var("COST_PUBLISH_TO") {
        return publishers(&url);
    }
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(4);
    let dir = std::env::temp_dir().join(format!("liveshop-media-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    record(&dir);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (opus, _, _) = runtime.block_on(measure(n, &dir, Some(AudioRenditions::Opus)));
    let (aac, transcode, lag) = runtime.block_on(measure(n, &dir, Some(AudioRenditions::Both)));
    let (bare, _, _) = runtime.block_on(measure(n, &dir, None));
    println!(
        "cost, {n} publishers of 720p30 H.264 + Opus, CPU per stream-second: origin with AAC {:.1} ms \
         (ratio {:.2}; {:.1} ms of it transcoding), origin Opus only {:.1} ms (ratio {:.2}); \
         receive + decrypt only {:.1} ms",
        aac * 1000.0,
        aac / bare,
        transcode * 1000.0,
        opus * 1000.0,
        opus / bare,
        bare * 1000.0,
    );
    let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p) as usize] * 1000.0;
    let (aac_lag, opus_lag) = (&lag.0, &lag.1);
    println!(
        "audio at a part's end, behind its video: AAC p50 {:.1} ms, p95 {:.1} ms; Opus p50 {:.1} ms, \
         p95 {:.1} ms ({} parts each); both renditions' parts are cut and served together",
        pct(aac_lag, 0.5),
        pct(aac_lag, 0.95),
        pct(opus_lag, 0.5),
        pct(opus_lag, 0.95),
        aac_lag.len().min(opus_lag.len()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Per part of the first publisher's recording, seconds from the end of its audio to the end of
/// its video: AAC, Opus (sorted).
type Lag = (Vec<f64>, Vec<f64>);

/// CPU seconds per stream-second of this process, and of its AAC transcoder threads, with `n`
/// publishers sending to the origin (with `origin`'s audio renditions) or to the bare receiver
/// (`None`).
async fn measure(n: usize, dir: &Path, origin: Option<AudioRenditions>) -> (f64, f64, Lag) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let media = dir.join(match origin {
        Some(AudioRenditions::Both) => "media-both",
        _ => "media",
    });
    let keys = if let Some(audio) = origin {
        let mut config = OriginConfig::new(media.clone());
        config.ingest.max_sessions = n;
        config.ingest.audio = audio;
        let o = Origin::start(config, SECRET, Arc::new(Quiet)).await.unwrap();
        let keys: Vec<String> = (0..n).map(|i| o.stream_key(&format!("load-{i}"))).collect();
        let app = o.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        keys
    } else {
        let app = bare_receiver().await;
        tokio::spawn(async move { axum::serve(listener, app).await });
        vec![String::new(); n]
    };
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("COST_PUBLISH_TO", format!("http://{http}"))
        .env("COST_KEYS", keys.join(","))
        .env("COST_RECORDING", dir)
        .spawn()
        .unwrap();
    tokio::time::sleep(WARMUP).await;
    let (before, transcode_before) = (cpu_seconds(), thread_cpu_seconds("aac-"));
    tokio::time::sleep(WINDOW).await;
    let used = cpu_seconds() - before;
    let _ = child.kill();
    let _ = child.wait();
    // The transcoders' own share (their threads live as long as the publishes).
    let transcode = thread_cpu_seconds("aac-") - transcode_before;
    // The figures count only if the media really went through.
    let mut lag = (Vec::new(), Vec::new());
    if origin.is_some() {
        for i in 0..n {
            let segments = std::fs::read_dir(media.join(format!("load-{i}")))
                .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("seg-")).count())
                .unwrap_or(0);
            assert!(segments >= 4, "publisher {i} made {segments} segments");
        }
        if origin == Some(AudioRenditions::Both) {
            tokio::time::sleep(Duration::from_millis(500)).await; // the writer thread
            lag = (part_lags(&media.join("load-0"), "aac-"), part_lags(&media.join("load-0"), ""));
        }
    } else {
        let frames = BARE_FRAMES.load(std::sync::atomic::Ordering::Relaxed);
        assert!(frames as f64 >= n as f64 * 30.0 * WINDOW.as_secs_f64(), "{frames} frames received");
    }
    let stream_seconds = n as f64 * WINDOW.as_secs_f64();
    (used / stream_seconds, transcode / stream_seconds, lag)
}

/// For each fragment of the recorded segments with `prefix`: the end of its video minus the end
/// of its audio, in seconds (sorted).
fn part_lags(dir: &Path, prefix: &str) -> Vec<f64> {
    let playlist = std::fs::read_to_string(dir.join(format!("{prefix}live.m3u8"))).unwrap();
    let mut lags = Vec::new();
    for segment in playlist.lines().filter(|l| l.ends_with(".m4s")) {
        let data = std::fs::read(dir.join(segment)).unwrap();
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            if &data[at + 4..at + 8] == b"moof" {
                let ends = track_ends(&data[at..at + size]);
                if let (Some(v), Some(a)) = (ends.iter().find(|e| e.0 == 1), ends.iter().find(|e| e.0 == 2)) {
                    lags.push(v.1 as f64 / 90_000.0 - a.1 as f64 / 48_000.0);
                }
            }
            at += size.max(8);
        }
    }
    lags.sort_by(f64::total_cmp);
    assert!(lags.len() >= 20, "{} parts with audio in {prefix}live.m3u8", lags.len());
    lags
}

/// (track id, decode time at the end of its run) of each `traf` in a `moof`, as the packager
/// writes them (tfhd, tfdt version 1, trun with duration, size and flags per sample).
fn track_ends(moof: &[u8]) -> Vec<(u32, u64)> {
    let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 24; // the moof's header and its mfhd
    while at + 8 <= moof.len() {
        let size = be32(&moof[at..]) as usize;
        if &moof[at + 4..at + 8] == b"traf" {
            let traf = &moof[at + 8..at + size];
            let track = be32(&traf[12..]);
            let tfdt = u64::from_be_bytes(traf[16 + 12..16 + 20].try_into().unwrap());
            let trun = &traf[16 + 20..];
            let count = be32(&trun[12..]) as usize;
            let total: u64 = (0..count).map(|i| u64::from(be32(&trun[20 + 12 * i..]))).sum();
            out.push((track, tfdt + total));
        }
        at += size.max(8);
    }
    out
}

struct Quiet;
impl StreamEvents for Quiet {
    fn stream_event(&self, _: &str, _: StreamEvent) {}
}

/// utime + stime of this process's threads whose names start with `prefix`, from /proc.
fn thread_cpu_seconds(prefix: &str) -> f64 {
    let mut ticks = 0.0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let name = stat.split_once('(').and_then(|(_, r)| r.rsplit_once(')')).map_or("", |(n, _)| n);
        if name.starts_with(prefix) {
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
            ticks += fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        }
    }
    ticks / 100.0
}

/// utime + stime of this process, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// Makes the recording: `video.h264` (Annex B with AUDs) and `audio.ogg` (Opus).
fn record(dir: &Path) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi"])
        .args(["-i", "sine=frequency=440:sample_rate=48000", "-t", "4", "-map", "0:v", "-c:v", "libx264"])
        .args(["-pix_fmt", "yuv420p", "-profile:v", "high", "-b:v", "2500k", "-bf", "0"])
        .args(["-x264-params", "keyint=30:min-keyint=30:scenecut=0:aud=1:repeat-headers=1"])
        .args(["-bsf:v", "h264_mp4toannexb", "-f", "h264"])
        .arg(dir.join("video.h264"))
        .args([
            "-map",
            "1:a",
            "-t",
            "4",
            "-ac",
            "2",
            "-c:a",
            "libopus",
            "-b:a",
            "96k",
            "-frame_duration",
            "20",
        ])
        .args(["-f", "ogg"])
        .arg(dir.join("audio.ogg"))
        .status()
        .expect("ffmpeg runs (apt-get install ffmpeg)");
    assert!(status.success());
}

/// Access units of an Annex B stream with AUDs (each starts at a `00 00 00 01 09`).
fn access_units(data: &[u8]) -> Vec<Vec<u8>> {
    let starts: Vec<usize> =
        data.windows(5).enumerate().filter(|(_, w)| w == &[0, 0, 0, 1, 9]).map(|(i, _)| i).collect();
    let ends = starts.iter().skip(1).copied().chain(std::iter::once(data.len()));
    starts.iter().zip(ends).map(|(&s, e)| data[s..e].to_vec()).collect()
}

/// Opus packets of an Ogg file (RFC 7845), without the two header packets.
fn opus_packets(data: &[u8]) -> Vec<Vec<u8>> {
    let (mut packets, mut current, mut i) = (Vec::new(), Vec::new(), 0);
    while i + 27 <= data.len() && &data[i..i + 4] == b"OggS" {
        let segments = usize::from(data[i + 26]);
        let table = &data[i + 27..i + 27 + segments];
        let mut at = i + 27 + segments;
        for &lace in table {
            current.extend_from_slice(&data[at..at + usize::from(lace)]);
            at += usize::from(lace);
            if lace < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        i = at;
    }
    packets.split_off(2.min(packets.len()))
}

/// The child: one str0m publisher per key, each on its own socket, replaying the recording.
fn publishers(url: &str) {
    let keys: Vec<String> = std::env::var("COST_KEYS").unwrap().split(',').map(String::from).collect();
    let dir = PathBuf::from(std::env::var("COST_RECORDING").unwrap());
    let video = Arc::new(access_units(&std::fs::read(dir.join("video.h264")).unwrap()));
    let audio = Arc::new(opus_packets(&std::fs::read(dir.join("audio.ogg")).unwrap()));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let (url, video, audio) = (format!("{url}/whip/load-{i}"), video.clone(), audio.clone());
            tasks.push(tokio::spawn(async move { publish(&url, &key, &video, &audio).await }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

async fn publish(url: &str, key: &str, video: &[Vec<u8>], audio: &[Vec<u8>]) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = socket.local_addr().unwrap();
    let mut rtc =
        Rtc::builder().clear_codecs().enable_h264(true).enable_opus(true, false).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    let vmid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let amid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let answer = whip_post(url, key, &offer.to_sdp_string()).await;
    rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

    let start = Instant::now();
    let (mut next_video, mut next_audio) = (0u64, 0u64);
    let mut buf = vec![0u8; 2000];
    loop {
        let timeout = drain(&mut rtc, &socket).await;
        let due_video = start + Duration::from_millis(next_video * 1000 / 30);
        let due_audio = start + Duration::from_millis(next_audio * 20);
        let wake = timeout.min(due_video).min(due_audio);
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = r else { continue };
                let Ok(contents) = buf[..n].try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents });
                let _ = rtc.handle_input(input);
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= due_video && rtc.is_connected() {
                    let frame = &video[(next_video as usize) % video.len()];
                    write(&mut rtc, vmid, Codec::H264, MediaTime::from_90khz(next_video * 3000), frame);
                    next_video += 1;
                } else if now >= due_audio && rtc.is_connected() {
                    let packet = &audio[(next_audio as usize) % audio.len()];
                    write(&mut rtc, amid, Codec::Opus, MediaTime::new(next_audio * 960, Frequency::FORTY_EIGHT_KHZ), packet);
                    next_audio += 1;
                } else {
                    let _ = rtc.handle_input(Input::Timeout(now));
                    if !rtc.is_connected() {
                        // Not connected yet: keep the schedule from slipping into a burst.
                        next_video = (now - start).as_millis() as u64 * 30 / 1000;
                        next_audio = (now - start).as_millis() as u64 / 20;
                    }
                }
            }
        }
    }
}

fn write(rtc: &mut Rtc, mid: Mid, codec: Codec, time: MediaTime, data: &[u8]) {
    let Some(writer) = rtc.writer(mid) else { return };
    let Some(pt) = writer.payload_params().find(|p| p.spec().codec == codec).map(|p| p.pt()) else { return };
    let _ = writer.write(pt, Instant::now(), time, data.to_vec());
}

/// Sends what str0m wants sent; returns when it next wants time.
async fn drain(rtc: &mut Rtc, socket: &UdpSocket) -> Instant {
    loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(t)) => return t,
            Ok(Output::Transmit(t)) => {
                let _ = socket.send_to(&t.contents, t.destination).await;
            }
            Ok(Output::Event(_)) => {}
            Err(_) => return Instant::now() + Duration::from_secs(3600),
        }
    }
}

async fn whip_post(url: &str, key: &str, sdp: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/sdp\r\n\
         Authorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The baseline: answers WHIP offers with ICE-lite str0m sessions on one socket, like the
/// origin, and drops every frame once str0m has decrypted and depacketized it.
async fn bare_receiver() -> Router {
    type Sessions = Arc<Mutex<Vec<(Rtc, Instant)>>>;
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let local = socket.local_addr().unwrap();
    let sessions: Sessions = Arc::default();
    let driver = (socket.clone(), sessions.clone());
    tokio::spawn(async move {
        let (socket, sessions) = driver;
        let mut buf = vec![0u8; 2000];
        loop {
            let soonest = sessions.lock().unwrap().iter().map(|s| s.1).min();
            let wait =
                soonest.map_or(Duration::from_millis(50), |t| t.saturating_duration_since(Instant::now()));
            let received = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await;
            let now = Instant::now();
            let mut out: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
            {
                let mut list = sessions.lock().unwrap();
                if let Ok(Ok((n, source))) = received
                    && let Ok(contents) = buf[..n].try_into()
                {
                    let input = Input::Receive(
                        now,
                        Receive { proto: Protocol::Udp, source, destination: local, contents },
                    );
                    if let Some((rtc, timeout)) = list.iter_mut().find(|(r, _)| r.accepts(&input)) {
                        let _ = rtc.handle_input(input);
                        *timeout = bare_drain(rtc, &mut out);
                    }
                }
                for (rtc, timeout) in list.iter_mut().filter(|(_, t)| *t <= now) {
                    let _ = rtc.handle_input(Input::Timeout(now));
                    *timeout = bare_drain(rtc, &mut out);
                }
            }
            for (data, to) in out {
                let _ = socket.send_to(&data, to).await;
            }
        }
    });
    Router::new()
        .route(
            "/whip/{show}",
            post(move |State(sessions): State<Sessions>, body: Bytes| async move {
                let offer = SdpOffer::from_sdp_string(std::str::from_utf8(&body).unwrap()).unwrap();
                let mut rtc = Rtc::builder()
                    .set_ice_lite(true)
                    .clear_codecs()
                    .enable_h264(true)
                    .enable_opus(true, false)
                    .build(Instant::now());
                rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
                let answer = rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string();
                let timeout = bare_drain(&mut rtc, &mut Vec::new());
                sessions.lock().unwrap().push((rtc, timeout));
                (axum::http::StatusCode::CREATED, answer)
            }),
        )
        .with_state(sessions)
}

/// Drains a bare session; frames are dropped, datagrams collected for sending.
fn bare_drain(rtc: &mut Rtc, out: &mut Vec<(Vec<u8>, SocketAddr)>) -> Instant {
    loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(t)) => return t,
            Ok(Output::Transmit(t)) => out.push((t.contents.to_vec(), t.destination)),
            Ok(Output::Event(Event::MediaData(_))) => {
                BARE_FRAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(Output::Event(_)) => {}
            Err(_) => return Instant::now() + Duration::from_secs(3600),
        }
    }
}
