//! `hxp-events loadgen --scenario incidents`: a deterministic stream (for a
//! seed and a start) of events with their own timestamps, with incidents
//! planted in a realistic background, and the labels that say what was
//! planted where and when; written to a file or sent to a service. `loadgen
//! score` then measures what the service's alerts caught.

pub mod events;
pub mod plan;
pub mod send;

use crate::cli::labels::Labels;
use crate::cli::loadgen::Rng;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

/// The latest event time a timestamp can say (9999-12-31).
const MAX_MS: i64 = 253_402_300_799_999;

/// A scenario: its labels and what each incident does.
pub struct Scenario {
    pub labels: Labels,
    planted: Vec<plan::Planted>,
    id_base: u64,
}

impl Scenario {
    /// The scenario of `seed` over `[start_ms, start_ms + duration_ms)`.
    pub fn new(seed: u64, start_ms: i64, duration_ms: i64) -> anyhow::Result<Scenario> {
        anyhow::ensure!(duration_ms > 0, "the duration must be positive");
        anyhow::ensure!(
            start_ms >= 0
                && start_ms
                    .checked_add(duration_ms)
                    .is_some_and(|e| e < MAX_MS),
            "--start must be between 0 and year 9999 minus the duration"
        );
        let mut rng = Rng(seed.max(1));
        let planted = plan::plan(&mut rng, start_ms, duration_ms);
        // The ids differ between starts: the same seed at another start is
        // another stream, not duplicates of the first.
        let id_base = Rng((seed ^ start_ms as u64).max(1)).next_u64();
        let labels = Labels {
            seed,
            start_ms,
            end_ms: start_ms + duration_ms,
            events: None,
            incidents: planted.iter().map(|p| p.incident.clone()).collect(),
        };
        Ok(Scenario {
            labels,
            planted,
            id_base,
        })
    }

    /// Its events, in event-time order.
    pub fn events(&self) -> events::Stream<'_> {
        let span = (self.labels.start_ms, self.labels.end_ms);
        events::Stream::new(self.labels.seed, self.id_base, &self.planted, span)
    }
}

/// The default start: `duration_ms` before `now_ms`, down to the minute, so
/// that a replay ends near the present (and the same seed gives the same
/// stream shifted by whole minutes).
pub fn default_start(now_ms: i64, duration_ms: i64) -> i64 {
    (now_ms - duration_ms).div_euclid(60_000) * 60_000
}

/// What the command was asked.
pub struct Options {
    pub seed: u64,
    pub start_ms: Option<i64>,
    pub duration_ms: i64,
    /// Write the events here instead of sending them.
    pub out: Option<PathBuf>,
    pub target: String,
    pub labels: Option<PathBuf>,
    pub batch: usize,
    pub quiet: bool,
}

/// Generate, write or send, write the labels; the summary.
pub async fn run(opts: Options) -> anyhow::Result<serde_json::Value> {
    let now = chrono::Utc::now().timestamp_millis();
    let start = opts
        .start_ms
        .unwrap_or_else(|| default_start(now, opts.duration_ms));
    let mut scenario = Scenario::new(opts.seed, start, opts.duration_ms)?;
    let mut summary = serde_json::json!({
        "scenario": "incidents",
        "seed": opts.seed,
        "start_ms": start,
        "end_ms": scenario.labels.end_ms,
        "incidents": scenario.labels.incidents.len(),
    });
    let count = match &opts.out {
        Some(path) => write_ndjson(&scenario, path)?,
        None => {
            let lines = scenario.events().map(|e| e.to_string());
            let sent = send::send(lines, &opts.target, opts.batch, opts.quiet).await?;
            summary["target"] = opts.target.clone().into();
            summary["sent"] = serde_json::to_value(sent)?;
            sent.sent
        }
    };
    summary["events"] = count.into();
    scenario.labels.events = Some(count);
    if let Some(path) = &opts.labels {
        scenario.labels.write(path)?;
    }
    Ok(summary)
}

/// The events as NDJSON in `path`; how many.
fn write_ndjson(scenario: &Scenario, path: &std::path::Path) -> anyhow::Result<u64> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut n = 0u64;
    for e in scenario.events() {
        serde_json::to_writer(&mut out, &e)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(n)
}

#[cfg(test)]
mod tests;
