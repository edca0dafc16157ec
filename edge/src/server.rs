//! Putting a node together: database, engine, rooms and HTTP, from an [`EdgeConfig`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use liveshop_identity::{Secret, TokenError};

use crate::actor::{ActorError, Env, Runtime, RuntimeConfig, SystemEnv};
use crate::config::{EdgeConfig, PaymentsConfig, ProviderName};
use crate::http::{AppState, Commerce, router};
use crate::listener::Limits;
use crate::metrics::Metrics;
use crate::node::{KindSetup, Node, NodeConfig};
use crate::outbound::{Outbound, WebhookSecrets};
use crate::payments::{IntentStore, Provider, Stripe, StripeConfig, http_client};
use crate::sealed::SealedRecords;
use crate::shows::{NewShow, Show, ShowError, Shows};
use crate::sqlite::Db;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("the node secret: {0}")]
    Secret(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Actor(#[from] ActorError),
    #[error(transparent)]
    Show(#[from] ShowError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("payments: {0}")]
    Payments(String),
}

/// A node bound to its address, ready to serve.
pub struct Edge {
    pub app: Arc<AppState>,
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
}

impl Edge {
    /// Opens storage, compiles the room and shop components and binds the listener.
    pub async fn start(config: EdgeConfig) -> Result<Edge, EdgeError> {
        Self::start_with_env(config, Arc::new(SystemEnv)).await
    }

    /// [`Edge::start`] with another clock and source of randomness (tests).
    pub async fn start_with_env(config: EdgeConfig, env: Arc<dyn Env>) -> Result<Edge, EdgeError> {
        let dir = &config.data_dir;
        private_dir(dir).map_err(|source| EdgeError::DataDir { path: dir.display().to_string(), source })?;
        let secret = node_secret(dir)?;
        let stream_events = stream_event_secret(&node_secret_bytes(dir)?);
        let db = Db::open(&dir.join("liveshop.db"), config.durability)?;
        // Shops in a database of their own: a room's commits never queue before a checkout's.
        let shop_db = Db::open(&dir.join("shops.db"), config.durability)?;
        let runtime = Runtime::new(RuntimeConfig {
            max_actors: config.max_live_rooms,
            memory_bytes: config.room_memory_mib << 20,
            event_deadline: Duration::from_millis(config.event_deadline_ms),
            pooling: true,
        })?;
        let rooms = KindSetup { component: runtime.load(crate::ROOM_COMPONENT)?, db: db.clone() };
        let shops = KindSetup { component: runtime.load(crate::SHOP_COMPONENT)?, db: shop_db.clone() };
        let stripe = stripe_config(&config.payments)?
            .map(|s| Stripe::new(s, IntentStore::new(shop_db.clone()), http_client()));
        let provider = match &stripe {
            Some(s) => Provider::Stripe(s.clone()),
            None => Provider::Test,
        };
        let sealed = SealedRecords::new(shop_db.clone(), &node_secret_bytes(dir)?);
        for kind in [crate::outbound::SECRETS, crate::shop_http::SHOPIFY] {
            let n = sealed.seal_plain(kind)?;
            if n > 0 {
                tracing::info!(kind, records = n, "sealed secrets an earlier version stored in plain text");
            }
        }
        let webhook_secrets = WebhookSecrets::new(sealed.clone());
        let endpoint_policy = config.webhooks.policy();
        let outbound = Outbound::new(endpoint_policy.clone(), provider, webhook_secrets.clone(), env.clone());
        let node_config = NodeConfig {
            hibernate_after: config.hibernate_after(),
            max_batch_delay: Duration::from_millis(config.max_batch_ms.max(1)),
            queue_batches: config.queue_batches.max(1),
            max_conns_per_room: config.max_conns_per_room,
        };
        let metrics = Arc::new(Metrics::default());
        let node =
            Node::start(node_config, rooms, Some(shops), env.clone(), metrics.clone(), Arc::new(outbound))?;
        let listener =
            listen(config.listen).map_err(|source| EdgeError::Listen { addr: config.listen, source })?;
        let commerce = Commerce { shop_db, webhook_secrets, stripe, sealed, endpoint_policy };
        let app = Arc::new(AppState::new(node, Shows::new(db), secret, env, config, commerce, stream_events));
        Ok(Edge { app, listener, metrics })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The show `id`, created with `title` and `products` if it does not exist yet.
    pub fn ensure_show(&self, new: NewShow) -> Result<Show, EdgeError> {
        let id = new.id.clone().unwrap_or_default();
        match self.app.shows.get(&id) {
            Ok(show) => Ok(show),
            Err(ShowError::NotFound(_)) => Ok(self.app.shows.create(new, self.app.env.now())?),
            Err(e) => Err(e.into()),
        }
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), EdgeError> {
        self.serve_with(axum::Router::new(), shutdown).await
    }

    /// Serves the node's routes and `extra` (such as the media origin's) on the same port.
    pub async fn serve_with(
        self,
        extra: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), EdgeError> {
        let limits = Limits::from_config(&self.app.config);
        tracing::info!(
            "up to {} connections, {} per address; header timeout {:?}, idle timeout {:?}",
            limits.connections,
            limits.per_address,
            limits.header_timeout,
            limits.idle_timeout
        );
        let extra = extra.layer(axum::middleware::map_response(crate::http::json_refusals));
        let app = router(self.app).merge(extra);
        crate::listener::serve(self.listener, app, limits, self.metrics, shutdown).await;
        Ok(())
    }
}

/// Stripe's settings when `[payments]` names it; its keys may come from the environment.
fn stripe_config(config: &PaymentsConfig) -> Result<Option<StripeConfig>, EdgeError> {
    match config.provider {
        ProviderName::Test => Ok(None),
        ProviderName::Stripe => {
            let env = |name: &str| std::env::var(name).ok();
            let secret_key =
                env("LIVESHOP_STRIPE_SECRET_KEY").or_else(|| config.stripe_secret_key.clone()).ok_or_else(
                    || EdgeError::Payments("Stripe needs a secret key (stripe_secret_key)".into()),
                )?;
            let stripe = StripeConfig {
                api_base: config.stripe_api_base.clone(),
                secret_key,
                webhook_secret: env("LIVESHOP_STRIPE_WEBHOOK_SECRET")
                    .or_else(|| config.stripe_webhook_secret.clone()),
                return_url: config.stripe_return_url.clone(),
            };
            Ok(Some(stripe))
        }
    }
}

/// Connections waiting to be accepted. tokio's default (1024) is below a flash sale's burst;
/// past it the kernel drops SYNs and each buyer waits a second or more for the retry. The kernel
/// caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restarted node takes its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The node's HMAC secret: `$LIVESHOP_SECRET` if set, else `<data>/secret`, made on first use
/// (32 random bytes, hex, readable by the owner only).
pub fn node_secret(data: &Path) -> Result<Secret, EdgeError> {
    Secret::new(node_secret_bytes(data)?).map_err(|e: TokenError| EdgeError::Secret(e.to_string()))
}

/// The bytes of [`node_secret`], for keys derived from it elsewhere (the media origin's stream
/// keys).
pub fn node_secret_bytes(data: &Path) -> Result<Vec<u8>, EdgeError> {
    if let Ok(s) = std::env::var("LIVESHOP_SECRET") {
        return Ok(s.into_bytes());
    }
    let path = data.join("secret");
    let io = |source| EdgeError::DataDir { path: path.display().to_string(), source };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            SystemEnv.fill_random(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::create_dir_all(data).map_err(io)?;
            write_private(&path, &hex).map_err(io)?;
            hex
        }
        Err(e) => return Err(io(e)),
    };
    Ok(text.trim().as_bytes().to_vec())
}

/// The key the media origin signs its stream events with (`POST /v1/stream-events`): derived
/// from the node's secret, so an origin that has it for stream keys needs nothing more, and
/// domain-separated, so it is never a token's or a stream key's MAC.
pub fn stream_event_secret(node_secret: &[u8]) -> liveshop_webhooks::Secret {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(node_secret).expect("HMAC takes keys of any length");
    mac.update(b"liveshop stream events v1\0");
    liveshop_webhooks::Secret::generate(mac.finalize().into_bytes().into())
}

/// The data directory, made (or made again) accessible to its owner only: it holds the node's
/// secret and every database.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700).create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
            tracing::warn!(dir = %dir.display(), "the data directory was open to others: now {:o}", mode & 0o700);
        }
    }
    #[cfg(not(unix))]
    builder.create(dir)?;
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(contents.as_bytes())
}
