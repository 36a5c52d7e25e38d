//! `hxp-events plugin inspect` and `hxp-events plugin test`: tools for
//! plugin authors that run a component offline with the real runtime.

use crate::config::Config;
use crate::event;
use crate::pipeline::backtest::MAX_WARMUP_SECS;
use crate::plugin::{Clock, Limits, Plugin, PluginEngine, PluginKind, convert, types};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Describe a plugin file: world, WIT version, metadata, imports, exports.
pub fn inspect(engine: &Arc<PluginEngine>, file: &Path) -> anyhow::Result<Value> {
    let loaded = engine.load_file(file)?;
    let plugin = Plugin::new(
        engine.clone(),
        loaded.clone(),
        Limits::default(),
        Clock::System,
    )?;
    let md = plugin.metadata();
    Ok(json!({
        "file": file.display().to_string(),
        "size_bytes": loaded.size,
        "sha256": loaded.hash,
        "world": format!("hxp:events/{}@{}", loaded.kind.world(), loaded.wit_version),
        "wit_version": loaded.wit_version,
        "stage": loaded.kind,
        "config_section": loaded.kind.config_section(),
        "metadata": md,
        "imports": loaded.imports,
        "exports": loaded.exports,
        "compile_ms": loaded.load_time.as_secs_f64() * 1000.0,
        "compile_cache_hit": loaded.from_cache,
    }))
}

/// A config file (`--config`) loaded and checked as the service loads it,
/// so a plugin sees what it would see there (its section only, defaults
/// filled in).
fn config_from_file(path: Option<&Path>) -> anyhow::Result<Option<Config>> {
    let Some(path) = path else { return Ok(None) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::from_yaml(&text, &path.display().to_string(), &[]).map(Some)
}

/// Options of `plugin test`.
pub struct TestOptions {
    pub file: PathBuf,
    pub events: PathBuf,
    pub config: Option<PathBuf>,
    pub batch_size: usize,
    /// Upstream stages a responses plugin needs; the default plugins this
    /// binary carries when not given.
    pub analytics: Option<PathBuf>,
    pub correlation: Option<PathBuf>,
}

/// The default analytics and correlation plugins, embedded at build time
/// (host/build.rs); empty when the host was built before them.
const EMBEDDED_ANALYTICS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/analytics.wasm"));
const EMBEDDED_CORRELATION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/correlation.wasm"));

/// Where a plugin comes from: a file, or the binary itself.
enum Source<'a> {
    File(&'a Path),
    Embedded(PluginKind),
}

impl Source<'_> {
    fn upstream(path: Option<&Path>, kind: PluginKind) -> Source<'_> {
        path.map_or(Source::Embedded(kind), Source::File)
    }

    fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Embedded(kind) => format!("the default {kind} plugin"),
        }
    }

    fn load(&self, engine: &PluginEngine) -> anyhow::Result<crate::plugin::LoadedComponent> {
        let kind = match self {
            Source::File(p) => return Ok(engine.load_file(p)?),
            Source::Embedded(kind) => *kind,
        };
        let bytes = match kind {
            PluginKind::Analytics => EMBEDDED_ANALYTICS,
            PluginKind::Correlation => EMBEDDED_CORRELATION,
            PluginKind::Responses => &[],
        };
        if bytes.is_empty() {
            bail!(
                "this hxp-events was built without its default plugins (`make plugins` before the host); give --{kind} FILE"
            );
        }
        Ok(engine.load_bytes(bytes, &self.describe())?)
    }
}

fn load(
    engine: &Arc<PluginEngine>,
    source: Source<'_>,
    clock: &Clock,
    config: Option<&Config>,
) -> anyhow::Result<Plugin> {
    let loaded = source
        .load(engine)
        .with_context(|| format!("loading {}", source.describe()))?;
    let mut p = Plugin::new(engine.clone(), loaded, Limits::default(), clock.clone())?;
    if let Some(config) = config {
        let section = config.section_json(p.kind().config_section());
        p.configure(&section.map_err(anyhow::Error::msg)?)?;
    }
    Ok(p)
}

/// Run a plugin on recorded events with the clock following the events'
/// times: one JSON value per batch.
pub fn test(engine: &Arc<PluginEngine>, opts: &TestOptions) -> anyhow::Result<Vec<Value>> {
    let clock = Clock::manual(0);
    let config = config_from_file(opts.config.as_deref())?;
    let config = config.as_ref();
    let mut main = load(engine, Source::File(&opts.file), &clock, config)?;
    let mut upstream = None;
    if main.kind() == PluginKind::Responses {
        let analytics = Source::upstream(opts.analytics.as_deref(), PluginKind::Analytics);
        let correlation = Source::upstream(opts.correlation.as_deref(), PluginKind::Correlation);
        let a = load(engine, analytics, &clock, config)?;
        let c = load(engine, correlation, &clock, config)?;
        upstream = Some((a, c));
    }
    let events = read_events(&opts.events, main.metadata().wants_payload)?;
    let mut lines = Vec::new();
    for rows in batches(&events, opts.batch_size) {
        let now = rows.iter().map(|e| e.time_ms).max().unwrap_or_default();
        clock.set_ms(now);
        let time = chrono::DateTime::from_timestamp_millis(now)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let mut line = json!({ "batch": lines.len() + 1, "time": time, "events": rows.len() });
        run_batch(&mut main, upstream.as_mut(), rows, now, &mut line)?;
        lines.push(line);
    }
    Ok(lines)
}

/// Batches: consecutive events in the same second of event time, at most
/// `size` each (the clock is the batch's last event time).
fn batches(events: &[hxp_plugin_sdk::Event], size: usize) -> Vec<&[hxp_plugin_sdk::Event]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < events.len() {
        let sec = events[start].time_ms.div_euclid(1000);
        let mut end = start + 1;
        while end < events.len()
            && end - start < size
            && events[end].time_ms.div_euclid(1000) == sec
        {
            end += 1;
        }
        out.push(&events[start..end]);
        start = end;
    }
    out
}

/// Recorded events (NDJSON as sent to POST /process), numbered from 1; an
/// event without a timestamp takes the previous one's.
fn read_events(path: &Path, wants_payload: bool) -> anyhow::Result<Vec<hxp_plugin_sdk::Event>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut events: Vec<hxp_plugin_sdk::Event> = Vec::new();
    let mut last_time = chrono::Utc::now().timestamp_millis();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let ev = event::parse(line.as_bytes(), last_time, &event::Acceptance::ALL)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
        last_time = ev.time_ms;
        let mut typed = ev.typed;
        typed.seq = events.len() as u64 + 1;
        if wants_payload {
            typed.payload = Some(ev.data);
        }
        events.push(typed);
    }
    if events.is_empty() {
        bail!("{} holds no events", path.display());
    }
    Ok(events)
}

/// One batch through the plugin under test (a responses plugin gets the
/// upstream stages' window and findings); its output into `line`.
fn run_batch(
    main: &mut Plugin,
    upstream: Option<&mut (Plugin, Plugin)>,
    rows: &[hxp_plugin_sdk::Event],
    now: i64,
    line: &mut Value,
) -> anyhow::Result<()> {
    let batch = &convert::batch_to_wit(hxp_plugin_sdk::EventBatch::from_events(rows));
    match (main.kind(), upstream) {
        (PluginKind::Analytics, _) => {
            main.analytics_process(batch)?;
            let s = convert::snapshot_to_sdk(main.analytics_snapshot()?);
            line["snapshot"] = serde_json::to_value(s)?;
        }
        (PluginKind::Correlation, _) => {
            let r = main.correlation_process(batch)?;
            let findings: Vec<_> = r
                .findings
                .into_iter()
                .map(convert::finding_to_sdk)
                .collect();
            line["findings"] = serde_json::to_value(findings)?;
            line["correlation_score"] = json!(r.correlation_score);
        }
        (PluginKind::Responses, Some((a, c))) => {
            a.analytics_process(batch)?;
            let findings = c.correlation_process(batch)?.findings;
            let input = types::ResponseInput {
                time_ms: now,
                analytics: a.analytics_snapshot()?,
                findings,
            };
            let actions: Vec<_> = main
                .responses_decide(&input)?
                .into_iter()
                .map(convert::action_to_sdk)
                .collect();
            line["actions"] = serde_json::to_value(actions)?;
        }
        (PluginKind::Responses, None) => bail!("a responses plugin needs its upstream stages"),
    }
    Ok(())
}

/// `plugin inspect` as text.
pub fn print_inspect(file: &Path, info: &Value) {
    let md = &info["metadata"];
    println!(
        "file:        {} ({} bytes)",
        file.display(),
        info["size_bytes"]
    );
    println!(
        "sha256:      {}",
        info["sha256"].as_str().unwrap_or_default()
    );
    println!(
        "world:       {}",
        info["world"].as_str().unwrap_or_default()
    );
    println!(
        "wit version: {}",
        info["wit_version"].as_str().unwrap_or_default()
    );
    println!(
        "plugin:      {} {} (state version {}, wants payload: {}, fresh start ok: {})",
        md["name"].as_str().unwrap_or_default(),
        md["version"].as_str().unwrap_or_default(),
        md["state_version"],
        md["wants_payload"],
        md["fresh_start_ok"]
    );
    println!(
        "config:      section `{}`",
        info["config_section"].as_str().unwrap_or_default()
    );
    for (label, key) in [("imports", "imports"), ("exports", "exports")] {
        println!("{label}:");
        for n in info[key].as_array().into_iter().flatten() {
            println!("  {}", n.as_str().unwrap_or_default());
        }
    }
}

/// `plugin wit`: the WIT the host speaks, to standard output or as
/// `dir/events.wit` (a `wit` folder is what wit-bindgen, componentize-py
/// and jco read).
pub fn write_wit(dir: Option<&Path>) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        print!("{}", hxp_plugin_sdk::WIT);
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("events.wit");
    std::fs::write(&path, hxp_plugin_sdk::WIT)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// Options of `plugin backtest`.
#[derive(clap::Args, Clone)]
pub struct BacktestOptions {
    pub file: PathBuf,
    /// The service's database (DATABASE_URL).
    #[arg(long, env = "DATABASE_URL")]
    pub database: String,
    /// Start of the range (RFC 3339 or ms since the epoch), inclusive.
    #[arg(long = "from", value_name = "TIME", value_parser = crate::util::time::parse_time)]
    pub from_ms: i64,
    /// End of the range, exclusive.
    #[arg(long = "to", value_name = "TIME", value_parser = crate::util::time::parse_time)]
    pub until_ms: i64,
    /// Service config (YAML); each plugin gets its stage's section of it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Another plugin to run beside it, as the service runs the live
    /// versions (e.g. the analytics and responses plugins, for the action
    /// requests); repeatable.
    #[arg(long = "with", value_name = "FILE")]
    pub with: Vec<PathBuf>,
    /// Events per batch (default: `stream_processing.batch_size` of
    /// --config, so that the windows responses decide on are the
    /// service's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seconds of events before --from the plugins warm up on (not
    /// counted; at most a day).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=MAX_WARMUP_SECS as i64))]
    pub warmup: u32,
}

/// Run a plugin (beside the `--with` ones) over a stored event-time range
/// of a service's database (fresh or warmed up, clock following the
/// events); the report.
pub fn backtest(engine: &Arc<PluginEngine>, opts: &BacktestOptions) -> anyhow::Result<Value> {
    let warmup_ms = i64::from(opts.warmup) * 1000;
    // The clock starts where the warm-up does.
    let clock = Clock::manual(opts.from_ms - warmup_ms);
    let config = config_from_file(opts.config.as_deref())?;
    let config = config.as_ref();
    let named = |path: &Path| -> anyhow::Result<Box<dyn crate::pipeline::Stage>> {
        let mut p = load(engine, Source::File(path), &clock, config)?;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        p.set_name(Arc::from(&*stem));
        Ok(Box::new(p))
    };
    let candidate = named(&opts.file)?;
    let others: Vec<_> = opts
        .with
        .iter()
        .map(|p| named(p))
        .collect::<Result<_, _>>()?;
    if let Some(twin) = others.iter().find(|o| o.name() == candidate.name()) {
        bail!(
            "--with names a plugin `{}` like the candidate's file: rename one",
            twin.name()
        );
    }
    // The stages switched on, and the batch size, as in the config (its
    // defaults without one).
    let defaults = Config::default();
    let config = config.unwrap_or(&defaults);
    let switches = crate::pipeline::stages::Switches::of(config);
    let batch_size = (opts.batch_size).unwrap_or(config.stream_processing.batch_size);
    let bench = crate::pipeline::backtest::Bench::of_plugins(candidate, others, clock, switches)
        .inhibiting(config.event_correlation.inhibit_rules.clone());
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let store = crate::store::Store::connect_existing(&opts.database).await?;
        let range = (opts.from_ms, opts.until_ms);
        let sizes = (batch_size, warmup_ms);
        let (progress, _following) = tokio::sync::watch::channel(Default::default());
        let watch = crate::pipeline::backtest::Watch {
            progress,
            hold: None,
        };
        crate::pipeline::backtest::run(&store, bench, range, sizes, watch).await
    })?;
    Ok(serde_json::to_value(report)?)
}
