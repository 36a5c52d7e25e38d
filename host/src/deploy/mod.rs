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
//! mode: shadow                    # beside the live plugin `name`, acting on nothing
//! ```

mod archive;
mod backtest;
mod candidate;
mod file_shadow;
mod history;
mod prepare;
mod quarantine;
mod reconfigure;
mod scan;
mod shadow;
mod swap;
mod upload;
mod watch;

pub use backtest::BacktestCandidate;
pub use candidate::{DEFAULT_ORDER, Manifest, Mode, check_name};
pub use upload::{Upload, UploadError};

use crate::config::Config;
use crate::pipeline::{Control, StateCache};
use crate::plugin::{Clock, Limits, LoadedComponent, PluginEngine, PluginKind};
use crate::store::{DeploymentRow, Store, now_ms};
use crate::telemetry::Metrics;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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

impl Running {
    /// Its position within its stage.
    fn order(&self) -> i32 {
        self.manifest.order.unwrap_or(DEFAULT_ORDER)
    }
}

/// Why a rollback failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no plugin named {0} is loaded")]
    NotLoaded(String),
    #[error("{0} has no earlier version to roll back to")]
    NoEarlierVersion(String),
    #[error("version {0} is not in the archive")]
    NotArchived(String),
    #[error("rollback refused: {0}")]
    Refused(String),
    #[error("reading the deployment history: {0}")]
    Store(String),
    #[error("{0} has no shadow")]
    NoShadow(String),
    #[error("the service is stopping")]
    Stopping,
}

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
    /// The last quarantine of each plugin, until a new version of it is
    /// deployed.
    quarantined: Mutex<BTreeMap<String, DeploymentRow>>,
    /// Candidates running in the shadow of the live plugin of their name.
    shadows: Mutex<BTreeMap<String, shadow::ShadowEntry>>,
    /// One deployment at a time.
    serial: tokio::sync::Mutex<()>,
    /// One backtest at a time: it takes a core for as long as it runs.
    backtests: Arc<tokio::sync::Semaphore>,
    last_id: AtomicI64,
}

/// A hash's first 12 digits, as messages name a version.
fn short(sha: &str) -> &str {
    &sha[..12.min(sha.len())]
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
            quarantined: Mutex::new(BTreeMap::new()),
            shadows: Mutex::new(BTreeMap::new()),
            serial: tokio::sync::Mutex::new(()),
            backtests: Arc::new(tokio::sync::Semaphore::new(1)),
            last_id: AtomicI64::new(0),
        }))
    }

    /// Ask the processor for a change between batches and wait for its
    /// answer; `None` when it has stopped (the service is stopping).
    async fn ask<T>(&self, control: impl FnOnce(oneshot::Sender<T>) -> Control) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.control.send(control(tx)).await.ok()?;
        rx.await.ok()
    }

    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What runs, by name. (A panic while a lock was held leaves plain data
    /// behind: the maps stay usable.)
    fn running(&self) -> MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rejected files still in the directory: (fingerprint, attempt).
    fn rejected(&self) -> MutexGuard<'_, BTreeMap<PathBuf, (String, DeploymentRow)>> {
        self.rejected.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shadows(&self) -> MutexGuard<'_, BTreeMap<String, shadow::ShadowEntry>> {
        self.shadows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn quarantined(&self) -> MutexGuard<'_, BTreeMap<String, DeploymentRow>> {
        self.quarantined.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn config_error(&self) -> MutexGuard<'_, Option<DeploymentRow>> {
        self.config_error.lock().unwrap_or_else(|e| e.into_inner())
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

    /// A plugin's deployments, newest first.
    pub async fn history(&self, name: &str, limit: i64) -> anyhow::Result<Vec<DeploymentRow>> {
        self.store.deployments(name, limit).await
    }

    /// The first loaded component of a stage (for scratch instances).
    pub fn component(&self, kind: PluginKind) -> Option<(LoadedComponent, Limits)> {
        let name = self.first_of(kind)?;
        let running = self.running();
        running.get(&name).map(|r| (r.loaded.clone(), r.limits))
    }

    /// The name of the first live plugin of a stage (by order, then name).
    fn first_of(&self, kind: PluginKind) -> Option<String> {
        let running = self.running();
        let of_kind = running.iter().filter(|(_, r)| r.stage == kind);
        of_kind
            .min_by_key(|(n, r)| (r.order(), *n))
            .map(|(n, _)| n.clone())
    }

    /// Rejected files still in the directory, and a refused config change.
    pub fn problems(&self) -> Problems {
        Problems {
            rejected: self.rejected().values().map(|(_, r)| r.clone()).collect(),
            config: self.config_error().clone(),
            quarantined: self.quarantined().values().cloned().collect(),
        }
    }

    pub fn directory(&self) -> &Path {
        &self.dir
    }
}

/// What the deployer refused and still shows (GET /plugins).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Problems {
    /// The last attempt of each rejected file still in the directory.
    pub rejected: Vec<DeploymentRow>,
    /// The last refused config file change, until one is accepted.
    pub config: Option<DeploymentRow>,
    /// The last quarantine of each plugin, until a new version of it is
    /// deployed.
    pub quarantined: Vec<DeploymentRow>,
}
