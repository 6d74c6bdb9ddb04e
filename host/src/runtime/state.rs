//! Per-instance state: WASI, limits, the plugin's grants, and what the current
//! event has done so far (capability calls, queued messages, output).

use crate::capabilities::{Backends, Ctx, EventEffects, Grants, HostBudget};
use crate::event::Coordinates;
use bytes::Bytes;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Output a plugin may write per event before the rest is dropped.
pub const MAX_OUTPUT_PER_EVENT: usize = 64 * 1024;

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) grants: Arc<Grants>,
    pub(crate) backends: Backends,
    /// When the current event must end.
    pub(crate) deadline: Deadline,
    /// Each event's `limits.timeout` (re-armed by `batch.begin-event`, once per
    /// event of the batch).
    pub(crate) timeout: Duration,
    /// When the whole call must end, whatever the plugin announces: one
    /// `limits.timeout` per event it was given.
    call_end: Option<Instant>,
    pub(crate) record_calls: bool,
    /// What the host holds for the current call (`limits.host_memory`).
    budget: HostBudget,
    /// What each event of the current call did (one entry outside a batch).
    events: Vec<EventEffects>,
    /// The event being handled: an index into `events`.
    current: usize,
    /// The index the next `batch.begin-event` must announce.
    next_event: u32,
    /// A `batch.begin-event` announced an index out of order (or again).
    out_of_order: bool,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    pub(crate) fn new(
        grants: Arc<Grants>,
        backends: Backends,
        memory_limit: usize,
        host_memory: usize,
        timeout: Duration,
        record_calls: bool,
    ) -> Self {
        let (stdout, stderr) = (CapturedOutput::default(), CapturedOutput::default());
        // No preopened directories, no network, no environment, no arguments:
        // plugins reach the world through Weir's capabilities only.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: memory_limit,
                total: 0,
                exceeded: None,
            },
            budget: HostBudget::new(host_memory),
            grants,
            backends,
            deadline: Deadline::default(),
            timeout,
            call_end: None,
            record_calls,
            events: Vec::new(),
            current: 0,
            next_event: 0,
            out_of_order: false,
            stdout,
            stderr,
        }
    }

    /// What the current event has done so far. Outside a call (during `init`),
    /// a scratch entry.
    fn effects(&mut self) -> &mut EventEffects {
        if self.events.is_empty() {
            self.events.push(EventEffects::default());
        }
        let i = self.current.min(self.events.len() - 1);
        &mut self.events[i]
    }

    /// The view of this instance a capability call gets.
    pub(crate) fn ctx(&mut self) -> Ctx<'_> {
        if self.events.is_empty() {
            self.events.push(EventEffects::default());
        }
        let i = self.current.min(self.events.len() - 1);
        Ctx::new(
            &self.grants,
            &self.backends,
            &mut self.events[i],
            &mut self.budget,
            self.record_calls,
        )
    }

    /// A call into the plugin starts, for events at these coordinates (one, or
    /// a batch); the first is current.
    pub(crate) fn begin_call(&mut self, coordinates: impl IntoIterator<Item = Coordinates>) {
        self.events.clear();
        self.events
            .extend(coordinates.into_iter().map(|c| EventEffects {
                coordinates: Some(c),
                ..EventEffects::default()
            }));
        self.current = 0;
        self.budget.reset();
        self.next_event = 0;
        self.out_of_order = false;
        self.stdout.clear();
        self.stderr.clear();
        let now = Instant::now();
        let events = u32::try_from(self.events.len().max(1)).unwrap_or(u32::MAX);
        self.call_end = Some(now + self.timeout.saturating_mul(events));
        self.deadline.set(Some(now + self.timeout));
    }

    /// A call that is not about events (instantiation, `init`) starts: it has
    /// one `limits.timeout`.
    pub(crate) fn begin_setup(&mut self) {
        self.budget.reset();
        let end = Instant::now() + self.timeout;
        self.call_end = Some(end);
        self.deadline.set(Some(end));
    }

    /// `batch.begin-event`: the plugin moves on to the event at `index`. Only
    /// the next event in order re-arms the deadline, and never past the call's
    /// budget: announcing an event again (or out of order) extends nothing, and
    /// breaks the batch's contract (its events are handled again one at a time).
    pub(crate) fn start_event(&mut self, index: u32) {
        self.flush_output();
        if index != self.next_event || index as usize >= self.events.len() {
            self.out_of_order = true;
            return;
        }
        self.next_event += 1;
        self.current = index as usize;
        let next = Instant::now() + self.timeout;
        self.deadline.set(Some(match self.call_end {
            Some(end) => next.min(end),
            None => next,
        }));
    }

    /// Whether the batch announced each of its `n` events once, in order.
    pub(crate) fn announced_in_order(&self, n: usize) -> bool {
        !self.out_of_order && self.next_event as usize == n
    }

    /// The coordinates of the current event, for log lines.
    pub(crate) fn coordinates(&self) -> String {
        match self
            .events
            .get(self.current)
            .and_then(|e| e.coordinates.as_ref())
        {
            Some(c) => c.to_string(),
            None => "-".into(),
        }
    }

    /// The index of the event being handled.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// Log what the plugin printed since the last flush, as the current event's.
    fn flush_output(&mut self) {
        if self.stdout.is_empty() && self.stderr.is_empty() {
            return;
        }
        let plugin = self.grants.plugin.clone();
        let record = self.record_calls;
        let (stdout, stderr) = (self.stdout.take_text(), self.stderr.take_text());
        let event = self.coordinates();
        let effects = self.effects();
        for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                tracing::info!(target: "weir::plugin", plugin = %plugin, event = %event, stream, "{line}");
                if record {
                    effects.output.push(format!("{stream}: {line}"));
                }
            }
        }
        if let Some(panic) = panic_message(&stderr) {
            effects.panic = Some(panic);
        }
    }

    /// The call ended: log what the plugin printed, hand back what each event did.
    pub(crate) fn end_call(&mut self) -> Vec<EventEffects> {
        self.flush_output();
        self.deadline.set(None);
        self.call_end = None;
        self.current = 0;
        std::mem::take(&mut self.events)
    }
}

/// What made the plugin trap, from what it printed: `panicked at src/lib.rs:10:9:
/// boom` from Rust's panic output, or the line the JavaScript SDK prints for an
/// uncaught exception (`weir: uncaught TypeError: ... (at app.js:6:33)`).
fn panic_message(stderr: &str) -> Option<String> {
    if let Some(js) = stderr
        .lines()
        .find_map(|l| l.strip_prefix("weir: uncaught "))
    {
        return Some(bounded(js.trim(), 1000));
    }
    let mut lines = stderr.lines();
    let at = lines
        .by_ref()
        .find_map(|l| l.split_once("panicked at ").map(|(_, a)| a))?;
    let message = lines.next().unwrap_or("").trim();
    Some(format!("panicked at {} {message}", at.trim()))
}

/// `text` cut to at most `max` bytes (on a character boundary), marked when cut.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// When the current call into a plugin must end, shared between its store (the
/// epoch callback, while wasm runs) and the task awaiting the call (while the
/// guest waits in a host call, where no wasm runs and no epoch check happens).
#[derive(Clone, Default)]
pub(crate) struct Deadline(Arc<AtomicU64>);

impl Deadline {
    /// The instant nanosecond offsets count from (0 means "no deadline").
    fn base() -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    pub(crate) fn set(&self, at: Option<Instant>) {
        let nanos = at.map_or(0, |at| {
            let since = at.saturating_duration_since(Self::base()).as_nanos();
            u64::try_from(since).unwrap_or(u64::MAX - 1) + 1
        });
        self.0.store(nanos, Ordering::Release);
    }

    pub(crate) fn get(&self) -> Option<Instant> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            n => Some(Self::base() + Duration::from_nanos(n - 1)),
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn passed(&self) -> bool {
        self.get().is_some_and(|d| Instant::now() >= d)
    }
}

/// The call ran past its deadline.
#[derive(Debug)]
pub struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// The guest tried to grow its memory past the limit.
#[derive(Debug)]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

impl fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tried to grow its memory to {} but limits.memory is {}",
            bytesize::ByteSize::b(self.desired as u64),
            bytesize::ByteSize::b(self.limit as u64)
        )
    }
}

impl std::error::Error for MemoryLimitExceeded {}

/// Caps the instance's linear memory: all its memories together (a component
/// may have several), counted from their creation. A growth past the cap
/// traps with [`MemoryLimitExceeded`].
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    /// Bytes of every memory of the instance.
    total: usize,
    pub(crate) exceeded: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.exceeded = Some(total);
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired: total,
                limit: self.limit,
            }));
        }
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000 && maximum.is_none_or(|max| desired <= max))
    }
}

/// A plugin's stdout or stderr for the current event, bounded; bytes past the
/// bound are dropped rather than failing the plugin.
#[derive(Clone, Default)]
pub(crate) struct CapturedOutput(Arc<(Mutex<Vec<u8>>, AtomicBool)>);

impl CapturedOutput {
    /// Whether nothing was written since the last take (checked per event: no lock).
    fn is_empty(&self) -> bool {
        !self.0 .1.load(Ordering::Acquire)
    }

    fn clear(&self) {
        if !self.is_empty() {
            self.0
                 .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
            self.0 .1.store(false, Ordering::Release);
        }
    }

    fn take_text(&self) -> String {
        let bytes = std::mem::take(
            &mut *self
                .0
                 .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.0 .1.store(false, Ordering::Release);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn push(&self, bytes: &[u8]) {
        self.0 .1.store(true, Ordering::Release);
        let mut buf = self
            .0
             .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let room = MAX_OUTPUT_PER_EVENT.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl wasmtime_wasi::cli::IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// `batch.begin-event`: the plugin's batch moves on to another event.
impl crate::bindings::weir::plugin::batch::Host for HostState {
    fn begin_event(&mut self, index: u32) {
        self.start_event(index);
    }
}

#[cfg(test)]
mod tests {
    use super::{bounded, panic_message};

    #[test]
    fn a_trap_is_explained_by_what_the_plugin_printed() {
        let rust = "thread '<unnamed>' panicked at src/lib.rs:10:9:\nboom\nnote: run with ...\n";
        assert_eq!(
            panic_message(rust).as_deref(),
            Some("panicked at src/lib.rs:10:9: boom")
        );
        let js = "weir: uncaught TypeError: x is undefined (at app.js:6:33)\nhandle@app.js:6:33\n";
        assert_eq!(
            panic_message(js).as_deref(),
            Some("TypeError: x is undefined (at app.js:6:33)")
        );
        assert_eq!(panic_message("just a line\n"), None);
        let long = format!("weir: uncaught {}", "é".repeat(2000));
        let cut = panic_message(&long).unwrap();
        assert!(cut.len() <= 1003 && cut.ends_with('…'), "{}", cut.len());
        assert_eq!(bounded("short", 10), "short");
    }
}
