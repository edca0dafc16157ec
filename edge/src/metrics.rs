//! The node's Prometheus metrics (`GET /metrics`, text format).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub live_actors: Gauge,
    pub revivals: Counter,
    pub hibernations: Counter,
    pub event_failures: Counter,
    pub slow_consumers: Counter,
    pub frames_sent: Counter,
    pub revive_seconds: Histogram,
    /// Requests that reached the node's public feed route (behind a CDN: one per cache and
    /// position, whatever the audience).
    pub feed_requests: Counter,
    pub timeline_requests: Counter,
    /// Feed questions the node put to rooms (requests at one position share them).
    pub feed_room_queries: Counter,
    /// Viewers counted by heartbeats on the feed, in every room.
    pub feed_viewers: Gauge,
    /// Events committed, and the group commits that carried them.
    pub committed_events: Counter,
    commit_seconds: Histogram,
    events: Family<KindLabel, Counter>,
    event_seconds: Family<KindLabel, Histogram>,
    refused: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("liveshop");
        let connections = Gauge::default();
        let live_actors = Gauge::default();
        let revivals = Counter::default();
        let hibernations = Counter::default();
        let event_failures = Counter::default();
        let slow_consumers = Counter::default();
        let frames_sent = Counter::default();
        let revive_seconds = Histogram::new(exponential_buckets(1e-5, 4.0, 10));
        let feed_requests = Counter::default();
        let timeline_requests = Counter::default();
        let feed_room_queries = Counter::default();
        let feed_viewers = Gauge::default();
        let committed_events = Counter::default();
        let commit_seconds = Histogram::new(exponential_buckets(1e-6, 4.0, 12));
        let events = Family::<KindLabel, Counter>::default();
        let event_seconds = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-6, 4.0, 12))
        });
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register("connections", "Open client connections", connections.clone());
        registry.register("live_actors", "Actors in memory (not hibernated)", live_actors.clone());
        registry.register("actor_revivals", "Actors instantiated from storage", revivals.clone());
        registry.register("actor_hibernations", "Idle actors dropped from memory", hibernations.clone());
        registry.register(
            "actor_event_failures",
            "Events that trapped or failed to commit",
            event_failures.clone(),
        );
        registry.register(
            "slow_consumers_closed",
            "Connections closed for falling behind",
            slow_consumers.clone(),
        );
        registry.register("frames_sent", "Frames handed to client connections", frames_sent.clone());
        registry.register(
            "actor_revive_seconds",
            "Time to bring an actor back: instantiation plus its first event, which restores its state",
            revive_seconds.clone(),
        );
        registry.register(
            "feed_requests",
            "Requests that reached the public feed route",
            feed_requests.clone(),
        );
        registry.register(
            "timeline_requests",
            "Requests that reached a replay's timeline route",
            timeline_requests.clone(),
        );
        registry.register(
            "feed_room_queries",
            "Feed questions put to rooms, shared by the requests at one position",
            feed_room_queries.clone(),
        );
        registry.register(
            "feed_viewers",
            "Viewers counted by heartbeats on the public feed",
            feed_viewers.clone(),
        );
        registry.register("actor_events", "Events handled by actors, by kind", events.clone());
        registry.register(
            "actor_event_seconds",
            "Time to handle one event (without its commit, which a group of events shares)",
            event_seconds.clone(),
        );
        registry.register(
            "actor_committed_events",
            "Events committed; divided by the commit count, events per group commit",
            committed_events.clone(),
        );
        registry.register(
            "actor_commit_seconds",
            "Time to commit one group of events in one transaction",
            commit_seconds.clone(),
        );
        registry.register("refused", "Requests and connections refused, by reason", refused.clone());
        Metrics {
            registry,
            connections,
            live_actors,
            revivals,
            hibernations,
            event_failures,
            slow_consumers,
            frames_sent,
            revive_seconds,
            feed_requests,
            timeline_requests,
            feed_room_queries,
            feed_viewers,
            committed_events,
            commit_seconds,
            events,
            event_seconds,
            refused,
        }
    }
}

impl Metrics {
    pub fn event(&self, kind: &'static str, took: Duration) {
        self.events.get_or_create(&KindLabel { kind }).inc();
        self.event_seconds.get_or_create(&KindLabel { kind }).observe(took.as_secs_f64());
    }

    /// A group commit of `events` events.
    pub fn commit(&self, events: usize, took: Duration) {
        self.committed_events.inc_by(events as u64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = self.render_without_eof();
        out.push_str("# EOF\n");
        out
    }

    /// The OpenMetrics text, to which the caller adds what else it has and `# EOF`.
    pub fn render_without_eof(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out
    }
}
