//! `hxp-events plugin inspect` and `plugin test`, run as a plugin author
//! would: the real binary on real components and the shipped sample events.

mod common;

use common::{root, tempdir, wasm};
use serde_json::Value;
use std::process::{Command, Output};

fn hxp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hxp-events"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn inspect_shows_world_version_and_metadata() {
    // State versions: analytics and correlation keep events ahead of the
    // watermark since version 2; correlation keeps keyed rules and flap
    // tracks since version 3.
    for (file, world, name, state_version) in [
        ("hxp_analytics", "analytics-plugin", "analytics", 2),
        ("hxp_correlation", "correlation-plugin", "correlation", 3),
        ("hxp_responses", "responses-plugin", "responses", 1),
    ] {
        let out = hxp(&["plugin", "inspect", "--json", wasm(file).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["world"], format!("hxp:events/{world}@0.1.0"));
        assert_eq!(v["wit_version"], "0.1.0");
        assert_eq!(v["metadata"]["name"], name);
        assert_eq!(v["metadata"]["state_version"], state_version);
        // Only WASI (linked without capabilities) and our own interfaces.
        for i in v["imports"].as_array().unwrap() {
            let i = i.as_str().unwrap();
            assert!(
                i.starts_with("wasi:") || i.starts_with("hxp:events/"),
                "{file} imports {i}"
            );
        }
    }
    let text = hxp(&["plugin", "inspect", wasm("hxp_analytics").to_str().unwrap()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("world:       hxp:events/analytics-plugin@0.1.0"),
        "{text}"
    );
}

#[test]
fn broken_files_exit_non_zero_with_the_reason() {
    let dir = tempdir();
    std::fs::write(dir.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.join("notes.wasm"), b"# not wasm").unwrap();
    let cases = [
        (
            wasm("future_wit_guest"),
            "built for hxp:events@0.2.0, this host implements hxp:events@0.1.0",
        ),
        (wasm("not-a-plugin"), "wrong world"),
        (
            dir.join("core.wasm"),
            "is a core WebAssembly module, not a component",
        ),
        (dir.join("notes.wasm"), "not a WebAssembly file"),
        (dir.join("missing.wasm"), "cannot read"),
    ];
    for (path, want) in cases {
        for cmd in [
            vec!["plugin", "inspect", path.to_str().unwrap()],
            vec![
                "plugin",
                "test",
                path.to_str().unwrap(),
                "--events",
                "samples/events/mixed.ndjson",
            ],
        ] {
            let out = hxp(&cmd);
            assert!(!out.status.success(), "{cmd:?} succeeded");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(want), "{cmd:?}: {err}");
        }
    }
}

#[test]
fn test_analytics_on_recorded_requests() {
    let out = hxp(&[
        "plugin",
        "test",
        wasm("hxp_analytics").to_str().unwrap(),
        "--events",
        "samples/events/llm-requests.ndjson",
    ]);
    let lines = lines(&out);
    // All ten events fall in one second of event time: one batch.
    assert_eq!(lines.len(), 1);
    let o = &lines[0]["snapshot"]["overall"];
    assert_eq!(o["count"], 10);
    assert_eq!(o["latency_avg"], 550.0);
    assert_eq!(o["latency_p50"], 550.0);
    assert_eq!(o["error_rate"], 0.2);
    // cost: 0.001 + ... + 0.010 = 0.055 over 10 requests
    assert!((o["cost_per_request"].as_f64().unwrap() - 0.0055).abs() < 1e-12);
    assert_eq!(lines[0]["time"], "2026-01-01T00:00:00.500Z");
}

#[test]
fn test_correlation_follows_event_time() {
    let out = hxp(&[
        "plugin",
        "test",
        wasm("hxp_correlation").to_str().unwrap(),
        "--events",
        "samples/events/error-burst.ndjson",
        "--batch-size",
        "1",
    ]);
    let lines = lines(&out);
    assert_eq!(lines.len(), 6);
    let alerting: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["name"] == "high_error_rate" && f["alert"] == true)
        })
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(alerting, vec![5]);
}

#[test]
fn test_responses_with_a_config_file() {
    let dir = tempdir();
    let cfg = dir.join("cfg.yaml");
    std::fs::write(
        &cfg,
        "automated_response:\n  response_rules:\n    - name: scale_up_models\n      condition: throughput > 500\n      action: scale_models\n      target: mixtral-8x7b\n",
    )
    .unwrap();
    let out = hxp(&[
        "plugin",
        "test",
        wasm("hxp_responses").to_str().unwrap(),
        "--events",
        "samples/events/throughput-spike.ndjson",
        "--batch-size",
        "1000",
        "--config",
        cfg.to_str().unwrap(),
        "--analytics",
        wasm("hxp_analytics").to_str().unwrap(),
        "--correlation",
        wasm("hxp_correlation").to_str().unwrap(),
    ]);
    let lines = lines(&out);
    let actions: Vec<&Value> = lines
        .iter()
        .flat_map(|l| l["actions"].as_array().unwrap())
        .collect();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["action"], "scale_models");
    assert_eq!(actions[0]["target"], "mixtral-8x7b");
    // The first batch of 1000 already passes 500/s.
    assert_eq!(lines[0]["actions"].as_array().unwrap().len(), 1);
}

#[test]
fn invalid_events_are_reported_with_their_line() {
    let dir = tempdir();
    let file = dir.join("bad.ndjson");
    std::fs::write(
        &file,
        "{\"event_type\":\"llm_request\",\"data\":{\"model\":\"m\"}}\n{\"event_type\":\"llm_request\",\"data\":{\"latency_ms\":5}}\n",
    )
    .unwrap();
    let out = hxp(&[
        "plugin",
        "test",
        wasm("hxp_analytics").to_str().unwrap(),
        "--events",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.ndjson:2") && err.contains("\"model\" is a required property"),
        "{err}"
    );
}

/// `plugin wit` gives plugin teams the contract without this repository:
/// on standard output, or as DIR/events.wit for wit-bindgen,
/// componentize-py or jco; it is the published `wit/events.wit`.
#[test]
fn wit_is_written_for_other_tools() {
    let published = std::fs::read_to_string(root().join("wit/events.wit")).unwrap();
    let out = hxp(&["plugin", "wit"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), published);
    let dir = tempdir().join("nested/wit");
    let out = hxp(&["plugin", "wit", "--out", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("events.wit")).unwrap(),
        published
    );
    // A path that cannot be a folder gets a clear error.
    let file = tempdir().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let out = hxp(&["plugin", "wit", "--out", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("creating") && err.contains("a-file"), "{err}");
}
