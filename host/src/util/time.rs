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
