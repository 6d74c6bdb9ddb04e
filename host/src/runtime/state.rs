//! Per-instance state: WASI, limits, the plugin's grants, and what the current
//! event has done so far (capability calls, queued messages, output).

use crate::capabilities::{Backends, Ctx, EventEffects, Grants};
use crate::event::Coordinates;
use bytes::Bytes;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    pub(crate) deadline: Option<Instant>,
    /// Each event's `limits.timeout` (re-armed by `batch.begin-event`).
    pub(crate) timeout: Duration,
    pub(crate) record_calls: bool,
    /// What each event of the current call did (one entry outside a batch).
    events: Vec<EventEffects>,
    /// The event being handled: an index into `events`.
    current: usize,
    /// The indices a batch announced with `batch.begin-event`, in order.
    pub(crate) begun: Vec<u32>,
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
                exceeded: None,
            },
            grants,
            backends,
            deadline: None,
            timeout,
            record_calls,
            events: Vec::new(),
            current: 0,
            begun: Vec::new(),
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
        self.begun.clear();
        self.stdout.clear();
        self.stderr.clear();
        self.deadline = Some(Instant::now() + self.timeout);
    }

    /// `batch.begin-event`: the plugin moves on to the event at `index`.
    pub(crate) fn start_event(&mut self, index: u32) {
        self.flush_output();
        self.begun.push(index);
        if (index as usize) < self.events.len() {
            self.current = index as usize;
        }
        self.deadline = Some(Instant::now() + self.timeout);
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
        self.deadline = None;
        self.current = 0;
        std::mem::take(&mut self.events)
    }
}

/// `panicked at src/lib.rs:10:9: boom` from Rust's panic output.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    let at = lines
        .by_ref()
        .find_map(|l| l.split_once("panicked at ").map(|(_, a)| a))?;
    let message = lines.next().unwrap_or("").trim();
    Some(format!("panicked at {} {message}", at.trim()))
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

/// Caps linear memory; a growth past the cap traps with [`MemoryLimitExceeded`].
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
    pub(crate) exceeded: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = Some(desired);
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                desired,
                limit: self.limit,
            }));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
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
            self.0 .0.lock().expect("output lock").clear();
            self.0 .1.store(false, Ordering::Release);
        }
    }

    fn take_text(&self) -> String {
        let bytes = std::mem::take(&mut *self.0 .0.lock().expect("output lock"));
        self.0 .1.store(false, Ordering::Release);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn push(&self, bytes: &[u8]) {
        self.0 .1.store(true, Ordering::Release);
        let mut buf = self.0 .0.lock().expect("output lock");
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
