//! Fetch: one consumer per plugin, polled on its own thread, reading in batches.
//!
//! The thread owns everything that touches the consumer: it reads records in
//! batches and hands them on as [`Ticket`]s, keeps the [`OffsetBook`], stores
//! the finished positions (committed asynchronously by librdkafka every
//! `commit_interval`), rewinds partitions whose deliveries failed, and decides
//! per partition whether it is paused.
//!
//! - Backpressure: past `max_in_flight` events (or `max_in_flight_bytes`) read
//!   and not yet committed past, nothing more is read until half of them are
//!   done. The consumer is still polled every 100 ms (so rebalances are served
//!   and the group does not evict it); a record such a poll returns is taken.
//!   librdkafka's own prefetch queue is bounded (`queued.max.messages.kbytes`).
//!   Partitions are not paused for this: a resumed partition is fetched again
//!   only when librdkafka's broker thread next wakes up (up to a second later),
//!   which measured as a 30-fold slowdown.
//! - Pausing (an operator's, or after a rewind) is reconciled per partition
//!   against what librdkafka was told, and a revoked partition is resumed on its
//!   way out: a pause never outlives an assignment.
//! - Stalls: a partition with lag and no progress for `stall_timeout` while not
//!   paused by an operator is reported (log, `/health` Degraded).
//! - Rebalance: before partitions are revoked, their in-flight events are
//!   waited for (up to the drain timeout) and the positions committed.
//! - Shutdown: stop fetching, wait for in-flight events (up to the drain
//!   timeout), commit, leave.

use super::acks::{EventAck, Ticket};
use super::handle::Workers;
use super::lanes::lane_of;
use super::offsets::{OffsetBook, Rewind, Tp};
use super::stats::Stats;
use super::transaction::{Aborted, Commit, Committer, Transaction, TransactionSettings};
use super::StartError;
use crate::event::EventRecord;
use crate::topics::TopicNamer;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientContext, Offset};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Longest wait in one poll when nothing is in flight.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Wait in one poll while events are in flight: their completions move offsets
/// and lift backpressure, which this thread must notice soon.
const BUSY_POLL: Duration = Duration::from_millis(2);
/// Under backpressure: how often the consumer is still polled (callbacks), and
/// how long to wait between looks at the events in flight.
const HELD_POLL: Duration = Duration::from_millis(100);
const HELD_WAIT: Duration = Duration::from_millis(1);
/// Records read in one batch at most.
const READ_BATCH: usize = 1024;

/// What the fetch thread shares with the admin API and the lag thread.
#[derive(Default)]
pub struct Shared {
    state: Mutex<State>,
    in_flight: AtomicUsize,
    in_flight_bytes: AtomicUsize,
    /// Why the fetch thread died (a panic), for the supervisor to restart it.
    failure: Mutex<Option<String>>,
    /// Stop without waiting for in-flight events (the pipeline failed: some
    /// of them can never finish).
    hurry: AtomicBool,
    /// An operator's requests, carried out by the fetch thread one at a time.
    commands: Mutex<std::collections::VecDeque<Command>>,
    /// Workers running now.
    workers: AtomicUsize,
}

/// What an operator asks of a plugin's consumer (admin API, control topic).
/// Both wait for the events in flight first (up to `shutdown.drain_timeout`):
/// nothing new is fetched meanwhile.
pub enum Command {
    /// Move those of these partitions assigned here to these offsets, and
    /// commit them.
    Seek {
        targets: BTreeMap<(String, i32), i64>,
        reply: std::sync::mpsc::Sender<SeekDone>,
    },
    /// Run this many workers (keys are routed anew).
    Workers {
        count: usize,
        reply: std::sync::mpsc::Sender<WorkersDone>,
    },
}

/// A partition an operator moved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Moved {
    pub topic: String,
    pub partition: i32,
    pub to: i64,
}

/// What a [`Command::Seek`] did here.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SeekDone {
    pub moved: Vec<Moved>,
    /// Events in flight that did not finish within the drain timeout: dropped
    /// (their outputs may still be sent, their offsets are not committed).
    pub dropped: usize,
    /// Why nothing moved, when it could not be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a [`Command::Workers`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkersDone {
    pub from: usize,
    pub to: usize,
    /// Events that did not finish within the drain timeout: read again from
    /// the first unfinished one (after the workers changed).
    pub rewound: usize,
}

#[derive(Default)]
struct State {
    /// Partitions assigned to this consumer now.
    assigned: BTreeSet<Tp>,
    /// Latest lag of each assigned partition (high watermark - committed offset).
    lag: BTreeMap<Tp, i64>,
    /// Partitions with lag and no progress, with what is known of why.
    stalled: BTreeMap<Tp, String>,
    /// Partitions the consumer was told to pause (operator, or a rewind's backoff).
    paused: BTreeSet<Tp>,
    /// The consumer failed for good (fenced by another member with its instance id).
    fatal: Option<String>,
}

/// One assigned partition, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    /// Records not yet committed; unknown until first measured.
    pub lag: Option<i64>,
    /// Set when the partition has lag and made no progress for `stall_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
    /// Not fetched now: paused by the operator (applied, not just asked for),
    /// or backing off after a failed delivery.
    #[serde(default)]
    pub paused: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic on the fetch thread while it held the lock (the pipeline is
        // then restarted) must not make the admin API panic too.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Events read and not yet committed past.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Workers running now.
    pub fn workers(&self) -> usize {
        self.workers.load(Ordering::Relaxed)
    }

    /// Queue an operator's request for the fetch thread. A pipeline that
    /// stops drops it: the reply's sender goes, and its receiver learns so.
    pub fn command(&self, command: Command) {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(command);
    }

    fn next_command(&self) -> Option<Command> {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// The assigned partitions, their lag and stalls.
    pub fn partitions(&self) -> Vec<PartitionView> {
        let state = self.lock();
        state
            .assigned
            .iter()
            .map(|tp| PartitionView {
                topic: tp.0.to_string(),
                partition: tp.1,
                lag: state.lag.get(tp).copied(),
                stalled: state.stalled.get(tp).cloned(),
                paused: state.paused.contains(tp),
            })
            .collect()
    }

    /// What keeps this consumer from making progress: stalled partitions and a
    /// fatal consumer error, as sentences.
    pub fn problems(&self) -> Vec<String> {
        let state = self.lock();
        let mut out: Vec<String> = state
            .stalled
            .iter()
            .map(|(tp, why)| format!("{}/{}: {why}", tp.0, tp.1))
            .collect();
        out.extend(state.fatal.clone());
        out
    }

    /// The assigned partitions (for the lag thread).
    pub(super) fn assigned(&self) -> Vec<Tp> {
        self.lock().assigned.iter().cloned().collect()
    }

    pub(super) fn set_lag(&self, tp: Tp, lag: i64) {
        let mut state = self.lock();
        if state.assigned.contains(&tp) {
            state.lag.insert(tp, lag);
        }
    }
}

/// Settings of one plugin's consumer.
pub struct FetchSettings {
    pub plugin: String,
    pub group: String,
    /// Static group membership (`group.instance.id`); `None` for a dynamic member.
    pub instance_id: Option<String>,
    pub topics: Vec<String>,
    pub max_in_flight: usize,
    pub max_in_flight_bytes: usize,
    pub drain_timeout: Duration,
    pub stall_timeout: Duration,
    /// Set by an operator (admin API): consumption paused until cleared.
    pub paused: Arc<AtomicBool>,
    /// Exactly-once: outputs and offsets commit in transactions.
    pub transaction: Option<TransactionSettings>,
}

/// The consumer's callbacks: rebalances and librdkafka's log lines. Called on
/// the fetch thread (from `poll`), like everything else that touches the book.
pub struct FetchContext {
    plugin: String,
    shared: Arc<Shared>,
    book: Mutex<OffsetBook>,
    /// Partitions librdkafka was told to pause.
    paused: Mutex<HashSet<Tp>>,
    drain_timeout: Duration,
    operator: Arc<AtomicBool>,
    /// Names of the subscribed topics, shared by every event read from them.
    topics: Vec<(Arc<str>, Arc<str>)>,
    /// Exactly-once: the transactional producer (kept across consumers).
    txn: Option<Arc<Mutex<Transaction>>>,
}

impl ClientContext for FetchContext {
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

impl ConsumerContext for FetchContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let tps = self.tps_of(list);
            if let Some(txn) = &self.txn {
                self.revoke_transactional(consumer, txn, &tps);
            } else if consumer.assignment_lost() {
                tracing::warn!(plugin = %self.plugin, partitions = %describe(&tps), "partitions lost (session timed out?); their events in flight will be read again by the new owner");
            } else {
                self.drain(&tps, |book| {
                    book.advance(|tp, last| store(consumer, &self.plugin, tp, last))
                });
                if let Err(e) = commit(consumer) {
                    tracing::warn!(plugin = %self.plugin, error = %e, "commit on revoke failed; events since the last commit will be read again");
                }
            }
            self.book
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .revoke(&tps);
            let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
            // A partition leaves un-paused: if it comes back, it starts clean.
            let ours: Vec<&Tp> = tps.iter().filter(|tp| paused.contains(*tp)).collect();
            if !ours.is_empty() {
                let _ = consumer.resume(&tpl_of(&ours));
            }
            let mut state = self.shared.lock();
            for tp in &tps {
                state.assigned.remove(tp);
                state.lag.remove(tp);
                state.stalled.remove(tp);
                state.paused.remove(tp);
                paused.remove(tp);
            }
            drop(state);
            tracing::info!(plugin = %self.plugin, partitions = %describe(&tps), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let tps = self.tps_of(list);
                if let Some(txn) = &self.txn {
                    // A new generation (an incremental assign comes without a
                    // revoke): a commit asked for with the old one would be
                    // refused, so it is asked for again.
                    txn.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .void_requests();
                }
                if self.operator.load(Ordering::SeqCst) {
                    // Paused by the operator: not even the first fetch.
                    let _ = consumer.pause(list);
                }
                let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
                let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
                let mut state = self.shared.lock();
                for tp in &tps {
                    book.assign(tp.clone());
                    state.assigned.insert(tp.clone());
                    if self.operator.load(Ordering::SeqCst) {
                        paused.insert(tp.clone());
                        state.paused.insert(tp.clone());
                    } else {
                        paused.remove(tp);
                        state.paused.remove(tp);
                    }
                }
                drop(state);
                tracing::info!(plugin = %self.plugin, partitions = %describe(&tps), "partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::warn!(plugin = %self.plugin, error = %e, "rebalance error")
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

impl FetchContext {
    /// Exactly-once, before `tps` go: wait for their events (up to the drain
    /// timeout), send what finished and commit; lost partitions (or a commit
    /// that fails) abort, and the partitions that stay are read again from
    /// what the aborted transaction carried.
    fn revoke_transactional(
        &self,
        consumer: &BaseConsumer<Self>,
        txn: &Mutex<Transaction>,
        tps: &[Tp],
    ) {
        let mut txn = txn.lock().unwrap_or_else(PoisonError::into_inner);
        // A commit of its own comes next: requests made before are void.
        txn.void_requests();
        if let Some(Err(aborted)) = txn.take_outcome() {
            // The committer's last transaction aborted: nothing after it may be
            // sent before every partition is read again from what it carried.
            self.rewind_after(consumer, &aborted, tps);
        }
        let aborted = if consumer.assignment_lost() {
            tracing::warn!(plugin = %self.plugin, partitions = %describe(tps), "partitions lost (session timed out?); the open transaction is aborted and their events read again by the new owner");
            Some(txn.abort("partitions lost".into(), None))
        } else {
            self.drain(tps, |book| {
                book.advance_with(|tp, a| txn.send(tp, a), |_, _| {})
            });
            txn.commit(consumer.group_metadata()).err()
        };
        if let Some(aborted) = aborted {
            self.rewind_after(consumer, &aborted, tps);
        }
    }

    /// Before `tps` are revoked: wait (up to the drain timeout) until their
    /// events in flight are settled, moving the book with `advance` meanwhile.
    fn drain(&self, tps: &[Tp], mut advance: impl FnMut(&mut OffsetBook)) {
        let deadline = Instant::now() + self.drain_timeout;
        loop {
            let unsettled = {
                let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
                advance(&mut book);
                book.unsettled(Some(tps))
            };
            if unsettled == 0 {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(plugin = %self.plugin, "partitions revoked before their in-flight events finished; those events will be read again");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// After `aborted`, inside a rebalance callback: every partition is read
    /// again from what the transaction carried (those of `revoked` are not
    /// sought: they go).
    fn rewind_after(&self, consumer: &BaseConsumer<Self>, aborted: &Aborted, revoked: &[Tp]) {
        let rewinds = self
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rewind_all(|tp| aborted.first.get(tp).copied(), &aborted.reason);
        for r in rewinds.iter().filter(|r| !revoked.contains(&r.tp)) {
            let (topic, partition) = (&r.tp.0, r.tp.1);
            let at = Offset::Offset(r.from);
            if let Err(e) = consumer.seek(topic, partition, at, Duration::from_secs(5)) {
                tracing::error!(plugin = %self.plugin, partition = %format!("{topic}/{partition}"), error = %e, "cannot seek back after an aborted transaction");
            }
        }
    }

    /// The shared names of a subscribed topic.
    fn names(&self, topic: &str) -> (Arc<str>, Arc<str>) {
        self.topics
            .iter()
            .find(|(full, _)| &**full == topic)
            .cloned()
            .unwrap_or_else(|| (Arc::from(topic), Arc::from(topic)))
    }

    fn tps_of(&self, list: &TopicPartitionList) -> Vec<Tp> {
        list.elements()
            .iter()
            .map(|e| (self.names(e.topic()).0, e.partition()))
            .collect()
    }
}

pub type FetchConsumer = BaseConsumer<FetchContext>;

/// Store `last + 1` as the partition's next offset; committed on the timer.
fn store(consumer: &FetchConsumer, plugin: &str, tp: &Tp, last: i64) {
    if let Err(e) = consumer.store_offset(&tp.0, tp.1, last) {
        tracing::debug!(plugin, topic = %tp.0, partition = tp.1, error = %e, "offset not stored (partition revoked?)");
    }
}

/// Commit the stored offsets now. "Nothing to commit" (the timer already
/// committed everything stored) is a success.
fn commit(consumer: &FetchConsumer) -> rdkafka::error::KafkaResult<()> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => Ok(()),
        other => other,
    }
}

fn describe(tps: &[Tp]) -> String {
    tps.iter()
        .map(|(t, p)| format!("{t}/{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn tpl_of(tps: &[&Tp]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in tps {
        tpl.add_partition(t, *p);
    }
    tpl
}

/// A running consumer: its threads and its stop switch.
pub struct Fetch {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Fetch {
    /// Create the consumer, subscribe, and start reading; each batch of tickets
    /// goes to `dispatch`.
    pub fn start(
        config: &crate::config::Config,
        namer: TopicNamer,
        settings: FetchSettings,
        stats: Arc<Stats>,
        workers: Arc<Workers>,
    ) -> Result<Fetch, StartError> {
        let shared = Arc::new(Shared::default());
        shared.workers.store(workers.count(), Ordering::Relaxed);
        let consumer_cfg = &config.kafka.consumer;
        let mut c = crate::kafka::base_config(config);
        let exactly_once = settings.transaction.is_some();
        c.set("group.id", &settings.group)
            .set("client.id", format!("weir-{}", settings.plugin))
            // Exactly-once commits offsets in its transactions, and reads
            // only what other transactions committed.
            .set("enable.auto.commit", (!exactly_once).to_string())
            .set("isolation.level", "read_committed")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                consumer_cfg.commit_interval.as_millis().to_string(),
            )
            .set("auto.offset.reset", &consumer_cfg.auto_offset_reset)
            .set(
                "max.poll.interval.ms",
                consumer_cfg.max_poll_interval.as_millis().to_string(),
            )
            .set("fetch.max.bytes", consumer_cfg.fetch_max_bytes.to_string())
            .set(
                "max.partition.fetch.bytes",
                consumer_cfg.max_partition_fetch_bytes.to_string(),
            )
            .set(
                "queued.max.messages.kbytes",
                (consumer_cfg.prefetch_max_bytes.as_u64() / 1024)
                    .max(1)
                    .to_string(),
            );
        c.set(
            "fetch.wait.max.ms",
            consumer_cfg.fetch_wait.as_millis().max(1).to_string(),
        );
        // With the KIP-848 protocol the broker sets the session timeout
        // (group.consumer.session.timeout.ms).
        if !crate::kafka::consumer_protocol(config) {
            c.set(
                "session.timeout.ms",
                consumer_cfg.session_timeout.as_millis().to_string(),
            );
        }
        // librdkafka waits this long before fetching again once its prefetch queue
        // was full (1 s by default: a stall after every burst). kafka.properties
        // may set it otherwise.
        if !config
            .kafka
            .properties
            .contains_key("fetch.queue.backoff.ms")
        {
            c.set("fetch.queue.backoff.ms", "10");
        }
        let topics: Vec<(Arc<str>, Arc<str>)> = settings
            .topics
            .iter()
            .map(|full| {
                let logical = namer.logical_name(full).unwrap_or_else(|| full.clone());
                (Arc::from(full.as_str()), Arc::from(logical.as_str()))
            })
            .collect();
        let txn = match &settings.transaction {
            Some(t) => Some(Arc::new(Mutex::new(
                Transaction::start(config, &settings.plugin, t.clone(), stats.clone()).map_err(
                    |source| StartError::Transaction {
                        plugin: settings.plugin.clone(),
                        source: Box::new(source),
                    },
                )?,
            ))),
            None => None,
        };
        let recipe = Recipe {
            client: c,
            topics,
            shared: shared.clone(),
            txn,
        };
        let consumer = recipe.create(&settings, settings.instance_id.as_deref())?;
        let committer = match &recipe.txn {
            Some(txn) => Some(Committer::spawn(&settings.plugin, txn.clone()).map_err(
                |source| StartError::Thread {
                    what: "commit",
                    source,
                },
            )?),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (flag, polled, failed) = (stop.clone(), shared.clone(), shared.clone());
        let name = format!("weir-fetch-{}", settings.plugin);
        let plugin = settings.plugin.clone();
        threads.push(
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let mut fetcher = Fetcher {
                        consumer,
                        recipe,
                        shared: polled,
                        settings,
                        stats,
                        stop: flag,
                        backpressure: false,
                        last_poll: Instant::now(),
                        backoff: HashMap::new(),
                        redo: HashMap::new(),
                        last_error: None,
                        last_stall_check: Instant::now(),
                        committer,
                        workers,
                        hold: None,
                    };
                    let run = std::panic::AssertUnwindSafe(|| fetcher.run());
                    if let Err(panic) = std::panic::catch_unwind(run) {
                        let why = super::panic_message(&*panic);
                        tracing::error!(plugin = %plugin, "the fetch thread failed: {why}");
                        *failed.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                    }
                })
                .map_err(|source| StartError::Thread {
                    what: "fetch",
                    source,
                })?,
        );
        Ok(Fetch {
            stop,
            threads,
            shared,
        })
    }

    /// What the consumer knows now: in-flight events, partitions, lag, stalls.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Why the fetch thread ended without being asked to stop (it panicked).
    pub fn failure(&self) -> Option<String> {
        if self.stop.load(Ordering::SeqCst) || !self.threads.iter().any(|t| t.is_finished()) {
            return None;
        }
        let why = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(match why {
            Some(why) => format!("the fetch thread failed: {why}"),
            None => "the fetch thread ended".to_string(),
        })
    }

    /// Ask the consumer to stop without draining: it commits what finished and
    /// leaves the group; what did not finish is read again.
    pub fn stop_now(&self) {
        self.shared.hurry.store(true, Ordering::SeqCst);
        self.stop();
    }

    /// Ask the consumer to stop; it drains, commits and leaves the group.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Wait for the threads to finish (after [`Fetch::stop`]).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A partition being read again after a failed delivery: how often it was
/// rewound to the same offset (the event's delivery failures), and why.
struct Redo {
    offset: i64,
    count: u32,
    reason: Arc<str>,
}

/// How to make the consumer (again, after it was fenced).
struct Recipe {
    client: rdkafka::ClientConfig,
    topics: Vec<(Arc<str>, Arc<str>)>,
    shared: Arc<Shared>,
    txn: Option<Arc<Mutex<Transaction>>>,
}

impl Recipe {
    fn create(
        &self,
        settings: &FetchSettings,
        instance_id: Option<&str>,
    ) -> Result<FetchConsumer, StartError> {
        let mut c = self.client.clone();
        if let Some(id) = instance_id {
            c.set("group.instance.id", id);
        }
        let context = FetchContext {
            plugin: settings.plugin.clone(),
            shared: self.shared.clone(),
            book: Mutex::new(OffsetBook::default()),
            paused: Mutex::new(HashSet::new()),
            drain_timeout: settings.drain_timeout,
            operator: settings.paused.clone(),
            topics: self.topics.clone(),
            txn: self.txn.clone(),
        };
        let consumer: FetchConsumer =
            c.create_with_context(context)
                .map_err(|source| StartError::Client {
                    plugin: settings.plugin.clone(),
                    what: "consumer",
                    source: Box::new(source),
                })?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| StartError::Subscribe {
                plugin: settings.plugin.clone(),
                topics: settings.topics.clone(),
                source: Box::new(source),
            })?;
        Ok(consumer)
    }
}

struct Fetcher {
    consumer: FetchConsumer,
    recipe: Recipe,
    shared: Arc<Shared>,
    settings: FetchSettings,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    /// Not reading because too much is in flight.
    backpressure: bool,
    /// When the consumer was last polled.
    last_poll: Instant,
    /// Partitions rewound lately stay paused until then.
    backoff: HashMap<Tp, Instant>,
    redo: HashMap<Tp, Redo>,
    last_error: Option<(String, Instant)>,
    last_stall_check: Instant,
    /// Exactly-once: commits the transaction while this thread reads on.
    committer: Option<Committer>,
    workers: Arc<Workers>,
    /// An operator's request waiting for the events in flight.
    hold: Option<Hold>,
}

/// Fetching held for an operator's request until the events in flight it
/// waits for are settled (or `deadline`).
struct Hold {
    command: Command,
    deadline: Instant,
    /// Read before librdkafka's pause took effect: handed on after (not yet
    /// tracked by the book, so nothing waits for them).
    held: Vec<Ticket>,
}

impl Fetcher {
    fn ctx(&self) -> &FetchContext {
        self.consumer.context()
    }

    fn run(&mut self) {
        let mut operator = false;
        while !self.stop.load(Ordering::SeqCst) {
            let (events, _) = self.settle();
            let now_operator = self.settings.paused.load(Ordering::SeqCst);
            if now_operator != operator {
                tracing::info!(
                    plugin = %self.settings.plugin,
                    in_flight = events,
                    "{}",
                    if now_operator {
                        "paused by the operator: no new events are fetched (in-flight ones finish)"
                    } else {
                        "resumed by the operator"
                    }
                );
                operator = now_operator;
            }
            if self.hold.is_none() {
                if let Some(command) = self.shared.next_command() {
                    self.begin_hold(command, events);
                }
            }
            let holding = self.hold.is_some();
            self.reconcile_pauses(operator || holding);
            if self.last_stall_check.elapsed() >= Duration::from_secs(1) {
                self.check_stalls(operator || holding);
                self.last_stall_check = Instant::now();
            }
            if holding {
                self.keep_holding();
                continue;
            }
            let batch = if self.backpressure {
                if self.last_poll.elapsed() < HELD_POLL {
                    std::thread::sleep(HELD_WAIT);
                    continue;
                }
                self.read(Duration::ZERO, 1)
            } else {
                let wait = if events > 0 { BUSY_POLL } else { IDLE_POLL };
                self.read(wait, READ_BATCH)
            };
            self.last_poll = Instant::now();
            if !batch.is_empty() {
                self.workers.dispatch(batch);
            }
        }
        self.shut_down();
    }

    /// Start carrying out an operator's request: fetching stops (every
    /// partition is paused) until the events it waits for are settled.
    fn begin_hold(&mut self, command: Command, in_flight: usize) {
        let what = match &command {
            Command::Seek { targets, .. } => format!("moving {} partition(s)", targets.len()),
            Command::Workers { count, .. } => format!("changing to {count} worker(s)"),
        };
        tracing::info!(plugin = %self.settings.plugin, in_flight, "{what}: fetching held until the events in flight finish");
        self.hold = Some(Hold {
            command,
            deadline: Instant::now() + self.settings.drain_timeout,
            held: Vec::new(),
        });
    }

    /// The partitions a hold waits for: a seek's own (those assigned here),
    /// every partition (`None`) for a change of workers.
    fn hold_scope(&self) -> Option<Vec<Tp>> {
        let Some(Hold {
            command: Command::Seek { targets, .. },
            ..
        }) = &self.hold
        else {
            return None;
        };
        let book = self
            .ctx()
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(
            book.assigned()
                .filter(|tp| targets.contains_key(&(tp.0.to_string(), tp.1)))
                .cloned()
                .collect(),
        )
    }

    /// One turn of a hold: finish it once its events are settled (or its
    /// time is up); meanwhile poll for callbacks, keeping what a poll returns.
    fn keep_holding(&mut self) {
        let scope = self.hold_scope();
        let unsettled = self
            .ctx()
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unsettled(scope.as_deref());
        let due = self
            .hold
            .as_ref()
            .is_some_and(|h| Instant::now() >= h.deadline);
        if unsettled == 0 || due {
            self.finish_hold(unsettled);
            return;
        }
        if self.last_poll.elapsed() < HELD_POLL {
            std::thread::sleep(HELD_WAIT);
            return;
        }
        let read = self.poll_tickets(Duration::ZERO, READ_BATCH);
        self.last_poll = Instant::now();
        if let Some(hold) = &mut self.hold {
            hold.held.extend(read);
        }
    }

    fn finish_hold(&mut self, unsettled: usize) {
        let Some(Hold { command, held, .. }) = self.hold.take() else {
            return;
        };
        let plugin = self.settings.plugin.clone();
        let mut held = held;
        match command {
            Command::Seek { targets, reply } => {
                let done = self.seek_to(&targets);
                held.retain(|t| {
                    !targets.contains_key(&(t.event.topic.to_string(), t.event.partition))
                });
                let moved: Vec<String> = done
                    .moved
                    .iter()
                    .map(|m| format!("{}/{}→{}", m.topic, m.partition, m.to))
                    .collect();
                tracing::info!(plugin = %plugin, dropped = done.dropped, moved = %moved.join(","), "partitions moved and committed by the operator");
                self.stats
                    .offsets_moved
                    .fetch_add(done.moved.len() as u64, Ordering::Relaxed);
                let _ = reply.send(done);
            }
            Command::Workers { count, reply } => {
                let rewound = if unsettled > 0 {
                    self.rewind_unsettled("the workers changed before the event finished")
                } else {
                    0
                };
                if rewound > 0 {
                    held.clear();
                }
                let from = self.workers.count();
                self.workers.resize(count);
                let to = self.workers.count();
                self.shared.workers.store(to, Ordering::Relaxed);
                self.stats.workers_changes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(plugin = %plugin, from, to, rewound, "workers changed by the operator; keys are routed anew");
                let _ = reply.send(WorkersDone { from, to, rewound });
            }
        }
        let batch = self.track(held);
        if !batch.is_empty() {
            self.workers.dispatch(batch);
        }
    }

    /// Seek those of `targets` assigned here and commit them: what finished
    /// before is committed first, what did not is dropped (made stale).
    fn seek_to(&mut self, targets: &BTreeMap<(String, i32), i64>) -> SeekDone {
        let exactly_once = self.recipe.txn.is_some();
        if exactly_once {
            self.settle_transactional(true);
        } else {
            self.settle();
        }
        let mut done = SeekDone::default();
        let mut tpl = TopicPartitionList::new();
        let mut book = self
            .consumer
            .context()
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mine: Vec<(Tp, i64)> = book
            .assigned()
            .filter_map(|tp| Some((tp.clone(), *targets.get(&(tp.0.to_string(), tp.1))?)))
            .collect();
        for (tp, to) in mine {
            done.dropped += book.reset(&tp);
            self.redo.remove(&tp);
            self.backoff.remove(&tp);
            if let Err(e) =
                self.consumer
                    .seek(&tp.0, tp.1, Offset::Offset(to), Duration::from_secs(5))
            {
                done.error = Some(format!("cannot seek {}/{} to {to}: {e}", tp.0, tp.1));
                continue;
            }
            let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(to));
            done.moved.push(Moved {
                topic: tp.0.to_string(),
                partition: tp.1,
                to,
            });
        }
        drop(book);
        if tpl.count() == 0 {
            return done;
        }
        let committed = if exactly_once {
            self.consumer.commit(&tpl, CommitMode::Sync)
        } else {
            // The stored positions are what the timer commits next: they
            // must not carry the old ones back.
            self.consumer
                .store_offsets(&tpl)
                .and_then(|()| commit(&self.consumer))
        };
        if let Err(e) = committed {
            done.error = Some(format!(
                "sought, but the commit failed ({e}): the new positions are committed with the next events handled"
            ));
        }
        done
    }

    /// Read every partition with unsettled events again from its first
    /// unfinished one; how many events will be read again.
    fn rewind_unsettled(&mut self, reason: &str) -> usize {
        let rewinds = self
            .ctx()
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rewind_all(|_| None, reason);
        let mut again = 0;
        for r in rewinds {
            again += r.again;
            self.redo.remove(&r.tp);
            if let Err(e) = self.consumer.seek(
                &r.tp.0,
                r.tp.1,
                Offset::Offset(r.from),
                Duration::from_secs(5),
            ) {
                tracing::error!(plugin = %self.settings.plugin, partition = %format!("{}/{}", r.tp.0, r.tp.1), error = %e, "cannot seek back; the consumer will be restarted by the next rebalance");
            }
        }
        again
    }

    /// Move positions over finished events, rewind partitions whose deliveries
    /// failed; the events and bytes in flight.
    fn settle(&mut self) -> (usize, usize) {
        if self.recipe.txn.is_some() {
            return self.settle_transactional(false);
        }
        let ctx = self.consumer.context();
        let mut book = ctx.book.lock().unwrap_or_else(PoisonError::into_inner);
        let redo = &mut self.redo;
        book.advance(|tp, last| {
            store(&self.consumer, &self.settings.plugin, tp, last);
            if redo.get(tp).is_some_and(|r| r.offset <= last) {
                redo.remove(tp);
            }
        });
        let rewinds = book.take_rewinds();
        let (events, bytes) = book.in_flight();
        drop(book);
        for rewind in rewinds {
            self.rewind(rewind, None);
        }
        self.publish_in_flight(events, bytes)
    }

    fn publish_in_flight(&self, events: usize, bytes: usize) -> (usize, usize) {
        self.shared.in_flight.store(events, Ordering::Relaxed);
        self.shared.in_flight_bytes.store(bytes, Ordering::Relaxed);
        (events, bytes)
    }

    /// Exactly-once [`Fetcher::settle`]: send the records of the events that
    /// are next in their partitions into the open transaction, and commit it
    /// when it is due (or now, with `force`); an aborted one rewinds every
    /// partition to what it carried.
    fn settle_transactional(&mut self, force: bool) -> (usize, usize) {
        let Some(txn) = self.recipe.txn.clone() else {
            return (0, 0);
        };
        let mut txn = if force {
            txn.lock().unwrap_or_else(PoisonError::into_inner)
        } else {
            match txn.try_lock() {
                Ok(txn) => txn,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                // The committer thread has it: nothing can be sent now.
                Err(std::sync::TryLockError::WouldBlock) => {
                    let (events, bytes) = self
                        .ctx()
                        .book
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .in_flight();
                    return self.publish_in_flight(events, bytes);
                }
            }
        };
        let mut outcomes = Vec::new();
        outcomes.extend(txn.take_outcome());
        let ctx = self.consumer.context();
        let mut book = ctx.book.lock().unwrap_or_else(PoisonError::into_inner);
        // An aborted transaction rewinds before anything more is sent.
        let mut rewinds = Vec::new();
        let mut blame = None;
        let mut apply =
            |outcome: Commit, book: &mut OffsetBook, redo: &mut HashMap<Tp, Redo>| match outcome {
                Ok(committed) => {
                    for (tp, next) in committed {
                        if redo.get(&tp).is_some_and(|r| r.offset < next) {
                            redo.remove(&tp);
                        }
                    }
                }
                Err(aborted) => {
                    rewinds.extend(
                        book.rewind_all(|tp| aborted.first.get(tp).copied(), &aborted.reason),
                    );
                    blame = aborted.blame;
                }
            };
        for outcome in outcomes {
            apply(outcome, &mut book, &mut self.redo);
        }
        book.advance_with(|tp, a| txn.send(tp, a), |_, _| {});
        if force {
            if !txn.is_empty() {
                txn.void_requests();
                let outcome = txn.commit(self.consumer.group_metadata());
                apply(outcome, &mut book, &mut self.redo);
            }
        } else if txn.is_due() {
            if let Some(committer) = self.committer.as_ref().filter(|c| !c.is_busy()) {
                committer.request(txn.epoch(), self.consumer.group_metadata());
            }
        }
        let (events, bytes) = book.in_flight();
        drop(book);
        drop(txn);
        for rewind in rewinds {
            let at = blame
                .as_ref()
                .filter(|(tp, _)| *tp == rewind.tp)
                .map(|(_, offset)| *offset);
            self.rewind(rewind, Some(at));
        }
        self.publish_in_flight(events, bytes)
    }

    /// Read the partition again from the first unfinished event, after a pause
    /// that grows while the same event keeps failing. An aborted transaction
    /// (`blame` is `Some`) rewinds every partition: the failure counts against
    /// the event whose record failed, if it was of this partition, and
    /// against none otherwise.
    fn rewind(&mut self, rewind: Rewind, blame: Option<Option<i64>>) {
        let Rewind {
            tp,
            from,
            again,
            reason,
        } = rewind;
        let blamed = match blame {
            None => Some(from),
            Some(at) => at,
        };
        let count = match (self.redo.get(&tp), blamed) {
            (Some(r), Some(at)) if r.offset == at => r.count + 1,
            (Some(r), None) => r.count,
            (_, Some(_)) => 1,
            (None, None) => 0,
        };
        let pause = Duration::from_millis(100 * (1u64 << count.saturating_sub(1).min(7)));
        tracing::warn!(
            plugin = %self.settings.plugin,
            partition = %format!("{}/{}", tp.0, tp.1),
            from,
            events_again = again,
            attempt = count,
            retry_in = ?pause,
            reason = %reason,
            "a record was not delivered: the partition is read again from its first unfinished event"
        );
        self.stats.rewinds.fetch_add(1, Ordering::Relaxed);
        self.stats
            .redelivered
            .fetch_add(again as u64, Ordering::Relaxed);
        if let Err(e) =
            self.consumer
                .seek(&tp.0, tp.1, Offset::Offset(from), Duration::from_secs(5))
        {
            tracing::error!(plugin = %self.settings.plugin, partition = %format!("{}/{}", tp.0, tp.1), error = %e, "cannot seek back; the consumer will be restarted by the next rebalance");
        }
        if let Some(at) = blamed {
            self.redo.insert(
                tp.clone(),
                Redo {
                    offset: at,
                    count,
                    reason: reason.into(),
                },
            );
        }
        self.backoff.insert(tp, Instant::now() + pause);
    }

    /// Pause or resume each assigned partition as it should be now.
    fn reconcile_pauses(&mut self, operator: bool) {
        let (events, bytes) = (
            self.shared.in_flight.load(Ordering::Relaxed),
            self.shared.in_flight_bytes.load(Ordering::Relaxed),
        );
        let (max_events, max_bytes) = (
            self.settings.max_in_flight,
            self.settings.max_in_flight_bytes,
        );
        let over = events >= max_events || bytes >= max_bytes;
        let under = events <= max_events / 2 && bytes <= max_bytes / 2;
        if over && !self.backpressure {
            tracing::debug!(plugin = %self.settings.plugin, events, bytes, "backpressure: reading paused");
        }
        self.backpressure = over || (self.backpressure && !under);
        let now = Instant::now();
        self.backoff.retain(|_, until| *until > now);
        let ctx = self.consumer.context();
        let assigned: Vec<Tp> = ctx
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .assigned()
            .cloned()
            .collect();
        let mut paused = ctx.paused.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut pause, mut resume) = (Vec::new(), Vec::new());
        for tp in &assigned {
            let want = operator || self.backoff.contains_key(tp);
            match (want, paused.contains(tp)) {
                (true, false) => pause.push(tp),
                (false, true) => resume.push(tp),
                _ => {}
            }
        }
        if pause.is_empty() && resume.is_empty() {
            return;
        }
        if !pause.is_empty() {
            match self.consumer.pause(&tpl_of(&pause)) {
                Ok(()) => paused.extend(pause.into_iter().cloned()),
                Err(e) => {
                    tracing::warn!(plugin = %self.settings.plugin, error = %e, "cannot pause partitions")
                }
            }
        }
        if !resume.is_empty() {
            match self.consumer.resume(&tpl_of(&resume)) {
                Ok(()) => {
                    for tp in resume {
                        paused.remove(tp);
                    }
                }
                Err(e) => {
                    tracing::warn!(plugin = %self.settings.plugin, error = %e, "cannot resume partitions")
                }
            }
        }
        let mut state = self.shared.lock();
        state.paused = assigned
            .into_iter()
            .filter(|tp| paused.contains(tp))
            .collect();
    }

    /// Report partitions with lag that made no progress for `stall_timeout`.
    fn check_stalls(&mut self, operator: bool) {
        let timeout = self.settings.stall_timeout;
        if timeout.is_zero() {
            return;
        }
        let ctx = self.consumer.context();
        let mut book = ctx.book.lock().unwrap_or_else(PoisonError::into_inner);
        book.note_reads(timeout / 2);
        let paused = ctx.paused.lock().unwrap_or_else(PoisonError::into_inner);
        let mut state = self.shared.lock();
        let assigned: Vec<Tp> = state.assigned.iter().cloned().collect();
        for tp in assigned {
            let lag = state.lag.get(&tp).copied().unwrap_or(0);
            let idle = book
                .last_progress(&tp)
                .map_or(Duration::ZERO, |t| t.elapsed());
            let stalled = !operator && lag > 0 && idle >= timeout;
            let name = format!("{}/{}", tp.0, tp.1);
            if stalled {
                let why = match book.oldest_pending(&tp) {
                    Some(offset) => format!(
                        "lag {lag}, no progress for {} s; waiting for the event at offset {offset}",
                        idle.as_secs()
                    ),
                    None if paused.contains(&tp) => format!(
                        "lag {lag}, no progress for {} s; paused after a failed delivery",
                        idle.as_secs()
                    ),
                    None => format!(
                        "lag {lag}, no progress for {} s; nothing is fetched although nothing is in flight",
                        idle.as_secs()
                    ),
                };
                if !state.stalled.contains_key(&tp) {
                    tracing::warn!(plugin = %self.settings.plugin, partition = %name, "partition stalled: {why}");
                }
                state.stalled.insert(tp, why);
            } else if state.stalled.remove(&tp).is_some() {
                tracing::info!(plugin = %self.settings.plugin, partition = %name, "partition flows again");
            }
        }
    }

    /// Read up to `max` records, waiting at most `wait` for the first, and
    /// track them.
    fn read(&mut self, wait: Duration, max: usize) -> Vec<Ticket> {
        let batch = self.poll_tickets(wait, max);
        self.track(batch)
    }

    /// Poll up to `max` records, waiting at most `wait` for the first (not yet
    /// tracked: see [`Fetcher::track`]).
    fn poll_tickets(&mut self, wait: Duration, max: usize) -> Vec<Ticket> {
        let mut batch = Vec::new();
        let mut timeout = wait;
        while batch.len() < max {
            let polled = self.consumer.poll(timeout);
            timeout = Duration::ZERO;
            match polled {
                None => break,
                Some(Err(e)) => {
                    self.consumer_error(e);
                    break;
                }
                Some(Ok(msg)) => {
                    if let Some(ticket) = self.ticket(&msg) {
                        batch.push(ticket);
                    }
                }
            }
        }
        batch
    }

    /// Register a batch with the book as it is handed to the workers.
    fn track(&mut self, mut batch: Vec<Ticket>) -> Vec<Ticket> {
        // The book learns of the batch's events only now, as they are handed
        // to the workers. A rebalance callback runs inside `poll` above, in
        // the middle of this batch: had these events been tracked already, a
        // revoke would wait (up to the drain timeout) for events that cannot
        // finish before this function returns. Events of a partition revoked
        // meanwhile are stale: dropped, the new owner reads them again.
        if !batch.is_empty() {
            let mut book = self
                .ctx()
                .book
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            batch.retain(|t| {
                !t.is_stale()
                    && book.track(&(t.event.topic.clone(), t.event.partition), t.ack.clone())
            });
        }
        batch
    }

    /// The ticket of a record just read (registered with the book), or `None`
    /// for a partition no longer assigned.
    fn ticket(&self, msg: &BorrowedMessage<'_>) -> Option<Ticket> {
        let ctx = self.ctx();
        let (topic, logical_topic) = ctx.names(msg.topic());
        let tp: Tp = (topic.clone(), msg.partition());
        let event = EventRecord {
            topic,
            logical_topic,
            partition: msg.partition(),
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers: crate::kafka::headers_of(msg),
        };
        crate::failpoint::hit("fetch", &event.payload);
        let bytes = event.payload.len() + event.key.as_ref().map_or(0, Vec::len);
        // Tracked by the book only once dispatched (see `read`).
        let signal = ctx
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .signal(&tp)?
            .clone();
        let ack = EventAck::new(event.offset, bytes, signal.clone());
        let redo = if self.redo.is_empty() {
            None
        } else {
            self.redo.get(&tp)
        };
        let (delivery_failures, delivery_error) = match redo {
            Some(r) if r.offset == event.offset => (r.count, Some(r.reason.clone())),
            _ => (0, None),
        };
        Some(Ticket {
            lane: lane_of(&event),
            partition: signal,
            ack,
            attempts: 0,
            delivery_failures,
            delivery_error,
            event,
        })
    }

    fn consumer_error(&mut self, e: rdkafka::error::KafkaError) {
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            self.replace_fatal(format!("{code:?}: {reason}"));
            return;
        }
        // librdkafka reconnects by itself; say so once in a while, not per poll.
        let text = e.to_string();
        let repeat = self
            .last_error
            .as_ref()
            .is_some_and(|(t, at)| *t == text && at.elapsed() < Duration::from_secs(10));
        if !repeat {
            tracing::warn!(plugin = %self.settings.plugin, error = %text, "consumer error; librdkafka keeps retrying");
            self.last_error = Some((text, Instant::now()));
        }
    }

    /// The consumer failed for good: most likely another member of the group
    /// took over its `group.instance.id` (fenced). Its partitions are dropped at
    /// once: every event in flight becomes stale, so none of them sends another
    /// record (the partitions' new owner handles them from the last commit).
    /// Then a new consumer joins as a dynamic member, so this host keeps
    /// consuming; the problem stays on `/health` until the ids are fixed.
    fn replace_fatal(&mut self, reason: String) {
        if let Some(txn) = &self.recipe.txn {
            // Its offsets can no longer commit: nothing of it may be seen.
            let mut txn = txn.lock().unwrap_or_else(PoisonError::into_inner);
            txn.void_requests();
            let _ = txn.take_outcome(); // every partition is dropped below
            txn.abort("the consumer was fenced".into(), None);
        }
        let (dropped, partitions) = {
            let ctx = self.consumer.context();
            let mut book = ctx.book.lock().unwrap_or_else(PoisonError::into_inner);
            let all: Vec<Tp> = book.assigned().cloned().collect();
            let dropped = book.unsettled(None);
            book.revoke(&all);
            (dropped, all)
        };
        let text = match &self.settings.instance_id {
            Some(id) => format!(
                "the consumer failed for good ({reason}): another member of group {} probably uses \
                 group.instance.id {id:?}. This host dropped its partitions and goes on as a dynamic \
                 member; give each host its own kafka.consumer.instance_id (the default, \
                 \"{{host_id}}-{{plugin}}\", is unique per data directory)",
                self.settings.group
            ),
            None => format!("the consumer failed for good ({reason}); a new one is created"),
        };
        tracing::error!(
            plugin = %self.settings.plugin,
            partitions = %describe(&partitions),
            events_dropped = dropped,
            "{text}"
        );
        {
            let mut state = self.shared.lock();
            state.assigned.clear();
            state.lag.clear();
            state.stalled.clear();
            state.paused.clear();
            state.fatal = Some(text);
        }
        match self.recipe.create(&self.settings, None) {
            Ok(fresh) => {
                self.consumer = fresh;
                self.settings.instance_id = None;
                self.redo.clear();
                self.backoff.clear();
            }
            Err(e) => {
                tracing::error!(plugin = %self.settings.plugin, error = %e, "cannot create a new consumer")
            }
        }
    }

    /// Stop fetching, let in-flight events finish, commit, leave.
    fn shut_down(&mut self) {
        let plugin = self.settings.plugin.clone();
        // Requests not carried out are dropped: their senders learn it.
        self.hold = None;
        while self.shared.next_command().is_some() {}
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        let deadline = if self.shared.hurry.load(Ordering::SeqCst) {
            Instant::now()
        } else {
            Instant::now() + self.settings.drain_timeout
        };
        let drained = loop {
            self.settle();
            let unsettled = self
                .ctx()
                .book
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unsettled(None);
            if unsettled == 0 {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            // Serve callbacks (a rebalance) while waiting.
            let _ = self.consumer.poll(Duration::from_millis(5));
        };
        let aborted_before = self.stats.transactions_aborted.load(Ordering::Relaxed);
        let (left, _) = if self.recipe.txn.is_some() {
            self.settle_transactional(true)
        } else {
            self.settle()
        };
        if !drained {
            tracing::warn!(
                plugin,
                unfinished = left,
                "drain timeout: unfinished events will be read again"
            );
        }
        if self.recipe.txn.is_some() {
            // Committed (or aborted, and said so) by the settle above.
            if self.stats.transactions_aborted.load(Ordering::Relaxed) == aborted_before {
                tracing::info!(plugin, "offsets committed");
            }
            self.consumer.unsubscribe();
            tracing::info!(plugin, drained, "source stopped");
            return;
        }
        match commit(&self.consumer) {
            Ok(()) => tracing::info!(plugin, "offsets committed"),
            Err(e) => {
                tracing::warn!(plugin, error = %e, "final commit failed; events since the last commit will be read again")
            }
        }
        self.consumer.unsubscribe();
        tracing::info!(plugin, drained, "source stopped");
    }
}
