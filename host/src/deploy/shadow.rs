//! Shadow deployments: a candidate checked like any deployment, then run
//! beside the live version of its name (PUT /plugins/{name}?mode=shadow)
//! until it is promoted to live (its file written as an upload's is) or
//! dropped. Shadows live in memory: a restart ends them.

use super::candidate::Candidate;
use super::history::describe_prepared;
use super::upload::{Staged, Upload, UploadError};
use super::{DeployError, Deployer, Running, short};
use crate::pipeline::shadow::{Shadow, ShadowReport};
use crate::pipeline::{Control, Swapped};
use crate::store::{DeploymentResult, DeploymentRow, Trigger, now_ms};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A shadow the deployer keeps: its report (shared with the processor) and
/// what promoting it writes.
pub(super) struct ShadowEntry {
    report: Arc<Mutex<ShadowReport>>,
    running: Running,
    bytes: Vec<u8>,
    manifest_text: String,
    /// The shadow file it came from, if it did (not an upload).
    pub(super) source: Option<ShadowFile>,
}

/// A shadow file in the plugin directory, as it was when its shadow
/// started.
#[derive(Clone)]
pub(super) struct ShadowFile {
    pub(super) file: PathBuf,
    pub(super) fingerprint: String,
}

impl ShadowEntry {
    /// Whether it came from the shadow file `file`.
    pub(super) fn came_from(&self, file: &std::path::Path) -> bool {
        self.source.as_ref().is_some_and(|s| s.file == file)
    }

    /// The report as it is now.
    fn report(&self) -> ShadowReport {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Deployer {
    /// Check a candidate and start it in the shadow of the live plugin of
    /// its name, from that plugin's state.
    pub async fn deploy_shadow(self: &Arc<Self>, up: Upload) -> Result<DeploymentRow, UploadError> {
        let _serial = self.serial.lock().await;
        let (c, manifest_text) = self.candidate(up)?;
        let mut row = self.row(&c.name, &c.file, Trigger::Api);
        row.actor = c.actor.clone();
        self.start_shadow((c, manifest_text), row, None).await
    }

    /// Start a candidate (prepared as an upload of the live plugin's file
    /// would be, with its manifest's text) as a shadow; `row` is recorded
    /// with the outcome. `source`: the shadow file it came from (the caller
    /// holds `serial`).
    pub(super) async fn start_shadow(
        self: &Arc<Self>,
        (c, manifest_text): (Candidate, String),
        mut row: DeploymentRow,
        source: Option<ShadowFile>,
    ) -> Result<DeploymentRow, UploadError> {
        row.sha256 = Some(c.sha256.clone());
        let fingerprint = source.as_ref().map(|s| s.fingerprint.clone());
        let refuse = |row, reason| self.refuse(row, reason, fingerprint.as_deref());
        if !self.running().contains_key(&c.name) {
            let reason = format!("a shadow needs a live plugin named {}", c.name);
            return Err(refuse(row, reason).await);
        }
        let (prepared, c) = self
            .prepare_off_path(c)
            .await
            .map_err(UploadError::Internal)?;
        let prepared = match prepared {
            Ok(p) => p,
            Err(reason) => return Err(refuse(row, reason).await),
        };
        describe_prepared(&mut row, &prepared);
        let (slot, running, _) = prepared;
        let report = Arc::new(Mutex::new(ShadowReport {
            plugin: c.name.clone(),
            version: slot.plugin.metadata().version.clone(),
            sha256: c.sha256.clone(),
            since_ms: now_ms(),
            ..ShadowReport::default()
        }));
        let shadow = Box::new(Shadow {
            slot,
            report: report.clone(),
        });
        let installed = self.ask(|reply| Control::Shadow { shadow, reply }).await;
        match installed.ok_or(UploadError::Stopping)? {
            Ok(replaced) => Self::drop_later(replaced.map(|s| Box::new(s.slot))),
            Err((reason, shadow)) => {
                Self::drop_later(Some(Box::new(shadow.slot)));
                return Err(refuse(row, reason).await);
            }
        }
        let entry = ShadowEntry {
            report,
            running,
            bytes: c.bytes,
            manifest_text,
            source,
        };
        let replaced = self.shadows().insert(c.name.clone(), entry);
        if let Some(old) = replaced {
            let why = format!("replaced by a newer shadow ({})", short(&c.sha256));
            let cause = (row.trigger, row.actor.clone());
            self.record_shadow_end(&c.name, &old, cause, &why).await;
        }
        row.result = DeploymentResult::Shadow;
        row.reason = "running in the shadow of the live version, from its state".into();
        self.record(&row).await;
        Ok(row)
    }

    /// A refused shadow, recorded (a shadow file's with its fingerprint:
    /// not tried again until it changes).
    async fn refuse(&self, row: DeploymentRow, reason: String, file: Option<&str>) -> UploadError {
        UploadError::Rejected(Box::new(self.reject(row, reason, file).await))
    }

    /// The report of a plugin's shadow.
    pub fn shadow_report(&self, name: &str) -> Option<ShadowReport> {
        self.shadows().get(name).map(ShadowEntry::report)
    }

    /// The reports of every running shadow.
    pub fn shadow_reports(&self) -> Vec<ShadowReport> {
        self.shadows().values().map(ShadowEntry::report).collect()
    }

    /// Make a plugin's shadow its live version, with the shadow's state;
    /// its file is written into the directory.
    pub async fn promote(
        self: &Arc<Self>,
        name: &str,
        actor: String,
    ) -> Result<DeploymentRow, DeployError> {
        let _serial = self.serial.lock().await;
        if !self.shadows().contains_key(name) {
            return Err(DeployError::NoShadow(name.to_string()));
        }
        let promote = |reply| Control::Promote {
            name: name.to_string(),
            reply,
        };
        let promoted = self.ask(promote).await.ok_or(DeployError::Stopping)?;
        let swapped: Swapped = promoted.map_err(DeployError::Refused)?;
        let Some(entry) = self.shadows().remove(name) else {
            return Err(DeployError::NoShadow(name.to_string()));
        };
        Self::drop_later(swapped.old);
        let file = entry.running.file.clone();
        let write = Staged::write(&file, &entry.bytes, &entry.manifest_text)
            .map_err(|e| e.to_string())
            .and_then(Staged::commit);
        match write {
            Ok(()) => remove_source(entry.source.as_ref()),
            Err(e) => tracing::warn!(plugin = %name, "promoted, but writing its file failed: {e}"),
        }
        self.archive(&entry.running.sha256, &entry.bytes);
        let report = entry.report();
        let mut row = self.row_for(name, &entry.running, Trigger::Api);
        row.actor = Some(actor);
        row.result = DeploymentResult::Promoted;
        row.version = Some(report.version.clone());
        row.after_seq = Some(swapped.after_seq as i64);
        row.pause_us = Some(swapped.pause.as_micros() as i64);
        row.reason = format!("promoted from the shadow: {}", summary(&report));
        self.running().insert(name.to_string(), entry.running);
        self.quarantined().remove(name);
        self.record(&row).await;
        Ok(row)
    }

    /// Stop a plugin's shadow (and remove its file, if it came from one).
    pub async fn drop_shadow(
        self: &Arc<Self>,
        name: &str,
        actor: String,
    ) -> Result<DeploymentRow, DeployError> {
        let _serial = self.serial.lock().await;
        let no_shadow = || DeployError::NoShadow(name.to_string());
        let source = self
            .shadows()
            .get(name)
            .ok_or_else(no_shadow)?
            .source
            .clone();
        let cause = (Trigger::Api, Some(actor));
        let row = self.stop_shadow(name, cause, "dropped").await;
        remove_source(source.as_ref());
        row.ok_or_else(no_shadow)
    }

    /// Stop the shadow of `name` if there is one, and record why (the
    /// caller holds `serial`). Among the reasons: the live version changed
    /// (deployed, rolled back), since the shadow was compared with, and
    /// started from, the version before; promoting it would undo the change.
    pub(super) async fn stop_shadow(
        &self,
        name: &str,
        cause: (Trigger, Option<String>),
        why: &str,
    ) -> Option<DeploymentRow> {
        let entry = self.shadows().remove(name)?;
        let stop = |reply| Control::DropShadow {
            name: name.to_string(),
            reply,
        };
        if let Some(Some(s)) = self.ask(stop).await {
            Self::drop_later(Some(Box::new(s.slot)));
        }
        Some(self.record_shadow_end(name, &entry, cause, why).await)
    }

    /// Record that a shadow stopped, and why, with what it did.
    pub(super) async fn record_shadow_end(
        &self,
        name: &str,
        entry: &ShadowEntry,
        (trigger, actor): (Trigger, Option<String>),
        why: &str,
    ) -> DeploymentRow {
        let report = entry.report();
        let mut row = self.row_for(name, &entry.running, trigger);
        row.actor = actor;
        row.result = DeploymentResult::ShadowDropped;
        row.version = Some(report.version.clone());
        row.reason = format!("shadow stopped ({why}): {}", summary(&report));
        self.record(&row).await;
        row
    }

    /// A shadow the processor took out for failing: recorded, forgotten.
    pub(super) async fn shadow_quarantined(
        &self,
        name: &str,
        (sha256, since_ms): (&str, i64),
        reason: String,
    ) {
        let entry = {
            let mut shadows = self.shadows();
            let this_one = |e: &ShadowEntry| {
                let since = e.report.lock().unwrap_or_else(|e| e.into_inner()).since_ms;
                e.running.sha256 == sha256 && since == since_ms
            };
            match shadows.get(name) {
                Some(e) if this_one(e) => shadows.remove(name),
                // Gone, or a shadow deployed since (it has its own count).
                _ => None,
            }
        };
        let Some(entry) = entry else { return };
        let mut row = self.row_for(name, &entry.running, Trigger::Quarantine);
        row.result = DeploymentResult::Quarantined;
        row.reason = format!("shadow: {reason}");
        if let Some(s) = entry.source {
            // Not started again from its file until the file changes.
            let at = (s.fingerprint, row.clone());
            self.rejected().insert(s.file, at);
        }
        self.record(&row).await;
    }
}

/// What a shadow did, in a few words.
fn summary(r: &ShadowReport) -> String {
    let disagreements: u64 = r.disagreements.values().flat_map(|m| m.values()).sum();
    format!(
        "{} events in {} batches, {disagreements} disagreements, {} failures",
        r.events, r.batches, r.failures
    )
}

/// A promoted or dropped shadow's file (and manifest) leave the directory:
/// it would start again from them. Only as they were when it started: a
/// file changed since is not the one that ran, and stays. (An upload's
/// shadow has none.)
fn remove_source(source: Option<&ShadowFile>) {
    let Some(s) = source else { return };
    let now = super::candidate::read_candidate(&s.file).map(|c| c.fingerprint);
    if now.as_ref() != Ok(&s.fingerprint) {
        tracing::warn!(file = %s.file.display(), "the shadow's file changed since it started: left in place");
        return;
    }
    for f in [super::candidate::manifest_path(&s.file), s.file.clone()] {
        if let Err(e) = std::fs::remove_file(&f)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %f.display(), "removing a shadow's file: {e}");
        }
    }
}
