//! Preparing a candidate off the processing path: compile, check,
//! instantiate, configure, and try the running version's last checkpoint.
//! Everything that can fail happens here, before the processor is asked.

use super::candidate::{Candidate, DEFAULT_ORDER};
use super::{Deployer, Running};
use crate::config::Config;
use crate::pipeline::Slot;
use crate::plugin::{LoadedComponent, Plugin};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A candidate ready to swap in: its slot, what the deployer keeps of it,
/// and the compile time.
pub(super) type Prepared = (Slot, Running, Duration);

impl Deployer {
    /// Compile, check, instantiate, configure, and try the running
    /// version's last checkpoint.
    pub(super) fn prepare(&self, c: &Candidate, config: &Config) -> Result<Prepared, String> {
        let started = Instant::now();
        let loaded = self
            .engine
            .load_bytes(&c.bytes, &c.file.display().to_string())
            .map_err(|e| e.to_string())?;
        let compile = started.elapsed();
        self.check_stage(c, &loaded)?;
        let kind = loaded.kind;
        let limits = c.manifest.limits.unwrap_or(config.plugins.limits);
        let section = c
            .manifest
            .config
            .clone()
            .unwrap_or_else(|| kind.config_section().to_string());
        let section_json = config.section_json(&section)?;
        let name: Arc<str> = Arc::from(c.name.as_str());
        let plugin = self.instantiate(&loaded, limits, &name, &section, &section_json)?;
        let running = Running {
            file: c.file.clone(),
            fingerprint: c.fingerprint.clone(),
            sha256: c.sha256.clone(),
            manifest: c.manifest.clone(),
            stage: kind,
            section: section.clone(),
            section_json: section_json.clone(),
            limits,
            loaded,
        };
        let slot = Slot {
            name,
            plugin: Box::new(plugin),
            order: c.manifest.order.unwrap_or(DEFAULT_ORDER),
            file: c.file.display().to_string(),
            section,
            section_json,
            loaded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        Ok((slot, running, compile))
    }

    /// The component's world matches its manifest and the plugin of that
    /// name that runs now.
    fn check_stage(&self, c: &Candidate, loaded: &LoadedComponent) -> Result<(), String> {
        let kind = loaded.kind;
        if let Some(stage) = c.manifest.stage.filter(|s| *s != kind) {
            return Err(format!(
                "the manifest says stage {stage}, but the component is a {kind} plugin"
            ));
        }
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = running.get(&c.name)
            && r.stage != kind
        {
            return Err(format!(
                "{} runs as a {} plugin; this file is a {kind} plugin",
                c.name, r.stage
            ));
        }
        Ok(())
    }

    /// An instance configured with its section that can take over the
    /// running version's last checkpoint (or declares it may start fresh).
    fn instantiate(
        &self,
        loaded: &LoadedComponent,
        limits: crate::plugin::Limits,
        name: &Arc<str>,
        section: &str,
        section_json: &str,
    ) -> Result<Plugin, String> {
        let section = (section, section_json);
        let mut plugin =
            self.configured(loaded.clone(), limits, name, section, self.clock.clone())?;
        let saved = self
            .states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&**name)
            .cloned();
        if let Some((version, state)) = saved
            && let Err(e) = plugin.load_state(version, &state)
            && !plugin.metadata().fresh_start_ok
        {
            return Err(format!(
                "cannot load the running version's state (state version {version}): {e}; \
                 a version that may start fresh must declare it in its metadata"
            ));
        }
        Ok(plugin)
    }

    /// An instance of `loaded` named `name`, configured with `section`, on
    /// `clock` (deployments: the service's; backtests: one that follows the
    /// events).
    pub(super) fn configured(
        &self,
        loaded: LoadedComponent,
        limits: crate::plugin::Limits,
        name: &Arc<str>,
        (section, section_json): (&str, &str),
        clock: crate::plugin::Clock,
    ) -> Result<Plugin, String> {
        let mut plugin =
            Plugin::new(self.engine.clone(), loaded, limits, clock).map_err(|e| e.to_string())?;
        plugin.set_name(name.clone());
        plugin
            .configure(section_json)
            .map_err(|e| format!("configure with the `{section}` section: {e}"))?;
        Ok(plugin)
    }
}
