//! Quantities written as text, parsed one way wherever they are read (workflow files, the
//! config, the API): durations (`"90s"`, `"1h 30m"`), sizes (`"512M"`), CPU percentages
//! (`"150%"`); durations stored as their humantime text; and the checks the config's
//! sections share while they deserialise (durations above zero, absolute paths).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The longest duration drover takes from outside (workflow files, the config, every
/// door): 100 years. Every timeout, grace, silence and window is far below it, and a
/// timestamp `now + MAX_DURATION` stays formattable (RFC 3339 ends at year 9999) and a sum of
/// a few such durations cannot overflow, so no arithmetic on input can panic.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// [`MAX_DURATION`] as the messages say it.
pub const MAX_DURATION_TEXT: &str = "100 years (36500d)";

/// A text that is not a duration. Its `Display` is the wording workflow files and the API
/// show; a caller with wording of its own (the config) takes `reason`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (expected e.g. \"90s\", \"5m\" or \"1h 30m\")")]
pub struct DurationError {
    /// The text as given, cut to [`QUOTED_MAX`] bytes: it is quoted back to the caller.
    pub text: String,
    pub reason: DurationReason,
}

/// What is wrong with a duration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationReason {
    /// humantime's word on the syntax.
    #[error(transparent)]
    Syntax(#[from] humantime::DurationError),
    #[error("longer than the maximum of {MAX_DURATION_TEXT}")]
    TooLong,
}

/// How much of a rejected text an error quotes back.
pub const QUOTED_MAX: usize = 64;

/// `text` cut to at most `max` bytes (at a character boundary), with a marker saying how
/// long it was when it was cut: what a message or an audit record keeps of a string from
/// outside.
pub fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// Parses a humantime duration (`"90s"`, `"5m"`, `"1h 30m"`), blanks around it ignored, of
/// at most [`MAX_DURATION`]. Zero is allowed here; callers decide whether it makes sense.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        text: truncated(s, QUOTED_MAX),
        reason,
    };
    let duration = humantime::parse_duration(s.trim()).map_err(|e| error(e.into()))?;
    bounded_duration(duration).map_err(|_| error(DurationReason::TooLong))
}

/// `ms` milliseconds (a door's integer form of a duration), at most [`MAX_DURATION`].
pub fn duration_from_millis(ms: u64) -> Result<Duration, DurationError> {
    bounded_duration(Duration::from_millis(ms)).map_err(|reason| DurationError {
        text: format!("{ms}ms"),
        reason,
    })
}

/// `d` if it is at most [`MAX_DURATION`]: for durations a door received already typed.
pub fn bounded_duration(d: Duration) -> Result<Duration, DurationReason> {
    if d > MAX_DURATION {
        return Err(DurationReason::TooLong);
    }
    Ok(d)
}

/// Parses a size like systemd does: plain bytes (`"2048"`) or a number with a
/// base-1024 suffix `K`, `M`, `G` or `T` (`"512M"`, `"1.5G"`). Zero is allowed
/// here; callers decide whether it makes sense.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = truncated(text, QUOTED_MAX);
    let bad = || format!("invalid size {s:?}: expected bytes or a number with K, M, G or T");
    let t = text.trim();
    let (number, multiplier): (&str, u128) = match t.char_indices().next_back() {
        None => return Err(bad()),
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        Some(_) => (t, 1),
    };
    let (int_part, frac_part) = match number.split_once('.') {
        // A fraction of a byte is meaningless, so decimals need a suffix.
        Some(_) if multiplier == 1 => return Err(bad()),
        Some((i, f)) => (i, Some(f)),
        None => (number, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return Err(bad());
    }
    let too_large = || format!("invalid size {s:?}: too large");
    let int: u128 = int_part.parse().map_err(|_| too_large())?;
    let mut bytes = int.checked_mul(multiplier).ok_or_else(too_large)?;
    if let Some(frac) = frac_part {
        // Exact integer arithmetic (no floats), floored to whole bytes. 18 digits
        // keep 10^digits * 2^40 well inside u128.
        if frac.len() > 18 {
            return Err(format!("invalid size {s:?}: too many decimal places"));
        }
        let frac_value: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(frac.len() as u32);
        bytes += frac_value * multiplier / scale;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// A CPU quota as a percentage of one CPU: `"150%"` -> 150. Whole percents only: that
/// is what systemd's `CPUQuota=` is given.
pub(crate) fn parse_percent(text: &str) -> Result<u32, String> {
    let s = truncated(text, QUOTED_MAX);
    let bad = || {
        format!(
            "invalid CPU quota {s:?}: expected a whole percentage of one CPU such as \"50%\" or \"200%\""
        )
    };
    let digits = text.trim().strip_suffix('%').ok_or_else(bad)?.trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let percent: u32 = digits
        .parse()
        .map_err(|_| format!("invalid CPU quota {s:?}: too large"))?;
    if percent == 0 {
        return Err(format!("invalid CPU quota {s:?}: must be greater than 0%"));
    }
    Ok(percent)
}

/// Serde for a duration as its humantime text ("1m 30s"): readable in the database and,
/// unlike whole milliseconds, exact to the nanosecond.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        humantime::parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// [`duration_text`] for an optional duration (`null` when absent).
pub(crate) mod opt_duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Text(#[serde(with = "super::duration_text")] Duration);
        Ok(Option::<Text>::deserialize(d)?.map(|Text(d)| d))
    }
}

/// An absolute path: the agent runs with `/` as its working directory under systemd, so
/// a relative one would not mean what its author meant.
pub(crate) fn absolute_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if !path.is_absolute() {
        return Err(serde::de::Error::custom(format!(
            "{} is not an absolute path",
            path.display()
        )));
    }
    Ok(Some(path))
}

/// A duration above zero: a zero sampling interval would spin, a zero history would
/// drop every row as it is written.
pub(crate) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let duration = parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration such as \"500ms\", \"1s\", \"5m\" or \"30d\": {}",
            e.reason
        ))
    })?;
    if duration.is_zero() {
        return Err(serde::de::Error::custom("must be above zero, e.g. \"1s\""));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size(" 2k "), Ok(2048));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "12Q", "", "M", "-5", "+5", "1.5", "5KB", "1.G", ".5G", "5 M", "0x10",
        ] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(
            parse_size("99999999999T")
                .expect_err("overflow")
                .contains("too large")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["5x", "", "90", "soon"] {
            let e = parse_duration(bad).expect_err(bad).to_string();
            assert!(e.starts_with(&format!("invalid duration {bad:?}")), "{e}");
        }
    }

    #[test]
    fn durations_beyond_the_maximum_are_refused_not_overflowed() {
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        for huge in [
            "36501d",
            "18446744073709551615s",
            "10000000years",
            "1000000000000000000000000000h",
        ] {
            let e = parse_duration(huge).expect_err(huge);
            let text = e.to_string();
            assert!(
                text.contains("maximum of 100 years")
                    || matches!(e.reason, DurationReason::Syntax(_)),
                "{huge}: {text}"
            );
        }
        assert_eq!(
            parse_duration("18446744073709551615s").unwrap_err().reason,
            DurationReason::TooLong
        );
        assert_eq!(duration_from_millis(1500), Ok(Duration::from_millis(1500)));
        assert_eq!(
            duration_from_millis(u64::MAX).unwrap_err().reason,
            DurationReason::TooLong
        );
    }

    #[test]
    fn a_long_text_is_quoted_cut_with_its_length() {
        let long = "é".repeat(100);
        let cut = truncated(&long, 5);
        assert_eq!(cut, "éé… (200 bytes in all)");
        assert_eq!(truncated("short", 5), "short");
        let e = parse_duration(&"9".repeat(10_000)).unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
        assert!(parse_size(&"x".repeat(10_000)).unwrap_err().len() < 300);
    }

    /// Seeded random text, and numbers at the edges with every unit: refused or parsed,
    /// never a panic.
    #[test]
    fn random_quantities_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x7175_616e);
        let units = [
            "", "ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y", "years", "K", "G", "T", "%",
        ];
        let numbers = [
            "0",
            "1",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "1.5",
            ".5",
            "1.",
            "-1",
            "340282366920938463463374607431768211455",
        ];
        for _ in 0..5000 {
            let text = match rng.u8(..3) {
                0 => {
                    let bytes: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                1 => format!(
                    "{}{}",
                    rng.choice(numbers).unwrap(),
                    rng.choice(units).unwrap()
                ),
                _ => (0..rng.usize(1..4))
                    .map(|_| {
                        format!(
                            "{}{}",
                            rng.choice(numbers).unwrap(),
                            rng.choice(units).unwrap()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            if let Ok(d) = parse_duration(&text) {
                assert!(d <= MAX_DURATION, "{text}");
            }
            let _ = parse_size(&text);
            let _ = parse_percent(&text);
        }
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("50%"), Ok(50));
        assert_eq!(parse_percent("200%"), Ok(200));
        assert_eq!(parse_percent(" 7 %"), Ok(7));
        for bad in ["150", "0%", "-5%", "1.5%", "%", "abc%", "99999999999%"] {
            assert!(parse_percent(bad).is_err(), "{bad} should be rejected");
        }
    }
}
