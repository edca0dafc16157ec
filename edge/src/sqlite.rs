//! The node's durable storage: one SQLite database (WAL) holding every actor's key-value space
//! and alarm, and the node's own records (shows).
//!
//! Each event's batch commits in one SQLite transaction, so the writes of an event land together
//! or not at all. With WAL and `synchronous=NORMAL` a committed transaction survives the process
//! being killed; `synchronous=FULL` (see [`Durability`]) also survives power loss, at the price of
//! an fsync per event.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use crate::storage::{Batch, Storage, StorageError};

/// How hard a commit tries to be on disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Survives the process dying (kill -9, a crash). The default.
    #[default]
    Process,
    /// Survives the machine losing power: an fsync per commit.
    Power,
}

/// The node's database. Clones share one connection.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: rusqlite::Error) -> StorageError {
    StorageError::Backend(Box::new(e))
}

impl Db {
    pub fn open(path: &Path, durability: Durability) -> Result<Db, StorageError> {
        make_private(path).map_err(|e| StorageError::Backend(Box::new(e)))?;
        let conn = Connection::open(path).map_err(backend)?;
        Self::init(conn, durability)
    }

    /// A private database in memory, for tests.
    pub fn in_memory() -> Result<Db, StorageError> {
        Self::init(Connection::open_in_memory().map_err(backend)?, Durability::Process)
    }

    fn init(conn: Connection, durability: Durability) -> Result<Db, StorageError> {
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = {sync};
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS kv (
                 actor TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                 PRIMARY KEY (actor, key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS alarms (actor TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS records (
                 kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
                 PRIMARY KEY (kind, id)) WITHOUT ROWID;"
        ))
        .map_err(backend)?;
        Ok(Db { conn: Arc::new(Mutex::new(conn)) })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // SQLite rolls back an unfinished transaction itself; a panic elsewhere leaves no half-write.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The storage of one actor, named `kind/id` (for example `room/demo`).
    pub fn actor(&self, name: &str) -> SqliteStorage {
        SqliteStorage { db: self.clone(), actor: name.to_string() }
    }

    /// Every actor's pending alarm, to schedule them again after a restart.
    pub fn alarms(&self) -> Result<Vec<(String, u64)>, StorageError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT actor, at FROM alarms").map_err(backend)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    /// A record of the node's own (a show), as JSON text.
    pub fn record(&self, kind: &str, id: &str) -> Result<Option<String>, StorageError> {
        self.lock()
            .query_row("SELECT body FROM records WHERE kind = ?1 AND id = ?2", params![kind, id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)
    }

    /// Every record of `kind`: `(id, body)`.
    pub fn records(&self, kind: &str) -> Result<Vec<(String, String)>, StorageError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id, body FROM records WHERE kind = ?1").map_err(backend)?;
        let rows = stmt.query_map(params![kind], |r| Ok((r.get(0)?, r.get(1)?))).map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    /// Inserts or replaces a record.
    pub fn put_record(&self, kind: &str, id: &str, body: &str) -> Result<(), StorageError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO records (kind, id, body) VALUES (?1, ?2, ?3)",
                params![kind, id, body],
            )
            .map_err(backend)?;
        Ok(())
    }

    /// Inserts a record; `false` when one with that id exists already.
    pub fn insert_record(&self, kind: &str, id: &str, body: &str) -> Result<bool, StorageError> {
        let n = self
            .lock()
            .execute(
                "INSERT OR IGNORE INTO records (kind, id, body) VALUES (?1, ?2, ?3)",
                params![kind, id, body],
            )
            .map_err(backend)?;
        Ok(n == 1)
    }
}

/// Creates the database file readable and writable by its owner only, and takes every other
/// bit from one (or its `-wal` and `-shm`) that an earlier version left readable by others.
/// SQLite creates `-wal` and `-shm` with the main file's mode.
fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let Ok(meta) = std::fs::metadata(&file) else { continue };
            if meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                tracing::warn!(file = %Path::new(&file).display(), "was readable by others: now 0600");
            }
        }
    }
    Ok(())
}

/// One actor's view of the database.
pub struct SqliteStorage {
    db: Db,
    actor: String,
}

impl Storage for SqliteStorage {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.db
            .lock()
            .query_row("SELECT value FROM kv WHERE actor = ?1 AND key = ?2", params![self.actor, key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let conn = self.db.lock();
        let mut stmt = conn
            .prepare_cached("SELECT key, value FROM kv WHERE actor = ?1 AND key >= ?2 ORDER BY key")
            .map_err(backend)?;
        let rows =
            stmt.query_map(params![self.actor, prefix], |r| Ok((r.get(0)?, r.get(1)?))).map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (key, value): (String, Vec<u8>) = row.map_err(backend)?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key, value));
        }
        Ok(out)
    }

    fn alarm(&self) -> Result<Option<u64>, StorageError> {
        self.db
            .lock()
            .query_row("SELECT at FROM alarms WHERE actor = ?1", params![self.actor], |r| r.get::<_, i64>(0))
            .optional()
            .map(|at| at.map(|a| a as u64))
            .map_err(backend)
    }

    fn commit(&mut self, batch: Batch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.db.lock();
        let tx = conn.transaction().map_err(backend)?;
        {
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO kv (actor, key, value) VALUES (?1, ?2, ?3)")
                .map_err(backend)?;
            let mut del =
                tx.prepare_cached("DELETE FROM kv WHERE actor = ?1 AND key = ?2").map_err(backend)?;
            for (key, value) in &batch.writes {
                match value {
                    Some(v) => put.execute(params![self.actor, key, v]).map_err(backend)?,
                    None => del.execute(params![self.actor, key]).map_err(backend)?,
                };
            }
            match batch.alarm {
                Some(Some(at)) => tx
                    .execute(
                        "INSERT OR REPLACE INTO alarms (actor, at) VALUES (?1, ?2)",
                        params![self.actor, at as i64],
                    )
                    .map_err(backend)?,
                Some(None) => {
                    tx.execute("DELETE FROM alarms WHERE actor = ?1", params![self.actor]).map_err(backend)?
                }
                None => 0,
            };
        }
        tx.commit().map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(writes: &[(&str, Option<&str>)], alarm: Option<Option<u64>>) -> Batch {
        Batch {
            writes: writes.iter().map(|(k, v)| (k.to_string(), v.map(|v| v.as_bytes().to_vec()))).collect(),
            alarm,
        }
    }

    #[test]
    fn actors_have_separate_spaces_and_prefix_scans_stop_at_the_prefix() {
        let db = Db::in_memory().unwrap();
        let mut a = db.actor("room/a");
        let mut b = db.actor("room/b");
        a.commit(batch(&[("log/1", Some("x")), ("log/2", Some("y")), ("meta", Some("m"))], None)).unwrap();
        b.commit(batch(&[("log/1", Some("other"))], Some(Some(5)))).unwrap();
        let keys: Vec<String> = a.list("log/").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["log/1", "log/2"]);
        assert_eq!(a.list("").unwrap().len(), 3);
        assert_eq!(b.get("log/1").unwrap().unwrap(), b"other");
        assert_eq!((a.alarm().unwrap(), b.alarm().unwrap()), (None, Some(5)));
        a.commit(batch(&[("log/1", None)], None)).unwrap();
        b.commit(batch(&[], Some(None))).unwrap();
        assert_eq!(a.get("log/1").unwrap(), None);
        assert_eq!(db.alarms().unwrap(), vec![]);
    }

    #[test]
    fn what_was_committed_is_there_after_reopening() {
        let dir = std::env::temp_dir().join(format!("liveshop-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.db");
        {
            let db = Db::open(&path, Durability::Process).unwrap();
            db.actor("room/a").commit(batch(&[("k", Some("v"))], Some(Some(9)))).unwrap();
            assert!(db.insert_record("show", "demo", "{}").unwrap());
            assert!(!db.insert_record("show", "demo", "{}").unwrap());
        }
        let db = Db::open(&path, Durability::Power).unwrap();
        assert_eq!(db.actor("room/a").get("k").unwrap().unwrap(), b"v");
        assert_eq!(db.alarms().unwrap(), vec![("room/a".to_string(), 9)]);
        assert_eq!(db.record("show", "demo").unwrap().as_deref(), Some("{}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
