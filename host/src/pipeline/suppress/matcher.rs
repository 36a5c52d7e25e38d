//! One condition of a silence on a finding, Alertmanager-style:
//! `{"name": "rule", "op": "=~", "value": "high_.*"}`. A regex matches
//! the whole value (it is anchored), so `high` does not match
//! `high_latency`.

use super::Key;
use serde::{Deserialize, Serialize};

/// The longest value a matcher takes (a regex is compiled within a size
/// limit too).
const MAX_VALUE: usize = 1024;
/// Compiled size limit of a regex: a pattern that expands beyond it (e.g.
/// `(a{100}){100}`) is refused instead of costing memory on every batch.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What a matcher looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// The finding's name: a rule or a pattern (`high_latency`,
    /// `error_burst`).
    Rule,
    /// What it is about (a service, a model); empty for a global finding.
    Subject,
    /// `rule` (configured rules) or `pattern` (built-in detectors).
    Source,
}

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Op {
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    /// The regex matches the whole value.
    #[serde(rename = "=~")]
    Regex,
    #[serde(rename = "!~")]
    NotRegex,
}

/// A matcher as written (request body, stored JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatcherSpec {
    pub name: Field,
    pub op: Op,
    pub value: String,
}

/// A matcher ready to test findings with.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub spec: MatcherSpec,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Equal(String),
    Regex(regex::Regex),
}

impl Matcher {
    /// Compile `spec`; the error says what is wrong with its value.
    pub fn new(spec: MatcherSpec) -> Result<Matcher, String> {
        if spec.value.len() > MAX_VALUE {
            return Err(format!("at most {MAX_VALUE} bytes"));
        }
        let test = match spec.op {
            Op::Equal | Op::NotEqual => Test::Equal(spec.value.clone()),
            Op::Regex | Op::NotRegex => {
                let anchored = format!("^(?:{})$", spec.value);
                let re = regex::RegexBuilder::new(&anchored)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("not a valid regex: {e}"))?;
                Test::Regex(re)
            }
        };
        Ok(Matcher { spec, test })
    }

    pub fn matches(&self, key: &Key) -> bool {
        let value = match self.spec.name {
            Field::Rule => key.rule,
            Field::Subject => key.subject,
            Field::Source => key.source,
        };
        let hit = match &self.test {
            Test::Equal(v) => value == v,
            Test::Regex(re) => re.is_match(value),
        };
        match self.spec.op {
            Op::Equal | Op::Regex => hit,
            Op::NotEqual | Op::NotRegex => !hit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: Field, op: Op, value: &str) -> Matcher {
        Matcher::new(MatcherSpec {
            name,
            op,
            value: value.into(),
        })
        .unwrap()
    }

    const SLOW_API: Key = Key {
        rule: "high_latency",
        subject: "api",
        source: "rule",
    };

    #[test]
    fn each_op_on_each_field() {
        use Field::*;
        use Op::*;
        let cases = [
            (Rule, Equal, "high_latency", true),
            (Rule, Equal, "high", false),
            (Rule, NotEqual, "high_latency", false),
            (Rule, NotEqual, "error_burst", true),
            (Subject, Equal, "api", true),
            (Subject, Regex, "api|web", true),
            (Subject, NotRegex, "api|web", false),
            (Source, Equal, "pattern", false),
            (Source, NotRegex, "pat.*", true),
        ];
        for (field, op, value, want) in cases {
            assert_eq!(
                m(field, op, value).matches(&SLOW_API),
                want,
                "{field:?} {op:?} {value}"
            );
        }
    }

    /// `=~ high` would match `high_latency` unanchored; anchored it must
    /// match the whole name, and an alternation stays inside the anchors.
    #[test]
    fn a_regex_matches_the_whole_value() {
        assert!(!m(Field::Rule, Op::Regex, "high").matches(&SLOW_API));
        assert!(!m(Field::Rule, Op::Regex, "latency").matches(&SLOW_API));
        assert!(m(Field::Rule, Op::Regex, "high_.*").matches(&SLOW_API));
        assert!(m(Field::Rule, Op::Regex, ".*latency").matches(&SLOW_API));
        // Without the group, `^x|high$` would match any name ending in high.
        assert!(!m(Field::Rule, Op::Regex, "x|high").matches(&SLOW_API));
        assert!(m(Field::Rule, Op::NotRegex, "high").matches(&SLOW_API));
        // An empty subject (a global finding) is matched by `=~ ""`.
        let global = Key {
            subject: "",
            ..SLOW_API
        };
        assert!(m(Field::Subject, Op::Regex, "").matches(&global));
        assert!(!m(Field::Subject, Op::Regex, "").matches(&SLOW_API));
    }

    #[test]
    fn a_bad_regex_or_value_is_refused_with_the_reason() {
        let bad = |op, value: &str| {
            Matcher::new(MatcherSpec {
                name: Field::Rule,
                op,
                value: value.into(),
            })
            .unwrap_err()
        };
        assert!(bad(Op::Regex, "high_(").contains("not a valid regex"));
        assert!(bad(Op::NotRegex, "(a{100}){100}{100}").contains("not a valid regex"));
        assert!(bad(Op::Equal, &"x".repeat(2000)).contains("at most 1024"));
        // `(` is only special in a regex.
        assert!(m(Field::Rule, Op::Equal, "high_(").matches(&Key {
            rule: "high_(",
            ..SLOW_API
        }));
    }

    #[test]
    fn unknown_names_and_ops_are_refused_by_name() {
        let e = serde_json::from_str::<MatcherSpec>(r#"{"name":"service","op":"=","value":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `service`"), "{e}");
        let e = serde_json::from_str::<MatcherSpec>(r#"{"name":"rule","op":"==","value":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `==`"), "{e}");
        let spec: MatcherSpec =
            serde_json::from_str(r#"{"name":"subject","op":"!~","value":"a.*"}"#).unwrap();
        assert_eq!((spec.name, spec.op), (Field::Subject, Op::NotRegex));
    }
}
