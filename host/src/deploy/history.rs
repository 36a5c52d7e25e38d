//! The deployment history: every attempt counted, logged and stored.

use super::prepare::Prepared;
use super::{Deployer, Running, ms};
use crate::store::{DeploymentResult, DeploymentRow, Trigger, now_ms};
use std::path::{Path, PathBuf};

impl Deployer {
    /// A new attempt's row; its result is set before it is recorded.
    pub(super) fn row(&self, name: &str, file: &Path, cause: Trigger) -> DeploymentRow {
        DeploymentRow {
            id: self.next_id(),
            plugin: name.to_string(),
            at: now_ms(),
            stage: None,
            file: file.display().to_string(),
            sha256: None,
            version: None,
            result: DeploymentResult::Rejected,
            reason: String::new(),
            trigger: cause,
            after_seq: None,
            compile_ms: None,
            pause_us: None,
            actor: None,
        }
    }

    /// A row about what runs (or ran) under `name`: its file, hash and
    /// stage.
    pub(super) fn row_for(&self, name: &str, r: &Running, cause: Trigger) -> DeploymentRow {
        DeploymentRow {
            sha256: Some(r.sha256.clone()),
            stage: Some(r.stage.to_string()),
            ..self.row(name, &r.file, cause)
        }
    }

    /// Count, log and persist a deployment attempt.
    pub(super) async fn record(&self, row: &DeploymentRow) {
        self.metrics
            .plugin
            .deployments
            .with_label_values(&[row.plugin.as_str(), row.result.as_str()])
            .inc();
        if row.result == DeploymentResult::Rejected {
            tracing::warn!(plugin = %row.plugin, file = %row.file, cause = %row.trigger, "plugin deployment rejected: {}", row.reason);
        } else {
            tracing::info!(plugin = %row.plugin, file = %row.file, cause = %row.trigger, result = %row.result,
                version = row.version.as_deref().unwrap_or(""), pause_us = row.pause_us.unwrap_or(0), "plugin deployment: {}", row.reason);
        }
        if let Err(e) = self.store.insert_deployment(row).await {
            tracing::warn!("recording the deployment failed: {e:#}");
        }
    }

    /// Record a refused attempt; with a fingerprint, the file is not tried
    /// again until it changes (GET /plugins lists it).
    pub(super) async fn reject(
        &self,
        mut row: DeploymentRow,
        reason: String,
        fingerprint: Option<&str>,
    ) -> DeploymentRow {
        row.result = DeploymentResult::Rejected;
        row.reason = reason;
        // Shown by GET /plugins before it is counted.
        if let Some(fp) = fingerprint {
            self.rejected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(PathBuf::from(&row.file), (fp.to_string(), row.clone()));
        }
        self.record(&row).await;
        row
    }
}

/// What a prepared candidate puts in its row: stage, version, compile time.
pub(super) fn describe_prepared(row: &mut DeploymentRow, (slot, running, compile): &Prepared) {
    row.stage = Some(running.stage.to_string());
    row.version = Some(slot.plugin.metadata().version.clone());
    row.compile_ms = Some(ms(*compile));
}
