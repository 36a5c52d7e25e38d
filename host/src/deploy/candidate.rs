//! Plugin files as found in the directory: `NAME.wasm` with an optional
//! `NAME.yaml` manifest, read, named and fingerprinted.

use crate::plugin::{Limits, PluginKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A plugin's manifest (`NAME.yaml` next to `NAME.wasm`); every key is
/// optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<PluginKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// `shadow`: run beside the live plugin of its name (another file),
    /// acting on nothing, until promoted or its file goes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
}

/// How a plugin is deployed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// It acts: its findings and requests are the service's.
    #[default]
    Live,
    /// Beside the live version of its name, compared, acting on nothing.
    Shadow,
}

impl Manifest {
    /// Whether it deploys a shadow.
    pub(super) fn shadow(&self) -> bool {
        self.mode == Some(Mode::Shadow)
    }

    /// Its text as written beside the component (nothing for no keys).
    pub(super) fn text(&self) -> Result<String, String> {
        if *self == Manifest::default() {
            return Ok(String::new());
        }
        serde_norway::to_string(self).map_err(|e| e.to_string())
    }
}

/// Position of a plugin without a manifest `order`.
pub const DEFAULT_ORDER: i32 = 100;

/// A plugin file as found in the directory (or taken from the archive).
pub(super) struct Candidate {
    pub(super) file: PathBuf,
    pub(super) name: String,
    pub(super) manifest: Manifest,
    pub(super) bytes: Vec<u8>,
    pub(super) sha256: String,
    /// Hash of the file and of its manifest: a change of either redeploys.
    pub(super) fingerprint: String,
    /// Who sent it, when it came through the API.
    pub(super) actor: Option<String>,
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A plugin file's fingerprint: its component's hash and its manifest's.
pub(super) fn fingerprint(sha256: &str, manifest_text: &str) -> String {
    format!("{sha256}:{}", sha256_hex(manifest_text.as_bytes()))
}

/// Names the API's own paths take (`/plugins/backtest`,
/// `/plugins/reload`): a plugin of that name could not be managed there.
const RESERVED_NAMES: [&str; 2] = ["backtest", "reload"];

/// 1 to 64 letters, digits, '-', '_' or '.', not starting with '.' (a
/// hidden file is not a plugin file), not reserved; the error says which.
pub fn check_name(name: &str) -> Result<(), String> {
    if !crate::util::names::is_plain(name) || name.starts_with('.') {
        return Err(format!(
            "plugin name '{name}': use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        ));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(format!(
            "plugin name '{name}' is reserved (the API's /plugins/{name}); use another, e.g. with `name:` in the manifest"
        ));
    }
    Ok(())
}

/// The manifest path of a plugin file.
pub(super) fn manifest_path(wasm: &Path) -> PathBuf {
    wasm.with_extension("yaml")
}

pub(super) fn stem(wasm: &Path) -> String {
    wasm.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Plugin files in a directory: `*.wasm`, not hidden, sorted.
pub(super) fn plugin_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_plugin_file(p) && p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

pub(super) fn is_plugin_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "wasm")
        && !p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Read a plugin file and its manifest. Errors: (name, reason).
pub(super) fn read_candidate(file: &Path) -> Result<Candidate, (String, String)> {
    let stem = stem(file);
    let mpath = manifest_path(file);
    let (manifest, manifest_text) = match std::fs::read_to_string(&mpath) {
        Ok(text) => match serde_norway::from_str::<Option<Manifest>>(&text) {
            Ok(m) => (m.unwrap_or_default(), text),
            Err(e) => {
                return Err((stem, format!("manifest {}: {e}", mpath.display())));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Manifest::default(), String::new()),
        Err(e) => return Err((stem, format!("reading {}: {e}", mpath.display()))),
    };
    let name = manifest.name.clone().unwrap_or(stem);
    check_name(&name).map_err(|e| (name.clone(), e))?;
    if let Some(l) = &manifest.limits {
        l.check("manifest limits").map_err(|e| (name.clone(), e))?;
    }
    let bytes = std::fs::read(file)
        .map_err(|e| (name.clone(), format!("reading {}: {e}", file.display())))?;
    let sha256 = sha256_hex(&bytes);
    let fingerprint = fingerprint(&sha256, &manifest_text);
    Ok(Candidate {
        file: file.to_path_buf(),
        name,
        manifest,
        bytes,
        sha256,
        fingerprint,
        actor: None,
    })
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_plain_visible_and_not_the_apis_own_paths() {
        assert!(check_name("custom-rules.v2").is_ok());
        for bad in ["", ".hidden", "a/b", "backtest", "reload"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let e = check_name("backtest").unwrap_err();
        assert!(e.contains("reserved"), "{e}");
    }
}
