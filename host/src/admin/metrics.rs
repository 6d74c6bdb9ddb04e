//! Prometheus metrics (`GET /metrics`), read at scrape time from the plugins' own
//! counters, so there is one source of truth for logs, status and metrics.

use super::view::{HostView, PluginReport};
use crate::capabilities::breaker::BreakerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

/// Every plugin state `weir_plugin_state` reports (one series each, 1 for the current).
const STATES: &[&str] = &[
    "running",
    "paused",
    "rolled-back",
    "rejected",
    "failed",
    "stopped",
];

#[derive(Debug)]
struct HostCollector {
    view: Arc<HostView>,
}

/// The registry `GET /metrics` encodes.
pub fn registry(view: Arc<HostView>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(HostCollector { view }));
    registry
}

/// The registry's text (OpenMetrics).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// One counter family with a `plugin` label (and an optional second label).
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, i64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let plugins = self.view.plugins();
        let reports: Vec<(String, PluginReport)> = plugins
            .iter()
            .map(|(name, v)| (name.clone(), v.report()))
            .collect();

        let mut events = Vec::new();
        let mut retries = Vec::new();
        let mut published = Vec::new();
        let mut rollbacks = Vec::new();
        let mut redelivered = Vec::new();
        let mut calls = Vec::new();
        let mut transactions = Vec::new();
        let mut operator = Vec::new();
        for (name, r) in &reports {
            let s = r.status.stats.unwrap_or_default();
            for (outcome, n) in [
                ("handled", s.handled),
                ("dead_lettered", s.dead_lettered),
                ("abandoned", s.abandoned),
            ] {
                events.push((vec![("plugin", name.as_str()), ("outcome", outcome)], n));
            }
            retries.push((vec![("plugin", name.as_str())], s.retries));
            published.push((vec![("plugin", name.as_str())], s.published));
            rollbacks.push((vec![("plugin", name.as_str())], r.status.rollbacks));
            redelivered.push((vec![("plugin", name.as_str())], s.redelivered));
            for (outcome, n) in [
                ("committed", s.transactions_committed),
                ("aborted", s.transactions_aborted),
            ] {
                transactions.push((vec![("plugin", name.as_str()), ("outcome", outcome)], n));
            }
            if let Some(v) = plugins.get(name) {
                use std::sync::atomic::Ordering::Relaxed;
                let c = v.stats.calls.load(Relaxed);
                calls.push((vec![("plugin", name.as_str())], c));
                for (action, n) in [
                    ("offsets_moved", v.stats.offsets_moved.load(Relaxed)),
                    ("workers_changed", v.stats.workers_changes.load(Relaxed)),
                ] {
                    operator.push((vec![("plugin", name.as_str()), ("action", action)], n));
                }
            }
        }
        counters(
            &mut encoder,
            "weir_events",
            "Events finished, by outcome: handled, dead_lettered, or abandoned at shutdown (redelivered later)",
            &events,
        )?;
        counters(
            &mut encoder,
            "weir_retries",
            "Failed attempts that were retried (retry, trap, timeout, out of memory, failed publish)",
            &retries,
        )?;
        counters(
            &mut encoder,
            "weir_published_messages",
            "Messages plugins published, acknowledged by the broker",
            &published,
        )?;
        counters(
            &mut encoder,
            "weir_redelivered_events",
            "Events handed to the plugin again because a failed delivery rewound their partition (the failure path's duplicates)",
            &redelivered,
        )?;
        counters(
            &mut encoder,
            "weir_plugin_calls",
            "Calls into the plugin (a batch of events is one call)",
            &calls,
        )?;
        counters(
            &mut encoder,
            "weir_transactions",
            "Exactly-once plugins: transactions committed and aborted (an aborted one's events are handled again)",
            &transactions,
        )?;
        counters(
            &mut encoder,
            "weir_operator_actions",
            "An operator's changes carried out on this host: partitions moved (offsets reset or rewound), changes of the number of workers",
            &operator,
        )?;
        counters(
            &mut encoder,
            "weir_plugin_rollbacks",
            "Automatic rollbacks of a new version to the last good one",
            &rollbacks,
        )?;

        {
            let mut family = encoder.encode_descriptor(
                "weir_handle_duration",
                "Time spent in the plugin per attempt (a batch's time shared by its events)",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (name, view) in &plugins {
                view.stats
                    .durations
                    .encode(family.encode_family(&[("plugin", name.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "weir_transaction_commit_duration",
                "Exactly-once plugins: time to commit a transaction (offsets sent, records flushed, commit acknowledged)",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (name, view) in &plugins {
                view.stats
                    .commit_durations
                    .encode(family.encode_family(&[("plugin", name.as_str())])?)?;
            }
        }

        let mut in_flight = Vec::new();
        let mut workers = Vec::new();
        let mut paused = Vec::new();
        let mut lag = Vec::new();
        let mut stalled = Vec::new();
        let mut states = Vec::new();
        for (name, r) in &reports {
            in_flight.push((vec![("plugin", name.clone())], r.in_flight as i64));
            workers.push((vec![("plugin", name.clone())], r.workers as i64));
            paused.push((vec![("plugin", name.clone())], r.paused as i64));
            for p in &r.partitions {
                stalled.push((
                    vec![
                        ("plugin", name.clone()),
                        ("topic", p.topic.clone()),
                        ("partition", p.partition.to_string()),
                    ],
                    p.stalled.is_some() as i64,
                ));
                if let Some(l) = p.lag {
                    lag.push((
                        vec![
                            ("plugin", name.clone()),
                            ("topic", p.topic.clone()),
                            ("partition", p.partition.to_string()),
                        ],
                        l,
                    ));
                }
            }
            for state in STATES {
                states.push((
                    vec![("plugin", name.clone()), ("state", state.to_string())],
                    (r.status.state == *state) as i64,
                ));
            }
        }
        gauges(
            &mut encoder,
            "weir_events_in_flight",
            "Events read and not yet committed past (bounded by consumer.max_in_flight)",
            &in_flight,
        )?;
        gauges(
            &mut encoder,
            "weir_plugin_workers",
            "Workers running the plugin on this host ([consumer] workers, or what an operator set)",
            &workers,
        )?;
        gauges(
            &mut encoder,
            "weir_plugin_paused",
            "1 while an operator has paused the plugin",
            &paused,
        )?;
        gauges(
            &mut encoder,
            "weir_consumer_lag",
            "Records after the committed offset, per assigned partition",
            &lag,
        )?;
        gauges(
            &mut encoder,
            "weir_partition_stalled",
            "1 while an assigned partition has lag and made no progress for kafka.consumer.stall_timeout",
            &stalled,
        )?;
        gauges(
            &mut encoder,
            "weir_plugin_state",
            "1 for the plugin's current state",
            &states,
        )?;
        let guards = self.view.guards();
        let mut breaker_states = Vec::new();
        let mut opened = Vec::new();
        let mut rejected = Vec::new();
        for b in guards.breakers() {
            let status = b.status();
            for state in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                breaker_states.push((
                    vec![
                        ("backend", status.backend.to_string()),
                        ("state", state.as_str().to_string()),
                    ],
                    (status.state == state) as i64,
                ));
            }
            opened.push((vec![("backend", status.backend)], status.opened_total));
            rejected.push((vec![("backend", status.backend)], status.rejected_total));
        }
        gauges(
            &mut encoder,
            "weir_breaker_state",
            "1 for the current state of each capability backend's circuit breaker",
            &breaker_states,
        )?;
        counters(
            &mut encoder,
            "weir_breaker_opened",
            "Times a backend's circuit breaker opened",
            &opened,
        )?;
        counters(
            &mut encoder,
            "weir_breaker_rejected_calls",
            "Capability calls failed at once (as unavailable) by an open circuit breaker",
            &rejected,
        )?;
        let owned = self.view.deletions().owned();
        gauges(
            &mut encoder,
            "weir_schedule_pending_deletions",
            "Scheduled deletions pending in each schedule partition this host owns",
            &owned
                .iter()
                .map(|p| {
                    (
                        vec![("partition", p.partition.to_string())],
                        p.pending as i64,
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        gauges(
            &mut encoder,
            "weir_schedule_partition_ready",
            "1 once an owned schedule partition is read up to its end (its deletions are carried out)",
            &owned
                .iter()
                .map(|p| (vec![("partition", p.partition.to_string())], p.ready as i64))
                .collect::<Vec<_>>(),
        )?;
        gauges(
            &mut encoder,
            "weir_up",
            "1 while the host runs; phase: starting, running, stopping",
            &[(vec![("phase", self.view.phase().as_str().to_string())], 1)],
        )?;
        Ok(())
    }
}
