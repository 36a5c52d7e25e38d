//! The typed answers of the API. Field names are the JSON names; `Option`
//! fields serialize as `null` unless marked `skip_serializing_if` (absent
//! when empty). Free-form parts (plugin-defined or stored JSON) are
//! `serde_json::Value`.

use crate::pipeline::PluginStatus;
use crate::sources::kafka::PartitionProgress;
use crate::sources::validate::ItemError;
use crate::store::DeploymentRow;
use hxp_plugin_sdk::Finding;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

// ---- ingestion ----

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Success {
    Success,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkStatus {
    /// Every event was valid.
    Success,
    /// Some were refused (see `errors`).
    Partial,
}

/// The ids of one stored event.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    pub event_id: String,
    pub processing_id: String,
    /// The event id was stored before; the ids are the original's.
    pub duplicate: bool,
}

/// POST /process.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessView {
    pub status: Success,
    pub event_id: String,
    pub processing_id: String,
    pub duplicate: bool,
}

/// POST /events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsView {
    pub status: BulkStatus,
    pub received: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// The first 100 refused events.
    pub errors: Vec<ItemError>,
    /// With `?receipts=true`: each stored event's ids, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipts: Option<Vec<ReceiptView>>,
}

// ---- analytics ----

/// Analytics figures over the window (or one event type's share).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatsView {
    pub event_count: u64,
    pub throughput: f64,
    pub requests_per_second: f64,
    /// Mean latency (ms).
    pub latency: Option<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
    pub latency_exact: bool,
    pub error_rate: f64,
    pub error_percentage: f64,
    pub user_satisfaction: Option<f64>,
    pub business_value: f64,
    pub cost_per_request: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceHealthView {
    pub service: String,
    /// healthy | degraded | failed
    pub health: String,
    pub reported_at: String,
}

/// One stored snapshot of GET /analytics?history=N.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPointView {
    #[serde(flatten)]
    pub stats: StatsView,
    pub timestamp: String,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Disabled {
    Disabled,
}

/// GET /analytics when real-time analytics are switched off.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsDisabledView {
    pub status: Disabled,
    pub message: String,
}

/// GET /analytics before the first snapshot.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsEmptyView {
    pub event_count: u64,
    pub throughput: f64,
    pub error_rate: f64,
    pub window_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryPointView>>,
}

/// GET /analytics: the requirements' fields at the top level.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsSnapshotView {
    #[serde(flatten)]
    pub stats: StatsView,
    pub timestamp: String,
    pub window_seconds: u32,
    pub covered_seconds: f64,
    /// Per event type (with `real_time_analytics.aggregation_enabled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_event_type: Option<BTreeMap<String, StatsView>>,
    pub services: Vec<ServiceHealthView>,
    /// Where event time stands (the window ends at the watermark).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_time: Option<EventTimeView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryPointView>>,
}

/// Where event time stands: the watermark the windows end at, and how far
/// it trails the service's clock.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventTimeView {
    /// event | processing (`stream_processing.time`)
    pub time: &'static str,
    pub state: EventTimeState,
    /// The watermark (RFC 3339); absent before the first event.
    pub watermark: Option<String>,
    /// Seconds the watermark trails the clock.
    pub lag_seconds: Option<f64>,
    /// `automated_response.max_staleness_secs`: beyond this lag, action
    /// requests are recorded as stale and not executed.
    pub max_staleness_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventTimeState {
    /// No event yet.
    Waiting,
    /// The watermark is within `max_staleness_secs` of the clock.
    Live,
    /// Events keep coming but their time trails the clock by more than
    /// `max_staleness_secs` (a backlog): no automated action runs.
    CatchingUp,
    /// No new events for `idle_timeout_secs`: the windows end at the last
    /// event time.
    Idle,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AnalyticsView {
    Disabled(AnalyticsDisabledView),
    Empty(AnalyticsEmptyView),
    Snapshot(Box<AnalyticsSnapshotView>),
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnalyticsState {
    Disabled,
    NoPlugin,
    Stale,
    Running,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsPluginView {
    pub name: String,
    pub version: String,
    pub calls: u64,
    pub errors: u64,
    pub traps: u64,
    pub last_error: Option<String>,
}

/// GET /analytics/status.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsStatusView {
    pub status: AnalyticsState,
    pub enabled: bool,
    pub window_size: u32,
    pub update_interval: u64,
    pub last_update: Option<String>,
    pub age_seconds: Option<f64>,
    pub events_in_window: u64,
    pub events_processed: u64,
    pub replayed_at_start: u64,
    pub plugin: Option<AnalyticsPluginView>,
}

/// Schema of POST /analytics/recalculate (built by `crate::pipeline::recalc`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RecalculationView {
    pub window: RecalculationWindow,
    /// The real-time figures (as in GET /analytics).
    #[schema(value_type = Object)]
    pub real_time: Value,
    /// The same figures recomputed from the stored events.
    #[schema(value_type = Object)]
    pub batch: Value,
    /// Per figure: `{absolute, relative}`, or null when one side has none.
    #[schema(value_type = Object)]
    pub difference: Value,
    pub latency_quantiles_exact_in_real_time: bool,
    pub recalculation_ms: f64,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RecalculationWindow {
    pub from: Option<String>,
    pub to: Option<String>,
    pub seconds: u32,
    pub covered_seconds: f64,
}

// ---- correlations ----

/// An active finding, and what held it back.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveFindingView {
    pub name: String,
    pub source: String,
    pub subject: String,
    /// False when held back, whatever the plugin said.
    pub alert: bool,
    pub occurrences: u32,
    pub score: f64,
    pub message: String,
    /// Sequence numbers of the events behind it.
    pub evidence: Vec<u64>,
    /// `silence:<id>` or `inhibited:<rule>`: it raised no alert and
    /// reached no responses plugin. `null` otherwise.
    pub suppressed_by: Option<String>,
}

impl ActiveFindingView {
    pub fn new(f: Finding, held: Option<&crate::pipeline::suppress::Held>) -> Self {
        ActiveFindingView {
            name: f.name,
            source: f.source,
            subject: f.subject,
            alert: f.alert,
            occurrences: f.occurrences,
            score: f.score,
            message: f.message,
            evidence: f.evidence,
            suppressed_by: held.map(|h| h.reason.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    pub raised_at: String,
    pub rule: String,
    pub source: String,
    pub subject: String,
    pub occurrences: i64,
    pub score: f64,
    pub message: String,
    /// As the correlation plugin recorded it (free-form).
    pub evidence: Value,
    /// `silence:<id>` or `inhibited:<rule>`: the finding would have
    /// alerted and was held back (no alert, no action request). `null` for
    /// an alert raised.
    pub suppressed_by: Option<String>,
}

/// GET /correlations.
#[derive(Debug, Serialize, ToSchema)]
pub struct CorrelationsView {
    pub patterns_detected: Vec<String>,
    /// An alert was raised (not held back) within the window.
    pub alert_triggered: bool,
    pub correlation_score: f64,
    pub window_seconds: u32,
    pub active_findings: Vec<ActiveFindingView>,
    /// Alerts of the window, newest first, those held back included.
    pub recent_alerts: Vec<AlertView>,
    pub timestamp: String,
}

/// POST /correlations/test.
#[derive(Debug, Serialize, ToSchema)]
pub struct CorrelationTestView {
    pub events: usize,
    pub patterns_detected: Vec<String>,
    /// A finding alerted that no silence or inhibit rule held back.
    pub alert_triggered: bool,
    pub correlation_score: f64,
    /// With what would hold each back live (`suppressed_by`).
    pub findings: Vec<ActiveFindingView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleCountView {
    pub rule: String,
    pub total: i64,
    pub last_hour: i64,
}

/// GET /correlations/stats.
#[derive(Debug, Serialize, ToSchema)]
pub struct CorrelationStatsView {
    pub alerts_total: i64,
    pub alerts_last_hour: i64,
    pub by_rule: Vec<RuleCountView>,
    pub active_findings: usize,
    pub correlation_score: f64,
    pub events_evaluated: u64,
    pub rules: usize,
    pub window_seconds: u32,
    pub alert_threshold: u32,
}

// ---- automated responses ----

/// One requested action and what became of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionView {
    pub requested_at: String,
    pub rule: String,
    pub action: String,
    pub target: String,
    /// Action parameters, as the rule gave them (free-form).
    pub parameters: Value,
    pub reason: String,
    /// The findings behind the action (free-form).
    pub findings: Value,
    /// The analytics snapshot at the decision (free-form, or null).
    pub analytics: Value,
    pub outcome: crate::store::Outcome,
    pub detail: String,
    pub executor: Option<String>,
    pub dry_run: bool,
    pub idempotency_key: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

/// GET /automated-responses.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponsesView {
    pub total: i64,
    pub limit: usize,
    pub offset: usize,
    pub responses: Vec<ActionView>,
}

// ---- processing ----

/// GET /processing/{processing_id}.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessingRecordView {
    pub processing_id: String,
    pub event_id: String,
    pub processing_type: String,
    pub processing_timestamp: String,
    /// What the analytics stage produced (free-form; absent when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics_results: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_results: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automated_response: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub depth: usize,
    pub capacity: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchingView {
    pub batch_size: usize,
    /// Under a backlog batches grow up to this (adaptive batching).
    pub max_batch_size: usize,
    /// The batch size in use now: `batch_size` at low load.
    pub batch_limit: usize,
    pub flush_interval: f64,
    pub parallel_workers: usize,
    pub batches: u64,
    pub average_batch_size: f64,
    pub last_batch_size: usize,
    pub last_batch_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventCountsView {
    pub processed: u64,
    pub duplicates: u64,
    pub stored: u64,
    pub replayed_at_start: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StageTimesView {
    pub analytics: f64,
    pub correlation: f64,
    pub responses: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseView {
    /// sqlite | postgres
    pub backend: String,
    pub failing: bool,
    pub last_error: Option<String>,
    pub batches_written: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaDisabledView {
    /// Always false.
    pub enabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KafkaConsumerView {
    /// Always true.
    pub enabled: bool,
    /// "ok", or what is wrong.
    pub status: String,
    pub group: String,
    pub topics: Vec<String>,
    pub connected: bool,
    pub paused: bool,
    pub consumed: u64,
    pub dead_lettered: u64,
    pub polls_in_flight: u64,
    pub rebalances: u64,
    pub last_error: Option<String>,
    pub partitions: Vec<PartitionProgress>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum KafkaView {
    Disabled(KafkaDisabledView),
    Consumer(KafkaConsumerView),
}

/// GET /processing/pipeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineView {
    pub mode: String,
    pub enabled: bool,
    pub stages: Vec<&'static str>,
    pub queue: QueueView,
    pub batching: BatchingView,
    pub events: EventCountsView,
    /// End of the last batch on an old plugin version to the start of the
    /// first on the new one (swaps made while a batch was waiting), in µs.
    pub plugin_swap_gaps_us: Vec<u64>,
    pub batch_gaps_us: Vec<u64>,
    pub stage_ms_per_batch: StageTimesView,
    pub database: DatabaseView,
    pub kafka: KafkaView,
}

// ---- plugins ----

/// A running plugin, with its mean call time.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginView {
    #[serde(flatten)]
    pub status: PluginStatus,
    pub mean_call_ms: f64,
}

/// GET /plugins.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginsView {
    pub plugins: Vec<PluginView>,
    /// Files refused at the last scan.
    pub rejected: Vec<DeploymentRow>,
    /// The last refused config section, if the current config was refused.
    pub config_error: Option<DeploymentRow>,
    /// The last quarantine of each plugin (plugins.quarantine), until a new
    /// version of it is deployed.
    pub quarantined: Vec<DeploymentRow>,
    /// The running shadows' reports (GET /plugins/{name}/shadow).
    pub shadows: Vec<crate::pipeline::shadow::ShadowReport>,
    #[schema(value_type = String)]
    pub directory: std::path::PathBuf,
    pub watching: bool,
}

/// A deployment in GET /plugins/{name}/history (`at` as RFC 3339 time).
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentHistoryRow {
    pub id: i64,
    pub plugin: String,
    pub at: String,
    pub stage: Option<String>,
    pub file: String,
    pub sha256: Option<String>,
    pub version: Option<String>,
    pub result: crate::store::DeploymentResult,
    pub reason: String,
    pub trigger: crate::store::Trigger,
    pub after_seq: Option<i64>,
    pub compile_ms: Option<f64>,
    pub pause_us: Option<i64>,
    /// Who deployed through the API: token name and client address.
    pub actor: Option<String>,
}

impl From<DeploymentRow> for DeploymentHistoryRow {
    fn from(r: DeploymentRow) -> DeploymentHistoryRow {
        DeploymentHistoryRow {
            id: r.id,
            plugin: r.plugin,
            at: super::rfc3339(r.at),
            stage: r.stage,
            file: r.file,
            sha256: r.sha256,
            version: r.version,
            result: r.result,
            reason: r.reason,
            trigger: r.trigger,
            after_seq: r.after_seq,
            compile_ms: r.compile_ms,
            pause_us: r.pause_us,
            actor: r.actor,
        }
    }
}

/// GET /plugins/{name}/history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    pub plugin: String,
    pub deployments: Vec<DeploymentHistoryRow>,
}

/// POST /plugins/{name}/rollback.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollbackView {
    pub rolled_back: bool,
    pub deployment: DeploymentRow,
}

/// PUT and DELETE /plugins/{name}: the deployment they made.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployView {
    pub deployment: DeploymentRow,
}

/// POST /plugins/reload.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadView {
    pub deployments: Vec<DeploymentRow>,
}

// ---- health ----

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Degraded,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthChecksView {
    /// "ok", or what is wrong.
    pub database: String,
    /// ok | full
    pub queue: String,
    pub plugins: String,
    /// ok | disabled | what is wrong
    pub kafka: String,
    /// "ok", or each worker that is down (being restarted) and why.
    pub workers: String,
}

/// GET /health.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub status: HealthStatus,
    pub service: String,
    pub timestamp: String,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub checks: HealthChecksView,
    pub event_time: EventTimeView,
}

// ---- silences ----

/// A silence.
#[derive(Debug, Serialize, ToSchema)]
pub struct SilenceView {
    /// A UUID.
    pub id: String,
    /// At the time of the answer (the wall clock; the processor judges
    /// each batch at its event time).
    pub state: crate::pipeline::suppress::SilenceState,
    /// All must match a finding for the silence to hold it back.
    pub matchers: Vec<crate::pipeline::suppress::matcher::MatcherSpec>,
    pub starts_at: String,
    pub ends_at: String,
    /// Recurring: the window [starts_at, ends_at) again every this many
    /// seconds.
    pub repeat_every_secs: Option<i64>,
    pub creator: String,
    pub comment: String,
    pub created_at: String,
    pub deleted_at: Option<String>,
}

/// GET /silences.
#[derive(Debug, Serialize, ToSchema)]
pub struct SilencesView {
    /// The time the states are given at.
    pub at: String,
    /// Oldest first.
    pub silences: Vec<SilenceView>,
}
