//! `liveshop`: the one command a team runs. `liveshop dev` starts everything locally,
//! `liveshop edge` runs the edge node in production (with the media origin on its port),
//! `liveshop origin` runs a media origin alone, `liveshop token` mints tokens for scripts,
//! `liveshop bench` measures the node under load on this machine.

mod bench;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use liveshop_edge::node::Kind;
use liveshop_edge::shows::NewShow;
use liveshop_edge::{Edge, EdgeConfig};
use liveshop_identity::{Claims, Role};
use liveshop_media_origin::events::PostEvents;
use liveshop_media_origin::ingest::AudioRenditions;
use liveshop_media_origin::keys::{KeyVersions, Lookup, NodeKeyVersions};
use liveshop_media_origin::{Origin, OriginConfig};
use liveshop_room::protocol::Product;

/// Open, self-hostable live shopping: stream from OBS, chat, polls, Q&A and checkout in one page.
#[derive(Parser)]
#[command(name = "liveshop", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything, locally: the edge node with a demo show, on http://127.0.0.1:8080.
    ///
    /// No accounts and no setup: a secret and the database are made in the data directory on
    /// first run, and a restart keeps everything.
    Dev {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// The edge node for production: settings from a TOML file, the environment and flags
    /// (flags win, then the environment, then the file).
    Edge {
        /// A TOML file with any of the node's settings (see `docs/edge.md`).
        #[arg(long, env = "LIVESHOP_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// A media origin alone (WHIP in, LL-HLS out) on a machine of its own; the edge node at
    /// --edge hears its stream events. It needs the edge node's secret ($LIVESHOP_SECRET, or
    /// the node's `secret` file in the data directory): stream keys and the events' signatures
    /// come from it.
    Origin {
        /// The edge node's URL, such as https://live.example.com.
        #[arg(long, env = "LIVESHOP_EDGE_URL")]
        edge: String,
        /// Address to listen on for WHIP and HLS.
        #[arg(long, env = "LIVESHOP_LISTEN", default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// Where recordings (`media/`) and the node's secret live.
        #[arg(long, env = "LIVESHOP_DATA", default_value = ".liveshop")]
        data_dir: PathBuf,
        #[command(flatten)]
        media: MediaArgs,
    },
    /// Mint a signed token (HS256 JWT) for scripts, tests and integrations.
    ///
    /// The secret is $LIVESHOP_SECRET, or the node's secret in the data directory (created on
    /// first use).
    Token {
        /// viewer, moderator, host or merchant.
        #[arg(long, value_parser = role_parser())]
        role: Role,
        /// The room (show) the token is for; `*` for a platform-wide token (to create shows).
        #[arg(long)]
        room: String,
        /// The user's id; defaults to the role's name.
        #[arg(long)]
        sub: Option<String>,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        /// How long the token is valid, in hours.
        #[arg(long, default_value_t = 12)]
        hours: u64,
        /// Where the node keeps its data (and secret).
        #[arg(long, env = "LIVESHOP_DATA", default_value = ".liveshop")]
        data_dir: PathBuf,
    },
    /// Load tools that stay on this machine (loopback only), each figure beside a baseline.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Settings both `dev` and `edge` take on the command line.
#[derive(Args)]
struct NodeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "LIVESHOP_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where the database and the node's secret live [default: .liveshop].
    #[arg(long, env = "LIVESHOP_DATA")]
    data_dir: Option<PathBuf>,
    /// The URL viewers reach this node at, for printed links.
    #[arg(long, env = "LIVESHOP_PUBLIC_URL")]
    public_url: Option<String>,
    /// Seconds an idle room stays in memory before it hibernates [default: 30].
    #[arg(long, env = "LIVESHOP_HIBERNATE_AFTER")]
    hibernate_after: Option<f64>,
    /// Connections one room may hold [default: 20000].
    #[arg(long, env = "LIVESHOP_MAX_CONNS_PER_ROOM")]
    max_conns_per_room: Option<usize>,
    /// New connections per second one IP address may open [default: 5, burst 20].
    #[arg(long, env = "LIVESHOP_CONNS_PER_IP")]
    conns_per_ip: Option<u64>,
    #[command(flatten)]
    media: MediaArgs,
}

/// The media origin's settings, wherever it runs.
#[derive(Args)]
struct MediaArgs {
    /// UDP address for publishers' WebRTC media [default: the HTTP address, same port number].
    #[arg(long, env = "LIVESHOP_WEBRTC_UDP")]
    webrtc_udp: Option<SocketAddr>,
    /// The UDP address publishers reach, for ICE candidates behind NAT [default: --webrtc-udp].
    #[arg(long, env = "LIVESHOP_WEBRTC_PUBLIC")]
    webrtc_public: Option<SocketAddr>,
    /// Audio variants: `opus` (the publisher's, as sent), `aac` (AAC-LC transcoded from it, for
    /// iPhones before iOS 17, smart TVs and set-top players) or `both`.
    #[arg(long, env = "LIVESHOP_AUDIO", default_value = "both")]
    audio: AudioRenditions,
}

impl NodeArgs {
    /// The node's settings with these applied, and the media origin's.
    fn apply(self, mut c: EdgeConfig) -> (EdgeConfig, MediaArgs) {
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.data_dir {
            c.data_dir = v;
        }
        if let Some(v) = self.public_url {
            c.public_url = Some(v);
        }
        if let Some(v) = self.hibernate_after {
            c.hibernate_after_secs = v;
        }
        if let Some(v) = self.max_conns_per_room {
            c.max_conns_per_room = v;
        }
        if let Some(v) = self.conns_per_ip {
            c.conns_per_ip_per_sec = v;
            c.conns_per_ip_burst = c.conns_per_ip_burst.max(v);
        }
        (c, self.media)
    }
}

/// Roles as the command line spells them, listed in `--help` and in errors.
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser;
    let names = ["viewer", "moderator", "host", "merchant"];
    clap::builder::PossibleValuesParser::new(names)
        .map(|s| s.parse::<Role>().expect("only listed names get here"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Token { role, room, sub, name, hours, data_dir } => {
            let secret = liveshop_edge::node_secret(&data_dir)?;
            let exp = SystemTime::now().duration_since(UNIX_EPOCH)? + Duration::from_secs(hours * 3600);
            let mut claims =
                Claims::new(sub.unwrap_or_else(|| role.as_str().into()), room, role, exp.as_secs());
            claims.name = name;
            println!("{}", secret.mint(&claims)?);
            Ok(())
        }
        Command::Dev { node } => {
            let mut config = EdgeConfig::default();
            // A merchant's test receiver on this machine; no other private address.
            config.webhooks.allow_private_hosts =
                ["localhost", "127.0.0.1", "[::1]"].map(String::from).into();
            let (config, media) = node.apply(config);
            run(config, media, true)
        }
        Command::Bench(what) => bench::run(what),
        Command::Edge { config, node } => {
            let file = match config {
                Some(path) => EdgeConfig::from_toml_file(&path)?,
                None => EdgeConfig::default(),
            };
            let (config, media) = node.apply(file);
            run(config, media, false)
        }
        Command::Origin { edge, listen, data_dir, media } => origin_alone(&edge, listen, &data_dir, media),
    }
}

fn run(mut config: EdgeConfig, media: MediaArgs, dev: bool) -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let modules = web_modules(dev);
    config.web_modules.get_or_insert_with(|| modules.clone());
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(async {
        let edge = Edge::start(config).await?;
        let node = &edge.app.config;
        let (listen, bound) = (node.listen, edge.local_addr());
        let versions = Arc::new(NodeShows(edge.app.clone()));
        let origin =
            start_origin(&node.data_dir, (listen, bound), media, &local_url(bound), &modules, versions).await?;
        edge.app.mount_live_streams(Arc::new(MountedOrigin(origin.clone())));
        let base = match &edge.app.config.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", edge.local_addr()),
        };
        println!("liveshop: listening on http://{}", edge.local_addr());
        if dev {
            let show = edge.ensure_show(demo_show())?;
            seed_shop(&edge, &show).await?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let host = Claims::new("host", &show.id, Role::Host, now + 7 * 24 * 3600).with_name("Host");
            let token = edge.app.secret.mint(&host)?;
            println!();
            println!("  Demo show \"{}\" is ready.", show.title);
            println!("  Viewer page:    {base}/watch/{}", show.id);
            println!("  Host dashboard: {base}/dashboard/{}#token={token}", show.id);
            println!("  Host token:     {token}");
            let data = match edge.app.config.data_dir.to_str() {
                Some(".liveshop") => String::new(),
                Some(d) => format!(" --data-dir {d}"),
                None => String::new(),
            };
            println!("  More tokens:    cargo run -- token --role moderator --room {}{data}", show.id);
            println!(
                "  Merchant token: cargo run -- token --role merchant --room {}{data}  (shop API: {base}/v1/shops/{}/...)",
                show.shop_id(),
                show.shop_id()
            );
            println!("  Payments:       test provider; pay with tok_visa, decline with tok_chargeDeclined.");
            println!("  OBS settings:   Settings > Stream > Service: WHIP");
            println!("                  Server:       {base}/whip/{}", show.id);
            let key = edge.app.secret.stream_keys().key(&show.id, show.stream_key_version);
            println!("                  Bearer Token: {key}");
            println!("  Stream:         {base}/hls/{}/master.m3u8 (media over UDP {})", show.id, origin.udp_addr());
            println!();
        }
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        edge.serve_with(origin.router(), shutdown).await?;
        anyhow::Ok(())
    })
}

/// The media origin (WHIP in, LL-HLS out) beside an HTTP listener that asked for `listen` and
/// got `bound`: WebRTC on a UDP port, stream keys from the node's secret in `data_dir` at the
/// version `key_versions` gives, stream events posted, signed, to the edge node at `edge`
/// (`liveshop dev` and `liveshop edge` post to their own address: one path for every setup).
async fn start_origin(
    data_dir: &Path,
    (listen, bound): (SocketAddr, SocketAddr),
    media: MediaArgs,
    edge: &str,
    web_modules: &Path,
    key_versions: Arc<dyn KeyVersions>,
) -> anyhow::Result<Origin> {
    let mut config = OriginConfig::new(data_dir.join("media"));
    // UDP ports are not TCP ports: WebRTC takes the HTTP port's number, or any port when the
    // HTTP port was "any" too.
    let port = if listen.port() == 0 { 0 } else { bound.port() };
    config.ingest.udp = media.webrtc_udp.unwrap_or(SocketAddr::new(listen.ip(), port));
    config.ingest.public_addr = media.webrtc_public;
    config.ingest.audio = media.audio;
    config.hls_js = Some(web_modules.join("hls.js/dist/hls.min.js"));
    config.key_versions = key_versions;
    let secret = liveshop_edge::server::node_secret_bytes(data_dir)?;
    let events = PostEvents::start(
        liveshop_edge::payments::http_client(),
        format!("{}/v1/stream-events", edge.trim_end_matches('/')),
        liveshop_edge::stream_event_secret(&secret),
    );
    Ok(Origin::start(config, &secret, Arc::new(events)).await?)
}

/// The node's show records, for the origin in the same process: which stream key a show takes.
struct NodeShows(Arc<liveshop_edge::http::AppState>);

impl std::fmt::Debug for NodeShows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeShows(..)")
    }
}

impl KeyVersions for NodeShows {
    fn version<'a>(&'a self, show: &'a str) -> Lookup<'a> {
        use liveshop_edge::shows::ShowError;
        let found = match self.0.shows.get(show) {
            Ok(s) => Ok(Some(s.stream_key_version)),
            Err(ShowError::NotFound(_)) => Ok(None),
            Err(e) => {
                tracing::error!(show, "stream key lookup: {e}");
                Err(liveshop_media_origin::error::ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the show's record cannot be read; try again",
                ))
            }
        };
        Box::pin(std::future::ready(found))
    }
}

/// The origin in the node's process, which ends a show's live session when its host rotates
/// the stream key with `disconnect`.
struct MountedOrigin(Origin);

impl liveshop_edge::stream_keys::LiveStreams for MountedOrigin {
    fn end<'a>(
        &'a self,
        show: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send + 'a>> {
        Box::pin(async move { self.0.end_stream(show).await.map_err(|e| e.to_string()) })
    }

    fn encode_metrics(&self, out: &mut String) {
        self.0.encode_metrics(out);
    }
}

/// `http://` and the address to reach a listener on `addr` from this machine.
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// `liveshop origin`: WHIP and HLS on `listen`, events to the edge node at `edge`.
fn origin_alone(edge: &str, listen: SocketAddr, data_dir: &Path, media: MediaArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    // A secret of its own would make stream keys and signatures the edge refuses.
    anyhow::ensure!(
        std::env::var_os("LIVESHOP_SECRET").is_some() || data_dir.join("secret").exists(),
        "the origin needs the edge node's secret: set LIVESHOP_SECRET, or copy the node's secret file to {}",
        data_dir.join("secret").display()
    );
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        let bound = listener.local_addr()?;
        // The node keeps the shows' key versions: the origin asks it at every publish.
        let versions = Arc::new(NodeKeyVersions::new(liveshop_edge::payments::http_client(), edge));
        let origin =
            start_origin(data_dir, (listen, bound), media, edge, &web_modules(false), versions).await?;
        println!("liveshop origin: listening on http://{bound}, media over UDP {}", origin.udp_addr());
        println!("  Stream events go to {edge}");
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let metrics = origin.clone();
        let app = origin
            .router()
            .route(
                "/metrics",
                axum::routing::get(move || async move {
                    let mut text = String::new();
                    metrics.encode_metrics(&mut text);
                    text.push_str("# EOF\n");
                    let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                    ([(axum::http::header::CONTENT_TYPE, ct)], text)
                }),
            )
            .layer(axum::middleware::map_response(liveshop_edge::http::json_refusals));
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
        anyhow::Ok(())
    })
}

/// The pages' npm packages (`web/package.json`: hls.js for the player, uPlot for the charts);
/// `liveshop dev` runs `npm ci` there when one is missing, so a clean clone needs no extra step.
fn web_modules(fetch: bool) -> PathBuf {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let modules = web.join("node_modules");
    let wanted = ["hls.js/dist/hls.min.js", "uplot/dist/uPlot.iife.min.js"];
    if fetch && !wanted.iter().all(|f| modules.join(f).exists()) {
        println!("liveshop: fetching the pages' scripts (npm ci in web/)...");
        let npm = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&web)
            .status();
        if !npm.is_ok_and(|s| s.success()) {
            eprintln!("liveshop: `npm ci` in {} failed: no video player and no charts", web.display());
        }
    }
    modules
}

/// The show `liveshop dev` seeds: a few products with pictures that need no network.
fn demo_show() -> NewShow {
    let product = |id: &str, title: &str, minor: i64, picture: &str, colour: &str| Product {
        id: liveshop_room::ProductId(id.into()),
        title: title.into(),
        price: Some(liveshop_room::Money { minor, currency: "EUR".into() }),
        image_url: Some(demo_picture(picture, colour)),
        url: None,
    };
    NewShow {
        id: Some("demo".into()),
        title: "Spring drop: linen and ceramics".into(),
        products: vec![
            product("linen-shirt", "Linen shirt", 4900, SHIRT, "c2410c"),
            product("ceramic-mug", "Hand-thrown mug", 2400, MUG, "0f766e"),
            product("tote-bag", "Canvas tote", 1900, TOTE, "4338ca"),
            product("silk-scarf", "Silk scarf", 6500, SCARF, "be185d"),
        ],
        shop: None,
        embed_origins: vec![],
    }
}

/// The demo products' drawings (64 x 64 SVG shapes, `@` where the product's colour goes).
const SHIRT: &str = "<path fill='@' d='M23 9 9 16l5 11 6-3v31h24V24l6 3 5-11-14-7c-1 4-5 7-9 7s-8-3-9-7z'/>\
    <path fill='none' stroke='%23fff8' stroke-width='1.5' d='M32 16v36'/>";
const MUG: &str = "<path fill='none' stroke='@' stroke-width='5' d='M44 24h4a7 7 0 0 1 0 14h-4'/>\
    <rect fill='@' x='14' y='16' width='32' height='36' rx='5'/>\
    <path fill='none' stroke='%23fff8' stroke-width='3' d='M14 26h32'/>";
const TOTE: &str = "<path fill='none' stroke='@' stroke-width='3.5' d='M23 26c0-13 18-13 18 0'/>\
    <path fill='@' d='M13 24h38l-3 32H16z'/>\
    <circle fill='%23fff8' cx='32' cy='40' r='6'/>";
const SCARF: &str = "<path fill='@' d='M17 8h30v10c0 8-9 10-9 16v22h-9V32c0-6-12-7-12-16z'/>\
    <path fill='none' stroke='%23fff8' stroke-width='2' d='M17 13h30M29 48h9M29 52h9'/>";

/// A demo product's picture: its drawing in its colour on a light ground, as a `data:` URL (the
/// only kind of image besides https that product cards take).
fn demo_picture(drawing: &str, colour: &str) -> String {
    let svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 64 64'><rect width='64' height='64' \
         fill='%23f4efe8'/>{}</svg>",
        drawing.replace('@', &format!("%23{colour}"))
    );
    // Percent-encoded where a URL needs it; `#` is already `%23` above.
    format!("data:image/svg+xml,{}", svg.replace('<', "%3C").replace('>', "%3E").replace(' ', "%20"))
}

/// Stock each demo product starts with.
const DEMO_STOCK: u32 = 25;

/// Puts the demo show's products in its shop, with stock, unless they are there already (a
/// restart keeps what was sold).
async fn seed_shop(edge: &Edge, show: &liveshop_edge::shows::Show) -> anyhow::Result<()> {
    let merchant = Some(liveshop_identity::Identity::new("liveshop-dev", Role::Merchant));
    let request = |method: &str, path: String, body: String| liveshop_edge::HttpRequest {
        method: method.into(),
        path,
        headers: vec![],
        body: body.into_bytes(),
        who: merchant.clone(),
    };
    for p in &show.products {
        let path = format!("/products/{}", p.id.0);
        let node = &edge.app.node;
        let found =
            node.request(Kind::Shop, show.shop_id(), request("GET", path.clone(), String::new())).await?;
        if found.status != 404 {
            continue;
        }
        let price = p.price.as_ref().context("demo products have prices")?;
        let body = serde_json::json!({
            "title": p.title,
            "variants": [{ "sku": p.id.0, "price": { "minor": price.minor, "currency": price.currency }, "stock": DEMO_STOCK }],
        });
        let put = node.request(Kind::Shop, show.shop_id(), request("PUT", path, body.to_string())).await?;
        anyhow::ensure!(put.status == 200, "seeding {}: {}", p.id.0, String::from_utf8_lossy(&put.body));
    }
    Ok(())
}
