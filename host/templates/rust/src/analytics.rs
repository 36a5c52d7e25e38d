//! {{name}}: counts, rates, mean latency and error rate over a sliding
//! window of `window_secs` seconds (in the plugin's config section) ending
//! at the host clock (the watermark).
use hxp_plugin_sdk::prelude::*;
use std::collections::VecDeque;

/// What the window keeps of an event.
#[derive(Clone, Copy)]
struct Entry {
    time_ms: i64,
    kind: EventKind,
    latency_ms: Option<f64>,
    success: Option<bool>,
}

struct Window {
    window_secs: u32,
    /// In the order they were folded in.
    entries: VecDeque<Entry>,
}

impl Default for Window {
    fn default() -> Self {
        Window { window_secs: 60, entries: VecDeque::new() }
    }
}

impl Plugin for Window {
    fn metadata() -> Metadata {
        Metadata::new("{{name}}", "0.1.0")
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let section: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        if let Some(v) = section.get("window_secs") {
            let n = v.as_u64().filter(|n| (1..=u32::MAX as u64).contains(n));
            self.window_secs = n.ok_or("window_secs must be a positive integer")? as u32;
        }
        Ok(())
    }

    /// 18 bytes per entry, little endian: time_ms i64, latency_ms f64 (NaN
    /// when absent), kind u8, outcome u8 (the Python and JavaScript
    /// templates write the same).
    fn save_state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * ENTRY);
        for e in &self.entries {
            out.extend_from_slice(&e.time_ms.to_le_bytes());
            out.extend_from_slice(&e.latency_ms.unwrap_or(f64::NAN).to_le_bytes());
            out.push(e.kind.index() as u8);
            out.push(match e.success {
                None => 0,
                Some(true) => 1,
                Some(false) => 2,
            });
        }
        out
    }

    fn load_state(&mut self, version: u32, state: &[u8]) -> Result<(), String> {
        if version != 1 {
            return Err(format!("state version {version} is not supported"));
        }
        if state.len() % ENTRY != 0 {
            return Err(format!("state is not a whole number of {ENTRY}-byte entries"));
        }
        let entries = state.chunks_exact(ENTRY).map(parse_entry);
        self.entries = entries.collect::<Option<_>>().ok_or("bad state entry")?;
        Ok(())
    }
}

/// Bytes per saved entry.
const ENTRY: usize = 18;

fn parse_entry(b: &[u8]) -> Option<Entry> {
    let time_ms = i64::from_le_bytes(b[0..8].try_into().ok()?);
    let latency = f64::from_le_bytes(b[8..16].try_into().ok()?);
    let success = match b[17] {
        0 => None,
        1 => Some(true),
        2 => Some(false),
        _ => return None,
    };
    Some(Entry {
        time_ms,
        kind: EventKind::from_code(b[16])?,
        latency_ms: (!latency.is_nan()).then_some(latency),
        success,
    })
}

impl Analytics for Window {
    fn process(&mut self, events: &EventBatch, now_ms: i64) {
        self.entries.extend(events.iter().map(|e| Entry {
            time_ms: e.time_ms,
            kind: e.kind,
            latency_ms: e.latency_ms,
            success: e.success,
        }));
        let start = now_ms - self.window_secs as i64 * 1000;
        self.entries.retain(|e| e.time_ms > start);
    }

    fn snapshot(&mut self, now_ms: i64) -> Snapshot {
        let start = now_ms - self.window_secs as i64 * 1000;
        let inside = self.entries.iter().filter(|e| e.time_ms > start && e.time_ms <= now_ms);
        let window = self.window_secs as f64;
        let mut s = Stats::default();
        let (mut requests, mut latency_sum) = (0u64, 0.0);
        for e in inside {
            s.count += 1;
            requests += (e.kind == EventKind::LlmRequest) as u64;
            if let Some(l) = e.latency_ms {
                s.latency_count += 1;
                latency_sum += l;
            }
            s.outcome_count += e.success.is_some() as u64;
            s.error_count += (e.success == Some(false)) as u64;
        }
        s.throughput = s.count as f64 / window;
        s.requests_per_second = requests as f64 / window;
        s.latency_avg = (s.latency_count > 0).then(|| latency_sum / s.latency_count as f64);
        if s.outcome_count > 0 {
            s.error_rate = s.error_count as f64 / s.outcome_count as f64;
        }
        Snapshot {
            time_ms: now_ms,
            window_secs: self.window_secs,
            covered_secs: window,
            overall: s,
            ..Snapshot::default()
        }
    }
}

hxp_plugin_sdk::export_analytics!(Window);
