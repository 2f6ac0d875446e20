//! Kubernetes resource quantities (`"4"`, `"500m"`, `"28Gi"`, `"1.5G"`) as integers: CPU in
//! millicores, memory in bytes. Only what pod requests and node capacities use.

use std::fmt;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("invalid quantity {text:?}: {why}")]
pub struct QuantityError {
    /// The text given.
    pub text: String,
    /// What was expected.
    pub why: &'static str,
}

/// Parses `text` into `value * 10^-3` units (so `"1"` -> 1000, `"500m"` -> 500): for CPU.
pub fn parse_millis(text: &str) -> Result<u64, QuantityError> {
    parse_scaled(text, 1000.0)
}

/// Parses `text` into bytes (so `"1Ki"` -> 1024, `"1k"` -> 1000, `"28Gi"` -> 28 * 2^30).
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    parse_scaled(text, 1.0)
}

fn parse_scaled(text: &str, unit: f64) -> Result<u64, QuantityError> {
    let err = |why| QuantityError {
        text: text.to_string(),
        why,
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    if number.is_empty() || number.matches('.').count() > 1 {
        return Err(err(
            "expected a non-negative decimal number with an optional suffix (m, k, M, G, T, Ki, Mi, Gi, Ti)",
        ));
    }
    let n: f64 = number
        .parse()
        .map_err(|_| err("expected a non-negative decimal number"))?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        _ => {
            return Err(err(
                "unknown suffix: expected one of m, k, M, G, T, P, Ki, Mi, Gi, Ti, Pi",
            ));
        }
    };
    let v = (n * factor * unit).round();
    if !v.is_finite() || v > 9.0e18 {
        return Err(err("value too large"));
    }
    Ok(v as u64)
}

/// CPU, in millicores. Deserializes from a Kubernetes quantity string or a number of cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cpu(pub u64);

/// Memory, in bytes. Deserializes from a Kubernetes quantity string or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Memory(pub u64);

impl Cpu {
    /// `n` whole cores.
    pub const fn cores(n: u64) -> Self {
        Cpu(n * 1000)
    }
}

impl Memory {
    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        Memory(n * 1024 * 1024 * 1024)
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MI: u64 = 1024 * 1024;
        const GI: u64 = 1024 * MI;
        if self.0.is_multiple_of(GI) {
            write!(f, "{}Gi", self.0 / GI)
        } else if self.0.is_multiple_of(MI) {
            write!(f, "{}Mi", self.0 / MI)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Text(String),
    Number(f64),
}

fn raw_text(raw: Raw) -> String {
    match raw {
        Raw::Text(s) => s,
        Raw::Number(n) => n.to_string(),
    }
}

impl<'de> Deserialize<'de> for Cpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = raw_text(Raw::deserialize(d)?);
        parse_millis(&text)
            .map(Cpu)
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = raw_text(Raw::deserialize(d)?);
        parse_bytes(&text)
            .map(Memory)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(parse_millis("4").unwrap(), 4000);
        assert_eq!(parse_millis("500m").unwrap(), 500);
        assert_eq!(parse_millis("1.5").unwrap(), 1500);
        assert_eq!(parse_bytes("28Gi").unwrap(), 28 << 30);
        assert_eq!(parse_bytes("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1k").unwrap(), 1000);
        assert_eq!(parse_bytes("1.5Gi").unwrap(), 3 << 29);
        for bad in ["", "Gi", "4 cores", "-1", "1.2.3", "4X", "1e3"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Cpu(4000).to_string(), "4");
        assert_eq!(Cpu(500).to_string(), "500m");
        assert_eq!(Memory::gib(28).to_string(), "28Gi");
    }
}
