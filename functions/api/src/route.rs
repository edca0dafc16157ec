//! Every public route, by method and path, in one table: hosts that route by hand (the Worker,
//! the Spin app) match on [`Route`] instead of path segments, and the edge node's axum router
//! names the same paths (`tests/conformance` holds all three to them). What a route needs before
//! its handler runs is said here too: the per-address allowance it is paced by
//! ([`Route::paced`]).

use liveshop_room::pages::Page;

/// A request's route; `None` from [`Route::of`] is `404 not_found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /`: the demo show's page.
    Home,
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /watch/{show}`, `/dashboard/{show}`, `/shows/{show}/report`.
    Page(Page, &'a str),
    /// `GET /web/{file}`: the pages' scripts and styles (`crate::web`).
    Web(&'a str),
    /// `GET /web/vendor/{file}`: the third-party code the pages load, from npm.
    Vendor(&'a str),
    /// `POST /v1/shows`.
    CreateShow,
    /// `GET /v1/shows/{show}`.
    Show(&'a str),
    /// `GET /v1/shows/{show}/analytics` and `/v1/shows/{show}/analytics/{file}`.
    Report(&'a str, Option<&'a str>),
    /// `/v1/rooms/{room}/...`.
    Room(&'a str, RoomRoute),
    /// `/v1/shops/{shop}/...` and `/v1/shows/{show}/shop/...`; the segments below either base.
    Shop(ShopOf<'a>, ShopRoute<'a>),
    /// `POST /v1/payments/stripe/webhook`.
    StripeWebhook,
    /// `POST /v1/alarms`: runs due alarms, on hosts without timers (Spin).
    Alarms,
}

/// The routes of one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRoute {
    /// `POST .../guest`: a guest token.
    Guest,
    /// `GET .../ws`: the WebSocket.
    Socket,
    /// `GET .../events`: server-sent events.
    Events,
    /// `POST .../commands`: one command over HTTP.
    Commands,
    /// `GET .../state`: the room as the caller sees it.
    State,
    /// `GET .../feed`: the public feed.
    Feed,
    /// `POST .../heartbeat`: a feed viewer's beacon.
    Heartbeat,
    /// `GET .../timeline`: the replay's moments on the video's clock.
    Timeline,
}

/// How a shop route names its shop: itself, or a show that sells from it (whose tokens then
/// serve).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShopOf<'a> {
    Shop(&'a str),
    Show(&'a str),
}

/// The routes of one shop. Secrets and signed inbound requests are the shop's own routes only;
/// through a show there is the live feed and the shop API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShopRoute<'a> {
    /// `POST .../webhook-secrets/{secret_id}`.
    WebhookSecret(&'a str),
    /// `POST .../inbound-secrets/liveshop`.
    InboundSecret,
    /// `PUT .../inbound-secrets/shopify`.
    ShopifySettings,
    /// `POST .../inbound/liveshop`: a signed merchant update.
    InboundLiveshop,
    /// `POST .../inbound/shopify`: a signed Shopify webhook.
    InboundShopify,
    /// `GET .../live`: the products as server-sent events.
    Live,
    /// Anything else: the shop API (`liveshop_shop::api`), which answers for its own paths.
    Api,
}

/// The per-address allowance a route is paced by before anything else (each may wake an actor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paced {
    /// New connections and room reads, and guest tokens.
    Connections,
    /// Commands over HTTP.
    Commands,
    /// Feed reads that reach the room, and heartbeats.
    Reads,
}

impl<'a> Route<'a> {
    /// The route of `method` and `path` (without the query), if there is one.
    pub fn of(method: &str, path: &'a str) -> Option<Route<'a>> {
        let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        Some(match (method, segs.as_slice()) {
            ("GET", [""]) => Route::Home,
            ("GET", ["healthz"]) => Route::Health,
            ("GET", ["metrics"]) => Route::Metrics,
            ("GET", ["watch", show]) => Route::Page(Page::Viewer, show),
            ("GET", ["dashboard", show]) => Route::Page(Page::Dashboard, show),
            ("GET", ["shows", show, "report"]) => Route::Page(Page::Report, show),
            ("GET", ["web", "vendor", file]) => Route::Vendor(file),
            ("GET", ["web", file]) => Route::Web(file),
            ("POST", ["v1", "shows"]) => Route::CreateShow,
            ("GET", ["v1", "shows", show]) => Route::Show(show),
            ("GET", ["v1", "shows", show, "analytics"]) => Route::Report(show, None),
            ("GET", ["v1", "shows", show, "analytics", file]) => Route::Report(show, Some(file)),
            (_, ["v1", "rooms", room, action]) => Route::Room(room, RoomRoute::of(method, action)?),
            // A first segment starting with `_` is a host's own call to its shop actor, which
            // no client reaches (rooms' have no route here at all).
            (_, ["v1", "shows", show, "shop", rest @ ..])
                if rest.first().is_some_and(|s| !s.starts_with('_')) =>
            {
                Route::Shop(ShopOf::Show(show), ShopRoute::of(method, rest, false))
            }
            (_, ["v1", "shops", shop, rest @ ..]) if rest.first().is_some_and(|s| !s.starts_with('_')) => {
                Route::Shop(ShopOf::Shop(shop), ShopRoute::of(method, rest, true))
            }
            ("POST", ["v1", "payments", "stripe", "webhook"]) => Route::StripeWebhook,
            ("POST", ["v1", "alarms"]) => Route::Alarms,
            _ => return None,
        })
        .filter(|route| route.named().is_none_or(|id| !id.is_empty() && !id.starts_with('_')))
    }

    /// Whether a client may carry its token in the URL (`?token=`, and for the socket a
    /// subprotocol): only on what browsers open without headers (a WebSocket, an `EventSource`)
    /// and the state read beside them. Everywhere else the token is `Authorization: Bearer`
    /// only, so no token that can create shows or rotate secrets ends up in a log or a history.
    pub fn token_in_url(&self) -> bool {
        matches!(self, Route::Room(_, RoomRoute::Socket | RoomRoute::Events | RoomRoute::State))
    }

    /// The show, room or shop the path names, if any.
    fn named(&self) -> Option<&'a str> {
        match *self {
            Route::Page(_, id) | Route::Show(id) | Route::Report(id, _) | Route::Room(id, _) => Some(id),
            Route::Shop(ShopOf::Shop(id) | ShopOf::Show(id), _) => Some(id),
            _ => None,
        }
    }

    /// The allowance the route is paced by per client address, if any. (A host may pace a
    /// route only when it does something: a WebSocket route only for an upgrade, guest tokens
    /// only where they are given.)
    pub fn paced(&self) -> Option<Paced> {
        match self {
            Route::Room(_, RoomRoute::Commands) => Some(Paced::Commands),
            Route::Room(_, RoomRoute::Heartbeat | RoomRoute::Timeline) => Some(Paced::Reads),
            Route::Room(_, RoomRoute::Socket | RoomRoute::Events | RoomRoute::State | RoomRoute::Guest) => {
                Some(Paced::Connections)
            }
            _ => None,
        }
    }
}

impl RoomRoute {
    fn of(method: &str, action: &str) -> Option<RoomRoute> {
        Some(match (method, action) {
            ("POST", "guest") => RoomRoute::Guest,
            ("GET", "ws") => RoomRoute::Socket,
            ("GET", "events") => RoomRoute::Events,
            ("POST", "commands") => RoomRoute::Commands,
            ("GET", "state") => RoomRoute::State,
            ("GET", "feed") => RoomRoute::Feed,
            ("POST", "heartbeat") => RoomRoute::Heartbeat,
            ("GET", "timeline") => RoomRoute::Timeline,
            _ => return None,
        })
    }
}

impl<'a> ShopRoute<'a> {
    fn of(method: &str, rest: &[&'a str], own: bool) -> ShopRoute<'a> {
        match (method, rest, own) {
            ("GET", ["live"], _) => ShopRoute::Live,
            ("POST", ["webhook-secrets", secret_id], true) => ShopRoute::WebhookSecret(secret_id),
            ("POST", ["inbound-secrets", "liveshop"], true) => ShopRoute::InboundSecret,
            ("PUT", ["inbound-secrets", "shopify"], true) => ShopRoute::ShopifySettings,
            ("POST", ["inbound", "liveshop"], true) => ShopRoute::InboundLiveshop,
            ("POST", ["inbound", "shopify"], true) => ShopRoute::InboundShopify,
            _ => ShopRoute::Api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_routes_and_nothing_else() {
        let r = |m, p| Route::of(m, p);
        assert_eq!(r("GET", "/"), Some(Route::Home));
        assert_eq!(r("GET", "/watch/demo"), Some(Route::Page(Page::Viewer, "demo")));
        assert_eq!(
            r("GET", "/v1/shows/a/analytics/minutes.csv"),
            Some(Route::Report("a", Some("minutes.csv")))
        );
        assert_eq!(r("POST", "/v1/rooms/a/commands"), Some(Route::Room("a", RoomRoute::Commands)));
        assert_eq!(r("GET", "/v1/rooms/a/commands"), None, "a command is a POST");
        assert_eq!(
            r("POST", "/v1/shops/s/webhook-secrets/k"),
            Some(Route::Shop(ShopOf::Shop("s"), ShopRoute::WebhookSecret("k")))
        );
        // Secrets are the shop's own: through a show, the path is the shop API's to refuse.
        assert_eq!(
            r("POST", "/v1/shows/a/shop/webhook-secrets/k"),
            Some(Route::Shop(ShopOf::Show("a"), ShopRoute::Api))
        );
        assert_eq!(r("GET", "/v1/shows/a/shop/live"), Some(Route::Shop(ShopOf::Show("a"), ShopRoute::Live)));
        assert_eq!(r("GET", "/v1/shops/s/products/p"), Some(Route::Shop(ShopOf::Shop("s"), ShopRoute::Api)));
        let internal = [
            "/v1/rooms/_f/ws",
            "/v1/shops/s/_register",
            "/v1/shows/a/shop/_x",
            "/v1/shows//analytics",
            "/v1/shops/s",
        ];
        for internal in internal {
            assert_eq!(r("GET", internal), None, "{internal}");
        }
        assert_eq!(r("GET", "no-slash"), None);
        // Merchants' own ids may start with `_`.
        assert_eq!(r("PUT", "/v1/shops/s/products/_x"), Some(Route::Shop(ShopOf::Shop("s"), ShopRoute::Api)));
    }

    #[test]
    fn connections_commands_and_beacons_are_paced_per_address() {
        let paced = |m, p| Route::of(m, p).and_then(|r| r.paced());
        assert_eq!(paced("GET", "/v1/rooms/a/ws"), Some(Paced::Connections));
        assert_eq!(paced("POST", "/v1/rooms/a/guest"), Some(Paced::Connections));
        assert_eq!(paced("POST", "/v1/rooms/a/commands"), Some(Paced::Commands));
        assert_eq!(paced("POST", "/v1/rooms/a/heartbeat"), Some(Paced::Reads));
        // Feed reads are paced when they miss the cache, by the feed itself.
        assert_eq!(paced("GET", "/v1/rooms/a/feed"), None);
        assert_eq!(paced("GET", "/v1/shows/a"), None);
    }
}
