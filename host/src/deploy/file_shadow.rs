//! Shadows from the plugin directory: a file whose manifest says
//! `mode: shadow` (and `name:` the live plugin's) runs in the shadow of
//! the live plugin of its name, as one deployed with
//! `PUT /plugins/{name}?mode=shadow` does. It starts when the file comes
//! (or at startup), starts again when the file changes, stops when the
//! file goes; promoting it writes its component and manifest over the
//! live plugin's and removes the shadow's files.

use super::Deployer;
use super::candidate::{Candidate, fingerprint, plugin_files, read_candidate, stem};
use super::shadow::ShadowFile;
use crate::store::{DeploymentResult, DeploymentRow, Trigger};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl Deployer {
    /// Start the shadows the directory's shadow files ask for (after the
    /// live plugins have started).
    pub async fn start_file_shadows(self: &Arc<Self>) -> Vec<DeploymentRow> {
        let _serial = self.serial.lock().await;
        let files = plugin_files(&self.dir);
        let shadows = (files.iter())
            .filter_map(|f| read_candidate(f).ok())
            .filter(|c| c.manifest.shadow())
            .collect();
        self.sync_file_shadows(shadows, false, Trigger::Startup)
            .await
    }

    /// Bring the shadows from files in line with the shadow files found
    /// (the caller holds `serial`): new and changed ones start (`force`:
    /// also those refused before), those whose file is gone stop.
    pub(super) async fn sync_file_shadows(
        self: &Arc<Self>,
        found: Vec<Candidate>,
        force: bool,
        cause: Trigger,
    ) -> Vec<DeploymentRow> {
        let mut done = Vec::new();
        let files: Vec<PathBuf> = found.iter().map(|c| c.file.clone()).collect();
        let mut names = BTreeSet::new();
        for c in found {
            if !names.insert(c.name.clone()) {
                let row = self.row(&c.name, &c.file, cause);
                let reason = format!("another file already shadows {}", c.name);
                done.push(self.reject(row, reason, Some(&c.fingerprint)).await);
                continue;
            }
            // An uploaded shadow of that name runs until it ends; then
            // this file's starts (at the next rescan).
            let (uploaded, unchanged) = match self.shadows().get(&c.name) {
                Some(e) => match &e.source {
                    None => (true, false),
                    Some(s) => (false, s.file == c.file && s.fingerprint == c.fingerprint),
                },
                None => (false, false),
            };
            if uploaded || unchanged || (!force && self.rejected_as(&c.file, &c.fingerprint)) {
                continue;
            }
            let (name, file) = (c.name.clone(), c.file.clone());
            let row = self.start_file_shadow(c, cause).await;
            if row.result != DeploymentResult::Shadow {
                // The file changed and the new version was refused: the
                // old one must not run on (nor be promoted) as if it were
                // the file's.
                let why = "its file changed and the new version was refused";
                done.extend(self.stop_file_shadow(&name, &file, cause, why).await);
            }
            done.push(row);
        }
        for name in self.file_shadows_gone(&files) {
            let why = "its file was removed";
            done.extend(self.stop_shadow(&name, (cause, None), why).await);
        }
        done
    }

    /// One shadow file's shadow, started; the recorded attempt.
    async fn start_file_shadow(self: &Arc<Self>, c: Candidate, cause: Trigger) -> DeploymentRow {
        let source = ShadowFile {
            file: c.file.clone(),
            fingerprint: c.fingerprint.clone(),
        };
        let row = self.row(&c.name, &c.file, cause);
        let live_file = self.running().get(&c.name).map(|r| r.file.clone());
        let Some(live_file) = live_file else {
            // Tried again at every rescan: the live plugin may come.
            let reason = format!("a shadow needs a live plugin named {}", c.name);
            return self.reject(row, reason, None).await;
        };
        let as_live = match as_live_file(c, &live_file) {
            Ok(c) => c,
            Err(reason) => return self.reject(row, reason, Some(&source.fingerprint)).await,
        };
        match self.start_shadow(as_live, row.clone(), Some(source)).await {
            Ok(row) => row,
            Err(super::UploadError::Rejected(row)) => *row,
            // Not recorded: the service is stopping, or preparing panicked.
            Err(e) => DeploymentRow {
                reason: e.to_string(),
                ..row
            },
        }
    }

    /// Stop the shadow of `name` if it came from `file`.
    async fn stop_file_shadow(
        &self,
        name: &str,
        file: &Path,
        cause: Trigger,
        why: &str,
    ) -> Option<DeploymentRow> {
        let from_file = self.shadows().get(name).is_some_and(|e| e.came_from(file));
        if !from_file {
            return None;
        }
        self.stop_shadow(name, (cause, None), why).await
    }

    /// Shadows started from files that are no longer there.
    fn file_shadows_gone(&self, files: &[PathBuf]) -> Vec<String> {
        let shadows = self.shadows();
        let gone = (shadows.iter())
            .filter(|(_, e)| e.source.is_some() && !files.iter().any(|f| e.came_from(f)));
        gone.map(|(name, _)| name.clone()).collect()
    }
}

/// A shadow file's candidate as an upload to the live plugin's file would
/// be: that path, its manifest without `mode` (and without `name` where
/// that file's stem names it), fingerprinted as that file would be. What
/// promoting it writes.
fn as_live_file(mut c: Candidate, live_file: &Path) -> Result<(Candidate, String), String> {
    c.manifest.mode = None;
    c.manifest.name = (stem(live_file) != c.name).then(|| c.name.clone());
    let text = c.manifest.text()?;
    c.fingerprint = fingerprint(&c.sha256, &text);
    c.file = live_file.to_path_buf();
    Ok((c, text))
}
