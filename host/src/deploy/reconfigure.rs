//! Live config changes: when the config file changes, each plugin whose
//! section changed is tried with it on a scratch instance, then
//! reconfigured between batches. A file that does not load, or a section a
//! plugin refuses, is rejected and the old settings stay. Changed inhibit
//! rules (the host's, not a plugin's) go to the processor the same way.

use super::{Deployer, Running};
use crate::config::{Config, InhibitRule};
use crate::pipeline::Control;
use crate::plugin::Plugin;
use crate::store::{DeploymentResult, DeploymentRow, Trigger};
use std::path::Path;
use std::sync::Arc;

impl Deployer {
    /// Re-read the config file and reconfigure the plugins whose section
    /// changed.
    pub async fn reload_config(self: &Arc<Self>, cause: Trigger) -> Vec<DeploymentRow> {
        let Some(path) = self.config_path.clone() else {
            return Vec::new();
        };
        let _serial = self.serial.lock().await;
        let load_path = path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(Some(&load_path)))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        let new = match loaded {
            Ok(c) => Arc::new(c),
            Err(e) => {
                let row = self.row("config", &path, cause);
                let reason = format!("{e:#}; the previous config stays");
                let row = self.reject(row, reason, None).await;
                *self.config_error() = Some(row.clone());
                return vec![row];
            }
        };
        *self.config_error() = None;
        let mut done = Vec::new();
        let inhibit = &new.event_correlation.inhibit_rules;
        if *inhibit != self.config().event_correlation.inhibit_rules {
            done.push(self.reinhibit(inhibit.clone(), &path, cause).await);
        }
        let running: Vec<(String, Running)> = self
            .running()
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        for (name, r) in running {
            // Checked when the plugin was deployed.
            let Ok(json) = new.section_json(&r.section) else {
                continue;
            };
            if json != r.section_json {
                done.push(self.reconfigure(&name, r, json, &path, cause).await);
            }
        }
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = new;
        done
    }

    /// Have the processor take new inhibit rules between batches; the row
    /// (plugin "config") says after which event they hold.
    async fn reinhibit(
        &self,
        rules: Vec<InhibitRule>,
        path: &Path,
        cause: Trigger,
    ) -> DeploymentRow {
        let mut row = self.row("config", path, cause);
        let n = rules.len();
        match self.ask(|reply| Control::Inhibit { rules, reply }).await {
            Some(after_seq) => {
                row.result = DeploymentResult::Reconfigured;
                row.reason = format!("event_correlation.inhibit_rules changed ({n} rules)");
                row.after_seq = Some(after_seq as i64);
                self.record(&row).await;
                row
            }
            None => (self.reject(row, "the service is stopping".into(), None)).await,
        }
    }

    /// Try a plugin's new section on a scratch instance, then apply it
    /// between batches.
    async fn reconfigure(
        &self,
        name: &str,
        r: Running,
        json: String,
        path: &Path,
        cause: Trigger,
    ) -> DeploymentRow {
        let mut row = self.row(name, path, cause);
        row.stage = Some(r.stage.to_string());
        row.sha256 = Some(r.sha256.clone());
        let section = r.section.clone();
        match self.try_section(r, json.clone()).await {
            Ok(version) => row.version = Some(version),
            Err(e) => {
                let reason =
                    format!("the `{section}` section was refused: {e}; the old settings stay");
                return self.reject(row, reason, None).await;
            }
        }
        match self.apply_section(name, json.clone()).await {
            Ok(after_seq) => {
                row.result = DeploymentResult::Reconfigured;
                row.reason = format!("the `{section}` section changed");
                row.after_seq = Some(after_seq as i64);
                if let Some(run) = self.running().get_mut(name) {
                    run.section_json = json;
                }
                self.record(&row).await;
                row
            }
            Err(e) => self.reject(row, e, None).await,
        }
    }

    /// Configure a scratch instance of the same component; its version.
    async fn try_section(&self, r: Running, json: String) -> Result<String, String> {
        let (engine, clock) = (self.engine.clone(), self.clock.clone());
        tokio::task::spawn_blocking(move || {
            let mut p =
                Plugin::new(engine, r.loaded, r.limits, clock).map_err(|e| e.to_string())?;
            p.configure(&json).map_err(|e| e.to_string())?;
            Ok(p.metadata().version.clone())
        })
        .await
        .unwrap_or_else(|e| Err(format!("trying the section panicked: {e}")))
    }

    /// Have the processor apply the section; the sequence number after
    /// which it holds.
    async fn apply_section(&self, name: &str, json: String) -> Result<u64, String> {
        let configure = |reply| Control::Configure {
            name: name.to_string(),
            json,
            reply,
        };
        let applied = self.ask(configure).await;
        applied.unwrap_or_else(|| Err("the service is stopping".to_string()))
    }
}
