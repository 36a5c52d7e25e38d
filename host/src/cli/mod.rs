//! The command line: `serve` (the service), `loadgen` (a load generator for
//! a running service, its incident scenario and the scorer of the alerts
//! raised on it) and `plugin` (tools for plugin authors).

mod deploy;
mod expect;
pub mod labels;
pub mod loadgen;
mod loadgen_cli;
pub mod plugin;
pub mod scaffold;
pub mod scenario;
pub mod score;
pub mod serve;

use crate::config::Config;
use crate::plugin::PluginEngine;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Real-time event processing with sandboxed WebAssembly plugins.
#[derive(Parser)]
#[command(name = "hxp-events", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the event-processing-api service.
    Serve {
        /// Service config (YAML); without it, built-in defaults. Environment
        /// variables override either.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Send a realistic mix of events to a running service; with
    /// `--scenario incidents`, a stream with planted incidents and their
    /// labels; `loadgen score` measures the alerts raised on it.
    Loadgen(loadgen_cli::LoadgenArgs),
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Show a plugin file's world, WIT version and metadata.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin offline on recorded events (NDJSON, one event per line as
    /// sent to POST /process); the plugin's clock follows the events' times.
    /// Prints one JSON line per batch.
    Test {
        file: PathBuf,
        #[arg(long)]
        events: PathBuf,
        /// Service config (YAML); the plugin gets its section of it.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// Analytics stage feeding a responses plugin (default: the
        /// default plugin this binary carries).
        #[arg(long)]
        analytics: Option<PathBuf>,
        /// Correlation stage feeding a responses plugin (default: the
        /// default plugin this binary carries).
        #[arg(long)]
        correlation: Option<PathBuf>,
        /// Compare the output with this file (NDJSON as printed) and fail
        /// with the differences; prints nothing else when they agree.
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
    },
    /// Create a plugin project that builds with `make` and passes `make
    /// test` out of the box.
    New {
        name: String,
        #[arg(long, value_enum)]
        stage: crate::plugin::PluginKind,
        #[arg(long, value_enum, default_value = "rust")]
        lang: scaffold::Lang,
        /// Where to create it (default: ./NAME); must be empty or absent.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a plugin (beside the `--with` ones) over the events a service
    /// stored for an event-time range (fresh or warmed up, clock following
    /// the events) and compare its alerts and action requests with those
    /// the live versions recorded. Prints JSON.
    Backtest(plugin::BacktestOptions),
    /// Deploy a plugin to a running service (PUT /plugins/{name}): the same
    /// checks and swap as a file in its plugin directory, kept across
    /// restarts.
    Deploy(DeployArgs),
    /// Write the WIT this host speaks (`hxp:events`), for the tools of
    /// other languages (componentize-py, jco): to standard output, or as
    /// DIR/events.wit.
    Wit {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `plugin deploy`'s arguments.
#[derive(clap::Args)]
struct DeployArgs {
    file: PathBuf,
    /// The service, e.g. http://127.0.0.1:9100.
    #[arg(long, env = "HXP_EVENTS_URL", default_value = "http://127.0.0.1:9100")]
    url: String,
    /// An admin token of the service (service.admin_token(s)).
    #[arg(long, env = "HXP_EVENTS_TOKEN", hide_env_values = true)]
    token: String,
    /// The plugin's name (default: the file's name without .wasm).
    #[arg(long)]
    name: Option<String>,
    /// Manifest keys (see the README's plugin manifest).
    #[arg(long, value_enum)]
    stage: Option<crate::plugin::PluginKind>,
    #[arg(long)]
    order: Option<i32>,
    #[arg(long)]
    config: Option<String>,
    #[arg(long)]
    deadline_ms: Option<u64>,
    #[arg(long)]
    memory_mb: Option<u64>,
    /// A CA certificate (PEM) to trust for an https URL.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Run it in the shadow of the live version of its name (it acts on
    /// nothing; GET /plugins/NAME/shadow reports what it would have done).
    #[arg(long)]
    shadow: bool,
}

/// Parse the command line and run it; the process exit code.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve_command(config),
        Command::Loadgen(args) => loadgen_cli::run(args),
        Command::Plugin(cmd) => plugin_command(cmd),
    }
}

fn plugin_command(cmd: PluginCommand) -> anyhow::Result<()> {
    match cmd {
        PluginCommand::Inspect { file, json } => {
            init_logging("warn");
            let engine = PluginEngine::new(None)?;
            let info = plugin::inspect(&engine, &file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                plugin::print_inspect(&file, &info);
            }
            Ok(())
        }
        PluginCommand::Test {
            file,
            events,
            config,
            batch_size,
            analytics,
            correlation,
            expect,
        } => {
            anyhow::ensure!(batch_size > 0, "--batch-size must be at least 1");
            let opts = plugin::TestOptions {
                file,
                events,
                config,
                batch_size,
                analytics,
                correlation,
            };
            test_command(&opts, expect.as_deref())
        }
        PluginCommand::New {
            name,
            stage,
            lang,
            dir,
        } => {
            let opts = scaffold::NewOptions {
                name,
                stage,
                lang,
                dir,
            };
            let dir = scaffold::new_project(&opts)?;
            println!("{}", scaffold::next_steps(&dir, lang));
            Ok(())
        }
        PluginCommand::Wit { out } => plugin::write_wit(out.as_deref()),
        PluginCommand::Deploy(args) => deploy_command(args),
        PluginCommand::Backtest(opts) => {
            init_logging("warn");
            let engine = PluginEngine::new(None)?;
            let report = plugin::backtest(&engine, &opts).context("plugin backtest")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

/// `plugin test`: the output printed, or compared with `--expect`.
fn test_command(
    opts: &plugin::TestOptions,
    expect: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    init_logging("warn");
    let engine = PluginEngine::new(None)?;
    let lines = plugin::test(&engine, opts).context("plugin test")?;
    match expect {
        Some(path) => check_expected(&lines, path),
        None => print_lines(&lines),
    }
}

/// `plugin deploy`: the manifest keys as query parameters, one line about
/// the deployment.
fn deploy_command(args: DeployArgs) -> anyhow::Result<()> {
    let DeployArgs {
        file,
        url,
        token,
        name,
        stage,
        order,
        config,
        deadline_ms,
        memory_mb,
        ca,
        shadow,
    } = args;
    let stage = stage.map(|s| s.as_str().to_string());
    let manifest = [
        ("stage", stage),
        ("order", order.map(|o| o.to_string())),
        ("config", config),
        ("deadline_ms", deadline_ms.map(|d| d.to_string())),
        ("memory_mb", memory_mb.map(|m| m.to_string())),
        ("mode", shadow.then(|| "shadow".to_string())),
    ];
    let opts = deploy::DeployOptions {
        file,
        url,
        token,
        name,
        manifest: manifest
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
        ca,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let deployment = runtime.block_on(deploy::deploy(&opts))?;
    println!("{}", deploy::summary(&deployment));
    Ok(())
}

/// `plugin test` output: one JSON line per batch.
fn print_lines(lines: &[serde_json::Value]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// `plugin test --expect`: nothing but a count when the output is the
/// expected one, else the differences and an error.
fn check_expected(lines: &[serde_json::Value], path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match expect::compare(lines, &text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
        None => {
            println!(
                "ok: {} batches as expected in {}",
                lines.len(),
                path.display()
            );
            Ok(())
        }
        Some(diff) => {
            eprintln!("output differs from {}:\n{diff}", path.display());
            anyhow::bail!("plugin test: the output is not the expected one")
        }
    }
}

/// `serve`: the config, logging, the runtime, the service until a signal.
fn serve_command(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    init_logging(&config.performance.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.service.workers)
        .thread_name("http")
        .enable_all()
        .build()?;
    runtime.block_on(serve::run(config, config_path, serve::signals(), None))
}

fn init_logging(default_level: &str) {
    let level = match default_level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_string(),
        l => l.to_string(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!("{level},sqlx=warn"))
            }),
        )
        .with_writer(std::io::stderr)
        // No colour codes in journald or in files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
