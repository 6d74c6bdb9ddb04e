//! The WebAssembly runtime: compile a plugin once, instantiate it, call `handle`
//! per event under the plugin's limits.
//!
//! - memory: a cap on linear memory per instance (a growth past it traps);
//! - time: a wall-clock deadline per call, enforced by epoch interruption (a
//!   ticker thread advances the engine's epoch; a running guest yields to the
//!   executor at each tick and traps once its deadline has passed);
//! - isolation: a trap or timeout fails that event only. The instance is thrown
//!   away and the next event gets a fresh one (with `init` run again).

mod compile_cache;
mod load;
mod state;

pub use compile_cache::CompileStats;
pub use load::{LoadError, LoadErrorKind};
pub use state::HostState;

use crate::bindings::{self, HandleError};
use crate::capabilities::{Backends, CallRecord, Grants, OutgoingMessage, ScheduleChange};
use crate::event::{EventRecord, EventView};
use crate::manifest::Manifest;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Func, InstancePre, Linker, TypedFunc};
use wasmtime::{Engine, Store, UpdateDeadline};

/// How often the engine's epoch advances: the granularity of deadlines and of
/// a running guest's yields to the async executor.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the runtime: {0}")]
    Engine(String),
    #[error(transparent)]
    CompileCache(#[from] compile_cache::CompileCacheError),
}

/// One engine and linker shared by every plugin of a host.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<Arc<compile_cache::CompileCache>>,
    compiled_without_cache: Arc<std::sync::atomic::AtomicU64>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// A runtime that compiles every component it loads.
    pub fn new() -> wasmtime::Result<Self> {
        // The on-demand allocator: the pooling one was measured (docs/benchmarks.md)
        // to save 13 µs per instantiation and nothing per call, against fixed
        // instance limits and terabytes of reserved address space.
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        use bindings::weir::plugin as wit;
        wit::types::add_to_linker::<HostState, Capabilities>(&mut linker, HostState::ctx)?;
        wit::cache::add_to_linker::<HostState, Capabilities>(&mut linker, HostState::ctx)?;
        wit::storage::add_to_linker::<HostState, Capabilities>(&mut linker, HostState::ctx)?;
        wit::publish::add_to_linker::<HostState, Capabilities>(&mut linker, HostState::ctx)?;
        wit::log::add_to_linker::<HostState, Capabilities>(&mut linker, HostState::ctx)?;
        wit::config::add_to_linker::<HostState, Capabilities>(&mut linker, HostState::ctx)?;
        wit::batch::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
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
    pub fn with_compile_cache(dir: std::path::PathBuf) -> Result<Self, RuntimeError> {
        let mut runtime = Self::new().map_err(|e| RuntimeError::Engine(e.to_string()))?;
        runtime.cache = Some(Arc::new(compile_cache::CompileCache::open(
            dir,
            &runtime.engine,
        )?));
        Ok(runtime)
    }

    /// Keep only the `keep` newest entries of the compile cache, if there is one.
    pub fn prune_compile_cache(&self, keep: usize) {
        if let Some(cache) = &self.cache {
            cache.prune(keep);
        }
    }

    /// How many components were compiled, and how many came from the cache.
    pub fn compile_stats(&self) -> CompileStats {
        let mut stats = self.cache.as_ref().map(|c| c.stats()).unwrap_or_default();
        stats.compiled += self
            .compiled_without_cache
            .load(std::sync::atomic::Ordering::Relaxed);
        stats
    }

    /// The compiled component for `bytes`, compiled on a blocking thread: a
    /// large component takes seconds of CPU, which must not hold up the task
    /// that loads it (the supervisor, which also answers shutdown).
    async fn component(&self, bytes: Arc<Vec<u8>>) -> wasmtime::Result<Component> {
        let (engine, cache) = (self.engine.clone(), self.cache.clone());
        let counter = self.compiled_without_cache.clone();
        let compile = move || match &cache {
            Some(cache) => cache.component(&engine, &bytes),
            None => {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Component::new(&engine, bytes.as_slice())
            }
        };
        tokio::task::spawn_blocking(compile)
            .await
            .map_err(|e| wasmtime::Error::msg(format!("the compiler thread failed: {e}")))?
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
        let bytes = Arc::new(load::read_component_bytes(wasm)?);
        let component = self
            .component(bytes.clone())
            .await
            .map_err(|e| LoadError::new(wasm, LoadErrorKind::Compile, load::chain(&e)))?;
        load::check_world(wasm, &self.engine, &component)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::new(wasm, LoadErrorKind::WrongWorld, load::chain(&e)))?;
        let hash = load::content_hash(&bytes);
        let grants = Grants::from_manifest(&manifest);
        let mut plugin = Plugin {
            name: manifest.name.clone(),
            hash,
            grants: Arc::new(grants),
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
        // Its scheduled deletions are carried out within these prefixes only (a
        // version that failed to load leaves the running one's grants alone).
        plugin.backends.deletions.allow(
            &plugin.manifest.name,
            plugin.grants.storage_prefixes.clone(),
        );
        Ok(plugin)
    }
}

/// The capabilities' view of an instance's state, for the linker.
struct Capabilities;

impl wasmtime::component::HasData for Capabilities {
    type Data<'a> = crate::capabilities::Ctx<'a>;
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

type HandleFunc<'a> = TypedFunc<(EventView<'a>,), (Result<(), HandleError>,)>;
type BatchFunc<'a, 'b> = TypedFunc<(&'b [EventView<'a>],), (Vec<Result<(), HandleError>>,)>;
type InitFunc = TypedFunc<(), (Result<(), String>,)>;

/// A live instance: its store and its exports.
struct Live {
    store: Store<HostState>,
    /// `handle`, type-checked against [`HandleFunc`] at instantiation.
    handle: Func,
    /// `handle-batch` when the component exports it (type-checked against
    /// [`BatchFunc`]), until it breaks its contract.
    batch: Option<Func>,
}

/// A loaded plugin, ready to handle events.
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

/// The longest reject or retry reason kept, in bytes: it travels in a
/// dead letter's `weir-error` header, the log and `/plugins`, and a plugin
/// chooses it.
pub const MAX_REASON_LEN: usize = 4096;

/// `reason` cut to [`MAX_REASON_LEN`] bytes (on a character boundary), saying so.
pub fn bounded_reason(mut reason: String) -> String {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let total = reason.len();
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason.push_str(&format!("… (cut at {MAX_REASON_LEN} of {total} bytes)"));
    reason
}

impl Outcome {
    /// What the handler returned, its reason bounded.
    fn of_handler(result: Result<(), HandleError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Handled,
            Err(HandleError::Retry(r)) => Outcome::Retry(bounded_reason(r)),
            Err(HandleError::Reject(r)) => Outcome::Reject(bounded_reason(r)),
        }
    }

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

/// Everything one event's attempt produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Messages to publish; empty unless the outcome is `Handled`.
    pub published: Vec<OutgoingMessage>,
    /// Scheduled-deletion changes to record; empty unless the outcome is
    /// `Handled`, and already written when the schedule is kept in the store.
    #[serde(skip)]
    pub schedule: Vec<ScheduleChange>,
    /// Capability calls, when call recording is on.
    pub calls: Vec<CallRecord>,
    /// When each of `calls` began and ended.
    #[serde(skip)]
    pub call_times: Vec<(std::time::SystemTime, std::time::SystemTime)>,
    /// Lines the plugin wrote to stdout or stderr (`stdout: ...`), when call
    /// recording is on; they are always logged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
    /// Time in the plugin (a batch's time divided by its events).
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
        let timeout = limits.timeout;
        let state = HostState::new(
            self.grants.clone(),
            self.backends.clone(),
            limits.memory.as_u64() as usize,
            limits.host_memory.as_u64() as usize,
            timeout,
            self.record_calls,
        );
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|ctx| {
            if ctx.data().deadline.passed() {
                Err(wasmtime::Error::new(state::DeadlineExceeded))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.data_mut().begin_setup();
        arm_deadline(&mut store);
        let failed = |kind, message| InstantiateFailure { kind, message };

        let deadline = store.data().deadline.clone();
        let instance = within_deadline(&deadline, self.pre.instantiate_async(&mut store))
            .await
            .map_err(|e| failed(LoadErrorKind::Instantiate, classify(&store, &e, timeout).1))?;
        let wrong = |export: &str, e: wasmtime::Error| {
            failed(
                LoadErrorKind::WrongWorld,
                format!(
                    "its `{export}` export does not match weir:plugin/handler@0.1.0: {}",
                    load::chain(&e)
                ),
            )
        };
        let handle = *instance
            .get_typed_func::<(EventView<'static>,), (Result<(), HandleError>,)>(
                &mut store, "handle",
            )
            .map_err(|e| wrong("handle", e))?
            .func();
        let batch = match instance.get_export_index(&mut store, None, "handle-batch") {
            None => None,
            Some(_) => Some(
                *instance
                    .get_typed_func::<(&[EventView<'static>],), (Vec<Result<(), HandleError>>,)>(
                        &mut store,
                        "handle-batch",
                    )
                    .map_err(|e| wrong("handle-batch", e))?
                    .func(),
            ),
        };
        if instance
            .get_export_index(&mut store, None, "init")
            .is_some()
        {
            let init: InitFunc = instance
                .get_typed_func(&mut store, "init")
                .map_err(|e| wrong("init", e))?;
            store.data_mut().begin_setup();
            arm_deadline(&mut store);
            match within_deadline(&deadline, init.call_async(&mut store, ())).await {
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
        store.data_mut().end_call();
        self.live = Some(Live {
            store,
            handle,
            batch,
        });
        Ok(())
    }

    /// Whether the plugin takes several events per call (`handle-batch`).
    pub fn handles_batches(&self) -> bool {
        self.live.as_ref().is_none_or(|l| l.batch.is_some())
    }

    /// Make sure there is a live instance; the failure as a report otherwise.
    async fn ensure_live(&mut self, started: Instant) -> Result<(), Report> {
        if self.live.is_some() {
            return Ok(());
        }
        self.instantiate().await.map_err(|failure| Report {
            outcome: Outcome::Unavailable(failure.message),
            published: vec![],
            schedule: vec![],
            calls: vec![],
            call_times: vec![],
            output: vec![],
            duration_us: started.elapsed().as_micros() as u64,
        })
    }

    /// Handle one event. Never panics and never fails: every way the plugin can
    /// fail is an [`Outcome`].
    pub async fn handle(&mut self, event: &EventRecord) -> Report {
        let started = Instant::now();
        if let Err(report) = self.ensure_live(started).await {
            return report;
        }
        let timeout = self.manifest.limits.timeout;
        let live = self.live.as_mut().expect("instantiated above");
        live.store.data_mut().begin_call([event.coordinates()]);
        arm_deadline(&mut live.store);
        // SAFETY: `handle` was type-checked as this signature (lifetimes aside,
        // which the component model does not see).
        let func: HandleFunc<'_> = unsafe { TypedFunc::new_unchecked(live.handle) };
        let deadline = live.store.data().deadline.clone();
        let result =
            within_deadline(&deadline, func.call_async(&mut live.store, (event.view(),))).await;
        let mut effects = live.store.data_mut().end_call();
        let effects = effects.pop().unwrap_or_default();
        let outcome = match result {
            Ok((result,)) => Outcome::of_handler(result),
            Err(e) => self.trapped(&e, timeout, effects.panic.as_deref()),
        };
        let duration_us = started.elapsed().as_micros() as u64;
        self.report(outcome, effects, duration_us).await
    }

    /// Handle several events (at most one per lane) in one call when the plugin
    /// exports `handle-batch`, one by one otherwise. One report per event, in
    /// order; `None` for an event that did not run to completion because another
    /// event of the batch trapped, or because the batch broke its contract: it
    /// must be handled again (on its own).
    pub async fn handle_batch(&mut self, events: &[&EventRecord]) -> Vec<Option<Report>> {
        let started = Instant::now();
        if let Err(report) = self.ensure_live(started).await {
            return events.iter().map(|_| Some(report.clone())).collect();
        }
        let live = self.live.as_mut().expect("instantiated above");
        let batch = match live.batch {
            Some(f) if events.len() > 1 => f,
            _ => {
                let mut reports = Vec::with_capacity(events.len());
                for e in events {
                    reports.push(Some(self.handle(e).await));
                }
                return reports;
            }
        };
        let timeout = self.manifest.limits.timeout;
        let n = events.len();
        live.store
            .data_mut()
            .begin_call(events.iter().map(|e| e.coordinates()));
        arm_deadline(&mut live.store);
        let views: Vec<EventView<'_>> = events.iter().map(|e| e.view()).collect();
        // SAFETY: `handle-batch` was type-checked as this signature (lifetimes
        // aside, which the component model does not see).
        let func: BatchFunc<'_, '_> = unsafe { TypedFunc::new_unchecked(batch) };
        let deadline = live.store.data().deadline.clone();
        let result = within_deadline(&deadline, func.call_async(&mut live.store, (&views,))).await;
        drop(views);
        let current = live.store.data().current();
        let in_order = live.store.data().announced_in_order(n);
        let effects = live.store.data_mut().end_call();
        let each_us = started.elapsed().as_micros() as u64 / n as u64;
        match result {
            Ok((results,)) if results.len() == n && in_order => {
                let mut reports = Vec::with_capacity(n);
                for (result, effects) in results.into_iter().zip(effects) {
                    let outcome = Outcome::of_handler(result);
                    let report = if effects.schedule.is_empty() {
                        finish_report(outcome, effects, each_us)
                    } else {
                        self.report(outcome, effects, each_us).await
                    };
                    reports.push(Some(report));
                }
                reports
            }
            Ok((results,)) => {
                tracing::warn!(
                    plugin = %self.name,
                    events = n,
                    outcomes = results.len(),
                    "handle-batch did not return one outcome per event, or did not call \
                     batch.begin-event before each: this instance now takes events one at a time"
                );
                if let Some(live) = self.live.as_mut() {
                    live.batch = None;
                }
                vec![None; n]
            }
            Err(e) => {
                let mut effects = effects;
                let at = current.min(n - 1);
                let failed = std::mem::take(&mut effects[at]);
                let outcome = self.trapped(&e, timeout, failed.panic.as_deref());
                let mut reports: Vec<Option<Report>> = vec![None; n];
                reports[at] = Some(self.report(outcome, failed, each_us).await);
                reports
            }
        }
    }

    /// A call failed: its outcome. The instance may be in any state after a
    /// trap, so it is never reused.
    fn trapped(&mut self, e: &wasmtime::Error, timeout: Duration, panic: Option<&str>) -> Outcome {
        let live = self.live.take().expect("a call was made");
        let (mut outcome, _) = classify(&live.store, e, timeout);
        if let (Outcome::Trap(reason), Some(panic)) = (&mut outcome, panic) {
            *reason = format!("{reason}: {panic}");
        }
        outcome
    }

    /// The report of one event; a handled event's schedule changes are written
    /// now when the schedule is kept in the store (not sent as records).
    fn report(
        &self,
        outcome: Outcome,
        effects: crate::capabilities::EventEffects,
        duration_us: u64,
    ) -> impl std::future::Future<Output = Report> + Send + 'static {
        let deletions = self.backends.deletions.clone();
        report(deletions, outcome, effects, duration_us)
    }
}

/// A report with nothing to write first.
fn finish_report(
    outcome: Outcome,
    effects: crate::capabilities::EventEffects,
    duration_us: u64,
) -> Report {
    let published = if outcome.is_handled() {
        effects.outbox
    } else {
        vec![]
    };
    let schedule = if outcome.is_handled() {
        effects.schedule
    } else {
        vec![]
    };
    Report {
        outcome,
        published,
        schedule,
        calls: effects.calls,
        call_times: effects.call_times,
        output: effects.output,
        duration_us,
    }
}

/// See [`Plugin::report`].
async fn report(
    deletions: crate::capabilities::DeletionSchedule,
    mut outcome: Outcome,
    mut effects: crate::capabilities::EventEffects,
    duration_us: u64,
) -> Report {
    if outcome.is_handled() && !effects.schedule.is_empty() && !deletions.is_topic() {
        for change in std::mem::take(&mut effects.schedule) {
            if let Err(e) = deletions.write(&change).await {
                outcome = Outcome::Retry(format!("storage backend: {e}"));
                break;
            }
        }
    }
    finish_report(outcome, effects, duration_us)
}

/// Check the deadline at the next epoch tick (the store's deadline was set by
/// `begin_call` or `begin_setup`).
fn arm_deadline(store: &mut Store<HostState>) {
    store.set_epoch_deadline(1);
}

/// How long past its deadline a call may wait in a host call before it is
/// dropped: the epoch check stops running wasm within a tick or two, so a
/// call still going after this is waiting on the host.
const HOST_WAIT_GRACE: Duration = Duration::from_millis(50);

/// Await a call into the guest, but no longer than its deadline (which the
/// guest may move forward by starting its batch's next event). The epoch
/// interrupts running wasm; this ends a call that waits in a host call (a WASI
/// sleep or poll, a slow backend), where no wasm runs. The call's future is
/// dropped, which unwinds the guest; the instance is never used again.
async fn within_deadline<T>(
    deadline: &state::Deadline,
    call: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    tokio::pin!(call);
    loop {
        let Some(at) = deadline.get() else {
            return call.await;
        };
        tokio::select! {
            biased;
            out = &mut call => return out,
            _ = tokio::time::sleep_until((at + HOST_WAIT_GRACE).into()) => {
                if deadline.get().is_some_and(|d| Instant::now() >= d + HOST_WAIT_GRACE) {
                    return Err(wasmtime::Error::new(state::DeadlineExceeded));
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: a 2 MB reject reason made a dead letter that could never be written.
    #[test]
    fn reasons_are_cut_to_a_bound_on_a_character_boundary() {
        assert_eq!(bounded_reason("short".into()), "short");
        let long = "é".repeat(MAX_REASON_LEN); // two bytes each
        let cut = bounded_reason(long);
        assert!(cut.len() < MAX_REASON_LEN + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!(
            "(cut at {MAX_REASON_LEN} of {} bytes)",
            2 * MAX_REASON_LEN
        )));
        match Outcome::of_handler(Err(HandleError::Reject("x".repeat(2_000_000)))) {
            Outcome::Reject(r) => assert!(r.len() < MAX_REASON_LEN + 64),
            other => panic!("{other:?}"),
        }
    }
}
