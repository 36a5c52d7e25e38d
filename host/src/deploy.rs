//! Hot deployment: the plugin directory and the config file are watched;
//! changed plugins are compiled, instantiated, configured and tried against
//! the running version's state off the processing path, then swapped in
//! between two batches (the processor moves the state across). A file that
//! fails any step is rejected and the running version stays. Every attempt
//! is recorded (`plugin_deployments`), counted (`plugin_deployments_total`)
//! and shown by GET /plugins; accepted versions are archived by hash for
//! rollback and for restarts while the directory holds a rejected file.
//!
//! Directory layout: `NAME.wasm`, optionally with `NAME.yaml`:
//!
//! ```yaml
//! name: custom-rules              # default: the file name without .wasm
//! stage: correlation              # checked against the component's world
//! order: 20                       # within the stage, lower first (default 100)
//! config: plugin_config.custom_rules  # section given to configure (default: the stage's)
//! limits: {deadline_ms: 200, memory_mb: 64}  # default: plugins.limits
//! ```

use crate::config::Config;
use crate::pipeline::{Control, Slot, StateCache, Swapped};
use crate::plugin::{Clock, Limits, LoadedComponent, Plugin, PluginEngine, PluginKind};
use crate::store::{DeploymentRow, Store, now_ms};
use crate::telemetry::Metrics;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// A plugin's manifest (`NAME.yaml` next to `NAME.wasm`); every key is
/// optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: Option<String>,
    pub stage: Option<PluginKind>,
    pub order: Option<i32>,
    pub config: Option<String>,
    pub limits: Option<Limits>,
}

/// Position of a plugin without a manifest `order`.
pub const DEFAULT_ORDER: i32 = 100;

/// A plugin file as found in the directory (or taken from the archive).
struct Candidate {
    file: PathBuf,
    name: String,
    manifest: Manifest,
    bytes: Vec<u8>,
    sha256: String,
    /// Hash of the file and of its manifest: a change of either redeploys.
    fingerprint: String,
}

/// What runs under a name.
#[derive(Clone)]
struct Running {
    file: PathBuf,
    fingerprint: String,
    sha256: String,
    manifest: Manifest,
    stage: PluginKind,
    section: String,
    section_json: String,
    limits: Limits,
    loaded: LoadedComponent,
}

/// Why an API call on deployments failed: (HTTP status, message).
pub type DeployError = (u16, String);

pub struct Deployer {
    engine: Arc<PluginEngine>,
    store: Store,
    metrics: Arc<Metrics>,
    clock: Clock,
    states: StateCache,
    dir: PathBuf,
    archive: PathBuf,
    config_path: Option<PathBuf>,
    config: RwLock<Arc<Config>>,
    control: mpsc::Sender<Control>,
    running: Mutex<BTreeMap<String, Running>>,
    /// Files whose last attempt was rejected, with that attempt; not tried
    /// again until they change (or POST /plugins/reload).
    rejected: Mutex<BTreeMap<PathBuf, (String, DeploymentRow)>>,
    /// The last config file change that was refused, until one is accepted.
    config_error: Mutex<Option<DeploymentRow>>,
    /// One deployment at a time.
    serial: tokio::sync::Mutex<()>,
    last_id: AtomicI64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// The manifest path of a plugin file.
fn manifest_path(wasm: &Path) -> PathBuf {
    wasm.with_extension("yaml")
}

fn stem(wasm: &Path) -> String {
    wasm.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Plugin files in a directory: `*.wasm`, not hidden, sorted.
fn plugin_files(dir: &Path) -> Vec<PathBuf> {
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

fn is_plugin_file(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "wasm")
        && !p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Read a plugin file and its manifest. Errors: (name, reason).
fn read_candidate(file: &Path) -> Result<Candidate, (String, String)> {
    let stem = stem(file);
    let mpath = manifest_path(file);
    let (manifest, manifest_text) = match std::fs::read_to_string(&mpath) {
        Ok(text) => match serde_yaml::from_str::<Option<Manifest>>(&text) {
            Ok(m) => (m.unwrap_or_default(), text),
            Err(e) => {
                return Err((stem, format!("manifest {}: {e}", mpath.display())));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Manifest::default(), String::new()),
        Err(e) => return Err((stem, format!("reading {}: {e}", mpath.display()))),
    };
    let name = manifest.name.clone().unwrap_or(stem);
    if !valid_name(&name) {
        return Err((
            name.clone(),
            format!("plugin name '{name}': use 1 to 64 letters, digits, '-', '_' or '.'"),
        ));
    }
    if let Some(l) = &manifest.limits {
        l.check("manifest limits").map_err(|e| (name.clone(), e))?;
    }
    let bytes = std::fs::read(file)
        .map_err(|e| (name.clone(), format!("reading {}: {e}", file.display())))?;
    let sha256 = sha256_hex(&bytes);
    let fingerprint = format!("{sha256}:{}", sha256_hex(manifest_text.as_bytes()));
    Ok(Candidate {
        file: file.to_path_buf(),
        name,
        manifest,
        bytes,
        sha256,
        fingerprint,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Deployer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Arc<PluginEngine>,
        store: Store,
        metrics: Arc<Metrics>,
        clock: Clock,
        states: StateCache,
        config: Arc<Config>,
        config_path: Option<PathBuf>,
        control: mpsc::Sender<Control>,
    ) -> anyhow::Result<Arc<Deployer>> {
        let dir = config.plugins.directory.clone();
        let archive = config.plugins.archive_dir.clone();
        std::fs::create_dir_all(&archive)?;
        Ok(Arc::new(Deployer {
            engine,
            store,
            metrics,
            clock,
            states,
            dir,
            archive,
            config_path: config_path.map(|p| std::fs::canonicalize(&p).unwrap_or(p)),
            config: RwLock::new(config),
            control,
            running: Mutex::new(BTreeMap::new()),
            rejected: Mutex::new(BTreeMap::new()),
            config_error: Mutex::new(None),
            serial: tokio::sync::Mutex::new(()),
            last_id: AtomicI64::new(0),
        }))
    }

    fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }

    fn next_id(&self) -> i64 {
        let now = now_ms() * 1000;
        let prev = self
            .last_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |prev| {
                Some(now.max(prev + 1))
            })
            .expect("closure always returns Some");
        now.max(prev + 1)
    }

    fn row(&self, name: &str, file: &Path, cause: &str) -> DeploymentRow {
        DeploymentRow {
            id: self.next_id(),
            plugin: name.to_string(),
            at: now_ms(),
            stage: None,
            file: file.display().to_string(),
            sha256: None,
            version: None,
            result: String::new(),
            reason: String::new(),
            trigger: cause.to_string(),
            after_seq: None,
            compile_ms: None,
            pause_us: None,
        }
    }

    /// Count, log and persist a deployment attempt.
    async fn record(&self, row: &DeploymentRow) {
        self.metrics
            .plugin_deployments
            .with_label_values(&[&row.plugin, &row.result])
            .inc();
        if row.result == "rejected" {
            tracing::warn!(plugin = %row.plugin, file = %row.file, cause = %row.trigger, "plugin deployment rejected: {}", row.reason);
        } else {
            tracing::info!(plugin = %row.plugin, file = %row.file, cause = %row.trigger, result = %row.result,
                version = row.version.as_deref().unwrap_or(""), pause_us = row.pause_us.unwrap_or(0), "plugin deployment: {}", row.reason);
        }
        if let Err(e) = self.store.insert_deployment(row).await {
            tracing::warn!("recording the deployment failed: {e:#}");
        }
    }

    async fn reject(
        &self,
        mut row: DeploymentRow,
        reason: String,
        fingerprint: Option<&str>,
    ) -> DeploymentRow {
        row.result = "rejected".into();
        row.reason = reason;
        // Shown by GET /plugins before it is counted.
        if let Some(fp) = fingerprint {
            self.rejected
                .lock()
                .expect("rejected lock")
                .insert(PathBuf::from(&row.file), (fp.to_string(), row.clone()));
        }
        self.record(&row).await;
        row
    }

    /// Compile, check, instantiate, configure, and try the running
    /// version's last checkpoint: everything that can fail, off the
    /// processing path.
    fn prepare(&self, c: &Candidate, config: &Config) -> Result<(Slot, Running, Duration), String> {
        let started = Instant::now();
        let loaded = self
            .engine
            .load_bytes(&c.bytes, &c.file.display().to_string())
            .map_err(|e| e.to_string())?;
        let compile = started.elapsed();
        let kind = loaded.kind;
        if let Some(stage) = c.manifest.stage.filter(|s| *s != kind) {
            return Err(format!(
                "the manifest says stage {stage}, but the component is a {kind} plugin"
            ));
        }
        if let Some(r) = self.running.lock().expect("running lock").get(&c.name)
            && r.stage != kind
        {
            return Err(format!(
                "{} runs as a {} plugin; this file is a {kind} plugin",
                c.name, r.stage
            ));
        }
        let limits = c.manifest.limits.unwrap_or(config.plugins.limits);
        let mut plugin = Plugin::new(
            self.engine.clone(),
            loaded.clone(),
            limits,
            self.clock.clone(),
        )
        .map_err(|e| e.to_string())?;
        let name: Arc<str> = Arc::from(c.name.as_str());
        plugin.set_name(name.clone());
        let section = c
            .manifest
            .config
            .clone()
            .unwrap_or_else(|| crate::plugin_cli::config_section(kind).to_string());
        let section_json = config.section_json(&section);
        plugin
            .configure(&section_json)
            .map_err(|e| format!("configure with the `{section}` section: {e}"))?;
        let saved = self
            .states
            .lock()
            .expect("state cache")
            .get(&c.name)
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
            plugin,
            order: c.manifest.order.unwrap_or(DEFAULT_ORDER),
            file: c.file.display().to_string(),
            section,
            section_json,
            loaded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        Ok((slot, running, compile))
    }

    /// Keep an accepted version's bytes by hash.
    fn archive(&self, sha256: &str, bytes: &[u8]) {
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

    /// Drop a replaced instance away from the processing path and the
    /// runtime (unmapping a large memory takes a moment).
    fn drop_later(old: Option<Box<Slot>>) {
        if let Some(old) = old {
            tokio::task::spawn_blocking(move || drop(old));
        }
    }

    /// Prepare a candidate off the processing path, then have the processor
    /// swap it in between batches.
    async fn deploy(self: &Arc<Self>, c: Candidate, cause: &str, ok_result: &str) -> DeploymentRow {
        let row = self.row(&c.name, &c.file, cause);
        let config = self.config();
        let this = self.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            let r = this.prepare(&c, &config);
            (r, c)
        })
        .await;
        let (prepared, c) = match prepared {
            Ok(v) => v,
            Err(e) => {
                return self
                    .reject(row, format!("preparing panicked: {e}"), None)
                    .await;
            }
        };
        let mut row = DeploymentRow {
            sha256: Some(c.sha256.clone()),
            ..row
        };
        let (slot, running, compile) = match prepared {
            Ok(p) => p,
            Err(reason) => return self.reject(row, reason, Some(&c.fingerprint)).await,
        };
        row.stage = Some(running.stage.to_string());
        row.version = Some(slot.plugin.metadata().version.clone());
        row.compile_ms = Some(ms(compile));
        let replaced = self
            .running
            .lock()
            .expect("running lock")
            .get(&c.name)
            .map(|r| r.sha256.clone());
        let (tx, rx) = oneshot::channel();
        if self
            .control
            .send(Control::Install {
                slot: Box::new(slot),
                reply: tx,
            })
            .await
            .is_err()
        {
            return self
                .reject(row, "the service is stopping".into(), None)
                .await;
        }
        match rx.await {
            Ok(Ok(Swapped {
                after_seq,
                pause,
                fresh_start,
                old,
            })) => {
                Self::drop_later(old);
                self.archive(&c.sha256, &c.bytes);
                row.result = ok_result.to_string();
                row.after_seq = Some(after_seq as i64);
                row.pause_us = Some(pause.as_micros() as i64);
                let short = |sha: &str| sha[..12.min(sha.len())].to_string();
                row.reason = match (replaced, fresh_start) {
                    (None, _) => "new plugin".into(),
                    (Some(sha), None) => format!("replaced {}; state moved across", short(&sha)),
                    (Some(sha), Some(why)) => {
                        format!("replaced {}; started fresh: {why}", short(&sha))
                    }
                };
                self.running
                    .lock()
                    .expect("running lock")
                    .insert(c.name.clone(), running);
                self.rejected.lock().expect("rejected lock").remove(&c.file);
                self.record(&row).await;
                row
            }
            Ok(Err((reason, slot))) => {
                Self::drop_later(Some(slot));
                self.reject(row, reason, Some(&c.fingerprint)).await
            }
            Err(_) => {
                self.reject(row, "the service is stopping".into(), None)
                    .await
            }
        }
    }

    /// Unload a plugin after the batch in flight.
    async fn unload(&self, name: &str, file: &Path, cause: &str) -> DeploymentRow {
        let mut row = self.row(name, file, cause);
        let (tx, rx) = oneshot::channel();
        let sent = self
            .control
            .send(Control::Remove {
                name: name.to_string(),
                reply: tx,
            })
            .await;
        let swapped = if sent.is_ok() {
            rx.await.ok().flatten()
        } else {
            None
        };
        self.running.lock().expect("running lock").remove(name);
        row.result = "unloaded".into();
        row.reason = "its file was removed from the plugin directory".into();
        if let Some(s) = swapped {
            row.after_seq = Some(s.after_seq as i64);
            row.pause_us = Some(s.pause.as_micros() as i64);
            if let Some(old) = &s.old {
                row.version = Some(old.plugin.metadata().version.clone());
                row.sha256 = Some(old.plugin.loaded().hash.clone());
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
        let config = self.config();
        let mut slots: Vec<Slot> = Vec::new();
        let mut names: BTreeSet<String> = BTreeSet::new();
        for file in plugin_files(&self.dir) {
            let c = match read_candidate(&file) {
                Ok(c) => c,
                Err((name, reason)) => {
                    let row = self.row(&name, &file, "startup");
                    self.reject(row, reason, None).await;
                    continue;
                }
            };
            if !names.insert(c.name.clone()) {
                let row = self.row(&c.name, &file, "startup");
                let reason = format!("another file already deploys a plugin named {}", c.name);
                self.reject(row, reason, Some(&c.fingerprint)).await;
                continue;
            }
            let last = self
                .store
                .deployments(&c.name, 200)
                .await?
                .into_iter()
                .find(|d| d.result == "accepted" || d.result == "rolled_back");
            let this = self.clone();
            let cfg = config.clone();
            let (prepared, c) =
                tokio::task::spawn_blocking(move || (this.prepare(&c, &cfg), c)).await?;
            let mut row = self.row(&c.name, &file, "startup");
            row.sha256 = Some(c.sha256.clone());
            let (prepared, c) = match prepared {
                Ok(p) => (p, c),
                Err(reason) => {
                    self.reject(row.clone(), reason.clone(), Some(&c.fingerprint))
                        .await;
                    // Recorded; not recorded again below.
                    row.result = "rejected".into();
                    // Fall back to the last accepted version, if archived.
                    let Some(fallback) = last
                        .as_ref()
                        .and_then(|d| d.sha256.clone())
                        .filter(|sha| *sha != c.sha256)
                        .and_then(|sha| {
                            std::fs::read(self.archive.join(format!("{sha}.wasm"))).ok()
                        })
                    else {
                        continue;
                    };
                    let fc = Candidate {
                        sha256: sha256_hex(&fallback),
                        bytes: fallback,
                        ..c
                    };
                    let this = self.clone();
                    let cfg = config.clone();
                    let (p, fc) =
                        tokio::task::spawn_blocking(move || (this.prepare(&fc, &cfg), fc)).await?;
                    let mut row = self.row(&fc.name, &file, "startup");
                    row.sha256 = Some(fc.sha256.clone());
                    match p {
                        Ok(p) => {
                            row.reason = format!(
                                "{} was rejected ({reason}); running the last accepted version from the archive",
                                file.display()
                            );
                            row.result = "accepted".into();
                            row.stage = Some(p.1.stage.to_string());
                            row.version = Some(p.0.plugin.metadata().version.clone());
                            self.record(&row).await;
                            (p, fc)
                        }
                        Err(e) => {
                            self.reject(row, format!("the archived version failed too: {e}"), None)
                                .await;
                            continue;
                        }
                    }
                }
            };
            let (slot, running, compile) = prepared;
            if last.and_then(|d| d.sha256) != Some(c.sha256.clone()) && row.result.is_empty() {
                row.result = "accepted".into();
                row.reason = "loaded at startup".into();
                row.stage = Some(running.stage.to_string());
                row.version = Some(slot.plugin.metadata().version.clone());
                row.compile_ms = Some(ms(compile));
                self.record(&row).await;
            }
            self.archive(&c.sha256, &c.bytes);
            tracing::info!(plugin = %c.name, file = %file.display(), stage = %running.stage,
                version = %slot.plugin.metadata().version, sha256 = %&c.sha256[..12], "plugin loaded");
            self.running
                .lock()
                .expect("running lock")
                .insert(c.name.clone(), running);
            slots.push(slot);
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

    /// Bring the running plugins in line with the directory: deploy new and
    /// changed files, unload the plugins whose file is gone. `force` retries
    /// files rejected before even if they did not change.
    pub async fn rescan(self: &Arc<Self>, force: bool, cause: &str) -> Vec<DeploymentRow> {
        let _serial = self.serial.lock().await;
        let files = plugin_files(&self.dir);
        let mut done = Vec::new();
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in &files {
            let c = match read_candidate(file) {
                Ok(c) => c,
                Err((name, reason)) => {
                    let fp = format!("unreadable:{reason}");
                    let seen = self
                        .rejected
                        .lock()
                        .expect("rejected lock")
                        .get(file)
                        .is_some_and(|(f, _)| *f == fp);
                    if force || !seen {
                        let row = self.row(&name, file, cause);
                        done.push(self.reject(row, reason, Some(&fp)).await);
                    }
                    continue;
                }
            };
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
            let unchanged = self
                .running
                .lock()
                .expect("running lock")
                .get(&c.name)
                .is_some_and(|r| r.fingerprint == c.fingerprint);
            let rejected_before = self
                .rejected
                .lock()
                .expect("rejected lock")
                .get(file)
                .is_some_and(|(fp, _)| *fp == c.fingerprint);
            if unchanged || (rejected_before && !force) {
                continue;
            }
            done.push(self.deploy(c, cause, "accepted").await);
        }
        // Files that were rejected and are gone are forgotten.
        self.rejected
            .lock()
            .expect("rejected lock")
            .retain(|f, _| files.contains(f));
        let gone: Vec<(String, PathBuf)> = self
            .running
            .lock()
            .expect("running lock")
            .iter()
            .filter(|(name, r)| {
                // Its file is gone, or that file now deploys another name.
                !files.contains(&r.file)
                    || names.values().any(|f| *f == r.file) && !names.contains_key(*name)
            })
            .map(|(n, r)| (n.clone(), r.file.clone()))
            .collect();
        for (name, file) in gone {
            done.push(self.unload(&name, &file, cause).await);
        }
        done
    }

    /// Re-read the config file; plugins whose section changed are
    /// reconfigured (tried on a scratch instance first). A config that does
    /// not load, or a section a plugin refuses, is rejected and the old one
    /// stays.
    pub async fn reload_config(self: &Arc<Self>, cause: &str) -> Vec<DeploymentRow> {
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
                let row = self
                    .reject(row, format!("{e:#}; the previous config stays"), None)
                    .await;
                *self.config_error.lock().expect("config error lock") = Some(row.clone());
                return vec![row];
            }
        };
        *self.config_error.lock().expect("config error lock") = None;
        let running: Vec<(String, Running)> = self
            .running
            .lock()
            .expect("running lock")
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        let mut done = Vec::new();
        for (name, r) in running {
            let json = new.section_json(&r.section);
            if json == r.section_json {
                continue;
            }
            let mut row = self.row(&name, &path, cause);
            row.stage = Some(r.stage.to_string());
            row.sha256 = Some(r.sha256.clone());
            // Try it on a scratch instance of the same component.
            let (engine, clock, trial_json) =
                (self.engine.clone(), self.clock.clone(), json.clone());
            let loaded = r.loaded.clone();
            let trial = tokio::task::spawn_blocking(move || -> Result<String, String> {
                let mut p =
                    Plugin::new(engine, loaded, r.limits, clock).map_err(|e| e.to_string())?;
                p.configure(&trial_json).map_err(|e| e.to_string())?;
                Ok(p.metadata().version.clone())
            })
            .await
            .unwrap_or_else(|e| Err(format!("trying the section panicked: {e}")));
            let version = match trial {
                Ok(v) => v,
                Err(e) => {
                    let reason = format!(
                        "the `{}` section was refused: {e}; the old settings stay",
                        r.section
                    );
                    done.push(self.reject(row, reason, None).await);
                    continue;
                }
            };
            row.version = Some(version);
            let (tx, rx) = oneshot::channel();
            let sent = self
                .control
                .send(Control::Configure {
                    name: name.clone(),
                    json: json.clone(),
                    reply: tx,
                })
                .await;
            let applied = match sent {
                Ok(()) => rx
                    .await
                    .unwrap_or_else(|_| Err("the service is stopping".into())),
                Err(_) => Err("the service is stopping".into()),
            };
            match applied {
                Ok(after_seq) => {
                    row.result = "reconfigured".into();
                    row.reason = format!("the `{}` section changed", r.section);
                    row.after_seq = Some(after_seq as i64);
                    if let Some(run) = self.running.lock().expect("running lock").get_mut(&name) {
                        run.section_json = json;
                    }
                    self.record(&row).await;
                    done.push(row);
                }
                Err(e) => done.push(self.reject(row, e, None).await),
            }
        }
        *self.config.write().expect("config lock") = new;
        done
    }

    /// Return a plugin to the version it ran before the current one. The
    /// file in the directory is replaced by that version too, so a restart
    /// keeps it.
    pub async fn rollback(self: &Arc<Self>, name: &str) -> Result<DeploymentRow, DeployError> {
        let _serial = self.serial.lock().await;
        let Some(current) = self
            .running
            .lock()
            .expect("running lock")
            .get(name)
            .cloned()
        else {
            return Err((404, format!("no plugin named {name} is loaded")));
        };
        let history = self
            .store
            .deployments(name, 1000)
            .await
            .map_err(|e| (503, format!("reading the deployment history: {e:#}")))?;
        let Some(previous) = history
            .iter()
            .filter(|d| d.result == "accepted" || d.result == "rolled_back")
            .filter_map(|d| d.sha256.clone())
            .find(|sha| *sha != current.sha256)
        else {
            return Err((
                409,
                format!("{name} has no earlier version to roll back to"),
            ));
        };
        let bytes = std::fs::read(self.archive.join(format!("{previous}.wasm"))).map_err(|e| {
            (
                409,
                format!("version {previous} is not in the archive ({e})"),
            )
        })?;
        let manifest_text =
            std::fs::read_to_string(manifest_path(&current.file)).unwrap_or_default();
        let c = Candidate {
            file: current.file.clone(),
            name: name.to_string(),
            manifest: current.manifest.clone(),
            sha256: previous.clone(),
            fingerprint: format!("{previous}:{}", sha256_hex(manifest_text.as_bytes())),
            bytes,
        };
        let bytes = c.bytes.clone();
        let row = self.deploy(c, "rollback", "rolled_back").await;
        if row.result != "rolled_back" {
            return Err((422, format!("rollback refused: {}", row.reason)));
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

    /// A plugin's deployments, newest first.
    pub async fn history(&self, name: &str, limit: i64) -> anyhow::Result<Vec<DeploymentRow>> {
        self.store.deployments(name, limit).await
    }

    /// The first loaded component of a stage (for scratch instances).
    pub fn component(&self, kind: PluginKind) -> Option<(LoadedComponent, Limits)> {
        let running = self.running.lock().expect("running lock");
        let mut of_kind: Vec<&Running> = running.values().filter(|r| r.stage == kind).collect();
        of_kind.sort_by_key(|r| r.manifest.order.unwrap_or(DEFAULT_ORDER));
        of_kind.first().map(|r| (r.loaded.clone(), r.limits))
    }

    /// Rejected files still in the directory, and a refused config change.
    pub fn problems(&self) -> serde_json::Value {
        let rejected: Vec<DeploymentRow> = self
            .rejected
            .lock()
            .expect("rejected lock")
            .values()
            .map(|(_, r)| r.clone())
            .collect();
        serde_json::json!({
            "rejected": rejected,
            "config": self.config_error.lock().expect("config error lock").clone(),
        })
    }

    pub fn directory(&self) -> &Path {
        &self.dir
    }

    /// Watch the plugin directory and the config file; deploy changes after
    /// `plugins.debounce_ms` of quiet.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<()> {
        use notify::Watcher;
        #[derive(Clone, Copy)]
        enum Change {
            Plugins,
            Config,
        }
        let dir = std::fs::canonicalize(&self.dir)?;
        let config_path = self.config_path.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
        let watch_dir = dir.clone();
        let watch_config = config_path.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(ev) = res else { return };
                if ev.kind.is_access() {
                    return;
                }
                for p in &ev.paths {
                    let in_dir = p.parent() == Some(watch_dir.as_path());
                    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
                    if in_dir
                        && (ext == "wasm" || ext == "yaml")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    {
                        let _ = tx.send(Change::Plugins);
                    }
                    if watch_config.as_deref() == Some(p.as_path()) {
                        let _ = tx.send(Change::Config);
                    }
                }
            })?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        if let Some(parent) = config_path.as_deref().and_then(Path::parent)
            && parent != dir
        {
            watcher.watch(parent, notify::RecursiveMode::NonRecursive)?;
        }
        let debounce = Duration::from_millis(self.config().plugins.debounce_ms);
        let this = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher;
            while let Some(first) = rx.recv().await {
                let (mut plugins, mut config) = (false, false);
                let mut note = |c: Change| match c {
                    Change::Plugins => plugins = true,
                    Change::Config => config = true,
                };
                note(first);
                // Until the files have been quiet for the debounce time.
                loop {
                    match tokio::time::timeout(debounce, rx.recv()).await {
                        Ok(Some(c)) => note(c),
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                if config {
                    this.reload_config("config").await;
                }
                if plugins {
                    this.rescan(false, "watch").await;
                }
            }
        });
        tracing::info!(directory = %dir.display(), config = ?config_path, "watching plugins and config for changes");
        Ok(())
    }
}
