//! Real publishers into the origin: aiortc (`tests/media/publish.py`, sending H.264 the way OBS
//! does: High profile under a 42e01f offer, AUDs, four slices per frame, SPS/PPS repeated) over
//! WHIP, inside a private network namespace. The playlists are checked against the LL-HLS rules
//! and `ffprobe` decodes what the origin wrote.
//!
//! Chromium publishes too: `tests/media/whip.html` in Debian's headless Chromium (fake camera
//! and microphone, H.264 preferred) through `tests/media/publish.spec.mjs`. Its encoder, like
//! `publish.py --keyframe-on-request`, sends keyframes only when asked: the origin's keyframe
//! requests are what make its segments start on keyframes.
//!
//! Needs python3 with aiortc (`pip install aiortc`), ffprobe (`apt-get install ffmpeg`) and
//! unshare, and for the Chromium test Node.js, Chromium and `npm ci` in tests/browser;
//! `.ci/run` installs them.

mod media;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use liveshop_media_origin::events::StreamEvent;
use liveshop_media_origin::playlist::iso8601;
use media::{Publisher, TestOrigin, attr, request, tags};

fn require_tools() {
    media::require("python3", &["-c", "import aiortc"], "pip install aiortc");
    media::require("ffprobe", &["-version"], "apt-get install ffmpeg");
}

/// Polls until the playlist satisfies `done`.
async fn playlist_until(o: &TestOrigin, show: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let r = o.get(&format!("/hls/{show}/live.m3u8")).await;
        if r.status == 200 && done(&r.text()) {
            return r.text();
        }
        assert!(Instant::now() < deadline, "playlist never got there: {}", r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The LL-HLS rules every live playlist must keep (`tests/media/apple.rs`), and our own hold-back
/// of three part targets.
fn check_live_rules(text: &str) {
    let (_, broken) = media::apple::check_media(text, true);
    assert!(broken.is_empty(), "{broken:#?}\n{text}");
    let control = tags(text, "#EXT-X-SERVER-CONTROL")[0];
    let part_target = attr(tags(text, "#EXT-X-PART-INF")[0], "PART-TARGET").unwrap();
    assert!(attr(control, "PART-HOLD-BACK").unwrap() >= 3.0 * part_target - 1e-9, "{control}");
}

/// The recording's segments (from the VOD playlist on disk) and, for each, whether it starts
/// with a keyframe: ffprobe on init + segment, its first video packet's flags.
fn segments_starting_on_keyframes(o: &TestOrigin, show: &str) -> Vec<(String, bool)> {
    let dir = o.media.join(show);
    let vod = std::fs::read_to_string(dir.join("live.m3u8")).unwrap();
    assert!(vod.ends_with("#EXT-X-ENDLIST\n") && !vod.contains("init-1.mp4"), "{vod}");
    let init = std::fs::read(dir.join("init-0.mp4")).unwrap();
    let probe_path = o.media.join(format!("{show}-keyframe.mp4"));
    let mut out = Vec::new();
    for segment in vod.lines().filter(|l| l.starts_with("seg-")) {
        std::fs::write(&probe_path, [init.clone(), std::fs::read(dir.join(segment)).unwrap()].concat())
            .unwrap();
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1"])
            .args(["-show_entries", "packet=flags", "-of", "csv=p=0"])
            .arg(&probe_path)
            .output()
            .unwrap();
        assert!(probe.status.success(), "ffprobe: {}", String::from_utf8_lossy(&probe.stderr));
        let flags = String::from_utf8_lossy(&probe.stdout);
        out.push((segment.to_string(), flags.trim_start().starts_with('K')));
    }
    out
}

/// The keyframe intervals `show`'s `stream.health` events reported, and their warnings.
fn health(o: &TestOrigin, show: &str) -> Vec<(Option<u32>, Vec<String>)> {
    let events = o.events.0.lock().unwrap();
    events
        .iter()
        .filter_map(|(s, e)| match e {
            StreamEvent::Health(h) if s == show => Some((h.keyframe_interval_ms, h.warnings.clone())),
            _ => None,
        })
        .collect()
}

fn ffprobe(path: &std::path::Path) -> Vec<serde_json::Value> {
    media::ffprobe(path, None, "codec_name,profile,width,height,channels,nb_read_frames")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aiortc_publisher_goes_live_in_low_latency_hls_that_ffprobe_decodes() {
    if !media::in_private_network("an_aiortc_publisher_goes_live_in_low_latency_hls_that_ffprobe_decodes") {
        return;
    }
    require_tools();
    let o = TestOrigin::start("live", |_| {}).await;
    let publisher = Publisher::spawn(&o.whip_url("demo"), &o.origin.stream_key("demo"), &["--seconds", "9"]);
    let location = publisher.expect_line("LIVE ", Duration::from_secs(20));
    assert!(location.starts_with("/whip/demo/"));

    // Blocking reload: ask for a part that does not exist yet; the answer comes when it does.
    let asked = Instant::now();
    let r = o.get("/hls/demo/live.m3u8?_HLS_msn=2&_HLS_part=2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(asked.elapsed() > Duration::from_millis(500), "answered before the part could exist");
    let text = r.text();
    assert!(text.contains("URI=\"part-2.2.m4s\""), "{text}");
    assert!(r.header("cache-control").unwrap().starts_with("public, max-age="));
    assert_eq!(r.header("content-type"), Some("application/vnd.apple.mpegurl"));
    check_live_rules(&text);
    // PROGRAM-DATE-TIME is the publisher's capture clock (its RTCP sender reports), which here
    // is this machine's clock: within seconds of now. (ISO 8601 UTC strings sort as times.)
    let pdt = &tags(&text, "#EXT-X-PROGRAM-DATE-TIME:")[0]["#EXT-X-PROGRAM-DATE-TIME:".len()..];
    let (now, slack) = (SystemTime::now(), Duration::from_secs(15));
    assert!(pdt > iso8601(now - slack).as_str() && pdt < iso8601(now).as_str(), "{pdt}");

    // The preload hint: its request waits for the part and gets it.
    let hint = text.lines().find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=")).unwrap();
    let hint = hint.trim_matches('"');
    let part = o.get(&format!("/hls/demo/{hint}")).await;
    assert_eq!(part.status, 200);
    assert_eq!(&part.body[4..8], b"moof");
    assert_eq!(part.header("cache-control"), Some("public, max-age=31536000, immutable"));

    // Too far ahead: 400 at once.
    let far = o.get("/hls/demo/live.m3u8?_HLS_msn=40").await;
    assert_eq!(far.status, 400);
    assert_eq!(far.json()["error"]["code"], "bad_request");

    // A plain reload is not cached; gzip when asked.
    let plain = o.get("/hls/demo/live.m3u8").await;
    assert_eq!(plain.header("cache-control"), Some("no-cache"));
    let gz = request(o.http, "GET", "/hls/demo/live.m3u8", &[("Accept-Encoding", "gzip")], b"").await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut unzipped = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut unzipped).unwrap();
    check_live_rules(&unzipped);

    // The multivariant playlist has the codec the encoder really uses (High, from the SPS),
    // not the 42e01f of the offer.
    let master = o.get("/hls/demo/master.m3u8").await.text();
    let inf = tags(&master, "#EXT-X-STREAM-INF:").into_iter().find(|l| l.contains("opus")).unwrap();
    assert!(inf.contains("CODECS=\"avc1.64"), "{inf}");
    assert!(inf.contains(",opus\""), "{inf}");
    assert!(inf.contains("RESOLUTION=640x360"), "{inf}");

    // The end: DELETE gives ENDLIST, and the recording stays on disk as VOD.
    let mut publisher = publisher;
    publisher.expect_line("DONE", Duration::from_secs(20));
    publisher.wait_success(Duration::from_secs(10));
    let text = playlist_until(&o, "demo", Duration::from_secs(5), |t| t.contains("#EXT-X-ENDLIST")).await;
    assert!(!text.contains("PRELOAD-HINT"));
    tokio::time::sleep(Duration::from_millis(300)).await; // the writer thread
    let vod = std::fs::read_to_string(o.media.join("demo/live.m3u8")).unwrap();
    assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.ends_with("#EXT-X-ENDLIST\n"), "{vod}");
    let segments: Vec<&str> = vod.lines().filter(|l| l.starts_with("seg-")).collect();
    assert!(segments.len() >= 3, "{vod}");

    // ffprobe: init + one whole 2 s segment from HTTP is High-profile H.264 at 640x360, 60
    // frames, and Opus.
    let mut file = o.get("/hls/demo/init-0.mp4").await.body;
    file.extend(o.get("/hls/demo/seg-2.m4s").await.body);
    let probe_path = o.media.join("probe.mp4");
    std::fs::write(&probe_path, &file).unwrap();
    let streams = ffprobe(&probe_path);
    let video = streams.iter().find(|s| s["codec_name"] == "h264").expect("an H.264 stream");
    assert_eq!(video["profile"], "High");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)));
    assert_eq!(video["nb_read_frames"], "60");
    let audio = streams.iter().find(|s| s["codec_name"] == "opus").expect("an Opus stream");
    let audio_frames: u64 = audio["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert!((95..=105).contains(&audio_frames), "{audio_frames} Opus frames in 2 s");
    // The whole recording decodes without an error.
    let mut whole = std::fs::read(o.media.join("demo/init-0.mp4")).unwrap();
    for s in &segments {
        whole.extend(std::fs::read(o.media.join("demo").join(s)).unwrap());
    }
    std::fs::write(&probe_path, &whole).unwrap();
    media::assert_decodes(&probe_path);

    let kinds = o.events.kinds();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"ended"));
    assert!(kinds.contains(&"health"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_publisher_ends_the_stream_and_its_return_continues_after_a_discontinuity() {
    if !media::in_private_network(
        "a_killed_publisher_ends_the_stream_and_its_return_continues_after_a_discontinuity",
    ) {
        return;
    }
    require_tools();
    // 1 s segments make the skip boundary (6 s) and the blocking limit (3 s) short.
    let o = TestOrigin::start("killed", |c| {
        c.ingest.packager.target_duration = 1;
        c.ingest.packager.segment_target = Duration::from_secs(1);
        c.ingest.silence_timeout = Duration::from_secs(5);
    })
    .await;
    let key = o.origin.stream_key("demo");
    let mut first = Publisher::spawn(&o.whip_url("demo"), &key, &["--seconds", "60"]);
    first.expect_line("LIVE ", Duration::from_secs(20));

    // Delta updates once there is more than the skip boundary.
    let full =
        playlist_until(&o, "demo", Duration::from_secs(20), |t| t.matches("#EXTINF").count() >= 9).await;
    let delta = o.get("/hls/demo/live.m3u8?_HLS_skip=YES").await.text();
    let skip = tags(&delta, "#EXT-X-SKIP:SKIPPED-SEGMENTS=");
    assert_eq!(skip.len(), 1, "{delta}");
    let skipped: usize = skip[0].rsplit('=').next().unwrap().parse().unwrap();
    assert!(skipped >= 2, "{delta}");
    assert!(!delta.contains("seg-1.m4s") && full.contains("seg-1.m4s"));
    check_live_rules(&delta);

    // Killed: no DELETE. A blocking request for the next part gets 503 after 3 target durations.
    first.kill();
    let now = o.get("/hls/demo/live.m3u8").await.text();
    let next = now.lines().find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-")).unwrap();
    let (msn, rest) = next.split_once('.').unwrap();
    let part: u32 = rest.split('.').next().unwrap().parse().unwrap();
    let wait = Instant::now();
    let r = o.get(&format!("/hls/demo/live.m3u8?_HLS_msn={msn}&_HLS_part={}", part + 2)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert!(wait.elapsed() >= Duration::from_millis(2900), "{:?}", wait.elapsed());

    // Silent past the timeout: ENDLIST.
    let ended = playlist_until(&o, "demo", Duration::from_secs(10), |t| t.contains("#EXT-X-ENDLIST")).await;
    let segments_before = ended.matches("#EXTINF").count();

    // The host comes back: same show, same playlist, after a discontinuity with a new init.
    let second = Publisher::spawn(&o.whip_url("demo"), &key, &["--seconds", "3"]);
    second.expect_line("LIVE ", Duration::from_secs(20));
    let resumed = playlist_until(&o, "demo", Duration::from_secs(10), |t| t.contains("init-1.mp4")).await;
    assert!(!resumed.contains("#EXT-X-ENDLIST"), "{resumed}");
    assert!(resumed.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n"), "{resumed}");
    check_live_rules(&resumed);
    second.expect_line("DONE", Duration::from_secs(20));
    let done = playlist_until(&o, "demo", Duration::from_secs(5), |t| t.contains("#EXT-X-ENDLIST")).await;
    assert!(done.matches("#EXTINF").count() > segments_before);
    let kinds: Vec<&str> = o.events.kinds().into_iter().filter(|k| *k != "health").collect();
    assert_eq!(kinds, ["started", "ended", "started", "ended"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_with_one_keyframe_are_asked_for_more_and_those_that_ignore_it_still_get_segments() {
    if !media::in_private_network(
        "publishers_with_one_keyframe_are_asked_for_more_and_those_that_ignore_it_still_get_segments",
    ) {
        return;
    }
    require_tools();
    let o = TestOrigin::start("keyframes", |_| {}).await;
    // Both send a keyframe only at the start; "browser" answers keyframe requests as a browser's
    // encoder does, "obs" ignores them as OBS does. At the same time, to save a publish's time.
    let seconds = ["--seconds", "9", "--keyint", "100000"];
    let browser = Publisher::spawn(
        &o.whip_url("browser"),
        &o.origin.stream_key("browser"),
        &[&seconds[..], &["--keyframe-on-request"]].concat(),
    );
    let obs = Publisher::spawn(&o.whip_url("obs"), &o.origin.stream_key("obs"), &seconds);
    for p in [&browser, &obs] {
        p.expect_line("LIVE ", Duration::from_secs(20));
    }
    let mut requests = Vec::new();
    for (show, p) in [("browser", &browser), ("obs", &obs)] {
        let n: u32 = p.expect_line("KEYFRAME REQUESTS ", Duration::from_secs(30)).parse().unwrap();
        p.expect_line("DONE", Duration::from_secs(10));
        let ended = playlist_until(&o, show, Duration::from_secs(5), |t| t.contains("#EXT-X-ENDLIST")).await;
        check_live_rules(&ended);
        requests.push(n);
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the writer thread

    // Asked once its segment outran the 2 s target, it answered at once: segments of about 2 s,
    // each starting on a keyframe.
    let browser = segments_starting_on_keyframes(&o, "browser");
    assert!(browser.len() >= 4, "{browser:?}");
    assert!(browser.iter().all(|(_, key)| *key), "{browser:?}");
    assert!(requests[0] >= 3, "{requests:?}");
    // Its keyframes, a little over 2 s apart, were the origin's doing: no advice to the host.
    let reports = health(&o, "browser");
    assert!(reports.iter().any(|(k, _)| k.is_some_and(|k| k > 2000)), "{reports:?}");
    assert!(reports.iter().all(|(_, w)| w.is_empty()), "{reports:?}");
    // Asked too but deaf to it: cut at the 4 s target duration, later segments without a
    // keyframe at their start; and the whole recording still decodes.
    let obs = segments_starting_on_keyframes(&o, "obs");
    assert!(requests[1] >= 2, "{requests:?}");
    assert_eq!(obs.iter().map(|(_, key)| *key).collect::<Vec<_>>()[..2], [true, false], "{obs:?}");
    let mut whole = std::fs::read(o.media.join("obs/init-0.mp4")).unwrap();
    for (s, _) in &obs {
        whole.extend(std::fs::read(o.media.join("obs").join(s)).unwrap());
    }
    let path = o.media.join("obs.mp4");
    std::fs::write(&path, &whole).unwrap();
    let decode = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(decode.status.success(), "{}", String::from_utf8_lossy(&decode.stderr));
}

/// Forwards UDP between one publisher and the origin, dropping one datagram in twenty each way
/// (the kernel here has no netem).
async fn lossy_relay(origin: SocketAddr) -> SocketAddr {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut a, mut b) = (vec![0u8; 2048], vec![0u8; 2048]);
        let mut publisher = None;
        let mut n: u64 = 0;
        loop {
            n += 1;
            // A fixed pattern, so every run loses the same share: every 20th datagram.
            let drop = n.is_multiple_of(20);
            tokio::select! {
                Ok((len, from)) = front.recv_from(&mut a) => {
                    publisher = Some(from);
                    if !drop { let _ = back.send_to(&a[..len], origin).await; }
                }
                Ok((len, _)) = back.recv_from(&mut b) => {
                    if let (Some(p), false) = (publisher, drop) { let _ = front.send_to(&b[..len], p).await; }
                }
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_and_five_percent_loss_do_not_stop_the_stream() {
    if !media::in_private_network("garbage_datagrams_and_five_percent_loss_do_not_stop_the_stream") {
        return;
    }
    require_tools();
    // The origin's socket is on 127.0.0.1:7711; its candidate is the relay in front of it.
    let udp: SocketAddr = "127.0.0.1:7711".parse().unwrap();
    let relay = lossy_relay(udp).await;
    let o = TestOrigin::start("lossy", |c| {
        c.ingest.udp = udp;
        c.ingest.public_addr = Some(relay);
    })
    .await;
    let publisher = Publisher::spawn(&o.whip_url("demo"), &o.origin.stream_key("demo"), &["--seconds", "8"]);
    publisher.expect_line("LIVE ", Duration::from_secs(20));
    playlist_until(&o, "demo", Duration::from_secs(15), |t| t.contains("part-2.0.m4s")).await;

    // Garbage straight at the origin's socket: random bytes, RTP and RTCP headers with unknown
    // SSRCs, STUN with a ufrag nobody has, DTLS records, empty datagrams.
    let noise = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x: u32 = 0x1234_5678;
    for i in 0..3000u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let body: Vec<u8> =
            (0..(x % 1200) as usize).map(|j| (x.rotate_left(j as u32 % 32) & 0xff) as u8).collect();
        let head: &[u8] = match i % 5 {
            0 => &[0x80, 0x66, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef],
            1 => &[0x81, 0xc8, 0, 6, 0xde, 0xad, 0xbe, 0xef],
            2 => &[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42],
            3 => &[0x16, 0xfe, 0xfd],
            _ => &[],
        };
        let datagram = if i % 5 == 4 { Vec::new() } else { [head, &body].concat() };
        let _ = noise.send_to(&datagram, udp).await;
    }

    // Parts keep coming after the garbage, through the loss, until the publisher ends.
    let text = o.get("/hls/demo/live.m3u8").await.text();
    let (msn, _) = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-"))
        .unwrap()
        .split_once('.')
        .unwrap();
    let later = format!("/hls/demo/live.m3u8?_HLS_msn={}&_HLS_part=0", msn.parse::<u64>().unwrap() + 1);
    let r = o.get(&later).await;
    assert_eq!(r.status, 200, "{}", r.text());
    publisher.expect_line("DONE", Duration::from_secs(20));
    let done = playlist_until(&o, "demo", Duration::from_secs(5), |t| t.contains("#EXT-X-ENDLIST")).await;
    assert!(done.matches("#EXTINF").count() >= 3, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chromium_web_page_publishes_h264_and_opus_that_ffprobe_decodes() {
    if !media::in_private_network("a_chromium_web_page_publishes_h264_and_opus_that_ffprobe_decodes") {
        return;
    }
    media::require("ffprobe", &["-version"], "apt-get install ffmpeg");
    media::require("node", &["--version"], "apt-get install nodejs npm");
    let deps = media::root().join("tests/browser/node_modules/playwright-core");
    assert!(deps.is_dir(), "this test needs npm ci in tests/browser (.ci/run does it)");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "this test needs Chromium at {chromium}");

    let o = TestOrigin::start("chromium", |_| {}).await;
    let mut publisher =
        Publisher::chromium(&o.whip_url("demo"), &o.origin.stream_key("demo"), &["--seconds", "8"]);
    let location = publisher.expect_line("LIVE ", Duration::from_secs(30));
    assert!(location.starts_with("/whip/demo/"), "{location}");

    // The playlist advances: from the first part, by a second's worth of parts (or a segment).
    let hint = |t: &str| -> Option<(u64, u64)> {
        let uri = t.lines().find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-"))?;
        let (msn, part) = uri.trim_end_matches(".m4s\"").split_once('.')?;
        Some((msn.parse().ok()?, part.parse().ok()?))
    };
    let first =
        playlist_until(&o, "demo", Duration::from_secs(15), |t| !tags(t, "#EXT-X-PART:").is_empty()).await;
    let (msn, part) = hint(&first).expect("a preload hint");
    playlist_until(&o, "demo", Duration::from_secs(10), |t| {
        hint(t).is_some_and(|(m, p)| m > msn || p >= part + 5)
    })
    .await;

    // What Chromium says it sent: H.264 (whatever its encoder) and Opus.
    let sending: serde_json::Value =
        serde_json::from_str(&publisher.expect_line("SENDING ", Duration::from_secs(20))).unwrap();
    println!("Chromium sent {sending}");
    let sent = |kind: &str| sending.as_array().unwrap().iter().find(|s| s["kind"] == kind).cloned();
    let video = sent("video").expect("a video stream");
    assert_eq!(video["codec"], "video/H264", "{sending}");
    publisher.expect_line("DONE", Duration::from_secs(20));
    publisher.wait_success(Duration::from_secs(15));
    let ended = playlist_until(&o, "demo", Duration::from_secs(5), |t| t.contains("#EXT-X-ENDLIST")).await;
    // Every part of the show is still listed (it is shorter than three target durations), and
    // each keeps the LL-HLS bounds at Chromium's 20 fps or so, with its capture clock's jitter.
    assert!(ended.contains("URI=\"part-1.0.m4s\""), "{ended}");
    check_live_rules(&ended);
    tokio::time::sleep(Duration::from_millis(300)).await; // the writer thread
    let vod = std::fs::read_to_string(o.media.join("demo/live.m3u8")).unwrap();
    assert!(vod.ends_with("#EXT-X-ENDLIST\n"), "{vod}");

    // Chromium's encoder sends a keyframe at the start and then only when asked: the origin
    // asked (PLI) when a segment outran its 2 s target, so every segment starts on one.
    let segments = segments_starting_on_keyframes(&o, "demo");
    assert!(segments.len() >= 3, "{segments:?}");
    assert!(segments.iter().all(|(_, key)| *key), "{segments:?} ({video})");
    assert!(video["pli"].as_u64().unwrap_or(0) + video["fir"].as_u64().unwrap_or(0) >= 1, "{video}");
    let reports = health(&o, "demo");
    assert!(reports.iter().all(|(_, w)| w.is_empty()), "{reports:?}");

    // ffprobe decodes init + the first segment, from HTTP: H.264 at the size asked for, and Opus
    // when the fake microphone's audio arrived.
    let first_segment = vod.lines().find(|l| l.starts_with("seg-")).expect("a segment");
    let mut file = o.get("/hls/demo/init-0.mp4").await.body;
    file.extend(o.get(&format!("/hls/demo/{first_segment}")).await.body);
    let probe_path = o.media.join("probe.mp4");
    std::fs::write(&probe_path, &file).unwrap();
    let streams = ffprobe(&probe_path);
    let video = streams.iter().find(|s| s["codec_name"] == "h264").expect("an H.264 stream");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)), "{video}");
    let frames: u64 = video["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert!(frames >= 10, "{frames} frames in {first_segment}");
    if sent("audio").is_some_and(|a| a["packets"].as_u64() > Some(0)) {
        let audio = streams.iter().find(|s| s["codec_name"] == "opus").expect("an Opus stream");
        assert!(audio["nb_read_frames"].as_str().unwrap().parse::<u64>().unwrap() > 0, "{audio}");
    }
    let kinds = o.events.kinds();
    assert_eq!((kinds.first(), kinds.last()), (Some(&"started"), Some(&"ended")), "{kinds:?}");
}
