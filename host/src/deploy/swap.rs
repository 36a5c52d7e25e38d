//! The deployer's side of a swap: prepare a candidate off the processing
//! path, hand it to the processor (which swaps it in between batches), or
//! unload one; and the plugins to start with.

use super::candidate::{Candidate, plugin_files, read_candidate, sha256_hex};
use super::history::describe_prepared;
use super::prepare::Prepared;
use super::{Deployer, short};
use crate::pipeline::{Control, Slot, Swapped};
use crate::plugin::PluginKind;
use crate::store::{DeploymentResult, DeploymentRow, Trigger};
use std::collections::BTreeSet;
use std::sync::Arc;

impl Deployer {
    /// Drop a replaced instance away from the processing path and the
    /// runtime (unmapping a large memory takes a moment).
    pub(super) fn drop_later(old: Option<Box<Slot>>) {
        if let Some(old) = old {
            tokio::task::spawn_blocking(move || drop(old));
        }
    }

    /// [`prepare`](Deployer::prepare) on a blocking thread.
    pub(super) async fn prepare_off_path(
        self: &Arc<Self>,
        c: Candidate,
    ) -> Result<(Result<Prepared, String>, Candidate), String> {
        let config = self.config();
        let this = self.clone();
        tokio::task::spawn_blocking(move || (this.prepare(&c, &config), c))
            .await
            .map_err(|e| format!("preparing panicked: {e}"))
    }

    /// Prepare a candidate off the processing path, then have the processor
    /// swap it in between batches. `ok` is the result recorded on success.
    pub(super) async fn deploy(
        self: &Arc<Self>,
        c: Candidate,
        cause: Trigger,
        ok: DeploymentResult,
    ) -> DeploymentRow {
        let mut row = self.row(&c.name, &c.file, cause);
        row.actor = c.actor.clone();
        let (prepared, c) = match self.prepare_off_path(c).await {
            Ok(v) => v,
            Err(reason) => return self.reject(row, reason, None).await,
        };
        let mut row = DeploymentRow {
            sha256: Some(c.sha256.clone()),
            ..row
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(reason) => return self.reject(row, reason, Some(&c.fingerprint)).await,
        };
        describe_prepared(&mut row, &prepared);
        let (slot, running, _) = prepared;
        let replaced = self.running().get(&c.name).map(|r| r.sha256.clone());
        let swapped = match self.install(slot).await {
            Ok(s) => s,
            Err(reason) => return self.reject(row, reason, Some(&c.fingerprint)).await,
        };
        Self::drop_later(swapped.old);
        self.archive(&c.sha256, &c.bytes);
        row.result = ok;
        row.after_seq = Some(swapped.after_seq as i64);
        row.pause_us = Some(swapped.pause.as_micros() as i64);
        row.reason = match (replaced, swapped.fresh_start) {
            (None, _) => "new plugin".into(),
            (Some(sha), None) => format!("replaced {}; state moved across", short(&sha)),
            (Some(sha), Some(why)) => format!("replaced {}; started fresh: {why}", short(&sha)),
        };
        self.running().insert(c.name.clone(), running);
        let why = "the live version changed";
        self.stop_shadow(&c.name, (cause, c.actor.clone()), why)
            .await;
        self.rejected().remove(&c.file);
        if cause != Trigger::Quarantine {
            self.quarantined().remove(&c.name);
        }
        self.record(&row).await;
        row
    }

    /// Have the processor swap `slot` in between batches.
    async fn install(&self, slot: Slot) -> Result<Swapped, String> {
        let slot = Box::new(slot);
        let installed = self.ask(|reply| Control::Install { slot, reply }).await;
        match installed.ok_or("the service is stopping")? {
            Ok(swapped) => Ok(swapped),
            Err((reason, slot)) => {
                Self::drop_later(Some(slot));
                Err(reason)
            }
        }
    }

    /// Unload the plugin `row` names after the batch in flight; `row`
    /// (with its reason) is completed and recorded.
    pub(super) async fn unload(&self, mut row: DeploymentRow) -> DeploymentRow {
        let name = row.plugin.clone();
        let remove = |reply| Control::Remove {
            name: name.clone(),
            reply,
        };
        let swapped = self.ask(remove).await.flatten();
        self.running().remove(&name);
        // The processor dropped its shadow with it.
        let shadow = self.shadows().remove(&name);
        if let Some(entry) = shadow {
            let cause = (row.trigger, row.actor.clone());
            let why = "its live plugin was unloaded";
            self.record_shadow_end(&name, &entry, cause, why).await;
        }
        row.result = DeploymentResult::Unloaded;
        if let Some(s) = swapped {
            row.after_seq = Some(s.after_seq as i64);
            row.pause_us = Some(s.pause.as_micros() as i64);
            if let Some(old) = &s.old {
                row.version = Some(old.plugin.metadata().version.clone());
                row.sha256 = Some(old.plugin.sha256().to_string());
                row.stage = Some(old.plugin.kind().to_string());
            }
            Self::drop_later(s.old);
        }
        self.record(&row).await;
        row
    }

    /// The plugins to start with: every valid file in the directory; for a
    /// file that is rejected, the last accepted version of that plugin
    /// from the archive, if there is one.
    pub async fn initial(self: &Arc<Self>) -> anyhow::Result<Vec<Slot>> {
        let mut slots: Vec<Slot> = Vec::new();
        let mut names: BTreeSet<String> = BTreeSet::new();
        for file in plugin_files(&self.dir) {
            let c = match read_candidate(&file) {
                Ok(c) => c,
                Err((name, reason)) => {
                    let row = self.row(&name, &file, Trigger::Startup);
                    self.reject(row, reason, None).await;
                    continue;
                }
            };
            if c.manifest.shadow() {
                continue; // started once the live plugins run
            }
            if !names.insert(c.name.clone()) {
                let row = self.row(&c.name, &file, Trigger::Startup);
                let reason = format!("another file already deploys a plugin named {}", c.name);
                self.reject(row, reason, Some(&c.fingerprint)).await;
                continue;
            }
            if let Some(slot) = self.start_one(c).await? {
                slots.push(slot);
            }
        }
        if !slots
            .iter()
            .any(|s| s.plugin.kind() == PluginKind::Analytics)
        {
            anyhow::bail!(
                "no analytics plugin could be loaded from {} (plugins.directory); `make build` builds the default plugins into target/plugins",
                self.dir.display()
            );
        }
        Ok(slots)
    }

    /// One plugin at startup: its file, or when that is rejected, the last
    /// accepted version from the archive. A version that differs from the
    /// last accepted one is recorded as a deployment.
    async fn start_one(self: &Arc<Self>, c: Candidate) -> anyhow::Result<Option<Slot>> {
        let history = self.store.deployments(&c.name, 200).await?;
        let last_sha = history
            .iter()
            .find(|d| d.result.is_live())
            .and_then(|d| d.sha256.clone());
        let file = c.file.clone();
        let (prepared, c) = self.prepare_off_path(c).await.map_err(anyhow::Error::msg)?;
        let prepared = prepared.and_then(|p| keep_out_if_quarantined(p, &history, &c.sha256));
        let fallback = super::quarantine::last_good(&history, &c.sha256);
        let mut row = self.row(&c.name, &file, Trigger::Startup);
        row.sha256 = Some(c.sha256.clone());
        let (prepared, c) = match prepared {
            Ok(p) => {
                if last_sha.as_deref() != Some(c.sha256.as_str()) {
                    row.reason = "loaded at startup".into();
                    self.record_accepted(row, &p).await;
                }
                (p, c)
            }
            Err(reason) => {
                self.reject(row, reason.clone(), Some(&c.fingerprint)).await;
                match self.from_archive(c, fallback, &reason).await? {
                    Some(v) => v,
                    None => return Ok(None),
                }
            }
        };
        let (slot, running, _) = prepared;
        self.archive(&c.sha256, &c.bytes);
        tracing::info!(plugin = %c.name, file = %file.display(), stage = %running.stage,
            version = %slot.plugin.metadata().version, sha256 = %&c.sha256[..12], "plugin loaded");
        self.running().insert(c.name.clone(), running);
        Ok(Some(slot))
    }

    /// The last accepted version of a plugin whose file was rejected at
    /// startup, prepared from the archive (and recorded), if it is there.
    async fn from_archive(
        self: &Arc<Self>,
        c: Candidate,
        last_sha: Option<String>,
        rejected_because: &str,
    ) -> anyhow::Result<Option<(Prepared, Candidate)>> {
        let Some(bytes) = last_sha
            .filter(|sha| *sha != c.sha256)
            .and_then(|sha| std::fs::read(self.archive.join(format!("{sha}.wasm"))).ok())
        else {
            return Ok(None);
        };
        let file = c.file.clone();
        let fallback = Candidate {
            sha256: sha256_hex(&bytes),
            bytes,
            ..c
        };
        let (prepared, fallback) = self
            .prepare_off_path(fallback)
            .await
            .map_err(anyhow::Error::msg)?;
        let mut row = self.row(&fallback.name, &file, Trigger::Startup);
        row.sha256 = Some(fallback.sha256.clone());
        match prepared {
            Ok(p) => {
                row.reason = format!(
                    "{} was rejected ({rejected_because}); running the last accepted version from the archive",
                    file.display()
                );
                self.record_accepted(row, &p).await;
                Ok(Some((p, fallback)))
            }
            Err(e) => {
                let reason = format!("the archived version failed too: {e}");
                self.reject(row, reason, None).await;
                Ok(None)
            }
        }
    }

    /// Record a version accepted at startup.
    async fn record_accepted(&self, mut row: DeploymentRow, p: &Prepared) {
        row.result = DeploymentResult::Accepted;
        describe_prepared(&mut row, p);
        self.record(&row).await;
    }
}

/// A version quarantined since it was last deployed is not loaded at
/// start (its file stays until it changes), unless it is an analytics
/// plugin: the service needs one, and quarantine takes it out again if it
/// still fails.
fn keep_out_if_quarantined(
    p: Prepared,
    history: &[DeploymentRow],
    sha256: &str,
) -> Result<Prepared, String> {
    match super::quarantine::quarantined_since_deployed(history, sha256) {
        Some(why) if p.1.stage != PluginKind::Analytics => {
            Deployer::drop_later(Some(Box::new(p.0)));
            Err(format!(
                "quarantined before this start ({why}); not loaded until its file changes"
            ))
        }
        _ => Ok(p),
    }
}
