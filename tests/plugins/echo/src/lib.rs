//! Test-only plugin for the Kafka pipeline: republishes each JSON event to the
//! `output` topic (config, default `out`) with the same key, tagged with the
//! configured `version` and the input's partition and offset.
//!
//! The event's `mode` field picks a behaviour: `ok` (default), `fail-twice` (asks
//! for a retry on its first two attempts, counted in the cache), `reject`, `trap`,
//! and `publish-secret` (tries an ungranted topic and rejects with the refusal).
//! With the `accept_all` config set, every event is handled as `ok`; with `always`
//! set, every event gets that mode. With `fail_init` set, `init` fails with its value
//! (a version that must be rejected at load).

use serde_json::Value;
use weir_sdk::{cache, config, describe, publish::Message, reject, retry, Event, Handler};

struct Echo;

impl Handler for Echo {
    fn init() -> Result<(), String> {
        match config::get("fail_init").map_err(|e| describe(&e))? {
            Some(why) => Err(format!("refusing to start: {why}")),
            None => Ok(()),
        }
    }

    fn handle(event: Event) -> weir_sdk::Result {
        let mut body: Value = event.json()?;
        let mut mode = body["mode"].as_str().unwrap_or("ok").to_string();
        if config::get("accept_all")?.is_some() {
            mode = "ok".into(); // the "fixed" plugin of the replay test
        }
        if let Some(always) = config::get("always")? {
            mode = always; // a broken version for the rollback test
        }
        match mode.as_str() {
            "reject" => return Err(reject("asked to reject")),
            "trap" => panic!("asked to trap"),
            "publish-secret" => {
                Message::to("secret")
                    .payload(b"leak".to_vec())
                    .send()
                    .map_err(|e| reject(describe(&e)))?;
            }
            "fail-twice" => {
                let counter = format!(
                    "attempts:{}:{}:{}",
                    event.topic, event.partition, event.offset
                );
                let n: u32 = cache::get_string(&counter)?
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if n < 2 {
                    cache::set(&counter, (n + 1).to_string().as_bytes(), None)?;
                    return Err(retry(format!("transient failure {}", n + 1)));
                }
            }
            _ => {}
        }
        body["by"] = config::get_or("version", "v1")?.into();
        body["partition"] = event.partition.into();
        body["offset"] = event.offset.into();
        let mut msg = Message::to(&config::get_or("output", "out")?).json(&body)?;
        if let Some(key) = &event.key {
            msg = msg.key(key);
        }
        msg.send()?;
        Ok(())
    }
}

weir_sdk::export!(Echo);
