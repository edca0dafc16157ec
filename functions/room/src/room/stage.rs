//! What the show puts on screen: the host's banner, the stream's start, health and end as the media
//! origin reports them, and the pinned products with their countdowns, stock flags and counts.

use super::*;
use crate::protocol::Product;

/// Stream events are the media origin's word alone: a host's token does not start a show's
/// stream or set the clock its overlays wait on.
fn require_origin(who: &Identity) -> Result<(), CommandError> {
    require(who.subject == MEDIA_ORIGIN && who.role == Role::Host)
}

impl Room {
    /// The host's banner over the video.
    pub(super) fn set_banner(
        &mut self,
        now: Millis,
        who: &Identity,
        text: String,
    ) -> Result<Accepted, CommandError> {
        require(who.role == Role::Host)?;
        let text = text_field(&text, limits::MAX_BANNER_CHARS, "banner")?;
        one(self.emit(now, Audience::All, Event::BannerSet { text }))
    }

    /// Takes the banner down.
    pub(super) fn clear_banner(&mut self, now: Millis, who: &Identity) -> Result<Accepted, CommandError> {
        require(who.role == Role::Host)?;
        self.state.banner.as_ref().ok_or_else(|| not_found("banner"))?;
        one(self.emit(now, Audience::All, Event::BannerCleared {}))
    }

    /// A stream event of the media origin ([`STREAM_EVENTS_PATH`]): one `stream.*` command,
    /// parsed here and nowhere before. The origin's key says how a stream is doing and nothing
    /// else, so any other command is refused.
    pub(super) fn stream_event(&mut self, now: Millis, who: &Identity, body: &[u8]) -> (u16, String) {
        let command: Command = match serde_json::from_slice(body) {
            Ok(command) => command,
            Err(e) => return http_error(invalid(e.to_string())),
        };
        let ended = matches!(command, Command::StreamEnded { .. });
        if !matches!(
            command,
            Command::StreamStarted(_) | Command::StreamHealth(_) | Command::StreamEnded { .. }
        ) {
            return http_error(invalid("only stream.started, stream.health and stream.ended"));
        }
        match self.command(now, who, command) {
            Ok(a) => (200, to_json(&StreamEventTaken { seq: a.seq, ended })),
            Err(e) => http_error(e),
        }
    }

    /// The media origin says the stream is live, and where it plays.
    pub(super) fn stream_started(
        &mut self,
        now: Millis,
        who: &Identity,
        started: StreamStarted,
    ) -> Result<Accepted, CommandError> {
        require_origin(who)?;
        let playlist = text_field(&started.playlist, limits::MAX_STREAM_TEXT_CHARS, "playlist")?;
        let codecs = text_field(&started.codecs, limits::MAX_STREAM_TEXT_CHARS, "codecs")?;
        let started = StreamStarted { playlist, codecs, ..started };
        one(self.emit(now, Audience::All, Event::StreamStarted(started)))
    }

    /// The media origin's health report, for staff.
    pub(super) fn stream_health(
        &mut self,
        now: Millis,
        who: &Identity,
        health: StreamHealth,
    ) -> Result<Accepted, CommandError> {
        require_origin(who)?;
        if health.warnings.len() > limits::MAX_STREAM_WARNINGS {
            return Err(invalid(format!("at most {} warnings", limits::MAX_STREAM_WARNINGS)));
        }
        let warnings = health
            .warnings
            .iter()
            .map(|w| text_field(w, limits::MAX_STREAM_TEXT_CHARS, "warning"))
            .collect::<Result<Vec<_>, _>>()?;
        // For the dashboard: viewers need to know the stream is there, not its bit rate.
        let health = Event::StreamHealth(StreamHealth { warnings, ..health });
        one(self.emit(now, Audience::Staff, health))
    }

    /// The stream ended.
    pub(super) fn stream_ended(
        &mut self,
        now: Millis,
        who: &Identity,
        duration_ms: u64,
    ) -> Result<Accepted, CommandError> {
        require_origin(who)?;
        one(self.emit(now, Audience::All, Event::StreamEnded { duration_ms }))
    }

    /// Shows a product on the stream, with an optional countdown.
    pub(super) fn pin_product(
        &mut self,
        now: Millis,
        who: &Identity,
        product: Product,
        countdown_ends_at: Option<Millis>,
    ) -> Result<Accepted, CommandError> {
        require(matches!(who.role, Role::Host | Role::Merchant))?;
        product.validate()?;
        if countdown_ends_at.is_some_and(|at| at <= now) {
            return Err(invalid("countdown_ends_at is in the past"));
        }
        let existing = self.state.products.iter().find(|p| p.product.id == product.id);
        if existing.is_none() && self.state.products.len() >= limits::MAX_PINNED_PRODUCTS {
            return Err(CommandError::new(
                ErrorCode::TooManyPins,
                format!("at most {} products are pinned at once", limits::MAX_PINNED_PRODUCTS),
            ));
        }
        let sold_out = existing.is_some_and(|p| p.sold_out);
        let pin = ProductPin { product, countdown_ends_at, sold_out };
        one(self.emit(now, Audience::All, Event::ProductPinned { pin }))
    }

    /// Takes a product off the stream.
    pub(super) fn unpin_product(
        &mut self,
        now: Millis,
        who: &Identity,
        product_id: ProductId,
    ) -> Result<Accepted, CommandError> {
        require(matches!(who.role, Role::Host | Role::Merchant))?;
        self.pinned(&product_id)?;
        one(self.emit(now, Audience::All, Event::ProductUnpinned { product_id }))
    }

    /// Marks a pinned product sold out, or back in stock.
    pub(super) fn mark_sold_out(
        &mut self,
        now: Millis,
        who: &Identity,
        product_id: ProductId,
        sold_out: bool,
    ) -> Result<Accepted, CommandError> {
        require(matches!(who.role, Role::Host | Role::Merchant))?;
        if self.pinned(&product_id)?.sold_out == sold_out {
            return Ok(Accepted::none());
        }
        one(self.emit(now, Audience::All, Event::ProductSoldOut { product_id, sold_out }))
    }

    /// A viewer saw or opened a pinned product: counted for the show's report.
    pub(super) fn count_product(
        &mut self,
        now: Millis,
        product_id: ProductId,
        interest: Interest,
    ) -> Result<Accepted, CommandError> {
        self.pinned(&product_id)?;
        let stats = &mut self.window.stats;
        let counts = match interest {
            Interest::Seen => &mut stats.impressions,
            Interest::Opened => &mut stats.clicks,
        };
        *counts.entry(product_id).or_default() += 1;
        self.schedule_flush(now);
        Ok(Accepted::none())
    }

    fn pinned(&self, id: &ProductId) -> Result<&ProductPin, CommandError> {
        self.state.products.iter().find(|p| p.product.id == *id).ok_or_else(|| not_found("pinned product"))
    }
}

/// How far a viewer went with a pinned product.
pub(super) enum Interest {
    /// It was on their screen (an impression).
    Seen,
    /// They opened it (a click).
    Opened,
}
