//! The plugin stage: one plugin's workers. A worker owns an instance of the
//! current version and its share of the lanes; it takes batches of ready events
//! (one per lane), hands them to the plugin in one call when the plugin exports
//! `handle-batch`, and settles each outcome on its own:
//!
//! - handled: its records (what it published, its schedule records) go to the
//!   producer without waiting, and the worker moves on;
//! - retry, trap, timeout, out of memory: its lane is blocked and the event is
//!   tried again after an exponential backoff with jitter (the lane's later
//!   events wait, every other lane flows), up to the manifest's `retry.attempts`;
//! - rejected, or out of attempts: its dead letter goes to the producer.
//!
//! A version swap takes effect between batches; a rollback retries the failing
//! event on the good version without spending an attempt. On shutdown, events
//! waiting for a retry are abandoned (read again by the next owner) instead of
//! holding the drain.

use super::acks::{HeldRecord, Ticket};
use super::lanes::{BatchLimits, Lanes};
use super::outputs::{OutputError, Outputs, Record};
use super::stats::Stats;
use crate::manifest::RetryPolicy;
use crate::runtime::{Outcome, Plugin, Report};
use crate::versions::Versions;
use rand::Rng;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Where a worker sends what it gives up on.
#[derive(Clone)]
pub struct DeadLetters {
    /// Full topic name of the event -> dead-letter topic.
    pub topic_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
}

/// Where scheduled-deletion records go (`weir run`).
#[derive(Clone)]
pub struct ScheduleOutput {
    /// Full name of the schedule topic.
    pub topic: String,
}

/// What every worker of a plugin shares.
#[derive(Clone)]
pub struct WorkerContext {
    pub versions: Arc<Versions>,
    pub outputs: Outputs,
    pub dead_letters: DeadLetters,
    pub schedule: Option<ScheduleOutput>,
    pub stats: Arc<Stats>,
    pub stopping: watch::Receiver<bool>,
    pub limits: BatchLimits,
    /// Spans per attempt, when telemetry is on.
    pub tracing: crate::telemetry::Tracing,
    /// Exactly-once: an event's records are held with it, and sent by the
    /// fetch stage into its transaction (`transaction.rs`).
    pub exactly_once: bool,
}

/// The running workers of one plugin, and the routing of events to them: a
/// lane always goes to the same worker. Their number can change while the
/// plugin runs ([`Workers::resize`]), once the fetch stage has drained every
/// event in flight, so no lane is ever in two workers at once.
pub struct Workers {
    context: WorkerContext,
    runtime: tokio::runtime::Handle,
    inner: std::sync::Mutex<Pool>,
    /// Why a worker died (a panic): its lanes' events never finish.
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

struct Pool {
    senders: Vec<mpsc::UnboundedSender<Vec<Ticket>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// `count` workers (at least one), each with its own instance of the
    /// current version. Must be called inside the tokio runtime they run on.
    pub fn spawn(context: WorkerContext, count: usize) -> Workers {
        let workers = Workers {
            context,
            runtime: tokio::runtime::Handle::current(),
            inner: std::sync::Mutex::new(Pool {
                senders: Vec::new(),
                tasks: Vec::new(),
            }),
            failure: Arc::new(std::sync::Mutex::new(None)),
        };
        let pool = workers.start(count);
        *workers.pool() = pool;
        workers
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, count: usize) -> Pool {
        let (senders, tasks) = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel::<Vec<Ticket>>();
                let context = &self.context;
                let current = context.versions.current();
                let mut plugin = current.plugin.instance();
                // Spans are made from the call recording.
                plugin.record_calls(context.tracing.enabled());
                let worker = Worker {
                    plugin,
                    generation: current.generation,
                    context: context.clone(),
                    lanes: Lanes::default(),
                };
                let (failed, plugin) = (self.failure.clone(), current.plugin.name().to_string());
                let task = self.runtime.spawn(async move {
                    use futures::FutureExt;
                    let run = std::panic::AssertUnwindSafe(worker.run(rx));
                    if let Err(panic) = run.catch_unwind().await {
                        let why = super::panic_message(&*panic);
                        tracing::error!(plugin = %plugin, "a worker failed: {why}");
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                    }
                });
                (tx, task)
            })
            .unzip();
        Pool { senders, tasks }
    }

    /// How many workers run.
    pub fn count(&self) -> usize {
        self.pool().senders.len()
    }

    /// Split a batch read over the workers by lane.
    pub fn dispatch(&self, batch: Vec<Ticket>) {
        let pool = self.pool();
        let senders = &pool.senders;
        if senders.len() == 1 {
            let _ = senders[0].send(batch);
            return;
        }
        let mut split: Vec<Vec<Ticket>> = (0..senders.len()).map(|_| Vec::new()).collect();
        for t in batch {
            split[super::lanes::worker_of(t.lane, senders.len())].push(t);
        }
        for (sender, part) in senders.iter().zip(split) {
            if !part.is_empty() {
                let _ = sender.send(part);
            }
        }
    }

    /// Replace the workers by `count` new ones. Only once nothing is in flight
    /// (the fetch stage drained it, or made what did not finish stale): the
    /// old workers hold no live event, and lanes are routed anew.
    pub fn resize(&self, count: usize) {
        let fresh = self.start(count);
        let old = std::mem::replace(&mut *self.pool(), fresh);
        for t in old.tasks {
            t.abort();
        }
    }

    /// Why a worker died, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|why| format!("a worker failed: {why}"))
    }

    /// Stop the workers and wait until they are gone. Called once the source has
    /// drained and committed: what they still hold was not committed and will be
    /// read again.
    pub async fn abort(&self) {
        let tasks = {
            let mut pool = self.pool();
            pool.senders.clear();
            std::mem::take(&mut pool.tasks)
        };
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// The wait before attempt `attempt + 1` (attempt counts from 1): exponential,
/// capped, with "equal jitter" (between half and all of the step).
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let base = policy.initial_backoff.as_secs_f64()
        * policy
            .multiplier
            .powi(attempt.saturating_sub(1).min(63) as i32);
    let step = base.min(policy.max_backoff.as_secs_f64());
    let jittered = step / 2.0 + rand::rng().random_range(0.0..=step / 2.0);
    Duration::from_secs_f64(jittered)
}

struct Worker {
    /// This worker's instance, of version `generation`.
    plugin: Plugin,
    generation: u64,
    context: WorkerContext,
    lanes: Lanes,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Vec<Ticket>>) {
        let mut open = true;
        loop {
            while let Ok(tickets) = rx.try_recv() {
                self.accept(tickets);
            }
            if self.stopping() {
                self.abandon_waiting();
            }
            if self.lanes.has_ready() {
                let batch = self.lanes.next_batch(self.context.limits);
                self.process(batch).await;
                continue;
            }
            if let Some(ticket) = self.lanes.take_due(Instant::now()) {
                self.process(vec![ticket]).await;
                continue;
            }
            if !open && self.lanes.is_empty() {
                return;
            }
            let due = self.lanes.next_due();
            let mut stopping = self.context.stopping.clone();
            tokio::select! {
                received = rx.recv(), if open => match received {
                    Some(tickets) => self.accept(tickets),
                    None => open = false,
                },
                _ = sleep_until(due) => {}
                _ = stopping.changed() => {}
            }
        }
    }

    fn accept(&mut self, tickets: Vec<Ticket>) {
        for t in tickets {
            crate::failpoint::hit("worker", &t.event.payload);
            self.lanes.push(t);
        }
    }

    fn stopping(&self) -> bool {
        *self.context.stopping.borrow()
    }

    /// Shutdown: events waiting for a retry are given up (left uncommitted),
    /// with the events queued behind them in their lanes (handling those now
    /// would overtake them).
    fn abandon_waiting(&mut self) {
        for t in self.lanes.drain_blocked() {
            t.ack.abandon();
            self.context.stats.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Move to the current version if it changed (between batches, or between
    /// attempts after a rollback).
    fn refresh(&mut self) {
        let current = self.context.versions.current();
        if current.generation != self.generation {
            self.plugin = current.plugin.instance();
            self.plugin.record_calls(self.context.tracing.enabled());
            self.generation = current.generation;
        }
    }

    async fn process(&mut self, mut batch: Vec<Ticket>) {
        let lanes = &mut self.lanes;
        batch.retain(|t| {
            let stale = t.is_stale();
            if stale {
                lanes.dropped(t);
            }
            !stale
        });
        if batch.is_empty() {
            return;
        }
        self.refresh();
        let reports = {
            let events: Vec<&crate::event::EventRecord> = batch.iter().map(|t| &t.event).collect();
            self.plugin.handle_batch(&events).await
        };
        self.context.stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut not_run = Vec::new();
        for (ticket, report) in batch.into_iter().zip(reports) {
            match report {
                Some(report) => self.settle(ticket, report).await,
                None => not_run.push(ticket),
            }
        }
        // Another event of the batch trapped before these ran (or while they ran):
        // each is handled on its own now.
        for ticket in not_run {
            if ticket.is_stale() {
                self.lanes.dropped(&ticket);
                continue;
            }
            self.refresh();
            let report = self.plugin.handle(&ticket.event).await;
            self.context.stats.calls.fetch_add(1, Ordering::Relaxed);
            self.settle(ticket, report).await;
        }
    }

    /// Decide what happens to one event after an attempt.
    async fn settle(&mut self, mut ticket: Ticket, mut report: Report) {
        let stats = self.context.stats.clone();
        stats
            .durations
            .observe(report.duration_us as f64 / 1_000_000.0);
        let traceparent = self.context.tracing.attempt(
            self.plugin.name(),
            &ticket.event,
            &report,
            ticket.attempts + 1,
        );
        let hard = matches!(
            report.outcome,
            Outcome::Trap(_) | Outcome::Timeout(_) | Outcome::OutOfMemory(_)
        );
        let why = report.outcome.reason().unwrap_or("");
        let event = &ticket.event;
        let at = (&*event.topic, event.partition, event.offset);
        if let Some(rollback) = self.context.versions.report(self.generation, at, hard, why) {
            tracing::error!(
                plugin = %self.plugin.name(),
                from = %&rollback.from_hash[..12],
                to = %&rollback.to_hash[..12],
                reason = %rollback.reason,
                "new version rolled back to the last good one"
            );
            // Tried again on the good version at once; the failed attempt does not count.
            self.lanes.retry(ticket, Instant::now());
            return;
        }
        if ticket.is_stale() {
            // Its partition was rewound or revoked meanwhile: it will be read again.
            self.lanes.dropped(&ticket);
            return;
        }
        let failure = match report.outcome {
            Outcome::Handled if ticket.delivery_failures >= self.policy().attempts => {
                Outcome::Retry(format!(
                    "its records could not be delivered ({} attempts): {}",
                    ticket.delivery_failures,
                    ticket.delivery_error.as_deref().unwrap_or("")
                ))
            }
            Outcome::Handled => {
                let cloudevents = self.cloudevents();
                let trace = traceparent.as_deref();
                let published = report.published.len() as u64;
                match hand_over(&self.context, cloudevents, trace, &ticket, &mut report).await {
                    Ok(()) => {
                        stats.handled.fetch_add(1, Ordering::Relaxed);
                        stats.published.fetch_add(published, Ordering::Relaxed);
                        self.finish(ticket);
                        return;
                    }
                    Err(_) if ticket.is_stale() => {
                        // Revoked or fenced while its outputs were handed over:
                        // the rest of them were not sent; the next owner has it.
                        self.lanes.dropped(&ticket);
                        return;
                    }
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            other => other,
        };
        stats.note_failure(
            ticket.event.coordinates().to_string(),
            format!(
                "{}: {}",
                failure.label(),
                failure.reason().unwrap_or_default()
            ),
        );
        let policy = self.policy();
        ticket.attempts += 1;
        let attempts = ticket.attempts.max(ticket.delivery_failures);
        if failure.is_retryable() && attempts < policy.attempts {
            if self.stopping() {
                ticket.ack.abandon();
                stats.abandoned.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let wait = backoff(&policy, attempts);
            tracing::warn!(
                plugin = %self.plugin.name(),
                event = %ticket.event.coordinates(),
                attempt = attempts,
                of = policy.attempts,
                outcome = failure.label(),
                reason = failure.reason().unwrap_or(""),
                retry_in = ?wait,
                "event failed; retrying"
            );
            stats.retries.fetch_add(1, Ordering::Relaxed);
            self.lanes.retry(ticket, Instant::now() + wait);
            return;
        }
        self.dead_letter(ticket, &failure, attempts).await;
    }

    fn policy(&self) -> RetryPolicy {
        self.plugin.manifest().retry.clone()
    }

    /// The CloudEvents source outputs are stamped with, if any.
    fn cloudevents(&self) -> Option<String> {
        self.plugin
            .manifest()
            .capabilities
            .publish
            .as_ref()
            .and_then(|p| p.cloudevents_source.clone())
    }

    /// Give up on the event: its dead letter goes out with its original key,
    /// payload and headers, plus why.
    async fn dead_letter(&mut self, ticket: Ticket, failure: &Outcome, attempts: u32) {
        let name = self.plugin.name().to_string();
        let error = format!(
            "{}: {}",
            failure.label(),
            failure.reason().unwrap_or_default()
        );
        let dlq = (self.context.dead_letters.topic_for)(&ticket.event.topic);
        tracing::error!(
            plugin = %name,
            event = %ticket.event.coordinates(),
            attempts,
            dead_letter_topic = %dlq,
            error = %error,
            "event dead-lettered"
        );
        let outputs = &self.context.outputs;
        let sent = if self.context.exactly_once {
            let letter = outputs.held_dead_letter(&dlq, &ticket.event, &name, &error, attempts);
            ticket.ack.hold([letter]);
            Ok(())
        } else {
            outputs
                .enqueue_dead_letter(&dlq, &ticket.event, &name, &error, attempts, &ticket.ack)
                .await
        };
        match sent {
            Ok(()) => {
                self.context
                    .stats
                    .dead_lettered
                    .fetch_add(1, Ordering::Relaxed);
                self.finish(ticket);
            }
            Err(_) if ticket.is_stale() => self.lanes.dropped(&ticket),
            Err(e) => {
                // The offset must not move before the dead letter is safe: the
                // event is tried again later (and dead-lettered again).
                tracing::error!(plugin = %name, event = %ticket.event.coordinates(), error = %e, "cannot write the dead letter; retrying");
                let wait = self.policy().initial_backoff;
                self.lanes.retry(ticket, Instant::now() + wait);
            }
        }
    }

    /// The plugin is done with the event; its lane's next event may go.
    fn finish(&mut self, ticket: Ticket) {
        ticket.ack.released();
        self.lanes.release(ticket.lane);
    }
}

/// Hand a handled event's records to the producer (exactly-once: hold them
/// with the event).
async fn hand_over(
    context: &WorkerContext,
    cloudevents: Option<String>,
    traceparent: Option<&str>,
    ticket: &Ticket,
    report: &mut Report,
) -> Result<(), OutputError> {
    let outputs = &context.outputs;
    if context.exactly_once {
        let target = match (&context.schedule, report.schedule.is_empty()) {
            (None, false) => return Err(OutputError::NoScheduleTopic),
            (target, _) => target,
        };
        let mut held = outputs.held_published(
            &ticket.event,
            std::mem::take(&mut report.published),
            cloudevents.as_deref(),
            traceparent,
        );
        if let Some(target) = target {
            held.extend(report.schedule.iter().map(|change| {
                let (key, payload) = change.record();
                HeldRecord {
                    topic: target.topic.clone(),
                    key: Some(key.into_bytes()),
                    payload,
                    headers: Vec::new(),
                }
            }));
        }
        ticket.ack.hold(held);
        return Ok(());
    }
    outputs
        .enqueue_published(
            &ticket.event,
            &report.published,
            cloudevents.as_deref(),
            traceparent,
            &ticket.ack,
        )
        .await?;
    if report.schedule.is_empty() {
        return Ok(());
    }
    let Some(target) = &context.schedule else {
        return Err(OutputError::NoScheduleTopic);
    };
    for change in &report.schedule {
        let (key, payload) = change.record();
        outputs
            .enqueue_counted(
                Record {
                    topic: &target.topic,
                    key: Some(key.as_bytes()),
                    payload: payload.as_deref(),
                    headers: &[],
                },
                &ticket.ack,
            )
            .await?;
    }
    Ok(())
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let policy = RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
        };
        for attempt in 1..10 {
            let step = (0.1 * 2f64.powi(attempt as i32 - 1)).min(1.0);
            let d = backoff(&policy, attempt).as_secs_f64();
            assert!(
                d >= step / 2.0 - 1e-9 && d <= step + 1e-9,
                "attempt {attempt}: {d}"
            );
        }
    }
}
