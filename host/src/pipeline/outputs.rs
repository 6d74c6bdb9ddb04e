//! Outputs: every record an event produces goes through one idempotent producer
//! (acks=all, a real `linger`, acknowledged asynchronously).
//!
//! The records of an event are what its plugin published, its scheduled-deletion
//! records, or its dead letter. They are handed to the producer without waiting;
//! each delivery report counts down the event's [`EventAck`]. The idempotent
//! producer keeps each output partition's order, so one key's outputs leave in
//! the order its events were handled.
//!
//! A producer librdkafka declares *fatally* failed (it answers out of sequence
//! and can no longer keep its guarantees) fails every later send: it is replaced
//! by a new one, and the records it still held fail, which rewinds their
//! partitions. [`Outputs::send`] is the awaited form, for tools (DLQ replay, the
//! demo) and the schedule sweeper.

use super::acks::{EventAck, HeldRecord};
use super::offsets::Tp;
use crate::capabilities::storage::{now_ms, rfc3339};
use crate::capabilities::OutgoingMessage;
use crate::config::Config;
use crate::event::EventRecord;
use crate::topics::TopicNamer;
use arc_swap::ArcSwap;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Headers carried from the input event to every output, unless the plugin set them.
pub const PROPAGATED_HEADERS: &[&str] = &[
    "correlation-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
];

/// Why a record was not produced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutputError {
    #[error("cannot create the producer: {0}")]
    Producer(KafkaError),
    #[error(transparent)]
    Template(#[from] crate::topics::TemplateError),
    #[error("publishing to {topic} failed: {source}")]
    Publish { topic: String, source: KafkaError },
    /// The event's partition was revoked (or fenced) or rewound while it was
    /// handed over: the next owner handles it again.
    #[error("its partition was revoked or rewound since it was read; not sent")]
    Stale,
    #[error("dead-lettering to {topic} failed: {source}")]
    DeadLetter {
        topic: String,
        source: Box<OutputError>,
    },
    #[error("scheduled deletions need a schedule topic, and none is configured")]
    NoScheduleTopic,
    #[error("the producer was dropped before it reported on the record")]
    Dropped,
}

/// Dead-letter headers (besides the original ones).
pub const H_ERROR: &str = "weir-error";
pub const H_PLUGIN: &str = "weir-plugin";
pub const H_TOPIC: &str = "weir-original-topic";
pub const H_PARTITION: &str = "weir-original-partition";
pub const H_OFFSET: &str = "weir-original-offset";
pub const H_ATTEMPTS: &str = "weir-attempts";
pub const H_FAILED_AT: &str = "weir-failed-at";

/// Who hears about one record's delivery.
pub enum Delivery {
    /// A record of an event in flight.
    Event { ack: Arc<EventAck> },
    /// A record of an exactly-once transaction: a failure dooms the transaction
    /// (its commit fails) and names the event's partition.
    InTransaction {
        failures: Arc<TransactionFailures>,
        tp: Tp,
        offset: i64,
    },
    /// Someone awaiting it ([`Outputs::send`]).
    Waiter(tokio::sync::oneshot::Sender<Result<(i32, i64), OutputError>>),
}

/// The producer's callbacks: delivery reports and librdkafka's log lines.
pub struct OutputContext;

impl ClientContext for OutputContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(facility = fac, "producer: librdkafka: {message}")
            }
            L::Warning => tracing::warn!(facility = fac, "producer: librdkafka: {message}"),
            _ => tracing::debug!(facility = fac, "producer: librdkafka: {message}"),
        }
    }
}

impl ProducerContext for OutputContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        match (*delivery, result) {
            (Delivery::Event { ack }, Ok(_)) => ack.delivered(),
            (Delivery::Event { ack }, Err((e, m))) => {
                ack.failed(format!("publishing to {} failed: {e}", m.topic()));
            }
            (Delivery::InTransaction { .. }, Ok(_)) => {}
            (
                Delivery::InTransaction {
                    failures,
                    tp,
                    offset,
                },
                Err((e, m)),
            ) => {
                let why = format!("publishing to {} failed: {e}", m.topic());
                if record_at_fault(e) {
                    failures.note(tp, offset, why, m.payload_len() + m.key_len());
                } else {
                    failures.doom(why);
                }
            }
            (Delivery::Waiter(tx), Ok(m)) => {
                let _ = tx.send(Ok((m.partition(), m.offset())));
            }
            (Delivery::Waiter(tx), Err((e, m))) => {
                let _ = tx.send(Err(OutputError::Publish {
                    topic: m.topic().to_string(),
                    source: e.clone(),
                }));
            }
        }
    }
}

pub(super) type KafkaProducer = ThreadedProducer<OutputContext>;

/// What went wrong in an open transaction: the first record that failed (its
/// event's partition and offset, and why; reported by the producer's thread),
/// or a reason it cannot commit that blames no event (the producer refused a
/// send because the transaction had already failed).
#[derive(Debug, Default)]
pub struct TransactionFailures {
    first: std::sync::Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    /// The event blamed, why, and the size of its failed record.
    blamed: Option<(Tp, i64, String, usize)>,
    doomed: Option<String>,
}

/// Whether a record failed for what it is (too large, malformed, to a topic
/// it may not reach), not because of the broker's state (a timeout, a failover,
/// the transaction already failed, a sequence the producer must recover from):
/// only the first kind counts against its event.
pub fn record_at_fault(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::MessageBatchTooLarge
                | C::TopicAuthorizationFailed
                | C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::InvalidTopic
        )
    )
}

impl TransactionFailures {
    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.first.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A record (of `size` bytes) of the event at `offset` of `tp` failed.
    /// The broker fails a whole batch for one record too large, so of the
    /// records that failed the largest is blamed (the first, among equals).
    pub fn note(&self, tp: Tp, offset: i64, reason: String, size: usize) {
        let mut f = self.lock();
        if f.blamed.as_ref().is_none_or(|b| size > b.3) {
            f.blamed = Some((tp, offset, reason, size));
        }
    }

    /// The transaction cannot commit, through no event's fault.
    pub fn doom(&self, reason: String) {
        let mut f = self.lock();
        if f.doomed.is_none() {
            f.doomed = Some(reason);
        }
    }

    pub fn is_set(&self) -> bool {
        let f = self.lock();
        f.blamed.is_some() || f.doomed.is_some()
    }

    /// Why, and the event to blame if a record failed.
    pub fn take(&self) -> Option<(String, Option<(Tp, i64)>)> {
        let mut f = self.lock();
        let doomed = f.doomed.take();
        match f.blamed.take() {
            Some((tp, offset, why, _)) => Some((why, Some((tp, offset)))),
            None => doomed.map(|why| (why, None)),
        }
    }
}

impl HeldRecord {
    pub fn as_record(&self) -> Record<'_> {
        Record {
            topic: &self.topic,
            key: self.key.as_deref(),
            payload: self.payload.as_deref(),
            headers: &self.headers,
        }
    }
}

/// The producer settings of every output producer: idempotent, `acks=all`,
/// the `[kafka.producer]` section.
pub fn producer_config(config: &Config) -> ClientConfig {
    let producer = &config.kafka.producer;
    let mut c = crate::kafka::base_config(config);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            producer.message_timeout.as_millis().to_string(),
        )
        .set("linger.ms", producer.linger.as_millis().to_string())
        .set("compression.type", &producer.compression)
        .set(
            "message.max.bytes",
            producer.message_max_bytes.as_u64().to_string(),
        );
    c
}

/// Hand one record to `producer`, waiting only while librdkafka's queue is
/// full (`pause` between tries).
pub(super) fn send_to(
    producer: &KafkaProducer,
    record: Record<'_>,
    delivery: Delivery,
    mut pause: impl FnMut(),
) -> Result<(), KafkaError> {
    let mut headers = Some(owned_headers(record.headers));
    let mut opaque = Box::new(delivery);
    loop {
        match try_send(producer, &record, &mut headers, opaque) {
            Attempt::Sent => return Ok(()),
            Attempt::QueueFull(back) => {
                opaque = back;
                pause();
            }
            Attempt::Failed(e) => return Err(e),
        }
    }
}

fn owned_headers(headers: &[(String, Vec<u8>)]) -> OwnedHeaders {
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (k, v) in headers {
        owned = owned.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    owned
}

enum Attempt {
    Sent,
    /// librdkafka's queue is full: try again once deliveries drained.
    QueueFull(Box<Delivery>),
    Failed(KafkaError),
}

/// One try at handing `record` over; on a full queue the headers come back in
/// `headers` and the opaque in the answer.
fn try_send(
    producer: &KafkaProducer,
    record: &Record<'_>,
    headers: &mut Option<OwnedHeaders>,
    opaque: Box<Delivery>,
) -> Attempt {
    let mut base: BaseRecord<'_, [u8], [u8], Box<Delivery>> =
        BaseRecord::with_opaque_to(record.topic, opaque);
    base.key = record.key;
    base.payload = record.payload;
    base.headers = headers.take();
    match producer.send(base) {
        Ok(()) => Attempt::Sent,
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
            *headers = back.headers;
            Attempt::QueueFull(back.delivery_opaque)
        }
        Err((e, _)) => Attempt::Failed(e),
    }
}

/// One record to produce, by full topic name.
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    /// `None`: a tombstone.
    pub payload: Option<&'a [u8]>,
    pub headers: &'a [(String, Vec<u8>)],
}

#[derive(Clone)]
pub struct Outputs {
    producer: Arc<ArcSwap<KafkaProducer>>,
    /// To make a replacement producer.
    client_config: Arc<ClientConfig>,
    /// How many times a fatally failed producer was replaced.
    replaced: Arc<AtomicU64>,
    namer: TopicNamer,
    /// `kafka.producer.message_max_bytes`.
    max_record: usize,
}

impl Outputs {
    pub fn new(config: &Config) -> Result<Self, OutputError> {
        let producer = &config.kafka.producer;
        let c = producer_config(config);
        let created = c
            .create_with_context(OutputContext)
            .map_err(OutputError::Producer)?;
        Ok(Outputs {
            producer: Arc::new(ArcSwap::from_pointee(created)),
            client_config: Arc::new(c),
            replaced: Arc::new(AtomicU64::new(0)),
            namer: config.namer()?,
            max_record: producer.message_max_bytes.as_u64() as usize,
        })
    }

    /// Hand one record to the producer; `delivery` hears how it went. Waits only
    /// while librdkafka's queue is full.
    pub async fn enqueue(&self, record: Record<'_>, delivery: Delivery) -> Result<(), OutputError> {
        let mut headers = Some(owned_headers(record.headers));
        let mut opaque = Box::new(delivery);
        // (Not `send_to`: the wait on a full queue is async here.)
        loop {
            let producer = self.producer.load_full();
            match try_send(&producer, &record, &mut headers, opaque) {
                Attempt::Sent => return Ok(()),
                Attempt::QueueFull(back) => {
                    // Backpressure from librdkafka's queue: let deliveries drain.
                    opaque = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Attempt::Failed(e) => {
                    self.replace_if_fatal(&producer);
                    return Err(OutputError::Publish {
                        topic: record.topic.to_string(),
                        source: e,
                    });
                }
            }
        }
    }

    /// Hand an event's published messages to the producer (propagated headers,
    /// CloudEvents headers with `cloudevents_source`), counted on `ack`.
    pub async fn enqueue_published(
        &self,
        source: &EventRecord,
        messages: &[OutgoingMessage],
        cloudevents_source: Option<&str>,
        traceparent: Option<&str>,
        ack: &Arc<EventAck>,
    ) -> Result<(), OutputError> {
        for (i, m) in messages.iter().enumerate() {
            let headers = output_headers(source, i, m, cloudevents_source, traceparent);
            let topic = self.namer.full_name(&m.topic);
            self.enqueue_counted(
                Record {
                    topic: &topic,
                    key: m.key.as_deref(),
                    payload: Some(&m.payload),
                    headers: &headers,
                },
                ack,
            )
            .await?;
        }
        Ok(())
    }

    /// An exactly-once event's published messages as records to hold (the
    /// same topics and headers [`Outputs::enqueue_published`] sends).
    pub fn held_published(
        &self,
        source: &EventRecord,
        messages: Vec<OutgoingMessage>,
        cloudevents_source: Option<&str>,
        traceparent: Option<&str>,
    ) -> Vec<HeldRecord> {
        messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let headers = output_headers(source, i, &m, cloudevents_source, traceparent);
                HeldRecord {
                    topic: self.namer.full_name(&m.topic),
                    key: m.key,
                    payload: Some(m.payload),
                    headers,
                }
            })
            .collect()
    }

    /// An exactly-once event's dead letter, as a record to hold.
    pub fn held_dead_letter(
        &self,
        dlq_topic: &str,
        event: &EventRecord,
        plugin: &str,
        error: &str,
        attempts: u32,
    ) -> HeldRecord {
        let letter = DeadLetter::new(event, plugin, error, attempts, self.max_record);
        HeldRecord {
            topic: dlq_topic.to_string(),
            key: letter.key.map(<[u8]>::to_vec),
            payload: letter.payload.map(<[u8]>::to_vec),
            headers: letter.headers,
        }
    }

    /// Hand a record of an event to the producer, counted on `ack`; refused
    /// once the event is stale.
    pub async fn enqueue_counted(
        &self,
        record: Record<'_>,
        ack: &Arc<EventAck>,
    ) -> Result<(), OutputError> {
        if ack.is_stale() {
            // Nothing of it may be sent from here any more.
            return Err(OutputError::Stale);
        }
        ack.expect(1);
        let delivery = Delivery::Event { ack: ack.clone() };
        self.enqueue(record, delivery).await.inspect_err(|_| {
            // Never handed over: nothing will report on it.
            ack.delivered();
        })
    }

    /// Hand `event`'s dead letter (original key, payload and headers, plus why it
    /// failed) to the producer, counted on `ack`.
    pub async fn enqueue_dead_letter(
        &self,
        dlq_topic: &str,
        event: &EventRecord,
        plugin: &str,
        error: &str,
        attempts: u32,
        ack: &Arc<EventAck>,
    ) -> Result<(), OutputError> {
        let letter = DeadLetter::new(event, plugin, error, attempts, self.max_record);
        self.enqueue_counted(
            Record {
                topic: dlq_topic,
                key: letter.key,
                payload: letter.payload,
                headers: &letter.headers,
            },
            ack,
        )
        .await
        .map_err(|e| OutputError::DeadLetter {
            topic: dlq_topic.to_string(),
            source: Box::new(e),
        })
    }

    /// Send one record to a full topic name and wait for its acknowledgement:
    /// `(partition, offset)`.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(String, Vec<u8>)],
    ) -> Result<(i32, i64), OutputError> {
        self.send_record(Record {
            topic,
            key,
            payload: Some(payload),
            headers,
        })
        .await
    }

    /// [`Outputs::send`] for any record (a tombstone, say).
    pub async fn send_record(&self, record: Record<'_>) -> Result<(i32, i64), OutputError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(record, Delivery::Waiter(tx)).await?;
        let producer = self.producer.load_full();
        let result = rx.await.unwrap_or(Err(OutputError::Dropped));
        if result.is_err() {
            self.replace_if_fatal(&producer);
        }
        result
    }

    /// Producers replaced after a fatal error since start.
    pub fn producers_replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    /// Make the current producer fail fatally, as librdkafka does when it can no
    /// longer keep an idempotent producer's guarantees (for the recovery's tests).
    #[doc(hidden)]
    pub fn fail_producer_for_test(&self) {
        let producer = self.producer.load_full();
        // SAFETY: the pointer is the live client `producer` holds for this call's
        // duration; librdkafka copies the reason string.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.client().native_client().ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                c"injected by a test".as_ptr(),
            );
        }
    }

    /// If `failed` (the producer a send just failed on) is fatally broken and still
    /// the current one, swap in a new producer. The records it still holds fail
    /// (their partitions are rewound); it is dropped on a thread of its own, since
    /// dropping waits for its polling thread.
    fn replace_if_fatal(&self, failed: &Arc<KafkaProducer>) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        let fresh: KafkaProducer = match self.client_config.create_with_context(OutputContext) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "the producer failed fatally and a new one cannot be created; retrying on the next failure");
                return;
            }
        };
        let previous = self.producer.compare_and_swap(failed, Arc::new(fresh));
        if Arc::ptr_eq(&previous, failed) {
            self.replaced.fetch_add(1, Ordering::Relaxed);
            tracing::error!(code = ?code, reason = %reason, "the producer failed fatally; replaced it with a new one (the events whose outputs were lost are handled again)");
            let old = Arc::clone(&previous);
            drop(previous);
            let _ = std::thread::Builder::new()
                .name("weir-producer-drop".into())
                .spawn(move || drop(old));
        }
    }
}

/// Says a dead letter goes without its input's payload (or headers), and why.
pub const H_OMITTED: &str = "weir-omitted";

/// Headers only the host writes (`weir-*`): dropped from what others wrote
/// before the host adds its own, and the only ones a replay reads.
pub fn is_host_header(key: &str) -> bool {
    key.starts_with("weir-")
}

/// A dead letter as written: the input's key, payload and headers plus the
/// `weir-*` ones, cut to fit `kafka.producer.message_max_bytes` (a dead letter
/// that can never be written would stall its partition for ever).
pub struct DeadLetter<'a> {
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl<'a> DeadLetter<'a> {
    pub fn new(
        event: &'a EventRecord,
        plugin: &str,
        error: &str,
        attempts: u32,
        max_record: usize,
    ) -> Self {
        let headers = dead_letter_headers(event, plugin, error, attempts);
        let size = |headers: &[(String, Vec<u8>)], key: usize, payload: usize| {
            key + payload
                + headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>()
        };
        let key_len = event.key.as_ref().map_or(0, Vec::len);
        let mut letter = DeadLetter {
            key: event.key.as_deref(),
            payload: Some(&event.payload),
            headers,
        };
        // Room for the note itself and the record's framing.
        let room = max_record.saturating_sub(512);
        if size(&letter.headers, key_len, event.payload.len()) <= room {
            return letter;
        }
        letter.payload = None;
        let mut note = format!(
            "payload ({} bytes): the dead letter must fit kafka.producer.message_max_bytes = {max_record}; \
             read it at the original topic, partition and offset",
            event.payload.len()
        );
        if size(&letter.headers, key_len, 0) > room {
            letter.headers.retain(|(k, _)| is_host_header(k));
            letter.key = None;
            note = format!(
                "payload ({} bytes), key and headers: the dead letter must fit \
                 kafka.producer.message_max_bytes = {max_record}; read them at the original \
                 topic, partition and offset",
                event.payload.len()
            );
        }
        letter
            .headers
            .push((H_OMITTED.to_string(), note.into_bytes()));
        letter
    }
}

/// The dead letter's headers: the original ones (but any `weir-*`, which only
/// the host writes: a producer's own `weir-original-topic` would steer a
/// replay) plus the host's `weir-*`.
pub fn dead_letter_headers(
    event: &EventRecord,
    plugin: &str,
    error: &str,
    attempts: u32,
) -> Vec<(String, Vec<u8>)> {
    let mut headers: Vec<(String, Vec<u8>)> = event
        .headers
        .iter()
        .filter(|(k, _)| !is_host_header(k))
        .cloned()
        .collect();
    for (k, v) in [
        (H_ERROR, error.to_string()),
        (H_PLUGIN, plugin.to_string()),
        (H_TOPIC, event.topic.to_string()),
        (H_PARTITION, event.partition.to_string()),
        (H_OFFSET, event.offset.to_string()),
        (H_ATTEMPTS, attempts.to_string()),
        (H_FAILED_AT, rfc3339(now_ms())),
    ] {
        headers.push((k.to_string(), v.into_bytes()));
    }
    headers
}

/// The headers of an event's `index`-th published message: the plugin's, the
/// attempt's `traceparent`, the propagated ones, CloudEvents' when stamped.
fn output_headers(
    source: &EventRecord,
    index: usize,
    m: &OutgoingMessage,
    cloudevents_source: Option<&str>,
    traceparent: Option<&str>,
) -> Vec<(String, Vec<u8>)> {
    let mut headers = m.headers.clone();
    // The event's own span, when traced, continues the trace (over the
    // incoming traceparent, unless the plugin set one).
    if let Some(tp) = traceparent {
        set_default(&mut headers, "traceparent", tp.as_bytes().to_vec());
    }
    for name in PROPAGATED_HEADERS {
        if let Some(v) = source.header(name) {
            set_default(&mut headers, name, v.to_vec());
        }
    }
    if let Some(ce_source) = cloudevents_source {
        add_cloudevent_headers(&mut headers, source, index, ce_source, m);
    }
    headers
}

/// Add `name: value` unless a header `name` is already there.
fn set_default(headers: &mut Vec<(String, Vec<u8>)>, name: &str, value: Vec<u8>) {
    if !headers.iter().any(|(k, _)| k == name) {
        headers.push((name.to_string(), value));
    }
}

/// CloudEvents binary mode (Kafka protocol binding): the attributes as `ce_*`
/// headers. `ce_id` is derived from the input record and the output's index, so a
/// redelivered event produces the same ids and consumers can deduplicate.
fn add_cloudevent_headers(
    headers: &mut Vec<(String, Vec<u8>)>,
    input: &EventRecord,
    index: usize,
    ce_source: &str,
    msg: &OutgoingMessage,
) {
    let seed = format!(
        "{}/{}/{}/{index}",
        input.topic, input.partition, input.offset
    );
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, seed.as_bytes()).to_string();
    set_default(headers, "ce_specversion", b"1.0".to_vec());
    set_default(headers, "ce_id", id.into_bytes());
    set_default(headers, "ce_source", ce_source.as_bytes().to_vec());
    set_default(headers, "ce_type", msg.topic.as_bytes().to_vec());
    set_default(headers, "ce_time", rfc3339(now_ms()).into_bytes());
    if serde_json::from_slice::<serde::de::IgnoredAny>(&msg.payload).is_ok() {
        set_default(headers, "content-type", b"application/json".to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: usize, headers: Vec<(String, Vec<u8>)>) -> EventRecord {
        EventRecord {
            topic: "dev-in".into(),
            logical_topic: "in".into(),
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            key: Some(b"k".to_vec()),
            payload: vec![b'x'; payload],
            headers,
        }
    }

    fn header<'a>(letter: &'a DeadLetter, name: &str) -> Option<&'a [u8]> {
        letter
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Issue 20: a dead letter larger than `message.max.bytes` was retried for
    /// ever, stalling its partition; a producer's own `weir-original-topic`
    /// came first and steered `weir dlq replay`.
    #[test]
    fn a_dead_letter_always_fits_and_carries_only_the_hosts_weir_headers() {
        let forged = vec![
            (
                "weir-original-topic".to_string(),
                b"dev-weir-schedule".to_vec(),
            ),
            ("trace".to_string(), b"t".to_vec()),
        ];
        let small = event(10, forged.clone());
        let letter = DeadLetter::new(&small, "p", "rejected: no", 1, 1_000_000);
        assert_eq!(letter.payload.map(<[u8]>::len), Some(10));
        assert_eq!(header(&letter, H_TOPIC), Some(&b"dev-in"[..]));
        assert_eq!(
            letter.headers.iter().filter(|(k, _)| k == H_TOPIC).count(),
            1
        );
        assert_eq!(header(&letter, "trace"), Some(&b"t"[..]));
        assert!(header(&letter, H_OMITTED).is_none());

        let big = event(2_000_000, forged.clone());
        let letter = DeadLetter::new(&big, "p", "rejected: no", 1, 1_000_000);
        assert!(letter.payload.is_none());
        assert_eq!(letter.key, Some(&b"k"[..]));
        let why = String::from_utf8(header(&letter, H_OMITTED).unwrap().to_vec()).unwrap();
        assert!(why.starts_with("payload (2000000 bytes)"), "{why}");

        let mut huge = forged;
        huge.push(("big".to_string(), vec![b'h'; 2_000_000]));
        let wide = event(10, huge);
        let letter = DeadLetter::new(&wide, "p", "rejected: no", 1, 1_000_000);
        assert!(letter.payload.is_none() && letter.key.is_none());
        assert!(letter.headers.iter().all(|(k, _)| k.starts_with("weir-")));
        let size: usize = letter.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(size < 1_000_000, "{size}");
    }
}
