//! Kubernetes resource quantities (`"200m"`, `"10"`, `"1.5Gi"`, `"1e3"`) as the controller reads
//! them: `Quantity.MilliValue()`, an integer number of thousandths, rounded up.

use thiserror::Error;

/// A quantity string that is not a valid Kubernetes quantity, or whose milli-value does not fit
/// in an `i64`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid quantity {input:?}: {message}")]
pub struct QuantityError {
    /// The rejected input.
    pub input: String,
    /// What is wrong with it.
    pub message: &'static str,
}

/// Parses a Kubernetes quantity and returns its milli-value (`Quantity.MilliValue()`): the value
/// times 1000, rounded up (towards positive infinity), as the HPA controller reads every target
/// and every metric value.
pub fn parse_milli(input: &str) -> Result<i64, QuantityError> {
    let err = |message| QuantityError {
        input: input.to_string(),
        message,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("no number"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 36 {
        return Err(err("too many digits"));
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| err("bad digits"))?
    };
    // value = mantissa * 10^(dec_exp - frac) * 2^bin_exp
    let (dec_exp, bin_exp): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(|| err("unknown suffix"))?;
            let body = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) || body.len() > 4 {
                return Err(err("bad exponent"));
            }
            (exp.parse::<i64>().map_err(|_| err("bad exponent"))?, 0)
        }
    };
    let out_of_range = || err("out of range for a milli-value");
    // milli = mantissa * 2^bin * 10^(dec_exp + 3 - frac_len), rounded up.
    let scaled = mantissa
        .checked_mul(1i128 << bin_exp)
        .ok_or_else(out_of_range)?;
    let exp10 = dec_exp + 3 - frac_part.len() as i64;
    let magnitude: i128 = if scaled == 0 {
        0
    } else if exp10 >= 0 {
        let factor = 10i128
            .checked_pow(u32::try_from(exp10).map_err(|_| out_of_range())?)
            .ok_or_else(out_of_range)?;
        scaled.checked_mul(factor).ok_or_else(out_of_range)?
    } else if -exp10 > 38 {
        // Positive and far below one thousandth: rounds up to 1 (or, negative, to 0).
        if negative { 0 } else { 1 }
    } else {
        let divisor = 10i128.pow((-exp10) as u32);
        let q = scaled / divisor;
        let r = scaled % divisor;
        // Round up towards +inf: away from zero for positive, towards zero for negative.
        if r != 0 && !negative { q + 1 } else { q }
    };
    let signed = if negative { -magnitude } else { magnitude };
    i64::try_from(signed).map_err(|_| out_of_range())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (input, milli) in [
            ("200m", 200),
            ("10", 10_000),
            ("1.5", 1_500),
            ("0.0001", 1), // rounded up, like MilliValue()
            ("1Ki", 1_024_000),
            ("1.5Gi", 1_610_612_736_000),
            ("1e3", 1_000_000),
            ("2E-3", 2),
            ("1k", 1_000_000),
            ("+7", 7_000),
            ("-1.5", -1_500),
            ("100n", 1),
            ("0", 0),
        ] {
            assert_eq!(parse_milli(input), Ok(milli), "{input}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for input in ["", "m", "1.2.3", "10x", "1e", "abc", "9E18"] {
            assert!(parse_milli(input).is_err(), "{input}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(input in "\\PC{0,24}") {
            let _ = parse_milli(&input);
        }

        #[test]
        fn decimal_milli_values_round_trip(milli in -1_000_000_000_000i64..1_000_000_000_000) {
            // "12.345" style input (three decimals) is exact.
            let text = format!("{}{}.{:03}", if milli < 0 { "-" } else { "" }, milli.abs() / 1000, milli.abs() % 1000);
            proptest::prop_assert_eq!(parse_milli(&text), Ok(milli));
            proptest::prop_assert_eq!(parse_milli(&format!("{milli}m")), Ok(milli));
        }
    }
}
