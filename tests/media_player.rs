//! From `liveshop dev` to a playing viewer page: the node prints OBS settings, an aiortc
//! publisher uses them, and hls.js in headless Chromium (`tests/media/play.spec.mjs`) plays the
//! live stream for 10 s (`LIVESHOP_PLAY_SECONDS`, for a long run that counts stalls), then the
//! recording after the end; the origin's signed stream events
//! reach the host's socket on the way. Without MediaSource, the page plays the stream with the
//! browser's own HLS (`tests/browser/native-hls.spec.mjs`), and a page whose MediaSource takes
//! no Opus plays the AAC variant through hls.js. A `liveshop origin` on its own port
//! tells the node about its stream the same way. Runs in a private network namespace.
//!
//! Needs what `media_live.rs` needs plus Node.js, Chromium, `npm ci` in tests/browser
//! (playwright-core) and in web/ (hls.js); `.ci/run` installs all of it.

mod common;
mod media;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use media::Publisher;

/// One live show at a time: two nodes, publishers and browsers at once starve each other on a
/// two-core CI machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A `liveshop dev` node whose demo show an aiortc publisher is streaming to, for `seconds`.
struct LiveShow {
    url: String,
    host_token: String,
    chromium: String,
    data: PathBuf,
    publisher: Publisher,
    node: Option<common::NodeProcess>,
}

impl LiveShow {
    fn start(name: &str, seconds: u32) -> LiveShow {
        Self::start_with(name, seconds, &[])
    }

    /// As `start`, with more of publish.py's flags.
    fn start_with(name: &str, seconds: u32, flags: &[&str]) -> LiveShow {
        media::require("python3", &["-c", "import aiortc"], "pip install aiortc");
        media::require("node", &["--version"], "apt-get install nodejs npm");
        let root = media::root();
        for (dir, what) in [
            ("tests/browser/node_modules/playwright-core", "npm ci in tests/browser"),
            ("web/node_modules/hls.js", "npm ci in web"),
        ] {
            assert!(root.join(dir).is_dir(), "this test needs {what} (.ci/run does it)");
        }
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(Path::new(&chromium).exists(), "this test needs Chromium at {chromium}");

        let data = media::temp_dir(name);
        let (node, url, mut lines) = common::liveshop_dev(&data);
        let host_token = common::printed(&mut lines, "Host token:");
        // The OBS settings as printed: the server URL and the bearer token.
        let server = common::printed(&mut lines, "Server:");
        let token = common::printed(&mut lines, "Bearer Token:");
        assert_eq!(server, format!("{url}/whip/demo"));
        std::thread::spawn(move || for _ in lines {});
        let seconds = seconds.to_string();
        let args: Vec<&str> =
            ["--seconds", seconds.as_str()].into_iter().chain(flags.iter().copied()).collect();
        let publisher = Publisher::spawn(&server, &token, &args);
        LiveShow { url, host_token, chromium, data, publisher, node: Some(node) }
    }

    /// Runs `node <args>` in `dir` (with `env`) against this node; its output, printed, when it
    /// passed.
    fn node_script(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = Command::new("node")
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .env("LIVESHOP_URL", &self.url)
            .env("BROWSER_DEPS", media::root().join("tests/browser"))
            .env("CHROMIUM", &self.chromium)
            .output()
            .expect("node runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "node {args:?} failed");
        stdout
    }

    /// Media parts and segments the origin served of `rendition` (`aac` or `as_sent`), from
    /// the node's `/metrics`.
    fn served(&self, rendition: &str) -> u64 {
        let text = media::get_text(&format!("{}/metrics", self.url));
        let name = format!("liveshop_media_hls_served_total{{rendition=\"{rendition}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&name)).map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for LiveShow {
    fn drop(&mut self) {
        drop(self.node.take());
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[test]
fn the_viewer_page_plays_an_obs_style_publish_live_and_then_as_a_replay() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !media::in_private_network("the_viewer_page_plays_an_obs_style_publish_live_and_then_as_a_replay") {
        return;
    }
    // The publisher outlasts the live phase by the time it takes the player to start, and more.
    let play: u32 = std::env::var("LIVESHOP_PLAY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let show = LiveShow::start("player", play + 8 + play / 50);
    // The dashboard's view of the room: the origin's stream.* events, posted signed to the
    // node and relayed by the room.
    let stream_events = room_stream_events(format!(
        "{}/v1/rooms/demo/ws?token={}",
        show.url.replace("http://", "ws://"),
        show.host_token
    ));
    show.publisher.expect_line("LIVE ", Duration::from_secs(20));

    let root = media::root();
    let play = root.join("tests/media/play.spec.mjs");
    let stdout = show.node_script(root, &[play.to_str().unwrap()], &[]);
    assert!(stdout.contains("LATENCY p50_ms=") && stdout.contains("STALLS count="));
    assert!(stdout.contains("VOD replay plays"));
    let mut seen = Vec::new();
    while !seen.contains(&"stream.ended".to_string()) {
        let event =
            stream_events.recv_timeout(Duration::from_secs(10)).expect("the room relays stream.ended");
        seen.push(event["type"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.first().map(String::as_str), Some("stream.started"), "{seen:?}");
    assert!(seen.contains(&"stream.health".to_string()), "{seen:?}");
}

/// Overlays in step with the video, and the shoppable replay (`tests/media/sync.spec.mjs`): a
/// publisher whose frames carry their capture time, 20 pins at known times, the card-to-frame
/// skew on three pages (hls.js, hls.js without sync: the skew before, the browser's own HLS),
/// then the replay: cards at their times, a seek from the product list, a purchase. The
/// publisher never sends its first second of video (`--late-start`), so the stream's media clock
/// does not start at 0, as when a first keyframe is lost: the browser's own HLS starts its
/// timeline at 0 all the same, and the page must map it from the playlist.
#[test]
fn overlays_wait_for_their_frame_and_the_replay_sells() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !media::in_private_network("overlays_wait_for_their_frame_and_the_replay_sells") {
        return;
    }
    let show = LiveShow::start_with("sync", 70, &["--clock", "--late-start"]);
    show.publisher.expect_line("LIVE ", Duration::from_secs(20));
    let root = media::root();
    let spec = root.join("tests/media/sync.spec.mjs");
    let stdout = show.node_script(
        root,
        &[spec.to_str().unwrap()],
        &[("LIVESHOP_HOST_TOKEN", show.host_token.as_str())],
    );
    assert!(stdout.contains("SKEW hls.js p50_ms="), "{stdout}");
    assert!(stdout.contains("REPLAY bought"), "{stdout}");
}

#[test]
fn without_media_source_the_viewer_page_plays_the_stream_natively() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !media::in_private_network("without_media_source_the_viewer_page_plays_the_stream_natively") {
        return;
    }
    let show = LiveShow::start("native", 60);
    show.publisher.expect_line("LIVE ", Duration::from_secs(20));
    let stdout =
        show.node_script(&media::root().join("tests/browser"), &["--test", "native-hls.spec.mjs"], &[]);
    assert!(stdout.contains("native HLS plays"), "{stdout}");
    // The browser's own player took the AAC variant (master-aac.m3u8), nothing of the Opus one.
    let (aac, opus) = (show.served("aac"), show.served("as_sent"));
    println!("native HLS fetched {aac} AAC and {opus} Opus parts and segments");
    assert!(aac > 0 && opus == 0, "AAC {aac}, Opus {opus}");
}

#[test]
fn a_browser_without_opus_plays_the_aac_variant_through_hls_js() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !media::in_private_network("a_browser_without_opus_plays_the_aac_variant_through_hls_js") {
        return;
    }
    let show = LiveShow::start("no-opus", 20);
    show.publisher.expect_line("LIVE ", Duration::from_secs(20));
    let root = media::root();
    let play = root.join("tests/media/play.spec.mjs");
    let env = [("LIVESHOP_NO_OPUS", "1"), ("LIVESHOP_PLAY_SECONDS", "6")];
    let stdout = show.node_script(root, &[play.to_str().unwrap()], &env);
    assert!(stdout.contains("AUDIO codec=mp4a.40.2 of [mp4a.40.2]"), "{stdout}");
    assert!(stdout.contains("VOD replay plays"));
    let (aac, opus) = (show.served("aac"), show.served("as_sent"));
    assert!(aac > 10 && opus == 0, "AAC {aac}, Opus {opus}");
}

#[test]
fn a_standalone_origin_posts_its_stream_events_to_the_node() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    if !media::in_private_network("a_standalone_origin_posts_its_stream_events_to_the_node") {
        return;
    }
    media::require("python3", &["-c", "import aiortc"], "pip install aiortc");
    let (data, origin_data) = (media::temp_dir("standalone-node"), media::temp_dir("standalone-origin"));
    let (node, url, mut lines) = common::liveshop_dev(&data);
    let host_token = common::printed(&mut lines, "Host token:");
    let key = common::printed(&mut lines, "Bearer Token:");
    std::thread::spawn(move || for _ in lines {});
    let stream_events = room_stream_events(format!(
        "{}/v1/rooms/demo/ws?token={host_token}",
        url.replace("http://", "ws://")
    ));

    // `liveshop origin` on a port of its own, sharing only the node's secret.
    let secret = std::fs::read_to_string(data.join("secret")).unwrap();
    let mut origin = Command::new(env!("CARGO_BIN_EXE_liveshop"))
        .args(["origin", "--edge", &url, "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&origin_data)
        .env("LIVESHOP_SECRET", secret.trim())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(origin.stdout.take().unwrap());
    let origin = common::NodeProcess(origin);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    let origin_url = first.split("listening on ").nth(1).and_then(|r| r.split(',').next()).expect(&first);

    let publisher = Publisher::spawn(&format!("{origin_url}/whip/demo"), &key, &["--seconds", "6"]);
    publisher.expect_line("LIVE ", Duration::from_secs(20));
    let mut seen = Vec::new();
    while !seen.contains(&"stream.ended".to_string()) {
        let event =
            stream_events.recv_timeout(Duration::from_secs(20)).expect("the node relays stream.ended");
        seen.push(event["type"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.first().map(String::as_str), Some("stream.started"), "{seen:?}");
    drop((origin, node));
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&origin_data);
}

/// The `stream.*` frames a room connection at `ws` receives, as they come.
fn room_stream_events(ws: String) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use futures_util::StreamExt;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let (mut socket, _) =
                tokio_tungstenite::connect_async(&ws).await.expect("the room accepts the host");
            while let Some(Ok(message)) = socket.next().await {
                let Ok(text) = message.to_text() else { continue };
                let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) else { continue };
                if frame["type"].as_str().is_some_and(|t| t.starts_with("stream.")) && tx.send(frame).is_err()
                {
                    return;
                }
            }
        });
    });
    rx
}
