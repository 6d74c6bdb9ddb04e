//! Dispatch: one plugin's workers, and what happens to an event between the source
//! and the acknowledgement.
//!
//! Events are routed to workers by (partition, key), so one key's events stay in
//! order; an event without a key keeps its partition's order. A worker handles
//! its events one at a time:
//!
//! 1. call the plugin;
//! 2. handled: send what it published and wait for the broker's acks;
//! 3. retry, trap, timeout, out of memory, or a failed publish: try again after
//!    an exponential backoff with jitter, in place (the key's later events wait),
//!    up to the manifest's `retry.attempts`;
//! 4. rejected, or out of attempts: write it to the dead-letter topic and wait
//!    for the ack;
//! 5. report the event finished, so its offset may be committed.
//!
//! On shutdown a worker gives up an event that is waiting to be retried (it is
//! redelivered later) instead of holding the drain.

use crate::event::EventRecord;
use crate::kafka::sink::Sink;
use crate::kafka::source::Acker;
use crate::manifest::RetryPolicy;
use crate::runtime::{Outcome, Plugin};
use crate::versions::Versions;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use rand::Rng;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Counters of one plugin (for logs, `weir plugins`, the admin API and metrics).
/// They live as long as the plugin, across new versions and consumer restarts.
#[derive(Debug)]
pub struct Stats {
    pub handled: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub published: AtomicU64,
    pub abandoned: AtomicU64,
    /// Time in the plugin per attempt (seconds), for `weir_handle_duration_seconds`.
    pub durations: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            handled: AtomicU64::default(),
            retries: AtomicU64::default(),
            dead_lettered: AtomicU64::default(),
            published: AtomicU64::default(),
            abandoned: AtomicU64::default(),
            // 50 µs to about 13 s.
            durations: Histogram::new(exponential_buckets(0.000_05, 4.0, 10)),
        }
    }
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            handled: self.handled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub handled: u64,
    pub retries: u64,
    pub dead_lettered: u64,
    pub published: u64,
    pub abandoned: u64,
}

/// Where a worker sends failures it gives up on.
#[derive(Clone)]
pub struct DeadLetters {
    /// Full topic name of the event -> dead-letter topic.
    pub topic_for: Arc<dyn Fn(&str) -> String + Send + Sync>,
}

/// Routes events to workers' queues; what the source calls for each event.
#[derive(Clone)]
pub struct Router {
    senders: Vec<mpsc::UnboundedSender<EventRecord>>,
}

impl Router {
    pub fn dispatch(&self, event: EventRecord) {
        let i = route(&event, self.senders.len());
        if let Err(e) = self.senders[i].send(event) {
            tracing::debug!(error = %e, "worker gone; event left for redelivery");
        }
    }
}

/// Queues for `n` workers: the router that fills them and the receivers to drain them.
pub fn queues(n: usize) -> (Router, Vec<mpsc::UnboundedReceiver<EventRecord>>) {
    let (senders, receivers) = (0..n.max(1)).map(|_| mpsc::unbounded_channel()).unzip();
    (Router { senders }, receivers)
}

/// The running workers of one plugin.
pub struct Workers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// One worker per queue, each with its own instance of the current version.
    pub fn spawn(
        versions: Arc<Versions>,
        receivers: Vec<mpsc::UnboundedReceiver<EventRecord>>,
        sink: Sink,
        acker: Acker,
        dead_letters: DeadLetters,
        stats: Arc<Stats>,
        stopping: watch::Receiver<bool>,
    ) -> Workers {
        let tasks = receivers
            .into_iter()
            .map(|rx| {
                let current = versions.current();
                let worker = Worker {
                    plugin: current.plugin.instance(),
                    generation: current.generation,
                    versions: versions.clone(),
                    sink: sink.clone(),
                    acker: acker.clone(),
                    dead_letters: dead_letters.clone(),
                    stats: stats.clone(),
                    stopping: stopping.clone(),
                };
                tokio::spawn(worker.run(rx))
            })
            .collect();
        Workers { tasks }
    }

    /// Stop the workers and wait until they are gone (with them the last handles
    /// on the consumer, which then closes). Called once the source has drained and
    /// committed: what they still hold was not committed and will be redelivered.
    pub async fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The worker for an event: the same (partition, key) always maps to the same worker.
pub fn route(event: &EventRecord, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let mut h = DefaultHasher::new();
    event.partition.hash(&mut h);
    event.key.hash(&mut h);
    (h.finish() % workers as u64) as usize
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
    versions: Arc<Versions>,
    sink: Sink,
    acker: Acker,
    dead_letters: DeadLetters,
    stats: Arc<Stats>,
    stopping: watch::Receiver<bool>,
}

enum Done {
    Finished,
    Abandoned,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<EventRecord>) {
        while let Some(event) = rx.recv().await {
            match self.process(&event).await {
                Done::Finished => self.acker.finish(&event),
                Done::Abandoned => {
                    self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
                    self.acker.abandon(&event)
                }
            }
        }
    }

    /// Move to the current version if it changed (between events, or between
    /// attempts after a rollback).
    fn refresh(&mut self) {
        let current = self.versions.current();
        if current.generation != self.generation {
            self.plugin = current.plugin.instance();
            self.generation = current.generation;
        }
    }

    fn stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Sleep for `d` unless shutdown starts; false if it did.
    async fn pause(&mut self, d: Duration) -> bool {
        if self.stopping() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stopping.changed() => false,
        }
    }

    async fn process(&mut self, event: &EventRecord) -> Done {
        let policy = self.plugin.manifest().retry.clone();
        let cloudevents = self
            .plugin
            .manifest()
            .capabilities
            .publish
            .as_ref()
            .and_then(|p| p.cloudevents_source.clone());
        let name = self.plugin.name().to_string();
        let mut attempt = 1;
        let failure = loop {
            self.refresh();
            let report = self.plugin.handle(event).await;
            self.stats
                .durations
                .observe(report.duration_us as f64 / 1_000_000.0);
            let hard = matches!(
                report.outcome,
                Outcome::Trap(_) | Outcome::Timeout(_) | Outcome::OutOfMemory(_)
            );
            let why = report.outcome.reason().unwrap_or("");
            if let Some(rollback) = self.versions.report(self.generation, hard, why) {
                tracing::error!(
                    plugin = %name,
                    from = %&rollback.from_hash[..12],
                    to = %&rollback.to_hash[..12],
                    reason = %rollback.reason,
                    "new version rolled back to the last good one"
                );
                // Retry this event on the good version; the failed attempt does not count.
                continue;
            }
            let failure = match &report.outcome {
                Outcome::Handled => match self
                    .sink
                    .publish(event, &report.published, cloudevents.as_deref())
                    .await
                {
                    Ok(()) => {
                        self.stats.handled.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .published
                            .fetch_add(report.published.len() as u64, Ordering::Relaxed);
                        return Done::Finished;
                    }
                    Err(e) => Outcome::Retry(e),
                },
                other => other.clone(),
            };
            if !failure.is_retryable() || attempt >= policy.attempts {
                break failure;
            }
            let wait = backoff(&policy, attempt);
            tracing::warn!(
                plugin = %name,
                event = %event.coordinates(),
                attempt,
                of = policy.attempts,
                outcome = failure.label(),
                reason = failure.reason().unwrap_or(""),
                retry_in = ?wait,
                "event failed; retrying"
            );
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            if !self.pause(wait).await {
                return Done::Abandoned;
            }
            attempt += 1;
        };

        let error = format!(
            "{}: {}",
            failure.label(),
            failure.reason().unwrap_or_default()
        );
        let dlq = (self.dead_letters.topic_for)(&event.topic);
        tracing::error!(
            plugin = %name,
            event = %event.coordinates(),
            attempts = attempt,
            dead_letter_topic = %dlq,
            error = %error,
            "event dead-lettered"
        );
        // The offset must not move before the dead letter is safe: keep trying.
        let mut wait = policy.initial_backoff;
        loop {
            match self
                .sink
                .dead_letter(&dlq, event, &name, &error, attempt)
                .await
            {
                Ok(()) => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    return Done::Finished;
                }
                Err(e) => {
                    tracing::error!(plugin = %name, event = %event.coordinates(), error = %e, "cannot write the dead letter; retrying");
                    if !self.pause(wait).await {
                        return Done::Abandoned;
                    }
                    wait = (wait * 2).min(policy.max_backoff);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(partition: i32, key: Option<&str>) -> EventRecord {
        EventRecord {
            topic: "t".into(),
            logical_topic: "t".into(),
            partition,
            offset: 0,
            timestamp_ms: None,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: vec![],
            headers: vec![],
        }
    }

    #[test]
    fn routing_is_stable_per_partition_and_key() {
        for key in ["a", "b", "c", "user-42"] {
            let first = route(&ev(1, Some(key)), 4);
            for _ in 0..10 {
                assert_eq!(route(&ev(1, Some(key)), 4), first);
            }
        }
        assert_eq!(route(&ev(2, None), 4), route(&ev(2, None), 4));
        assert_eq!(route(&ev(2, Some("x")), 1), 0);
        let spread: std::collections::BTreeSet<usize> = (0..100)
            .map(|i| route(&ev(0, Some(&format!("k{i}"))), 4))
            .collect();
        assert_eq!(spread.len(), 4, "keys spread over all workers");
    }

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
