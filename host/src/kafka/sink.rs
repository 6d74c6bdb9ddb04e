//! The sink: sends what handlers published, and dead letters, through one
//! idempotent producer (acks=all). Every send is awaited: the caller moves an
//! offset only after the broker acknowledged everything the event produced.

use crate::capabilities::storage::rfc3339;
use crate::capabilities::{storage::now_ms, OutgoingMessage};
use crate::config::Config;
use crate::event::EventRecord;
use crate::topics::TopicNamer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
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
    producer: FutureProducer,
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
            producer,
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
        self.producer
            .send(record, self.timeout)
            .await
            .map(|d| (d.partition, d.offset))
            .map_err(|(e, _)| e.to_string())
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
