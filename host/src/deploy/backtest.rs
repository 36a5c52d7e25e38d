//! Candidates for backtests through the API (POST /plugins/backtest): a
//! fresh instance of an uploaded component on a clock of its own,
//! configured like a deployment of it would be. Nothing is deployed,
//! recorded or kept.

use super::Deployer;
use crate::plugin::{Clock, Plugin};
use std::sync::Arc;

impl Deployer {
    /// The only backtest that may start now, if none runs.
    pub fn backtest_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.backtests.clone().try_acquire_owned().ok()
    }

    /// Compile `bytes` (a correlation plugin) and configure an instance
    /// with `section` (default: its stage's) and the default limits, its
    /// clock starting at `start_ms`. The error says why it cannot run.
    pub fn backtest_candidate(
        &self,
        bytes: &[u8],
        section: Option<&str>,
        start_ms: i64,
    ) -> Result<(Plugin, Clock), String> {
        let loaded = self
            .engine
            .load_bytes(bytes, "backtest candidate")
            .map_err(|e| e.to_string())?;
        crate::pipeline::backtest::check_kind(loaded.kind)?;
        let config = self.config();
        let section = section.unwrap_or(loaded.kind.config_section());
        let section_json = config.section_json(section)?;
        let clock = Clock::manual(start_ms);
        let name = Arc::from("backtest");
        let limits = config.plugins.limits;
        let plugin = self.configured(
            loaded,
            limits,
            &name,
            (section, &section_json),
            clock.clone(),
        )?;
        Ok((plugin, clock))
    }
}
