//! The host's view of one consumed record, and its conversion to the WIT `event`.

use crate::runtime::bindings::{CloudEvent, Event, Header};
use serde::Serialize;

/// One record as the host received it (from Kafka, or from a file in `weir invoke`).
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub topic: String,
    pub logical_topic: String,
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

impl EventRecord {
    /// `topic/partition@offset`, the coordinates used in logs and reports.
    pub fn coordinates(&self) -> String {
        format!("{}/{}@{}", self.topic, self.partition, self.offset)
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The WIT value handed to the plugin.
    pub fn to_wit(&self) -> Event {
        Event {
            topic: self.topic.clone(),
            logical_topic: self.logical_topic.clone(),
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key.clone(),
            payload: self.payload.clone(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            cloud_event: self.cloud_event(),
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
            topic: "dev-t".into(),
            logical_topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            payload: vec![],
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
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
