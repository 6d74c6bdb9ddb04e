//! The `publish` capability: messages a handler sends to its granted topics.
//!
//! Messages are buffered per attempt and handed back with the event's outcome: the
//! caller sends them only when the handler succeeded, so a failed attempt never
//! leaks half its output, and the offset moves only after they are acknowledged.

use super::cache::describe;
use super::Ctx;
use super::{not_granted, CallRecord, RECORD_OVERHEAD};
use crate::bindings::weir::plugin::publish::{Host, Message};
use crate::bindings::CapabilityError;
use serde::Serialize;

/// The default of `kafka.producer.message_max_bytes`: librdkafka's and the
/// broker's default `message.max.bytes` (about 1 MB).
pub const DEFAULT_MAX_RECORD: usize = 1_000_000;
/// Room kept in a record for the headers the host adds to a published message
/// (CloudEvents attributes, `traceparent`).
pub const HOST_HEADER_ROOM: usize = 2048;
/// Messages one event may publish.
pub const MAX_MESSAGES_PER_EVENT: usize = 1000;

/// A message a handler published, addressed by logical topic.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub topic: String,
    #[serde(serialize_with = "text_or_base64")]
    pub key: Option<Vec<u8>>,
    #[serde(serialize_with = "payload_text_or_base64")]
    pub payload: Vec<u8>,
    #[serde(serialize_with = "headers_as_text")]
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OutgoingMessage {
    pub fn key_text(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }
}

fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => {
            use base64::Engine;
            format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        }
    }
}

fn text_or_base64<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(b) => s.serialize_str(&text(b)),
    }
}

/// JSON payloads stay JSON in reports; anything else is text or base64.
fn payload_text_or_base64<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_slice::<serde_json::Value>(v) {
        Ok(json) => json.serialize(s),
        Err(_) => s.serialize_str(&text(v)),
    }
}

fn headers_as_text<S: serde::Serializer>(v: &[(String, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for (k, val) in v {
        seq.serialize_element(&(k, text(val)))?;
    }
    seq.end()
}

impl Ctx<'_> {
    fn check_message(&mut self, msg: &Message) -> Result<(), CapabilityError> {
        let granted = self
            .grants
            .publish_topics
            .as_ref()
            .ok_or_else(|| CapabilityError::Denied(not_granted("publish")))?;
        if !granted.contains(&msg.topic) {
            let list: Vec<&str> = granted.iter().map(String::as_str).collect();
            return Err(CapabilityError::Denied(format!(
                "publishing to {:?} is not granted (granted: {})",
                msg.topic,
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(", ")
                }
            )));
        }
        let size = msg.payload.len()
            + msg.key.as_ref().map_or(0, Vec::len)
            + msg
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.len())
                .sum::<usize>();
        let limit = self.backends.max_message.saturating_sub(HOST_HEADER_ROOM);
        if size > limit {
            return Err(CapabilityError::Invalid(format!(
                "the message is {size} bytes (payload, key and headers); the limit is {limit}: \
                 kafka.producer.message_max_bytes = {} less {HOST_HEADER_ROOM} bytes for the \
                 headers the host adds",
                self.backends.max_message
            )));
        }
        if self.effects().outbox.len() >= MAX_MESSAGES_PER_EVENT {
            return Err(CapabilityError::Invalid(format!(
                "an event may publish at most {MAX_MESSAGES_PER_EVENT} messages"
            )));
        }
        self.budget
            .hold(size + msg.topic.len() + RECORD_OVERHEAD, "this message")
    }
}

impl Host for Ctx<'_> {
    async fn send(&mut self, msg: Message) -> Result<(), CapabilityError> {
        let result = self.check_message(&msg);
        let key = msg
            .key
            .as_deref()
            .map(|k| format!(" key={}", text(k)))
            .unwrap_or_default();
        let target = format!("{}{key}", msg.topic);
        let len = msg.payload.len();
        self.record(|| CallRecord {
            capability: "publish",
            op: "send",
            target,
            result: describe(&result, |_| format!("queued ({len} bytes)")),
        });
        if result.is_ok() {
            self.effects().outbox.push(OutgoingMessage {
                topic: msg.topic,
                key: msg.key,
                payload: msg.payload,
                headers: msg.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            });
        }
        result
    }
}
