//! The sink: sends what handlers published, and dead letters, through one
//! idempotent producer (acks=all). Every send is awaited: the caller moves an
//! offset only after the broker acknowledged everything the event produced.
//!
//! An idempotent producer can fail *fatally* (librdkafka gives up on it, e.g. after
//! the broker answers out-of-sequence and ordering can no longer be guaranteed):
//! every later send fails. The sink then replaces it with a new producer, so the
//! failed events' retries go through instead of blocking their partitions forever.

use crate::capabilities::storage::rfc3339;
use crate::capabilities::{storage::now_ms, OutgoingMessage};
use crate::config::Config;
use crate::event::EventRecord;
use crate::topics::TopicNamer;
use arc_swap::ArcSwap;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
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

/// Dead-letter headers (besides the original ones).
pub const H_ERROR: &str = "weir-error";
pub const H_PLUGIN: &str = "weir-plugin";
pub const H_TOPIC: &str = "weir-original-topic";
pub const H_PARTITION: &str = "weir-original-partition";
pub const H_OFFSET: &str = "weir-original-offset";
pub const H_ATTEMPTS: &str = "weir-attempts";
pub const H_FAILED_AT: &str = "weir-failed-at";

#[derive(Clone)]
pub struct Sink {
    producer: Arc<ArcSwap<FutureProducer>>,
    /// To make a replacement producer.
    client_config: Arc<ClientConfig>,
    /// How many times a fatally failed producer was replaced.
    replaced: Arc<AtomicU64>,
    namer: TopicNamer,
    timeout: Duration,
}

impl Sink {
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut c = super::base_config(config);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config
                    .kafka
                    .producer
                    .message_timeout
                    .as_millis()
                    .to_string(),
            )
            .set(
                "linger.ms",
                config.kafka.producer.linger.as_millis().to_string(),
            );
        let producer: FutureProducer = c
            .create()
            .map_err(|e| format!("cannot create the producer: {e}"))?;
        Ok(Sink {
            producer: Arc::new(ArcSwap::from_pointee(producer)),
            client_config: Arc::new(c),
            replaced: Arc::new(AtomicU64::new(0)),
            namer: config.namer()?,
            timeout: config.kafka.producer.message_timeout,
        })
    }

    /// Send an event's outputs and wait until the broker acknowledged all of them.
    /// With `cloudevents_source`, outputs get CloudEvents binary-mode headers.
    pub async fn publish(
        &self,
        source: &EventRecord,
        messages: &[OutgoingMessage],
        cloudevents_source: Option<&str>,
    ) -> Result<(), String> {
        let sends = messages.iter().enumerate().map(|(i, m)| {
            let mut headers = m.headers.clone();
            for name in PROPAGATED_HEADERS {
                if let Some(v) = source.header(name) {
                    set_default(&mut headers, name, v.to_vec());
                }
            }
            if let Some(ce_source) = cloudevents_source {
                add_cloudevent_headers(&mut headers, source, i, ce_source, m);
            }
            let topic = self.namer.full_name(&m.topic);
            async move {
                self.send(&topic, m.key.as_deref(), &m.payload, &headers)
                    .await
                    .map_err(|e| format!("publishing to {topic} failed: {e}"))
            }
        });
        futures::future::try_join_all(sends).await.map(|_| ())
    }

    /// Write `event` to the dead-letter topic with why it failed; wait for the ack.
    pub async fn dead_letter(
        &self,
        dlq_topic: &str,
        event: &EventRecord,
        plugin: &str,
        error: &str,
        attempts: u32,
    ) -> Result<(), String> {
        let mut headers = event.headers.clone();
        for (k, v) in [
            (H_ERROR, error.to_string()),
            (H_PLUGIN, plugin.to_string()),
            (H_TOPIC, event.topic.clone()),
            (H_PARTITION, event.partition.to_string()),
            (H_OFFSET, event.offset.to_string()),
            (H_ATTEMPTS, attempts.to_string()),
            (H_FAILED_AT, rfc3339(now_ms())),
        ] {
            headers.push((k.to_string(), v.into_bytes()));
        }
        self.send(dlq_topic, event.key.as_deref(), &event.payload, &headers)
            .await
            .map(|_| ())
            .map_err(|e| format!("dead-lettering to {dlq_topic} failed: {e}"))
    }

    /// Send one record to a full topic name; `(partition, offset)` once acknowledged.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(String, Vec<u8>)],
    ) -> Result<(i32, i64), String> {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = FutureRecord::to(topic).payload(payload).headers(owned);
        if let Some(k) = key {
            record = record.key(k);
        }
        let producer = self.producer.load_full();
        match producer.send(record, self.timeout).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((e, _)) => {
                self.replace_if_fatal(&producer);
                Err(e.to_string())
            }
        }
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
    /// the current one, swap in a new producer. Messages it still holds fail with
    /// errors, and their events are retried like any failed publish.
    fn replace_if_fatal(&self, failed: &Arc<FutureProducer>) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        let fresh: FutureProducer = match self.client_config.create() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "the producer failed fatally and a new one cannot be created; retrying on the next failure");
                return;
            }
        };
        let previous = self.producer.compare_and_swap(failed, Arc::new(fresh));
        if Arc::ptr_eq(&previous, failed) {
            self.replaced.fetch_add(1, Ordering::Relaxed);
            tracing::error!(code = ?code, reason = %reason, "the producer failed fatally; replaced it with a new one (the events whose outputs were lost are retried)");
        }
    }
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
