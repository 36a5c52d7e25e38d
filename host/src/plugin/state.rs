//! What each plugin store carries: an empty WASI context, the memory limiter,
//! the clock the plugin sees, and the implementation of `hxp:events/host`.

use super::bindings::{host, types};
use super::pipe::TailPipe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{HostWallClock, ResourceTable, WasiCtx, WasiCtxView, WasiView};

/// Log lines a plugin may write per call; the rest are counted and dropped.
pub const MAX_LOGS_PER_CALL: u32 = 100;
/// Longest log message kept.
const MAX_LOG_LEN: usize = 4096;

/// The time a plugin sees, through `host.now-ms` and WASI's wall clock.
#[derive(Clone, Debug)]
pub enum Clock {
    System,
    /// Driven by the caller (tests, `plugin test` replaying recorded events).
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual(start_ms: i64) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start_ms)))
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => chrono::Utc::now().timestamp_millis(),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }

    /// Set a manual clock; no effect on the system clock.
    pub fn set_ms(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.store(ms, Ordering::Relaxed);
        }
    }
}

impl HostWallClock for Clock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms().max(0) as u64)
    }
}

/// Caps linear memory growth and remembers that it did.
pub struct Limiter {
    pub memory_bytes: usize,
    pub hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: Limiter,
    pub clock: Clock,
    /// Plugin name, for log lines.
    pub plugin: Arc<str>,
    pub stderr: TailPipe,
    pub logs_this_call: u32,
    pub logs_dropped: u64,
}

impl HostState {
    pub fn new(plugin: Arc<str>, clock: Clock, memory_bytes: usize) -> HostState {
        let stderr = TailPipe::default();
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .stdout(stderr.clone())
            .wall_clock(clock.clone())
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_bytes,
                hit: false,
            },
            clock,
            plugin,
            stderr,
            logs_this_call: 0,
            logs_dropped: 0,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: types::LogLevel, message: String, fields: Vec<(String, String)>) {
        self.logs_this_call += 1;
        if self.logs_this_call > MAX_LOGS_PER_CALL {
            self.logs_dropped += 1;
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LEN {
            let mut cut = MAX_LOG_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let fields: String = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!(" {k}={v:?}"))
            .collect();
        let plugin = &*self.plugin;
        match level {
            types::LogLevel::Trace => {
                tracing::trace!(target: "plugin", plugin, "{message}{fields}")
            }
            types::LogLevel::Debug => {
                tracing::debug!(target: "plugin", plugin, "{message}{fields}")
            }
            types::LogLevel::Info => tracing::info!(target: "plugin", plugin, "{message}{fields}"),
            types::LogLevel::Warn => tracing::warn!(target: "plugin", plugin, "{message}{fields}"),
            types::LogLevel::Error => {
                tracing::error!(target: "plugin", plugin, "{message}{fields}")
            }
        }
    }

    fn now_ms(&mut self) -> i64 {
        self.clock.now_ms()
    }
}
