//! Where packaged media lives between the packager and the players: per show and rendition, the
//! playlist state, recent parts and segments in memory, and every segment, init and the VOD
//! playlist on disk, beside the multivariant playlist that offers the renditions. Ingest writes
//! through [`ShowStream`]; the HLS handlers read it and park on [`ShowStream::subscribe`] until
//! what they wait for exists.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;

use crate::fmp4::{Codec, TrackInfo, init_segment};
use crate::packager::Packaged;
use crate::playlist::{PartInfo, Playlist, PlaylistConfig, Rendition, init_name, segment_name};

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RenditionLabel {
    pub rendition: &'static str,
}

impl From<Rendition> for RenditionLabel {
    fn from(r: Rendition) -> Self {
        RenditionLabel { rendition: if r == Rendition::Aac { "aac" } else { "as_sent" } }
    }
}

/// Segments whose parts stay in memory (older parts are no longer listed anywhere).
const PARTS_KEPT_SEGMENTS: u64 = 8;
/// Segments kept in memory besides on disk, for the players near the live edge.
const SEGMENTS_KEPT: u64 = 16;
/// Name of the media playlist, live and on disk.
pub const MEDIA_PLAYLIST: &str = "live.m3u8";
pub const MULTIVARIANT_PLAYLIST: &str = "master.m3u8";
/// The multivariant playlist with the AAC variant alone (all of them when there is none), for
/// players that switch between variants whatever their codecs: Chromium's own HLS fails at a
/// switch from AAC to Opus ("audio codec changes not allowed"). The viewer page's native HLS
/// fallback plays it.
pub const AAC_MULTIVARIANT_PLAYLIST: &str = "master-aac.m3u8";

/// All shows this origin has media for, and the thread that writes files.
pub struct Library {
    dir: PathBuf,
    config: PlaylistConfig,
    /// Parts and segments served, by rendition: how many players take AAC and how many Opus.
    pub served: Family<RenditionLabel, Counter>,
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
        Ok(Library { dir, config, served: Family::default(), shows: Mutex::new(HashMap::new()), writer })
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
            config: self.config,
            state: Mutex::new(State { media: Vec::new(), current: Vec::new(), resolution: None }),
            changed: watch::channel(0).0,
            writer: self.writer.clone(),
        });
        shows.insert(show.to_string(), stream.clone());
        stream
    }
}

pub struct ShowStream {
    dir: PathBuf,
    config: PlaylistConfig,
    state: Mutex<State>,
    /// Bumped on every change; blocked requests wait on it.
    changed: watch::Sender<u64>,
    writer: std::sync::mpsc::Sender<(PathBuf, Bytes)>,
}

pub struct State {
    /// Every rendition the show has had.
    media: Vec<(Rendition, Media)>,
    /// The renditions of the current publish, in the order of the packager's fragments.
    current: Vec<Rendition>,
    resolution: Option<(u32, u32)>,
}

/// One rendition's playlist and files.
pub struct Media {
    pub playlist: Playlist,
    /// `CODECS` of its variant (RFC 6381), from its init segment's tracks.
    codecs: String,
    inits: BTreeMap<u32, Bytes>,
    parts: BTreeMap<(u64, u32), Bytes>,
    segments: BTreeMap<u64, Bytes>,
    segment_buf: Vec<u8>,
    /// The live playlist as last rendered, full and delta: thousands of players woken by one
    /// part get the same text, rendered once.
    rendered: [Option<Bytes>; 2],
    rate: Rate,
}

/// Bit rates measured on a rendition's whole segments, for the multivariant playlist.
#[derive(Debug, Default, Clone, Copy)]
struct Rate {
    /// The highest of any segment of half a second or more (a publish's last segment can be a
    /// lone keyframe of a few tens of milliseconds: a peak the stream never has).
    peak: u64,
    bytes: u64,
    seconds: f64,
}

/// Segments shorter than this do not count toward the peak bit rate, in seconds.
pub const PEAK_MIN_SEGMENT: f64 = 0.5;

impl Rate {
    fn add(&mut self, bytes: usize, seconds: f64) {
        if seconds >= PEAK_MIN_SEGMENT {
            self.peak = self.peak.max((bytes as f64 * 8.0 / seconds).round() as u64);
        }
        self.bytes += bytes as u64;
        self.seconds += seconds;
    }

    /// `(BANDWIDTH, AVERAGE-BANDWIDTH)`, once there is a peak.
    fn attributes(&self) -> Option<(u64, u64)> {
        (self.peak > 0).then(|| (self.peak, (self.bytes as f64 * 8.0 / self.seconds).round() as u64))
    }
}

impl State {
    /// A publish has made its renditions.
    pub fn begun(&self) -> bool {
        !self.media.is_empty()
    }

    /// The publish ended: the playlists are a recording's.
    pub fn ended(&self) -> bool {
        let current = self.media.iter().filter(|(r, _)| self.current.contains(r));
        self.begun() && current.map(|(_, m)| m).all(|m| m.playlist.ended())
    }

    pub fn media(&mut self, rendition: Rendition) -> Option<&mut Media> {
        self.media.iter_mut().find(|(r, _)| *r == rendition).map(|(_, m)| m)
    }

    /// The multivariant playlist `name` ([`MULTIVARIANT_PLAYLIST`] or
    /// [`AAC_MULTIVARIANT_PLAYLIST`]), once every rendition in it has a whole segment to measure
    /// its bit rate by.
    pub fn multivariant(&self, name: &str) -> Option<String> {
        let aac_only = name == AAC_MULTIVARIANT_PLAYLIST && self.current.contains(&Rendition::Aac);
        let variants: Option<Vec<(Rendition, &Media)>> = self
            .current
            .iter()
            .filter(|&&r| !aac_only || r == Rendition::Aac)
            .map(|&r| self.media.iter().find(|(m, _)| *m == r).map(|(_, m)| (r, m)))
            .collect();
        multivariant(&variants?, self.resolution)
    }

    /// Both multivariant playlists to disk, for the recording.
    fn write_multivariants(&self, stream: &ShowStream) {
        for name in [MULTIVARIANT_PLAYLIST, AAC_MULTIVARIANT_PLAYLIST] {
            if let Some(text) = self.multivariant(name) {
                stream.write(name, Bytes::from(text));
            }
        }
    }
}

impl Media {
    fn new(config: PlaylistConfig, rendition: Rendition) -> Media {
        Media {
            playlist: Playlist::new(config, rendition),
            codecs: String::new(),
            inits: BTreeMap::new(),
            parts: BTreeMap::new(),
            segments: BTreeMap::new(),
            segment_buf: Vec::new(),
            rendered: [None, None],
            rate: Rate::default(),
        }
    }

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

    pub fn config(&self) -> PlaylistConfig {
        self.config
    }

    /// A new publish, or new codec parameters within one: for each rendition (the tracks of
    /// its init segment), a new init segment and a discontinuity. The packager's parts carry
    /// one fragment per rendition, in this order.
    ///
    /// The renditions of the last publish that go on keep their numbering. One that joins now
    /// (the publisher sends audio this time) takes theirs: its playlist starts over at their
    /// next segment, so that every variant's segment N is the same stretch of the show.
    pub fn begin(&self, renditions: &[(Rendition, Vec<TrackInfo>)]) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let previous = std::mem::take(&mut s.current);
        let mut next = None;
        for (r, m) in &mut s.media {
            if !previous.contains(r) {
                continue;
            }
            if renditions.iter().any(|(now, _)| now == r) {
                m.playlist.begin_period(m.inits.keys().next_back().map_or(0, |n| n + 1));
                next = Some((m.playlist.next_part().0, m.playlist.next_discontinuity()));
            } else {
                // A rendition this publish does not have (its publisher sends no audio now).
                m.playlist.end();
            }
            m.rendered = [None, None];
        }
        for (r, tracks) in renditions {
            if !s.media.iter().any(|(m, _)| m == r) {
                s.media.push((*r, Media::new(self.config, *r)));
            }
            let m = s.media(*r).expect("added above");
            let n = m.inits.keys().next_back().map_or(0, |n| n + 1);
            if !previous.contains(r) {
                if let Some((msn, discontinuities)) = next {
                    m.playlist.start_at(msn, discontinuities);
                }
                m.playlist.begin_period(n);
            }
            let init = Bytes::from(init_segment(tracks));
            self.write(&r.file(&init_name(n)), init.clone());
            m.inits.insert(n, init);
            m.codecs = tracks.iter().map(TrackInfo::codec_string).collect::<Vec<_>>().join(",");
            m.segment_buf.clear();
            m.rendered = [None, None];
        }
        s.current = renditions.iter().map(|(r, _)| *r).collect();
        s.resolution = renditions.iter().flat_map(|(_, t)| t).find_map(|t| match &t.codec {
            Codec::H264(sets) => Some((sets.info.width, sets.info.height)),
            _ => None,
        });
        drop(guard);
        self.notify();
    }

    pub fn packaged(&self, item: Packaged) {
        let mut guard = self.lock();
        let s = &mut *guard;
        // The current renditions' media, each with its place in the packager's fragments.
        let State { media, current, .. } = &mut *s;
        let renditions =
            media.iter_mut().filter_map(|(r, m)| Some((current.iter().position(|c| c == r)?, *r, m)));
        match item {
            Packaged::Part(mut part) => {
                for (i, _, m) in renditions {
                    let Some(data) = part.fragments.get_mut(i).map(std::mem::take) else { continue };
                    m.rendered = [None, None];
                    let info = PartInfo { duration: part.duration, independent: part.independent };
                    let (msn, index) = m.playlist.push_part(info, part.segment_start);
                    m.segment_buf.extend_from_slice(&data);
                    m.parts.insert((msn, index), Bytes::from(data));
                }
            }
            Packaged::SegmentEnd => {
                for (_, r, m) in renditions {
                    m.rendered = [None, None];
                    m.playlist.end_segment();
                    let Some(last) = m.playlist.segments().last() else { continue };
                    let msn = last.msn;
                    let bytes = Bytes::from(std::mem::take(&mut m.segment_buf));
                    m.rate.add(bytes.len(), last.duration);
                    self.write(&r.file(&segment_name(msn)), bytes.clone());
                    m.segments.insert(msn, bytes);
                    self.write(&r.file(MEDIA_PLAYLIST), Bytes::from(m.playlist.render(false, true)));
                    m.parts.retain(|&(n, _), _| n + PARTS_KEPT_SEGMENTS > msn);
                    m.segments.retain(|&n, _| n + SEGMENTS_KEPT > msn);
                }
                // The bit rates they state are measured on segments: they change with each.
                s.write_multivariants(self);
            }
        }
        drop(guard);
        self.notify();
    }

    /// The publish ended: the playlists get `EXT-X-ENDLIST` and the VOD copies are final.
    pub fn end(&self) {
        let mut guard = self.lock();
        let s = &mut *guard;
        for r in s.current.clone() {
            let Some(m) = s.media(r) else { continue };
            m.playlist.end();
            m.rendered = [None, None];
            self.write(&r.file(MEDIA_PLAYLIST), Bytes::from(m.playlist.render(false, true)));
        }
        s.write_multivariants(self);
        drop(guard);
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

/// The multivariant playlist: one variant per rendition, each muxed with its one audio codec
/// (see `docs/playback.md` for why muxed and not `EXT-X-MEDIA` groups), AAC first: the first
/// variant is where Apple's players start, and every player decodes it. `BANDWIDTH` is the peak
/// bit rate of the rendition's whole segments so far and `AVERAGE-BANDWIDTH` their mean, both
/// measured ([`Rate`]), so there is nothing to say before a rendition's first whole segment
/// (`None`).
pub fn multivariant(variants: &[(Rendition, &Media)], resolution: Option<(u32, u32)>) -> Option<String> {
    let mut ordered = variants.to_vec();
    ordered.sort_by_key(|(r, _)| *r != Rendition::Aac);
    let independent = ordered.iter().all(|(_, m)| m.playlist.independent());
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n");
    if independent {
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    for (r, m) in ordered {
        let (peak, average) = m.rate.attributes()?;
        out.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},CODECS=\"{}\"",
            m.codecs
        ));
        if let Some((w, h)) = resolution {
            out.push_str(&format!(",RESOLUTION={w}x{h}"));
        }
        out.push_str(&format!("\n{}\n", r.file(MEDIA_PLAYLIST)));
    }
    Some(out)
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
    fn a_rendition_that_joins_late_takes_the_others_segment_numbers() {
        let dir = std::env::temp_dir().join(format!("liveshop-media-join-{}", std::process::id()));
        let library =
            Library::open(dir.clone(), PlaylistConfig { part_target: 0.2, target_duration: 4 }, None)
                .unwrap();
        let stream = library.open_show("late");
        let audio = |codec| vec![TrackInfo { id: 2, timescale: 48_000, codec }];
        let opus = (Rendition::AsSent, audio(Codec::Opus { channels: 2 }));
        let aac = (Rendition::Aac, audio(Codec::Aac { config: vec![0x11, 0x90], bitrate: 128_000 }));
        let segment = |fragments: usize| {
            for i in 0..10 {
                stream.packaged(Packaged::Part(crate::packager::Part {
                    fragments: vec![vec![0; 1000]; fragments],
                    duration: 0.2,
                    independent: i == 0,
                    segment_start: (i == 0).then_some(SystemTime::UNIX_EPOCH),
                }));
            }
            stream.packaged(Packaged::SegmentEnd);
        };
        // A first publish with one variant, three segments; then one with both.
        stream.begin(std::slice::from_ref(&opus));
        (0..3).for_each(|_| segment(1));
        assert!(stream.lock().multivariant(MULTIVARIANT_PLAYLIST).is_some());
        stream.begin(&[opus, aac]);
        segment(2);
        let mut s = stream.lock();
        let as_sent = s.media(Rendition::AsSent).unwrap().playlist.render(false, false);
        let aac = s.media(Rendition::Aac).unwrap().playlist.render(false, false);
        assert!(
            as_sent.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"")
                && as_sent.contains("\nseg-4.m4s\n")
        );
        assert!(aac.contains("#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{aac}");
        assert!(aac.contains("\naac-seg-4.m4s\n") && !aac.contains("#EXT-X-DISCONTINUITY\n"), "{aac}");
        // 1,000 bytes a part, five parts a second: 40 kb/s, peak and mean.
        let master = s.multivariant(MULTIVARIANT_PLAYLIST).unwrap();
        assert!(
            master.contains("BANDWIDTH=40000,AVERAGE-BANDWIDTH=40000,CODECS=\"mp4a.40.2\"\naac-live.m3u8\n"),
            "{master}"
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir); // the writer thread may still be at it
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
