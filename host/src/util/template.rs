//! Argument templates of command executors: `{action}`, `{target}`,
//! `{rule}`, `{reason}`, `{requested_at}`, `{idempotency_key}`,
//! `{parameters}` and `{parameters.KEY}` / `{parameters.A.B}`; `{{` and `}}`
//! are literal braces. Parsed when the config loads (so a typo stops the
//! start) and rendered for each request.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Piece<'a> {
    Lit(String),
    Field(&'a str),
}

const FIELDS: [&str; 7] = [
    "action",
    "target",
    "rule",
    "reason",
    "requested_at",
    "idempotency_key",
    "parameters",
];

fn parse_template(t: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        lit.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            lit.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            lit.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(format!(
                "unmatched '}}' in {t:?} (write '}}}}' for a brace)"
            ));
        } else {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?;
            let name = tail[1..end].trim();
            let known = FIELDS.contains(&name)
                || name
                    .strip_prefix("parameters.")
                    .is_some_and(|p| !p.is_empty() && p.split('.').all(|s| !s.is_empty()));
            if !known {
                return Err(format!(
                    "unknown placeholder {{{name}}} in {t:?} (known: {}, parameters.KEY)",
                    FIELDS.join(", ")
                ));
            }
            if !lit.is_empty() {
                out.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            out.push(Piece::Field(name));
            rest = &tail[end + 1..];
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

/// Whether a template parses (config check).
pub fn validate_template(t: &str) -> Result<(), String> {
    parse_template(t).map(|_| ())
}

/// A template with the values `field` gives for the placeholders (`None`
/// for an unknown name): text as is, numbers and booleans in JSON form,
/// objects and arrays as JSON text. `{parameters.KEY}` is looked up in
/// `parameters`; a missing or null parameter is an error (a command is not
/// run with a hole in its arguments).
pub fn render(
    t: &str,
    field: impl Fn(&str) -> Option<String>,
    parameters: &Value,
) -> Result<String, String> {
    let mut out = String::new();
    for piece in parse_template(t)? {
        match piece {
            Piece::Lit(s) => out.push_str(&s),
            Piece::Field("parameters") => out.push_str(&parameters.to_string()),
            Piece::Field(name) => match name.strip_prefix("parameters.") {
                None => {
                    out.push_str(&field(name).ok_or_else(|| format!("no value for {{{name}}}"))?)
                }
                Some(path) => {
                    let v = path
                        .split('.')
                        .try_fold(parameters, |node, key| node.get(key))
                        .filter(|v| !v.is_null())
                        .ok_or_else(|| format!("parameter '{path}' is missing"))?;
                    match v {
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    }
                }
            },
        }
    }
    Ok(out)
}
