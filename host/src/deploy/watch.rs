//! Watching the plugin directory and the config file: changes are deployed
//! after `plugins.debounce_ms` of quiet.

use super::Deployer;
use crate::store::Trigger;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a file event touched.
#[derive(Clone, Copy)]
enum Change {
    Plugins,
    Config,
}

impl Deployer {
    /// Watch the plugin directory and the config file; deploy changes after
    /// `plugins.debounce_ms` of quiet.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<()> {
        use notify::Watcher;
        let dir = std::fs::canonicalize(&self.dir)?;
        let config_path = self.config_path.clone();
        let (tx, rx) = mpsc::unbounded_channel::<Change>();
        let (watch_dir, watch_config) = (dir.clone(), config_path.clone());
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(ev) = res else { return };
                if ev.kind.is_access() {
                    return;
                }
                for p in &ev.paths {
                    if let Some(c) = classify(p, &watch_dir, watch_config.as_deref()) {
                        let _ = tx.send(c);
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
            // The watcher lives as long as the task.
            let _watcher = watcher;
            this.follow(rx, debounce).await;
        });
        tracing::info!(directory = %dir.display(), config = ?config_path, "watching plugins and config for changes");
        Ok(())
    }

    /// Deploy each burst of changes once the files have been quiet for
    /// `debounce`.
    async fn follow(self: &Arc<Self>, mut rx: mpsc::UnboundedReceiver<Change>, debounce: Duration) {
        while let Some(first) = rx.recv().await {
            let (mut plugins, mut config) = (false, false);
            let mut note = |c: Change| match c {
                Change::Plugins => plugins = true,
                Change::Config => config = true,
            };
            note(first);
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(c)) => note(c),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if config {
                self.reload_config(Trigger::Config).await;
            }
            if plugins {
                self.rescan(false, Trigger::Watch).await;
            }
        }
    }
}

/// The config file, or a plugin file or manifest in the directory (not
/// hidden).
fn classify(p: &Path, dir: &Path, config: Option<&Path>) -> Option<Change> {
    if config == Some(p) {
        return Some(Change::Config);
    }
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    let hidden = p
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    (p.parent() == Some(dir) && (ext == "wasm" || ext == "yaml") && !hidden)
        .then_some(Change::Plugins)
}
