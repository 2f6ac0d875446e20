//! Content verification of what comes from upstream, cheapest sound check first:
//! - a full-object CRC that S3 keeps with the object (`x-amz-checksum-crc64nvme`, which S3 adds
//!   to every object written since 2025, or CRC32/CRC32C when the writer asked for one). A CRC
//!   runs at memory speed (SIMD), where MD5 is one serial stream at well under 1 GB/s, and the
//!   CRCs of parallel ranges combine into the object's CRC without reading the file back;
//! - else the ETag: the MD5 of the bytes for a single-part object, or the multipart form
//!   `md5(md5(part1)..md5(partN))-N`. The part size of a multipart object is not in its ETag, so
//!   every plausible part size (the common client defaults and the even split) is hashed in one
//!   pass and any exact match is accepted;
//! - else nothing sound is left (the size alone is no check of the bytes): the object is
//!   [`Mismatch::Unverifiable`], passed through and not cached.

use base64::Engine as _;
use md5::{Digest, Md5};

/// A CRC algorithm S3 offers as a full-object checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcKind {
    /// CRC-64/NVME (S3's default since 2025).
    Crc64Nvme,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// CRC-32 (ISO-HDLC, as zlib).
    Crc32,
}

impl CrcKind {
    /// The name used in `verified_by` and logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            CrcKind::Crc64Nvme => "crc64nvme",
            CrcKind::Crc32c => "crc32c",
            CrcKind::Crc32 => "crc32",
        }
    }

    fn algorithm(self) -> crc_fast::CrcAlgorithm {
        match self {
            CrcKind::Crc64Nvme => crc_fast::CrcAlgorithm::Crc64Nvme,
            CrcKind::Crc32c => crc_fast::CrcAlgorithm::Crc32Iscsi,
            CrcKind::Crc32 => crc_fast::CrcAlgorithm::Crc32IsoHdlc,
        }
    }

    fn width_bytes(self) -> usize {
        match self {
            CrcKind::Crc64Nvme => 8,
            CrcKind::Crc32c | CrcKind::Crc32 => 4,
        }
    }
}

/// A full-object CRC of an upstream object, as S3 reports it on `GetObject`/`HeadObject`
/// with `x-amz-checksum-mode: ENABLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullObjectCrc {
    /// Which CRC.
    pub kind: CrcKind,
    /// Its value.
    pub value: u64,
}

impl FullObjectCrc {
    /// Reads the checksum headers S3 returned (base64 of the big-endian CRC), preferring
    /// CRC-64/NVME. A composite checksum (a multipart object's checksum of part checksums,
    /// written `...-N`, or `composite` as its type) is not a CRC of the bytes and gives `None`,
    /// as does a value that is not valid base64 of the algorithm's width.
    #[must_use]
    pub fn from_response(
        crc64nvme: Option<&str>,
        crc32c: Option<&str>,
        crc32: Option<&str>,
        composite: bool,
    ) -> Option<Self> {
        if composite {
            return None;
        }
        [
            (CrcKind::Crc64Nvme, crc64nvme),
            (CrcKind::Crc32c, crc32c),
            (CrcKind::Crc32, crc32),
        ]
        .into_iter()
        .find_map(|(kind, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v?.trim())
                .ok()?;
            (bytes.len() == kind.width_bytes()).then(|| Self {
                kind,
                value: bytes
                    .iter()
                    .fold(0_u64, |acc, b| (acc << 8) | u64::from(*b)),
            })
        })
    }

    /// A fresh running CRC of this kind, for one range of the object.
    #[must_use]
    pub fn digest(self) -> crc_fast::Digest {
        crc_fast::Digest::new(self.kind.algorithm())
    }

    /// Checks the CRCs of consecutive ranges (in object order) that together cover `size`
    /// bytes against the object's CRC.
    pub fn check_ranges(
        self,
        size: u64,
        ranges: impl IntoIterator<Item = crc_fast::Digest>,
    ) -> Result<&'static str, Mismatch> {
        let mut whole = self.digest();
        for r in ranges {
            whole.combine(&r);
        }
        if whole.get_amount() != size {
            return Err(Mismatch::Size {
                expected: size,
                got: whole.get_amount(),
            });
        }
        self.compare(whole.finalize())
    }

    fn compare(self, got: u64) -> Result<&'static str, Mismatch> {
        if got == self.value {
            Ok(self.kind.name())
        } else {
            Err(Mismatch::Digest(format!(
                "{} {:x} (got {got:x})",
                self.kind.name(),
                self.value
            )))
        }
    }
}

/// How an object is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Plain MD5 (32 hex digits in the ETag).
    Md5([u8; 16]),
    /// Multipart ETag: digest and number of parts.
    Multipart([u8; 16], u32),
    /// A full-object CRC reported by upstream.
    Crc(FullObjectCrc),
    /// No CRC and an ETag that is neither form (e.g. SSE-KMS objects written before S3 kept
    /// CRCs): the content cannot be checked, so it is not cached.
    Unverifiable,
}

/// Reads an ETag (quoted or not).
#[must_use]
pub fn parse_etag(etag: &str) -> Expect {
    let t = etag.trim().trim_start_matches("W/").trim_matches('"');
    let hex16 = |s: &str| -> Option<[u8; 16]> {
        let v = hex::decode(s).ok()?;
        v.try_into().ok()
    };
    if let Some((d, n)) = t.split_once('-') {
        if let (Some(d), Ok(n)) = (hex16(d), n.parse::<u32>())
            && n >= 1
        {
            return Expect::Multipart(d, n);
        }
        return Expect::Unverifiable;
    }
    hex16(t).map_or(Expect::Unverifiable, Expect::Md5)
}

const MIB: u64 = 1 << 20;
const COMMON_PART_SIZES: [u64; 9] = [
    5 * MIB,
    8 * MIB,
    10 * MIB,
    16 * MIB,
    32 * MIB,
    50 * MIB,
    64 * MIB,
    100 * MIB,
    128 * MIB,
];

/// Part sizes that split `size` bytes into exactly `parts` parts.
#[must_use]
pub fn candidate_part_sizes(size: u64, parts: u32) -> Vec<u64> {
    let parts = u64::from(parts);
    let fits = |ps: u64| ps > 0 && size.div_ceil(ps) == parts;
    let mut out: Vec<u64> = COMMON_PART_SIZES
        .iter()
        .copied()
        .filter(|&p| fits(p))
        .collect();
    for ps in [
        size.div_ceil(parts),
        size.div_ceil(parts).div_ceil(MIB) * MIB,
    ] {
        if fits(ps) && !out.contains(&ps) {
            out.push(ps);
        }
    }
    out.truncate(6);
    out
}

struct PartHasher {
    part_size: u64,
    in_part: u64,
    cur: Md5,
    digests: Vec<u8>,
}

/// Incremental verifier: feed the object's bytes in order, then `finish`.
pub struct Verifier {
    etag: String,
    expect: Expect,
    size: u64,
    seen: u64,
    whole: Option<Md5>,
    parts: Vec<PartHasher>,
    crc: Option<crc_fast::Digest>,
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Wrong byte count.
    #[error("expected {expected} bytes, got {got}")]
    Size {
        /// Expected.
        expected: u64,
        /// Received.
        got: u64,
    },
    /// Digest differs from the ETag.
    #[error("content does not match {0}")]
    Digest(String),
    /// Neither a CRC nor an ETag digest to check against.
    #[error("no checksum and ETag {0} is not an MD5: the content cannot be verified")]
    Unverifiable(String),
}

impl Verifier {
    /// A verifier for an object of `size` bytes with `etag` and, when upstream reported one,
    /// its full-object CRC (checked instead of the ETag).
    #[must_use]
    pub fn new(size: u64, etag: &str, crc: Option<FullObjectCrc>) -> Self {
        let expect = match crc {
            Some(c) => Expect::Crc(c),
            None => parse_etag(etag),
        };
        let (whole, parts) = match &expect {
            Expect::Md5(_) => (Some(Md5::new()), Vec::new()),
            Expect::Multipart(_, n) => (
                None,
                candidate_part_sizes(size, *n)
                    .into_iter()
                    .map(|part_size| PartHasher {
                        part_size,
                        in_part: 0,
                        cur: Md5::new(),
                        digests: Vec::new(),
                    })
                    .collect(),
            ),
            Expect::Crc(_) | Expect::Unverifiable => (None, Vec::new()),
        };
        let crc = match &expect {
            Expect::Crc(c) => Some(c.digest()),
            _ => None,
        };
        Self {
            etag: etag.to_string(),
            expect,
            size,
            seen: 0,
            whole,
            parts,
            crc,
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.seen += data.len() as u64;
        if let Some(h) = &mut self.whole {
            h.update(data);
        }
        if let Some(c) = &mut self.crc {
            c.update(data);
        }
        if self.parts.is_empty() {
            return;
        }
        for p in &mut self.parts {
            let mut d = data;
            while !d.is_empty() {
                #[allow(clippy::cast_possible_truncation)]
                let room = (p.part_size - p.in_part).min(d.len() as u64) as usize;
                p.cur.update(&d[..room]);
                p.in_part += room as u64;
                d = &d[room..];
                if p.in_part == p.part_size {
                    let h = std::mem::replace(&mut p.cur, Md5::new()).finalize();
                    p.digests.extend_from_slice(&h);
                    p.in_part = 0;
                }
            }
        }
    }

    /// Checks everything fed; returns how it was verified (`crc64nvme`, `crc32c`, `crc32`,
    /// `md5`, `multipart-md5`, `size`).
    pub fn finish(self) -> Result<&'static str, Mismatch> {
        if self.seen != self.size {
            return Err(Mismatch::Size {
                expected: self.size,
                got: self.seen,
            });
        }
        match self.expect {
            Expect::Unverifiable => Err(Mismatch::Unverifiable(self.etag)),
            Expect::Crc(want) => want.compare(self.crc.map_or(0, |c| c.finalize())),
            Expect::Md5(want) => {
                let got: [u8; 16] = self.whole.map(|h| h.finalize().into()).unwrap_or_default();
                if got == want {
                    Ok("md5")
                } else {
                    Err(Mismatch::Digest(format!("ETag {}", hex::encode(want))))
                }
            }
            Expect::Multipart(want, n) => {
                for mut p in self.parts {
                    if p.in_part > 0 || self.size == 0 {
                        let h = p.cur.finalize_reset();
                        p.digests.extend_from_slice(&h);
                    }
                    if p.digests.len() / 16 == n as usize {
                        let got: [u8; 16] = Md5::digest(&p.digests).into();
                        if got == want {
                            return Ok("multipart-md5");
                        }
                    }
                }
                Err(Mismatch::Digest(format!("ETag {}-{n}", hex::encode(want))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5(d: &[u8]) -> [u8; 16] {
        Md5::digest(d).into()
    }

    fn multipart_etag(data: &[u8], ps: usize) -> String {
        let mut cat = Vec::new();
        let mut n = 0;
        for c in data.chunks(ps) {
            cat.extend_from_slice(&md5(c));
            n += 1;
        }
        format!("\"{}-{n}\"", hex::encode(md5(&cat)))
    }

    fn check(data: &[u8], etag: &str, chunk: usize) -> Result<&'static str, Mismatch> {
        let mut v = Verifier::new(data.len() as u64, etag, None);
        for c in data.chunks(chunk) {
            v.update(c);
        }
        v.finish()
    }

    #[test]
    fn plain_md5() {
        let data = b"hello world".repeat(1000);
        let etag = format!("\"{}\"", hex::encode(md5(&data)));
        assert_eq!(check(&data, &etag, 333), Ok("md5"));
        let mut bad = data.clone();
        bad[5000] ^= 1;
        assert!(matches!(check(&bad, &etag, 333), Err(Mismatch::Digest(_))));
        assert!(matches!(
            check(&data[..100], &etag, 7),
            Err(Mismatch::Digest(_) | Mismatch::Size { .. })
        ));
    }

    #[test]
    fn multipart_with_common_and_even_part_sizes() {
        let data: Vec<u8> = (0..(21 * MIB as usize)).map(|i| (i % 251) as u8).collect();
        for ps in [5 * MIB as usize, 8 * MIB as usize, 16 * MIB as usize] {
            let etag = multipart_etag(&data, ps);
            assert_eq!(check(&data, &etag, 65_536), Ok("multipart-md5"), "ps {ps}");
            let mut bad = data.clone();
            bad[ps + 3] ^= 0x80;
            assert!(check(&bad, &etag, 65_536).is_err());
        }
    }

    #[test]
    fn size_is_always_checked() {
        let mut v = Verifier::new(10, "\"not-an-md5\"", None);
        v.update(b"12345");
        assert_eq!(
            v.finish(),
            Err(Mismatch::Size {
                expected: 10,
                got: 5
            })
        );
        // An ETag that is no digest, and no CRC: the size alone is no check, so it is refused.
        let mut v = Verifier::new(5, "\"whatever\"", None);
        v.update(b"12345");
        assert!(matches!(v.finish(), Err(Mismatch::Unverifiable(_))));
    }

    #[test]
    fn etag_forms() {
        assert!(matches!(
            parse_etag("\"d41d8cd98f00b204e9800998ecf8427e\""),
            Expect::Md5(_)
        ));
        assert!(matches!(
            parse_etag("\"d41d8cd98f00b204e9800998ecf8427e-3\""),
            Expect::Multipart(_, 3)
        ));
        assert_eq!(parse_etag("\"abc\""), Expect::Unverifiable);
        assert_eq!(parse_etag("\"abc-2\""), Expect::Unverifiable);
        assert_eq!(
            candidate_part_sizes(21 * MIB, 2),
            vec![16 * MIB, 21 * MIB / 2, 11 * MIB]
        );
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn full_object_crcs_from_s3_headers() {
        // Known check values of the three CRCs over "123456789".
        let data = b"123456789";
        let c64 = FullObjectCrc::from_response(
            Some(&b64(&0xae8b_1486_0a79_9888_u64.to_be_bytes())),
            None,
            None,
            false,
        )
        .unwrap();
        let c32c = FullObjectCrc::from_response(
            None,
            Some(&b64(&0xe306_9283_u32.to_be_bytes())),
            None,
            false,
        )
        .unwrap();
        let c32 = FullObjectCrc::from_response(
            None,
            None,
            Some(&b64(&0xcbf4_3926_u32.to_be_bytes())),
            false,
        )
        .unwrap();
        for (crc, name) in [(c64, "crc64nvme"), (c32c, "crc32c"), (c32, "crc32")] {
            let mut v = Verifier::new(9, "\"not-an-md5\"", Some(crc));
            v.update(&data[..4]);
            v.update(&data[4..]);
            assert_eq!(v.finish(), Ok(name));
            let mut v = Verifier::new(9, "", Some(crc));
            v.update(b"123456780");
            assert!(matches!(v.finish(), Err(Mismatch::Digest(_))), "{name}");
        }
        // CRC-64/NVME wins when several are present; composite and malformed values are ignored.
        let both = FullObjectCrc::from_response(
            Some(&b64(&1_u64.to_be_bytes())),
            Some(&b64(&2_u32.to_be_bytes())),
            None,
            false,
        );
        assert_eq!(both.map(|c| c.kind), Some(CrcKind::Crc64Nvme));
        assert_eq!(
            FullObjectCrc::from_response(Some(&b64(&1_u64.to_be_bytes())), None, None, true),
            None
        );
        assert_eq!(
            FullObjectCrc::from_response(None, Some("AAAAAA==-3"), None, false),
            None
        );
        assert_eq!(
            FullObjectCrc::from_response(None, None, Some(&b64(&[1, 2, 3])), false),
            None
        );
    }

    #[test]
    fn range_crcs_combine_into_the_object_crc() {
        let data: Vec<u8> = (0..1_000_003_u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for kind in [CrcKind::Crc64Nvme, CrcKind::Crc32c, CrcKind::Crc32] {
            let value = crc_fast::checksum(kind.algorithm(), &data);
            let want = FullObjectCrc { kind, value };
            let ranges = |bytes: &[u8]| {
                bytes
                    .chunks(65_536)
                    .map(|c| {
                        let mut d = want.digest();
                        d.update(c);
                        d
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                want.check_ranges(data.len() as u64, ranges(&data)),
                Ok(kind.name())
            );
            let mut bad = data.clone();
            bad[700_000] ^= 4;
            assert!(matches!(
                want.check_ranges(data.len() as u64, ranges(&bad)),
                Err(Mismatch::Digest(_))
            ));
            assert!(matches!(
                want.check_ranges(data.len() as u64, ranges(&data[..900_000])),
                Err(Mismatch::Size { .. })
            ));
        }
    }
}
