//! The `loadgen` command line: the steady load generator, the incident
//! scenario (`--scenario incidents`), and `loadgen score`, which measures
//! a scenario's alerts against its labels.

use super::labels::Labels;
use super::{loadgen, scenario, score};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

/// `loadgen`'s arguments: a load (or scenario) run, or `score`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LoadgenArgs {
    #[command(subcommand)]
    command: Option<LoadgenCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Subcommand)]
enum LoadgenCommand {
    /// Score the alerts a service raised on a scenario against its labels:
    /// precision, recall, time to detect, alerts per incident, raw rule
    /// firings. Prints the JSON report, and a summary on stderr.
    Score(ScoreArgs),
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

#[derive(clap::Args)]
struct ScoreArgs {
    /// The scenario's labels (`--labels` of the scenario run).
    #[arg(long, value_name = "FILE")]
    labels: PathBuf,
    /// Alerts as JSON: an array (or `{"alerts": [...]}`) of {rule,
    /// subject, at_ms} (event time; or raised_at, ms or RFC 3339).
    #[arg(long, value_name = "FILE", required_unless_present = "database")]
    alerts: Option<PathBuf>,
    /// Or read the alerts, at their batch's watermark, and the raw firings
    /// from the database of the service that processed the scenario.
    #[arg(long, value_name = "URL", conflicts_with = "alerts")]
    database: Option<String>,
    /// Seconds after an incident's end in which an alert still counts for it.
    #[arg(long, default_value_t = 120.0)]
    grace: f64,
}

/// Run `loadgen` as asked.
pub fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    match args.command {
        Some(LoadgenCommand::Score(s)) => score_command(s),
        None if args.run.scenario.is_some() => scenario_command(args.run),
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

fn score_command(a: ScoreArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.grace.is_finite() && a.grace >= 0.0,
        "--grace must be at least 0"
    );
    let labels = Labels::read(&a.labels)?;
    let grace_ms = (a.grace * 1000.0) as i64;
    let (alerts, firings) = match (&a.alerts, &a.database) {
        (Some(path), _) => (score::input::alerts_from_file(path)?, None),
        (None, Some(url)) => {
            let runtime = tokio::runtime::Runtime::new()?;
            let span = (labels.start_ms, labels.end_ms);
            let (alerts, firings) = runtime.block_on(score::input::from_database(url, span))?;
            (alerts, Some(firings))
        }
        (None, None) => anyhow::bail!("--alerts or --database is needed"),
    };
    let report = score::score(&labels, &alerts, firings, grace_ms);
    eprintln!("{}", score::summary(&report));
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
