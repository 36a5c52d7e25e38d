//! Durations as rule and API authors write them: a bare number of seconds
//! (`90`, `1.5`), or numbers with units (`500ms`, `90s`, `15m`, `1.5h`,
//! `1h30m`, `1h 30m`, `7d`, `2w`). One parser for the plugins' rules (`within`) and
//! the host's API (silence durations), so both accept the same text.

/// Milliseconds in `text`.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("'{text}': {why} (e.g. 90, 500ms, 15m, 1h30m, 7d)");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad("empty"));
    }
    if let Ok(secs) = number(t) {
        return to_millis(secs * 1000.0).ok_or_else(|| bad("out of range"));
    }
    let mut total = 0.0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (n, after) = rest.split_at(digits);
        if n.is_empty() {
            return Err(bad("a unit needs a number before it"));
        }
        let after = after.trim_start();
        let units = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(units);
        let scale = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "w" => 604_800_000.0,
            "" => return Err(bad("a number without a unit")),
            u => return Err(bad(&format!("unknown unit '{u}' (ms, s, m, h, d, w)"))),
        };
        total += number(n).map_err(|_| bad(&format!("'{n}' is not a number")))? * scale;
        rest = after.trim_start();
    }
    to_millis(total).ok_or_else(|| bad("out of range"))
}

/// A non-negative decimal number (no sign, no exponent).
fn number(s: &str) -> Result<f64, ()> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(());
    }
    s.parse().map_err(|_| ())
}

fn to_millis(ms: f64) -> Option<u64> {
    (ms.is_finite() && ms < u64::MAX as f64).then(|| ms.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_of_seconds_or_with_units() {
        for (text, ms) in [
            ("90", 90_000),
            ("1.5", 1_500),
            (" 30s ", 30_000),
            ("500ms", 500),
            ("15m", 900_000),
            ("1.5h", 5_400_000),
            ("1h30m", 5_400_000),
            ("7d", 604_800_000),
            ("2w", 1_209_600_000),
            ("1m30s250ms", 90_250),
            ("1h 30 m", 5_400_000),
        ] {
            assert_eq!(parse_millis(text), Ok(ms), "{text}");
        }
        for bad in [
            "",
            "h",
            "1x",
            "5 min",
            "1h30",
            "-5m",
            "1e3s",
            "1..5s",
            "99999999999999999999999d",
        ] {
            let e = parse_millis(bad).unwrap_err();
            assert!(e.starts_with(&format!("'{bad}': ")), "{bad}: {e}");
        }
    }
}
