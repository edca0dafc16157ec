//! The AAC-LC rendition, end to end: an aiortc publisher (Opus audio) whose audio beeps on the
//! white video frame of every whole second streams for a minute; the origin offers the video
//! with its Opus and with AAC-LC transcoded from it, as two variants. Checked here:
//! - every playlist, live and recorded, against the rules of Apple's HLS authoring specification
//!   and LL-HLS that a test can check (`tests/media/apple.rs`, listed in `docs/playback.md`),
//!   `BANDWIDTH` against the segments' measured bit rates, the variants' segments aligned;
//! - ffprobe decodes AAC-LC, 48 kHz stereo, from the AAC init segment and one part;
//! - `ffmpeg -xerror` decodes the whole minute of the AAC recording without an error;
//! - A/V sync: beep onsets against white frames, in the AAC recording and in the Opus one (the
//!   baseline: what the publisher's own timing gives), printed as `AV_SYNC`.
//!
//! Runs in a private network namespace. Needs what `media_live.rs` needs.
//! `LIVESHOP_AAC_SECONDS=600 cargo test --release --test media_aac -- --nocapture` streams for ten
//! minutes instead of one.

mod media;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use media::apple::{self, Media};
use media::{Publisher, TestOrigin};

/// How long the publisher streams: a minute and the start-up, or `LIVESHOP_AAC_SECONDS` for a
/// long run that shows drift.
fn seconds() -> u64 {
    std::env::var("LIVESHOP_AAC_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_aac_keeps_apples_rules_decodes_cleanly_and_stays_in_sync() {
    if !media::in_private_network("a_minute_of_aac_keeps_apples_rules_decodes_cleanly_and_stays_in_sync") {
        return;
    }
    media::require("python3", &["-c", "import aiortc"], "pip install aiortc");
    media::require("ffmpeg", &["-version"], "apt-get install ffmpeg");
    let o = TestOrigin::start("aac", |_| {}).await;
    let seconds = seconds().to_string();
    let mut publisher = Publisher::spawn(
        &o.whip_url("demo"),
        &o.origin.stream_key("demo"),
        &["--seconds", &seconds, "--beep"],
    );
    publisher.expect_line("LIVE ", Duration::from_secs(20));

    // Live, a few segments in: the multivariant playlist (it waits for a whole segment to
    // measure) and both media playlists.
    for msn in 1..=5 {
        let r = o.get(&format!("/hls/demo/live.m3u8?_HLS_msn={msn}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let master = o.get("/hls/demo/master.m3u8").await.text();
    let broken = apple::check_multivariant(&master);
    assert!(broken.is_empty(), "{broken:#?}\n{master}");
    let variants = apple::variants(&master);
    let codecs: Vec<_> = variants.iter().map(|v| (v.uri.as_str(), v.audio_codec().unwrap())).collect();
    assert_eq!(codecs, [("aac-live.m3u8", "mp4a.40.2"), ("live.m3u8", "opus")], "AAC first, then Opus");
    let mut live = Vec::new();
    for v in &variants {
        let text = o.get(&format!("/hls/demo/{}?_HLS_msn=5", v.uri)).await.text();
        let (m, broken) = apple::check_media(&text, true);
        assert!(broken.is_empty(), "{}: {broken:#?}\n{text}", v.uri);
        live.push((v.uri.clone(), m, text));
    }
    let pairs: Vec<(&str, &Media)> = live.iter().map(|(u, m, _)| (u.as_str(), m)).collect();
    let broken = apple::check_aligned(&pairs, true);
    assert!(broken.is_empty(), "{broken:#?}");
    // The parts line up too: the same list of durations in both.
    let part_lines = |t: &str| {
        t.lines().filter(|l| l.starts_with("#EXT-X-PART:")).map(|l| l.replace("aac-", "")).collect::<Vec<_>>()
    };
    let (aac_parts, opus_parts) = (part_lines(&live[0].2), part_lines(&live[1].2));
    let n = aac_parts.len().min(opus_parts.len());
    assert!(n > 10 && aac_parts[..n] == opus_parts[..n], "{aac_parts:#?}\n{opus_parts:#?}");

    // ffprobe: the AAC init segment and one part are AAC-LC at 48 kHz, stereo.
    let part = live[0].2.lines().find(|l| l.starts_with("#EXT-X-PART:")).unwrap();
    let uri = apple::attr(&apple::attrs(part), "URI").unwrap().to_string();
    assert!(uri.starts_with("aac-part-"), "{uri}");
    let mut file = o.get("/hls/demo/aac-init-0.mp4").await.body;
    file.extend(o.get(&format!("/hls/demo/{uri}")).await.body);
    let probe_path = o.media.join("aac-part.mp4");
    std::fs::write(&probe_path, &file).unwrap();
    let audio = probe(&probe_path, "a", "codec_name,profile,sample_rate,channels,nb_read_frames");
    assert_eq!(audio["codec_name"], "aac", "{audio}");
    assert_eq!(audio["profile"], "LC", "{audio}");
    assert_eq!((audio["sample_rate"].as_str(), audio["channels"].as_u64()), (Some("48000"), Some(2)));
    let frames: u64 = audio["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert!(frames >= 5, "{frames} AAC frames in a part of about 200 ms");

    // The end: both recordings final on disk.
    publisher.expect_line("DONE", Duration::from_secs(self::seconds() + 30));
    publisher.wait_success(Duration::from_secs(10));
    let dir = o.media.join("demo");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(dir.join("aac-live.m3u8")).is_ok_and(|t| t.contains("ENDLIST")) {
        assert!(Instant::now() < deadline, "the AAC recording never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the writer thread
    let master = std::fs::read_to_string(dir.join("master.m3u8")).unwrap();
    let broken = apple::check_multivariant(&master);
    assert!(broken.is_empty(), "{broken:#?}\n{master}");
    let mut recorded = Vec::new();
    for v in apple::variants(&master) {
        let text = std::fs::read_to_string(dir.join(&v.uri)).unwrap();
        let (m, broken) = apple::check_media(&text, false);
        assert!(broken.is_empty(), "{}: {broken:#?}\n{text}", v.uri);
        let sizes: Vec<(usize, f64)> = m
            .segments
            .iter()
            .map(|s| (std::fs::metadata(dir.join(&s.uri)).unwrap().len() as usize, s.duration))
            .collect();
        let broken = apple::check_bandwidth(&v, &sizes);
        assert!(broken.is_empty(), "{broken:#?}\n{master}");
        recorded.push((v.uri.clone(), m));
    }
    let pairs: Vec<(&str, &Media)> = recorded.iter().map(|(u, m)| (u.as_str(), m)).collect();
    assert!(apple::check_aligned(&pairs, true).is_empty());

    // The whole AAC recording decodes without one error, and lasts as long as the publish.
    let aac_file = concat(&dir, "aac-", &recorded[0].1, &o.media.join("aac.mp4"));
    let opus_file = concat(&dir, "", &recorded[1].1, &o.media.join("opus.mp4"));
    media::assert_decodes(&aac_file);
    let length: f64 = recorded[0].1.segments.iter().map(|s| s.duration).sum();
    let expected = (self::seconds() - 6) as f64; // the publisher's start-up
    assert!(length >= expected, "{length} s recorded");

    // A/V sync: each white frame against the beep nearest it.
    let aac = offsets(&aac_file);
    let opus = offsets(&opus_file);
    let summary = |o: &[(f64, f64)]| {
        let ms: Vec<f64> = o.iter().map(|x| x.1 * 1000.0).collect();
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        let (lo, hi) = ms.iter().fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        let tenth = (ms.len() / 6).max(1);
        let first: f64 = ms[..tenth].iter().sum::<f64>() / tenth as f64;
        let last: f64 = ms[ms.len() - tenth..].iter().sum::<f64>() / tenth as f64;
        (mean, lo, hi, last - first)
    };
    let (a, p) = (summary(&aac), summary(&opus));
    println!(
        "AV_SYNC aac: {} beeps, audio {:+.1} ms after video (min {:+.1}, max {:+.1}, drift {:+.1} ms from the first sixth to the last); \
         opus baseline: {} beeps, {:+.1} ms (min {:+.1}, max {:+.1}, drift {:+.1}); aac - opus {:+.1} ms",
        aac.len(),
        a.0,
        a.1,
        a.2,
        a.3,
        opus.len(),
        p.0,
        p.1,
        p.2,
        p.3,
        a.0 - p.0
    );
    assert!(
        aac.len() as f64 >= expected - 3.0,
        "{} beeps matched to white frames in the AAC recording",
        aac.len()
    );
    assert!((a.0 - p.0).abs() <= 20.0, "AAC is {:.1} ms off the Opus it was made of", a.0 - p.0);
    assert!(a.2 - a.1 <= 20.0 && a.3.abs() <= 20.0, "the AAC offset wanders: {a:?}");

    // The transcoder kept up: nothing dropped, and it counted its frames.
    let mut metrics = String::new();
    o.origin.encode_metrics(&mut metrics);
    assert!(metrics.contains("liveshop_media_aac_dropped_packets_total 0\n"), "{metrics}");
    let frames = metrics.lines().find_map(|l| l.strip_prefix("liveshop_media_aac_frames_total ")).unwrap();
    assert!(frames.parse::<f64>().unwrap() >= expected * 46.0, "{metrics}");
}

/// One stream's entries (`v` or `a`) from ffprobe, frames counted.
fn probe(path: &Path, stream: &str, entries: &str) -> serde_json::Value {
    media::ffprobe(path, Some(stream), entries).swap_remove(0)
}

/// The recording of one rendition as one file: its init segment and every segment.
fn concat(dir: &Path, prefix: &str, m: &Media, to: &Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(dir.join(format!("{prefix}init-0.mp4"))).unwrap();
    for s in &m.segments {
        bytes.extend(std::fs::read(dir.join(&s.uri)).unwrap());
    }
    std::fs::write(to, bytes).unwrap();
    to.to_path_buf()
}

/// (time of a white frame, beep onset minus that time) for every white frame with a beep
/// within half a second, in seconds of the file's own timeline.
fn offsets(file: &Path) -> Vec<(f64, f64)> {
    // Video: each frame's time and mean luma.
    let stats = file.with_extension("luma");
    let filter =
        format!("signalstats,metadata=mode=print:key=lavfi.signalstats.YAVG:file={}", stats.display());
    let run = Command::new("ffmpeg")
        .args(["-v", "error", "-copyts", "-i"])
        .arg(file)
        .args(["-map", "0:v", "-vf", &filter, "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&stats).unwrap();
    let mut white = Vec::new();
    let mut time = 0.0;
    for line in text.lines() {
        if let Some(t) = line.split("pts_time:").nth(1) {
            time = t.trim().parse().unwrap();
        } else if let Some(y) = line.strip_prefix("lavfi.signalstats.YAVG=")
            && y.parse::<f64>().unwrap() > 180.0
        {
            white.push(time);
        }
    }
    // Audio: mono samples from the stream's own start time.
    let start: f64 = probe(file, "a", "start_time")["start_time"].as_str().unwrap().parse().unwrap();
    let pcm = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-map", "0:a", "-ac", "1", "-ar", "48000", "-f", "s16le", "-"])
        .output()
        .unwrap();
    assert!(pcm.status.success(), "{}", String::from_utf8_lossy(&pcm.stderr));
    let samples: Vec<i16> = pcm.stdout.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let mut onsets = Vec::new();
    let mut last = i64::MIN / 2;
    for (i, s) in samples.iter().enumerate() {
        if s.unsigned_abs() > 3000 && i as i64 - last > 24_000 {
            onsets.push(start + i as f64 / 48_000.0);
        }
        if s.unsigned_abs() > 3000 {
            last = i as i64;
        }
    }
    white
        .iter()
        .filter_map(|&w| {
            let beep = onsets.iter().copied().min_by(|a, b| (a - w).abs().total_cmp(&(b - w).abs()))?;
            ((beep - w).abs() < 0.5).then_some((w, beep - w))
        })
        .collect()
}
