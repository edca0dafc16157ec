//! Where packaged media lives between the packager and the players: per show, the playlist
//! state, recent parts and segments in memory, and every segment, init and the VOD playlist on
//! disk. Ingest writes through [`ShowStream`]; the HLS handlers read it and park on
//! [`ShowStream::subscribe`] until what they wait for exists.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use tokio::sync::watch;

use crate::fmp4::{TrackInfo, init_segment};
use crate::packager::Packaged;
use crate::playlist::{PartInfo, Playlist, PlaylistConfig, init_name, segment_name};

/// Segments whose parts stay in memory (older parts are no longer listed anywhere).
const PARTS_KEPT_SEGMENTS: u64 = 8;
/// Segments kept in memory besides on disk, for the players near the live edge.
const SEGMENTS_KEPT: u64 = 16;
/// Name of the media playlist, live and on disk.
pub const MEDIA_PLAYLIST: &str = "live.m3u8";
pub const MULTIVARIANT_PLAYLIST: &str = "master.m3u8";

/// All shows this origin has media for, and the thread that writes files.
pub struct Library {
    dir: PathBuf,
    config: PlaylistConfig,
    shows: Mutex<HashMap<String, Arc<ShowStream>>>,
    writer: std::sync::mpsc::Sender<(PathBuf, Bytes)>,
}

impl Library {
    /// Media lives under `dir/<show>/`. Recordings older than `retention` are deleted now.
    pub fn open(
        dir: PathBuf,
        config: PlaylistConfig,
        retention: Option<Duration>,
    ) -> std::io::Result<Library> {
        std::fs::create_dir_all(&dir)?;
        if let Some(keep) = retention {
            prune(&dir, keep, SystemTime::now());
        }
        let (writer, jobs) = std::sync::mpsc::channel::<(PathBuf, Bytes)>();
        // Files are written in order on one thread, so ingest never waits for a disk.
        std::thread::Builder::new().name("media-writer".into()).spawn(move || {
            for (path, bytes) in jobs {
                if let Err(e) = write_atomic(&path, &bytes) {
                    tracing::warn!("writing {}: {e}", path.display());
                }
            }
        })?;
        Ok(Library { dir, config, shows: Mutex::new(HashMap::new()), writer })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live stream of `show`, if it has been published since this process started.
    pub fn get(&self, show: &str) -> Option<Arc<ShowStream>> {
        lock(&self.shows).get(show).cloned()
    }

    /// The stream a new publish of `show` continues (or starts: a recording left on disk by an
    /// earlier process is moved aside to `<show>-<unix seconds>` first).
    pub fn open_show(&self, show: &str) -> Arc<ShowStream> {
        let mut shows = lock(&self.shows);
        if let Some(s) = shows.get(show) {
            return s.clone();
        }
        let dir = self.dir.join(show);
        if dir.exists() {
            let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
            let aside = self.dir.join(format!("{show}-{secs}"));
            if let Err(e) = std::fs::rename(&dir, &aside) {
                tracing::warn!("moving the old recording of {show} aside: {e}");
            }
        }
        let stream = Arc::new(ShowStream {
            dir,
            state: Mutex::new(State {
                playlist: Playlist::new(self.config),
                inits: BTreeMap::new(),
                variant: None,
                parts: BTreeMap::new(),
                segments: BTreeMap::new(),
                segment_buf: Vec::new(),
                rendered: [None, None],
            }),
            changed: watch::channel(0).0,
            writer: self.writer.clone(),
        });
        shows.insert(show.to_string(), stream.clone());
        stream
    }
}

/// What the multivariant playlist says about the current rendition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
}

pub struct ShowStream {
    dir: PathBuf,
    state: Mutex<State>,
    /// Bumped on every change; blocked requests wait on it.
    changed: watch::Sender<u64>,
    writer: std::sync::mpsc::Sender<(PathBuf, Bytes)>,
}

pub struct State {
    pub playlist: Playlist,
    inits: BTreeMap<u32, Bytes>,
    variant: Option<Variant>,
    parts: BTreeMap<(u64, u32), Bytes>,
    segments: BTreeMap<u64, Bytes>,
    segment_buf: Vec<u8>,
    /// The live playlist as last rendered, full and delta: thousands of players woken by one
    /// part get the same text, rendered once.
    rendered: [Option<Bytes>; 2],
}

impl State {
    /// The live media playlist (`skip`: the delta update).
    pub fn live_playlist(&mut self, skip: bool) -> Bytes {
        let slot = &mut self.rendered[usize::from(skip)];
        slot.get_or_insert_with(|| Bytes::from(self.playlist.render(skip, false))).clone()
    }

    pub fn init(&self, n: u32) -> Option<Bytes> {
        self.inits.get(&n).cloned()
    }
    pub fn part(&self, msn: u64, part: u32) -> Option<Bytes> {
        self.parts.get(&(msn, part)).cloned()
    }
    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        self.segments.get(&msn).cloned()
    }

    /// The multivariant playlist, once the first publish has given its codecs.
    pub fn multivariant(&self) -> Option<String> {
        self.variant.as_ref().map(|v| multivariant(v, &self.playlist))
    }
}

impl ShowStream {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new publish, or new codec parameters within one: a new init segment and a
    /// discontinuity.
    pub fn begin(&self, tracks: &[TrackInfo]) {
        let mut s = self.lock();
        let n = s.inits.keys().next_back().map_or(0, |n| n + 1);
        let init = Bytes::from(init_segment(tracks));
        self.write(&init_name(n), init.clone());
        s.inits.insert(n, init);
        let codecs: Vec<String> = tracks.iter().map(TrackInfo::codec_string).collect();
        let resolution = tracks.iter().find_map(|t| match &t.codec {
            crate::fmp4::Codec::H264(sets) => Some((sets.info.width, sets.info.height)),
            crate::fmp4::Codec::Opus { .. } => None,
        });
        s.variant = Some(Variant { codecs: codecs.join(","), resolution });
        s.segment_buf.clear();
        s.playlist.begin_period(n);
        s.rendered = [None, None];
        self.write(MULTIVARIANT_PLAYLIST, Bytes::from(s.multivariant().unwrap_or_default()));
        self.notify();
    }

    pub fn packaged(&self, item: Packaged) {
        let mut guard = self.lock();
        let s = &mut *guard;
        s.rendered = [None, None];
        match item {
            Packaged::Part(part) => {
                let info = PartInfo { duration: part.duration, independent: part.independent };
                let (msn, index) = s.playlist.push_part(info, part.data.len(), part.segment_start);
                s.segment_buf.extend_from_slice(&part.data);
                s.parts.insert((msn, index), Bytes::from(part.data));
            }
            Packaged::SegmentEnd => {
                s.playlist.end_segment();
                let Some(last) = s.playlist.segments().last() else { return };
                let msn = last.msn;
                let bytes = Bytes::from(std::mem::take(&mut s.segment_buf));
                self.write(&segment_name(msn), bytes.clone());
                s.segments.insert(msn, bytes);
                self.write(MEDIA_PLAYLIST, Bytes::from(s.playlist.render(false, true)));
                s.parts.retain(|&(m, _), _| m + PARTS_KEPT_SEGMENTS > msn);
                s.segments.retain(|&m, _| m + SEGMENTS_KEPT > msn);
            }
        }
        drop(guard);
        self.notify();
    }

    /// The publish ended: the playlist gets `EXT-X-ENDLIST` and the VOD copy is final.
    pub fn end(&self) {
        let mut s = self.lock();
        s.playlist.end();
        s.rendered = [None, None];
        self.write(MEDIA_PLAYLIST, Bytes::from(s.playlist.render(false, true)));
        drop(s);
        self.notify();
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn write(&self, name: &str, bytes: Bytes) {
        // The writer thread lives as long as the library; a send fails only at shutdown.
        let _ = self.writer.send((self.dir.join(name), bytes));
    }
}

/// The multivariant playlist: one variant today; AAC audio or more video renditions become
/// more lines here.
pub fn multivariant(v: &Variant, playlist: &Playlist) -> String {
    // Peak bit rate of the segments so far; a guess for a 1080p30 stream before the first one.
    let peak = playlist
        .segments()
        .iter()
        .filter(|s| s.complete && s.duration > 0.5)
        .map(|s| (s.bytes as f64 * 8.0 / s.duration) as u64)
        .max()
        .unwrap_or(6_000_000);
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n");
    out.push_str(&format!("#EXT-X-STREAM-INF:BANDWIDTH={peak},CODECS=\"{}\"", v.codecs));
    if let Some((w, h)) = v.resolution {
        out.push_str(&format!(",RESOLUTION={w}x{h}"));
    }
    out.push_str(&format!("\n{MEDIA_PLAYLIST}\n"));
    out
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// Deletes recordings (show directories) last written before `now - keep`.
fn prune(dir: &Path, keep: Duration, now: SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > keep));
        if old
            && entry.path().is_dir()
            && let Err(e) = std::fs::remove_dir_all(entry.path())
        {
            tracing::warn!("removing old recording {}: {e}", entry.path().display());
        }
    }
}

/// Show ids as the edge node makes them (lower-case letters, digits, dashes; at most 64), which
/// also keeps every path under the media directory.
pub fn valid_show_id(show: &str) -> bool {
    !show.is_empty()
        && show.len() <= 64
        && show.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses `part-<msn>.<part>.m4s`.
pub fn parse_part_name(name: &str) -> Option<(u64, u32)> {
    let (msn, part) = name.strip_prefix("part-")?.strip_suffix(".m4s")?.split_once('.')?;
    Some((msn.parse().ok()?, part.parse().ok()?))
}

/// Parses `seg-<msn>.m4s`.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.strip_suffix(".m4s")?.parse().ok()
}

/// Parses `init-<n>.mp4`.
pub fn parse_init_name(name: &str) -> Option<u32> {
    name.strip_prefix("init-")?.strip_suffix(".mp4")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playlist::part_name;

    #[test]
    fn recordings_older_than_the_retention_are_deleted_at_start() {
        let dir = std::env::temp_dir().join(format!("liveshop-media-prune-{}", std::process::id()));
        for show in ["old", "new"] {
            std::fs::create_dir_all(dir.join(show)).unwrap();
            std::fs::write(dir.join(show).join("seg-0.m4s"), b"x").unwrap();
        }
        let week_ago = SystemTime::now() - Duration::from_secs(7 * 86_400);
        std::fs::File::open(dir.join("old")).unwrap().set_modified(week_ago).unwrap();
        let config = PlaylistConfig { part_target: 0.2, target_duration: 4 };
        Library::open(dir.clone(), config, Some(Duration::from_secs(86_400))).unwrap();
        assert!(!dir.join("old").exists());
        assert!(dir.join("new/seg-0.m4s").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_part_name(&part_name(12, 3)), Some((12, 3)));
        assert_eq!(parse_segment_name(&segment_name(7)), Some(7));
        assert_eq!(parse_init_name(&init_name(2)), Some(2));
        assert_eq!(parse_part_name("part-1.m4s"), None);
        assert_eq!(parse_segment_name("seg-x.m4s"), None);
    }
}
