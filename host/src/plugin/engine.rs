//! The one wasmtime [`Engine`] of the process, its epoch ticker, the on-disk
//! compile cache, and loading/validating plugin files.

use super::bindings::{self, WIT_PACKAGE, WIT_VERSION};
use super::error::LoadError;
use super::state::HostState;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

/// Epoch ticks are this long; call deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The three plugin worlds.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    Analytics,
    Correlation,
    Responses,
}

impl PluginKind {
    pub const ALL: [PluginKind; 3] = [
        PluginKind::Analytics,
        PluginKind::Correlation,
        PluginKind::Responses,
    ];

    /// The stage interface a component of this kind exports.
    pub fn interface(self) -> &'static str {
        match self {
            PluginKind::Analytics => "analytics",
            PluginKind::Correlation => "correlation",
            PluginKind::Responses => "responses",
        }
    }

    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Analytics => "analytics-plugin",
            PluginKind::Correlation => "correlation-plugin",
            PluginKind::Responses => "responses-plugin",
        }
    }

    pub fn as_str(self) -> &'static str {
        self.interface()
    }

    /// The config section a plugin of this kind is configured with, unless
    /// its manifest names another.
    pub fn config_section(self) -> &'static str {
        match self {
            PluginKind::Analytics => "real_time_analytics",
            PluginKind::Correlation => "event_correlation",
            PluginKind::Responses => "automated_response",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pre-instantiated component of one world: instantiating it is cheap.
#[derive(Clone)]
pub enum Pre {
    Analytics(bindings::analytics::AnalyticsPluginPre<HostState>),
    Correlation(bindings::correlation::CorrelationPluginPre<HostState>),
    Responses(bindings::responses::ResponsesPluginPre<HostState>),
}

/// A validated, compiled plugin file, ready to instantiate.
#[derive(Clone)]
pub struct LoadedComponent {
    pub kind: PluginKind,
    /// `hxp:events` version the component was built against.
    pub wit_version: String,
    /// SHA-256 of the file, hex.
    pub hash: String,
    pub size: usize,
    /// Where it came from (a path, or a label).
    pub origin: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Time spent compiling or loading from the cache.
    pub load_time: Duration,
    pub from_cache: bool,
    pub pre: Pre,
}

struct TickerGuard(Arc<AtomicBool>);

impl Drop for TickerGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Engine, linker and compile cache, shared by every plugin.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    _ticker: TickerGuard,
}

impl PluginEngine {
    /// `cache_dir`: where compiled components are kept by content hash (none:
    /// compile every time).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<PluginEngine>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        config.profiler(profiler_from_env());
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<HostState>::new(&engine);
        // Rust guests import WASI through std; the context they get is empty
        // (no dirs, env, args or sockets), with the host's clock.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::analytics::AnalyticsPlugin::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Arc::new(PluginEngine {
            engine,
            linker,
            cache_dir,
            _ticker: TickerGuard(stop),
        }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// Read, validate and compile a plugin file.
    pub fn load_file(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// Validate and compile component bytes. `origin` names them in errors.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<LoadedComponent, LoadError> {
        let origin_s = origin.to_string();
        check_header(bytes, origin)?;
        let hash = hex::encode(Sha256::digest(bytes));
        let started = Instant::now();
        let (component, from_cache) =
            self.compile(bytes, &hash).map_err(|e| LoadError::Invalid {
                path: origin_s.clone(),
                message: format!("{e:#}"),
            })?;
        let load_time = started.elapsed();
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let (kind, wit_version) = world_of(&exports, origin)?;
        if let Some(bad) = imports.iter().find(|i| !import_allowed(i)) {
            return Err(LoadError::ForbiddenImport {
                path: origin_s,
                import: bad.clone(),
            });
        }
        let pre = self.pre_instantiate(&component, kind, origin)?;
        Ok(LoadedComponent {
            kind,
            wit_version,
            hash,
            size: bytes.len(),
            origin: origin_s,
            imports,
            exports,
            load_time,
            from_cache,
            pre,
        })
    }

    /// Link the component's imports once; instances are then cheap.
    fn pre_instantiate(
        &self,
        component: &Component,
        kind: PluginKind,
        origin: &str,
    ) -> Result<Pre, LoadError> {
        let incompatible = |message: String| LoadError::Incompatible {
            path: origin.to_string(),
            message,
        };
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| incompatible(format!("{e:#}")))?;
        let typed = match kind {
            PluginKind::Analytics => {
                bindings::analytics::AnalyticsPluginPre::new(pre).map(Pre::Analytics)
            }
            PluginKind::Correlation => {
                bindings::correlation::CorrelationPluginPre::new(pre).map(Pre::Correlation)
            }
            PluginKind::Responses => {
                bindings::responses::ResponsesPluginPre::new(pre).map(Pre::Responses)
            }
        };
        typed.map_err(|e| {
            incompatible(format!(
                "does not implement the {} world of {WIT_PACKAGE}@{WIT_VERSION}: {e:#}",
                kind.world()
            ))
        })
    }

    /// Compile, or load the compiled artifact from the cache. The cache key
    /// is the file's hash plus the engine's compatibility hash, so a new
    /// wasmtime or different settings never load a stale artifact.
    fn compile(&self, bytes: &[u8], hash: &str) -> anyhow::Result<(Component, bool)> {
        let Some(dir) = &self.cache_dir else {
            return Ok((Component::from_binary(&self.engine, bytes)?, false));
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let path = dir.join(format!("{hash}-{:016x}.cwasm", h.finish()));
        // Read into memory rather than mmap: a cache file replaced or
        // truncated behind our back must not fault a running service.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: the file was written by `precompile_component` of an
            // engine with the same compatibility hash, into a directory only
            // this service writes to; wasmtime checks its header and
            // compatibility before using it.
            match unsafe { Component::deserialize(&self.engine, &artifact) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "compile cache entry unusable; recompiling")
                }
            }
        }
        let compiled = self.engine.precompile_component(bytes)?;
        // SAFETY: produced just above by this engine.
        let component = unsafe { Component::deserialize(&self.engine, &compiled)? };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if let Err(e) = std::fs::write(&tmp, &compiled).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), error = %e, "could not write the compile cache");
            let _ = std::fs::remove_file(&tmp);
        }
        Ok((component, false))
    }
}

/// Which world a component implements (by the stage interface of our
/// package it exports), and the package version it was built against.
fn world_of(exports: &[String], origin: &str) -> Result<(PluginKind, String), LoadError> {
    let ours: Vec<(String, String)> = exports
        .iter()
        .filter_map(|n| split_name(n))
        .filter(|(pkg, _, _)| pkg == WIT_PACKAGE)
        .map(|(_, iface, ver)| (iface, ver))
        .collect();
    let found = PluginKind::ALL.into_iter().find_map(|k| {
        ours.iter()
            .find(|(i, _)| i == k.interface())
            .map(|(_, v)| (k, v.clone()))
    });
    let Some((kind, wit_version)) = found else {
        return Err(LoadError::WrongWorld {
            path: origin.to_string(),
            exports: exports.to_vec(),
        });
    };
    if wit_version != WIT_VERSION {
        return Err(LoadError::WrongVersion {
            path: origin.to_string(),
            found: format!("{WIT_PACKAGE}@{wit_version}"),
            supported: format!("{WIT_PACKAGE}@{WIT_VERSION}"),
        });
    }
    Ok((kind, wit_version))
}

/// Split "ns:pkg/iface@ver" into ("ns:pkg", "iface", "ver").
fn split_name(name: &str) -> Option<(String, String, String)> {
    let (pkg, rest) = name.split_once('/')?;
    let (iface, ver) = rest.split_once('@').unwrap_or((rest, ""));
    Some((pkg.to_string(), iface.to_string(), ver.to_string()))
}

/// Plugins may import WASI (which the host links with no capabilities) and
/// our host interface; nothing else.
fn import_allowed(name: &str) -> bool {
    name.starts_with("wasi:")
        || name == format!("{WIT_PACKAGE}/host@{WIT_VERSION}")
        || name == format!("{WIT_PACKAGE}/types@{WIT_VERSION}")
}

fn check_header(bytes: &[u8], origin: &str) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            path: origin.to_string(),
            size: bytes.len(),
        });
    }
    // Core modules have version 1 and layer 0; components layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule {
            path: origin.to_string(),
        });
    }
    Ok(())
}

/// `HXP_WASM_PROFILER=perfmap` (or `jitdump`): the JIT tells `perf` the
/// names of the plugins' compiled functions (/tmp/perf-PID.map, or
/// `perf inject --jit` on a jitdump), so `perf record` of the service or a
/// bench shows where a plugin spends its time. Off otherwise: it costs a
/// write per compiled function.
fn profiler_from_env() -> wasmtime::ProfilingStrategy {
    match std::env::var("HXP_WASM_PROFILER").as_deref() {
        Ok("perfmap") => wasmtime::ProfilingStrategy::PerfMap,
        Ok("jitdump") => wasmtime::ProfilingStrategy::JitDump,
        _ => wasmtime::ProfilingStrategy::None,
    }
}
