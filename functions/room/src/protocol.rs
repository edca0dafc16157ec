//! The client-room JSON protocol, version 1: what clients send ([`Command`]), what the room
//! records and fans out ([`Event`]), the frames around them ([`ServerFrame`]) and the stable
//! error codes ([`ErrorCode`]). `docs/protocol.md` documents every one with an example, and a
//! test keeps the two in agreement.

use std::collections::BTreeMap;

use liveshop_identity::Role;
use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, MessageId, Millis, Money, PollId, ProductId, QuestionId, Seq};

pub const PROTOCOL_VERSION: u32 = 1;

/// Limits on what enters the room. Each is checked before anything is decoded or stored.
pub mod limits {
    /// Largest frame a client may send, in bytes.
    pub const MAX_FRAME_BYTES: usize = 8 * 1024;
    /// Longest client-chosen command id, in bytes.
    pub const MAX_ID_BYTES: usize = 64;
    pub const MAX_CHAT_CHARS: usize = 500;
    pub const MAX_QUESTION_CHARS: usize = 300;
    pub const MAX_BANNER_CHARS: usize = 200;
    /// A stream event's texts (playlist path, codecs, a health warning).
    pub const MAX_STREAM_TEXT_CHARS: usize = 200;
    pub const MAX_STREAM_WARNINGS: usize = 4;
    pub const MAX_POLL_QUESTION_CHARS: usize = 200;
    pub const MAX_POLL_OPTION_CHARS: usize = 80;
    pub const MIN_POLL_OPTIONS: usize = 2;
    pub const MAX_POLL_OPTIONS: usize = 6;
    pub const MAX_EMOJIS: usize = 12;
    pub const MAX_EMOJI_BYTES: usize = 32;
    pub const MAX_TERMS: usize = 200;
    pub const MAX_TERM_CHARS: usize = 40;
    pub const MAX_USER_BYTES: usize = 64;
    pub const MAX_PRODUCT_FIELD_CHARS: usize = 300;
    /// Room for a small inline picture (`data:image/...`), which a 300-character URL is not.
    pub const MAX_IMAGE_URL_BYTES: usize = 2048;
    pub const MAX_PINNED_PRODUCTS: usize = 3;
    pub const MIN_TIMEOUT_SECS: u32 = 10;
    pub const MAX_TIMEOUT_SECS: u32 = 24 * 60 * 60;
    pub const MAX_SLOW_MODE_SECS: u32 = 60 * 60;
}

/// Stable error codes. Clients match on these strings; never rename one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    // The frame itself.
    MalformedJson,
    UnknownCommand,
    InvalidArgument,
    PayloadTooLarge,
    UnsupportedVersion,
    // Who may do it.
    Forbidden,
    Banned,
    TimedOut,
    // Pace.
    RateLimited,
    SlowMode,
    DuplicateMessage,
    QuestionRateLimited,
    // Content.
    EmptyMessage,
    MessageTooLong,
    BlockedContent,
    LinkNotAllowed,
    InvalidEmoji,
    // Room rules.
    NotFound,
    PollAlreadyOpen,
    PollClosed,
    AlreadyUpvoted,
    TooManyPins,
    // Connection-level (the host refuses the token before the room sees anything).
    TokenMalformed,
    TokenBadSignature,
    TokenExpired,
    TokenNotYetValid,
    TokenWrongRoom,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A command refused, with a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
    /// When a retry could succeed, for pace errors.
    pub retry_after_ms: Option<u64>,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CommandError { code, message: message.into(), retry_after_ms: None }
    }

    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }
}

/// A product as pinned in the show. The room carries it as data; the shop owns the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub id: ProductId,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Product {
    /// A product the room can carry: an id of 1 to 64 bytes, a title, a short link, a picture by
    /// URL or inline (up to 2 KiB), and a price (if any) in non-negative minor units of a
    /// three-letter ISO 4217 code.
    pub fn validate(&self) -> Result<(), CommandError> {
        let max = limits::MAX_PRODUCT_FIELD_CHARS;
        let id_ok = !self.id.0.is_empty() && self.id.0.len() <= 64;
        let title_ok = !self.title.trim().is_empty() && self.title.chars().count() <= max;
        // Only web links and inline pictures: a `javascript:` URL on a card would run in viewers' pages.
        let web = |u: &str| u.starts_with("https://") || u.starts_with("http://");
        let urls_ok = self.url.as_deref().is_none_or(|u| u.len() <= max && web(u))
            && self.image_url.as_deref().is_none_or(|u| {
                u.len() <= limits::MAX_IMAGE_URL_BYTES && (web(u) || u.starts_with("data:image/"))
            });
        let price_ok = self.price.as_ref().is_none_or(|m| {
            m.minor >= 0 && m.currency.len() == 3 && m.currency.bytes().all(|b| b.is_ascii_uppercase())
        });
        if id_ok && title_ok && urls_ok && price_ok {
            Ok(())
        } else {
            Err(CommandError::new(
                ErrorCode::InvalidArgument,
                "a product needs an id (1-64 bytes), a title, an http(s) link (300 characters), a picture (http(s) or data:image/, 2 KiB) and a price in minor units of an ISO 4217 code",
            ))
        }
    }
}

/// Whether links in viewer chat pass, are refused, or wait for a moderator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPolicy {
    Allow,
    Block,
    Review,
}

/// Which viewer messages wait in the review queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewMode {
    /// Nothing is held; clearly abusive text is still refused.
    Off,
    /// Borderline text (mild profanity, links under `Review`) is held.
    Flagged,
    /// Every viewer message is held (pre-moderation).
    All,
}

/// A change to the room's settings; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_mode_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<LinkPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emojis: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_terms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_terms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_host_chat: Option<bool>,
}

/// A stream that went live (`stream.started`), as the media origin says it and the room relays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamStarted {
    /// The multivariant playlist's path on the node, such as `/hls/demo/master.m3u8`.
    pub playlist: String,
    pub codecs: String,
    pub width: u32,
    pub height: u32,
    /// How long after its capture a frame reached the origin (`crate::timeline`); 0 if unsaid.
    #[serde(default)]
    pub capture_lag_ms: i64,
}

/// How the incoming stream is doing (`stream.health`), every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamHealth {
    pub bitrate_kbps: u32,
    pub fps: u32,
    /// Between the last two keyframes; absent before the second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyframe_interval_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// As in [`StreamStarted`], the least over the interval.
    #[serde(default)]
    pub capture_lag_ms: i64,
}

/// What a client asks the room to do. On the wire: `{"type": "<name>", "id"?: "...", ...fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Command {
    #[serde(rename = "chat.send")]
    #[strum(serialize = "chat.send")]
    ChatSend {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<MessageId>,
    },
    #[serde(rename = "chat.delete")]
    #[strum(serialize = "chat.delete")]
    ChatDelete { message_id: MessageId },
    #[serde(rename = "chat.pin")]
    #[strum(serialize = "chat.pin")]
    ChatPin { message_id: MessageId },
    #[serde(rename = "chat.unpin")]
    #[strum(serialize = "chat.unpin")]
    ChatUnpin {},
    #[serde(rename = "mod.approve")]
    #[strum(serialize = "mod.approve")]
    Approve { message_id: MessageId },
    #[serde(rename = "mod.reject")]
    #[strum(serialize = "mod.reject")]
    Reject { message_id: MessageId },
    #[serde(rename = "mod.timeout")]
    #[strum(serialize = "mod.timeout")]
    Timeout { user: String, seconds: u32 },
    #[serde(rename = "mod.ban")]
    #[strum(serialize = "mod.ban")]
    Ban { user: String },
    #[serde(rename = "mod.unban")]
    #[strum(serialize = "mod.unban")]
    Unban { user: String },
    #[serde(rename = "mod.shadow_ban")]
    #[strum(serialize = "mod.shadow_ban")]
    ShadowBan { user: String },
    #[serde(rename = "mod.unshadow_ban")]
    #[strum(serialize = "mod.unshadow_ban")]
    UnshadowBan { user: String },
    #[serde(rename = "mod.settings")]
    #[strum(serialize = "mod.settings")]
    Settings {
        #[serde(flatten)]
        patch: SettingsPatch,
    },
    #[serde(rename = "react")]
    #[strum(serialize = "react")]
    React { emoji: String },
    #[serde(rename = "poll.open")]
    #[strum(serialize = "poll.open")]
    PollOpen { question: String, options: Vec<String> },
    #[serde(rename = "poll.vote")]
    #[strum(serialize = "poll.vote")]
    PollVote { poll_id: PollId, option: u8 },
    #[serde(rename = "poll.close")]
    #[strum(serialize = "poll.close")]
    PollClose { poll_id: PollId },
    #[serde(rename = "question.ask")]
    #[strum(serialize = "question.ask")]
    QuestionAsk { text: String },
    #[serde(rename = "question.upvote")]
    #[strum(serialize = "question.upvote")]
    QuestionUpvote { question_id: QuestionId },
    #[serde(rename = "question.answer")]
    #[strum(serialize = "question.answer")]
    QuestionAnswer { question_id: QuestionId },
    #[serde(rename = "question.pin")]
    #[strum(serialize = "question.pin")]
    QuestionPin { question_id: QuestionId },
    #[serde(rename = "question.unpin")]
    #[strum(serialize = "question.unpin")]
    QuestionUnpin {},
    #[serde(rename = "banner.set")]
    #[strum(serialize = "banner.set")]
    BannerSet { text: String },
    #[serde(rename = "banner.clear")]
    #[strum(serialize = "banner.clear")]
    BannerClear {},
    /// The media origin (as a host): the host's stream went live.
    #[serde(rename = "stream.started")]
    #[strum(serialize = "stream.started")]
    StreamStarted(StreamStarted),
    /// The media origin (as a host): how the incoming stream is doing, every few seconds.
    #[serde(rename = "stream.health")]
    #[strum(serialize = "stream.health")]
    StreamHealth(StreamHealth),
    /// The media origin (as a host): the stream ended; the playlist is now the recording.
    #[serde(rename = "stream.ended")]
    #[strum(serialize = "stream.ended")]
    StreamEnded { duration_ms: u64 },
    #[serde(rename = "product.pin")]
    #[strum(serialize = "product.pin")]
    ProductPin {
        product: Product,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        countdown_ends_at: Option<Millis>,
    },
    #[serde(rename = "product.unpin")]
    #[strum(serialize = "product.unpin")]
    ProductUnpin { product_id: ProductId },
    #[serde(rename = "product.sold_out")]
    #[strum(serialize = "product.sold_out")]
    ProductSoldOut { product_id: ProductId, sold_out: bool },
    #[serde(rename = "product.impression")]
    #[strum(serialize = "product.impression")]
    ProductImpression { product_id: ProductId },
    #[serde(rename = "product.click")]
    #[strum(serialize = "product.click")]
    ProductClick { product_id: ProductId },
}

impl Command {
    pub fn name(&self) -> &'static str {
        self.into()
    }

    /// Signals are lossy by design (aggregated before they are stored) and never acknowledged.
    pub fn is_signal(&self) -> bool {
        matches!(
            self,
            Command::React { .. } | Command::ProductImpression { .. } | Command::ProductClick { .. }
        )
    }
}

/// A decoded client frame: the command and the client's id for matching the `ack` or `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    pub id: Option<String>,
    pub command: Command,
}

/// Decodes one client frame. Every way it can fail maps to one [`ErrorCode`]; the id is returned
/// with the error when it could be read, so the client can match the refusal.
pub fn decode(text: &str) -> Result<ClientFrame, (Option<String>, CommandError)> {
    use serde_json::Value;
    if text.len() > limits::MAX_FRAME_BYTES {
        let msg = format!("frames are limited to {} bytes", limits::MAX_FRAME_BYTES);
        return Err((None, CommandError::new(ErrorCode::PayloadTooLarge, msg)));
    }
    let mut map = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            let e = CommandError::new(ErrorCode::MalformedJson, "a frame is a JSON object");
            return Err((None, e));
        }
        Err(e) => return Err((None, CommandError::new(ErrorCode::MalformedJson, e.to_string()))),
    };
    let id = match map.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= limits::MAX_ID_BYTES => Some(s),
        Some(_) => {
            let msg = format!("id is a string of 1 to {} bytes", limits::MAX_ID_BYTES);
            return Err((None, CommandError::new(ErrorCode::InvalidArgument, msg)));
        }
    };
    let fail = |code, msg: String| Err((id.clone(), CommandError::new(code, msg)));
    match map.remove("v") {
        None => {}
        Some(Value::Number(n)) if n.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
        Some(v) => {
            return fail(ErrorCode::UnsupportedVersion, format!("version {v} is not spoken here; use 1"));
        }
    }
    match map.get("type") {
        Some(Value::String(t)) if <Command as strum::VariantNames>::VARIANTS.contains(&t.as_str()) => {}
        Some(Value::String(t)) => {
            let t: String = t.chars().take(40).collect();
            return fail(ErrorCode::UnknownCommand, format!("unknown command type {t:?}"));
        }
        _ => return fail(ErrorCode::UnknownCommand, "a frame needs a string \"type\"".into()),
    }
    match serde_json::from_value::<Command>(Value::Object(map)) {
        Ok(command) => Ok(ClientFrame { id, command }),
        Err(e) => fail(ErrorCode::InvalidArgument, e.to_string()),
    }
}

/// A chat message as everyone who may see it sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub id: MessageId,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: Role,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    pub at: Millis,
}

/// Why a message waits for a moderator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    Flagged,
    Link,
    PreModeration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub id: QuestionId,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub text: String,
    pub at: Millis,
    pub upvotes: u32,
    pub answered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollInfo {
    pub id: PollId,
    pub question: String,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPin {
    pub product: Product,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countdown_ends_at: Option<Millis>,
    pub sold_out: bool,
}

/// The settings every client may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicSettings {
    pub slow_mode_secs: u32,
    pub links: LinkPolicy,
    pub emojis: Vec<String>,
    /// Viewer pages hold the host's own chat lines until the video reaches them, as they do
    /// pins and polls (`crate::timeline`); other chat is always shown at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync_host_chat: bool,
}

/// A moderator's action, recorded for the other moderators (and the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ModAction {
    Delete { message_id: MessageId },
    Approve { message_id: MessageId },
    Reject { message_id: MessageId },
    Timeout { user: String, until: Millis },
    Ban { user: String },
    Unban { user: String },
    ShadowBan { user: String },
    UnshadowBan { user: String },
    Settings { patch: SettingsPatch },
}

/// Analytics increments flushed from the room's aggregation window: what the staff's `stats`
/// frame shows and what [`crate::analytics::Measures`] adds up per slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsDelta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub impressions: BTreeMap<ProductId, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clicks: BTreeMap<ProductId, u64>,
    /// Watch time of the socket viewers' visits that ended.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub socket_watch_ms: u64,
    /// A new peak of concurrent viewers, when one was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_viewers: Option<u32>,
    /// Watch time of viewers on the public feed (counted by the host's heartbeats, in total:
    /// they have no subject).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub feed_watch_ms: u64,
    /// Viewers watching at the end of the window, when the count changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<u32>,
    /// Visits begun and ended in the window (sockets and feed).
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub joins: u32,
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub leaves: u32,
    /// The ended visits by length (buckets of [`crate::analytics::WATCH_BOUNDS_SECS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended: Vec<u32>,
    /// Visitors who came ([`crate::analytics::visitor_hash`]), for the distinct count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrived: Vec<u64>,
    /// Reaction taps.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub reactions: u32,
}

impl StatsDelta {
    /// Counts an ended visit of `ms`.
    pub fn visit_ended(&mut self, ms: Millis) {
        self.leaves += 1;
        crate::analytics::count_visit(&mut self.ended, ms);
    }

    /// Counts visits that ended elsewhere (the host's feed counter), by length bucket.
    pub fn visits_ended(&mut self, ended: &[u32]) {
        if ended.is_empty() {
            return;
        }
        self.ended.resize(crate::analytics::WATCH_BUCKETS, 0);
        for (total, n) in self.ended.iter_mut().zip(ended) {
            *total = total.saturating_add(*n);
            self.leaves = self.leaves.saturating_add(*n);
        }
    }
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What happened in the room. Every event is durable: it takes the next `seq`, is appended to the
/// log, and changes the room's state only through `state::RoomState::apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames)]
#[serde(tag = "type")]
pub enum Event {
    #[serde(rename = "chat.message")]
    #[strum(serialize = "chat.message")]
    ChatMessage { message: ChatMessage },
    #[serde(rename = "chat.held")]
    #[strum(serialize = "chat.held")]
    ChatHeld { message: ChatMessage, reason: HoldReason },
    #[serde(rename = "chat.deleted")]
    #[strum(serialize = "chat.deleted")]
    ChatDeleted { message_id: MessageId },
    #[serde(rename = "chat.pinned")]
    #[strum(serialize = "chat.pinned")]
    ChatPinned { message: ChatMessage },
    #[serde(rename = "chat.unpinned")]
    #[strum(serialize = "chat.unpinned")]
    ChatUnpinned {},
    #[serde(rename = "mod.action")]
    #[strum(serialize = "mod.action")]
    ModAction {
        by: String,
        /// The role `by` acted in: a sanction binds staff only when a host imposed it. Absent in
        /// events logged before roles were recorded, which count as a moderator's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by_role: Option<Role>,
        #[serde(flatten)]
        action: ModAction,
    },
    /// A staff identity the room has now met (connected, sent a command, or vouched for by the
    /// host shell, as a show's creator is): remembered for good, so a moderator can never
    /// sanction staff, online or not.
    #[serde(rename = "staff.admitted")]
    #[strum(serialize = "staff.admitted")]
    StaffAdmitted { user: String, role: Role },
    #[serde(rename = "settings.changed")]
    #[strum(serialize = "settings.changed")]
    SettingsChanged { settings: PublicSettings },
    #[serde(rename = "poll.opened")]
    #[strum(serialize = "poll.opened")]
    PollOpened { poll: PollInfo },
    #[serde(rename = "poll.voted")]
    #[strum(serialize = "poll.voted")]
    PollVoted {
        poll_id: PollId,
        user: String,
        option: u8,
        /// The voter's guest device: one vote per device, whatever its subjects.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    #[serde(rename = "poll.closed")]
    #[strum(serialize = "poll.closed")]
    PollClosed { poll_id: PollId, counts: Vec<u32>, total: u32 },
    #[serde(rename = "question.asked")]
    #[strum(serialize = "question.asked")]
    QuestionAsked { question: Question },
    #[serde(rename = "question.upvoted")]
    #[strum(serialize = "question.upvoted")]
    QuestionUpvoted { question_id: QuestionId, user: String, upvotes: u32 },
    #[serde(rename = "question.answered")]
    #[strum(serialize = "question.answered")]
    QuestionAnswered { question_id: QuestionId },
    #[serde(rename = "question.pinned")]
    #[strum(serialize = "question.pinned")]
    QuestionPinned { question_id: QuestionId },
    #[serde(rename = "question.unpinned")]
    #[strum(serialize = "question.unpinned")]
    QuestionUnpinned {},
    #[serde(rename = "banner.set")]
    #[strum(serialize = "banner.set")]
    BannerSet { text: String },
    #[serde(rename = "banner.cleared")]
    #[strum(serialize = "banner.cleared")]
    BannerCleared {},
    #[serde(rename = "stream.started")]
    #[strum(serialize = "stream.started")]
    StreamStarted(StreamStarted),
    #[serde(rename = "stream.health")]
    #[strum(serialize = "stream.health")]
    StreamHealth(StreamHealth),
    #[serde(rename = "stream.ended")]
    #[strum(serialize = "stream.ended")]
    StreamEnded { duration_ms: u64 },
    #[serde(rename = "product.pinned")]
    #[strum(serialize = "product.pinned")]
    ProductPinned { pin: ProductPin },
    #[serde(rename = "product.unpinned")]
    #[strum(serialize = "product.unpinned")]
    ProductUnpinned { product_id: ProductId },
    #[serde(rename = "product.sold_out")]
    #[strum(serialize = "product.sold_out")]
    ProductSoldOut { product_id: ProductId, sold_out: bool },
    #[serde(rename = "product.countdown_ended")]
    #[strum(serialize = "product.countdown_ended")]
    ProductCountdownEnded { product_id: ProductId },
    #[serde(rename = "stats")]
    #[strum(serialize = "stats")]
    Stats {
        #[serde(flatten)]
        delta: StatsDelta,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        self.into()
    }
}

/// Who may see an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    All,
    /// Moderators and hosts.
    Moderators,
    /// Moderators, hosts and merchants.
    Staff,
    /// One user's own connections (their vote; a shadow-banned sender's own messages).
    User(String),
}

impl Audience {
    pub fn admits(&self, subject: &str, role: Role) -> bool {
        match self {
            Audience::All => true,
            Audience::Moderators => role.can_moderate(),
            Audience::Staff => role.is_staff(),
            Audience::User(u) => u == subject,
        }
    }
}

/// The `you` of a welcome frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct You {
    pub subject: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Frames the room sends. Events are flattened into `{"type", "epoch", "seq", "at", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, strum::IntoStaticStr, strum::VariantNames)]
#[serde(tag = "type")]
pub enum ServerFrame {
    /// The first frame on every connection: who you are, where the log stands, and either
    /// `resumed: true` (the missed events follow) or the room's current `state`.
    #[serde(rename = "welcome")]
    #[strum(serialize = "welcome")]
    Welcome {
        v: u32,
        epoch: Epoch,
        seq: Seq,
        /// The room's clock, so clients can count down to deal ends without trusting theirs.
        now: Millis,
        you: You,
        resumed: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<Box<crate::view::RoomView>>,
    },
    /// A command was accepted and, unless it was a signal, is durable. `seq` is the event it made.
    #[serde(rename = "ack")]
    #[strum(serialize = "ack")]
    Ack {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<Seq>,
        /// True when the message waits for a moderator.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        held: bool,
    },
    #[serde(rename = "error")]
    #[strum(serialize = "error")]
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Reaction taps of the last window, aggregated. Latest state, not logged.
    #[serde(rename = "reactions")]
    #[strum(serialize = "reactions")]
    Reactions { epoch: Epoch, seq: Seq, counts: BTreeMap<String, u32> },
    /// The open poll's live tally. Latest state, not logged.
    #[serde(rename = "poll.tally")]
    #[strum(serialize = "poll.tally")]
    PollTally { epoch: Epoch, seq: Seq, poll_id: PollId, counts: Vec<u32>, total: u32 },
    /// Current and peak viewers. Latest state, not logged.
    #[serde(rename = "presence")]
    #[strum(serialize = "presence")]
    Presence { epoch: Epoch, seq: Seq, viewers: u32, peak: u32 },
}

/// A logged event as it goes on the wire. The room writes `EventFrame<&Event>`, so fan-out
/// does not clone the event; clients read `EventFrame<Event>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFrame<E = Event> {
    pub epoch: Epoch,
    pub seq: Seq,
    pub at: Millis,
    /// The video's time the event belongs to, once a stream gave the room its clock
    /// (`crate::timeline`): the viewer page shows on-video events when the playing frame's
    /// PROGRAM-DATE-TIME reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_at: Option<Millis>,
    #[serde(flatten)]
    pub event: E,
}

impl EventFrame {
    /// The `(epoch, seq)` of a logged event's frame, read from its first bytes (an `EventFrame`
    /// is written `epoch`, `seq`, `at` first), so hosts that label frames (SSE ids) need not
    /// parse each one. `None` for every other frame.
    pub fn position(frame: &str) -> Option<(Epoch, Seq)> {
        let rest = frame.strip_prefix(r#"{"epoch":"#)?;
        let (epoch, rest) = rest.split_once(',')?;
        let (seq, rest) = rest.strip_prefix(r#""seq":"#)?.split_once(',')?;
        rest.starts_with(r#""at":"#).then_some(())?;
        Some((Epoch(epoch.parse().ok()?), Seq(seq.parse().ok()?)))
    }
}

impl From<CommandError> for ServerFrame {
    fn from(e: CommandError) -> Self {
        ServerFrame::Error { id: None, code: e.code, message: e.message, retry_after_ms: e.retry_after_ms }
    }
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    // Our own types always serialize: string keys, no floats, no foreign Serialize impls.
    serde_json::to_string(value).expect("protocol types serialize")
}
