//! The schedule topic: where `weir run` records scheduled deletions, and how the
//! hosts of a group share the work of carrying them out.
//!
//! Each plugin's `schedule-deletion` / `cancel-deletion` is a record on this
//! topic sent with the event's other outputs (key `{plugin}/{object key}`, the
//! entry as JSON, a tombstone to cancel or once done). Every host joins the
//! schedule group (`storage.schedule_group`) with one consumer: the owner of a
//! partition reads it from its start (offsets are never committed). The topic is
//! created with `cleanup.policy=compact` (a host refuses to start on a schedule
//! topic that is not compacted): the broker's cleaner drops the entries that a
//! later record of the same key replaced or a tombstone cancelled, so what is read
//! is bounded by the pending deletions, not by history. Once it has read the partition up to its end as
//! of the assignment, it carries out that partition's deletions when due and
//! writes their tombstones. When a host dies, the group hands its partitions to
//! a survivor, which reads them again and keeps the promises.

use crate::capabilities::storage::now_ms;
use crate::capabilities::{ScheduleChange, ScheduledDeletion, TopicSchedule};
use crate::config::Config;
use crate::pipeline::outputs::{Outputs, Record};
use object_store::ObjectStore;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Message, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why this host could not join the schedule group or read the schedule topic.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleTopicError {
    #[error(transparent)]
    Template(#[from] crate::topics::TemplateError),
    #[error(transparent)]
    Broker(#[from] crate::kafka::BrokerError),
    #[error("cannot create the schedule consumer: {0}")]
    Consumer(Box<rdkafka::error::KafkaError>),
    #[error("cannot subscribe to the schedule topic {topic}: {source}")]
    Subscribe {
        topic: String,
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error("cannot start the schedule consumer: {0}")]
    Thread(std::io::Error),
    #[error("cannot read the schedule topic {topic}: {source}")]
    Read {
        topic: String,
        source: crate::kafka::BrokerError,
    },
}

/// The consumer that keeps this host's share of the schedule topic.
pub struct ScheduleOwner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct OwnerContext {
    topic: String,
    schedule: TopicSchedule,
}

impl ClientContext for OwnerContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        // A partition's end is how the owner knows it has read everything.
        if !crate::kafka::is_partition_end(&error) {
            tracing::warn!(topic = %self.topic, error = %error, "librdkafka (schedule): {reason}");
        }
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                tracing::warn!(topic = %self.topic, facility = fac, "librdkafka (schedule): {message}")
            }
            _ => tracing::debug!(facility = fac, "librdkafka (schedule): {message}"),
        }
    }
}

fn partitions_of(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

impl ConsumerContext for OwnerContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let parts = partitions_of(list);
            for p in &parts {
                self.schedule.revoke(*p);
            }
            tracing::info!(topic = %self.topic, partitions = ?parts, "schedule partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let parts = partitions_of(list);
            for p in &parts {
                self.schedule.assign(*p);
            }
            tracing::info!(topic = %self.topic, partitions = ?parts, "schedule partitions assigned: reading them from their start");
        }
    }
}

impl ScheduleOwner {
    /// Join the schedule group and keep `schedule` equal to the owned partitions.
    pub fn start(
        config: &Config,
        topic: &str,
        schedule: TopicSchedule,
    ) -> Result<ScheduleOwner, ScheduleTopicError> {
        let mut cfg = crate::kafka::base_config(config);
        let consumer_cfg = &config.kafka.consumer;
        cfg.set("group.id", config.schedule_group()?)
            .set("client.id", "weir-schedule")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // The end of a compacted partition may hold no record (the cleaner
            // removed old tombstones; transaction markers): its EOF tells the
            // owner it has read everything.
            .set("enable.partition.eof", "true")
            // Schedule records are not urgent (due times are minutes away): a
            // long fetch wait keeps an idle schedule consumer from costing the
            // broker a request every few milliseconds on every host.
            .set("fetch.wait.max.ms", "500");
        if !crate::kafka::consumer_protocol(config) {
            cfg.set(
                "session.timeout.ms",
                consumer_cfg.session_timeout.as_millis().to_string(),
            );
        }
        if let Some(id) = config.instance_id_for("weir-schedule") {
            cfg.set("group.instance.id", id);
        }
        let context = OwnerContext {
            topic: topic.to_string(),
            schedule: schedule.clone(),
        };
        let consumer: BaseConsumer<OwnerContext> = cfg
            .create_with_context(context)
            .map_err(|e| ScheduleTopicError::Consumer(Box::new(e)))?;
        consumer
            .subscribe(&[topic])
            .map_err(|source| ScheduleTopicError::Subscribe {
                topic: topic.to_string(),
                source: Box::new(source),
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let topic = topic.to_string();
        let thread = std::thread::Builder::new()
            .name("weir-schedule".into())
            .spawn(move || follow(consumer, &topic, &schedule, &stopping))
            .map_err(ScheduleTopicError::Thread)?;
        Ok(ScheduleOwner {
            stop,
            thread: Some(thread),
        })
    }

    /// Leave the group (a static member keeps its partitions until its session
    /// times out, so a restart gets them back at once).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ScheduleOwner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn follow(
    consumer: BaseConsumer<OwnerContext>,
    topic: &str,
    schedule: &TopicSchedule,
    stop: &AtomicBool,
) {
    let mut bad = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for p in schedule.without_end() {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((low, high)) => schedule.set_end(p, low, high),
                Err(e) => {
                    tracing::warn!(topic, partition = p, error = %e, "cannot read the schedule partition's end; retrying")
                }
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => schedule.reached_end(p),
            Some(Err(e)) => tracing::warn!(topic, error = %e, "reading the schedule topic"),
            Some(Ok(m)) => {
                let change = match ScheduleChange::from_record(m.key(), m.payload()) {
                    Ok(change) => Some(change),
                    Err(e) => {
                        bad += 1;
                        if bad <= 3 {
                            tracing::warn!(topic, partition = m.partition(), offset = m.offset(), error = %e, "ignoring an unreadable schedule record");
                        }
                        None
                    }
                };
                schedule.apply_at(m.partition(), m.offset(), change.as_ref());
            }
        }
    }
    consumer.unsubscribe();
}

/// Every `interval`, carry out the due deletions of the owned partitions: delete
/// the object, write the tombstone (acknowledged), forget it. A failure is
/// retried by the next sweep.
pub fn spawn_sweeper(
    schedule: TopicSchedule,
    storage: Arc<dyn ObjectStore>,
    outputs: Outputs,
    topic: String,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            schedule
                .sweep(&*storage, now_ms(), |change| {
                    let (outputs, topic) = (outputs.clone(), topic.clone());
                    async move {
                        let (key, payload) = change.record();
                        outputs
                            .send_record(Record {
                                topic: &topic,
                                key: Some(key.as_bytes()),
                                payload: payload.as_deref(),
                                headers: &[],
                            })
                            .await
                            .map(|_| ())
                    }
                })
                .await;
        }
    })
}

/// The deletions pending on the whole schedule topic (every partition, from its
/// start, without joining the group): for tools and tests.
pub async fn pending_in_topic(
    config: &Config,
    topic: &str,
) -> Result<Vec<ScheduledDeletion>, ScheduleTopicError> {
    let cfg = crate::kafka::base_config(config);
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut changes = Vec::new();
        crate::kafka::read_to_end(cfg, &topic, "weir-schedule-reader", |m| {
            if let Ok(change) = ScheduleChange::from_record(m.key(), m.payload()) {
                changes.push(change);
            }
        })
        .map_err(|source| ScheduleTopicError::Read {
            topic: topic.clone(),
            source,
        })?;
        Ok(crate::capabilities::schedule::fold(&changes))
    })
    .await
    .map_err(crate::kafka::BrokerError::from)?
}
