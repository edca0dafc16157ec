//! The show's measures as the room keeps them: audience, engagement and the show's moments, in
//! 10-second slots, durable with the rest of the room's state.
//!
//! Nothing here grows with the number of messages or viewers: a slot holds counters, the
//! visitors are counted in a fixed-size sketch past [`EXACT_VISITORS`], visit lengths fall into
//! [`WATCH_BOUNDS_SECS`], and moments stop at [`MAX_MOMENTS`]. A show of a day fills at most
//! [`MAX_SLOTS`] slots; later activity adds to the last one. The room fills these from its
//! aggregation window ([`crate::protocol::StatsDelta`], logged as a `stats` event) and from the
//! events it logs anyway (chat, votes, pins, polls, the stream's start and end). The shop keeps
//! the sales side per show on the same slots; `liveshop-analytics` joins the two into a report.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{Millis, ProductId};
use crate::protocol::{Audience, Event, StatsDelta};

/// The length of a slot, the finest grain of every series.
pub const SLOT_MS: Millis = 10_000;
/// Slots kept per show: a day of show. Activity past it adds to the last slot.
pub const MAX_SLOTS: usize = 8_640;
/// Moments kept per show; later ones are not recorded (but the stream's start and end, up to
/// twice as many in all).
pub const MAX_MOMENTS: usize = 500;
/// Upper bounds of the visit-length buckets, in seconds; one more bucket holds longer visits.
pub const WATCH_BOUNDS_SECS: [u64; 9] = [10, 30, 60, 120, 300, 600, 1_200, 1_800, 3_600];
/// Number of visit-length buckets.
pub const WATCH_BUCKETS: usize = WATCH_BOUNDS_SECS.len() + 1;
/// Visitors counted exactly up to this many; past it, in a HyperLogLog of [`SKETCH_REGISTERS`].
pub const EXACT_VISITORS: usize = 512;
/// HyperLogLog registers (2^12: about 1.6 % standard error, 4 KiB).
pub const SKETCH_REGISTERS: usize = 1 << SKETCH_BITS;
const SKETCH_BITS: u32 = 12;

/// A 10-second slot of wall-clock time: `at / SLOT_MS`. The shop's sales use the same slots, so
/// room and shop measures join on the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Slot(pub u64);

impl Slot {
    pub fn of(at: Millis) -> Slot {
        Slot(at / SLOT_MS)
    }

    /// When the slot begins.
    pub fn start(self) -> Millis {
        self.0 * SLOT_MS
    }
}

/// The bucket of [`WATCH_BOUNDS_SECS`] a visit of `ms` falls into.
pub fn watch_bucket(ms: Millis) -> usize {
    WATCH_BOUNDS_SECS.iter().position(|&b| ms < b * 1_000).unwrap_or(WATCH_BOUNDS_SECS.len())
}

/// Counts a visit of `ms` that ended into `buckets` (one per [`WATCH_BOUNDS_SECS`] and longer).
pub fn count_visit(buckets: &mut Vec<u32>, ms: Millis) {
    buckets.resize(WATCH_BUCKETS, 0);
    buckets[watch_bucket(ms)] += 1;
}

/// A visitor's id as the measures count it: a 64-bit hash (FNV-1a, then a mixer so every bit
/// counts), the same on every host, of the device for feed viewers and guests (so a guest who
/// goes from the feed to a socket is one visitor) and of the subject otherwise. Neither the
/// subject nor the device is stored.
pub fn visitor_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Distinct visitors in bounded space: exact while few, a HyperLogLog sketch past
/// [`EXACT_VISITORS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distinct {
    Exact(BTreeSet<u64>),
    /// One register per `2^-SKETCH_BITS` of the hash space; stored in hex.
    Sketch(#[serde(with = "registers")] Vec<u8>),
}

impl Default for Distinct {
    fn default() -> Self {
        Distinct::Exact(BTreeSet::new())
    }
}

impl Distinct {
    pub fn insert(&mut self, hash: u64) {
        match self {
            Distinct::Exact(set) => {
                set.insert(hash);
                if set.len() > EXACT_VISITORS {
                    let mut registers = vec![0u8; SKETCH_REGISTERS];
                    for &h in set.iter() {
                        sketch_insert(&mut registers, h);
                    }
                    *self = Distinct::Sketch(registers);
                }
            }
            Distinct::Sketch(registers) => sketch_insert(registers, hash),
        }
    }

    pub fn extend(&mut self, hashes: &[u64]) {
        hashes.iter().for_each(|&h| self.insert(h));
    }

    /// How many distinct visitors: exact, or the sketch's estimate (with the small-range
    /// correction of the original paper; 64-bit hashes need no large-range one).
    pub fn count(&self) -> u64 {
        match self {
            Distinct::Exact(set) => set.len() as u64,
            Distinct::Sketch(registers) => {
                let m = SKETCH_REGISTERS as f64;
                let sum: f64 = registers.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
                let estimate = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
                let zeros = registers.iter().filter(|&&r| r == 0).count();
                let estimate =
                    if estimate <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { estimate };
                estimate.round() as u64
            }
        }
    }
}

fn sketch_insert(registers: &mut [u8], hash: u64) {
    let index = (hash >> (64 - SKETCH_BITS)) as usize;
    // The rank of the first 1 bit of the rest; a sentinel bit bounds it.
    let rest = (hash << SKETCH_BITS) | (1 << (SKETCH_BITS - 1));
    let rank = rest.leading_zeros() as u8 + 1;
    if let Some(r) = registers.get_mut(index) {
        *r = (*r).max(rank);
    }
}

/// The sketch's registers as a hex string (half the size of a JSON array of numbers).
mod registers {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::SKETCH_REGISTERS;

    pub fn serialize<S: Serializer>(registers: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let text: String = registers
            .iter()
            .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
            .map(char::from)
            .collect();
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("a sketch is hex, two digits a register");
        if text.len() != 2 * SKETCH_REGISTERS {
            return Err(bad());
        }
        (0..SKETCH_REGISTERS)
            .map(|i| text.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad))
            .collect()
    }
}

/// A product's engagement in the room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engagement {
    #[serde(default)]
    pub impressions: u64,
    #[serde(default)]
    pub clicks: u64,
}

/// One slot's audience and engagement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotMeasures {
    /// Viewers watching as last counted in this slot; absent when the count did not change (it
    /// is the previous slot's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewers: Option<u32>,
    /// The most viewers counted at once in this slot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub peak: u32,
    /// Visits begun and ended.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub joins: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub leaves: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chat: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reactions: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub votes: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub products: BTreeMap<ProductId, Engagement>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What happened in the show that its charts mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MomentKind {
    StreamStarted,
    /// The stream started again after it had started before in this show.
    StreamReconnected,
    StreamEnded,
    ProductPinned,
    ProductUnpinned,
    PollOpened,
    PollClosed,
    BannerSet,
    DealStarted,
    DealEnded,
}

/// A marked moment: when, what, and what it was about (a product, a poll's question).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moment {
    pub at: Millis,
    pub kind: MomentKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<ProductId>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

/// Everything the room measures about its show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measures {
    pub slots: BTreeMap<Slot, SlotMeasures>,
    /// Ended visits by length ([`WATCH_BOUNDS_SECS`]).
    pub watch: Vec<u64>,
    /// Watch time of every ended or counted visit, in total.
    #[serde(default)]
    pub watch_ms: u64,
    pub visitors: Distinct,
    pub moments: Vec<Moment>,
}

impl Measures {
    /// The slot `at` falls into; past [`MAX_SLOTS`], the last one.
    fn slot(&mut self, at: Millis) -> &mut SlotMeasures {
        let mut slot = Slot::of(at);
        if self.slots.len() >= MAX_SLOTS
            && !self.slots.contains_key(&slot)
            && let Some((&last, _)) = self.slots.last_key_value()
        {
            slot = last;
        }
        self.slots.entry(slot).or_default()
    }

    /// Adds one aggregation window's increments, logged at `at`.
    pub fn add(&mut self, at: Millis, d: &StatsDelta) {
        let s = self.slot(at);
        if let Some(v) = d.viewers {
            s.viewers = Some(v);
            s.peak = s.peak.max(v);
        }
        s.joins += d.joins;
        s.leaves += d.leaves;
        s.reactions += d.reactions;
        for (p, n) in &d.impressions {
            s.products.entry(p.clone()).or_default().impressions += n;
        }
        for (p, n) in &d.clicks {
            s.products.entry(p.clone()).or_default().clicks += n;
        }
        if !d.ended.is_empty() {
            self.watch.resize(WATCH_BUCKETS, 0);
            for (bucket, n) in self.watch.iter_mut().zip(&d.ended) {
                *bucket += u64::from(*n);
            }
        }
        self.watch_ms += d.socket_watch_ms + d.feed_watch_ms;
        self.visitors.extend(&d.arrived);
    }

    /// Counts what a logged event means for the show: a public chat line, a vote, a moment.
    pub fn record(&mut self, at: Millis, audience: &Audience, event: &Event) {
        let moment = |kind, product_id: Option<&ProductId>, label: &str| Moment {
            at,
            kind,
            product_id: product_id.cloned(),
            label: label.chars().take(80).collect(),
        };
        let moment = match event {
            Event::ChatMessage { .. } if *audience == Audience::All => {
                self.slot(at).chat += 1;
                None
            }
            Event::PollVoted { .. } => {
                self.slot(at).votes += 1;
                None
            }
            Event::StreamStarted(_) => {
                let again = self.moments.iter().any(|m| m.kind == MomentKind::StreamStarted);
                let kind = if again { MomentKind::StreamReconnected } else { MomentKind::StreamStarted };
                Some(moment(kind, None, ""))
            }
            Event::StreamEnded { .. } => Some(moment(MomentKind::StreamEnded, None, "")),
            Event::ProductPinned { pin } => {
                Some(moment(MomentKind::ProductPinned, Some(&pin.product.id), &pin.product.title))
            }
            Event::ProductUnpinned { product_id } => {
                Some(moment(MomentKind::ProductUnpinned, Some(product_id), ""))
            }
            Event::PollOpened { poll } => Some(moment(MomentKind::PollOpened, None, &poll.question)),
            Event::PollClosed { .. } => Some(moment(MomentKind::PollClosed, None, "")),
            Event::BannerSet { text } => Some(moment(MomentKind::BannerSet, None, text)),
            _ => None,
        };
        // The stream's start and end stay marked when other moments filled the list: the
        // report reads the show's end from them.
        let room = |m: &Moment| {
            let stream = matches!(
                m.kind,
                MomentKind::StreamStarted | MomentKind::StreamReconnected | MomentKind::StreamEnded
            );
            self.moments.len() < if stream { 2 * MAX_MOMENTS } else { MAX_MOMENTS }
        };
        if let Some(m) = moment.filter(room) {
            self.moments.push(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_visitors_are_exact_while_few_and_close_past_that() {
        let mut d = Distinct::default();
        for i in 0..300 {
            d.insert(visitor_hash(&format!("viewer-{i}")));
            d.insert(visitor_hash(&format!("viewer-{i}")));
        }
        assert_eq!(d.count(), 300);
        assert!(matches!(d, Distinct::Exact(_)));
        let many: Vec<u64> = (0..50_000).map(|i| visitor_hash(&format!("viewer-{i}"))).collect();
        d.extend(&many);
        d.extend(&many[..1_000]);
        assert!(matches!(&d, Distinct::Sketch(r) if r.len() == SKETCH_REGISTERS));
        let n = d.count() as f64;
        assert!((n - 50_000.0).abs() / 50_000.0 < 0.05, "estimate {n} for 50,000");
        // The stored form survives a round trip, and its size does not grow with the audience.
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.len() < 2 * SKETCH_REGISTERS + 32);
        assert_eq!(serde_json::from_str::<Distinct>(&text).unwrap(), d);
        assert!(
            serde_json::from_str::<Distinct>(r#"{"sketch":"00ff"}"#).is_err(),
            "a sketch of the wrong size"
        );
    }

    #[test]
    fn visits_fall_into_length_buckets() {
        assert_eq!(watch_bucket(0), 0);
        assert_eq!(watch_bucket(9_999), 0);
        assert_eq!(watch_bucket(10_000), 1);
        assert_eq!(watch_bucket(61_000), 3);
        assert_eq!(watch_bucket(3_600_000), WATCH_BOUNDS_SECS.len());
    }

    #[test]
    fn slots_stop_growing_at_a_day_of_show() {
        let mut m = Measures::default();
        for i in 0..(MAX_SLOTS as u64 + 100) {
            m.add(i * SLOT_MS, &StatsDelta { reactions: 1, ..StatsDelta::default() });
        }
        assert_eq!(m.slots.len(), MAX_SLOTS);
        let total: u32 = m.slots.values().map(|s| s.reactions).sum();
        assert_eq!(total, MAX_SLOTS as u32 + 100, "nothing is dropped: it adds to the last slot");
        // A late window of an earlier slot (a slow host) still counts where it belongs.
        m.add(5 * SLOT_MS, &StatsDelta { reactions: 1, ..StatsDelta::default() });
        assert_eq!(m.slots[&Slot(5)].reactions, 2);
    }
}
