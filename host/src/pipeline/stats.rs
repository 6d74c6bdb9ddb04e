//! Counters of one plugin (for logs, `weir plugins`, the admin API and metrics).
//! They live as long as the plugin, across new versions and consumer restarts.

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Stats {
    pub handled: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub published: AtomicU64,
    pub abandoned: AtomicU64,
    /// Events handed to the plugin again because a partition was rewound after
    /// a failed delivery (the duplicates of the failure path).
    pub redelivered: AtomicU64,
    /// Rewinds (failed deliveries that sent a partition back).
    pub rewinds: AtomicU64,
    /// Partitions an operator moved (offsets reset or rewound).
    pub offsets_moved: AtomicU64,
    /// Changes of the number of workers by an operator.
    pub workers_changes: AtomicU64,
    /// Calls into the plugin (a batch is one call).
    pub calls: AtomicU64,
    /// Exactly-once: transactions committed and aborted, and the time each
    /// commit took (offsets sent, records flushed, the commit acknowledged).
    pub transactions_committed: AtomicU64,
    pub transactions_aborted: AtomicU64,
    pub commit_durations: Histogram,
    /// Their sum, in microseconds.
    pub commit_micros: AtomicU64,
    /// Exactly-once: transactional producers replaced (fenced, failed).
    pub producers_replaced: AtomicU64,
    /// Time in the plugin per event (seconds), for `weir_handle_duration_seconds`;
    /// an event of a batch counts the batch's time divided by its size.
    pub durations: Histogram,
    /// The newest failed attempt, for the admin API and the dashboard.
    last_error: std::sync::Mutex<Option<LastError>>,
}

/// An event's failed attempt: when, which event, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastError {
    /// RFC 3339.
    pub at: String,
    /// `topic/partition@offset`.
    pub event: String,
    /// `outcome: reason`.
    pub error: String,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            handled: AtomicU64::default(),
            retries: AtomicU64::default(),
            dead_lettered: AtomicU64::default(),
            published: AtomicU64::default(),
            abandoned: AtomicU64::default(),
            redelivered: AtomicU64::default(),
            rewinds: AtomicU64::default(),
            offsets_moved: AtomicU64::default(),
            workers_changes: AtomicU64::default(),
            calls: AtomicU64::default(),
            transactions_committed: AtomicU64::default(),
            transactions_aborted: AtomicU64::default(),
            // 1 ms to about 65 s.
            commit_durations: Histogram::new(exponential_buckets(0.001, 4.0, 9)),
            commit_micros: AtomicU64::default(),
            producers_replaced: AtomicU64::default(),
            // 1 µs to about 4 s.
            durations: Histogram::new(exponential_buckets(0.000_001, 4.0, 12)),
            last_error: Default::default(),
        }
    }
}

impl Stats {
    /// Remember a failed attempt of `event` as the newest error.
    pub fn note_failure(&self, event: String, error: String) {
        let at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(LastError { at, event, error });
        }
    }

    pub fn last_error(&self) -> Option<LastError> {
        self.last_error.lock().ok().and_then(|l| l.clone())
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            handled: self.handled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            transactions_committed: self.transactions_committed.load(Ordering::Relaxed),
            transactions_aborted: self.transactions_aborted.load(Ordering::Relaxed),
            commit_ms: self.commit_micros.load(Ordering::Relaxed) / 1000,
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
    #[serde(default)]
    pub redelivered: u64,
    /// Exactly-once plugins only (0 otherwise).
    #[serde(default)]
    pub transactions_committed: u64,
    #[serde(default)]
    pub transactions_aborted: u64,
    /// Time spent committing transactions, in all.
    #[serde(default)]
    pub commit_ms: u64,
}
