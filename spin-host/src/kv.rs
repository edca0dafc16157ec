//! Spin's key-value stores on one SQLite file, as Spin's own default store keeps them: a row per
//! `(store, key)`. Each row also has a version, bumped by every write, which is what a
//! compare-and-swap compares: `swap` writes only if the row is still at the version `cas` read
//! (or still absent), in one statement, so of two instances that read the same version one wins
//! and the other is told to read again.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

/// Keys per page of `list-keys`.
pub const PAGE: usize = 1000;

/// An open store (`spin:key-value`'s `store`, `wasi:keyvalue`'s `bucket`): its label.
pub struct Label(pub String);

/// What `cas::new` read: the value and the version it was read at (`None`: absent).
pub struct Cas {
    pub label: String,
    pub key: String,
    pub current: Option<Vec<u8>>,
    version: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
#[error("key-value store: {0}")]
pub struct KvError(#[from] rusqlite::Error);

/// The stores, shared by every instance.
#[derive(Clone)]
pub struct Kv {
    db: Arc<Mutex<Connection>>,
}

impl Kv {
    pub fn open(path: &Path) -> Result<Kv, KvError> {
        let db = Connection::open(path)?;
        // WAL: a write is durable when it returns, readers do not wait for writers.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                version INTEGER NOT NULL, PRIMARY KEY (store, key))",
        )?;
        Ok(Kv { db: Arc::new(Mutex::new(db)) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent: its statements are atomic.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value and its version.
    pub fn get(&self, store: &str, key: &str) -> Result<Option<(Vec<u8>, i64)>, KvError> {
        let db = self.db();
        let mut q =
            db.prepare_cached("SELECT value, version FROM spin_key_value WHERE store = ? AND key = ?")?;
        Ok(q.query_row(params![store, key], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
    }

    pub fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.db()
            .prepare_cached(
                "INSERT INTO spin_key_value (store, key, value, version) VALUES (?, ?, ?, 1)
                 ON CONFLICT (store, key) DO UPDATE SET value = excluded.value, version = version + 1",
            )?
            .execute(params![store, key, value])?;
        Ok(())
    }

    pub fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        self.db()
            .prepare_cached("DELETE FROM spin_key_value WHERE store = ? AND key = ?")?
            .execute(params![store, key])?;
        Ok(())
    }

    /// Up to [`PAGE`] keys after `cursor` in key order, and the cursor of the next page if
    /// there may be one.
    pub fn keys_after(
        &self,
        store: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        let db = self.db();
        let mut q = db.prepare_cached(
            "SELECT key FROM spin_key_value WHERE store = ? AND key > ? ORDER BY key LIMIT ?",
        )?;
        let keys: Vec<String> = q
            .query_map(params![store, cursor.unwrap_or(""), PAGE as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let next = (keys.len() == PAGE).then(|| keys.last().cloned()).flatten();
        Ok((keys, next))
    }

    /// Reads `key` for a later [`Kv::swap`].
    pub fn cas(&self, store: &str, key: &str) -> Result<Cas, KvError> {
        let read = self.get(store, key)?;
        let version = read.as_ref().map(|(_, v)| *v);
        Ok(Cas { label: store.into(), key: key.into(), current: read.map(|(value, _)| value), version })
    }

    /// Writes `value` if `cas`'s key is still as it was read; `false` if someone wrote first.
    pub fn swap(&self, cas: &Cas, value: &[u8]) -> Result<bool, KvError> {
        let db = self.db();
        let changed = match cas.version {
            Some(version) => db
                .prepare_cached(
                    "UPDATE spin_key_value SET value = ?, version = version + 1
                     WHERE store = ? AND key = ? AND version = ?",
                )?
                .execute(params![value, cas.label, cas.key, version])?,
            None => db
                .prepare_cached(
                    "INSERT INTO spin_key_value (store, key, value, version) VALUES (?, ?, ?, 1)
                     ON CONFLICT (store, key) DO NOTHING",
                )?
                .execute(params![cas.label, cas.key, value])?,
        };
        Ok(changed == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_two_swaps_from_the_same_read_one_wins() {
        let dir = std::env::temp_dir().join(format!("spin-kv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kv = Kv::open(&dir.join("kv.db")).unwrap();
        // Absent: the first insert wins, the second is told to read again.
        let (a, b) = (kv.cas("default", "k").unwrap(), kv.cas("default", "k").unwrap());
        assert!(kv.swap(&a, b"a").unwrap());
        assert!(!kv.swap(&b, b"b").unwrap());
        assert_eq!(kv.get("default", "k").unwrap().unwrap().0, b"a");
        // Present: the same, by version; a plain set moves the version too.
        let (c, d) = (kv.cas("default", "k").unwrap(), kv.cas("default", "k").unwrap());
        assert_eq!(c.current.as_deref(), Some(&b"a"[..]));
        assert!(kv.swap(&c, b"c").unwrap());
        assert!(!kv.swap(&d, b"d").unwrap());
        let e = kv.cas("default", "k").unwrap();
        kv.set("default", "k", b"set").unwrap();
        assert!(!kv.swap(&e, b"e").unwrap());
        assert_eq!(kv.get("default", "k").unwrap().unwrap().0, b"set");
        // Stores are apart.
        assert!(kv.get("other", "k").unwrap().is_none());
    }
}
