//! nginx in front of a node, as a CDN edge would be: the public feed cached and collapsed, every
//! other route passed through uncached with the client's address in `X-Forwarded-For`.
//!
//! `liveshop bench feed` and `tests/feed_cdn.rs` (which includes this file by path: the package
//! has no library) both run nginx with [`config`], so the settings `docs/cdn.md` recommends are
//! the ones measured and tested. Std only, for that reason.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for nginx to listen.
const START_LIMIT: Duration = Duration::from_secs(10);

/// The nginx binary: on `PATH`, else Debian's `/usr/sbin/nginx` (not on a non-root `PATH`).
pub fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"));
    on_path.chain([PathBuf::from("/usr/sbin/nginx")]).find(|p| p.is_file())
}

/// The feed's and the heartbeat's `location`s (what `docs/cdn.md` shows), for an
/// `upstream liveshop` and a `proxy_cache_path ... keys_zone=feed:...`.
pub const LOCATIONS: &str = r#"
        # The public feed: cached as the node's Cache-Control says (max-age=1 for the snapshot,
        # 2 after a position), keyed by the whole URL with its query (after=E-S&wait=K), and
        # collapsed: one request per URL reaches the node while the rest wait for its answer.
        location ~ ^/v1/rooms/[^/]+/feed$ {
            proxy_pass http://liveshop;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_cache feed;
            proxy_cache_key $scheme$proxy_host$request_uri;
            proxy_cache_lock on;
            # A feed request waits up to 7.5 s for something new: the lock must outlast it, or
            # the waiting viewers all go to the node (uncached) at once.
            proxy_cache_lock_timeout 10s;
            proxy_cache_lock_age 10s;
            proxy_read_timeout 15s;
        }

        # Heartbeats and everything else: never cached (POSTs are not), with the client's address.
        location / {
            proxy_pass http://liveshop;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
        }
"#;

/// A whole `nginx.conf`: `listen` in front of `origin`, every file nginx writes under `dir`,
/// room for `connections` client connections.
pub fn config(dir: &Path, listen: SocketAddr, origin: SocketAddr, connections: usize) -> String {
    let dir = dir.display();
    // Each client connection may hold an upstream one too, and files for the cache.
    let files = 2 * connections + 1024;
    format!(
        r#"worker_processes 1;
worker_rlimit_nofile {files};
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{
    worker_connections {files};
}}
http {{
    access_log off;
    # Viewers poll on one connection for the whole show (nginx closes one after 1,000 by default).
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=feed:10m max_size=256m inactive=1m use_temp_path=off;
    upstream liveshop {{
        server {origin};
        keepalive 64;
    }}
    # WebSocket upgrades pass through; other requests keep the upstream connection alive.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" "";
    }}
    server {{
        listen {listen};
{LOCATIONS}    }}
}}
"#
    )
}

/// nginx running from a config in its own directory; killed (with its workers) when dropped.
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
}

impl Nginx {
    /// Writes [`config`] into `dir` and starts `bin` in the foreground on a free loopback port.
    /// Started by root, nginx's workers run as `nobody`: `dir`'s parents must let them through.
    pub fn start(bin: &Path, dir: &Path, origin: SocketAddr, connections: usize) -> io::Result<Nginx> {
        std::fs::create_dir_all(dir)?;
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(dir, addr, origin, connections))?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so dropping it ends the workers with the master.
            .process_group(0)
            .spawn()?;
        let mut nginx = Nginx { addr, child };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if nginx.child.try_wait()?.is_some() || started.elapsed() > START_LIMIT {
                let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                return Err(io::Error::other(format!("nginx did not start on {addr}: {log}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// The master's process id, which is also its process group's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: plain FFI call; the group is the one this child leads.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
