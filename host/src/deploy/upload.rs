//! Deployments through the API (PUT and DELETE /plugins/{name}): the same
//! checks and swap as a file dropped into the plugin directory, then the
//! file and its manifest are written there, so a restart (and the watcher)
//! find what runs.

use super::candidate::{
    Candidate, Manifest, check_name, fingerprint, manifest_path, sha256_hex, stem,
};
use super::{DeployError, Deployer};
use crate::plugin::PluginKind;
use crate::store::{DeploymentResult, DeploymentRow, Trigger};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A component sent to PUT /plugins/{name}.
pub struct Upload {
    pub name: String,
    pub bytes: Vec<u8>,
    /// The manifest keys given with it (`name` is ignored: the path names
    /// the plugin).
    pub manifest: Manifest,
    /// "token NAME from ADDRESS".
    pub actor: String,
}

/// Why an upload was not deployed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    BadName(String),
    #[error("{0}")]
    BadManifest(String),
    #[error("{file} already deploys the plugin {other}")]
    FileTaken { file: String, other: String },
    #[error("writing the plugin directory: {0}")]
    Io(String),
    /// Live and recorded, but its file could not be kept.
    #[error(
        "deployed and live, but writing it into the plugin directory failed (a restart would not run it): {0}"
    )]
    NotKept(String),
    #[error("the service is stopping")]
    Stopping,
    /// A bug (preparing panicked).
    #[error("{0}")]
    Internal(String),
    /// Refused by the checks; the attempt is recorded.
    #[error("{}", .0.reason)]
    Rejected(Box<DeploymentRow>),
}

impl Deployer {
    /// Check, swap in and persist an uploaded component.
    pub async fn deploy_upload(self: &Arc<Self>, up: Upload) -> Result<DeploymentRow, UploadError> {
        let _serial = self.serial.lock().await;
        let (candidate, manifest_text) = self.candidate(up)?;
        let file = candidate.file.clone();
        let staged = Staged::write(&file, &candidate.bytes, &manifest_text)?;
        let fingerprint = candidate.fingerprint.clone();
        let row = self
            .deploy(candidate, Trigger::Api, DeploymentResult::Accepted)
            .await;
        if row.result != DeploymentResult::Accepted {
            staged.discard();
            // Not a file in the directory: nothing for GET /plugins to list.
            self.rejected()
                .retain(|f, (fp, _)| !(*f == file && *fp == fingerprint));
            return Err(UploadError::Rejected(Box::new(row)));
        }
        staged.commit().map_err(UploadError::NotKept)?;
        Ok(row)
    }

    /// The candidate an upload makes (the caller holds `serial`), and its
    /// manifest's text.
    pub(super) fn candidate(&self, up: Upload) -> Result<(Candidate, String), UploadError> {
        check_name(&up.name).map_err(UploadError::BadName)?;
        if let Some(l) = &up.manifest.limits {
            l.check("limits").map_err(UploadError::BadManifest)?;
        }
        let file = self.file_for(&up.name)?;
        let manifest = Manifest {
            // The file's stem names the plugin unless it was deployed
            // under another name.
            name: (stem(&file) != up.name).then(|| up.name.clone()),
            ..up.manifest
        };
        let manifest_text = manifest.text().map_err(UploadError::BadManifest)?;
        let sha256 = sha256_hex(&up.bytes);
        let candidate = Candidate {
            fingerprint: fingerprint(&sha256, &manifest_text),
            file,
            name: up.name,
            manifest,
            bytes: up.bytes,
            sha256,
            actor: Some(up.actor),
        };
        Ok((candidate, manifest_text))
    }

    /// Unload a plugin and remove its file (and manifest) from the
    /// directory. The last analytics plugin stays: the service cannot
    /// start without one.
    pub async fn remove(
        self: &Arc<Self>,
        name: &str,
        actor: String,
    ) -> Result<DeploymentRow, DeployError> {
        let _serial = self.serial.lock().await;
        let (file, stage) = match self.running().get(name) {
            Some(r) => (r.file.clone(), r.stage),
            None => return Err(DeployError::NotLoaded(name.to_string())),
        };
        let analytics = self
            .running()
            .values()
            .filter(|r| r.stage == PluginKind::Analytics)
            .count();
        if stage == PluginKind::Analytics && analytics == 1 {
            return Err(DeployError::Refused(format!(
                "{name} is the only analytics plugin; the service needs one (deploy another first)"
            )));
        }
        for f in [manifest_path(&file), file.clone()] {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(DeployError::Refused(format!(
                        "removing {}: {e}",
                        f.display()
                    )));
                }
            }
        }
        let mut row = self.row(name, &file, Trigger::Api);
        row.reason = "removed through the API".into();
        row.actor = Some(actor);
        Ok(self.unload(row).await)
    }

    /// The file an upload of `name` goes to: the running plugin's, else
    /// NAME.wasm, unless that file deploys another plugin (or runs as the
    /// shadow of one).
    fn file_for(&self, name: &str) -> Result<PathBuf, UploadError> {
        let file = self.dir.join(format!("{name}.wasm"));
        let live = {
            let running = self.running();
            if let Some(r) = running.get(name) {
                return Ok(r.file.clone());
            }
            let other = running.iter().find(|(_, r)| r.file == file);
            other.map(|(other, _)| other.clone())
        };
        // One map locked at a time.
        let taken = live.or_else(|| {
            let shadows = self.shadows();
            let shadow = shadows.iter().find(|(_, e)| e.came_from(&file));
            shadow.map(|(other, _)| format!("{other} (as its shadow)"))
        });
        match taken {
            Some(other) => Err(UploadError::FileTaken {
                file: file.display().to_string(),
                other,
            }),
            None => Ok(file),
        }
    }
}

/// The upload written beside its destination under hidden names (the
/// watcher ignores them), renamed into place once it is live.
pub(super) struct Staged {
    wasm: (PathBuf, PathBuf),
    manifest: (PathBuf, PathBuf),
    has_manifest: bool,
}

impl Staged {
    pub(super) fn write(file: &Path, bytes: &[u8], manifest: &str) -> Result<Staged, UploadError> {
        let hidden = |p: &Path| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            p.with_file_name(format!(".{name}.upload"))
        };
        let mpath = manifest_path(file);
        let staged = Staged {
            wasm: (hidden(file), file.to_path_buf()),
            manifest: (hidden(&mpath), mpath),
            has_manifest: !manifest.is_empty(),
        };
        let io = |e: std::io::Error| UploadError::Io(e.to_string());
        std::fs::write(&staged.wasm.0, bytes).map_err(io)?;
        if staged.has_manifest {
            std::fs::write(&staged.manifest.0, manifest).map_err(io)?;
        }
        Ok(staged)
    }

    /// Manifest first: the watcher then sees the new file with it.
    pub(super) fn commit(self) -> Result<(), String> {
        let (tmp, dest) = &self.manifest;
        if self.has_manifest {
            std::fs::rename(tmp, dest).map_err(|e| e.to_string())?;
        } else if let Err(e) = std::fs::remove_file(dest)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(format!("removing {}: {e}", dest.display()));
        }
        std::fs::rename(&self.wasm.0, &self.wasm.1).map_err(|e| e.to_string())
    }

    fn discard(self) {
        let _ = std::fs::remove_file(&self.wasm.0);
        let _ = std::fs::remove_file(&self.manifest.0);
    }
}
