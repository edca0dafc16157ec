//! The viewer page and the dashboard in a real browser: `liveshop dev` serves them, and
//! `tests/browser/show.spec.mjs` (the show), `commerce.spec.mjs` (buying in it),
//! `security.spec.mjs` (the pages under their Content-Security-Policy, which every spec's pages
//! must keep), `feed.spec.mjs` (a viewer who never names themselves, on the public feed) and
//! `analytics.spec.mjs` (the dashboard's live analytics and the report page) drive Debian's
//! Chromium through playwright-core.
//!
//! Needs Node.js, `npm ci` in `tests/browser` and Chromium (`.ci/run` installs both). Without
//! them the test fails with what to install, unless `LIVESHOP_SKIP_BROWSER=1` says to skip.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn a_viewer_chats_and_votes_and_sees_the_product_the_host_pins() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = dir.join("node_modules/playwright-core").is_dir() && Path::new(&chromium).exists();
    if !ready {
        if std::env::var("LIVESHOP_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("SKIPPED (LIVESHOP_SKIP_BROWSER=1): the browser test");
            return;
        }
        panic!(
            "the browser test needs Chromium at {chromium} (apt-get install chromium) and \
             `npm ci` in tests/browser; `.ci/run` does both. Set LIVESHOP_SKIP_BROWSER=1 to skip it."
        );
    }

    let data = common::temp_dir("browser");
    let (node, url, mut lines) = common::liveshop_dev(&data);
    let token = common::printed(&mut lines, "Host token:");
    std::thread::spawn(move || for _ in lines {});

    let status = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "show.spec.mjs",
            "commerce.spec.mjs",
            "security.spec.mjs",
            "feed.spec.mjs",
            "analytics.spec.mjs",
        ])
        .current_dir(&dir)
        .env("LIVESHOP_URL", &url)
        .env("LIVESHOP_HOST_TOKEN", &token)
        .env("CHROMIUM", &chromium)
        .status()
        .expect("node runs");
    drop(node);
    std::fs::remove_dir_all(&data).unwrap();
    assert!(status.success(), "the browser test failed; screenshots are in target/browser/");
}
