//! The host's view of one consumed record, and its conversion to the WIT `event`.

use crate::bindings::CloudEvent;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;
use wasmtime::component::{ComponentType, Lower};

/// One record as the host received it (from Kafka, or from a file in `weir invoke`).
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// Shared by every event read from the topic.
    #[serde(serialize_with = "arc_str")]
    pub topic: Arc<str>,
    #[serde(serialize_with = "arc_str")]
    pub logical_topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    #[serde(serialize_with = "bytes_as_text")]
    pub key: Option<Vec<u8>>,
    #[serde(skip)]
    pub payload: Vec<u8>,
    #[serde(skip)]
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Where an event came from: `topic/partition@offset` in logs and reports.
#[derive(Debug, Clone)]
pub struct Coordinates {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Coordinates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// The WIT `event` borrowed from an [`EventRecord`]: lowered into the plugin's
/// memory straight from the record, with no copy on the host's side.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct EventView<'a> {
    topic: &'a str,
    #[component(name = "logical-topic")]
    logical_topic: &'a str,
    partition: i32,
    offset: i64,
    #[component(name = "timestamp-ms")]
    timestamp_ms: Option<i64>,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    headers: Vec<HeaderView<'a>>,
    #[component(name = "cloud-event")]
    cloud_event: Option<CloudEvent>,
}

/// The WIT `header`, borrowed.
#[derive(ComponentType, Lower)]
#[component(record)]
pub struct HeaderView<'a> {
    key: &'a str,
    value: &'a [u8],
}

impl EventRecord {
    /// `topic/partition@offset`, the coordinates used in logs and reports.
    pub fn coordinates(&self) -> Coordinates {
        Coordinates {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The WIT value handed to the plugin, borrowing the record.
    pub fn view(&self) -> EventView<'_> {
        EventView {
            topic: &self.topic,
            logical_topic: &self.logical_topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key.as_deref(),
            payload: &self.payload,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| HeaderView { key: k, value: v })
                .collect(),
            cloud_event: self.cloud_event(),
        }
    }

    /// An empty record at `topic/partition@offset` (tests, examples).
    pub fn for_test(topic: &str, partition: i32, offset: i64) -> EventRecord {
        EventRecord {
            topic: Arc::from(topic),
            logical_topic: Arc::from(topic),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            payload: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// CloudEvents binary-mode attributes, when the required `ce_*` headers are all there.
    pub fn cloud_event(&self) -> Option<CloudEvent> {
        let text = |name: &str| {
            self.header(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        Some(CloudEvent {
            id: text("ce_id")?,
            source: text("ce_source")?,
            type_: text("ce_type")?,
            specversion: text("ce_specversion")?,
            subject: text("ce_subject"),
            time: text("ce_time"),
            datacontenttype: text("content-type"),
        })
    }
}

fn arc_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn bytes_as_text<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(b) => s.serialize_str(&String::from_utf8_lossy(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: &[(&str, &str)]) -> EventRecord {
        EventRecord {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            ..EventRecord::for_test("dev-t", 0, 0)
        }
    }

    #[test]
    fn cloud_event_needs_the_required_attributes() {
        assert!(record(&[("ce_id", "1")]).cloud_event().is_none());
        let ce = record(&[
            ("ce_id", "1"),
            ("ce_source", "/svc"),
            ("ce_type", "item.created"),
            ("ce_specversion", "1.0"),
            ("content-type", "application/json"),
        ])
        .cloud_event()
        .unwrap();
        assert_eq!(ce.type_, "item.created");
        assert_eq!(ce.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(ce.subject, None);
    }
}
