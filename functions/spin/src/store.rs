//! An actor's state in Spin's key-value store, changed only under compare-and-swap.
//!
//! Spin has no single-writer objects: two instances may handle requests for one room at the
//! same moment. So each actor (a room, a shop) is one value under its own key ([`Blob`]: the
//! core's records, the host's records, the alarm), and every event is a transaction
//! ([`transact`]): read the value through `wasi:keyvalue/atomics`' `cas`, rebuild the core,
//! apply the event, and `swap` the new value in, which fails if another instance wrote first.
//! Then the event is applied again to what that instance wrote. Two instances can therefore
//! never both take seq N or both sell the last unit: one of them redoes its event and sees it
//! is gone. Nothing the event produced (reply, frames, webhooks) leaves before its swap
//! succeeded: the output gate the other hosts have. Reads that change nothing never swap.

use std::collections::BTreeMap;

use spin_sdk::experimental::wasi::keyvalue::{atomics, store};

/// The store every key lives in (`key_value_stores` in `spin.toml`).
pub const STORE: &str = "default";
/// Attempts of one event before it is refused with `503 busy`: only under a storm of writes to
/// one actor (each attempt that fails means another event succeeded).
const ATTEMPTS: u32 = 64;

/// One actor's stored state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Blob {
    /// When the core's alarm is due (Spin has no timers: see `crate::alarms`).
    pub alarm: Option<u64>,
    /// What the host keeps beside the core (the show, the shop's claim, secrets).
    pub host: BTreeMap<String, String>,
    /// The core's records (`liveshop-journal`'s keys).
    pub records: BTreeMap<String, Vec<u8>>,
    /// Whether this event changed anything (so it must be swapped in).
    pub dirty: bool,
}

/// The first byte of a stored blob: its layout.
const FORMAT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the key-value store failed: {0}")]
    Store(String),
    #[error("a stored value is damaged")]
    Damaged,
    #[error("too many concurrent writes to one room or shop; retry")]
    Busy,
    #[error("{0}")]
    Core(String),
}

impl Blob {
    pub fn decode(bytes: Option<&[u8]>) -> Result<Blob, StoreError> {
        let Some(bytes) = bytes else { return Ok(Blob::default()) };
        let mut r = Reader(bytes);
        if r.take(1)? != [FORMAT] {
            return Err(StoreError::Damaged);
        }
        let alarm = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| StoreError::Damaged)?);
        let mut blob = Blob { alarm: (alarm != u64::MAX).then_some(alarm), ..Blob::default() };
        for _ in 0..r.count()? {
            let (k, v) = (r.text()?, r.text()?);
            blob.host.insert(k, v);
        }
        for _ in 0..r.count()? {
            let k = r.text()?;
            blob.records.insert(k, r.bytes()?.to_vec());
        }
        Ok(blob)
    }

    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.records.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        let mut out = Vec::with_capacity(size + 64);
        out.push(FORMAT);
        out.extend(self.alarm.unwrap_or(u64::MAX).to_le_bytes());
        let mut put = |b: &[u8]| {
            out.extend((b.len() as u32).to_le_bytes());
            out.extend(b);
        };
        put(&(self.host.len() as u32).to_le_bytes());
        for (k, v) in &self.host {
            put(k.as_bytes());
            put(v.as_bytes());
        }
        put(&(self.records.len() as u32).to_le_bytes());
        for (k, v) in &self.records {
            put(k.as_bytes());
            put(v);
        }
        out
    }

    /// The core's records, for its `restore`.
    pub fn records(&self) -> Vec<(String, Vec<u8>)> {
        self.records.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn write(&mut self, write: liveshop_room::Write) {
        match write {
            liveshop_room::Write::Put { key, value } => {
                self.records.insert(key, value);
            }
            liveshop_room::Write::Delete { key } => {
                self.records.remove(&key);
            }
        }
        self.dirty = true;
    }

    pub fn set_alarm(&mut self, at: Option<u64>) {
        self.dirty |= self.alarm != at;
        self.alarm = at;
    }

    pub fn set_host(&mut self, kind: &str, body: String) {
        self.host.insert(kind.into(), body);
        self.dirty = true;
    }

    /// Whether the alarm is due at `now` (and so runs first in this event).
    pub fn alarm_due(&self, now: u64) -> bool {
        self.alarm.is_some_and(|at| at <= now)
    }
}

/// Counts are stored as 4-byte lengths of their own little-endian bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Damaged);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| StoreError::Damaged)?);
        self.take(len as usize)
    }

    fn text(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| StoreError::Damaged)
    }

    fn count(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.bytes()?.try_into().map_err(|_| StoreError::Damaged)?))
    }
}

fn store_error(e: store::Error) -> StoreError {
    StoreError::Store(format!("{e:?}"))
}

/// What a transaction did besides its own result: how many times it was redone.
pub struct Committed<T> {
    pub value: T,
    pub conflicts: u32,
}

/// Runs `event` on the actor under `key` until its result is swapped in against the value it
/// read (see the module docs). `event` gets a fresh copy of the stored blob on every attempt
/// and must derive everything from it: an attempt that loses is thrown away whole.
pub fn transact<T>(
    key: &str,
    mut event: impl FnMut(&mut Blob) -> Result<T, StoreError>,
) -> Result<Committed<T>, StoreError> {
    let bucket = store::open(STORE).map_err(store_error)?;
    let mut cas = atomics::Cas::new(&bucket, key).map_err(store_error)?;
    for conflicts in 0..ATTEMPTS {
        let current = cas.current().map_err(store_error)?;
        let mut blob = Blob::decode(current.as_deref())?;
        let alarm = blob.alarm;
        let value = event(&mut blob)?;
        if !blob.dirty {
            return Ok(Committed { value, conflicts });
        }
        match atomics::swap(cas, &blob.encode()) {
            Ok(()) => {
                if blob.alarm != alarm {
                    note_alarm(&bucket, key, blob.alarm)?;
                }
                return Ok(Committed { value, conflicts });
            }
            // Someone wrote first: the handle we get back has read what they wrote.
            Err(atomics::CasError::CasFailed(again)) => cas = again,
            Err(atomics::CasError::StoreError(e)) => return Err(store_error(e)),
        }
    }
    Err(StoreError::Busy)
}

/// Where alarms are listed for [`due_alarms`]: `alarm/<actor key>` holds when it is due.
const ALARM_PREFIX: &str = "alarm/";

/// Lists (or, with `None`, unlists) an actor's alarm. The list is a hint for the scheduler's
/// `POST /v1/alarms`: the actor's own blob says whether an alarm is due, and the next event of
/// the actor runs a due alarm anyway, so a stale entry costs one look and a lost one a delay.
fn note_alarm(bucket: &store::Bucket, key: &str, at: Option<u64>) -> Result<(), StoreError> {
    let entry = format!("{ALARM_PREFIX}{key}");
    match at {
        Some(at) => bucket.set(&entry, &at.to_le_bytes()),
        None => bucket.delete(&entry),
    }
    .map_err(store_error)
}

/// The actors (their keys) whose listed alarm is due at `now`.
pub fn due_alarms(now: u64) -> Result<Vec<String>, StoreError> {
    let bucket = store::open(STORE).map_err(store_error)?;
    let (mut due, mut cursor) = (Vec::new(), Some(ALARM_PREFIX.to_string()));
    while let Some(after) = cursor.take() {
        let page = bucket.list_keys(Some(&after)).map_err(store_error)?;
        for entry in page.keys.iter().take_while(|k| k.starts_with(ALARM_PREFIX)) {
            let at = bucket.get(entry).map_err(store_error)?;
            let at = at.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes);
            if at.is_none_or(|at| at <= now) {
                due.push(entry[ALARM_PREFIX.len()..].to_string());
            }
        }
        if page.keys.last().is_some_and(|k| k.starts_with(ALARM_PREFIX)) {
            cursor = page.cursor;
        }
    }
    Ok(due)
}

/// Lists the actor's alarm as its blob now has it (after the scheduler ran it).
pub fn relist_alarm(key: &str) -> Result<(), StoreError> {
    let bucket = store::open(STORE).map_err(store_error)?;
    let blob = Blob::decode(bucket.get(key).map_err(store_error)?.as_deref())?;
    note_alarm(&bucket, key, blob.alarm)
}

/// The actor's blob as stored now, read through `spin:key-value` (no swap follows).
pub async fn read(key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let kv =
        spin_sdk::key_value::Store::open(STORE).await.map_err(|e| StoreError::Store(format!("{e:?}")))?;
    kv.get(key).await.map_err(|e| StoreError::Store(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_reads_back_as_written() {
        let mut blob = Blob { alarm: Some(42), ..Blob::default() };
        blob.set_host("show", "{\"id\":\"x\"}".into());
        blob.write(liveshop_room::Write::Put { key: "log/1".into(), value: vec![0, 1, 255] });
        let back = Blob::decode(Some(&blob.encode())).unwrap();
        assert_eq!((back.alarm, &back.host, &back.records), (blob.alarm, &blob.host, &blob.records));
        assert!(Blob::decode(Some(&blob.encode()[..10])).is_err());
        assert_eq!(Blob::decode(None).unwrap(), Blob::default());
    }
}
