//! From `liveshop dev` to a playing viewer page: the node prints OBS settings, an aiortc
//! publisher uses them, and hls.js in headless Chromium (`tests/media/play.spec.mjs`) plays the
//! live stream for 10 s, then the recording after the end. Runs in a private network namespace.
//!
//! Needs what `media_live.rs` needs plus Node.js, Chromium, `npm ci` in tests/browser
//! (playwright-core) and in web/ (hls.js); `.ci/run` installs all of it.

mod common;
mod media;

use std::process::Command;
use std::time::Duration;

use media::Publisher;

#[test]
fn the_viewer_page_plays_an_obs_style_publish_live_and_then_as_a_replay() {
    if !media::in_private_network("the_viewer_page_plays_an_obs_style_publish_live_and_then_as_a_replay") {
        return;
    }
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
    assert!(std::path::Path::new(&chromium).exists(), "this test needs Chromium at {chromium}");

    let data = media::temp_dir("player");
    let (node, url, mut lines) = common::liveshop_dev(&data);
    let host_token = common::printed(&mut lines, "Host token:");
    // The OBS settings as printed: the server URL and the bearer token.
    let server = common::printed(&mut lines, "Server:");
    let token = common::printed(&mut lines, "Bearer Token:");
    assert_eq!(server, format!("{url}/whip/demo"));
    std::thread::spawn(move || for _ in lines {});

    // The dashboard's view of the room: the origin's stream.* events, relayed.
    let stream_events = room_stream_events(format!(
        "{}/v1/rooms/demo/ws?token={host_token}",
        url.replace("http://", "ws://")
    ));

    let publisher = Publisher::spawn(&server, &token, &["--seconds", "18"]);
    publisher.expect_line("LIVE ", Duration::from_secs(20));

    let out = Command::new("node")
        .arg(root.join("tests/media/play.spec.mjs"))
        .env("LIVESHOP_URL", &url)
        .env("BROWSER_DEPS", root.join("tests/browser"))
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the player test failed");
    assert!(stdout.contains("LATENCY p50_ms=") && stdout.contains("VOD replay plays"));
    let mut seen = Vec::new();
    while !seen.contains(&"stream.ended".to_string()) {
        let event =
            stream_events.recv_timeout(Duration::from_secs(10)).expect("the room relays stream.ended");
        seen.push(event["type"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.first().map(String::as_str), Some("stream.started"), "{seen:?}");
    assert!(seen.contains(&"stream.health".to_string()), "{seen:?}");
    drop(node);
    let _ = std::fs::remove_dir_all(&data);
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
