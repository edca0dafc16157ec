//! `cargo bench -p liveshop-media-origin --bench origin`: the origin's serving path on loopback,
//! each figure beside a baseline and their ratio.
//!
//! - **Blocking reload fan-in**: 5,000 players parked on `live.m3u8?_HLS_msn=N&_HLS_part=P`; the
//!   part is packaged; time from the part being ready to each complete response (p50, p99).
//!   Baseline: a bare tokio server whose 5,000 parked connections wait on the same kind of
//!   channel and write a fixed answer of the same size (no routing, no playlist rendering).
//! - **Ingest to part**: frames pushed at 30 fps in real time through the packager and the
//!   store, one player blocked on each preload-hinted part; time from the arrival of a part's
//!   last frame to that part's response. Baseline: one frame interval, the least a packager can
//!   wait before it knows the frame's duration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::routing::get;
use liveshop_media_origin::fmp4::{Codec, TrackInfo};
use liveshop_media_origin::h264::H264Depacketizer;
use liveshop_media_origin::media::{Frame, TrackKind};
use liveshop_media_origin::packager::{Packaged, Packager, PackagerConfig, VIDEO_TRACK};
use liveshop_media_origin::playlist::{PlaylistConfig, Rendition};
use liveshop_media_origin::store::{Library, ShowStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PLAYERS: usize = 5000;
/// An x264 SPS (High, 1280x720) and a PPS, so the init segment is a real one.
const SPS: &[u8] = &[
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
    0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        fan_in().await;
        ingest_to_part().await;
    });
}

/// A show with its init segment, a packager and a server for its files.
struct Bench {
    stream: Arc<ShowStream>,
    packager: Packager,
    addr: SocketAddr,
    next_frame: u64,
    _dir: TempDir,
}

impl Bench {
    async fn start() -> Bench {
        let dir = TempDir::new();
        let config = PackagerConfig::default();
        let playlist = PlaylistConfig { part_target: 0.2, target_duration: config.target_duration };
        let library = Arc::new(Library::open(dir.0.clone(), playlist, None).unwrap());
        let stream = library.open_show("bench");
        let mut annex_b = vec![0, 0, 0, 1];
        annex_b.extend_from_slice(SPS);
        annex_b.extend_from_slice(&[0, 0, 0, 1]);
        annex_b.extend_from_slice(PPS);
        let mut h264 = H264Depacketizer::default();
        h264.push(&annex_b);
        let sets = h264.parameter_sets().unwrap().clone();
        let video = TrackInfo { id: VIDEO_TRACK, timescale: 90_000, codec: Codec::H264(sets) };
        stream.begin(&[(Rendition::AsSent, vec![video])]);
        let app = Router::new()
            .route("/hls/{show}/{file}", get(liveshop_media_origin::hls::get))
            .with_state(library);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Bench { stream, packager: Packager::new(config, &[None]), addr, next_frame: 0, _dir: dir }
    }

    /// Pushes one 30 fps frame (a keyframe each second, about 2.5 Mbit/s); returns whether a
    /// part came out.
    fn push_frame(&mut self) -> bool {
        let n = self.next_frame;
        self.next_frame += 1;
        let keyframe = n.is_multiple_of(30);
        let mut data = vec![0u8; if keyframe { 40_000 } else { 9_000 }];
        data[..5].copy_from_slice(&[0, 0, 0x9c, 0x3b, if keyframe { 0x65 } else { 0x41 }]);
        let frame =
            Frame { kind: TrackKind::Video, dts: n * 3000, keyframe, data, capture: SystemTime::now() };
        let mut part = false;
        for item in self.packager.push(frame) {
            part |= matches!(item, Packaged::Part(_));
            self.stream.packaged(item);
        }
        part
    }

    fn next_part(&self) -> (u64, u32) {
        self.stream.lock().media(Rendition::AsSent).expect("begun").playlist.next_part()
    }
}

/// Sends `request` and reads the whole response; returns when it ended and its size.
async fn exchange(mut s: TcpStream, request: Vec<u8>) -> (Instant, usize) {
    s.write_all(&request).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    (Instant::now(), out.len())
}

fn get_request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes()
}

async fn fan_in() {
    let mut b = Bench::start().await;
    while b.next_frame < 90 {
        b.push_frame();
    }
    let (msn, part) = b.next_part();
    let path = format!("/hls/bench/live.m3u8?_HLS_msn={msn}&_HLS_part={part}");
    let mut streams = Vec::with_capacity(PLAYERS);
    for _ in 0..PLAYERS {
        streams.push(TcpStream::connect(b.addr).await.unwrap());
    }
    let tasks: Vec<_> =
        streams.into_iter().map(|s| tokio::spawn(exchange(s, get_request(b.addr, &path)))).collect();
    // Let every request arrive and park.
    tokio::time::sleep(Duration::from_secs(2)).await;
    while !b.push_frame() {}
    let ready = Instant::now();
    let mut origin = Vec::new();
    let mut size = 0;
    for t in tasks {
        let (done, n) = t.await.unwrap();
        origin.push(done - ready);
        size = n;
    }

    let bare = bare_fan_in(size).await;
    let (o50, o99) = (percentile(&mut origin, 0.50), percentile(&mut origin, 0.99));
    let (b50, b99) = (percentile(&mut bare.clone(), 0.50), percentile(&mut bare.clone(), 0.99));
    println!(
        "blocking reload fan-in, {PLAYERS} parked: part ready -> response p50 {:.1} ms, p99 {:.1} ms; \
         bare tokio p50 {:.1} ms, p99 {:.1} ms; p99 ratio {:.2}",
        ms(o50),
        ms(o99),
        ms(b50),
        ms(b99),
        o99.as_secs_f64() / b99.as_secs_f64()
    );
}

/// The baseline: parked connections woken by one channel, each writing `size` bytes.
async fn bare_fan_in(size: usize) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = rx.wait_for(|v| *v).await;
                let _ = s.write_all(&vec![b'x'; size]).await;
            });
        }
    });
    let mut streams = Vec::with_capacity(PLAYERS);
    for _ in 0..PLAYERS {
        streams.push(TcpStream::connect(addr).await.unwrap());
    }
    let tasks: Vec<_> =
        streams.into_iter().map(|s| tokio::spawn(exchange(s, get_request(addr, "/")))).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = Instant::now();
    tx.send(true).unwrap();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().0 - ready);
    }
    out
}

async fn ingest_to_part() {
    let mut b = Bench::start().await;
    let interval = Duration::from_secs(1) / 30;
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut waiting: Option<tokio::task::JoinHandle<(Instant, usize)>> = None;
    let mut previous_arrival = Instant::now();
    for n in 0..300u32 {
        tokio::time::sleep_until((start + interval * n).into()).await;
        let arrived = Instant::now();
        // A part closes when the frame after its last one arrives: its last frame is the
        // previous one.
        if b.push_frame()
            && let Some(task) = waiting.take()
        {
            let (done, _) = task.await.unwrap();
            samples.push(done - previous_arrival);
        }
        if waiting.is_none() && n > 30 {
            // A player parked on the preload hint, as hls.js is.
            let (msn, part) = b.next_part();
            let path = format!("/hls/bench/part-{msn}.{part}.m4s");
            let s = TcpStream::connect(b.addr).await.unwrap();
            waiting = Some(tokio::spawn(exchange(s, get_request(b.addr, &path))));
        }
        previous_arrival = arrived;
    }
    let (p50, p95) = (percentile(&mut samples, 0.50), percentile(&mut samples, 0.95));
    println!(
        "ingest to part ({} parts, 30 fps): last frame in -> part served p50 {:.1} ms, p95 {:.1} ms; \
         baseline one frame interval {:.1} ms; p50 ratio {:.2}",
        samples.len(),
        ms(p50),
        ms(p95),
        ms(interval),
        p50.as_secs_f64() / interval.as_secs_f64()
    );
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A directory removed when the bench ends.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "liveshop-media-bench-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

fn rand_suffix() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
