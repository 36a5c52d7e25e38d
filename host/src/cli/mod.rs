//! The command line: `serve` (the service), `loadgen` (a load generator for
//! a running service) and `plugin` (tools for plugin authors).

pub mod loadgen;
pub mod plugin;
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
    /// Send a realistic mix of events to a running service.
    Loadgen {
        /// Events per second.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value = "http://127.0.0.1:9100")]
        target: String,
        /// Events per request (POST /events, NDJSON).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// No progress lines, only the summary.
        #[arg(long)]
        quiet: bool,
    },
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
        /// Analytics stage feeding a responses plugin.
        #[arg(long, default_value = "target/plugins/analytics.wasm")]
        analytics: PathBuf,
        /// Correlation stage feeding a responses plugin.
        #[arg(long, default_value = "target/plugins/correlation.wasm")]
        correlation: PathBuf,
    },
    /// Write the WIT this host speaks (`hxp:events`), for the tools of
    /// other languages (componentize-py, jco): to standard output, or as
    /// DIR/events.wit.
    Wit {
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
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
        Command::Loadgen {
            rate,
            duration,
            target,
            batch,
            concurrency,
            seed,
            quiet,
        } => {
            anyhow::ensure!(
                rate > 0 && batch > 0 && concurrency > 0,
                "--rate, --batch and --concurrency must be at least 1"
            );
            let runtime = tokio::runtime::Runtime::new()?;
            let summary = runtime.block_on(loadgen::run(loadgen::Options {
                target,
                rate,
                duration: std::time::Duration::from_secs_f64(duration),
                batch,
                concurrency,
                seed,
                quiet,
            }))?;
            loadgen::print_summary(&summary);
            Ok(())
        }
        Command::Plugin(PluginCommand::Inspect { file, json }) => {
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
        Command::Plugin(PluginCommand::Test {
            file,
            events,
            config,
            batch_size,
            analytics,
            correlation,
        }) => {
            anyhow::ensure!(batch_size > 0, "--batch-size must be at least 1");
            init_logging("warn");
            let engine = PluginEngine::new(None)?;
            let opts = plugin::TestOptions {
                file,
                events,
                config,
                batch_size,
                analytics,
                correlation,
            };
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            plugin::test(&engine, &opts, &mut out).context("plugin test")
        }
        Command::Plugin(PluginCommand::Wit { out }) => plugin::write_wit(out.as_deref()),
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
