//! Prometheus metrics, with the requirements' names, in one registry.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

/// Outcome label of event_processing_total.
#[derive(Debug, Clone, Copy)]
pub enum EventStatus {
    Processed = 0,
    Duplicate = 1,
    Rejected = 2,
    Failed = 3,
}

pub struct Metrics {
    pub registry: Registry,
    /// event_processing_total children, by [type (5 = unknown)][status].
    event_counters: Vec<Vec<IntCounter>>,
    /// event_processing_total{event_type, status}: processed | duplicate |
    /// rejected | failed.
    pub events: IntCounterVec,
    /// Ingest to stored, seconds.
    pub duration: Histogram,
    /// Events processed per second over the last few seconds.
    pub throughput: Gauge,
    pub alerts: IntCounterVec,
    /// correlation_findings_suppressed_total{reason}: silence | inhibition.
    pub findings_suppressed: IntCounterVec,
    pub patterns: GaugeVec,
    pub correlation_score: Gauge,
    /// real_time_analytics_*: the overall figures of the last snapshot.
    analytics: AnalyticsGauges,
    pub batch_size: Histogram,
    /// The batch size in use (adaptive batching).
    pub batch_limit: IntGauge,
    pub queue_depth: IntGauge,
    /// plugin_*: calls, failures, deployments and swaps.
    pub plugin: PluginMetrics,
    pub db_write: Histogram,
    pub db_errors: IntCounter,
    /// database_checkpoints_total{mode}: passive | truncate (SQLite).
    pub db_checkpoints: IntCounterVec,
    /// The SQLite write-ahead log file's size when last measured.
    pub db_wal_bytes: IntGauge,
    pub action_requests: IntCounterVec,
    pub http_requests: IntCounterVec,
    /// Event time: late events by type, and the watermark.
    pub event_time: EventTimeMetrics,
    /// The long-running workers: up or down, restarts, panics caught.
    pub workers: super::Workers,
}

fn buckets_seconds() -> Vec<f64> {
    vec![
        0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5, 5.0, 10.0,
    ]
}

fn buckets_swap() -> Vec<f64> {
    vec![
        0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.005, 0.01, 0.03, 0.1, 1.0,
    ]
}

/// The event_processing_total children by [type (5 = unknown)][status], so
/// the hot path increments a counter without a label lookup.
fn event_counters(events: &IntCounterVec) -> Vec<Vec<IntCounter>> {
    let kinds = hxp_plugin_sdk::EventKind::ALL.iter().map(|k| k.as_str());
    kinds
        .chain(["unknown"])
        .map(|k| {
            ["processed", "duplicate", "rejected", "failed"]
                .iter()
                .map(|st| events.with_label_values(&[k, st]))
                .collect()
        })
        .collect()
}

/// Creates metrics and registers them. Names and labels are constants of
/// this file, so a failure is a programming error caught by every test that
/// starts the service.
struct Reg(Registry);

impl Reg {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("metric registers once");
        c
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn int_counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
        labels: &[&str],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

/// The metrics of plugins: calls, failures, deployments and swaps.
pub struct PluginMetrics {
    pub call: HistogramVec,
    pub failures: IntCounterVec,
    /// plugin_deployments_total{plugin, result}: accepted | rejected |
    /// unloaded | reconfigured | rolled_back | quarantined.
    pub deployments: IntCounterVec,
    /// Time the processing path spends swapping a plugin (state hand-over).
    pub swap_pause: Histogram,
    /// plugin_shadow_disagreements_total{plugin, kind}: what a shadow
    /// version did differently from the live one (alert_only_live,
    /// alert_only_shadow, action_only_live, action_only_shadow, window).
    pub shadow_disagreements: IntCounterVec,
    /// End of the last batch on the old version to the start of the first on
    /// the new, when a batch was waiting.
    pub swap_gap: Histogram,
}

impl PluginMetrics {
    fn new(r: &Reg) -> Self {
        PluginMetrics {
            call: r.histogram_vec(
                "plugin_call_duration_seconds",
                "Duration of calls into plugins",
                vec![
                    0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0,
                ],
                &["plugin", "call"],
            ),
            failures: r.counter_vec(
                "plugin_failures_total",
                "Failed plugin calls (timeout, memory_limit, trap, bad_output, rejected)",
                &["plugin", "failure"],
            ),
            deployments: r.counter_vec(
                "plugin_deployments_total",
                "Plugin deployments by result (accepted, rejected, unloaded, reconfigured, rolled_back, quarantined)",
                &["plugin", "result"],
            ),
            shadow_disagreements: r.counter_vec(
                "plugin_shadow_disagreements_total",
                "What a shadow version did differently from the live one, by kind",
                &["plugin", "kind"],
            ),
            swap_pause: r.histogram(
                "plugin_swap_pause_seconds",
                "Time the processing path spent swapping a plugin version",
                buckets_swap(),
            ),
            swap_gap: r.histogram(
                "plugin_swap_gap_seconds",
                "End of the last batch on the old plugin version to the start of the first on the new",
                buckets_swap(),
            ),
        }
    }
}

/// Event time: events that came after their window closed, and how far
/// the watermark trails the clock.
pub struct EventTimeMetrics {
    /// event_processing_late_events_total{event_type}.
    pub late: IntCounterVec,
    /// Seconds the watermark trails the service's clock.
    pub lag: Gauge,
    /// The watermark, seconds since the Unix epoch.
    pub watermark: Gauge,
}

impl EventTimeMetrics {
    fn new(r: &Reg) -> Self {
        EventTimeMetrics {
            late: r.counter_vec(
                "event_processing_late_events_total",
                "Events stored but not in the analytics window: their second had left it when they arrived",
                &["event_type"],
            ),
            lag: r.gauge(
                "event_processing_watermark_lag_seconds",
                "How far the watermark (event time processed) trails the service's clock",
            ),
            watermark: r.gauge(
                "event_processing_watermark_seconds",
                "The watermark: event time up to which the windows are complete",
            ),
        }
    }

    /// Set the watermark gauges at wall time `now_ms`.
    pub fn set(&self, watermark_ms: i64, now_ms: i64) {
        self.watermark.set(watermark_ms as f64 / 1000.0);
        self.lag.set((now_ms - watermark_ms).max(0) as f64 / 1000.0);
    }
}

/// The requirements' real_time_analytics_* gauges.
struct AnalyticsGauges {
    throughput: Gauge,
    latency: Gauge,
    latency_p95: Gauge,
    error_rate: Gauge,
    user_satisfaction: Gauge,
    business_value: Gauge,
    requests_per_second: Gauge,
    cost_per_request: Gauge,
}

impl AnalyticsGauges {
    fn new(r: &Reg) -> Self {
        let window = |name: &str, what: &str| {
            let help = format!("{what} over the analytics window");
            r.gauge(&format!("real_time_analytics_{name}"), &help)
        };
        AnalyticsGauges {
            throughput: window("throughput", "Events per second"),
            latency: window("latency", "Average latency (ms)"),
            latency_p95: window("latency_p95", "95th percentile latency (ms)"),
            error_rate: window("error_rate", "Error rate"),
            user_satisfaction: window("user_satisfaction", "Average satisfaction score"),
            business_value: window("business_value", "Business value"),
            requests_per_second: window("requests_per_second", "llm_request events per second"),
            cost_per_request: window("cost_per_request", "Average cost per request"),
        }
    }

    fn set(&self, o: &hxp_plugin_sdk::Stats) {
        self.throughput.set(o.throughput);
        self.latency.set(o.latency_avg.unwrap_or(0.0));
        self.latency_p95.set(o.latency_p95.unwrap_or(0.0));
        self.error_rate.set(o.error_rate);
        self.user_satisfaction
            .set(o.user_satisfaction.unwrap_or(0.0));
        self.business_value.set(o.business_value);
        self.requests_per_second.set(o.requests_per_second);
        self.cost_per_request.set(o.cost_per_request.unwrap_or(0.0));
    }
}

impl Metrics {
    /// The event_processing_total counter of a type (`None`: unknown type)
    /// and outcome, without a label lookup.
    pub fn event(
        &self,
        kind: Option<hxp_plugin_sdk::EventKind>,
        status: EventStatus,
    ) -> &IntCounter {
        &self.event_counters[kind.map(|k| k.index()).unwrap_or(5)][status as usize]
    }

    /// Register a further metric (a source's own) in the service registry.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.registry
            .register(Box::new(c.clone()))
            .expect("metric registers once");
        c
    }

    pub fn new() -> Metrics {
        let r = Reg(Registry::new());
        let events = r.counter_vec(
            "event_processing_total",
            "Events by type and outcome (processed, duplicate, rejected, failed)",
            &["event_type", "status"],
        );
        Metrics {
            event_counters: event_counters(&events),
            events,
            duration: r.histogram(
                "event_processing_duration_seconds",
                "Time from ingestion to the event being processed and stored",
                buckets_seconds(),
            ),
            throughput: r.gauge(
                "event_processing_throughput",
                "Events processed per second (last 5 s)",
            ),
            alerts: r.counter_vec(
                "event_correlation_alerts_total",
                "Correlation alerts raised, by rule or pattern",
                &["rule"],
            ),
            findings_suppressed: {
                let c = r.counter_vec(
                    "correlation_findings_suppressed_total",
                    "Findings held back from alerting and the responses stage, per batch, by reason (silence, inhibition)",
                    &["reason"],
                );
                // Both series from the start, at 0.
                for reason in ["silence", "inhibition"] {
                    c.with_label_values(&[reason]);
                }
                c
            },
            patterns: r.gauge_vec(
                "event_correlation_patterns",
                "Active correlation findings, by pattern",
                &["pattern"],
            ),
            correlation_score: r.gauge(
                "event_correlation_score",
                "Combined strength of the active findings (0 to 1)",
            ),
            analytics: AnalyticsGauges::new(&r),
            batch_size: r.histogram(
                "event_processing_batch_size",
                "Events per processed batch",
                vec![
                    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
                ],
            ),
            batch_limit: r.int_gauge(
                "event_processing_batch_limit",
                "The batch size in use: stream_processing.batch_size at low load, up to max_batch_size under a backlog",
            ),
            queue_depth: r.int_gauge(
                "event_processing_queue_depth",
                "Events accepted and not yet stored",
            ),
            plugin: PluginMetrics::new(&r),
            db_write: r.histogram(
                "database_write_duration_seconds",
                "Duration of one batch's write transaction",
                buckets_seconds(),
            ),
            db_errors: r.int_counter(
                "database_write_errors_total",
                "Failed batch writes (retried)",
            ),
            db_checkpoints: r.counter_vec(
                "database_checkpoints_total",
                "SQLite write-ahead log checkpoints by mode (passive, truncate)",
                &["mode"],
            ),
            db_wal_bytes: r.int_gauge(
                "database_wal_bytes",
                "Size of the SQLite write-ahead log file (0 on PostgreSQL)",
            ),
            action_requests: r.counter_vec(
                "automated_response_requests_total",
                "Action requests by action and outcome",
                &["action", "outcome"],
            ),
            http_requests: r.counter_vec(
                "http_requests_total",
                "HTTP requests by route and status",
                &["route", "status"],
            ),
            event_time: EventTimeMetrics::new(&r),
            workers: super::Workers::new(&r.0),
            registry: r.0,
        }
        .with_process_metrics()
    }

    /// process_resident_memory_bytes, process_cpu_seconds_total, ...
    fn with_process_metrics(self) -> Metrics {
        #[cfg(target_os = "linux")]
        self.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        self
    }

    /// Set the analytics gauges from a snapshot.
    pub fn set_analytics(&self, s: &hxp_plugin_sdk::Snapshot) {
        self.analytics.set(&s.overall);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
