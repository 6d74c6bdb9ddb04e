//! The WebAssembly runtime: compile a plugin once, instantiate it, call `handle`
//! per event under the plugin's limits.
//!
//! - memory: a cap on linear memory per instance (a growth past it traps);
//! - time: a wall-clock deadline per call, enforced by epoch interruption (a
//!   ticker thread advances the engine's epoch; a running guest yields to the
//!   executor at each tick and traps once its deadline has passed);
//! - isolation: a trap or timeout fails that event only. The instance is thrown
//!   away and the next event gets a fresh one (with `init` run again).

pub mod bindings;
mod compile_cache;
mod load;
mod state;

pub use compile_cache::CompileStats;
pub use load::{LoadError, LoadErrorKind};
pub use state::HostState;

use crate::capabilities::{Backends, CallRecord, Grants, OutgoingMessage};
use crate::event::EventRecord;
use crate::manifest::Manifest;
use bindings::{Event, HandleError};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, InstancePre, Linker, TypedFunc};
use wasmtime::{Engine, Store, UpdateDeadline};

/// How often the engine's epoch advances: the granularity of deadlines and of
/// a running guest's yields to the async executor.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// One engine and linker shared by every plugin of a host.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<compile_cache::CompileCache>,
    compiled_without_cache: std::sync::atomic::AtomicU64,
    _ticker: EpochTicker,
}

impl Runtime {
    /// A runtime that compiles every component it loads.
    pub fn new() -> wasmtime::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Handler::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        let ticker = EpochTicker::start(&engine);
        Ok(Runtime {
            engine,
            linker,
            cache: None,
            compiled_without_cache: Default::default(),
            _ticker: ticker,
        })
    }

    /// A runtime that keeps precompiled components in `dir` and reuses them.
    pub fn with_compile_cache(dir: std::path::PathBuf) -> Result<Self, String> {
        let mut runtime = Self::new().map_err(|e| format!("cannot start the runtime: {e}"))?;
        runtime.cache = Some(compile_cache::CompileCache::open(dir, &runtime.engine)?);
        Ok(runtime)
    }

    /// How many components were compiled, and how many came from the cache.
    pub fn compile_stats(&self) -> CompileStats {
        let mut stats = self.cache.as_ref().map(|c| c.stats()).unwrap_or_default();
        stats.compiled += self
            .compiled_without_cache
            .load(std::sync::atomic::Ordering::Relaxed);
        stats
    }

    fn component(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        match &self.cache {
            Some(cache) => cache.component(&self.engine, bytes),
            None => {
                self.compiled_without_cache
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Component::new(&self.engine, bytes)
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile, check and instantiate the plugin at `wasm` with `manifest`. The
    /// first instance is created (and `init` run) here, so every way a plugin can
    /// fail to start is reported by this call.
    pub async fn load(
        &self,
        wasm: &Path,
        manifest: Manifest,
        backends: Backends,
    ) -> Result<Plugin, LoadError> {
        let bytes = load::read_component_bytes(wasm)?;
        let component = self
            .component(&bytes)
            .map_err(|e| LoadError::new(wasm, LoadErrorKind::Compile, load::chain(&e)))?;
        load::check_world(wasm, &self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::new(wasm, LoadErrorKind::WrongWorld, load::chain(&e)))?;
        let hash = load::content_hash(&bytes);
        let mut plugin = Plugin {
            name: manifest.name.clone(),
            hash,
            grants: Arc::new(Grants::from_manifest(&manifest)),
            manifest: Arc::new(manifest),
            backends,
            pre,
            live: None,
            record_calls: false,
        };
        plugin
            .instantiate()
            .await
            .map_err(|failure| LoadError::new(wasm, failure.kind, failure.message))?;
        Ok(plugin)
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (engine, flag) = (engine.weak(), stop.clone());
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawn the epoch ticker thread");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

type HandleFunc = TypedFunc<(Event,), (Result<(), HandleError>,)>;
type InitFunc = TypedFunc<(), (Result<(), String>,)>;

/// A live instance: its store and its `handle` export.
struct Live {
    store: Store<HostState>,
    handle: HandleFunc,
}

/// A loaded plugin, ready to handle events one at a time.
pub struct Plugin {
    name: String,
    hash: String,
    manifest: Arc<Manifest>,
    grants: Arc<Grants>,
    backends: Backends,
    pre: InstancePre<HostState>,
    live: Option<Live>,
    record_calls: bool,
}

/// A loaded plugin without an instance (see [`Plugin::template`]).
#[derive(Clone)]
pub struct PluginTemplate {
    name: String,
    hash: String,
    manifest: Arc<Manifest>,
    grants: Arc<Grants>,
    backends: Backends,
    pre: InstancePre<HostState>,
}

impl PluginTemplate {
    /// A new instance of the plugin, instantiated on its first event.
    pub fn instance(&self) -> Plugin {
        Plugin {
            name: self.name.clone(),
            hash: self.hash.clone(),
            manifest: self.manifest.clone(),
            grants: self.grants.clone(),
            backends: self.backends.clone(),
            pre: self.pre.clone(),
            live: None,
            record_calls: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn content_hash(&self) -> &str {
        &self.hash
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// How one event ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "kebab-case")]
pub enum Outcome {
    /// The handler returned `ok`.
    Handled,
    /// The handler asked for a retry (`handle-error.retry`).
    Retry(String),
    /// The handler rejected the event (`handle-error.reject`).
    Reject(String),
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access).
    Trap(String),
    /// The call ran past the plugin's `limits.timeout`.
    Timeout(String),
    /// The plugin grew its memory past `limits.memory`.
    OutOfMemory(String),
    /// The instance could not be recreated after an earlier failure (e.g. `init` failed).
    Unavailable(String),
}

impl Outcome {
    pub fn is_handled(&self) -> bool {
        matches!(self, Outcome::Handled)
    }

    /// Failures worth retrying: everything but a rejection.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Outcome::Handled | Outcome::Reject(_))
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Retry(_) => "retry",
            Outcome::Reject(_) => "rejected",
            Outcome::Trap(_) => "trapped",
            Outcome::Timeout(_) => "timed out",
            Outcome::OutOfMemory(_) => "out of memory",
            Outcome::Unavailable(_) => "unavailable",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Handled => None,
            Outcome::Retry(r)
            | Outcome::Reject(r)
            | Outcome::Trap(r)
            | Outcome::Timeout(r)
            | Outcome::OutOfMemory(r)
            | Outcome::Unavailable(r) => Some(r),
        }
    }
}

/// Everything one call produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Messages to publish; empty unless the outcome is `Handled`.
    pub published: Vec<OutgoingMessage>,
    /// Capability calls, when call recording is on.
    pub calls: Vec<CallRecord>,
    /// Lines the plugin wrote to stdout or stderr (`stdout: ...`), when call
    /// recording is on; they are always logged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
    pub duration_us: u64,
}

/// Why an instance could not be made, and how to classify it.
struct InstantiateFailure {
    kind: LoadErrorKind,
    message: String,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the component's bytes.
    pub fn content_hash(&self) -> &str {
        &self.hash
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Another instance of the same plugin (same compiled component, grants and
    /// backends), instantiated on its first event: one per worker.
    pub fn fork(&self) -> Plugin {
        self.template().instance()
    }

    /// The plugin without its instance: shareable between threads, and what
    /// workers make their instances from.
    pub fn template(&self) -> PluginTemplate {
        PluginTemplate {
            name: self.name.clone(),
            hash: self.hash.clone(),
            manifest: self.manifest.clone(),
            grants: self.grants.clone(),
            backends: self.backends.clone(),
            pre: self.pre.clone(),
        }
    }

    /// Keep a record of every capability call in each [`Report`] (for `weir invoke`).
    pub fn record_calls(&mut self, on: bool) {
        self.record_calls = on;
        if let Some(live) = &mut self.live {
            live.store.data_mut().record_calls = on;
        }
    }

    async fn instantiate(&mut self) -> Result<(), InstantiateFailure> {
        let limits = &self.manifest.limits;
        let state = HostState::new(
            self.grants.clone(),
            self.backends.clone(),
            limits.memory.as_u64() as usize,
            self.record_calls,
        );
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|ctx| {
            if ctx.data().deadline.is_some_and(|d| Instant::now() >= d) {
                Err(wasmtime::Error::new(state::DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let timeout = limits.timeout;
        arm_deadline(&mut store, timeout);
        let failed = |kind, message| InstantiateFailure { kind, message };

        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| failed(LoadErrorKind::Instantiate, classify(&store, &e, timeout).1))?;
        let handle: HandleFunc = instance.get_typed_func(&mut store, "handle").map_err(|e| {
            failed(
                LoadErrorKind::WrongWorld,
                format!(
                    "its `handle` export does not match weir:plugin/handler@0.1.0: {}",
                    load::chain(&e)
                ),
            )
        })?;
        if instance
            .get_export_index(&mut store, None, "init")
            .is_some()
        {
            let init: InitFunc = instance.get_typed_func(&mut store, "init").map_err(|e| {
                failed(
                    LoadErrorKind::WrongWorld,
                    format!(
                        "its `init` export does not match weir:plugin/handler@0.1.0: {}",
                        load::chain(&e)
                    ),
                )
            })?;
            arm_deadline(&mut store, timeout);
            match init.call_async(&mut store, ()).await {
                Ok((Ok(()),)) => {}
                Ok((Err(reason),)) => {
                    return Err(failed(
                        LoadErrorKind::Init,
                        format!("init failed: {reason}"),
                    ))
                }
                Err(e) => {
                    let (_, why) = classify(&store, &e, timeout);
                    return Err(failed(LoadErrorKind::Init, format!("init failed: {why}")));
                }
            }
        }
        store.data_mut().deadline = None;
        self.live = Some(Live { store, handle });
        Ok(())
    }

    /// Handle one event. Never panics and never fails: every way the plugin can
    /// fail is an [`Outcome`].
    pub async fn handle(&mut self, event: &EventRecord) -> Report {
        let started = Instant::now();
        if self.live.is_none() {
            if let Err(failure) = self.instantiate().await {
                return Report {
                    outcome: Outcome::Unavailable(failure.message),
                    published: vec![],
                    calls: vec![],
                    output: vec![],
                    duration_us: started.elapsed().as_micros() as u64,
                };
            }
        }
        let timeout = self.manifest.limits.timeout;
        let live = self.live.as_mut().expect("instantiated above");
        live.store.data_mut().begin_event(event.coordinates());
        arm_deadline(&mut live.store, timeout);
        let result = live
            .handle
            .call_async(&mut live.store, (event.to_wit(),))
            .await;
        let effects = live.store.data_mut().end_event();
        let outcome = match result {
            Ok((Ok(()),)) => Outcome::Handled,
            Ok((Err(HandleError::Retry(r)),)) => Outcome::Retry(r),
            Ok((Err(HandleError::Reject(r)),)) => Outcome::Reject(r),
            Err(e) => {
                let (mut outcome, _) = classify(&live.store, &e, timeout);
                if let (Outcome::Trap(reason), Some(panic)) = (&mut outcome, effects.panic) {
                    *reason = format!("{reason}: {panic}");
                }
                // The instance may be in any state after a trap: never reuse it.
                self.live = None;
                outcome
            }
        };
        let published = if outcome.is_handled() {
            effects.outbox
        } else {
            vec![]
        };
        Report {
            outcome,
            published,
            calls: effects.calls,
            output: effects.output,
            duration_us: started.elapsed().as_micros() as u64,
        }
    }
}

fn arm_deadline(store: &mut Store<HostState>, timeout: Duration) {
    store.data_mut().deadline = Some(Instant::now() + timeout);
    store.set_epoch_deadline(1);
}

/// Turn a failed call into an outcome and a one-line reason.
fn classify(
    store: &Store<HostState>,
    err: &wasmtime::Error,
    timeout: Duration,
) -> (Outcome, String) {
    if err.downcast_ref::<state::DeadlineExceeded>().is_some() {
        let why = format!(
            "did not finish within limits.timeout = {}",
            humantime::format_duration(timeout)
        );
        return (Outcome::Timeout(why.clone()), why);
    }
    if let Some(e) = err.downcast_ref::<state::MemoryLimitExceeded>() {
        let why = e.to_string();
        return (Outcome::OutOfMemory(why.clone()), why);
    }
    if let Some(desired) = store.data().limiter.exceeded {
        let why = state::MemoryLimitExceeded {
            desired,
            limit: store.data().limiter.limit,
        }
        .to_string();
        return (Outcome::OutOfMemory(why.clone()), why);
    }
    let why = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("{trap}{}", load::guest_frames(err)),
        None => load::chain(err),
    };
    (Outcome::Trap(why.clone()), why)
}
