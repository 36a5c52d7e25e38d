//! The `loadgen` command line: the steady load generator and the incident
//! scenario (`--scenario incidents`).

use super::{loadgen, scenario};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

/// `loadgen`'s arguments: a load (or scenario) run.
#[derive(clap::Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Events per second (steady mix only; a scenario is sent as fast as
    /// the service takes it).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds to run; with --scenario, seconds of event time the stream
    /// spans [default: 10; 7200 with --scenario]
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value = "http://127.0.0.1:9100")]
    target: String,
    /// Events per request (POST /events, NDJSON).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Requests in flight at once (steady mix only; a scenario sends one
    /// batch at a time, in event-time order).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// No progress lines, only the summary.
    #[arg(long)]
    quiet: bool,
    /// Instead of the steady mix, a stream with its own event times (about
    /// 20 events per second of event time) and planted incidents: model
    /// degradations, service restarts, slow error leaks, flapping health.
    /// The same seed and start give the same stream.
    #[arg(long, value_enum)]
    scenario: Option<ScenarioKind>,
    /// The first event's time, ms since the epoch [default: now minus the
    /// duration, down to the minute, so that the stream ends near now].
    /// Keep it within the service's database.retention_secs of now.
    #[arg(long, requires = "scenario", value_name = "MS")]
    start: Option<i64>,
    /// Write the events here (NDJSON) instead of sending them to --target.
    #[arg(long, requires = "scenario", value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the incidents planted (kind, model or service, span) here, for
    /// `loadgen score`.
    #[arg(long, requires = "scenario", value_name = "FILE")]
    labels: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum ScenarioKind {
    Incidents,
}

/// Run `loadgen` as asked.
pub fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    match args.run.scenario {
        Some(_) => scenario_command(args.run),
        None => steady_command(args.run),
    }
}

fn steady_command(a: RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.rate > 0 && a.batch > 0 && a.concurrency > 0,
        "--rate, --batch and --concurrency must be at least 1"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(loadgen::run(loadgen::Options {
        target: a.target,
        rate: a.rate,
        duration: Duration::try_from_secs_f64(a.duration.unwrap_or(10.0)).context("--duration")?,
        batch: a.batch,
        concurrency: a.concurrency,
        seed: a.seed,
        quiet: a.quiet,
    }))?;
    loadgen::print_summary(&summary);
    Ok(())
}

fn scenario_command(a: RunArgs) -> anyhow::Result<()> {
    let secs = a.duration.unwrap_or(7200.0);
    anyhow::ensure!(
        secs.is_finite() && secs >= 1.0 && a.batch > 0,
        "--duration must be at least 1 s and --batch at least 1"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(scenario::run(scenario::Options {
        seed: a.seed,
        start_ms: a.start,
        duration_ms: (secs * 1000.0) as i64,
        out: a.out,
        target: a.target,
        labels: a.labels,
        batch: a.batch,
        quiet: a.quiet,
    }))?;
    eprintln!(
        "scenario: {} events, {} incidents, event time {} to {}",
        summary["events"],
        summary["incidents"],
        scenario::events::rfc3339(summary["start_ms"].as_i64().unwrap_or(0)),
        scenario::events::rfc3339(summary["end_ms"].as_i64().unwrap_or(0))
    );
    println!("{summary}");
    Ok(())
}
