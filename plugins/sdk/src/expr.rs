//! The rule condition language used in the config file.
//!
//! ```text
//! condition  := or
//! or         := and ( "or" and )*
//! and        := unary ( "and" unary )*
//! unary      := "not" unary | "(" condition ")" | comparison
//! comparison := metric op literal
//! op         := ">" | ">=" | "<" | "<=" | "==" | "!="
//! literal    := number | "string" | 'string' | true | false
//! metric     := [A-Za-z_][A-Za-z0-9_.]*
//! ```
//!
//! Examples: `error_rate > 0.1`, `service_health == "failed"`,
//! `latency > 2000 and model == "mixtral-8x7b"`.
//!
//! A condition is parsed once (at configure time), its metric names are
//! resolved to the plugin's own ids with [`Expr::resolve`] (so an unknown
//! metric is a configuration error, not a silent `false`), and it is then
//! evaluated without string lookups. A comparison whose metric has no value
//! (for example an average over zero events) is false. A condition nests at
//! most [`MAX_DEPTH`] levels deep.

use std::fmt;

/// How deeply a condition may nest: each parenthesis, `not`, `and` and
/// `or` on the way from the whole condition down to a comparison is one
/// level, and the comparison another. Parsing, evaluating and dropping a
/// condition recurse once per level, so a deeper one is refused with a
/// [`ParseError`] instead of overflowing the stack.
pub const MAX_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Num(f64),
    Str(String),
    Bool(bool),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Num(n) => write!(f, "{n}"),
            Literal::Str(s) => write!(f, "{s:?}"),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The type a metric has; used to reject `error_rate == "x"` at configure time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Num,
    Str,
    Bool,
}

/// A metric's value at evaluation time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Num(f64),
    Str(&'a str),
    Bool(bool),
}

/// A parsed condition; `M` is the metric reference (a name after parsing,
/// the plugin's metric id after [`Expr::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr<M = String> {
    Cmp {
        metric: M,
        op: CmpOp,
        value: Literal,
    },
    And(Box<Expr<M>>, Box<Expr<M>>),
    Or(Box<Expr<M>>, Box<Expr<M>>),
    Not(Box<Expr<M>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    /// 1-based character column where the problem was found.
    pub column: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at column {})", self.message, self.column)
    }
}

impl std::error::Error for ParseError {}

/// Parse `src`. Errors say what was expected and where.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = lex(src)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        end_col: src.chars().count() + 1,
        nest: 0,
    };
    let (e, _depth) = p.or()?;
    if let Some(t) = p.peek() {
        return Err(ParseError {
            message: format!("unexpected {} after a complete condition", t.tok.describe()),
            column: t.col,
        });
    }
    Ok(e)
}

/// Parse a rule's condition and resolve its metrics; the error names the rule.
pub fn parse_rule<M>(
    rule: &str,
    condition: &str,
    resolve: impl FnMut(&str) -> Option<(M, ValueType)>,
) -> Result<Expr<M>, String> {
    let e = parse(condition)
        .map_err(|e| format!("rule '{rule}': cannot parse condition {condition:?}: {e}"))?;
    e.resolve(resolve)
        .map_err(|e| format!("rule '{rule}': condition {condition:?}: {e}"))
}

impl Expr<String> {
    /// Map metric names to ids, checking that each name exists and that the
    /// literal it is compared with has the metric's type.
    pub fn resolve<M>(
        self,
        mut resolve: impl FnMut(&str) -> Option<(M, ValueType)>,
    ) -> Result<Expr<M>, String> {
        self.resolve_inner(&mut resolve)
    }

    fn resolve_inner<M>(
        self,
        resolve: &mut impl FnMut(&str) -> Option<(M, ValueType)>,
    ) -> Result<Expr<M>, String> {
        Ok(match self {
            Expr::Cmp { metric, op, value } => {
                let (id, ty) =
                    resolve(&metric).ok_or_else(|| format!("unknown metric '{metric}'"))?;
                let ok = matches!(
                    (ty, &value, op),
                    (ValueType::Num, Literal::Num(_), _)
                        | (ValueType::Str, Literal::Str(_), CmpOp::Eq | CmpOp::Ne)
                        | (ValueType::Bool, Literal::Bool(_), CmpOp::Eq | CmpOp::Ne)
                );
                if !ok {
                    return Err(format!(
                        "'{metric} {} {value}' compares a {} metric with {}",
                        op.as_str(),
                        match ty {
                            ValueType::Num => "numeric",
                            ValueType::Str => "text",
                            ValueType::Bool => "true/false",
                        },
                        match value {
                            Literal::Num(_) => "a number",
                            Literal::Str(_) => "a string",
                            Literal::Bool(_) => "a boolean",
                        }
                    ));
                }
                Expr::Cmp {
                    metric: id,
                    op,
                    value,
                }
            }
            Expr::And(a, b) => Expr::And(
                Box::new(a.resolve_inner(resolve)?),
                Box::new(b.resolve_inner(resolve)?),
            ),
            Expr::Or(a, b) => Expr::Or(
                Box::new(a.resolve_inner(resolve)?),
                Box::new(b.resolve_inner(resolve)?),
            ),
            Expr::Not(a) => Expr::Not(Box::new(a.resolve_inner(resolve)?)),
        })
    }
}

impl<M> Expr<M> {
    /// Evaluate with `get` giving each metric's current value.
    pub fn eval<'a>(&self, get: &impl Fn(&M) -> Option<Value<'a>>) -> bool {
        match self {
            Expr::Cmp { metric, op, value } => match (get(metric), value) {
                (Some(Value::Num(a)), Literal::Num(b)) => match op {
                    CmpOp::Gt => a > *b,
                    CmpOp::Ge => a >= *b,
                    CmpOp::Lt => a < *b,
                    CmpOp::Le => a <= *b,
                    CmpOp::Eq => a == *b,
                    CmpOp::Ne => a != *b,
                },
                (Some(Value::Str(a)), Literal::Str(b)) => match op {
                    CmpOp::Eq => a == b,
                    CmpOp::Ne => a != b,
                    _ => false,
                },
                (Some(Value::Bool(a)), Literal::Bool(b)) => match op {
                    CmpOp::Eq => a == *b,
                    CmpOp::Ne => a != *b,
                    _ => false,
                },
                _ => false,
            },
            Expr::And(a, b) => a.eval(get) && b.eval(get),
            Expr::Or(a, b) => a.eval(get) || b.eval(get),
            Expr::Not(a) => !a.eval(get),
        }
    }

    /// Every metric the condition reads.
    pub fn metrics(&self) -> Vec<&M> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'s>(&'s self, out: &mut Vec<&'s M>) {
        match self {
            Expr::Cmp { metric, .. } => out.push(metric),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect(out);
                b.collect(out);
            }
            Expr::Not(a) => a.collect(out),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    Op(CmpOp),
    LParen,
    RParen,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Num(n) => format!("number {n}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Op(o) => format!("'{}'", o.as_str()),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
        }
    }
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    col: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |message: String, i: usize| ParseError {
        message,
        column: i + 1,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            '>' | '<' | '=' | '!' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('>', Some('=')) => (CmpOp::Ge, 2),
                    ('<', Some('=')) => (CmpOp::Le, 2),
                    ('=', Some('=')) => (CmpOp::Eq, 2),
                    ('!', Some('=')) => (CmpOp::Ne, 2),
                    ('>', _) => (CmpOp::Gt, 1),
                    ('<', _) => (CmpOp::Lt, 1),
                    ('=', _) => {
                        return Err(err("'=' is not an operator; use '=='".into(), i));
                    }
                    _ => return Err(err("'!' must be followed by '='".into(), i)),
                };
                i += len;
                Tok::Op(op)
            }
            '"' | '\'' => {
                let quote = c;
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(err("unterminated string".into(), start)),
                        Some('\\') if chars.get(i + 1).is_some() => {
                            s.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(&q) if q == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                Tok::Str(s)
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n: f64 = text
                    .parse()
                    .map_err(|_| err(format!("'{text}' is not a number"), start))?;
                if !n.is_finite() {
                    return Err(err(format!("'{text}' is not a finite number"), start));
                }
                Tok::Num(n)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
                {
                    i += 1;
                }
                Tok::Ident(chars[start..i].iter().collect())
            }
            other => return Err(err(format!("unexpected character '{other}'"), i)),
        };
        out.push(Token {
            tok,
            col: start + 1,
        });
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end_col: usize,
    /// Parentheses and `not`s around the current position.
    nest: usize,
}

/// A parsed part and its depth in levels (see [`MAX_DEPTH`]).
type Parsed = Result<(Expr, usize), ParseError>;

fn too_deep(column: usize) -> ParseError {
    ParseError {
        message: format!(
            "the condition is nested too deeply (more than {MAX_DEPTH} levels of parentheses, 'not', 'and' and 'or')"
        ),
        column,
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn keyword(&mut self, kw: &str) -> bool {
        match self.peek() {
            Some(Token {
                tok: Tok::Ident(s), ..
            }) if s.eq_ignore_ascii_case(kw) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    fn here(&self) -> usize {
        self.peek().map(|t| t.col).unwrap_or(self.end_col)
    }

    /// `depth` levels, if that is within [`MAX_DEPTH`]; `column` is where
    /// the level that goes past it starts.
    fn level(depth: usize, column: usize) -> Result<usize, ParseError> {
        if depth > MAX_DEPTH {
            Err(too_deep(column))
        } else {
            Ok(depth)
        }
    }

    /// `f` inside one more parenthesis or `not`, refused before recursing
    /// once the limit is reached (so the recursion itself is bounded).
    fn nested(&mut self, column: usize, f: fn(&mut Parser) -> Parsed) -> Parsed {
        if self.nest >= MAX_DEPTH {
            return Err(too_deep(column));
        }
        self.nest += 1;
        let r = f(self);
        self.nest -= 1;
        r
    }

    fn or(&mut self) -> Parsed {
        let (mut e, mut depth) = self.and()?;
        loop {
            let column = self.here();
            if !self.keyword("or") {
                return Ok((e, depth));
            }
            let (b, db) = self.and()?;
            depth = Self::level(depth.max(db) + 1, column)?;
            e = Expr::Or(Box::new(e), Box::new(b));
        }
    }

    fn and(&mut self) -> Parsed {
        let (mut e, mut depth) = self.unary()?;
        loop {
            let column = self.here();
            if !self.keyword("and") {
                return Ok((e, depth));
            }
            let (b, db) = self.unary()?;
            depth = Self::level(depth.max(db) + 1, column)?;
            e = Expr::And(Box::new(e), Box::new(b));
        }
    }

    fn unary(&mut self) -> Parsed {
        let column = self.here();
        if self.keyword("not") {
            let (e, depth) = self.nested(column, Parser::unary)?;
            return Ok((Expr::Not(Box::new(e)), Self::level(depth + 1, column)?));
        }
        if matches!(
            self.peek(),
            Some(Token {
                tok: Tok::LParen,
                ..
            })
        ) {
            self.pos += 1;
            let (e, depth) = self.nested(column, Parser::or)?;
            return match self.peek() {
                Some(Token {
                    tok: Tok::RParen, ..
                }) => {
                    self.pos += 1;
                    Ok((e, Self::level(depth + 1, column)?))
                }
                _ => Err(ParseError {
                    message: "expected ')'".into(),
                    column: self.here(),
                }),
            };
        }
        Ok((self.comparison()?, 1))
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let metric = match self.peek() {
            Some(Token {
                tok: Tok::Ident(s), ..
            }) if !matches!(s.as_str(), "and" | "or" | "not" | "true" | "false") => s.clone(),
            Some(t) => {
                return Err(ParseError {
                    message: format!("expected a metric name, found {}", t.tok.describe()),
                    column: t.col,
                });
            }
            None => {
                return Err(ParseError {
                    message: "expected a metric name, found the end".into(),
                    column: self.end_col,
                });
            }
        };
        self.pos += 1;
        let op = match self.peek() {
            Some(Token {
                tok: Tok::Op(op), ..
            }) => *op,
            Some(t) => {
                return Err(ParseError {
                    message: format!(
                        "expected a comparison (> >= < <= == !=) after '{metric}', found {}",
                        t.tok.describe()
                    ),
                    column: t.col,
                });
            }
            None => {
                return Err(ParseError {
                    message: format!("expected a comparison (> >= < <= == !=) after '{metric}'"),
                    column: self.end_col,
                });
            }
        };
        self.pos += 1;
        let value = match self.peek() {
            Some(Token {
                tok: Tok::Num(n), ..
            }) => Literal::Num(*n),
            Some(Token {
                tok: Tok::Str(s), ..
            }) => Literal::Str(s.clone()),
            Some(Token {
                tok: Tok::Ident(s), ..
            }) if s == "true" || s == "false" => Literal::Bool(s == "true"),
            Some(t) => {
                return Err(ParseError {
                    message: format!(
                        "expected a number, string or true/false after '{}', found {}",
                        op.as_str(),
                        t.tok.describe()
                    ),
                    column: t.col,
                });
            }
            None => {
                return Err(ParseError {
                    message: format!(
                        "expected a number, string or true/false after '{}'",
                        op.as_str()
                    ),
                    column: self.end_col,
                });
            }
        };
        self.pos += 1;
        Ok(Expr::Cmp { metric, op, value })
    }
}

#[cfg(test)]
#[path = "expr_proptests.rs"]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn num(name: &str) -> Option<(String, ValueType)> {
        Some((name.to_string(), ValueType::Num))
    }

    #[test]
    fn parses_the_requirements_conditions() {
        assert_eq!(
            parse("error_rate > 0.1").unwrap(),
            Expr::Cmp {
                metric: "error_rate".into(),
                op: CmpOp::Gt,
                value: Literal::Num(0.1)
            }
        );
        assert_eq!(
            parse("user_satisfaction < 7.0").unwrap(),
            Expr::Cmp {
                metric: "user_satisfaction".into(),
                op: CmpOp::Lt,
                value: Literal::Num(7.0)
            }
        );
        assert_eq!(
            parse(r#"service_health == "failed""#).unwrap(),
            Expr::Cmp {
                metric: "service_health".into(),
                op: CmpOp::Eq,
                value: Literal::Str("failed".into())
            }
        );
    }

    #[test]
    fn precedence_and_evaluation() {
        let e = parse("a > 1 or b > 1 and not c >= 3").unwrap();
        let env = |a: f64, b: f64, c: f64| {
            move |m: &String| {
                Some(Value::Num(match m.as_str() {
                    "a" => a,
                    "b" => b,
                    _ => c,
                }))
            }
        };
        assert!(e.eval(&env(2.0, 0.0, 9.0)));
        assert!(e.eval(&env(0.0, 2.0, 2.0)));
        assert!(!e.eval(&env(0.0, 2.0, 3.0)));
        let p = parse("(a > 1 or b > 1) and c < 0").unwrap();
        assert!(!p.eval(&env(2.0, 0.0, 1.0)));
        assert!(p.eval(&env(2.0, 0.0, -1.0)));
    }

    #[test]
    fn missing_values_are_false() {
        let e = parse("latency > 10").unwrap();
        assert!(!e.eval(&|_: &String| None));
        let e = parse("not latency > 10").unwrap();
        assert!(e.eval(&|_: &String| None));
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = parse("error_rate >> 0.1").unwrap_err();
        assert_eq!(e.column, 13);
        assert!(e.message.contains("expected a number"), "{e}");
        let e = parse("error_rate = 0.1").unwrap_err();
        assert!(e.message.contains("use '=='"), "{e}");
        let e = parse("error_rate > ").unwrap_err();
        assert!(e.message.contains("after '>'"), "{e}");
        let e = parse("> 1").unwrap_err();
        assert!(e.message.contains("expected a metric name"), "{e}");
        let e = parse("a > 1 b").unwrap_err();
        assert!(e.message.contains("unexpected 'b'"), "{e}");
        let e = parse("a == \"x").unwrap_err();
        assert!(e.message.contains("unterminated"), "{e}");
        let e = parse("(a > 1").unwrap_err();
        assert!(e.message.contains("expected ')'"), "{e}");
    }

    #[test]
    fn resolve_checks_names_and_types() {
        let err = parse_rule("r1", "nope > 1", |n| {
            (n == "x").then_some((0u8, ValueType::Num))
        })
        .unwrap_err();
        assert_eq!(
            err,
            "rule 'r1': condition \"nope > 1\": unknown metric 'nope'"
        );
        let err = parse_rule("r2", "x == \"a\"", num).unwrap_err();
        assert!(
            err.contains("compares a numeric metric with a string"),
            "{err}"
        );
        let err = parse_rule("r3", "x > \"a\"", |_| Some(((), ValueType::Str))).unwrap_err();
        assert!(err.contains("compares a text metric"), "{err}");
        let err = parse_rule("r4", "x >", num).unwrap_err();
        assert!(
            err.starts_with("rule 'r4': cannot parse condition"),
            "{err}"
        );
        assert!(parse_rule("ok", "x >= -1.5e3", num).is_ok());
    }

    #[test]
    fn string_comparison() {
        let e = parse("model != 'a' and health == \"failed\"").unwrap();
        let get = |m: &String| match m.as_str() {
            "model" => Some(Value::Str("b")),
            _ => Some(Value::Str("failed")),
        };
        assert!(e.eval(&get));
        assert_eq!(
            e.metrics(),
            vec![&"model".to_string(), &"health".to_string()]
        );
    }
}
