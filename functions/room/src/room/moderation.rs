//! Chat moderation: deleting, pinning, holding and releasing messages, timeouts, bans and shadow
//! bans, and the room's moderation settings. Who may sanction whom is `Room::check_target`.

use super::*;

impl Room {
    /// Removes a message for everyone.
    pub(super) fn delete_message(
        &mut self,
        now: Millis,
        who: &Identity,
        message_id: MessageId,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        if self.state.find_message(message_id).is_none()
            && self.state.pinned_message.as_ref().is_none_or(|m| m.id != message_id)
            && !self.state.timeline.replays_message(message_id)
        {
            return Err(not_found("message"));
        }
        self.moderate(now, who, ModAction::Delete { message_id });
        one(self.emit(now, Audience::All, Event::ChatDeleted { message_id }))
    }

    /// Pins a public message above the chat.
    pub(super) fn pin_message(
        &mut self,
        now: Millis,
        who: &Identity,
        message_id: MessageId,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        let message = self
            .state
            .history
            .iter()
            .find(|p| p.message.id == message_id && p.audience == Audience::All)
            .map(|p| p.message.clone())
            .ok_or_else(|| not_found("message"))?;
        one(self.emit(now, Audience::All, Event::ChatPinned { message }))
    }

    /// Takes the pinned message down.
    pub(super) fn unpin_message(&mut self, now: Millis, who: &Identity) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        self.state.pinned_message.as_ref().ok_or_else(|| not_found("pinned message"))?;
        one(self.emit(now, Audience::All, Event::ChatUnpinned {}))
    }

    /// Lets a held message through to those who may see its author.
    pub(super) fn approve(
        &mut self,
        now: Millis,
        who: &Identity,
        message_id: MessageId,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        let message = self
            .state
            .held
            .get(&message_id)
            .map(|h| h.message.clone())
            .ok_or_else(|| not_found("held message"))?;
        self.moderate(now, who, ModAction::Approve { message_id });
        let audience = self.audience_of(&message.user, message.role);
        one(self.emit(now, audience, Event::ChatMessage { message }))
    }

    /// Drops a held message.
    pub(super) fn reject(
        &mut self,
        now: Millis,
        who: &Identity,
        message_id: MessageId,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        self.state.held.get(&message_id).ok_or_else(|| not_found("held message"))?;
        one(self.moderate(now, who, ModAction::Reject { message_id }))
    }

    /// Silences a user for a while, telling their connections.
    pub(super) fn time_out(
        &mut self,
        now: Millis,
        who: &Identity,
        user: String,
        seconds: u32,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        self.check_target(who, &user)?;
        if !(limits::MIN_TIMEOUT_SECS..=limits::MAX_TIMEOUT_SECS).contains(&seconds) {
            return Err(invalid(format!(
                "timeouts last {} to {} seconds",
                limits::MIN_TIMEOUT_SECS,
                limits::MAX_TIMEOUT_SECS
            )));
        }
        let until = now + u64::from(seconds) * 1000;
        let seq = self.moderate(now, who, ModAction::Timeout { user: user.clone(), until });
        let notice =
            CommandError::new(ErrorCode::TimedOut, format!("a moderator timed you out for {seconds} s"))
                .retry_after(until - now);
        for conn in self.bound_conns(&user) {
            self.refuse(conn, None, notice.clone());
        }
        one(seq)
    }

    /// Bans a user and closes their connections.
    pub(super) fn ban(
        &mut self,
        now: Millis,
        who: &Identity,
        user: String,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        self.check_target(who, &user)?;
        if self.state.bans.contains(&user) {
            return Err(CommandError::new(ErrorCode::InvalidArgument, "already banned"));
        }
        let seq = self.moderate(now, who, ModAction::Ban { user: user.clone() });
        for conn in self.bound_conns(&user) {
            self.refuse(conn, None, CommandError::new(ErrorCode::Banned, "a moderator banned you"));
            self.out.push_back(Output::Close { conn, code: CLOSE_BANNED, reason: "banned".into() });
            self.remove_conn(now, conn);
        }
        one(seq)
    }

    /// Lifts a ban or a timeout.
    pub(super) fn unban(
        &mut self,
        now: Millis,
        who: &Identity,
        user: String,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        if !self.state.bans.contains(&user) && self.state.timed_out_until(&user, now).is_none() {
            return Err(not_found("ban or timeout"));
        }
        self.may_lift(who, &user)?;
        one(self.moderate(now, who, ModAction::Unban { user }))
    }

    /// Lets a user keep talking to themselves only.
    pub(super) fn shadow_ban(
        &mut self,
        now: Millis,
        who: &Identity,
        user: String,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        self.check_target(who, &user)?;
        if self.state.shadow_bans.contains(&user) {
            return Err(invalid("already shadow-banned"));
        }
        one(self.moderate(now, who, ModAction::ShadowBan { user }))
    }

    /// Lifts a shadow ban.
    pub(super) fn unshadow_ban(
        &mut self,
        now: Millis,
        who: &Identity,
        user: String,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        if !self.state.shadow_bans.contains(&user) {
            return Err(not_found("shadow ban"));
        }
        self.may_lift(who, &user)?;
        one(self.moderate(now, who, ModAction::UnshadowBan { user }))
    }

    /// Changes the room's moderation settings; viewers hear of the public part.
    pub(super) fn change_settings(
        &mut self,
        now: Millis,
        who: &Identity,
        patch: SettingsPatch,
    ) -> Result<Accepted, CommandError> {
        require(who.role.can_moderate())?;
        let patch = validate_settings(patch)?;
        let before = self.state.settings.public();
        let mut seq = self.moderate(now, who, ModAction::Settings { patch });
        let after = self.state.settings.public();
        if after != before {
            seq = self.emit(now, Audience::All, Event::SettingsChanged { settings: after });
        }
        one(seq)
    }

    fn moderate(&mut self, now: Millis, who: &Identity, action: ModAction) -> Seq {
        let event = Event::ModAction { by: who.subject.clone(), by_role: Some(who.role), action };
        self.emit(now, Audience::Moderators, event)
    }

    /// Who may be sanctioned: never oneself, the media origin or a host; moderators and
    /// merchants only by a host. A target's role is the highest it was ever admitted in,
    /// whether or not it is online.
    fn check_target(&self, who: &Identity, user: &str) -> Result<(), CommandError> {
        if user.is_empty() || user.len() > limits::MAX_USER_BYTES {
            return Err(invalid("user is 1 to 64 bytes"));
        }
        if user == who.subject {
            return Err(invalid("you cannot sanction yourself"));
        }
        if user == MEDIA_ORIGIN {
            return Err(CommandError::new(ErrorCode::Forbidden, "the media origin cannot be sanctioned"));
        }
        let allowed = match self.known_role(user) {
            None | Some(Role::Viewer) => true,
            Some(Role::Host) => false,
            Some(Role::Moderator | Role::Merchant) => who.role == Role::Host,
        };
        if allowed {
            Ok(())
        } else {
            Err(CommandError::new(
                ErrorCode::Forbidden,
                "staff can only be sanctioned by a host, and hosts by nobody",
            ))
        }
    }

    /// A sanction a host imposed is lifted by a host only; a host lifts anything.
    fn may_lift(&self, who: &Identity, user: &str) -> Result<(), CommandError> {
        let by = self.state.sanctioned_by.get(user).copied().unwrap_or(Role::Moderator);
        require(authority(who.role) >= authority(by))
    }

    /// `user`'s connections that its sanctions bind, in the roles they came in.
    fn bound_conns(&self, user: &str) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| c.who.subject == user && self.state.sanction_binds(user, c.who.role))
            .map(|(id, _)| *id)
            .collect()
    }
}
