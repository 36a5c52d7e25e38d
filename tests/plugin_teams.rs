//! What a plugin team does, outside this repository: `plugin new` in a
//! temporary directory, `make` (which installs the language's tools),
//! `make test` (`plugin test --expect`), `plugin deploy` to a running
//! service, and the plugin's action request recorded. Then remote
//! deployment itself: checks, errors, audit, persistence, removal.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hxp-events")
}

fn hxp(args: &[&str], dir: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `make TARGET` in a project, with this build's binary as `hxp-events`
/// and Rust dependencies built once for every scaffold test.
fn make(project: &Path, target: &str) -> (String, Duration) {
    let started = Instant::now();
    let out = Command::new("make")
        .arg(target)
        .current_dir(project)
        .env("HXP_EVENTS", bin())
        .env("CARGO_TARGET_DIR", root().join("target/scaffold"))
        .output()
        .unwrap();
    (
        ok(out, &format!("make {target} in {}", project.display())),
        started.elapsed(),
    )
}

/// A project from `plugin new`, in a fresh temporary directory (outside
/// the repository).
fn scaffold(name: &str, stage: &str, lang: &str) -> PathBuf {
    let parent = tempdir();
    let out = hxp(
        &["plugin", "new", name, "--stage", stage, "--lang", lang],
        &parent,
    );
    let text = ok(out, "plugin new");
    assert!(text.contains("make test"), "{text}");
    parent.join(name)
}

/// Lines of code in a file, without blank lines and comments.
fn code_lines(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with('#'))
        .count()
}

async fn running(svc: &Service, name: &str) -> Option<Value> {
    let (_, body) = get(&svc.url("/plugins")).await;
    body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// Wait for an executed `page_oncall` request from `rule`.
async fn wait_for_page(svc: &Service, rule: &str) -> Value {
    let t = Instant::now();
    loop {
        let (_, body) = get(&svc.url("/automated-responses?action=page_oncall")).await;
        let responses = body["responses"].as_array().cloned().unwrap_or_default();
        if let Some(r) = responses
            .iter()
            .find(|r| r["rule"] == rule && r["outcome"] == "executed")
        {
            return r.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no page from {rule}: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scaffold → build → `make test` → deploy → an error burst → the
/// plugin's page is executed. Prints the timings for the closing note.
async fn a_team_ships_a_response_plugin(lang: &str, source: &str) {
    let name = format!("{lang}-pager");
    let started = Instant::now();
    let project = scaffold(&name, "responses", lang);
    let (_, build) = make(&project, "build");
    let (test_out, _) = make(&project, "test");
    assert!(test_out.contains("as expected"), "{test_out}");
    let wasm = project.join(format!("{name}.wasm"));
    let size = std::fs::metadata(&wasm).unwrap().len();
    let dir = plugin_dir();
    let (db_url, _) = sqlite_url();
    let env = [("EVENT_PROCESSING_PLUGIN_DIR", dir.to_str().unwrap())];
    let yaml = "plugin_config:\n  broken:\n    error_rate_threshold: high\n";
    let svc = Service::start_with(&db_url, &env, Some(yaml)).await;
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "plugin",
            "deploy",
            wasm.to_str().unwrap(),
            "--url",
            &svc.base,
        ];
        args.extend_from_slice(extra);
        Command::new(bin())
            .args(args)
            .env("HXP_EVENTS_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    // The plugin's configure refuses a bad section: the deployment is
    // refused with its words, in every language.
    let refused = deploy(&["--config", "plugin_config.broken"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("error_rate_threshold must be a number"),
        "{lang}: {err}"
    );
    let deploy_started = Instant::now();
    let out = deploy(&[]);
    let text = ok(out, "plugin deploy");
    let deploy = deploy_started.elapsed();
    assert!(
        text.contains(&format!("deployed {name} 0.1.0 (responses plugin")),
        "{text}"
    );
    assert!(
        dir.join(format!("{name}.wasm")).exists(),
        "the file is kept"
    );
    let failed = json!({"event_type": "llm_request", "data": {"model": "m", "success": false}});
    for _ in 0..3 {
        assert_eq!(post(&svc.url("/process"), &failed).await.0, 200);
    }
    let page = wait_for_page(&svc, &name).await;
    assert_eq!(page["target"], "team");
    assert_eq!(page["executor"], "log");
    assert!(
        page["parameters"]["errors"].as_u64().unwrap() >= 1,
        "{page:#}"
    );
    println!(
        "{lang}: new → deployed {:.1} s (build {:.1} s, deploy {:.1} s), {size} bytes, {} lines in {source}",
        started.elapsed().as_secs_f64(),
        build.as_secs_f64(),
        deploy.as_secs_f64(),
        code_lines(&project.join(source))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rust_plugin_goes_from_plugin_new_to_an_executed_action() {
    a_team_ships_a_response_plugin("rust", "src/lib.rs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_plugin_goes_from_plugin_new_to_an_executed_action() {
    a_team_ships_a_response_plugin("python", "app.py").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_plugin_goes_from_plugin_new_to_an_executed_action() {
    a_team_ships_a_response_plugin("js", "app.js").await;
}

/// The analytics and correlation scaffolds of `lang` pass their own tests
/// (`make test`: the same expected output for every language).
fn stage_scaffolds_pass_make_test(lang: &str) {
    for stage in ["analytics", "correlation"] {
        let project = scaffold(&format!("{lang}-{stage}"), stage, lang);
        let (out, _) = make(&project, "test");
        assert!(out.contains("as expected"), "{out}");
    }
}

#[test]
fn every_rust_stage_scaffold_passes_make_test() {
    stage_scaffolds_pass_make_test("rust");
}

#[test]
fn every_python_stage_scaffold_passes_make_test() {
    stage_scaffolds_pass_make_test("python");
}

#[test]
fn every_javascript_stage_scaffold_passes_make_test() {
    stage_scaffolds_pass_make_test("js");
}

/// The smallest response plugin of each language (tests/guests/minimal-*;
/// Rust's is minimal-responses) builds with the scaffold's Makefile and asks
/// for its page on an error burst.
#[test]
fn the_minimal_plugin_of_each_language_pages() {
    let rust = root().join("tests/guests/minimal-responses/src/lib.rs");
    let mut counts = vec![(
        "rust",
        std::fs::read_to_string(rust).unwrap().lines().count(),
    )];
    for (lang, source) in [("python", "app.py"), ("js", "app.js")] {
        let project = scaffold(&format!("minimal-{lang}"), "responses", lang);
        let minimal = root().join(format!("tests/guests/minimal-{lang}/{source}"));
        std::fs::copy(&minimal, project.join(source)).unwrap();
        make(&project, "build");
        let wasm = project.join(format!("minimal-{lang}.wasm"));
        let events = root().join("samples/events/error-burst.ndjson");
        let out = hxp(
            &[
                "plugin",
                "test",
                wasm.to_str().unwrap(),
                "--events",
                events.to_str().unwrap(),
            ],
            &project,
        );
        let text = ok(out, "plugin test");
        assert!(text.contains(r#""action":"page_oncall""#), "{lang}: {text}");
        counts.push((
            lang,
            std::fs::read_to_string(minimal).unwrap().lines().count(),
        ));
    }
    println!("minimal response plugin, lines: {counts:?}");
    assert!(counts.iter().all(|(_, n)| *n <= 15), "{counts:?}");
}

/// A changed plugin fails `make test` with the field that changed.
#[test]
fn make_test_fails_with_a_readable_diff_when_behaviour_changes() {
    let project = scaffold("strict-pager", "responses", "rust");
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("\"page_oncall\"", "\"page_someone\"")).unwrap();
    let out = Command::new("make")
        .arg("test")
        .current_dir(&project)
        .env("HXP_EVENTS", bin())
        .env("CARGO_TARGET_DIR", root().join("target/scaffold"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"batch 2.actions[0].action: expected "page_oncall", got "page_someone""#),
        "{err}"
    );
}

async fn put_plugin(
    svc: &Service,
    name: &str,
    query: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let path = format!("/plugins/{name}{query}");
    request_as(reqwest::Method::PUT, svc, &path, token, body).await
}

async fn delete_plugin(svc: &Service, name: &str) -> (u16, Value) {
    let path = format!("/plugins/{name}");
    request_as(reqwest::Method::DELETE, svc, &path, TOKEN, Vec::new()).await
}

async fn history(svc: &Service, name: &str) -> Vec<Value> {
    let (_, body) = get(&svc.url(&format!("/plugins/{name}/history"))).await;
    body["deployments"].as_array().unwrap().clone()
}

/// PUT /plugins/{name}: refused uploads change nothing and say why; an
/// accepted one runs at once, is audited (token name, client address),
/// survives a restart; DELETE unloads it and removes its file.
#[tokio::test(flavor = "multi_thread")]
async fn remote_deploy_checks_audits_persists_and_removes() {
    let dir = plugin_dir();
    let named = [("ci", "ci-token-0123456789abcdef")];
    let yaml = "service:\n  admin_tokens:\n    ci: ci-token-0123456789abcdef\nplugins:\n  max_upload_bytes: 2000000\n";
    let (db_url, _) = sqlite_url();
    let env = [("EVENT_PROCESSING_PLUGIN_DIR", dir.to_str().unwrap())];
    let mut svc = Service::start_with(&db_url, &env, Some(yaml)).await;
    let pager = wasm_bytes("minimal_responses_guest");
    // Refused: no token, not a component, the wrong stage, too large.
    assert_eq!(
        put_plugin(&svc, "pager", "", "wrong", pager.clone())
            .await
            .0,
        401
    );
    let (status, body) = put_plugin(&svc, "pager", "", TOKEN, b"not wasm".to_vec()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("plugin_rejected")),
        "{body:#}"
    );
    let (status, body) = put_plugin(&svc, "pager", "?stage=analytics", TOKEN, pager.clone()).await;
    assert_eq!(status, 422, "{body:#}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("is a responses plugin"),
        "{body:#}"
    );
    let (status, body) = put_plugin(&svc, "pager", "", TOKEN, vec![0; 2_000_001]).await;
    assert_eq!(status, 413, "{body:#}");
    let (status, body) = put_plugin(&svc, "pager", "?colour=red", TOKEN, pager.clone()).await;
    assert_eq!(status, 400, "{body:#}");
    assert!(running(&svc, "pager").await.is_none());
    assert!(!dir.join("pager.wasm").exists());
    let listed = get(&svc.url("/plugins")).await.1;
    assert_eq!(
        listed["rejected"],
        json!([]),
        "uploads are not files: {listed:#}"
    );
    // Accepted, with a manifest key, under a named token.
    let (status, body) = put_plugin(
        &svc,
        "pager",
        "?order=5&deadline_ms=250",
        named[0].1,
        pager.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["deployment"]["result"], "accepted");
    assert_eq!(
        running(&svc, "pager").await.unwrap()["order"],
        5,
        "runs at once"
    );
    assert_eq!(std::fs::read(dir.join("pager.wasm")).unwrap(), pager);
    let manifest = std::fs::read_to_string(dir.join("pager.yaml")).unwrap();
    assert!(
        manifest.contains("order: 5") && manifest.contains("deadline_ms: 250"),
        "{manifest}"
    );
    let h = history(&svc, "pager").await;
    assert_eq!(h[0]["trigger"], "api");
    let actor = h[0]["actor"].as_str().unwrap();
    assert!(actor.starts_with("token ci from 127.0.0.1:"), "{actor}");
    assert!(h.iter().skip(1).all(|d| d["result"] == "rejected"), "{h:?}");
    // The watcher sees the files appear and leaves them alone.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        history(&svc, "pager").await.len(),
        h.len(),
        "no second deployment"
    );
    // A restart runs it again from the directory.
    svc.terminate();
    let svc = Service::start_with(&db_url, &env, Some(yaml)).await;
    let p = running(&svc, "pager")
        .await
        .expect("pager runs after a restart");
    assert_eq!(p["sha256"], sha256_hex(&pager));
    // DELETE: unloaded, its files gone; the only analytics plugin stays.
    let (status, body) = delete_plugin(&svc, "pager").await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["deployment"]["result"], "unloaded");
    assert!(running(&svc, "pager").await.is_none());
    assert!(!dir.join("pager.wasm").exists() && !dir.join("pager.yaml").exists());
    let (status, body) = delete_plugin(&svc, "analytics").await;
    assert_eq!(status, 422, "{body:#}");
    assert!(running(&svc, "analytics").await.is_some());
    assert_eq!(delete_plugin(&svc, "pager").await.0, 404);
}

/// A trapping plugin with no earlier version is unloaded by quarantine;
/// its file stays, refused until it changes, and events flow on.
#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_plugin_without_an_earlier_version_is_unloaded() {
    let dir = plugin_dir();
    let yaml = "plugin_config:\n  hostile:\n    mode: ok\nplugins:\n  quarantine:\n    failures: 5\n    window_secs: 60\n";
    let (db_url, _) = sqlite_url();
    let env = [("EVENT_PROCESSING_PLUGIN_DIR", dir.to_str().unwrap())];
    let svc = Service::start_with(&db_url, &env, Some(yaml)).await;
    let bad = std::fs::read(root().join("target/test-plugins/hostile-panic.wasm")).unwrap();
    let (status, body) =
        put_plugin(&svc, "loner", "?config=plugin_config.hostile", TOKEN, bad).await;
    assert_eq!(status, 200, "{body:#}");
    for i in 0..10 {
        let ev = json!({"event_type": "llm_request", "data": {"model": "m", "latency_ms": i}});
        assert_eq!(post(&svc.url("/process"), &ev).await.0, 200);
    }
    let t = Instant::now();
    while running(&svc, "loner").await.is_some() {
        assert!(t.elapsed() < Duration::from_secs(10), "loner still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        svc.metric("plugin_failures_total", &["loner", "trap"])
            .await,
        5.0
    );
    let h = history(&svc, "loner").await;
    assert_eq!(
        (h[0]["result"].as_str(), h[0]["trigger"].as_str()),
        (Some("unloaded"), Some("quarantine"))
    );
    assert!(
        h[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no earlier version"),
        "{h:?}"
    );
    let listed = get(&svc.url("/plugins")).await.1;
    assert_eq!(listed["rejected"][0]["plugin"], "loner", "{listed:#}");
    assert!(dir.join("loner.wasm").exists());
    assert_eq!(db_rows(&db_url, "SELECT seq FROM events").await.len(), 10);
    // A restart does not load it again while its file is unchanged.
    let mut svc = svc;
    svc.terminate();
    let svc = Service::start_with(&db_url, &env, Some(yaml)).await;
    assert!(running(&svc, "loner").await.is_none());
    let h = history(&svc, "loner").await;
    let reason = h[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("quarantined before this start"),
        "{reason}"
    );
}

/// Auto-quarantine: version 0.0.2 of a rule module (the hostile guest
/// built to panic on every batch), deployed over the API over 0.0.1, is
/// taken out after its 50th trap; 0.0.1 runs again from the next batch;
/// no event is lost and the history says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_keeps_trapping_is_quarantined_and_rolled_back() {
    let dir = plugin_dir();
    let yaml = "plugin_config:\n  hostile:\n    mode: ok\nplugins:\n  quarantine:\n    failures: 50\n    window_secs: 60\n";
    let (db_url, _) = sqlite_url();
    let env = [("EVENT_PROCESSING_PLUGIN_DIR", dir.to_str().unwrap())];
    let svc = Service::start_with(&db_url, &env, Some(yaml)).await;
    let good = wasm_bytes("hostile_guest");
    let bad = std::fs::read(root().join("target/test-plugins/hostile-panic.wasm")).unwrap();
    for bytes in [&good, &bad] {
        let (status, body) = put_plugin(
            &svc,
            "rules",
            "?config=plugin_config.hostile",
            TOKEN,
            bytes.clone(),
        )
        .await;
        assert_eq!(status, 200, "{body:#}");
    }
    assert_eq!(running(&svc, "rules").await.unwrap()["version"], "0.0.2");
    // One event per batch, a little apart (a live stream).
    let mut ids = Vec::new();
    for i in 0..80 {
        let ev = json!({"event_type": "llm_request", "data": {"model": "m", "latency_ms": i}});
        let (status, body) = post(&svc.url("/process"), &ev).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["processing_id"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(
        svc.metric("plugin_failures_total", &["rules", "trap"])
            .await,
        50.0
    );
    let p = running(&svc, "rules").await.unwrap();
    assert_eq!(
        (p["version"].as_str(), p["quarantined"].as_bool()),
        (Some("0.0.1"), Some(false))
    );
    // Which events the rule module saw: 0.0.1 reports a finding per batch.
    let mut unseen = 0;
    for id in &ids[50..] {
        let (status, rec) = get(&svc.url(&format!("/processing/{id}"))).await;
        assert_eq!(status, 200, "every event is stored: {rec}");
        let names = rec["correlation_results"]["patterns_detected"].to_string();
        unseen += usize::from(!names.contains("call-"));
    }
    println!("quarantine: {unseen} batch(es) between the 50th trap and 0.0.1 live again");
    assert!(unseen <= 1, "{unseen} batches ran without the rule module");
    let stored = db_rows(&db_url, "SELECT seq FROM events").await.len();
    assert_eq!(stored, 80);
    let h = history(&svc, "rules").await;
    let kinds: Vec<(&str, &str)> = h
        .iter()
        .take(4)
        .map(|d| {
            (
                d["result"].as_str().unwrap(),
                d["trigger"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("rolled_back", "quarantine"),
            ("quarantined", "quarantine"),
            ("accepted", "api"),
            ("accepted", "api")
        ]
    );
    let reason = h[1]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("50 failures within 60 s") && reason.contains("panic in every process"),
        "{reason}"
    );
    let listed = get(&svc.url("/plugins")).await.1;
    assert_eq!(listed["quarantined"][0]["plugin"], "rules", "{listed:#}");
    assert_eq!(
        svc.metric("plugin_deployments_total", &["rules", "quarantined"])
            .await,
        1.0
    );
    assert_eq!(
        std::fs::read(dir.join("rules.wasm")).unwrap(),
        good,
        "the directory holds 0.0.1 again"
    );
}
