//! A correlation plugin whose misbehaviour is chosen by its config:
//! `{"mode": "loop" | "memory" | "panic" | "huge" | "ok"}` (at `process`), or
//! `{"mode": "panic-in-configure"}`, `{"mode": "panic-in-load-state"}`.
//! In mode `ok` it behaves: one finding per call, counting its calls.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;

wit_bindgen::generate!({
    world: "correlation-plugin",
    path: "../../../wit",
});

use exports::hxp::events::{correlation, plugin};
use hxp::events::types;

thread_local! {
    static MODE: RefCell<String> = RefCell::new("ok".to_string());
    static CALLS: RefCell<u64> = const { RefCell::new(0) };
    static HOARD: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

struct Hostile;

impl plugin::Guest for Hostile {
    fn metadata() -> types::PluginMetadata {
        types::PluginMetadata {
            name: "hostile".into(),
            version: if cfg!(feature = "always-panic") {
                "0.0.2"
            } else {
                "0.0.1"
            }
            .into(),
            state_version: 1,
            wants_payload: false,
            fresh_start_ok: true,
        }
    }

    fn configure(config: String) -> Result<(), String> {
        let mode = config
            .split('"')
            .nth(3)
            .ok_or_else(|| format!("expected {{\"mode\": \"...\"}}, got {config}"))?
            .to_string();
        if mode == "panic-in-configure" {
            panic!("hostile guest: panic in configure");
        }
        MODE.with_borrow_mut(|m| *m = mode);
        Ok(())
    }

    fn save_state() -> Vec<u8> {
        CALLS.with_borrow(|c| c.to_le_bytes().to_vec())
    }

    fn load_state(_version: u32, state: Vec<u8>) -> Result<(), String> {
        if MODE.with_borrow(|m| m == "panic-in-load-state") {
            panic!("hostile guest: panic in load-state");
        }
        let bytes: [u8; 8] = state
            .try_into()
            .map_err(|_| "state must be 8 bytes".to_string())?;
        CALLS.with_borrow_mut(|c| *c = u64::from_le_bytes(bytes));
        Ok(())
    }
}

impl correlation::Guest for Hostile {
    fn process(events: types::EventBatch) -> types::CorrelationResult {
        let calls = CALLS.with_borrow_mut(|c| {
            *c += 1;
            *c
        });
        let finding = |i: u64| types::Finding {
            name: format!("call-{calls}"),
            source: "pattern".into(),
            subject: String::new(),
            alert: false,
            occurrences: events.seq.len() as u32,
            score: 0.5,
            message: format!("finding {i}"),
            evidence: vec![],
        };
        if cfg!(feature = "always-panic") {
            panic!("hostile guest 0.0.2: panic in every process (call {calls})");
        }
        match MODE.with_borrow(|m| m.clone()).as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => loop {
                let chunk = vec![7u8; 1 << 20];
                HOARD.with_borrow_mut(|h| h.push(std::hint::black_box(chunk)));
            },
            "panic" => panic!("hostile guest: panic in process (call {calls})"),
            "huge" => types::CorrelationResult {
                findings: (0..200_000).map(finding).collect(),
                correlation_score: 0.0,
            },
            _ => types::CorrelationResult {
                findings: vec![finding(0)],
                correlation_score: 0.5,
            },
        }
    }
}

export!(Hostile);
