//! The source: one consumer per plugin, polled on its own thread.
//!
//! The thread reads records, registers each offset with the [`OffsetTracker`] and
//! hands the event to the plugin's workers. Workers report back through an
//! [`Acker`]: finished events advance the stored offset (committed by librdkafka
//! every `commit_interval`); abandoned ones (shutdown) are left for redelivery.
//!
//! - Backpressure: past `max_in_flight` unfinished events the assigned partitions
//!   are paused, and polling goes on (so the group does not evict the consumer).
//!   An operator's pause (admin API) pauses them the same way until resumed.
//! - Lag: every `lag_interval` a second thread, with its own client, asks the
//!   broker for each assigned partition's high watermark and the group's committed
//!   offset (librdkafka's own statistics stop updating the watermark while a
//!   partition is paused, which is when an operator most wants to see it).
//! - Rebalance: before partitions are revoked, their in-flight events are waited
//!   for (up to the drain timeout) and the stored offsets committed synchronously.
//! - Shutdown: stop fetching, wait for in-flight events (up to the drain timeout),
//!   commit, leave the group.

use super::offsets::{OffsetTracker, Tp};
use crate::event::EventRecord;
use crate::topics::TopicNamer;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::ClientContext;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(100);

/// What the poll thread and the workers share.
#[derive(Default)]
pub struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    tracker: OffsetTracker,
    /// Events handed to workers and neither finished nor abandoned.
    outstanding: usize,
    /// Partitions assigned to this consumer now.
    assigned: BTreeSet<Tp>,
    /// Latest lag of each assigned partition (high watermark - committed offset).
    lag: BTreeMap<Tp, i64>,
}

/// One assigned partition, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    /// Records not yet committed; unknown until librdkafka's first statistics.
    pub lag: Option<i64>,
}

impl Shared {
    fn wait_until(&self, deadline: Instant, done: impl Fn(&State) -> bool) -> bool {
        let mut state = self.state.lock().expect("source state lock");
        while !done(&state) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, (deadline - now).min(POLL))
                .expect("source state lock")
                .0;
        }
        true
    }

    fn outstanding(&self) -> usize {
        self.state.lock().expect("source state lock").outstanding
    }

    /// Events handed to the workers and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.outstanding()
    }

    /// The assigned partitions and their lag.
    pub fn partitions(&self) -> Vec<PartitionView> {
        let state = self.state.lock().expect("source state lock");
        state
            .assigned
            .iter()
            .map(|tp| PartitionView {
                topic: tp.0.clone(),
                partition: tp.1,
                lag: state.lag.get(tp).copied(),
            })
            .collect()
    }
}

/// The consumer's callbacks: rebalance handling and librdkafka's log lines.
pub struct SourceContext {
    plugin: String,
    shared: Arc<Shared>,
    drain_timeout: Duration,
    paused: Arc<AtomicBool>,
}

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(plugin = %self.plugin, facility = fac, "librdkafka: {message}")
            }
            L::Warning => {
                tracing::warn!(plugin = %self.plugin, facility = fac, "librdkafka: {message}")
            }
            _ => tracing::debug!(plugin = %self.plugin, facility = fac, "librdkafka: {message}"),
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let tps = tps_of(list);
            let deadline = Instant::now() + self.drain_timeout;
            let drained = self
                .shared
                .wait_until(deadline, |s| s.tracker.in_flight_in(&tps) == 0);
            if !drained {
                tracing::warn!(plugin = %self.plugin, "partitions revoked before their in-flight events finished; those events will be redelivered");
            }
            if let Err(e) = commit(consumer) {
                tracing::warn!(plugin = %self.plugin, error = %e, "commit on revoke failed; events since the last commit will be redelivered");
            }
            let mut state = self.shared.state.lock().expect("source state lock");
            state.tracker.forget(&tps);
            for tp in &tps {
                state.assigned.remove(tp);
                state.lag.remove(tp);
            }
            drop(state);
            tracing::info!(plugin = %self.plugin, partitions = %describe(&tps), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                if self.paused.load(Ordering::SeqCst) {
                    // Paused by the operator: not even the first fetch.
                    let _ = consumer.pause(list);
                }
                let tps = tps_of(list);
                tracing::info!(plugin = %self.plugin, partitions = %describe(&tps), "partitions assigned");
                let mut state = self.shared.state.lock().expect("source state lock");
                state.assigned.extend(tps);
            }
            Rebalance::Error(e) => {
                tracing::warn!(plugin = %self.plugin, error = %e, "rebalance error")
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

pub type SourceConsumer = BaseConsumer<SourceContext>;

/// Commit the stored offsets now. "Nothing to commit" (the timer already
/// committed everything stored) is a success.
fn commit(consumer: &SourceConsumer) -> rdkafka::error::KafkaResult<()> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => Ok(()),
        other => other,
    }
}

fn tps_of(list: &TopicPartitionList) -> Vec<Tp> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

fn describe(tps: &[Tp]) -> String {
    tps.iter()
        .map(|(t, p)| format!("{t}/{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// How a worker reports that it is done with an event.
#[derive(Clone)]
pub struct Acker {
    consumer: Arc<SourceConsumer>,
    shared: Arc<Shared>,
}

impl Acker {
    /// The event is finished: its offset may be committed once every earlier one is.
    pub fn finish(&self, event: &EventRecord) {
        let tp = (event.topic.clone(), event.partition);
        let mut state = self.shared.state.lock().expect("source state lock");
        state.outstanding = state.outstanding.saturating_sub(1);
        if let Some(last) = state.tracker.finish(&tp, event.offset) {
            // Stores `last + 1` as the next offset to read; committed on the timer.
            if let Err(e) = self.consumer.store_offset(&tp.0, tp.1, last) {
                tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "offset not stored (partition revoked?)");
            }
        }
        drop(state);
        self.shared.changed.notify_all();
    }

    /// The event was given up (shutdown): its offset stays uncommitted, so it is
    /// read again by whoever consumes the partition next.
    pub fn abandon(&self, _event: &EventRecord) {
        let mut state = self.shared.state.lock().expect("source state lock");
        state.outstanding = state.outstanding.saturating_sub(1);
        drop(state);
        self.shared.changed.notify_all();
    }
}

/// Settings of one plugin's source.
pub struct SourceSettings {
    pub plugin: String,
    pub group: String,
    pub topics: Vec<String>,
    pub max_in_flight: usize,
    pub drain_timeout: Duration,
    /// Set by an operator (admin API): consumption paused until cleared.
    pub paused: Arc<AtomicBool>,
}

/// A running source: its thread and its stop switch.
pub struct Source {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Source {
    /// Create the consumer, subscribe, and start polling; each event goes to `dispatch`.
    pub fn start(
        config: &crate::config::Config,
        namer: TopicNamer,
        settings: SourceSettings,
        dispatch: impl Fn(EventRecord) + Send + 'static,
    ) -> Result<(Source, Acker), String> {
        let shared = Arc::new(Shared::default());
        let consumer_cfg = &config.kafka.consumer;
        let mut c = super::base_config(config);
        c.set("group.id", &settings.group)
            .set("client.id", format!("weir-{}", settings.plugin))
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                consumer_cfg.commit_interval.as_millis().to_string(),
            )
            .set("auto.offset.reset", &consumer_cfg.auto_offset_reset)
            .set(
                "session.timeout.ms",
                consumer_cfg.session_timeout.as_millis().to_string(),
            )
            .set(
                "max.poll.interval.ms",
                consumer_cfg.max_poll_interval.as_millis().to_string(),
            )
            .set("fetch.max.bytes", consumer_cfg.fetch_max_bytes.to_string())
            .set(
                "max.partition.fetch.bytes",
                consumer_cfg.max_partition_fetch_bytes.to_string(),
            );
        let context = SourceContext {
            plugin: settings.plugin.clone(),
            shared: shared.clone(),
            drain_timeout: settings.drain_timeout,
            paused: settings.paused.clone(),
        };
        let consumer: SourceConsumer = c.create_with_context(context).map_err(|e| {
            format!(
                "plugin {}: cannot create its consumer: {e}",
                settings.plugin
            )
        })?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            format!(
                "plugin {}: cannot subscribe to {topics:?}: {e}",
                settings.plugin
            )
        })?;
        let consumer = Arc::new(consumer);
        let acker = Acker {
            consumer: consumer.clone(),
            shared: shared.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let lag_interval = consumer_cfg.lag_interval;
        if !lag_interval.is_zero() {
            // Its own client (same group, never joining it): on the consumer's
            // connection these requests would queue behind long-polling fetches.
            let probe: BaseConsumer = super::base_config(config)
                .set("group.id", &settings.group)
                .set("client.id", format!("weir-{}-lag", settings.plugin))
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| {
                    format!(
                        "plugin {}: cannot create its lag client: {e}",
                        settings.plugin
                    )
                })?;
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("weir-lag-{}", settings.plugin))
                    .spawn(move || lag_loop(&probe, &shared, lag_interval, &stop))
                    .map_err(|e| format!("cannot start the lag thread: {e}"))?,
            );
        }
        let (flag, polled) = (stop.clone(), shared.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("weir-source-{}", settings.plugin))
                .spawn(move || poll_loop(consumer, polled, settings, namer, flag, dispatch))
                .map_err(|e| format!("cannot start the source thread: {e}"))?,
        );
        Ok((
            Source {
                stop,
                threads,
                shared,
            },
            acker,
        ))
    }

    /// What the source knows now: in-flight events, partitions, lag.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Ask the source to stop; it drains, commits and leaves the group.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Wait for the source's threads to finish (after [`Source::stop`]).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Measure the lag of the assigned partitions every `interval` until `stop`.
fn lag_loop(probe: &BaseConsumer, shared: &Shared, interval: Duration, stop: &AtomicBool) {
    let mut next = Instant::now() + Duration::from_secs(1).min(interval);
    while !stop.load(Ordering::SeqCst) {
        if Instant::now() >= next {
            measure_lag(probe, shared, Duration::from_secs(5));
            next = Instant::now() + interval;
        }
        std::thread::sleep(POLL);
    }
}

/// High watermark minus the committed offset (minus the low watermark before the
/// group's first commit), per assigned partition.
fn measure_lag(consumer: &BaseConsumer, shared: &Shared, timeout: Duration) {
    let assigned: Vec<Tp> = {
        let state = shared.state.lock().expect("source state lock");
        state.assigned.iter().cloned().collect()
    };
    if assigned.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in &assigned {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, timeout).ok();
    for (topic, partition) in assigned {
        let Ok((low, high)) = consumer.fetch_watermarks(&topic, partition, timeout) else {
            continue; // broker unreachable: keep the last figure
        };
        let base = committed
            .as_ref()
            .and_then(|c| c.find_partition(&topic, partition))
            .and_then(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(low);
        let mut state = shared.state.lock().expect("source state lock");
        let tp = (topic, partition);
        if state.assigned.contains(&tp) {
            state.lag.insert(tp, (high - base).max(0));
        }
    }
}

fn poll_loop(
    consumer: Arc<SourceConsumer>,
    shared: Arc<Shared>,
    settings: SourceSettings,
    namer: TopicNamer,
    stop: Arc<AtomicBool>,
    dispatch: impl Fn(EventRecord),
) {
    let plugin = settings.plugin.as_str();
    let mut paused = false;
    let mut by_operator = false;
    let mut last_error: Option<(String, Instant)> = None;
    while !stop.load(Ordering::SeqCst) {
        let outstanding = shared.outstanding();
        let operator = settings.paused.load(Ordering::SeqCst);
        if operator != by_operator {
            tracing::info!(
                plugin,
                in_flight = outstanding,
                "{}",
                if operator {
                    "paused by the operator: no new events are fetched (in-flight ones finish)"
                } else {
                    "resumed by the operator"
                }
            );
            by_operator = operator;
        }
        // Backpressure pauses at max_in_flight and resumes at half of it.
        let over = outstanding >= settings.max_in_flight
            || (paused && outstanding > settings.max_in_flight / 2);
        if operator || over {
            // Re-pause each time: a rebalance may have assigned new partitions.
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.pause(&assignment);
            }
            if !paused && !operator {
                tracing::debug!(plugin, outstanding, "backpressure: partitions paused");
            }
            paused = true;
        } else if paused {
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
            paused = false;
        }
        match consumer.poll(POLL) {
            None => {}
            Some(Err(e)) => {
                // librdkafka reconnects by itself; say so once in a while, not per poll.
                let text = e.to_string();
                let repeat = last_error
                    .as_ref()
                    .is_some_and(|(t, at)| *t == text && at.elapsed() < Duration::from_secs(10));
                if !repeat {
                    tracing::warn!(plugin, error = %text, "consumer error; librdkafka keeps retrying");
                    last_error = Some((text, Instant::now()));
                }
            }
            Some(Ok(msg)) => {
                let topic = msg.topic().to_string();
                let event = EventRecord {
                    logical_topic: namer.logical_name(&topic).unwrap_or_else(|| topic.clone()),
                    partition: msg.partition(),
                    offset: msg.offset(),
                    timestamp_ms: msg.timestamp().to_millis(),
                    key: msg.key().map(<[u8]>::to_vec),
                    payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers: super::headers_of(&msg),
                    topic,
                };
                {
                    let mut state = shared.state.lock().expect("source state lock");
                    state
                        .tracker
                        .start(&(event.topic.clone(), event.partition), event.offset);
                    state.outstanding += 1;
                }
                dispatch(event);
            }
        }
    }

    // Shutdown: stop fetching, let in-flight events finish, commit, leave.
    if let Ok(assignment) = consumer.assignment() {
        let _ = consumer.pause(&assignment);
    }
    let deadline = Instant::now() + settings.drain_timeout;
    let mut drained = false;
    while Instant::now() < deadline {
        if shared.wait_until(Instant::now() + POLL, |s| s.outstanding == 0) {
            drained = true;
            break;
        }
        let _ = consumer.poll(Duration::ZERO); // serve callbacks while waiting
    }
    let left = shared.outstanding();
    if !drained {
        tracing::warn!(
            plugin,
            unfinished = left,
            "drain timeout: unfinished events will be redelivered"
        );
    }
    match commit(&consumer) {
        Ok(()) => tracing::info!(plugin, "offsets committed"),
        Err(e) => {
            tracing::warn!(plugin, error = %e, "final commit failed; events since the last commit will be redelivered")
        }
    }
    consumer.unsubscribe();
    tracing::info!(plugin, drained, "source stopped");
}
