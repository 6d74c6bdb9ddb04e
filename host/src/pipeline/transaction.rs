//! Exactly-once (`[consumer] delivery = "exactly-once"`): the plugin's outputs
//! and its consumed offsets commit in one Kafka transaction (KIP-447: one
//! transactional producer per consumer, its offsets sent with the consumer's
//! group metadata, so a member the group has moved on from is fenced).
//!
//! Workers do not send an exactly-once event's records: they hold them in the
//! event's acknowledgement. The fetch thread, which owns the offset book, sends
//! them here when the event becomes the next of its partition (every event
//! before it finished), so a transaction carries the records of exactly the
//! events whose offsets it commits, in offset order: per-key order holds, and
//! an event past a retrying one never has outputs in a transaction that does
//! not also commit its offset. Every `transaction_interval` (or before a
//! partition is revoked, and at shutdown) the offsets go into the transaction
//! and it commits; the workers go on handling events meanwhile.
//!
//! A transaction that cannot commit is aborted: its records are never seen by
//! a `read_committed` reader, and the fetch stage reads every partition again
//! from the first offset it carried. A producer librdkafka declares fatally
//! failed (fenced by a newer one with its `transactional.id`) is replaced.

use super::acks::EventAck;
use super::offsets::Tp;
use super::outputs::{
    producer_config, record_at_fault, send_to, Delivery, KafkaProducer, OutputContext,
    TransactionFailures,
};
use super::stats::Stats;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::{ClientConfig, Offset};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a plugin's transactions are made.
#[derive(Debug, Clone)]
pub struct TransactionSettings {
    /// `transactional.id`: stable per plugin and host (its static member id),
    /// so a restarted host fences the producer of the process it replaces.
    pub id: String,
    /// How often the open transaction commits.
    pub interval: Duration,
}

/// The `transactional.id` of a plugin's producer: its group and its static
/// member id (a restarted host fences what its earlier process left open), or
/// a random one for a dynamic member (fenced through the group generation).
pub fn transactional_id(group: &str, instance_id: Option<&str>) -> String {
    match instance_id {
        Some(id) => format!("weir-{group}-{id}"),
        None => format!("weir-{group}-{:016x}", rand::random::<u64>()),
    }
}

/// Why a transaction was aborted, and where to read again from.
#[derive(Debug)]
pub struct Aborted {
    pub reason: String,
    /// The partition and offset of the event whose record failed, if one did.
    pub blame: Option<(Tp, i64)>,
    /// The first offset each partition had in the aborted transaction.
    pub first: HashMap<Tp, i64>,
}

/// One plugin's transactional producer and its open transaction.
pub struct Transaction {
    plugin: String,
    client: ClientConfig,
    settings: TransactionSettings,
    producer: KafkaProducer,
    /// Times the producer was replaced (its id gets a suffix each time).
    replaced: u32,
    /// When the open transaction began.
    opened: Instant,
    /// Per partition: the first and last offset sent into the open transaction.
    open: HashMap<Tp, (i64, i64)>,
    /// Failed records of the open transaction (a new one per transaction, so a
    /// late report of an aborted one counts for nothing).
    failures: Arc<TransactionFailures>,
    timeout: Duration,
    stats: Arc<Stats>,
    /// What the committer thread's last commit came to, until the fetch
    /// thread takes it (an abort must rewind before anything more is sent).
    outcome: Option<Commit>,
    /// Bumped by a commit the fetch thread makes itself (a revoke, shutdown):
    /// a request to the committer made before it is void.
    epoch: u64,
}

/// A commit's outcome: the offsets it committed, or the aborted transaction.
pub type Commit = Result<Vec<(Tp, i64)>, Aborted>;

/// Why the transactional producer could not start.
#[derive(Debug, thiserror::Error)]
#[error("transactional.id {id:?}: {source}")]
pub struct TransactionError {
    id: String,
    source: KafkaError,
}

impl Transaction {
    /// Create the producer, fence any earlier one with the same id (its open
    /// transaction is aborted) and begin the first transaction.
    pub fn start(
        config: &crate::config::Config,
        plugin: &str,
        settings: TransactionSettings,
        stats: Arc<Stats>,
    ) -> Result<Transaction, TransactionError> {
        let timeout = config.kafka.producer.message_timeout + Duration::from_secs(10);
        let mut client = producer_config(config);
        client.set(
            "transaction.timeout.ms",
            (timeout.as_millis() as u64 + 30_000).to_string(),
        );
        // Right after a commit the coordinator answers the next transaction's
        // AddPartitionsToTxn with CONCURRENT_TRANSACTIONS until the markers
        // are written; librdkafka retries after retry.backoff.ms (100 ms by
        // default), which held every transaction back that long.
        if !config.kafka.properties.contains_key("retry.backoff.ms") {
            client.set("retry.backoff.ms", "5");
        }
        let producer = Self::create(&client, &settings.id, timeout)?;
        Ok(Transaction {
            plugin: plugin.to_string(),
            client,
            settings,
            producer,
            replaced: 0,
            opened: Instant::now(),
            open: HashMap::new(),
            failures: Arc::default(),
            timeout,
            stats,
            outcome: None,
            epoch: 0,
        })
    }

    fn create(
        client: &ClientConfig,
        id: &str,
        timeout: Duration,
    ) -> Result<KafkaProducer, TransactionError> {
        let fail = |source| TransactionError {
            id: id.to_string(),
            source,
        };
        let mut c = client.clone();
        c.set("transactional.id", id);
        let producer: KafkaProducer = c.create_with_context(OutputContext).map_err(fail)?;
        producer.init_transactions(timeout).map_err(fail)?;
        producer.begin_transaction().map_err(fail)?;
        Ok(producer)
    }

    /// The producer's `transactional.id` now.
    pub fn id(&self) -> String {
        match self.replaced {
            0 => self.settings.id.clone(),
            n => format!("{}-r{n}", self.settings.id),
        }
    }

    /// Send the records `event` of `tp` holds into the open transaction.
    pub fn send(&mut self, tp: &Tp, event: &EventAck) {
        let offset = event.offset();
        for record in event.take_held() {
            let delivery = Delivery::InTransaction {
                failures: self.failures.clone(),
                tp: tp.clone(),
                offset,
            };
            let pause = || std::thread::sleep(Duration::from_millis(1));
            let sent = send_to(&self.producer, record.as_record(), delivery, pause);
            if let Err(e) = sent {
                let why = format!("publishing to {} failed: {e}", record.topic);
                if record_at_fault(&e) {
                    // The record itself cannot be sent: its event is to blame.
                    self.failures.note(tp.clone(), offset, why, record.size());
                } else {
                    // The transaction failed already (a record before this one).
                    self.failures.doom(why);
                }
            }
        }
        self.open
            .entry(tp.clone())
            .and_modify(|(_, last)| *last = offset)
            .or_insert((offset, offset));
    }

    /// The epoch a request to the committer carries.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the open transaction should commit now: its interval is over
    /// (and it carries something), or a record of it failed.
    pub fn is_due(&self) -> bool {
        !self.open.is_empty()
            && (self.opened.elapsed() >= self.settings.interval || self.failures.is_set())
    }

    /// Events' partitions the open transaction carries.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The outcome of the committer thread's last commit, if not yet taken.
    pub fn take_outcome(&mut self) -> Option<Commit> {
        self.outcome.take()
    }

    /// Void the requests made to the committer so far (the caller commits
    /// now itself, with the group's current metadata).
    pub fn void_requests(&mut self) {
        self.epoch += 1;
    }

    /// Commit the open transaction with the offsets after the last event of
    /// each partition it carries, and begin the next; the offsets committed.
    /// On failure it is aborted (and the next begun).
    pub fn commit(
        &mut self,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<Vec<(Tp, i64)>, Aborted> {
        if self.open.is_empty() {
            self.opened = Instant::now();
            return Ok(Vec::new());
        }
        let started = Instant::now();
        if let Some((reason, blame)) = self.failures.take() {
            return Err(self.abort(reason, blame));
        }
        let Some(group) = group else {
            return Err(self.abort("the consumer has no group metadata".into(), None));
        };
        let next: Vec<(Tp, i64)> = self
            .open
            .iter()
            .map(|(tp, (_, last))| (tp.clone(), last + 1))
            .collect();
        let mut offsets = TopicPartitionList::with_capacity(next.len());
        for ((topic, partition), at) in &next {
            if let Err(e) = offsets.add_partition_offset(topic, *partition, Offset::Offset(*at)) {
                return Err(self.abort(format!("offset {at} of {topic}/{partition}: {e}"), None));
            }
        }
        // The offsets' round trips overlap the records still being sent.
        let result = retrying(|| {
            self.producer
                .send_offsets_to_transaction(&offsets, &group, self.timeout)
        })
        .and_then(|()| {
            self.drain_queue();
            retrying(|| self.producer.commit_transaction(self.timeout))
        });
        if let Err(e) = result {
            // The report of the record that failed may come a moment after
            // the transaction knew (it is served on the producer's thread).
            let until = Instant::now() + Duration::from_millis(500);
            while !self.failures.is_set() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (reason, blame) = match self.failures.take() {
                Some((why, blame)) => (
                    format!("the transaction did not commit ({e}): {why}"),
                    blame,
                ),
                None => (format!("the transaction did not commit: {e}"), None),
            };
            return Err(self.abort(reason, blame));
        }
        let spent = started.elapsed();
        self.stats
            .transactions_committed
            .fetch_add(1, Ordering::Relaxed);
        self.stats.commit_durations.observe(spent.as_secs_f64());
        self.stats
            .commit_micros
            .fetch_add(spent.as_micros() as u64, Ordering::Relaxed);
        self.open.clear();
        self.begin();
        Ok(next)
    }

    /// Wait until every record sent is acknowledged (or failed), up to the
    /// timeout. `commit_transaction` flushes too, but rust-rdkafka's flush
    /// waits in steps of 100 ms when another thread (the threaded producer's
    /// poller) serves the reports: every commit took 100 ms longer.
    fn drain_queue(&self) {
        let deadline = Instant::now() + self.timeout;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Abort the open transaction (a commit failed, the partitions were lost,
    /// the consumer was fenced) and begin the next; where to read again from.
    pub fn abort(&mut self, reason: String, blame: Option<(Tp, i64)>) -> Aborted {
        let first = self
            .open
            .drain()
            .map(|(tp, (first, _))| (tp, first))
            .collect();
        self.stats
            .transactions_aborted
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin = %self.plugin, transactional_id = %self.id(), reason = %reason, "transaction aborted: its outputs are discarded and its events handled again");
        if let Err(e) = self.producer.abort_transaction(self.timeout) {
            tracing::warn!(plugin = %self.plugin, error = %e, "abort failed; the producer is replaced");
            self.replace();
        } else {
            self.begin();
        }
        Aborted {
            reason,
            blame,
            first,
        }
    }

    /// Begin the next transaction, replacing the producer if it cannot.
    fn begin(&mut self) {
        self.failures = Arc::default();
        self.opened = Instant::now();
        if let Err(e) = self.producer.begin_transaction() {
            tracing::warn!(plugin = %self.plugin, error = %e, "cannot begin a transaction; the producer is replaced");
            self.replace();
        }
    }

    /// A new producer (a new id: the old one may have been fenced by a host
    /// that took this host's id, and must not fence it back). Tried for 10 s;
    /// if none can be made, the next transaction fails and tries again.
    fn replace(&mut self) {
        self.failures = Arc::default();
        for _ in 0..10 {
            self.replaced += 1;
            let id = self.id();
            match Self::create(&self.client, &id, self.timeout) {
                Ok(p) => {
                    let old = std::mem::replace(&mut self.producer, p);
                    // Dropping waits for its polling thread.
                    let _ = std::thread::Builder::new()
                        .name("weir-producer-drop".into())
                        .spawn(move || drop(old));
                    self.stats
                        .producers_replaced
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(plugin = %self.plugin, transactional_id = %id, "the transactional producer was replaced");
                    self.opened = Instant::now();
                    return;
                }
                Err(e) => {
                    tracing::error!(plugin = %self.plugin, error = %e, "cannot create a transactional producer; trying again in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Run a transactional call again while librdkafka says it may be retried.
fn retrying(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    let mut tries = 0;
    loop {
        match call() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100 * tries));
            }
            other => return other,
        }
    }
}

/// The thread that commits transactions while the fetch thread goes on
/// reading and dispatching (it sends nothing meanwhile: a record may only join
/// the transaction that will commit its event's offset).
pub struct Committer {
    requests: Option<std::sync::mpsc::Sender<(u64, Option<ConsumerGroupMetadata>)>>,
    busy: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    pub fn spawn(plugin: &str, txn: Arc<std::sync::Mutex<Transaction>>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, Option<ConsumerGroupMetadata>)>();
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = busy.clone();
        let thread = std::thread::Builder::new()
            .name(format!("weir-commit-{plugin}"))
            .spawn(move || {
                while let Ok((epoch, group)) = rx.recv() {
                    let mut txn = txn.lock().unwrap_or_else(|e| e.into_inner());
                    if txn.epoch == epoch {
                        let outcome = txn.commit(group);
                        if !matches!(&outcome, Ok(committed) if committed.is_empty()) {
                            txn.outcome = Some(outcome);
                        }
                    }
                    drop(txn);
                    done.store(false, Ordering::Release);
                }
            })?;
        Ok(Committer {
            requests: Some(tx),
            busy,
            thread: Some(thread),
        })
    }

    /// A commit asked for and not yet made.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Ask for the open transaction to be committed (`epoch`: the
    /// transaction's, read under its lock).
    pub fn request(&self, epoch: u64, group: Option<ConsumerGroupMetadata>) {
        if let Some(requests) = &self.requests {
            self.busy.store(true, Ordering::Release);
            if requests.send((epoch, group)).is_err() {
                self.busy.store(false, Ordering::Release);
            }
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
