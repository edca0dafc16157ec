//! What may be said: the content filter (profanity through look-alikes, spacing and leetspeak;
//! per-room blocked and allowed terms; links) and the token bucket that paces senders.
//!
//! `rustrict` judges profanity: its tables already see through homoglyphs, repeated letters,
//! spacing and leetspeak, which is the part not worth maintaining ourselves. Per-room terms are
//! matched on our own *skeleton* of the text (the same tricks folded away) because rustrict's
//! custom words are process-global and a room's terms must stay the room's.

use std::collections::BTreeMap;

use rustrict::{Censor, Type};
use unicode_normalization::UnicodeNormalization;

use crate::ids::Millis;
use crate::protocol::{ErrorCode, HoldReason, LinkPolicy, ReviewMode};

/// What the filter decided about a piece of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Hold(HoldReason),
    Refuse(ErrorCode),
}

/// The room's moderation settings the filter needs.
pub struct Rules<'a> {
    pub links: LinkPolicy,
    pub review: ReviewMode,
    pub blocked_terms: &'a [String],
    pub allowed_terms: &'a [String],
}

/// Judges text written by a viewer. Staff are not filtered for links or held, but their
/// messages still pass the blocklist: a compromised host token should not spray slurs.
pub fn judge(text: &str, rules: &Rules<'_>, staff: bool, readings: &mut Readings) -> Verdict {
    let cleared = remove_allowed(text, rules.allowed_terms);
    let skel = skeleton(&cleared);
    if rules.blocked_terms.iter().any(|t| {
        let t = skeleton(t);
        !t.is_empty() && skel.contains(&t)
    }) {
        return Verdict::Refuse(ErrorCode::BlockedContent);
    }
    let reading = readings.read(&cleared);
    if reading.refused {
        return Verdict::Refuse(ErrorCode::BlockedContent);
    }
    if staff {
        return Verdict::Pass;
    }
    if has_link(&cleared) {
        match rules.links {
            LinkPolicy::Allow => {}
            LinkPolicy::Block => return Verdict::Refuse(ErrorCode::LinkNotAllowed),
            LinkPolicy::Review if rules.review != ReviewMode::Off => return Verdict::Hold(HoldReason::Link),
            LinkPolicy::Review => return Verdict::Refuse(ErrorCode::LinkNotAllowed),
        }
    }
    match rules.review {
        ReviewMode::All => Verdict::Hold(HoldReason::PreModeration),
        ReviewMode::Flagged if reading.flagged => Verdict::Hold(HoldReason::Flagged),
        _ => Verdict::Pass,
    }
}

/// Texts the profanity model read lately and what it said, so the same words (a flash sale's
/// "sold!", "me too!" from hundreds of viewers) are analysed once: the analysis is most of what
/// a chat message costs. A memo of a pure function, so it changes no verdict; bounded, never
/// stored.
#[derive(Debug, Default)]
pub struct Readings(BTreeMap<String, Reading>);

/// Texts [`Readings`] remembers; past that it starts over.
const READINGS_KEPT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    refused: bool,
    flagged: bool,
}

impl Readings {
    fn read(&mut self, cleared: &str) -> Reading {
        if let Some(known) = self.0.get(cleared) {
            return *known;
        }
        let reading = Reading::of(cleared);
        if self.0.len() >= READINGS_KEPT {
            self.0.clear();
        }
        self.0.insert(cleared.to_owned(), reading);
        reading
    }
}

impl Reading {
    fn of(cleared: &str) -> Reading {
        let analysis = Censor::from_str(cleared).analyze();
        // Calibrated for shopping talk: "sexy dress" or "I hate this colour" are normal here.
        // Only severe text, or clearly profane or offensive text, is refused; the rest of what
        // rustrict flags waits for review. Its leetspeak reading of digits also misfires across
        // words ("question 133"), so a refusal that rests on digits must hold without them too
        // ("f4ck" still reads as "fck"); otherwise the text is only flagged.
        let refused = is_refused(&analysis)
            && (!cleared.bytes().any(|b| b.is_ascii_digit()) || {
                let digitless: String = cleared.chars().filter(|c| !c.is_ascii_digit()).collect();
                is_refused(&Censor::from_str(&digitless).analyze())
            });
        Reading { refused, flagged: analysis.is(Type::INAPPROPRIATE & Type::MODERATE_OR_HIGHER) }
    }
}

fn is_refused(analysis: &Type) -> bool {
    analysis.is(Type::INAPPROPRIATE & Type::SEVERE)
        || analysis.is((Type::PROFANE | Type::OFFENSIVE) & Type::MODERATE_OR_HIGHER)
}

/// Removes the room's allowed terms (case-insensitively) so they cannot trip the blocklist.
fn remove_allowed(text: &str, allowed: &[String]) -> String {
    let mut out = text.to_string();
    for term in allowed.iter().filter(|t| !t.is_empty()) {
        let lower = out.to_lowercase();
        let needle = term.to_lowercase();
        // Lower-casing can change byte lengths outside ASCII; only cut where offsets agree.
        if lower.len() != out.len() {
            continue;
        }
        let mut rebuilt = String::with_capacity(out.len());
        let mut last = 0;
        for (at, _) in lower.match_indices(&needle) {
            rebuilt.push_str(&out[last..at]);
            rebuilt.push(' ');
            last = at + needle.len();
        }
        rebuilt.push_str(&out[last..]);
        out = rebuilt;
    }
    out
}

fn has_link(text: &str) -> bool {
    let mut finder = linkify::LinkFinder::new();
    finder.url_must_have_scheme(false);
    finder.kinds(&[linkify::LinkKind::Url]);
    finder.links(text).next().is_some()
}

/// The text with the usual evasions folded away: compatibility forms (full-width, ligatures,
/// styled letters), accents, common Cyrillic and Greek look-alikes, leetspeak digits and
/// symbols, and everything that is not a letter or digit (so spacing and dots do not hide a
/// word). Used to compare a room's terms with what was written.
pub fn skeleton(text: &str) -> String {
    // Most chat is ASCII: it has no compatibility forms or accents to fold, so the byte-wise
    // path gives the same skeleton without running the normalizer (a chat message's skeleton
    // is taken on every send and again when the message is applied).
    if text.is_ascii() {
        return text.bytes().filter_map(|b| kept(b.to_ascii_lowercase() as char)).collect();
    }
    unicode_skeleton(text)
}

fn unicode_skeleton(text: &str) -> String {
    text.nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .filter_map(kept)
        .collect()
}

/// A lower-case character of the skeleton: look-alikes folded, what is not a letter or digit
/// dropped.
fn kept(c: char) -> Option<char> {
    let c = match c {
        'а' | 'α' | '@' | '4' => 'a',
        'в' | 'β' | '8' => 'b',
        'с' | 'ϲ' | '(' => 'c',
        'е' | 'ε' | '3' => 'e',
        'н' | 'η' => 'h',
        'і' | 'ι' | '1' | '!' | '|' => 'i',
        'к' | 'κ' => 'k',
        'м' | 'μ' => 'm',
        'о' | 'ο' | '0' => 'o',
        'р' | 'ρ' => 'p',
        'ѕ' | '$' | '5' => 's',
        'т' | 'τ' | '7' | '+' => 't',
        'у' | 'γ' => 'y',
        'х' | 'χ' => 'x',
        c => c,
    };
    c.is_alphanumeric().then_some(c)
}

/// Collapses runs of whitespace into one space, drops control and formatting characters
/// (zero-width joiners included: they hide words and break layouts) and trims the ends.
pub fn normalize_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else if c.is_control() || is_invisible(c) {
            continue;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

fn is_invisible(c: char) -> bool {
    // ZWJ stays: emoji sequences need it.
    matches!(c, '\u{200B}' | '\u{200C}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A token bucket in integer milli-tokens, so it is exact and needs no floats. Serializable, for
/// hosts that keep a slow bucket (new guests an hour) in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenBucket {
    milli_tokens: u64,
    at: Millis,
}

/// Shape of a bucket: how many at once, and how often one comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub burst: u64,
    pub refill_every_ms: u64,
}

impl TokenBucket {
    pub fn full(pace: Pace, now: Millis) -> Self {
        TokenBucket { milli_tokens: pace.burst * 1000, at: now }
    }

    /// Whether the bucket has refilled completely by `now`: it then says no more than a new
    /// one would, and a table of buckets may forget it.
    pub fn is_full(&self, pace: Pace, now: Millis) -> bool {
        let refill = now.saturating_sub(self.at).saturating_mul(1000) / pace.refill_every_ms.max(1);
        self.milli_tokens.saturating_add(refill) >= pace.burst * 1000
    }

    /// Thousandths of a token the bucket holds at `now`: the higher, the less limited its owner.
    pub fn level(&self, pace: Pace, now: Millis) -> u64 {
        let refill = now.saturating_sub(self.at).saturating_mul(1000) / pace.refill_every_ms.max(1);
        self.milli_tokens.saturating_add(refill).min(pace.burst * 1000)
    }

    /// Takes one token, or says in how many milliseconds one will be there.
    pub fn take(&mut self, pace: Pace, now: Millis) -> Result<(), u64> {
        let elapsed = now.saturating_sub(self.at);
        let refill = elapsed.saturating_mul(1000) / pace.refill_every_ms.max(1);
        self.milli_tokens = (self.milli_tokens.saturating_add(refill)).min(pace.burst * 1000);
        self.at = now.max(self.at);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            Ok(())
        } else {
            let missing = 1000 - self.milli_tokens;
            Err((missing * pace.refill_every_ms).div_ceil(1000))
        }
    }
}

/// What a per-address limit counts: an IPv4 address, or an IPv6 /64 (one subscriber holds a
/// whole /64, 2^64 addresses). An IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => std::net::IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verdict, judged fresh and again from the memo of readings: both must agree.
    fn judged(text: &str, rules: &Rules<'_>, staff: bool) -> Verdict {
        let mut readings = Readings::default();
        let fresh = judge(text, rules, staff, &mut readings);
        assert_eq!(judge(text, rules, staff, &mut readings), fresh, "{text}: the memo changed the verdict");
        fresh
    }

    #[test]
    fn readings_are_bounded() {
        let mut readings = Readings::default();
        let r = rules(&[], &[]);
        for n in 0..READINGS_KEPT + 10 {
            assert_eq!(judge(&format!("line {n}"), &r, false, &mut readings), Verdict::Pass);
        }
        assert!(readings.0.len() <= READINGS_KEPT);
    }

    #[test]
    fn the_ascii_skeleton_is_the_one_the_normalizer_gives() {
        let every: String = (0u8..128).map(char::from).collect();
        let texts = [every.as_str(), "Love THIS jacket!! 4 real? $5 off @ 10am", "f.u.c.k y0u", "  ", ""];
        for text in texts {
            assert_eq!(skeleton(text), unicode_skeleton(text), "{text:?}");
        }
        assert_eq!(skeleton("Sh1t (ok)"), "shitcok");
    }

    fn rules<'a>(blocked: &'a [String], allowed: &'a [String]) -> Rules<'a> {
        Rules {
            links: LinkPolicy::Block,
            review: ReviewMode::Flagged,
            blocked_terms: blocked,
            allowed_terms: allowed,
        }
    }

    #[test]
    fn room_terms_are_found_through_lookalikes_spacing_and_leetspeak() {
        let blocked = vec!["scam".to_string()];
        for text in ["total scam", "S C A M", "5c4m!", "ѕсаm", "ｓｃａｍ", "s.c.a.m", "sçäm"] {
            assert_eq!(
                judged(text, &rules(&blocked, &[]), false),
                Verdict::Refuse(ErrorCode::BlockedContent),
                "{text}"
            );
        }
        assert_eq!(judged("great scarf", &rules(&blocked, &[]), false), Verdict::Pass);
    }

    #[test]
    fn profanity_is_refused_even_when_disguised() {
        for text in ["fuck you", "f u c k you", "fμck you", "phuck you", "f4ck you", "sh1t"] {
            assert_eq!(
                judged(text, &rules(&[], &[]), false),
                Verdict::Refuse(ErrorCode::BlockedContent),
                "{text}"
            );
        }
    }

    #[test]
    fn shopping_talk_passes_and_borderline_text_waits_for_review() {
        let r = rules(&[], &[]);
        for text in ["Does it come in XL?", "is it too tight", "damn that's cheap", "I hate this colour"] {
            assert_eq!(judged(text, &r, false), Verdict::Pass, "{text}");
        }
        assert_eq!(judged("sexy dress", &r, false), Verdict::Hold(HoldReason::Flagged));
        // Digits misread as leetspeak across words are held, not refused.
        assert_eq!(judged("nice one, question 133?", &r, false), Verdict::Hold(HoldReason::Flagged));
        let off = Rules { review: ReviewMode::Off, ..r };
        assert_eq!(judged("sexy dress", &off, false), Verdict::Pass);
    }

    #[test]
    fn allowed_terms_exempt_a_product_name() {
        let blocked = vec!["ass".to_string()];
        let allowed = vec!["Glass Vase".to_string()];
        assert_eq!(judged("I love the glass vase", &rules(&blocked, &allowed), false), Verdict::Pass);
        assert_eq!(
            judged("I love the glass vase", &rules(&blocked, &[]), false),
            Verdict::Refuse(ErrorCode::BlockedContent)
        );
    }

    #[test]
    fn links_follow_the_room_policy_and_staff_may_post_them() {
        let r = rules(&[], &[]);
        assert_eq!(
            judged("buy at shop.example.com now", &r, false),
            Verdict::Refuse(ErrorCode::LinkNotAllowed)
        );
        assert_eq!(judged("see https://x.test/a", &r, false), Verdict::Refuse(ErrorCode::LinkNotAllowed));
        assert_eq!(judged("see https://x.test/a", &r, true), Verdict::Pass);
        let review = Rules { links: LinkPolicy::Review, ..r };
        assert_eq!(judged("see https://x.test/a", &review, false), Verdict::Hold(HoldReason::Link));
        assert_eq!(judged("no links here. Really.", &review, false), Verdict::Pass);
    }

    #[test]
    fn whitespace_is_normalised_and_invisible_characters_dropped() {
        assert_eq!(normalize_whitespace("  hi \n\t there\u{200B}!  "), "hi there!");
        assert_eq!(normalize_whitespace(" \u{202E} "), "");
    }

    #[test]
    fn a_bucket_allows_its_burst_then_paces() {
        let pace = Pace { burst: 2, refill_every_ms: 1000 };
        let mut b = TokenBucket::full(pace, 0);
        assert_eq!(b.take(pace, 0), Ok(()));
        assert!(!b.is_full(pace, 0));
        assert_eq!(b.take(pace, 0), Ok(()));
        assert_eq!(b.take(pace, 0), Err(1000));
        assert_eq!(b.take(pace, 400), Err(600));
        assert_eq!(b.take(pace, 1000), Ok(()));
        assert!(!b.is_full(pace, 1999) && b.is_full(pace, 3000));
    }

    #[test]
    fn an_ipv6_address_counts_as_its_64_and_a_mapped_ipv4_as_itself() {
        let key = |s: &str| address_key(s.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff::9"), "2001:db8:1:2::");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }
}
