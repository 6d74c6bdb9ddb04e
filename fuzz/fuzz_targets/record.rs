//! A Kafka record as a producer may write it: its lane, its CloudEvents
//! attributes and its dead letter never panic, and the dead letter always
//! fits the producer's `message.max.bytes` (one that cannot be written would
//! stall its partition).
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_host::event::EventRecord;
use weir_host::pipeline::lanes::lane_of;
use weir_host::pipeline::outputs::DeadLetter;
use weir_host::runtime::bounded_reason;
use weir_host::topics::TopicNamer;

fuzz_target!(|input: (
    String,
    i32,
    i64,
    Option<Vec<u8>>,
    Vec<u8>,
    Vec<(String, Vec<u8>)>,
    String,
    u32,
    u32
)| {
    let (topic, partition, offset, key, payload, headers, reason, attempts, max) = input;
    // Kafka's own bound on a topic name.
    let topic: String = topic.chars().take(249).collect();
    let namer = TopicNamer::prefixed("dev");
    let logical = namer.logical_name(&topic).unwrap_or_else(|| topic.clone());
    let event = EventRecord {
        topic: topic.as_str().into(),
        logical_topic: logical.as_str().into(),
        partition,
        offset,
        timestamp_ms: Some(offset),
        key,
        payload,
        headers,
    };
    let _ = lane_of(&event);
    let _ = event.cloud_event();
    let _ = event.view();
    // kafka.producer.message_max_bytes is at least 64 KiB.
    let max_record = 64 * 1024 + max as usize % (4 * 1024 * 1024);
    let letter = DeadLetter::new(&event, "plugin", &bounded_reason(reason), attempts, max_record);
    let size = letter.key.map_or(0, <[u8]>::len)
        + letter.payload.map_or(0, <[u8]>::len)
        + letter
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    assert!(size <= max_record, "a dead letter of {size} bytes for {max_record}");
    assert!(letter.headers.iter().any(|(k, _)| k == "weir-error"));
});
