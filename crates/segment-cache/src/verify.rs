//! Content verification against the upstream ETag: the MD5 of the bytes for a single-part
//! object, or the multipart form `md5(md5(part1)..md5(partN))-N`. The part size of a multipart
//! object is not in its ETag, so every plausible part size (the common client defaults and the
//! even split) is hashed in one pass and any exact match is accepted.

use md5::{Digest, Md5};

/// How an object is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Plain MD5 (32 hex digits in the ETag).
    Md5([u8; 16]),
    /// Multipart ETag: digest and number of parts.
    Multipart([u8; 16], u32),
    /// Nothing to check but the size (configured, or an ETag that is neither form).
    SizeOnly,
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
        return Expect::SizeOnly;
    }
    hex16(t).map_or(Expect::SizeOnly, Expect::Md5)
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
    expect: Expect,
    size: u64,
    seen: u64,
    whole: Option<Md5>,
    parts: Vec<PartHasher>,
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
    #[error("content does not match ETag {0}")]
    Digest(String),
}

impl Verifier {
    /// A verifier for an object of `size` bytes with `etag`; `size_only` skips digests.
    #[must_use]
    pub fn new(size: u64, etag: &str, size_only: bool) -> Self {
        let expect = if size_only {
            Expect::SizeOnly
        } else {
            parse_etag(etag)
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
            Expect::SizeOnly => (None, Vec::new()),
        };
        Self {
            expect,
            size,
            seen: 0,
            whole,
            parts,
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.seen += data.len() as u64;
        if let Some(h) = &mut self.whole {
            h.update(data);
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

    /// Checks everything fed; returns how it was verified (`md5`, `multipart-md5`, `size`).
    pub fn finish(self) -> Result<&'static str, Mismatch> {
        if self.seen != self.size {
            return Err(Mismatch::Size {
                expected: self.size,
                got: self.seen,
            });
        }
        match self.expect {
            Expect::SizeOnly => Ok("size"),
            Expect::Md5(want) => {
                let got: [u8; 16] = self.whole.map(|h| h.finalize().into()).unwrap_or_default();
                if got == want {
                    Ok("md5")
                } else {
                    Err(Mismatch::Digest(hex::encode(want)))
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
                Err(Mismatch::Digest(format!("{}-{n}", hex::encode(want))))
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
        let mut v = Verifier::new(data.len() as u64, etag, false);
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
        let mut v = Verifier::new(10, "\"not-an-md5\"", false);
        v.update(b"12345");
        assert_eq!(
            v.finish(),
            Err(Mismatch::Size {
                expected: 10,
                got: 5
            })
        );
        let mut v = Verifier::new(5, "whatever", true);
        v.update(b"12345");
        assert_eq!(v.finish(), Ok("size"));
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
        assert_eq!(parse_etag("\"abc\""), Expect::SizeOnly);
        assert_eq!(
            candidate_part_sizes(21 * MIB, 2),
            vec![16 * MIB, 21 * MIB / 2, 11 * MIB]
        );
    }
}
