//! A caching proxy in front of a node, as a CDN edge would be: the public feed cached and
//! collapsed, every other route passed through uncached with the client's address in
//! `X-Forwarded-For`. Two of them, as Debian ships them: nginx (`proxy_cache_lock`) and Varnish
//! (its waiting list).
//!
//! `liveshop bench feed` and `tests/feed_cdn.rs` (which includes this file by path: the package
//! has no library) both run them with [`nginx_config`] and [`varnish_vcl`], so the settings
//! `docs/cdn.md` recommends are the ones measured and tested. Std only, for that reason.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a cache to listen (Varnish compiles its VCL with the C compiler first).
const START_LIMIT: Duration = Duration::from_secs(30);

/// Which caching proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Varnish,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Varnish => "Varnish",
        }
    }

    /// The Debian package that installs it.
    pub fn package(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx-light",
            Kind::Varnish => "varnish",
        }
    }

    /// Its binary: on `PATH`, else in Debian's `/usr/sbin` (not on a non-root `PATH`).
    pub fn find(self) -> Option<PathBuf> {
        let name = match self {
            Kind::Nginx => "nginx",
            Kind::Varnish => "varnishd",
        };
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(name));
        on_path.chain([Path::new("/usr/sbin").join(name)]).find(|p| p.is_file())
    }
}

/// The feed's and the heartbeat's `location`s (what `docs/cdn.md` shows), for an
/// `upstream liveshop` and a `proxy_cache_path ... keys_zone=feed:...`.
pub const NGINX_LOCATIONS: &str = r#"
        # The public feed: cached as the node's Cache-Control says (max-age=1 for the snapshot,
        # 2 after a position), keyed by the whole URL with its query (after=E-S&wait=K), and
        # collapsed: one request per URL reaches the node while the rest wait for its answer.
        # A replay's timeline the same way (10 s once the show ended; never while live).
        location ~ ^/v1/rooms/[^/]+/(feed|timeline)$ {
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
pub fn nginx_config(dir: &Path, listen: SocketAddr, origin: SocketAddr, connections: usize) -> String {
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
{NGINX_LOCATIONS}    }}
}}
"#
    )
}

/// The whole VCL for Varnish in front of `origin` (what `docs/cdn.md` shows).
pub fn varnish_vcl(origin: SocketAddr) -> String {
    let (host, port) = (origin.ip(), origin.port());
    format!(
        r#"vcl 4.1;

backend liveshop {{
    .host = "{host}";
    .port = "{port}";
    # A feed request waits up to 7.5 s for something new.
    .first_byte_timeout = 15s;
}}

sub vcl_recv {{
    # WebSockets go straight through.
    if (req.http.Upgrade ~ "(?i)websocket") {{
        return (pipe);
    }}
    # The public feed: one answer for every viewer, whatever cookies they carry, so cached and
    # collapsed (Varnish's waiting list: the rest wait for the one request at the node and are
    # woken when its answer lands). The URL with its query (after=E-S&wait=K) is the key.
    # A replay's timeline likewise (cached 10 s once the show ended; never while live).
    if (req.method == "GET" && req.url ~ "^/v1/rooms/[^/?]+/(feed|timeline)(\?|$)") {{
        unset req.http.Cookie;
        unset req.http.Authorization;
        return (hash);
    }}
    # Heartbeats and everything else: never cached. Varnish adds the client to X-Forwarded-For.
    return (pass);
}}

sub vcl_pipe {{
    if (req.http.Upgrade) {{
        set bereq.http.Upgrade = req.http.Upgrade;
        set bereq.http.Connection = req.http.Connection;
    }}
}}

sub vcl_backend_response {{
    # Refusals carry no Cache-Control: never cache them (Varnish would keep a 404 for 2 minutes).
    # Nor a live timeline (no-cache), and without the 2 minutes of hit-for-miss Varnish would
    # give it: the show's end must be collapsed at once.
    if (!beresp.http.Cache-Control || beresp.http.Cache-Control ~ "no-cache") {{
        set beresp.uncacheable = true;
        set beresp.ttl = 0s;
        return (deliver);
    }}
}}
"#
    )
}

/// A caching proxy running from its own directory; killed (with its workers) when dropped.
pub struct Cache {
    pub addr: SocketAddr,
    child: Child,
}

impl Cache {
    /// Writes the configuration into `dir` and starts `bin` (a `kind`) in the foreground on a
    /// free loopback port, with room for `connections` clients. Started by root, the proxies'
    /// workers drop to an unprivileged user: `dir`'s parents must let them through.
    pub fn start(
        kind: Kind,
        bin: &Path,
        dir: &Path,
        origin: SocketAddr,
        connections: usize,
    ) -> io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = Command::new(bin);
        let log = dir.join("error.log");
        match kind {
            Kind::Nginx => {
                let conf = dir.join("nginx.conf");
                std::fs::write(&conf, nginx_config(dir, addr, origin, connections))?;
                command.arg("-p").arg(dir).arg("-c").arg(&conf).args(["-g", "daemon off;"]);
                command.stderr(Stdio::null());
            }
            Kind::Varnish => {
                let vcl = dir.join("feed.vcl");
                std::fs::write(&vcl, varnish_vcl(origin))?;
                command
                    .arg("-F")
                    .arg("-n")
                    .arg(dir.join("work"))
                    .arg("-a")
                    .arg(addr.to_string())
                    .arg("-f")
                    .arg(&vcl)
                    .args(["-s", "malloc,256m"])
                    // Parked feed requests are on the waiting list, not on threads; a wake-up
                    // serves many at once, so allow threads for them.
                    .args(["-p", &format!("thread_pool_max={}", connections.clamp(1000, 20_000))]);
                command.stderr(std::fs::File::create(&log)?);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its own process group, so dropping it ends the workers with the master.
            .process_group(0)
            .spawn()?;
        let mut cache = Cache { addr, child };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if cache.child.try_wait()?.is_some() || started.elapsed() > START_LIMIT {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(io::Error::other(format!("{} did not start on {addr}: {log}", kind.name())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(cache)
    }

    /// The master's process id, which is also its process group's.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: plain FFI call; the group is the one this child leads.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
