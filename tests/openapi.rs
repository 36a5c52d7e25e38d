//! GET /openapi.json describes the API: the document is OpenAPI 3.1, lists
//! every JSON route, and every answer of every documented operation (the
//! successes and the error answers we can provoke) validates against the
//! schema the document declares for its path, method and status.

mod common;

use common::{Service, TOKEN, sqlite_url};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Every route the router serves, except the dashboard assets and
/// /metrics (text): (method, path template).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/openapi.json"),
    ("get", "/health"),
    ("get", "/config"),
    ("post", "/process"),
    ("post", "/events"),
    ("get", "/analytics"),
    ("get", "/analytics/status"),
    ("post", "/analytics/recalculate"),
    ("get", "/correlations"),
    ("get", "/correlations/config"),
    ("post", "/correlations/test"),
    ("get", "/correlations/stats"),
    ("get", "/automated-responses"),
    ("get", "/processing/pipeline"),
    ("get", "/processing/{processing_id}"),
    ("get", "/plugins"),
    ("post", "/plugins/reload"),
    ("get", "/plugins/{name}/history"),
    ("post", "/plugins/{name}/rollback"),
    ("put", "/plugins/{name}"),
    ("delete", "/plugins/{name}"),
    ("post", "/plugins/backtest"),
    ("post", "/silences"),
    ("get", "/silences"),
    ("get", "/silences/{id}"),
    ("delete", "/silences/{id}"),
];

/// Validates answers against the document, and remembers what it checked.
struct Checker {
    doc: Value,
    base: String,
    client: reqwest::Client,
    /// (method, path template, status) answered and validated.
    seen: BTreeSet<(String, String, u16)>,
}

impl Checker {
    /// The JSON schema of an answer, with the document's components (so
    /// `#/components/schemas/X` resolves).
    fn validator(&self, method: &str, template: &str, status: u16) -> jsonschema::Validator {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template}: the document declares no JSON answer for {status}: {}",
            op["responses"]
        );
        schema_validator(&self.doc, schema)
    }

    /// Call `method path` (an instance of `template`), expect `status`, and
    /// validate the JSON answer against the document. Returns the answer.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        req: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
        status: u16,
    ) -> Value {
        let url = format!("{}{path}", self.base);
        let builder = match method {
            "get" => self.client.get(&url),
            "post" => self.client.post(&url),
            "put" => self.client.put(&url),
            "delete" => self.client.delete(&url),
            other => panic!("method {other}"),
        };
        let resp = req(builder).send().await.unwrap();
        let got = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        assert!(
            ct.starts_with("application/json"),
            "{method} {path}: content-type {ct}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        let v = self.validator(method, template, status);
        let errors: Vec<String> = v
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} -> {status} does not match the document:\n{}\nanswer: {body:#}",
            errors.join("\n")
        );
        self.seen
            .insert((method.to_string(), template.to_string(), status));
        body
    }

    async fn get(&mut self, template: &str, path: &str, status: u16) -> Value {
        self.call("get", template, path, |r| r, status).await
    }

    async fn post_json(&mut self, template: &str, path: &str, body: &Value, status: u16) -> Value {
        let body = body.clone();
        self.call("post", template, path, |r| r.json(&body), status)
            .await
    }

    async fn post_admin(&mut self, template: &str, path: &str, status: u16) -> Value {
        self.call("post", template, path, |r| r.bearer_auth(TOKEN), status)
            .await
    }
}

/// A validator for `schema` (usually a `$ref`) resolved against `doc`.
fn schema_validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

/// Error events for one service: an error burst (correlation alert,
/// high error rate, automated responses).
fn error_burst(n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| json!({"event_type": "error_event", "data": {"service": "api", "error_type": "timeout", "severity": "error"}}))
        .collect()
}

fn mixed_events() -> Vec<Value> {
    vec![
        json!({"event_type": "llm_request", "data": {"model": "mixtral-8x7b", "service": "gw", "latency_ms": 100, "success": true, "cost_usd": 0.002}}),
        json!({"event_type": "llm_request", "data": {"model": "llama-3-8b", "latency_ms": 300, "success": false, "error": "timeout", "cost_usd": 0.001}}),
        json!({"event_type": "user_feedback", "data": {"satisfaction": 8.0, "user_id": "u1"}}),
        json!({"event_type": "system_metric", "data": {"service": "vllm-llama", "health": "failed"}}),
        json!({"event_type": "business_event", "data": {"name": "renewal", "value": 250.5, "currency": "USD"}}),
    ]
}

#[tokio::test]
async fn the_document_describes_every_answer() {
    let (db_url, _dir) = sqlite_url();
    // The shipped plugins in a directory of its own (a second analytics
    // version is deployed and rolled back).
    let plugins = common::plugin_dir();
    let svc = Service::start(
        &db_url,
        &[
            ("EVENT_PROCESSING_PLUGIN_DIR", plugins.to_str().unwrap()),
            ("EVENT_PROCESSING_PLUGIN_WATCH", "false"),
        ],
    )
    .await;

    let (status, doc) = common::get(&svc.url("/openapi.json")).await;
    assert_eq!(status, 200);
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert_eq!(doc["info"]["title"], "hxp-events");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    for (method, path) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is served but not in the document"
        );
    }
    let mut c = Checker {
        doc: doc.clone(),
        base: svc.base.clone(),
        client: reqwest::Client::new(),
        seen: BTreeSet::new(),
    };

    negative_checks(&c).await;
    let processing_id = ingest(&mut c).await;
    wait_for_responses(&svc).await;
    reads(&mut c, &processing_id).await;
    correlations(&mut c).await;
    silences(&mut c).await;
    plugins_and_admin(&mut c, &plugins).await;

    // GET /metrics is text, as documented.
    let m = reqwest::get(svc.url("/metrics")).await.unwrap();
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_object()
    );

    // Every documented JSON operation was called and its success validated
    // (201 for what it creates).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if path == "/metrics" {
                continue;
            }
            let seen = |status| c.seen.contains(&(method.clone(), path.clone(), status));
            assert!(
                seen(200) || seen(201),
                "{method} {path} was not exercised; seen: {:?}",
                c.seen
            );
        }
    }
}

/// The validators really refuse wrong answers.
async fn negative_checks(c: &Checker) {
    let (_, health) = common::get(&format!("{}/health", c.base)).await;
    let v = c.validator("get", "/health", 200);
    assert!(v.is_valid(&health), "{health}");
    let mut missing = health.clone();
    missing.as_object_mut().unwrap().remove("uptime_seconds");
    assert!(!v.is_valid(&missing), "a missing field must fail");
    let mut wrong = health.clone();
    wrong["checks"]["database"] = json!(42);
    assert!(
        !v.is_valid(&wrong),
        "a wrongly typed nested field must fail"
    );
    let mut bad_status = health.clone();
    bad_status["status"] = json!("fine");
    assert!(!v.is_valid(&bad_status), "an unknown status must fail");

    let e = c.validator("get", "/processing/{processing_id}", 404);
    assert!(e.is_valid(&json!({"status": "error", "error": "not_found", "message": "m"})));
    assert!(!e.is_valid(&json!({"status": "error", "error": "not_found"})));
    assert!(!e.is_valid(&json!({"status": "ok", "error": "not_found", "message": "m"})));
}

/// POST /process and POST /events, with their error answers; returns a
/// processing id.
async fn ingest(c: &mut Checker) -> String {
    let mut id = String::new();
    for e in mixed_events() {
        let r = c.post_json("/process", "/process", &e, 200).await;
        id = r["processing_id"].as_str().unwrap().to_string();
    }
    let invalid = json!({"event_type": "llm_request", "data": {"latency_ms": "slow"}});
    c.post_json("/process", "/process", &invalid, 422).await;
    let nonsense = json!({"event_type": "no_such_type", "data": {}});
    c.post_json("/process", "/process", &nonsense, 422).await;
    c.call(
        "post",
        "/process",
        "/process",
        |r| {
            r.header("content-type", "application/json")
                .body("{not json")
        },
        400,
    )
    .await;
    c.call(
        "post",
        "/process",
        "/process",
        |r| r.header("content-type", "text/plain").body("{}"),
        415,
    )
    .await;

    let burst = Value::Array(error_burst(12));
    let r = c.post_json("/events", "/events", &burst, 200).await;
    assert_eq!(r["accepted"], 12);
    assert!(r.get("receipts").is_none());
    let mut partial = error_burst(3);
    partial.push(invalid.clone());
    let r = c
        .post_json(
            "/events",
            "/events?receipts=true",
            &Value::Array(partial),
            200,
        )
        .await;
    assert_eq!(r["status"], "partial");
    assert_eq!(r["receipts"].as_array().unwrap().len(), 3);
    let ndjson: String = error_burst(2).iter().map(|e| format!("{e}\n")).collect();
    c.call(
        "post",
        "/events",
        "/events",
        |r| {
            r.header("content-type", "application/x-ndjson")
                .body(ndjson)
        },
        200,
    )
    .await;
    let r = c
        .post_json("/events", "/events", &json!([invalid, invalid]), 422)
        .await;
    assert_eq!(r["error"], "no_valid_events");
    c.call(
        "post",
        "/events",
        "/events",
        |r| r.header("content-type", "text/csv").body("a,b"),
        415,
    )
    .await;
    id
}

async fn wait_for_responses(svc: &Service) {
    let t = Instant::now();
    loop {
        let (_, r) = common::get(&svc.url("/automated-responses")).await;
        if r["total"].as_i64().unwrap_or(0) > 0 {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no responses: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The read endpoints, with their error answers.
async fn reads(c: &mut Checker, processing_id: &str) {
    c.get("/health", "/health", 200).await;
    c.get("/config", "/config", 200).await;
    c.get("/openapi.json", "/openapi.json", 200).await;
    let a = c.get("/analytics", "/analytics?history=600", 200).await;
    assert!(a["by_event_type"].is_object(), "{a}");
    c.get("/analytics", "/analytics", 200).await;
    c.get("/analytics/status", "/analytics/status", 200).await;
    let r = c
        .get("/automated-responses", "/automated-responses", 200)
        .await;
    assert!(!r["responses"].as_array().unwrap().is_empty());
    c.get(
        "/automated-responses",
        "/automated-responses?since=600&limit=5",
        200,
    )
    .await;
    c.get("/automated-responses", "/automated-responses?limit=0", 400)
        .await;
    c.get(
        "/automated-responses",
        "/automated-responses?since=soon",
        400,
    )
    .await;
    c.get(
        "/automated-responses",
        "/automated-responses?colour=red",
        400,
    )
    .await;
    c.get("/processing/pipeline", "/processing/pipeline", 200)
        .await;
    let t = "/processing/{processing_id}";
    let rec = c.get(t, &format!("/processing/{processing_id}"), 200).await;
    assert_eq!(rec["processing_id"], processing_id);
    c.get(t, "/processing/00000000-0000-8000-8000-000000000001", 404)
        .await;
    c.get(t, "/processing/not-a-uuid", 400).await;
}

async fn correlations(c: &mut Checker) {
    let r = c.get("/correlations", "/correlations", 200).await;
    assert_eq!(r["alert_triggered"], true, "{r}");
    assert!(!r["active_findings"].as_array().unwrap().is_empty(), "{r}");
    assert!(!r["recent_alerts"].as_array().unwrap().is_empty(), "{r}");
    c.get("/correlations/config", "/correlations/config", 200)
        .await;
    let s = c
        .get("/correlations/stats", "/correlations/stats", 200)
        .await;
    assert!(s["alerts_total"].as_i64().unwrap() >= 1, "{s}");
    let t = "/correlations/test";
    let r = c
        .post_json(
            t,
            t,
            &json!({"events": [{"type": "error", "count": 10}]}),
            200,
        )
        .await;
    assert_eq!(r["events"], 10);
    assert!(!r["findings"].as_array().unwrap().is_empty(), "{r}");
    c.post_json(t, t, &json!({"events": [{"type": "nope"}]}), 422)
        .await;
    c.post_json(t, t, &json!({"evnts": []}), 422).await;
    c.call(
        "post",
        t,
        t,
        |r| {
            r.header("content-type", "application/json")
                .body("{\"events\": [")
        },
        400,
    )
    .await;
}

/// Silences: made (and refused), listed, read, deleted.
async fn silences(c: &mut Checker) {
    let (all, one) = ("/silences", "/silences/{id}");
    let admin = |body: Value| move |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN).json(&body);
    let silence = json!({
        "matchers": [{"name": "rule", "op": "=~", "value": "high_.*"}],
        "duration": "1h",
        "creator": "openapi test",
        "comment": "documented",
    });
    c.call("post", all, all, |r| r.json(&json!({})), 401).await;
    let made = c.call("post", all, all, admin(silence.clone()), 201).await;
    assert_eq!(made["state"], "active", "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    let mut bad = silence.clone();
    bad["matchers"][0]["value"] = json!("high_(");
    let e = c.call("post", all, all, admin(bad), 422).await;
    assert_eq!(e["field"], "/matchers/0/value", "{e}");
    let malformed = |r: reqwest::RequestBuilder| {
        (r.bearer_auth(TOKEN)
            .header("content-type", "application/json"))
        .body("{\"matchers\": [")
    };
    c.call("post", all, all, malformed, 400).await;
    let text = |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN).body("x");
    c.call("post", all, all, text, 415).await;
    let listed = c.get(all, all, 200).await;
    assert_eq!(listed["silences"][0]["id"], id.as_str(), "{listed}");
    c.get(all, "/silences?state=all", 200).await;
    c.get(all, "/silences?state=old", 400).await;
    let path = format!("/silences/{id}");
    c.get(one, &path, 200).await;
    c.get(one, "/silences/nothing", 404).await;
    let delete = |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN);
    c.call("delete", one, &path, |r| r, 401).await;
    let gone = c.call("delete", one, &path, delete, 200).await;
    assert_eq!(gone["state"], "deleted", "{gone}");
    c.call("delete", one, "/silences/nothing", delete, 404)
        .await;
}

/// Plugins, and the admin endpoints with and without the token.
async fn plugins_and_admin(c: &mut Checker, dir: &std::path::Path) {
    let p = c.get("/plugins", "/plugins", 200).await;
    assert_eq!(p["plugins"].as_array().unwrap().len(), 3, "{p}");
    let h = "/plugins/{name}/history";
    let r = c.get(h, "/plugins/analytics/history", 200).await;
    assert!(!r["deployments"].as_array().unwrap().is_empty(), "{r}");
    c.get(h, "/plugins/analytics/history?limit=0", 400).await;

    let rc = "/analytics/recalculate";
    c.call("post", rc, rc, |r| r, 401).await;
    c.post_admin(rc, rc, 200).await;

    let rb = "/plugins/{name}/rollback";
    c.call("post", rb, "/plugins/analytics/rollback", |r| r, 401)
        .await;
    c.post_admin(rb, "/plugins/nothing/rollback", 404).await;
    c.post_admin(rb, "/plugins/analytics/rollback", 409).await;

    // A second analytics version, deployed by a reload, then rolled back.
    let reload = "/plugins/reload";
    c.call("post", reload, reload, |r| r, 401).await;
    std::fs::copy(
        common::root().join("target/test-plugins/analytics-b.wasm"),
        dir.join("analytics.wasm"),
    )
    .unwrap();
    let r = c.post_admin(reload, reload, 200).await;
    assert!(
        r["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["result"] == "accepted"),
        "{r}"
    );
    let r = c.post_admin(rb, "/plugins/analytics/rollback", 200).await;
    assert_eq!(r["rolled_back"], true);
    c.get(h, "/plugins/analytics/history", 200).await;
    c.get("/plugins", "/plugins", 200).await;
    deploy_and_remove(c).await;
}

/// PUT and DELETE /plugins/{name}: refused and accepted uploads, removal.
async fn deploy_and_remove(c: &mut Checker) {
    let one = "/plugins/{name}";
    let pager = common::wasm_bytes("minimal_responses_guest");
    let upload =
        |bytes: Vec<u8>| move |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN).body(bytes);
    c.call("put", one, "/plugins/pager", |r| r.body(pager.clone()), 401)
        .await;
    c.call("put", one, "/plugins/pager", upload(Vec::new()), 400)
        .await;
    c.call(
        "put",
        one,
        "/plugins/pager?order=x",
        upload(pager.clone()),
        400,
    )
    .await;
    c.call("put", one, "/plugins/pager", upload(b"nope".to_vec()), 422)
        .await;
    c.call(
        "put",
        one,
        "/plugins/correlation",
        upload(pager.clone()),
        422,
    )
    .await;
    let r = c
        .call("put", one, "/plugins/pager", upload(pager.clone()), 200)
        .await;
    assert_eq!(r["deployment"]["result"], "accepted");
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN);
    c.call("delete", one, "/plugins/pager", |r| r, 401).await;
    let r = c.call("delete", one, "/plugins/pager", admin, 200).await;
    assert_eq!(r["deployment"]["result"], "unloaded");
    c.call("delete", one, "/plugins/pager", admin, 404).await;
    c.call("delete", one, "/plugins/analytics", admin, 422)
        .await;
    shadows(c).await;
}

/// A shadow: started, reported, dropped; started again and promoted.
async fn shadows(c: &mut Checker) {
    let wasm = std::fs::read(common::root().join("target/plugins/correlation.wasm")).unwrap();
    let (one, report) = ("/plugins/{name}", "/plugins/{name}/shadow");
    let promote = "/plugins/{name}/promote";
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN);
    c.get(report, "/plugins/correlation/shadow", 404).await;
    c.call("post", promote, "/plugins/correlation/promote", admin, 404)
        .await;
    c.call("delete", report, "/plugins/correlation/shadow", admin, 404)
        .await;
    for end in ["drop", "promote"] {
        let bytes = wasm.clone();
        let put = move |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN).body(bytes);
        let r = c
            .call("put", one, "/plugins/correlation?mode=shadow", put, 200)
            .await;
        assert_eq!(r["deployment"]["result"], "shadow");
        c.get(report, "/plugins/correlation/shadow", 200).await;
        let (method, template, path) = match end {
            "drop" => ("delete", report, "/plugins/correlation/shadow"),
            _ => ("post", promote, "/plugins/correlation/promote"),
        };
        c.call(method, template, path, |r| r, 401).await;
        c.call(method, template, path, admin, 200).await;
    }
    backtests(c, wasm).await;
}

/// POST /plugins/backtest: refusals as JSON errors; a backtest as NDJSON
/// lines, each one valid against the documented line schema.
async fn backtests(c: &mut Checker, wasm: Vec<u8>) {
    let bt = "/plugins/backtest";
    let path = format!(
        "{bt}?from=0&to={}",
        chrono::Utc::now().timestamp_millis() + 60_000
    );
    let upload =
        |bytes: Vec<u8>| move |r: reqwest::RequestBuilder| r.bearer_auth(TOKEN).body(bytes);
    c.call("post", bt, &path, |r| r.body(vec![1]), 401).await;
    c.call("post", bt, &path, upload(Vec::new()), 400).await;
    c.call(
        "post",
        bt,
        &format!("{bt}?from=5&to=1"),
        upload(wasm.clone()),
        400,
    )
    .await;
    // An analytics plugin standing in for the correlation plugin.
    let analytics = std::fs::read(common::root().join("target/plugins/analytics.wasm")).unwrap();
    let other_stage = format!("{path}&plugin=correlation");
    c.call("post", bt, &other_stage, upload(analytics), 422)
        .await;
    let resp = c
        .client
        .post(format!("{}{path}", c.base))
        .bearer_auth(TOKEN)
        .body(wasm)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let op = &c.doc["paths"][bt]["post"]["responses"]["200"];
    let v = schema_validator(&c.doc, &op["content"]["application/x-ndjson"]["schema"]);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for line in &lines {
        assert!(v.is_valid(line), "{line} does not match the document");
    }
    let last = lines.last().unwrap();
    assert!(last["report"]["events"].as_u64().unwrap() > 0, "{last}");
    c.seen.insert(("post".into(), bt.into(), 200));
}
