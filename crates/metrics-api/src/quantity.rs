//! Formatting signal values as Kubernetes quantities (`resource.Quantity` strings).
//!
//! Integers are written plainly (`42`), fractions with the finest SI suffix that keeps the value
//! to nano precision (`1500m`, `12500u`, `123456789n`). Values whose magnitude is below one nano
//! are written in decimal-exponent form (`3.2e-12`) instead of being rounded to `0`: Kubernetes
//! parses that form and rounds it *up* to `1n`, so a tiny but real value never reads as zero.
//! Very large values (|v| >= 1e18, beyond int64 arithmetic) also use the exponent form.

use thiserror::Error;

/// A value that has no quantity form.
#[derive(Debug, Clone, Copy, Error, PartialEq)]
#[error("value {0} is not a finite number and has no Kubernetes quantity form")]
pub struct NotFinite(pub f64);

/// Formats `value` as a Kubernetes quantity string.
pub fn format_quantity(value: f64) -> Result<String, NotFinite> {
    if !value.is_finite() {
        return Err(NotFinite(value));
    }
    if value == 0.0 {
        return Ok("0".to_string());
    }
    let magnitude = value.abs();
    if !(1e-9..1e18).contains(&magnitude) {
        return Ok(format!("{value:e}"));
    }
    let nanos = (value * 1e9).round() as i128;
    if nanos == 0 {
        // 0.5n <= |v| < 1n rounded to zero: keep it visible.
        return Ok(format!("{value:e}"));
    }
    if value.fract() == 0.0 || nanos % 1_000_000_000 == 0 && magnitude >= 1.0 {
        return Ok(format!("{}", value.round() as i128));
    }
    Ok(if nanos % 1_000_000 == 0 {
        format!("{}m", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{}u", nanos / 1_000)
    } else {
        format!("{nanos}n")
    })
}

/// Parses the quantity forms [`format_quantity`] writes (plain, `m`, `u`, `n`, decimal
/// exponent) back to a number; used by tests to check round trips.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = s.strip_suffix('m') {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('u') {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('n') {
        (n, 1e-9)
    } else {
        (s, 1.0)
    };
    number.parse::<f64>().ok().map(|v| v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let table: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (42.0, "42"),
            (-3.0, "-3"),
            (1.5, "1500m"),
            (0.25, "250m"),
            (0.1 + 0.2, "300m"),
            (0.0125, "12500u"),
            (0.001, "1m"),
            (0.000_123, "123u"),
            (0.123_456_789, "123456789n"),
            (1e-9, "1n"),
            (3.2e-12, "3.2e-12"),
            (-3.2e-12, "-3.2e-12"),
            (6e-10, "6e-10"),
            (1_073_741_824.0, "1073741824"),
            (2.000_000_000_1, "2"),
            (1.5e18, "1.5e18"),
        ];
        for (v, want) in table {
            assert_eq!(format_quantity(*v).unwrap(), *want, "{v}");
        }
        assert!(format_quantity(f64::NAN).is_err());
        assert!(format_quantity(f64::INFINITY).is_err());
    }

    proptest! {
        #[test]
        fn round_trips_and_never_hides_a_nonzero(v in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
            let q = format_quantity(v).unwrap();
            let back = parse_quantity(&q).unwrap();
            if v != 0.0 {
                prop_assert!(back != 0.0, "{v} -> {q}");
                prop_assert_eq!(back.is_sign_negative(), v.is_sign_negative());
            }
            // Nano precision for ordinary magnitudes, relative precision otherwise.
            let tolerance = (v.abs() * 1e-9).max(if v.abs() >= 1e-9 { 0.6e-9 } else { 0.0 });
            prop_assert!((back - v).abs() <= tolerance + v.abs() * 1e-12, "{v} -> {q} -> {back}");
        }
    }
}
