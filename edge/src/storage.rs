//! Durable storage of one actor, and the per-event transaction the WIT `storage` interface
//! promises: reads see the event's own writes, and all writes of an event (and its alarm change)
//! reach the backend in one [`Storage::commit`] after the event returned, or never.
//!
//! A backend ([`MemoryStorage`] here, SQLite in the node) only needs point reads, prefix scans
//! and an atomic batch apply; the overlay logic lives once, in the host's `Transaction`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A backend failure. The event that hit it traps (on a read) or is not committed (on commit).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// One actor's durable key-value space plus its persisted alarm.
pub trait Storage: Send {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Every entry whose key starts with `prefix`, in ascending key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
    fn alarm(&self) -> Result<Option<u64>, StorageError>;
    /// Applies the whole batch atomically, or nothing of it.
    fn commit(&mut self, batch: Batch) -> Result<(), StorageError>;
}

/// The writes of one event: `None` deletes. `alarm` is `Some` when the event changed the alarm.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    pub alarm: Option<Option<u64>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.alarm.is_none()
    }

    /// Lays `later` over this batch: its writes replace these, its alarm change wins.
    fn absorb(&mut self, later: Batch) {
        self.writes.extend(later.writes);
        if later.alarm.is_some() {
            self.alarm = later.alarm;
        }
    }

    fn pending_under<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Option<Vec<u8>>)> {
        self.writes
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

/// The pending writes of the running event, layered over those of earlier events held for a
/// group commit, layered over a [`Storage`].
#[derive(Debug, Default)]
pub(crate) struct Transaction {
    /// Earlier events' writes, done but not yet committed.
    held: Batch,
    batch: Batch,
}

impl Transaction {
    pub fn get(&self, base: &dyn Storage, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self.batch.writes.get(key).or_else(|| self.held.writes.get(key)) {
            Some(pending) => Ok(pending.clone()),
            None => base.get(key),
        }
    }

    pub fn list(&self, base: &dyn Storage, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let mut pending = self.held.pending_under(prefix).chain(self.batch.pending_under(prefix)).peekable();
        let stored = base.list(prefix)?;
        if pending.peek().is_none() {
            return Ok(stored);
        }
        let mut merged: BTreeMap<String, Vec<u8>> = stored.into_iter().collect();
        for (key, value) in pending {
            match value {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    pub fn put(&mut self, key: String, value: Vec<u8>) {
        self.batch.writes.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: String) {
        self.batch.writes.insert(key, None);
    }

    pub fn alarm(&self, base: &dyn Storage) -> Result<Option<u64>, StorageError> {
        match self.batch.alarm.or(self.held.alarm) {
            Some(pending) => Ok(pending),
            None => base.alarm(),
        }
    }

    pub fn set_alarm(&mut self, at: Option<u64>) {
        self.batch.alarm = Some(at);
    }

    /// The running event's change to the alarm, if it made one.
    pub fn pending_alarm(&self) -> Option<Option<u64>> {
        self.batch.alarm
    }

    /// Ends the event: hands over its batch and starts empty again.
    pub fn take(&mut self) -> Batch {
        std::mem::take(&mut self.batch)
    }

    /// Ends the event, keeping its writes for a later [`Transaction::take_held`]: the next
    /// events read them as if committed.
    pub fn hold(&mut self) {
        let batch = self.take();
        self.held.absorb(batch);
    }

    /// Everything held since the last call, to commit as one batch.
    pub fn take_held(&mut self) -> Batch {
        std::mem::take(&mut self.held)
    }
}

/// In-memory [`Storage`] for tests and benches. Clones share the same data, so a test can keep
/// one handle, drop the actor (hibernation) and revive another from the same state.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<MemoryState>>,
}

#[derive(Debug, Default)]
struct MemoryState {
    entries: BTreeMap<String, Vec<u8>>,
    alarm: Option<u64>,
    fail_commits: bool,
    commits: u64,
}

impl MemoryStorage {
    /// A copy of every committed entry.
    pub fn entries(&self) -> BTreeMap<String, Vec<u8>> {
        self.state().entries.clone()
    }

    /// How many non-empty batches were committed.
    pub fn commits(&self) -> u64 {
        self.state().commits
    }

    /// Makes every following commit fail, to test what a failed commit releases (nothing).
    pub fn fail_commits(&self, fail: bool) {
        self.state().fail_commits = fail;
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // A panic elsewhere cannot leave the maps half-written: every mutation is one statement.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.state().entries.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let state = self.state();
        let under = state
            .entries
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        Ok(under.map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn alarm(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.state().alarm)
    }

    fn commit(&mut self, batch: Batch) -> Result<(), StorageError> {
        let mut state = self.state();
        if state.fail_commits {
            return Err(StorageError::Backend("commit refused (MemoryStorage::fail_commits)".into()));
        }
        if batch.is_empty() {
            return Ok(());
        }
        for (key, value) in batch.writes {
            match value {
                Some(v) => state.entries.insert(key, v),
                None => state.entries.remove(&key),
            };
        }
        if let Some(alarm) = batch.alarm {
            state.alarm = alarm;
        }
        state.commits += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_its_own_writes_and_the_backend_sees_them_only_after_commit() {
        let mut base = MemoryStorage::default();
        let mut seed = Transaction::default();
        seed.put("chat/1".into(), b"a".to_vec());
        seed.put("chat/2".into(), b"b".to_vec());
        seed.put("polls/1".into(), b"p".to_vec());
        base.commit(seed.take()).unwrap();

        let mut tx = Transaction::default();
        tx.delete("chat/1".into());
        tx.put("chat/3".into(), b"c".to_vec());
        assert_eq!(tx.get(&base, "chat/1").unwrap(), None);
        let listed = tx.list(&base, "chat/").unwrap();
        let keys: Vec<_> = listed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["chat/2", "chat/3"]);
        assert_eq!(base.get("chat/1").unwrap(), Some(b"a".to_vec()));

        base.commit(tx.take()).unwrap();
        let keys: Vec<_> = base.entries().into_keys().collect();
        assert_eq!(keys, ["chat/2", "chat/3", "polls/1"]);
    }

    #[test]
    fn held_writes_read_as_committed_until_the_group_takes_them_in_one_batch() {
        let mut base = MemoryStorage::default();
        let mut seed = Transaction::default();
        seed.put("chat/1".into(), b"a".to_vec());
        base.commit(seed.take()).unwrap();

        let mut tx = Transaction::default();
        tx.put("chat/2".into(), b"b".to_vec());
        tx.set_alarm(Some(5));
        tx.hold();
        tx.delete("chat/1".into());
        tx.put("chat/2".into(), b"b2".to_vec());
        assert_eq!(tx.get(&base, "chat/2").unwrap(), Some(b"b2".to_vec()));
        assert_eq!(tx.alarm(&base).unwrap(), Some(5));
        tx.hold();
        tx.put("chat/3".into(), b"c".to_vec());
        let keys: Vec<_> = tx.list(&base, "chat/").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["chat/2", "chat/3"]);
        // The running event's writes are not part of the group until it holds them too.
        drop(tx.take());

        base.commit(tx.take_held()).unwrap();
        assert_eq!(base.commits(), 2);
        let stored: Vec<_> = base.entries().into_iter().collect();
        assert_eq!(stored, [("chat/2".to_string(), b"b2".to_vec())]);
        assert_eq!(base.alarm().unwrap(), Some(5));
    }
}
