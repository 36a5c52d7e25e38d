//! The archive of accepted versions (by hash), and rollback to the version
//! before the current one.

use super::candidate::{Candidate, fingerprint, manifest_path, stem};
use super::{DeployError, Deployer};
use crate::store::{DeploymentResult, DeploymentRow, Trigger};
use std::sync::Arc;

impl Deployer {
    /// Keep an accepted version's bytes by hash.
    pub(super) fn archive(&self, sha256: &str, bytes: &[u8]) {
        let path = self.archive.join(format!("{sha256}.wasm"));
        if path.exists() {
            return;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), "archiving the plugin failed: {e}");
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Return a plugin to the version it ran before the current one. The
    /// file in the directory is replaced by that version too, so a restart
    /// keeps it.
    pub async fn rollback(self: &Arc<Self>, name: &str) -> Result<DeploymentRow, DeployError> {
        let _serial = self.serial.lock().await;
        self.rollback_locked(name, Trigger::Rollback).await
    }

    /// [`rollback`](Deployer::rollback), recorded with `cause`; the caller
    /// holds `serial`. A version that was quarantined is never the one
    /// rolled back to.
    pub(super) async fn rollback_locked(
        self: &Arc<Self>,
        name: &str,
        cause: Trigger,
    ) -> Result<DeploymentRow, DeployError> {
        let Some(current) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
        else {
            return Err(DeployError::NotLoaded(name.to_string()));
        };
        let history = self
            .store
            .deployments(name, 1000)
            .await
            .map_err(|e| DeployError::Store(format!("{e:#}")))?;
        let Some(previous) = super::quarantine::last_good(&history, &current.sha256) else {
            return Err(DeployError::NoEarlierVersion(name.to_string()));
        };
        let bytes = std::fs::read(self.archive.join(format!("{previous}.wasm")))
            .map_err(|e| DeployError::NotArchived(format!("{previous} ({e})")))?;
        let manifest_text =
            std::fs::read_to_string(manifest_path(&current.file)).unwrap_or_default();
        let c = Candidate {
            file: current.file.clone(),
            name: name.to_string(),
            manifest: current.manifest.clone(),
            sha256: previous.clone(),
            fingerprint: fingerprint(&previous, &manifest_text),
            bytes,
            actor: None,
        };
        let bytes = c.bytes.clone();
        let row = self.deploy(c, cause, DeploymentResult::RolledBack).await;
        if row.result != DeploymentResult::RolledBack {
            return Err(DeployError::Refused(row.reason));
        }
        // The directory now holds the version that runs.
        let tmp = current
            .file
            .with_file_name(format!(".{}.rollback.tmp", stem(&current.file)));
        if let Err(e) =
            std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &current.file))
        {
            tracing::warn!(file = %current.file.display(), "rolled back, but replacing the file failed: {e}");
        }
        Ok(row)
    }
}
