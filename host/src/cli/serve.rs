//! `hxp-events serve`: wires the store, the plugins, the pipeline, the
//! sources and the HTTP API, and shuts them down in order.

use crate::actions::Executors;
use crate::api::{self, AppState};
use crate::config::Config;
use crate::deploy::Deployer;
use crate::pipeline::suppress::{SilenceBoard, Suppressor};
use crate::pipeline::{self, Parts, Pipeline, Stages, StateCache};
use crate::plugin::{Clock, PluginEngine};
use crate::sources::kafka::{self, KafkaSource};
use crate::store::{Store, retention};
use crate::telemetry::{Metrics, push};
use crate::tls::{self, TlsListener};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The running parts, in the order they stop.
struct Running {
    config: Arc<Config>,
    store: Store,
    pipeline: Pipeline,
    executors: Executors,
    kafka: Option<KafkaSource>,
}

/// Run the service until `shutdown` resolves; then stop intake, drain, and
/// return. `bound` receives the listening address.
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // A certificate that cannot be used stops the start before anything runs.
    let tls = tls::server_config(&config.tls.server)?;
    let (running, state) = start(Arc::new(config), config_path, started).await?;
    let config = running.config.clone();
    let listener = bind(&config).await?;
    let local = listener.local_addr()?;
    // CUSTOM_METRICS_ENDPOINT: a Pushgateway, every update_interval.
    let pusher = push::spawn(&config, state.metrics.clone(), local);
    let retention = (config.database.retention_secs > 0).then(|| {
        let keep = Duration::from_secs(config.database.retention_secs);
        tokio::spawn(retention::run(
            running.store.clone(),
            keep,
            state.metrics.clone(),
        ))
    });
    tracing::info!(
        address = %local, scheme = if tls.is_some() { "https" } else { "http" },
        database = ?running.store.backend(), startup_ms = started.elapsed().as_millis() as u64,
        "{} listening", config.service.name
    );
    if let Some(tx) = bound {
        let _ = tx.send(local);
    }
    serve_http(listener, tls, state, &running.pipeline, shutdown).await?;
    if let Some(r) = retention {
        r.abort();
    }
    drain(running).await?;
    if let Some(p) = pusher {
        // The final counts.
        p.finish().await;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Store, plugins, executors, pipeline and sources, up and running; and the
/// state the API handlers share.
async fn start(
    config: Arc<Config>,
    config_path: Option<std::path::PathBuf>,
    started: Instant,
) -> anyhow::Result<(Running, Arc<AppState>)> {
    let store = Store::connect(&config.database.url, config.database.max_connections).await?;
    let namespace = processing_namespace(&store).await?;
    let engine = PluginEngine::new(Some(config.plugins.cache_dir.clone()))?;
    let clock = Clock::manual(crate::store::now_ms());
    let metrics = Arc::new(Metrics::new());
    let states: StateCache = Default::default();
    let (control_tx, control_rx) = tokio::sync::mpsc::channel(16);
    let (quarantine_tx, quarantine_rx) = tokio::sync::mpsc::unbounded_channel();
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
    // Silences from the store; inhibit rules from the config.
    let silences = SilenceBoard::load(&store).await?;
    let inhibit = config.event_correlation.inhibit_rules.clone();
    let mut stages = Stages::new(deployer.initial().await?, clock);
    stages.suppressor = Suppressor::new(silences.clone(), inhibit);
    // Executors: record the previous run's interrupted requests, then wait
    // for jobs from the pipeline's writer.
    let (executors, executor) = Executors::start(&config, store.clone(), metrics.clone()).await?;
    let pipeline = pipeline::start(Parts {
        config: config.clone(),
        store: store.clone(),
        stages,
        metrics: metrics.clone(),
        control: control_rx,
        states,
        executor,
        quarantined: Some(quarantine_tx),
    })
    .await?;
    deployer.follow_quarantines(quarantine_rx);
    deployer.start_file_shadows().await;
    if config.plugins.watch {
        deployer.watch()?;
    }
    let validators = Arc::new(crate::sources::validate::pool(
        config.stream_processing.parallel_workers,
    )?);
    let kafka = if config.kafka.bootstrap_servers.is_empty() {
        tracing::info!("kafka.bootstrap_servers is empty: HTTP ingestion only");
        None
    } else {
        Some(kafka::start(
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
        silences,
        namespace,
        started,
    });
    let running = Running {
        config,
        store,
        pipeline,
        executors,
        kafka,
    };
    Ok((running, state))
}

/// Processing ids carry this database's namespace, chosen once.
async fn processing_namespace(store: &Store) -> anyhow::Result<u64> {
    let fresh = format!("{:015x}", rand_u64() & ((1 << 60) - 1));
    let text = store.meta_or_insert("processing_namespace", &fresh).await?;
    u64::from_str_radix(&text, 16).context("stored processing namespace is not hex")
}

async fn bind(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = format!("{}:{}", config.service.host, config.service.port)
        .parse()
        .or_else(|_| format!("127.0.0.1:{}", config.service.port).parse())
        .context("service.host/port")?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Serve until `shutdown`: then intake stops at once (new events get 503)
/// and open requests get `service.timeout` + 5 s to finish.
async fn serve_http(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<AppState>,
    pipeline: &Pipeline,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handle = pipeline.handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested: intake stopped, draining");
        handle.close();
        let _ = stop_tx.send(true);
    });
    let grace = Duration::from_secs(state.config.service.timeout + 5);
    let mut server_stop = stop_rx.clone();
    let stopping = async move {
        let _ = server_stop.wait_for(|s| *s).await;
    };
    // The client's address reaches the handlers (the deployment history
    // records who deployed from where).
    let router = api::router(state).into_make_service_with_connect_info::<crate::tls::ClientAddr>();
    let server = async move {
        match tls {
            None => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopping)
                    .await
            }
            Some(tls) => {
                axum::serve(TlsListener::new(listener, tls)?, router)
                    .with_graceful_shutdown(stopping)
                    .await
            }
        }
    };
    let mut stopped = stop_rx;
    tokio::select! {
        r = server => r.context("HTTP server")?,
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("HTTP requests still open after {grace:?}; closing them"),
    }
    Ok(())
}

/// Stop Kafka (its polls in flight are stored and committed while the
/// pipeline still runs), drain the pipeline, give the executors their
/// grace, close the store.
async fn drain(running: Running) -> anyhow::Result<()> {
    let Running {
        config,
        store,
        pipeline,
        executors,
        kafka,
    } = running;
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
    let grace = Duration::from_secs(config.automated_response.shutdown_grace_secs);
    executors.shutdown(grace).await;
    store.close().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signals() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!("no SIGTERM handler ({e}); stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
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
