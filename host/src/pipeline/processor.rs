//! The processor thread: owns the plugin instances, applies deployments
//! between batches, runs each batch through the stages, decides on the
//! action requests (guardrails), and hands the batch's rows to the writer.
//! Before each batch it moves the [`Watermark`] and sets the plugins' clock
//! to it; it is stored with the batch, so a restart can replay exactly.

use super::batcher::{Batch, Item};
use super::checkpoint::{StateCache, checkpoint};
use super::live::{self, BatchCounts, LiveView};
use super::record::{self, BatchRecord};
use super::stages::{Stages, Switches};
use super::swap::{self, Control};
use super::watermark::{HTTP_LANE, Watermark};
use super::writer::WriterMsg;
use crate::actions::{BatchContext, Guardrails, Job};
use crate::config::{Config, TimeMode};
use crate::plugin::convert;
use crate::store::BatchWrite;
use crate::telemetry::Metrics;
use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the processor thread receives.
pub(super) struct Inputs {
    pub batches: mpsc::Receiver<Batch>,
    pub control: mpsc::Receiver<Control>,
}

/// The processor and what it shares with the rest.
pub(super) struct Processor {
    pub stages: Stages,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub live: Arc<RwLock<LiveView>>,
    pub states: StateCache,
    pub guardrails: Guardrails,
    pub watermark: Watermark,
    /// Takes misbehaving versions out after each batch.
    pub quarantine: super::quarantine::Tracker,
    pub out: mpsc::Sender<WriterMsg>,
}

/// A batch's two times: the service's clock, and the plugins' (the
/// watermark on event time).
#[derive(Debug, Clone, Copy)]
pub(super) struct Times {
    pub now: i64,
    pub watermark: i64,
}

/// When periodic work last ran, and what measures the gaps between batches.
struct Timers {
    checkpoint: Instant,
    history: Instant,
    publish: Instant,
    /// Highest sequence number processed.
    last_seq: u64,
    rate: RateMeter,
    /// End of the last batch, whether the next was already waiting then,
    /// and whether a swap happened since (to measure the gap it caused).
    last_batch_end: Instant,
    next_was_waiting: bool,
    swap_pending: bool,
    ordinary_gaps: u64,
}

impl Processor {
    /// Runs until the batcher closes, then checkpoints a last time.
    pub(super) fn run(mut self, mut input: Inputs) {
        let now = Instant::now();
        let mut t = Timers {
            checkpoint: now,
            history: now,
            publish: now,
            last_seq: 0,
            rate: RateMeter::default(),
            last_batch_end: now,
            next_was_waiting: false,
            swap_pending: false,
            ordinary_gaps: 0,
        };
        live::publish_plugins(&self.stages, &self.live);
        // Serve the restored window from the start.
        self.idle_tick();
        loop {
            // Deployments first, between batches; then a batch, or refresh
            // the window when idle.
            match recv_timeout(&mut input, Duration::from_secs(1)) {
                Recv::Control(c) => {
                    if swap::apply(&mut self.stages, c, t.last_seq, &self.metrics) {
                        t.swap_pending = true;
                        live::publish_plugins(&self.stages, &self.live);
                    }
                    continue;
                }
                Recv::Batch(b) => {
                    let events = b.items.len();
                    match crate::util::panic::catch(|| self.on_batch(b, &mut t, &input)) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(panic) => self.dropped(events, &panic),
                    }
                }
                Recv::Idle => self.idle_tick(),
                Recv::Closed => break,
            }
            self.periodic(&mut t);
        }
        // Input closed: everything has been processed. Final checkpoint.
        let s = &mut self.stages;
        checkpoint(s, t.last_seq, &self.out, &self.metrics, &self.states);
        live::publish_plugins(&self.stages, &self.live);
    }

    /// A batch failed with a panic (a bug in the host; plugin traps are
    /// handled in the stages): its events are not stored and not
    /// acknowledged, so HTTP clients get an error and retry, and Kafka
    /// reads them again. The processor goes on with the next batch.
    fn dropped(&self, events: usize, panic: &str) {
        self.metrics.workers.panicked("processor", panic);
        tracing::error!("processor: a batch of {events} events was dropped: {panic}");
        // The writer gives their queue capacity back.
        let _ = self.out.blocking_send(WriterMsg::Dropped { events });
    }

    /// No batch for a while: the watermark may move (a lane went idle; on
    /// processing time, the clock) and the served window with it.
    fn idle_tick(&mut self) {
        let now = crate::store::now_ms();
        let watermark = self.watermark.advance(now, Instant::now());
        self.set_clock(Times {
            now,
            watermark: watermark.unwrap_or(now),
        });
        live::refresh_snapshot(&mut self.stages, &self.metrics, &self.live);
    }

    /// The plugins' clock, the watermark gauges and the live view's.
    fn set_clock(&mut self, t: Times) {
        self.stages.clock.set_ms(t.watermark);
        let known = self.watermark.get();
        if let Some(w) = known {
            self.metrics.event_time.set(w, t.now);
        }
        live::write(&self.live).watermark = known;
    }

    /// Move the watermark with a batch's new events, counting those that
    /// arrived after their second left the analytics window.
    fn advance_watermark(&mut self, items: &[Item]) -> Times {
        let now = crate::store::now_ms();
        let at = Instant::now();
        let window = self.config.real_time_analytics.window_size;
        let first_sec = self.watermark.window_start_sec(window);
        for item in items.iter().filter(|i| !i.duplicate) {
            let e = &item.event.typed;
            if first_sec.is_some_and(|first| e.time_ms.div_euclid(1000) < first) {
                self.metrics
                    .event_time
                    .late
                    .with_label_values(&[e.kind.as_str()])
                    .inc();
            }
            let lane = item.event.lane.as_deref().unwrap_or(HTTP_LANE);
            self.watermark.observe(lane, e.time_ms, at);
        }
        let watermark = self.watermark.advance(now, at).unwrap_or(now);
        let times = Times { now, watermark };
        self.set_clock(times);
        times
    }

    /// Process one batch and hand it to the writer. False when the writer
    /// is gone.
    fn on_batch(&mut self, mut batch: Batch, t: &mut Timers, input: &Inputs) -> bool {
        self.measure_gap(t, &batch);
        let times = self.advance_watermark(&batch.items);
        if let Some(max) = batch.items.iter().map(|i| i.seq).max() {
            t.last_seq = t.last_seq.max(max);
        }
        self.metrics.batch_limit.set(batch.limit as i64);
        live::write(&self.live).batch_limit = batch.limit;
        let (write, jobs) = self.process_batch(&mut batch.items, times);
        t.rate.add(batch.items.len());
        let msg = WriterMsg::Batch {
            items: batch.items,
            write,
            jobs,
        };
        if self.out.blocking_send(msg).is_err() {
            return false;
        }
        // The batch is handed to the writer: the processor is free.
        t.last_batch_end = Instant::now();
        t.next_was_waiting = !input.batches.is_empty();
        true
    }

    /// Run one batch through the stages and prepare its write: the stages'
    /// results, metrics, the stored record, the guardrails' verdicts, the
    /// event rows, the live view.
    pub(super) fn process_batch(
        &mut self,
        items: &mut [Item],
        times: Times,
    ) -> (BatchWrite, Vec<Job>) {
        let Times { now, watermark } = times;
        let fresh = items.iter().filter(|i| !i.duplicate).count();
        let batch_seq = items.iter().find(|i| !i.duplicate).map_or(0, |i| i.seq);
        // On processing time the plugins place events by their arrival.
        let arrival = (self.watermark.mode() == TimeMode::Processing).then_some(now);
        let wit = to_wit(items, arrival);
        let results = self
            .stages
            .run(&wit, watermark, self.switches(), &self.metrics);
        if !self
            .quarantine
            .check(&mut self.stages, Instant::now())
            .is_empty()
        {
            live::publish_plugins(&self.stages, &self.live);
        }
        live::export_metrics(&self.metrics, &results, items.len());
        let record = BatchRecord::new(&results);
        // Guardrails decide now (in memory); executors act after the batch
        // is stored. A batch of duplicates stores no rows, so it asks nothing.
        let (actions, jobs) = match fresh {
            0 => (Vec::new(), Vec::new()),
            _ => {
                let stale = self.staleness(times);
                let ctx = BatchContext {
                    batch_seq,
                    now_ms: now,
                    findings_json: &record.findings,
                    analytics_json: record.analytics.as_deref(),
                    stale: stale.as_deref(),
                };
                self.guardrails.plan(&results.actions, &ctx, &self.metrics)
            }
        };
        let alerts = record::alerts(&results, now);
        let events = record::event_rows(items, now, batch_seq);
        let counts = BatchCounts {
            at: now,
            size: items.len(),
            fresh,
        };
        live::write(&self.live).record_batch(results, counts);
        let batch = record.row(batch_seq, (now, watermark), fresh, &self.stages.versions);
        let write = BatchWrite {
            events,
            batch,
            alerts,
            actions,
        };
        (write, jobs)
    }

    /// Why the batch's action requests must not run: the watermark trails
    /// the clock by more than `automated_response.max_staleness_secs`.
    fn staleness(&self, t: Times) -> Option<String> {
        let max = self.config.automated_response.max_staleness_secs;
        let lag_ms = t.now - t.watermark;
        (lag_ms > (max as i64).saturating_mul(1000)).then(|| {
            format!(
                "stale data: the watermark trails the clock by {:.1} s (automated_response.max_staleness_secs: {max}); catching up",
                lag_ms as f64 / 1000.0
            )
        })
    }

    fn switches(&self) -> Switches {
        Switches::of(&self.config)
    }

    /// The gap since the last batch: after a swap it is the swap's cost
    /// (when this batch was already waiting); otherwise a sample of the
    /// ordinary gaps under load, for comparison.
    fn measure_gap(&self, t: &mut Timers, batch: &Batch) {
        let gap = t.last_batch_end.elapsed();
        if std::mem::take(&mut t.swap_pending) {
            if t.next_was_waiting {
                self.metrics.plugin.swap_gap.observe(gap.as_secs_f64());
                live::push_capped(&mut live::write(&self.live).swap_gaps_us, gap);
            }
        } else if t.next_was_waiting && batch.items.len() > 1 {
            t.ordinary_gaps += 1;
            if t.ordinary_gaps.is_multiple_of(16) {
                live::push_capped(&mut live::write(&self.live).batch_gaps_us, gap);
            }
        }
    }

    /// Throughput, plugin checkpoints, the plugin list, analytics history.
    fn periodic(&mut self, t: &mut Timers) {
        self.metrics.throughput.set(t.rate.per_second());
        let c = &self.config;
        let checkpoint_every = Duration::from_secs(c.real_time_analytics.update_interval);
        if t.checkpoint.elapsed() >= checkpoint_every {
            let s = &mut self.stages;
            checkpoint(s, t.last_seq, &self.out, &self.metrics, &self.states);
            live::publish_plugins(&self.stages, &self.live);
            t.checkpoint = Instant::now();
            t.publish = Instant::now();
        } else if t.publish.elapsed() >= Duration::from_secs(1) {
            live::publish_plugins(&self.stages, &self.live);
            t.publish = Instant::now();
        }
        let history_every = Duration::from_secs(c.performance_metrics.update_interval);
        if c.performance_metrics.calculation_enabled && t.history.elapsed() >= history_every {
            self.save_history();
            t.history = Instant::now();
        }
    }

    /// The served window into the analytics history.
    fn save_history(&self) {
        let snapshot = self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot
            .clone();
        let Some(s) = snapshot else { return };
        let Ok(json) = serde_json::to_string(&s) else {
            return;
        };
        let retention_ms = self.config.performance_metrics.history_retention as i64 * 1000;
        let _ = self.out.blocking_send(WriterMsg::Snapshot {
            taken_at: crate::store::now_ms(),
            json,
            retention_ms,
        });
    }
}

/// The batch's new events as the columnar WIT batch; `arrival`: the time
/// every event is given (processing time).
fn to_wit(items: &[Item], arrival: Option<i64>) -> crate::plugin::types::EventBatch {
    let mut builder = hxp_plugin_sdk::BatchBuilder::with_capacity(items.len());
    for item in items.iter().filter(|i| !i.duplicate) {
        builder.push(&item.event.typed);
    }
    let mut batch = builder.finish();
    if let Some(t) = arrival {
        batch.place_at(t);
    }
    convert::batch_to_wit(batch)
}

enum Recv {
    Control(Control),
    Batch(Batch),
    Idle,
    Closed,
}

/// Blocking receive with a timeout, for the processor thread (outside the
/// async runtime): a small current-thread runtime drives the timer.
/// Deployment changes come before batches.
fn recv_timeout(rx: &mut Inputs, timeout: Duration) -> Recv {
    if let Ok(c) = rx.control.try_recv() {
        return Recv::Control(c);
    }
    match rx.batches.try_recv() {
        Ok(b) => return Recv::Batch(b),
        Err(mpsc::error::TryRecvError::Disconnected) => return Recv::Closed,
        Err(mpsc::error::TryRecvError::Empty) => {}
    }
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("timer runtime");
    }
    RT.with(|rt| {
        rt.block_on(async {
            let wait = async {
                tokio::select! {
                    biased;
                    Some(c) = rx.control.recv() => Recv::Control(c),
                    b = rx.batches.recv() => match b {
                        Some(b) => Recv::Batch(b),
                        None => Recv::Closed,
                    },
                }
            };
            tokio::time::timeout(timeout, wait)
                .await
                .unwrap_or(Recv::Idle)
        })
    })
}

/// Events processed per second over the last 5 seconds.
#[derive(Default)]
struct RateMeter {
    window: VecDeque<(Instant, usize)>,
}

impl RateMeter {
    fn add(&mut self, n: usize) {
        self.window.push_back((Instant::now(), n));
    }

    fn per_second(&mut self) -> f64 {
        let horizon = Duration::from_secs(5);
        while self
            .window
            .front()
            .is_some_and(|(t, _)| t.elapsed() > horizon)
        {
            self.window.pop_front();
        }
        self.window.iter().map(|(_, n)| *n).sum::<usize>() as f64 / horizon.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::batcher::tests::submission;
    use crate::pipeline::fake::{Fake, action, finding};
    use crate::plugin::{Clock, PluginKind};
    use crate::store::Outcome;

    fn processor(slots: Vec<crate::pipeline::Slot>) -> (Processor, mpsc::Receiver<WriterMsg>) {
        let config = Arc::new(Config::default());
        let (out, rx) = mpsc::channel(16);
        let p = Processor {
            stages: Stages::new(slots, Clock::manual(0)),
            guardrails: Guardrails::new(&config.automated_response),
            watermark: Watermark::new(&config.stream_processing),
            quarantine: super::super::quarantine::Tracker::new(config.plugins.quarantine, None),
            config,
            metrics: Arc::new(Metrics::new()),
            live: Arc::default(),
            states: StateCache::default(),
            out,
        };
        (p, rx)
    }

    /// A processor with an analytics plugin and a responses plugin that
    /// asks for `action` by `rule` on every batch.
    fn responding(rule: &str, act: &str) -> (Processor, mpsc::Receiver<WriterMsg>) {
        let mut responder = Fake::new("responder", PluginKind::Responses);
        responder.actions = vec![action(rule, act)];
        processor(vec![
            Fake::new("analytics", PluginKind::Analytics).slot(1),
            responder.slot(1),
        ])
    }

    /// A batch processed at `ms`, the watermark there too.
    fn at(ms: i64) -> Times {
        Times {
            now: ms,
            watermark: ms,
        }
    }

    /// Items with these ids and sequence numbers (`dup`: marked duplicate).
    fn items(ids: &[(u128, u64, bool)]) -> Vec<Item> {
        let raw: Vec<u128> = ids.iter().map(|i| i.0).collect();
        let s = submission(&raw).0;
        s.events
            .into_iter()
            .zip(ids)
            .enumerate()
            .map(|(index, (mut event, &(_, seq, duplicate)))| {
                // As the batcher numbers them.
                event.typed.seq = seq;
                Item {
                    tracker: s.tracker.clone(),
                    index,
                    seq,
                    duplicate,
                    ingested_at: 1,
                    source: None,
                    event,
                }
            })
            .collect()
    }

    #[test]
    fn every_analytics_plugin_sees_the_batch_and_the_first_serves() {
        let mut first = Fake::new("a-first", PluginKind::Analytics);
        first.base_count = 100;
        let mut second = Fake::new("b-second", PluginKind::Analytics);
        second.base_count = 200;
        let (seen1, seen2) = (first.seen.clone(), second.seen.clone());
        // Order decides, not the name: "b-second" has the lower order.
        let (mut p, _rx) = processor(vec![first.slot(20), second.slot(10)]);
        let mut batch = items(&[(1, 5, false), (2, 6, false), (3, 7, true)]);
        let (write, _) = p.process_batch(&mut batch, at(1_000));
        assert_eq!(
            *seen1.lock().unwrap(),
            vec![vec![5, 6]],
            "duplicates are not processed"
        );
        assert_eq!(*seen2.lock().unwrap(), vec![vec![5, 6]]);
        let live = p.live.read().unwrap();
        assert_eq!(
            live.snapshot.as_ref().unwrap().overall.count,
            202,
            "order 10 serves"
        );
        assert_eq!((live.events, live.duplicates), (2, 1));
        assert_eq!(write.events.len(), 2);
        let row = write.batch.expect("a batch with new events has a row");
        assert_eq!((row.batch_seq, row.size, row.processed_at), (5, 2, 1_000));
        assert!(row.analytics.unwrap().contains("\"throughput\""));
    }

    #[test]
    fn correlation_findings_merge_and_the_highest_score_wins() {
        let mut a = Fake::new("rules-a", PluginKind::Correlation);
        a.findings = vec![finding("burst", true, 0.4)];
        a.score = 0.4;
        let mut b = Fake::new("rules-b", PluginKind::Correlation);
        b.findings = vec![finding("slow", false, 0.9), finding("burst", true, 0.2)];
        b.score = 0.9;
        let (mut p, _rx) = processor(vec![
            Fake::new("analytics", PluginKind::Analytics).slot(1),
            b.slot(2),
            a.slot(1),
        ]);
        let (write, _) = p.process_batch(&mut items(&[(1, 1, false)]), at(5));
        let live = p.live.read().unwrap();
        let names: Vec<&str> = live.findings.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["burst", "slow", "burst"], "in plugin order");
        assert_eq!(live.correlation_score, 0.9);
        assert_eq!(write.alerts.len(), 2, "one row per alerting finding");
        let record: serde_json::Value =
            serde_json::from_str(write.batch.unwrap().correlation.as_deref().unwrap()).unwrap();
        assert_eq!(
            record["patterns_detected"],
            serde_json::json!(["burst", "slow"])
        );
    }

    /// A version that traps on every batch is no longer called after the
    /// tenth trap (plugins.quarantine's default); every batch is stored.
    #[test]
    fn a_plugin_that_keeps_trapping_is_taken_out_and_batches_go_on() {
        let mut broken = Fake::new("broken", PluginKind::Correlation);
        broken.fails = true;
        let traps = broken.traps.clone();
        let (mut p, _rx) = processor(vec![
            Fake::new("analytics", PluginKind::Analytics).slot(1),
            broken.slot(1),
        ]);
        for i in 1..=15 {
            let (write, _) = p.process_batch(&mut items(&[(i, i as u64, false)]), at(9));
            assert_eq!(write.events.len(), 1);
        }
        assert_eq!(traps.load(std::sync::atomic::Ordering::Relaxed), 10);
        let live = p.live.read().unwrap();
        let status = live.plugins.iter().find(|s| s.name == "broken").unwrap();
        assert!(status.quarantined);
    }

    #[test]
    fn a_failing_plugin_costs_its_own_result_only() {
        let mut broken = Fake::new("broken", PluginKind::Correlation);
        broken.fails = true;
        broken.findings = vec![finding("never", true, 1.0)];
        let mut fine = Fake::new("fine", PluginKind::Correlation);
        fine.findings = vec![finding("burst", true, 0.5)];
        fine.score = 0.5;
        let mut responder = Fake::new("responder", PluginKind::Responses);
        responder.actions = vec![action("notify_admin", "page_oncall")];
        let (mut p, _rx) = processor(vec![
            Fake::new("analytics", PluginKind::Analytics).slot(1),
            broken.slot(1),
            fine.slot(2),
            responder.slot(1),
        ]);
        let (write, _jobs) = p.process_batch(&mut items(&[(1, 1, false), (2, 2, false)]), at(9));
        assert_eq!(write.events.len(), 2, "the batch is stored all the same");
        let live = p.live.read().unwrap();
        let names: Vec<&str> = live.findings.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["burst"]);
        let failures = p
            .metrics
            .plugin
            .failures
            .with_label_values(&["broken", "trap"])
            .get();
        assert_eq!(failures, 1);
        // Responses still decide; the unknown action goes to the log
        // executor ("*") and is done at once.
        assert_eq!(write.actions.len(), 1);
        assert_eq!(write.actions[0].outcome, Outcome::Executed);
    }

    #[test]
    fn responses_concatenate_and_pending_requests_become_jobs() {
        let mut one = Fake::new("one", PluginKind::Responses);
        one.actions = vec![action("scale_up_models", "scale_models")];
        let mut two = Fake::new("two", PluginKind::Responses);
        two.actions = vec![action("notify_admin", "send_notification")];
        let (mut p, _rx) = processor(vec![
            Fake::new("analytics", PluginKind::Analytics).slot(1),
            one.slot(1),
            two.slot(2),
        ]);
        let (write, jobs) = p.process_batch(&mut items(&[(1, 3, false)]), at(7));
        let actions: Vec<&str> = write.actions.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, vec!["scale_models", "send_notification"]);
        assert!(write.actions.iter().all(|a| a.outcome == Outcome::Pending));
        assert_eq!(
            jobs.len(),
            2,
            "webhook executors act after the batch is stored"
        );
        assert_eq!((jobs[0].batch_seq, jobs[1].n), (3, 1));
    }

    /// A silence on `slow` (2024-01-01, one hour) and `burst` inhibiting
    /// `flaky`: at event time within the hour, `slow` and `flaky` are held
    /// back (alert rows with why for the one that alerted; the responses
    /// plugin sees only `burst`; counted by reason); an hour later only
    /// the inhibition holds.
    #[test]
    fn held_back_findings_alert_nothing_and_reach_no_responses_plugin() {
        use crate::pipeline::suppress::silence::tests::{DAY0, new};
        use crate::pipeline::suppress::{Silence, SilenceBoard, Suppressor};
        let mut rules = Fake::new("rules", PluginKind::Correlation);
        // `burst` is global (empty subject): it holds `flaky` back on "api".
        let mut burst = finding("burst", true, 0.9);
        burst.subject = String::new();
        let mut flaky = finding("flaky", true, 0.1);
        flaky.subject = "api".into();
        rules.findings = vec![finding("slow", true, 0.5), burst, flaky];
        let mut responder = Fake::new("responder", PluginKind::Responses);
        responder.actions = vec![action("notify_admin", "send_notification")];
        let given = responder.given.clone();
        let (mut p, _rx) = processor(vec![
            Fake::new("analytics", PluginKind::Analytics).slot(1),
            rules.slot(1),
            responder.slot(1),
        ]);
        let mut on_slow = new(DAY0, DAY0 + 3_600_000, None);
        on_slow.matchers = crate::pipeline::suppress::silence::tests::on_rule("slow");
        let silence = Silence::new("quiet".into(), 1, on_slow).unwrap();
        let burst = crate::config::InhibitRule {
            source: "burst".into(),
            targets: vec!["flaky".into()],
        };
        p.stages.suppressor = Suppressor::new(SilenceBoard::new(vec![silence]), vec![burst]);
        let (write, _) = p.process_batch(&mut items(&[(1, 1, false)]), at(DAY0 + 10));
        let rows: Vec<(&str, Option<&str>)> = (write.alerts.iter())
            .map(|a| (a.rule.as_str(), a.suppressed_by.as_deref()))
            .collect();
        let want = [
            ("slow", Some("silence:quiet")),
            ("burst", None),
            ("flaky", Some("inhibited:burst")),
        ];
        assert_eq!(rows, want);
        assert_eq!(*given.lock().unwrap(), vec![vec!["burst".to_string()]]);
        let suppressed = |r: &str| p.metrics.findings_suppressed.with_label_values(&[r]).get();
        assert_eq!((suppressed("silence"), suppressed("inhibition")), (1, 1));
        assert_eq!(p.metrics.alerts.with_label_values(&["slow"]).get(), 0);
        let live = p.live.read().unwrap();
        let alerting: Vec<bool> = live.findings.iter().map(|f| f.alert).collect();
        assert_eq!(alerting, vec![false, true, false]);
        assert_eq!(
            live.holds.get(0).unwrap().reason.to_string(),
            "silence:quiet"
        );
        drop(live);
        // An hour later: the silence is over.
        let (write, _) = p.process_batch(&mut items(&[(2, 2, false)]), at(DAY0 + 3_600_000));
        let held: Vec<Option<&str>> = write
            .alerts
            .iter()
            .map(|a| a.suppressed_by.as_deref())
            .collect();
        assert_eq!(held, vec![None, None, Some("inhibited:burst")]);
    }

    #[test]
    fn a_batch_of_duplicates_stores_nothing_and_asks_nothing() {
        let (mut p, _rx) = responding("scale_up_models", "scale_models");
        let (write, jobs) = p.process_batch(&mut items(&[(1, 3, true), (2, 4, true)]), at(7));
        assert!(write.events.is_empty() && write.batch.is_none());
        assert!(write.actions.is_empty() && jobs.is_empty());
        assert_eq!(p.live.read().unwrap().duplicates, 2);
    }

    #[test]
    fn requests_on_stale_data_are_recorded_and_not_run() {
        let (mut p, _rx) = responding("notify_admin", "send_notification");
        // The watermark 61 s behind the clock (max_staleness_secs: 60).
        let times = Times {
            now: 1_000_061_000,
            watermark: 1_000_000_000,
        };
        let (write, jobs) = p.process_batch(&mut items(&[(1, 3, false)]), times);
        assert_eq!(write.actions.len(), 1);
        assert_eq!(write.actions[0].outcome, Outcome::Stale);
        assert!(
            write.actions[0].detail.contains("61.0 s"),
            "{}",
            write.actions[0].detail
        );
        assert!(jobs.is_empty(), "nothing runs");
        // 60 s behind: acted on.
        let times = Times {
            now: 1_000_060_000,
            ..times
        };
        let (write, jobs) = p.process_batch(&mut items(&[(2, 4, false)]), times);
        assert_eq!(write.actions[0].outcome, Outcome::Pending);
        assert_eq!(jobs.len(), 1);
        assert_eq!(write.batch.unwrap().watermark, Some(1_000_000_000));
    }

    #[test]
    fn events_older_than_the_window_at_the_watermark_are_counted_late() {
        let (mut p, _rx) = processor(vec![]);
        let at = |ids: &[(u128, u64, bool)], times_ms: &[i64]| {
            let mut v = items(ids);
            for (item, t) in v.iter_mut().zip(times_ms) {
                item.event.typed.time_ms = *t;
            }
            v
        };
        // The first batch sets the watermark (10 000 s); nothing is late yet.
        let first = at(&[(1, 1, false), (2, 2, false)], &[9_000_000, 10_000_000]);
        let t = p.advance_watermark(&first);
        assert_eq!(t.watermark, 10_000_000);
        assert_eq!(p.stages.clock.now_ms(), 10_000_000);
        // The window is 300 s: seconds 9701..=10000. 9700 s is late, 9701 s
        // is not, nor is a duplicate.
        let second = at(
            &[(3, 3, false), (4, 4, false), (5, 5, true)],
            &[9_700_999, 9_701_000, 1],
        );
        p.advance_watermark(&second);
        let late = |kind: &str| p.metrics.event_time.late.with_label_values(&[kind]).get();
        assert_eq!(late("error_event"), 1);
        assert_eq!(p.watermark.get(), Some(10_000_000), "it never goes back");
    }
}
