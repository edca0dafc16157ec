//! CMAF fragmented MP4, written by hand: the init segment (`ftyp` + `moov` with one `trak` per
//! track) and media fragments (`moof` + `mdat`, one `traf` per track that has samples).
//!
//! Box layouts follow ISO/IEC 14496-12 (ISO BMFF), 14496-15 (`avc1`/`avcC`), 14496-14 and -1
//! (`mp4a`/`esds` for AAC) and the Opus in ISOBMFF encapsulation (`Opus`/`dOps`). Every track is
//! described by a [`TrackInfo`], so another codec is one more variant of [`Codec`], not a new
//! writer.

use crate::h264::ParameterSets;

/// What an init segment says about one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// 1-based, unique in the file.
    pub id: u32,
    /// Ticks per second of every time in this track.
    pub timescale: u32,
    pub codec: Codec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    H264(ParameterSets),
    Opus {
        channels: u8,
    },
    /// AAC-LC, 48 kHz stereo, described by its AudioSpecificConfig, at a constant bit rate.
    Aac {
        config: Vec<u8>,
        bitrate: u32,
    },
}

impl TrackInfo {
    /// The RFC 6381 string for the multivariant playlist's `CODECS`.
    pub fn codec_string(&self) -> String {
        match &self.codec {
            Codec::H264(sets) => sets.info.codec_string(),
            Codec::Opus { .. } => "opus".into(),
            // MPEG-4 audio (0x40), object type 2: AAC-LC (RFC 6381, section 3.3).
            Codec::Aac { .. } => "mp4a.40.2".into(),
        }
    }
}

/// One sample of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub duration: u32,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// The samples of one track in one fragment, starting at `decode_time` (in track ticks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    pub decode_time: u64,
    pub samples: &'a [Sample],
}

/// The init segment for `tracks`.
pub fn init_segment(tracks: &[TrackInfo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    boxed(&mut out, b"ftyp", |b| {
        b.extend_from_slice(b"iso6");
        b.extend_from_slice(&0u32.to_be_bytes());
        for brand in [b"iso6", b"cmfc", b"isom", b"mp41"] {
            b.extend_from_slice(brand);
        }
    });
    boxed(&mut out, b"moov", |b| {
        full_box(b, b"mvhd", 0, 0, |b| {
            b.extend_from_slice(&[0; 8]); // creation and modification times
            u32_be(b, 1000);
            u32_be(b, 0); // duration: unknown, fragments follow
            u32_be(b, 0x0001_0000); // rate 1.0
            b.extend_from_slice(&[0x01, 0x00]); // volume 1.0
            b.extend_from_slice(&[0; 10]);
            matrix(b);
            b.extend_from_slice(&[0; 24]);
            u32_be(b, tracks.iter().map(|t| t.id).max().unwrap_or(0) + 1);
        });
        for t in tracks {
            trak(b, t);
        }
        boxed(b, b"mvex", |b| {
            for t in tracks {
                full_box(b, b"trex", 0, 0, |b| {
                    u32_be(b, t.id);
                    u32_be(b, 1); // sample description index
                    b.extend_from_slice(&[0; 12]); // default duration, size, flags
                });
            }
        });
    });
    out
}

fn trak(b: &mut Vec<u8>, t: &TrackInfo) {
    let (width, height, handler, name): (u32, u32, &[u8; 4], &str) = match &t.codec {
        Codec::H264(sets) => (sets.info.width, sets.info.height, b"vide", "video"),
        Codec::Opus { .. } | Codec::Aac { .. } => (0, 0, b"soun", "audio"),
    };
    boxed(b, b"trak", |b| {
        // Flags 3: enabled and in the presentation.
        full_box(b, b"tkhd", 0, 3, |b| {
            b.extend_from_slice(&[0; 8]);
            u32_be(b, t.id);
            u32_be(b, 0);
            u32_be(b, 0); // duration
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&[0; 4]); // layer, alternate group
            b.extend_from_slice(if handler == b"soun" { &[1, 0] } else { &[0, 0] });
            b.extend_from_slice(&[0; 2]);
            matrix(b);
            u32_be(b, width << 16);
            u32_be(b, height << 16);
        });
        boxed(b, b"mdia", |b| {
            full_box(b, b"mdhd", 0, 0, |b| {
                b.extend_from_slice(&[0; 8]);
                u32_be(b, t.timescale);
                u32_be(b, 0);
                b.extend_from_slice(&[0x55, 0xc4, 0, 0]); // language "und"
            });
            full_box(b, b"hdlr", 0, 0, |b| {
                u32_be(b, 0);
                b.extend_from_slice(handler);
                b.extend_from_slice(&[0; 12]);
                b.extend_from_slice(name.as_bytes());
                b.push(0);
            });
            boxed(b, b"minf", |b| {
                if handler == b"vide" {
                    full_box(b, b"vmhd", 0, 1, |b| b.extend_from_slice(&[0; 8]));
                } else {
                    full_box(b, b"smhd", 0, 0, |b| b.extend_from_slice(&[0; 4]));
                }
                boxed(b, b"dinf", |b| {
                    full_box(b, b"dref", 0, 0, |b| {
                        u32_be(b, 1);
                        full_box(b, b"url ", 0, 1, |_| {}); // flag 1: media in this file
                    });
                });
                boxed(b, b"stbl", |b| {
                    full_box(b, b"stsd", 0, 0, |b| {
                        u32_be(b, 1);
                        sample_entry(b, t);
                    });
                    // Empty tables: the samples are in the fragments.
                    full_box(b, b"stts", 0, 0, |b| u32_be(b, 0));
                    full_box(b, b"stsc", 0, 0, |b| u32_be(b, 0));
                    full_box(b, b"stsz", 0, 0, |b| b.extend_from_slice(&[0; 8]));
                    full_box(b, b"stco", 0, 0, |b| u32_be(b, 0));
                });
            });
        });
    });
}

fn sample_entry(b: &mut Vec<u8>, t: &TrackInfo) {
    match &t.codec {
        Codec::H264(sets) => boxed(b, b"avc1", |b| {
            b.extend_from_slice(&[0; 6]);
            b.extend_from_slice(&1u16.to_be_bytes()); // data reference index
            b.extend_from_slice(&[0; 16]);
            b.extend_from_slice(&(sets.info.width as u16).to_be_bytes());
            b.extend_from_slice(&(sets.info.height as u16).to_be_bytes());
            u32_be(b, 0x0048_0000); // 72 dpi
            u32_be(b, 0x0048_0000);
            u32_be(b, 0);
            b.extend_from_slice(&1u16.to_be_bytes()); // frame count
            b.extend_from_slice(&[0; 32]); // compressor name
            b.extend_from_slice(&[0x00, 0x18, 0xff, 0xff]); // depth 24, pre_defined -1
            boxed(b, b"avcC", |b| b.extend_from_slice(&sets.avcc()));
        }),
        Codec::Opus { channels } => boxed(b, b"Opus", |b| {
            b.extend_from_slice(&[0; 6]);
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&u16::from(*channels).to_be_bytes());
            b.extend_from_slice(&16u16.to_be_bytes()); // sample size
            b.extend_from_slice(&[0; 4]);
            u32_be(b, 48_000 << 16);
            boxed(b, b"dOps", |b| {
                b.push(0); // version
                b.push(*channels);
                // RTP Opus carries no pre-skip; the decoder starts from the first packet.
                b.extend_from_slice(&0u16.to_be_bytes());
                u32_be(b, 48_000);
                b.extend_from_slice(&0i16.to_be_bytes()); // output gain
                b.push(0); // channel mapping family 0: mono or stereo
            });
        }),
        Codec::Aac { config, bitrate } => boxed(b, b"mp4a", |b| {
            b.extend_from_slice(&[0; 6]);
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&2u16.to_be_bytes()); // channels
            b.extend_from_slice(&16u16.to_be_bytes()); // sample size
            b.extend_from_slice(&[0; 4]);
            u32_be(b, 48_000 << 16);
            full_box(b, b"esds", 0, 0, |b| {
                // ES_Descriptor > DecoderConfigDescriptor > DecoderSpecificInfo, and the
                // SLConfigDescriptor MP4 files use (14496-1, 7.2.6; 14496-14, 3.1.2).
                let mut specific = vec![0x05, config.len() as u8];
                specific.extend_from_slice(config);
                let mut decoder = vec![0x04, (13 + specific.len()) as u8];
                decoder.push(0x40); // object type: MPEG-4 audio
                decoder.push(0x15); // stream type 5 (audio) << 2, upstream 0, reserved 1
                decoder.extend_from_slice(&[0, 0x18, 0]); // decoding buffer: 6 KiB
                u32_be(&mut decoder, *bitrate); // max bit rate (constant)
                u32_be(&mut decoder, *bitrate); // average bit rate
                decoder.extend_from_slice(&specific);
                let sl = [0x06, 0x01, 0x02];
                b.push(0x03);
                b.push((3 + decoder.len() + sl.len()) as u8);
                b.extend_from_slice(&[0, 0, 0]); // ES_ID 0, no flags
                b.extend_from_slice(&decoder);
                b.extend_from_slice(&sl);
            });
        }),
    }
}

/// One `moof` + `mdat` with a `traf` for every run that has samples.
pub fn fragment(sequence: u32, runs: &[TrackRun<'_>]) -> Vec<u8> {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let payload: usize = runs.iter().flat_map(|r| r.samples.iter()).map(|s| s.data.len()).sum();
    let mut out = Vec::with_capacity(payload + 256);
    let mut offset_slots = Vec::new();
    boxed(&mut out, b"moof", |b| {
        full_box(b, b"mfhd", 0, 0, |b| u32_be(b, sequence));
        for run in &runs {
            boxed(b, b"traf", |b| {
                // default-base-is-moof: data offsets count from the start of this moof.
                full_box(b, b"tfhd", 0, 0x02_0000, |b| u32_be(b, run.track_id));
                full_box(b, b"tfdt", 1, 0, |b| b.extend_from_slice(&run.decode_time.to_be_bytes()));
                // data-offset, sample duration, size and flags present.
                full_box(b, b"trun", 0, 0x000701, |b| {
                    u32_be(b, run.samples.len() as u32);
                    offset_slots.push(b.len());
                    u32_be(b, 0);
                    for s in run.samples {
                        u32_be(b, s.duration);
                        u32_be(b, s.data.len() as u32);
                        // A sync sample depends on nothing; others depend on earlier samples.
                        u32_be(b, if s.keyframe { 0x0200_0000 } else { 0x0101_0000 });
                    }
                });
            });
        }
    });
    let moof_len = out.len();
    let mut data_start = moof_len + 8;
    for (slot, run) in offset_slots.into_iter().zip(&runs) {
        out[slot..slot + 4].copy_from_slice(&(data_start as u32).to_be_bytes());
        data_start += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    u32_be(&mut out, (payload + 8) as u32);
    out.extend_from_slice(b"mdat");
    for run in &runs {
        for s in run.samples {
            out.extend_from_slice(&s.data);
        }
    }
    out
}

fn boxed(out: &mut Vec<u8>, kind: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    body(out);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn full_box(out: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut Vec<u8>)) {
    boxed(out, kind, |b| {
        u32_be(b, u32::from(version) << 24 | flags);
        body(b);
    });
}

fn u32_be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The identity transformation matrix of `mvhd` and `tkhd`.
fn matrix(out: &mut Vec<u8>) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        u32_be(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks top-level boxes: (type, size) pairs, checking sizes add up.
    fn boxes(data: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let size = u32::from_be_bytes(data[i..i + 4].try_into().unwrap()) as usize;
            out.push((String::from_utf8_lossy(&data[i + 4..i + 8]).into_owned(), size));
            assert!(size >= 8 && i + size <= data.len(), "box at {i} overruns");
            i += size;
        }
        out
    }

    #[test]
    fn fragment_offsets_point_at_each_tracks_data() {
        let video = [
            Sample { duration: 3000, keyframe: true, data: vec![1; 10] },
            Sample { duration: 3000, keyframe: false, data: vec![2; 5] },
        ];
        let audio = [Sample { duration: 960, keyframe: true, data: vec![3; 7] }];
        let frag = fragment(
            7,
            &[
                TrackRun { track_id: 1, decode_time: 90_000, samples: &video },
                TrackRun { track_id: 2, decode_time: 48_000, samples: &audio },
            ],
        );
        let top = boxes(&frag);
        assert_eq!(top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(), ["moof", "mdat"]);
        // Find both trun data offsets and check they land on the right bytes.
        let mut offsets = Vec::new();
        for i in 0..top[0].1 - 4 {
            if &frag[i..i + 4] == b"trun" {
                offsets.push(u32::from_be_bytes(frag[i + 12..i + 16].try_into().unwrap()) as usize);
            }
        }
        assert_eq!(offsets.len(), 2);
        assert_eq!(frag[offsets[0]..offsets[0] + 10], [1; 10]);
        assert_eq!(frag[offsets[1]..offsets[1] + 7], [3; 7]);
    }

    #[test]
    fn tracks_without_samples_get_no_traf() {
        let video = [Sample { duration: 1, keyframe: true, data: vec![9] }];
        let frag = fragment(
            1,
            &[
                TrackRun { track_id: 1, decode_time: 0, samples: &video },
                TrackRun { track_id: 2, decode_time: 0, samples: &[] },
            ],
        );
        assert_eq!(frag.windows(4).filter(|w| w == b"traf").count(), 1);
    }
}
