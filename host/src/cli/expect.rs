//! `plugin test --expect FILE`: the output compared with an expected one,
//! batch by batch, field by field, with a diff a person can read in a CI
//! log.

use serde_json::Value;
use std::fmt::Write;

/// At most this many differences are listed.
const MAX_LINES: usize = 30;

/// `None` when `actual` is what `expected` (NDJSON, one batch per line)
/// holds; otherwise the differences, one per line.
pub fn compare(actual: &[Value], expected: &str) -> Result<Option<String>, String> {
    let expected: Vec<Value> = expected
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect::<Result<_, _>>()?;
    let mut diffs = Vec::new();
    for i in 0..actual.len().max(expected.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) => diff(&format!("batch {}", i + 1), e, a, &mut diffs),
            (Some(_), None) => diffs.push(format!("batch {}: expected, but not produced", i + 1)),
            (None, Some(a)) => diffs.push(format!("batch {}: not expected, produced {a}", i + 1)),
            (None, None) => {}
        }
    }
    if diffs.is_empty() {
        return Ok(None);
    }
    let mut text = String::new();
    for d in diffs.iter().take(MAX_LINES) {
        let _ = writeln!(text, "  {d}");
    }
    if diffs.len() > MAX_LINES {
        let _ = writeln!(text, "  ... and {} more", diffs.len() - MAX_LINES);
    }
    Ok(Some(text))
}

/// The paths at which `actual` differs from `expected`.
fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => diff(&format!("{path}.{k}"), ev, av, out),
                    None => out.push(format!("{path}.{k}: expected {ev}, missing")),
                }
            }
            for (k, av) in a.iter().filter(|(k, _)| !e.contains_key(*k)) {
                out.push(format!("{path}.{k}: not expected, got {av}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!(
                    "{path}: expected {} item(s), got {}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                diff(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        (e, a) if e != a => out.push(format!("{path}: expected {e}, got {a}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_output_has_no_diff() {
        let out = [json!({"batch": 1, "actions": []})];
        assert_eq!(compare(&out, "{\"batch\":1,\"actions\":[]}\n\n"), Ok(None));
    }

    #[test]
    fn differences_name_the_batch_and_the_field() {
        let out = [
            json!({"batch": 1, "actions": [{"reason": "3 errors"}]}),
            json!({"batch": 2, "actions": []}),
        ];
        let expected = "{\"batch\":1,\"actions\":[{\"reason\":\"2 errors\"}]}\n{\"batch\":2,\"actions\":[{\"reason\":\"x\"}]}\n{\"batch\":3}\n";
        let text = compare(&out, expected).unwrap().unwrap();
        assert!(
            text.contains(r#"batch 1.actions[0].reason: expected "2 errors", got "3 errors""#),
            "{text}"
        );
        assert!(
            text.contains("batch 2.actions: expected 1 item(s), got 0"),
            "{text}"
        );
        assert!(
            text.contains("batch 3: expected, but not produced"),
            "{text}"
        );
    }

    #[test]
    fn extra_and_missing_fields_are_named() {
        let out = [json!({"batch": 1, "extra": true})];
        let text = compare(&out, "{\"batch\":1,\"snapshot\":{}}")
            .unwrap()
            .unwrap();
        assert!(
            text.contains("batch 1.snapshot: expected {}, missing"),
            "{text}"
        );
        assert!(
            text.contains("batch 1.extra: not expected, got true"),
            "{text}"
        );
    }

    #[test]
    fn a_broken_expectation_is_an_error() {
        let err = compare(&[], "{\"batch\":1}\nnot json\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn long_diffs_are_cut() {
        let out: Vec<Value> = (0..50).map(|i| json!({"batch": i})).collect();
        let text = compare(&out, "").unwrap().unwrap();
        assert_eq!(text.lines().count(), MAX_LINES + 1, "{text}");
        assert!(text.ends_with("... and 20 more\n"), "{text}");
    }
}
