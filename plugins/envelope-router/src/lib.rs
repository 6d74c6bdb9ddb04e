//! `envelope-router`: ExpenseVault's integration-event publishing (seeds 002 and 004)
//! as a Weir plugin.
//!
//! It takes a domain event (a JSON object), wraps it in the integration-event envelope
//! (`eventId`, `eventType`, `eventVersion`, `sourceService`, `correlationId`,
//! `timestamp`, then the domain fields) and publishes it, keyed by `userId`, to the
//! topic its `routes` config maps the event type to. The output also carries
//! CloudEvents binary-mode headers (`ce_id`, `ce_type`, `ce_source`, `ce_specversion`,
//! `ce_time`, `content-type`).
//!
//! The event type is the domain event's `eventType` field, else the `event-type`
//! header, else the incoming CloudEvent's type. The `eventId` is derived from the
//! input record's topic, partition and offset, so a redelivered event gets the same
//! id and consumers can drop the duplicate.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use uuid::Uuid;
use weir_sdk::{config, log, publish::Message, reject, Event, Handler};

struct EnvelopeRouter;

impl Handler for EnvelopeRouter {
    fn init() -> Result<(), String> {
        let routes = routes().map_err(|e| format!("{e:?}"))?;
        if routes.is_empty() {
            return Err("config `routes` is empty: map at least one event type to a topic".into());
        }
        Ok(())
    }

    fn handle(event: Event) -> weir_sdk::Result {
        let Value::Object(domain) = event.json::<Value>()? else {
            return Err(reject("payload must be a JSON object"));
        };
        let event_type = str_field(&domain, "eventType")
            .or_else(|| event.header_str("event-type").map(str::to_string))
            .or_else(|| event.cloud_event.as_ref().map(|ce| ce.type_.clone()))
            .ok_or_else(|| reject("no event type: set `eventType` or an `event-type` header"))?;
        let routes = routes()?;
        let topic = routes.get(&event_type).ok_or_else(|| {
            let known: Vec<&str> = routes.keys().map(String::as_str).collect();
            reject(format!(
                "no route for event type {event_type:?} (routed: {})",
                known.join(", ")
            ))
        })?;
        let user_id = str_field(&domain, "userId")
            .ok_or_else(|| reject("payload has no `userId`: it is the partition key"))?;

        let source = config::get_or("source_service", "customservice")?;
        let version = config::get_or("event_version", "1.0")?;
        let event_id = derived_event_id(&event);
        let correlation_id = str_field(&domain, "correlationId")
            .or_else(|| event.correlation_id().map(str::to_string))
            .unwrap_or_else(|| event_id.clone());
        let timestamp = str_field(&domain, "timestamp")
            .or_else(|| event.timestamp_ms.map(rfc3339_from_ms))
            .unwrap_or_default();

        // Envelope fields first, then the domain fields (an envelope field wins).
        let mut envelope = Map::new();
        envelope.insert("eventId".into(), event_id.clone().into());
        envelope.insert("timestamp".into(), timestamp.clone().into());
        envelope.insert("eventType".into(), event_type.clone().into());
        envelope.insert("eventVersion".into(), version.into());
        envelope.insert("sourceService".into(), source.clone().into());
        envelope.insert("correlationId".into(), correlation_id.clone().into());
        for (k, v) in domain {
            envelope.entry(k).or_insert(v);
        }

        let mut msg = Message::to(topic)
            .key(&user_id)
            .json(&Value::Object(envelope))?
            .header("ce_specversion", "1.0")
            .header("ce_id", &event_id)
            .header("ce_type", format!("{source}.{event_type}"))
            .header("ce_source", format!("/{source}"))
            .header("content-type", "application/json")
            .header("correlation-id", &correlation_id);
        if !timestamp.is_empty() {
            msg = msg.header("ce_time", &timestamp);
        }
        if let Some(tp) = event.header("traceparent") {
            msg = msg.header("traceparent", tp);
        }
        msg.send()?;

        log::info(
            "event enveloped and routed",
            &[
                ("event-type", &event_type),
                ("topic", topic),
                ("event-id", &event_id),
                ("user-id", &user_id),
            ],
        );
        Ok(())
    }
}

/// `routes` config: a table mapping event types to logical topics.
fn routes() -> weir_sdk::Result<BTreeMap<String, String>> {
    Ok(config::get_json("routes")?.unwrap_or_default())
}

fn str_field(obj: &Map<String, Value>, name: &str) -> Option<String> {
    obj.get(name).and_then(Value::as_str).map(str::to_string)
}

/// A UUID (v5) that is stable for one input record: derived from its topic,
/// partition and offset.
fn derived_event_id(event: &Event) -> String {
    let coords = format!("{}/{}/{}", event.topic, event.partition, event.offset);
    Uuid::new_v5(&Uuid::NAMESPACE_URL, coords.as_bytes()).to_string()
}

fn rfc3339_from_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

weir_sdk::export!(EnvelopeRouter);
