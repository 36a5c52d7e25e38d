//! Times as people write them.

/// A time on the command line or in a query: RFC 3339, or milliseconds
/// since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("'{text}': not RFC 3339 or milliseconds ({e})"))
}

/// A duration as people write it: whole seconds ("3600"), or numbers with
/// units `s`, `m`, `h`, `d`, `w` ("90s", "15m", "1h30m", "7d"); in seconds.
pub fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("'{text}': {why} (e.g. 3600, 90s, 15m, 1h30m, 7d)");
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(secs);
    }
    if t.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad(&format!("unknown unit '{c}'"))),
        };
        let n: u64 = digits.parse().map_err(|_| bad("a unit needs a number"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("too long"))?;
    }
    if !digits.is_empty() {
        return Err(bad("a number without a unit"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_seconds_or_with_units() {
        assert_eq!(parse_duration_secs("3600"), Ok(3600));
        assert_eq!(parse_duration_secs("90s"), Ok(90));
        assert_eq!(parse_duration_secs("15m"), Ok(900));
        assert_eq!(parse_duration_secs("1h30m"), Ok(5400));
        assert_eq!(parse_duration_secs("7d"), Ok(604_800));
        assert_eq!(parse_duration_secs("2w"), Ok(1_209_600));
        for bad in ["", "h", "1x", "1h30", "-5m", "99999999999999999999d"] {
            assert!(parse_duration_secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_in_milliseconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert!(parse_time("yesterday").is_err());
    }
}
