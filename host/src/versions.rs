//! The version of a plugin its workers run, swapped by reloads and rollbacks.
//!
//! Workers look at the current version before each event: an event in flight
//! finishes on the version it started with, the next one uses the newest. A new
//! version is on probation: if it fails hard (traps, times out, runs out of
//! memory) on [`PROBATION_FAILURES`] events in a row before it has handled
//! [`PROBATION_SUCCESSES`], the last good version is put back (a rollback) and the
//! failing events are retried on it. Events, not attempts: one poison event
//! retried three times is one failure, so it cannot roll a good version back.

use crate::runtime::{Plugin, PluginTemplate};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const PROBATION_FAILURES: u32 = 3;
pub const PROBATION_SUCCESSES: u32 = 20;

/// One loaded version: workers make their instances from `plugin`.
pub struct Version {
    pub plugin: PluginTemplate,
    pub generation: u64,
}

pub struct Versions {
    current: ArcSwap<Version>,
    /// Whether a version is on probation (read per event without the lock).
    trial: std::sync::atomic::AtomicBool,
    next_generation: AtomicU64,
    probation: Mutex<Probation>,
    rollbacks: AtomicU64,
    last_rollback: Mutex<Option<Rollback>>,
}

#[derive(Default)]
struct Probation {
    /// The generation on probation, and the version to go back to.
    on_trial: Option<(u64, Arc<Version>)>,
    consecutive_failures: u32,
    /// The events (topic, partition, offset) behind `consecutive_failures`.
    failed_events: Vec<(String, i32, i64)>,
    successes: u32,
}

impl Probation {
    /// A hard failure of `event`: how many events in a row have failed now
    /// (another attempt at an event already counted adds nothing).
    fn failed(&mut self, (topic, partition, offset): (&str, i32, i64)) -> u32 {
        let counted = self
            .failed_events
            .iter()
            .any(|(t, p, o)| t == topic && *p == partition && *o == offset);
        if !counted {
            self.failed_events
                .push((topic.to_string(), partition, offset));
            self.consecutive_failures += 1;
        }
        self.consecutive_failures
    }
}

/// A rollback that just happened.
#[derive(Debug, Clone)]
pub struct Rollback {
    pub from_hash: String,
    pub to_hash: String,
    pub reason: String,
}

impl Versions {
    pub fn new(plugin: Plugin) -> Arc<Versions> {
        Arc::new(Versions {
            current: ArcSwap::from_pointee(Version {
                plugin: plugin.template(),
                generation: 1,
            }),
            next_generation: AtomicU64::new(2),
            trial: Default::default(),
            probation: Mutex::default(),
            rollbacks: AtomicU64::new(0),
            last_rollback: Mutex::default(),
        })
    }

    pub fn current(&self) -> Arc<Version> {
        self.current.load_full()
    }

    pub fn rollbacks(&self) -> u64 {
        self.rollbacks.load(Ordering::Relaxed)
    }

    /// Make `plugin` the current version, on probation against the current one.
    pub fn swap(&self, plugin: Plugin) -> u64 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut probation = self
            .probation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Before the new version is visible: its first verdicts must be counted.
        self.trial.store(true, Ordering::SeqCst);
        let previous = self.current.swap(Arc::new(Version {
            plugin: plugin.template(),
            generation,
        }));
        // If the previous version was itself on probation, fall back to its own good one.
        let good = match probation.on_trial.take() {
            Some((trial, good)) if trial == previous.generation => good,
            _ => previous,
        };
        *probation = Probation {
            on_trial: Some((generation, good)),
            ..Probation::default()
        };
        *self
            .last_rollback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        generation
    }

    /// A worker's verdict on one attempt at `event` (topic, partition, offset)
    /// made with `generation`: `hard_failure` for traps, timeouts and
    /// out-of-memory. Returns the rollback this caused, if any.
    pub fn report(
        &self,
        generation: u64,
        event: (&str, i32, i64),
        hard_failure: bool,
        reason: &str,
    ) -> Option<Rollback> {
        if !self.trial.load(Ordering::Acquire) {
            return None;
        }
        let mut probation = self
            .probation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((trial, _)) = &probation.on_trial else {
            return None;
        };
        if *trial != generation {
            return None;
        }
        if !hard_failure {
            probation.consecutive_failures = 0;
            probation.failed_events.clear();
            probation.successes += 1;
            if probation.successes >= PROBATION_SUCCESSES {
                probation.on_trial = None; // proven
                self.trial.store(false, Ordering::SeqCst);
            }
            return None;
        }
        if probation.failed(event) < PROBATION_FAILURES {
            return None;
        }
        let (_, good) = probation.on_trial.take().expect("checked above");
        self.trial.store(false, Ordering::SeqCst);
        let failed = self.current.load_full();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        self.current.store(Arc::new(Version {
            plugin: good.plugin.clone(),
            generation,
        }));
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
        let rollback = Rollback {
            from_hash: failed.plugin.content_hash().to_string(),
            to_hash: good.plugin.content_hash().to_string(),
            reason: format!(
                "failed on {PROBATION_FAILURES} consecutive events right after the swap; last: {reason}"
            ),
        };
        *self
            .last_rollback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rollback.clone());
        Some(rollback)
    }

    /// The most recent rollback, if any.
    pub fn last_rollback(&self) -> Option<Rollback> {
        self.last_rollback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the current version is still on probation.
    pub fn on_probation(&self) -> bool {
        let current = self.current.load().generation;
        self.probation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .on_trial
            .as_ref()
            .is_some_and(|(g, _)| *g == current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: probation counted attempts, so one poison event retried three
    /// times rolled a good new version back.
    #[test]
    fn probation_counts_events_not_attempts() {
        let mut p = Probation::default();
        for _ in 0..3 {
            assert_eq!(p.failed(("t", 0, 5)), 1);
        }
        assert_eq!(p.failed(("t", 1, 5)), 2, "another partition's offset 5");
        assert_eq!(p.failed(("t", 0, 6)), 3);
    }
}
