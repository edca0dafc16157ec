//! The room as one client sees it: what a welcome frame carries when the client joins fresh or
//! is too far behind to resume. Each role sees its part: viewers the show, moderators the
//! review queue and sanctions, staff the analytics.

use std::collections::{BTreeMap, BTreeSet};

use liveshop_identity::Role;
use serde::{Deserialize, Serialize};

use crate::ids::{Millis, QuestionId};
use crate::protocol::{Audience, ChatMessage, PollInfo, ProductPin, PublicSettings, Question, ReviewMode};
use crate::state::{Held, RoomState, Stats};

/// Questions a snapshot carries, most upvoted first.
pub const VIEW_QUESTIONS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollView {
    pub poll: PollInfo,
    pub open: bool,
    pub counts: Vec<u32>,
    pub total: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub my_vote: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerationView {
    pub held: Vec<Held>,
    pub bans: BTreeSet<String>,
    pub shadow_bans: BTreeSet<String>,
    pub timeouts: BTreeMap<String, Millis>,
    pub review: ReviewMode,
    pub blocked_terms: Vec<String>,
    pub allowed_terms: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomView {
    pub settings: PublicSettings,
    pub history: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_message: Option<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<PollView>,
    pub questions: Vec<Question>,
    /// The questions (among those) the viewer has upvoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub my_upvotes: Vec<QuestionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_question: Option<QuestionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
    pub products: Vec<ProductPin>,
    pub viewers: u32,
    pub peak_viewers: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<ModerationView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// The video's clock (`crate::timeline`): media time is room time minus this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_lag_ms: Option<i64>,
}

impl RoomView {
    /// The room as `subject`, in `role`, sees it.
    pub fn of(state: &RoomState, subject: &str, role: Role, now: Millis, viewers: u32) -> RoomView {
        Self::build(state, Some(subject), role, now, viewers)
    }

    /// The room as anyone sees it before saying who they are (the public feed): only what is
    /// logged for everyone, nothing of any one viewer's.
    pub fn public(state: &RoomState, now: Millis, viewers: u32) -> RoomView {
        Self::build(state, None, Role::Viewer, now, viewers)
    }

    fn build(state: &RoomState, subject: Option<&str>, role: Role, now: Millis, viewers: u32) -> RoomView {
        let admits = |a: &Audience| subject.map_or(*a == Audience::All, |s| a.admits(s, role));
        let subject = subject.unwrap_or_default();
        let history =
            state.history.iter().filter(|p| admits(&p.audience)).map(|p| p.message.clone()).collect();
        let poll = state.poll.as_ref().map(|p| {
            let counts = p.counts();
            PollView {
                poll: p.info.clone(),
                open: p.open,
                total: counts.iter().sum(),
                counts,
                my_vote: p.votes.get(subject).copied().filter(|_| !subject.is_empty()),
            }
        });
        let mut questions: Vec<Question> =
            state.questions.values().filter(|q| admits(&q.audience)).map(|q| q.question.clone()).collect();
        questions.sort_by(|a, b| b.upvotes.cmp(&a.upvotes).then(a.id.cmp(&b.id)));
        questions.truncate(VIEW_QUESTIONS);
        let my_upvotes = questions
            .iter()
            .filter(|q| {
                !subject.is_empty()
                    && state.questions.get(&q.id).is_some_and(|a| a.upvoters.contains(subject))
            })
            .map(|q| q.id)
            .collect();
        let moderation = role.can_moderate().then(|| ModerationView {
            held: state.held.values().cloned().collect(),
            bans: state.bans.clone(),
            shadow_bans: state.shadow_bans.clone(),
            timeouts: state
                .timeouts
                .iter()
                .filter(|(_, u)| **u > now)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            review: state.settings.review,
            blocked_terms: state.settings.blocked_terms.clone(),
            allowed_terms: state.settings.allowed_terms.clone(),
        });
        RoomView {
            settings: state.settings.public(),
            history,
            pinned_message: state.pinned_message.clone(),
            poll,
            questions,
            my_upvotes,
            pinned_question: state.pinned_question,
            banner: state.banner.clone(),
            products: state.products.clone(),
            viewers,
            peak_viewers: state.stats.peak_viewers.max(viewers),
            moderation,
            stats: role.is_staff().then(|| state.stats.clone()),
            capture_lag_ms: state.timeline.capture_lag_ms,
        }
    }
}
