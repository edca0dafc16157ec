//! The room's durable state and the one function that changes it, [`RoomState::apply`].
//!
//! Every change goes through an [`Event`], so replaying a snapshot plus the log after it gives
//! back exactly the live state. Only ordered maps are used: iteration order and the serialized
//! snapshot are deterministic on every host.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use liveshop_identity::Role;
use serde::{Deserialize, Serialize};

use crate::analytics::Measures;
use crate::ids::{MessageId, Millis, ProductId, QuestionId};
use crate::protocol::{
    Audience, ChatMessage, Event, HoldReason, LinkPolicy, ModAction, PollInfo, ProductPin, PublicSettings,
    Question, ReviewMode, SettingsPatch,
};
use crate::timeline::Timeline;

/// Messages kept for replay on join.
pub const HISTORY_LEN: usize = 100;
/// Held messages kept for review; the oldest are dropped past this.
pub const HELD_LEN: usize = 200;
/// Questions kept; the oldest answered (then oldest) are dropped past this.
pub const QUESTIONS_LEN: usize = 200;
/// How long a user's last message counts for duplicate suppression.
pub const DUPLICATE_WINDOW_MS: Millis = 30_000;

pub const DEFAULT_EMOJIS: [&str; 6] = ["❤️", "🔥", "😂", "👏", "😮", "🛍️"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub slow_mode_secs: u32,
    pub links: LinkPolicy,
    pub review: ReviewMode,
    pub emojis: Vec<String>,
    pub blocked_terms: Vec<String>,
    pub allowed_terms: Vec<String>,
    #[serde(default)]
    pub sync_host_chat: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            slow_mode_secs: 0,
            links: LinkPolicy::Block,
            review: ReviewMode::Flagged,
            emojis: DEFAULT_EMOJIS.iter().map(|e| e.to_string()).collect(),
            blocked_terms: Vec::new(),
            allowed_terms: Vec::new(),
            sync_host_chat: false,
        }
    }
}

impl Settings {
    pub fn public(&self) -> PublicSettings {
        PublicSettings {
            slow_mode_secs: self.slow_mode_secs,
            links: self.links,
            emojis: self.emojis.clone(),
            sync_host_chat: self.sync_host_chat,
        }
    }

    pub(crate) fn patch(&mut self, p: &SettingsPatch) {
        if let Some(v) = p.slow_mode_secs {
            self.slow_mode_secs = v;
        }
        if let Some(v) = p.links {
            self.links = v;
        }
        if let Some(v) = p.review {
            self.review = v;
        }
        if let Some(v) = &p.emojis {
            self.emojis = v.clone();
        }
        if let Some(v) = &p.blocked_terms {
            self.blocked_terms = v.clone();
        }
        if let Some(v) = &p.allowed_terms {
            self.allowed_terms = v.clone();
        }
        if let Some(v) = p.sync_host_chat {
            self.sync_host_chat = v;
        }
    }
}

/// A message in the replay history, with who may see it (a shadow-banned sender's own messages
/// are in history for them alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    pub message: ChatMessage,
    pub audience: Audience,
}

/// A message waiting for a moderator, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub message: ChatMessage,
    pub reason: HoldReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    pub info: PollInfo,
    pub open: bool,
    /// One vote per user: the option index they chose last.
    pub votes: BTreeMap<String, u8>,
    /// The subject whose vote counts for each guest device: a device votes once, whatever
    /// guest tokens it holds.
    #[serde(default)]
    pub devices: BTreeMap<String, String>,
}

impl Poll {
    pub fn counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.info.options.len()];
        for &o in self.votes.values() {
            if let Some(c) = counts.get_mut(usize::from(o)) {
                *c += 1;
            }
        }
        counts
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskedQuestion {
    pub question: Question,
    /// `User(asker)` when the asker is shadow-banned.
    pub audience: Audience,
    pub upvoters: BTreeSet<String>,
}

/// What a user last said, for slow mode and duplicate suppression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSaid {
    pub at: Millis,
    pub skeleton: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub impressions: BTreeMap<ProductId, u64>,
    pub clicks: BTreeMap<ProductId, u64>,
    /// Watch time of socket viewers' ended visits, in total.
    #[serde(default)]
    pub socket_watch_ms: u64,
    pub peak_viewers: u32,
    /// Watch time of viewers on the public feed, in total.
    #[serde(default)]
    pub feed_watch_ms: u64,
}

/// Everything about a room that must survive a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    pub settings: Settings,
    pub history: VecDeque<Posted>,
    pub held: BTreeMap<MessageId, Held>,
    pub pinned_message: Option<ChatMessage>,
    pub bans: BTreeSet<String>,
    pub shadow_bans: BTreeSet<String>,
    /// Users timed out, until when.
    pub timeouts: BTreeMap<String, Millis>,
    pub last_said: BTreeMap<String, LastSaid>,
    pub poll: Option<Poll>,
    pub questions: BTreeMap<QuestionId, AskedQuestion>,
    pub pinned_question: Option<QuestionId>,
    pub last_asked: BTreeMap<String, Millis>,
    pub banner: Option<String>,
    pub products: Vec<ProductPin>,
    pub stats: Stats,
    /// The show's measures over time (see [`crate::analytics`]); not in any client's view.
    #[serde(default)]
    pub measures: Measures,
    /// Measures are not kept (see `Room::keep_measures`); not stored.
    #[serde(skip)]
    pub measures_off: bool,
    /// Every staff subject the room has met, with the highest role it came in.
    #[serde(default)]
    pub staff: BTreeMap<String, Role>,
    /// The highest role among those who imposed a user's standing sanctions (ban, timeout,
    /// shadow ban): a moderator's sanction never binds staff, a host's binds all but hosts.
    #[serde(default)]
    pub sanctioned_by: BTreeMap<String, Role>,
    /// The video's clock and the replay's moments (see [`crate::timeline`]).
    #[serde(default)]
    pub timeline: Timeline,
}

impl RoomState {
    /// Applies one logged event. Total: an event that no longer matches the state (a pin of a
    /// message deleted since) changes nothing rather than failing, so replay never stops.
    pub fn apply(&mut self, at: Millis, audience: &Audience, event: &Event) {
        if !self.measures_off {
            self.measures.record(at, audience, event);
        }
        self.timeline.record(at, audience, event);
        match event {
            Event::ChatMessage { message } => {
                // An approved message counts from when it was written, so approval does not
                // restart its author's slow mode.
                if self.held.remove(&message.id).is_none() {
                    self.last_said.insert(
                        message.user.clone(),
                        LastSaid { at, skeleton: crate::filter::skeleton(&message.text) },
                    );
                }
                self.history.push_back(Posted { message: message.clone(), audience: audience.clone() });
                while self.history.len() > HISTORY_LEN {
                    self.history.pop_front();
                }
            }
            Event::ChatHeld { message, reason } => {
                self.last_said.insert(
                    message.user.clone(),
                    LastSaid { at, skeleton: crate::filter::skeleton(&message.text) },
                );
                self.held.insert(message.id, Held { message: message.clone(), reason: *reason });
                while self.held.len() > HELD_LEN {
                    self.held.pop_first();
                }
            }
            Event::ChatDeleted { message_id } => {
                self.history.retain(|p| p.message.id != *message_id);
                self.held.remove(message_id);
                if self.pinned_message.as_ref().is_some_and(|m| m.id == *message_id) {
                    self.pinned_message = None;
                }
            }
            Event::ChatPinned { message } => self.pinned_message = Some(message.clone()),
            Event::ChatUnpinned {} => self.pinned_message = None,
            Event::ModAction { action, by_role, .. } => {
                self.apply_mod(action, by_role.unwrap_or(Role::Moderator))
            }
            Event::StaffAdmitted { user, role } => {
                let known = self.staff.entry(user.clone()).or_insert(*role);
                *known = higher(*known, *role);
            }
            // The public half of a settings change; the patch itself came with the mod.action.
            Event::SettingsChanged { .. } => {}
            Event::PollOpened { poll } => {
                self.poll = Some(Poll {
                    info: poll.clone(),
                    open: true,
                    votes: BTreeMap::new(),
                    devices: BTreeMap::new(),
                });
            }
            Event::PollVoted { poll_id, user, option, device } => {
                if let Some(p) = self.poll.as_mut().filter(|p| p.info.id == *poll_id && p.open) {
                    // Another subject's vote from the same device is folded into this one.
                    if let Some(d) = device
                        && let Some(earlier) = p.devices.insert(d.clone(), user.clone())
                        && earlier != *user
                    {
                        p.votes.remove(&earlier);
                    }
                    p.votes.insert(user.clone(), *option);
                }
            }
            Event::PollClosed { poll_id, .. } => {
                if let Some(p) = self.poll.as_mut().filter(|p| p.info.id == *poll_id) {
                    p.open = false;
                }
            }
            Event::QuestionAsked { question } => {
                self.last_asked.insert(question.user.clone(), at);
                self.questions.insert(
                    question.id,
                    AskedQuestion {
                        question: question.clone(),
                        audience: audience.clone(),
                        upvoters: BTreeSet::new(),
                    },
                );
                while self.questions.len() > QUESTIONS_LEN {
                    let victim = self
                        .questions
                        .iter()
                        .find(|(id, q)| q.question.answered && Some(**id) != self.pinned_question)
                        .or_else(|| self.questions.iter().find(|(id, _)| Some(**id) != self.pinned_question))
                        .map(|(id, _)| *id);
                    match victim {
                        Some(id) => self.questions.remove(&id),
                        None => break,
                    };
                }
            }
            Event::QuestionUpvoted { question_id, user, .. } => {
                if let Some(q) = self.questions.get_mut(question_id)
                    && q.upvoters.insert(user.clone())
                {
                    q.question.upvotes += 1;
                }
            }
            Event::QuestionAnswered { question_id } => {
                if let Some(q) = self.questions.get_mut(question_id) {
                    q.question.answered = true;
                }
            }
            Event::QuestionPinned { question_id } => self.pinned_question = Some(*question_id),
            Event::QuestionUnpinned {} => self.pinned_question = None,
            Event::BannerSet { text } => self.banner = Some(text.clone()),
            Event::BannerCleared {} => self.banner = None,
            // Relayed, and the video's clock ([`Timeline::record`]).
            Event::StreamStarted(_) | Event::StreamHealth(_) | Event::StreamEnded { .. } => {}
            Event::ProductPinned { pin } => {
                self.products.retain(|p| p.product.id != pin.product.id);
                self.products.push(pin.clone());
            }
            Event::ProductUnpinned { product_id } => self.products.retain(|p| p.product.id != *product_id),
            Event::ProductSoldOut { product_id, sold_out } => {
                if let Some(p) = self.products.iter_mut().find(|p| p.product.id == *product_id) {
                    p.sold_out = *sold_out;
                }
            }
            Event::ProductCountdownEnded { product_id } => {
                if let Some(p) = self.products.iter_mut().find(|p| p.product.id == *product_id) {
                    p.countdown_ends_at = None;
                }
            }
            Event::Stats { delta } => {
                self.forget_expired(at);
                let s = &mut self.stats;
                for (k, v) in &delta.impressions {
                    *s.impressions.entry(k.clone()).or_default() += v;
                }
                for (k, v) in &delta.clicks {
                    *s.clicks.entry(k.clone()).or_default() += v;
                }
                s.socket_watch_ms += delta.socket_watch_ms;
                if let Some(p) = delta.peak_viewers {
                    s.peak_viewers = s.peak_viewers.max(p);
                }
                s.feed_watch_ms += delta.feed_watch_ms;
                if !self.measures_off {
                    self.measures.add(at, delta);
                }
            }
        }
    }

    fn apply_mod(&mut self, action: &ModAction, by: Role) {
        if let ModAction::Timeout { user, .. } | ModAction::Ban { user } | ModAction::ShadowBan { user } =
            action
        {
            let known = self.sanctioned_by.entry(user.clone()).or_insert(by);
            *known = higher(*known, by);
        }
        match action {
            // Deletion and approval change state through their public events.
            ModAction::Delete { .. } | ModAction::Approve { .. } => {}
            ModAction::Reject { message_id } => {
                self.held.remove(message_id);
            }
            ModAction::Timeout { user, until } => {
                self.timeouts.insert(user.clone(), *until);
            }
            ModAction::Ban { user } => {
                self.bans.insert(user.clone());
                self.timeouts.remove(user);
            }
            ModAction::Unban { user } => {
                self.bans.remove(user);
                self.timeouts.remove(user);
                self.forget_sanctioner(user);
            }
            ModAction::ShadowBan { user } => {
                self.shadow_bans.insert(user.clone());
            }
            ModAction::UnshadowBan { user } => {
                self.shadow_bans.remove(user);
                self.forget_sanctioner(user);
            }
            ModAction::Settings { patch } => self.settings.patch(patch),
        }
    }

    /// Drops per-user entries no rule can consult any more, so a room's state does not grow
    /// with everyone who ever spoke. Runs inside `apply` (on the periodic stats event), keyed
    /// to the event's time, so replay prunes exactly as the live room did.
    fn forget_expired(&mut self, now: Millis) {
        let slow_max = u64::from(crate::protocol::limits::MAX_SLOW_MODE_SECS) * 1000;
        let said_horizon = now.saturating_sub(slow_max.max(DUPLICATE_WINDOW_MS));
        self.last_said.retain(|_, l| l.at >= said_horizon);
        let asked_horizon = now.saturating_sub(crate::QUESTION_INTERVAL_MS);
        self.last_asked.retain(|_, at| *at >= asked_horizon);
        self.timeouts.retain(|_, until| *until > now);
        let (bans, shadow, timeouts) = (&self.bans, &self.shadow_bans, &self.timeouts);
        self.sanctioned_by.retain(|u, _| bans.contains(u) || shadow.contains(u) || timeouts.contains_key(u));
    }

    fn forget_sanctioner(&mut self, user: &str) {
        if !self.bans.contains(user) && !self.shadow_bans.contains(user) && !self.timeouts.contains_key(user)
        {
            self.sanctioned_by.remove(user);
        }
    }

    /// Whether `user`'s sanctions bind them when they come as `role`: always a viewer, staff only
    /// when a host imposed them, a host never (a host can always lift what binds others).
    pub fn sanction_binds(&self, user: &str, role: Role) -> bool {
        match role {
            Role::Viewer => true,
            Role::Host => false,
            Role::Moderator | Role::Merchant => self.sanctioned_by.get(user) == Some(&Role::Host),
        }
    }

    /// Whether `user`, coming as `role`, is banned here.
    pub fn banned(&self, user: &str, role: Role) -> bool {
        self.bans.contains(user) && self.sanction_binds(user, role)
    }

    /// The timeout still running for `user` at `now`, if any (whether it binds is
    /// [`RoomState::sanction_binds`]).
    pub fn timed_out_until(&self, user: &str, now: Millis) -> Option<Millis> {
        self.timeouts.get(user).copied().filter(|&until| until > now)
    }

    pub fn find_message(&self, id: MessageId) -> Option<&ChatMessage> {
        self.history
            .iter()
            .map(|p| &p.message)
            .find(|m| m.id == id)
            .or_else(|| self.held.get(&id).map(|h| &h.message))
    }
}

/// The higher of two roles in the room's order of authority: viewer, merchant, moderator, host.
pub fn higher(a: Role, b: Role) -> Role {
    if authority(b) > authority(a) { b } else { a }
}

/// A role's authority over the room, for comparing who may sanction whom.
pub fn authority(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::Merchant => 1,
        Role::Moderator => 2,
        Role::Host => 3,
    }
}
