//! H.264 as it arrives from WebRTC (Annex B access units) and as fMP4 wants it (length-prefixed
//! samples plus an `avcC` record).
//!
//! Codec parameters come from the SPS the encoder actually sends, never from the SDP: OBS offers
//! `profile-level-id=42e01f` and then encodes High profile.

/// NAL unit types this module cares about (ITU-T H.264 table 7-1).
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpsError {
    #[error("the SPS ends early")]
    Truncated,
    #[error("the SPS is not an SPS (NAL type {0})")]
    NotSps(u8),
    #[error("the SPS has an impossible value: {0}")]
    Invalid(&'static str),
}

/// What a decoder needs to know before the first frame, parsed from one SPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    /// The constraint flags byte (`constraint_set0_flag` ... and reserved bits).
    pub constraints: u8,
    pub level_idc: u8,
    pub chroma_format_idc: u32,
    pub bit_depth_luma: u32,
    pub bit_depth_chroma: u32,
    pub width: u32,
    pub height: u32,
}

impl Sps {
    /// Parses an SPS NAL unit (with its one-byte NAL header, emulation prevention still in).
    pub fn parse(nal: &[u8]) -> Result<Sps, SpsError> {
        let (&header, body) = nal.split_first().ok_or(SpsError::Truncated)?;
        if header & 0x1f != NAL_SPS {
            return Err(SpsError::NotSps(header & 0x1f));
        }
        let rbsp = unescape(body);
        let mut r = BitReader::new(&rbsp);
        let profile_idc = r.bits(8)? as u8;
        let constraints = r.bits(8)? as u8;
        let level_idc = r.bits(8)? as u8;
        r.ue()?; // seq_parameter_set_id
        let (mut chroma_format_idc, mut bit_depth_luma, mut bit_depth_chroma) = (1, 8, 8);
        let mut separate_colour_plane = false;
        if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
            chroma_format_idc = r.ue()?;
            if chroma_format_idc > 3 {
                return Err(SpsError::Invalid("chroma_format_idc"));
            }
            if chroma_format_idc == 3 {
                separate_colour_plane = r.bit()?;
            }
            bit_depth_luma = 8 + r.ue()?;
            bit_depth_chroma = 8 + r.ue()?;
            r.bit()?; // qpprime_y_zero_transform_bypass_flag
            if r.bit()? {
                // seq_scaling_matrix_present_flag: skip the lists, they only matter to decoders.
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.bit()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        r.ue()?; // log2_max_frame_num_minus4
        match r.ue()? {
            0 => {
                r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
            }
            1 => {
                r.bit()?; // delta_pic_order_always_zero_flag
                r.se()?; // offset_for_non_ref_pic
                r.se()?; // offset_for_top_to_bottom_field
                let cycle = r.ue()?;
                if cycle > 255 {
                    return Err(SpsError::Invalid("num_ref_frames_in_pic_order_cnt_cycle"));
                }
                for _ in 0..cycle {
                    r.se()?;
                }
            }
            2 => {}
            _ => return Err(SpsError::Invalid("pic_order_cnt_type")),
        }
        r.ue()?; // max_num_ref_frames
        r.bit()?; // gaps_in_frame_num_value_allowed_flag
        let width_mbs = r.ue()? + 1;
        let height_map_units = r.ue()? + 1;
        let frame_mbs_only = r.bit()?;
        if !frame_mbs_only {
            r.bit()?; // mb_adaptive_frame_field_flag
        }
        r.bit()?; // direct_8x8_inference_flag
        let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0, 0, 0, 0);
        if r.bit()? {
            (crop_l, crop_r, crop_t, crop_b) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        }
        // Cropping units per 7.4.2.1.1: they depend on the chroma subsampling.
        let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
        let (sub_w, sub_h) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let crop_x = if chroma_array_type == 0 { 1 } else { sub_w };
        let crop_y = if chroma_array_type == 0 { field_factor } else { sub_h * field_factor };
        let width = (width_mbs * 16).checked_sub(crop_x * (crop_l + crop_r));
        let height = (field_factor * height_map_units * 16).checked_sub(crop_y * (crop_t + crop_b));
        match (width, height) {
            (Some(width), Some(height)) if width > 0 && height > 0 && width <= 16384 && height <= 16384 => {
                Ok(Sps {
                    profile_idc,
                    constraints,
                    level_idc,
                    chroma_format_idc,
                    bit_depth_luma,
                    bit_depth_chroma,
                    width,
                    height,
                })
            }
            _ => Err(SpsError::Invalid("picture size")),
        }
    }

    /// The RFC 6381 codec string for `CODECS=` and MSE, such as `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!("avc1.{:02x}{:02x}{:02x}", self.profile_idc, self.constraints, self.level_idc)
    }
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), SpsError> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256) % 256;
        }
        last = if next == 0 { last } else { next };
    }
    Ok(())
}

/// The parameter sets of a stream: the `avcC` record is made from them, and a new SPS or PPS
/// means a new init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterSets {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub info: Sps,
}

impl ParameterSets {
    /// The `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 5.3.3.1), 4-byte NAL lengths.
    pub fn avcc(&self) -> Vec<u8> {
        let mut out = vec![1, self.info.profile_idc, self.info.constraints, self.info.level_idc];
        out.push(0xfc | 3); // lengthSizeMinusOne = 3
        out.push(0xe0 | 1); // one SPS
        out.extend_from_slice(&(self.sps.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.sps);
        out.push(1); // one PPS
        out.extend_from_slice(&(self.pps.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.pps);
        // The High profiles carry their chroma format and bit depths in the record too.
        if matches!(self.info.profile_idc, 100 | 110 | 122 | 144) {
            out.push(0xfc | self.info.chroma_format_idc as u8);
            out.push(0xf8 | (self.info.bit_depth_luma - 8) as u8);
            out.push(0xf8 | (self.info.bit_depth_chroma - 8) as u8);
            out.push(0); // no SPS extensions
        }
        out
    }
}

/// One access unit turned into an fMP4 sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// Length-prefixed NAL units, without parameter sets and delimiters.
    pub sample: Vec<u8>,
    pub keyframe: bool,
}

/// Keeps the latest SPS and PPS across access units, since encoders send them in their own
/// packets (and sometimes with their own timestamp), and converts access units to samples.
#[derive(Debug, Default)]
pub struct H264Depacketizer {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    current: Option<ParameterSets>,
}

impl H264Depacketizer {
    /// The parameter sets in force, once both an SPS that parses and a PPS have been seen.
    pub fn parameter_sets(&self) -> Option<&ParameterSets> {
        self.current.as_ref()
    }

    /// Takes one Annex B access unit. `None` when it held no picture (only parameter sets,
    /// delimiters or SEI).
    pub fn push(&mut self, annex_b: &[u8]) -> Option<AccessUnit> {
        let mut sample = Vec::with_capacity(annex_b.len() + 16);
        let mut keyframe = false;
        let mut has_slice = false;
        let mut sets_changed = false;
        for nal in split_annex_b(annex_b) {
            let Some(&header) = nal.first() else { continue };
            match header & 0x1f {
                NAL_SPS => {
                    sets_changed |= self.sps.as_deref() != Some(nal);
                    self.sps = Some(nal.to_vec());
                }
                NAL_PPS => {
                    sets_changed |= self.pps.as_deref() != Some(nal);
                    self.pps = Some(nal.to_vec());
                }
                NAL_AUD => {}
                t => {
                    keyframe |= t == NAL_IDR;
                    has_slice |= (1..=5).contains(&t);
                    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    sample.extend_from_slice(nal);
                }
            }
        }
        if sets_changed || self.current.is_none() {
            self.refresh();
        }
        has_slice.then_some(AccessUnit { sample, keyframe })
    }

    fn refresh(&mut self) {
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else { return };
        if let Ok(info) = Sps::parse(sps) {
            self.current = Some(ParameterSets { sps: sps.clone(), pps: pps.clone(), info });
        }
    }
}

/// The NAL units of an Annex B byte stream (3- or 4-byte start codes).
pub fn split_annex_b(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts.iter().skip(1).map(|&s| s - 3).chain(std::iter::once(data.len())).collect();
    starts.into_iter().zip(ends).map(move |(s, e)| {
        // A 4-byte start code leaves its leading zero at the end of the previous unit.
        let mut end = e;
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        &data[s..end]
    })
}

/// Removes emulation prevention bytes (`00 00 03` -> `00 00`).
fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &b in data {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<bool, SpsError> {
        let byte = self.data.get(self.pos / 8).ok_or(SpsError::Truncated)?;
        let bit = byte >> (7 - self.pos % 8) & 1;
        self.pos += 1;
        Ok(bit == 1)
    }

    fn bits(&mut self, n: u32) -> Result<u32, SpsError> {
        let mut v = 0;
        for _ in 0..n {
            v = v << 1 | self.bit()? as u32;
        }
        Ok(v)
    }

    /// Exp-Golomb unsigned (9.1).
    fn ue(&mut self) -> Result<u32, SpsError> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return Err(SpsError::Invalid("exp-golomb code too long"));
            }
        }
        Ok((1u64 << zeros) as u32 - 1 + self.bits(zeros)?)
    }

    /// Exp-Golomb signed (9.1.1).
    fn se(&mut self) -> Result<i64, SpsError> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SPS from x264 (High profile, level 3.1, 1280x720, which needs 8 lines of cropping
    /// from the 1280x736 macroblock grid).
    const SPS_HIGH_720P: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];
    /// The SPS of the example in str0m's tests (Constrained Baseline, level 3.1).
    const SPS_BASELINE: &[u8] =
        &[0x67, 0x42, 0xc0, 0x1f, 0x1a, 0x32, 0x35, 0x01, 0x40, 0x7a, 0x40, 0x3c, 0x22, 0x11, 0xa8];

    #[test]
    fn high_profile_sps_gives_its_size_and_codec_string() {
        let sps = Sps::parse(SPS_HIGH_720P).unwrap();
        assert_eq!((sps.width, sps.height), (1280, 720));
        assert_eq!(sps.codec_string(), "avc1.64001f");
        assert_eq!((sps.chroma_format_idc, sps.bit_depth_luma), (1, 8));
    }

    #[test]
    fn baseline_sps_parses() {
        let sps = Sps::parse(SPS_BASELINE).unwrap();
        assert_eq!(sps.codec_string(), "avc1.42c01f");
        assert_eq!((sps.width, sps.height), (640, 480));
    }

    #[test]
    fn truncated_or_wrong_sps_is_an_error_not_a_panic() {
        // Every cut is an error or the right size (the VUI at the end is not needed), never a panic.
        for n in 0..SPS_HIGH_720P.len() {
            match Sps::parse(&SPS_HIGH_720P[..n]) {
                Ok(sps) => assert_eq!((sps.width, sps.height), (1280, 720), "{n} bytes"),
                Err(e) => assert!(n < 12, "{n} bytes: {e}"),
            }
        }
        assert_eq!(Sps::parse(&[0x68, 0, 0]), Err(SpsError::NotSps(8)));
    }

    #[test]
    fn parameter_sets_in_their_own_access_unit_apply_to_the_next_keyframe() {
        let mut d = H264Depacketizer::default();
        let mut sets = vec![0, 0, 0, 1];
        sets.extend_from_slice(SPS_HIGH_720P);
        sets.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xeb, 0xe3, 0xcb]);
        assert_eq!(d.push(&sets), None);
        // An AUD, then an IDR in two slices.
        let au = [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x65, 0x88, 0x84, 0, 0, 0, 1, 0x65, 0x88, 0x20];
        let unit = d.push(&au).unwrap();
        assert!(unit.keyframe);
        assert_eq!(unit.sample, [0, 0, 0, 3, 0x65, 0x88, 0x84, 0, 0, 0, 3, 0x65, 0x88, 0x20]);
        let sets = d.parameter_sets().unwrap();
        assert_eq!(sets.info.codec_string(), "avc1.64001f");
        let avcc = sets.avcc();
        assert_eq!(&avcc[..6], &[1, 0x64, 0x00, 0x1f, 0xff, 0xe1]);
        assert_eq!(avcc.len(), 6 + 2 + SPS_HIGH_720P.len() + 1 + 2 + 4 + 4);
        let p = d.push(&[0, 0, 1, 0x41, 0x9a, 0x02]).unwrap();
        assert!(!p.keyframe);
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3, 0, 5]), [0, 0, 1, 0, 0, 0, 5]);
    }
}
