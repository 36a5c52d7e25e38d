//! The rows the store writes and reads, and the enums stored by their
//! stable names (`outcome`, deployment `result` and `cause`).

use serde::{Deserialize, Serialize};

/// An enum stored as text by stable snake_case names: `as_str` for
/// binding, `parse` for reading back, serde with the same names.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored (and shown) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant of a stored name.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum! {
    /// What happened (or will happen) to an action request.
    Outcome {
        /// Let through; an executor will act (webhook, command).
        Pending => "pending",
        Executed => "executed",
        Failed => "failed",
        SuppressedCooldown => "suppressed_cooldown",
        Deduplicated => "deduplicated",
        RateLimited => "rate_limited",
        DryRun => "dry_run",
        /// Switched off (`enabled` or a category flag).
        Disabled => "disabled",
        /// Not executed: the watermark trailed the clock by more than
        /// `automated_response.max_staleness_secs` (catching up a backlog).
        Stale => "stale",
        /// Rows written before executors existed (schema version 2).
        Logged => "logged",
    }
}

stored_enum! {
    /// How one deployment attempt ended.
    DeploymentResult {
        Accepted => "accepted",
        Rejected => "rejected",
        Unloaded => "unloaded",
        Reconfigured => "reconfigured",
        RolledBack => "rolled_back",
        /// Taken out for failing too often (plugins.quarantine); a
        /// rollback or an unload follows.
        Quarantined => "quarantined",
        /// Started in the shadow of the live version (not acting).
        Shadow => "shadow",
        /// A shadow made the live version, with its state.
        Promoted => "promoted",
        /// A shadow stopped without promotion.
        ShadowDropped => "shadow_dropped",
    }
}

stored_enum! {
    /// What started a deployment attempt.
    Trigger {
        Startup => "startup",
        Watch => "watch",
        Reload => "reload",
        Rollback => "rollback",
        Config => "config",
        /// PUT or DELETE /plugins/{name} (`hxp-events plugin deploy`).
        Api => "api",
        /// A version failed too often (plugins.quarantine).
        Quarantine => "quarantine",
    }
}

impl DeploymentResult {
    /// The attempt made this version the running one.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            DeploymentResult::Accepted | DeploymentResult::RolledBack | DeploymentResult::Promoted
        )
    }
}

/// A stored name that is none of the enum's: an error naming the column.
pub(super) fn parse_stored<T>(
    column: &str,
    text: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> anyhow::Result<T> {
    parse(text).ok_or_else(|| anyhow::anyhow!("{column}: unknown stored value '{text}'"))
}

/// One stored event.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: u64,
    pub event_id: u128,
    pub event_type: &'static str,
    pub event_time: i64,
    pub ingested_at: i64,
    pub processed_at: i64,
    pub batch_seq: u64,
    pub source: Option<std::sync::Arc<str>>,
    pub data: String,
}

/// The per-batch results shared by its events' processing records (JSON).
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub batch_seq: u64,
    pub processed_at: i64,
    pub size: usize,
    pub analytics: Option<String>,
    pub correlation: Option<String>,
    pub response: Option<String>,
    /// JSON object: plugin name -> version that processed the batch.
    pub plugins: Option<String>,
    /// The plugins' clock for the batch: the watermark (event time) or
    /// the processing time; replay sets the same.
    pub watermark: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct AlertRow {
    pub raised_at: i64,
    pub rule: String,
    pub source: String,
    pub subject: String,
    pub occurrences: i64,
    pub score: f64,
    pub message: String,
    pub evidence: String,
    /// What held it back (`silence:<id>`, `inhibited:<rule>`): the finding
    /// would have alerted and did not. `None` for an alert raised.
    pub suppressed_by: Option<String>,
}

/// A stored silence (`pipeline::suppress` gives it meaning).
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceRow {
    /// A UUID.
    pub id: String,
    /// Milliseconds since the epoch, like every time here.
    pub created_at: i64,
    pub starts_at: i64,
    pub ends_at: i64,
    /// Recurring: the period the window [starts_at, ends_at) repeats with.
    pub repeat_every_secs: Option<i64>,
    pub creator: String,
    pub comment: String,
    /// JSON array of `{name, op, value}`.
    pub matchers: String,
    pub deleted_at: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionRow {
    pub requested_at: i64,
    pub rule: String,
    pub action: String,
    pub target: String,
    /// JSON object.
    pub parameters: String,
    pub reason: String,
    /// JSON array of the findings active when it was requested.
    pub findings: String,
    /// pending | executed | failed | suppressed_cooldown | deduplicated |
    /// rate_limited | dry_run | disabled (rows before migration 3: logged)
    pub outcome: Outcome,
    pub detail: String,
    /// JSON object: the batch's analytics that the rule saw.
    pub analytics: Option<String>,
    pub executor: Option<String>,
    pub dry_run: bool,
    pub idempotency_key: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

/// Everything one batch writes, in one transaction.
#[derive(Debug, Default)]
pub struct BatchWrite {
    pub events: Vec<EventRow>,
    pub batch: Option<BatchRow>,
    pub alerts: Vec<AlertRow>,
    pub actions: Vec<ActionRow>,
}

/// A processing record's stored parts.
pub struct RecordRow {
    pub seq: u64,
    pub event_id: u128,
    pub event_type: String,
    pub processed_at: i64,
    pub analytics: Option<String>,
    pub correlation: Option<String>,
    pub response: Option<String>,
    pub plugins: Option<String>,
}

/// One deployment attempt of a plugin (or of its config section).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeploymentRow {
    pub id: i64,
    pub plugin: String,
    /// Milliseconds since the epoch.
    pub at: i64,
    pub stage: Option<String>,
    pub file: String,
    pub sha256: Option<String>,
    pub version: Option<String>,
    /// accepted | rejected | unloaded | reconfigured | rolled_back |
    /// quarantined | shadow | promoted | shadow_dropped
    pub result: DeploymentResult,
    pub reason: String,
    /// startup | watch | reload | rollback | config | api | quarantine
    pub trigger: Trigger,
    /// Who asked, for deployments through the API: the admin token's name
    /// and the client's address ("token ci from 127.0.0.1:50312").
    pub actor: Option<String>,
    /// The new version processes the batches after this event sequence
    /// number.
    pub after_seq: Option<i64>,
    pub compile_ms: Option<f64>,
    /// Time the processing path spent swapping (state hand-over).
    pub pause_us: Option<i64>,
}

/// A stored event as read back for replay and recalculation.
pub struct StoredEvent {
    pub seq: u64,
    pub event_type: String,
    pub processed_at: i64,
    /// Its batch's watermark (`processed_at` for batches stored before
    /// event time).
    pub watermark: i64,
    pub batch_seq: u64,
    pub event_time: i64,
    pub event_id: u128,
    pub data: String,
}

impl StoredEvent {
    /// The typed fields the plugins get, as at ingestion (`None` for a type
    /// this version does not know).
    pub fn typed(&self) -> Option<hxp_plugin_sdk::Event> {
        let kind = hxp_plugin_sdk::EventKind::parse(&self.event_type)?;
        let mut e = crate::event::typed_from_text(kind, &self.data, self.event_id, self.event_time);
        e.seq = self.seq;
        Some(e)
    }
}

/// How an executor finished one action request (see
/// [`Store::update_action_outcome`]).
#[derive(Debug, Clone)]
pub struct ActionUpdate {
    /// executed | failed
    pub outcome: Outcome,
    pub detail: String,
    pub started_at: Option<i64>,
    pub finished_at: i64,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}
