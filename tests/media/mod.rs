//! Helpers for the media tests: an origin in the test process, HTTP with headers and raw bytes,
//! a private network namespace for anything WebRTC, and the publishers: aiortc (`publish.py`) and
//! Chromium (`publish.spec.mjs` with `whip.html`).

#![allow(dead_code)] // each test file uses its own subset

pub mod apple;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liveshop_media_origin::events::{StreamEvent, StreamEvents};
use liveshop_media_origin::{Origin, OriginConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const SECRET: &[u8] = b"a media test secret of enough length";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("liveshop-media-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// WebRTC tests run inside a private network namespace with only loopback, so no packet can
/// leave the machine whatever a client library tries. Returns true inside it; outside, re-runs
/// `test` of this test binary there, asserts it passed and returns false.
pub fn in_private_network(test: &str) -> bool {
    if std::env::var_os("LIVESHOP_IN_NETNS").is_some() {
        return true;
    }
    if !Path::new("/usr/bin/unshare").exists() && !Path::new("/bin/unshare").exists() {
        eprintln!("SKIPPED {test}: needs unshare(1) (util-linux) for a private network namespace");
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    // aioice never offers 127.0.0.1 as a candidate; a second loopback address gives it one.
    let setup = "ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec \"$0\" \"$@\"";
    let status = Command::new("unshare")
        .args(["-n", "--", "sh", "-c", setup])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("LIVESHOP_IN_NETNS", "1")
        .status()
        .expect("unshare runs (as root, as CI does)");
    assert!(status.success(), "{test} failed inside its private network namespace");
    false
}

/// A tool the test needs: present, or a failure that says how to get it (`.ci/run` installs
/// all of them).
pub fn require(program: &str, check: &[&str], install: &str) {
    let ok = Command::new(program).args(check).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(ok.is_ok_and(|s| s.success()), "this test needs {program}: {install} (.ci/run does it)");
}

/// Stream events the origin reported, in order.
#[derive(Default)]
pub struct Recorded(pub Mutex<Vec<(String, StreamEvent)>>);

impl StreamEvents for Recorded {
    fn stream_event(&self, show: &str, event: StreamEvent) {
        self.0.lock().unwrap().push((show.to_string(), event));
    }
}

impl Recorded {
    pub fn kinds(&self) -> Vec<&'static str> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| match e {
                StreamEvent::Started { .. } => "started",
                StreamEvent::Health(_) => "health",
                StreamEvent::Ended { .. } => "ended",
            })
            .collect()
    }
}

pub struct TestOrigin {
    pub origin: Origin,
    pub http: SocketAddr,
    pub media: PathBuf,
    pub events: Arc<Recorded>,
}

impl TestOrigin {
    pub async fn start(name: &str, tweak: impl FnOnce(&mut OriginConfig)) -> TestOrigin {
        let media = temp_dir(name);
        let mut config = OriginConfig::new(media.clone());
        tweak(&mut config);
        let events = Arc::new(Recorded::default());
        let origin = Origin::start(config, SECRET, events.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let app = origin.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestOrigin { origin, http, media, events }
    }

    pub fn whip_url(&self, show: &str) -> String {
        format!("http://{}/whip/{show}", self.http)
    }

    pub async fn get(&self, path: &str) -> Response {
        request(self.http, "GET", path, &[], b"").await
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.media);
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
}

/// One HTTP/1.1 request on its own connection, with headers and raw body back.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await.unwrap().unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = out[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + n]);
        data = &data[eol + 4 + n..];
    }
    out
}

/// `tests/media/publish.py` (aiortc) publishing to `url`; killed when dropped.
pub struct Publisher {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Publisher {
    pub fn spawn(url: &str, token: &str, extra: &[&str]) -> Publisher {
        let mut command = Command::new("python3");
        // Options first, then `--`: a stream key may start with '-'.
        command.arg(root().join("tests/media/publish.py")).args(extra).arg("--").args([url, token]);
        Publisher::run(command)
    }

    /// `tests/media/publish.spec.mjs`: Debian's headless Chromium publishing its fake camera and
    /// microphone from `tests/media/whip.html`; same lines out (`LIVE`, `DONE`).
    pub fn chromium(url: &str, token: &str, extra: &[&str]) -> Publisher {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut command = Command::new("node");
        command
            .arg(root().join("tests/media/publish.spec.mjs"))
            .args([url, token])
            .args(extra)
            .env("BROWSER_DEPS", root().join("tests/browser"))
            .env("CHROMIUM", chromium);
        Publisher::run(command)
    }

    fn run(mut command: Command) -> Publisher {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("the publisher starts");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Publisher { child, lines }
    }

    /// Waits for a line starting with `prefix`; returns the rest.
    pub fn expect_line(&self, prefix: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line[prefix.len()..].trim().to_string(),
                Ok(line) => eprintln!("publisher: {line}"),
                Err(_) => panic!("the publisher did not print {prefix:?} within {within:?}"),
            }
        }
    }

    /// Stops it the hard way (no DELETE, no goodbye), like a crashed OBS.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn wait_success(&mut self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the publisher failed: {status}");
                return;
            }
            assert!(std::time::Instant::now() < deadline, "the publisher did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Lines of a playlist with a given tag prefix.
pub fn tags<'a>(playlist: &'a str, tag: &str) -> Vec<&'a str> {
    playlist.lines().filter(|l| l.starts_with(tag)).collect()
}

/// The numeric attribute `name` of a tag line (`DURATION=0.2` -> 0.2).
pub fn attr(line: &str, name: &str) -> Option<f64> {
    apple::attr(&apple::attrs(line), name)?.parse().ok()
}

/// A plain GET of `url` (`http://host:port/path`) from a test without a runtime: the body.
pub fn get_text(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let addr: SocketAddr = host.parse().expect("an address, not a name");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = runtime.block_on(request(addr, "GET", &format!("/{path}"), &[], b""));
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    r.text()
}

/// `ffmpeg -xerror` decodes every stream of `path` without one error.
pub fn assert_decodes(path: &Path) {
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(decode.status.success(), "{}", String::from_utf8_lossy(&decode.stderr));
}

/// ffprobe's `entries` (comma-separated) of the streams of `path`, or of the one `select`s
/// (`v`, `a`), frames counted.
pub fn ffprobe(path: &Path, select: Option<&str>, entries: &str) -> Vec<serde_json::Value> {
    let mut command = Command::new("ffprobe");
    command.args(["-v", "error", "-count_frames", "-of", "json"]);
    if let Some(stream) = select {
        command.args(["-select_streams", stream]);
    }
    let out = command.arg("-show_entries").arg(format!("stream={entries}")).arg(path).output().unwrap();
    assert!(out.status.success(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["streams"].as_array().cloned().unwrap_or_default()
}
