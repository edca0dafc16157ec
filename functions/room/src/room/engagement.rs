//! What viewers do besides chatting: reactions (aggregated per window), polls (one vote per
//! viewer and device) and questions (asked, upvoted once, answered, pinned).

use super::*;

impl Room {
    /// Counts a tap into the aggregation window.
    pub(super) fn react(&mut self, now: Millis, emoji: String) -> Result<Accepted, CommandError> {
        if !self.state.settings.emojis.contains(&emoji) {
            return Err(CommandError::new(ErrorCode::InvalidEmoji, "not one of this room's reactions"));
        }
        *self.window.reactions.entry(emoji).or_default() += 1;
        self.window.stats.reactions += 1;
        self.schedule_flush(now);
        Ok(Accepted::none())
    }

    /// Opens a poll (one at a time).
    pub(super) fn open_poll(
        &mut self,
        now: Millis,
        who: &Identity,
        question: String,
        options: Vec<String>,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        let question = text_field(&question, limits::MAX_POLL_QUESTION_CHARS, "question")?;
        if !(limits::MIN_POLL_OPTIONS..=limits::MAX_POLL_OPTIONS).contains(&options.len()) {
            return Err(invalid(format!(
                "a poll has {} to {} options",
                limits::MIN_POLL_OPTIONS,
                limits::MAX_POLL_OPTIONS
            )));
        }
        let options = options
            .iter()
            .map(|o| text_field(o, limits::MAX_POLL_OPTION_CHARS, "option"))
            .collect::<Result<Vec<_>, _>>()?;
        if self.state.poll.as_ref().is_some_and(|p| p.open) {
            return Err(CommandError::new(ErrorCode::PollAlreadyOpen, "close the open poll first"));
        }
        let poll = PollInfo { id: PollId(self.journal.next_seq().0), question, options };
        one(self.emit(now, Audience::All, Event::PollOpened { poll }))
    }

    /// Counts one vote per viewer and device; a viewer may change it while the poll is open.
    pub(super) fn vote(
        &mut self,
        now: Millis,
        who: &Identity,
        poll_id: PollId,
        option: u8,
    ) -> Result<Accepted, CommandError> {
        let poll = self.poll(poll_id)?;
        if usize::from(option) >= poll.info.options.len() {
            return Err(invalid("no such option"));
        }
        let counted = who.device.as_ref().and_then(|d| poll.devices.get(d));
        if poll.votes.get(&who.subject) == Some(&option) && counted.is_none_or(|s| *s == who.subject) {
            return Ok(Accepted::none());
        }
        self.window.tally_dirty = true;
        self.schedule_flush(now);
        let (user, device) = (who.subject.clone(), who.device.clone());
        let event = Event::PollVoted { poll_id, user: user.clone(), option, device };
        one(self.emit(now, Audience::User(user), event))
    }

    /// Closes a poll with its final counts.
    pub(super) fn close_poll(
        &mut self,
        now: Millis,
        who: &Identity,
        poll_id: PollId,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        let counts = self.poll(poll_id)?.counts();
        let total = counts.iter().sum();
        one(self.emit(now, Audience::All, Event::PollClosed { poll_id, counts, total }))
    }

    /// One upvote per viewer and question.
    pub(super) fn upvote(
        &mut self,
        now: Millis,
        who: &Identity,
        question_id: QuestionId,
    ) -> Result<Accepted, CommandError> {
        let q = self.question(question_id, who)?;
        if q.upvoters.contains(&who.subject) {
            return Err(CommandError::new(ErrorCode::AlreadyUpvoted, "one upvote per question"));
        }
        let (upvotes, audience) = (q.question.upvotes + 1, q.audience.clone());
        let user = who.subject.clone();
        one(self.emit(now, audience, Event::QuestionUpvoted { question_id, user, upvotes }))
    }

    /// Marks a question answered (once).
    pub(super) fn answer_question(
        &mut self,
        now: Millis,
        who: &Identity,
        question_id: QuestionId,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        if self.question(question_id, who)?.question.answered {
            return Ok(Accepted::none());
        }
        one(self.emit(now, Audience::All, Event::QuestionAnswered { question_id }))
    }

    /// Pins a question for everyone.
    pub(super) fn pin_question(
        &mut self,
        now: Millis,
        who: &Identity,
        question_id: QuestionId,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        self.question(question_id, who)?;
        one(self.emit(now, Audience::All, Event::QuestionPinned { question_id }))
    }

    /// Takes the pinned question down.
    pub(super) fn unpin_question(&mut self, now: Millis, who: &Identity) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        self.state.pinned_question.ok_or_else(|| not_found("pinned question"))?;
        one(self.emit(now, Audience::All, Event::QuestionUnpinned {}))
    }

    pub(super) fn ask(
        &mut self,
        now: Millis,
        who: &Identity,
        text: String,
    ) -> Result<Accepted, CommandError> {
        self.may_speak(who, now)?;
        let text = text_field(&text, limits::MAX_QUESTION_CHARS, "question")?;
        if let Some(&at) = self.state.last_asked.get(&who.subject)
            && now < at + QUESTION_INTERVAL_MS
        {
            let e = CommandError::new(ErrorCode::QuestionRateLimited, "one question a minute");
            return Err(e.retry_after(at + QUESTION_INTERVAL_MS - now));
        }
        // Questions have no review queue: a link chat would hold is refused; borderline text
        // passes (the host reads questions before answering them).
        match self.judge(&text, who.role.is_staff()) {
            Verdict::Refuse(code) => return Err(CommandError::new(code, refusal(code))),
            Verdict::Hold(HoldReason::Link) => {
                return Err(CommandError::new(ErrorCode::LinkNotAllowed, refusal(ErrorCode::LinkNotAllowed)));
            }
            Verdict::Hold(_) | Verdict::Pass => {}
        }
        let question = Question {
            id: QuestionId(self.journal.next_seq().0),
            user: who.subject.clone(),
            name: who.name.clone(),
            text,
            at: now,
            upvotes: 0,
            answered: false,
        };
        let audience = self.audience_of(&who.subject, who.role);
        Ok(Accepted { seq: Some(self.emit(now, audience, Event::QuestionAsked { question })), held: false })
    }

    fn poll(&self, id: PollId) -> Result<&crate::state::Poll, CommandError> {
        match &self.state.poll {
            Some(p) if p.info.id == id && p.open => Ok(p),
            Some(p) if p.info.id == id => Err(CommandError::new(ErrorCode::PollClosed, "the poll is closed")),
            _ => Err(not_found("poll")),
        }
    }

    fn question(&self, id: QuestionId, who: &Identity) -> Result<&crate::state::AskedQuestion, CommandError> {
        self.state
            .questions
            .get(&id)
            .filter(|q| q.audience.admits(&who.subject, who.role))
            .ok_or_else(|| not_found("question"))
    }
}
