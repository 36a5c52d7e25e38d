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
    pub patterns: GaugeVec,
    pub correlation_score: Gauge,
    pub analytics_throughput: Gauge,
    pub analytics_latency: Gauge,
    pub analytics_latency_p95: Gauge,
    pub analytics_error_rate: Gauge,
    pub analytics_user_satisfaction: Gauge,
    pub analytics_business_value: Gauge,
    pub analytics_requests_per_second: Gauge,
    pub analytics_cost_per_request: Gauge,
    pub batch_size: Histogram,
    pub queue_depth: IntGauge,
    pub plugin_call: HistogramVec,
    pub plugin_failures: IntCounterVec,
    /// plugin_deployments_total{plugin, result}: accepted | rejected |
    /// unloaded | reconfigured | rolled_back.
    pub plugin_deployments: IntCounterVec,
    /// Time the processing path spends swapping a plugin (state hand-over).
    pub plugin_swap_pause: Histogram,
    /// End of the last batch on the old version to the start of the first on
    /// the new, when a batch was waiting.
    pub plugin_swap_gap: Histogram,
    pub db_write: Histogram,
    pub db_errors: IntCounter,
    pub action_requests: IntCounterVec,
    pub http_requests: IntCounterVec,
}

fn buckets_seconds() -> Vec<f64> {
    vec![
        0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5, 5.0, 10.0,
    ]
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
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric registers once");
                m
            }};
        }
        let gauge = |name: &str, help: &str| reg!(Gauge::new(name, help).expect("valid metric"));
        let events = reg!(
            IntCounterVec::new(
                Opts::new(
                    "event_processing_total",
                    "Events by type and outcome (processed, duplicate, rejected, failed)"
                ),
                &["event_type", "status"],
            )
            .expect("valid metric")
        );
        let event_counters = hxp_plugin_sdk::EventKind::ALL
            .iter()
            .map(|k| k.as_str())
            .chain(["unknown"])
            .map(|k| {
                ["processed", "duplicate", "rejected", "failed"]
                    .iter()
                    .map(|st| events.with_label_values(&[k, st]))
                    .collect()
            })
            .collect();
        Metrics {
            event_counters,
            events,
            duration: reg!(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "event_processing_duration_seconds",
                        "Time from ingestion to the event being processed and stored"
                    )
                    .buckets(buckets_seconds()),
                )
                .expect("valid metric")
            ),
            throughput: gauge(
                "event_processing_throughput",
                "Events processed per second (last 5 s)",
            ),
            alerts: reg!(
                IntCounterVec::new(
                    Opts::new(
                        "event_correlation_alerts_total",
                        "Correlation alerts raised, by rule or pattern"
                    ),
                    &["rule"],
                )
                .expect("valid metric")
            ),
            patterns: reg!(
                GaugeVec::new(
                    Opts::new(
                        "event_correlation_patterns",
                        "Active correlation findings, by pattern"
                    ),
                    &["pattern"],
                )
                .expect("valid metric")
            ),
            correlation_score: gauge(
                "event_correlation_score",
                "Combined strength of the active findings (0 to 1)",
            ),
            analytics_throughput: gauge(
                "real_time_analytics_throughput",
                "Events per second over the analytics window",
            ),
            analytics_latency: gauge(
                "real_time_analytics_latency",
                "Average latency (ms) over the analytics window",
            ),
            analytics_latency_p95: gauge(
                "real_time_analytics_latency_p95",
                "95th percentile latency (ms) over the analytics window",
            ),
            analytics_error_rate: gauge(
                "real_time_analytics_error_rate",
                "Error rate over the analytics window",
            ),
            analytics_user_satisfaction: gauge(
                "real_time_analytics_user_satisfaction",
                "Average satisfaction score over the analytics window",
            ),
            analytics_business_value: gauge(
                "real_time_analytics_business_value",
                "Business value over the analytics window",
            ),
            analytics_requests_per_second: gauge(
                "real_time_analytics_requests_per_second",
                "llm_request events per second over the analytics window",
            ),
            analytics_cost_per_request: gauge(
                "real_time_analytics_cost_per_request",
                "Average cost per request over the analytics window",
            ),
            batch_size: reg!(
                Histogram::with_opts(
                    HistogramOpts::new("event_processing_batch_size", "Events per processed batch")
                        .buckets(vec![
                            1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0
                        ]),
                )
                .expect("valid metric")
            ),
            queue_depth: reg!(
                IntGauge::new(
                    "event_processing_queue_depth",
                    "Events accepted and not yet stored"
                )
                .expect("valid metric")
            ),
            plugin_call: reg!(
                HistogramVec::new(
                    HistogramOpts::new(
                        "plugin_call_duration_seconds",
                        "Duration of calls into plugins"
                    )
                    .buckets(vec![
                        0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0
                    ]),
                    &["plugin", "call"],
                )
                .expect("valid metric")
            ),
            plugin_failures: reg!(
                IntCounterVec::new(
                    Opts::new(
                        "plugin_failures_total",
                        "Failed plugin calls (timeout, memory_limit, trap, bad_output, rejected)"
                    ),
                    &["plugin", "failure"],
                )
                .expect("valid metric")
            ),
            plugin_deployments: reg!(
                IntCounterVec::new(
                    Opts::new(
                        "plugin_deployments_total",
                        "Plugin deployments by result (accepted, rejected, unloaded, reconfigured, rolled_back)"
                    ),
                    &["plugin", "result"],
                )
                .expect("valid metric")
            ),
            plugin_swap_pause: reg!(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "plugin_swap_pause_seconds",
                        "Time the processing path spent swapping a plugin version"
                    )
                    .buckets(vec![
                        0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.005, 0.01, 0.03, 0.1, 1.0
                    ]),
                )
                .expect("valid metric")
            ),
            plugin_swap_gap: reg!(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "plugin_swap_gap_seconds",
                        "End of the last batch on the old plugin version to the start of the first on the new"
                    )
                    .buckets(vec![
                        0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.005, 0.01, 0.03, 0.1, 1.0
                    ]),
                )
                .expect("valid metric")
            ),
            db_write: reg!(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "database_write_duration_seconds",
                        "Duration of one batch's write transaction"
                    )
                    .buckets(buckets_seconds()),
                )
                .expect("valid metric")
            ),
            db_errors: reg!(
                IntCounter::new(
                    "database_write_errors_total",
                    "Failed batch writes (retried)"
                )
                .expect("valid metric")
            ),
            action_requests: reg!(
                IntCounterVec::new(
                    Opts::new(
                        "automated_response_requests_total",
                        "Action requests by action and outcome"
                    ),
                    &["action", "outcome"],
                )
                .expect("valid metric")
            ),
            http_requests: reg!(
                IntCounterVec::new(
                    Opts::new("http_requests_total", "HTTP requests by route and status"),
                    &["route", "status"]
                )
                .expect("valid metric")
            ),
            registry,
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
        let o = &s.overall;
        self.analytics_throughput.set(o.throughput);
        self.analytics_latency.set(o.latency_avg.unwrap_or(0.0));
        self.analytics_latency_p95.set(o.latency_p95.unwrap_or(0.0));
        self.analytics_error_rate.set(o.error_rate);
        self.analytics_user_satisfaction
            .set(o.user_satisfaction.unwrap_or(0.0));
        self.analytics_business_value.set(o.business_value);
        self.analytics_requests_per_second
            .set(o.requests_per_second);
        self.analytics_cost_per_request
            .set(o.cost_per_request.unwrap_or(0.0));
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
