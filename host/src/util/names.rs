//! Names people give things (plugins, admin tokens) that end up in file
//! names, URLs, metric labels and logs.

/// 1 to 64 ASCII letters, digits, '-', '_' or '.'.
pub fn is_plain(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
