//! The viewer page and the dashboard in a real browser: `liveshop dev` serves them, and
//! `tests/browser/show.spec.mjs` (the show), `commerce.spec.mjs` (buying in it),
//! `security.spec.mjs` (the pages under their Content-Security-Policy, which every spec's pages
//! must keep), `feed.spec.mjs` (a viewer who never names themselves, on the public feed) and
//! `analytics.spec.mjs` (the dashboard's live analytics and the report page) drive Debian's
//! Chromium through playwright-core.
//!
//! `on_spin_the_pages_run_the_show_without_websockets` runs `show.spec.mjs` against the Spin app,
//! which has no WebSockets: the pages follow the room over server-sent events and send commands
//! with `POST /commands` (`web/client.js`).
//!
//! Needs Node.js, `npm ci` in `tests/browser` and Chromium (`.ci/run` installs both). Without
//! them the test fails with what to install, unless `LIVESHOP_SKIP_BROWSER=1` says to skip.

mod common;
mod conformance;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/browser` and Chromium, or `None` when the browser test is to be skipped.
fn browser() -> Option<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = dir.join("node_modules/playwright-core").is_dir() && Path::new(&chromium).exists();
    if !ready {
        if std::env::var("LIVESHOP_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("SKIPPED (LIVESHOP_SKIP_BROWSER=1): the browser test");
            return None;
        }
        panic!(
            "the browser test needs Chromium at {chromium} (apt-get install chromium) and \
             `npm ci` in tests/browser; `.ci/run` does both. Set LIVESHOP_SKIP_BROWSER=1 to skip it."
        );
    }
    Some((dir, chromium))
}

/// Runs `specs` against the host at `url`, whose show `show` `token` hosts.
fn run_specs(specs: &[&str], url: &str, token: &str, show: &str) -> bool {
    let Some((dir, chromium)) = browser() else { return true };
    Command::new("node")
        .args(["--test", "--test-concurrency=1"])
        .args(specs)
        .current_dir(&dir)
        .env("LIVESHOP_URL", url)
        .env("LIVESHOP_HOST_TOKEN", token)
        .env("LIVESHOP_SHOW", show)
        .env("CHROMIUM", &chromium)
        .status()
        .expect("node runs")
        .success()
}

#[test]
fn a_viewer_chats_and_votes_and_sees_the_product_the_host_pins() {
    if browser().is_none() {
        return;
    }
    let data = common::temp_dir("browser");
    let (node, url, mut lines) = common::liveshop_dev(&data);
    let token = common::printed(&mut lines, "Host token:");
    std::thread::spawn(move || for _ in lines {});

    let specs =
        ["show.spec.mjs", "commerce.spec.mjs", "security.spec.mjs", "feed.spec.mjs", "analytics.spec.mjs"];
    let passed = run_specs(&specs, &url, &token, "demo");
    drop(node);
    std::fs::remove_dir_all(&data).unwrap();
    assert!(passed, "the browser test failed; screenshots are in target/browser/");
}

#[test]
fn on_spin_the_pages_run_the_show_without_websockets() {
    if browser().is_none() {
        return;
    }
    let addr = conformance::spin_host(&common::temp_dir("browser-spin"), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (show, token) = rt.block_on(async {
        let body = serde_json::json!({
            "id": "spin-show", "title": "On Spin",
            "products": [{"id": "mug", "title": "Enamel mug"}, {"id": "tee", "title": "Organic tee"}],
        });
        let api = conformance::Target::without_sockets(addr).api;
        let (status, created) =
            api.call("POST", "/v1/shows", &conformance::platform_host(), None, body).await;
        assert_eq!(status, 201, "{created}");
        (
            created["show"]["id"].as_str().unwrap().to_string(),
            created["host_token"].as_str().unwrap().to_string(),
        )
    });
    let passed = run_specs(&["show.spec.mjs"], &format!("http://{addr}"), &token, &show);
    assert!(passed, "the browser test on Spin failed; screenshots are in target/browser/");
}
