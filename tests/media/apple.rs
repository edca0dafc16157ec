//! The rules of Apple's HLS authoring specification and of LL-HLS (draft-pantos-hls-rfc8216bis)
//! that a test can check on playlists and the media they list. Each rule has an id; a check
//! returns the rules broken, with the line that breaks them. `docs/playback.md` lists them all.

/// One broken rule.
pub type Violation = String;

/// `NAME=value` attributes of a tag line, quotes removed.
pub fn attrs(line: &str) -> Vec<(String, String)> {
    let rest = line.split_once(':').map_or("", |(_, r)| r);
    let mut out = Vec::new();
    let (mut key, mut value, mut in_value, mut quoted) = (String::new(), String::new(), false, false);
    for c in rest.chars().chain([',']) {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                in_value = false;
            }
            '=' if !in_value => in_value = true,
            c if in_value => value.push(c),
            c => key.push(c),
        }
    }
    out
}

pub fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A variant of a multivariant playlist.
#[derive(Debug, Clone)]
pub struct Variant {
    pub uri: String,
    pub attrs: Vec<(String, String)>,
}

impl Variant {
    pub fn get(&self, name: &str) -> Option<&str> {
        attr(&self.attrs, name)
    }
    pub fn codecs(&self) -> Vec<&str> {
        self.get("CODECS").map(|c| c.split(',').collect()).unwrap_or_default()
    }
    pub fn audio_codec(&self) -> Option<&str> {
        self.codecs().into_iter().find(|c| !c.starts_with("avc1."))
    }
}

pub fn variants(multivariant: &str) -> Vec<Variant> {
    let lines: Vec<&str> = multivariant.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("#EXT-X-STREAM-INF:"))
        .map(|(i, l)| Variant { uri: lines.get(i + 1).unwrap_or(&"").to_string(), attrs: attrs(l) })
        .collect()
}

/// Rules M1 to M6 on a multivariant playlist.
pub fn check_multivariant(text: &str) -> Vec<Violation> {
    let mut broken = Vec::new();
    let mut rule = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };
    rule(text.starts_with("#EXTM3U\n"), "M1: the first line is #EXTM3U".into());
    rule(text.contains("\n#EXT-X-VERSION:"), "M1: EXT-X-VERSION is given".into());
    rule(
        text.contains("\n#EXT-X-INDEPENDENT-SEGMENTS\n"),
        "M2: EXT-X-INDEPENDENT-SEGMENTS (every segment starts on a keyframe)".into(),
    );
    let variants = variants(text);
    rule(!variants.is_empty(), "M3: at least one EXT-X-STREAM-INF".into());
    for v in &variants {
        let line = format!("{:?} -> {}", v.attrs, v.uri);
        for name in ["BANDWIDTH", "AVERAGE-BANDWIDTH", "CODECS", "RESOLUTION"] {
            rule(v.get(name).is_some(), format!("M3: {name} on every variant: {line}"));
        }
        rule(!v.uri.is_empty() && !v.uri.starts_with('#'), format!("M3: a URI follows: {line}"));
        let codecs = v.codecs();
        let video: Vec<&&str> = codecs.iter().filter(|c| c.starts_with("avc1.")).collect();
        rule(
            video.len() == 1 && video[0].len() == 11 && u32::from_str_radix(&video[0][5..], 16).is_ok(),
            format!("M4: CODECS names one H.264 codec as avc1.PPCCLL: {line}"),
        );
        let audio: Vec<&&str> = codecs.iter().filter(|c| !c.starts_with("avc1.")).collect();
        rule(
            audio.len() == 1 && ["mp4a.40.2", "opus"].contains(audio[0]),
            format!("M4: CODECS names exactly one audio codec, mp4a.40.2 or opus: {line}"),
        );
        let (peak, average) = (v.get("BANDWIDTH"), v.get("AVERAGE-BANDWIDTH"));
        let number = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok());
        rule(number(average) <= number(peak), format!("M5: AVERAGE-BANDWIDTH is at most BANDWIDTH: {line}"));
    }
    rule(
        variants.iter().any(|v| v.audio_codec() == Some("mp4a.40.2")),
        "M6: a variant with AAC-LC audio (mp4a.40.2), which every Apple device decodes".into(),
    );
    broken
}

/// Rule M5 against the media: `BANDWIDTH` within 10% of the peak bit rate of the variant's
/// segments of half a second or more and `AVERAGE-BANDWIDTH` within 10% of the mean of all, from
/// `(bytes, seconds)` of each.
pub fn check_bandwidth(variant: &Variant, segments: &[(usize, f64)]) -> Vec<Violation> {
    // Segments under half a second (a publish's tail) do not set the peak (`docs/playback.md`).
    let whole = segments.iter().filter(|&&(_, d)| d >= 0.5);
    let peak = whole.map(|&(b, d)| b as f64 * 8.0 / d).fold(0.0, f64::max);
    let (bytes, secs) = segments.iter().fold((0, 0.0), |(b, t), &(sb, sd)| (b + sb, t + sd));
    let average = bytes as f64 * 8.0 / secs;
    let mut broken = Vec::new();
    for (name, measured) in [("BANDWIDTH", peak), ("AVERAGE-BANDWIDTH", average)] {
        let said: f64 = variant.get(name).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        if (said - measured).abs() > 0.1 * measured {
            broken.push(format!(
                "M5: {} {name}={said} is not within 10% of the measured {measured:.0}",
                variant.uri
            ));
        }
    }
    broken
}

/// A media playlist, as far as the rules need it.
#[derive(Debug, Default)]
pub struct Media {
    pub target: f64,
    /// Its whole segments.
    pub segments: Vec<Segment>,
}

#[derive(Debug)]
pub struct Segment {
    pub msn: u64,
    /// EXTINF, seconds.
    pub duration: f64,
    pub uri: String,
    /// Whether its first part is independent, where its parts are listed.
    pub independent: Option<bool>,
}

/// Rules P1 to P7 on a media playlist (`live`: it is a low-latency live one, not the VOD copy).
pub fn check_media(text: &str, live: bool) -> (Media, Vec<Violation>) {
    let mut broken = Vec::new();
    let mut rule = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    // A tag's line, and a number after its colon.
    let tag = |name: &str| lines.iter().find(|l| l.starts_with(name)).copied();
    let value = |name: &str| tag(name).and_then(|l| l.split_once(':')?.1.parse::<f64>().ok());
    rule(text.starts_with("#EXTM3U\n"), "P1: the first line is #EXTM3U".into());
    let target = value("#EXT-X-TARGETDURATION:").unwrap_or(0.0);
    rule(target > 0.0, "P1: EXT-X-TARGETDURATION is given".into());
    let mut media = Media { target, segments: Vec::new() };
    let mut msn = value("#EXT-X-MEDIA-SEQUENCE:").unwrap_or(0.0) as u64;
    let (mut map_seen, mut pdt_seen) = (false, false);
    // The parts of the segment being read, and of the whole playlist: (duration, independent,
    // last of its segment).
    let mut parts: Vec<(f64, bool)> = Vec::new();
    let mut every: Vec<(f64, bool, bool)> = Vec::new();
    let part_target: Option<f64> =
        tag("#EXT-X-PART-INF:").and_then(|l| attr(&attrs(l), "PART-TARGET")?.parse().ok());
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("#EXT-X-MAP:") {
            map_seen = true;
        } else if line.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt_seen = true;
        } else if line.starts_with("#EXT-X-PART:") {
            let a = attrs(line);
            let d: f64 = attr(&a, "DURATION").and_then(|d| d.parse().ok()).unwrap_or(0.0);
            let independent = attr(&a, "INDEPENDENT") == Some("YES");
            let next = lines.get(i + 1).unwrap_or(&"");
            let last = next.starts_with("#EXTINF") || next.starts_with("#EXT-X-PRELOAD-HINT");
            parts.push((d, independent));
            every.push((d, independent, last));
        } else if let Some(d) = line.strip_prefix("#EXTINF:") {
            let d: f64 = d.trim_end_matches(',').parse().unwrap_or(f64::MAX);
            let uri = lines.get(i + 1).unwrap_or(&"").to_string();
            rule(map_seen, format!("P2: EXT-X-MAP comes before segment {uri}"));
            rule(pdt_seen, format!("P3: EXT-X-PROGRAM-DATE-TIME comes with segment {uri}"));
            rule(
                d.round() <= target,
                format!("P1: {uri} of {d} s rounds above the target duration {target}"),
            );
            if !parts.is_empty() {
                let sum: f64 = parts.iter().map(|p| p.0).sum();
                rule((sum - d).abs() < 0.002, format!("P5: the parts of {uri} add up to {sum}, not its {d}"));
            }
            media.segments.push(Segment { msn, duration: d, uri, independent: parts.first().map(|p| p.1) });
            msn += 1;
            pdt_seen = false;
            parts.clear();
        }
    }
    if live {
        let control = tag("#EXT-X-SERVER-CONTROL:").map(attrs).unwrap_or_default();
        rule(attr(&control, "CAN-BLOCK-RELOAD") == Some("YES"), "P4: CAN-BLOCK-RELOAD=YES".into());
        let number = |name: &str| attr(&control, name).and_then(|v| v.parse::<f64>().ok());
        rule(
            number("CAN-SKIP-UNTIL").is_some_and(|s| s >= 6.0 * target),
            "P4: CAN-SKIP-UNTIL >= 6 target durations".into(),
        );
        match part_target {
            None => rule(false, "P4: EXT-X-PART-INF gives PART-TARGET".into()),
            Some(pt) => {
                rule(
                    number("PART-HOLD-BACK").is_some_and(|h| h >= 2.0 * pt),
                    "P4: PART-HOLD-BACK is at least twice PART-TARGET".into(),
                );
                rule(!every.is_empty(), "P6: a live playlist lists parts".into());
                for (d, independent, last) in every {
                    rule(d <= pt + 1e-9, format!("P6: a part of {d} s is longer than PART-TARGET {pt}"));
                    rule(
                        last || independent || d >= 0.85 * pt - 1e-9,
                        format!(
                            "P6: a part of {d} s, not its segment's last, is under 85% of PART-TARGET {pt}"
                        ),
                    );
                }
            }
        }
        rule(
            text.contains("#EXT-X-ENDLIST") || text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART"),
            "P4: a live playlist has a preload hint for its next part".into(),
        );
    } else {
        rule(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "P7: the recording says PLAYLIST-TYPE:VOD".into());
        rule(text.ends_with("#EXT-X-ENDLIST\n"), "P7: the recording ends with EXT-X-ENDLIST".into());
        rule(!text.contains("#EXT-X-PART"), "P7: the recording lists no parts".into());
    }
    (media, broken)
}

/// Rules A1 and A2 across the variants' media playlists (already checked one by one): the same
/// segments with the same durations (players switch variants at segment boundaries), and, where
/// the multivariant playlist says so, segments that start independent.
pub fn check_aligned(playlists: &[(&str, &Media)], independent: bool) -> Vec<Violation> {
    let mut broken = Vec::new();
    let Some((first_name, first)) = playlists.first() else { return broken };
    for (name, m) in &playlists[1..] {
        let key = |s: &Segment| (s.msn, (s.duration * 1000.0).round() as i64);
        let a: Vec<(u64, i64)> = first.segments.iter().map(key).collect();
        let b: Vec<(u64, i64)> = m.segments.iter().map(key).collect();
        let n = a.len().min(b.len());
        if a[..n] != b[..n] || a.len().abs_diff(b.len()) > 1 {
            broken.push(format!("A1: {name}'s segments are not {first_name}'s"));
        }
    }
    if independent {
        for (name, m) in playlists {
            for s in &m.segments {
                if s.independent == Some(false) {
                    broken.push(format!(
                        "A2: {name} says INDEPENDENT-SEGMENTS but {} starts without a keyframe",
                        s.uri
                    ));
                }
            }
        }
    }
    broken
}
