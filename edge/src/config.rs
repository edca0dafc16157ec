//! The edge node's settings: defaults, overridden by a TOML file, overridden by the command line
//! or environment (the CLI merges those; see `liveshop edge --help`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::sqlite::Durability;

/// Everything `liveshop edge` can be told. Absent fields keep their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the database and the node's secret live.
    pub data_dir: PathBuf,
    /// The URL viewers reach this node at (behind a proxy or CDN); printed links use it.
    pub public_url: Option<String>,
    /// Seconds an idle room stays in memory before it hibernates.
    pub hibernate_after_secs: f64,
    /// Longest a busy room holds its fan-out, in milliseconds: a room releases what its events
    /// produced as soon as its mailbox is drained, and at least this often under a backlog that
    /// never drains. (`tick_ms`, its old name, is read too.)
    #[serde(alias = "tick_ms")]
    pub max_batch_ms: u64,
    /// Batches a slow connection may fall behind before it is closed.
    pub queue_batches: usize,
    pub max_conns_per_room: usize,
    /// New connections (and guest tokens) per second one IP address may open, sustained.
    pub conns_per_ip_per_sec: u64,
    /// Burst allowance for the above.
    pub conns_per_ip_burst: u64,
    /// Connections one IP address (an IPv6 /64) may hold open at once; more are closed as they
    /// are accepted.
    pub max_conns_per_ip: usize,
    /// Open connections at most, all addresses together (absent: three quarters of the
    /// open-files limit, `ulimit -n`, leaving the rest to the databases, WebRTC and outbound
    /// calls).
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's headers (also how long a kept-alive connection
    /// may wait between requests).
    pub header_timeout_secs: f64,
    /// Seconds a connection may go with nothing sent either way in the middle of a request or
    /// an answer. WebSockets and event streams are not subject to it.
    pub idle_timeout_secs: f64,
    /// Frames per second one connection may send, sustained (burst: twice that).
    pub frames_per_conn_per_sec: u64,
    /// Largest WebSocket message accepted before the connection is closed (the room itself
    /// refuses frames over 8 KiB with `payload_too_large`).
    pub max_ws_message_bytes: usize,
    /// Let anyone get a viewer token for a show (`POST /v1/rooms/{room}/guest`).
    pub guest_tokens: bool,
    /// Guest tokens for new devices (requests without a valid device cookie) one address (an
    /// IPv6 /64) may get at once; a device that has its cookie gets its token again freely.
    pub guest_devices_per_ip_burst: u64,
    /// New guest devices per hour one address may get, sustained.
    pub guest_devices_per_ip_per_hour: u64,
    /// `POST /v1/rooms/{room}/commands` per second one address may send, sustained (on top of
    /// each room's pacing per user).
    pub commands_per_ip_per_sec: u64,
    /// Burst allowance for the above.
    pub commands_per_ip_burst: u64,
    /// Public feed reads and heartbeats per second one address may make, sustained. A viewer
    /// straight on the node reads about five times a second while events flow; behind a CDN the
    /// node sees one read per cache and position (set `client_ip_header` and
    /// `trusted_proxies`, or the cache's own address is what is limited).
    pub feed_reads_per_ip_per_sec: u64,
    /// Burst allowance for the above.
    pub feed_reads_per_ip_burst: u64,
    /// Feed viewers one room counts at most (heartbeating devices); more are refused with 503.
    pub max_feed_viewers_per_room: usize,
    /// Addresses each per-address limit remembers at most. A full table forgets the addresses
    /// whose allowance has refilled, then the least limited eighth; it never refuses a newcomer
    /// for being full, and is never cleared.
    pub paced_addresses: usize,
    /// The header a trusted proxy puts the client's address in: `"CF-Connecting-IP"` behind
    /// Cloudflare, `"X-Forwarded-For"` behind most others. Believed only from `trusted_proxies`.
    pub client_ip_header: Option<String>,
    /// Addresses and networks (`"10.0.0.0/8"`, `"2400:cb00::/32"`) of the proxies or CDN in
    /// front of the node. Empty: every limit counts the TCP peer's address.
    pub trusted_proxies: Vec<crate::pacing::Cidr>,
    pub durability: Durability,
    /// Live rooms at once (the wasm instance pool).
    pub max_live_rooms: u32,
    /// Memory one room may use, in MiB.
    pub room_memory_mib: usize,
    /// Wall time one event may run, in milliseconds.
    pub event_deadline_ms: u64,
    /// Where shops' in-stream payments go.
    pub payments: PaymentsConfig,
    /// Where merchants' webhooks may go.
    pub webhooks: WebhooksConfig,
    /// Platform operators: subjects whose platform-wide (`room: "*"`) tokens may create shows
    /// selling from any shop. Nobody by default; everyone else sells only from shops they own.
    pub operators: Vec<String>,
    /// Where the pages' npm packages are installed (`web/node_modules`: the charts of the
    /// dashboard and the report); `liveshop dev` and `liveshop edge` use the repository's.
    pub web_modules: Option<PathBuf>,
}

/// `[webhooks]`: merchants' webhook endpoints must be public addresses, except these hosts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Host names or addresses (exactly as in the endpoint URL, such as `"localhost"`,
    /// `"127.0.0.1"`, `"[::1]"` or `"hooks.internal"`) that endpoints may name, and that may
    /// resolve to loopback, private or link-local addresses. Empty by default; `liveshop dev`
    /// allows loopback.
    pub allow_private_hosts: Vec<String>,
}

impl WebhooksConfig {
    pub fn policy(&self) -> liveshop_webhooks::EndpointPolicy {
        liveshop_webhooks::EndpointPolicy::allowing(&self.allow_private_hosts)
    }
}

/// `[payments]`: the provider of every shop on this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    pub provider: ProviderName,
    /// Stripe's API, or a stand-in for it.
    pub stripe_api_base: String,
    /// `sk_live_...` / `sk_test_...`; `$LIVESHOP_STRIPE_SECRET_KEY` overrides it.
    pub stripe_secret_key: Option<String>,
    /// The signing secret of the endpoint Stripe posts to (`/v1/payments/stripe/webhook`);
    /// `$LIVESHOP_STRIPE_WEBHOOK_SECRET` overrides it.
    pub stripe_webhook_secret: Option<String>,
    /// Where Stripe sends a buyer back after 3-D Secure.
    pub stripe_return_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderName {
    /// Outcomes by test card token (`tok_visa` pays, `tok_chargeDeclined` fails), no money moves.
    Test,
    Stripe,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            provider: ProviderName::Test,
            stripe_api_base: "https://api.stripe.com".into(),
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_return_url: None,
        }
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(".liveshop"),
            public_url: None,
            hibernate_after_secs: 30.0,
            max_batch_ms: 5,
            queue_batches: 128,
            max_conns_per_room: 20_000,
            conns_per_ip_per_sec: 5,
            conns_per_ip_burst: 20,
            max_conns_per_ip: 256,
            max_connections: None,
            header_timeout_secs: 10.0,
            idle_timeout_secs: 60.0,
            frames_per_conn_per_sec: 20,
            max_ws_message_bytes: 64 * 1024,
            guest_tokens: true,
            guest_devices_per_ip_burst: 10,
            guest_devices_per_ip_per_hour: 20,
            commands_per_ip_per_sec: 30,
            commands_per_ip_burst: 120,
            feed_reads_per_ip_per_sec: 20,
            feed_reads_per_ip_burst: 60,
            max_feed_viewers_per_room: 1_000_000,
            paced_addresses: 100_000,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
            durability: Durability::Process,
            max_live_rooms: 1000,
            room_memory_mib: 64,
            event_deadline_ms: 200,
            payments: PaymentsConfig::default(),
            webhooks: WebhooksConfig::default(),
            operators: Vec::new(),
            web_modules: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
}

/// A duration from a setting in seconds, whatever a config file says (a negative, NaN or
/// infinite number would panic `Duration::from_secs_f64`): between a millisecond and a year.
pub fn secs(setting: f64) -> Duration {
    let setting = if setting.is_nan() { 0.0 } else { setting };
    Duration::from_secs_f64(setting.clamp(0.001, 365.0 * 24.0 * 3600.0))
}

impl EdgeConfig {
    pub fn from_toml_file(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    pub fn hibernate_after(&self) -> Duration {
        secs(self.hibernate_after_secs)
    }

    /// The base URL for links: the public URL if set, else the listen address.
    pub fn base_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_file_overrides_only_what_it_names_and_rejects_typos() {
        let c: EdgeConfig = toml::from_str("listen = \"0.0.0.0:9000\"\nguest_tokens = false\n").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert!(!c.guest_tokens);
        assert_eq!(c.max_batch_ms, 5);
        let old: EdgeConfig = toml::from_str("tick_ms = 20").unwrap();
        assert_eq!(old.max_batch_ms, 20, "a config written for the fixed tick still loads");
        assert!(toml::from_str::<EdgeConfig>("lisen = \"0.0.0.0:9000\"").is_err());
        let c: EdgeConfig = toml::from_str("[webhooks]\nallow_private_hosts = [\"localhost\"]\n").unwrap();
        assert!(c.webhooks.policy().names("localhost") && !c.webhooks.policy().names("127.0.0.1"));
    }
}
