//! {{name}}: a finding for every service with at least `min_errors` errors
//! in a batch (`min_errors` in the plugin's config section).
use hxp_plugin_sdk::prelude::*;
use std::collections::BTreeMap;

struct ErrorsByService {
    min_errors: u32,
    /// Errors per service since the start; kept across hot swaps.
    totals: BTreeMap<String, u64>,
}

impl Default for ErrorsByService {
    fn default() -> Self {
        ErrorsByService { min_errors: 3, totals: BTreeMap::new() }
    }
}

impl Plugin for ErrorsByService {
    fn metadata() -> Metadata {
        Metadata::new("{{name}}", "0.1.0")
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let section: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        if let Some(v) = section.get("min_errors") {
            let n = v.as_u64().filter(|n| (1..=u32::MAX as u64).contains(n));
            self.min_errors = n.ok_or("min_errors must be a positive integer")? as u32;
        }
        Ok(())
    }

    /// One `service<TAB>count` line per service.
    fn save_state(&self) -> Vec<u8> {
        let lines = self.totals.iter().map(|(s, n)| format!("{s}\t{n}\n"));
        lines.collect::<String>().into_bytes()
    }

    fn load_state(&mut self, version: u32, state: &[u8]) -> Result<(), String> {
        if version != 1 {
            return Err(format!("state version {version} is not supported"));
        }
        let text = std::str::from_utf8(state).map_err(|e| e.to_string())?;
        self.totals.clear();
        for line in text.lines() {
            // The count is after the last tab (a service name may hold one).
            let (service, n) = line.rsplit_once('\t').ok_or(format!("bad state line {line:?}"))?;
            let n = n.parse().map_err(|_| format!("bad state line {line:?}"))?;
            self.totals.insert(service.to_string(), n);
        }
        Ok(())
    }
}

impl Correlation for ErrorsByService {
    fn process(&mut self, events: &EventBatch, _now_ms: i64) -> CorrelationResult {
        // Per service: the errors' sequence numbers, in batch order.
        let mut errors: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for e in events.iter().filter(|e| e.success == Some(false)) {
            errors.entry(e.service.unwrap_or("unknown")).or_default().push(e.seq);
        }
        let mut result = CorrelationResult::default();
        for (service, seqs) in errors {
            let total = self.totals.entry(service.to_string()).or_default();
            *total += seqs.len() as u64;
            if seqs.len() < self.min_errors as usize {
                continue;
            }
            let score = (seqs.len() as f64 / (2.0 * self.min_errors as f64)).min(1.0);
            result.correlation_score = result.correlation_score.max(score);
            result.findings.push(Finding {
                name: "{{name}}".into(),
                source: "rule".into(),
                subject: service.to_string(),
                alert: true,
                occurrences: seqs.len() as u32,
                score,
                message: format!(
                    "{} errors from {service} in this batch ({total} since start)",
                    seqs.len()
                ),
                evidence: seqs.into_iter().take(10).collect(),
            });
        }
        result
    }
}

hxp_plugin_sdk::export_correlation!(ErrorsByService);
