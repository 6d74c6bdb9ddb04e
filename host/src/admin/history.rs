//! A short history of every plugin, kept in the host for the dashboard's
//! charts: every `[admin] history_interval` (5 s) a sample of its counters
//! and lag, `[admin] history_length` long (an hour): 720 samples per plugin,
//! with the lag of at most [`MAX_PARTITIONS`] partitions each (the total
//! always), so its memory is bounded whatever the topics. Nothing is stored
//! on disk: a restarted host starts a new history.

use super::view::HostView;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Partitions whose own lag is kept, per plugin.
pub const MAX_PARTITIONS: usize = 32;

#[derive(Debug, Clone)]
struct Sample {
    at_ms: i64,
    handled: u64,
    retries: u64,
    dead_lettered: u64,
    lag: i64,
    partitions: Vec<(String, i64)>,
}

/// One point of a chart.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub at_ms: i64,
    /// Per second since the sample before.
    pub handled: f64,
    pub retried: f64,
    pub dead_lettered: f64,
    pub lag: i64,
    /// `topic/partition` → lag.
    pub partitions: BTreeMap<String, i64>,
}

/// The samples of every plugin.
#[derive(Debug)]
pub struct History {
    interval: Duration,
    length: usize,
    plugins: Mutex<BTreeMap<String, VecDeque<Sample>>>,
}

impl History {
    pub fn new(interval: Duration, span: Duration) -> History {
        let interval = interval.max(Duration::from_millis(100));
        let length = (span.as_millis() / interval.as_millis()).clamp(2, 100_000) as usize;
        History {
            interval,
            length,
            plugins: Mutex::default(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Take a sample of every plugin `view` shows; forget plugins gone.
    pub fn sample(&self, view: &HostView) {
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let reports: Vec<_> = view.plugins().values().map(|v| v.report()).collect();
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        plugins.retain(|name, _| reports.iter().any(|r| r.status.name == *name));
        for r in reports {
            let stats = r.status.stats.unwrap_or_default();
            let ring = plugins.entry(r.status.name.clone()).or_default();
            if ring.len() >= self.length {
                ring.pop_front();
            }
            ring.push_back(Sample {
                at_ms,
                handled: stats.handled,
                retries: stats.retries,
                dead_lettered: stats.dead_lettered,
                lag: r.lag,
                partitions: r
                    .partitions
                    .iter()
                    .filter_map(|p| Some((format!("{}/{}", p.topic, p.partition), p.lag?)))
                    .take(MAX_PARTITIONS)
                    .collect(),
            });
        }
    }

    /// The points of `plugin`, oldest first (`None` if it has none).
    pub fn points(&self, plugin: &str) -> Option<Vec<Point>> {
        let plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        let ring = plugins.get(plugin)?;
        let mut out = Vec::with_capacity(ring.len());
        let mut before: Option<&Sample> = None;
        for s in ring {
            let per_second = |now: u64, then: Option<u64>| match (then, before) {
                (Some(then), Some(b)) if s.at_ms > b.at_ms => {
                    now.saturating_sub(then) as f64 * 1000.0 / (s.at_ms - b.at_ms) as f64
                }
                _ => 0.0,
            };
            out.push(Point {
                at_ms: s.at_ms,
                handled: per_second(s.handled, before.map(|b| b.handled)),
                retried: per_second(s.retries, before.map(|b| b.retries)),
                dead_lettered: per_second(s.dead_lettered, before.map(|b| b.dead_lettered)),
                lag: s.lag,
                partitions: s.partitions.iter().cloned().collect(),
            });
            before = Some(s);
        }
        Some(out)
    }
}

/// Sample `view` into `history` every interval until the task is dropped.
pub fn spawn(history: Arc<History>, view: Arc<HostView>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(history.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            history.sample(&view);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_length_is_bounded_by_the_span() {
        let h = History::new(Duration::from_secs(5), Duration::from_secs(3600));
        assert_eq!(h.length, 720);
        let h = History::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(h.interval(), Duration::from_millis(100));
        assert_eq!(h.length, 2);
    }
}
