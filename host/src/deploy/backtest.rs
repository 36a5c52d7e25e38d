//! Benches for backtests through the API (POST /plugins/backtest): an
//! uploaded component among fresh instances of the live versions of the
//! other plugins, on a clock of their own, each configured as its
//! deployment is. Nothing is deployed, recorded or kept.

use super::{DEFAULT_ORDER, Deployer, Running};
use crate::pipeline::Slot;
use crate::pipeline::backtest::Bench;
use crate::pipeline::stages::Switches;
use crate::plugin::{Clock, Limits, LoadedComponent};
use std::sync::Arc;

/// What a backtest candidate is to be.
pub struct BacktestCandidate<'a> {
    pub bytes: &'a [u8],
    /// The live plugin it stands in for (default: the first of its stage;
    /// a name nothing runs under adds it).
    pub plugin: Option<&'a str>,
    /// Its config section (default: that plugin's, else its stage's).
    pub section: Option<&'a str>,
}

impl Deployer {
    /// The only backtest that may start now, if none runs.
    pub fn backtest_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.backtests.clone().try_acquire_owned().ok()
    }

    /// Compile the candidate and set it among fresh instances of the other
    /// live plugins, their clock starting at `start_ms`. The error says why
    /// it cannot run.
    pub fn backtest_bench(&self, c: &BacktestCandidate, start_ms: i64) -> Result<Bench, String> {
        let loaded = self
            .engine
            .load_bytes(c.bytes, "backtest candidate")
            .map_err(|e| e.to_string())?;
        let kind = loaded.kind;
        let config = self.config();
        let live = self.running().clone();
        let name = match c.plugin {
            Some(n) => n.to_string(),
            None => self.first_of(kind).unwrap_or_else(|| "backtest".into()),
        };
        let namesake = live.get(&name);
        if let Some(r) = namesake.filter(|r| r.stage != kind) {
            return Err(format!(
                "{name} runs as a {} plugin; the candidate is a {kind} plugin",
                r.stage
            ));
        }
        let clock = Clock::manual(start_ms);
        let section = (c.section.map(str::to_string))
            .or_else(|| namesake.map(|r| r.section.clone()))
            .unwrap_or_else(|| kind.config_section().to_string());
        let section_json = config.section_json(&section)?;
        let part = Part {
            limits: namesake.map_or(config.plugins.limits, |r| r.limits),
            section: (&section, &section_json),
            order: namesake.map_or(DEFAULT_ORDER, Running::order),
        };
        let slot = self.bench_slot(&name, loaded, part, &clock)?;
        let others = (live.iter().filter(|(n, _)| **n != name))
            .map(|(n, r)| self.bench_slot(n, r.loaded.clone(), Part::of(r), &clock))
            .collect::<Result<_, _>>()?;
        let inhibit = config.event_correlation.inhibit_rules.clone();
        Ok(Bench::new(slot, others, clock, Switches::of(&config)).inhibiting(inhibit))
    }

    /// A fresh, configured instance of `loaded` under `name`, on `clock`.
    fn bench_slot(
        &self,
        name: &str,
        loaded: LoadedComponent,
        part: Part,
        clock: &Clock,
    ) -> Result<Slot, String> {
        let name: Arc<str> = Arc::from(name);
        let plugin = self.configured(loaded, part.limits, &name, part.section, clock.clone())?;
        Ok(Slot {
            name,
            plugin: Box::new(plugin),
            order: part.order,
            file: String::new(),
            section: part.section.0.to_string(),
            section_json: part.section.1.to_string(),
            loaded_at: String::new(),
        })
    }
}

/// How a plugin on the bench is set up.
struct Part<'a> {
    limits: Limits,
    /// The config section's name and JSON.
    section: (&'a str, &'a str),
    order: i32,
}

impl Part<'_> {
    /// As the live version `r` is.
    fn of(r: &Running) -> Part<'_> {
        Part {
            limits: r.limits,
            section: (&r.section, &r.section_json),
            order: r.order(),
        }
    }
}
