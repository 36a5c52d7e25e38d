//! Generated hostile HTTP requests: deep nesting, huge numbers, bad UTF-8,
//! wrong types, truncated bodies, bad query strings, ids and paths. Every
//! request is built from a seeded generator, so a failure names the seed
//! and case that reproduce it.

use hxp_events::cli::loadgen::Rng;

/// One request: method, path with query, content type, body.
#[derive(Debug, Clone)]
pub struct Hostile {
    pub method: &'static str,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[below(rng, xs.len() as u64) as usize]
}

/// A JSON value no sane client sends.
fn nasty_value(rng: &mut Rng) -> String {
    match below(rng, 12) {
        0 => {
            let depth = pick(rng, &[64, 127, 128, 129, 1_000, 5_000, 50_000]);
            format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
        }
        1 => {
            let depth = pick(rng, &[100, 2_000, 20_000]);
            format!("{}0{}", "{\"a\":".repeat(depth), "}".repeat(depth))
        }
        2 => pick(
            rng,
            &[
                "1e999999",
                "-1e400",
                "123456789012345678901234567890",
                "-0",
                "1E-400",
            ],
        )
        .into(),
        3 => pick(
            rng,
            &["NaN", "Infinity", "-Infinity", "0x10", "01", ".5", "+1"],
        )
        .into(),
        4 => format!("\"{}\"", "x".repeat(pick(rng, &[0, 1, 10_000, 300_000]))),
        5 => pick(
            rng,
            &[
                "\"\\ud800\"",
                "\"\\u0000\"",
                "\"\\uZZZZ\"",
                "\"\u{202e}evil\"",
            ],
        )
        .into(),
        6 => pick(rng, &["null", "true", "[]", "{}", "\"\"", "[null]"]).into(),
        7 => {
            let fields: Vec<String> = (0..below(rng, 2_000))
                .map(|i| format!("\"k{i}\": {i}"))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        8 => format!("[{}]", vec!["1"; below(rng, 100_000) as usize].join(",")),
        9 => format!("\"{}\"", "é".repeat(below(rng, 1000) as usize)),
        10 => below(rng, u64::MAX).to_string(),
        _ => format!("{}", (below(rng, 2_000_000) as f64 - 1e6) / 7.0),
    }
}

/// An event-shaped body with one field replaced by something nasty.
fn nasty_event(rng: &mut Rng) -> Vec<u8> {
    let kind = pick(
        rng,
        &[
            "\"llm_request\"",
            "\"user_feedback\"",
            "\"system_metric\"",
            "\"business_event\"",
            "\"error_event\"",
            "\"llm_response\"",
            "5",
            "null",
        ],
    );
    let v = nasty_value(rng);
    let text = match below(rng, 6) {
        0 => format!("{{\"event_type\": {kind}, \"data\": {v}}}"),
        1 => format!("{{\"event_type\": {kind}, \"data\": {{\"model\": {v}, \"latency_ms\": 5}}}}"),
        2 => format!(
            "{{\"event_type\": {kind}, \"data\": {{\"model\": \"m\", \"latency_ms\": {v}}}}}"
        ),
        3 => format!("{{\"event_type\": {kind}, \"event_id\": {v}, \"data\": {{}}}}"),
        4 => format!(
            "{{\"event_type\": {kind}, \"timestamp\": {v}, \"data\": {{\"model\": \"m\"}}}}"
        ),
        _ => v,
    };
    let mut bytes = text.into_bytes();
    match below(rng, 8) {
        0 if !bytes.is_empty() => {
            let cut = below(rng, bytes.len() as u64) as usize;
            bytes.truncate(cut); // truncated
        }
        1 => {
            // Bad UTF-8 somewhere.
            let at = below(rng, bytes.len() as u64 + 1) as usize;
            bytes.splice(
                at..at,
                pick(
                    rng,
                    &[&[0xff_u8][..], &[0xc3, 0x28], &[0xed, 0xa0, 0x80], &[0]],
                )
                .iter()
                .copied(),
            );
        }
        _ => {}
    }
    bytes
}

fn nasty_query_value(rng: &mut Rng) -> String {
    pick(
        rng,
        &[
            "",
            "-1",
            "0",
            "abc",
            "%zz",
            "%FF%FE",
            "%00",
            "1e999",
            "99999999999999999999999",
            "%E2%80%AE",
            "a%20b",
            "%",
            "%%",
            "1;DROP TABLE events",
            "..%2F..%2Fetc",
        ],
    )
    .to_string()
}

fn nasty_query(rng: &mut Rng) -> String {
    let keys = [
        "limit", "since", "offset", "outcome", "action", "window", "wait", "x", "", "%FF",
        "limit[]",
    ];
    let n = below(rng, 4);
    let parts: Vec<String> = (0..n)
        .map(|_| format!("{}={}", pick(rng, &keys), nasty_query_value(rng)))
        .collect();
    let mut q = parts.join(pick(rng, &["&", "&&", ";", "&=&"]));
    if below(rng, 8) == 0 {
        q.push_str("&&&===%");
    }
    q
}

fn nasty_id(rng: &mut Rng) -> String {
    pick(
        rng,
        &[
            "x",
            "%FF",
            "%00",
            "00000000-0000-0000-0000-000000000000",
            "not-a-uuid",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "%2e%2e",
            "a%2Fb",
            "%C0%AE",
            "12345678123456781234567812345678",
            "analytics",
            "..",
        ],
    )
    .to_string()
}

/// The next hostile request.
pub fn request(rng: &mut Rng) -> Hostile {
    let json = Some("application/json");
    let ct = pick(
        rng,
        &[
            json,
            json,
            json,
            Some("application/x-ndjson"),
            Some("text/plain"),
            None,
            Some("application/json; charset=latin1"),
        ],
    );
    match below(rng, 9) {
        0 | 1 => Hostile {
            method: "POST",
            path: "/process".into(),
            content_type: ct,
            body: nasty_event(rng),
        },
        2 | 3 => {
            let lines: Vec<Vec<u8>> = (0..1 + below(rng, 5)).map(|_| nasty_event(rng)).collect();
            let (sep, ct) = if below(rng, 2) == 0 {
                (&b"\n"[..], Some("application/x-ndjson"))
            } else {
                (&b","[..], ct)
            };
            let mut body = lines.join(sep);
            if sep == b"," {
                body.insert(0, b'[');
                body.push(b']');
            }
            let path = format!("/events?{}", nasty_query(rng));
            Hostile {
                method: "POST",
                path,
                content_type: ct,
                body,
            }
        }
        4 => {
            let route = pick(
                rng,
                &[
                    "/automated-responses",
                    "/analytics",
                    "/plugins/analytics/history",
                    "/correlations",
                    "/health",
                    "/openapi.json",
                ],
            );
            Hostile {
                method: "GET",
                path: format!("{route}?{}", nasty_query(rng)),
                content_type: None,
                body: vec![],
            }
        }
        5 => Hostile {
            method: "GET",
            path: format!("/processing/{}", nasty_id(rng)),
            content_type: None,
            body: vec![],
        },
        6 => {
            let path = format!(
                "/plugins/{}/{}",
                nasty_id(rng),
                pick(rng, &["history", "rollback"])
            );
            let method = pick(rng, &["GET", "POST", "DELETE"]);
            Hostile {
                method,
                path,
                content_type: ct,
                body: nasty_event(rng),
            }
        }
        7 => Hostile {
            method: "POST",
            path: "/correlations/test".into(),
            content_type: ct,
            body: nasty_event(rng),
        },
        _ => {
            let path = pick(
                rng,
                &[
                    "/nope",
                    "/process",
                    "/events",
                    "/%FF",
                    "/analytics/recalculate",
                    "/plugins/reload",
                ],
            );
            let method = pick(rng, &["PUT", "PATCH", "DELETE", "GET", "POST"]);
            Hostile {
                method,
                path: path.into(),
                content_type: ct,
                body: nasty_event(rng),
            }
        }
    }
}
