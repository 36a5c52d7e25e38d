//! The deployer's side of auto-quarantine: the processor has stopped
//! calling a version that failed too often; here it is recorded, then
//! rolled back to the previous version, or unloaded when there is none.

use super::{Deployer, Running};
use crate::pipeline::quarantine::Notice;
use crate::store::{DeploymentResult, DeploymentRow, Trigger};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The follower's name in /health and the worker metrics.
const WORKER: &str = "quarantine";

impl Deployer {
    /// Act on the processor's quarantine notices, one at a time. A panic
    /// while acting on one (the version stays out, not rolled back) shows
    /// the worker down in /health until a later notice is acted on, and
    /// does not stop the following.
    pub fn follow_quarantines(self: &Arc<Self>, mut notices: mpsc::UnboundedReceiver<Notice>) {
        let this = self.clone();
        tokio::spawn(async move {
            let workers = &this.metrics.workers;
            workers.running(WORKER);
            while let Some(n) = notices.recv().await {
                let plugin = n.plugin.clone();
                match crate::util::panic::catch_async(this.quarantine(n)).await {
                    Ok(()) => workers.running(WORKER),
                    Err(panic) => {
                        workers.panicked(WORKER, &panic);
                        let why = format!("acting on the quarantine of {plugin} panicked: {panic}");
                        workers.failed(WORKER, why);
                    }
                }
            }
        });
    }

    /// Record the quarantine, then roll back or unload.
    pub(super) async fn quarantine(self: &Arc<Self>, n: Notice) {
        // Checked and acted on under one hold of `serial`: a version
        // deployed meanwhile is not the one taken out.
        let _serial = self.serial.lock().await;
        if n.shadow {
            self.shadow_quarantined(&n.plugin, (&n.sha256, n.since_ms), n.reason)
                .await;
            return;
        }
        let Some(current) = self.running().get(&n.plugin).cloned() else {
            return;
        };
        if current.sha256 != n.sha256 {
            // Replaced since: the new version has its own count.
            return;
        }
        let mut row = self.row_for(&n.plugin, &current, Trigger::Quarantine);
        row.result = DeploymentResult::Quarantined;
        row.reason = n.reason;
        self.record(&row).await;
        self.quarantined().insert(n.plugin.clone(), row);
        if let Err(why) = self.rollback_locked(&n.plugin, Trigger::Quarantine).await {
            self.unload_quarantined(&n.plugin, &current, why.to_string())
                .await;
        }
    }

    /// Unload a quarantined version with nothing to roll back to (the
    /// caller holds `serial`). Its file stays, marked as rejected until it
    /// changes (the watcher does not load it again).
    async fn unload_quarantined(&self, name: &str, current: &Running, why: String) {
        let mut row = self.row(name, &current.file, Trigger::Quarantine);
        row.reason = format!("quarantined and unloaded: {why}");
        let row = self.unload(row).await;
        let refused = (current.fingerprint.clone(), row);
        self.rejected().insert(current.file.clone(), refused);
    }
}

/// Why `sha256` was quarantined, when that happened after it was last
/// deployed (history newest first).
pub(super) fn quarantined_since_deployed(
    history: &[DeploymentRow],
    sha256: &str,
) -> Option<String> {
    let newest = history.iter().find(|d| {
        d.sha256.as_deref() == Some(sha256)
            && (d.result.is_live() || d.result == DeploymentResult::Quarantined)
    })?;
    (newest.result == DeploymentResult::Quarantined).then(|| newest.reason.clone())
}

/// The newest version that ran and was never quarantined, other than
/// `sha256`: what to fall back to.
pub(super) fn last_good(history: &[DeploymentRow], sha256: &str) -> Option<String> {
    let bad = |sha: &str| {
        sha == sha256
            || history.iter().any(|d| {
                d.result == DeploymentResult::Quarantined && d.sha256.as_deref() == Some(sha)
            })
    };
    history
        .iter()
        .filter(|d| d.result.is_live())
        .filter_map(|d| d.sha256.clone())
        .find(|sha| !bad(sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sha: &str, result: DeploymentResult) -> DeploymentRow {
        DeploymentRow {
            id: 0,
            plugin: "rules".into(),
            at: 0,
            stage: None,
            file: String::new(),
            sha256: Some(sha.into()),
            version: None,
            result,
            reason: format!("{result} {sha}"),
            trigger: Trigger::Api,
            after_seq: None,
            compile_ms: None,
            pause_us: None,
            actor: None,
        }
    }

    #[test]
    fn a_version_quarantined_after_its_deployment_stays_out() {
        use DeploymentResult::*;
        // Newest first: b was deployed, quarantined, rolled back to a.
        let history = [
            row("a", RolledBack),
            row("b", Quarantined),
            row("b", Accepted),
            row("a", Accepted),
        ];
        assert_eq!(
            quarantined_since_deployed(&history, "b").as_deref(),
            Some("quarantined b")
        );
        assert_eq!(quarantined_since_deployed(&history, "a"), None);
        // Deployed again after its quarantine: it may run.
        let again = [
            row("b", Accepted),
            row("b", Quarantined),
            row("a", Accepted),
        ];
        assert_eq!(quarantined_since_deployed(&again, "b"), None);
    }

    #[test]
    fn the_fallback_is_never_a_quarantined_version() {
        use DeploymentResult::*;
        let history = [
            row("c", Accepted),
            row("b", Quarantined),
            row("b", Accepted),
            row("a", Accepted),
        ];
        assert_eq!(last_good(&history, "c").as_deref(), Some("a"));
        assert_eq!(last_good(&history, "a"), Some("c".into()));
        assert_eq!(
            last_good(&[row("b", Quarantined), row("b", Accepted)], "b"),
            None
        );
    }
}
