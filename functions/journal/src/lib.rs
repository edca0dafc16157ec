//! # liveshop-journal: the durable log every actor keeps
//!
//! A room and a shop change state only through events, and both survive restarts the same way.
//! This crate is that way, once. What it stores, under an actor's own keys:
//!
//! - `meta`: the actor's [`Epoch`], written before anything else, so a client that saw the
//!   epoch can resume after a revival even if nothing was logged yet;
//! - `log/<seq>`: one record per event, zero-padded so key order is seq order;
//! - `snapshot`: the state as of some seq, rewritten every [`Policy::snapshot_every`] events,
//!   after which records older than the last [`Policy::retain`] are deleted.
//!
//! Restoring reads the snapshot and applies the records after it, so the result equals the live
//! state as long as every change went through the same `apply`. The journal is sans-IO: it
//! returns [`Write`]s and the actor hands them to its host with its other outputs.
//!
//! ```
//! use liveshop_journal::{Entry, Epoch, Journal, Policy, Seq, Write};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Added { seq: Seq, n: u64 }
//! impl Entry for Added { fn seq(&self) -> Seq { self.seq } }
//!
//! let policy = Policy { snapshot_every: 2, retain: 0 };
//! let mut journal = Journal::new(Epoch(7), policy);
//! let mut store = std::collections::BTreeMap::new();
//! let mut total = 0u64;
//! for n in [3, 4, 5] {
//!     let entry = Added { seq: journal.next_seq(), n };
//!     total += n;
//!     for w in journal.open().into_iter().chain(journal.append(&entry, &total)) {
//!         match w {
//!             Write::Put { key, value } => { store.insert(key, value); }
//!             Write::Delete { key } => { store.remove(&key); }
//!         }
//!     }
//! }
//! let back = Journal::restore(store.into_iter().collect(), Epoch(1), policy, |t: &mut u64, e: &Added| *t += e.n).unwrap();
//! assert_eq!((back.state, back.journal.seq(), back.journal.epoch()), (12, Seq(3), Epoch(7)));
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as the host's clock said when it called the actor.
pub type Millis = u64;

/// Position in an actor's event log. Every durable event takes the next one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

/// Names one history of an actor: a client whose `(epoch, seq)` is from another epoch cannot
/// resume. Hosts keep it below 2^53 so JavaScript holds it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

/// Storage keys.
pub mod keys {
    use crate::Seq;
    pub const META: &str = "meta";
    pub const SNAPSHOT: &str = "snapshot";
    pub const LOG_PREFIX: &str = "log/";
    pub fn log(seq: Seq) -> String {
        format!("{LOG_PREFIX}{:020}", seq.0)
    }
}

/// A logged record: it knows its position.
pub trait Entry: Serialize + DeserializeOwned {
    fn seq(&self) -> Seq;
}

/// A storage write the journal asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// When to snapshot and how much log to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A snapshot is written after this many events.
    pub snapshot_every: u64,
    /// Records kept behind the head (for clients that resume); older ones are deleted when a
    /// snapshot is written.
    pub retain: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the log has a gap: expected seq {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
}

#[derive(Serialize, Deserialize)]
struct Meta {
    epoch: Epoch,
}

#[derive(Deserialize)]
struct Snapshot<S> {
    seq: Seq,
    state: S,
}

/// Borrowed, so writing a snapshot does not clone the state.
#[derive(Serialize)]
struct SnapshotRef<'a, S> {
    seq: Seq,
    state: &'a S,
}

/// Where an actor's log stands.
#[derive(Debug, Clone)]
pub struct Journal {
    epoch: Epoch,
    seq: Seq,
    snap_seq: Seq,
    /// Highest seq whose record has been deleted from storage.
    deleted_through: Seq,
    needs_meta: bool,
    policy: Policy,
}

/// What [`Journal::restore`] rebuilt.
pub struct Restored<S, E> {
    pub journal: Journal,
    pub state: S,
    /// Every stored record, oldest first (those before the snapshot too: resumable clients need them).
    pub entries: Vec<E>,
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Actors' own types: string keys, no floats that could fail.
    serde_json::to_vec(value).expect("journal records serialize")
}

impl Journal {
    /// The journal of an actor with no history, in a new epoch.
    pub fn new(epoch: Epoch, policy: Policy) -> Journal {
        Journal { epoch, seq: Seq(0), snap_seq: Seq(0), deleted_through: Seq(0), needs_meta: true, policy }
    }

    /// Rebuilds from everything the actor stored (any order), applying the records after the
    /// snapshot. With nothing stored, a new journal in `new_epoch` and the default state.
    pub fn restore<S, E>(
        records: Vec<(String, Vec<u8>)>,
        new_epoch: Epoch,
        policy: Policy,
        mut apply: impl FnMut(&mut S, &E),
    ) -> Result<Restored<S, E>, RestoreError>
    where
        S: DeserializeOwned + Default,
        E: Entry,
    {
        fn parse<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, RestoreError> {
            serde_json::from_slice(value)
                .map_err(|e| RestoreError::Corrupt { key: key.to_string(), reason: e.to_string() })
        }
        let mut meta: Option<Meta> = None;
        let mut snapshot: Option<Snapshot<S>> = None;
        let mut entries: Vec<E> = Vec::new();
        for (key, value) in &records {
            match key.as_str() {
                keys::META => meta = Some(parse(key, value)?),
                keys::SNAPSHOT => snapshot = Some(parse(key, value)?),
                k if k.starts_with(keys::LOG_PREFIX) => entries.push(parse(key, value)?),
                _ => {}
            }
        }
        let Some(meta) = meta else {
            if records.iter().any(|(k, _)| k == keys::SNAPSHOT || k.starts_with(keys::LOG_PREFIX)) {
                return Err(RestoreError::Corrupt { key: keys::META.into(), reason: "missing".into() });
            }
            return Ok(Restored { journal: Journal::new(new_epoch, policy), state: S::default(), entries });
        };
        entries.sort_by_key(|e| e.seq());
        let mut journal = Journal::new(meta.epoch, policy);
        journal.needs_meta = false;
        let mut state = S::default();
        if let Some(s) = snapshot {
            state = s.state;
            journal.seq = s.seq;
            journal.snap_seq = s.seq;
        }
        journal.deleted_through =
            Seq(entries.first().map_or(journal.snap_seq.0, |e| e.seq().0.saturating_sub(1)));
        for e in &entries {
            if e.seq() > journal.seq {
                if e.seq() != journal.seq.next() {
                    return Err(RestoreError::Gap { expected: journal.seq.0 + 1, found: e.seq().0 });
                }
                apply(&mut state, e);
                journal.seq = e.seq();
            }
        }
        Ok(Restored { journal, state, entries })
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The seq of the last recorded event.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// The seq the next event will take (ids of messages, orders... are made from it).
    pub fn next_seq(&self) -> Seq {
        self.seq.next()
    }

    /// The epoch's record, the first time it is asked for.
    pub fn open(&mut self) -> Option<Write> {
        if !self.needs_meta {
            return None;
        }
        self.needs_meta = false;
        Some(Write::Put { key: keys::META.into(), value: to_json(&Meta { epoch: self.epoch }) })
    }

    /// Records `entry`, which must take [`Journal::next_seq`], with `state` already including
    /// it: the record's write and, when due, a snapshot and the deletion of records no longer
    /// retained.
    pub fn append<S: Serialize, E: Entry>(&mut self, entry: &E, state: &S) -> Vec<Write> {
        debug_assert_eq!(entry.seq(), self.next_seq(), "entries are appended in seq order");
        self.seq = entry.seq();
        let mut writes = vec![Write::Put { key: keys::log(self.seq), value: to_json(entry) }];
        if self.seq.0 - self.snap_seq.0 >= self.policy.snapshot_every {
            let snap = SnapshotRef { seq: self.seq, state };
            writes.push(Write::Put { key: keys::SNAPSHOT.into(), value: to_json(&snap) });
            self.snap_seq = self.seq;
            let through = self.seq.0.saturating_sub(self.policy.retain);
            writes.extend(
                (self.deleted_through.0 + 1..=through).map(|s| Write::Delete { key: keys::log(Seq(s)) }),
            );
            self.deleted_through = Seq(through.max(self.deleted_through.0));
        }
        writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct E(Seq);
    impl Entry for E {
        fn seq(&self) -> Seq {
            self.0
        }
    }

    fn run(policy: Policy, n: u64) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut j = Journal::new(Epoch(1), policy);
        let mut store = std::collections::BTreeMap::new();
        for i in 1..=n {
            for w in j.open().into_iter().chain(j.append(&E(Seq(i)), &i)) {
                match w {
                    Write::Put { key, value } => store.insert(key, value),
                    Write::Delete { key } => store.remove(&key),
                };
            }
        }
        store
    }

    #[test]
    fn compaction_keeps_the_retained_tail_and_restore_continues_the_count() {
        let policy = Policy { snapshot_every: 10, retain: 15 };
        let store = run(policy, 47);
        let logs: Vec<&String> = store.keys().filter(|k| k.starts_with(keys::LOG_PREFIX)).collect();
        // Snapshot at 40; records after 40 - 15 = 25 are kept.
        assert_eq!(logs.len(), 47 - 25);
        let back =
            Journal::restore(store.into_iter().collect(), Epoch(9), policy, |s: &mut u64, e: &E| *s = e.0.0)
                .unwrap();
        assert_eq!((back.state, back.journal.seq(), back.journal.epoch()), (47, Seq(47), Epoch(1)));
        assert_eq!(back.entries.len(), 22);
    }

    #[test]
    fn a_gap_or_a_missing_meta_is_refused() {
        let policy = Policy { snapshot_every: 100, retain: 0 };
        let mut store = run(policy, 5);
        store.remove(&keys::log(Seq(3)));
        let err =
            Journal::restore::<u64, E>(store.clone().into_iter().collect(), Epoch(1), policy, |_, _| {});
        assert_eq!(err.err(), Some(RestoreError::Gap { expected: 3, found: 4 }));
        store.remove(keys::META);
        let err = Journal::restore::<u64, E>(store.into_iter().collect(), Epoch(1), policy, |_, _| {});
        assert!(matches!(err, Err(RestoreError::Corrupt { .. })));
    }
}
