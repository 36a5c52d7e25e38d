//! `hxp-events serve`: wires the store, the plugins, the pipeline and the
//! HTTP API, and shuts them down in order.

use crate::api::{self, AppState};
use crate::config::Config;
use crate::deploy::Deployer;
use crate::pipeline::{self, Stages, StateCache};
use crate::plugin::{Clock, PluginEngine};
use crate::store::Store;
use crate::telemetry::Metrics;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run the service until `shutdown` resolves; then stop intake, drain, and
/// return. `bound` receives the listening address.
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = Arc::new(config);
    let store = Store::connect(&config.database.url, config.database.max_connections).await?;
    let ns_text = store
        .meta_or_insert(
            "processing_namespace",
            &format!("{:015x}", rand_u64() & ((1 << 60) - 1)),
        )
        .await?;
    let namespace =
        u64::from_str_radix(&ns_text, 16).context("stored processing namespace is not hex")?;

    let engine = PluginEngine::new(Some(config.plugins.cache_dir.clone()))?;
    let clock = Clock::manual(crate::store::now_ms());
    let metrics = Arc::new(Metrics::new());
    let states: StateCache = Default::default();
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(16);
    let deployer = Deployer::new(
        engine.clone(),
        store.clone(),
        metrics.clone(),
        clock.clone(),
        states.clone(),
        config.clone(),
        config_path,
        control_tx,
    )?;
    let stages = Stages::new(deployer.initial().await?, clock);
    // Executors: record the previous run's interrupted requests, then wait
    // for jobs from the pipeline's writer.
    let (executors, executor_handle) =
        crate::executor::Executors::start(&config, store.clone(), metrics.clone()).await?;
    let pipeline = pipeline::start(
        config.clone(),
        store.clone(),
        stages,
        metrics.clone(),
        control_rx,
        states,
        executor_handle,
    )
    .await?;
    if config.plugins.watch {
        deployer.watch()?;
    }
    let validators = Arc::new(crate::ingest::pool(
        config.stream_processing.parallel_workers,
    )?);
    let kafka = if config.kafka.bootstrap_servers.is_empty() {
        tracing::info!("kafka.bootstrap_servers is empty: HTTP ingestion only");
        None
    } else {
        Some(crate::kafka::start(
            config.clone(),
            pipeline.handle.clone(),
            metrics.clone(),
            validators.clone(),
            namespace,
        )?)
    };
    let state = Arc::new(AppState {
        config: config.clone(),
        pipeline: pipeline.handle.clone(),
        live: pipeline.live.clone(),
        store: store.clone(),
        metrics,
        engine,
        deployer,
        validators,
        kafka: kafka.as_ref().map(|k| k.status.clone()),
        namespace,
        started,
    });

    let addr: SocketAddr = format!("{}:{}", config.service.host, config.service.port)
        .parse()
        .or_else(|_| format!("127.0.0.1:{}", config.service.port).parse())
        .context("service.host/port")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    // CUSTOM_METRICS_ENDPOINT: a Pushgateway, every update_interval.
    let pusher = crate::push::spawn(&config, state.metrics.clone(), local);
    tracing::info!(
        address = %local, database = ?store.backend(), startup_ms = started.elapsed().as_millis() as u64,
        "{} listening", config.service.name
    );
    if let Some(tx) = bound {
        let _ = tx.send(local);
    }

    // On shutdown: stop intake at once (new events get 503), let in-flight
    // requests finish, drain the pipeline.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handle = pipeline.handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: intake stopped, draining");
        handle.close();
        let _ = stop_tx.send(true);
    });
    let mut server_stop = stop_rx.clone();
    let server =
        axum::serve(listener, api::router(state.clone())).with_graceful_shutdown(async move {
            let _ = server_stop.wait_for(|s| *s).await;
        });
    let grace = Duration::from_secs(config.service.timeout + 5);
    let mut stopped = stop_rx;
    tokio::select! {
        r = server => r.context("HTTP server")?,
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("HTTP requests still open after {grace:?}; closing them"),
    }
    // Kafka: stop polling, let its polls in flight be stored, commit. The
    // pipeline still runs meanwhile.
    let kafka_done = tokio::task::spawn_blocking(move || {
        if let Some(k) = kafka {
            k.stop();
        }
    });
    kafka_done.await.context("kafka consumer")?;
    pipeline.handle.close();
    pipeline.done.await.context("pipeline writer")?;
    // Every stored request was submitted: running and queued ones get their
    // grace, then are recorded as failed.
    executors
        .shutdown(Duration::from_secs(
            config.automated_response.shutdown_grace_secs,
        ))
        .await;
    if let Some(p) = pusher {
        // The final counts.
        p.finish().await;
    }
    store.close().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signals() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn rand_u64() -> u64 {
    let u = uuid::Uuid::new_v4();
    u.as_u64_pair().0 ^ u.as_u64_pair().1
}
