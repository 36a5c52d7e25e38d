//! Property-based tests of the rule language: any text gives an expression
//! or a [`ParseError`] (never a panic or a stack overflow), expressions
//! generated from the grammar parse back to themselves, and evaluation is
//! total and agrees with a reference evaluator (NaN, infinities, -0).

use super::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A parse error is well formed: it says something, at a column within the
/// text (or just past its end).
fn check_error(src: &str, e: &ParseError) -> Result<(), TestCaseError> {
    prop_assert!(!e.message.is_empty(), "empty message for {src:?}");
    let end = src.chars().count() + 1;
    prop_assert!(
        (1..=end).contains(&e.column),
        "column {} outside 1..={end} for {src:?}: {e}",
        e.column
    );
    Ok(())
}

/// The depth of a tree, without recursion (a property must not overflow
/// the stack on the trees it checks).
fn depth<M>(e: &Expr<M>) -> usize {
    let mut max = 0;
    let mut stack = vec![(e, 1)];
    while let Some((e, d)) = stack.pop() {
        max = max.max(d);
        match e {
            Expr::Cmp { .. } => {}
            Expr::Not(a) => stack.push((a, d + 1)),
            Expr::And(a, b) | Expr::Or(a, b) => {
                stack.push((a, d + 1));
                stack.push((b, d + 1));
            }
        }
    }
    max
}

// ---------------------------------------------------------------------------
// Printing: the source text of an expression, fully parenthesised.

fn print_literal(l: &Literal) -> String {
    match l {
        // `{:?}` is the shortest text that reads back to the same f64
        // (with an exponent for very large or small numbers).
        Literal::Num(n) => format!("{n:?}"),
        Literal::Str(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            out
        }
        Literal::Bool(b) => b.to_string(),
    }
}

fn print(e: &Expr) -> String {
    match e {
        Expr::Cmp { metric, op, value } => {
            format!("{metric} {} {}", op.as_str(), print_literal(value))
        }
        Expr::And(a, b) => format!("({} and {})", print(a), print(b)),
        Expr::Or(a, b) => format!("({} or {})", print(a), print(b)),
        Expr::Not(a) => format!("not {}", print(a)),
    }
}

// ---------------------------------------------------------------------------
// Generators.

/// Metric names: the grammar's `[A-Za-z_][A-Za-z0-9_.]*`, but not a
/// keyword in any case (`NOT > 1` is read as `not`, then fails).
fn metric() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.]{0,12}".prop_filter("not a keyword", |s| {
        !["and", "or", "not", "true", "false"]
            .iter()
            .any(|k| s.eq_ignore_ascii_case(k))
    })
}

fn op() -> impl Strategy<Value = CmpOp> {
    prop_oneof![
        Just(CmpOp::Gt),
        Just(CmpOp::Ge),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
    ]
}

/// Finite numbers (the lexer refuses others), with the odd ones often.
fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |n| n.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        (-1000i32..1000).prop_map(f64::from),
    ]
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        finite().prop_map(Literal::Num),
        // Any text, quotes and backslashes included.
        prop_oneof![any::<String>(), "[\"'\\\\a ]{0,6}"].prop_map(Literal::Str),
        any::<bool>().prop_map(Literal::Bool),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf =
        (metric(), op(), literal()).prop_map(|(metric, op, value)| Expr::Cmp { metric, op, value });
    leaf.prop_recursive(6, 32, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Expr::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Expr::Not(Box::new(a))),
        ]
    })
}

/// Metric values, the odd floats often.
fn value() -> impl Strategy<Value = Option<OwnedValue>> {
    prop_oneof![
        1 => Just(None),
        3 => prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.0),
            Just(-0.0),
            (-3i32..3).prop_map(f64::from),
        ]
        .prop_map(|n| Some(OwnedValue::Num(n))),
        1 => "[a\"' ]{0,3}".prop_map(|s| Some(OwnedValue::Str(s))),
        1 => any::<bool>().prop_map(|b| Some(OwnedValue::Bool(b))),
    ]
}

#[derive(Debug, Clone)]
enum OwnedValue {
    Num(f64),
    Str(String),
    Bool(bool),
}

impl OwnedValue {
    fn borrow(&self) -> Value<'_> {
        match self {
            OwnedValue::Num(n) => Value::Num(*n),
            OwnedValue::Str(s) => Value::Str(s),
            OwnedValue::Bool(b) => Value::Bool(*b),
        }
    }
}

/// Text made of the language's tokens (and near misses), so that most
/// inputs get past the lexer and exercise the parser.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("("),
        Just(")"),
        Just("and"),
        Just("AND"),
        Just("or"),
        Just("Or"),
        Just("not"),
        Just("NOT"),
        Just(">"),
        Just(">="),
        Just("<"),
        Just("<="),
        Just("=="),
        Just("!="),
        Just("="),
        Just("!"),
        Just("\""),
        Just("'"),
        Just("\\"),
        Just("1"),
        Just("-2.5e3"),
        Just("1e400"),
        Just("-"),
        Just("."),
        Just("+e"),
        Just("NaN"),
        Just("inf"),
        Just("true"),
        Just("false"),
        Just("a"),
        Just("a.b_c"),
        Just("\"x\""),
        Just("'y'"),
        Just("é"),
        Just(" "),
        Just("\t"),
        Just("\n"),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

// ---------------------------------------------------------------------------
// Reference semantics (the module docs and `Expr::eval`): a comparison of a
// metric without a value, or of a value of another type, is false; strings
// and booleans only compare with `==` and `!=`; numbers follow IEEE 754
// (every comparison with NaN is false except `!=`).

fn reference(e: &Expr, env: &dyn Fn(&str) -> Option<OwnedValue>) -> bool {
    match e {
        Expr::Cmp { metric, op, value } => match (env(metric), value) {
            (Some(OwnedValue::Num(a)), Literal::Num(b)) => match a.partial_cmp(b) {
                None => *op == CmpOp::Ne,
                Some(o) => match op {
                    CmpOp::Gt => o.is_gt(),
                    CmpOp::Ge => o.is_ge(),
                    CmpOp::Lt => o.is_lt(),
                    CmpOp::Le => o.is_le(),
                    CmpOp::Eq => o.is_eq(),
                    CmpOp::Ne => o.is_ne(),
                },
            },
            (Some(OwnedValue::Str(a)), Literal::Str(b)) => match op {
                CmpOp::Eq => a == *b,
                CmpOp::Ne => a != *b,
                _ => false,
            },
            (Some(OwnedValue::Bool(a)), Literal::Bool(b)) => match op {
                CmpOp::Eq => a == *b,
                CmpOp::Ne => a != *b,
                _ => false,
            },
            _ => false,
        },
        Expr::And(a, b) => reference(a, env) && reference(b, env),
        Expr::Or(a, b) => reference(a, env) || reference(b, env),
        Expr::Not(a) => !reference(a, env),
    }
}

/// Metric names of `e`, each with one generated value.
fn env_for(names: &[&String], values: &[Option<OwnedValue>]) -> Vec<(String, Option<OwnedValue>)> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| ((*n).clone(), values[i % values.len()].clone()))
        .collect()
}

fn lookup(env: &[(String, Option<OwnedValue>)], name: &str) -> Option<OwnedValue> {
    env.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.clone())
}

// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Any text: an expression or a well-formed error, never a panic.
    #[test]
    fn arbitrary_text_never_panics(src in any::<String>()) {
        if let Err(e) = parse(&src) {
            check_error(&src, &e)?;
        }
    }

    /// Token soup gets past the lexer: the parser's errors are well formed
    /// too, and whatever parses is printed back to the same tree.
    #[test]
    fn token_soup_parses_or_fails_cleanly(src in token_soup()) {
        match parse(&src) {
            Err(e) => check_error(&src, &e)?,
            Ok(e) => {
                prop_assert!(depth(&e) <= MAX_DEPTH, "depth {} for {src:?}", depth(&e));
                let again = parse(&print(&e));
                prop_assert_eq!(again.as_ref(), Ok(&e), "{:?} printed as {:?}", src, print(&e));
            }
        }
    }

    /// Deep nesting of parentheses and `not`, balanced or not, up to 100,000
    /// levels: a result or a clear error (never a stack overflow). Mostly
    /// around the limit; a few hundred cases are huge (lexing them is most
    /// of this test's time).
    #[test]
    fn deep_nesting_is_refused_cleanly(
        n in prop_oneof![
            80 => 0usize..2 * MAX_DEPTH,
            8 => 2 * MAX_DEPTH..6_000,
            1 => 6_000usize..=100_000,
        ],
        shape in 0u8..4,
    ) {
        let src = match shape {
            0 => format!("{}a > 1{}", "(".repeat(n), ")".repeat(n)),
            1 => format!("{}a > 1", "not ".repeat(n)),
            2 => "(".repeat(n),
            // A long `and` chain is a deep (left-leaning) tree, too.
            _ => format!("a > 1{}", " and b < 2".repeat(n)),
        };
        match parse(&src) {
            Ok(e) => {
                prop_assert!(depth(&e) <= MAX_DEPTH);
                // Each repetition is one level, the comparison another.
                prop_assert!(n < MAX_DEPTH, "n = {n}, shape {shape} accepted");
            }
            Err(e) => {
                check_error(&src, &e)?;
                if shape != 2 {
                    prop_assert!(n >= MAX_DEPTH - 1, "n = {n}, shape {shape}: {e}");
                    prop_assert!(e.message.contains("nested too deeply"), "{e}");
                }
            }
        }
    }

    /// Expressions from the grammar print and parse back to themselves.
    #[test]
    fn generated_expressions_round_trip(e in expr()) {
        let src = print(&e);
        prop_assert_eq!(parse(&src), Ok(e), "{}", src);
    }

    /// Evaluation never panics and agrees with the reference semantics,
    /// for any values (NaN, infinities, -0, wrong types, missing ones).
    #[test]
    fn evaluation_agrees_with_the_reference(
        e in expr(),
        values in prop::collection::vec(value(), 1..6),
    ) {
        let names = e.metrics();
        let env = env_for(&names, &values);
        let got = e.eval(&|m: &String| {
            // `Value` borrows: look the metric up in `env`, which outlives
            // the evaluation.
            env.iter()
                .find(|(n, _)| n == m)
                .and_then(|(_, v)| v.as_ref())
                .map(OwnedValue::borrow)
        });
        prop_assert_eq!(got, reference(&e, &|m: &str| lookup(&env, m)));
        // `not` negates; a metric without a value makes its comparison false.
        let not = Expr::Not(Box::new(e.clone()));
        prop_assert_eq!(not.eval(&|m: &String| {
            env.iter().find(|(n, _)| n == m).and_then(|(_, v)| v.as_ref()).map(OwnedValue::borrow)
        }), !got);
    }

    /// Resolving checks names and types: with every metric known and of the
    /// literal's type (and only `==`/`!=` for text and booleans), resolving
    /// succeeds and keeps the tree; with one name unknown, it fails naming it.
    #[test]
    fn resolve_accepts_well_typed_and_names_unknown_metrics(e in expr()) {
        let ty_of = |name: &str, e: &Expr| -> Option<(ValueType, bool)> {
            // The type of the first comparison on `name`, and whether all
            // comparisons on it are well typed for that type.
            let mut ty = None;
            let mut ok = true;
            let mut stack = vec![e];
            while let Some(x) = stack.pop() {
                match x {
                    Expr::Cmp { metric, op, value } if metric == name => {
                        let t = match value {
                            Literal::Num(_) => ValueType::Num,
                            Literal::Str(_) => ValueType::Str,
                            Literal::Bool(_) => ValueType::Bool,
                        };
                        let t0 = *ty.get_or_insert(t);
                        ok &= t0 == t
                            && (t == ValueType::Num || matches!(op, CmpOp::Eq | CmpOp::Ne));
                    }
                    Expr::Cmp { .. } => {}
                    Expr::Not(a) => stack.push(a),
                    Expr::And(a, b) | Expr::Or(a, b) => {
                        stack.push(a);
                        stack.push(b);
                    }
                }
            }
            ty.map(|t| (t, ok))
        };
        let all_ok = e.metrics().iter().all(|m| ty_of(m, &e).is_some_and(|(_, ok)| ok));
        let r = e.clone().resolve(|name| ty_of(name, &e).map(|(t, _)| (name.len(), t)));
        prop_assert_eq!(r.is_ok(), all_ok, "{:?}", r);
        if let Ok(r) = r {
            let lens: Vec<usize> = e.metrics().iter().map(|m| m.len()).collect();
            prop_assert_eq!(r.metrics().into_iter().copied().collect::<Vec<_>>(), lens);
        }
        let first = e.metrics()[0].clone();
        let r = e.clone().resolve(|name| (name != first).then_some(((), ValueType::Num)));
        let err = r.unwrap_err();
        prop_assert!(
            err.contains(&format!("unknown metric '{first}'")) || err.contains("compares"),
            "{}", err
        );
    }
}

/// The cases that used to overflow the stack, at full size.
#[test]
fn one_hundred_thousand_levels() {
    for src in [
        format!("{}a > 1{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("{}a > 1", "not ".repeat(100_000)),
        format!("a > 1{}", " or b < 2".repeat(100_000)),
    ] {
        let e = parse(&src).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{e}");
    }
    // Deep but within the limit: parses, evaluates, resolves, drops.
    let src = format!(
        "{}a > 1{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert!(parse(&src).is_ok());
    let src = format!("a > 1{}", " and a > 0".repeat(MAX_DEPTH - 1));
    let e = parse(&src).unwrap();
    assert_eq!(depth(&e), MAX_DEPTH);
    assert!(e.eval(&|_: &String| Some(Value::Num(2.0))));
}
