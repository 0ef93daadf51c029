//! How the commands' tables show quantities: sizes, durations, and "-" for what is unknown.

/// 1536 → "1.5K" (base 1024).
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// Seconds for a table: "42.1s", "12m03s", "2h05m".
pub(super) fn secs(s: f64) -> String {
    let s = s.max(0.0);
    let whole = s.round() as u64;
    if s < 60.0 {
        format!("{s:.1}s")
    } else if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, whole % 3600 / 60)
    }
}

/// The value, or "-" when there is none.
pub(super) fn dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_and_durations() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(100 * 1024 * 1024), "100.0M");
        assert_eq!(secs(75.2), "1m15s");
        assert_eq!(secs(3.0 * 3600.0 + 120.0), "3h02m");
        assert_eq!(secs(42.14), "42.1s");
        assert_eq!(dash(None), "-");
    }
}
