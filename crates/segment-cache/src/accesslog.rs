//! The access log: one line per object read, `<unix seconds> <size> <key>`, with the key
//! percent-encoded (`%`, whitespace and control bytes), so any key round-trips and a torn last
//! line after a crash is simply skipped.

use std::collections::HashSet;
use std::fmt::Write as _;

/// One access-log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the key was read, seconds since the epoch.
    pub at: i64,
    /// Object size in bytes.
    pub size: u64,
    /// The object key.
    pub key: String,
}

/// Formats one line, with the trailing newline.
#[must_use]
pub fn format_line(r: &Record) -> String {
    let mut s = format!("{} {} ", r.at, r.size);
    for &b in r.key.as_bytes() {
        if b == b'%' || b <= b' ' || b >= 0x7f {
            let _ = write!(s, "%{b:02X}");
        } else {
            s.push(char::from(b));
        }
    }
    s.push('\n');
    s
}

/// Parses one line (without or with its newline); `None` for a malformed or torn line.
#[must_use]
pub fn parse_line(line: &str) -> Option<Record> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let mut parts = line.splitn(3, ' ');
    let at = parts.next()?.parse().ok()?;
    let size = parts.next()?.parse().ok()?;
    let enc = parts.next()?;
    if enc.is_empty() || enc.contains(' ') {
        return None;
    }
    let mut bytes = Vec::with_capacity(enc.len());
    let raw = enc.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let h = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    Some(Record {
        at,
        size,
        key: String::from_utf8(bytes).ok()?,
    })
}

/// Distinct keys of a log, most recently read first. Only newline-terminated lines count: a last
/// line torn by a crash inside its key would otherwise parse as a shorter, wrong key.
#[must_use]
pub fn recent_keys(text: &str) -> Vec<Record> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let complete = text
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'));
    for r in complete.rev().filter_map(parse_line) {
        if seen.insert(r.key.clone()) {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_odd_keys() {
        for key in [
            "files/insert_log/1/2/3",
            "with space",
            "new\nline",
            "100%",
            "ünïcødé/κλειδί",
            "../x",
        ] {
            let r = Record {
                at: 1_700_000_000,
                size: 42,
                key: key.into(),
            };
            let line = format_line(&r);
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert_eq!(parse_line(&line), Some(r));
        }
    }

    #[test]
    fn torn_and_garbage_lines_are_skipped() {
        assert_eq!(parse_line("17000 12"), None);
        assert_eq!(parse_line("x 1 k"), None);
        assert_eq!(parse_line("1 2 ab%4"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn recent_first_distinct() {
        // The last line has no newline: a write torn by a crash, skipped.
        let text = "1 10 a\n2 20 b\n3 10 a\ngarbage\n4 5 c\n5 6 cut-sho";
        let keys: Vec<_> = recent_keys(text).into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["c", "a", "b"]);
    }
}
