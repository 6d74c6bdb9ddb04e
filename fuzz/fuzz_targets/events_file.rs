//! An events file (`weir invoke`, `weir test`): events or an error naming the
//! line, never a panic; each event's `expect` parses or is refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_host::authoring::expect::Expect;
use weir_host::invoke::parse_event_inputs;
use weir_host::topics::TopicNamer;

fuzz_target!(|data: &[u8]| {
    let topics = vec!["in".to_string(), "other".to_string()];
    let namer = TopicNamer::prefixed("dev");
    if let Ok(events) = parse_event_inputs("fuzz.jsonl", data, &topics, &namer) {
        for e in events {
            assert!(e.record.topic.starts_with("dev-"));
            if let Some(expect) = &e.expect {
                let _ = Expect::parse(expect);
            }
        }
    }
});
