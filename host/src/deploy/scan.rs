//! Bringing the running plugins in line with the plugin directory.

use super::Deployer;
use super::candidate::{Candidate, plugin_files, read_candidate};
use crate::store::{DeploymentResult, DeploymentRow, Trigger};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

impl Deployer {
    /// Deploy new and changed files, unload the plugins whose file is gone;
    /// then the same for shadow files. `force` retries files rejected
    /// before even if they did not change.
    pub async fn rescan(self: &Arc<Self>, force: bool, cause: Trigger) -> Vec<DeploymentRow> {
        let _serial = self.serial.lock().await;
        let files = plugin_files(&self.dir);
        let mut done = Vec::new();
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut shadows = Vec::new();
        for file in &files {
            let c = match read_candidate(file) {
                Ok(c) => c,
                Err((name, reason)) => {
                    let fp = format!("unreadable:{reason}");
                    if force || !self.rejected_as(file, &fp) {
                        let row = self.row(&name, file, cause);
                        done.push(self.reject(row, reason, Some(&fp)).await);
                    }
                    continue;
                }
            };
            if c.manifest.shadow() {
                shadows.push(c);
                continue;
            }
            if let Some(other) = names.get(&c.name) {
                let row = self.row(&c.name, file, cause);
                let reason = format!(
                    "{} already deploys a plugin named {}",
                    other.display(),
                    c.name
                );
                done.push(self.reject(row, reason, Some(&c.fingerprint)).await);
                continue;
            }
            names.insert(c.name.clone(), file.clone());
            if self.needs_deploy(&c, force) {
                done.push(self.deploy(c, cause, DeploymentResult::Accepted).await);
            }
        }
        // Files that were rejected and are gone are forgotten.
        self.rejected().retain(|f, _| files.contains(f));
        for (name, file) in self.gone(&files, &names) {
            let mut row = self.row(&name, &file, cause);
            row.reason = "its file was removed from the plugin directory".into();
            done.push(self.unload(row).await);
        }
        done.extend(self.sync_file_shadows(shadows, force, cause).await);
        done
    }

    /// The file was rejected before with this fingerprint.
    pub(super) fn rejected_as(&self, file: &PathBuf, fingerprint: &str) -> bool {
        self.rejected()
            .get(file)
            .is_some_and(|(fp, _)| fp == fingerprint)
    }

    /// Not what runs under its name already, and not a file rejected as it
    /// is now (unless forced).
    fn needs_deploy(&self, c: &Candidate, force: bool) -> bool {
        let unchanged = self
            .running()
            .get(&c.name)
            .is_some_and(|r| r.fingerprint == c.fingerprint);
        !unchanged && (force || !self.rejected_as(&c.file, &c.fingerprint))
    }

    /// Running plugins whose file is gone, or whose file now deploys another
    /// name.
    fn gone(&self, files: &[PathBuf], names: &BTreeMap<String, PathBuf>) -> Vec<(String, PathBuf)> {
        self.running()
            .iter()
            .filter(|(name, r)| {
                !files.contains(&r.file)
                    || names.values().any(|f| *f == r.file) && !names.contains_key(*name)
            })
            .map(|(n, r)| (n.clone(), r.file.clone()))
            .collect()
    }
}
